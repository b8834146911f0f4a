/*
 * px_config: the directive table and its parsers.  See px_config.h.
 */
#include "proxy/px_config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef enum { CT_INT, CT_MEMORY, CT_BOOL, CT_STRING, CT_ENUM, CT_HOSTPORT, CT_SECRET, CT_USER, CT_REFUSE, CT_RULE } cfg_type;

typedef struct cfg_entry {
    const char *name;
    cfg_type type;
    long long min, max;
    const char *def;       /* default, as a config file would spell it */
    size_t offset;
    const char *const *enums;
    int restart;           /* 1: a change needs a restart (reload leaves it) */
} cfg_entry;

static const char *const loglevels[] = {"debug", "verbose", "notice", "warning", NULL};
static const char *const tls_auth[] = {"no", "yes", "optional", NULL}; /* PX_TLS_AUTH_* order */
static const char *const topologies[] = {"auto", "single", "sentinel", "cluster", NULL}; /* PX_TOPO_* order */

#define OFF(f) offsetof(px_config, f)
#define GB (1024LL * 1024 * 1024)
static const cfg_entry table[] = {
    {"bind", CT_STRING, 0, 0, "127.0.0.1", OFF(bind), NULL, 1},
    {"port", CT_INT, 1, 65535, "6380", OFF(port), NULL, 1},
    {"tcp-backlog", CT_INT, 1, 65535, "511", OFF(tcp_backlog), NULL, 1},
    {"maxclients", CT_INT, 1, 1000000, "10000", OFF(maxclients), NULL, 0},
    {"timeout", CT_INT, 0, 100000000, "0", OFF(timeout), NULL, 0},
    {"tcp-keepalive", CT_INT, 0, 100000000, "300", OFF(tcp_keepalive), NULL, 0},
    {"upstream", CT_HOSTPORT, 0, 0, "127.0.0.1:6379", OFF(upstream), NULL, 1},
    {"topology", CT_ENUM, 0, 0, "auto", OFF(topology), topologies, 1},
    {"sentinel-master", CT_STRING, 0, 0, "", OFF(sentinel_master), NULL, 1},
    {"sentinel-user", CT_STRING, 0, 0, "", OFF(sentinel_user), NULL, 1},
    {"sentinel-password", CT_SECRET, 0, 0, "", OFF(sentinel_password), NULL, 1},
    {"upstream-connections", CT_INT, 1, 1024, "1", OFF(upstream_connections), NULL, 1},
    {"upstream-timeout", CT_INT, 0, 86400000, "5000", OFF(upstream_timeout), NULL, 0},
    {"connect-timeout", CT_INT, 1, 600000, "1000", OFF(connect_timeout), NULL, 0},
    {"upstream-max-inflight", CT_INT, 1, 1000000, "1024", OFF(upstream_max_inflight), NULL, 0},
    {"proto-max-bulk-len", CT_MEMORY, 1024 * 1024, LLONG_MAX, "512mb", OFF(proto_max_bulk_len), NULL, 0},
    {"client-query-buffer-limit", CT_MEMORY, 1024 * 1024, LLONG_MAX, "1gb", OFF(client_query_buffer_limit), NULL, 0},
    {"client-output-buffer-limit", CT_MEMORY, 0, LLONG_MAX, "1gb", OFF(client_output_buffer_limit), NULL, 0},
    {"maxmemory-clients", CT_MEMORY, 0, LLONG_MAX, "2gb", OFF(maxmemory_clients), NULL, 0},
    {"loglevel", CT_ENUM, 0, 0, "notice", OFF(loglevel), loglevels, 0},
    {"logfile", CT_STRING, 0, 0, "", OFF(logfile), NULL, 1},
    {"pidfile", CT_STRING, 0, 0, "", OFF(pidfile), NULL, 1},
    {"daemonize", CT_BOOL, 0, 1, "no", OFF(daemonize), NULL, 1},
    {"shutdown-timeout", CT_INT, 0, 3600, "5", OFF(shutdown_timeout), NULL, 0},
    {"requirepass", CT_SECRET, 0, 0, "", OFF(requirepass), NULL, 0},
    {"user", CT_USER, 0, 0, NULL, 0, NULL, 0},
    {"upstream-user", CT_STRING, 0, 0, "", OFF(upstream_user), NULL, 1},
    {"upstream-password", CT_SECRET, 0, 0, "", OFF(upstream_password), NULL, 1},
    {"refuse-command", CT_REFUSE, 0, 0, NULL, 0, NULL, 0},
    {"allow-shutdown", CT_BOOL, 0, 1, "no", OFF(allow_shutdown), NULL, 0},
    {"upstream-max-pinned", CT_INT, 0, 1000000, "1000", OFF(upstream_max_pinned), NULL, 0},
    {"upstream-spare", CT_INT, 0, 10000, "16", OFF(upstream_spare), NULL, 0},
    {"l1", CT_BOOL, 0, 1, "yes", OFF(l1), NULL, 1},
    {"l1-maxmemory", CT_MEMORY, 1024 * 1024, LLONG_MAX, "64mb", OFF(l1_maxmemory), NULL, 0},
    {"l1-max-entry-size", CT_MEMORY, 1, 512LL * 1024 * 1024, "512kb", OFF(l1_max_entry_size), NULL, 0},
    {"l1-ttl", CT_INT, 1, 86400000, "1000", OFF(l1_ttl), NULL, 0},
    {"l1-ttl-jitter", CT_INT, 0, 100, "10", OFF(l1_ttl_jitter), NULL, 0},
    {"l1-negative-ttl", CT_INT, 0, 86400000, "250", OFF(l1_negative_ttl), NULL, 0},
    {"l1-hot-threshold", CT_INT, 0, 15, "2", OFF(l1_hot_threshold), NULL, 0},
    {"l1-max-waiters", CT_INT, 1, 1000000, "10000", OFF(l1_max_waiters), NULL, 0},
    {"l1-tracking", CT_BOOL, 0, 1, "yes", OFF(l1_tracking), NULL, 1},
    {"l1-refresh-ahead", CT_INT, 0, 50, "10", OFF(l1_refresh_ahead), NULL, 0},
    {"cache-rule", CT_RULE, 0, 0, NULL, 0, NULL, 0},
    {"metrics-port", CT_INT, 0, 65535, "0", OFF(metrics_port), NULL, 1},
    {"metrics-bind", CT_STRING, 0, 0, "127.0.0.1", OFF(metrics_bind), NULL, 1},
    {"latency-tracking", CT_BOOL, 0, 1, "yes", OFF(latency_tracking), NULL, 0},
    {"tls-port", CT_INT, 0, 65535, "0", OFF(tls_port), NULL, 1},
    {"tls-cert-file", CT_STRING, 0, 0, "", OFF(tls_cert_file), NULL, 0},
    {"tls-key-file", CT_STRING, 0, 0, "", OFF(tls_key_file), NULL, 0},
    {"tls-ca-cert-file", CT_STRING, 0, 0, "", OFF(tls_ca_cert_file), NULL, 0},
    {"tls-ca-cert-dir", CT_STRING, 0, 0, "", OFF(tls_ca_cert_dir), NULL, 0},
    {"tls-auth-clients", CT_ENUM, 0, 0, "yes", OFF(tls_auth_clients), tls_auth, 0},
    {"tls-protocols", CT_STRING, 0, 0, "", OFF(tls_protocols), NULL, 0},
    {"tls-ciphers", CT_STRING, 0, 0, "", OFF(tls_ciphers), NULL, 0},
    {"tls-ciphersuites", CT_STRING, 0, 0, "", OFF(tls_ciphersuites), NULL, 0},
    {"tls-prefer-server-ciphers", CT_BOOL, 0, 1, "no", OFF(tls_prefer_server_ciphers), NULL, 0},
    {"upstream-tls", CT_BOOL, 0, 1, "no", OFF(upstream_tls), NULL, 1},
    {"upstream-tls-cert-file", CT_STRING, 0, 0, "", OFF(upstream_tls_cert_file), NULL, 0},
    {"upstream-tls-key-file", CT_STRING, 0, 0, "", OFF(upstream_tls_key_file), NULL, 0},
    {"upstream-tls-ca-cert-file", CT_STRING, 0, 0, "", OFF(upstream_tls_ca_cert_file), NULL, 0},
    {"upstream-tls-ca-cert-dir", CT_STRING, 0, 0, "", OFF(upstream_tls_ca_cert_dir), NULL, 0},
    {"upstream-tls-sni", CT_STRING, 0, 0, "", OFF(upstream_tls_sni), NULL, 0},
    {"upstream-tls-verify", CT_BOOL, 0, 1, "yes", OFF(upstream_tls_verify), NULL, 0},
};
#define NTABLE (sizeof(table) / sizeof(table[0]))

