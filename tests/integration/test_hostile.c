/*
 * test_hostile: hostile and unlucky inputs (the "Hostile and unlucky
 * inputs" issue), each against a real redis-server and hotproxy.
 *
 *  - a command of only empty arguments before authentication;
 *  - unauthenticated clients declaring large requests (Redis' limits);
 *  - clients that vanish behind a blocking command (freed, with their
 *    pinned connection and the blocked client inside Redis);
 *  - a blocking command in flight at SIGTERM (no leak at exit);
 *  - descriptor exhaustion (no spinning, maxclients lowered at start);
 *  - secrets on the command line (scrubbed from /proc/PID/cmdline);
 *  - maxmemory-clients (the biggest consumers are disconnected);
 *  - SIGHUP without a config file reloads the command line.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "tap.h"

static hx_proc redis;

/* Poll cond() until it holds or timeout_ms pass; returns its last value. */
#define WAIT_FOR(cond, timeout_ms)                                   \
    ({                                                               \
        double until_ = hx_now() + (timeout_ms) / 1000.0;            \
        int ok_;                                                     \
        while (!(ok_ = !!(cond)) && hx_now() < until_) hx_sleep_ms(20); \
        ok_;                                                         \
    })

static long info_long(int port, const char *section, const char *field)
{
    const char *v = hx_info_field(port, section, field);
    return v ? atol(v) : -1;
}

static long redis_blocked(void) { return info_long(redis.port, "clients", "blocked_clients"); }
static long redis_clients(void) { return info_long(redis.port, "clients", "connected_clients"); }
static long proxy_pinned(int port) { return info_long(port, "hotproxy", "hotproxy_pinned_connections"); }
static long proxy_clients(int port) { return info_long(port, "hotproxy", "hotproxy_connected_clients"); }

/* Send req on a fresh connection; read until n replies or the close. */
static int ask(int port, const char *req, long n, hx_buf *out, int *closed)
{
    int fd = hx_connect(port);
    if (fd < 0) return -1;
    hx_send_str(fd, req);
    long got = 0;
    int st = hx_read_replies(fd, out, n, &got, 5000);
    if (closed) {
        if (st == HX_OK) st = hx_read_eof(fd, out, 2000);
        *closed = st == HX_EOF || st == HX_RESET;
    }
    close(fd);
    return (int)got;
}

/* Lines of a file holding needle. */
static long count_lines(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[4096];
    long n = 0;
    while (fgets(line, sizeof(line), f))
        if (strstr(line, needle)) n++;
    fclose(f);
    return n;
}

/* 1. A command of only empty arguments, before authentication. */
static void empty_command_unauthenticated(void)
{
    hx_proc p;
    if (hx_proxy_start(&p, 0, redis.port, "--requirepass", "pw", NULL) != 0) {
        ok(0, "hotproxy --requirepass starts");
        return;
    }
    static const char *const reqs[] = {"\"\"\r\n", "''\r\n", "\"\" \"\"\r\n", "*1\r\n$0\r\n\r\n"};
    for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
        hx_buf b = {0};
        int fd = hx_connect(p.port);
        hx_send_str(fd, reqs[i]);
        hx_send_str(fd, "PING\r\n");
        long got = 0;
        hx_read_replies(fd, &b, 2, &got, 5000);
        ok(got == 2 && b.len > 0 && b.data[0] == '-', "empty command name #%zu before AUTH: an error, and the connection "
           "still answers", i);
        close(fd);
        hx_buf_free(&b);
    }
    ok(hx_alive(&p), "hotproxy is still running");
    is_int(hx_stop(&p, 15000), 0, "hotproxy exits 0 (no sanitizer report)");
}

