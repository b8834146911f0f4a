/*
 * test_divergence: what a client would see differently through hotproxy
 * than with Redis direct, when one connection is busy or carried state.
 *
 *  - SCRIPT KILL, FUNCTION KILL and SHUTDOWN NOSAVE reach Redis while a
 *    script holds the shared connection (they used to queue behind the very
 *    script they kill), from a client in any database and protocol;
 *  - WAIT runs on a connection of its own (it used to hold the shared one, and
 *    every other client's commands behind it), and still counts only the
 *    replicas that acknowledged the client's writes;
 *  - a shared connection stuck past upstream-timeout is replaced, and the log
 *    names the command at its head (its name only, never its arguments);
 *  - a reply nested 1000 deep passes byte for byte (it was a protocol error);
 *  - a connection that had CLIENT TRACKING on is never handed to another
 *    client (who then got invalidations for keys it never read);
 *  - RESP3 pushes reach the client as Redis sends them, not behind a reply
 *    still awaited (an invalidation during a BLPOP).
 *
 * Every wait polls a condition with a generous deadline; nothing asserts on
 * elapsed time.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "tap.h"

#define DEADLINE_MS 15000

/* A raw client: its socket and what it has read but not yet consumed. */
typedef struct conn {
    int fd;
    hx_buf in;
} conn;

static int conn_open(conn *c, int port)
{
    memset(c, 0, sizeof(*c));
    c->fd = hx_connect(port);
    return c->fd >= 0 ? 0 : -1;
}

static void conn_close(conn *c)
{
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    hx_buf_free(&c->in);
}

/* Send a command given as space-separated words (none of them has a space). */
static int conn_send(conn *c, const char *words)
{
    char *copy = strdup(words), *save = NULL;
    const char *argv[32];
    int argc = 0;
    for (char *w = strtok_r(copy, " ", &save); w && argc < 32; w = strtok_r(NULL, " ", &save)) argv[argc++] = w;
    hx_buf b = {0};
    hx_buf_command(&b, argc, argv, NULL);
    int rc = hx_send(c->fd, b.data, b.len, 5000);
    hx_buf_free(&b);
    free(copy);
    return rc;
}

static int conn_sendv(conn *c, int argc, const char *const *argv)
{
    hx_buf b = {0};
    hx_buf_command(&b, argc, argv, NULL);
    int rc = hx_send(c->fd, b.data, b.len, 5000);
    hx_buf_free(&b);
    return rc;
}

/* Read whatever arrives within ms; 1 if something did. */
static int conn_read(conn *c, int ms)
{
    struct pollfd pfd = {c->fd, POLLIN, 0};
    if (poll(&pfd, 1, ms) <= 0) return 0;
    hx_buf_reserve(&c->in, 65536);
    ssize_t n = read(c->fd, c->in.data + c->in.len, 65536);
    if (n <= 0) return 0;
    c->in.len += (size_t)n;
    return 1;
}

/* Offset of needle in what c has read, reading until it shows (or the
 * deadline passes); -1 if it never did. */
static long conn_find(conn *c, const char *needle, int timeout_ms)
{
    size_t nl = strlen(needle);
    double end = hx_now() + timeout_ms / 1000.0;
    for (;;) {
        const char *hit = c->in.len >= nl ? memmem(c->in.data, c->in.len, needle, nl) : NULL;
        if (hit) return hit - c->in.data;
        double left = end - hx_now();
        if (left <= 0) return -1;
        conn_read(c, (int)(left * 1000) + 1);
    }
}

/* Wait for needle and drop everything read up to its end. */
static int conn_expect(conn *c, const char *needle, int timeout_ms)
{
    long at = conn_find(c, needle, timeout_ms);
    if (at < 0) {
        diag("  waited for '%s', got %zu bytes: '%.*s'", needle, c->in.len, (int)(c->in.len > 200 ? 200 : c->in.len),
             c->in.data ? c->in.data : "");
        return 0;
    }
    size_t end = (size_t)at + strlen(needle);
    memmove(c->in.data, c->in.data + end, c->in.len - end);
    c->in.len -= end;
    return 1;
}

