/*
 * test_local: the commands hotproxy answers itself (CLIENT ..., SELECT,
 * HOTPROXY) and the checks it makes before forwarding (who may run what,
 * MULTI), against what redis-server 7.0 does.
 *
 * Where Redis' exact bytes matter the same request goes to redis-server
 * directly and the two byte strings are compared.  Replies are read with a
 * local RESP2+RESP3 framer (the harness' knows RESP2 only).
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "tap.h"

static hx_proc redis, proxy;

/* Length of the complete RESP2/RESP3 reply at p, 0 if incomplete, -1 if bad. */
static long r3len(const char *p, size_t n)
{
    if (n < 3) return 0;
    const char *nl = memchr(p, '\n', n);
    if (!nl) return 0;
    size_t ll = (size_t)(nl - p + 1);
    long long v = strtoll(p + 1, NULL, 10);
    switch (p[0]) {
    case '+': case '-': case ':': case '_': case ',': case '#': case '(':
        return (long)ll;
    case '$': case '=': case '!':
        if (v < 0) return (long)ll;
        return n < ll + (size_t)v + 2 ? 0 : (long)(ll + (size_t)v + 2);
    case '*': case '~': case '>': case '%': case '|': {
        long long elems = v < 0 ? 0 : (p[0] == '%' || p[0] == '|') ? 2 * v : v;
        size_t pos = ll;
        for (long long i = 0; i < elems; i++) {
            long e = r3len(p + pos, n - pos);
            if (e <= 0) return e;
            pos += (size_t)e;
        }
        if (p[0] == '|') { /* an attribute precedes the reply it annotates */
            long e = r3len(p + pos, n - pos);
            if (e <= 0) return e;
            pos += (size_t)e;
        }
        return (long)pos;
    }
    default: return -1;
    }
}

/* Read until b holds n complete replies after `from`; returns how many it has. */
static long read_n(int fd, hx_buf *b, size_t from, long n, int timeout_ms)
{
    double deadline = hx_now() + timeout_ms / 1000.0;
    long have = 0;
    size_t pos = from;
    while (1) {
        while (have < n && pos < b->len) {
            long l = r3len(b->data + pos, b->len - pos);
            if (l <= 0) break;
            pos += (size_t)l;
            have++;
        }
        if (have >= n) return have;
        int left = (int)((deadline - hx_now()) * 1000);
        if (left <= 0) return have;
        size_t before = b->len;
        int st = hx_read_n(fd, b, 1, left);
        if (st != HX_OK && b->len == before) return have;
    }
}

/* Offset of reply k (0-based) in b, or b->len. */
static size_t reply_at(const hx_buf *b, long k)
{
    size_t pos = 0;
    for (long i = 0; i < k && pos < b->len; i++) {
        long l = r3len(b->data + pos, b->len - pos);
        if (l <= 0) return b->len;
        pos += (size_t)l;
    }
    return pos;
}

static void show(const char *who, const char *p, size_t n)
{
    printf("#   %-8s '", who);
    tap_escape(p, n > 600 ? 600 : n);
    fputs(n > 600 ? "'...\n" : "'\n", stdout);
}

/*
 * Send req on a fresh connection to hotproxy and to Redis; read n replies
 * (n < 0: until the server closes) and compare them, skipping the first
 * `skip` replies (ones that name the connection, as HELLO's id does).
 */
static void same_as_redis_skip(const char *req, long n, long skip, const char *what)
{
    hx_buf p = {0}, d = {0};
    int okp, okd;
    int fp = hx_connect(proxy.port), fd = hx_connect(redis.port);
    hx_send(fp, req, strlen(req), 5000);
    hx_send(fd, req, strlen(req), 5000);
    if (n < 0) {
        okp = hx_read_eof(fp, &p, 10000) != HX_TIMEOUT;
        okd = hx_read_eof(fd, &d, 10000) != HX_TIMEOUT;
    } else {
        okp = read_n(fp, &p, 0, n, 10000) == n;
        okd = read_n(fd, &d, 0, n, 10000) == n;
    }
    size_t sp = reply_at(&p, skip), sd = reply_at(&d, skip);
    if (!ok(okp && okd && hx_mem_eq(p.data + sp, p.len - sp, d.data + sd, d.len - sd), "%s: same bytes as Redis", what)) {
        diag("  complete: hotproxy %d, redis %d", okp, okd);
        show("hotproxy", p.data + sp, p.len - sp);
        show("redis", d.data + sd, d.len - sd);
    }
    close(fp);
    close(fd);
    hx_buf_free(&p);
    hx_buf_free(&d);
}
#define same_as_redis(req, n, what) same_as_redis_skip((req), (n), 0, (what))

static int starts(const char *s, const char *prefix) { return !strncmp(s, prefix, strlen(prefix)); }

/* ---- error texts ---------------------------------------------------------- */

