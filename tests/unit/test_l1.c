/*
 * test_l1: the L1 cache library (cache/l1.h), driven by hand.
 *
 * The clock is a plain variable and randomness a seeded splitmix64, so every
 * run sees the same sequence.  Presence is checked with l1_scan, never with
 * l1_get, because a get counts toward frequency and refreshes recency: the
 * very things most of these tests watch.  "touch" below is a get of a variant
 * that is never stored: it feeds the frequency sketch without moving anything
 * in the LRU list.
 */
#include "cache/l1.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"

/* ---- helpers ---- */

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t splitmix(void *arg)
{
    rng *r = arg;
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static rng jitter_rng = {42};

static l1_config cfg_for(size_t maxmemory, uint32_t hot_threshold)
{
    l1_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.maxmemory = maxmemory;
    cfg.max_entry_size = maxmemory;
    cfg.hot_threshold = hot_threshold;
    cfg.sample_size = 0;
    cfg.random = splitmix;
    cfg.random_arg = &jitter_rng;
    cfg.hash_seed[0] = 0x5eed0001deadbeefULL;
    cfg.hash_seed[1] = 0x5eed0002cafef00dULL;
    return cfg;
}

static l1_stats stats(const l1 *c)
{
    l1_stats st;
    l1_get_stats(c, &st);
    return st;
}

/* A fill under a fresh ticket, without the get that normally precedes it. */
static int put(l1 *c, const char *g, const char *v, const void *val, size_t len, uint64_t ttl, uint64_t now)
{
    uint64_t t = l1_ticket(c, g, strlen(g));
    return l1_store(c, g, strlen(g), v, strlen(v), val, len, t, ttl, now);
}

/* n lookups of a variant nobody stores: frequency only, no LRU movement. */
static void touch(l1 *c, const char *g, int n, uint64_t now)
{
    for (int i = 0; i < n; i++) {
        l1_value *v = l1_get(c, g, strlen(g), "\x01touch", 6, now);
        if (v) l1_value_put(v); /* cannot happen: nobody stores that variant */
    }
}

/* The proxy's flow: a lookup (miss counts toward frequency), a ticket, a store. */
static int fill(l1 *c, const char *g, const char *v, const void *val, size_t len, uint64_t ttl, uint64_t now)
{
    l1_value *hit = l1_get(c, g, strlen(g), v, strlen(v), now);
    if (hit) {
        l1_value_put(hit);
        return -1;
    }
    return put(c, g, v, val, len, ttl, now);
}

typedef struct probe {
    const char *g, *v;
    size_t glen, vlen;
    int found;
    uint64_t expires;
} probe;

static void probe_cb(void *arg, const void *g, size_t glen, const void *v, size_t vlen, uint64_t expires)
{
    probe *p = arg;
    if (glen == p->glen && vlen == p->vlen && !memcmp(g, p->g, glen) && !memcmp(v, p->v, vlen)) {
        p->found++;
        p->expires = expires;
    }
}

/* How many times (group, variant) is in the cache, by a side-effect-free scan. */
static int present(l1 *c, const char *g, const char *v)
{
    probe p = {g, v, strlen(g), strlen(v), 0, 0};
    uint64_t cur = 0;
    do cur = l1_scan(c, cur, 64, probe_cb, &p);
    while (cur);
    return p.found;
}

static void fill_bytes(char *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++) buf[i] = (char)('a' + (seed + i * 7) % 26);
}

static char bigbuf[64 * 1024];

/* The charge of one entry stored alone in its own group (a group name of glen, variant vlen, value len). */
static uint64_t lone_charge(size_t glen, size_t vlen, size_t len)
{
    l1_config cfg = cfg_for(1 << 20, 0);
    l1 *c = l1_create(&cfg);
    char g[256], v[256];
    memset(g, 'g', glen);
    g[glen] = 0;
    memset(v, 'v', vlen);
    v[vlen] = 0;
    put(c, g, v, bigbuf, len, 1000, 0);
    uint64_t b = stats(c).bytes;
    l1_destroy(c);
    return b;
}

/* ---- SipHash ---- */

static void test_hash(void)
{
    /* SipHash-1-3 reference vectors: Python's hash() of bytes is SipHash-1-3
     * (sys.hash_info.algorithm 'siphash13'), keyed with zeros under
     * PYTHONHASHSEED=0: `PYTHONHASHSEED=0 python3 -c 'print(hash(bytes(range(n))) % 2**64)'`.
     * Lengths 1, 7 (tail only), 8 (one block, empty tail), 15, 16, 17. */
    const uint64_t zero[2] = {0, 0};
    unsigned char msg[64];
    for (int i = 0; i < 64; i++) msg[i] = (unsigned char)i;
    const struct {
        size_t n;
        uint64_t h;
    } vec[] = {{1, 0x68a914128e01e473ULL},  {7, 0x2f098ab0c751325aULL},  {8, 0xead411e67ebe2eeaULL},
               {15, 0xf30eb725bb91c9eaULL}, {16, 0x8972188433a5c5b7ULL}, {17, 0x4883c49a2c009c1dULL}};
    for (size_t i = 0; i < sizeof(vec) / sizeof(vec[0]); i++)
        ok(l1_hash(zero, msg, vec[i].n) == vec[i].h, "siphash-1-3: %zu-byte vector is 0x%016" PRIx64 " (got 0x%016" PRIx64 ")",
           vec[i].n, vec[i].h, l1_hash(zero, msg, vec[i].n));

    const uint64_t s1[2] = {1, 2}, s2[2] = {3, 4}, s3[2] = {1, 3};
    ok(l1_hash(s1, "user:42", 7) != l1_hash(s2, "user:42", 7), "hash is keyed: different seeds, different hashes");
    ok(l1_hash(s1, "user:42", 7) != l1_hash(s3, "user:42", 7), "hash is keyed: the second seed word matters too");
    ok(l1_hash(s1, "user:42", 7) == l1_hash(s1, "user:42", 7), "hash is deterministic for one seed");
    ok(l1_hash(s1, "user:42", 7) != l1_hash(s1, "user:43", 7), "hash depends on the data");
}

/* 100,000 keys that differ only in their last bytes (what an attacker would send to an unkeyed
 * hash): the keyed hash spreads them, and the cache takes them all quickly. */
static void test_hostile_keys(void)
{
    enum { N = 100000 };
    const uint64_t seed[2] = {0x0123456789abcdefULL, 0xfedcba9876543210ULL};
    const uint64_t seed2[2] = {0x0123456789abcdefULL, 0xfedcba9876543211ULL};
    uint64_t *h = malloc(N * sizeof(*h));
    unsigned char *bucket = calloc(1 << 16, 1);
    char key[64];
    int same_bucket = 0;
    for (int i = 0; i < N; i++) {
        int n = snprintf(key, sizeof(key), "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:%07d", i);
        h[i] = l1_hash(seed, key, (size_t)n);
        bucket[h[i] & 0xffff] = 1;
        if ((h[i] & 0xffff) == (l1_hash(seed2, key, (size_t)n) & 0xffff)) same_bucket++;
    }
    int used = 0;
    for (int i = 0; i < (1 << 16); i++) used += bucket[i];
    /* a uniform hash fills 65536 * (1 - e^(-100000/65536)) ~= 51,300 of them */
    ok(used > 48000, "hostile keys: %d of 65536 low-16-bit buckets used by 100,000 similar keys", used);
    ok(same_bucket < 200, "hostile keys: another seed puts them elsewhere (%d keep their bucket)", same_bucket);
    free(bucket);
    free(h);

    l1_config cfg = cfg_for((size_t)1 << 30, 0);
    cfg.hash_seed[0] = seed[0];
    cfg.hash_seed[1] = seed[1];
    l1 *c = l1_create(&cfg);
    int stored = 0, hits = 0;
    for (int i = 0; i < N; i++) {
        int n = snprintf(key, sizeof(key), "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:%07d", i);
        uint64_t t = l1_ticket(c, key, (size_t)n);
        stored += l1_store(c, key, (size_t)n, "v", 1, key, (size_t)n, t, 60000, 0);
    }
    is_int(stored, N, "hostile keys: all 100,000 stored");
    is_int(stats(c).entries, N, "hostile keys: 100,000 entries");
    for (int i = 0; i < N; i += 97) {
        int n = snprintf(key, sizeof(key), "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:%07d", i);
        l1_value *v = l1_get(c, key, (size_t)n, "v", 1, 1);
        if (v && v->len == (uint32_t)n && !memcmp(v->data, key, (size_t)n)) hits++;
        l1_value_put(v);
    }
    is_int(hits, (N + 96) / 97, "hostile keys: every sampled key found with its own value");
    l1_flush(c);
    is_int(stats(c).bytes, 0, "hostile keys: flush returns bytes to 0");
    l1_destroy(c);
}