static void seterr(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (!err || !errlen) return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

int px_config_memtoll(const char *s, long long *out)
{
    char *end;
    long long mul = 1;
    errno = 0;
    if (!*s || isspace((unsigned char)*s) || *s == '-' || *s == '+') return -1;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s) return -1;
    if (!strcasecmp(end, "") || !strcasecmp(end, "b")) mul = 1;
    else if (!strcasecmp(end, "k")) mul = 1000;
    else if (!strcasecmp(end, "kb")) mul = 1024;
    else if (!strcasecmp(end, "m")) mul = 1000 * 1000;
    else if (!strcasecmp(end, "mb")) mul = 1024 * 1024;
    else if (!strcasecmp(end, "g")) mul = 1000LL * 1000 * 1000;
    else if (!strcasecmp(end, "gb")) mul = GB;
    else return -1;
    if (v > LLONG_MAX / mul) return -1;
    *out = v * mul;
    return 0;
}

static int parse_int(const char *s, long long *out)
{
    char *end;
    errno = 0;
    if (!*s || isspace((unsigned char)*s)) return -1;
    long long v = strtoll(s, &end, 10);
    if (errno || *end) return -1;
    *out = v;
    return 0;
}

static const cfg_entry *lookup(const char *name)
{
    for (size_t i = 0; i < NTABLE; i++)
        if (!strcasecmp(table[i].name, name)) return &table[i];
    return NULL;
}

