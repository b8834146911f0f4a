/*
 * test_tls_upstream: hotproxy (plain port) in front of Redis over TLS
 * (upstream-tls yes), with certificates made here with the openssl command.
 *
 *  - a TLS-only redis-server (port 0, tls-port): PING, SET/GET, a 1 MB
 *    value, a 10k pipeline, MULTI/EXEC, pub/sub, BLPOP; the L1 with tracking
 *    over TLS: INFO says tracking up, Redis' CLIENT LIST shows hotproxy's
 *    connections on its TLS port with tracking on, and a write through
 *    another path (redis-cli --tls) invalidates the L1;
 *  - mutual TLS (tls-auth-clients yes): without upstream-tls-cert-file the
 *    server refuses hotproxy (log line, counter), with it everything works;
 *  - server certificates that are expired, of another CA, for another name:
 *    each refused with its reason in the log and hotproxy_upstream_tls_failures
 *    moving; upstream-tls-verify no accepts each;
 *  - upstream-tls-sni: the name sent and checked instead of the host;
 *  - a reload (HOTPROXY CONFIG RELOAD) with a certificate file that does not
 *    load: refused with the reason, and the running context keeps working;
 *  - a bad certificate file stops startup with the reason.
 *
 * Certificates from the harness (tests/tls-certs.sh), servers from its TLS
 * launchers (TLS-only redis-server, Sentinel set-up, Cluster); the test
 * talks to them over TLS through the harness (hx_redis on a TLS port).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "tap.h"

#define DEADLINE_MS 20000

static char dir[600]; /* the certificates */

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    return system(cmd);
}

/* dir/file, in one of 16 rotating buffers */
static const char *f(const char *file)
{
    static char buf[16][700];
    static int i;
    i = (i + 1) % 16;
    snprintf(buf[i], sizeof(buf[i]), "%s/%s", dir, file);
    return buf[i];
}

/* A command straight to a TLS Redis (the harness' TLS client, hotproxy's
 * certificate), on a connection of its own; the reply's text. */
static const char *rcmd(int port, const char *fmt, ...)
{
    static char out[65536];
    redisContext *c = hx_redis(port);
    out[0] = '\0';
    if (!c) return "(no connection)";
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    if (!r) snprintf(out, sizeof(out), "(no reply: %s)", c->errstr);
    else if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_ERROR)
        snprintf(out, sizeof(out), "%.*s", (int)r->len, r->str);
    else if (r->type == REDIS_REPLY_INTEGER)
        snprintf(out, sizeof(out), "%lld", r->integer);
    else
        snprintf(out, sizeof(out), "(type %d)", r->type);
    if (r) freeReplyObject(r);
    redisFree(c);
    return out;
}

/* A TLS-only redis-server with the certificate cert (NULL: server);
 * auth: tls-auth-clients. */
static int tls_redis(hx_proc *p, const char *name, const char *cert, const char *auth)
{
    hx_redis_opts o = {.name = name, .tls_dir = dir, .tls_auth_clients = auth, .tls_cert = cert};
    return hx_redis_start_opts(p, &o);
}

/* hotproxy with upstream-tls yes and the test CA, then extra. */
static int tls_proxy(hx_proc *p, int upstream, const char *const *extra)
{
    const char *argv[40];
    int n = 0;
    argv[n++] = "--upstream-tls";
    argv[n++] = "yes";
    argv[n++] = "--upstream-tls-ca-cert-file";
    argv[n++] = f("ca.crt");
    for (int i = 0; extra && extra[i] && n < 39; i++) argv[n++] = extra[i];
    argv[n] = NULL;
    return hx_proxy_startv(p, 0, upstream, argv);
}

static int wait_log(hx_proc *p, const char *needle)
{
    double deadline = hx_now() + DEADLINE_MS / 1000.0;
    while (hx_now() < deadline) {
        if (hx_file_contains(p->logfile, needle)) return 1;
        hx_sleep_ms(50);
    }
    hx_diag_file(p->logfile, 4096);
    return 0;
}

static long long tls_failures(redisContext *c)
{
    return hx_info_num(c, "hotproxy_upstream", "hotproxy_upstream_tls_failures");
}

