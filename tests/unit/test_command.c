/*
 * test_command: the command table (px_commands.def) and its lookup, arity
 * and key-position helpers (px_command.h).
 *
 * Expected key positions are what Redis 7.0's COMMAND GETKEYS answers for
 * the same arguments; routing, invalidation and cluster slotting all trust
 * them, so a wrong position is a stale cache entry or a misrouted command.
 */
#include "proxy/px_command.h"
#include "proxy/px_local.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"

static const px_command *look(const char *name, const char *sub)
{
    return px_command_lookup(name, strlen(name), sub, sub ? strlen(sub) : 0);
}

static const char *name_of(const px_command *c) { return c ? c->name : NULL; }

/* Split a command line on spaces into argv (the strings point into a copy). */
typedef struct args {
    char buf[512];
    const char *argv[64];
    size_t len[64];
    int argc;
} args;

static void split(args *a, const char *line)
{
    snprintf(a->buf, sizeof(a->buf), "%s", line);
    a->argc = 0;
    for (char *p = strtok(a->buf, " "); p && a->argc < 64; p = strtok(NULL, " ")) {
        a->argv[a->argc] = p;
        a->len[a->argc] = strlen(p);
        a->argc++;
    }
}

/*
 * The keys of a command line, as "1,3" (or "-1" when they cannot be worked
 * out, or "none"), for comparison with is_str.
 */
static const char *keys_of(const char *line, char *out, size_t cap)
{
    args a;
    split(&a, line);
    const px_command *c = px_command_lookup(a.argv[0], a.len[0], a.argc > 1 ? a.argv[1] : NULL, a.argc > 1 ? a.len[1] : 0);
    if (!c) {
        snprintf(out, cap, "unknown command");
        return out;
    }
    int pos[64];
    int n = px_command_keys(c, a.argc, a.argv, a.len, pos, 64);
    if (n < 0) {
        snprintf(out, cap, "-1");
        return out;
    }
    if (n == 0) {
        snprintf(out, cap, "none");
        return out;
    }
    size_t off = 0;
    out[0] = 0;
    for (int i = 0; i < n && i < 64; i++) off += (size_t)snprintf(out + off, cap - off, "%s%d", i ? "," : "", pos[i]);
    return out;
}

#define KEYS(line, want, why)                                                         \
    do {                                                                              \
        char kb_[256];                                                                \
        is_str(keys_of(line, kb_, sizeof(kb_)), want, "keys of '%s': %s", line, why); \
    } while (0)

static void test_lookup(void)
{
    const px_command *get = look("get", NULL);
    is_str(name_of(get), "get", "lookup: get");
    ok(look("GET", NULL) == get, "lookup: GET is case-insensitive");
    ok(look("GeT", NULL) == get, "lookup: GeT is case-insensitive");
    ok(look("get", "ignored") == get, "lookup: a non-container ignores the second argument");
    is_str(name_of(look("zunionstore", NULL)), "zunionstore", "lookup: the last entry in the table is found");
    is_str(name_of(look("ACL", NULL)), "acl", "lookup: the first entry in the table is found");

    is_str(name_of(look("client", "setname")), "client|setname", "lookup: client setname -> client|setname");
    is_str(name_of(look("CLIENT", "SetName")), "client|setname", "lookup: subcommands are case-insensitive too");
    is_str(name_of(look("config", "get")), "config|get", "lookup: config get -> config|get");
    is_str(name_of(look("client", "nosuchsub")), "client", "lookup: an unknown subcommand gives the container");
    is_str(name_of(look("client", NULL)), "client", "lookup: no subcommand gives the container");
    is_str(name_of(look("client", "")), "client", "lookup: an empty subcommand gives the container");
    char longsub[200];
    memset(longsub, 's', sizeof(longsub) - 1);
    longsub[sizeof(longsub) - 1] = 0;
    is_str(name_of(look("client", longsub)), "client", "lookup: an overlong subcommand gives the container");
    is_str(name_of(px_command_lookup("client", 6, "setname\0x", 9)), "client", "lookup: a subcommand with a NUL is unknown");

    ok(look("nosuchcommand", NULL) == NULL, "lookup: unknown name -> NULL");
    ok(look("", NULL) == NULL, "lookup: empty name -> NULL");
    ok(look("ge", NULL) == NULL, "lookup: a prefix of a name -> NULL");
    ok(look("gett", NULL) == NULL, "lookup: a name with a suffix -> NULL");
    ok(px_command_lookup("get\0", 4, NULL, 0) == NULL, "lookup: a name with a NUL byte -> NULL");
    ok(px_command_lookup("getx", 3, NULL, 0) == get, "lookup: only len bytes of the name are read");
    char longname[1000];
    memset(longname, 'a', sizeof(longname));
    ok(px_command_lookup(longname, sizeof(longname), NULL, 0) == NULL, "lookup: a 1000-byte name -> NULL");
    memcpy(longname, "get", 3);
    ok(px_command_lookup(longname, 32, NULL, 0) == NULL, "lookup: a 32-byte name starting with get -> NULL");
    ok(px_command_lookup(longname, 64, NULL, 0) == NULL, "lookup: a 64-byte name starting with get -> NULL");

    /* Redis answers "ERR unknown command 'client|setname'": the table's
     * internal "container|sub" names are not commands a client can send. */
    ok(look("client|setname", NULL) == NULL, "lookup: 'client|setname' sent as a command name is unknown, as in Redis");
    ok(look("CONFIG|SET", "x") == NULL, "lookup: 'CONFIG|SET' sent as a command name is unknown");
}

