/*
 * px_stats: the registry's descriptors, generated from the lists in
 * px_stats.h, and the INFO text written from them.  See px_stats.h.
 */
#include "proxy/px_stats.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/px_command.h"

/* One descriptor per entry, its offset taken in the group's struct. */
#define PX_STAT_DESC(st, scope, prefix, name, kind, type, help) \
    {prefix #name, #name, PX_STAT_##kind, PX_STAT_##type, scope, help, offsetof(st, name)},
#define PX_STAT_DESC_SERVER(...) PX_STAT_DESC(px_stats_server, PX_SCOPE_PROCESS, "hotproxy_", __VA_ARGS__)
#define PX_STAT_DESC_STATS(...) PX_STAT_DESC(px_stats, PX_SCOPE_PROCESS, "hotproxy_", __VA_ARGS__)
#define PX_STAT_DESC_ROUTER(...) PX_STAT_DESC(px_stats_router, PX_SCOPE_PROCESS, "hotproxy_", __VA_ARGS__)
#define PX_STAT_DESC_SENTINEL(...) PX_STAT_DESC(px_stats_sentinel, PX_SCOPE_PROCESS, "hotproxy_", __VA_ARGS__)
#define PX_STAT_DESC_CLUSTER(...) PX_STAT_DESC(px_stats_cluster, PX_SCOPE_PROCESS, "hotproxy_", __VA_ARGS__)
#define PX_STAT_DESC_POOL(...) PX_STAT_DESC(px_stats_pool, PX_SCOPE_POOL, "hotproxy_", __VA_ARGS__)
#define PX_STAT_DESC_LANE(...) PX_STAT_DESC(px_stats_lane, PX_SCOPE_LANE, "hotproxy_lane_", __VA_ARGS__)
#define PX_STAT_DESC_L1(...) PX_STAT_DESC(px_stats_l1, PX_SCOPE_L1, "hotproxy_", __VA_ARGS__)

static const px_stat_desc server_desc[] = {PX_STATS_SERVER_LIST(PX_STAT_DESC_SERVER)};
static const px_stat_desc stats_desc[] = {PX_STATS_LIST(PX_STAT_DESC_STATS)};
static const px_stat_desc router_desc[] = {PX_STATS_ROUTER_LIST(PX_STAT_DESC_ROUTER)};
static const px_stat_desc sentinel_desc[] = {PX_STATS_SENTINEL_LIST(PX_STAT_DESC_SENTINEL)};
static const px_stat_desc cluster_desc[] = {PX_STATS_CLUSTER_LIST(PX_STAT_DESC_CLUSTER)};
static const px_stat_desc pool_desc[] = {PX_STATS_POOL_LIST(PX_STAT_DESC_POOL)};
static const px_stat_desc lane_desc[] = {PX_STATS_LANE_LIST(PX_STAT_DESC_LANE)};
static const px_stat_desc l1_desc[] = {PX_STATS_L1_LIST(PX_STAT_DESC_L1)};

#define N(a) (sizeof(a) / sizeof((a)[0]))

const px_stat_group px_stat_groups[PX_STATS_NGROUPS] = {
    [PX_STATS_G_SERVER] = {"Hotproxy", PX_SCOPE_PROCESS, server_desc, N(server_desc)},
    [PX_STATS_G_STATS] = {"Hotproxy_stats", PX_SCOPE_PROCESS, stats_desc, N(stats_desc)},
    [PX_STATS_G_ROUTER] = {"Hotproxy_upstream", PX_SCOPE_PROCESS, router_desc, N(router_desc)},
    [PX_STATS_G_POOL] = {"Hotproxy_upstream", PX_SCOPE_POOL, pool_desc, N(pool_desc)},
    [PX_STATS_G_LANE] = {NULL, PX_SCOPE_LANE, lane_desc, N(lane_desc)},
    [PX_STATS_G_L1] = {"Hotproxy_cache", PX_SCOPE_L1, l1_desc, N(l1_desc)},
    [PX_STATS_G_SENTINEL] = {"Hotproxy_upstream", PX_SCOPE_PROCESS, sentinel_desc, N(sentinel_desc)},
    [PX_STATS_G_CLUSTER] = {"Hotproxy_upstream", PX_SCOPE_PROCESS, cluster_desc, N(cluster_desc)},
};

#define US 1000ull
#define MS 1000000ull
#define S 1000000000ull
const uint64_t px_lat_bounds_ns[PX_LAT_BOUNDS] = {
    50 * US, 100 * US, 250 * US, 500 * US, 1 * MS,   2500 * US, 5 * MS,   10 * MS, 25 * MS,
    50 * MS, 100 * MS, 250 * MS, 500 * MS, 1 * S,    2500 * MS, 5 * S,    10 * S,
};
const char *const px_path_names[PX_PATH_COUNT] = {
    [PX_PATH_LOCAL] = "local", [PX_PATH_FORWARDED] = "forwarded",
    [PX_PATH_L1_HIT] = "l1_hit", [PX_PATH_COALESCED] = "coalesced",
};

void px_stats_init(px_stats *s)
{
    memset(s, 0, sizeof(*s));
    s->cmd_calls = calloc((size_t)px_command_count() + 1, sizeof(uint64_t));
    s->lat = calloc(((size_t)px_command_count() + 1) * PX_PATH_COUNT, sizeof(px_lat_hist));
    if (!s->cmd_calls || !s->lat) abort();
}

void px_stats_free(px_stats *s)
{
    free(s->cmd_calls);
    free(s->lat);
    s->cmd_calls = NULL;
    s->lat = NULL;
}

/* The value of a number entry, as text; 0 for a string or lanes entry. */
static int value_text(const px_stat_desc *d, const void *view, char *buf, size_t size)
{
    const char *p = (const char *)view + d->offset;
    switch (d->type) {
    case PX_STAT_U64: {
        uint64_t v;
        memcpy(&v, p, sizeof(v));
        return snprintf(buf, size, "%llu", (unsigned long long)v);
    }
    case PX_STAT_I64: {
        int64_t v;
        memcpy(&v, p, sizeof(v));
        return snprintf(buf, size, "%lld", (long long)v);
    }
    case PX_STAT_RATIO: {
        double v;
        memcpy(&v, p, sizeof(v));
        return snprintf(buf, size, "%.4f", v);
    }
    default:
        return 0;
    }
}

static void render_lanes(const px_stat_desc *d, const px_stats_lanes *lanes, px_buf *out)
{
    const px_stat_group *g = &px_stat_groups[PX_STATS_G_LANE];
    char num[64];
    for (int i = 0; i < lanes->n; i++) {
        px_buf_appendf(out, "%s%d:", d->name, i);
        for (size_t k = 0; k < g->n; k++) {
            value_text(&g->desc[k], &lanes->v[i], num, sizeof(num));
            px_buf_appendf(out, "%s%s=%s", k ? "," : "", g->desc[k].key, num);
        }
        px_buf_append(out, "\r\n", 2);
    }
}

void px_stats_render(const px_stat_desc *desc, size_t n, const void *view, px_buf *out)
{
    char num[64];
    for (size_t i = 0; i < n; i++) {
        const px_stat_desc *d = &desc[i];
        const char *p = (const char *)view + d->offset;
        if (d->type == PX_STAT_STR) {
            const char *s;
            memcpy(&s, p, sizeof(s));
            if (s) px_buf_appendf(out, "%s:%s\r\n", d->name, s);
        } else if (d->type == PX_STAT_LANES) {
            render_lanes(d, (const px_stats_lanes *)(const void *)p, out);
        } else {
            value_text(d, view, num, sizeof(num));
            px_buf_appendf(out, "%s:%s\r\n", d->name, num);
        }
    }
}

void px_stats_render_group(int group, const void *view, px_buf *out)
{
    px_stats_render(px_stat_groups[group].desc, px_stat_groups[group].n, view, out);
}

void px_stats_info_commands(const px_stats *s, px_buf *out)
{
    int n = px_command_count();
    for (int i = 0; i < n; i++) {
        if (!s->cmd_calls[i]) continue;
        px_buf_appendf(out, "hotproxy_cmdstat_%s:calls=%llu\r\n", px_command_at(i)->name,
                       (unsigned long long)s->cmd_calls[i]);
    }
    if (s->cmd_calls[n]) px_buf_appendf(out, "hotproxy_cmdstat_unknown:calls=%llu\r\n", (unsigned long long)s->cmd_calls[n]);
}

void px_stats_latency_of(const px_stats *s, int cmd, px_lat_hist *out)
{
    memset(out, 0, sizeof(*out));
    for (int p = 0; p < PX_PATH_COUNT; p++) {
        const px_lat_hist *h = &s->lat[cmd * PX_PATH_COUNT + p];
        for (int i = 0; i <= PX_LAT_BOUNDS; i++) out->bucket[i] += h->bucket[i];
        out->count += h->count;
        out->sum_ns += h->sum_ns;
    }
}

double px_stats_percentile(const px_lat_hist *h, double q)
{
    if (!h->count) return 0.0;
    double rank = q * (double)h->count; /* the rank-th smallest duration */
    uint64_t below = 0;
    for (int i = 0; i <= PX_LAT_BOUNDS; i++) {
        if (!h->bucket[i] || (double)(below + h->bucket[i]) < rank) {
            below += h->bucket[i];
            continue;
        }
        if (i == PX_LAT_BOUNDS) return (double)px_lat_bounds_ns[PX_LAT_BOUNDS - 1] / 1000.0;
        double lo = i ? (double)px_lat_bounds_ns[i - 1] : 0.0, hi = (double)px_lat_bounds_ns[i];
        double frac = (rank - (double)below) / (double)h->bucket[i];
        return (lo + (hi - lo) * frac) / 1000.0;
    }
    return (double)px_lat_bounds_ns[PX_LAT_BOUNDS - 1] / 1000.0;
}

/* A command's name as Redis' INFO writes it: "get", "client|id". */
static const char *cmd_name(int i) { return i < px_command_count() ? px_command_at(i)->name : "unknown"; }

void px_stats_info_latency(const px_stats *s, px_buf *out)
{
    for (int i = 0; i <= px_command_count(); i++) {
        px_lat_hist h;
        px_stats_latency_of(s, i, &h);
        if (!h.count) continue;
        px_buf_appendf(out, "latency_percentiles_usec_%s:p50=%.3f,p99=%.3f,p99.9=%.3f\r\n", cmd_name(i),
                       px_stats_percentile(&h, 0.5), px_stats_percentile(&h, 0.99), px_stats_percentile(&h, 0.999));
    }
}

/* ---- the Prometheus text format ---- */

void px_stats_prom_escape(px_buf *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\') px_buf_append(out, "\\\\", 2);
        else if (*s == '"') px_buf_append(out, "\\\"", 2);
        else if (*s == '\n') px_buf_append(out, "\\n", 2);
        else px_buf_append(out, s, 1);
    }
}

