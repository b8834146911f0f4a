/*
 * test_stats: the counter registry (px_stats.h) and the INFO text it writes.
 *
 * Clients and the integration tests parse hotproxy's INFO sections by key,
 * so the keys and their order are a contract: the lists below are the
 * sections as hotproxy wrote them before the registry existed, checked in.
 * A new entry is added to its list here and in px_stats.h; renaming or
 * moving one breaks a client, and this test.
 */
#include "proxy/px_stats.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/px_command.h"
#include "proxy/px_l1.h"
#include "tap.h"

static const char *const server_keys[] = {
    "hotproxy_version",           "hotproxy_process_id",        "hotproxy_tcp_port", "hotproxy_tls_port", "hotproxy_uptime_in_seconds",
    "hotproxy_config_file",       "hotproxy_connected_clients", "hotproxy_maxclients",
    "hotproxy_tls_cert_not_after", NULL};
static const char *const stats_keys[] = {"hotproxy_connections_received",
                                         "hotproxy_rejected_connections",
                                         "hotproxy_accept_fd_exhaustions",
                                         "hotproxy_tls_handshake_failures",
                                         "hotproxy_commands_processed",
                                         "hotproxy_commands_forwarded",
                                         "hotproxy_commands_local",
                                         "hotproxy_commands_refused",
                                         "hotproxy_protocol_errors",
                                         "hotproxy_query_buffer_limit_disconnects",
                                         "hotproxy_output_buffer_limit_disconnects",
                                         "hotproxy_maxmemory_clients_disconnects",
                                         "hotproxy_idle_timeouts",
                                         "hotproxy_upstream_connects",
                                         "hotproxy_upstream_connect_failures",
                                         "hotproxy_upstream_disconnects",
                                         "hotproxy_upstream_error_replies",
                                         "hotproxy_upstream_timeouts",
                                         "hotproxy_ttl_jittered",
                                         "hotproxy_net_input_bytes",
                                         "hotproxy_net_output_bytes",
                                         NULL};
static const char *const router_keys[] = {"hotproxy_topology", "hotproxy_upstream_tls", "hotproxy_upstream_tls_failures", NULL};
static const char *const sentinel_keys[] = {"hotproxy_sentinel_master_name",
                                            "hotproxy_sentinel_master",
                                            "hotproxy_sentinel_status",
                                            "hotproxy_sentinels_known",
                                            "hotproxy_sentinels_reachable",
                                            "hotproxy_sentinels",
                                            "hotproxy_sentinel_failovers",
                                            "hotproxy_sentinel_last_failover_time",
                                            "hotproxy_sentinel_last_switch_ms",
                                            "hotproxy_sentinel_readonly_retries",
                                            NULL};
/* with two lanes, and the last error (written while no connection is ready) */
static const char *const pool_keys[] = {"hotproxy_upstream",
                                        "hotproxy_upstream_status",
                                        "hotproxy_upstream_server_version",
                                        "hotproxy_upstream_lanes",
                                        "hotproxy_upstream_connections",
                                        "hotproxy_upstream_connections_ready",
                                        "hotproxy_upstream_inflight",
                                        "hotproxy_pinned_connections",
                                        "hotproxy_oob_connections",
                                        "hotproxy_spare_connections",
                                        "hotproxy_lane0",
                                        "hotproxy_lane1",
                                        "hotproxy_upstream_last_error",
                                        NULL};
static const char *const l1_keys[] = {"hotproxy_l1",
                                      "hotproxy_l1_mode",
                                      "hotproxy_l1_tracking",
                                      "hotproxy_l1_tracking_link_id",
                                      "hotproxy_l1_entries",
                                      "hotproxy_l1_bytes",
                                      "hotproxy_l1_maxmemory",
                                      "hotproxy_l1_hits",
                                      "hotproxy_l1_misses",
                                      "hotproxy_l1_hit_ratio",
                                      "hotproxy_l1_fills",
                                      "hotproxy_l1_coalesced",
                                      "hotproxy_l1_refreshes",
                                      "hotproxy_l1_bypassed",
                                      "hotproxy_l1_stores",
                                      "hotproxy_l1_admissions_rejected",
                                      "hotproxy_l1_stale_fills",
                                      "hotproxy_l1_evictions",
                                      "hotproxy_l1_expirations",
                                      "hotproxy_l1_key_expiries",
                                      "hotproxy_l1_invalidations_local",
                                      "hotproxy_l1_invalidations_tracking",
                                      "hotproxy_l1_flushes",
                                      "hotproxy_l1_flushes_tracking",
                                      "hotproxy_l1_flushes_link_lost",
                                      "hotproxy_l1_flushes_connection_lost",
                                      "hotproxy_l1_flushes_slot_moved",
                                      "hotproxy_l1_barriers",
                                      NULL};

