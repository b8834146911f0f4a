/*
 * px_sentinel: the Sentinel topology.  See px_sentinel.h.
 *
 * State: the Sentinels in the order they are asked (the last one that
 * answered first), the data pool (the master's), and at most one address
 * being checked with ROLE before the data pool moves to it.  Everything
 * runs on the loop through control pools' links; only startup (before the
 * loop) asks with blocking calls (px_blocking: TLS too with upstream-tls),
 * bounded by connect-timeout.
 */
#include "proxy/px_sentinel.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proxy/px_blocking.h"
#include "proxy/px_cluster.h"
#include "proxy/px_resp.h"

#define CHECK_INTERVAL 1.0    /* seconds between two asks for the master's address */
#define READONLY_PAUSE 0.1    /* at most one round per this long for -READONLY replies */
#define READONLY_HOLD 3.0     /* a write refused with -READONLY waits this long for a new master */
#define SWITCH_WATCH 10.0     /* how long the first reply of a new master is waited for */

struct sstate;

typedef struct sentinel {
    struct sstate *st;
    px_pool *pool;           /* a control pool: its host and port, its credentials */
    px_upstream *cmd;        /* link for requests (NULL: opened when next asked) */
    px_upstream *sub;        /* link subscribed to +switch-master (NULL: reopened by the cron) */
    double sub_retry;        /* when the cron may open sub again */
    int reachable;           /* the last thing heard: a request answered or its subscription confirmed (1),
                              * a request or link failed (0) */
} sentinel;

/* A request in flight on the data pool that may outlive the state (the
 * pool is destroyed after the topology at exit): st is cleared then. */
typedef struct ping_token {
    struct sstate *st;
} ping_token;

/* A write the data pool's node refused with -READONLY: it never ran, so it
 * is sent once more when the pool moves to a new master, or answered with
 * that error when none is found within READONLY_HOLD. */
typedef struct parked {
    struct parked *next;
    px_upreq *q;
    int db, proto;           /* the lane it was on */
    int moved;               /* the data pool moved since: send it when a connection is up */
    double until;
    size_t len;
    char reply[];            /* the -READONLY error, for the client if no new master comes */
} parked;

typedef struct sstate {
    px_router *r;
    px_core *core;
    char *name;              /* the master set's name */
    sentinel **v;            /* asked in this order */
    int n;
    px_pool **nodes;         /* control pools of data nodes, for ROLE checks */
    int nnodes;
    px_pool *data;
    char master_host[256];
    int master_port;
    /* a round of asking: the Sentinel asked now */
    sentinel *asking;
    int round_pos;
    double next_check;
    double last_readonly_round;
    parked *parked;          /* writes refused with -READONLY, oldest first */
    parked **parked_tail;
    uint64_t readonly_retries;
    int all_down;            /* the last round found no Sentinel answering (logged once) */
    /* the address being checked with ROLE */
    px_upstream *cand;
    char cand_host[256];
    int cand_port;
    double cand_t0;
    char cand_why[160];
    /* timing of the last switch: from the change seen to the first reply */
    ev_timer watch;
    double switch_t0, watch_until;
    ping_token *ping;
    uint64_t failovers;
    long long last_failover_time;
    double last_switch_ms;
    int closing;
    char info_master[300];
    px_buf info_list;
} sstate;

static void ask_next(sstate *st);

static void ignore_frame(px_upstream *u, void *ctx, const char *frame, size_t len)
{
    (void)u;
    (void)ctx;
    (void)frame;
    (void)len;
}

/* --- the Sentinel list ------------------------------------------------------ */

static sentinel *sentinel_find(sstate *st, const char *host, int port)
{
    for (int i = 0; i < st->n; i++)
        if (st->v[i]->pool->port == port && !strcmp(st->v[i]->pool->host, host)) return st->v[i];
    return NULL;
}

static sentinel *sentinel_add(sstate *st, const char *host, int port)
{
    sentinel *s = sentinel_find(st, host, port);
    if (s) return s;
    s = calloc(1, sizeof(*s));
    if (!s) abort();
    s->st = st;
    s->pool = px_router_add_control_pool(st->r, host, port);
    /* the Sentinels' credentials, never the data nodes' */
    px_pool_set_auth(s->pool, st->core->cfg->sentinel_user, st->core->cfg->sentinel_password);
    st->v = realloc(st->v, sizeof(*st->v) * (size_t)(st->n + 1));
    if (!st->v) abort();
    st->v[st->n++] = s;
    return s;
}

