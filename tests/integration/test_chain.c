/*
 * test_chain: a client's output is a chain (px_client.c): small replies
 * copied, large ones written from where they already sit -- an L1 hit's
 * value, a forwarded reply in the upstream's read buffer, a reply held for
 * an earlier one -- with writev.  What can go wrong there: a piece written
 * twice or skipped when a write stops half way, pieces out of order, and
 * bytes freed or written over while the client still has them queued.
 *
 * Each case pipelines large and small replies in one go to a client that
 * reads slowly (small reads, so the proxy's writes stop half way many
 * times), and compares every byte it gets with what Redis would send.  The
 * values are a byte pattern with CR and LF in it, so a shifted or doubled
 * chunk is caught, not only a wrong length.  The last case drops the L1
 * entry (a write through the proxy) while a client still has its value
 * queued: the client gets the old value whole, as a read that raced with the
 * write, and the sanitizer build sees the bytes freed after, not before.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "tap.h"

#define BIG (1024 * 1024 + 7) /* well above the 4 KB from which replies are referenced */

static hx_proc redis, proxy, passthru;

static char *pattern(size_t len, unsigned seed)
{
    char *v = malloc(len);
    if (!v) abort();
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < len; i++) {
        x = x * 1103515245u + 12345u;
        v[i] = (char)(x >> 16);
    }
    return v;
}

static void bulk(hx_buf *b, const char *v, size_t len)
{
    hx_buf_printf(b, "$%zu\r\n", len);
    hx_buf_append(b, v, len);
    hx_buf_append(b, "\r\n", 2);
}

static int set_value(int port, const char *key, const char *v, size_t len)
{
    const char *argv[] = {"SET", key, v};
    size_t lens[] = {3, strlen(key), len};
    hx_buf req = {0}, out = {0};
    hx_buf_command(&req, 3, argv, lens);
    int st = hx_roundtrip(port, req.data, req.len, 1, &out, 60000);
    int good = st == HX_OK && out.len == 5 && !memcmp(out.data, "+OK\r\n", 5);
    hx_buf_free(&req);
    hx_buf_free(&out);
    return good ? 0 : -1;
}

/* Read `want` bytes a little at a time (4 KB reads, a pause every 64 KB), so
 * the proxy's socket fills and its writes stop half way through pieces. */
static int read_slowly(int fd, hx_buf *b, size_t want, int timeout_ms)
{
    size_t start = b->len;
    double deadline = hx_now() + timeout_ms / 1000.0;
    while (b->len - start < want) {
        size_t chunk = want - (b->len - start);
        if (chunk > 4096) chunk = 4096;
        int st = hx_read_n(fd, b, chunk, (int)((deadline - hx_now()) * 1000));
        if (st != HX_OK) return st;
        if (((b->len - start) & 0xffff) < 4096) hx_sleep_ms(1);
    }
    return HX_OK;
}

/* Compare what came with what was expected; say where they part. */
static int same_stream(const hx_buf *got, const hx_buf *want, const char *what)
{
    if (got->len == want->len && !memcmp(got->data, want->data, want->len)) return 1;
    size_t i = 0, n = got->len < want->len ? got->len : want->len;
    while (i < n && got->data[i] == want->data[i]) i++;
    diag("%s: %zu bytes, %zu expected, first difference at byte %zu", what, got->len, want->len, i);
    return 0;
}

/* A small receive buffer makes the proxy's writes stop half way sooner. */
static int slow_client(int port)
{
    int fd = hx_connect(port);
    int small = 16 * 1024;
    if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    return fd;
}

/*
 * L1 hits of a large value, between small replies, in one pipeline: each
 * hit is written from the L1's bytes, the small ones from the copy buffer,
 * in request order, whatever the writes' boundaries.  DBSIZE goes to Redis
 * and comes back later, so the hits right behind it complete first and wait
 * in their requests, still referenced.
 */
