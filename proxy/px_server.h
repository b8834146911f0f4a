/*
 * px_server: one proxy instance — its event loop, listener, clients,
 * upstream router, counters and logger.  Everything that would be a global
 * in redis-server lives here and is passed down, so a later version can run
 * one px_server per thread.
 *
 * Writes are batched: modules append to a connection's output buffer and
 * call px_server_want_write(); an ev_prepare watcher (redis' beforeSleep)
 * flushes every such connection once per loop iteration, so a pipeline read
 * in one go is answered with one write.  Connections are never freed inside
 * their own callbacks: they are marked and reaped from that same watcher.
 */
#ifndef PX_SERVER_H
#define PX_SERVER_H

#include <ev.h>
#include <stdint.h>

#include "proxy/px_config.h"
#include "proxy/px_log.h"
#include "proxy/px_stats.h"

struct px_client;
struct px_upstream;

/* Client memory buckets: below 32 KB, then one per power of two (Redis'
 * CLIENT_MEM_USAGE_BUCKETS). */
#define PX_CLIENT_MEM_BUCKETS 19
struct px_router;
struct px_req;
struct px_l1;

typedef struct px_server {
    struct ev_loop *loop;
    px_config *cfg;      /* borrowed */
    px_log log;
    px_stats stats;
    struct px_router *router;
    struct px_l1 *l1;                /* NULL when "l1 no" */

    int listen_fd;
    ev_io accept_w;
    ev_timer accept_retry_w;         /* accepting paused: out of file descriptors */
    int accept_paused;               /* in such an episode (logged once) */
    long long maxclients_fd_cap;     /* the most clients the descriptor limit allows */
    ev_prepare flush_w;
    ev_timer cron_w;
    ev_signal sigterm_w, sigint_w, sighup_w;

    struct px_client *clients;       /* every connected client */
    struct px_client *clients_by_id; /* the same, in a uthash table by id */
    long nclients;
    /* Memory of client buffers (query, output, held replies), kept up to
     * date by px_client as they change, with the clients in buckets by
     * size (a power of two each), so the biggest are found without a walk
     * of every client, as Redis' client eviction does. */
    size_t clients_mem;
    struct px_client *mem_buckets[PX_CLIENT_MEM_BUCKETS];
    int clients_mem_warned;          /* over maxmemory-clients with nobody left to close: logged */
    uint64_t next_client_id;
    struct px_client *write_clients; /* clients with output to flush */
    struct px_upstream *write_ups;   /* upstreams with output to flush */
    struct px_client *closing;       /* clients to free from the loop */
    struct px_upstream *reap_ups;    /* closed pinned connections to free */

    struct px_req *req_free;         /* recycled request objects */
    long req_free_len;

    uint64_t rng;                    /* xorshift state for jitter */
    int argc;                        /* the command line, read again on reload */
    char **argv;
    uint64_t reloads;
    double start_time;
    int shutting_down;
    double shutdown_deadline;
    int exit_code;
} px_server;

/* Create from cfg (borrowed, must outlive the server); listens.  NULL + err on failure. */
px_server *px_server_create(px_config *cfg, char *err, size_t errlen);
/* Run until SIGTERM/SIGINT; returns the exit code. */
int px_server_run(px_server *s);
void px_server_destroy(px_server *s);
/*
 * Read the config file and command line again (SIGHUP, HOTPROXY CONFIG
 * RELOAD) and apply what can change while running; clients stay connected.
 * Returns 0, or -1 with err set (the running config is unchanged).
 */
int px_server_reload(px_server *s, char *err, size_t errlen);

/* Begin a graceful stop, as SIGTERM does. */
void px_server_shutdown(px_server *s);

/* Queue c (or u) for the flush before the loop sleeps. */
void px_server_want_write_client(px_server *s, struct px_client *c);
void px_server_want_write_upstream(px_server *s, struct px_upstream *u);

/* The connected client with that id (not one being closed), or NULL. */
struct px_client *px_server_client(px_server *s, uint64_t id);

/* The "Hotproxy" INFO section's values now (the registry's SERVER group). */
void px_server_stats(px_server *s, px_stats_server *v);

double px_now(px_server *s); /* seconds, from the loop's clock (read when its iteration began) */
/* The loop's clock read again now (ev_now_update): for a time that must not
 * be an iteration old, after work that may have taken long. */
double px_now_fresh(px_server *s);

#endif
