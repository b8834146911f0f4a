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

/*
 * Its setup runs before the loop (blocking, each step bounded by
 * connect-timeout): it finds the master through the configured Sentinels and
 * checks its ROLE, so the data pool starts at the right address; it fails
 * with the reason when no Sentinel names a master that says it is one, or
 * sentinel-master is empty and they watch more or fewer than one.
 */
extern const px_topology px_sentinel_topology;

/*
 * The topology the config describes, for px_router_create: single,
 * sentinel or cluster (px_cluster), after px_config_check_topology.  With topology auto the first
 * upstream that answers is asked what it is (INFO server's redis_mode,
 * blocking, at most 500 ms per address); with none answering, single when
 * there is one address.  NULL with the reason in err (wrong combinations,
 * a plain Redis among several upstreams).
 */
const px_topology *px_sentinel_pick(px_core *k, char *err, size_t errlen);

#endif
