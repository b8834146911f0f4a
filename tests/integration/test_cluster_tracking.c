/*
 * test_cluster_tracking: CLIENT TRACKING (client-side caching) through
 * hotproxy in front of a Redis Cluster of 3 masters, by a plain RESP3 client
 * over a raw socket, as against one Redis:
 *  - default mode: the client reads keys of every master; another client
 *    writes each: an invalidation for every one reaches it; its commands on
 *    keys of several masters (single-key, MGET and MSET across masters)
 *    never get CROSSSLOT, and an MGET across masters is tracked too;
 *  - BCAST PREFIX: writes to keys of the prefix on every master reach a
 *    client that read nothing;
 *  - REDIRECT and OPTIN are refused with a clear error in cluster mode, and
 *    the client goes on working;
 *  - a slot it read from moves to another master (resharding by hand): the
 *    client is told to flush everything (an invalidate push with a null, as
 *    Redis sends on FLUSHALL), and keys of that slot read again from the new
 *    master are tracked there;
 *  - CLIENT TRACKING OFF: no invalidation afterwards, and RESET frees it all;
 *  - bad input: more CLIENT TRACKING ON than hotproxy keeps to replay gets a
 *    clear error;
 *  - its connection to one master lost: the client is closed, as against one
 *    Redis (what it read there is watched no more).
 * Every wait polls with a generous deadline.
 */
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "tap.h"

#define DEADLINE_MS 30000

static hx_topo topo;

typedef struct conn {
    int fd;
    hx_buf in;
} conn;

static void conn_open(conn *c, int port)
{
    memset(c, 0, sizeof(*c));
    c->fd = hx_connect(port);
}

static void conn_close(conn *c)
{
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    hx_buf_free(&c->in);
}

