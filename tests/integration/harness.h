/*
 * harness.h: what the C integration tests share.  Each test binary starts
 * its own processes on free loopback ports -- a real redis-server, hotproxy
 * ($HOTPROXY_BIN, ./build/hotproxy when unset), and fake upstreams for what a
 * real server cannot be made to do (stall, answer garbage) -- and talks to
 * them over raw sockets or hiredis.
 *
 * Every process started here is registered and killed at exit, on a fatal
 * signal and on the watchdog alarm; children also die with the test through
 * PR_SET_PDEATHSIG, so a test killed by prove's timeout leaves nothing behind.
 * Temporary files live in one mkdtemp directory, removed at exit.
 *
 *   hx_init(240);                 once, first thing in main(): watchdog, dirs
 *   hx_proc r, p;
 *   hx_redis_start(&r, 0);        0 picks a free port
 *   hx_proxy_start(&p, 0, r.port, "--maxclients", "5", NULL);
 *   int fd = hx_connect(p.port);
 *   ...
 *   is_int(hx_stop(&p, 15000), 0, "hotproxy exits 0 on SIGTERM");
 *
 * This is the only code that starts redis-server and redis-sentinel (plain,
 * replica, Sentinel and Cluster topologies below); shell tests reach it
 * through hx_launch (tests/tap.sh `launch`).
 *
 * Functions returning int return 0 on success and -1 on failure unless they
 * say otherwise; failures are explained through diag().
 */
#ifndef HP_HARNESS_H
#define HP_HARNESS_H

#include <stddef.h>
#include <sys/types.h>

#include <hiredis/hiredis.h>

/* An assertion hotproxy fails today because of a known bug (listed in the
 * test's report): printed as a TAP TODO, which does not fail the file, and
 * prove says "unexpectedly succeeded" once the bug is fixed -- then make it
 * a plain ok().  Evaluates to cond.  Needs tap.h included before the use. */
#define todo_ok(cond, bug, ...)                                                   \
    ({                                                                            \
        int todo_c_ = !!(cond);                                                   \
        tap_run++;                                                                \
        printf("%sok %d - ", todo_c_ ? "" : "not ", tap_run);                    \
        printf(__VA_ARGS__);                                                      \
        printf(" # TODO %s\n", (bug));                                           \
        fflush(stdout);                                                           \
        todo_c_;                                                                  \
    })

/* Equal byte strings (either may be NULL when its length is 0). */
int hx_mem_eq(const void *a, size_t alen, const void *b, size_t blen);

/* A growable byte buffer. */
typedef struct hx_buf {
    char *data;
    size_t len, cap;
} hx_buf;

