/*
 * test_pipeline: long pipelines keep every reply, in order, intact.
 *
 * A 100,000-command pipeline through hiredis with every reply checked; the
 * same kind of pipeline written as one buffer over a raw socket, its replies
 * compared byte for byte with what Redis answers to the same bytes sent
 * directly; and smaller pipelines written one byte at a time and in random
 * pieces, so hotproxy's parser resumes at every possible point.  Local
 * commands (PING, ECHO) and inline commands are mixed in: their replies
 * must wait their turn behind forwarded ones.
 *
 * HOTPROXY_SEED fixes the random splits; the seed used is printed.
 */
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "tap.h"

static hx_proc redis, proxy;

static void hiredis_pipeline(int n)
{
    redisContext *c = hx_redis(proxy.port);
    if (!c) {
        ok(0, "hiredis connects");
        return;
    }
    char key[64], val[64];
    for (int i = 0; i < n; i++) {
        switch (i % 3) {
        case 0:
            snprintf(key, sizeof(key), "hp:%d", i);
            snprintf(val, sizeof(val), "value-%d", i);
            redisAppendCommand(c, "SET %s %s", key, val);
            break;
        case 1:
            snprintf(key, sizeof(key), "hp:%d", i - 1);
            redisAppendCommand(c, "GET %s", key);
            break;
        default:
            redisAppendCommand(c, "INCR hp:counter");
            break;
        }
    }
    int bad = 0, got = 0;
    for (int i = 0; i < n; i++) {
        redisReply *r = NULL;
        if (redisGetReply(c, (void **)&r) != REDIS_OK || !r) {
            diag("reply %d: %s", i, c->errstr);
            break;
        }
        got++;
        int good;
        switch (i % 3) {
        case 0: good = r->type == REDIS_REPLY_STATUS && !strcmp(r->str, "OK"); break;
        case 1:
            snprintf(val, sizeof(val), "value-%d", i - 1);
            good = r->type == REDIS_REPLY_STRING && !strcmp(r->str, val);
            break;
        default: good = r->type == REDIS_REPLY_INTEGER && r->integer == i / 3 + 1; break;
        }
        if (!good && bad++ < 5)
            diag("reply %d (type %d) is wrong: '%s' / %lld", i, r->type, r->str ? r->str : "", r->integer);
        freeReplyObject(r);
    }
    is_int(got, n, "hiredis: %d pipelined commands get %d replies", n, n);
    is_int(bad, 0, "hiredis: every reply is the right one, in order");
    redisFree(c);
}

/* One command = one reply.  The key prefix separates the two targets. */
static int gen_pipeline(hx_buf *b, const char *pfx, int n, int with_inline, int big_every)
{
    char key[64], key2[64], val[32];
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "%s:k%d", pfx, i % 50);
        snprintf(key2, sizeof(key2), "%s:k%d", pfx, (i + 7) % 50);
        switch (i % 8) {
        case 0:
            if (big_every && i % big_every == 0) {
                /* a value larger than a read chunk, crossing buffer edges */
                size_t len = 20000 + (size_t)(i % 5000);
                char *v = malloc(len);
                for (size_t j = 0; j < len; j++) v[j] = (char)('a' + (i + j) % 26);
                const char *argv[] = {"SET", key, v};
                size_t argvlen[] = {3, strlen(key), len};
                hx_buf_command(b, 3, argv, argvlen);
                free(v);
            } else {
                int vl = snprintf(val, sizeof(val), "v%d\r\n", i);
                memcpy(val + vl, "\0x", 2); /* binary: CR LF NUL inside the value */
                const char *argv[] = {"SET", key, val};
                size_t argvlen[] = {3, strlen(key), (size_t)vl + 2};
                hx_buf_command(b, 3, argv, argvlen);
            }
            break;
        case 1: {
            const char *argv[] = {"GET", key};
            hx_buf_command(b, 2, argv, NULL);
            break;
        }
        case 2: {
            char ctr[64];
            snprintf(ctr, sizeof(ctr), "%s:ctr", pfx);
            const char *argv[] = {"INCR", ctr};
            hx_buf_command(b, 2, argv, NULL);
            break;
        }
        case 3:
            if (with_inline) {
                hx_buf_printf(b, "PING\r\n");
            } else {
                const char *argv[] = {"PING"};
                hx_buf_command(b, 1, argv, NULL);
            }
            break;
        case 4: {
            snprintf(val, sizeof(val), "e%d", i);
            const char *argv[] = {"ECHO", val};
            hx_buf_command(b, 2, argv, NULL);
            break;
        }
        case 5: {
            const char *argv[] = {"APPEND", key2, "+"};
            hx_buf_command(b, 3, argv, NULL);
            break;
        }
        case 6: {
            const char *argv[] = {"MGET", key, key2, "nosuchkey"};
            hx_buf_command(b, 4, argv, NULL);
            break;
        }
        default:
            if (with_inline) {
                hx_buf_printf(b, "STRLEN %s\n", key);
            } else {
                const char *argv[] = {"STRLEN", key};
                hx_buf_command(b, 2, argv, NULL);
            }
            break;
        }
    }
    return n;
}

