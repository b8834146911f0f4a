/*
 * bench.h: the helpers bench/hotkeys.c and bench/stampede.c share: errors,
 * memory, the clock, option numbers, sockets and their non-blocking reads and
 * writes, and a RESP reply scanner.
 *
 * CMake builds every .c file in bench/ as a program of its own, so shared
 * code cannot sit in a .c file there (it would be built as one more program);
 * it sits here, as static inline functions, so each program compiles what it
 * calls and no unused-function warning fires for the rest.  Define BENCH_NAME, the
 * program's name that prefixes its error messages, before including this.
 */
#ifndef BENCH_H
#define BENCH_H

#ifndef BENCH_NAME
#error "define BENCH_NAME (the program's name, for error messages) before including bench.h"
#endif

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Print "BENCH_NAME: <message>" on stderr and exit 1: a bench has no use for half a run. */
static inline void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static inline void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs(BENCH_NAME ": ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static inline void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p) die("out of memory (%zu bytes)", n);
    return p;
}

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The value of option --NAME, a number in [min, max], or die saying so. */
static inline double parse_num(const char *name, const char *s, double min, double max)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= min && v <= max))
        die("--%s wants a number from %g to %g, not '%s'", name, min, max, s);
    return v;
}

/* Room for `want` descriptors, as far as the hard limit allows: one per client connection. */
static inline void raise_fd_limit(int want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)want) {
        rl.rlim_cur = rl.rlim_max < (rlim_t)want ? rl.rlim_max : (rlim_t)want;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/*
 * A blocking TCP connection to host:port with TCP_NODELAY (a request must not
 * wait for the one before it to be acknowledged), or die.  Callers that run it
 * on an event loop make it non-blocking themselves.
 */
static inline int tcp_connect(const char *host, int port)
{
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res, *ai;
    int rc = getaddrinfo(host, ps, &hints, &res);
    if (rc) die("%s: %s", host, gai_strerror(rc));
    int fd = -1;
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd < 0) continue;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) die("cannot connect to %s:%d: %s", host, port, strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/*
 * Read what fd has into *in (*len bytes of *cap used), first growing the
 * buffer so at least `room` bytes are free.  Returns 1 after a read, 0 when
 * nothing is there yet (the event loop calls again); dies when the target
 * closes or fails, as a bench cannot go on without it.
 */
static inline int read_some(int fd, char **in, size_t *len, size_t *cap, size_t room)
{
    if (*cap - *len < room) *in = xrealloc(*in, *cap = *cap * 2 + room);
    ssize_t n = read(fd, *in + *len, *cap - *len);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return 0;
    if (n <= 0) die("read from target: %s", n < 0 ? strerror(errno) : "connection closed by the target");
    *len += (size_t)n;
    return 1;
}

/*
 * Write out[*off, len) to the non-blocking fd as far as it takes it.  Returns
 * 1 once it is all written, 0 when the socket is full (wait until it is
 * writable and call again); dies on an error or a closed connection.
 */
static inline int write_some(int fd, const char *out, size_t *off, size_t len)
{
    while (*off < len) {
        ssize_t n = write(fd, out + *off, len - *off);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
        if (n <= 0) die("write to target: %s", n < 0 ? strerror(errno) : "closed");
        *off += (size_t)n;
    }
    return 1;
}

/*
 * Length of the complete reply at p, 0 if more bytes are needed, -1 on a
 * protocol error.  *kind gets the first byte; *nil is set for $-1 and *-1.
 * Nested arrays are followed to depth 8; that is all a bench needs.  It only
 * finds where a reply ends: hiredis' reader would copy every reply.
 */
static inline long resp_scan(const char *p, size_t len, int depth, char *kind, int *nil)
{
    if (len < 3) return 0;
    const char *cr = memchr(p, '\r', len);
    if (!cr) return 0;
    size_t line = (size_t)(cr - p);
    if (line + 2 > len) return 0;
    if (cr[1] != '\n') return -1;
    if (kind) *kind = p[0];
    switch (p[0]) {
    case '+': case '-': case ':':
        return (long)(line + 2);
    case '$': case '*': {
        char *end;
        long n = strtol(p + 1, &end, 10);
        if (end != cr || n < -1) return -1;
        if (n == -1) {
            if (nil) *nil = 1;
            return (long)(line + 2);
        }
        if (p[0] == '$') {
            size_t need = line + 2 + (size_t)n + 2;
            if (need > len) return 0;
            if (p[need - 2] != '\r' || p[need - 1] != '\n') return -1;
            return (long)need;
        }
        if (depth >= 8) return -1;
        size_t off = line + 2;
        for (long i = 0; i < n; i++) {
            long m = resp_scan(p + off, len - off, depth + 1, NULL, NULL);
            if (m <= 0) return m;
            off += (size_t)m;
        }
        return (long)off;
    }
    default:
        return -1;
    }
}

#endif
