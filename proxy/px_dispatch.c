/*
 * px_dispatch: what happens to each command a client sends — refused,
 * answered by hotproxy (px_local), from the L1 (px_l1), or forwarded to the
 * pool the router names, on the client's own connection or a shared one.
 * The command table decides (px_commands.def: each handler's row); this file
 * applies it.  It sits above the client, the L1 and the local commands and
 * is handed to the client side as its px_client_ops, so nothing below calls
 * up into it.
 */
#include "proxy/px_dispatch.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proxy/px_client.h"
#include "proxy/px_command.h"
#include "proxy/px_l1.h"
#include "proxy/px_local.h"
#include "proxy/px_policy.h"
#include "proxy/px_router.h"
#include "proxy/px_server.h"
#include "proxy/px_split.h"
#include "proxy/px_upstream.h"

/*
 * Send r's command on u: first what the L1 does with it (a write drops the
 * keys it names; a read may be answered from the L1 or join a fill), then
 * forwarded.  noreply and oob: see px_client_forward.
 */
static void send_on(px_server *s, px_client *c, px_req *r, struct px_upstream *u, const char *raw, size_t rawlen,
                    int noreply, int oob)
{
    px_buf tmp = {0};
    if (c->rewrite.len) {
        raw = c->rewrite.data;
        rawlen = c->rewrite.len;
    } else if (c->parser.type == 'i') {
        px_resp_command(&tmp, c->parser.argc, c->argv, c->argvlen); /* it arrived inline */
        raw = tmp.data;
        rawlen = tmp.len;
    }
    px_l1_write(s->l1, c, r, u);
    px_req_path(r, PX_PATH_FORWARDED); /* unless the L1 answers it (px_l1_read says which way) */
    if (u == c->pinned || !px_l1_read(s->l1, c, r, u, raw, rawlen)) px_client_forward(c, r, u, raw, rawlen, noreply, oob);
    px_buf_free(&tmp);
}

/*
 * What a command sent on the pinned connection does to the client's state:
 * its handler's row says (px_commands.def).  Returns 1 when what Redis sends
 * back is not a reply to it (see send_on).
 */
static int apply_state(px_client *c, px_req *r, px_handler h, int argc)
{
    struct px_upstream *u = c->pinned;
    const px_handler_info *hi = &px_handlers[h];
    if ((hi->props & PX_HP_OUTSIDE_MULTI) && (c->state & PX_STATE_MULTI)) return u->raw; /* Redis queues it */
    /* What Redis refuses changes nothing there: a wrong number of arguments
     * (EXEC x inside MULTI leaves Redis in MULTI), or EXEC / DISCARD outside
     * a transaction (Redis keeps the WATCHed keys).  hotproxy's picture of
     * the connection must not drift from Redis' own, or a marker would wait
     * behind a MULTI Redis still holds. */
    if (r->cmd && !px_command_arity_ok(r->cmd, argc)) return u->raw;
    unsigned sets = hi->sets, clears = hi->clears;
    if ((clears & PX_STATE_MULTI) && !(c->state & PX_STATE_MULTI)) clears = 0;
    if (hi->props & PX_HP_ONOFF) {
        int on = argc >= 3 && c->argvlen[2] == 2 && !strncasecmp(c->argv[2], "on", 2);
        int off = argc >= 3 && c->argvlen[2] == 3 && !strncasecmp(c->argv[2], "off", 3);
        if (!on) sets = 0;
        if (!off) clears = 0;
    }
    c->state = (c->state & ~clears) | sets;
    if (clears & PX_STATE_TRACKING) c->track_redir = 0;
    if ((hi->props & PX_HP_RAW) && c->proto == 2) u->raw = 1;
    if (hi->props & PX_HP_BLOCKING) {
        r->up.blocking = 1;
        c->nblocking++;
    }
    if (hi->props & PX_HP_PUSHES) return u->raw || c->proto == 3;
    return u->raw;
}

