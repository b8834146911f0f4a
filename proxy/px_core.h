/*
 * px_core: what every layer of one proxy instance shares — its event loop
 * and clock, its config, log and counters, and the random state of the
 * jitter.  Nothing here knows a client, a connection or the L1: the layers
 * above are handed a px_core and reach each other only downwards.  The
 * server owns it; a later version runs one per thread.
 */
#ifndef PX_CORE_H
#define PX_CORE_H

#include <ev.h>
#include <stdint.h>
#include <time.h>

#include "proxy/px_config.h"
#include "proxy/px_log.h"
#include "proxy/px_stats.h"

struct px_tls_ctx;

/* Completions waiting for px_lat_flush to read the clock (see px_lat_done). */
#define PX_LAT_PENDING 1024

typedef struct px_core {
    struct ev_loop *loop;
    px_config *cfg;          /* borrowed; a reload changes it in place */
    px_log log;
    px_stats stats;
    uint64_t rng;            /* xorshift state for jitter */
    double start_time;
    int shutting_down;       /* a graceful stop has begun: start nothing new */
    /* upstream-tls: the context every connection to a Redis or a Sentinel
     * is made with (NULL: plain TCP).  A reload replaces it; connections
     * made with the old one keep it until they close (px_core_upstream_tls). */
    struct px_tls_ctx *upstream_tls;
    uint64_t upstream_tls_failures; /* TLS handshakes with an upstream that failed (INFO's upstream group) */
    /* the latency histograms' clock, read once per batch (px_lat_start) */
    uint64_t lat_t0;         /* ns; 0: read it at the next command */
    int lat_n;
    struct {
        uint32_t slot;       /* command index * PX_PATH_COUNT + path */
        uint64_t t0;
    } lat_pend[PX_LAT_PENDING];
} px_core;

/* Seconds, from the loop's clock (read when its iteration began). */
static inline double px_now(const px_core *k) { return ev_now(k->loop); }
/* The loop's clock read again now (ev_now_update): for a time that must not
 * be an iteration old, after work that may have taken long. */
double px_now_fresh(px_core *k);

/* Nanoseconds on the monotonic clock, read now: for durations shorter than
 * a loop iteration (an L1 hit), which ev_now cannot see. */
static inline uint64_t px_clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * Latency, with the clock read per batch rather than per command: a read of
 * CLOCK_MONOTONIC costs 35-40 ns here, two per command were 5-14% of an L1
 * hit's CPU (see the notes), and the histograms' first bucket is 50 us.
 * A command parsed takes as its start the time read at the first command
 * since the last flush (px_lat_start: when the loop began on what it read);
 * a command answered waits in lat_pend, and px_lat_flush, run before the
 * loop writes the replies of an iteration (px_server's flush), reads the
 * clock once and counts them all with it.  So a duration runs from the loop
 * taking up the command's bytes to its reply being ready to write: what the
 * client waits for inside hotproxy, including the other clients' work
 * done in the same iteration, never the time its bytes spent on the wire.
 */
static inline uint64_t px_lat_start(px_core *k)
{
    if (!k->lat_t0) k->lat_t0 = px_clock_ns();
    return k->lat_t0;
}
void px_lat_flush(px_core *k);
/* A command started at t0 (px_lat_start) is answered: cmd its table index
 * (px_command_count() for an unknown one), path PX_PATH_*. */
static inline void px_lat_done(px_core *k, int cmd, int path, uint64_t t0)
{
    if (k->lat_n == PX_LAT_PENDING) px_lat_flush(k);
    k->lat_pend[k->lat_n].slot = (uint32_t)(cmd * PX_PATH_COUNT + path);
    k->lat_pend[k->lat_n].t0 = t0;
    k->lat_n++;
}

/*
 * (Re)make the upstream-tls context from c (the running config at startup,
 * the one being loaded on reload); nothing to do when the running config
 * says upstream-tls no (it is restart-only).  On failure the context in use
 * stays and err says why (the directive, the file, OpenSSL's reason).
 */
int px_core_upstream_tls(px_core *k, const px_config *c, char *err, size_t errlen);

/*
 * A non-blocking listening TCP socket on addr:port (the first address that
 * binds), or -1 with err set: "<directive> <addr>: <resolver error>", or
 * "<what> <addr>:<port>: <errno text>".  The listener and the metrics page
 * both use it.
 */
int px_listen_tcp(const char *addr, long long port, int backlog, const char *directive, const char *what, char *err,
                  size_t errlen);

#endif
