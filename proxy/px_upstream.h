/*
 * px_upstream: connections to a Redis server, and pools of them.
 *
 * An upstream connection carries pipelined requests: it writes their bytes
 * as the client sent them and keeps the requests in a FIFO; each reply the
 * scanner frames completes the oldest.  A connection that fails or stops
 * answering (upstream-timeout) answers every request it holds with an error
 * and reconnects with exponential backoff.
 *
 * Every new connection first runs a handshake, pipelined ahead of any client
 * command: AUTH with upstream-user/upstream-password, HELLO 3 for RESP3,
 * SELECT for a database other than 0.  Its replies go to internal callbacks,
 * never to a client; an error there fails the connection.
 *
 * A pool is everything hotproxy holds to one server:
 *  - lanes, the shared path: for each (database, protocol) pair in use, a
 *    few connections multiplexing many clients.  Connection state is never
 *    shared: a client that said SELECT 2 or HELLO 3 uses that lane.  A client
 *    stays on the connection it has requests in flight on (read-your-writes).
 *  - pinned connections, one per client in a connection state (MULTI, WATCH,
 *    SUBSCRIBE, MONITOR, CLIENT TRACKING, a blocking command), capped by
 *    upstream-max-pinned.  When the state ends the connection is RESET and,
 *    once Redis confirms, kept as a spare for the next client that pins;
 *    otherwise it is closed.  A connection whose state RESET cannot be
 *    trusted to clear (CLIENT TRACKING: invalidations for its reads may still
 *    be on their way) is marked no_reuse and always closed.
 *  - out-of-band connections: one per request, for commands that must reach
 *    Redis while every shared connection may be stuck behind a slow command
 *    (SCRIPT KILL behind the very script it kills).  Opened, used for the one
 *    request, closed once it is answered; not counted against
 *    upstream-max-pinned, since they are needed most when everything is busy.
 *
 * This layer knows nothing of clients, the L1 or the commands: whoever queues
 * a request says who to tell when it completes (a px_upreq's done callback,
 * or px_upstream_send_internal's), whoever pins a connection says who gets
 * its frames and its end (on_frame, on_lost, owner), and the L1 sets up
 * tracking on new shared connections through a pool hook (on_handshake).
 */
#ifndef PX_UPSTREAM_H
#define PX_UPSTREAM_H

#include <ev.h>
#include <stdint.h>

#include "proxy/px_buf.h"
#include "proxy/px_core.h"
#include "proxy/px_resp.h"
#include "proxy/px_stats.h"

struct px_pool;
struct px_lane;
struct px_upstream;
struct px_tls;

typedef enum {
    PX_UP_DOWN,        /* not connected; retry after backoff (shared), or dead (pinned) */
    PX_UP_CONNECTING,
    PX_UP_READY,
    PX_UP_CLOSED,      /* pinned connection closed, waiting to be freed */
} px_up_state;

/*
 * Reply callback of an internal request (handshake, RESET, a fill).  When the
 * connection fails first, it is called with an error reply ("-ERR ...").
 */
typedef void (*px_internal_cb)(struct px_upstream *u, void *ctx, const char *reply, size_t len);
/* A pinned connection's or link's frames that answer no request, and its
 * end; ctx is the owner given when it was pinned or opened. */
typedef void (*px_frame_cb)(struct px_upstream *u, void *ctx, const char *frame, size_t len);
typedef void (*px_lost_cb)(struct px_upstream *u, void *ctx);

/*
 * One entry of a connection's queue of requests awaiting their reply.  The
 * caller embeds it in its own request (a client's px_req holds one) and
 * finds that back from it in done, so queueing allocates nothing here; the
 * entry must stay alive until done has run.  done runs exactly once: with
 * the reply, or with failed set and an error reply ("-ERR <why>") when the
 * connection fails first.  Entries complete in the order they were queued.
 */
