/*
 * test_tls: px_tls over a socketpair: contexts from the configuration,
 * non-blocking handshakes driven by hand, data both ways through partial
 * writes and EAGAIN, bytes left decrypted (px_tls_pending), and refusals
 * (no client certificate, an unknown CA, a wrong name, bad files) with the
 * reason in the error.
 *
 * The certificates are tests/tls-certs.sh's (tls_certs.h: EC P-256, a CA
 * and what it signs, and a second CA), in a temporary directory removed at
 * the end.
 */
#include "proxy/px_tls.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tap.h"
#include "tls_certs.h"

static void conf(px_config *c, const char *text)
{
    char err[512];
    px_config_init(c);
    if (px_config_load_string(c, text, "t.conf", err, sizeof(err)) < 0) {
        diag("config: %s", err);
        abort();
    }
}

/* Drive both handshakes until both are done or one fails; returns 1 when both succeed. */
static int handshake(px_tls *a, px_tls *b)
{
    int ra = 0, rb = 0;
    for (int i = 0; i < 100 && (ra == 0 || rb == 0); i++) {
        if (ra == 0) ra = px_tls_handshake(a);
        if (rb == 0) rb = px_tls_handshake(b);
        if (ra < 0 || rb < 0) return 0;
    }
    return ra == 1 && rb == 1;
}

typedef struct pair {
    int fd[2];
    px_tls *srv, *cli;
} pair;

static int pair_open(pair *p, px_tls_ctx *sx, px_tls_ctx *cx, const char *name)
{
    char err[512];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, p->fd) < 0) abort();
    for (int i = 0; i < 2; i++) fcntl(p->fd[i], F_SETFL, O_NONBLOCK);
    p->srv = px_tls_new(sx, p->fd[0], 1, NULL, NULL, err, sizeof(err));
    p->cli = px_tls_new(cx, p->fd[1], 0, "localhost", name, err, sizeof(err));
    if (!p->srv || !p->cli) {
        diag("px_tls_new: %s", err);
        abort();
    }
    return handshake(p->srv, p->cli);
}

static void pair_close(pair *p)
{
    px_tls_free(p->srv);
    px_tls_free(p->cli);
    close(p->fd[0]);
    close(p->fd[1]);
}

static void test_config_errors(void)
{
    px_config c;
    char err[512] = "";
    char text[1024];

    conf(&c, "tls-auth-clients no\n");
    ok(!px_tls_server_ctx(&c, err, sizeof(err)) && strstr(err, "tls-cert-file"), "no certificate: %s", err);
    px_config_free(&c);

    snprintf(text, sizeof(text), "tls-cert-file %s\ntls-key-file %s\n", tls_path("server.crt"), tls_path("server.key"));
    conf(&c, text);
    ok(!px_tls_server_ctx(&c, err, sizeof(err)) && strstr(err, "tls-ca-cert-file"),
       "tls-auth-clients yes without a CA: %s", err);
    px_config_free(&c);

    snprintf(text, sizeof(text), "tls-cert-file %s\ntls-key-file %s\ntls-auth-clients no\n", tls_path("server.crt"),
             tls_path("client.key"));
    conf(&c, text);
    ok(!px_tls_server_ctx(&c, err, sizeof(err)) && strstr(err, "does not match tls-cert-file"),
       "key of another certificate: %s", err);
    px_config_free(&c);

    snprintf(text, sizeof(text), "tls-cert-file %s\ntls-key-file %s\ntls-auth-clients no\n", tls_path("missing.crt"),
             tls_path("server.key"));
    conf(&c, text);
    ok(!px_tls_server_ctx(&c, err, sizeof(err)) && strstr(err, "tls-cert-file") && strstr(err, "missing.crt"),
       "missing file named: %s", err);
    px_config_free(&c);

    snprintf(text, sizeof(text), "tls-cert-file %s\ntls-key-file %s\ntls-auth-clients no\ntls-protocols TLSv9\n",
             tls_path("server.crt"), tls_path("server.key"));
    conf(&c, text);
    ok(!px_tls_server_ctx(&c, err, sizeof(err)) && strstr(err, "TLSv9"), "unknown protocol: %s", err);
    px_config_free(&c);

    snprintf(text, sizeof(text), "upstream-tls-cert-file %s\n", tls_path("client.crt"));
    conf(&c, text);
    ok(!px_tls_client_ctx(&c, err, sizeof(err)) && strstr(err, "upstream-tls-key-file"), "cert without key: %s", err);
    px_config_free(&c);
}

