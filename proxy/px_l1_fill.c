/*
 * px_l1_fill: the L1's fills.  See px_l1.h and px_l1_int.h.
 *
 * A fill is the command and a PTTL of its key, pipelined on one shared
 * connection; every reader of the same cache key that misses meanwhile
 * waits on it (one upstream fetch for any number of clients).  Its reply
 * is stored once its PTTL is in, for as long as cache/'s l1_life_of says,
 * under the ticket it took before it was sent, so a write or an
 * invalidation that raced with it refuses the store.  MGET is split: each
 * key is answered from its GET entry, and one MGET fetches the misses.
 */
#include <stdlib.h>
#include <string.h>

#include <uthash.h>

#include "proxy/px_l1_int.h"

typedef struct px_l1_flight {
    UT_hash_handle hh;
    px_l1 *l1;
    px_upstream *u;     /* where the fill runs: its waiters are in flight there */
    char *key;          /* [u32 glen][group][variant] */
    size_t klen, glen;
    uint64_t ticket;
    uint64_t sent_ms;   /* when the command went upstream: the entry's life counts from here */
    px_req **waiters;
    int nwaiters, cap;
    char *reply;        /* kept for the store, once the PTTL is in */
    size_t reply_len;
    int in_table;
    int replied;        /* the command's reply is in; the PTTL is still coming */
    int nbefore;        /* waiters[0..nbefore) came before the fill was sent */
    char *cmd;          /* the command's bytes, to fetch again for late waiters */
    size_t cmdlen;
    const px_command *row; /* its row in the command table: what the entry may turn into */
    px_policy pol;      /* the rule when the fill started: a reload changes later fills only */
} flight;

/* ---- keys ---- */

void px_l1_fill_variant(px_client *c, const px_command *cmd, int with_args, px_buf *b)
{
    const char *const *argv;
    const size_t *argvlen;
    int argc = px_client_args(c, &argv, &argvlen);
    uint8_t proto = (uint8_t)px_client_proto(c);
    px_buf_append(b, &proto, 1);
    px_l1_put_u32(b, (uint32_t)px_client_db(c));
    px_buf_append(b, cmd->name, strlen(cmd->name) + 1);
    for (int i = 2; with_args && i < argc; i++) {
        px_l1_put_u32(b, (uint32_t)argvlen[i]);
        px_buf_append(b, argv[i], argvlen[i]);
    }
}

static flight *flight_find(px_l1 *l, const char *key, size_t klen)
{
    flight *f = NULL;
    HASH_FIND(hh, l->flights, key, klen, f);
    return f;
}

int px_l1_fill_running(px_l1 *l, const px_buf *key) { return flight_find(l, key->data, key->len) != NULL; }

static void flight_unlist(px_l1 *l, flight *f)
{
    if (f->in_table) {
        HASH_DEL(l->flights, f);
        f->in_table = 0;
    }
}

static void flight_free(flight *f)
{
    free(f->cmd);
    free(f->waiters);
    free(f->reply);
    free(f->key);
    free(f);
}

void px_l1_fill_forget(px_l1 *l)
{
    flight *f, *tmp;
    HASH_ITER(hh, l->flights, f, tmp) {
        HASH_DEL(l->flights, f);
        f->in_table = 0;
        /* its requests are answered (with errors) by the pool's teardown */
    }
}

static void add_waiter(flight *f, px_client *c, px_req *r, px_upstream *u)
{
    if (f->nwaiters == f->cap) {
        f->cap = f->cap ? f->cap * 2 : 4;
        f->waiters = realloc(f->waiters, sizeof(*f->waiters) * (size_t)f->cap);
        if (!f->waiters) abort();
    }
    f->waiters[f->nwaiters++] = r;
    /* in flight like a forwarded request: a client that leaves detaches it */
    px_client_await(c, r, u);
}

/*
 * The reply to a fill: the waiters that came before it was sent get it now;
 * the store waits for PTTL.  A waiter that came after the send may have come
 * after Redis ran the read, and after the key expired: it waits for the PTTL
 * (right behind), and fill_ttl judges whether the value still holds for it.
 */
