/*
 * test_sentinel_pinned: clients with a connection of their own upstream
 * (pub/sub, MULTI, WATCH, a blocking command) across a Sentinel failover.
 *
 * One master, one replica and three redis-sentinel (down-after 1000 ms),
 * hotproxy with topology sentinel.  Before a SENTINEL FAILOVER:
 *  - a RESP2 subscriber (SUBSCRIBE two channels, PSUBSCRIBE a pattern,
 *    SSUBSCRIBE a shard channel) and a RESP3 one (HELLO 3, a channel and the
 *    pattern), both raw sockets so every frame they get is seen;
 *  - a client in MULTI with two commands queued;
 *  - a client that said WATCH;
 *  - a client blocked in BLPOP (blocked on the master, checked there).
 * After it:
 *  - the subscribers get messages PUBLISHed on the new master directly and
 *    through hotproxy (PUBLISH, SPUBLISH), and not one subscribe
 *    confirmation more; CLIENT LIST's sub= psub= ssub= are still right; an
 *    UNSUBSCRIBE's count (Redis' own) shows the new master has them all;
 *  - the MULTI client's EXEC gets EXECABORT, and none of its commands (those
 *    queued before the switch, one queued after) ran on the new master;
 *  - WATCH, the switch, then MULTI / SET / EXEC: EXECABORT, the key unset;
 *  - MULTI, the switch, DISCARD: OK, and the client goes on; WATCH, the
 *    switch, RESET: a transaction after it runs;
 *  - the BLPOP gets an error and the client's GET afterwards is answered;
 *  - a subscriber whose upstream connection breaks (CLIENT KILL on the
 *    master, no failover) is still closed, as before.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "tap.h"

#define DEADLINE 30.0 /* seconds any awaited condition gets */

static hx_topo topo;

static int has(const char *f, size_t len, const char *needle)
{
    return memmem(f, len, needle, strlen(needle)) != NULL;
}

/* Read n frames from r (each within the deadline): 0 when they came. */
static int raw_skip(hx_rawc *r, int n)
{
    const char *f;
    size_t len;
    for (int i = 0; i < n; i++)
        if (hx_raw_frame(r, &f, &len, (int)(DEADLINE * 1000)) != 1) return -1;
    return 0;
}

/* The CLIENT LIST line (through hotproxy) of the pub/sub client with that
 * protocol, its sub= psub= ssub= as "s/p/ss", or "(none)". */
static const char *sub_counts(redisContext *c, int resp)
{
    static char out[64];
    redisReply *r = redisCommand(c, "CLIENT LIST");
    snprintf(out, sizeof(out), "(none)");
    if (r && r->type == REDIS_REPLY_STRING) {
        char want[16];
        snprintf(want, sizeof(want), " resp=%d ", resp);
        for (char *line = r->str; line && *line;) {
            char *nl = strchr(line, '\n');
            if (nl) *nl = '\0';
            char *s = strstr(line, " sub="), *p = strstr(line, " psub="), *ss = strstr(line, " ssub=");
            if (strstr(line, " flags=P ") && strstr(line, want) && s && p && ss)
                snprintf(out, sizeof(out), "%d/%d/%d", atoi(s + 5), atoi(p + 6), atoi(ss + 6));
            line = nl ? nl + 1 : NULL;
        }
    }
    if (r) freeReplyObject(r);
    return out;
}

/* Frames a subscriber got until it has seen every needle (or the deadline):
 * how many were subscribe confirmations, and how many messages. */
typedef struct seen {
    int confirmations, messages, other, found;
    char other_kind[64];
} seen;

static void collect(hx_rawc *r, const char *const *needles, int nneedles, seen *sn)
{
    int got[8] = {0};
    memset(sn, 0, sizeof(*sn));
    double end = hx_now() + DEADLINE;
    while (sn->found < nneedles && hx_now() < end) {
        const char *f;
        size_t len;
        char kind[64];
        int rc = hx_raw_frame(r, &f, &len, 200);
        if (rc < 0) break;
        if (rc == 0) continue;
        hx_frame_kind(f, len, kind, sizeof(kind));
        if (!strcmp(kind, "subscribe") || !strcmp(kind, "psubscribe") || !strcmp(kind, "ssubscribe")) {
            sn->confirmations++;
        } else if (!strcmp(kind, "message") || !strcmp(kind, "pmessage") || !strcmp(kind, "smessage")) {
            sn->messages++;
            for (int i = 0; i < nneedles; i++)
                if (!got[i] && has(f, len, needles[i])) {
                    got[i] = 1;
                    sn->found++;
                }
        } else {
            sn->other++;
            snprintf(sn->other_kind, sizeof(sn->other_kind), "%.*s", (int)(len > 40 ? 40 : len), f);
        }
    }
    /* anything more that is already on its way */
    const char *f;
    size_t len;
    while (hx_raw_frame(r, &f, &len, 300) == 1) {
        char kind[64];
        hx_frame_kind(f, len, kind, sizeof(kind));
        if (strstr(kind, "subscribe")) sn->confirmations++;
        else if (strstr(kind, "message")) sn->messages++;
        else sn->other++;
    }
}

