/*
 * px_buf: a growable byte buffer with a read position, used for every socket's
 * input and output.  Data lives in data[rpos..len); consuming advances rpos and
 * the buffer compacts itself lazily, so a pipeline of small commands costs no
 * memmove per command.
 */
#ifndef PX_BUF_H
#define PX_BUF_H

#include <stddef.h>

typedef struct px_buf {
    char *data;
    size_t rpos; /* first unread byte */
    size_t len;  /* end of valid data */
    size_t cap;
} px_buf;

static inline size_t px_buf_used(const px_buf *b) { return b->len - b->rpos; }
static inline char *px_buf_start(const px_buf *b) { return b->data + b->rpos; }

void px_buf_free(px_buf *b);
/* Make room for at least n more bytes after len; returns the write pointer. */
char *px_buf_reserve(px_buf *b, size_t n);
void px_buf_append(px_buf *b, const void *p, size_t n);
void px_buf_appendf(px_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void px_buf_consume(px_buf *b, size_t n);
/* A NUL-terminated copy of n bytes (which may hold NULs themselves). */
char *px_memdup0(const void *p, size_t n);
/* Drop everything; keep the allocation unless it is larger than keep bytes. */
void px_buf_clear(px_buf *b, size_t keep);

#endif
