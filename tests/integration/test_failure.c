/*
 * test_failure: what clients see when the upstream is missing, dies, stalls
 * or talks nonsense, and how hotproxy comes back.
 *
 * The contract: every command gets exactly one reply, never a hang; while
 * the upstream is unusable the reply is an error starting "-ERR upstream ";
 * once Redis is back, commands succeed again on the same client connections.
 * Fake upstreams stand in where a real server cannot misbehave on cue.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "tap.h"

static int starts_with(const char *s, const char *prefix) { return s && !strncmp(s, prefix, strlen(prefix)); }

/* Poll until SET through the proxy succeeds; seconds it took, or -1. */
static double wait_recovery(int port, double limit_s)
{
    double t0 = hx_now();
    while (hx_now() - t0 < limit_s) {
        redisContext *c = hx_redis(port);
        const char *r = hx_cmd(c, "SET fail:probe 1");
        int good = !strcmp(r, "OK");
        if (c) redisFree(c);
        if (good) return hx_now() - t0;
        hx_sleep_ms(50);
    }
    return -1;
}

/* Poll redis-server until the WAIT a test sent through hotproxy has arrived:
 * a client is blocked in it, or (a short WAIT) more WAITs than waits_before
 * have ended.  Up to 20 s. */
static void wait_arrived(int redis_port, long long waits_before)
{
    redisContext *d = hx_redis(redis_port);
    double deadline = hx_now() + 20;
    while (d && hx_now() < deadline) {
        const char *b = hx_info_get(d, "clients", "blocked_clients");
        if ((b && !strcmp(b, "1")) || hx_cmdstat_calls(d, "wait") > waits_before) break;
        hx_sleep_ms(10);
    }
    if (hx_now() >= deadline) diag("the WAIT did not reach redis-server within 20 s");
    if (d) redisFree(d);
}

/* (a) Redis is not there when hotproxy starts, then appears. */
static void upstream_absent_at_start(void)
{
    int up = hx_free_port();
    hx_proc proxy, redis;
    if (hx_proxy_start(&proxy, 0, up, NULL) != 0) {
        ok(0, "hotproxy starts with nothing on its upstream port");
        return;
    }
    ok(1, "hotproxy starts with nothing on its upstream port %d", up);
    redisContext *c = hx_redis(proxy.port);
    double t0 = hx_now();
    const char *r = hx_cmd(c, "GET fail:a");
    double took = hx_now() - t0;
    char expect[64];
    snprintf(expect, sizeof(expect), "ERR upstream 127.0.0.1:%d ", up);
    ok(starts_with(r, expect), "GET with no upstream: '-%s...' (got '%s')", expect, r);
    ok(strncmp(r, "(no reply", 9) != 0, "... answered, not left hanging past the client's 20 s timeout (%.2f s)", took);
    is_str(hx_cmd(c, "PING"), "PONG", "PING is answered by hotproxy itself while the upstream is down");

    /* a pipeline while down: one error per command */
    hx_buf req = {0}, out = {0};
    for (int i = 0; i < 100; i++) {
        const char *argv[] = {"INCR", "fail:a:n"};
        hx_buf_command(&req, 2, argv, NULL);
    }
    long got = 0;
    int st = hx_roundtrip(proxy.port, req.data, req.len, 100, &out, 10000);
    size_t used = 0;
    got = hx_count_replies(out.data, out.len, &used);
    int errors = 0;
    for (size_t pos = 0; pos < used;) {
        long l = hx_reply_len(out.data + pos, used - pos);
        errors += !strncmp(out.data + pos, "-ERR upstream ", 14);
        pos += (size_t)l;
    }
    ok(st == HX_OK && got == 100 && errors == 100, "100 pipelined commands while down: 100 '-ERR upstream' replies (%ld, %d, %s)",
       got, errors, hx_status_name(st));
    hx_buf_free(&req);
    hx_buf_free(&out);

    redisReply *info = c ? redisCommand(c, "INFO") : NULL;
    const char *s = info && info->type == REDIS_REPLY_STRING ? info->str : "";
    ok(strstr(s, "hotproxy_upstream_status:down\r\n") != NULL, "INFO while down says hotproxy_upstream_status:down");
    ok(strstr(s, "hotproxy_version:") && !strstr(s, "redis_version:"), "INFO while down has hotproxy's sections only");
    if (info) freeReplyObject(info);

    if (hx_redis_start(&redis, up) != 0) {
        ok(0, "redis-server starts on port %d", up);
    } else {
        double rec = wait_recovery(proxy.port, 10);
        ok(rec >= 0, "after Redis starts on that port, commands succeed within 10 s (%.2f s)", rec);
        is_str(hx_cmd(c, "GET fail:probe"), "1", "the client connected during the outage now gets Redis' replies");
        is_str(hx_info_field(proxy.port, "hotproxy", "hotproxy_upstream_status"), "up", "INFO says up again");
        hx_stop(&redis, 10000);
    }
    if (c) redisFree(c);
    is_int(hx_stop(&proxy, 15000), 0, "hotproxy exits 0 on SIGTERM");
}

