/*
 * test_tls_harness: the harness's TLS pieces, proven against redis-server
 * alone (no hotproxy yet) -- the file the TLS tests copy from.
 *
 *  - hx_tls_certs makes the set (tests/tls-certs.sh) and openssl verify
 *    accepts the good ones and refuses the expired and other-CA ones;
 *  - a TLS-only redis-server with tls-auth-clients yes: redis-cli --tls with
 *    the client certificate gets PONG, without it does not, a plain
 *    connection gets nothing, hx_redis (registered port) works, and
 *    Python's redis with ssl=True works; with tls-auth-clients no a client
 *    without a certificate is served;
 *  - redis-servers showing the expired, other-CA and wrong-name
 *    certificates: refused by openssl s_client -verify_return_error and by
 *    hx_connect_tls, each with its reason;
 *  - a TLS 3-master cluster (tls-cluster yes) made by redis-cli --cluster
 *    create --tls: keys on every master through redis-cli -c --tls, and
 *    CLUSTER SLOTS names the TLS ports;
 *  - a TLS master, replica and 3 Sentinels: the Sentinels name the master,
 *    and a SENTINEL FAILOVER is seen through hx_sentinel_master_port.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "tap.h"

static char certs[400];

/* Run a shell line; its stdout+stderr into out (cap bytes); exit status. */
static int run(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int run(char *out, size_t cap, const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    char full[4200];
    snprintf(full, sizeof(full), "( %s ) 2>&1 </dev/null", cmd);
    FILE *f = popen(full, "r");
    size_t n = 0;
    out[0] = '\0';
    if (!f) return -1;
    while (n + 1 < cap) {
        size_t r = fread(out + n, 1, cap - 1 - n, f);
        if (!r) break;
        n += r;
    }
    out[n] = '\0';
    char sink[512];
    while (fread(sink, 1, sizeof(sink), f) > 0) {
    }
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* redis-cli to a TLS port with the CA and, unless client is NULL, a client
 * certificate; the command's output into out. */
static int cli(char *out, size_t cap, int port, const char *client, const char *cmd)
{
    if (!client) return run(out, cap, "timeout 20 redis-cli --tls --cacert %s/ca.crt -p %d %s", certs, port, cmd);
    return run(out, cap, "timeout 20 redis-cli --tls --cacert %s/ca.crt --cert %s/%s.crt --key %s/%s.key -p %d %s",
               certs, certs, client, certs, client, port, cmd);
}

/* A server showing its certificate `which`: refused by s_client and by
 * hx_connect_tls with the reason expected. */
static void refused_cert(const char *which, const char *s_client_reason, const char *our_reason)
{
    hx_proc r;
    hx_redis_opts o = {.tls_dir = certs, .tls_cert = which, .name = which};
    if (!ok(hx_redis_start_opts(&r, &o) == 0, "a TLS redis-server showing %s.crt starts", which)) {
        skip("no server");
        skip("no server");
        return;
    }
    char out[8192];
    /* -verify_ip: the name check a client of 127.0.0.1 makes */
    int st = run(out, sizeof(out),
                 "echo | timeout 20 openssl s_client -connect 127.0.0.1:%d -CAfile %s/ca.crt -cert %s/client.crt "
                 "-key %s/client.key -verify_return_error -verify_ip 127.0.0.1 -brief",
                 r.port, certs, certs, certs);
    int said = strstr(out, s_client_reason) != NULL;
    if (!ok(st != 0 && said, "%s: openssl s_client -verify_return_error refuses it: %s", which, s_client_reason))
        diag("status %d, output: %.1500s", st, out);
    hx_tls t;
    hx_tls_client(&t, certs, "client");
    char why[256];
    int fd = hx_connect_tls(r.port, &t, why, sizeof(why));
    if (fd >= 0) close(fd);
    if (!ok(fd < 0 && strstr(why, our_reason), "%s: hx_connect_tls refuses it: %s", which, our_reason))
        diag("fd %d, why: %s", fd, why);
    hx_stop(&r, 10000);
}

static void single_server(void)
{
    hx_proc r;
    hx_redis_opts o = {.tls_dir = certs, .tls_auth_clients = "yes"};
    if (!ok(hx_redis_start_opts(&r, &o) == 0, "a TLS-only redis-server (tls-auth-clients yes) starts")) {
        skip("no server");
        return;
    }
    char out[4096];
    cli(out, sizeof(out), r.port, "client", "PING");
    is_str(out, "PONG\n", "redis-cli --tls with the client certificate: PONG");
    cli(out, sizeof(out), r.port, NULL, "PING");
    ok(!strstr(out, "PONG"), "redis-cli --tls without a client certificate: no PONG");
    diag("  it said: %.200s", out);
    run(out, sizeof(out), "timeout 20 redis-cli -p %d PING", r.port);
    ok(!strstr(out, "PONG"), "plain redis-cli on the tls-port: no PONG");

    char args[1200];
    run(out, sizeof(out), "timeout 20 redis-cli %s PING", hx_cli_args(r.port, args, sizeof(args)));
    is_str(out, "PONG\n", "redis-cli with hx_cli_args' arguments: PONG");

    /* the harness's own connection: hx_redis on a registered port */
    ok(hx_tls_of(r.port) != NULL, "the harness registered the port as TLS");
    redisContext *c = hx_redis(r.port);
    is_str(hx_cmd(c, "SET %s %s", "tls:k", "v1"), "OK", "hx_redis over TLS: SET");
    is_str(hx_cmd(c, "GET %s", "tls:k"), "v1", "hx_redis over TLS: GET");
    if (c) redisFree(c);
    cli(out, sizeof(out), r.port, "client", "CONFIG GET port");
    is_str(out, "port\n0\n", "CONFIG GET port: 0 (TLS only)");

    /* raw bytes over TLS: a pipeline bigger than the relay's buffers */
    hx_tls t;
    hx_tls_client(&t, certs, "client");
    char why[256];
    int fd = hx_connect_tls(r.port, &t, why, sizeof(why));
    hx_buf req = {0}, rep = {0};
    for (int i = 0; i < 20000; i++) hx_buf_printf(&req, "*3\r\n$3\r\nSET\r\n$6\r\ntls:%02d\r\n$3\r\nabc\r\n", i % 100);
    long got = 0;
    int st = fd >= 0 ? hx_exchange(fd, req.data, req.len, 20000, &rep, &got, 30000) : HX_ERROR;
    ok(st == HX_OK && got == 20000, "hx_connect_tls: 20000 pipelined SETs answered (%s, %ld, %s)",
       hx_status_name(st), got, fd < 0 ? why : "connected");
    if (fd >= 0) close(fd);
    hx_buf_free(&req);
    hx_buf_free(&rep);

    /* without a client certificate the server says no, at the handshake or
     * (TLS 1.3) on the first read */
    hx_tls_client(&t, certs, NULL);
    fd = hx_connect_tls(r.port, &t, why, sizeof(why));
    int pong = 0;
    if (fd >= 0) {
        hx_buf b = {0};
        pong = hx_send_str(fd, "PING\r\n") == 0 && hx_read_replies(fd, &b, 1, NULL, 5000) == HX_OK;
        hx_buf_free(&b);
        close(fd);
    }
    ok(!pong, "hx_connect_tls without a client certificate is refused (%s)", fd < 0 ? why : "at the first read");

    /* Python's redis with ssl=True */
    if (access("/usr/bin/python3", X_OK) == 0 && run(out, sizeof(out), "/usr/bin/python3 -c 'import redis'") == 0) {
        st = run(out, sizeof(out), "timeout 30 /usr/bin/python3 %s/tests/integration/compat/tls_redis_py.py %d %s",
                 HX_SOURCE_DIR, r.port, certs);
        if (!ok(st == 0, "redis-py with ssl=True, ssl_ca_certs, ssl_certfile/ssl_keyfile: PING, SET, GET, CONFIG GET"))
            diag("%s", out);
        st = run(out, sizeof(out), "timeout 30 /usr/bin/python3 %s/tests/integration/compat/tls_redis_py.py %d %s none",
                 HX_SOURCE_DIR, r.port, certs);
        if (!ok(st != 0, "redis-py without a client certificate is refused")) diag("%s", out);
    } else {
        skip("python3-redis is not installed");
        skip("python3-redis is not installed");
    }
    hx_stop(&r, 10000);

    hx_redis_opts no = {.tls_dir = certs, .tls_auth_clients = "no", .name = "noauth"};
    if (ok(hx_redis_start_opts(&r, &no) == 0, "a TLS redis-server with tls-auth-clients no starts")) {
        cli(out, sizeof(out), r.port, NULL, "PING");
        is_str(out, "PONG\n", "tls-auth-clients no: redis-cli --tls without a client certificate gets PONG");
        hx_stop(&r, 10000);
    } else {
        skip("no server");
    }
}

static void cluster(void)
{
    hx_topo t;
    hx_cluster_opts o = {.masters = 3, .tls_dir = certs};
    double t0 = hx_now();
    int st = hx_cluster_start(&t, &o);
    double took = hx_now() - t0;
    if (!ok(st == 0, "a TLS 3-master cluster starts and is whole (%.2f s)", took)) {
        for (int i = 0; i < 4; i++) skip("no cluster");
        return;
    }
    char out[8192];
    int all = 1;
    for (int i = 0; i < 30; i++) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "-c SET tls:c:%d v%d", i, i);
        cli(out, sizeof(out), t.masters[i % 3].port, "client", cmd);
        all &= !strcmp(out, "OK\n");
    }
    ok(all, "redis-cli -c --tls: 30 SETs across the slots, redirects followed over TLS");
    int keys = 0, ports_known = 1;
    for (int i = 0; i < t.nmasters; i++) {
        redisContext *c = hx_redis(t.masters[i].port);
        keys += (int)atoll(hx_cmd(c, "DBSIZE"));
        if (c) redisFree(c);
    }
    is_int(keys, 30, "the 30 keys are on the masters (hx_redis over TLS)");
    cli(out, sizeof(out), t.masters[0].port, "client", "CLUSTER SLOTS");
    for (int i = 0; i < t.nmasters; i++) {
        char p[16];
        snprintf(p, sizeof(p), "\n%d\n", t.masters[i].port);
        ports_known &= strstr(out, p) != NULL;
    }
    ok(ports_known, "CLUSTER SLOTS names the masters' TLS ports");
    hx_topo_stop(&t, 10000);
    ok(1, "the cluster stopped");
}

