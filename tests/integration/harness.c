/*
 * harness.c: processes, ports and sockets for the integration tests.  See
 * harness.h.
 *
 * The reply scanner below is the tests' own, written from the RESP2 spec: a
 * test that judged hotproxy's bytes with hotproxy's own scanner would share
 * its bugs.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "tap.h"

#define MAX_PROCS 64

static pid_t owner_pid;              /* the test process; forked children are not it */
static char tmpdir[256];
static char bin[PATH_MAX];
static pid_t procs[MAX_PROCS];       /* every child still to reap */
static unsigned watchdog_secs;

static int ms_left(double deadline);
static int conn_fd(int port);
static redisContext *conn_ctx(int port, int timeout_s, char *why, size_t cap);
static void cli_tls_argv(int port, const char **argv, int *n);
static const char *info_value(const char *text, const char *field, char *out, size_t cap);

/* --- buffers --------------------------------------------------------------- */

void hx_buf_reserve(hx_buf *b, size_t n)
{
    if (b->cap - b->len >= n) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < n) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) abort();
    b->data = d;
    b->cap = cap;
}

void hx_buf_append(hx_buf *b, const void *p, size_t n)
{
    if (!n) return;
    hx_buf_reserve(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

void hx_buf_printf(hx_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    hx_buf_reserve(b, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void hx_buf_command(hx_buf *b, int argc, const char *const *argv, const size_t *argvlen)
{
    hx_buf_printf(b, "*%d\r\n", argc);
    for (int i = 0; i < argc; i++) {
        size_t l = argvlen ? argvlen[i] : strlen(argv[i]);
        hx_buf_printf(b, "$%zu\r\n", l);
        hx_buf_append(b, argv[i], l);
        hx_buf_append(b, "\r\n", 2);
    }
}

void hx_buf_reset(hx_buf *b) { b->len = 0; }

int hx_mem_eq(const void *a, size_t alen, const void *b, size_t blen)
{
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

void hx_buf_free(hx_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

/* --- the test process ------------------------------------------------------ */

double hx_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void hx_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

const char *hx_tmpdir(void) { return tmpdir; }
const char *hx_bin(void) { return bin; }

static void track(pid_t pid)
{
    for (int i = 0; i < MAX_PROCS; i++)
        if (!procs[i]) {
            procs[i] = pid;
            return;
        }
    fprintf(stderr, "harness: more than %d processes\n", MAX_PROCS);
    kill(pid, SIGKILL);
    abort();
}

static void untrack(pid_t pid)
{
    for (int i = 0; i < MAX_PROCS; i++)
        if (procs[i] == pid) procs[i] = 0;
}

/* Async-signal-safe: kill and reap every child, remove the temp dir with a
 * forked rm (nftw would allocate), and nothing else. */
static void cleanup_all(void)
{
    for (int i = 0; i < MAX_PROCS; i++)
        if (procs[i] > 0) kill(procs[i], SIGKILL);
    for (int i = 0; i < MAX_PROCS; i++)
        if (procs[i] > 0) {
            while (waitpid(procs[i], NULL, 0) < 0 && errno == EINTR) {
            }
            procs[i] = 0;
        }
    if (tmpdir[0] && !getenv("HOTPROXY_KEEP_TMP")) {
        pid_t pid = fork();
        if (pid == 0) {
            char *argv[] = {"rm", "-rf", tmpdir, NULL};
            execvp("rm", argv);
            _exit(127);
        }
        if (pid > 0)
            while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
            }
        tmpdir[0] = '\0';
    }
}

static void at_exit(void)
{
    if (getpid() != owner_pid) return;
    cleanup_all();
}

static void on_signal(int sig)
{
    if (getpid() != owner_pid) _exit(128 + sig);
    if (sig == SIGABRT) {
        /* a failed assert or a sanitizer report in the test itself: clean
         * up, then die of the abort as intended */
        cleanup_all();
        signal(SIGABRT, SIG_DFL);
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGABRT);
        sigprocmask(SIG_UNBLOCK, &set, NULL);
        raise(SIGABRT);
        _exit(128 + sig);
    }
    if (sig == SIGALRM) {
        char msg[128];
        int n = snprintf(msg, sizeof(msg), "# watchdog: the test ran longer than %u s, stopped\n", watchdog_secs);
        ssize_t w = write(STDOUT_FILENO, msg, (size_t)n);
        (void)w;
    }
    cleanup_all();
    _exit(128 + sig);
}

/* What every program that starts processes needs: limits, the temp dir, the
 * cleanup handlers and the watchdog. */
static void init_processes(unsigned watchdog_seconds)
{
    /* 1,000 clients need more descriptors than the usual soft limit; the
     * children (hotproxy, redis-server) inherit this. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 16384) {
        rl.rlim_cur = rl.rlim_max < 16384 ? rl.rlim_max : 16384;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof(tmpdir), "%s/hotproxy-it-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        exit(255);
    }
    atexit(at_exit);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGALRM, SIGABRT};
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) sigaction(sigs[i], &sa, NULL);
    signal(SIGPIPE, SIG_IGN); /* writes to a closed peer return EPIPE */
    watchdog_secs = watchdog_seconds;
    alarm(watchdog_seconds);
}

int hx_init_servers(unsigned watchdog_seconds)
{
    owner_pid = getpid();
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (system("command -v redis-server >/dev/null 2>&1") != 0) return -1;
    init_processes(watchdog_seconds);
    return 0;
}

void hx_init(unsigned watchdog_seconds)
{
    owner_pid = getpid();
    setvbuf(stdout, NULL, _IOLBF, 0);

    const char *env = getenv("HOTPROXY_BIN");
    if (env && *env) {
        snprintf(bin, sizeof(bin), "%s", env);
    } else if (access("./build/hotproxy", X_OK) == 0) {
        snprintf(bin, sizeof(bin), "./build/hotproxy");
    } else {
        /* <build>/tests/integration/test_x -> <build>/hotproxy */
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n > 0) {
            self[n] = '\0';
            char *slash = strrchr(self, '/');
            if (slash) *slash = '\0';
            snprintf(bin, sizeof(bin), "%.*s/../../hotproxy", (int)(sizeof(bin) - 20), self);
        }
    }
    if (access(bin, X_OK) != 0) {
        char why[PATH_MAX + 64];
        snprintf(why, sizeof(why), "no hotproxy binary at '%s' (set HOTPROXY_BIN)", bin);
        skip_all(why);
    }
    if (system("command -v redis-server >/dev/null 2>&1") != 0) skip_all("redis-server is not installed");
    init_processes(watchdog_seconds);
}

int hx_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = 0;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        perror("hx_free_port");
        if (fd >= 0) close(fd);
        return -1;
    }
    close(fd);
    return ntohs(sa.sin_port);
}

void hx_diag_file(const char *path, size_t maxbytes)
{
    FILE *f = fopen(path, "r");
    if (!f) return;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    if (size > (long)maxbytes) fseek(f, size - (long)maxbytes, SEEK_SET);
    else fseek(f, 0, SEEK_SET);
    char line[1024];
    diag("---- %s%s", path, size > (long)maxbytes ? " (tail)" : "");
    while (fgets(line, sizeof(line), f)) {
        size_t l = strlen(line);
        if (l && line[l - 1] == '\n') line[l - 1] = '\0';
        diag("| %s", line);
    }
    fclose(f);
}

/* --- processes ------------------------------------------------------------- */

int hx_spawn(hx_proc *p, const char *name, const char *const *argv)
{
    memset(p, 0, sizeof(*p));
    snprintf(p->name, sizeof(p->name), "%s", name);
    snprintf(p->outfile, sizeof(p->outfile), "%s/%s.out", tmpdir, name);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        diag("fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != owner_pid) _exit(127);
        signal(SIGPIPE, SIG_DFL);
        int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGALRM, SIGABRT};
        for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) signal(sigs[i], SIG_DFL);
        int in = open("/dev/null", O_RDONLY);
        int out = open(p->outfile, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (in >= 0) dup2(in, STDIN_FILENO);
        if (out >= 0) {
            dup2(out, STDOUT_FILENO);
            dup2(out, STDERR_FILENO);
        }
        execvp(argv[0], (char *const *)argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    track(pid);
    p->pid = pid;
    return 0;
}

static int decode_status(int st)
{
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
    return -1;
}

int hx_alive(hx_proc *p)
{
    if (p->pid <= 0) return 0;
    int st;
    pid_t r = waitpid(p->pid, &st, WNOHANG);
    if (r == 0) return 1;
    untrack(p->pid);
    p->pid = 0;
    hx_tls_register(p->port, NULL);
    return 0;
}

int hx_wait_exit(hx_proc *p, int timeout_ms)
{
    if (p->pid <= 0) return -1;
    double deadline = hx_now() + timeout_ms / 1000.0;
    while (1) {
        int st;
        pid_t r = waitpid(p->pid, &st, WNOHANG);
        if (r == p->pid) {
            untrack(p->pid);
            p->pid = 0;
            hx_tls_register(p->port, NULL);
            int code = decode_status(st);
            if (code != 0) {
                diag("%s exited with status %d", p->name, code);
                hx_diag_file(p->outfile, 8192);
            }
            return code;
        }
        if (r < 0 && errno != EINTR) {
            untrack(p->pid);
            p->pid = 0;
            return -1;
        }
        if (hx_now() >= deadline) return -2;
        hx_sleep_ms(10);
    }
}

int hx_stop(hx_proc *p, int timeout_ms)
{
    if (p->pid <= 0) return -1;
    kill(p->pid, SIGTERM);
    int code = hx_wait_exit(p, timeout_ms);
    if (code == -2) {
        diag("%s did not exit within %d ms of SIGTERM: killed", p->name, timeout_ms);
        hx_diag_file(p->outfile, 8192);
        hx_kill(p);
        return -1;
    }
    return code;
}

void hx_kill(hx_proc *p)
{
    if (p->pid <= 0) return;
    kill(p->pid, SIGKILL);
    while (waitpid(p->pid, NULL, 0) < 0 && errno == EINTR) {
    }
    untrack(p->pid);
    p->pid = 0;
    hx_tls_register(p->port, NULL);
}

/* PING until +PONG, for up to timeout_ms; then QUIT and wait for the close, so
 * the probe's connection is gone (from maxclients' count too) on return. */
static int wait_ready(hx_proc *p, int timeout_ms)
{
    double deadline = hx_now() + timeout_ms / 1000.0;
    while (hx_now() < deadline) {
        if (!hx_alive(p)) return -1;
        int fd = conn_fd(p->port);
        if (fd >= 0) {
            /* serving: PONG, or NOAUTH from a server with a password */
            hx_buf b = {0};
            long got = 0;
            int ok = hx_send_str(fd, "PING\r\n") == 0 && hx_read_replies(fd, &b, 1, &got, 2000) == HX_OK &&
                     got == 1 &&
                     (hx_mem_eq(b.data, b.len, "+PONG\r\n", 7) || (b.len >= 7 && !memcmp(b.data, "-NOAUTH", 7)));
            if (ok) {
                hx_buf_reset(&b);
                hx_send_str(fd, "QUIT\r\n");
                hx_read_eof(fd, &b, 2000);
            }
            hx_buf_free(&b);
            close(fd);
            if (ok) return 0;
        }
        hx_sleep_ms(20);
    }
    return -1;
}

int hx_file_contains(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    int found = 0;
    while (f && !found && fgets(line, sizeof(line), f)) found = strstr(line, needle) != NULL;
    if (f) fclose(f);
    return found;
}

/* A free port for a cluster node: its bus port (+10000) must exist and be
 * free too, so at most 55535. */
static int cluster_free_port(void)
{
    for (int i = 0; i < 1000; i++) {
        int pt = hx_free_port();
        if (pt <= 0 || pt > 55535) continue;
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa;
        memset(&sa, 0, sizeof(sa));
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sa.sin_port = htons((uint16_t)(pt + 10000));
        int free_bus = fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        if (fd >= 0) close(fd);
        if (free_bus) return pt;
    }
    return -1;
}

/* A hiredis context to a data node, authenticated when it has a password;
 * NULL without a diag (callers poll). */
static redisContext *node_connect(int port, const char *password)
{
    char why[256];
    redisContext *c = conn_ctx(port, 5, why, sizeof(why));
    if (!c) return NULL;
    if (password && *password) {
        redisReply *r = redisCommand(c, "AUTH %s", password);
        int authed = r && r->type == REDIS_REPLY_STATUS;
        if (r) freeReplyObject(r);
        if (!authed) {
            redisFree(c);
            return NULL;
        }
    }
    return c;
}

/* Poll one INFO field of the node on port until it reads want. */
static int node_info_wait(int port, const char *password, const char *section, const char *field,
                          const char *want, int timeout_ms)
{
    double deadline = hx_now() + timeout_ms / 1000.0;
    do {
        redisContext *c = node_connect(port, password);
        const char *v = c ? hx_info_get(c, section, field) : NULL;
        int done = v && !strcmp(v, want);
        if (c) redisFree(c);
        if (done) return 0;
        hx_sleep_ms(50);
    } while (hx_now() < deadline);
    return -1;
}

int hx_redis_start_opts(hx_proc *p, const hx_redis_opts *o)
{
    const char *base = o->name && *o->name ? o->name : "redis";
    for (int attempt = 0; attempt < 3; attempt++) {
        int pt = o->port ? o->port : hx_free_port();
        char portstr[16], name[48], logfile[512], rdb[64], master[16], nodes[64], cert[400], key[400], ca[400];
        snprintf(portstr, sizeof(portstr), "%d", pt);
        snprintf(name, sizeof(name), "%.30s-%d", base, pt);
        snprintf(logfile, sizeof(logfile), "%s/%s.log", tmpdir, name);
        /* an RDB file of its own: a replica writes the one it syncs, and a
         * node started later in the same directory would load it */
        snprintf(rdb, sizeof(rdb), "%s.rdb", name);
        const char *argv[96] = {"redis-server", "--port", portstr, "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", tmpdir, "--daemonize", "no",
                                "--logfile", logfile, "--dbfilename", rdb};
        int n = 17;
        if (o->tls_dir) {
            const char *c = o->tls_cert ? o->tls_cert : "server";
            snprintf(cert, sizeof(cert), "%s/%s.crt", o->tls_dir, c);
            snprintf(key, sizeof(key), "%s/%s.key", o->tls_dir, c);
            snprintf(ca, sizeof(ca), "%s/ca.crt", o->tls_dir);
            const char *tls[] = {"--port", "0", "--tls-port", portstr, "--tls-cert-file", cert,
                                 "--tls-key-file", key, "--tls-ca-cert-file", ca, "--tls-replication", "yes",
                                 "--tls-cluster", "yes"};
            for (size_t i = 0; i < sizeof(tls) / sizeof(tls[0]); i++) argv[n++] = tls[i];
            if (o->tls_auth_clients) {
                argv[n++] = "--tls-auth-clients";
                argv[n++] = o->tls_auth_clients;
            }
            /* the harness presents the client certificate, and verifies the
             * server's unless the test chose a bad one on purpose */
            hx_tls t;
            hx_tls_client(&t, o->tls_dir, "client");
            t.insecure = o->tls_cert != NULL;
            hx_tls_register(pt, &t);
        }
        if (o->password) {
            argv[n++] = "--requirepass";
            argv[n++] = o->password;
            argv[n++] = "--masterauth";
            argv[n++] = o->password;
        }
        if (o->replicaof) {
            snprintf(master, sizeof(master), "%d", o->replicaof);
            argv[n++] = "--replicaof";
            argv[n++] = "127.0.0.1";
            argv[n++] = master;
        }
        /* nodes share the temp dir: each its own cluster config file (a
         * plain server never reads it) */
        snprintf(nodes, sizeof(nodes), "nodes-%d.conf", pt);
        argv[n++] = "--cluster-config-file";
        argv[n++] = nodes;
        for (int i = 0; o->extra && o->extra[i]; i++) {
            if (n >= 95) {
                diag("hx_redis_start_opts: too many extra arguments");
                return -1;
            }
            argv[n++] = o->extra[i];
        }
        argv[n] = NULL;
        if (hx_spawn(p, name, argv) != 0) return -1;
        p->port = pt;
        snprintf(p->logfile, sizeof(p->logfile), "%s", logfile);
        if (wait_ready(p, 10000) == 0) {
            if (!o->replicaof) return 0;
            if (node_info_wait(pt, o->password, "replication", "master_link_status", "up", 20000) == 0) return 0;
            diag("redis-server on port %d: no link to its master on %d within 20 s", pt, o->replicaof);
            hx_diag_file(p->logfile, 4096);
            hx_kill(p);
            return -1; /* the master's trouble, not the port's */
        }
        diag("redis-server on port %d did not start", pt);
        hx_diag_file(p->outfile, 4096);
        hx_diag_file(p->logfile, 4096);
        hx_kill(p);
        hx_tls_register(pt, NULL);
        if (o->port) break; /* a port the test chose: no retry elsewhere */
        /* another port helps only when someone took this one meanwhile */
        if (!hx_file_contains(p->logfile, "in use") && !hx_file_contains(p->outfile, "in use")) break;
    }
    return -1;
}

int hx_redis_start(hx_proc *p, int port)
{
    hx_redis_opts o = {.port = port};
    return hx_redis_start_opts(p, &o);
}

/* --- topologies ------------------------------------------------------------ */

void hx_topo_stop(hx_topo *t, int timeout_ms)
{
    hx_proc *all[3 * HX_TOPO_MAX];
    int n = 0;
    for (int i = 0; i < t->nsentinels; i++) all[n++] = &t->sentinels[i];
    for (int i = 0; i < t->nreplicas; i++) all[n++] = &t->replicas[i];
    for (int i = 0; i < t->nmasters; i++) all[n++] = &t->masters[i];
    for (int i = 0; i < n; i++)
        if (all[i]->pid > 0) kill(all[i]->pid, SIGTERM);
    double deadline = hx_now() + timeout_ms / 1000.0;
    for (int i = 0; i < n; i++) {
        if (all[i]->pid <= 0) continue;
        if (hx_wait_exit(all[i], ms_left(deadline)) == -2) hx_kill(all[i]);
    }
}

/* One redis-sentinel on a free port with its config file in the temp dir
 * (Sentinel rewrites the file, so each has its own). */
static int sentinel_spawn(hx_proc *p, const hx_topo *t, const hx_sentinel_opts *o, int quorum)
{
    for (int attempt = 0; attempt < 3; attempt++) {
        int pt = hx_free_port();
        char name[48], conf[600];
        snprintf(name, sizeof(name), "sentinel-%d", pt);
        snprintf(conf, sizeof(conf), "%s/%s.conf", tmpdir, name);
        FILE *f = fopen(conf, "w");
        if (!f) {
            diag("sentinel: %s: %s", conf, strerror(errno));
            return -1;
        }
        fprintf(f, "bind 127.0.0.1\ndaemonize no\ndir %s\nlogfile %s/%s.log\n", tmpdir, tmpdir, name);
        if (o->tls_dir) {
            /* TLS only, and to the data nodes too (tls-replication) */
            fprintf(f, "port 0\ntls-port %d\ntls-replication yes\n", pt);
            fprintf(f, "tls-cert-file %s/server.crt\ntls-key-file %s/server.key\ntls-ca-cert-file %s/ca.crt\n",
                    o->tls_dir, o->tls_dir, o->tls_dir);
            if (o->tls_auth_clients) fprintf(f, "tls-auth-clients %s\n", o->tls_auth_clients);
            hx_tls tls;
            hx_tls_client(&tls, o->tls_dir, "client");
            hx_tls_register(pt, &tls);
        } else {
            fprintf(f, "port %d\n", pt);
        }
        fprintf(f, "sentinel monitor %s 127.0.0.1 %d %d\n", t->name, t->masters[0].port, quorum);
        fprintf(f, "sentinel down-after-milliseconds %s %d\n", t->name, o->down_after_ms ? o->down_after_ms : 1000);
        fprintf(f, "sentinel failover-timeout %s %d\n", t->name,
                o->failover_timeout_ms ? o->failover_timeout_ms : 10000);
        if (o->password) fprintf(f, "sentinel auth-pass %s %s\n", t->name, o->password);
        fclose(f);
        const char *argv[] = {"redis-sentinel", conf, NULL};
        if (hx_spawn(p, name, argv) != 0) return -1;
        p->port = pt;
        snprintf(p->logfile, sizeof(p->logfile), "%s/%s.log", tmpdir, name);
        if (wait_ready(p, 10000) == 0) return 0;
        diag("redis-sentinel on port %d did not start", pt);
        hx_diag_file(p->outfile, 4096);
        hx_diag_file(p->logfile, 4096);
        hx_kill(p);
        hx_tls_register(pt, NULL);
    }
    return -1;
}

int hx_sentinel_start(hx_topo *t, const hx_sentinel_opts *o)
{
    memset(t, 0, sizeof(*t));
    int ns = o->sentinels ? o->sentinels : 3;
    int quorum = o->quorum ? o->quorum : ns / 2 + 1;
    if (ns < 1 || ns > HX_TOPO_MAX || o->replicas < 0 || o->replicas > HX_TOPO_MAX || quorum < 1) {
        diag("hx_sentinel_start: %d sentinels, %d replicas, quorum %d: out of range (at most %d each)", ns,
             o->replicas, quorum, HX_TOPO_MAX);
        return -1;
    }
    if (o->password && strlen(o->password) >= sizeof(t->password)) {
        diag("hx_sentinel_start: the password is longer than %zu bytes", sizeof(t->password) - 1);
        return -1;
    }
    snprintf(t->name, sizeof(t->name), "%s", o->name && *o->name ? o->name : "mymaster");
    snprintf(t->password, sizeof(t->password), "%s", o->password ? o->password : "");
    hx_redis_opts ro = {.password = o->password,
                        .extra = o->extra,
                        .name = "master",
                        .tls_dir = o->tls_dir,
                        .tls_auth_clients = o->tls_auth_clients};
    if (hx_redis_start_opts(&t->masters[0], &ro) != 0) goto fail;
    t->nmasters = 1;
    ro.name = "replica";
    ro.replicaof = t->masters[0].port;
    for (int i = 0; i < o->replicas; i++) {
        if (hx_redis_start_opts(&t->replicas[i], &ro) != 0) goto fail;
        t->replica_of[i] = 0;
        t->nreplicas++;
    }
    for (int i = 0; i < ns; i++) {
        if (sentinel_spawn(&t->sentinels[i], t, o, quorum) != 0) goto fail;
        t->nsentinels++;
    }
    if (hx_sentinel_wait(t, 20000) == 0) return 0;
fail:
    hx_topo_stop(t, 5000);
    return -1;
}

/* The value of a field in one entry of a SENTINEL SENTINELS / REPLICAS reply
 * (a flat array of names and values), or "". */
static const char *entry_field(const redisReply *e, const char *field)
{
    if (e->type != REDIS_REPLY_ARRAY) return "";
    for (size_t i = 0; i + 1 < e->elements; i += 2)
        if (e->element[i]->type == REDIS_REPLY_STRING && !strcmp(e->element[i]->str, field) &&
            e->element[i + 1]->type == REDIS_REPLY_STRING)
            return e->element[i + 1]->str;
    return "";
}

/* How many entries of SENTINEL <what> <name> have exactly the flags want
 * ("sentinel", "slave"); -1 when the command failed.  seen (cap bytes) gets
 * a summary for the diag. */
static int sentinel_count(redisContext *c, const char *what, const char *name, const char *want, char *seen,
                          size_t cap)
{
    redisReply *r = redisCommand(c, "SENTINEL %s %s", what, name);
    int good = -1;
    if (r && r->type == REDIS_REPLY_ARRAY) {
        good = 0;
        size_t off = (size_t)snprintf(seen, cap, "%zu:", r->elements);
        for (size_t i = 0; i < r->elements; i++) {
            const char *flags = entry_field(r->element[i], "flags");
            good += !strcmp(flags, want);
            if (off < cap)
                off += (size_t)snprintf(seen + off, cap - off, " %s:%s(%s)", entry_field(r->element[i], "ip"),
                                        entry_field(r->element[i], "port"), flags);
        }
    } else {
        snprintf(seen, cap, "%s", r && r->type == REDIS_REPLY_ERROR ? r->str : c->errstr);
    }
    if (r) freeReplyObject(r);
    return good;
}

int hx_sentinel_wait(const hx_topo *t, int timeout_ms)
{
    double deadline = hx_now() + timeout_ms / 1000.0;
    char seen_s[512] = "", seen_r[512] = "";
    int which = 0;
    for (int i = 0; i < t->nsentinels; i++) {
        which = i;
        int done = 0;
        while (!done) {
            redisContext *c = hx_redis(t->sentinels[i].port);
            if (c) {
                done = sentinel_count(c, "SENTINELS", t->name, "sentinel", seen_s, sizeof(seen_s)) ==
                           t->nsentinels - 1 &&
                       sentinel_count(c, "REPLICAS", t->name, "slave", seen_r, sizeof(seen_r)) == t->nreplicas;
                redisFree(c);
            }
            if (done) break;
            if (hx_now() >= deadline) goto timeout;
            hx_sleep_ms(100);
        }
    }
    return 0;
timeout:
    diag("sentinel on port %d after %d ms: sentinels %s; replicas %s (want %d and %d)", t->sentinels[which].port,
         timeout_ms, seen_s, seen_r, t->nsentinels - 1, t->nreplicas);
    hx_diag_file(t->sentinels[which].logfile, 2048);
    return -1;
}

int hx_cluster_start(hx_topo *t, const hx_cluster_opts *o)
{
    memset(t, 0, sizeof(*t));
    int nm = o->masters ? o->masters : 3, total = nm * (1 + o->replicas);
    if (nm < 3 || o->replicas < 0 || total > HX_TOPO_MAX) {
        diag("hx_cluster_start: %d masters x %d replicas: redis-cli --cluster create needs at least 3 masters, "
             "and this harness keeps at most %d nodes",
             nm, o->replicas, HX_TOPO_MAX);
        return -1;
    }
    snprintf(t->name, sizeof(t->name), "cluster");
    /* started as masters[0..total); sorted into masters and replicas once
     * redis-cli has decided which is which */
    hx_proc nodes[HX_TOPO_MAX];
    const char *extra[64];
    int ne = 0;
    extra[ne++] = "--cluster-enabled";
    extra[ne++] = "yes";
    for (int i = 0; o->extra && o->extra[i] && ne < 63; i++) extra[ne++] = o->extra[i];
    extra[ne] = NULL;
    hx_redis_opts ro = {.extra = extra, .name = "node", .tls_dir = o->tls_dir, .tls_auth_clients = o->tls_auth_clients};
    for (int i = 0; i < total; i++) {
        int started = -1;
        for (int attempt = 0; attempt < 3 && started != 0; attempt++) {
            ro.port = cluster_free_port();
            if (ro.port < 0) break;
            started = hx_redis_start_opts(&t->masters[i], &ro);
            if (started != 0 && !hx_file_contains(t->masters[i].logfile, "in use")) break;
        }
        if (started != 0) goto fail;
        t->nmasters++;
    }

    char addrs[HX_TOPO_MAX][32], reps[16];
    const char *argv[HX_TOPO_MAX + 20];
    int n = 0;
    argv[n++] = "redis-cli";
    cli_tls_argv(t->masters[0].port, argv, &n);
    argv[n++] = "--cluster";
    argv[n++] = "create";
    for (int i = 0; i < total; i++) {
        snprintf(addrs[i], sizeof(addrs[i]), "127.0.0.1:%d", t->masters[i].port);
        argv[n++] = addrs[i];
    }
    snprintf(reps, sizeof(reps), "%d", o->replicas);
    argv[n++] = "--cluster-replicas";
    argv[n++] = reps;
    argv[n++] = "--cluster-yes";
    argv[n] = NULL;
    hx_proc cli;
    if (hx_spawn(&cli, "cluster-create", argv) != 0) goto fail;
    int st = hx_wait_exit(&cli, 60000);
    if (st == -2) hx_kill(&cli);
    if (st != 0) {
        diag("redis-cli --cluster create failed (status %d)", st);
        hx_diag_file(cli.outfile, 4096);
        goto fail;
    }

    /* sort by role: masters first, each replica pointing at its master */
    memcpy(nodes, t->masters, sizeof(hx_proc) * (size_t)total);
    int master_port[HX_TOPO_MAX], is_replica[HX_TOPO_MAX];
    for (int i = 0; i < total; i++) {
        redisContext *c = hx_redis(nodes[i].port);
        const char *role = c ? hx_info_get(c, "replication", "role") : NULL;
        const char *mp = c ? hx_info_get(c, "replication", "master_port") : NULL;
        is_replica[i] = role && !strcmp(role, "slave");
        master_port[i] = mp ? atoi(mp) : 0;
        if (c) redisFree(c);
        if (!role) {
            diag("cluster node on port %d does not say its role", nodes[i].port);
            goto fail;
        }
    }
    memset(t->masters, 0, sizeof(t->masters));
    t->nmasters = 0;
    for (int i = 0; i < total; i++)
        if (!is_replica[i]) t->masters[t->nmasters++] = nodes[i];
    for (int i = 0; i < total; i++) {
        if (!is_replica[i]) continue;
        int m = 0;
        while (m < t->nmasters && t->masters[m].port != master_port[i]) m++;
        t->replica_of[t->nreplicas] = m < t->nmasters ? m : -1;
        t->replicas[t->nreplicas++] = nodes[i];
    }
    if (t->nmasters != nm) {
        diag("redis-cli made %d masters of %d nodes, not %d", t->nmasters, total, nm);
        goto fail;
    }
    if (hx_cluster_wait(t, 30000) == 0) return 0;
fail:
    hx_topo_stop(t, 5000);
    return -1;
}

int hx_cluster_wait(const hx_topo *t, int timeout_ms)
{
    double deadline = hx_now() + timeout_ms / 1000.0;
    int total = t->nmasters + t->nreplicas;
    char known[16];
    snprintf(known, sizeof(known), "%d", total);
    for (int i = 0; i < total; i++) {
        const hx_proc *p = i < t->nmasters ? &t->masters[i] : &t->replicas[i - t->nmasters];
        int done = 0;
        char state[64] = "", seen[256] = "(no answer)";
        while (!done) {
            redisContext *c = hx_redis(p->port);
            redisReply *r = c ? redisCommand(c, "CLUSTER INFO") : NULL;
            if (r && r->type == REDIS_REPLY_STRING) {
                char a[64], b[64], d[64];
                const char *st = info_value(r->str, "cluster_state", state, sizeof(state));
                const char *as = info_value(r->str, "cluster_slots_assigned", a, sizeof(a));
                const char *ok = info_value(r->str, "cluster_slots_ok", b, sizeof(b));
                const char *kn = info_value(r->str, "cluster_known_nodes", d, sizeof(d));
                snprintf(seen, sizeof(seen), "cluster_state:%s slots_assigned:%s slots_ok:%s known_nodes:%s",
                         st ? st : "?", as ? as : "?", ok ? ok : "?", kn ? kn : "?");
                done = st && !strcmp(st, "ok") && as && !strcmp(as, "16384") && ok && !strcmp(ok, "16384") && kn &&
                       !strcmp(kn, known);
                if (done && i >= t->nmasters) {
                    const char *link = hx_info_get(c, "replication", "master_link_status");
                    done = link && !strcmp(link, "up");
                    if (!done) snprintf(seen, sizeof(seen), "master_link_status:%s", link ? link : "?");
                }
            }
            if (r) freeReplyObject(r);
            if (c) redisFree(c);
            if (done) break;
            if (hx_now() >= deadline) {
                diag("cluster node on port %d after %d ms: %s (want ok, 16384 slots, %d nodes)", p->port,
                     timeout_ms, seen, total);
                hx_diag_file(p->logfile, 2048);
                return -1;
            }
            hx_sleep_ms(100);
        }
    }
    return 0;
}

int hx_cluster_proxy_start(hx_topo *t, const hx_cluster_opts *o, hx_proc *px, ...)
{
    if (hx_cluster_start(t, o) != 0) return 1;
    const char *extra[48] = {"--topology", "cluster"};
    int n = 2;
    va_list ap;
    va_start(ap, px);
    const char *a;
    while (n < 47 && (a = va_arg(ap, const char *))) extra[n++] = a;
    va_end(ap);
    extra[n] = NULL;
    if (hx_proxy_startv(px, 0, t->masters[0].port, extra) == 0) return 0;
    hx_topo_stop(t, 5000);
    return 2;
}

int hx_cluster_owner(int port, const char *key)
{
    redisContext *c = hx_redis(port);
    if (!c) return -1;
    redisReply *r = redisCommand(c, "TYPE %s", key);
    int p = -1;
    if (r && r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "MOVED ", 6)) {
        const char *colon = strrchr(r->str, ':');
        if (colon) p = atoi(colon + 1);
    } else if (r && r->type != REDIS_REPLY_ERROR) {
        p = port;
    }
    if (r) freeReplyObject(r);
    redisFree(c);
    return p;
}

void hx_cluster_node_id(int port, char *out, size_t n)
{
    redisContext *d = hx_redis(port);
    snprintf(out, n, "%s", d ? hx_cmd(d, "CLUSTER MYID") : "");
    if (d) redisFree(d);
}

void hx_cluster_move_begin(int slot, int src, int dst)
{
    char srcid[64], dstid[64];
    hx_cluster_node_id(src, srcid, sizeof(srcid));
    hx_cluster_node_id(dst, dstid, sizeof(dstid));
    redisContext *s = hx_redis(src), *t = hx_redis(dst);
    if (t) hx_cmd(t, "CLUSTER SETSLOT %d IMPORTING %s", slot, srcid);
    if (s) hx_cmd(s, "CLUSTER SETSLOT %d MIGRATING %s", slot, dstid);
    if (s) redisFree(s);
    if (t) redisFree(t);
}

int hx_cluster_map_slots(redisContext *c, int port)
{
    const char *map = hx_info_get(c, "hotproxy_upstream", "hotproxy_cluster_slot_map");
    char pat[48];
    snprintf(pat, sizeof(pat), "127.0.0.1:%d=", port);
    const char *at = map ? strstr(map, pat) : NULL;
    return at ? atoi(at + strlen(pat)) : -1;
}

int hx_cluster_load_round(redisContext *c, char keys[][32], int n, int round, char *err, size_t errsz)
{
    int errors = 0;
    for (int i = 0; i < n; i++) {
        char v[96];
        snprintf(v, sizeof(v), "%d:%.31s", round, keys[i]);
        redisReply *r = redisCommand(c, "SET %s %s", keys[i], v);
        if (!r || r->type != REDIS_REPLY_STATUS || strcmp(r->str, "OK")) {
            errors++;
            snprintf(err, errsz, "SET %s: %s", keys[i], r ? (r->str ? r->str : "?") : c->errstr);
        }
        if (r) freeReplyObject(r);
        r = redisCommand(c, "GET %s", keys[i]);
        if (!r || r->type != REDIS_REPLY_STRING || strcmp(r->str, v)) {
            errors++;
            snprintf(err, errsz, "GET %s: %s (wanted %s)", keys[i], r ? (r->str ? r->str : "(nil)") : c->errstr, v);
        }
        if (r) freeReplyObject(r);
    }
    return errors;
}

int hx_proxy_startv(hx_proc *p, int port, int upstream_port, const char *const *extra)
{
    for (int attempt = 0; attempt < 3; attempt++) {
        int pt = port ? port : hx_free_port();
        char portstr[16], up[64], name[48], logfile[512];
        snprintf(portstr, sizeof(portstr), "%d", pt);
        snprintf(up, sizeof(up), "127.0.0.1:%d", upstream_port);
        snprintf(name, sizeof(name), "hotproxy-%d", pt);
        snprintf(logfile, sizeof(logfile), "%s/%s.log", tmpdir, name);
        const char *argv[64];
        int n = 0;
        argv[n++] = bin;
        argv[n++] = "--port";
        argv[n++] = portstr;
        argv[n++] = "--upstream";
        argv[n++] = up;
        argv[n++] = "--logfile";
        argv[n++] = logfile;
        for (int i = 0; extra && extra[i] && n < 63; i++) argv[n++] = extra[i];
        argv[n] = NULL;
        if (hx_spawn(p, name, argv) != 0) return -1;
        p->port = pt;
        snprintf(p->logfile, sizeof(p->logfile), "%s", logfile);
        if (wait_ready(p, 15000) == 0) return 0;
        diag("hotproxy on port %d did not start", pt);
        hx_diag_file(p->outfile, 8192);
        hx_diag_file(p->logfile, 4096);
        hx_kill(p);
        if (port) break;
    }
    return -1;
}

int hx_proxy_start(hx_proc *p, int port, int upstream_port, ...)
{
    const char *extra[48];
    int n = 0;
    va_list ap;
    va_start(ap, upstream_port);
    const char *a;
    while ((a = va_arg(ap, const char *)) && n < 47) extra[n++] = a;
    va_end(ap);
    extra[n] = NULL;
    return hx_proxy_startv(p, port, upstream_port, extra);
}

/* The fake upstream's loop, in the forked child. */
static void fake_loop(int lfd, int mode, const char *reply, size_t replylen)
{
    struct pollfd fds[256];
    int nfds = 1;
    fds[0].fd = lfd;
    fds[0].events = POLLIN;
    char buf[16384];
    while (1) {
        if (poll(fds, (nfds_t)nfds, 1000) < 0 && errno != EINTR) _exit(1);
        if (getppid() != owner_pid) _exit(0);
        for (int i = nfds - 1; i >= 1; i--) {
            if (!fds[i].revents) continue;
            ssize_t n = read(fds[i].fd, buf, sizeof(buf));
            int drop = n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR);
            if (n > 0 && mode != HX_FAKE_SILENT) {
                ssize_t w = write(fds[i].fd, reply, replylen);
                (void)w;
                if (mode == HX_FAKE_REPLY_CLOSE) drop = 1;
            }
            if (drop) {
                close(fds[i].fd);
                fds[i] = fds[--nfds];
            }
        }
        if (fds[0].revents & POLLIN) {
            int cfd = accept(lfd, NULL, NULL);
            if (cfd >= 0) {
                if (nfds < 256) {
                    fds[nfds].fd = cfd;
                    fds[nfds].events = POLLIN;
                    fds[nfds].revents = 0;
                    nfds++;
                } else {
                    close(cfd);
                }
            }
        }
    }
}

