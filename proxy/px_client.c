/*
 * px_client: client connections.  See px_client.h.
 */
#include "proxy/px_client.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "proxy/px_command.h"
#include "proxy/px_config.h"
#include "proxy/px_l1.h"
#include "proxy/px_local.h"
#include "proxy/px_policy.h"
#include "proxy/px_router.h"
#include "proxy/px_server.h"
#include "proxy/px_upstream.h"

#define READ_CHUNK (16 * 1024)
#define FREE_REQS_MAX 4096

static void client_read_cb(struct ev_loop *loop, ev_io *w, int revents);
static void client_write_cb(struct ev_loop *loop, ev_io *w, int revents);
static void process_input(px_client *c);
static void resume_held(px_client *c);

static int mem_bucket(size_t mem)
{
    int b = 0;
    mem >>= 15; /* below 32 KB: bucket 0 */
    while (mem && b < PX_CLIENT_MEM_BUCKETS - 1) {
        mem >>= 1;
        b++;
    }
    return b;
}

/*
 * Count what c's buffers hold now in the server's total and move c to its
 * size's bucket: called wherever they grow or shrink, O(1).  What is counted
 * is allocated memory (the buffers' capacity), and the replies held for an
 * earlier one.  A closing client counts nothing.
 */
static void account(px_client *c)
{
    px_server *s = c->srv;
    size_t mem = c->flags & PX_CLIENT_CLOSING ? 0 : c->in.cap + c->out.cap + c->held;
    if (mem == c->mem) return; /* the usual case per reply: the buffers kept their size */
    int b = mem ? mem_bucket(mem) : -1;
    s->clients_mem = s->clients_mem - c->mem + mem;
    c->mem = mem;
    if (b == c->mem_bucket) return;
    if (c->mem_bucket >= 0) {
        if (c->mprev) c->mprev->mnext = c->mnext;
        else s->mem_buckets[c->mem_bucket] = c->mnext;
        if (c->mnext) c->mnext->mprev = c->mprev;
        c->mprev = c->mnext = NULL;
    }
    c->mem_bucket = b;
    if (b >= 0) {
        c->mnext = s->mem_buckets[b];
        if (c->mnext) c->mnext->mprev = c;
        s->mem_buckets[b] = c;
    }
}

void px_client_evict_for_memory(px_server *s)
{
    long long cap = s->cfg->maxmemory_clients;
    if (!cap || (long long)s->clients_mem <= cap) {
        s->clients_mem_warned = 0;
        return;
    }
    int b = PX_CLIENT_MEM_BUCKETS - 1;
    while ((long long)s->clients_mem > cap) {
        px_client *c = s->mem_buckets[b];
        if (!c) {
            if (--b < 0) break;
            continue;
        }
        s->stats.maxmemory_clients_disconnects++;
        px_log_notice(&s->log,
                      "Client id=%llu addr=%s closed: its buffers used %zu bytes, among the most, with all clients' "
                      "%zu bytes over maxmemory-clients %lld",
                      (unsigned long long)c->id, c->addr, c->mem, s->clients_mem, cap);
        px_client_close(c, NULL); /* leaves its bucket */
    }
    if ((long long)s->clients_mem > cap && !s->clients_mem_warned) {
        s->clients_mem_warned = 1;
        px_log_warning(&s->log, "Over maxmemory-clients after closing every client");
    }
}

px_client *px_client_create(px_server *s, int fd, const char *addr)
{
    px_client *c = calloc(1, sizeof(*c));
    if (!c) abort();
    c->srv = s;
    c->fd = fd;
    c->id = ++s->next_client_id;
    c->created = c->last_active = px_now(s);
    snprintf(c->addr, sizeof(c->addr), "%s", addr);
    px_req_parser_init(&c->parser, s->cfg->proto_max_bulk_len);
    c->proto = 2;
    c->authenticated = !px_config_auth_required(s->cfg);
    c->user = strdup("default");
    c->mem_bucket = -1;
    ev_io_init(&c->rw, client_read_cb, fd, EV_READ);
    ev_io_init(&c->ww, client_write_cb, fd, EV_WRITE);
    c->rw.data = c->ww.data = c;
    ev_io_start(s->loop, &c->rw);

    c->next = s->clients;
    if (s->clients) s->clients->prev = c;
    s->clients = c;
    s->nclients++;
    HASH_ADD(hh, s->clients_by_id, id, sizeof(c->id), c);
    return c;
}

static px_req *req_new(px_client *c)
{
    px_server *s = c->srv;
    px_req *r = s->req_free;
    if (r) {
        s->req_free = r->next;
        s->req_free_len--;
        memset(r, 0, sizeof(*r));
    } else {
        r = calloc(1, sizeof(*r));
        if (!r) abort();
    }
    r->srv = s;
    r->client = c;
    if (c->qtail) c->qtail->next = r;
    else c->qhead = r;
    c->qtail = r;
    c->nqueued++;
    return r;
}

static void mq_free(px_multi_cmd *mq, int n)
{
    for (int i = 0; i < n; i++) free(mq[i].local);
    free(mq);
}

void px_client_multi_reset(px_client *c)
{
    mq_free(c->mq, c->mq_len);
    c->mq = NULL;
    c->mq_len = c->mq_cap = 0;
    c->multi_dirty = 0;
}

static px_multi_cmd *mq_push(px_client *c)
{
    if (c->mq_len == c->mq_cap) {
        c->mq_cap = c->mq_cap ? c->mq_cap * 2 : 8;
        c->mq = realloc(c->mq, sizeof(*c->mq) * (size_t)c->mq_cap);
        if (!c->mq) abort();
    }
    px_multi_cmd *m = &c->mq[c->mq_len++];
    memset(m, 0, sizeof(*m));
    return m;
}

void px_req_free(px_server *s, px_req *r)
{
    free(r->reply);
    free(r->inval);
    mq_free(r->mq, r->mq_len);
    if (s->req_free_len < FREE_REQS_MAX) {
        r->next = s->req_free;
        s->req_free = r;
        s->req_free_len++;
    } else {
        free(r);
    }
}

