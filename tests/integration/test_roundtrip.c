/*
 * test_roundtrip: single commands through hotproxy give what Redis gives.
 *
 * Replies are checked for their content through hiredis, and where Redis'
 * exact bytes matter (errors, inline commands, QUIT) the same request is sent
 * to redis-server directly and the two byte strings compared.
 */
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "tap.h"

static hx_proc redis, proxy;

/* The same request through hotproxy and to Redis directly: same bytes, and
 * with nreplies > 0 all of them arrived (nreplies < 0: read until closed). */
static void same_as_redis_n(const char *req, size_t len, long nreplies, const char *what)
{
    hx_buf p = {0}, d = {0};
    int sp = hx_roundtrip(proxy.port, req, len, nreplies, &p, 10000);
    int sd = hx_roundtrip(redis.port, req, len, nreplies, &d, 10000);
    int complete = nreplies < 0 ? (sp == HX_EOF || sp == HX_RESET) : sp == HX_OK;
    if (!ok(complete && hx_mem_eq(p.data, p.len, d.data, d.len),
            "%s: hotproxy's reply is Redis' reply, byte for byte", what)) {
        diag("  hotproxy: %s, redis: %s", hx_status_name(sp), hx_status_name(sd));
        fputs("#   hotproxy '", stdout);
        tap_escape(p.data, p.len);
        fputs("'\n#   redis    '", stdout);
        tap_escape(d.data, d.len);
        fputs("'\n", stdout);
    }
    hx_buf_free(&p);
    hx_buf_free(&d);
}
#define same_as_redis(lit, nreplies, what) same_as_redis_n((lit), sizeof(lit) - 1, (nreplies), (what))

static int reply_is_array(redisReply *r, size_t n)
{
    return r && r->type == REDIS_REPLY_ARRAY && r->elements == n;
}

static int elem_is(redisReply *r, size_t i, const char *s)
{
    return r->element[i]->type == REDIS_REPLY_STRING && r->element[i]->len == strlen(s) &&
           !memcmp(r->element[i]->str, s, r->element[i]->len);
}

static void data_commands(redisContext *c, redisContext *d)
{
    redisReply *r;
    is_str(hx_cmd(c, "SET rt:k v1"), "OK", "SET replies OK");
    is_str(hx_cmd(c, "GET rt:k"), "v1", "GET returns what SET stored");
    is_str(hx_cmd(d, "GET rt:k"), "v1", "... and Redis itself has it");
    is_str(hx_cmd(c, "GET rt:missing"), "(nil)", "GET of a missing key is a nil bulk");
    is_str(hx_cmd(c, "INCR rt:n"), "1", "INCR gives integer 1");
    is_str(hx_cmd(c, "INCR rt:n"), "2", "INCR again gives integer 2");
    is_str(hx_cmd(c, "LPUSH rt:l a b c"), "3", "LPUSH returns the new length");

    r = redisCommand(c, "LRANGE rt:l 0 -1");
    ok(reply_is_array(r, 3) && elem_is(r, 0, "c") && elem_is(r, 1, "b") && elem_is(r, 2, "a"),
       "LRANGE returns [c, b, a]");
    if (r) freeReplyObject(r);

    is_str(hx_cmd(c, "HSET rt:h f1 v1 f2 v2"), "2", "HSET of two fields returns 2");
    r = redisCommand(c, "HGETALL rt:h");
    ok(reply_is_array(r, 4) && elem_is(r, 0, "f1") && elem_is(r, 1, "v1") && elem_is(r, 2, "f2") &&
           elem_is(r, 3, "v2"),
       "HGETALL returns f1 v1 f2 v2");
    if (r) freeReplyObject(r);

    is_str(hx_cmd(c, "MSET rt:m1 x rt:m2 y"), "OK", "MSET replies OK");
    r = redisCommand(c, "MGET rt:m1 rt:nope rt:m2");
    ok(reply_is_array(r, 3) && elem_is(r, 0, "x") && r->element[1]->type == REDIS_REPLY_NIL && elem_is(r, 2, "y"),
       "MGET returns x, nil, y");
    if (r) freeReplyObject(r);

    is_str(hx_cmd(c, "EXISTS rt:k rt:missing rt:m1"), "2", "EXISTS counts the two existing keys");
    is_str(hx_cmd(c, "DEL rt:k rt:m1 rt:missing"), "2", "DEL counts the two it removed");
    is_str(hx_cmd(c, "EXISTS rt:k"), "0", "EXISTS after DEL is 0");

    r = redisCommand(c, "LPUSH rt:n x");
    ok(r && r->type == REDIS_REPLY_ERROR &&
           !strcmp(r->str, "WRONGTYPE Operation against a key holding the wrong kind of value"),
       "LPUSH on a string key: WRONGTYPE error passed through (got '%s')", r ? r->str : "(none)");
    if (r) freeReplyObject(r);
    same_as_redis("*3\r\n$5\r\nLPUSH\r\n$4\r\nrt:n\r\n$1\r\nx\r\n", 1, "WRONGTYPE");
    same_as_redis("*3\r\n$4\r\nINCR\r\n$2\r\nrt\r\n$1\r\nx\r\n", 1, "INCR with an extra argument");
}