/*
 * WAIT counts the replicas that acknowledged the replication offset its
 * connection reached with its previous command (Redis 7.0 sets c->woff to
 * the master offset after every command it runs).  A client's writes go on
 * a shared connection, and WAIT must not block that one; it runs on a
 * connection of the client's own instead, once the client's in-flight
 * requests are answered (PX_HP_PIN holds it until then).  That connection's
 * previous command may be older than those writes (a spare's last was its
 * RESET), so a PING goes just ahead of WAIT: the offset WAIT then waits for
 * is at least the one every write the client got answered reached.  WAIT
 * may wait for more (other clients' writes too), never for less.  If the
 * PING is refused (an ACL without it) the offset is not known to cover the
 * writes, and WAIT's answer is replaced by an error rather than trusted.
 */
static int wait_unfenced(px_req *r, const char *reply, size_t len, px_buf *out)
{
    (void)r;
    (void)reply;
    (void)len;
    px_buf_appendf(out, "-ERR hotproxy: WAIT could not be ordered after this connection's writes "
                        "(the upstream refused PING)\r\n");
    return 1;
}

static void wait_fenced(struct px_upstream *u, void *ctx, const char *reply, size_t len)
{
    px_req *r = ctx; /* queued right behind the PING on u, so still alive */
    /* (a connection failing answers both with its own error: leave that be) */
    if (u->state == PX_UP_READY && len && (reply[0] == '-' || reply[0] == '!')) r->hook = wait_unfenced;
}

static void wait_fence(struct px_upstream *u, px_req *r)
{
    px_upstream_send_internal(u, "*1\r\n$4\r\nPING\r\n", 14, wait_fenced, r);
}

/* The pool the command being dispatched belongs to (the topology decides);
 * when none, *why may say why (a Cluster's CROSSSLOT). */
static px_pool *route(px_client *c, const px_command *cmd, int argc, const char **why)
{
    px_route_args a = {cmd, argc, c->argv, c->argvlen, why};
    return px_router_route(c->set->router, &a);
}

static void ignore_reply(struct px_upstream *u, void *ctx, const char *reply, size_t len);

/*
 * Keys spread over servers (a Cluster), and c on a connection of its own
 * (MULTI, WATCH, a subscription): Redis Cluster runs a transaction on the
 * node of its keys.  MULTI pinned c to the first master; when its first
 * queued command names keys of another node, c moves there (that node gets
 * MULTI, the first connection is reset): returns 1.  With WATCH alone, a
 * command of another node's keys goes there on a shared connection (it
 * cannot touch the watched keys): returns 2.  A key of another node later
 * in MULTI (or WATCH's node is not its), or in pub/sub, sets *crossed and
 * *why: the command gets CROSSSLOT, and in MULTI the transaction aborts at
 * EXEC, as Redis Cluster does.  0: it may go on c's connection (unless
 * crossed, or *err: no connection to move to); -1: it must wait for c's
 * replies first (MULTI's +OK from the first node).
 */
static int pinned_keys(px_client *c, const px_command *cmd, int argc, int *crossed, const char **why,
                       const char **err)
{
    int pos;
    *crossed = 0;
    if (!cmd || px_command_keys(cmd, argc, c->argv, c->argvlen, &pos, 1) < 1) return 0;
    px_pool *pool = route(c, cmd, argc, why);
    if (!pool) {
        *crossed = *why != NULL;
        return 0;
    }
    if (pool == c->pinned->pool) return 0;
    if (c->state == PX_STATE_WATCH && !(cmd->flags & PX_F_PS)) return 2;
    if (c->state != PX_STATE_MULTI || c->multi_queued > 0) {
        *crossed = 1;
        *why = "CROSSSLOT Keys in request don't hash to the same slot";
        return 0;
    }
    if (c->ninflight > 0) return -1;
    struct px_upstream *nu = px_client_pin(c, pool, err);
    if (!nu) return 0; /* *err says why: refused below */
    px_client_drop_pinned(c);
    c->pinned = nu;
    px_upstream_send_internal(nu, "*1\r\n$5\r\nMULTI\r\n", 15, ignore_reply, NULL);
    return 1;
}

/* Redis' @admin and @dangerous commands are for admin users, once users
 * are configured (the table's PX_F_A and PX_F_DG say which). */
static int permitted(const px_client *c, const px_command *cmd)
{
    const px_config *cfg = c->set->core->cfg;
    if (!px_command_admin_only(cmd) || !px_config_auth_required(cfg)) return 1;
    const px_user *u = c->user ? px_config_user(cfg, c->user, strlen(c->user)) : NULL;
    return u && u->admin;
}

