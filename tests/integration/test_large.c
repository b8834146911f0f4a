/*
 * test_large: large values go through whole, and proto-max-bulk-len is
 * enforced the way Redis enforces it.
 *
 * Values are a byte pattern (every byte value, CR and LF included) compared
 * in full, so a dropped, doubled or shifted chunk is caught, not only a
 * wrong length.  The 100 MB value is written and read over raw sockets: the
 * test's own buffering stays linear and the run bounded under ASan.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "tap.h"

static hx_proc redis, proxy;

static char *pattern(size_t len, unsigned seed)
{
    char *v = malloc(len ? len : 1);
    if (!v) abort();
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < len; i++) {
        x = x * 1103515245u + 12345u;
        v[i] = (char)(x >> 16);
    }
    return v;
}

/* Where two buffers first differ, for the diagnostics. */
static size_t first_diff(const char *a, const char *b, size_t n)
{
    size_t i = 0;
    while (i < n && a[i] == b[i]) i++;
    return i;
}

static int send_set(int fd, const char *key, const char *v, size_t len)
{
    hx_buf h = {0};
    hx_buf_printf(&h, "*3\r\n$3\r\nSET\r\n$%zu\r\n%s\r\n$%zu\r\n", strlen(key), key, len);
    int rc = hx_send(fd, h.data, h.len, 60000) || hx_send(fd, v, len, 60000) || hx_send(fd, "\r\n", 2, 10000);
    hx_buf_free(&h);
    return rc ? -1 : 0;
}

/* GET key on port; 1 if the reply is exactly the bulk of v. */
static int get_matches(int port, const char *key, const char *v, size_t len, const char *who)
{
    int fd = hx_connect(port);
    hx_buf req = {0}, r = {0};
    hx_buf_printf(&req, "*2\r\n$3\r\nGET\r\n$%zu\r\n%s\r\n", strlen(key), key);
    char head[32];
    int hl = snprintf(head, sizeof(head), "$%zu\r\n", len);
    size_t want = (size_t)hl + len + 2;
    hx_buf_reserve(&r, want + 65536);
    double t0 = hx_now();
    int st = hx_send(fd, req.data, req.len, 10000) == 0 ? hx_read_n(fd, &r, want, 120000) : HX_ERROR;
    int good = st == HX_OK && r.len == want && !memcmp(r.data, head, (size_t)hl) &&
               !memcmp(r.data + hl, v, len) && !memcmp(r.data + hl + len, "\r\n", 2);
    if (!good) {
        diag("GET %s from %s: %s, %zu of %zu bytes", key, who, hx_status_name(st), r.len, want);
        if (r.len >= (size_t)hl + len)
            diag("  first differing value byte: %zu", first_diff(r.data + hl, v, len));
        else if (r.len)
            tap_escape(r.data, r.len < 100 ? r.len : 100);
    } else {
        diag("GET of %zu bytes from %s: %.2f s", len, who, hx_now() - t0);
    }
    /* nothing after the reply */
    if (good && hx_read_n(fd, &r, 1, 100) != HX_TIMEOUT) {
        diag("extra bytes after the GET reply");
        good = 0;
    }
    close(fd);
    hx_buf_free(&req);
    hx_buf_free(&r);
    return good;
}

static void big_value(size_t len, const char *key, unsigned seed)
{
    char *v = pattern(len, seed);
    int fd = hx_connect(proxy.port);
    hx_buf r = {0};
    double t0 = hx_now();
    int st = send_set(fd, key, v, len) == 0 ? hx_read_replies(fd, &r, 1, NULL, 120000) : HX_ERROR;
    ok(st == HX_OK && r.len == 5 && !memcmp(r.data, "+OK\r\n", 5), "SET of %zu bytes through hotproxy: +OK (%.2f s)",
       len, hx_now() - t0);
    close(fd);
    hx_buf_free(&r);
    ok(get_matches(redis.port, key, v, len, "redis directly"), "Redis holds the %zu-byte value exactly", len);
    ok(get_matches(proxy.port, key, v, len, "hotproxy"), "GET of %zu bytes through hotproxy returns it exactly", len);
    redisContext *c = hx_redis(proxy.port);
    is_str(hx_cmd(c, "DEL %s", key), "1", "DEL of the large value");
    if (c) redisFree(c);
    free(v);
}

