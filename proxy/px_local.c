/*
 * px_local: commands hotproxy answers itself.  See px_local.h.
 *
 * Connection-level commands (AUTH, HELLO, SELECT, RESET, CLIENT SETNAME and
 * friends) act on what hotproxy keeps for the client, never on a shared
 * upstream connection: the database and protocol choose the lane its
 * commands travel on, and the name and libraries are reported by CLIENT
 * LIST/INFO, which speak of hotproxy's own clients.
 *
 * INFO is half local: Redis' own INFO is fetched (clients such as BullMQ
 * read redis_version from it) and hotproxy's sections are appended to it,
 * in Redis' format.  hotproxy's keys all start with "hotproxy_" so they never
 * shadow Redis' keys in a client that parses INFO into a map.
 */
#include "proxy/px_local.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proxy/px_client.h"
#include "proxy/px_command.h"
#include "proxy/px_glob.h"
#include "proxy/px_l1.h"
#include "proxy/px_router.h"
#include "proxy/px_server.h"
#include "proxy/px_upstream.h"

enum {
    SEC_PROXY = 1 << 0,
    SEC_STATS = 1 << 1,
    SEC_UPSTREAM = 1 << 2,
    SEC_COMMANDS = 1 << 3,
    SEC_CACHE = 1 << 4,
    SEC_LATENCY = 1 << 5, /* Redis 7's latencystats, from hotproxy's histograms: Redis' own is dropped */
    SEC_DEFAULT = SEC_PROXY | SEC_STATS | SEC_UPSTREAM | SEC_CACHE,
    SEC_ALL = SEC_DEFAULT | SEC_COMMANDS | SEC_LATENCY,
    SEC_REDIS = 1 << 8, /* some section only Redis has */
};

static const struct {
    const char *name;
    unsigned bits;
} sections[] = {
    {"hotproxy", SEC_ALL},
    {"hotproxy_stats", SEC_STATS},
    {"hotproxy_upstream", SEC_UPSTREAM},
    {"hotproxy_commandstats", SEC_COMMANDS},
    {"hotproxy_cache", SEC_CACHE},
    {"latencystats", SEC_LATENCY},
    {"default", SEC_DEFAULT | SEC_REDIS},
    {"all", SEC_ALL | SEC_REDIS},
    {"everything", SEC_ALL | SEC_REDIS},
};

static unsigned info_sections(int argc, const char *const *argv, const size_t *argvlen)
{
    if (argc == 1) return SEC_DEFAULT | SEC_REDIS;
    unsigned bits = 0;
    for (int i = 1; i < argc; i++) {
        unsigned b = SEC_REDIS;
        for (size_t j = 0; j < sizeof(sections) / sizeof(sections[0]); j++)
            if (strlen(sections[j].name) == argvlen[i] && !strncasecmp(sections[j].name, argv[i], argvlen[i]))
                b = sections[j].bits;
        bits |= b;
    }
    return bits;
}

static void append_sections(px_server *s, unsigned bits, px_buf *out)
{
    if (bits & SEC_PROXY) {
        if (out->len) px_buf_append(out, "\r\n", 2);
        px_buf_appendf(out, "# %s\r\n", px_stat_groups[PX_STATS_G_SERVER].section);
        px_stats_server v;
        px_server_stats(s, &v);
        px_stats_render_group(PX_STATS_G_SERVER, &v, out);
    }
    if (bits & SEC_STATS) {
        if (out->len) px_buf_append(out, "\r\n", 2);
        px_buf_appendf(out, "# %s\r\n", px_stat_groups[PX_STATS_G_STATS].section);
        px_stats_render_group(PX_STATS_G_STATS, &s->core.stats, out);
    }
    if (bits & SEC_UPSTREAM) {
        if (out->len) px_buf_append(out, "\r\n", 2);
        px_buf_appendf(out, "# %s\r\n", px_stat_groups[PX_STATS_G_ROUTER].section);
        px_router_info(s->router, out);
    }
    if (bits & SEC_CACHE) {
        if (out->len) px_buf_append(out, "\r\n", 2);
        px_buf_appendf(out, "# %s\r\n", px_stat_groups[PX_STATS_G_L1].section);
        px_l1_info(s->l1, out);
    }
    if (bits & SEC_COMMANDS) {
        if (out->len) px_buf_append(out, "\r\n", 2);
        px_buf_appendf(out, "# Hotproxy_commandstats\r\n");
        px_stats_info_commands(&s->core.stats, out);
    }
    if (bits & SEC_LATENCY) {
        if (out->len) px_buf_append(out, "\r\n", 2);
        px_buf_appendf(out, "# Latencystats\r\n");
        px_stats_info_latency(&s->core.stats, out);
    }
}

/* Take Redis' own "# Latencystats" section out of its INFO text (INFO all):
 * hotproxy writes one from what its clients waited, under the same name. */
static void drop_redis_latencystats(px_buf *body)
{
    static const char head[] = "# Latencystats\r\n";
    if (!body->len) return;
    char *at = memmem(body->data, body->len, head, sizeof(head) - 1);
    if (!at || (at != body->data && at[-1] != '\n')) return;
    char *end = body->data + body->len;
    char *next = memmem(at, (size_t)(end - at), "\r\n\r\n", 4);
    char *stop = next ? next + 4 : end; /* the blank line after it goes too */
    memmove(at, stop, (size_t)(end - stop));
    body->len -= (size_t)(stop - at);
}

static int eq(const char *a, size_t alen, const char *lit)
{
    return strlen(lit) == alen && !strncasecmp(a, lit, alen);
}

/* Encoders for local replies, in the client's protocol. */
static void add_str(px_buf *b, const char *p) { px_resp_bulk(b, p, strlen(p)); }

static void reply_bulk(px_req *r, const char *p, size_t n)
{
    px_buf b = {0};
    px_resp_bulk(&b, p, n);
    px_client_reply(r, b.data, b.len);
    px_buf_free(&b);
}

/* Text a RESP3 client gets as a verbatim string, as Redis sends INFO. */
static void reply_text(px_client *c, px_req *r, const char *p, size_t n)
{
    if (c->proto < 3) {
        reply_bulk(r, p, n);
        return;
    }
    px_buf b = {0};
    px_buf_appendf(&b, "=%zu\r\ntxt:", n + 4);
    px_buf_append(&b, p, n);
    px_buf_append(&b, "\r\n", 2);
    px_client_reply(r, b.data, b.len);
    px_buf_free(&b);
}

static void reply_null(px_client *c, px_req *r)
{
    if (c->proto >= 3) px_client_reply(r, "_\r\n", 3);
    else px_client_reply(r, "$-1\r\n", 5);
}

static void reply_int(px_req *r, long long v)
{
    char b[32];
    int n = snprintf(b, sizeof(b), ":%lld\r\n", v);
    px_client_reply(r, b, (size_t)n);
}

static void reply_ok(px_req *r) { px_client_reply(r, "+OK\r\n", 5); }