void px_client_close(px_client *c, const char *why)
{
    px_server *s = c->srv;
    if (c->flags & PX_CLIENT_CLOSING) return;
    c->flags |= PX_CLIENT_CLOSING;
    if (why) px_log_verbose(&s->log, "Client id=%llu addr=%s closed: %s", (unsigned long long)c->id, c->addr, why);
    ev_io_stop(s->loop, &c->rw);
    ev_io_stop(s->loop, &c->ww);
    /* Requests still in an upstream queue stay there, detached, so later
     * replies keep lining up; the rest go now. */
    px_req *r = c->qhead;
    while (r) {
        px_req *next = r->next;
        r->next = NULL;
        if (r->forwarded) r->client = NULL;
        else px_req_free(s, r);
        r = next;
    }
    c->qhead = c->qtail = NULL;
    c->nqueued = c->ninflight = 0;
    c->held = 0;
    account(c);
    px_client_drop_pinned(c);
    c->cnext = s->closing;
    s->closing = c;
}

void px_client_free(px_client *c)
{
    px_server *s = c->srv;
    if (c->prev) c->prev->next = c->next;
    else s->clients = c->next;
    if (c->next) c->next->prev = c->prev;
    HASH_DELETE(hh, s->clients_by_id, c);
    s->nclients--;
    close(c->fd);
    px_buf_free(&c->in);
    px_buf_free(&c->out);
    px_buf_free(&c->rewrite);
    px_buf_free(&c->multi_keys);
    px_client_multi_reset(c);
    px_req_parser_free(&c->parser);
    free(c->argv);
    free(c->argvlen);
    free(c->user);
    free(c->name);
    free(c->lib_name);
    free(c->lib_ver);
    free(c);
}

int px_client_idle(const px_client *c)
{
    return c->nqueued == 0 && px_buf_used(&c->out) == 0;
}

void px_client_stop_reading(px_client *c)
{
    ev_io_stop(c->srv->loop, &c->rw);
    c->flags |= PX_CLIENT_PAUSED;
}

static void want_write(px_client *c)
{
    px_server_want_write_client(c->srv, c);
}

/* Move completed replies from the head of the queue into the output buffer. */
static void drain_queue(px_client *c)
{
    px_req *r;
    while ((r = c->qhead) && r->done) {
        px_buf_append(&c->out, r->reply, r->reply_len);
        c->held -= r->reply_len;
        c->qhead = r->next;
        if (!c->qhead) c->qtail = NULL;
        c->nqueued--;
        px_req_free(c->srv, r);
    }
}

static void after_output(px_client *c)
{
    px_server *s = c->srv;
    long long limit = s->cfg->client_output_buffer_limit;
    account(c);
    /* replies held for an earlier one count too: they are output in waiting */
    if (limit && (long long)(px_buf_used(&c->out) + c->held) > limit) {
        s->stats.output_buffer_limit_disconnects++;
        px_log_notice(&s->log, "Client id=%llu addr=%s closed for overcoming of output buffer limits (%zu bytes)",
                      (unsigned long long)c->id, c->addr, px_buf_used(&c->out));
        px_client_close(c, NULL);
        return;
    }
    if (px_buf_used(&c->out)) want_write(c);
}

void px_client_reply(px_req *r, const char *data, size_t len)
{
    px_client *c = r->client;
    px_server *s;
    if (r->capture) { /* a local command run inside EXEC's reply */
        px_buf_append(r->capture, data, len);
        return;
    }
    /* A write that may have touched keys it does not name: the L1 may keep
     * the reply (still in flight for the client) until Redis' invalidations
     * for them are in, then calls here again. */
    if (r->barrier && px_l1_barrier(r->srv->l1, r, data, len)) return;
    if (r->forwarded) {
        r->forwarded = 0;
        if (c) c->ninflight--;
    }
    if (c && r->up.blocking) c->nblocking--;
    if (r->writes) {
        /* before anyone sees the ack: a fill that raced with it is refused */
        r->writes = 0;
        if (c) c->nwrites--;
        px_l1_written(r->srv->l1, r);
    }
    if (r->silent) len = 0; /* CLIENT REPLY OFF/SKIP: the slot stays, the bytes go */
    if (!c) {
        /* the client has gone: its reply is dropped, the slot is free */
        free(r->reply);
        free(r->inval);
        mq_free(r->mq, r->mq_len);
        free(r);
        return;
    }
    s = c->srv;
    int r_was_pinned = r->pinned;
    px_buf hooked = {0};
    if (r->hook && r->hook(r, data, len, &hooked)) {
        data = hooked.data;
        len = hooked.len;
    }
    if (r == c->qhead) {
        px_buf_append(&c->out, data, len);
        c->qhead = r->next;
        if (!c->qhead) c->qtail = NULL;
        c->nqueued--;
        px_req_free(s, r);
        drain_queue(c);
        after_output(c);
    } else {
        r->reply = malloc(len ? len : 1);
        if (!r->reply) abort();
        memcpy(r->reply, data, len);
        r->reply_len = len;
        r->done = 1;
        c->held += len;
        after_output(c);
        if (c->flags & PX_CLIENT_CLOSING) {
            px_buf_free(&hooked);
            return;
        }
    }
    px_buf_free(&hooked);
    if (r_was_pinned) px_client_maybe_unpin(c);
    /* Resume a client paused for having too much in flight, or holding a
     * command until its in-flight replies are in; the fed event makes the
     * loop parse what it already buffered. */
    if (c->flags & PX_CLIENT_CLOSING) return;
    resume_held(c);
    if ((c->flags & PX_CLIENT_PAUSED) && !(c->flags & (PX_CLIENT_CLOSE_AFTER_REPLY | PX_CLIENT_HOLD)) &&
        !s->shutting_down &&
        c->ninflight < s->cfg->upstream_max_inflight / 2 + 1) {
        c->flags &= ~PX_CLIENT_PAUSED;
        ev_io_start(s->loop, &c->rw);
        if (px_buf_used(&c->in)) ev_feed_event(s->loop, &c->rw, EV_READ);
    }
}

