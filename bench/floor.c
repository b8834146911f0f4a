/*
 * floor: a do-nothing RESP server, the floor under hotproxy's I/O model.
 *
 * It does what any server on this model cannot avoid, and nothing more: one
 * thread, one level-triggered epoll loop, non-blocking sockets, and per
 * readable event one read of up to 16 KB followed by one write of the
 * replies to every complete command that read finished (Redis and hotproxy
 * wake up the same way).  A command is parsed only as far as needed to find
 * where it ends and what its name is (arrays as redis-benchmark sends them,
 * or inline lines, either one split across reads); it is then answered with
 * a fixed reply, with no lookup and nothing stored:
 *
 *   GET ...             a bulk of --reply-size bytes (the benchmark's value size)
 *   CONFIG GET <name>   [<name>, ""]: redis-benchmark asks for "save" and
 *                       "appendonly" before it starts, and warns without an array
 *   PING                +PONG
 *   anything else       +OK (so SET, SELECT, AUTH as redis-benchmark sends them)
 *
 * bench/compare.sh runs it beside redis-server and hotproxy: the CPU it
 * spends per million requests is what the kernel and the event loop cost, and
 * what a proxy spends above it is its own work.
 *
 * Bounds as in Redis: at most 1M arguments, a bulk of at most 512 MB, an
 * inline line of at most 64 KB.  A protocol error is answered with -ERR and
 * the connection is closed once that is written.  Inline commands are split
 * on blanks; quotes are not interpreted (no reply depends on it).  On SIGTERM
 * or SIGINT it prints what it did (commands, reads, writes) and exits 0.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <unistd.h>

#define BENCH_NAME "floor"
#include "bench.h"

enum {
    READ_LEN = 16 * 1024,         /* one read per wake-up, as Redis' PROTO_IOBUF_LEN */
    INLINE_MAX = 64 * 1024,       /* Redis' PROTO_INLINE_MAX_SIZE */
    MAX_ARGS = 1024 * 1024,       /* Redis' bound on a multibulk count */
    MAX_EVENTS = 256,
    REPLY_SIZE_MAX = 1024 * 1024, /* a bound on memory: one read can hold ~4000 GETs */
};
#define BULK_MAX (512LL * 1024 * 1024) /* Redis' proto-max-bulk-len */

/* The first arguments of a parsed command, pointing into the input buffer
 * (valid until the buffer is compacted); the rest are only counted. */
#define SEEN_ARGS 3
struct cmd {
    long nargs;
    const char *arg[SEEN_ARGS];
    size_t alen[SEEN_ARGS];
};

struct conn {
    struct conn *prev, *next; /* every open connection, to free them at exit */
    int fd;
    char *in;
    size_t inlen, incap;
    char *out;
    size_t outlen, outoff, outcap;
    int writing; /* output left over from a short write: wait for EPOLLOUT, read nothing */
    int closing; /* close once the output is written (after a protocol error) */
};

struct floor {
    int ep, lfd;
    struct conn *conns;
    char *get_reply; /* "$N\r\n" + N bytes + "\r\n", built once */
    size_t get_reply_len;
    unsigned long long commands, reads, writes, accepted;
};

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* ---- parsing ---- */

/*
 * The number in [s, e), optionally negative, at most 18 digits; -1 (and *ok
 * cleared) when it is not one.
 */
static long long parse_ll(const char *s, const char *e, int *ok)
{
    int neg = 0;
    long long v = 0;
    *ok = 0;
    if (s < e && *s == '-') neg = 1, s++;
    if (s == e || e - s > 18) return -1;
    for (; s < e; s++) {
        if (*s < '0' || *s > '9') return -1;
        v = v * 10 + (*s - '0');
    }
    *ok = 1;
    return neg ? -v : v;
}

/*
 * The "<prefix><number>\r\n" line at p: its number in *v and the offset just
 * past it in *next.  1 when complete, 0 when more bytes are needed, -1 on a
 * protocol error (*err says what).
 */
