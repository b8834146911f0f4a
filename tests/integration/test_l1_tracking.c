/*
 * test_l1_tracking: the L1 never serves what Redis' tracking can no longer
 * invalidate, judged by what a client reads through hotproxy after a write
 * made directly to Redis (or through a script).  Every proxy here runs with
 * l1-ttl 60000, so only an invalidation (or a flush) can make a new value
 * show within the test's bounds.
 *
 *  - a shared data connection that Redis closes (CLIENT KILL, a reply over
 *    client-output-buffer-limit, the idle timeout) takes its tracking with it:
 *    once hotproxy has reconnected, a direct write shows on the first read;
 *  - a transient error (-BUSY from a long script) on the invalidation link,
 *    or to a data connection's CLIENT TRACKING, does not turn tracking off
 *    for good: it comes back up, never "refused";
 *  - a script writing a key it did not declare: a GET pipelined behind it on
 *    the same connection, and a GET on another connection once its reply is
 *    in, read the new value; with tracking off the script flushes the L1; a
 *    read-only script (EVAL_RO) does neither.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "tap.h"

static hx_proc redis;
static redisContext *dr; /* direct to redis-server */

/* ---- small helpers -------------------------------------------------------- */

/* The reply as text ("(nil)", "(error) ...", the integer, the string). */
static const char *text_of(redisReply *r, const char *errstr)
{
    static char bufs[8][512];
    static int next;
    char *out = bufs[next++ % 8];
    if (!r) snprintf(out, 512, "(no reply: %s)", errstr ? errstr : "?");
    else if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS)
        snprintf(out, 512, "%.*s", (int)r->len, r->str);
    else if (r->type == REDIS_REPLY_ERROR) snprintf(out, 512, "(error) %.*s", (int)r->len, r->str);
    else if (r->type == REDIS_REPLY_INTEGER) snprintf(out, 512, "%lld", r->integer);
    else if (r->type == REDIS_REPLY_NIL) snprintf(out, 512, "(nil)");
    else snprintf(out, 512, "(type %d)", r->type);
    return out;
}

static const char *cmd(redisContext *c, const char *fmt, ...)
{
    if (!c) return "(no reply: no connection)";
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    const char *t = text_of(r, c->errstr);
    if (r) freeReplyObject(r);
    return t;
}

/* The next reply of a pipeline, as text. */
static const char *next_reply(redisContext *c)
{
    void *r = NULL;
    if (redisGetReply(c, &r) != REDIS_OK) r = NULL;
    const char *t = text_of(r, c->errstr);
    if (r) freeReplyObject(r);
    return t;
}

/* A field of hotproxy's INFO hotproxy_cache (answered by hotproxy itself). */
static const char *l1s(redisContext *pc, const char *field) { return hx_info_get(pc, "hotproxy_cache", field); }

static long long l1n(redisContext *pc, const char *field) { return hx_info_num(pc, "hotproxy_cache", field); }

/* Poll until the field reads want; 0 when it did within timeout_ms. */
static int wait_l1(redisContext *pc, const char *field, const char *want, int timeout_ms)
{
    return hx_info_wait(pc, "hotproxy_cache", field, want, timeout_ms);
}

/* GET key through hotproxy until one is answered from the L1 (hits grows by
 * one); 1 when that happened within 20 reads. */
static int ensure_hit(redisContext *pc, const char *key) { return hx_l1_hit(pc, key, 20); }

static int start_proxy(hx_proc *p, const char *const *extra)
{
    return hx_proxy_startv(p, 0, redis.port, extra);
}

/* hotproxy with tracking up (bounded wait). */
static redisContext *tracked_ctx(hx_proc *p, const char *what)
{
    redisContext *pc = hx_redis(p->port);
    int up = wait_l1(pc, "hotproxy_l1_tracking", "up", 10000);
    if (up) diag("%s: hotproxy_l1_tracking is %s", what, l1s(pc, "hotproxy_l1_tracking"));
    ok(up == 0, "%s: INFO says hotproxy_l1_tracking:up", what);
    return pc;
}

/*
 * Ids of the connections Redis tracks for, redirecting to link (hotproxy's
 * shared data connections), from CLIENT LIST; returns how many (at most max).
 */