int hx_fake_start(hx_proc *p, int mode, const char *reply, size_t replylen)
{
    memset(p, 0, sizeof(*p));
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(lfd, 128) != 0 ||
        getsockname(lfd, (struct sockaddr *)&sa, &len) != 0) {
        diag("fake upstream: %s", strerror(errno));
        if (lfd >= 0) close(lfd);
        return -1;
    }
    p->port = ntohs(sa.sin_port);
    snprintf(p->name, sizeof(p->name), "fake-upstream-%d", p->port);
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        close(lfd);
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGALRM, SIGABRT};
        for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) signal(sigs[i], SIG_DFL);
        alarm(0);
        fake_loop(lfd, mode, reply, replylen);
        _exit(0);
    }
    close(lfd);
    track(pid);
    p->pid = pid;
    return 0;
}

/* --- sockets --------------------------------------------------------------- */

const char *hx_status_name(int st)
{
    switch (st) {
    case HX_OK: return "ok";
    case HX_EOF: return "EOF";
    case HX_RESET: return "connection reset";
    case HX_TIMEOUT: return "timeout";
    case HX_BADPROTO: return "malformed reply";
    default: return "error";
    }
}

int hx_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)port);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    if (rc != 0 && errno == EINPROGRESS) {
        struct pollfd pfd = {fd, POLLOUT, 0};
        int err = 0;
        socklen_t el = sizeof(err);
        if (poll(&pfd, 1, 5000) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err == 0) rc = 0;
    }
    if (rc != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static int ms_left(double deadline)
{
    double left = (deadline - hx_now()) * 1000.0;
    return left <= 0 ? 0 : (int)left + 1;
}

int hx_send(int fd, const void *data, size_t n, int timeout_ms)
{
    const char *p = data;
    double deadline = hx_now() + timeout_ms / 1000.0;
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int left = ms_left(deadline);
            if (!left) return -1;
            struct pollfd pfd = {fd, POLLOUT, 0};
            poll(&pfd, 1, left);
            continue;
        }
        return -1;
    }
    return 0;
}

