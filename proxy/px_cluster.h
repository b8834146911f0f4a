/*
 * px_cluster: the "cluster" topology — a Redis Cluster behind hotproxy,
 * shown to clients as one standalone Redis.
 *
 * The slot map: CLUSTER SLOTS, asked of a master hotproxy already talks to
 * or, with none reachable, of the seed nodes (the "upstream" addresses,
 * control pools).  One data pool per master, added as the map names it,
 * removed (from the cron) once its master has owned no slot for two map
 * reads and nothing is in flight on it.
 * The map is read again: on every MOVED (the slot is updated at once from
 * the reply's address, the whole map follows, at most once per 100 ms), every
 * few seconds, and when a master's connections are all down.  A map that
 * covers fewer slots than the one kept only updates the slots it names;
 * endpoints that are empty or "?" are skipped.
 *
 * Routing: a command's keys (px_command_keys, from the table) hash to a slot
 * (CRC16 with hash tags, as Redis); keys of several slots in a command that
 * cannot be split (px_split splits the others) get Redis' -CROSSSLOT.
 * Commands without keys go to the first master (the owner of slot 0), or
 * to a random one when the table says any server answers as well
 * (PX_F_ANY_SHARD: RANDOMKEY).
 *
 * Redirections never reach the client for a command on a shared
 * connection: MOVED is sent again to the node named, ASK with ASKING before
 * it, TRYAGAIN / CLUSTERDOWN / LOADING again after a growing pause; a
 * command is sent again at most 5 times, then its last error is the reply.
 * On a connection of the client's own (MULTI, WATCH, blocking commands)
 * Redis' error goes through, as Redis Cluster's own would.  A read in
 * flight on a shared connection that breaks (a master dying) is sent again
 * to its slot's owner once the map names a new one, within upstream-timeout;
 * a write gets the connection's error (it may have run).
 */
#ifndef PX_CLUSTER_H
#define PX_CLUSTER_H

#include <stddef.h>

#include "proxy/px_router.h"

#define PX_CLUSTER_SLOTS 16384

/* Its setup only notes the seeds (nothing blocks): the first map is asked
 * for when the router starts; commands sent before a whole map is in wait
 * for it (px_topology.waiting) up to upstream-timeout after the start, then
 * a slot not known gets an error saying so. */
extern const px_topology px_cluster_topology;

/* A command was split by slot or sent to every master (for INFO). */
void px_cluster_count_split(px_router *r);

/* Redis Cluster's hash slot of a key: CRC16 (XMODEM) of the key, or of the
 * part between the first '{' and the next '}' when that is not empty. */
unsigned px_cluster_keyslot(const char *key, size_t len);

#endif
