/*
 * hotkeys: a closed-loop load generator with Zipf-distributed keys, for
 * hotproxy and for Redis directly, and the yardstick an L1 is judged by.
 *
 * --clients connections, non-blocking sockets on one libev loop, keep --pipeline
 * requests in flight: GET key:<id> or SET key:<id> <value>, read or write
 * chosen by --read-pct, the key's popularity rank drawn from a Zipf law.
 * Replies are counted by a small RESP scanner of our own (hiredis' reader
 * would copy every reply; we only need where each one ends).
 *
 * Keys.  Rank r (0 = hottest) names key:<perm(r)>, perm a keyed
 * pseudo-random permutation of [0, N) (a 4-round Feistel network on the
 * next even power of two, cycle-walked into range), so hot keys are
 * scattered over the key space and --preload's key:0 .. key:N-1 are exactly
 * the keys the run uses.
 *
 * Zipf sampling is inversion on a precomputed table: cdf[i] = sum of
 * (k+1)^-s for k <= i, normalised, and rank = the least i with cdf[i] > u
 * for u uniform in [0, 1).  A guide table (Chen and Asau's indexed search)
 * maps each of N equal slices of [0, 1) to the first rank whose cdf passes
 * the slice's start, and a binary search runs only inside the slice: exact,
 * O(1) expected and O(log N) at worst per draw, 12 bytes of table per key
 * (and 4 more for the rank -> key id permutation, precomputed too).
 *
 * Measurement.  After --warmup seconds, the run counts the requests issued
 * in the next --duration seconds: latency from the write of a request to the
 * parse of its reply, in HdrHistogram-style buckets (1024 linear sub-buckets
 * per power of two, so a percentile is within 0.1% of the true sample).
 * The L1 hit ratio is the delta of hotproxy_l1_hits and _misses from the
 * target's INFO hotproxy_cache over the window (absent section: the target
 * is not hotproxy); the upstream offload is 1 - (delta of Redis'
 * cmdstat_get calls) / (GETs the clients sent), read from --redis-port.
 *
 * The ideal hit ratio replays the exact trace of requests the run issued
 * (warmup included, so the oracle starts warm; only reads issued in the
 * window are scored) against an oracle L1 of E = --cache-entries entries:
 *   - the cache holds exactly the E keys read most often in the whole trace
 *     (ties to the hotter rank), known in advance;
 *   - a read of a key in that set hits iff the key was fetched less than
 *     --ttl-ms before and not written since; otherwise it misses and
 *     fetches the key at once (no fill latency, no admission threshold);
 *   - a read of any other key misses; a write drops the key's entry.
 * It is the "top-K by frequency" bound, not Belady's optimum.  hotproxy can
 * beat it a little through early refresh (a hot entry is refetched in the
 * background before it expires), and falls short of it through fill latency
 * (reads that arrive while a fill is in flight wait for it and count as
 * L1 misses, though they never reach Redis: see upstream_offload), its
 * admission threshold, TTL jitter, and having to learn the hot set.
 * ideal_hit_ratio_no_ttl is the same oracle with entries that never expire,
 * to show what the TTL costs.
 *
 * The L1 model replays the same trace through cache/l1 itself (the library
 * hotproxy's L1 is), sized to the same entries, with the policy given by
 * --model-policy: every read is a lookup, a miss is filled at once (TTL
 * jittered, through admission), a hit late in its lifetime is refreshed as
 * XFetch does, a write invalidates.  The TTL and the refresh are decided by
 * the very functions hotproxy's L1 calls (l1_life_of, l1_should_refresh in
 * cache/l1.h), so the model cannot drift from it.  It is what the admission and eviction
 * policy reaches with no network: the distance from it to the measured
 * ratio is fill latency, coalesced waits and invalidation races, the
 * distance from it to the ideal is the policy's.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <ev.h>
#include <hiredis/hiredis.h>

#define BENCH_NAME "hotkeys"
#include "bench.h"
#include "cache/l1.h"

/* ---- small helpers ---- */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* xoshiro256**: one per client, so a client's key sequence depends on the seed only. */
typedef struct rng {
    uint64_t s[4];
} rng;

static void rng_seed(rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t rng_next(rng *r)
{
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

/* Uniform in [0, 1), 53 bits. */
static inline double rng_unit(rng *r) { return (double)(rng_next(r) >> 11) * 0x1.0p-53; }

static size_t fmt_u64(char *dst, uint64_t v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++) dst[i] = tmp[n - 1 - i];
    return n;
}

/* ---- latency histogram: HdrHistogram-like log-linear buckets over ns ---- */

#define H_SUB_BITS 10
#define H_SUB (1u << H_SUB_BITS)
#define H_MAX_SHIFT 42
#define H_BUCKETS (2 * H_SUB + H_MAX_SHIFT * H_SUB)

typedef struct hist {
    uint64_t counts[H_BUCKETS];
    uint64_t total, max;
} hist;

static unsigned h_index(uint64_t v)
{
    if (v < 2 * H_SUB) return (unsigned)v;
    unsigned shift = (unsigned)(63 - __builtin_clzll(v)) - H_SUB_BITS; /* v >> shift in [H_SUB, 2 H_SUB) */
    if (shift > H_MAX_SHIFT) return H_BUCKETS - 1;
    return 2 * H_SUB + (shift - 1) * H_SUB + (unsigned)((v >> shift) - H_SUB);
}

/* The largest value that lands in bucket i (HdrHistogram's highestEquivalentValue). */
static uint64_t h_upper(unsigned i)
{
    if (i < 2 * H_SUB) return i;
    unsigned shift = (i - 2 * H_SUB) / H_SUB + 1;
    uint64_t sub = (i - 2 * H_SUB) % H_SUB + H_SUB;
    return ((sub + 1) << shift) - 1;
}

static inline void h_add(hist *h, uint64_t v)
{
    h->counts[h_index(v)]++;
    h->total++;
    if (v > h->max) h->max = v;
}

/* The value at or below which a fraction q of samples lie (0 if empty). */
static uint64_t h_quantile(const hist *h, double q)
{
    if (!h->total) return 0;
    uint64_t want = (uint64_t)ceil(q * (double)h->total), seen = 0;
    if (want < 1) want = 1;
    for (unsigned i = 0; i < H_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= want) {
            uint64_t v = h_upper(i);
            return v < h->max ? v : h->max;
        }
    }
    return h->max;
}

