/*
 * px_cluster: the "cluster" topology.  See px_cluster.h.
 *
 * The map is one owner pool per slot.  Pools are added as the map names
 * masters (or a redirect names a node), and removed from the cron once a
 * master has owned no slot for UNOWNED_READS map reads in a row and has
 * nothing in flight (removed from the Cluster, or a master demoted to
 * replica): a master that gets slots back soon (a failover undone, a node
 * being resharded to that ASK names) keeps its pool, and nothing is freed
 * inside a reply callback of the pool's own connection.  What could still
 * name one of its connections (a redirected request's in-flight entry)
 * moves with the request (px_upreq.resend_on).
 */
#include "proxy/px_cluster.h"

#include <hiredis/hiredis.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proxy/px_command.h"
#include "proxy/px_resp.h"

#define REFRESH_EVERY 5.0   /* seconds between background reads of the map */
#define REFRESH_GAP 0.1     /* at most one read of the map per this long */
#define DOWN_GAP 0.25       /* a master down asks for the map at most this often (a promotion is seen within it) */
#define MAX_RESENDS 5       /* a command is sent again at most this many times */
#define RETRY_FIRST 0.05    /* the first pause before a TRYAGAIN is retried, doubled each time */
#define FIRST_MAP_RETRY 0.25 /* with no map yet, asked again this often */
#define UNOWNED_READS 2     /* map reads that name a master with no slot before its pool is removed */
#define UNOWNED_FORCE 6     /* ... and after this many, even with requests in flight (they get an error) */

enum { CAUSE_START, CAUSE_MOVED, CAUSE_PERIODIC, CAUSE_DOWN, NCAUSES };
static const char *const cause_names[NCAUSES] = {"start", "moved", "periodic", "down"};

static const uint16_t crc16tab[256] = {
    0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50a5, 0x60c6, 0x70e7,
    0x8108, 0x9129, 0xa14a, 0xb16b, 0xc18c, 0xd1ad, 0xe1ce, 0xf1ef,
    0x1231, 0x0210, 0x3273, 0x2252, 0x52b5, 0x4294, 0x72f7, 0x62d6,
    0x9339, 0x8318, 0xb37b, 0xa35a, 0xd3bd, 0xc39c, 0xf3ff, 0xe3de,
    0x2462, 0x3443, 0x0420, 0x1401, 0x64e6, 0x74c7, 0x44a4, 0x5485,
    0xa56a, 0xb54b, 0x8528, 0x9509, 0xe5ee, 0xf5cf, 0xc5ac, 0xd58d,
    0x3653, 0x2672, 0x1611, 0x0630, 0x76d7, 0x66f6, 0x5695, 0x46b4,
    0xb75b, 0xa77a, 0x9719, 0x8738, 0xf7df, 0xe7fe, 0xd79d, 0xc7bc,
    0x48c4, 0x58e5, 0x6886, 0x78a7, 0x0840, 0x1861, 0x2802, 0x3823,
    0xc9cc, 0xd9ed, 0xe98e, 0xf9af, 0x8948, 0x9969, 0xa90a, 0xb92b,
    0x5af5, 0x4ad4, 0x7ab7, 0x6a96, 0x1a71, 0x0a50, 0x3a33, 0x2a12,
    0xdbfd, 0xcbdc, 0xfbbf, 0xeb9e, 0x9b79, 0x8b58, 0xbb3b, 0xab1a,
    0x6ca6, 0x7c87, 0x4ce4, 0x5cc5, 0x2c22, 0x3c03, 0x0c60, 0x1c41,
    0xedae, 0xfd8f, 0xcdec, 0xddcd, 0xad2a, 0xbd0b, 0x8d68, 0x9d49,
    0x7e97, 0x6eb6, 0x5ed5, 0x4ef4, 0x3e13, 0x2e32, 0x1e51, 0x0e70,
    0xff9f, 0xefbe, 0xdfdd, 0xcffc, 0xbf1b, 0xaf3a, 0x9f59, 0x8f78,
    0x9188, 0x81a9, 0xb1ca, 0xa1eb, 0xd10c, 0xc12d, 0xf14e, 0xe16f,
    0x1080, 0x00a1, 0x30c2, 0x20e3, 0x5004, 0x4025, 0x7046, 0x6067,
    0x83b9, 0x9398, 0xa3fb, 0xb3da, 0xc33d, 0xd31c, 0xe37f, 0xf35e,
    0x02b1, 0x1290, 0x22f3, 0x32d2, 0x4235, 0x5214, 0x6277, 0x7256,
    0xb5ea, 0xa5cb, 0x95a8, 0x8589, 0xf56e, 0xe54f, 0xd52c, 0xc50d,
    0x34e2, 0x24c3, 0x14a0, 0x0481, 0x7466, 0x6447, 0x5424, 0x4405,
    0xa7db, 0xb7fa, 0x8799, 0x97b8, 0xe75f, 0xf77e, 0xc71d, 0xd73c,
    0x26d3, 0x36f2, 0x0691, 0x16b0, 0x6657, 0x7676, 0x4615, 0x5634,
    0xd94c, 0xc96d, 0xf90e, 0xe92f, 0x99c8, 0x89e9, 0xb98a, 0xa9ab,
    0x5844, 0x4865, 0x7806, 0x6827, 0x18c0, 0x08e1, 0x3882, 0x28a3,
    0xcb7d, 0xdb5c, 0xeb3f, 0xfb1e, 0x8bf9, 0x9bd8, 0xabbb, 0xbb9a,
    0x4a75, 0x5a54, 0x6a37, 0x7a16, 0x0af1, 0x1ad0, 0x2ab3, 0x3a92,
    0xfd2e, 0xed0f, 0xdd6c, 0xcd4d, 0xbdaa, 0xad8b, 0x9de8, 0x8dc9,
    0x7c26, 0x6c07, 0x5c64, 0x4c45, 0x3ca2, 0x2c83, 0x1ce0, 0x0cc1,
    0xef1f, 0xff3e, 0xcf5d, 0xdf7c, 0xaf9b, 0xbfba, 0x8fd9, 0x9ff8,
    0x6e17, 0x7e36, 0x4e55, 0x5e74, 0x2e93, 0x3eb2, 0x0ed1, 0x1ef0,
};

