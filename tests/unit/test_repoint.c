/*
 * test_repoint: a pool re-pointed at another server (a Sentinel failover,
 * a Cluster node that moved), without a Redis.  The test runs the loop
 * itself, with a router whose one pool starts on fake upstream A and is
 * moved to fake upstream B (fake_upstream.h), then back.
 *
 * What px_pool_repoint promises: whatever was in flight on the old server
 * is answered at once with an error naming the move, never left waiting
 * for a server that may be gone; the old server's connections close; the
 * shared connections reconnect to the new address and serve from there;
 * pinned connections and links end, their owners told once (on_lost).
 */
#include "proxy/px_upstream.h"

#include <signal.h>
#include <stddef.h>
#include <unistd.h>

#include "fake_upstream.h"
#include "proxy/px_config.h"
#include "proxy/px_core.h"
#include "proxy/px_router.h"
#include "tap.h"

#define WAIT_SECS 10.0

/* A request the test queues: its own object with the entry inside. */
typedef struct call {
    px_upreq q;
    int ndone;
    int failed;
    char reply[512];
} call;

typedef struct env {
    px_config cfg;
    px_core core;
    px_router *router;
    ev_prepare flush_w;
    ev_timer tick_w;
    fake fa, fb;
    call calls[8];
    int pin_owner, link_owner; /* their addresses are the owners */
    int nlost_pin, nlost_link, nlost_other, nframes;
} env;

/* Run the loop until cond holds or WAIT_SECS pass; cond's value then.  The
 * tick wakes the loop so the deadline is seen even when nothing happens. */
#define WAIT_FOR(e, cond)                                                                       \
    ({                                                                                          \
        double dl_ = ev_time() + WAIT_SECS;                                                     \
        while (!(cond) && ev_time() < dl_) ev_run((e)->core.loop, EVRUN_ONCE);                  \
        !!(cond);                                                                               \
    })

/* A reply against the one wanted, shown escaped when they differ. */
#define is_reply(got, want, ...) is_mem((got), strlen(got), (want), strlen(want), __VA_ARGS__)

static void call_done(px_upreq *q, px_upstream *u, const char *reply, size_t len, int failed)
{
    call *c = (call *)((char *)q - offsetof(call, q));
    (void)u;
    c->ndone++;
    c->failed = failed;
    snprintf(c->reply, sizeof(c->reply), "%.*s", (int)len, reply);
}

/* Queue "GET key" on u as call i. */
static call *send_get(env *e, int i, px_upstream *u, const char *key)
{
    call *c = &e->calls[i];
    px_buf cmd = {0};
    memset(c, 0, sizeof(*c));
    c->q.done = call_done;
    c->q.what = "GET";
    px_buf_appendf(&cmd, "*2\r\n$3\r\nGET\r\n$%zu\r\n%s\r\n", strlen(key), key);
    px_upstream_send(u, &c->q, cmd.data, cmd.len);
    px_buf_free(&cmd);
    return c;
}

static void on_lost(px_upstream *u, void *owner)
{
    env *e = (env *)((char *)u->core - offsetof(env, core)); /* the core is the env's */
    if (owner == &e->pin_owner) e->nlost_pin++;
    else if (owner == &e->link_owner) e->nlost_link++;
    else e->nlost_other++;
}

static void on_frame(px_upstream *u, void *owner, const char *frame, size_t len)
{
    env *e = (env *)((char *)u->core - offsetof(env, core));
    (void)owner;
    (void)frame;
    (void)len;
    e->nframes++;
}

static void flush_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    env *e = w->data;
    (void)loop;
    (void)revents;
    px_router_flush(e->router);
    px_router_reap(e->router);
}

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

/* Every shared connection of p is up. */
static int pool_ready(px_pool *p)
{
    px_stats_pool v;
    px_pool_stats(p, &v);
    int ready = v.upstream_connections_ready == v.upstream_connections;
    free(v.lane.v);
    return ready;
}