static const char *const cluster_keys[] = {"hotproxy_cluster_nodes",
                                            "hotproxy_cluster_slots_known",
                                            "hotproxy_cluster_slot_map",
                                            "hotproxy_cluster_moved",
                                            "hotproxy_cluster_ask",
                                            "hotproxy_cluster_tryagain",
                                            "hotproxy_cluster_redirect_errors",
                                            "hotproxy_cluster_crossslot",
                                            "hotproxy_cluster_split",
                                            "hotproxy_cluster_refreshes",
                                            "hotproxy_cluster_refresh_start",
                                            "hotproxy_cluster_refresh_moved",
                                            "hotproxy_cluster_refresh_periodic",
                                            "hotproxy_cluster_refresh_down",
                                            "hotproxy_cluster_refresh_failures",
                                            "hotproxy_cluster_last_refresh_cause",
                                            "hotproxy_cluster_read_retries",
                                            NULL};

static const struct {
    const char *prefix; /* every name of the group starts with it */
    size_t size;        /* of the group's struct */
    const char *const *keys;
} expect[PX_STATS_NGROUPS] = {
    [PX_STATS_G_SERVER] = {"hotproxy_", sizeof(px_stats_server), server_keys},
    [PX_STATS_G_STATS] = {"hotproxy_", sizeof(px_stats), stats_keys},
    [PX_STATS_G_ROUTER] = {"hotproxy_", sizeof(px_stats_router), router_keys},
    [PX_STATS_G_POOL] = {"hotproxy_", sizeof(px_stats_pool), pool_keys},
    [PX_STATS_G_LANE] = {"hotproxy_lane_", sizeof(px_stats_lane), NULL},
    [PX_STATS_G_L1] = {"hotproxy_l1", sizeof(px_stats_l1), l1_keys},
    [PX_STATS_G_SENTINEL] = {"hotproxy_sentinel", sizeof(px_stats_sentinel), sentinel_keys},
    [PX_STATS_G_CLUSTER] = {"hotproxy_cluster", sizeof(px_stats_cluster), cluster_keys},
};

/* The storage each type has, to check the descriptors against the structs. */
static size_t type_size(px_stat_type t)
{
    switch (t) {
    case PX_STAT_U64: return sizeof(uint64_t);
    case PX_STAT_I64: return sizeof(int64_t);
    case PX_STAT_RATIO: return sizeof(double);
    case PX_STAT_STR: return sizeof(const char *);
    case PX_STAT_LANES: return sizeof(px_stats_lanes);
    }
    return 0;
}