typedef struct px_upreq px_upreq;
typedef void (*px_upreq_cb)(px_upreq *q, struct px_upstream *u, const char *reply, size_t len, int failed);
struct px_upreq {
    px_upreq *next;          /* the connection's queue */
    px_upreq_cb done;        /* set by whoever queues it */
    const char *what;        /* the command's name, for the timeout message (never its arguments) */
    double sent_at;          /* when it was queued */
    unsigned blocking : 1;   /* may wait for ever: upstream-timeout does not apply */
    unsigned marker : 1;     /* an internal PING whose reply carries the connection's token */
    /* A copy of the command's bytes, kept when the router may send it again
     * (a Cluster redirect): set by whoever queues it, freed with the entry's
     * owner.  redirects counts the times it was sent again. */
    char *raw;
    size_t rawlen;
    int redirects;
    /* Optional, set by whoever queues it: the router is about to send it
     * again on pool p (a Cluster redirect), or parks it for a retry (p
     * NULL: on no connection meanwhile).  Returns the connection of p
     * (db 0, proto) to send it on, NULL when none is up; the owner picks
     * it and moves its bookkeeping of where q is there (a client's
     * in-flight entry, so its later commands to p queue behind q). */
    struct px_upstream *(*resend_on)(px_upreq *q, struct px_pool *p, int proto);
    /* Set by a requester whose request must go again on a connection of
     * its own (a client's blocking command, on its pinned connection): the
     * router calls it to send q again to pool p (NULL: no master known;
     * asking: ASKING right before it) rather than on p's shared
     * connections.  It sends q, or answers it through done. */
    void (*resend)(px_upreq *q, struct px_pool *p, int asking);
    /* With resend: the router holds q a while before it sends it again (a
     * retry's pause); it is on no connection meanwhile, and its requester
     * lets go of the one it was on (a demoted master closes it). */
    void (*park)(px_upreq *q);
};

typedef struct px_upstream {
    px_core *core;
    struct px_pool *pool;
    struct px_lane *lane;    /* shared connections: their lane; NULL when pinned */
    void *owner;             /* pinned connections and links: passed to on_frame and on_lost
                              * (NULL when spare or releasing) */
    int db, proto;           /* what the handshake selected */
    int fd;
    struct px_tls *tls;      /* upstream-tls: the connection's TLS, made once connect() is done */
    px_up_state state;
    ev_io rw, ww;
    ev_timer timer;          /* connect timeout, then reconnect backoff */
    px_buf in, out;
    px_reply_scanner scan;

    px_upreq *shead, *stail; /* requests awaiting their reply, oldest first */
    long nsent;

    double backoff;          /* seconds to wait before the next attempt */
    char errstr[400];        /* why it is down, for error replies and INFO */
    long long redis_id;      /* CLIENT ID upstream (pinned connections) */
    char marker[48];         /* token of this connection's markers */
    unsigned in_write_list : 1, write_armed : 1;
    /* TLS may need the other readiness: a read that waits for the socket to
     * be writable, a write that waits for it to be readable */
    unsigned read_wants_write : 1, write_wants_read : 1;
    /* TLS: the server answered something.  With TLS 1.3 the client's side of
     * the handshake ends before the server has checked hotproxy's
     * certificate: a refusal (mutual TLS) arrives as the first read. */
    unsigned tls_answered : 1;
    unsigned raw : 1;        /* frames go to the owner as they come (RESP2 pub/sub, MONITOR) */
    unsigned releasing : 1;  /* RESET sent; spare once confirmed */
    unsigned spare : 1;      /* clean, waiting for a client to pin it */
    unsigned no_reuse : 1;   /* closed, never RESET and spared, when unpinned */
    unsigned oob : 1;        /* out-of-band: closed once its requests are answered */
    unsigned link : 1;       /* hotproxy's own link (px_pool_open_link) */
    unsigned moved : 1;      /* closed by px_pool_repoint: the server changed, the link did not break */
    unsigned broke : 1;      /* its last failure was the link breaking (the server may be gone), not a
                              * timeout, a re-point or hotproxy letting it go */
    uint64_t tracking_epoch; /* shared: the invalidation link epoch its CLIENT TRACKING names (0: none) */
    unsigned tracking_used : 1; /* shared: the L1 filled through it since its tracking was turned on */
    px_frame_cb on_frame;    /* pinned connections and links: who gets frames and their end */
    px_lost_cb on_lost;
    struct px_upstream *wnext;       /* pool's write list */
    struct px_upstream *pnext, *pprev; /* pool's pinned list */
    struct px_upstream *rnext;       /* pool's reap list */
} px_upstream;

