/*
 * px_stats: the registry of everything hotproxy reports — every INFO line of
 * its sections, each declared once with its name, kind, value type and a
 * one-line help text, in an X-macro list per group:
 *
 *   group    scope    INFO section          struct            filled by
 *   SERVER   process  # Hotproxy            px_stats_server   px_server_stats
 *   (stats)  process  # Hotproxy_stats      px_stats          live, s->stats
 *   ROUTER   process  # Hotproxy_upstream   px_stats_router   the router's info
 *   SENTINEL process  # Hotproxy_upstream   px_stats_sentinel the Sentinel topology's info
 *   CLUSTER  process  # Hotproxy_upstream   px_stats_cluster  the Cluster topology's info
 *   POOL     pool     # Hotproxy_upstream   px_stats_pool     px_pool_stats
 *   LANE     lane     (inside POOL's lane)  px_stats_lane     px_pool_stats
 *   L1       l1       # Hotproxy_cache      px_stats_l1       px_l1_stats
 *
 * Each list generates three things: the struct (one field per entry, named
 * as the entry), a descriptor array {name, kind, type, help, offset}, and
 * through that array the INFO text (px_stats_render).  A module keeps the
 * struct of its scope and counts with a plain increment of a field
 * (s->stats.commands_processed++); gauges are computed when asked for, by
 * the module's *_stats function, which fills a copy of the struct (a view).
 * Whoever writes the numbers out (INFO now, a metrics page later) walks
 * px_stat_groups and reads each field at its descriptor's offset in a view,
 * knowing no module's own struct.
 *
 * The INFO key of an entry is "hotproxy_" followed by the entry's name; a
 * lane's entries are written "key=value" on one line per lane, after the
 * pool's LANES entry, as Redis writes db0:keys=...  Commands are counted
 * apart (cmd_calls, one per command of the table), see px_stats_info_commands.
 */
#ifndef PX_STATS_H
#define PX_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "proxy/px_buf.h"

/* What a number means to a reader: counters only grow (until restart),
 * gauges go up and down, info entries are strings (labels, states). */
typedef enum { PX_STAT_COUNTER, PX_STAT_GAUGE, PX_STAT_INFO } px_stat_kind;
/* Whose it is: one per process, one per upstream pool (labelled by the
 * pool's name, its "upstream" entry), one per lane of a pool (labelled by
 * pool and lane number), one per process for the L1. */
typedef enum { PX_SCOPE_PROCESS, PX_SCOPE_POOL, PX_SCOPE_LANE, PX_SCOPE_L1 } px_stat_scope;
/* How the field is stored and written in INFO. */
typedef enum {
    PX_STAT_U64,   /* uint64_t, %llu */
    PX_STAT_I64,   /* int64_t, %lld */
    PX_STAT_RATIO, /* double, %.4f */
    PX_STAT_STR,   /* const char *, %s; NULL: the line is left out */
    PX_STAT_LANES, /* px_stats_lanes: one line per lane (PX_STATS_LANE_LIST) */
} px_stat_type;

typedef struct px_stats_lane px_stats_lane;
typedef struct px_stats_lanes {
    int n;
    px_stats_lane *v; /* malloc'd by whoever fills the view; the view's owner frees it */
} px_stats_lanes;

#define PX_STAT_CTYPE_U64 uint64_t
#define PX_STAT_CTYPE_I64 int64_t
#define PX_STAT_CTYPE_RATIO double
#define PX_STAT_CTYPE_STR const char *
#define PX_STAT_CTYPE_LANES px_stats_lanes

/* X(name, kind, type, help), in INFO order. */

/* # Hotproxy: the process. */
#define PX_STATS_SERVER_LIST(X)                                                          \
    X(version, INFO, STR, "hotproxy's version")                                          \
    X(process_id, GAUGE, I64, "process id")                                              \
    X(tcp_port, GAUGE, I64, "port hotproxy listens on")                                  \
    X(tls_port, GAUGE, I64, "TLS port hotproxy listens on (0: none)")                    \
    X(uptime_in_seconds, GAUGE, I64, "seconds since hotproxy started")                   \
    X(config_file, INFO, STR, "path of the config file (empty: none)")                   \
    X(connected_clients, GAUGE, I64, "client connections open now")                      \
    X(maxclients, GAUGE, I64, "most client connections accepted at once")               \
    X(tls_cert_not_after, GAUGE, I64, "unix time tls-cert-file stops being valid (0: no TLS port)")

