/*
 * stampede: many clients hammer one key that keeps expiring, and we count
 * what each expiry sends to Redis and what it does to latency.
 *
 * --clients connections (default 1000), each a non-blocking socket on one
 * libev loop with one GET of --key in flight at a time (closed loop, with an
 * optional random pause of mean --think-us between requests), against
 * --port: hotproxy or Redis itself.  The key is SET with PX --ttl-ms straight into Redis
 * (--redis-port) by a control connection at the start.  Who puts it back
 * after it expires is --repopulate:
 *
 *   client (default): cache-aside, as applications do.  A client whose GET
 *       returns nil "recomputes" the value for --recompute-ms (it sends
 *       nothing meanwhile) and then SETs it with PX --ttl-ms through its own
 *       connection to the target, and goes back to GETs once that is
 *       acknowledged.  Every client that saw the nil recomputes: that herd
 *       is the stampede an application would feel.
 *   tool: the control connection re-SETs the key in Redis --repopulate-delay-ms
 *       after the expiry it predicts (SET acknowledged + TTL); clients that
 *       get nil just GET again.  Through hotproxy, this also exercises
 *       tracking: the write is made elsewhere than through the proxy.
 *
 * An expiry happens at t_e: in client mode, the first nil reply after a
 * value (a nil less than TTL/2 after the previous expiry belongs to it); in
 * tool mode, when the tool's SET was acknowledged plus the TTL (Redis
 * expires the key a little earlier than that, never later).  Its window is
 * [t_e - --window-ms, t_e + --window-ms]; a GET belongs to the window its
 * issue time falls in.  Upstream GETs are Redis' own count: the control
 * connection polls INFO commandstats every --sample-ms, and the cumulative
 * cmdstat_get is interpolated linearly at the window's edges.  An expiry's
 * nil replies are those from its window's start to the next window's start
 * (in client mode each one is a recompute).  Steady state is everything
 * after --warmup outside every window; its upstream GET rate
 * is shown per window length, so the two compare directly.  Latencies are
 * from the write of a GET to the parse of its reply; every sample is kept,
 * so percentiles are exact.
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
#include <hiredis/adapters/libev.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#define BENCH_NAME "stampede"
#include "bench.h"

/* ---- options ---- */

enum { REPOP_CLIENT, REPOP_TOOL };

typedef struct opts {
    const char *host, *key;
    int port, redis_port, clients, rounds, repopulate;
    uint64_t ttl_ms, recompute_ms, repop_delay_ms, window_ms, sample_ms, think_us;
    uint32_t value_size;
    double warmup, max_seconds;
} opts;

static void usage(FILE *f)
{
    fputs(
        "Usage: stampede [options]\n"
        "Many clients GET one key that keeps expiring; per expiry: upstream GETs and latency.\n"
        "\n"
        "  --host H                 target host (default 127.0.0.1)\n"
        "  --port P                 target port: hotproxy or Redis (default 6379)\n"
        "  --redis-port P           the Redis behind (default: --port)\n"
        "  --clients N              connections, one GET in flight each (default 1000)\n"
        "  --key K                  the key (default stampede:key)\n"
        "  --value-size B           value size (default 100)\n"
        "  --ttl-ms T               PX of every SET of the key (default 1000)\n"
        "  --rounds R               expiries to measure (default 10)\n"
        "  --repopulate client|tool who SETs the key again after it expires (default client):\n"
        "                           client = every client that got nil, after --recompute-ms,\n"
        "                           through the target (cache-aside); tool = this tool, in Redis,\n"
        "                           --repopulate-delay-ms after the expiry\n"
        "  --recompute-ms M         client mode: time to \"recompute\" a value (default 20)\n"
        "  --repopulate-delay-ms D  tool mode: delay after the expiry (default 10)\n"
        "  --think-us U             mean pause between a reply and the next GET, drawn from\n"
        "                           an exponential law so clients do not march in step (default 0)\n"
        "  --window-ms W            an expiry's window is +-W around it (default 50)\n"
        "  --sample-ms S            INFO commandstats polling period (default 10)\n"
        "  --warmup SEC             unmeasured start (default 1)\n"
        "  --max-seconds SEC        hard bound on the run (default: from rounds and TTL)\n"
        "  --help                   this text\n",
        f);
}

