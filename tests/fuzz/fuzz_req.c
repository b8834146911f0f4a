/*
 * fuzz_req: libFuzzer target for the client request parser (px_req_parse).
 *
 * The input is a byte stream a client might send.  It is parsed the way
 * px_client's process_input does -- one command at a time from its first
 * byte, reset after each, stop at the first error -- once with everything
 * there (the reference) and then as it would arrive from a socket: in random
 * splits (small and large, points drawn from a hash of the input), in the
 * sizes the parser's own `need` asks for, and a byte at a time.  Every
 * feeding must give the same transcript: the same commands with the same
 * arguments, the same error text at the same offset, or the same "needs
 * more" at the end.  Each call gets its bytes in a fresh allocation, as the
 * client's buffer may move between reads, and `need` must stay a true lower
 * bound (more than what was given, no more than the command's length).
 *
 * The input's first bytes also go to px_string2ll, which reads every length
 * the parser sees, against a plain reference.
 *
 * Inputs over 60000 bytes are skipped: a line longer than
 * PX_INLINE_MAX_SIZE is accepted when it arrives whole and refused when it
 * trickles in, on purpose, as Redis does (tests/unit/test_resp.c,
 * test_req_big), so whole and split legitimately differ there.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include "fuzz_common.h"
#include "proxy/px_resp.h"

enum { FEED_WHOLE, FEED_SMALL, FEED_ANY, FEED_NEED, FEED_BYTES, NFEEDS };
static const char *const feed_names[] = {"whole", "small splits", "any splits", "need-driven", "byte at a time"};
/* Parse as a client that has not authenticated yet (Redis' 10-argument and
 * 16 KB limits), for a quarter of the inputs. */
static int unauthenticated;

/* Where the reference run's commands ended, to bound `need`. */
typedef struct bounds {
    size_t n, cap;
    size_t *end; /* end offset of command i, or 0 if it did not complete */
} bounds;

static void bounds_push(bounds *b, size_t end)
{
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 64;
        b->end = realloc(b->end, b->cap * sizeof(*b->end));
        if (!b->end) abort();
    }
    b->end[b->n++] = end;
}

static size_t deliver(int mode, uint64_t *rng, const px_req_parser *p, size_t off, size_t have, size_t n)
{
    size_t next;
    switch (mode) {
    case FEED_SMALL: next = have + 1 + (size_t)(fz_next(rng) % 16); break;
    case FEED_ANY: next = have + 1 + (size_t)(fz_next(rng) % (n - have + 1)); break;
    case FEED_NEED: next = p->need > have - off ? off + p->need : have + 1; break;
    default: next = have + 1; break;
    }
    return next < n ? next : n;
}

static void run(const char *data, size_t n, long long max_bulk, int mode, uint64_t seed, fz_buf *out,
                bounds *ref)
{
    px_req_parser p;
    px_req_parser_init(&p, max_bulk);
    p.unauthenticated = unauthenticated;
    uint64_t rng = seed;
    size_t off = 0, have = mode == FEED_WHOLE ? n : 0;
    size_t cmd = 0;
    while (off < n) {
        if (have == off) have = deliver(mode, &rng, &p, off, have, n);
        size_t len = have - off;
        char *copy = fz_dup(data + off, len);
        int rc = px_req_parse(&p, copy, len);
        if (rc == PX_AGAIN) {
            free(copy);
            if (p.need <= len)
                fz_fail("%s: PX_AGAIN at offset %zu with %zu bytes but need %zu", feed_names[mode], off, len, p.need);
            if (ref && cmd < ref->n && ref->end[cmd] && off + p.need > ref->end[cmd])
                fz_fail("%s: need %zu at offset %zu runs past the command's end %zu", feed_names[mode], p.need, off,
                        ref->end[cmd]);
            if (have == n) {
                fz_printf(out, "AGAIN at %zu\n", off);
                break;
            }
            have = deliver(mode, &rng, &p, off, have, n);
            continue;
        }
        if (rc == PX_ERR) {
            free(copy);
            if (!p.errstr) fz_fail("%s: PX_ERR without errstr", feed_names[mode]);
            fz_printf(out, "ERR at %zu: %s\n", off, p.errstr);
            break;
        }
        if (rc != PX_OK) fz_fail("%s: px_req_parse returned %d", feed_names[mode], rc);
        if (p.pos == 0 || p.pos > len)
            fz_fail("%s: PX_OK at offset %zu with pos %zu of %zu bytes", feed_names[mode], off, p.pos, len);
        if (p.argc < 0) fz_fail("%s: argc %d", feed_names[mode], p.argc);
        fz_printf(out, "OK at %zu: %zu bytes, %d args\n", off, p.pos, p.argc);
        for (int i = 0; i < p.argc; i++) {
            size_t alen;
            const char *a = px_req_arg(&p, copy, i, &alen);
            if (p.type == '*' && (p.argv[i].off > p.pos || alen > p.pos - p.argv[i].off))
                fz_fail("%s: argument %d [%zu,+%zu) outside the command's %zu bytes", feed_names[mode], i,
                        p.argv[i].off, alen, p.pos);
            fz_printf(out, "  %zu:", alen);
            fz_put(out, a, alen); /* ASan checks the argument is readable */
            fz_put(out, "\n", 1);
        }
        free(copy);
        off += p.pos;
        px_req_parser_reset(&p);
        cmd++;
    }
    px_req_parser_free(&p);
}