static int tracking_conns(long long link, long long *ids, int max)
{
    redisReply *r = redisCommand(dr, "CLIENT LIST");
    int n = 0;
    char redir[48];
    snprintf(redir, sizeof(redir), " redir=%lld ", link);
    if (r && r->type == REDIS_REPLY_STRING) {
        for (char *line = r->str; line && *line && n < max;) {
            char *end = strchr(line, '\n');
            if (end) *end = '\0';
            const char *flags = strstr(line, " flags=");
            if (!strncmp(line, "id=", 3) && flags && strstr(line, redir)) {
                const char *f = flags + 7;
                while (*f && *f != ' ' && *f != 't') f++;
                if (*f == 't') ids[n++] = atoll(line + 3);
            }
            line = end ? end + 1 : NULL;
        }
    }
    if (r) freeReplyObject(r);
    return n;
}

static int in(long long id, const long long *ids, int n)
{
    for (int i = 0; i < n; i++)
        if (ids[i] == id) return 1;
    return 0;
}

/* ---- 1. a shared data connection lost ------------------------------------- */

typedef enum { KILL, OUTPUT_LIMIT, IDLE_TIMEOUT } trigger;

static void conn_lost(redisContext *pc, int proxy_port, trigger how, const char *label)
{
    char key[64];
    snprintf(key, sizeof(key), "cl:%d", (int)how);
    cmd(dr, "SET %s old", key);
    ok(ensure_hit(pc, key), "%s: GET %s is answered from the L1 (hotproxy_l1_hits grows)", label, key);
    long long link = l1n(pc, "hotproxy_l1_tracking_link_id");
    long long before[16];
    int nb = tracking_conns(link, before, 16);
    ok(nb > 0, "%s: Redis tracks for %d hotproxy connection(s) redirecting to the link %lld", label, nb, link);
    long long lost0 = l1n(pc, "hotproxy_l1_flushes_connection_lost");

    if (how == KILL) {
        for (int i = 0; i < nb; i++) {
            char id[32];
            snprintf(id, sizeof(id), "%lld", before[i]);
            cmd(dr, "CLIENT KILL ID %s", id);
        }
    } else if (how == OUTPUT_LIMIT) {
        /* a 2 MB reply on a connection allowed 1 MB of output */
        char *big = malloc(2 << 20);
        memset(big, 'x', 2 << 20);
        redisReply *r = redisCommand(dr, "SET cl:big %b", big, (size_t)(2 << 20));
        if (r) freeReplyObject(r);
        free(big);
        cmd(dr, "CONFIG SET client-output-buffer-limit %s", "normal 1mb 0 0");
        redisContext *b = hx_redis(proxy_port);
        const char *t = cmd(b, "GETRANGE cl:big 0 -1");
        diag("%s: GETRANGE of 2 MB through hotproxy: %.60s", label, t);
        redisFree(b);
        cmd(dr, "CONFIG SET client-output-buffer-limit %s", "normal 0 0 0");
    } else {
        cmd(dr, "CONFIG SET timeout 1");
    }

    /* hotproxy noticed once it has a new tracking connection: it reconnects
     * (and asks for tracking again) only after seeing the old one close */
    long long now[16];
    int fresh = 0;
    double t0 = hx_now();
    while (hx_now() - t0 < 15) {
        int n = tracking_conns(link, now, 16);
        fresh = 0;
        for (int i = 0; i < n; i++) fresh += !in(now[i], before, nb);
        if (fresh > 0 && fresh == n) break;
        hx_sleep_ms(20);
    }
    if (how == IDLE_TIMEOUT) cmd(dr, "CONFIG SET timeout 0");
    ok(fresh > 0, "%s: hotproxy reconnected with tracking (%d new connection(s)) after %.2f s", label, fresh,
       hx_now() - t0);

    cmd(dr, "SET %s new", key);
    is_str(cmd(pc, "GET %s", key), "new", "%s: the first GET after a direct SET returns the new value", label);
    ok(l1n(pc, "hotproxy_l1_flushes_connection_lost") > lost0,
       "%s: INFO counts the flush (hotproxy_l1_flushes_connection_lost)", label);
}

/* ---- 2. a transient error on the invalidation link ------------------------ */

