/*
 * px_log: levelled log lines in redis-server's format
 * ("pid:X 22 Nov 2026 04:37:25.123 * text"), to a file or standard output.
 * The logger is a value in the server context, not a global; px_log_reopen()
 * is what SIGHUP calls after logrotate moved the file.
 */
#ifndef PX_LOG_H
#define PX_LOG_H

typedef struct px_log {
    int level;       /* PX_LL_* from px_config.h: lines below it are dropped */
    char *path;      /* NULL or "" = standard output */
    int fd;
} px_log;

int px_log_open(px_log *l, int level, const char *path);
int px_log_reopen(px_log *l);
void px_log_close(px_log *l);
void px_log_write(px_log *l, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define px_log_debug(l, ...)   px_log_write((l), 0, __VA_ARGS__)
#define px_log_verbose(l, ...) px_log_write((l), 1, __VA_ARGS__)
#define px_log_notice(l, ...)  px_log_write((l), 2, __VA_ARGS__)
#define px_log_warning(l, ...) px_log_write((l), 3, __VA_ARGS__)

#endif
