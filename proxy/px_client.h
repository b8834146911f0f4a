/*
 * px_client: one client connection and its requests.
 *
 * Each request read becomes a px_req in the client's queue, in arrival order.
 * A request is answered locally or forwarded; replies may complete in any
 * order (local ones at once, forwarded ones when upstream answers) but are
 * written strictly in queue order: a reply for the head of the queue goes
 * straight into the output, one for a later request waits in the request
 * until everything before it is written.  The output is a chain: small
 * replies are copied into the output buffer, large ones are referenced where
 * they already sit (an L1 value, an upstream's read buffer) and written with
 * writev between the copied bytes (px_client_reply_ref).
 *
 * A request outlives its client: when a client goes away with requests in
 * flight, they stay in their upstream's queue with client == NULL so the
 * replies still line up, and are dropped as they arrive.
 */
#ifndef PX_CLIENT_H
#define PX_CLIENT_H

#include <ev.h>
#include <stdint.h>
#include <uthash.h>

#include "proxy/px_buf.h"
#include "proxy/px_command.h"
#include "proxy/px_core.h"
#include "proxy/px_resp.h"
#include "proxy/px_tls.h"
#include "proxy/px_upstream.h"

struct px_upstream;
struct px_command;
struct px_req;
struct px_router;
struct px_client;
struct px_clients;
struct px_sub;
struct px_client_tls;

/* Called with a forwarded request's reply before it is delivered; may
 * replace the bytes by appending others to out (then returns 1). */
typedef int (*px_reply_hook)(struct px_req *r, const char *reply, size_t len, px_buf *out);

typedef struct px_req {
    px_upreq up;                   /* its entry in an upstream's queue (up.blocking: may wait for ever) */
    struct px_clients *set;        /* outlives the client */
    struct px_client *client;      /* NULL once the client has gone */
    struct px_req *next;           /* client queue */
    const struct px_command *cmd;  /* NULL: unknown command */
    char *reply;                   /* stored reply, when it completed out of order */
    size_t reply_len;
    px_ref reply_ref;              /* set: reply is referenced where it sits (px_client_reply_ref), not owned */
    unsigned done : 1;
    unsigned forwarded : 1;        /* in an upstream's queue, unanswered */
    unsigned pinned : 1;           /* forwarded on the client's pinned connection */
    unsigned silent : 1;           /* CLIENT REPLY OFF/SKIP: the reply is dropped */
    unsigned writes : 1;           /* may write: counted in the client's nwrites */
    unsigned inval_flush : 1;      /* its reply flushes the L1 */
    unsigned barrier : 1;          /* its reply waits for the L1's barrier (px_l1_barrier) */
    struct px_upstream *on;        /* forwarded: the connection it counts on in its client's px_inflight */
    char *inval;                   /* keys its reply invalidates again: [u32 len][key]... */
    size_t inval_len;
    struct px_pool *inval_pool;    /* the pool it went to: its barrier waits on that pool's link */
    px_reply_hook hook;
    unsigned hook_flags;           /* the hook's own argument */
    px_buf *capture;               /* a local command run inside EXEC's reply: its reply goes here */
    struct px_multi_cmd *mq;       /* EXEC: the transaction's commands (owned), see px_multi_cmd */
    int mq_len;
    uint64_t t0;                   /* px_lat_start when parsed, 0: not timed (latency-tracking no) */
    unsigned char path;            /* PX_PATH_*: who answers it, for its latency histogram */
} px_req;

/* Who answers r (PX_PATH_*, px_stats.h): its duration is counted there
 * when its reply completes. */
static inline void px_req_path(px_req *r, int path) { r->path = (unsigned char)path; }

/*
 * One command queued in a client's MULTI, kept until EXEC's reply arrives so
 * hotproxy can build the reply Redis would: commands hotproxy answers itself
 * (CLIENT ..., HOTPROXY ...) are run then and their replies put in EXEC's
 * array at their place; a forwarded command's reply hook (INFO's sections,
 * CONFIG GET's hidden secrets) is applied to its element.
 */