static int router_info_names(px_router *r, const char *name)
{
    px_buf b = {0};
    px_router_info(r, &b);
    px_buf_append(&b, "", 1);
    int found = strstr(b.data, name) != NULL;
    px_buf_free(&b);
    return found;
}

int main(void)
{
    plan(30);
    signal(SIGPIPE, SIG_IGN); /* as hotproxy: a write to a closed peer returns EPIPE */
    env *e = calloc(1, sizeof(*e));
    if (!e) abort();
    px_config_init(&e->cfg);
    e->cfg.upstream_connections = 2;
    e->core.loop = ev_loop_new(0);
    e->core.cfg = &e->cfg;
    e->core.log.level = 99; /* nothing logged: stdout is TAP */
    e->core.log.fd = -1;
    px_stats_init(&e->core.stats);
    e->core.start_time = ev_now(e->core.loop);
    struct ev_loop *loop = e->core.loop;
    if (fake_start(&e->fa, loop, "A") != 0 || fake_start(&e->fb, loop, "B") != 0) {
        diag("cannot listen on loopback");
        return 1;
    }
    e->fb.auto_get = 1; /* B answers at once; A holds every GET for ever */
    char err[256] = "", a_name[64], b_name[64], want[512];
    snprintf(a_name, sizeof(a_name), "127.0.0.1:%d", e->fa.port);
    snprintf(b_name, sizeof(b_name), "127.0.0.1:%d", e->fb.port);
    e->router = px_router_create(&e->core, &px_topology_single, err, sizeof(err));
    ev_prepare_init(&e->flush_w, flush_cb);
    e->flush_w.data = e;
    ev_prepare_start(loop, &e->flush_w);
    ev_timer_init(&e->tick_w, tick_cb, 0.02, 0.02);
    ev_timer_start(loop, &e->tick_w);

    px_pool *p = px_router_add_pool(e->router, "127.0.0.1", e->fa.port);
    ok(WAIT_FOR(e, pool_ready(p)), "the pool connects to A");
    const char *perr = NULL;
    px_upstream *pu = px_pool_pin(p, 0, 2, on_frame, on_lost, &e->pin_owner, &perr);
    px_upstream *lk = px_pool_open_link(p, on_frame, on_lost, &e->link_owner);
    ok(pu && lk && WAIT_FOR(e, pu->state == PX_UP_READY && lk->state == PX_UP_READY),
       "a pinned connection and a link to A are up (%s)", perr ? perr : "no error");

    /* --- in flight on A, which never answers: the move answers them */
    call *g1 = send_get(e, 0, px_pool_pick(p, 0, 2, NULL), "k1");
    call *g2 = pu ? send_get(e, 1, pu, "k2") : &e->calls[1];
    ok(WAIT_FOR(e, fake_holder(&e->fa, "k1") && fake_holder(&e->fa, "k2")),
       "A holds a GET from a shared connection and one from the pinned one");
    is_int(e->fa.nopen, 4, "A has 4 connections open: 2 shared, the pinned one, the link");

    px_router_repoint(e->router, p, "127.0.0.1", e->fb.port, "test failover");
    /* no loop run in between: nothing waits for A */
    ok(g1->ndone == 1 && g1->failed == 1, "the shared connection's request completed at once, failed");
    snprintf(want, sizeof(want), "-ERR upstream %s: moved to %s: test failover\r\n", a_name, b_name);
    is_reply(g1->reply, want, "with an error naming the move");
    ok(g2->ndone == 1 && g2->failed == 1, "the pinned connection's request completed at once, failed");
    snprintf(want, sizeof(want), "-ERR upstream %s connection closed: moved to %s: test failover\r\n", a_name,
             b_name);
    is_reply(g2->reply, want, "with its close naming the move");
    is_int(e->nlost_pin, 1, "the pinned connection's owner heard of its end");
    is_int(e->nlost_link, 1, "the link's owner heard of its end");

    ok(WAIT_FOR(e, e->fa.nopen == 0), "A sees all its connections closed");
    ok(WAIT_FOR(e, pool_ready(p) && e->fb.nopen == 2), "the shared connections reconnect, to B");
    call *g3 = send_get(e, 2, px_pool_pick(p, 0, 2, NULL), "k3");
    ok(WAIT_FOR(e, g3->ndone == 1), "a new request completes");
    is_reply(g3->reply, "$4\r\nk3@B\r\n", "with B's reply");
    ok(g3->failed == 0 && g1->ndone == 1 && g2->ndone == 1, "once each, nothing failed twice");
    is_int(e->nlost_pin + e->nlost_link + e->nlost_other, 2, "each owner was told exactly once");

    px_stats_pool v;
    px_pool_stats(p, &v);
    is_str(v.upstream, b_name, "the pool's INFO names B");
    is_str(v.upstream_server_version, "7.0.15-fake-B", "with B's version (the pool probed it again)");
    free(v.lane.v);
    ok(router_info_names(e->router, b_name) && !router_info_names(e->router, a_name), "the router's INFO names B, not A");

    /* --- back to A with px_pool_repoint itself, B holding a GET */
    e->fb.auto_get = 0;
    e->fa.auto_get = 1;
    call *g4 = send_get(e, 3, px_pool_pick(p, 0, 2, NULL), "k4");
    ok(WAIT_FOR(e, fake_holder(&e->fb, "k4")), "B holds a GET");
    px_pool_repoint(p, "127.0.0.1", e->fa.port, "back");
    snprintf(want, sizeof(want), "-ERR upstream %s: moved to %s: back\r\n", b_name, a_name);
    ok(g4->ndone == 1 && g4->failed == 1, "px_pool_repoint answers it at once, failed");
    is_reply(g4->reply, want, "naming the move back");
    ok(WAIT_FOR(e, e->fb.nopen == 0 && pool_ready(p)), "B's connections close, the pool is up on A again");
    call *g5 = send_get(e, 4, px_pool_pick(p, 0, 2, NULL), "k5");
    ok(WAIT_FOR(e, g5->ndone == 1), "a new request completes");
    is_reply(g5->reply, "$4\r\nk5@A\r\n", "with A's reply");

    /* --- a pool whose server refuses (its connections down, in backoff) is re-pointed */
    int gone_port;
    {
        fake gone;
        if (fake_start(&gone, loop, "gone") != 0) return 1;
        gone_port = gone.port;
        fake_stop(&gone); /* nothing listens there now: connections are refused */
    }
    uint64_t refused = e->core.stats.upstream_connect_failures;
    px_pool_repoint(p, "127.0.0.1", gone_port, "to nowhere");
    ok(WAIT_FOR(e, e->core.stats.upstream_connect_failures >= refused + 2 && px_pool_pick(p, 0, 2, NULL) == NULL),
       "re-pointed at a closed port, both connections are refused and down");
    snprintf(want, sizeof(want), "upstream 127.0.0.1:%d unavailable: Connection refused", gone_port);
    is_str(px_pool_unavailable(p), want, "the pool says why");
    px_router_repoint(e->router, p, "127.0.0.1", e->fb.port, "found again");
    e->fb.auto_get = 1;
    ok(WAIT_FOR(e, pool_ready(p)), "re-pointed again while down, it connects to B");
    call *g6 = send_get(e, 5, px_pool_pick(p, 0, 2, NULL), "k6");
    ok(WAIT_FOR(e, g6->ndone == 1) && !strcmp(g6->reply, "$4\r\nk6@B\r\n"), "and serves B's replies");
    is_int(e->nframes, 0, "no frame reached an owner");

    px_router_destroy(e->router);
    fake_stop(&e->fa);
    fake_stop(&e->fb);
    ev_prepare_stop(loop, &e->flush_w);
    ev_timer_stop(loop, &e->tick_w);
    ev_loop_destroy(loop);
    px_stats_free(&e->core.stats);
    px_config_free(&e->cfg);
    free(e);
    return exit_status();
}
