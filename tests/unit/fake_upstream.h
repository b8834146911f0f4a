/*
 * fake_upstream.h: a Redis stand-in for the unit tests that drive the
 * upstream side through a real loop (test_client_order, test_repoint).
 * Header-only, like tap.h.
 *
 * A fake listens on a loopback port and serves on the test's own event loop,
 * so there is no process to start or kill.  It reads RESP commands with
 * px_req_parse and answers everything but GET at once with a reply the
 * handshake accepts (INFO: a server section, CONFIG GET: databases 16,
 * CLIENT ID: an integer, RESET: +RESET, DEL: the number of its keys,
 * CLUSTER: the map the test set, if any, others +OK).  A GET's reply ("$n\r\n<key>@<fake>\r\n"), or an MGET's (an array of
 * those, held under its first key) is held until the test releases it, unless the
 * fake answers GETs at once (auto_get), or the key's prefix has a redirect
 * set (moved: a -MOVED the test wrote, answered at once).  As Redis, one connection answers
 * in the order it was asked: a reply ready behind a held GET waits for it.
 *
 * What it saw is kept for the test: per connection, the GETs' keys in the
 * order they came ("a1 a2 "), whether the peer closed it; per fake, the
 * GETs held now.
 */
#ifndef HP_FAKE_UPSTREAM_H
#define HP_FAKE_UPSTREAM_H

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/px_buf.h"
#include "proxy/px_core.h"
#include "proxy/px_resp.h"

/* A core for a test that drives the upstream side on its own loop: cfg's
 * defaults with conns shared connections per lane, nothing logged (stdout
 * is TAP). */
static inline void fake_core_init(px_core *k, px_config *cfg, int conns)
{
    px_config_init(cfg);
    cfg->upstream_connections = conns;
    k->loop = ev_loop_new(0);
    k->cfg = cfg;
    k->log.level = 99;
    k->log.fd = -1;
    px_stats_init(&k->stats);
    k->start_time = ev_now(k->loop);
}

typedef struct fake_entry {
    struct fake_entry *next;
    char key[64];  /* a GET's key; "" for any other command */
    int ready;     /* its reply may be written once everything before it is */
    px_buf reply;
} fake_entry;

typedef struct fake_conn {
    struct fake *f;
    struct fake_conn *next;
    int id;           /* 1, 2, ... in accept order */
    int fd;           /* -1 once closed */
    int peer_closed;  /* the proxy closed it (read returned 0) */
    ev_io rw;
    px_buf in;
    px_req_parser parser;
    fake_entry *head, *tail; /* commands not answered yet, oldest first */
    char gets[512];   /* keys of the GETs read on it, in order, each followed by a space */
} fake_conn;

typedef struct fake {
    const char *name; /* "A": its GET replies say so */
    struct ev_loop *loop;
    int lfd, port;
    ev_io aw;
    fake_conn *conns; /* every connection accepted, newest first */
    int naccepted, nopen;
    int auto_get;     /* answer GETs at once */
    long ngets;       /* GETs read */
    long long next_client_id;
    const char *slots; /* CLUSTER's reply (a CLUSTER SLOTS map), when set; else +OK */
    struct {           /* GETs (MGETs: by the first key) of keys starting with prefix get reply ("-MOVED ...\r\n") at once */
        char prefix[16];
        char reply[96];
    } moved[2];
} fake;

/* Write the ready replies at the head of c's queue, in order. */
static inline void fake_conn_write(fake_conn *c)
{
    while (c->head && c->head->ready) {
        fake_entry *e = c->head;
        const char *p = px_buf_start(&e->reply);
        size_t n = px_buf_used(&e->reply);
        while (c->fd >= 0 && n > 0) {
            /* replies are small and the proxy reads all the time: a blocking
             * write of the rest is fine here */
            ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL); /* a closed peer: EPIPE, no signal */
            if (w > 0) {
                p += w;
                n -= (size_t)w;
            } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
                continue;
            } else {
                break;
            }
        }
        c->head = e->next;
        if (!c->head) c->tail = NULL;
        px_buf_free(&e->reply);
        free(e);
    }
}

