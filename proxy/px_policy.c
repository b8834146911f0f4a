/*
 * px_policy: upstream TTL jitter.  See px_policy.h.
 */
#include "proxy/px_policy.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "proxy/px_client.h"
#include "proxy/px_command.h"
#include "proxy/px_config.h"
#include "proxy/px_server.h"

long long px_policy_spread(long long ttl, long long pct, long long floor, double u)
{
    /* beyond ~31,000 years Redis' own expiry arithmetic is near its limit:
     * such a TTL is left as written */
    if (ttl <= 0 || pct <= 0 || ttl > 1000000000000000LL) return ttl;
    double delta = (double)ttl * (double)pct / 100.0 * (u * 2.0 - 1.0);
    long long out = llround((double)ttl + delta);
    long long lowest = floor < ttl ? floor : ttl;
    if (out < lowest) out = lowest;
    return out < 1 ? 1 : out;
}

static double uniform(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return (double)((*s * 0x2545F4914F6CDD1DULL) >> 11) / (double)(1ULL << 53);
}

/* Where the TTL is: its argument index and whether it is in seconds. */
static int find_ttl(const px_command *cmd, px_client *c, int *seconds)
{
    int argc = c->parser.argc;
    if (cmd->flags & (PX_F_TTL_S2 | PX_F_TTL_MS2)) {
        *seconds = (cmd->flags & PX_F_TTL_S2) != 0;
        return argc > 2 ? 2 : -1;
    }
    /* SET key value [options], GETEX key [options]: the options start where
     * the mandatory arguments end, which the arity says (-3, -2) */
    int from = cmd->arity < 0 ? -cmd->arity : cmd->arity;
    for (int i = from; i + 1 < argc; i++) {
        if (c->argvlen[i] != 2) continue;
        if (!strncasecmp(c->argv[i], "ex", 2)) {
            *seconds = 1;
            return i + 1;
        }
        if (!strncasecmp(c->argv[i], "px", 2)) {
            *seconds = 0;
            return i + 1;
        }
    }
    return -1;
}

int px_policy_write_ttl(px_client *c, px_req *r, uint64_t *rng)
{
    const px_command *cmd = r->cmd;
    px_server *s = c->set->owner;
    if (!cmd || !(cmd->flags & (PX_F_TTL_OPT | PX_F_TTL_S2 | PX_F_TTL_MS2)) || c->parser.argc < 3) return 0;
    px_policy pol;
    px_config_policy(s->core.cfg, c->argv[1], c->argvlen[1], &pol);
    if (pol.write_ttl_jitter <= 0) return 0;
    int seconds, at = find_ttl(cmd, c, &seconds);
    long long ttl;
    if (at < 0 || !px_string2ll(c->argv[at], c->argvlen[at], &ttl) || ttl <= 0) return 0;
    if (seconds && ttl > (long long)1e15) return 0;
    long long ms = seconds ? ttl * 1000 : ttl;
    long long out = px_policy_spread(ms, pol.write_ttl_jitter, pol.write_ttl_floor, uniform(rng));
    if (seconds) {
        long long lowest = pol.write_ttl_floor < ms ? pol.write_ttl_floor : ms;
        out = (out + 500) / 1000;
        if (out * 1000 < lowest) out = (lowest + 999) / 1000; /* rounding must not undercut the floor */
        if (out < 1) out = 1;
    }
    if (out == ttl) return 0;
    char num[24];
    int nl = snprintf(num, sizeof(num), "%lld", out);
    px_buf *b = &c->rewrite;
    b->len = b->rpos = 0;
    px_buf_appendf(b, "*%d\r\n", c->parser.argc);
    for (int i = 0; i < c->parser.argc; i++)
        px_resp_bulk(b, i == at ? num : c->argv[i], i == at ? (size_t)nl : c->argvlen[i]);
    s->core.stats.ttl_jittered++;
    return 1;
}