/* 1 if the peer sent nothing we have not read yet (checked without waiting). */
static int conn_quiet(conn *c)
{
    conn_read(c, 0);
    return c->in.len == 0;
}

/* Poll an INFO field until it equals want. */
static int wait_field(int port, const char *section, const char *field, const char *want)
{
    double end = hx_now() + DEADLINE_MS / 1000.0;
    const char *v = NULL;
    while (hx_now() < end) {
        v = hx_info_field(port, section, field);
        if (v && !strcmp(v, want)) return 1;
        hx_sleep_ms(20);
    }
    diag("  %s stayed '%s', not '%s'", field, v ? v : "(missing)", want);
    return 0;
}

/* Poll PING on Redis direct until it answers BUSY: a script is past the
 * busy threshold, so Redis reads other connections again. */
static int wait_busy(redisContext *direct)
{
    double end = hx_now() + DEADLINE_MS / 1000.0;
    while (hx_now() < end) {
        if (!strncmp(hx_cmd(direct, "PING"), "BUSY", 4)) return 1;
        hx_sleep_ms(20);
    }
    return 0;
}

static int start_pair(hx_proc *r, hx_proc *p, const char *const *extra)
{
    if (hx_redis_start(r, 0) != 0) return -1;
    return hx_proxy_startv(p, 0, r->port, extra);
}

/*
 * A: a script that never ends.  B: the KILL through hotproxy must reach
 * Redis and be answered OK; A gets Redis' error; C's GET works afterwards.
 * upstream-timeout is long, so hotproxy giving up on the shared connection
 * cannot stand in for the kill.
 */
static void kill_reaches_busy_redis(const char *what, const char *load, const char *run, const char *killcmd,
                                    int b_resp3)
{
    hx_proc r, p;
    const char *extra[] = {"--upstream-timeout", "120000", NULL};
    if (start_pair(&r, &p, extra) != 0) {
        ok(0, "%s: redis-server and hotproxy start", what);
        return;
    }
    redisContext *direct = hx_redis(r.port);
    hx_cmd(direct, "CONFIG SET busy-reply-threshold 100");
    if (load) {
        redisReply *rep = redisCommand(direct, "FUNCTION LOAD %s", load);
        if (rep) freeReplyObject(rep);
    }
    conn a, b;
    conn_open(&a, p.port);
    conn_open(&b, p.port);
    /* With b_resp3, B is in another database and protocol: Redis refuses
     * SELECT while a script is busy, so the kill's connection must not need
     * one.  Without, B shares A's lane (and, by default, its connection). */
    if (b_resp3) {
        conn_send(&b, "HELLO 3");
        conn_send(&b, "SELECT 2");
        ok(conn_expect(&b, "+OK\r\n", DEADLINE_MS), "%s: B says HELLO 3 and SELECT 2", what);
    }
    const char *argv[] = {run[0] == 'E' ? "EVAL" : "FCALL", run + 5, "0"};
    if (run[0] != 'E') argv[1] = run + 6;
    conn_sendv(&a, 3, argv);
    ok(wait_busy(direct), "%s: Redis is busy running A's %s", what, argv[0]);
    conn_send(&b, killcmd);
    ok(conn_expect(&b, "+OK\r\n", DEADLINE_MS), "%s: %s through hotproxy reaches Redis and is answered OK", what,
       killcmd);
    ok(conn_expect(&a, "-", DEADLINE_MS) && conn_expect(&a, "\r\n", DEADLINE_MS), "%s: A's %s gets Redis' error",
       what, argv[0]);
    redisContext *c = hx_redis(p.port);
    is_str(hx_cmd(c, "SET div:kill:k v"), "OK", "%s: a third client's SET works afterwards", what);
    is_str(hx_cmd(c, "GET div:kill:k"), "v", "%s: ... and its GET", what);
    is_str(hx_cmd(direct, "PING"), "PONG", "%s: Redis is no longer busy", what);
    const char *oob = hx_info_field(p.port, "hotproxy", "hotproxy_oob_connections");
    ok(oob && wait_field(p.port, "hotproxy", "hotproxy_oob_connections", "0"),
       "%s: the out-of-band connection is closed once answered", what);
    if (c) redisFree(c);
    if (direct) redisFree(direct);
    conn_close(&a);
    conn_close(&b);
    is_int(hx_stop(&p, 20000), 0, "hotproxy exits 0 (no sanitizer report)");
    hx_kill(&r);
}