static void busy_link(redisContext *pc, const char *label)
{
    const char *key = "busy:k";
    /* a script elsewhere may have had this link opened again: wait for it */
    ok(wait_l1(pc, "hotproxy_l1_tracking", "up", 10000) == 0, "%s: tracking is up", label);
    cmd(dr, "CONFIG SET busy-reply-threshold 100");
    long long link = l1n(pc, "hotproxy_l1_tracking_link_id");
    char ids[32];
    snprintf(ids, sizeof(ids), "%lld", link);
    /* kill the link, and keep Redis busy while hotproxy reconnects it; its
     * heartbeat PING meets the script too */
    is_str(cmd(dr, "CLIENT KILL ID %s", ids), "1", "%s: CLIENT KILL ID of the link", label);
    redisContext *s = hx_redis(redis.port);
    redisAppendCommand(s, "EVAL %s 0", "while true do end");
    int done = 0;
    redisBufferWrite(s, &done);
    int refused = 0, left_up = 0;
    double t0 = hx_now();
    /* at least 3 s of script: past the heartbeat deadline and a reconnect */
    while (hx_now() - t0 < 3.5) {
        const char *tr = l1s(pc, "hotproxy_l1_tracking");
        if (tr && !strcmp(tr, "refused")) refused = 1;
        if (tr && strcmp(tr, "up")) left_up = 1;
        hx_sleep_ms(20);
    }
    const char *k = "?";
    for (int i = 0; i < 100; i++) {
        k = cmd(dr, "SCRIPT KILL");
        if (!strcmp(k, "OK")) break;
        hx_sleep_ms(20);
    }
    is_str(k, "OK", "%s: SCRIPT KILL directly ends the script", label);
    diag("%s: the script's client got: %s", label, next_reply(s));
    redisFree(s);
    cmd(dr, "CONFIG SET busy-reply-threshold 5000");
    ok(left_up, "%s: INFO showed tracking not up while Redis was busy", label);
    int up = -1;
    t0 = hx_now();
    while (hx_now() - t0 < 20) {
        const char *tr = l1s(pc, "hotproxy_l1_tracking");
        if (tr && !strcmp(tr, "refused")) refused = 1;
        if (tr && !strcmp(tr, "up")) {
            up = 0;
            break;
        }
        hx_sleep_ms(20);
    }
    ok(!refused, "%s: INFO never said hotproxy_l1_tracking:refused", label);
    ok(up == 0, "%s: tracking is up again %.2f s after the script ended", label, hx_now() - t0);
    is_str(l1s(pc, "hotproxy_l1_mode"), "tracking", "%s: INFO says hotproxy_l1_mode:tracking", label);
    /* and works: a direct write is seen at once (l1-ttl is 60 s here) */
    cmd(dr, "SET %s old", key);
    ok(ensure_hit(pc, key), "%s: GET %s is answered from the L1", label, key);
    cmd(dr, "SET %s new", key);
    const char *t = "?";
    t0 = hx_now();
    while (hx_now() - t0 < 20 && strcmp((t = cmd(pc, "GET %s", key)), "new")) hx_sleep_ms(1);
    is_str(t, "new", "%s: a direct write shows through hotproxy (within 20 s, l1-ttl 60 s)", label);
}

/*
 * The same for CLIENT TRACKING on a data connection: CLIENT KILL of the
 * connection and a 0.3 s script in one write, so that hotproxy's reconnect
 * asks for tracking while Redis answers -BUSY.
 */