static void test_arity(void)
{
    const px_command *get = look("get", NULL), *set = look("set", NULL), *setname = look("client", "setname"),
                     *ping = look("ping", NULL);
    ok(get && set && setname && ping, "arity: commands found");
    if (!(get && set && setname && ping)) return;
    is_int(px_command_arity_ok(get, 2), 1, "arity: GET k (2, fixed 2) ok");
    is_int(px_command_arity_ok(get, 1), 0, "arity: GET (1) refused");
    is_int(px_command_arity_ok(get, 3), 0, "arity: GET k x (3) refused: fixed arity is exact");
    is_int(px_command_arity_ok(set, 2), 0, "arity: SET k (2) refused: -3 needs at least 3");
    is_int(px_command_arity_ok(set, 3), 1, "arity: SET k v (3) ok");
    is_int(px_command_arity_ok(set, 7), 1, "arity: SET k v EX 10 NX GET (7) ok: -3 is a minimum");
    is_int(px_command_arity_ok(setname, 3), 1, "arity: CLIENT SETNAME x (3) ok: argc counts the container");
    is_int(px_command_arity_ok(setname, 2), 0, "arity: CLIENT SETNAME (2) refused");
    is_int(px_command_arity_ok(setname, 4), 0, "arity: CLIENT SETNAME x y (4) refused");
    is_int(px_command_arity_ok(ping, 1), 1, "arity: PING (1) ok");
    is_int(px_command_arity_ok(ping, 2), 1, "arity: PING msg (2) ok");
    is_int(px_command_arity_ok(ping, 0), 0, "arity: no arguments at all is never ok");
}

