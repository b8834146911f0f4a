/*
 * test_l1_policy: the L1's decisions that live in cache/ (cache/l1.h) so
 * hotproxy and bench/hotkeys' model share them: early refresh
 * (l1_should_refresh), the replies kept and how (l1_reply_cacheable,
 * l1_reply_absent), the null an expiring key turns into (l1_null_reply),
 * and how they meet the TTL choice (l1_life_of).
 *
 * The random source is a fixed value set by each test, so "refresh with
 * probability exp(-remaining / window)" is checked exactly at chosen draws;
 * a counter says whether a draw happened at all.
 */
#include "cache/l1.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "tap.h"

static uint64_t fixed_value; /* what the random source returns */
static int draws;

static uint64_t fixed(void *arg)
{
    (void)arg;
    draws++;
    return fixed_value;
}

/* The draw that l1_should_refresh turns into u (uniform in [0, 1)). */
static void set_u(double u) { fixed_value = (uint64_t)(u * (double)(1ULL << 53)) << 11; }

static l1 *new_cache(void)
{
    l1_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.maxmemory = 1 << 20;
    cfg.max_entry_size = 1 << 20;
    cfg.random = fixed;
    cfg.hash_seed[0] = 1;
    cfg.hash_seed[1] = 2;
    return l1_create(&cfg);
}

static l1_meta meta(uint64_t expires, uint64_t ttl, int with_key) { return (l1_meta){expires, ttl, with_key}; }

static void refresh_window(void)
{
    l1 *c = new_cache();
    /* l1-ttl 1000, jitter 10%, refresh-ahead 10%: the window is the last 100 ms */
    l1_meta m = meta(2000, 1000, 0);
    draws = 0;
    set_u(0.000001); /* a draw that refreshes anywhere in the window */
    ok(!l1_should_refresh(c, &m, 1800, 1000, 10, 10), "before the window: no refresh");
    ok(!l1_should_refresh(c, &m, 1899, 1000, 10, 10), "1 ms before the window: no refresh");
    is_int(draws, 0, "outside the window nothing is drawn (the random sequence is untouched)");
    ok(l1_should_refresh(c, &m, 1900, 1000, 10, 10), "at the window's start, a small draw refreshes");
    is_int(draws, 1, "inside the window one draw");
    ok(!l1_should_refresh(c, &m, 2000, 1000, 10, 10), "at expiry: nothing to refresh (it is a miss)");
    ok(!l1_should_refresh(c, &m, 2500, 1000, 10, 10), "past expiry: no refresh");
    ok(!l1_should_refresh(c, &m, 1950, 1000, 10, 0), "refresh-ahead 0: never");

    /* remaining 50 of a 100 ms window: refresh iff u <= exp(-0.5) = 0.6065 */
    set_u(0.60);
    ok(l1_should_refresh(c, &m, 1950, 1000, 10, 10), "half way: u 0.60 <= exp(-1/2) refreshes");
    set_u(0.62);
    ok(!l1_should_refresh(c, &m, 1950, 1000, 10, 10), "half way: u 0.62 > exp(-1/2) does not");
    /* 1 ms left: almost any draw refreshes (probability exp(-0.01)) */
    set_u(0.98);
    ok(l1_should_refresh(c, &m, 1999, 1000, 10, 10), "1 ms before expiry: u 0.98 refreshes");
    set_u(0.995);
    ok(!l1_should_refresh(c, &m, 1999, 1000, 10, 10), "1 ms before expiry: u 0.995 does not");
    set_u(0.0);
    ok(l1_should_refresh(c, &m, 1901, 1000, 10, 10), "u 0 (log of 0 guarded) refreshes");
    l1_destroy(c);
}

static void refresh_exclusions(void)
{
    l1 *c = new_cache();
    set_u(0.000001);
    l1_meta wk = meta(2000, 1000, 1);
    ok(!l1_should_refresh(c, &wk, 1990, 1000, 10, 10), "an entry that ends with its key is never refreshed");
    /* kept shorter than l1-ttl's jitter allows (a null kept for l1-negative-ttl) */
    l1_meta neg = meta(1100, 100, 0);
    ok(!l1_should_refresh(c, &neg, 1099, 1000, 10, 10), "an entry kept for l1-negative-ttl is never refreshed");
    l1_meta low = meta(1900, 900, 0); /* the shortest life jitter 10% gives */
    ok(l1_should_refresh(c, &low, 1899, 1000, 10, 10), "the shortest jittered life still refreshes");
    l1_meta below = meta(1899, 899, 0);
    ok(!l1_should_refresh(c, &below, 1898, 1000, 10, 10), "1 ms shorter than jitter allows: no refresh");
    l1_destroy(c);
}