static inline void fake_conn_close(fake_conn *c)
{
    if (c->fd < 0) return;
    ev_io_stop(c->f->loop, &c->rw);
    close(c->fd);
    c->fd = -1;
    c->f->nopen--;
    while (c->head) {
        fake_entry *e = c->head;
        c->head = e->next;
        px_buf_free(&e->reply);
        free(e);
    }
    c->tail = NULL;
}

static inline void fake_answer(fake_conn *c, const char *const *argv, const size_t *argvlen, int argc)
{
    fake *f = c->f;
    fake_entry *e = calloc(1, sizeof(*e));
    if (!e) abort();
    const char *cmd = argv[0];
    size_t clen = argvlen[0];
#define FAKE_IS(name) (clen == strlen(name) && !strncasecmp(cmd, name, clen))
    if (FAKE_IS("GET") && argc == 2) {
        snprintf(e->key, sizeof(e->key), "%.*s", (int)argvlen[1], argv[1]);
        size_t used = strlen(c->gets);
        snprintf(c->gets + used, sizeof(c->gets) - used, "%s ", e->key);
        f->ngets++;
        px_buf_appendf(&e->reply, "$%zu\r\n%s@%s\r\n", strlen(e->key) + 1 + strlen(f->name), e->key, f->name);
        e->ready = f->auto_get;
        for (int i = 0; i < 2; i++)
            if (f->moved[i].prefix[0] && !strncmp(e->key, f->moved[i].prefix, strlen(f->moved[i].prefix))) {
                px_buf_clear(&e->reply, 0);
                px_buf_appendf(&e->reply, "%s", f->moved[i].reply);
                e->ready = 1;
            }
    } else if (FAKE_IS("MGET") && argc >= 2) {
        /* held under its first key, as a GET; each key's value says the fake */
        snprintf(e->key, sizeof(e->key), "%.*s", (int)argvlen[1], argv[1]);
        px_buf_appendf(&e->reply, "*%d\r\n", argc - 1);
        for (int i = 1; i < argc; i++) {
            size_t used = strlen(c->gets);
            snprintf(c->gets + used, sizeof(c->gets) - used, "%.*s ", (int)argvlen[i], argv[i]);
            px_buf_appendf(&e->reply, "$%zu\r\n%.*s@%s\r\n", argvlen[i] + 1 + strlen(f->name), (int)argvlen[i],
                           argv[i], f->name);
        }
        f->ngets++;
        e->ready = f->auto_get;
        for (int i = 0; i < 2; i++)
            if (f->moved[i].prefix[0] && !strncmp(e->key, f->moved[i].prefix, strlen(f->moved[i].prefix))) {
                px_buf_clear(&e->reply, 0);
                px_buf_appendf(&e->reply, "%s", f->moved[i].reply);
                e->ready = 1;
            }
    } else if (FAKE_IS("DEL")) {
        px_buf_appendf(&e->reply, ":%d\r\n", argc - 1); /* every key existed */
        e->ready = 1;
    } else {
        if (FAKE_IS("INFO")) {
            char text[128];
            snprintf(text, sizeof(text), "# Server\r\nredis_version:7.0.15-fake-%s\r\n", f->name);
            px_buf_appendf(&e->reply, "$%zu\r\n%s\r\n", strlen(text), text);
        } else if (FAKE_IS("CONFIG")) {
            px_buf_appendf(&e->reply, "*2\r\n$9\r\ndatabases\r\n$2\r\n16\r\n");
        } else if (FAKE_IS("CLIENT")) {
            px_buf_appendf(&e->reply, ":%lld\r\n", ++f->next_client_id);
        } else if (FAKE_IS("CLUSTER") && f->slots) {
            px_buf_appendf(&e->reply, "%s", f->slots);
        } else if (FAKE_IS("RESET")) {
            px_buf_appendf(&e->reply, "+RESET\r\n");
        } else {
            px_buf_appendf(&e->reply, "+OK\r\n");
        }
        e->ready = 1;
    }
#undef FAKE_IS
    if (c->tail) c->tail->next = e;
    else c->head = e;
    c->tail = e;
    fake_conn_write(c);
}

