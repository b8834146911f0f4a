/*
 * px_blocking: a blocking request/reply connection to a Redis or a
 * Sentinel, for the checks that run at startup before the loop does
 * (topology auto's INFO probe, Sentinel discovery's questions and its ROLE
 * check).  It speaks TLS when the core has an upstream-tls context, named
 * and verified as the loop's own connections are (px_upstream), so a check
 * reaches exactly what the pools will; hiredis' blocking client (0.14 from
 * Debian) cannot, having no TLS.
 *
 * Connecting (with TLS' handshake) and each command with its reply are
 * each bounded by the timeout given at connect; a TLS handshake that fails
 * or times out counts in the core's upstream_tls_failures, as on the loop.  Replies are hiredis' redisReply, decoded
 * by px_resp (the module that reads RESP).
 */
#ifndef PX_BLOCKING_H
#define PX_BLOCKING_H

#include <stddef.h>

#include "proxy/px_core.h"

struct redisReply;
typedef struct px_blocking px_blocking;

/* Connected (and through TLS' handshake), or NULL with why set. */
px_blocking *px_blocking_connect(px_core *k, const char *host, int port, long long timeout_ms, char *why,
                                 size_t whylen);
/* The reply (freeReplyObject it), or NULL when the connection failed or
 * timed out: px_blocking_error says why, and the connection is unusable. */
struct redisReply *px_blocking_command(px_blocking *b, int argc, const char *const *argv);
const char *px_blocking_error(const px_blocking *b);
void px_blocking_close(px_blocking *b);

#endif
