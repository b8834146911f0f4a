/*
 * px_metrics: the Prometheus page (metrics-port), a small HTTP/1.1 server on
 * the proxy's own event loop.
 *
 * It serves GET and HEAD /metrics (a query string is ignored) in the text
 * exposition format 0.0.4, with keep-alive, requests split across reads and
 * pipelined ones answered in order; anything else gets 400, 404, 405 or 431
 * and, when the connection cannot be trusted to frame its next request,
 * is closed.  It knows nothing of what it serves: the page is written by the
 * callback it is given (px_server's, which walks the registry), so it sits
 * low, beside the counters, and nothing below it changes.
 *
 * Bounds, so the page never costs Redis traffic more than its own work:
 * at most PX_METRICS_MAX_CONNS connections (more are closed at accept), a
 * request's head at most PX_METRICS_MAX_HEAD bytes, one response buffered
 * per connection (a pipelined request waits, unread past the head limit,
 * until the previous response is written: a slow reader holds one page),
 * and a connection idle for PX_METRICS_IDLE seconds is closed.  Sockets are
 * non-blocking; nothing waits.
 */
#ifndef PX_METRICS_H
#define PX_METRICS_H

#include <stddef.h>

#include "proxy/px_buf.h"
#include "proxy/px_core.h"

#define PX_METRICS_MAX_CONNS 64
#define PX_METRICS_MAX_HEAD 8192
#define PX_METRICS_IDLE 30.0

/* Appends the page's body (the exposition text) to out. */
typedef void (*px_metrics_page_fn)(void *arg, px_buf *out);

typedef struct px_metrics px_metrics;

/*
 * Listen on k->cfg's metrics-bind and metrics-port (which must not be 0)
 * and serve page(arg) there.  NULL with err set when it cannot listen.
 */
px_metrics *px_metrics_create(px_core *k, px_metrics_page_fn page, void *arg, char *err, size_t errlen);
/* Close the listener and every connection (at exit, or a graceful stop). */
void px_metrics_destroy(px_metrics *m);

#endif