/* ---- options ---- */

typedef struct opts {
    const char *host;
    int port, redis_port;
    uint32_t keys;
    double zipf;
    uint32_t value_size;
    double read_pct;
    int clients, pipeline;
    double duration, warmup;
    uint64_t seed;
    int preload;
    uint64_t cache_entries;
    uint64_t ttl_ms;
    unsigned model_jitter, model_refresh, model_threshold;
    int proxy_pid, redis_pid;
} opts;

static void usage(FILE *f)
{
    fputs(
        "Usage: hotkeys [options]\n"
        "Closed-loop GET/SET load with Zipf-distributed keys against hotproxy or Redis.\n"
        "\n"
        "  --host H            target host (default 127.0.0.1)\n"
        "  --port P            target port: hotproxy or Redis (default 6379)\n"
        "  --redis-port P      the Redis behind, for INFO commandstats and --preload\n"
        "                      (default: --port)\n"
        "  --keys N            key space key:0 .. key:N-1 (default 1000000)\n"
        "  --zipf S            Zipf exponent, 0 = uniform (default 0.99)\n"
        "  --value-size B      SET value size in bytes (default 100)\n"
        "  --read-pct R        percent of requests that are GETs (default 95)\n"
        "  --clients C         connections (default 50)\n"
        "  --pipeline P        requests in flight per connection (default 1)\n"
        "  --duration SEC      measured seconds; 0 = only --preload (default 10)\n"
        "  --warmup SEC        unmeasured seconds first (default 2)\n"
        "  --seed N            random seed (default 1)\n"
        "  --preload           SET every key first, pipelined, straight to --redis-port\n"
        "  --cache-entries E   L1 size for the ideal model, in entries (default keys/100)\n"
        "  --ttl-ms T          L1 TTL for the ideal model (default 1000)\n"
        "  --model-policy T,J,R  the L1 model's hot-threshold, TTL jitter percent and\n"
        "                      refresh-ahead percent (default 2,10,10: hotproxy's defaults)\n"
        "  --proxy-pid PID     report this process' CPU per million requests as proxy_cpu\n"
        "  --redis-pid PID     same, as redis_cpu\n"
        "  --help              this text\n"
        "\n"
        "Output: one 'name: value' line per figure.\n",
        f);
}

static void parse_opts(opts *o, int argc, char **argv)
{
    static const struct option lo[] = {
        {"host", 1, 0, 'h'}, {"port", 1, 0, 'p'}, {"redis-port", 1, 0, 'R'}, {"keys", 1, 0, 'k'},
        {"zipf", 1, 0, 'z'}, {"value-size", 1, 0, 'v'}, {"read-pct", 1, 0, 'r'}, {"clients", 1, 0, 'c'},
        {"pipeline", 1, 0, 'P'}, {"duration", 1, 0, 'd'}, {"warmup", 1, 0, 'w'}, {"seed", 1, 0, 's'},
        {"preload", 0, 0, 'L'}, {"cache-entries", 1, 0, 'E'}, {"ttl-ms", 1, 0, 'T'}, {"model-policy", 1, 0, 'M'},
        {"proxy-pid", 1, 0, 'X'}, {"redis-pid", 1, 0, 'Y'}, {"help", 0, 0, 'H'}, {0, 0, 0, 0},
    };
    *o = (opts){.host = "127.0.0.1", .port = 6379, .redis_port = 0, .keys = 1000000, .zipf = 0.99,
                .value_size = 100, .read_pct = 95, .clients = 50, .pipeline = 1, .duration = 10,
                .warmup = 2, .seed = 1, .cache_entries = 0, .ttl_ms = 1000,
                .model_threshold = 2, .model_jitter = 10, .model_refresh = 10};
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'h': o->host = optarg; break;
        case 'p': o->port = (int)parse_num("port", optarg, 1, 65535); break;
        case 'R': o->redis_port = (int)parse_num("redis-port", optarg, 1, 65535); break;
        case 'k': o->keys = (uint32_t)parse_num("keys", optarg, 1, 1u << 30); break;
        case 'z': o->zipf = parse_num("zipf", optarg, 0, 10); break;
        case 'v': o->value_size = (uint32_t)parse_num("value-size", optarg, 0, 64 << 20); break;
        case 'r': o->read_pct = parse_num("read-pct", optarg, 0, 100); break;
        case 'c': o->clients = (int)parse_num("clients", optarg, 1, 10000); break;
        case 'P': o->pipeline = (int)parse_num("pipeline", optarg, 1, 10000); break;
        case 'd': o->duration = parse_num("duration", optarg, 0, 3600); break;
        case 'w': o->warmup = parse_num("warmup", optarg, 0, 3600); break;
        case 's': o->seed = (uint64_t)parse_num("seed", optarg, 0, 1e18); break;
        case 'L': o->preload = 1; break;
        case 'E': o->cache_entries = (uint64_t)parse_num("cache-entries", optarg, 0, 1u << 30); break;
        case 'T': o->ttl_ms = (uint64_t)parse_num("ttl-ms", optarg, 1, 86400000); break;
        case 'M':
            if (sscanf(optarg, "%u,%u,%u", &o->model_threshold, &o->model_jitter, &o->model_refresh) != 3 ||
                o->model_threshold > 15 || o->model_jitter > 100 || o->model_refresh > 100)
                die("--model-policy wants THRESHOLD,JITTER,REFRESH (0-15, 0-100, 0-100), not '%s'", optarg);
            break;
        case 'X': o->proxy_pid = (int)parse_num("proxy-pid", optarg, 1, 1 << 30); break;
        case 'Y': o->redis_pid = (int)parse_num("redis-pid", optarg, 1, 1 << 30); break;
        case 'H': usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (optind < argc) die("unexpected argument '%s' (try --help)", argv[optind]);
    if (!o->redis_port) o->redis_port = o->port;
    if (!o->cache_entries) o->cache_entries = o->keys / 100 ? o->keys / 100 : 1;
}