static void binary_safety(redisContext *c, redisContext *d)
{
    static const char key[] = "rt:bin\r\n\0key\n";
    static const char val[] = "a\r\nb\0c\r\n\r\n$3\r\n*1\r\n";
    size_t kl = sizeof(key) - 1, vl = sizeof(val) - 1;
    redisReply *r = redisCommand(c, "SET %b %b", key, kl, val, vl);
    ok(r && r->type == REDIS_REPLY_STATUS && !strcmp(r->str, "OK"), "SET with \\r, \\n and \\0 in key and value");
    if (r) freeReplyObject(r);
    r = redisCommand(c, "GET %b", key, kl);
    ok(r && r->type == REDIS_REPLY_STRING && r->len == vl && !memcmp(r->str, val, vl),
       "GET through hotproxy returns the binary value intact");
    if (r) freeReplyObject(r);
    r = redisCommand(d, "GET %b", key, kl);
    ok(r && r->type == REDIS_REPLY_STRING && r->len == vl && !memcmp(r->str, val, vl),
       "Redis itself holds the binary key and value intact");
    if (r) freeReplyObject(r);

    r = redisCommand(c, "SET %s %b", "rt:empty", "", (size_t)0);
    ok(r && r->type == REDIS_REPLY_STATUS, "SET of an empty value");
    if (r) freeReplyObject(r);
    r = redisCommand(c, "GET rt:empty");
    ok(r && r->type == REDIS_REPLY_STRING && r->len == 0, "GET of an empty value is an empty bulk, not nil");
    if (r) freeReplyObject(r);
    same_as_redis("*2\r\n$3\r\nGET\r\n$8\r\nrt:empty\r\n", 1, "GET of an empty value");
}