static int split_hostport(const char *v, char **host, long long *port)
{
    const char *colon = strrchr(v, ':');
    long long p;
    if (!colon || colon == v || parse_int(colon + 1, &p) || p < 1 || p > 65535) return -1;
    size_t hl = (size_t)(colon - v);
    if (v[0] == '[' && hl > 2 && v[hl - 1] == ']') { v++; hl -= 2; } /* [::1]:6379 */
    free(*host);
    *host = strndup(v, hl);
    *port = p;
    return 0;
}

static void free_upstreams(px_hostport *v, int n)
{
    for (int i = 0; i < n; i++) free(v[i].host);
    free(v);
}

/*
 * "upstream": a comma-separated list of addresses.  A repeat of the
 * directive in the same text (one file, or the command line) adds to the
 * list; one in a later text (the command line after the file) replaces it,
 * as every other directive does.  On error nothing changes.
 */
static int set_upstreams(px_config *c, const char *v)
{
    int add = c->loading && c->upstream_load == c->loading;
    int n = add ? c->nupstreams : 0;
    px_hostport *list = calloc((size_t)n + strlen(v) / 2 + 2, sizeof(*list));
    if (!list) abort();
    for (int i = 0; i < n; i++)
        if (!(list[i].host = strdup(c->upstreams[i].host))) abort();
        else list[i].port = c->upstreams[i].port;
    const char *p = v;
    do {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char *one = strndup(p, len);
        long long port;
        if (!one) abort();
        list[n].host = NULL;
        if (split_hostport(one, &list[n].host, &port) != 0) {
            free(one);
            free_upstreams(list, n);
            return -1;
        }
        free(one);
        list[n++].port = (int)port;
        p = comma ? comma + 1 : NULL;
    } while (p);
    char *text = add && c->upstream ? malloc(strlen(c->upstream) + strlen(v) + 2) : strdup(v);
    if (!text) abort();
    if (add && c->upstream) sprintf(text, "%s,%s", c->upstream, v);
    free_upstreams(c->upstreams, c->nupstreams);
    c->upstreams = list;
    c->nupstreams = n;
    free(c->upstream);
    c->upstream = text;
    free(c->upstream_host);
    if (!(c->upstream_host = strdup(list[0].host))) abort();
    c->upstream_port = list[0].port;
    c->upstream_load = c->loading;
    return 0;
}

static int apply(px_config *c, const cfg_entry *e, const char *v, char *err, size_t errlen)
{
    char *base = (char *)c;
    long long n;
    switch (e->type) {
    case CT_INT:
    case CT_MEMORY:
        if ((e->type == CT_INT ? parse_int(v, &n) : px_config_memtoll(v, &n)) != 0) {
            seterr(err, errlen, "%s must be %s", e->name,
                   e->type == CT_INT ? "an integer" : "a size such as 1024, 100kb, 512mb or 1gb");
            return -1;
        }
        if (n < e->min || n > e->max) {
            seterr(err, errlen, "%s must be between %lld and %lld inclusive", e->name, e->min, e->max);
            return -1;
        }
        *(long long *)(base + e->offset) = n;
        return 0;
    case CT_BOOL:
        if (!strcasecmp(v, "yes")) n = 1;
        else if (!strcasecmp(v, "no")) n = 0;
        else {
            seterr(err, errlen, "%s must be 'yes' or 'no'", e->name);
            return -1;
        }
        *(long long *)(base + e->offset) = n;
        return 0;
    case CT_ENUM:
        for (int i = 0; e->enums[i]; i++)
            if (!strcasecmp(v, e->enums[i])) {
                *(long long *)(base + e->offset) = i;
                return 0;
            }
    {
        char list[256] = "";
        size_t used = 0;
        for (int i = 0; e->enums[i] && used < sizeof(list); i++)
            used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%s", i ? ", " : "", e->enums[i]);
        seterr(err, errlen, "%s must be one of: %s", e->name, list);
        return -1;
    }
    case CT_HOSTPORT:
        if (set_upstreams(c, v) != 0) {
            seterr(err, errlen, "%s must be host:port with a port from 1 to 65535 (several: host:port,host:port)",
                   e->name);
            return -1;
        }
        return 0;
    case CT_SECRET:
    case CT_STRING: {
        char **slot = (char **)(base + e->offset);
        free(*slot);
        *slot = strdup(v);
        return 0;
    }
    case CT_USER:
    case CT_REFUSE:
    case CT_RULE:
        break; /* take several words: see px_config_set */
    }
    return -1;
}