static int parse_line(const char *p, size_t len, long long *v, size_t *next, const char **err,
                      const char *what)
{
    size_t scan = len < INLINE_MAX ? len : INLINE_MAX;
    const char *cr = memchr(p, '\r', scan);
    if (!cr) {
        if (len >= INLINE_MAX) return *err = what, -1;
        return 0;
    }
    size_t line = (size_t)(cr - p);
    if (line + 2 > len) return 0;
    if (cr[1] != '\n') return *err = what, -1;
    int ok;
    *v = parse_ll(p + 1, cr, &ok);
    if (!ok) return *err = what, -1;
    *next = line + 2;
    return 1;
}

static void seen(struct cmd *c, const char *a, size_t n)
{
    if (c->nargs < SEEN_ARGS) {
        c->arg[c->nargs] = a;
        c->alen[c->nargs] = n;
    }
    c->nargs++;
}

/*
 * The command at the start of p[0, len): its length, 0 when it is not all
 * there yet (the caller keeps the bytes and reads more), -1 on a protocol
 * error (*err says what).  It is rescanned from its start on every read until
 * complete; only the header lines are scanned, bulk bodies are skipped by
 * their length, so that costs little even for a large value.  A command with
 * no arguments (an empty inline line, *0) has c->nargs 0 and gets no reply.
 */
static long parse_command(const char *p, size_t len, struct cmd *c, const char **err)
{
    c->nargs = 0;
    if (len == 0) return 0;
    if (p[0] != '*') {
        /* Inline: one line, '\n' or "\r\n" ended, arguments split on blanks. */
        size_t scan = len < INLINE_MAX ? len : INLINE_MAX;
        const char *nl = memchr(p, '\n', scan);
        if (!nl) {
            if (len >= INLINE_MAX) return *err = "too big inline request", -1;
            return 0;
        }
        const char *e = nl;
        if (e > p && e[-1] == '\r') e--;
        for (const char *s = p; s < e;) {
            while (s < e && (*s == ' ' || *s == '\t')) s++;
            const char *a = s;
            while (s < e && *s != ' ' && *s != '\t') s++;
            if (s > a) seen(c, a, (size_t)(s - a));
        }
        return (long)(nl - p + 1);
    }
    long long count;
    size_t off;
    int r = parse_line(p, len, &count, &off, err, "invalid multibulk length");
    if (r <= 0) return r;
    if (count > MAX_ARGS) return *err = "invalid multibulk length", -1;
    for (long long i = 0; i < count; i++) {
        if (off >= len) return 0;
        if (p[off] != '$') return *err = "expected '$'", -1;
        long long blen;
        size_t hdr;
        r = parse_line(p + off, len - off, &blen, &hdr, err, "invalid bulk length");
        if (r <= 0) return r;
        if (blen < 0 || blen > BULK_MAX) return *err = "invalid bulk length", -1;
        size_t body = off + hdr, end = body + (size_t)blen + 2;
        if (end > len) return 0;
        if (p[end - 2] != '\r' || p[end - 1] != '\n') return *err = "bulk not ended by CRLF", -1;
        seen(c, p + body, (size_t)blen);
        off = end;
    }
    return (long)off; /* *0 and *-1 are consumed with no reply, as Redis does */
}

/* ---- replies ---- */

static void out_append(struct conn *c, const void *s, size_t n)
{
    if (c->outcap - c->outlen < n) c->out = xrealloc(c->out, c->outcap = (c->outlen + n) * 2);
    memcpy(c->out + c->outlen, s, n);
    c->outlen += n;
}

static int is(const struct cmd *c, int i, const char *name)
{
    return c->nargs > i && c->alen[i] == strlen(name) && strncasecmp(c->arg[i], name, c->alen[i]) == 0;
}