/* ---- key space: Zipf table and rank -> key id permutation ---- */

typedef struct keyspace {
    uint32_t n;
    double *cdf;      /* n entries, cdf[n-1] == 1 */
    uint32_t *guide;  /* n + 1 entries: guide[j] = least i with cdf[i] > j/n */
    uint32_t *id;     /* rank -> key id */
} keyspace;

static uint64_t feistel(uint64_t x, unsigned half, const uint64_t key[4])
{
    uint64_t mask = (1ull << half) - 1, l = x >> half, r = x & mask;
    for (int i = 0; i < 4; i++) {
        uint64_t s = r ^ key[i];
        uint64_t f = splitmix64(&s) & mask;
        uint64_t nl = r;
        r = l ^ f;
        l = nl;
    }
    return (l << half) | r;
}

static void keyspace_init(keyspace *ks, uint32_t n, double s, uint64_t seed)
{
    ks->n = n;
    ks->cdf = xrealloc(NULL, (size_t)n * sizeof(double));
    ks->guide = xrealloc(NULL, ((size_t)n + 1) * sizeof(uint32_t));
    ks->id = xrealloc(NULL, (size_t)n * sizeof(uint32_t));
    double sum = 0;
    for (uint32_t i = 0; i < n; i++) {
        sum += s == 0 ? 1.0 : pow((double)i + 1, -s);
        ks->cdf[i] = sum;
    }
    for (uint32_t i = 0; i < n; i++) ks->cdf[i] /= sum;
    ks->cdf[n - 1] = 1.0;
    uint32_t i = 0;
    for (uint32_t j = 0; j <= n; j++) {
        double start = (double)j / n;
        while (i < n - 1 && ks->cdf[i] <= start) i++;
        ks->guide[j] = i;
    }

    unsigned bits = 2;
    while ((1ull << bits) < n) bits += 2;
    uint64_t key[4], ss = seed ^ 0x5eed5eed5eedull;
    for (int k = 0; k < 4; k++) key[k] = splitmix64(&ss);
    for (uint32_t r = 0; r < n; r++) {
        uint64_t x = r;
        do x = feistel(x, bits / 2, key); while (x >= n);  /* cycle walking keeps it a bijection */
        ks->id[r] = (uint32_t)x;
    }
}

static inline uint32_t keyspace_draw(const keyspace *ks, rng *r)
{
    double u = rng_unit(r);
    uint32_t j = (uint32_t)(u * ks->n);
    if (j >= ks->n) j = ks->n - 1;
    uint32_t lo = ks->guide[j], hi = ks->guide[j + 1]; /* the answer is in [lo, hi] */
    if (lo > 0 && ks->cdf[lo - 1] > u) lo = 0; /* u * n rounded up past a slice edge: search it all */
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (ks->cdf[mid] > u) hi = mid;
        else lo = mid + 1;
    }
    return lo;
}

/* ---- request encoding ---- */

static size_t enc_key(char *p, uint32_t id)
{
    char num[24];
    size_t nl = fmt_u64(num, id), n = 0;
    p[n++] = '$';
    n += fmt_u64(p + n, 4 + nl);
    memcpy(p + n, "\r\nkey:", 6);
    n += 6;
    memcpy(p + n, num, nl);
    n += nl;
    memcpy(p + n, "\r\n", 2);
    return n + 2;
}

/* Room a request needs at most, for buffer checks. */
static size_t req_max(uint32_t value_size) { return 64 + value_size; }

typedef struct valenc {
    char *bytes;  /* "$<n>\r\n<value>\r\n" */
    size_t len;
} valenc;

static void valenc_init(valenc *v, uint32_t size)
{
    v->bytes = xrealloc(NULL, size + 32);
    int h = snprintf(v->bytes, 32, "$%u\r\n", size);
    for (uint32_t i = 0; i < size; i++) v->bytes[h + i] = (char)('a' + i % 26);
    memcpy(v->bytes + h + size, "\r\n", 2);
    v->len = (size_t)h + size + 2;
}