static void sentinel(void)
{
    hx_topo t;
    hx_sentinel_opts o = {.replicas = 1, .sentinels = 3, .tls_dir = certs};
    double t0 = hx_now();
    int st = hx_sentinel_start(&t, &o);
    double took = hx_now() - t0;
    if (!ok(st == 0, "a TLS master, replica and 3 Sentinels start, the Sentinels see each other (%.2f s)", took)) {
        for (int i = 0; i < 3; i++) skip("no sentinel");
        return;
    }
    is_int(hx_sentinel_master_port(&t), t.masters[0].port, "the Sentinels name the master (over TLS)");
    char out[4096];
    cli(out, sizeof(out), t.sentinels[1].port, "client", "SENTINEL get-master-addr-by-name mymaster");
    char want[64];
    snprintf(want, sizeof(want), "127.0.0.1\n%d\n", t.masters[0].port);
    is_str(out, want, "redis-cli --tls to a Sentinel: get-master-addr-by-name");
    int moved = 0;
    if (hx_sentinel_failover(&t) == 0) {
        double deadline = hx_now() + 30;
        while (!moved && hx_now() < deadline) {
            moved = hx_sentinel_master_port(&t) == t.replicas[0].port;
            if (!moved) hx_sleep_ms(100);
        }
    }
    ok(moved, "SENTINEL FAILOVER over TLS: the replica becomes the master");
    hx_topo_stop(&t, 10000);
}