static const char execabort[] = "-EXECABORT Transaction discarded because of previous errors.\r\n";

/* EXEC of a transaction hotproxy refused a command of: Redis got DISCARD. */
static int execabort_hook(px_req *r, const char *reply, size_t len, px_buf *out)
{
    (void)r;
    if (len && reply[0] == '-') return 0;
    px_buf_append(out, execabort, sizeof(execabort) - 1);
    return 1;
}

static void ignore_reply(struct px_upstream *u, void *ctx, const char *reply, size_t len)
{
    (void)u;
    (void)ctx;
    (void)reply;
    (void)len;
}

/* Run a queued local command now; its reply is appended to out. */
static void run_deferred(px_client *c, const px_multi_cmd *m, px_buf *out)
{
    px_server *s = c->set->owner;
    px_req_parser p;
    px_req_parser_init(&p, s->core.cfg->proto_max_bulk_len);
    if (px_req_parse(&p, m->local, m->local_len) != PX_OK || p.argc < 1) {
        px_buf_append(out, "-ERR hotproxy: queued command lost\r\n", 36);
        px_req_parser_free(&p);
        return;
    }
    const char **argv = calloc((size_t)p.argc, sizeof(*argv));
    size_t *argvlen = calloc((size_t)p.argc, sizeof(*argvlen));
    if (!argv || !argvlen) abort();
    for (int i = 0; i < p.argc; i++) argv[i] = px_req_arg(&p, m->local, i, &argvlen[i]);
    px_req tmp = {0};
    tmp.set = c->set;
    tmp.client = c;
    tmp.capture = out;
    tmp.cmd = px_command_lookup(argv[0], argvlen[0], p.argc > 1 ? argv[1] : NULL, p.argc > 1 ? argvlen[1] : 0);
    size_t before = out->len;
    c->rewrite.len = c->rewrite.rpos = 0;
    if (!tmp.cmd || !px_local_handle(c, &tmp, p.argc, argv, argvlen)) {
        /* it would go to Redis (CLIENT UNBLOCK of a blocked client): send it
         * on, its effect is what counts; or say it cannot run here */
        if (c->rewrite.len && c->pinned) {
            px_upstream_send_internal(c->pinned, c->rewrite.data, c->rewrite.len, ignore_reply, NULL);
            px_buf_append(out, ":1\r\n", 4);
        } else if (out->len == before) {
            px_buf_append(out, "-ERR hotproxy: this command cannot run inside MULTI\r\n", 53);
        }
    }
    c->rewrite.len = c->rewrite.rpos = 0;
    free(argv);
    free(argvlen);
    px_req_parser_free(&p);
}

/*
 * EXEC's reply, with hotproxy's part of the transaction: Redis' array holds
 * the forwarded commands' replies; the local ones are run now and put at
 * their places, and each forwarded reply goes through its own hook.  A null
 * (WATCH) or an error (EXECABORT) is Redis' answer for all of it.
 */
static int exec_hook(px_req *r, const char *reply, size_t len, px_buf *out)
{
    px_client *c = r->client;
    long long n;
    const char *nl = memchr(reply, '\n', len);
    if (c) c->exec_local--;
    if (!c || !nl || reply[0] != '*' || !px_string2ll(reply + 1, (size_t)(nl - reply - 2), &n) || n < 0) return 0;
    int nlocal = 0;
    for (int i = 0; i < r->mq_len; i++) nlocal += r->mq[i].local != NULL;
    px_buf_appendf(out, "*%lld\r\n", n + nlocal);
    const char *p = nl + 1, *end = reply + len;
    /* inside EXEC the client is still in MULTI for what it asks (CLIENT INFO's flags=x) */
    unsigned state = c->state;
    c->state |= PX_STATE_MULTI;
    c->multi_queued = r->mq_len;
    for (int i = 0; i < r->mq_len; i++) {
        const px_multi_cmd *m = &r->mq[i];
        if (m->local) {
            run_deferred(c, m, out);
            continue;
        }
        size_t elen = p < end ? px_reply_len(p, (size_t)(end - p)) : 0;
        if (!elen) break;
        px_buf hooked = {0};
        px_req h = {0};
        h.set = r->set;
        h.client = c;
        h.hook_flags = m->hook_flags;
        if (m->hook && m->hook(&h, p, elen, &hooked)) px_buf_append(out, hooked.data, hooked.len);
        else px_buf_append(out, p, elen);
        px_buf_free(&hooked);
        p += elen;
    }
    if (p < end) px_buf_append(out, p, (size_t)(end - p)); /* never expected: keep Redis' bytes */
    c->state = (c->state & ~(unsigned)PX_STATE_MULTI) | (state & PX_STATE_MULTI);
    c->multi_queued = 0;
    return 1;
}

