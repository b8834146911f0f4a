/*
 * test_cluster_pool: hotproxy's pools follow the Cluster's masters as they
 * come and go (topology cluster, a plain hiredis client).
 *
 *  - a 4th master joins (redis-cli --cluster add-node, slots resharded to
 *    it): hotproxy's map names it and keys of its slots are served there;
 *    the slots are resharded away and the node deleted (del-node): its pool
 *    leaves INFO within a deadline, while writes and reads through hotproxy
 *    (a pipeline in flight among them) see no error.  Run under the
 *    sanitizers, hotproxy's clean exit says nothing kept a pointer to it.
 *  - commands sent before the first map wait for it (see first_map);
 *  - reads in flight on a master that dies get their values from its
 *    promoted replica (see reads_retried).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "tap.h"

#define DEADLINE 30.0

static hx_topo topo;
static char last_err[1024];

/* 1 while hotproxy's INFO lists a pool for the node on port. */
static int pool_listed(redisContext *c, int port)
{
    redisReply *r = redisCommand(c, "INFO hotproxy_upstream");
    char pat[48];
    snprintf(pat, sizeof(pat), "hotproxy_upstream:127.0.0.1:%d\r", port);
    int listed = r && r->type == REDIS_REPLY_STRING && strstr(r->str, pat) != NULL;
    if (r) freeReplyObject(r);
    return listed;
}

/* One write and one read of each key (the value names the round), then the
 * same as one pipeline; the errors, the last one kept in last_err. */
static int load_round(redisContext *c, char keys[][32], int n, int round)
{
    int errors = hx_cluster_load_round(c, keys, n, round, last_err, sizeof(last_err));
    for (int i = 0; i < n; i++) redisAppendCommand(c, "GET %s", keys[i]);
    for (int i = 0; i < n; i++) {
        redisReply *r = NULL;
        if (redisGetReply(c, (void **)&r) != REDIS_OK || !r || r->type != REDIS_REPLY_STRING) {
            errors++;
            snprintf(last_err, sizeof(last_err), "pipelined GET %s: %s", keys[i],
                     r ? (r->str ? r->str : "(nil)") : c->errstr);
        }
        if (r) freeReplyObject(r);
        if (c->err) return errors + 1;
    }
    return errors;
}

/* Run redis-cli with argv and wait for it (120 s); 0 when it exits 0. */
static int cli(const char *name, const char *const *argv)
{
    hx_proc p;
    if (hx_spawn(&p, name, argv) != 0) return -1;
    int st = hx_wait_exit(&p, 120000);
    if (st == -2) hx_kill(&p);
    if (st != 0) {
        diag("%s exited with %d", name, st);
        hx_diag_file(p.outfile, 4000);
    }
    return st == 0 ? 0 : -1;
}

/* A free port whose cluster bus port (port + 10000) exists. */
static int node_port(void)
{
    for (int i = 0; i < 1000; i++) {
        int pt = hx_free_port();
        if (pt > 0 && pt <= 55535) return pt;
    }
    return -1;
}

/* A cluster-enabled node on port (0: a free one). */
static int node_start(hx_proc *p, int port)
{
    static const char *const extra[] = {"--cluster-enabled", "yes", NULL};
    for (int i = 0; i < 20; i++) {
        hx_redis_opts o = {.port = port ? port : node_port(), .extra = extra, .name = "node"};
        if (hx_redis_start_opts(p, &o) == 0) return 0;
        if (port) break;
    }
    return -1;
}