/* ---- LRU order and byte accounting ---- */

/* hot_threshold 0 is documented as "admit all": a store into a full cache
 * evicts the least recently used entry, whatever the frequencies. */
static void test_admit_all(void)
{
    char val[100];
    fill_bytes(val, sizeof(val), 1);
    uint64_t one = lone_charge(4, 1, sizeof(val));
    l1_config cfg = cfg_for(4 * one, 0);
    l1 *c = l1_create(&cfg);
    char g[8];
    int stored = 0;
    for (int i = 0; i < 4; i++) {
        snprintf(g, sizeof(g), "k%03d", i);
        stored += put(c, g, "v", val, sizeof(val), 60000, 0);
    }
    is_int(stored, 4, "admit all: four entries fill the cache exactly");
    is_int(stats(c).bytes, 4 * one, "admit all: bytes are four entries' worth");
    /* none of these groups was ever looked up: all frequencies are 0 */
    int r = put(c, "k004", "v", val, sizeof(val), 60000, 0);
    is_int(r, 1, "admit all (hot_threshold 0): a store into a full cache is accepted");
    is_int(present(c, "k000", "v"), 0, "admit all: the least recently used entry (k000) made room");
    is_int(present(c, "k004", "v"), 1, "admit all: the new entry is there");
    ok(stats(c).bytes <= cfg.maxmemory, "admit all: bytes within maxmemory");
    l1_destroy(c);
}

static void test_lru_order(void)
{
    char val[100];
    fill_bytes(val, sizeof(val), 2);
    uint64_t one = lone_charge(4, 1, sizeof(val));
    enum { N = 10 };
    l1_config cfg = cfg_for(N * one + one / 2, 0);
    l1 *c = l1_create(&cfg);
    char g[8];
    int stored = 0, over = 0;
    for (int i = 0; i < N; i++) {
        snprintf(g, sizeof(g), "k%03d", i);
        stored += fill(c, g, "v", val, sizeof(val), 60000, (uint64_t)i);
        over += stats(c).bytes > cfg.maxmemory;
    }
    is_int(stored, N, "lru: %d entries stored", N);
    is_int(stats(c).bytes, N * one, "lru: bytes == %d x one entry's charge", N);

    /* k000 is the oldest; a hit makes it the most recent */
    l1_value *v = l1_get(c, "k000", 4, "v", 1, 20);
    ok(v != NULL, "lru: k000 hits");
    l1_value_put(v);

    /* Newcomers are made more frequent than any resident, so admission lets
     * them in and only recency decides the victim. */
    const char *expect_gone[] = {"k001", "k002", "k004"};
    for (int i = 0; i < 3; i++) {
        snprintf(g, sizeof(g), "n%03d", i);
        if (i == 2) {
            /* refresh k003 just before: the victim must skip it */
            v = l1_get(c, "k003", 4, "v", 1, 30);
            ok(v != NULL, "lru: k003 hits");
            l1_value_put(v);
        }
        touch(c, g, 4, 30);
        int r = fill(c, g, "v", val, sizeof(val), 60000, 30);
        over += stats(c).bytes > cfg.maxmemory;
        is_int(r, 1, "lru: newcomer %s stored", g);
        is_int(present(c, expect_gone[i], "v"), 0, "lru: %s (least recently used) evicted for %s", expect_gone[i], g);
    }
    is_int(present(c, "k000", "v"), 1, "lru: k000, refreshed by l1_get, survived");
    is_int(present(c, "k003", "v"), 1, "lru: k003, refreshed by l1_get, survived");
    is_int(present(c, "k005", "v"), 1, "lru: k005 (more recent than the victims) survived");
    is_int(stats(c).evictions, 3, "lru: exactly three evictions");
    is_int(stats(c).entries, N, "lru: still %d entries", N);
    is_int(stats(c).bytes, N * one, "lru: bytes still %d x one entry", N);
    is_int(over, 0, "lru: bytes never above maxmemory after a store");
    l1_destroy(c);
}

/* Constants of the charge formula: an entry costs E + glen + vlen + len, a
 * group G + glen.  Derived from two stores, then checked against others. */
static int64_t E_over, G_over;

static void test_bytes_formula(void)
{
    l1_config cfg = cfg_for(1 << 22, 0);
    l1 *c = l1_create(&cfg);
    is_int(stats(c).bytes, 0, "bytes: a new cache holds 0 bytes");
    put(c, "alpha", "v1", bigbuf, 10, 1000, 0);
    int64_t b1 = (int64_t)stats(c).bytes;
    put(c, "alpha", "v22", bigbuf, 10, 1000, 0);
    int64_t b2 = (int64_t)stats(c).bytes;
    E_over = (b2 - b1) - (5 + 3 + 10);
    G_over = b1 - (E_over + 5 + 2 + 10) - 5;
    diag("per-entry overhead %" PRId64 ", per-group overhead %" PRId64, E_over, G_over);
    ok(E_over >= (int64_t)sizeof(l1_value), "bytes: per-entry overhead (%" PRId64 ") counts at least the l1_value header",
       E_over);
    ok(G_over > 0, "bytes: a group costs something (%" PRId64 ")", G_over);

    int64_t before = (int64_t)stats(c).bytes;
    put(c, "alpha", "v333", bigbuf, 1000, 1000, 0);
    is_int((int64_t)stats(c).bytes - before, E_over + 5 + 4 + 1000, "bytes: another variant costs E + key + value");
    before = (int64_t)stats(c).bytes;
    put(c, "alpha", "", bigbuf, 0, 1000, 0);
    is_int((int64_t)stats(c).bytes - before, E_over + 5, "bytes: an empty variant and reply cost E + group name");
    before = (int64_t)stats(c).bytes;
    put(c, "beta-group", "v1", bigbuf, 77, 1000, 0);
    is_int((int64_t)stats(c).bytes - before, E_over + 10 + 2 + 77 + G_over + 10,
           "bytes: a new group costs E + key + value + G + group name");
    before = (int64_t)stats(c).bytes;
    put(c, "alpha", "v333", bigbuf, 1, 1000, 0);
    is_int((int64_t)stats(c).bytes - before, -999, "bytes: replacing a value charges only the new length");
    is_int(stats(c).entries, 5, "bytes: replacing did not add an entry");

    /* group removal gives back the group's charge too */
    before = (int64_t)stats(c).bytes;
    l1_invalidate(c, "beta-group", 10);
    is_int(before - (int64_t)stats(c).bytes, E_over + 10 + 2 + 77 + G_over + 10, "bytes: invalidation refunds entry and group");
    l1_invalidate(c, "alpha", 5);
    is_int(stats(c).bytes, 0, "bytes: back to exactly 0 after invalidating everything");
    is_int(stats(c).entries, 0, "bytes: 0 entries");
    l1_destroy(c);
}

/* The model: what bytes must be, from a scan and the known lengths. */
typedef struct model_sum {
    int64_t bytes;
    int64_t entries;
    char seen_group[4096];
    size_t (*len_of)(const void *g, size_t glen, const void *v, size_t vlen);
    int bad_names;
} model_sum;

/* groups are "g<number>", variants "v<number>" */
static int parse_num(const void *p, size_t n, char prefix)
{
    const char *s = p;
    if (n < 2 || s[0] != prefix) return -1;
    int x = 0;
    for (size_t i = 1; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        x = x * 10 + (s[i] - '0');
    }
    return x;
}

static size_t len_of_gv(int gi, int vi) { return 32 + (size_t)((gi * 31 + vi * 57) % 300); }

static size_t model_len(const void *g, size_t glen, const void *v, size_t vlen)
{
    return len_of_gv(parse_num(g, glen, 'g'), parse_num(v, vlen, 'v'));
}

static void model_cb(void *arg, const void *g, size_t glen, const void *v, size_t vlen, uint64_t expires)
{
    model_sum *m = arg;
    int gi = parse_num(g, glen, 'g');
    if (gi < 0 || gi >= (int)sizeof(m->seen_group) || parse_num(v, vlen, 'v') < 0) {
        m->bad_names++;
        return;
    }
    m->entries++;
    m->bytes += E_over + (int64_t)glen + (int64_t)vlen + (int64_t)m->len_of(g, glen, v, vlen);
    if (!m->seen_group[gi]) {
        m->seen_group[gi] = 1;
        m->bytes += G_over + (int64_t)glen;
    }
}

