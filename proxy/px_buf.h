/*
 * px_buf: a growable byte buffer with a read position, used for every socket's
 * input and output.  Data lives in data[rpos..len); consuming advances rpos and
 * the buffer compacts itself lazily, so a pipeline of small commands costs no
 * memmove per command.
 *
 * A buffer's bytes can be shared (px_buf_share): whoever holds the reference
 * may read them after the buffer has consumed them, until it puts it back.
 * The buffer then never moves or writes over them: its next reserve moves
 * what is unread to an allocation of its own, and the old one is freed at
 * the last reference.  An upstream's read buffer is shared this way, so a
 * large reply goes to its client from where it was read (px_client_reply_ref).
 */
#ifndef PX_BUF_H
#define PX_BUF_H

#include <stddef.h>
#include <string.h>

/*
 * A counted reference to bytes someone else owns (an L1 value, a block of an
 * upstream's read buffer): its holder calls put(obj) exactly once, when it no
 * longer reads them.
 */
typedef struct px_ref {
    void (*put)(void *obj);
    void *obj;
} px_ref;

static inline void px_ref_put(px_ref *r)
{
    if (r->put) r->put(r->obj);
    r->put = NULL;
    r->obj = NULL;
}

struct px_buf_shared;

typedef struct px_buf {
    char *data;
    size_t rpos; /* first unread byte */
    size_t len;  /* end of valid data */
    size_t cap;
    struct px_buf_shared *shared; /* data is referenced (px_buf_share): never moved or written over */
} px_buf;

static inline size_t px_buf_used(const px_buf *b) { return b->len - b->rpos; }
static inline char *px_buf_start(const px_buf *b) { return b->data + b->rpos; }

void px_buf_release(px_buf *b);
/* Free b's allocation (or let go of it, when shared) and zero it. */
static inline void px_buf_free(px_buf *b)
{
    if (b->data || b->shared) px_buf_release(b); /* an empty buffer holds nothing: the usual case of a scratch one */
}
/* px_buf_reserve's slow path: grow, compact, or leave a shared allocation. */
char *px_buf_grow(px_buf *b, size_t n);
/* Make room for at least n more bytes after len; returns the write pointer. */
static inline char *px_buf_reserve(px_buf *b, size_t n)
{
    if (b->cap - b->len >= n && !b->shared) return b->data + b->len;
    return px_buf_grow(b, n);
}
static inline void px_buf_append(px_buf *b, const void *p, size_t n)
{
    if (!n) return;
    memcpy(px_buf_reserve(b, n), p, n);
    b->len += n;
}
void px_buf_appendf(px_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline void px_buf_consume(px_buf *b, size_t n)
{
    b->rpos += n;
    if (b->rpos == b->len) b->rpos = b->len = 0;
}
/* Drop everything; keep the allocation unless it is larger than keep bytes
 * (or shared). */
void px_buf_clear(px_buf *b, size_t keep);
/*
 * A reference to b's allocation as it is now, so bytes read from it (even
 * ones b has consumed) stay where they are until the reference is put: b
 * writes nothing over them and moves nothing out of them meanwhile.  What it
 * costs b: its next reserve takes a new allocation for what is unread.
 */
px_ref px_buf_share(px_buf *b);
/* 1 if p..p+n lies inside b's current allocation. */
static inline int px_buf_holds(const px_buf *b, const char *p, size_t n)
{
    return b->data && p >= b->data && n <= b->cap && (size_t)(p - b->data) <= b->cap - n;
}

/* A NUL-terminated copy of n bytes (which may hold NULs themselves). */
char *px_memdup0(const void *p, size_t n);

#endif
