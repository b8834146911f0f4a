/*
 * test_policy: the cache-rule side of the config and of px_policy, without
 * a network: which rule a key gets (px_config_policy), how cache-rule lines
 * are parsed and rejected, how a written TTL is spread (px_policy_spread),
 * and what a reload takes over from a freshly read config
 * (px_config_reload).
 *
 * What the rewriting of real commands does to real TTLs in Redis is
 * tests/integration/test_policy.c's job; this file pins the arithmetic and
 * the matching those results rest on.  Run it under the ASan build too: the
 * reload tests free both configs, so a value left shared between them shows
 * up as a double free, and one left unowned as a leak.
 */
#include "proxy/px_config.h"
#include "proxy/px_policy.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "unit/config_checks.h"

/* ---- helpers --------------------------------------------------------------- */

static int load(px_config *c, const char *text, const char *what)
{
    char err[512] = "";
    int rc = px_config_load_string(c, text, "t.conf", err, sizeof(err));
    if (!ok(rc == 0, "%s: loads", what)) diag("  error: %s", err);
    return rc == 0;
}

/* A fresh config with text loaded (no test counted). */
static void make(px_config *c, const char *text)
{
    char err[512] = "";
    px_config_init(c);
    if (px_config_load_string(c, text, "t.conf", err, sizeof(err)) != 0) {
        diag("setup config failed: %s", err);
        abort();
    }
}

static px_policy pol_of(const px_config *c, const char *key)
{
    px_policy p;
    memset(&p, 0x5a, sizeof(p)); /* every field must be written */
    px_config_policy(c, key, strlen(key), &p);
    return p;
}


/* ---- px_config_policy --------------------------------------------------- */

static void test_no_rules(void)
{
    px_config c;
    make(&c, "l1-ttl 1234\nl1-ttl-jitter 7\nl1-negative-ttl 99\nl1-max-entry-size 2kb\n");
    const char *keys[] = {"anything", "", "nocache:x", "*"};
    int good = 1;
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        px_policy p = pol_of(&c, keys[i]);
        if (p.cache != 1 || p.ttl != 1234 || p.jitter != 7 || p.negative_ttl != 99 || p.max_entry_size != 2048 ||
            p.write_ttl_jitter != 0 || p.write_ttl_floor != 0) {
            good = 0;
            diag("  key '%s': cache %d ttl %lld jitter %lld neg %lld max %lld wtj %lld wtf %lld", keys[i], p.cache,
                 p.ttl, p.jitter, p.negative_ttl, p.max_entry_size, p.write_ttl_jitter, p.write_ttl_floor);
        }
    }
    ok(good, "no rules: every key (the empty one too) is cached with the l1-* values, no write jitter");
    /* binary key with a NUL in it */
    px_policy p;
    px_config_policy(&c, "a\0b", 3, &p);
    is_int(p.cache, 1, "no rules: a binary key is cached too");
    px_config_free(&c);
}

static void test_first_match(void)
{
    px_config c;
    make(&c,
         "l1-ttl 1000\n"
         "cache-rule a: ttl 100\n"
         "cache-rule a:b ttl 200\n"          /* shadowed by a: for every key it could match */
         "cache-rule nocache: cache no\n"
         "cache-rule lit* ttl 300\n"         /* a prefix is literal: '*' only means 'any' alone */
         "cache-rule * ttl 400 jitter 3\n"
         "cache-rule z: ttl 500\n");         /* after '*': never reached */
    is_int(c.nrules, 6, "six rules parsed");
    is_int(pol_of(&c, "a:bc").ttl, 100, "first match wins in file order: 'a:bc' gets 'a:' (ttl 100), not 'a:b'");
    is_int(pol_of(&c, "a:").ttl, 100, "a key equal to the prefix matches it");
    is_int(pol_of(&c, "a").ttl, 400, "a key shorter than the prefix does not match it ('a' falls to '*')");
    is_int(pol_of(&c, "A:b").ttl, 400, "prefixes are case-sensitive ('A:b' falls to '*')");
    is_int(pol_of(&c, "nocache:1").cache, 0, "'nocache:' cache no: not cached");
    is_int(pol_of(&c, "nocache").cache, 1, "'nocache' (no colon) is not under 'nocache:'");
    is_int(pol_of(&c, "lit*x").ttl, 300, "'lit*' matches a key starting with the literal 'lit*'");
    is_int(pol_of(&c, "litx").ttl, 400, "'lit*' is no glob: 'litx' falls to '*'");
    px_policy p = pol_of(&c, "z:1");
    ok(p.ttl == 400 && p.jitter == 3 && p.cache == 1, "a rule after '*' is never reached ('z:1' gets '*')");
    is_int(pol_of(&c, "").ttl, 400, "'*' matches the empty key");
    px_config_policy(&c, "\0\xff", 2, &p);
    is_int(p.ttl, 400, "'*' matches a binary key");
    px_config_free(&c);
}