/* The i-th command of the kill pipeline and its reply while Redis is up. */
static void kill_cmd(hx_buf *req, hx_buf *want, int i)
{
    char key[64], val[64];
    snprintf(key, sizeof(key), "fail:b:%d", i / 3);
    snprintf(val, sizeof(val), "val-%d", i / 3);
    switch (i % 3) {
    case 0: {
        const char *argv[] = {"SET", key, val};
        hx_buf_command(req, 3, argv, NULL);
        hx_buf_printf(want, "+OK\r\n");
        break;
    }
    case 1: {
        const char *argv[] = {"GET", key};
        hx_buf_command(req, 2, argv, NULL);
        hx_buf_printf(want, "$%zu\r\n%s\r\n", strlen(val), val);
        break;
    }
    default: {
        const char *argv[] = {"INCR", "fail:b:n"};
        hx_buf_command(req, 2, argv, NULL);
        hx_buf_printf(want, ":%d\r\n", i / 3 + 1);
        break;
    }
    }
}

/* (b) Redis is SIGKILLed in the middle of a 50,000-command pipeline. */
static void upstream_killed_mid_pipeline(void)
{
    enum { N = 50000, KILL_AT = 5000 };
    hx_proc redis, proxy;
    if (hx_redis_start(&redis, 0) != 0 || hx_proxy_start(&proxy, 0, redis.port, NULL) != 0) {
        ok(0, "redis-server and hotproxy start");
        return;
    }
    int port = redis.port;
    hx_buf req = {0}, out = {0};
    hx_buf *want = calloc(N, sizeof(hx_buf));
    size_t *ends = calloc(N, sizeof(size_t)); /* where each command ends in req */
    for (int i = 0; i < N; i++) {
        kill_cmd(&req, &want[i], i);
        ends[i] = req.len;
    }

    /* Write while reading; after KILL_AT replies kill Redis, then write the
     * rest.  Bounded by a deadline. */
    int fd = hx_connect(proxy.port);
    size_t sent = 0, pos = 0;
    long replies = 0;
    int killed = 0, st = HX_OK;
    double deadline = hx_now() + 90;
    while (replies < N && hx_now() < deadline) {
        /* before the kill only the first 10,000 commands go out */
        size_t limit = killed ? req.len : ends[2 * KILL_AT - 1];
        struct pollfd pfd = {fd, POLLIN | (sent < limit ? POLLOUT : 0), 0};
        if (poll(&pfd, 1, 200) <= 0) continue;
        if ((pfd.revents & POLLOUT) && sent < limit) {
            ssize_t w = send(fd, req.data + sent, limit - sent, MSG_NOSIGNAL);
            if (w > 0) sent += (size_t)w;
        }
        if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
            st = hx_read_n(fd, &out, 1 << 30, 0);
            if (st != HX_TIMEOUT && st != HX_OK) break;
            st = HX_OK;
            long l;
            while (replies < N && (l = hx_reply_len(out.data + pos, out.len - pos)) > 0) {
                pos += (size_t)l;
                replies++;
            }
            if (l < 0) {
                st = HX_BADPROTO;
                break;
            }
        }
        if (!killed && replies >= KILL_AT) {
            hx_kill(&redis);
            killed = 1;
        }
    }
    is_int(replies, N, "%d commands, Redis SIGKILLed after %d replies: %d replies (%s)", N, KILL_AT, N,
           hx_status_name(st));

    /* every reply is the real one or an upstream error, in order */
    long real = 0, errs = 0, bad = 0, real_after_err = 0;
    pos = 0;
    for (long i = 0; i < replies; i++) {
        long l = hx_reply_len(out.data + pos, out.len - pos);
        const char *r = out.data + pos;
        if ((size_t)l == want[i].len && !memcmp(r, want[i].data, (size_t)l)) {
            real++;
            if (errs) real_after_err++;
        } else if (l > 14 && !memcmp(r, "-ERR upstream ", 14)) {
            errs++;
        } else if (bad++ < 3) {
            diag("reply %ld is neither its own nor an upstream error:", i);
            fputs("#   got  '", stdout);
            tap_escape(r, (size_t)l);
            fputs("'\n#   want '", stdout);
            tap_escape(want[i].data, want[i].len);
            fputs("'\n", stdout);
        }
        pos += (size_t)l;
    }
    diag("%ld real replies, %ld upstream errors, %ld real replies after the first error", real, errs, real_after_err);
    is_int(bad, 0, "every reply is either Redis' own or '-ERR upstream ...'");
    ok(real >= KILL_AT && errs > 0, "the kill landed mid-pipeline: %ld real, then %ld errors", real, errs);
    is_int(real_after_err, 0, "no reply from Redis arrives after the first upstream error (it is dead)");
    hx_buf extra = {0};
    ok(hx_read_n(fd, &extra, 1, 200) == HX_TIMEOUT && extra.len == 0 && out.len == pos,
       "no bytes beyond one reply per command");
    hx_buf_free(&extra);

    /* restart Redis on the same port: hotproxy reconnects */
    if (hx_redis_start(&redis, port) != 0) {
        ok(0, "redis-server restarts on port %d", port);
    } else {
        double rec = wait_recovery(proxy.port, 10);
        ok(rec >= 0, "after Redis restarts, commands succeed within 10 s (%.2f s)", rec);
        hx_buf r = {0};
        static const char q[] = "*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$10\r\nfail:probe\r\n";
        hx_send(fd, q, sizeof(q) - 1, 5000);
        hx_read_replies(fd, &r, 2, NULL, 10000);
        is_mem(r.data, r.len, "+PONG\r\n$1\r\n1\r\n", 14, "the pipelining client's connection survived and works");
        hx_buf_free(&r);
        hx_stop(&redis, 10000);
    }
    close(fd);
    for (int i = 0; i < N; i++) hx_buf_free(&want[i]);
    free(want);
    free(ends);
    hx_buf_free(&req);
    hx_buf_free(&out);
    is_int(hx_stop(&proxy, 15000), 0, "hotproxy exits 0 on SIGTERM");
}

