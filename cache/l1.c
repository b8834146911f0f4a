/*
 * l1: the L1 cache library.  See l1.h for what it promises.
 *
 * Layout: entries live in one uthash table keyed by [u32 glen][group][variant]
 * and hashed with a keyed SipHash (HASH_*_BYHASHVALUE: uthash never hashes
 * itself), in one LRU list, and in their group's list (a second table keyed
 * by the group), so an invalidation drops a group's entries without a scan.
 */
#include "cache/l1.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <uthash.h>

#define SLOTS (1u << 15)       /* invalidation memory, per hash slot of a group */
#define SKETCH_ROWS 4

typedef struct l1_group l1_group;

typedef struct l1_entry {
    UT_hash_handle hh;
    struct l1_entry *lru_prev, *lru_next; /* head: most recently used */
    struct l1_entry *gprev, *gnext;
    l1_group *group;
    l1_value *value;
    uint64_t expires_ms;
    uint64_t ttl_ms;
    l1_value *then;           /* the value from expires_ms on, for then_ttl (l1_store_then) */
    int with_key;             /* stored by l1_store_then: it ends with its key */
    uint64_t then_ttl;
    uint64_t deadline;        /* when the entry goes: expires_ms, plus then_ttl if it has a then */
    size_t heap_idx;          /* position in the expiry heap, keyed by deadline */
    size_t charge;
    size_t klen;
    char key[];               /* [u32 glen][group][variant] */
} l1_entry;

struct l1_group {
    UT_hash_handle hh;
    l1_entry *entries;
    size_t nentries;          /* in entries: few, and a lookup walks them (see find_in) */
    size_t glen;
    char name[];
};

struct l1 {
    l1_config cfg;
    l1_entry *table;
    l1_group *groups;
    l1_entry *lru_head, *lru_tail;
    l1_entry **heap;          /* min-heap on deadline, for active expiry */
    size_t heap_len, heap_cap;
    l1_stats st;
    uint64_t seq;             /* bumped by every invalidation and flush */
    uint64_t flush_seq;
    uint64_t *slots;          /* seq of the last invalidation per group slot */
    uint64_t *sketch;         /* SKETCH_ROWS rows of width/16 words, 4-bit counters */
    size_t width;             /* counters per row, a power of two */
    uint64_t sketch_adds;
    uint32_t fixed_sample_size; /* the caller's sample_size; 0: follows maxmemory */
};

/* ---- SipHash-1-3 (Aumasson & Bernstein's SipHash, written from the paper,
 * with one compression round per block and three to finish: the variant
 * Python's hash() and Rust's HashMap key their tables with) ---- */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);                                  \
        v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                                                     \
        v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                                                     \
        v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);                                  \
    } while (0)

/* 8 bytes, little-endian as SipHash reads them: one load where that is the
 * machine's order (the byte loop it replaces was a quarter of an L1 hit). */
static inline uint64_t load64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

