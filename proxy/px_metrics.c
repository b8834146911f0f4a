/*
 * px_metrics: the HTTP/1.1 subset the Prometheus page needs.  See
 * px_metrics.h.
 *
 * One request is handled at a time per connection: its head is read whole
 * (up to PX_METRICS_MAX_HEAD bytes), answered into the output buffer and
 * written at once; the next pipelined request is parsed only once that
 * response is out.  A response that ends the connection (an error that
 * leaves its framing unknown, Connection: close) is followed by a half close
 * and a short lingering read, so the client reads it before the socket goes
 * (closing with unread input would send a reset that can destroy it).
 */
#include "proxy/px_metrics.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_CHUNK 4096
#define LINGER 2.0        /* seconds a closing connection is read from, discarding */
#define ACCEPT_RETRY 1.0  /* seconds without accepting after EMFILE/ENFILE */
#define CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

typedef struct mconn {
    struct px_metrics *m;
    int fd;
    ev_io rw, ww;
    ev_timer idle_w;
    px_buf in, out;
    int close_after; /* the response in out is the last */
    int lingering;   /* written and half closed: reading until EOF, discarding */
    int dead;
    struct mconn *prev, *next; /* the live list */
    struct mconn *dnext;       /* the list to free */
} mconn;

struct px_metrics {
    px_core *core;
    px_metrics_page_fn page;
    void *arg;
    int fd;
    ev_io accept_w;
    ev_timer accept_retry_w;
    ev_prepare reap_w;
    mconn *conns;
    int nconns;
    mconn *dead;
    px_buf body; /* the page, rebuilt per request; its allocation kept */
};

/* Stop its I/O now; it is freed before the loop sleeps (never inside its
 * own callback). */
static void conn_close(mconn *c)
{
    px_metrics *m = c->m;
    if (c->dead) return;
    c->dead = 1;
    ev_io_stop(m->core->loop, &c->rw);
    ev_io_stop(m->core->loop, &c->ww);
    ev_timer_stop(m->core->loop, &c->idle_w);
    close(c->fd);
    c->fd = -1;
    if (c->prev) c->prev->next = c->next;
    else m->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    m->nconns--;
    c->dnext = m->dead;
    m->dead = c;
    ev_prepare_start(m->core->loop, &m->reap_w);
}

static void reap_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    px_metrics *m = w->data;
    (void)revents;
    while (m->dead) {
        mconn *c = m->dead;
        m->dead = c->dnext;
        px_buf_free(&c->in);
        px_buf_free(&c->out);
        free(c);
    }
    ev_prepare_stop(loop, w);
}

/* Reading is on while a request may still come and fit: not past the head
 * limit (a pipelined request waits there for the response before it). */
static void update_read(mconn *c)
{
    int want = c->lingering || (!c->close_after && px_buf_used(&c->in) <= PX_METRICS_MAX_HEAD);
    if (want) ev_io_start(c->m->core->loop, &c->rw);
    else ev_io_stop(c->m->core->loop, &c->rw);
}

