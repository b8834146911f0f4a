/*
 * px_client: client connections.  See px_client.h.
 */
#include "proxy/px_client.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/uio.h>
#include <unistd.h>

#include "proxy/px_command.h"
#include "proxy/px_config.h"
#include "proxy/px_router.h"
#include "proxy/px_upstream.h"

#define READ_CHUNK (16 * 1024)
#define FREE_REQS_MAX 4096
#define IOV_PER_WRITE (IOV_MAX < 1024 ? IOV_MAX : 1024)

/* A reply written from where it sits: after out's first `at` bytes (counted
 * from the first ever written, as out_off), before the rest. */
typedef struct px_oref {
    const char *data; /* what is left to write */
    size_t len;
    size_t at;
    px_ref ref;
} px_oref;

static void client_read_cb(struct ev_loop *loop, ev_io *w, int revents);
static void client_write_cb(struct ev_loop *loop, ev_io *w, int revents);
static void process_input(px_client *c);
static void resume_held(px_client *c);
static void inflight_done(px_client *c, px_req *r);
static void rebuild_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void subs_free(px_client *c);
static ssize_t tls_read(px_client *c, char *p, size_t len);
static ssize_t tls_write(px_client *c);
static int tls_write_wants_read(px_client *c);

/*
 * A TLS client's own part (tls-port), apart so that a plain client carries
 * one pointer.  Its watcher w drives the handshake, and afterwards waits for
 * the readiness a read or a write needs besides its own (TLS may have to
 * write to read, and read to write); rw and ww work as for a plain client.
 */
typedef struct px_client_tls {
    px_tls *t;
    ev_io w;
    ev_timer hs;      /* the handshake's bound */
    int handshaking;
    unsigned want;    /* TLS_READ_WANTS_WRITE, TLS_WRITE_WANTS_READ */
} px_client_tls;

enum { TLS_READ_WANTS_WRITE = 1, TLS_WRITE_WANTS_READ = 2 };

/* Bytes c sent that are not parsed yet: in its query buffer, or decrypted
 * by TLS and kept there (the socket will not say they are there). */
static int unread(const px_client *c)
{
    return px_buf_used(&c->in) || (c->tls && px_tls_pending(c->tls->t));
}
static void tracks_release(px_client *c, int all);
static int track_find(const px_client *c, const struct px_upstream *u, const px_pool *pool);
static struct px_upstream *track_conn(px_client *c, px_pool *pool);
static int track_redirect(px_req *r, struct px_upstream *u, const char *reply, size_t len);

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
    px_clients *s = c->set;
    size_t mem = c->flags & PX_CLIENT_CLOSING ? 0 : c->in.cap + c->out.cap + c->oref_bytes + c->held;
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

static void evict_for_memory(px_clients *s)
{
    long long cap = s->core->cfg->maxmemory_clients;
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
        s->core->stats.maxmemory_clients_disconnects++;
        px_log_notice(&s->core->log,
                      "Client id=%llu addr=%s closed: its buffers used %zu bytes, among the most, with all clients' "
                      "%zu bytes over maxmemory-clients %lld",
                      (unsigned long long)c->id, c->addr, c->mem, s->clients_mem, cap);
        px_client_close(c, NULL); /* leaves its bucket */
    }
    if ((long long)s->clients_mem > cap && !s->clients_mem_warned) {
        s->clients_mem_warned = 1;
        px_log_warning(&s->core->log, "Over maxmemory-clients after closing every client");
    }
}

px_client *px_client_create(px_clients *s, int fd, const char *addr)
{
    px_client *c = calloc(1, sizeof(*c));
    if (!c) abort();
    c->set = s;
    c->fd = fd;
    c->id = ++s->next_client_id;
    c->created = c->last_active = px_now(s->core);
    snprintf(c->addr, sizeof(c->addr), "%s", addr);
    px_req_parser_init(&c->parser, s->core->cfg->proto_max_bulk_len);
    c->proto = 2;
    c->authenticated = !px_config_auth_required(s->core->cfg);
    c->user = strdup("default");
    c->mem_bucket = -1;
    ev_io_init(&c->rw, client_read_cb, fd, EV_READ);
    ev_io_init(&c->ww, client_write_cb, fd, EV_WRITE);
    ev_timer_init(&c->rebuild, rebuild_cb, 0, 0);
    c->rw.data = c->ww.data = c->rebuild.data = c;
    ev_io_start(s->core->loop, &c->rw);

    c->next = s->clients;
    if (s->clients) s->clients->prev = c;
    s->clients = c;
    s->nclients++;
    HASH_ADD(hh, s->clients_by_id, id, sizeof(c->id), c);
    return c;
}