static size_t enc_get(char *p, uint32_t id)
{
    memcpy(p, "*2\r\n$3\r\nGET\r\n", 13);
    return 13 + enc_key(p + 13, id);
}

static size_t enc_set(char *p, uint32_t id, const valenc *v)
{
    memcpy(p, "*3\r\n$3\r\nSET\r\n", 13);
    size_t n = 13 + enc_key(p + 13, id);
    memcpy(p + n, v->bytes, v->len);
    return n + v->len;
}

/* ---- connections ---- */

static void write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) die("write: %s", w < 0 ? strerror(errno) : "closed");
        p += w;
        n -= (size_t)w;
    }
}

/*
 * SET every key, pipelined in chunks on one blocking connection: a chunk is
 * written while Redis is still answering the one before, and its replies are
 * read after the next chunk is on its way, so Redis never waits on us.
 */
static void preload(const opts *o, const keyspace *ks, const valenc *val)
{
    const uint32_t chunk = 8192;
    uint64_t t0 = now_ns();
    int fd = tcp_connect(o->host, o->redis_port);
    size_t cap = (size_t)chunk * req_max(o->value_size);
    char *out = xrealloc(NULL, cap);
    size_t incap = 1 << 20, inlen = 0;
    char *in = xrealloc(NULL, incap);
    uint32_t pending = 0; /* replies owed for the previous chunk */
    for (uint32_t next = 0;;) {
        size_t n = 0;
        uint32_t sent = 0;
        while (next < ks->n && sent < chunk) {
            n += enc_set(out + n, next++, val); /* key ids 0..N-1: every key a rank maps to */
            sent++;
        }
        if (sent) write_all(fd, out, n);
        while (pending) {
            long m;
            char kind;
            int nil = 0;
            size_t off = 0;
            while (pending && (m = resp_scan(in + off, inlen - off, 0, &kind, &nil)) > 0) {
                if (kind == '-') die("preload: Redis said %.*s", (int)m - 2, in + off);
                off += (size_t)m;
                pending--;
            }
            if (m < 0) die("preload: bad reply from Redis");
            memmove(in, in + off, inlen - off);
            inlen -= off;
            if (!pending) break;
            if (inlen == incap) in = xrealloc(in, incap *= 2);
            ssize_t r = read(fd, in + inlen, incap - inlen);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) die("preload: read: %s", r < 0 ? strerror(errno) : "closed");
            inlen += (size_t)r;
        }
        pending = sent;
        if (!sent) break;
    }
    close(fd);
    free(out);
    free(in);
    double s = (double)(now_ns() - t0) / 1e9;
    printf("preload_keys: %u\npreload_s: %.2f\npreload_rps: %.0f\n", ks->n, s, ks->n / s);
    fflush(stdout);
}

/* ---- INFO helpers (blocking hiredis, used only at phase changes) ---- */

static redisContext *info_connect(const char *host, int port)
{
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    if (!c || c->err) die("INFO connection to %s:%d: %s", host, port, c ? c->errstr : "out of memory");
    redisSetTimeout(c, tv);
    return c;
}

/* Integer after "<field>" in INFO text; -1 if absent. */
static long long info_field(const char *text, const char *field)
{
    const char *p = text;
    size_t fl = strlen(field);
    while ((p = strstr(p, field))) {
        if (p == text || p[-1] == '\n') return strtoll(p + fl, NULL, 10);
        p += fl;
    }
    return -1;
}

static char *info_text(redisContext *c, const char *section)
{
    redisReply *r = redisCommand(c, "INFO %s", section);
    if (!r) die("INFO %s: %s", section, c->errstr);
    if (r->type != REDIS_REPLY_STRING) die("INFO %s: unexpected reply", section);
    char *s = strdup(r->str);
    freeReplyObject(r);
    return s;
}

typedef struct snapshot {
    long long l1_hits, l1_misses, l1_coalesced, l1_fills, upstream_gets;
    double proxy_cpu, redis_cpu, self_cpu;
    uint64_t t_ns;
} snapshot;

