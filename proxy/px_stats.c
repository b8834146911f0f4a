/*
 * px_stats: see px_stats.h.
 */
#include "proxy/px_stats.h"

#include <stdlib.h>
#include <string.h>

#include "proxy/px_command.h"

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

void px_stats_info(const px_stats *s, px_buf *out)
{
#define PX_STATS_LINE(name, desc) px_buf_appendf(out, #name ":%llu\r\n", (unsigned long long)s->name);
    PX_STATS_LIST(PX_STATS_LINE)
#undef PX_STATS_LINE
}

void px_stats_info_commands(const px_stats *s, px_buf *out)
{
    int n = px_command_count();
    for (int i = 0; i < n; i++) {
        if (!s->cmd_calls[i]) continue;
        px_buf_appendf(out, "cmdstat_%s:calls=%llu\r\n", px_command_at(i)->name, (unsigned long long)s->cmd_calls[i]);
    }
    if (s->cmd_calls[n]) px_buf_appendf(out, "cmdstat_unknown:calls=%llu\r\n", (unsigned long long)s->cmd_calls[n]);
}