static void show(const char *what, const fz_buf *b)
{
    fprintf(stderr, "--- %s (%zu bytes):\n", what, b->len);
    fz_escape(b->p, b->len, 4000);
    fputc('\n', stderr);
}

/* The reference run, recording where each command ends. */
static void run_whole(const char *data, size_t n, long long max_bulk, fz_buf *out, bounds *b)
{
    px_req_parser p;
    px_req_parser_init(&p, max_bulk);
    p.unauthenticated = unauthenticated;
    size_t off = 0;
    while (off < n) {
        int rc = px_req_parse(&p, data + off, n - off);
        if (rc != PX_OK) break;
        off += p.pos;
        bounds_push(b, off);
        px_req_parser_reset(&p);
    }
    px_req_parser_free(&p);
    run(data, n, max_bulk, FEED_WHOLE, 0, out, NULL);
}

/* px_string2ll, which reads every length, against a plain reference:
 * "0", or an optional '-' and a digit 1-9 then digits, in range. */
static void check_string2ll(const char *s, size_t n)
{
    char z[32];
    if (n > 24) n = 24;
    memcpy(z, s, n);
    z[n] = '\0';
    size_t i = z[0] == '-';
    int shape = n > 0 && n <= 20 && strlen(z) == n &&
                ((n == 1 && z[0] == '0') || (i < n && z[i] >= '1' && z[i] <= '9'));
    for (size_t k = i; shape && k < n; k++) shape = z[k] >= '0' && z[k] <= '9';
    errno = 0;
    long long want = shape ? strtoll(z, NULL, 10) : 0;
    int ref = shape && errno != ERANGE;
    long long got = 0;
    int rc = px_string2ll(s, n, &got);
    if (rc != ref || (rc && got != want))
        fz_fail("px_string2ll('%s'): rc %d value %lld, reference rc %d value %lld", z, rc, got, ref, want);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 60000) return 0;
    check_string2ll((const char *)data, size);
    uint64_t h = fz_hash(data, size);
    /* a quarter of the inputs run with a tiny proto-max-bulk-len */
    long long max_bulk = (h & 3) == 0 ? (long long)((h >> 2) % 64) : 512LL * 1024 * 1024;
    unauthenticated = ((h >> 8) & 3) == 0;
    const char *buf = (const char *)data;

    fz_buf whole = {0};
    bounds b = {0};
    run_whole(buf, size, max_bulk, &whole, &b);
    for (int mode = FEED_SMALL; mode < NFEEDS; mode++) {
        if (mode == FEED_BYTES && size > 2048) continue; /* quadratic */
        int tries = mode == FEED_SMALL || mode == FEED_ANY ? 2 : 1;
        for (int t = 0; t < tries; t++) {
            fz_buf o = {0};
            run(buf, size, max_bulk, mode, h + (uint64_t)t * 7919 + (uint64_t)mode, &o, &b);
            if ((o.len != whole.len || (o.len && memcmp(o.p, whole.p, o.len) != 0))) {
                fprintf(stderr, "max_bulk_len %lld, unauthenticated %d\n", max_bulk, unauthenticated);
                show("whole", &whole);
                show(feed_names[mode], &o);
                fz_fail("%s (try %d) differs from whole", feed_names[mode], t);
            }
            fz_free(&o);
        }
    }
    fz_free(&whole);
    free(b.end);
    return 0;
}
