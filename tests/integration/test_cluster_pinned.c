/*
 * test_cluster_pinned: commands on a client's own connection (blocking
 * commands, sharded pub/sub) through hotproxy while their slot moves to
 * another master of a Redis Cluster.  Every client is a raw socket, so
 * every frame it gets is seen: a MOVED, an ASK or a sunsubscribe it did
 * not ask for would show.
 *
 * 3 masters, hotproxy with topology cluster.  Slots are moved by hand, as
 * redis-cli --cluster reshard does it (SETSLOT IMPORTING / MIGRATING,
 * MIGRATE of the slot's keys, SETSLOT NODE on every master, the new
 * owner first):
 *  - BLPOP k 0 blocked through hotproxy, k's slot moved: Redis unblocks it
 *    with -MOVED, hotproxy sends it again to the new owner, where it blocks
 *    (checked there); an LPUSH there gives the client the value, and a GET
 *    the client pipelined behind the BLPOP is answered after it;
 *  - a BLPOP sent right after a slot moved (hotproxy's map not read again
 *    yet): the MOVED is followed at once, the value pushed on the new owner
 *    arrives;
 *  - BLPOP of a list already MIGRATEd while its slot is MIGRATING /
 *    IMPORTING: hotproxy follows the ASK (ASKING + BLPOP on the target) and
 *    the client gets the value; a BLPOP of a key of that slot that exists
 *    nowhere blocks on the target, and an LPUSH there after the slot is
 *    the target's answers it;
 *  - CLIENT UNBLOCK id ERROR through hotproxy of a client blocked on a
 *    master other than slot 0's: it reaches that master, and the client
 *    gets Redis' UNBLOCKED error (not retried);
 *  - a RESP2 and a RESP3 (HELLO 3) subscriber of two shard channels of one
 *    slot, the slot moved: hotproxy subscribes them again on the new owner
 *    (PUBSUB SHARDNUMSUB there says so); SPUBLISH through hotproxy and
 *    straight to the new owner reach the subscriber, which never sees a
 *    sunsubscribe it did not ask for; its own SUNSUBSCRIBE (one channel,
 *    then all) gets Redis' replies;
 *  - a subscriber of shard channels of two slots of one master, one slot
 *    moved: hotproxy does not follow (it would need a connection to each
 *    master): the client gets Redis' sunsubscribe for the channel that
 *    moved, and its other channel still gets messages; nor does it follow a
 *    RESP3 subscriber in MULTI on that connection (the transaction is the
 *    old master's): the client gets Redis' sunsubscribe, and its DISCARD
 *    answers OK.
 * 3 masters + 3 replicas:
 *  - BLPOP blocked on master 0 through hotproxy, CLUSTER FAILOVER on its
 *    replica: the old master unblocks it with -UNBLOCKED as it turns
 *    replica; hotproxy sends it again to the new master, and an LPUSH there
 *    gives the client the value.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "tap.h"

#define DEADLINE 30.0 /* seconds any awaited condition gets */

static hx_topo topo;

/* A key "<prefix>{<tag>N}" (N counting up) whose master is on port
 * (want_port > 0) or not on it (want_port < 0, -port), into out. */
static void key_on(const char *prefix, int want_port, char *out, size_t n)
{
    for (int i = 0; i < 100000; i++) {
        snprintf(out, n, "{%s%d}", prefix, i);
        int p = hx_cluster_owner(topo.masters[0].port, out);
        if ((want_port > 0 && p == want_port) || (want_port < 0 && p != -want_port && p > 0)) return;
    }
}

static int slot_of(const char *key)
{
    redisContext *d = hx_redis(topo.masters[0].port);
    int s = atoi(hx_cmd(d, "CLUSTER KEYSLOT %s", key));
    redisFree(d);
    return s;
}

/* MIGRATE every key of the slot from src to dst. */
static void move_keys(int slot, int src, int dst)
{
    redisContext *s = hx_redis(src);
    redisReply *r = redisCommand(s, "CLUSTER GETKEYSINSLOT %d 1000", slot);
    for (size_t k = 0; r && r->type == REDIS_REPLY_ARRAY && k < r->elements; k++) {
        redisReply *m = redisCommand(s, "MIGRATE 127.0.0.1 %d %s 0 5000", dst, r->element[k]->str);
        if (!m || m->type == REDIS_REPLY_ERROR) diag("MIGRATE %s: %s", r->element[k]->str, m ? m->str : s->errstr);
        if (m) freeReplyObject(m);
    }
    if (r) freeReplyObject(r);
    redisFree(s);
}

