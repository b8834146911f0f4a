/*
 * px_blocking: blocking request/reply connections for startup checks.  See
 * px_blocking.h.
 *
 * The socket is non-blocking underneath (TLS is driven the same way as on
 * the loop) and each wait is a poll(2) bounded by what is left of the step's
 * time.
 */
#include "proxy/px_blocking.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "proxy/px_buf.h"
#include "proxy/px_resp.h"
#include "proxy/px_tls.h"

#define MAX_REPLY (64u << 20) /* a check's reply is small; a peer sending more is not Redis */

struct px_blocking {
    int fd;
    px_tls *tls;
    long long timeout_ms;
    px_buf in;
    char err[300];
};

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Wait until fd is readable (or writable); 0, or -1 with b->err set. */
static int wait_fd(px_blocking *b, int writable, double deadline, const char *what)
{
    for (;;) {
        double left = deadline - mono();
        if (left <= 0) {
            snprintf(b->err, sizeof(b->err), "%s: timed out", what);
            return -1;
        }
        struct pollfd pfd = {b->fd, (short)(writable ? POLLOUT : POLLIN), 0};
        int n = poll(&pfd, 1, (int)(left * 1000) + 1);
        if (n > 0) return 0;
        if (n < 0 && errno != EINTR) {
            snprintf(b->err, sizeof(b->err), "%s: %s", what, strerror(errno));
            return -1;
        }
    }
}

/* The socket's error after a failed read or write: TLS' reason for TLS'. */
static void io_failed(px_blocking *b, const char *what, ssize_t n)
{
    const char *why = n == 0 ? "connection closed" : b->tls && errno == EPROTO ? px_tls_error(b->tls) : strerror(errno);
    snprintf(b->err, sizeof(b->err), "%s: %s", what, why);
}

static int open_socket(px_blocking *b, const char *host, int port, double deadline)
{
    struct addrinfo hints, *res = NULL;
    char service[16];
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(service, sizeof(service), "%d", port);
    int rc = getaddrinfo(host, service, &hints, &res);
    if (rc != 0) {
        snprintf(b->err, sizeof(b->err), "%s", gai_strerror(rc));
        return -1;
    }
    b->fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (b->fd < 0) {
        snprintf(b->err, sizeof(b->err), "%s", strerror(errno));
        freeaddrinfo(res);
        return -1;
    }
    rc = connect(b->fd, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    if (rc != 0 && errno != EINPROGRESS) {
        snprintf(b->err, sizeof(b->err), "%s", strerror(errno));
        return -1;
    }
    if (rc != 0) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (wait_fd(b, 1, deadline, "connect") != 0) return -1;
        if (getsockopt(b->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
        if (err) {
            snprintf(b->err, sizeof(b->err), "%s", strerror(err));
            return -1;
        }
    }
    return 0;
}

/* TLS as the loop's connections do it (px_upstream's tls_start). */
static int tls_handshake(px_blocking *b, px_core *k, const char *host, double deadline)
{
    const px_config *cfg = k->cfg;
    const char *name = *cfg->upstream_tls_sni ? cfg->upstream_tls_sni : host;
    char err[256];
    b->tls = px_tls_new(k->upstream_tls, b->fd, 0, name, cfg->upstream_tls_verify ? name : NULL, err, sizeof(err));
    if (!b->tls) {
        snprintf(b->err, sizeof(b->err), "%s", err);
        return -1;
    }
    for (;;) {
        int rc = px_tls_handshake(b->tls);
        if (rc == 1) return 0;
        if (rc < 0) {
            k->upstream_tls_failures++;
            snprintf(b->err, sizeof(b->err), "TLS handshake failed: %s", px_tls_error(b->tls));
            return -1;
        }
        if (wait_fd(b, px_tls_want_write(b->tls), deadline, "TLS handshake") != 0) {
            k->upstream_tls_failures++;
            return -1;
        }
    }
}

px_blocking *px_blocking_connect(px_core *k, const char *host, int port, long long timeout_ms, char *why,
                                 size_t whylen)
{
    px_blocking *b = calloc(1, sizeof(*b));
    if (!b) abort();
    b->fd = -1;
    b->timeout_ms = timeout_ms;
    double deadline = mono() + (double)timeout_ms / 1000.0;
    if (open_socket(b, host, port, deadline) != 0 || (k->upstream_tls && tls_handshake(b, k, host, deadline) != 0)) {
        snprintf(why, whylen, "%s", b->err);
        px_blocking_close(b);
        return NULL;
    }
    return b;
}

static int send_all(px_blocking *b, const char *p, size_t len, double deadline)
{
    while (len) {
        ssize_t n = b->tls ? px_tls_write(b->tls, p, len) : write(b->fd, p, len);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            if (wait_fd(b, b->tls ? px_tls_want_write(b->tls) : 1, deadline, "write") != 0) return -1;
            continue;
        }
        io_failed(b, "write", n);
        return -1;
    }
    return 0;
}

struct redisReply *px_blocking_command(px_blocking *b, int argc, const char *const *argv)
{
    if (b->err[0]) return NULL;
    double deadline = mono() + (double)b->timeout_ms / 1000.0;
    px_buf cmd = {0};
    px_resp_command(&cmd, argc, argv, NULL);
    int rc = send_all(b, px_buf_start(&cmd), px_buf_used(&cmd), deadline);
    px_buf_free(&cmd);
    if (rc != 0) return NULL;
    px_reply_scanner scan;
    px_reply_scanner_init(&scan);
    struct redisReply *rep = NULL;
    for (;;) {
        if (px_buf_used(&b->in)) {
            int s = px_reply_scan(&scan, px_buf_start(&b->in), px_buf_used(&b->in));
            if (s == PX_ERR) {
                snprintf(b->err, sizeof(b->err), "protocol error: %s", scan.errstr);
                break;
            }
            if (s == PX_OK) {
                rep = px_reply_decode(px_buf_start(&b->in), scan.pos);
                px_buf_consume(&b->in, scan.pos);
                if (!rep) snprintf(b->err, sizeof(b->err), "protocol error: a reply hiredis cannot decode");
                break;
            }
            /* PX_AGAIN: the scanner goes on from where it stopped once more bytes are in */
        }
        if (px_buf_used(&b->in) > MAX_REPLY) {
            snprintf(b->err, sizeof(b->err), "protocol error: a reply of more than %u bytes", MAX_REPLY);
            break;
        }
        char *p = px_buf_reserve(&b->in, 16384);
        ssize_t n = b->tls ? px_tls_read(b->tls, p, 16384) : read(b->fd, p, 16384);
        if (n > 0) {
            b->in.len += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            if (wait_fd(b, b->tls ? px_tls_want_write(b->tls) : 0, deadline, "read") != 0) break;
            continue;
        }
        io_failed(b, "read", n);
        break;
    }
    px_reply_scanner_free(&scan);
    return rep;
}

const char *px_blocking_error(const px_blocking *b)
{
    return b->err[0] ? b->err : "no error";
}

void px_blocking_close(px_blocking *b)
{
    if (!b) return;
    px_tls_free(b->tls);
    if (b->fd >= 0) close(b->fd);
    px_buf_free(&b->in);
    free(b);
}
