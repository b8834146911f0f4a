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
#include <sys/resource.h>
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

/* CPU seconds (user + system) the process has used, from /proc/PID/stat. */
static double cpu_seconds(pid_t pid)
{
    char path[64], buf[2048];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2) return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* PING on a fresh connection: 1 for +PONG. */
static int pong(int port)
{
    hx_buf b = {0};
    int got = ask(port, "PING\r\n", 1, &b, NULL);
    int ok_ = got == 1 && b.len == 7 && !memcmp(b.data, "+PONG\r\n", 7);
    hx_buf_free(&b);
    return ok_;
}

/* Open n connections, each sending PING; returns how many got +PONG and
 * how many the max clients error.  The sockets are left open in fds. */
static void crowd(int port, int *fds, int n, int *pongs, int *full)
{
    *pongs = *full = 0;
    for (int i = 0; i < n; i++) {
        fds[i] = hx_connect(port);
        if (fds[i] >= 0) hx_send_str(fds[i], "PING\r\n");
    }
    for (int i = 0; i < n; i++) {
        hx_buf b = {0};
        if (fds[i] >= 0) hx_read_replies(fds[i], &b, 1, NULL, 300);
        *pongs += b.len == 7 && !memcmp(b.data, "+PONG\r\n", 7);
        *full += b.len > 4 && strstr(b.data, "max number of clients") != NULL;
        hx_buf_free(&b);
    }
}

/* 4a. Started under a low descriptor limit: maxclients is lowered to fit. */
static void low_nofile_at_start(void)
{
    hx_proc p;
    int port = hx_free_port();
    char portstr[16], up[64], logfile[400];
    snprintf(portstr, sizeof(portstr), "%d", port);
    snprintf(up, sizeof(up), "127.0.0.1:%d", redis.port);
    snprintf(logfile, sizeof(logfile), "%s/hotproxy-lowfd.log", hx_tmpdir());
    const char *argv[] = {"prlimit", "--nofile=64:64", hx_bin(), "--port", portstr, "--upstream", up,
                          "--logfile", logfile, NULL};
    if (hx_spawn(&p, "hotproxy-lowfd", argv) != 0) {
        ok(0, "hotproxy starts under prlimit --nofile=64:64");
        return;
    }
    p.port = port;
    snprintf(p.logfile, sizeof(p.logfile), "%s", logfile);
    if (!ok(WAIT_FOR(pong(port), 15000), "hotproxy started under prlimit --nofile=64:64 answers PING")) {
        hx_diag_file(p.outfile, 4096);
        hx_kill(&p);
        return;
    }
    ok(count_lines(logfile, "maxclients has been reduced to") == 1, "the log says maxclients was lowered to fit");

    int fds[100], pongs, full;
    double cpu0 = cpu_seconds(p.pid);
    crowd(port, fds, 100, &pongs, &full);
    diag("100 connections: %d PONG, %d max clients errors", pongs, full);
    ok(pongs >= 5 && pongs + full == 100, "100 connections: every one answered, PONG or 'max number of clients reached'");
    long lines = count_lines(logfile, "Too many open files");
    ok(lines >= 0 && lines <= 3, "the log holds at most 3 'Too many open files' lines (%ld)", lines);
    double cpu1 = cpu_seconds(p.pid);
    hx_sleep_ms(1000); /* a window to measure CPU over, not a wait for anything */
    double cpu2 = cpu_seconds(p.pid);
    ok(cpu2 - cpu1 < 0.5, "not spinning: %.2f CPU s over a 1 s window (%.2f s for the 100 connections)", cpu2 - cpu1,
       cpu1 - cpu0);
    for (int i = 0; i < 100; i++)
        if (fds[i] >= 0) close(fds[i]);
    ok(WAIT_FOR(pong(port), 10000), "after they close, a new client is served");
    is_int(hx_stop(&p, 15000), 0, "hotproxy exits 0");
}

/* 4b. Descriptors run out while running: accepting pauses, no spin. */
static void fd_exhaustion_while_running(void)
{
    hx_proc p;
    if (hx_proxy_start(&p, 0, redis.port, NULL) != 0) {
        ok(0, "hotproxy starts");
        return;
    }
    pong(p.port); /* the shared connection and the link are up */
    struct rlimit rl = {48, 48};
    if (!ok(prlimit(p.pid, RLIMIT_NOFILE, &rl, NULL) == 0, "lower the running hotproxy's RLIMIT_NOFILE to 48")) {
        hx_stop(&p, 15000);
        return;
    }
    int fds[80], pongs, full;
    double cpu0 = cpu_seconds(p.pid);
    crowd(p.port, fds, 80, &pongs, &full);
    diag("80 connections: %d PONG, %d max clients errors", pongs, full);
    ok(pongs > 0 && pongs < 80, "80 connections: some are served, the rest wait in the backlog");
    double cpu1 = cpu_seconds(p.pid);
    hx_sleep_ms(1000); /* a window to measure CPU over */
    double cpu2 = cpu_seconds(p.pid);
    ok(cpu2 - cpu1 < 0.5, "not spinning: %.2f CPU s over a 1 s window (%.2f s for the connections)", cpu2 - cpu1,
       cpu1 - cpu0);
    long lines = count_lines(p.logfile, "Too many open files");
    ok(lines >= 1 && lines <= 3, "'Too many open files' is logged once per episode (%ld lines)", lines);
    for (int i = 0; i < 80; i++)
        if (fds[i] >= 0) close(fds[i]);
    ok(WAIT_FOR(pong(p.port), 10000), "after they close, a new client is served");
    const char *n = hx_info_field(p.port, "hotproxy_stats", "hotproxy_accept_fd_exhaustions");
    ok(n && atoi(n) >= 1, "INFO counts hotproxy_accept_fd_exhaustions (%s)", n ? n : "missing");
    is_int(hx_stop(&p, 15000), 0, "hotproxy exits 0");
}

