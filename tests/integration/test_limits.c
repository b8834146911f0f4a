/*
 * test_limits: malformed requests and the client limits.
 *
 * Every malformed request of Redis' tests/unit/protocol.tcl (and a few more
 * around the same edges) is sent to hotproxy and to redis-server directly, on
 * fresh connections, and the two answers compared byte for byte, including
 * whether the connection was closed.  Then maxclients, the query buffer
 * limit, the output buffer limit for a client that never reads, and the idle
 * timeout, each with a bystander client that must not be affected.
 */
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "tap.h"

static hx_proc redis, proxy;

typedef struct answer {
    hx_buf bytes;
    int closed;
} answer;

/* Read from both until both closed or nothing more for quiet_ms. */
static void read_both(int fa, int fb, answer *a, answer *b, int quiet_ms)
{
    double deadline = hx_now() + quiet_ms / 1000.0;
    while (hx_now() < deadline && (!a->closed || !b->closed)) {
        struct pollfd p[2] = {{a->closed ? -1 : fa, POLLIN, 0}, {b->closed ? -1 : fb, POLLIN, 0}};
        if (poll(p, 2, 50) <= 0) continue;
        answer *ans[2] = {a, b};
        for (int i = 0; i < 2; i++) {
            if (!p[i].revents) continue;
            int st = hx_read_n(p[i].fd, &ans[i]->bytes, 1 << 30, 0);
            if (st == HX_EOF || st == HX_RESET || st == HX_ERROR) ans[i]->closed = 1;
            deadline = hx_now() + quiet_ms / 1000.0; /* something came: wait on */
        }
    }
}

/* Send req (then `tail` repeated until tail_total bytes, for the desync
 * cases) to hotproxy and to Redis; same bytes back and same fate. */
static void same_fate(const char *what, const char *req, size_t len, const char *tail, size_t tail_total,
                      int expect_close, const char *todo)
{
    int fp = hx_connect(proxy.port), fr = hx_connect(redis.port);
    answer a = {{0}, 0}, b = {{0}, 0};
    hx_send(fp, req, len, 5000);
    hx_send(fr, req, len, 5000);
    if (tail) {
        hx_buf t = {0};
        while (t.len < tail_total) hx_buf_append(&t, tail, strlen(tail));
        /* either may close part way: a failed send is expected */
        hx_send(fp, t.data, t.len, 5000);
        hx_send(fr, t.data, t.len, 5000);
        hx_buf_free(&t);
    }
    read_both(fp, fr, &a, &b, expect_close ? 3000 : 500);
    int same = hx_mem_eq(a.bytes.data, a.bytes.len, b.bytes.data, b.bytes.len) && a.closed == b.closed;
    if (todo ? !todo_ok(same, todo, "%s: hotproxy answers as Redis does", what)
             : !ok(same, "%s: hotproxy answers as Redis does", what)) {
        fputs("#   hotproxy '", stdout);
        tap_escape(a.bytes.data, a.bytes.len);
        printf("'%s\n#   redis    '", a.closed ? " then closed" : " (still open)");
        tap_escape(b.bytes.data, b.bytes.len);
        printf("'%s\n", b.closed ? " then closed" : " (still open)");
    }
    if (expect_close >= 0)
        ok(a.closed == expect_close, "%s: the connection is %s", what, expect_close ? "closed" : "kept open");
    close(fp);
    close(fr);
    hx_buf_free(&a.bytes);
    hx_buf_free(&b.bytes);
}
#define SAME(what, lit, close) same_fate((what), (lit), sizeof(lit) - 1, NULL, 0, (close), NULL)

#define OWN(what, lit, want, close) own_fate((what), (lit), sizeof(lit) - 1, (want), (close))

