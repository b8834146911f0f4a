/*
 * test_cluster: hotproxy in front of a Redis Cluster (topology cluster),
 * used by a plain (not cluster-aware) hiredis client.
 *
 * 3 masters, started by the harness' launcher, hotproxy given one seed:
 *  - the map: INFO names three masters and 16384 slots;
 *  - GET/SET of keys of every master through hotproxy (each key checked on
 *    the node that owns it);
 *  - MSET/MGET/DEL/EXISTS across slots (split and merged in the client's
 *    order), DBSIZE, KEYS and SCAN over every master, RANDOMKEY from each, hash tags keeping keys
 *    together, CROSSSLOT for MSETNX/RENAME across slots, SELECT 1 refused;
 *  - shown as a standalone Redis: INFO's cluster_enabled:0 and redis_mode,
 *    CLUSTER SLOTS/NODES refused with a clear error, KEYSLOT and INFO answered;
 *  - MULTI/EXEC on the node of the first key (moved there from the first
 *    master), a key of another node in MULTI: CROSSSLOT and EXECABORT; WATCH
 *    and a read of another node meanwhile; EVAL by its keys and with none;
 *    BLPOP on the key's node, and CROSSSLOT across nodes; SUBSCRIBE/PUBLISH,
 *    SSUBSCRIBE/SPUBLISH;
 *  - the L1: a value cached through hotproxy, then written straight to its
 *    master: hotproxy's reads reach the new value (the invalidation comes on
 *    that master's tracking link); an MGET across masters takes the keys
 *    the L1 holds from it, and reaches a value written straight to a master;
 *    with no tracking, split writes drop what they name from the L1;
 *  - resharding by hand (CLUSTER SETSLOT IMPORTING/MIGRATING, MIGRATE key by
 *    key, SETSLOT NODE) of slots holding keys, with writes and reads of those
 *    keys through hotproxy between every step: no error, no MOVED/ASK seen,
 *    every read gives the client's last write, every value on its new owner.
 *  - redis-cli --cluster reshard running while writes and reads go through
 *    hotproxy: no error, no stale read, every last value kept;
 *  - topology auto at a node finds the Cluster; topology cluster at a plain
 *    Redis: commands get CLUSTERDOWN, and the log says why.
 * 3 masters + 3 replicas:
 *  - CLUSTER FAILOVER on a replica under a write+read load over all masters:
 *    once the replica is master, the load runs clean again (the time of the
 *    last error, if any, in diag);
 *  - master 1 SIGKILLed under the load: its replica is promoted, writes to
 *    its slots succeed again, the other masters' keys see no error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "tap.h"

#define DEADLINE 30.0

static hx_topo topo;

static int master_index(int port)
{
    for (int i = 0; i < topo.nmasters; i++)
        if (topo.masters[i].port == port) return i;
    return -1;
}

static char last_err[256];

/* One write and one read of each key through hotproxy (the value names the
 * round); the commands that failed, the last error kept in last_err. */
static int load_round(redisContext *c, char keys[][32], int n, int round)
{
    return hx_cluster_load_round(c, keys, n, round, last_err, sizeof(last_err));
}