static void reply(struct floor *f, struct conn *c, const struct cmd *cmd)
{
    if (is(cmd, 0, "get")) {
        out_append(c, f->get_reply, f->get_reply_len);
    } else if (is(cmd, 0, "config") && is(cmd, 1, "get") && cmd->nargs >= 3) {
        char hdr[64];
        int n = snprintf(hdr, sizeof hdr, "*2\r\n$%zu\r\n", cmd->alen[2]);
        out_append(c, hdr, (size_t)n);
        out_append(c, cmd->arg[2], cmd->alen[2]);
        out_append(c, "\r\n$0\r\n\r\n", 8);
    } else if (is(cmd, 0, "ping")) {
        out_append(c, "+PONG\r\n", 7);
    } else {
        out_append(c, "+OK\r\n", 5);
    }
    f->commands++;
}

/* ---- connections ---- */

static void conn_close(struct floor *f, struct conn *c)
{
    if (c->prev) c->prev->next = c->next;
    else f->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    epoll_ctl(f->ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->in);
    free(c->out);
    free(c);
}

static void watch(struct floor *f, struct conn *c, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(f->ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
}

/*
 * One write of the pending output.  Returns 0 to keep the connection, -1 to
 * close it (a write error, or everything written after a protocol error).
 * What a short write leaves waits for EPOLLOUT, and the connection reads
 * nothing meanwhile, so a client that does not read cannot grow our buffer.
 */
static int flush_once(struct floor *f, struct conn *c)
{
    ssize_t n = write(c->fd, c->out + c->outoff, c->outlen - c->outoff);
    f->writes++;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return -1;
    if (n > 0) c->outoff += (size_t)n;
    if (c->outoff < c->outlen) {
        if (!c->writing) watch(f, c, EPOLLOUT);
        c->writing = 1;
        return 0;
    }
    c->outoff = c->outlen = 0;
    if (c->closing) return -1;
    if (c->writing) watch(f, c, EPOLLIN);
    c->writing = 0;
    return 0;
}

/* A readable event: one read, replies to every command it completed, one write. */
static int on_readable(struct floor *f, struct conn *c)
{
    if (c->incap - c->inlen < READ_LEN) c->in = xrealloc(c->in, c->incap = c->inlen + READ_LEN);
    ssize_t n = read(c->fd, c->in + c->inlen, READ_LEN);
    f->reads++;
    if (n < 0) return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -1;
    if (n == 0) return -1;
    c->inlen += (size_t)n;

    size_t off = 0;
    for (;;) {
        struct cmd cmd;
        const char *err = NULL;
        long m = parse_command(c->in + off, c->inlen - off, &cmd, &err);
        if (m == 0) break;
        if (m < 0) {
            char line[128];
            int k = snprintf(line, sizeof line, "-ERR Protocol error: %s\r\n", err);
            out_append(c, line, (size_t)k);
            c->closing = 1;
            off = c->inlen;
            break;
        }
        if (cmd.nargs > 0) reply(f, c, &cmd);
        off += (size_t)m;
    }
    if (off > 0) {
        memmove(c->in, c->in + off, c->inlen - off);
        c->inlen -= off;
    }
    return c->outlen > 0 ? flush_once(f, c) : 0;
}

static void on_accept(struct floor *f)
{
    /* Up to 1000 per wake-up, as Redis' MAX_ACCEPTS_PER_CALL. */
    for (int i = 0; i < 1000; i++) {
        int fd = accept4(f->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED) return;
            fprintf(stderr, BENCH_NAME ": accept: %s\n", strerror(errno)); /* EMFILE: go on serving */
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        if (!c) die("out of memory");
        c->fd = fd;
        c->next = f->conns;
        if (f->conns) f->conns->prev = c;
        f->conns = c;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(f->ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
        f->accepted++;
    }
}

/* ---- main ---- */

static void usage(FILE *out)
{
    fputs("Usage: floor --port P [--bind ADDR] [--reply-size N]\n"
          "A do-nothing RESP server: the floor for hotproxy's I/O model (see bench/floor.c).\n"
          "\n"
          "  --port P          port to listen on (required)\n"
          "  --bind ADDR       IPv4 address to listen on (default 127.0.0.1)\n"
          "  --reply-size N    bytes in the bulk every GET gets, 0 to 1048576 (default 3,\n"
          "                    redis-benchmark's -d)\n"
          "  --help            this text\n"
          "\n"
          "Prints 'floor: listening on ADDR:P' once it listens, and what it did on SIGTERM.\n",
          out);
}

int main(int argc, char **argv)
{
    const char *bind_addr = "127.0.0.1";
    int port = -1;
    long reply_size = 3;
    static const struct option lo[] = {
        {"port", required_argument, NULL, 'p'},
        {"bind", required_argument, NULL, 'b'},
        {"reply-size", required_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'H'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'p': port = (int)parse_num("port", optarg, 1, 65535); break;
        case 'b': bind_addr = optarg; break;
        case 'r': reply_size = (long)parse_num("reply-size", optarg, 0, REPLY_SIZE_MAX); break;
        case 'H': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) die("unexpected argument '%s' (try --help)", argv[optind]);
    if (port < 0) die("--port is required (try --help)");

    struct floor f = {0};
    char hdr[32];
    int h = snprintf(hdr, sizeof hdr, "$%ld\r\n", reply_size);
    f.get_reply_len = (size_t)h + (size_t)reply_size + 2;
    f.get_reply = xrealloc(NULL, f.get_reply_len);
    memcpy(f.get_reply, hdr, (size_t)h);
    memset(f.get_reply + h, 'x', (size_t)reply_size);
    memcpy(f.get_reply + h + reply_size, "\r\n", 2);

    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, bind_addr, &sa.sin_addr) != 1) die("--bind wants an IPv4 address, not '%s'", bind_addr);
    f.lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (f.lfd < 0) die("socket: %s", strerror(errno));
    int one = 1;
    setsockopt(f.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(f.lfd, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind %s:%d: %s", bind_addr, port, strerror(errno));
    if (listen(f.lfd, 511) < 0) die("listen: %s", strerror(errno));
    raise_fd_limit(10032);

    f.ep = epoll_create1(EPOLL_CLOEXEC);
    if (f.ep < 0) die("epoll_create1: %s", strerror(errno));
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL}; /* NULL: the listener */
    if (epoll_ctl(f.ep, EPOLL_CTL_ADD, f.lfd, &lev) < 0) die("epoll_ctl: %s", strerror(errno));

    /* No SA_RESTART: the signal makes epoll_wait return EINTR and the loop end. */
    struct sigaction act = {.sa_handler = on_signal};
    sigemptyset(&act.sa_mask);
    sigaction(SIGTERM, &act, NULL);
    sigaction(SIGINT, &act, NULL);
    signal(SIGPIPE, SIG_IGN);

    printf(BENCH_NAME ": listening on %s:%d\n", bind_addr, port);
    fflush(stdout);

    struct epoll_event evs[MAX_EVENTS];
    while (!stop_requested) {
        int n = epoll_wait(f.ep, evs, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait: %s", strerror(errno));
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                on_accept(&f);
                continue;
            }
            /* EPOLLHUP/EPOLLERR go to whichever handler is on: its read or
             * write fails or sees the end, and the connection is closed. */
            int rc = c->writing ? flush_once(&f, c) : on_readable(&f, c);
            if (rc < 0) conn_close(&f, c);
        }
    }
    fprintf(stderr, BENCH_NAME ": %llu connections, %llu commands answered, %llu reads, %llu writes\n",
            f.accepted, f.commands, f.reads, f.writes);
    while (f.conns) conn_close(&f, f.conns);
    close(f.ep);
    close(f.lfd);
    free(f.get_reply);
    return 0;
}