/* SHUTDOWN NOSAVE, when allowed, reaches a Redis busy with a script (which
 * allows it), as with Redis direct. */
static void shutdown_reaches_busy_redis(void)
{
    hx_proc r, p;
    const char *extra[] = {"--allow-shutdown", "yes", "--upstream-timeout", "120000", NULL};
    if (start_pair(&r, &p, extra) != 0) {
        ok(0, "SHUTDOWN: redis-server and hotproxy start");
        return;
    }
    redisContext *direct = hx_redis(r.port);
    hx_cmd(direct, "CONFIG SET busy-reply-threshold 100");
    conn a, b;
    conn_open(&a, p.port);
    conn_open(&b, p.port);
    const char *argv[] = {"EVAL", "while true do end", "0"};
    conn_sendv(&a, 3, argv);
    ok(wait_busy(direct), "SHUTDOWN: Redis is busy running A's EVAL");
    conn_send(&b, "SHUTDOWN NOSAVE");
    ok(hx_wait_exit(&r, DEADLINE_MS) == 0, "SHUTDOWN: SHUTDOWN NOSAVE through hotproxy reaches Redis, which exits");
    if (direct) redisFree(direct);
    conn_close(&a);
    conn_close(&b);
    is_int(hx_stop(&p, 20000), 0, "hotproxy exits 0 (no sanitizer report)");
    hx_kill(&r);
}

/* The other out-of-band commands work, and a client in MULTI gets them
 * queued on its own connection, as Redis would. */
static void oob_commands_answered(void)
{
    hx_proc r, p;
    const char *extra[] = {NULL};
    if (start_pair(&r, &p, extra) != 0) {
        ok(0, "oob: redis-server and hotproxy start");
        return;
    }
    redisContext *c = hx_redis(p.port);
    is_str(hx_cmd(c, "CLIENT PAUSE 50 WRITE"), "OK", "oob: CLIENT PAUSE is answered");
    is_str(hx_cmd(c, "CLIENT UNPAUSE"), "OK", "oob: CLIENT UNPAUSE is answered");
    ok(!strncmp(hx_cmd(c, "SCRIPT KILL"), "NOTBUSY", 7), "oob: SCRIPT KILL with no script: Redis' NOTBUSY");
    is_str(hx_cmd(c, "MULTI"), "OK", "oob: MULTI");
    is_str(hx_cmd(c, "SCRIPT KILL"), "QUEUED", "oob: SCRIPT KILL inside MULTI is queued on the client's connection");
    is_str(hx_cmd(c, "DISCARD"), "OK", "oob: DISCARD");
    is_str(hx_cmd(c, "SET div:oob:k v"), "OK", "oob: the client goes on as before");
    ok(wait_field(p.port, "hotproxy", "hotproxy_oob_connections", "0"), "oob: no out-of-band connection stays open");
    if (c) redisFree(c);
    is_int(hx_stop(&p, 20000), 0, "hotproxy exits 0 (no sanitizer report)");
    hx_kill(&r);
}

/* WAIT with replicas that never come must not hold the shared connection:
 * another client's SETs are answered while A still waits. */
