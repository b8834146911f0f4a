/*
 * px_split: one client command sent as several, to several servers, and
 * their replies merged into the one reply the client expects — for a
 * topology that spreads keys (a Redis Cluster: px_router_sharded).
 *
 * What is split and how replies merge is the command table's
 * (px_commands.def): PX_F_SPLIT commands (MGET, MSET, DEL, UNLINK, EXISTS,
 * TOUCH) whose keys fall in several shards become one command per shard,
 * each with its keys (and the arguments each key carries, key_step);
 * PX_F_ALL_SHARDS commands (DBSIZE, KEYS, FLUSHALL, SCRIPT LOAD...) go to the
 * server of every shard.  Replies merge as the row says: PX_F_MERGE_SUM adds
 * integers, PX_F_MERGE_SAME wants one reply from all (+OK, a SHA), and
 * otherwise arrays merge (by key back into the client's order, or, with no
 * keys, one after the other).  The first error, if any, is the reply.
 * PX_F_SCAN (SCAN) walks the servers one after the other, the cursor
 * naming the server (see scan_plan).
 *
 * An MGET takes what the L1 holds from it (px_l1_multiget_hit) and sends
 * only the misses, split by shard; its misses do not fill the L1 (GETs do).
 *
 * The parts are in flight like the client's own requests (px_client_hold),
 * so its next commands to any of those servers keep their order behind them,
 * and the merged reply takes the command's place in the client's queue.
 * Each part goes through the router's reply hook (a redirect is followed).
 */
#ifndef PX_SPLIT_H
#define PX_SPLIT_H

#include <stddef.h>

struct px_client;
struct px_command;
struct px_l1;
struct px_req;

typedef struct px_split_plan px_split_plan;

/*
 * Whether the command being dispatched (c's argv) is to be split: NULL when
 * not (the topology keeps keys on one server, the command is not split, its
 * keys are all in one shard and the L1 (l, may be NULL) holds none of an
 * MGET's): the usual path takes it.  Otherwise a plan,
 * with *wait set when it must wait for c's in-flight requests (c goes on
 * another connection of a pool than they are on: free the plan and try
 * again later), or *err when a part has no server (free the plan, answer
 * the error).
 */
px_split_plan *px_split_plan_make(struct px_client *c, const struct px_command *cmd, int argc, struct px_l1 *l,
                                  int *wait, const char **err);
/* Send the plan's parts for request r (the command's own, in c's queue);
 * the plan is consumed.  The L1 drops the keys a write names (l may be NULL). */
void px_split_send(px_split_plan *p, struct px_client *c, struct px_req *r, struct px_l1 *l);
void px_split_plan_free(px_split_plan *p);

#endif
