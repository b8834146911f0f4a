/*
 * px_split: a command split across servers and its replies merged.  See
 * px_split.h.
 */
#include "proxy/px_split.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/px_client.h"
#include "proxy/px_cluster.h"
#include "proxy/px_command.h"
#include "proxy/px_l1.h"
#include "proxy/px_resp.h"
#include "proxy/px_router.h"
#include "proxy/px_upstream.h"

struct px_split_plan;

/* One command of the split, to one server. */
typedef struct part {
    px_upreq up;             /* its entry in the connection's queue (up.raw: its bytes) */
    struct px_split_plan *sp;
    int shard;               /* the keys' shard (-1: the part of a server, no keys) */
    px_pool *pool;
    struct px_upstream *u;   /* where it is held in the client's in-flight count */
    int first, nkeys;        /* its keys: order[first .. first + nkeys) */
    char *reply;
    size_t len;
} part;

struct px_split_plan {
    px_router *router;
    px_req *r;
    const px_command *cmd;
    int nparts, left;
    part *parts;
    int nkeys;
    int *order;
    int scan_node, scan_nodes;  /* SCAN: the server it asks (its index among them), and how many */
    px_buf hits;                /* MGET: the L1's replies for the keys it holds, one after the other */
    size_t *hit_off, *hit_len;  /* per key: where in hits (hit_len 0: not held) */              /* the client's key index of each part's keys, part after part */
    char err[320];
};

void px_split_plan_free(px_split_plan *p)
{
    if (!p) return;
    for (int i = 0; i < p->nparts; i++) {
        free(p->parts[i].up.raw);
        free(p->parts[i].reply);
    }
    free(p->parts);
    free(p->order);
    px_buf_free(&p->hits);
    free(p->hit_off);
    free(p->hit_len);
    free(p);
}

static part *part_for(px_split_plan *p, int shard, px_pool *pool)
{
    for (int i = p->nparts - 1; i >= 0; i--)
        if (shard >= 0 ? p->parts[i].shard == shard : p->parts[i].pool == pool) return &p->parts[i];
    p->parts = realloc(p->parts, sizeof(*p->parts) * (size_t)(p->nparts + 1));
    if (!p->parts) abort();
    part *pt = &p->parts[p->nparts++];
    memset(pt, 0, sizeof(*pt));
    pt->shard = shard;
    pt->pool = pool;
    return pt;
}

/* An array reply's element count and where its elements begin; -1 if it is not one. */
static long long array_head(const char *reply, size_t len, const char **body)
{
    long long n;
    const char *nl = memchr(reply, '\n', len);
    if (!len || reply[0] != '*' || !nl || nl - reply < 3 || !px_string2ll(reply + 1, (size_t)(nl - reply - 2), &n))
        return -1;
    *body = nl + 1;
    return n;
}

/*
 * SCAN over every master: hotproxy's cursor is the server's cursor times
 * SCAN_NODES plus the server's index among the masters (in slot order), so
 * cursor 0 starts at the first master, and a server's cursor 0 (done there)
 * moves on to the next one.  Redis' cursors are below its table sizes, far
 * under 2^58.  A map that changes during a scan may make it skip or repeat
 * keys, as SCAN may across a rehash.
 */
#define SCAN_NODES 64