int main(void)
{
    hx_init(240);
    if (system("command -v openssl >/dev/null 2>&1") != 0) skip_all("no openssl CLI");
    plan(41);

    snprintf(certs, sizeof(certs), "%s/tls", hx_tmpdir());
    double t0 = hx_now();
    int st = hx_tls_certs(certs);
    double took = hx_now() - t0;
    ok(st == 0, "tests/tls-certs.sh made the certificates (%.2f s)", took);
    ok(hx_tls_certs(certs) == 0, "and again into the same directory (idempotent)");
    char out[4096];
    const char *good[] = {"server", "client", "wrongname"};
    for (int i = 0; i < 3; i++) {
        run(out, sizeof(out), "openssl verify -CAfile %s/ca.crt %s/%s.crt", certs, certs, good[i]);
        ok(strstr(out, ": OK") != NULL, "openssl verify accepts %s.crt", good[i]);
    }
    run(out, sizeof(out), "openssl verify -CAfile %s/ca.crt %s/expired.crt", certs, certs);
    ok(strstr(out, "certificate has expired") != NULL, "openssl verify: expired.crt has expired");
    run(out, sizeof(out), "openssl verify -CAfile %s/ca.crt %s/wrong.crt", certs, certs);
    ok(strstr(out, "unable to get local issuer certificate") != NULL, "openssl verify: wrong.crt is not our CA's");
    run(out, sizeof(out), "openssl verify -CAfile %s/other-ca.crt %s/wrong.crt", certs, certs);
    ok(strstr(out, ": OK") != NULL, "wrong.crt is other-ca.crt's");

    single_server();
    refused_cert("expired", "certificate has expired", "certificate has expired");
    refused_cert("wrong", "unable to get local issuer certificate", "unable to get local issuer certificate");
    refused_cert("wrongname", "IP address mismatch", "IP address mismatch");
    cluster();
    sentinel();
    return exit_status();
}
