/*
 * test_config: px_config's directive table, its text and command-line
 * parsers, and the introspection the INFO/CONFIG side reads.
 *
 * Parsing takes strings, so most of this needs no files; the few tests of
 * px_config_load_file and of "hotproxy file.conf --directive value" write a
 * temporary file and remove it.
 */
#include "proxy/px_config.h"

#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include "tap.h"
#include "unit/config_checks.h"

#define MB (1024LL * 1024)
#define GB (1024LL * 1024 * 1024)

/* px_config_get by name; returns the value text, or NULL if no such directive. */
static const char *get(const px_config *c, const char *name, char *buf, size_t len)
{
    const char *n;
    for (int i = 0; px_config_get(c, i, &n, buf, len); i++)
        if (!strcmp(n, name)) return buf;
    return NULL;
}

/* Load text that must succeed. */
static int load_ok(px_config *c, const char *text, const char *what)
{
    char err[512] = "";
    int rc = px_config_load_string(c, text, "t.conf", err, sizeof(err));
    if (!ok(rc == 0, "%s: loads", what)) diag("  error: %s", err);
    return rc == 0;
}


static void test_defaults(void)
{
    px_config c;
    px_config_init(&c);
    is_str(c.bind, "127.0.0.1", "default bind");
    is_int(c.port, 6380, "default port");
    is_int(c.tcp_backlog, 511, "default tcp-backlog");
    is_int(c.maxclients, 10000, "default maxclients");
    is_int(c.timeout, 0, "default timeout");
    is_int(c.tcp_keepalive, 300, "default tcp-keepalive");
    is_str(c.upstream, "127.0.0.1:6379", "default upstream");
    is_str(c.upstream_host, "127.0.0.1", "default upstream_host");
    is_int(c.upstream_port, 6379, "default upstream_port");
    is_int(c.upstream_connections, 1, "default upstream-connections");
    is_int(c.upstream_timeout, 5000, "default upstream-timeout");
    is_int(c.connect_timeout, 1000, "default connect-timeout");
    is_int(c.upstream_max_inflight, 1024, "default upstream-max-inflight");
    is_int(c.proto_max_bulk_len, 512 * MB, "default proto-max-bulk-len is Redis' 512mb");
    is_int(c.client_query_buffer_limit, GB, "default client-query-buffer-limit is Redis' 1gb");
    is_int(c.client_output_buffer_limit, GB, "default client-output-buffer-limit");
    is_int(c.loglevel, PX_LL_NOTICE, "default loglevel");
    is_str(c.logfile, "", "default logfile is standard output");
    is_str(c.pidfile, "", "default pidfile is none");
    is_int(c.daemonize, 0, "default daemonize");
    is_int(c.shutdown_timeout, 5, "default shutdown-timeout");
    is_str(c.requirepass, "", "default requirepass is none");
    is_int(c.nusers, 0, "no users by default");
    is_str(c.upstream_user, "", "default upstream-user is none");
    is_str(c.upstream_password, "", "default upstream-password is none");
    is_int(c.nrefused, 0, "no refused commands by default");
    is_int(c.allow_shutdown, 0, "default allow-shutdown");
    is_int(c.upstream_max_pinned, 1000, "default upstream-max-pinned");
    is_int(c.upstream_spare, 16, "default upstream-spare");
    is_int(px_config_auth_required(&c), 0, "no authentication by default");
    ok(c.config_file == NULL, "no config file before one is loaded");
    px_config_free(&c);

    /* an empty text, comments and blank lines change nothing */
    px_config_init(&c);
    load_ok(&c, "", "empty text");
    load_ok(&c, "# only a comment\n\n   \n\t# indented comment\n\r\n", "comments and blank lines");
    is_int(c.port, 6380, "comments and blank lines: port still the default");
    px_config_free(&c);
}

static void test_load_string(void)
{
    px_config c;
    char v[256];
    px_config_init(&c);
    if (load_ok(&c,
                "# hotproxy test\n"
                "port 7000\n"
                "\n"
                "  bind 0.0.0.0   \n"
                "\tmaxclients\t50\n"
                "TCP-Backlog 128\n"             /* names are case-insensitive */
                "loglevel VERBOSE\n"            /* and so are enum values */
                "daemonize yes\n"
                "logfile \"/var/log/hot proxy.log\"\n"
                "pidfile '/run/a b.pid'\n"
                "upstream 10.0.0.1:7001\n"
                "port 7002\r\n"                 /* CRLF, and the last one wins */
                "shutdown-timeout 0",           /* no newline at the end */
                "a typical file")) {
        is_int(c.port, 7002, "port: the last of two lines wins, CRLF ending");
        is_str(c.bind, "0.0.0.0", "bind: surrounding spaces ignored");
        is_int(c.maxclients, 50, "maxclients: tab-separated");
        is_int(c.tcp_backlog, 128, "TCP-Backlog: directive names are case-insensitive");
        is_int(c.loglevel, PX_LL_VERBOSE, "loglevel VERBOSE");
        is_int(c.daemonize, 1, "daemonize yes");
        is_str(c.logfile, "/var/log/hot proxy.log", "double-quoted value with a space");
        is_str(c.pidfile, "/run/a b.pid", "single-quoted value with a space");
        is_str(c.upstream, "10.0.0.1:7001", "upstream text kept");
        is_str(c.upstream_host, "10.0.0.1", "upstream_host split off");
        is_int(c.upstream_port, 7001, "upstream_port split off");
        is_int(c.shutdown_timeout, 0, "last line without a newline is read");
        is_str(get(&c, "port", v, sizeof(v)), "7002", "px_config_get port after load");
        is_str(get(&c, "loglevel", v, sizeof(v)), "verbose", "px_config_get loglevel after load");
        is_str(get(&c, "daemonize", v, sizeof(v)), "yes", "px_config_get daemonize after load");
        is_str(get(&c, "logfile", v, sizeof(v)), "/var/log/hot proxy.log", "px_config_get logfile after load");
    }
    px_config_free(&c);

    px_config_init(&c);
    if (load_ok(&c, "logfile \"a\\x41\\tb\\\\\\\"\"\npidfile \"\"\n", "escapes in double quotes, empty quotes")) {
        is_str(c.logfile, "aA\tb\\\"", "\\x41 \\t \\\\ \\\" escapes in double quotes");
        is_str(c.pidfile, "", "\"\" is an empty value");
    }
    px_config_free(&c);

    px_config_init(&c);
    if (load_ok(&c, "loglevel debug\nloglevel warning\nlogfile /tmp/x\nlogfile ''\n", "repeated directives")) {
        is_int(c.loglevel, PX_LL_WARNING, "loglevel warning after debug");
        is_str(c.logfile, "", "logfile '' after /tmp/x");
    }
    px_config_free(&c);
}