/* # Hotproxy_stats: the process' counters, kept live in px_server's stats. */
#define PX_STATS_LIST(X)                                                                                     \
    X(connections_received, COUNTER, U64, "client connections accepted")                                     \
    X(rejected_connections, COUNTER, U64, "client connections refused at maxclients")                        \
    X(accept_fd_exhaustions, COUNTER, U64, "times accepting paused for want of file descriptors")            \
    X(tls_handshake_failures, COUNTER, U64, "TLS clients closed: handshake refused, failed or not done in time") \
    X(commands_processed, COUNTER, U64, "commands read from clients")                                        \
    X(commands_forwarded, COUNTER, U64, "commands sent upstream")                                            \
    X(commands_local, COUNTER, U64, "commands answered by hotproxy itself")                                  \
    X(commands_refused, COUNTER, U64, "commands refused (denied or unsupported)")                            \
    X(protocol_errors, COUNTER, U64, "clients closed for a malformed request")                               \
    X(query_buffer_limit_disconnects, COUNTER, U64, "clients closed past client-query-buffer-limit")         \
    X(output_buffer_limit_disconnects, COUNTER, U64, "clients closed past client-output-buffer-limit")       \
    X(maxmemory_clients_disconnects, COUNTER, U64, "clients closed, biggest first, past maxmemory-clients")  \
    X(idle_timeouts, COUNTER, U64, "clients closed after timeout seconds idle")                              \
    X(upstream_connects, COUNTER, U64, "upstream connections established")                                   \
    X(upstream_connect_failures, COUNTER, U64, "upstream connection attempts that failed")                   \
    X(upstream_disconnects, COUNTER, U64, "established upstream connections lost")                           \
    X(upstream_error_replies, COUNTER, U64, "commands answered with -ERR because upstream failed")           \
    X(upstream_timeouts, COUNTER, U64, "upstream connections replaced after upstream-timeout")               \
    X(ttl_jittered, COUNTER, U64, "TTLs spread on their way to Redis (cache-rule write-ttl-jitter)")         \
    X(net_input_bytes, COUNTER, U64, "bytes read from clients")                                              \
    X(net_output_bytes, COUNTER, U64, "bytes written to clients")

/* # Hotproxy_upstream, first line: the topology, then each pool's lines. */
#define PX_STATS_ROUTER_LIST(X)                                                                            \
    X(topology, INFO, STR, "how upstreams are chosen (single, sentinel, cluster)")                         \
    X(upstream_tls, INFO, STR, "yes when connections to Redis and Sentinels speak TLS (upstream-tls)")     \
    X(upstream_tls_failures, COUNTER, U64, "TLS handshakes with an upstream that failed (refused certificate, timeout)")

/* # Hotproxy_upstream, after the topology with topology sentinel: the master
 * Sentinel names and how hotproxy follows it. */
#define PX_STATS_SENTINEL_LIST(X)                                                                                  \
    X(sentinel_master_name, INFO, STR, "the master set's name (sentinel-master)")                                 \
    X(sentinel_master, INFO, STR, "host:port of the master commands go to now")                                   \
    X(sentinel_status, INFO, STR, "ok, or no-sentinel-reachable while the last known master is kept")             \
    X(sentinels_known, GAUGE, I64, "Sentinels known, configured and learnt from SENTINEL SENTINELS")              \
    X(sentinels_reachable, GAUGE, I64, "of those, the ones whose last request was answered")                      \
    X(sentinels, INFO, STR, "each Sentinel as host:port=up|down, in the order they are asked")                    \
    X(sentinel_failovers, COUNTER, U64, "master changes followed (data pool re-pointed)")                          \
    X(sentinel_last_failover_time, GAUGE, I64, "unix time of the last master change followed (0: none)")          \
    X(sentinel_last_switch_ms, GAUGE, RATIO, "last switch inside hotproxy: change seen to the new master's first reply") \
    X(sentinel_readonly_retries, COUNTER, U64, "writes refused with -READONLY by a demoted master, sent once more to the new one")

/* # Hotproxy_upstream, after the topology with topology cluster: the slot
 * map, the redirections hotproxy handled and the map's refreshes by cause. */