/* The help text as the format wants it: backslashes and newlines escaped. */
static void prom_help(px_buf *out, const char *name, const char *suffix, const char *type, const char *help)
{
    px_buf_appendf(out, "# HELP %s%s ", name, suffix);
    for (const char *p = help; *p; p++) {
        if (*p == '\\') px_buf_append(out, "\\\\", 2);
        else if (*p == '\n') px_buf_append(out, "\\n", 2);
        else px_buf_append(out, p, 1);
    }
    px_buf_appendf(out, "\n# TYPE %s%s %s\n", name, suffix, type);
}

static void prom_labels(px_buf *out, const char *labels, const char *more)
{
    int a = labels && *labels, b = more && *more;
    if (!a && !b) return;
    px_buf_append(out, "{", 1);
    if (a) px_buf_append(out, labels, strlen(labels));
    if (a && b) px_buf_append(out, ",", 1);
    if (b) px_buf_append(out, more, strlen(more));
    px_buf_append(out, "}", 1);
}

void px_stats_prom_group(int group, const void *const *views, const char *const *labels, int n, px_buf *out)
{
    const px_stat_group *g = &px_stat_groups[group];
    char num[64];
    for (size_t k = 0; k < g->n; k++) {
        const px_stat_desc *d = &g->desc[k];
        if (d->type == PX_STAT_LANES) continue; /* the lane group, with a lane label: the caller's */
        const char *suffix = d->type == PX_STAT_STR ? "_info" : d->kind == PX_STAT_COUNTER ? "_total" : "";
        int any = 0;
        for (int i = 0; i < n; i++) {
            const char *p = (const char *)views[i] + d->offset;
            if (d->type == PX_STAT_STR) {
                const char *str;
                memcpy(&str, p, sizeof(str));
                if (!str) continue;
                if (!any++) prom_help(out, d->name, suffix, "gauge", d->help);
                px_buf_appendf(out, "%s%s", d->name, suffix);
                px_buf t = {0};
                px_buf_append(&t, "value=\"", 7);
                px_stats_prom_escape(&t, str);
                px_buf_append(&t, "\"", 2); /* with its NUL: t.data is a string */
                prom_labels(out, labels[i], t.data);
                px_buf_free(&t);
                px_buf_append(out, " 1\n", 3);
                continue;
            }
            if (!any++) prom_help(out, d->name, suffix, d->kind == PX_STAT_COUNTER ? "counter" : "gauge", d->help);
            if (d->type == PX_STAT_RATIO) {
                double v;
                memcpy(&v, p, sizeof(v));
                snprintf(num, sizeof(num), "%.10g", v);
            } else {
                value_text(d, views[i], num, sizeof(num));
            }
            px_buf_appendf(out, "%s%s", d->name, suffix);
            prom_labels(out, labels[i], NULL);
            px_buf_appendf(out, " %s\n", num);
        }
    }
}