static void check_entries(void)
{
    for (int g = 0; g < PX_STATS_NGROUPS; g++) {
        const px_stat_group *grp = &px_stat_groups[g];
        int good = grp->n > 0 && grp->desc != NULL;
        for (size_t i = 0; good && i < grp->n; i++) {
            const px_stat_desc *d = &grp->desc[i];
            size_t plen = strlen(expect[g].prefix);
            int this_ok = d->name && !strncmp(d->name, expect[g].prefix, plen) && d->key &&
                          strlen(d->name) >= strlen(d->key) &&
                          !strcmp(d->name + strlen(d->name) - strlen(d->key), d->key) &&
                          (d->kind == PX_STAT_COUNTER || d->kind == PX_STAT_GAUGE || d->kind == PX_STAT_INFO) &&
                          (d->kind == PX_STAT_INFO) == (d->type == PX_STAT_STR) &&
                          (d->kind != PX_STAT_COUNTER || d->type == PX_STAT_U64) && d->scope == grp->scope &&
                          d->help && strlen(d->help) > 5 && !strchr(d->help, '\n') &&
                          d->offset + type_size(d->type) <= expect[g].size && type_size(d->type);
            if (!this_ok) diag("group %d entry %zu (%s) is malformed", g, i, d->name ? d->name : "(null)");
            good &= this_ok;
        }
        ok(good, "group %d (%s): every entry has its prefix %s, a kind, a type, its scope, a help line and a field",
           g, grp->section ? grp->section : "lanes", expect[g].prefix);
    }
    /* offsets: each entry a field of its own, none overlapping */
    int distinct = 1;
    for (int g = 0; g < PX_STATS_NGROUPS; g++)
        for (size_t i = 0; i < px_stat_groups[g].n; i++)
            for (size_t j = i + 1; j < px_stat_groups[g].n; j++)
                if (px_stat_groups[g].desc[i].offset == px_stat_groups[g].desc[j].offset) distinct = 0;
    ok(distinct, "no two entries of a group share a field");
    int unique = 1;
    for (int g = 0; g < PX_STATS_NGROUPS; g++)
        for (size_t i = 0; i < px_stat_groups[g].n; i++)
            for (int h = g; h < PX_STATS_NGROUPS; h++)
                for (size_t j = h == g ? i + 1 : 0; j < px_stat_groups[h].n; j++)
                    if (!strcmp(px_stat_groups[g].desc[i].name, px_stat_groups[h].desc[j].name)) {
                        diag("%s twice", px_stat_groups[g].desc[i].name);
                        unique = 0;
                    }
    ok(unique, "every name is unique over the whole registry");
}

/* A view of group g with every string set (so every line is written) and
 * numbers zero; a pool gets two lanes. */
static void *full_view(int g, px_stats_lane *lanes)
{
    void *v = calloc(1, expect[g].size);
    if (!v) abort();
    for (size_t i = 0; i < px_stat_groups[g].n; i++) {
        const px_stat_desc *d = &px_stat_groups[g].desc[i];
        if (d->type == PX_STAT_STR) {
            const char *s = "x";
            memcpy((char *)v + d->offset, &s, sizeof(s));
        } else if (d->type == PX_STAT_LANES) {
            px_stats_lanes l = {2, lanes};
            memcpy((char *)v + d->offset, &l, sizeof(l));
        }
    }
    return v;
}

/* The keys of INFO lines, in order, as one "a b c" string. */
static char *keys_of(const px_buf *b)
{
    char *s = calloc(1, b->len + 1);
    if (!s) abort();
    size_t n = 0;
    const char *p = b->data, *end = b->data + b->len;
    while (p < end) {
        const char *colon = memchr(p, ':', (size_t)(end - p));
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!colon || !nl || colon > nl) break;
        if (n) s[n++] = ' ';
        memcpy(s + n, p, (size_t)(colon - p));
        n += (size_t)(colon - p);
        p = nl + 1;
    }
    return s;
}

static char *joined(const char *const *keys)
{
    size_t len = 1;
    for (int i = 0; keys[i]; i++) len += strlen(keys[i]) + 1;
    char *s = calloc(1, len);
    if (!s) abort();
    for (int i = 0; keys[i]; i++) {
        if (i) strcat(s, " ");
        strcat(s, keys[i]);
    }
    return s;
}

static void check_keys_in_order(void)
{
    px_stats_lane lanes[2] = {{0, 2, 1}, {3, 3, 1}};
    for (int g = 0; g < PX_STATS_NGROUPS; g++) {
        if (!expect[g].keys) continue;
        void *v = full_view(g, lanes);
        px_buf out = {0};
        px_stats_render_group(g, v, &out);
        char *got = keys_of(&out), *want = joined(expect[g].keys);
        is_str(got, want, "%s: INFO keys in the order clients know", px_stat_groups[g].section);
        int crlf = 1;
        for (size_t i = 0; i < out.len; i++)
            if (out.data[i] == '\n' && (i == 0 || out.data[i - 1] != '\r')) crlf = 0;
        ok(crlf && out.len >= 2 && out.data[out.len - 1] == '\n', "%s: every line ends in CRLF",
           px_stat_groups[g].section);
        free(got);
        free(want);
        px_buf_free(&out);
        free(v);
    }
}