static void compare(const hx_buf *p, const hx_buf *d, const char *what)
{
    if (!ok(hx_mem_eq(p->data, p->len, d->data, d->len), "%s: replies byte-identical to Redis' (%zu bytes)",
            what, d->len)) {
        size_t i = 0;
        while (i < p->len && i < d->len && p->data[i] == d->data[i]) i++;
        diag("  lengths %zu (hotproxy) vs %zu (redis); first difference at byte %zu", p->len, d->len, i);
        size_t from = i > 40 ? i - 40 : 0;
        fputs("#   hotproxy '", stdout);
        tap_escape(p->data + from, p->len > from ? (p->len - from < 120 ? p->len - from : 120) : 0);
        fputs("'\n#   redis    '", stdout);
        tap_escape(d->data + from, d->len > from ? (d->len - from < 120 ? d->len - from : 120) : 0);
        fputs("'\n", stdout);
    }
}

/* The pipeline sent to Redis directly, in one piece: the reference. */
static int reference(const char *pfx, int n, int with_inline, int big_every, hx_buf *out)
{
    hx_buf req = {0};
    gen_pipeline(&req, pfx, n, with_inline, big_every);
    long got = 0;
    int fd = hx_connect(redis.port);
    int st = hx_exchange(fd, req.data, req.len, n, out, &got, 60000);
    close(fd);
    hx_buf_free(&req);
    if (st != HX_OK || got != n) diag("reference from Redis: %ld of %d replies (%s)", got, n, hx_status_name(st));
    return st == HX_OK && got == n ? 0 : -1;
}

static void raw_pipeline(int n)
{
    hx_buf req = {0}, p = {0}, d = {0};
    ok(reference("rawD", n, 1, 1000, &d) == 0, "Redis answers the %d-command reference pipeline", n);
    gen_pipeline(&req, "rawP", n, 1, 1000);
    long got = 0;
    int fd = hx_connect(proxy.port);
    double t0 = hx_now();
    int st = hx_exchange(fd, req.data, req.len, n, &p, &got, 120000);
    diag("%d commands, %zu bytes in one buffer: %.2f s through hotproxy", n, req.len, hx_now() - t0);
    is_int(got, n, "raw socket: %d replies to %d commands (%s)", (int)got, n, hx_status_name(st));
    compare(&p, &d, "raw socket pipeline");
    /* and nothing more arrives */
    hx_buf extra = {0};
    int est = hx_read_n(fd, &extra, 1, 200);
    ok(est == HX_TIMEOUT && extra.len == 0, "no extra bytes after the last reply (%s, %zu bytes)",
       hx_status_name(est), extra.len);
    hx_buf_free(&extra);
    close(fd);
    hx_buf_free(&req);
    hx_buf_free(&p);
    hx_buf_free(&d);
}

/* Send req in pieces of 1..maxpiece bytes (maxpiece 1: byte by byte),
 * pausing now and then so hotproxy reads the pieces separately. */
static void split_pipeline(const char *tag, int n, size_t maxpiece, int big_every)
{
    hx_buf req = {0}, p = {0}, d = {0};
    char pfx[32];
    snprintf(pfx, sizeof(pfx), "%sD", tag);
    ok(reference(pfx, n, 1, big_every, &d) == 0, "%s: Redis answers the reference pipeline", tag);
    snprintf(pfx, sizeof(pfx), "%sP", tag);
    gen_pipeline(&req, pfx, n, 1, big_every);

    int fd = hx_connect(proxy.port);
    size_t off = 0;
    int pieces = 0, failed = 0;
    double t0 = hx_now();
    while (off < req.len && !failed) {
        size_t piece = maxpiece == 1 ? 1 : 1 + (size_t)rand() % maxpiece;
        if (piece > req.len - off) piece = req.len - off;
        failed = hx_send(fd, req.data + off, piece, 10000) != 0;
        off += piece;
        pieces++;
        if (maxpiece == 1 || rand() % 4 == 0) usleep(100);
        /* read as we go: replies must not wait for the rest */
        if (pieces % 64 == 0) hx_read_n(fd, &p, 1 << 30, 0);
    }
    ok(!failed, "%s: %zu bytes sent in %d pieces (%.1f s)", tag, req.len, pieces, hx_now() - t0);
    long got = hx_count_replies(p.data, p.len, NULL);
    long more = 0;
    int st = got < n ? hx_read_replies(fd, &p, n - got, &more, 30000) : HX_OK;
    is_int(got + more, n, "%s: %d replies (%s)", tag, n, hx_status_name(st));
    compare(&p, &d, tag);
    close(fd);
    hx_buf_free(&req);
    hx_buf_free(&p);
    hx_buf_free(&d);
}