static void test_keys(void)
{
    KEYS("GET k", "1", "one key");
    KEYS("get k", "1", "lowercase too");
    KEYS("MSET k1 v1 k2 v2", "1,3", "every other argument");
    KEYS("DEL a b c", "1,2,3", "all arguments");
    KEYS("RENAME a b", "1,2", "two fixed keys");
    KEYS("BITOP AND dst a b", "2,3,4", "keys from 2 to the end");
    KEYS("BLPOP a b 0", "1,2", "all but the last (timeout)");
    KEYS("PING", "none", "no keys");
    KEYS("EVAL script 2 k1 k2 a1", "3,4", "numkeys at 2, keys after it, arguments not keys");
    KEYS("EVAL script 0", "none", "numkeys 0");
    KEYS("EVAL script 0 a1", "none", "numkeys 0 with arguments");
    KEYS("EVAL script 3 k1 k2", "-1", "numkeys larger than the arguments");
    KEYS("EVAL script -1 k1", "-1", "negative numkeys");
    KEYS("EVAL script x k1", "-1", "numkeys not a number");
    KEYS("EVAL script", "-1", "numkeys missing");
    KEYS("EVALSHA abc 1 k", "3", "evalsha like eval");
    KEYS("FCALL f 1 k a", "3", "fcall like eval");
    KEYS("FCALL_RO f 2 k1 k2", "3,4", "fcall_ro");
    KEYS("FCALL f 2 k", "-1", "fcall numkeys too large");
    KEYS("ZUNIONSTORE dst 2 a b WEIGHTS 1 2", "1,3,4", "destination, then numkeys keys; WEIGHTS are not keys");
    KEYS("ZUNIONSTORE dst 3 a b", "-1", "zunionstore numkeys too large");
    KEYS("ZINTERCARD 2 a b LIMIT 1", "2,3", "numkeys at 1");
    KEYS("LMPOP 2 a b LEFT", "2,3", "numkeys at 1, then keys; LEFT is not a key");
    KEYS("BLMPOP 0 2 a b LEFT", "3,4", "numkeys at 2 after the timeout");
    KEYS("XREAD COUNT 1 STREAMS s1 s2 0 0", "4,5", "the first half after STREAMS");
    KEYS("XREAD streams s 0", "2", "STREAMS matched case-insensitively");
    KEYS("XREAD COUNT 1 STREAMS s1 s2 0", "-1", "an odd count after STREAMS");
    KEYS("XREAD COUNT 1", "-1", "no STREAMS");
    KEYS("XREADGROUP GROUP g c STREAMS s 0", "5", "xreadgroup");
    KEYS("XREADGROUP GROUP g c COUNT 10 STREAMS s1 s2 > >", "7,8", "xreadgroup with options");
    /* Redis 7.0 COMMAND GETKEYS: "s" for both (the STREAMS search starts after GROUP g c) */
    KEYS("XREADGROUP GROUP streams c STREAMS s 0", "5", "a group named 'streams' is not the STREAMS keyword");
    KEYS("XREADGROUP GROUP g STREAMS STREAMS s 0", "5", "a consumer named 'STREAMS' is not the keyword");
    KEYS("SORT k", "1", "sort, no STORE");
    KEYS("SORT k STORE dst", "1,3", "sort STORE destination (argv[3])");
    KEYS("SORT k ALPHA STORE dst", "1,4", "sort ALPHA STORE destination (argv[4])");
    KEYS("SORT k store", "1", "a trailing STORE without destination");
    /* Redis 7.0 COMMAND GETKEYS: "k" only (GET takes one argument, a pattern) */
    KEYS("SORT k GET store ALPHA", "1", "a GET pattern named 'store' is not the STORE keyword");
    KEYS("SORT_RO k BY w_*", "1", "sort_ro");
    KEYS("MIGRATE host 6379 k 0 5000", "-1", "migrate keys are not worked out");
    KEYS("GEORADIUS k 0 0 1 km STORE d", "-1", "georadius with STORE is not worked out");

    /* out holds at most max: nothing is written past it */
    args a;
    split(&a, "DEL a b c d");
    const px_command *del = look("del", NULL);
    int pos[4] = {-7, -7, -7, -7};
    int n = px_command_keys(del, a.argc, a.argv, a.len, pos, 2);
    ok(pos[0] == 1 && pos[1] == 2, "keys: with max 2, the first two positions are filled");
    ok(pos[2] == -7 && pos[3] == -7, "keys: nothing written past max");
    ok(n >= 2, "keys: returns at least max when there are more keys (got %d)", n);
}

static void test_writes(void)
{
    ok(px_command_writes(look("set", NULL)), "writes: SET writes");
    ok(!px_command_writes(look("get", NULL)), "writes: GET does not");
    ok(px_command_writes(look("eval", NULL)), "writes: EVAL may write");
    ok(!px_command_writes(look("eval_ro", NULL)), "writes: EVAL_RO does not");
    ok(px_command_writes(look("fcall", NULL)), "writes: FCALL may write");
    ok(px_command_writes(look("del", NULL)), "writes: DEL writes");
    ok(px_command_writes(look("flushall", NULL)), "writes: FLUSHALL writes");
    ok(px_command_writes(look("xreadgroup", NULL)), "writes: XREADGROUP writes (the PEL)");
    ok(!px_command_writes(look("hgetall", NULL)), "writes: HGETALL does not");
    ok(px_command_writes(NULL), "writes: an unknown command (NULL) counts as a write");
    ok(px_command_writes(look("nosuchcommand", NULL)), "writes: looked up unknown command counts as a write");
}