static void basics(redisContext *c)
{
    /* keys of every master */
    int per[HX_TOPO_MAX] = {0}, wrong = 0;
    for (int i = 0; i < 30; i++) {
        char k[32], v[32];
        snprintf(k, sizeof(k), "plain:%d", i);
        snprintf(v, sizeof(v), "v%d", i);
        if (strcmp(hx_cmd(c, "SET %s %s", k, v), "OK")) wrong++;
        if (strcmp(hx_cmd(c, "GET %s", k), v)) wrong++;
        int m = master_index(hx_cluster_owner(topo.masters[0].port, k));
        if (m < 0) {
            wrong++;
            continue;
        }
        per[m]++;
        redisContext *d = hx_redis(topo.masters[m].port);
        if (strcmp(hx_cmd(d, "GET %s", k), v)) wrong++;
        redisFree(d);
    }
    ok(wrong == 0, "SET/GET of 30 keys through hotproxy, each on the master that owns it (%d wrong)", wrong);
    ok(per[0] > 0 && per[1] > 0 && per[2] > 0, "... keys of every master (%d, %d, %d)", per[0], per[1], per[2]);

    /* split and merged */
    is_str(hx_cmd(c, "MSET odd:{a} 1 odd:{b}"), "ERR wrong number of arguments for 'mset' command",
           "MSET across slots with a value missing: Redis' error ...");
    is_str(hx_cmd(c, "EXISTS odd:{a}"), "0", "... and no part of it ran");
    is_str(hx_cmd(c, "MSET a 1 b 2 c 3 d 4 e 5"), "OK", "MSET of keys of several slots");
    redisReply *r = redisCommand(c, "MGET e a nope c b d");
    int good = r && r->type == REDIS_REPLY_ARRAY && r->elements == 6 && r->element[0]->str &&
               !strcmp(r->element[0]->str, "5") && r->element[1]->str && !strcmp(r->element[1]->str, "1") &&
               r->element[2]->type == REDIS_REPLY_NIL && r->element[3]->str && !strcmp(r->element[3]->str, "3") &&
               r->element[4]->str && !strcmp(r->element[4]->str, "2") && r->element[5]->str &&
               !strcmp(r->element[5]->str, "4");
    ok(good, "MGET across slots: the values in the client's order, nil for a missing key");
    if (r) freeReplyObject(r);
    is_str(hx_cmd(c, "EXISTS a b nope c a"), "4", "EXISTS across slots: the counts added (a twice)");
    is_str(hx_cmd(c, "DEL a b nope"), "2", "DEL across slots: the keys deleted, added");
    is_str(hx_cmd(c, "MGET a b c"), "(array 3)", "MGET after DEL");
    long long sum = 0;
    for (int i = 0; i < topo.nmasters; i++) {
        redisContext *d = hx_redis(topo.masters[i].port);
        sum += atoll(hx_cmd(d, "DBSIZE"));
        redisFree(d);
    }
    char want[32];
    snprintf(want, sizeof(want), "%lld", sum);
    is_str(hx_cmd(c, "DBSIZE"), want, "DBSIZE: the masters' added (%lld)", sum);
    r = redisCommand(c, "KEYS plain:*");
    ok(r && r->type == REDIS_REPLY_ARRAY && r->elements == 30, "KEYS over every master: all 30 plain:* keys (%zu)",
       r && r->type == REDIS_REPLY_ARRAY ? r->elements : 0);
    if (r) freeReplyObject(r);

    /* SCAN: every master in turn, the cursor naming the master */
    {
        char cursor[32] = "0";
        int seen[30] = {0}, calls = 0, bad = 0;
        do {
            r = redisCommand(c, "SCAN %s MATCH plain:* COUNT 7", cursor);
            if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
                bad++;
                if (r) freeReplyObject(r);
                break;
            }
            snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
            for (size_t i = 0; i < r->element[1]->elements; i++) {
                int k = atoi(r->element[1]->element[i]->str + 6);
                if (k >= 0 && k < 30) seen[k]++;
            }
            freeReplyObject(r);
        } while (strcmp(cursor, "0") && ++calls < 10000);
        int missing = 0;
        for (int i = 0; i < 30; i++) missing += seen[i] == 0;
        ok(!bad && missing == 0, "SCAN MATCH across every master finds all 30 plain:* keys (%d missing, %d calls)",
           missing, calls + 1);
        is_str(hx_cmd(c, "SCAN 63"), "ERR invalid cursor", "SCAN with a cursor naming no master: invalid cursor");
    }

    /* RANDOMKEY: a random master each time */
    {
        int from[HX_TOPO_MAX] = {0}, masters = 0;
        for (int i = 0; i < 60; i++) {
            char k[128];
            snprintf(k, sizeof(k), "%s", hx_cmd(c, "RANDOMKEY"));
            int m = master_index(hx_cluster_owner(topo.masters[0].port, k));
            if (m >= 0) masters += from[m]++ == 0;
        }
        ok(masters == topo.nmasters, "RANDOMKEY: keys from every master in 60 calls (%d, %d, %d)", from[0], from[1],
           from[2]);
    }

    /* hash tags */
    is_str(hx_cmd(c, "MSETNX {user1}.a x {user1}.b y"), "1", "MSETNX of keys with one hash tag");
    ok(hx_cluster_owner(topo.masters[0].port, "{user1}.a") == hx_cluster_owner(topo.masters[0].port, "{user1}.b") &&
           hx_cluster_owner(topo.masters[0].port, "{user1}.a") > 0,
       "... both keys on one master");
    is_str(hx_cmd(c, "RENAME {user1}.a {user1}.c"), "OK", "RENAME within a hash tag");
    is_str(hx_cmd(c, "GET {user1}.c"), "x", "... renamed");

    /* atomic multi-key commands across slots */
    is_str(hx_cmd(c, "MSETNX x1 1 y1 2"), "CROSSSLOT Keys in request don't hash to the same slot",
           "MSETNX across slots: Redis' CROSSSLOT");
    is_str(hx_cmd(c, "RENAME plain:1 plain:2"), "CROSSSLOT Keys in request don't hash to the same slot",
           "RENAME across slots: CROSSSLOT");
    is_str(hx_cmd(c, "SELECT 1"), "ERR SELECT is not allowed in cluster mode", "SELECT 1: Redis Cluster's error");
    is_str(hx_cmd(c, "SELECT 0"), "OK", "SELECT 0 is fine");

    /* shown as one standalone Redis */
    is_str(hx_info_get(c, "cluster", "cluster_enabled"), "0", "INFO cluster: cluster_enabled:0");
    is_str(hx_info_get(c, "server", "redis_mode"), "standalone", "INFO server: redis_mode:standalone");
    ok(!strncmp(hx_cmd(c, "CLUSTER SLOTS"), "ERR hotproxy: 'cluster|slots' is not available", 45),
       "CLUSTER SLOTS: a clear error (%s)", hx_cmd(c, "CLUSTER SLOTS"));
    ok(!strncmp(hx_cmd(c, "CLUSTER NODES"), "ERR hotproxy:", 13), "CLUSTER NODES: the same");
    is_str(hx_cmd(c, "CLUSTER KEYSLOT {user1}.a"), "8106", "CLUSTER KEYSLOT is answered");
    ok(strstr(hx_cmd(c, "CLUSTER INFO"), "cluster_state:ok") != NULL, "CLUSTER INFO is answered");
}

