/*
 * px_upstream: upstream connections, lanes and pools.  See px_upstream.h.
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

#include "proxy/px_tls.h"

#define READ_CHUNK (16 * 1024)
#define BACKOFF_MIN 0.05
#define BACKOFF_MAX 1.0

static void up_connect(px_upstream *u);
static void up_read_cb(struct ev_loop *loop, ev_io *w, int revents);
static void up_write_cb(struct ev_loop *loop, ev_io *w, int revents);
static void up_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void up_ready(px_upstream *u);
static void tls_failed(px_upstream *u, const char *why);

static int is_pinned(const px_upstream *u) { return u->lane == NULL; }

/* Queue u for its pool's flush before the loop sleeps (px_pool_flush). */
static void want_write(px_upstream *u)
{
    px_pool *p = u->pool;
    if (u->in_write_list || u->write_armed) return;
    u->in_write_list = 1;
    u->wnext = p->write_ups;
    p->write_ups = u;
}

/* A request of px_upstream_send_internal: its entry and where the reply goes. */
typedef struct internal_req {
    px_upreq q; /* first: the entry is the request */
    px_internal_cb cb;
    void *ctx;
} internal_req;

static void internal_done(px_upreq *q, px_upstream *u, const char *reply, size_t len, int failed)
{
    internal_req *ir = (internal_req *)q;
    px_internal_cb cb = ir->cb;
    void *ctx = ir->ctx;
    (void)failed;
    free(ir);
    cb(u, ctx, reply, len);
}

static void list_remove(px_upstream **head, px_upstream *u)
{
    if (u->pprev) u->pprev->pnext = u->pnext;
    else *head = u->pnext;
    if (u->pnext) u->pnext->pprev = u->pprev;
    u->pnext = u->pprev = NULL;
}

static void list_push(px_upstream **head, px_upstream *u)
{
    u->pprev = NULL;
    u->pnext = *head;
    if (*head) (*head)->pprev = u;
    *head = u;
}

/* Answer every request in flight with the connection's error, oldest first. */
static void fail_queue(px_upstream *u)
{
    char err[sizeof(u->errstr) + 8];
    int n = snprintf(err, sizeof(err), "-ERR %s", u->errstr);
    if (n < 0) n = 0;
    if (n > (int)sizeof(err) - 3) n = (int)sizeof(err) - 3;
    for (int i = 1; i < n; i++) /* an error line may not hold CR or LF */
        if (err[i] == '\r' || err[i] == '\n') err[i] = ' ';
    err[n++] = '\r';
    err[n++] = '\n';
    px_upreq *q = u->shead;
    u->shead = u->stail = NULL;
    u->nsent = 0;
    while (q) {
        px_upreq *next = q->next;
        q->next = NULL;
        q->done(q, u, err, (size_t)n, 1);
        q = next;
    }
}

static void close_socket(px_upstream *u)
{
    px_core *s = u->core;
    if (u->fd >= 0) {
        ev_io_stop(s->loop, &u->rw);
        ev_io_stop(s->loop, &u->ww);
        px_tls_free(u->tls); /* before its socket: it may send close_notify */
        u->tls = NULL;
        close(u->fd);
        u->fd = -1;
    }
    ev_timer_stop(s->loop, &u->timer);
    u->write_armed = 0;
    u->read_wants_write = u->write_wants_read = u->tls_answered = 0;
    px_buf_clear(&u->out, 0);
    /* The allocation stays (freed with u, or reused by its next connection):
     * the reply being delivered from it may be what closed u (EXEC's reply
     * running a queued HOTPROXY DEBUG REPOINT), and its reader still holds
     * the bytes until that callback returns. */
    px_buf_clear(&u->in, (size_t)-1);
    px_reply_scanner_reset(&u->scan);
}

/* A pinned connection ends here: closed now, freed from the loop. */
static void up_close_pinned(px_upstream *u)
{
    px_core *s = u->core;
    px_pool *p = u->pool;
    if (u->state == PX_UP_CLOSED) return;
    close_socket(u);
    u->state = PX_UP_CLOSED;
    if (u->spare) p->nspare--;
    u->spare = 0;
    if (u->oob) p->noob--;
    u->oob = 0;
    list_remove(&p->pinned, u);
    p->npinned--;
    if (!u->errstr[0]) snprintf(u->errstr, sizeof(u->errstr), "upstream %s connection closed", p->name);
    fail_queue(u);
    if (u->link) p->nlinks--;
    u->link = 0;
    if (u->on_lost) {
        px_lost_cb lost = u->on_lost;
        void *owner = u->owner;
        px_upstream_disown(u);
        lost(u, owner);
    }
    (void)s;
    u->rnext = p->reap_ups;
    p->reap_ups = u;
}

/*
 * Close the socket and answer everything in flight with an error.  A shared
 * connection retries after the backoff (at once when retry_now, for one that
 * was replaced rather than refused); a pinned one is closed for good, since
 * the state its client built there is gone.
 */