static uint16_t crc16(const char *buf, size_t len)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) crc = (uint16_t)((crc << 8) ^ crc16tab[((crc >> 8) ^ (uint8_t)buf[i]) & 0xff]);
    return crc;
}

unsigned px_cluster_keyslot(const char *key, size_t len)
{
    size_t s, e;
    for (s = 0; s < len && key[s] != '{'; s++) continue;
    if (s < len) {
        for (e = s + 1; e < len && key[e] != '}'; e++) continue;
        if (e < len && e != s + 1) return crc16(key + s + 1, e - s - 1) & (PX_CLUSTER_SLOTS - 1);
    }
    return crc16(key, len) & (PX_CLUSTER_SLOTS - 1);
}

struct cstate;

/* The map request in flight; it may outlive the state (the pools are freed
 * after the topology at exit), which clears st then. */
typedef struct token {
    struct cstate *st;
} token;

/* A command waiting for its retry (TRYAGAIN, CLUSTERDOWN, LOADING), or a
 * read whose master's connection broke, waiting for its slot's new owner
 * (dead: that master's pool; until: then it gets err, the break's error). */
typedef struct retry {
    ev_timer t;
    struct cstate *st;
    px_upreq *q;
    int proto;
    struct retry *prev, *next;
    px_pool *dead;
    double until;
    size_t errlen;
    char err[];
} retry;

/* A data pool that owned no slot at the last map reads, and how many. */
typedef struct unowned {
    px_pool *p;
    int reads;
} unowned;

typedef struct cstate {
    px_router *r;
    px_core *core;
    px_pool *slots[PX_CLUSTER_SLOTS]; /* each slot's master (NULL: not known) */
    px_pool **seeds;                  /* control pools: the configured addresses */
    int nseeds;
    px_upstream *seed_link;           /* a link to seeds[seed_link_i], opened to ask for the map */
    int seed_link_i;
    token *inflight;                  /* the map request in flight, if any */
    int cand;                         /* whom it is asked of: a data pool, then a seed, by index */
    int cand_first;                   /* which data pool is asked first (moves every read) */
    int cause;                        /* why the last read began */
    int again;                        /* another read was wanted meanwhile: its cause + 1 */
    double last_start, next_periodic, last_down;
    double started;                   /* cluster_start: commands wait for a whole map from then */
    int whole;                        /* every slot's master has been known */
    retry *retries;
    int closing;
    char last_fail[600];              /* why the last node asked gave no map */
    int warned;                       /* a read with no map from anyone was logged (until one succeeds) */
    px_stats_cluster st;              /* the counters (INFO fills in the rest) */
    px_buf info_map;
    unowned *unowned;                 /* pools owning no slot, candidates for removal */
    int nunowned;
} cstate;

static void refresh(cstate *st, int cause);

/* How long a command may wait for what it needs from the Cluster (a map,
 * a new master): upstream-timeout, connect-timeout when that is 0. */