/* Where hotproxy deliberately differs from Redis: its own reply and fate. */
static void own_fate(const char *what, const char *req, size_t len, const char *want, int expect_close)
{
    int fp = hx_connect(proxy.port), fnone = hx_connect(proxy.port);
    answer a = {{0}, 0}, none = {{0}, 1};
    hx_send(fp, req, len, 5000);
    read_both(fp, fnone, &a, &none, expect_close ? 3000 : 500);
    if (!ok(hx_mem_eq(a.bytes.data, a.bytes.len, want, strlen(want)) && a.closed == expect_close, "%s: %s%s", what,
            want, expect_close ? " then closed" : "")) {
        fputs("#   got '", stdout);
        tap_escape(a.bytes.data, a.bytes.len);
        printf("'%s\n", a.closed ? " then closed" : " (still open)");
    }
    close(fp);
    close(fnone);
    hx_buf_free(&a.bytes);
}

static void malformed(void)
{
    /* tests/unit/protocol.tcl */
    SAME("empty query, then PING", "\r\n*1\r\n$4\r\nPING\r\n", 0);
    SAME("negative multibulk length *-10, then PING", "*-10\r\n*1\r\n$4\r\nPING\r\n", 0);
    SAME("out of range multibulk length *3000000000", "*3000000000\r\n", 1);
    SAME("multibulk length *20000000 (waits for the arguments)", "*20000000\r\n", 0);
    SAME("wrong multibulk payload header", "*3\r\n$3\r\nSET\r\n$1\r\nx\r\nfooz\r\n", 1);
    SAME("negative multibulk payload length", "*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$-10\r\n", 1);
    SAME("out of range multibulk payload length $2000000000", "*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$2000000000\r\n", 1);
    SAME("out of range bulk length $3000000000", "*3\r\n$3000000000\r\n", 1);
    SAME("non-number multibulk payload length", "*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$blabla\r\n", 1);
    SAME("multibulk not followed by bulk arguments", "*1\r\nfoo\r\n", 1);
    SAME("generic wrong number of args", "ping x y z\r\n", 0);
    SAME("unbalanced number of quotes", "set \"\"\"test-key\"\"\" test-value\r\nping\r\n", 1);
    same_fate("protocol desync #1 (\\x00 then 'payload'...)", "\0", 1, "payload", 70000, 1, NULL);
    same_fate("protocol desync #2 (*\\x00 then 'payload'...)", "*\0", 2, "payload", 70000, 1, NULL);
    same_fate("protocol desync #3 ($\\x00 then 'payload'...)", "$\0", 2, "payload", 70000, 1, NULL);

    /* the same edges, more of them */
    same_fate("inline request over 64 KB without a newline", "A", 1, "A", 70000, 1, NULL);
    same_fate("multibulk count over 64 KB without \\r", "*1", 2, "1", 70000, 1, NULL);
    same_fate("bulk count over 64 KB without \\r", "*1\r\n$1", 6, "1", 70000, 1, NULL);
    SAME("multibulk length with a leading zero *01", "*01\r\n$4\r\nPING\r\n", 1);
    SAME("multibulk length *+1", "*+1\r\n$4\r\nPING\r\n", 1);
    SAME("multibulk length with a space *1 ", "*1 \r\n$4\r\nPING\r\n", 1);
    SAME("multibulk length *x", "*x\r\n", 1);
    SAME("*0 then PING", "*0\r\n*1\r\n$4\r\nPING\r\n", 0);
    SAME("*-1 then PING", "*-1\r\n*1\r\n$4\r\nPING\r\n", 0);
    SAME("bulk length $-1", "*1\r\n$-1\r\n", 1);
    SAME("bulk length $01", "*1\r\n$01\r\nx\r\n", 1);
    SAME("bulk length $+4", "*1\r\n$+4\r\nPING\r\n", 1);
    SAME("bulk header ':' instead of '$'", "*1\r\n:4\r\nPING\r\n", 1);
    SAME("bulk header is an empty line", "*1\r\n\r\n", 1);
    SAME("bulk header starting with \\r\\r", "*1\r\n\r\r\n", 1);
    SAME("bulk trailer not \\r\\n is skipped unchecked", "*1\r\n$4\r\nPINGxx*1\r\n$4\r\nPING\r\n", 0);
    SAME("PING, then a malformed request: +PONG then the error", "*1\r\n$4\r\nPING\r\n*1\r\nfoo\r\n", 1);
    SAME("GET, then a malformed request: the GET's reply then the error",
         "*2\r\n$3\r\nGET\r\n$9\r\nlim:nokey\r\n*x\r\n*1\r\n$4\r\nPING\r\n", 1);
    SAME("requests after the malformed one are not run", "*1\r\nfoo\r\n*3\r\n$3\r\nSET\r\n$9\r\nlim:after\r\n$1\r\n1\r\n",
         1);
    SAME("... (checked)", "*2\r\n$6\r\nEXISTS\r\n$9\r\nlim:after\r\n", 0);
    SAME("inline unterminated double quote", "SET k \"abc\r\n", 1);
    SAME("inline closing quote followed by a letter", "SET k \"a\"b\r\n", 1);
    SAME("inline unterminated single quote", "SET k 'abc\r\n", 1);
    SAME("inline \\x escapes and an empty argument", "ECHO \"\\x41\\x4a\\xZZ\"\r\nECHO \"\"\r\n", 0);
    SAME("inline tabs between arguments", "ECHO\tx\r\n", 0);
    SAME("a lone \\n", "\n*1\r\n$4\r\nPING\r\n", 0);
    /* every argument empty: the inline parser copied nothing, and the
     * command lookup was handed a null pointer (UBSan aborted) */
    SAME("inline command of only \"\" (empty name), then PING", "\"\"\r\n*1\r\n$4\r\nPING\r\n", 0);
    SAME("inline command of only '' (empty name), then PING", "''\r\n*1\r\n$4\r\nPING\r\n", 0);
    SAME("inline command \"\" \"\" (empty name and argument)", "\"\" \"\"\r\n", 0);
    SAME("multibulk command with an empty name *1 $0", "*1\r\n$0\r\n\r\n*1\r\n$4\r\nPING\r\n", 0);

    /* NUL bytes in headers: Redis looks for \r and \n with strchr, so a
     * NUL hides the line end and Redis waits for ever.  hotproxy sees the
     * line end and answers (README says so): a malformed header is refused
     * at once, an inline command ends its arguments at the NUL. */
    OWN("NUL in the multibulk count *1\\x00\\r\\n", "*1\0\r\n$4\r\nPING\r\n", "-ERR Protocol error: invalid multibulk length\r\n", 1);
    OWN("NUL as the bulk header byte", "*1\r\n\0\r\n", "-ERR Protocol error: expected '$', got ' '\r\n", 1);
    OWN("NUL in the bulk count $4\\x00", "*1\r\n$4\0\r\nPING\r\n", "-ERR Protocol error: invalid bulk length\r\n", 1);
    OWN("NUL in an inline command PING\\x00", "PING\0\r\n", "+PONG\r\n", 0);

    redisContext *c = hx_redis(proxy.port);
    is_str(hx_cmd(c, "PING"), "PONG", "hotproxy is still serving after all of that");
    if (c) redisFree(c);
    const char *n = hx_info_field(proxy.port, "hotproxy", "hotproxy_protocol_errors");
    ok(n && atoi(n) >= 20, "INFO counts hotproxy_protocol_errors (%s)", n ? n : "missing");
}

