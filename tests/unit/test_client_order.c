/*
 * test_client_order: one client's pipeline across two upstreams, without
 * a Redis or a hotproxy process.  The test runs the loop itself, with a
 * router of two pools, each on a fake upstream (fake_upstream.h) that holds
 * every GET until the test releases it, a client set whose dispatcher is
 * the test's own (a key starting with 'b' goes to pool 1, any other to pool
 * 0), and a client on one end of a socketpair.
 *
 * What px_client promises: a pipeline is in flight on both pools at once;
 * on one pool the client keeps to one connection, so each server sees its
 * commands in the order they were sent; whatever order the servers answer
 * in, the replies are written in request order; a connection that fails
 * answers what it held with errors, in their places.
 *
 * And what px_split promises, on a router whose topology spreads keys (the
 * test's: a key's first letter is its shard, as above): an MGET or DEL
 * whose keys are on both servers is sent as one command per server, in
 * flight on both at once, and the replies merge into the one the client
 * expects, in its order (MGET's values back at their places, DEL's counts
 * added), in the command's place among the client's other replies.
 */
#include "proxy/px_client.h"

#include "proxy/px_command.h"
#include "proxy/px_split.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fake_upstream.h"
#include "proxy/px_config.h"
#include "proxy/px_core.h"
#include "proxy/px_router.h"
#include "tap.h"

#define WAIT_SECS 15.0

typedef struct env {
    px_config cfg;
    px_core core;
    px_router *router;
    px_pool *pool[2];
    px_clients set;
    ev_prepare flush_w;
    ev_timer tick_w;
    ev_io peer_w;
    int peer;     /* the test's end of the client's socketpair */
    px_buf got;   /* what the client was sent */
    fake fa, fb;  /* pool 0's server, pool 1's */
} env;

/* Run the loop until cond holds or WAIT_SECS pass; cond's value then.  The
 * tick wakes the loop so the deadline is seen even when nothing happens. */
#define WAIT_FOR(e, cond)                                                                       \
    ({                                                                                          \
        double dl_ = ev_time() + WAIT_SECS;                                                     \
        while (!(cond) && ev_time() < dl_) ev_run((e)->core.loop, EVRUN_ONCE);                  \
        !!(cond);                                                                               \
    })

/* The dispatcher: the key's first letter picks the pool; a command for a
 * pool whose earlier requests are on another connection waits for them. */
/* The test topology: a key's first letter is its shard ('b': pool 1). */
static int shard_of(px_router *r, const char *key, size_t len)
{
    (void)r;
    return len && key[0] == 'b';
}

static px_pool *shard_pool(px_router *r, int shard) { return shard < r->npools ? r->pools[shard] : NULL; }

static px_pool *route_first_key(px_router *r, const px_route_args *a)
{
    return shard_pool(r, a->argc >= 2 ? shard_of(r, a->argv[1], a->argvlen[1]) : 0);
}

static const px_topology sharded = {
    .name = "test-sharded",
    .route = route_first_key,
    .shard = shard_of,
    .nshards = 2,
    .shard_pool = shard_pool,
};

/* What px_dispatch does for a command the table says to split. */
static int dispatch_split(px_client *c, const char *raw)
{
    int argc = c->parser.argc;
    if (argc > c->argv_cap) {
        c->argv_cap = argc;
        c->argv = realloc(c->argv, sizeof(*c->argv) * (size_t)argc);
        c->argvlen = realloc(c->argvlen, sizeof(*c->argvlen) * (size_t)argc);
        if (!c->argv || !c->argvlen) abort();
    }
    for (int i = 0; i < argc; i++) c->argv[i] = px_req_arg(&c->parser, raw, i, &c->argvlen[i]);
    const px_command *cmd = px_command_lookup(c->argv[0], c->argvlen[0], NULL, 0);
    int wait = 0;
    const char *err = NULL;
    px_split_plan *p = cmd ? px_split_plan_make(c, cmd, argc, NULL, &wait, &err) : NULL;
    if (!p) return -1; /* not split: the usual path */
    if (wait) {
            px_split_plan_free(p);
        return 0;
    }
    px_req *r = px_client_req_new(c);
    r->cmd = cmd;
    if (err) {
        px_split_plan_free(p);
        px_client_reply_error(r, "%s", err);
    } else {
        px_split_send(p, c, r, NULL);
    }
    return 1;
}

