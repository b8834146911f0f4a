/*
 * px_router: where a command goes, and the set of pools behind hotproxy.
 *
 * The one interface between the client side and the topology behind it.
 * The router owns every pool (one per server it talks to), maps a command
 * to the pool that serves it, sees each forwarded reply before the client
 * does (a Cluster redirect is retried there, never shown), and lets pools be
 * added, removed and re-pointed while running.  A topology is a set of
 * callbacks behind it: "single" (one pool, the configured upstream) is the
 * first; Sentinel (the pool follows the master Sentinel names, px_sentinel)
 * is the second, and Cluster (a pool per master, chosen by hash slot,
 * px_cluster) the third.  Whoever creates the router hands it the topology
 * (the topologies know the router, never the reverse).
 *
 * Whoever keeps something per pool (the L1: a tracking link per pool) walks
 * the set (px_router_pool) and hears of pools added and removed
 * (px_router_listen).
 */
#ifndef PX_ROUTER_H
#define PX_ROUTER_H

#include "proxy/px_buf.h"
#include "proxy/px_core.h"
#include "proxy/px_upstream.h"

struct px_command;

typedef struct px_router px_router;

enum { PX_RESENDS_NONE, PX_RESENDS_ALL, PX_RESENDS_WRITES };

typedef struct px_route_args {
    const struct px_command *cmd; /* NULL: unknown command */
    int argc;
    const char *const *argv;
    const size_t *argvlen;
    /* route may set *why (when not NULL) to the error the client gets when
     * it returns NULL for a reason of the command's own (Cluster's
     * CROSSSLOT), without the leading '-' */
    const char **why;
} px_route_args;

/* A topology: what decides routes and keeps the pool set up to date. */
typedef struct px_topology {
    const char *name; /* "single", "sentinel", "cluster" */
    /* reply may send a request again elsewhere, so a forwarded request
     * keeps a copy of its bytes (px_upreq.raw): PX_RESENDS_ALL (a Cluster
     * redirect), PX_RESENDS_WRITES (a write a demoted master refused with
     * -READONLY: only writes can be refused so) */
    int resends;
    /* Optional, from px_router_create: the topology's own state
     * (r->topo_state), before any pool; -1 with err set stops startup. */
    int (*setup)(px_router *r, char *err, size_t errlen);
    /* Add the first pools (px_router_start). */
    void (*start)(px_router *r);
    /* The pool that should serve this command (NULL: none can). */
    px_pool *(*route)(px_router *r, const px_route_args *a);
    /* Optional: a forwarded reply before its requester sees it.  Returns 1
     * when the topology took the request over (to retry or redirect it). */
    int (*reply)(px_router *r, px_upreq *q, px_upstream *u, const char *reply, size_t len);
    /* Optional: a forwarded request answered with the error of u failing
     * (reply: that error).  Returns 1 when the topology took it over (a
     * read sent again where its keys live now). */
    int (*failed)(px_router *r, px_upreq *q, px_upstream *u, const char *reply, size_t len);
    void (*cron)(px_router *r, double now);
    void (*info)(px_router *r, px_buf *out); /* its own INFO lines, before the pools' */
    void (*destroy)(px_router *r);           /* its own state (the pools are the router's) */
    /* Optional, for a topology that spreads keys over servers: the shard of
     * a key (a Cluster hash slot), and the pool serving a shard (NULL: not
     * known now).  Keys of one shard may go in one command. */
    int (*shard)(px_router *r, const char *key, size_t len);
    int nshards; /* shards are 0 .. nshards - 1 */
    px_pool *(*shard_pool)(px_router *r, int shard);
    /* Optional: 1 while commands should wait rather than be routed (a
     * Cluster's first map not in yet); the topology bounds how long. */
    int (*waiting)(px_router *r);
    /* Optional: a server said a shard left it (Redis 7's sunsubscribe of a
     * shard channel whose slot moved): read where it went (a Cluster's map,
     * again). */
    void (*shard_stale)(px_router *r, int shard);
    /* Optional: a redirection a command got on a connection of a client's
     * own (u): the pool it names, with *asking set when that pool must be
     * sent ASKING first (NULL: none, the reply is the client's).  The map
     * learns from it as from one on a shared connection. */
    px_pool *(*redirected)(px_router *r, px_upstream *u, const char *reply, size_t len, int *asking);
} px_topology;

/* Told when a pool joins (event PX_POOL_ADDED) or leaves (PX_POOL_REMOVED:
 * still valid during the call) the set, or when keys p served may now be
 * served by another pool (PX_POOL_KEYS_MOVED: a Cluster slot changed owner,
 * so what was read through p is watched there no more). */
enum { PX_POOL_REMOVED, PX_POOL_ADDED, PX_POOL_KEYS_MOVED };
typedef void (*px_pool_listener)(px_router *r, px_pool *p, int event, void *arg);

