/*
 * test_upstream_tls: px_upstream's connections with upstream-tls, against a
 * TLS server the test plays itself on loopback (px_tls, server side) for
 * what a real Redis cannot be made to do on demand: write its replies as
 * TLS records of chosen sizes while hotproxy is not reading.
 *
 *  - the handshake runs on the loop and the connection's setup goes through
 *    TLS once it is done;
 *  - a read that fills hotproxy's buffer inside a record leaves the rest
 *    decrypted in OpenSSL, where the socket will not signal it: a 5-byte
 *    record, then a 16384-byte one, both sent before hotproxy reads; the
 *    second reply must complete without any more bytes arriving;
 *  - a server that closes during the handshake: counted as a TLS failure,
 *    the error names it, the connection retries.
 *
 * Certificates are tests/tls-certs.sh's (tls_certs.h), as test_tls's.
 */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fake_upstream.h"
#include "proxy/px_tls.h"
#include "proxy/px_upstream.h"
#include "tap.h"
#include "tls_certs.h"

static void set(px_config *c, const char *name, const char *value)
{
    char err[256], *v = (char *)value;
    if (px_config_set(c, name, 1, &v, err, sizeof(err)) != 0) {
        diag("%s: %s", name, err);
        abort();
    }
}

static int listener(int *port)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(fd, 16) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        return -1;
    *port = ntohs(a.sin_port);
    return fd;
}

typedef struct call {
    px_upreq q;
    char reply[64];
    size_t len;
    int done, failed;
} call;

static void call_done(px_upreq *q, px_upstream *u, const char *reply, size_t len, int failed)
{
    call *c = (call *)q;
    (void)u;
    snprintf(c->reply, sizeof(c->reply), "%.*s", (int)(len < 60 ? len : 60), reply);
    c->len = len;
    c->done = 1;
    c->failed = failed;
}

static px_core k;
static px_pool *pool;

/* Run the loop (and the pool's writes, as the server's prepare watcher
 * does) until cond() or about ms milliseconds. */
static int spin(int (*cond)(void *), void *arg, int ms)
{
    for (int i = 0; i < ms; i++) {
        px_pool_flush(pool);
        ev_run(k.loop, EVRUN_NOWAIT);
        if (cond(arg)) return 1;
        poll(NULL, 0, 1);
    }
    return cond(arg);
}

static int conn_ready(void *arg)
{
    (void)arg;
    return pool->lanes[0]->conns[0].state == PX_UP_READY;
}

static int call_done_cond(void *arg) { return ((call *)arg)->done; }

/* The server side reads until what it got holds needle (driving the loop). */
static int srv_read_until(px_tls *srv, px_buf *got, const char *needle)
{
    for (int i = 0; i < 3000; i++) {
        char buf[4096];
        ssize_t n = px_tls_read(srv, buf, sizeof(buf));
        if (n > 0) px_buf_append(got, buf, (size_t)n);
        if (got->len && memmem(px_buf_start(got), px_buf_used(got), needle, strlen(needle))) return 1;
        px_pool_flush(pool);
        ev_run(k.loop, EVRUN_NOWAIT);
        poll(NULL, 0, 1);
    }
    return 0;
}

static int srv_write_all(px_tls *srv, const char *p, size_t len)
{
    for (int i = 0; len && i < 3000; i++) {
        ssize_t n = px_tls_write(srv, p, len);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
        } else {
            poll(NULL, 0, 1);
        }
    }
    return len == 0;
}

static int accept_one(int lfd)
{
    for (int i = 0; i < 3000; i++) {
        px_pool_flush(pool);
        ev_run(k.loop, EVRUN_NOWAIT);
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
        if (fd >= 0) return fd;
        poll(NULL, 0, 1);
    }
    return -1;
}