typedef struct px_multi_cmd {
    px_reply_hook hook;     /* forwarded: applied to its element of EXEC's array */
    unsigned hook_flags;
    char *local;            /* answered by hotproxy: the command's RESP bytes */
    size_t local_len;
} px_multi_cmd;

enum {
    PX_CLIENT_CLOSE_AFTER_REPLY = 1 << 0, /* QUIT, protocol error: close once written */
    PX_CLIENT_CLOSING = 1 << 1,           /* in the server's closing list */
    PX_CLIENT_PAUSED = 1 << 2,            /* not read: too many requests in flight */
    PX_CLIENT_IN_WRITE_LIST = 1 << 3,
    PX_CLIENT_WRITE_ARMED = 1 << 4,       /* write watcher started (socket was full) */
    PX_CLIENT_HOLD = 1 << 5,              /* next command changes connection: wait for in-flight replies */
};

/* Connection state a client built upstream: PX_STATE_* in px_command.h. */

/*
 * A connection a client has requests in flight on, and how many.  A client
 * may have requests in flight on several connections at once, one per pool
 * (a pipeline across Cluster nodes); on one pool it keeps to one connection
 * until they are answered, so Redis sees its commands to one server in the
 * order it sent them.  Replies are written in request order whatever order
 * the connections answer in (the queue, above).
 */
typedef struct px_inflight {
    struct px_upstream *u;
    long n;
} px_inflight;

typedef struct px_client {
    struct px_clients *set;
    uint64_t id;
    int fd;
    unsigned flags;
    ev_io rw, ww;
    struct px_client_tls *tls; /* its TLS state (a tls-port client), NULL for a plain one */
    px_buf in, out;
    /* Output is out's copied bytes with large replies referenced in between
     * (px_client_reply_ref), written together with writev. */
    struct px_oref *orefs;  /* the referenced replies, a FIFO ring */
    int oref_head, noref, oref_cap;
    size_t oref_bytes;      /* their bytes not yet written: output, as out's are */
    size_t out_off;         /* out's bytes written so far, the position orefs count in */
    px_req_parser parser;

    px_req *qhead, *qtail;  /* requests in arrival order, not yet written */
    long nqueued;
    size_t held;            /* bytes of replies waiting in the queue for an earlier one */
    long ninflight;         /* of those, forwarded and unanswered */
    px_inflight *on;        /* the connections they are on (none for out-of-band ones) */
    int non, con;           /* entries used, allocated */
    struct px_upstream *pinned; /* its own upstream connection, while it has state there */
    unsigned state;         /* PX_STATE_* */
    long nblocking;         /* blocking commands in flight */
    long markers;           /* pub/sub end markers in flight (see px_client.c) */
    long nwrites;           /* writes in flight: its reads skip the L1 until they are answered */
    px_buf multi_keys;      /* keys written inside MULTI, invalidated again at EXEC */
    int multi_flush;
    int multi_barrier;      /* a command queued in MULTI needs a barrier at EXEC */

    /* what hotproxy itself keeps for the connection */
    int db;
    int proto;              /* 2 or 3 */
    int authenticated;
    char *user;
    char *name;
    char *lib_name, *lib_ver;
    int reply_mode;         /* 0 on, 1 off, 2 skip the next command */
    int nsub, npsub, nssub; /* subscriptions, for CLIENT LIST: the sizes of subs[] */
    struct px_sub *subs[3]; /* channels, patterns, shard channels Redis confirmed (uthash sets by name) */
    int tx_lost;            /* a failover took its MULTI or WATCH: the next EXEC answers EXECABORT */
    int multi_failed;       /* a MULTI of its failed with its pinned connection (px_client_pinned_lost) */
    int resubscribing;      /* hotproxy's own re-subscribe on a new master is being confirmed */
    int resub_failed;       /* ... and Redis refused part of it */
    ev_timer rebuild;       /* re-subscribes once the failover's re-point is done */
    px_pool *rebuild_pool;  /* the pool its lost pinned connection was in */
    int following;          /* its shard channels' slot left its master (a Cluster): re-subscribing elsewhere */
    int follow_shard;       /* ... that slot */
    double follow_until;    /* ... given up (the client closed) if its new master is not known by then */
    int multi_queued;       /* commands queued in its MULTI, for CLIENT LIST */
    px_multi_cmd *mq;       /* the commands of its open MULTI, in order */
    int mq_len, mq_cap;
    int multi_dirty;        /* hotproxy refused a command of its MULTI: EXEC answers EXECABORT */
    int exec_local;         /* EXECs in flight that run local commands: what follows waits for them */
    uint64_t track_redir;   /* hotproxy id its CLIENT TRACKING redirects to (0: none) */
    int redirect_wait;      /* its CLIENT TRACKING REDIRECT waited once for the target's Redis id */
    /* Redis Cluster, CLIENT TRACKING (see px_client_track_switch): pinned is
     * its connection of the master its last command went to, tracks[] its
     * connections of the other masters, each with its tracking on too. */
    struct px_upstream **tracks;
    int ntracks, ctracks;
    px_buf track_cmds;      /* its CLIENT TRACKING ON commands, replayed on each new connection */
    int track_bcast;        /* BCAST: a connection on every master, so every master's writes reach it */
    int track_unconfirmed;  /* CLIENT TRACKING commands sent on tracks[] not answered yet */
    int track_flush_after;  /* a flush push waits for them (a BCAST connection just opened) */
    uint64_t track_prepared; /* ncommands + 1 of the CLIENT TRACKING command sent on tracks[] already */
    const char *track_err;  /* ... and why that failed (NULL: it did not) */
    const char *last_cmd;   /* the table's name of its last command */
    const struct px_command *cmd_hint; /* px_command_lookup_hint's, for its next command */
    uint64_t ncommands;

    px_buf rewrite;         /* a local handler's replacement for the command's bytes */
    px_pool *rewrite_pool;  /* ... the server it must reach (CLIENT UNBLOCK: the target's), NULL: the command's */
    int argv_cap;           /* scratch argv for the command being dispatched */
    const char **argv;
    size_t *argvlen;

    size_t mem;             /* its buffers' bytes, as counted in the server's clients_mem */
    int mem_bucket;         /* which of the server's mem_buckets it is in, -1 none */
    struct px_client *mprev, *mnext;

    double created, last_active;
    char addr[64];          /* "ip:port" of the peer */

    struct px_client *prev, *next;  /* the set's client list */
    UT_hash_handle hh;              /* the set's table by id (CLIENT KILL ID, LIST ID, UNBLOCK, REDIRECT) */
    struct px_client *wnext;        /* the set's write list */
    struct px_client *cnext;        /* the set's closing list */
} px_client;