static void parse_opts(opts *o, int argc, char **argv)
{
    static const struct option lo[] = {
        {"host", 1, 0, 'h'}, {"port", 1, 0, 'p'}, {"redis-port", 1, 0, 'R'}, {"clients", 1, 0, 'c'},
        {"key", 1, 0, 'k'}, {"value-size", 1, 0, 'v'}, {"ttl-ms", 1, 0, 't'}, {"rounds", 1, 0, 'r'},
        {"repopulate", 1, 0, 'm'}, {"recompute-ms", 1, 0, 'C'}, {"repopulate-delay-ms", 1, 0, 'D'},
        {"think-us", 1, 0, 'T'}, {"window-ms", 1, 0, 'W'}, {"sample-ms", 1, 0, 'S'}, {"warmup", 1, 0, 'w'},
        {"max-seconds", 1, 0, 'M'}, {"help", 0, 0, 'H'}, {0, 0, 0, 0},
    };
    *o = (opts){.host = "127.0.0.1", .key = "stampede:key", .port = 6379, .clients = 1000, .rounds = 10,
                .repopulate = REPOP_CLIENT, .ttl_ms = 1000, .recompute_ms = 20, .repop_delay_ms = 10,
                .window_ms = 50, .sample_ms = 10, .value_size = 100, .warmup = 1};
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'h': o->host = optarg; break;
        case 'p': o->port = (int)parse_num("port", optarg, 1, 65535); break;
        case 'R': o->redis_port = (int)parse_num("redis-port", optarg, 1, 65535); break;
        case 'c': o->clients = (int)parse_num("clients", optarg, 1, 100000); break;
        case 'k': o->key = optarg; break;
        case 'v': o->value_size = (uint32_t)parse_num("value-size", optarg, 0, 1 << 20); break;
        case 't': o->ttl_ms = (uint64_t)parse_num("ttl-ms", optarg, 10, 3600000); break;
        case 'r': o->rounds = (int)parse_num("rounds", optarg, 1, 100000); break;
        case 'm':
            if (!strcmp(optarg, "client")) o->repopulate = REPOP_CLIENT;
            else if (!strcmp(optarg, "tool")) o->repopulate = REPOP_TOOL;
            else die("--repopulate wants client or tool, not '%s'", optarg);
            break;
        case 'C': o->recompute_ms = (uint64_t)parse_num("recompute-ms", optarg, 0, 60000); break;
        case 'D': o->repop_delay_ms = (uint64_t)parse_num("repopulate-delay-ms", optarg, 0, 60000); break;
        case 'T': o->think_us = (uint64_t)parse_num("think-us", optarg, 0, 60e6); break;
        case 'W': o->window_ms = (uint64_t)parse_num("window-ms", optarg, 1, 60000); break;
        case 'S': o->sample_ms = (uint64_t)parse_num("sample-ms", optarg, 1, 10000); break;
        case 'w': o->warmup = parse_num("warmup", optarg, 0, 3600); break;
        case 'M': o->max_seconds = parse_num("max-seconds", optarg, 1, 86400); break;
        case 'H': usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (optind < argc) die("unexpected argument '%s' (try --help)", argv[optind]);
    if (!o->redis_port) o->redis_port = o->port;
    if (o->window_ms * 2 >= o->ttl_ms) die("--window-ms must be under half of --ttl-ms");
    if (!o->max_seconds)
        o->max_seconds = o->warmup + 10 + o->rounds * (o->ttl_ms + o->recompute_ms + o->repop_delay_ms + 500) / 1000.0;
}

/* ---- state ---- */

typedef struct sample {
    uint64_t t_ns;     /* issue time, since the start */
    uint64_t lat_ns;
} sample;

typedef struct cmdpoint {
    uint64_t t_ns;     /* midpoint of the INFO round trip, since the start */
    double gets, sets;
} cmdpoint;

typedef struct expiry {
    uint64_t t_ns;     /* client mode: the first nil reply; tool mode: the predicted expiry */
} expiry;