uint64_t l1_hash(const uint64_t key[2], const void *data, size_t len)
{
    const unsigned char *in = data;
    uint64_t v0 = 0x736f6d6570736575ULL ^ key[0], v1 = 0x646f72616e646f6dULL ^ key[1];
    uint64_t v2 = 0x6c7967656e657261ULL ^ key[0], v3 = 0x7465646279746573ULL ^ key[1];
    size_t whole = len & ~(size_t)7;
    for (size_t i = 0; i < whole; i += 8) {
        uint64_t m = load64(in + i);
        v3 ^= m;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t b = (uint64_t)len << 56;
    for (size_t i = 0; i < (len & 7); i++) b |= (uint64_t)in[whole + i] << (8 * i);
    v3 ^= b;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* ---- frequency sketch ---- */

static unsigned sketch_get(const l1 *c, size_t row, size_t idx)
{
    size_t word = row * (c->width / 16) + idx / 16;
    return (unsigned)((c->sketch[word] >> ((idx % 16) * 4)) & 0xf);
}

static void sketch_indexes(const l1 *c, uint64_t h, size_t idx[SKETCH_ROWS])
{
    uint32_t h1 = (uint32_t)h, h2 = (uint32_t)(h >> 32) | 1;
    for (size_t r = 0; r < SKETCH_ROWS; r++) idx[r] = (size_t)(h1 + r * h2) & (c->width - 1);
}

static uint32_t sketch_estimate(const l1 *c, uint64_t h)
{
    size_t idx[SKETCH_ROWS];
    unsigned m = 15;
    sketch_indexes(c, h, idx);
    for (size_t r = 0; r < SKETCH_ROWS; r++) {
        unsigned v = sketch_get(c, r, idx[r]);
        if (v < m) m = v;
    }
    return m;
}

static void sketch_add(l1 *c, uint64_t h)
{
    size_t idx[SKETCH_ROWS];
    unsigned v[SKETCH_ROWS], m = 15;
    sketch_indexes(c, h, idx);
    for (size_t r = 0; r < SKETCH_ROWS; r++) {
        v[r] = sketch_get(c, r, idx[r]);
        if (v[r] < m) m = v[r];
    }
    /* conservative update: raise only the counters at the minimum */
    for (size_t r = 0; m < 15 && r < SKETCH_ROWS; r++) {
        if (v[r] != m) continue;
        size_t word = r * (c->width / 16) + idx[r] / 16;
        c->sketch[word] += (uint64_t)1 << ((idx[r] % 16) * 4);
    }
    if (++c->sketch_adds >= c->cfg.sample_size) {
        /* age: halve every counter, so yesterday's hot keys fade */
        size_t words = SKETCH_ROWS * (c->width / 16);
        for (size_t i = 0; i < words; i++) c->sketch[i] = (c->sketch[i] >> 1) & 0x7777777777777777ULL;
        c->sketch_adds /= 2;
    }
}

/* ---- entries ---- */

static uint64_t group_hash(const l1 *c, const void *g, size_t glen)
{
    return l1_hash(c->cfg.hash_seed, g, glen);
}

/*
 * An entry's hash: its variant's, keyed by its group's hash (which every
 * lookup computes anyway, for the sketch), so a lookup hashes the group once
 * and the variant once rather than the group twice.  Still keyed by the
 * secret seed through the group's hash: a hostile key set cannot aim at a
 * bucket.
 */
static uint64_t entry_hash(const l1 *c, uint64_t gh, const void *v, size_t vlen)
{
    const uint64_t key[2] = {c->cfg.hash_seed[0] ^ gh, c->cfg.hash_seed[1] + (gh >> 32 | gh << 32)};
    return l1_hash(key, v, vlen);
}

static size_t make_key(char *out, const void *g, size_t glen, const void *v, size_t vlen)
{
    uint32_t gl = (uint32_t)glen;
    memcpy(out, &gl, 4);
    memcpy(out + 4, g, glen);
    memcpy(out + 4 + glen, v, vlen);
    return 4 + glen + vlen;
}

static void lru_unlink(l1 *c, l1_entry *e)
{
    if (e->lru_prev) e->lru_prev->lru_next = e->lru_next;
    else c->lru_head = e->lru_next;
    if (e->lru_next) e->lru_next->lru_prev = e->lru_prev;
    else c->lru_tail = e->lru_prev;
    e->lru_prev = e->lru_next = NULL;
}

static void lru_push_head(l1 *c, l1_entry *e)
{
    e->lru_prev = NULL;
    e->lru_next = c->lru_head;
    if (c->lru_head) c->lru_head->lru_prev = e;
    c->lru_head = e;
    if (!c->lru_tail) c->lru_tail = e;
}

/* ---- expiry heap ---- */

static void heap_set(l1 *c, size_t i, l1_entry *e)
{
    c->heap[i] = e;
    e->heap_idx = i;
}

static void heap_up(l1 *c, size_t i)
{
    l1_entry *e = c->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (c->heap[parent]->deadline <= e->deadline) break;
        heap_set(c, i, c->heap[parent]);
        i = parent;
    }
    heap_set(c, i, e);
}

static void heap_down(l1 *c, size_t i)
{
    l1_entry *e = c->heap[i];
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        uint64_t best = e->deadline;
        if (l < c->heap_len && c->heap[l]->deadline < best) {
            m = l;
            best = c->heap[l]->deadline;
        }
        if (l + 1 < c->heap_len && c->heap[l + 1]->deadline < best) m = l + 1;
        if (m == i) break;
        heap_set(c, i, c->heap[m]);
        i = m;
    }
    heap_set(c, i, e);
}

