/*
 * test_sentinel: hotproxy in front of Redis Sentinel (topology sentinel).
 *
 * One master, one replica and three redis-sentinel (down-after 1000 ms),
 * started by the harness' launcher; hotproxy is given one Sentinel with
 * --upstream and the other two in a second --upstream (comma-separated).
 * In order, on the same servers:
 *  - discovery: INFO names the master, the three Sentinels, status ok; and
 *    topology auto with no sentinel-master finds the same master;
 *  - SENTINEL FAILOVER under a write+read load through hotproxy: the data
 *    pool follows, writes succeed on the new master, no command waits for
 *    ever, and the errors stop soon after the switch (times in diag);
 *  - the master SIGKILLed under the same load: followed the same way; the
 *    old master restarted comes back as a replica and hotproxy stays put;
 *  - a Sentinel killed: INFO shows it unreachable, and a failover through
 *    the others is still followed;
 *  - the L1 across a failover: a value cached from the old master is never
 *    returned once the new master has another;
 *  - Sentinels with a password (an ACL user): found with sentinel-user and
 *    sentinel-password, and a wrong password stops startup with the reason;
 *  - every Sentinel killed: the last master is kept, INFO says so, and the
 *    warning is logged once; then the master made a replica by hand: the
 *    client gets -READONLY, and hotproxy asks the Sentinels at once.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "tap.h"

#define DEADLINE 30.0 /* seconds any awaited condition gets */

static hx_topo topo;
static int master_port; /* the master as the test knows it */

static hx_proc *proc_on(int port)
{
    if (topo.masters[0].port == port) return &topo.masters[0];
    if (topo.replicas[0].port == port) return &topo.replicas[0];
    return NULL;
}

static const char *proxy_master(redisContext *c)
{
    return hx_info_get(c, "hotproxy_upstream", "hotproxy_sentinel_master");
}

static int wait_proxy_master(redisContext *c, int port)
{
    char want[64];
    snprintf(want, sizeof(want), "127.0.0.1:%d", port);
    return hx_info_wait(c, "hotproxy_upstream", "hotproxy_sentinel_master", want, (int)(DEADLINE * 1000));
}

/* A Sentinel's own connection subscribed to +switch-master, read without
 * blocking: when Sentinel announced the switch, as the test sees it. */
typedef struct watcher {
    redisContext *c;
    double seen;
} watcher;

static void watch_open(watcher *w, int sentinel_port)
{
    w->seen = 0;
    w->c = hx_redis(sentinel_port);
    if (!w->c) return;
    redisReply *r = redisCommand(w->c, "SUBSCRIBE +switch-master");
    if (r) freeReplyObject(r);
}

static void watch_poll(watcher *w)
{
    if (!w->c || w->seen) return;
    struct pollfd p = {w->c->fd, POLLIN, 0};
    if (poll(&p, 1, 0) != 1) return;
    void *r = NULL;
    if (redisGetReply(w->c, &r) == REDIS_OK && r) {
        w->seen = hx_now();
        freeReplyObject(r);
    }
}

static void watch_close(watcher *w)
{
    if (w->c) redisFree(w->c);
    w->c = NULL;
}

/*
 * Writes and reads through hotproxy while `trigger` makes the master move,
 * until hotproxy follows and then 200 commands in a row succeed.  Returns 0
 * when that happened in time, with what was seen in diag.
 */
typedef struct load_result {
    long ok, errors, lost;   /* lost: a command with no reply at all (a hang or a cut) */
    double first_err, last_err, switch_seen, first_ok_after;
    char last_errstr[160];
    int followed;
} load_result;