/* A 4th master joins, serves, is emptied and deleted: its pool goes. */
static void master_leaves(redisContext *c)
{
    hx_proc *n4 = &topo.masters[topo.nmasters];
    if (!ok(node_start(n4, 0) == 0, "a 4th cluster node started")) return;
    topo.nmasters++;
    char seed[32], addr4[32], id0[64], id4[64];
    snprintf(seed, sizeof(seed), "127.0.0.1:%d", topo.masters[0].port);
    snprintf(addr4, sizeof(addr4), "127.0.0.1:%d", n4->port);
    hx_cluster_node_id(topo.masters[0].port, id0, sizeof(id0));
    hx_cluster_node_id(n4->port, id4, sizeof(id4));
    const char *add[] = {"redis-cli", "--cluster", "add-node", addr4, seed, NULL};
    if (!ok(cli("add-node", add) == 0 && hx_cluster_wait(&topo, 30000) == 0,
            "redis-cli --cluster add-node: every node knows the 4th"))
        return;
    const char *to4[] = {"redis-cli", "--cluster", "reshard", seed, "--cluster-from", id0, "--cluster-to", id4,
                         "--cluster-slots", "200", "--cluster-yes", NULL};
    if (!ok(cli("reshard-to-4", to4) == 0, "200 slots resharded to it")) return;
    int got = -1;
    double until = hx_now() + DEADLINE;
    while (hx_now() < until && (got = hx_cluster_map_slots(c, n4->port)) != 200) hx_sleep_ms(100);
    ok(got == 200 && pool_listed(c, n4->port), "hotproxy's map gives it 200 slots, INFO lists its pool");
    /* keys of every master, two of the 4th's among them */
    static char keys[24][32];
    int n = 0, on4 = 0;
    for (int i = 0; n < 24 && i < 20000; i++) {
        char k[32];
        snprintf(k, sizeof(k), "mv:%d", i);
        int own = hx_cluster_owner(topo.masters[0].port, k) == n4->port;
        if (!own && n >= 20) continue;
        if (own && on4 >= 4) continue;
        on4 += own;
        snprintf(keys[n++], sizeof(keys[0]), "%s", k);
    }
    int errors = load_round(c, keys, n, 1);
    redisContext *d4 = hx_redis(n4->port);
    int served = 0;
    for (int i = 0; d4 && i < n; i++) served += hx_cluster_owner(n4->port, keys[i]) == n4->port && !strncmp(hx_cmd(d4, "GET %s", keys[i]), "1:", 2);
    if (d4) redisFree(d4);
    ok(on4 == 4 && served == 4 && errors == 0, "keys of the 4th master are served there through hotproxy (%d of %d, %d errors%s%s)",
       served, on4, errors, errors ? ": " : "", errors ? last_err : "");
    /* its slots go back, then it is deleted: the load goes on meanwhile */
    const char *from4[] = {"redis-cli", "--cluster", "reshard", seed, "--cluster-from", id4, "--cluster-to", id0,
                           "--cluster-slots", "200", "--cluster-yes", NULL};
    hx_proc rs;
    int round = 1;
    errors = 0;
    if (!ok(hx_spawn(&rs, "reshard-from-4", from4) == 0, "its 200 slots resharded away")) return;
    while (hx_alive(&rs)) errors += load_round(c, keys, n, ++round);
    const char *del[] = {"redis-cli", "--cluster", "del-node", seed, id4, NULL};
    ok(cli("del-node", del) == 0, "redis-cli --cluster del-node");
    hx_stop(n4, 5000); /* del-node shut it down */
    topo.nmasters--;
    until = hx_now() + DEADLINE;
    int listed = 1;
    while (hx_now() < until && (listed = pool_listed(c, n4->port))) errors += load_round(c, keys, n, ++round);
    for (int i = 0; i < 3; i++) errors += load_round(c, keys, n, ++round);
    if (!ok(!listed, "its pool leaves hotproxy's INFO")) diag("%s", hx_info_get(c, "hotproxy_upstream", "hotproxy_cluster_slot_map"));
    ok(errors == 0, "... %d rounds of writes, reads and pipelines through hotproxy meanwhile: %d errors%s%s", round,
       errors, errors ? ", last: " : "", errors ? last_err : "");
    is_str(hx_info_get(c, "hotproxy_upstream", "hotproxy_cluster_nodes"), "3", "... and its map three masters");
}