/* With no tracking (the L1 keeps values for their TTL), only hotproxy's own
 * invalidation keeps a client's reads after its writes: a split write must
 * drop what it names. */
static void l1_local(void)
{
    hx_proc px;
    if (!ok(hx_proxy_start(&px, 0, topo.masters[0].port, "--topology", "cluster", "--l1-tracking", "no", "--l1-ttl",
                           "600000", "--l1-hot-threshold", "0", NULL) == 0,
            "L1 without tracking: hotproxy starts")) return;
    redisContext *c = hx_redis(px.port);
    ok(hx_info_wait(c, "hotproxy_upstream", "hotproxy_cluster_slots_known", "16384", 20000) == 0, "... with the map");
    is_str(hx_cmd(c, "MSET lt:{a} 1 lt:{b} 1"), "OK", "... MSET of keys of two masters");
    ok(hx_l1_hit(c, "lt:{a}", 50) && hx_l1_hit(c, "lt:{b}", 50), "... both read into the L1");
    is_str(hx_cmd(c, "MSET lt:{a} 2 lt:{b} 2"), "OK", "... MSET of new values");
    redisReply *r = redisCommand(c, "MGET lt:{a} lt:{b}");
    ok(r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[0]->str && !strcmp(r->element[0]->str, "2") &&
           r->element[1]->str && !strcmp(r->element[1]->str, "2"),
       "... MGET reads the client's own write, not the L1's old values");
    if (r) freeReplyObject(r);
    is_str(hx_cmd(c, "DEL lt:{a} lt:{b}"), "2", "... DEL across masters");
    is_str(hx_cmd(c, "GET lt:{a}"), "(nil)", "... GET reads the delete");
    redisFree(c);
    is_int(hx_stop(&px, 5000), 0, "... exits cleanly");
}