static void test_handlers(void)
{
    struct {
        const char *name, *sub;
        px_handler h;
    } want[] = {
        {"get", NULL, PX_H_FWD},           {"ping", NULL, PX_H_PING},         {"auth", NULL, PX_H_AUTH},
        {"select", NULL, PX_H_SELECT},     {"multi", NULL, PX_H_MULTI},       {"exec", NULL, PX_H_EXEC},
        {"subscribe", NULL, PX_H_SUBSCRIBE}, {"blpop", NULL, PX_H_BLOCK},     {"psync", NULL, PX_H_DENY},
        {"sync", NULL, PX_H_DENY},         {"client", "setname", PX_H_CLIENT_SETNAME}, {"client", "tracking", PX_H_TRACKING},
        {"monitor", NULL, PX_H_MONITOR},   {"watch", NULL, PX_H_WATCH},
        {"wait", NULL, PX_H_WAIT},         {"script", "kill", PX_H_OOB},     {"function", "kill", PX_H_OOB},
        {"client", "pause", PX_H_OOB},     {"client", "unpause", PX_H_OOB},  {"shutdown", NULL, PX_H_OOB},
        {"script", "load", PX_H_FWD},      {"function", "stats", PX_H_FWD},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const px_command *c = look(want[i].name, want[i].sub);
        ok(c && c->handler == want[i].h, "handler: %s%s%s", want[i].name, want[i].sub ? " " : "", want[i].sub ? want[i].sub : "");
    }
}

/*
 * Who may run what: the table's PX_F_DG is Redis 7.0's @dangerous ACL
 * category (`ACL CAT dangerous` on redis-server 7.0.15, below), which holds
 * all of @admin, except INFO, which every user keeps.
 */
static void test_admin_only(void)
{
    static const char *dangerous[] = {
        "acl|deluser", "acl|dryrun", "acl|getuser", "acl|list", "acl|load", "acl|log", "acl|save",
        "acl|setuser", "acl|users", "bgrewriteaof", "bgsave", "client|kill", "client|list", "client|no-evict",
        "client|pause", "client|unblock", "client|unpause", "cluster|addslots", "cluster|addslotsrange",
        "cluster|bumpepoch", "cluster|count-failure-reports", "cluster|delslots", "cluster|delslotsrange",
        "cluster|failover", "cluster|flushslots", "cluster|forget", "cluster|meet", "cluster|replicas",
        "cluster|replicate", "cluster|reset", "cluster|saveconfig", "cluster|set-config-epoch",
        "cluster|setslot", "cluster|slaves", "config|get", "config|resetstat", "config|rewrite", "config|set",
        "debug", "failover", "flushall", "flushdb", "info", "keys", "lastsave", "latency|doctor",
        "latency|graph", "latency|histogram", "latency|history", "latency|latest", "latency|reset", "migrate",
        "module|list", "module|load", "module|loadex", "module|unload", "monitor", "pfdebug", "pfselftest",
        "psync", "replconf", "replicaof", "restore", "restore-asking", "role", "save", "shutdown", "slaveof",
        "slowlog|get", "slowlog|len", "slowlog|reset", "sort", "sort_ro", "swapdb", "sync",
    };
    size_t nd = sizeof(dangerous) / sizeof(dangerous[0]);
    int missing = 0, extra = 0;
    for (size_t i = 0; i < nd; i++) {
        char name[64];
        snprintf(name, sizeof(name), "%s", dangerous[i]);
        char *bar = strchr(name, '|');
        if (bar) *bar++ = '\0';
        const px_command *c = look(name, bar);
        int want = strcmp(dangerous[i], "info") != 0;
        if (!c || strcmp(c->name, dangerous[i]) || px_command_admin_only(c) != want) {
            diag("  %s: %s", dangerous[i], c ? "admin_only is not what Redis' category says" : "not in the table");
            missing++;
        }
    }
    for (int i = 0; i < px_command_count(); i++) {
        const px_command *c = px_command_at(i);
        int listed = 0;
        for (size_t j = 0; j < nd; j++) listed |= !strcmp(dangerous[j], c->name);
        if ((c->flags & PX_F_DG) && !listed) {
            diag("  %s: PX_F_DG but not @dangerous in Redis", c->name);
            extra++;
        }
    }
    is_int(missing, 0, "admin only: every @dangerous command of Redis 7.0 but INFO");
    is_int(extra, 0, "admin only: PX_F_DG on nothing else");
    static const char *open_to_all[][2] = {{"acl", "whoami"}, {"acl", "cat"},       {"acl", "genpass"},
                                          {"acl", "help"},   {"client", "id"},     {"client", "setname"},
                                          {"client", "getredir"}, {"client", "trackinginfo"}, {"get", NULL},
                                          {"info", NULL},    {"ping", NULL},       {"config", "help"}};
    for (size_t i = 0; i < sizeof(open_to_all) / sizeof(open_to_all[0]); i++)
        ok(!px_command_admin_only(look(open_to_all[i][0], open_to_all[i][1])), "admin only: not %s%s%s",
           open_to_all[i][0], open_to_all[i][1] ? " " : "", open_to_all[i][1] ? open_to_all[i][1] : "");
    ok(px_command_admin_only(look("hotproxy", "cache")) && px_command_admin_only(look("hotproxy", "config")),
       "admin only: HOTPROXY CACHE and CONFIG");
    ok(look("config", "get")->handler == PX_H_REDACT, "CONFIG GET's reply has its secrets hidden (redact)");
}