enum cstate { C_GET, C_RECOMPUTE, C_SET, C_THINK };

typedef struct stamp stamp;

typedef struct sclient {
    stamp *s;
    int fd;
    ev_io rio, wio;
    ev_timer timer;
    enum cstate state;
    char *in;
    size_t inlen, incap;
    char *out;
    size_t outoff, outlen;
    uint64_t sent_ns;
    uint64_t rng;        /* xorshift64 state, for the think time */
} sclient;

struct stamp {
    opts *o;
    struct ev_loop *loop;
    sclient *clients;
    char *get_cmd, *set_cmd, *value;
    size_t get_len, set_len;
    uint64_t t0;
    uint64_t warm_ns;          /* measurement starts here (since t0) */
    redisAsyncContext *ctl;
    ev_timer poll_timer, stop_timer, repop_timer, tick;
    int poll_pending;
    /* results */
    sample *samples;
    size_t nsamples, cap_samples;
    cmdpoint *points;
    size_t npoints, cap_points;
    expiry *ex;
    size_t nex, cap_ex;
    int in_expiry;
    uint64_t *nil_ns;          /* when each nil reply arrived, since t0 */
    size_t nnil, cap_nil;
    uint64_t last_ack_ns;      /* tool mode: when the last SET was acknowledged */
    uint64_t gets_done, values, nils, sets_done, errors;
    int stopping;
};

static void client_send(sclient *c, const char *cmd, size_t len, enum cstate st);

static void client_flush(sclient *c)
{
    if (!write_some(c->fd, c->out, &c->outoff, c->outlen)) {
        ev_io_start(c->s->loop, &c->wio);
        return;
    }
    ev_io_stop(c->s->loop, &c->wio);
}

static void on_write(struct ev_loop *loop, ev_io *w, int revents) { client_flush(w->data); }

static void client_send(sclient *c, const char *cmd, size_t len, enum cstate st)
{
    memcpy(c->out, cmd, len);
    c->outoff = 0;
    c->outlen = len;
    c->state = st;
    c->sent_ns = now_ns();
    client_flush(c);
}

static void send_get(sclient *c) { client_send(c, c->s->get_cmd, c->s->get_len, C_GET); }

static void on_client_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    sclient *c = t->data;
    if (c->s->stopping) return;
    if (c->state == C_RECOMPUTE) client_send(c, c->s->set_cmd, c->s->set_len, C_SET);
    else send_get(c);
}

/*
 * A think time drawn from an exponential law of mean --think-us (capped at
 * 10x): with a fixed pause, clients that started together would stay in step
 * and arrive in bursts of --clients requests, and latency would measure the
 * burst, not the server.
 */
static double think_s(sclient *c)
{
    uint64_t mean = c->s->o->think_us;
    if (!mean) return 0;
    c->rng ^= c->rng << 13;
    c->rng ^= c->rng >> 7;
    c->rng ^= c->rng << 17;
    double u = (double)(c->rng >> 11) * 0x1.0p-53;
    double us = -log1p(-u) * (double)mean;
    return (us > 10.0 * (double)mean ? 10.0 * (double)mean : us) / 1e6;
}

static void after_reply(sclient *c, enum cstate next_wait, double secs)
{
    if (c->s->stopping) return;
    if (secs <= 0) {
        if (next_wait == C_RECOMPUTE) client_send(c, c->s->set_cmd, c->s->set_len, C_SET);
        else send_get(c);
        return;
    }
    c->state = next_wait;
    ev_timer_set(&c->timer, secs, 0);
    ev_timer_start(c->s->loop, &c->timer);
}

static void add_expiry(stamp *s, uint64_t t)
{
    if (s->nex == s->cap_ex) s->ex = xrealloc(s->ex, (s->cap_ex = s->cap_ex * 2 + 16) * sizeof(expiry));
    s->ex[s->nex++] = (expiry){.t_ns = t};
}