/* user <name> [on|off] [>password ...] [nopass] [resetpass] */
static int add_user(px_config *c, int argc, char **argv, char *err, size_t errlen)
{
    if (argc < 1) {
        seterr(err, errlen, "user needs a name: user <name> on >password");
        return -1;
    }
    if (strpbrk(argv[0], " \t") || !argv[0][0]) {
        seterr(err, errlen, "user: '%s': a user name cannot be empty or contain spaces "
                            "(on the command line, give each word on its own: --user alice on '>secret')", argv[0]);
        return -1;
    }
    px_user u = {strdup(argv[0]), 0, 0, 0, 0, NULL};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcasecmp(a, "on")) u.enabled = 1;
        else if (!strcasecmp(a, "off")) u.enabled = 0;
        else if (!strcasecmp(a, "nopass")) u.nopass = 1;
        else if (!strcasecmp(a, "resetpass")) u.nopass = 0;
        else if (!strcasecmp(a, "+@admin")) u.admin = 1;
        else if (a[0] == '>') {
            u.passwords = realloc(u.passwords, sizeof(char *) * (size_t)(u.npasswords + 1));
            u.passwords[u.npasswords++] = strdup(a + 1);
        } else {
            for (int j = 0; j < u.npasswords; j++) free(u.passwords[j]);
            free(u.passwords);
            free(u.name);
            seterr(err, errlen,
                   "user: '%s' is not understood: hotproxy users take on|off, >password, nopass, +@admin; "
                   "key and command rules belong to the upstream user (upstream-user)", a);
            return -1;
        }
    }
    for (int i = 0; i < c->nusers; i++)
        if (!strcmp(c->users[i].name, u.name)) {
            seterr(err, errlen, "user '%s' is defined twice", u.name);
            for (int j = 0; j < u.npasswords; j++) free(u.passwords[j]);
            free(u.passwords);
            free(u.name);
            return -1;
        }
    c->users = realloc(c->users, sizeof(px_user) * (size_t)(c->nusers + 1));
    c->users[c->nusers++] = u;
    return 0;
}

static int add_refused(px_config *c, int argc, char **argv, char *err, size_t errlen)
{
    if (argc < 1) {
        seterr(err, errlen, "refuse-command needs at least one command name");
        return -1;
    }
    for (int i = 0; i < argc; i++) {
        char *n = strdup(argv[i]);
        for (char *p = n; *p; p++) *p = (char)tolower((unsigned char)*p);
        c->refused = realloc(c->refused, sizeof(char *) * (size_t)(c->nrefused + 1));
        c->refused[c->nrefused++] = n;
    }
    return 0;
}

/* cache-rule <prefix> [cache yes|no] [ttl ms] [jitter pct] [negative-ttl ms]
 *            [max-entry-size size] [write-ttl-jitter pct] [write-ttl-floor ms] */
static int add_rule(px_config *c, int argc, char **argv, char *err, size_t errlen)
{
    static const struct {
        const char *name;
        size_t off;
        long long min, max;
        int memory;
    } fields[] = {
        {"ttl", offsetof(px_rule, ttl), 1, 86400000, 0},
        {"jitter", offsetof(px_rule, jitter), 0, 100, 0},
        {"negative-ttl", offsetof(px_rule, negative_ttl), 0, 86400000, 0},
        {"max-entry-size", offsetof(px_rule, max_entry_size), 1, 512LL * 1024 * 1024, 1},
        {"write-ttl-jitter", offsetof(px_rule, write_ttl_jitter), 0, 100, 0},
        {"write-ttl-floor", offsetof(px_rule, write_ttl_floor), 0, 86400000LL * 365, 0},
    };
    if (argc < 1 || (argc - 1) % 2) {
        seterr(err, errlen, "cache-rule takes a prefix, then option/value pairs");
        return -1;
    }
    px_rule r = {strdup(argv[0]), strlen(argv[0]), !strcmp(argv[0], "*"), 1, -1, -1, -1, -1, 0, 0};
    for (int i = 1; i < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        int found = 0;
        if (!strcasecmp(k, "cache")) {
            found = 1;
            if (!strcasecmp(v, "yes")) r.cache = 1;
            else if (!strcasecmp(v, "no")) r.cache = 0;
            else found = -1;
        }
        for (size_t f = 0; !found && f < sizeof(fields) / sizeof(fields[0]); f++) {
            if (strcasecmp(k, fields[f].name)) continue;
            long long n;
            found = (fields[f].memory ? px_config_memtoll(v, &n) : parse_int(v, &n)) == 0 && n >= fields[f].min &&
                    n <= fields[f].max ? 1 : -1;
            if (found == 1) *(long long *)((char *)&r + fields[f].off) = n;
        }
        if (found != 1) {
            seterr(err, errlen, found ? "cache-rule: bad value '%s' for %s" : "cache-rule: unknown option '%s%s'",
                   found ? v : k, found ? k : "");
            free(r.prefix);
            return -1;
        }
    }
    c->rules = realloc(c->rules, sizeof(px_rule) * (size_t)(c->nrules + 1));
    c->rules[c->nrules++] = r;
    return 0;
}

