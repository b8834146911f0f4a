/*
 * fuzz_l1: libFuzzer target for the L1 library (cache/l1.h), driven by a
 * random sequence of operations read from the input and checked against a
 * simple model of what l1.h promises:
 *
 *  - a hit is the last reply stored for that (group, variant) -- or, from
 *    its expiry on, the "then" stored with it (l1_store_then) -- and never
 *    one past its deadline; l1_get_meta says the same expiry, TTL and
 *    with_key as the store did;
 *  - a store whose ticket was taken before an invalidation of its group (or
 *    a flush) is refused, l1_is_stale says so, and nothing invalidated or
 *    flushed is returned afterwards;
 *  - stats.bytes never exceeds the maxmemory in force, and is 0 when the
 *    cache holds no entry;
 *  - l1_scan visits exactly stats.entries entries, each one the model knows;
 *  - a reference taken by l1_get stays readable and unchanged across any
 *    later operation until it is put (ASan sees any use after free).
 *
 * The model never demands a hit: eviction, admission and a refused store may
 * all drop an entry, so a miss is always allowed.
 */
#include <stddef.h>
#include <stdint.h>

#include "cache/l1.h"
#include "fuzz_common.h"

#define NG 4
#define NV 3
#define NTICKETS 4
#define NHELD 4

static const char long_group[600] = {'L'};
static const struct {
    const char *p;
    size_t n;
} groups[NG] = {{"a", 1}, {"b", 1}, {"user:42", 7}, {long_group, sizeof(long_group)}};
static const struct {
    const char *p;
    size_t n;
} variants[NV] = {{"", 0}, {"v1", 2}, {"db0 RESP2 GET", 13}};

typedef struct model_entry {
    int present;              /* a store succeeded since the last invalidation/flush */
    uint32_t id, len;
    uint64_t expires, ttl;
    int has_then, with_key;
    uint32_t then_id, then_len;
    uint64_t then_ttl, deadline;
} model_entry;

typedef struct ticket {
    int taken;
    int g;
    uint64_t t;
    uint64_t gen, flush_gen;  /* the model's counters when it was taken */
} ticket;

typedef struct held {
    l1_value *v;
    uint32_t id, len;
} held;

typedef struct input {
    const uint8_t *p;
    size_t n, i;
} input;

static unsigned u8(input *in) { return in->i < in->n ? in->p[in->i++] : 0; }
static unsigned u16(input *in) { return u8(in) | (u8(in) << 8); }

static uint64_t rng_state;
static uint64_t rnd(void *arg)
{
    (void)arg;
    return fz_next(&rng_state);
}

static char *make_value(uint32_t id, uint32_t len)
{
    char *b = malloc(len ? len : 1);
    if (!b) abort();
    for (uint32_t i = 0; i < len; i++) b[i] = (char)(id * 131u + i * 7u + (i >> 8));
    if (len >= 4) memcpy(b, &id, 4);
    return b;
}

static void check_bytes(const l1_value *v, uint32_t id, uint32_t len, const char *what)
{
    if (v->len != len) fz_fail("%s: value of %u bytes, want %u (id %u)", what, v->len, len, id);
    char *want = make_value(id, len);
    if (memcmp(v->data, want, len) != 0) fz_fail("%s: value bytes differ from the stored reply %u", what, id);
    free(want);
}

typedef struct scan_ctx {
    model_entry (*m)[NV];
    uint64_t seen;
    uint64_t now;
} scan_ctx;