static void test_no_match(void)
{
    px_config c;
    make(&c, "cache-rule user: ttl 50\ncache-rule sess: cache yes\n");
    px_policy p = pol_of(&c, "other:1");
    is_int(p.cache, 0, "rules but no '*': a key no rule matches is not cached");
    is_int(p.write_ttl_jitter, 0, "... and its written TTLs are not spread");
    is_int(pol_of(&c, "user:1").cache, 1, "a matching rule without 'cache' caches (cache yes is the default)");
    is_int(pol_of(&c, "sess:1").cache, 1, "cache yes caches");
    px_config_free(&c);
}

static void test_defaults_follow_l1(void)
{
    px_config c;
    char err[256];
    make(&c,
         "l1-ttl 1000\nl1-ttl-jitter 10\nl1-negative-ttl 250\nl1-max-entry-size 512kb\n"
         "cache-rule full: ttl 11 jitter 22 negative-ttl 33 max-entry-size 1kb write-ttl-jitter 44 write-ttl-floor 55\n"
         "cache-rule part: ttl 77\n"
         "cache-rule off: cache no\n"
         "cache-rule *\n");
    px_policy p = pol_of(&c, "full:x");
    ok(p.cache == 1 && p.ttl == 11 && p.jitter == 22 && p.negative_ttl == 33 && p.max_entry_size == 1024 &&
           p.write_ttl_jitter == 44 && p.write_ttl_floor == 55,
       "every option of a rule is taken (ttl 11 jitter 22 neg 33 max 1kb wtj 44 wtf 55)");
    p = pol_of(&c, "part:x");
    ok(p.ttl == 77 && p.jitter == 10 && p.negative_ttl == 250 && p.max_entry_size == 512 * 1024,
       "options left out take the l1-* values (jitter 10, negative 250, max 512kb)");
    ok(p.write_ttl_jitter == 0 && p.write_ttl_floor == 0, "write-ttl-jitter/floor left out are 0 (off)");
    p = pol_of(&c, "any");
    ok(p.cache == 1 && p.ttl == 1000 && p.jitter == 10, "a bare '*' rule is the l1-* values");
    p = pol_of(&c, "off:x");
    ok(p.cache == 0 && p.ttl == 1000, "cache no: not cached, the rest still resolved");

    /* The l1-* values change (CONFIG SET, reload): rules without their own follow. */
    char *v;
    v = "4242";
    is_int(px_config_set(&c, "l1-ttl", 1, &v, err, sizeof(err)), 0, "l1-ttl set to 4242");
    v = "0";
    is_int(px_config_set(&c, "l1-ttl-jitter", 1, &v, err, sizeof(err)), 0, "l1-ttl-jitter set to 0");
    v = "17";
    is_int(px_config_set(&c, "l1-negative-ttl", 1, &v, err, sizeof(err)), 0, "l1-negative-ttl set to 17");
    v = "2kb";
    is_int(px_config_set(&c, "l1-max-entry-size", 1, &v, err, sizeof(err)), 0, "l1-max-entry-size set to 2kb");
    p = pol_of(&c, "part:x");
    ok(p.ttl == 77 && p.jitter == 0 && p.negative_ttl == 17 && p.max_entry_size == 2048,
       "after the l1-* change: 'part:' keeps its ttl 77 and follows the rest (jitter 0, neg 17, max 2kb)");
    p = pol_of(&c, "any");
    ok(p.ttl == 4242 && p.jitter == 0, "after the l1-* change: '*' has ttl 4242 jitter 0");
    p = pol_of(&c, "full:x");
    ok(p.ttl == 11 && p.jitter == 22 && p.negative_ttl == 33 && p.max_entry_size == 1024,
       "after the l1-* change: a rule's own values stay");
    px_config_free(&c);
}