/* The decisions meet: what l1_life_of gives a fill is what l1_should_refresh reads back. */
static void refresh_of_stored(void)
{
    l1 *c = new_cache();
    set_u(0.5); /* jitter: 1.0 + (0.5 * 2 - 1) * pct = exactly l1-ttl */
    l1_fill f = {.sent_ms = 1000, .pttl = -1, .ttl_ms = 1000, .jitter_pct = 10, .negative_ttl_ms = 100};
    l1_life life;
    l1_life_of(c, &f, &life);
    is_int((long long)life.expires_ms, 2000, "no expiry in Redis: the life is l1-ttl (jitter drawn at the middle)");
    ok(!life.with_key, "and it does not end with the key");
    uint64_t t = l1_ticket(c, "k", 1);
    ok(l1_store(c, "k", 1, "v", 1, "$1\r\nx\r\n", 7, t, life.expires_ms - f.sent_ms, f.sent_ms), "stored");
    l1_meta m;
    l1_value *v = l1_get_meta(c, "k", 1, "v", 1, 1950, &m);
    ok(v != NULL, "a hit in the window");
    l1_value_put(v);
    set_u(0.000001);
    ok(l1_should_refresh(c, &m, 1950, 1000, 10, 10), "the stored entry refreshes in its window");

    /* a key expiring in Redis sooner than l1-ttl: its entry ends with it */
    l1_fill g = {.sent_ms = 1000, .pttl = 300, .has_then = 1, .ttl_ms = 1000, .jitter_pct = 10, .negative_ttl_ms = 100};
    l1_life_of(c, &g, &life);
    ok(life.with_key && life.expires_ms == 1300, "PTTL 300: the entry ends with its key, at send + 300");
    ok(life.then_end_ms == 1400, "and turns into its null for l1-negative-ttl");
    l1_then then = {NULL, 0, life.then_end_ms - life.expires_ms};
    then.reply = l1_null_reply(2, &then.len);
    t = l1_ticket(c, "j", 1);
    ok(l1_store_then(c, "j", 1, "v", 1, "$1\r\ny\r\n", 7, t, life.expires_ms - g.sent_ms, g.sent_ms, &then), "stored with its then");
    v = l1_get_meta(c, "j", 1, "v", 1, 1290, &m);
    ok(v != NULL && m.with_key, "a hit that ends with its key");
    l1_value_put(v);
    ok(!l1_should_refresh(c, &m, 1290, 1000, 10, 10), "which is never refreshed");
    v = l1_get(c, "j", 1, "v", 1, 1350);
    ok(v && v->len == 5 && !memcmp(v->data, "$-1\r\n", 5), "past the key's expiry it reads the null");
    l1_value_put(v);
    l1_destroy(c);
}

static void replies(void)
{
    size_t n = 0;
    const char *z = l1_null_reply(2, &n);
    ok(n == 5 && !memcmp(z, "$-1\r\n", 5), "RESP2's null: $-1");
    z = l1_null_reply(3, &n);
    ok(n == 3 && !memcmp(z, "_\r\n", 3), "RESP3's null: _");

    static const char *const absent[] = {"$-1\r\n", "_\r\n", "*-1\r\n", "*0\r\n", "%0\r\n", "~0\r\n", ":0\r\n"};
    for (size_t i = 0; i < sizeof(absent) / sizeof(absent[0]); i++)
        ok(l1_reply_absent(absent[i], strlen(absent[i])), "absent: %.*s", (int)strlen(absent[i]) - 2, absent[i]);
    static const char *const present[] = {"$1\r\nx\r\n", ":1\r\n", "*1\r\n$1\r\nx\r\n", "+OK\r\n", "$0\r\n\r\n", "$-1\r"};
    for (size_t i = 0; i < sizeof(present) / sizeof(present[0]); i++)
        ok(!l1_reply_absent(present[i], strlen(present[i])), "not absent: reply %zu", i);

    ok(l1_reply_cacheable("$1\r\nx\r\n", 7), "a bulk is kept");
    ok(l1_reply_cacheable("$-1\r\n", 5), "a null is kept");
    ok(!l1_reply_cacheable("-ERR x\r\n", 8), "an error is not kept");
    ok(!l1_reply_cacheable("!5\r\nERR x\r\n", 11), "a RESP3 blob error is not kept");
    ok(!l1_reply_cacheable("", 0), "nothing is not kept");
}

int main(void)
{
    refresh_window();
    refresh_exclusions();
    refresh_of_stored();
    replies();
    done_testing();
    return exit_status();
}