int hx_send_str(int fd, const char *s) { return hx_send(fd, s, strlen(s), 10000); }

/* One read into b: HX_OK with data, or a final status; HX_TIMEOUT when
 * nothing came before the deadline. */
static int read_some(int fd, hx_buf *b, double deadline)
{
    while (1) {
        hx_buf_reserve(b, 65536);
        ssize_t n = read(fd, b->data + b->len, b->cap - b->len);
        if (n > 0) {
            b->len += (size_t)n;
            return HX_OK;
        }
        if (n == 0) return HX_EOF;
        if (errno == EINTR) continue;
        if (errno == ECONNRESET) return HX_RESET;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return HX_ERROR;
        int left = ms_left(deadline);
        if (!left) return HX_TIMEOUT;
        struct pollfd pfd = {fd, POLLIN, 0};
        poll(&pfd, 1, left);
    }
}

int hx_read_n(int fd, hx_buf *b, size_t want, int timeout_ms)
{
    double deadline = hx_now() + timeout_ms / 1000.0;
    size_t target = b->len + want;
    while (b->len < target) {
        int st = read_some(fd, b, deadline);
        if (st != HX_OK) return st;
    }
    return HX_OK;
}

int hx_read_eof(int fd, hx_buf *b, int timeout_ms)
{
    double deadline = hx_now() + timeout_ms / 1000.0;
    while (1) {
        int st = read_some(fd, b, deadline);
        if (st != HX_OK) return st;
    }
}