/* Replace the value of an INFO line "field:..." (the first) with value. */
static void info_set(px_buf *b, const char *field, const char *value)
{
    size_t flen = strlen(field);
    for (size_t i = 0; i + flen < b->len; i++) {
        if ((i && b->data[i - 1] != '\n') || memcmp(b->data + i, field, flen) || b->data[i + flen] != ':') continue;
        size_t v = i + flen + 1, e = v;
        while (e < b->len && b->data[e] != '\r' && b->data[e] != '\n') e++;
        px_buf t = {0};
        px_buf_append(&t, b->data, v);
        px_buf_append(&t, value, strlen(value));
        px_buf_append(&t, b->data + e, b->len - e);
        px_buf_free(b);
        *b = t;
        return;
    }
}

/* Behind hotproxy a Redis Cluster is one standalone Redis: a client library
 * reading cluster_enabled:1 would turn cluster-aware and ask for the slots. */
static void standalone_view(px_buf *body)
{
    info_set(body, "redis_mode", "standalone");
    info_set(body, "cluster_enabled", "0");
}

/* The hook on a forwarded INFO: Redis' text, then hotproxy's sections. */
static int info_hook(px_req *r, const char *reply, size_t len, px_buf *out)
{
    const char *text;
    size_t tlen;
    if (px_reply_string(reply, len, &text, &tlen) != 0 || reply[0] == '-' || !r->client) return 0;
    px_buf body = {0};
    px_buf_append(&body, text, tlen);
    if (r->hook_flags & SEC_LATENCY) drop_redis_latencystats(&body);
    while (body.len >= 2 && body.data[body.len - 1] == '\n') body.len -= body.data[body.len - 2] == '\r' ? 2 : 1;
    if (body.len) px_buf_append(&body, "\r\n", 2); /* the last line ends, as Redis' does: no blank line after */
    if (px_router_sharded(r->client->set->router)) standalone_view(&body);
    append_sections(r->client->set->owner, r->hook_flags, &body);
    if (reply[0] == '=') {
        px_buf_appendf(out, "=%zu\r\ntxt:", body.len + 4);
    } else {
        px_buf_appendf(out, "$%zu\r\n", body.len);
    }
    px_buf_append(out, body.data, body.len);
    px_buf_append(out, "\r\n", 2);
    px_buf_free(&body);
    return 1;
}

/* CONFIG GET parameters whose values are secrets: Redis' passwords, and
 * hotproxy's own upstream credentials when they are Redis' too. */
static int secret_parameter(const char *p, size_t n)
{
    if (eq(p, n, "masterauth") || eq(p, n, "masteruser")) return 1;
    for (size_t i = 0; i + 4 <= n; i++)
        if (!strncasecmp(p + i, "pass", 4)) return 1;
    return 0;
}

/*
 * The hook on a forwarded CONFIG GET: a secret's value becomes "(set)" (or
 * stays "" when there is none), in the RESP2 array of pairs or the RESP3
 * map, so no client ever reads Redis' passwords, or the one hotproxy logs
 * in with, through hotproxy.
 */
static int redact_hook(px_req *r, const char *reply, size_t len, px_buf *out)
{
    const char *nl = memchr(reply, '\n', len);
    long long n;
    (void)r;
    if (!nl || (reply[0] != '*' && reply[0] != '%') || !px_string2ll(reply + 1, (size_t)(nl - reply - 2), &n) || n < 0)
        return 0;
    long long pairs = reply[0] == '%' ? n : n / 2;
    const char *p = nl + 1, *end = reply + len;
    px_buf_append(out, reply, (size_t)(p - reply));
    for (long long i = 0; i < pairs; i++) {
        size_t elen[2];
        const char *el[2];
        for (int k = 0; k < 2; k++) {
            elen[k] = p < end ? px_reply_len(p, (size_t)(end - p)) : 0;
            if (!elen[k]) {
                out->len = 0;
                px_buf_append(out, "-ERR hotproxy: unexpected CONFIG GET reply\r\n", 45);
                return 1; /* never Redis' bytes unchecked */
            }
            el[k] = p;
            p += elen[k];
        }
        const char *name, *value;
        size_t namelen, valuelen;
        px_buf_append(out, el[0], elen[0]);
        if (px_reply_string(el[0], elen[0], &name, &namelen) == 0 && secret_parameter(name, namelen) &&
            !(px_reply_string(el[1], elen[1], &value, &valuelen) == 0 && valuelen == 0))
            px_resp_bulk(out, "(set)", 5);
        else
            px_buf_append(out, el[1], elen[1]);
    }
    px_buf_append(out, p, (size_t)(end - p));
    return 1;
}

/* Redis speaks of its connection ids: a redirect is the client's own
 * connection's; hotproxy's id of the client it named is what the client knows. */
static int getredir_hook(px_req *r, const char *reply, size_t len, px_buf *out)
{
    long long id;
    if (!r->client || len < 4 || reply[0] != ':' || !px_string2ll(reply + 1, len - 3, &id) || id <= 0) return 0;
    px_buf_appendf(out, ":%llu\r\n", (unsigned long long)r->client->track_redir);
    return 1;
}

static int trackinginfo_hook(px_req *r, const char *reply, size_t len, px_buf *out)
{
    static const char key[] = "$8\r\nredirect\r\n:";
    const char *at = r->client ? memmem(reply, len, key, sizeof(key) - 1) : NULL;
    if (!at) return 0;
    const char *num = at + sizeof(key) - 1, *cr = memchr(num, '\r', (size_t)(reply + len - num));
    long long id;
    if (!cr || !px_string2ll(num, (size_t)(cr - num), &id) || id <= 0) return 0;
    px_buf_append(out, reply, (size_t)(num - reply));
    px_buf_appendf(out, "%llu", (unsigned long long)r->client->track_redir);
    px_buf_append(out, cr, (size_t)(reply + len - cr));
    return 1;
}

void px_local_info_alone(px_client *c, px_req *r)
{
    px_buf body = {0};
    append_sections(c->set->owner, r->hook_flags ? r->hook_flags : SEC_DEFAULT, &body);
    reply_text(c, r, body.data, body.len);
    px_buf_free(&body);
}

/* Redis 7's text names subcommands "container|sub". */
static int arity_error(px_req *r, const px_command *cmd)
{
    px_client_reply_error(r, "ERR wrong number of arguments for '%s' command", cmd->name);
    return 1;
}


/* Redis' rule for client names: printable, no spaces. */
static int valid_name(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] < '!' || p[i] > '~') return 0;
    return 1;
}

/* Check a user and password; on success the client is that user. */
static int authenticate(px_client *c, const char *user, size_t ulen, const char *pass, size_t plen)
{
    px_server *s = c->set->owner;
    const px_config *cfg = s->core.cfg;
    const px_user *u = px_config_user(cfg, user, ulen);
    /* with no password at all, "default" is open unless users are defined */
    int ok = u ? px_config_user_check(u, pass, plen) : eq(user, ulen, "default") && cfg->nusers == 0;
    if (ok) {
        px_client_login(c, user, ulen);
    } else {
        /* never the password */
        px_log_verbose(&s->core.log, "Client id=%llu addr=%s: authentication failed for user '%.*s'",
                       (unsigned long long)c->id, c->addr, (int)(ulen > 64 ? 64 : ulen), user);
    }
    return ok;
}