static double proc_cpu_s(int pid)
{
    if (!pid) return 0;
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (!p) return -1;
    unsigned long long ut = 0, st = 0;
    /* after ")": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2) return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* ---- the run ---- */

typedef struct trace_ev {
    uint64_t t_us;   /* issue time since the run began */
    uint32_t rank;
    uint32_t write;
} trace_ev;

enum phase { WARMUP, MEASURE, DRAIN };

#define TRACE_MAX ((size_t)1 << 28)

typedef struct bench bench;

typedef struct client {
    bench *b;
    int fd;
    ev_io rio, wio;
    char *in;
    size_t inlen, incap;
    char *out;
    size_t outoff, outlen, outcap;
    uint64_t *sent_ns;   /* ring of in-flight requests, oldest at head */
    uint8_t *flags;      /* REQ_* */
    int head, count;
    rng r;
} client;

#define REQ_WRITE 1
#define REQ_COUNTED 2

struct bench {
    const opts *o;
    struct ev_loop *loop;
    keyspace ks;
    valenc val;
    client *clients;
    enum phase phase;
    uint64_t write_threshold;  /* rng_next() < this: a SET */
    uint64_t t0_ns;
    ev_timer phase_timer, drain_timer;
    int inflight_total;
    /* measured */
    hist *all, *gets, *sets;
    uint64_t reads, writes, errors, nils, issued_reads;
    trace_ev *trace;
    size_t ntrace, trace_cap;
    int trace_full;
    uint64_t measure_start_us, measure_end_us;
    redisContext *target_info, *redis_info;
    int target_is_hotproxy;
    snapshot s0, s1;
};

static void take_snapshot(bench *b, snapshot *s)
{
    s->t_ns = now_ns();
    s->proxy_cpu = proc_cpu_s(b->o->proxy_pid);
    s->redis_cpu = proc_cpu_s(b->o->redis_pid);
    s->self_cpu = self_cpu_s();
    char *t = info_text(b->target_info, "hotproxy_cache");
    s->l1_hits = info_field(t, "hotproxy_l1_hits:");
    s->l1_misses = info_field(t, "hotproxy_l1_misses:");
    s->l1_coalesced = info_field(t, "hotproxy_l1_coalesced:");
    s->l1_fills = info_field(t, "hotproxy_l1_fills:");
    free(t);
    t = info_text(b->redis_info, "commandstats");
    s->upstream_gets = info_field(t, "cmdstat_get:calls=");
    if (s->upstream_gets < 0) s->upstream_gets = 0; /* no GET served yet */
    free(t);
}

static void client_flush(client *c);

static void issue(client *c, uint64_t now)
{
    bench *b = c->b;
    if (c->outcap - c->outlen < req_max(b->o->value_size)) {
        if (c->outoff) {
            memmove(c->out, c->out + c->outoff, c->outlen - c->outoff);
            c->outlen -= c->outoff;
            c->outoff = 0;
        }
        if (c->outcap - c->outlen < req_max(b->o->value_size))
            c->out = xrealloc(c->out, c->outcap = c->outcap * 2 + req_max(b->o->value_size));
    }
    int write = rng_next(&c->r) < b->write_threshold;
    uint32_t rank = keyspace_draw(&b->ks, &c->r);
    uint32_t id = b->ks.id[rank];
    c->outlen += write ? enc_set(c->out + c->outlen, id, &b->val) : enc_get(c->out + c->outlen, id);
    int slot = (c->head + c->count) % b->o->pipeline;
    c->sent_ns[slot] = now;
    c->flags[slot] = (uint8_t)((write ? REQ_WRITE : 0) | (b->phase == MEASURE ? REQ_COUNTED : 0));
    c->count++;
    b->inflight_total++;
    if (b->phase == MEASURE && !write) b->issued_reads++;
    if (b->trace_full) return;
    if (b->ntrace == b->trace_cap) {
        if (b->trace_cap >= TRACE_MAX) { /* 4 GB of trace: stop, and say the ideal is unknown */
            b->trace_full = 1;
            return;
        }
        b->trace_cap = b->trace_cap ? b->trace_cap * 2 : 1 << 20;
        b->trace = xrealloc(b->trace, b->trace_cap * sizeof(trace_ev));
    }
    b->trace[b->ntrace++] = (trace_ev){(now - b->t0_ns) / 1000, rank, (uint32_t)write};
}

static void on_write(struct ev_loop *loop, ev_io *w, int revents)
{
    client_flush(w->data);
}

static void client_flush(client *c)
{
    if (!write_some(c->fd, c->out, &c->outoff, c->outlen)) {
        ev_io_start(c->b->loop, &c->wio);
        return;
    }
    c->outoff = c->outlen = 0;
    ev_io_stop(c->b->loop, &c->wio);
}

static void on_read(struct ev_loop *loop, ev_io *w, int revents)
{
    client *c = w->data;
    bench *b = c->b;
    if (!read_some(c->fd, &c->in, &c->inlen, &c->incap, 16384)) return;
    uint64_t now = now_ns();
    size_t off = 0;
    int done = 0;
    while (off < c->inlen) {
        char kind = 0;
        int nil = 0;
        long m = resp_scan(c->in + off, c->inlen - off, 0, &kind, &nil);
        if (m == 0) break;
        if (m < 0) die("protocol error in a reply from the target");
        if (!c->count) die("a reply nobody asked for");
        off += (size_t)m;
        int f = c->flags[c->head];
        uint64_t lat = now - c->sent_ns[c->head];
        c->head = (c->head + 1) % b->o->pipeline;
        c->count--;
        b->inflight_total--;
        done++;
        if (f & REQ_COUNTED) {
            h_add(b->all, lat);
            if (f & REQ_WRITE) {
                h_add(b->sets, lat);
                b->writes++;
            } else {
                h_add(b->gets, lat);
                b->reads++;
            }
            if (kind == '-') b->errors++;
            if (nil) b->nils++;
        }
    }
    if (off) {
        memmove(c->in, c->in + off, c->inlen - off);
        c->inlen -= off;
    }
    if (b->phase != DRAIN) {
        for (int i = 0; i < done; i++) issue(c, now);
        client_flush(c);
    } else if (!b->inflight_total) {
        ev_break(loop, EVBREAK_ALL);
    }
}

static void on_drain_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    bench *b = t->data;
    fprintf(stderr, "hotkeys: %d replies still missing 10 s after the end; giving up on them\n", b->inflight_total);
    ev_break(loop, EVBREAK_ALL);
}