/* The end: SETSLOT NODE on the new owner, the old one, then the others. */
static void move_end(int slot, int src, int dst)
{
    char dstid[64];
    hx_cluster_node_id(dst, dstid, sizeof(dstid));
    int order[HX_TOPO_MAX], n = 0;
    order[n++] = dst;
    order[n++] = src;
    for (int i = 0; i < topo.nmasters; i++)
        if (topo.masters[i].port != src && topo.masters[i].port != dst) order[n++] = topo.masters[i].port;
    for (int i = 0; i < n; i++) {
        redisContext *d = hx_redis(order[i]);
        const char *r = hx_cmd(d, "CLUSTER SETSLOT %d NODE %s", slot, dstid);
        if (strcmp(r, "OK")) diag("SETSLOT %d NODE on %d: %s", slot, order[i], r);
        redisFree(d);
    }
}

static void move_slot(int slot, int src, int dst)
{
    hx_cluster_move_begin(slot, src, dst);
    move_keys(slot, src, dst);
    move_end(slot, src, dst);
}

/* Until the Redis on port says at least n clients are blocked: 0, or -1. */
static int wait_blocked(int port, int n)
{
    redisContext *c = hx_redis(port);
    double end = hx_now() + DEADLINE;
    int ok = 0;
    while (c && !ok && hx_now() < end) {
        ok = hx_info_num(c, "clients", "blocked_clients") >= n;
        if (!ok) hx_sleep_ms(20);
    }
    if (c) redisFree(c);
    return ok ? 0 : -1;
}

/* A master other than the one on port. */
static int other_master(int port)
{
    return topo.masters[0].port != port ? topo.masters[0].port : topo.masters[1].port;
}

/* The reply a blocked BLPOP client got: "key=value", or the frame as text. */
static const char *blpop_reply(hx_rawc *b)
{
    static char out[256];
    const char *f;
    size_t len;
    int rc = hx_raw_frame(b, &f, &len, (int)(DEADLINE * 1000));
    if (rc != 1) {
        snprintf(out, sizeof(out), "(none: %s)", rc ? "closed" : "timeout");
        return out;
    }
    /* *2\r\n$k\r\nkey\r\n$v\r\nvalue\r\n */
    if (f[0] == '*' && f[1] == '2') {
        const char *p = f + 4, *end = f + len;
        char parts[2][100];
        for (int i = 0; i < 2; i++) {
            int l = atoi(p + 1);
            const char *s = (const char *)memchr(p, '\n', (size_t)(end - p)) + 1;
            snprintf(parts[i], sizeof(parts[i]), "%.*s", l, s);
            p = s + l + 2;
        }
        snprintf(out, sizeof(out), "%s=%s", parts[0], parts[1]);
    } else {
        snprintf(out, sizeof(out), "%.*s", (int)(len > 200 ? 200 : len - 2), f);
    }
    return out;
}

static long long counter(redisContext *c, const char *name)
{
    return hx_info_num(c, "hotproxy_upstream", name);
}

/* BLPOP through hotproxy while (and after) its slot moves: MOVED. */
static void blocked_moved(redisContext *c, int pport)
{
    char k[64], want[128];
    int src = topo.masters[1].port;
    key_on("blm", src, k, sizeof(k));
    int dst = other_master(src), slot = slot_of(k);
    hx_rawc b;
    if (!ok(hx_raw_open(&b, pport) == 0, "MOVED: a client connected")) return;
    long long moved0 = counter(c, "hotproxy_cluster_moved");
    hx_raw_send(&b, "BLPOP", k, "0", NULL);
    hx_raw_send(&b, "GET", k, NULL); /* pipelined behind it: runs after it, as on one Redis */
    ok(wait_blocked(src, 1) == 0, "MOVED: BLPOP %s 0 through hotproxy is blocked on its master", k);
    move_slot(slot, src, dst);
    /* the old master unblocks it with -MOVED (its clients cron), hotproxy
     * sends it to the new one */
    ok(wait_blocked(dst, 1) == 0, "MOVED: slot %d moved: the BLPOP blocks again on the new owner", slot);
    redisContext *d = hx_redis(dst);
    is_str(hx_cmd(d, "LPUSH %s moved-1", k), "1", "MOVED: LPUSH on the new owner");
    snprintf(want, sizeof(want), "%s=moved-1", k);
    is_str(blpop_reply(&b), want, "MOVED: the BLPOP client gets the value, no MOVED");
    ok(counter(c, "hotproxy_cluster_moved") > moved0, "MOVED: hotproxy followed the MOVED (INFO counts it)");
    is_str(hx_raw_reply(&b, 20000), "(nil)", "MOVED: the GET pipelined behind it is answered after it");

    /* a BLPOP right after a slot moved: the map still names the old owner */
    char k2[64];
    key_on("blm2-", src, k2, sizeof(k2));
    int slot2 = slot_of(k2);
    move_slot(slot2, src, dst);
    hx_raw_send(&b, "BLPOP", k2, "0", NULL);
    ok(wait_blocked(dst, 1) == 0, "MOVED: a BLPOP sent right after slot %d moved blocks on the new owner", slot2);
    is_str(hx_cmd(d, "LPUSH %s moved-2", k2), "1", "MOVED: LPUSH on the new owner");
    snprintf(want, sizeof(want), "%s=moved-2", k2);
    is_str(blpop_reply(&b), want, "MOVED: ... the client gets the value");
    redisFree(d);
    hx_raw_close(&b);
}