static void note_get(stamp *s, uint64_t sent, uint64_t now, int nil)
{
    uint64_t t = now - s->t0;
    s->gets_done++;
    if (nil) {
        s->nils++;
        if (s->nnil == s->cap_nil) s->nil_ns = xrealloc(s->nil_ns, (s->cap_nil = s->cap_nil * 2 + 4096) * sizeof(uint64_t));
        s->nil_ns[s->nnil++] = t;
        uint64_t half = s->o->ttl_ms * 500000ull;
        if (s->o->repopulate == REPOP_CLIENT && !s->in_expiry && (s->nex == 0 || t - s->ex[s->nex - 1].t_ns > half))
            add_expiry(s, t);
        s->in_expiry = 1;
    } else {
        s->values++;
        s->in_expiry = 0;
    }
    if (sent - s->t0 >= s->warm_ns) {
        if (s->nsamples == s->cap_samples)
            s->samples = xrealloc(s->samples, (s->cap_samples = s->cap_samples * 2 + 65536) * sizeof(sample));
        s->samples[s->nsamples++] = (sample){sent - s->t0, now - sent};
    }
}

static void on_read(struct ev_loop *loop, ev_io *w, int revents)
{
    sclient *c = w->data;
    stamp *s = c->s;
    if (!read_some(c->fd, &c->in, &c->inlen, &c->incap, 4096)) return;
    uint64_t now = now_ns();
    char kind = 0;
    int nil = 0;
    long m = resp_scan(c->in, c->inlen, 0, &kind, &nil);
    if (m == 0) return;
    if (m < 0) die("protocol error in a reply from the target");
    if ((size_t)m != c->inlen) die("more than one reply for one request");
    c->inlen = 0;
    if (kind == '-') s->errors++;
    if (c->state == C_GET) {
        note_get(s, c->sent_ns, now, nil);
        if (nil && s->o->repopulate == REPOP_CLIENT) {
            after_reply(c, C_RECOMPUTE, s->o->recompute_ms / 1e3);
        } else {
            after_reply(c, C_THINK, think_s(c));
        }
    } else if (c->state == C_SET) {
        s->sets_done++;
        after_reply(c, C_THINK, think_s(c));
    } else {
        die("a reply nobody asked for");
    }
}

/* ---- control connection: initial SET, tool-mode re-SETs, INFO polling ---- */

static void ctl_set(stamp *s);

/* Tool mode: the key expired --repopulate-delay-ms ago (its SET was acknowledged TTL + delay ago). */
static void on_repop_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    stamp *s = t->data;
    add_expiry(s, s->last_ack_ns - s->t0 + s->o->ttl_ms * 1000000ull);
    ctl_set(s);
}

static void on_ctl_set(redisAsyncContext *ac, void *r, void *priv)
{
    stamp *s = ac->data;
    redisReply *rep = r;
    if (!rep || rep->type == REDIS_REPLY_ERROR) die("control SET failed: %s", rep ? rep->str : ac->errstr);
    s->last_ack_ns = now_ns();
    if (s->o->repopulate == REPOP_TOOL && !s->stopping) {
        ev_timer_set(&s->repop_timer, (s->o->ttl_ms + s->o->repop_delay_ms) / 1e3, 0);
        ev_timer_start(s->loop, &s->repop_timer);
    }
}

static void ctl_set(stamp *s)
{
    if (redisAsyncCommand(s->ctl, on_ctl_set, NULL, "SET %s %b PX %llu", s->o->key, s->value,
                          (size_t)s->o->value_size, (unsigned long long)s->o->ttl_ms) != REDIS_OK)
        die("control SET: %s", s->ctl->errstr);
}

static double info_num(const char *text, const char *field)
{
    const char *p = strstr(text, field);
    return p ? strtod(p + strlen(field), NULL) : 0;
}

static void on_info(redisAsyncContext *ac, void *r, void *priv)
{
    stamp *s = ac->data;
    redisReply *rep = r;
    uint64_t sent = (uint64_t)(uintptr_t)priv, now = now_ns() - s->t0;
    s->poll_pending = 0;
    if (!rep || rep->type != REDIS_REPLY_STRING) die("INFO commandstats failed");
    if (s->npoints == s->cap_points)
        s->points = xrealloc(s->points, (s->cap_points = s->cap_points * 2 + 1024) * sizeof(cmdpoint));
    s->points[s->npoints++] = (cmdpoint){(sent + now) / 2, info_num(rep->str, "cmdstat_get:calls="),
                                         info_num(rep->str, "cmdstat_set:calls=")};
}