static void test_error_texts(void)
{
    same_as_redis("CLIENT KILL ID abc\r\n", 1, "CLIENT KILL ID abc");
    same_as_redis("CLIENT KILL ID 0\r\n", 1, "CLIENT KILL ID 0");
    same_as_redis("CLIENT KILL ID 999999\r\n", 1, "CLIENT KILL ID of nobody");
    same_as_redis("CLIENT KILL\r\n", 1, "CLIENT KILL without arguments");
    same_as_redis("CLIENT KILL ID\r\n", 1, "CLIENT KILL ID (one argument: an address)");
    same_as_redis("CLIENT KILL TYPE bogus\r\n", 1, "CLIENT KILL TYPE bogus");
    same_as_redis("CLIENT KILL USER nosuch\r\n", 1, "CLIENT KILL USER of an unknown user");
    same_as_redis("CLIENT KILL ADDR x SKIPME maybe\r\n", 1, "CLIENT KILL SKIPME maybe");
    same_as_redis("CLIENT UNBLOCK abc\r\n", 1, "CLIENT UNBLOCK abc");
    same_as_redis("CLIENT UNBLOCK 5 bogus\r\n", 1, "CLIENT UNBLOCK with a bad reason");
    same_as_redis("CLIENT UNBLOCK abc bogus\r\n", 1, "CLIENT UNBLOCK: the reason is checked first");
    same_as_redis("CLIENT UNBLOCK 999999 ERROR\r\n", 1, "CLIENT UNBLOCK of nobody");
    same_as_redis("CLIENT UNBLOCK 1 2 3\r\n", 1, "CLIENT UNBLOCK with too many arguments");
    same_as_redis("CLIENT LIST TYPE bogus\r\n", 1, "CLIENT LIST TYPE bogus");
    same_as_redis("CLIENT LIST TYPE master\r\n", 1, "CLIENT LIST TYPE master (none)");
    same_as_redis("CLIENT LIST ID abc\r\n", 1, "CLIENT LIST ID abc");
    same_as_redis("CLIENT LIST ID 999999 abc\r\n", 1, "CLIENT LIST ID with a bad id after a good one");
    same_as_redis("CLIENT LIST ID\r\n", 1, "CLIENT LIST ID without ids");
    same_as_redis("CLIENT LIST ID 999999 0 -4\r\n", 1, "CLIENT LIST ID of nobody");
    same_as_redis("CLIENT SETNAME\r\n", 1, "CLIENT SETNAME without a name");
    same_as_redis("SELECT 99999999999\r\n", 1, "SELECT 99999999999");
    same_as_redis("SELECT abc\r\n", 1, "SELECT abc");
    same_as_redis("SELECT 16\r\n", 1, "SELECT 16");
    same_as_redis("CLIENT GETREDIR\r\n", 1, "CLIENT GETREDIR without tracking");
    same_as_redis("CLIENT TRACKINGINFO\r\n", 1, "CLIENT TRACKINGINFO without tracking (RESP2)");
    same_as_redis_skip("HELLO 3\r\nCLIENT TRACKINGINFO\r\nCLIENT GETREDIR\r\n", 3, 1,
                       "CLIENT TRACKINGINFO and GETREDIR without tracking (RESP3)");
}

/* "SUBSCRIBE ch" and garbage in one write: the confirmation, then the
 * protocol error, then the close. */
static void test_subscribe_then_protocol_error(void)
{
    same_as_redis("SUBSCRIBE ch\r\n*1\r\n$abc\r\n", -1, "SUBSCRIBE then a protocol error in the same packet");
    same_as_redis_skip("HELLO 3\r\nSUBSCRIBE ch\r\n*1\r\n$abc\r\n", -1, 1,
                  "HELLO 3, SUBSCRIBE then a protocol error in the same packet");
}

/* ---- MULTI ---------------------------------------------------------------- */

