/*
 * failover: how long a Sentinel failover costs a client of hotproxy.
 *
 *   failover --proxy PORT --sentinel PORT[,PORT...] --name MASTER [--rounds N]
 *
 * Each round: subscribe to +switch-master on every Sentinel given (the
 * first message from any of them counts: the leader of the failover
 * announces it first, the others once they hear of it), ask the first for a
 * SENTINEL FAILOVER (retried until it accepts: after a round the old master
 * must first be seen as a replica again), and write distinct keys through
 * hotproxy (SET fo:<round>:<n>, one in flight) until 300 ms of writes
 * succeeded after +switch-master arrived.  Then the new master is asked which
 * of the keys it holds: the first write that succeeded after +switch-master
 * and is on the new master gives the round's figure (a write the old master
 * took after the switch is not on the new one, and does not count).  Also
 * printed: hotproxy's own hotproxy_sentinel_last_switch_ms.
 *
 * Output: one line per round, then "median_ms=... max_ms=... rounds=...".
 */
#include <hiredis/hiredis.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static redisContext *conn(int port)
{
    struct timeval tv = {10, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (!c || c->err) {
        fprintf(stderr, "failover: cannot connect to %d: %s\n", port, c ? c->errstr : "oom");
        exit(1);
    }
    redisSetTimeout(c, tv);
    return c;
}

/* The subscriptions are watched by a thread of their own, so the moment a
 * +switch-master arrives is taken then, not after a write that may be
 * stuck on the old master. */
typedef struct watch {
    redisContext **subs;
    int n;
    _Atomic double t0;
} watch;

static void *watch_main(void *arg)
{
    watch *w = arg;
    struct pollfd pf[16];
    for (int k = 0; k < w->n; k++) pf[k] = (struct pollfd){w->subs[k]->fd, POLLIN, 0};
    if (poll(pf, (nfds_t)w->n, 60000) > 0) atomic_store(&w->t0, now_s());
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* hotproxy's INFO field, as a string in buf. */
static const char *info_field(redisContext *c, const char *field, char *buf, size_t cap)
{
    redisReply *r = redisCommand(c, "INFO hotproxy_upstream");
    buf[0] = '\0';
    if (r && r->type == REDIS_REPLY_STRING) {
        const char *p = strstr(r->str, field);
        if (p && p[strlen(field)] == ':') {
            p += strlen(field) + 1;
            size_t n = strcspn(p, "\r\n");
            if (n >= cap) n = cap - 1;
            memcpy(buf, p, n);
            buf[n] = '\0';
        }
    }
    if (r) freeReplyObject(r);
    return buf;
}

int main(int argc, char **argv)
{
    int proxy = 0, sentinel = 0, rounds = 10, nsent = 0, sports[16];
    const char *name = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--proxy")) proxy = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--sentinel")) {
            for (const char *q = argv[i + 1]; q && *q && nsent < 16; q = strchr(q, ','), q = q ? q + 1 : q)
                sports[nsent++] = atoi(q);
            sentinel = nsent ? sports[0] : 0;
        }
        else if (!strcmp(argv[i], "--name")) name = argv[i + 1];
        else if (!strcmp(argv[i], "--rounds")) rounds = atoi(argv[i + 1]);
    }
    if (!proxy || !sentinel || !name || rounds < 1) {
        fprintf(stderr, "usage: failover --proxy PORT --sentinel PORT[,PORT...] --name MASTER [--rounds N]\n");
        return 2;
    }
    double *fig = calloc((size_t)rounds, sizeof(double));
    int nfig = 0;
    enum { MAXW = 2000000 };
    double *t = malloc(sizeof(double) * MAXW);
    if (!fig || !t) return 1;
    redisContext *p = conn(proxy), *info = conn(proxy);
    for (int round = 0; round < rounds; round++) {
        redisContext *subs[16], *s = conn(sentinel);
        redisReply *r;
        for (int k = 0; k < nsent; k++) {
            subs[k] = conn(sports[k]);
            r = redisCommand(subs[k], "SUBSCRIBE +switch-master");
            if (r) freeReplyObject(r);
        }
        double until = now_s() + 120;
        for (;;) {
            r = redisCommand(s, "SENTINEL FAILOVER %s", name);
            int ok = r && r->type == REDIS_REPLY_STATUS;
            if (!ok && now_s() > until) {
                fprintf(stderr, "failover: SENTINEL FAILOVER refused for 120 s: %s\n", r ? r->str : s->errstr);
                return 1;
            }
            if (r) freeReplyObject(r);
            if (ok) break;
            usleep(200000);
        }
        watch wt = {subs, nsent, 0};
        pthread_t th;
        pthread_create(&th, NULL, watch_main, &wt);
        double t0 = 0, end = now_s() + 60;
        long n = 0;
        while (now_s() < end && n < MAXW) {
            r = redisCommand(p, "SET fo:%d:%ld 1", round, n);
            double at = now_s();
            t[n] = r && r->type == REDIS_REPLY_STATUS ? at : -1;
            if (!r) { /* cut: reconnect */
                redisFree(p);
                p = conn(proxy);
            } else {
                freeReplyObject(r);
            }
            n++;
            if (!t0) {
                t0 = atomic_load(&wt.t0);
            } else if (at - t0 > 0.3) {
                break;
            }
        }
        pthread_join(th, NULL);
        if (!t0) {
            fprintf(stderr, "failover: round %d: no +switch-master within 60 s\n", round);
            return 1;
        }
        r = redisCommand(s, "SENTINEL get-master-addr-by-name %s", name);
        int mport = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 ? atoi(r->element[1]->str) : 0;
        if (r) freeReplyObject(r);
        redisContext *m = conn(mport);
        double figure = -1;
        for (long i = 0; i < n; i++) {
            if (t[i] < 0 || t[i] < t0) continue;
            r = redisCommand(m, "EXISTS fo:%d:%ld", round, i);
            int there = r && r->type == REDIS_REPLY_INTEGER && r->integer == 1;
            if (r) freeReplyObject(r);
            if (there) {
                figure = (t[i] - t0) * 1000.0;
                break;
            }
        }
        char sw[64];
        info_field(info, "hotproxy_sentinel_last_switch_ms", sw, sizeof(sw));
        printf("round %d: new master %d, first write on it %.2f ms after +switch-master (hotproxy's own switch: %s ms)\n",
               round + 1, mport, figure, sw);
        fflush(stdout);
        if (figure >= 0) fig[nfig++] = figure;
        redisFree(m);
        for (int k = 0; k < nsent; k++) redisFree(subs[k]);
        redisFree(s);
    }
    qsort(fig, (size_t)nfig, sizeof(double), cmp);
    double median = nfig ? (nfig % 2 ? fig[nfig / 2] : (fig[nfig / 2 - 1] + fig[nfig / 2]) / 2) : -1;
    printf("median_ms=%.2f max_ms=%.2f rounds=%d\n", median, nfig ? fig[nfig - 1] : -1.0, nfig);
    free(fig);
    free(t);
    redisFree(p);
    redisFree(info);
    return nfig == rounds ? 0 : 1;
}