typedef struct px_lane {
    int db, proto;
    int nconns;
    unsigned rr;
    px_upstream *conns;
} px_lane;

typedef struct px_pool {
    px_core *core;
    char *host;
    int port;
    char name[300];          /* "host:port" */
    int nconns;              /* per lane */
    int nlanes;
    px_lane **lanes;
    px_upstream *pinned;     /* pinned, spare and releasing connections */
    long npinned;            /* connections in that list */
    long nspare;
    px_upstream *write_ups;  /* connections with output to flush (px_pool_flush) */
    px_upstream *reap_ups;   /* closed pinned connections to free (px_pool_reap) */
    long nlinks;             /* of those, hotproxy's own links */
    /* Called when a shared connection whose CLIENT TRACKING was on (its
     * tracking_epoch, passed as epoch) is lost: Redis tracks keys per
     * connection, so what it read is watched no more.  The L1 sets it. */
    void (*on_tracking_lost)(struct px_upstream *u, uint64_t epoch, void *arg);
    void *tracking_lost_arg;
    /* Called in a shared connection's handshake, after its SELECT, so the
     * listener can queue its own setup there (the L1's CLIENT TRACKING:
     * Redis tracks what the connection reads for the L1).  The L1 sets it. */
    void (*on_handshake)(struct px_upstream *u, void *arg);
    void *handshake_arg;
    long noob;               /* of those, out-of-band connections */
    char redis_version[32];  /* from INFO server, for HELLO */
    char tls_warned[160];    /* the TLS failure last logged as a warning ("": none since a connection succeeded) */
    long long databases;     /* from CONFIG GET databases, for SELECT */
    unsigned probed : 1;
    unsigned own_auth : 1;   /* AUTH with auth_user/auth_password, not upstream-user/password */
    char *auth_user, *auth_password;
} px_pool;

px_pool *px_pool_create(px_core *k, const char *host, int port, int nconns);
void px_pool_destroy(px_pool *p);
/* The credentials p's handshakes use instead of upstream-user and
 * upstream-password (a Sentinel's: sentinel-user, sentinel-password); an
 * empty password sends no AUTH.  Copied. */
void px_pool_set_auth(px_pool *p, const char *user, const char *password);
/* Before the loop sleeps: write what this iteration queued on p's
 * connections (one write each), and free its closed pinned connections
 * (never freed inside their own callbacks). */
void px_pool_flush(px_pool *p);
void px_pool_reap(px_pool *p);
/*
 * Point p at another server (a Sentinel failover, a Cluster node that
 * moved): every request in flight on the old one is answered with an error
 * naming why, the shared connections reconnect at once to the new address,
 * and pinned connections and links are closed (their owners' on_lost runs,
 * with u->moved set: the owner may rebuild its state on the new server).
 * Nothing waits for the old server.
 */
void px_pool_repoint(px_pool *p, const char *host, int port, const char *why);
/*
 * Before p is destroyed while running (a Cluster node gone): every request
 * in flight is answered with an error naming why, pinned connections and
 * links close and their owners are told (on_lost).  Nothing waits.
 */
void px_pool_retire(px_pool *p, const char *why);
/*
 * The shared connection a request for this database and protocol should
 * use, or NULL when every connection of that lane is down (the caller
 * answers with px_pool_unavailable()).  stay: the connection the caller's
 * earlier requests are still in flight on (NULL: none); it is kept while it
 * is of that lane and not down, so writes and reads reach Redis in order.
 */
px_upstream *px_pool_pick(px_pool *p, int db, int proto, px_upstream *stay);
const char *px_pool_unavailable(px_pool *p);
/* The connection of u's lane that fills for this key: one per key, so Redis
 * tracks the key on one connection and a write sends one invalidation. */
px_upstream *px_lane_conn_for_key(px_upstream *u, const char *key, size_t len);
/*
 * A connection of one owner's own, set up for this database and protocol;
 * NULL with err set when upstream-max-pinned is reached.  Frames that answer
 * no request go to on_frame, its end (once, if it dies while pinned) to
 * on_lost, both with owner, until px_pool_unpin or px_upstream_disown.
 */