/* Scan forward from *pos counting replies; returns -1 on a malformed one. */
static long scan_replies(const hx_buf *b, size_t *pos, long want)
{
    long got = 0;
    while (got < want && *pos < b->len) {
        long l = hx_reply_len(b->data + *pos, b->len - *pos);
        if (l < 0) return -1;
        if (l == 0) break;
        *pos += (size_t)l;
        got++;
    }
    return got;
}

int hx_read_replies(int fd, hx_buf *b, long n, long *got, int timeout_ms)
{
    double deadline = hx_now() + timeout_ms / 1000.0;
    size_t pos = b->len;
    long have = 0;
    int st = HX_OK;
    while (1) {
        long c = scan_replies(b, &pos, n - have);
        if (c < 0) {
            st = HX_BADPROTO;
            break;
        }
        have += c;
        if (have >= n) break;
        st = read_some(fd, b, deadline);
        if (st != HX_OK) break;
    }
    if (got) *got = have;
    return st;
}

int hx_exchange(int fd, const void *req, size_t reqlen, long n, hx_buf *out, long *got, int timeout_ms)
{
    double deadline = hx_now() + timeout_ms / 1000.0;
    const char *p = req;
    size_t sent = 0, pos = out->len;
    long have = 0;
    int st = HX_OK;
    while (have < n) {
        struct pollfd pfd = {fd, POLLIN | (sent < reqlen ? POLLOUT : 0), 0};
        int left = ms_left(deadline);
        if (!left) {
            st = HX_TIMEOUT;
            break;
        }
        if (poll(&pfd, 1, left) < 0 && errno != EINTR) {
            st = HX_ERROR;
            break;
        }
        if (sent < reqlen && (pfd.revents & (POLLOUT | POLLERR | POLLHUP))) {
            ssize_t w = send(fd, p + sent, reqlen - sent, MSG_NOSIGNAL);
            if (w > 0) sent += (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != EINTR) sent = reqlen; /* peer gone: just read */
        }
        if (pfd.revents & (POLLIN | POLLERR | POLLHUP)) {
            st = read_some(fd, out, hx_now()); /* no wait: poll said readable */
            if (st == HX_TIMEOUT) st = HX_OK;
            long c = scan_replies(out, &pos, n - have);
            if (c < 0) {
                st = HX_BADPROTO;
                break;
            }
            have += c;
            if (st != HX_OK) break;
        }
    }
    if (got) *got = have;
    return st;
}

