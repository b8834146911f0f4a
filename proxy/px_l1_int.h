/*
 * px_l1_int.h: what the L1's own files share (nobody else includes it).
 *
 * The L1 is four files of one layer, each calling only downward:
 *
 *   px_l1.c        every function of px_l1.h: create/destroy, the cron,
 *                  INFO and admin, the read path (px_l1_read: lookup, hit,
 *                  early refresh), and the write path's entries
 *     |-> px_l1_fill.c   fills: coalescing, the PTTL behind each, the store,
 *     |                  MGET split into each key's GET entry
 *     |-> px_l1_inval.c  writes: the keys they name, MULTI, the barrier
 *     '-> px_l1_track.c  tracking: a link per pool of the router's set, its
 *                        heartbeat and barrier PINGs, CLIENT TRACKING on
 *                        each shared connection, whether a fill may run
 *
 * fill and inval both ask track (can this connection fill, hold a reply
 * until the link's pong); track calls neither.  Policy decisions (TTLs, the
 * null a key turns into, early refresh) are cache/'s (cache/l1.h).
 */
#ifndef PX_L1_INT_H
#define PX_L1_INT_H

#include <stdint.h>
#include <string.h>

#include "cache/l1.h"
#include "proxy/px_buf.h"
#include "proxy/px_client.h"
#include "proxy/px_command.h"
#include "proxy/px_core.h"
#include "proxy/px_router.h"
#include "proxy/px_stats.h"
#include "proxy/px_upstream.h"

/* As px_l1.h names it: px_l1.h is the layer's face, whose functions
 * px_l1.c alone defines, so the files below it do not include it. */
typedef struct px_l1 px_l1;

struct px_l1_flight; /* a fill in flight (px_l1_fill.c) */
struct px_l1_link;   /* a pool's tracking link (px_l1_track.c) */

struct px_l1 {
    px_core *core;
    px_router *router;          /* the pools it keeps a tracking link to, one each */
    l1 *cache;
    uint64_t rng;               /* the cache's random source (jitter, early refresh) */
    struct px_l1_flight *flights; /* fills in flight, by cache key */
    struct px_l1_link *links;   /* one per pool of the router's set */
    uint64_t epochs;            /* the last epoch a link was given: unique across links */
    int refused;                /* Redis refused tracking somewhere: TTL-only, everywhere */
    px_buf scratch;             /* the key being looked up, reused: no allocation per hit */
    /* counters beyond the library's (its own, hits and the like, are
     * l1_stats': they stay 0 here and are copied in by px_l1_stats) */
    px_stats_l1 st;
};

/* The L1's clock, in ms: the loop's (read when its iteration began), which is
 * all an ordinary entry needs; px_l1_fresh_ms reads it again, for the entries
 * that end with their key (l1_get_fresh) and for late waiters. */
static inline uint64_t px_l1_now_ms(px_l1 *l) { return (uint64_t)(px_now(l->core) * 1000.0); }
static inline uint64_t px_l1_fresh_ms(void *arg)
{
    px_l1 *l = arg;
    return (uint64_t)(px_now_fresh(l->core) * 1000.0);
}

/* No tracking to tell what a write made elsewhere touched: TTL-only. */
static inline int px_l1_ttl_only(const px_l1 *l) { return !l->core->cfg->l1_tracking || l->refused; }

/* Key lists ([u32 len][key]...): what a write drops, an MGET's misses. */
static inline void px_l1_put_u32(px_buf *b, uint32_t v) { px_buf_append(b, &v, 4); }
static inline void px_l1_record_key(px_buf *b, const char *k, size_t n)
{
    px_l1_put_u32(b, (uint32_t)n);
    px_buf_append(b, k, n);
}

/* ---- px_l1_fill.c ---- */

/* Append the variant of cmd as c sent it (see px_l1.c); with_args: its
 * arguments after the key are part of it. */
void px_l1_fill_variant(px_client *c, const px_command *cmd, int with_args, px_buf *b);
/* A fill for key (the cache key: [u32 glen][group][variant]) is in flight. */
int px_l1_fill_running(px_l1 *l, const px_buf *key);
/* Fetch key on u, with r (of client c) its first waiter, or none (r NULL:
 * an early refresh); raw is the command's bytes. */
void px_l1_fill_start(px_l1 *l, px_client *c, px_req *r, px_upstream *u, const px_buf *key, size_t glen,
                      const px_policy *pol, const px_command *row, const char *raw, size_t rawlen);
/* A miss: r joins the fill in flight for key, or starts one; 0 when it must
 * be forwarded as usual (too many waiters, or c's order forbids). */
int px_l1_fill_wait(px_l1 *l, px_client *c, px_req *r, px_upstream *u, const px_buf *key, size_t glen,
                    const px_policy *pol, const px_command *row, const char *raw, size_t rawlen);
/* MGET: each key from its GET entry, one fetch for the misses (as px_l1_read). */
int px_l1_fill_multiget(px_l1 *l, px_client *c, px_req *r, px_upstream *u);
/* At destroy: forget the fills (the pools' teardown has answered them). */
void px_l1_fill_forget(px_l1 *l);

/* ---- px_l1_inval.c: px_l1_write, px_l1_written, px_l1_barrier (px_l1.h) ---- */

void px_l1_inval_write(px_l1 *l, px_client *c, px_req *r, px_upstream *u);
void px_l1_inval_written(px_l1 *l, px_req *r);
int px_l1_inval_barrier(px_l1 *l, px_req *r, const char *reply, size_t len);

/* ---- px_l1_track.c ---- */

/* The router's listener: a pool joined (a link for it) or left (its link
 * closes, the L1 is flushed). */
void px_l1_track_pool(px_router *r, px_pool *p, int event, void *arg);
/* Whether fills may use this shared connection now: TTL-only, or its pool's
 * link is up and the connection's CLIENT TRACKING names it. */
int px_l1_track_can_fill(px_l1 *l, px_upstream *u);
/* Hold r's reply until a PING sent now on pool p's link is answered, then
 * answer r with it (px_client_reply); 0 (nothing held) when that link is
 * not up: the L1 was flushed when it went, and fills nothing through p. */
int px_l1_track_hold(px_l1 *l, px_pool *p, px_req *r, const char *reply, size_t len);
/* Open links that are due, beat the heartbeat, CLIENT TRACKING again where
 * Redis said "not now". */
void px_l1_track_cron(px_l1 *l, double now);
/* INFO: "up" when every pool's link is, else "down" (tracking on, not
 * refused), and the CLIENT ID of the default pool's link (-1: none). */
void px_l1_track_state(px_l1 *l, const char **state, int64_t *link_id);
/* At destroy (the pools are gone): answer what is held, free the links. */
void px_l1_track_free(px_l1 *l);

#endif