/* GET key through c until it reads want (or the deadline). */
static int wait_get(redisContext *c, const char *key, const char *want)
{
    double deadline = hx_now() + DEADLINE_MS / 1000.0;
    while (hx_now() < deadline) {
        if (!strcmp(hx_cmd(c, "GET %s", key), want)) return 1;
        hx_sleep_ms(20);
    }
    diag("GET %s: %s, not %s", key, hx_cmd(c, "GET %s", key), want);
    return 0;
}

static void basics(int up)
{
    hx_proc p;
    const char *extra[] = {NULL};
    if (tls_proxy(&p, up, extra) != 0) {
        ok(0, "hotproxy starts with upstream-tls yes");
        return;
    }
    redisContext *c = hx_redis(p.port);
    ok(wait_get(c, "nokey", "(nil)"), "GET through hotproxy reaches the TLS-only Redis");
    is_str(hx_info_get(c, "hotproxy_upstream", "hotproxy_upstream_tls"), "yes", "INFO: hotproxy_upstream_tls:yes");
    is_str(hx_cmd(c, "PING"), "PONG", "PING");
    is_str(hx_cmd(c, "SET k1 v1"), "OK", "SET");
    is_str(hx_cmd(c, "GET k1"), "v1", "GET");
    is_str(hx_cmd(c, "ECHO %s", "through TLS"), "through TLS", "ECHO (forwarded)");

    /* a 1 MB value: many TLS records each way, reads of more than one chunk */
    size_t big = 1 << 20;
    char *v = malloc(big + 1);
    for (size_t i = 0; i < big; i++) v[i] = (char)('a' + (i * 7 + i / 1000) % 26);
    v[big] = '\0';
    redisReply *r = redisCommand(c, "SET big %b", v, big);
    ok(r && r->type == REDIS_REPLY_STATUS, "SET of a 1 MB value");
    if (r) freeReplyObject(r);
    r = redisCommand(c, "GET big");
    ok(r && r->type == REDIS_REPLY_STRING && r->len == big && !memcmp(r->str, v, big),
       "GET of the 1 MB value returns it byte for byte");
    if (r) freeReplyObject(r);
    free(v);

    /* 10k pipelined commands in one write, answered in order */
    hx_buf req = {0}, out = {0};
    for (int i = 0; i < 10000; i++) hx_buf_printf(&req, "*2\r\n$4\r\nINCR\r\n$3\r\nctr\r\n");
    int fd = hx_connect(p.port);
    long got = 0;
    int st = hx_exchange(fd, req.data, req.len, 10000, &out, &got, DEADLINE_MS);
    is_int(got, 10000, "a 10k pipeline is answered in full (%s)", hx_status_name(st));
    ok(out.len > 9 && !memcmp(out.data + out.len - 8, ":10000\r\n", 8), "the last reply of the pipeline is :10000");
    close(fd);
    hx_buf_free(&req);
    hx_buf_free(&out);

    /* MULTI/EXEC: a pinned connection, over TLS too */
    is_str(hx_cmd(c, "MULTI"), "OK", "MULTI");
    is_str(hx_cmd(c, "SET m1 x"), "QUEUED", "a command queued");
    is_str(hx_cmd(c, "INCR mctr"), "QUEUED", "another queued");
    is_str(hx_cmd(c, "EXEC"), "(array 2)", "EXEC answers both");
    is_str(hx_cmd(c, "GET m1"), "x", "what EXEC ran is there");

    /* pub/sub */
    redisContext *sub = hx_redis(p.port);
    r = redisCommand(sub, "SUBSCRIBE tlschan");
    ok(r && r->type == REDIS_REPLY_ARRAY, "SUBSCRIBE confirmed");
    if (r) freeReplyObject(r);
    is_str(hx_cmd(c, "PUBLISH tlschan hello"), "1", "PUBLISH reaches the one subscriber");
    void *m = NULL;
    int okmsg = redisGetReply(sub, &m) == REDIS_OK && m && ((redisReply *)m)->type == REDIS_REPLY_ARRAY &&
                ((redisReply *)m)->elements == 3 && !strcmp(((redisReply *)m)->element[2]->str, "hello");
    ok(okmsg, "the subscriber gets the message");
    if (m) freeReplyObject(m);
    redisFree(sub);

    /* BLPOP: blocked on its own connection, woken by a push from another */
    redisContext *b = hx_redis(p.port);
    redisAppendCommand(b, "BLPOP tlslist 15");
    void *br = NULL;
    redisBufferWrite(b, &(int){0});
    double deadline = hx_now() + DEADLINE_MS / 1000.0;
    /* the push must come after BLPOP blocked: wait for Redis to say a client is blocked */
    while (hx_now() < deadline && !strstr(rcmd(up, "INFO clients"), "blocked_clients:1")) hx_sleep_ms(20);
    is_str(hx_cmd(c, "RPUSH tlslist item"), "1", "RPUSH");
    ok(redisGetReply(b, &br) == REDIS_OK && br && ((redisReply *)br)->type == REDIS_REPLY_ARRAY &&
           !strcmp(((redisReply *)br)->element[1]->str, "item"),
       "BLPOP is woken with the item");
    if (br) freeReplyObject(br);
    redisFree(b);

    /* the L1 and its tracking, over TLS */
    ok(hx_info_wait(c, "hotproxy_cache", "hotproxy_l1_tracking", "up", DEADLINE_MS) == 0,
       "INFO: hotproxy_l1_tracking:up (the invalidation link is TLS too)");
    char portarg[32];
    snprintf(portarg, sizeof(portarg), "laddr=127.0.0.1:%d", up);
    const char *list = rcmd(up, "CLIENT LIST");
    int tracked = 0, linked = 0, nconns = 0;
    for (const char *l = list; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        const char *e = strchr(l, '\n');
        size_t len = e ? (size_t)(e - l) : strlen(l);
        char line[1024];
        snprintf(line, sizeof(line), "%.*s", (int)(len < 1000 ? len : 1000), l);
        if (!strstr(line, portarg) || strstr(line, "cmd=client|list")) continue;
        nconns++;
        if (strstr(line, "flags=t") || strstr(line, "flags=Pt")) tracked++;
        if (strstr(line, "sub=1")) linked++;
    }
    ok(nconns >= 2 && tracked >= 1 && linked >= 1,
       "Redis' CLIENT LIST shows hotproxy's connections on its TLS port: %d, %d with tracking on, %d the "
       "invalidation link",
       nconns, tracked, linked);
    if (!(nconns >= 2 && tracked >= 1 && linked >= 1)) diag("%s", list);
    is_str(hx_cmd(c, "SET hot v1"), "OK", "SET hot v1");
    ok(hx_l1_hit(c, "hot", 20), "GET hot is answered from the L1");
    long long inv = hx_info_num(c, "hotproxy_cache", "hotproxy_l1_invalidations_tracking");
    is_str(rcmd(up, "SET hot v2"), "OK", "SET hot v2 straight to Redis (over TLS, not through hotproxy)");
    ok(wait_get(c, "hot", "v2"), "the write through the other path invalidated the L1: GET reads v2");
    ok(hx_info_num(c, "hotproxy_cache", "hotproxy_l1_invalidations_tracking") > inv,
       "by an invalidation from Redis (hotproxy_l1_invalidations_tracking grows)");
    is_int(tls_failures(c), 0, "no TLS failure counted");
    redisFree(c);
    is_int(hx_stop(&p, 15000), 0, "hotproxy exits 0");
}

