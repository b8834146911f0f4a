/*
 * px_server: one proxy instance — its event loop, listener, clients,
 * upstream router, counters and logger.  Everything that would be a global
 * in redis-server lives here and is passed down, so a later version can run
 * one px_server per thread.
 *
 * Writes are batched: modules append to a connection's output buffer and
 * queue it on its layer's write list (a pool's, the client set's); an
 * ev_prepare watcher (redis' beforeSleep) flushes every such connection once
 * per loop iteration, so a pipeline read in one go is answered with one
 * write.  Connections are never freed inside their own callbacks: they are
 * marked and reaped from that same watcher.
 */
#ifndef PX_SERVER_H
#define PX_SERVER_H

#include <ev.h>
#include <stdint.h>

#include "proxy/px_client.h"
#include "proxy/px_core.h"

struct px_router;
struct px_l1;
struct px_metrics;

typedef struct px_server {
    px_core core;                    /* loop, clock, config, log, counters */
    struct px_router *router;
    struct px_l1 *l1;                /* NULL when "l1 no" */
    struct px_metrics *metrics;      /* the Prometheus page; NULL when metrics-port is 0 */

    int listen_fd;
    ev_io accept_w;
    int tls_listen_fd;               /* tls-port's, -1 when it is 0 */
    ev_io tls_accept_w;
    px_tls_ctx *tls_ctx;             /* what tls-port's new clients get; a reload replaces it */
    ev_timer accept_retry_w;         /* accepting paused: out of file descriptors */
    int accept_paused;               /* in such an episode (logged once) */
    long long maxclients_fd_cap;     /* the most clients the descriptor limit allows */
    ev_prepare flush_w;
    ev_timer cron_w;
    ev_signal sigterm_w, sigint_w, sighup_w;

    px_clients clients;              /* every client, and what their layer shares */
    /* refuse-command / allow-shutdown, one byte per command of the table
     * (px_command_index), worked out once per config, not per command */
    unsigned char *refused;

    int argc;                        /* the command line, read again on reload */
    char **argv;
    uint64_t reloads;
    double shutdown_deadline;
    int exit_code;
} px_server;

/* Create from cfg (borrowed, must outlive the server); listens.  Its
 * clients' commands go to ops (px_dispatch_ops), with the server as their
 * argument.  NULL + err on failure. */
px_server *px_server_create(px_config *cfg, const px_client_ops *ops, char *err, size_t errlen);
/* Run until SIGTERM/SIGINT; returns the exit code. */
int px_server_run(px_server *s);
void px_server_destroy(px_server *s);
/*
 * Read the config file and command line again (SIGHUP, HOTPROXY CONFIG
 * RELOAD) and apply what can change while running; clients stay connected.
 * With tls-port open, the TLS context is made again from the tls-* files
 * (changed or not: a certificate renewed in place is read again) for the
 * clients that connect from then on.
 * Returns 0, or -1 with err set (the running config and TLS context are
 * unchanged).
 */
int px_server_reload(px_server *s, char *err, size_t errlen);

/* Begin a graceful stop, as SIGTERM does. */
void px_server_shutdown(px_server *s);

/* The "Hotproxy" INFO section's values now (the registry's SERVER group). */
void px_server_stats(px_server *s, px_stats_server *v);

#endif
