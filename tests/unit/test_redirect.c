/*
 * test_redirect: a client's request redirected by the Cluster topology
 * (a MOVED) moves its in-flight entry with it, without a Redis.  The test
 * runs the loop itself, with the real Cluster topology (px_cluster) whose
 * seed is fake upstream A (fake_upstream.h): A's CLUSTER SLOTS gives it every
 * slot, and A answers GETs of some hash tags with a MOVED to fake upstream B,
 * which holds every GET until the test releases it.  Pools have two shared
 * connections each, so a request has a connection to stray to.
 *
 * What px_client promises: on one pool a client keeps to one connection
 * until its requests there are answered, so the server sees its commands
 * in the order they were sent.  A request sent again on B after a MOVED
 * counts as in flight on B's connection, not A's: the client's next
 * command to B goes behind it on that connection; and a request redirected
 * to B while the client has others in flight there joins their connection.
 */
#include "proxy/px_client.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fake_upstream.h"
#include "proxy/px_cluster.h"
#include "proxy/px_command.h"
#include "proxy/px_config.h"
#include "proxy/px_core.h"
#include "proxy/px_router.h"
#include "proxy/px_split.h"
#include "tap.h"

#define WAIT_SECS 15.0

typedef struct env {
    px_config cfg;
    px_core core;
    px_router *router;
    px_clients set;
    ev_prepare flush_w;
    ev_timer tick_w;
    int peer;    /* the test's end of the client's socketpair */
    px_buf got;  /* what the client was sent */
    fake fa, fb;
} env;

#define WAIT_FOR(e, cond)                                                                       \
    ({                                                                                          \
        double dl_ = ev_time() + WAIT_SECS;                                                     \
        while (!(cond) && ev_time() < dl_) ev_run((e)->core.loop, EVRUN_ONCE);                  \
        !!(cond);                                                                               \
    })

/* As px_dispatch forwards a command: the pool the topology routes it to,
 * the client's connection there (a command for a pool whose earlier
 * requests are on another connection waits for them). */