static px_tls_ctx *server_ctx(const char *extra)
{
    px_config c;
    char text[1024], err[512];
    snprintf(text, sizeof(text), "tls-cert-file %s\ntls-key-file %s\ntls-ca-cert-file %s\n%s", tls_path("server.crt"),
             tls_path("server.key"), tls_path("ca.crt"), extra);
    conf(&c, text);
    px_tls_ctx *x = px_tls_server_ctx(&c, err, sizeof(err));
    if (!x) diag("server ctx: %s", err);
    px_config_free(&c);
    return x;
}

static px_tls_ctx *client_ctx(const char *ca, int with_cert)
{
    px_config c;
    char text[1024], err[512];
    snprintf(text, sizeof(text), "upstream-tls-ca-cert-file %s\n", tls_path(ca));
    if (with_cert)
        snprintf(text + strlen(text), sizeof(text) - strlen(text), "upstream-tls-cert-file %s\nupstream-tls-key-file %s\n",
                 tls_path("client.crt"), tls_path("client.key"));
    conf(&c, text);
    px_tls_ctx *x = px_tls_client_ctx(&c, err, sizeof(err));
    if (!x) diag("client ctx: %s", err);
    px_config_free(&c);
    return x;
}

static void test_data(void)
{
    px_tls_ctx *sx = server_ctx(""), *cx = client_ctx("ca.crt", 1);
    pair p;
    ok(sx && cx, "contexts made");
    ok(px_tls_ctx_auth(sx), "tls-auth-clients yes asks for a certificate");
    ok(pair_open(&p, sx, cx, "127.0.0.1"), "mutual TLS handshake, name checked against the IP SAN");
    ok(px_tls_peer_verified(p.srv) && px_tls_peer_verified(p.cli), "both peers verified");
    is_str(px_tls_version(p.cli), "TLSv1.3", "TLSv1.3 by default");

    /* 1 MB one way through a socketpair's small buffer: partial writes, EAGAIN, moving retries */
    size_t total = 1 << 20, sent = 0, got = 0;
    char *out = malloc(total), *in = malloc(total);
    for (size_t i = 0; i < total; i++) out[i] = (char)(i * 7);
    int eagain = 0, stuck = 0, failed = 0;
    while (got < total && stuck < 1000 && !failed) {
        int moved = 0;
        while (sent < total) { /* write until the socket is full */
            ssize_t n = px_tls_write(p.cli, out + sent, total - sent);
            if (n > 0) {
                sent += (size_t)n, moved = 1;
                continue;
            }
            if (n < 0 && errno == EAGAIN) eagain++;
            else failed = 1;
            break;
        }
        for (;;) { /* then read until it is empty */
            ssize_t n = px_tls_read(p.srv, in + got, total - got);
            if (n > 0) {
                got += (size_t)n, moved = 1;
                continue;
            }
            if (!(n < 0 && errno == EAGAIN)) failed = 1;
            break;
        }
        stuck = moved ? 0 : stuck + 1;
    }
    ok(got == total && !memcmp(in, out, total), "1 MB arrived intact (%zu bytes)", got);
    ok(eagain > 0, "the writer met EAGAIN (%d times) and went on", eagain);

    /* a small read leaves decrypted bytes pending: the socket will not say so */
    ssize_t w = px_tls_write(p.srv, "+PONG\r\n+PONG\r\n", 14);
    char small[4];
    ssize_t r = -1;
    for (int i = 0; i < 100 && r < 0; i++) r = px_tls_read(p.cli, small, sizeof(small));
    ok(w == 14 && r == 4 && px_tls_pending(p.cli) == 10, "4 of 14 bytes read, 10 pending (%zd, %zu)", r,
       px_tls_pending(p.cli));
    char rest[32];
    r = px_tls_read(p.cli, rest, sizeof(rest));
    ok(r == 10 && px_tls_pending(p.cli) == 0, "the pending 10 read without the socket (%zd)", r);

    /* the peer closing is 0, as read(2) */
    px_tls_free(p.srv);
    p.srv = NULL;
    close(p.fd[0]);
    p.fd[0] = -1;
    int tries = 0;
    do r = px_tls_read(p.cli, rest, sizeof(rest));
    while (r < 0 && errno == EAGAIN && ++tries < 100);
    is_int((int)r, 0, "peer's close reads as 0");
    px_tls_free(p.cli);
    close(p.fd[1]);
    free(out);
    free(in);
    px_tls_ctx_free(sx);
    px_tls_ctx_free(cx);
}