static void fill_reply(px_upstream *u, void *ctx, const char *reply, size_t len)
{
    flight *f = ctx;
    (void)u;
    /* It stays findable until its PTTL is in: readers arriving meanwhile wait
     * for that, instead of each starting a fill (fill_ttl answers them). */
    f->replied = 1;
    size_t keep = (size_t)f->pol.max_entry_size > (1u << 20) ? (size_t)f->pol.max_entry_size : (1u << 20);
    if (l1_reply_cacheable(reply, len) && len <= keep) {
        f->reply = malloc(len);
        if (!f->reply) abort();
        memcpy(f->reply, reply, len);
        f->reply_len = len;
    }
    /* a reply not kept (an error, too large) answers everyone: nothing to judge it by later */
    int now = f->reply ? f->nbefore : f->nwaiters;
    /* (an error may be a Cluster redirect: the router sends each waiter on) */
    for (int i = 0; i < now; i++) px_client_reply_via(f->waiters[i], u, f->cmd, f->cmdlen, reply, len);
    if (f->nwaiters > now) memmove(f->waiters, f->waiters + now, sizeof(*f->waiters) * (size_t)(f->nwaiters - now));
    f->nwaiters -= now;
    f->nbefore = 0;
}

/*
 * The null a read whose entry ends with its key turns into at the key's
 * expiry (l1_store_then), in the variant's protocol: for reads that answer
 * a missing key with the null reply (PX_F_NIL in row, the read's table
 * row); NULL for others.
 */
static const char *then_reply(const px_command *row, const char *variant, size_t vlen, size_t *len)
{
    /* variant: [u8 protocol][u32 db][command name NUL][arguments] */
    if (!row || !(row->flags & PX_F_NIL) || vlen < 1) return NULL;
    return l1_null_reply(variant[0], len);
}

/*
 * Store a fetched reply for (group, variant), given its key's PTTL and when
 * the fill was sent (l1_life_of says how long, and why from the send).
 * With tracking off or refused, nothing reports a write made elsewhere, so
 * the entry and the null it may turn into keep to the TTL-only bound.
 */
static int store_fill(px_l1 *l, const px_command *row, const px_policy *pol, const char *group, size_t glen,
                      const char *variant, size_t vlen, const char *reply, size_t len, uint64_t ticket, long long pttl,
                      uint64_t sent_ms, uint64_t *kept)
{
    size_t nlen = 0;
    const char *null = then_reply(row, variant, vlen, &nlen);
    l1_fill in = {
        .sent_ms = sent_ms,
        .pttl = pttl,
        .absent = l1_reply_absent(reply, len),
        .has_then = null != NULL,
        .bounded = px_l1_ttl_only(l),
        .ttl_ms = (uint64_t)pol->ttl,
        .jitter_pct = (unsigned)pol->jitter,
        .negative_ttl_ms = (uint64_t)pol->negative_ttl,
    };
    l1_life life;
    l1_life_of(l->cache, &in, &life);
    /* Stored as of the send, so the entry keeps the lifetime it was given
     * (early refresh reads it) and ends where l1_life_of says. */
    *kept = life.expires_ms - sent_ms;
    uint64_t end = life.then_end_ms > life.expires_ms ? life.then_end_ms : life.expires_ms;
    if (end <= px_l1_now_ms(l)) return 0; /* over already: the round trip took longer than its life */
    if (!life.with_key) return l1_store(l->cache, group, glen, variant, vlen, reply, len, ticket, *kept, sent_ms);
    l1_then then = {NULL, 0, 0};
    if (life.then_end_ms) then = (l1_then){null, nlen, life.then_end_ms - life.expires_ms};
    return l1_store_then(l->cache, group, glen, variant, vlen, reply, len, ticket, *kept, sent_ms, &then);
}

static void send_fill(px_l1 *l, flight *f);

/* A flight for key (its [u32 glen][group][variant]), fetching cmd on u,
 * ticketed now; not listed or sent yet. */
static flight *flight_new(px_l1 *l, px_upstream *u, const char *key, size_t klen, size_t glen, const px_policy *pol,
                          const px_command *row, const char *cmd, size_t cmdlen)
{
    flight *f = calloc(1, sizeof(*f));
    if (!f) abort();
    f->l1 = l;
    f->u = u;
    f->key = malloc(klen);
    f->cmd = malloc(cmdlen ? cmdlen : 1);
    if (!f->key || !f->cmd) abort();
    memcpy(f->key, key, klen);
    memcpy(f->cmd, cmd, cmdlen);
    f->klen = klen;
    f->glen = glen;
    f->cmdlen = cmdlen;
    f->row = row;
    f->pol = *pol;
    f->ticket = l1_ticket(l->cache, key + 4, glen);
    return f;
}