static model_sum model_of(l1 *c)
{
    model_sum m;
    memset(&m, 0, sizeof(m));
    m.len_of = model_len;
    uint64_t cur = 0;
    do cur = l1_scan(c, cur, 100, model_cb, &m);
    while (cur);
    return m;
}

/* Reply bytes: "g<i> v<j> ver=<n>;" padded to len_of_gv(i, j). */
static size_t make_reply(char *buf, int gi, int vi, uint64_t ver)
{
    size_t len = len_of_gv(gi, vi);
    int n = snprintf(buf, len + 1, "g%d v%d ver=%" PRIu64 ";", gi, vi, ver);
    for (size_t i = (size_t)n; i < len; i++) buf[i] = (char)('A' + (gi + vi + (int)i) % 26);
    return len;
}

/*
 * A random workload against a model of Redis, with fills that complete out
 * of order and late (as upstream replies do): writes bump a group's version
 * and invalidate it.  Invariants: a hit is never an older version than the
 * last write, bytes never exceed maxmemory after a store, and bytes always
 * equal the charge formula over what a scan finds.
 */
static void test_random_workload(void)
{
    enum { GROUPS = 300, VARIANTS = 3, OPS = 60000, INFLIGHT = 16 };
    l1_config cfg = cfg_for(15000, 1);
    l1 *c = l1_create(&cfg);
    rng r = {7};
    uint64_t version[GROUPS] = {0};
    struct fill {
        int live, gi, vi;
        uint64_t ticket, ver;
    } pend[INFLIGHT];
    memset(pend, 0, sizeof(pend));
    char g[16], v[16], buf[512];
    uint64_t now = 1000;
    int over = 0, stale_hits = 0, corrupt = 0, hits = 0, stores = 0, model_bad = 0, checks = 0;
    for (int op = 0; op < OPS; op++) {
        now += 1;
        uint64_t x = splitmix(&r);
        /* skew: low groups are hot */
        int gi = (int)((x >> 8) % GROUPS);
        if (x & 1) gi = gi % 20;
        int vi = (int)((x >> 24) % VARIANTS);
        int glen = snprintf(g, sizeof(g), "g%d", gi), vlen = snprintf(v, sizeof(v), "v%d", vi);
        unsigned kind = (unsigned)((x >> 40) % 100);
        if (kind < 70) {
            l1_value *val = l1_get(c, g, (size_t)glen, v, (size_t)vlen, now);
            if (val) {
                hits++;
                char want[512];
                size_t wl = make_reply(want, gi, vi, version[gi]);
                if (val->len != wl || memcmp(val->data, want, wl)) {
                    unsigned long long got = 0;
                    if (sscanf(val->data, "g%*d v%*d ver=%llu;", &got) == 1 && got != version[gi]) stale_hits++;
                    else corrupt++;
                }
                l1_value_put(val);
            } else {
                int slot = (int)((x >> 48) % INFLIGHT);
                if (!pend[slot].live) {
                    pend[slot].live = 1;
                    pend[slot].gi = gi;
                    pend[slot].vi = vi;
                    pend[slot].ticket = l1_ticket(c, g, (size_t)glen);
                    pend[slot].ver = (uint64_t)-1; /* upstream has not read it yet */
                }
            }
        } else if (kind < 74) {
            /* a write to the group: Redis changes it, the invalidation follows */
            version[gi]++;
            l1_invalidate(c, g, (size_t)glen);
        } else if (kind < 96) {
            /* upstream progress on one pending fill: read, or complete */
            int slot = (int)((x >> 48) % INFLIGHT);
            struct fill *f = &pend[slot];
            if (f->live && f->ver == (uint64_t)-1) {
                f->ver = version[f->gi];
            } else if (f->live) {
                size_t len = make_reply(buf, f->gi, f->vi, f->ver);
                int fgl = snprintf(g, sizeof(g), "g%d", f->gi), fvl = snprintf(v, sizeof(v), "v%d", f->vi);
                uint64_t ttl = 100 + splitmix(&r) % 5000;
                stores += l1_store(c, g, (size_t)fgl, v, (size_t)fvl, buf, len, f->ticket, ttl, now);
                if (stats(c).bytes > cfg.maxmemory) over++;
                f->live = 0;
            }
        } else if (kind < 99) {
            l1_expire(c, now, 4);
        } else if (x % 50 == 0) {
            l1_flush(c);
        }
        if (op % 500 == 0) {
            model_sum m = model_of(c);
            l1_stats st = stats(c);
            checks++;
            if (m.bad_names || m.bytes != (int64_t)st.bytes || m.entries != (int64_t)st.entries) {
                if (!model_bad)
                    diag("op %d: stats bytes %" PRIu64 " entries %" PRIu64 ", model %" PRId64 " / %" PRId64, op, st.bytes,
                         st.entries, m.bytes, m.entries);
                model_bad++;
            }
        }
    }
    l1_stats st = stats(c);
    diag("workload: %d hits, %d stores, %" PRIu64 " evictions, %" PRIu64 " stale fills, %" PRIu64 " rejected", hits, stores,
         st.evictions, st.stale_fills, st.admissions_rejected);
    ok(hits > 1000 && stores > 500 && st.evictions > 100 && st.stale_fills > 10,
       "workload: exercised hits, stores, evictions and stale fills");
    is_int(stale_hits, 0, "workload: no hit ever returned a version older than the last write");
    is_int(corrupt, 0, "workload: every hit returned exactly the bytes stored");
    is_int(over, 0, "workload: bytes never above maxmemory after a store");
    is_int(model_bad, 0, "workload: bytes == formula over a scan, at all %d checks", checks);
    l1_flush(c);
    is_int(stats(c).bytes, 0, "workload: flush returns bytes to exactly 0");
    is_int(stats(c).entries, 0, "workload: and entries to 0");
    l1_destroy(c);
}

/* Every way out (invalidate, flush, expire, lazy expiry, eviction) gives back exactly what came in. */
static void test_bytes_zero(void)
{
    const char *how[] = {"l1_invalidate", "l1_flush", "l1_expire", "lazy expiry on l1_get"};
    for (int way = 0; way < 4; way++) {
        l1_config cfg = cfg_for(1 << 22, 0);
        l1 *c = l1_create(&cfg);
        char g[16], v[16], buf[512];
        for (int gi = 0; gi < 40; gi++)
            for (int vi = 0; vi <= gi % 4; vi++) {
                snprintf(g, sizeof(g), "g%d", gi);
                snprintf(v, sizeof(v), "v%d", vi);
                size_t len = make_reply(buf, gi, vi, 0);
                put(c, g, v, buf, len, 100, 0);
            }
        model_sum m = model_of(c);
        is_int(stats(c).bytes, m.bytes, "bytes (%s case): equals the formula after 100 stores", how[way]);
        for (int gi = 0; gi < 40; gi++) {
            snprintf(g, sizeof(g), "g%d", gi);
            if (way == 0) l1_invalidate(c, g, strlen(g));
            if (way == 3)
                for (int vi = 0; vi <= gi % 4; vi++) {
                    snprintf(v, sizeof(v), "v%d", vi);
                    l1_value_put(l1_get(c, g, strlen(g), v, strlen(v), 100));
                }
        }
        if (way == 1) l1_flush(c);
        if (way == 2) l1_expire(c, 100, 1000);
        is_int(stats(c).bytes, 0, "bytes: back to exactly 0 after %s", how[way]);
        is_int(stats(c).entries, 0, "entries: 0 after %s", how[way]);
        l1_destroy(c);
    }
}

static void test_max_entry_size(void)
{
    l1_config cfg = cfg_for(1 << 20, 0);
    cfg.max_entry_size = 100;
    l1 *c = l1_create(&cfg);
    is_int(put(c, "a", "v", bigbuf, 100, 1000, 0), 1, "max_entry_size: a reply of exactly max_entry_size is stored");
    is_int(put(c, "b", "v", bigbuf, 101, 1000, 0), 0, "max_entry_size: one byte more is refused");
    is_int(stats(c).oversize, 1, "max_entry_size: counted as oversize");
    is_int(present(c, "b", "v"), 0, "max_entry_size: not stored");
    l1_destroy(c);

    /* fits max_entry_size but not maxmemory: refused without emptying the cache */
    uint64_t one = lone_charge(1, 1, 10);
    cfg = cfg_for(3 * one, 0);
    cfg.max_entry_size = 1 << 16;
    c = l1_create(&cfg);
    put(c, "x", "v", bigbuf, 10, 1000, 0);
    put(c, "y", "v", bigbuf, 10, 1000, 0);
    touch(c, "z", 10, 0);
    is_int(put(c, "z", "v", bigbuf, 4 * one, 1000, 0), 0, "oversize: a reply larger than maxmemory is refused");
    is_int(stats(c).oversize, 1, "oversize: counted");
    is_int(stats(c).entries, 2, "oversize: nothing was evicted for it");
    is_int(stats(c).evictions, 0, "oversize: no evictions");
    l1_destroy(c);
}