static int do_auth(px_client *c, px_req *r, int argc, const char *const *argv, const size_t *argvlen)
{
    if (argc < 2 || argc > 3) {
        if (argc > 3) px_client_reply_error(r, "ERR syntax error");
        else arity_error(r, r->cmd);
        return 1;
    }
    if (argc == 2 && !px_config_auth_required(c->set->core->cfg)) {
        px_client_reply_error(r, "ERR AUTH <password> called without any password configured for the default user. "
                                 "Are you sure your configuration is correct?");
        return 1;
    }
    const char *user = argc == 3 ? argv[1] : "default";
    size_t ulen = argc == 3 ? argvlen[1] : 7;
    if (authenticate(c, user, ulen, argv[argc - 1], argvlen[argc - 1])) reply_ok(r);
    else px_client_reply_error(r, "WRONGPASS invalid username-password pair or user is disabled.");
    return 1;
}

static void hello_internal_done(struct px_upstream *u, void *ctx, const char *reply, size_t len)
{
    (void)u;
    (void)ctx;
    (void)reply;
    (void)len;
}

static int do_hello(px_client *c, px_req *r, int argc, const char *const *argv, const size_t *argvlen)
{
    px_server *s = c->set->owner;
    long long ver = c->proto;
    int i = 1;
    const char *setname = NULL;
    size_t setnamelen = 0;
    if (argc >= 2) {
        if (!px_string2ll(argv[1], argvlen[1], &ver)) {
            px_client_reply_error(r, "ERR Protocol version is not an integer or out of range");
            return 1;
        }
        i = 2;
    }
    const char *user = NULL, *pass = NULL;
    size_t ulen = 0, plen = 0;
    for (; i < argc; i++) {
        int left = argc - i - 1;
        if (eq(argv[i], argvlen[i], "AUTH") && left >= 2) {
            user = argv[i + 1];
            ulen = argvlen[i + 1];
            pass = argv[i + 2];
            plen = argvlen[i + 2];
            i += 2;
        } else if (eq(argv[i], argvlen[i], "SETNAME") && left >= 1) {
            setname = argv[i + 1];
            setnamelen = argvlen[i + 1];
            i += 1;
        } else {
            px_client_reply_error(r, "ERR Syntax error in HELLO option '%.*s'", (int)(argvlen[i] > 64 ? 64 : argvlen[i]),
                                  argv[i]);
            return 1;
        }
    }
    if (ver < 2 || ver > 3) {
        px_client_reply_error(r, "NOPROTO unsupported protocol version");
        return 1;
    }
    if (!user && !c->authenticated) {
        /* Redis 7.0's wording */
        px_client_reply_error(r, "NOAUTH HELLO must be called with the client already authenticated, otherwise the "
                                 "HELLO AUTH <user> <pass> option can be used to authenticate the client and "
                                 "select the RESP protocol version at the same time");
        return 1;
    }
    if (user && !authenticate(c, user, ulen, pass, plen)) {
        px_client_reply_error(r, "WRONGPASS invalid username-password pair or user is disabled.");
        return 1;
    }
    if (setname && !valid_name(setname, setnamelen)) {
        px_client_reply_error(r, "ERR Client names cannot contain spaces, newlines or special characters.");
        return 1;
    }
    if (setname) px_client_set_name(c, setname, setnamelen);
    if (c->pinned && c->pinned->proto != ver) {
        /* its own connection must speak the same protocol */
        char cmd[40];
        int n = snprintf(cmd, sizeof(cmd), "*2\r\n$5\r\nHELLO\r\n$1\r\n%lld\r\n", ver);
        px_upstream_send_internal(c->pinned, cmd, (size_t)n, hello_internal_done, NULL);
        c->pinned->proto = (int)ver;
    }
    px_client_set_proto(c, (int)ver);

    px_route_args a = {r->cmd, argc, argv, argvlen, NULL};
    px_pool *pool = px_router_route(s->router, &a);
    const char *version = pool && pool->redis_version[0] ? pool->redis_version : "7.0.0";
    px_buf b = {0};
    px_buf_append(&b, c->proto >= 3 ? "%7\r\n" : "*14\r\n", c->proto >= 3 ? 4 : 5);
    add_str(&b, "server");
    add_str(&b, "redis");
    add_str(&b, "version");
    add_str(&b, version);
    add_str(&b, "proto");
    px_buf_appendf(&b, ":%d\r\n", c->proto);
    add_str(&b, "id");
    px_buf_appendf(&b, ":%llu\r\n", (unsigned long long)c->id);
    add_str(&b, "mode");
    add_str(&b, "standalone");
    add_str(&b, "role");
    add_str(&b, "master");
    add_str(&b, "modules");
    px_buf_append(&b, "*0\r\n", 4);
    px_client_reply(r, b.data, b.len);
    px_buf_free(&b);
    return 1;
}

static int do_select(px_client *c, px_req *r, int argc, const char *const *argv, const size_t *argvlen)
{
    long long db;
    if (argc != 2) return arity_error(r, r->cmd);
    int isint = px_string2ll(argv[1], argvlen[1], &db);
    px_route_args a = {r->cmd, argc, argv, argvlen, NULL};
    px_pool *pool = px_router_route(c->set->router, &a);
    long long ndb = pool ? pool->databases : 16;
    int valid = isint && db >= 0 && db < ndb;
    if (isint && db != 0 && px_router_sharded(c->set->router)) {
        /* a Redis Cluster has database 0 only, and says so */
        px_client_reply_error(r, "ERR SELECT is not allowed in cluster mode");
        return 1;
    }
    if (c->pinned) {
        /* Redis does it on the client's own connection, and queues it in
         * MULTI: its error, if any, belongs in EXEC's reply */
        if (valid) px_client_select(c, (int)db);
        return 0;
    }
    if (!isint) {
        px_client_reply_error(r, "ERR value is not an integer or out of range");
    } else if (db < INT32_MIN || db > INT32_MAX) { /* Redis' getIntFromObjectOrReply, word for word */
        px_client_reply_error(r, "ERR value is out of range, value must between -2147483648 and 2147483647");
    } else if (!valid) {
        px_client_reply_error(r, "ERR DB index is out of range");
    } else {
        px_client_select(c, (int)db);
        reply_ok(r);
    }
    return 1;
}

static int do_reset(px_client *c, px_req *r)
{
    px_client_reset(c);
    r->silent = 0;
    px_client_reply(r, "+RESET\r\n", 8);
    return 1;
}

/* Pub/sub: an UNSUBSCRIBE from a client that never subscribed (Redis'
 * answer: one frame per channel, or one with a null channel, count 0). */
static int do_unsubscribe(px_client *c, px_req *r, int argc, const char *const *argv, const size_t *argvlen)
{
    const char *kind = r->cmd->name;
    px_buf b = {0};
    const char *hdr = c->proto >= 3 ? ">3\r\n" : "*3\r\n";
    for (int i = argc > 1 ? 1 : 0; i < (argc > 1 ? argc : 1); i++) {
        px_buf_append(&b, hdr, 4);
        add_str(&b, kind);
        if (argc > 1) px_resp_bulk(&b, argv[i], argvlen[i]);
        else if (c->proto >= 3) px_buf_append(&b, "_\r\n", 3);
        else px_buf_append(&b, "$-1\r\n", 5);
        px_buf_append(&b, ":0\r\n", 4);
    }
    px_client_reply(r, b.data, b.len);
    px_buf_free(&b);
    return 1;
}