static void wait_does_not_wedge_shared(void)
{
    hx_proc r, p;
    const char *extra[] = {NULL};
    if (start_pair(&r, &p, extra) != 0) {
        ok(0, "WAIT: redis-server and hotproxy start");
        return;
    }
    conn a;
    conn_open(&a, p.port);
    conn_send(&a, "SET div:wait:a 1");
    ok(conn_expect(&a, "+OK\r\n", DEADLINE_MS), "WAIT: A's write is answered");
    conn_send(&a, "WAIT 1 600000");
    ok(wait_field(r.port, "clients", "blocked_clients", "1"), "WAIT: A's WAIT 1 600000 is blocked in Redis");
    redisContext *b = hx_redis(p.port);
    int good = 1;
    for (int i = 0; i < 5 && good; i++) {
        const char *rep = hx_cmd(b, "SET div:wait:b %d", i);
        if (strcmp(rep, "OK")) {
            diag("  SET %d: '%s'", i, rep);
            good = 0;
        }
    }
    ok(good, "WAIT: B's SETs are answered while A waits");
    ok(conn_quiet(&a), "WAIT: ... and A is still waiting (nothing came back to it)");
    conn_close(&a);
    ok(wait_field(r.port, "clients", "blocked_clients", "0"), "WAIT: A going away frees its blocked connection");
    is_str(hx_cmd(b, "GET div:wait:b"), "4", "WAIT: B's last SET is there");
    if (b) redisFree(b);
    is_int(hx_stop(&p, 20000), 0, "hotproxy exits 0 (no sanitizer report)");
    hx_kill(&r);
}

/* Poll the master until its replica has acknowledged everything it sent. */
static int wait_replica_caught_up(int master_port)
{
    redisContext *m = hx_redis(master_port);
    double end = hx_now() + DEADLINE_MS / 1000.0;
    int done = 0;
    while (m && !done && hx_now() < end) {
        redisReply *rep = redisCommand(m, "INFO replication");
        if (rep && rep->type == REDIS_REPLY_STRING) {
            const char *mo = strstr(rep->str, "master_repl_offset:"), *so = strstr(rep->str, ",offset=");
            done = mo && so && atoll(mo + 19) == atoll(so + 8) && atoll(mo + 19) > 0;
        }
        if (rep) freeReplyObject(rep);
        if (!done) hx_sleep_ms(20);
    }
    if (m) redisFree(m);
    return done;
}

/* What WAIT promises through hotproxy: it counts only replicas that
 * acknowledged the client's writes, even on a reused connection whose last
 * command (its RESET) came before them. */
static void wait_counts_acknowledged_writes(void)
{
    hx_proc r, rep, p;
    const char *extra[] = {NULL};
    int started = start_pair(&r, &p, extra) == 0;
    hx_redis_opts ro = {.replicaof = r.port, .name = "replica"};
    if (!started || hx_redis_start_opts(&rep, &ro) != 0) {
        ok(0, "WAIT replicas: redis-server, a replica and hotproxy start");
        return;
    }
    redisContext *rd = hx_redis(rep.port);
    ok(wait_field(rep.port, "replication", "master_link_status", "up"), "WAIT replicas: the replica is in sync");
    redisContext *c = hx_redis(p.port);
    is_str(hx_cmd(c, "SET div:wr:a 1"), "OK", "WAIT replicas: SET through hotproxy");
    is_str(hx_cmd(c, "WAIT 1 10000"), "1", "WAIT replicas: WAIT 1 counts the replica that has it");
    ok(wait_field(p.port, "hotproxy", "hotproxy_spare_connections", "1"),
       "WAIT replicas: WAIT's connection is RESET and kept as a spare");
    /* The replica has acknowledged everything up to the spare's last command
     * (its RESET): a WAIT trusting that connection's offset would count it. */
    ok(wait_replica_caught_up(r.port), "WAIT replicas: the replica has acknowledged the master's whole stream");
    kill(rep.pid, SIGSTOP);
    is_str(hx_cmd(c, "SET div:wr:b 2"), "OK", "WAIT replicas: SET while the replica is stopped");
    is_str(hx_cmd(c, "WAIT 1 300"), "0", "WAIT replicas: WAIT 1 300 on the reused connection counts no replica");
    kill(rep.pid, SIGCONT);
    is_str(hx_cmd(c, "WAIT 1 10000"), "1", "WAIT replicas: once the replica runs again, it is counted");
    is_str(hx_cmd(rd, "GET div:wr:b"), "2", "WAIT replicas: the replica has the write");
    if (c) redisFree(c);
    if (rd) redisFree(rd);
    is_int(hx_stop(&p, 20000), 0, "hotproxy exits 0 (no sanitizer report)");
    hx_kill(&rep);
    hx_kill(&r);
}