#define PX_STATS_CLUSTER_LIST(X)                                                                                   \
    X(cluster_nodes, GAUGE, I64, "masters in the slot map, a data pool each")                                     \
    X(cluster_slots_known, GAUGE, I64, "slots whose master is known (16384 when the map is whole)")               \
    X(cluster_slot_map, INFO, STR, "each master as host:port=slots it serves")                                    \
    X(cluster_moved, COUNTER, U64, "MOVED replies handled: the command sent again to the new owner")              \
    X(cluster_ask, COUNTER, U64, "ASK replies handled: ASKING and the command on the node named")                 \
    X(cluster_tryagain, COUNTER, U64, "TRYAGAIN, CLUSTERDOWN and LOADING replies retried after a pause")          \
    X(cluster_redirect_errors, COUNTER, U64, "redirections that reached a client (sent 5 times already)")          \
    X(cluster_crossslot, COUNTER, U64, "commands refused with CROSSSLOT (keys of several slots)")                  \
    X(cluster_split, COUNTER, U64, "commands split by slot or sent to every master, then merged")                  \
    X(cluster_refreshes, COUNTER, U64, "slot maps read (CLUSTER SLOTS answered)")                                 \
    X(cluster_refresh_start, COUNTER, U64, "maps asked for at start")                                              \
    X(cluster_refresh_moved, COUNTER, U64, "maps asked for after a MOVED (at most one per 100 ms)")                \
    X(cluster_refresh_periodic, COUNTER, U64, "maps asked for by the background check (every 5 s)")               \
    X(cluster_refresh_down, COUNTER, U64, "maps asked for because a master's connections were all down")          \
    X(cluster_refresh_failures, COUNTER, U64, "CLUSTER SLOTS asked of a node that gave no usable map")             \
    X(cluster_last_refresh_cause, INFO, STR, "why the last map was asked for (start, moved, periodic, down)")       \
    X(cluster_read_retries, COUNTER, U64, "reads in flight on a master whose connection broke, sent to its new owner")

/* # Hotproxy_upstream: one upstream pool (scope pool, named by "upstream"). */
#define PX_STATS_POOL_LIST(X)                                                                          \
    X(upstream, INFO, STR, "the pool's upstream, host:port")                                           \
    X(upstream_status, INFO, STR, "up when a shared connection is ready, else down")                   \
    X(upstream_server_version, INFO, STR, "the upstream Redis' version (empty: not known yet)")        \
    X(upstream_lanes, GAUGE, I64, "lanes (database and protocol pairs) opened")                        \
    X(upstream_connections, GAUGE, I64, "shared upstream connections, over all lanes")                 \
    X(upstream_connections_ready, GAUGE, I64, "shared upstream connections ready now")                 \
    X(upstream_inflight, GAUGE, I64, "requests sent on shared connections, awaiting their reply")      \
    X(pinned_connections, GAUGE, I64, "upstream connections pinned to a client")                       \
    X(oob_connections, GAUGE, I64, "out-of-band upstream connections (closed once answered)")          \
    X(spare_connections, GAUGE, I64, "clean upstream connections waiting to be pinned")                \
    X(lane, GAUGE, LANES, "one line per lane: its database, protocol and shared connections")         \
    X(upstream_last_error, INFO, STR, "why the upstream is down (only while no connection is ready)")

/* A lane of a pool: written "hotproxy_lane<i>:db=..,resp=..,connections=..". */
#define PX_STATS_LANE_LIST(X)                                     \
    X(db, GAUGE, I64, "the lane's database")                      \
    X(resp, GAUGE, I64, "the lane's protocol (2 or 3)")           \
    X(connections, GAUGE, I64, "the lane's shared connections")

/* # Hotproxy_cache: the L1.  With the L1 off only the first line is written.
 * The library's counters (hits, stores...) come from cache/'s l1_stats; the
 * others are counted by px_l1 in its own copy of this struct. */
