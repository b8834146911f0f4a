/*
 * px_l1: the L1 on the network side.  See px_l1.h.
 *
 * A cache key has two parts (cache/l1.h): the group is the Redis key the
 * command reads; the variant is [protocol][database][command name][the
 * other arguments, length-prefixed], so "HGET k f" in db 0 over RESP2 and
 * the same over RESP3 are different entries of group "k".
 *
 * Staleness bounds (README states them): with tracking up, an entry lives at
 * most l1-ttl (+ jitter) and never past the key's PTTL, and a write made
 * elsewhere is dropped when Redis' invalidation message arrives; a write
 * through this hotproxy is never followed by an older read.  With tracking
 * off or refused, a write made elsewhere may be missed for up to l1-ttl
 * (+ jitter), an entry and the null it turns into together.  Lifetimes
 * count from the fill's send (l1_life_of), and an entry that ends with its
 * key is judged by a fresh clock, so no read that reaches hotproxy after a
 * key expired in Redis gets its value.  If the link stops answering, the L1
 * is flushed and no fill is stored until it is back.
 *
 * Redis tracks keys per connection: a shared connection lost with its
 * tracking on takes with it the watch on every key it read, so the L1 is
 * flushed (only for a connection it filled through: the per-connection
 * tracking_used bit; finer bookkeeping, per entry, would cost a tag in every
 * entry for an event as rare as a reconnect).  The flush also refuses every
 * fill ticketed before it, so a fill racing with the loss is not stored.
 *
 * Only a real refusal (an ACL's NOPERM, a command renamed away or unknown)
 * ends tracking (refused, TTL-only).  Any other error (BUSY during a long
 * script, LOADING, a REDIRECT to a link that just died) is a "not now": the
 * link is opened again, or CLIENT TRACKING sent again, with backoff.
 */
#include "proxy/px_l1.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <uthash.h>

#include "cache/l1.h"
#include "proxy/px_client.h"
#include "proxy/px_command.h"
#include "proxy/px_glob.h"
#include "proxy/px_router.h"
#include "proxy/px_upstream.h"

#define HEARTBEAT_EVERY 1.0
#define HEARTBEAT_DEADLINE 3.0
#define RETRY_MIN 0.1 /* backoff of the link and of CLIENT TRACKING after a "not now" */
#define RETRY_MAX 2.0
#define EXPIRE_WORK 200

typedef struct flight {
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

/* A reply held until the link's pong number `pong` (see px_l1_barrier). */
typedef struct held {
    struct held *next;
    px_req *r;
    uint64_t pong;
    size_t len;
    char reply[];
} held;

struct px_l1 {
    px_core *core;
    px_router *router;         /* the pools it keeps tracking links to */
    l1 *cache;
    flight *flights;
    uint64_t rng;
    /* tracking */
    px_upstream *link;
    int link_ready;
    int refused;
    uint64_t epoch;
    long long link_id;  /* the link's CLIENT ID, asked by the L1 itself (0: not known yet) */
    double last_pong, next_ping, next_attempt;
    double link_backoff;            /* before the next link attempt */
    double retrack_at, retrack_backoff; /* CLIENT TRACKING again where Redis said "not now" */
    uint64_t pings, pongs;          /* on the current link; pongs come in PING order */
    held *bhead, *btail;         /* held replies, oldest (lowest pong) first */
    px_buf scratch;     /* the key being looked up, reused: no allocation per hit */
    /* counters beyond the library's (its own, hits and the like, are
     * l1_stats': they stay 0 here and are copied in by px_l1_stats) */
    px_stats_l1 st;
};

static uint64_t next_random(void *arg)
{
    uint64_t *s = arg; /* xorshift64* */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}

/* The L1's clock, in ms: the loop's (read when its iteration began), which is
 * all an ordinary entry needs; fresh_ms reads it again, for the entries that
 * end with their key (l1_get_fresh) and for late waiters. */
static uint64_t now_ms(px_l1 *l) { return (uint64_t)(px_now(l->core) * 1000.0); }
static uint64_t fresh_ms(void *arg)
{
    px_l1 *l = arg;
    return (uint64_t)(px_now_fresh(l->core) * 1000.0);
}

static px_pool *pool_of(px_l1 *l)
{
    return px_router_default(l->router);
}

px_l1 *px_l1_create(px_core *k, px_router *router)
{
    const px_config *cfg = k->cfg;
    if (!cfg->l1) return NULL;
    px_l1 *l = calloc(1, sizeof(*l));
    if (!l) abort();
    l->core = k;
    l->router = router;
    uint64_t seed[3];
    if (getrandom(seed, sizeof(seed), 0) != (ssize_t)sizeof(seed)) {
        seed[0] = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)l;
        seed[1] = seed[0] * 0x9E3779B97F4A7C15ULL;
        seed[2] = seed[1] ^ 0xD1B54A32D192ED03ULL;
    }
    l->rng = seed[2] | 1;
    l1_config lc = {
        .maxmemory = (size_t)cfg->l1_maxmemory,
        .max_entry_size = (size_t)cfg->l1_max_entry_size,
        .hot_threshold = (uint32_t)cfg->l1_hot_threshold,
        .random = next_random,
        .random_arg = &l->rng,
        .hash_seed = {seed[0], seed[1]},
    };
    l->cache = l1_create(&lc);
    if (!l->cache) abort();
    return l;
}