/* ---- expiry ---- */

static void due_cb(void *arg, const void *g, size_t glen, const void *v, size_t vlen, uint64_t expires)
{
    int *due = arg;
    if (expires <= 700) (*due)++;
}

static void test_expiry(void)
{
    l1_config cfg = cfg_for(1 << 20, 0);
    l1 *c = l1_create(&cfg);
    put(c, "k", "v", "hello", 5, 100, 1000); /* expires at 1100 */
    probe p = {"k", "v", 1, 1, 0, 0};
    l1_scan(c, 0, 10, probe_cb, &p);
    is_int(p.expires, 1100, "expiry: scan reports expires_ms = now + ttl");
    l1_value *v = l1_get(c, "k", 1, "v", 1, 1099);
    ok(v && v->len == 5 && !memcmp(v->data, "hello", 5), "expiry: a hit 1 ms before the deadline");
    l1_value_put(v);
    v = l1_get(c, "k", 1, "v", 1, 1100);
    ok(v == NULL, "expiry: a miss at exactly expires_ms");
    l1_value_put(v);
    is_int(stats(c).expirations, 1, "expiry: lazy expiry counted");
    is_int(stats(c).entries, 0, "expiry: the expired entry was dropped by the get");
    is_int(stats(c).bytes, 0, "expiry: and its bytes");
    is_int(stats(c).hits, 1, "expiry: one hit");
    is_int(stats(c).misses, 1, "expiry: one miss");

    /* a hit does not extend the deadline */
    put(c, "k", "v", "hello", 5, 100, 2000);
    for (uint64_t t = 2000; t < 2100; t += 10) l1_value_put(l1_get(c, "k", 1, "v", 1, t));
    v = l1_get(c, "k", 1, "v", 1, 2100);
    ok(v == NULL, "expiry: hits did not extend the ttl");
    l1_value_put(v);
    l1_destroy(c);

    /* l1_expire is bounded by max_work */
    c = l1_create(&cfg);
    char g[16];
    for (int i = 0; i < 10; i++) {
        snprintf(g, sizeof(g), "s%d", i);
        put(c, g, "v", "x", 1, 100, 0);
    }
    for (int i = 0; i < 5; i++) {
        snprintf(g, sizeof(g), "l%d", i);
        put(c, g, "v", "x", 1, 10000, 0);
    }
    is_int(l1_expire(c, 99, 100), 0, "l1_expire: nothing is due 1 ms early");
    is_int(stats(c).entries, 15, "l1_expire: all 15 still there");
    size_t got[5];
    for (int i = 0; i < 5; i++) got[i] = l1_expire(c, 100, 3);
    ok(got[0] == 3 && got[1] == 3 && got[2] == 3 && got[3] == 1 && got[4] == 0,
       "l1_expire(max_work 3): removes 3, 3, 3, 1, 0 of the 10 due (got %zu %zu %zu %zu %zu)", got[0], got[1], got[2],
       got[3], got[4]);
    is_int(stats(c).entries, 5, "l1_expire: the 5 long-lived entries remain");
    is_int(stats(c).expirations, 10, "l1_expire: 10 expirations counted");
    is_int(l1_expire(c, 9999, 100), 0, "l1_expire: long-lived ones not due at 9999");
    is_int(l1_expire(c, 10000, 100), 5, "l1_expire: and due at exactly 10000");
    is_int(stats(c).bytes, 0, "l1_expire: bytes back to 0");
    l1_destroy(c);

    /* "oldest deadlines first": the work goes to entries that are due, even
     * when a long-lived entry is the least recently used one */
    c = l1_create(&cfg);
    put(c, "long", "v", "x", 1, 100000, 0); /* least recently used, not due */
    put(c, "mid", "v", "x", 1, 50, 0);
    put(c, "short", "v", "x", 1, 10, 0);
    size_t n = l1_expire(c, 60, 1);
    is_int(n, 1, "l1_expire(max_work 1): removes one of the two due entries though the LRU tail is not due");
    is_int(present(c, "short", "v"), 0, "l1_expire: the oldest deadline (short, due at 10) went first");
    is_int(present(c, "mid", "v"), 1, "l1_expire: mid (due at 50) waits for the next call");
    n = l1_expire(c, 60, 1);
    is_int(n, 1, "l1_expire: the next call removes mid");
    is_int(present(c, "long", "v"), 1, "l1_expire: the entry not due stays");
    is_int(l1_expire(c, 60, 10), 0, "l1_expire: nothing more is due");
    l1_destroy(c);

    /* after a sweep with enough work, no entry that is due remains */
    c = l1_create(&cfg);
    rng r = {99};
    for (int i = 0; i < 500; i++) {
        snprintf(g, sizeof(g), "e%d", i);
        put(c, g, "v", "x", 1, 1 + splitmix(&r) % 1000, (uint64_t)i);
        if (i % 3 == 0) l1_value_put(l1_get(c, "e0", 2, "v", 1, (uint64_t)i)); /* shuffle recency a little */
    }
    l1_expire(c, 700, 100000);
    int due = 0;
    uint64_t cur = 0;
    do cur = l1_scan(c, cur, 50, due_cb, &due);
    while (cur);
    is_int(due, 0, "l1_expire with ample max_work leaves no entry that is due");
    ok(stats(c).entries > 0 && stats(c).expirations > 0, "l1_expire: some expired, some remain");
    l1_destroy(c);
}

/* ---- jitter ---- */

static void test_jitter(void)
{
    l1_config cfg = cfg_for(1 << 20, 0);
    l1 *c = l1_create(&cfg);
    enum { N = 10000 };
    uint64_t lo = UINT64_MAX, hi = 0;
    double sum = 0;
    int below = 0, above = 0, out = 0;
    for (int i = 0; i < N; i++) {
        uint64_t t = l1_jitter(c, 1000, 20);
        if (t < 800 || t > 1200) out++;
        if (t < lo) lo = t;
        if (t > hi) hi = t;
        if (t < 1000) below++;
        if (t > 1000) above++;
        sum += (double)t;
    }
    double mean = sum / N;
    is_int(out, 0, "jitter 20%%: all 10,000 samples within [800, 1200] (min %" PRIu64 ", max %" PRIu64 ")", lo, hi);
    ok(mean > 990 && mean < 1010, "jitter 20%%: mean %.1f is near 1000", mean);
    ok(below > 4000 && above > 4000, "jitter 20%%: both halves populated (%d below, %d above)", below, above);
    ok(lo < 820 && hi > 1180, "jitter 20%%: the spread reaches near both ends (%" PRIu64 "..%" PRIu64 ")", lo, hi);

    int exact = 0;
    for (int i = 0; i < 100; i++) exact += l1_jitter(c, 1000, 0) == 1000;
    is_int(exact, 100, "jitter 0%%: exactly the ttl");

    int zero = 0;
    for (int i = 0; i < 1000; i++) zero += l1_jitter(c, 1, 100) == 0;
    is_int(zero, 0, "jitter: never 0 (ttl 1 ms, 100%%)");
    ok(l1_jitter(c, 0, 20) >= 1, "jitter: ttl 0 comes back as at least 1 ms");
    ok(l1_jitter(c, 0, 0) >= 1, "jitter: ttl 0 with 0%% comes back as at least 1 ms");

    int outside = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t t = l1_jitter(c, 1000, 100);
        outside += t < 1 || t > 2000;
    }
    is_int(outside, 0, "jitter 100%%: within [1, 2000]");
    l1_destroy(c);
}

/* ---- admission ---- */

static void test_admission_threshold(void)
{
    l1_config cfg = cfg_for(1 << 20, 2);
    l1 *c = l1_create(&cfg);
    is_int(fill(c, "a", "v", "1", 1, 1000, 0), 0, "hot_threshold 2: a group seen once is refused");
    is_int(stats(c).admissions_rejected, 1, "hot_threshold 2: counted as admissions_rejected");
    is_int(l1_frequency(c, "a", 1), 1, "hot_threshold 2: its frequency is 1");
    is_int(fill(c, "a", "v", "1", 1, 1000, 0), 1, "hot_threshold 2: seen twice, admitted");
    l1_value *v = l1_get(c, "a", 1, "v", 1, 1);
    ok(v && v->len == 1 && v->data[0] == '1', "hot_threshold 2: and then hits");
    l1_value_put(v);

    is_int(put(c, "never", "v", "1", 1, 1000, 0), 0, "hot_threshold 2: a group never looked up is refused");
    /* frequency is per group: lookups of one variant admit another */
    touch(c, "b", 2, 0);
    is_int(put(c, "b", "other", "1", 1, 1000, 0), 1, "hot_threshold 2: frequency is per group, not per variant");
    l1_destroy(c);
}