static void up_fail(px_upstream *u, const char *fmt, const char *detail, int retry_now)
{
    px_core *s = u->core;
    int was_ready = u->state == PX_UP_READY;
    if (u->state == PX_UP_CLOSED) return;
    snprintf(u->errstr, sizeof(u->errstr), fmt, u->pool->name, detail);
    u->broke = !retry_now;
    if (was_ready) s->stats.upstream_disconnects++;
    else s->stats.upstream_connect_failures++;
    px_log_write(&s->log, was_ready ? 3 : 1, "Upstream: %s", u->errstr);
    if (is_pinned(u)) {
        up_close_pinned(u);
        return;
    }
    close_socket(u);
    u->state = PX_UP_DOWN;
    if (u->tracking_epoch) {
        /* Redis tracked keys for this connection only: what it read is
         * watched no more.  Told before its requests are answered, so the
         * listener (the L1) refuses the fills still in flight first. */
        uint64_t epoch = u->tracking_epoch;
        u->tracking_epoch = 0;
        if (u->pool->on_tracking_lost) u->pool->on_tracking_lost(u, epoch, u->pool->tracking_lost_arg);
    }
    fail_queue(u);
    double wait = retry_now ? 0 : u->backoff;
    u->backoff = u->backoff < BACKOFF_MIN ? BACKOFF_MIN : u->backoff * 2;
    if (u->backoff > BACKOFF_MAX) u->backoff = BACKOFF_MAX;
    ev_timer_set(&u->timer, wait, 0);
    ev_timer_start(s->loop, &u->timer);
}

static void queue_req(px_upstream *u, px_upreq *q)
{
    /* A fresh clock: a request queued late in a long loop iteration would
     * otherwise look as old as the iteration, and time out falsely. */
    q->sent_at = px_now_fresh(u->core);
    q->next = NULL;
    if (u->stail) u->stail->next = q;
    else u->shead = q;
    u->stail = q;
    u->nsent++;
}

void px_upstream_send_internal(px_upstream *u, const char *cmd, size_t len, px_internal_cb cb, void *ctx)
{
    internal_req *ir = calloc(1, sizeof(*ir));
    if (!ir) abort();
    ir->q.done = internal_done;
    ir->q.what = "(hotproxy's own request)";
    ir->cb = cb;
    ir->ctx = ctx;
    queue_req(u, &ir->q);
    px_buf_append(&u->out, cmd, len);
    if (u->state == PX_UP_READY) want_write(u);
}

void px_upstream_write(px_upstream *u, const char *cmd, size_t len)
{
    px_buf_append(&u->out, cmd, len);
    if (u->state == PX_UP_READY) want_write(u);
}

void px_upstream_marker(px_upstream *u, px_internal_cb cb, void *ctx)
{
    char cmd[96];
    if (!u->marker[0]) snprintf(u->marker, sizeof(u->marker), "hotproxy-marker-%p-%x", (void *)u, (unsigned)rand());
    int n = snprintf(cmd, sizeof(cmd), "*2\r\n$4\r\nPING\r\n$%zu\r\n%s\r\n", strlen(u->marker), u->marker);
    px_upstream_send_internal(u, cmd, (size_t)n, cb, ctx);
    u->stail->marker = 1;
}

static void send_internalv(px_upstream *u, px_internal_cb cb, int argc, const char **argv)
{
    px_buf b = {0};
    px_resp_command(&b, argc, argv, NULL);
    px_upstream_send_internal(u, b.data, b.len, cb, NULL);
    px_buf_free(&b);
}

/* Handshake replies: any error fails the connection. */
static void expect_ok(px_upstream *u, void *ctx, const char *reply, size_t len)
{
    (void)ctx;
    if (u->state == PX_UP_READY && len && reply[0] == '-') {
        char detail[160];
        snprintf(detail, sizeof(detail), "%.*s", (int)(len > 150 ? 150 : len - 2), reply + 1);
        up_fail(u, "upstream %s refused the connection setup: %s", detail, 0);
    }
}

static void got_client_id(px_upstream *u, void *ctx, const char *reply, size_t len)
{
    (void)ctx;
    long long id;
    if (len > 3 && reply[0] == ':' && px_string2ll(reply + 1, len - 3, &id)) u->redis_id = id;
}

static void got_info(px_upstream *u, void *ctx, const char *reply, size_t len)
{
    (void)ctx;
    const char *text, *v;
    size_t tlen;
    if (px_reply_string(reply, len, &text, &tlen) != 0 || reply[0] == '-') return;
    for (v = text; v && v < text + tlen; v = memchr(v, '\n', (size_t)(text + tlen - v)), v = v ? v + 1 : v) {
        if ((size_t)(text + tlen - v) > 14 && !memcmp(v, "redis_version:", 14)) {
            const char *e = v + 14;
            size_t n = 0;
            while (e + n < text + tlen && e[n] != '\r' && e[n] != '\n' && n < sizeof(u->pool->redis_version) - 1) n++;
            memcpy(u->pool->redis_version, e, n);
            u->pool->redis_version[n] = '\0';
            return;
        }
    }
}

