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

void px_stats_init(px_stats *s)
{
    memset(s, 0, sizeof(*s));
    s->cmd_calls = calloc((size_t)px_command_count() + 1, sizeof(uint64_t));
    if (!s->cmd_calls) abort();
}

void px_stats_free(px_stats *s)
{
    free(s->cmd_calls);
    s->cmd_calls = NULL;
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