static void test_multi(void)
{
    redisContext *d = hx_redis(redis.port);
    hx_cmd(d, "DEL lc:m1 lc:m2 lc:m3");

    /* an arity error hotproxy finds itself aborts the transaction */
    same_as_redis("MULTI\r\nSET lc:m1 v\r\nCLIENT SETNAME\r\nEXEC\r\nEXISTS lc:m1\r\n", 5,
                  "MULTI with CLIENT SETNAME lacking its argument: EXECABORT, nothing set");
    /* a command hotproxy refuses aborts it too (Redis refuses SHUTDOWN in MULTI) */
    hx_buf b = {0};
    int fd = hx_connect(proxy.port);
    hx_send_str(fd, "MULTI\r\nSET lc:m2 v\r\nSHUTDOWN\r\nEXEC\r\nEXISTS lc:m2\r\n");
    long got = read_n(fd, &b, 0, 5, 10000);
    size_t e = reply_at(&b, 3);
    ok(got == 5 && starts(b.data + e, "-EXECABORT Transaction discarded because of previous errors.\r\n:0\r\n"),
       "MULTI with a refused SHUTDOWN: EXEC answers EXECABORT and the SET did not run");
    if (got != 5 || !starts(b.data + e, "-EXECABORT")) show("hotproxy", b.data, b.len);
    /* the connection is usable afterwards, out of MULTI */
    hx_buf_reset(&b);
    hx_send_str(fd, "SET lc:m2 w\r\nGET lc:m2\r\n");
    got = read_n(fd, &b, 0, 2, 10000);
    ok(got == 2 && hx_mem_eq(b.data, b.len, "+OK\r\n$1\r\nw\r\n", 12), "after EXECABORT the client is out of MULTI");
    close(fd);

    /* CLIENT commands inside MULTI are queued and answered inside EXEC */
    hx_buf_reset(&b);
    fd = hx_connect(proxy.port);
    hx_send_str(fd, "CLIENT ID\r\n");
    read_n(fd, &b, 0, 1, 10000);
    long long id = b.len > 1 ? strtoll(b.data + 1, NULL, 10) : -1;
    hx_buf_reset(&b);
    hx_send_str(fd, "MULTI\r\nCLIENT SETNAME foo\r\nCLIENT GETNAME\r\nCLIENT ID\r\nPING\r\nECHO x\r\nSET lc:m3 v\r\n"
                    "CLIENT GETNAME\r\nEXEC\r\nCLIENT GETNAME\r\n");
    got = read_n(fd, &b, 0, 10, 10000);
    hx_buf want = {0};
    hx_buf_printf(&want, "+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n"
                         "*7\r\n+OK\r\n$3\r\nfoo\r\n:%lld\r\n+PONG\r\n$1\r\nx\r\n+OK\r\n$3\r\nfoo\r\n$3\r\nfoo\r\n",
                  id);
    if (!ok(got == 10 && hx_mem_eq(b.data, b.len, want.data, want.len),
            "CLIENT SETNAME/GETNAME/ID, PING, ECHO inside MULTI: +QUEUED, and their replies in EXEC's array in order")) {
        show("hotproxy", b.data, b.len);
        show("expected", want.data, want.len);
    }
    /* CLIENT INFO and LIST inside MULTI: flags=x, as Redis shows */
    hx_buf_reset(&b);
    hx_send_str(fd, "MULTI\r\nCLIENT INFO\r\nEXEC\r\n");
    got = read_n(fd, &b, 0, 3, 10000);
    e = reply_at(&b, 2);
    ok(got == 3 && starts(b.data + e, "*1\r\n$") && strstr(b.data + e, " flags=x ") && strstr(b.data + e, " name=foo "),
       "CLIENT INFO inside MULTI: queued, answered in EXEC with flags=x");
    /* INFO inside MULTI: +QUEUED, and hotproxy's sections inside EXEC */
    hx_buf_reset(&b);
    hx_send_str(fd, "MULTI\r\nINFO server\r\nINFO hotproxy\r\nEXEC\r\n");
    got = read_n(fd, &b, 0, 4, 10000);
    e = reply_at(&b, 3);
    ok(got == 4 && starts(b.data, "+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n$") && strstr(b.data + e, "redis_version:") &&
           strstr(b.data + e, "hotproxy_version:"),
       "INFO inside MULTI: +QUEUED, and Redis' and hotproxy's sections in EXEC's array");
    if (got != 4 || !starts(b.data, "+OK\r\n+QUEUED\r\n+QUEUED\r\n*2")) show("hotproxy", b.data, b.len);
    /* DISCARD drops the queued local commands */
    hx_buf_reset(&b);
    hx_send_str(fd, "MULTI\r\nCLIENT SETNAME bar\r\nDISCARD\r\nCLIENT GETNAME\r\n");
    got = read_n(fd, &b, 0, 4, 10000);
    ok(got == 4 && hx_mem_eq(b.data, b.len, "+OK\r\n+QUEUED\r\n+OK\r\n$3\r\nfoo\r\n", 28),
       "DISCARD drops a queued CLIENT SETNAME");
    close(fd);
    hx_buf_free(&want);
    hx_buf_free(&b);
    redisFree(d);
}

/* ---- CLIENT INFO / LIST: Redis 7.0's fields, in Redis' order -------------- */

/* The field names of a CLIENT INFO line ("id addr laddr ..."), space separated,
 * up to and including stop (or all of them when stop is NULL). */
static void field_names(const char *line, const char *stop, hx_buf *out)
{
    hx_buf_reset(out);
    for (const char *p = line; *p && *p != '\n';) {
        const char *eqs = strchr(p, '=');
        if (!eqs) break;
        hx_buf_append(out, p, (size_t)(eqs - p));
        hx_buf_append(out, " ", 1);
        if (stop && (size_t)(eqs - p) == strlen(stop) && !strncmp(p, stop, strlen(stop))) break;
        const char *sp = strchr(eqs, ' ');
        if (!sp) break;
        p = sp + 1;
    }
    hx_buf_append(out, "", 1);
}