static void test_rule_parsing(void)
{
    px_config c;
    px_config_init(&c);
    load(&c,
         "# a comment\n"
         "cache-rule \"sp ace:\" TTL 5 Cache NO\n"
         "cache-rule 'q:' max-entry-size 100k write-ttl-floor 31536000000\n"
         "cache-rule \"*\"\n",
         "quoted prefixes, option names in any case, a memory unit, the largest floor");
    is_int(c.nrules, 3, "three rules");
    px_policy p = pol_of(&c, "sp ace:1");
    ok(p.ttl == 5 && p.cache == 0, "\"sp ace:\": the quoted prefix keeps its space; TTL/Cache NO taken");
    p = pol_of(&c, "q:1");
    ok(p.max_entry_size == 100000 && p.write_ttl_floor == 31536000000LL, "'q:': 100k is 100000, floor one year");
    p = pol_of(&c, "x");
    is_int(p.cache, 1, "a quoted \"*\" is still the any-key rule");
    px_config_free(&c);

    /* the command line groups "--cache-rule j: write-ttl-jitter 20" into one rule */
    px_config_init(&c);
    char out[64], err[512] = "";
    char *argv[] = {"hotproxy", "--cache-rule", "j:", "write-ttl-jitter", "20", "--cache-rule", "*", "--l1-ttl", "300", NULL};
    int rc = px_config_from_args(&c, 9, argv, out, sizeof(out), err, sizeof(err));
    if (!ok(rc == 0, "command line with two --cache-rule loads")) diag("  %s", err);
    is_int(c.nrules, 2, "command line: two rules");
    p = pol_of(&c, "j:1");
    ok(p.write_ttl_jitter == 20 && p.ttl == 300 && p.cache == 1, "command line: 'j:' jitter 20, ttl from --l1-ttl");
    p = pol_of(&c, "k:1");
    ok(p.write_ttl_jitter == 0 && p.cache == 1, "command line: other keys fall to '*'");
    px_config_free(&c);
}

static void test_rule_errors(void)
{
    load_err("cache-rule\n", "t.conf:1: 'cache-rule': ", "prefix", "cache-rule without a prefix");
    load_err("cache-rule a: ttl\n", "t.conf:1: 'cache-rule a: ttl': ", "option/value pairs",
             "an option without its value");
    load_err("cache-rule a: ttl 5 cache\n", "t.conf:1: 'cache-rule a: ttl 5 cache': ", "option/value pairs",
             "an odd count after pairs");
    load_err("cache-rule a: colour blue\n", "t.conf:1: 'cache-rule a: colour blue': ", "unknown option 'colour'",
             "an unknown option");
    load_err("cache-rule a: ttl abc\n", "t.conf:1: 'cache-rule a: ttl abc': ", "bad value 'abc' for ttl",
             "ttl not a number");
    load_err("cache-rule a: ttl 0\n", "t.conf:1: 'cache-rule a: ttl 0': ", "bad value '0' for ttl", "ttl 0");
    load_err("cache-rule a: ttl -5\n", "t.conf:1: 'cache-rule a: ttl -5': ", "bad value '-5' for ttl", "ttl -5");
    load_err("cache-rule a: ttl 86400001\n", "t.conf:1: 'cache-rule a: ttl 86400001': ", "bad value", "ttl above a day");
    load_err("cache-rule a: ttl 5x\n", "t.conf:1: 'cache-rule a: ttl 5x': ", "bad value '5x'", "ttl with junk");
    load_err("cache-rule a: cache maybe\n", "t.conf:1: 'cache-rule a: cache maybe': ", "bad value 'maybe' for cache",
             "cache maybe");
    load_err("cache-rule a: jitter 101\n", "t.conf:1: 'cache-rule a: jitter 101': ", "bad value '101' for jitter",
             "jitter 101");
    load_err("cache-rule a: negative-ttl -1\n", "t.conf:1: 'cache-rule a: negative-ttl -1': ", "bad value",
             "negative-ttl -1");
    load_err("cache-rule a: max-entry-size 1gb\n", "t.conf:1: 'cache-rule a: max-entry-size 1gb': ",
             "bad value '1gb' for max-entry-size", "max-entry-size above 512mb");
    load_err("cache-rule a: max-entry-size 0\n", "t.conf:1: 'cache-rule a: max-entry-size 0': ", "bad value",
             "max-entry-size 0");
    load_err("cache-rule a: write-ttl-jitter 101\n", "t.conf:1: 'cache-rule a: write-ttl-jitter 101': ",
             "bad value '101' for write-ttl-jitter", "write-ttl-jitter 101");
    load_err("cache-rule a: write-ttl-jitter -1\n", "t.conf:1: 'cache-rule a: write-ttl-jitter -1': ", "bad value",
             "write-ttl-jitter -1");
    load_err("cache-rule a: write-ttl-floor -1\n", "t.conf:1: 'cache-rule a: write-ttl-floor -1': ", "bad value",
             "write-ttl-floor -1");
    load_err("cache-rule a: write-ttl-floor 1s\n", "t.conf:1: 'cache-rule a: write-ttl-floor 1s': ", "bad value",
             "write-ttl-floor with a unit (it is ms, a plain integer)");
    load_err("port 7000\n# ok so far\ncache-rule a: ttl 5 ttl nope\n", "t.conf:3: 'cache-rule a: ttl 5 ttl nope': ",
             "bad value 'nope'", "an error on line 3 names line 3");

    /* a rejected rule leaves the rules before it and adds nothing */
    px_config c;
    char err[512];
    px_config_init(&c);
    int rc = px_config_load_string(&c, "cache-rule a: ttl 5\ncache-rule b: ttl x\n", "t.conf", err, sizeof(err));
    ok(rc == -1 && c.nrules == 1 && !strcmp(c.rules[0].prefix, "a:"),
       "a rejected rule adds nothing (nrules %d)", c.nrules);
    px_config_free(&c);
}