/* A script that holds the shared connection past upstream-timeout: the log
 * says which command it was, by name, with none of its arguments. */
static void timeout_names_head_command(void)
{
    hx_proc r, p;
    const char *extra[] = {"--upstream-timeout", "300", NULL};
    if (start_pair(&r, &p, extra) != 0) {
        ok(0, "timeout log: redis-server and hotproxy start");
        return;
    }
    conn a;
    conn_open(&a, p.port);
    /* busy for 1.5 s, then done; Redis' busy threshold (5 s) keeps it deaf meanwhile */
    const char *argv[] = {"EVAL",
                          "local s = 'div-secret-value' local t = redis.call('TIME') "
                          "local t0 = t[1] * 1000000 + t[2] "
                          "repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - t0 > 1500000 return 1",
                          "0"};
    conn_sendv(&a, 3, argv);
    ok(conn_expect(&a, "-ERR upstream ", DEADLINE_MS), "timeout log: the script's client gets the timeout error");
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "grep -c \"to 'eval' at the head\" '%s' >/dev/null", p.logfile);
    double end = hx_now() + DEADLINE_MS / 1000.0;
    int named = 0;
    while (!named && hx_now() < end) {
        named = system(cmd) == 0;
        if (!named) hx_sleep_ms(50);
    }
    ok(named, "timeout log: the log names 'eval' as the command at the head of the connection");
    snprintf(cmd, sizeof(cmd), "grep -c 'div-secret-value' '%s' >/dev/null", p.logfile);
    ok(system(cmd) != 0, "timeout log: ... and none of its arguments");
    if (!named) hx_diag_file(p.logfile, 2000);
    /* the connection is replaced: commands work again once the script is done */
    redisContext *c = hx_redis(p.port);
    int back = 0;
    end = hx_now() + DEADLINE_MS / 1000.0;
    while (!back && hx_now() < end) {
        back = !strcmp(hx_cmd(c, "SET div:to:k v"), "OK");
        if (!back) hx_sleep_ms(50);
    }
    ok(back, "timeout log: the shared connection is replaced and works");
    if (c) redisFree(c);
    conn_close(&a);
    is_int(hx_stop(&p, 20000), 0, "hotproxy exits 0 (no sanitizer report)");
    hx_kill(&r);
}

/* A script's table nested 1000 deep: hotproxy's reply is Redis' byte for
 * byte, and the connection survives it. */
