/*
 * px_config: hotproxy's configuration, the redis-server way.
 *
 * Every directive is declared once, in px_config.c's table {name, type, min,
 * max, default, offset}; the file parser, the command line (--name value),
 * the documentation check in tests and CONFIG-style introspection all read
 * that table.  Parsing takes a string, so tests need no files.
 */
#ifndef PX_CONFIG_H
#define PX_CONFIG_H

#include <stddef.h>

/* A client identity hotproxy itself checks ("user" directive, ACL-style). */
typedef struct px_user {
    char *name;
    int enabled;
    int nopass;
    int admin;              /* "+@admin": may use HOTPROXY admin commands */
    int npasswords;
    char **passwords;
} px_user;

/*
 * A cache-rule: the L1 policy for keys starting with prefix ("*" matches
 * every key).  -1 in a field means "the l1-* directive's value".
 */
typedef struct px_rule {
    char *prefix;
    size_t plen;
    int any;
    long long cache;            /* 1 or 0 */
    long long ttl, jitter, negative_ttl, max_entry_size;
    long long write_ttl_jitter; /* percent by which TTLs written to Redis are spread; 0 = off */
    long long write_ttl_floor;  /* ms: spreading never shortens a TTL below this */
} px_rule;

/* A rule resolved against the l1-* defaults. */
typedef struct px_policy {
    int cache;
    long long ttl, jitter, negative_ttl, max_entry_size, write_ttl_jitter, write_ttl_floor;
} px_policy;

/* One address of an "upstream" list. */
typedef struct px_hostport {
    char *host;
    int port;
} px_hostport;

/* What stands behind the upstream addresses ("topology"). */
enum { PX_TOPO_AUTO, PX_TOPO_SINGLE, PX_TOPO_SENTINEL, PX_TOPO_CLUSTER };

typedef struct px_config {
    /* network */
    char *bind;
    long long port;
    long long tcp_backlog;
    long long maxclients;
    long long timeout;              /* seconds a client may idle, 0 = never */
    long long tcp_keepalive;        /* seconds, 0 = off */
    /* upstream */
    char *upstream;                 /* "host:port[,host:port...]", every address given */
    char *upstream_host;            /* derived from upstream: its first address */
    long long upstream_port;        /* derived from upstream */
    int nupstreams;                 /* derived from upstream: every address, in order */
    px_hostport *upstreams;
    int upstream_load;              /* the load that last set upstream (a repeat in it adds) */
    int loading;                    /* the load_string call running now (0: none) */
    int nloads;
    long long topology;             /* PX_TOPO_* */
    char *sentinel_master;          /* the master set's name; "" = the only one the Sentinel watches */
    char *sentinel_user;            /* credentials hotproxy uses with the Sentinels */
    char *sentinel_password;
    long long upstream_connections; /* shared pool size */
    long long upstream_timeout;     /* ms a command may wait for its reply, 0 = forever */
    long long connect_timeout;      /* ms */
    long long upstream_max_inflight;/* commands a client may have in flight before we stop reading it */
    /* limits */
    long long proto_max_bulk_len;
    long long client_query_buffer_limit;
    long long client_output_buffer_limit; /* bytes, 0 = unlimited */
    long long maxmemory_clients;    /* bytes of every client's buffers together, 0 = unlimited */
    /* process */
    long long loglevel;             /* PX_LL_* */
    char *logfile;                  /* "" = standard output */
    char *pidfile;                  /* "" = none */
    long long daemonize;
    long long shutdown_timeout;     /* seconds to flush in-flight commands on SIGTERM */
    /* security and compatibility */
    char *requirepass;              /* password of the "default" user, "" = none */
    int nusers;
    px_user *users;                 /* "user" directives */
    px_user default_user;           /* "default" when requirepass is set and no "user default" line */
    char *upstream_user;            /* credentials hotproxy uses upstream */
    char *upstream_password;
    int nrefused;
    char **refused;                 /* "refuse-command" names, lowercase */
    long long allow_shutdown;
    long long upstream_max_pinned;  /* cap on connections pinned to clients */
    long long upstream_spare;       /* clean pinned connections kept for reuse */
    /* the L1 */
    long long l1;                   /* yes/no */
    long long l1_maxmemory;
    long long l1_max_entry_size;
    long long l1_ttl;               /* ms */
    long long l1_ttl_jitter;        /* percent */
    long long l1_negative_ttl;      /* ms */
    long long l1_hot_threshold;
    long long l1_max_waiters;
    long long l1_tracking;          /* yes/no */
    long long l1_refresh_ahead;     /* percent of an entry's TTL before expiry when a read may refresh it */
    int nrules;
    px_rule *rules;                 /* "cache-rule" directives, first match wins */
    /* metrics */
    long long metrics_port;         /* the Prometheus page's port, 0 = off */
    char *metrics_bind;             /* one address */
    long long latency_tracking;     /* yes/no: the latency histograms (one clock read per command and reply) */
    /* TLS towards clients (Redis' directive names) */
    long long tls_port;             /* 0 = off */
    char *tls_cert_file;
    char *tls_key_file;
    char *tls_ca_cert_file;
    char *tls_ca_cert_dir;
    long long tls_auth_clients;     /* PX_TLS_AUTH_* (px_tls.h) */
    char *tls_protocols;            /* "TLSv1.2 TLSv1.3"; "" = TLSv1.2 and up */
    char *tls_ciphers;              /* TLSv1.2 and below */
    char *tls_ciphersuites;         /* TLSv1.3 */
    long long tls_prefer_server_ciphers;
    /* TLS towards Redis */
    long long upstream_tls;         /* yes/no */
    char *upstream_tls_cert_file;   /* hotproxy's own certificate (mutual TLS) */
    char *upstream_tls_key_file;
    char *upstream_tls_ca_cert_file;/* "" with the dir "": the system's store */
    char *upstream_tls_ca_cert_dir;
    char *upstream_tls_sni;         /* "" = the upstream's host name */
    long long upstream_tls_verify;  /* yes/no: the peer's certificate and name */
    char *config_file;              /* absolute path of the file read, or NULL */
} px_config;