/* One CLIENT LIST line about hotproxy's connection c, with Redis 7.0's fields
 * in Redis' order (clients and the Redis test suite match the line as a
 * pattern), then hotproxy's own: lib-name and lib-ver (CLIENT SETINFO),
 * inflight and pinned.  The memory fields describe hotproxy's buffers: the
 * query buffer (qbuf, qbuf-free), the parsed argument vector (argv-mem; the
 * arguments themselves stay in the query buffer), the reply buffer (rbs; it
 * never shrinks, so rbp, its peak, is the same).  multi-mem is 0: MULTI's
 * commands are queued in Redis, not here.  oll counts replies held for
 * order, not counting the reply being built for self (Redis' own client
 * shows oll=0 while its CLIENT LIST runs). */
static void client_line(px_client *c, px_buf *b, const px_client *self)
{
    double now = px_now(c->set->core);
    const char *flags = c->state & PX_STATE_MULTI ? "x" : (c->state & (PX_STATE_SUB | PX_STATE_SSUB)) ? "P" : "N";
    const char *cmdname = c->last_cmd ? c->last_cmd : "NULL"; /* "client|list", as Redis 7 shows it */
    long held = c->nqueued - c->ninflight - (c == self ? 1 : 0);
    size_t argv_mem = (size_t)c->argv_cap * (sizeof(*c->argv) + sizeof(*c->argvlen));
    px_buf_appendf(b,
                   "id=%llu addr=%s laddr=%s:%lld fd=%d name=%s age=%lld idle=%lld flags=%s db=%d sub=%d psub=%d "
                   "ssub=%d multi=%d qbuf=%zu qbuf-free=%zu argv-mem=%zu multi-mem=0 rbs=%zu rbp=%zu obl=0 "
                   "oll=%ld omem=%zu tot-mem=%zu events=r cmd=%s user=%s "
                   "redir=%lld resp=%d lib-name=%s lib-ver=%s inflight=%ld pinned=%d\n",
                   (unsigned long long)c->id, c->addr, c->set->core->cfg->bind,
                   px_client_is_tls(c) ? c->set->core->cfg->tls_port : c->set->core->cfg->port, c->fd,
                   c->name ? c->name : "", (long long)(now - c->created), (long long)(now - c->last_active), flags,
                   c->db, c->nsub, c->npsub, c->nssub, c->state & PX_STATE_MULTI ? c->multi_queued : -1,
                   px_buf_used(&c->in), c->in.cap - c->in.len, argv_mem, c->out.cap, c->out.cap,
                   held > 0 ? held : 0, px_buf_used(&c->out) + c->oref_bytes,
                   c->in.cap + c->out.cap + c->oref_bytes + argv_mem, cmdname,
                   c->user ? c->user : "default",
                   c->state & PX_STATE_TRACKING ? (long long)c->track_redir : -1LL, c->proto,
                   c->lib_name ? c->lib_name : "", c->lib_ver ? c->lib_ver : "", c->ninflight, c->pinned != NULL);
}

static px_client *client_by_id(px_server *s, const char *p, size_t n)
{
    long long id;
    if (!px_string2ll(p, n, &id) || id <= 0) return NULL;
    return px_clients_find(&s->clients, (uint64_t)id);
}

/* Redis' client types (getClientTypeByName); hotproxy's clients are never
 * masters or replicas.  -1 when the name is not a type. */
enum { TYPE_NORMAL, TYPE_PUBSUB, TYPE_OTHER };
static int client_type_by_name(const char *p, size_t n)
{
    if (eq(p, n, "normal")) return TYPE_NORMAL;
    if (eq(p, n, "pubsub")) return TYPE_PUBSUB;
    if (eq(p, n, "slave") || eq(p, n, "replica") || eq(p, n, "master")) return TYPE_OTHER;
    return -1;
}

static int client_type(const px_client *o)
{
    return (o->state & (PX_STATE_SUB | PX_STATE_SSUB)) ? TYPE_PUBSUB : TYPE_NORMAL;
}

/* CLIENT LIST [TYPE t | ID id ...]: with ids, the clients in the order given
 * (a repeated id is listed again), as Redis does; each id costs one lookup. */
static void client_list(px_client *c, px_req *r, int argc, const char *const *argv, const size_t *argvlen)
{
    px_server *s = c->set->owner;
    px_buf b = {0};
    if (argc == 2 || (argc == 4 && eq(argv[2], argvlen[2], "type"))) {
        int type = argc == 4 ? client_type_by_name(argv[3], argvlen[3]) : -2;
        if (type == -1) {
            px_client_reply_error(r, "ERR Unknown client type '%.*s'", (int)(argvlen[3] > 64 ? 64 : argvlen[3]), argv[3]);
            return;
        }
        for (px_client *o = s->clients.clients; o; o = o->next)
            if (!(o->flags & PX_CLIENT_CLOSING) && (type == -2 || client_type(o) == type)) client_line(o, &b, c);
    } else if (argc > 3 && eq(argv[2], argvlen[2], "id")) {
        for (int i = 3; i < argc; i++) {
            long long id;
            if (!px_string2ll(argv[i], argvlen[i], &id)) {
                px_buf_free(&b);
                px_client_reply_error(r, "ERR Invalid client ID");
                return;
            }
            px_client *o = id > 0 ? px_clients_find(&s->clients, (uint64_t)id) : NULL;
            if (o) client_line(o, &b, c);
        }
    } else {
        px_client_reply_error(r, "ERR syntax error");
        return;
    }
    reply_text(c, r, b.data ? b.data : "", b.len);
    px_buf_free(&b);
}

static void kill_one(px_client *c, px_client *o)
{
    if (o == c) px_client_close_after_reply(c);
    else px_client_close(o, "CLIENT KILL");
}

/* CLIENT KILL addr:port | CLIENT KILL <filter value> ..., Redis 7.0's
 * checks and texts.  With an ID filter only that client is looked at. */