/* (c) An upstream that accepts and never answers, with upstream-timeout 300. */
static void upstream_stalls(void)
{
    hx_proc fake, proxy;
    if (hx_fake_start(&fake, HX_FAKE_SILENT, NULL, 0) != 0 ||
        hx_proxy_start(&proxy, 0, fake.port, "--upstream-timeout", "300", NULL) != 0) {
        ok(0, "silent fake upstream and hotproxy --upstream-timeout 300 start");
        return;
    }
    char expect[80];
    snprintf(expect, sizeof(expect), "ERR upstream 127.0.0.1:%d timeout", fake.port);
    redisContext *c = hx_redis(proxy.port);
    double t0 = hx_now();
    const char *r = hx_cmd(c, "GET fail:c");
    double took = hx_now() - t0;
    ok(starts_with(r, expect), "GET to a silent upstream: '-%s...' (got '%s')", expect, r);
    ok(strncmp(r, "(no reply", 9) != 0, "... after upstream-timeout, not a hang past the client's 20 s timeout (%.2f s)",
       took);
    t0 = hx_now();
    r = hx_cmd(c, "SET fail:c 1");
    ok(starts_with(r, expect), "a second command on the replaced connection times out too (got '%s', %.2f s)", r,
       hx_now() - t0);

    /* a pipeline: every command answered, each with the timeout error */
    hx_buf req = {0}, out = {0};
    for (int i = 0; i < 10; i++) {
        const char *argv[] = {"GET", "fail:c"};
        hx_buf_command(&req, 2, argv, NULL);
    }
    int fd = hx_connect(proxy.port);
    long got = 0;
    int st = hx_exchange(fd, req.data, req.len, 10, &out, &got, 15000);
    int timeouts = 0;
    for (size_t pos = 0; pos < out.len;) {
        long l = hx_reply_len(out.data + pos, out.len - pos);
        if (l <= 0) break;
        timeouts += (size_t)l > strlen(expect) && !memcmp(out.data + pos + 1, expect, strlen(expect));
        pos += (size_t)l;
    }
    ok(got == 10 && timeouts == 10, "10 pipelined GETs: 10 timeout errors (%ld replies, %d timeouts, %s)", got,
       timeouts, hx_status_name(st));
    close(fd);
    hx_buf_free(&req);
    hx_buf_free(&out);

    const char *n = hx_info_field(proxy.port, "hotproxy", "hotproxy_upstream_timeouts");
    ok(n && atoi(n) >= 1, "INFO counts hotproxy_upstream_timeouts (%s)", n ? n : "missing");
    is_str(hx_cmd(c, "PING"), "PONG", "PING still answered locally");
    if (c) redisFree(c);
    is_int(hx_stop(&proxy, 15000), 0, "hotproxy exits 0 on SIGTERM");
    hx_kill(&fake);
}