static void check_known_values(void)
{
    px_stats st;
    px_stats_init(&st);
    st.connections_received = 1;
    st.net_output_bytes = UINT64_MAX;
    px_buf out = {0};
    px_stats_render_group(PX_STATS_G_STATS, &st, &out);
    const char *head = "hotproxy_connections_received:1\r\nhotproxy_rejected_connections:0\r\n";
    ok(out.len >= strlen(head) && !memcmp(out.data, head, strlen(head)), "counters: first lines are name:value");
    const char *tail = "hotproxy_net_input_bytes:0\r\nhotproxy_net_output_bytes:18446744073709551615\r\n";
    ok(out.len >= strlen(tail) && !memcmp(out.data + out.len - strlen(tail), tail, strlen(tail)),
       "counters: a counter is written in full as an unsigned number");
    px_buf_free(&out);

    /* commands: one line per command called, unknown ones last */
    const px_command *get = px_command_lookup("get", 3, NULL, 0);
    st.cmd_calls[px_command_index(get)] = 3;
    st.cmd_calls[px_command_count()] = 1;
    px_stats_info_commands(&st, &out);
    const char *want_cmds = "hotproxy_cmdstat_get:calls=3\r\nhotproxy_cmdstat_unknown:calls=1\r\n";
    is_mem(out.data, out.len, want_cmds, strlen(want_cmds),
           "commandstats: hotproxy_cmdstat_<name>:calls=N");
    px_buf_free(&out);
    px_stats_free(&st);

    px_stats_lane lanes[2] = {{0, 2, 4}, {15, 3, 1}};
    px_stats_pool p = {0};
    p.upstream = "127.0.0.1:6379";
    p.upstream_status = "up";
    p.upstream_server_version = "7.0.15";
    p.upstream_lanes = 2;
    p.upstream_connections = 5;
    p.upstream_connections_ready = 5;
    p.upstream_inflight = 7;
    p.pinned_connections = -1;
    p.oob_connections = 2;
    p.spare_connections = 3;
    p.lane.n = 2;
    p.lane.v = lanes;
    px_stats_render_group(PX_STATS_G_POOL, &p, &out);
    const char *want_pool = "hotproxy_upstream:127.0.0.1:6379\r\n"
                            "hotproxy_upstream_status:up\r\n"
                            "hotproxy_upstream_server_version:7.0.15\r\n"
                            "hotproxy_upstream_lanes:2\r\n"
                            "hotproxy_upstream_connections:5\r\n"
                            "hotproxy_upstream_connections_ready:5\r\n"
                            "hotproxy_upstream_inflight:7\r\n"
                            "hotproxy_pinned_connections:-1\r\n"
                            "hotproxy_oob_connections:2\r\n"
                            "hotproxy_spare_connections:3\r\n"
                            "hotproxy_lane0:db=0,resp=2,connections=4\r\n"
                            "hotproxy_lane1:db=15,resp=3,connections=1\r\n";
    is_mem(out.data, out.len, want_pool, strlen(want_pool),
           "pool: lanes one line each, no last error while a connection is ready");
    px_buf_free(&out);

    px_stats_l1 l = {0};
    l.l1 = "on";
    l.l1_mode = "tracking";
    l.l1_tracking = "up";
    l.l1_tracking_link_id = -1;
    l.l1_hits = 1;
    l.l1_misses = 3;
    l.l1_hit_ratio = 0.25;
    l.l1_barriers = 9;
    px_stats_render_group(PX_STATS_G_L1, &l, &out);
    px_buf_append(&out, "", 1); /* a C string, for strstr */
    ok(strstr(out.data, "\r\nhotproxy_l1_tracking_link_id:-1\r\n") != NULL, "l1: a signed gauge keeps its sign");
    ok(strstr(out.data, "\r\nhotproxy_l1_hit_ratio:0.2500\r\n") != NULL, "l1: the hit ratio has four decimals");
    const char *first = "hotproxy_l1:on\r\nhotproxy_l1_mode:tracking\r\nhotproxy_l1_tracking:up\r\n";
    const char *last = "\r\nhotproxy_l1_barriers:9\r\n";
    ok(!strncmp(out.data, first, strlen(first)) && strlen(out.data) > strlen(last) &&
           !strcmp(out.data + strlen(out.data) - strlen(last), last),
       "l1: first and last lines");
    px_buf_free(&out);

    px_l1_info(NULL, &out);
    is_mem(out.data, out.len, "hotproxy_l1:off\r\n", 17, "l1 off: its one line");
    px_buf_free(&out);
}