static void fill_ttl(px_upstream *u, void *ctx, const char *reply, size_t len)
{
    flight *f = ctx;
    px_l1 *l = f->l1;
    long long pttl = -3;
    (void)u;
    flight_unlist(l, f);
    int have_pttl = len > 3 && reply[0] == ':' && px_string2ll(reply + 1, len - 3, &pttl);
    if (f->nwaiters) {
        /* Readers that came after the send: the fetched value still holds
         * if the key was still there when PTTL ran with no expiry (-1), or
         * with one that has not come yet by a fresh clock (sent + PTTL is a
         * moment the key is known to be there, see l1_life_of), or the reply
         * says the key is absent and it is (-2); otherwise fetch again for
         * them, once. */
        int holds = f->reply && have_pttl &&
                    (pttl == -1 || (pttl >= 0 && px_l1_fresh_ms(l) < f->sent_ms + (uint64_t)pttl) ||
                     (pttl == -2 && l1_reply_absent(f->reply, f->reply_len)));
        if (holds) {
            for (int i = 0; i < f->nwaiters; i++) px_client_reply(f->waiters[i], f->reply, f->reply_len);
            f->nwaiters = 0;
        } else if (u->state == PX_UP_READY) {
            flight *g = flight_new(l, f->u, f->key, f->klen, f->glen, &f->pol, f->row, f->cmd, f->cmdlen);
            g->waiters = f->waiters; /* now g's */
            g->nwaiters = f->nwaiters;
            g->cap = f->cap;
            f->waiters = NULL;
            f->nwaiters = f->cap = 0;
            send_fill(l, g);
        } else {
            for (int i = 0; i < f->nwaiters; i++) px_client_reply_error(f->waiters[i], "ERR %s", u->errstr);
            f->nwaiters = 0;
        }
    }
    if (f->reply && f->reply_len <= (size_t)f->pol.max_entry_size && have_pttl) {
        uint32_t glen;
        memcpy(&glen, f->key, 4);
        const char *variant = f->key + 4 + glen;
        size_t vlen = f->klen - 4 - glen;
        uint64_t kept;
        int stored = store_fill(l, f->row, &f->pol, f->key + 4, glen, variant, vlen, f->reply, f->reply_len, f->ticket, pttl,
                                f->sent_ms, &kept);
        px_log_debug(&l->core->log, "L1 fill '%.*s': pttl %lld, kept %llu ms: %s", (int)(glen > 64 ? 64 : glen),
                     f->key + 4, pttl, (unsigned long long)kept, stored ? "stored" : "not stored");
    }
    flight_free(f);
}

/* A key's PTTL, asked right behind the command that reads it. */
static void send_pttl(px_upstream *u, const char *key, size_t len, px_internal_cb cb, void *ctx)
{
    const char *argv[] = {"PTTL", key};
    const size_t lens[] = {4, len};
    px_buf b = {0};
    px_resp_command(&b, 2, argv, lens);
    px_upstream_send_internal(u, b.data, b.len, cb, ctx);
    px_buf_free(&b);
}

/* List f and send its command, then its key's PTTL, back to back on f->u. */
static void send_fill(px_l1 *l, flight *f)
{
    flight *old = flight_find(l, f->key, f->klen);
    if (old) flight_unlist(l, old);
    HASH_ADD_KEYPTR(hh, l->flights, f->key, f->klen, f);
    f->in_table = 1;
    l->st.l1_fills++;
    l->core->stats.commands_forwarded++;
    f->u->tracking_used = 1;
    f->sent_ms = px_l1_now_ms(l); /* the loop's clock: no later than the write that sends it */
    f->nbefore = f->nwaiters;
    px_upstream_send_internal(f->u, f->cmd, f->cmdlen, fill_reply, f);
    send_pttl(f->u, f->key + 4, f->glen, fill_ttl, f);
}

void px_l1_fill_start(px_l1 *l, px_client *c, px_req *r, px_upstream *u, const px_buf *key, size_t glen,
                      const px_policy *pol, const px_command *row, const char *raw, size_t rawlen)
{
    flight *f = flight_new(l, u, key->data, key->len, glen, pol, row, raw, rawlen);
    if (r) add_waiter(f, c, r, u);
    send_fill(l, f);
}