void px_config_policy(const px_config *c, const char *key, size_t len, px_policy *out)
{
    const px_rule *r = NULL;
    for (int i = 0; i < c->nrules && !r; i++)
        if (c->rules[i].any || (c->rules[i].plen <= len && !memcmp(c->rules[i].prefix, key, c->rules[i].plen)))
            r = &c->rules[i];
    out->cache = c->nrules ? r && r->cache : 1;
    out->ttl = r && r->ttl >= 0 ? r->ttl : c->l1_ttl;
    out->jitter = r && r->jitter >= 0 ? r->jitter : c->l1_ttl_jitter;
    out->negative_ttl = r && r->negative_ttl >= 0 ? r->negative_ttl : c->l1_negative_ttl;
    out->max_entry_size = r && r->max_entry_size >= 0 ? r->max_entry_size : c->l1_max_entry_size;
    out->write_ttl_jitter = r ? r->write_ttl_jitter : 0;
    out->write_ttl_floor = r ? r->write_ttl_floor : 0;
}

int px_config_check_topology(const px_config *c, char *err, size_t errlen)
{
    int sentinel_set = *c->sentinel_master || *c->sentinel_user || *c->sentinel_password;
    const char *which = *c->sentinel_master ? "sentinel-master" : *c->sentinel_user ? "sentinel-user" : "sentinel-password";
    if (c->topology == PX_TOPO_CLUSTER && sentinel_set) {
        seterr(err, errlen, "%s is set, but topology cluster uses no Sentinel", which);
        return -1;
    }
    if (c->topology == PX_TOPO_SINGLE && c->nupstreams > 1) {
        seterr(err, errlen, "topology single forwards to one Redis, but upstream names %d addresses (%s); "
                            "several addresses are Sentinels: topology sentinel",
               c->nupstreams, c->upstream);
        return -1;
    }
    if (c->topology == PX_TOPO_SINGLE && sentinel_set) {
        seterr(err, errlen, "%s is set, but topology single uses no Sentinel (topology sentinel or auto)", which);
        return -1;
    }
    if (*c->sentinel_user && !*c->sentinel_password) {
        seterr(err, errlen, "sentinel-user is set without sentinel-password");
        return -1;
    }
    return 0;
}

int px_config_auth_required(const px_config *c)
{
    return (c->requirepass && *c->requirepass) || c->nusers > 0;
}

const px_user *px_config_user(const px_config *c, const char *name, size_t len)
{
    for (int i = 0; i < c->nusers; i++)
        if (strlen(c->users[i].name) == len && !memcmp(c->users[i].name, name, len)) return &c->users[i];
    if (len == 7 && !memcmp(name, "default", 7) && c->requirepass && *c->requirepass) {
        /* requirepass is the default user's password, as in Redis */
        px_config *m = (px_config *)c;
        m->default_user.name = (char *)"default";
        m->default_user.enabled = 1;
        m->default_user.nopass = 0;
        m->default_user.npasswords = 1;
        m->default_user.admin = 1;
        m->default_user.passwords = &m->requirepass;
        return &c->default_user;
    }
    return NULL;
}

static int ct_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    /* time depends on the attempt's length only, never on where it differs */
    unsigned char diff = alen != blen;
    for (size_t i = 0; i < alen; i++) diff |= (unsigned char)(a[i] ^ (i < blen ? b[i] : 0));
    return diff == 0;
}

int px_config_user_check(const px_user *u, const char *pass, size_t len)
{
    if (!u->enabled) return 0;
    if (u->nopass) return 1;
    int ok = 0;
    for (int i = 0; i < u->npasswords; i++) ok |= ct_equal(pass, len, u->passwords[i], strlen(u->passwords[i]));
    return ok;
}

int px_config_refused(const px_config *c, const char *name)
{
    /* "config|set" is refused by "config|set" or by its container "config" */
    const char *bar = strchr(name, '|');
    size_t top = bar ? (size_t)(bar - name) : strlen(name);
    if (!c->allow_shutdown && !strcmp(name, "shutdown")) return 1;
    for (int i = 0; i < c->nrefused; i++)
        if (!strcmp(c->refused[i], name) || (strlen(c->refused[i]) == top && !memcmp(c->refused[i], name, top)))
            return 1;
    return 0;
}

void px_config_init(px_config *c)
{
    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < NTABLE; i++) {
        if (!table[i].def) continue;
        int rc = apply(c, &table[i], table[i].def, NULL, 0);
        (void)rc;
        if (rc != 0) abort(); /* a bad default is a programming error */
    }
}

