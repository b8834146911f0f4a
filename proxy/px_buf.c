/*
 * px_buf: growable byte buffers.  See px_buf.h.
 */
#include "proxy/px_buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void px_buf_free(px_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

char *px_buf_reserve(px_buf *b, size_t n)
{
    if (b->cap - b->len >= n) return b->data + b->len;
    /* Compact first when the read part is at least half the buffer: cheaper
     * than growing, and bounded work per byte consumed. */
    if (b->rpos && b->rpos >= b->cap / 2) {
        size_t used = b->len - b->rpos;
        memmove(b->data, b->data + b->rpos, used);
        b->rpos = 0;
        b->len = used;
        if (b->cap - b->len >= n) return b->data + b->len;
    }
    size_t need = b->len + n, cap = b->cap ? b->cap : 256;
    while (cap < need) cap = cap < (64u << 20) ? cap * 2 : cap + (64u << 20);
    char *d = realloc(b->data, cap);
    if (!d) abort(); /* sizes from the network are bounded before they get here */
    b->data = d;
    b->cap = cap;
    return b->data + b->len;
}

void px_buf_append(px_buf *b, const void *p, size_t n)
{
    if (!n) return;
    memcpy(px_buf_reserve(b, n), p, n);
    b->len += n;
}

void px_buf_appendf(px_buf *b, const char *fmt, ...)
{
    va_list ap;
    char tmp[512];
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof(tmp)) {
        px_buf_append(b, tmp, (size_t)n);
        return;
    }
    char *w = px_buf_reserve(b, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(w, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void px_buf_consume(px_buf *b, size_t n)
{
    b->rpos += n;
    if (b->rpos == b->len) b->rpos = b->len = 0;
}

void px_buf_clear(px_buf *b, size_t keep)
{
    b->rpos = b->len = 0;
    if (b->cap > keep) {
        free(b->data);
        b->data = NULL;
        b->cap = 0;
    }
}

char *px_memdup0(const void *p, size_t n)
{
    char *d = malloc(n + 1);
    if (!d) abort();
    memcpy(d, p, n);
    d[n] = '\0';
    return d;
}