static void client_kill(px_client *c, px_req *r, int argc, const char *const *argv, const size_t *argvlen)
{
    px_server *s = c->set->owner;
    if (argc == 3) {
        for (px_client *o = s->clients.clients; o; o = o->next)
            if (!(o->flags & PX_CLIENT_CLOSING) && eq(argv[2], argvlen[2], o->addr)) {
                kill_one(c, o);
                reply_ok(r);
                return;
            }
        px_client_reply_error(r, "ERR No such client");
        return;
    }
    long long id = 0;
    int type = -1, skipme = 1;
    const char *addr = NULL, *laddr = NULL, *user = NULL;
    size_t addrlen = 0, laddrlen = 0, userlen = 0;
    for (int i = 2; i < argc; i += 2) {
        const char *k = argv[i];
        size_t kl = argvlen[i];
        if (i + 1 >= argc) {
            px_client_reply_error(r, "ERR syntax error");
            return;
        }
        const char *v = argv[i + 1];
        size_t vl = argvlen[i + 1];
        if (eq(k, kl, "id")) {
            if (!px_string2ll(v, vl, &id) || id < 1) {
                px_client_reply_error(r, "ERR client-id should be greater than 0");
                return;
            }
        } else if (eq(k, kl, "type")) {
            if ((type = client_type_by_name(v, vl)) < 0) {
                px_client_reply_error(r, "ERR Unknown client type '%.*s'", (int)(vl > 64 ? 64 : vl), v);
                return;
            }
        } else if (eq(k, kl, "addr")) {
            addr = v;
            addrlen = vl;
        } else if (eq(k, kl, "laddr")) {
            laddr = v;
            laddrlen = vl;
        } else if (eq(k, kl, "user")) {
            if (!px_config_user(s->core.cfg, v, vl) && !eq(v, vl, "default")) {
                px_client_reply_error(r, "ERR No such user '%.*s'", (int)(vl > 64 ? 64 : vl), v);
                return;
            }
            user = v;
            userlen = vl;
        } else if (eq(k, kl, "skipme")) {
            if (eq(v, vl, "yes")) skipme = 1;
            else if (eq(v, vl, "no")) skipme = 0;
            else {
                px_client_reply_error(r, "ERR syntax error");
                return;
            }
        } else {
            px_client_reply_error(r, "ERR syntax error");
            return;
        }
    }
    char mine[300], mine_tls[300];
    snprintf(mine, sizeof(mine), "%s:%lld", s->core.cfg->bind, s->core.cfg->port);
    snprintf(mine_tls, sizeof(mine_tls), "%s:%lld", s->core.cfg->bind, s->core.cfg->tls_port);
    long long killed = 0;
    px_client *only = id ? px_clients_find(&s->clients, (uint64_t)id) : NULL;
    for (px_client *o = id ? only : s->clients.clients; o; o = id ? NULL : o->next) {
        if (o->flags & PX_CLIENT_CLOSING || (skipme && o == c)) continue;
        if ((type >= 0 && client_type(o) != type) || (addr && !eq(addr, addrlen, o->addr)) ||
            (laddr && !eq(laddr, laddrlen, px_client_is_tls(o) ? mine_tls : mine)) ||
            (user && !(o->user && eq(user, userlen, o->user))))
            continue;
        killed++;
        kill_one(c, o);
    }
    reply_int(r, killed);
}

/*
 * The CLIENT subcommands hotproxy answers, one function per row of the
 * table (its handler column names it); the row's arity is checked first.
 */
#define LOCAL_ARGS px_client *c, px_req *r, int argc, const char *const *argv, const size_t *argvlen

static int client_id(LOCAL_ARGS)
{
    (void)argc, (void)argv, (void)argvlen;
    reply_int(r, (long long)c->id);
    return 1;
}

/* CLIENT GETREDIR and TRACKINGINFO */
static int client_tracking_info(px_client *c, px_req *r, int info)
{
    if ((c->state & PX_STATE_TRACKING) && c->pinned && !r->capture) {
        /* Redis knows the options; hotproxy translates the id */
        r->hook = info ? trackinginfo_hook : getredir_hook;
        return 0;
    }
    long long redir = (c->state & PX_STATE_TRACKING) ? (long long)c->track_redir : -1;
    if (!info) {
        reply_int(r, redir);
        return 1;
    }
    /* what Redis says of a client without tracking (inside EXEC: on, no options) */
    px_buf b = {0};
    px_buf_append(&b, c->proto >= 3 ? "%3\r\n" : "*6\r\n", 4);
    add_str(&b, "flags");
    px_buf_append(&b, c->proto >= 3 ? "~1\r\n" : "*1\r\n", 4);
    add_str(&b, redir >= 0 ? "on" : "off");
    add_str(&b, "redirect");
    px_buf_appendf(&b, ":%lld\r\n", redir);
    add_str(&b, "prefixes");
    px_buf_append(&b, "*0\r\n", 4);
    px_client_reply(r, b.data, b.len);
    px_buf_free(&b);
    return 1;
}

static int client_getredir(LOCAL_ARGS)
{
    (void)argc, (void)argv, (void)argvlen;
    return client_tracking_info(c, r, 0);
}

static int client_trackinginfo(LOCAL_ARGS)
{
    (void)argc, (void)argv, (void)argvlen;
    return client_tracking_info(c, r, 1);
}

static int client_getname(LOCAL_ARGS)
{
    (void)argc, (void)argv, (void)argvlen;
    if (c->name) reply_bulk(r, c->name, strlen(c->name));
    else reply_null(c, r);
    return 1;
}

static int client_setname(LOCAL_ARGS)
{
    (void)argc;
    if (!valid_name(argv[2], argvlen[2])) {
        px_client_reply_error(r, "ERR Client names cannot contain spaces, newlines or special characters.");
        return 1;
    }
    px_client_set_name(c, argv[2], argvlen[2]);
    reply_ok(r);
    return 1;
}

static int client_setinfo(LOCAL_ARGS)
{
    (void)argc;
    if (!valid_name(argv[3], argvlen[3])) {
        px_client_reply_error(r, "ERR %.*s cannot contain spaces, newlines or special characters.",
                              (int)(argvlen[2] > 32 ? 32 : argvlen[2]), argv[2]);
        return 1;
    }
    if (eq(argv[2], argvlen[2], "lib-name")) {
        px_client_set_lib(c, 0, argv[3], argvlen[3]);
    } else if (eq(argv[2], argvlen[2], "lib-ver")) {
        px_client_set_lib(c, 1, argv[3], argvlen[3]);
    } else {
        px_client_reply_error(r, "ERR Unrecognized option '%.*s'", (int)(argvlen[2] > 32 ? 32 : argvlen[2]), argv[2]);
        return 1;
    }
    reply_ok(r);
    return 1;
}

static int client_info(LOCAL_ARGS)
{
    (void)argc, (void)argv, (void)argvlen;
    px_buf b = {0};
    client_line(c, &b, c);
    reply_text(c, r, b.data, b.len);
    px_buf_free(&b);
    return 1;
}

static int client_list_cmd(LOCAL_ARGS)
{
    client_list(c, r, argc, argv, argvlen);
    return 1;
}

static int client_kill_cmd(LOCAL_ARGS)
{
    client_kill(c, r, argc, argv, argvlen);
    return 1;
}

static int client_reply(LOCAL_ARGS)
{
    (void)argc;
    if (eq(argv[2], argvlen[2], "on")) {
        px_client_set_reply_mode(c, 0);
        r->silent = 0;
        reply_ok(r);
    } else if (eq(argv[2], argvlen[2], "off") || eq(argv[2], argvlen[2], "skip")) {
        px_client_set_reply_mode(c, eq(argv[2], argvlen[2], "off") ? 1 : 2);
        r->silent = 1;
        reply_ok(r);
    } else {
        px_client_reply_error(r, "ERR syntax error");
    }
    return 1;
}

static int client_no_evict(LOCAL_ARGS)
{
    (void)c, (void)argc;
    if (!eq(argv[2], argvlen[2], "on") && !eq(argv[2], argvlen[2], "off")) px_client_reply_error(r, "ERR syntax error");
    else reply_ok(r); /* hotproxy's connections are not Redis' to evict */
    return 1;
}