/* Redis' test suite (unit/introspection "CLIENT LIST", "CLIENT INFO") and
 * client libraries match the line as a pattern: hotproxy's line must carry
 * Redis' fields in Redis' order, its own after them; and the client asking
 * has no reply waiting (oll=0), as with Redis. */
static void test_client_info_fields_as_redis(void)
{
    redisContext *d = hx_redis(redis.port), *p = hx_redis(proxy.port);
    hx_buf want = {0}, got = {0};
    if (ok(d && p, "client info fields: connected to redis-server and hotproxy")) {
        field_names(hx_cmd(d, "CLIENT INFO"), NULL, &want);
        field_names(hx_cmd(p, "CLIENT INFO"), "resp", &got);
        is_str(got.data, want.data, "CLIENT INFO: Redis' fields in Redis' order, hotproxy's after them");
        field_names(hx_cmd(p, "CLIENT LIST"), "resp", &got);
        is_str(got.data, want.data, "CLIENT LIST: Redis' fields in Redis' order, hotproxy's after them");
        const char *line = hx_cmd(p, "CLIENT INFO");
        if (!ok(strstr(line, " oll=0 ") != NULL, "CLIENT INFO: oll=0 for the client asking")) diag("%s", line);
    }
    hx_buf_free(&want);
    hx_buf_free(&got);
    if (d) redisFree(d);
    if (p) redisFree(p);
}

/* ---- CLIENT TRACKING REDIRECT, GETREDIR, TRACKINGINFO --------------------- */

static long long client_id(int fd)
{
    hx_buf b = {0};
    hx_send_str(fd, "CLIENT ID\r\n");
    long long id = read_n(fd, &b, 0, 1, 10000) == 1 ? strtoll(b.data + 1, NULL, 10) : -1;
    hx_buf_free(&b);
    return id;
}

static void test_tracking_redirect(void)
{
    hx_buf b = {0};
    char req[256];
    /* the target only said HELLO 3: it is not pinned */
    int x = hx_connect(proxy.port), a = hx_connect(proxy.port);
    hx_send_str(x, "HELLO 3\r\n");
    read_n(x, &b, 0, 1, 10000);
    long long xid = client_id(x), aid = client_id(a);
    hx_buf_reset(&b);
    snprintf(req, sizeof(req), "CLIENT TRACKING on REDIRECT %lld\r\nCLIENT GETREDIR\r\nCLIENT TRACKINGINFO\r\n", xid);
    hx_send_str(a, req);
    long got = read_n(a, &b, 0, 3, 10000);
    hx_buf want = {0};
    hx_buf_printf(&want, "+OK\r\n:%lld\r\n*6\r\n$5\r\nflags\r\n*1\r\n$2\r\non\r\n$8\r\nredirect\r\n:%lld\r\n$8\r\nprefixes\r\n*0\r\n",
                  xid, xid);
    if (!ok(got == 3 && hx_mem_eq(b.data, b.len, want.data, want.len),
            "CLIENT TRACKING on REDIRECT to a RESP3 client that is not pinned: OK; GETREDIR and TRACKINGINFO give "
            "hotproxy's id of the target")) {
        show("hotproxy", b.data, b.len);
        show("expected", want.data, want.len);
    }
    /* the invalidation reaches the target */
    hx_buf_reset(&b);
    hx_send_str(a, "GET lc:tr\r\n");
    read_n(a, &b, 0, 1, 10000);
    redisContext *d = hx_redis(redis.port);
    hx_cmd(d, "SET lc:tr changed");
    hx_buf_reset(&b);
    long n = read_n(x, &b, 0, 1, 10000);
    ok(n == 1 && strstr(b.data, "invalidate") && strstr(b.data, "lc:tr"),
       "a write elsewhere sends the invalidation push to the redirect target");
    if (n != 1) show("target", b.data, b.len);
    (void)aid;
    /* a tracking client that is pinned but did not redirect: redirect 0 */
    int t = hx_connect(proxy.port);
    hx_buf_reset(&b);
    hx_send_str(t, "CLIENT TRACKING on\r\nCLIENT GETREDIR\r\n");
    got = read_n(t, &b, 0, 2, 10000);
    ok(got == 2 && hx_mem_eq(b.data, b.len, "+OK\r\n:0\r\n", 9), "CLIENT GETREDIR with tracking and no redirect: 0");
    close(t);
    close(a);
    close(x);
    redisFree(d);
    hx_buf_free(&want);
    hx_buf_free(&b);
}

/* CLIENT UNBLOCK with hotproxy's id reaches the blocked command's own
 * connection, outside and inside MULTI. */
