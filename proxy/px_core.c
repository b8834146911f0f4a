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
        uint64_t now = px_clock_ns();
        for (int i = 0; i < k->lat_n; i++) {
            uint32_t slot = k->lat_pend[i].slot;
            uint64_t t0 = k->lat_pend[i].t0;
            px_stats_latency(&k->stats, (int)(slot / PX_PATH_COUNT), (int)(slot % PX_PATH_COUNT), now > t0 ? now - t0 : 0);
        }
        k->lat_n = 0;
    }
    k->lat_t0 = 0; /* the next command reads the clock again */
}