/* 3. Unauthenticated clients may not make hotproxy buffer large requests. */
static void unauthenticated_limits(void)
{
    hx_proc p;
    if (hx_proxy_start(&p, 0, redis.port, "--requirepass", "pw", NULL) != 0) {
        ok(0, "hotproxy --requirepass starts");
        return;
    }
    hx_buf b = {0};
    int closed = 0;
    ask(p.port, "*11\r\n", 1, &b, &closed);
    is_mem(b.data, b.len, "-ERR Protocol error: unauthenticated multibulk length\r\n", 55,
           "*11 before AUTH: Redis' unauthenticated multibulk length error");
    ok(closed, "... then the connection is closed");
    hx_buf_reset(&b);
    ask(p.port, "*2\r\n$4\r\nAUTH\r\n$16385\r\n", 1, &b, &closed);
    is_mem(b.data, b.len, "-ERR Protocol error: unauthenticated bulk length\r\n", 50,
           "a 16385-byte bulk before AUTH: Redis' unauthenticated bulk length error");
    ok(closed, "... then the connection is closed");
    hx_buf_reset(&b);

    /* The case: a 512 MB bulk declared and streamed. */
    int fd = hx_connect(p.port);
    hx_send_str(fd, "*2\r\n$4\r\nAUTH\r\n$536870912\r\n");
    char chunk[65536];
    memset(chunk, 'x', sizeof(chunk));
    long sent = 0;
    for (int i = 0; i < 1024; i++) { /* up to 64 MB; the close stops it early */
        if (hx_send(fd, chunk, sizeof(chunk), 2000) != 0) break;
        sent += (long)sizeof(chunk);
    }
    ok(sent < 64L * 1024 * 1024, "streaming a declared 512 MB bulk before AUTH: hotproxy closes early (%ld bytes sent)",
       sent);
    close(fd);

    /* Authenticated, the same sizes are fine. */
    redisContext *c = hx_redis(p.port);
    is_str(hx_cmd(c, "AUTH pw"), "OK", "AUTH pw");
    char big[20000];
    memset(big, 'v', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    is_str(hx_cmd(c, "SET hostile:big %s", big), "OK", "authenticated: a 20 KB value is accepted");
    is_str(hx_cmd(c, "DEL a b c d e f g h i j k"), "0", "authenticated: 12 arguments are accepted");
    if (c) redisFree(c);
    hx_buf_free(&b);
    is_int(hx_stop(&p, 15000), 0, "hotproxy exits 0");
}

/* 2. Clients that vanish while hotproxy holds their commands. */
static int blocked_then_close(int port, const char *after)
{
    int fd = hx_connect(port);
    if (fd < 0) return -1;
    hx_send_str(fd, "BLPOP hostile:never 0\r\n");
    /* BLPOP reached Redis before what follows is sent */
    if (!WAIT_FOR(redis_blocked() >= 1, 10000)) diag("BLPOP did not block in Redis");
    hx_send_str(fd, after);
    return fd;
}

static void vanishing_blocked_clients(void)
{
    hx_proc p;
    if (hx_proxy_start(&p, 0, redis.port, "--upstream-max-pinned", "3", "--upstream-max-inflight", "4",
                        "--upstream-spare", "0", "--l1", "no", NULL) != 0) {
        ok(0, "hotproxy starts");
        return;
    }
    /* the baseline once the shared connection is up (no L1: no link) */
    redisContext *c = hx_redis(p.port);
    hx_cmd(c, "GET hostile:x");
    if (c) redisFree(c);
    long base_clients = redis_clients();
    long base_proxy = proxy_clients(p.port);

    /* BLPOP, then RESET (held until BLPOP is answered), then gone */
    int fd = blocked_then_close(p.port, "RESET\r\n");
    ok(WAIT_FOR(proxy_pinned(p.port) == 1, 10000), "BLPOP then RESET: the client holds a pinned connection");
    close(fd);
    ok(WAIT_FOR(proxy_pinned(p.port) == 0, 10000), "... closed: its pinned connection goes (%ld)", proxy_pinned(p.port));
    ok(WAIT_FOR(redis_blocked() == 0, 10000), "... and the blocked client in Redis too (%ld)", redis_blocked());
    ok(WAIT_FOR(redis_clients() == base_clients, 10000), "... Redis' client count is back to %ld (%ld)", base_clients,
       redis_clients());
    ok(WAIT_FOR(proxy_clients(p.port) == base_proxy, 10000), "... hotproxy's client count is back to %ld (%ld)",
       base_proxy, proxy_clients(p.port));

    /* BLPOP, then more pipelined commands than upstream-max-inflight */
    hx_buf many = {0};
    for (int i = 0; i < 20; i++) hx_buf_printf(&many, "PING\r\n");
    hx_buf_append(&many, "", 1);
    fd = blocked_then_close(p.port, many.data);
    hx_buf_free(&many);
    ok(WAIT_FOR(proxy_pinned(p.port) == 1, 10000), "BLPOP then 20 PINGs: the client holds a pinned connection");
    close(fd);
    ok(WAIT_FOR(proxy_pinned(p.port) == 0 && redis_blocked() == 0, 10000),
       "... closed: pinned connection and blocked client gone (pinned %ld, blocked %ld)", proxy_pinned(p.port),
       redis_blocked());
    ok(WAIT_FOR(proxy_clients(p.port) == base_proxy, 10000), "... hotproxy's client count is back to %ld (%ld)",
       base_proxy, proxy_clients(p.port));

    /* upstream-max-pinned 3: three vanished clients must not use it up */
    for (int i = 0; i < 3; i++) {
        fd = blocked_then_close(p.port, "RESET\r\n");
        WAIT_FOR(proxy_pinned(p.port) == 1, 10000);
        close(fd);
        WAIT_FOR(proxy_pinned(p.port) == 0, 10000);
    }
    c = hx_redis(p.port);
    is_str(hx_cmd(c, "BLPOP hostile:never 0.05"), "(nil)",
           "after 3 vanished blocked clients (upstream-max-pinned 3), another client still gets a connection");
    if (c) redisFree(c);
    ok(WAIT_FOR(redis_blocked() == 0 && redis_clients() == base_clients, 10000),
       "Redis' clients are back to the baseline (%ld)", redis_clients());
    is_int(hx_stop(&p, 15000), 0, "hotproxy exits 0");
}

/* 8. A blocking command in flight at SIGTERM. */
static void blocked_at_sigterm(void)
{
    hx_proc p;
    if (hx_proxy_start(&p, 0, redis.port, "--shutdown-timeout", "1", NULL) != 0) {
        ok(0, "hotproxy starts");
        return;
    }
    int fd = hx_connect(p.port);
    hx_send_str(fd, "BLPOP hostile:never 0\r\n");
    ok(WAIT_FOR(redis_blocked() == 1, 10000), "a client is blocked in BLPOP through hotproxy");
    is_int(hx_stop(&p, 15000), 0, "SIGTERM with a blocking command in flight: exits 0 (no leak reported)");
    close(fd);
    WAIT_FOR(redis_blocked() == 0, 10000);
}

/* The bytes of /proc/PID/cmdline, NULs turned into spaces. */
static void read_cmdline(pid_t pid, hx_buf *out)
{
    char path[64], buf[4096];
    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return;
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0) {
        for (ssize_t i = 0; i < n; i++)
            if (!buf[i]) buf[i] = ' ';
        hx_buf_append(out, buf, (size_t)n);
    }
    close(fd);
    hx_buf_append(out, "", 1);
}