/* Whole-table properties: every entry, not a sample. */
static void test_table(void)
{
    int n = px_command_count();
    ok(n > 200, "table: %d entries", n);
    ok(px_command_at(-1) == NULL && px_command_at(n) == NULL, "table: px_command_at out of range is NULL");

    int unsorted = 0, bad_handler = 0, bad_keys = 0, bad_name = 0, bad_index = 0, unreachable = 0, orphan = 0,
        bad_cache = 0, bad_rw = 0, zero_arity = 0, bad_fixed = 0;
    for (int i = 0; i < n; i++) {
        const px_command *c = px_command_at(i);
        if (!c || !c->name) {
            bad_name++;
            continue;
        }
        if (i > 0 && strcmp(px_command_at(i - 1)->name, c->name) >= 0) {
            if (!unsorted) diag("  out of order: '%s' then '%s'", px_command_at(i - 1)->name, c->name);
            unsorted++;
        }
        if ((int)c->handler < (int)PX_H_FWD || (int)c->handler > (int)PX_H_DENY) {
            diag("  %s: handler %d out of range", c->name, (int)c->handler);
            bad_handler++;
        }
        if ((int)c->keys < (int)PX_KS_FIXED || (int)c->keys > (int)PX_KS_UNKNOWN) {
            diag("  %s: keyspec %d out of range", c->name, (int)c->keys);
            bad_keys++;
        }
        size_t len = strlen(c->name);
        int pipes = 0;
        for (size_t k = 0; k < len; k++) {
            if (c->name[k] >= 'A' && c->name[k] <= 'Z') bad_name++;
            pipes += c->name[k] == '|';
        }
        if (!len || pipes > 1) bad_name++;
        if (px_command_index(c) != i) bad_index++;
        if (c->arity == 0) zero_arity++;

        /* reachable through lookup, the way a client names it */
        const char *bar = strchr(c->name, '|');
        const px_command *found;
        if (bar) {
            found = px_command_lookup(c->name, (size_t)(bar - c->name), bar + 1, strlen(bar + 1));
            const px_command *cont = px_command_lookup(c->name, (size_t)(bar - c->name), NULL, 0);
            if (!cont || !(cont->flags & PX_F_CONT)) {
                diag("  %s: no container with PX_F_CONT", c->name);
                orphan++;
            }
        } else {
            found = px_command_lookup(c->name, len, NULL, 0);
        }
        if (found != c) {
            diag("  %s: lookup finds %s", c->name, found ? found->name : "nothing");
            unreachable++;
        }

        if ((c->flags & PX_F_R) && (c->flags & PX_F_W)) {
            diag("  %s: both read-only and write", c->name);
            bad_rw++;
        }
        /* a barrier is for writes: px_l1_write never sees a read-only command */
        if ((c->flags & PX_F_R) && (c->flags & PX_F_BARRIER)) {
            diag("  %s: both read-only and a barrier", c->name);
            bad_rw++;
        }
        /* a cacheable reply belongs to a read-only command with a key at 1 */
        if ((c->flags & PX_F_CACHE) && (!(c->flags & PX_F_R) || c->keys != PX_KS_FIXED || c->first_key != 1)) {
            diag("  %s: cacheable but not a keyed read", c->name);
            bad_cache++;
        }
        if ((c->flags & PX_F_NIL) && !(c->flags & PX_F_CACHE)) {
            diag("  %s: NIL but not cacheable", c->name);
            bad_cache++;
        }
        if (c->keys == PX_KS_FIXED && c->first_key > 0 &&
            (c->key_step <= 0 || (c->last_key > 0 && c->last_key < c->first_key))) {
            diag("  %s: fixed keys %d..%d step %d", c->name, c->first_key, c->last_key, c->key_step);
            bad_fixed++;
        }
    }
    is_int(unsorted, 0, "table: sorted by name, strictly (binary search depends on it)");
    is_int(bad_handler, 0, "table: every handler in range");
    is_int(bad_keys, 0, "table: every keyspec in range");
    is_int(bad_name, 0, "table: names lowercase, non-empty, at most one '|'");
    is_int(bad_index, 0, "table: px_command_index(px_command_at(i)) == i");
    is_int(zero_arity, 0, "table: no arity 0");
    is_int(unreachable, 0, "table: every entry is what lookup returns for its name");
    is_int(orphan, 0, "table: every subcommand has a container marked PX_F_CONT");
    is_int(bad_rw, 0, "table: no command is both read-only and write (or a read-only barrier)");
    is_int(bad_cache, 0, "table: PX_F_CACHE only on read-only commands with their key at 1");
    is_int(bad_fixed, 0, "table: fixed key ranges are well formed");

    /* every container has at least one subcommand */
    int empty = 0;
    for (int i = 0; i < n; i++) {
        const px_command *c = px_command_at(i);
        if (!(c->flags & PX_F_CONT)) continue;
        size_t l = strlen(c->name);
        const px_command *next = px_command_at(i + 1);
        if (!next || strncmp(next->name, c->name, l) || next->name[l] != '|') {
            diag("  container %s has no subcommands", c->name);
            empty++;
        }
    }
    is_int(empty, 0, "table: every container has subcommands");
}