px_upstream *px_pool_pin(px_pool *p, int db, int proto, px_frame_cb on_frame, px_lost_cb on_lost, void *owner,
                         const char **err);
/*
 * A connection of hotproxy's own (the invalidation link): frames that answer
 * no request go to on_frame, its end to on_lost (called once; the
 * connection is freed after).  Not counted against upstream-max-pinned.
 */
px_upstream *px_pool_open_link(px_pool *p, px_frame_cb on_frame, px_lost_cb on_lost, void *ctx);
/*
 * An out-of-band connection: the caller sends one request on it
 * (px_upstream_send), and it closes once that is answered.  It is in
 * database 0 and speaks RESP2 whatever the client's, for its handshake must
 * pass while Redis is busy (no SELECT, no CLIENT ID): only commands whose
 * reply is the same in every database and protocol may use it (+OK or an
 * error).  NULL when it cannot even be opened (the caller answers with
 * px_pool_unavailable()).  Not counted against upstream-max-pinned.
 */
px_upstream *px_pool_open_oob(px_pool *p);
/* u carried state a RESET may not fully clear: close it when unpinned. */
void px_upstream_no_reuse(px_upstream *u);
/* The owner tells u nothing more: its frames are dropped, its end is not reported. */
void px_upstream_disown(px_upstream *u);
/* Close a pinned connection or link now (its requests get errors; its
 * owner's on_lost runs unless it was disowned first). */
void px_pool_close(px_pool *p, px_upstream *u, const char *why);
/* Who hears of a shared connection lost with its tracking on (one listener). */
void px_pool_on_tracking_lost(px_pool *p, void (*fn)(px_upstream *u, uint64_t epoch, void *arg), void *arg);
/* Who queues its own setup in every shared connection's handshake (one listener). */
void px_pool_on_handshake(px_pool *p, void (*fn)(px_upstream *u, void *arg), void *arg);
/* Call fn for every shared connection (to set up tracking on each). */
void px_pool_each_shared(px_pool *p, void (*fn)(px_upstream *u, void *arg), void *arg);
/* Its owner no longer needs u (disowned): RESET it for reuse if it is idle, else close it. */
void px_pool_unpin(px_pool *p, px_upstream *u);
/* Fail requests that waited longer than timeout_ms; called from the cron. */
void px_pool_cron(px_pool *p, double now, long long timeout_ms);
/* The pool's values now (the registry's POOL group); v->lane.v is
 * allocated, the caller frees it.  px_pool_info writes them as INFO lines. */
void px_pool_stats(px_pool *p, px_stats_pool *v);
void px_pool_info(px_pool *p, px_buf *out);

/*
 * Queue q on u and the bytes of its command for writing.  q->done must be
 * set; it runs exactly once (see px_upreq).
 */
void px_upstream_send(px_upstream *u, px_upreq *q, const char *cmd, size_t len);
/* Write bytes whose replies must not reach the client (a forwarded command
 * whose reply the client turned off); the reply is read and dropped. */
void px_upstream_send_internal(px_upstream *u, const char *cmd, size_t len, px_internal_cb cb, void *ctx);
/* Write a command whose answer will not be a reply (RESP2 pub/sub mode,
 * MONITOR): what Redis sends back arrives as frames for the owner. */
void px_upstream_write(px_upstream *u, const char *cmd, size_t len);
/* Queue a marker (a PING with this connection's token); cb (with ctx) runs
 * once every frame Redis sent before it has been delivered. */
void px_upstream_marker(px_upstream *u, px_internal_cb cb, void *ctx);
/* Write buffered bytes; returns -1 if the connection failed. */
int px_upstream_flush(px_upstream *u);
/* A reference to bytes u is delivering (a reply, in its done callback) when
 * they sit in its read buffer: they stay valid until it is put (see
 * px_buf_share).  Returns 0 when they are not there (an error u made up). */
int px_upstream_ref(px_upstream *u, const char *p, size_t len, px_ref *ref);

#endif