/* BLPOP while its slot is MIGRATING / IMPORTING: ASK. */
static void blocked_ask(redisContext *c, int pport)
{
    char k[64], k2[80], want[128];
    int src = topo.masters[2].port;
    key_on("bla", src, k, sizeof(k));
    snprintf(k2, sizeof(k2), "%s.nowhere", k); /* the same slot (hash tag) */
    int dst = other_master(src), slot = slot_of(k);
    hx_rawc b;
    if (!ok(hx_raw_open(&b, pport) == 0, "ASK: a client connected")) return;
    hx_raw_send(&b, "RPUSH", k, "asked", NULL);
    is_str(hx_raw_reply(&b, 20000), "1", "ASK: RPUSH %s through hotproxy", k);
    long long ask0 = counter(c, "hotproxy_cluster_ask");
    hx_cluster_move_begin(slot, src, dst);
    move_keys(slot, src, dst);
    hx_raw_send(&b, "BLPOP", k, "0", NULL);
    snprintf(want, sizeof(want), "%s=asked", k);
    is_str(blpop_reply(&b), want, "ASK: BLPOP of the list MIGRATEd to the importing node gets its value, no ASK");
    ok(counter(c, "hotproxy_cluster_ask") > ask0, "ASK: hotproxy followed the ASK (INFO counts it)");
    hx_raw_send(&b, "BLPOP", k2, "0", NULL);
    ok(wait_blocked(dst, 1) == 0, "ASK: BLPOP of a key that exists nowhere blocks on the importing node");
    move_end(slot, src, dst);
    redisContext *d = hx_redis(dst);
    is_str(hx_cmd(d, "LPUSH %s asked-2", k2), "1", "ASK: the slot is the target's; LPUSH there");
    redisFree(d);
    snprintf(want, sizeof(want), "%s=asked-2", k2);
    is_str(blpop_reply(&b), want, "ASK: ... the blocked client gets the value");
    hx_raw_close(&b);
}

/* CLIENT UNBLOCK through hotproxy of a client blocked on a master that is
 * not the one commands without keys go to: it reaches that master (the
 * blocked connection's id is that node's), and its ERROR is the client's
 * reply (an UNBLOCKED hotproxy does not retry). */
static void unblock(redisContext *c, int pport)
{
    char k[64], id[32];
    int first = hx_cluster_owner(topo.masters[0].port, "{s0-14782}"); /* slot 0: keyless commands go there */
    is_str(hx_cmd(c, "CLUSTER KEYSLOT {s0-14782}"), "0", "UNBLOCK: {s0-14782} is in slot 0");
    key_on("unb", -first, k, sizeof(k));
    int m = hx_cluster_owner(topo.masters[0].port, k);
    hx_rawc b;
    if (!ok(hx_raw_open(&b, pport) == 0, "UNBLOCK: a client connected")) return;
    hx_raw_send(&b, "CLIENT", "ID", NULL);
    snprintf(id, sizeof(id), "%s", hx_raw_reply(&b, 20000));
    hx_raw_send(&b, "BLPOP", k, "0", NULL);
    ok(wait_blocked(m, 1) == 0, "UNBLOCK: client %s blocked in BLPOP %s on a master other than slot 0's", id, k);
    is_str(hx_cmd(c, "CLIENT UNBLOCK %s ERROR", id), "1", "UNBLOCK: CLIENT UNBLOCK %s ERROR through hotproxy: 1", id);
    is_str(hx_raw_reply(&b, 20000), "UNBLOCKED client unblocked via CLIENT UNBLOCK",
           "UNBLOCK: the blocked client gets Redis' UNBLOCKED error");
    hx_raw_close(&b);
}