static void heap_push(l1 *c, l1_entry *e)
{
    if (c->heap_len == c->heap_cap) {
        c->heap_cap = c->heap_cap ? c->heap_cap * 2 : 64;
        c->heap = realloc(c->heap, sizeof(*c->heap) * c->heap_cap);
        if (!c->heap) abort();
    }
    heap_set(c, c->heap_len++, e);
    heap_up(c, e->heap_idx);
}

static void heap_remove(l1 *c, l1_entry *e)
{
    size_t i = e->heap_idx;
    l1_entry *last = c->heap[--c->heap_len];
    if (last == e) return;
    heap_set(c, i, last);
    heap_up(c, i);
    heap_down(c, last->heap_idx);
}

void l1_value_put(l1_value *v)
{
    if (v && --v->refs == 0) free(v);
}

static size_t group_charge(size_t glen) { return sizeof(l1_group) + glen; }

static void entry_remove(l1 *c, l1_entry *e)
{
    l1_group *g = e->group;
    HASH_DELETE(hh, c->table, e);
    lru_unlink(c, e);
    heap_remove(c, e);
    if (e->gprev) e->gprev->gnext = e->gnext;
    else g->entries = e->gnext;
    if (e->gnext) e->gnext->gprev = e->gprev;
    g->nentries--;
    c->st.entries--;
    c->st.bytes -= e->charge;
    if (!g->entries) {
        HASH_DELETE(hh, c->groups, g);
        c->st.bytes -= group_charge(g->glen);
        free(g);
    }
    l1_value_put(e->value);
    l1_value_put(e->then);
    free(e);
}

/* Size the sketch for maxmemory: about 4 counters per entry the memory could
 * hold at 128 bytes each, and (unless the caller fixed it) a halving every
 * 10 x that many accesses, as TinyLFU's sample.  A new size starts from
 * zeroed counters. */
static int sketch_size(l1 *c, size_t maxmemory, uint32_t sample_size)
{
    size_t expected = maxmemory / 128 + 1, width = 1024;
    while (width < expected * 4 && width < ((size_t)1 << 26)) width <<= 1;
    c->cfg.sample_size = sample_size ? sample_size
                                     : (uint32_t)(expected * 10 < UINT32_MAX ? expected * 10 : UINT32_MAX);
    if (c->sketch && width == c->width) return 0;
    uint64_t *sketch = calloc(SKETCH_ROWS * (width / 16), sizeof(uint64_t));
    if (!sketch) return -1;
    free(c->sketch);
    c->sketch = sketch;
    c->width = width;
    c->sketch_adds = 0;
    return 0;
}

l1 *l1_create(const l1_config *cfg)
{
    l1 *c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    c->cfg = *cfg;
    c->fixed_sample_size = cfg->sample_size;
    c->slots = calloc(SLOTS, sizeof(uint64_t));
    if (!c->slots || sketch_size(c, cfg->maxmemory, cfg->sample_size) < 0) {
        l1_destroy(c);
        return NULL;
    }
    return c;
}

void l1_destroy(l1 *c)
{
    if (!c) return;
    while (c->lru_head) entry_remove(c, c->lru_head);
    free(c->sketch);
    free(c->slots);
    free(c->heap);
    free(c);
}