/*
 * What the layer above does with a client's commands (px_dispatch: local,
 * the L1 or forwarded).  The client side calls it, never the reverse.
 */
typedef struct px_client_ops {
    /* A whole command was read (raw: its bytes; c->parser has its
     * arguments).  Returns 0 when it must wait (for c's in-flight replies,
     * or a connection): it stays unread, and is parsed again once
     * px_client_resume wakes c. */
    int (*dispatch)(void *arg, px_client *c, const char *raw, size_t rawlen);
    /* A reply is about to complete r, which carries the L1's marks (r->writes
     * or r->barrier): returns 1 when it is held and given to
     * px_client_reply again later (the L1's barrier). */
    int (*completing)(void *arg, px_req *r, const char *data, size_t len);
} px_client_ops;

/* Client memory buckets: below 32 KB, then one per power of two (Redis'
 * CLIENT_MEM_USAGE_BUCKETS). */
#define PX_CLIENT_MEM_BUCKETS 19

/*
 * Every client of one proxy instance: the list and table by id, the
 * memory of their buffers (kept up to date as they change, with the
 * clients in buckets by size, a power of two each, so the biggest are found
 * without a walk of every client, as Redis' client eviction does), and the
 * write and closing lists the loop works through before it sleeps.
 */
typedef struct px_clients {
    px_core *core;
    struct px_router *router;        /* where forwarded commands go */
    const px_client_ops *ops;        /* the layer above */
    void *ops_arg;
    void *owner;                     /* the instance that owns the set, for the layers above */
    px_client *clients;              /* every connected client */
    px_client *clients_by_id;        /* the same, in a uthash table by id */
    long nclients;
    uint64_t next_client_id;
    size_t clients_mem;
    px_client *mem_buckets[PX_CLIENT_MEM_BUCKETS];
    int clients_mem_warned;          /* over maxmemory-clients with nobody left to close: logged */
    px_client *write_clients;        /* clients with output to flush */
    px_client *closing;              /* clients to free from the loop */
    double tls_notice_at;            /* when a failed TLS handshake may be logged at notice again */
    uint64_t tls_failures_unlogged;  /* failed since the last such line (each one is logged at verbose) */
    px_req *req_free;                /* recycled request objects */
    long req_free_len;
} px_clients;