static void l1_hits(const char *v, size_t len)
{
    redisContext *rc = hx_redis(proxy.port);
    /* the L1 fills once its invalidation link is up */
    ok(hx_info_wait(rc, "hotproxy_cache", "hotproxy_l1_tracking", "up", 20000) == 0, "l1: the L1's tracking is up");
    ok(set_value(proxy.port, "chain:l1", v, len) == 0, "l1: a %zu-byte value set through the proxy", len);
    ok(hx_l1_hit(rc, "chain:l1", 20), "l1: the value is answered from the L1");
    long long keys = atoll(hx_cmd(rc, "DBSIZE"));
    long long hits0 = hx_info_num(rc, "hotproxy_cache", "hotproxy_l1_hits");

    hx_buf req = {0}, want = {0}, got = {0};
    enum { ROUNDS = 12 };
    for (int i = 0; i < ROUNDS; i++) {
        hx_buf_printf(&req, "*2\r\n$3\r\nGET\r\n$8\r\nchain:l1\r\n");
        bulk(&want, v, len);
        if (i % 3 == 0) {
            hx_buf_printf(&req, "*1\r\n$6\r\nDBSIZE\r\n");
            hx_buf_printf(&want, ":%lld\r\n", keys);
        }
        hx_buf_printf(&req, "*2\r\n$4\r\nECHO\r\n$2\r\n%02d\r\n", i);
        hx_buf_printf(&want, "$2\r\n%02d\r\n", i);
    }
    int fd = slow_client(proxy.port);
    int st = hx_send(fd, req.data, req.len, 10000);
    if (st == 0) st = read_slowly(fd, &got, want.len, 60000);
    ok(st == HX_OK && same_stream(&got, &want, "l1"),
       "l1: %d hits of %zu bytes between small replies, read slowly, arrive whole and in order", ROUNDS, len);
    ok(hx_read_n(fd, &got, 1, 200) == HX_TIMEOUT, "l1: nothing after them");
    is_int(hx_info_num(rc, "hotproxy_cache", "hotproxy_l1_hits") - hits0, ROUNDS, "l1: every GET was an L1 hit");
    close(fd);
    hx_buf_free(&req);
    hx_buf_free(&want);
    hx_buf_free(&got);
    redisFree(rc);
}

/* This client's omem in CLIENT LIST (its output not yet written), -1 if not found. */
static long long omem_of(redisContext *rc, const char *name)
{
    redisReply *r = redisCommand(rc, "CLIENT LIST");
    long long omem = -1;
    if (r && r->type == REDIS_REPLY_STRING) {
        char needle[64];
        snprintf(needle, sizeof(needle), " name=%s ", name);
        const char *line = strstr(r->str, needle);
        const char *o = line ? strstr(line, " omem=") : NULL;
        if (o) omem = atoll(o + 6);
    }
    if (r) freeReplyObject(r);
    return omem;
}

/*
 * Forwarded large replies (the L1 off): written from the upstream
 * connection's read buffer.  While the slow client still has them queued,
 * another client's replies come in on the same upstream connection: they go
 * to a new block, never over bytes a client still has queued.  Two values
 * alternate, so a reply written from the wrong place shows too.
 */
static void forwarded(const char *v1, const char *v2, const char *v3, size_t len)
{
    ok(set_value(passthru.port, "chain:f1", v1, len) == 0 && set_value(passthru.port, "chain:f2", v2, len) == 0 &&
           set_value(passthru.port, "chain:f3", v3, len) == 0,
       "forwarded: three %zu-byte values set", len);
    redisContext *rc = hx_redis(passthru.port);
    hx_buf req = {0}, want = {0}, got = {0};
    enum { ROUNDS = 60 }; /* 12 MB: more than the kernel buffers (4 MB each way here) hold */
    hx_buf_printf(&req, "*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n$4\r\nslow\r\n");
    hx_buf_printf(&want, "+OK\r\n");
    for (int i = 0; i < ROUNDS; i++) {
        hx_buf_printf(&req, "*2\r\n$3\r\nGET\r\n$8\r\nchain:f%d\r\n", 1 + i % 2);
        bulk(&want, i % 2 ? v2 : v1, len);
        hx_buf_printf(&req, "*2\r\n$4\r\nECHO\r\n$2\r\n%02d\r\n", i);
        hx_buf_printf(&want, "$2\r\n%02d\r\n", i);
    }
    int fd = slow_client(passthru.port);
    int st = hx_send(fd, req.data, req.len, 10000);
    /* wait until the proxy holds some of them, then read other replies through the same connection upstream */
    long long omem = -1;
    double deadline = hx_now() + 20;
    while ((omem = omem_of(rc, "slow")) < (long long)len && hx_now() < deadline) hx_sleep_ms(10);
    ok(omem >= (long long)len, "forwarded: the proxy has %lld bytes queued for the slow client", omem);
    int others = 0;
    for (int i = 0; i < 4; i++) {
        redisReply *r = redisCommand(rc, "GET chain:f3");
        others += r && r->type == REDIS_REPLY_STRING && r->len == len && !memcmp(r->str, v3, len);
        if (r) freeReplyObject(r);
    }
    is_int(others, 4, "forwarded: another client meanwhile reads another value whole, 4 times");
    if (st == 0) st = read_slowly(fd, &got, want.len, 60000);
    ok(st == HX_OK && same_stream(&got, &want, "forwarded"),
       "forwarded: %d replies of %zu bytes between small ones, read slowly, arrive whole and in order", ROUNDS, len);
    ok(hx_read_n(fd, &got, 1, 200) == HX_TIMEOUT, "forwarded: nothing after them");
    close(fd);
    hx_buf_free(&req);
    hx_buf_free(&want);
    hx_buf_free(&got);
    redisFree(rc);
}