static void test_refusals(void)
{
    pair p;
    px_tls_ctx *sx = server_ctx(""), *cx = client_ctx("ca.crt", 0);
    ok(!pair_open(&p, sx, cx, "127.0.0.1"), "tls-auth-clients yes: a client without a certificate is refused");
    diag("server said: %s", px_tls_error(p.srv));
    pair_close(&p);
    px_tls_ctx_free(sx);

    sx = server_ctx("tls-auth-clients optional\n");
    ok(pair_open(&p, sx, cx, "127.0.0.1") && !px_tls_peer_verified(p.srv),
       "tls-auth-clients optional: accepted without a certificate, not verified");
    pair_close(&p);
    px_tls_ctx_free(sx);

    sx = server_ctx("tls-auth-clients no\n");
    px_tls_ctx *other = client_ctx("other-ca.crt", 0);
    ok(!pair_open(&p, sx, other, "127.0.0.1"), "a server certificate from an unknown CA is refused");
    ok(strstr(px_tls_error(p.cli), "certificate refused") != NULL, "with the reason: %s", px_tls_error(p.cli));
    pair_close(&p);
    px_tls_ctx_free(other);

    ok(!pair_open(&p, sx, cx, "redis.example.com"), "a name the certificate does not carry is refused");
    ok(strstr(px_tls_error(p.cli), "hostname mismatch") != NULL, "with the reason: %s", px_tls_error(p.cli));
    pair_close(&p);

    ok(pair_open(&p, sx, cx, "localhost"), "its DNS name is accepted");
    pair_close(&p);

    ok(pair_open(&p, sx, cx, NULL), "no name asked: the chain alone is checked");
    pair_close(&p);
    px_tls_ctx_free(cx);
    px_tls_ctx_free(sx);

    /* a client speaking plain RESP to the TLS port fails the handshake cleanly */
    sx = server_ctx("tls-auth-clients no\n");
    int fd[2];
    char err[256];
    socketpair(AF_UNIX, SOCK_STREAM, 0, fd);
    fcntl(fd[0], F_SETFL, O_NONBLOCK);
    px_tls *s = px_tls_new(sx, fd[0], 1, NULL, NULL, err, sizeof(err));
    ok(write(fd[1], "*1\r\n$4\r\nPING\r\n", 14) == 14, "plain PING sent to the TLS side");
    int rc = px_tls_handshake(s);
    ok(rc == -1, "handshake fails at once (%d): %s", rc, px_tls_error(s));
    px_tls_free(s);
    close(fd[0]);
    close(fd[1]);
    px_tls_ctx_free(sx);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as hotproxy: a close_notify to a closed peer is EPIPE */
    if (tls_certs_make("test_tls") != 0) {
        plan(1);
        ok(0, "tests/tls-certs.sh made the certificates (the openssl command is in .ci/deps)");
        tls_certs_remove();
        return exit_status();
    }
    plan(26);
    test_config_errors();
    test_data();
    test_refusals();
    tls_certs_remove();
    return exit_status();
}