/* (d) Upstreams that answer garbage or half a reply. */
static void upstream_misbehaves(int mode, const char *reply, const char *what, const char *expect_fmt)
{
    hx_proc fake, proxy;
    if (hx_fake_start(&fake, mode, reply, strlen(reply)) != 0 || hx_proxy_start(&proxy, 0, fake.port, NULL) != 0) {
        ok(0, "%s: fake upstream and hotproxy start", what);
        return;
    }
    char expect[96];
    snprintf(expect, sizeof(expect), expect_fmt, fake.port);
    redisContext *c = hx_redis(proxy.port);
    const char *r = hx_cmd(c, "GET fail:d");
    ok(starts_with(r, expect), "%s: GET gets '-%s...' (got '%s')", what, expect, r);

    hx_buf req = {0}, out = {0};
    for (int i = 0; i < 20; i++) {
        const char *argv[] = {"GET", "fail:d"};
        hx_buf_command(&req, 2, argv, NULL);
    }
    long got = 0;
    int fd = hx_connect(proxy.port);
    int st = hx_exchange(fd, req.data, req.len, 20, &out, &got, 15000);
    int errs = 0;
    for (size_t pos = 0; pos < out.len;) {
        long l = hx_reply_len(out.data + pos, out.len - pos);
        if (l <= 0) break;
        errs += !strncmp(out.data + pos, "-ERR upstream ", 14);
        pos += (size_t)l;
    }
    ok(got == 20 && errs == 20, "%s: 20 pipelined GETs get 20 '-ERR upstream' replies (%ld, %d, %s)", what, got, errs,
       hx_status_name(st));
    close(fd);
    hx_buf_free(&req);
    hx_buf_free(&out);
    is_str(hx_cmd(c, "PING"), "PONG", "%s: hotproxy is still alive and answering", what);
    if (c) redisFree(c);
    is_int(hx_stop(&proxy, 15000), 0, "%s: hotproxy exits 0 on SIGTERM", what);
    hx_kill(&fake);
}

/* SIGTERM in the middle of a pipeline: the client gets a clean prefix of
 * its replies -- each one whole and the right one -- then the close. */