static void deep_reply_passes(void)
{
    hx_proc r, p;
    const char *extra[] = {NULL};
    if (start_pair(&r, &p, extra) != 0) {
        ok(0, "deep reply: redis-server and hotproxy start");
        return;
    }
    const char *argv[] = {"EVAL", "local t = {} local c = t for i=1,1000 do local n = {} c[1] = n c = n end return t",
                          "0"};
    size_t want = 1000 * 4 + 4; /* 1000 times *1, then *0 */
    conn d, x;
    conn_open(&d, r.port);
    conn_open(&x, p.port);
    conn_sendv(&d, 3, argv);
    conn_sendv(&x, 3, argv);
    int sd = hx_read_n(d.fd, &d.in, want, DEADLINE_MS);
    int sx = hx_read_n(x.fd, &x.in, want, DEADLINE_MS);
    ok(sd == HX_OK && d.in.len == want, "deep reply: Redis direct sends %zu bytes (%s, %zu)", want, hx_status_name(sd),
       d.in.len);
    ok(sx == HX_OK && hx_mem_eq(d.in.data, d.in.len, x.in.data, x.in.len),
       "deep reply: hotproxy's reply equals Redis' byte for byte (%s, %zu bytes)", hx_status_name(sx), x.in.len);
    if (x.in.len < want) diag("  hotproxy sent: %.*s", (int)(x.in.len > 200 ? 200 : x.in.len), x.in.data ? x.in.data : "");
    x.in.len = 0;
    conn_send(&x, "SET div:deep:k v");
    conn_send(&x, "GET div:deep:k");
    ok(conn_expect(&x, "+OK\r\n$1\r\nv\r\n", DEADLINE_MS), "deep reply: the same client's SET and GET work after it");
    redisContext *c = hx_redis(p.port);
    is_str(hx_cmd(c, "GET div:deep:k"), "v", "deep reply: another client's GET works");
    const char *disc = hx_info_field(p.port, "hotproxy", "hotproxy_upstream_disconnects");
    ok(disc && !strcmp(disc, "0"), "deep reply: no upstream connection was dropped (disconnects %s)",
       disc ? disc : "(missing)");
    if (c) redisFree(c);
    conn_close(&d);
    conn_close(&x);
    is_int(hx_stop(&p, 20000), 0, "hotproxy exits 0 (no sanitizer report)");
    hx_kill(&r);
}

/* A had tracking on and read k, then RESET; B then pins (with tracking on
 * too) and reads only k2.  Writes to k and k2: B must get k2's invalidation
 * and never k's. */
static void tracking_connection_not_reused(void)
{
    hx_proc r, p;
    const char *extra[] = {NULL};
    if (start_pair(&r, &p, extra) != 0) {
        ok(0, "tracking reuse: redis-server and hotproxy start");
        return;
    }
    conn a, b;
    conn_open(&a, p.port);
    conn_send(&a, "HELLO 3");
    conn_send(&a, "CLIENT TRACKING on");
    conn_send(&a, "GET div:trk:k");
    conn_send(&a, "RESET");
    ok(conn_expect(&a, "+OK\r\n_\r\n+RESET\r\n", DEADLINE_MS), "tracking reuse: A tracks, reads k, RESETs");
    ok(wait_field(p.port, "hotproxy", "hotproxy_pinned_connections", "0"),
       "tracking reuse: A's connection is given up");
    conn_open(&b, p.port);
    conn_send(&b, "HELLO 3");
    conn_send(&b, "CLIENT TRACKING on");
    conn_send(&b, "GET div:trk:k2");
    ok(conn_expect(&b, "+OK\r\n_\r\n", DEADLINE_MS), "tracking reuse: B tracks and reads k2");
    redisContext *direct = hx_redis(r.port);
    hx_cmd(direct, "SET div:trk:k x");
    hx_cmd(direct, "SET div:trk:k2 y");
    long at2 = conn_find(&b, "div:trk:k2", DEADLINE_MS);
    ok(at2 >= 0, "tracking reuse: B gets the invalidation for k2, which it read");
    const char *k1 = "$9\r\ndiv:trk:k\r\n";
    ok(!memmem(b.in.data, b.in.len, k1, strlen(k1)), "tracking reuse: B gets none for k, which only A read");
    if (direct) redisFree(direct);
    conn_close(&a);
    conn_close(&b);
    is_int(hx_stop(&p, 20000), 0, "hotproxy exits 0 (no sanitizer report)");
    hx_kill(&r);
}