static void on_phase(struct ev_loop *loop, ev_timer *t, int revents)
{
    bench *b = t->data;
    if (b->phase == WARMUP) {
        take_snapshot(b, &b->s0);
        b->measure_start_us = (b->s0.t_ns - b->t0_ns) / 1000;
        b->phase = MEASURE;
        ev_timer_set(t, b->o->duration, 0);
        ev_timer_start(loop, t);
    } else {
        b->phase = DRAIN;
        take_snapshot(b, &b->s1);
        b->measure_end_us = (b->s1.t_ns - b->t0_ns) / 1000;
        if (!b->inflight_total) {
            ev_break(loop, EVBREAK_ALL);
            return;
        }
        ev_timer_init(&b->drain_timer, on_drain_timeout, 10, 0);
        b->drain_timer.data = b;
        ev_timer_start(loop, &b->drain_timer);
    }
}

/* ---- the L1 model (see the top of the file) ---- */

static uint64_t model_random(void *arg) { return rng_next(arg); }

static double model_replay(const bench *b, uint64_t entries, uint64_t ttl_ms, unsigned jitter, unsigned refresh,
                           uint32_t threshold)
{
    rng r;
    rng_seed(&r, 42);
    static const char variant[] = "\x00\x02GET";
    const char *reply = b->val.bytes; /* "$<n>\r\n<value>\r\n", the GET reply too */
    size_t rlen = b->val.len;
    /* bytes per entry: one stored in a roomy probe cache */
    l1_config pc = {.maxmemory = 1 << 20, .max_entry_size = 1 << 20, .random = model_random, .random_arg = &r};
    l1 *probe = l1_create(&pc);
    char k[32];
    int kl = snprintf(k, sizeof(k), "key:%u", b->ks.n - 1);
    l1_store(probe, k, (size_t)kl, variant, sizeof(variant) - 1, reply, rlen, l1_ticket(probe, k, (size_t)kl), 1000, 0);
    l1_stats ps;
    l1_get_stats(probe, &ps);
    l1_destroy(probe);
    l1_config cfg = {.maxmemory = entries * ps.bytes, .max_entry_size = 1 << 20, .hot_threshold = threshold,
                     .random = model_random, .random_arg = &r};
    l1 *c = l1_create(&cfg);
    uint64_t reads = 0, hits = 0;
    for (size_t i = 0; i < b->ntrace; i++) {
        const trace_ev *e = &b->trace[i];
        uint64_t now = e->t_us / 1000;
        kl = snprintf(k, sizeof(k), "key:%u", b->ks.id[e->rank]);
        if (e->write) {
            l1_invalidate(c, k, (size_t)kl);
            continue;
        }
        l1_meta m;
        l1_value *v = l1_get_meta(c, k, (size_t)kl, variant, sizeof(variant) - 1, now, &m);
        int scored = e->t_us >= b->measure_start_us && e->t_us < b->measure_end_us;
        int fill = !v;
        if (v) {
            l1_value_put(v);
            /* hotproxy's own early-refresh decision (cache/l1.h) */
            fill = l1_should_refresh(c, &m, now, ttl_ms, jitter, refresh);
        }
        if (fill) {
            /* hotproxy's own TTL choice for a key with no expiry in Redis
             * (PTTL -1), its fill sent and answered now */
            l1_fill f = {.sent_ms = now, .pttl = -1, .ttl_ms = ttl_ms, .jitter_pct = jitter};
            l1_life life;
            l1_life_of(c, &f, &life);
            l1_store(c, k, (size_t)kl, variant, sizeof(variant) - 1, reply, rlen, l1_ticket(c, k, (size_t)kl),
                     life.expires_ms - now, now);
        }
        if (scored) reads++, hits += v != NULL;
    }
    l1_destroy(c);
    return reads ? (double)hits / (double)reads : 0;
}

/* ---- the ideal model (see the top of the file) ---- */

typedef struct ideal {
    uint64_t reads, hits, hits_no_ttl, set_size;
    double top_share; /* share of the window's reads that went to the top-E keys */
} ideal;