/* hotproxy (with extra) in front of up: each GET is refused with why in it,
 * the log says it once, and the counter moves. */
static void refused(int up, const char *what, const char *why, const char *const *extra)
{
    hx_proc p;
    if (tls_proxy(&p, up, extra) != 0) {
        ok(0, "%s: hotproxy starts", what);
        return;
    }
    redisContext *c = hx_redis(p.port);
    ok(wait_log(&p, why), "%s: the log says the TLS handshake failed: %s", what, why);
    is_str(hx_cmd(c, "PING"), "PONG", "%s: hotproxy goes on serving meanwhile (PING)", what);
    char line[300];
    snprintf(line, sizeof(line), "upstream 127.0.0.1:%d TLS handshake failed", up);
    /* the startup probe's line may say why first: the loop's own attempt follows */
    ok(wait_log(&p, line), "%s: the log line names the upstream", what);
    if (strstr(why, "certificate refused")) {
        /* topology auto's probe met the same refusal before the loop ran */
        snprintf(line, sizeof(line), "topology auto: no answer from 127.0.0.1:%d: TLS handshake failed: %s", up, why);
        ok(hx_file_contains(p.logfile, line), "%s: the startup probe says why it got no answer", what);
    }
    const char *r = hx_cmd(c, "GET k1");
    ok(strstr(r, "TLS handshake failed") != NULL, "%s: a command gets an error saying why: %s", what, r);
    long long n = tls_failures(c);
    double deadline = hx_now() + DEADLINE_MS / 1000.0;
    while (hx_now() < deadline && tls_failures(c) <= n) hx_sleep_ms(50);
    ok(n > 0 && tls_failures(c) > n, "%s: hotproxy_upstream_tls_failures counts the retries (%lld, then %lld)", what,
       n, tls_failures(c));
    redisFree(c);
    is_int(hx_stop(&p, 15000), 0, "%s: hotproxy exits 0", what);
}

