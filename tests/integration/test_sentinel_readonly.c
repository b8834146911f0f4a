/*
 * test_sentinel_readonly: a write the master refused with -READONLY (it was
 * demoted: the old master came back as a replica) never ran, so hotproxy
 * sends it once more to the master the Sentinels name next.
 *
 * One master M, one replica R and three redis-sentinel; hotproxy with
 * topology sentinel follows M.  Then, behind every Sentinel's back, R is
 * promoted and M made its replica (REPLICAOF by hand), and a write goes to
 * hotproxy: M answers -READONLY.  Only then are the Sentinels told R is the
 * master (SENTINEL REMOVE / MONITOR), so hotproxy's next check finds R.  The
 * client must get +OK, the key must be on R, and INFO must count the retry.
 * A write refused again, or with no new master in time, gets the error.
 */
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "tap.h"

#define DEADLINE 30.0

static hx_topo topo;


int main(void)
{
    hx_init(240);
    hx_sentinel_opts so = {.name = "ro", .replicas = 1, .sentinels = 3, .down_after_ms = 1000,
                           .failover_timeout_ms = 5000};
    if (hx_sentinel_start(&topo, &so) != 0) {
        ok(0, "master, replica and 3 Sentinels started");
        done_testing();
        return exit_status();
    }
    int m = topo.masters[0].port, r = topo.replicas[0].port;
    char s23[64];
    snprintf(s23, sizeof(s23), "127.0.0.1:%d,127.0.0.1:%d", topo.sentinels[1].port, topo.sentinels[2].port);
    hx_proc proxy;
    if (!ok(hx_proxy_start(&proxy, 0, topo.sentinels[0].port, "--upstream", s23, "--topology", "sentinel",
                           "--sentinel-master", "ro", NULL) == 0,
            "hotproxy starts with topology sentinel")) {
        hx_topo_stop(&topo, 5000);
        done_testing();
        return exit_status();
    }
    redisContext *c = hx_redis(proxy.port);
    is_str(hx_cmd(c, "SET before 1"), "OK", "a write through hotproxy reaches M");

    /* R promoted, M demoted, by hand: the Sentinels still name M */
    redisContext *rc = hx_redis(r), *mc = hx_redis(m);
    is_str(hx_cmd(rc, "REPLICAOF NO ONE"), "OK", "R promoted by hand");
    is_str(hx_cmd(mc, "REPLICAOF 127.0.0.1 %d", r), "OK", "M made R's replica by hand");
    ok(!strncmp(hx_cmd(mc, "SET direct 1"), "READONLY", 8), "M now refuses writes with -READONLY");

    /* the write goes out now; its reply is read after the Sentinels move */
    ok(redisAppendCommand(c, "SET retried yes") == REDIS_OK, "a write sent through hotproxy (M will refuse it)");
    int wdone = 0;
    redisBufferWrite(c, &wdone);
    /* M refuses it (hotproxy logs it) before the Sentinels learn of R */
    redisContext *probe = hx_redis(proxy.port);
    double end = hx_now() + DEADLINE;
    while (hx_now() < end && !hx_file_contains(proxy.logfile, "answered -READONLY")) hx_sleep_ms(20);
    ok(hx_file_contains(proxy.logfile, "answered -READONLY"), "M refused it: hotproxy asks the Sentinels at once");
    /* the Sentinels are told R is the master now */
    for (int i = 0; i < topo.nsentinels; i++) {
        redisContext *s = hx_redis(topo.sentinels[i].port);
        hx_cmd(s, "SENTINEL REMOVE ro");
        const char *mon = hx_cmd(s, "SENTINEL MONITOR ro 127.0.0.1 %d 2", r);
        ok(!strcmp(mon, "OK"), "Sentinel %d now monitors R as 'ro' (%s)", i, mon);
        redisFree(s);
    }
    redisReply *rep = NULL;
    int got = redisGetReply(c, (void **)&rep) == REDIS_OK && rep;
    ok(got && rep->type == REDIS_REPLY_STATUS && !strcmp(rep->str, "OK"),
       "the refused write was sent again to R: +OK ('%s')", got && rep->str ? rep->str : "no reply");
    if (rep) freeReplyObject(rep);
    is_str(hx_cmd(rc, "GET retried"), "yes", "the key is on R");
    is_str(hx_info_get(probe, "hotproxy_upstream", "hotproxy_sentinel_readonly_retries"), "1",
           "INFO counts one write sent again");
    char want[32];
    snprintf(want, sizeof(want), "127.0.0.1:%d", r);
    is_str(hx_info_get(probe, "hotproxy_upstream", "hotproxy_sentinel_master"), want, "hotproxy follows R");

    /* R demoted too, with no new master named: the error, after the wait */
    is_str(hx_cmd(rc, "REPLICAOF 127.0.0.1 %d", m), "OK", "R made M's replica by hand: no master at all");
    const char *again = hx_cmd(c, "SET nomaster 1");
    ok(!strncmp(again, "READONLY", 8), "with no new master in time, the client gets the -READONLY ('%s')", again);
    is_str(hx_info_get(probe, "hotproxy_upstream", "hotproxy_sentinel_readonly_retries"), "1",
           "and nothing was sent again");

    redisFree(probe);
    redisFree(rc);
    redisFree(mc);
    redisFree(c);
    is_int(hx_stop(&proxy, 10000), 0, "hotproxy exits cleanly");
    hx_topo_stop(&topo, 5000);
    done_testing();
    return exit_status();
}