/* MULTI/EXEC, WATCH, scripts, blocking commands and pub/sub. */
static void stateful(redisContext *c, int pport)
{
    /* "a" hashes to slot 15495: not the first master's, so MULTI moves */
    is_str(hx_cmd(c, "MULTI"), "OK", "MULTI");
    is_str(hx_cmd(c, "SET {a}.m 10"), "QUEUED", "... SET of a key of the last master queued");
    is_str(hx_cmd(c, "INCR {a}.m"), "QUEUED", "... INCR of the same slot queued");
    redisReply *r = redisCommand(c, "EXEC");
    ok(r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[1]->type == REDIS_REPLY_INTEGER &&
           r->element[1]->integer == 11,
       "EXEC: the transaction ran on the key's master (INCR gave 11)");
    if (r) freeReplyObject(r);
    int m = master_index(hx_cluster_owner(topo.masters[0].port, "{a}.m"));
    redisContext *d = hx_redis(topo.masters[m >= 0 ? m : 0].port);
    is_str(hx_cmd(d, "GET {a}.m"), "11", "... the master holds 11");
    redisFree(d);
    is_str(hx_cmd(c, "MULTI"), "OK", "MULTI again");
    is_str(hx_cmd(c, "SET {a}.m 1"), "QUEUED", "... a key of one master");
    is_str(hx_cmd(c, "SET {b}.m 1"), "CROSSSLOT Keys in request don't hash to the same slot",
           "... a key of another master: CROSSSLOT, as Redis Cluster");
    is_str(hx_cmd(c, "EXEC"), "EXECABORT Transaction discarded because of previous errors.", "EXEC: EXECABORT");
    is_str(hx_cmd(c, "GET {a}.m"), "11", "... and nothing of it ran");
    is_str(hx_cmd(c, "SET {b}.m bee"), "OK", "a key of another master");
    is_str(hx_cmd(c, "WATCH {a}.m"), "OK", "WATCH");
    is_str(hx_cmd(c, "GET {b}.m"), "bee", "... a read of another master's key while watching");
    is_str(hx_cmd(c, "MULTI"), "OK", "... MULTI");
    is_str(hx_cmd(c, "SET {a}.m 12"), "QUEUED", "... the watched key written");
    is_str(hx_cmd(c, "EXEC"), "(array 1)", "... EXEC ran it");
    is_str(hx_cmd(c, "GET {a}.m"), "12", "... 12");

    is_str(hx_cmd(c, "EVAL %s 1 {a}.m", "return redis.call('get', KEYS[1])"), "12", "EVAL routed by its key");
    is_str(hx_cmd(c, "EVAL %s 1 {b}.m", "return redis.call('get', KEYS[1])"), "bee", "... and another master's");
    is_str(hx_cmd(c, "EVAL %s 0", "return 7"), "7", "EVAL with no key: any master");
    is_str(hx_cmd(c, "RPUSH {b}.l x"), "1", "RPUSH");
    r = redisCommand(c, "BLPOP {b}.l 5");
    ok(r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 && !strcmp(r->element[1]->str, "x"),
       "BLPOP on the key's master");
    if (r) freeReplyObject(r);
    is_str(hx_cmd(c, "BLPOP {a}.l {b}.l 1"), "CROSSSLOT Keys in request don't hash to the same slot",
           "BLPOP of keys of two masters: CROSSSLOT");

    /* pub/sub: any node (the Cluster bus carries messages to every node) */
    redisContext *sub = hx_redis(pport);
    r = sub ? redisCommand(sub, "SUBSCRIBE news") : NULL;
    ok(r && r->type == REDIS_REPLY_ARRAY && r->elements == 3, "SUBSCRIBE through hotproxy");
    if (r) freeReplyObject(r);
    ok(atoi(hx_cmd(c, "PUBLISH news hello")) >= 1, "PUBLISH through hotproxy reaches a subscriber");
    r = NULL;
    if (sub && redisGetReply(sub, (void **)&r) != REDIS_OK) r = NULL;
    ok(r && r->type == REDIS_REPLY_ARRAY && r->elements == 3 && !strcmp(r->element[2]->str, "hello"),
       "... the subscriber gets the message");
    if (r) freeReplyObject(r);
    if (sub) redisFree(sub);

    /* sharded pub/sub: on the channel's master */
    sub = hx_redis(pport);
    r = sub ? redisCommand(sub, "SSUBSCRIBE {a}.ch") : NULL;
    ok(r && r->type == REDIS_REPLY_ARRAY && r->elements == 3, "SSUBSCRIBE through hotproxy");
    if (r) freeReplyObject(r);
    is_str(hx_cmd(c, "SPUBLISH {a}.ch hi"), "1", "SPUBLISH through hotproxy reaches the channel's master");
    r = NULL;
    if (sub && redisGetReply(sub, (void **)&r) != REDIS_OK) r = NULL;
    ok(r && r->type == REDIS_REPLY_ARRAY && r->elements == 3 && !strcmp(r->element[0]->str, "smessage") &&
           !strcmp(r->element[2]->str, "hi"),
       "... the subscriber gets the smessage");
    if (r) freeReplyObject(r);
    if (sub) redisFree(sub);
}

/* The L1 on a Cluster: a write straight to the owning master reaches
 * hotproxy's readers through that master's tracking link. */