static double hold_time(const cstate *st)
{
    const px_config *cfg = st->core->cfg;
    return (double)(cfg->upstream_timeout > 0 ? cfg->upstream_timeout : cfg->connect_timeout) / 1000.0;
}

static px_pool *pool_for(cstate *st, const char *host, size_t hlen, int port)
{
    px_router *r = st->r;
    for (int i = 0; i < r->npools; i++)
        if (r->pools[i]->port == port && strlen(r->pools[i]->host) == hlen && !memcmp(r->pools[i]->host, host, hlen))
            return r->pools[i];
    char h[256];
    snprintf(h, sizeof(h), "%.*s", (int)(hlen < sizeof(h) - 1 ? hlen : sizeof(h) - 1), host);
    px_log_notice(&st->core->log, "Cluster: master %s:%d added", h, port);
    return px_router_add_pool(r, h, port);
}

static void ignore_frame(px_upstream *u, void *ctx, const char *frame, size_t len)
{
    (void)u;
    (void)ctx;
    (void)frame;
    (void)len;
}

static void seed_link_lost(px_upstream *u, void *ctx)
{
    cstate *st = ctx;
    if (!st->closing && st->seed_link == u) st->seed_link = NULL;
}

/* CLUSTER SLOTS' reply into the map: 0, or -1 when it names no slot. */
static int apply_map(cstate *st, const char *reply, size_t len, px_pool *asked)
{
    redisReply *rep = px_reply_decode(reply, len);
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements == 0) {
        if (rep) freeReplyObject(rep);
        return -1;
    }
    int covered = 0;
    px_pool **next = calloc(PX_CLUSTER_SLOTS, sizeof(*next));
    if (!next) abort();
    for (size_t i = 0; i < rep->elements; i++) {
        redisReply *e = rep->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 || e->element[0]->type != REDIS_REPLY_INTEGER ||
            e->element[1]->type != REDIS_REPLY_INTEGER || e->element[2]->type != REDIS_REPLY_ARRAY)
            continue;
        long long from = e->element[0]->integer, to = e->element[1]->integer;
        redisReply *m = e->element[2];
        if (from < 0 || to >= PX_CLUSTER_SLOTS || from > to || m->elements < 2 ||
            m->element[0]->type != REDIS_REPLY_STRING || m->element[1]->type != REDIS_REPLY_INTEGER)
            continue;
        const char *host = m->element[0]->str;
        size_t hlen = m->element[0]->len;
        long long port = m->element[1]->integer;
        /* "?": the node does not know the endpoint; "": the node asked
         * (Redis' cluster-preferred-endpoint-type) */
        if ((hlen == 1 && host[0] == '?') || port <= 0 || port > 65535) continue;
        if (hlen == 0) {
            if (!asked) continue;
            host = asked->host;
            hlen = strlen(host);
        }
        px_pool *p = pool_for(st, host, hlen, (int)port);
        for (long long s = from; s <= to; s++) {
            covered += next[s] == NULL;
            next[s] = p;
        }
    }
    freeReplyObject(rep);
    if (covered == 0) {
        free(next);
        return -1;
    }
    /* a map that is not whole (a node that knows less) updates what it names only */
    px_pool *moved_from = NULL;
    for (int s = 0; s < PX_CLUSTER_SLOTS; s++)
        if (next[s]) {
            if (st->slots[s] && st->slots[s] != next[s]) moved_from = st->slots[s];
            st->slots[s] = next[s];
        }
    if (moved_from) px_router_keys_moved(st->r, moved_from);
    if (covered < PX_CLUSTER_SLOTS)
        px_log_notice(&st->core->log, "Cluster: the map read covers %d of %d slots: the others keep their master",
                      covered, PX_CLUSTER_SLOTS);
    free(next);
    return 0;
}

static int owns_slots(const cstate *st, const px_pool *p);

/* p is in use (it owns slots, or a redirect named it): no candidate. */
static void unowned_clear(cstate *st, const px_pool *p)
{
    for (int i = 0; i < st->nunowned; i++)
        if (st->unowned[i].p == p) {
            st->unowned[i] = st->unowned[--st->nunowned];
            return;
        }
}

/* After a map read: each data pool owning no slot counts one more. */
static void unowned_count(cstate *st)
{
    px_router *r = st->r;
    for (int i = 0; i < r->npools; i++) {
        px_pool *p = r->pools[i];
        if (owns_slots(st, p)) {
            unowned_clear(st, p);
            continue;
        }
        int j = 0;
        while (j < st->nunowned && st->unowned[j].p != p) j++;
        if (j == st->nunowned) {
            st->unowned = realloc(st->unowned, sizeof(*st->unowned) * (size_t)(st->nunowned + 1));
            if (!st->unowned) abort();
            st->unowned[st->nunowned++] = (unowned){p, 0};
        }
        st->unowned[j].reads++;
    }
}