static void ideal_replay(const bench *b, uint64_t entries, uint64_t ttl_ms, ideal *out)
{
    uint32_t n = b->ks.n;
    uint32_t *count = calloc(n, sizeof(uint32_t));
    uint8_t *in_set = calloc(n, 1);
    uint64_t *fetched = malloc((size_t)n * sizeof(uint64_t));  /* UINT64_MAX: not cached */
    uint8_t *valid_no_ttl = calloc(n, 1);
    if (!count || !in_set || !fetched || !valid_no_ttl) die("out of memory in the ideal model");
    uint32_t maxc = 0;
    for (size_t i = 0; i < b->ntrace; i++)
        if (!b->trace[i].write && ++count[b->trace[i].rank] > maxc) maxc = count[b->trace[i].rank];

    /* The E most read keys: find the count threshold, then take ties in rank order. */
    uint64_t *with_count = calloc((size_t)maxc + 2, sizeof(uint64_t));
    if (!with_count) die("out of memory in the ideal model");
    for (uint32_t r = 0; r < n; r++) with_count[count[r]]++;
    uint64_t above = 0;
    uint32_t thr = maxc + 1;
    while (thr > 1 && above + with_count[thr - 1] <= entries) above += with_count[--thr];
    /* now: keys with count >= thr number `above` <= entries; fill the rest from count thr-1 */
    uint64_t room = entries - above, taken = 0;
    for (uint32_t r = 0; r < n; r++) {
        if (count[r] >= thr && count[r] > 0) in_set[r] = 1, taken++;
        else if (thr > 1 && count[r] == thr - 1 && room) in_set[r] = 1, room--, taken++;
    }
    free(with_count);

    for (uint32_t r = 0; r < n; r++) fetched[r] = UINT64_MAX;
    uint64_t ttl_us = ttl_ms * 1000, reads = 0, hits = 0, hits_nt = 0, top = 0;
    for (size_t i = 0; i < b->ntrace; i++) {
        const trace_ev *e = &b->trace[i];
        int scored = e->t_us >= b->measure_start_us && e->t_us < b->measure_end_us;
        if (e->write) {
            fetched[e->rank] = UINT64_MAX;
            valid_no_ttl[e->rank] = 0;
            continue;
        }
        int member = in_set[e->rank];
        int hit = member && fetched[e->rank] != UINT64_MAX && e->t_us - fetched[e->rank] < ttl_us;
        int hit_nt = member && valid_no_ttl[e->rank];
        if (member && !hit) fetched[e->rank] = e->t_us;
        if (member) valid_no_ttl[e->rank] = 1;
        if (scored) {
            reads++;
            hits += hit;
            hits_nt += hit_nt;
            top += member;
        }
    }
    *out = (ideal){.reads = reads, .hits = hits, .hits_no_ttl = hits_nt, .set_size = taken,
                   .top_share = reads ? (double)top / reads : 0};
    free(count);
    free(in_set);
    free(fetched);
    free(valid_no_ttl);
}

/* ---- main ---- */

