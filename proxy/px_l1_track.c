/*
 * px_l1_track: the L1's tracking links, one per pool.  See px_l1.h.
 *
 * For each pool of the router's set (px_router_listen says which come and
 * go) the L1 keeps a link: a connection of its own, subscribed to
 * __redis__:invalidate, whose CLIENT ID the pool's shared connections name
 * in CLIENT TRACKING on REDIRECT.  Each time a link comes up it gets a new
 * epoch (unique across links); a shared connection may fill only once its
 * CLIENT TRACKING naming that epoch is confirmed, and only while its pool's
 * link is up.  A heartbeat PING each second (HEARTBEAT_EVERY) proves the
 * link alive; the same PINGs serve as barriers (px_l1_track_hold).
 *
 * Losing a pool's link (an error, the heartbeat, the pool re-pointed at
 * another server: px_pool_repoint closes its links) flushes the whole L1:
 * finer bookkeeping (which entry came through which pool) would cost a tag
 * in every entry for an event as rare as a failover.  Filling through that
 * pool stops until its link is back (on the new server, for a re-pointed
 * pool), and CLIENT TRACKING is sent again on each of its connections then.
 * A pool leaving the set closes its link and flushes the L1 too.
 *
 * Redis tracks keys per connection: a shared connection lost with its
 * tracking on takes with it the watch on every key it read, so the L1 is
 * flushed (only for a connection it filled through: the per-connection
 * tracking_used bit).  The flush also refuses every fill ticketed before it,
 * so a fill racing with the loss is not stored.
 *
 * Only a real refusal (an ACL's NOPERM, a command renamed away or unknown)
 * ends tracking (refused, TTL-only), for the whole L1: its entries carry no
 * pool, so the TTL-only bound must hold for all of them.  Any other error
 * (BUSY during a long script, LOADING, a REDIRECT to a link that just died)
 * is a "not now": the link is opened again, or CLIENT TRACKING sent again,
 * with backoff.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <hiredis/hiredis.h>

#include "proxy/px_l1_int.h"

#define HEARTBEAT_EVERY 1.0
#define HEARTBEAT_DEADLINE 3.0
#define RETRY_MIN 0.1 /* backoff of the link and of CLIENT TRACKING after a "not now" */
#define RETRY_MAX 2.0

/* A reply held until its link's pong number `pong` (see px_l1_track_hold). */
typedef struct held {
    struct held *next;
    px_req *r;
    uint64_t pong;
    size_t len;
    char reply[];
} held;

typedef struct px_l1_link {
    struct px_l1_link *next;        /* the L1's list */
    px_l1 *l1;
    px_pool *pool;
    px_upstream *conn;              /* NULL while closed */
    int ready;                      /* subscribed: the pool may fill */
    uint64_t epoch;                 /* given when it last came up */
    long long id;                   /* its CLIENT ID, asked by the L1 itself (0: not known yet) */
    double last_pong, next_ping, next_attempt;
    double backoff;                 /* before the next attempt to open it */
    double retrack_at, retrack_backoff; /* CLIENT TRACKING again where Redis said "not now" */
    uint64_t pings, pongs;          /* on the current connection; pongs come in PING order */
    held *bhead, *btail;            /* held replies, oldest (lowest pong) first */
} tlink;

static void track_new(px_upstream *u, void *arg);

/* The link of the pool a live connection belongs to (the pool's handshake
 * hook is the L1's, with the link as its argument), or NULL. */
static tlink *link_of_pool(const px_pool *p)
{
    return p->on_handshake == track_new ? p->handshake_arg : NULL;
}

/* By the pool's address alone: p may be a pool that has left the set. */
static tlink *link_find(px_l1 *l, const px_pool *p)
{
    tlink *k = l->links;
    while (k && k->pool != p) k = k->next;
    return k;
}

int px_l1_track_can_fill(px_l1 *l, px_upstream *u)
{
    if (!l) return 0;
    if (px_l1_ttl_only(l)) return 1;
    const tlink *k = link_of_pool(u->pool);
    return k && k->ready && u->tracking_epoch == k->epoch && u->tracking_epoch != 0;
}

/* Answer the held replies whose PING has been answered (all: every one). */
static void release_barriers(tlink *k, int all)
{
    while (k->bhead && (all || k->bhead->pong <= k->pongs)) {
        held *b = k->bhead;
        k->bhead = b->next;
        if (!k->bhead) k->btail = NULL;
        px_client_reply(b->r, b->reply, b->len);
        free(b);
    }
}

/*
 * An error reply that means Redis will never do it for hotproxy (an ACL's
 * NOPERM, CLIENT renamed away, a Redis without CLIENT TRACKING), as opposed
 * to "not now" (BUSY during a script, LOADING, a REDIRECT naming a link that
 * just died, a connection lost): only the former may end tracking.
 */