#define PX_STATS_L1_LIST(X)                                                                                  \
    X(l1, INFO, STR, "on, or off when the config says l1 no")                                                 \
    X(l1_mode, INFO, STR, "tracking, or ttl-only when tracking is off or refused")                            \
    X(l1_tracking, INFO, STR, "the invalidation link: up, down, refused or off")                              \
    X(l1_tracking_link_id, GAUGE, I64, "CLIENT ID of the invalidation link (-1: none)")                       \
    X(l1_entries, GAUGE, U64, "entries in the L1")                                                            \
    X(l1_bytes, GAUGE, U64, "bytes the L1's entries take")                                                    \
    X(l1_maxmemory, GAUGE, I64, "l1-maxmemory, bytes")                                                        \
    X(l1_hits, COUNTER, U64, "reads answered from the L1")                                                    \
    X(l1_misses, COUNTER, U64, "reads the L1 could not answer")                                               \
    X(l1_hit_ratio, GAUGE, RATIO, "hits / (hits + misses) since start")                                       \
    X(l1_fills, COUNTER, U64, "fills sent upstream")                                                          \
    X(l1_coalesced, COUNTER, U64, "reads that joined a fill already in flight")                               \
    X(l1_refreshes, COUNTER, U64, "entries refreshed ahead of their expiry")                                  \
    X(l1_bypassed, COUNTER, U64, "cacheable reads sent upstream behind the client's own write in flight")                              \
    X(l1_stores, COUNTER, U64, "replies stored in the L1")                                                    \
    X(l1_admissions_rejected, COUNTER, U64, "replies not stored: not read often enough yet (l1-hot-threshold)")            \
    X(l1_stale_fills, COUNTER, U64, "fills dropped because a write or invalidation raced them")               \
    X(l1_evictions, COUNTER, U64, "entries evicted for l1-maxmemory")                                         \
    X(l1_expirations, COUNTER, U64, "entries expired")                                                        \
    X(l1_key_expiries, COUNTER, U64, "entries that turned into what follows their key's expiry in Redis")                           \
    X(l1_invalidations_local, COUNTER, U64, "keys dropped for writes through hotproxy")                        \
    X(l1_invalidations_tracking, COUNTER, U64, "keys dropped for invalidations from Redis")                   \
    X(l1_flushes, COUNTER, U64, "times the whole L1 was emptied")                                             \
    X(l1_flushes_tracking, COUNTER, U64, "flushes Redis' tracking asked for")                                 \
    X(l1_flushes_link_lost, COUNTER, U64, "flushes for a lost invalidation link")                             \
    X(l1_flushes_connection_lost, COUNTER, U64, "flushes for a lost shared connection the L1 filled through") \
    X(l1_flushes_slot_moved, COUNTER, U64, "flushes for a Cluster slot that changed master")                  \
    X(l1_barriers, COUNTER, U64, "replies held until their invalidations were in")

#define PX_STAT_FIELD(name, kind, type, help) PX_STAT_CTYPE_##type name;

typedef struct px_stats_server {
    PX_STATS_SERVER_LIST(PX_STAT_FIELD)
} px_stats_server;

/*
 * Latency: how long a command took from when it was parsed to when its
 * reply was complete (not written), by path and command.  Fixed buckets, as
 * Prometheus histograms have them (upper bounds, "le"); each one holds the
 * durations above the previous bound up to its own (not cumulative: the
 * page adds them up).  INFO latencystats reads percentiles from the same
 * buckets, interpolating within one (px_stats_percentile).
 */
enum { PX_PATH_LOCAL, PX_PATH_FORWARDED, PX_PATH_L1_HIT, PX_PATH_COALESCED, PX_PATH_COUNT };
#define PX_LAT_BOUNDS 17                    /* finite bounds; bucket PX_LAT_BOUNDS is +Inf */
extern const uint64_t px_lat_bounds_ns[PX_LAT_BOUNDS]; /* 50 us ... 10 s */
extern const char *const px_path_names[PX_PATH_COUNT]; /* "local", "forwarded", "l1_hit", "coalesced" */

typedef struct px_lat_hist {
    uint64_t bucket[PX_LAT_BOUNDS + 1];
    uint64_t count;
    uint64_t sum_ns;
} px_lat_hist;

typedef struct px_stats {
    PX_STATS_LIST(PX_STAT_FIELD)
    uint64_t *cmd_calls; /* per command table index, and one more for unknown commands */
    px_lat_hist *lat;    /* [command index (unknown: the last) * PX_PATH_COUNT + path] */
} px_stats;

/* Count one duration: of the command with table index cmd (px_command_count()
 * for an unknown one), answered by path. */
static inline int px_stats_lat_bucket(uint64_t ns)
{
    int i = 0;
    while (i < PX_LAT_BOUNDS && ns > px_lat_bounds_ns[i]) i++; /* most land in the first few */
    return i;
}
/* The same with its bucket already found (px_stats_lat_bucket(ns)); slot is
 * cmd * PX_PATH_COUNT + path. */
