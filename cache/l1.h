/*
 * l1: hotproxy's in-process cache of hot replies (the "L1" in front of Redis).
 *
 * A pure library: no sockets, no event loop, no globals.  Time (now_ms) and
 * randomness (a 64-bit source) come from the caller, so tests drive the
 * clock by hand.
 *
 * Keys have two parts.  The group is the Redis key a write or an
 * invalidation names ("user:42"); the variant is everything else that makes a
 * reply ("db 0, RESP2, HGET f").  One write to a Redis key drops every reply
 * cached for it, in every database (Redis' invalidation messages carry key
 * names only).
 *
 * Values are the raw RESP reply bytes, refcounted: a reader takes a
 * reference, so eviction never frees bytes still being written.
 *
 * Correctness against races comes from tickets (memcache leases): a fill
 * takes a ticket before its request goes upstream and may store its reply
 * only if nothing invalidated that group (or flushed the cache) since.
 * Invalidations are remembered per hash slot of the group, so a race is
 * never missed; two keys sharing a slot only cost a skipped fill.
 *
 * Only hot keys take space: admission needs the group's estimated access
 * frequency (a count-min sketch of 4-bit counters, halved every
 * sample_size accesses, as TinyLFU) to reach hot_threshold, and when the
 * cache is full, to be higher than the LRU victim's.  hot_threshold 0 admits
 * every store (the LRU alone decides).
 *
 * An entry may carry a "then" (l1_store_then): the reply it turns into when
 * it expires, for a key whose own expiry in Redis is known.
 */
#ifndef HP_CACHE_L1_H
#define HP_CACHE_L1_H

#include <stddef.h>
#include <stdint.h>

typedef struct l1 l1;

typedef struct l1_value {
    uint32_t refs;
    uint32_t len;
    char data[];
} l1_value;

typedef struct l1_config {
    size_t maxmemory;        /* bytes, counting keys, values and per-entry overhead */
    size_t max_entry_size;   /* a reply larger than this is never stored */
    uint32_t hot_threshold;  /* estimated accesses a group needs before it is admitted (0: admit all) */
    uint32_t sample_size;    /* accesses between two halvings of the sketch (0: 10 x expected entries) */
    uint64_t (*random)(void *arg); /* jitter source */
    void *random_arg;
    uint64_t hash_seed[2];   /* keys for the hash, so a hostile key set cannot collide at will */
} l1_config;

typedef struct l1_stats {
    uint64_t entries, bytes;
    uint64_t hits, misses;
    uint64_t stores, admissions_rejected, stale_fills, oversize;
    uint64_t evictions, expirations;
    uint64_t successions;    /* entries that turned into their then (l1_store_then) */
    uint64_t invalidations, flushes;
} l1_stats;

l1 *l1_create(const l1_config *cfg);
void l1_destroy(l1 *c);
/* Change the limits while running (a config reload); evicts down to
 * maxmemory.  The frequency sketch follows maxmemory (its sample size, and
 * its width, which when it changes starts the counts over). */
void l1_set_limits(l1 *c, size_t maxmemory, size_t max_entry_size, uint32_t hot_threshold);

/*
 * The cached reply for (group, variant), with a reference the caller must
 * drop with l1_value_put(); NULL on a miss (expired entries are dropped
 * here).  Every lookup counts toward the group's frequency.
 */
l1_value *l1_get(l1 *c, const void *group, size_t glen, const void *variant, size_t vlen, uint64_t now_ms);
void l1_value_put(l1_value *v);
/* What l1_get_meta tells of a hit. */
typedef struct l1_meta {
    uint64_t expires_ms; /* when the reply returned expires */
    uint64_t ttl_ms;     /* the TTL it was stored with */
    int with_key;        /* stored by l1_store_then: it ends with its key */
} l1_meta;
l1_value *l1_get_meta(l1 *c, const void *group, size_t glen, const void *variant, size_t vlen, uint64_t now_ms,
                      l1_meta *meta);

/*
 * l1_get_meta judged at two clocks.  now_ms may be a cheap time that runs
 * behind (an event loop's, read when its iteration began): it judges
 * ordinary entries, whose lifetime is a bound of the cache's own.  fresh
 * (when not NULL) reads the clock now; it is called only when the entry
 * found ends with its key (l1_meta.with_key), whose expiry is the key's own
 * in Redis: there, a late clock would serve a value the key no longer has.
 */
l1_value *l1_get_fresh(l1 *c, const void *group, size_t glen, const void *variant, size_t vlen, uint64_t now_ms,
                       uint64_t (*fresh)(void *arg), void *fresh_arg, l1_meta *meta);

/*
 * How long a fetched reply may stay, from what its fill learnt (the caller
 * then stores it with l1_store_then, relative to its own now_ms).
 *
 * Every time counts from sent_ms, when the fill went upstream, not from when
 * its replies came back: Redis ran the read and the PTTL after sent_ms.  A
 * PTTL of N means Redis' expiry is its millisecond clock at the PTTL plus N,
 * and Redis treats the key as gone once its clock passes that, so the key is
 * there for more than N ms after the PTTL ran, hence until sent_ms + N at
 * least, however long the round trip took.  sent_ms + N is the latest
 * moment known to be safe; the value ends there.
 */