void px_client_reply_error(px_req *r, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    msg[0] = '-';
    va_start(ap, fmt);
    int n = vsnprintf(msg + 1, sizeof(msg) - 3, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if (n > (int)sizeof(msg) - 4) n = (int)sizeof(msg) - 4;
    /* an error line may not hold CR or LF */
    for (int i = 1; i <= n; i++)
        if (msg[i] == '\r' || msg[i] == '\n') msg[i] = ' ';
    msg[n + 1] = '\r';
    msg[n + 2] = '\n';
    px_client_reply(r, msg, (size_t)n + 3);
}

int px_client_flush(px_client *c)
{
    px_server *s = c->srv;
    if (c->flags & PX_CLIENT_CLOSING) return -1;
    while (px_buf_used(&c->out)) {
        ssize_t n = write(c->fd, px_buf_start(&c->out), px_buf_used(&c->out));
        if (n > 0) {
            s->stats.net_output_bytes += (uint64_t)n;
            px_buf_consume(&c->out, (size_t)n);
            c->last_active = px_now(s); /* as Redis: a reply written counts as activity */
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!(c->flags & PX_CLIENT_WRITE_ARMED)) {
                c->flags |= PX_CLIENT_WRITE_ARMED;
                ev_io_start(s->loop, &c->ww);
            }
            account(c);
            return 0;
        }
        px_client_close(c, n < 0 ? strerror(errno) : "write returned 0");
        return -1;
    }
    if (c->flags & PX_CLIENT_WRITE_ARMED) {
        c->flags &= ~PX_CLIENT_WRITE_ARMED;
        ev_io_stop(s->loop, &c->ww);
    }
    /* Give back memory a large reply left behind. */
    if (c->out.cap > 1024 * 1024) px_buf_clear(&c->out, 0);
    account(c);
    if ((c->flags & PX_CLIENT_CLOSE_AFTER_REPLY) && c->nqueued == 0) {
        px_client_close(c, "closed after reply");
        return -1;
    }
    return 0;
}

static void client_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    px_client_flush(w->data);
}

/*
 * A client whose commands wait (paused for having too much in flight, or
 * holding a command until its in-flight replies are in) is normally not
 * read, so TCP pushes back.  One with a blocking command in flight may wait
 * for ever, though: it is still read, as Redis reads a blocked client, so
 * that its close is seen and it is freed (its blocked command with it).
 * What it sends meanwhile waits unparsed, within client-query-buffer-limit.
 */
static int read_while_waiting(const px_client *c)
{
    return c->nblocking > 0 && !c->srv->shutting_down;
}

static void stop_reading_unless_blocked(px_client *c)
{
    if (!read_while_waiting(c)) ev_io_stop(c->srv->loop, &c->rw);
}

static int over_query_limit(px_client *c, size_t used)
{
    px_server *s = c->srv;
    if ((long long)used <= s->cfg->client_query_buffer_limit) return 0;
    s->stats.query_buffer_limit_disconnects++;
    px_log_notice(&s->log, "Client id=%llu addr=%s closed: query buffer %zu bytes over client-query-buffer-limit",
                  (unsigned long long)c->id, c->addr, used);
    px_client_close(c, NULL);
    return 1;
}

static void client_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    px_client *c = w->data;
    px_server *s = c->srv;
    (void)loop;
    (void)revents;
    if (c->flags & PX_CLIENT_CLOSING) return;
    int waiting = (c->flags & (PX_CLIENT_PAUSED | PX_CLIENT_HOLD)) != 0;
    if (waiting && !read_while_waiting(c)) {
        ev_io_stop(s->loop, &c->rw); /* its blocking command has been answered */
        return;
    }
    /* Read what the command being parsed still needs, at least a chunk. */
    size_t want = READ_CHUNK;
    size_t used = px_buf_used(&c->in);
    if (c->parser.need > used && c->parser.need - used > want) want = c->parser.need - used;
    if (want > 64u << 20) want = 64u << 20;
    char *p = px_buf_reserve(&c->in, want);
    ssize_t n = read(c->fd, p, want);
    if (n > 0) {
        c->in.len += (size_t)n;
        s->stats.net_input_bytes += (uint64_t)n;
        c->last_active = px_now(s);
    } else if (n == 0) {
        px_client_close(c, "client closed connection");
        return;
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        px_client_close(c, strerror(errno));
        return;
    }
    if (waiting) {
        if (!over_query_limit(c, px_buf_used(&c->in))) account(c);
        return;
    }
    process_input(c);
    /* give back the room a large request left behind */
    if (!px_buf_used(&c->in)) px_buf_clear(&c->in, 1024 * 1024);
    account(c);
}

/* A forwarded request's reply, or the error of its connection failing first. */
static void upstream_done(px_upreq *q, struct px_upstream *u, const char *reply, size_t len, int failed)
{
    px_req *r = (px_req *)((char *)q - offsetof(px_req, up));
    (void)u;
    if (failed && r->client) r->srv->stats.upstream_error_replies++;
    px_client_reply(r, reply, len);
}

/*
 * Send r's command on u.  noreply: what Redis sends back is not a reply to
 * it (pub/sub confirmations are pushes in RESP3, and everything is a frame in
 * RESP2 pub/sub mode), so r is complete now, with no bytes of its own.
 */