/* The guidelines: the Sentinel that answered is asked first next time. */
static void sentinel_to_front(sstate *st, sentinel *s)
{
    int i;
    for (i = 0; i < st->n && st->v[i] != s; i++) continue;
    if (i == st->n || i == 0) return;
    memmove(&st->v[1], &st->v[0], sizeof(*st->v) * (size_t)i);
    st->v[0] = s;
}

/* --- the data pool follows the master ------------------------------------- */

static void ping_done(px_upstream *u, void *ctx, const char *reply, size_t len)
{
    ping_token *t = ctx;
    sstate *st = t->st;
    (void)u;
    free(t);
    if (!st) return;
    st->ping = NULL;
    double now = px_now_fresh(st->core);
    if (len >= 5 && !memcmp(reply, "+PONG", 5)) {
        st->last_switch_ms = (now - st->switch_t0) * 1000.0;
        px_log_notice(&st->core->log, "Sentinel: the new master %s answers, %.1f ms after the change was seen",
                      st->data->name, st->last_switch_ms);
        return;
    }
    if (now < st->watch_until) ev_timer_again(st->core->loop, &st->watch); /* its connection failed: once more */
}

/* Until a shared connection of the re-pointed pool is up again: then one
 * PING on it, whose reply ends the switch's timing. */
static void watch_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    sstate *st = w->data;
    (void)revents;
    if (st->ping) {
        ev_timer_stop(loop, w);
        return;
    }
    if (px_now_fresh(st->core) > st->watch_until) {
        ev_timer_stop(loop, w);
        return;
    }
    px_upstream *u = px_pool_pick(st->data, 0, 2, NULL);
    if (!u) return; /* still waiting for its reconnect */
    ev_timer_stop(loop, w);
    st->ping = calloc(1, sizeof(*st->ping));
    if (!st->ping) abort();
    st->ping->st = st;
    px_upstream_send_internal(u, "*1\r\n$4\r\nPING\r\n", 14, ping_done, st->ping);
}

/* The writes refused with -READONLY: once the data pool has moved to a new
 * master (switch_to marks them), each is sent there when a connection of
 * its lane is up; one whose wait is over gets its error; at exit (resend
 * -1) all get their error. */
static void parked_release(sstate *st, int resend)
{
    double now = px_now(st->core);
    parked **pp = &st->parked;
    while (*pp) {
        parked *k = *pp;
        if (resend > 0) k->moved = 1;
        px_upstream *u = resend >= 0 && k->moved ? px_pool_pick(st->data, k->db, k->proto, NULL) : NULL;
        if (u && u->state != PX_UP_READY) u = NULL; /* reconnecting to the new master: next time */
        if (!u && resend >= 0 && now < k->until) {
            pp = &k->next;
            continue;
        }
        *pp = k->next;
        if (u) {
            st->readonly_retries++;
            px_upstream_send(u, k->q, k->q->raw, k->q->rawlen);
        } else {
            k->q->done(k->q, NULL, k->reply, k->len, 0);
        }
        free(k);
    }
    st->parked_tail = pp;
}

static void switch_to(sstate *st, const char *host, int port, double t0, const char *why)
{
    char old[sizeof(st->data->name)];
    snprintf(old, sizeof(old), "%s", st->data->name);
    snprintf(st->master_host, sizeof(st->master_host), "%s", host);
    st->master_port = port;
    st->failovers++;
    st->last_failover_time = (long long)time(NULL);
    px_router_repoint(st->r, st->data, host, port, why);
    px_log_warning(&st->core->log, "Sentinel: master '%s' is now %s (was %s): %s", st->name, st->data->name, old,
                   why);
    st->switch_t0 = t0;
    st->watch_until = px_now_fresh(st->core) + SWITCH_WATCH;
    if (!st->ping) ev_timer_again(st->core->loop, &st->watch);
    parked_release(st, 1);
}

static px_pool *node_pool(sstate *st, const char *host, int port)
{
    for (int i = 0; i < st->nnodes; i++)
        if (st->nodes[i]->port == port && !strcmp(st->nodes[i]->host, host)) return st->nodes[i];
    st->nodes = realloc(st->nodes, sizeof(*st->nodes) * (size_t)(st->nnodes + 1));
    if (!st->nodes) abort();
    /* a data node: the handshake logs in with upstream-user/upstream-password */
    return st->nodes[st->nnodes++] = px_router_add_control_pool(st->r, host, port);
}

