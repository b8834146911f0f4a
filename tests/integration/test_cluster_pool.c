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
 *  - commands sent before the first map wait for it (see first_map).
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

/* The master's node id on port. */
static void node_id(int port, char *out, size_t n)
{
    redisContext *d = hx_redis(port);
    snprintf(out, n, "%s", d ? hx_cmd(d, "CLUSTER MYID") : "");
    if (d) redisFree(d);
}

/* The port of the master that owns key, asked of the node on port, or -1. */
static int owner_port(int port, const char *key)
{
    redisContext *c = hx_redis(port);
    if (!c) return -1;
    redisReply *r = redisCommand(c, "TYPE %s", key);
    int p = -1;
    if (r && r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "MOVED ", 6)) {
        const char *colon = strrchr(r->str, ':');
        if (colon) p = atoi(colon + 1);
    } else if (r && r->type != REDIS_REPLY_ERROR) {
        p = port;
    }
    if (r) freeReplyObject(r);
    redisFree(c);
    return p;
}

/* The slots hotproxy's map gives the master on port (-1: none). */
static int slots_of(redisContext *c, int port)
{
    const char *map = hx_info_get(c, "hotproxy_upstream", "hotproxy_cluster_slot_map");
    char pat[48];
    snprintf(pat, sizeof(pat), "127.0.0.1:%d=", port);
    const char *at = map ? strstr(map, pat) : NULL;
    return at ? atoi(at + strlen(pat)) : -1;
}

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
    int errors = 0;
    for (int i = 0; i < n; i++) {
        char v[96];
        snprintf(v, sizeof(v), "%d:%.31s", round, keys[i]);
        redisReply *r = redisCommand(c, "SET %s %s", keys[i], v);
        if (!r || r->type != REDIS_REPLY_STATUS || strcmp(r->str, "OK")) {
            errors++;
            snprintf(last_err, sizeof(last_err), "SET %s: %s", keys[i], r ? (r->str ? r->str : "?") : c->errstr);
        }
        if (r) freeReplyObject(r);
        r = redisCommand(c, "GET %s", keys[i]);
        if (!r || r->type != REDIS_REPLY_STRING || strcmp(r->str, v)) {
            errors++;
            snprintf(last_err, sizeof(last_err), "GET %s: %s (wanted %s)", keys[i],
                     r ? (r->str ? r->str : "(nil)") : c->errstr, v);
        }
        if (r) freeReplyObject(r);
    }
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
    node_id(topo.masters[0].port, id0, sizeof(id0));
    node_id(n4->port, id4, sizeof(id4));
    const char *add[] = {"redis-cli", "--cluster", "add-node", addr4, seed, NULL};
    if (!ok(cli("add-node", add) == 0 && hx_cluster_wait(&topo, 30000) == 0,
            "redis-cli --cluster add-node: every node knows the 4th"))
        return;
    const char *to4[] = {"redis-cli", "--cluster", "reshard", seed, "--cluster-from", id0, "--cluster-to", id4,
                         "--cluster-slots", "200", "--cluster-yes", NULL};
    if (!ok(cli("reshard-to-4", to4) == 0, "200 slots resharded to it")) return;
    int got = -1;
    double until = hx_now() + DEADLINE;
    while (hx_now() < until && (got = slots_of(c, n4->port)) != 200) hx_sleep_ms(100);
    ok(got == 200 && pool_listed(c, n4->port), "hotproxy's map gives it 200 slots, INFO lists its pool");
    /* keys of every master, two of the 4th's among them */
    static char keys[24][32];
    int n = 0, on4 = 0;
    for (int i = 0; n < 24 && i < 20000; i++) {
        char k[32];
        snprintf(k, sizeof(k), "mv:%d", i);
        int own = owner_port(topo.masters[0].port, k) == n4->port;
        if (!own && n >= 20) continue;
        if (own && on4 >= 4) continue;
        on4 += own;
        snprintf(keys[n++], sizeof(keys[0]), "%s", k);
    }
    int errors = load_round(c, keys, n, 1);
    redisContext *d4 = hx_redis(n4->port);
    int served = 0;
    for (int i = 0; d4 && i < n; i++) served += owner_port(n4->port, keys[i]) == n4->port && !strncmp(hx_cmd(d4, "GET %s", keys[i]), "1:", 2);
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
    int seed = node_port();
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
        is_str(d ? hx_cmd(d, "CLUSTER MEET 127.0.0.1 %d", topo.masters[0].port) : "", "OK", "... and meets the Cluster");
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

int main(void)
{
    hx_init(400);
    hx_cluster_opts o = {.masters = 3};
    if (!ok(hx_cluster_start(&topo, &o) == 0, "3 masters started")) {
        done_testing();
        return exit_status();
    }
    hx_proc proxy;
    if (!ok(hx_proxy_start(&proxy, 0, topo.masters[0].port, "--topology", "cluster", "--upstream-connections", "4",
                           NULL) == 0,
            "hotproxy starts with topology cluster")) {
        hx_topo_stop(&topo, 5000);
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
    done_testing();
    return exit_status();
}
