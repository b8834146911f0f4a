/*
 * px_router: the pool set, and the topologies behind the routing interface.
 * See px_router.h.  "single": every command goes to the one pool for the
 * configured upstream; "sentinel" is px_sentinel's.
 */
#include "proxy/px_router.h"

#include <stdlib.h>
#include <string.h>

px_pool *px_router_add_pool(px_router *r, const char *host, int port)
{
    px_pool *p = px_pool_create(r->core, host, port, (int)r->core->cfg->upstream_connections);
    r->pools = realloc(r->pools, sizeof(*r->pools) * (size_t)(r->npools + 1));
    if (!r->pools) abort();
    r->pools[r->npools++] = p;
    if (r->listener) r->listener(r, p, PX_POOL_ADDED, r->listener_arg);
    return p;
}

px_pool *px_router_add_control_pool(px_router *r, const char *host, int port)
{
    px_pool *p = px_pool_create(r->core, host, port, 0);
    r->control = realloc(r->control, sizeof(*r->control) * (size_t)(r->ncontrol + 1));
    if (!r->control) abort();
    r->control[r->ncontrol++] = p;
    return p;
}

/* Take p out of a list; 1 if it was there. */
static int list_take(px_pool **v, int *n, px_pool *p)
{
    int i;
    for (i = 0; i < *n && v[i] != p; i++) continue;
    if (i == *n) return 0;
    memmove(&v[i], &v[i + 1], sizeof(*v) * (size_t)(*n - i - 1));
    (*n)--;
    return 1;
}

void px_router_remove_pool(px_router *r, px_pool *p, const char *why)
{
    int data = 0;
    for (int i = 0; i < r->npools; i++) data |= r->pools[i] == p;
    if (data && r->listener) r->listener(r, p, PX_POOL_REMOVED, r->listener_arg);
    if (!list_take(r->pools, &r->npools, p) && !list_take(r->control, &r->ncontrol, p)) return;
    px_log_notice(&r->core->log, "Upstream: %s removed (%s)", p->name, why);
    /* its requests are answered with errors, its owners told, as its connections close */
    px_pool_retire(p, why);
    px_pool_destroy(p);
}

void px_router_repoint(px_router *r, px_pool *p, const char *host, int port, const char *why)
{
    (void)r;
    px_pool_repoint(p, host, port, why);
}

void px_router_keys_moved(px_router *r, px_pool *p)
{
    if (r->listener) r->listener(r, p, PX_POOL_KEYS_MOVED, r->listener_arg);
    if (r->moved_fn) r->moved_fn(r, p, r->moved_arg);
}

void px_router_on_keys_moved(px_router *r, void (*fn)(px_router *r, px_pool *p, void *arg), void *arg)
{
    r->moved_fn = fn;
    r->moved_arg = arg;
}

void px_router_listen(px_router *r, px_pool_listener fn, void *arg)
{
    r->listener = fn;
    r->listener_arg = arg;
    for (int i = 0; fn && i < r->npools; i++) fn(r, r->pools[i], PX_POOL_ADDED, arg);
}

px_pool *px_router_default(px_router *r)
{
    px_route_args a = {NULL, 0, NULL, NULL, NULL};
    return px_router_route(r, &a);
}

void px_router_flush(px_router *r)
{
    for (int i = 0; i < r->npools; i++) px_pool_flush(r->pools[i]);
    for (int i = 0; i < r->ncontrol; i++) px_pool_flush(r->control[i]);
}

void px_router_reap(px_router *r)
{
    for (int i = 0; i < r->npools; i++) px_pool_reap(r->pools[i]);
    for (int i = 0; i < r->ncontrol; i++) px_pool_reap(r->control[i]);
}

void px_router_cron(px_router *r, double now)
{
    for (int i = 0; i < r->npools; i++) px_pool_cron(r->pools[i], now, r->core->cfg->upstream_timeout);
    for (int i = 0; i < r->ncontrol; i++) px_pool_cron(r->control[i], now, r->core->cfg->upstream_timeout);
    if (r->topo->cron) r->topo->cron(r, now);
}

void px_router_stats(px_router *r, px_stats_router *v)
{
    memset(v, 0, sizeof(*v));
    v->topology = r->topo->name;
    v->upstream_tls = r->core->cfg->upstream_tls ? "yes" : "no";
    v->upstream_tls_failures = r->core->upstream_tls_failures;
}

void px_router_info(px_router *r, px_buf *out)
{
    px_stats_router v;
    px_router_stats(r, &v);
    px_stats_render_group(PX_STATS_G_ROUTER, &v, out);
    if (r->topo->info) r->topo->info(r, out);
    for (int i = 0; i < r->npools; i++) px_pool_info(r->pools[i], out);
}

void px_router_destroy(px_router *r)
{
    if (!r) return;
    if (r->topo->destroy) r->topo->destroy(r);
    for (int i = 0; i < r->npools; i++) px_pool_destroy(r->pools[i]);
    for (int i = 0; i < r->ncontrol; i++) px_pool_destroy(r->control[i]);
    free(r->pools);
    free(r->control);
    free(r);
}

/* "single": one pool, the configured upstream's. */
static px_pool *single_route(px_router *r, const px_route_args *a)
{
    (void)a;
    return r->npools ? r->pools[0] : NULL;
}

static void single_start(px_router *r)
{
    px_router_add_pool(r, r->core->cfg->upstream_host, (int)r->core->cfg->upstream_port);
}

const px_topology px_topology_single = {
    .name = "single",
    .start = single_start,
    .route = single_route,
};

px_router *px_router_create(px_core *k, const px_topology *topo, char *err, size_t errlen)
{
    px_router *r = calloc(1, sizeof(*r));
    if (!r) abort();
    r->core = k;
    r->topo = topo;
    if (topo->setup && topo->setup(r, err, errlen) != 0) {
        px_router_destroy(r);
        return NULL;
    }
    return r;
}

void px_router_start(px_router *r)
{
    r->topo->start(r);
}
