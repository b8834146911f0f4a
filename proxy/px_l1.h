/*
 * px_l1: the L1 on the network side — which requests it answers, how fills
 * are coalesced and stored, how writes and Redis' invalidations reach it.
 *
 * The cache itself is cache/l1 (no sockets); this module decides:
 *  - reads: a command flagged PX_F_CACHE from a client on the shared path is
 *    answered from the L1, or joins the fill already in flight for the same
 *    reply (one upstream fetch for any number of clients), or starts a fill:
 *    the command and a PTTL of its key, pipelined on one connection, so the
 *    entry never outlives the key in Redis;
 *  - writes: every command that is not read-only drops the keys it names
 *    (the command table's key positions) before it is forwarded and again
 *    when its reply arrives, so a fill racing with it can never be stored;
 *    commands whose keys cannot be known flush the L1;
 *  - invalidations from elsewhere: each pool of the router's set has its
 *    own link subscribed to __redis__:invalidate, and the pool's shared
 *    connections use Redis' tracking (CLIENT TRACKING on REDIRECT) towards
 *    it; while a pool's link is down, nothing is filled through that pool.
 *    Losing a link (a pool re-pointed at another server, removed, or its
 *    link failing), or a shared connection the L1 filled through (Redis
 *    tracks keys per connection), flushes the L1;
 *  - writes whose keys cannot all be named (scripts: PX_F_BARRIER) hold
 *    their reply until a round trip on the link of the pool they went to
 *    shows their invalidations are in (px_l1_barrier).
 *
 * The L1 reads a client only through px_client.h's functions, and answers
 * through px_client_reply; the policy decisions are cache/'s.
 */
#ifndef PX_L1_H
#define PX_L1_H

#include <stddef.h>
#include <stdint.h>

#include "proxy/px_buf.h"
#include "proxy/px_core.h"
#include "proxy/px_stats.h"

struct px_router;
struct px_client;
struct px_command;
struct px_req;
struct px_upstream;
struct px_pool;

typedef struct px_l1 px_l1;

/* NULL when the config says "l1 no". */
px_l1 *px_l1_create(px_core *k, struct px_router *router);
void px_l1_destroy(px_l1 *l);

/*
 * Request r (a PX_F_CACHE command) would go on shared connection u.  Returns
 * 1 when the L1 answered it or it waits on a fill; 0 when it must be
 * forwarded as usual.  raw is the command's bytes as they go upstream.
 */
int px_l1_read(px_l1 *l, struct px_client *c, struct px_req *r, struct px_upstream *u, const char *raw, size_t rawlen);

/* An MGET split across servers (px_split): the GET reply the L1 holds for
 * one of its keys, for c, appended to out: 1.  0 when it must be read from
 * Redis (not held, c's own write in flight, no L1 (l NULL)). */
int px_l1_multiget_hit(px_l1 *l, struct px_client *c, const struct px_command *mget, const char *key, size_t len,
                       px_buf *out);

/* Request r may write (it goes on u): drop what it names now, and once
 * more at its reply. */
void px_l1_write(px_l1 *l, struct px_client *c, struct px_req *r, struct px_upstream *u);
/* r's reply has arrived: the second invalidation (px_client_reply calls it). */
void px_l1_written(px_l1 *l, struct px_req *r);
/*
 * r (flagged barrier by px_l1_write: a write that may touch keys it does not
 * name) has its reply.  Returns 1 when the L1 keeps a copy and answers r
 * with it later, through px_client_reply, once a PING sent now on the
 * invalidation link of the pool r went to is answered (Redis writes the
 * invalidations for what r wrote to that link before that answer); 0 when
 * it may go now.  Either way r->barrier is cleared.
 */
int px_l1_barrier(px_l1 *l, struct px_req *r, const char *reply, size_t len);

/* Apply the l1-* limits of a reloaded config. */
void px_l1_reconfigure(px_l1 *l);
/* Admin: drop keys (returns how many groups were named), drop everything,
 * and list cached keys matching a glob pattern from a cursor. */
long px_l1_invalidate_keys(px_l1 *l, int n, const char *const *keys, const size_t *lens);
void px_l1_flush(px_l1 *l);
/* Appends up to count matching keys to out as RESP bulks; returns how many,
 * and the next cursor (0 at the end) in *next. */
long px_l1_keys(px_l1 *l, const char *pat, size_t patlen, uint64_t cursor, long count, px_buf *out, uint64_t *next);

void px_l1_cron(px_l1 *l, double now);
/* The L1's values now (the registry's L1 group; l may be NULL: "off"), and
 * the same as INFO lines. */
void px_l1_stats(px_l1 *l, px_stats_l1 *v);
void px_l1_info(px_l1 *l, px_buf *out);

#endif
