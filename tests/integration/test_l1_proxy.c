/*
 * test_l1_proxy: the L1 in front of Redis, judged by what clients read and
 * by what reaches Redis (its own INFO commandstats, read directly from
 * redis-server).  (Named _proxy: tests/unit/test_l1.c owns the target test_l1.)
 *
 *  - a write through hotproxy is never followed by an older read, on any
 *    connection, pipelined or not (1,000 rounds, with and without tracking);
 *  - a write made directly to Redis shows through hotproxy within a bound
 *    measured here (diag lines: the staleness figure the README states);
 *  - an entry never outlives its key's PTTL, whatever l1-ttl says;
 *  - FLUSHALL upstream and a lost invalidation link empty the L1, and it
 *    fills again once the link is back;
 *  - 500 clients missing the same key cause one upstream GET (Redis is kept
 *    busy by a 0.5 s Lua loop while their GETs arrive), and waiters that
 *    leave do not hurt the others;
 *  - a scan of cold keys does not evict the hot set from a full 1 MB L1;
 *  - negative entries, hashes, another database, MULTI/EXEC, EVAL, EVALSHA,
 *    FCALL, and a table of write commands (destinations, second keys,
 *    flushes) each checked against what Redis holds;
 *  - l1 no is a pass-through; a Redis that refuses tracking leaves a
 *    TTL-only L1 whose staleness stays within l1-ttl.
 *
 * Proxies with l1-ttl 60000 make staleness visible: on them only an
 * invalidation (local, or Redis' tracking) can make a new value appear
 * within the test's bounds.  Known hotproxy bugs are todo_ok() assertions.
 */
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "tap.h"

static hx_proc redis;
static redisContext *dr; /* direct to redis-server */

/* ---- replies as text ------------------------------------------------------ */

static void flat_into(redisReply *r, hx_buf *b)
{
    switch (r->type) {
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_STRING: hx_buf_append(b, r->str, r->len); break;
    case REDIS_REPLY_ERROR:
        hx_buf_append(b, "(error) ", 8);
        hx_buf_append(b, r->str, r->len);
        break;
    case REDIS_REPLY_INTEGER: hx_buf_printf(b, "%lld", r->integer); break;
    case REDIS_REPLY_NIL: hx_buf_printf(b, "(nil)"); break;
    case REDIS_REPLY_ARRAY:
        hx_buf_append(b, "[", 1);
        for (size_t i = 0; i < r->elements; i++) {
            if (i) hx_buf_append(b, ",", 1);
            flat_into(r->element[i], b);
        }
        hx_buf_append(b, "]", 1);
        break;
    default: hx_buf_printf(b, "(type %d)", r->type); break;
    }
}

/* The reply flattened ("[a,b]", "(nil)", "(error) ..."); 8 rotating buffers. */
static const char *text_of(redisReply *r, const char *errstr)
{
    static char bufs[8][4096];
    static int next;
    char *out = bufs[next++ % 8];
    if (!r) {
        snprintf(out, 4096, "(no reply: %s)", errstr ? errstr : "?");
        return out;
    }
    hx_buf b = {0};
    flat_into(r, &b);
    snprintf(out, 4096, "%.*s", (int)(b.len < 4000 ? b.len : 4000), b.data ? b.data : "");
    hx_buf_free(&b);
    return out;
}

/* hiredis format: literal words are arguments, each %s one argument. */
static const char *vcmd(redisContext *c, const char *fmt, va_list ap)
{
    if (!c) return "(no reply: no connection)";
    redisReply *r = redisvCommand(c, fmt, ap);
    const char *t = text_of(r, c->errstr);
    if (r) freeReplyObject(r);
    return t;
}

static const char *cmd(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    const char *t = vcmd(c, fmt, ap);
    va_end(ap);
    return t;
}

/* ---- counters ------------------------------------------------------------- */

static long long stat_calls(const char *name) { return hx_cmdstat_calls(dr, name); }

/* A field of hotproxy's INFO hotproxy_cache (answered by hotproxy itself). */
static const char *l1s(redisContext *pc, const char *field) { return hx_info_get(pc, "hotproxy_cache", field); }

static long long l1n(redisContext *pc, const char *field) { return hx_info_num(pc, "hotproxy_cache", field); }