/* 7. Secrets on the command line. */
static void secrets_on_command_line(void)
{
    hx_proc p;
    if (hx_proxy_start(&p, 0, redis.port, "--requirepass", "hostile-s3cret-pw", "--user", "alice", "on",
                       ">alice-s3cret-pw", NULL) != 0) {
        ok(0, "hotproxy --requirepass --user starts");
        return;
    }
    hx_buf cl = {0};
    read_cmdline(p.pid, &cl);
    ok(cl.len > 0 && strstr(cl.data, "--requirepass") != NULL, "/proc/PID/cmdline is readable");
    if (!ok(cl.len > 0 && !strstr(cl.data, "s3cret"), "/proc/PID/cmdline shows neither password"))
        diag("cmdline: %s", cl.data);
    hx_buf_free(&cl);

    /* reload reads the command line as it was given, passwords included */
    redisContext *c = hx_redis(p.port);
    is_str(hx_cmd(c, "AUTH hostile-s3cret-pw"), "OK", "AUTH with requirepass");
    is_str(hx_cmd(c, "HOTPROXY CONFIG RELOAD"), "OK", "HOTPROXY CONFIG RELOAD");
    if (c) redisFree(c);
    c = hx_redis(p.port);
    is_str(hx_cmd(c, "AUTH hostile-s3cret-pw"), "OK", "after the reload, requirepass is still accepted");
    is_str(hx_cmd(c, "AUTH alice alice-s3cret-pw"), "OK", "... and alice's password");
    ok(!strncmp(hx_cmd(c, "AUTH xxxxxxxxxxxxxxxxx"), "WRONGPASS", 9), "... and the scrubbed text is not a password");
    if (c) redisFree(c);
    is_int(hx_stop(&p, 15000), 0, "hotproxy exits 0");
}

/* 11. SIGHUP reloads the configuration when there is no config file too. */
static void sighup_without_config_file(void)
{
    hx_proc p;
    if (hx_proxy_start(&p, 0, redis.port, "--timeout", "100", NULL) != 0) {
        ok(0, "hotproxy starts");
        return;
    }
    kill(p.pid, SIGHUP);
    ok(WAIT_FOR(count_lines(p.logfile, "Config reloaded from the command line") == 1, 10000),
       "SIGHUP with no config file: the command line is read again (logged)");
    redisContext *c = hx_redis(p.port);
    is_str(hx_cmd(c, "PING"), "PONG", "... and hotproxy still serves");
    if (c) redisFree(c);
    is_int(hx_stop(&p, 15000), 0, "hotproxy exits 0");
}

int main(void)
{
    hx_init(280);
    if (hx_redis_start(&redis, 0) != 0) {
        plan(1);
        ok(0, "redis-server starts");
        return exit_status();
    }
    empty_command_unauthenticated();
    unauthenticated_limits();
    vanishing_blocked_clients();
    blocked_at_sigterm();
    secrets_on_command_line();
    sighup_without_config_file();
    hx_stop(&redis, 10000);
    done_testing();
    return exit_status();
}