static int client_unblock(LOCAL_ARGS)
{
    px_server *s = c->set->owner;
    /* Redis checks the argument count, the reason, then the id */
    if (argc > 4) {
        px_client_reply_error(r, "ERR unknown subcommand or wrong number of arguments for '%.*s'. Try CLIENT HELP.",
                              (int)(argvlen[1] > 64 ? 64 : argvlen[1]), argv[1]);
        return 1;
    }
    if (argc == 4 && !eq(argv[3], argvlen[3], "timeout") && !eq(argv[3], argvlen[3], "error")) {
        px_client_reply_error(r, "ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR");
        return 1;
    }
    long long id;
    if (!px_string2ll(argv[2], argvlen[2], &id)) {
        px_client_reply_error(r, "ERR value is not an integer or out of range");
        return 1;
    }
    /* the blocked command runs on that client's own connection */
    px_client *o = id > 0 ? px_clients_find(&s->clients, (uint64_t)id) : NULL;
    if (!o || !o->pinned || !o->nblocking || !o->pinned->redis_id) {
        reply_int(r, 0);
        return 1;
    }
    char rid[24];
    snprintf(rid, sizeof(rid), "%lld", o->pinned->redis_id);
    const char *cmd[] = {"CLIENT", "UNBLOCK", rid, argc == 4 ? argv[3] : ""};
    const size_t len[] = {6, 7, strlen(rid), argc == 4 ? argvlen[3] : 0};
    px_resp_command(&c->rewrite, argc, cmd, len);
    c->rewrite_pool = o->pinned->pool; /* the id is that server's (a Cluster's nodes each count their own) */
    return 0;
}

/* HOTPROXY alone, or without its subcommand's argument. */
static int admin_usage(LOCAL_ARGS)
{
    (void)c, (void)argc, (void)argv, (void)argvlen;
    px_client_reply_error(r, "ERR unknown subcommand or wrong number of arguments for HOTPROXY. Try HOTPROXY "
                             "CACHE STATS|INVALIDATE|FLUSH|KEYS, HOTPROXY CONFIG GET|SET|RELOAD or HOTPROXY DEBUG REPOINT.");
    return 1;
}

/* HOTPROXY CACHE STATS|INVALIDATE|FLUSH|KEYS (admin users only: px_client
 * checks the table's PX_F_A before this runs) */
static int admin_cache(LOCAL_ARGS)
{
    px_server *s = c->set->owner;
    if (argc < 3) return admin_usage(c, r, argc, argv, argvlen);
    const char *sub = argv[2];
    size_t sublen = argvlen[2];
    if (eq(sub, sublen, "stats") && argc == 3) {
        px_buf b = {0};
        px_l1_info(s->l1, &b);
        reply_text(c, r, b.data, b.len);
        px_buf_free(&b);
    } else if (eq(sub, sublen, "invalidate") && argc >= 4) {
        reply_int(r, px_l1_invalidate_keys(s->l1, argc - 3, argv + 3, argvlen + 3));
    } else if (eq(sub, sublen, "flush") && argc == 3) {
        px_l1_flush(s->l1);
        reply_ok(r);
    } else if (eq(sub, sublen, "keys") && argc >= 4 && argc % 2 == 0) {
        long long count = 10, cursor = 0;
        for (int i = 4; i + 1 < argc; i += 2) {
            long long v;
            if (!px_string2ll(argv[i + 1], argvlen[i + 1], &v) || v < 0) {
                px_client_reply_error(r, "ERR value is not an integer or out of range");
                return 1;
            }
            if (eq(argv[i], argvlen[i], "count") && v > 0) count = v > 1000 ? 1000 : v;
            else if (eq(argv[i], argvlen[i], "cursor")) cursor = v;
            else {
                px_client_reply_error(r, "ERR syntax error");
                return 1;
            }
        }
        px_buf keys = {0}, b = {0};
        uint64_t next;
        long n = px_l1_keys(s->l1, argv[3], argvlen[3], (uint64_t)cursor, (long)count, &keys, &next);
        char cur[24];
        snprintf(cur, sizeof(cur), "%llu", (unsigned long long)next);
        px_buf_append(&b, "*2\r\n", 4);
        add_str(&b, cur);
        px_buf_appendf(&b, "*%ld\r\n", n);
        px_buf_append(&b, keys.data, keys.len);
        px_client_reply(r, b.data, b.len);
        px_buf_free(&keys);
        px_buf_free(&b);
    } else {
        px_client_reply_error(r, "ERR unknown subcommand or wrong number of arguments for 'HOTPROXY CACHE %.*s'",
                              (int)(sublen > 32 ? 32 : sublen), sub);
    }
    return 1;
}

/*
 * HOTPROXY DEBUG REPOINT host port (admin users only, as HOTPROXY CACHE): a
 * debugging aid that points the default pool at another server, as a
 * Sentinel failover will (px_router_repoint): what was in flight on the old
 * one gets an error, the L1 is flushed and fills nothing until the pool's
 * tracking link is up on the new one.  Not for production use.
 */
static int admin_debug(LOCAL_ARGS)
{
    px_server *s = c->set->owner;
    if (argc < 3) return admin_usage(c, r, argc, argv, argvlen);
    const char *sub = argv[2];
    size_t sublen = argvlen[2];
    if (eq(sub, sublen, "repoint") && argc == 5) {
        long long port;
        char host[256];
        if (!px_string2ll(argv[4], argvlen[4], &port) || port < 1 || port > 65535) {
            px_client_reply_error(r, "ERR invalid port");
            return 1;
        }
        if (argvlen[3] == 0 || argvlen[3] >= sizeof(host) || memchr(argv[3], '\0', argvlen[3])) {
            px_client_reply_error(r, "ERR invalid host");
            return 1;
        }
        memcpy(host, argv[3], argvlen[3]);
        host[argvlen[3]] = '\0';
        px_pool *p = px_router_default(s->router);
        if (!p) {
            px_client_reply_error(r, "ERR no pool to repoint");
            return 1;
        }
        px_router_repoint(s->router, p, host, (int)port, "HOTPROXY DEBUG REPOINT");
        reply_ok(r);
    } else {
        px_client_reply_error(r, "ERR unknown subcommand or wrong number of arguments for 'HOTPROXY DEBUG %.*s'",
                              (int)(sublen > 32 ? 32 : sublen), sub);
    }
    return 1;
}