static void test_unblock(void)
{
    for (int in_multi = 0; in_multi < 2; in_multi++) {
        hx_buf b = {0}, bb = {0};
        char req[128];
        int blocked = hx_connect(proxy.port), a = hx_connect(proxy.port);
        long long bid = client_id(blocked);
        hx_send_str(blocked, "BLPOP lc:never 0\r\n");
        /* poll: 0 until the BLPOP is blocked in Redis, then 1 */
        snprintf(req, sizeof(req),
                 in_multi ? "MULTI\r\nCLIENT UNBLOCK %lld ERROR\r\nEXEC\r\n" : "CLIENT UNBLOCK %lld ERROR\r\n", bid);
        const char *want = in_multi ? "+OK\r\n+QUEUED\r\n*1\r\n:1\r\n" : ":1\r\n";
        double deadline = hx_now() + 20;
        do {
            hx_buf_reset(&b);
            hx_send_str(a, req);
            read_n(a, &b, 0, in_multi ? 3 : 1, 10000);
        } while (!hx_mem_eq(b.data, b.len, want, strlen(want)) && hx_now() < deadline);
        ok(hx_mem_eq(b.data, b.len, want, strlen(want)), "CLIENT UNBLOCK of a blocked client%s: 1",
           in_multi ? " inside MULTI" : "");
        ok(read_n(blocked, &bb, 0, 1, 10000) == 1 && starts(bb.data, "-UNBLOCKED"),
           "... and its BLPOP ends with -UNBLOCKED");
        close(a);
        close(blocked);
        hx_buf_free(&b);
        hx_buf_free(&bb);
    }
}

/* A client's info field from INFO hotproxy on port, as a number (-1 if absent). */
static long info_num(int port, const char *field)
{
    const char *v = hx_info_field(port, "hotproxy", field);
    return v ? strtol(v, NULL, 10) : -1;
}

/*
 * The connection a tracking redirect points at must not be handed to the
 * next client that pins one: Redis keeps sending the redirected
 * invalidations to that connection's id.  Own proxy, so its spares are known.
 */
static void test_redirect_target_not_reused(void)
{
    hx_proc p3;
    const char *extra[] = {"--upstream-spare", "4", NULL};
    if (!ok(hx_proxy_startv(&p3, 0, redis.port, extra) == 0, "reuse: a hotproxy of its own starts")) return;
    hx_buf b = {0};
    char req[128];
    int x = hx_connect(p3.port), a = hx_connect(p3.port);
    /* a RESP3 subscriber: its connection is clean enough to be reused after RESET */
    hx_send_str(x, "HELLO 3\r\nSUBSCRIBE lc:chan\r\n");
    read_n(x, &b, 0, 2, 10000);
    long long xid = client_id(x);
    hx_buf_reset(&b);
    snprintf(req, sizeof(req), "CLIENT TRACKING on REDIRECT %lld\r\nGET lc:reuse\r\n", xid);
    hx_send_str(a, req);
    ok(read_n(a, &b, 0, 2, 10000) == 2 && starts(b.data, "+OK\r\n"), "reuse: a tracks, redirected to the subscriber");
    hx_buf_reset(&b);
    hx_send_str(x, "RESET\r\n");
    read_n(x, &b, 0, 1, 10000);
    /* x's connection leaves the pinned ones (closed now; a spare before) */
    double deadline = hx_now() + 20;
    while (info_num(p3.port, "hotproxy_pinned_connections") != 1 && hx_now() < deadline) hx_sleep_ms(20);
    is_int(info_num(p3.port, "hotproxy_pinned_connections"), 1, "reuse: only a's connection is pinned after x's RESET");
    /* y pins a connection: it must not be the one Redis redirects a's invalidations to */
    int y = hx_connect(p3.port);
    hx_buf_reset(&b);
    hx_send_str(y, "HELLO 3\r\nSUBSCRIBE lc:other\r\n");
    read_n(y, &b, 0, 2, 10000);
    redisContext *d = hx_redis(redis.port);
    hx_cmd(d, "SET lc:reuse changed");
    redisFree(d);
    hx_buf_reset(&b);
    hx_send_str(y, "PING\r\n");
    long got = read_n(y, &b, 0, 1, 10000);
    while (got == 1 && !strstr(b.data, "PONG")) got = read_n(y, &b, b.len, 1, 10000); /* whatever precedes PONG */
    ok(got == 1 && !memmem(b.data, b.len, "invalidate", 10),
       "reuse: the next client to pin gets no invalidation meant for another");
    if (memmem(b.data, b.len, "invalidate", 10)) show("y", b.data, b.len);
    close(x);
    close(a);
    close(y);
    hx_buf_free(&b);
    is_int(hx_stop(&p3, 10000), 0, "reuse: hotproxy exits 0");
}

/* ---- CLIENT LIST ID: linear in its input ---------------------------------- */

