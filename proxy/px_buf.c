/*
 * px_buf: growable byte buffers.  See px_buf.h.
 */
#include "proxy/px_buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An allocation others hold references to (px_buf_share); the buffer that
 * made it holds one too until it lets go of the allocation. */
typedef struct px_buf_shared {
    unsigned long refs;
    char *mem;
} px_buf_shared;

static void shared_put(void *obj)
{
    px_buf_shared *sh = obj;
    if (--sh->refs) return;
    free(sh->mem);
    free(sh);
}

/* b lets go of a shared allocation (its readers keep it alive). */
static void unshare(px_buf *b)
{
    shared_put(b->shared);
    b->shared = NULL;
    b->data = NULL;
    b->rpos = b->len = b->cap = 0;
}

void px_buf_release(px_buf *b)
{
    if (b->shared) unshare(b);
    else free(b->data);
    memset(b, 0, sizeof(*b));
}

static size_t grown(size_t cap, size_t need)
{
    if (!cap) cap = 256;
    while (cap < need) cap = cap < (64u << 20) ? cap * 2 : cap + (64u << 20);
    return cap;
}

char *px_buf_grow(px_buf *b, size_t n)
{
    if (b->shared) {
        /* what is unread moves to an allocation of b's own; readers keep the old one */
        size_t used = b->len - b->rpos, cap = grown(0, used + n);
        char *d = malloc(cap);
        if (!d) abort();
        memcpy(d, b->data + b->rpos, used);
        unshare(b);
        b->data = d;
        b->cap = cap;
        b->len = used;
        return b->data + b->len;
    }
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
    size_t cap = grown(b->cap, b->len + n);
    char *d = realloc(b->data, cap);
    if (!d) abort(); /* sizes from the network are bounded before they get here */
    b->data = d;
    b->cap = cap;
    return b->data + b->len;
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

void px_buf_clear(px_buf *b, size_t keep)
{
    if (b->shared) {
        unshare(b);
        return;
    }
    b->rpos = b->len = 0;
    if (b->cap > keep) {
        free(b->data);
        b->data = NULL;
        b->cap = 0;
    }
}

px_ref px_buf_share(px_buf *b)
{
    if (!b->shared) {
        b->shared = malloc(sizeof(*b->shared));
        if (!b->shared) abort();
        b->shared->refs = 1; /* b's own */
        b->shared->mem = b->data;
    }
    b->shared->refs++;
    return (px_ref){shared_put, b->shared};
}

char *px_memdup0(const void *p, size_t n)
{
    char *d = malloc(n + 1);
    if (!d) abort();
    memcpy(d, p, n);
    d[n] = '\0';
    return d;
}