/* HOTPROXY CONFIG GET|SET|RELOAD (admin users only, as HOTPROXY CACHE) */
static int admin_config(LOCAL_ARGS)
{
    px_server *s = c->set->owner;
    px_config *cfg = s->core.cfg;
    if (argc < 3) return admin_usage(c, r, argc, argv, argvlen);
    const char *sub = argv[2];
    size_t sublen = argvlen[2];
    if (eq(sub, sublen, "get") && argc == 4) {
        px_buf items = {0}, b = {0};
        char value[1024];
        const char *name;
        int n = 0;
        for (int i = 0; px_config_get(cfg, i, &name, value, sizeof(value)); i++) {
            if (!px_glob_match(argv[3], argvlen[3], name, strlen(name))) continue;
            add_str(&items, name);
            add_str(&items, value);
            n++;
        }
        px_buf_appendf(&b, c->proto >= 3 ? "%%%d\r\n" : "*%d\r\n", c->proto >= 3 ? n : 2 * n);
        px_buf_append(&b, items.data, items.len);
        px_client_reply(r, b.data, b.len);
        px_buf_free(&items);
        px_buf_free(&b);
    } else if (eq(sub, sublen, "set") && argc == 5) {
        char name[64], err[512];
        snprintf(name, sizeof(name), "%.*s", (int)(argvlen[3] > 63 ? 63 : argvlen[3]), argv[3]);
        char *value = px_memdup0(argv[4], argvlen[4]);
        if (!px_config_is_directive(name)) {
            px_client_reply_error(r, "ERR Unknown option '%s'", name);
        } else if (px_config_restart_only(name)) {
            px_client_reply_error(r, "ERR hotproxy: '%s' only changes with a restart", name);
        } else if (!strcasecmp(name, "cache-rule") || !strcasecmp(name, "user") || !strcasecmp(name, "refuse-command") ||
                   !strncasecmp(name, "tls-", 4) || !strncasecmp(name, "upstream-tls-", 13)) {
            /* tls-*, upstream-tls-*: a TLS context is made from the files at
             * reload, all of them together, and a reload keeps the running
             * one when the new one fails */
            px_client_reply_error(r, "ERR hotproxy: change '%s' in the config file, then HOTPROXY CONFIG RELOAD", name);
        } else if (px_config_set(cfg, name, 1, &value, err, sizeof(err)) != 0) {
            px_client_reply_error(r, "ERR %s", err);
        } else {
            s->core.log.level = (int)cfg->loglevel;
            px_l1_reconfigure(s->l1);
            px_log_notice(&s->core.log, "HOTPROXY CONFIG SET %s by client id=%llu", name, (unsigned long long)c->id);
            reply_ok(r);
        }
        free(value);
    } else if (eq(sub, sublen, "reload") && argc == 3) {
        char err[1024];
        if (px_server_reload(s, err, sizeof(err)) == 0) reply_ok(r);
        else px_client_reply_error(r, "ERR hotproxy: config not reloaded: %s", err);
    } else {
        px_client_reply_error(r, "ERR unknown subcommand or wrong number of arguments for 'HOTPROXY CONFIG %.*s'",
                              (int)(sublen > 32 ? 32 : sublen), sub);
    }
    return 1;
}

/* The position of CLIENT TRACKING's REDIRECT id, or -1. */
static int redirect_at(int argc, const char *const *argv, const size_t *argvlen)
{
    int at = -1;
    for (int i = 3; i + 1 < argc; i++)
        if (eq(argv[i], argvlen[i], "redirect")) at = i + 1;
    return at;
}

/* Who waits for a redirect target's Redis id: found again by id, since it
 * may be gone by the time the answer comes. */
typedef struct redirect_wait {
    px_clients *set;
    uint64_t id;
} redirect_wait;

static void redirect_target_known(struct px_upstream *u, void *ctx, const char *reply, size_t len)
{
    redirect_wait *w = ctx;
    (void)u;
    (void)reply;
    (void)len;
    px_client *c = px_clients_find(w->set, w->id);
    free(w);
    if (c) px_client_resume(c);
}

/* Whether CLIENT TRACKING's options name this one. */
static int tracking_option(int argc, const char *const *argv, const size_t *argvlen, const char *name)
{
    for (int i = 3; i < argc; i++)
        if (eq(argv[i], argvlen[i], name)) return 1;
    return 0;
}

/*
 * In front of a Redis Cluster a tracking client holds a connection of its
 * own on each master it reads from (px_client_track_switch), and each gets
 * its CLIENT TRACKING commands.  REDIRECT would need the target to hold one
 * on every master too, subscribed there; OPTIN/OPTOUT's CLIENT CACHING
 * speaks of the next command on one connection, which need not be the one
 * the next command goes to.  Both are refused, saying so.
 */
static int tracking_refused(px_client *c, px_req *r, const char *why)
{
    px_client_reply_error(r, "%s", why);
    if (!c->state) px_client_drop_pinned(c); /* pinned for this command alone */
    return -1;
}

/* Why hotproxy refuses this CLIENT TRACKING in front of a Cluster, or NULL.
 * Inside MULTI it would reach the other masters' connections at once, not
 * at EXEC. */
static const char *tracking_refusal(const px_client *c, int argc, const char *const *argv, const size_t *argvlen)
{
    if (redirect_at(argc, argv, argvlen) >= 0)
        return "ERR hotproxy: CLIENT TRACKING REDIRECT is not supported in front of a Redis Cluster: use RESP3 "
               "(HELLO 3) and CLIENT TRACKING without REDIRECT";
    if (tracking_option(argc, argv, argvlen, "optin") || tracking_option(argc, argv, argvlen, "optout"))
        return "ERR hotproxy: CLIENT TRACKING OPTIN and OPTOUT are not supported in front of a Redis Cluster: use "
               "the default mode or BCAST";
    if (c->state & PX_STATE_MULTI)
        return "ERR hotproxy: CLIENT TRACKING inside MULTI is not supported in front of a Redis Cluster";
    return NULL;
}

/* Send it on the client's other connections (px_client_track_cmd); the
 * outcome is kept for when the command itself is sent (tracking_across). */
static void tracking_send_others(px_client *c, int on, int argc, const char *const *argv, const size_t *argvlen)
{
    px_buf b = {0};
    px_resp_command(&b, argc, argv, argvlen);
    const char *err = NULL;
    int rc = px_client_track_cmd(c, b.data, b.len, on, tracking_option(argc, argv, argvlen, "bcast"), &err);
    px_buf_free(&b);
    c->track_prepared = c->ncommands + 1; /* dispatch counts the command before it is sent */
    c->track_err = rc == 0 ? NULL : err;
}

/*
 * Before it is dispatched: the command goes first to the client's other
 * masters' connections (BCAST: one opened on every master), and the client
 * waits until each has answered, so that when Redis' +OK reaches it,
 * tracking is on (or off) on every master, as on one Redis: a write made
 * anywhere after it is seen.
 */
static int tracking_prepare(px_client *c, int argc, const char *const *argv, const size_t *argvlen)
{
    if (px_client_track_unconfirmed(c)) return 0; /* resumed once they are in */
    if (c->track_prepared == c->ncommands + 1 || tracking_refusal(c, argc, argv, argvlen)) return 1;
    int on = argc >= 3 && eq(argv[2], argvlen[2], "on"), off = argc >= 3 && eq(argv[2], argvlen[2], "off");
    if (!on && !off) return 1; /* Redis' own error */
    if (!c->pinned && c->ninflight > 0) return 0; /* as any command that pins */
    tracking_send_others(c, on, argc, argv, argvlen);
    return !px_client_track_unconfirmed(c);
}

static int tracking_across(px_client *c, px_req *r, int argc, const char *const *argv, const size_t *argvlen)
{
    const char *why = tracking_refusal(c, argc, argv, argvlen);
    if (why) {
        if (c->state & PX_STATE_MULTI) c->multi_dirty = 1; /* as Redis: EXEC then aborts */
        return tracking_refused(c, r, why);
    }
    int on = argc >= 3 && eq(argv[2], argvlen[2], "on"), off = argc >= 3 && eq(argv[2], argvlen[2], "off");
    if (!on && !off) return 0; /* Redis' own error */
    if (c->track_prepared != c->ncommands) tracking_send_others(c, on, argc, argv, argvlen); /* not done before */
    c->track_prepared = 0;
    return c->track_err ? tracking_refused(c, r, c->track_err) : 0;
}

