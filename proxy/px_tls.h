/*
 * px_tls: TLS on a non-blocking socket, with OpenSSL 3.
 *
 * Two kinds of context, each made from the configuration: the one clients
 * meet on tls-port (px_tls_server_ctx: tls-cert-file, tls-key-file,
 * tls-ca-cert-file, tls-auth-clients, tls-protocols, tls-ciphers,
 * tls-ciphersuites) and the one hotproxy uses towards Redis
 * (px_tls_client_ctx: upstream-tls-*).  A context is immutable once made; a
 * reload makes a new one and drops the old one, and connections made with
 * the old one keep it (OpenSSL counts the references) until they close.
 *
 * A px_tls is one connection's TLS state over a socket someone else owns and
 * watches.  Its calls read(2)/write(2)-like and never block: they return -1
 * with errno EAGAIN when the socket is not ready, and px_tls_want_write()
 * then says which readiness to wait for (TLS may need to write while reading
 * and the other way round).  A TLS failure is -1 with errno EPROTO and the
 * reason in px_tls_error().  This module knows a file descriptor and
 * certificates, nothing of clients, pools or the event loop.
 */
#ifndef PX_TLS_H
#define PX_TLS_H

#include <stddef.h>
#include <sys/types.h>

#include "proxy/px_config.h"

/* tls-auth-clients */
enum { PX_TLS_AUTH_NO, PX_TLS_AUTH_YES, PX_TLS_AUTH_OPTIONAL };

typedef struct px_tls_ctx px_tls_ctx;
typedef struct px_tls px_tls;

/*
 * A context for accepting clients on tls-port, or NULL with err set (the
 * directive and the file at fault, and OpenSSL's reason).  The certificate
 * and key are checked against each other here, so a bad file is found at
 * startup or reload, not at the first client.
 */
px_tls_ctx *px_tls_server_ctx(const px_config *c, char *err, size_t errlen);
/*
 * A context for connecting to Redis with upstream-tls: the peer's
 * certificate is verified against upstream-tls-ca-cert-file/-dir (the
 * system's store when both are empty) unless upstream-tls-verify is no;
 * upstream-tls-cert-file/-key-file is hotproxy's own certificate (mutual TLS).
 */
px_tls_ctx *px_tls_client_ctx(const px_config *c, char *err, size_t errlen);
void px_tls_ctx_free(px_tls_ctx *x);
/* 1 if the context asks clients for a certificate. */
int px_tls_ctx_auth(const px_tls_ctx *x);
/* When the context's own certificate stops being valid (unix time), 0 when it has none. */
long long px_tls_ctx_not_after(const px_tls_ctx *x);

/*
 * TLS on fd (connected, non-blocking; the caller keeps owning it).  accept:
 * 1 on the server side.  On the client side, sni is sent as the server name
 * (NULL or "": none), and name, when not NULL, must match the peer's
 * certificate (a DNS name, or an IP address compared with its IP SANs); the
 * chain is verified when the context says so.  NULL with err on failure.
 */
px_tls *px_tls_new(px_tls_ctx *x, int fd, int accept, const char *sni, const char *name, char *err, size_t errlen);
/* Sends close_notify if it can without waiting, then frees.  NULL is fine. */
void px_tls_free(px_tls *t);

/* Drive the handshake: 1 done, 0 not yet (wait as px_tls_want_write says), -1 failed (px_tls_error). */
int px_tls_handshake(px_tls *t);
/*
 * As read(2): bytes read (a record's, or what TLS holds decrypted, up to
 * len; records still in the socket wake the loop as plain bytes do), 0 when the
 * peer closed, -1 with errno EAGAIN or EPROTO.  Bytes TLS already decrypted
 * but that did not fit are kept: px_tls_pending() says so, and the caller
 * must read again without waiting for the socket (it will not wake).
 */
ssize_t px_tls_read(px_tls *t, void *buf, size_t len);
/*
 * As write(2): bytes written (maybe fewer than len), -1 with errno EAGAIN,
 * EPIPE or EPROTO.  After EAGAIN the same bytes must be offered again (they
 * may move; more may follow them).
 */
ssize_t px_tls_write(px_tls *t, const void *buf, size_t len);
size_t px_tls_pending(const px_tls *t);
/* After EAGAIN (or a handshake's 0): 1 to wait until the socket is writable, 0 readable. */
int px_tls_want_write(const px_tls *t);
/* The reason of the last failure: OpenSSL's, with the verification result when a certificate was refused. */
const char *px_tls_error(const px_tls *t);
/* "TLSv1.3" and the like, once the handshake is done; "" before. */
const char *px_tls_version(const px_tls *t);
/* 1 if the peer showed a certificate that verified. */
int px_tls_peer_verified(const px_tls *t);

#endif