/* Write what is buffered.  Returns -1 when the connection was closed. */
static int write_out(mconn *c)
{
    px_metrics *m = c->m;
    while (px_buf_used(&c->out)) {
        ssize_t n = send(c->fd, px_buf_start(&c->out), px_buf_used(&c->out), MSG_NOSIGNAL);
        if (n > 0) {
            px_buf_consume(&c->out, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ev_io_start(m->core->loop, &c->ww);
            return 0;
        }
        conn_close(c);
        return -1;
    }
    ev_io_stop(m->core->loop, &c->ww);
    px_buf_clear(&c->out, 64 * 1024); /* an idle connection keeps no page */
    if (c->close_after && !c->lingering) {
        shutdown(c->fd, SHUT_WR);
        c->lingering = 1;
        px_buf_clear(&c->in, 0);
        c->idle_w.repeat = LINGER;
        ev_timer_again(m->core->loop, &c->idle_w);
        update_read(c);
    }
    return 0;
}

static void respond(mconn *c, int code, const char *reason, int head_only, const char *extra, const char *ctype,
                    const char *body, size_t blen)
{
    px_buf_appendf(&c->out,
                   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%sConnection: %s\r\n\r\n", code,
                   reason, ctype, blen, extra ? extra : "", c->close_after ? "close" : "keep-alive");
    if (!head_only) px_buf_append(&c->out, body, blen);
}

/* An error answer; it ends the connection unless keep says its framing is sound. */
static void respond_error(mconn *c, int code, const char *reason, int keep, const char *extra)
{
    char body[128];
    int n = snprintf(body, sizeof(body), "%d %s\n", code, reason);
    if (!keep) c->close_after = 1;
    respond(c, code, reason, 0, extra, "text/plain; charset=utf-8", body, (size_t)n);
}

static int is_tchar(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* 1 if the comma-separated list v (n bytes) holds token tok, any case. */
static int has_token(const char *v, size_t n, const char *tok)
{
    size_t tl = strlen(tok), i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
        size_t s = i;
        while (i < n && v[i] != ',') i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t')) e--;
        if (e - s == tl && !strncasecmp(v + s, tok, tl)) return 1;
    }
    return 0;
}

/* Answer the request whose head is h[0..n) (its blank line included). */
static void handle(mconn *c, const char *h, size_t n)
{
    px_metrics *m = c->m;
    const char *end = h + n;
    const char *eol = memchr(h, '\n', n);
    size_t llen = (size_t)(eol - h);
    if (llen && h[llen - 1] == '\r') llen--;
    /* request line: method SP target SP version, nothing else */
    const char *sp1 = memchr(h, ' ', llen);
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(h + llen - sp1 - 1)) : NULL;
    if (!sp1 || !sp2 || sp1 == h || sp2 == sp1 + 1 || memchr(sp2 + 1, ' ', (size_t)(h + llen - sp2 - 1))) {
        respond_error(c, 400, "Bad Request", 0, NULL);
        return;
    }
    for (const char *p = h; p < sp1; p++)
        if (!is_tchar(*p)) {
            respond_error(c, 400, "Bad Request", 0, NULL);
            return;
        }
    const char *target = sp1 + 1, *version = sp2 + 1;
    size_t tlen = (size_t)(sp2 - target), vlen = (size_t)(h + llen - version);
    int minor;
    if (vlen == 8 && !memcmp(version, "HTTP/1.1", 8)) minor = 1;
    else if (vlen == 8 && !memcmp(version, "HTTP/1.0", 8)) minor = 0;
    else if (vlen == 8 && !memcmp(version, "HTTP/", 5)) {
        respond_error(c, 505, "HTTP Version Not Supported", 0, NULL);
        return;
    } else {
        respond_error(c, 400, "Bad Request", 0, NULL);
        return;
    }
    for (size_t i = 0; i < tlen; i++)
        if ((unsigned char)target[i] <= ' ' || (unsigned char)target[i] == 0x7f) {
            respond_error(c, 400, "Bad Request", 0, NULL);
            return;
        }
    /* header fields: only what framing and keep-alive need is read */
    int keep = minor == 1, body = 0;
    for (const char *p = eol + 1; p < end;) {
        const char *e = memchr(p, '\n', (size_t)(end - p));
        size_t len = (size_t)(e - p);
        if (len && p[len - 1] == '\r') len--;
        if (!len) break; /* the blank line */
        const char *colon = memchr(p, ':', len);
        if (!colon || colon == p || p[0] == ' ' || p[0] == '\t') { /* no name, or obsolete folding */
            respond_error(c, 400, "Bad Request", 0, NULL);
            return;
        }
        for (const char *q = p; q < colon; q++)
            if (!is_tchar(*q)) { /* whitespace before the colon too (RFC 9112 5.1) */
                respond_error(c, 400, "Bad Request", 0, NULL);
                return;
            }
        size_t nlen = (size_t)(colon - p);
        const char *v = colon + 1;
        size_t vl = (size_t)(p + len - v);
        while (vl && (*v == ' ' || *v == '\t')) v++, vl--;
        while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t')) vl--;
        if (nlen == 10 && !strncasecmp(p, "connection", 10)) {
            if (has_token(v, vl, "close")) keep = 0;
            else if (has_token(v, vl, "keep-alive")) keep = 1;
        } else if (nlen == 17 && !strncasecmp(p, "transfer-encoding", 17)) {
            body = 1;
        } else if (nlen == 14 && !strncasecmp(p, "content-length", 14)) {
            if (!vl || vl > 18) body = 1;
            for (size_t i = 0; i < vl; i++)
                if (v[i] < '0' || v[i] > '9') body = 1;
                else if (v[i] != '0') body = 1; /* a body of any size: none is read */
        }
        p = e + 1;
    }
    if (!keep) c->close_after = 1;
    int get = sp1 - h == 3 && !memcmp(h, "GET", 3);
    int head = sp1 - h == 4 && !memcmp(h, "HEAD", 4);
    if (body) { /* its bytes would be read as the next request: answer and close */
        if (get || head) respond_error(c, 400, "Bad Request", 0, NULL);
        else respond_error(c, 405, "Method Not Allowed", 0, "Allow: GET, HEAD\r\n");
        return;
    }
    if (!get && !head) {
        respond_error(c, 405, "Method Not Allowed", keep, "Allow: GET, HEAD\r\n");
        return;
    }
    const char *q = memchr(target, '?', tlen);
    size_t plen = q ? (size_t)(q - target) : tlen;
    if (plen != 8 || memcmp(target, "/metrics", 8)) {
        respond_error(c, 404, "Not Found", keep, NULL);
        return;
    }
    m->body.len = m->body.rpos = 0;
    m->page(m->arg, &m->body);
    respond(c, 200, "OK", head, NULL, CONTENT_TYPE, m->body.data, m->body.len);
    px_buf_clear(&m->body, 256 * 1024);
}

/* Where the head at the start of in ends (past its blank line), or 0. */
static size_t head_end(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '\n') continue;
        if (i + 1 < n && p[i + 1] == '\n') return i + 2;
        if (i + 2 < n && p[i + 1] == '\r' && p[i + 2] == '\n') return i + 3;
    }
    return 0;
}

