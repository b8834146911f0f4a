/*
 * px_tls: OpenSSL contexts from the configuration, and non-blocking TLS
 * reads and writes on a socket.  See px_tls.h.
 */
#include "proxy/px_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

struct px_tls_ctx {
    SSL_CTX *ctx;
    int auth; /* asks the peer for a certificate */
};

struct px_tls {
    SSL *ssl;
    int want_write;
    int done;       /* handshake finished */
    char err[256];
};

static void seterr(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (!err || !errlen) return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* OpenSSL's queued reasons, oldest first, "; "-separated, and the queue emptied. */
static void ssl_reasons(char *buf, size_t len)
{
    unsigned long e;
    size_t used = 0;
    buf[0] = '\0';
    while ((e = ERR_get_error()) != 0) {
        char one[200];
        ERR_error_string_n(e, one, sizeof(one));
        if (used + 3 < len) used += (size_t)snprintf(buf + used, len - used, "%s%s", used ? "; " : "", one);
    }
    if (!buf[0]) snprintf(buf, len, "no reason given by OpenSSL");
}

static int is_set(const char *s)
{
    return s && *s;
}

/* tls-protocols: "TLSv1.2 TLSv1.3" (Redis' spelling); "" is TLSv1.2 and up. */
static int set_protocols(SSL_CTX *ctx, const char *spec, char *err, size_t errlen)
{
    static const struct {
        const char *name;
        int version;
    } known[] = {{"TLSv1", TLS1_VERSION}, {"TLSv1.1", TLS1_1_VERSION}, {"TLSv1.2", TLS1_2_VERSION}, {"TLSv1.3", TLS1_3_VERSION}};
    int lo = 0, hi = 0;
    if (!is_set(spec)) {
        lo = TLS1_2_VERSION;
    } else {
        char *copy = strdup(spec), *save = NULL;
        for (char *w = strtok_r(copy, " \t,", &save); w; w = strtok_r(NULL, " \t,", &save)) {
            size_t i;
            for (i = 0; i < sizeof(known) / sizeof(known[0]); i++)
                if (!strcasecmp(w, known[i].name)) break;
            if (i == sizeof(known) / sizeof(known[0])) {
                seterr(err, errlen, "tls-protocols: unknown protocol '%s' (TLSv1, TLSv1.1, TLSv1.2, TLSv1.3)", w);
                free(copy);
                return -1;
            }
            if (!lo || known[i].version < lo) lo = known[i].version;
            if (known[i].version > hi) hi = known[i].version;
        }
        free(copy);
        if (!lo) {
            seterr(err, errlen, "tls-protocols: no protocol named");
            return -1;
        }
    }
    if (!SSL_CTX_set_min_proto_version(ctx, lo) || (hi && !SSL_CTX_set_max_proto_version(ctx, hi))) {
        char why[256];
        ssl_reasons(why, sizeof(why));
        seterr(err, errlen, "tls-protocols '%s': %s", spec ? spec : "", why);
        return -1;
    }
    return 0;
}

static SSL_CTX *new_ctx(int server, char *err, size_t errlen)
{
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (!ctx) {
        char why[256];
        ssl_reasons(why, sizeof(why));
        seterr(err, errlen, "TLS: cannot make a context: %s", why);
        return NULL;
    }
    /* Partial writes: a write takes what the socket takes, as write(2) does;
     * the caller's buffer may move between a write and its retry. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* A peer that closes without close_notify (most Redis clients) has closed,
     * not failed; renegotiation is a way to make a server work, not needed. */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    return ctx;
}

/* The certificate (chain) and key of one side, checked against each other. */
static int load_pair(SSL_CTX *ctx, const char *cert_dir, const char *cert, const char *key_dir, const char *key,
                     char *err, size_t errlen)
{
    char why[256];
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        ssl_reasons(why, sizeof(why));
        seterr(err, errlen, "%s %s: %s", cert_dir, cert, why);
        return -1;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        int mismatch = ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH;
        ssl_reasons(why, sizeof(why));
        if (mismatch)
            seterr(err, errlen, "%s %s does not match %s %s: %s", key_dir, key, cert_dir, cert, why);
        else
            seterr(err, errlen, "%s %s: %s", key_dir, key, why);
        return -1;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        ssl_reasons(why, sizeof(why));
        seterr(err, errlen, "%s %s does not match %s %s: %s", key_dir, key, cert_dir, cert, why);
        return -1;
    }
    return 0;
}

static int load_ca(SSL_CTX *ctx, const char *file_dir, const char *file, const char *dir_dir, const char *dir, char *err,
                   size_t errlen)
{
    char why[256];
    if (SSL_CTX_load_verify_locations(ctx, is_set(file) ? file : NULL, is_set(dir) ? dir : NULL) != 1) {
        ssl_reasons(why, sizeof(why));
        if (is_set(file))
            seterr(err, errlen, "%s %s: %s", file_dir, file, why);
        else
            seterr(err, errlen, "%s %s: %s", dir_dir, dir, why);
        return -1;
    }
    return 0;
}