static int scan_plan(px_split_plan *p, int argc, const char *const *argv, const size_t *argvlen)
{
    for (int s = 0; s < p->router->topo->nshards; s++) {
        px_pool *pool = px_router_shard_pool(p->router, s);
        if (pool) part_for(p, -1, pool);
    }
    p->scan_nodes = p->nparts;
    unsigned long long cur = 0;
    char buf[32];
    char *end = NULL;
    if (argc < 2 || argvlen[1] == 0 || argvlen[1] >= sizeof(buf)) goto bad;
    memcpy(buf, argv[1], argvlen[1]);
    buf[argvlen[1]] = 0;
    if (buf[0] < '0' || buf[0] > '9') goto bad;
    cur = strtoull(buf, &end, 10);
    if (*end) goto bad;
    if (p->nparts == 0 || p->nparts > SCAN_NODES || (int)(cur % SCAN_NODES) >= p->nparts) {
        snprintf(p->err, sizeof(p->err), p->nparts ? "ERR invalid cursor" : "CLUSTERDOWN hotproxy: the slot map is not known yet");
        return -1;
    }
    /* one part: the server the cursor names, asked with its own cursor */
    p->scan_node = (int)(cur % SCAN_NODES);
    part keep = p->parts[p->scan_node];
    p->parts[0] = keep;
    p->nparts = 1;
    px_buf b = {0};
    char rc[32];
    int rclen = snprintf(rc, sizeof(rc), "%llu", cur / SCAN_NODES);
    px_buf_appendf(&b, "*%d\r\n", argc);
    for (int i = 0; i < argc; i++) {
        if (i == 1) px_resp_bulk(&b, rc, (size_t)rclen);
        else px_resp_bulk(&b, argv[i], argvlen[i]);
    }
    p->parts[0].up.raw = b.data;
    p->parts[0].up.rawlen = b.len;
    return 0;
bad:
    snprintf(p->err, sizeof(p->err), "ERR invalid cursor");
    return -1;
}

/* SCAN's reply with hotproxy's cursor in place of the server's; 0, or -1 if it is not a SCAN reply. */
static int scan_merge(px_split_plan *p, px_buf *out)
{
    part *pt = &p->parts[0];
    const char *body, *end = pt->reply + pt->len;
    if (array_head(pt->reply, pt->len, &body) != 2) return -1;
    size_t clen = px_reply_len(body, (size_t)(end - body));
    const char *cs;
    size_t cslen;
    char buf[32];
    if (!clen || px_reply_string(body, clen, &cs, &cslen) != 0 || cslen == 0 || cslen >= sizeof(buf)) return -1;
    memcpy(buf, cs, cslen);
    buf[cslen] = 0;
    char *e = NULL;
    unsigned long long next = strtoull(buf, &e, 10);
    if (*e) return -1;
    if (next == 0) next = p->scan_node + 1 < p->scan_nodes ? (unsigned long long)p->scan_node + 1 : 0;
    else if (next > (~0ULL - SCAN_NODES) / SCAN_NODES) return -1;
    else next = next * SCAN_NODES + (unsigned long long)p->scan_node;
    snprintf(buf, sizeof(buf), "%llu", next);
    px_buf_append(out, "*2\r\n", 4);
    px_resp_bulk(out, buf, strlen(buf));
    px_buf_append(out, body + clen, (size_t)(end - body - clen));
    return 0;
}