static void ask_next(cstate *st);

static void slots_done(px_upstream *u, void *ctx, const char *reply, size_t len)
{
    token *t = ctx;
    cstate *st = t->st;
    free(t);
    if (!st) return;
    st->inflight = NULL;
    px_pool *asked = u ? u->pool : NULL;
    if (len && reply[0] != '-' && apply_map(st, reply, len, asked) == 0) {
        st->st.cluster_refreshes++;
        if (!st->whole) {
            int s = 0;
            while (s < PX_CLUSTER_SLOTS && st->slots[s]) s++;
            st->whole = s == PX_CLUSTER_SLOTS;
        }
        unowned_count(st);
        if (st->warned) px_log_notice(&st->core->log, "Cluster: slot map read from %s", asked ? asked->name : "?");
        st->warned = 0;
        return;
    }
    st->st.cluster_refresh_failures++;
    size_t n = len;
    while (n && (reply[n - 1] == '\r' || reply[n - 1] == '\n')) n--;
    snprintf(st->last_fail, sizeof(st->last_fail), "%s: %.*s", asked ? asked->name : "?", (int)(n > 200 ? 200 : n),
             reply);
    px_log_verbose(&st->core->log, "Cluster: no slot map from %s: %.*s", asked ? asked->name : "?",
                   (int)(len > 200 ? 200 : len), reply);
    st->cand++;
    ask_next(st);
}

/* Ask the next candidate: the masters known (in turn, from a moving first),
 * then the seeds.  With none left the map is kept until the next read. */
static void ask_next(cstate *st)
{
    static const char cmd[] = "*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n";
    px_router *r = st->r;
    int n = r->npools + st->nseeds;
    for (; st->cand < n; st->cand++) {
        px_upstream *u = NULL;
        if (st->cand < r->npools) {
            u = px_pool_pick(r->pools[(st->cand + st->cand_first) % r->npools], 0, 2, NULL);
        } else {
            int i = st->cand - r->npools;
            if (st->seed_link && st->seed_link_i != i) {
                px_upstream *old = st->seed_link;
                st->seed_link = NULL;
                px_pool_close(old->pool, old, "asking another seed");
            }
            if (!st->seed_link) {
                st->seed_link = px_pool_open_link(st->seeds[i], ignore_frame, seed_link_lost, st);
                st->seed_link_i = i;
            }
            u = st->seed_link;
        }
        if (!u || u->state == PX_UP_DOWN) continue;
        token *t = calloc(1, sizeof(*t));
        if (!t) abort();
        t->st = st;
        st->inflight = t;
        px_upstream_send_internal(u, cmd, sizeof(cmd) - 1, slots_done, t);
        return;
    }
    /* nobody gave a map this time: said once, until one does */
    if (!st->warned) {
        st->warned = 1;
        px_log_warning(&st->core->log, "Cluster: no node gave a slot map (last: %s); asking again in %.0f s",
                       st->last_fail[0] ? st->last_fail : "none reachable", REFRESH_EVERY);
    }
}

/* Read the map again: now, or (held in again) once the read in flight is
 * done and REFRESH_GAP has passed since it began; the cron starts it. */
static void refresh(cstate *st, int cause)
{
    double now = px_now(st->core);
    if (st->inflight || now - st->last_start < REFRESH_GAP) {
        if (!st->again) st->again = cause + 1;
        return;
    }
    st->last_start = now;
    st->next_periodic = now + REFRESH_EVERY;
    st->cause = cause;
    uint64_t *count[NCAUSES] = {&st->st.cluster_refresh_start, &st->st.cluster_refresh_moved,
                                &st->st.cluster_refresh_periodic, &st->st.cluster_refresh_down};
    (*count[cause])++;
    st->cand = 0;
    st->cand_first++;
    ask_next(st);
}

/* --- routing ---------------------------------------------------------------- */

static px_pool *first_master(px_router *r)
{
    cstate *st = r->topo_state;
    return st->slots[0] ? st->slots[0] : r->npools ? r->pools[0] : NULL;
}

static int cluster_shard(px_router *r, const char *key, size_t len)
{
    (void)r;
    return (int)px_cluster_keyslot(key, len);
}

static px_pool *cluster_shard_pool(px_router *r, int shard)
{
    cstate *st = r->topo_state;
    return shard >= 0 && shard < PX_CLUSTER_SLOTS ? st->slots[shard] : NULL;
}

