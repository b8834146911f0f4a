/*
 * px_local: commands hotproxy answers itself.  See px_local.h.
 *
 * INFO is half local: Redis' own INFO is fetched (clients such as BullMQ
 * read redis_version from it) and hotproxy's sections are appended to it,
 * in Redis' format.  hotproxy's keys all start with "hotproxy_" so they never
 * shadow Redis' keys in a client that parses INFO into a map.
 */
#include "proxy/px_local.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "proxy/px_client.h"
#include "proxy/px_command.h"
#include "proxy/px_router.h"
#include "proxy/px_server.h"

enum {
    SEC_PROXY = 1 << 0,
    SEC_STATS = 1 << 1,
    SEC_UPSTREAM = 1 << 2,
    SEC_COMMANDS = 1 << 3,
    SEC_DEFAULT = SEC_PROXY | SEC_STATS | SEC_UPSTREAM,
    SEC_ALL = SEC_DEFAULT | SEC_COMMANDS,
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
        px_buf_appendf(out, "# Hotproxy\r\n");
        px_buf_appendf(out, "hotproxy_version:%s\r\n", HOTPROXY_VERSION);
        px_buf_appendf(out, "hotproxy_process_id:%d\r\n", (int)getpid());
        px_buf_appendf(out, "hotproxy_tcp_port:%lld\r\n", s->cfg->port);
        px_buf_appendf(out, "hotproxy_uptime_in_seconds:%lld\r\n", (long long)(px_now(s) - s->start_time));
        px_buf_appendf(out, "hotproxy_config_file:%s\r\n", s->cfg->config_file ? s->cfg->config_file : "");
        px_buf_appendf(out, "hotproxy_connected_clients:%ld\r\n", s->nclients);
        px_buf_appendf(out, "hotproxy_maxclients:%lld\r\n", s->cfg->maxclients);
    }
    if (bits & SEC_STATS) {
        if (out->len) px_buf_append(out, "\r\n", 2);
        px_buf_appendf(out, "# Hotproxy_stats\r\n");
        px_buf tmp = {0};
        px_stats_info(&s->stats, &tmp);
        /* prefix every key */
        const char *p = tmp.data, *end = tmp.data + tmp.len;
        while (p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            size_t n = nl ? (size_t)(nl - p + 1) : (size_t)(end - p);
            px_buf_append(out, "hotproxy_", 9);
            px_buf_append(out, p, n);
            p += n;
        }
        px_buf_free(&tmp);
    }
    if (bits & SEC_UPSTREAM) {
        if (out->len) px_buf_append(out, "\r\n", 2);
        px_buf_appendf(out, "# Hotproxy_upstream\r\n");
        s->router->info(s->router, out);
    }
    if (bits & SEC_COMMANDS) {
        if (out->len) px_buf_append(out, "\r\n", 2);
        px_buf_appendf(out, "# Hotproxy_commandstats\r\n");
        px_buf tmp = {0};
        px_stats_info_commands(&s->stats, &tmp);
        const char *p = tmp.data, *end = tmp.data + tmp.len;
        while (p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            size_t n = nl ? (size_t)(nl - p + 1) : (size_t)(end - p);
            px_buf_append(out, "hotproxy_", 9);
            px_buf_append(out, p, n);
            p += n;
        }
        px_buf_free(&tmp);
    }
}

static void reply_bulk(px_req *r, const char *p, size_t n)
{
    px_buf b = {0};
    px_buf_appendf(&b, "$%zu\r\n", n);
    px_buf_append(&b, p, n);
    px_buf_append(&b, "\r\n", 2);
    px_client_reply(r, b.data, b.len);
    px_buf_free(&b);
}

/* The hook on a forwarded INFO: Redis' text, then hotproxy's sections. */
static int info_hook(px_req *r, const char *reply, size_t len, px_buf *out)
{
    const char *text;
    size_t tlen;
    if (px_reply_string(reply, len, &text, &tlen) != 0 || reply[0] == '-' || !r->client) return 0;
    px_buf body = {0};
    px_buf_append(&body, text, tlen);
    while (body.len >= 2 && body.data[body.len - 1] == '\n') body.len -= body.data[body.len - 2] == '\r' ? 2 : 1;
    append_sections(r->client->srv, r->hook_flags, &body);
    px_buf_append(&body, "\r\n", 2);
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

void px_local_info_alone(px_client *c, px_req *r)
{
    px_buf body = {0};
    append_sections(c->srv, r->hook_flags ? r->hook_flags : SEC_DEFAULT, &body);
    px_buf_append(&body, "\r\n", 2);
    reply_bulk(r, body.data, body.len);
    px_buf_free(&body);
}

static int arity_error(px_req *r, const px_command *cmd)
{
    px_client_reply_error(r, "ERR wrong number of arguments for '%s' command", cmd->name);
    return 1;
}

int px_local_handle(px_client *c, px_req *r, int argc, const char *const *argv, const size_t *argvlen)
{
    const px_command *cmd = r->cmd;
    switch (cmd->handler) {
    case PX_H_PING:
        if (argc > 2) return arity_error(r, cmd);
        if (argc == 2) reply_bulk(r, argv[1], argvlen[1]);
        else px_client_reply(r, "+PONG\r\n", 7);
        return 1;
    case PX_H_ECHO:
        if (argc != 2) return arity_error(r, cmd);
        reply_bulk(r, argv[1], argvlen[1]);
        return 1;
    case PX_H_QUIT:
        c->flags |= PX_CLIENT_CLOSE_AFTER_REPLY;
        px_client_reply(r, "+OK\r\n", 5);
        return 1;
    case PX_H_RESET:
        if (argc != 1) return arity_error(r, cmd);
        px_client_reply(r, "+RESET\r\n", 8);
        return 1;
    case PX_H_INFO: {
        unsigned bits = info_sections(argc, argv, argvlen);
        r->hook_flags = bits & SEC_ALL;
        if (!(bits & SEC_REDIS)) {
            px_local_info_alone(c, r);
            return 1;
        }
        r->hook = info_hook;
        return 0;
    }
    default:
        px_client_reply_error(r, "ERR hotproxy: no local handler for '%s'", cmd->name);
        return 1;
    }
}