static inline void px_stats_latency_in(px_stats *s, uint32_t slot, int bucket, uint64_t ns)
{
    px_lat_hist *h = &s->lat[slot];
    h->bucket[bucket]++;
    h->count++;
    h->sum_ns += ns;
}
static inline void px_stats_latency(px_stats *s, int cmd, int path, uint64_t ns)
{
    px_stats_latency_in(s, (uint32_t)(cmd * PX_PATH_COUNT + path), px_stats_lat_bucket(ns), ns);
}
/* The histogram of command cmd over every path, added up into out. */
void px_stats_latency_of(const px_stats *s, int cmd, px_lat_hist *out);
/* The q-quantile (0 < q <= 1) of h, in microseconds: linear within the
 * bucket it falls in (a +Inf bucket gives the last bound); 0 if h is empty. */
double px_stats_percentile(const px_lat_hist *h, double q);

typedef struct px_stats_router {
    PX_STATS_ROUTER_LIST(PX_STAT_FIELD)
} px_stats_router;

typedef struct px_stats_sentinel {
    PX_STATS_SENTINEL_LIST(PX_STAT_FIELD)
} px_stats_sentinel;

typedef struct px_stats_cluster {
    PX_STATS_CLUSTER_LIST(PX_STAT_FIELD)
} px_stats_cluster;

typedef struct px_stats_pool {
    PX_STATS_POOL_LIST(PX_STAT_FIELD)
} px_stats_pool;

struct px_stats_lane {
    PX_STATS_LANE_LIST(PX_STAT_FIELD)
};

typedef struct px_stats_l1 {
    PX_STATS_L1_LIST(PX_STAT_FIELD)
} px_stats_l1;

#undef PX_STAT_FIELD

/* One entry of the registry. */
typedef struct px_stat_desc {
    const char *name;   /* INFO key and metric name: "hotproxy_l1_hits", "hotproxy_lane_db" */
    const char *key;    /* the field's name: "l1_hits", "db" (a lane's INFO line uses it) */
    px_stat_kind kind;
    px_stat_type type;
    px_stat_scope scope;
    const char *help;
    size_t offset;      /* of the field in the group's struct */
} px_stat_desc;

/* One list: its entries in INFO order, and the section it is written in. */
typedef struct px_stat_group {
    const char *section;  /* "Hotproxy_stats"; NULL for lanes (inside the pool's lines) */
    px_stat_scope scope;
    const px_stat_desc *desc;
    size_t n;
} px_stat_group;

enum { PX_STATS_G_SERVER, PX_STATS_G_STATS, PX_STATS_G_ROUTER, PX_STATS_G_POOL, PX_STATS_G_LANE, PX_STATS_G_L1,
       PX_STATS_G_SENTINEL, PX_STATS_G_CLUSTER, PX_STATS_NGROUPS };
/* Every group, indexed by PX_STATS_G_*, in the order INFO writes them. */
extern const px_stat_group px_stat_groups[PX_STATS_NGROUPS];

void px_stats_init(px_stats *s);
void px_stats_free(px_stats *s);

/*
 * Write the INFO lines of n entries of a group ("hotproxy_<name>:value\r\n"
 * each) from view, a struct of that group (a LANES entry writes one line per
 * lane from the lane group).  The section's header is the caller's.
 */
void px_stats_render(const px_stat_desc *desc, size_t n, const void *view, px_buf *out);
/* The lines of a whole group (px_stats_render of all its entries). */
void px_stats_render_group(int group, const void *view, px_buf *out);

/* "hotproxy_cmdstat_<name>:calls=N\r\n" for every command called at least once. */
void px_stats_info_commands(const px_stats *s, px_buf *out);
/* Redis 7's INFO latencystats lines ("latency_percentiles_usec_<cmd>:p50=..,
 * p99=..,p99.9=..") for every command with a duration counted. */
void px_stats_info_latency(const px_stats *s, px_buf *out);

/*
 * The Prometheus text format (0.0.4).  A family is written with its # HELP
 * and # TYPE once, then one sample per view: n views of the group's struct,
 * labels[i] the i-th one's labels without braces ("pool=\"h:p\"", or ""
 * for none).  Counters are named <name>_total; a string entry is a gauge
 * <name>_info of value 1 whose "value" label is the string.
 */
void px_stats_prom_group(int group, const void *const *views, const char *const *labels, int n, px_buf *out);
/* A label value escaped as the format wants (\\, \", \n), appended to out. */
void px_stats_prom_escape(px_buf *out, const char *s);
/* hotproxy_command_calls_total{cmd=...} and the latency histograms,
 * hotproxy_request_duration_seconds{cmd=...,path=...}. */
void px_stats_prom_commands(const px_stats *s, px_buf *out);

#endif