/* "master" as ROLE's first element. */
static int role_is_master(const char *reply, size_t len)
{
    redisReply *rep = px_reply_decode(reply, len);
    int yes = rep && rep->type == REDIS_REPLY_ARRAY && rep->elements >= 1 &&
              rep->element[0]->type == REDIS_REPLY_STRING && !strcmp(rep->element[0]->str, "master");
    if (rep) freeReplyObject(rep);
    return yes;
}

static void role_done(px_upstream *u, void *ctx, const char *reply, size_t len)
{
    sstate *st = ctx;
    if (st->closing || u != st->cand) return; /* a check given up for a newer one */
    st->cand = NULL;
    int ok = role_is_master(reply, len);
    px_pool_close(u->pool, u, "ROLE checked");
    if (!ok) {
        px_log_notice(&st->core->log, "Sentinel: %s:%d is not a master by its ROLE (%.*s); the data pool stays at %s",
                      st->cand_host, st->cand_port, (int)(len > 80 ? 80 : len - 2), reply, st->data->name);
        return; /* the next round asks again */
    }
    switch_to(st, st->cand_host, st->cand_port, st->cand_t0, st->cand_why);
}

static void cand_lost(px_upstream *u, void *ctx)
{
    sstate *st = ctx;
    if (!st->closing && u == st->cand) st->cand = NULL;
}

/*
 * A Sentinel names host:port as the master: unless the data pool is there
 * already, check with ROLE on a connection of its own, and move the pool
 * once the node says it is the master.  t0: when the change was seen.
 */
static void consider(sstate *st, const char *host, int port, double t0, const char *why)
{
    /* A Sentinel that has not heard of a switch yet names the master the
     * pool is on: that does not cancel a check another one started (ROLE
     * decides). */
    if (port == st->master_port && !strcmp(host, st->master_host)) return;
    if (st->cand) {
        if (port == st->cand_port && !strcmp(host, st->cand_host)) return; /* being checked */
        px_upstream *old = st->cand;
        st->cand = NULL;
        px_pool_close(old->pool, old, "a newer address to check");
    }
    px_pool *p = node_pool(st, host, port);
    px_upstream *u = px_pool_open_link(p, ignore_frame, cand_lost, st);
    if (!u) {
        px_log_notice(&st->core->log, "Sentinel: cannot connect to %s to check its ROLE", p->name);
        return;
    }
    snprintf(st->cand_host, sizeof(st->cand_host), "%s", host);
    st->cand_port = port;
    st->cand_t0 = t0;
    snprintf(st->cand_why, sizeof(st->cand_why), "%s", why);
    st->cand = u;
    px_upstream_send_internal(u, "*1\r\n$4\r\nROLE\r\n", 14, role_done, st);
}

/* --- asking the Sentinels ---------------------------------------------------- */

static void sentinel_cmd(sentinel *s, px_internal_cb cb, const char *sub)
{
    const char *argv[] = {"SENTINEL", sub, s->st->name};
    px_buf b = {0};
    px_resp_command(&b, 3, argv, NULL);
    px_upstream_send_internal(s->cmd, b.data, b.len, cb, s);
    px_buf_free(&b);
}

static void cmd_lost(px_upstream *u, void *ctx)
{
    sentinel *s = ctx;
    if (s->st->closing) return;
    if (s->cmd == u) s->cmd = NULL;
    s->reachable = 0;
}

/* SENTINEL SENTINELS: the others watching the master, so losing the
 * configured ones is survivable. */
static void sentinels_done(px_upstream *u, void *ctx, const char *reply, size_t len)
{
    sentinel *s = ctx;
    sstate *st = s->st;
    (void)u;
    if (st->closing) return;
    redisReply *rep = px_reply_decode(reply, len);
    if (!rep || rep->type != REDIS_REPLY_ARRAY) {
        if (rep) freeReplyObject(rep);
        return;
    }
    for (size_t i = 0; i < rep->elements; i++) {
        redisReply *e = rep->element[i];
        const char *ip = NULL;
        long long port = 0;
        if (e->type != REDIS_REPLY_ARRAY) continue;
        for (size_t j = 0; j + 1 < e->elements; j += 2) {
            if (e->element[j]->type != REDIS_REPLY_STRING || e->element[j + 1]->type != REDIS_REPLY_STRING) continue;
            if (!strcmp(e->element[j]->str, "ip")) ip = e->element[j + 1]->str;
            if (!strcmp(e->element[j]->str, "port"))
                if (!px_string2ll(e->element[j + 1]->str, e->element[j + 1]->len, &port)) port = 0;
        }
        if (ip && port > 0 && port < 65536 && !sentinel_find(st, ip, (int)port)) {
            sentinel_add(st, ip, (int)port);
            px_log_notice(&st->core->log, "Sentinel: learnt of the Sentinel %s:%lld from %s", ip, port, s->pool->name);
        }
    }
    freeReplyObject(rep);
}