/* ---- px_policy_spread ---------------------------------------------------- */

#define U_MAX (nextafter(1.0, 0.0)) /* the largest u below 1 */

static void test_spread(void)
{
    /* pct 0: unchanged whatever u */
    int good = 1;
    const double us[] = {0.0, 0.1, 0.5, 0.9, U_MAX};
    for (size_t i = 0; i < sizeof(us) / sizeof(us[0]); i++)
        if (px_policy_spread(100000, 0, 0, us[i]) != 100000 || px_policy_spread(1, 0, 5000, us[i]) != 1) good = 0;
    ok(good, "pct 0: the TTL is unchanged for every u");

    /* the extremes and the middle */
    is_int(px_policy_spread(100000, 20, 0, 0.0), 80000, "u = 0: ttl - pct (100000, 20%% -> 80000)");
    is_int(px_policy_spread(100000, 20, 0, U_MAX), 120000, "u -> 1: ttl + pct (100000, 20%% -> 120000)");
    is_int(px_policy_spread(100000, 20, 0, 0.5), 100000, "u = 0.5: unchanged");
    is_int(px_policy_spread(100000, 20, 0, 0.25), 90000, "u = 0.25: a quarter of the way (90000)");
    is_int(px_policy_spread(100000, 100, 0, U_MAX), 200000, "pct 100, u -> 1: doubled");

    /* never 0, never removed */
    is_int(px_policy_spread(1, 100, 0, 0.0), 1, "ttl 1, pct 100, u 0: stays 1 (a TTL is never 0)");
    is_int(px_policy_spread(1000, 100, 0, 0.0), 1, "ttl 1000, pct 100, floor 0, u 0: 1, not 0");
    is_int(px_policy_spread(3, 50, 0, 0.0), 2, "ttl 3, pct 50, u 0: 1.5 rounds to 2");

    /* the floor */
    is_int(px_policy_spread(100000, 50, 95000, 0.0), 95000, "floor 95000 below ttl 100000: u 0 stops at the floor");
    is_int(px_policy_spread(100000, 50, 95000, U_MAX), 150000, "the floor leaves the upper side alone");
    is_int(px_policy_spread(10000, 50, 95000, 0.0), 10000,
           "floor above the ttl: never shortened below the ttl itself (10000), and not raised to the floor");
    is_int(px_policy_spread(10000, 50, 95000, 0.5), 10000, "floor above the ttl, u 0.5: unchanged");
    good = 1;
    for (int i = 0; i <= 500; i++) {
        double u = (double)i / 1000.0; /* the lower half */
        if (px_policy_spread(10000, 50, 95000, u) != 10000) good = 0;
    }
    ok(good, "floor above the ttl: every u in [0, 0.5] gives exactly the ttl (the floor never lengthens)");
    is_int(px_policy_spread(10000, 50, 95000, U_MAX), 15000, "floor above the ttl: upward spread is still spread");

    /* a sweep: the bounds hold for every u, ttl, pct, floor */
    const long long ttls[] = {1, 2, 7, 999, 1000, 1001, 10000, 100000, 86400000, 1000000000000000LL};
    const long long pcts[] = {1, 5, 20, 50, 99, 100};
    const long long floors[] = {0, 1, 500, 95000, 1LL << 50};
    long bad = 0, checked = 0;
    for (size_t a = 0; a < sizeof(ttls) / sizeof(ttls[0]); a++)
        for (size_t b = 0; b < sizeof(pcts) / sizeof(pcts[0]); b++)
            for (size_t f = 0; f < sizeof(floors) / sizeof(floors[0]); f++)
                for (int i = 0; i <= 1000; i++) {
                    long long ttl = ttls[a], pct = pcts[b], fl = floors[f];
                    double u = i == 1000 ? U_MAX : (double)i / 1000.0;
                    long long out = px_policy_spread(ttl, pct, fl, u);
                    long long lowest = fl < ttl ? fl : ttl;
                    double span = (double)ttl * (double)pct / 100.0;
                    checked++;
                    if (out < 1 || out < lowest || (double)out > (double)ttl + span + 0.5 ||
                        ((double)out < (double)ttl - span - 0.5 && out != 1 && out != lowest) ||
                        (u >= 0.5 && out < ttl)) {
                        if (bad++ < 5)
                            diag("  spread(%lld, %lld, %lld, %.3f) = %lld", ttl, pct, fl, u, out);
                    }
                }
    ok(bad == 0, "%ld combinations: never below 1 or min(ttl, floor), never outside ttl +/- pct (%ld bad)", checked,
       bad);

    /* near the top of the range: ttl + spread must not overflow into "1 ms" */
    const long long huge = 9000000000000000000LL;
    long long hv = px_policy_spread(huge, 20, 0, U_MAX);
    ok(hv >= huge, "regression (px_policy_spread overflows llround above LLONG_MAX and clamps the result to 1): ttl 9e18 ms, pct 20, u -> 1: never shortened (got %lld)", hv);
    hv = px_policy_spread(huge, 20, 0, 0.75);
    ok(hv >= huge, "regression (px_policy_spread overflows llround above LLONG_MAX and clamps the result to 1): ttl 9e18 ms, pct 20, u 0.75: never shortened (got %lld)", hv);
    hv = px_policy_spread(huge, 20, 0, 0.25);
    ok(hv >= huge * 0.8 && hv <= huge, "ttl 9e18 ms, pct 20, u 0.25: shortened within the spread (%lld)", hv);

    /* monotonic in u: a larger draw never gives a shorter TTL */
    bad = 0;
    for (size_t a = 0; a < sizeof(ttls) / sizeof(ttls[0]); a++) {
        long long prev = 0;
        for (int i = 0; i <= 1000; i++) {
            long long out = px_policy_spread(ttls[a], 30, 0, i == 1000 ? U_MAX : (double)i / 1000.0);
            if (out < prev) bad++;
            prev = out;
        }
    }
    ok(bad == 0, "the spread grows with u (%ld inversions)", bad);

    /* uniform draws fill the window: 20 buckets over ttl +/- 20% all used */
    int buckets[20] = {0};
    uint64_t s = 88172645463325252ULL;
    for (int i = 0; i < 20000; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        double u = (double)(s >> 11) / (double)(1ULL << 53);
        long long out = px_policy_spread(100000, 20, 0, u);
        int bkt = (int)((out - 80000) / 2000);
        if (bkt >= 0 && bkt < 20) buckets[bkt]++;
        else if (out == 120000) buckets[19]++;
    }
    int empty = 0;
    for (int i = 0; i < 20; i++)
        if (buckets[i] < 500) empty++;
    ok(empty == 0, "20000 uniform draws: each of 20 buckets over [80000,120000] holds >= 500 (%d thin)", empty);
}