typedef struct l1_fill {
    uint64_t sent_ms;         /* when the fill was sent (a clock no later than the real send) */
    long long pttl;           /* the key's PTTL: >= 0 ms left, -1 no expiry, -2 no key */
    int absent;               /* the reply says the key does not exist */
    int has_then;             /* the read answers a missing key with a null: the entry may turn into it */
    int bounded;              /* nothing reports writes made elsewhere (TTL-only): the entry and its then end
                                 within the entry's own l1-ttl of sent_ms (see the README's TTL-only bound) */
    uint64_t ttl_ms;          /* l1-ttl */
    unsigned jitter_pct;      /* l1-ttl-jitter */
    uint64_t negative_ttl_ms; /* l1-negative-ttl */
} l1_fill;
typedef struct l1_life {
    uint64_t expires_ms;      /* the value is served before this; == sent_ms: not kept at all */
    int with_key;             /* the key's own expiry ends it (pass a then, even empty, to l1_store_then) */
    uint64_t then_end_ms;     /* with a then: the null is served from expires_ms until this; 0: no then */
} l1_life;
void l1_life_of(l1 *c, const l1_fill *f, l1_life *out);

/*
 * The L1's other decisions, pure like l1_life_of, for hotproxy's L1 and
 * bench/hotkeys' model of it alike (one copy, so the two cannot drift).
 *
 * Early refresh, as XFetch: a hit in the last ahead_pct percent of its
 * entry's TTL (the window) says "fetch it again now" with probability
 * exp(-remaining / window), which reaches 1 at expiry (drawn from the
 * cache's random source, only inside the window).  ttl_ms and jitter_pct
 * are the policy's l1-ttl and l1-ttl-jitter: an entry that ends with its key
 * (m->with_key: each refresh would only learn a shorter life and refresh
 * again) or that was kept shorter than the jitter allows (a null kept for
 * l1-negative-ttl) is never refreshed.
 */
int l1_should_refresh(l1 *c, const l1_meta *m, uint64_t now_ms, uint64_t ttl_ms, unsigned jitter_pct,
                      unsigned ahead_pct);
/* A reply worth keeping: not an error (RESP3 blob errors included). */
int l1_reply_cacheable(const void *reply, size_t len);
/* A reply that says the key does not exist (a null, an empty aggregate, a
 * zero): l1_fill.absent, kept for l1-negative-ttl. */
int l1_reply_absent(const void *reply, size_t len);
/* The null an entry that ends with its key turns into (its then), in the
 * protocol the read was made in (2 or 3), for reads that answer a missing
 * key with the null reply. */
const char *l1_null_reply(int proto, size_t *len);

/* Before sending a fill upstream: the ticket l1_store() will check. */
uint64_t l1_ticket(l1 *c, const void *group, size_t glen);

/*
 * Store a reply fetched under ticket for ttl_ms.  Returns 1 if stored; 0 if
 * refused: the group was invalidated since the ticket (stale), it is not hot
 * enough or loses to the LRU victim (admission), or it is too large.
 */
int l1_store(l1 *c, const void *group, size_t glen, const void *variant, size_t vlen, const void *reply, size_t len,
             uint64_t ticket, uint64_t ttl_ms, uint64_t now_ms);

/*
 * l1_store for an entry that ends with its key (its TTL is the key's own,
 * from PTTL: l1_meta.with_key says so), and what it turns into when it
 * expires: its then, kept for then->ttl_ms more, the way the key reads once
 * gone (a null reply), so the expiry costs no fetch.  then->reply NULL (or
 * then->ttl_ms 0): nothing follows.  ttl_ms may be 0 with a then to follow
 * (the key expires now).  An invalidation drops both.  then NULL: l1_store.
 */
typedef struct l1_then {
    const void *reply;
    size_t len;
    uint64_t ttl_ms;
} l1_then;
int l1_store_then(l1 *c, const void *group, size_t glen, const void *variant, size_t vlen, const void *reply,
                  size_t len, uint64_t ticket, uint64_t ttl_ms, uint64_t now_ms, const l1_then *then);

/* 1 if the group was invalidated (or the cache flushed) since ticket. */
int l1_is_stale(l1 *c, const void *group, size_t glen, uint64_t ticket);

/* Drop every entry of a group, and refuse fills ticketed before now. */
void l1_invalidate(l1 *c, const void *group, size_t glen);
/* Drop everything, and refuse every fill ticketed before now. */
void l1_flush(l1 *c);

/* Remove up to max_work expired entries (oldest deadlines first); returns how many. */
size_t l1_expire(l1 *c, uint64_t now_ms, size_t max_work);

/* ttl_ms spread by up to jitter_pct percent either way, never below 1 ms. */
uint64_t l1_jitter(l1 *c, uint64_t ttl_ms, unsigned jitter_pct);

/* The sketch's estimate for a group (for tests and INFO). */
uint32_t l1_frequency(l1 *c, const void *group, size_t glen);

void l1_get_stats(const l1 *c, l1_stats *out);

/* Visit up to count entries from cursor on; returns the next cursor (0 at
 * the end).  fn gets group and variant; the pointers live for the call. */
uint64_t l1_scan(l1 *c, uint64_t cursor, size_t count,
                 void (*fn)(void *arg, const void *group, size_t glen, const void *variant, size_t vlen, uint64_t expires_ms),
                 void *arg);

/* Keyed 64-bit hash (SipHash-1-3), exposed for tests. */
uint64_t l1_hash(const uint64_t key[2], const void *data, size_t len);

#endif