static int dispatch(void *arg, px_client *c, const char *raw, size_t rawlen)
{
    env *e = arg;
    int split = dispatch_split(c, raw);
    if (split >= 0) return split;
    size_t klen = 0;
    const char *key = c->parser.argc >= 2 ? px_req_arg(&c->parser, raw, 1, &klen) : "";
    px_pool *p = e->pool[klen && key[0] == 'b'];
    px_upstream *u = px_client_pick(c, p);
    px_upstream *on = px_client_inflight_on(c, p);
    if (on && on != u) return 0;
    px_req *r = px_client_req_new(c);
    if (!u) {
        px_client_reply_error(r, "%s", px_pool_unavailable(p));
        return 1;
    }
    px_client_forward(c, r, u, raw, rawlen, 0, 0);
    return 1;
}

static int completing(void *arg, px_req *r, const char *data, size_t len)
{
    (void)arg;
    (void)r;
    (void)data;
    (void)len;
    return 0;
}

static const px_client_ops ops = {dispatch, completing};

/* As the server before the loop sleeps: upstream writes, client writes, then frees. */
static void flush_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    env *e = w->data;
    (void)loop;
    (void)revents;
    px_router_flush(e->router);
    px_clients_flush(&e->set);
    px_router_reap(e->router);
    px_clients_reap(&e->set);
}

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

static void peer_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    env *e = w->data;
    (void)revents;
    char *p = px_buf_reserve(&e->got, 4096);
    ssize_t n = read(e->peer, p, 4096);
    if (n > 0) e->got.len += (size_t)n;
    else if (n == 0) ev_io_stop(loop, w);
}

/* Every connection of both pools is up, its handshake answered (so no
 * connection is busier than the other when the pipeline comes). */
static int pools_ready(env *e)
{
    for (int i = 0; i < 2; i++) {
        px_stats_pool v;
        px_pool_stats(e->pool[i], &v);
        int ready = v.upstream_connections_ready == v.upstream_connections && v.upstream_inflight == 0;
        free(v.lane.v);
        if (!ready) return 0;
    }
    return 1;
}

/* The client's output is written out: nothing buffered, no write pending. */
static int client_flushed(const px_client *c)
{
    return px_buf_used(&c->out) == 0 && !(c->flags & (PX_CLIENT_IN_WRITE_LIST | PX_CLIENT_WRITE_ARMED));
}

/* What the client's socket has received so far, whatever the loop delivered
 * yet: the socketpair holds it as soon as the client wrote it. */
static void drain_peer(env *e)
{
    for (;;) {
        char *p = px_buf_reserve(&e->got, 4096);
        ssize_t n = recv(e->peer, p, 4096, MSG_DONTWAIT);
        if (n <= 0) return;
        e->got.len += (size_t)n;
    }
}

static void send_peer(env *e, const char *s)
{
    size_t n = strlen(s);
    ssize_t w = write(e->peer, s, n);
    if (w != (ssize_t)n) diag("short write to the client's socket");
}

static void bulk(px_buf *b, const char *key, const char *server)
{
    px_buf_appendf(b, "$%zu\r\n%s@%s\r\n", strlen(key) + 1 + strlen(server), key, server);
}

/* key's GET was read on the connection prev's was, right after it (prev
 * NULL: key's was read at all). */
static int read_after(fake *f, const char *prev, const char *key)
{
    fake_conn *c = fake_reader(f, key);
    if (!c) return 0;
    if (!prev) return 1;
    if (fake_reader(f, prev) != c) return 0;
    char pair[160];
    snprintf(pair, sizeof(pair), "%s %s ", prev, key);
    return strstr(c->gets, pair) != NULL;
}

/* Requests in flight on the pool's shared connections. */
static long pool_inflight(px_pool *p)
{
    px_stats_pool v;
    px_pool_stats(p, &v);
    free(v.lane.v);
    return (long)v.upstream_inflight;
}

#define GET(k) "*2\r\n$3\r\nGET\r\n$2\r\n" k "\r\n"