static inline void fake_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    fake_conn *c = w->data;
    (void)loop;
    (void)revents;
    char *p = px_buf_reserve(&c->in, 16384);
    ssize_t n = read(c->fd, p, 16384);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        c->peer_closed = 1;
        fake_conn_close(c);
        return;
    }
    if (n < 0) return;
    c->in.len += (size_t)n;
    while (c->fd >= 0 && px_buf_used(&c->in)) {
        const char *start = px_buf_start(&c->in);
        int rc = px_req_parse(&c->parser, start, px_buf_used(&c->in));
        if (rc == PX_AGAIN) break;
        if (rc == PX_ERR) { /* the proxy sent something that is not RESP: hang up on it */
            fake_conn_close(c);
            return;
        }
        const char *argv[8];
        size_t argvlen[8];
        int argc = c->parser.argc < 8 ? c->parser.argc : 8;
        for (int i = 0; i < argc; i++) argv[i] = px_req_arg(&c->parser, start, i, &argvlen[i]);
        size_t used = c->parser.pos;
        if (argc > 0) fake_answer(c, argv, argvlen, argc);
        px_buf_consume(&c->in, used);
        px_req_parser_reset(&c->parser);
    }
}

static inline void fake_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    fake *f = w->data;
    (void)revents;
    int fd = accept4(f->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    fake_conn *c = calloc(1, sizeof(*c));
    if (!c) abort();
    c->f = f;
    c->fd = fd;
    c->id = ++f->naccepted;
    f->nopen++;
    px_req_parser_init(&c->parser, 512LL * 1024 * 1024);
    ev_io_init(&c->rw, fake_read_cb, fd, EV_READ);
    c->rw.data = c;
    ev_io_start(loop, &c->rw);
    c->next = f->conns;
    f->conns = c;
}

/* Listen on a free loopback port and serve on loop; -1 if it cannot. */
static inline int fake_start(fake *f, struct ev_loop *loop, const char *name)
{
    struct sockaddr_in a;
    socklen_t alen = sizeof(a);
    memset(f, 0, sizeof(*f));
    f->name = name;
    f->loop = loop;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (f->lfd < 0 || bind(f->lfd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(f->lfd, 64) != 0 ||
        getsockname(f->lfd, (struct sockaddr *)&a, &alen) != 0)
        return -1;
    f->port = ntohs(a.sin_port);
    ev_io_init(&f->aw, fake_accept_cb, f->lfd, EV_READ);
    f->aw.data = f;
    ev_io_start(loop, &f->aw);
    return 0;
}

static inline void fake_stop(fake *f)
{
    ev_io_stop(f->loop, &f->aw);
    close(f->lfd);
    while (f->conns) {
        fake_conn *c = f->conns;
        f->conns = c->next;
        fake_conn_close(c);
        px_buf_free(&c->in);
        px_req_parser_free(&c->parser);
        free(c);
    }
}

/* The open connection holding key's GET unanswered, or NULL. */
static inline fake_conn *fake_holder(fake *f, const char *key)
{
    for (fake_conn *c = f->conns; c; c = c->next)
        for (fake_entry *e = c->head; c->fd >= 0 && e; e = e->next)
            if (!e->ready && !strcmp(e->key, key)) return c;
    return NULL;
}

/* The connection key's GET was read on (answered or not), or NULL. */
static inline fake_conn *fake_reader(fake *f, const char *key)
{
    char word[80];
    snprintf(word, sizeof(word), "%s ", key);
    for (fake_conn *c = f->conns; c; c = c->next) {
        const char *g = c->gets;
        for (const char *s = strstr(g, word); s; s = strstr(s + 1, word))
            if (s == g || s[-1] == ' ') return c;
    }
    return NULL;
}

/* GETs held unanswered now, on every open connection. */
static inline int fake_nheld(fake *f)
{
    int n = 0;
    for (fake_conn *c = f->conns; c; c = c->next)
        for (fake_entry *e = c->head; c->fd >= 0 && e; e = e->next) n += !e->ready;
    return n;
}

/* Let key's held GET be answered (after what its connection holds before
 * it); 0 if no GET for key is held. */
static inline int fake_release(fake *f, const char *key)
{
    fake_conn *c = fake_holder(f, key);
    if (!c) return 0;
    for (fake_entry *e = c->head; e; e = e->next)
        if (!e->ready && !strcmp(e->key, key)) {
            e->ready = 1;
            break;
        }
    fake_conn_write(c);
    return 1;
}

#endif