static void test_tinylfu_victim(void)
{
    char val[64];
    fill_bytes(val, sizeof(val), 3);
    uint64_t one = lone_charge(4, 1, sizeof(val));
    l1_config cfg = cfg_for(10 * one, 1);
    l1 *c = l1_create(&cfg);
    char g[8];
    for (int i = 0; i < 10; i++) {
        snprintf(g, sizeof(g), "h%03d", i);
        touch(c, g, 9, 0);
        fill(c, g, "v", val, sizeof(val), 60000, 0);
    }
    is_int(stats(c).entries, 10, "tinylfu: the cache is full of 10 hot entries");
    ok(l1_frequency(c, "h000", 4) >= 9, "tinylfu: the LRU victim's frequency is %u", l1_frequency(c, "h000", 4));
    is_int(fill(c, "cold", "v", val, sizeof(val), 60000, 0), 0, "tinylfu: a cold candidate does not evict a hot victim");
    is_int(stats(c).evictions, 0, "tinylfu: no eviction");
    is_int(stats(c).admissions_rejected, 1, "tinylfu: counted as admissions_rejected");
    is_int(present(c, "h000", "v"), 1, "tinylfu: the hot LRU victim is still there");

    touch(c, "warm", 14, 0);
    is_int(fill(c, "warm", "v", val, sizeof(val), 60000, 0), 1, "tinylfu: a candidate hotter than the victim is admitted");
    is_int(stats(c).evictions, 1, "tinylfu: by evicting one entry");
    is_int(present(c, "h000", "v"), 0, "tinylfu: the LRU one");
    ok(stats(c).bytes <= cfg.maxmemory, "tinylfu: within maxmemory");
    l1_destroy(c);
}

typedef struct hotset {
    int n;
    char seen[100];
} hotset;

static void hot_cb(void *arg, const void *g, size_t glen, const void *v, size_t vlen, uint64_t exp)
{
    hotset *h = arg;
    const char *s = g;
    if (glen == 7 && !memcmp(s, "hot:", 4)) {
        int i = (s[4] - '0') * 100 + (s[5] - '0') * 10 + (s[6] - '0');
        if (i >= 0 && i < 100 && !h->seen[i]) {
            h->seen[i] = 1;
            h->n++;
        }
    }
}

static int hot_present(l1 *c)
{
    hotset h;
    memset(&h, 0, sizeof(h));
    uint64_t cur = 0;
    do cur = l1_scan(c, cur, 64, hot_cb, &h);
    while (cur);
    return h.n;
}

/*
 * A scan: 100 hot keys fill the cache and are read many times, then 100,000
 * cold keys are each read once and offered.  Values are 10 KB, so the cache
 * (100 entries) has a sketch sized for its memory, as in production.
 */
static void test_scan_resistance(void)
{
    enum { HOT = 100, VAL = 10000, COLD = 100000 };
    uint64_t one = lone_charge(7, 1, VAL);
    l1_config cfg = cfg_for(HOT * one, 1);
    l1 *c = l1_create(&cfg);
    char g[32];
    int stored = 0;
    for (int round = 0; round < 20; round++)
        for (int i = 0; i < HOT; i++) {
            snprintf(g, sizeof(g), "hot:%03d", i);
            int r = fill(c, g, "v", bigbuf, VAL, 3600000, 0);
            if (r == 1) stored++;
        }
    is_int(stored, HOT, "scan: 100 hot keys stored");
    is_int(stats(c).entries, HOT, "scan: the cache is full");
    uint64_t ev0 = stats(c).evictions;
    int admitted = 0, over = 0;
    for (int i = 0; i < COLD; i++) {
        snprintf(g, sizeof(g), "cold:%d", i);
        int r = fill(c, g, "v", bigbuf, VAL, 3600000, 1);
        if (r == 1) admitted++;
        if (stats(c).bytes > cfg.maxmemory) over++;
    }
    diag("scan: %d of %d cold keys admitted, %" PRIu64 " evictions", admitted, COLD, stats(c).evictions - ev0);
    is_int(hot_present(c), HOT, "scan: all 100 hot keys survived 100,000 cold keys");
    is_int(over, 0, "scan: bytes never above maxmemory");
    l1_destroy(c);

    /* Small entries: a narrow sketch that ages every few thousand accesses.
     * The hot keys stay hot during the scan (each read once per 200 cold
     * keys, refilled on a miss, as the proxy does); a plain LRU of 100 would
     * lose every one of them between two reads. */
    one = lone_charge(7, 1, 100);
    cfg = cfg_for(HOT * one, 1);
    c = l1_create(&cfg);
    for (int round = 0; round < 20; round++)
        for (int i = 0; i < HOT; i++) {
            snprintf(g, sizeof(g), "hot:%03d", i);
            fill(c, g, "v", bigbuf, 100, 3600000, 0);
        }
    is_int(stats(c).entries, HOT, "scan (small entries): the cache is full of hot keys");
    admitted = 0;
    int hot_reads = 0, hot_hits = 0;
    for (int i = 0; i < COLD; i++) {
        snprintf(g, sizeof(g), "cold:%d", i);
        if (fill(c, g, "v", bigbuf, 100, 3600000, 1) == 1) admitted++;
        if (i % 2 == 0) {
            snprintf(g, sizeof(g), "hot:%03d", (i / 2) % HOT);
            hot_reads++;
            int r = fill(c, g, "v", bigbuf, 100, 3600000, 1);
            hot_hits += r == -1;
        }
    }
    diag("scan (small entries): %d cold keys admitted, hot hit ratio %.4f", admitted, (double)hot_hits / hot_reads);
    ok(admitted < COLD / 1000, "scan (small entries): under 0.1%% of cold keys admitted (%d)", admitted);
    ok(hot_hits >= hot_reads - hot_reads / 20, "scan (small entries): hot keys hit at least 95%% of the time (%d of %d)",
       hot_hits, hot_reads);
    l1_destroy(c);
}

static void test_sketch_halving(void)
{
    l1_config cfg = cfg_for(1 << 20, 0);
    cfg.sample_size = 100;
    l1 *c = l1_create(&cfg);
    touch(c, "A", 10, 0);
    is_int(l1_frequency(c, "A", 1), 10, "sketch: 10 lookups, estimate 10");
    is_int(l1_frequency(c, "A", 1), 10, "sketch: l1_frequency itself does not count");
    touch(c, "B", 89, 0);
    is_int(l1_frequency(c, "A", 1), 10, "sketch: 99 accesses in, no halving yet");
    is_int(l1_frequency(c, "B", 1), 15, "sketch: 4-bit counters saturate at 15");
    touch(c, "B", 1, 0);
    is_int(l1_frequency(c, "A", 1), 5, "sketch: the 100th access (sample_size) halves: 10 -> 5");
    is_int(l1_frequency(c, "B", 1), 7, "sketch: 15 -> 7");
    touch(c, "C", 100, 0);
    ok(l1_frequency(c, "A", 1) <= 2, "sketch: another sample_size accesses decay it further (%u)", l1_frequency(c, "A", 1));
    is_int(l1_frequency(c, "never", 5), 0, "sketch: an unseen group estimates 0");
    l1_destroy(c);

    /* The sketch follows maxmemory: created for 64 MB (a halving every
     * ~5.2M accesses), then shrunk to 128 KB (every 10 x 1025 accesses), as
     * a CONFIG SET or reload does.  A sketch left at its first size would
     * never age here and saturate every hot key at 15, so the LRU victim
     * would win every tie and the hot set would freeze. */
    cfg = cfg_for((size_t)64 << 20, 0);
    c = l1_create(&cfg);
    touch(c, "A", 12, 0);
    is_int(l1_frequency(c, "A", 1), 12, "sketch resize: 12 lookups at 64 MB");
    l1_set_limits(c, 128 << 10, 128 << 10, 0);
    is_int(l1_frequency(c, "A", 1), 0, "sketch resize: a new width starts the counts over");
    touch(c, "A", 12, 0);
    touch(c, "B", 10250 - 12 - 1, 0);
    is_int(l1_frequency(c, "A", 1), 12, "sketch resize: no halving before the new sample size");
    touch(c, "B", 1, 0);
    is_int(l1_frequency(c, "A", 1), 6, "sketch resize: halved at 10 x (128 KB / 128 + 1) accesses: 12 -> 6");
    touch(c, "B", 10250 * 3, 0);
    ok(l1_frequency(c, "A", 1) <= 1, "sketch resize: keeps ageing at the new size (%u)", l1_frequency(c, "A", 1));
    l1_destroy(c);
}