static void accepted(int up, const char *what, const char *const *extra)
{
    hx_proc p;
    if (tls_proxy(&p, up, extra) != 0) {
        ok(0, "%s: hotproxy starts", what);
        return;
    }
    redisContext *c = hx_redis(p.port);
    ok(wait_get(c, "nokey", "(nil)"), "%s: GET is answered by Redis", what);
    is_str(hx_cmd(c, "SET k2 v2"), "OK", "%s: SET", what);
    is_int(tls_failures(c), 0, "%s: no TLS failure counted", what);
    redisFree(c);
    is_int(hx_stop(&p, 15000), 0, "%s: hotproxy exits 0", what);
}

/* Upstreams that do not speak TLS: a server that never answers (the
 * handshake's time is connect-timeout's, and the loop goes on serving), and
 * a plain redis-server (it waits for the end of a line the ClientHello never
 * sends). */
static void not_tls(void)
{
    hx_proc fake, plain;
    if (hx_fake_start(&fake, HX_FAKE_SILENT, NULL, 0) != 0) {
        ok(0, "a silent server starts");
        return;
    }
    const char *quick[] = {"--connect-timeout", "300", NULL};
    refused(fake.port, "a server that never answers the handshake",
            "TLS handshake failed: no answer within connect-timeout", quick);
    hx_stop(&fake, 5000);
    if (hx_redis_start(&plain, 0) != 0) {
        ok(0, "a plain redis-server starts");
        return;
    }
    refused(plain.port, "a plain redis-server", "no answer within connect-timeout (is it a TLS port?)", quick);
    hx_stop(&plain, 10000);
}

/* Redis' CLIENT KILL of every connection but redis-cli's own: hotproxy's
 * connections come back, made with the context in use now. */
static void kill_upstream_conns(int up)
{
    rcmd(up, "CLIENT KILL TYPE normal SKIPME yes");
    rcmd(up, "CLIENT KILL TYPE pubsub SKIPME yes");
}

/*
 * Certificates renewed in place: upstream-tls-ca-cert-file is a file whose
 * content the test replaces, then HOTPROXY CONFIG RELOAD.  A file that does
 * not load: the reload is refused with the reason and the running context
 * stays; another CA's: new connections are refused (the context changed),
 * and the right one again: they work.
 */