/* Frames s got within wait_ms: 1 when the next one is an smessage holding
 * text; kind gets what came instead. */
static int got_smessage(hx_rawc *s, const char *text, char *kind, size_t ksz)
{
    const char *f;
    size_t len;
    int rc = hx_raw_frame(s, &f, &len, (int)(DEADLINE * 1000));
    if (rc != 1) {
        snprintf(kind, ksz, "(none: %s)", rc ? "closed" : "timeout");
        return 0;
    }
    hx_frame_kind(f, len, kind, ksz);
    if (strcmp(kind, "smessage")) snprintf(kind, ksz, "%.*s", (int)(len > 80 ? 80 : len), f);
    return !strcmp(kind, "smessage") && memmem(f, len, text, strlen(text)) != NULL;
}

/* Until the master on port counts n subscribers of a shard channel. */
static int wait_shardnumsub(int port, const char *ch, int n)
{
    redisContext *d = hx_redis(port);
    double end = hx_now() + DEADLINE;
    int got = -1;
    while (d && hx_now() < end) {
        redisReply *r = redisCommand(d, "PUBSUB SHARDNUMSUB %s", ch);
        got = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 ? (int)r->element[1]->integer : -1;
        if (r) freeReplyObject(r);
        if (got == n) break;
        hx_sleep_ms(20);
    }
    if (d) redisFree(d);
    return got == n ? 0 : -1;
}

/* A subscriber (RESP proto) of two shard channels of one slot, the slot moved. */
static void sharded_follow(redisContext *c, int pport, int proto)
{
    char tag[64], ch1[96], ch2[96], kind[128], msg[64];
    int src = topo.masters[proto == 2 ? 0 : 1].port;
    snprintf(msg, sizeof(msg), "sf%d-", proto);
    key_on(msg, src, tag, sizeof(tag));
    snprintf(ch1, sizeof(ch1), "%s.ch1", tag);
    snprintf(ch2, sizeof(ch2), "%s.ch2", tag);
    int dst = other_master(src), slot = slot_of(ch1);
    hx_rawc s;
    if (!ok(hx_raw_open(&s, pport) == 0, "RESP%d subscriber connected", proto)) return;
    if (proto == 3) {
        hx_raw_send(&s, "HELLO", "3", NULL);
        ok(!strncmp(hx_raw_reply(&s, 20000), "(map", 4), "RESP3 subscriber: HELLO 3");
    }
    hx_raw_send(&s, "SSUBSCRIBE", ch1, NULL);
    hx_raw_send(&s, "SSUBSCRIBE", ch2, NULL);
    const char *p = proto == 3 ? "(push 3)" : "(array 3)";
    int confirmed = !strcmp(hx_raw_reply(&s, 20000), p);
    confirmed &= !strcmp(hx_raw_reply(&s, 20000), p);
    ok(confirmed, "RESP%d: SSUBSCRIBE %s, SSUBSCRIBE %s: two confirmations", proto, ch1, ch2);
    ok(wait_shardnumsub(src, ch1, 1) == 0, "RESP%d: subscribed on the channel's master", proto);
    move_slot(slot, src, dst);
    ok(wait_shardnumsub(dst, ch1, 1) == 0 && wait_shardnumsub(dst, ch2, 1) == 0,
       "RESP%d: slot %d moved: hotproxy subscribed both channels again on the new owner", proto, slot);
    is_str(hx_cmd(c, "SPUBLISH %s through-px", ch1), "1", "RESP%d: SPUBLISH through hotproxy reaches 1 subscriber",
           proto);
    ok(got_smessage(&s, "through-px", kind, sizeof(kind)), "RESP%d: ... the subscriber's next frame is that smessage "
       "(got %s)", proto, kind);
    redisContext *d = hx_redis(dst);
    is_str(hx_cmd(d, "SPUBLISH %s direct", ch2), "1", "RESP%d: SPUBLISH straight to the new owner", proto);
    redisFree(d);
    ok(got_smessage(&s, "direct", kind, sizeof(kind)), "RESP%d: ... the subscriber's next frame is that smessage "
       "(got %s)", proto, kind);
    /* its own SUNSUBSCRIBE: Redis' replies, counts and all */
    hx_raw_send(&s, "SUNSUBSCRIBE", ch1, NULL);
    const char *f;
    size_t len;
    int rc = hx_raw_frame(&s, &f, &len, 20000);
    ok(rc == 1 && !strcmp(hx_frame_kind(f, len, kind, sizeof(kind)), "sunsubscribe") && memmem(f, len, ch1, strlen(ch1)) &&
           len > 4 && !memcmp(f + len - 4, ":1\r\n", 4),
       "RESP%d: its own SUNSUBSCRIBE %s: Redis' sunsubscribe, 1 left", proto, ch1);
    hx_raw_send(&s, "SUNSUBSCRIBE", NULL);
    rc = hx_raw_frame(&s, &f, &len, 20000);
    ok(rc == 1 && !strcmp(hx_frame_kind(f, len, kind, sizeof(kind)), "sunsubscribe") && memmem(f, len, ch2, strlen(ch2)) &&
           len > 4 && !memcmp(f + len - 4, ":0\r\n", 4),
       "RESP%d: SUNSUBSCRIBE (all): %s, 0 left", proto, ch2);
    hx_raw_send(&s, "PING", NULL);
    const char *pong = hx_raw_reply(&s, 20000);
    ok(!strcmp(pong, "PONG"), "RESP%d: out of pub/sub, PING answers PONG (%s)", proto, pong);
    hx_raw_close(&s);
}

