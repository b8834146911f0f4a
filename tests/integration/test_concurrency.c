/*
 * test_concurrency: many clients at once each get exactly their own replies.
 *
 * 1,000 connections are open at the same time; each sends a pipeline of SET /
 * GET / INCR / ECHO on keys and values tagged with its id, in two halves so
 * the proxy interleaves them, and must read back exactly the bytes its own
 * commands call for: a reply routed to the wrong client, lost, duplicated or
 * reordered shows as a byte difference.  Then clients that vanish with
 * replies still pending, and the proxy must carry on.
 */
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "tap.h"

#define NCLIENTS 1000
#define NCMDS 20

static hx_proc redis, proxy;

typedef struct client {
    int fd;
    hx_buf req[2];   /* the two halves of its pipeline */
    hx_buf want;     /* the exact reply bytes */
    hx_buf got;
    int done;        /* 1 complete, -1 closed early */
} client;

static void build(client *c, int id)
{
    char key[64], val[128], ctr[64], echo[64];
    snprintf(ctr, sizeof(ctr), "cc:%d:n", id);
    for (int j = 0; j < NCMDS; j++) {
        hx_buf *b = &c->req[j < NCMDS / 2 ? 0 : 1];
        snprintf(key, sizeof(key), "cc:%d:%d", id, j / 4);
        /* values differ in length between clients, so a reply landing at
         * the wrong client also breaks the framing */
        int vl = snprintf(val, sizeof(val), "v-%d-%d-%.*s", id, j, id % 50, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
        switch (j % 4) {
        case 0: {
            const char *argv[] = {"SET", key, val};
            hx_buf_command(b, 3, argv, NULL);
            hx_buf_printf(&c->want, "+OK\r\n");
            break;
        }
        case 1: {
            const char *argv[] = {"GET", key};
            hx_buf_command(b, 2, argv, NULL);
            /* the value SET one command earlier */
            vl = snprintf(val, sizeof(val), "v-%d-%d-%.*s", id, j - 1, id % 50,
                          "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
            hx_buf_printf(&c->want, "$%d\r\n%s\r\n", vl, val);
            break;
        }
        case 2: {
            const char *argv[] = {"INCR", ctr};
            hx_buf_command(b, 2, argv, NULL);
            hx_buf_printf(&c->want, ":%d\r\n", j / 4 + 1);
            break;
        }
        default: {
            int el = snprintf(echo, sizeof(echo), "client %d command %d", id, j);
            const char *argv[] = {"ECHO", echo};
            hx_buf_command(b, 2, argv, NULL);
            hx_buf_printf(&c->want, "$%d\r\n%s\r\n", el, echo);
            break;
        }
        }
    }
}

/* Read from every client until each has its bytes (or closed); bounded. */
static void read_all(client *cl, int n, int timeout_ms)
{
    struct pollfd *pfd = calloc((size_t)n, sizeof(*pfd));
    int *idx = calloc((size_t)n, sizeof(int));
    double deadline = hx_now() + timeout_ms / 1000.0;
    while (hx_now() < deadline) {
        int np = 0;
        for (int i = 0; i < n; i++)
            if (!cl[i].done) {
                pfd[np].fd = cl[i].fd;
                pfd[np].events = POLLIN;
                pfd[np].revents = 0;
                idx[np++] = i;
            }
        if (!np) break;
        if (poll(pfd, (nfds_t)np, 200) <= 0) continue;
        for (int k = 0; k < np; k++) {
            if (!pfd[k].revents) continue;
            client *c = &cl[idx[k]];
            int st = hx_read_n(c->fd, &c->got, 1 << 30, 0);
            if (st == HX_EOF || st == HX_RESET || st == HX_ERROR) c->done = -1;
            else if (c->got.len >= c->want.len) c->done = 1;
        }
    }
    free(pfd);
    free(idx);
}

static void thousand_clients(void)
{
    client *cl = calloc(NCLIENTS, sizeof(client));
    int connected = 0;
    for (int i = 0; i < NCLIENTS; i++) {
        build(&cl[i], i);
        cl[i].fd = hx_connect(proxy.port);
        connected += cl[i].fd >= 0;
    }
    is_int(connected, NCLIENTS, "%d clients connect at once", NCLIENTS);
    if (connected != NCLIENTS) goto out;

    /* first halves, then second halves: the proxy sees them interleaved */
    int sent = 0;
    for (int half = 0; half < 2; half++)
        for (int i = 0; i < NCLIENTS; i++)
            sent += hx_send(cl[i].fd, cl[i].req[half].data, cl[i].req[half].len, 10000) == 0;
    is_int(sent, 2 * NCLIENTS, "every client sends its pipeline of %d commands", NCMDS);

    double t0 = hx_now();
    read_all(cl, NCLIENTS, 60000);
    int exact = 0, closed = 0, shown = 0;
    for (int i = 0; i < NCLIENTS; i++) {
        client *c = &cl[i];
        if (c->done < 0) closed++;
        if (c->got.len == c->want.len && !memcmp(c->got.data, c->want.data, c->want.len)) {
            exact++;
        } else if (shown++ < 3) {
            diag("client %d: %zu bytes, want %zu", i, c->got.len, c->want.len);
            fputs("#   got  '", stdout);
            tap_escape(c->got.data, c->got.len);
            fputs("'\n#   want '", stdout);
            tap_escape(c->want.data, c->want.len);
            fputs("'\n", stdout);
        }
    }
    diag("all replies read in %.2f s", hx_now() - t0);
    is_int(exact, NCLIENTS, "every client received exactly its own replies, in order");
    is_int(closed, 0, "no client was disconnected");

    const char *n = hx_info_field(proxy.port, "hotproxy", "hotproxy_connected_clients");
    is_str(n, "1001", "INFO counts the 1,000 clients and the one asking");

out:
    for (int i = 0; i < NCLIENTS; i++) {
        if (cl[i].fd >= 0) close(cl[i].fd);
        hx_buf_free(&cl[i].req[0]);
        hx_buf_free(&cl[i].req[1]);
        hx_buf_free(&cl[i].want);
        hx_buf_free(&cl[i].got);
    }
    free(cl);

    /* the proxy lets go of closed clients */
    const char *left = NULL;
    double deadline = hx_now() + 10;
    while (hx_now() < deadline) {
        left = hx_info_field(proxy.port, "hotproxy", "hotproxy_connected_clients");
        if (left && !strcmp(left, "1")) break;
        hx_sleep_ms(50);
    }
    is_str(left, "1", "after they all close, INFO counts only the one asking");
}

/* Clients that send work and go away without reading the replies (100 MB
 * of replies in all: Redis must still send them, and a much larger backlog
 * would make later commands wait past upstream-timeout). */
static void vanishing_clients(void)
{
    redisContext *c = hx_redis(proxy.port);
    char *v = malloc(1000);
    memset(v, 'z', 1000);
    redisReply *r = c ? redisCommand(c, "SET cc:big %b", v, (size_t)1000) : NULL;
    if (r) freeReplyObject(r);
    free(v);
    hx_buf req = {0};
    for (int j = 0; j < 200; j++) {
        const char *argv[] = {"GET", "cc:big"};
        hx_buf_command(&req, 2, argv, NULL);
        const char *argv2[] = {"INCR", "cc:vanish"};
        hx_buf_command(&req, 2, argv2, NULL);
    }
    int sent = 0;
    for (int round = 0; round < 5; round++) {
        int fds[100];
        for (int i = 0; i < 100; i++) {
            fds[i] = hx_connect(proxy.port);
            if (fds[i] >= 0 && hx_send(fds[i], req.data, req.len, 5000) == 0) sent++;
        }
        /* half close at once, half after a moment, none read */
        for (int i = 0; i < 50; i++)
            if (fds[i] >= 0) close(fds[i]);
        hx_sleep_ms(20);
        for (int i = 50; i < 100; i++)
            if (fds[i] >= 0) close(fds[i]);
    }
    is_int(sent, 500, "500 clients send 400 commands each and close without reading");
    hx_buf_free(&req);

    /* Every INCR either ran or never reached Redis; the proxy keeps going. */
    is_str(hx_cmd(c, "PING"), "PONG", "hotproxy still answers PING");
    is_str(hx_cmd(c, "SET cc:after ok"), "OK", "... and forwards SET");
    is_str(hx_cmd(c, "GET cc:after"), "ok", "... and GET");
    redisContext *c2 = hx_redis(proxy.port);
    is_str(hx_cmd(c2, "ECHO fresh"), "fresh", "a new client is served");
    if (c2) redisFree(c2);
    if (c) redisFree(c);
}

int main(void)
{
    hx_init(280);
    plan(12);
    if (hx_redis_start(&redis, 0) != 0 || hx_proxy_start(&proxy, 0, redis.port, NULL) != 0) {
        ok(0, "redis-server and hotproxy start");
        return exit_status();
    }
    thousand_clients();
    vanishing_clients();
    is_int(hx_stop(&proxy, 15000), 0, "hotproxy exits 0 on SIGTERM");
    hx_stop(&redis, 10000);
    return exit_status();
}
