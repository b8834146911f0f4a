/*
 * px_upstream: upstream connections and pools.  See px_upstream.h.
 */
#include "proxy/px_upstream.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/px_client.h"
#include "proxy/px_server.h"

#define READ_CHUNK (16 * 1024)
#define BACKOFF_MIN 0.05
#define BACKOFF_MAX 1.0

static void up_connect(px_upstream *u);
static void up_read_cb(struct ev_loop *loop, ev_io *w, int revents);
static void up_write_cb(struct ev_loop *loop, ev_io *w, int revents);
static void up_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);

/*
 * Close the socket and answer everything in flight with an error; then retry
 * after the backoff (at once when retry_now, for a connection that was
 * replaced rather than refused).
 */
static void up_fail(px_upstream *u, const char *fmt, const char *detail, int retry_now)
{
    px_server *s = u->srv;
    int was_ready = u->state == PX_UP_READY;
    snprintf(u->errstr, sizeof(u->errstr), fmt, u->pool->name, detail);
    if (u->fd >= 0) {
        ev_io_stop(s->loop, &u->rw);
        ev_io_stop(s->loop, &u->ww);
        close(u->fd);
        u->fd = -1;
    }
    ev_timer_stop(s->loop, &u->timer);
    u->write_armed = 0;
    u->state = PX_UP_DOWN;
    if (was_ready) s->stats.upstream_disconnects++;
    else s->stats.upstream_connect_failures++;
    px_log_write(&s->log, was_ready ? 3 : 1, "Upstream: %s", u->errstr);

    px_buf_clear(&u->out, 0);
    px_buf_clear(&u->in, 0);
    px_reply_scanner_reset(&u->scan);
    /* Detach the queue first: answering may let clients send again. */
    px_req *r = u->shead;
    u->shead = u->stail = NULL;
    u->nsent = 0;
    while (r) {
        px_req *next = r->up_next;
        r->up_next = NULL;
        s->stats.upstream_error_replies++;
        px_client_reply_error(r, "ERR %s", u->errstr);
        r = next;
    }
    double wait = retry_now ? 0 : u->backoff;
    u->backoff = u->backoff < BACKOFF_MIN ? BACKOFF_MIN : u->backoff * 2;
    if (u->backoff > BACKOFF_MAX) u->backoff = BACKOFF_MAX;
    ev_timer_set(&u->timer, wait, 0);
    ev_timer_start(s->loop, &u->timer);
}

static void up_ready(px_upstream *u)
{
    px_server *s = u->srv;
    int one = 1;
    ev_timer_stop(s->loop, &u->timer);
    ev_io_stop(s->loop, &u->ww);
    u->write_armed = 0;
    u->state = PX_UP_READY;
    u->backoff = 0;
    u->errstr[0] = '\0';
    setsockopt(u->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    s->stats.upstream_connects++;
    px_log_verbose(&s->log, "Upstream: connected to %s", u->pool->name);
    ev_io_set(&u->rw, u->fd, EV_READ);
    ev_io_start(s->loop, &u->rw);
    if (px_buf_used(&u->out)) px_server_want_write_upstream(s, u);
}

static void up_connect(px_upstream *u)
{
    px_server *s = u->srv;
    px_pool *p = u->pool;
    struct addrinfo hints, *res = NULL;
    char port[16];
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof(port), "%d", p->port);
    /* Numeric addresses resolve without blocking; a name is looked up with
     * the resolver (blocking, from /etc/hosts for localhost). */
    int rc = getaddrinfo(p->host, port, &hints, &res);
    if (rc != 0) {
        up_fail(u, "upstream %s unavailable: %s", gai_strerror(rc), 0);
        return;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        freeaddrinfo(res);
        up_fail(u, "upstream %s unavailable: %s", strerror(errno), 0);
        return;
    }
    rc = connect(fd, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    u->fd = fd;
    u->state = PX_UP_CONNECTING;
    if (rc != 0 && errno != EINPROGRESS) {
        up_fail(u, "upstream %s unavailable: %s", strerror(errno), 0);
        return;
    }
    ev_io_set(&u->ww, fd, EV_WRITE);
    ev_io_start(s->loop, &u->ww);
    ev_timer_set(&u->timer, (double)s->cfg->connect_timeout / 1000.0, 0);
    ev_timer_start(s->loop, &u->timer);
}

static void up_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    px_upstream *u = w->data;
    (void)loop;
    (void)revents;
    if (u->state == PX_UP_CONNECTING) up_fail(u, "upstream %s unavailable: %s", "connect timeout", 0);
    else if (u->state == PX_UP_DOWN) up_connect(u);
}

