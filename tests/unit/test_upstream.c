/*
 * test_upstream: how px_upstream completes what is queued on it, without a
 * Redis.  The pool's server is a listening socket that never accepts: the
 * kernel completes the TCP handshake, but the loop never runs, so every
 * connection stays CONNECTING with its requests queued, and closing or
 * destroying it must answer each of them through the callback it carries,
 * in the order they were queued, exactly once.
 */
#include "proxy/px_upstream.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/px_config.h"
#include "proxy/px_core.h"
#include "tap.h"

/* What a caller queues: its own object with the entry inside. */
typedef struct call {
    int id;
    px_upreq q;
} call;

#define MAXLOG 32
static struct {
    int n;
    int ids[MAXLOG];
    int failed[MAXLOG];
    char reply[MAXLOG][512];
} done_log;

static void record(int id, const char *reply, size_t len, int failed)
{
    if (done_log.n >= MAXLOG) return;
    done_log.ids[done_log.n] = id;
    done_log.failed[done_log.n] = failed;
    snprintf(done_log.reply[done_log.n], sizeof(done_log.reply[0]), "%.*s", (int)len, reply);
    done_log.n++;
}

static void call_done(px_upreq *q, px_upstream *u, const char *reply, size_t len, int failed)
{
    call *c = (call *)((char *)q - offsetof(call, q));
    (void)u;
    record(c->id, reply, len, failed);
}

static void internal_cb(px_upstream *u, void *ctx, const char *reply, size_t len)
{
    (void)u;
    record((int)(intptr_t)ctx, reply, len, -1);
}

static void send_call(px_upstream *u, call *c, int id)
{
    memset(c, 0, sizeof(*c));
    c->id = id;
    c->q.done = call_done;
    c->q.what = "GET";
    px_upstream_send(u, &c->q, "*1\r\n$4\r\nPING\r\n", 14);
}

static int nlost, lost_after;
static void *lost_owner;
static void on_lost(px_upstream *u, void *owner)
{
    (void)u;
    nlost++;
    lost_owner = owner;
    lost_after = done_log.n;
}

static void on_frame(px_upstream *u, void *owner, const char *frame, size_t len)
{
    (void)u;
    (void)owner;
    (void)frame;
    (void)len;
}

static int nhooked;
static void on_handshake(px_upstream *u, void *arg)
{
    (void)arg;
    if (u->db == 1) nhooked++;
}

/* A loopback port that accepts connections into its backlog and nothing more. */
static int listener(int *port)
{
    struct sockaddr_in a;
    socklen_t alen = sizeof(a);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(fd, 64) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &alen) != 0)
        return -1;
    *port = ntohs(a.sin_port);
    return fd;
}

/* The entries logged from index from on, by id. */
static int logged_ids(int from, const int *want, int n)
{
    if (done_log.n - from != n) return 0;
    for (int i = 0; i < n; i++)
        if (done_log.ids[from + i] != want[i]) return 0;
    return 1;
}

int main(void)
{
    plan(16);
    int port, lfd = listener(&port);
    if (lfd < 0) {
        diag("cannot listen on loopback");
        return 1;
    }
    px_config cfg;
    px_config_init(&cfg);
    px_core s;
    memset(&s, 0, sizeof(s));
    s.loop = ev_loop_new(0);
    s.cfg = &cfg;
    s.log.level = 99; /* nothing logged: stdout is TAP */
    s.log.fd = -1;

    px_pool *p = px_pool_create(&s, "127.0.0.1", port, 2);
    px_pool_on_handshake(p, on_handshake, NULL);

    /* a pinned connection: its requests fail in order, then its owner hears of its end */
    int owner;
    const char *err = NULL;
    px_upstream *pu = px_pool_pin(p, 0, 2, on_frame, on_lost, &owner, &err);
    ok(pu != NULL, "a pinned connection opens (%s)", err ? err : "no error");
    call c1, c3;
    int from = done_log.n;
    send_call(pu, &c1, 1);
    px_upstream_send_internal(pu, "*1\r\n$4\r\nPING\r\n", 14, internal_cb, (void *)(intptr_t)2);
    send_call(pu, &c3, 3);
    px_pool_close(p, pu, "test");
    /* (its handshake's own requests, answered first, log nothing here) */
    int skip = 0;
    ok(done_log.n - from == 3, "every request of the closed connection completed");
    const int want_pinned[] = {1, 2, 3};
    ok(logged_ids(from + skip, want_pinned, 3), "in the order they were queued");
    char want_err[256];
    snprintf(want_err, sizeof(want_err), "-ERR upstream 127.0.0.1:%d connection closed: test\r\n", port);
    is_str(done_log.reply[from + skip], want_err, "with the connection's error");
    ok(done_log.failed[from + skip] == 1 && done_log.failed[from + skip + 2] == 1, "marked failed");
    is_str(done_log.reply[from + skip + 1], want_err, "an internal request gets the same error");
    ok(nlost == 1 && lost_owner == &owner, "its owner's on_lost ran once, with the owner");
    ok(lost_after == done_log.n, "after its requests were answered");
    px_pool_reap(p);

    /* disowned first: the owner hears nothing */
    pu = px_pool_pin(p, 0, 2, on_frame, on_lost, &owner, &err);
    px_upstream_disown(pu);
    px_pool_close(p, pu, "test");
    ok(nlost == 1, "a disowned connection's end is not reported");
    px_pool_reap(p);

    /* picking: the caller's connection in flight is kept while of the lane */
    px_upstream *a = px_pool_pick(p, 1, 2, NULL);
    ok(a != NULL && a->db == 1 && a->proto == 2, "a new lane for db 1");
    is_int(nhooked, 2, "the handshake hook ran for each of its connections");
    px_upstream *other = a->lane->conns == a ? &a->lane->conns[1] : &a->lane->conns[0];
    ok(px_pool_pick(p, 1, 2, other) == other, "the connection in flight is kept");
    px_upstream *z = px_pool_pick(p, 0, 2, other);
    ok(z != other && z && z->db == 0, "but not for another database");

    /* a shared connection: its queue answered in order when the pool goes */
    call d1, d3;
    send_call(z, &d1, 11);
    px_upstream_send_internal(z, "*1\r\n$4\r\nPING\r\n", 14, internal_cb, (void *)(intptr_t)12);
    send_call(z, &d3, 13);
    from = done_log.n;
    px_pool_destroy(p);
    int found = -1;
    for (int i = from; i < done_log.n; i++)
        if (done_log.ids[i] == 11) found = i;
    const int want_shared[] = {11, 12, 13};
    ok(found >= 0 && found + 3 <= done_log.n && done_log.ids[found + 1] == want_shared[1] &&
           done_log.ids[found + 2] == want_shared[2],
       "a destroyed pool answers a shared connection's requests in order");
    is_str(found >= 0 ? done_log.reply[found] : "", "-ERR hotproxy is shutting down\r\n", "with the shutdown error");
    int once = 1;
    for (int i = 0; i < done_log.n; i++)
        for (int j = i + 1; j < done_log.n; j++)
            if (done_log.ids[i] && done_log.ids[i] == done_log.ids[j]) once = 0;
    ok(once, "each request completed exactly once");

    ev_loop_destroy(s.loop);
    px_config_free(&cfg);
    close(lfd);
    return exit_status();
}