/* Until `port` (a Redis) says one client is blocked. */
static int wait_blocked(int port)
{
    redisContext *c = hx_redis(port);
    double end = hx_now() + DEADLINE;
    int ok = 0;
    while (c && !ok && hx_now() < end) {
        ok = hx_info_num(c, "clients", "blocked_clients") >= 1;
        if (!ok) hx_sleep_ms(20);
    }
    if (c) redisFree(c);
    return ok ? 0 : -1;
}

int main(void)
{
    hx_init(300);
    hx_sentinel_opts so = {.name = "mymaster", .replicas = 1, .sentinels = 3, .down_after_ms = 1000,
                           .failover_timeout_ms = 5000};
    if (hx_sentinel_start(&topo, &so) != 0) {
        ok(0, "master, replica and 3 Sentinels started");
        done_testing();
        return exit_status();
    }
    int old = topo.masters[0].port;
    char s23[64];
    snprintf(s23, sizeof(s23), "127.0.0.1:%d,127.0.0.1:%d", topo.sentinels[1].port, topo.sentinels[2].port);
    hx_proc proxy;
    int rc = hx_proxy_start(&proxy, 0, topo.sentinels[0].port, "--upstream", s23, "--topology", "sentinel",
                            "--sentinel-master", "mymaster", "--loglevel", "verbose", NULL);
    if (!ok(rc == 0, "hotproxy starts with topology sentinel")) {
        hx_topo_stop(&topo, 5000);
        done_testing();
        return exit_status();
    }

    /* --- before the failover --- */
    hx_rawc s2, s3, mc, wc, bc, dc, rc_;
    int opened = hx_raw_open(&s2, proxy.port) | hx_raw_open(&s3, proxy.port) | hx_raw_open(&mc, proxy.port) |
                 hx_raw_open(&wc, proxy.port) | hx_raw_open(&bc, proxy.port) | hx_raw_open(&dc, proxy.port) |
                 hx_raw_open(&rc_, proxy.port);
    ok(opened == 0, "seven clients connected");
    hx_raw_send(&s2, "SUBSCRIBE", "ch1", "ch2", NULL);
    hx_raw_send(&s2, "PSUBSCRIBE", "pat.*", NULL);
    hx_raw_send(&s2, "SSUBSCRIBE", "shard1", NULL);
    ok(raw_skip(&s2, 4) == 0, "RESP2 subscriber: 4 confirmations (2 channels, a pattern, a shard channel)");
    hx_raw_send(&s3, "HELLO", "3", NULL);
    hx_raw_send(&s3, "SUBSCRIBE", "ch1", NULL);
    hx_raw_send(&s3, "PSUBSCRIBE", "pat.*", NULL);
    ok(raw_skip(&s3, 3) == 0, "RESP3 subscriber: HELLO 3, then 2 confirmations");
    hx_raw_send(&mc, "MULTI", NULL);
    hx_raw_send(&mc, "SET", "tx:a", "1", NULL);
    hx_raw_send(&mc, "INCR", "tx:b", NULL);
    const char *r1 = hx_raw_reply(&mc, 20000), *r2 = NULL, *r3 = NULL;
    int multi_ok = !strcmp(r1, "OK");
    r2 = hx_raw_reply(&mc, 20000);
    multi_ok &= !strcmp(r2, "QUEUED");
    r3 = hx_raw_reply(&mc, 20000);
    multi_ok &= !strcmp(r3, "QUEUED");
    ok(multi_ok, "MULTI, SET, INCR: OK QUEUED QUEUED");
    hx_raw_send(&wc, "WATCH", "tx:w", NULL);
    is_str(hx_raw_reply(&wc, 20000), "OK", "WATCH tx:w");
    hx_raw_send(&dc, "MULTI", NULL);
    hx_raw_send(&dc, "SET", "tx:d", "1", NULL);
    multi_ok = !strcmp(hx_raw_reply(&dc, 20000), "OK");
    multi_ok &= !strcmp(hx_raw_reply(&dc, 20000), "QUEUED");
    ok(multi_ok, "another client: MULTI, SET: OK QUEUED");
    hx_raw_send(&rc_, "WATCH", "tx:r", NULL);
    is_str(hx_raw_reply(&rc_, 20000), "OK", "another client: WATCH tx:r");
    hx_raw_send(&bc, "BLPOP", "bl:key", "0", NULL);
    ok(wait_blocked(old) == 0, "BLPOP is blocked on the master");
    redisContext *ctl = hx_redis(proxy.port);
    is_str(sub_counts(ctl, 2), "2/1/1", "CLIENT LIST: the RESP2 subscriber has sub=2 psub=1 ssub=1");
    is_str(sub_counts(ctl, 3), "1/1/0", "CLIENT LIST: the RESP3 subscriber has sub=1 psub=1 ssub=0");

    /* --- SENTINEL FAILOVER --- */
    ok(hx_sentinel_failover(&topo) == 0, "SENTINEL FAILOVER");
    int np = -1;
    double end = hx_now() + DEADLINE;
    while (hx_now() < end && ((np = hx_sentinel_master_port(&topo)) <= 0 || np == old)) hx_sleep_ms(50);
    ok(np > 0 && np != old, "the Sentinels name a new master (%d)", np);
    char want[64];
    snprintf(want, sizeof(want), "127.0.0.1:%d", np);
    ok(hx_info_wait(ctl, "hotproxy_upstream", "hotproxy_sentinel_master", want, (int)(DEADLINE * 1000)) == 0,
       "hotproxy follows it");
    redisContext *nm = hx_redis(np);

    /* the blocked client: an error, then still usable */
    const char *b1 = hx_raw_reply(&bc, 20000);
    ok(!strncmp(b1, "ERR", 3), "BLPOP in flight gets an error ('%s')", b1);
    hx_raw_send(&bc, "GET", "bl:other", NULL);
    is_str(hx_raw_reply(&bc, 20000), "(nil)", "... and the client's GET afterwards is answered");

    /* the MULTI client */
    hx_raw_send(&mc, "SET", "tx:c", "1", NULL);
    is_str(hx_raw_reply(&mc, 20000), "QUEUED", "MULTI after the switch: SET is QUEUED");
    hx_raw_send(&mc, "EXEC", NULL);
    is_str(hx_raw_reply(&mc, 20000), "EXECABORT Transaction discarded because the upstream master changed (failover).",
           "... and EXEC answers EXECABORT");
    is_str(hx_cmd(nm, "EXISTS tx:a tx:b tx:c"), "0", "none of its commands ran on the new master");
    hx_raw_send(&mc, "SET", "tx:after", "1", NULL);
    is_str(hx_raw_reply(&mc, 20000), "OK", "the transaction is over: the client's next SET runs");
    is_str(hx_cmd(nm, "GET tx:after"), "1", "... on the new master");

    /* the WATCH client */
    hx_raw_send(&wc, "MULTI", NULL);
    hx_raw_send(&wc, "SET", "tx:w", "1", NULL);
    hx_raw_send(&wc, "EXEC", NULL);
    r1 = hx_raw_reply(&wc, 20000);
    ok(!strcmp(r1, "OK"), "WATCH, the switch, MULTI: OK ('%s')", r1);
    r2 = hx_raw_reply(&wc, 20000);
    ok(!strcmp(r2, "QUEUED"), "... SET: QUEUED ('%s')", r2);
    r3 = hx_raw_reply(&wc, 20000);
    ok(!strncmp(r3, "EXECABORT", 9), "... EXEC: EXECABORT ('%s')", r3);
    is_str(hx_cmd(nm, "EXISTS tx:w"), "0", "... and tx:w is unset on the new master");

    /* DISCARD ends the lost transaction; RESET clears a lost WATCH */
    hx_raw_send(&dc, "DISCARD", NULL);
    is_str(hx_raw_reply(&dc, 20000), "OK", "MULTI, the switch, DISCARD: OK");
    hx_raw_send(&dc, "GET", "tx:d", NULL);
    is_str(hx_raw_reply(&dc, 20000), "(nil)", "... the client's GET runs (and tx:d was never set)");
    hx_raw_send(&rc_, "RESET", NULL);
    is_str(hx_raw_reply(&rc_, 20000), "RESET", "WATCH, the switch, RESET");
    hx_raw_send(&rc_, "MULTI", NULL);
    hx_raw_send(&rc_, "SET", "tx:r", "1", NULL);
    hx_raw_send(&rc_, "EXEC", NULL);
    raw_skip(&rc_, 2);
    is_str(hx_raw_reply(&rc_, 20000), "(array 1)", "... then MULTI/SET/EXEC runs");
    is_str(hx_cmd(nm, "GET tx:r"), "1", "... on the new master");

    /* the subscribers: messages published after the switch */
    int receivers = 0, n = 0;
    char payload[64] = "";
    end = hx_now() + DEADLINE;
    while (hx_now() < end && receivers < 2) {
        snprintf(payload, sizeof(payload), "direct-%d", n++);
        redisReply *r = redisCommand(nm, "PUBLISH ch1 %s", payload);
        receivers = r && r->type == REDIS_REPLY_INTEGER ? (int)r->integer : 0;
        if (r) freeReplyObject(r);
        if (receivers < 2) hx_sleep_ms(20);
    }
    ok(receivers == 2, "PUBLISH ch1 on the new master reaches both subscribers (%d)", receivers);
    is_str(hx_cmd(ctl, "PUBLISH pat.x via-proxy"), "2", "PUBLISH pat.x through hotproxy reaches both (the pattern)");
    is_str(hx_cmd(ctl, "SPUBLISH shard1 s-via-proxy"), "1", "SPUBLISH shard1 through hotproxy reaches one");
    {
        const char *needles[] = {payload, "via-proxy", "s-via-proxy"};
        seen sn;
        collect(&s2, needles, 3, &sn);
        is_int(sn.found, 3, "RESP2 subscriber: the message, the pmessage and the smessage arrive");
        is_int(sn.confirmations, 0, "RESP2 subscriber: no subscribe confirmation more");
        ok(sn.other == 0, "RESP2 subscriber: nothing else (%d: %s)", sn.other, sn.other_kind);
        collect(&s3, needles, 2, &sn);
        is_int(sn.found, 2, "RESP3 subscriber: the message and the pmessage arrive");
        is_int(sn.confirmations, 0, "RESP3 subscriber: no subscribe confirmation more");
        ok(sn.other == 0, "RESP3 subscriber: nothing else (%d: %s)", sn.other, sn.other_kind);
    }
    is_str(sub_counts(ctl, 2), "2/1/1", "CLIENT LIST after the switch: sub=2 psub=1 ssub=1 (RESP2)");
    is_str(sub_counts(ctl, 3), "1/1/0", "CLIENT LIST after the switch: sub=1 psub=1 ssub=0 (RESP3)");
    {
        /* Redis' own count: the new master holds ch2 and pat.* for it */
        hx_raw_send(&s2, "UNSUBSCRIBE", "ch1", NULL);
        const char *f;
        size_t len;
        int rc2 = hx_raw_frame(&s2, &f, &len, 20000);
        ok(rc2 == 1 && has(f, len, "unsubscribe\r\n$3\r\nch1\r\n:2\r\n"),
           "RESP2 subscriber: UNSUBSCRIBE ch1 -> count 2 from the new master");
        hx_raw_send(&s3, "PING", NULL);
        is_str(hx_raw_reply(&s3, 20000), "PONG", "RESP3 subscriber: PING answered");
    }
    is_str(sub_counts(ctl, 2), "1/1/1", "CLIENT LIST: sub=1 after the UNSUBSCRIBE");

    /* --- a broken connection (no failover) still closes the subscriber --- */
    {
        hx_cmd(nm, "CLIENT KILL TYPE pubsub");
        const char *f;
        size_t len;
        int rc2;
        end = hx_now() + DEADLINE;
        while ((rc2 = hx_raw_frame(&s3, &f, &len, 500)) == 1 || (rc2 == 0 && hx_now() < end)) {
        }
        ok(rc2 < 0, "a subscriber whose upstream connection was killed (not moved) is closed");
    }

    hx_raw_close(&s2);
    hx_raw_close(&s3);
    hx_raw_close(&mc);
    hx_raw_close(&wc);
    hx_raw_close(&bc);
    hx_raw_close(&dc);
    hx_raw_close(&rc_);
    redisFree(nm);
    redisFree(ctl);
    is_int(hx_stop(&proxy, 10000), 0, "hotproxy exits cleanly");
    hx_topo_stop(&topo, 5000);
    done_testing();
    return exit_status();
}