static void max_clients(void)
{
    hx_proc p;
    if (hx_proxy_start(&p, 0, redis.port, "--maxclients", "5", NULL) != 0) {
        ok(0, "hotproxy --maxclients 5 starts");
        return;
    }
    int fds[5], pongs = 0;
    for (int i = 0; i < 5; i++) {
        hx_buf b = {0};
        fds[i] = hx_connect(p.port);
        hx_send_str(fds[i], "PING\r\n");
        hx_read_replies(fds[i], &b, 1, NULL, 5000);
        pongs += b.len == 7 && !memcmp(b.data, "+PONG\r\n", 7);
        hx_buf_free(&b);
    }
    is_int(pongs, 5, "--maxclients 5: five clients connect and get PONG");

    hx_buf b = {0};
    int six = hx_connect(p.port);
    int st = six >= 0 ? hx_read_eof(six, &b, 5000) : HX_ERROR;
    static const char full[] = "-ERR max number of clients reached\r\n";
    is_mem(b.data, b.len, full, sizeof(full) - 1, "the sixth reads Redis' max clients error");
    ok(st == HX_EOF || st == HX_RESET, "... then the connection is closed (%s)", hx_status_name(st));
    if (six >= 0) close(six);
    hx_buf_reset(&b);

    /* the five are unaffected */
    hx_send_str(fds[4], "ECHO still-here\r\n");
    hx_read_replies(fds[4], &b, 1, NULL, 5000);
    is_mem(b.data, b.len, "$10\r\nstill-here\r\n", 17, "the five connected clients are unaffected");
    hx_buf_reset(&b);

    /* one leaves (QUIT, wait for the close): a newcomer gets its place */
    hx_send_str(fds[0], "QUIT\r\n");
    hx_read_eof(fds[0], &b, 5000);
    close(fds[0]);
    hx_buf_reset(&b);
    int newcomer = hx_connect(p.port);
    hx_send_str(newcomer, "PING\r\n");
    hx_read_replies(newcomer, &b, 1, NULL, 5000);
    is_mem(b.data, b.len, "+PONG\r\n", 7, "after one client quits, a new one is accepted");
    hx_buf_reset(&b);
    hx_send_str(newcomer, "INFO hotproxy\r\n");
    hx_read_replies(newcomer, &b, 1, NULL, 5000);
    hx_buf_append(&b, "", 1);
    ok(strstr(b.data, "hotproxy_rejected_connections:1\r\n") != NULL, "INFO counts one rejected connection");
    hx_buf_free(&b);
    close(newcomer);
    for (int i = 1; i < 5; i++) close(fds[i]);
    is_int(hx_stop(&p, 15000), 0, "hotproxy --maxclients 5 exits 0 on SIGTERM");
}

