/*
 * px_stats: hotproxy's counters, declared once (PX_STATS_LIST) and turned
 * into the struct and the INFO text from that one list.
 */
#ifndef PX_STATS_H
#define PX_STATS_H

#include <stdint.h>

#include "proxy/px_buf.h"

#define PX_STATS_LIST(X)                                                                  \
    X(connections_received, "client connections accepted")                               \
    X(rejected_connections, "client connections refused at maxclients")                  \
    X(accept_fd_exhaustions, "times accepting paused for want of file descriptors")      \
    X(commands_processed, "commands read from clients")                                  \
    X(commands_forwarded, "commands sent upstream")                                      \
    X(commands_local, "commands answered by hotproxy itself")                            \
    X(commands_refused, "commands refused (denied or unsupported)")                      \
    X(protocol_errors, "clients closed for a malformed request")                         \
    X(query_buffer_limit_disconnects, "clients closed past client-query-buffer-limit")   \
    X(output_buffer_limit_disconnects, "clients closed past client-output-buffer-limit") \
    X(maxmemory_clients_disconnects, "clients closed, biggest first, past maxmemory-clients") \
    X(idle_timeouts, "clients closed after timeout seconds idle")                        \
    X(upstream_connects, "upstream connections established")                             \
    X(upstream_connect_failures, "upstream connection attempts that failed")             \
    X(upstream_disconnects, "established upstream connections lost")                     \
    X(upstream_error_replies, "commands answered with -ERR because upstream failed")      \
    X(upstream_timeouts, "upstream connections replaced after upstream-timeout")         \
    X(ttl_jittered, "TTLs spread on their way to Redis (cache-rule write-ttl-jitter)") \
    X(net_input_bytes, "bytes read from clients")                                        \
    X(net_output_bytes, "bytes written to clients")

typedef struct px_stats {
#define PX_STATS_FIELD(name, desc) uint64_t name;
    PX_STATS_LIST(PX_STATS_FIELD)
#undef PX_STATS_FIELD
    uint64_t *cmd_calls;   /* per command table index, and one more for unknown commands */
} px_stats;

void px_stats_init(px_stats *s);
void px_stats_free(px_stats *s);
/* "name:value\r\n" for every counter. */
void px_stats_info(const px_stats *s, px_buf *out);
/* "cmdstat_<name>:calls=N\r\n" for every command called at least once. */
void px_stats_info_commands(const px_stats *s, px_buf *out);

#endif