/* An entry with a then: a key whose expiry in Redis is known reads as its
 * then (a null reply) from that expiry on, with no fetch. */
static int then_put(l1 *c, const char *g, const char *val, uint64_t ttl, uint64_t then_ttl, uint64_t now)
{
    l1_then then = {"$-1\r\n", 5, then_ttl};
    return l1_store_then(c, g, strlen(g), "v", 1, val, strlen(val), l1_ticket(c, g, strlen(g)), ttl, now, &then);
}

static int reads_as(l1 *c, const char *g, uint64_t now, const char *want, uint64_t *ttl)
{
    l1_meta m = {0, 0, 0};
    l1_value *v = l1_get_meta(c, g, strlen(g), "v", 1, now, &m);
    int r = want ? v && v->len == strlen(want) && !memcmp(v->data, want, v->len) : v == NULL;
    if (ttl) *ttl = m.ttl_ms;
    if (v && !m.with_key) r = 0; /* every entry here was stored with a then */
    l1_value_put(v);
    return r;
}

static void test_then(void)
{
    l1_config cfg = cfg_for(1 << 20, 0);
    l1 *c = l1_create(&cfg);
    uint64_t ttl = 0;
    ok(then_put(c, "k", "$5\r\nhello\r\n", 100, 50, 1000), "then: stored (value until 1100, then nil until 1150)");
    is_int(stats(c).bytes, lone_charge(1, 1, 11) + sizeof(l1_value) + 5, "then: its bytes count too");
    ok(reads_as(c, "k", 1099, "$5\r\nhello\r\n", &ttl) && ttl == 100, "then: the value until its expiry");
    ok(reads_as(c, "k", 1100, "$-1\r\n", &ttl), "then: at the expiry, the then, with no miss");
    is_int(ttl, 50, "then: reported with the then's ttl");
    is_int(stats(c).successions, 1, "then: one succession counted");
    is_int(stats(c).misses, 0, "then: no miss");
    is_int(stats(c).bytes, lone_charge(1, 1, 5), "then: the old value's bytes are freed");
    is_int(l1_expire(c, 1149, 100), 0, "then: active expiry leaves it before its deadline");
    ok(reads_as(c, "k", 1149, "$-1\r\n", NULL), "then: still the then 1 ms before its end");
    is_int(l1_expire(c, 1150, 100), 1, "then: active expiry removes it at its deadline");
    ok(reads_as(c, "k", 1150, NULL, NULL), "then: gone after");
    is_int(stats(c).bytes, 0, "then: no bytes left");

    /* active expiry across the value's expiry, without a read */
    then_put(c, "k", "$1\r\nx\r\n", 100, 50, 2000);
    is_int(l1_expire(c, 2120, 100), 0, "then: active expiry does not drop an entry between its expiry and deadline");
    ok(reads_as(c, "k", 2120, "$-1\r\n", NULL), "then: read as the then after its value's expiry");

    /* the key expires now: ttl 0 with a then */
    ok(then_put(c, "z", "$1\r\nx\r\n", 0, 50, 3000), "then: ttl 0 with a then is stored");
    ok(reads_as(c, "z", 3000, "$-1\r\n", NULL), "then: and reads as the then at once");
    ok(!put(c, "z0", "v", "x", 1, 0, 3000), "then: ttl 0 without a then is not stored");

    /* ends with its key, nothing follows (a read whose missing-key reply is not null) */
    l1_then none = {NULL, 0, 0};
    ok(l1_store_then(c, "n", 1, "v", 1, "*0\r\n", 4, l1_ticket(c, "n", 1), 100, 3000, &none),
       "then: an entry that ends with its key, with nothing to follow, is stored");
    l1_meta m = {0, 0, 0};
    l1_value *v = l1_get_meta(c, "n", 1, "v", 1, 3050, &m);
    ok(v && m.with_key, "then: and l1_meta says it ends with its key");
    l1_value_put(v);
    ok(reads_as(c, "n", 3100, NULL, NULL), "then: with nothing to follow, it is gone at its expiry");

    /* an invalidation drops both parts; a ticket from before it is refused */
    uint64_t t = l1_ticket(c, "w", 1);
    then_put(c, "w", "$1\r\nx\r\n", 100, 50, 4000);
    l1_invalidate(c, "w", 1);
    ok(reads_as(c, "w", 4100, NULL, NULL), "then: an invalidation drops the then too");
    l1_then then = {"$-1\r\n", 5, 50};
    ok(!l1_store_then(c, "w", 1, "v", 1, "$1\r\nx\r\n", 7, t, 100, 4000, &then), "then: a stale ticket is refused");
    l1_destroy(c);
}

/* ---- lifetimes from the fill's send time (l1_life_of), and the fresh clock ---- */

static l1_fill fill_of(uint64_t sent, long long pttl, int absent, int bounded, uint64_t neg)
{
    l1_fill f = {sent, pttl, absent, 1, bounded, 1000, 10, neg};
    return f;
}

/*
 * A fill sent at 1000 whose replies are processed at 1005, PTTL 60: Redis
 * ran the PTTL after 1000, so the key is there until 1060 at least, and no
 * later moment is known to be safe.  The value ends at 1060 (counted from
 * the send), not at 1065 (from the reply).
 */
static void test_life_from_send(void)
{
    l1_config cfg = cfg_for(1 << 20, 0);
    l1 *c = l1_create(&cfg);
    l1_fill f = fill_of(1000, 60, 0, 0, 250);
    l1_life life;
    l1_life_of(c, &f, &life);
    is_int(life.expires_ms, 1060, "life: PTTL 60 of a fill sent at 1000 ends the value at 1060 (send + PTTL)");
    ok(life.with_key, "life: ... and it ends with its key");
    is_int(life.then_end_ms, 1060 + 250, "life: the null follows for l1-negative-ttl (tracking)");
    /* stored by the proxy's flow at 1005, relative to its now */
    uint64_t now = 1005;
    l1_then then = {"$-1\r\n", 5, life.then_end_ms - life.expires_ms};
    ok(l1_store_then(c, "k", 1, "v", 1, "$1\r\nx\r\n", 7, l1_ticket(c, "k", 1), life.expires_ms - now, now, &then),
       "life: stored at 1005");
    ok(reads_as(c, "k", 1059, "$1\r\nx\r\n", NULL), "life: the value at 1059");
    ok(reads_as(c, "k", 1060, "$-1\r\n", NULL), "life: the null at 1060, 5 ms before send-free counting would say");

    l1_life_of(c, &(l1_fill){1000, -1, 0, 1, 0, 1000, 10, 250}, &life);
    ok(!life.with_key && life.expires_ms >= 1900 && life.expires_ms <= 2100,
       "life: PTTL -1 (no expiry): l1-ttl with jitter from the send (%llu)", (unsigned long long)life.expires_ms);
    l1_life_of(c, &(l1_fill){1000, -2, 1, 1, 0, 1000, 10, 250}, &life);
    ok(!life.with_key && life.expires_ms == 1250, "life: PTTL -2 with an absent reply: l1-negative-ttl from the send");
    l1_life_of(c, &(l1_fill){1000, -2, 0, 1, 0, 1000, 10, 250}, &life);
    is_int(life.expires_ms, 1000, "life: PTTL -2 with a value (the key went in between): not kept");
    l1_life_of(c, &(l1_fill){1000, 5000, 0, 1, 0, 1000, 10, 250}, &life);
    ok(!life.with_key && life.expires_ms <= 2100, "life: a key that outlives l1-ttl: l1-ttl with jitter");

    /*
     * TTL-only (bounded): entry plus null never last more than l1-ttl plus
     * jitter (1100) from the send, whatever the PTTL and l1-negative-ttl.
     * Tracking (not bounded): the null keeps its own length.
     */
    int worst = 0, ends_null = 0;
    for (long long pttl = 0; pttl <= 1200; pttl += 7)
        for (uint64_t neg = 0; neg <= 2000; neg += 250) {
            l1_fill b = fill_of(1000, pttl, 0, 1, neg);
            l1_life_of(c, &b, &life);
            uint64_t end = life.then_end_ms ? life.then_end_ms : life.expires_ms;
            if ((int)(end - 1000) > worst) worst = (int)(end - 1000);
            ends_null += life.then_end_ms != 0;
        }
    ok(worst <= 1100, "life: TTL-only, entry and null together end within 1100 ms of the send (worst %d)", worst);
    ok(ends_null > 0, "life: TTL-only, a null still follows where the bound leaves room");
    l1_life_of(c, &(l1_fill){1000, 60, 0, 1, 1, 1000, 0, 1000}, &life);
    is_int(life.then_end_ms, 2000,
           "life: TTL-only, PTTL 60, l1-ttl 1000 with no jitter, l1-negative-ttl 1000: the null ends at l1-ttl from "
           "the send (2000), not 2060");
    l1_life_of(c, &(l1_fill){1000, 60, 0, 1, 0, 1000, 0, 1000}, &life);
    is_int(life.then_end_ms, 2060, "life: with tracking, the same null keeps its full l1-negative-ttl (2060)");
    l1_destroy(c);
}