static void test_load_errors(void)
{
    load_err("port 7000\nfoo bar\n", "t.conf:2: 'foo bar': ", "unknown directive 'foo'", "unknown directive");
    load_err("# a\n\n  # b\nport 7000\nport nope\n", "t.conf:5: 'port nope': ", "integer",
             "line numbers count comments and blank lines");
    load_err("port nope\r\n", "t.conf:1: 'port nope': ", "integer", "CRLF line: the CR is not part of the quoted line");
    load_err("port 7000x\n", "t.conf:1: 'port 7000x': ", "integer", "trailing junk after a number");
    load_err("port 1e3\n", "t.conf:1: 'port 1e3': ", "integer", "exponent is not an integer");
    load_err("port 99999999999999999999\n", "t.conf:1: 'port 99999999999999999999': ", "integer",
             "integer overflow");
    load_err("port ''\n", "t.conf:1: 'port ''': ", "integer", "empty port");
    load_err("port\n", "t.conf:1: 'port': ", "one value", "directive without a value");
    load_err("port 1 2\n", "t.conf:1: 'port 1 2': ", "one value", "directive with two values");
    load_err("daemonize maybe\n", "t.conf:1: 'daemonize maybe': ", "'yes' or 'no'", "bad boolean");
    load_err("daemonize 1\n", "t.conf:1: 'daemonize 1': ", "'yes' or 'no'", "boolean must be yes/no, not 1");
    load_err("loglevel loud\n", "t.conf:1: 'loglevel loud': ", "debug, verbose, notice, warning", "bad loglevel");
    load_err("logfile \"abc\n", "t.conf:1: 'logfile \"abc': ", "unbalanced quotes", "unterminated double quote");
    load_err("logfile 'abc\n", "t.conf:1: 'logfile 'abc': ", "unbalanced quotes", "unterminated single quote");
    load_err("logfile \"a\"b\n", "t.conf:1: 'logfile \"a\"b': ", "unbalanced quotes",
             "closing quote followed by a letter");
    load_err("proto-max-bulk-len lots\n", "t.conf:1: 'proto-max-bulk-len lots': ", "size",
             "memory directive with no number");
    load_err("proto-max-bulk-len 1tb\n", "t.conf:1: 'proto-max-bulk-len 1tb': ", "size", "unknown memory unit");
    load_err("port 7000\nport 7001\nbind\n", "t.conf:3: 'bind': ", "one value", "error on the last line");
}