px_split_plan *px_split_plan_make(px_client *c, const px_command *cmd, int argc, px_l1 *l, int *wait,
                                  const char **err)
{
    px_router *router = c->set->router;
    *wait = 0;
    *err = NULL;
    if (!cmd || !px_router_sharded(router) || !(cmd->flags & (PX_F_SPLIT | PX_F_ALL_SHARDS | PX_F_SCAN))) return NULL;
    const char *const *argv;
    const size_t *argvlen;
    px_client_args(c, &argv, &argvlen);
    px_split_plan *p = calloc(1, sizeof(*p));
    if (!p) abort();
    p->router = router;
    p->cmd = cmd;
    int step = cmd->key_step > 0 ? cmd->key_step : 1;
    if ((cmd->flags & PX_F_SPLIT) && (!px_command_arity_ok(cmd, argc) || (argc - cmd->first_key) % step != 0)) {
        /* as Redis says it, before any part could run (MSET a 1 b) */
        snprintf(p->err, sizeof(p->err), "ERR wrong number of arguments for '%s' command", cmd->name);
        *err = p->err;
        return p;
    }
    if (cmd->flags & PX_F_SPLIT) {
        int *pos = malloc(sizeof(int) * (size_t)argc);
        int *kp = malloc(sizeof(int) * (size_t)argc);
        if (!pos || !kp) abort();
        int n = px_command_keys(cmd, argc, argv, argvlen, pos, argc);
        int one = 1, nhits = 0;
        if ((cmd->flags & PX_F_MULTIGET) && l && n > 0) {
            /* what the L1 holds is answered from it; the misses go out */
            p->hit_off = calloc((size_t)n, sizeof(size_t));
            p->hit_len = calloc((size_t)n, sizeof(size_t));
            if (!p->hit_off || !p->hit_len) abort();
            for (int i = 0; i < n; i++) {
                p->hit_off[i] = p->hits.len;
                if (px_l1_multiget_hit(l, c, cmd, argv[pos[i]], argvlen[pos[i]], &p->hits)) nhits++;
                p->hit_len[i] = p->hits.len - p->hit_off[i];
            }
        }
        for (int i = 0; i < n; i++) {
            kp[i] = -1;
            if (p->hit_len && p->hit_len[i]) continue;
            int shard = px_router_shard(router, argv[pos[i]], argvlen[pos[i]]);
            part *pt = part_for(p, shard, NULL);
            kp[i] = (int)(pt - p->parts);
            pt->nkeys++;
            one = p->nparts == 1;
        }
        if (!nhits && (n < 2 || one)) { /* nothing to split, nothing held: the usual path */
            free(pos);
            free(kp);
            px_split_plan_free(p);
            return NULL;
        }
        /* each part's keys, in the client's order */
        p->nkeys = n;
        p->order = malloc(sizeof(int) * (size_t)n);
        if (!p->order) abort();
        for (int i = 0, at = 0; i < p->nparts; i++) {
            p->parts[i].first = at;
            at += p->parts[i].nkeys;
            p->parts[i].nkeys = 0;
        }
        for (int i = 0; i < p->nparts; i++) {
            part *pt = &p->parts[i];
            int nk = 0;
            for (int k = 0; k < n; k++) nk += kp[k] == i;
            px_buf b = {0};
            px_buf_appendf(&b, "*%d\r\n", 1 + nk * step);
            px_resp_bulk(&b, argv[0], argvlen[0]);
            for (int k = 0; k < n; k++) {
                if (kp[k] != i) continue;
                p->order[pt->first + pt->nkeys++] = k;
                for (int j = 0; j < step && pos[k] + j < argc; j++) px_resp_bulk(&b, argv[pos[k] + j], argvlen[pos[k] + j]);
            }
            pt->up.raw = b.data;
            pt->up.rawlen = b.len;
            pt->pool = px_router_shard_pool(router, pt->shard);
        }
        free(pos);
        free(kp);
    } else if (cmd->flags & PX_F_SCAN) {
        if (scan_plan(p, argc, argv, argvlen) != 0) {
            *err = p->err;
            return p;
        }
    } else {
        /* every server that serves a shard, once */
        for (int s = 0; s < router->topo->nshards; s++) {
            px_pool *pool = px_router_shard_pool(router, s);
            if (pool) part_for(p, -1, pool);
        }
        if (p->nparts == 0) {
            snprintf(p->err, sizeof(p->err), "CLUSTERDOWN hotproxy: the slot map is not known yet");
            *err = p->err;
            return p;
        }
        for (int i = 0; i < p->nparts; i++) {
            px_buf b = {0};
            px_resp_command(&b, argc, argv, argvlen);
            p->parts[i].up.raw = b.data;
            p->parts[i].up.rawlen = b.len;
        }
    }
    /* a connection per server, where c's requests to it are if any */
    for (int i = 0; i < p->nparts; i++) {
        part *pt = &p->parts[i];
        if (!pt->pool) {
            snprintf(p->err, sizeof(p->err), "CLUSTERDOWN Hash slot not served");
            *err = p->err;
            return p;
        }
        pt->u = px_client_pick(c, pt->pool);
        if (!pt->u) {
            snprintf(p->err, sizeof(p->err), "ERR %s", px_pool_unavailable(pt->pool));
            *err = p->err;
            return p;
        }
        struct px_upstream *on = px_client_inflight_on(c, pt->pool);
        if (on && on != pt->u) *wait = 1;
    }
    return p;
}