static void query_buffer_limit(void)
{
    hx_proc p;
    if (hx_proxy_start(&p, 0, redis.port, "--client-query-buffer-limit", "1mb", NULL) != 0) {
        ok(0, "hotproxy --client-query-buffer-limit 1mb starts");
        return;
    }
    redisContext *bystander = hx_redis(p.port);
    is_str(hx_cmd(bystander, "SET lim:qb before"), "OK", "a bystander client works before");

    int fd = hx_connect(p.port);
    static const char hdr[] = "*3\r\n$3\r\nSET\r\n$6\r\nlim:qb\r\n$10000000\r\n";
    hx_send(fd, hdr, sizeof(hdr) - 1, 5000);
    char *chunk = malloc(2 * 1024 * 1024);
    memset(chunk, 'q', 2 * 1024 * 1024);
    hx_send(fd, chunk, 2 * 1024 * 1024, 10000); /* may fail once it is closed */
    free(chunk);
    hx_buf b = {0};
    int st = hx_read_eof(fd, &b, 10000);
    ok(st == HX_EOF || st == HX_RESET, "a 2 MB start of a 10 MB bulk, limit 1mb: disconnected (%s)", hx_status_name(st));
    is_int(b.len, 0, "... without a reply, as Redis does");
    close(fd);
    hx_buf_free(&b);

    is_str(hx_cmd(bystander, "GET lim:qb"), "before", "the bystander is unaffected and the SET never ran");
    char *v = malloc(512 * 1024);
    memset(v, 'v', 512 * 1024);
    redisReply *r = bystander ? redisCommand(bystander, "SET lim:qb2 %b", v, (size_t)512 * 1024) : NULL;
    ok(r && r->type == REDIS_REPLY_STATUS, "a 512 KB value under the limit still goes through");
    if (r) freeReplyObject(r);
    free(v);

    /* a 5 MB pipeline of small commands: read as it is parsed, never over */
    hx_buf pipe = {0}, out = {0};
    for (int i = 0; i < 120000; i++) {
        char key[32];
        snprintf(key, sizeof(key), "lim:p%d", i % 1000);
        const char *argv[] = {"SET", key, "0123456789"};
        hx_buf_command(&pipe, 3, argv, NULL);
    }
    long got = 0;
    int pst = hx_roundtrip(p.port, pipe.data, pipe.len, 120000, &out, 60000);
    got = hx_count_replies(out.data, out.len, NULL);
    ok(pst == HX_OK && got == 120000, "a %zu-byte pipeline of small SETs is not cut by the 1mb limit (%ld replies, %s)",
       pipe.len, got, hx_status_name(pst));
    hx_buf_free(&pipe);
    hx_buf_free(&out);

    const char *n = hx_info_field(p.port, "hotproxy", "hotproxy_query_buffer_limit_disconnects");
    is_str(n, "1", "INFO counts one query buffer limit disconnect");
    if (bystander) redisFree(bystander);
    is_int(hx_stop(&p, 15000), 0, "hotproxy --client-query-buffer-limit 1mb exits 0 on SIGTERM");
}