/* The one slot of a command's keys: -1 with no key, -2 across slots. */
static int command_slot(const px_command *cmd, int argc, const char *const *argv, const size_t *argvlen)
{
    int small[64];
    int *pos = argc <= 64 ? small : malloc(sizeof(int) * (size_t)argc);
    if (!pos) abort();
    int n = px_command_keys(cmd, argc, argv, argvlen, pos, argc <= 64 ? 64 : argc);
    int slot = -1;
    for (int i = 0; i < n; i++) {
        int s = (int)px_cluster_keyslot(argv[pos[i]], argvlen[pos[i]]);
        if (slot >= 0 && s != slot) {
            slot = -2;
            break;
        }
        slot = s;
    }
    if (pos != small) free(pos);
    return slot;
}

static px_pool *cluster_route(px_router *r, const px_route_args *a)
{
    cstate *st = r->topo_state;
    int slot = a->cmd ? command_slot(a->cmd, a->argc, a->argv, a->argvlen) : -1;
    if (slot == -2) {
        st->st.cluster_crossslot++;
        if (a->why) *a->why = "CROSSSLOT Keys in request don't hash to the same slot";
        return NULL;
    }
    if (slot < 0 && a->cmd && (a->cmd->flags & PX_F_ANY_SHARD)) {
        /* any master: the owner of a random slot (xorshift on the core's state) */
        uint64_t *x = &st->core->rng;
        *x ^= *x >> 12;
        *x ^= *x << 25;
        *x ^= *x >> 27;
        slot = (int)((*x * 0x2545F4914F6CDD1DULL) >> 50) & (PX_CLUSTER_SLOTS - 1);
    }
    px_pool *p = slot >= 0 ? st->slots[slot] : first_master(r);
    if (!p && a->why) *a->why = "CLUSTERDOWN hotproxy: the slot map is not known yet (see hotproxy's log)";
    return p;
}

/* --- redirections ----------------------------------------------------------- */

static void ignore_reply(px_upstream *u, void *ctx, const char *reply, size_t len)
{
    (void)u;
    (void)ctx;
    (void)reply;
    (void)len;
}

/* Send q again on pool p (ASKING right before it when asking); when p
 * cannot take it, q is answered with the pool's error. */
static void resend(px_pool *p, px_upreq *q, int proto, int asking)
{
    if (q->resend) { /* it goes on a connection of its requester's own */
        q->resend(q, p, asking);
        return;
    }
    /* its owner picks the connection and moves its in-flight entry there */
    px_upstream *u = !p ? NULL : q->resend_on ? q->resend_on(q, p, proto) : px_pool_pick(p, 0, proto, NULL);
    if (!u) {
        char err[512];
        /* no master for the slot: Redis Cluster's own words for it */
        int n = p ? snprintf(err, sizeof(err), "-ERR %s\r\n", px_pool_unavailable(p))
                  : snprintf(err, sizeof(err), "-CLUSTERDOWN Hash slot not served\r\n");
        if (n >= (int)sizeof(err)) n = (int)sizeof(err) - 1;
        q->done(q, NULL, err, (size_t)n, 1);
        return;
    }
    if (asking) px_upstream_send_internal(u, "*1\r\n$6\r\nASKING\r\n", 16, ignore_reply, NULL);
    px_upstream_send(u, q, q->raw, q->rawlen);
}

/* The master of the slot of a command's bytes now (after a refresh, a retry
 * goes where the slot went), or NULL; *cmdp (when not NULL): the command's
 * table entry (NULL: unknown). */
static px_pool *owner_of_raw(cstate *st, const char *raw, size_t len, const px_command **cmdp)
{
    if (cmdp) *cmdp = NULL;
    px_req_parser p;
    px_pool *pool = NULL;
    px_req_parser_init(&p, (long long)len);
    if (px_req_parse(&p, raw, len) == PX_OK && p.argc > 0) {
        const char **argv = calloc((size_t)p.argc, sizeof(*argv));
        size_t *argvlen = calloc((size_t)p.argc, sizeof(*argvlen));
        if (!argv || !argvlen) abort();
        for (int i = 0; i < p.argc; i++) argv[i] = px_req_arg(&p, raw, i, &argvlen[i]);
        const px_command *cmd =
            px_command_lookup(argv[0], argvlen[0], p.argc > 1 ? argv[1] : NULL, p.argc > 1 ? argvlen[1] : 0);
        int slot = cmd ? command_slot(cmd, p.argc, argv, argvlen) : -1;
        pool = slot >= 0 ? st->slots[slot] : first_master(st->r);
        if (cmdp) *cmdp = cmd;
        free(argv);
        free(argvlen);
    }
    px_req_parser_free(&p);
    return pool;
}