int hx_roundtrip(int port, const void *req, size_t reqlen, long n, hx_buf *out, int timeout_ms)
{
    int fd = hx_connect(port);
    if (fd < 0) return HX_ERROR;
    int st = hx_exchange(fd, req, reqlen, n < 0 ? LONG_MAX : n, out, NULL, timeout_ms);
    close(fd);
    return st;
}

/* Position just past the \r\n ending the line at p, or 0 if not there yet. */
static size_t line_len(const char *p, size_t n)
{
    for (size_t i = 0; i + 1 < n; i++)
        if (p[i] == '\r') return p[i + 1] == '\n' ? i + 2 : 0;
    return 0;
}

static int parse_ll(const char *p, size_t n, long long *out)
{
    char tmp[32];
    if (n == 0 || n >= sizeof(tmp)) return -1;
    memcpy(tmp, p, n);
    tmp[n] = '\0';
    char *end;
    errno = 0;
    long long v = strtoll(tmp, &end, 10);
    if (errno || *end) return -1;
    *out = v;
    return 0;
}

static long reply_len_depth(const char *p, size_t n, int depth)
{
    if (n == 0) return 0;
    if (depth > 64) return -1;
    size_t ll = line_len(p, n);
    if (!ll) {
        /* a line with a lone \r in it is malformed; otherwise wait */
        for (size_t i = 0; i + 1 < n; i++)
            if (p[i] == '\r' && p[i + 1] != '\n') return -1;
        return 0;
    }
    long long v;
    switch (p[0]) {
    case '+': case '-':
        return (long)ll;
    case ':':
        return parse_ll(p + 1, ll - 3, &v) == 0 ? (long)ll : -1;
    case '$':
        if (parse_ll(p + 1, ll - 3, &v) != 0 || v < -1) return -1;
        if (v == -1) return (long)ll;
        if (n < ll + (size_t)v + 2) return 0;
        if (p[ll + (size_t)v] != '\r' || p[ll + (size_t)v + 1] != '\n') return -1;
        return (long)(ll + (size_t)v + 2);
    case '*': {
        if (parse_ll(p + 1, ll - 3, &v) != 0 || v < -1) return -1;
        size_t pos = ll;
        for (long long i = 0; i < v; i++) {
            long e = reply_len_depth(p + pos, n - pos, depth + 1);
            if (e <= 0) return e;
            pos += (size_t)e;
        }
        return (long)pos;
    }
    default:
        return -1;
    }
}

