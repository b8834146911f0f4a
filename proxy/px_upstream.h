/*
 * px_upstream: connections to a Redis server, and pools of them.
 *
 * An upstream connection carries pipelined requests: it writes their bytes
 * as the client sent them and keeps the requests in a FIFO; each reply the
 * scanner frames completes the oldest.  A connection that fails or stops
 * answering (upstream-timeout) answers every request it holds with an error
 * and reconnects with exponential backoff.
 *
 * A pool is the shared path to one server: a few connections multiplexing
 * many clients.  To keep read-your-writes, a client stays on the connection
 * it already has requests on; only an idle client may move to the least
 * loaded one.  (A connection of a client's own, for MULTI or BLPOP, is a
 * px_upstream with pool == NULL and the same code.)
 */
#ifndef PX_UPSTREAM_H
#define PX_UPSTREAM_H

#include <ev.h>

#include "proxy/px_buf.h"
#include "proxy/px_resp.h"

struct px_server;
struct px_req;
struct px_client;
struct px_pool;

typedef enum {
    PX_UP_DOWN,        /* not connected; retry after backoff */
    PX_UP_CONNECTING,
    PX_UP_READY,
} px_up_state;

typedef struct px_upstream {
    struct px_server *srv;
    struct px_pool *pool;
    int fd;
    px_up_state state;
    ev_io rw, ww;
    ev_timer timer;          /* connect timeout, then reconnect backoff */
    px_buf in, out;
    px_reply_scanner scan;

    struct px_req *shead, *stail; /* requests awaiting their reply, oldest first */
    long nsent;

    double backoff;          /* seconds to wait before the next attempt */
    char errstr[160];        /* why it is down, for error replies and INFO */
    unsigned in_write_list : 1, write_armed : 1;
    struct px_upstream *wnext;
} px_upstream;

typedef struct px_pool {
    struct px_server *srv;
    char *host;
    int port;
    char name[300];          /* "host:port" */
    int nconns;
    px_upstream *conns;
    unsigned rr;
} px_pool;

px_pool *px_pool_create(struct px_server *s, const char *host, int port, int nconns);
void px_pool_destroy(px_pool *p);
/*
 * The connection client c's next request should use, or NULL when every
 * connection is down (the caller answers with px_pool_unavailable()).
 */
px_upstream *px_pool_pick(px_pool *p, struct px_client *c);
const char *px_pool_unavailable(px_pool *p);
/* Fail requests that waited longer than timeout_ms; called from the cron. */
void px_pool_cron(px_pool *p, double now, long long timeout_ms);
/* Append "name:value\r\n" lines about the pool to out. */
void px_pool_info(px_pool *p, px_buf *out);

/*
 * Queue r on u and the bytes of its command for writing.  Takes r: it is
 * answered (by Redis, or by an error) exactly once, through px_client_reply.
 */
void px_upstream_send(px_upstream *u, struct px_req *r, const char *cmd, size_t len);
/* Write buffered bytes; returns -1 if the connection failed. */
int px_upstream_flush(px_upstream *u);
/* 1 if the connection has nothing in flight. */
static inline int px_upstream_idle(const px_upstream *u) { return u->nsent == 0; }

#endif