static int fresh_calls;
static uint64_t fresh_at;
static uint64_t fresh_clock(void *arg)
{
    (void)arg;
    fresh_calls++;
    return fresh_at;
}

/* l1_get_fresh: an entry that ends with its key is judged by the fresh clock; others by now_ms, without reading it. */
static void test_get_fresh(void)
{
    l1_config cfg = cfg_for(1 << 20, 0);
    l1 *c = l1_create(&cfg);
    then_put(c, "k", "$1\r\nx\r\n", 60, 50, 1000); /* the value until 1060 */
    put(c, "o", "v", "$1\r\ny\r\n", 7, 60, 1000);  /* ordinary: until 1060 too */
    fresh_at = 1060;
    fresh_calls = 0;
    l1_meta m;
    l1_value *v = l1_get_fresh(c, "k", 1, "v", 1, 1050, fresh_clock, NULL, &m);
    ok(v && v->len == 5 && !memcmp(v->data, "$-1\r\n", 5),
       "fresh: an entry that ends with its key, read at a stale 1050 while the clock says 1060: its null");
    l1_value_put(v);
    is_int(fresh_calls, 1, "fresh: the clock was read once");
    v = l1_get_fresh(c, "o", 1, "v", 1, 1050, fresh_clock, NULL, &m);
    ok(v && v->len == 7, "fresh: an ordinary entry is judged by now_ms");
    l1_value_put(v);
    is_int(fresh_calls, 1, "fresh: ... without reading the clock");
    fresh_at = 1000; /* a fresh clock behind now_ms is not believed */
    v = l1_get_fresh(c, "k", 1, "v", 1, 1200, fresh_clock, NULL, &m);
    ok(!v, "fresh: a fresh reading older than now_ms does not bring an entry back");
    l1_destroy(c);
}

/* ---- tickets ---- */

static void test_tickets(void)
{
    l1_config cfg = cfg_for(1 << 20, 0);
    l1 *c = l1_create(&cfg);

    uint64_t t = l1_ticket(c, "a", 1);
    l1_invalidate(c, "a", 1);
    is_int(l1_store(c, "a", 1, "v", 1, "old", 3, t, 1000, 0), 0, "ticket: a fill ticketed before an invalidation is refused");
    is_int(stats(c).stale_fills, 1, "ticket: counted as stale_fills");
    is_int(present(c, "a", "v"), 0, "ticket: nothing stored");
    uint64_t t2 = l1_ticket(c, "a", 1);
    is_int(l1_store(c, "a", 1, "v", 1, "new", 3, t2, 1000, 0), 1, "ticket: a ticket taken after the invalidation is accepted");

    /* a late reply from before a write must not overwrite a newer fill */
    uint64_t old = l1_ticket(c, "b", 1);
    l1_invalidate(c, "b", 1);
    uint64_t fresh = l1_ticket(c, "b", 1);
    is_int(l1_store(c, "b", 1, "v", 1, "v2", 2, fresh, 1000, 0), 1, "ticket: the newer fill is stored");
    is_int(l1_store(c, "b", 1, "v", 1, "v1", 2, old, 1000, 0), 0, "ticket: the late older fill is refused");
    l1_value *v = l1_get(c, "b", 1, "v", 1, 1);
    ok(v && v->len == 2 && !memcmp(v->data, "v2", 2), "ticket: the newer reply is what hits");
    l1_value_put(v);

    /* the same ticket stays good across invalidations of other groups (per slot, not global) */
    enum { G = 1000 };
    uint64_t tk[G];
    char g[16];
    for (int i = 0; i < G; i++) {
        snprintf(g, sizeof(g), "grp%d", i);
        tk[i] = l1_ticket(c, g, strlen(g));
    }
    l1_invalidate(c, "somebody-else", 13);
    uint64_t stale0 = stats(c).stale_fills;
    int accepted = 0;
    for (int i = 0; i < G; i++) {
        snprintf(g, sizeof(g), "grp%d", i);
        accepted += l1_store(c, g, strlen(g), "v", 1, "x", 1, tk[i], 1000, 0);
    }
    ok(accepted >= G - 5, "ticket: invalidating one group leaves other groups' tickets good (%d of %d)", accepted, G);
    ok(stats(c).stale_fills - stale0 <= 5, "ticket: at most a few slot-sharing stale fills");

    /* flush refuses every earlier ticket, of every group */
    uint64_t ta = l1_ticket(c, "a", 1), tb = l1_ticket(c, "zzz", 3);
    l1_flush(c);
    is_int(stats(c).entries, 0, "flush: drops everything");
    is_int(stats(c).flushes, 1, "flush: counted");
    stale0 = stats(c).stale_fills;
    is_int(l1_store(c, "a", 1, "v", 1, "x", 1, ta, 1000, 0), 0, "flush: an earlier ticket is refused");
    is_int(l1_store(c, "zzz", 3, "v", 1, "x", 1, tb, 1000, 0), 0, "flush: an earlier ticket of another group is refused");
    is_int(stats(c).stale_fills - stale0, 2, "flush: both counted as stale_fills");
    uint64_t tc = l1_ticket(c, "a", 1);
    is_int(l1_store(c, "a", 1, "v", 1, "x", 1, tc, 1000, 0), 1, "flush: a ticket taken after it is accepted");
    l1_destroy(c);
}

static void test_invalidate_variants(void)
{
    l1_config cfg = cfg_for(1 << 20, 0);
    l1 *c = l1_create(&cfg);
    const char *va[] = {"db0 GET", "db1 GET", "db0 HGET f", "db0 RESP3 GET"};
    for (int i = 0; i < 4; i++) put(c, "user:42", va[i], "r", 1, 1000, 0);
    put(c, "user:4", "db0 GET", "r", 1, 1000, 0);
    put(c, "user:420", "db0 GET", "r", 1, 1000, 0);
    put(c, "user:43", "db0 GET", "r", 1, 1000, 0);
    put(c, "user:43", "db1 GET", "r", 1, 1000, 0);
    /* recency shuffled: one variant was just read */
    l1_value_put(l1_get(c, "user:42", 7, va[2], strlen(va[2]), 1));
    is_int(stats(c).entries, 8, "invalidate: 8 entries");
    uint64_t inv0 = stats(c).invalidations;
    l1_invalidate(c, "user:42", 7);
    is_int(stats(c).invalidations - inv0, 1, "invalidate: counted");
    int left = 0;
    for (int i = 0; i < 4; i++) left += present(c, "user:42", va[i]);
    is_int(left, 0, "invalidate: all four variants of the group are gone");
    is_int(stats(c).entries, 4, "invalidate: the other groups' 4 entries remain");
    ok(present(c, "user:4", "db0 GET") && present(c, "user:420", "db0 GET") && present(c, "user:43", "db0 GET") &&
           present(c, "user:43", "db1 GET"),
       "invalidate: prefixes and neighbours of the group are untouched");
    l1_invalidate(c, "user:42", 7); /* again, now empty */
    is_int(stats(c).entries, 4, "invalidate: invalidating an absent group drops nothing");
    l1_invalidate(c, "nobody", 6);
    is_int(stats(c).entries, 4, "invalidate: nor does a group never stored");
    l1_destroy(c);
}

/* A lookup walks a group of few entries and hashes into the table for a
 * larger one: every variant is found with its own value either way, as the
 * group grows past the walk's limit, and once it is dropped and small again. */
