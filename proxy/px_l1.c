/*
 * px_l1: the L1 on the network side: its life, the read path's entry, INFO
 * and the admin commands.  See px_l1.h; px_l1_int.h says how its four
 * files share the work (fills, invalidation, tracking are the others).
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
 * key expired in Redis gets its value.  If a pool's tracking link stops
 * answering, the L1 is flushed and no fill through that pool is stored
 * until it is back (px_l1_track.c).
 */
#include "proxy/px_l1.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "proxy/px_glob.h"
#include "proxy/px_l1_int.h"

#define EXPIRE_WORK 200

static uint64_t next_random(void *arg)
{
    uint64_t *s = arg; /* xorshift64* */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
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
    /* a tracking link per pool, from the first (the pools do not exist yet:
     * their first handshakes find the L1's hooks in place) */
    px_router_listen(router, px_l1_track_pool, l);
    return l;
}

void px_l1_destroy(px_l1 *l)
{
    if (!l) return;
    px_l1_track_free(l);
    px_l1_fill_forget(l);
    l1_destroy(l->cache);
    px_buf_free(&l->scratch);
    free(l);
}

/* A hit's reference, put by the client once its bytes are written. */
static void value_put(void *v) { l1_value_put(v); }

int px_l1_read(px_l1 *l, px_client *c, px_req *r, px_upstream *u, const char *raw, size_t rawlen)
{
    const px_command *cmd = r->cmd;
    const char *const *argv;
    const size_t *argvlen;
    int argc = px_client_args(c, &argv, &argvlen);
    if (!l || !u || !u->lane || !cmd || !(cmd->flags & (PX_F_CACHE | PX_F_MULTIGET)) || argc < 2) return 0;
    /* On a Cluster an MGET's hits were taken by px_split, and its misses go
     * to Redis: a fill of them could be redirected (MOVED during a
     * resharding), and a redirected fill would answer the misses only, not
     * the client's whole MGET. */
    if ((cmd->flags & PX_F_MULTIGET) && px_router_sharded(l->router)) return 0;
    if ((cmd->flags & PX_F_MULTIGET) && px_client_writes(c) == 0) return px_l1_fill_multiget(l, c, r, u);
    /* An entry belongs to one key: a read naming several (EXISTS a b) is
     * not kept, or a write to the second key would not drop it. */
    if (cmd->last_key != cmd->first_key && argc != cmd->first_key + 1) return 0;
    if (px_client_writes(c) > 0) {
        /* its own write is in flight: read behind it, in order, from Redis */
        l->st.l1_bypassed++;
        return 0;
    }
    const char *group = argv[1];
    size_t glen = argvlen[1];
    px_policy pol;
    px_config_policy(l->core->cfg, group, glen, &pol);
    if (!pol.cache) return 0;
    px_buf key = l->scratch;
    key.len = key.rpos = 0;
    px_l1_put_u32(&key, (uint32_t)glen);
    px_buf_append(&key, group, glen);
    px_l1_fill_variant(c, cmd, 1, &key);
    const char *variant = key.data + 4 + glen;
    size_t vlen = key.len - 4 - glen;

    /* Fill on the key's own connection when the client's order allows it
     * (nothing in flight elsewhere): Redis then tracks the key on one
     * connection, and a write sends one invalidation, not one per
     * connection that happened to read it (each of which would drop the
     * entry the previous refill stored). */
    px_upstream *ku = px_lane_conn_for_key(u, group, glen);
    px_upstream *on = px_client_inflight_on(c, u->pool);
    if (ku != u && ku->state == PX_UP_READY && (!on || on == ku) && px_l1_track_can_fill(l, ku)) u = ku;
    uint64_t now = px_l1_now_ms(l);
    l1_meta meta;
    l1_value *v = l1_get_fresh(l->cache, group, glen, variant, vlen, now, px_l1_fresh_ms, l, &meta);
    l->scratch = key; /* keep the (possibly grown) buffer */
    if (v) {
        px_req_path(r, PX_PATH_L1_HIT);
        px_client_reply_ref(r, v->data, v->len, value_put, v); /* takes our reference */
        /* read near its expiry: fetch it again in the background, once */
        if (l1_should_refresh(l->cache, &meta, now, (uint64_t)pol.ttl, (unsigned)pol.jitter,
                              (unsigned)l->core->cfg->l1_refresh_ahead) &&
            px_l1_track_can_fill(l, u) && !px_l1_fill_running(l, &key)) {
            l->st.l1_refreshes++;
            px_l1_fill_start(l, c, NULL, u, &key, glen, &pol, cmd, raw, rawlen);
        }
        return 1;
    }
    if (!px_l1_track_can_fill(l, u)) return 0;
    return px_l1_fill_wait(l, c, r, u, &key, glen, &pol, cmd, raw, rawlen);
}

void px_l1_write(px_l1 *l, px_client *c, px_req *r, px_upstream *u)
{
    if (l) px_l1_inval_write(l, c, r, u);
}

/* l may be NULL here: r's keys list is freed all the same. */
void px_l1_written(px_l1 *l, px_req *r) { px_l1_inval_written(l, r); }

int px_l1_barrier(px_l1 *l, px_req *r, const char *reply, size_t len) { return px_l1_inval_barrier(l, r, reply, len); }

void px_l1_cron(px_l1 *l, double now)
{
    if (!l) return;
    l1_expire(l->cache, px_l1_now_ms(l), EXPIRE_WORK);
    px_l1_track_cron(l, now);
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
    v->l1_mode = px_l1_ttl_only(l) ? "ttl-only" : "tracking";
    px_l1_track_state(l, &v->l1_tracking, &v->l1_tracking_link_id);
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