/* RESP3: an invalidation comes while BLPOP is still awaited: the push
 * reaches the client at once, before BLPOP's reply, as with Redis direct. */
static void push_not_held_behind_reply(void)
{
    hx_proc r, p;
    const char *extra[] = {NULL};
    if (start_pair(&r, &p, extra) != 0) {
        ok(0, "push order: redis-server and hotproxy start");
        return;
    }
    conn b;
    conn_open(&b, p.port);
    conn_send(&b, "HELLO 3");
    conn_send(&b, "CLIENT TRACKING on");
    conn_send(&b, "GET div:psh:k");
    ok(conn_expect(&b, "+OK\r\n_\r\n", DEADLINE_MS), "push order: B tracks and reads k");
    conn_send(&b, "BLPOP div:psh:list 0");
    ok(wait_field(r.port, "clients", "blocked_clients", "1"), "push order: B's BLPOP is blocked in Redis");
    redisContext *direct = hx_redis(r.port);
    hx_cmd(direct, "SET div:psh:k x");
    long at = conn_find(&b, "div:psh:k\r\n", DEADLINE_MS);
    ok(at >= 0 && b.in.data[0] == '>', "push order: the invalidation for k reaches B while BLPOP waits");
    ok(!memmem(b.in.data, b.in.len, "div:psh:list", 12), "push order: ... before BLPOP's reply");
    b.in.len = 0;
    hx_cmd(direct, "LPUSH div:psh:list v");
    ok(conn_expect(&b, "*2\r\n$12\r\ndiv:psh:list\r\n$1\r\nv\r\n", DEADLINE_MS), "push order: then BLPOP's reply");
    if (direct) redisFree(direct);
    conn_close(&b);
    is_int(hx_stop(&p, 20000), 0, "hotproxy exits 0 (no sanitizer report)");
    hx_kill(&r);
}

/* Send req on a new connection to port; read n replies (n < 0: until the
 * peer closes, as after a protocol error) into out.  Returns the status. */
static int exchange(int port, const char *req, long n, hx_buf *out)
{
    int fd = hx_connect(port);
    if (fd < 0) return HX_ERROR;
    int st = hx_send_str(fd, req) == 0 ? (n < 0 ? hx_read_eof(fd, out, DEADLINE_MS)
                                                : hx_read_replies(fd, out, n, NULL, DEADLINE_MS))
                                       : HX_ERROR;
    close(fd);
    return st;
}

/*
 * A state command Redis refuses changes nothing there, and so nothing in
 * hotproxy's picture of the client's connection: EXEC with an argument inside
 * MULTI leaves Redis in MULTI (a SUBSCRIBE after it is queued, not run), and
 * EXEC outside MULTI keeps the WATCHed keys.  Once the two pictures drifted, a
 * protocol error's marker waited for ever behind Redis' MULTI: the client was
 * never read again, and its close never seen (test_netfuzz, seed 8).
 */