int px_local_tracking_ready(px_client *c, int argc, const char *const *argv, const size_t *argvlen)
{
    if (px_router_sharded(c->set->router)) return tracking_prepare(c, argc, argv, argvlen);
    int at = redirect_at(argc, argv, argvlen);
    px_client *o = at < 0 ? NULL : client_by_id(c->set->owner, argv[at], argvlen[at]);
    const char *err = NULL;
    if (!o || px_client_pin_redirect_target(o, &err) != 0 || o->pinned->redis_id || c->redirect_wait) {
        px_client_set_redirect_wait(c, 0); /* px_local_tracking answers, or sends it */
        return 1;
    }
    /* A connection just opened for the target: its CLIENT ID, asked first
     * thing, is on the way; the marker after it says when it is in. */
    px_client_set_redirect_wait(c, 1);
    redirect_wait *w = malloc(sizeof(*w));
    if (!w) abort();
    w->set = c->set;
    w->id = c->id;
    px_upstream_marker(o->pinned, redirect_target_known, w);
    return 0;
}

int px_local_tracking(px_client *c, px_req *r, int argc, const char *const *argv, const size_t *argvlen)
{
    if (px_router_sharded(c->set->router)) return tracking_across(c, r, argc, argv, argvlen);
    int at = redirect_at(argc, argv, argvlen);
    if (at < 0) return 0;
    px_client *o = client_by_id(c->set->owner, argv[at], argvlen[at]);
    const char *err = NULL;
    if (o && px_client_pin_redirect_target(o, &err) != 0 && err) {
        px_client_reply_error(r, "%s", err);
        return -1;
    }
    if (!o || !o->pinned || !o->pinned->redis_id) {
        px_client_reply_error(r, "ERR The client ID you want redirect to does not exist");
        return -1;
    }
    if (argc >= 3 && eq(argv[2], argvlen[2], "on")) px_client_set_track_redirect(c, o->id);
    char id[24];
    snprintf(id, sizeof(id), "%lld", o->pinned->redis_id);
    px_buf_appendf(&c->rewrite, "*%d\r\n", argc);
    for (int i = 0; i < argc; i++) px_resp_bulk(&c->rewrite, i == at ? id : argv[i], i == at ? strlen(id) : argvlen[i]);
    return 0;
}

static int do_ping(LOCAL_ARGS)
{
    if (c->pinned) return 0; /* Redis' answer depends on the connection's state */
    if (argc > 2) return arity_error(r, r->cmd);
    if (argc == 2) reply_bulk(r, argv[1], argvlen[1]);
    else px_client_reply(r, "+PONG\r\n", 7);
    return 1;
}

static int do_echo(LOCAL_ARGS)
{
    if (c->pinned) return 0;
    if (argc != 2) return arity_error(r, r->cmd);
    reply_bulk(r, argv[1], argvlen[1]);
    return 1;
}

static int do_quit(LOCAL_ARGS)
{
    (void)argc, (void)argv, (void)argvlen;
    px_client_close_after_reply(c);
    r->silent = 0;
    reply_ok(r);
    return 1;
}

static int do_reset_cmd(LOCAL_ARGS)
{
    (void)argv, (void)argvlen;
    if (argc != 1) return arity_error(r, r->cmd);
    return do_reset(c, r);
}

static int do_unsubscribe_cmd(LOCAL_ARGS)
{
    if (c->pinned) return 0;
    return do_unsubscribe(c, r, argc, argv, argvlen);
}

static int do_redact(LOCAL_ARGS)
{
    (void)c, (void)argc, (void)argv, (void)argvlen;
    r->hook = redact_hook;
    return 0;
}

static int do_info(LOCAL_ARGS)
{
    unsigned bits = info_sections(argc, argv, argvlen);
    r->hook_flags = bits & SEC_ALL;
    /* inside MULTI it goes to Redis all the same (which knows no such
     * section and says ""), to be queued there and answered in EXEC */
    if (!(bits & SEC_REDIS) && !(c->pinned && (c->state & PX_STATE_MULTI))) {
        px_local_info_alone(c, r);
        return 1;
    }
    r->hook = info_hook;
    return 0;
}

/*
 * The function of each handler the table marks PX_HP_LOCAL (and of no
 * other), indexed by the handler column; arity: the row's arity is checked
 * before it runs (the others check their own, with Redis' texts).
 */
static const struct {
    int (*fn)(LOCAL_ARGS);
    int arity;
} locals[PX_H__COUNT] = {
    [PX_H_REDACT] = {do_redact, 0},
    [PX_H_PING] = {do_ping, 0},
    [PX_H_ECHO] = {do_echo, 0},
    [PX_H_QUIT] = {do_quit, 0},
    [PX_H_INFO] = {do_info, 0},
    [PX_H_RESET] = {do_reset_cmd, 0},
    [PX_H_AUTH] = {do_auth, 0},
    [PX_H_HELLO] = {do_hello, 0},
    [PX_H_SELECT] = {do_select, 0},
    [PX_H_UNSUBSCRIBE] = {do_unsubscribe_cmd, 0},
    [PX_H_CLIENT_GETNAME] = {client_getname, 1},
    [PX_H_CLIENT_GETREDIR] = {client_getredir, 1},
    [PX_H_CLIENT_ID] = {client_id, 1},
    [PX_H_CLIENT_INFO] = {client_info, 1},
    [PX_H_CLIENT_KILL] = {client_kill_cmd, 1},
    [PX_H_CLIENT_LIST] = {client_list_cmd, 1},
    [PX_H_CLIENT_NO_EVICT] = {client_no_evict, 1},
    [PX_H_CLIENT_REPLY] = {client_reply, 1},
    [PX_H_CLIENT_SETINFO] = {client_setinfo, 1},
    [PX_H_CLIENT_SETNAME] = {client_setname, 1},
    [PX_H_CLIENT_TRACKINGINFO] = {client_trackinginfo, 1},
    [PX_H_CLIENT_UNBLOCK] = {client_unblock, 1},
    [PX_H_ADMIN] = {admin_usage, 0},
    [PX_H_ADMIN_CACHE] = {admin_cache, 0},
    [PX_H_ADMIN_CONFIG] = {admin_config, 0},
    [PX_H_ADMIN_DEBUG] = {admin_debug, 0},
};

int px_local_has_handler(px_handler h) { return h >= 0 && h < PX_H__COUNT && locals[h].fn != NULL; }

int px_local_handle(px_client *c, px_req *r, int argc, const char *const *argv, const size_t *argvlen)
{
    const px_command *cmd = r->cmd;
    if (!px_local_has_handler(cmd->handler)) {
        px_client_reply_error(r, "ERR hotproxy: no local handler for '%s'", cmd->name);
        return 1;
    }
    if (locals[cmd->handler].arity && !px_command_arity_ok(cmd, argc)) return arity_error(r, cmd);
    return locals[cmd->handler].fn(c, r, argc, argv, argvlen);
}