int px_l1_fill_wait(px_l1 *l, px_client *c, px_req *r, px_upstream *u, const px_buf *key, size_t glen,
                    const px_policy *pol, const px_command *row, const char *raw, size_t rawlen)
{
    flight *f = flight_find(l, key->data, key->len);
    if (f && l1_is_stale(l->cache, key->data + 4, glen, f->ticket)) {
        flight_unlist(l, f); /* a write came after it started: it serves only who it has */
        f = NULL;
    }
    if (f) {
        /* A client with commands in flight on another connection reads
         * there, so its commands reach Redis in its order. */
        px_upstream *on = px_client_inflight_on(c, f->u->pool);
        if (f->nwaiters >= l->core->cfg->l1_max_waiters || (on && on != f->u)) return 0;
        l->st.l1_coalesced++;
        px_req_path(r, PX_PATH_COALESCED);
        add_waiter(f, c, r, f->u);
        return 1;
    }
    px_l1_fill_start(l, c, r, u, key, glen, pol, row, raw, rawlen);
    return 1;
}

/* ---- MGET: each key's GET entry, one fetch for the misses ---- */

typedef struct mfill {
    px_l1 *l1;
    px_req *r;
    int n;                  /* keys */
    l1_value **hits;        /* per key: the cached GET reply, or NULL */
    int nmiss, ttls_seen;
    size_t *miss_off;       /* per miss: where its [u32 len][key] starts in keys (every step is linear in n) */
    px_buf keys;            /* [u32 len][key] per miss */
    px_buf variant;         /* the GET variant for this client's db and protocol */
    const px_command *get;  /* GET's row (px_command_element of MGET's) */
    char **got;             /* per miss: the element Redis sent */
    size_t *gotlen;
    uint64_t ticket;
    uint64_t sent_ms;       /* when the MGET went upstream: entries' lives count from here */
} mfill;

static void mfill_free(mfill *m)
{
    for (int i = 0; i < m->n; i++) l1_value_put(m->hits[i]);
    for (int j = 0; j < m->nmiss; j++) free(m->got ? m->got[j] : NULL);
    free(m->hits);
    free(m->miss_off);
    free(m->got);
    free(m->gotlen);
    px_buf_free(&m->keys);
    px_buf_free(&m->variant);
    free(m);
}

static const char *miss_key(const mfill *m, int j, uint32_t *len)
{
    size_t off = m->miss_off[j];
    memcpy(len, m->keys.data + off, 4);
    return m->keys.data + off + 4;
}

static void mget_reply(px_upstream *u, void *ctx, const char *reply, size_t len)
{
    mfill *m = ctx;
    long long count;
    const char *nl = memchr(reply, '\n', len);
    (void)u;
    if (reply[0] != '*' || !nl || !px_string2ll(reply + 1, (size_t)(nl - reply - 2), &count) || count != m->nmiss) {
        px_client_reply(m->r, reply, len); /* an error: the client gets it as Redis said it */
        m->r = NULL;
        return;
    }
    m->got = calloc((size_t)m->nmiss, sizeof(char *));
    m->gotlen = calloc((size_t)m->nmiss, sizeof(size_t));
    if (!m->got || !m->gotlen) abort();
    size_t pos = (size_t)(nl - reply) + 1;
    for (int j = 0; j < m->nmiss; j++) {
        size_t elen = px_reply_len(reply + pos, len - pos);
        if (!elen) break;
        m->got[j] = malloc(elen);
        if (!m->got[j]) abort();
        memcpy(m->got[j], reply + pos, elen);
        m->gotlen[j] = elen;
        pos += elen;
    }
    px_buf out = {0};
    px_buf_appendf(&out, "*%d\r\n", m->n);
    for (int i = 0, j = 0; i < m->n; i++) {
        if (m->hits[i]) {
            px_buf_append(&out, m->hits[i]->data, m->hits[i]->len);
        } else {
            px_buf_append(&out, m->got[j] ? m->got[j] : "$-1\r\n", m->got[j] ? m->gotlen[j] : 5);
            j++;
        }
    }
    px_client_reply(m->r, out.data, out.len);
    m->r = NULL;
    px_buf_free(&out);
}