static void output_buffer_limit(void)
{
    hx_proc p;
    if (hx_proxy_start(&p, 0, redis.port, "--client-output-buffer-limit", "1mb", NULL) != 0) {
        ok(0, "hotproxy --client-output-buffer-limit 1mb starts");
        return;
    }
    enum { VAL = 100 * 1024, GETS = 300 };
    redisContext *c = hx_redis(p.port);
    char *v = malloc(VAL);
    memset(v, 'o', VAL);
    redisReply *r = c ? redisCommand(c, "SET lim:big %b", v, (size_t)VAL) : NULL;
    ok(r && r->type == REDIS_REPLY_STATUS, "SET a 100 KB value");
    if (r) freeReplyObject(r);
    free(v);

    /* the slow reader asks for 30 MB and reads nothing */
    hx_buf req = {0};
    for (int i = 0; i < GETS; i++) {
        const char *argv[] = {"GET", "lim:big"};
        hx_buf_command(&req, 2, argv, NULL);
    }
    int slow = hx_connect(p.port);
    hx_send(slow, req.data, req.len, 5000);
    hx_buf_free(&req);

    /* meanwhile another client works normally */
    int good = 0;
    for (int i = 0; i < 200; i++) {
        char val[32];
        snprintf(val, sizeof(val), "w%d", i);
        good += !strcmp(hx_cmd(c, "SET lim:w%d %s", i, val), "OK");
        good += !strcmp(hx_cmd(c, "GET lim:w%d", i), val);
    }
    is_int(good, 400, "a normal client gets all its 400 replies meanwhile");

    const char *n = NULL;
    double deadline = hx_now() + 15;
    while (hx_now() < deadline) {
        n = hx_info_field(p.port, "hotproxy", "hotproxy_output_buffer_limit_disconnects");
        if (n && atoi(n) >= 1) break;
        hx_sleep_ms(100);
    }
    ok(n && atoi(n) == 1, "the slow reader is disconnected for its output buffer (INFO: %s)", n ? n : "missing");
    hx_buf got = {0};
    int st = hx_read_eof(slow, &got, 15000);
    size_t full = (size_t)GETS * (VAL + 2 + 8 + 2);
    ok((st == HX_EOF || st == HX_RESET) && got.len < full,
       "the slow reader finds its connection closed after %zu of %zu bytes (%s)", got.len, full, hx_status_name(st));
    hx_buf_free(&got);
    close(slow);
    is_str(hx_cmd(c, "ECHO fine"), "fine", "the normal client is still connected");
    if (c) redisFree(c);
    is_int(hx_stop(&p, 15000), 0, "hotproxy --client-output-buffer-limit 1mb exits 0 on SIGTERM");
}

/* The proxy's resident memory in MB, from /proc. */
static long rss_mb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof(line), f))
        if (!strncmp(line, "VmRSS:", 6)) kb = atol(line + 6);
    if (f) fclose(f);
    return kb < 0 ? -1 : kb / 1024;
}