int main(int argc, char **argv)
{
    opts o;
    parse_opts(&o, argc, argv);
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    raise_fd_limit(o.clients + 64);

    static bench b; /* zeroed */
    b.o = &o;
    uint64_t t_init = now_ns();
    keyspace_init(&b.ks, o.keys, o.zipf, o.seed);
    valenc_init(&b.val, o.value_size);
    double init_s = (double)(now_ns() - t_init) / 1e9;

    if (o.preload) preload(&o, &b.ks, &b.val);
    if (o.duration == 0) return 0;

    b.all = calloc(1, sizeof(hist));
    b.gets = calloc(1, sizeof(hist));
    b.sets = calloc(1, sizeof(hist));
    if (!b.all || !b.gets || !b.sets) die("out of memory");
    double wf = (100.0 - o.read_pct) / 100.0;
    b.write_threshold = wf >= 1 ? UINT64_MAX : (uint64_t)(wf * 18446744073709551616.0);
    b.target_info = info_connect(o.host, o.port);
    b.redis_info = info_connect(o.host, o.redis_port);
    char *t = info_text(b.target_info, "hotproxy_cache");
    b.target_is_hotproxy = info_field(t, "hotproxy_l1_hits:") >= 0;
    free(t);

    b.loop = ev_default_loop(EVFLAG_AUTO);
    b.clients = calloc((size_t)o.clients, sizeof(client));
    if (!b.clients) die("out of memory");
    for (int i = 0; i < o.clients; i++) {
        client *c = &b.clients[i];
        c->b = &b;
        c->fd = tcp_connect(o.host, o.port);
        fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
        c->incap = 65536;
        c->in = xrealloc(NULL, c->incap);
        c->outcap = (size_t)o.pipeline * req_max(o.value_size) + 4096;
        c->out = xrealloc(NULL, c->outcap);
        c->sent_ns = xrealloc(NULL, (size_t)o.pipeline * sizeof(uint64_t));
        c->flags = xrealloc(NULL, (size_t)o.pipeline);
        rng_seed(&c->r, o.seed * 1000003 + (uint64_t)i);
        ev_io_init(&c->rio, on_read, c->fd, EV_READ);
        ev_io_init(&c->wio, on_write, c->fd, EV_WRITE);
        c->rio.data = c->wio.data = c;
        ev_io_start(b.loop, &c->rio);
    }

    b.phase = WARMUP;
    b.t0_ns = now_ns();
    ev_timer_init(&b.phase_timer, on_phase, o.warmup, 0);
    b.phase_timer.data = &b;
    ev_timer_start(b.loop, &b.phase_timer);
    if (o.warmup == 0) { /* measure from the first request */
        ev_timer_stop(b.loop, &b.phase_timer);
        on_phase(b.loop, &b.phase_timer, 0);
    }
    for (int i = 0; i < o.clients; i++) {
        client *c = &b.clients[i];
        uint64_t now = now_ns();
        for (int k = 0; k < o.pipeline; k++) issue(c, now);
        client_flush(c);
    }
    ev_run(b.loop, 0);

    /* ---- report ---- */
    const snapshot *s0 = &b.s0, *s1 = &b.s1;
    double secs = (double)(s1->t_ns - s0->t_ns) / 1e9;
    uint64_t req = b.reads + b.writes;
    double mreq = req / 1e6;
    printf("target: %s:%d (%s)\n", o.host, o.port, b.target_is_hotproxy ? "hotproxy" : "redis");
    printf("redis: %s:%d\n", o.host, o.redis_port);
    printf("keys: %u\nzipf: %g\nvalue_size: %u\nread_pct: %g\nclients: %d\npipeline: %d\nseed: %llu\n", o.keys,
           o.zipf, o.value_size, o.read_pct, o.clients, o.pipeline, (unsigned long long)o.seed);
    printf("zipf_sampler: inverse CDF table + guide table (indexed search), O(1) expected per draw\n");
    printf("table_build_s: %.3f\n", init_s);
    printf("warmup_s: %g\nduration_s: %.3f\n", o.warmup, secs);
    printf("requests: %llu\nreads: %llu\nwrites: %llu\nerrors: %llu\nnil_replies: %llu\n", (unsigned long long)req,
           (unsigned long long)b.reads, (unsigned long long)b.writes, (unsigned long long)b.errors,
           (unsigned long long)b.nils);
    printf("throughput_rps: %.0f\n", req / secs);
    printf("latency_p50_us: %.1f\nlatency_p99_us: %.1f\nlatency_p999_us: %.1f\nlatency_max_us: %.1f\n",
           h_quantile(b.all, 0.50) / 1e3, h_quantile(b.all, 0.99) / 1e3, h_quantile(b.all, 0.999) / 1e3,
           b.all->max / 1e3);
    printf("get_latency_p50_us: %.1f\nget_latency_p99_us: %.1f\n", h_quantile(b.gets, 0.50) / 1e3,
           h_quantile(b.gets, 0.99) / 1e3);
    if (b.writes)
        printf("set_latency_p50_us: %.1f\nset_latency_p99_us: %.1f\n", h_quantile(b.sets, 0.50) / 1e3,
               h_quantile(b.sets, 0.99) / 1e3);

    double l1_ratio = -1;
    if (b.target_is_hotproxy) {
        long long h = s1->l1_hits - s0->l1_hits, m = s1->l1_misses - s0->l1_misses;
        l1_ratio = h + m ? (double)h / (double)(h + m) : 0;
        printf("l1_hits: %lld\nl1_misses: %lld\nl1_coalesced: %lld\nl1_fills: %lld\nl1_hit_ratio: %.4f\n", h, m,
               s1->l1_coalesced - s0->l1_coalesced, s1->l1_fills - s0->l1_fills, l1_ratio);
    } else {
        printf("l1_hit_ratio: n/a (the target has no INFO hotproxy_cache)\n");
    }
    long long ug = s1->upstream_gets - s0->upstream_gets;
    printf("client_gets: %llu\nupstream_gets: %lld\n", (unsigned long long)b.issued_reads, ug);
    printf("upstream_offload: %.4f\n", b.issued_reads ? 1.0 - (double)ug / (double)b.issued_reads : 0);

    if (b.trace_full) {
        printf("ideal_model: n/a (the trace outgrew %zu requests; run shorter)\nhit ratio vs ideal: n/a\n", TRACE_MAX);
    } else {
        ideal id;
        ideal_replay(&b, o.cache_entries, o.ttl_ms, &id);
        printf("ideal_model: top-%llu keys by read count in this run's trace, fixed; a read hits iff its key is one "
               "of them, was fetched < %llu ms before and not written since; a miss fetches at once\n",
               (unsigned long long)o.cache_entries, (unsigned long long)o.ttl_ms);
        printf("ideal_not_modelled: TTL jitter, early refresh (which can beat the oracle on hot keys), admission "
               "threshold, fill latency\n");
        printf("ideal_cache_entries: %llu\nideal_ttl_ms: %llu\ntrace_requests: %zu\n", (unsigned long long)id.set_size,
               (unsigned long long)o.ttl_ms, b.ntrace);
        printf("ideal_top_keys_read_share: %.4f\n", id.top_share);
        printf("ideal_hit_ratio: %.4f\n", id.reads ? (double)id.hits / id.reads : 0);
        printf("ideal_hit_ratio_no_ttl: %.4f\n", id.reads ? (double)id.hits_no_ttl / id.reads : 0);
        double mr = model_replay(&b, o.cache_entries, o.ttl_ms, o.model_jitter, o.model_refresh, o.model_threshold);
        printf("l1_model: cache/l1 replayed on the same trace, %llu entries, hot-threshold %u, jitter %u%%, "
               "refresh-ahead %u%%, each miss filled at once\n", (unsigned long long)o.cache_entries,
               o.model_threshold, o.model_jitter, o.model_refresh);
        printf("l1_model_hit_ratio: %.4f\n", mr);
        if (id.hits) printf("l1_model vs ideal: %.1f%%\n", 100.0 * mr / ((double)id.hits / id.reads));
        if (l1_ratio >= 0 && id.hits)
            printf("hit ratio vs ideal: %.1f%%\n", 100.0 * l1_ratio / ((double)id.hits / id.reads));
        else
            printf("hit ratio vs ideal: n/a\n");
    }

    if (o.proxy_pid)
        printf("proxy_cpu_s: %.2f\nproxy_cpu_s_per_mreq: %.3f\n", s1->proxy_cpu - s0->proxy_cpu,
               mreq ? (s1->proxy_cpu - s0->proxy_cpu) / mreq : 0);
    if (o.redis_pid)
        printf("redis_cpu_s: %.2f\nredis_cpu_s_per_mreq: %.3f\n", s1->redis_cpu - s0->redis_cpu,
               mreq ? (s1->redis_cpu - s0->redis_cpu) / mreq : 0);
    printf("client_cpu_s: %.2f\nclient_cpu_s_per_mreq: %.3f\n", s1->self_cpu - s0->self_cpu,
           mreq ? (s1->self_cpu - s0->self_cpu) / mreq : 0);
    return b.errors ? 1 : 0;
}
