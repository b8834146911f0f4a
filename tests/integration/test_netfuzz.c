/*
 * test_netfuzz: hostile and unlucky bytes over real sockets.
 *
 * The libFuzzer targets (tests/fuzz) check each parser alone; this sends
 * what they never see together: valid pipelines (forwarded, cached, local
 * and connection-state commands, multibulk and inline), mutated -- bytes
 * flipped, cut short, lengths swapped for huge or broken ones, garbage
 * spliced in, RESP3 types sent as requests -- and written in random pieces
 * over many short connections to hotproxy in front of a real redis-server.
 * Connections end every way a client can end: closed at once with replies
 * unread, reset (SO_LINGER 0), half-closed and drained, or left hanging
 * mid-command for a while.
 *
 * Between batches a bystander client must be served (PING, SET, GET round
 * trip); at the end hotproxy must be alive and answering, and exit 0 on
 * SIGTERM -- under tests/run.sh's build-san pass that also means no ASan,
 * UBSan or leak report.  The run is bounded: HOTPROXY_NETFUZZ_CONNS
 * connections (default 3000) or 40 s of sending, whichever comes first.
 *
 * The seed is fixed (printed); HOTPROXY_NETFUZZ_SEED=N picks another.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "proxy/px_resp.h"
#include "tap.h"

#define DEFAULT_SEED 20261201ULL
#define BATCH 100
#define SEND_SECONDS 40.0
#define MAX_LINGER 16

static hx_proc redis, proxy;
/* Two streams: payloads come from gen_rng alone, so a seed gives the same
 * bytes whatever the timing; each connection's pieces and ending come from
 * net_rng, reseeded per connection from gen_rng (how far a connection gets
 * before hotproxy closes it depends on timing, and must not shift the rest). */
static uint64_t gen_rng, net_rng, *rng = &gen_rng;