enum { PX_LL_DEBUG, PX_LL_VERBOSE, PX_LL_NOTICE, PX_LL_WARNING };

/* Set every directive to its default. */
void px_config_init(px_config *c);
void px_config_free(px_config *c);

/*
 * Apply the directives in text, one per line, "#" comments allowed.  source
 * names the text in errors (a file name, or "(command line)").  Returns 0, or
 * -1 with err holding "source:line: 'line': reason".
 */
int px_config_load_string(px_config *c, const char *text, const char *source, char *err, size_t errlen);
int px_config_load_file(px_config *c, const char *path, char *err, size_t errlen);
/* One directive; argv-style values already split. */
int px_config_set(px_config *c, const char *name, int argc, char **argv, char *err, size_t errlen);

/*
 * The command line: hotproxy [file.conf] [--directive value ...].  Directives
 * on the command line win over the file.  Returns 0, 1 when --help or
 * --version was handled (text written to out), 2 when the line was
 * "--test-config [file.conf] [--directive value ...]" and read without error
 * (the caller checks and exits instead of starting), or -1 with err set.
 */
int px_config_from_args(px_config *c, int argc, char **argv, char *out, size_t outlen, char *err, size_t errlen);

/*
 * Overwrite, in place, the secrets a command line px_config_from_args
 * accepted carries (the values of requirepass, upstream-password and the
 * other secret directives, and a user's ">password" words), so ps and
 * /proc/PID/cmdline do not show them.  Keep a copy first if the command
 * line must be read again (reload).
 */
void px_config_scrub_args(int argc, char **argv);

/*
 * Directives that are each valid but wrong together (topology single with
 * several upstreams, sentinel-* without topology sentinel or auto, a
 * sentinel-user without a password, topology cluster): -1 with the reason
 * in err.  Called at startup, once the whole configuration is read.
 */
int px_config_check_topology(const px_config *c, char *err, size_t errlen);

/* 1 if any client authentication is configured. */
int px_config_auth_required(const px_config *c);
/* The user with that name ("default" is requirepass), or NULL. */
const px_user *px_config_user(const px_config *c, const char *name, size_t len);
/* 1 if pass is one of u's passwords (constant time in the password). */
int px_config_user_check(const px_user *u, const char *pass, size_t len);
/*
 * The L1 policy for a key: the first cache-rule whose prefix matches, or
 * the l1-* directives when no rule is configured.  A key no rule matches is
 * not cached (cache 0).
 */
void px_config_policy(const px_config *c, const char *key, size_t len, px_policy *out);

/* 1 if the operator refused this command (refuse-command, SHUTDOWN unless
 * allowed); name is the table's, "container|sub" for a subcommand. */
int px_config_refused(const px_config *c, const char *name);

/* Iterate directives: name and current value as text (secrets masked);
 * returns 0 past the end. */
int px_config_get(const px_config *c, int index, const char **name, char *value, size_t valuelen);
/*
 * Take over from fresh (a config just read again) every directive that can
 * change while running; those that need a restart are left, and their
 * names listed in restart.  fresh keeps the old values, to be freed.
 * Returns how many directives changed.
 */
int px_config_reload(px_config *live, px_config *fresh, char *restart, size_t restartlen);
int px_config_is_directive(const char *name);
int px_config_restart_only(const char *name);

/* Parse "1gb", "512mb", "100k", "42": returns 0 and *out, or -1. */
int px_config_memtoll(const char *s, long long *out);

#endif