px_tls_ctx *px_tls_server_ctx(const px_config *c, char *err, size_t errlen)
{
    if (!is_set(c->tls_cert_file) || !is_set(c->tls_key_file)) {
        seterr(err, errlen, "tls-port needs tls-cert-file and tls-key-file");
        return NULL;
    }
    if (c->tls_auth_clients != PX_TLS_AUTH_NO && !is_set(c->tls_ca_cert_file) && !is_set(c->tls_ca_cert_dir)) {
        /* Redis' own rule and wording */
        seterr(err, errlen, "Either tls-ca-cert-file or tls-ca-cert-dir must be specified when tls-auth-clients is enabled");
        return NULL;
    }
    SSL_CTX *ctx = new_ctx(1, err, errlen);
    if (!ctx) return NULL;
    char why[256];
    if (set_protocols(ctx, c->tls_protocols, err, errlen) < 0) goto fail;
    if (load_pair(ctx, "tls-cert-file", c->tls_cert_file, "tls-key-file", c->tls_key_file, err, errlen) < 0) goto fail;
    if (is_set(c->tls_ca_cert_file) || is_set(c->tls_ca_cert_dir)) {
        if (load_ca(ctx, "tls-ca-cert-file", c->tls_ca_cert_file, "tls-ca-cert-dir", c->tls_ca_cert_dir, err, errlen) < 0)
            goto fail;
        if (is_set(c->tls_ca_cert_file)) {
            STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(c->tls_ca_cert_file);
            if (names) SSL_CTX_set_client_CA_list(ctx, names);
        }
    }
    if (is_set(c->tls_ciphers) && SSL_CTX_set_cipher_list(ctx, c->tls_ciphers) != 1) {
        ssl_reasons(why, sizeof(why));
        seterr(err, errlen, "tls-ciphers '%s': %s", c->tls_ciphers, why);
        goto fail;
    }
    if (is_set(c->tls_ciphersuites) && SSL_CTX_set_ciphersuites(ctx, c->tls_ciphersuites) != 1) {
        ssl_reasons(why, sizeof(why));
        seterr(err, errlen, "tls-ciphersuites '%s': %s", c->tls_ciphersuites, why);
        goto fail;
    }
    if (c->tls_prefer_server_ciphers) SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
    int auth = 0;
    switch (c->tls_auth_clients) {
    case PX_TLS_AUTH_YES:
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        auth = 1;
        break;
    case PX_TLS_AUTH_OPTIONAL:
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        auth = 1;
        break;
    default:
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
        break;
    }
    /* Resumed sessions of verified clients need an id context, or OpenSSL refuses them. */
    static const unsigned char sid[] = "hotproxy";
    SSL_CTX_set_session_id_context(ctx, sid, sizeof(sid) - 1);
    px_tls_ctx *x = calloc(1, sizeof(*x));
    if (!x) abort();
    x->ctx = ctx;
    x->auth = auth;
    return x;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

px_tls_ctx *px_tls_client_ctx(const px_config *c, char *err, size_t errlen)
{
    if (is_set(c->upstream_tls_cert_file) != is_set(c->upstream_tls_key_file)) {
        seterr(err, errlen, "upstream-tls-cert-file and upstream-tls-key-file go together (mutual TLS)");
        return NULL;
    }
    SSL_CTX *ctx = new_ctx(0, err, errlen);
    if (!ctx) return NULL;
    if (set_protocols(ctx, NULL, err, errlen) < 0) goto fail;
    if (is_set(c->upstream_tls_cert_file) &&
        load_pair(ctx, "upstream-tls-cert-file", c->upstream_tls_cert_file, "upstream-tls-key-file",
                  c->upstream_tls_key_file, err, errlen) < 0)
        goto fail;
    if (c->upstream_tls_verify) {
        if (is_set(c->upstream_tls_ca_cert_file) || is_set(c->upstream_tls_ca_cert_dir)) {
            if (load_ca(ctx, "upstream-tls-ca-cert-file", c->upstream_tls_ca_cert_file, "upstream-tls-ca-cert-dir",
                        c->upstream_tls_ca_cert_dir, err, errlen) < 0)
                goto fail;
        } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
            char why[256];
            ssl_reasons(why, sizeof(why));
            seterr(err, errlen, "upstream-tls: the system's certificate store: %s", why);
            goto fail;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    px_tls_ctx *x = calloc(1, sizeof(*x));
    if (!x) abort();
    x->ctx = ctx;
    x->auth = c->upstream_tls_verify != 0;
    return x;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

void px_tls_ctx_free(px_tls_ctx *x)
{
    if (!x) return;
    SSL_CTX_free(x->ctx); /* connections made with it hold their own references */
    free(x);
}

int px_tls_ctx_auth(const px_tls_ctx *x)
{
    return x->auth;
}

long long px_tls_ctx_not_after(const px_tls_ctx *x)
{
    X509 *cert = SSL_CTX_get0_certificate(x->ctx);
    struct tm tm;
    if (!cert || ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) != 1) return 0;
    return (long long)timegm(&tm);
}

static int is_ip(const char *s)
{
    unsigned char b[16];
    return inet_pton(AF_INET, s, b) == 1 || inet_pton(AF_INET6, s, b) == 1;
}

px_tls *px_tls_new(px_tls_ctx *x, int fd, int accept, const char *sni, const char *name, char *err, size_t errlen)
{
    char why[256];
    ERR_clear_error();
    SSL *ssl = SSL_new(x->ctx);
    if (!ssl || SSL_set_fd(ssl, fd) != 1) goto fail;
    if (accept) {
        SSL_set_accept_state(ssl);
    } else {
        SSL_set_connect_state(ssl);
        /* SNI is a host name; an IP address is never sent as one (RFC 6066) */
        if (is_set(sni) && !is_ip(sni) && SSL_set_tlsext_host_name(ssl, sni) != 1) goto fail;
        if (is_set(name)) {
            if (is_ip(name)) {
                if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) != 1) goto fail;
            } else if (SSL_set1_host(ssl, name) != 1) {
                goto fail;
            }
        }
    }
    px_tls *t = calloc(1, sizeof(*t));
    if (!t) abort();
    t->ssl = ssl;
    return t;
fail:
    ssl_reasons(why, sizeof(why));
    seterr(err, errlen, "TLS: %s", why);
    SSL_free(ssl);
    return NULL;
}