px_req *px_client_req_new(px_client *c)
{
    px_clients *s = c->set;
    px_req *r = s->req_free;
    if (r) {
        s->req_free = r->next;
        s->req_free_len--;
        memset(r, 0, sizeof(*r));
    } else {
        r = calloc(1, sizeof(*r));
        if (!r) abort();
    }
    r->set = s;
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

px_multi_cmd *px_client_mq_push(px_client *c)
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

/* A held reply's bytes: a reference, or a copy of its own. */
static void req_reply_free(px_req *r)
{
    if (r->reply_ref.put) px_ref_put(&r->reply_ref);
    else free(r->reply);
    r->reply = NULL;
}

void px_req_free(px_clients *s, px_req *r)
{
    free(r->up.raw);
    req_reply_free(r);
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

/* Put every referenced reply (the client is closing: they will not be written). */
static void orefs_drop(px_client *c)
{
    while (c->noref) {
        px_oref *o = &c->orefs[c->oref_head];
        px_ref_put(&o->ref);
        c->oref_head = (c->oref_head + 1) % c->oref_cap;
        c->noref--;
    }
    c->oref_head = 0;
    c->oref_bytes = 0;
}

/* Queue len bytes at data, referenced by ref (taken), behind what c's output holds. */
static void out_ref(px_client *c, const char *data, size_t len, px_ref ref)
{
    if (c->tls) {
        /* TLS encrypts from one buffer: no writev of pieces, so a copy */
        px_buf_append(&c->out, data, len);
        px_ref_put(&ref);
        return;
    }
    if (c->noref == c->oref_cap) {
        int cap = c->oref_cap ? c->oref_cap * 2 : 8;
        px_oref *o = malloc(sizeof(*o) * (size_t)cap);
        if (!o) abort();
        for (int i = 0; i < c->noref; i++) o[i] = c->orefs[(c->oref_head + i) % c->oref_cap];
        free(c->orefs);
        c->orefs = o;
        c->oref_cap = cap;
        c->oref_head = 0;
    }
    px_oref *o = &c->orefs[(c->oref_head + c->noref) % c->oref_cap];
    o->data = data;
    o->len = len;
    o->at = c->out_off + px_buf_used(&c->out);
    o->ref = ref;
    c->noref++;
    c->oref_bytes += len;
}

void px_client_close(px_client *c, const char *why)
{
    px_clients *s = c->set;
    if (c->flags & PX_CLIENT_CLOSING) return;
    c->flags |= PX_CLIENT_CLOSING;
    if (why) px_log_verbose(&s->core->log, "Client id=%llu addr=%s closed: %s", (unsigned long long)c->id, c->addr, why);
    ev_io_stop(s->core->loop, &c->rw);
    ev_io_stop(s->core->loop, &c->ww);
    ev_timer_stop(s->core->loop, &c->rebuild);
    if (c->tls) {
        ev_io_stop(s->core->loop, &c->tls->w);
        ev_timer_stop(s->core->loop, &c->tls->hs);
    }
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
    c->non = 0;
    c->held = 0;
    orefs_drop(c); /* never to be written */
    account(c);
    px_client_drop_pinned(c);
    c->cnext = s->closing;
    s->closing = c;
}

static void client_free(px_client *c)
{
    px_clients *s = c->set;
    if (c->prev) c->prev->next = c->next;
    else s->clients = c->next;
    if (c->next) c->next->prev = c->prev;
    HASH_DELETE(hh, s->clients_by_id, c);
    s->nclients--;
    if (c->tls) {
        px_tls_free(c->tls->t); /* close_notify, if the socket takes it now */
        free(c->tls);
    }
    close(c->fd);
    px_buf_free(&c->in);
    px_buf_free(&c->out);
    orefs_drop(c);
    free(c->orefs);
    px_buf_free(&c->rewrite);
    free(c->on);
    free(c->tracks);
    px_buf_free(&c->track_cmds);
    px_buf_free(&c->multi_keys);
    px_client_multi_reset(c);
    subs_free(c);
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
    return c->nqueued == 0 && px_buf_used(&c->out) == 0 && c->noref == 0;
}

void px_client_stop_reading(px_client *c)
{
    ev_io_stop(c->set->core->loop, &c->rw);
    c->flags |= PX_CLIENT_PAUSED;
}

/* Queue c for the flush before the loop sleeps (px_clients_flush). */
static void want_write(px_client *c)
{
    px_clients *s = c->set;
    if (c->flags & (PX_CLIENT_IN_WRITE_LIST | PX_CLIENT_CLOSING | PX_CLIENT_WRITE_ARMED)) return;
    c->flags |= PX_CLIENT_IN_WRITE_LIST;
    c->wnext = s->write_clients;
    s->write_clients = c;
}

/* Move completed replies from the head of the queue into the output buffer. */
static void drain_queue(px_client *c)
{
    px_req *r;
    while ((r = c->qhead) && r->done) {
        if (r->reply_ref.put) {
            out_ref(c, r->reply, r->reply_len, r->reply_ref); /* the reference moves to the output */
            r->reply_ref.put = NULL;
            r->reply = NULL;
        } else {
            px_buf_append(&c->out, r->reply, r->reply_len);
        }
        c->held -= r->reply_len;
        c->qhead = r->next;
        if (!c->qhead) c->qtail = NULL;
        c->nqueued--;
        px_req_free(c->set, r);
    }
}

static void after_output(px_client *c)
{
    px_clients *s = c->set;
    long long limit = s->core->cfg->client_output_buffer_limit;
    account(c);
    /* replies held for an earlier one count too: they are output in waiting */
    if (limit && (long long)(px_buf_used(&c->out) + c->oref_bytes + c->held) > limit) {
        s->core->stats.output_buffer_limit_disconnects++;
        px_log_notice(&s->core->log, "Client id=%llu addr=%s closed for overcoming of output buffer limits (%zu bytes)",
                      (unsigned long long)c->id, c->addr, px_buf_used(&c->out) + c->oref_bytes);
        px_client_close(c, NULL);
        return;
    }
    if (px_buf_used(&c->out) || c->noref) want_write(c);
}

/*
 * r's reply: data, copied into c's output (or held in r until the replies
 * before it are written), or, with ref, referenced where it sits (the
 * reference is taken on every path, and put once it is written or dropped).
 */
static void answer(px_req *r, const char *data, size_t len, px_ref *ref)
{
    px_client *c = r->client;
    px_clients *s = r->set;
    if (r->capture) { /* a local command run inside EXEC's reply */
        px_buf_append(r->capture, data, len);
        if (ref) px_ref_put(ref);
        return;
    }
    /* A write that may have touched keys it does not name: the L1 may keep
     * the reply (still in flight for the client) until Redis' invalidations
     * for them are in, then calls here again. */
    if ((r->barrier || r->writes) && s->ops->completing(s->ops_arg, r, data, len)) {
        if (ref) px_ref_put(ref); /* it kept a copy */
        return;
    }
    if (r->t0) { /* complete: timed now, not when it is written (px_lat_done) */
        px_lat_done(s->core, r->cmd ? px_command_index(r->cmd) : px_command_count(), r->path, r->t0);
        r->t0 = 0;
    }
    if (r->forwarded) {
        r->forwarded = 0;
        if (c) inflight_done(c, r);
    }
    if (c && r->up.blocking) c->nblocking--;
    if (r->writes) {
        /* before anyone sees the ack: a fill that raced with it is refused */
        r->writes = 0;
        if (c) c->nwrites--;
    }
    if (r->silent) len = 0; /* CLIENT REPLY OFF/SKIP: the slot stays, the bytes go */
    if (!c) {
        /* the client has gone: its reply is dropped, the slot is free */
        free(r->up.raw);
        if (ref) px_ref_put(ref);
        req_reply_free(r);
        free(r->inval);
        mq_free(r->mq, r->mq_len);
        free(r);
        return;
    }
    int r_was_pinned = r->pinned;
    px_buf hooked = {0};
    if (r->hook && r->hook(r, data, len, &hooked)) {
        data = hooked.data;
        len = hooked.len;
        if (ref) px_ref_put(ref); /* the hook's bytes replace them */
        ref = NULL;
    }
    if (ref && !len) {
        px_ref_put(ref);
        ref = NULL;
    }
    if (r == c->qhead) {
        if (ref) out_ref(c, data, len, *ref);
        else px_buf_append(&c->out, data, len);
        c->qhead = r->next;
        if (!c->qhead) c->qtail = NULL;
        c->nqueued--;
        px_req_free(s, r);
        drain_queue(c);
        after_output(c);
    } else {
        if (ref) {
            /* held where it sits: no copy while it waits either */
            r->reply = (char *)data;
            r->reply_ref = *ref;
        } else {
            r->reply = malloc(len ? len : 1);
            if (!r->reply) abort();
            memcpy(r->reply, data, len);
        }
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
        !s->core->shutting_down &&
        c->ninflight < s->core->cfg->upstream_max_inflight / 2 + 1) {
        c->flags &= ~PX_CLIENT_PAUSED;
        ev_io_start(s->core->loop, &c->rw);
        if (unread(c)) ev_feed_event(s->core->loop, &c->rw, EV_READ);
    }
}

void px_client_reply(px_req *r, const char *data, size_t len) { answer(r, data, len, NULL); }

void px_client_reply_ref(px_req *r, const char *data, size_t len, void (*put)(void *obj), void *obj)
{
    px_ref ref = {put, obj};
    if (len >= PX_CLIENT_REF_MIN) {
        answer(r, data, len, &ref);
        return;
    }
    answer(r, data, len, NULL);
    px_ref_put(&ref);
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

/*
 * One writev of c's output: out's bytes with the referenced replies in their
 * places, as many pieces as one call takes.
 */
static ssize_t write_chain(px_client *c)
{
    struct iovec iov[IOV_PER_WRITE];
    int n = 0, i;
    size_t pos = c->out_off, left = px_buf_used(&c->out);
    const char *p = px_buf_start(&c->out);
    for (i = 0; i < c->noref && n + 2 <= IOV_PER_WRITE; i++) {
        const px_oref *o = &c->orefs[(c->oref_head + i) % c->oref_cap];
        size_t k = o->at - pos; /* out's bytes before it */
        if (k) {
            iov[n].iov_base = (void *)p;
            iov[n++].iov_len = k;
            p += k;
            left -= k;
            pos += k;
        }
        iov[n].iov_base = (void *)o->data;
        iov[n++].iov_len = o->len;
    }
    if (i == c->noref && left && n < IOV_PER_WRITE) {
        iov[n].iov_base = (void *)p;
        iov[n++].iov_len = left;
    }
    return writev(c->fd, iov, n);
}

/* n bytes of the chain were written: consume them from out and the references, in order. */
static void chain_written(px_client *c, size_t n)
{
    while (n) {
        if (!c->noref) {
            px_buf_consume(&c->out, n);
            c->out_off += n;
            return;
        }
        px_oref *o = &c->orefs[c->oref_head];
        size_t k = o->at - c->out_off;
        if (k) {
            size_t t = k < n ? k : n;
            px_buf_consume(&c->out, t);
            c->out_off += t;
            n -= t;
            continue;
        }
        size_t t = o->len < n ? o->len : n;
        o->data += t;
        o->len -= t;
        c->oref_bytes -= t;
        n -= t;
        if (o->len) return;
        px_ref_put(&o->ref);
        c->oref_head = (c->oref_head + 1) % c->oref_cap;
        c->noref--;
    }
}

int px_client_flush(px_client *c)
{
    px_clients *s = c->set;
    if (c->flags & PX_CLIENT_CLOSING) return -1;
    while (px_buf_used(&c->out) || c->noref) {
        ssize_t n = c->tls     ? tls_write(c)
                    : c->noref ? write_chain(c)
                               : write(c->fd, px_buf_start(&c->out), px_buf_used(&c->out));
        if (n > 0) {
            s->core->stats.net_output_bytes += (uint64_t)n;
            if (c->noref) {
                chain_written(c, (size_t)n);
            } else {
                px_buf_consume(&c->out, (size_t)n);
                c->out_off += (size_t)n;
            }
            c->last_active = px_now(s->core); /* as Redis: a reply written counts as activity */
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (c->tls && tls_write_wants_read(c)) {
                account(c);
                return 0;
            }
            if (!(c->flags & PX_CLIENT_WRITE_ARMED)) {
                c->flags |= PX_CLIENT_WRITE_ARMED;
                ev_io_start(s->core->loop, &c->ww);
            }
            account(c);
            return 0;
        }
        px_client_close(c, n == 0 ? "write returned 0" : c->tls ? px_tls_error(c->tls->t) : strerror(errno));
        return -1;
    }
    if (c->flags & PX_CLIENT_WRITE_ARMED) {
        c->flags &= ~PX_CLIENT_WRITE_ARMED;
        ev_io_stop(s->core->loop, &c->ww);
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
    return c->nblocking > 0 && !c->set->core->shutting_down;
}

static void stop_reading_unless_blocked(px_client *c)
{
    if (!read_while_waiting(c)) ev_io_stop(c->set->core->loop, &c->rw);
}

static int over_query_limit(px_client *c, size_t used)
{
    px_clients *s = c->set;
    if ((long long)used <= s->core->cfg->client_query_buffer_limit) return 0;
    s->core->stats.query_buffer_limit_disconnects++;
    px_log_notice(&s->core->log, "Client id=%llu addr=%s closed: query buffer %zu bytes over client-query-buffer-limit",
                  (unsigned long long)c->id, c->addr, used);
    px_client_close(c, NULL);
    return 1;
}

static void client_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    px_client *c = w->data;
    px_clients *s = c->set;
    (void)loop;
    (void)revents;
    if (c->flags & PX_CLIENT_CLOSING) return;
    int waiting = (c->flags & (PX_CLIENT_PAUSED | PX_CLIENT_HOLD)) != 0;
    if (waiting && !read_while_waiting(c)) {
        ev_io_stop(s->core->loop, &c->rw); /* its blocking command has been answered */
        return;
    }
    /* Read what the command being parsed still needs, at least a chunk. */
    size_t want = READ_CHUNK;
    size_t used = px_buf_used(&c->in);
    if (c->parser.need > used && c->parser.need - used > want) want = c->parser.need - used;
    if (want > 64u << 20) want = 64u << 20;
    char *p = px_buf_reserve(&c->in, want);
    ssize_t n = c->tls ? tls_read(c, p, want) : read(c->fd, p, want);
    if (n > 0) {
        c->in.len += (size_t)n;
        s->core->stats.net_input_bytes += (uint64_t)n;
        c->last_active = px_now(s->core);
    } else if (n == 0) {
        px_client_close(c, "client closed connection");
        return;
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        px_client_close(c, c->tls ? px_tls_error(c->tls->t) : strerror(errno));
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


/* ---- TLS (tls-port) ---- */

/* Watch for what TLS waits on: the handshake's next step, or the readiness
 * a read or a write needs besides its own (x->want). */
static void tls_watch(px_client *c, int events)
{
    px_client_tls *x = c->tls;
    struct ev_loop *loop = c->set->core->loop;
    if (ev_is_active(&x->w) && (x->w.events & (EV_READ | EV_WRITE)) == events) return;
    ev_io_stop(loop, &x->w);
    if (!events) return;
    ev_io_set(&x->w, c->fd, events);
    ev_io_start(loop, &x->w);
}

static void tls_watch_wants(px_client *c)
{
    unsigned want = c->tls->want;
    tls_watch(c, (want & TLS_READ_WANTS_WRITE ? EV_WRITE : 0) | (want & TLS_WRITE_WANTS_READ ? EV_READ : 0));
}

/*
 * A handshake that failed or took too long: counted, logged at verbose with
 * the reason (a client cannot be told: it speaks no TLS with us yet), and at
 * notice at most once a minute, so a scanner or a misconfigured fleet cannot
 * flood the log.
 */
static void tls_failed(px_client *c, const char *why)
{
    px_clients *s = c->set;
    double now = px_now(s->core);
    s->core->stats.tls_handshake_failures++;
    px_log_verbose(&s->core->log, "Client id=%llu addr=%s: TLS handshake failed: %s", (unsigned long long)c->id,
                   c->addr, why);
    if (now >= s->tls_notice_at) {
        px_log_notice(&s->core->log,
                      "TLS handshake failed for client addr=%s: %s (one such line a minute at most: %llu more since "
                      "the last one, each logged at verbose)",
                      c->addr, why, (unsigned long long)s->tls_failures_unlogged);
        s->tls_notice_at = now + 60;
        s->tls_failures_unlogged = 0;
    } else {
        s->tls_failures_unlogged++;
    }
    px_client_close(c, NULL);
}

/* One step of the handshake; once it is done the client is read as any other. */
static void tls_handshake(px_client *c)
{
    px_client_tls *x = c->tls;
    struct ev_loop *loop = c->set->core->loop;
    int rc = px_tls_handshake(x->t);
    if (rc < 0) {
        tls_failed(c, px_tls_error(x->t));
        return;
    }
    if (rc == 0) {
        tls_watch(c, px_tls_want_write(x->t) ? EV_WRITE : EV_READ);
        return;
    }
    x->handshaking = 0;
    ev_timer_stop(loop, &x->hs);
    tls_watch(c, 0);
    px_log_debug(&c->set->core->log, "Client id=%llu addr=%s: %s handshake done%s", (unsigned long long)c->id, c->addr,
                 px_tls_version(x->t), px_tls_peer_verified(x->t) ? ", client certificate verified" : "");
    if (c->flags & PX_CLIENT_PAUSED) return; /* shutting down */
    ev_io_start(loop, &c->rw);
    /* what the client sent right behind its Finished may sit in TLS already */
    ev_feed_event(loop, &c->rw, EV_READ);
}

static void tls_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    px_client *c = w->data;
    px_client_tls *x = c->tls;
    (void)revents;
    if (c->flags & PX_CLIENT_CLOSING) return;
    if (x->handshaking) {
        tls_handshake(c);
        return;
    }
    /* the socket is ready for what a read or a write waited on: try it again */
    unsigned want = x->want;
    x->want = 0;
    tls_watch(c, 0);
    if (want & TLS_READ_WANTS_WRITE) client_read_cb(loop, &c->rw, EV_READ);
    if ((want & TLS_WRITE_WANTS_READ) && !(c->flags & PX_CLIENT_CLOSING)) px_client_flush(c);
}

static void tls_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    px_client *c = w->data;
    char why[96];
    (void)loop;
    (void)revents;
    if (c->flags & PX_CLIENT_CLOSING || !c->tls->handshaking) return;
    snprintf(why, sizeof(why), "not done within %g seconds", PX_CLIENT_TLS_HANDSHAKE_TIMEOUT);
    tls_failed(c, why);
}

int px_client_tls_accept(px_client *c, px_tls_ctx *ctx)
{
    struct ev_loop *loop = c->set->core->loop;
    char err[256];
    px_tls *t = px_tls_new(ctx, c->fd, 1, NULL, NULL, err, sizeof(err));
    if (!t) {
        px_log_warning(&c->set->core->log, "Client id=%llu addr=%s: %s", (unsigned long long)c->id, c->addr, err);
        px_client_close(c, NULL);
        return -1;
    }
    px_client_tls *x = calloc(1, sizeof(*x));
    if (!x) abort();
    x->t = t;
    x->handshaking = 1;
    c->tls = x;
    ev_io_stop(loop, &c->rw); /* nothing is parsed before the handshake is done */
    ev_io_init(&x->w, tls_cb, c->fd, EV_READ);
    ev_timer_init(&x->hs, tls_timeout_cb, PX_CLIENT_TLS_HANDSHAKE_TIMEOUT, 0.);
    x->w.data = x->hs.data = c;
    ev_io_start(loop, &x->w);
    ev_timer_start(loop, &x->hs);
    return 0;
}

/* px_tls_read for the read callback: a read that waits for the socket to be
 * writable is retried from tls_cb, and bytes TLS decrypted past len are
 * read next without waiting for the socket. */
static ssize_t tls_read(px_client *c, char *p, size_t len)
{
    px_client_tls *x = c->tls;
    ssize_t n = px_tls_read(x->t, p, len);
    if (n > 0 && px_tls_pending(x->t)) ev_feed_event(c->set->core->loop, &c->rw, EV_READ);
    if (n < 0 && errno == EAGAIN && px_tls_want_write(x->t)) {
        x->want |= TLS_READ_WANTS_WRITE;
        tls_watch_wants(c);
    }
    return n;
}

/* px_tls_write of out's bytes (referenced replies were copied there: out_ref). */
static ssize_t tls_write(px_client *c)
{
    return px_tls_write(c->tls->t, px_buf_start(&c->out), px_buf_used(&c->out));
}

/* After a write's EAGAIN: 1 if TLS waits for the socket to be readable (not
 * writable, as ww would wait for), then tls_cb writes again. */
static int tls_write_wants_read(px_client *c)
{
    px_client_tls *x = c->tls;
    if (px_tls_want_write(x->t)) return 0;
    if (c->flags & PX_CLIENT_WRITE_ARMED) {
        c->flags &= ~PX_CLIENT_WRITE_ARMED;
        ev_io_stop(c->set->core->loop, &c->ww);
    }
    x->want |= TLS_WRITE_WANTS_READ;
    tls_watch_wants(c);
    return 1;
}

/* r counts as in flight on u (NULL: on no connection that orders others). */
static void inflight_add(px_client *c, px_req *r, struct px_upstream *u)
{
    c->ninflight++;
    r->on = u;
    if (!u) return;
    for (int i = 0; i < c->non; i++)
        if (c->on[i].u == u) {
            c->on[i].n++;
            return;
        }
    if (c->non == c->con) {
        c->con = c->con ? c->con * 2 : 2;
        c->on = realloc(c->on, sizeof(*c->on) * (size_t)c->con);
        if (!c->on) abort();
    }
    c->on[c->non].u = u;
    c->on[c->non++].n = 1;
}

/* r is answered: an entry whose count drops to 0 goes (its connection may go too). */
static void inflight_done(px_client *c, px_req *r)
{
    c->ninflight--;
    for (int i = 0; r->on && i < c->non; i++)
        if (c->on[i].u == r->on) {
            if (--c->on[i].n == 0) c->on[i] = c->on[--c->non];
            break;
        }
    r->on = NULL;
}

struct px_upstream *px_client_inflight_on(const px_client *c, const px_pool *pool)
{
    for (int i = 0; i < c->non; i++)
        if (c->on[i].u->pool == pool) return c->on[i].u;
    return NULL;
}

/* A forwarded request's reply, or the error of its connection failing first. */
static void upstream_done(px_upreq *q, struct px_upstream *u, const char *reply, size_t len, int failed)
{
    px_req *r = (px_req *)((char *)q - offsetof(px_req, up));
    /* the topology sees it first (Sentinel: a -READONLY means the master moved) */
    if (!failed && px_router_reply(r->set->router, q, u, reply, len)) return;
    if (failed && px_router_failed(r->set->router, q, u, reply, len)) return; /* a read sent where its key lives now */
    if (!failed && r->pinned && r->up.raw && track_redirect(r, u, reply, len)) return;
    if (failed && r->client) r->set->core->stats.upstream_error_replies++;
    /* Its MULTI failed with the connection: the client knows it is in no
     * transaction (px_client_pinned_lost must not keep one for it). */
    if (failed && r->client && r->pinned && r->cmd && (px_handlers[r->cmd->handler].sets & PX_STATE_MULTI))
        r->client->multi_failed = 1;
    /* a large reply goes out from u's read buffer, not copied */
    px_ref ref;
    if (len >= PX_CLIENT_REF_MIN && r->client && px_upstream_ref(u, reply, len, &ref)) answer(r, reply, len, &ref);
    else px_client_reply(r, reply, len);
}

/* The router sends r again on pool p (a Cluster redirect), or parks it for
 * a retry (p NULL): it goes on the connection the client's requests to p
 * are on, and its in-flight entry moves there, so the client's next
 * commands to p queue behind it, not past it on another connection; a
 * write's barrier waits on the link of the pool it now runs on. */
static struct px_upstream *upstream_resend_on(px_upreq *q, px_pool *p, int proto)
{
    px_req *r = (px_req *)((char *)q - offsetof(px_req, up));
    px_client *c = r->client;
    struct px_upstream *to = p ? px_pool_pick(p, 0, proto, c ? px_client_inflight_on(c, p) : NULL) : NULL;
    if (r->writes) r->inval_pool = to ? to->pool : NULL;
    if (c && r->forwarded) {
        inflight_done(c, r);
        inflight_add(c, r, to);
    }
    return to;
}

void px_client_reply_via(px_req *r, struct px_upstream *u, const char *cmd, size_t cmdlen, const char *reply,
                         size_t len)
{
    if (len && reply[0] == '-' && r->set->router->topo->resends && u && u->lane && !r->up.raw) {
        r->up.done = upstream_done;
        r->up.resend_on = upstream_resend_on;
        r->up.what = r->cmd ? r->cmd->name : NULL;
        r->up.raw = malloc(cmdlen ? cmdlen : 1);
        if (!r->up.raw) abort();
        memcpy(r->up.raw, cmd, cmdlen);
        r->up.rawlen = cmdlen;
        /* a fill's connection that failed answers with its error (u is down then) */
        if (u->state != PX_UP_READY ? px_router_failed(r->set->router, &r->up, u, reply, len)
                                    : px_router_reply(r->set->router, &r->up, u, reply, len))
            return;
    }
    px_client_reply(r, reply, len);
}

static void ignore_internal(struct px_upstream *u, void *ctx, const char *reply, size_t len)
{
    (void)u;
    (void)ctx;
    (void)reply;
    (void)len;
}

/*
 * A blocking command on c's own connection that its node redirected
 * (MOVED, ASK, or a retry after TRYAGAIN or a failover's UNBLOCKED; the
 * router decided): it goes again on a connection of c's own to pool p, and
 * the old one is released (idle: nothing of c's is behind a blocking
 * command).  With the client gone, its state changed, or no connection to
 * be had, the request is answered with the error.
 */
static void pinned_resend(px_upreq *q, px_pool *p, int asking)
{
    px_req *r = (px_req *)((char *)q - offsetof(px_req, up));
    px_client *c = r->client;
    struct px_upstream *old = r->on, *nu = NULL;
    const char *err = NULL;
    if (!c || (c->flags & (PX_CLIENT_CLOSING | PX_CLIENT_CLOSE_AFTER_REPLY)) || c->pinned != old || c->state)
        err = "ERR hotproxy: the client's connection changed while its blocking command was redirected";
    else if (!p) err = "CLUSTERDOWN Hash slot not served"; /* Redis Cluster's words */
    else if (old && p == old->pool) nu = old;
    else nu = px_client_pin(c, p, &err);
    if (!nu) {
        char msg[512];
        int n = err && (!strncmp(err, "ERR ", 4) || !strncmp(err, "CLUSTERDOWN ", 12))
                    ? snprintf(msg, sizeof(msg), "-%s\r\n", err)
                    : snprintf(msg, sizeof(msg), "-ERR %s\r\n", err ? err : px_pool_unavailable(p));
        if (n >= (int)sizeof(msg)) n = (int)sizeof(msg) - 1;
        q->done(q, NULL, msg, (size_t)n, 1);
        return;
    }
    if (nu != old) {
        inflight_done(c, r);
        c->pinned = nu;
        if (old) px_pool_unpin(old->pool, old);
        inflight_add(c, r, nu);
    }
    if (asking) px_upstream_send_internal(nu, "*1\r\n$6\r\nASKING\r\n", 16, ignore_internal, NULL);
    px_upstream_send(nu, q, q->raw, q->rawlen);
}

/*
 * That command waits for a retry (TRYAGAIN, a failover's UNBLOCKED): it
 * counts as in flight on no connection (c's next commands still wait), and
 * c's own connection is released, for a demoted master closes it.
 */
static void pinned_park(px_upreq *q)
{
    px_req *r = (px_req *)((char *)q - offsetof(px_req, up));
    px_client *c = r->client;
    struct px_upstream *old = r->on;
    if (!c || !old || c->pinned != old) return;
    inflight_done(c, r);
    inflight_add(c, r, NULL);
    c->pinned = NULL;
    px_pool_unpin(old->pool, old);
}

void px_client_forward(px_client *c, px_req *r, struct px_upstream *u, const char *raw, size_t rawlen, int noreply,
                       int oob)
{
    c->set->core->stats.commands_forwarded++;
    if (noreply) {
        px_upstream_write(u, raw, rawlen);
        px_client_reply(r, "", 0);
        return;
    }
    r->forwarded = 1;
    r->pinned = u == c->pinned;
    inflight_add(c, r, oob ? NULL : u); /* an out-of-band connection orders nothing after it */
    r->up.done = upstream_done;
    r->up.resend_on = upstream_resend_on;
    r->up.what = r->cmd ? r->cmd->name : NULL;
    int resends = c->set->router->topo->resends;
    /* a blocking command on c's own connection, alone there (c's next
     * commands wait for it, see px_dispatch.c): it may move to the node a
     * redirect names, on a connection of c's own there */
    int moves = resends == PX_RESENDS_ALL && r->pinned && r->up.blocking && !c->state && r->cmd &&
                (r->cmd->flags & PX_F_BL);
    if (moves) {
        r->up.resend = pinned_resend;
        r->up.park = pinned_park;
    }
    if (moves || (resends && !oob && (!r->pinned || px_client_tracks_across(c)) &&
                  (resends == PX_RESENDS_ALL || px_command_writes(r->cmd)))) {
        /* the topology may send it again elsewhere (a Cluster redirect;
         * track_redirect for a client tracking across the Cluster) */
        r->up.raw = malloc(rawlen ? rawlen : 1);
        if (!r->up.raw) abort();
        memcpy(r->up.raw, raw, rawlen);
        r->up.rawlen = rawlen;
    }
    px_upstream_send(u, &r->up, raw, rawlen);
}

void px_client_hold(px_client *c, struct px_upstream *u)
{
    px_req tmp;
    inflight_add(c, &tmp, u);
}

void px_client_release(px_client *c, struct px_upstream *u)
{
    px_req tmp;
    tmp.on = u;
    inflight_done(c, &tmp);
    resume_held(c);
}

void px_client_await(px_client *c, px_req *r, struct px_upstream *u)
{
    r->forwarded = 1;
    inflight_add(c, r, u);
}

void px_client_note_write(px_client *c, px_req *r)
{
    r->writes = 1;
    c->nwrites++;
}

void px_client_multi_note(px_client *c, const char *keys, size_t len, int flush, int barrier)
{
    px_buf_append(&c->multi_keys, keys, len);
    c->multi_flush |= flush;
    c->multi_barrier |= barrier;
}

void px_client_multi_take(px_client *c, px_buf *keys, int *flush, int *barrier)
{
    if (keys) *keys = c->multi_keys;
    else px_buf_free(&c->multi_keys);
    *flush = c->multi_flush;
    *barrier = c->multi_barrier;
    memset(&c->multi_keys, 0, sizeof(c->multi_keys));
    c->multi_flush = 0;
    c->multi_barrier = 0;
}

/* Parse again what a held client left unread. */
static void resume_held(px_client *c)
{
    if (!(c->flags & PX_CLIENT_HOLD) || c->ninflight || c->markers ||
        (c->flags & (PX_CLIENT_CLOSING | PX_CLIENT_CLOSE_AFTER_REPLY)))
        return;
    c->flags &= ~PX_CLIENT_HOLD;
    if (c->flags & PX_CLIENT_PAUSED) return;
    ev_io_start(c->set->core->loop, &c->rw);
    if (unread(c)) ev_feed_event(c->set->core->loop, &c->rw, EV_READ);
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

void px_client_marker(px_client *c, struct px_upstream *u)
{
    c->markers++;
    px_upstream_marker(u, on_marker, NULL);
}

/* Answer a protocol error, then close, as Redis does. */
static void protocol_error(px_client *c, const char *errstr)
{
    c->flags |= PX_CLIENT_CLOSE_AFTER_REPLY;
    ev_io_stop(c->set->core->loop, &c->rw);
    px_req *r = px_client_req_new(c);
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

/*
 * The channels, patterns and shard channels a client is subscribed to, as
 * Redis confirmed them (the frames below, not what the client asked): a
 * failover re-subscribes it to exactly these on the new master, and CLIENT
 * LIST's sub= psub= ssub= are their sizes.
 */
typedef struct px_sub {
    UT_hash_handle hh;
    int pending; /* sent again by hotproxy's re-subscribe: its confirmation is not the client's */
    int leaving; /* a shard channel the client's own SUNSUBSCRIBE names, in flight */
    size_t len;
    char name[];
} px_sub;

static void subs_count(px_client *c)
{
    c->nsub = (int)HASH_COUNT(c->subs[0]);
    c->npsub = (int)HASH_COUNT(c->subs[1]);
    c->nssub = (int)HASH_COUNT(c->subs[2]);
}

static void subs_free(px_client *c)
{
    for (int k = 0; k < 3; k++) {
        px_sub *e, *tmp;
        HASH_ITER(hh, c->subs[k], e, tmp) {
            HASH_DEL(c->subs[k], e);
            free(e);
        }
    }
    subs_count(c);
}

/*
 * A (un)subscribe confirmation frame (RESP2 array or RESP3 push of three:
 * kind, name, count): its kind (0 channel, 1 pattern, 2 shard channel),
 * +1 or -1, and the name (pointing into f).  0 when it is none, or an
 * unsubscribe with a null name (nothing to leave).
 */
static int parse_confirmation(const char *f, size_t n, int *kind, int *delta, const char **name, size_t *len)
{
    static const struct {
        const char *kind;
        int delta;
        int which;
    } kinds[] = {{"$9\r\nsubscribe\r\n", 1, 0},   {"$11\r\nunsubscribe\r\n", -1, 0},
                 {"$10\r\npsubscribe\r\n", 1, 1}, {"$12\r\npunsubscribe\r\n", -1, 1},
                 {"$10\r\nssubscribe\r\n", 1, 2}, {"$12\r\nsunsubscribe\r\n", -1, 2}};
    if (n < 8 || (f[0] != '*' && f[0] != '>') || memcmp(f + 1, "3\r\n", 3)) return 0;
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        size_t kl = strlen(kinds[i].kind);
        if (n < 4 + kl || memcmp(f + 4, kinds[i].kind, kl)) continue;
        const char *p = f + 4 + kl, *end = f + n;
        long long l;
        if (p >= end || *p != '$') return 0; /* "$-1" or "_": a null name */
        const char *cr = memchr(p, '\r', (size_t)(end - p));
        if (!cr || !px_string2ll(p + 1, (size_t)(cr - p - 1), &l) || l < 0 || (size_t)l > (size_t)(end - cr) ||
            (size_t)(end - cr) - (size_t)l < 4)
            return 0;
        *kind = kinds[i].which;
        *delta = kinds[i].delta;
        *name = cr + 2;
        *len = (size_t)l;
        return 1;
    }
    return 0;
}

static px_sub *sub_find(px_sub *head, const char *name, size_t len)
{
    px_sub *e = NULL;
    HASH_FIND(hh, head, name, len, e);
    return e;
}

void px_client_leaving(px_client *c, int n, const char *const *names, const size_t *lens)
{
    for (px_sub *e = c->subs[2]; e && n == 0; e = e->hh.next) e->leaving++;
    for (int i = 0; i < n; i++) {
        px_sub *e = sub_find(c->subs[2], names[i], lens[i]);
        if (e) e->leaving++;
    }
}

/* Subscription confirmations: the sets (and CLIENT LIST's counts) follow them. */
static void count_subscriptions(px_client *c, const char *f, size_t n)
{
    int kind, delta;
    const char *name;
    size_t len;
    if (!parse_confirmation(f, n, &kind, &delta, &name, &len)) return;
    px_sub *e = sub_find(c->subs[kind], name, len);
    if (delta > 0 && !e) {
        e = calloc(1, sizeof(*e) + len + 1);
        if (!e) abort();
        memcpy(e->name, name, len);
        e->len = len;
        HASH_ADD_KEYPTR(hh, c->subs[kind], e->name, e->len, e);
    } else if (delta < 0 && e) {
        HASH_DEL(c->subs[kind], e);
        free(e);
    }
    subs_count(c);
}

/*
 * While hotproxy's own re-subscribe is confirmed (the client's commands
 * wait meanwhile, so nothing of its own is in the way): the first
 * confirmation of each name it sent, and an error (Redis refused part of
 * it), answer hotproxy, not the client.  Returns 1 for such a frame.
 */
static int resubscribe_echo(px_client *c, const char *f, size_t n)
{
    int kind, delta;
    const char *name;
    size_t len;
    if (n && f[0] == '-') {
        c->resub_failed = 1;
        return 1;
    }
    if (!parse_confirmation(f, n, &kind, &delta, &name, &len) || delta < 0) return 0;
    px_sub *e = sub_find(c->subs[kind], name, len);
    if (!e || !e->pending) return 0;
    e->pending = 0;
    return 1;
}

#define FOLLOW_WAIT 10.0  /* seconds a moved slot's new master may take to show in the map */
#define FOLLOW_POLL 0.05  /* how often the map is looked at meanwhile */

/* Every frame the old master sent before the swallowed sunsubscribe is in:
 * re-subscribe from the loop (rebuild_cb). */
static void follow_marker(struct px_upstream *u, void *ctx, const char *reply, size_t len)
{
    px_client *c = u->owner;
    (void)ctx;
    (void)reply;
    (void)len;
    if (!c || u->state != PX_UP_READY) return; /* the connection failed first: its loss decides */
    c->markers--;
    ev_timer_set(&c->rebuild, 0, 0);
    ev_timer_start(c->set->core->loop, &c->rebuild);
}

/*
 * Redis 7 tells a subscriber of shard channels that it left them when their
 * slot moves to another master (a sunsubscribe it did not ask for).  Through
 * hotproxy the client does not notice: the first such frame is swallowed, a
 * marker follows it (what the old master sent before comes first), then the
 * client is subscribed again on the slot's new master as after a failover
 * (rebuild_cb), and the old master's frames for the slot's other channels
 * are swallowed meanwhile.  That needs all of the client's shard channels in
 * the slot that moved (hash tags): channels of another slot would end up on
 * another master than these, and a client has one connection of its own,
 * so then Redis' sunsubscribe goes to the client, as to a cluster-aware
 * one; so it does when the connection holds more than subscriptions.
 * Returns 1 when f was swallowed.
 */
static int follow_frame(px_client *c, struct px_upstream *u, const char *f, size_t n)
{
    struct px_router *r = c->set->router;
    int kind, delta;
    const char *name;
    size_t len;
    if (!px_router_sharded(r) || u != c->pinned || !parse_confirmation(f, n, &kind, &delta, &name, &len) ||
        kind != 2 || delta > 0)
        return 0;
    px_sub *e = sub_find(c->subs[2], name, len);
    if (!e || e->leaving) return 0; /* the answer to its own SUNSUBSCRIBE */
    int shard = px_router_shard(r, name, len);
    if (c->following) return shard == c->follow_shard;
    if (c->resubscribing || ev_is_active(&c->rebuild)) return 0;
    /* other state on the connection (a RESP3 subscriber's MULTI, CLIENT
     * TRACKING, a blocked command) would not move with the subscriptions */
    if ((c->state & ~(unsigned)(PX_STATE_SUB | PX_STATE_SSUB)) || c->nblocking) return 0;
    for (px_sub *o = c->subs[2]; o; o = o->hh.next)
        if (px_router_shard(r, o->name, o->len) != shard) {
            px_log_verbose(&c->set->core->log,
                           "Client id=%llu addr=%s: shard channel %.*s left %s, its other shard channels did not: "
                           "it gets Redis' sunsubscribe",
                           (unsigned long long)c->id, c->addr, (int)(len > 100 ? 100 : len), name, u->pool->name);
            return 0;
        }
    c->following = 1;
    c->follow_shard = shard;
    c->follow_until = px_now(c->set->core) + FOLLOW_WAIT;
    c->rebuild_pool = u->pool;
    c->markers++;
    px_upstream_marker(u, follow_marker, NULL);
    return 1;
}

void px_client_upstream_frame(px_client *c, struct px_upstream *u, const char *frame, size_t len)
{
    if (c->flags & PX_CLIENT_CLOSING) return;
    if (follow_frame(c, u, frame, len)) return;
    if (c->resubscribing && resubscribe_echo(c, frame, len)) return;
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
        px_req *r = px_client_req_new(c);
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
struct px_upstream *px_client_pin(px_client *c, px_pool *pool, const char **err)
{
    return px_pool_pin(pool, c->db, c->proto, pinned_frame, pinned_lost, c, err);
}

/* The shared connection c's next request goes on: where its requests in
 * flight are, if any (px_pool_pick). */
struct px_upstream *px_client_pick(px_client *c, px_pool *pool)
{
    /* tracking across a Cluster: what it reads must be tracked for it */
    if (px_client_tracks_across(c)) return track_conn(c, pool);
    return px_pool_pick(pool, c->db, c->proto, px_client_inflight_on(c, pool));
}

/* Its connection state is gone for good: close it as Redis going away
 * would, once the errors already queued are written. */
static void lose_client(px_client *c, const char *why)
{
    px_log_verbose(&c->set->core->log, "Client id=%llu addr=%s: %s: closing it", (unsigned long long)c->id, c->addr,
                   why);
    px_client_drop_pinned(c);
    c->state = 0;
    c->nblocking = 0;
    c->markers = 0;
    c->resubscribing = 0;
    c->following = 0;
    c->flags |= PX_CLIENT_CLOSE_AFTER_REPLY;
    ev_io_stop(c->set->core->loop, &c->rw);
    want_write(c);
}

/* The re-subscribe's marker: every confirmation of it is in (or an error). */
static void resubscribed(struct px_upstream *u, void *ctx, const char *reply, size_t len)
{
    px_client *c = u->owner;
    (void)ctx;
    if (!c || u->state != PX_UP_READY) return; /* the connection failed first: its loss decides */
    c->markers--;
    c->resubscribing = 0;
    int missing = 0;
    for (int k = 0; k < 3; k++)
        for (px_sub *e = c->subs[k]; e; e = e->hh.next) {
            missing += e->pending;
            e->pending = 0;
        }
    if (missing || c->resub_failed || (len && (reply[0] == '-' || reply[0] == '!'))) {
        lose_client(c, "the new master refused its re-subscribe");
        return;
    }
    px_log_verbose(&c->set->core->log,
                   "Client id=%llu addr=%s: re-subscribed on %s (%d channels, %d patterns, %d shard channels)",
                   (unsigned long long)c->id, c->addr, u->pool->name, c->nsub, c->npsub, c->nssub);
    resume_held(c);
}

/*
 * From the loop once the failover's re-point is done (the pool names the
 * new master): a connection of its own there, subscribed to what Redis had
 * confirmed on the old one.  A marker follows; until it is answered the
 * client's commands wait, so every confirmation before it is hotproxy's.
 */
static void rebuild_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    px_client *c = w->data;
    static const char *const verbs[3] = {"SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE"};
    (void)loop;
    (void)revents;
    if (c->flags & (PX_CLIENT_CLOSING | PX_CLIENT_CLOSE_AFTER_REPLY)) return;
    if (c->following) {
        /* its shard channels' slot left rebuild_pool (follow_frame): where to? */
        struct px_router *r = c->set->router;
        px_pool *to = px_router_shard_pool(r, c->follow_shard);
        if (!to || to == c->rebuild_pool) {
            if (px_now(c->set->core) > c->follow_until) {
                lose_client(c, "its shard channels' slot moved and the map does not say where");
                return;
            }
            px_router_shard_stale(r, c->follow_shard); /* read the map again (at most every 100 ms) */
            ev_timer_set(&c->rebuild, FOLLOW_POLL, 0);
            ev_timer_start(c->set->core->loop, &c->rebuild);
            return;
        }
        px_log_verbose(&c->set->core->log, "Client id=%llu addr=%s: its shard channels' slot %d moved from %s to %s",
                       (unsigned long long)c->id, c->addr, c->follow_shard, c->rebuild_pool->name, to->name);
        c->following = 0;
        c->rebuild_pool = to;
        if (c->pinned) { /* idle: its commands waited for the marker */
            struct px_upstream *old = c->pinned;
            c->pinned = NULL;
            px_pool_unpin(old->pool, old);
        }
    }
    const char *err = NULL;
    if (!c->pinned) c->pinned = px_client_pin(c, c->rebuild_pool, &err);
    if (!c->pinned) {
        lose_client(c, err ? err : "no connection to the new master");
        return;
    }
    struct px_upstream *u = c->pinned;
    if (c->proto == 2) u->raw = 1; /* RESP2 pub/sub mode: every frame is the client's */
    px_buf b = {0};
    for (int k = 0; k < 3; k++) {
        int n = (int)HASH_COUNT(c->subs[k]), i = 1;
        if (!n) continue;
        const char **argv = calloc((size_t)n + 1, sizeof(*argv));
        size_t *argvlen = calloc((size_t)n + 1, sizeof(*argvlen));
        if (!argv || !argvlen) abort();
        argv[0] = verbs[k];
        argvlen[0] = strlen(verbs[k]);
        for (px_sub *e = c->subs[k]; e; e = e->hh.next, i++) {
            e->pending = 1;
            argv[i] = e->name;
            argvlen[i] = e->len;
        }
        px_resp_command(&b, n + 1, argv, argvlen);
        free(argv);
        free(argvlen);
    }
    px_upstream_write(u, b.data, b.len);
    px_buf_free(&b);
    c->resubscribing = 1;
    c->resub_failed = 0;
    c->markers++;
    px_upstream_marker(u, resubscribed, NULL);
}

void px_client_pinned_lost(px_client *c, struct px_upstream *u)
{
    int t = u != c->pinned ? track_find(c, u, NULL) : -1;
    if (t >= 0) {
        /* one of its other masters' connections: what it read there is
         * watched no more, as when its only connection is lost */
        c->tracks[t] = c->tracks[--c->ntracks];
        if (!(c->state & PX_STATE_TRACKING) || (c->flags & (PX_CLIENT_CLOSING | PX_CLIENT_CLOSE_AFTER_REPLY))) return;
        lose_client(c, "a connection it tracked keys on was lost");
        return;
    }
    /* not c's yet: a px_client_pin whose connect failed at once (its caller
     * gets the error); the one c holds is untouched, and stays c's */
    if (u != c->pinned) return;
    unsigned state = c->state;
    c->pinned = NULL;
    c->state = 0;
    c->nblocking = 0;
    c->markers = 0;
    c->resubscribing = 0;
    c->following = 0;
    int multi_failed = c->multi_failed;
    c->multi_failed = 0;
    if (c->flags & (PX_CLIENT_CLOSING | PX_CLIENT_CLOSE_AFTER_REPLY)) return;
    /* A broken connection may have run part of what was sent (a MULTI's
     * EXEC): nothing can be rebuilt honestly.  Nor can MONITOR's stream or
     * CLIENT TRACKING's invalidations (what it read on the old master is
     * watched no more, and a redirect target's id is gone). */
    if (!u->moved) {
        lose_client(c, "its upstream connection was lost");
        return;
    }
    if (state & (PX_STATE_MONITOR | PX_STATE_TRACKING | PX_STATE_REDIRECT | PX_STATE_OTHER)) {
        lose_client(c, "the master changed under its MONITOR or CLIENT TRACKING");
        return;
    }
    if ((state & (PX_STATE_SUB | PX_STATE_SSUB)) && !(c->nsub + c->npsub + c->nssub)) {
        /* subscribed, but no confirmation in yet: what it asked is not known */
        lose_client(c, "the master changed before its subscriptions were confirmed");
        return;
    }
    if (state & (PX_STATE_MULTI | PX_STATE_WATCH)) {
        /* Nothing it queued ran, and the new master is not in its MULTI: its
         * next commands are queued by hotproxy, and EXEC fails.  A MULTI
         * that got an error itself began nothing the client knows of: only
         * its next EXEC fails, as after a WATCH. */
        int flush, barrier;
        c->tx_lost = 1;
        if (!multi_failed) c->state |= state & PX_STATE_MULTI;
        px_client_multi_reset(c);
        px_client_multi_take(c, NULL, &flush, &barrier);
    }
    if (state & (PX_STATE_SUB | PX_STATE_SSUB)) {
        c->state |= state & (PX_STATE_SUB | PX_STATE_SSUB);
        c->rebuild_pool = u->pool;
        ev_timer_set(&c->rebuild, 0, 0);
        ev_timer_start(c->set->core->loop, &c->rebuild);
    }
    px_log_verbose(&c->set->core->log, "Client id=%llu addr=%s: the master changed under its connection state:%s%s",
                   (unsigned long long)c->id, c->addr, c->tx_lost ? " its transaction fails at EXEC" : "",
                   ev_is_active(&c->rebuild) ? " re-subscribing" : "");
    resume_held(c);
}

void px_client_maybe_unpin(px_client *c)
{
    if (c->ntracks && !(c->state & PX_STATE_TRACKING)) tracks_release(c, 0);
    struct px_upstream *u = c->pinned;
    if (!u || c->state || c->nblocking || c->markers || u->nsent || u->raw) return;
    /* a reply of its still counted in flight (held by the L1's barrier)
     * names u: keep it until that is answered */
    if (px_client_inflight_on(c, u->pool) == u) return;
    c->pinned = NULL;
    px_pool_unpin(u->pool, u);
}

void px_client_drop_pinned(px_client *c)
{
    tracks_release(c, 1);
    px_buf_free(&c->track_cmds);
    c->track_bcast = 0;
    c->track_unconfirmed = 0; /* disowned: their answers are no longer counted */
    c->track_flush_after = 0;
    struct px_upstream *u = c->pinned;
    if (!u) return;
    c->pinned = NULL;
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
        px_pool *pool = px_router_default(c->set->router);
        if (!pool || !(c->pinned = px_client_pin(c, pool, err))) return -1;
    }
    c->state |= PX_STATE_REDIRECT;
    return 0;
}

/* --- Redis Cluster: a tracking client's connection on each master --------- */

/* What Redis sends a tracking client on FLUSHALL: forget everything. */
static const char flush_push[] = ">2\r\n$10\r\ninvalidate\r\n_\r\n";

/* A CLIENT TRACKING command hotproxy sent on one of c's connections was
 * answered (its reply is Redis' to the one c sends on its pinned one):
 * once all are, tracking is in place on every master, and what waited for
 * that goes on (a flush push, c's next CLIENT TRACKING). */
static void track_confirmed(struct px_upstream *u, void *ctx, const char *reply, size_t len)
{
    px_client *c = u->owner; /* NULL once it is no longer c's: then nothing waits */
    (void)ctx;
    (void)reply;
    (void)len;
    if (!c || c->track_unconfirmed <= 0 || --c->track_unconfirmed > 0) return;
    if (c->track_flush_after && !(c->flags & (PX_CLIENT_CLOSING | PX_CLIENT_CLOSE_AFTER_REPLY))) {
        static const char flush[] = ">2\r\n$10\r\ninvalidate\r\n_\r\n";
        if (c->proto == 3) px_client_upstream_frame(c, c->pinned ? c->pinned : u, flush, sizeof(flush) - 1);
    }
    c->track_flush_after = 0;
    resume_held(c);
}

static void track_send(px_client *c, struct px_upstream *u, const char *cmd, size_t len)
{
    c->track_unconfirmed++;
    px_upstream_send_internal(u, cmd, len, track_confirmed, NULL);
}

int px_client_tracks_across(const px_client *c)
{
    return c->pinned && c->state == PX_STATE_TRACKING && px_router_sharded(c->set->router);
}

/* The index in c->tracks of u (or, u NULL, of the one of pool), or -1. */
static int track_find(const px_client *c, const struct px_upstream *u, const px_pool *pool)
{
    for (int i = 0; i < c->ntracks; i++)
        if (u ? c->tracks[i] == u : c->tracks[i]->pool == pool) return i;
    return -1;
}

static void track_add(px_client *c, struct px_upstream *u)
{
    if (c->ntracks == c->ctracks) {
        c->ctracks = c->ctracks ? c->ctracks * 2 : 4;
        c->tracks = realloc(c->tracks, sizeof(*c->tracks) * (size_t)c->ctracks);
        if (!c->tracks) abort();
    }
    c->tracks[c->ntracks++] = u;
}

/* A new connection of c's own on pool, its CLIENT TRACKING commands sent
 * first, one by one (each answers one reply, dropped). */
static struct px_upstream *track_open(px_client *c, px_pool *pool, const char **err)
{
    struct px_upstream *u = px_client_pin(c, pool, err);
    if (!u) return NULL;
    px_upstream_no_reuse(u); /* as any connection that had tracking on */
    for (size_t at = 0; at + 4 <= c->track_cmds.len;) {
        uint32_t n;
        memcpy(&n, c->track_cmds.data + at, 4);
        track_send(c, u, c->track_cmds.data + at + 4, n);
        at += 4 + n;
    }
    return u;
}

/* c's connection of pool, opened if need be, without making it the pinned one. */
static struct px_upstream *track_conn(px_client *c, px_pool *pool)
{
    if (c->pinned->pool == pool) return c->pinned;
    int i = track_find(c, NULL, pool);
    if (i >= 0) return c->tracks[i];
    const char *err = NULL;
    struct px_upstream *u = track_open(c, pool, &err);
    if (u) track_add(c, u);
    return u;
}

struct px_upstream *px_client_track_switch(px_client *c, px_pool *pool, const char **err)
{
    if (c->pinned->pool == pool) return c->pinned;
    struct px_upstream *u;
    int i = track_find(c, NULL, pool);
    if (i >= 0) {
        u = c->tracks[i];
        c->tracks[i] = c->tracks[--c->ntracks];
    } else if (!(u = track_open(c, pool, err))) {
        return NULL;
    }
    track_add(c, c->pinned);
    c->pinned = u;
    return u;
}

/*
 * A MOVED or ASK one of its commands got on its own connection (hotproxy's
 * map was behind: a resharding) is followed as on a shared connection, on
 * its own connection of the master named, so that what it reads there is
 * tracked for it; at most 5 times, as the router does, then the client gets
 * the error.  Returns 1 when r was sent on.
 */
static int track_redirect(px_req *r, struct px_upstream *u, const char *reply, size_t len)
{
    px_client *c = r->client;
    if (!c || len < 5 || reply[0] != '-' || !px_client_tracks_across(c) || r->up.redirects >= 5) return 0;
    int asking = 0;
    px_pool *pool = px_router_redirected(c->set->router, u, reply, len, &asking);
    /* a MOVED tells tracking clients that keys moved (px_clients_keys_moved),
     * which closes c when its BCAST cannot open a connection: c->pinned gone */
    if (!px_client_tracks_across(c)) return 0;
    const char *err = NULL;
    /* a blocking command blocks on c's pinned connection, the one CLIENT
     * UNBLOCK names (client_unblock): it moves there with it */
    struct px_upstream *nu = !pool ? NULL : r->up.blocking ? px_client_track_switch(c, pool, &err) : track_conn(c, pool);
    if (!nu) return 0;
    inflight_done(c, r); /* it counts on nu now */
    inflight_add(c, r, nu);
    if (r->writes) r->inval_pool = nu->pool; /* its L1 barrier waits on the link of where it runs */
    r->up.redirects++;
    if (asking) px_upstream_send_internal(nu, "*1\r\n$6\r\nASKING\r\n", 16, ignore_internal, NULL);
    px_upstream_send(nu, &r->up, r->up.raw, r->up.rawlen);
    return 1;
}

/* BCAST: a connection on every master that serves slots (writes to a
 * prefix anywhere must reach c); -1 with err when one cannot be opened. */
static int track_all(px_client *c, const char **err)
{
    px_router *r = c->set->router;
    px_pool *last = NULL;
    for (int s = 0; s < r->topo->nshards; s++) {
        px_pool *p = px_router_shard_pool(r, s);
        if (!p || p == last) continue;
        last = p;
        if (c->pinned && p != c->pinned->pool && !track_conn(c, p)) {
            *err = "ERR hotproxy: CLIENT TRACKING BCAST needs a connection of this client's own on every master, "
                   "and one could not be opened";
            return -1;
        }
    }
    return 0;
}

/* What a client's CLIENT TRACKING ON commands may hold (each is replayed
 * on every new connection; BCAST prefixes add up): far above any real use. */
#define TRACK_CMDS_MAX (64 * 1024)

int px_client_track_cmd(px_client *c, const char *cmd, size_t len, int on, int bcast, const char **err)
{
    if (on && c->track_cmds.len + 4 + len > TRACK_CMDS_MAX) {
        *err = "ERR hotproxy: too many CLIENT TRACKING ON commands since tracking was turned on (turn it off first)";
        return -1;
    }
    if (!c->pinned) {
        px_pool *pool = px_router_default(c->set->router);
        if (!pool || !(c->pinned = px_client_pin(c, pool, err))) return -1;
    }
    for (int i = 0; i < c->ntracks; i++) track_send(c, c->tracks[i], cmd, len);
    if (!on) { /* OFF: the others go once idle (px_client_maybe_unpin) */
        px_buf_free(&c->track_cmds);
        c->track_bcast = 0;
        return 0;
    }
    uint32_t n = (uint32_t)len;
    px_buf_append(&c->track_cmds, (const char *)&n, 4);
    px_buf_append(&c->track_cmds, cmd, len);
    if (!bcast) return 0;
    c->track_bcast = 1;
    return track_all(c, err);
}

/* Tracking ended: its other connections go, once nothing of its is in
 * flight there (all: now, as the client goes). */
static void tracks_release(px_client *c, int all)
{
    for (int i = 0; i < c->ntracks;) {
        struct px_upstream *u = c->tracks[i];
        if (!all && (u->nsent || px_client_inflight_on(c, u->pool) == u)) {
            i++;
            continue;
        }
        c->tracks[i] = c->tracks[--c->ntracks];
        px_pool_unpin(u->pool, u);
    }
}

void px_clients_keys_moved(struct px_router *r, px_pool *p, void *arg)
{
    px_clients *s = arg;
    (void)r;
    for (px_client *c = s->clients; c; c = c->next) {
        if (!(c->state & PX_STATE_TRACKING) || !c->pinned || (c->flags & (PX_CLIENT_CLOSING | PX_CLIENT_CLOSE_AFTER_REPLY)))
            continue;
        if (c->pinned->pool != p && track_find(c, NULL, p) < 0) continue; /* it read nothing there */
        /* RESP2 without REDIRECT gets no invalidation at all, as from Redis;
         * a resharding moves many slots at once: one flush not yet written
         * (the last bytes of its output) is enough */
        size_t n = sizeof(flush_push) - 1, used = px_buf_used(&c->out);
        int pending = !c->noref && used >= n && !memcmp(px_buf_start(&c->out) + used - n, flush_push, n);
        const char *err = NULL;
        if (c->track_bcast && track_all(c, &err) != 0) {
            lose_client(c, err);
            continue;
        }
        /* a connection just opened on the new master: the flush once its
         * tracking is on (a write there before would be missed) */
        if (c->track_unconfirmed) c->track_flush_after = 1;
        else if (c->proto == 3 && !pending) px_client_upstream_frame(c, c->pinned, flush_push, n);
    }
}

static void process_input(px_client *c)
{
    px_clients *s = c->set;
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
            s->core->stats.protocol_errors++;
            px_log_verbose(&s->core->log, "Client id=%llu addr=%s: %s", (unsigned long long)c->id, c->addr, c->parser.errstr);
            px_buf_clear(&c->in, 0);
            ev_io_stop(s->core->loop, &c->rw);
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
        if (c->parser.argc > 0 && !s->ops->dispatch(s->ops_arg, c, start, c->parser.pos)) {
            /* wait for the in-flight replies; the parse is redone then */
            px_req_parser_reset(&c->parser);
            c->flags |= PX_CLIENT_HOLD;
            stop_reading_unless_blocked(c);
            return;
        }
        px_buf_consume(&c->in, c->parser.pos);
        px_req_parser_reset(&c->parser);
        if (c->ninflight >= s->core->cfg->upstream_max_inflight) {
            c->flags |= PX_CLIENT_PAUSED;
            stop_reading_unless_blocked(c);
        }
    }
    if (c->flags & PX_CLIENT_CLOSE_AFTER_REPLY) ev_io_stop(s->core->loop, &c->rw);
}

px_client *px_clients_find(px_clients *s, uint64_t id)
{
    px_client *c = NULL;
    HASH_FIND(hh, s->clients_by_id, &id, sizeof(id), c);
    return c && !(c->flags & PX_CLIENT_CLOSING) ? c : NULL;
}

void px_clients_flush(px_clients *s)
{
    while (s->write_clients) {
        px_client *c = s->write_clients;
        s->write_clients = c->wnext;
        c->flags &= ~PX_CLIENT_IN_WRITE_LIST;
        px_client_flush(c);
    }
    /* after the writes, which gave memory back */
    evict_for_memory(s);
}

void px_clients_reap(px_clients *s)
{
    while (s->closing) {
        px_client *c = s->closing;
        s->closing = c->cnext;
        /* it may still sit in the write list */
        if (c->flags & PX_CLIENT_IN_WRITE_LIST) {
            px_client **pp = &s->write_clients;
            while (*pp && *pp != c) pp = &(*pp)->wnext;
            if (*pp) *pp = c->wnext;
        }
        client_free(c);
    }
}

void px_clients_free_all(px_clients *s)
{
    while (s->clients) {
        px_client *c = s->clients;
        px_client_close(c, NULL);
        s->closing = NULL;
        client_free(c);
    }
    s->write_clients = NULL;
    while (s->req_free) {
        px_req *r = s->req_free;
        s->req_free = r->next;
        free(r);
    }
}


void px_client_login(px_client *c, const char *user, size_t len)
{
    c->authenticated = 1;
    free(c->user);
    c->user = px_memdup0(user, len);
}

void px_client_set_name(px_client *c, const char *name, size_t len)
{
    free(c->name);
    c->name = len ? px_memdup0(name, len) : NULL;
}

void px_client_set_lib(px_client *c, int which, const char *v, size_t len)
{
    char **slot = which ? &c->lib_ver : &c->lib_name;
    free(*slot);
    *slot = px_memdup0(v, len);
}

void px_client_reset(px_client *c)
{
    px_client_drop_pinned(c);
    px_client_multi_reset(c);
    subs_free(c); /* RESET leaves every channel and pattern */
    ev_timer_stop(c->set->core->loop, &c->rebuild);
    c->tx_lost = 0;
    c->multi_failed = 0;
    c->resubscribing = 0;
    c->following = 0;
    c->track_redir = 0;
    c->state = 0;
    c->nblocking = 0;
    c->markers = 0;
    c->db = 0;
    c->proto = 2;
    c->reply_mode = 0;
    free(c->name);
    c->name = NULL;
    c->authenticated = !px_config_auth_required(c->set->core->cfg);
    free(c->user);
    c->user = strdup("default");
    if (!c->user) abort();
}