static void release_barriers(px_l1 *l, int all);

void px_l1_destroy(px_l1 *l)
{
    if (!l) return;
    release_barriers(l, 1); /* their clients have gone: the replies are dropped */
    flight *f, *tmp;
    HASH_ITER(hh, l->flights, f, tmp) {
        HASH_DEL(l->flights, f);
        f->in_table = 0;
        /* its requests are answered (with errors) by the pool's teardown */
    }
    l1_destroy(l->cache);
    px_buf_free(&l->scratch);
    free(l);
}

/* ---- keys ---- */

static void put_u32(px_buf *b, uint32_t v) { px_buf_append(b, &v, 4); }

/* The variant of a command (see the top of the file); with_args: the
 * dispatched command's arguments after the key are part of it. */
static void build_variant_for(px_client *c, const px_command *cmd, int with_args, px_buf *b)
{
    uint8_t proto = (uint8_t)c->proto;
    px_buf_append(b, &proto, 1);
    put_u32(b, (uint32_t)c->db);
    px_buf_append(b, cmd->name, strlen(cmd->name) + 1);
    for (int i = 2; with_args && i < c->parser.argc; i++) {
        put_u32(b, (uint32_t)c->argvlen[i]);
        px_buf_append(b, c->argv[i], c->argvlen[i]);
    }
}

static void record_key(px_buf *b, const char *k, size_t n)
{
    put_u32(b, (uint32_t)n);
    px_buf_append(b, k, n);
}

static flight *flight_find(px_l1 *l, const char *key, size_t klen)
{
    flight *f = NULL;
    HASH_FIND(hh, l->flights, key, klen, f);
    return f;
}

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

/* A reply not worth keeping: errors (and RESP3 blob errors). */
static int cacheable_reply(const char *reply, size_t len)
{
    return len > 0 && reply[0] != '-' && reply[0] != '!';
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
    if (cacheable_reply(reply, len) && len <= keep) {
        f->reply = malloc(len);
        if (!f->reply) abort();
        memcpy(f->reply, reply, len);
        f->reply_len = len;
    }
    /* a reply not kept (an error, too large) answers everyone: nothing to judge it by later */
    int now = f->reply ? f->nbefore : f->nwaiters;
    for (int i = 0; i < now; i++) px_client_reply(f->waiters[i], reply, len);
    if (f->nwaiters > now) memmove(f->waiters, f->waiters + now, sizeof(*f->waiters) * (size_t)(f->nwaiters - now));
    f->nwaiters -= now;
    f->nbefore = 0;
}

/* A reply for a key that does not exist: kept with the negative TTL. */
static int absent_reply(const char *r, size_t n)
{
    static const char *const forms[] = {"$-1\r\n", "_\r\n", "*-1\r\n", "*0\r\n", "%0\r\n", "~0\r\n", ":0\r\n"};
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++)
        if (strlen(forms[i]) == n && !memcmp(forms[i], r, n)) return 1;
    return 0;
}

/*
 * The null a read whose entry ends with its key turns into at the key's
 * expiry (l1_store_then), in the variant's protocol: for reads that answer a
 * missing key with the null reply (PX_F_NIL in row, the read's table row);
 * NULL for others.
 */