static void l1_check(redisContext *c)
{
    const char *key = "l1:{tag9}";
    ok(hx_info_wait(c, "hotproxy_cache", "hotproxy_l1_tracking", "up", 20000) == 0,
       "L1: tracking is up on every master's link");
    is_str(hx_cmd(c, "SET %s one", key), "OK", "L1: a key written through hotproxy");
    if (!ok(hx_l1_hit(c, key, 50), "L1: ... and read from the L1"))
        diag("l1_tracking=%s fills=%lld hits=%lld bypassed=%lld", hx_info_get(c, "hotproxy_cache", "hotproxy_l1_tracking"),
             hx_info_num(c, "hotproxy_cache", "hotproxy_l1_fills"), hx_info_num(c, "hotproxy_cache", "hotproxy_l1_hits"),
             hx_info_num(c, "hotproxy_cache", "hotproxy_l1_bypassed"));
    if (getenv("HX_CLUSTER_DEBUG")) diag("%s", hx_cmd(c, "INFO hotproxy_upstream"));
    int m = master_index(hx_cluster_owner(topo.masters[0].port, key));
    redisContext *d = hx_redis(m >= 0 ? topo.masters[m].port : topo.masters[0].port);
    is_str(hx_cmd(d, "SET %s two", key), "OK", "L1: the key written straight to its master");
    redisFree(d);
    double until = hx_now() + DEADLINE;
    const char *v = "";
    while (hx_now() < until && strcmp(v = hx_cmd(c, "GET %s", key), "two")) hx_sleep_ms(20);
    is_str(v, "two", "L1: hotproxy's reads reach the master's new value (invalidation on that master's link)");

    /* MGET across masters: what the L1 holds from it, the rest from Redis */
    is_str(hx_cmd(c, "MSET mg:{a} A mg:{b} B mg:{c} C"), "OK", "L1: MSET of keys of three masters");
    ok(hx_l1_hit(c, "mg:{a}", 50) && hx_l1_hit(c, "mg:{b}", 50), "L1: two of them read into the L1");
    long long h0 = hx_info_num(c, "hotproxy_cache", "hotproxy_l1_hits");
    redisReply *r = redisCommand(c, "MGET mg:{c} mg:{a} nope mg:{b}");
    ok(r && r->type == REDIS_REPLY_ARRAY && r->elements == 4 && r->element[0]->str && !strcmp(r->element[0]->str, "C") &&
           r->element[1]->str && !strcmp(r->element[1]->str, "A") && r->element[2]->type == REDIS_REPLY_NIL &&
           r->element[3]->str && !strcmp(r->element[3]->str, "B"),
       "L1: MGET across masters: every value at its place");
    if (r) freeReplyObject(r);
    is_int(hx_info_num(c, "hotproxy_cache", "hotproxy_l1_hits") - h0, 2, "L1: ... the two held keys from the L1");
    m = master_index(hx_cluster_owner(topo.masters[0].port, "mg:{a}"));
    d = hx_redis(m >= 0 ? topo.masters[m].port : topo.masters[0].port);
    is_str(hx_cmd(d, "SET mg:{a} A2"), "OK", "L1: one written straight to its master");
    redisFree(d);
    until = hx_now() + DEADLINE;
    int fresh = 0;
    while (hx_now() < until && !fresh) {
        r = redisCommand(c, "MGET mg:{a} mg:{b}");
        fresh = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[0]->str &&
                !strcmp(r->element[0]->str, "A2");
        if (r) freeReplyObject(r);
        if (!fresh) hx_sleep_ms(20);
    }
    ok(fresh, "L1: MGET reaches the new value");
    ok(hx_l1_hit(c, "mg:{b}", 50), "L1: mg:{b} held again");
    is_str(hx_cmd(c, "MSET mg:{a} A3 mg:{b} B3"), "OK", "L1: MSET across masters of held keys");
    r = redisCommand(c, "MGET mg:{a} mg:{b}");
    ok(r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[0]->str &&
           !strcmp(r->element[0]->str, "A3") && r->element[1]->str && !strcmp(r->element[1]->str, "B3"),
       "L1: ... the next MGET reads the client's own write at once");
    if (r) freeReplyObject(r);
    is_str(hx_cmd(c, "GET mg:{b}"), "B3", "L1: ... and so does GET");
}

static void reshard(redisContext *c)
{
    int src = topo.masters[0].port, dst = topo.masters[1].port;
    char srcid[64], dstid[64];
    hx_cluster_node_id(src, srcid, sizeof(srcid));
    hx_cluster_node_id(dst, dstid, sizeof(dstid));
    /* keys of master 0, and the slots of the first few of them */
    static char keys[240][32];
    int n = 0, slots[8], nslots = 0;
    redisContext *s = hx_redis(src), *t = hx_redis(dst);
    for (int i = 0; n < 200 && i < 5000; i++) {
        char k[32];
        snprintf(k, sizeof(k), "rs:%d", i);
        int slot = atoi(hx_cmd(s, "CLUSTER KEYSLOT %s", k));
        if (hx_cluster_owner(src, k) != src) continue;
        int in = 0;
        for (int j = 0; j < nslots; j++) in |= slots[j] == slot;
        if (!in && nslots < 8) slots[nslots++] = slot, in = 1;
        if (in) snprintf(keys[n++], sizeof(keys[0]), "%s", k);
        if (nslots == 8 && n >= 40) break;
    }
    /* and keys of the other masters, which must never notice */
    for (int i = 0, m = 0; m < 20 && i < 1000; i++) {
        char k[32];
        snprintf(k, sizeof(k), "other:%d", i);
        if (hx_cluster_owner(src, k) == src) continue;
        snprintf(keys[n++], sizeof(keys[0]), "%s", k);
        m++;
    }
    int round = 0, errors = 0, rounds_bad = 0;
    errors += load_round(c, keys, n, ++round);
    long long moved0 = hx_info_num(c, "hotproxy_upstream", "hotproxy_cluster_moved");
    long long ask0 = hx_info_num(c, "hotproxy_upstream", "hotproxy_cluster_ask");
    for (int j = 0; j < nslots; j++) {
        hx_cmd(t, "CLUSTER SETSLOT %d IMPORTING %s", slots[j], srcid);
        hx_cmd(s, "CLUSTER SETSLOT %d MIGRATING %s", slots[j], dstid);
        errors += load_round(c, keys, n, ++round);
        redisReply *r = redisCommand(s, "CLUSTER GETKEYSINSLOT %d 1000", slots[j]);
        for (size_t k = 0; r && r->type == REDIS_REPLY_ARRAY && k < r->elements; k++) {
            redisReply *m = redisCommand(s, "MIGRATE 127.0.0.1 %d %s 0 5000", dst, r->element[k]->str);
            if (!m || m->type == REDIS_REPLY_ERROR) diag("MIGRATE %s: %s", r->element[k]->str, m ? m->str : s->errstr);
            if (m) freeReplyObject(m);
            if (k % 3 == 0) errors += load_round(c, keys, n, ++round);
        }
        if (r) freeReplyObject(r);
        errors += load_round(c, keys, n, ++round);
        for (int i = 0; i < topo.nmasters; i++) {
            redisContext *d = hx_redis(topo.masters[i].port);
            hx_cmd(d, "CLUSTER SETSLOT %d NODE %s", slots[j], dstid);
            redisFree(d);
        }
        int e = load_round(c, keys, n, ++round);
        errors += e;
        rounds_bad += e > 0;
    }
    if (errors) diag("last error: %s", last_err);
    ok(errors == 0, "resharding %d slots (%d keys) under writes and reads through hotproxy: %d errors in %d rounds",
       nslots, n, errors, round);
    long long moved = hx_info_num(c, "hotproxy_upstream", "hotproxy_cluster_moved") - moved0;
    long long ask = hx_info_num(c, "hotproxy_upstream", "hotproxy_cluster_ask") - ask0;
    ok(moved > 0 && ask > 0, "... hotproxy followed MOVED (%lld) and ASK (%lld), none reached the client", moved, ask);
    int missing = 0;
    for (int i = 0; i < n; i++) {
        char v[96];
        snprintf(v, sizeof(v), "%d:%.31s", round, keys[i]);
        int p = hx_cluster_owner(src, keys[i]);
        redisContext *d = hx_redis(p > 0 ? p : src);
        if (strcmp(hx_cmd(d, "GET %s", keys[i]), v)) missing++;
        redisFree(d);
    }
    ok(missing == 0, "... every key's last value is on its owner afterwards (%d not)", missing);
    ok(hx_cluster_owner(src, keys[0]) == dst, "... the moved slots are the new master's");
    ok(hx_info_num(c, "hotproxy_cache", "hotproxy_l1_flushes_slot_moved") > 0,
       "... and the L1 was flushed as their owner changed (its entries' invalidations came from the old one)");
    redisFree(s);
    redisFree(t);
}