static void addr_done(px_upstream *u, void *ctx, const char *reply, size_t len)
{
    sentinel *s = ctx;
    sstate *st = s->st;
    if (st->closing || st->asking != s) return;
    st->asking = NULL;
    redisReply *rep = px_reply_decode(reply, len);
    long long port = 0;
    int named = rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
                rep->element[0]->type == REDIS_REPLY_STRING && rep->element[1]->type == REDIS_REPLY_STRING &&
                px_string2ll(rep->element[1]->str, rep->element[1]->len, &port) && port > 0 && port < 65536;
    /* an error that is the connection's own: not reachable; one the
     * Sentinel sent (or a nil: it does not know the master) is an answer */
    s->reachable = u->state == PX_UP_READY && !(len && reply[0] == '-');
    if (!named) {
        if (rep) freeReplyObject(rep);
        px_log_verbose(&st->core->log, "Sentinel: %s did not name the master '%s': %.*s", s->pool->name, st->name,
                       (int)(len > 100 ? 100 : len ? len - 2 : 0), reply);
        st->round_pos++;
        ask_next(st);
        return;
    }
    sentinel_to_front(st, s);
    if (st->all_down) {
        st->all_down = 0;
        px_log_notice(&st->core->log, "Sentinel: %s answers again; master '%s' at %s:%lld", s->pool->name, st->name,
                      rep->element[0]->str, port);
    }
    char why[160];
    snprintf(why, sizeof(why), "Sentinel %.120s names it", s->pool->name);
    consider(st, rep->element[0]->str, (int)port, px_now_fresh(st->core), why);
    freeReplyObject(rep);
    sentinel_cmd(s, sentinels_done, "SENTINELS");
}

/* Ask the Sentinel at round_pos, or end the round when every one failed. */
static void ask_next(sstate *st)
{
    while (st->round_pos < st->n) {
        sentinel *s = st->v[st->round_pos];
        if (s->cmd && s->cmd->state == PX_UP_CLOSED) s->cmd = NULL;
        if (!s->cmd) s->cmd = px_pool_open_link(s->pool, ignore_frame, cmd_lost, s);
        if (!s->cmd) {
            s->reachable = 0;
            st->round_pos++;
            continue;
        }
        st->asking = s;
        sentinel_cmd(s, addr_done, "get-master-addr-by-name");
        return;
    }
    if (!st->all_down) {
        st->all_down = 1;
        px_log_warning(&st->core->log,
                       "Sentinel: none of the %d Sentinels named the master '%s'; keeping the last known master %s",
                       st->n, st->name, st->data->name);
    }
}

static void round_start(sstate *st)
{
    if (st->asking || st->closing) return; /* a round is on */
    st->round_pos = 0;
    ask_next(st);
}

/* --- +switch-master ---------------------------------------------------------- */

static void sub_frame(px_upstream *u, void *ctx, const char *frame, size_t len)
{
    sentinel *s = ctx;
    sstate *st = s->st;
    (void)u;
    if (st->closing) return;
    double t0 = px_now_fresh(st->core);
    redisReply *rep = px_reply_decode(frame, len);
    if (!rep) return;
    /* message +switch-master "<name> <old-ip> <old-port> <new-ip> <new-port>" */
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 3 && rep->element[0]->type == REDIS_REPLY_STRING &&
        !strcmp(rep->element[0]->str, "subscribe"))
        s->reachable = 1;
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 3 && rep->element[0]->type == REDIS_REPLY_STRING &&
        !strcmp(rep->element[0]->str, "message") && rep->element[2]->type == REDIS_REPLY_STRING) {
        char name[256], oldip[256], newip[256];
        int oldport, newport;
        if (sscanf(rep->element[2]->str, "%255s %255s %d %255s %d", name, oldip, &oldport, newip, &newport) == 5 &&
            !strcmp(name, st->name) && newport > 0 && newport < 65536) {
            char why[200];
            snprintf(why, sizeof(why), "+switch-master from Sentinel %.120s", s->pool->name);
            px_log_notice(&st->core->log, "Sentinel: %s says +switch-master %s %s:%d -> %s:%d", s->pool->name, name,
                          oldip, oldport, newip, newport);
            consider(st, newip, newport, t0, why);
        }
    }
    freeReplyObject(rep);
}