static int is_refusal(const char *reply, size_t len)
{
    static const char *const refusals[] = {"-NOPERM", "-ERR unknown command", "-ERR unknown subcommand"};
    for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++) {
        size_t n = strlen(refusals[i]);
        if (len >= n && !strncasecmp(reply, refusals[i], n)) return 1;
    }
    return 0;
}

static void refuse(px_l1 *l, const char *what, const char *reply, size_t len)
{
    if (l->refused) return;
    px_log_warning(&l->core->log, "L1: Redis refused %s (%.*s); the L1 falls back to TTL-only", what,
                   (int)(len > 200 ? 200 : len - 2), reply);
    l->refused = 1;
    int held_any = 0;
    for (tlink *k = l->links; k; k = k->next) held_any |= k->bhead != NULL;
    if (held_any) {
        /* held writes wait for tracking no more: what they wrote is dropped */
        l1_flush(l->cache);
        for (tlink *k = l->links; k; k = k->next) release_barriers(k, 1);
    }
}

static double backoff(double *b)
{
    *b = *b < RETRY_MIN ? RETRY_MIN : *b * 2;
    if (*b > RETRY_MAX) *b = RETRY_MAX;
    return *b;
}

static void tracking_reply(px_upstream *u, void *ctx, const char *reply, size_t len)
{
    tlink *k = link_of_pool(u->pool);
    uint64_t epoch = (uint64_t)(uintptr_t)ctx;
    if (!k || u->state != PX_UP_READY) return;
    px_l1 *l = k->l1;
    if (len >= 3 && !memcmp(reply, "+OK", 3)) {
        u->tracking_epoch = epoch;
        k->retrack_backoff = 0;
        return;
    }
    if (is_refusal(reply, len)) {
        refuse(l, "CLIENT TRACKING", reply, len);
        return;
    }
    /* Not now: this connection fills nothing until a later try says OK. */
    px_log_verbose(&l->core->log, "L1: CLIENT TRACKING not accepted now (%.*s); trying again",
                   (int)(len > 200 ? 200 : len - 2), reply);
    if (!k->retrack_at) k->retrack_at = px_now(l->core) + backoff(&k->retrack_backoff);
}

/* CLIENT TRACKING on u, redirected to its pool's link (when that is up). */
static void track_conn(tlink *k, px_upstream *u)
{
    px_l1 *l = k->l1;
    u->tracking_epoch = 0;
    u->tracking_used = 0;
    if (px_l1_ttl_only(l) || !k->ready || !k->conn || !k->id) return;
    char cmd[128], id[24];
    int idn = snprintf(id, sizeof(id), "%lld", k->id);
    int n = snprintf(cmd, sizeof(cmd), "*5\r\n$6\r\nCLIENT\r\n$8\r\nTRACKING\r\n$2\r\non\r\n$8\r\nREDIRECT\r\n$%d\r\n%s\r\n",
                     idn, id);
    px_upstream_send_internal(u, cmd, (size_t)n, tracking_reply, (void *)(uintptr_t)k->epoch);
}

/* The pool's handshake hook: a new shared connection fills the L1, so Redis
 * tracks what it reads. */
static void track_new(px_upstream *u, void *arg) { track_conn(arg, u); }

static void track_each(px_upstream *u, void *arg)
{
    if (u->state != PX_UP_DOWN) track_conn(arg, u);
}

/* The connections a "not now" left without tracking (the others keep theirs). */
static void retrack_each(px_upstream *u, void *arg)
{
    tlink *k = arg;
    if (u->state == PX_UP_READY && u->tracking_epoch != k->epoch) track_conn(k, u);
}

/* The pool lost a shared connection whose tracking was on (see the top). */
static void tracking_lost(px_upstream *u, uint64_t epoch, void *arg)
{
    tlink *k = arg;
    px_l1 *l = k->l1;
    int used = u->tracking_used;
    u->tracking_used = 0;
    /* An older epoch: the link's loss flushed the L1 since, and the
     * connection filled nothing after it. */
    if (!used || epoch != k->epoch || !k->ready) return;
    px_log_notice(&l->core->log, "L1: a connection with tracking on was lost (%s): L1 flushed", u->errstr);
    l1_flush(l->cache);
    l->st.l1_flushes_connection_lost++;
}

static int str_is(const redisReply *r, const char *s)
{
    return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) && r->len == strlen(s) &&
           !strncasecmp(r->str, s, r->len);
}