static void reload(int up)
{
    hx_proc p;
    const char *extra[] = {"--upstream-tls-ca-cert-file", f("live-ca.crt"), NULL};
    sh("cp %s %s", f("ca.crt"), f("live-ca.crt"));
    if (tls_proxy(&p, up, extra) != 0) {
        ok(0, "reload: hotproxy starts");
        return;
    }
    redisContext *c = hx_redis(p.port);
    ok(wait_get(c, "nokey", "(nil)"), "reload: GET works before");
    sh("echo 'not a certificate' > %s", f("live-ca.crt"));
    const char *r = hx_cmd(c, "HOTPROXY CONFIG RELOAD");
    ok(strstr(r, "config not reloaded") && strstr(r, "upstream-tls-ca-cert-file"),
       "reload: a CA file that does not load is refused, with the directive named: %s", r);
    kill_upstream_conns(up);
    ok(wait_get(c, "nokey", "(nil)"), "reload: new connections still use the running context");
    long long before = tls_failures(c);
    sh("cp %s %s", f("other-ca.crt"), f("live-ca.crt"));
    is_str(hx_cmd(c, "HOTPROXY CONFIG RELOAD"), "OK", "reload: another CA's file loads");
    is_str(hx_cmd(c, "GET k1"), "v1", "reload: the connection open before is not dropped");
    kill_upstream_conns(up);
    double deadline = hx_now() + DEADLINE_MS / 1000.0;
    while (hx_now() < deadline && tls_failures(c) <= before) hx_sleep_ms(50);
    ok(tls_failures(c) > before, "reload: new connections use the new context (refused: another CA)");
    sh("cp %s %s", f("ca.crt"), f("live-ca.crt"));
    is_str(hx_cmd(c, "HOTPROXY CONFIG RELOAD"), "OK", "reload: the right CA again");
    ok(wait_get(c, "k1", "v1"), "reload: new connections work again");
    r = hx_cmd(c, "HOTPROXY CONFIG SET upstream-tls-ca-cert-file %s", f("ca.crt"));
    ok(strstr(r, "CONFIG RELOAD") != NULL, "reload: CONFIG SET of upstream-tls-* says to reload instead: %s", r);
    redisFree(c);
    is_int(hx_stop(&p, 15000), 0, "reload: hotproxy exits 0");
}

/* A certificate file that does not load stops startup with the reason. */
static void bad_file(int up)
{
    char portstr[16], upstr[32];
    snprintf(portstr, sizeof(portstr), "%d", hx_free_port());
    snprintf(upstr, sizeof(upstr), "127.0.0.1:%d", up);
    const char *argv[] = {hx_bin(), "--port", portstr, "--upstream", upstr, "--upstream-tls", "yes",
                          "--upstream-tls-ca-cert-file", f("missing.crt"), NULL};
    hx_proc p;
    if (hx_spawn(&p, "hotproxy-badfile", argv) != 0) {
        ok(0, "bad file: hotproxy runs");
        return;
    }
    int st = hx_wait_exit(&p, 15000);
    ok(st > 0 && st < 128, "bad file: hotproxy exits with an error (%d)", st);
    ok(hx_file_contains(p.outfile, "upstream-tls-ca-cert-file") && hx_file_contains(p.outfile, "missing.crt"),
       "bad file: the error names the directive and the file");
}

static int wait_info(redisContext *c, const char *field, const char *want)
{
    int rc = hx_info_wait(c, "hotproxy_upstream", field, want, 30000);
    if (rc) diag("%s is %s, not %s", field, hx_info_get(c, "hotproxy_upstream", field), want);
    return rc == 0;
}

/* Poll GET key straight to a TLS Redis until it reads want. */
static int wait_direct_get(int port, const char *key, const char *want)
{
    double deadline = hx_now() + 30.0;
    while (hx_now() < deadline) {
        if (!strcmp(rcmd(port, "GET %s", key), want)) return 1;
        hx_sleep_ms(50);
    }
    diag("GET %s on %d: %s, not %s", key, port, rcmd(port, "GET %s", key), want);
    return 0;
}

/*
 * A master, its replica and three Sentinels, all TLS-only and asking
 * clients for a certificate (Redis' default): topology auto finds the
 * Sentinels (its INFO probe over TLS), discovery's blocking checks and the
 * control links are TLS, and a planned failover is followed.
 */