static void hiredis_value(size_t len)
{
    char *v = pattern(len, 7);
    redisContext *c = hx_redis(proxy.port);
    redisReply *r = c ? redisCommand(c, "SET large:hiredis %b", v, len) : NULL;
    ok(r && r->type == REDIS_REPLY_STATUS, "hiredis SET of %zu bytes", len);
    if (r) freeReplyObject(r);
    r = c ? redisCommand(c, "GET large:hiredis") : NULL;
    ok(r && r->type == REDIS_REPLY_STRING && r->len == len && !memcmp(r->str, v, len),
       "hiredis GET returns the %zu bytes in order", len);
    if (r) freeReplyObject(r);
    r = c ? redisCommand(c, "STRLEN large:hiredis") : NULL;
    ok(r && r->type == REDIS_REPLY_INTEGER && r->integer == (long long)len, "STRLEN is %zu", len);
    if (r) freeReplyObject(r);
    if (c) redisFree(c);
    free(v);
}

static void bulk_limit(void)
{
    hx_proc small;
    if (hx_proxy_start(&small, 0, redis.port, "--proto-max-bulk-len", "1mb", NULL) != 0) {
        ok(0, "hotproxy --proto-max-bulk-len 1mb starts");
        return;
    }
    const size_t mb = 1024 * 1024;
    char *v = pattern(mb + 1, 3);

    /* exactly the limit: accepted */
    int fd = hx_connect(small.port);
    hx_buf r = {0};
    int st = send_set(fd, "large:limit", v, mb) == 0 ? hx_read_replies(fd, &r, 1, NULL, 30000) : HX_ERROR;
    ok(st == HX_OK && r.len == 5 && !memcmp(r.data, "+OK\r\n", 5), "a bulk of exactly proto-max-bulk-len is accepted");
    close(fd);
    hx_buf_reset(&r);
    ok(get_matches(small.port, "large:limit", v, mb, "hotproxy 1mb"), "... and reads back intact");

    /* one byte over: the header alone is refused, then the connection closes */
    static const char over_hdr[] = "*3\r\n$3\r\nSET\r\n$11\r\nlarge:limit\r\n$1048577\r\n";
    static const char want[] = "-ERR Protocol error: invalid bulk length\r\n";
    fd = hx_connect(small.port);
    hx_send(fd, over_hdr, sizeof(over_hdr) - 1, 5000);
    st = hx_read_eof(fd, &r, 10000);
    is_mem(r.data, r.len, want, sizeof(want) - 1, "a bulk of proto-max-bulk-len + 1 gets Redis' error");
    ok(st == HX_EOF || st == HX_RESET, "... and the connection is closed (%s)", hx_status_name(st));
    close(fd);
    hx_buf_reset(&r);

    /* the same with the whole value already sent behind the header */
    fd = hx_connect(small.port);
    send_set(fd, "large:limit", v, mb + 1);
    st = hx_read_eof(fd, &r, 10000);
    is_mem(r.data, r.len, want, sizeof(want) - 1, "header and 1mb+1 of data in one go: the same error");
    ok(st == HX_EOF || st == HX_RESET, "... and the connection is closed (%s)", hx_status_name(st));
    close(fd);
    hx_buf_reset(&r);

    /* Redis with the same limit answers the same */
    redisContext *d = hx_redis(redis.port);
    is_str(hx_cmd(d, "CONFIG SET proto-max-bulk-len 1mb"), "OK", "Redis: CONFIG SET proto-max-bulk-len 1mb");
    fd = hx_connect(redis.port);
    hx_send(fd, over_hdr, sizeof(over_hdr) - 1, 5000);
    st = hx_read_eof(fd, &r, 10000);
    is_mem(r.data, r.len, want, sizeof(want) - 1, "Redis itself answers the over-limit bulk with the same bytes");
    close(fd);
    hx_buf_free(&r);
    hx_cmd(d, "CONFIG SET proto-max-bulk-len 512mb");
    if (d) redisFree(d);

    redisContext *c = hx_redis(small.port);
    is_str(hx_cmd(c, "GET large:nokey"), "(nil)", "the limited hotproxy still serves other connections");
    if (c) redisFree(c);
    free(v);
    is_int(hx_stop(&small, 15000), 0, "hotproxy --proto-max-bulk-len 1mb exits 0 on SIGTERM");
}

int main(void)
{
    hx_init(280);
    plan(26);
    if (hx_redis_start(&redis, 0) != 0 || hx_proxy_start(&proxy, 0, redis.port, NULL) != 0) {
        ok(0, "redis-server and hotproxy start");
        return exit_status();
    }
    hiredis_value(1024 * 1024);
    big_value(1024 * 1024, "large:1mb", 1);
    big_value(100 * 1024 * 1024, "large:100mb", 2);
    /* a value crossing the proxy's read chunk (16 KB) by one byte */
    big_value(16 * 1024 + 1, "large:chunk", 3);
    bulk_limit();
    is_int(hx_stop(&proxy, 15000), 0, "hotproxy exits 0 on SIGTERM");
    hx_stop(&redis, 10000);
    return exit_status();
}