static void send_on(px_client *c, px_req *r, struct px_upstream *u, const char *raw, size_t rawlen, int noreply,
                    int oob)
{
    px_server *s = c->srv;
    px_buf tmp = {0};
    if (c->rewrite.len) {
        raw = c->rewrite.data;
        rawlen = c->rewrite.len;
    } else if (c->parser.type == 'i') {
        px_resp_command(&tmp, c->parser.argc, c->argv, c->argvlen); /* it arrived inline */
        raw = tmp.data;
        rawlen = tmp.len;
    }
    px_l1_write(s->l1, c, r);
    if (u != c->pinned && px_l1_read(s->l1, c, r, u, raw, rawlen)) {
        px_buf_free(&tmp);
        return;
    }
    s->stats.commands_forwarded++;
    if (noreply) {
        px_upstream_write(u, raw, rawlen);
        px_client_reply(r, "", 0);
    } else {
        r->forwarded = 1;
        r->pinned = u == c->pinned;
        c->ninflight++;
        if (!oob) c->up = u; /* an out-of-band connection orders nothing after it */
        r->up.done = upstream_done;
        r->up.what = r->cmd ? r->cmd->name : NULL;
        px_upstream_send(u, &r->up, raw, rawlen);
    }
    px_buf_free(&tmp);
}

/* Parse again what a held client left unread. */
static void resume_held(px_client *c)
{
    if (!(c->flags & PX_CLIENT_HOLD) || c->ninflight || c->markers ||
        (c->flags & (PX_CLIENT_CLOSING | PX_CLIENT_CLOSE_AFTER_REPLY)))
        return;
    c->flags &= ~PX_CLIENT_HOLD;
    if (c->flags & PX_CLIENT_PAUSED) return;
    ev_io_start(c->srv->loop, &c->rw);
    if (px_buf_used(&c->in)) ev_feed_event(c->srv->loop, &c->rw, EV_READ);
}

void px_client_resume(px_client *c) { resume_held(c); }

static void on_marker(struct px_upstream *u, void *ctx, const char *reply, size_t len)
{
    px_client *c = u->owner;
    (void)ctx;
    (void)reply;
    (void)len;
    if (!c) return;
    c->markers--;
    if (!(c->state & (PX_STATE_SUB | PX_STATE_SSUB | PX_STATE_MONITOR))) u->raw = 0;
    px_client_maybe_unpin(c);
    resume_held(c);
}

/* Answer a protocol error, then close, as Redis does. */
static void protocol_error(px_client *c, const char *errstr)
{
    c->flags |= PX_CLIENT_CLOSE_AFTER_REPLY;
    ev_io_stop(c->srv->loop, &c->rw);
    px_req *r = req_new(c);
    px_client_reply_error(r, "ERR %s", errstr);
    want_write(c);
}

/* A protocol error waited for the frames of the commands before it. */
static void on_protocol_error_marker(struct px_upstream *u, void *ctx, const char *reply, size_t len)
{
    px_client *c = u->owner;
    (void)reply;
    (void)len;
    if (c && !(c->flags & PX_CLIENT_CLOSING)) {
        c->markers--;
        protocol_error(c, ctx);
    }
    free(ctx);
}

/* "unsubscribe"/"punsubscribe"/"sunsubscribe" frame reporting 0 left. */
static int unsubscribed_all(const char *f, size_t n, unsigned *which)
{
    if (n < 4 + 19 + 4 || (f[0] != '*' && f[0] != '>') || memcmp(f + 1, "3\r\n", 3) || memcmp(f + n - 4, ":0\r\n", 4))
        return 0;
    if (!memcmp(f + 4, "$11\r\nunsubscribe\r\n", 18) || !memcmp(f + 4, "$12\r\npunsubscribe\r\n", 19)) {
        *which = PX_STATE_SUB;
        return 1;
    }
    if (!memcmp(f + 4, "$12\r\nsunsubscribe\r\n", 19)) {
        *which = PX_STATE_SSUB;
        return 1;
    }
    return 0;
}

/* Subscription confirmations, for CLIENT LIST's sub= psub= ssub=. */
static void count_subscriptions(px_client *c, const char *f, size_t n)
{
    static const struct {
        const char *kind;
        int delta;
        int which; /* 0 sub, 1 psub, 2 ssub */
    } kinds[] = {{"$9\r\nsubscribe\r\n", 1, 0},   {"$11\r\nunsubscribe\r\n", -1, 0},
                 {"$10\r\npsubscribe\r\n", 1, 1}, {"$12\r\npunsubscribe\r\n", -1, 1},
                 {"$10\r\nssubscribe\r\n", 1, 2}, {"$12\r\nsunsubscribe\r\n", -1, 2}};
    if (n < 8 || (f[0] != '*' && f[0] != '>') || memcmp(f + 1, "3\r\n", 3)) return;
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        size_t kl = strlen(kinds[i].kind);
        if (n < 4 + kl || memcmp(f + 4, kinds[i].kind, kl)) continue;
        /* an unsubscribe with a null channel (nothing to leave) changes nothing */
        if (kinds[i].delta < 0 && n >= 4 + kl + 2 && (!memcmp(f + 4 + kl, "$-1", 3) || f[4 + kl] == '_')) return;
        int *slot = kinds[i].which == 0 ? &c->nsub : kinds[i].which == 1 ? &c->npsub : &c->nssub;
        *slot += kinds[i].delta;
        if (*slot < 0) *slot = 0;
        return;
    }
}

void px_client_upstream_frame(px_client *c, struct px_upstream *u, const char *frame, size_t len)
{
    if (c->flags & PX_CLIENT_CLOSING) return;
    if (!c->qhead || frame[0] == '>') {
        /* A RESP3 push goes out as it comes, as Redis sends it, even while a
         * reply is still awaited (an invalidation during a BLPOP): the
         * output buffer holds whole replies only, so a whole frame appended
         * here never lands inside another reply's bytes.  Every request
         * still awaited on this connection was answered after the push by
         * Redis too.  RESP2 frames (pub/sub, MONITOR) keep their place
         * among the replies, as before. */
        px_buf_append(&c->out, frame, len);
    } else {
        /* behind replies still awaited: keep its place in the queue */
        px_req *r = req_new(c);
        r->reply = malloc(len ? len : 1);
        if (!r->reply) abort();
        memcpy(r->reply, frame, len);
        r->reply_len = len;
        r->done = 1;
        c->held += len;
    }
    count_subscriptions(c, frame, len);
    unsigned which;
    if ((c->state & (PX_STATE_SUB | PX_STATE_SSUB)) && unsubscribed_all(frame, len, &which) && (c->state & which)) {
        /* Frames for commands sent before this one may still be on their
         * way: the marker says when they are all in. */
        c->state &= ~which;
        c->markers++;
        px_upstream_marker(u, on_marker, NULL);
    }
    after_output(c);
}