/* --- merging ------------------------------------------------------------------ */

static void merge(px_split_plan *p, px_buf *out)
{
    unsigned f = p->cmd->flags;
    for (int i = 0; i < p->nparts; i++)
        if (p->parts[i].len && (p->parts[i].reply[0] == '-' || p->parts[i].reply[0] == '!')) {
            px_buf_append(out, p->parts[i].reply, p->parts[i].len); /* the first error is the reply */
            return;
        }
    if (f & PX_F_SCAN) {
        if (scan_merge(p, out) != 0) goto odd;
        return;
    }
    if (f & PX_F_MERGE_SUM) {
        long long sum = 0, v;
        for (int i = 0; i < p->nparts; i++) {
            part *pt = &p->parts[i];
            if (pt->len < 4 || pt->reply[0] != ':' || !px_string2ll(pt->reply + 1, pt->len - 3, &v)) goto odd;
            sum += v;
        }
        px_buf_appendf(out, ":%lld\r\n", sum);
        return;
    }
    if (f & PX_F_MERGE_SAME) {
        for (int i = 1; i < p->nparts; i++)
            if (p->parts[i].len != p->parts[0].len || memcmp(p->parts[i].reply, p->parts[0].reply, p->parts[0].len))
                goto odd;
        px_buf_append(out, p->parts[0].reply, p->parts[0].len);
        return;
    }
    if (p->nkeys == 0) { /* no keys: the arrays one after the other (KEYS) */
        long long total = 0;
        const char *body;
        for (int i = 0; i < p->nparts; i++) {
            long long n = array_head(p->parts[i].reply, p->parts[i].len, &body);
            if (n < 0) goto odd;
            total += n;
        }
        px_buf_appendf(out, "*%lld\r\n", total);
        for (int i = 0; i < p->nparts; i++) {
            array_head(p->parts[i].reply, p->parts[i].len, &body);
            px_buf_append(out, body, (size_t)(p->parts[i].reply + p->parts[i].len - body));
        }
        return;
    }
    /* each key's element back at its place (MGET), the L1's among them */
    const char **el = calloc((size_t)p->nkeys, sizeof(*el));
    size_t *ellen = calloc((size_t)p->nkeys, sizeof(*ellen));
    if (!el || !ellen) abort();
    for (int k = 0; p->hit_len && k < p->nkeys; k++) {
        el[k] = p->hits.data + p->hit_off[k];
        ellen[k] = p->hit_len[k];
    }
    for (int i = 0; i < p->nparts; i++) {
        part *pt = &p->parts[i];
        const char *at, *end = pt->reply + pt->len;
        if (array_head(pt->reply, pt->len, &at) != pt->nkeys) {
            free(el);
            free(ellen);
            goto odd;
        }
        for (int j = 0; j < pt->nkeys; j++) {
            size_t n = at < end ? px_reply_len(at, (size_t)(end - at)) : 0;
            el[p->order[pt->first + j]] = at;
            ellen[p->order[pt->first + j]] = n;
            at += n;
        }
    }
    px_buf_appendf(out, "*%d\r\n", p->nkeys);
    for (int k = 0; k < p->nkeys; k++) px_buf_append(out, el[k], ellen[k]);
    free(el);
    free(ellen);
    return;
odd:
    out->len = 0;
    px_buf_appendf(out, "-ERR hotproxy: the servers' replies to '%s' could not be merged\r\n", p->cmd->name);
}