/* The latency histograms: bucket edges (le is inclusive), percentiles
 * interpolated within a bucket, the INFO latencystats line and the page's
 * histogram lines. */
static void check_latency(void)
{
    px_stats st;
    px_stats_init(&st);
    int get = px_command_index(px_command_lookup("get", 3, NULL, 0));
    px_stats_latency(&st, get, PX_PATH_FORWARDED, 50000);
    px_stats_latency(&st, get, PX_PATH_FORWARDED, 50001);
    px_stats_latency(&st, get, PX_PATH_FORWARDED, 20000000000ull);
    const px_lat_hist *h = &st.lat[get * PX_PATH_COUNT + PX_PATH_FORWARDED];
    ok(h->bucket[0] == 1 && h->bucket[1] == 1 && h->bucket[PX_LAT_BOUNDS] == 1 && h->count == 3 &&
           h->sum_ns == 20000100001ull,
       "50 us falls in le=50us, 50.001 us in le=100us, 20 s in +Inf; count and sum");
    ok(px_stats_percentile(h, 1.0) == 10e6, "a quantile in the +Inf bucket is the last bound (10 s)");
    px_lat_hist empty = {0};
    ok(px_stats_percentile(&empty, 0.5) == 0.0, "an empty histogram's quantile is 0");
    px_stats_free(&st);

    px_stats_init(&st);
    for (int i = 0; i < 100; i++) px_stats_latency(&st, get, PX_PATH_L1_HIT, 75000);
    px_lat_hist all;
    px_stats_latency_of(&st, get, &all);
    ok(all.count == 100 && px_stats_percentile(&all, 0.5) == 75.0 && px_stats_percentile(&all, 0.99) == 99.5,
       "100 durations in (50, 100] us: p50 75 us, p99 99.5 us (linear within the bucket)");
    px_buf b = {0};
    px_stats_info_latency(&st, &b);
    px_buf_append(&b, "", 1);
    is_str(b.data, "latency_percentiles_usec_get:p50=75.000,p99=99.500,p99.9=99.950\r\n",
           "INFO latencystats' line, in Redis 7's format");
    px_buf_free(&b);
    px_stats_prom_commands(&st, &b);
    px_buf_append(&b, "", 1);
    ok(strstr(b.data, "hotproxy_request_duration_seconds_bucket{cmd=\"get\",path=\"l1_hit\",le=\"5e-05\"} 0\n") &&
           strstr(b.data, "hotproxy_request_duration_seconds_bucket{cmd=\"get\",path=\"l1_hit\",le=\"0.0001\"} 100\n") &&
           strstr(b.data, "hotproxy_request_duration_seconds_bucket{cmd=\"get\",path=\"l1_hit\",le=\"+Inf\"} 100\n") &&
           strstr(b.data, "hotproxy_request_duration_seconds_count{cmd=\"get\",path=\"l1_hit\"} 100\n") &&
           strstr(b.data, "hotproxy_request_duration_seconds_sum{cmd=\"get\",path=\"l1_hit\"} 0.007500000\n") &&
           !strstr(b.data, "path=\"forwarded\""),
       "the page's histogram: cumulative buckets, +Inf, sum in seconds, count; no empty series");
    px_buf_free(&b);
    px_stats_prom_escape(&b, "a\"b\\c\nd");
    px_buf_append(&b, "", 1);
    is_str(b.data, "a\\\"b\\\\c\\nd", "a label value is escaped as the text format wants");
    px_buf_free(&b);
    px_stats_free(&st);
}

int main(void)
{
    plan(PX_STATS_NGROUPS + 2 + 2 * (PX_STATS_NGROUPS - 1) + 8 + 7);
    check_entries();
    check_keys_in_order();
    check_known_values();
    check_latency();
    return exit_status();
}