/*
 * Commands sent before the first map are held until it is in: hotproxy's
 * one seed is a port nobody listens on yet; the commands are sent, then a
 * node starts there and joins the Cluster (CLUSTER MEET): they get real
 * replies.  With a seed that never comes up they get CLUSTERDOWN once
 * upstream-timeout has passed.
 */
static void first_map(void)
{
    /* not the port of a node this test started before (the 4th master's,
     * deleted: its cluster config file, with a node id the Cluster has
     * forgotten and bans for a minute, is still in the temp dir) */
    int seed;
    for (;;) {
        seed = node_port();
        int used = 0;
        for (int i = 0; i <= topo.nmasters && i < (int)(sizeof(topo.masters) / sizeof(topo.masters[0])); i++)
            used |= topo.masters[i].port == seed;
        if (!used) break;
    }
    char seedport[16];
    snprintf(seedport, sizeof(seedport), "%d", seed);
    hx_proc px;
    if (!ok(hx_proxy_start(&px, 0, seed, "--topology", "cluster", "--upstream-timeout", "60000", NULL) == 0,
            "hotproxy starts with a seed nobody listens on yet")) return;
    int fd = hx_connect(px.port);
    static const char cmds[] = "*3\r\n$3\r\nSET\r\n$6\r\nheld:1\r\n$2\r\nv1\r\n"
                               "*2\r\n$3\r\nGET\r\n$6\r\nheld:1\r\n"
                               "*2\r\n$4\r\nINCR\r\n$6\r\nheld:2\r\n";
    hx_buf got = {0};
    long n = 0;
    ok(fd >= 0 && hx_send_str(fd, cmds) == 0 && hx_read_replies(fd, &got, 1, &n, 300) == HX_TIMEOUT && n == 0,
       "SET, GET and INCR sent: no reply while no map is known");
    hx_proc *node = &topo.masters[topo.nmasters];
    if (ok(node_start(node, seed) == 0, "a node starts on the seed's port")) {
        topo.nmasters++;
        redisContext *d = hx_redis(seed);
        /* asked again until it says OK (a node just started may not take it yet) */
        char said[256] = "(no connection)";
        for (double until = hx_now() + 20; d && hx_now() < until; hx_sleep_ms(100)) {
            snprintf(said, sizeof(said), "%s", hx_cmd(d, "CLUSTER MEET 127.0.0.1 %d", topo.masters[0].port));
            if (!strcmp(said, "OK")) break;
        }
        ok(!strcmp(said, "OK"), "... and meets the Cluster (%s)", said);
        if (d) redisFree(d);
        int st = hx_read_replies(fd, &got, 3, &n, 30000);
        hx_buf_append(&got, "", 1);
        is_str(got.data, "+OK\r\n$2\r\nv1\r\n:1\r\n", "the held commands get their real replies once the map is in (%s)",
               hx_status_name(st));
    }
    if (fd >= 0) close(fd);
    hx_buf_free(&got);
    is_int(hx_stop(&px, 5000), 0, "... hotproxy exits cleanly");

    /* a seed that never comes up */
    int nowhere = node_port();
    if (!ok(hx_proxy_start(&px, 0, nowhere, "--topology", "cluster", "--upstream-timeout", "1500", NULL) == 0,
            "hotproxy starts with a seed that never comes up")) return;
    fd = hx_connect(px.port);
    hx_buf none = {0};
    n = 0;
    int st = fd >= 0 && hx_send_str(fd, "*2\r\n$3\r\nGET\r\n$1\r\nx\r\n") == 0 ? hx_read_replies(fd, &none, 1, &n, 30000) : -1;
    hx_buf_append(&none, "", 1);
    ok(n == 1 && !strncmp(none.data, "-CLUSTERDOWN hotproxy: the slot map is not known yet", 52),
       "... a command gets CLUSTERDOWN once upstream-timeout has passed (%s: %.80s)", hx_status_name(st), none.data);
    if (fd >= 0) close(fd);
    hx_buf_free(&none);
    is_int(hx_stop(&px, 5000), 0, "... hotproxy exits cleanly");
}