static uint64_t rnd(void)
{
    /* splitmix64 */
    uint64_t z = (*rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static unsigned rn(unsigned n) { return n ? (unsigned)(rnd() % n) : 0; }

/* ------------------------------------------------------------ generation */

static void put_cmd(hx_buf *b, int inl, int argc, const char *const *argv)
{
    if (!inl) {
        hx_buf_command(b, argc, argv, NULL);
        return;
    }
    for (int i = 0; i < argc; i++) {
        /* quote now and then, as redis-cli users do */
        if (rn(4) == 0) hx_buf_printf(b, "%s\"%s\"", i ? " " : "", argv[i]);
        else hx_buf_printf(b, "%s%s", i ? " " : "", argv[i]);
    }
    hx_buf_append(b, rn(3) ? "\r\n" : "\n", rn(3) ? 2 : 1);
}

/* One valid command, of the kinds hotproxy handles differently. */
static void gen_command(hx_buf *b)
{
    char key[32], val[64], num[32];
    snprintf(key, sizeof(key), "nf:k%u", rn(20));
    snprintf(val, sizeof(val), "v%llu", (unsigned long long)rnd());
    snprintf(num, sizeof(num), "%u", 1 + rn(100));
    int inl = rn(4) == 0;
    switch (rn(26)) {
    case 0: case 1: { const char *a[] = {"SET", key, val}; put_cmd(b, inl, 3, a); break; }
    case 2: case 3: case 4: { const char *a[] = {"GET", key}; put_cmd(b, inl, 2, a); break; }
    case 5: { const char *a[] = {"MGET", key, "nf:k1", "nf:k2"}; put_cmd(b, inl, 4, a); break; }
    case 6: { const char *a[] = {"DEL", key}; put_cmd(b, inl, 2, a); break; }
    case 7: { const char *a[] = {"INCR", "nf:ctr"}; put_cmd(b, inl, 2, a); break; }
    case 8: { const char *a[] = {"HSET", "nf:h", key, val}; put_cmd(b, inl, 4, a); break; }
    case 9: { const char *a[] = {"HGET", "nf:h", key}; put_cmd(b, inl, 3, a); break; }
    case 10: { const char *a[] = {"PEXPIRE", key, num}; put_cmd(b, inl, 3, a); break; }
    case 11: { const char *a[] = {"PING"}; put_cmd(b, inl, 1, a); break; }
    case 12: { const char *a[] = {"ECHO", val}; put_cmd(b, inl, 2, a); break; }
    case 13: { const char *a[] = {"SELECT", rn(2) ? "1" : "0"}; put_cmd(b, inl, 2, a); break; }
    case 14: { const char *a[] = {"HELLO", rn(2) ? "3" : "2"}; put_cmd(b, inl, 2, a); break; }
    case 15: { const char *a[] = {"CLIENT", "SETNAME", "nf"}; put_cmd(b, inl, 3, a); break; }
    case 16: { const char *a[] = {"CLIENT", "TRACKING", rn(2) ? "on" : "off"}; put_cmd(b, inl, 3, a); break; }
    case 17: { const char *a[] = {"MULTI"}; put_cmd(b, inl, 1, a); break; }
    case 18: { const char *a[] = {rn(2) ? "EXEC" : "DISCARD"}; put_cmd(b, inl, 1, a); break; }
    case 19: { const char *a[] = {"WATCH", key}; put_cmd(b, inl, 2, a); break; }
    case 20: { const char *a[] = {rn(2) ? "SUBSCRIBE" : "UNSUBSCRIBE", "nf:ch"}; put_cmd(b, inl, 2, a); break; }
    case 21: { const char *a[] = {"INFO", rn(2) ? "server" : "stats"}; put_cmd(b, inl, 2, a); break; }
    case 22: { const char *a[] = {"RESET"}; put_cmd(b, inl, 1, a); break; }
    case 23: { const char *a[] = {"BLPOP", "nf:list", "0.01"}; put_cmd(b, inl, 3, a); break; }
    case 24: { const char *a[] = {"LPUSH", "nf:list", val}; put_cmd(b, inl, 3, a); break; }
    default: {
        /* a value bigger than a read chunk now and then */
        size_t n = rn(8) ? 1 + rn(200) : 17000 + rn(20000);
        char *v = malloc(n);
        for (size_t i = 0; i < n; i++) v[i] = (char)rnd();
        const char *a[] = {"SET", key, v};
        size_t al[] = {3, strlen(key), n};
        hx_buf_command(b, 3, a, al);
        free(v);
        break;
    }
    }
}

/* Replace the number after a '*' or '$' at a line start with a hostile one. */
static void mutate_length(hx_buf *b)
{
    static const char *const lens[] = {"536870912", "536870913", "2147483647", "2147483648", "1048577",
                                       "-1",        "-7",        "0",          "99999999999999999999",
                                       "01",        "+5",        "",           "1 ",   "9223372036854775807"};
    size_t starts[64], n = 0;
    for (size_t i = 0; i < b->len && n < 64; i++)
        if ((b->data[i] == '*' || b->data[i] == '$') && (i == 0 || b->data[i - 1] == '\n')) starts[n++] = i;
    if (!n) return;
    size_t at = starts[rn((unsigned)n)] + 1, end = at;
    while (end < b->len && b->data[end] != '\r') end++;
    const char *l = lens[rn(sizeof(lens) / sizeof(lens[0]))];
    size_t ll = strlen(l);
    hx_buf out = {0};
    hx_buf_append(&out, b->data, at);
    hx_buf_append(&out, l, ll);
    hx_buf_append(&out, b->data + end, b->len - end);
    hx_buf_free(b);
    *b = out;
}

static void mutate(hx_buf *b)
{
    int rounds = 1 + (int)rn(3);
    for (int r = 0; r < rounds; r++) {
        switch (rn(7)) {
        case 0: /* flip bytes */
            for (unsigned k = 1 + rn(8); k && b->len; k--) b->data[rn((unsigned)b->len)] ^= (char)(1u << rn(8));
            break;
        case 1: /* cut short */
            if (b->len) b->len = rn((unsigned)b->len);
            break;
        case 2:
            mutate_length(b);
            break;
        case 3: { /* garbage spliced in */
            size_t at = b->len ? rn((unsigned)b->len + 1) : 0, n = 1 + rn(64);
            hx_buf out = {0};
            hx_buf_append(&out, b->data, at);
            for (size_t i = 0; i < n; i++) {
                char ch = rn(3) ? (char)rnd() : "\r\n*$\"' \\\0"[rn(9)];
                hx_buf_append(&out, &ch, 1);
            }
            hx_buf_append(&out, b->data + at, b->len - at);
            hx_buf_free(b);
            *b = out;
            break;
        }
        case 4: { /* RESP3 and other reply types sent as requests */
            static const char *const odd[] = {"%1\r\n$1\r\na\r\n$1\r\nb\r\n", "~1\r\n+x\r\n", ">2\r\n+a\r\n+b\r\n",
                                              "|1\r\n+a\r\n+b\r\n+c\r\n", "_\r\n", "#t\r\n", ",1.5\r\n",
                                              "(12345678901234567890\r\n", "=5\r\ntxt:a\r\n", "!3\r\nerr\r\n"};
            hx_buf_printf(b, "%s", odd[rn(sizeof(odd) / sizeof(odd[0]))]);
            break;
        }
        case 5: { /* a chunk repeated */
            if (!b->len) break;
            size_t at = rn((unsigned)b->len), n = 1 + rn((unsigned)(b->len - at));
            char *dup = malloc(n);
            memcpy(dup, b->data + at, n);
            hx_buf_append(b, dup, n);
            free(dup);
            break;
        }
        default: { /* an inline line with odd quoting */
            static const char *const lines[] = {"echo \"unbalanced\r\n", "echo 'a'b\r\n", "set nf:q \"\\x41\\n\" x\r\n",
                                                "   \r\n", "\r\n", "get \"a\"\"b\"\r\n", "echo \"\\\r\n",
                                                "\"\"\r\n", "'' ''\r\n"};
            hx_buf_printf(b, "%s", lines[rn(sizeof(lines) / sizeof(lines[0]))]);
            break;
        }
        }
    }
}

/* ----------------------------------------------------------- connections */

typedef struct counts {
    long conns, connect_failed, abrupt, reset, drained, lingered, bytes;
} counts;

static int linger_fds[MAX_LINGER], nlinger;
static void connection(const hx_buf *payload, counts *ct);

static void drain(int fd)
{
    hx_buf tmp = {0};
    (void)hx_read_n(fd, &tmp, (size_t)1 << 30, 0);
    hx_buf_free(&tmp);
}

static void close_reset(int fd)
{
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
}

static void one_connection(const hx_buf *payload, counts *ct)
{
    net_rng = rnd();
    rng = &net_rng;
    connection(payload, ct);
    rng = &gen_rng;
}

static void connection(const hx_buf *payload, counts *ct)
{
    int fd = hx_connect(proxy.port);
    ct->conns++;
    if (fd < 0) {
        ct->connect_failed++;
        return;
    }
    /* random pieces, reading what came back now and then */
    size_t off = 0;
    while (off < payload->len) {
        size_t piece = rn(4) == 0 ? 1 : 1 + rn(rn(2) ? 64 : 8192);
        if (piece > payload->len - off) piece = payload->len - off;
        if (hx_send(fd, payload->data + off, piece, 2000) != 0) break; /* closed on us: fine */
        off += piece;
        ct->bytes += (long)piece;
        if (rn(4) == 0) drain(fd);
    }
    switch (rn(12)) {
    case 0: case 1: case 2:
        close(fd); /* replies unread */
        ct->abrupt++;
        break;
    case 3: case 4:
        close_reset(fd);
        ct->reset++;
        break;
    case 5:
        if (nlinger < MAX_LINGER) {
            linger_fds[nlinger++] = fd; /* left mid-command until the batch ends */
            ct->lingered++;
            break;
        }
        /* fall through */
    default: {
        shutdown(fd, SHUT_WR);
        hx_buf tmp = {0};
        (void)hx_read_eof(fd, &tmp, 3000);
        hx_buf_free(&tmp);
        close(fd);
        ct->drained++;
        break;
    }
    }
}

/* The bystander: PING, SET, GET on its own connection, reconnecting if it
 * had to.  Returns 1 if the round trip worked. */
static int probe(redisContext **c, int batch)
{
    char val[32], set[64];
    if (!*c) *c = hx_redis(proxy.port);
    if (!*c) return 0;
    snprintf(val, sizeof(val), "probe-%d", batch);
    int good = !strcmp(hx_cmd(*c, "PING"), "PONG");
    snprintf(set, sizeof(set), "%s", hx_cmd(*c, "SET nf:probe %s", val));
    good = good && !strcmp(set, "OK") && !strcmp(hx_cmd(*c, "GET nf:probe"), val);
    if (!good) {
        diag("probe after batch %d failed: %s", batch, (*c)->err ? (*c)->errstr : "wrong reply");
        redisFree(*c);
        *c = NULL;
    }
    return good;
}

int main(void)
{
    hx_init(240);
    plan(8);
    uint64_t seed = getenv("HOTPROXY_NETFUZZ_SEED") ? strtoull(getenv("HOTPROXY_NETFUZZ_SEED"), NULL, 10) : DEFAULT_SEED;
    long max_conns = getenv("HOTPROXY_NETFUZZ_CONNS") ? strtol(getenv("HOTPROXY_NETFUZZ_CONNS"), NULL, 10) : 3000;
    gen_rng = seed;
    diag("HOTPROXY_NETFUZZ_SEED=%llu, up to %ld connections", (unsigned long long)seed, max_conns);

    if (hx_redis_start(&redis, 0) != 0 || hx_proxy_start(&proxy, 0, redis.port, NULL) != 0) {
        ok(0, "redis-server and hotproxy start");
        return exit_status();
    }
    ok(1, "redis-server and hotproxy start");

    redisContext *by = NULL;
    counts ct = {0};
    int batches = 0, probes_bad = 0, died_at = -1;
    hx_buf payload = {0};
    double end = hx_now() + SEND_SECONDS;
    while (ct.conns < max_conns && hx_now() < end) {
        for (int i = 0; i < BATCH && ct.conns < max_conns; i++) {
            hx_buf_reset(&payload);
            for (unsigned n = 1 + rn(12); n; n--) gen_command(&payload);
            if (rn(5)) mutate(&payload); /* one in five stays valid */
            one_connection(&payload, &ct);
        }
        for (int i = 0; i < nlinger; i++) {
            if (rn(2)) close(linger_fds[i]);
            else close_reset(linger_fds[i]);
        }
        nlinger = 0;
        batches++;
        if (!probe(&by, batches)) probes_bad++;
        if (!hx_alive(&proxy)) {
            died_at = batches;
            break;
        }
    }
    hx_buf_free(&payload);
    diag("%ld connections (%ld bytes) in %d batches: %ld closed at once, %ld reset, %ld half-closed and drained, "
         "%ld left hanging; %ld connects failed",
         ct.conns, ct.bytes, batches, ct.abrupt, ct.reset, ct.drained, ct.lingered, ct.connect_failed);

    static const char *const fields[] = {"hotproxy_connections_received", "hotproxy_commands_processed",
                                         "hotproxy_commands_forwarded", "hotproxy_commands_local",
                                         "hotproxy_protocol_errors", "hotproxy_query_buffer_limit_disconnects"};
    for (size_t i = 0; died_at < 0 && i < sizeof(fields) / sizeof(fields[0]); i++) {
        const char *v = hx_info_field(proxy.port, "hotproxy_stats", fields[i]);
        diag("  %s: %s", fields[i], v ? v : "?");
    }
    if (died_at < 0) {
        /* for the record: how much memory the hostile lengths made hotproxy hold at most */
        char path[64], line[256];
        snprintf(path, sizeof(path), "/proc/%d/status", (int)proxy.pid);
        FILE *f = fopen(path, "r");
        while (f && fgets(line, sizeof(line), f))
            if (!strncmp(line, "VmHWM:", 6)) diag("  hotproxy peak RSS: %s", line + 6 + strspn(line + 6, " \t"));
        if (f) fclose(f);
    }
    ok(died_at < 0, "hotproxy survives every batch%s", died_at < 0 ? "" : " (it died)");
    if (died_at >= 0) diag("hotproxy died during batch %d (seed %llu)", died_at, (unsigned long long)seed);
    is_int(probes_bad, 0, "a bystander is served between all %d batches", batches);
    is_int(ct.connect_failed, 0, "every connection is accepted");
    ok(probe(&by, batches + 1) && hx_info_field(proxy.port, NULL, "hotproxy_connected_clients") != NULL,
       "hotproxy still answers PING/SET/GET and INFO at the end");
    /* every fuzz connection is closed: hotproxy must let go of them all
     * (the bystander and INFO's own connection remain) */
    const char *cc = NULL;
    double deadline = hx_now() + 20;
    while (hx_now() < deadline) {
        cc = hx_info_field(proxy.port, NULL, "hotproxy_connected_clients");
        if (cc && atol(cc) <= 2) break;
        hx_sleep_ms(50);
    }
    if (!ok(cc && atol(cc) <= 2, "hotproxy lets go of every closed connection (connected_clients %s)", cc ? cc : "?")) {
        /* which client is left, and in what state */
        redisContext *lc = hx_redis(proxy.port);
        redisReply *r = lc ? redisCommand(lc, "CLIENT LIST") : NULL;
        if (r && r->type == REDIS_REPLY_STRING) diag("CLIENT LIST:\n%s", r->str);
        if (r) freeReplyObject(r);
        if (lc) redisFree(lc);
    }
    if (by) redisFree(by);
    ok(hx_alive(&redis), "redis-server is still up");
    is_int(hx_stop(&proxy, 15000), 0, "hotproxy exits 0 on SIGTERM (no sanitizer report)");
    hx_stop(&redis, 10000);
    return exit_status();
}
