/*
 * px_server: the listener, the loop's housekeeping and the process's signals.
 * See px_server.h.
 */
#include "proxy/px_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/px_client.h"
#include "proxy/px_command.h"
#include "proxy/px_l1.h"
#include "proxy/px_metrics.h"
#include "proxy/px_router.h"
#include "proxy/px_sentinel.h"
#include "proxy/px_tls.h"
#include "proxy/px_upstream.h"

#define CRON_INTERVAL 0.1
/* Descriptors kept for what is not a client or its pinned connection: the
 * listener, the log, stdio, shared upstream connections, the invalidation
 * link, what libev and libc open (Redis' CONFIG_MIN_RESERVED_FDS is 32). */
#define RESERVED_FDS 32
#define ACCEPT_RETRY 0.1 /* seconds without accepting after EMFILE/ENFILE */

void px_server_stats(px_server *s, px_stats_server *v)
{
    memset(v, 0, sizeof(*v));
    v->version = HOTPROXY_VERSION;
    v->process_id = (int64_t)getpid();
    v->tcp_port = s->core.cfg->port;
    v->tls_port = s->tls_listen_fd >= 0 ? s->core.cfg->tls_port : 0;
    v->tls_cert_not_after = s->tls_ctx ? px_tls_ctx_not_after(s->tls_ctx) : 0;
    v->uptime_in_seconds = (int64_t)(px_now(&s->core) - s->core.start_time);
    v->config_file = s->core.cfg->config_file ? s->core.cfg->config_file : "";
    v->connected_clients = s->clients.nclients;
    v->maxclients = s->core.cfg->maxclients;
}

/*
 * The Prometheus page: every group of the registry from the same views INFO
 * reads, a pool's and a lane's labelled by the pool's upstream (and lane
 * number), then the commands' calls and latency histograms.
 */
static void metrics_page(void *arg, px_buf *out)
{
    px_server *s = arg;
    const char *none = "";
    const void *view;
    px_stats_server sv;
    px_server_stats(s, &sv);
    view = &sv;
    px_stats_prom_group(PX_STATS_G_SERVER, &view, &none, 1, out);
    view = &s->core.stats;
    px_stats_prom_group(PX_STATS_G_STATS, &view, &none, 1, out);
    px_stats_router rv;
    px_router_stats(s->router, &rv);
    view = &rv;
    px_stats_prom_group(PX_STATS_G_ROUTER, &view, &none, 1, out);

    int np = s->router->npools, nl = 0;
    px_stats_pool *pv = calloc((size_t)np + 1, sizeof(*pv));
    const void **views = calloc((size_t)np + 1, sizeof(*views));
    char **labels = calloc((size_t)np + 1, sizeof(*labels));
    if (!pv || !views || !labels) abort();
    for (int i = 0; i < np; i++) {
        px_pool_stats(s->router->pools[i], &pv[i]);
        px_buf b = {0};
        px_buf_append(&b, "pool=\"", 6);
        px_stats_prom_escape(&b, pv[i].upstream ? pv[i].upstream : "");
        px_buf_append(&b, "\"", 2); /* with its NUL */
        labels[i] = b.data;
        views[i] = &pv[i];
        nl += pv[i].lane.n;
    }
    px_stats_prom_group(PX_STATS_G_POOL, views, (const char *const *)labels, np, out);
    const void **lviews = calloc((size_t)nl + 1, sizeof(*lviews));
    char **llabels = calloc((size_t)nl + 1, sizeof(*llabels));
    if (!lviews || !llabels) abort();
    for (int i = 0, k = 0; i < np; i++)
        for (int j = 0; j < pv[i].lane.n; j++, k++) {
            px_buf b = {0};
            px_buf_appendf(&b, "%s,lane=\"%d\"", labels[i], j);
            px_buf_append(&b, "", 1);
            llabels[k] = b.data;
            lviews[k] = &pv[i].lane.v[j];
        }
    px_stats_prom_group(PX_STATS_G_LANE, lviews, (const char *const *)llabels, nl, out);
    for (int k = 0; k < nl; k++) free(llabels[k]);
    for (int i = 0; i < np; i++) {
        free(labels[i]);
        free(pv[i].lane.v);
    }
    free(lviews);
    free(llabels);
    free(views);
    free(labels);
    free(pv);

    px_stats_l1 lv;
    px_l1_stats(s->l1, &lv);
    view = &lv;
    px_stats_prom_group(PX_STATS_G_L1, &view, &none, 1, out);
    px_stats_prom_commands(&s->core.stats, out);
}

