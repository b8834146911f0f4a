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

typedef struct px_core {
    struct ev_loop *loop;
    px_config *cfg;          /* borrowed; a reload changes it in place */
    px_log log;
    px_stats stats;
    uint64_t rng;            /* xorshift state for jitter */
    double start_time;
    int shutting_down;       /* a graceful stop has begun: start nothing new */
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

#endif
