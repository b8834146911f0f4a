/*
 * px_sentinel: the "sentinel" topology — one data pool that follows the
 * master Redis Sentinel names, as the Sentinel client guidelines describe.
 *
 * Discovery: the Sentinels (the "upstream" addresses, and those learnt from
 * SENTINEL SENTINELS) are asked in turn for the master's address
 * (SENTINEL get-master-addr-by-name); the one that answers moves to the
 * front.  A new address is checked with ROLE on a connection of its own
 * before the data pool is pointed at it, so client traffic never reaches a
 * node that is not the master by its own word.
 *
 * Following failovers: every reachable Sentinel has a link subscribed to
 * +switch-master, the master's address is asked again every second (a
 * message missed, a link down), and a -READONLY reply from the data pool
 * (the old master came back as a replica) starts a round at once.  A change
 * re-points the data pool (px_router_repoint: requests in flight get an
 * error, new ones go to the new master).  With every Sentinel unreachable
 * the last known master is kept, and that is logged once and shown in INFO.
 *
 * Sentinels are control pools of the router: never routed to, with their
 * own credentials (sentinel-user, sentinel-password).
 */
#ifndef PX_SENTINEL_H
#define PX_SENTINEL_H

#include <stddef.h>

#include "proxy/px_config.h"
#include "proxy/px_router.h"

extern const px_topology px_sentinel_topology;

/*
 * Before the loop runs (blocking, each step bounded by connect-timeout):
 * find the master through the configured Sentinels and check its ROLE, so
 * the data pool starts at the right address.  Sets r->topo_state.  -1 with
 * the reason in err when no Sentinel could name a master that says it is
 * one, or sentinel-master is empty and they watch more or fewer than one.
 */
int px_sentinel_setup(px_router *r, char *err, size_t errlen);

/*
 * topology auto: ask the first upstream that answers what it is (INFO
 * server's redis_mode).  Returns PX_TOPO_SINGLE, PX_TOPO_SENTINEL or
 * PX_TOPO_CLUSTER; with none answering, PX_TOPO_SINGLE when there is one
 * address, else -1 with the reason in err.
 */
int px_sentinel_probe_kind(const px_config *c, char *err, size_t errlen);

#endif