static void busy_data(redisContext *pc, const char *label)
{
    const char *key = "busy:d";
    cmd(dr, "CONFIG SET busy-reply-threshold 100");
    long long link = l1n(pc, "hotproxy_l1_tracking_link_id");
    long long before[16];
    int nb = tracking_conns(link, before, 16);
    ok(nb > 0, "%s: Redis tracks for %d hotproxy connection(s)", label, nb);
    redisContext *s = hx_redis(redis.port);
    for (int i = 0; i < nb; i++) redisAppendCommand(s, "CLIENT KILL ID %lld", before[i]);
    redisAppendCommand(s, "EVAL %s 0",
                       "local s = redis.call('TIME') local t0 = s[1] * 1000000 + s[2] "
                       "repeat local n = redis.call('TIME') until n[1] * 1000000 + n[2] - t0 > 300000 return 1");
    for (int i = 0; i < nb; i++) next_reply(s);
    is_str(next_reply(s), "1", "%s: CLIENT KILL of the data connection(s), then a 0.3 s script, in one write", label);
    redisFree(s);
    cmd(dr, "CONFIG SET busy-reply-threshold 5000");
    int refused = 0, fresh = 0;
    double t0 = hx_now();
    while (hx_now() - t0 < 15) {
        const char *tr = l1s(pc, "hotproxy_l1_tracking");
        if (tr && !strcmp(tr, "refused")) refused = 1;
        long long nl = l1n(pc, "hotproxy_l1_tracking_link_id"), now[16];
        int n = tracking_conns(nl, now, 16);
        fresh = 0;
        for (int i = 0; i < n; i++) fresh += !in(now[i], before, nb);
        if (tr && !strcmp(tr, "up") && fresh > 0 && fresh == n) break;
        hx_sleep_ms(20);
    }
    diag("%s: the link %s", label,
         l1n(pc, "hotproxy_l1_tracking_link_id") == link ? "stayed (CLIENT TRACKING was asked again)" : "was replaced");
    ok(!refused, "%s: INFO never said hotproxy_l1_tracking:refused", label);
    ok(fresh > 0, "%s: the new data connection(s) have tracking on after %.2f s", label, hx_now() - t0);
    cmd(dr, "SET %s old", key);
    ok(ensure_hit(pc, key), "%s: GET %s is answered from the L1", label, key);
    cmd(dr, "SET %s new", key);
    const char *t = "?";
    t0 = hx_now();
    while (hx_now() - t0 < 20 && strcmp((t = cmd(pc, "GET %s", key)), "new")) hx_sleep_ms(1);
    is_str(t, "new", "%s: a direct write shows through hotproxy (within 20 s, l1-ttl 60 s)", label);
}

/* ---- 3. a script writing a key it did not declare ------------------------- */

static void undeclared(int port, redisContext *pc, const char *label, int tracking)
{
    char key[64], script[300];
    snprintf(key, sizeof(key), "sc:%d", tracking);
    redisContext *a = hx_redis(port);
    int pipelined_ok = 1, other_ok = 1;
    for (int i = 1; i <= 5; i++) {
        char old[16], neu[16];
        snprintf(old, sizeof(old), "v%d", 2 * i);
        snprintf(neu, sizeof(neu), "v%d", 2 * i + 1);
        cmd(dr, "SET %s %s", key, old);
        if (!ensure_hit(pc, key)) diag("%s: round %d: GET was not answered from the L1", label, i);
        /* EVAL and GET in one write on one connection */
        snprintf(script, sizeof(script), "redis.call('set','%s','%s') return 1", key, neu);
        redisAppendCommand(pc, "EVAL %s 0", script);
        redisAppendCommand(pc, "GET %s", key);
        const char *e = next_reply(pc), *g = next_reply(pc);
        if (strcmp(e, "1") || strcmp(g, neu)) {
            diag("%s: round %d: EVAL -> %s, pipelined GET -> %s (want %s)", label, i, e, g, neu);
            pipelined_ok = 0;
        }
        /* EVAL on one connection, then GET on another */
        snprintf(old, sizeof(old), "w%d", 2 * i);
        snprintf(neu, sizeof(neu), "w%d", 2 * i + 1);
        cmd(dr, "SET %s %s", key, old);
        ensure_hit(pc, key);
        snprintf(script, sizeof(script), "redis.call('set','%s','%s') return 1", key, neu);
        e = cmd(a, "EVAL %s 0", script);
        g = cmd(pc, "GET %s", key);
        if (strcmp(e, "1") || strcmp(g, neu)) {
            diag("%s: round %d: EVAL -> %s, then GET on another connection -> %s (want %s)", label, i, e, g, neu);
            other_ok = 0;
        }
    }
    ok(pipelined_ok, "%s: EVAL writing an undeclared key, GET pipelined behind it: the new value (5 rounds)", label);
    ok(other_ok, "%s: EVAL writing an undeclared key, then GET on another connection: the new value (5 rounds)",
       label);

    /* a function (FCALL) writing a key passed as an argument, not a key */
    cmd(dr, "SET %s f0", key);
    ensure_hit(pc, key);
    redisAppendCommand(pc, "FCALL hpw 0 %s f1", key);
    redisAppendCommand(pc, "GET %s", key);
    next_reply(pc);
    is_str(next_reply(pc), "f1", "%s: FCALL writing an undeclared key, GET pipelined behind it: the new value", label);

    /* the same inside MULTI, GET pipelined behind EXEC */
    cmd(dr, "SET %s m0", key);
    ensure_hit(pc, key);
    snprintf(script, sizeof(script), "redis.call('set','%s','m1') return 1", key);
    redisAppendCommand(a, "MULTI");
    redisAppendCommand(a, "EVAL %s 0", script);
    redisAppendCommand(a, "EXEC");
    redisAppendCommand(a, "GET %s", key);
    next_reply(a);
    next_reply(a);
    next_reply(a);
    is_str(next_reply(a), "m1", "%s: MULTI / EVAL (undeclared key) / EXEC / GET pipelined: the new value", label);
    is_str(cmd(pc, "GET %s", key), "m1", "%s: then GET on another connection: the new value", label);

    /* a read-only script neither waits nor flushes */
    cmd(dr, "SET %s r0", key);
    ok(ensure_hit(pc, key), "%s: GET is answered from the L1", label);
    long long fl = l1n(pc, "hotproxy_l1_flushes"), bar = l1n(pc, "hotproxy_l1_barriers");
    snprintf(script, sizeof(script), "return redis.call('get','%s')", key);
    is_str(cmd(a, "EVAL_RO %s 0", script), "r0", "%s: EVAL_RO reads the key", label);
    ok(ensure_hit(pc, key), "%s: after EVAL_RO the entry is still answered from the L1", label);
    ok(l1n(pc, "hotproxy_l1_flushes") == fl && l1n(pc, "hotproxy_l1_barriers") == bar,
       "%s: EVAL_RO flushed nothing and waited on no barrier", label);
    if (tracking) {
        long long b0 = l1n(pc, "hotproxy_l1_barriers");
        cmd(a, "EVAL %s 0", "return 1");
        ok(l1n(pc, "hotproxy_l1_barriers") == b0 + 1, "%s: an EVAL waits on one barrier (hotproxy_l1_barriers)", label);
    }
    redisFree(a);
}