/*
 * The handler rows (PX_HANDLER in px_commands.def): the client's dispatch
 * decides from their columns alone, so a property missing or contradicting
 * another is a command that runs on the wrong connection, or locally when it
 * must reach Redis.  These are the rules every row must keep.
 */
static void test_handler_rows(void)
{
    int bad = 0;
    for (int h = 0; h < PX_H__COUNT; h++) {
        const px_handler_info *hi = &px_handlers[h];
        unsigned p = hi->props;
        const char *why = NULL;
        if ((p & PX_HP_PIN) && !(p & PX_HP_UPSTREAM)) why = "pins but does not go upstream";
        else if (hi->sets && !(p & PX_HP_PIN)) why = "sets a state without a connection of the client's own (PIN)";
        else if ((p & PX_HP_BLOCKING) && !(p & PX_HP_PIN)) why = "blocks on a shared connection";
        else if ((p & PX_HP_FENCE) && !(p & PX_HP_BLOCKING)) why = "FENCE without BLOCKING";
        else if ((p & PX_HP_RAW) && !(p & PX_HP_PUSHES)) why = "RAW without PUSHES";
        else if ((p & PX_HP_ONOFF) && !(hi->sets && hi->clears)) why = "ONOFF with nothing to set or clear";
        else if ((p & PX_HP_OOB) && (!(p & PX_HP_UPSTREAM) || (p & PX_HP_PIN))) why = "OOB must go upstream, unpinned";
        else if ((p & PX_HP_PINNED_UPSTREAM) && ((p & PX_HP_UPSTREAM) || !(p & PX_HP_LOCAL)))
            why = "PINNED_UPSTREAM is for local handlers only";
        else if ((p & PX_HP_DEFERRED) && (p & (PX_HP_UPSTREAM | PX_HP_PINNED_UPSTREAM | PX_HP_AT_ONCE)))
            why = "DEFERRED runs locally at EXEC, never upstream or at once";
        else if ((p & PX_HP_DEFERRED) && !(p & PX_HP_LOCAL)) why = "DEFERRED without a local function";
        else if ((p & PX_HP_DENY) && (p & ~(unsigned)PX_HP_DENY)) why = "DENY with other properties";
        else if (!(p & (PX_HP_UPSTREAM | PX_HP_LOCAL | PX_HP_DENY))) why = "nothing runs it (no UPSTREAM, LOCAL or DENY)";
        else if (!!(p & PX_HP_LOCAL) != px_local_has_handler((px_handler)h))
            why = p & PX_HP_LOCAL ? "LOCAL, but px_local has no function for it" : "px_local has a function, not LOCAL";
        else if ((p & PX_HP_EXEC) && !(hi->clears & PX_STATE_MULTI)) why = "EXEC that does not end MULTI";
        if (why) {
            diag("  handler %d: %s", h, why);
            bad++;
        }
    }
    is_int(bad, 0, "handler rows: every property has what it needs");

    /* the rows of the transaction and of pub/sub, as Redis runs them */
    unsigned multi = px_handler_props(PX_H_MULTI);
    ok((multi & PX_HP_PIN) && (multi & PX_HP_AT_ONCE) && px_handlers[PX_H_MULTI].sets == PX_STATE_MULTI,
       "handler rows: MULTI pins, runs at once and enters MULTI");
    ok((px_handler_props(PX_H_EXEC) & PX_HP_EXEC) && (px_handlers[PX_H_DISCARD].clears & PX_STATE_MULTI) &&
           !(px_handler_props(PX_H_DISCARD) & PX_HP_EXEC),
       "handler rows: EXEC runs the transaction, DISCARD drops it");
    int nmulti = 0, nexec = 0;
    for (int h = 0; h < PX_H__COUNT; h++) {
        nmulti += !!(px_handlers[h].sets & PX_STATE_MULTI);
        nexec += !!(px_handlers[h].props & PX_HP_EXEC);
    }
    ok(nmulti == 1 && nexec == 1, "handler rows: one handler enters MULTI (%d), one runs it (%d)", nmulti, nexec);
    ok(!(px_handler_props(PX_H_WATCH) & PX_HP_DEFERRED) && (px_handler_props(PX_H_WATCH) & PX_HP_OUTSIDE_MULTI),
       "handler rows: WATCH inside MULTI goes to Redis' MULTI, and changes no state there");
    int noauth = 0;
    for (int h = 0; h < PX_H__COUNT; h++) {
        int want = h == PX_H_AUTH || h == PX_H_HELLO || h == PX_H_QUIT || h == PX_H_RESET;
        noauth += want != !!(px_handler_props((px_handler)h) & PX_HP_NOAUTH);
    }
    is_int(noauth, 0, "handler rows: only AUTH, HELLO, QUIT and RESET run before authentication");
}