/* 9. maxmemory-clients: slow consumers are disconnected, biggest first. */
static void maxmemory_clients(void)
{
    hx_proc p;
    if (hx_proxy_start(&p, 0, redis.port, "--l1", "no", NULL) != 0) {
        ok(0, "hotproxy starts");
        return;
    }
    redisContext *c = hx_redis(p.port);
    is_str(hx_cmd(c, "HOTPROXY CONFIG SET maxmemory-clients 8mb"), "OK", "HOTPROXY CONFIG SET maxmemory-clients 8mb");
    redisReply *r = c ? redisCommand(c, "HOTPROXY CONFIG GET maxmemory-clients") : NULL;
    ok(r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[1]->str &&
           !strcmp(r->element[1]->str, "8388608"),
       "HOTPROXY CONFIG GET maxmemory-clients: 8388608");
    if (r) freeReplyObject(r);
    size_t vlen = 1024 * 1024;
    char *value = malloc(vlen);
    memset(value, 'm', vlen);
    r = redisCommand(c, "SET hostile:big %b", value, vlen);
    ok(r && r->type == REDIS_REPLY_STATUS, "SET a 1 MB value");
    if (r) freeReplyObject(r);
    free(value);

    /* three clients ask for 40 MB each and never read */
    int slow[3];
    hx_buf req = {0};
    for (int i = 0; i < 40; i++) hx_buf_printf(&req, "GET hostile:big\r\n");
    for (int i = 0; i < 3; i++) {
        slow[i] = hx_connect(p.port);
        hx_send(slow[i], req.data, req.len, 5000);
    }
    hx_buf_free(&req);
    int gone = WAIT_FOR(info_long(p.port, "hotproxy_stats", "hotproxy_maxmemory_clients_disconnects") >= 3, 20000);
    ok(gone, "the three slow consumers are disconnected (maxmemory_clients_disconnects %ld)",
       info_long(p.port, "hotproxy_stats", "hotproxy_maxmemory_clients_disconnects"));
    for (int i = 0; i < 3; i++) {
        hx_buf b = {0};
        int st = hx_read_eof(slow[i], &b, 20000);
        ok(st == HX_EOF || st == HX_RESET, "slow consumer %d: its connection is closed (%s, after %zu bytes)", i,
           hx_status_name(st), b.len);
        hx_buf_free(&b);
    }
    is_str(hx_cmd(c, "PING"), "PONG", "a client that reads its replies is still served");
    r = redisCommand(c, "GET hostile:big");
    ok(r && r->type == REDIS_REPLY_STRING && r->len == 1024 * 1024, "... big replies included");
    if (r) freeReplyObject(r);
    ok(count_lines(p.logfile, "over maxmemory-clients") >= 3, "each disconnection is logged");
    for (int i = 0; i < 3; i++) close(slow[i]);
    if (c) redisFree(c);
    is_int(hx_stop(&p, 15000), 0, "hotproxy exits 0");
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

/* test_hostile [name...]: only the sections named (all when none). */
int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } sections[] = {
        {"empty_command", empty_command_unauthenticated},
        {"unauth_limits", unauthenticated_limits},
        {"vanishing_blocked", vanishing_blocked_clients},
        {"blocked_at_sigterm", blocked_at_sigterm},
        {"secrets", secrets_on_command_line},
        {"sighup", sighup_without_config_file},
        {"low_nofile", low_nofile_at_start},
        {"fd_exhaustion", fd_exhaustion_while_running},
        {"maxmemory_clients", maxmemory_clients},
    };
    hx_init(280);
    if (hx_redis_start(&redis, 0) != 0) {
        plan(1);
        ok(0, "redis-server starts");
        return exit_status();
    }
    for (size_t i = 0; i < sizeof(sections) / sizeof(sections[0]); i++) {
        int run = argc < 2;
        for (int j = 1; j < argc; j++) run |= !strcmp(argv[j], sections[i].name);
        if (run) sections[i].fn();
    }
    hx_stop(&redis, 10000);
    done_testing();
    return exit_status();
}