static int dispatch(void *arg, px_client *c, const char *raw, size_t rawlen)
{
    env *e = arg;
    int argc = c->parser.argc < 8 ? c->parser.argc : 8;
    if (argc > c->argv_cap) {
        c->argv_cap = argc;
        c->argv = realloc(c->argv, sizeof(*c->argv) * (size_t)argc);
        c->argvlen = realloc(c->argvlen, sizeof(*c->argvlen) * (size_t)argc);
        if (!c->argv || !c->argvlen) abort();
    }
    const char **argv = c->argv;
    size_t *argvlen = c->argvlen;
    for (int i = 0; i < argc; i++) argv[i] = px_req_arg(&c->parser, raw, i, &argvlen[i]);
    const px_command *cmd = px_command_lookup(argv[0], argvlen[0], NULL, 0);
    /* keys of several slots (MGET): one command per master, as px_dispatch */
    int wait = 0;
    const char *serr = NULL;
    px_split_plan *sp = cmd ? px_split_plan_make(c, cmd, argc, NULL, &wait, &serr) : NULL;
    if (sp && wait) {
        px_split_plan_free(sp);
        return 0;
    }
    if (sp) {
        px_req *r = px_client_req_new(c);
        r->cmd = cmd;
        if (serr) {
            px_split_plan_free(sp);
            px_client_reply_error(r, "%s", serr);
        } else {
            px_split_send(sp, c, r, NULL);
        }
        return 1;
    }
    const char *why = NULL;
    px_route_args a = {cmd, argc, argv, argvlen, &why};
    px_pool *p = px_router_route(e->router, &a);
    px_upstream *u = p ? px_client_pick(c, p) : NULL;
    px_upstream *on = p ? px_client_inflight_on(c, p) : NULL;
    if (on && on != u) return 0;
    px_req *r = px_client_req_new(c);
    r->cmd = cmd;
    if (!u) {
        px_client_reply_error(r, "%s", why ? why : p ? px_pool_unavailable(p) : "no pool");
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
    env *e = w->data;
    (void)loop;
    (void)revents;
    px_router_cron(e->router, ev_now(e->core.loop));
}

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

/* The data pool for fake f, or NULL. */
static px_pool *pool_of(env *e, const fake *f)
{
    for (int i = 0; i < e->router->npools; i++)
        if (e->router->pools[i]->port == f->port) return e->router->pools[i];
    return NULL;
}

static int pool_ready(px_pool *p)
{
    if (!p) return 0;
    px_stats_pool v;
    px_pool_stats(p, &v);
    int ready = v.upstream_connections_ready == v.upstream_connections && v.upstream_inflight == 0;
    free(v.lane.v);
    return ready;
}

/* key's GET was read on the connection prev's was, right after it. */
static int read_after(fake *f, const char *prev, const char *key)
{
    fake_conn *c = fake_reader(f, key);
    if (!c || fake_reader(f, prev) != c) return 0;
    char pair[160];
    snprintf(pair, sizeof(pair), "%s %s ", prev, key);
    return strstr(c->gets, pair) != NULL;
}

static void bulk(px_buf *b, const char *key, const char *server)
{
    px_buf_appendf(b, "$%zu\r\n%s@%s\r\n", strlen(key) + 1 + strlen(server), key, server);
}

#define GET(k) "*2\r\n$3\r\nGET\r\n$4\r\n" k "\r\n"

/* p's shared connection the GET of key was read on (the fake's and the
 * pool's connections pair up by their local port), or NULL. */
static px_upstream *fake_conn_upstream(env *e, px_pool *p, const char *key)
{
    fake *f = p->port == e->fa.port ? &e->fa : &e->fb;
    fake_conn *fc = fake_reader(f, key);
    if (!fc) return NULL;
    struct sockaddr_storage peer;
    socklen_t plen = sizeof(peer);
    if (getpeername(fc->fd, (struct sockaddr *)&peer, &plen) != 0) return NULL;
    for (int i = 0; i < p->nlanes; i++)
        for (int j = 0; j < p->lanes[i]->nconns; j++) {
            px_upstream *u = &p->lanes[i]->conns[j];
            struct sockaddr_storage me;
            socklen_t mlen = sizeof(me);
            if (u->fd >= 0 && getsockname(u->fd, (struct sockaddr *)&me, &mlen) == 0 && mlen == plen &&
                !memcmp(&me, &peer, plen))
                return u;
        }
    return NULL;
}

int main(void)
{
    plan(20);
    signal(SIGPIPE, SIG_IGN);
    env *e = calloc(1, sizeof(*e));
    if (!e) abort();
    fake_core_init(&e->core, &e->cfg, 2);
    struct ev_loop *loop = e->core.loop;
    if (fake_start(&e->fa, loop, "A") != 0 || fake_start(&e->fb, loop, "B") != 0) {
        diag("cannot listen on loopback");
        return 1;
    }
    e->fa.auto_get = 1;
    unsigned st = px_cluster_keyslot("t", 1), su = px_cluster_keyslot("u", 1);
    char all_a[128], split[512], conf[64], err[256] = "";
    snprintf(all_a, sizeof(all_a), "*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$9\r\n127.0.0.1\r\n:%d\r\n", e->fa.port);
    /* slot {t} is B's; {u} stays A's in A's map, though A redirects it */
    snprintf(split, sizeof(split),
             "*3\r\n*3\r\n:0\r\n:%u\r\n*2\r\n$9\r\n127.0.0.1\r\n:%d\r\n"
             "*3\r\n:%u\r\n:%u\r\n*2\r\n$9\r\n127.0.0.1\r\n:%d\r\n"
             "*3\r\n:%u\r\n:16383\r\n*2\r\n$9\r\n127.0.0.1\r\n:%d\r\n",
             st - 1, e->fa.port, st, st, e->fb.port, st + 1, e->fa.port);
    e->fa.slots = all_a;
    snprintf(conf, sizeof(conf), "upstream 127.0.0.1:%d\ntopology cluster\n", e->fa.port);
    if (px_config_load_string(&e->cfg, conf, "t.conf", err, sizeof(err)) != 0) {
        diag("config: %s", err);
        return 1;
    }
    e->cfg.upstream_connections = 2;
    e->router = px_router_create(&e->core, &px_cluster_topology, err, sizeof(err));
    if (!e->router) {
        diag("router: %s", err);
        return 1;
    }
    e->set.core = &e->core;
    e->set.router = e->router;
    e->set.ops = &ops;
    e->set.ops_arg = e;
    ev_prepare_init(&e->flush_w, flush_cb);
    e->flush_w.data = e;
    ev_prepare_start(loop, &e->flush_w);
    ev_timer_init(&e->tick_w, tick_cb, 0.02, 0.02);
    e->tick_w.data = e;
    ev_timer_start(loop, &e->tick_w);
    px_router_start(e->router);

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        diag("socketpair failed");
        return 1;
    }
    fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
    fcntl(sv[1], F_SETFL, fcntl(sv[1], F_GETFL) | O_NONBLOCK);
    px_client *c = px_client_create(&e->set, sv[0], "test:1");
    e->peer = sv[1];

    ok(WAIT_FOR(e, pool_ready(pool_of(e, &e->fa))), "the map names A, whose pool connects");

    /* --- slot {t} moved to B: A's map says so now, A redirects its keys */
    e->fa.slots = split;
    snprintf(e->fa.moved[0].prefix, sizeof(e->fa.moved[0].prefix), "{t}");
    snprintf(e->fa.moved[0].reply, sizeof(e->fa.moved[0].reply), "-MOVED %u 127.0.0.1:%d\r\n", st, e->fb.port);
    snprintf(e->fa.moved[1].prefix, sizeof(e->fa.moved[1].prefix), "{u}");
    snprintf(e->fa.moved[1].reply, sizeof(e->fa.moved[1].reply), "-MOVED %u 127.0.0.1:%d\r\n", su, e->fb.port);
    send_peer(e, GET("{t}1"));
    ok(WAIT_FOR(e, fake_holder(&e->fb, "{t}1") != NULL), "GET {t}1: A's MOVED sends it to B, which holds it");
    px_pool *pa = pool_of(e, &e->fa), *pb = pool_of(e, &e->fb);
    ok(pb != NULL, "the MOVED made a pool for B");
    ok(px_client_inflight_on(c, pa) == NULL, "the client counts nothing in flight on A any more");
    ok(pb && px_client_inflight_on(c, pb) != NULL && c->ninflight == 1,
       "... but {t}1 in flight on a connection of B (one request in flight)");
    /* B's connections both up: the next GET would go to the idler one if the
     * client did not keep to {t}1's */
    WAIT_FOR(e, pb && pb->nlanes && pb->lanes[0]->conns[0].state == PX_UP_READY &&
                    pb->lanes[0]->conns[1].state == PX_UP_READY);
    send_peer(e, GET("{t}2"));
    ok(WAIT_FOR(e, fake_holder(&e->fb, "{t}2") != NULL), "GET {t}2 goes straight to B (the MOVED updated the map)");
    ok(read_after(&e->fb, "{t}1", "{t}2"), "B read {t}2 on {t}1's connection, right after it (%s)",
       fake_reader(&e->fb, "{t}2") ? fake_reader(&e->fb, "{t}2")->gets : "none");
    fake_release(&e->fb, "{t}2");
    fake_release(&e->fb, "{t}1");
    px_buf want = {0};
    bulk(&want, "{t}1", "B");
    bulk(&want, "{t}2", "B");
    WAIT_FOR(e, (drain_peer(e), e->got.len >= want.len) && c->ninflight == 0);
    is_mem(e->got.data, e->got.len, want.data, want.len, "the client reads {t}1's reply, then {t}2's");
    ok(c->ninflight == 0 && c->non == 0, "nothing counted in flight afterwards");

    /* --- redirected to B while the client has a request in flight there */
    e->got.len = e->got.rpos = 0;
    px_buf_clear(&want, 0);
    send_peer(e, GET("{t}3") GET("{u}1"));
    ok(WAIT_FOR(e, fake_holder(&e->fb, "{t}3") && fake_holder(&e->fb, "{u}1")),
       "GET {t}3 on B, GET {u}1 redirected by A to B: B holds both");
    ok(read_after(&e->fb, "{t}3", "{u}1"), "{u}1 joined the connection {t}3 is on (%s)",
       fake_reader(&e->fb, "{u}1") ? fake_reader(&e->fb, "{u}1")->gets : "none");
    ok(px_client_inflight_on(c, pa) == NULL && c->non == 1 && c->ninflight == 2,
       "the client counts both on that one connection of B");
    fake_release(&e->fb, "{u}1");
    fake_release(&e->fb, "{t}3");
    bulk(&want, "{t}3", "B");
    bulk(&want, "{u}1", "B");
    WAIT_FOR(e, (drain_peer(e), e->got.len >= want.len) && c->ninflight == 0);
    is_mem(e->got.data, e->got.len, want.data, want.len, "the client reads {t}3's reply, then {u}1's");
    ok(c->ninflight == 0 && c->non == 0, "nothing counted in flight afterwards");

    /* --- a part of a split MGET redirected: {u}'s slot is A's again in the
     * map read since, and A still sends it to B */
    e->got.len = e->got.rpos = 0;
    px_buf_clear(&want, 0);
    ok(WAIT_FOR(e, px_router_shard_pool(e->router, (int)su) == pa), "the map read after the MOVED gives {u} back to A");
    e->fa.auto_get = 0;
    send_peer(e, GET("{t}4") "*3\r\n$4\r\nMGET\r\n$4\r\n{u}2\r\n$4\r\n{v}1\r\n");
    ok(WAIT_FOR(e, fake_holder(&e->fb, "{t}4") && fake_holder(&e->fb, "{u}2") && fake_holder(&e->fa, "{v}1")),
       "GET {t}4 on B; MGET {u}2 {v}1 split: {v}1's part on A, {u}2's redirected by A to B");
    ok(read_after(&e->fb, "{t}4", "{u}2"), "{u}2's part joined the connection {t}4 is on (%s)",
       fake_reader(&e->fb, "{u}2") ? fake_reader(&e->fb, "{u}2")->gets : "none");
    ok(c->non == 2 && px_client_inflight_on(c, pb) == fake_conn_upstream(e, pb, "{t}4"),
       "the client counts one connection of B and one of A");
    fake_release(&e->fb, "{u}2");
    fake_release(&e->fb, "{t}4");
    fake_release(&e->fa, "{v}1");
    bulk(&want, "{t}4", "B");
    px_buf_appendf(&want, "*2\r\n");
    bulk(&want, "{u}2", "B");
    bulk(&want, "{v}1", "A");
    WAIT_FOR(e, (drain_peer(e), e->got.len >= want.len) && c->ninflight == 0);
    is_mem(e->got.data, e->got.len, want.data, want.len, "the client reads {t}4's reply, then the MGET's merged");
    ok(c->ninflight == 0 && c->non == 0, "nothing counted in flight afterwards");

    px_buf_free(&want);
    px_buf_free(&e->got);
    close(e->peer);
    px_clients_free_all(&e->set);
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