static int all_clients_idle(px_server *s)
{
    for (px_client *c = s->clients.clients; c; c = c->next)
        if (!(c->flags & PX_CLIENT_CLOSING) && !px_client_idle(c)) return 0;
    return 1;
}

/* Before the loop sleeps: write what this iteration produced, free what
 * was closed, and finish a graceful shutdown once nothing is in flight. */
static void flush_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    px_server *s = w->data;
    (void)revents;
    /* Upstreams first: their writes are what later replies wait for. */
    px_router_flush(s->router);
    px_lat_flush(&s->core); /* the iteration's replies are complete: time them before they are written */
    px_clients_flush(&s->clients);
    px_router_reap(s->router);
    px_clients_reap(&s->clients);
    px_lat_flush(&s->core); /* any answered since, so none waits past the loop's sleep */
    if (s->core.shutting_down && (all_clients_idle(s) || px_now(&s->core) >= s->shutdown_deadline)) ev_break(loop, EVBREAK_ALL);
}

static void cron_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    px_server *s = w->data;
    double now = ev_now(loop);
    (void)revents;
    px_router_cron(s->router, now);
    px_l1_cron(s->l1, now);
    /* commands that waited for the topology (a Cluster's first map) go on */
    if (px_router_wait_over(s->router))
        for (px_client *c = s->clients.clients; c; c = c->next)
            if (c->flags & PX_CLIENT_HOLD) px_client_resume(c);
    if (s->core.cfg->timeout > 0) {
        for (px_client *c = s->clients.clients; c; c = c->next) {
            if (c->flags & PX_CLIENT_CLOSING || c->ninflight > 0) continue;
            if (now - c->last_active > (double)s->core.cfg->timeout) {
                s->core.stats.idle_timeouts++;
                px_client_close(c, "idle timeout");
            }
        }
    }
}

/*
 * Out of file descriptors, the pending connection stays in the backlog and
 * the listener stays readable: accepting again at once fails again, for ever
 * (a spinning loop and a log line each time).  So stop accepting for a
 * moment, and say so once per episode.
 */
static void accept_pause(px_server *s, int err)
{
    if (!s->accept_paused) {
        s->accept_paused = 1;
        s->core.stats.accept_fd_exhaustions++;
        px_log_warning(&s->core.log,
                       "Accepting client connection: %s; not accepting for %d ms at a time until descriptors are "
                       "free (raise 'ulimit -n' or lower maxclients)",
                       strerror(err), (int)(ACCEPT_RETRY * 1000));
    }
    ev_io_stop(s->core.loop, &s->accept_w);
    ev_io_stop(s->core.loop, &s->tls_accept_w);
    ev_timer_set(&s->accept_retry_w, ACCEPT_RETRY, 0.);
    ev_timer_start(s->core.loop, &s->accept_retry_w);
}

static void accept_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    px_server *s = w->data;
    (void)revents;
    if (!s->core.shutting_down && s->listen_fd >= 0) ev_io_start(loop, &s->accept_w);
    if (!s->core.shutting_down && s->tls_listen_fd >= 0) ev_io_start(loop, &s->tls_accept_w);
}