int px_upstream_flush(px_upstream *u)
{
    px_server *s = u->srv;
    if (u->state != PX_UP_READY) return 0; /* written once connected */
    while (px_buf_used(&u->out)) {
        ssize_t n = write(u->fd, px_buf_start(&u->out), px_buf_used(&u->out));
        if (n > 0) {
            px_buf_consume(&u->out, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!u->write_armed) {
                u->write_armed = 1;
                ev_io_start(s->loop, &u->ww);
            }
            return 0;
        }
        up_fail(u, "upstream %s connection lost (the command may have run): %s",
                n < 0 ? strerror(errno) : "write failed", 0);
        return -1;
    }
    if (u->write_armed) {
        u->write_armed = 0;
        ev_io_stop(s->loop, &u->ww);
    }
    if (u->out.cap > 1024 * 1024) px_buf_clear(&u->out, 0);
    return 0;
}

static void up_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    px_upstream *u = w->data;
    (void)loop;
    (void)revents;
    if (u->state == PX_UP_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(u->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
        if (err) {
            up_fail(u, "upstream %s unavailable: %s", strerror(err), 0);
            return;
        }
        up_ready(u);
        return;
    }
    px_upstream_flush(u);
}

static void up_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    px_upstream *u = w->data;
    (void)loop;
    (void)revents;
    size_t want = READ_CHUNK, used = px_buf_used(&u->in);
    if (u->scan.need > used && u->scan.need - used > want) want = u->scan.need - used;
    if (want > 64u << 20) want = 64u << 20;
    char *p = px_buf_reserve(&u->in, want);
    ssize_t n = read(u->fd, p, want);
    if (n == 0) {
        up_fail(u, "upstream %s connection lost (the command may have run): %s", "closed by the server", 0);
        return;
    }
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
        up_fail(u, "upstream %s connection lost (the command may have run): %s", strerror(errno), 0);
        return;
    }
    u->in.len += (size_t)n;
    while (px_buf_used(&u->in)) {
        const char *start = px_buf_start(&u->in);
        int rc = px_reply_scan(&u->scan, start, px_buf_used(&u->in));
        if (rc == PX_AGAIN) break;
        if (rc == PX_ERR || !u->shead) {
            up_fail(u, "upstream %s protocol error: %s", rc == PX_ERR ? u->scan.errstr : "reply with no request", 0);
            return;
        }
        px_req *r = u->shead;
        u->shead = r->up_next;
        if (!u->shead) u->stail = NULL;
        u->nsent--;
        r->up_next = NULL;
        size_t len = u->scan.pos;
        px_reply_scanner_reset(&u->scan);
        px_client_reply(r, start, len);
        px_buf_consume(&u->in, len);
    }
    if (!px_buf_used(&u->in) && u->in.cap > 1024 * 1024) px_buf_clear(&u->in, 0);
}

void px_upstream_send(px_upstream *u, px_req *r, const char *cmd, size_t len)
{
    r->sent_at = px_now(u->srv);
    r->up_next = NULL;
    if (u->stail) u->stail->up_next = r;
    else u->shead = r;
    u->stail = r;
    u->nsent++;
    px_buf_append(&u->out, cmd, len);
    if (u->state == PX_UP_READY) px_server_want_write_upstream(u->srv, u);
}