/* Shard channels of two slots of one master, one slot moved: not followed. */
static void sharded_split(redisContext *c, int pport)
{
    char a[64], b[64], kind[128];
    int src = topo.masters[2].port;
    key_on("spa", src, a, sizeof(a));
    key_on("spb", src, b, sizeof(b));
    int dst = other_master(src), slot = slot_of(a);
    if (slot == slot_of(b)) key_on("spc", src, b, sizeof(b));
    hx_rawc s;
    if (!ok(hx_raw_open(&s, pport) == 0, "split: a subscriber connected")) return;
    hx_raw_send(&s, "SSUBSCRIBE", a, NULL);
    hx_raw_send(&s, "SSUBSCRIBE", b, NULL);
    int confirmed = !strcmp(hx_raw_reply(&s, 20000), "(array 3)");
    confirmed &= !strcmp(hx_raw_reply(&s, 20000), "(array 3)");
    ok(confirmed, "split: SSUBSCRIBE %s and %s (two slots of one master)", a, b);
    move_slot(slot, src, dst);
    const char *f;
    size_t len;
    int rc = hx_raw_frame(&s, &f, &len, (int)(DEADLINE * 1000));
    ok(rc == 1 && !strcmp(hx_frame_kind(f, len, kind, sizeof(kind)), "sunsubscribe") && memmem(f, len, a, strlen(a)),
       "split: %s's slot moved: the client gets Redis' sunsubscribe for it (not followed)", a);
    is_str(hx_cmd(c, "SPUBLISH %s still", b), "1", "split: SPUBLISH to the other channel through hotproxy");
    ok(got_smessage(&s, "still", kind, sizeof(kind)), "split: ... reaches the subscriber (got %s)", kind);
    hx_raw_close(&s);
}

/* A RESP3 subscriber in MULTI on the same connection, its slot moved: its
 * transaction could not move with it, so it is not followed. */
static void sharded_in_multi(int pport)
{
    char ch[64], kind[128];
    int src = topo.masters[1].port;
    key_on("smu", src, ch, sizeof(ch));
    int dst = other_master(src), slot = slot_of(ch);
    hx_rawc s;
    if (!ok(hx_raw_open(&s, pport) == 0, "MULTI: a RESP3 subscriber connected")) return;
    hx_raw_send(&s, "HELLO", "3", NULL);
    hx_raw_send(&s, "SSUBSCRIBE", ch, NULL);
    hx_raw_send(&s, "MULTI", NULL);
    int steps = !strncmp(hx_raw_reply(&s, 20000), "(map", 4);
    steps &= !strcmp(hx_raw_reply(&s, 20000), "(push 3)");
    steps &= !strcmp(hx_raw_reply(&s, 20000), "OK");
    ok(steps, "MULTI: HELLO 3, SSUBSCRIBE %s, MULTI", ch);
    move_slot(slot, src, dst);
    const char *f;
    size_t len;
    int rc = hx_raw_frame(&s, &f, &len, (int)(DEADLINE * 1000));
    ok(rc == 1 && !strcmp(hx_frame_kind(f, len, kind, sizeof(kind)), "sunsubscribe"),
       "MULTI: the slot moved: the client gets Redis' sunsubscribe (not followed: its MULTI is on that master)");
    hx_raw_send(&s, "DISCARD", NULL);
    is_str(hx_raw_reply(&s, 20000), "OK", "MULTI: DISCARD: its transaction was still there");
    hx_raw_close(&s);
}