static void retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    retry *t = w->data;
    cstate *st = t->st;
    (void)revents;
    px_upreq *q = t->q;
    px_pool *owner = owner_of_raw(st, q->raw, q->rawlen, NULL);
    int give_up = 0;
    if (t->dead && owner == t->dead) {
        /* the map still names the master that broke: wait for its new
         * owner (or its own connections back), within the deadline */
        px_upstream *u = px_pool_pick(owner, 0, t->proto, NULL);
        if (!u || u->state != PX_UP_READY) {
            if (px_now(st->core) < t->until) {
                ev_timer_set(&t->t, DOWN_GAP, 0);
                ev_timer_start(loop, &t->t);
                return;
            }
            give_up = 1;
        }
    }
    if (t->prev) t->prev->next = t->next;
    else st->retries = t->next;
    if (t->next) t->next->prev = t->prev;
    int proto = t->proto;
    if (give_up) q->done(q, NULL, t->err, t->errlen, 1);
    else resend(owner, q, proto, 0);
    free(t);
}

/* Park q in the retry list: sent again after wait seconds (dead: the
 * master's pool whose connection broke under it, see retry_cb). */
static void park(cstate *st, px_upreq *q, int proto, double wait, px_pool *dead, const char *err, size_t errlen)
{
    retry *t = calloc(1, sizeof(*t) + errlen + 1);
    if (!t) abort();
    t->st = st;
    t->q = q;
    t->proto = proto;
    t->dead = dead;
    if (dead) {
        t->until = px_now(st->core) + hold_time(st);
        memcpy(t->err, err, errlen);
        t->errlen = errlen;
    }
    t->next = st->retries;
    if (st->retries) st->retries->prev = t;
    st->retries = t;
    ev_timer_init(&t->t, retry_cb, wait, 0);
    t->t.data = t;
    ev_timer_start(st->core->loop, &t->t);
    /* on no connection until the retry (u's pool may go meanwhile) */
    if (q->park) q->park(q);
    else if (q->resend_on) q->resend_on(q, NULL, 0);
}

/* "-MOVED 3999 127.0.0.1:6381" after skip bytes: the slot and the address
 * (an empty host: the node's own); 0, or -1. */
static int parse_redirect(const char *reply, size_t len, size_t skip, int *slot, const char **host, size_t *hlen,
                          int *port)
{
    const char *p = reply + skip, *end = reply + len;
    while (end > p && (end[-1] == '\r' || end[-1] == '\n')) end--;
    const char *sp = memchr(p, ' ', (size_t)(end - p));
    if (!sp) return -1;
    long long v;
    if (!px_string2ll(p, (size_t)(sp - p), &v) || v < 0 || v >= PX_CLUSTER_SLOTS) return -1;
    *slot = (int)v;
    const char *addr = sp + 1;
    const char *colon = NULL;
    for (const char *c = addr; c < end; c++)
        if (*c == ':') colon = c; /* the last one: an IPv6 address holds others */
    if (!colon || !px_string2ll(colon + 1, (size_t)(end - colon - 1), &v) || v <= 0 || v > 65535) return -1;
    *host = addr;
    *hlen = (size_t)(colon - addr);
    *port = (int)v;
    return 0;
}

static int starts(const char *reply, size_t len, const char *what)
{
    size_t n = strlen(what);
    return len > n && !memcmp(reply, what, n);
}

/* The pool a MOVED or ASK names (NULL: unreadable); a MOVED updates the
 * slot at once and reads the whole map again. */
static px_pool *follow(cstate *st, px_upstream *u, const char *reply, size_t len, int moved)
{
    int slot, port;
    const char *host;
    size_t hlen;
    if (parse_redirect(reply, len, moved ? 7 : 5, &slot, &host, &hlen, &port) != 0) return NULL;
    if (hlen == 0) {
        host = u->pool->host;
        hlen = strlen(host);
    }
    px_pool *p = pool_for(st, host, hlen, port);
    unowned_clear(st, p); /* a node being resharded to owns nothing yet, but ASK sends there */
    if (moved) {
        st->st.cluster_moved++;
        px_pool *was = st->slots[slot];
        st->slots[slot] = p;
        if (was && was != p) px_router_keys_moved(st->r, was);
        refresh(st, CAUSE_MOVED);
    } else {
        st->st.cluster_ask++;
    }
    return p;
}