/*
 * CLIENT and HOTPROXY subcommands: each row names its own handler, and each
 * local one has its own function in px_local (no dispatch on the name).
 */
static void test_subcommand_handlers(void)
{
    int n = px_command_count(), nolocal = 0, shared = 0, seen = 0;
    for (int i = 0; i < n; i++) {
        const px_command *c = px_command_at(i);
        if (strncmp(c->name, "client|", 7) && strncmp(c->name, "hotproxy", 8)) continue;
        seen++;
        unsigned p = px_handler_props(c->handler);
        if (!(p & PX_HP_LOCAL)) {
            if (!strncmp(c->name, "hotproxy", 8) || !(p & PX_HP_UPSTREAM)) {
                diag("  %s: neither local nor forwarded", c->name);
                nolocal++;
            }
            continue;
        }
        if (!px_local_has_handler(c->handler)) {
            diag("  %s: local, with no function", c->name);
            nolocal++;
        }
        for (int j = 0; j < n; j++) {
            const px_command *o = px_command_at(j);
            if (o != c && o->handler == c->handler) {
                diag("  %s and %s share the local handler %d", c->name, o->name, (int)c->handler);
                shared++;
            }
        }
    }
    ok(seen >= 20, "subcommands: %d CLIENT/HOTPROXY rows", seen);
    is_int(nolocal, 0, "subcommands: every CLIENT/HOTPROXY row is forwarded or has a function of its own");
    is_int(shared, 0, "subcommands: no two CLIENT/HOTPROXY rows share a local handler");
    ok(look("client", "kill")->handler == PX_H_CLIENT_KILL && look("hotproxy", "cache")->handler == PX_H_ADMIN_CACHE &&
           look("hotproxy", "config")->handler == PX_H_ADMIN_CONFIG && look("hotproxy", NULL)->handler == PX_H_ADMIN,
       "subcommands: CLIENT KILL, HOTPROXY CACHE/CONFIG name their handlers");
}