/* EXEC: the transaction's bookkeeping moves to its request. */
static void exec_prepare(px_client *c, px_req *r)
{
    if (c->multi_dirty) {
        c->rewrite.len = c->rewrite.rpos = 0;
        px_buf_append(&c->rewrite, "*1\r\n$7\r\nDISCARD\r\n", 17);
        r->hook = execabort_hook;
    } else {
        int needed = 0;
        for (int i = 0; i < c->mq_len; i++) needed |= c->mq[i].local != NULL || c->mq[i].hook != NULL;
        if (needed) {
            r->mq = c->mq;
            r->mq_len = c->mq_len;
            c->mq = NULL;
            c->mq_len = c->mq_cap = 0;
            r->hook = exec_hook;
            c->exec_local++;
        }
    }
    px_client_multi_reset(c);
}

/*
 * A client whose MULTI or WATCH a failover took (px_client_pinned_lost):
 * the new master is in no transaction of its, so nothing it queues may go
 * there (it would run at once).  hotproxy answers its transaction as Redis
 * answers one that cannot succeed: commands are QUEUED and never sent, EXEC
 * fails with EXECABORT (in Redis' words for a discarded transaction) and
 * ends it, DISCARD ends it, UNWATCH outside MULTI and RESET clear it.
 * lost_takes says which commands lost_transaction answers.
 */
static const char execabort_moved[] =
    "-EXECABORT Transaction discarded because the upstream master changed (failover).\r\n";

static int lost_takes(const px_client *c, px_handler h)
{
    const px_handler_info *hi = &px_handlers[h];
    if ((hi->sets | hi->clears) & (PX_STATE_MULTI | PX_STATE_WATCH)) return 1; /* MULTI WATCH EXEC DISCARD UNWATCH */
    return (c->state & PX_STATE_MULTI) && !(hi->props & PX_HP_AT_ONCE);    /* queued (not QUIT, RESET) */
}

static void lost_end(px_client *c)
{
    c->tx_lost = 0;
    c->state &= ~(unsigned)PX_STATE_MULTI;
    c->multi_queued = 0;
    px_client_multi_reset(c);
    px_client_maybe_unpin(c);
}

static void lost_transaction(px_client *c, px_req *r, px_handler h, int argc)
{
    const px_handler_info *hi = &px_handlers[h];
    int in_multi = (c->state & PX_STATE_MULTI) != 0;
    if (r->cmd && !px_command_arity_ok(r->cmd, argc)) {
        px_client_reply_error(r, "ERR wrong number of arguments for '%s' command", r->cmd->name);
    } else if (hi->props & PX_HP_EXEC) {
        if (!in_multi) {
            px_client_reply_error(r, "ERR EXEC without MULTI");
            return;
        }
        lost_end(c);
        px_client_reply(r, execabort_moved, sizeof(execabort_moved) - 1);
    } else if ((hi->clears & PX_STATE_MULTI) && !(hi->props & PX_HP_EXEC)) {
        if (!in_multi) {
            px_client_reply_error(r, "ERR DISCARD without MULTI");
            return;
        }
        lost_end(c);
        px_client_reply(r, "+OK\r\n", 5);
    } else if (hi->sets & PX_STATE_MULTI) {
        if (in_multi) {
            px_client_reply_error(r, "ERR MULTI calls can not be nested");
            return;
        }
        c->state |= PX_STATE_MULTI;
        c->multi_queued = 0;
        px_client_reply(r, "+OK\r\n", 5);
    } else if ((hi->sets & PX_STATE_WATCH) && in_multi) {
        px_client_reply_error(r, "ERR WATCH inside MULTI is not allowed");
    } else if (in_multi) {
        px_client_reply(r, "+QUEUED\r\n", 9); /* UNWATCH inside MULTI is queued too */
    } else {
        if (hi->clears & PX_STATE_WATCH) c->tx_lost = 0; /* UNWATCH; a WATCH keeps it lost */
        px_client_reply(r, "+OK\r\n", 5);
    }
}