void l1_set_limits(l1 *c, size_t maxmemory, size_t max_entry_size, uint32_t hot_threshold)
{
    /* the sketch follows the memory; if a larger one cannot be had, the old one stays */
    if (maxmemory != c->cfg.maxmemory) (void)sketch_size(c, maxmemory, c->fixed_sample_size);
    c->cfg.maxmemory = maxmemory;
    c->cfg.max_entry_size = max_entry_size;
    c->cfg.hot_threshold = hot_threshold;
    while (c->st.bytes > c->cfg.maxmemory && c->lru_tail) {
        c->st.evictions++;
        entry_remove(c, c->lru_tail);
    }
}

/* The entry of key ([u32 glen][group][variant]); gh: its group's hash. */
static l1_entry *find(l1 *c, const char *key, size_t klen, uint64_t gh)
{
    l1_entry *e = NULL;
    uint32_t gl;
    memcpy(&gl, key, 4);
    uint64_t h = entry_hash(c, gh, key + 4 + gl, klen - 4 - gl);
    HASH_FIND_BYHASHVALUE(hh, c->table, key, klen, (unsigned)h, e);
    return e;
}

l1_value *l1_get(l1 *c, const void *group, size_t glen, const void *variant, size_t vlen, uint64_t now_ms)
{
    return l1_get_meta(c, group, glen, variant, vlen, now_ms, NULL);
}

l1_value *l1_get_meta(l1 *c, const void *group, size_t glen, const void *variant, size_t vlen, uint64_t now_ms,
                      l1_meta *meta)
{
    return l1_get_fresh(c, group, glen, variant, vlen, now_ms, NULL, NULL, meta);
}

/*
 * The entry (group, variant) through its group: most groups hold one entry
 * or a few (a key read one way, or a hash's few fields), and walking them
 * costs less than hashing the variant.  A group with more goes through the
 * table, so a key read many ways (HGET of a thousand fields) stays O(1).
 */
#define GROUP_WALK_MAX 8
static l1_entry *find_in(l1 *c, const void *group, size_t glen, const void *variant, size_t vlen, uint64_t gh)
{
    l1_group *g = NULL;
    HASH_FIND_BYHASHVALUE(hh, c->groups, group, glen, (unsigned)gh, g);
    if (!g) return NULL;
    if (g->nentries <= GROUP_WALK_MAX) {
        size_t klen = 4 + glen + vlen;
        for (l1_entry *e = g->entries; e; e = e->gnext)
            if (e->klen == klen && !memcmp(e->key + 4 + glen, variant, vlen)) return e;
        return NULL;
    }
    char stackkey[512];
    size_t klen = 4 + glen + vlen;
    char *key = klen <= sizeof(stackkey) ? stackkey : malloc(klen);
    if (!key) abort();
    make_key(key, group, glen, variant, vlen);
    l1_entry *e = find(c, key, klen, gh);
    if (key != stackkey) free(key);
    return e;
}

l1_value *l1_get_fresh(l1 *c, const void *group, size_t glen, const void *variant, size_t vlen, uint64_t now_ms,
                       uint64_t (*fresh)(void *arg), void *fresh_arg, l1_meta *meta)
{
    uint64_t gh = group_hash(c, group, glen);
    sketch_add(c, gh);
    l1_entry *e = find_in(c, group, glen, variant, vlen, gh);
    if (e && e->with_key && fresh) {
        uint64_t t = fresh(fresh_arg);
        if (t > now_ms) now_ms = t;
    }
    if (e && e->expires_ms <= now_ms && e->then && now_ms < e->deadline) {
        /* the key has expired in Redis: from now on it reads as its then */
        size_t freed = sizeof(l1_value) + e->value->len;
        l1_value_put(e->value);
        e->value = e->then;
        e->then = NULL;
        e->expires_ms = e->deadline;
        e->ttl_ms = e->then_ttl;
        e->charge -= freed;
        c->st.bytes -= freed;
        c->st.successions++;
    }
    if (e && e->expires_ms <= now_ms) {
        c->st.expirations++;
        entry_remove(c, e);
        e = NULL;
    }
    if (!e) {
        c->st.misses++;
        return NULL;
    }
    c->st.hits++;
    lru_unlink(c, e);
    lru_push_head(c, e);
    e->value->refs++;
    if (meta) *meta = (l1_meta){e->expires_ms, e->ttl_ms, e->with_key};
    return e->value;
}