/*
 * 1200 clients connected and CLIENT LIST ID with 3000 ids.  The old code
 * looked each id up by walking every client, for every client: 1200 x 3000
 * x 1200 steps, tens of seconds with the loop frozen.  The 10 s read
 * deadline is what makes this test fail on that code; what it asserts is the
 * output: exactly the live ids given, in the order given (Redis' order).
 */
#define NCLIENTS 1200
#define NIDS 3000

static void test_client_list_id_linear(void)
{
    static int fds[NCLIENTS];
    static long long ids[NCLIENTS];
    int connected = 0;
    for (int i = 0; i < NCLIENTS; i++) {
        fds[i] = hx_connect(proxy.port);
        if (fds[i] >= 0) connected++;
    }
    /* pipelined CLIENT IDs: one write each, then the reads */
    for (int i = 0; i < NCLIENTS; i++)
        if (fds[i] >= 0) hx_send_str(fds[i], "CLIENT ID\r\n");
    int known = 0;
    for (int i = 0; i < NCLIENTS; i++) {
        hx_buf b = {0};
        ids[i] = fds[i] >= 0 && read_n(fds[i], &b, 0, 1, 10000) == 1 ? strtoll(b.data + 1, NULL, 10) : -1;
        known += ids[i] > 0;
        hx_buf_free(&b);
    }
    if (!ok(connected == NCLIENTS && known == NCLIENTS, "%d clients connected and know their ids", NCLIENTS)) return;
    /* the last client leaves: its id must not be listed */
    close(fds[NCLIENTS - 1]);
    long long gone = ids[NCLIENTS - 1];

    /* ids: the live ones in a shuffled order, the gone one, and ids nobody has */
    hx_buf req = {0}, want_ids = {0};
    const char **argv = calloc(NIDS + 3, sizeof(*argv));
    size_t *argvlen = calloc(NIDS + 3, sizeof(*argvlen));
    char (*num)[24] = calloc(NIDS, 24);
    int order[NCLIENTS - 1];
    for (int i = 0; i < NCLIENTS - 1; i++) order[i] = i;
    unsigned rnd = 12345;
    for (int i = NCLIENTS - 2; i > 0; i--) {
        rnd = rnd * 1103515245u + 12345u;
        int j = (int)((rnd >> 8) % (unsigned)(i + 1));
        int t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    argv[0] = "CLIENT";
    argv[1] = "LIST";
    argv[2] = "ID";
    int k = 0;
    for (int i = 0; i < NIDS; i++) {
        long long v;
        if (i % 2 == 0 && i / 2 < NCLIENTS - 1) v = ids[order[i / 2]];
        else v = 1000000000LL + i; /* nobody */
        if (i == NIDS / 2 + 1) v = gone;
        snprintf(num[i], 24, "%lld", v);
        argv[3 + i] = num[i];
        argvlen[3 + i] = strlen(num[i]);
        if (v < 1000000000LL && v != gone) {
            hx_buf_printf(&want_ids, "%lld,", v);
            k++;
        }
    }
    argvlen[0] = 6;
    argvlen[1] = 4;
    argvlen[2] = 2;
    hx_buf_command(&req, NIDS + 3, argv, argvlen);

    /* the gone client is off the list once the proxy has seen it leave */
    int admin = hx_connect(proxy.port);
    double deadline = hx_now() + 20;
    char one[64];
    snprintf(one, sizeof(one), "CLIENT LIST ID %lld\r\n", gone);
    hx_buf b = {0};
    do {
        hx_buf_reset(&b);
        hx_send_str(admin, one);
        read_n(admin, &b, 0, 1, 10000);
    } while (strcmp(b.data ? b.data : "", "$0\r\n\r\n") && hx_now() < deadline);

    hx_buf_reset(&b);
    hx_send(admin, req.data, req.len, 10000);
    long got = read_n(admin, &b, 0, 1, 10000);
    /* the ids in the reply, in order */
    hx_buf seen = {0};
    int lines = 0;
    for (const char *p = b.data ? strstr(b.data, "id=") : NULL; p; p = strstr(p + 1, "\nid=")) {
        const char *q = p[0] == '\n' ? p + 4 : p + 3;
        hx_buf_printf(&seen, "%lld,", strtoll(q, NULL, 10));
        lines++;
    }
    if (!ok(got == 1 && hx_mem_eq(seen.data, seen.len, want_ids.data, want_ids.len),
            "CLIENT LIST ID with %d ids among %d clients: the %d live ids listed, in the order given (10 s deadline)",
            NIDS, NCLIENTS, k))
        diag("  got %ld reply, %d lines, wanted %d", got, lines, k);
    /* the loop was not frozen: another client is answered */
    int other = hx_connect(proxy.port);
    hx_buf pb = {0};
    hx_send_str(other, "PING\r\n");
    ok(read_n(other, &pb, 0, 1, 10000) == 1 && hx_mem_eq(pb.data, pb.len, "+PONG\r\n", 7),
       "another client's PING is answered");
    close(other);
    close(admin);
    for (int i = 0; i < NCLIENTS - 1; i++) close(fds[i]);
    hx_buf_free(&pb);
    hx_buf_free(&seen);
    hx_buf_free(&b);
    hx_buf_free(&req);
    hx_buf_free(&want_ids);
    free(argv);
    free(argvlen);
    free(num);
}

/* ---- who may run what ----------------------------------------------------- */

static const char *run(redisContext *c, const char *fmt, const char *arg)
{
    return arg ? hx_cmd(c, fmt, arg) : hx_cmd(c, fmt);
}

/* Every string a CONFIG GET-style reply holds, joined, to look for secrets in. */
static void flatten(redisReply *r, hx_buf *out)
{
    if (!r) return;
    if (r->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < r->elements; i++) flatten(r->element[i], out);
    } else if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_ERROR) {
        hx_buf_append(out, r->str, r->len);
        hx_buf_append(out, "\n", 1);
    }
}