static void pinned_lost(struct px_upstream *u, void *owner)
{
    px_client_pinned_lost(owner, u);
}

static void pinned_frame(struct px_upstream *u, void *owner, const char *frame, size_t len)
{
    px_client_upstream_frame(owner, u, frame, len);
}

/* A connection of c's own, for its database and protocol (px_pool_pin). */
static struct px_upstream *pin(px_pool *pool, px_client *c, const char **err)
{
    return px_pool_pin(pool, c->db, c->proto, pinned_frame, pinned_lost, c, err);
}

/* The shared connection c's next request goes on: where its requests in
 * flight are, if any (px_pool_pick). */
static struct px_upstream *pick(px_pool *pool, px_client *c)
{
    return px_pool_pick(pool, c->db, c->proto, c->ninflight > 0 ? c->up : NULL);
}

void px_client_pinned_lost(px_client *c, struct px_upstream *u)
{
    (void)u;
    c->pinned = NULL;
    c->up = NULL;
    c->state = 0;
    c->nblocking = 0;
    c->markers = 0;
    if (c->flags & PX_CLIENT_CLOSING) return;
    /* Its MULTI, subscriptions or blocked command are gone: close it as
     * Redis going away would, once the errors already queued are written. */
    c->flags |= PX_CLIENT_CLOSE_AFTER_REPLY;
    ev_io_stop(c->srv->loop, &c->rw);
    want_write(c);
}

void px_client_maybe_unpin(px_client *c)
{
    struct px_upstream *u = c->pinned;
    if (!u || c->state || c->nblocking || c->markers || u->nsent || u->raw) return;
    c->pinned = NULL;
    c->up = NULL;
    px_pool_unpin(u->pool, u);
}

void px_client_drop_pinned(px_client *c)
{
    struct px_upstream *u = c->pinned;
    if (!u) return;
    c->pinned = NULL;
    c->up = NULL;
    if (c->state & PX_STATE_REDIRECT) {
        /* Redis sends other clients' invalidations to this connection's id:
         * reused, it would hand them to whoever pins it next */
        px_upstream_disown(u);
        px_pool_close(u->pool, u, "a tracking redirect target is not reused");
    } else {
        px_pool_unpin(u->pool, u);
    }
}

int px_client_pin_redirect_target(px_client *c, const char **err)
{
    if (c->flags & (PX_CLIENT_CLOSING | PX_CLIENT_CLOSE_AFTER_REPLY)) return -1;
    if (!c->pinned) {
        px_route_args a = {NULL, 0, NULL, NULL};
        px_pool *pool = c->srv->router->route(c->srv->router, c, &a);
        if (!pool || !(c->pinned = pin(pool, c, err))) return -1;
    }
    c->state |= PX_STATE_REDIRECT;
    return 0;
}

/*
 * What a command sent on the pinned connection does to the client's state:
 * its handler's row says (px_commands.def).  Returns 1 when what Redis sends
 * back is not a reply to it (see send_on).
 */
static int apply_state(px_client *c, px_req *r, px_handler h, int argc)
{
    struct px_upstream *u = c->pinned;
    const px_handler_info *hi = &px_handlers[h];
    if ((hi->props & PX_HP_OUTSIDE_MULTI) && (c->state & PX_STATE_MULTI)) return u->raw; /* Redis queues it */
    /* What Redis refuses changes nothing there: a wrong number of arguments
     * (EXEC x inside MULTI leaves Redis in MULTI), or EXEC / DISCARD outside
     * a transaction (Redis keeps the WATCHed keys).  hotproxy's picture of
     * the connection must not drift from Redis' own, or a marker would wait
     * behind a MULTI Redis still holds. */
    if (r->cmd && !px_command_arity_ok(r->cmd, argc)) return u->raw;
    unsigned sets = hi->sets, clears = hi->clears;
    if ((clears & PX_STATE_MULTI) && !(c->state & PX_STATE_MULTI)) clears = 0;
    if (hi->props & PX_HP_ONOFF) {
        int on = argc >= 3 && c->argvlen[2] == 2 && !strncasecmp(c->argv[2], "on", 2);
        int off = argc >= 3 && c->argvlen[2] == 3 && !strncasecmp(c->argv[2], "off", 3);
        if (!on) sets = 0;
        if (!off) clears = 0;
    }
    c->state = (c->state & ~clears) | sets;
    if (clears & PX_STATE_TRACKING) c->track_redir = 0;
    if ((hi->props & PX_HP_RAW) && c->proto == 2) u->raw = 1;
    if (hi->props & PX_HP_BLOCKING) {
        r->up.blocking = 1;
        c->nblocking++;
    }
    if (hi->props & PX_HP_PUSHES) return u->raw || c->proto == 3;
    return u->raw;
}

/*
 * WAIT counts the replicas that acknowledged the replication offset its
 * connection reached with its previous command (Redis 7.0 sets c->woff to
 * the master offset after every command it runs).  A client's writes go on
 * a shared connection, and WAIT must not block that one; it runs on a
 * connection of the client's own instead, once the client's in-flight
 * requests are answered (PX_HP_PIN holds it until then).  That connection's
 * previous command may be older than those writes (a spare's last was its
 * RESET), so a PING goes just ahead of WAIT: the offset WAIT then waits for
 * is at least the one every write the client got answered reached.  WAIT
 * may wait for more (other clients' writes too), never for less.  If the
 * PING is refused (an ACL without it) the offset is not known to cover the
 * writes, and WAIT's answer is replaced by an error rather than trusted.
 */