void l1_life_of(l1 *c, const l1_fill *f, l1_life *out)
{
    *out = (l1_life){f->sent_ms, 0, 0};
    if (f->pttl == -2) {
        /* gone when the PTTL ran: keep only an answer that says so */
        if (f->absent) out->expires_ms = f->sent_ms + f->negative_ttl_ms;
        return;
    }
    uint64_t ttl = l1_jitter(c, f->ttl_ms, f->jitter_pct);
    uint64_t longest = f->ttl_ms + f->ttl_ms * f->jitter_pct / 100;
    if (f->absent && ttl > f->negative_ttl_ms) ttl = f->negative_ttl_ms;
    uint64_t life = ttl;
    /* A key that expires within the longest life an entry may have keeps
     * its entry to its expiry exactly: jittering that shorter would only
     * cost a refresh that learns nothing new. */
    if (f->pttl >= 0 && ((uint64_t)f->pttl < ttl || (!f->absent && (uint64_t)f->pttl <= longest))) {
        life = (uint64_t)f->pttl;
        out->with_key = 1;
    }
    out->expires_ms = f->sent_ms + life;
    if (!out->with_key || !f->has_then || !f->negative_ttl_ms) return;
    /* the null follows as long as a fetched null would stay, never past l1-ttl either */
    uint64_t keep = f->negative_ttl_ms < f->ttl_ms ? f->negative_ttl_ms : f->ttl_ms;
    uint64_t end = out->expires_ms + keep;
    if (f->bounded) {
        /* Nothing will report a write made after the fill: what the null
         * says was learnt then too, so entry and null together keep to the
         * entry's own lifetime (the longer of the jittered l1-ttl and the
         * key's PTTL, which is within l1-ttl plus jitter). */
        uint64_t limit = f->sent_ms + (ttl > life ? ttl : life);
        if (end > limit) end = limit;
    }
    if (end > out->expires_ms) out->then_end_ms = end;
}

int l1_should_refresh(l1 *c, const l1_meta *m, uint64_t now_ms, uint64_t ttl_ms, unsigned jitter_pct,
                      unsigned ahead_pct)
{
    uint64_t expires = m->expires_ms, ttl = m->ttl_ms;
    if (m->with_key || ttl * 100 < ttl_ms * (100 - (jitter_pct > 100 ? 100 : jitter_pct))) return 0;
    double window = (double)ttl * (double)ahead_pct / 100.0;
    if (window <= 0 || expires <= now_ms || (double)(expires - now_ms) > window) return 0;
    /* no random source: every hit in the window refreshes */
    double u = c->cfg.random ? (double)(c->cfg.random(c->cfg.random_arg) >> 11) / (double)(1ULL << 53) : 0;
    return -log(u > 0 ? u : 1e-300) * window >= (double)(expires - now_ms);
}

int l1_reply_cacheable(const void *reply, size_t len)
{
    const char *r = reply;
    return len > 0 && r[0] != '-' && r[0] != '!';
}

int l1_reply_absent(const void *reply, size_t len)
{
    static const char *const forms[] = {"$-1\r\n", "_\r\n", "*-1\r\n", "*0\r\n", "%0\r\n", "~0\r\n", ":0\r\n"};
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++)
        if (strlen(forms[i]) == len && !memcmp(forms[i], reply, len)) return 1;
    return 0;
}

const char *l1_null_reply(int proto, size_t *len)
{
    *len = proto == 3 ? 3 : 5;
    return proto == 3 ? "_\r\n" : "$-1\r\n";
}

