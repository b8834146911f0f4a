/*
 * fuzz_reply: libFuzzer target for the upstream reply scanner
 * (px_reply_scan), RESP2 and RESP3 alike.
 *
 * The input is what an upstream might send.  It is scanned the way
 * px_upstream reads replies -- one reply at a time from its first byte,
 * reset after each, stop at the first error -- with everything there (the
 * reference), then in random splits, in the sizes `need` asks for, and a
 * byte at a time; each feeding must give the same transcript (reply lengths,
 * error text and offset, or "needs more" at the end), with `need` a true
 * lower bound.  Each complete reply is then checked on its own: scanned
 * alone it has the same length, one byte short it needs more, and the
 * helpers that read small replies (px_reply_string, px_reply_decode) stay
 * inside it.
 *
 * Nesting deeper than PX_REPLY_MAX_DEPTH is an error today, the same whole
 * or split; making the scanner iterative with no depth limit is another
 * change, and this target holds whatever the scanner answers to the same
 * standard.
 */
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "fuzz_common.h"
#include "proxy/px_resp.h"

enum { FEED_WHOLE, FEED_SMALL, FEED_ANY, FEED_NEED, FEED_BYTES, NFEEDS };
static const char *const feed_names[] = {"whole", "small splits", "any splits", "need-driven", "byte at a time"};

static size_t deliver(int mode, uint64_t *rng, const px_reply_scanner *s, size_t off, size_t have, size_t n)
{
    size_t next;
    switch (mode) {
    case FEED_SMALL: next = have + 1 + (size_t)(fz_next(rng) % 16); break;
    case FEED_ANY: next = have + 1 + (size_t)(fz_next(rng) % (n - have + 1)); break;
    case FEED_NEED: next = s->need > have - off ? off + s->need : have + 1; break;
    default: next = have + 1; break;
    }
    return next < n ? next : n;
}

/* One complete reply, on its own. */
static void check_frame(const char *frame, size_t len)
{
    px_reply_scanner s;
    char *copy = fz_dup(frame, len);
    px_reply_scanner_init(&s);
    int rc = px_reply_scan(&s, copy, len);
    if (rc != PX_OK || s.pos != len) fz_fail("a %zu-byte reply scanned alone: rc %d pos %zu", len, rc, s.pos);
    free(copy);

    copy = fz_dup(frame, len - 1);
    px_reply_scanner_reset(&s);
    rc = px_reply_scan(&s, copy, len - 1);
    if (rc != PX_AGAIN) fz_fail("a %zu-byte reply one byte short: rc %d (want PX_AGAIN)", len, rc);
    free(copy);

    copy = fz_dup(frame, len);
    const char *out = NULL;
    size_t outlen = 0;
    if (px_reply_string(copy, len, &out, &outlen) == 0) {
        if (out < copy || out > copy + len || outlen > (size_t)(copy + len - out))
            fz_fail("px_reply_string: payload outside the %zu-byte reply", len);
        volatile char sink = 0;
        for (size_t i = 0; i < outlen; i++) sink ^= out[i]; /* ASan checks it is readable */
        (void)sink;
    }
    redisReply *r = px_reply_decode(copy, len);
    if (r) freeReplyObject(r);
    free(copy);
    px_reply_scanner_free(&s);
}

static void run(const char *data, size_t n, int mode, uint64_t seed, fz_buf *out, const size_t *ends, size_t nends)
{
    px_reply_scanner s;
    px_reply_scanner_init(&s);
    uint64_t rng = seed;
    size_t off = 0, have = mode == FEED_WHOLE ? n : 0, k = 0;
    while (off < n) {
        if (have == off) have = deliver(mode, &rng, &s, off, have, n);
        size_t len = have - off;
        char *copy = fz_dup(data + off, len);
        int rc = px_reply_scan(&s, copy, len);
        free(copy);
        if (rc == PX_AGAIN) {
            if (s.need <= len)
                fz_fail("%s: PX_AGAIN at offset %zu with %zu bytes but need %zu", feed_names[mode], off, len, s.need);
            if (ends && k < nends && off + s.need > ends[k])
                fz_fail("%s: need %zu at offset %zu runs past the reply's end %zu", feed_names[mode], s.need, off,
                        ends[k]);
            if (have == n) {
                fz_printf(out, "AGAIN at %zu\n", off);
                break;
            }
            have = deliver(mode, &rng, &s, off, have, n);
            continue;
        }
        if (rc == PX_ERR) {
            if (!s.errstr) fz_fail("%s: PX_ERR without errstr", feed_names[mode]);
            fz_printf(out, "ERR at %zu: %s\n", off, s.errstr);
            break;
        }
        if (rc != PX_OK) fz_fail("%s: px_reply_scan returned %d", feed_names[mode], rc);
        if (s.pos == 0 || s.pos > len)
            fz_fail("%s: PX_OK at offset %zu with pos %zu of %zu bytes", feed_names[mode], off, s.pos, len);
        fz_printf(out, "OK at %zu: %zu bytes\n", off, s.pos);
        off += s.pos;
        px_reply_scanner_reset(&s);
        k++;
    }
    px_reply_scanner_free(&s);
}

static void show(const char *what, const fz_buf *b)
{
    fprintf(stderr, "--- %s (%zu bytes):\n", what, b->len);
    fz_escape(b->p, b->len, 4000);
    fputc('\n', stderr);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    uint64_t h = fz_hash(data, size);

    /* the reference: everything there; where each reply ends */
    size_t *ends = NULL, nends = 0, off = 0;
    px_reply_scanner s;
    px_reply_scanner_init(&s);
    while (off < size && px_reply_scan(&s, buf + off, size - off) == PX_OK) {
        check_frame(buf + off, s.pos);
        ends = realloc(ends, (nends + 1) * sizeof(*ends));
        if (!ends) abort();
        off += s.pos;
        ends[nends++] = off;
        px_reply_scanner_reset(&s);
    }
    px_reply_scanner_free(&s);
    fz_buf whole = {0};
    run(buf, size, FEED_WHOLE, 0, &whole, NULL, 0);

    for (int mode = FEED_SMALL; mode < NFEEDS; mode++) {
        if (mode == FEED_BYTES && size > 2048) continue; /* quadratic */
        int tries = mode == FEED_SMALL || mode == FEED_ANY ? 2 : 1;
        for (int t = 0; t < tries; t++) {
            fz_buf o = {0};
            run(buf, size, mode, h + (uint64_t)t * 7919 + (uint64_t)mode, &o, ends, nends);
            if (o.len != whole.len || (o.len && memcmp(o.p, whole.p, o.len) != 0)) {
                show("whole", &whole);
                show(feed_names[mode], &o);
                fz_fail("%s (try %d) differs from whole", feed_names[mode], t);
            }
            fz_free(&o);
        }
    }
    fz_free(&whole);
    free(ends);
    return 0;
}