static void link_ping(tlink *k)
{
    static const char ping[] = "*1\r\n$4\r\nPING\r\n";
    px_upstream_write(k->conn, ping, sizeof(ping) - 1);
    k->pings++;
}

int px_l1_track_hold(px_l1 *l, px_pool *p, px_req *r, const char *reply, size_t len)
{
    tlink *k = p ? link_find(l, p) : NULL;
    if (!k || !k->ready || !k->conn) return 0;
    held *b = malloc(sizeof(*b) + (len ? len : 1));
    if (!b) abort();
    /* A PING still in our buffer reaches Redis after this reply left it, so
     * it serves as well: replies read together share one round trip. */
    if (!px_buf_used(&k->conn->out) || !k->pings) link_ping(k);
    b->next = NULL;
    b->r = r;
    b->pong = k->pings;
    b->len = len;
    memcpy(b->reply, reply, len);
    if (k->btail) k->btail->next = b;
    else k->bhead = b;
    k->btail = b;
    return 1;
}

/* The link failed for a reason that may pass: open it again later. */
static void link_not_now(tlink *k, px_upstream *u, const char *what, const char *reply, size_t len)
{
    px_log_notice(&k->l1->core->log, "L1: the invalidation link to %s got an error (%s: %.*s); opening it again",
                  k->pool->name, what, (int)(len > 200 ? 200 : len - 2), reply);
    px_pool_close(u->pool, u, "invalidation link error");
}

static void link_id_reply(px_upstream *u, void *ctx, const char *reply, size_t len)
{
    tlink *k = ctx;
    long long id;
    if (u != k->conn || u->state != PX_UP_READY) return; /* closed meanwhile */
    if (len > 3 && reply[0] == ':' && px_string2ll(reply + 1, len - 3, &id)) {
        k->id = id;
        return;
    }
    if (is_refusal(reply, len)) {
        /* no id, no REDIRECT can name this link */
        refuse(k->l1, "CLIENT ID on the invalidation link", reply, len);
        px_pool_close(u->pool, u, "no client id for the invalidation link");
        return;
    }
    link_not_now(k, u, "CLIENT ID", reply, len);
}

static void link_frame(px_upstream *u, void *ctx, const char *frame, size_t len)
{
    tlink *k = ctx;
    px_l1 *l = k->l1;
    if (len && frame[0] == '-') {
        if (is_refusal(frame, len)) {
            /* SUBSCRIBE refused (an ACL without channel rights, say) */
            refuse(l, "the invalidation link", frame, len);
            px_pool_close(u->pool, u, "invalidation link refused");
        } else {
            link_not_now(k, u, "SUBSCRIBE or PING", frame, len);
        }
        return;
    }
    redisReply *m = px_reply_decode(frame, len);
    if (!m) return;
    if (m->type == REDIS_REPLY_ARRAY && m->elements >= 2) {
        if (str_is(m->element[0], "pong")) {
            /* a fresh clock: after a long iteration the loop's own would
             * date the pong too early, and the heartbeat could time out */
            k->last_pong = px_now_fresh(l->core);
            k->pongs++;
            release_barriers(k, 0);
        } else if (str_is(m->element[0], "subscribe") && !k->id) {
            /* cannot happen (CLIENT ID is answered first, or the link closed) */
            freeReplyObject(m);
            link_not_now(k, u, "SUBSCRIBE", "-ERR no client id yet\r\n", 23);
            return;
        } else if (str_is(m->element[0], "subscribe")) {
            k->ready = 1;
            k->epoch = ++l->epochs;
            k->last_pong = px_now_fresh(l->core);
            k->backoff = 0;
            px_log_notice(&l->core->log, "L1: invalidation link to %s up (Redis client id %lld)", k->pool->name, k->id);
            px_pool_each_shared(k->pool, track_each, k);
        } else if (str_is(m->element[0], "message") && m->elements == 3) {
            redisReply *keys = m->element[2];
            if (keys->type == REDIS_REPLY_ARRAY) {
                for (size_t i = 0; i < keys->elements; i++)
                    if (keys->element[i]->type == REDIS_REPLY_STRING) {
                        l1_invalidate(l->cache, keys->element[i]->str, keys->element[i]->len);
                        l->st.l1_invalidations_tracking++;
                    }
            } else if (keys->type == REDIS_REPLY_NIL) {
                l1_flush(l->cache); /* FLUSHALL / FLUSHDB upstream */
                l->st.l1_flushes_tracking++;
            } else if (keys->type == REDIS_REPLY_STRING) {
                l1_invalidate(l->cache, keys->str, keys->len);
                l->st.l1_invalidations_tracking++;
            }
        }
    }
    freeReplyObject(m);
}