uint64_t l1_ticket(l1 *c, const void *group, size_t glen)
{
    (void)group;
    (void)glen;
    return c->seq;
}

static int stale(const l1 *c, uint64_t h, uint64_t ticket)
{
    return c->flush_seq > ticket || c->slots[h & (SLOTS - 1)] > ticket;
}

int l1_is_stale(l1 *c, const void *group, size_t glen, uint64_t ticket)
{
    return stale(c, group_hash(c, group, glen), ticket);
}

static l1_value *value_new(const void *data, size_t len)
{
    l1_value *v = malloc(sizeof(l1_value) + len);
    if (!v) abort();
    v->refs = 1;
    v->len = (uint32_t)len;
    memcpy(v->data, data, len);
    return v;
}

int l1_store(l1 *c, const void *group, size_t glen, const void *variant, size_t vlen, const void *reply, size_t len,
             uint64_t ticket, uint64_t ttl_ms, uint64_t now_ms)
{
    return l1_store_then(c, group, glen, variant, vlen, reply, len, ticket, ttl_ms, now_ms, NULL);
}

int l1_store_then(l1 *c, const void *group, size_t glen, const void *variant, size_t vlen, const void *reply,
                  size_t len, uint64_t ticket, uint64_t ttl_ms, uint64_t now_ms, const l1_then *then)
{
    int with_key = then != NULL;
    if (then && (!then->reply || !then->ttl_ms || then->len > UINT32_MAX)) then = NULL; /* nothing follows */
    if (!ttl_ms && !then) return 0; /* nothing to keep */
    uint64_t gh = group_hash(c, group, glen);
    if (stale(c, gh, ticket)) {
        c->st.stale_fills++;
        return 0;
    }
    size_t klen = 4 + glen + vlen;
    size_t charge = sizeof(l1_entry) + klen + sizeof(l1_value) + len + (then ? sizeof(l1_value) + then->len : 0);
    if (len > c->cfg.max_entry_size || len > UINT32_MAX || charge + group_charge(glen) > c->cfg.maxmemory) {
        c->st.oversize++;
        return 0;
    }
    uint32_t freq = sketch_estimate(c, gh);
    if (freq < c->cfg.hot_threshold) {
        c->st.admissions_rejected++;
        return 0;
    }
    l1_entry *e = malloc(sizeof(l1_entry) + klen);
    if (!e) abort();
    memset(e, 0, sizeof(*e));
    e->klen = make_key(e->key, group, glen, variant, vlen);
    l1_entry *old = find(c, e->key, e->klen, gh);
    if (old) entry_remove(c, old);

    l1_group *g = NULL;
    HASH_FIND_BYHASHVALUE(hh, c->groups, group, glen, (unsigned)gh, g);
    size_t need = charge + (g ? 0 : group_charge(glen));
    /* TinyLFU: make room only by evicting entries that are less frequent */
    while (c->st.bytes + need > c->cfg.maxmemory) {
        l1_entry *victim = c->lru_tail;
        assert(victim);
        if (victim->group != g && c->cfg.hot_threshold > 0 && victim->deadline > now_ms) {
            uint32_t vf = sketch_estimate(c, group_hash(c, victim->group->name, victim->group->glen));
            if (vf >= freq) {
                c->st.admissions_rejected++;
                free(e);
                return 0;
            }
        }
        if (victim->group == g && g->entries == victim && !victim->gnext) {
            need += group_charge(glen); /* evicting it frees g: count g again */
            g = NULL;
        }
        c->st.evictions++;
        entry_remove(c, victim);
        if (!g) HASH_FIND_BYHASHVALUE(hh, c->groups, group, glen, (unsigned)gh, g);
    }
    if (!g) {
        g = malloc(sizeof(l1_group) + glen);
        if (!g) abort();
        memset(g, 0, sizeof(*g));
        g->glen = glen;
        memcpy(g->name, group, glen);
        HASH_ADD_KEYPTR_BYHASHVALUE(hh, c->groups, g->name, glen, (unsigned)gh, g);
        c->st.bytes += group_charge(glen);
    }
    e->value = value_new(reply, len);
    e->group = g;
    e->expires_ms = now_ms + ttl_ms;
    e->ttl_ms = ttl_ms;
    e->deadline = e->expires_ms;
    e->with_key = with_key;
    if (then) {
        e->then = value_new(then->reply, then->len);
        e->then_ttl = then->ttl_ms;
        e->deadline += then->ttl_ms;
    }
    e->charge = charge;
    e->gnext = g->entries;
    if (g->entries) g->entries->gprev = e;
    g->entries = e;
    g->nentries++;
    uint64_t kh = entry_hash(c, gh, e->key + 4 + glen, vlen);
    HASH_ADD_KEYPTR_BYHASHVALUE(hh, c->table, e->key, e->klen, (unsigned)kh, e);
    lru_push_head(c, e);
    heap_push(c, e);
    c->st.entries++;
    c->st.bytes += charge;
    c->st.stores++;
    return 1;
}