static int holds_secret(const hx_buf *b)
{
    static const char *secrets[] = {"up-Secret-1", "master-Secret-2", "bob-Secret-3", "ops-Secret-4", "req-Secret-5"};
    for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++)
        if (b->data && memmem(b->data, b->len, secrets[i], strlen(secrets[i]))) return 1;
    return 0;
}

static void test_authorization(void)
{
    hx_proc r2, p2;
    if (!ok(hx_redis_start(&r2, 0) == 0, "auth: a second redis-server starts")) return;
    redisContext *d = hx_redis(r2.port);
    hx_cmd(d, "CONFIG SET masterauth master-Secret-2");
    hx_cmd(d, "CONFIG SET masteruser someone");
    hx_cmd(d, "CONFIG SET requirepass up-Secret-1");
    redisFree(d);
    const char *extra[] = {"--upstream-password", "up-Secret-1", "--requirepass", "req-Secret-5", "--user", "bob", "on",
                           ">bob-Secret-3", "--user", "ops", "on", ">ops-Secret-4", "+@admin", NULL};
    if (!ok(hx_proxy_startv(&p2, 0, r2.port, extra) == 0, "auth: hotproxy with a plain user and an admin user starts"))
        return;
    redisContext *bob = hx_redis(p2.port), *ops = hx_redis(p2.port), *def = hx_redis(p2.port);
    is_str(hx_cmd(bob, "AUTH bob bob-Secret-3"), "OK", "auth: bob logs in");
    is_str(hx_cmd(ops, "AUTH ops ops-Secret-4"), "OK", "auth: ops logs in");
    is_str(hx_cmd(def, "AUTH req-Secret-5"), "OK", "auth: the requirepass user logs in");
    is_str(hx_cmd(ops, "CLIENT SETNAME opsconn"), "OK", "auth: ops names its connection");
    char opsid[32];
    snprintf(opsid, sizeof(opsid), "%s", hx_cmd(ops, "CLIENT ID"));

    static const struct {
        const char *fmt, *name;
        int id_arg;
    } denied[] = {
        {"CONFIG GET requirepass", "config|get", 0},
        {"CONFIG SET maxmemory 0", "config|set", 0},
        {"CLIENT KILL ID %s", "client|kill", 1},
        {"CLIENT LIST", "client|list", 0},
        {"CLIENT NO-EVICT on", "client|no-evict", 0},
        {"CLIENT PAUSE 10", "client|pause", 0},
        {"CLIENT UNBLOCK %s", "client|unblock", 1},
        {"ACL LIST", "acl|list", 0},
        {"DEBUG SLEEP 0", "debug", 0},
        {"MODULE LIST", "module|list", 0},
        {"SHUTDOWN", "shutdown", 0},
        {"BGSAVE", "bgsave", 0},
        {"FLUSHALL", "flushall", 0},
        {"KEYS *", "keys", 0},
        {"HOTPROXY CACHE STATS", "hotproxy|cache", 0},
        {"HOTPROXY CONFIG GET *", "hotproxy|config", 0},
    };
    for (size_t i = 0; i < sizeof(denied) / sizeof(denied[0]); i++) {
        char want[160];
        snprintf(want, sizeof(want), "NOPERM this user has no permissions to run the '%s' command", denied[i].name);
        is_str(run(bob, denied[i].fmt, denied[i].id_arg ? opsid : NULL), want, "auth: bob (no +@admin): %s", denied[i].fmt);
    }
    is_str(hx_cmd(ops, "PING"), "PONG", "auth: bob's CLIENT KILL did not kill ops' connection");
    is_str(hx_cmd(bob, "ACL WHOAMI"), "default", "auth: bob may run ACL WHOAMI (answered by Redis for the upstream user)");
    ok(!starts(hx_cmd(bob, "ACL CAT"), "NOPERM"), "auth: bob may run ACL CAT");
    is_str(hx_cmd(bob, "SET lc:auth v"), "OK", "auth: bob may write keys");
    is_str(hx_cmd(bob, "CLIENT GETNAME"), "(nil)", "auth: bob may run CLIENT GETNAME");
    ok(strstr(hx_cmd(bob, "INFO server"), "redis_version:") != NULL,
       "auth: bob may run INFO (@dangerous in Redis, but client libraries need it)");

    /* admins may, but never see a secret through CONFIG GET */
    redisContext *who[] = {ops, def};
    for (int w = 0; w < 2; w++) {
        const char *u = w ? "the requirepass user" : "ops (+@admin)";
        hx_buf flat = {0};
        redisReply *r = redisCommand(who[w], "CONFIG GET *");
        ok(r && r->type == REDIS_REPLY_ARRAY && r->elements > 100, "auth: %s may run CONFIG GET *", u);
        flatten(r, &flat);
        ok(!holds_secret(&flat), "auth: CONFIG GET * through hotproxy shows no password to %s", u);
        if (r) freeReplyObject(r);
        hx_buf_reset(&flat);
        r = redisCommand(who[w], "CONFIG GET requirepass masterauth masteruser");
        ok(r && r->type == REDIS_REPLY_ARRAY && r->elements == 6, "auth: CONFIG GET requirepass masterauth masteruser: 3 pairs");
        flatten(r, &flat);
        ok(!holds_secret(&flat) && !memmem(flat.data, flat.len, "someone", 7),
           "auth: ... with their values hidden from %s", u);
        if (r) freeReplyObject(r);
        hx_buf_reset(&flat);
        r = redisCommand(who[w], "HOTPROXY CONFIG GET *");
        ok(r && r->type == REDIS_REPLY_ARRAY && r->elements > 20, "auth: %s may run HOTPROXY CONFIG GET *", u);
        flatten(r, &flat);
        ok(!holds_secret(&flat), "auth: HOTPROXY CONFIG GET * shows no password to %s", u);
        if (r) freeReplyObject(r);
        hx_buf_free(&flat);
    }
    /* inside MULTI: the reply comes in EXEC's array, hidden all the same */
    {
        int fd = hx_connect(p2.port);
        hx_buf b = {0};
        hx_send_str(fd, "AUTH ops ops-Secret-4\r\nMULTI\r\nCONFIG GET requirepass\r\nCONFIG GET masterauth\r\nEXEC\r\n");
        long got = read_n(fd, &b, 0, 5, 10000);
        ok(got == 5 && !holds_secret(&b) && memmem(b.data, b.len, "masterauth", 10) && strstr(b.data, "*2\r\n*2\r\n"),
           "auth: CONFIG GET inside MULTI: no secret in EXEC's reply");
        if (holds_secret(&b)) show("hotproxy", b.data, b.len);
        close(fd);
        hx_buf_free(&b);
    }
    /* RESP3: the reply is a map */
    {
        int fd = hx_connect(p2.port);
        hx_buf b = {0};
        hx_send_str(fd, "HELLO 3 AUTH ops ops-Secret-4\r\nCONFIG GET *pass*\r\nCONFIG GET masterauth\r\n");
        long got = read_n(fd, &b, 0, 3, 10000);
        size_t e = reply_at(&b, 1);
        ok(got == 3 && b.data[e] == '%' && !holds_secret(&b) && memmem(b.data, b.len, "masterauth", 10),
           "auth: RESP3 CONFIG GET *pass* and masterauth: maps, no secret");
        if (holds_secret(&b)) show("hotproxy", b.data + e, b.len - e);
        close(fd);
        hx_buf_free(&b);
    }
    is_str(hx_cmd(ops, "CLIENT KILL USER bob"), "1", "auth: ops may CLIENT KILL (bob's connection)");
    ok(starts(hx_cmd(bob, "PING"), "(no reply"), "auth: ... and bob's connection is gone");
    redisFree(bob);
    redisFree(ops);
    redisFree(def);
    is_int(hx_stop(&p2, 10000), 0, "auth: hotproxy exits 0");
    hx_stop(&r2, 10000);
}

int main(void)
{
    hx_init(600);
    if (hx_redis_start(&redis, 0) != 0 || hx_proxy_start(&proxy, 0, redis.port, NULL) != 0) {
        printf("Bail out! redis-server or hotproxy did not start\n");
        return 1;
    }
    test_error_texts();
    test_subscribe_then_protocol_error();
    test_multi();
    test_tracking_redirect();
    test_redirect_target_not_reused();
    test_unblock();
    test_authorization();
    test_client_list_id_linear();
    test_client_info_fields_as_redis();
    is_int(hx_stop(&proxy, 15000), 0, "hotproxy exits 0");
    hx_stop(&redis, 10000);
    done_testing();
    return exit_status();
}