static int wait_unfenced(px_req *r, const char *reply, size_t len, px_buf *out)
{
    (void)r;
    (void)reply;
    (void)len;
    px_buf_appendf(out, "-ERR hotproxy: WAIT could not be ordered after this connection's writes "
                        "(the upstream refused PING)\r\n");
    return 1;
}

static void wait_fenced(struct px_upstream *u, void *ctx, const char *reply, size_t len)
{
    px_req *r = ctx; /* queued right behind the PING on u, so still alive */
    /* (a connection failing answers both with its own error: leave that be) */
    if (u->state == PX_UP_READY && len && (reply[0] == '-' || reply[0] == '!')) r->hook = wait_unfenced;
}

static void wait_fence(struct px_upstream *u, px_req *r)
{
    px_upstream_send_internal(u, "*1\r\n$4\r\nPING\r\n", 14, wait_fenced, r);
}

/* The pool the command being dispatched belongs to (the topology decides). */
static px_pool *route(px_client *c, const px_command *cmd, int argc)
{
    px_route_args a = {cmd, argc, c->argv, c->argvlen};
    return c->srv->router->route(c->srv->router, c, &a);
}

/* Redis' @admin and @dangerous commands are for admin users, once users
 * are configured (the table's PX_F_A and PX_F_DG say which). */
static int permitted(const px_client *c, const px_command *cmd)
{
    const px_config *cfg = c->srv->cfg;
    if (!px_command_admin_only(cmd) || !px_config_auth_required(cfg)) return 1;
    const px_user *u = c->user ? px_config_user(cfg, c->user, strlen(c->user)) : NULL;
    return u && u->admin;
}

static const char execabort[] = "-EXECABORT Transaction discarded because of previous errors.\r\n";

/* EXEC of a transaction hotproxy refused a command of: Redis got DISCARD. */
static int execabort_hook(px_req *r, const char *reply, size_t len, px_buf *out)
{
    (void)r;
    if (len && reply[0] == '-') return 0;
    px_buf_append(out, execabort, sizeof(execabort) - 1);
    return 1;
}

static void ignore_reply(struct px_upstream *u, void *ctx, const char *reply, size_t len)
{
    (void)u;
    (void)ctx;
    (void)reply;
    (void)len;
}

/* Run a queued local command now; its reply is appended to out. */
static void run_deferred(px_client *c, const px_multi_cmd *m, px_buf *out)
{
    px_server *s = c->srv;
    px_req_parser p;
    px_req_parser_init(&p, s->cfg->proto_max_bulk_len);
    if (px_req_parse(&p, m->local, m->local_len) != PX_OK || p.argc < 1) {
        px_buf_append(out, "-ERR hotproxy: queued command lost\r\n", 36);
        px_req_parser_free(&p);
        return;
    }
    const char **argv = calloc((size_t)p.argc, sizeof(*argv));
    size_t *argvlen = calloc((size_t)p.argc, sizeof(*argvlen));
    if (!argv || !argvlen) abort();
    for (int i = 0; i < p.argc; i++) argv[i] = px_req_arg(&p, m->local, i, &argvlen[i]);
    px_req tmp = {0};
    tmp.srv = s;
    tmp.client = c;
    tmp.capture = out;
    tmp.cmd = px_command_lookup(argv[0], argvlen[0], p.argc > 1 ? argv[1] : NULL, p.argc > 1 ? argvlen[1] : 0);
    size_t before = out->len;
    c->rewrite.len = c->rewrite.rpos = 0;
    if (!tmp.cmd || !px_local_handle(c, &tmp, p.argc, argv, argvlen)) {
        /* it would go to Redis (CLIENT UNBLOCK of a blocked client): send it
         * on, its effect is what counts; or say it cannot run here */
        if (c->rewrite.len && c->pinned) {
            px_upstream_send_internal(c->pinned, c->rewrite.data, c->rewrite.len, ignore_reply, NULL);
            px_buf_append(out, ":1\r\n", 4);
        } else if (out->len == before) {
            px_buf_append(out, "-ERR hotproxy: this command cannot run inside MULTI\r\n", 53);
        }
    }
    c->rewrite.len = c->rewrite.rpos = 0;
    free(argv);
    free(argvlen);
    px_req_parser_free(&p);
}

/*
 * EXEC's reply, with hotproxy's part of the transaction: Redis' array holds
 * the forwarded commands' replies; the local ones are run now and put at
 * their places, and each forwarded reply goes through its own hook.  A null
 * (WATCH) or an error (EXECABORT) is Redis' answer for all of it.
 */
static int exec_hook(px_req *r, const char *reply, size_t len, px_buf *out)
{
    px_client *c = r->client;
    long long n;
    const char *nl = memchr(reply, '\n', len);
    if (c) c->exec_local--;
    if (!c || !nl || reply[0] != '*' || !px_string2ll(reply + 1, (size_t)(nl - reply - 2), &n) || n < 0) return 0;
    int nlocal = 0;
    for (int i = 0; i < r->mq_len; i++) nlocal += r->mq[i].local != NULL;
    px_buf_appendf(out, "*%lld\r\n", n + nlocal);
    const char *p = nl + 1, *end = reply + len;
    /* inside EXEC the client is still in MULTI for what it asks (CLIENT INFO's flags=x) */
    unsigned state = c->state;
    c->state |= PX_STATE_MULTI;
    c->multi_queued = r->mq_len;
    for (int i = 0; i < r->mq_len; i++) {
        const px_multi_cmd *m = &r->mq[i];
        if (m->local) {
            run_deferred(c, m, out);
            continue;
        }
        size_t elen = p < end ? px_reply_len(p, (size_t)(end - p)) : 0;
        if (!elen) break;
        px_buf hooked = {0};
        px_req h = {0};
        h.srv = r->srv;
        h.client = c;
        h.hook_flags = m->hook_flags;
        if (m->hook && m->hook(&h, p, elen, &hooked)) px_buf_append(out, hooked.data, hooked.len);
        else px_buf_append(out, p, elen);
        px_buf_free(&hooked);
        p += elen;
    }
    if (p < end) px_buf_append(out, p, (size_t)(end - p)); /* never expected: keep Redis' bytes */
    c->state = (c->state & ~(unsigned)PX_STATE_MULTI) | (state & PX_STATE_MULTI);
    c->multi_queued = 0;
    return 1;
}