void px_config_free(px_config *c)
{
    for (size_t i = 0; i < NTABLE; i++)
        if (table[i].type == CT_STRING || table[i].type == CT_HOSTPORT || table[i].type == CT_SECRET) {
            free(*(char **)((char *)c + table[i].offset));
        }
    for (int i = 0; i < c->nusers; i++) {
        for (int j = 0; j < c->users[i].npasswords; j++) free(c->users[i].passwords[j]);
        free(c->users[i].passwords);
        free(c->users[i].name);
    }
    free(c->users);
    for (int i = 0; i < c->nrefused; i++) free(c->refused[i]);
    free(c->refused);
    for (int i = 0; i < c->nrules; i++) free(c->rules[i].prefix);
    free(c->rules);
    free(c->upstream_host);
    free_upstreams(c->upstreams, c->nupstreams);
    free(c->config_file);
    memset(c, 0, sizeof(*c));
}

int px_config_set(px_config *c, const char *name, int argc, char **argv, char *err, size_t errlen)
{
    const cfg_entry *e = lookup(name);
    if (!e) {
        seterr(err, errlen, "unknown directive '%s'", name);
        return -1;
    }
    if (e->type == CT_USER) return add_user(c, argc, argv, err, errlen);
    if (e->type == CT_REFUSE) return add_refused(c, argc, argv, err, errlen);
    if (e->type == CT_RULE) return add_rule(c, argc, argv, err, errlen);
    if (argc != 1) {
        /* logfile "" and bind with several addresses are the usual cases of a
         * wrong count; say what is expected. */
        seterr(err, errlen, "%s takes exactly one value, got %d", e->name, argc);
        return -1;
    }
    return apply(c, e, argv[0], err, errlen);
}

/*
 * Split a config line into words the way redis.conf is read: spaces separate,
 * "double" and 'single' quotes group, and \n \t \\ \" \xHH escapes work inside
 * double quotes.  Returns the word count or -1 on unbalanced quotes.
 */
#define MAXWORDS 64
static int split_words(char *line, char **words)
{
    int n = 0;
    char *p = line;
    while (1) {
        while (*p && isspace((unsigned char)*p)) p++;
        if (!*p) return n;
        if (n == MAXWORDS) return -2;
        char *out = p, *w = p;
        int inq = 0; /* 0, '"' or '\'' */
        while (*p) {
            if (inq == '"' && *p == '\\' && p[1]) {
                p++;
                switch (*p) {
                case 'n': *out++ = '\n'; break;
                case 'r': *out++ = '\r'; break;
                case 't': *out++ = '\t'; break;
                case 'x':
                    if (isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2])) {
                        char hex[3] = {p[1], p[2], 0};
                        *out++ = (char)strtol(hex, NULL, 16);
                        p += 2;
                        break;
                    }
                    /* fall through */
                default: *out++ = *p; break;
                }
                p++;
            } else if (inq && *p == inq) {
                inq = 0;
                p++;
                if (*p && !isspace((unsigned char)*p)) return -1; /* "a"b */
                break;
            } else if (!inq && (*p == '"' || *p == '\'') && out == w) {
                inq = *p++;
            } else if (!inq && isspace((unsigned char)*p)) {
                break;
            } else {
                *out++ = *p++;
            }
        }
        if (inq) return -1;
        if (*p) p++;
        *out = '\0';
        words[n++] = w;
    }
}

int px_config_load_string(px_config *c, const char *text, const char *source, char *err, size_t errlen)
{
    char *copy = strdup(text);
    int lineno = 0, rc = 0;
    c->loading = ++c->nloads; /* an "upstream" repeated in this text adds to the list */
    char *line = copy;
    while (line && rc == 0) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        lineno++;
        char *orig = strdup(line);
        size_t ol = strlen(orig);
        if (ol && orig[ol - 1] == '\r') orig[--ol] = '\0';
        char *words[MAXWORDS];
        char *p = line;
        while (*p && isspace((unsigned char)*p)) p++;
        if (*p && *p != '#') {
            char reason[256];
            int n = split_words(p, words);
            if (n < 0) {
                snprintf(reason, sizeof(reason), n == -2 ? "more than %d words on one line" : "unbalanced quotes",
                         MAXWORDS);
                rc = -1;
            } else if (n > 0 && px_config_set(c, words[0], n - 1, words + 1, reason, sizeof(reason)) != 0) {
                rc = -1;
            }
            if (rc) seterr(err, errlen, "%s:%d: '%s': %s", source, lineno, orig, reason);
        }
        free(orig);
        line = nl ? nl + 1 : NULL;
    }
    c->loading = 0;
    free(copy);
    return rc;
}