void hx_buf_reserve(hx_buf *b, size_t n); /* room for n more bytes */
void hx_buf_append(hx_buf *b, const void *p, size_t n);
void hx_buf_printf(hx_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append a command as a RESP multibulk; argv[i] has argvlen[i] bytes. */
void hx_buf_command(hx_buf *b, int argc, const char *const *argv, const size_t *argvlen);
void hx_buf_reset(hx_buf *b);
void hx_buf_free(hx_buf *b);

/* --- the test process ------------------------------------------------------ */

/* Set the watchdog (alarm), cleanup handlers, RLIMIT_NOFILE and the temp dir;
 * skip_all() when redis-server or the hotproxy binary is missing. */
void hx_init(unsigned watchdog_seconds);
/* The same for a program that starts only Redis processes (hx_launch): no
 * hotproxy binary needed, no TAP plan printed; -1 when redis-server is
 * missing. */
int hx_init_servers(unsigned watchdog_seconds);
const char *hx_tmpdir(void);
const char *hx_bin(void);    /* the hotproxy binary under test */
double hx_now(void);         /* monotonic seconds */
void hx_sleep_ms(int ms);
/* A loopback port nobody listens on right now (bind port 0, read it back). */
int hx_free_port(void);
/* Print a file (or its last maxbytes) as diag lines. */
void hx_diag_file(const char *path, size_t maxbytes);
/* 1 if a line of the file at path holds needle (a log line, say). */
int hx_file_contains(const char *path, const char *needle);

/* --- processes ------------------------------------------------------------- */

typedef struct hx_proc {
    pid_t pid;          /* 0 when not running */
    int port;
    char name[48];
    char logfile[512];  /* the process's own log (redis/hotproxy logfile) */
    char outfile[512];  /* its stdout and stderr: sanitizer reports land here */
} hx_proc;

/* redis-server --port P --bind 127.0.0.1 --save '' --appendonly no --dir TMP
 * --daemonize no; returns once it answers PING.  port 0 picks one.  The
 * same as hx_redis_start_opts with only .port set. */
int hx_redis_start(hx_proc *p, int port);

/* --- Redis topologies --------------------------------------------------------
 * The one place that starts redis-server and redis-sentinel: the C tests call
 * these, the shell tests reach them through hx_launch (tests/tap.sh launch).
 * Everything binds 127.0.0.1 on a free port, keeps its files in the temp dir
 * and is killed at exit like every other process here. */

typedef struct hx_redis_opts {
    int port;                  /* 0 picks a free one */
    int replicaof;             /* a master's port: start as its replica and
                                * return once master_link_status is up */
    const char *password;      /* requirepass and masterauth (NULL: none) */
    const char *const *extra;  /* more redis-server arguments, NULL-terminated:
                                * {"--maxmemory", "1mb", NULL} */
    const char *name;          /* its files are TMP/<name>-<port>.*; "redis" */
    /* TLS only: a directory hx_tls_certs filled.  The server then has port 0
     * and listens on tls-port (p->port) with DIR/server.crt and .key,
     * DIR/ca.crt, tls-replication and tls-cluster yes; the harness talks to
     * it (readiness, INFO, hx_redis) over TLS with DIR/client.crt. */
    const char *tls_dir;
    const char *tls_auth_clients; /* "yes", "no", "optional"; NULL: Redis' default (yes) */
    const char *tls_cert;      /* another server certificate of tls_dir by its base name
                                * ("expired", "wrong", "wrongname"); the harness then
                                * does not verify it */
} hx_redis_opts;

/* Start a redis-server and return once it answers PING (NOAUTH counts), and
 * with .replicaof once its link to the master is up. */
int hx_redis_start_opts(hx_proc *p, const hx_redis_opts *o);

#define HX_TOPO_MAX 12

/* What a topology start started.  Cluster replicas are told apart from
 * masters by asking each node after redis-cli made them; replica_of[i] is
 * the index in masters[] that replicas[i] follows. */
typedef struct hx_topo {
    char name[64];             /* the Sentinel master name */
    char password[64];         /* what AUTH needs on the data nodes, or "" */
    int nmasters, nreplicas, nsentinels;
    hx_proc masters[HX_TOPO_MAX];
    hx_proc replicas[HX_TOPO_MAX];
    int replica_of[HX_TOPO_MAX];
    hx_proc sentinels[HX_TOPO_MAX];
} hx_topo;

/* One master, its replicas, and Sentinels monitoring it with a config file
 * written in the temp dir:  sentinel monitor <name> 127.0.0.1 <port> <quorum>,
 * down-after-milliseconds, failover-timeout, auth-pass when password is set
 * (the master and replicas then have requirepass and masterauth). */
typedef struct hx_sentinel_opts {
    const char *name;          /* the master name; "mymaster" when NULL */
    int replicas;              /* 0.. */
    int sentinels;             /* 1..HX_TOPO_MAX; 0 means 3 */
    int quorum;                /* 0 means a majority of the Sentinels */
    int down_after_ms;         /* 0 means 1000 */
    int failover_timeout_ms;   /* 0 means 10000 */
    const char *password;
    const char *const *extra;  /* more redis-server arguments for master and replicas */
    const char *tls_dir;       /* TLS only, as hx_redis_opts: data nodes and Sentinels
                                * (each its own tls-port, tls-replication yes) */
    const char *tls_auth_clients;
} hx_sentinel_opts;

/* Start it all and return once hx_sentinel_wait says the Sentinels are
 * ready (20 s); on failure everything started is stopped. */
int hx_sentinel_start(hx_topo *t, const hx_sentinel_opts *o);
/* Poll every Sentinel until SENTINEL SENTINELS lists all the others and
 * SENTINEL REPLICAS all the replicas, each with plain flags (no s_down,
 * disconnected); 0 when they did within timeout_ms, -1 (and diag) if not. */
int hx_sentinel_wait(const hx_topo *t, int timeout_ms);

/* A Redis Cluster: masters x (1 + replicas) nodes with cluster-enabled yes,
 * joined by redis-cli --cluster create ... --cluster-replicas R --cluster-yes. */
typedef struct hx_cluster_opts {
    int masters;               /* 3..HX_TOPO_MAX (redis-cli's minimum); 0 means 3 */
    int replicas;              /* per master */
    const char *const *extra;  /* more redis-server arguments for every node */
    const char *tls_dir;       /* TLS only, as hx_redis_opts (tls-cluster yes: the bus
                                * too), created by redis-cli --cluster create --tls */
    const char *tls_auth_clients;
} hx_cluster_opts;

/* Start it and return once hx_cluster_wait says it is whole (30 s); on
 * failure everything started is stopped. */
int hx_cluster_start(hx_topo *t, const hx_cluster_opts *o);
/* Poll every node until CLUSTER INFO says cluster_state:ok with all 16384
 * slots assigned and ok and every node known, and each replica's link to
 * its master is up; 0 when that held within timeout_ms, -1 (and diag). */
int hx_cluster_wait(const hx_topo *t, int timeout_ms);
/* hx_cluster_start(t, o), then hotproxy on its first master with --topology
 * cluster and the NULL-terminated extra arguments: 0; 1 when the cluster did
 * not start, 2 when hotproxy did not (the cluster is then stopped). */
int hx_cluster_proxy_start(hx_topo *t, const hx_cluster_opts *o, hx_proc *px, ...) __attribute__((sentinel));
/* The port of the master that owns key (or shard channel), asked of the node
 * on port (its MOVED says where), or -1. */
int hx_cluster_owner(int port, const char *key);
/* The node id (CLUSTER MYID) of the node on port into out; "" if unreachable. */
void hx_cluster_node_id(int port, char *out, size_t n);
/* The first step of moving a slot by hand: IMPORTING on dst, MIGRATING on src. */
void hx_cluster_move_begin(int slot, int src, int dst);
/* The slots hotproxy's slot map (INFO on c, a hotproxy) gives the master on port, or -1. */
int hx_cluster_map_slots(redisContext *c, int port);
/* One SET and one GET of each key (the value names the round); the failures, the last kept in err. */
int hx_cluster_load_round(redisContext *c, char keys[][32], int n, int round, char *err, size_t errsz);

/* SIGTERM everything in t at once, then reap (SIGKILL after timeout_ms). */
void hx_topo_stop(hx_topo *t, int timeout_ms);
/* The port of the master the first live Sentinel of t names, or -1. */
int hx_sentinel_master_port(const hx_topo *t);
/* SENTINEL FAILOVER on the first live Sentinel that accepts it: 0, or -1
 * (each refusal is a diag line). */
int hx_sentinel_failover(const hx_topo *t);

/* $HOTPROXY_BIN --port P --upstream 127.0.0.1:UP --logfile TMP/... [extra...]
 * with extra a NULL-terminated list; returns once it answers PING.  port 0
 * picks one. */
int hx_proxy_start(hx_proc *p, int port, int upstream_port, ...) __attribute__((sentinel));
int hx_proxy_startv(hx_proc *p, int port, int upstream_port, const char *const *extra);

/* Any program, with stdout/stderr into TMP/<name>.out; no readiness check. */
int hx_spawn(hx_proc *p, const char *name, const char *const *argv);

/* SIGTERM, wait up to timeout_ms, then SIGKILL.  Returns the exit status
 * (0-255), 128+signal if a signal ended it, -1 if it had to be killed. A
 * non-zero result prints the process's output (a sanitizer report) as diag. */
int hx_stop(hx_proc *p, int timeout_ms);
void hx_kill(hx_proc *p);        /* SIGKILL and reap */
int hx_alive(hx_proc *p);        /* 1 while running (reaps it if it exited) */
/* Wait for an exit without signalling; status as hx_stop, -2 on timeout. */
int hx_wait_exit(hx_proc *p, int timeout_ms);

/* Fake upstreams: a forked child that accepts every connection and ...  */
enum {
    HX_FAKE_SILENT,       /* ... reads and never answers */
    HX_FAKE_REPLY,        /* ... answers `reply` to every read */
    HX_FAKE_REPLY_CLOSE,  /* ... answers `reply` to the first read, then closes */
};
int hx_fake_start(hx_proc *p, int mode, const char *reply, size_t replylen);

/* --- TLS ---------------------------------------------------------------------
 * Certificates come from tests/tls-certs.sh (one recipe for C, shell and
 * bench/tls.sh): ca, server (SAN localhost, 127.0.0.1), client, expired,
 * other-ca, wrong (by other-ca), wrongname (SAN not-this-host), each
 * NAME.crt and NAME.key.  hiredis 0.14 has no TLS, so a TLS connection here
 * is a socketpair whose other end a thread relays through OpenSSL: the fd
 * and the hiredis context on it work like plain ones. */

/* Write the certificate set into dir (created; NULL: TMP/tls); 0 or -1. */
int hx_tls_certs(const char *dir);
/* dir/name into a rotating static buffer (4 of them). */
const char *hx_tls_file(const char *dir, const char *name);

/* How a test client connects: paths, "" for none. */
typedef struct hx_tls {
    char ca[320];      /* verify the server with it; "" (or insecure): no verification */
    char cert[320];    /* client certificate and key; "" sends none */
    char key[320];
    char sni[128];     /* server name sent; "" none */
    char host[128];    /* name the server certificate must carry; "": IP 127.0.0.1 */
    int insecure;      /* 1: no verification at all */
} hx_tls;
/* ca = dir/ca.crt, and dir/<client>.crt and .key unless client is NULL. */
void hx_tls_client(hx_tls *t, const char *dir, const char *client);

/* Connect to 127.0.0.1:port and finish the TLS handshake: a non-blocking fd
 * that carries the plaintext (hx_send, hx_read_replies work on it), or -1
 * with why (cap bytes, may be NULL) holding OpenSSL's reason ("certificate
 * has expired", "alert unknown ca", ...). */
int hx_connect_tls(int port, const hx_tls *t, char *why, size_t cap);
/* A blocking hiredis context over TLS with 20 s timeouts, or NULL and why. */
redisContext *hx_redis_tls(int port, const hx_tls *t, char *why, size_t cap);
/* From now on the harness's own connections to port (readiness, the
 * topology helpers, hx_redis, hx_info_field) use TLS with t; NULL forgets
 * the port.  TLS servers the harness starts are registered by it; register a
 * hotproxy tls-port yourself before hx_redis on it. */
void hx_tls_register(int port, const hx_tls *t);
/* The registered settings of port, or NULL for plain. */
const hx_tls *hx_tls_of(int port);
/* redis-cli's arguments for the registered port ("-p P" plus "--tls
 * --cacert ..." when TLS) into out, space-separated, for a shell line. */
const char *hx_cli_args(int port, char *out, size_t cap);

/* --- sockets --------------------------------------------------------------- */

/* Non-blocking TCP socket connected to 127.0.0.1:port (TCP_NODELAY), or -1. */
int hx_connect(int port);
/* Send everything, waiting up to timeout_ms in all; -1 on error or timeout. */
int hx_send(int fd, const void *p, size_t n, int timeout_ms);
int hx_send_str(int fd, const char *s);

enum { HX_OK = 0, HX_EOF = 1, HX_RESET = 2, HX_TIMEOUT = 3, HX_ERROR = 4, HX_BADPROTO = 5 };
const char *hx_status_name(int st);

/* Read until b holds `want` more bytes than at entry; returns a status. */
int hx_read_n(int fd, hx_buf *b, size_t want, int timeout_ms);
/* Read until the peer closes (HX_EOF or HX_RESET) or timeout. */
int hx_read_eof(int fd, hx_buf *b, int timeout_ms);
/* Read until `n` complete RESP replies arrived after what b held at entry;
 * *got (may be NULL) receives how many did. */
int hx_read_replies(int fd, hx_buf *b, long n, long *got, int timeout_ms);
/* Send req while reading, until n replies arrived (pipelines that do not fit
 * a socket buffer must be read while written). */
int hx_exchange(int fd, const void *req, size_t reqlen, long n, hx_buf *out, long *got, int timeout_ms);

/* Connect to port, send req while reading until n replies arrived (or, with
 * n < 0, until the peer closes), then close.  Returns the final status:
 * HX_OK, or HX_EOF / HX_RESET when the peer closed (expected with n < 0). */
int hx_roundtrip(int port, const void *req, size_t reqlen, long n, hx_buf *out, int timeout_ms);

/* Length of the complete RESP2 reply at p, 0 if incomplete, -1 if malformed. */
long hx_reply_len(const char *p, size_t n);
/* Count complete replies in p[0..n); *used gets the bytes they cover. */
long hx_count_replies(const char *p, size_t n, size_t *used);

/* --- hiredis --------------------------------------------------------------- */

/* A blocking hiredis context with 20 s timeouts, or NULL (and a diag); over
 * TLS when port is registered (hx_tls_register). */
redisContext *hx_redis(int port);
/* Run a command and return the reply's text (status, error, bulk, or the
 * integer printed), "(nil)", "(array N)" or "(no reply: ...)"; the string is
 * overwritten by the next call. */
const char *hx_cmd(redisContext *c, const char *fmt, ...);

/* One INFO field ("hotproxy_upstream_status") from INFO [section] on port;
 * returns a static string or NULL. */
const char *hx_info_field(int port, const char *section, const char *field);
/* The same on an open connection (section may be NULL); the value is in one
 * of 4 rotating buffers (so two can be compared), NULL if absent. */
const char *hx_info_get(redisContext *c, const char *section, const char *field);
/* Poll that field until it reads want; 0 when it did within timeout_ms, -1 if not. */
int hx_info_wait(redisContext *c, const char *section, const char *field, const char *want, int timeout_ms);
/* GET key on c (a hotproxy) until one is answered from the L1
 * (hotproxy_l1_hits grows by exactly one); 1 when that happened within tries reads. */
int hx_l1_hit(redisContext *c, const char *key, int tries);
/* That field as a number; -1 if absent. */
long long hx_info_num(redisContext *c, const char *section, const char *field);
/* Calls of one command in redis-server's INFO commandstats ("get", or
 * "client|kill"): 0 if never called, -1000000 if INFO failed. */
long long hx_cmdstat_calls(redisContext *c, const char *name);

/* --- a raw RESP2/RESP3 client ---------------------------------------------
 * For what hiredis 0.14 cannot read (RESP3 pushes) and for seeing every
 * frame a subscriber gets, in order. */
typedef struct hx_rawc {
    int fd;
    int eof;
    hx_buf in;
    size_t pos; /* frames before it were taken */
} hx_rawc;

int hx_raw_open(hx_rawc *r, int port);
void hx_raw_close(hx_rawc *r);
/* Send one command: its arguments, NULL-terminated. */
int hx_raw_send(hx_rawc *r, ...) __attribute__((sentinel));
/* The next frame within timeout_ms: 1 (f, len valid until the next call),
 * 0 if none came, -1 on a closed connection or a bad frame. */
int hx_raw_frame(hx_rawc *r, const char **f, size_t *len, int timeout_ms);
/* The next frame as text: "+OK" -> "OK", "-ERR x" -> "ERR x", null ->
 * "(nil)", a bulk -> its bytes, an array "(array N)", a push "(push N)";
 * "(none: ...)" when none came.  Overwritten by the next call. */
const char *hx_raw_reply(hx_rawc *r, int timeout_ms);
/* The first element of an array or push frame when it is a bulk string
 * ("smessage", "sunsubscribe"...), copied into out; "" otherwise. */
const char *hx_frame_kind(const char *f, size_t len, char *out, size_t outsz);

#endif