/* Send a command of space-separated words. */
static void conn_send(conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void conn_send(conn *c, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    const char *argv[32];
    int argc = 0;
    char *save = NULL;
    for (char *w = strtok_r(line, " ", &save); w && argc < 32; w = strtok_r(NULL, " ", &save)) argv[argc++] = w;
    hx_buf b = {0};
    hx_buf_command(&b, argc, argv, NULL);
    hx_send(c->fd, b.data, b.len, 5000);
    hx_buf_free(&b);
}

static void conn_read(conn *c, int ms)
{
    struct pollfd pfd = {c->fd, POLLIN, 0};
    if (poll(&pfd, 1, ms) <= 0) return;
    hx_buf_reserve(&c->in, 65536);
    ssize_t n = read(c->fd, c->in.data + c->in.len, 65536);
    if (n > 0) c->in.len += (size_t)n;
}

/* Where needle is in what c read, reading until it shows; -1 if it never did. */
static long conn_find(conn *c, const char *needle, int timeout_ms)
{
    size_t nl = strlen(needle);
    double end = hx_now() + timeout_ms / 1000.0;
    for (;;) {
        const char *hit = c->in.len >= nl ? memmem(c->in.data, c->in.len, needle, nl) : NULL;
        if (hit) return hit - c->in.data;
        double left = end - hx_now();
        if (left <= 0) return -1;
        conn_read(c, (int)(left * 1000) + 1);
    }
}

/* Wait for needle and drop what was read up to its end. */
static int conn_expect(conn *c, const char *needle, int timeout_ms)
{
    long at = conn_find(c, needle, timeout_ms);
    if (at < 0) {
        diag("  waited for '%s', got %zu bytes: '%.*s'", needle, c->in.len, (int)(c->in.len > 300 ? 300 : c->in.len),
             c->in.data ? c->in.data : "");
        return 0;
    }
    size_t end = (size_t)at + strlen(needle);
    memmove(c->in.data, c->in.data + end, c->in.len - end);
    c->in.len -= end;
    return 1;
}

/* The invalidation push for one key, as Redis sends it in RESP3. */
static const char *inval(const char *key)
{
    static char b[4][128];
    static int n;
    char *out = b[n++ % 4];
    snprintf(out, 128, ">2\r\n$10\r\ninvalidate\r\n*1\r\n$%zu\r\n%s\r\n", strlen(key), key);
    return out;
}

static const char flush_push[] = ">2\r\n$10\r\ninvalidate\r\n_\r\n";

/* keys[m]: a key named prefix<n> owned by master m, for each master. */
static int keys_per_master(const char *prefix, char keys[][32])
{
    int found = 0;
    for (int m = 0; m < topo.nmasters; m++) keys[m][0] = '\0';
    for (int i = 0; i < 1000 && found < topo.nmasters; i++) {
        char k[32];
        snprintf(k, sizeof(k), "%s%d", prefix, i);
        int p = hx_cluster_owner(topo.masters[0].port, k);
        for (int m = 0; m < topo.nmasters; m++)
            if (topo.masters[m].port == p && !keys[m][0]) {
                snprintf(keys[m], 32, "%s", k);
                found++;
            }
    }
    return found == topo.nmasters ? 0 : -1;
}

static void default_mode(int port)
{
    char k[HX_TOPO_MAX][32];
    if (!ok(keys_per_master("ct:", k) == 0, "default: a key on each of the %d masters", topo.nmasters)) return;
    redisContext *w = hx_redis(port);
    for (int m = 0; m < topo.nmasters; m++) hx_cmd(w, "SET %s v%d", k[m], m);
    conn t;
    conn_open(&t, port);
    conn_send(&t, "HELLO 3");
    conn_send(&t, "CLIENT TRACKING on");
    ok(conn_expect(&t, "proto", DEADLINE_MS) && conn_expect(&t, "+OK\r\n", DEADLINE_MS),
       "default: HELLO 3 and CLIENT TRACKING on through hotproxy");
    int read_ok = 1;
    for (int m = 0; m < topo.nmasters; m++) {
        char want[64];
        conn_send(&t, "GET %s", k[m]);
        snprintf(want, sizeof(want), "$2\r\nv%d\r\n", m);
        read_ok &= conn_expect(&t, want, DEADLINE_MS);
    }
    ok(read_ok && !memmem(t.in.data, t.in.len, "CROSSSLOT", 9),
       "default: the tracking client reads a key of every master, no CROSSSLOT");
    for (int m = 0; m < topo.nmasters; m++) is_str(hx_cmd(w, "SET %s x%d", k[m], m), "OK", "default: another client writes %s", k[m]);
    for (int m = 0; m < topo.nmasters; m++)
        ok(conn_find(&t, inval(k[m]), DEADLINE_MS) >= 0, "default: the invalidation for %s (master %d) reaches it", k[m], m);

    /* its own commands on keys of several masters: single keys, and split ones */
    hx_buf_reset(&t.in);
    for (int m = 0; m < topo.nmasters; m++) conn_send(&t, "INCR %s:n", k[m]);
    conn_send(&t, "MSET %s a %s b %s c", k[0], k[1], k[2]);
    conn_send(&t, "MGET %s %s %s", k[0], k[1], k[2]);
    ok(conn_expect(&t, ":1\r\n:1\r\n:1\r\n+OK\r\n*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n", DEADLINE_MS),
       "default: INCR of each master's key, MSET and MGET across masters: answered in order, no CROSSSLOT");
    /* the MGET was tracked on every master (the MSET's own writes came before it) */
    hx_buf_reset(&t.in);
    for (int m = 0; m < topo.nmasters; m++) hx_cmd(w, "SET %s y%d", k[m], m);
    int all = 1;
    for (int m = 0; m < topo.nmasters; m++) all &= conn_find(&t, inval(k[m]), DEADLINE_MS) >= 0;
    ok(all, "default: after an MGET across masters, a write to each key sends its invalidation");

    /* a write straight to a master reaches it too (Redis tracks it, not hotproxy) */
    hx_buf_reset(&t.in);
    conn_send(&t, "GET %s", k[1]);
    ok(conn_expect(&t, "$2\r\ny1\r\n", DEADLINE_MS), "default: it reads %s again", k[1]);
    redisContext *d = hx_redis(hx_cluster_owner(topo.masters[0].port, k[1]));
    hx_cmd(d, "SET %s z", k[1]);
    redisFree(d);
    ok(conn_find(&t, inval(k[1]), DEADLINE_MS) >= 0, "default: a write straight to the master invalidates it");

    /* a transaction on another master than its last command's: MULTI moves
     * there (its last command, the GET above, was master 1's) */
    hx_buf_reset(&t.in);
    conn_send(&t, "MULTI");
    conn_send(&t, "SET %s tx", k[0]);
    conn_send(&t, "GET %s", k[0]);
    conn_send(&t, "EXEC");
    ok(conn_expect(&t, "+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n$2\r\ntx\r\n", DEADLINE_MS),
       "default: MULTI, then keys of master 0 only: the transaction runs there");
    d = hx_redis(hx_cluster_owner(topo.masters[0].port, k[0]));
    is_str(hx_cmd(d, "GET %s", k[0]), "tx", "default: ... master 0 holds its write");
    redisFree(d);

    /* OFF: nothing more, on any master */
    hx_buf_reset(&t.in);
    for (int m = 0; m < topo.nmasters; m++) conn_send(&t, "GET %s", k[m]);
    conn_send(&t, "CLIENT TRACKING off");
    ok(conn_expect(&t, "+OK\r\n", DEADLINE_MS), "default: CLIENT TRACKING off");
    for (int m = 0; m < topo.nmasters; m++) hx_cmd(w, "SET %s after-off", k[m]);
    conn_send(&t, "GET %s", k[0]);
    ok(conn_expect(&t, "$9\r\nafter-off\r\n", DEADLINE_MS), "default: then a read through the shared path");
    ok(!memmem(t.in.data, t.in.len, "invalidate", 10), "default: no invalidation came after OFF");
    conn_close(&t);
    redisFree(w);
}

static void bcast(int port)
{
    char k[HX_TOPO_MAX][32];
    if (!ok(keys_per_master("ctb:", k) == 0, "bcast: a key of the prefix on each master")) return;
    redisContext *direct[HX_TOPO_MAX];
    for (int m = 0; m < topo.nmasters; m++) direct[m] = hx_redis(topo.masters[m].port);
    conn b;
    conn_open(&b, port);
    conn_send(&b, "HELLO 3");
    /* its connection of one master is up already (WATCH): Redis' +OK there
     * comes back at once, while the other masters' are new */
    conn_send(&b, "WATCH %s", k[0]);
    ok(conn_expect(&b, "proto", DEADLINE_MS) && conn_expect(&b, "+OK\r\n", DEADLINE_MS), "bcast: WATCH");
    conn_send(&b, "CLIENT TRACKING on BCAST PREFIX ctb:");
    ok(conn_expect(&b, "+OK\r\n", DEADLINE_MS), "bcast: CLIENT TRACKING on BCAST PREFIX ctb:");
    /* at once, straight to each master: its +OK means tracking is on everywhere */
    for (int m = 0; m < topo.nmasters; m++) hx_cmd(direct[m], "SET %s v", k[m]);
    for (int m = 0; m < topo.nmasters; m++) redisFree(direct[m]);
    conn_send(&b, "PING");
    ok(conn_find(&b, "+PONG\r\n", DEADLINE_MS) >= 0, "bcast: PING");
    redisContext *w = hx_redis(port);
    hx_cmd(w, "SET other:key v");
    for (int m = 0; m < topo.nmasters; m++)
        ok(conn_find(&b, inval(k[m]), DEADLINE_MS) >= 0, "bcast: a write to %s straight to master %d, right after its +OK, reaches the client, which read nothing",
           k[m], m);
    ok(!memmem(b.in.data, b.in.len, "other:key", 9), "bcast: none for a key outside the prefix");
    conn_close(&b);
    redisFree(w);
}

static void refused(int port)
{
    redisContext *x = hx_redis(port), *a = hx_redis(port);
    long long xid = atoll(hx_cmd(x, "CLIENT ID"));
    const char *r = hx_cmd(a, "CLIENT TRACKING on REDIRECT %lld", xid);
    ok(!strncmp(r, "ERR hotproxy: CLIENT TRACKING REDIRECT is not supported in front of a Redis Cluster", 80),
       "refused: REDIRECT in cluster mode gets a clear error (%s)", r);
    r = hx_cmd(a, "CLIENT TRACKING on OPTIN");
    ok(!strncmp(r, "ERR hotproxy: CLIENT TRACKING OPTIN and OPTOUT are not supported", 60), "refused: OPTIN too (%s)", r);
    is_str(hx_cmd(a, "SET ct:after-refused 1"), "OK", "refused: the client goes on working");
    is_str(hx_cmd(a, "MULTI"), "OK", "refused: MULTI");
    r = hx_cmd(a, "CLIENT TRACKING on");
    ok(!strncmp(r, "ERR hotproxy: CLIENT TRACKING inside MULTI is not supported", 59), "refused: ... CLIENT TRACKING inside it (%s)", r);
    is_str(hx_cmd(a, "EXEC"), "EXECABORT Transaction discarded because of previous errors.", "refused: ... EXEC aborts, as Redis does after a refused command");
    is_str(hx_cmd(a, "CLIENT GETREDIR"), "-1", "refused: ... with tracking off");
    redisFree(x);
    redisFree(a);

    /* what hotproxy keeps to replay on each new master's connection is
     * bounded: BCAST prefix after prefix ends in a clear error */
    redisContext *b = hx_redis(port);
    int n = 0, oks = 0;
    const char *last = "";
    for (; n < 5000; n++) {
        last = hx_cmd(b, "CLIENT TRACKING on BCAST PREFIX ctq%d:", n);
        if (strcmp(last, "OK")) break;
        oks++;
    }
    ok(oks > 100 && !strncmp(last, "ERR hotproxy: too many CLIENT TRACKING ON commands", 50),
       "refused: after %d prefixes, BCAST with one more gets a clear error (%s)", oks, last);
    is_str(hx_cmd(b, "SET ct:after-prefixes 1"), "OK", "refused: the client goes on working");
    redisFree(b);
}

/* A slot the client read from moves to another master (by hand, as
 * redis-cli --cluster reshard does it): it is told to flush, and a key of
 * that slot read again is tracked on the new master. */
static void slot_moves(int port)
{
    int src = topo.masters[0].port, dst = topo.masters[1].port;
    char k[HX_TOPO_MAX][32];
    if (!ok(keys_per_master("ctm:", k) == 0, "moved: a key on each master")) return;
    char held[48], absent[48];
    snprintf(held, sizeof(held), "%s", k[0]);
    snprintf(absent, sizeof(absent), "{%s}.none", k[0]); /* the same slot, never written: a null the client caches */
    redisContext *w = hx_redis(port);
    hx_cmd(w, "SET %s one", held);
    conn t;
    conn_open(&t, port);
    conn_send(&t, "HELLO 3");
    conn_send(&t, "CLIENT TRACKING on");
    conn_send(&t, "GET %s", held);
    conn_send(&t, "GET %s", absent);
    conn_send(&t, "GET %s", k[2]);
    ok(conn_expect(&t, "+OK\r\n$3\r\none\r\n_\r\n", DEADLINE_MS), "moved: the client tracks and reads a key and a null of master 0's slot");

    redisContext *s = hx_redis(src), *d = hx_redis(dst), *pc = hx_redis(port);
    long long ask0 = hx_info_num(pc, "hotproxy_upstream", "hotproxy_cluster_ask");
    int slot = atoi(hx_cmd(s, "CLUSTER KEYSLOT %s", held));
    char dstid[64];
    hx_cluster_node_id(dst, dstid, sizeof(dstid));
    hx_cluster_move_begin(slot, src, dst);
    const char *mr = hx_cmd(s, "MIGRATE 127.0.0.1 %d %s 0 5000", dst, held);
    if (strcmp(mr, "OK")) diag("MIGRATE: %s", mr);
    ok(conn_find(&t, inval(held), DEADLINE_MS) >= 0, "moved: MIGRATE took the key off master 0: its invalidation");
    /* mid-migration, hotproxy still sends it to master 0, which answers ASK */
    hx_buf_reset(&t.in);
    conn_send(&t, "GET %s", held);
    ok(conn_expect(&t, "$3\r\none\r\n", DEADLINE_MS) && !memmem(t.in.data, t.in.len, "ASK", 3),
       "moved: mid-migration its read is answered, the ASK followed by hotproxy (never shown)");
    ok(hx_info_num(pc, "hotproxy_upstream", "hotproxy_cluster_ask") > ask0, "moved: ... INFO counts the ASK");
    long long moved0 = hx_info_num(pc, "hotproxy_upstream", "hotproxy_cluster_moved");
    for (int i = 0; i < topo.nmasters; i++) {
        redisContext *n = hx_redis(topo.masters[i].port);
        hx_cmd(n, "CLUSTER SETSLOT %d NODE %s", slot, dstid);
        redisFree(n);
    }
    /* read at once: hotproxy's map may still say master 0, whose MOVED is followed */
    conn_send(&t, "GET %s", held);
    ok(conn_find(&t, "$3\r\none\r\n", DEADLINE_MS) >= 0 && !memmem(t.in.data, t.in.len, "MOVED", 5),
       "moved: slot %d is master 1's: a read right after is answered, no MOVED shown", slot);
    diag("MOVED followed for that read: %lld (0 when hotproxy's map was read again first)",
         hx_info_num(pc, "hotproxy_upstream", "hotproxy_cluster_moved") - moved0);
    /* hotproxy learns it (that MOVED, or its next read of the map): the client is told */
    ok(conn_find(&t, flush_push, DEADLINE_MS) >= 0,
       "moved: the client gets an invalidate push with a null (flush everything), as slot %d left master 0", slot);
    hx_buf_reset(&t.in);
    conn_send(&t, "GET %s", absent);
    ok(conn_expect(&t, "_\r\n", DEADLINE_MS), "moved: it reads the null key again, from master 1");
    is_str(hx_cmd(w, "SET %s two", absent), "OK", "moved: another client writes the key that was null");
    is_str(hx_cmd(w, "SET %s three", held), "OK", "moved: ... and the other one");
    ok(conn_find(&t, inval(absent), DEADLINE_MS) >= 0, "moved: the invalidation of the null key comes from the new master");
    ok(conn_find(&t, inval(held), DEADLINE_MS) >= 0, "moved: ... and of the other key");
    /* a key of a master that did not change works as before */
    hx_cmd(w, "SET %s changed", k[2]);
    ok(conn_find(&t, inval(k[2]), DEADLINE_MS) >= 0, "moved: a key of master 2 is still tracked there");
    conn_send(&t, "RESET");
    ok(conn_expect(&t, "+RESET\r\n", DEADLINE_MS), "moved: RESET");
    conn_close(&t);
    redisFree(s);
    redisFree(d);
    redisFree(pc);
    redisFree(w);
}

/* A blocking command of a tracking client whose slot is MIGRATING: the
 * ASK is followed to the importing node, where it blocks; CLIENT UNBLOCK
 * through hotproxy must reach it there (the connection it is blocked on),
 * else the client stays blocked for good. */
static void blocked_ask(int port)
{
    int src = topo.masters[2].port, dst = topo.masters[1].port;
    char k[HX_TOPO_MAX][32];
    if (!ok(keys_per_master("ctk:", k) == 0, "blocked: a key on each master")) return;
    char list[48];
    snprintf(list, sizeof(list), "{%s}.list", k[2]); /* master 2's slot, never written */
    conn t;
    conn_open(&t, port);
    conn_send(&t, "HELLO 3");
    conn_send(&t, "CLIENT TRACKING on");
    conn_send(&t, "GET %s", k[0]);
    conn_send(&t, "CLIENT ID");
    ok(conn_expect(&t, "+OK\r\n_\r\n:", DEADLINE_MS), "blocked: the client tracks, reads a key of master 0");
    long at = conn_find(&t, "\r\n", DEADLINE_MS);
    long long id = at > 0 ? atoll(t.in.data) : 0;
    hx_buf_reset(&t.in);
    redisContext *s = hx_redis(src), *d = hx_redis(dst), *w = hx_redis(port);
    int slot = atoi(hx_cmd(s, "CLUSTER KEYSLOT %s", list));
    hx_cluster_move_begin(slot, src, dst);
    /* the key exists nowhere: master 2 answers ASK, it blocks on master 1 */
    conn_send(&t, "BLPOP %s 0", list);
    double until = hx_now() + DEADLINE_MS / 1000.0;
    while (hx_now() < until && hx_info_num(d, "clients", "blocked_clients") < 1) hx_sleep_ms(20);
    ok(hx_info_num(d, "clients", "blocked_clients") >= 1, "blocked: BLPOP %s 0 follows the ASK, blocks on master 1", list);
    is_str(hx_cmd(w, "CLIENT UNBLOCK %lld ERROR", id), "1",
           "blocked: CLIENT UNBLOCK %lld ERROR through hotproxy reaches the connection it is blocked on", id);
    ok(conn_expect(&t, "-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n", DEADLINE_MS),
       "blocked: the client gets Redis' UNBLOCKED error");
    hx_cmd(s, "CLUSTER SETSLOT %d STABLE", slot);
    hx_cmd(d, "CLUSTER SETSLOT %d STABLE", slot);
    redisContext *m0 = hx_redis(topo.masters[0].port);
    hx_cmd(m0, "SET %s changed", k[0]);
    redisFree(m0);
    ok(conn_find(&t, inval(k[0]), DEADLINE_MS) >= 0, "blocked: what it read on master 0 is still tracked");
    conn_close(&t);
    redisFree(s);
    redisFree(d);
    redisFree(w);
}

/* An MGET across masters by a tracking client while one key's slot is
 * MIGRATING and the key already moved: its part on master 0 gets ASK, which
 * hotproxy follows (on the client's own connection of the importing node),
 * as for any client: no ASK reaches it. */
static void split_ask(int port)
{
    int src = topo.masters[0].port, dst = topo.masters[1].port;
    char k[HX_TOPO_MAX][32];
    if (!ok(keys_per_master("cts:", k) == 0, "split: a key on each master")) return;
    redisContext *s = hx_redis(src), *d = hx_redis(dst), *w = hx_redis(port);
    hx_cmd(w, "SET %s a", k[0]);
    hx_cmd(w, "SET %s b", k[2]);
    conn t;
    conn_open(&t, port);
    conn_send(&t, "HELLO 3");
    conn_send(&t, "CLIENT TRACKING on");
    conn_send(&t, "GET %s", k[2]);
    ok(conn_expect(&t, "+OK\r\n$1\r\nb\r\n", DEADLINE_MS), "split: the client tracks, reads a key of master 2");
    int slot = atoi(hx_cmd(s, "CLUSTER KEYSLOT %s", k[0]));
    char dstid[64];
    hx_cluster_node_id(dst, dstid, sizeof(dstid));
    hx_cluster_move_begin(slot, src, dst);
    const char *mr = hx_cmd(s, "MIGRATE 127.0.0.1 %d %s 0 5000", dst, k[0]);
    if (strcmp(mr, "OK")) diag("MIGRATE: %s", mr);
    hx_buf_reset(&t.in);
    conn_send(&t, "MGET %s %s", k[0], k[2]);
    ok(conn_expect(&t, "*2\r\n$1\r\na\r\n$1\r\nb\r\n", DEADLINE_MS),
       "split: MGET across masters, one key MIGRATEd mid-migration: answered, the ASK followed by hotproxy");
    for (int i = 0; i < topo.nmasters; i++) {
        redisContext *n = hx_redis(topo.masters[i].port);
        hx_cmd(n, "CLUSTER SETSLOT %d NODE %s", slot, dstid);
        redisFree(n);
    }
    conn_close(&t);
    redisFree(s);
    redisFree(d);
    redisFree(w);
}

/* Its connection to one master is lost (the master closes it): what it
 * read there is watched no more, so hotproxy closes the client, as against
 * one Redis; the others go on. */
static void lost_connection(int port)
{
    char k[HX_TOPO_MAX][32];
    if (!ok(keys_per_master("ctl:", k) == 0, "lost: a key on each master")) return;
    conn t;
    conn_open(&t, port);
    conn_send(&t, "HELLO 3");
    conn_send(&t, "CLIENT TRACKING on");
    for (int m = 0; m < topo.nmasters; m++) conn_send(&t, "GET %s", k[m]);
    ok(conn_expect(&t, "+OK\r\n_\r\n_\r\n_\r\n", DEADLINE_MS), "lost: the client tracks keys of every master");
    /* master 0's: not the connection its last command used (master 2's) */
    redisContext *d = hx_redis(topo.masters[0].port);
    long long killed = atoll(hx_cmd(d, "CLIENT KILL TYPE normal SKIPME yes"));
    redisFree(d);
    ok(killed > 0, "lost: master 0 closes its clients (%lld), among them the client's connection there", killed);
    int st = hx_read_eof(t.fd, &t.in, DEADLINE_MS);
    ok(st == HX_EOF || st == HX_RESET, "lost: hotproxy closes the client (%s)", hx_status_name(st));
    conn_close(&t);
    redisContext *w = hx_redis(port);
    const char *v = "";
    double until = hx_now() + DEADLINE_MS / 1000.0;
    while (hx_now() < until && strcmp(v = hx_cmd(w, "SET %s back", k[0]), "OK")) hx_sleep_ms(50);
    is_str(v, "OK", "lost: another client writes a key of master 0 again");
    redisFree(w);
}

/* A master's connection that cannot even be begun (its announced hostname
 * does not resolve): the tracking client's command for that master gets
 * hotproxy's error, and the client keeps its connection of the other
 * master, still tracked there (the failed one was never its own). */
static void unresolvable(int port)
{
    char k[HX_TOPO_MAX][32];
    if (!ok(keys_per_master("ctu:", k) == 0, "unresolvable: a key on each master")) return;
    for (int m = 0; m < topo.nmasters; m++) {
        redisContext *d = hx_redis(topo.masters[m].port);
        hx_cmd(d, "CONFIG SET cluster-announce-hostname %s", m == 1 ? "nosuch.invalid" : "127.0.0.1");
        hx_cmd(d, "CONFIG SET cluster-preferred-endpoint-type hostname");
        redisFree(d);
    }
    /* hotproxy's next map names master 1 by that hostname: its commands fail */
    redisContext *w = hx_redis(port);
    const char *v = "";
    double until = hx_now() + DEADLINE_MS / 1000.0;
    while (hx_now() < until && !strstr(v = hx_cmd(w, "GET %s", k[1]), "nosuch.invalid")) hx_sleep_ms(100);
    ok(strstr(v, "nosuch.invalid") != NULL, "unresolvable: master 1 is named by a hostname that does not resolve (%s)", v);
    conn t;
    conn_open(&t, port);
    conn_send(&t, "HELLO 3");
    conn_send(&t, "CLIENT TRACKING on");
    conn_send(&t, "GET %s", k[0]);
    ok(conn_expect(&t, "+OK\r\n_\r\n", DEADLINE_MS), "unresolvable: the client tracks, reads a key of master 0");
    conn_send(&t, "GET %s", k[1]);
    ok(conn_expect(&t, "-ERR hotproxy: cannot open an upstream connection for this client\r\n", DEADLINE_MS),
       "unresolvable: its read of master 1's key gets hotproxy's error");
    conn_send(&t, "GET %s", k[0]);
    ok(conn_expect(&t, "_\r\n", DEADLINE_MS), "unresolvable: the client goes on: it reads master 0's key again");
    redisContext *d = hx_redis(topo.masters[0].port);
    hx_cmd(d, "SET %s changed", k[0]);
    redisFree(d);
    ok(conn_find(&t, inval(k[0]), DEADLINE_MS) >= 0, "unresolvable: ... and its invalidation reaches it");
    conn_close(&t);
    for (int m = 0; m < topo.nmasters; m++) {
        redisContext *n = hx_redis(topo.masters[m].port);
        hx_cmd(n, "CONFIG SET cluster-preferred-endpoint-type ip");
        redisFree(n);
    }
    redisFree(w);
}

int main(void)
{
    hx_init(400);
    hx_cluster_opts o = {.masters = 3};
    hx_proc proxy;
    int up = hx_cluster_proxy_start(&topo, &o, &proxy, NULL);
    if (!ok(up != 1, "3 masters started") || !ok(up == 0, "hotproxy starts with topology cluster")) {
        done_testing();
        return exit_status();
    }
    redisContext *c = hx_redis(proxy.port);
    ok(hx_info_wait(c, "hotproxy_upstream", "hotproxy_cluster_slots_known", "16384", 20000) == 0, "INFO: 16384 slots known");
    redisFree(c);
    default_mode(proxy.port);
    bcast(proxy.port);
    refused(proxy.port);
    slot_moves(proxy.port);
    blocked_ask(proxy.port);
    split_ask(proxy.port);
    lost_connection(proxy.port);
    unresolvable(proxy.port);
    is_int(hx_stop(&proxy, 10000), 0, "hotproxy exits cleanly");
    hx_topo_stop(&topo, 5000);
    done_testing();
    return exit_status();
}