long hx_reply_len(const char *p, size_t n) { return reply_len_depth(p, n, 0); }

long hx_count_replies(const char *p, size_t n, size_t *used)
{
    size_t pos = 0;
    long count = 0;
    while (pos < n) {
        long l = hx_reply_len(p + pos, n - pos);
        if (l <= 0) break;
        pos += (size_t)l;
        count++;
    }
    if (used) *used = pos;
    return count;
}

/* --- TLS ------------------------------------------------------------------- */

#ifndef HX_SOURCE_DIR
#define HX_SOURCE_DIR "."
#endif

int hx_tls_certs(const char *dir)
{
    char def[320], cmd[1024], out[600];
    if (!dir) {
        snprintf(def, sizeof(def), "%s/tls", tmpdir);
        dir = def;
    }
    snprintf(out, sizeof(out), "%s/tls-certs.out", tmpdir);
    snprintf(cmd, sizeof(cmd), "bash '%s/tests/tls-certs.sh' '%s' >'%s' 2>&1", HX_SOURCE_DIR, dir, out);
    if (system(cmd) == 0) return 0;
    diag("tests/tls-certs.sh %s failed", dir);
    hx_diag_file(out, 4096);
    return -1;
}

const char *hx_tls_file(const char *dir, const char *name)
{
    static char bufs[4][400];
    static int next;
    char *b = bufs[next++ % 4];
    snprintf(b, sizeof(bufs[0]), "%s/%s", dir, name);
    return b;
}

void hx_tls_client(hx_tls *t, const char *dir, const char *client)
{
    memset(t, 0, sizeof(*t));
    snprintf(t->ca, sizeof(t->ca), "%s/ca.crt", dir);
    if (client) {
        snprintf(t->cert, sizeof(t->cert), "%s/%s.crt", dir, client);
        snprintf(t->key, sizeof(t->key), "%s/%s.key", dir, client);
    }
}

/* The ports whose harness connections are TLS. */
static struct {
    int port;
    hx_tls tls;
} tls_ports[MAX_PROCS];

void hx_tls_register(int port, const hx_tls *t)
{
    int slot = -1;
    for (int i = 0; i < MAX_PROCS; i++) {
        if (tls_ports[i].port == port) tls_ports[i].port = 0;
        if (slot < 0 && !tls_ports[i].port) slot = i;
    }
    if (!t) return;
    if (slot < 0) {
        fprintf(stderr, "harness: more than %d TLS ports\n", MAX_PROCS);
        abort();
    }
    tls_ports[slot].port = port;
    tls_ports[slot].tls = *t;
}

const hx_tls *hx_tls_of(int port)
{
    for (int i = 0; port > 0 && i < MAX_PROCS; i++)
        if (tls_ports[i].port == port) return &tls_ports[i].tls;
    return NULL;
}

const char *hx_cli_args(int port, char *out, size_t cap)
{
    const hx_tls *t = hx_tls_of(port);
    size_t off = (size_t)snprintf(out, cap, "-p %d", port);
    if (t && off < cap) {
        off += (size_t)snprintf(out + off, cap - off, " --tls");
        if (off < cap && (t->insecure || !t->ca[0])) off += (size_t)snprintf(out + off, cap - off, " --insecure");
        else if (off < cap) off += (size_t)snprintf(out + off, cap - off, " --cacert '%s'", t->ca);
        if (off < cap && t->cert[0])
            off += (size_t)snprintf(out + off, cap - off, " --cert '%s' --key '%s'", t->cert, t->key);
        if (off < cap && t->sni[0]) snprintf(out + off, cap - off, " --sni '%s'", t->sni);
    }
    return out;
}

/* redis-cli's TLS arguments for port into argv from *n on (the strings live
 * in t); nothing for a plain port. */
static void cli_tls_argv(int port, const char **argv, int *n)
{
    const hx_tls *t = hx_tls_of(port);
    if (!t) return;
    argv[(*n)++] = "--tls";
    if (t->insecure || !t->ca[0]) {
        argv[(*n)++] = "--insecure";
    } else {
        argv[(*n)++] = "--cacert";
        argv[(*n)++] = t->ca;
    }
    if (t->cert[0]) {
        argv[(*n)++] = "--cert";
        argv[(*n)++] = t->cert;
        argv[(*n)++] = "--key";
        argv[(*n)++] = t->key;
    }
}

/* The first OpenSSL error on this thread's queue (or what SSL_get_error and
 * the verify result say) into why. */
static void tls_reason(SSL *ssl, int rc, char *why, size_t cap)
{
    if (!why || !cap) return;
    long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    unsigned long e = ERR_peek_error();
    char ebuf[256] = "";
    if (e) ERR_error_string_n(e, ebuf, sizeof(ebuf));
    if (vr != X509_V_OK)
        snprintf(why, cap, "certificate verify failed: %s", X509_verify_cert_error_string(vr));
    else if (e)
        snprintf(why, cap, "%s", ebuf);
    else if (ssl)
        snprintf(why, cap, "handshake failed (SSL_get_error %d, errno %s)", SSL_get_error(ssl, rc),
                 strerror(errno));
    else
        snprintf(why, cap, "TLS setup failed");
    ERR_clear_error();
}

/* One relayed connection: plaintext on pair, TLS on ssl's socket. */
typedef struct relay {
    SSL *ssl;
    SSL_CTX *ctx;
    int pair;
} relay;

/* Move bytes both ways until either side closes or fails; buffers on both
 * directions so neither side can block the other. */