/* Several clients pipelining at once through one upstream connection that
 * takes one command at a time: hotproxy pauses and resumes reading each
 * client constantly, and every client's replies must still be its own. */
static void tight_limits(int nclients, int n)
{
    hx_proc tight;
    if (hx_proxy_start(&tight, 0, redis.port, "--upstream-connections", "1", "--upstream-max-inflight", "1",
                       NULL) != 0) {
        ok(0, "hotproxy --upstream-connections 1 --upstream-max-inflight 1 starts");
        return;
    }
    hx_buf req[8] = {{0}}, want[8] = {{0}}, got[8] = {{0}};
    size_t sent[8] = {0}, pos[8] = {0};
    long replies[8] = {0};
    int fds[8], refs = 0;
    for (int i = 0; i < nclients; i++) {
        char pfx[32];
        snprintf(pfx, sizeof(pfx), "tightD%d", i);
        refs += reference(pfx, n, 1, 500, &want[i]) == 0;
        snprintf(pfx, sizeof(pfx), "tightP%d", i);
        gen_pipeline(&req[i], pfx, n, 1, 500);
        fds[i] = hx_connect(tight.port);
    }
    is_int(refs, nclients, "tight limits: Redis answers %d reference pipelines", nclients);
    /* all clients write and read at once */
    double deadline = hx_now() + 120;
    int done = 0;
    while (done < nclients && hx_now() < deadline) {
        struct pollfd pfd[8];
        for (int i = 0; i < nclients; i++) {
            pfd[i].fd = replies[i] < n ? fds[i] : -1;
            pfd[i].events = POLLIN | (sent[i] < req[i].len ? POLLOUT : 0);
            pfd[i].revents = 0;
        }
        if (poll(pfd, (nfds_t)nclients, 200) <= 0) continue;
        for (int i = 0; i < nclients; i++) {
            if ((pfd[i].revents & POLLOUT) && sent[i] < req[i].len) {
                size_t chunk = req[i].len - sent[i] < 4096 ? req[i].len - sent[i] : 4096;
                ssize_t w = send(fds[i], req[i].data + sent[i], chunk, MSG_NOSIGNAL);
                if (w > 0) sent[i] += (size_t)w;
            }
            if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR)) {
                int st = hx_read_n(fds[i], &got[i], 1 << 30, 0);
                long l;
                while ((l = hx_reply_len(got[i].data + pos[i], got[i].len - pos[i])) > 0) {
                    pos[i] += (size_t)l;
                    replies[i]++;
                }
                if (replies[i] >= n || (st != HX_OK && st != HX_TIMEOUT) || l < 0) {
                    if (replies[i] < n) diag("client %d: %s after %ld replies", i, hx_status_name(st), replies[i]);
                    replies[i] = replies[i] < n ? n + 1 : replies[i]; /* stop polling it */
                    done++;
                }
            }
        }
    }
    int same = 0;
    for (int i = 0; i < nclients; i++) {
        same += hx_mem_eq(got[i].data, got[i].len, want[i].data, want[i].len);
        close(fds[i]);
        hx_buf_free(&req[i]);
        hx_buf_free(&want[i]);
        hx_buf_free(&got[i]);
    }
    is_int(same, nclients, "tight limits: %d clients x %d commands, each got Redis' exact replies", nclients, n);
    is_int(hx_stop(&tight, 15000), 0, "hotproxy with tight limits exits 0 on SIGTERM");
}

int main(void)
{
    hx_init(280);
    plan(22);
    unsigned seed = getenv("HOTPROXY_SEED") ? (unsigned)strtoul(getenv("HOTPROXY_SEED"), NULL, 10)
                                            : (unsigned)time(NULL) ^ (unsigned)getpid();
    srand(seed);
    diag("HOTPROXY_SEED=%u", seed);
    if (hx_redis_start(&redis, 0) != 0 || hx_proxy_start(&proxy, 0, redis.port, NULL) != 0) {
        ok(0, "redis-server and hotproxy start");
        return exit_status();
    }
    hiredis_pipeline(100000);
    raw_pipeline(100000);
    split_pipeline("bytewise", 200, 1, 0);
    split_pipeline("random-pieces", 3000, 64, 0);
    split_pipeline("random-big-pieces", 2000, 5000, 40);
    tight_limits(4, 5000);

    is_int(hx_stop(&proxy, 15000), 0, "hotproxy exits 0 on SIGTERM");
    hx_stop(&redis, 10000);
    return exit_status();
}