int main(void)
{
    hx_init(240);
    if (hx_redis_start(&redis, 0) != 0) skip_all("redis-server does not start");
    dr = hx_redis(redis.port);
    cmd(dr, "FUNCTION LOAD REPLACE %s",
        "#!lua name=hptrack\nredis.register_function('hpw', function(keys, args) return "
        "redis.call('set', args[1], args[2]) end)");

    hx_proc p, pnt;
    const char *xlong[] = {"--l1-ttl", "60000", "--l1-negative-ttl", "60000", NULL};
    const char *xnt[] = {"--l1-ttl", "60000", "--l1-tracking", "no", NULL};
    if (start_proxy(&p, xlong) != 0 || start_proxy(&pnt, xnt) != 0) {
        ok(0, "hotproxy starts");
        done_testing();
        return exit_status();
    }
    redisContext *pc = tracked_ctx(&p, "tracking");
    redisContext *cnt = hx_redis(pnt.port);

    undeclared(p.port, pc, "regression, a script's undeclared write read old: tracking", 1);
    undeclared(pnt.port, cnt, "regression, a script's undeclared write read old: ttl-only", 0);

    conn_lost(pc, p.port, KILL, "regression, a killed data connection kept its entries: kill");
    conn_lost(pc, p.port, OUTPUT_LIMIT, "regression, a data connection over its output limit: output-limit");
    conn_lost(pc, p.port, IDLE_TIMEOUT, "regression, a data connection closed as idle: timeout");

    /* its own hotproxy: a failure here must not leave the next one refused */
    hx_proc p2;
    if (start_proxy(&p2, xlong) == 0) {
        redisContext *pc2 = tracked_ctx(&p2, "busy-data");
        busy_data(pc2, "regression, -BUSY to CLIENT TRACKING turned tracking off for good: busy-data");
        redisFree(pc2);
        is_int(hx_stop(&p2, 15000), 0, "busy-data: hotproxy exits 0 on SIGTERM");
    } else {
        ok(0, "busy-data: hotproxy starts");
    }
    busy_link(pc, "regression, -BUSY on the link turned tracking off for good: busy-link");


    redisFree(pc);
    redisFree(cnt);
    is_int(hx_stop(&p, 15000), 0, "hotproxy exits 0 on SIGTERM");
    is_int(hx_stop(&pnt, 15000), 0, "hotproxy (l1-tracking no) exits 0 on SIGTERM");
    redisFree(dr);
    hx_stop(&redis, 5000);
    done_testing();
    return exit_status();
}