int main(void)
{
    plan(27);
    signal(SIGPIPE, SIG_IGN); /* as hotproxy: a write to a closed peer returns EPIPE */
    env *e = calloc(1, sizeof(*e));
    if (!e) abort();
    fake_core_init(&e->core, &e->cfg, 2); /* 2: a pool has a connection to stray to */
    struct ev_loop *loop = e->core.loop;

    if (fake_start(&e->fa, loop, "A") != 0 || fake_start(&e->fb, loop, "B") != 0) {
        diag("cannot listen on loopback");
        return 1;
    }
    char err[256] = "";
    e->router = px_router_create(&e->core, &sharded, err, sizeof(err));
    e->pool[0] = px_router_add_pool(e->router, "127.0.0.1", e->fa.port);
    e->pool[1] = px_router_add_pool(e->router, "127.0.0.1", e->fb.port);
    e->set.core = &e->core;
    e->set.router = e->router;
    e->set.ops = &ops;
    e->set.ops_arg = e;
    ev_prepare_init(&e->flush_w, flush_cb);
    e->flush_w.data = e;
    ev_prepare_start(loop, &e->flush_w);
    ev_timer_init(&e->tick_w, tick_cb, 0.02, 0.02);
    ev_timer_start(loop, &e->tick_w);

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        diag("socketpair failed");
        return 1;
    }
    fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
    fcntl(sv[1], F_SETFL, fcntl(sv[1], F_GETFL) | O_NONBLOCK);
    px_client *c = px_client_create(&e->set, sv[0], "test:1");
    e->peer = sv[1];
    ev_io_init(&e->peer_w, peer_cb, e->peer, EV_READ);
    e->peer_w.data = e;
    ev_io_start(loop, &e->peer_w);

    ok(WAIT_FOR(e, pools_ready(e)), "both pools connect to their fake upstreams");

    /* --- a pipeline across both: B answers first, the client reads them in order */
    send_peer(e, GET("a1") GET("b1") GET("a2") GET("b2"));
    ok(WAIT_FOR(e, fake_nheld(&e->fa) == 2 && fake_nheld(&e->fb) == 2),
       "the pipeline is in flight on both upstreams at once (A holds 2, B holds 2: b1 reached B before A answered a1)");
    ok(read_after(&e->fa, NULL, "a1") && read_after(&e->fa, "a1", "a2"),
       "A read a1 then a2 on one connection (%s)", fake_reader(&e->fa, "a1") ? fake_reader(&e->fa, "a1")->gets : "none");
    ok(read_after(&e->fb, "b1", "b2"), "B read b1 then b2 on one connection");
    ok(px_client_inflight_on(c, e->pool[0]) && px_client_inflight_on(c, e->pool[1]) && c->ninflight == 4,
       "the client counts 4 in flight, on a connection of each pool");

    fake_release(&e->fb, "b1");
    fake_release(&e->fb, "b2");
    ok(WAIT_FOR(e, c->ninflight == 2 && client_flushed(c)), "B's two replies arrive first");
    drain_peer(e);
    is_int(e->got.len, 0, "the client is sent nothing while a1 is awaited");

    px_buf want = {0};
    fake_release(&e->fa, "a1");
    bulk(&want, "a1", "A");
    bulk(&want, "b1", "B");
    WAIT_FOR(e, e->got.len >= want.len && c->ninflight == 1 && client_flushed(c));
    drain_peer(e);
    is_mem(e->got.data, e->got.len, want.data, want.len, "a1's reply frees b1's, not b2's (a2 is still awaited)");

    fake_release(&e->fa, "a2");
    bulk(&want, "a2", "A");
    bulk(&want, "b2", "B");
    WAIT_FOR(e, e->got.len >= want.len && c->ninflight == 0 && client_flushed(c));
    drain_peer(e);
    is_mem(e->got.data, e->got.len, want.data, want.len, "the client reads a1, b1, a2, b2: request order");
    ok(c->nqueued == 0 && c->held == 0 && c->non == 0, "nothing left queued, held or counted in flight");

    /* --- a connection of pool 0 fails with two requests in flight */
    e->got.len = e->got.rpos = 0;
    px_buf_clear(&want, 0);
    send_peer(e, GET("a3") GET("b3") GET("a4"));
    ok(WAIT_FOR(e, fake_holder(&e->fa, "a3") && fake_holder(&e->fa, "a4") && fake_holder(&e->fb, "b3")),
       "a3 and a4 reach A, b3 reaches B");
    ok(read_after(&e->fa, "a3", "a4"), "a3 then a4 on one connection of A");
    fake_release(&e->fb, "b3");
    ok(WAIT_FOR(e, c->ninflight == 2), "B answers b3 first");
    fake_conn *held = fake_holder(&e->fa, "a3");
    if (held) fake_conn_close(held); /* A's side of that connection goes away */
    char lost[256];
    snprintf(lost, sizeof(lost),
             "-ERR upstream 127.0.0.1:%d connection lost (the command may have run): closed by the server\r\n",
             e->fa.port);
    px_buf_append(&want, lost, strlen(lost));
    bulk(&want, "b3", "B");
    px_buf_append(&want, lost, strlen(lost));
    WAIT_FOR(e, e->got.len >= want.len && c->ninflight == 0 && client_flushed(c));
    drain_peer(e);
    is_mem(e->got.data, e->got.len, want.data, want.len,
           "a3 and a4 get the lost connection's error, each in its place around b3");
    ok(c->nqueued == 0 && c->ninflight == 0 && c->non == 0, "nothing lost: every request answered");

    /* the client goes on: pool 0 still serves it */
    e->got.len = e->got.rpos = 0;
    px_buf_clear(&want, 0);
    send_peer(e, GET("a5") GET("b5"));
    ok(WAIT_FOR(e, fake_holder(&e->fa, "a5") && fake_holder(&e->fb, "b5")), "a5 reaches A after the failure");
    fake_release(&e->fb, "b5");
    WAIT_FOR(e, c->ninflight == 1);
    fake_release(&e->fa, "a5");
    bulk(&want, "a5", "A");
    bulk(&want, "b5", "B");
    WAIT_FOR(e, e->got.len >= want.len && c->ninflight == 0 && client_flushed(c));
    drain_peer(e);
    is_mem(e->got.data, e->got.len, want.data, want.len, "and its replies come in order");

    /* --- split across the two servers: MGET a7 b7 a8, DEL a9 b9, GET ac */
    e->got.len = e->got.rpos = 0;
    px_buf_clear(&want, 0);
    send_peer(e, "*4\r\n$4\r\nMGET\r\n$2\r\na7\r\n$2\r\nb7\r\n$2\r\na8\r\n"
                 "*3\r\n$3\r\nDEL\r\n$2\r\na9\r\n$2\r\nb9\r\n" GET("ac"));
    ok(WAIT_FOR(e, fake_holder(&e->fa, "a7") && fake_holder(&e->fb, "b7")),
       "MGET a7 b7 a8 is in flight on both servers at once: A holds its part, B its own");
    ok(fake_reader(&e->fa, "a7") && strstr(fake_reader(&e->fa, "a7")->gets, "a7 a8 ") != NULL,
       "A's part holds a7 and a8, in the client's order");
    fake_release(&e->fb, "b7");
    WAIT_FOR(e, !fake_holder(&e->fb, "b7"));
    ok(WAIT_FOR(e, fake_holder(&e->fa, "ac")) && fake_reader(&e->fa, "ac") == fake_reader(&e->fa, "a7"),
       "GET ac follows on A, on the connection of the MGET's part (A's order kept)");
    is_int(e->got.len, 0, "B's part answered first: nothing reaches the client while A's is awaited");
    fake_release(&e->fa, "a7");
    fake_release(&e->fa, "ac");
    px_buf_append(&want, "*3\r\n", 4);
    bulk(&want, "a7", "A");
    bulk(&want, "b7", "B");
    bulk(&want, "a8", "A");
    px_buf_append(&want, ":2\r\n", 4);
    bulk(&want, "ac", "A");
    WAIT_FOR(e, e->got.len >= want.len && c->ninflight == 0 && client_flushed(c));
    drain_peer(e);
    is_mem(e->got.data, e->got.len, want.data, want.len,
           "one merged MGET reply in the client's key order, DEL's counts added, then ac: request order");
    ok(c->nqueued == 0 && c->ninflight == 0 && c->non == 0, "every part answered, nothing left in flight");

    /* --- the client goes with requests in flight: their late replies are dropped */
    e->got.len = e->got.rpos = 0;
    send_peer(e, GET("a6") GET("b6"));
    ok(WAIT_FOR(e, fake_holder(&e->fa, "a6") && fake_holder(&e->fb, "b6")), "a6 and b6 in flight");
    ev_io_stop(loop, &e->peer_w);
    close(e->peer);
    e->peer = -1;
    ok(WAIT_FOR(e, e->set.nclients == 0), "the client that hung up is freed with requests in flight");
    fake_release(&e->fa, "a6");
    fake_release(&e->fb, "b6");
    ok(WAIT_FOR(e, !fake_holder(&e->fa, "a6") && !fake_holder(&e->fb, "b6")), "A and B send their replies");
    ok(WAIT_FOR(e, pool_inflight(e->pool[0]) == 0 && pool_inflight(e->pool[1]) == 0 && pools_ready(e)),
       "which are read and dropped: nothing in flight, both pools still up");

    px_buf_free(&want);
    px_clients_free_all(&e->set);
    px_router_destroy(e->router);
    fake_stop(&e->fa);
    fake_stop(&e->fb);
    ev_prepare_stop(loop, &e->flush_w);
    ev_timer_stop(loop, &e->tick_w);
    ev_loop_destroy(loop);
    px_stats_free(&e->core.stats);
    px_config_free(&e->cfg);
    px_buf_free(&e->got);
    free(e);
    return exit_status();
}