static void reshard_cli(redisContext *c)
{
    int nslots = getenv("HX_RESHARD_SLOTS") ? atoi(getenv("HX_RESHARD_SLOTS")) : 300;
    char from[64], to[64], seed[64], slots[16];
    hx_cluster_node_id(topo.masters[2].port, from, sizeof(from));
    hx_cluster_node_id(topo.masters[0].port, to, sizeof(to));
    snprintf(seed, sizeof(seed), "127.0.0.1:%d", topo.masters[1].port);
    snprintf(slots, sizeof(slots), "%d", nslots);
    /* keys everywhere, most on the master that gives slots away */
    static char keys[300][32];
    int n = 0;
    for (int i = 0; n < 300 && i < 20000; i++) {
        char k[32];
        snprintf(k, sizeof(k), "rc:%d", i);
        if (i % 4 != 0 && hx_cluster_owner(topo.masters[2].port, k) != topo.masters[2].port) continue;
        snprintf(keys[n++], sizeof(keys[0]), "%s", k);
    }
    int round = 0, errors = load_round(c, keys, n, ++round);
    /* a few thousand keys in the moving slots, so MIGRATE has work to do */
    redisContext *m2 = hx_redis(topo.masters[2].port);
    for (int i = 0; i < 3000; i++) redisAppendCommand(m2, "SET fill:{%d} x", i);
    for (int i = 0; i < 3000; i++) {
        redisReply *r = NULL;
        if (redisGetReply(m2, (void **)&r) == REDIS_OK && r) freeReplyObject(r);
    }
    redisFree(m2);
    const char *argv[] = {"redis-cli", "--cluster", "reshard", seed, "--cluster-from", from, "--cluster-to", to,
                          "--cluster-slots", slots, "--cluster-yes", "--cluster-pipeline", "10", NULL};
    hx_proc cli;
    int before0 = hx_cluster_map_slots(c, topo.masters[0].port);
    double t0 = hx_now();
    if (!ok(hx_spawn(&cli, "reshard", argv) == 0, "redis-cli --cluster reshard of %d slots started", nslots)) return;
    long long moved0 = hx_info_num(c, "hotproxy_upstream", "hotproxy_cluster_moved");
    long long ask0 = hx_info_num(c, "hotproxy_upstream", "hotproxy_cluster_ask");
    while (hx_alive(&cli) && hx_now() < t0 + 600) errors += load_round(c, keys, n, ++round);
    double took = hx_now() - t0;
    if (hx_alive(&cli)) hx_kill(&cli);
    errors += load_round(c, keys, n, ++round);
    if (errors) diag("last error: %s", last_err);
    int want0 = before0 + nslots, got0 = -1;
    double until = hx_now() + DEADLINE;
    while (hx_now() < until && (got0 = hx_cluster_map_slots(c, topo.masters[0].port)) != want0) hx_sleep_ms(100);
    if (!ok(got0 == want0, "redis-cli --cluster reshard moved %d slots in %.1f s (hotproxy's map: %d -> %d)", nslots, took,
            before0, got0))
        hx_diag_file(cli.outfile, 4000);
    ok(errors == 0, "... %d rounds of writes and reads of %d keys through hotproxy meanwhile: %d errors or stale reads",
       round, n, errors);
    diag("reshard of %d slots: %.1f s, %d rounds x %d keys, MOVED %lld, ASK %lld handled", nslots, took, round, n,
         hx_info_num(c, "hotproxy_upstream", "hotproxy_cluster_moved") - moved0,
         hx_info_num(c, "hotproxy_upstream", "hotproxy_cluster_ask") - ask0);
    int lost = 0;
    for (int i = 0; i < n; i++) {
        char v[96];
        snprintf(v, sizeof(v), "%d:%.31s", round, keys[i]);
        int p = hx_cluster_owner(topo.masters[1].port, keys[i]);
        redisContext *d = hx_redis(p > 0 ? p : topo.masters[0].port);
        if (strcmp(hx_cmd(d, "GET %s", keys[i]), v)) lost++;
        redisFree(d);
    }
    ok(lost == 0, "... every key's last value is on its owner afterwards (%d not)", lost);
    ok(hx_info_wait(c, "hotproxy_upstream", "hotproxy_cluster_slots_known", "16384", 20000) == 0,
       "... hotproxy's map is whole afterwards");
}