static void on_poll(struct ev_loop *loop, ev_timer *t, int revents)
{
    stamp *s = t->data;
    if (s->poll_pending) return;
    s->poll_pending = 1;
    uint64_t sent = now_ns() - s->t0;
    if (redisAsyncCommand(s->ctl, on_info, (void *)(uintptr_t)sent, "INFO commandstats") != REDIS_OK)
        die("INFO: %s", s->ctl->errstr);
}

static void on_ctl_disconnect(const redisAsyncContext *ac, int status)
{
    stamp *s = ac->data;
    if (!s->stopping) die("control connection to Redis lost: %s", ac->errstr);
}

/* Stop once enough measured expiries have their windows (and a sample past them) behind us. */
static void on_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
    stamp *s = t->data;
    uint64_t now = now_ns() - s->t0, w = s->o->window_ms * 1000000ull;
    int measured = 0;
    for (size_t i = 0; i < s->nex; i++)
        if (s->ex[i].t_ns >= s->warm_ns + w) measured++;
    if (measured >= s->o->rounds && now > s->ex[s->nex - 1].t_ns + w + 3 * s->o->sample_ms * 1000000ull) {
        s->stopping = 1;
        ev_break(loop, EVBREAK_ALL);
    }
}

static void on_stop(struct ev_loop *loop, ev_timer *t, int revents)
{
    stamp *s = t->data;
    fprintf(stderr, "stampede: --max-seconds reached before %d expiries were seen\n", s->o->rounds);
    s->stopping = 1;
    ev_break(loop, EVBREAK_ALL);
}

/* ---- analysis ---- */

static double cum_gets_at(const stamp *s, uint64_t t, int sets)
{
    const cmdpoint *p = s->points;
    size_t n = s->npoints;
    if (!n) return 0;
#define V(i) (sets ? p[i].sets : p[i].gets)
    if (t <= p[0].t_ns) return V(0);
    if (t >= p[n - 1].t_ns) return V(n - 1);
    size_t lo = 0, hi = n - 1; /* p[lo].t <= t < p[hi].t */
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (p[mid].t_ns <= t) lo = mid;
        else hi = mid;
    }
    double f = (double)(t - p[lo].t_ns) / (double)(p[hi].t_ns - p[lo].t_ns);
    return V(lo) + f * (V(hi) - V(lo));
#undef V
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Exact quantile of n latencies (sorted in place); 0 if none. */
static double quantile_us(uint64_t *v, size_t n, double q)
{
    if (!n) return 0;
    size_t k = (size_t)ceil(q * (double)n);
    if (k < 1) k = 1;
    return v[k - 1] / 1e3;
}

/* hotproxy's L1 counters from the target, blocking; all -1 if it is not hotproxy. */
static void l1_counters(const opts *o, long long v[5])
{
    static const char *names[5] = {"hotproxy_l1_hits:", "hotproxy_l1_misses:", "hotproxy_l1_coalesced:",
                                   "hotproxy_l1_fills:", "hotproxy_l1_refreshes:"};
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout(o->host, o->port, tv);
    if (!c || c->err) die("INFO connection: %s", c ? c->errstr : "out of memory");
    redisReply *r = redisCommand(c, "INFO hotproxy_cache");
    for (int i = 0; i < 5; i++) {
        const char *p = r && r->type == REDIS_REPLY_STRING ? strstr(r->str, names[i]) : NULL;
        v[i] = p ? strtoll(p + strlen(names[i]), NULL, 10) : -1;
    }
    if (r) freeReplyObject(r);
    redisFree(c);
}