static void inline_commands(void)
{
    hx_buf b = {0};
    int fd = hx_connect(proxy.port);
    ok(fd >= 0, "raw connection to hotproxy");
    hx_send_str(fd, "PING\r\n");
    hx_read_replies(fd, &b, 1, NULL, 5000);
    is_mem(b.data, b.len, "+PONG\r\n", 7, "inline PING\\r\\n -> +PONG");
    hx_buf_reset(&b);
    hx_send_str(fd, "SET rt:inl \"a b\"\r\n");
    hx_read_replies(fd, &b, 1, NULL, 5000);
    is_mem(b.data, b.len, "+OK\r\n", 5, "inline SET with a quoted value -> +OK");
    hx_buf_reset(&b);
    hx_send_str(fd, "GET rt:inl\n");
    hx_read_replies(fd, &b, 1, NULL, 5000);
    is_mem(b.data, b.len, "$3\r\na b\r\n", 9, "inline GET ended by a bare \\n -> the quoted value");
    hx_buf_reset(&b);
    /* An inline command split across writes. */
    hx_send_str(fd, "G");
    hx_sleep_ms(50);
    hx_send_str(fd, "ET rt:i");
    hx_sleep_ms(50);
    hx_send_str(fd, "nl\r");
    hx_sleep_ms(50);
    hx_send_str(fd, "\n");
    hx_read_replies(fd, &b, 1, NULL, 5000);
    is_mem(b.data, b.len, "$3\r\na b\r\n", 9, "an inline command arriving in four pieces");
    hx_buf_free(&b);
    close(fd);

    same_as_redis("PING\r\n", 1, "inline PING");
    same_as_redis("ping hello\r\n", 1, "inline lower-case ping with an argument");
    same_as_redis("SET rt:inl2 \"x\\r\\ny\\x41\" \r\nGET rt:inl2\r\n", 2, "inline escapes \\r \\n \\x41 in quotes");
    same_as_redis("SET rt:inl3 'it''s'\r\n", 1, "inline single-quoted value followed by a quote");
    same_as_redis("\r\n\r\nPING\r\n", 1, "empty inline lines are skipped");
    same_as_redis("   \r\nECHO   spaced    \r\n", 1, "inline whitespace");
}

static void local_commands(void)
{
    same_as_redis("*1\r\n$4\r\nPING\r\n", 1, "PING");
    same_as_redis("*2\r\n$4\r\nPING\r\n$5\r\nhello\r\n", 1, "PING with a message");
    same_as_redis("*2\r\n$4\r\nping\r\n$0\r\n\r\n", 1, "PING with an empty message");
    same_as_redis("*4\r\n$4\r\nPING\r\n$1\r\nx\r\n$1\r\ny\r\n$1\r\nz\r\n", 1, "PING x y z (wrong arity)");
    same_as_redis("*2\r\n$4\r\nECHO\r\n$3\r\na\0b\r\n", 1, "ECHO of a binary string");
    same_as_redis("*1\r\n$4\r\nECHO\r\n", 1, "ECHO without an argument (wrong arity)");
    same_as_redis("*3\r\n$4\r\nEcHo\r\n$1\r\na\r\n$1\r\nb\r\n", 1, "ECHO with two arguments (wrong arity)");

    /* QUIT: +OK, then the connection closes; commands after it are not run. */
    hx_buf p = {0}, d = {0};
    const char *req = "*3\r\n$3\r\nSET\r\n$5\r\nrt:q1\r\n$1\r\n1\r\n*1\r\n$4\r\nQUIT\r\n"
                      "*3\r\n$3\r\nSET\r\n$5\r\nrt:q2\r\n$1\r\n1\r\n";
    int sp = hx_roundtrip(proxy.port, req, strlen(req), -1, &p, 10000);
    int sd = hx_roundtrip(redis.port, req, strlen(req), -1, &d, 10000);
    is_mem(p.data, p.len, "+OK\r\n+OK\r\n", 10, "SET, QUIT, SET: +OK +OK and nothing for the command after QUIT");
    ok(sp == HX_EOF || sp == HX_RESET, "QUIT closes the connection (%s)", hx_status_name(sp));
    is_mem(p.data, p.len, d.data, d.len, "QUIT pipeline: same bytes as Redis (redis %s)", hx_status_name(sd));
    hx_buf_free(&p);
    hx_buf_free(&d);
    redisContext *c = hx_redis(proxy.port);
    is_str(hx_cmd(c, "EXISTS rt:q2"), "0", "the command after QUIT did not run");
    if (c) redisFree(c);
    same_as_redis("QUIT\r\n", -1, "inline QUIT");
}