static void scan_fn(void *arg, const void *g, size_t glen, const void *v, size_t vlen, uint64_t expires_ms)
{
    scan_ctx *s = arg;
    int gi = -1, vi = -1;
    for (int i = 0; i < NG; i++)
        if (groups[i].n == glen && !memcmp(groups[i].p, g, glen)) gi = i;
    for (int i = 0; i < NV; i++)
        if (variants[i].n == vlen && !memcmp(variants[i].p, v, vlen)) vi = i;
    if (gi < 0 || vi < 0) fz_fail("l1_scan: an entry with a group or variant never stored");
    const model_entry *e = &s->m[gi][vi];
    if (!e->present) fz_fail("l1_scan: entry (%d,%d) is there after an invalidation or flush", gi, vi);
    if (expires_ms != e->expires && !(e->has_then && expires_ms == e->deadline))
        fz_fail("l1_scan: entry (%d,%d) expires at %llu, stored to expire at %llu", gi, vi,
                (unsigned long long)expires_ms, (unsigned long long)e->expires);
    s->seen++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    input in = {data, size, 0};
    model_entry m[NG][NV];
    ticket tk[NTICKETS];
    held hd[NHELD];
    uint64_t gen[NG] = {0}, flush_gen = 0;
    memset(m, 0, sizeof(m));
    memset(tk, 0, sizeof(tk));
    memset(hd, 0, sizeof(hd));
    uint32_t next_id = 1;
    uint64_t now = 1000000;
    rng_state = fz_hash(data, size);

    l1_config cfg = {0};
    cfg.maxmemory = 512 + (size_t)u16(&in) * 4;
    cfg.max_entry_size = 64 + (size_t)u16(&in) % 4096;
    cfg.hot_threshold = u8(&in) % 4;
    cfg.sample_size = u8(&in) % 3 == 0 ? 0 : 1 + u8(&in);
    cfg.random = rnd;
    cfg.random_arg = NULL;
    cfg.hash_seed[0] = 0x0123456789abcdefULL;
    cfg.hash_seed[1] = (uint64_t)u16(&in);
    size_t maxmemory = cfg.maxmemory;
    l1 *c = l1_create(&cfg);
    if (!c) abort();

    int steps = 0;
    while (in.i < in.n && steps++ < 4000) {
        unsigned op = u8(&in) % 14;
        int g = (int)(u8(&in) % NG), v = (int)(u8(&in) % NV);
        switch (op) {
        case 0:
        case 1: { /* get (twice as likely: the sketch counts them) */
            l1_meta meta;
            l1_value *val = l1_get_meta(c, groups[g].p, groups[g].n, variants[v].p, variants[v].n, now, &meta);
            if (!val) break;
            const model_entry *e = &m[g][v];
            if (!e->present) fz_fail("get (%d,%d): a hit on an entry invalidated, flushed or never stored", g, v);
            if (now < e->expires) {
                check_bytes(val, e->id, e->len, "get");
                if (meta.expires_ms != e->expires || meta.ttl_ms != e->ttl)
                    fz_fail("get (%d,%d): meta expires %llu ttl %llu, stored %llu ttl %llu", g, v,
                            (unsigned long long)meta.expires_ms, (unsigned long long)meta.ttl_ms,
                            (unsigned long long)e->expires, (unsigned long long)e->ttl);
            } else if (e->has_then && now < e->deadline) {
                check_bytes(val, e->then_id, e->then_len, "get after expiry (then)");
                if (meta.expires_ms != e->deadline || meta.ttl_ms != e->then_ttl)
                    fz_fail("get (%d,%d) then: meta expires %llu ttl %llu, want %llu ttl %llu", g, v,
                            (unsigned long long)meta.expires_ms, (unsigned long long)meta.ttl_ms,
                            (unsigned long long)e->deadline, (unsigned long long)e->then_ttl);
            } else {
                fz_fail("get (%d,%d) at %llu: a hit past its deadline %llu", g, v, (unsigned long long)now,
                        (unsigned long long)(e->has_then ? e->deadline : e->expires));
            }
            if (meta.with_key != e->with_key) fz_fail("get (%d,%d): with_key %d, want %d", g, v, meta.with_key, e->with_key);
            /* keep some references across later operations */
            int slot = (int)(u8(&in) % (NHELD * 2));
            if (slot < NHELD && !hd[slot].v) {
                hd[slot].v = val;
                hd[slot].id = now < e->expires ? e->id : e->then_id;
                hd[slot].len = now < e->expires ? e->len : e->then_len;
            } else {
                l1_value_put(val);
            }
            break;
        }
        case 2:
        case 3: { /* store or store_then, with a held ticket or a fresh one */
            int ts = (int)(u8(&in) % (NTICKETS + 1));
            uint64_t t;
            int stale = 0;
            if (ts < NTICKETS && tk[ts].taken) {
                g = tk[ts].g;
                t = tk[ts].t;
                stale = tk[ts].gen != gen[g] || tk[ts].flush_gen != flush_gen;
                if (stale && !l1_is_stale(c, groups[g].p, groups[g].n, t))
                    fz_fail("l1_is_stale: ticket %d of group %d taken before an invalidation is not stale", ts, g);
            } else {
                t = l1_ticket(c, groups[g].p, groups[g].n);
            }
            uint64_t ttl = u8(&in);
            if (ttl >= 250) ttl = (ttl - 249) * 100000;
            uint32_t len = u8(&in) * (u8(&in) % 4 + 1);
            uint32_t id = next_id++;
            char *reply = make_value(id, len);
            int r;
            l1_then then = {0};
            char *then_reply = NULL;
            uint32_t then_id = 0;
            if (op == 3) {
                unsigned tl = u8(&in);
                then.ttl_ms = u8(&in) % 200;
                then.len = tl % 64;
                then_id = next_id++;
                then_reply = make_value(then_id, (uint32_t)then.len);
                then.reply = tl >= 240 ? NULL : then_reply;
                if (u8(&in) % 4 == 0) ttl = 0; /* the key expires now */
                r = l1_store_then(c, groups[g].p, groups[g].n, variants[v].p, variants[v].n, reply, len, t, ttl, now,
                                  &then);
            } else {
                r = l1_store(c, groups[g].p, groups[g].n, variants[v].p, variants[v].n, reply, len, t, ttl, now);
            }
            if (r && stale) fz_fail("store (%d,%d): accepted with a ticket taken before an invalidation/flush", g, v);
            if (r) {
                model_entry *e = &m[g][v];
                int follows = op == 3 && then.reply && then.ttl_ms;
                if (!ttl && !follows) fz_fail("store (%d,%d): accepted with ttl 0 and nothing to follow", g, v);
                *e = (model_entry){1, id, len, now + ttl, ttl, follows, op == 3, then_id, (uint32_t)then.len,
                                   then.ttl_ms, now + ttl + (follows ? then.ttl_ms : 0)};
            }
            free(reply);
            free(then_reply);
            break;
        }
        case 4: /* take a ticket */
        {
            int ts = (int)(u8(&in) % NTICKETS);
            tk[ts] = (ticket){1, g, l1_ticket(c, groups[g].p, groups[g].n), gen[g], flush_gen};
            break;
        }
        case 5:
            l1_invalidate(c, groups[g].p, groups[g].n);
            gen[g]++;
            for (int i = 0; i < NV; i++) m[g][i].present = 0;
            break;
        case 6:
            if (u8(&in) % 4) break; /* rarer */
            l1_flush(c);
            flush_gen++;
            memset(m, 0, sizeof(m));
            break;
        case 7: {
            size_t max = u8(&in);
            size_t n = l1_expire(c, now, max);
            if (n > max) fz_fail("l1_expire removed %zu entries with max_work %zu", n, max);
            break;
        }
        case 8: {
            unsigned k = u8(&in);
            if (k < 8) break; /* rarer */
            maxmemory = (size_t)u16(&in) * (k % 3 == 0 ? 16 : 1);
            l1_set_limits(c, maxmemory, 1 + u16(&in) % 8192, u8(&in) % 4);
            break;
        }
        case 9: { /* the clock: small steps, sometimes a jump */
            unsigned k = u8(&in);
            now += k < 200 ? k : (uint64_t)(k - 199) * 1000;
            break;
        }
        case 10: { /* put a held reference, after checking it was not touched */
            int slot = (int)(u8(&in) % NHELD);
            if (hd[slot].v) {
                check_bytes(hd[slot].v, hd[slot].id, hd[slot].len, "held reference");
                l1_value_put(hd[slot].v);
                hd[slot].v = NULL;
            }
            break;
        }
        case 11: {
            scan_ctx s = {m, 0, now};
            uint64_t cur = 0;
            int rounds = 0;
            size_t count = 1 + u8(&in) % 8;
            do cur = l1_scan(c, cur, count, scan_fn, &s);
            while (cur && ++rounds < 10000);
            l1_stats st;
            l1_get_stats(c, &st);
            if (s.seen != st.entries) fz_fail("l1_scan saw %llu entries, stats say %llu", (unsigned long long)s.seen,
                                              (unsigned long long)st.entries);
            break;
        }
        case 12: {
            uint64_t ttl = 1 + u16(&in);
            unsigned pct = u8(&in) % 120;
            uint64_t j = l1_jitter(c, ttl, pct);
            unsigned p = pct > 100 ? 100 : pct;
            double lo = (double)ttl * (1.0 - p / 100.0) - 1, hi = (double)ttl * (1.0 + p / 100.0) + 1;
            if (j < 1 || (double)j < lo || (double)j > hi)
                fz_fail("l1_jitter(%llu, %u) = %llu", (unsigned long long)ttl, pct, (unsigned long long)j);
            break;
        }
        default:
            (void)l1_frequency(c, groups[g].p, groups[g].n);
            break;
        }
        l1_stats st;
        l1_get_stats(c, &st);
        if (st.bytes > maxmemory)
            fz_fail("op %u: %llu bytes over maxmemory %zu (%llu entries)", op, (unsigned long long)st.bytes, maxmemory,
                    (unsigned long long)st.entries);
        if (st.entries == 0 && st.bytes != 0) fz_fail("op %u: no entries but %llu bytes", op, (unsigned long long)st.bytes);
    }
    for (int i = 0; i < NHELD; i++)
        if (hd[i].v) {
            l1_value_put(hd[i].v);
            hd[i].v = NULL;
        }
    l1_destroy(c);
    return 0;
}