/* ok(), or todo_ok() when todo names the known bug the assertion catches. */
static int check(int cond, const char *todo, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int check(int cond, const char *todo, const char *fmt, ...)
{
    char desc[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(desc, sizeof(desc), fmt, ap);
    va_end(ap);
    if (todo) return todo_ok(cond, todo, "%s", desc);
    return ok(cond, "%s", desc);
}

/* Poll until the field reads want; 0 when it did within timeout_ms. */
static int wait_l1(redisContext *pc, const char *field, const char *want, int timeout_ms)
{
    return hx_info_wait(pc, "hotproxy_cache", field, want, timeout_ms);
}

/*
 * Run a read through hotproxy until one run does not reach Redis (statname's
 * calls unchanged): returns how many runs that took, -1 if 12 did not do it.
 * The last reply's text goes to *last when last is not NULL.
 */
static const char *line(redisContext *c, const char *l);

static int cached(redisContext *pc, const char *statname, const char **last, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The longest single read cached() has waited for since it was last reset:
 * a bound on the round trip of the fill that read made. */
static double slowest_read;

static int cached(redisContext *pc, const char *statname, const char **last, const char *fmt, ...)
{
    char l[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(l, sizeof(l), fmt, ap); /* words split at spaces: keys here have none */
    va_end(ap);
    for (int i = 1; i <= 12; i++) {
        long long before = stat_calls(statname);
        double t0 = hx_now();
        const char *t = line(pc, l);
        if (hx_now() - t0 > slowest_read) slowest_read = hx_now() - t0;
        if (last) *last = t;
        if (stat_calls(statname) == before) return i;
    }
    return -1;
}

/* Poll a read through hotproxy until it says want; seconds it took, or -1. */
static double poll_until(redisContext *pc, const char *want, double limit_s, const char *fmt, ...)
{
    double t0 = hx_now();
    do {
        va_list ap;
        va_start(ap, fmt);
        const char *t = vcmd(pc, fmt, ap);
        va_end(ap);
        if (!strcmp(t, want)) return hx_now() - t0;
    } while (hx_now() - t0 < limit_s);
    return -1;
}

static int start_proxy(hx_proc *p, const char *what, int upstream, const char *const *extra)
{
    if (hx_proxy_startv(p, 0, upstream, extra) != 0) {
        diag("could not start hotproxy (%s)", what);
        return -1;
    }
    return 0;
}

/* hotproxy with tracking: wait for the link (bounded). */
static redisContext *tracked_ctx(hx_proc *p, const char *what)
{
    redisContext *pc = hx_redis(p->port);
    int up = wait_l1(pc, "hotproxy_l1_tracking", "up", 10000);
    if (up) diag("%s: hotproxy_l1_tracking is %s", what, l1s(pc, "hotproxy_l1_tracking"));
    ok(up == 0, "%s: INFO says hotproxy_l1_tracking:up", what);
    return pc;
}

/* ---- raw pipelined reads -------------------------------------------------- */

/* The next reply at *pos in b: '$' bulk text (or "(nil)"), or the line of a
 * status/error/integer.  Returns the type byte, 0 when none is complete. */
static int next_reply(const hx_buf *b, size_t *pos, char *out, size_t outsz)
{
    long n = hx_reply_len(b->data + *pos, b->len - *pos);
    if (n <= 0) return 0;
    const char *p = b->data + *pos;
    int type = p[0];
    const char *nl = memchr(p, '\n', (size_t)n);
    if (type == '$') {
        long bl = atol(p + 1);
        if (bl < 0) snprintf(out, outsz, "(nil)");
        else snprintf(out, outsz, "%.*s", (int)(bl < (long)outsz - 1 ? bl : (long)outsz - 1), nl + 1);
    } else {
        snprintf(out, outsz, "%.*s", (int)(nl - p - 2), p + 1);
    }
    *pos += (size_t)n;
    return type;
}

static void add_cmd2(hx_buf *b, const char *a, const char *k)
{
    const char *argv[] = {a, k};
    hx_buf_command(b, 2, argv, NULL);
}

static void add_cmd3(hx_buf *b, const char *a, const char *k, const char *v)
{
    const char *argv[] = {a, k, v};
    hx_buf_command(b, 3, argv, NULL);
}

/* ---- 1. writes through hotproxy ------------------------------------------- */

/*
 * Connection A pipelines 10 SETs (v1..v10, then v11..v20, ...) and a GET;
 * connection B pipelines 10 GETs while A's writes are in flight, then 10
 * more once A's acks are in.  B's reads never go backwards, never show a
 * value older than the last acked write, and after the acks show exactly
 * the last one; A reads its own last write.
 */
static void writes_through_proxy(int port, const char *label)
{
    redisContext *pc = hx_redis(port);
    char key[64], want[32];
    snprintf(key, sizeof(key), "wt:%s", label);
    cmd(pc, "SET %s v0", key);
    const char *last = NULL;
    int tries = cached(pc, "get", &last, "GET %s", key);
    ok(tries > 0 && !strcmp(last, "v0"), "%s: GET is served from the L1 after %d reads (got %s)", label, tries,
       last ? last : "-");
    long long h0 = l1n(pc, "hotproxy_l1_hits"), s0 = stat_calls("get");
    int right = 0;
    for (int i = 0; i < 100; i++) right += !strcmp(cmd(pc, "GET %s", key), "v0");
    long long dh = l1n(pc, "hotproxy_l1_hits") - h0, ds = stat_calls("get") - s0;
    is_int(ds, 0, "%s: 100 more GETs of the cached key do not reach Redis", label);
    is_int(dh, 100, "%s: ... and INFO counts 100 hits", label);
    is_int(right, 100, "%s: ... and they all return the value", label);

    int fa = hx_connect(port), fb = hx_connect(port);
    long long hits0 = l1n(pc, "hotproxy_l1_hits"), coal0 = l1n(pc, "hotproxy_l1_coalesced");
    int bad = 0, io = 0;
    long prev = 0;
    hx_buf ra = {0}, rb1 = {0}, oa = {0}, ob = {0};
    for (int i = 0; i < 10; i++) add_cmd2(&rb1, "GET", key);
    for (int batch = 0; batch < 100 && !io; batch++) {
        int base = batch * 10 + 1, top = base + 9;
        hx_buf_reset(&ra);
        for (int j = base; j <= top; j++) {
            char v[32];
            snprintf(v, sizeof(v), "v%d", j);
            add_cmd3(&ra, "SET", key, v);
        }
        add_cmd2(&ra, "GET", key);
        hx_buf_reset(&oa);
        hx_buf_reset(&ob);
        long got = 0, gotb = 0;
        if (hx_send(fa, ra.data, ra.len, 5000) || hx_send(fb, rb1.data, rb1.len, 5000) ||
            hx_read_replies(fa, &oa, 11, &got, 10000) != HX_OK || got != 11 ||
            hx_send(fb, rb1.data, rb1.len, 5000) || hx_read_replies(fb, &ob, 20, &gotb, 10000) != HX_OK ||
            gotb != 20) {
            diag("%s: batch %d: i/o failed (A %ld replies, B %ld)", label, batch, got, gotb);
            io = 1;
            break;
        }
        size_t pa = 0, pb = 0;
        char r[64];
        for (int j = 0; j < 10; j++)
            if (next_reply(&oa, &pa, r, sizeof(r)) != '+' || strcmp(r, "OK")) {
                if (bad++ < 5) diag("%s: SET v%d answered '%s'", label, base + j, r);
            }
        snprintf(want, sizeof(want), "v%d", top);
        next_reply(&oa, &pa, r, sizeof(r));
        if (strcmp(r, want) && bad++ < 5) diag("%s: A wrote %s and read back %s", label, want, r);
        /* B's first 10: sent while A's writes were in flight */
        long floor = base - 1;
        if (prev > floor) floor = prev;
        for (int j = 0; j < 10; j++) {
            next_reply(&ob, &pb, r, sizeof(r));
            long v = r[0] == 'v' ? atol(r + 1) : -1;
            if (v < floor || v > top) {
                if (bad++ < 5)
                    diag("%s: B read %s during writes v%d..v%d (last acked v%d, B had read v%ld)", label, r, base,
                         top, base - 1, prev);
            } else {
                floor = prev = v;
            }
        }
        /* B's second 10: sent after every write was acked */
        for (int j = 0; j < 10; j++) {
            next_reply(&ob, &pb, r, sizeof(r));
            if (strcmp(r, want)) {
                if (bad++ < 5) diag("%s: B read %s after %s was acknowledged", label, r, want);
            } else {
                prev = top;
            }
        }
    }
    ok(!io && bad == 0, "%s: 1,000 SETs pipelined on A, GETs pipelined on B: no read older than an acked write, "
                        "none going backwards (%d wrong)", label, bad);
    long long hits = l1n(pc, "hotproxy_l1_hits") - hits0, coal = l1n(pc, "hotproxy_l1_coalesced") - coal0;
    diag("%s: during the 2,000 GETs of B: %lld L1 hits, %lld coalesced into fills", label, hits, coal);
    ok(hits + coal > 0, "%s: ... and the L1 served some of them (hits or coalesced)", label);
    close(fa);
    close(fb);
    hx_buf_free(&ra);
    hx_buf_free(&rb1);
    hx_buf_free(&oa);
    hx_buf_free(&ob);
    redisFree(pc);
}

/* ---- 2. writes made directly to Redis ------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Returns 1 if the next GET was an L1 hit (the entry is there), after at most 10 reads. */
static int ensure_hit(redisContext *pc, const char *key) { return hx_l1_hit(pc, key, 10); }

/*
 * Staleness of a direct write: n rounds of "the key is cached; SET it
 * directly; poll GET through hotproxy until the new value shows".  Returns
 * the max delay in seconds (-1 if a value never showed within limit_s).
 */
static double direct_staleness(redisContext *pc, const char *label, const char *key, int n, double limit_s,
                               int *was_cached, int *stale_rounds, double *p99)
{
    double *d = calloc((size_t)n, sizeof(double));
    int never = 0;
    *was_cached = *stale_rounds = 0;
    for (int i = 0; i < n; i++) {
        *was_cached += ensure_hit(pc, key);
        char v[32];
        snprintf(v, sizeof(v), "s%d", i);
        cmd(dr, "SET %s %s", key, v);
        double t0 = hx_now();
        int stale = 0;
        const char *t;
        while (strcmp((t = cmd(pc, "GET %s", key)), v)) {
            stale++;
            if (hx_now() - t0 > limit_s) break;
        }
        d[i] = hx_now() - t0;
        if (strcmp(t, v)) {
            never++;
            diag("%s: %s never showed within %.1f s (still %s)", label, v, limit_s, t);
            break;
        }
        *stale_rounds += stale > 0;
    }
    qsort(d, (size_t)n, sizeof(double), cmp_double);
    double max = never ? -1 : d[n - 1];
    *p99 = d[(n * 99) / 100 - (n >= 100 ? 1 : 0)];
    free(d);
    return max;
}

/* ---- 3. PTTL caps the entry ----------------------------------------------- */

/* SET key (prefix:label) to val with PX px straight into Redis, then read it
 * through pc until it is an L1 hit; when the SET was made. */
static double hot_expiring(redisContext *pc, char *key, size_t n, const char *prefix, const char *label, int px,
                           const char *val)
{
    snprintf(key, n, "%s:%s", prefix, label);
    cmd(dr, "SET %s %s PX %d", key, val, px);
    double t0 = hx_now();
    const char *last = NULL;
    slowest_read = 0;
    int tries = cached(pc, "get", &last, "GET %s", key);
    ok(tries > 0 && !strcmp(last, val), "%s: a key with PX %d is served from the L1 (%d reads, %.0f ms)", label, px,
       tries, (hx_now() - t0) * 1000);
    return t0;
}

static void pttl_cap(redisContext *pc, const char *label)
{
    char key[64];
    double t0 = hot_expiring(pc, key, sizeof(key), "px", label, 200, "short");
    double took = hx_now() - t0;
    if (took > 0.18) diag("%s: making it hot took %.0f ms: the check below proves less", label, took * 1000);
    while (hx_now() - t0 < 0.3) hx_sleep_ms(5);
    long long s = stat_calls("get");
    is_str(cmd(pc, "GET %s", key), "(nil)", "%s: 300 ms later it is gone through hotproxy (l1-ttl 60000)", label);
    diag("%s: that GET %s Redis", label, stat_calls("get") > s ? "reached" : "did not reach");
}

/*
 * A key that expires in Redis: its entry ends with it, and the null it then
 * reads as is kept ready, so the expiry sends nothing to Redis.  The entry's
 * life counts from when its fill was sent (so its value is never served
 * after the key expired), and Redis ran the fill's PTTL somewhere within the
 * fill's round trip, in whole milliseconds: so the first nil comes at most
 * that round trip plus 1 ms before Redis deletes the key (README, "Keys that
 * expire in Redis").  The fill was one of the reads that made the key hot,
 * so the slowest of them bounds its round trip.
 */
static void expiry_then(redisContext *pc, const char *label, int tracking)
{
    char key[64];
    double t0 = hot_expiring(pc, key, sizeof(key), "exp", label, 400, "v");
    long long s0 = stat_calls("get");
    long long pttl_at_nil = -100;
    int reads = 0;
    while (hx_now() - t0 < 0.6) {
        const char *t = cmd(pc, "GET %s", key);
        reads++;
        if (!strcmp(t, "(nil)")) {
            pttl_at_nil = atoll(cmd(dr, "PTTL %s", key));
            break;
        }
    }
    long long early_ms = 1 + (long long)(slowest_read * 1000.0 + 0.999);
    ok(pttl_at_nil == -2 || (pttl_at_nil >= 0 && pttl_at_nil <= early_ms),
       "%s: the first nil through hotproxy came when Redis' PTTL was at most the fill's round trip + 1 ms, "
       "%lld ms, or -2 (%lld, after %d reads)",
       label, early_ms, pttl_at_nil, reads);
    double te = hx_now();
    while (hx_now() - te < 0.1) {
        is_str(cmd(pc, "GET %s", key), "(nil)", "%s: nil after the expiry", label);
        hx_sleep_ms(10);
    }
    /* With tracking, Redis' own deletion of the expired key sends an
     * invalidation; the one fill that follows reads nil and puts the key
     * back under tracking, so that a later SET is seen. */
    long long gets = stat_calls("get") - s0;
    if (tracking)
        ok(gets <= 1, "%s: %d reads before and 100 ms after the expiry sent at most 1 GET to Redis (%lld)", label,
           reads, gets);
    else
        is_int(gets, 0, "%s: %d reads before and 100 ms after the expiry sent no GET to Redis", label, reads);
    if (tracking) {
        cmd(dr, "SET %s again PX 400", key);
        double d = poll_until(pc, "again", 1.0, "GET %s", key);
        ok(d >= 0 && d < 0.1, "%s: SET again straight into Redis: visible through hotproxy (%.2f ms)", label,
           d * 1000);
    }
}

/* ---- 6. 500 clients, one fill --------------------------------------------- */

#define NCO 500

static void coalescing(void)
{
    hx_proc p;
    const char *extra[] = {"--l1-hot-threshold", "0", NULL};
    if (start_proxy(&p, "coalescing", redis.port, extra)) {
        ok(0, "coalescing: hotproxy starts");
        return;
    }
    redisContext *pc = tracked_ctx(&p, "coalescing");
    static char val[1001];
    memset(val, 'c', 1000);
    memcpy(val, "co-value-", 9);
    cmd(dr, "SET co:samekey %s", val);
    hx_buf want = {0};
    hx_buf_printf(&want, "$1000\r\n%s\r\n", val);

    int fds[NCO], connected = 0;
    hx_buf in[NCO];
    memset(in, 0, sizeof(in));
    for (int i = 0; i < NCO; i++) {
        fds[i] = hx_connect(p.port);
        if (fds[i] < 0) continue;
        if (hx_send_str(fds[i], "PING\r\n") == 0 && hx_read_n(fds[i], &in[i], 7, 5000) == HX_OK &&
            !memcmp(in[i].data, "+PONG\r\n", 7))
            connected++;
        hx_buf_reset(&in[i]);
    }
    is_int(connected, NCO, "coalescing: %d clients connected and answered PING", NCO);

    long long f0 = l1n(pc, "hotproxy_l1_fills"), c0 = l1n(pc, "hotproxy_l1_coalesced");
    cmd(dr, "CONFIG RESETSTAT");
    /* Redis busy for 0.5 s: the fill waits while every GET arrives */
    int busy = hx_connect(redis.port);
    static const char script[] = "local t=redis.call('TIME') local s=t[1]*1000000+t[2] "
                                 "repeat local n=redis.call('TIME') until (n[1]*1000000+n[2])-s >= 500000 return 1";
    hx_buf req = {0};
    const char *ev[] = {"EVAL", script, "0"};
    hx_buf_command(&req, 3, ev, NULL);
    hx_send(busy, req.data, req.len, 5000);
    double tb = hx_now();
    hx_sleep_ms(50);
    hx_buf get = {0};
    add_cmd2(&get, "GET", "co:samekey");
    int sent = 0;
    for (int i = 0; i < NCO; i++)
        if (fds[i] >= 0 && send(fds[i], get.data, get.len, MSG_NOSIGNAL) == (ssize_t)get.len) sent++;
    hx_buf_free(&get);
    double window = hx_now() - tb;
    diag("coalescing: %d GETs written %.0f ms after Redis went busy (busy for 500 ms)", sent, window * 1000);

    /* read every reply */
    int done = 0, right = 0;
    char doneflag[NCO];
    memset(doneflag, 0, sizeof(doneflag));
    double deadline = hx_now() + 15;
    struct pollfd pfd[NCO];
    int idx[NCO];
    while (done < sent && hx_now() < deadline) {
        int np = 0;
        for (int i = 0; i < NCO; i++)
            if (fds[i] >= 0 && !doneflag[i]) {
                pfd[np].fd = fds[i];
                pfd[np].events = POLLIN;
                pfd[np].revents = 0;
                idx[np++] = i;
            }
        if (poll(pfd, (nfds_t)np, 200) <= 0) continue;
        for (int k = 0; k < np; k++) {
            if (!pfd[k].revents) continue;
            int i = idx[k];
            int st = hx_read_n(fds[i], &in[i], 1 << 20, 0);
            if (in[i].len >= want.len || (st != HX_OK && st != HX_TIMEOUT)) {
                doneflag[i] = 1;
                done++;
                right += in[i].len == want.len && !memcmp(in[i].data, want.data, want.len);
            }
        }
    }
    hx_buf ob = {0};
    hx_read_replies(busy, &ob, 1, NULL, 5000);
    is_int(right, NCO, "coalescing: all %d clients got the value", NCO);
    long long calls = stat_calls("get");
    long long fills = l1n(pc, "hotproxy_l1_fills") - f0, coal = l1n(pc, "hotproxy_l1_coalesced") - c0;
    diag("coalescing: upstream GETs %lld, fills %lld, coalesced %lld", calls, fills, coal);
    is_int(calls, 1, "coalescing: %d clients missing the same key at once cause exactly one upstream GET", NCO);
    is_int(fills, 1, "coalescing: ... INFO counts one fill");
    is_int(coal, NCO - 1, "coalescing: ... and %d coalesced", NCO - 1);
    long long s = stat_calls("get");
    cmd(pc, "GET co:samekey");
    is_int(stat_calls("get") - s, 0, "coalescing: with l1-hot-threshold 0 the fill was stored: the next GET is a hit");

    /* waiters that leave: half the clients close before the fill answers */
    cmd(dr, "SET co:leave %s", val);
    hx_buf_reset(&want);
    hx_buf_printf(&want, "$1000\r\n%s\r\n", val);
    hx_buf gl = {0};
    add_cmd2(&gl, "GET", "co:leave");
    hx_buf_reset(&ob);
    hx_send(busy, req.data, req.len, 5000);
    hx_sleep_ms(50);
    for (int i = 0; i < NCO; i++)
        if (fds[i] >= 0) hx_send(fds[i], gl.data, gl.len, 5000);
    for (int i = 0; i < NCO; i += 2)
        if (fds[i] >= 0) {
            close(fds[i]);
            fds[i] = -1;
        }
    int stayed = 0;
    for (int i = 1; i < NCO; i += 2) {
        hx_buf_reset(&in[i]);
        if (fds[i] >= 0 && hx_read_n(fds[i], &in[i], want.len, 10000) == HX_OK &&
            !memcmp(in[i].data, want.data, want.len))
            stayed++;
    }
    hx_read_replies(busy, &ob, 1, NULL, 5000);
    is_int(stayed, NCO / 2, "coalescing: when half the waiters close before the fill answers, the other half get "
                            "the value");
    is_str(cmd(pc, "PING"), "PONG", "coalescing: ... and hotproxy carries on");
    hx_buf_free(&gl);

    for (int i = 0; i < NCO; i++) {
        if (fds[i] >= 0) close(fds[i]);
        hx_buf_free(&in[i]);
    }
    close(busy);
    hx_buf_free(&req);
    hx_buf_free(&ob);
    hx_buf_free(&want);
    redisFree(pc);
    is_int(hx_stop(&p, 15000), 0, "coalescing: hotproxy exits 0 on SIGTERM");
}

/* ---- 7. scan resistance --------------------------------------------------- */

#define NHOT 200
#define NCOLD 50000

/* Hot values are 100 bytes, cold ones 1,000: the cold keys the sketch lets in
 * by collision (a few percent) are enough to fill 1 MB and force evictions. */
#define VALMAX 1100
static void value_of(char *v, size_t n, const char *kind, int i)
{
    int len = kind[0] == 'h' ? 100 : 1000;
    int w = snprintf(v, n, "%s-%06d-", kind, i);
    for (; w < len && (size_t)w + 1 < n; w++) v[w] = (char)('a' + (i + w) % 26);
    v[w] = '\0';
}

/* GET hot:0..NHOT-1 through fd, pipelined; returns how many answered right. */
static int read_hot(int fd)
{
    hx_buf req = {0}, out = {0};
    char k[32], v[VALMAX], r[VALMAX];
    for (int i = 0; i < NHOT; i++) {
        snprintf(k, sizeof(k), "hot:%d", i);
        add_cmd2(&req, "GET", k);
    }
    long got = 0;
    int right = 0;
    if (hx_exchange(fd, req.data, req.len, NHOT, &out, &got, 10000) == HX_OK && got == NHOT) {
        size_t pos = 0;
        for (int i = 0; i < NHOT; i++) {
            next_reply(&out, &pos, r, sizeof(r));
            value_of(v, sizeof(v), "hot", i);
            right += !strcmp(r, v);
        }
    }
    hx_buf_free(&req);
    hx_buf_free(&out);
    return right;
}

static void scan_resistance(void)
{
    hx_proc p;
    const char *extra[] = {"--l1-maxmemory", "1mb", "--l1-ttl", "60000", NULL};
    if (start_proxy(&p, "scan", redis.port, extra)) {
        ok(0, "scan: hotproxy starts");
        return;
    }
    redisContext *pc = tracked_ctx(&p, "scan");
    /* the data, loaded directly */
    int rfd = hx_connect(redis.port);
    hx_buf req = {0}, out = {0};
    char k[32], v[VALMAX];
    long nreq = 0, got = 0;
    for (int i = 0; i < NHOT + NCOLD; i++) {
        int hot = i < NHOT;
        snprintf(k, sizeof(k), "%s:%d", hot ? "hot" : "cold", hot ? i : i - NHOT);
        value_of(v, sizeof(v), hot ? "hot" : "cold", hot ? i : i - NHOT);
        add_cmd3(&req, "SET", k, v);
        nreq++;
    }
    int st = hx_exchange(rfd, req.data, req.len, nreq, &out, &got, 30000);
    ok(st == HX_OK && got == nreq, "scan: %d hot and %d cold keys set directly", NHOT, NCOLD);
    close(rfd);

    int fd = hx_connect(p.port);
    int right = 0;
    for (int round = 0; round < 5; round++) right += read_hot(fd);
    is_int(right, 5 * NHOT, "scan: %d hot keys read 5 times each through hotproxy", NHOT);
    long long s0 = stat_calls("get"), h0 = l1n(pc, "hotproxy_l1_hits");
    right = read_hot(fd);
    long long ds = stat_calls("get") - s0, dh = l1n(pc, "hotproxy_l1_hits") - h0;
    is_int(right, NHOT, "scan: they read right");
    is_int(ds, 0, "scan: before the scan, reading the %d hot keys once more does not reach Redis", NHOT);
    is_int(dh, NHOT, "scan: ... INFO counts %d hits", NHOT);
    diag("scan: L1 before the scan: %lld entries, %lld bytes", l1n(pc, "hotproxy_l1_entries"),
         l1n(pc, "hotproxy_l1_bytes"));

    /* the scan: every cold key once, pipelined 1,000 at a time */
    int coldright = 0;
    double t0 = hx_now();
    for (int b = 0; b < NCOLD / 1000; b++) {
        hx_buf_reset(&req);
        hx_buf_reset(&out);
        for (int i = b * 1000; i < (b + 1) * 1000; i++) {
            snprintf(k, sizeof(k), "cold:%d", i);
            add_cmd2(&req, "GET", k);
        }
        got = 0;
        if (hx_exchange(fd, req.data, req.len, 1000, &out, &got, 20000) != HX_OK || got != 1000) break;
        size_t pos = 0;
        char r[VALMAX];
        for (int i = b * 1000; i < (b + 1) * 1000; i++) {
            next_reply(&out, &pos, r, sizeof(r));
            value_of(v, sizeof(v), "cold", i);
            coldright += !strcmp(r, v);
        }
    }
    is_int(coldright, NCOLD, "scan: %d cold keys read once each through hotproxy (%.2f s)", NCOLD, hx_now() - t0);
    long long bytes = l1n(pc, "hotproxy_l1_bytes"), evictions = l1n(pc, "hotproxy_l1_evictions");
    diag("scan: L1 after the scan: %lld entries, %lld bytes, %lld evictions, %lld admissions rejected, %lld stores",
         l1n(pc, "hotproxy_l1_entries"), bytes, evictions, l1n(pc, "hotproxy_l1_admissions_rejected"),
         l1n(pc, "hotproxy_l1_stores"));
    ok(bytes > 1024 * 1024 * 9 / 10 || evictions > 0,
       "scan: the cold keys let in filled the 1 MB L1 (%lld bytes, %lld evictions): the hot set was under pressure",
       bytes, evictions);

    s0 = stat_calls("get");
    h0 = l1n(pc, "hotproxy_l1_hits");
    right = read_hot(fd);
    ds = stat_calls("get") - s0;
    dh = l1n(pc, "hotproxy_l1_hits") - h0;
    is_int(right, NHOT, "scan: the hot keys still read right");
    is_int(ds, 0, "scan: after the scan of %d cold keys, the %d hot keys are still served from the L1 "
                  "(upstream GETs)", NCOLD, NHOT);
    is_int(dh, NHOT, "scan: ... INFO counts %d hits", NHOT);
    close(fd);
    hx_buf_free(&req);
    hx_buf_free(&out);
    redisFree(pc);
    is_int(hx_stop(&p, 15000), 0, "scan: hotproxy exits 0 on SIGTERM");
}

/* ---- 8. negative entries -------------------------------------------------- */

static void negative_ttl(redisContext *pc)
{
    /* find the GET that stored the negative entry: the one before the first hit */
    double tprev = 0;
    int hit = 0;
    const char *t = NULL;
    cmd(dr, "DEL neg:a");
    for (int i = 0; i < 12 && !hit; i++) {
        long long s = stat_calls("get");
        t = cmd(pc, "GET neg:a");
        double ta = hx_now();
        if (stat_calls("get") == s) hit = 1;
        else tprev = ta;
    }
    ok(hit && !strcmp(t, "(nil)"), "negative: GET of a missing key is cached (a later GET does not reach Redis)");
    while (hx_now() - tprev < 0.1) hx_sleep_ms(2);
    long long s = stat_calls("get");
    t = cmd(pc, "GET neg:a");
    double age = hx_now() - tprev;
    if (age < 0.2) is_int(stat_calls("get") - s, 0, "negative: %.0f ms after its fill it is still cached", age * 1000);
    else skip("negative: too slow to check the entry before l1-negative-ttl");
    while (hx_now() - tprev < 0.4) hx_sleep_ms(5);
    s = stat_calls("get");
    t = cmd(pc, "GET neg:a");
    is_int(stat_calls("get") - s, 1, "negative: 400 ms after its fill (l1-negative-ttl 250) the GET reaches Redis");
    is_str(t, "(nil)", "negative: ... and says nil");
}

/* The missing key is cached as nil; a SET through hotproxy shows at once. */
static void negative_then_set(int port, const char *label)
{
    redisContext *pc = hx_redis(port), *w = hx_redis(port);
    char key[64];
    snprintf(key, sizeof(key), "neg:set:%s", label);
    cmd(dr, "DEL %s", key);
    const char *last = NULL;
    int tries = cached(pc, "get", &last, "GET %s", key);
    ok(tries > 0 && !strcmp(last, "(nil)"), "%s: the missing key's nil is cached", label);
    is_str(cmd(w, "SET %s here", key), "OK", "%s: SET through hotproxy on another connection", label);
    is_str(cmd(pc, "GET %s", key), "here", "%s: GET right after returns the new value, not the cached nil", label);
    redisFree(pc);
    redisFree(w);
}

/* ---- 9. hashes ------------------------------------------------------------ */

static void hashes(int port, const char *label, int direct_too)
{
    redisContext *pc = hx_redis(port), *w = hx_redis(port);
    char key[64];
    snprintf(key, sizeof(key), "hh:%s", label);
    cmd(dr, "DEL %s", key);
    cmd(dr, "HSET %s f 1 g 2", key);
    const char *a = NULL, *b = NULL;
    int t1 = cached(pc, "hget", &a, "HGET %s f", key);
    int t2 = cached(pc, "hgetall", &b, "HGETALL %s", key);
    ok(t1 > 0 && !strcmp(a, "1"), "%s: HGET is served from the L1 (got %s)", label, a);
    ok(t2 > 0 && !strcmp(b, "[f,1,g,2]"), "%s: HGETALL is served from the L1 (got %s)", label, b);
    long long s1 = stat_calls("hget"), s2 = stat_calls("hgetall");
    cmd(pc, "HGET %s f", key);
    cmd(pc, "HGETALL %s", key);
    ok(stat_calls("hget") == s1 && stat_calls("hgetall") == s2, "%s: ... neither reaches Redis again", label);
    is_str(cmd(w, "HSET %s f 2", key), "0", "%s: HSET through hotproxy", label);
    is_str(cmd(pc, "HGET %s f", key), "2", "%s: HGET after HSET through hotproxy: new value", label);
    is_str(cmd(pc, "HGETALL %s", key), "[f,2,g,2]", "%s: HGETALL after HSET through hotproxy: new value", label);
    if (direct_too) {
        cached(pc, "hget", NULL, "HGET %s f", key);
        cached(pc, "hgetall", NULL, "HGETALL %s", key);
        cmd(dr, "HSET %s f 3", key);
        double d1 = poll_until(pc, "3", 1.0, "HGET %s f", key);
        double d2 = poll_until(pc, "[f,3,g,2]", 1.0, "HGETALL %s", key);
        ok(d1 >= 0, "%s: HGET sees a direct HSET within 1 s (%.2f ms)", label, d1 * 1000);
        ok(d2 >= 0, "%s: HGETALL sees a direct HSET within 1 s (%.2f ms)", label, d2 * 1000);
    }
    redisFree(pc);
    redisFree(w);
}

/* ---- 11. Redis refusing tracking ------------------------------------------ */

/*
 * A hotproxy whose upstream cannot track (how is the caller's business):
 * what INFO says, whether the L1 still serves hot reads, and whether a direct
 * write shows within l1-ttl (+10% jitter) -- the TTL-only bound.
 */
static void ttl_only(hx_proc *p, const char *label, const char *todo)
{
    redisContext *pc = hx_redis(p->port);
    const char *mode = NULL, *tr = NULL;
    double deadline = hx_now() + 5;
    do {
        mode = l1s(pc, "hotproxy_l1_mode");
        tr = l1s(pc, "hotproxy_l1_tracking");
        if (mode && tr && !strcmp(mode, "ttl-only") && !strcmp(tr, "refused")) break;
        hx_sleep_ms(20);
    } while (hx_now() < deadline);
    diag("%s: after up to 5 s: mode %s, tracking %s, link id %s", label, mode, tr,
         l1s(pc, "hotproxy_l1_tracking_link_id"));
    check(mode && !strcmp(mode, "ttl-only"), todo, "%s: INFO says hotproxy_l1_mode:ttl-only", label);
    check(tr && !strcmp(tr, "refused"), todo, "%s: INFO says hotproxy_l1_tracking:refused", label);
    char key[64];
    snprintf(key, sizeof(key), "to:%s", label);
    cmd(dr, "SET %s t0", key);
    int tries = cached(pc, "get", NULL, "GET %s", key);
    check(tries > 0, todo, "%s: the L1 still serves hot reads (TTL-only)", label);
    double worst = 0;
    int shown = 1, stale = 0;
    for (int i = 1; i <= 3; i++) {
        ensure_hit(pc, key);
        char v[16];
        snprintf(v, sizeof(v), "t%d", i);
        cmd(dr, "SET %s %s", key, v);
        double t0 = hx_now();
        const char *t;
        while (strcmp((t = cmd(pc, "GET %s", key)), v) && hx_now() - t0 < 3) {
            stale = 1;
            hx_sleep_ms(1);
        }
        if (strcmp(t, v)) shown = 0;
        if (hx_now() - t0 > worst) worst = hx_now() - t0;
    }
    diag("%s: a direct write showed after at most %.0f ms (%s)", label, worst * 1000,
         stale ? "reads were stale meanwhile" : "never stale");
    ok(shown && worst < 1.1 + 0.15, "%s: a direct write shows through hotproxy within l1-ttl + jitter (1.1 s)",
       label);
    /* its own writes still invalidate at once */
    redisContext *w = hx_redis(p->port);
    ensure_hit(pc, key);
    cmd(w, "SET %s mine", key);
    is_str(cmd(pc, "GET %s", key), "mine", "%s: a write through hotproxy shows at once", label);
    redisFree(w);
    redisFree(pc);
}

/* ---- 12. transactions and scripts; a table of writes ---------------------- */

static void tx_and_scripts(int port, const char *label)
{
    redisContext *pc = hx_redis(port), *a = hx_redis(port);
    char key[64];
    snprintf(key, sizeof(key), "tx:%s", label);
    cmd(dr, "SET %s v0", key);
    ok(cached(pc, "get", NULL, "GET %s", key) > 0, "%s: GET is cached", label);
    cmd(a, "MULTI");
    cmd(a, "SET %s v1", key);
    is_str(cmd(a, "EXEC"), "[OK]", "%s: MULTI / SET / EXEC through hotproxy", label);
    is_str(cmd(pc, "GET %s", key), "v1", "%s: GET on another connection right after EXEC: the new value", label);

    ok(cached(pc, "get", NULL, "GET %s", key) > 0, "%s: GET is cached again", label);
    is_str(cmd(a, "EVAL %s 1 %s %s", "redis.call('set',KEYS[1],ARGV[1])", key, "v2"), "(nil)",
           "%s: EVAL redis.call('set',KEYS[1],ARGV[1]) 1 key v2 through hotproxy", label);
    is_str(cmd(pc, "GET %s", key), "v2", "%s: GET right after EVAL: the new value", label);

    ok(cached(pc, "get", NULL, "GET %s", key) > 0, "%s: GET is cached again", label);
    const char *sha = cmd(dr, "SCRIPT LOAD %s", "return redis.call('set',KEYS[1],ARGV[1])");
    char shabuf[64];
    snprintf(shabuf, sizeof(shabuf), "%s", sha);
    is_str(cmd(a, "EVALSHA %s 1 %s v3", shabuf, key), "OK", "%s: EVALSHA of a SET script through hotproxy", label);
    is_str(cmd(pc, "GET %s", key), "v3", "%s: GET right after EVALSHA: the new value", label);

    ok(cached(pc, "get", NULL, "GET %s", key) > 0, "%s: GET is cached again", label);
    is_str(cmd(a, "FCALL hpset 1 %s v4", key), "OK", "%s: FCALL of a SET function through hotproxy", label);
    is_str(cmd(pc, "GET %s", key), "v4", "%s: GET right after FCALL: the new value", label);

    /* MULTI with the cached key read inside it and a second key written */
    ok(cached(pc, "get", NULL, "GET %s", key) > 0, "%s: GET is cached again", label);
    cmd(a, "MULTI");
    cmd(a, "GET %s", key);
    cmd(a, "MSET %s:other x %s v5", key, key);
    is_str(cmd(a, "EXEC"), "[v4,OK]", "%s: MULTI / GET / MSET (second key) / EXEC", label);
    is_str(cmd(pc, "GET %s", key), "v5", "%s: GET right after that EXEC: the new value", label);
    redisFree(pc);
    redisFree(a);
}

typedef struct wcase {
    const char *what;
    const char *setup[4]; /* direct; '$' stands for the case's key prefix */
    const char *read, *stat;
    const char *write;    /* through hotproxy, on another connection */
} wcase;

static const wcase wcases[] = {
    {"RENAME (destination)", {"SET $src new", "SET $dst old"}, "GET $dst", "get", "RENAME $src $dst"},
    {"RENAME (source)", {"SET $src new"}, "GET $src", "get", "RENAME $src $dst"},
    {"COPY REPLACE", {"SET $src new", "SET $dst old"}, "GET $dst", "get", "COPY $src $dst REPLACE"},
    {"SORT STORE", {"RPUSH $l 3 1 2", "RPUSH $dst x"}, "LRANGE $dst 0 -1", "lrange", "SORT $l STORE $dst"},
    {"BITOP (destination)", {"SET $a abc", "SET $b def", "SET $dst old"}, "GET $dst", "get", "BITOP OR $dst $a $b"},
    {"ZUNIONSTORE", {"ZADD $z1 1 a", "ZADD $z2 2 b", "ZADD $dst 9 x"}, "ZRANGE $dst 0 -1 WITHSCORES", "zrange",
     "ZUNIONSTORE $dst 2 $z1 $z2"},
    {"ZRANGESTORE", {"ZADD $z 1 a 2 b", "ZADD $dst 5 x"}, "ZRANGE $dst 0 -1", "zrange", "ZRANGESTORE $dst $z 0 -1"},
    {"SINTERSTORE", {"SADD $s1 a b", "SADD $s2 b c", "SADD $dst x"}, "SMEMBERS $dst", "smembers",
     "SINTERSTORE $dst $s1 $s2"},
    {"LMOVE (destination)", {"RPUSH $src a", "RPUSH $dst x"}, "LRANGE $dst 0 -1", "lrange",
     "LMOVE $src $dst LEFT RIGHT"},
    {"BLMOVE (destination)", {"RPUSH $src a", "RPUSH $dst x"}, "LRANGE $dst 0 -1", "lrange",
     "BLMOVE $src $dst LEFT RIGHT 1"},
    {"LMPOP (second key)", {"RPUSH $l2 a b"}, "LLEN $l2", "llen", "LMPOP 2 $l1 $l2 LEFT"},
    {"SMOVE (destination)", {"SADD $src m", "SADD $dst x"}, "SISMEMBER $dst m", "sismember", "SMOVE $src $dst m"},
    {"GEORADIUS STORE", {"GEOADD $g 13.361389 38.115556 p", "ZADD $dst 1 x"}, "ZRANGE $dst 0 -1", "zrange",
     "GEORADIUS $g 15 37 200 km STORE $dst"},
    {"GEOSEARCHSTORE", {"GEOADD $g 13.361389 38.115556 p", "ZADD $dst 1 x"}, "ZRANGE $dst 0 -1", "zrange",
     "GEOSEARCHSTORE $dst $g FROMLONLAT 15 37 BYRADIUS 200 km"},
    {"MSET (second key)", {"SET $a 1", "SET $b 1"}, "GET $b", "get", "MSET $a 2 $b 2"},
    {"DEL (second key)", {"SET $a 1", "SET $b 1"}, "GET $b", "get", "DEL $a $b"},
    {"GETDEL", {"SET $a 1"}, "GET $a", "get", "GETDEL $a"},
    {"SETRANGE", {"SET $a hello"}, "GETRANGE $a 0 -1", "getrange", "SETRANGE $a 0 J"},
    {"APPEND", {"SET $a hello"}, "STRLEN $a", "strlen", "APPEND $a xx"},
    {"SETBIT", {"SET $a a"}, "STRLEN $a", "strlen", "SETBIT $a 100 1"},
    {"INCRBYFLOAT", {"SET $a 1"}, "GET $a", "get", "INCRBYFLOAT $a 1.5"},
    {"HINCRBY", {"HSET $h f 1"}, "HGET $h f", "hget", "HINCRBY $h f 5"},
    {"HDEL", {"HSET $h f 1 g 2"}, "HGETALL $h", "hgetall", "HDEL $h g"},
    {"ZINCRBY", {"ZADD $z 1 m"}, "ZSCORE $z m", "zscore", "ZINCRBY $z 2 m"},
    {"LPUSH", {"RPUSH $l a"}, "LLEN $l", "llen", "LPUSH $l b"},
    {"SPOP", {"SADD $s a"}, "SCARD $s", "scard", "SPOP $s"},
    {"UNLINK", {"SET $a 1"}, "TYPE $a", "type", "UNLINK $a"},
    {"MOVE", {"SET $a 1"}, "GET $a", "get", "MOVE $a 1"},
    {"SWAPDB", {"SELECT 1", "SET $a one", "SELECT 0", "SET $a zero"}, "GET $a", "get", "SWAPDB 0 1"},
    {"FLUSHDB", {"SET $a 1"}, "GET $a", "get", "FLUSHDB"},
    {"EVAL (declared key)", {"SET $a 1"}, "GET $a", "get", "EVAL redis.call('set',KEYS[1],'2') 1 $a"},
    {"EXISTS a, then DEL a", {"SET $a 1"}, "EXISTS $a", "exists", "DEL $a"},
    {"EXISTS a, then SET a", {"DEL $a"}, "EXISTS $a", "exists", "SET $a 1"},
    {"MGET after SET of one key", {"SET $a 1", "SET $b 1"}, "MGET $a $b", "mget", "SET $b 2"},
};

/* Replace every '$' with prefix. */
static void expand(char *out, size_t n, const char *tmpl, const char *prefix)
{
    size_t o = 0;
    for (const char *p = tmpl; *p && o + 1 < n; p++) {
        if (*p == '$') o += (size_t)snprintf(out + o, n - o, "%s", prefix);
        else out[o++] = *p;
        if (o >= n) o = n - 1;
    }
    out[o] = '\0';
}

/* The line's words (split at spaces) as the arguments. */
static const char *line(redisContext *c, const char *l)
{
    char buf[1024];
    const char *argv[64];
    int argc = 0;
    snprintf(buf, sizeof(buf), "%s", l);
    for (char *save = NULL, *w = strtok_r(buf, " ", &save); w && argc < 64; w = strtok_r(NULL, " ", &save))
        argv[argc++] = w;
    if (!c) return "(no reply: no connection)";
    redisReply *r = redisCommandArgv(c, argc, argv, NULL);
    const char *t = text_of(r, c->errstr);
    if (r) freeReplyObject(r);
    return t;
}

static void write_table(int port, const char *label, const char *todo_exists)
{
    redisContext *pc = hx_redis(port), *w = hx_redis(port);
    int n = (int)(sizeof(wcases) / sizeof(wcases[0]));
    for (int i = 0; i < n; i++) {
        const wcase *wc = &wcases[i];
        char prefix[32], l[256], rd[256];
        snprintf(prefix, sizeof(prefix), "wc:%s:%d:", label, i);
        for (int s = 0; s < 4 && wc->setup[s]; s++) {
            expand(l, sizeof(l), wc->setup[s], prefix);
            line(dr, l);
        }
        expand(rd, sizeof(rd), wc->read, prefix);
        const char *before = NULL;
        int tries = cached(pc, wc->stat, &before, "%s", rd);
        char was[512];
        snprintf(was, sizeof(was), "%s", before ? before : "-");
        expand(l, sizeof(l), wc->write, prefix);
        const char *wr = line(w, l);
        char wrs[256];
        snprintf(wrs, sizeof(wrs), "%s", wr);
        char got[512];
        snprintf(got, sizeof(got), "%s", line(pc, rd));
        const char *truth = line(dr, rd);
        (void)todo_exists;
        check(tries > 0 && !strcmp(got, truth), NULL, "%s: %s through hotproxy invalidates '%s'",
              label, wc->what, wc->read);
        if (tries <= 0 || strcmp(got, truth))
            diag("  cached after %d reads: %s; write answered %s; then hotproxy says %s, Redis says %s", tries, was,
                 wrs, got, truth);
    }
    cmd(dr, "FLUSHALL");
    redisFree(pc);
    redisFree(w);
}

/* ---- main ----------------------------------------------------------------- */

int main(void)
{
    hx_init(240);
    if (hx_redis_start(&redis, 0) != 0) {
        skip_all("redis-server does not start");
    }
    dr = hx_redis(redis.port);
    cmd(dr, "FUNCTION LOAD REPLACE %s",
        "#!lua name=hplib\nredis.register_function('hpset', function(keys, args) return "
        "redis.call('set', keys[1], args[1]) end)");

    /* the proxies most sections share */
    hx_proc pdef, plong, pnt;
    const char *xdef[] = {NULL};
    const char *xlong[] = {"--l1-ttl", "60000", "--l1-negative-ttl", "60000", NULL};
    const char *xnt[] = {"--l1-tracking", "no", "--l1-ttl", "60000", NULL};
    if (start_proxy(&pdef, "default", redis.port, xdef) || start_proxy(&plong, "l1-ttl 60000", redis.port, xlong) ||
        start_proxy(&pnt, "l1-tracking no", redis.port, xnt)) {
        ok(0, "hotproxy starts");
        done_testing();
        return exit_status();
    }
    redisContext *cdef = tracked_ctx(&pdef, "default");
    redisContext *clong = tracked_ctx(&plong, "l1-ttl 60000");
    redisContext *cnt = hx_redis(pnt.port);
    is_str(l1s(cnt, "hotproxy_l1_mode"), "ttl-only", "l1-tracking no: INFO says hotproxy_l1_mode:ttl-only");
    is_str(l1s(cnt, "hotproxy_l1_tracking"), "off", "l1-tracking no: INFO says hotproxy_l1_tracking:off");

    /* 1 */
    writes_through_proxy(pdef.port, "default");
    writes_through_proxy(pnt.port, "no-tracking");

    /* 2 */
    {
        int was_cached, stale_rounds;
        double p99;
        double max = direct_staleness(cdef, "direct", "st:k", 200, 3.0, &was_cached, &stale_rounds, &p99);
        diag("direct writes (tracking): over 200 rounds, visible through hotproxy after max %.3f ms, p99 %.3f ms; "
             "%d rounds saw a stale read first",
             max * 1000, p99 * 1000, stale_rounds);
        ok(was_cached >= 190, "direct: the key was an L1 hit before %d of 200 direct writes", was_cached);
        ok(max >= 0 && max < 1.0, "direct: every direct write visible through hotproxy within 1 s (max %.3f ms)",
           max * 1000);
        /* the same with l1-ttl 60000: only tracking can make it show */
        max = direct_staleness(clong, "direct-long", "st:long", 100, 3.0, &was_cached, &stale_rounds, &p99);
        diag("direct writes (tracking, l1-ttl 60000): over 100 rounds max %.3f ms, p99 %.3f ms; %d stale rounds",
             max * 1000, p99 * 1000, stale_rounds);
        ok(was_cached >= 95, "direct-long: the key was an L1 hit before %d of 100 direct writes", was_cached);
        ok(max >= 0 && max < 1.0, "direct-long: with l1-ttl 60000 every direct write is visible within 1 s "
                                  "(max %.3f ms)", max * 1000);
    }

    /* 3 */
    pttl_cap(clong, "pttl-tracking");
    pttl_cap(cnt, "pttl-no-tracking");
    expiry_then(cdef, "expiry-default", 1);
    expiry_then(cnt, "expiry-no-tracking", 0);

    /* 8 */
    negative_ttl(cdef);
    negative_then_set(pdef.port, "negative-default");
    negative_then_set(pnt.port, "negative-no-tracking");
    {
        cmd(dr, "DEL neg:direct");
        const char *last = NULL;
        int tries = cached(clong, "get", &last, "GET neg:direct");
        ok(tries > 0 && !strcmp(last, "(nil)"), "negative-long: nil cached (l1-negative-ttl 60000)");
        cmd(dr, "SET neg:direct there");
        double d = poll_until(clong, "there", 1.0, "GET neg:direct");
        ok(d >= 0, "negative-long: a direct SET of the missing key is visible within 1 s (%.2f ms)", d * 1000);
    }

    /* 9 */
    hashes(plong.port, "hash-tracking", 1);
    hashes(pnt.port, "hash-no-tracking", 0);

    /* another database: cached per db, invalidated through hotproxy and directly */
    {
        redisContext *p1 = hx_redis(plong.port), *w1 = hx_redis(plong.port);
        cmd(p1, "SELECT 1");
        cmd(w1, "SELECT 1");
        cmd(dr, "SELECT 1");
        cmd(dr, "SET db:k one");
        cmd(dr, "SELECT 0");
        cmd(dr, "SET db:k zero");
        const char *last = NULL;
        int tries = cached(p1, "get", &last, "GET db:k");
        ok(tries > 0 && !strcmp(last, "one"), "db1: GET in database 1 is cached (%s)", last);
        is_str(cmd(clong, "GET db:k"), "zero", "db1: database 0 reads its own value");
        cmd(dr, "SELECT 1");
        cmd(dr, "SET db:k two");
        cmd(dr, "SELECT 0");
        double d = poll_until(p1, "two", 1.0, "GET db:k");
        ok(d >= 0, "db1: a direct write in database 1 is visible within 1 s (%.2f ms)", d * 1000);
        cached(p1, "get", NULL, "GET db:k");
        cmd(w1, "SET db:k three");
        is_str(cmd(p1, "GET db:k"), "three", "db1: a write through hotproxy in database 1 shows at once");
        redisFree(p1);
        redisFree(w1);
    }

    /* larger than l1-max-entry-size (512kb): never stored */
    {
        size_t n = 600 * 1024;
        char *big = malloc(n);
        memset(big, 'b', n);
        redisReply *r = redisCommand(dr, "SET big:k %b", big, n);
        if (r) freeReplyObject(r);
        long long s = stat_calls("get"), stores = l1n(clong, "hotproxy_l1_stores");
        int right = 0;
        for (int i = 0; i < 5; i++) {
            r = redisCommand(clong, "GET big:k");
            right += r && r->type == REDIS_REPLY_STRING && r->len == n && !memcmp(r->str, big, n);
            if (r) freeReplyObject(r);
        }
        is_int(right, 5, "big: a 600 KB value reads right 5 times");
        /* A read that arrives while the previous fill's PTTL is still on its
         * way joins that fill (the value holds: PTTL -1), so not every read
         * reaches Redis; none is stored. */
        is_int(l1n(clong, "hotproxy_l1_stores") - stores, 0, "big: ... never stored (larger than l1-max-entry-size)");
        ok(stat_calls("get") - s >= 1, "big: ... the reads reach Redis (%lld GETs)", stat_calls("get") - s);
        free(big);
    }

    /* 12 */
    tx_and_scripts(pnt.port, "tx-no-tracking");
    tx_and_scripts(plong.port, "tx-tracking");
    write_table(pnt.port, "writes", NULL);
    {
        /* regression: EXISTS of several keys was cached under the first key only, so a
         * write to the second left it stale; a read naming several keys is not cached */
        cmd(dr, "SET ex:a 1");
        cmd(dr, "SET ex:b 1");
        const char *last = NULL;
        int tries = cached(clong, "exists", &last, "EXISTS ex:a ex:b");
        ok(tries <= 0, "exists-direct: EXISTS ex:a ex:b (two keys) is never served from the L1");
        cmd(dr, "DEL ex:b");
        is_str(line(clong, "EXISTS ex:a ex:b"), "1", "exists-direct: a direct DEL of the second key shows at once");
    }

    /* 4: FLUSHALL upstream */
    {
        char k[32];
        int all = 1;
        for (int i = 0; i < 5; i++) {
            snprintf(k, sizeof(k), "fa:%d", i);
            cmd(dr, "SET %s x", k);
            all &= cached(clong, "get", NULL, "GET %s", k) > 0;
        }
        long long e = l1n(clong, "hotproxy_l1_entries"), ft = l1n(clong, "hotproxy_l1_flushes_tracking");
        ok(all && e >= 5, "flushall: 5 keys cached (%lld entries)", e);
        cmd(dr, "FLUSHALL");
        int empty = wait_l1(clong, "hotproxy_l1_entries", "0", 2000);
        ok(empty == 0, "flushall: FLUSHALL directly on Redis empties the L1 within 2 s (entries %s)",
           l1s(clong, "hotproxy_l1_entries"));
        is_str(cmd(clong, "GET fa:0"), "(nil)", "flushall: GET returns nil");
        ok(l1n(clong, "hotproxy_l1_flushes_tracking") > ft, "flushall: INFO counts a tracking flush");
    }

    /* 5: the invalidation link killed */
    {
        char k[32];
        int all = 1;
        for (int i = 0; i < 3; i++) {
            snprintf(k, sizeof(k), "lk:%d", i);
            cmd(dr, "SET %s x", k);
            all &= cached(clong, "get", NULL, "GET %s", k) > 0;
        }
        long long e = l1n(clong, "hotproxy_l1_entries"), lost0 = l1n(clong, "hotproxy_l1_flushes_link_lost");
        long long id = l1n(clong, "hotproxy_l1_tracking_link_id");
        ok(all && e >= 3 && id > 0, "link: 3 keys cached (%lld entries), link id %lld", e, id);
        char ids[32];
        snprintf(ids, sizeof(ids), "%lld", id);
        is_str(cmd(dr, "CLIENT KILL ID %s", ids), "1", "link: CLIENT KILL ID of the link, directly on Redis");
        int saw_down = 0, flushed = 0;
        double t0 = hx_now();
        while (hx_now() - t0 < 3) {
            const char *tr = l1s(clong, "hotproxy_l1_tracking");
            if (tr && strcmp(tr, "up")) saw_down = 1;
            if (l1n(clong, "hotproxy_l1_flushes_link_lost") > lost0 && l1n(clong, "hotproxy_l1_entries") == 0) {
                flushed = 1;
                break;
            }
            hx_sleep_ms(5);
        }
        ok(flushed, "link: the L1 is flushed (flushes_link_lost grows, entries 0) within 3 s");
        while (!saw_down && hx_now() - t0 < 0.5) {
            const char *tr = l1s(clong, "hotproxy_l1_tracking");
            if (tr && strcmp(tr, "up")) saw_down = 1;
            hx_sleep_ms(5);
        }
        ok(saw_down, "link: INFO showed tracking not up after the kill");
        long long nid = -1;
        int up = -1;
        t0 = hx_now();
        while (hx_now() - t0 < 6) {
            const char *tr = l1s(clong, "hotproxy_l1_tracking");
            nid = l1n(clong, "hotproxy_l1_tracking_link_id");
            if (tr && !strcmp(tr, "up") && nid > 0 && nid != id) {
                up = 0;
                break;
            }
            hx_sleep_ms(20);
        }
        ok(up == 0, "link: tracking is up again with a new link (id %lld) after %.2f s", nid, hx_now() - t0);
        /* no connection is left redirecting to the dead link */
        redisReply *r = redisCommand(dr, "CLIENT LIST");
        char pat[48], npat[48];
        snprintf(pat, sizeof(pat), "redir=%lld ", id);
        snprintf(npat, sizeof(npat), "redir=%lld ", nid);
        int old = 0, neu = 0;
        if (r && r->type == REDIS_REPLY_STRING)
            for (const char *p = r->str; (p = strstr(p, "redir=")); p++) {
                old += !strncmp(p, pat, strlen(pat));
                neu += !strncmp(p, npat, strlen(npat));
            }
        if (r) freeReplyObject(r);
        ok(old == 0 && neu > 0, "link: Redis shows %d connections tracking to the new link, %d to the dead one", neu,
           old);
        all = 1;
        for (int i = 0; i < 3; i++) {
            snprintf(k, sizeof(k), "lk:%d", i);
            all &= cached(clong, "get", NULL, "GET %s", k) > 0;
        }
        ok(all && l1n(clong, "hotproxy_l1_entries") >= 3, "link: the L1 fills again (%lld entries)",
           l1n(clong, "hotproxy_l1_entries"));
        cmd(dr, "SET lk:0 after");
        double d = poll_until(clong, "after", 1.0, "GET lk:0");
        ok(d >= 0, "link: a direct write is invalidated through the new link (%.2f ms, l1-ttl 60000)", d * 1000);
    }

    /* 6 */
    coalescing();
    /* 7 */
    scan_resistance();

    /* 10: l1 no */
    {
        hx_proc p;
        const char *x[] = {"--l1", "no", NULL};
        if (!start_proxy(&p, "l1 no", redis.port, x)) {
            redisContext *pc = hx_redis(p.port);
            is_str(l1s(pc, "hotproxy_l1"), "off", "l1 no: INFO says hotproxy_l1:off");
            cmd(dr, "SET off:k v");
            long long s = stat_calls("get");
            int right = 0;
            for (int i = 0; i < 50; i++) right += !strcmp(cmd(pc, "GET off:k"), "v");
            is_int(stat_calls("get") - s, 50, "l1 no: 50 GETs through hotproxy are 50 GETs on Redis");
            is_int(right, 50, "l1 no: ... all answered right");
            redisFree(pc);
            is_int(hx_stop(&p, 15000), 0, "l1 no: hotproxy exits 0 on SIGTERM");
        } else {
            ok(0, "l1 no: hotproxy starts");
        }
    }

    /* 11: tracking refused */
    {
        hx_proc p;
        is_str(cmd(dr, "ACL SETUSER hpu on >hpp ~* &* +@all -client|tracking"), "OK",
               "acl: user hpu may do everything but CLIENT TRACKING");
        const char *x[] = {"--upstream-user", "hpu", "--upstream-password", "hpp", NULL};
        if (!start_proxy(&p, "acl", redis.port, x)) {
            ttl_only(&p, "acl", NULL);
            is_int(hx_stop(&p, 15000), 0, "acl: hotproxy exits 0 on SIGTERM");
        } else {
            ok(0, "acl: hotproxy starts");
        }

        /* the link may not even subscribe */
        is_str(cmd(dr, "ACL SETUSER hpn on >hpp ~* resetchannels +@all"), "OK",
               "nochannels: user hpn may subscribe to no channel");
        const char *xn[] = {"--upstream-user", "hpn", "--upstream-password", "hpp", NULL};
        if (!start_proxy(&p, "nochannels", redis.port, xn)) {
            ttl_only(&p, "regression, a refused SUBSCRIBE fell back to nothing: nochannels", NULL);
            is_int(hx_stop(&p, 15000), 0, "nochannels: hotproxy exits 0 on SIGTERM");
        } else {
            ok(0, "nochannels: hotproxy starts");
        }

        /* CLIENT renamed away: no CLIENT ID, no CLIENT TRACKING */
        hx_proc r2;
        const char *rx[] = {"--rename-command", "CLIENT", "", NULL};
        hx_redis_opts ro = {.extra = rx, .name = "redis-extra"};
        if (hx_redis_start_opts(&r2, &ro) == 0) {
            if (!start_proxy(&p, "no-client", r2.port, xdef)) {
                redisContext *save = dr;
                dr = hx_redis(r2.port);
                ttl_only(&p, "regression, no CLIENT ID left the link 'up' with id 0: no-client", NULL);
                redisFree(dr);
                dr = save;
                is_int(hx_stop(&p, 15000), 0, "no-client: hotproxy exits 0 on SIGTERM");
            } else {
                ok(0, "no-client: hotproxy starts");
            }
            hx_stop(&r2, 5000);
        } else {
            ok(0, "no-client: redis-server with CLIENT renamed starts");
        }
    }

    redisFree(cdef);
    redisFree(clong);
    redisFree(cnt);
    is_int(hx_stop(&pdef, 15000), 0, "default: hotproxy exits 0 on SIGTERM");
    is_int(hx_stop(&plong, 15000), 0, "l1-ttl 60000: hotproxy exits 0 on SIGTERM");
    is_int(hx_stop(&pnt, 15000), 0, "l1-tracking no: hotproxy exits 0 on SIGTERM");
    redisFree(dr);
    hx_stop(&redis, 5000);
    done_testing();
    return exit_status();
}