void px_stats_prom_commands(const px_stats *s, px_buf *out)
{
    int n = px_command_count();
    px_buf lab = {0};
    prom_help(out, "hotproxy_command_calls", "_total", "counter", "commands read from clients, by command");
    for (int i = 0; i <= n; i++) {
        if (!s->cmd_calls[i]) continue;
        lab.len = lab.rpos = 0;
        px_buf_append(&lab, "cmd=\"", 5);
        px_stats_prom_escape(&lab, cmd_name(i));
        px_buf_appendf(out, "hotproxy_command_calls_total{%.*s\"} %llu\n", (int)lab.len, lab.data, (unsigned long long)s->cmd_calls[i]);
    }
    prom_help(out, "hotproxy_request_duration_seconds", "", "histogram",
              "seconds from a command parsed to its reply complete, by command and path (l1_hit, forwarded, "
              "coalesced, local)");
    for (int i = 0; i <= n; i++) {
        for (int p = 0; p < PX_PATH_COUNT; p++) {
            const px_lat_hist *h = &s->lat[i * PX_PATH_COUNT + p];
            if (!h->count) continue;
            lab.len = lab.rpos = 0;
            px_buf_append(&lab, "cmd=\"", 5);
            px_stats_prom_escape(&lab, cmd_name(i));
            px_buf_appendf(&lab, "\",path=\"%s\"", px_path_names[p]);
            px_buf_append(&lab, "", 1); /* its NUL: lab.data is a string */
            uint64_t cum = 0;
            for (int b = 0; b < PX_LAT_BOUNDS; b++) {
                cum += h->bucket[b];
                px_buf_appendf(out, "hotproxy_request_duration_seconds_bucket{%s,le=\"%g\"} %llu\n", lab.data,
                               (double)px_lat_bounds_ns[b] / 1e9, (unsigned long long)cum);
            }
            px_buf_appendf(out, "hotproxy_request_duration_seconds_bucket{%s,le=\"+Inf\"} %llu\n", lab.data,
                           (unsigned long long)h->count);
            px_buf_appendf(out, "hotproxy_request_duration_seconds_sum{%s} %.9f\n", lab.data, (double)h->sum_ns / 1e9);
            px_buf_appendf(out, "hotproxy_request_duration_seconds_count{%s} %llu\n", lab.data,
                           (unsigned long long)h->count);
        }
    }
    px_buf_free(&lab);
}