/* A command queued in MULTI that hotproxy answers with an error itself:
 * as Redis, the transaction is then aborted at EXEC. */
static void refuse(px_client *c, px_req *r, int queueing, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void refuse(px_client *c, px_req *r, int queueing, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (queueing) c->multi_dirty = 1;
    px_client_reply_error(r, "%s", msg);
}

/*
 * Returns 0 when the command must wait (it would run on another connection
 * than the client's in-flight commands: they must be answered first, so
 * Redis sees the client's commands in order); it stays unread.
 */
static int dispatch(void *arg, px_client *c, const char *raw, size_t rawlen)
{
    px_server *s = arg;
    int argc = c->parser.argc;
    if (argc > c->argv_cap) {
        c->argv_cap = argc < 16 ? 16 : argc;
        c->argv = realloc(c->argv, sizeof(*c->argv) * (size_t)c->argv_cap);
        c->argvlen = realloc(c->argvlen, sizeof(*c->argvlen) * (size_t)c->argv_cap);
        if (!c->argv || !c->argvlen) abort();
    }
    for (int i = 0; i < argc; i++) c->argv[i] = px_req_arg(&c->parser, raw, i, &c->argvlen[i]);

    /* A subscriber's last frames are still coming (see on_marker): what it
     * sends now must not go out as a frame nobody waits for. */
    if (c->pinned && c->markers > 0) return 0;
    /* A failover's re-subscribe is not confirmed yet: its frames come first. */
    if (px_client_rebuilding(c)) return 0;
    /* An EXEC runs its local commands when its reply comes: what the client
     * sent after it must see their effects (CLIENT SETNAME), so it waits. */
    if (c->exec_local > 0) return 0;
    const px_command *cmd = px_command_lookup_hint(&c->cmd_hint, c->argv[0], c->argvlen[0], argc > 1 ? c->argv[1] : NULL,
                                                   argc > 1 ? c->argvlen[1] : 0);
    /* What it does is its handler's row in px_commands.def: hp says. */
    px_handler h = px_command_handler(cmd, argc, c->argv, c->argvlen);
    unsigned hp = px_handler_props(h);
    int upstream = (hp & PX_HP_UPSTREAM) || (c->pinned && (hp & PX_HP_PINNED_UPSTREAM));
    int authorized = c->authenticated || (hp & PX_HP_NOAUTH);
    int allowed = !authorized || permitted(c, cmd);
    const char *refused = cmd && authorized && allowed && s->refused[px_command_index(cmd)] ? cmd->name : NULL;
    int queueing = (c->state & PX_STATE_MULTI) && !(hp & PX_HP_AT_ONCE);
    int deferred = queueing && (hp & PX_HP_DEFERRED);
    /* a Cluster's node commands: hotproxy shows the Cluster as one Redis */
    int node_only = cmd && (cmd->flags & PX_F_CLUSTER_ONLY) && px_router_sharded(c->set->router);
    if (!authorized || !allowed || refused || (hp & PX_HP_DENY) || deferred || node_only) upstream = 0;
    int lost = c->tx_lost && authorized && allowed && !refused && !(hp & PX_HP_DENY) && !node_only && lost_takes(c, h);
    if (lost) upstream = 0;
    if ((hp & PX_HP_TRACKING) && upstream && !px_local_tracking_ready(c, argc, c->argv, c->argvlen)) return 0;

    /* The topology cannot route yet (a Cluster's first map): the command
     * waits unread, and the server wakes the client (px_router_wait_over). */
    if (upstream && px_router_waiting(c->set->router)) return 0;

    /* Decide the connection before anything happens, so a command can wait. */
    px_pool *pool = NULL;
    struct px_upstream *u = NULL;
    const char *err = NULL;
    const char *why = NULL; /* the topology's reason for no pool */
    int oob = 0;
    px_split_plan *split = NULL; /* keys spread over servers: one command per server (px_split) */
    const char *split_err = NULL;
    if (upstream && !c->pinned && !(c->state & PX_STATE_MULTI)) {
        int wait;
        split = px_split_plan_make(c, cmd, argc, s->l1, &wait, &split_err);
        if (split && wait) {
            px_split_plan_free(split);
            return 0;
        }
    }
    if (upstream && !split) {
        if ((hp & PX_HP_PIN) && !c->pinned) {
            if (c->ninflight > 0) return 0;
            pool = route(c, cmd, argc, &why);
            if (pool) c->pinned = px_client_pin(c, pool, &err);
        }
        int crossed = 0, elsewhere = 0;
        if (c->pinned && px_router_sharded(c->set->router)) {
            elsewhere = pinned_keys(c, cmd, argc, &crossed, &why, &err);
            if (elsewhere < 0) return 0;
            elsewhere = elsewhere == 2;
        }
        if (crossed || err) {
            pool = NULL; /* refused below, with why or err */
        } else if (elsewhere) {
            u = (pool = route(c, cmd, argc, &why)) ? px_client_pick(c, pool) : NULL;
        } else if (c->pinned) {
            u = c->pinned;
        } else if (hp & PX_HP_OOB) {
            /* At once, on a connection of its own: not behind the client's
             * own requests either, which may sit behind the same slow
             * command (with Redis direct they would have been refused with
             * BUSY and this one run).  Its database and protocol are not the
             * client's; these commands answer the same in any. */
            oob = 1;
            u = (pool = route(c, cmd, argc, &why)) ? px_pool_open_oob(pool) : NULL;
        } else if (!err) {
            u = (pool = route(c, cmd, argc, &why)) ? px_client_pick(c, pool) : NULL;
        }
        /* one connection per pool at a time: Redis sees c's commands to one
         * server in order (another pool's are independent of these) */
        if (u && !oob) {
            struct px_upstream *on = px_client_inflight_on(c, u->pool);
            if (on && on != u) return 0;
        }
    } else if ((hp & PX_HP_UNPINS) && c->ninflight > 0) {
        return 0; /* RESET drops the pinned connection: let it answer first */
    }

    s->core.stats.commands_processed++;
    s->core.stats.cmd_calls[cmd ? px_command_index(cmd) : px_command_count()]++;
    c->ncommands++;
    c->last_cmd = cmd ? cmd->name : "unknown";
    if ((px_handlers[h].sets | px_handlers[h].clears) & PX_STATE_MULTI) c->multi_queued = 0;
    else if (c->state & PX_STATE_MULTI) c->multi_queued++;
    px_req *r = px_client_req_new(c);
    r->cmd = cmd;
    if (s->core.cfg->latency_tracking) r->t0 = px_lat_start(&s->core);
    if (c->reply_mode) {
        r->silent = 1;
        if (c->reply_mode == 2) c->reply_mode = 0;
    }
    c->rewrite.len = c->rewrite.rpos = 0;

    if (!authorized) {
        refuse(c, r, queueing, "NOAUTH Authentication required.");
        return 1;
    }
    if (!allowed) {
        s->core.stats.commands_refused++;
        refuse(c, r, queueing, "NOPERM this user has no permissions to run the '%s' command", cmd->name);
        return 1;
    }
    if (refused || (hp & PX_HP_DENY)) {
        s->core.stats.commands_refused++;
        refuse(c, r, queueing, "ERR hotproxy: '%s' is refused by this proxy%s", cmd->name,
               (hp & PX_HP_DENY) ? " (replication does not go through a proxy)" : "");
        return 1;
    }
    if (node_only) {
        s->core.stats.commands_refused++;
        refuse(c, r, queueing,
               "ERR hotproxy: '%s' is not available: hotproxy shows the Redis Cluster behind it as one standalone "
               "Redis (CLUSTER KEYSLOT and CLUSTER INFO are)",
               cmd->name);
        return 1;
    }
    if (lost) {
        s->core.stats.commands_local++;
        lost_transaction(c, r, h, argc);
        return 1;
    }
    if (deferred) {
        if (!px_command_arity_ok(cmd, argc)) {
            refuse(c, r, 1, "ERR wrong number of arguments for '%s' command", cmd->name);
            return 1;
        }
        px_multi_cmd *m = px_client_mq_push(c);
        px_buf b = {0};
        if (c->parser.type == 'i') px_resp_command(&b, argc, c->argv, c->argvlen); /* it arrived inline */
        else px_buf_append(&b, raw, rawlen);
        m->local = b.data;
        m->local_len = b.len;
        s->core.stats.commands_local++;
        px_client_reply(r, "+QUEUED\r\n", 9);
        return 1;
    }
    if (split) {
        if (split_err) {
            s->core.stats.upstream_error_replies++;
            refuse(c, r, queueing, "%s", split_err);
            px_split_plan_free(split);
        } else {
            px_split_send(split, c, r, s->l1); /* it takes the plan */
        }
        return 1;
    }
    if (!upstream || (hp & PX_HP_LOCAL)) {
        /* local, or local first (INFO's hook, SELECT's database, CLIENT UNBLOCK's id) */
        if (px_local_handle(c, r, argc, c->argv, c->argvlen)) {
            s->core.stats.commands_local++;
            return 1;
        }
        /* a local handler that forwards: on the client's own connection if it has one */
        if (!u) u = c->pinned ? c->pinned : (pool = route(c, cmd, argc, &why)) ? px_client_pick(c, pool) : NULL;
    }
    if (!u) {
        if (err) {
            s->core.stats.commands_refused++;
            refuse(c, r, queueing, "%s", err);
        } else if (why && !pool) {
            refuse(c, r, queueing, "%s", why);
        } else if (hp & PX_HP_ALONE) {
            px_local_info_alone(c, r);
        } else {
            s->core.stats.upstream_error_replies++;
            refuse(c, r, queueing, "ERR %s", pool ? px_pool_unavailable(pool) : "no upstream for this command");
        }
        return 1;
    }
    if ((hp & PX_HP_TRACKING) && px_local_tracking(c, r, argc, c->argv, c->argvlen) < 0) {
        px_client_maybe_unpin(c);
        return 1;
    }
    if (queueing && u == c->pinned) {
        /* its reply comes inside EXEC's: the hook waits for it there */
        px_multi_cmd *m = px_client_mq_push(c);
        m->hook = r->hook;
        m->hook_flags = r->hook_flags;
        r->hook = NULL;
    } else if ((hp & PX_HP_EXEC) && (c->state & PX_STATE_MULTI)) {
        exec_prepare(c, r);
    } else if (((px_handlers[h].clears & PX_STATE_MULTI) && (c->state & PX_STATE_MULTI)) ||
               ((px_handlers[h].sets & PX_STATE_MULTI) && !(c->state & PX_STATE_MULTI))) {
        px_client_multi_reset(c); /* DISCARD, or a MULTI that begins one */
    }
    px_policy_write_ttl(c, r, &s->core.rng);
    int noreply = u == c->pinned ? apply_state(c, r, h, argc) : 0;
    if ((hp & PX_HP_FENCE) && !noreply && !(c->state & PX_STATE_MULTI)) wait_fence(u, r);
    if ((hp & PX_HP_TRACKING) && u == c->pinned) px_upstream_no_reuse(u);
    send_on(s, c, r, u, raw, rawlen, noreply, oob);
    if ((hp & PX_HP_MAY_END_RAW) && u == c->pinned && u->raw) {
        /* In RESP2 pub/sub mode only a marker's token tells a reply from a
         * frame.  Whether this UNSUBSCRIBE ends that mode is known once its
         * frames are in, so the client's next command waits for a marker
         * sent right behind it: sent later, it could follow a MULTI that
         * went out meanwhile, be answered +QUEUED and never come back. */
        px_client_marker(c, u);
    }
    return 1;
}
/* The L1's part of a reply: its barrier may hold it; a write's second
 * invalidation (see px_l1.h). */
static int completing(void *arg, px_req *r, const char *data, size_t len)
{
    px_server *s = arg;
    if (r->barrier && px_l1_barrier(s->l1, r, data, len)) return 1;
    if (r->writes) px_l1_written(s->l1, r);
    return 0;
}

const px_client_ops px_dispatch_ops = {
    .dispatch = dispatch,
    .completing = completing,
};