struct px_router {
    px_core *core;
    const px_topology *topo;
    void *topo_state;
    px_pool **pools;         /* the data pools: routed to, listed, tracked by the L1 */
    int npools;
    px_pool **control;       /* the topology's own (Sentinels, a Cluster's seeds): flushed and aged, not routed to */
    int ncontrol;
    px_pool_listener listener;
    void *listener_arg;
    int waited; /* px_router_waiting said 1 since px_router_wait_over last said so */
    void (*moved_fn)(px_router *r, px_pool *p, void *arg); /* px_router_on_keys_moved's */
    void *moved_arg;
};

/* "single": every command to the one configured upstream. */
extern const px_topology px_topology_single;

/* A router for topo (which the caller picked from the config: px_sentinel's
 * px_sentinel_pick does), with no pool yet: listeners come first
 * (px_router_listen), so the L1 sets up every connection's tracking from its
 * first handshake; then px_router_start adds the pools.  NULL with err set
 * when the topology's setup failed. */
px_router *px_router_create(px_core *k, const px_topology *topo, char *err, size_t errlen);
void px_router_start(px_router *r);
void px_router_destroy(px_router *r);

static inline px_pool *px_router_route(px_router *r, const px_route_args *a) { return r->topo->route(r, a); }
/* A forwarded request's reply, before its requester sees it: 1 when the
 * topology took the request over (it then completes it itself). */
static inline int px_router_reply(px_router *r, px_upreq *q, px_upstream *u, const char *reply, size_t len)
{
    return r->topo->reply ? r->topo->reply(r, q, u, reply, len) : 0;
}
/* A forwarded request's connection failed (reply: the error it gets): 1
 * when the topology took the request over. */
static inline int px_router_failed(px_router *r, px_upreq *q, px_upstream *u, const char *reply, size_t len)
{
    return r->topo->failed ? r->topo->failed(r, q, u, reply, len) : 0;
}
/* The shard of a key, -1 when the topology does not spread keys (one
 * server holds them all); the pool of a shard. */
static inline int px_router_shard(px_router *r, const char *key, size_t len)
{
    return r->topo->shard ? r->topo->shard(r, key, len) : -1;
}
static inline int px_router_sharded(const px_router *r) { return r->topo->shard != NULL; }
static inline px_pool *px_router_shard_pool(px_router *r, int shard) { return r->topo->shard_pool(r, shard); }
/* 1 while commands should wait for the topology (the caller holds them
 * unread); then, once, px_router_wait_over says 1: wake whoever waited. */
static inline int px_router_waiting(px_router *r)
{
    int w = r->topo->waiting && r->topo->waiting(r);
    r->waited |= w;
    return w;
}
static inline int px_router_wait_over(px_router *r)
{
    if (!r->waited || px_router_waiting(r)) return 0;
    r->waited = 0;
    return 1;
}
static inline void px_router_shard_stale(px_router *r, int shard)
{
    if (r->topo->shard_stale) r->topo->shard_stale(r, shard);
}
static inline px_pool *px_router_redirected(px_router *r, px_upstream *u, const char *reply, size_t len, int *asking)
{
    return r->topo->redirected ? r->topo->redirected(r, u, reply, len, asking) : NULL;
}
/* The pool that serves commands naming no key (a pinned connection for
 * CLIENT TRACKING's redirect target, the L1's first link). */
px_pool *px_router_default(px_router *r);

/* The pool set: add one for a server, remove one (its requests get errors
 * naming why, its pinned connections' owners are told, px_pool_retire; not
 * from a callback of one of its own connections: from the cron), re-point
 * one at another address (px_pool_repoint). */
px_pool *px_router_add_pool(px_router *r, const char *host, int port);
void px_router_remove_pool(px_router *r, px_pool *p, const char *why);
void px_router_repoint(px_router *r, px_pool *p, const char *host, int port, const char *why);
/* A pool the topology talks to for itself (a Sentinel): kept apart from
 * the data pools (nothing is routed to it, the L1 does not track it), but
 * flushed, reaped and aged by the router like them; removed with
 * px_router_remove_pool. */
px_pool *px_router_add_control_pool(px_router *r, const char *host, int port);
/* A topology says keys p served moved to another pool (PX_POOL_KEYS_MOVED). */
void px_router_keys_moved(px_router *r, px_pool *p);
/* One listener for the set's changes; it is told of the pools already in it. */
void px_router_listen(px_router *r, px_pool_listener fn, void *arg);
/* One more, told of PX_POOL_KEYS_MOVED only, after the listener: the client
 * side (a client tracking keys on a Cluster read some through p). */
void px_router_on_keys_moved(px_router *r, void (*fn)(px_router *r, px_pool *p, void *arg), void *arg);

/* Before the loop sleeps: every pool's writes, then (after the clients')
 * the closed connections to free. */
void px_router_flush(px_router *r);
void px_router_reap(px_router *r);
void px_router_cron(px_router *r, double now);
/* The router's values now (the registry's ROUTER group); px_router_info
 * writes them, the topology's and every pool's as INFO lines. */
void px_router_stats(px_router *r, px_stats_router *v);
void px_router_info(px_router *r, px_buf *out);

#endif