/* Replies that complete while an earlier command of the same client is
 * still running upstream wait in the proxy; they count against the output
 * limit like any other reply, or the limit bounds nothing: a client asking
 * for a 100 KB hot key 500 times behind a slow command would make hotproxy
 * hold 50 MB with a 1 MB limit (Redis stops at the limit).  The L1 answers
 * the GETs at once; a 2 s script holds the head of the line. */
static void output_limit_behind_slow_command(void)
{
    enum { VAL = 100 * 1024, GETS = 500 };
    hx_proc p;
    if (hx_proxy_start(&p, 0, redis.port, "--client-output-buffer-limit", "1mb", "--l1-ttl", "60000", NULL) != 0) {
        ok(0, "hotproxy --client-output-buffer-limit 1mb --l1-ttl 60000 starts");
        return;
    }
    /* the L1 caches once its invalidation link to Redis is up */
    const char *link = NULL;
    for (double t0 = hx_now(); hx_now() - t0 < 10; hx_sleep_ms(50)) {
        link = hx_info_field(p.port, "hotproxy", "hotproxy_l1_tracking");
        if (link && !strcmp(link, "up")) break;
    }
    redisContext *c = hx_redis(p.port);
    char *v = malloc(VAL);
    memset(v, 'h', VAL);
    redisReply *r = c ? redisCommand(c, "SET lim:hot %b", v, (size_t)VAL) : NULL;
    if (r) freeReplyObject(r);
    free(v);
    int hits = 0;
    for (int i = 0; i < 5; i++) {
        r = c ? redisCommand(c, "GET lim:hot") : NULL;
        hits += r && r->type == REDIS_REPLY_STRING && r->len == VAL;
        if (r) freeReplyObject(r);
    }
    const char *entries = hx_info_field(p.port, "hotproxy", "hotproxy_l1_entries");
    ok(hits == 5 && entries && atoi(entries) >= 1, "a 100 KB key read five times is in the L1 (entries %s)",
       entries ? entries : "missing");
    if (c) redisFree(c);

    long before = rss_mb(p.pid);
    hx_buf req = {0};
    const char *script = "local t=redis.call('TIME') local s=t[1]*1000000+t[2] "
                         "repeat local n=redis.call('TIME') until (n[1]*1000000+n[2])-s > 2000000 return 1";
    const char *eval[] = {"EVAL", script, "0"};
    hx_buf_command(&req, 3, eval, NULL);
    for (int i = 0; i < GETS; i++) {
        const char *get[] = {"GET", "lim:hot"};
        hx_buf_command(&req, 2, get, NULL);
    }
    int fd = hx_connect(p.port);
    hx_send(fd, req.data, req.len, 5000);
    hx_buf_free(&req);
    hx_sleep_ms(1000); /* the script runs for 2 s */
    long during = rss_mb(p.pid);
    diag("hotproxy RSS %ld MB before, %ld MB while the script holds the line (%d x 100 KB replies pending)", before,
         during, GETS);
    ok(before >= 0 && during - before < 25,
       "regression (replies waiting behind an unanswered command were not counted against "
       "client-output-buffer-limit): they stay bounded by it (+%ld MB)",
       during - before);
    hx_buf got = {0};
    hx_read_eof(fd, &got, 10000);
    hx_buf_free(&got);
    close(fd);
    redisContext *c2 = hx_redis(p.port);
    is_str(hx_cmd(c2, "ECHO fine"), "fine", "hotproxy still serves other clients");
    if (c2) redisFree(c2);
    is_int(hx_stop(&p, 15000), 0, "hotproxy exits 0 on SIGTERM");
}