static void got_databases(px_upstream *u, void *ctx, const char *reply, size_t len)
{
    (void)ctx;
    /* *2\r\n$9\r\ndatabases\r\n$2\r\n16\r\n in RESP2, %1 ... in RESP3 */
    const char *p = memchr(reply, '\n', len);
    long long n;
    for (int i = 0; p && i < 3; i++) p = memchr(p + 1, '\n', (size_t)(reply + len - p - 1));
    if (!p) return;
    const char *start = p + 1, *cr = memchr(start, '\r', (size_t)(reply + len - start));
    if (cr && px_string2ll(start, (size_t)(cr - start), &n) && n > 0) u->pool->databases = n;
}

/* Queued ahead of anything a client sends on a new (or reused) connection. */
static void up_handshake(px_upstream *u, int with_id)
{
    px_core *s = u->core;
    const px_config *cfg = s->cfg;
    const char *user = u->pool->own_auth ? u->pool->auth_user : cfg->upstream_user;
    const char *password = u->pool->own_auth ? u->pool->auth_password : cfg->upstream_password;
    if (password && *password) {
        if (user && *user) {
            const char *argv[] = {"AUTH", user, password};
            send_internalv(u, expect_ok, 3, argv);
        } else {
            const char *argv[] = {"AUTH", password};
            send_internalv(u, expect_ok, 2, argv);
        }
    }
    if (u->proto == 3) {
        const char *argv[] = {"HELLO", "3"};
        send_internalv(u, expect_ok, 2, argv);
    }
    if (u->db != 0) {
        char db[24];
        snprintf(db, sizeof(db), "%d", u->db);
        const char *argv[] = {"SELECT", db};
        send_internalv(u, expect_ok, 2, argv);
    }
    if (u->lane) {
        /* a new connection tracks nothing yet; the listener (the L1) may ask
         * Redis to track what it reads */
        u->tracking_epoch = 0;
        u->tracking_used = 0;
        if (u->pool->on_handshake) u->pool->on_handshake(u, u->pool->handshake_arg);
    }
    if (with_id) {
        const char *argv[] = {"CLIENT", "ID"};
        send_internalv(u, got_client_id, 2, argv);
    }
    if (!u->pool->probed) {
        const char *info[] = {"INFO", "server"};
        const char *dbs[] = {"CONFIG", "GET", "databases"};
        u->pool->probed = 1;
        send_internalv(u, got_info, 2, info);
        send_internalv(u, got_databases, 3, dbs);
    }
}