static void sub_lost(px_upstream *u, void *ctx)
{
    sentinel *s = ctx;
    if (s->st->closing) return;
    if (s->sub == u) s->sub = NULL;
    s->reachable = 0;
    s->sub_retry = px_now(s->st->core) + CHECK_INTERVAL;
}

static void sub_open(sentinel *s)
{
    static const char cmd[] = "*2\r\n$9\r\nSUBSCRIBE\r\n$14\r\n+switch-master\r\n";
    s->sub = px_pool_open_link(s->pool, sub_frame, sub_lost, s);
    if (!s->sub) {
        s->sub_retry = px_now(s->st->core) + CHECK_INTERVAL;
        return;
    }
    /* after the handshake's AUTH; its confirmation and messages answer no
     * request, so they reach sub_frame */
    px_upstream_write(s->sub, cmd, sizeof(cmd) - 1);
}

/* --- the topology ------------------------------------------------------------ */

static px_pool *sentinel_route(px_router *r, const px_route_args *a)
{
    (void)a;
    return r->npools ? r->pools[0] : NULL;
}

static void sentinel_start(px_router *r)
{
    sstate *st = r->topo_state;
    st->data = px_router_add_pool(r, st->master_host, st->master_port);
    for (int i = 0; i < st->n; i++) sub_open(st->v[i]);
    st->next_check = px_now(st->core) + CHECK_INTERVAL;
}

static int sentinel_reply(px_router *r, px_upreq *q, px_upstream *u, const char *reply, size_t len)
{
    sstate *st = r->topo_state;
    /* The node the data pool is on took a write as a replica: it is not
     * the master any more (the old master came back, or a failover is on).
     * Ask the Sentinels at once.  The command never ran: it waits for the
     * new master and is sent there once (a second -READONLY goes to the
     * client), or gets this error if none comes within READONLY_HOLD. */
    if (!(len >= 9 && !memcmp(reply, "-READONLY", 9) && u && u->pool == st->data)) return 0;
    double now = px_now(st->core);
    if (now - st->last_readonly_round >= READONLY_PAUSE && !st->asking) {
        st->last_readonly_round = now;
        px_log_notice(&st->core->log, "Sentinel: %s answered -READONLY (a replica now): asking the Sentinels at once",
                      st->data->name);
        round_start(st);
    }
    if (!q->raw || q->redirects > 0 || st->closing) return 0;
    parked *k = malloc(sizeof(*k) + len);
    if (!k) abort();
    k->next = NULL;
    k->q = q;
    k->moved = 0;
    k->db = u->db;
    k->proto = u->proto;
    k->until = now + READONLY_HOLD;
    k->len = len;
    memcpy(k->reply, reply, len);
    q->redirects++;
    *st->parked_tail = k;
    st->parked_tail = &k->next;
    return 1;
}

static void sentinel_cron(px_router *r, double now)
{
    sstate *st = r->topo_state;
    parked_release(st, 0); /* to the new master once up, or their -READONLY when the wait is over */
    if (now >= st->next_check) {
        st->next_check = now + CHECK_INTERVAL;
        round_start(st);
    }
    for (int i = 0; i < st->n; i++)
        if (!st->v[i]->sub && now >= st->v[i]->sub_retry) sub_open(st->v[i]);
}

static void sentinel_info(px_router *r, px_buf *out)
{
    sstate *st = r->topo_state;
    px_stats_sentinel v;
    memset(&v, 0, sizeof(v));
    px_buf_clear(&st->info_list, 4096);
    for (int i = 0; i < st->n; i++) {
        px_buf_appendf(&st->info_list, "%s%s=%s", i ? "," : "", st->v[i]->pool->name,
                       st->v[i]->reachable ? "up" : "down");
        v.sentinels_reachable += st->v[i]->reachable;
    }
    px_buf_append(&st->info_list, "", 1);
    snprintf(st->info_master, sizeof(st->info_master), "%s", st->data ? st->data->name : "");
    v.sentinel_master_name = st->name;
    v.sentinel_master = st->info_master;
    v.sentinel_status = st->all_down ? "no-sentinel-reachable" : "ok";
    v.sentinels_known = st->n;
    v.sentinels = st->info_list.data;
    v.sentinel_failovers = st->failovers;
    v.sentinel_last_failover_time = st->last_failover_time;
    v.sentinel_last_switch_ms = st->last_switch_ms;
    v.sentinel_readonly_retries = st->readonly_retries;
    px_stats_render_group(PX_STATS_G_SENTINEL, &v, out);
}