static void *relay_main(void *arg)
{
    relay *r = arg;
    int net = SSL_get_fd(r->ssl);
    char up[65536], down[65536];   /* up: test -> server; down: server -> test */
    size_t uplen = 0, downlen = 0;
    int ssl_wants_write = 0, done = 0;
    while (!done) {
        /* server -> test */
        while (downlen < sizeof(down)) {
            int n = SSL_read(r->ssl, down + downlen, (int)(sizeof(down) - downlen));
            if (n > 0) {
                downlen += (size_t)n;
                continue;
            }
            int e = SSL_get_error(r->ssl, n);
            if (e == SSL_ERROR_WANT_WRITE) ssl_wants_write = 1;
            else if (e != SSL_ERROR_WANT_READ) done = 1;
            break;
        }
        while (downlen) {
            ssize_t w = send(r->pair, down, downlen, MSG_NOSIGNAL);
            if (w > 0) {
                memmove(down, down + w, downlen - (size_t)w);
                downlen -= (size_t)w;
            } else {
                if (w < 0 && errno != EAGAIN && errno != EINTR) done = 2;
                break;
            }
        }
        /* test -> server */
        if (uplen < sizeof(up)) {
            ssize_t n = recv(r->pair, up + uplen, sizeof(up) - uplen, 0);
            if (n > 0) uplen += (size_t)n;
            else if (n == 0 || (errno != EAGAIN && errno != EINTR)) done = 2;
        }
        while (uplen) {
            int w = SSL_write(r->ssl, up, (int)uplen);
            if (w > 0) {
                memmove(up, up + w, uplen - (size_t)w);
                uplen -= (size_t)w;
                continue;
            }
            int e = SSL_get_error(r->ssl, w);
            ssl_wants_write = e == SSL_ERROR_WANT_WRITE;
            if (e != SSL_ERROR_WANT_WRITE && e != SSL_ERROR_WANT_READ) done = 1;
            break;
        }
        if (done || (downlen < sizeof(down) && SSL_pending(r->ssl) > 0)) continue;
        struct pollfd pfd[2] = {{r->pair, (short)((uplen < sizeof(up) ? POLLIN : 0) | (downlen ? POLLOUT : 0)), 0},
                                {net, (short)((downlen < sizeof(down) ? POLLIN : 0) |
                                              (uplen || ssl_wants_write ? POLLOUT : 0)),
                                 0}};
        poll(pfd, 2, 1000);
    }
    /* the test closed its end: say goodbye to the server; the server went
     * away: hand the test whatever came, then its EOF */
    if (done == 2) SSL_shutdown(r->ssl);
    close(r->pair);
    close(net);
    SSL_free(r->ssl);
    SSL_CTX_free(r->ctx);
    free(r);
    return NULL;
}

int hx_connect_tls(int port, const hx_tls *t, char *why, size_t cap)
{
    if (why && cap) why[0] = '\0';
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = NULL;
    int fd = -1, sv[2] = {-1, -1}, rc = 0;
    if (!ctx) goto fail;
    if (!t->insecure && t->ca[0]) {
        if (SSL_CTX_load_verify_locations(ctx, t->ca, NULL) != 1) goto fail;
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    }
    if (t->cert[0] && (SSL_CTX_use_certificate_chain_file(ctx, t->cert) != 1 ||
                       SSL_CTX_use_PrivateKey_file(ctx, t->key, SSL_FILETYPE_PEM) != 1))
        goto fail;
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    fd = hx_connect(port);
    if (fd < 0) {
        if (why) snprintf(why, cap, "connect to port %d refused", port);
        SSL_CTX_free(ctx);
        return -1;
    }
    fcntl(fd, F_SETFL, 0); /* blocking for the handshake */
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    ssl = SSL_new(ctx);
    if (!ssl || SSL_set_fd(ssl, fd) != 1) goto fail;
    if (t->sni[0]) SSL_set_tlsext_host_name(ssl, t->sni);
    if (!t->insecure && t->ca[0]) {
        X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
        if (t->host[0]) X509_VERIFY_PARAM_set1_host(vp, t->host, 0);
        else X509_VERIFY_PARAM_set1_ip_asc(vp, "127.0.0.1");
    }
    rc = SSL_connect(ssl);
    if (rc != 1) goto fail;
    /* TLS 1.3 sends the server's verdict on our certificate after the
     * handshake: a refused client learns it on the first read.  Peek once
     * so hx_connect_tls says no itself; a server that sends nothing just
     * times the peek out. */
    struct timeval shortv = {0, 50000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &shortv, sizeof(shortv));
    char c;
    rc = SSL_peek(ssl, &c, 1);
    if (rc <= 0) {
        int e = SSL_get_error(ssl, rc);
        if (e == SSL_ERROR_SSL || e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno != EAGAIN)) goto fail;
        ERR_clear_error();
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) goto fail;
    fcntl(fd, F_SETFL, O_NONBLOCK);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    relay *r = calloc(1, sizeof(*r));
    if (!r) abort();
    r->ssl = ssl;
    r->ctx = ctx;
    r->pair = sv[1];
    pthread_t th;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    /* the relay must not take the test's signals (the watchdog, SIGTERM) */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int perr = pthread_create(&th, &attr, relay_main, r);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (perr) {
        free(r);
        goto fail;
    }
    return sv[0];
fail:
    tls_reason(ssl, rc, why, cap);
    if (ssl) SSL_free(ssl);
    if (ctx) SSL_CTX_free(ctx);
    if (fd >= 0) close(fd);
    if (sv[0] >= 0) close(sv[0]);
    if (sv[1] >= 0) close(sv[1]);
    return -1;
}

redisContext *hx_redis_tls(int port, const hx_tls *t, char *why, size_t cap)
{
    int fd = hx_connect_tls(port, t, why, cap);
    if (fd < 0) return NULL;
    fcntl(fd, F_SETFL, 0); /* hiredis' blocking mode wants a blocking fd */
    redisContext *c = redisConnectFd(fd);
    if (!c || c->err) {
        if (why) snprintf(why, cap, "hiredis: %s", c ? c->errstr : "out of memory");
        if (c) redisFree(c);
        else close(fd);
        return NULL;
    }
    struct timeval tv = {20, 0};
    redisSetTimeout(c, tv);
    return c;
}

/* The harness's own connections: TLS for a registered port. */
static int conn_fd(int port)
{
    const hx_tls *t = hx_tls_of(port);
    return t ? hx_connect_tls(port, t, NULL, 0) : hx_connect(port);
}

static redisContext *conn_ctx(int port, int timeout_s, char *why, size_t cap)
{
    const hx_tls *t = hx_tls_of(port);
    struct timeval tv = {timeout_s, 0};
    redisContext *c = t ? hx_redis_tls(port, t, why, cap) : redisConnectWithTimeout("127.0.0.1", port, tv);
    if (c && c->err) {
        snprintf(why, cap, "%s", c->errstr);
        redisFree(c);
        return NULL;
    }
    if (!c) {
        if (!t) snprintf(why, cap, "out of memory");
        return NULL;
    }
    redisSetTimeout(c, tv);
    return c;
}

/* --- hiredis --------------------------------------------------------------- */

redisContext *hx_redis(int port)
{
    char why[256] = "";
    redisContext *c = conn_ctx(port, 20, why, sizeof(why));
    if (!c) diag("hiredis connect to port %d%s: %s", port, hx_tls_of(port) ? " (TLS)" : "", why);
    return c;
}

static char cmd_text[4096];

static const char *reply_text(redisReply *r)
{
    switch (r->type) {
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
    case REDIS_REPLY_STRING:
        snprintf(cmd_text, sizeof(cmd_text), "%.*s", (int)(r->len < 4000 ? r->len : 4000), r->str);
        break;
    case REDIS_REPLY_INTEGER: snprintf(cmd_text, sizeof(cmd_text), "%lld", r->integer); break;
    case REDIS_REPLY_NIL: snprintf(cmd_text, sizeof(cmd_text), "(nil)"); break;
    case REDIS_REPLY_ARRAY: snprintf(cmd_text, sizeof(cmd_text), "(array %zu)", r->elements); break;
    default: snprintf(cmd_text, sizeof(cmd_text), "(type %d)", r->type); break;
    }
    return cmd_text;
}

const char *hx_cmd(redisContext *c, const char *fmt, ...)
{
    if (!c) return "(no reply: no connection)";
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    if (!r) {
        snprintf(cmd_text, sizeof(cmd_text), "(no reply: %s)", c->errstr);
        return cmd_text;
    }
    reply_text(r);
    freeReplyObject(r);
    return cmd_text;
}