/* Requests in flight on the pool of the master on port, from INFO (-1: no pool). */
static long long pool_inflight(redisContext *c, int port)
{
    redisReply *r = redisCommand(c, "INFO hotproxy_upstream");
    char pat[48];
    snprintf(pat, sizeof(pat), "hotproxy_upstream:127.0.0.1:%d\r", port);
    const char *at = r && r->type == REDIS_REPLY_STRING ? strstr(r->str, pat) : NULL;
    const char *f = at ? strstr(at, "hotproxy_upstream_inflight:") : NULL;
    long long n = f ? atoll(f + strlen("hotproxy_upstream_inflight:")) : -1;
    if (r) freeReplyObject(r);
    return n;
}

/*
 * Reads in flight on a master that dies are sent to its replica once that
 * is promoted: master 1 is paused (CLIENT PAUSE ALL), a pipeline of GETs
 * and an MGET across masters (and SETs) is sent through hotproxy, so it
 * sits in flight there; master 1 is SIGKILLed.  Every read gets its value
 * (from the promoted replica); only writes may get the connection's error.
 */
static void reads_retried(void)
{
    static const char *const extra[] = {"--cluster-node-timeout", "2000", NULL};
    hx_cluster_opts o = {.masters = 3, .replicas = 1, .extra = extra};
    hx_topo t;
    if (!ok(hx_cluster_start(&t, &o) == 0, "3 masters + 3 replicas started")) return;
    hx_proc px;
    if (!ok(hx_proxy_start(&px, 0, t.masters[0].port, "--topology", "cluster", "--upstream-timeout", "20000",
                           "--l1-hot-threshold", "0", NULL) == 0,
            "hotproxy starts with topology cluster")) {
        hx_topo_stop(&t, 5000);
        return;
    }
    redisContext *c = hx_redis(px.port);
    hx_info_wait(c, "hotproxy_upstream", "hotproxy_cluster_slots_known", "16384", 20000);
    int dead = t.masters[1].port;
    static char keys[40][32];
    int n = 0, ndead = 0;
    for (int i = 0; n < 40 && i < 5000; i++) {
        char k[32];
        snprintf(k, sizeof(k), "rd:%d", i);
        int own = hx_cluster_owner(t.masters[0].port, k) == dead;
        if ((own && ndead >= 30) || (!own && n - ndead >= 10)) continue;
        ndead += own;
        snprintf(keys[n++], sizeof(keys[0]), "%s", k);
    }
    int set_errors = 0;
    for (int i = 0; i < n; i++) set_errors += strcmp(hx_cmd(c, "SET %s v-%s", keys[i], keys[i]), "OK") != 0;
    ok(set_errors == 0 && ndead == 30, "40 keys written through hotproxy, 30 of them on master 1");
    redisContext *m1 = hx_redis(dead);
    is_str(m1 ? hx_cmd(m1, "CLIENT PAUSE 20000 ALL") : "", "OK", "master 1 paused: what hotproxy sends it stays in flight");
    hx_buf req = {0};
    for (int i = 0; i < n; i++) hx_buf_printf(&req, "*2\r\n$3\r\nGET\r\n$%zu\r\n%s\r\n", strlen(keys[i]), keys[i]);
    hx_buf_printf(&req, "*%d\r\n$4\r\nMGET\r\n", n + 1);
    for (int i = 0; i < n; i++) hx_buf_printf(&req, "$%zu\r\n%s\r\n", strlen(keys[i]), keys[i]);
    for (int i = 0; i < n; i++)
        hx_buf_printf(&req, "*3\r\n$3\r\nSET\r\n$%zu\r\n%s\r\n$1\r\nw\r\n", strlen(keys[i]), keys[i]);
    int fd = hx_connect(px.port);
    ok(fd >= 0 && hx_send(fd, req.data, req.len, 10000) == 0, "a pipeline of 40 GETs, an MGET of the 40 keys and 40 SETs sent");
    long long inflight = -1;
    double until = hx_now() + DEADLINE;
    while (hx_now() < until && (inflight = pool_inflight(c, dead)) < 30) hx_sleep_ms(20);
    ok(inflight >= 30, "... master 1's part of it in flight there (%lld)", inflight);
    for (int i = 0; i < t.nmasters; i++)
        if (i == 1) hx_kill(&t.masters[i]);
    if (m1) redisFree(m1);
    hx_buf got = {0};
    long nr = 0;
    int st = hx_read_replies(fd, &got, 2 * n + 1, &nr, 60000);
    ok(nr == 2 * n + 1, "master 1 SIGKILLed: every reply arrives (%ld of %d, %s)", nr, 2 * n + 1, hx_status_name(st));
    /* the replies, in order: the GETs, the MGET, the SETs */
    redisReader *rd = redisReaderCreate();
    redisReaderFeed(rd, got.data, got.len);
    int bad_reads = 0, write_errors = 0;
    char first_bad[256] = "";
    for (long i = 0; i < nr; i++) {
        redisReply *r = NULL;
        if (redisReaderGetReply(rd, (void **)&r) != REDIS_OK || !r) break;
        char want[64];
        if (i < n) {
            snprintf(want, sizeof(want), "v-%s", keys[i]);
            if (r->type != REDIS_REPLY_STRING || strcmp(r->str, want)) {
                if (!bad_reads++) snprintf(first_bad, sizeof(first_bad), "GET %s: %s", keys[i], r->str ? r->str : "?");
            }
        } else if (i == n) {
            int good = r->type == REDIS_REPLY_ARRAY && r->elements == (size_t)n;
            for (int k = 0; good && k < n; k++) {
                snprintf(want, sizeof(want), "v-%s", keys[k]);
                good = r->element[k]->type == REDIS_REPLY_STRING && !strcmp(r->element[k]->str, want);
            }
            if (!good && !bad_reads++) snprintf(first_bad, sizeof(first_bad), "MGET: %s", r->str ? r->str : "(array)");
        } else {
            write_errors += r->type == REDIS_REPLY_ERROR;
        }
        freeReplyObject(r);
    }
    redisReaderFree(rd);
    if (!ok(bad_reads == 0, "... every read gets its value, from the promoted replica (%d did not)", bad_reads))
        diag("first: %s", first_bad);
    diag("writes in flight that got the connection's error: %d of %d", write_errors, n);
    ok(hx_info_num(c, "hotproxy_upstream", "hotproxy_cluster_read_retries") > 0, "INFO counts the reads sent again (%lld)",
       hx_info_num(c, "hotproxy_upstream", "hotproxy_cluster_read_retries"));
    if (fd >= 0) close(fd);
    hx_buf_free(&req);
    hx_buf_free(&got);
    redisFree(c);
    is_int(hx_stop(&px, 5000), 0, "hotproxy exits cleanly");
    hx_topo_stop(&t, 5000);
}

int main(void)
{
    hx_init(400);
    hx_cluster_opts o = {.masters = 3};
    hx_proc proxy;
    int up = hx_cluster_proxy_start(&topo, &o, &proxy, "--upstream-connections", "4", NULL);
    if (!ok(up != 1, "3 masters started") || !ok(up == 0, "hotproxy starts with topology cluster")) {
        done_testing();
        return exit_status();
    }
    redisContext *c = hx_redis(proxy.port);
    ok(hx_info_wait(c, "hotproxy_upstream", "hotproxy_cluster_slots_known", "16384", 20000) == 0,
       "INFO: 16384 slots known");
    master_leaves(c);
    redisFree(c);
    first_map();
    ok(hx_file_contains(proxy.logfile, "owns no slot (2 map reads): its pool is removed"), "the log says why the pool went");
    is_int(hx_stop(&proxy, 5000), 0, "hotproxy exits cleanly (no sanitizer report)");
    hx_topo_stop(&topo, 5000);
    reads_retried();
    done_testing();
    return exit_status();
}
