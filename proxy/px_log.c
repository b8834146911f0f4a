/*
 * px_log: see px_log.h.
 */
#include "proxy/px_log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int px_log_open(px_log *l, int level, const char *path)
{
    l->level = level;
    l->path = path && *path ? strdup(path) : NULL;
    l->fd = STDOUT_FILENO;
    return px_log_reopen(l);
}

int px_log_reopen(px_log *l)
{
    if (!l->path) return 0;
    int fd = open(l->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    if (l->fd != STDOUT_FILENO && l->fd >= 0) close(l->fd);
    l->fd = fd;
    return 0;
}

void px_log_close(px_log *l)
{
    if (l->fd != STDOUT_FILENO && l->fd >= 0) close(l->fd);
    l->fd = -1;
    free(l->path);
    l->path = NULL;
}

void px_log_write(px_log *l, int level, const char *fmt, ...)
{
    static const char marks[] = ".-*#";
    if (level < l->level || l->fd < 0) return;
    char line[1024];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    localtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%d:P ", (int)getpid());
    n += (int)strftime(line + n, sizeof(line) - (size_t)n, "%d %b %Y %H:%M:%S.", &tm);
    n += snprintf(line + n, sizeof(line) - (size_t)n, "%03d %c ", (int)(tv.tv_usec / 1000), marks[level & 3]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0) m = 0;
    n += m;
    if (n > (int)sizeof(line) - 2) n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    ssize_t w = write(l->fd, line, (size_t)n);
    (void)w;
}