static int run_load(int proxy_port, int sentinel_port, void (*trigger)(void), int new_port, load_result *res)
{
    redisContext *w = hx_redis(proxy_port), *rd = hx_redis(proxy_port), *info = hx_redis(proxy_port);
    watcher sw;
    memset(res, 0, sizeof(*res));
    if (!w || !rd || !info) return -1;
    watch_open(&sw, sentinel_port);
    trigger();
    double t_trigger = hx_now(), end = t_trigger + DEADLINE;
    long streak = 0, i = 0;
    char want[64];
    snprintf(want, sizeof(want), "127.0.0.1:%d", new_port);
    while (hx_now() < end) {
        char key[32], val[32];
        snprintf(key, sizeof(key), "load:%ld", i % 100);
        snprintf(val, sizeof(val), "v%ld", i);
        i++;
        redisReply *a = redisCommand(w, "SET %s %s", key, val);
        redisReply *b = a ? redisCommand(rd, "GET %s", key) : NULL;
        watch_poll(&sw);
        double now = hx_now();
        int good = a && a->type == REDIS_REPLY_STATUS && b && b->type == REDIS_REPLY_STRING && !strcmp(b->str, val);
        if (!a || !b) {
            res->lost++;
            /* a cut connection: a client reconnects */
            if (!a) {
                redisFree(w);
                w = hx_redis(proxy_port);
            }
            if (!b) {
                redisFree(rd);
                rd = hx_redis(proxy_port);
            }
        }
        if (good) {
            res->ok++;
            streak++;
            if (res->followed && !res->first_ok_after) res->first_ok_after = now;
        } else {
            res->errors++;
            streak = 0;
            if (!res->first_err) res->first_err = now;
            res->last_err = now;
            const char *e = a && a->type == REDIS_REPLY_ERROR ? a->str : b && b->type == REDIS_REPLY_ERROR ? b->str : "";
            snprintf(res->last_errstr, sizeof(res->last_errstr), "%s", e);
        }
        if (a) freeReplyObject(a);
        if (b) freeReplyObject(b);
        if (!w || !rd) break;
        if (!res->followed && i % 20 == 0) {
            const char *m = proxy_master(info);
            if (m && !strcmp(m, want)) {
                res->followed = 1;
                res->switch_seen = sw.seen ? sw.seen : now;
            }
        }
        if (res->followed && streak >= 200) break;
    }
    watch_close(&sw);
    if (w) redisFree(w);
    if (rd) redisFree(rd);
    redisFree(info);
    diag("  load: %ld ok, %ld errors, %ld without reply; +switch-master %.0f ms after the trigger", res->ok,
         res->errors, res->lost, res->switch_seen ? (res->switch_seen - t_trigger) * 1000 : -1.0);
    if (res->errors)
        diag("  errors from %.0f ms to %.0f ms after the trigger; last error %.0f ms after +switch-master: '%s'",
             (res->first_err - t_trigger) * 1000, (res->last_err - t_trigger) * 1000,
             (res->last_err - res->switch_seen) * 1000, res->last_errstr);
    if (res->first_ok_after)
        diag("  first good write+read %.0f ms after +switch-master", (res->first_ok_after - res->switch_seen) * 1000);
    return res->followed && streak >= 200 ? 0 : -1;
}

static void planned_failover(void)
{
    hx_sentinel_failover(&topo);
}

static void kill_master(void)
{
    hx_proc *p = proc_on(master_port);
    if (p) hx_kill(p);
}

/* Wait until the Sentinels name a master other than old (and its replica is linked again when want_replica). */
static int wait_new_master(int old)
{
    double end = hx_now() + DEADLINE;
    while (hx_now() < end) {
        int p = hx_sentinel_master_port(&topo);
        if (p > 0 && p != old) return p;
        hx_sleep_ms(50);
    }
    return -1;
}

/* Until the replica (the node that is not port) says master_link_status:up. */
static int wait_replica_linked(int master)
{
    int other = topo.masters[0].port == master ? topo.replicas[0].port : topo.masters[0].port;
    double end = hx_now() + DEADLINE;
    while (hx_now() < end) {
        redisContext *c = hx_redis(other);
        const char *s = c ? hx_info_get(c, "replication", "master_link_status") : NULL;
        int up = s && !strcmp(s, "up");
        const char *role = c ? hx_info_get(c, "replication", "role") : NULL;
        up = up && role && !strcmp(role, "slave");
        if (c) redisFree(c);
        if (up) return 0;
        hx_sleep_ms(100);
    }
    return -1;
}