/* A client on port, or on tls-port (w is tls_accept_w): the same, but for TLS. */
static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    px_server *s = w->data;
    int tls = w == &s->tls_accept_w;
    (void)loop;
    (void)revents;
    long long maxclients = s->core.cfg->maxclients < s->maxclients_fd_cap ? s->core.cfg->maxclients : s->maxclients_fd_cap;
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage sa;
        socklen_t salen = sizeof(sa);
        int fd = accept4(w->fd, (struct sockaddr *)&sa, &salen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR) continue;
            if (errno == EMFILE || errno == ENFILE) accept_pause(s, errno);
            else if (errno != EAGAIN && errno != EWOULDBLOCK)
                px_log_warning(&s->core.log, "Accepting client connection: %s", strerror(errno));
            return;
        }
        if (s->accept_paused) {
            s->accept_paused = 0;
            px_log_notice(&s->core.log, "Accepting client connections again");
        }
        char host[INET6_ADDRSTRLEN] = "?", addr[64];
        int port = 0;
        if (sa.ss_family == AF_INET) {
            struct sockaddr_in *in = (struct sockaddr_in *)&sa;
            inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
            port = ntohs(in->sin_port);
        } else if (sa.ss_family == AF_INET6) {
            struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&sa;
            inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
            port = ntohs(in6->sin6_port);
        }
        snprintf(addr, sizeof(addr), "%s:%d", host, port);
        if (s->clients.nclients >= maxclients) {
            static const char msg[] = "-ERR max number of clients reached\r\n";
            ssize_t n = tls ? 0 : write(fd, msg, sizeof(msg) - 1); /* no TLS yet to say it in */
            (void)n;
            close(fd);
            s->core.stats.rejected_connections++;
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (s->core.cfg->tcp_keepalive > 0) {
            int idle = (int)s->core.cfg->tcp_keepalive;
            setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
            setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
        }
        s->core.stats.connections_received++;
        px_client *c = px_client_create(&s->clients, fd, addr);
        if (tls) px_client_tls_accept(c, s->tls_ctx);
    }
}

/* Descriptors needed for m clients: each may hold a pinned connection too,
 * up to upstream-max-pinned (+ the spares kept for reuse). */
static long long fds_for(const px_config *cfg, long long m)
{
    long long pinned = cfg->upstream_max_pinned + cfg->upstream_spare;
    return m + (pinned < m ? pinned : m) + RESERVED_FDS + 4 * cfg->upstream_connections;
}

/*
 * As Redis' adjustOpenFilesLimit: raise RLIMIT_NOFILE to what maxclients
 * needs if the system lets us; else keep maxclients to what the limit
 * allows, with a warning, so clients past it get "max number of clients
 * reached" instead of the process running out of descriptors.
 */
static void adjust_open_files_limit(px_server *s)
{
    const px_config *cfg = s->core.cfg;
    long long want = fds_for(cfg, cfg->maxclients);
    struct rlimit rl;
    int setrlimit_error = 0;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        px_log_warning(&s->core.log, "Unable to obtain the current NOFILE limit (%s), assuming 1024 and setting the max "
                                "clients configuration accordingly.", strerror(errno));
        rl.rlim_cur = rl.rlim_max = 1024;
    }
    rlim_t old = rl.rlim_cur, limit = old;
    if (old != RLIM_INFINITY && old < (rlim_t)want) {
        /* the whole need (root may raise the hard limit too), else the hard limit */
        struct rlimit nl = {(rlim_t)want, rl.rlim_max != RLIM_INFINITY && rl.rlim_max < (rlim_t)want ? (rlim_t)want
                                                                                                      : rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &nl) == 0) {
            limit = (rlim_t)want;
        } else {
            setrlimit_error = errno;
            nl.rlim_cur = nl.rlim_max = rl.rlim_max;
            if (rl.rlim_max > old && setrlimit(RLIMIT_NOFILE, &nl) == 0) limit = rl.rlim_max;
        }
        if (limit > old)
            px_log_notice(&s->core.log, "Increased maximum number of open files to %llu (it was originally set to %llu).",
                          (unsigned long long)limit, (unsigned long long)old);
    }
    if (limit == RLIM_INFINITY || limit >= (rlim_t)LLONG_MAX / 4) {
        s->maxclients_fd_cap = LLONG_MAX;
        return;
    }
    long long avail = (long long)limit, pinned = cfg->upstream_max_pinned + cfg->upstream_spare;
    long long reserve = RESERVED_FDS + 4 * cfg->upstream_connections;
    long long cap = avail - reserve - pinned >= pinned ? avail - reserve - pinned : (avail - reserve) / 2;
    if (cap < 1) cap = 1;
    s->maxclients_fd_cap = cap;
    if (cap >= cfg->maxclients) return;
    px_log_warning(&s->core.log, "You requested maxclients of %lld requiring at least %lld max file descriptors.",
                   cfg->maxclients, want);
    if (setrlimit_error)
        px_log_warning(&s->core.log, "Server can't set maximum open files to %lld because of OS error: %s.", want,
                       strerror(setrlimit_error));
    px_log_warning(&s->core.log,
                   "Current maximum open files is %llu. maxclients has been reduced to %lld to compensate for low "
                   "ulimit (each client may also hold an upstream connection of its own). If you need higher "
                   "maxclients increase 'ulimit -n'.",
                   (unsigned long long)limit, cap);
}