static const char *then_reply(const px_command *row, const char *variant, size_t vlen, size_t *len)
{
    /* variant: [u8 protocol][u32 db][command name NUL][arguments] */
    if (!row || !(row->flags & PX_F_NIL) || vlen < 1) return NULL;
    int resp3 = variant[0] == 3;
    *len = resp3 ? 3 : 5;
    return resp3 ? "_\r\n" : "$-1\r\n";
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
        .absent = absent_reply(reply, len),
        .has_then = null != NULL,
        .bounded = !l->core->cfg->l1_tracking || l->refused,
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
    if (end <= now_ms(l)) return 0; /* over already: the round trip took longer than its life */
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
                    (pttl == -1 || (pttl >= 0 && fresh_ms(l) < f->sent_ms + (uint64_t)pttl) ||
                     (pttl == -2 && absent_reply(f->reply, f->reply_len)));
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
        int nil_not_absent = absent_reply(m->got[j], m->gotlen[j]) && pttl != -2;
        if (pol.cache && !nil_not_absent && m->gotlen[j] <= (size_t)pol.max_entry_size &&
            cacheable_reply(m->got[j], m->gotlen[j])) {
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

static int read_multiget(px_l1 *l, px_client *c, px_req *r, px_upstream *u)
{
    int n = c->parser.argc - 1;
    mfill *m = calloc(1, sizeof(*m));
    if (!m) abort();
    m->l1 = l;
    m->n = n;
    m->hits = calloc((size_t)n, sizeof(*m->hits));
    m->miss_off = calloc((size_t)n, sizeof(size_t));
    if (!m->hits || !m->miss_off) abort();
    m->get = px_command_element(r->cmd);
    build_variant_for(c, m->get, 0, &m->variant);
    uint64_t now = now_ms(l);
    for (int i = 0; i < n; i++) {
        m->hits[i] = l1_get_fresh(l->cache, c->argv[i + 1], c->argvlen[i + 1], m->variant.data, m->variant.len, now,
                                  fresh_ms, l, NULL);
        if (!m->hits[i]) {
            m->miss_off[m->nmiss++] = m->keys.len;
            record_key(&m->keys, c->argv[i + 1], c->argvlen[i + 1]);
        }
    }
    if (m->nmiss == 0) {
        px_buf out = {0};
        px_buf_appendf(&out, "*%d\r\n", n);
        for (int i = 0; i < n; i++) px_buf_append(&out, m->hits[i]->data, m->hits[i]->len);
        px_client_reply(r, out.data, out.len);
        px_buf_free(&out);
        mfill_free(m);
        return 1;
    }
    if (!px_l1_can_fill(l, u)) {
        mfill_free(m);
        return 0;
    }
    m->r = r;
    m->ticket = l1_ticket(l->cache, NULL, 0);
    u->tracking_used = 1;
    m->sent_ms = now_ms(l); /* no later than the write that sends it */
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

/*
 * Early refresh, as XFetch: in the last l1-refresh-ahead percent of its TTL
 * (the window), a read refreshes the entry with probability
 * exp(-remaining / window), which reaches 1 at expiry; one refresh per key
 * at a time (the flight table), so a hot key's expiry causes no miss burst.
 */
static int should_refresh(px_l1 *l, const px_policy *pol, uint64_t now, const l1_meta *m)
{
    /* An entry whose lifetime the key's own PTTL set is not refreshed: the
     * key is expiring in Redis, and each refresh would only get a shorter
     * lifetime and refresh again.  Nor is one kept shorter than l1-ttl's
     * jitter allows: a null kept for l1-negative-ttl. */
    uint64_t expires = m->expires_ms, ttl = m->ttl_ms;
    if (m->with_key || (long long)ttl * 100 < pol->ttl * (100 - pol->jitter)) return 0;
    double window = (double)ttl * (double)l->core->cfg->l1_refresh_ahead / 100.0;
    if (window <= 0 || expires <= now || (double)(expires - now) > window) return 0;
    double u = (double)(next_random(&l->rng) >> 11) / (double)(1ULL << 53);
    return -log(u > 0 ? u : 1e-300) * window >= (double)(expires - now);
}

/* Fetch key (the flight key in k) on u; r is its first waiter, or NULL for a refresh. */
static void start_fill(px_l1 *l, px_client *c, px_req *r, px_upstream *u, const px_buf *k, size_t glen,
                       const px_policy *pol, const px_command *row, const char *raw, size_t rawlen)
{
    flight *f = flight_new(l, u, k->data, k->len, glen, pol, row, raw, rawlen);
    if (r) add_waiter(f, c, r, u);
    send_fill(l, f);
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
    f->sent_ms = now_ms(l); /* the loop's clock: no later than the write that sends it */
    f->nbefore = f->nwaiters;
    px_upstream_send_internal(f->u, f->cmd, f->cmdlen, fill_reply, f);
    send_pttl(f->u, f->key + 4, f->glen, fill_ttl, f);
}

/* A hit's reference, put by the client once its bytes are written. */
static void value_put(void *v) { l1_value_put(v); }

int px_l1_read(px_l1 *l, px_client *c, px_req *r, px_upstream *u, const char *raw, size_t rawlen)
{
    const px_command *cmd = r->cmd;
    if (!l || !u || !u->lane || !cmd || !(cmd->flags & (PX_F_CACHE | PX_F_MULTIGET)) || c->parser.argc < 2) return 0;
    if ((cmd->flags & PX_F_MULTIGET) && c->nwrites == 0) return read_multiget(l, c, r, u);
    /* An entry belongs to one key: a read naming several (EXISTS a b) is
     * not kept, or a write to the second key would not drop it. */
    if (cmd->last_key != cmd->first_key && c->parser.argc != cmd->first_key + 1) return 0;
    if (c->nwrites > 0) {
        /* its own write is in flight: read behind it, in order, from Redis */
        l->st.l1_bypassed++;
        return 0;
    }
    const char *group = c->argv[1];
    size_t glen = c->argvlen[1];
    px_policy pol;
    px_config_policy(l->core->cfg, group, glen, &pol);
    if (!pol.cache) return 0;
    px_buf key = l->scratch;
    key.len = key.rpos = 0;
    put_u32(&key, (uint32_t)glen);
    px_buf_append(&key, group, glen);
    build_variant_for(c, cmd, 1, &key);
    const char *variant = key.data + 4 + glen;
    size_t vlen = key.len - 4 - glen;

    /* Fill on the key's own connection when the client's order allows it
     * (nothing in flight elsewhere): Redis then tracks the key on one
     * connection, and a write sends one invalidation, not one per
     * connection that happened to read it (each of which would drop the
     * entry the previous refill stored). */
    px_upstream *ku = px_lane_conn_for_key(u, group, glen);
    if (ku != u && ku->state == PX_UP_READY && (!px_client_inflight_on(c, ku->pool) || px_client_inflight_on(c, ku->pool) == ku) && px_l1_can_fill(l, ku)) u = ku;
    uint64_t now = now_ms(l);
    l1_meta meta;
    l1_value *v = l1_get_fresh(l->cache, group, glen, variant, vlen, now, fresh_ms, l, &meta);
    l->scratch = key; /* keep the (possibly grown) buffer */
    if (v) {
        px_client_reply_ref(r, v->data, v->len, value_put, v); /* takes our reference */
        if (should_refresh(l, &pol, now, &meta) && px_l1_can_fill(l, u) && !flight_find(l, key.data, key.len)) {
            /* read near its expiry: fetch it again in the background, once */
            l->st.l1_refreshes++;
            start_fill(l, c, NULL, u, &key, glen, &pol, cmd, raw, rawlen);
        }
        return 1;
    }
    if (!px_l1_can_fill(l, u)) return 0;
    flight *f = flight_find(l, key.data, key.len);
    if (f && l1_is_stale(l->cache, group, glen, f->ticket)) {
        flight_unlist(l, f); /* a write came after it started: it serves only who it has */
        f = NULL;
    }
    if (f) {
        /* A client with commands in flight on another connection reads
         * there, so its commands reach Redis in its order. */
        if (f->nwaiters >= l->core->cfg->l1_max_waiters || (px_client_inflight_on(c, f->u->pool) && px_client_inflight_on(c, f->u->pool) != f->u)) return 0;
        l->st.l1_coalesced++;
        add_waiter(f, c, r, f->u);
        return 1;
    }
    start_fill(l, c, r, u, &key, glen, &pol, cmd, raw, rawlen);
    return 1;
}

/* ---- writes ---- */

static void invalidate_list(px_l1 *l, const char *p, size_t n)
{
    size_t i = 0;
    while (i + 4 <= n) {
        uint32_t kl;
        memcpy(&kl, p + i, 4);
        l1_invalidate(l->cache, p + i + 4, kl);
        i += 4 + kl;
    }
}

/* No tracking to tell what a write touched: TTL-only. */
static int ttl_only(px_l1 *l) { return !l->core->cfg->l1_tracking || l->refused; }

void px_l1_write(px_l1 *l, px_client *c, px_req *r)
{
    const px_command *cmd = r->cmd;
    if (!l || (cmd && !px_command_writes(cmd))) return;
    int argc = c->parser.argc;
    px_buf keys = {0};
    int flush = 0;
    int barrier = cmd && (cmd->flags & PX_F_BARRIER);
    if (cmd && (px_handlers[cmd->handler].clears & PX_STATE_MULTI)) {
        /* the transaction's writes run now (EXEC) or never (DISCARD): drop
         * their keys again at EXEC's reply */
        if (px_handler_props(cmd->handler) & PX_HP_EXEC) {
            keys = c->multi_keys;
            flush = c->multi_flush;
            barrier = c->multi_barrier;
        } else {
            px_buf_free(&c->multi_keys);
        }
        memset(&c->multi_keys, 0, sizeof(c->multi_keys));
        c->multi_flush = 0;
        c->multi_barrier = 0;
    } else {
        int pos[64];
        int n = cmd ? px_command_keys(cmd, argc, c->argv, c->argvlen, pos, 64) : -1;
        if (n < 0 || n > 64 || (n == 0 && cmd && (cmd->flags & PX_F_W))) {
            flush = n != 0 || !cmd || (cmd->flags & PX_F_W);
        }
        if (n > 64) {
            /* more keys than we keep positions for: list them all */
            flush = 0;
            int *all = malloc(sizeof(int) * (size_t)n);
            if (!all) abort();
            px_command_keys(cmd, argc, c->argv, c->argvlen, all, n);
            for (int i = 0; i < n; i++) record_key(&keys, c->argv[all[i]], c->argvlen[all[i]]);
            free(all);
        } else {
            for (int i = 0; i < n; i++) record_key(&keys, c->argv[pos[i]], c->argvlen[pos[i]]);
        }
        if (c->state & PX_STATE_MULTI) {
            /* queued: it runs at EXEC, which invalidates again (and waits) */
            px_buf_append(&c->multi_keys, keys.data, keys.len);
            c->multi_flush |= flush;
            c->multi_barrier |= barrier;
            barrier = 0;
        }
    }
    /* Without tracking, nothing says which keys it wrote: drop everything,
     * now and at the reply. */
    if (barrier && ttl_only(l)) flush = 1;
    if (!keys.len && !flush && !barrier) {
        px_buf_free(&keys);
        return;
    }
    if (flush) {
        l1_flush(l->cache);
    } else if (keys.len) {
        invalidate_list(l, keys.data, keys.len);
        l->st.l1_invalidations_local++;
    }
    r->inval = keys.data;
    r->inval_len = keys.len;
    r->inval_flush = flush;
    r->barrier = barrier && !flush;
    r->writes = 1; /* the client's reads skip the L1 until its reply, barrier included */
    c->nwrites++;
}

void px_l1_written(px_l1 *l, px_req *r)
{
    if (l) {
        if (r->inval_flush) l1_flush(l->cache);
        else invalidate_list(l, r->inval, r->inval_len);
    }
    free(r->inval);
    r->inval = NULL;
    r->inval_len = 0;
    r->inval_flush = 0;
}

/* ---- tracking ---- */

int px_l1_can_fill(px_l1 *l, px_upstream *u)
{
    if (!l) return 0;
    if (!l->core->cfg->l1_tracking || l->refused) return 1; /* TTL-only */
    return l->link_ready && u->tracking_epoch == l->epoch && u->tracking_epoch != 0;
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
    if (l->bhead) {
        /* held writes wait for tracking no more: what they wrote is dropped */
        l1_flush(l->cache);
        release_barriers(l, 1);
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
    px_l1 *l = u->pool->handshake_arg; /* the L1 set the pool's handshake hook (track_new) */
    uint64_t epoch = (uint64_t)(uintptr_t)ctx;
    if (!l || u->state != PX_UP_READY) return;
    if (len >= 3 && !memcmp(reply, "+OK", 3)) {
        u->tracking_epoch = epoch;
        l->retrack_backoff = 0;
        return;
    }
    if (is_refusal(reply, len)) {
        refuse(l, "CLIENT TRACKING", reply, len);
        return;
    }
    /* Not now: this connection fills nothing until a later try says OK. */
    px_log_verbose(&l->core->log, "L1: CLIENT TRACKING not accepted now (%.*s); trying again",
                   (int)(len > 200 ? 200 : len - 2), reply);
    if (!l->retrack_at) l->retrack_at = px_now(l->core) + backoff(&l->retrack_backoff);
}

void px_l1_track(px_l1 *l, px_upstream *u)
{
    u->tracking_epoch = 0;
    u->tracking_used = 0;
    if (!l || !l->core->cfg->l1_tracking || l->refused || !l->link_ready || !l->link || !l->link_id) return;
    char cmd[128], id[24];
    int idn = snprintf(id, sizeof(id), "%lld", l->link_id);
    int n = snprintf(cmd, sizeof(cmd), "*5\r\n$6\r\nCLIENT\r\n$8\r\nTRACKING\r\n$2\r\non\r\n$8\r\nREDIRECT\r\n$%d\r\n%s\r\n",
                     idn, id);
    px_upstream_send_internal(u, cmd, (size_t)n, tracking_reply, (void *)(uintptr_t)l->epoch);
}

/* The pool's handshake hook: a new shared connection fills the L1, so Redis
 * tracks what it reads. */
static void track_new(px_upstream *u, void *arg)
{
    px_l1_track(arg, u);
}

static void track_each(px_upstream *u, void *arg)
{
    if (u->state != PX_UP_DOWN) px_l1_track(arg, u);
}

/* The connections a "not now" left without tracking (the others keep theirs). */
static void retrack_each(px_upstream *u, void *arg)
{
    px_l1 *l = arg;
    if (u->state == PX_UP_READY && u->tracking_epoch != l->epoch) px_l1_track(l, u);
}

/* The pool lost a shared connection whose tracking was on (see the top). */
static void tracking_lost(px_upstream *u, uint64_t epoch, void *arg)
{
    px_l1 *l = arg;
    int used = u->tracking_used;
    u->tracking_used = 0;
    /* An older epoch: the link's loss flushed the L1 since, and the
     * connection filled nothing after it. */
    if (!used || epoch != l->epoch || !l->link_ready) return;
    px_log_notice(&l->core->log, "L1: a connection with tracking on was lost (%s): L1 flushed", u->errstr);
    l1_flush(l->cache);
    l->st.l1_flushes_connection_lost++;
}

static int str_is(const redisReply *r, const char *s)
{
    return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) && r->len == strlen(s) &&
           !strncasecmp(r->str, s, r->len);
}

/* Answer the held replies whose PING has been answered (all: every one). */
static void release_barriers(px_l1 *l, int all)
{
    while (l->bhead && (all || l->bhead->pong <= l->pongs)) {
        held *b = l->bhead;
        l->bhead = b->next;
        if (!l->bhead) l->btail = NULL;
        px_client_reply(b->r, b->reply, b->len);
        free(b);
    }
}

static void link_ping(px_l1 *l)
{
    static const char ping[] = "*1\r\n$4\r\nPING\r\n";
    px_upstream_write(l->link, ping, sizeof(ping) - 1);
    l->pings++;
}

int px_l1_barrier(px_l1 *l, px_req *r, const char *reply, size_t len)
{
    r->barrier = 0;
    /* not in flight for a client (gone, or answered without Redis): nobody to hold */
    if (!l || !r->client || !r->forwarded) return 0;
    if (ttl_only(l)) {
        l1_flush(l->cache); /* tracking ended meanwhile: nothing will tell what it wrote */
        return 0;
    }
    /* Tracking down: the L1 was flushed when it went and fills nothing until
     * it is back, so nothing in it predates this write. */
    if (!l->link_ready || !l->link) return 0;
    held *b = malloc(sizeof(*b) + (len ? len : 1));
    if (!b) abort();
    /* A PING still in our buffer reaches Redis after this reply left it, so
     * it serves as well: replies read together share one round trip. */
    if (!px_buf_used(&l->link->out) || !l->pings) link_ping(l);
    b->next = NULL;
    b->r = r;
    b->pong = l->pings;
    b->len = len;
    memcpy(b->reply, reply, len);
    if (l->btail) l->btail->next = b;
    else l->bhead = b;
    l->btail = b;
    l->st.l1_barriers++;
    return 1;
}

/* The link failed for a reason that may pass: open it again later. */
static void link_not_now(px_l1 *l, px_upstream *u, const char *what, const char *reply, size_t len)
{
    px_log_notice(&l->core->log, "L1: the invalidation link got an error (%s: %.*s); opening it again", what,
                  (int)(len > 200 ? 200 : len - 2), reply);
    px_pool_close(u->pool, u, "invalidation link error");
}

static void link_id_reply(px_upstream *u, void *ctx, const char *reply, size_t len)
{
    px_l1 *l = ctx;
    long long id;
    if (u != l->link || u->state != PX_UP_READY) return; /* closed meanwhile */
    if (len > 3 && reply[0] == ':' && px_string2ll(reply + 1, len - 3, &id)) {
        l->link_id = id;
        return;
    }
    if (is_refusal(reply, len)) {
        /* no id, no REDIRECT can name this link */
        refuse(l, "CLIENT ID on the invalidation link", reply, len);
        px_pool_close(u->pool, u, "no client id for the invalidation link");
        return;
    }
    link_not_now(l, u, "CLIENT ID", reply, len);
}

static void link_frame(px_upstream *u, void *ctx, const char *frame, size_t len)
{
    px_l1 *l = ctx;
    if (len && frame[0] == '-') {
        if (is_refusal(frame, len)) {
            /* SUBSCRIBE refused (an ACL without channel rights, say) */
            refuse(l, "the invalidation link", frame, len);
            px_pool_close(u->pool, u, "invalidation link refused");
        } else {
            link_not_now(l, u, "SUBSCRIBE or PING", frame, len);
        }
        return;
    }
    redisReply *m = px_reply_decode(frame, len);
    if (!m) return;
    if (m->type == REDIS_REPLY_ARRAY && m->elements >= 2) {
        if (str_is(m->element[0], "pong")) {
            /* a fresh clock: after a long iteration the loop's own would
             * date the pong too early, and the heartbeat could time out */
            l->last_pong = px_now_fresh(l->core);
            l->pongs++;
            release_barriers(l, 0);
        } else if (str_is(m->element[0], "subscribe") && !l->link_id) {
            /* cannot happen (CLIENT ID is answered first, or the link closed) */
            freeReplyObject(m);
            link_not_now(l, u, "SUBSCRIBE", "-ERR no client id yet\r\n", 23);
            return;
        } else if (str_is(m->element[0], "subscribe")) {
            l->link_ready = 1;
            l->epoch++;
            l->last_pong = px_now_fresh(l->core);
            l->link_backoff = 0;
            px_log_notice(&l->core->log, "L1: invalidation link up (Redis client id %lld)", l->link_id);
            px_pool_each_shared(pool_of(l), track_each, l);
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
    px_l1 *l = ctx;
    if (l->link_ready) px_log_warning(&l->core->log, "L1: invalidation link lost (%s): L1 flushed, filling stops until it is back", u->errstr);
    l->link = NULL;
    l->link_ready = 0;
    l->link_id = 0;
    l1_flush(l->cache);
    l->st.l1_flushes_link_lost++;
    /* the flush covers what the held writes touched: they may go */
    release_barriers(l, 1);
    l->pings = l->pongs = 0;
    l->next_attempt = px_now(l->core) + backoff(&l->link_backoff);
}

static void link_open(px_l1 *l)
{
    px_pool *p = pool_of(l);
    if (p) {
        /* before any connection can track (none does before the link is ready) */
        px_pool_on_tracking_lost(p, tracking_lost, l);
        px_pool_on_handshake(p, track_new, l);
    }
    l->link = p ? px_pool_open_link(p, link_frame, link_lost, l) : NULL;
    if (!l->link) {
        l->next_attempt = px_now(l->core) + backoff(&l->link_backoff);
        return;
    }
    /* The L1 asks the id itself: it must tell "not now" from "never". */
    static const char id[] = "*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n";
    static const char sub[] = "*2\r\n$9\r\nSUBSCRIBE\r\n$20\r\n__redis__:invalidate\r\n";
    l->link->raw = 1;
    px_upstream_send_internal(l->link, id, sizeof(id) - 1, link_id_reply, l);
    px_upstream_write(l->link, sub, sizeof(sub) - 1);
}

void px_l1_cron(px_l1 *l, double now)
{
    if (!l) return;
    l1_expire(l->cache, now_ms(l), EXPIRE_WORK);
    if (!l->core->cfg->l1_tracking || l->refused || l->core->shutting_down) return;
    if (!l->link) {
        if (now >= l->next_attempt) link_open(l);
        return;
    }
    if (!l->link_ready) return;
    if (now - l->last_pong > HEARTBEAT_DEADLINE) {
        px_pool_close(l->link->pool, l->link, "invalidation link heartbeat timeout");
        return;
    }
    if (l->retrack_at && now >= l->retrack_at) {
        l->retrack_at = 0;
        px_pool_each_shared(pool_of(l), retrack_each, l);
    }
    if (now >= l->next_ping) {
        link_ping(l);
        l->next_ping = px_now_fresh(l->core) + HEARTBEAT_EVERY;
    }
}

void px_l1_stats(px_l1 *l, px_stats_l1 *v)
{
    if (!l) {
        memset(v, 0, sizeof(*v));
        v->l1 = "off";
        return;
    }
    const px_config *cfg = l->core->cfg;
    l1_stats st;
    l1_get_stats(l->cache, &st);
    uint64_t lookups = st.hits + st.misses;
    *v = l->st;
    v->l1 = "on";
    v->l1_mode = !cfg->l1_tracking || l->refused ? "ttl-only" : "tracking";
    v->l1_tracking = !cfg->l1_tracking ? "off" : l->refused ? "refused" : l->link_ready ? "up" : "down";
    v->l1_tracking_link_id = l->link ? l->link_id : -1;
    v->l1_entries = st.entries;
    v->l1_bytes = st.bytes;
    v->l1_maxmemory = cfg->l1_maxmemory;
    v->l1_hits = st.hits;
    v->l1_misses = st.misses;
    v->l1_hit_ratio = lookups ? (double)st.hits / (double)lookups : 0.0;
    v->l1_stores = st.stores;
    v->l1_admissions_rejected = st.admissions_rejected;
    v->l1_stale_fills = st.stale_fills;
    v->l1_evictions = st.evictions;
    v->l1_expirations = st.expirations;
    v->l1_key_expiries = st.successions;
    v->l1_flushes = st.flushes;
}

void px_l1_info(px_l1 *l, px_buf *out)
{
    px_stats_l1 v;
    px_l1_stats(l, &v);
    /* with the L1 off, its first line ("hotproxy_l1:off") says it all */
    const px_stat_group *g = &px_stat_groups[PX_STATS_G_L1];
    px_stats_render(g->desc, l ? g->n : 1, &v, out);
}

void px_l1_reconfigure(px_l1 *l)
{
    if (!l) return;
    const px_config *cfg = l->core->cfg;
    l1_set_limits(l->cache, (size_t)cfg->l1_maxmemory, (size_t)cfg->l1_max_entry_size,
                  (uint32_t)cfg->l1_hot_threshold);
}

long px_l1_invalidate_keys(px_l1 *l, int n, const char *const *keys, const size_t *lens)
{
    if (!l) return 0;
    for (int i = 0; i < n; i++) l1_invalidate(l->cache, keys[i], lens[i]);
    l->st.l1_invalidations_local += (uint64_t)n;
    return n;
}

void px_l1_flush(px_l1 *l)
{
    if (l) l1_flush(l->cache);
}

typedef struct keys_walk {
    const char *pat;
    size_t patlen;
    px_buf *out;
    long n;
} keys_walk;

static void keys_visit(void *arg, const void *group, size_t glen, const void *variant, size_t vlen, uint64_t expires)
{
    keys_walk *w = arg;
    (void)variant;
    (void)vlen;
    (void)expires;
    if (!px_glob_match(w->pat, w->patlen, group, glen)) return;
    px_resp_bulk(w->out, group, glen);
    w->n++;
}

long px_l1_keys(px_l1 *l, const char *pat, size_t patlen, uint64_t cursor, long count, px_buf *out, uint64_t *next)
{
    keys_walk w = {pat, patlen, out, 0};
    *next = 0;
    if (!l) return 0;
    *next = l1_scan(l->cache, cursor, (size_t)count, keys_visit, &w);
    return w.n;
}