/*
 * Master 1 SIGKILLed under the load: its replica is promoted once the
 * Cluster marks it failed (cluster-node-timeout 2000 ms).  The keys of the
 * other masters see no error, and writes to the failed slots succeed
 * through hotproxy soon after the promotion (the time is in diag).
 */
static void killed(redisContext *c, char keys[][32], int n, int round)
{
    int dead[60] = {0}, ndead = 0, rj = -1;
    for (int i = 0; i < topo.nreplicas; i++)
        if (topo.replica_of[i] == 1) rj = i;
    for (int i = 0; i < n && i < 60; i++) ndead += dead[i] = hx_cluster_owner(topo.masters[0].port, keys[i]) == topo.masters[1].port;
    redisContext *rep = hx_redis(topo.replicas[rj].port);
    hx_kill(&topo.masters[1]);
    double t0 = hx_now(), promoted = 0, first_ok = 0;
    int other_errors = 0, dead_errors = 0;
    char other_err[256] = "";
    while (hx_now() < t0 + DEADLINE && (!first_ok || hx_now() < first_ok + 1.0)) {
        round++;
        for (int i = 0; i < n; i++) {
            int e = load_round(c, &keys[i], 1, round);
            if (e && !dead[i]) {
                other_errors += e;
                snprintf(other_err, sizeof(other_err), "%s", last_err);
            }
            dead_errors += dead[i] ? e : 0;
            if (dead[i] && !e && promoted && !first_ok) first_ok = hx_now();
        }
        const char *role = promoted ? NULL : hx_info_get(rep, "replication", "role");
        if (role && !strcmp(role, "master")) promoted = hx_now();
    }
    redisFree(rep);
    ok(promoted > 0, "master 1 SIGKILLed: its replica promoted %.2f s later", promoted ? promoted - t0 : -1);
    ok(first_ok > 0, "... writes to its slots succeed through hotproxy %.0f ms after the promotion (%d keys, %d errors "
       "on them meanwhile)", first_ok ? (first_ok - promoted) * 1000 : -1, ndead, dead_errors);
    if (!ok(other_errors == 0, "... the other masters' keys saw no error (%d)", other_errors)) diag("last: %s", other_err);
}

