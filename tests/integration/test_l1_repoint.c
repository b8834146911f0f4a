/*
 * test_l1_repoint: the L1 across a pool re-pointed at another server (what
 * a Sentinel failover will do), through HOTPROXY DEBUG REPOINT.
 *
 * Two redis-servers, A and B, hold different values for the same key;
 * hotproxy (l1-ttl 60000: only a flush or an invalidation can make an entry
 * go within the test's bounds) points at A and caches the key.  Once the
 * pool is re-pointed at B:
 *  - the value cached from A is never served: every read answers B's value
 *    (or an error while the pool reconnects), never A's;
 *  - the pool's tracking link comes up again, on B (INFO), and L1 hits
 *    resume, with B's value;
 *  - tracking works on B: a write made directly to B shows through
 *    hotproxy, which only B's invalidation can cause with that l1-ttl.
 */
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "tap.h"

static hx_proc ra, rb, px;

/* GET key until it reads want; 0 when it did within timeout_ms.  Any read
 * of never (when not NULL) fails at once: *seen_never is set. */
static int read_until(redisContext *c, const char *key, const char *want, const char *never, int *seen_never,
                      int timeout_ms)
{
    double end = hx_now() + timeout_ms / 1000.0;
    while (hx_now() < end) {
        const char *v = hx_cmd(c, "GET %s", key);
        if (never && !strcmp(v, never)) {
            *seen_never = 1;
            diag("GET %s read '%s'", key, v);
            return -1;
        }
        if (!strcmp(v, want)) return 0;
        hx_sleep_ms(20);
    }
    return -1;
}

int main(void)
{
    hx_init(180);
    if (hx_redis_start(&ra, 0) != 0 || hx_redis_start(&rb, 0) != 0) skip_all("redis-server does not start");
    redisContext *da = hx_redis(ra.port), *db = hx_redis(rb.port);
    is_str(hx_cmd(da, "SET rp:k from-a"), "OK", "A holds rp:k = from-a");
    is_str(hx_cmd(db, "SET rp:k from-b"), "OK", "B holds rp:k = from-b");

    const char *extra[] = {"--l1-ttl", "60000", "--l1-negative-ttl", "60000", NULL};
    if (hx_proxy_startv(&px, 0, ra.port, extra) != 0) {
        ok(0, "hotproxy starts");
        done_testing();
        return exit_status();
    }
    redisContext *pc = hx_redis(px.port);
    ok(hx_info_wait(pc, "hotproxy_cache", "hotproxy_l1_tracking", "up", 20000) == 0, "tracking is up on A");
    ok(hx_l1_hit(pc, "rp:k", 50), "rp:k is answered from the L1");
    is_str(hx_cmd(pc, "GET rp:k"), "from-a", "the L1 holds A's value");

    /* bad input: a clear error, nothing moves */
    ok(!strncmp(hx_cmd(pc, "HOTPROXY DEBUG REPOINT 127.0.0.1 notaport"), "ERR", 3), "REPOINT: a bad port is an error");
    ok(!strncmp(hx_cmd(pc, "HOTPROXY DEBUG NOSUCH"), "ERR", 3), "DEBUG: an unknown subcommand is an error");
    is_str(hx_cmd(pc, "GET rp:k"), "from-a", "still A's value after the refused REPOINTs");

    char port[16];
    snprintf(port, sizeof(port), "%d", rb.port);
    is_str(hx_cmd(pc, "HOTPROXY DEBUG REPOINT 127.0.0.1 %s", port), "OK", "REPOINT to B answers OK");

    /* From here on, A's value must never be read again. */
    int stale = 0;
    ok(read_until(pc, "rp:k", "from-b", "from-a", &stale, 20000) == 0 && !stale,
       "right after the repoint, GET reads B's value, never A's cached one");
    int never_a = 1;
    for (int i = 0; i < 50; i++) {
        const char *v = hx_cmd(pc, "GET rp:k");
        if (!strcmp(v, "from-a")) {
            never_a = 0;
            diag("read %d: '%s'", i, v);
            break;
        }
    }
    ok(never_a, "50 more reads: none answers A's value");

    ok(hx_info_wait(pc, "hotproxy_cache", "hotproxy_l1_tracking", "up", 20000) == 0,
       "the pool's tracking link comes up again, on B");
    ok(hx_l1_hit(pc, "rp:k", 100), "L1 hits resume after the repoint");
    is_str(hx_cmd(pc, "GET rp:k"), "from-b", "the L1 now holds B's value");

    /* Tracking set up again on B: with l1-ttl 60000 only B's invalidation
     * can make this write show. */
    is_str(hx_cmd(db, "SET rp:k from-b2"), "OK", "a direct write to B");
    stale = 0;
    ok(read_until(pc, "rp:k", "from-b2", NULL, &stale, 20000) == 0, "B's invalidation reaches the L1: GET reads the new value");
    /* and A no longer matters */
    is_str(hx_cmd(da, "SET rp:k from-a2"), "OK", "a direct write to A");
    is_str(hx_cmd(pc, "GET rp:k"), "from-b2", "hotproxy still reads B");

    /* A REPOINT queued in MULTI runs inside EXEC's reply, and closes the
     * very connection that reply is being read from: the reply's bytes must
     * outlive that (a use-after-free the sanitizer build catches). */
    is_str(hx_cmd(pc, "MULTI"), "OK", "MULTI");
    is_str(hx_cmd(pc, "HOTPROXY DEBUG REPOINT 127.0.0.1 %s", port), "QUEUED", "a REPOINT queued in MULTI");
    is_str(hx_cmd(pc, "SET rp:m v"), "QUEUED", "then a SET");
    const char *exec = hx_cmd(pc, "EXEC");
    diag("EXEC: %s", exec);
    redisContext *pc2 = hx_redis(px.port);
    is_str(pc2 ? hx_cmd(pc2, "PING") : "", "PONG", "hotproxy still answers after EXEC ran the REPOINT");
    if (pc2) redisFree(pc2);

    redisFree(pc);
    redisFree(da);
    redisFree(db);
    is_int(hx_stop(&px, 15000), 0, "hotproxy exits 0 on SIGTERM");
    hx_stop(&ra, 5000);
    hx_stop(&rb, 5000);
    done_testing();
    return exit_status();
}