static void sentinel_part(void)
{
    hx_topo t;
    hx_proc p;
    char others[64], want[64];
    hx_sentinel_opts o = {.replicas = 1, .sentinels = 3, .tls_dir = dir};
    if (hx_sentinel_start(&t, &o) != 0) {
        ok(0, "sentinel: the TLS Sentinel set-up starts");
        return;
    }
    int m = t.masters[0].port, r = t.replicas[0].port;
    snprintf(others, sizeof(others), "127.0.0.1:%d,127.0.0.1:%d", t.sentinels[1].port, t.sentinels[2].port);
    const char *extra[] = {"--upstream", others, "--upstream-tls-cert-file", f("client.crt"), "--upstream-tls-key-file",
                           f("client.key"), NULL};
    if (tls_proxy(&p, t.sentinels[0].port, extra) != 0) {
        ok(0, "sentinel: hotproxy starts");
        hx_topo_stop(&t, 10000);
        return;
    }
    redisContext *c = hx_redis(p.port);
    is_str(hx_info_get(c, "hotproxy_upstream", "hotproxy_topology"), "sentinel",
           "sentinel: topology auto asked over TLS and found Sentinels");
    snprintf(want, sizeof(want), "127.0.0.1:%d", m);
    ok(wait_info(c, "hotproxy_sentinel_master", want), "sentinel: discovery over TLS names the master");
    ok(wait_info(c, "hotproxy_sentinels_reachable", "3"), "sentinel: the control links to the 3 Sentinels are up");
    is_str(hx_cmd(c, "SET sk before"), "OK", "sentinel: SET on the master");
    is_str(hx_cmd(c, "GET sk"), "before", "sentinel: GET");
    ok(wait_direct_get(r, "sk", "before"), "sentinel: the write reached the replica");
    is_int(hx_sentinel_failover(&t), 0, "sentinel: SENTINEL FAILOVER accepted");
    snprintf(want, sizeof(want), "127.0.0.1:%d", r);
    ok(wait_info(c, "hotproxy_sentinel_master", want), "sentinel: hotproxy follows the failover to the replica");
    double deadline = hx_now() + 30.0;
    const char *w = "";
    while (hx_now() < deadline && strcmp(w = hx_cmd(c, "SET sk after"), "OK")) hx_sleep_ms(50);
    is_str(w, "OK", "sentinel: writes succeed on the new master");
    ok(wait_direct_get(r, "sk", "after"), "sentinel: and reach it");
    is_int(tls_failures(c), 0, "sentinel: no TLS failure counted");
    redisFree(c);
    is_int(hx_stop(&p, 15000), 0, "sentinel: hotproxy exits 0");
    hx_topo_stop(&t, 10000);
}

/* Three TLS-only masters in a Cluster (tls-cluster yes): seeds, slot map
 * and every node's pool over TLS; a MGET split across the nodes. */
static void cluster_part(void)
{
    hx_topo t;
    hx_proc p;
    hx_cluster_opts o = {.masters = 3, .tls_dir = dir};
    if (hx_cluster_start(&t, &o) != 0) {
        ok(0, "cluster: the TLS Cluster starts");
        return;
    }
    const char *extra[] = {"--upstream-tls-cert-file", f("client.crt"), "--upstream-tls-key-file", f("client.key"), NULL};
    if (tls_proxy(&p, t.masters[0].port, extra) != 0) {
        ok(0, "cluster: hotproxy starts");
        hx_topo_stop(&t, 10000);
        return;
    }
    redisContext *c = hx_redis(p.port);
    is_str(hx_info_get(c, "hotproxy_upstream", "hotproxy_topology"), "cluster",
           "cluster: topology auto asked over TLS and found a Cluster");
    ok(wait_info(c, "hotproxy_cluster_slots_known", "16384"), "cluster: the slot map is whole (CLUSTER SLOTS over TLS)");
    ok(wait_info(c, "hotproxy_cluster_nodes", "3"), "cluster: a pool per master");
    char cmd[4096] = "MGET";
    int set = 1;
    for (int i = 0; i < 30; i++) {
        char k[16], v[16];
        snprintf(k, sizeof(k), "ck%d", i);
        snprintf(v, sizeof(v), "cv%d", i);
        set &= !strcmp(hx_cmd(c, "SET %s %s", k, v), "OK");
        snprintf(cmd + strlen(cmd), sizeof(cmd) - strlen(cmd), " %s", k);
    }
    ok(set, "cluster: 30 keys SET through hotproxy");
    int spread = 1;
    for (int i = 0; i < 3; i++) spread &= atoi(rcmd(t.masters[i].port, "DBSIZE")) > 0;
    ok(spread, "cluster: the keys went to all 3 nodes");
    long long split = hx_info_num(c, "hotproxy_upstream", "hotproxy_cluster_split");
    redisReply *r = redisCommand(c, cmd);
    int good = r && r->type == REDIS_REPLY_ARRAY && r->elements == 30;
    for (size_t i = 0; good && i < 30; i++) {
        char v[16];
        snprintf(v, sizeof(v), "cv%zu", i);
        good = r->element[i]->type == REDIS_REPLY_STRING && !strcmp(r->element[i]->str, v);
    }
    ok(good, "cluster: a MGET of the 30 keys is split across the nodes and merged in order");
    if (r) freeReplyObject(r);
    ok(hx_info_num(c, "hotproxy_upstream", "hotproxy_cluster_split") > split, "cluster: hotproxy_cluster_split grows");
    is_int(tls_failures(c), 0, "cluster: no TLS failure counted");
    redisFree(c);
    is_int(hx_stop(&p, 15000), 0, "cluster: hotproxy exits 0");
    hx_topo_stop(&t, 10000);
}

