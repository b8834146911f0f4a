/*
 * fuzz_common.h: what the libFuzzer targets under tests/fuzz share.
 *
 * Header-only, like tests/tap.h: each target is one translation unit linked
 * against the project's own libraries.  A target that sees a broken promise
 * prints what it saw and abort()s, which libFuzzer reports as a crash and
 * saves as a crash-<sha1> input to keep in the corpus.
 */
#ifndef HP_FUZZ_COMMON_H
#define HP_FUZZ_COMMON_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A growable byte buffer: transcripts of what a parser answered. */
typedef struct fz_buf {
    char *p;
    size_t len, cap;
} fz_buf;

static inline void fz_put(fz_buf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) cap *= 2;
        b->p = realloc(b->p, cap);
        if (!b->p) abort();
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, p, n);
    b->len += n;
}

static inline void fz_printf(fz_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline void fz_printf(fz_buf *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0) fz_put(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

static inline void fz_free(fz_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* Print bytes escaped, at most max of them, to stderr. */
static inline void fz_escape(const char *p, size_t n, size_t max)
{
    for (size_t i = 0; i < n && i < max; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch == '\r') fputs("\\r", stderr);
        else if (ch == '\n') fputs("\\n\n", stderr);
        else if (ch < 32 || ch > 126 || ch == '\\') fprintf(stderr, "\\x%02x", ch);
        else fputc(ch, stderr);
    }
    if (n > max) fputs("...", stderr);
}

/* A broken promise: say which, and crash so libFuzzer keeps the input. */
#define fz_fail(...)                                                                                        \
    do {                                                                                                    \
        fprintf(stderr, "\nFUZZ CHECK FAILED (%s:%d): ", __FILE__, __LINE__);                                \
        fprintf(stderr, __VA_ARGS__);                                                                       \
        fputc('\n', stderr);                                                                                \
        abort();                                                                                            \
    } while (0)

/* The split points come from the input itself: a hash of it seeds this
 * generator, so a saved crash input replays the same splits. */
static inline uint64_t fz_hash(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

static inline uint64_t fz_next(uint64_t *s)
{
    /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* A copy of p[0..n) in its own allocation, so a parser that keeps a pointer
 * into a previous call's buffer reads freed memory and ASan says so. */
static inline char *fz_dup(const char *p, size_t n)
{
    char *c = malloc(n ? n : 1);
    if (!c) abort();
    if (n) memcpy(c, p, n);
    return c;
}

#endif
