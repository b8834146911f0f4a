/*
 * px_router: where a command goes.
 *
 * The one interface between the client side and the topology behind it.
 * Today's topology is a single Redis server; a Sentinel topology (the pool
 * follows the master Sentinel names) and a Cluster topology (a pool per node,
 * chosen by the key's hash slot from the command table's key positions) plug
 * in behind the same three calls.
 */
#ifndef PX_ROUTER_H
#define PX_ROUTER_H

#include "proxy/px_buf.h"

struct px_server;
struct px_pool;
struct px_client;
struct px_command;

typedef struct px_router px_router;

typedef struct px_route_args {
    const struct px_command *cmd; /* NULL: unknown command */
    int argc;
    const char *const *argv;
    const size_t *argvlen;
} px_route_args;

struct px_router {
    const char *topology; /* "single", later "sentinel", "cluster" */
    /* The pool that should serve this command. */
    struct px_pool *(*route)(px_router *r, struct px_client *c, const px_route_args *a);
    void (*cron)(px_router *r, double now);
    void (*info)(px_router *r, px_buf *out);
    void (*destroy)(px_router *r);
};

/* The topology the config describes. */
px_router *px_router_create(struct px_server *s, char *err, size_t errlen);

#endif