void px_tls_free(px_tls *t)
{
    if (!t) return;
    if (t->done) {
        /* one attempt at close_notify; a peer gone already is no matter */
        ERR_clear_error();
        SSL_shutdown(t->ssl);
    }
    ERR_clear_error();
    SSL_free(t->ssl);
    free(t);
}

/* Classify a failed OpenSSL call into errno and t->err; returns -1 or 0 (closed). */
static int failed(px_tls *t, int rc)
{
    int e = SSL_get_error(t->ssl, rc);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        t->want_write = 0;
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_WANT_WRITE:
        t->want_write = 1;
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        if (errno == 0 || errno == EAGAIN) {
            /* EOF outside a record, or nothing said: the peer is gone */
            ERR_clear_error();
            return 0;
        }
        snprintf(t->err, sizeof(t->err), "%s", strerror(errno));
        ERR_clear_error();
        return -1;
    default: {
        char why[200];
        long v = SSL_get_verify_result(t->ssl);
        ssl_reasons(why, sizeof(why));
        if (v != X509_V_OK)
            snprintf(t->err, sizeof(t->err), "certificate refused: %s (%s)", X509_verify_cert_error_string(v), why);
        else
            snprintf(t->err, sizeof(t->err), "%s", why);
        errno = EPROTO;
        return -1;
    }
    }
}

int px_tls_handshake(px_tls *t)
{
    if (t->done) return 1;
    ERR_clear_error();
    int rc = SSL_do_handshake(t->ssl);
    if (rc == 1) {
        t->done = 1;
        return 1;
    }
    int r = failed(t, rc);
    if (r < 0 && errno == EAGAIN) return 0;
    if (r == 0) snprintf(t->err, sizeof(t->err), "connection closed during the TLS handshake");
    return -1;
}

ssize_t px_tls_read(px_tls *t, void *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        size_t n = 0;
        ERR_clear_error();
        int rc = SSL_read_ex(t->ssl, (char *)buf + got, len - got, &n);
        if (rc == 1) {
            got += n;
            /* Only what OpenSSL holds decrypted: asking the socket again
             * would mostly cost a read(2) that says EAGAIN; records still in
             * the socket wake the loop as plain bytes do. */
            if (!SSL_pending(t->ssl)) break;
            continue;
        }
        int saved = errno;
        int r = failed(t, rc);
        if (got) {
            /* what was read is the caller's; the close or the error shows again on the next call */
            errno = saved;
            return (ssize_t)got;
        }
        return r;
    }
    return (ssize_t)got;
}

ssize_t px_tls_write(px_tls *t, const void *buf, size_t len)
{
    size_t n = 0;
    if (!len) return 0;
    ERR_clear_error();
    int rc = SSL_write_ex(t->ssl, buf, len, &n);
    if (rc == 1) return (ssize_t)n;
    int r = failed(t, rc);
    if (r == 0) {
        errno = EPIPE; /* the peer closed: writing on is a broken pipe */
        snprintf(t->err, sizeof(t->err), "%s", strerror(EPIPE));
        return -1;
    }
    return -1;
}

size_t px_tls_pending(const px_tls *t)
{
    return (size_t)SSL_pending(t->ssl);
}

int px_tls_want_write(const px_tls *t)
{
    return t->want_write;
}

const char *px_tls_error(const px_tls *t)
{
    return t->err[0] ? t->err : "TLS failure";
}

const char *px_tls_version(const px_tls *t)
{
    return t->done ? SSL_get_version(t->ssl) : "";
}

int px_tls_peer_verified(const px_tls *t)
{
    X509 *peer = SSL_get1_peer_certificate(t->ssl);
    int ok = peer && SSL_get_verify_result(t->ssl) == X509_V_OK;
    X509_free(peer);
    return ok;
}