/*
 * The L1 entry goes (a SET through the proxy invalidates it) while a client
 * still has its value queued and unread: that client gets the old value
 * whole, as a read that raced with the write; everyone after gets the new.
 */
static void invalidated_while_queued(const char *old, const char *new, size_t len)
{
    redisContext *rc = hx_redis(proxy.port);
    ok(set_value(proxy.port, "chain:inv", old, len) == 0 && hx_l1_hit(rc, "chain:inv", 20),
       "invalidated: the old value is in the L1");
    enum { N = 12 }; /* 12 MB: more than the kernel buffers hold */
    hx_buf req = {0}, want = {0}, got = {0};
    hx_buf_printf(&req, "*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n$4\r\nslow\r\n");
    hx_buf_printf(&want, "+OK\r\n");
    for (int i = 0; i < N; i++) {
        hx_buf_printf(&req, "*2\r\n$3\r\nGET\r\n$9\r\nchain:inv\r\n");
        bulk(&want, old, len);
    }
    int fd = slow_client(proxy.port);
    ok(hx_send(fd, req.data, req.len, 10000) == 0, "invalidated: %d GETs sent, nothing read", N);
    /* the proxy holds most of it: its socket to the client is full */
    long long omem = -1;
    double deadline = hx_now() + 20;
    while ((omem = omem_of(rc, "slow")) < (long long)len && hx_now() < deadline) hx_sleep_ms(10);
    ok(omem >= (long long)len, "invalidated: the proxy has %lld bytes queued for the client (CLIENT LIST omem)", omem);

    ok(set_value(proxy.port, "chain:inv", new, len) == 0, "invalidated: a SET through the proxy drops the entry");
    hx_buf now = {0};
    const char *get[] = {"GET", "chain:inv"};
    size_t getlen[] = {3, 9};
    hx_buf greq = {0}, gwant = {0};
    hx_buf_command(&greq, 2, get, getlen);
    bulk(&gwant, new, len);
    ok(hx_roundtrip(proxy.port, greq.data, greq.len, 1, &now, 30000) == HX_OK && same_stream(&now, &gwant, "new"),
       "invalidated: a new reader gets the new value");

    int st = read_slowly(fd, &got, want.len, 60000);
    ok(st == HX_OK && same_stream(&got, &want, "queued"),
       "invalidated: the slow client gets the old value %d times, whole (its reads raced with the write)", N);
    close(fd);
    hx_buf_free(&req);
    hx_buf_free(&want);
    hx_buf_free(&got);
    hx_buf_free(&now);
    hx_buf_free(&greq);
    hx_buf_free(&gwant);
    redisFree(rc);
}

int main(void)
{
    hx_init(280);
    plan(19);
    if (hx_redis_start(&redis, 0) != 0 ||
        hx_proxy_start(&proxy, 0, redis.port, "--l1-max-entry-size", "4mb", NULL) != 0 ||
        hx_proxy_start(&passthru, 0, redis.port, "--l1", "no", NULL) != 0) {
        ok(0, "redis-server and two hotproxies start");
        return exit_status();
    }
    char *a = pattern(BIG, 1), *b = pattern(BIG, 2), *c = pattern(BIG, 3);
    l1_hits(a, BIG);
    /* under 1 MB, so the upstream keeps its read buffer between replies
     * (a larger one is given back once empty) and reads into it again */
    forwarded(a, b, c, 200 * 1000 + 3);
    invalidated_while_queued(a, b, BIG);
    free(a);
    free(b);
    free(c);
    /* under the sanitizers, a use after free or a leak of those bytes fails the exit */
    is_int(hx_stop(&proxy, 15000), 0, "hotproxy exits 0 on SIGTERM");
    is_int(hx_stop(&passthru, 15000), 0, "hotproxy --l1 no exits 0 on SIGTERM");
    hx_stop(&redis, 10000);
    return exit_status();
}