/* The handler a call runs with, and MGET's element command. */
static void test_call_handler(void)
{
    args a;
    split(&a, "xread count 1 streams k 0");
    const px_command *x = look("xread", NULL);
    ok(px_command_handler(x, a.argc, a.argv, a.len) == PX_H_FWD, "call handler: XREAD without BLOCK is forwarded");
    split(&a, "xread block 0 streams k 0");
    ok(px_command_handler(x, a.argc, a.argv, a.len) == PX_H_BLOCK, "call handler: XREAD BLOCK blocks");
    split(&a, "xreadgroup group g c block 0 streams k >");
    ok(px_command_handler(look("xreadgroup", NULL), a.argc, a.argv, a.len) == PX_H_BLOCK,
       "call handler: XREADGROUP BLOCK blocks");
    split(&a, "blpop k 0");
    ok(px_command_handler(look("blpop", NULL), a.argc, a.argv, a.len) == PX_H_BLOCK, "call handler: BLPOP blocks");
    ok(px_command_handler(NULL, a.argc, a.argv, a.len) == PX_H_FWD, "call handler: an unknown command is forwarded");
    ok(px_command_element(look("mget", NULL)) == look("get", NULL), "element: MGET's elements are GET's replies");
    ok(px_command_element(look("get", NULL)) == NULL && px_command_element(NULL) == NULL,
       "element: none for a command that is not a MULTIGET");
}

/* px_command_lookup_hint: the hint answers only for exactly its own name,
 * and only a plain row becomes one. */
static void test_lookup_hint(void)
{
    const px_command *hint = NULL, *get = look("get", NULL);
    ok(px_command_lookup_hint(&hint, "GET", 3, NULL, 0) == get && hint == get, "hint: a lookup of GET leaves GET as the hint");
    ok(px_command_lookup_hint(&hint, "gEt", 3, NULL, 0) == get, "hint: found again, case aside");
    ok(px_command_lookup_hint(&hint, "ge", 2, NULL, 0) == NULL, "hint: a prefix of its name is not it");
    hint = get;
    ok(px_command_lookup_hint(&hint, "gett", 4, NULL, 0) == NULL, "hint: its name with a suffix is not it");
    hint = get;
    ok(px_command_lookup_hint(&hint, "get\0", 4, NULL, 0) == NULL, "hint: its name and a NUL is not it");
    hint = get;
    ok(px_command_lookup_hint(&hint, "getx", 3, NULL, 0) == get, "hint: only len bytes of the name are read");
    is_str(name_of(px_command_lookup_hint(&hint, "set", 3, NULL, 0)), "set", "hint: another name is looked up");
    is_str(name_of(hint), "set", "hint: which becomes the hint");
    is_str(name_of(px_command_lookup_hint(&hint, "client", 6, "setname", 7)), "client|setname",
           "hint: a container's subcommand is looked up");
    ok(hint == NULL, "hint: neither the container nor its subcommand becomes the hint");
    ok(px_command_lookup_hint(&hint, "client|setname", 14, NULL, 0) == NULL,
       "hint: 'client|setname' is still no command");
    hint = get;
    is_str(name_of(px_command_lookup_hint(&hint, "client", 6, "list", 4)), "client|list",
           "hint: a container named while GET is the hint is looked up in full");
}

int main(void)
{
    test_lookup();
    test_lookup_hint();
    test_arity();
    test_keys();
    test_writes();
    test_handlers();
    test_admin_only();
    test_table();
    test_handler_rows();
    test_subcommand_handlers();
    test_call_handler();
    done_testing();
    return exit_status();
}