/* Answer the requests read, one at a time, each once the previous response is out. */
static void process(mconn *c)
{
    while (!c->dead && !c->close_after && !px_buf_used(&c->out) && px_buf_used(&c->in)) {
        /* empty lines before a request line are allowed (RFC 9112 2.2) */
        while (px_buf_used(&c->in) && (px_buf_start(&c->in)[0] == '\r' || px_buf_start(&c->in)[0] == '\n'))
            px_buf_consume(&c->in, 1);
        size_t used = px_buf_used(&c->in);
        if (!used) break;
        size_t n = head_end(px_buf_start(&c->in), used < PX_METRICS_MAX_HEAD ? used : PX_METRICS_MAX_HEAD);
        if (!n) {
            if (used >= PX_METRICS_MAX_HEAD) respond_error(c, 431, "Request Header Fields Too Large", 0, NULL);
            else break; /* the rest is still to come */
        } else {
            handle(c, px_buf_start(&c->in), n);
            px_buf_consume(&c->in, n);
        }
        if (write_out(c) < 0) return;
    }
    if (!c->dead) update_read(c);
}

static void read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    mconn *c = w->data;
    (void)revents;
    for (;;) {
        if (!c->lingering && px_buf_used(&c->in) > PX_METRICS_MAX_HEAD) break; /* a head too long: process says so */
        size_t room = c->lingering ? READ_CHUNK : PX_METRICS_MAX_HEAD + 1 - px_buf_used(&c->in);
        if (room > READ_CHUNK) room = READ_CHUNK;
        ssize_t n = read(c->fd, px_buf_reserve(&c->in, room), room);
        if (n > 0) {
            if (c->lingering) continue; /* discarded */
            c->in.len += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        conn_close(c); /* EOF or an error */
        return;
    }
    if (c->lingering) return;
    ev_timer_again(loop, &c->idle_w);
    process(c);
}

static void write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    mconn *c = w->data;
    (void)revents;
    ev_timer_again(loop, &c->idle_w);
    if (write_out(c) < 0) return;
    if (!px_buf_used(&c->out)) process(c);
}

static void idle_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    conn_close(w->data);
}

static void accept_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    px_metrics *m = w->data;
    (void)revents;
    ev_io_start(loop, &m->accept_w);
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    px_metrics *m = w->data;
    (void)revents;
    for (;;) {
        int fd = accept4(m->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE) { /* readable for ever: pause, or the loop spins */
                ev_io_stop(loop, &m->accept_w);
                ev_timer_start(loop, &m->accept_retry_w);
            }
            return;
        }
        if (m->nconns >= PX_METRICS_MAX_CONNS) {
            close(fd);
            continue;
        }
        mconn *c = calloc(1, sizeof(*c));
        if (!c) abort();
        c->m = m;
        c->fd = fd;
        ev_io_init(&c->rw, read_cb, fd, EV_READ);
        ev_io_init(&c->ww, write_cb, fd, EV_WRITE);
        ev_init(&c->idle_w, idle_cb);
        c->idle_w.repeat = PX_METRICS_IDLE;
        c->rw.data = c->ww.data = c->idle_w.data = c;
        c->next = m->conns;
        if (m->conns) m->conns->prev = c;
        m->conns = c;
        m->nconns++;
        ev_io_start(loop, &c->rw);
        ev_timer_again(loop, &c->idle_w);
    }
}

static int listen_on(px_metrics *m, char *err, size_t errlen)
{
    const px_config *cfg = m->core->cfg;
    m->fd = px_listen_tcp(cfg->metrics_bind, cfg->metrics_port, PX_METRICS_MAX_CONNS, "metrics-bind",
                          "Could not listen for metrics on", err, errlen);
    return m->fd < 0 ? -1 : 0;
}

px_metrics *px_metrics_create(px_core *k, px_metrics_page_fn page, void *arg, char *err, size_t errlen)
{
    px_metrics *m = calloc(1, sizeof(*m));
    if (!m) abort();
    m->core = k;
    m->page = page;
    m->arg = arg;
    m->fd = -1;
    if (listen_on(m, err, errlen) != 0) {
        free(m);
        return NULL;
    }
    ev_io_init(&m->accept_w, accept_cb, m->fd, EV_READ);
    ev_timer_init(&m->accept_retry_w, accept_retry_cb, ACCEPT_RETRY, 0.);
    ev_prepare_init(&m->reap_w, reap_cb);
    m->accept_w.data = m->accept_retry_w.data = m->reap_w.data = m;
    ev_io_start(k->loop, &m->accept_w);
    px_log_notice(&k->log, "Metrics (Prometheus) on http://%s:%lld/metrics", k->cfg->metrics_bind, k->cfg->metrics_port);
    return m;
}

void px_metrics_destroy(px_metrics *m)
{
    if (!m) return;
    while (m->conns) conn_close(m->conns);
    reap_cb(m->core->loop, &m->reap_w, 0);
    ev_io_stop(m->core->loop, &m->accept_w);
    ev_timer_stop(m->core->loop, &m->accept_retry_w);
    if (m->fd >= 0) close(m->fd);
    px_buf_free(&m->body);
    free(m);
}
