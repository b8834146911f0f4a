/*
 * px_core: the context every layer shares.  See px_core.h.
 */
#include "proxy/px_core.h"

double px_now_fresh(px_core *k)
{
    ev_now_update(k->loop);
    return ev_now(k->loop);
}

void px_lat_flush(px_core *k)
{
    if (k->lat_n) {
        uint64_t now = px_clock_ns(), last = 0, ns = 0;
        int bucket = 0;
        for (int i = 0; i < k->lat_n; i++) {
            uint64_t t0 = k->lat_pend[i].t0;
            if (t0 != last) { /* the commands of one batch share their start, so their bucket */
                last = t0;
                ns = now > t0 ? now - t0 : 0;
                bucket = px_stats_lat_bucket(ns);
            }
            px_stats_latency_in(&k->stats, k->lat_pend[i].slot, bucket, ns);
        }
        k->lat_n = 0;
    }
    k->lat_t0 = 0; /* the next command reads the clock again */
}