/* The value of "field:" at a line start of INFO's text, into out (cap bytes). */
static const char *info_value(const char *text, const char *field, char *out, size_t cap)
{
    size_t fl = strlen(field);
    for (const char *p = text; p && *p;) {
        if (!strncmp(p, field, fl) && p[fl] == ':') {
            const char *v = p + fl + 1, *e = strpbrk(v, "\r\n");
            size_t vl = e ? (size_t)(e - v) : strlen(v);
            if (vl >= cap) vl = cap - 1;
            memcpy(out, v, vl);
            out[vl] = '\0';
            return out;
        }
        p = strchr(p, '\n');
        if (p) p++;
    }
    return NULL;
}

const char *hx_info_get(redisContext *c, const char *section, const char *field)
{
    static char bufs[4][512];
    static int next;
    char *out = bufs[next++ % 4];
    redisReply *r = !c ? NULL : section ? redisCommand(c, "INFO %s", section) : redisCommand(c, "INFO");
    const char *found = r && r->type == REDIS_REPLY_STRING ? info_value(r->str, field, out, sizeof(bufs[0])) : NULL;
    if (r) freeReplyObject(r);
    return found;
}

int hx_info_wait(redisContext *c, const char *section, const char *field, const char *want, int timeout_ms)
{
    double deadline = hx_now() + timeout_ms / 1000.0;
    do {
        const char *v = hx_info_get(c, section, field);
        if (v && !strcmp(v, want)) return 0;
        hx_sleep_ms(10);
    } while (hx_now() < deadline);
    return -1;
}

int hx_l1_hit(redisContext *c, const char *key, int tries)
{
    for (int i = 0; i < tries; i++) {
        long long h = hx_info_num(c, "hotproxy_cache", "hotproxy_l1_hits");
        redisReply *r = c ? redisCommand(c, "GET %s", key) : NULL;
        if (r) freeReplyObject(r);
        if (hx_info_num(c, "hotproxy_cache", "hotproxy_l1_hits") == h + 1) return 1;
    }
    return 0;
}

long long hx_info_num(redisContext *c, const char *section, const char *field)
{
    const char *v = hx_info_get(c, section, field);
    return v ? atoll(v) : -1;
}

long long hx_cmdstat_calls(redisContext *c, const char *name)
{
    char field[96];
    redisReply *r = c ? redisCommand(c, "INFO commandstats") : NULL;
    long long n = -1000000;
    if (r && r->type == REDIS_REPLY_STRING) {
        char value[256];
        snprintf(field, sizeof(field), "cmdstat_%s", name);
        const char *v = info_value(r->str, field, value, sizeof(value));
        n = v && !strncmp(v, "calls=", 6) ? atoll(v + 6) : 0;
    }
    if (r) freeReplyObject(r);
    return n;
}

const char *hx_info_field(int port, const char *section, const char *field)
{
    redisContext *c = hx_redis(port);
    if (!c) return NULL;
    const char *v = hx_info_get(c, section, field);
    redisFree(c);
    return v;
}

int hx_sentinel_master_port(const hx_topo *t)
{
    for (int i = 0; i < t->nsentinels; i++) {
        if (!t->sentinels[i].pid) continue;
        redisContext *c = hx_redis(t->sentinels[i].port);
        if (!c) continue;
        redisReply *r = redisCommand(c, "SENTINEL get-master-addr-by-name %s", t->name);
        int port = -1;
        if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2) port = atoi(r->element[1]->str);
        if (r) freeReplyObject(r);
        redisFree(c);
        if (port > 0) return port;
    }
    return -1;
}

int hx_sentinel_failover(const hx_topo *t)
{
    for (int i = 0; i < t->nsentinels; i++) {
        if (!t->sentinels[i].pid) continue;
        redisContext *c = hx_redis(t->sentinels[i].port);
        if (!c) continue;
        const char *r = hx_cmd(c, "SENTINEL FAILOVER %s", t->name);
        int ok = !strcmp(r, "OK");
        if (!ok) diag("SENTINEL FAILOVER on %d: %s", t->sentinels[i].port, r);
        redisFree(c);
        if (ok) return 0;
    }
    return -1;
}

/* --- a raw RESP2/RESP3 client ------------------------------------------------ */

int hx_raw_open(hx_rawc *r, int port)
{
    memset(r, 0, sizeof(*r));
    r->fd = hx_connect(port);
    return r->fd >= 0 ? 0 : -1;
}

void hx_raw_close(hx_rawc *r)
{
    if (r->fd >= 0) close(r->fd);
    r->fd = -1;
    hx_buf_free(&r->in);
}

int hx_raw_send(hx_rawc *r, ...)
{
    const char *argv[32];
    size_t argvlen[32];
    int argc = 0;
    va_list ap;
    va_start(ap, r);
    const char *a;
    while (argc < 32 && (a = va_arg(ap, const char *))) {
        argv[argc] = a;
        argvlen[argc++] = strlen(a);
    }
    va_end(ap);
    hx_buf b = {0};
    hx_buf_command(&b, argc, argv, argvlen);
    int rc = hx_send(r->fd, b.data, b.len, 5000);
    hx_buf_free(&b);
    return rc;
}

/* Length of the complete RESP2 or RESP3 frame at p; 0 incomplete, -1 bad. */
static long raw_frame_len(const char *p, size_t n, int depth)
{
    const char *nl = n ? memchr(p, '\n', n) : NULL;
    if (!nl) return 0;
    if (depth > 16 || nl == p || nl[-1] != '\r') return -1;
    size_t ll = (size_t)(nl - p) + 1;
    long long v = atoll(p + 1);
    switch (p[0]) {
    case '+': case '-': case ':': case '_': case ',': case '#': case '(':
        return (long)ll;
    case '$': case '=': case '!':
        if (v < 0) return (long)ll;
        return n < ll + (size_t)v + 2 ? 0 : (long)(ll + (size_t)v + 2);
    case '*': case '>': case '~': case '%': {
        if (v < 0) return (long)ll;
        if (p[0] == '%') v *= 2;
        size_t pos = ll;
        for (long long i = 0; i < v; i++) {
            long e = raw_frame_len(p + pos, n - pos, depth + 1);
            if (e <= 0) return e;
            pos += (size_t)e;
        }
        return (long)pos;
    }
    default:
        return -1;
    }
}

int hx_raw_frame(hx_rawc *r, const char **f, size_t *len, int timeout_ms)
{
    double end = hx_now() + timeout_ms / 1000.0;
    for (;;) {
        long l = raw_frame_len(r->in.data + r->pos, r->in.len - r->pos, 0);
        if (l < 0) return -1;
        if (l > 0) {
            *f = r->in.data + r->pos;
            *len = (size_t)l;
            r->pos += (size_t)l;
            return 1;
        }
        if (r->eof) return -1;
        int left = (int)((end - hx_now()) * 1000);
        if (left <= 0) return 0;
        struct pollfd p = {r->fd, POLLIN, 0};
        if (poll(&p, 1, left) <= 0) continue;
        hx_buf_reserve(&r->in, 65536);
        ssize_t n = recv(r->fd, r->in.data + r->in.len, 65536, 0);
        if (n > 0) r->in.len += (size_t)n;
        else if (n == 0 || (errno != EAGAIN && errno != EINTR)) r->eof = 1;
    }
}

const char *hx_raw_reply(hx_rawc *r, int timeout_ms)
{
    static char text[512];
    const char *f;
    size_t len;
    int rc = hx_raw_frame(r, &f, &len, timeout_ms);
    if (rc != 1) {
        snprintf(text, sizeof(text), "(none: %s)", rc ? "closed" : "timeout");
        return text;
    }
    if (f[0] == '$' && f[1] != '-') {
        const char *s = memchr(f, '\n', len);
        snprintf(text, sizeof(text), "%.*s", (int)(f + len - s - 3), s + 1);
    } else if ((f[0] == '$' && f[1] == '-') || f[0] == '_' || !strncmp(f, "*-1", 3)) {
        snprintf(text, sizeof(text), "(nil)");
    } else if (f[0] == '*' || f[0] == '>' || f[0] == '%') {
        snprintf(text, sizeof(text), "(%s %d)", f[0] == '*' ? "array" : f[0] == '>' ? "push" : "map", atoi(f + 1));
    } else {
        snprintf(text, sizeof(text), "%.*s", (int)(len - 3 > 500 ? 500 : len - 3), f + 1);
    }
    return text;
}

const char *hx_frame_kind(const char *f, size_t len, char *out, size_t outsz)
{
    out[0] = '\0';
    if (len < 4 || (f[0] != '*' && f[0] != '>')) return out;
    const char *p = memchr(f, '\n', len);
    if (!p || p + 1 >= f + len || p[1] != '$') return out;
    long long l = atoll(p + 2);
    const char *s = memchr(p + 1, '\n', (size_t)(f + len - p - 1));
    if (!s || l < 0 || (size_t)l >= outsz || s + 1 + l > f + len) return out;
    memcpy(out, s + 1, (size_t)l);
    out[l] = '\0';
    return out;
}
