/*
 * px_client: one client connection and its requests.
 *
 * Each request read becomes a px_req in the client's queue, in arrival order.
 * A request is answered locally or forwarded; replies may complete in any
 * order (local ones at once, forwarded ones when upstream answers) but are
 * written strictly in queue order: a reply for the head of the queue goes
 * straight into the output buffer, one for a later request waits in the
 * request until everything before it is written.
 *
 * A request outlives its client: when a client goes away with requests in
 * flight, they stay in their upstream's queue with client == NULL so the
 * replies still line up, and are dropped as they arrive.
 */
#ifndef PX_CLIENT_H
#define PX_CLIENT_H

#include <ev.h>
#include <stdint.h>

#include "proxy/px_buf.h"
#include "proxy/px_resp.h"

struct px_server;
struct px_upstream;
struct px_command;
struct px_req;

/* Called with a forwarded request's reply before it is delivered; may
 * replace the bytes by appending others to out (then returns 1). */
typedef int (*px_reply_hook)(struct px_req *r, const char *reply, size_t len, px_buf *out);

typedef struct px_req {
    struct px_client *client;      /* NULL once the client has gone */
    struct px_req *next;           /* client queue */
    struct px_req *up_next;        /* upstream in-flight queue */
    const struct px_command *cmd;  /* NULL: unknown command */
    double sent_at;                /* when it was queued upstream */
    char *reply;                   /* stored reply, when it completed out of order */
    size_t reply_len;
    unsigned done : 1;
    unsigned forwarded : 1;        /* in an upstream's queue, unanswered */
    px_reply_hook hook;
    unsigned hook_flags;           /* the hook's own argument */
} px_req;

enum {
    PX_CLIENT_CLOSE_AFTER_REPLY = 1 << 0, /* QUIT, protocol error: close once written */
    PX_CLIENT_CLOSING = 1 << 1,           /* in the server's closing list */
    PX_CLIENT_PAUSED = 1 << 2,            /* not read: too many requests in flight */
    PX_CLIENT_IN_WRITE_LIST = 1 << 3,
    PX_CLIENT_WRITE_ARMED = 1 << 4,       /* write watcher started (socket was full) */
};

typedef struct px_client {
    struct px_server *srv;
    uint64_t id;
    int fd;
    unsigned flags;
    ev_io rw, ww;
    px_buf in, out;
    px_req_parser parser;

    px_req *qhead, *qtail;  /* requests in arrival order, not yet written */
    long nqueued;
    long ninflight;         /* of those, forwarded and unanswered */
    struct px_upstream *up; /* shared connection its in-flight requests are on */

    int argv_cap;           /* scratch argv for the command being dispatched */
    const char **argv;
    size_t *argvlen;

    double created, last_active;
    char addr[64];          /* "ip:port" of the peer */

    struct px_client *prev, *next;  /* server's client list */
    struct px_client *wnext;        /* server's write list */
    struct px_client *cnext;        /* server's closing list */
} px_client;

/* Take over an accepted socket. */
px_client *px_client_create(struct px_server *s, int fd, const char *addr);
/* Free a client the server reaped; only px_server calls this. */
void px_client_free(px_client *c);
/* Close: stop I/O now, free later from the loop. */
void px_client_close(px_client *c, const char *why);

/* A request's reply (or an error standing in for it) has arrived. */
void px_client_reply(px_req *r, const char *data, size_t len);
/* Answer r with "-<text>\r\n" built from fmt (as px_client_reply). */
void px_client_reply_error(px_req *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Write what is buffered; returns -1 if the client was closed. */
int px_client_flush(px_client *c);
/* Stop reading (graceful shutdown). */
void px_client_stop_reading(px_client *c);
/* 1 if nothing is queued or buffered for this client. */
int px_client_idle(const px_client *c);

void px_req_free(struct px_server *s, px_req *r);

#endif
