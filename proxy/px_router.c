/*
 * px_router: topologies behind the routing interface.  See px_router.h.
 * "single": every command goes to the one pool for the configured upstream.
 */
#include "proxy/px_router.h"

#include <stdlib.h>

#include "proxy/px_server.h"
#include "proxy/px_upstream.h"

typedef struct single_router {
    px_router base;
    px_server *srv;
    px_pool *pool;
} single_router;

static px_pool *single_route(px_router *r, struct px_client *c, const px_route_args *a)
{
    (void)c;
    (void)a;
    return ((single_router *)r)->pool;
}

static void single_cron(px_router *r, double now)
{
    single_router *sr = (single_router *)r;
    px_pool_cron(sr->pool, now, sr->srv->cfg->upstream_timeout);
}

static void single_info(px_router *r, px_buf *out)
{
    px_stats_router v = {.topology = r->topology};
    px_stats_render_group(PX_STATS_G_ROUTER, &v, out);
    px_pool_info(((single_router *)r)->pool, out);
}

static void single_destroy(px_router *r)
{
    px_pool_destroy(((single_router *)r)->pool);
    free(r);
}

px_router *px_router_create(px_server *s, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    single_router *r = calloc(1, sizeof(*r));
    if (!r) abort();
    r->base.topology = "single";
    r->base.route = single_route;
    r->base.cron = single_cron;
    r->base.info = single_info;
    r->base.destroy = single_destroy;
    r->srv = s;
    r->pool = px_pool_create(s, s->cfg->upstream_host, (int)s->cfg->upstream_port, (int)s->cfg->upstream_connections);
    return &r->base;
}