/* The node that is not the master now. */
static int other_port(int port)
{
    return topo.masters[0].port == port ? topo.replicas[0].port : topo.masters[0].port;
}

/* The Sentinels see the replica again (for a next SENTINEL FAILOVER). */
static int sentinels_ready(void)
{
    return hx_sentinel_wait(&topo, (int)(DEADLINE * 1000));
}

static long count_in_file(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    char line[2048];
    long n = 0;
    if (!f) return -1;
    while (fgets(line, sizeof(line), f))
        if (strstr(line, needle)) n++;
    fclose(f);
    return n;
}

/* hotproxy with these arguments stops at startup (status 1), saying needle. */
static void startup_fails(const char *const *args, const char *needle, const char *what)
{
    hx_proc p;
    char port_s[16];
    const char *argv[24];
    int n = 0;
    snprintf(port_s, sizeof(port_s), "%d", hx_free_port());
    argv[n++] = hx_bin();
    argv[n++] = "--port";
    argv[n++] = port_s;
    for (int i = 0; args[i] && n < 23; i++) argv[n++] = args[i];
    argv[n] = NULL;
    int st = hx_spawn(&p, "hotproxy-fails", argv) == 0 ? hx_wait_exit(&p, 20000) : -3;
    if (st == -2) hx_kill(&p);
    if (!ok(st == 1 && count_in_file(p.outfile, needle) > 0, "%s: startup stops (status %d) saying '%s'", what, st,
            needle))
        hx_diag_file(p.outfile, 600);
}