/* A certificate that expired, or soon will, still loads (as in Redis): say
 * so, since clients refuse it, and each refusal is only a handshake failure. */
static void check_expiry(px_server *s, const px_tls_ctx *x)
{
    long long end = px_tls_ctx_not_after(x), left = end - (long long)time(NULL);
    if (!end) return;
    if (left <= 0)
        px_log_warning(&s->core.log, "tls-cert-file %s has expired (%lld days ago): TLS clients will refuse it",
                       s->core.cfg->tls_cert_file, -left / 86400);
    else if (left < 14 * 86400)
        px_log_warning(&s->core.log, "tls-cert-file %s expires in %lld day(s)", s->core.cfg->tls_cert_file, left / 86400);
}

/* port, and tls-port on the same addresses when it is set (its context
 * made first, so bad certificates stop the start with the reason). */
static int listen_on(px_server *s, char *err, size_t errlen)
{
    const px_config *cfg = s->core.cfg;
    s->listen_fd = px_listen_tcp(cfg->bind, cfg->port, (int)cfg->tcp_backlog, "bind",
                                 "Could not create server TCP listening socket", err, errlen);
    if (s->listen_fd < 0) return -1;
    if (!cfg->tls_port) return 0;
    if (!(s->tls_ctx = px_tls_server_ctx(cfg, err, errlen))) return -1;
    check_expiry(s, s->tls_ctx);
    s->tls_listen_fd = px_listen_tcp(cfg->bind, cfg->tls_port, (int)cfg->tcp_backlog, "bind",
                                     "Could not create server TLS listening socket", err, errlen);
    return s->tls_listen_fd < 0 ? -1 : 0;
}

static void signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    px_server *s = w->data;
    (void)loop;
    (void)revents;
    if (w->signum == SIGHUP) {
        char err[1024];
        if (px_log_reopen(&s->core.log) != 0)
            px_log_warning(&s->core.log, "SIGHUP: cannot reopen the log file: %s", strerror(errno));
        else
            px_log_notice(&s->core.log, "SIGHUP: log file reopened");
        /* without a config file there is still the command line to read */
        if (px_server_reload(s, err, sizeof(err)) != 0)
            px_log_warning(&s->core.log, "SIGHUP: config not reloaded: %s", err);
        return;
    }
    if (s->core.shutting_down) {
        px_log_warning(&s->core.log, "Received %s again: exiting now", w->signum == SIGINT ? "SIGINT" : "SIGTERM");
        ev_break(s->core.loop, EVBREAK_ALL);
        return;
    }
    px_log_notice(&s->core.log, "Received %s scheduling shutdown...", w->signum == SIGINT ? "SIGINT" : "SIGTERM");
    px_server_shutdown(s);
}

/* The config's refused commands, by table index (px_server.refused). */
static void refused_from_config(px_server *s)
{
    int n = px_command_count();
    if (!s->refused && !(s->refused = calloc((size_t)n + 1, 1))) abort();
    for (int i = 0; i < n; i++) s->refused[i] = (unsigned char)px_config_refused(s->core.cfg, px_command_at(i)->name);
}