/* The connected client with that id (not one being closed), or NULL. */
px_client *px_clients_find(px_clients *set, uint64_t id);
/* Before the loop sleeps: write every client's output; then, past
 * maxmemory-clients, close clients, biggest first, until under it; then free
 * the closed ones.  px_clients_free_all: at exit. */
void px_clients_flush(px_clients *set);
void px_clients_reap(px_clients *set);
void px_clients_free_all(px_clients *set);

/* Take over an accepted socket. */
px_client *px_client_create(px_clients *set, int fd, const char *addr);
/*
 * Make c (just created, from tls-port) a TLS client with ctx (borrowed: the
 * session keeps its own reference): nothing is read until its handshake is
 * done, which is driven from the loop and bounded by
 * PX_CLIENT_TLS_HANDSHAKE_TIMEOUT seconds.  A handshake that fails or takes
 * longer closes c and counts in tls_handshake_failures.  -1 if c was closed
 * at once (no TLS session could be made).
 */
#define PX_CLIENT_TLS_HANDSHAKE_TIMEOUT 10.0
int px_client_tls_accept(px_client *c, px_tls_ctx *ctx);
static inline int px_client_is_tls(const px_client *c) { return c->tls != NULL; }
/* Close: stop I/O now, free later from the loop. */
void px_client_close(px_client *c, const char *why);

/* Forget the commands of its MULTI (EXEC, DISCARD, RESET, close). */
void px_client_multi_reset(px_client *c);
/* Wake a client holding a command (PX_CLIENT_HOLD) once nothing it waits for is in flight. */
void px_client_resume(px_client *c);

/* A request's reply (or an error standing in for it) has arrived. */
void px_client_reply(px_req *r, const char *data, size_t len);
/*
 * px_client_reply for bytes owned elsewhere, with a reference to them the
 * call takes (on every path: put once they are written or dropped).  A
 * reply of at least PX_CLIENT_REF_MIN bytes goes to the socket from where it
 * sits (an L1 value, an upstream's read buffer), also when it waits for an
 * earlier one; a smaller one is copied, as one write of many small replies
 * costs less than a writev of many small pieces.
 */