int main(void)
{
    hx_init(600);
    snprintf(dir, sizeof(dir), "%s/tls", hx_tmpdir());
    if (hx_tls_certs(dir) != 0) {
        ok(0, "the harness made the certificates");
        done_testing();
        return exit_status();
    }
    no_plan();
    hx_proc r1, r2, rexp, rca, rname;
    if (tls_redis(&r1, "redis-tls", NULL, "no") != 0) {
        ok(0, "a TLS-only redis-server starts");
        done_testing();
        return exit_status();
    }
    basics(r1.port);

    /* mutual TLS */
    if (tls_redis(&r2, "redis-mtls", NULL, "yes") == 0) {
        const char *none[] = {NULL};
        refused(r2.port, "mutual TLS without upstream-tls-cert-file", "certificate required", none);
        const char *mine[] = {"--upstream-tls-cert-file", f("client.crt"), "--upstream-tls-key-file", f("client.key"),
                              NULL};
        accepted(r2.port, "mutual TLS with upstream-tls-cert-file", mine);
        hx_stop(&r2, 10000);
    } else {
        ok(0, "a redis-server with tls-auth-clients yes starts");
    }

    /* server certificates refused, then accepted with upstream-tls-verify no */
    const char *none[] = {NULL};
    const char *noverify[] = {"--upstream-tls-verify", "no", NULL};
    if (tls_redis(&rexp, "redis-expired", "expired", "no") == 0) {
        refused(rexp.port, "an expired certificate", "certificate refused: certificate has expired", none);
        accepted(rexp.port, "an expired certificate, upstream-tls-verify no", noverify);
        hx_stop(&rexp, 10000);
    } else {
        ok(0, "a redis-server with an expired certificate starts");
    }
    if (tls_redis(&rca, "redis-otherca", "wrong", "no") == 0) {
        refused(rca.port, "a certificate of another CA", "certificate refused: unable to get local issuer certificate",
                none);
        accepted(rca.port, "a certificate of another CA, upstream-tls-verify no", noverify);
        hx_stop(&rca, 10000);
    } else {
        ok(0, "a redis-server with a certificate of another CA starts");
    }
    if (tls_redis(&rname, "redis-othername", "wrongname", "no") == 0) {
        refused(rname.port, "a certificate for another name", "certificate refused: IP address mismatch", none);
        accepted(rname.port, "a certificate for another name, upstream-tls-verify no", noverify);
        const char *sni[] = {"--upstream-tls-sni", "not-this-host", NULL};
        accepted(rname.port, "upstream-tls-sni not-this-host, the certificate's name", sni);
        hx_stop(&rname, 10000);
    } else {
        ok(0, "a redis-server with a certificate for another name starts");
    }
    const char *wrongsni[] = {"--upstream-tls-sni", "not-this-host", NULL};
    refused(r1.port, "upstream-tls-sni not-this-host, not the certificate's name", "certificate refused: hostname mismatch",
            wrongsni);

    not_tls();
    reload(r1.port);
    bad_file(r1.port);
    hx_stop(&r1, 10000);
    /* the Cluster first: a replica writes the RDB it syncs from its master
     * as dump.rdb in the temp dir every server shares, which a Cluster
     * node started later would load (and refuse to join, "not empty") */
    cluster_part();
    sentinel_part();
    done_testing();
    return exit_status();
}