static void failover(void)
{
    static const char *const extra[] = {"--cluster-node-timeout", "2000", NULL};
    hx_cluster_opts o = {.masters = 3, .replicas = 1, .extra = extra};
    if (!ok(hx_cluster_start(&topo, &o) == 0, "3 masters + 3 replicas started")) return;
    hx_proc proxy;
    if (!ok(hx_proxy_start(&proxy, 0, topo.replicas[0].port, "--topology", "cluster", NULL) == 0,
            "hotproxy starts with a replica as its seed")) {
        hx_topo_stop(&topo, 5000);
        return;
    }
    redisContext *c = hx_redis(proxy.port);
    ok(hx_info_wait(c, "hotproxy_upstream", "hotproxy_cluster_slots_known", "16384", 20000) == 0,
       "the map: 16384 slots known from a replica seed");
    static char keys[60][32];
    for (int i = 0; i < 60; i++) snprintf(keys[i], sizeof(keys[0]), "fo:%d", i);
    int errors = load_round(c, keys, 60, 1);
    ok(errors == 0, "a write+read load over every master: no error before the failover (%s)", errors ? last_err : "");
    /* the replica of master 0 takes over */
    int ri = -1;
    for (int i = 0; i < topo.nreplicas; i++)
        if (topo.replica_of[i] == 0) ri = i;
    redisContext *rep = hx_redis(topo.replicas[ri].port);
    is_str(hx_cmd(rep, "CLUSTER FAILOVER"), "OK", "CLUSTER FAILOVER on master 0's replica");
    double t0 = hx_now(), promoted = 0, last_error = 0, asked = t0;
    int round = 1, clean = 0;
    errors = 0;
    while (hx_now() < t0 + DEADLINE && (promoted == 0 || clean < 5)) {
        int e = load_round(c, keys, 60, ++round);
        errors += e;
        if (e) last_error = hx_now(), clean = 0;
        else if (promoted) clean++;
        const char *role = promoted ? NULL : hx_info_get(rep, "replication", "role");
        if (role && !strcmp(role, "master")) promoted = hx_now();
        if (!promoted && hx_now() > asked + 8.0) {
            /* a manual failover Redis gave up on (its 5 s limit): ask again */
            diag("no promotion %.1f s after CLUSTER FAILOVER: asking again (%s)", hx_now() - asked,
                 hx_cmd(rep, "CLUSTER FAILOVER"));
            asked = hx_now();
        }
    }
    ok(promoted > 0, "the replica became master (%.2f s after the first CLUSTER FAILOVER)", promoted ? promoted - t0 : -1);
    ok(clean >= 5, "five clean load rounds followed (%d errors in all%s%s)", errors, errors ? ", last: " : "",
       errors ? last_err : "");
    diag("planned failover: the last error %s", last_error ? "came" : "(none)");
    if (last_error) diag("... %.2f s after the promotion", last_error - promoted);
    redisFree(rep);
    killed(c, keys, 60, round);
    redisFree(c);
    is_int(hx_stop(&proxy, 5000), 0, "hotproxy exits cleanly");
    hx_topo_stop(&topo, 5000);
}

/* topology cluster given a plain Redis: a clear error, and the reason logged. */
static void not_a_cluster(void)
{
    hx_proc plain, px;
    if (!ok(hx_redis_start(&plain, 0) == 0, "a plain Redis started")) return;
    if (ok(hx_proxy_start(&px, 0, plain.port, "--topology", "cluster", NULL) == 0,
           "hotproxy with topology cluster at a plain Redis starts")) {
        redisContext *c = hx_redis(px.port);
        const char *want = "CLUSTERDOWN hotproxy: the slot map is not known yet (see hotproxy's log)";
        double until = hx_now() + DEADLINE;
        const char *got = "";
        int logged = 0;
        while (hx_now() < until && !logged) {
            got = hx_cmd(c, "GET x");
            FILE *f = fopen(px.logfile, "r");
            char line[1024];
            while (f && fgets(line, sizeof(line), f))
                logged |= strstr(line, "no node gave a slot map") && strstr(line, "cluster support disabled");
            if (f) fclose(f);
            if (!logged) hx_sleep_ms(50);
        }
        is_str(got, want, "... a command gets CLUSTERDOWN saying the map is not known");
        ok(logged, "... and the log says why (Redis' 'cluster support disabled')");
        redisFree(c);
        is_int(hx_stop(&px, 5000), 0, "... exits cleanly");
    }
    hx_stop(&plain, 5000);
}

int main(void)
{
    hx_init(400);
    hx_cluster_opts o = {.masters = 3};
    hx_proc proxy;
    int up = hx_cluster_proxy_start(&topo, &o, &proxy, "--l1-ttl", "600000", "--l1-hot-threshold", "0", NULL);
    if (!ok(up != 1, "3 masters started") || !ok(up == 0, "hotproxy starts with topology cluster and one seed")) {
        done_testing();
        return exit_status();
    }
    redisContext *c = hx_redis(proxy.port);
    ok(hx_info_wait(c, "hotproxy_upstream", "hotproxy_cluster_slots_known", "16384", 20000) == 0,
       "INFO: 16384 slots known");
    is_str(hx_info_get(c, "hotproxy_upstream", "hotproxy_cluster_nodes"), "3", "INFO: three masters");
    is_str(hx_info_get(c, "hotproxy_upstream", "hotproxy_topology"), "cluster", "INFO: topology cluster");
    basics(c);
    stateful(c, proxy.port);
    l1_check(c);
    l1_local();
    reshard(c);
    reshard_cli(c);
    redisFree(c);
    is_int(hx_stop(&proxy, 5000), 0, "hotproxy exits cleanly");
    hx_proc autop;
    if (ok(hx_proxy_start(&autop, 0, topo.masters[1].port, NULL) == 0, "hotproxy with topology auto at a node")) {
        c = hx_redis(autop.port);
        is_str(hx_info_get(c, "hotproxy_upstream", "hotproxy_topology"), "cluster", "... finds a Cluster");
        ok(hx_info_wait(c, "hotproxy_upstream", "hotproxy_cluster_slots_known", "16384", 20000) == 0,
           "... and reads its map");
        redisFree(c);
        is_int(hx_stop(&autop, 5000), 0, "... exits cleanly");
    }
    hx_topo_stop(&topo, 5000);
    not_a_cluster();
    failover();
    done_testing();
    return exit_status();
}