#ifndef PX_CLIENT_REF_MIN /* a build may set another, to measure */
#define PX_CLIENT_REF_MIN 4096
#endif
void px_client_reply_ref(px_req *r, const char *data, size_t len, void (*put)(void *obj), void *obj);
/* Answer r with "-<text>\r\n" built from fmt (as px_client_reply). */
void px_client_reply_error(px_req *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A frame its pinned connection received that answers no request (a push,
 * a pub/sub message, a MONITOR line): delivered in arrival order. */
void px_client_upstream_frame(px_client *c, struct px_upstream *u, const char *frame, size_t len);
/* Its pinned connection died: the state is gone, so is the client, once
 * the errors already queued are written.  When the connection was closed
 * by a failover's re-point (u->moved) the state is rebuilt where it can be
 * honestly: subscriptions are made again on the new master, a MULTI or
 * WATCH ends in EXECABORT at EXEC (tx_lost), a blocked command has had its
 * error; MONITOR and CLIENT TRACKING still close the client. */
void px_client_pinned_lost(px_client *c, struct px_upstream *u);
/* c's own SUNSUBSCRIBE of these shard channels (n 0: of all) goes
 * upstream: Redis' sunsubscribe for them answers it, and is not a slot
 * that moved to another master (which hotproxy follows, in a Cluster). */
void px_client_leaving(px_client *c, int n, const char *const *names, const size_t *lens);
/* Give up the pinned connection if no state needs it any more. */
void px_client_maybe_unpin(px_client *c);
/* Give up the pinned connection now (RESET, close). */
void px_client_drop_pinned(px_client *c);
/* Give c an upstream connection of its own because another client's
 * CLIENT TRACKING redirects to it (Redis needs a connection id to send the
 * invalidations to); it keeps it until RESET.  -1 with err if it cannot. */
int px_client_pin_redirect_target(px_client *c, const char **err);

/*
 * Redis Cluster, a client in CLIENT TRACKING: Redis tracks the keys a
 * connection read on the node that served them, so the client holds a
 * connection of its own on each master it sends commands to, with the same
 * CLIENT TRACKING commands replayed there (their replies dropped), and the
 * invalidations of every one reach it.  px_client_tracks_across: c is such
 * a client (tracking is its only state).  px_client_track_switch makes c's
 * connection of pool's master its pinned one, opening it if need be (NULL
 * with err when it cannot); the one it replaces is kept in c->tracks.
 * px_client_track_cmd: c's CLIENT TRACKING command (its bytes) is about to
 * be sent on c->pinned (pinned first on the router's default pool if c has
 * none): the other connections get it now; ON is kept for the ones opened
 * later (bcast: opened on every master now), OFF forgets them (closed once
 * idle).  px_clients_keys_moved (a px_router_on_keys_moved
 * hook, arg the set): keys served by p may now be another master's, whose
 * connection never tracked what the client read: a tracking client that
 * read through p is told to flush everything (RESP3: an invalidate push
 * with a null, as Redis sends on FLUSHALL).
 */
int px_client_tracks_across(const px_client *c);
/* CLIENT TRACKING commands sent on c's other connections and not yet
 * answered: c's next CLIENT TRACKING waits for them (px_client_resume). */
static inline int px_client_track_unconfirmed(const px_client *c) { return c->track_unconfirmed; }
struct px_upstream *px_client_track_switch(px_client *c, px_pool *pool, const char **err);
int px_client_track_cmd(px_client *c, const char *cmd, size_t len, int on, int bcast, const char **err);
void px_clients_keys_moved(struct px_router *r, px_pool *p, void *arg);

/*
 * The dispatcher's side of a request.  A new request at the tail of c's
 * queue; a slot in c's open MULTI; a connection of c's own for this pool, or
 * the shared one its next request goes on (where its requests in flight
 * are, if any).
 */
px_req *px_client_req_new(px_client *c);
px_multi_cmd *px_client_mq_push(px_client *c);
struct px_upstream *px_client_pin(px_client *c, px_pool *pool, const char **err);
struct px_upstream *px_client_pick(px_client *c, px_pool *pool);
/*
 * Forward r's command (raw) on u; its reply completes r.  noreply: what
 * Redis sends back is not a reply to it (pub/sub confirmations are pushes in
 * RESP3, and everything is a frame in RESP2 pub/sub mode), so r is complete
 * now, with no bytes of its own.  oob: u is an out-of-band connection,
 * which orders nothing after it.
 */
void px_client_forward(px_client *c, px_req *r, struct px_upstream *u, const char *raw, size_t rawlen, int noreply,
                       int oob);
/* r is answered later by someone else's request on u (an L1 fill it waits
 * on): until then it counts as in flight there, so c's next commands keep
 * their order behind it. */
void px_client_await(px_client *c, px_req *r, struct px_upstream *u);
/* A reply that reached r through another request on u (an L1 fill it
 * waited on), whose command's bytes were cmd: the topology sees it first,
 * as it sees r's own (a Cluster redirect sends r on to the right node,
 * with cmd), then r is answered as px_client_reply. */
void px_client_reply_via(px_req *r, struct px_upstream *u, const char *cmd, size_t cmdlen, const char *reply,
                         size_t len);
/* A part of one of c's requests (a command split across Cluster nodes)
 * is in flight on u, outside any px_req: c's next commands to u's pool keep
 * their order behind it until px_client_release, which may wake c. */
void px_client_hold(px_client *c, struct px_upstream *u);
void px_client_release(px_client *c, struct px_upstream *u);
/* r may write: c's reads skip the L1 until its reply (px_client_writes). */
void px_client_note_write(px_client *c, px_req *r);
static inline long px_client_writes(const px_client *c) { return c->nwrites; }
/* The connection of this pool c's in-flight requests are on, or NULL when
 * none is: c's next request for that pool goes there, or waits. */
struct px_upstream *px_client_inflight_on(const px_client *c, const px_pool *pool);
/* The command being dispatched: returns its argument count, with argv[0]
 * its name; the arrays are c's and live until its next command is read. */
static inline int px_client_args(const px_client *c, const char *const **argv, const size_t **argvlen)
{
    *argv = c->argv;
    *argvlen = c->argvlen;
    return c->parser.argc;
}
/* What c selected: its database and protocol (2 or 3), and whether its
 * commands are being queued in a MULTI. */
static inline int px_client_db(const px_client *c) { return c->db; }
static inline int px_client_proto(const px_client *c) { return c->proto; }
static inline int px_client_in_multi(const px_client *c) { return (c->state & PX_STATE_MULTI) != 0; }
/* A failover closed its pinned connection and hotproxy is subscribing it
 * again on the new master: its commands wait until that is done. */
static inline int px_client_rebuilding(const px_client *c) { return ev_is_active(&c->rebuild) || c->resubscribing; }
/*
 * What c's queued MULTI commands write, kept with its transaction (freed
 * with it on close): keys ([u32 len][key]..., appended), whether they
 * need a flush, a barrier.  px_client_multi_take hands it all over (keys
 * NULL: dropped, a DISCARD) and starts it empty again.
 */
void px_client_multi_note(px_client *c, const char *keys, size_t len, int flush, int barrier);
void px_client_multi_take(px_client *c, px_buf *keys, int *flush, int *barrier);
/*
 * What the commands hotproxy answers itself change about a client: who it
 * is (AUTH), its name and library (CLIENT SETNAME / SETINFO, HELLO's
 * SETNAME; len 0: no name), its protocol (HELLO) and database (SELECT),
 * whether replies are sent (CLIENT REPLY: 0 on, 1 off, 2 skip the next),
 * where its CLIENT TRACKING redirects (a hotproxy client id, 0 none), a
 * redirect waiting once for its target's Redis id, and RESET, which
 * returns it to a new connection's state (dropping its pinned connection
 * and its MULTI).  px_client_close_after_reply: QUIT, CLIENT KILL of itself.
 */
void px_client_login(px_client *c, const char *user, size_t len);
void px_client_set_name(px_client *c, const char *name, size_t len);
void px_client_set_lib(px_client *c, int which /* 0 lib-name, 1 lib-ver */, const char *v, size_t len);
static inline void px_client_set_proto(px_client *c, int proto) { c->proto = proto; }
static inline void px_client_select(px_client *c, int db) { c->db = db; }
static inline void px_client_set_reply_mode(px_client *c, int mode) { c->reply_mode = mode; }
static inline void px_client_set_track_redirect(px_client *c, uint64_t id) { c->track_redir = id; }
static inline void px_client_set_redirect_wait(px_client *c, int on) { c->redirect_wait = on; }
static inline void px_client_close_after_reply(px_client *c) { c->flags |= PX_CLIENT_CLOSE_AFTER_REPLY; }
void px_client_reset(px_client *c);

/* A marker behind what c sent on its pinned connection u: its next command
 * waits until every frame before it is in (see px_dispatch.c). */
void px_client_marker(px_client *c, struct px_upstream *u);

/* Write what is buffered; returns -1 if the client was closed. */
int px_client_flush(px_client *c);
/* Stop reading (graceful shutdown). */
void px_client_stop_reading(px_client *c);
/* 1 if nothing is queued or buffered for this client. */
int px_client_idle(const px_client *c);

void px_req_free(px_clients *set, px_req *r);

#endif