int main(void)
{
    plan(11);
    signal(SIGPIPE, SIG_IGN); /* as hotproxy's main(): close_notify to a peer gone is no matter */
    if (tls_certs_make("hotproxy-uptls") != 0) {
        tls_certs_remove();
        skip_all("tests/tls-certs.sh could not make certificates");
    }
    char err[512];
    px_config cfg, scfg;
    fake_core_init(&k, &cfg, 1);
    set(&cfg, "upstream-tls", "yes");
    set(&cfg, "upstream-tls-ca-cert-file", tls_path("ca.crt"));
    k.upstream_tls = px_tls_client_ctx(&cfg, err, sizeof(err));
    px_config_init(&scfg);
    set(&scfg, "tls-cert-file", tls_path("server.crt"));
    set(&scfg, "tls-key-file", tls_path("server.key"));
    set(&scfg, "tls-auth-clients", "no");
    px_tls_ctx *sx = px_tls_server_ctx(&scfg, err, sizeof(err));
    if (!k.upstream_tls || !sx) {
        diag("contexts: %s", err);
        abort();
    }
    int port, lfd = listener(&port);
    if (lfd < 0) abort();

    pool = px_pool_create(&k, "127.0.0.1", port, 1);
    px_upstream *u = &pool->lanes[0]->conns[0];
    int fd = accept_one(lfd);
    ok(fd >= 0, "the pool connects");
    px_tls *srv = px_tls_new(sx, fd, 1, NULL, NULL, err, sizeof(err));
    int hs = 0;
    for (int i = 0; i < 3000 && hs == 0; i++) {
        hs = px_tls_handshake(srv);
        px_pool_flush(pool);
        ev_run(k.loop, EVRUN_NOWAIT);
        poll(NULL, 0, 1);
    }
    ok(hs == 1 && spin(conn_ready, NULL, 3000), "the TLS handshake is driven by the loop, then the connection is ready");
    ok(u->tls && !strcmp(px_tls_version(u->tls), "TLSv1.3"), "over TLSv1.3");

    /* its setup (INFO server, CONFIG GET databases) arrives through TLS */
    px_buf got = {0};
    ok(srv_read_until(srv, &got, "databases\r\n"), "the connection's setup arrives through TLS");
    srv_write_all(srv, "$0\r\n\r\n*0\r\n", 10);
    px_buf_free(&got);

    /* two requests; their replies written as a 5-byte record and a
     * 16384-byte one before the loop runs again */
    call c1, c2;
    memset(&c1, 0, sizeof(c1));
    memset(&c2, 0, sizeof(c2));
    c1.q.done = c2.q.done = call_done;
    px_upstream_send(u, &c1.q, "*1\r\n$4\r\nPING\r\n", 14);
    px_upstream_send(u, &c2.q, "*1\r\n$4\r\nPING\r\n", 14);
    ok(srv_read_until(srv, &got, "PING\r\n*1\r\n$4\r\nPING\r\n"), "both requests arrive");
    px_buf_free(&got);
    size_t big = 16384;
    char *r2 = malloc(big);
    r2[0] = '+';
    memset(r2 + 1, 'a', big - 3);
    memcpy(r2 + big - 2, "\r\n", 2);
    ok(srv_write_all(srv, "+OK\r\n", 5) && srv_write_all(srv, r2, big), "the server wrote both records");
    ok(spin(call_done_cond, &c1, 3000) && !strcmp(c1.reply, "+OK\r\n"), "the first reply completes");
    ok(spin(call_done_cond, &c2, 3000) && c2.len == big && !c2.failed,
       "the second completes too, though its last bytes were held decrypted in TLS after a read that filled the "
       "buffer (%zu bytes, %s)",
       c2.len, c2.done ? "done" : "still waiting");
    free(r2);

    /* the server goes away during the next handshake */
    uint64_t failures = k.upstream_tls_failures;
    px_tls_free(srv);
    close(fd);
    fd = accept_one(lfd);
    ok(fd >= 0, "the connection reconnects after the server closed it");
    close(fd); /* before any TLS */
    int down = 0;
    for (int i = 0; i < 3000 && !down; i++) {
        px_pool_flush(pool);
        ev_run(k.loop, EVRUN_NOWAIT);
        down = k.upstream_tls_failures > failures;
        poll(NULL, 0, 1);
    }
    ok(down, "a server that closes during the handshake is a TLS failure, counted");
    ok(strstr(u->errstr, "TLS handshake failed") != NULL, "the connection's error says so: %s", u->errstr);

    px_pool_destroy(pool);
    px_tls_ctx_free(k.upstream_tls);
    px_tls_ctx_free(sx);
    close(lfd);
    px_stats_free(&k.stats);
    ev_loop_destroy(k.loop);
    px_config_free(&cfg);
    px_config_free(&scfg);
    tls_certs_remove();
    return exit_status();
}