static void sentinel_destroy(px_router *r)
{
    sstate *st = r->topo_state;
    if (!st) return;
    /* The pools go after this (they are the router's): close our links now,
     * so no callback of theirs runs with this state gone. */
    st->closing = 1;
    ev_timer_stop(st->core->loop, &st->watch);
    parked_release(st, -1);
    if (st->ping) st->ping->st = NULL; /* its callback frees it, with the data pool */
    if (st->cand) px_pool_close(st->cand->pool, st->cand, "shutting down");
    for (int i = 0; i < st->n; i++) {
        sentinel *s = st->v[i];
        if (s->cmd) px_pool_close(s->pool, s->cmd, "shutting down");
        if (s->sub) px_pool_close(s->pool, s->sub, "shutting down");
        free(s);
    }
    free(st->v);
    free(st->nodes);
    free(st->name);
    px_buf_free(&st->info_list);
    free(st);
    r->topo_state = NULL;
}

static int sentinel_setup(px_router *r, char *err, size_t errlen);

const px_topology px_sentinel_topology = {
    .name = "sentinel",
    .setup = sentinel_setup,
    .start = sentinel_start,
    .route = sentinel_route,
    .reply = sentinel_reply,
    .resends = PX_RESENDS_WRITES,
    .cron = sentinel_cron,
    .info = sentinel_info,
    .destroy = sentinel_destroy,
};

/* --- startup: blocking, before the loop -------------------------------------- */

/* A connection, logged in with user/password when password is set; NULL
 * with why set. */
static px_blocking *blocking_connect(px_core *k, const char *host, int port, long long timeout_ms, const char *user,
                                     const char *password, char *why, size_t whylen)
{
    px_blocking *c = px_blocking_connect(k, host, port, timeout_ms, why, whylen);
    if (!c) return NULL;
    if (password && *password) {
        const char *argv[] = {"AUTH", user && *user ? user : password, password};
        redisReply *rep = px_blocking_command(c, user && *user ? 3 : 2, argv);
        if (!rep || rep->type == REDIS_REPLY_ERROR) {
            snprintf(why, whylen, "AUTH: %s", rep ? rep->str : px_blocking_error(c));
            if (rep) freeReplyObject(rep);
            px_blocking_close(c);
            return NULL;
        }
        freeReplyObject(rep);
    }
    return c;
}

/* One command of a few fixed words. */
static redisReply *blocking_command(px_blocking *c, const char *a0, const char *a1, const char *a2)
{
    const char *argv[] = {a0, a1, a2};
    return px_blocking_command(c, a2 ? 3 : a1 ? 2 : 1, argv);
}

/* The one master this Sentinel watches, when sentinel-master is empty. */
static int only_master(px_blocking *c, char **name, char *why, size_t whylen)
{
    redisReply *rep = blocking_command(c, "SENTINEL", "MASTERS", NULL);
    if (!rep || rep->type != REDIS_REPLY_ARRAY) {
        snprintf(why, whylen, "SENTINEL MASTERS: %s",
                 rep && rep->type == REDIS_REPLY_ERROR ? rep->str : rep ? "not an array" : px_blocking_error(c));
        if (rep) freeReplyObject(rep);
        return -1;
    }
    char names[512] = "";
    size_t used = 0;
    const char *first = NULL;
    for (size_t i = 0; i < rep->elements; i++) {
        redisReply *m = rep->element[i];
        for (size_t j = 0; m->type == REDIS_REPLY_ARRAY && j + 1 < m->elements; j += 2)
            if (m->element[j]->type == REDIS_REPLY_STRING && !strcmp(m->element[j]->str, "name") &&
                m->element[j + 1]->type == REDIS_REPLY_STRING) {
                if (!first) first = m->element[j + 1]->str;
                if (used < sizeof(names))
                    used += (size_t)snprintf(names + used, sizeof(names) - used, "%s%s", used ? ", " : "",
                                             m->element[j + 1]->str);
            }
    }
    int rc = -1;
    if (rep->elements == 1 && first) {
        *name = strdup(first);
        if (!*name) abort();
        rc = 0;
    } else if (rep->elements == 0) {
        snprintf(why, whylen, "it watches no master");
    } else {
        snprintf(why, whylen, "it watches %zu masters (%s): say which with sentinel-master", rep->elements, names);
    }
    freeReplyObject(rep);
    return rc;
}