/* A failover under a blocked BLPOP: -UNBLOCKED, followed. */
static void failover(void)
{
    hx_cluster_opts o = {.masters = 3, .replicas = 1};
    if (!ok(hx_cluster_start(&topo, &o) == 0, "3 masters + 3 replicas started")) return;
    hx_proc px;
    if (!ok(hx_proxy_start(&px, 0, topo.masters[0].port, "--topology", "cluster", "--loglevel", "verbose", NULL) == 0,
            "hotproxy started")) {
        hx_topo_stop(&topo, 5000);
        return;
    }
    redisContext *c = hx_redis(px.port);
    ok(hx_info_wait(c, "hotproxy_upstream", "hotproxy_cluster_slots_known", "16384", 20000) == 0, "the map is whole");
    char k[64], want[128];
    int m0 = topo.masters[0].port, ri = -1;
    key_on("blf", m0, k, sizeof(k));
    for (int i = 0; i < topo.nreplicas; i++)
        if (topo.replica_of[i] == 0) ri = i;
    hx_rawc b;
    hx_raw_open(&b, px.port);
    hx_raw_send(&b, "BLPOP", k, "0", NULL);
    ok(wait_blocked(m0, 1) == 0, "failover: BLPOP %s 0 blocked on master 0", k);
    redisContext *rep = hx_redis(topo.replicas[ri].port);
    is_str(hx_cmd(rep, "CLUSTER FAILOVER"), "OK", "failover: CLUSTER FAILOVER on its replica");
    double t0 = hx_now(), asked = t0;
    const char *role = "";
    while (hx_now() < t0 + DEADLINE && strcmp(role, "master")) {
        role = hx_info_get(rep, "replication", "role");
        if (!role) role = "";
        if (!strcmp(role, "master")) break;
        if (hx_now() > asked + 8.0) {
            /* a manual failover Redis gave up on (its 5 s limit): ask again */
            diag("no promotion %.1f s after CLUSTER FAILOVER: asking again (%s)", hx_now() - asked,
                 hx_cmd(rep, "CLUSTER FAILOVER"));
            asked = hx_now();
        }
        hx_sleep_ms(20);
    }
    is_str(role, "master", "failover: the replica is master");
    ok(wait_blocked(topo.replicas[ri].port, 1) == 0, "failover: the BLPOP blocks again on the promoted replica");
    is_str(hx_cmd(rep, "LPUSH %s after-failover", k), "1", "failover: LPUSH on the new master");
    snprintf(want, sizeof(want), "%s=after-failover", k);
    const char *got = blpop_reply(&b);
    if (!ok(!strcmp(got, want), "failover: the BLPOP client gets the value, no UNBLOCKED (%s)", got))
        hx_diag_file(px.logfile, 3000);
    redisFree(rep);
    hx_raw_close(&b);
    redisFree(c);
    is_int(hx_stop(&px, 5000), 0, "hotproxy exits cleanly");
    hx_topo_stop(&topo, 5000);
}

int main(void)
{
    hx_init(400);
    hx_cluster_opts o = {.masters = 3};
    hx_proc px;
    int up = hx_cluster_proxy_start(&topo, &o, &px, "--loglevel", "verbose", NULL);
    if (!ok(up != 1, "3 masters started") || !ok(up == 0, "hotproxy starts with topology cluster")) {
        done_testing();
        return exit_status();
    }
    redisContext *c = hx_redis(px.port);
    ok(hx_info_wait(c, "hotproxy_upstream", "hotproxy_cluster_slots_known", "16384", 20000) == 0, "the map is whole");
    blocked_moved(c, px.port);
    blocked_ask(c, px.port);
    unblock(c, px.port);
    sharded_follow(c, px.port, 2);
    sharded_follow(c, px.port, 3);
    sharded_split(c, px.port);
    sharded_in_multi(px.port);
    redisFree(c);
    is_int(hx_stop(&px, 5000), 0, "hotproxy exits cleanly");
    hx_topo_stop(&topo, 5000);
    failover();
    done_testing();
    return exit_status();
}