static void shutdown_mid_pipeline(void)
{
    enum { N = 50000, SIGNAL_AT = 5000 };
    hx_proc redis, proxy;
    if (hx_redis_start(&redis, 0) != 0 || hx_proxy_start(&proxy, 0, redis.port, NULL) != 0) {
        ok(0, "redis-server and hotproxy start");
        return;
    }
    hx_buf req = {0}, out = {0};
    hx_buf *want = calloc(N, sizeof(hx_buf));
    size_t *ends = calloc(N, sizeof(size_t));
    for (int i = 0; i < N; i++) {
        kill_cmd(&req, &want[i], i);
        ends[i] = req.len;
    }
    int fd = hx_connect(proxy.port);
    size_t sent = 0, pos = 0;
    long replies = 0;
    int signalled = 0, st = HX_OK, closed = 0;
    double deadline = hx_now() + 60;
    while (!closed && hx_now() < deadline) {
        size_t limit = signalled ? req.len : ends[2 * SIGNAL_AT - 1];
        struct pollfd pfd = {fd, POLLIN | (sent < limit ? POLLOUT : 0), 0};
        if (poll(&pfd, 1, 200) <= 0) continue;
        if ((pfd.revents & POLLOUT) && sent < limit) {
            ssize_t w = send(fd, req.data + sent, limit - sent, MSG_NOSIGNAL);
            if (w > 0) sent += (size_t)w;
            else if (w < 0 && errno != EAGAIN) sent = req.len; /* closed: stop writing */
        }
        if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
            st = hx_read_n(fd, &out, 1 << 30, 0);
            if (st == HX_EOF || st == HX_RESET || st == HX_ERROR) closed = 1;
            long l;
            while (replies < N && (l = hx_reply_len(out.data + pos, out.len - pos)) > 0) {
                pos += (size_t)l;
                replies++;
            }
        }
        if (!signalled && replies >= SIGNAL_AT) {
            kill(proxy.pid, SIGTERM);
            signalled = 1;
        }
    }
    ok(closed, "SIGTERM after %d of %d replies: the connection closes (%s)", SIGNAL_AT, N, hx_status_name(st));
    ok(replies >= SIGNAL_AT && replies < N, "... after %ld replies", replies);
    long wrong = 0;
    pos = 0;
    for (long i = 0; i < replies; i++) {
        long l = hx_reply_len(out.data + pos, out.len - pos);
        if (!hx_mem_eq(out.data + pos, (size_t)l, want[i].data, want[i].len) && wrong++ < 3) {
            diag("reply %ld:", i);
            tap_escape(out.data + pos, (size_t)l);
            fputs("\n", stdout);
        }
        pos += (size_t)l;
    }
    is_int(wrong, 0, "every reply received is the right one, in order");
    ok(pos == out.len, "no partial reply at the end (%zu stray bytes)", out.len - pos);
    is_int(hx_wait_exit(&proxy, 15000), 0, "hotproxy exits 0");
    if (proxy.pid) hx_kill(&proxy);
    close(fd);
    for (int i = 0; i < N; i++) hx_buf_free(&want[i]);
    free(want);
    free(ends);
    hx_buf_free(&req);
    hx_buf_free(&out);
    hx_stop(&redis, 10000);
}