/* Ask one Sentinel for the master and check that node's ROLE. */
static int discover_one(sstate *st, sentinel *s, char *why, size_t whylen)
{
    const px_config *cfg = st->core->cfg;
    px_blocking *c = blocking_connect(st->core, s->pool->host, s->pool->port, cfg->connect_timeout, cfg->sentinel_user,
                                      cfg->sentinel_password, why, whylen);
    if (!c) return -1;
    if (!st->name && only_master(c, &st->name, why, whylen) != 0) {
        px_blocking_close(c);
        return -2; /* the same from every Sentinel: stop */
    }
    redisReply *rep = blocking_command(c, "SENTINEL", "get-master-addr-by-name", st->name);
    long long port = 0;
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
        rep->element[0]->type != REDIS_REPLY_STRING || rep->element[1]->type != REDIS_REPLY_STRING ||
        !px_string2ll(rep->element[1]->str, rep->element[1]->len, &port) || port < 1 || port > 65535) {
        snprintf(why, whylen, "no address for master '%s' (%s)", st->name,
                 !rep ? px_blocking_error(c) : rep->type == REDIS_REPLY_ERROR ? rep->str : "it does not know it");
        if (rep) freeReplyObject(rep);
        px_blocking_close(c);
        return -1;
    }
    char host[256];
    snprintf(host, sizeof(host), "%s", rep->element[0]->str);
    freeReplyObject(rep);
    px_blocking_close(c);

    char nwhy[200];
    px_blocking *m = blocking_connect(st->core, host, (int)port, cfg->connect_timeout, cfg->upstream_user,
                                      cfg->upstream_password, nwhy, sizeof(nwhy));
    if (!m) {
        snprintf(why, whylen, "names %.100s:%lld, which cannot be reached: %.150s", host, port, nwhy);
        return -1;
    }
    rep = blocking_command(m, "ROLE", NULL, NULL);
    int master = rep && rep->type == REDIS_REPLY_ARRAY && rep->elements >= 1 &&
                 rep->element[0]->type == REDIS_REPLY_STRING && !strcmp(rep->element[0]->str, "master");
    if (!master)
        snprintf(why, whylen, "names %.100s:%lld, whose ROLE is not master (%.60s)", host, port,
                 !rep ? px_blocking_error(m)
                 : rep->type == REDIS_REPLY_ARRAY && rep->elements && rep->element[0]->str ? rep->element[0]->str
                 : rep->type == REDIS_REPLY_ERROR ? rep->str : "?");
    if (rep) freeReplyObject(rep);
    px_blocking_close(m);
    if (!master) return -1;
    snprintf(st->master_host, sizeof(st->master_host), "%s", host);
    st->master_port = (int)port;
    return 0;
}

static int sentinel_setup(px_router *r, char *err, size_t errlen)
{
    const px_config *cfg = r->core->cfg;
    sstate *st = calloc(1, sizeof(*st));
    if (!st) abort();
    st->r = r;
    st->core = r->core;
    st->parked_tail = &st->parked;
    r->topo_state = st;
    ev_timer_init(&st->watch, watch_cb, 0., 0.0005);
    st->watch.data = st;
    if (*cfg->sentinel_master && !(st->name = strdup(cfg->sentinel_master))) abort();
    for (int i = 0; i < cfg->nupstreams; i++) sentinel_add(st, cfg->upstreams[i].host, cfg->upstreams[i].port);

    size_t used = 0;
    err[0] = '\0';
    for (int i = 0; i < st->n; i++) {
        char why[400];
        int rc = discover_one(st, st->v[i], why, sizeof(why));
        if (rc == 0) {
            st->v[i]->reachable = 1;
            sentinel_to_front(st, st->v[i]);
            px_log_notice(&st->core->log, "Sentinel: master '%s' is %s:%d (from Sentinel %s)", st->name,
                          st->master_host, st->master_port, st->v[0]->pool->name);
            return 0;
        }
        if (used < errlen)
            used += (size_t)snprintf(err + used, errlen - used, "%sSentinel %s: %s", used ? "; " : "",
                                     st->v[i]->pool->name, why);
        if (rc == -2) break;
    }
    char reasons[1024];
    snprintf(reasons, sizeof(reasons), "%s", err);
    snprintf(err, errlen, "topology sentinel: no Sentinel named a master%s%s%s that says it is one: %s",
             st->name ? " for '" : "", st->name ? st->name : "", st->name ? "'" : "", reasons);
    return -1;
}