static void errors_and_introspection(redisContext *c, redisContext *d)
{
    same_as_redis("*3\r\n$9\r\nNOSUCHCMD\r\n$1\r\na\r\n$2\r\nb c\r\n", 1, "unknown command");
    same_as_redis("NOSUCHCMD a b\r\n", 1, "unknown inline command");
    same_as_redis("*1\r\n$3\r\nGET\r\n", 1, "GET without a key (wrong arity)");
    same_as_redis("*2\r\n$3\r\nSET\r\n$1\r\nk\r\n", 1, "SET with only a key (wrong arity)");
    same_as_redis("*2\r\n$6\r\nCONFIG\r\n$5\r\nNOSUB\r\n", 1, "unknown subcommand");
    same_as_redis("*1\r\n$0\r\n\r\n", 1, "empty command name");
    same_as_redis("*2\r\n$7\r\nCOMMAND\r\n$5\r\nCOUNT\r\n", 1, "COMMAND COUNT");
    same_as_redis("*3\r\n$7\r\nCOMMAND\r\n$4\r\nINFO\r\n$3\r\nget\r\n", 1, "COMMAND INFO get");

    const char *pc = hx_cmd(c, "COMMAND COUNT");
    char pcount[64];
    snprintf(pcount, sizeof(pcount), "%s", pc);
    is_str(pcount, hx_cmd(d, "COMMAND COUNT"), "COMMAND COUNT through hotproxy equals Redis' own");

    redisReply *r = redisCommand(c, "INFO");
    ok(r && r->type == REDIS_REPLY_STRING, "INFO returns a bulk string");
    const char *s = r && r->type == REDIS_REPLY_STRING ? r->str : "";
    ok(strstr(s, "\r\nredis_version:") != NULL, "INFO has Redis' redis_version");
    ok(strstr(s, "\r\nhotproxy_version:") != NULL, "INFO has hotproxy_version");
    ok(strstr(s, "# Hotproxy\r\n") && strstr(s, "# Hotproxy_stats\r\n") && strstr(s, "# Hotproxy_upstream\r\n"),
       "INFO has the sections Hotproxy, Hotproxy_stats and Hotproxy_upstream");
    ok(strstr(s, "\r\nhotproxy_upstream_status:up\r\n") != NULL, "INFO says hotproxy_upstream_status:up");
    ok(r && r->len >= 4 && !strcmp(s + r->len - 2, "\r\n") && strcmp(s + r->len - 4, "\r\n\r\n"),
       "regression (INFO ended with a blank line): INFO text ends with exactly one CRLF, as Redis' does");
    if (r) freeReplyObject(r);

    r = redisCommand(c, "INFO hotproxy");
    s = r && r->type == REDIS_REPLY_STRING ? r->str : "";
    ok(strstr(s, "hotproxy_version:") != NULL, "INFO hotproxy has hotproxy_version");
    ok(strstr(s, "redis_version") == NULL, "INFO hotproxy has no redis_version");
    ok(!strncmp(s, "# Hotproxy\r\n", 12), "INFO hotproxy starts with its section header");
    if (r) freeReplyObject(r);

    r = redisCommand(c, "INFO server");
    s = r && r->type == REDIS_REPLY_STRING ? r->str : "";
    ok(strstr(s, "redis_version:") != NULL, "INFO server has redis_version");
    ok(strstr(s, "hotproxy_") == NULL, "INFO server has none of hotproxy's sections");
    if (r) freeReplyObject(r);
}

int main(void)
{
    hx_init(240);
    plan(69);
    if (hx_redis_start(&redis, 0) != 0) {
        ok(0, "redis-server starts");
        return exit_status();
    }
    if (hx_proxy_start(&proxy, 0, redis.port, NULL) != 0) {
        ok(0, "hotproxy starts");
        return exit_status();
    }
    redisContext *c = hx_redis(proxy.port), *d = hx_redis(redis.port);
    ok(c && d, "hiredis connects to hotproxy and to Redis");
    if (!c || !d) return exit_status();

    data_commands(c, d);
    binary_safety(c, d);
    inline_commands();
    local_commands();
    errors_and_introspection(c, d);

    redisFree(c);
    redisFree(d);
    is_int(hx_stop(&proxy, 15000), 0, "hotproxy exits 0 on SIGTERM");
    hx_stop(&redis, 10000);
    done_testing();
    return exit_status();
}
