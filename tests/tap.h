/*
 * tap.h: the project's Test Anything Protocol helpers, for prove.
 *
 *   plan(3);                      or  no_plan() ... done_testing();
 *   ok(x == 1, "x is %d", x);
 *   is_int(got, want, "what");    is_str(got, want, "what");
 *   skip("no redis-server");      diag("note %d", n);
 *
 * Header-only on purpose: each test binary is one translation unit plus the
 * module it tests.  exit_status() returns non-zero when a test failed or the
 * plan was not met, so a crash or early exit is a failure under prove too.
 */
#ifndef HP_TAP_H
#define HP_TAP_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tap_planned = -1, tap_run = 0, tap_failed = 0;

static inline void plan(int n) { tap_planned = n; printf("1..%d\n", n); fflush(stdout); }
static inline void no_plan(void) { tap_planned = -1; }

static inline void diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void diag(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("# ", stdout);
    vprintf(fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
    fflush(stdout);
}

static inline int tap_vok(int cond, const char *fmt, va_list ap)
{
    tap_run++;
    if (!cond) tap_failed++;
    printf("%sok %d - ", cond ? "" : "not ", tap_run);
    vprintf(fmt, ap);
    fputc('\n', stdout);
    fflush(stdout);
    return cond;
}

static inline int ok(int cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline int ok(int cond, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = tap_vok(cond, fmt, ap);
    va_end(ap);
    return r;
}

#define is_int(got, want, ...)                                                          \
    do {                                                                                \
        long long g_ = (long long)(got), w_ = (long long)(want);                        \
        if (!ok(g_ == w_, __VA_ARGS__)) diag("  got %lld, want %lld", g_, w_);          \
    } while (0)

#define is_str(got, want, ...)                                                          \
    do {                                                                                \
        const char *g_ = (got), *w_ = (want);                                           \
        int eq_ = (g_ && w_) ? strcmp(g_, w_) == 0 : g_ == w_;                          \
        if (!ok(eq_, __VA_ARGS__)) diag("  got '%s', want '%s'", g_ ? g_ : "(null)", w_ ? w_ : "(null)"); \
    } while (0)

/* Compare n bytes; shows both sides escaped on failure. */
static inline void tap_escape(const char *p, size_t n)
{
    for (size_t i = 0; i < n && i < 200; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch == '\r') fputs("\\r", stdout);
        else if (ch == '\n') fputs("\\n", stdout);
        else if (ch < 32 || ch > 126) printf("\\x%02x", ch);
        else fputc(ch, stdout);
    }
    if (n > 200) fputs("...", stdout);
}
#define is_mem(got, gotlen, want, wantlen, ...)                                         \
    do {                                                                                \
        const char *g_ = (got), *w_ = (want);                                           \
        size_t gl_ = (gotlen), wl_ = (wantlen);                                         \
        if (!ok(gl_ == wl_ && (gl_ == 0 || memcmp(g_, w_, gl_) == 0), __VA_ARGS__)) {  \
            fputs("#   got  '", stdout); tap_escape(g_, gl_); fputs("'\n", stdout);     \
            fputs("#   want '", stdout); tap_escape(w_, wl_); fputs("'\n", stdout);     \
        }                                                                               \
    } while (0)

static inline void skip(const char *why) { tap_run++; printf("ok %d # SKIP %s\n", tap_run, why); fflush(stdout); }
/* Skip the whole file (before any test ran). */
static inline void skip_all(const char *why) { printf("1..0 # SKIP %s\n", why); fflush(stdout); exit(0); }

static inline void done_testing(void) { if (tap_planned < 0) { printf("1..%d\n", tap_run); tap_planned = tap_run; } fflush(stdout); }
static inline int exit_status(void)
{
    if (tap_planned >= 0 && tap_planned != tap_run) {
        diag("planned %d tests but ran %d", tap_planned, tap_run);
        return 255;
    }
    return tap_failed ? (tap_failed > 254 ? 254 : tap_failed) : 0;
}

#endif