static void up_ready(px_upstream *u)
{
    px_core *s = u->core;
    int one = 1;
    ev_timer_stop(s->loop, &u->timer);
    ev_io_stop(s->loop, &u->ww);
    u->write_armed = 0;
    u->state = PX_UP_READY;
    if (!u->tls) u->backoff = 0; /* with TLS, once the server answered (tls_answered) */
    u->errstr[0] = '\0';
    setsockopt(u->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    s->stats.upstream_connects++;
    px_log_verbose(&s->log, "Upstream: connected to %s (db %d, RESP%d%s%s%s)", u->pool->name, u->db, u->proto,
                   is_pinned(u) ? ", pinned" : "", u->tls ? ", " : "", u->tls ? px_tls_version(u->tls) : "");
    ev_io_set(&u->rw, u->fd, EV_READ);
    ev_io_start(s->loop, &u->rw);
    if (px_buf_used(&u->out)) want_write(u);
}

static void up_connect(px_upstream *u)
{
    px_core *s = u->core;
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
    up_handshake(u, is_pinned(u) && !u->oob); /* CLIENT ID is refused while a script is busy, and unused */
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
    if (u->state == PX_UP_CONNECTING && u->tls) {
        /* connect-timeout covers the TLS handshake too; a plain Redis waits
         * for the end of a line the ClientHello never sends */
        tls_failed(u, "no answer within connect-timeout (is it a TLS port?)");
    } else if (u->state == PX_UP_CONNECTING) {
        up_fail(u, "upstream %s unavailable: %s", "connect timeout", 0);
    } else if (u->state == PX_UP_DOWN) {
        up_connect(u);
    }
}

/* Why a read or write returned n <= 0: TLS' reason for a TLS failure. */
static const char *io_error(px_upstream *u, ssize_t n)
{
    if (n == 0) return "closed by the server";
    if (u->tls && errno == EPROTO) return px_tls_error(u->tls);
    return strerror(errno);
}

static void tls_failed(px_upstream *u, const char *why)
{
    px_core *s = u->core;
    char line[sizeof(u->errstr)];
    s->upstream_tls_failures++;
    /* refused after the handshake seemed done (tls_answered): a failed
     * attempt, retried after the backoff, not a lost connection */
    if (u->state == PX_UP_READY) u->state = PX_UP_CONNECTING;
    /* A refused certificate is an operator's to fix: a warning, once per
     * pool and reason until one of its connections succeeds again (retries
     * every backoff, and the L1's link, would flood the log); the repeats at
     * the level of other connect failures (up_fail's). */
    snprintf(line, sizeof(line), "upstream %s TLS handshake failed: %s", u->pool->name, why);
    if (strncmp(u->pool->tls_warned, why, sizeof(u->pool->tls_warned) - 1)) {
        px_log_warning(&s->log, "Upstream: %s", line);
        snprintf(u->pool->tls_warned, sizeof(u->pool->tls_warned), "%s", why);
    }
    up_fail(u, "upstream %s TLS handshake failed: %s", why, 0);
}

/* Drive the TLS handshake one step; the connection is ready once it is done. */
static void tls_step(px_upstream *u)
{
    px_core *s = u->core;
    int rc = px_tls_handshake(u->tls);
    if (rc < 0) {
        tls_failed(u, px_tls_error(u->tls));
        return;
    }
    ev_io_stop(s->loop, &u->rw);
    ev_io_stop(s->loop, &u->ww);
    if (rc == 1) {
        up_ready(u);
        return;
    }
    if (px_tls_want_write(u->tls)) {
        ev_io_start(s->loop, &u->ww);
    } else {
        ev_io_set(&u->rw, u->fd, EV_READ);
        ev_io_start(s->loop, &u->rw);
    }
}

/* connect() is done: TLS starts, named after upstream-tls-sni or the host
 * the pool was given (as configured, or as a Sentinel or CLUSTER SLOTS
 * named it), which the certificate must match when verified. */
static void tls_start(px_upstream *u)
{
    const px_config *cfg = u->core->cfg;
    const char *name = *cfg->upstream_tls_sni ? cfg->upstream_tls_sni : u->pool->host;
    char err[256];
    u->tls = px_tls_new(u->core->upstream_tls, u->fd, 0, name, cfg->upstream_tls_verify ? name : NULL, err,
                        sizeof(err));
    if (!u->tls) {
        tls_failed(u, err);
        return;
    }
    tls_step(u);
}

int px_upstream_flush(px_upstream *u)
{
    px_core *s = u->core;
    if (u->state != PX_UP_READY) return 0; /* written once connected */
    u->write_wants_read = 0;
    while (px_buf_used(&u->out)) {
        ssize_t n = u->tls ? px_tls_write(u->tls, px_buf_start(&u->out), px_buf_used(&u->out))
                           : write(u->fd, px_buf_start(&u->out), px_buf_used(&u->out));
        if (n > 0) {
            px_buf_consume(&u->out, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && u->tls && !px_tls_want_write(u->tls)) {
            /* TLS must read first: the read watcher, always on while
             * ready, calls this again */
            u->write_wants_read = 1;
            return 0;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!u->write_armed) {
                u->write_armed = 1;
                ev_io_start(s->loop, &u->ww);
            }
            return 0;
        }
        if (u->tls && !u->tls_answered) tls_failed(u, io_error(u, n)); /* as in up_read_some */
        else up_fail(u, "upstream %s connection lost (the command may have run): %s", io_error(u, n), 0);
        return -1;
    }
    if (u->write_armed && !u->read_wants_write) {
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
        if (u->tls) {
            tls_step(u);
            return;
        }
        if (getsockopt(u->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
        if (err) {
            up_fail(u, "upstream %s unavailable: %s", strerror(err), 0);
            return;
        }
        if (u->core->upstream_tls) tls_start(u);
        else up_ready(u);
        return;
    }
    if (u->read_wants_write) {
        u->read_wants_write = 0;
        up_read_cb(loop, &u->rw, EV_READ);
        if (u->state != PX_UP_READY) return;
    }
    px_upstream_flush(u);
}

/*
 * One complete frame.  Pushes (RESP3 '>') and, in raw mode, every frame
 * once the FIFO is empty, belong to the pinned connection's owner as they
 * come; everything else answers the oldest request.
 */
static int deliver(px_upstream *u, const char *frame, size_t len)
{
    int push = (u->proto == 3 && frame[0] == '>') || (u->raw && !u->shead);
    /* In raw mode a marker is answered by the frame that carries its token;
     * frames before it belong to the owner. */
    if (!push && u->raw && u->shead && u->shead->marker && !memmem(frame, len, u->marker, strlen(u->marker)))
        push = 1;
    if (push || (!u->shead && is_pinned(u))) {
        if (u->on_frame) u->on_frame(u, u->owner, frame, len);
        return 0; /* a spare or releasing connection's late frames are dropped */
    }
    if (!u->shead) {
        up_fail(u, "upstream %s protocol error: %s", "reply with no request", 0);
        return -1;
    }
    px_upreq *q = u->shead;
    u->shead = q->next;
    if (!u->shead) u->stail = NULL;
    u->nsent--;
    q->next = NULL;
    q->done(q, u, frame, len, 0);
    if (u->oob && !u->shead && u->state == PX_UP_READY) {
        /* its one request is answered: the socket goes now, the struct
         * from the loop (this is still u's read callback) */
        snprintf(u->errstr, sizeof(u->errstr), "upstream %s out-of-band connection done", u->pool->name);
        up_close_pinned(u);
    }
    return 0;
}

int px_upstream_ref(px_upstream *u, const char *p, size_t len, px_ref *ref)
{
    if (!px_buf_holds(&u->in, p, len)) return 0;
    *ref = px_buf_share(&u->in);
    return 1;
}

/* One read and the frames it completes; 1 when it read something and the
 * connection is still ready. */
static int up_read_some(px_upstream *u)
{
    size_t want = READ_CHUNK, used = px_buf_used(&u->in);
    if (u->scan.need > used && u->scan.need - used > want) want = u->scan.need - used;
    if (want > 64u << 20) want = 64u << 20;
    char *p = px_buf_reserve(&u->in, want);
    ssize_t n = u->tls ? px_tls_read(u->tls, p, want) : read(u->fd, p, want);
    int again = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
    if (n <= 0 && !again && u->tls && !u->tls_answered) {
        /* nothing answered yet: the server refused the TLS session (its
         * alert says why), the commands did not run */
        tls_failed(u, io_error(u, n));
        return 0;
    }
    if (n == 0) {
        up_fail(u, "upstream %s connection lost (the command may have run): %s", "closed by the server", 0);
        return 0;
    }
    if (n < 0) {
        if (again) {
            if (u->tls && px_tls_want_write(u->tls) && !u->read_wants_write) {
                /* TLS must write first: the write watcher reads again */
                u->read_wants_write = 1;
                if (!u->write_armed) {
                    u->write_armed = 1;
                    ev_io_start(u->core->loop, &u->ww);
                }
            }
            return 0;
        }
        up_fail(u, "upstream %s connection lost (the command may have run): %s", io_error(u, n), 0);
        return 0;
    }
    u->in.len += (size_t)n;
    if (u->tls && !u->tls_answered) {
        u->tls_answered = 1;
        u->backoff = 0;
        u->pool->tls_warned[0] = '\0';
    }
    while (u->state == PX_UP_READY && px_buf_used(&u->in)) {
        const char *start = px_buf_start(&u->in);
        int rc = px_reply_scan(&u->scan, start, px_buf_used(&u->in));
        if (rc == PX_AGAIN) break;
        if (rc == PX_ERR) {
            up_fail(u, "upstream %s protocol error: %s", u->scan.errstr, 0);
            return 0;
        }
        size_t len = u->scan.pos;
        px_reply_scanner_reset(&u->scan);
        /* Consume first: the frame's bytes stay valid until the next
         * append, and a callback may fail (and clear) the connection. */
        px_buf_consume(&u->in, len);
        if (deliver(u, start, len) != 0) return 0;
    }
    return u->state == PX_UP_READY;
}

static void up_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    px_upstream *u = w->data;
    (void)loop;
    (void)revents;
    if (u->state == PX_UP_CONNECTING) { /* only TLS' handshake waits for reading then */
        if (u->tls) tls_step(u);
        return;
    }
    if (u->write_wants_read) {
        px_upstream_flush(u);
        if (u->state != PX_UP_READY) return;
    }
    /* TLS may hold bytes it decrypted that did not fit: the socket will not
     * signal them, so read again while there are some. */
    while (up_read_some(u) && u->tls && px_tls_pending(u->tls)) continue;
    if (u->state == PX_UP_READY && !px_buf_used(&u->in) && u->in.cap > 1024 * 1024) px_buf_clear(&u->in, 0);
}

void px_upstream_send(px_upstream *u, px_upreq *q, const char *cmd, size_t len)
{
    queue_req(u, q);
    px_buf_append(&u->out, cmd, len);
    if (u->state == PX_UP_READY) want_write(u);
}

static void up_init(px_upstream *u, px_pool *p, px_lane *lane, int db, int proto)
{
    memset(u, 0, sizeof(*u));
    u->core = p->core;
    u->pool = p;
    u->lane = lane;
    u->db = db;
    u->proto = proto;
    u->fd = -1;
    u->state = PX_UP_DOWN;
    px_reply_scanner_init(&u->scan);
    ev_io_init(&u->rw, up_read_cb, -1, EV_READ);
    ev_io_init(&u->ww, up_write_cb, -1, EV_WRITE);
    ev_timer_init(&u->timer, up_timer_cb, 0, 0);
    u->rw.data = u->ww.data = u->timer.data = u;
}

static px_lane *lane_get(px_pool *p, int db, int proto)
{
    for (int i = 0; i < p->nlanes; i++)
        if (p->lanes[i]->db == db && p->lanes[i]->proto == proto) return p->lanes[i];
    px_lane *l = calloc(1, sizeof(*l));
    if (!l) abort();
    l->db = db;
    l->proto = proto;
    l->nconns = p->nconns;
    l->conns = calloc((size_t)l->nconns, sizeof(px_upstream));
    if (!l->conns) abort();
    p->lanes = realloc(p->lanes, sizeof(*p->lanes) * (size_t)(p->nlanes + 1));
    if (!p->lanes) abort();
    p->lanes[p->nlanes++] = l;
    for (int i = 0; i < l->nconns; i++) {
        up_init(&l->conns[i], p, l, db, proto);
        up_connect(&l->conns[i]);
    }
    return l;
}

static void set_address(px_pool *p, const char *host, int port)
{
    free(p->host);
    p->host = strdup(host);
    if (!p->host) abort();
    p->port = port;
    snprintf(p->name, sizeof(p->name), strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
}

px_pool *px_pool_create(px_core *k, const char *host, int port, int nconns)
{
    px_pool *p = calloc(1, sizeof(*p));
    if (!p) abort();
    p->core = k;
    p->databases = 16;
    set_address(p, host, port);
    p->nconns = nconns;
    if (nconns > 0) lane_get(p, 0, 2); /* a control pool (px_router_add_control_pool) has no lanes */
    else p->probed = 1;                /* nor a client to tell its version and databases */
    return p;
}

void px_pool_set_auth(px_pool *p, const char *user, const char *password)
{
    free(p->auth_user);
    free(p->auth_password);
    p->auth_user = strdup(user ? user : "");
    p->auth_password = strdup(password ? password : "");
    if (!p->auth_user || !p->auth_password) abort();
    p->own_auth = 1;
}

static void up_release(px_upstream *u, const char *why)
{
    close_socket(u); /* resets the scanner, which gives back its stack */
    ev_timer_stop(u->core->loop, &u->timer);
    u->state = PX_UP_DOWN;
    u->broke = 0;
    snprintf(u->errstr, sizeof(u->errstr), "%s", why);
    fail_queue(u);
}

static void upstream_free(px_upstream *u)
{
    px_reply_scanner_free(&u->scan);
    px_buf_free(&u->in);
    px_buf_free(&u->out);
    free(u);
}

void px_pool_flush(px_pool *p)
{
    while (p->write_ups) {
        px_upstream *u = p->write_ups;
        p->write_ups = u->wnext;
        u->in_write_list = 0;
        px_upstream_flush(u);
    }
}

void px_pool_reap(px_pool *p)
{
    while (p->reap_ups) {
        px_upstream *u = p->reap_ups;
        p->reap_ups = u->rnext;
        /* it may still sit in the write list */
        if (u->in_write_list) {
            px_upstream **pp = &p->write_ups;
            while (*pp && *pp != u) pp = &(*pp)->wnext;
            if (*pp) *pp = u->wnext;
        }
        upstream_free(u);
    }
}

void px_pool_repoint(px_pool *p, const char *host, int port, const char *why)
{
    char to[sizeof(p->name)], detail[256];
    snprintf(to, sizeof(to), strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    snprintf(detail, sizeof(detail), "moved to %.100s: %.120s", to, why);
    px_log_notice(&p->core->log, "Upstream: %s now points at %s (%s)", p->name, to, why);
    /* Whatever was in flight on the old server is answered with an error
     * naming it, now, never left waiting; the shared connections reconnect
     * at once (from the loop, once the address below is set). */
    for (int i = 0; i < p->nlanes; i++)
        for (int j = 0; j < p->lanes[i]->nconns; j++) {
            px_upstream *u = &p->lanes[i]->conns[j];
            u->backoff = 0;
            if (u->state == PX_UP_DOWN) {
                /* waiting out a backoff: try the new address now */
                ev_timer_stop(p->core->loop, &u->timer);
                ev_timer_set(&u->timer, 0, 0);
                ev_timer_start(p->core->loop, &u->timer);
                continue;
            }
            up_fail(u, "upstream %s: %s", detail, 1);
            u->backoff = 0;
        }
    /* A pinned connection's state (MULTI, subscriptions, a blocked command)
     * and the links lived on the old server: each ends, and its owner hears
     * it (on_lost), as when the connection breaks, but marked moved: nothing
     * was cut halfway, so an owner may rebuild its state on the new server
     * (re-subscribe), which it could not honestly do after a break. */
    px_upstream *u = p->pinned;
    while (u) {
        px_upstream *next = u->pnext;
        u->moved = 1;
        px_pool_close(p, u, detail);
        u = next;
    }
    set_address(p, host, port);
    p->probed = 0; /* the new server's version and databases */
}

void px_pool_retire(px_pool *p, const char *why)
{
    char err[256];
    snprintf(err, sizeof(err), "upstream %.100s removed: %.120s", p->name, why);
    /* pinned connections and links: their owners hear of the end (on_lost) */
    px_upstream *u = p->pinned;
    while (u) {
        px_upstream *next = u->pnext;
        px_pool_close(p, u, "removed");
        u = next;
    }
    for (int i = 0; i < p->nlanes; i++)
        for (int j = 0; j < p->lanes[i]->nconns; j++) up_release(&p->lanes[i]->conns[j], err);
}

void px_pool_destroy(px_pool *p)
{
    px_pool_reap(p);
    for (int i = 0; i < p->nlanes; i++) {
        for (int j = 0; j < p->lanes[i]->nconns; j++) {
            px_upstream *u = &p->lanes[i]->conns[j];
            up_release(u, "hotproxy is shutting down");
            px_buf_free(&u->in); /* close_socket keeps the read allocation */
            px_buf_free(&u->out);
        }
        free(p->lanes[i]->conns);
        free(p->lanes[i]);
    }
    free(p->lanes);
    while (p->pinned) {
        px_upstream *u = p->pinned;
        list_remove(&p->pinned, u);
        px_upstream_disown(u);
        up_release(u, "hotproxy is shutting down");
        upstream_free(u);
    }
    free(p->host);
    free(p->auth_user);
    free(p->auth_password);
    free(p);
}


px_upstream *px_pool_pick(px_pool *p, int db, int proto, px_upstream *stay)
{
    px_lane *l = lane_get(p, db, proto);
    /* A client with requests in flight stays where they are, so its writes
     * and reads reach Redis in the order it sent them. */
    if (stay && stay->lane == l && stay->state != PX_UP_DOWN) return stay;
    px_upstream *best = NULL;
    for (int i = 0; i < l->nconns; i++) {
        px_upstream *u = &l->conns[(l->rr + (unsigned)i) % (unsigned)l->nconns];
        if (u->state == PX_UP_DOWN) continue;
        if (!best || (best->state != PX_UP_READY && u->state == PX_UP_READY) ||
            (u->state == best->state && u->nsent < best->nsent))
            best = u;
    }
    l->rr++;
    return best;
}

px_upstream *px_lane_conn_for_key(px_upstream *u, const char *key, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a: spreads keys; nothing here for an attacker to gain */
    if (!u->lane) return u;
    if (u->lane->nconns == 1) return &u->lane->conns[0]; /* the default: no hash to work out */
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)key[i]) * 16777619u;
    return &u->lane->conns[h % (uint32_t)u->lane->nconns];
}

const char *px_pool_unavailable(px_pool *p)
{
    for (int i = 0; i < p->nlanes; i++)
        for (int j = 0; j < p->lanes[i]->nconns; j++)
            if (p->lanes[i]->conns[j].errstr[0]) return p->lanes[i]->conns[j].errstr;
    return "upstream unavailable";
}

static void set_owner(px_upstream *u, px_frame_cb on_frame, px_lost_cb on_lost, void *owner)
{
    u->on_frame = on_frame;
    u->on_lost = on_lost;
    u->owner = owner;
}

void px_upstream_disown(px_upstream *u)
{
    set_owner(u, NULL, NULL, NULL);
}

px_upstream *px_pool_pin(px_pool *p, int db, int proto, px_frame_cb on_frame, px_lost_cb on_lost, void *owner,
                         const char **err)
{
    px_core *s = p->core;
    px_upstream *u;
    /* a spare: RESET cleaned it, the handshake sets it up for this client */
    for (u = p->pinned; u; u = u->pnext)
        if (u->spare && u->state == PX_UP_READY) break;
    if (u) {
        u->spare = 0;
        p->nspare--;
        set_owner(u, on_frame, on_lost, owner);
        u->db = db;
        u->proto = proto;
        u->raw = 0;
        u->errstr[0] = '\0';
        up_handshake(u, 0);
        return u;
    }
    if (p->npinned - p->nspare - p->nlinks - p->noob >= s->cfg->upstream_max_pinned) {
        *err = "ERR hotproxy: too many clients hold an upstream connection of their own "
               "(upstream-max-pinned reached); try again later";
        return NULL;
    }
    u = calloc(1, sizeof(*u));
    if (!u) abort();
    up_init(u, p, NULL, db, proto);
    set_owner(u, on_frame, on_lost, owner);
    list_push(&p->pinned, u);
    p->npinned++;
    up_connect(u);
    if (u->state == PX_UP_CLOSED) {
        *err = "ERR hotproxy: cannot open an upstream connection for this client";
        return NULL;
    }
    return u;
}

static void reset_done(px_upstream *u, void *ctx, const char *reply, size_t len)
{
    px_pool *p = u->pool;
    (void)ctx;
    if (u->state != PX_UP_READY) return; /* failed meanwhile: being closed */
    u->releasing = 0;
    if (len >= 8 && !memcmp(reply, "+RESET\r\n", 8) && !u->owner && u->nsent == 0 &&
        p->nspare < p->core->cfg->upstream_spare) {
        u->db = 0;
        u->proto = 2;
        u->spare = 1;
        p->nspare++;
        return;
    }
    snprintf(u->errstr, sizeof(u->errstr), "upstream %s connection not reusable", p->name);
    up_close_pinned(u);
}

void px_upstream_no_reuse(px_upstream *u)
{
    u->no_reuse = 1;
}

px_upstream *px_pool_open_oob(px_pool *p)
{
    px_upstream *u = calloc(1, sizeof(*u));
    if (!u) abort();
    /* database 0 and RESP2: nothing to SELECT, which Redis refuses while a
     * script is busy (AUTH and HELLO it allows) */
    up_init(u, p, NULL, 0, 2);
    u->oob = 1;
    list_push(&p->pinned, u);
    p->npinned++;
    p->noob++;
    up_connect(u);
    return u->state == PX_UP_CLOSED ? NULL : u;
}

void px_pool_unpin(px_pool *p, px_upstream *u)
{
    px_upstream_disown(u);
    if (u->no_reuse) {
        /* Redis' RESET turns tracking off, but invalidations for keys read
         * before it may be in flight, and Redis keeps the connection's id in
         * its tracking table: a next client turning tracking on would get
         * invalidations for keys it never read.  Never hand it on. */
        snprintf(u->errstr, sizeof(u->errstr), "upstream %s connection not reusable (it had tracking on)", p->name);
        up_close_pinned(u);
        return;
    }
    if (u->state == PX_UP_READY && u->nsent == 0 && !u->raw && p->nspare < p->core->cfg->upstream_spare) {
        /* verifiably clean only once Redis has answered RESET */
        u->releasing = 1;
        px_upstream_send_internal(u, "*1\r\n$5\r\nRESET\r\n", 15, reset_done, NULL);
        return;
    }
    up_close_pinned(u);
}

px_upstream *px_pool_open_link(px_pool *p, px_frame_cb on_frame, px_lost_cb on_lost, void *ctx)
{
    px_upstream *u = calloc(1, sizeof(*u));
    if (!u) abort();
    up_init(u, p, NULL, 0, 2);
    set_owner(u, on_frame, on_lost, ctx);
    u->link = 1;
    list_push(&p->pinned, u);
    p->npinned++;
    p->nlinks++;
    up_connect(u);
    return u->state == PX_UP_CLOSED ? NULL : u;
}

void px_pool_close(px_pool *p, px_upstream *u, const char *why)
{
    (void)p;
    if (u->state == PX_UP_CLOSED) return;
    snprintf(u->errstr, sizeof(u->errstr), "upstream %s connection closed: %.60s", u->pool->name, why);
    up_close_pinned(u);
}

void px_pool_on_tracking_lost(px_pool *p, void (*fn)(px_upstream *u, uint64_t epoch, void *arg), void *arg)
{
    p->on_tracking_lost = fn;
    p->tracking_lost_arg = arg;
}

void px_pool_on_handshake(px_pool *p, void (*fn)(px_upstream *u, void *arg), void *arg)
{
    p->on_handshake = fn;
    p->handshake_arg = arg;
}

void px_pool_each_shared(px_pool *p, void (*fn)(px_upstream *u, void *arg), void *arg)
{
    for (int i = 0; i < p->nlanes; i++)
        for (int j = 0; j < p->lanes[i]->nconns; j++) fn(&p->lanes[i]->conns[j], arg);
}

static void check_timeout(px_upstream *u, double now, long long timeout_ms)
{
    px_upreq *q = u->shead;
    if (u->state != PX_UP_READY || !q || q->blocking || u->raw) return;
    if ((now - q->sent_at) * 1000.0 < (double)timeout_ms) return;
    /* Say which command held the connection up: its name only, never its
     * arguments (values and secrets stay out of logs). */
    char detail[160];
    snprintf(detail, sizeof(detail), "no reply within %lld ms to '%s' at the head of the connection", timeout_ms,
             q->what ? q->what : "(unknown command)");
    u->core->stats.upstream_timeouts++;
    up_fail(u, "upstream %s timeout: %s", detail, 1);
}

void px_pool_cron(px_pool *p, double now, long long timeout_ms)
{
    if (timeout_ms <= 0) return;
    for (int i = 0; i < p->nlanes; i++)
        for (int j = 0; j < p->lanes[i]->nconns; j++) check_timeout(&p->lanes[i]->conns[j], now, timeout_ms);
    px_upstream *u = p->pinned;
    while (u) {
        px_upstream *next = u->pnext; /* a timeout unlinks u */
        check_timeout(u, now, timeout_ms);
        u = next;
    }
}

void px_pool_stats(px_pool *p, px_stats_pool *v)
{
    int ready = 0, total = 0;
    long inflight = 0;
    for (int i = 0; i < p->nlanes; i++)
        for (int j = 0; j < p->lanes[i]->nconns; j++) {
            total++;
            ready += p->lanes[i]->conns[j].state == PX_UP_READY;
            inflight += p->lanes[i]->conns[j].nsent;
        }
    memset(v, 0, sizeof(*v));
    v->upstream = p->name;
    v->upstream_status = ready ? "up" : "down";
    v->upstream_server_version = p->redis_version;
    v->upstream_lanes = p->nlanes;
    v->upstream_connections = total;
    v->upstream_connections_ready = ready;
    v->upstream_inflight = inflight;
    v->pinned_connections = p->npinned - p->nspare - p->nlinks - p->noob;
    v->oob_connections = p->noob;
    v->spare_connections = p->nspare;
    v->lane.n = p->nlanes;
    v->lane.v = calloc((size_t)p->nlanes + 1, sizeof(*v->lane.v));
    if (!v->lane.v) abort();
    for (int i = 0; i < p->nlanes; i++) {
        v->lane.v[i].db = p->lanes[i]->db;
        v->lane.v[i].resp = p->lanes[i]->proto;
        v->lane.v[i].connections = p->lanes[i]->nconns;
    }
    v->upstream_last_error = ready ? NULL : px_pool_unavailable(p);
}

void px_pool_info(px_pool *p, px_buf *out)
{
    px_stats_pool v;
    px_pool_stats(p, &v);
    px_stats_render_group(PX_STATS_G_POOL, &v, out);
    free(v.lane.v);
}