static void state_follows_refusals(void)
{
    hx_proc r, p;
    if (start_pair(&r, &p, NULL) != 0) {
        ok(0, "refusals: redis-server and hotproxy start");
        return;
    }
    static const char *const seqs[][2] = {
        {"in MULTI, EXEC x then SUBSCRIBE is queued",
         "MULTI\r\nEXEC x\r\nSUBSCRIBE div:ch\r\nPING\r\nEXEC\r\n"},
        {"in MULTI, EXEC x then SUBSCRIBE, then a protocol error",
         "MULTI\r\nEXEC x\r\nSUBSCRIBE div:ch\r\n*1\r\n$-5\r\n"},
        {"in MULTI, DISCARD x, then DISCARD", "MULTI\r\nDISCARD x\r\nSET div:s:k v\r\nDISCARD\r\nGET div:s:k\r\n"},
        /* test_netfuzz seed 8: the UNSUBSCRIBE that ends RESP2 pub/sub mode
         * and a MULTI right behind it, in one write */
        {"SUBSCRIBE, UNSUBSCRIBE, MULTI, PING, EXEC in one write",
         "SUBSCRIBE div:ch\r\nUNSUBSCRIBE div:ch\r\nMULTI\r\nPING\r\nEXEC\r\n"},
        {"SUBSCRIBE, UNSUBSCRIBE, MULTI, then a protocol error",
         "SUBSCRIBE div:ch\r\nUNSUBSCRIBE div:ch\r\nMULTI\r\nSET div:s:k v\r\n*1\r\n$-5\r\n"},
    };
    static const long nreplies[] = {5, -1, 5, 5, -1};
    for (size_t i = 0; i < sizeof(seqs) / sizeof(seqs[0]); i++) {
        hx_buf want = {0}, got = {0};
        int sw = exchange(r.port, seqs[i][1], nreplies[i], &want);
        int sg = exchange(p.port, seqs[i][1], nreplies[i], &got);
        ok(sg == sw && hx_mem_eq(got.data, got.len, want.data, want.len), "refusals: %s: the same bytes as Redis (%s)",
           seqs[i][0], hx_status_name(sg));
        if (!hx_mem_eq(got.data, got.len, want.data, want.len))
            diag("  hotproxy %.*s\n  redis    %.*s", (int)got.len, got.data ? got.data : "", (int)want.len,
                 want.data ? want.data : "");
        hx_buf_free(&want);
        hx_buf_free(&got);
    }
    /* hotproxy lets go of every one of those clients (INFO's own remains) */
    const char *cc = NULL;
    double deadline = hx_now() + DEADLINE_MS / 1000.0;
    while (hx_now() < deadline && !((cc = hx_info_field(p.port, "hotproxy", "hotproxy_connected_clients")) &&
                                    atol(cc) <= 1))
        hx_sleep_ms(20);
    ok(cc && atol(cc) <= 1, "refusals: every client that closed is freed (connected_clients %s)", cc ? cc : "?");

    /* WATCH survives an EXEC without MULTI, as in Redis: the transaction
     * after it is aborted when the watched key changed meanwhile. */
    redisContext *a = hx_redis(p.port), *other = hx_redis(p.port);
    is_str(hx_cmd(a, "WATCH div:w:k"), "OK", "watch: WATCH");
    ok(!strncmp(hx_cmd(a, "EXEC"), "ERR EXEC without MULTI", 22), "watch: EXEC without MULTI is Redis' error");
    is_str(hx_cmd(other, "SET div:w:k changed"), "OK", "watch: another client changes the watched key");
    is_str(hx_cmd(a, "MULTI"), "OK", "watch: MULTI");
    is_str(hx_cmd(a, "SET div:w:k mine"), "QUEUED", "watch: SET is queued");
    is_str(hx_cmd(a, "EXEC"), "(nil)", "watch: EXEC is aborted: the WATCH was still on");
    is_str(hx_cmd(other, "GET div:w:k"), "changed", "watch: the key keeps the other client's value");
    if (a) redisFree(a);
    if (other) redisFree(other);
    is_int(hx_stop(&p, 20000), 0, "hotproxy exits 0 (no sanitizer report)");
    hx_kill(&r);
}

int main(void)
{
    hx_init(400);
    kill_reaches_busy_redis("SCRIPT KILL", NULL, "EVAL while true do end", "SCRIPT KILL", 0);
    kill_reaches_busy_redis("FUNCTION KILL",
                            "#!lua name=divloop\nredis.register_function('divloop', function() while true do end end)",
                            "FCALL divloop", "FUNCTION KILL", 1);
    shutdown_reaches_busy_redis();
    oob_commands_answered();
    wait_does_not_wedge_shared();
    wait_counts_acknowledged_writes();
    timeout_names_head_command();
    deep_reply_passes();
    tracking_connection_not_reused();
    push_not_held_behind_reply();
    state_follows_refusals();
    done_testing();
    return exit_status();
}