int px_server_reload(px_server *s, char *err, size_t errlen)
{
    px_config fresh;
    char out[64], restart[512];
    px_tls_ctx *tls = NULL;
    px_config_init(&fresh);
    if (!s->argv || px_config_from_args(&fresh, s->argc, s->argv, out, sizeof(out), err, errlen) != 0) {
        if (!s->argv) snprintf(err, errlen, "no command line to read again");
        px_config_free(&fresh);
        return -1;
    }
    /* The new TLS contexts before anything changes: files that do not load
     * leave the running ones, and the rest of the config, as they were.
     * Certificates are read again even when their paths did not change (a
     * renewal rewrites them in place); new connections use the new context. */
    if (s->tls_listen_fd >= 0 && !(tls = px_tls_server_ctx(&fresh, err, errlen))) {
        px_config_free(&fresh);
        return -1;
    }
    if (px_core_upstream_tls(&s->core, &fresh, err, errlen) != 0) {
        px_tls_ctx_free(tls);
        px_config_free(&fresh);
        return -1;
    }
    int changed = px_config_reload(s->core.cfg, &fresh, restart, sizeof(restart));
    px_config_free(&fresh);
    s->core.log.level = (int)s->core.cfg->loglevel;
    px_l1_reconfigure(s->l1);
    refused_from_config(s);
    s->reloads++;
    if (tls) {
        px_tls_ctx_free(s->tls_ctx); /* its clients keep their sessions */
        s->tls_ctx = tls;
        check_expiry(s, tls);
    }
    px_log_notice(&s->core.log, "Config reloaded from %s: %d directive(s) took effect%s",
                  s->core.cfg->config_file ? s->core.cfg->config_file : "the command line", changed,
                  tls ? ", TLS certificates read again" : "");
    if (restart[0]) px_log_warning(&s->core.log, "Config reload: changed but only applied at restart: %s", restart);
    return 0;
}

void px_server_shutdown(px_server *s)
{
    if (s->core.shutting_down) return;
    s->core.shutting_down = 1;
    s->shutdown_deadline = px_now(&s->core) + (double)s->core.cfg->shutdown_timeout;
    ev_io_stop(s->core.loop, &s->accept_w);
    ev_io_stop(s->core.loop, &s->tls_accept_w);
    ev_timer_stop(s->core.loop, &s->accept_retry_w);
    if (s->listen_fd >= 0) {
        close(s->listen_fd);
        s->listen_fd = -1;
    }
    if (s->tls_listen_fd >= 0) {
        close(s->tls_listen_fd);
        s->tls_listen_fd = -1;
    }
    /* Stop reading: what was read is still answered, nothing new starts. */
    for (px_client *c = s->clients.clients; c; c = c->next) px_client_stop_reading(c);
}