static int cluster_reply(px_router *r, px_upreq *q, px_upstream *u, const char *reply, size_t len)
{
    cstate *st = r->topo_state;
    /* on a connection of the client's own (MULTI, WATCH) Redis' error goes
     * through, unless the request can move (a blocking command: q->resend) */
    if (len < 4 || reply[0] != '-' || !q->raw || !u || (!u->lane && !q->resend)) return 0;
    int moved = starts(reply, len, "-MOVED "), ask = starts(reply, len, "-ASK ");
    int again = starts(reply, len, "-TRYAGAIN") || starts(reply, len, "-CLUSTERDOWN") || starts(reply, len, "-LOADING");
    /* a master turned replica (a failover) unblocks its blocked clients so */
    int demoted = q->resend && starts(reply, len, "-UNBLOCKED force unblock from blocking operation, instance state");
    again |= demoted;
    if (!moved && !ask && !again) return 0;
    if (q->redirects >= MAX_RESENDS) {
        st->st.cluster_redirect_errors++;
        return 0;
    }
    if (again) {
        q->redirects++;
        st->st.cluster_tryagain++;
        if (starts(reply, len, "-CLUSTERDOWN") || demoted) refresh(st, CAUSE_DOWN);
        park(st, q, u->proto, RETRY_FIRST * (double)(1 << (q->redirects - 1)), NULL, NULL, 0);
        return 1;
    }
    px_pool *p = follow(st, u, reply, len, moved);
    if (!p) return 0;
    q->redirects++;
    resend(p, q, u->proto, ask);
    return 1;
}

/* A forwarded request whose shared connection broke (the master may be
 * dead): a read is sent again to its slot's owner once the map names
 * another, or the master's connections are back, within upstream-timeout;
 * a write keeps the error (it may have run). */
static int cluster_failed(px_router *r, px_upreq *q, px_upstream *u, const char *reply, size_t len)
{
    cstate *st = r->topo_state;
    if (!st || st->closing || !q->raw || !u || !u->lane || !u->broke || q->redirects >= MAX_RESENDS) return 0;
    const px_command *cmd;
    owner_of_raw(st, q->raw, q->rawlen, &cmd);
    if (!cmd || px_command_writes(cmd) || (cmd->flags & PX_F_BL)) return 0;
    q->redirects++;
    st->st.cluster_read_retries++;
    refresh(st, CAUSE_DOWN);
    park(st, q, u->proto, DOWN_GAP, u->pool, reply, len);
    return 1;
}

/* A client's own connection: the client side sends the command on. */
static px_pool *cluster_redirected(px_router *r, px_upstream *u, const char *reply, size_t len, int *asking)
{
    int moved = starts(reply, len, "-MOVED "), ask = starts(reply, len, "-ASK ");
    *asking = ask;
    return moved || ask ? follow(r->topo_state, u, reply, len, moved) : NULL;
}

/* --- the rest of the topology ---------------------------------------------- */

static void cluster_shard_stale(px_router *r, int shard)
{
    (void)shard;
    refresh(r->topo_state, CAUSE_MOVED);
}

static void cluster_start(px_router *r)
{
    cstate *st = r->topo_state;
    st->started = px_now(st->core);
    refresh(st, CAUSE_START);
}

/* Commands wait for the first whole map (its read takes a few ms, longer
 * when no seed is up yet, and a node that just joined knows part of it)
 * rather than get CLUSTERDOWN, for hold_time after the start; after that
 * a slot not known gets it. */
static int cluster_waiting(px_router *r)
{
    cstate *st = r->topo_state;
    return !st->whole && px_now(st->core) - st->started < hold_time(st);
}

static int owns_slots(const cstate *st, const px_pool *p)
{
    for (int s = 0; s < PX_CLUSTER_SLOTS; s++)
        if (st->slots[s] == p) return 1;
    return 0;
}

/* A pool whose master has owned no slot for UNOWNED_READS map reads goes,
 * from the cron (never inside a reply callback of its own connection), once
 * nothing is in flight on it, or after UNOWNED_FORCE reads whatever is (its
 * requests then get an error naming the removal).  One per tick: the
 * removal answers requests, whose callbacks may start a map read. */
static void remove_unowned(cstate *st)
{
    if (st->inflight) return; /* the map request may be on one of its connections */
    for (int i = 0; i < st->nunowned; i++) {
        unowned w = st->unowned[i];
        if (w.reads < UNOWNED_READS) continue;
        if (owns_slots(st, w.p)) { /* a MOVED gave it a slot since */
            unowned_clear(st, w.p);
            return;
        }
        px_stats_pool v;
        px_pool_stats(w.p, &v);
        free(v.lane.v);
        if (v.upstream_inflight && w.reads < UNOWNED_FORCE) continue;
        unowned_clear(st, w.p);
        for (retry *t = st->retries; t; t = t->next)
            if (t->dead == w.p) t->dead = NULL; /* they go to their slot's owner, whoever it is */
        px_log_notice(&st->core->log, "Cluster: master %s owns no slot (%d map reads): its pool is removed", w.p->name,
                      w.reads);
        px_router_remove_pool(st->r, w.p, "the node owns no slot in the Cluster's map any more");
        return;
    }
}