int px_config_load_file(px_config *c, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        seterr(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    size_t cap = 4096, len = 0;
    char *text = malloc(cap);
    size_t n;
    while ((n = fread(text + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len < 2) text = realloc(text, cap *= 2);
    }
    int ioerr = ferror(f);
    fclose(f);
    text[len] = '\0';
    if (ioerr) {
        free(text);
        seterr(err, errlen, "%s: read error", path);
        return -1;
    }
    if (memchr(text, '\0', len)) {
        free(text);
        seterr(err, errlen, "%s: not a text file", path);
        return -1;
    }
    int rc = px_config_load_string(c, text, path, err, errlen);
    free(text);
    if (rc == 0) {
        char *abs = realpath(path, NULL);
        free(c->config_file);
        c->config_file = abs ? abs : strdup(path);
    }
    return rc;
}

static const char usage[] =
    "Usage: hotproxy [/path/to/hotproxy.conf] [--directive value ...]\n"
    "       hotproxy --test-config [/path/to/hotproxy.conf] [--directive value ...]\n"
    "       hotproxy --help | -h\n"
    "       hotproxy --version | -v\n"
    "\n"
    "--test-config reads the file and the command line as a start would, runs the\n"
    "checks a start makes before it touches the network (the log file opens, the\n"
    "bind address resolves), prints \"configuration OK\" and exits 0, or prints the\n"
    "error (file:line for a bad directive) and exits 1.  It binds no port and\n"
    "connects to nothing, so it can run next to a live hotproxy.\n"
    "--version prints \"hotproxy <version>\".\n"
    "\n"
    "A Redis-protocol proxy with an in-process cache for hot keys.\n"
    "Every directive of the config file can be given on the command line,\n"
    "where it wins over the file:\n"
    "       hotproxy --port 6380 --upstream 127.0.0.1:6379\n"
    "       hotproxy conf/hotproxy.conf --loglevel verbose\n"
    "With no configuration it listens on 127.0.0.1:6380 and forwards to 127.0.0.1:6379.\n";

/* argv[first..]: an optional config file, then --directive groups. */
static int load_args(px_config *c, int argc, char **argv, int first, char *err, size_t errlen)
{
    int i = first;
    if (argc > first && strncmp(argv[first], "--", 2) != 0) {
        if (px_config_load_file(c, argv[first], err, errlen) != 0) return -1;
        i = first + 1;
    }
    /* Collect "--name v1 v2" groups into config lines, as redis-server does. */
    size_t cap = 256, len = 0;
    char *text = calloc(1, cap);
    for (; i < argc; i++) {
        const char *a = argv[i];
        int directive = strncmp(a, "--", 2) == 0 && a[2];
        if (!directive && len == 0) {
            free(text);
            seterr(err, errlen, "(command line): '%s': expected --directive before a value", a);
            return -1;
        }
        size_t need = strlen(a) * 4 + 8;
        if (len + need >= cap) {
            while (len + need >= cap) cap *= 2;
            text = realloc(text, cap);
        }
        if (directive) {
            if (len) text[len++] = '\n';
            len += (size_t)sprintf(text + len, "%s", a + 2);
        } else {
            /* quote the value so spaces and quotes in it survive */
            text[len++] = ' ';
            text[len++] = '"';
            for (const char *p = a; *p; p++) {
                if (*p == '"' || *p == '\\') text[len++] = '\\';
                text[len++] = *p;
            }
            text[len++] = '"';
        }
        text[len] = '\0';
    }
    int rc = px_config_load_string(c, text, "(command line)", err, errlen);
    free(text);
    return rc;
}

int px_config_from_args(px_config *c, int argc, char **argv, char *out, size_t outlen, char *err, size_t errlen)
{
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        snprintf(out, outlen, "%s", usage);
        return 1;
    }
    if (argc >= 2 && (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-v"))) {
        snprintf(out, outlen, "hotproxy %s\n", HOTPROXY_VERSION);
        return 1;
    }
    /* The rest of the line is read exactly as a start would read it. */
    if (argc >= 2 && !strcmp(argv[1], "--test-config")) return load_args(c, argc, argv, 2, err, errlen) ? -1 : 2;
    return load_args(c, argc, argv, 1, err, errlen);
}

void px_config_scrub_args(int argc, char **argv)
{
    const cfg_entry *e = NULL;
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (!strncmp(a, "--", 2) && a[2]) {
            e = lookup(a + 2);
            continue;
        }
        if (!e) continue; /* the config file's path */
        if (e->type == CT_SECRET || (e->type == CT_USER && a[0] == '>')) memset(a, 'x', strlen(a));
    }
}

int px_config_get(const px_config *c, int index, const char **name, char *value, size_t valuelen)
{
    if (index < 0 || (size_t)index >= NTABLE) return 0;
    const cfg_entry *e = &table[index];
    const char *base = (const char *)c;
    *name = e->name;
    switch (e->type) {
    case CT_INT:
    case CT_MEMORY: snprintf(value, valuelen, "%lld", *(const long long *)(base + e->offset)); break;
    case CT_BOOL: snprintf(value, valuelen, "%s", *(const long long *)(base + e->offset) ? "yes" : "no"); break;
    case CT_ENUM: snprintf(value, valuelen, "%s", e->enums[*(const long long *)(base + e->offset)]); break;
    case CT_STRING:
    case CT_HOSTPORT: snprintf(value, valuelen, "%s", *(char *const *)(base + e->offset)); break;
    case CT_SECRET: snprintf(value, valuelen, "%s", **(char *const *)(base + e->offset) ? "(set)" : ""); break;
    case CT_USER: snprintf(value, valuelen, "%d user(s)", c->nusers); break;
    case CT_RULE: snprintf(value, valuelen, "%d rule(s)", c->nrules); break;
    case CT_REFUSE: {
        size_t n = 0;
        value[0] = '\0';
        for (int i = 0; i < c->nrefused && n + 1 < valuelen; i++)
            n += (size_t)snprintf(value + n, valuelen - n, "%s%s", i ? " " : "", c->refused[i]);
        break;
    }
    }
    return 1;
}

static int users_equal(const px_config *a, const px_config *b)
{
    if (a->nusers != b->nusers) return 0;
    for (int i = 0; i < a->nusers; i++) {
        const px_user *x = &a->users[i], *y = &b->users[i];
        if (strcmp(x->name, y->name) || x->enabled != y->enabled || x->nopass != y->nopass || x->admin != y->admin ||
            x->npasswords != y->npasswords)
            return 0;
        for (int j = 0; j < x->npasswords; j++)
            if (strcmp(x->passwords[j], y->passwords[j])) return 0;
    }
    return 1;
}

static int rules_equal(const px_config *a, const px_config *b)
{
    if (a->nrules != b->nrules) return 0;
    for (int i = 0; i < a->nrules; i++) {
        const px_rule *x = &a->rules[i], *y = &b->rules[i];
        if (strcmp(x->prefix, y->prefix) || x->cache != y->cache || x->ttl != y->ttl || x->jitter != y->jitter ||
            x->negative_ttl != y->negative_ttl || x->max_entry_size != y->max_entry_size ||
            x->write_ttl_jitter != y->write_ttl_jitter || x->write_ttl_floor != y->write_ttl_floor)
            return 0;
    }
    return 1;
}

int px_config_reload(px_config *live, px_config *fresh, char *restart, size_t restartlen)
{
    size_t used = 0;
    int changed = 0;
    restart[0] = '\0';
    for (size_t i = 0; i < NTABLE; i++) {
        const cfg_entry *e = &table[i];
        char a[512], b[512];
        const char *name;
        px_config_get(live, (int)i, &name, a, sizeof(a));
        px_config_get(fresh, (int)i, &name, b, sizeof(b));
        int differs = strcmp(a, b) != 0;
        if (e->type == CT_SECRET) differs = strcmp(*(char **)((char *)live + e->offset), *(char **)((char *)fresh + e->offset)) != 0;
        if (e->type == CT_USER) differs = !users_equal(live, fresh);
        if (e->type == CT_RULE) differs = !rules_equal(live, fresh);
        if (e->type == CT_REFUSE) {
            differs = live->nrefused != fresh->nrefused;
            for (int k = 0; !differs && k < live->nrefused; k++) differs = strcmp(live->refused[k], fresh->refused[k]) != 0;
        }
        if (!differs) continue;
        if (e->restart) {
            if (used + strlen(e->name) + 2 < restartlen)
                used += (size_t)snprintf(restart + used, restartlen - used, "%s%s", used ? " " : "", e->name);
            continue;
        }
        changed++;
        /* swap, so freeing fresh frees the old value */
        switch (e->type) {
        case CT_USER: {
            px_user *u = live->users;
            int n = live->nusers;
            live->users = fresh->users;
            live->nusers = fresh->nusers;
            fresh->users = u;
            fresh->nusers = n;
            break;
        }
        case CT_REFUSE: {
            char **r = live->refused;
            int n = live->nrefused;
            live->refused = fresh->refused;
            live->nrefused = fresh->nrefused;
            fresh->refused = r;
            fresh->nrefused = n;
            break;
        }
        case CT_RULE: {
            px_rule *r = live->rules;
            int n = live->nrules;
            live->rules = fresh->rules;
            live->nrules = fresh->nrules;
            fresh->rules = r;
            fresh->nrules = n;
            break;
        }
        case CT_STRING:
        case CT_SECRET:
        case CT_HOSTPORT: {
            char **x = (char **)((char *)live + e->offset), **y = (char **)((char *)fresh + e->offset);
            char *t = *x;
            *x = *y;
            *y = t;
            break;
        }
        default:
            *(long long *)((char *)live + e->offset) = *(long long *)((char *)fresh + e->offset);
            break;
        }
    }
    return changed;
}

int px_config_is_directive(const char *name)
{
    return lookup(name) != NULL;
}

int px_config_restart_only(const char *name)
{
    const cfg_entry *e = lookup(name);
    return e && e->restart;
}