/* EXEC: the transaction's bookkeeping moves to its request. */
static void exec_prepare(px_client *c, px_req *r)
{
    if (c->multi_dirty) {
        c->rewrite.len = c->rewrite.rpos = 0;
        px_buf_append(&c->rewrite, "*1\r\n$7\r\nDISCARD\r\n", 17);
        r->hook = execabort_hook;
    } else {
        int needed = 0;
        for (int i = 0; i < c->mq_len; i++) needed |= c->mq[i].local != NULL || c->mq[i].hook != NULL;
        if (needed) {
            r->mq = c->mq;
            r->mq_len = c->mq_len;
            c->mq = NULL;
            c->mq_len = c->mq_cap = 0;
            r->hook = exec_hook;
            c->exec_local++;
        }
    }
    px_client_multi_reset(c);
}

/* A command queued in MULTI that hotproxy answers with an error itself:
 * as Redis, the transaction is then aborted at EXEC. */
static void refuse(px_client *c, px_req *r, int queueing, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void refuse(px_client *c, px_req *r, int queueing, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (queueing) c->multi_dirty = 1;
    px_client_reply_error(r, "%s", msg);
}

/*
 * Returns 0 when the command must wait (it would run on another connection
 * than the client's in-flight commands: they must be answered first, so
 * Redis sees the client's commands in order); it stays unread.
 */
static int dispatch(px_client *c, const char *raw, size_t rawlen)
{
    px_server *s = c->srv;
    int argc = c->parser.argc;
    if (argc > c->argv_cap) {
        c->argv_cap = argc < 16 ? 16 : argc;
        c->argv = realloc(c->argv, sizeof(*c->argv) * (size_t)c->argv_cap);
        c->argvlen = realloc(c->argvlen, sizeof(*c->argvlen) * (size_t)c->argv_cap);
        if (!c->argv || !c->argvlen) abort();
    }
    for (int i = 0; i < argc; i++) c->argv[i] = px_req_arg(&c->parser, raw, i, &c->argvlen[i]);

    /* A subscriber's last frames are still coming (see on_marker): what it
     * sends now must not go out as a frame nobody waits for. */
    if (c->pinned && c->markers > 0) return 0;
    /* An EXEC runs its local commands when its reply comes: what the client
     * sent after it must see their effects (CLIENT SETNAME), so it waits. */
    if (c->exec_local > 0) return 0;
    const px_command *cmd = px_command_lookup(c->argv[0], c->argvlen[0], argc > 1 ? c->argv[1] : NULL,
                                              argc > 1 ? c->argvlen[1] : 0);
    /* What it does is its handler's row in px_commands.def: hp says. */
    px_handler h = px_command_handler(cmd, argc, c->argv, c->argvlen);
    unsigned hp = px_handler_props(h);
    int upstream = (hp & PX_HP_UPSTREAM) || (c->pinned && (hp & PX_HP_PINNED_UPSTREAM));
    int authorized = c->authenticated || (hp & PX_HP_NOAUTH);
    int allowed = !authorized || permitted(c, cmd);
    const char *refused = cmd && authorized && allowed && px_config_refused(s->cfg, cmd->name) ? cmd->name : NULL;
    int queueing = (c->state & PX_STATE_MULTI) && !(hp & PX_HP_AT_ONCE);
    int deferred = queueing && (hp & PX_HP_DEFERRED);
    if (!authorized || !allowed || refused || (hp & PX_HP_DENY) || deferred) upstream = 0;
    if ((hp & PX_HP_TRACKING) && upstream && !px_local_tracking_ready(c, argc, c->argv, c->argvlen)) return 0;

    /* Decide the connection before anything happens, so a command can wait. */
    px_pool *pool = NULL;
    struct px_upstream *u = NULL;
    const char *err = NULL;
    int oob = 0;
    if (upstream) {
        if ((hp & PX_HP_PIN) && !c->pinned) {
            if (c->ninflight > 0) return 0;
            pool = route(c, cmd, argc);
            if (pool) c->pinned = pin(pool, c, &err);
        }
        if (c->pinned) {
            u = c->pinned;
        } else if (hp & PX_HP_OOB) {
            /* At once, on a connection of its own: not behind the client's
             * own requests either, which may sit behind the same slow
             * command (with Redis direct they would have been refused with
             * BUSY and this one run).  Its database and protocol are not the
             * client's; these commands answer the same in any. */
            oob = 1;
            u = (pool = route(c, cmd, argc)) ? px_pool_open_oob(pool) : NULL;
        } else if (!err) {
            u = (pool = route(c, cmd, argc)) ? pick(pool, c) : NULL;
        }
        if (u && !oob && c->ninflight > 0 && c->up != u) return 0;
    } else if ((hp & PX_HP_UNPINS) && c->ninflight > 0) {
        return 0; /* RESET drops the pinned connection: let it answer first */
    }

    s->stats.commands_processed++;
    s->stats.cmd_calls[cmd ? px_command_index(cmd) : px_command_count()]++;
    c->ncommands++;
    c->last_cmd = cmd ? cmd->name : "unknown";
    if ((px_handlers[h].sets | px_handlers[h].clears) & PX_STATE_MULTI) c->multi_queued = 0;
    else if (c->state & PX_STATE_MULTI) c->multi_queued++;
    px_req *r = req_new(c);
    r->cmd = cmd;
    if (c->reply_mode) {
        r->silent = 1;
        if (c->reply_mode == 2) c->reply_mode = 0;
    }
    c->rewrite.len = c->rewrite.rpos = 0;

    if (!authorized) {
        refuse(c, r, queueing, "NOAUTH Authentication required.");
        return 1;
    }
    if (!allowed) {
        s->stats.commands_refused++;
        refuse(c, r, queueing, "NOPERM this user has no permissions to run the '%s' command", cmd->name);
        return 1;
    }
    if (refused || (hp & PX_HP_DENY)) {
        s->stats.commands_refused++;
        refuse(c, r, queueing, "ERR hotproxy: '%s' is refused by this proxy%s", cmd->name,
               (hp & PX_HP_DENY) ? " (replication does not go through a proxy)" : "");
        return 1;
    }
    if (deferred) {
        if (!px_command_arity_ok(cmd, argc)) {
            refuse(c, r, 1, "ERR wrong number of arguments for '%s' command", cmd->name);
            return 1;
        }
        px_multi_cmd *m = mq_push(c);
        px_buf b = {0};
        if (c->parser.type == 'i') px_resp_command(&b, argc, c->argv, c->argvlen); /* it arrived inline */
        else px_buf_append(&b, raw, rawlen);
        m->local = b.data;
        m->local_len = b.len;
        s->stats.commands_local++;
        px_client_reply(r, "+QUEUED\r\n", 9);
        return 1;
    }
    if (!upstream || (hp & PX_HP_LOCAL)) {
        /* local, or local first (INFO's hook, SELECT's database, CLIENT UNBLOCK's id) */
        if (px_local_handle(c, r, argc, c->argv, c->argvlen)) {
            s->stats.commands_local++;
            return 1;
        }
        /* a local handler that forwards: on the client's own connection if it has one */
        if (!u) u = c->pinned ? c->pinned : (pool = route(c, cmd, argc)) ? pick(pool, c) : NULL;
    }
    if (!u) {
        if (err) {
            s->stats.commands_refused++;
            refuse(c, r, queueing, "%s", err);
        } else if (hp & PX_HP_ALONE) {
            px_local_info_alone(c, r);
        } else {
            s->stats.upstream_error_replies++;
            refuse(c, r, queueing, "ERR %s", pool ? px_pool_unavailable(pool) : "no upstream for this command");
        }
        return 1;
    }
    if ((hp & PX_HP_TRACKING) && px_local_tracking(c, r, argc, c->argv, c->argvlen) < 0) {
        px_client_maybe_unpin(c);
        return 1;
    }
    if (queueing && u == c->pinned) {
        /* its reply comes inside EXEC's: the hook waits for it there */
        px_multi_cmd *m = mq_push(c);
        m->hook = r->hook;
        m->hook_flags = r->hook_flags;
        r->hook = NULL;
    } else if ((hp & PX_HP_EXEC) && (c->state & PX_STATE_MULTI)) {
        exec_prepare(c, r);
    } else if (((px_handlers[h].clears & PX_STATE_MULTI) && (c->state & PX_STATE_MULTI)) ||
               ((px_handlers[h].sets & PX_STATE_MULTI) && !(c->state & PX_STATE_MULTI))) {
        px_client_multi_reset(c); /* DISCARD, or a MULTI that begins one */
    }
    px_policy_write_ttl(c, r, &s->rng);
    int noreply = u == c->pinned ? apply_state(c, r, h, argc) : 0;
    if ((hp & PX_HP_FENCE) && !noreply && !(c->state & PX_STATE_MULTI)) wait_fence(u, r);
    if ((hp & PX_HP_TRACKING) && u == c->pinned) px_upstream_no_reuse(u);
    send_on(c, r, u, raw, rawlen, noreply, oob);
    if ((hp & PX_HP_MAY_END_RAW) && u == c->pinned && u->raw) {
        /* In RESP2 pub/sub mode only a marker's token tells a reply from a
         * frame.  Whether this UNSUBSCRIBE ends that mode is known once its
         * frames are in, so the client's next command waits for a marker
         * sent right behind it: sent later, it could follow a MULTI that
         * went out meanwhile, be answered +QUEUED and never come back. */
        c->markers++;
        px_upstream_marker(u, on_marker, NULL);
    }
    return 1;
}

static void process_input(px_client *c)
{
    px_server *s = c->srv;
    while (!(c->flags & (PX_CLIENT_CLOSING | PX_CLIENT_CLOSE_AFTER_REPLY | PX_CLIENT_PAUSED | PX_CLIENT_HOLD)) &&
           px_buf_used(&c->in)) {
        const char *start = px_buf_start(&c->in);
        size_t used = px_buf_used(&c->in);
        c->parser.unauthenticated = !c->authenticated;
        int rc = px_req_parse(&c->parser, start, used);
        if (rc == PX_AGAIN) {
            over_query_limit(c, used);
            return;
        }
        if (rc == PX_ERR) {
            s->stats.protocol_errors++;
            px_log_verbose(&s->log, "Client id=%llu addr=%s: %s", (unsigned long long)c->id, c->addr, c->parser.errstr);
            px_buf_clear(&c->in, 0);
            ev_io_stop(s->loop, &c->rw);
            if (c->pinned) {
                /* Frames for what it sent before (a SUBSCRIBE's confirmation)
                 * may still be on their way: as Redis, they come first. */
                c->flags |= PX_CLIENT_HOLD;
                c->markers++;
                px_upstream_marker(c->pinned, on_protocol_error_marker, strdup(c->parser.errstr));
                return;
            }
            protocol_error(c, c->parser.errstr);
            return;
        }
        if (c->parser.argc > 0 && !dispatch(c, start, c->parser.pos)) {
            /* wait for the in-flight replies; the parse is redone then */
            px_req_parser_reset(&c->parser);
            c->flags |= PX_CLIENT_HOLD;
            stop_reading_unless_blocked(c);
            return;
        }
        px_buf_consume(&c->in, c->parser.pos);
        px_req_parser_reset(&c->parser);
        if (c->ninflight >= s->cfg->upstream_max_inflight) {
            c->flags |= PX_CLIENT_PAUSED;
            stop_reading_unless_blocked(c);
        }
    }
    if (c->flags & PX_CLIENT_CLOSE_AFTER_REPLY) ev_io_stop(s->loop, &c->rw);
}