px_server *px_server_create(px_config *cfg, const px_client_ops *ops, char *err, size_t errlen)
{
    px_server *s = calloc(1, sizeof(*s));
    if (!s) abort();
    s->core.cfg = cfg;
    s->listen_fd = s->tls_listen_fd = -1;
    s->core.loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    if (!s->core.loop) {
        snprintf(err, errlen, "cannot create the event loop");
        free(s);
        return NULL;
    }
    if (px_log_open(&s->core.log, (int)cfg->loglevel, cfg->logfile) != 0) {
        snprintf(err, errlen, "cannot open logfile %s: %s", cfg->logfile, strerror(errno));
        ev_loop_destroy(s->core.loop);
        free(s);
        return NULL;
    }
    px_stats_init(&s->core.stats);
    adjust_open_files_limit(s);
    s->core.start_time = ev_now(s->core.loop);
    s->core.rng = ((uint64_t)getpid() << 32) ^ (uint64_t)(s->core.start_time * 1e6) ^ 0x9E3779B97F4A7C15ULL;
    if (listen_on(s, err, errlen) != 0) {
        px_server_destroy(s);
        return NULL;
    }
    refused_from_config(s);
    /* before the topology is picked: its startup checks speak TLS too */
    if (px_core_upstream_tls(&s->core, cfg, err, errlen) != 0) {
        px_server_destroy(s);
        return NULL;
    }
    const px_topology *topo = px_sentinel_pick(&s->core, err, errlen);
    s->router = topo ? px_router_create(&s->core, topo, err, errlen) : NULL;
    if (!s->router) {
        px_server_destroy(s);
        return NULL;
    }
    s->l1 = px_l1_create(&s->core, s->router); /* before the pools connect: their handshakes ask for tracking */
    s->clients.core = &s->core;
    s->clients.router = s->router;
    s->clients.ops = ops;
    s->clients.ops_arg = s;
    s->clients.owner = s;
    px_router_on_keys_moved(s->router, px_clients_keys_moved, &s->clients); /* tracking clients flush */
    px_router_start(s->router);
    if (cfg->metrics_port && !(s->metrics = px_metrics_create(&s->core, metrics_page, s, err, errlen))) {
        px_server_destroy(s);
        return NULL;
    }
    ev_io_init(&s->accept_w, accept_cb, s->listen_fd, EV_READ);
    ev_io_init(&s->tls_accept_w, accept_cb, s->tls_listen_fd, EV_READ);
    s->tls_accept_w.data = s;
    ev_timer_init(&s->accept_retry_w, accept_retry_cb, ACCEPT_RETRY, 0.);
    s->accept_retry_w.data = s;
    ev_prepare_init(&s->flush_w, flush_cb);
    ev_timer_init(&s->cron_w, cron_cb, CRON_INTERVAL, CRON_INTERVAL);
    ev_signal_init(&s->sigterm_w, signal_cb, SIGTERM);
    ev_signal_init(&s->sigint_w, signal_cb, SIGINT);
    ev_signal_init(&s->sighup_w, signal_cb, SIGHUP);
    s->accept_w.data = s->flush_w.data = s->cron_w.data = s;
    s->sigterm_w.data = s->sigint_w.data = s->sighup_w.data = s;
    ev_io_start(s->core.loop, &s->accept_w);
    if (s->tls_listen_fd >= 0) ev_io_start(s->core.loop, &s->tls_accept_w);
    ev_prepare_start(s->core.loop, &s->flush_w);
    ev_timer_start(s->core.loop, &s->cron_w);
    ev_signal_start(s->core.loop, &s->sigterm_w);
    ev_signal_start(s->core.loop, &s->sigint_w);
    ev_signal_start(s->core.loop, &s->sighup_w);
    return s;
}

int px_server_run(px_server *s)
{
    if (s->tls_listen_fd >= 0)
        px_log_notice(&s->core.log,
                      "hotproxy %s ready to accept connections on %s:%lld and TLS connections on port %lld, upstream %s",
                      HOTPROXY_VERSION, s->core.cfg->bind, s->core.cfg->port, s->core.cfg->tls_port,
                      s->core.cfg->upstream);
    else
        px_log_notice(&s->core.log, "hotproxy %s ready to accept connections on %s:%lld, upstream %s", HOTPROXY_VERSION,
                      s->core.cfg->bind, s->core.cfg->port, s->core.cfg->upstream);
    ev_run(s->core.loop, 0);
    /* Write what can still be written without waiting. */
    for (px_client *c = s->clients.clients; c; c = c->next) px_client_flush(c);
    px_log_notice(&s->core.log, "hotproxy is now ready to exit, bye bye...");
    return s->exit_code;
}

void px_server_destroy(px_server *s)
{
    if (!s) return;
    px_metrics_destroy(s->metrics);
    px_clients_free_all(&s->clients);
    /* Pinned connections closed since the loop last ran (those of the
     * clients just freed, a blocked one's among them) are freed with their
     * pools. */
    px_router_destroy(s->router);
    px_l1_destroy(s->l1); /* after the pools: their teardown answers the fills */
    if (s->listen_fd >= 0) close(s->listen_fd);
    if (s->tls_listen_fd >= 0) close(s->tls_listen_fd);
    px_tls_ctx_free(s->tls_ctx);
    free(s->refused);
    px_tls_ctx_free(s->core.upstream_tls);
    px_stats_free(&s->core.stats);
    px_log_close(&s->core.log);
    ev_loop_destroy(s->core.loop);
    free(s);
}