static void cluster_cron(px_router *r, double now)
{
    cstate *st = r->topo_state;
    if (st->again && !st->inflight && now - st->last_start >= REFRESH_GAP) {
        int cause = st->again - 1;
        st->again = 0;
        refresh(st, cause);
    }
    if (now >= st->next_periodic || (cluster_waiting(r) && !st->inflight && now - st->last_start >= FIRST_MAP_RETRY))
        refresh(st, CAUSE_PERIODIC);
    /* a master whose connections are all down: a failover may be on */
    if (now - st->last_down >= DOWN_GAP) {
        for (int i = 0; i < r->npools; i++) {
            if (!owns_slots(st, r->pools[i]) || px_pool_pick(r->pools[i], 0, 2, NULL)) continue;
            st->last_down = now;
            refresh(st, CAUSE_DOWN);
            break;
        }
    }
    remove_unowned(st);
}

static void cluster_info(px_router *r, px_buf *out)
{
    cstate *st = r->topo_state;
    px_stats_cluster v = st->st;
    px_buf_clear(&st->info_map, 4096);
    int nodes = 0;
    long known = 0;
    for (int i = 0; i < r->npools; i++) {
        long n = 0;
        for (int s = 0; s < PX_CLUSTER_SLOTS; s++) n += st->slots[s] == r->pools[i];
        if (!n) continue;
        px_buf_appendf(&st->info_map, "%s%s=%ld", nodes ? "," : "", r->pools[i]->name, n);
        nodes++;
        known += n;
    }
    px_buf_append(&st->info_map, "", 1);
    v.cluster_nodes = nodes;
    v.cluster_slots_known = known;
    v.cluster_slot_map = st->info_map.data;
    v.cluster_last_refresh_cause = cause_names[st->cause];
    px_stats_render_group(PX_STATS_G_CLUSTER, &v, out);
}

static void cluster_destroy(px_router *r)
{
    cstate *st = r->topo_state;
    if (!st) return;
    st->closing = 1;
    if (st->inflight) st->inflight->st = NULL; /* its callback frees it, with the pools */
    while (st->retries) {
        retry *t = st->retries;
        st->retries = t->next;
        ev_timer_stop(st->core->loop, &t->t);
        static const char err[] = "-ERR hotproxy is shutting down\r\n";
        t->q->done(t->q, NULL, err, sizeof(err) - 1, 1);
        free(t);
    }
    if (st->seed_link) px_pool_close(st->seed_link->pool, st->seed_link, "shutting down");
    free(st->seeds);
    px_buf_free(&st->info_map);
    free(st->unowned);
    free(st);
    r->topo_state = NULL;
}

void px_cluster_count_split(px_router *r)
{
    if (r->topo == &px_cluster_topology && r->topo_state) ((cstate *)r->topo_state)->st.cluster_split++;
}

static int cluster_setup(px_router *r, char *err, size_t errlen);

const px_topology px_cluster_topology = {
    .name = "cluster",
    .setup = cluster_setup,
    .resends = PX_RESENDS_ALL,
    .start = cluster_start,
    .route = cluster_route,
    .reply = cluster_reply,
    .failed = cluster_failed,
    .cron = cluster_cron,
    .info = cluster_info,
    .destroy = cluster_destroy,
    .shard = cluster_shard,
    .nshards = PX_CLUSTER_SLOTS,
    .shard_pool = cluster_shard_pool,
    .waiting = cluster_waiting,
    .shard_stale = cluster_shard_stale,
    .redirected = cluster_redirected,
};

static int cluster_setup(px_router *r, char *err, size_t errlen)
{
    const px_config *cfg = r->core->cfg;
    if (cfg->nupstreams < 1) {
        snprintf(err, errlen, "topology cluster needs at least one seed node in upstream");
        return -1;
    }
    cstate *st = calloc(1, sizeof(*st));
    if (!st) abort();
    st->r = r;
    st->core = r->core;
    st->seeds = calloc((size_t)cfg->nupstreams, sizeof(*st->seeds));
    if (!st->seeds) abort();
    for (int i = 0; i < cfg->nupstreams; i++)
        st->seeds[st->nseeds++] = px_router_add_control_pool(r, cfg->upstreams[i].host, cfg->upstreams[i].port);
    st->last_start = -1e9;
    st->last_down = -1e9;
    r->topo_state = st;
    return 0;
}