int main(int argc, char **argv)
{
    static opts o;
    parse_opts(&o, argc, argv);
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    raise_fd_limit(o.clients + 64);

    static stamp s;
    s.o = &o;
    s.loop = ev_default_loop(EVFLAG_AUTO);
    size_t klen = strlen(o.key);
    s.get_cmd = xrealloc(NULL, klen + 64);
    s.get_len = (size_t)sprintf(s.get_cmd, "*2\r\n$3\r\nGET\r\n$%zu\r\n%s\r\n", klen, o.key);
    s.value = xrealloc(NULL, o.value_size);
    for (uint32_t i = 0; i < o.value_size; i++) s.value[i] = (char)('a' + i % 26);
    char ttl[24];
    int tl = snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)o.ttl_ms);
    s.set_cmd = xrealloc(NULL, klen + (size_t)o.value_size + 128);
    int h = sprintf(s.set_cmd, "*5\r\n$3\r\nSET\r\n$%zu\r\n%s\r\n$%u\r\n", klen, o.key, o.value_size);
    memcpy(s.set_cmd + h, s.value, o.value_size);
    h += (int)o.value_size;
    h += sprintf(s.set_cmd + h, "\r\n$2\r\nPX\r\n$%d\r\n%s\r\n", tl, ttl);
    s.set_len = (size_t)h;

    long long l1_0[5], l1_1[5];
    l1_counters(&o, l1_0);
    int is_hotproxy = l1_0[0] >= 0;

    s.ctl = redisAsyncConnect(o.host, o.redis_port);
    if (!s.ctl || s.ctl->err) die("control connection: %s", s.ctl ? s.ctl->errstr : "out of memory");
    s.ctl->data = &s;
    redisLibevAttach(s.loop, s.ctl);
    redisAsyncSetDisconnectCallback(s.ctl, on_ctl_disconnect);
    ev_timer_init(&s.repop_timer, on_repop_timer, 1, 0);
    s.repop_timer.data = &s;

    s.clients = calloc((size_t)o.clients, sizeof(sclient));
    if (!s.clients) die("out of memory");
    for (int i = 0; i < o.clients; i++) {
        sclient *c = &s.clients[i];
        c->s = &s;
        c->fd = tcp_connect(o.host, o.port);
        fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
        c->incap = 4096 + o.value_size;
        c->in = xrealloc(NULL, c->incap);
        c->out = xrealloc(NULL, s.set_len + s.get_len);
        ev_io_init(&c->rio, on_read, c->fd, EV_READ);
        ev_io_init(&c->wio, on_write, c->fd, EV_WRITE);
        ev_timer_init(&c->timer, on_client_timer, 1, 0);
        c->rng = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1);
        c->rio.data = c->wio.data = c->timer.data = c;
        ev_io_start(s.loop, &c->rio);
    }

    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    s.t0 = now_ns();
    s.warm_ns = (uint64_t)(o.warmup * 1e9);
    ctl_set(&s);
    /* The clients start once the key is there: poll until the first SET is acknowledged. */
    while (!s.last_ack_ns) ev_run(s.loop, EVRUN_ONCE);
    ev_timer_init(&s.poll_timer, on_poll, 0, o.sample_ms / 1e3);
    ev_timer_init(&s.tick, on_tick, 0.01, 0.01);
    ev_timer_init(&s.stop_timer, on_stop, o.max_seconds, 0);
    s.poll_timer.data = s.tick.data = s.stop_timer.data = &s;
    ev_timer_start(s.loop, &s.poll_timer);
    ev_timer_start(s.loop, &s.tick);
    ev_timer_start(s.loop, &s.stop_timer);
    for (int i = 0; i < o.clients; i++) { /* with a think time, start them spread over one */
        sclient *c = &s.clients[i];
        double first = think_s(c);
        if (first <= 0) {
            send_get(c);
        } else {
            c->state = C_THINK;
            ev_timer_set(&c->timer, first, 0);
            ev_timer_start(s.loop, &c->timer);
        }
    }
    ev_run(s.loop, 0);
    uint64_t end_ns = now_ns() - s.t0;
    getrusage(RUSAGE_SELF, &ru1);
    l1_counters(&o, l1_1);

    /* ---- report ---- */
    uint64_t w = o.window_ms * 1000000ull;
    size_t first = 0;
    while (first < s.nex && s.ex[first].t_ns < s.warm_ns + w) first++; /* windows wholly measured only */
    size_t nexp = s.nex - first;
    if (nexp > (size_t)o.rounds) nexp = (size_t)o.rounds;
    const expiry *ex = s.ex + first;
    uint64_t meas_end = nexp ? ex[nexp - 1].t_ns + w : end_ns;

    printf("target: %s:%d (%s)\n", o.host, o.port, is_hotproxy ? "hotproxy" : "redis");
    printf("redis: %s:%d\nclients: %d\nkey: %s\nvalue_size: %u\nttl_ms: %llu\n", o.host, o.redis_port, o.clients,
           o.key, o.value_size, (unsigned long long)o.ttl_ms);
    if (o.repopulate == REPOP_CLIENT)
        printf("repopulate: client (cache-aside: every client that got nil waits %llu ms, then SETs PX %llu "
               "through the target)\n",
               (unsigned long long)o.recompute_ms, (unsigned long long)o.ttl_ms);
    else
        printf("repopulate: tool (the tool SETs PX %llu in Redis %llu ms after each expiry)\n",
               (unsigned long long)o.ttl_ms, (unsigned long long)o.repop_delay_ms);
    printf("think_us: %llu\nwindow_ms: +-%llu\nsample_ms: %llu\n", (unsigned long long)o.think_us,
           (unsigned long long)o.window_ms, (unsigned long long)o.sample_ms);

    /* Sort samples into windows by issue time (samples are in completion order, close to issue order). */
    uint64_t *steady = malloc(s.nsamples * sizeof(uint64_t) + 1), *inwin = malloc(s.nsamples * sizeof(uint64_t) + 1);
    uint64_t *one = malloc(s.nsamples * sizeof(uint64_t) + 1);
    uint64_t *win_gets = calloc(nexp + 1, sizeof(uint64_t));
    if (!steady || !inwin || !one || !win_gets) die("out of memory");
    size_t nsteady = 0, ninwin = 0;
    uint64_t maxlat = 0, measured = 0;
    for (size_t i = 0; i < s.nsamples; i++) {
        const sample *p = &s.samples[i];
        if (p->t_ns < s.warm_ns || p->t_ns >= meas_end) continue;
        measured++;
        if (p->lat_ns > maxlat) maxlat = p->lat_ns;
        int in = 0;
        for (size_t e = 0; e < nexp; e++) /* nexp is small */
            if (p->t_ns + w >= ex[e].t_ns && p->t_ns <= ex[e].t_ns + w) {
                in = 1;
                win_gets[e]++;
                break;
            }
        if (in) inwin[ninwin++] = p->lat_ns;
        else steady[nsteady++] = p->lat_ns;
    }
    double meas_s = (double)(meas_end - s.warm_ns) / 1e9;
    printf("measured_s: %.3f\nclient_gets: %llu\nthroughput_rps: %.0f\n", meas_s, (unsigned long long)measured,
           measured / meas_s);
    printf("errors: %llu\n", (unsigned long long)s.errors);

    double up_total = 0, up_max = 0, up_excess_total = 0, set_total = 0;
    uint64_t nil_sum = 0;
    double steady_up = cum_gets_at(&s, meas_end, 0) - cum_gets_at(&s, s.warm_ns, 0);
    double steady_time = (double)(meas_end - s.warm_ns);
    for (size_t e = 0; e < nexp; e++) {
        double g = cum_gets_at(&s, ex[e].t_ns + w, 0) - cum_gets_at(&s, ex[e].t_ns - w, 0);
        steady_up -= g;
        steady_time -= 2.0 * w;
    }
    double steady_per_window = steady_time > 0 ? steady_up / steady_time * 2.0 * w : 0;
    for (size_t e = 0; e < nexp; e++) {
        double g = cum_gets_at(&s, ex[e].t_ns + w, 0) - cum_gets_at(&s, ex[e].t_ns - w, 0);
        double st = cum_gets_at(&s, ex[e].t_ns + w, 1) - cum_gets_at(&s, ex[e].t_ns - w, 1);
        size_t n1 = 0;
        for (size_t i = 0; i < s.nsamples; i++) {
            const sample *p = &s.samples[i];
            if (p->t_ns + w >= ex[e].t_ns && p->t_ns <= ex[e].t_ns + w) one[n1++] = p->lat_ns;
        }
        qsort(one, n1, sizeof(uint64_t), cmp_u64);
        uint64_t lmax = n1 ? one[n1 - 1] : 0;
        /* nils from the window's start to the next window's start: all this expiry caused */
        uint64_t from = ex[e].t_ns - w, to = e + 1 < nexp ? ex[e + 1].t_ns - w : end_ns, nils = 0;
        for (size_t i = 0; i < s.nnil; i++) nils += s.nil_ns[i] >= from && s.nil_ns[i] < to;
        nil_sum += nils;
        printf("expiry_%zu: t_s=%.3f upstream_gets=%.0f client_gets=%llu nil_replies=%llu", e + 1, ex[e].t_ns / 1e9,
               g, (unsigned long long)win_gets[e], (unsigned long long)nils);
        if (o.repopulate == REPOP_CLIENT) printf(" recomputes=%llu", (unsigned long long)nils);
        printf(" upstream_sets=%.0f p50_us=%.1f p99_us=%.1f max_us=%.1f\n", st, quantile_us(one, n1, 0.5),
               quantile_us(one, n1, 0.99), lmax / 1e3);
        up_total += g;
        up_excess_total += g - steady_per_window;
        set_total += st;
        if (g > up_max) up_max = g;
    }
    printf("expiries: %zu\n", nexp);
    if (nexp < (size_t)o.rounds) printf("warning: only %zu of %d expiries seen\n", nexp, o.rounds);
    if (nexp) {
        printf("upstream_gets_per_expiry_window_avg: %.1f\nupstream_gets_per_expiry_window_max: %.0f\n",
               up_total / nexp, up_max);
        printf("upstream_gets_per_steady_window: %.1f\n", steady_per_window);
        printf("upstream_gets_per_expiry_excess: %.1f\n", up_excess_total / nexp);
        printf("upstream_sets_per_expiry_window_avg: %.1f\n", set_total / nexp);
        printf("nil_replies_per_expiry_avg: %.1f\n", (double)nil_sum / nexp);
        if (o.repopulate == REPOP_CLIENT) printf("recomputes_per_expiry_avg: %.1f\n", (double)nil_sum / nexp);
    }
    qsort(steady, nsteady, sizeof(uint64_t), cmp_u64);
    qsort(inwin, ninwin, sizeof(uint64_t), cmp_u64);
    printf("steady_gets: %zu\nsteady_p50_us: %.1f\nsteady_p99_us: %.1f\nsteady_p999_us: %.1f\nsteady_max_us: %.1f\n",
           nsteady, quantile_us(steady, nsteady, 0.5), quantile_us(steady, nsteady, 0.99),
           quantile_us(steady, nsteady, 0.999), nsteady ? steady[nsteady - 1] / 1e3 : 0);
    printf("expiry_window_gets: %zu\nexpiry_window_p50_us: %.1f\nexpiry_window_p99_us: %.1f\n"
           "expiry_window_p999_us: %.1f\nexpiry_window_max_us: %.1f\n",
           ninwin, quantile_us(inwin, ninwin, 0.5), quantile_us(inwin, ninwin, 0.99),
           quantile_us(inwin, ninwin, 0.999), ninwin ? inwin[ninwin - 1] / 1e3 : 0);
    printf("max_latency_us: %.1f\n", maxlat / 1e3);
    double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec + ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
                 (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec + ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
    printf("client_cpu_share: %.2f (of one core, whole run: above ~0.9 the load generator is the bottleneck)\n",
           cpu / (end_ns / 1e9));
    if (is_hotproxy)
        printf("l1_hits: %lld\nl1_misses: %lld\nl1_coalesced: %lld\nl1_fills: %lld\nl1_refreshes: %lld\n",
               l1_1[0] - l1_0[0], l1_1[1] - l1_0[1], l1_1[2] - l1_0[2], l1_1[3] - l1_0[3], l1_1[4] - l1_0[4]);
    free(steady);
    free(inwin);
    free(one);
    free(win_gets);
    return s.errors || nexp < (size_t)o.rounds ? 1 : 0;
}