static void link_lost(px_upstream *u, void *ctx)
{
    tlink *k = ctx;
    px_l1 *l = k->l1;
    if (k->ready)
        px_log_warning(&l->core->log, "L1: invalidation link to %s lost (%s): L1 flushed, filling through it stops until it is back",
                       k->pool->name, u->errstr);
    k->conn = NULL;
    k->ready = 0;
    k->id = 0;
    l1_flush(l->cache);
    l->st.l1_flushes_link_lost++;
    /* the flush covers what the held writes touched: they may go */
    release_barriers(k, 1);
    k->pings = k->pongs = 0;
    k->next_attempt = px_now(l->core) + backoff(&k->backoff);
}

static void link_open(tlink *k)
{
    px_l1 *l = k->l1;
    k->conn = px_pool_open_link(k->pool, link_frame, link_lost, k);
    if (!k->conn) {
        k->next_attempt = px_now(l->core) + backoff(&k->backoff);
        return;
    }
    /* The L1 asks the id itself: it must tell "not now" from "never". */
    static const char id[] = "*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n";
    static const char sub[] = "*2\r\n$9\r\nSUBSCRIBE\r\n$20\r\n__redis__:invalidate\r\n";
    k->conn->raw = 1;
    px_upstream_send_internal(k->conn, id, sizeof(id) - 1, link_id_reply, k);
    px_upstream_write(k->conn, sub, sizeof(sub) - 1);
}

static void link_cron(tlink *k, double now)
{
    px_l1 *l = k->l1;
    if (!k->conn) {
        if (now >= k->next_attempt) link_open(k);
        return;
    }
    if (!k->ready) return;
    if (now - k->last_pong > HEARTBEAT_DEADLINE) {
        px_pool_close(k->pool, k->conn, "invalidation link heartbeat timeout");
        return;
    }
    if (k->retrack_at && now >= k->retrack_at) {
        k->retrack_at = 0;
        px_pool_each_shared(k->pool, retrack_each, k);
    }
    if (now >= k->next_ping) {
        link_ping(k);
        k->next_ping = px_now_fresh(l->core) + HEARTBEAT_EVERY;
    }
}

void px_l1_track_cron(px_l1 *l, double now)
{
    if (px_l1_ttl_only(l) || l->core->shutting_down) return;
    /* a link's cron may close it (never free it: only a pool leaving does) */
    for (tlink *k = l->links; k && !l->refused; k = k->next) link_cron(k, now);
}

void px_l1_track_pool(px_router *r, px_pool *p, int event, void *arg)
{
    px_l1 *l = arg;
    (void)r;
    if (event == PX_POOL_KEYS_MOVED) {
        /* keys read through p are now another pool's: p's invalidations no
         * longer cover them, and the new owner's never did (entries do not
         * record their pool: the whole L1) */
        l1_flush(l->cache);
        l->st.l1_flushes_slot_moved++;
        return;
    }
    if (event == PX_POOL_ADDED) {
        tlink *k = calloc(1, sizeof(*k));
        if (!k) abort();
        k->l1 = l;
        k->pool = p;
        tlink **tail = &l->links;
        while (*tail) tail = &(*tail)->next;
        *tail = k;
        /* before any of its connections can track (none does before its
         * link is up: the cron opens it) */
        px_pool_on_tracking_lost(p, tracking_lost, k);
        px_pool_on_handshake(p, track_new, k);
        return;
    }
    tlink *k = link_find(l, p);
    if (!k) return;
    /* its link's end flushes (link_lost); without one, Redis stops
     * tracking for the L1 there all the same */
    if (k->conn) px_pool_close(p, k->conn, "pool removed");
    px_pool_on_tracking_lost(p, NULL, NULL);
    px_pool_on_handshake(p, NULL, NULL);
    l1_flush(l->cache);
    release_barriers(k, 1);
    tlink **pp = &l->links;
    while (*pp != k) pp = &(*pp)->next;
    *pp = k->next;
    free(k);
}

void px_l1_track_state(px_l1 *l, const char **state, int64_t *link_id)
{
    const px_config *cfg = l->core->cfg;
    int up = l->links != NULL;
    for (tlink *k = l->links; k; k = k->next) up &= k->ready;
    *state = !cfg->l1_tracking ? "off" : l->refused ? "refused" : up ? "up" : "down";
    px_pool *d = px_router_default(l->router);
    tlink *k = d ? link_find(l, d) : NULL;
    *link_id = k && k->conn ? k->id : -1;
}

void px_l1_track_free(px_l1 *l)
{
    while (l->links) {
        tlink *k = l->links;
        l->links = k->next;
        release_barriers(k, 1); /* their clients have gone: the replies are dropped */
        free(k);
    }
}