static void test_ranges(void)
{
    static const struct {
        const char *line;
        int good;
    } cases[] = {
        {"port 1", 1},
        {"port 65535", 1},
        {"port 0", 0},
        {"port 65536", 0},
        {"port -1", 0},
        {"tcp-backlog 65536", 0},
        {"maxclients 1000000", 1},
        {"maxclients 1000001", 0},
        {"maxclients 0", 0},
        {"timeout 0", 1},
        {"timeout -1", 0},
        {"upstream-connections 1024", 1},
        {"upstream-connections 1025", 0},
        {"upstream-connections 0", 0},
        {"connect-timeout 0", 0},
        {"shutdown-timeout 3600", 1},
        {"shutdown-timeout 3601", 0},
        {"proto-max-bulk-len 1mb", 1},
        {"proto-max-bulk-len 1048575", 0},
        {"client-query-buffer-limit 1023kb", 0},
        {"client-output-buffer-limit 0", 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        px_config c;
        char err[512] = "", prefix[128];
        px_config_init(&c);
        int rc = px_config_load_string(&c, cases[i].line, "t.conf", err, sizeof(err));
        if (cases[i].good) {
            if (!ok(rc == 0, "'%s' is in range", cases[i].line)) diag("  error: %s", err);
        } else {
            snprintf(prefix, sizeof(prefix), "t.conf:1: '%s': ", cases[i].line);
            int good = rc == -1 && !strncmp(err, prefix, strlen(prefix)) && strstr(err, "between");
            if (!ok(good, "'%s' is out of range: -1 and '%s...between...'", cases[i].line, prefix))
                diag("  rc %d, error '%s'", rc, err);
        }
        px_config_free(&c);
    }
    /* the value in range lands in the struct */
    px_config c;
    px_config_init(&c);
    if (load_ok(&c, "port 65535\nproto-max-bulk-len 1mb\nclient-output-buffer-limit 0\n", "boundary values"))
        ok(c.port == 65535 && c.proto_max_bulk_len == MB && c.client_output_buffer_limit == 0,
           "boundary values stored (port %lld, proto-max-bulk-len %lld, client-output-buffer-limit %lld)", c.port,
           c.proto_max_bulk_len, c.client_output_buffer_limit);
    px_config_free(&c);
}

static void test_memory(void)
{
    static const struct {
        const char *s;
        int good;
        long long v;
    } cases[] = {
        {"0", 1, 0},
        {"42", 1, 42},
        {"42b", 1, 42},
        {"1k", 1, 1000},
        {"100kb", 1, 102400},
        {"1m", 1, 1000000},
        {"512mb", 1, 512 * MB},
        {"1g", 1, 1000000000},
        {"1gb", 1, GB},
        {"1GB", 1, GB},
        {"2Gb", 1, 2 * GB},
        {"8589934591gb", 1, 8589934591LL * GB},
        {"9223372036854775807", 1, LLONG_MAX},
        {"8589934592gb", 0, 0},
        {"9223372036854775808", 0, 0},
        {"", 0, 0},
        {"abc", 0, 0},
        {"gb", 0, 0},
        {"1tb", 0, 0},
        {"-1", 0, 0},
        {"-1gb", 0, 0},
        {"+1", 0, 0},
        {" 1", 0, 0},
        {"1 ", 0, 0},
        {"1 gb", 0, 0},
        {"1.5gb", 0, 0},
        {"0x10", 0, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        long long v = -12345;
        int rc = px_config_memtoll(cases[i].s, &v);
        if (cases[i].good)
            ok(rc == 0 && v == cases[i].v, "px_config_memtoll('%s') = %lld (got rc %d, %lld)", cases[i].s, cases[i].v,
               rc, v);
        else
            ok(rc == -1, "px_config_memtoll('%s') is rejected (got rc %d, %lld)", cases[i].s, rc, v);
    }

    px_config c;
    px_config_init(&c);
    if (load_ok(&c, "proto-max-bulk-len 1gb\nproto-max-bulk-len 2mb\nclient-query-buffer-limit 2gb\n"
                    "client-output-buffer-limit 100kb\n",
                "memory directives")) {
        is_int(c.proto_max_bulk_len, 2 * MB, "proto-max-bulk-len 2mb");
        is_int(c.client_query_buffer_limit, 2 * GB, "client-query-buffer-limit 2gb");
        is_int(c.client_output_buffer_limit, 102400, "client-output-buffer-limit 100kb");
    }
    px_config_free(&c);
}

static void test_upstream(void)
{
    static const struct {
        const char *value;
        const char *host;
        long long port;
    } good[] = {
        {"10.0.0.1:7000", "10.0.0.1", 7000},
        {"[::1]:6379", "::1", 6379},
        {"[fe80::1:2]:6380", "fe80::1:2", 6380},
        {"redis.example.com:65535", "redis.example.com", 65535},
        {"localhost:1", "localhost", 1},
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        px_config c;
        char err[512] = "";
        char *argv[] = {(char *)good[i].value};
        px_config_init(&c);
        int rc = px_config_set(&c, "upstream", 1, argv, err, sizeof(err));
        ok(rc == 0 && c.upstream_host && !strcmp(c.upstream_host, good[i].host) && c.upstream_port == good[i].port &&
               c.upstream && !strcmp(c.upstream, good[i].value),
           "upstream %s -> host '%s' port %lld (got rc %d, '%s' %lld)", good[i].value, good[i].host, good[i].port, rc,
           c.upstream_host ? c.upstream_host : "(null)", c.upstream_port);
        px_config_free(&c);
    }
    static const char *const bad[] = {"nohost", "host:", "host:0", "host:65536", ":6379", "host:abc", "[::1]", ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        px_config c;
        char err[512] = "";
        char *argv[] = {(char *)bad[i]};
        px_config_init(&c);
        int rc = px_config_set(&c, "upstream", 1, argv, err, sizeof(err));
        ok(rc == -1 && strstr(err, "upstream"), "upstream '%s' is rejected (rc %d, '%s')", bad[i], rc, err);
        px_config_free(&c);
    }

    /* a rejected value leaves the previous one whole */
    px_config c;
    char err[512];
    px_config_init(&c);
    char *v1[] = {"10.0.0.1:7000"}, *v2[] = {"10.0.0.2:0"}, *p1[] = {"7000"}, *p2[] = {"0"};
    px_config_set(&c, "upstream", 1, v1, err, sizeof(err));
    px_config_set(&c, "port", 1, p1, err, sizeof(err));
    is_int(px_config_set(&c, "upstream", 1, v2, err, sizeof(err)), -1, "upstream 10.0.0.2:0 rejected");
    ok(!strcmp(c.upstream, "10.0.0.1:7000") && !strcmp(c.upstream_host, "10.0.0.1") && c.upstream_port == 7000,
       "rejected upstream leaves upstream, upstream_host and upstream_port as they were");
    is_int(px_config_set(&c, "port", 1, p2, err, sizeof(err)), -1, "port 0 rejected");
    is_int(c.port, 7000, "rejected port leaves the previous port");
    char *none[] = {NULL};
    is_int(px_config_set(&c, "nosuch", 1, p1, err, sizeof(err)), -1, "px_config_set unknown directive");
    ok(strstr(err, "nosuch") != NULL, "px_config_set unknown directive names it: '%s'", err);
    is_int(px_config_set(&c, "port", 0, none, err, sizeof(err)), -1, "px_config_set with no value");
    px_config_free(&c);
}

/* Directives whose px_config_get text can be fed back to px_config_set. */
static const char *const all_names[] = {
    "bind", "port", "tcp-backlog", "maxclients", "timeout", "tcp-keepalive", "upstream", "upstream-connections",
    "upstream-timeout", "connect-timeout", "upstream-max-inflight", "proto-max-bulk-len",
    "client-query-buffer-limit", "client-output-buffer-limit", "loglevel", "logfile", "pidfile", "daemonize",
    "shutdown-timeout", "upstream-user", "allow-shutdown", "upstream-max-pinned", "upstream-spare",
    "topology", "sentinel-master", "sentinel-user",
};
#define NALL (sizeof(all_names) / sizeof(all_names[0]))
/* And those whose text is not a value: masked secrets, and the multi-word ones. */
static const char *const other_names[] = {"requirepass", "upstream-password", "sentinel-password", "user",
                                          "refuse-command", "cache-rule"};
#define NOTHER (sizeof(other_names) / sizeof(other_names[0]))

static int is_other(const char *name)
{
    for (size_t i = 0; i < NOTHER; i++)
        if (!strcmp(other_names[i], name)) return 1;
    return 0;
}

static void test_get(void)
{
    px_config c, d;
    char v[256], w[256], err[512];
    const char *name, *name2;
    px_config_init(&c);

    int n = 0, unique = 1;
    const char *seen[128];
    while (n < 128 && px_config_get(&c, n, &name, v, sizeof(v))) {
        for (int j = 0; j < n; j++)
            if (!strcmp(seen[j], name)) unique = 0;
        seen[n++] = name;
    }
    ok(n > 0 && n < 128, "px_config_get iterates a finite table (%d directives)", n);
    ok(unique, "directive names are unique");
    is_int(px_config_get(&c, n, &name, v, sizeof(v)), 0, "px_config_get past the end returns 0");
    is_int(px_config_get(&c, -1, &name, v, sizeof(v)), 0, "px_config_get(-1) returns 0");
    for (size_t i = 0; i < NALL; i++) ok(get(&c, all_names[i], v, sizeof(v)) != NULL, "directive %s is listed", all_names[i]);
    for (size_t i = 0; i < NOTHER; i++)
        ok(get(&c, other_names[i], v, sizeof(v)) != NULL, "directive %s is listed", other_names[i]);

    is_str(get(&c, "port", v, sizeof(v)), "6380", "get port default");
    is_str(get(&c, "upstream", v, sizeof(v)), "127.0.0.1:6379", "get upstream default");
    is_str(get(&c, "proto-max-bulk-len", v, sizeof(v)), "536870912", "get proto-max-bulk-len default in bytes");
    is_str(get(&c, "loglevel", v, sizeof(v)), "notice", "get loglevel default");
    is_str(get(&c, "daemonize", v, sizeof(v)), "no", "get daemonize default");
    is_str(get(&c, "logfile", v, sizeof(v)), "", "get logfile default");

    {
        char tiny[4];
        memset(tiny, 'x', sizeof(tiny));
        ok(get(&c, "upstream", tiny, sizeof(tiny)) && tiny[3] == '\0' && !strncmp(tiny, "127", 3),
           "px_config_get truncates to the buffer it is given");
    }

    /*
     * Round trip: every directive's text, fed back through px_config_set into
     * a fresh config, gives the same text.  Done on non-default values so a
     * directive that is not really copied shows.
     */
    load_ok(&c,
            "bind 10.1.2.3\nport 7100\ntcp-backlog 64\nmaxclients 77\ntimeout 30\ntcp-keepalive 60\n"
            "upstream [::1]:6390,10.0.0.9:26379\nupstream-connections 9\nupstream-timeout 250\nconnect-timeout 75\n"
            "upstream-max-inflight 33\nproto-max-bulk-len 3mb\nclient-query-buffer-limit 5mb\n"
            "client-output-buffer-limit 7kb\nloglevel warning\nlogfile \"/tmp/a b.log\"\npidfile /tmp/p.pid\n"
            "daemonize yes\nshutdown-timeout 11\nupstream-user proxy\nallow-shutdown yes\n"
            "upstream-max-pinned 12\nupstream-spare 3\ntopology sentinel\nsentinel-master mm\nsentinel-user su\n",
            "every directive set to a non-default value");
    px_config_init(&d);
    int bad = 0, changed = 0;
    for (int i = 0; px_config_get(&c, i, &name, v, sizeof(v)); i++) {
        if (is_other(name)) continue;
        char *argv[] = {v};
        if (px_config_set(&d, name, 1, argv, err, sizeof(err)) != 0 || !px_config_get(&d, i, &name2, w, sizeof(w)) ||
            strcmp(name, name2) || strcmp(v, w)) {
            if (!bad) diag("  %s: '%s' came back as '%s' (%s)", name, v, w, err);
            bad++;
        }
        px_config d0;
        px_config_init(&d0);
        int listed = 0;
        for (size_t j = 0; j < NALL; j++) listed |= !strcmp(all_names[j], name);
        if (listed && px_config_get(&d0, i, &name2, w, sizeof(w)) && strcmp(v, w)) changed++;
        px_config_free(&d0);
    }
    ok(bad == 0, "every single-valued directive's text round-trips through px_config_set (%d did not)", bad);
    is_int(changed, (int)NALL, "each of the %d known directives differed from its default in the round trip", (int)NALL);
    ok(d.upstream_port == 6390 && !strcmp(d.upstream_host, "::1"), "round trip re-derives upstream_host and port");
    ok(d.nupstreams == 2 && d.upstreams[1].port == 26379 && !strcmp(d.upstreams[1].host, "10.0.0.9"),
       "round trip re-derives the upstream list");
    px_config_free(&d);
    px_config_free(&c);
}

static void test_security(void)
{
    px_config c;
    char v[256], err[512] = "";
    px_config_init(&c);
    if (load_ok(&c,
                "requirepass s3cret\n"
                "user alice on >pw1 >pw2\n"
                "user bob off >pw\n"
                "user carol on nopass\n"
                "user dave on nopass resetpass >d\n"
                "upstream-user proxy\n"
                "upstream-password upw\n"
                "refuse-command FLUSHALL keys\n"
                "refuse-command debug\n",
                "users, passwords and refused commands")) {
        is_int(px_config_auth_required(&c), 1, "requirepass and users: authentication required");
        is_int(c.nusers, 4, "four users");
        const px_user *u = px_config_user(&c, "alice", 5);
        ok(u && px_config_user_check(u, "pw1", 3) && px_config_user_check(u, "pw2", 3),
           "alice: both of her passwords are accepted");
        ok(u && !px_config_user_check(u, "pw", 2) && !px_config_user_check(u, "pw12", 4) &&
               !px_config_user_check(u, "", 0) && !px_config_user_check(u, "s3cret", 6),
           "alice: a prefix, a longer string, nothing, or requirepass are not her password");
        ok(u && px_config_user_check(u, "pw1xyz", 3), "px_config_user_check compares len bytes, not a C string");
        ok(px_config_user(&c, "alicex", 5) == u, "px_config_user compares len bytes of the name");
        ok(px_config_user(&c, "alic", 4) == NULL && px_config_user(&c, "ALICE", 5) == NULL,
           "px_config_user: no prefix match, names are case-sensitive");
        u = px_config_user(&c, "bob", 3);
        ok(u && !px_config_user_check(u, "pw", 2), "bob is off: his right password is refused");
        u = px_config_user(&c, "carol", 5);
        ok(u && px_config_user_check(u, "anything", 8), "carol has nopass: any password");
        u = px_config_user(&c, "dave", 4);
        ok(u && px_config_user_check(u, "d", 1) && !px_config_user_check(u, "x", 1),
           "dave: resetpass after nopass, only his password");
        u = px_config_user(&c, "default", 7);
        ok(u && px_config_user_check(u, "s3cret", 6) && !px_config_user_check(u, "s3cre", 5),
           "\"default\" is requirepass (px_config.h)");
        is_str(c.upstream_user, "proxy", "upstream-user");
        is_str(c.upstream_password, "upw", "upstream-password");
        const char *secret = get(&c, "requirepass", v, sizeof(v));
        ok(secret && !strstr(secret, "s3cret") && *secret, "px_config_get masks requirepass ('%s')", secret ? secret : "");
        secret = get(&c, "upstream-password", v, sizeof(v));
        ok(secret && !strstr(secret, "upw") && *secret, "px_config_get masks upstream-password ('%s')",
           secret ? secret : "");
        ok(px_config_refused(&c, "flushall") && px_config_refused(&c, "keys") && px_config_refused(&c, "debug"),
           "refuse-command: listed commands refused, names lowercased");
        ok(!px_config_refused(&c, "get") && !px_config_refused(&c, "flush"), "refuse-command: others are not");
        is_str(get(&c, "refuse-command", v, sizeof(v)), "flushall keys debug", "px_config_get refuse-command");
        ok(px_config_refused(&c, "shutdown"), "shutdown refused unless allow-shutdown");
    }
    px_config_free(&c);

    px_config_init(&c);
    if (load_ok(&c, "allow-shutdown yes\n", "allow-shutdown yes")) ok(!px_config_refused(&c, "shutdown"), "allow-shutdown yes lets shutdown through");
    px_config_free(&c);

    px_config_init(&c);
    if (load_ok(&c, "user alice on >x\n", "one user, no requirepass"))
        is_int(px_config_auth_required(&c), 1, "a user alone requires authentication");
    ok(px_config_user(&c, "default", 7) == NULL, "no requirepass: no \"default\" user");
    px_config_free(&c);

    px_config_init(&c);
    if (load_ok(&c, "requirepass x\nrequirepass \"\"\n", "requirepass cleared"))
        is_int(px_config_auth_required(&c), 0, "requirepass \"\": no authentication");
    px_config_free(&c);

    load_err("user\n", "t.conf:1: 'user': ", "name", "user without a name");
    load_err("user alice on ~keys*\n", "t.conf:1: 'user alice on ~keys*': ", "~keys*", "user with a key rule");
    load_err("user alice on\nuser alice off\n", "t.conf:2: 'user alice off': ", "twice", "user defined twice");
    load_err("refuse-command\n", "t.conf:1: 'refuse-command': ", "refuse-command", "refuse-command with no name");
    (void)err;
}

static char *write_temp(const char *text, size_t len)
{
    const char *dir = getenv("TMPDIR");
    char *path = malloc(4096);
    snprintf(path, 4096, "%s/test_config.XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0 || write(fd, text, len) != (ssize_t)len) {
        perror("temp file");
        exit(99);
    }
    close(fd);
    return path;
}

static void test_file(void)
{
    px_config c;
    char err[512] = "";
    static const char text[] = "# test\nport 7000\nloglevel debug\nupstream [::1]:6391\n";
    char *path = write_temp(text, sizeof(text) - 1);
    px_config_init(&c);
    int rc = px_config_load_file(&c, path, err, sizeof(err));
    if (!ok(rc == 0, "px_config_load_file reads a file")) diag("  %s", err);
    is_int(c.port, 7000, "port from the file");
    ok(c.config_file && c.config_file[0] == '/', "config_file is an absolute path ('%s')",
       c.config_file ? c.config_file : "(null)");
    {
        char *real = realpath(path, NULL);
        ok(real && c.config_file && !strcmp(real, c.config_file), "config_file is the file's real path");
        free(real);
    }
    px_config_free(&c);

    /* command line: the file first, then --directives, which win */
    {
        char out[4096] = "";
        char *argv[] = {"hotproxy", path, "--port", "7002", "--logfile", "/tmp/x \"y\" \\z", "--pidfile", ""};
        px_config_init(&c);
        rc = px_config_from_args(&c, 8, argv, out, sizeof(out), err, sizeof(err));
        if (!ok(rc == 0, "hotproxy file --port 7002 ...: 0")) diag("  %s", err);
        is_int(c.port, 7002, "command line wins over the file");
        is_int(c.loglevel, PX_LL_DEBUG, "the file's other directives stay");
        ok(c.upstream_host && !strcmp(c.upstream_host, "::1") && c.upstream_port == 6391,
           "upstream [::1]:6391 from the file is split");
        is_str(c.logfile, "/tmp/x \"y\" \\z", "a value with spaces, quotes and a backslash survives the command line");
        is_str(c.pidfile, "", "an empty value on the command line");
        ok(c.config_file != NULL, "config_file set when the command line names a file");
        px_config_free(&c);
    }
    {
        char out[4096] = "";
        char *argv[] = {"hotproxy", path, "stray"};
        px_config_init(&c);
        rc = px_config_from_args(&c, 3, argv, out, sizeof(out), err, sizeof(err));
        ok(rc == -1 && strstr(err, "stray"), "a value with no --directive before it is rejected ('%s')", err);
        px_config_free(&c);
    }
    unlink(path);

    /* errors in a file are reported with its name */
    static const char badtext[] = "port 7000\nfoo bar\n";
    char *bad = write_temp(badtext, sizeof(badtext) - 1);
    char want[4200];
    snprintf(want, sizeof(want), "%s:2: 'foo bar': ", bad);
    px_config_init(&c);
    rc = px_config_load_file(&c, bad, err, sizeof(err));
    ok(rc == -1 && !strncmp(err, want, strlen(want)), "error in a file: '%s...' (got '%s')", want, err);
    ok(c.config_file == NULL, "config_file not set when the file is rejected");
    px_config_free(&c);
    unlink(bad);

    static const char nul[] = "port 7000\n\0port 7001\n";
    char *bin = write_temp(nul, sizeof(nul) - 1);
    px_config_init(&c);
    rc = px_config_load_file(&c, bin, err, sizeof(err));
    ok(rc == -1 && strstr(err, bin), "a file with a NUL byte is rejected ('%s')", err);
    px_config_free(&c);
    unlink(bin);

    px_config_init(&c);
    rc = px_config_load_file(&c, "/nonexistent/hotproxy.conf", err, sizeof(err));
    ok(rc == -1 && strstr(err, "/nonexistent/hotproxy.conf"), "a missing file is an error naming it ('%s')", err);
    px_config_free(&c);

    free(path);
    free(bad);
    free(bin);
}

static void test_args(void)
{
    px_config c;
    char out[4096], err[512];
    int rc;

    {
        char *argv[] = {"hotproxy"};
        px_config_init(&c);
        rc = px_config_from_args(&c, 1, argv, out, sizeof(out), err, sizeof(err));
        ok(rc == 0 && c.port == 6380 && c.config_file == NULL, "no arguments: 0 and the defaults");
        px_config_free(&c);
    }
    {
        char *argv[] = {"hotproxy", "--port", "7001", "--loglevel", "warning", "--upstream", "[::1]:6390",
                        "--port", "7003"};
        px_config_init(&c);
        rc = px_config_from_args(&c, 9, argv, out, sizeof(out), err, sizeof(err));
        if (!ok(rc == 0, "--port --loglevel --upstream --port: 0")) diag("  %s", err);
        is_int(c.port, 7003, "the later of two --port wins");
        is_int(c.loglevel, PX_LL_WARNING, "--loglevel warning");
        ok(c.upstream_host && !strcmp(c.upstream_host, "::1") && c.upstream_port == 6390,
           "--upstream [::1]:6390 split into host and port");
        px_config_free(&c);
    }
    static const char *const help[] = {"--help", "-h"};
    for (int i = 0; i < 2; i++) {
        char *argv[] = {"hotproxy", (char *)help[i], "--port", "1"};
        px_config_init(&c);
        out[0] = '\0';
        rc = px_config_from_args(&c, 4, argv, out, sizeof(out), err, sizeof(err));
        ok(rc == 1 && strstr(out, "Usage") && c.port == 6380, "%s: returns 1 with the usage text, config untouched",
           help[i]);
        px_config_free(&c);
    }
    static const char *const ver[] = {"--version", "-v"};
    for (int i = 0; i < 2; i++) {
        char *argv[] = {"hotproxy", (char *)ver[i]};
        px_config_init(&c);
        out[0] = '\0';
        rc = px_config_from_args(&c, 2, argv, out, sizeof(out), err, sizeof(err));
        if (!ok(rc == 1 && !strcmp(out, "hotproxy " HOTPROXY_VERSION "\n"), "%s: returns 1 and 'hotproxy %s'", ver[i],
                HOTPROXY_VERSION))
            diag("  rc %d, out '%.*s'", rc, (int)strcspn(out, "\n"), out);
        px_config_free(&c);
    }
    {
        /* --test-config reads the rest of the line as a start would */
        char *argv[] = {"hotproxy", "--test-config", "--port", "7002"};
        px_config_init(&c);
        rc = px_config_from_args(&c, 4, argv, out, sizeof(out), err, sizeof(err));
        ok(rc == 2 && c.port == 7002, "--test-config --port 7002: returns 2 with the directive applied (rc %d)", rc);
        px_config_free(&c);
        char *bad_argv[] = {"hotproxy", "--test-config", "--port", "0"};
        px_config_init(&c);
        rc = px_config_from_args(&c, 4, bad_argv, out, sizeof(out), err, sizeof(err));
        ok(rc == -1 && strstr(err, "(command line):1:"), "--test-config --port 0: -1 naming the line ('%s')", err);
        px_config_free(&c);
    }

    static const struct {
        int argc;
        const char *argv[5];
        const char *want;
    } bad[] = {
        {3, {"hotproxy", "--nosuch", "1"}, "unknown directive 'nosuch'"},
        {3, {"hotproxy", "--port", "abc"}, "integer"},
        {3, {"hotproxy", "--port", "70000"}, "between"},
        {2, {"hotproxy", "--port"}, "one value"},
        {4, {"hotproxy", "--port", "1", "2"}, "one value"},
        {3, {"hotproxy", "--upstream", "nohost"}, "host:port"},
        {2, {"hotproxy", "/nonexistent/x.conf"}, "/nonexistent/x.conf"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char line[128] = "";
        for (int j = 1; j < bad[i].argc; j++) {
            strcat(line, " ");
            strcat(line, bad[i].argv[j]);
        }
        px_config_init(&c);
        err[0] = '\0';
        rc = px_config_from_args(&c, bad[i].argc, (char **)bad[i].argv, out, sizeof(out), err, sizeof(err));
        int from_cmdline = bad[i].argv[1][0] == '-';
        ok(rc == -1 && strstr(err, bad[i].want) && (!from_cmdline || !strncmp(err, "(command line):", 15)),
           "hotproxy%s: -1, error mentions '%s'%s (got '%s')", line, bad[i].want,
           from_cmdline ? " and names (command line)" : "", err);
        px_config_free(&c);
    }

    /* Regression: secrets given on the command line stayed visible in ps. */
    {
        char a[][32] = {"hotproxy", "--requirepass", "s3cret-a", "--upstream-password", "s3cret-b", "--user",
                        "alice", "on", ">s3cret-c", "+@admin", "--port", "7001"};
        char *argv[12];
        for (int i = 0; i < 12; i++) argv[i] = a[i];
        px_config_init(&c);
        rc = px_config_from_args(&c, 12, argv, out, sizeof(out), err, sizeof(err));
        ok(rc == 0, "--requirepass --upstream-password --user --port: 0");
        px_config_scrub_args(12, argv);
        int leaked = 0;
        for (int i = 0; i < 12; i++) leaked |= strstr(argv[i], "s3cret") != NULL;
        ok(!leaked, "regression: px_config_scrub_args leaves no secret in argv");
        ok(!strcmp(argv[1], "--requirepass") && !strcmp(argv[6], "alice") && !strcmp(argv[7], "on") &&
               !strcmp(argv[9], "+@admin") && !strcmp(argv[11], "7001"),
           "... and leaves the rest as it was");
        ok(!strcmp(c.requirepass, "s3cret-a") && !strcmp(c.upstream_password, "s3cret-b"),
           "... the parsed config keeps the secrets");
        px_config_free(&c);
    }
}

/* Every directive is documented in the sample config, which must load as is. */
static void test_sample_conf(void)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s", __FILE__);
    char *cut = strstr(path, "tests/unit/test_config.c");
    if (!cut || access(path, R_OK) != 0) {
        skip("source tree not found from __FILE__");
        return;
    }
    strcpy(cut, "conf/hotproxy.conf");
    if (access(path, R_OK) != 0) {
        skip("no conf/hotproxy.conf yet");
        return;
    }
    FILE *f = fopen(path, "r");
    char *text = calloc(1, 1 << 20);
    size_t n = fread(text, 1, (1 << 20) - 1, f);
    fclose(f);
    text[n] = '\0';
    const char *name;
    char v[256];
    px_config c;
    px_config_init(&c);
    int missing = 0;
    for (int i = 0; px_config_get(&c, i, &name, v, sizeof(v)); i++) {
        /* documented = appears at the start of a line, possibly commented out: "name " or "# name " */
        int found = 0;
        for (const char *p = text; p && *p && !found; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
            const char *q = p;
            if (*q == '#') q++;
            while (*q == ' ') q++;
            size_t nl = strlen(name);
            if (!strncmp(q, name, nl) && (q[nl] == ' ' || q[nl] == '\t')) found = 1;
        }
        if (!found) {
            diag("  %s is not in %s", name, path);
            missing++;
        }
    }
    ok(missing == 0, "every directive appears in conf/hotproxy.conf (%d missing)", missing);
    char err[512] = "";
    int rc = px_config_load_file(&c, path, err, sizeof(err));
    if (!ok(rc == 0, "conf/hotproxy.conf loads")) diag("  %s", err);
    /* the file says every value in it is the default: loading it changes nothing */
    px_config d;
    char w[256];
    int differ = 0;
    px_config_init(&d);
    for (int i = 0; rc == 0 && px_config_get(&c, i, &name, v, sizeof(v)); i++) {
        const char *dname;
        if (px_config_get(&d, i, &dname, w, sizeof(w)) && strcmp(v, w)) {
            diag("  %s is '%s' after loading, default '%s'", name, v, w);
            differ++;
        }
    }
    ok(rc == 0 && differ == 0, "conf/hotproxy.conf as shipped sets every directive to its default (%d differ)",
       differ);
    px_config_free(&d);
    px_config_free(&c);
    free(text);
}

/* topology, sentinel-*, and upstream lists: parsing, repeats, combinations. */
static void check_topology(const char *text, int want_rc, const char *want_reason, const char *what)
{
    px_config c;
    char err[512] = "";
    px_config_init(&c);
    int rc = px_config_load_string(&c, text, "t.conf", err, sizeof(err));
    if (rc == 0) rc = px_config_check_topology(&c, err, sizeof(err));
    ok(rc == want_rc && (!want_reason || strstr(err, want_reason)), "%s (rc %d, '%s')", what, rc, err);
    px_config_free(&c);
}

static void test_topology(void)
{
    px_config c;
    char err[512] = "";
    px_config_init(&c);
    is_int(c.topology, PX_TOPO_AUTO, "default topology auto");
    is_str(c.sentinel_master, "", "default sentinel-master is empty (the only one)");
    is_str(c.sentinel_user, "", "default sentinel-user is none");
    is_str(c.sentinel_password, "", "default sentinel-password is none");
    ok(c.nupstreams == 1 && c.upstreams[0].port == 6379 && !strcmp(c.upstreams[0].host, "127.0.0.1"),
       "default upstream list: 127.0.0.1:6379");
    is_int(px_config_check_topology(&c, err, sizeof(err)), 0, "the defaults go together");

    if (load_ok(&c, "upstream 10.0.0.1:26379,[::1]:26380,10.0.0.3:26381\n", "a comma-separated list")) {
        ok(c.nupstreams == 3 && !strcmp(c.upstreams[1].host, "::1") && c.upstreams[1].port == 26380 &&
               c.upstreams[2].port == 26381,
           "three addresses, in order (%d)", c.nupstreams);
        ok(!strcmp(c.upstream_host, "10.0.0.1") && c.upstream_port == 26379, "upstream_host/port: the first");
    }
    px_config_free(&c);

    px_config_init(&c);
    if (load_ok(&c, "upstream 10.0.0.1:1\nupstream 10.0.0.2:2,10.0.0.3:3\n", "upstream repeated in one file")) {
        ok(c.nupstreams == 3 && c.upstreams[2].port == 3, "a repeat in the same text adds (%d)", c.nupstreams);
        is_str(c.upstream, "10.0.0.1:1,10.0.0.2:2,10.0.0.3:3", "the text lists them all");
    }
    /* a later text (the command line after the file) replaces the list */
    if (load_ok(&c, "upstream 10.0.0.9:9\n", "upstream in a later text")) {
        ok(c.nupstreams == 1 && c.upstreams[0].port == 9 && !strcmp(c.upstream, "10.0.0.9:9"),
           "a later text replaces the list (%d, '%s')", c.nupstreams, c.upstream);
    }
    char *badlist[] = {"10.0.0.1:1,10.0.0.2:0"};
    is_int(px_config_set(&c, "upstream", 1, badlist, err, sizeof(err)), -1, "a list with one bad address is rejected");
    ok(strstr(err, "upstream") != NULL, "... naming the directive ('%s')", err);
    ok(c.nupstreams == 1 && c.upstreams[0].port == 9, "... and the list is left as it was");
    char *trailing[] = {"10.0.0.1:1,"};
    is_int(px_config_set(&c, "upstream", 1, trailing, err, sizeof(err)), -1, "a trailing comma is rejected");
    px_config_free(&c);

    px_config_init(&c);
    static const char *const kinds[] = {"auto", "single", "sentinel", "cluster"};
    for (int i = 0; i < 4; i++) {
        char *v[] = {(char *)kinds[i]};
        ok(px_config_set(&c, "topology", 1, v, err, sizeof(err)) == 0 && c.topology == i, "topology %s", kinds[i]);
    }
    char *badtopo[] = {"ring"};
    is_int(px_config_set(&c, "topology", 1, badtopo, err, sizeof(err)), -1, "topology ring is rejected");
    ok(strstr(err, "auto, single, sentinel, cluster") != NULL, "... listing the choices ('%s')", err);
    {
        char v[64];
        const char *name;
        char *pw[] = {"s3"};
        px_config_set(&c, "sentinel-password", 1, pw, err, sizeof(err));
        int masked = 0;
        for (int i = 0; px_config_get(&c, i, &name, v, sizeof(v)); i++)
            if (!strcmp(name, "sentinel-password")) masked = !strcmp(v, "(set)");
        ok(masked, "px_config_get masks sentinel-password");
        char a0[] = "hotproxy", a1[] = "--sentinel-password", a2[] = "s3cret";
        char *argv[] = {a0, a1, a2};
        px_config_scrub_args(3, argv);
        is_str(a2, "xxxxxx", "px_config_scrub_args hides sentinel-password");
    }
    px_config_free(&c);

    check_topology("topology single\nupstream 10.0.0.1:1,10.0.0.2:2\n", -1, "topology single",
                   "topology single with two upstreams is refused");
    check_topology("topology single\nsentinel-master mymaster\n", -1, "sentinel-master",
                   "sentinel-master with topology single is refused");
    check_topology("topology sentinel\nsentinel-user u\n", -1, "sentinel-user is set without sentinel-password",
                   "sentinel-user without a password is refused");
    check_topology("topology cluster\nupstream 10.0.0.1:7000,10.0.0.2:7000\n", 0, NULL,
                   "topology cluster with several seed nodes");
    check_topology("topology cluster\nsentinel-master m\n", -1, "topology cluster uses no Sentinel",
                   "sentinel-master with topology cluster is refused");
    check_topology("topology sentinel\nupstream 10.0.0.1:26379,10.0.0.2:26379\nsentinel-master m\n"
                   "sentinel-user u\nsentinel-password p\nupstream-password q\n",
                   0, NULL, "topology sentinel with Sentinels, a name and both credentials");
    check_topology("upstream 10.0.0.1:26379,10.0.0.2:26379\n", 0, NULL,
                   "topology auto with several upstreams (asked at startup)");
}

int main(void)
{
    test_defaults();
    test_load_string();
    test_load_errors();
    test_ranges();
    test_memory();
    test_upstream();
    test_topology();
    test_get();
    test_security();
    test_file();
    test_args();
    test_sample_conf();
    done_testing();
    return exit_status();
}