/* ---- px_config_reload ---------------------------------------------------- */

/* 1 if the space-separated list has word w. */
static int has_word(const char *list, const char *w)
{
    size_t n = strlen(w);
    for (const char *p = list; (p = strstr(p, w)) != NULL; p += n)
        if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0')) return 1;
    return 0;
}

static void test_reload(void)
{
    px_config live, fresh;
    char restart[512];
    make(&live,
         "bind 127.0.0.1\nport 7000\nupstream 127.0.0.1:6379\nupstream-connections 4\nlogfile /tmp/a.log\n"
         "l1-ttl 1000\nl1-ttl-jitter 10\nloglevel notice\nmaxclients 100\nrequirepass old\n"
         "cache-rule a: ttl 5\ncache-rule nocache: cache no\n"
         "user bob on >b\nrefuse-command keys\n");
    make(&fresh,
         "bind 0.0.0.0\nport 7001\nupstream 10.9.8.7:1234\nupstream-connections 9\nlogfile /tmp/b.log\n"
         "l1-ttl 2000\nl1-ttl-jitter 0\nloglevel debug\nmaxclients 5\nrequirepass new\n"
         "cache-rule nocache: cache yes ttl 40\ncache-rule * ttl 60\n"
         "user carol on >c +@admin\nrefuse-command flushall debug\n");
    int changed = px_config_reload(&live, &fresh, restart, sizeof(restart));
    diag("reload: %d changed, restart: '%s'", changed, restart);

    /* reloadable: taken */
    is_int(live.l1_ttl, 2000, "reload: l1-ttl taken (2000)");
    is_int(live.l1_ttl_jitter, 0, "reload: l1-ttl-jitter taken (0)");
    is_int(live.loglevel, PX_LL_DEBUG, "reload: loglevel taken (debug)");
    is_int(live.maxclients, 5, "reload: maxclients taken (5)");
    is_str(live.requirepass, "new", "reload: requirepass taken");
    /* restart-only: left, and listed */
    is_int(live.port, 7000, "reload: port left at 7000");
    is_str(live.bind, "127.0.0.1", "reload: bind left");
    is_str(live.upstream, "127.0.0.1:6379", "reload: upstream left");
    ok(live.upstream_host && !strcmp(live.upstream_host, "127.0.0.1") && live.upstream_port == 6379,
       "reload: upstream's host and port left with it (%s:%lld)", live.upstream_host ? live.upstream_host : "(null)",
       live.upstream_port);
    is_int(live.upstream_connections, 4, "reload: upstream-connections left");
    is_str(live.logfile, "/tmp/a.log", "reload: logfile left");
    ok(has_word(restart, "port") && has_word(restart, "bind") && has_word(restart, "upstream") &&
           has_word(restart, "upstream-connections") && has_word(restart, "logfile"),
       "reload: restart lists port, bind, upstream, upstream-connections, logfile");
    ok(!has_word(restart, "l1-ttl") && !has_word(restart, "maxclients") && !has_word(restart, "cache-rule"),
       "reload: restart lists nothing that was taken");
    is_int(changed, 8, "reload: 8 directives took effect (l1-ttl, l1-ttl-jitter, loglevel, maxclients, "
                       "requirepass, user, refuse-command, cache-rule)");

    /* lists: swapped */
    is_int(live.nrules, 2, "reload: the new cache-rules are live (2)");
    px_policy p = pol_of(&live, "nocache:1");
    ok(p.cache == 1 && p.ttl == 40, "reload: 'nocache:' now cache yes ttl 40");
    p = pol_of(&live, "a:1");
    ok(p.cache == 1 && p.ttl == 60, "reload: 'a:' rule gone, '*' ttl 60 applies");
    p = pol_of(&live, "zzz");
    ok(p.cache == 1 && p.jitter == 0, "reload: rules without jitter follow the reloaded l1-ttl-jitter (0)");
    ok(px_config_user(&live, "carol", 5) != NULL && px_config_user(&live, "bob", 3) == NULL,
       "reload: users swapped (carol in, bob out)");
    const px_user *carol = px_config_user(&live, "carol", 5);
    ok(carol && carol->admin, "reload: carol's +@admin taken");
    ok(px_config_refused(&live, "flushall") && px_config_refused(&live, "debug") && !px_config_refused(&live, "keys"),
       "reload: refuse-command swapped (flushall, debug in; keys out)");
    const px_user *def = px_config_user(&live, "default", 7);
    ok(def && px_config_user_check(def, "new", 3) && !px_config_user_check(def, "old", 3),
       "reload: the default user's password is the new requirepass");

    /* fresh holds the old values, so freeing it frees them */
    ok(fresh.nrules == 2 && !strcmp(fresh.rules[0].prefix, "a:"), "reload: fresh holds the old rules");
    ok(fresh.nusers == 1 && !strcmp(fresh.users[0].name, "bob"), "reload: fresh holds the old users");
    ok(fresh.nrefused == 1 && !strcmp(fresh.refused[0], "keys"), "reload: fresh holds the old refuse-command list");
    is_str(fresh.requirepass, "old", "reload: fresh holds the old requirepass");
    px_config_free(&fresh); /* ASan: no double free, nothing live points into it */
    p = pol_of(&live, "nocache:x");
    ok(p.ttl == 40 && live.rules[0].prefix && !strcmp(live.rules[0].prefix, "nocache:"),
       "reload: live rules still intact after fresh is freed");
    ok(live.users[0].npasswords == 1 && !strcmp(live.users[0].passwords[0], "c"),
       "reload: live users still intact after fresh is freed");

    /* the same file again: nothing changes, nothing listed */
    make(&fresh,
         "bind 127.0.0.1\nport 7000\nupstream 127.0.0.1:6379\nupstream-connections 4\nlogfile /tmp/a.log\n"
         "l1-ttl 2000\nl1-ttl-jitter 0\nloglevel debug\nmaxclients 5\nrequirepass new\n"
         "cache-rule nocache: cache yes ttl 40\ncache-rule * ttl 60\n"
         "user carol on >c +@admin\nrefuse-command flushall debug\n");
    changed = px_config_reload(&live, &fresh, restart, sizeof(restart));
    is_str(restart, "", "reload of an unchanged config: no restart listed");
    ok(changed == 0, "regression (px_config_reload counts user/cache-rule/requirepass as changed on every reload): reload of an unchanged config: 0 directives changed (got %d)", changed);
    is_int(live.nrules, 2, "reload of an unchanged config: rules still there");
    px_config_free(&fresh);

    /* a restart-only secret that changes is listed too */
    px_config a, b;
    make(&a, "upstream-password one\n");
    make(&b, "upstream-password two\n");
    px_config_reload(&a, &b, restart, sizeof(restart));
    is_str(a.upstream_password, "one", "reload: upstream-password (restart-only) left");
    ok(has_word(restart, "upstream-password"),
            "regression (secrets were compared as '(set)', so a changed restart-only secret was not listed): reload: a changed upstream-password is listed as needing a restart (restart: '%s')", restart);
    px_config_free(&a);
    px_config_free(&b);

    /* rules removed entirely: back to 'no rules, everything cached' */
    make(&a, "cache-rule a: cache no\n");
    make(&b, "l1-ttl 321\n");
    px_config_reload(&a, &b, restart, sizeof(restart));
    p = pol_of(&a, "a:1");
    ok(a.nrules == 0 && p.cache == 1 && p.ttl == 321, "reload without cache-rule lines: no rules, 'a:1' cached again");
    px_config_free(&b);
    px_config_free(&a);

    /* a tiny restart buffer: truncated, terminated, not overrun (ASan) */
    make(&a, "port 7000\nbind 127.0.0.1\n");
    make(&b, "port 7001\nbind 0.0.0.0\n");
    char tiny[8];
    memset(tiny, 'x', sizeof(tiny));
    px_config_reload(&a, &b, tiny, 6);
    ok(memchr(tiny, '\0', 6) != NULL && tiny[6] == 'x' && tiny[7] == 'x',
       "reload: a 6-byte restart buffer stays terminated and within its bounds ('%.6s')", tiny);
    px_config_free(&b);
    px_config_free(&a);

    px_config_free(&live);
}

int main(void)
{
    no_plan();
    test_no_rules();
    test_first_match();
    test_no_match();
    test_defaults_follow_l1();
    test_rule_parsing();
    test_rule_errors();
    test_spread();
    test_reload();
    done_testing();
    return exit_status();
}