void l1_invalidate(l1 *c, const void *group, size_t glen)
{
    uint64_t gh = group_hash(c, group, glen);
    l1_group *g = NULL;
    c->slots[gh & (SLOTS - 1)] = ++c->seq;
    c->st.invalidations++;
    HASH_FIND_BYHASHVALUE(hh, c->groups, group, glen, (unsigned)gh, g);
    while (g) {
        /* removing the last entry frees g */
        l1_entry *e = g->entries;
        int last = e->gnext == NULL;
        entry_remove(c, e);
        if (last) break;
    }
}

void l1_flush(l1 *c)
{
    c->flush_seq = ++c->seq;
    c->st.flushes++;
    while (c->lru_head) entry_remove(c, c->lru_head);
}

size_t l1_expire(l1 *c, uint64_t now_ms, size_t max_work)
{
    size_t removed = 0;
    while (removed < max_work && c->heap_len && c->heap[0]->deadline <= now_ms) {
        c->st.expirations++;
        entry_remove(c, c->heap[0]);
        removed++;
    }
    return removed;
}

uint64_t l1_jitter(l1 *c, uint64_t ttl_ms, unsigned jitter_pct)
{
    if (!jitter_pct || !c->cfg.random || !ttl_ms) return ttl_ms ? ttl_ms : 1;
    if (jitter_pct > 100) jitter_pct = 100;
    /* uniform in [-pct, +pct] percent of ttl */
    double u = (double)(c->cfg.random(c->cfg.random_arg) >> 11) / (double)(1ULL << 53);
    double f = 1.0 + (u * 2.0 - 1.0) * (double)jitter_pct / 100.0;
    double t = (double)ttl_ms * f;
    return t < 1.0 ? 1 : (uint64_t)t;
}

uint32_t l1_frequency(l1 *c, const void *group, size_t glen)
{
    return sketch_estimate(c, group_hash(c, group, glen));
}

void l1_get_stats(const l1 *c, l1_stats *out) { *out = c->st; }

uint64_t l1_scan(l1 *c, uint64_t cursor, size_t count,
                 void (*fn)(void *arg, const void *group, size_t glen, const void *variant, size_t vlen, uint64_t expires_ms),
                 void *arg)
{
    /* The cursor counts entries in the table's insertion order: an entry
     * added during a scan is seen at the end; one removed may shift the
     * rest by one, as SCAN allows. */
    uint64_t i = 0;
    l1_entry *e;
    for (e = c->table; e && i < cursor; e = e->hh.next) i++;
    for (size_t n = 0; e && n < count; e = e->hh.next, n++, i++) {
        uint32_t gl;
        memcpy(&gl, e->key, 4);
        fn(arg, e->key + 4, gl, e->key + 4 + gl, e->klen - 4 - gl, e->expires_ms);
    }
    return e ? i : 0;
}