int main(void)
{
    hx_init(400);
    hx_sentinel_opts so = {.name = "mymaster", .replicas = 1, .sentinels = 3, .down_after_ms = 1000,
                           .failover_timeout_ms = 5000};
    if (hx_sentinel_start(&topo, &so) != 0) {
        ok(0, "master, replica and 3 Sentinels started");
        done_testing();
        return exit_status();
    }
    master_port = topo.masters[0].port;
    char s23[64], port_s[16];
    snprintf(s23, sizeof(s23), "127.0.0.1:%d,127.0.0.1:%d", topo.sentinels[1].port, topo.sentinels[2].port);

    /* --- discovery --- */
    hx_proc proxy;
    int rc = hx_proxy_start(&proxy, 0, topo.sentinels[0].port, "--upstream", s23, "--topology", "sentinel",
                            "--sentinel-master", "mymaster", "--l1-ttl", "600000", "--l1-hot-threshold", "0",
                            "--loglevel", "verbose", NULL);
    if (!ok(rc == 0, "hotproxy starts with topology sentinel and three Sentinels")) {
        hx_topo_stop(&topo, 5000);
        done_testing();
        return exit_status();
    }
    redisContext *c = hx_redis(proxy.port);
    char want[64];
    snprintf(want, sizeof(want), "127.0.0.1:%d", master_port);
    is_str(hx_info_get(c, "hotproxy_upstream", "hotproxy_topology"), "sentinel", "INFO: topology sentinel");
    is_str(proxy_master(c), want, "INFO: the master Sentinel names");
    is_str(hx_info_get(c, "hotproxy_upstream", "hotproxy_sentinel_master_name"), "mymaster", "INFO: the master's name");
    ok(hx_info_wait(c, "hotproxy_upstream", "hotproxy_sentinels_reachable", "3", 20000) == 0,
       "INFO: three Sentinels reachable (%s)", hx_info_get(c, "hotproxy_upstream", "hotproxy_sentinels"));
    is_str(hx_info_get(c, "hotproxy_upstream", "hotproxy_sentinel_status"), "ok", "INFO: status ok");
    is_str(hx_cmd(c, "SET disc 1"), "OK", "a write through hotproxy");
    {
        redisContext *m = hx_redis(master_port);
        is_str(hx_cmd(m, "GET disc"), "1", "... reached the master");
        redisFree(m);
    }
    redisFree(c);

    /* topology auto, no sentinel-master: the Sentinel is recognised and its one master used */
    hx_proc autop;
    snprintf(port_s, sizeof(port_s), "%d", topo.sentinels[1].port);
    rc = hx_proxy_start(&autop, 0, topo.sentinels[1].port, NULL);
    if (ok(rc == 0, "hotproxy starts with a Sentinel as its one upstream and topology auto")) {
        redisContext *a = hx_redis(autop.port);
        is_str(hx_info_get(a, "hotproxy_upstream", "hotproxy_topology"), "sentinel", "auto: it is a Sentinel");
        is_str(proxy_master(a), want, "auto: the one master it watches is used");
        redisFree(a);
        hx_stop(&autop, 5000);
    } else {
        ok(0, "auto: it is a Sentinel");
        ok(0, "auto: the one master it watches is used");
    }

    /* startup errors: a name no Sentinel knows, a plain Redis given as a Sentinel */
    {
        char up[32], rup[32];
        snprintf(up, sizeof(up), "127.0.0.1:%d", topo.sentinels[0].port);
        snprintf(rup, sizeof(rup), "127.0.0.1:%d", master_port);
        const char *a1[] = {"--upstream", up, "--topology", "sentinel", "--sentinel-master", "nosuch", NULL};
        startup_fails(a1, "no address for master 'nosuch'", "an unknown sentinel-master");
        const char *a2[] = {"--upstream", rup, "--topology", "sentinel", "--sentinel-master", "mymaster", NULL};
        startup_fails(a2, "no address for master 'mymaster'", "a plain Redis given as a Sentinel");
        const char *a3[] = {"--upstream", up, "--topology", "single", "--sentinel-master", "mymaster", NULL};
        startup_fails(a3, "topology single uses no Sentinel", "sentinel-master with topology single");
    }

    /* --- a planned failover under load --- */
    load_result res;
    int old = master_port;
    int expect_new = other_port(old);
    rc = run_load(proxy.port, topo.sentinels[0].port, planned_failover, expect_new, &res);
    ok(rc == 0, "SENTINEL FAILOVER under load: hotproxy follows, then 200 write+reads in a row succeed");
    ok(res.lost == 0, "SENTINEL FAILOVER: no command was left without a reply (%ld)", res.lost);
    master_port = expect_new;
    c = hx_redis(proxy.port);
    is_str(hx_info_get(c, "hotproxy_upstream", "hotproxy_sentinel_failovers"), "1", "INFO: one failover followed");
    ok(hx_info_num(c, "hotproxy_upstream", "hotproxy_sentinel_last_failover_time") > 0, "INFO: its time");
    diag("  last switch inside hotproxy: %s ms", hx_info_get(c, "hotproxy_upstream", "hotproxy_sentinel_last_switch_ms"));
    is_str(hx_cmd(c, "SET after1 x"), "OK", "a write after the switch");
    redisFree(c);
    {
        redisContext *m = hx_redis(master_port);
        is_str(hx_cmd(m, "GET after1"), "x", "... is on the new master");
        redisFree(m);
    }
    ok(res.errors == 0 || res.last_err - res.switch_seen < 5.0, "SENTINEL FAILOVER: errors stopped soon after +switch-master");

    /* --- the master killed under load --- */
    ok(wait_replica_linked(master_port) == 0 && sentinels_ready() == 0, "the old master is a replica again");
    old = master_port;
    expect_new = other_port(old);
    rc = run_load(proxy.port, topo.sentinels[0].port, kill_master, expect_new, &res);
    ok(rc == 0, "master SIGKILLed under load: hotproxy follows, then 200 write+reads in a row succeed");
    ok(res.lost == 0, "master SIGKILLed: no command was left without a reply (%ld)", res.lost);
    ok(res.errors == 0 || res.last_err - res.switch_seen < 5.0, "master SIGKILLed: errors stopped soon after +switch-master");
    master_port = expect_new;
    c = hx_redis(proxy.port);
    is_str(hx_info_get(c, "hotproxy_upstream", "hotproxy_sentinel_failovers"), "2", "INFO: two failovers followed");
    redisFree(c);

    /* the old master restarted: Sentinel turns it into a replica; hotproxy stays */
    hx_redis_opts ro = {.port = old};
    rc = hx_redis_start_opts(proc_on(old), &ro);
    ok(rc == 0 && wait_replica_linked(master_port) == 0, "the killed master restarted comes back as a replica");
    c = hx_redis(proxy.port);
    is_str(hx_cmd(c, "SET after2 y"), "OK", "writes through hotproxy still succeed");
    snprintf(want, sizeof(want), "127.0.0.1:%d", master_port);
    is_str(proxy_master(c), want, "hotproxy stays on the new master");
    redisFree(c);

    /* --- a Sentinel killed --- */
    hx_kill(&topo.sentinels[0]);
    c = hx_redis(proxy.port);
    ok(hx_info_wait(c, "hotproxy_upstream", "hotproxy_sentinels_reachable", "2", 20000) == 0,
       "a Sentinel killed: INFO shows two reachable (%s)", hx_info_get(c, "hotproxy_upstream", "hotproxy_sentinels"));
    is_str(hx_info_get(c, "hotproxy_upstream", "hotproxy_sentinel_status"), "ok", "... status still ok");

    /* --- the L1 across a failover (through the two Sentinels left) --- */
    is_str(hx_cmd(c, "SET l1key v1"), "OK", "SET l1key v1 through hotproxy");
    ok(hx_l1_hit(c, "l1key", 50), "l1key is answered from the L1");
    ok(wait_replica_linked(master_port) == 0, "the replica is linked (it has l1key)");
    {
        /* the replica has it before the switch */
        redisContext *r = hx_redis(other_port(master_port));
        double end = hx_now() + DEADLINE;
        while (hx_now() < end && strcmp(hx_cmd(r, "GET l1key"), "v1")) hx_sleep_ms(20);
        redisFree(r);
    }
    old = master_port;
    planned_failover();
    int np = wait_new_master(old);
    ok(np == other_port(old), "SENTINEL FAILOVER through the Sentinels left (new master %d)", np);
    master_port = np;
    ok(wait_proxy_master(c, master_port) == 0, "hotproxy follows it");
    {
        redisContext *m = hx_redis(master_port);
        is_str(hx_cmd(m, "SET l1key v2"), "OK", "l1key set to v2 on the new master directly");
        redisFree(m);
    }
    int saw_v1 = 0, saw_v2 = 0;
    double end = hx_now() + DEADLINE;
    while (hx_now() < end && !saw_v2) {
        const char *v = hx_cmd(c, "GET l1key");
        if (!strcmp(v, "v1")) saw_v1++;
        if (!strcmp(v, "v2")) saw_v2 = 1;
    }
    ok(saw_v2, "GET l1key through hotproxy gives v2");
    ok(!saw_v1, "... and never v1 after the switch (%d times)", saw_v1);
    redisFree(c);

    /* --- Sentinels with a password --- */
    int acl_ok = 1;
    for (int i = 1; i < topo.nsentinels; i++) {
        redisContext *s = hx_redis(topo.sentinels[i].port);
        acl_ok &= s && !strcmp(hx_cmd(s, "ACL SETUSER hp on >sentpw ~* &* +@all"), "OK");
        acl_ok &= s && !strcmp(hx_cmd(s, "ACL SETUSER default resetpass >defaultpw"), "OK");
        if (s) redisFree(s);
    }
    ok(acl_ok, "the Sentinels left now want a password");
    snprintf(want, sizeof(want), "127.0.0.1:%d", master_port);
    char s3[32];
    snprintf(s3, sizeof(s3), "127.0.0.1:%d", topo.sentinels[2].port);
    hx_proc pw;
    rc = hx_proxy_start(&pw, 0, topo.sentinels[1].port, "--upstream", s3, "--topology", "sentinel",
                        "--sentinel-master", "mymaster", "--sentinel-user", "hp", "--sentinel-password", "sentpw",
                        "--loglevel", "verbose", NULL);
    if (ok(rc == 0, "hotproxy starts with sentinel-user and sentinel-password")) {
        redisContext *p = hx_redis(pw.port);
        is_str(proxy_master(p), want, "... and finds the master through them");
        ok(hx_info_wait(p, "hotproxy_upstream", "hotproxy_sentinels_reachable", "2", 20000) == 0,
           "... its links log in (two reachable: %s)", hx_info_get(p, "hotproxy_upstream", "hotproxy_sentinels"));
        is_str(hx_cmd(p, "SET pw 1"), "OK", "... and writes go through");
        redisFree(p);
    } else {
        for (int i = 0; i < 3; i++) ok(0, "(hotproxy with Sentinel passwords did not start)");
    }
    {
        /* a wrong password: startup stops, saying why */
        hx_proc bad;
        char up[32];
        snprintf(up, sizeof(up), "127.0.0.1:%d", topo.sentinels[1].port);
        snprintf(port_s, sizeof(port_s), "%d", hx_free_port());
        const char *argv[] = {hx_bin(), "--port", port_s, "--upstream", up, "--topology", "sentinel",
                              "--sentinel-master", "mymaster", "--sentinel-user", "hp", "--sentinel-password",
                              "wrong", NULL};
        int st = hx_spawn(&bad, "hotproxy-badpw", argv) == 0 ? hx_wait_exit(&bad, 20000) : -3;
        if (st == -2) hx_kill(&bad);
        ok(st == 1 && count_in_file(bad.outfile, "AUTH") > 0, "a wrong sentinel-password stops startup (status %d)",
           st);
        hx_diag_file(bad.outfile, 600);
    }

    /* --- every Sentinel killed: the last master is kept --- */
    for (int i = 1; i < topo.nsentinels; i++) hx_kill(&topo.sentinels[i]);
    c = hx_redis(pw.port);
    ok(hx_info_wait(c, "hotproxy_upstream", "hotproxy_sentinel_status", "no-sentinel-reachable", 20000) == 0,
       "all Sentinels killed: INFO says no-sentinel-reachable");
    is_str(hx_info_get(c, "hotproxy_upstream", "hotproxy_sentinels_reachable"), "0", "... none reachable");
    is_str(proxy_master(c), want, "... the last master is kept");
    is_str(hx_cmd(c, "SET last 1"), "OK", "... and writes still go to it");
    /* a few more rounds: still one warning */
    long rounds0 = count_in_file(pw.logfile, "did not name the master");
    end = hx_now() + DEADLINE;
    while (hx_now() < end && count_in_file(pw.logfile, "did not name the master") < rounds0 + 4) {
        hx_cmd(c, "PING");
        hx_sleep_ms(100);
    }
    is_int(count_in_file(pw.logfile, "none of the"), 1, "the warning is logged once");

    /* the master turned into a replica behind hotproxy's back: its -READONLY
     * reaches the client, and starts a round of asking at once */
    {
        int other = other_port(master_port);
        redisContext *o = hx_redis(other), *m = hx_redis(master_port);
        hx_cmd(o, "REPLICAOF NO ONE");
        hx_cmd(m, "REPLICAOF 127.0.0.1 %d", other);
        redisFree(o);
        redisFree(m);
        const char *r = hx_cmd(c, "SET ro 1");
        ok(!strncmp(r, "READONLY", 8), "a write to the demoted master gets its -READONLY ('%s')", r);
        ok(count_in_file(pw.logfile, "answered -READONLY") >= 1, "... which starts a round of asking the Sentinels");
    }
    redisFree(c);

    is_int(hx_stop(&pw, 10000), 0, "hotproxy (passwords) exits cleanly");
    is_int(hx_stop(&proxy, 10000), 0, "hotproxy exits cleanly");
    hx_topo_stop(&topo, 5000);
    done_testing();
    return exit_status();
}