static void idle_timeout(void)
{
    hx_proc p;
    if (hx_proxy_start(&p, 0, redis.port, "--timeout", "1", NULL) != 0) {
        ok(0, "hotproxy --timeout 1 starts");
        return;
    }
    int idle = hx_connect(p.port), busy = hx_connect(p.port), waiting = hx_connect(p.port);
    hx_buf b = {0};
    hx_send_str(idle, "PING\r\n");
    hx_read_replies(idle, &b, 1, NULL, 5000);
    is_mem(b.data, b.len, "+PONG\r\n", 7, "--timeout 1: a client does one PING");
    hx_buf_reset(&b);
    /* one waits on a command that takes 2.5 s: busy, not idle */
    static const char wait_cmd[] = "*3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$4\r\n2500\r\n";
    hx_send(waiting, wait_cmd, sizeof(wait_cmd) - 1, 5000);

    double t0 = hx_now();
    int pongs = 0, pings = 0, idle_closed = 0;
    double idle_closed_at = 0;
    while (hx_now() - t0 < 3.5) {
        hx_send_str(busy, "PING\r\n");
        pings++;
        hx_buf r = {0};
        hx_read_replies(busy, &r, 1, NULL, 2000);
        pongs += r.len == 7 && !memcmp(r.data, "+PONG\r\n", 7);
        hx_buf_free(&r);
        if (!idle_closed) {
            int st = hx_read_eof(idle, &b, 300);
            if (st == HX_EOF || st == HX_RESET) {
                idle_closed = 1;
                idle_closed_at = hx_now() - t0;
            }
        } else {
            hx_sleep_ms(300);
        }
    }
    ok(idle_closed, "the idle client is closed (after %.1f s)", idle_closed_at);
    ok(idle_closed && idle_closed_at >= 0.5, "... not before it was idle for about a second");
    is_int(b.len, 0, "... without a reply");
    is_int(pongs, pings, "a client sending PING every 0.3 s is never closed (%d PONGs)", pongs);
    hx_buf_reset(&b);
    int st = hx_read_replies(waiting, &b, 1, NULL, 5000);
    is_mem(b.data, b.len, ":0\r\n", 4, "a client waiting 2.5 s on WAIT is not closed as idle: it gets its reply (%s)",
           hx_status_name(st));

    /* Redis restarts a client's idle clock when it writes a reply; a client
     * whose command took longer than `timeout` may send the next one a
     * moment after the reply. */
    int slowcmd = hx_connect(p.port);
    static const char wait15[] = "*3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$4\r\n1500\r\n";
    hx_buf_reset(&b);
    hx_send(slowcmd, wait15, sizeof(wait15) - 1, 5000);
    hx_read_replies(slowcmd, &b, 1, NULL, 5000);
    hx_sleep_ms(300);
    hx_send_str(slowcmd, "PING\r\n");
    st = hx_read_replies(slowcmd, &b, 1, NULL, 5000);
    if (!ok(hx_mem_eq(b.data, b.len, ":0\r\n+PONG\r\n", 11),
            "regression (a reply did not restart the idle clock, as it does in Redis): "
            "WAIT 1 1500 then, 0.3 s after its reply, PING: still connected (%s)", hx_status_name(st))) {
        fputs("#   got '", stdout);
        tap_escape(b.data, b.len);
        fputs("'\n", stdout);
    }
    close(slowcmd);

    const char *n = hx_info_field(p.port, "hotproxy", "hotproxy_idle_timeouts");
    ok(n && atoi(n) >= 1, "INFO counts hotproxy_idle_timeouts (%s)", n ? n : "missing");
    hx_buf_free(&b);
    close(idle);
    close(busy);
    close(waiting);
    is_int(hx_stop(&p, 15000), 0, "hotproxy --timeout 1 exits 0 on SIGTERM");
}

int main(void)
{
    hx_init(280);
    if (hx_redis_start(&redis, 0) != 0 || hx_proxy_start(&proxy, 0, redis.port, NULL) != 0) {
        plan(1);
        ok(0, "redis-server and hotproxy start");
        return exit_status();
    }
    malformed();
    max_clients();
    query_buffer_limit();
    output_buffer_limit();
    output_limit_behind_slow_command();
    idle_timeout();
    is_int(hx_stop(&proxy, 15000), 0, "hotproxy exits 0 on SIGTERM");
    hx_stop(&redis, 10000);
    done_testing();
    return exit_status();
}