static void ignore_asking(struct px_upstream *u, void *ctx, const char *reply, size_t len)
{
    (void)u;
    (void)ctx;
    (void)reply;
    (void)len;
}

/* A part of a client tracking across a Cluster is on a connection of the
 * client's own (px_client_pick), where the router leaves a MOVED or ASK to
 * its owner: it goes on to the client's connection of the node named (so
 * what it reads there is tracked for it); 1 when it was sent on. */
static int follow_own(part *pt, px_client *c, struct px_upstream *u, const char *reply, size_t len)
{
    int asking = 0;
    px_pool *pool = px_router_redirected(pt->sp->router, u, reply, len, &asking);
    struct px_upstream *nu = pool ? px_client_pick(c, pool) : NULL;
    if (!nu) return 0;
    px_client_hold(c, nu);
    px_client_release(c, pt->u);
    pt->u = nu;
    pt->up.redirects++;
    if (asking) px_upstream_send_internal(nu, "*1\r\n$6\r\nASKING\r\n", 16, ignore_asking, NULL);
    px_upstream_send(nu, &pt->up, pt->up.raw, pt->up.rawlen);
    return 1;
}

static void part_done(px_upreq *q, struct px_upstream *u, const char *reply, size_t len, int failed)
{
    part *pt = (part *)((char *)q - offsetof(part, up));
    px_split_plan *p = pt->sp;
    px_client *c = p->r->client;
    /* the topology sees it first: a redirect is followed, as for any command */
    if (!failed && px_router_reply(p->router, q, u, reply, len)) return;
    if (failed && px_router_failed(p->router, q, u, reply, len)) return;
    if (!failed && u && !u->lane && c && px_client_tracks_across(c) && q->redirects < 5 &&
        follow_own(pt, c, u, reply, len))
        return;
    pt->reply = malloc(len ? len : 1);
    if (!pt->reply) abort();
    memcpy(pt->reply, reply, len);
    pt->len = len;
    if (p->r->client) px_client_release(p->r->client, pt->u);
    if (--p->left > 0) return;
    px_buf out = {0};
    merge(p, &out);
    px_client_reply(p->r, out.data, out.len);
    px_buf_free(&out);
    px_split_plan_free(p);
}

/* A part sent again on pool p (a redirect; NULL: parked for a retry): on
 * the client's connection to p, and its in-flight count moves with it. */
static struct px_upstream *part_resend_on(px_upreq *q, px_pool *p, int proto)
{
    part *pt = (part *)((char *)q - offsetof(part, up));
    px_client *c = pt->sp->r->client;
    struct px_upstream *to = p ? px_pool_pick(p, 0, proto, c ? px_client_inflight_on(c, p) : NULL) : NULL;
    if (c) {
        px_client_hold(c, to);
        px_client_release(c, pt->u);
    }
    pt->u = to;
    return to;
}

void px_split_send(px_split_plan *p, px_client *c, px_req *r, px_l1 *l)
{
    p->r = r;
    p->left = p->nparts;
    px_cluster_count_split(p->router);
    if (p->nparts == 0) { /* every key from the L1 */
        px_buf out = {0};
        merge(p, &out);
        px_client_reply(r, out.data, out.len);
        px_buf_free(&out);
        px_split_plan_free(p);
        return;
    }
    /* the request waits for its parts, in flight on no connection of its own */
    px_client_await(c, r, NULL);
    px_l1_write(l, c, r, p->parts[0].u); /* as for any forwarded command: a write drops what it names */
    for (int i = 0; i < p->nparts; i++) {
        part *pt = &p->parts[i];
        pt->sp = p;
        pt->up.done = part_done;
        pt->up.resend_on = part_resend_on;
        pt->up.what = p->cmd->name;
        px_client_hold(c, pt->u);
        c->set->core->stats.commands_forwarded++;
        px_upstream_send(pt->u, &pt->up, pt->up.raw, pt->up.rawlen);
    }
}