px_pool *px_pool_create(px_server *s, const char *host, int port, int nconns)
{
    px_pool *p = calloc(1, sizeof(*p));
    if (!p) abort();
    p->srv = s;
    p->host = strdup(host);
    p->port = port;
    snprintf(p->name, sizeof(p->name), strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    p->nconns = nconns;
    p->conns = calloc((size_t)nconns, sizeof(px_upstream));
    if (!p->conns) abort();
    for (int i = 0; i < nconns; i++) {
        px_upstream *u = &p->conns[i];
        u->srv = s;
        u->pool = p;
        u->fd = -1;
        u->state = PX_UP_DOWN;
        ev_io_init(&u->rw, up_read_cb, -1, EV_READ);
        ev_io_init(&u->ww, up_write_cb, -1, EV_WRITE);
        ev_timer_init(&u->timer, up_timer_cb, 0, 0);
        u->rw.data = u->ww.data = u->timer.data = u;
        up_connect(u);
    }
    return p;
}

void px_pool_destroy(px_pool *p)
{
    px_server *s = p->srv;
    for (int i = 0; i < p->nconns; i++) {
        px_upstream *u = &p->conns[i];
        ev_timer_stop(s->loop, &u->timer);
        ev_io_stop(s->loop, &u->rw);
        ev_io_stop(s->loop, &u->ww);
        if (u->fd >= 0) close(u->fd);
        px_req *r = u->shead;
        while (r) {
            px_req *next = r->up_next;
            r->up_next = NULL;
            px_client_reply_error(r, "ERR hotproxy is shutting down");
            r = next;
        }
        px_buf_free(&u->in);
        px_buf_free(&u->out);
    }
    free(p->conns);
    free(p->host);
    free(p);
}

px_upstream *px_pool_pick(px_pool *p, px_client *c)
{
    /* A client with requests in flight stays where they are, so its writes
     * and reads reach Redis in the order it sent them. */
    if (c->ninflight > 0 && c->up && c->up->pool == p && c->up->state != PX_UP_DOWN) return c->up;
    px_upstream *best = NULL;
    for (int i = 0; i < p->nconns; i++) {
        px_upstream *u = &p->conns[(p->rr + (unsigned)i) % (unsigned)p->nconns];
        if (u->state == PX_UP_DOWN) continue;
        if (!best || (best->state != PX_UP_READY && u->state == PX_UP_READY) ||
            (u->state == best->state && u->nsent < best->nsent))
            best = u;
    }
    p->rr++;
    return best;
}

const char *px_pool_unavailable(px_pool *p)
{
    for (int i = 0; i < p->nconns; i++)
        if (p->conns[i].errstr[0]) return p->conns[i].errstr;
    return "upstream unavailable";
}

void px_pool_cron(px_pool *p, double now, long long timeout_ms)
{
    if (timeout_ms <= 0) return;
    for (int i = 0; i < p->nconns; i++) {
        px_upstream *u = &p->conns[i];
        if (u->state != PX_UP_READY || !u->shead) continue;
        if ((now - u->shead->sent_at) * 1000.0 < (double)timeout_ms) continue;
        char detail[64];
        snprintf(detail, sizeof(detail), "no reply within %lld ms", timeout_ms);
        p->srv->stats.upstream_timeouts++;
        up_fail(u, "upstream %s timeout: %s", detail, 1);
    }
}

void px_pool_info(px_pool *p, px_buf *out)
{
    int ready = 0;
    long inflight = 0;
    for (int i = 0; i < p->nconns; i++) {
        ready += p->conns[i].state == PX_UP_READY;
        inflight += p->conns[i].nsent;
    }
    px_buf_appendf(out, "hotproxy_upstream:%s\r\n", p->name);
    px_buf_appendf(out, "hotproxy_upstream_status:%s\r\n", ready ? "up" : "down");
    px_buf_appendf(out, "hotproxy_upstream_connections:%d\r\n", p->nconns);
    px_buf_appendf(out, "hotproxy_upstream_connections_ready:%d\r\n", ready);
    px_buf_appendf(out, "hotproxy_upstream_inflight:%ld\r\n", inflight);
    if (!ready) px_buf_appendf(out, "hotproxy_upstream_last_error:%s\r\n", px_pool_unavailable(p));
}