static void mget_ttl(px_upstream *u, void *ctx, const char *reply, size_t len)
{
    mfill *m = ctx;
    px_l1 *l = m->l1;
    const px_config *cfg = l->core->cfg;
    int j = m->ttls_seen++;
    long long pttl;
    (void)u;
    if (m->got && m->got[j] && len > 3 && reply[0] == ':' && px_string2ll(reply + 1, len - 3, &pttl)) {
        uint32_t kl;
        const char *k = miss_key(m, j, &kl);
        px_policy pol;
        px_config_policy(cfg, k, kl, &pol);
        /* MGET's nil says "absent or not a string"; GET says WRONGTYPE for
         * the latter.  So a nil is a GET's reply only when PTTL says the key
         * does not exist (-2): then it is kept, as a GET's nil would be. */
        int nil_not_absent = l1_reply_absent(m->got[j], m->gotlen[j]) && pttl != -2;
        if (pol.cache && !nil_not_absent && m->gotlen[j] <= (size_t)pol.max_entry_size &&
            l1_reply_cacheable(m->got[j], m->gotlen[j])) {
            uint64_t kept;
            store_fill(l, m->get, &pol, k, kl, m->variant.data, m->variant.len, m->got[j], m->gotlen[j], m->ticket, pttl,
                       m->sent_ms, &kept);
        }
    }
    if (m->ttls_seen == m->nmiss) {
        if (m->r) px_client_reply(m->r, "-ERR upstream connection lost\r\n", 31);
        mfill_free(m);
    }
}

int px_l1_multiget_hit(px_l1 *l, px_client *c, const px_command *mget, const char *key, size_t len, px_buf *out)
{
    const px_command *get = px_command_element(mget);
    if (!l || !get || px_client_writes(c) > 0) return 0;
    px_buf variant = {0};
    px_l1_fill_variant(c, get, 0, &variant);
    l1_value *v = l1_get_fresh(l->cache, key, len, variant.data, variant.len, px_l1_now_ms(l), px_l1_fresh_ms, l, NULL);
    px_buf_free(&variant);
    if (!v) return 0;
    px_buf_append(out, v->data, v->len);
    l1_value_put(v);
    return 1;
}

int px_l1_fill_multiget(px_l1 *l, px_client *c, px_req *r, px_upstream *u)
{
    const char *const *argv;
    const size_t *argvlen;
    int n = px_client_args(c, &argv, &argvlen) - 1;
    mfill *m = calloc(1, sizeof(*m));
    if (!m) abort();
    m->l1 = l;
    m->n = n;
    m->hits = calloc((size_t)n, sizeof(*m->hits));
    m->miss_off = calloc((size_t)n, sizeof(size_t));
    if (!m->hits || !m->miss_off) abort();
    m->get = px_command_element(r->cmd);
    px_l1_fill_variant(c, m->get, 0, &m->variant);
    uint64_t now = px_l1_now_ms(l);
    for (int i = 0; i < n; i++) {
        m->hits[i] = l1_get_fresh(l->cache, argv[i + 1], argvlen[i + 1], m->variant.data, m->variant.len, now,
                                  px_l1_fresh_ms, l, NULL);
        if (!m->hits[i]) {
            m->miss_off[m->nmiss++] = m->keys.len;
            px_l1_record_key(&m->keys, argv[i + 1], argvlen[i + 1]);
        }
    }
    if (m->nmiss == 0) {
        px_buf out = {0};
        px_buf_appendf(&out, "*%d\r\n", n);
        for (int i = 0; i < n; i++) px_buf_append(&out, m->hits[i]->data, m->hits[i]->len);
        px_req_path(r, PX_PATH_L1_HIT);
        px_client_reply(r, out.data, out.len);
        px_buf_free(&out);
        mfill_free(m);
        return 1;
    }
    if (!px_l1_track_can_fill(l, u)) {
        mfill_free(m);
        return 0;
    }
    m->r = r;
    m->ticket = l1_ticket(l->cache, NULL, 0);
    u->tracking_used = 1;
    m->sent_ms = px_l1_now_ms(l); /* no later than the write that sends it */
    px_client_await(c, r, u);
    l->st.l1_fills++;
    l->core->stats.commands_forwarded++;
    px_buf cmd = {0};
    px_buf_appendf(&cmd, "*%d\r\n", m->nmiss + 1);
    px_resp_bulk(&cmd, "MGET", 4);
    for (int j = 0; j < m->nmiss; j++) {
        uint32_t kl;
        const char *k = miss_key(m, j, &kl);
        px_resp_bulk(&cmd, k, kl);
    }
    px_upstream_send_internal(u, cmd.data, cmd.len, mget_reply, m);
    px_buf_free(&cmd);
    for (int j = 0; j < m->nmiss; j++) {
        uint32_t kl;
        const char *k = miss_key(m, j, &kl);
        send_pttl(u, k, kl, mget_ttl, m);
    }
    return 1;
}