/* Clients that leave with work in flight while Redis dies under them. */
static void vanishing_clients_and_dying_upstream(void)
{
    hx_proc redis, proxy;
    if (hx_redis_start(&redis, 0) != 0 || hx_proxy_start(&proxy, 0, redis.port, NULL) != 0) {
        ok(0, "redis-server and hotproxy start");
        return;
    }
    int port = redis.port;
    hx_buf req = {0}, dummy = {0};
    for (int i = 0; i < 2000; i++) kill_cmd(&req, &dummy, i);
    hx_buf_free(&dummy);
    int fds[50], sent = 0;
    for (int i = 0; i < 50; i++) {
        fds[i] = hx_connect(proxy.port);
        sent += fds[i] >= 0 && hx_send(fds[i], req.data, req.len, 5000) == 0;
    }
    for (int i = 0; i < 25; i++) close(fds[i]);
    hx_kill(&redis);
    for (int i = 25; i < 50; i++) close(fds[i]);
    hx_buf_free(&req);
    is_int(sent, 50, "50 clients send 2,000 commands each, then leave as Redis is killed");
    redisContext *c = hx_redis(proxy.port);
    is_str(hx_cmd(c, "PING"), "PONG", "hotproxy is alive and answering");
    if (c) redisFree(c);
    if (hx_redis_start(&redis, port) == 0) {
        double rec = wait_recovery(proxy.port, 10);
        ok(rec >= 0, "after Redis restarts, commands succeed (%.2f s)", rec);
        hx_stop(&redis, 10000);
    } else {
        ok(0, "redis-server restarts on port %d", port);
    }
    is_int(hx_stop(&proxy, 15000), 0, "hotproxy exits 0 on SIGTERM");
}

/* SIGTERM with a command in flight: it is answered, then hotproxy exits 0. */
static void shutdown_in_flight(void)
{
    hx_proc redis, proxy;
    if (hx_redis_start(&redis, 0) != 0 || hx_proxy_start(&proxy, 0, redis.port, NULL) != 0) {
        ok(0, "redis-server and hotproxy start");
        return;
    }
    /* WAIT 1 800 with no replica blocks in Redis for 800 ms, then :0 */
    int fd = hx_connect(proxy.port);
    static const char wait_cmd[] = "*3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$3\r\n800\r\n";
    hx_send(fd, wait_cmd, sizeof(wait_cmd) - 1, 5000);
    wait_arrived(redis.port, 0);
    kill(proxy.pid, SIGTERM);
    hx_buf r = {0};
    int st = hx_read_eof(fd, &r, 10000);
    is_mem(r.data, r.len, ":0\r\n", 4, "SIGTERM while WAIT 1 800 is in flight: the client still gets its reply");
    ok(st == HX_EOF || st == HX_RESET, "... then the connection closes (%s)", hx_status_name(st));
    is_int(hx_wait_exit(&proxy, 10000), 0, "... and hotproxy exits 0");
    hx_buf_free(&r);
    close(fd);

    /* in flight longer than shutdown-timeout: the exit is bounded */
    if (hx_proxy_start(&proxy, 0, redis.port, "--shutdown-timeout", "1", NULL) != 0) {
        ok(0, "hotproxy --shutdown-timeout 1 starts");
    } else {
        /* WAIT 1 0 waits for ever: exiting at all is not waiting it out */
        static const char long_wait[] = "*3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$1\r\n0\r\n";
        fd = hx_connect(proxy.port);
        hx_send(fd, long_wait, sizeof(long_wait) - 1, 5000);
        wait_arrived(redis.port, 1000000); /* it never ends: blocked is the sign */
        double t0 = hx_now();
        kill(proxy.pid, SIGTERM);
        int code = hx_wait_exit(&proxy, 20000);
        double took = hx_now() - t0;
        ok(code == 0, "WAIT 1 0 (for ever) in flight, shutdown-timeout 1: exits 0 without waiting it out (%d, %.2f s)",
           code, took);
        if (code == -2) hx_kill(&proxy);
        close(fd);
    }
    hx_stop(&redis, 10000);
}

int main(void)
{
    hx_init(280);
    plan(51);
    upstream_absent_at_start();
    upstream_killed_mid_pipeline();
    upstream_stalls();
    upstream_misbehaves(HX_FAKE_REPLY, "@@@\r\n", "garbage reply '@@@'", "ERR upstream 127.0.0.1:%d ");
    upstream_misbehaves(HX_FAKE_REPLY_CLOSE, "$10\r\nabc", "half a reply, then close", "ERR upstream 127.0.0.1:%d ");
    upstream_misbehaves(HX_FAKE_REPLY, "$-5\r\n", "a bulk of length -5", "ERR upstream 127.0.0.1:%d ");
    shutdown_in_flight();
    shutdown_mid_pipeline();
    vanishing_clients_and_dying_upstream();
    return exit_status();
}