/* What the first upstream that answers is: PX_TOPO_*, or -1 with err set. */
static int probe_kind(px_core *core, char *err, size_t errlen)
{
    const px_config *c = core->cfg;
    /* a Sentinel or a Redis may want a password: try none, then each set */
    const char *users[] = {NULL, c->sentinel_user, c->upstream_user};
    const char *passwords[] = {NULL, c->sentinel_password, c->upstream_password};
    long long timeout = c->connect_timeout < 500 ? c->connect_timeout : 500;
    char reasons[1024] = "";
    size_t used = 0;
    for (int i = 0; i < c->nupstreams; i++) {
        const px_hostport *a = &c->upstreams[i];
        char why[256] = "";
        for (int k = 0; k < 3; k++) {
            if (k > 0 && !(passwords[k] && *passwords[k])) continue;
            px_blocking *rc =
                blocking_connect(core, a->host, a->port, timeout, users[k], passwords[k], why, sizeof(why));
            if (!rc) {
                if (k == 0) break; /* cannot connect: the next address */
                continue;
            }
            redisReply *rep = blocking_command(rc, "INFO", "server", NULL);
            int kind = -1;
            if (rep && (rep->type == REDIS_REPLY_STRING || rep->type == REDIS_REPLY_STATUS)) {
                const char *m = strstr(rep->str, "redis_mode:");
                kind = m && !strncmp(m + 11, "sentinel", 8)  ? PX_TOPO_SENTINEL
                       : m && !strncmp(m + 11, "cluster", 7) ? PX_TOPO_CLUSTER
                                                             : PX_TOPO_SINGLE;
            } else {
                snprintf(why, sizeof(why), "INFO server: %s", rep && rep->str ? rep->str : px_blocking_error(rc));
                /* a server that answers INFO with anything but an error is no Redis we know: single */
                if (rep && rep->type != REDIS_REPLY_ERROR) kind = PX_TOPO_SINGLE;
                if (!rep && c->nupstreams == 1) kind = PX_TOPO_SINGLE;
            }
            if (rep) freeReplyObject(rep);
            px_blocking_close(rc);
            if (kind >= 0) {
                if (kind == PX_TOPO_SINGLE && c->nupstreams > 1) {
                    snprintf(err, errlen,
                             "topology auto: upstream %s:%d is a plain Redis, but %d upstreams are given "
                             "(several addresses are Sentinels)",
                             a->host, a->port, c->nupstreams);
                    return -1;
                }
                return kind;
            }
        }
        if (used < sizeof(reasons))
            used += (size_t)snprintf(reasons + used, sizeof(reasons) - used, "%s%s:%d: %s", used ? "; " : "",
                                     a->host, a->port, why);
    }
    if (c->nupstreams == 1) {
        /* not up yet: a plain Redis, reconnected to as usual; said, for the
         * reason may be the operator's (a TLS certificate refused) */
        px_log_warning(&core->log, "Upstream: topology auto: no answer from %s: taken for a plain Redis", reasons);
        return PX_TOPO_SINGLE;
    }
    snprintf(err, errlen, "topology auto: none of the upstreams answered, so what they are is unknown: %s", reasons);
    return -1;
}

const px_topology *px_sentinel_pick(px_core *k, char *err, size_t errlen)
{
    const px_config *cfg = k->cfg;
    if (px_config_check_topology(cfg, err, errlen) != 0) return NULL;
    int kind = (int)cfg->topology;
    if (kind == PX_TOPO_AUTO) {
        kind = probe_kind(k, err, errlen);
        if (kind < 0) return NULL;
        if (kind != PX_TOPO_SENTINEL && (*cfg->sentinel_master || *cfg->sentinel_password)) {
            snprintf(err, errlen, "topology auto: sentinel-master or sentinel-password is set, but %s is not a Sentinel",
                     cfg->upstream);
            return NULL;
        }
        px_log_notice(&k->log, "Upstream: topology auto: %s is %s", cfg->upstream,
                      kind == PX_TOPO_SENTINEL ? "a Sentinel"
                      : kind == PX_TOPO_CLUSTER  ? "a Redis Cluster node"
                                                 : "a Redis (or not up yet): topology single");
    }
    return kind == PX_TOPO_SENTINEL ? &px_sentinel_topology
           : kind == PX_TOPO_CLUSTER ? &px_cluster_topology
                                     : &px_topology_single;
}