static void test_many_variants(void)
{
    l1_config cfg = cfg_for(1 << 20, 0);
    l1 *c = l1_create(&cfg);
    enum { N = 40 };
    char v[16], val[16];
    int found = 0, wrong = 0;
    for (int n = 1; n <= N; n++) {
        snprintf(v, sizeof(v), "HGET f%d", n - 1);
        snprintf(val, sizeof(val), "value %d", n - 1);
        put(c, "hash:1", v, val, strlen(val), 1000, 0);
        /* after each store, every variant so far */
        for (int i = 0; i < n; i++) {
            snprintf(v, sizeof(v), "HGET f%d", i);
            snprintf(val, sizeof(val), "value %d", i);
            l1_value *got = l1_get(c, "hash:1", 6, v, strlen(v), 1);
            found += got != NULL;
            wrong += got && (got->len != strlen(val) || memcmp(got->data, val, got->len));
            l1_value_put(got);
        }
    }
    is_int(found, N * (N + 1) / 2, "variants: each of up to %d variants of one group found after every store", N);
    is_int(wrong, 0, "variants: each with its own value");
    ok(l1_get(c, "hash:1", 6, "HGET f", 6, 1) == NULL && l1_get(c, "hash:1", 6, "HGET f400", 9, 1) == NULL &&
           l1_get(c, "hash:", 5, "1HGET f1", 8, 1) == NULL,
       "variants: a prefix, a longer variant and a shifted split of group and variant miss");
    /* the group goes, and comes back small */
    l1_invalidate(c, "hash:1", 6);
    for (int i = 0; i < 3; i++) {
        snprintf(v, sizeof(v), "HGET f%d", i);
        snprintf(val, sizeof(val), "value %d", i);
        put(c, "hash:1", v, val, strlen(val), 1000, 2);
    }
    int back = 0;
    for (int i = 0; i < 3; i++) {
        snprintf(v, sizeof(v), "HGET f%d", i);
        l1_value *got = l1_get(c, "hash:1", 6, v, strlen(v), 3);
        back += got != NULL;
        l1_value_put(got);
    }
    is_int(back, 3, "variants: after an invalidation, a new small group is found again");
    is_int(stats(c).entries, 3, "variants: and holds its 3 entries");
    l1_destroy(c);
}

/* ---- refcounts ---- */

static void test_refcounts(void)
{
    char val[200];
    fill_bytes(val, sizeof(val), 5);
    l1_config cfg = cfg_for(1 << 20, 0);
    l1 *c = l1_create(&cfg);

    put(c, "a", "v", val, sizeof(val), 1000, 0);
    l1_value *v = l1_get(c, "a", 1, "v", 1, 0);
    ok(v != NULL, "refs: got a value");
    is_int(v->refs, 2, "refs: the cache's reference and ours");
    l1_invalidate(c, "a", 1);
    is_int(v->refs, 1, "refs: invalidation dropped the cache's reference only");
    is_mem(v->data, v->len, val, sizeof(val), "refs: the bytes outlive the invalidated entry");
    l1_value_put(v);

    /* flush */
    put(c, "b", "v", val, sizeof(val), 1000, 0);
    v = l1_get(c, "b", 1, "v", 1, 0);
    l1_value *v2 = l1_get(c, "b", 1, "v", 1, 0);
    ok(v == v2 && v->refs == 3, "refs: two readers share one value (refs %u)", v ? v->refs : 0);
    l1_flush(c);
    l1_value_put(v2);
    is_mem(v->data, v->len, val, sizeof(val), "refs: the bytes outlive flush and another reader's put");
    l1_value_put(v);

    /* replacement by a newer fill */
    put(c, "c", "v", val, sizeof(val), 1000, 0);
    v = l1_get(c, "c", 1, "v", 1, 0);
    put(c, "c", "v", "new", 3, 1000, 0);
    is_mem(v->data, v->len, val, sizeof(val), "refs: the old bytes outlive a replacement");
    v2 = l1_get(c, "c", 1, "v", 1, 0);
    ok(v2 && v2 != v && v2->len == 3 && !memcmp(v2->data, "new", 3), "refs: a new reader gets the new value");
    l1_value_put(v2);
    l1_value_put(v);

    /* lazy expiry */
    put(c, "d", "v", val, sizeof(val), 10, 0);
    v = l1_get(c, "d", 1, "v", 1, 5);
    ok(l1_get(c, "d", 1, "v", 1, 10) == NULL, "refs: expired on a later get");
    is_mem(v->data, v->len, val, sizeof(val), "refs: the bytes outlive the expired entry");
    l1_value_put(v);
    l1_destroy(c);

    /* eviction */
    uint64_t one = lone_charge(1, 1, sizeof(val));
    cfg = cfg_for(2 * one, 0);
    c = l1_create(&cfg);
    put(c, "A", "v", val, sizeof(val), 1000, 0);
    put(c, "B", "v", val, sizeof(val), 1000, 0);
    v = l1_get(c, "A", 1, "v", 1, 0);
    touch(c, "C", 10, 0);
    touch(c, "D", 10, 0);
    put(c, "C", "v", "c", 1, 1000, 0);
    put(c, "D", "v", "d", 1, 1000, 0);
    is_int(present(c, "A", "v"), 0, "refs: A was evicted");
    is_int(v->refs, 1, "refs: eviction dropped only the cache's reference");
    is_mem(v->data, v->len, val, sizeof(val), "refs: the bytes outlive eviction");
    l1_value_put(v);

    /* destroy */
    put(c, "E", "v", val, sizeof(val), 1000, 0);
    touch(c, "E", 15, 0);
    put(c, "E", "v", val, sizeof(val), 1000, 0);
    v = l1_get(c, "E", 1, "v", 1, 0);
    l1_destroy(c);
    ok(v != NULL, "refs: got E before destroy");
    if (v) {
        is_mem(v->data, v->len, val, sizeof(val), "refs: the bytes outlive l1_destroy");
        l1_value_put(v); /* LeakSanitizer reports it if this does not free */
    } else {
        skip("E not stored");
    }
}

/* ---- scan ---- */

typedef struct visits {
    int count[100][10];
    int bad;
    int expires_wrong;
} visits;

static void visit_cb(void *arg, const void *g, size_t glen, const void *v, size_t vlen, uint64_t expires)
{
    visits *vs = arg;
    int gi = parse_num(g, glen, 'g'), vi = parse_num(v, vlen, 'v');
    if (gi < 0 || gi >= 100 || vi < 0 || vi >= 10) {
        vs->bad++;
        return;
    }
    vs->count[gi][vi]++;
    if (expires != (uint64_t)(50000 + gi * 10 + vi)) vs->expires_wrong++;
}

static void test_scan(void)
{
    l1_config cfg = cfg_for(1 << 22, 0);
    l1 *c = l1_create(&cfg);
    visits vs;
    memset(&vs, 0, sizeof(vs));
    is_int(l1_scan(c, 0, 10, visit_cb, &vs), 0, "scan: an empty cache ends at once");
    is_int(vs.bad + vs.count[0][0], 0, "scan: and visits nothing");

    char g[16], v[16];
    for (int gi = 0; gi < 100; gi++)
        for (int vi = 0; vi < 10; vi++) {
            snprintf(g, sizeof(g), "g%d", gi);
            snprintf(v, sizeof(v), "v%d", vi);
            put(c, g, v, "x", 1, (uint64_t)(50000 + gi * 10 + vi), 0);
        }
    const size_t counts[] = {1, 7, 64, 1000, 5000};
    for (int k = 0; k < 5; k++) {
        memset(&vs, 0, sizeof(vs));
        uint64_t cur = 0;
        int calls = 0;
        do {
            cur = l1_scan(c, cur, counts[k], visit_cb, &vs);
            calls++;
        } while (cur && calls < 5000);
        int once = 0, total = 0;
        for (int gi = 0; gi < 100; gi++)
            for (int vi = 0; vi < 10; vi++) {
                once += vs.count[gi][vi] == 1;
                total += vs.count[gi][vi];
            }
        is_int(once, 1000, "scan (count %zu): every one of 1000 entries visited exactly once (%d calls, %d visits)", counts[k],
               calls, total);
        is_int(vs.bad, 0, "scan (count %zu): group and variant passed apart, intact", counts[k]);
        is_int(vs.expires_wrong, 0, "scan (count %zu): expires_ms is each entry's deadline", counts[k]);
        ok(calls <= (int)((1000 + counts[k] - 1) / counts[k]) + 1, "scan (count %zu): %d calls", counts[k], calls);
    }
    l1_destroy(c);
}

int main(void)
{
    test_hash();
    test_hostile_keys();
    test_admit_all();
    test_lru_order();
    test_bytes_formula();
    test_bytes_zero();
    test_random_workload();
    test_max_entry_size();
    test_expiry();
    test_then();
    test_life_from_send();
    test_get_fresh();
    test_jitter();
    test_admission_threshold();
    test_tinylfu_victim();
    test_scan_resistance();
    test_sketch_halving();
    test_tickets();
    test_invalidate_variants();
    test_many_variants();
    test_refcounts();
    test_scan();
    done_testing();
    return exit_status();
}
