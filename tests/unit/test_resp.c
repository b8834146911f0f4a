/*
 * test_resp: px_resp's request parser, reply scanner and helpers.
 *
 * The request parser must answer exactly what Redis 7's processMultibulkBuffer
 * and processInlineBuffer answer: the malformed cases are those of Redis'
 * tests/unit/protocol.tcl plus their neighbours, and every expected error text
 * below was checked against a real redis-server 7.0 (including Redis 7's
 * habit of turning CR and LF inside an error into spaces).
 *
 * Every input is fed whole, in random splits (seeded, so a failure can be
 * replayed), one byte at a time, and "as far as p->need says" each time; the
 * results must agree and PX_AGAIN's need must be a true lower bound.  The
 * byte-at-a-time feed copies each prefix into an allocation of exactly that
 * size, so under -fsanitize=address a read past len is caught, and so is a
 * pointer kept into an earlier call's buffer.
 */
#include "proxy/px_resp.h"

#include <limits.h>
#include <stdint.h>

#include "tap.h"

/* ------------------------------------------------------------------ helpers */

static uint64_t rng_state;
static void rng_seed(uint64_t seed) { rng_state = seed * 0x9E3779B97F4A7C15ULL + 0x2545F4914F6CDD1DULL; }
static uint64_t rng(void)
{
    uint64_t x = rng_state; /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1DULL;
}
static size_t rng_below(size_t n) { return n ? (size_t)(rng() % n) : 0; }

/* How far a simulated read advances: mostly a few bytes, sometimes a lot. */
static size_t rng_step(size_t remaining)
{
    size_t s = rng_below(4) == 0 ? 1 + rng_below(remaining) : 1 + rng_below(8);
    return s > remaining ? remaining : s;
}

typedef struct dbuf {
    char *p;
    size_t len, cap;
} dbuf;

static void db_put(dbuf *b, const void *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        while (b->len + n + 1 > b->cap) b->cap = b->cap ? b->cap * 2 : 256;
        b->p = realloc(b->p, b->cap);
        if (!b->p) abort();
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}
static void db_puts(dbuf *b, const char *s) { db_put(b, s, strlen(s)); }
static void db_printf(dbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void db_printf(dbuf *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp)) abort();
    db_put(b, tmp, (size_t)n);
}
static void db_free(dbuf *b) { free(b->p); memset(b, 0, sizeof(*b)); }

/* A binary-safe string; B("a\0b") keeps the NUL. */
typedef struct bstr {
    const char *p;
    size_t n;
} bstr;
#define B(s) {(s), sizeof(s) - 1}
#define L(s) (s), (sizeof(s) - 1)

/* ------------------------------------------------------ request feeding */

enum { FEED_WHOLE, FEED_SPLIT, FEED_BYTES, FEED_BYTES_SAME, FEED_NEED };
static const char *const feed_names[] = {"whole", "random split", "byte at a time", "byte at a time", "need-driven"};

/* What one feeding of one command produced. */
typedef struct req_out {
    int rc;
    size_t pos;            /* on PX_OK */
    size_t need;           /* on a final PX_AGAIN */
    int argc;              /* on PX_OK */
    dbuf args;             /* arguments, each as 8-byte length + bytes */
    char errstr[160];      /* on PX_ERR */
    char need_bad[200];    /* first broken promise about need, or "" */
} req_out;

static void req_out_free(req_out *o) { db_free(&o->args); }

static void req_capture(req_out *o, const px_req_parser *p, const char *buf, int rc)
{
    o->rc = rc;
    if (rc == PX_OK) {
        o->pos = p->pos;
        o->argc = p->argc;
        for (int i = 0; i < p->argc; i++) {
            size_t n;
            const char *a = px_req_arg(p, buf, i, &n);
            uint64_t n64 = n;
            db_put(&o->args, &n64, sizeof(n64));
            db_put(&o->args, a, n);
        }
    } else if (rc == PX_ERR) {
        snprintf(o->errstr, sizeof(o->errstr), "%s", p->errstr ? p->errstr : "(null errstr)");
    } else {
        o->need = p->need;
    }
}

/*
 * Feed buf[0..total) to a fresh parser as a connection would: the same
 * command start and a growing len, until the parser stops answering PX_AGAIN
 * or the input runs out.  bound: no valid need may exceed it (the command's
 * real length; SIZE_MAX for an input that is deliberately incomplete).
 * tail: if not 0, the byte-wise modes jump from len 0 straight to the last
 * tail bytes (a 64 KB line fed byte by byte is rescanned 64K times).
 */
static void req_feed(req_out *o, const char *buf, size_t total, long long max_bulk, int mode, uint64_t seed,
                     size_t bound, size_t tail)
{
    px_req_parser p;
    px_req_parser_init(&p, max_bulk);
    memset(o, 0, sizeof(*o));
    rng_seed(seed);
    size_t len = mode == FEED_WHOLE ? total : 0;
    char *copy = NULL;
    const char *b = buf;
    int rc;
    for (;;) {
        if (mode == FEED_BYTES) {
            free(copy);
            copy = malloc(len ? len : 1);
            if (!copy) abort();
            memcpy(copy, buf, len);
            b = copy;
        }
        rc = px_req_parse(&p, b, len);
        if (rc != PX_AGAIN || len >= total) break;
        if (!o->need_bad[0] && (p.need <= len || p.need > bound))
            snprintf(o->need_bad, sizeof(o->need_bad), "%s: PX_AGAIN at len %zu with need %zu (command is %zu bytes)",
                     feed_names[mode], len, p.need, bound);
        if (len == 0 && tail && total > tail && mode != FEED_SPLIT) {
            len = total - tail;
            continue;
        }
        switch (mode) {
        case FEED_SPLIT: len += rng_step(total - len); break;
        case FEED_NEED: len = p.need > len ? (p.need < total ? p.need : total) : len + 1; break;
        default: len++; break;
        }
    }
    req_capture(o, &p, b, rc);
    free(copy);
    px_req_parser_free(&p);
}

static int req_same(const req_out *a, const req_out *b)
{
    if (a->rc != b->rc) return 0;
    if (a->rc == PX_ERR) return strcmp(a->errstr, b->errstr) == 0;
    if (a->rc == PX_AGAIN) return 1;
    return a->pos == b->pos && a->argc == b->argc && a->args.len == b->args.len &&
           (a->args.len == 0 || memcmp(a->args.p, b->args.p, a->args.len) == 0);
}

static void req_describe(const char *what, const req_out *o)
{
    if (o->rc == PX_OK) diag("  %s: PX_OK pos %zu argc %d", what, o->pos, o->argc);
    else if (o->rc == PX_ERR) diag("  %s: PX_ERR '%s'", what, o->errstr);
    else diag("  %s: PX_AGAIN need %zu", what, o->need);
}

/* Do o's arguments equal want[0..argc)? */
static int req_args_are(const req_out *o, int argc, const bstr *want)
{
    if (o->argc != argc) return 0;
    size_t off = 0;
    for (int i = 0; i < argc; i++) {
        uint64_t n;
        if (off + sizeof(n) > o->args.len) return 0;
        memcpy(&n, o->args.p + off, sizeof(n));
        off += sizeof(n);
        if (n != want[i].n || off + n > o->args.len || memcmp(o->args.p + off, want[i].p, n) != 0) {
            printf("#   argument %d: got '", i);
            tap_escape(o->args.p + off, off + n > o->args.len ? 0 : (size_t)n);
            fputs("', want '", stdout);
            tap_escape(want[i].p, want[i].n);
            fputs("'\n", stdout);
            return 0;
        }
        off += n;
    }
    return off == o->args.len;
}

/*
 * One command, fed four ways.  want_rc PX_OK: buf is exactly one command and
 * must parse to want[0..want_argc); PX_ERR: the final answer is want_err;
 * PX_AGAIN: the whole of buf is not enough.
 */
static void check_req(const char *name, const char *buf, size_t len, long long max_bulk, int want_rc,
                      const char *want_err, int want_argc, const bstr *want)
{
    req_out w, o;
    size_t bound = want_rc == PX_AGAIN ? SIZE_MAX : len;
    int big = len > 8192;
    size_t tail = big && want_rc != PX_OK ? 1024 : 0;

    req_feed(&w, buf, len, max_bulk, FEED_WHOLE, 0, bound, 0);
    if (!ok(w.rc == want_rc, "%s: whole: %s", name,
            want_rc == PX_OK ? "PX_OK" : want_rc == PX_ERR ? "PX_ERR" : "PX_AGAIN"))
        req_describe("got", &w);
    if (want_rc == PX_OK) {
        is_int(w.pos, len, "%s: whole: pos is the command's length", name);
        ok(req_args_are(&w, want_argc, want), "%s: whole: argc %d and the arguments", name, want_argc);
    } else if (want_rc == PX_ERR) {
        is_mem(w.errstr, strlen(w.errstr), want_err, strlen(want_err), "%s: whole: error text", name);
    } else {
        ok(w.need > len, "%s: whole: need (%zu) asks for more than the %zu bytes given", name, w.need, len);
    }

    int seeds = big ? 3 : 60, bad = 0;
    for (int s = 1; s <= seeds; s++) {
        req_feed(&o, buf, len, max_bulk, FEED_SPLIT, (uint64_t)s, bound, 0);
        if (!req_same(&w, &o) || o.need_bad[0]) {
            if (!bad) {
                diag("  seed %d:", s);
                req_describe("whole", &w);
                req_describe("split", &o);
                if (o.need_bad[0]) diag("  %s", o.need_bad);
            }
            bad++;
        }
        req_out_free(&o);
    }
    ok(bad == 0, "%s: %d random splits agree with whole, need is a lower bound (%d differ)", name, seeds, bad);

    static const int modes[] = {FEED_BYTES, FEED_NEED};
    for (int m = 0; m < 2; m++) {
        int mode = modes[m] == FEED_BYTES && big ? FEED_BYTES_SAME : modes[m];
        req_feed(&o, buf, len, max_bulk, mode, 0, bound, tail);
        if (!ok(req_same(&w, &o) && !o.need_bad[0], "%s: %s%s agrees with whole, need is a lower bound", name,
                feed_names[mode], tail ? " (len 0, then the last 1024 bytes)" : "")) {
            req_describe("whole", &w);
            req_describe(feed_names[mode], &o);
            if (o.need_bad[0]) diag("  %s", o.need_bad);
        }
        req_out_free(&o);
    }
    req_out_free(&w);
}

#define NARGS(a) ((int)(sizeof(a) / sizeof((a)[0])))
#define REQ_OK(name, buf, ...)                                                              \
    do {                                                                                    \
        static const bstr want_[] = {__VA_ARGS__};                                          \
        check_req(name, L(buf), LLONG_MAX, PX_OK, NULL, NARGS(want_), want_);               \
    } while (0)
#define REQ_EMPTY(name, buf) check_req(name, L(buf), LLONG_MAX, PX_OK, NULL, 0, NULL)
#define REQ_ERR(name, buf, err) check_req(name, L(buf), 512LL * 1024 * 1024, PX_ERR, err, 0, NULL)

/* ------------------------------------------------------ request tests */

static void test_req_multibulk(void)
{
    REQ_OK("SET key value", "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n", B("SET"), B("key"), B("value"));
    REQ_OK("PING as multibulk", "*1\r\n$4\r\nPING\r\n", B("PING"));
    REQ_OK("empty bulk argument", "*2\r\n$4\r\nECHO\r\n$0\r\n\r\n", B("ECHO"), B(""));
    REQ_OK("bulk holding CR LF NUL", "*2\r\n$4\r\nECHO\r\n$8\r\na\r\nb\0c\r\n\r\n", B("ECHO"), B("a\r\nb\0c\r\n"));
    REQ_OK("bulk that looks like RESP", "*2\r\n$4\r\nECHO\r\n$12\r\n*1\r\n$4\r\nPING\r\n", B("ECHO"),
           B("*1\r\n$4\r\nPING"));
    REQ_OK("bulk of only CR LF", "*1\r\n$2\r\n\r\n\r\n", B("\r\n"));
    REQ_OK("high bytes", "*1\r\n$3\r\n\xff\x80\x01\r\n", B("\xff\x80\x01"));
    REQ_EMPTY("*0 is an empty command", "*0\r\n");
    REQ_EMPTY("*-1 is an empty command", "*-1\r\n");
    /* protocol.tcl "Negative multibulk length": Redis skips it and answers the PING after */
    REQ_EMPTY("*-10 is an empty command (protocol.tcl)", "*-10\r\n");
    /* Redis skips the two bytes after a line's \r and after a bulk without looking at them. */
    REQ_OK("byte after \\r in the header is not checked, as in Redis", "*1\rx$4\r\nPING\rx", B("PING"));
    REQ_OK("bulk's trailing two bytes are not checked, as in Redis", "*1\r\n$4\r\nPINGxx", B("PING"));

    /* Redis 7 bounds the count by INT_MAX and allocates as arguments arrive. */
    check_req("*2147483647 is accepted and waits", L("*2147483647\r\n$1\r\na\r\n"), LLONG_MAX, PX_AGAIN, NULL, 0,
              NULL);
    {
        px_req_parser p;
        px_req_parser_init(&p, LLONG_MAX);
        int rc = px_req_parse(&p, L("*2147483647\r\n$1\r\na\r\n$1\r\nb\r\n"));
        is_int(rc, PX_AGAIN, "*2147483647: two arguments in, still PX_AGAIN");
        ok(p.argv_cap <= 1024, "*2147483647: argv not sized from the declared count (cap %d)", p.argv_cap);
        px_req_parser_free(&p);
    }
    {
        /* A declared 2 GB bulk: waits for it without allocating, need says how much. */
        px_req_parser p;
        px_req_parser_init(&p, LLONG_MAX);
        static const char hdr[] = "*1\r\n$2000000000\r\n";
        int rc = px_req_parse(&p, L(hdr));
        is_int(rc, PX_AGAIN, "$2000000000 under a large max: PX_AGAIN");
        ok(p.need > sizeof(hdr) - 1 && p.need <= sizeof(hdr) - 1 + 2000000000ULL + 2,
           "$2000000000: need %zu within (%zu, %llu]", p.need, sizeof(hdr) - 1, sizeof(hdr) - 1 + 2000000002ULL);
        px_req_parser_free(&p);
    }
    {
        px_req_parser p;
        px_req_parser_init(&p, LLONG_MAX);
        int rc = px_req_parse(&p, "", 0);
        is_int(rc, PX_AGAIN, "len 0: PX_AGAIN");
        ok(p.need >= 1, "len 0: need %zu is at least 1", p.need);
        px_req_parser_free(&p);
    }

    /* proto-max-bulk-len: a bulk of exactly the limit passes, one more byte does not. */
    check_req("bulk of exactly max_bulk_len", L("*2\r\n$3\r\nSET\r\n$16\r\n0123456789abcdef\r\n"), 16, PX_OK, NULL, 2,
              (const bstr[]){B("SET"), B("0123456789abcdef")});
    check_req("bulk over max_bulk_len", L("*2\r\n$3\r\nSET\r\n$17\r\n0123456789abcdefg\r\n"), 16, PX_ERR,
              "Protocol error: invalid bulk length", 0, NULL);
    check_req("header alone over max_bulk_len", L("*1\r\n$17\r\n"), 16, PX_ERR, "Protocol error: invalid bulk length",
              0, NULL);

    /* 1000 arguments */
    {
        dbuf b = {0}, strs = {0};
        bstr want[1000];
        size_t offs[1000];
        db_puts(&b, "*1000\r\n");
        for (int i = 0; i < 1000; i++) {
            char a[32];
            int n = snprintf(a, sizeof(a), "arg-%d", i * 7919);
            db_printf(&b, "$%d\r\n%s\r\n", n, a);
            offs[i] = strs.len;
            db_put(&strs, a, (size_t)n);
            want[i].n = (size_t)n;
        }
        for (int i = 0; i < 1000; i++) want[i].p = strs.p + offs[i];
        check_req("1000-argument command", b.p, b.len, LLONG_MAX, PX_OK, NULL, 1000, want);
        db_free(&b);
        db_free(&strs);
    }
}

static void test_req_multibulk_errors(void)
{
    /* protocol.tcl, in order */
    REQ_ERR("out of range multibulk length (protocol.tcl)", "*3000000000\r\n", "Protocol error: invalid multibulk length");
    REQ_ERR("wrong multibulk payload header (protocol.tcl)", "*3\r\n$3\r\nSET\r\n$1\r\nx\r\nfooz\r\n",
            "Protocol error: expected '$', got 'f'");
    REQ_ERR("negative multibulk payload length (protocol.tcl)", "*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$-10\r\n",
            "Protocol error: invalid bulk length");
    REQ_ERR("out of range multibulk payload length (protocol.tcl)", "*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$2000000000\r\n",
            "Protocol error: invalid bulk length");
    REQ_ERR("non-number multibulk payload length (protocol.tcl)", "*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$blabla\r\n",
            "Protocol error: invalid bulk length");
    REQ_ERR("multibulk not followed by bulk arguments (protocol.tcl)", "*1\r\nfoo\r\n",
            "Protocol error: expected '$', got 'f'");

    /* neighbours, answers taken from redis-server 7.0 */
    REQ_ERR("*2147483648 is over INT_MAX", "*2147483648\r\n", "Protocol error: invalid multibulk length");
    REQ_ERR("$3000000000", "*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$3000000000\r\n", "Protocol error: invalid bulk length");
    REQ_ERR("multibulk count not a number", "*abc\r\n", "Protocol error: invalid multibulk length");
    REQ_ERR("multibulk count empty", "*\r\n", "Protocol error: invalid multibulk length");
    REQ_ERR("multibulk count with leading zero", "*01\r\n", "Protocol error: invalid multibulk length");
    REQ_ERR("multibulk count with plus sign", "*+1\r\n", "Protocol error: invalid multibulk length");
    REQ_ERR("multibulk count with a space", "* 1\r\n", "Protocol error: invalid multibulk length");
    REQ_ERR("multibulk count of 20 digits", "*99999999999999999999\r\n", "Protocol error: invalid multibulk length");
    REQ_ERR("bulk length with leading zero", "*1\r\n$01\r\n", "Protocol error: invalid bulk length");
    REQ_ERR("bulk length -0", "*1\r\n$-0\r\n", "Protocol error: invalid bulk length");
    REQ_ERR("bulk length -1 in a request", "*1\r\n$-1\r\n", "Protocol error: invalid bulk length");
    REQ_ERR("bulk length empty", "*1\r\n$\r\n", "Protocol error: invalid bulk length");
    REQ_ERR("bulk length with plus sign", "*1\r\n$+1\r\n", "Protocol error: invalid bulk length");
    REQ_ERR("bulk length with a space", "*1\r\n$ 1\r\n", "Protocol error: invalid bulk length");
    REQ_ERR("second argument not a bulk", "*2\r\n$4\r\nECHO\r\n:1\r\n", "Protocol error: expected '$', got ':'");
    /*
     * Regression: the error once carried the raw CR or LF, which breaks the
     * "-ERR ...\r\n" reply line.  Redis 7's addReplyErrorFormat turns CR and
     * LF into spaces, and so must we.
     */
    REQ_ERR("regression: CR in 'expected $' error becomes a space", "*1\r\n\r\n",
            "Protocol error: expected '$', got ' '");
    REQ_ERR("regression: LF in 'expected $' error becomes a space", "*1\r\n\n\r\n",
            "Protocol error: expected '$', got ' '");
}

static void test_req_inline(void)
{
    REQ_OK("inline PING", "PING\r\n", B("PING"));
    REQ_OK("inline with bare LF", "PING\n", B("PING"));
    REQ_OK("inline words", "set key value\r\n", B("set"), B("key"), B("value"));
    REQ_OK("inline quotes", "set \"a b\" 'c'\r\n", B("set"), B("a b"), B("c"));
    REQ_OK("inline \\x escapes", "echo \"\\x41\\x4a\\x7e\"\r\n", B("echo"), B("AJ~"));
    REQ_OK("inline \\x00 escape gives a NUL byte", "echo \"a\\x00b\"\r\n", B("echo"), B("a\0b"));
    REQ_OK("inline backslash escapes", "echo \"\\n\\r\\t\\b\\a\\\\\\\"\\q\"\r\n", B("echo"), B("\n\r\t\b\a\\\"q"));
    REQ_OK("inline incomplete \\x is literal", "echo \"\\x4\" \"\\xZZ\"\r\n", B("echo"), B("x4"), B("xZZ"));
    REQ_OK("inline single quotes keep backslashes", "echo 'a\\nb' 'it\\'s'\r\n", B("echo"), B("a\\nb"), B("it's"));
    REQ_OK("inline quote in the middle of a word", "echo a\"b c\"\r\n", B("echo"), B("ab c"));
    REQ_OK("inline empty quoted arguments", "echo \"\" ''\r\n", B("echo"), B(""), B(""));
    REQ_OK("inline tabs and runs of spaces", "  echo\t x   y \t\r\n", B("echo"), B("x"), B("y"));
    REQ_OK("inline CR inside the line separates", "echo a\rb\r\n", B("echo"), B("a"), B("b"));
    REQ_OK("inline starting with $ is inline", "$4\r\n", B("$4"));
    REQ_EMPTY("empty query (protocol.tcl)", "\r\n");
    REQ_EMPTY("empty query, bare LF", "\n");
    REQ_EMPTY("blank inline line", "   \t \r\n");

    REQ_ERR("unbalanced quotes (protocol.tcl)", "set \"\"\"test-key\"\"\" test-value\r\n",
            "Protocol error: unbalanced quotes in request");
    REQ_ERR("unterminated double quote", "echo \"abc\r\n", "Protocol error: unbalanced quotes in request");
    REQ_ERR("unterminated single quote", "echo 'abc\r\n", "Protocol error: unbalanced quotes in request");
    REQ_ERR("closing quote followed by a letter", "echo 'a'b\r\n", "Protocol error: unbalanced quotes in request");
    REQ_ERR("two quoted strings touching", "echo \"a\"\"b\"\r\n", "Protocol error: unbalanced quotes in request");
    REQ_ERR("backslash before the end of line in quotes", "echo \"abc\\\r\n",
            "Protocol error: unbalanced quotes in request");
}

/* Parse one whole request on a fresh parser; returns the result code. */
static int parse_once(px_req_parser *p, const char *buf, size_t len, int unauthenticated)
{
    px_req_parser_init(p, 512LL * 1024 * 1024);
    p->unauthenticated = unauthenticated;
    return px_req_parse(p, buf, len);
}

static void test_req_hostile(void)
{
    px_req_parser p;
    size_t n = 99;

    /* Regression: an inline command whose arguments are all empty copied
     * nothing into scratch, so every argument pointed at NULL and the
     * command lookup ran memchr/memcmp on a null pointer. */
    static const char *const empties[] = {"\"\"\r\n", "''\r\n", "\"\" ''\r\n"};
    for (size_t i = 0; i < sizeof(empties) / sizeof(empties[0]); i++) {
        int rc = parse_once(&p, empties[i], strlen(empties[i]), 0);
        const char *a = rc == PX_OK && p.argc >= 1 ? px_req_arg(&p, empties[i], 0, &n) : NULL;
        ok(rc == PX_OK && a != NULL && n == 0, "regression: inline of only empty arguments (%zu) gives a non-null empty name",
           i);
        px_req_parser_free(&p);
    }

    /* Before authentication: Redis 7's limits and texts. */
    static const char eleven[] = "*11\r\n";
    is_int(parse_once(&p, eleven, sizeof(eleven) - 1, 1), PX_ERR, "unauthenticated: *11 is refused at once");
    is_str(p.errstr, "Protocol error: unauthenticated multibulk length", "... with Redis' text");
    px_req_parser_free(&p);
    is_int(parse_once(&p, eleven, sizeof(eleven) - 1, 0), PX_AGAIN, "authenticated: *11 waits for its arguments");
    px_req_parser_free(&p);
    static const char ten[] = "*10\r\n$4\r\nECHO\r\n";
    is_int(parse_once(&p, ten, sizeof(ten) - 1, 1), PX_AGAIN, "unauthenticated: *10 is allowed");
    px_req_parser_free(&p);
    static const char big[] = "*2\r\n$4\r\nAUTH\r\n$16385\r\n";
    is_int(parse_once(&p, big, sizeof(big) - 1, 1), PX_ERR, "unauthenticated: a bulk of 16385 bytes is refused at its header");
    is_str(p.errstr, "Protocol error: unauthenticated bulk length", "... with Redis' text");
    px_req_parser_free(&p);
    static const char huge[] = "*2\r\n$4\r\nAUTH\r\n$536870912\r\n";
    is_int(parse_once(&p, huge, sizeof(huge) - 1, 1), PX_ERR, "unauthenticated: a 512 MB bulk is refused at its header");
    px_req_parser_free(&p);
    static const char edge[] = "*2\r\n$4\r\nAUTH\r\n$16384\r\n";
    is_int(parse_once(&p, edge, sizeof(edge) - 1, 1), PX_AGAIN, "unauthenticated: a bulk of 16384 bytes is allowed");
    px_req_parser_free(&p);
    is_int(parse_once(&p, big, sizeof(big) - 1, 0), PX_AGAIN, "authenticated: a bulk of 16385 bytes waits for its bytes");
    px_req_parser_free(&p);
    static const char bad[] = "*2\r\n$4\r\nAUTH\r\n$-5\r\n";
    parse_once(&p, bad, sizeof(bad) - 1, 1);
    is_str(p.errstr, "Protocol error: invalid bulk length", "unauthenticated: an invalid length says invalid first, as Redis");
    px_req_parser_free(&p);
}

static void test_req_big(void)
{
    size_t K = PX_INLINE_MAX_SIZE;
    char *b = malloc(K + 200000);
    if (!b) abort();

    /* inline: waiting is fine up to 64 KB without a newline, one byte more is not */
    memset(b, 'A', K + 1);
    check_req("inline of 64KB without newline waits", b, K, LLONG_MAX, PX_AGAIN, NULL, 0, NULL);
    check_req("inline over 64KB without newline", b, K + 1, LLONG_MAX, PX_ERR,
              "Protocol error: too big inline request", 0, NULL);

    /* a line over 64 KB that arrives whole with its newline is served, as by Redis */
    memcpy(b, "echo ", 5);
    memset(b + 5, 'A', 70000);
    memcpy(b + 70005, "\r\n", 2);
    {
        bstr want[] = {B("echo"), {b + 5, 70000}};
        px_req_parser p;
        px_req_parser_init(&p, LLONG_MAX);
        int rc = px_req_parse(&p, b, 70007);
        is_int(rc, PX_OK, "inline line of 70000 bytes arriving whole: PX_OK");
        is_int(p.argc, 2, "inline line of 70000 bytes: argc");
        size_t n = 0;
        const char *a = rc == PX_OK && p.argc == 2 ? px_req_arg(&p, b, 1, &n) : "";
        is_mem(a, n, want[1].p, want[1].n, "inline line of 70000 bytes: second argument");
        px_req_parser_free(&p);
    }

    /* multibulk count line */
    b[0] = '*';
    memset(b + 1, '1', K + 10);
    check_req("mbulk count line of 64KB without \\r waits", b, K, LLONG_MAX, PX_AGAIN, NULL, 0, NULL);
    check_req("mbulk count line over 64KB without \\r", b, K + 1, LLONG_MAX, PX_ERR,
              "Protocol error: too big mbulk count string", 0, NULL);

    /* bulk count line: the 64 KB count starts at the bulk header */
    memcpy(b, "*1\r\n$", 5);
    memset(b + 5, '1', K + 10);
    check_req("bulk count line of 64KB without \\r waits", b, 4 + K, LLONG_MAX, PX_AGAIN, NULL, 0, NULL);
    check_req("bulk count line over 64KB without \\r", b, 4 + K + 1, LLONG_MAX, PX_ERR,
              "Protocol error: too big bulk count string", 0, NULL);
    memcpy(b, "*2\r\n$1\r\na\r\n$", 12);
    memset(b + 12, '1', K + 10);
    check_req("second bulk count line over 64KB without \\r", b, 11 + K + 1, LLONG_MAX, PX_ERR,
              "Protocol error: too big bulk count string", 0, NULL);

    /*
     * protocol.tcl "Protocol desync regression test #1..#3": a stray byte,
     * then "payload" forever.  (The Tcl test sends the word "payload", not
     * its $payload variable, so no newline ever comes.)
     */
    static const char *const seqs[] = {"\x00", "*\x00", "$\x00"};
    static const size_t seqlen[] = {1, 2, 2};
    static const char *const errs[] = {"Protocol error: too big inline request",
                                       "Protocol error: too big mbulk count string",
                                       "Protocol error: too big inline request"};
    for (int i = 0; i < 3; i++) {
        size_t n = seqlen[i];
        memcpy(b, seqs[i], n);
        while (n < K + 100) {
            memcpy(b + n, "payload", 7);
            n += 7;
        }
        char name[64];
        snprintf(name, sizeof(name), "protocol desync regression #%d (protocol.tcl)", i + 1);
        check_req(name, b, n, LLONG_MAX, PX_ERR, errs[i], 0, NULL);
    }

    /* a bulk bigger than 64 KB is fine: only count lines are limited */
    {
        size_t blen = 100000;
        int h = snprintf(b, 64, "*2\r\n$3\r\nSET\r\n$%zu\r\n", blen);
        for (size_t i = 0; i < blen; i++) b[h + i] = (char)('a' + i % 26);
        memcpy(b + h + blen, "\r\n", 2);
        bstr want[] = {B("SET"), {b + h, blen}};
        check_req("bulk of 100000 bytes", b, (size_t)h + blen + 2, LLONG_MAX, PX_OK, NULL, 2, want);
    }
    free(b);
}

/* ---------------------------------------------------- request pipelines */

typedef struct pcmd {
    size_t start, len;  /* in the pipeline */
    int argc;
    size_t arg0;        /* index of its first argument in the argument list */
} pcmd;

typedef struct pipeline {
    dbuf wire;
    dbuf bytes;         /* expected argument bytes, back to back */
    size_t *aoff, *alen;
    size_t nargs, acap;
    pcmd *cmds;
    int ncmds;
} pipeline;

static void pl_arg(pipeline *pl, const char *s, size_t n)
{
    if (pl->nargs == pl->acap) {
        pl->acap = pl->acap ? pl->acap * 2 : 256;
        pl->aoff = realloc(pl->aoff, pl->acap * sizeof(size_t));
        pl->alen = realloc(pl->alen, pl->acap * sizeof(size_t));
        if (!pl->aoff || !pl->alen) abort();
    }
    pl->aoff[pl->nargs] = pl->bytes.len;
    pl->alen[pl->nargs] = n;
    pl->nargs++;
    db_put(&pl->bytes, s, n);
}

/* Append one random command: multibulk with binary arguments, inline with quoting, or empty. */
static void pl_add_random(pipeline *pl)
{
    pcmd c = {pl->wire.len, 0, 0, pl->nargs};
    int kind = (int)rng_below(10);
    if (kind < 6) {
        int argc = 1 + (int)rng_below(8);
        db_printf(&pl->wire, "*%d\r\n", argc);
        for (int i = 0; i < argc; i++) {
            size_t n = rng_below(10) == 0 ? 100 + rng_below(3000) : rng_below(40);
            char *a = malloc(n + 1);
            static const char special[] = "\r\n\0$*\"' \\";
            for (size_t j = 0; j < n; j++)
                a[j] = rng_below(4) == 0 ? special[rng_below(sizeof(special) - 1)] : (char)rng_below(256);
            db_printf(&pl->wire, "$%zu\r\n", n);
            db_put(&pl->wire, a, n);
            db_puts(&pl->wire, "\r\n");
            pl_arg(pl, a, n);
            free(a);
        }
        c.argc = argc;
    } else if (kind < 9) {
        int argc = 1 + (int)rng_below(6);
        for (int i = 0; i < argc; i++) {
            char raw[64], dec[64];
            size_t rn = 0, dn = 0;
            int style = (int)rng_below(3);
            int words = 1 + (int)rng_below(12);
            if (i) raw[rn++] = rng_below(2) ? ' ' : '\t';
            if (style == 1) raw[rn++] = '"';
            if (style == 2) raw[rn++] = '\'';
            for (int j = 0; j < words; j++) {
                int r = (int)rng_below(10);
                if (style == 1 && r == 0) {
                    memcpy(raw + rn, "\\x41", 4), rn += 4, dec[dn++] = 'A';
                } else if (style == 1 && r == 1) {
                    memcpy(raw + rn, "\\n", 2), rn += 2, dec[dn++] = '\n';
                } else if (style == 1 && r == 2) {
                    memcpy(raw + rn, "\\\"", 2), rn += 2, dec[dn++] = '"';
                } else if (style == 2 && r == 0) {
                    memcpy(raw + rn, "\\'", 2), rn += 2, dec[dn++] = '\'';
                } else if (style != 0 && r == 3) {
                    raw[rn++] = ' ', dec[dn++] = ' ';
                } else {
                    char ch = (char)('a' + rng_below(26));
                    raw[rn++] = ch, dec[dn++] = ch;
                }
            }
            if (style == 1) raw[rn++] = '"';
            if (style == 2) raw[rn++] = '\'';
            db_put(&pl->wire, raw, rn);
            pl_arg(pl, dec, dn);
        }
        db_puts(&pl->wire, rng_below(3) ? "\r\n" : "\n");
        c.argc = argc;
    } else {
        static const char *const empties[] = {"*0\r\n", "*-1\r\n", "\r\n", "\n", "  \r\n"};
        db_puts(&pl->wire, empties[rng_below(5)]);
    }
    c.len = pl->wire.len - c.start;
    pl->cmds = realloc(pl->cmds, sizeof(pcmd) * (size_t)(pl->ncmds + 1));
    if (!pl->cmds) abort();
    pl->cmds[pl->ncmds++] = c;
}

static void pl_free(pipeline *pl)
{
    db_free(&pl->wire);
    db_free(&pl->bytes);
    free(pl->aoff);
    free(pl->alen);
    free(pl->cmds);
    memset(pl, 0, sizeof(*pl));
}

/* Does the parsed command match pl->cmds[i]?  On mismatch, say why in why. */
static int pl_match(const pipeline *pl, int i, const px_req_parser *p, const char *buf, char *why, size_t whylen)
{
    const pcmd *c = &pl->cmds[i];
    if (p->pos != c->len) return snprintf(why, whylen, "command %d: pos %zu, want %zu", i, p->pos, c->len), 0;
    if (p->argc != c->argc) return snprintf(why, whylen, "command %d: argc %d, want %d", i, p->argc, c->argc), 0;
    for (int a = 0; a < c->argc; a++) {
        size_t n;
        const char *s = px_req_arg(p, buf, a, &n);
        size_t k = c->arg0 + (size_t)a;
        if (n != pl->alen[k] || memcmp(s, pl->bytes.p + pl->aoff[k], n) != 0)
            return snprintf(why, whylen, "command %d: argument %d differs", i, a), 0;
    }
    return 1;
}

/*
 * Parse the whole pipeline as a connection would: bytes arrive in steps
 * (mode FEED_WHOLE: all at once; FEED_SPLIT: random; FEED_BYTES_SAME: one at
 * a time); each command is parsed from its first byte, then the parser is
 * reset and the start advances by p->pos.
 */
static int pl_run(const pipeline *pl, int mode, uint64_t seed, char *why, size_t whylen)
{
    px_req_parser p;
    px_req_parser_init(&p, LLONG_MAX);
    rng_seed(seed);
    size_t total = pl->wire.len, got = mode == FEED_WHOLE ? total : 0, off = 0;
    int i = 0, good = 1;
    while (i < pl->ncmds) {
        int rc = px_req_parse(&p, pl->wire.p + off, got - off);
        if (rc == PX_AGAIN) {
            if (got == total) {
                snprintf(why, whylen, "command %d: PX_AGAIN with all %zu bytes in", i, total - off);
                good = 0;
                break;
            }
            if (p.need <= got - off || p.need > pl->cmds[i].len) {
                snprintf(why, whylen, "command %d: need %zu with %zu bytes in, command is %zu", i, p.need, got - off,
                         pl->cmds[i].len);
                good = 0;
                break;
            }
            got += mode == FEED_SPLIT ? rng_step(total - got) : 1;
            continue;
        }
        if (rc == PX_ERR) {
            snprintf(why, whylen, "command %d: PX_ERR '%s'", i, p.errstr ? p.errstr : "");
            good = 0;
            break;
        }
        if (!pl_match(pl, i, &p, pl->wire.p + off, why, whylen)) {
            good = 0;
            break;
        }
        off += p.pos;
        px_req_parser_reset(&p);
        i++;
    }
    if (good && off != total) {
        snprintf(why, whylen, "consumed %zu of %zu bytes", off, total);
        good = 0;
    }
    px_req_parser_free(&p);
    return good;
}

static void test_req_pipeline(void)
{
    pipeline pl = {0};
    char why[200] = "";
    /* fixed pipeline first: each kind of command next to each other */
    static const char fixed[] = "PING\r\n*1\r\n$4\r\nPING\r\n\r\n*0\r\nset a b\n*2\r\n$3\r\nGET\r\n$1\r\na\r\n*-1\r\nQUIT\r\n";
    {
        px_req_parser p;
        px_req_parser_init(&p, LLONG_MAX);
        static const size_t lens[] = {6, 14, 2, 4, 8, 20, 5, 6};
        static const int argcs[] = {1, 1, 0, 0, 3, 2, 0, 1};
        size_t off = 0;
        int good = 1;
        for (int i = 0; i < 8 && good; i++) {
            int rc = px_req_parse(&p, fixed + off, sizeof(fixed) - 1 - off);
            if (rc != PX_OK || p.pos != lens[i] || p.argc != argcs[i]) {
                diag("command %d: rc %d pos %zu argc %d", i, rc, p.pos, p.argc);
                good = 0;
            }
            off += p.pos;
            px_req_parser_reset(&p);
        }
        ok(good && off == sizeof(fixed) - 1, "fixed pipeline of 8 commands: lengths and argc");
        px_req_parser_free(&p);
    }

    rng_seed(42);
    for (int i = 0; i < 600; i++) pl_add_random(&pl);
    diag("random pipeline: %d commands, %zu bytes, %zu arguments", pl.ncmds, pl.wire.len, pl.nargs);
    if (!ok(pl_run(&pl, FEED_WHOLE, 0, why, sizeof(why)), "pipeline of 600 commands in one buffer")) diag("  %s", why);
    int bad = 0;
    for (int s = 1; s <= 20; s++) {
        if (!pl_run(&pl, FEED_SPLIT, (uint64_t)s, why, sizeof(why))) {
            if (!bad) diag("  seed %d: %s", s, why);
            bad++;
        }
    }
    ok(bad == 0, "pipeline of 600 commands arriving in random splits, 20 seeds (%d failed)", bad);
    if (!ok(pl_run(&pl, FEED_BYTES_SAME, 0, why, sizeof(why)), "pipeline of 600 commands arriving a byte at a time"))
        diag("  %s", why);
    pl_free(&pl);
}

/* ------------------------------------------------------ reply scanning */

typedef struct reply_out {
    int rc;
    size_t pos, need;
    char need_bad[200];
} reply_out;

static void reply_feed(reply_out *o, const char *buf, size_t total, int mode, uint64_t seed, size_t bound)
{
    px_reply_scanner s;
    px_reply_scanner_init(&s);
    memset(o, 0, sizeof(*o));
    rng_seed(seed);
    size_t len = mode == FEED_WHOLE ? total : 0;
    char *copy = NULL;
    int rc;
    for (;;) {
        const char *b = buf;
        if (mode == FEED_BYTES) {
            free(copy);
            copy = malloc(len ? len : 1);
            if (!copy) abort();
            memcpy(copy, buf, len);
            b = copy;
        }
        rc = px_reply_scan(&s, b, len);
        if (rc != PX_AGAIN || len >= total) break;
        if (!o->need_bad[0] && (s.need <= len || s.need > bound))
            snprintf(o->need_bad, sizeof(o->need_bad), "%s: PX_AGAIN at len %zu with need %zu (reply is %zu bytes)",
                     feed_names[mode], len, s.need, bound);
        switch (mode) {
        case FEED_SPLIT: len += rng_step(total - len); break;
        case FEED_NEED: len = s.need > len ? (s.need < total ? s.need : total) : len + 1; break;
        default: len++; break;
        }
    }
    free(copy);
    o->rc = rc;
    o->pos = rc == PX_OK ? s.pos : 0;
    o->need = rc == PX_AGAIN ? s.need : 0;
    px_reply_scanner_free(&s);
}

static const char *rc_name(int rc) { return rc == PX_OK ? "PX_OK" : rc == PX_ERR ? "PX_ERR" : "PX_AGAIN"; }

/*
 * One reply fed four ways.  PX_OK: buf is exactly one reply, and with another
 * reply after it the scan must still stop at its end.  PX_ERR: not RESP.
 * PX_AGAIN: incomplete.
 */
static void check_reply(const char *name, const char *buf, size_t len, int want_rc)
{
    reply_out w, o;
    size_t bound = want_rc == PX_AGAIN ? SIZE_MAX : len;
    reply_feed(&w, buf, len, FEED_WHOLE, 0, bound);
    if (!ok(w.rc == want_rc, "%s: whole: %s", name, rc_name(want_rc))) diag("  got %s", rc_name(w.rc));
    if (want_rc == PX_OK) {
        is_int(w.pos, len, "%s: whole: pos is the reply's length", name);
        char *two = malloc(len + 16);
        memcpy(two, buf, len);
        memcpy(two + len, "+NEXT\r\n", 7);
        px_reply_scanner s;
        px_reply_scanner_init(&s);
        int rc = px_reply_scan(&s, two, len + 7);
        ok(rc == PX_OK && s.pos == len, "%s: followed by another reply: stops at its end (rc %d pos %zu)", name, rc,
           s.pos);
        px_reply_scanner_free(&s);
        free(two);
    } else if (want_rc == PX_AGAIN) {
        ok(w.need > len, "%s: whole: need (%zu) asks for more than the %zu bytes given", name, w.need, len);
    }
    int bad = 0, seeds = len > 8192 ? 3 : 40;
    for (int s = 1; s <= seeds; s++) {
        reply_feed(&o, buf, len, FEED_SPLIT, (uint64_t)s, bound);
        if (o.rc != w.rc || o.pos != w.pos || o.need_bad[0]) {
            if (!bad) diag("  seed %d: %s pos %zu %s", s, rc_name(o.rc), o.pos, o.need_bad);
            bad++;
        }
    }
    ok(bad == 0, "%s: %d random splits agree with whole, need is a lower bound (%d differ)", name, seeds, bad);
    static const int modes[] = {FEED_BYTES, FEED_NEED};
    for (int m = 0; m < 2; m++) {
        int mode = modes[m] == FEED_BYTES && len > 8192 ? FEED_BYTES_SAME : modes[m];
        reply_feed(&o, buf, len, mode, 0, bound);
        if (!ok(o.rc == w.rc && o.pos == w.pos && !o.need_bad[0], "%s: %s agrees with whole, need is a lower bound",
                name, feed_names[mode]))
            diag("  got %s pos %zu %s", rc_name(o.rc), o.pos, o.need_bad);
    }
}

#define REPLY_OK(name, s) check_reply(name, L(s), PX_OK)
#define REPLY_ERR(name, s) check_reply(name, L(s), PX_ERR)
#define REPLY_AGAIN(name, s) check_reply(name, L(s), PX_AGAIN)

static void nest(dbuf *b, const char *open, int levels, const char *leaf)
{
    for (int i = 0; i < levels; i++) db_puts(b, open);
    db_puts(b, leaf);
}

static void test_reply_resp2(void)
{
    REPLY_OK("+OK", "+OK\r\n");
    REPLY_OK("empty simple string", "+\r\n");
    REPLY_OK("-ERR", "-ERR unknown command 'foo'\r\n");
    REPLY_OK(":integer", ":12345\r\n");
    REPLY_OK(":negative", ":-1\r\n");
    REPLY_OK("$bulk", "$5\r\nhello\r\n");
    REPLY_OK("$empty bulk", "$0\r\n\r\n");
    REPLY_OK("$bulk holding CR LF and RESP", "$14\r\n\r\n*1\r\n$1\r\nx\r\n\0\r\n");
    REPLY_OK("$-1 null bulk", "$-1\r\n");
    REPLY_OK("*-1 null array", "*-1\r\n");
    REPLY_OK("*0 empty array", "*0\r\n");
    REPLY_OK("array of mixed", "*5\r\n$3\r\nfoo\r\n:1\r\n+OK\r\n-ERR x\r\n$-1\r\n");
    REPLY_OK("array holding null arrays", "*3\r\n*-1\r\n*0\r\n$-1\r\n");
    REPLY_OK("nested arrays", "*2\r\n*2\r\n:1\r\n:2\r\n*1\r\n*1\r\n$1\r\na\r\n");
    /* COMMAND INFO set, as redis-server 7.0 sends it */
    REPLY_OK("COMMAND INFO set from redis 7.0",
             "*1\r\n*10\r\n$3\r\nset\r\n:-3\r\n*2\r\n+write\r\n+denyoom\r\n:1\r\n:1\r\n:1\r\n*3\r\n"
             "+@write\r\n+@string\r\n+@slow\r\n*0\r\n*1\r\n*8\r\n$5\r\nnotes\r\n$48\r\n"
             "RW and ACCESS due to the optional `GET` argument\r\n$5\r\nflags\r\n*4\r\n+RW\r\n"
             "+access\r\n+update\r\n+variable_flags\r\n$12\r\nbegin_search\r\n*4\r\n$4\r\ntype\r\n"
             "$5\r\nindex\r\n$4\r\nspec\r\n*2\r\n$5\r\nindex\r\n:1\r\n$9\r\nfind_keys\r\n*4\r\n$4\r\n"
             "type\r\n$5\r\nrange\r\n$4\r\nspec\r\n*6\r\n$7\r\nlastkey\r\n:0\r\n$7\r\nkeystep\r\n"
             ":1\r\n$5\r\nlimit\r\n:0\r\n*0\r\n");

    /* deeper than hiredis 0.14's 7 levels, and around the scanner's inline stack */
    static const int depths[] = {8, 20, PX_REPLY_INLINE_DEPTH, PX_REPLY_INLINE_DEPTH + 1, 64, 65, 1001};
    for (int i = 0; i < (int)(sizeof(depths) / sizeof(depths[0])); i++) {
        dbuf b = {0};
        char name[80];
        nest(&b, "*1\r\n", depths[i], ":1\r\n");
        snprintf(name, sizeof(name), "%d nested arrays", depths[i]);
        check_reply(name, b.p, b.len, PX_OK);
        db_free(&b);
    }
    {
        dbuf b = {0};
        nest(&b, "*1\r\n", PX_REPLY_INLINE_DEPTH, "*0\r\n");
        check_reply("empty array at the deepest level does not count as a level", b.p, b.len, PX_OK);
        db_free(&b);
        nest(&b, "*1\r\n", PX_REPLY_INLINE_DEPTH, "*-1\r\n");
        check_reply("null array at the deepest level", b.p, b.len, PX_OK);
        db_free(&b);
        /* what Redis 7.0 sends for EVAL "local t = {} local c = t for i=1,1000
         * do local n = {} c[1] = n c = n end return t" 0: 1000 levels of *1
         * ending in *0 (it was a protocol error past 64 levels) */
        nest(&b, "*1\r\n", 1000, "*0\r\n");
        check_reply("a script's table nested 1000 deep", b.p, b.len, PX_OK);
        db_free(&b);
        nest(&b, "*2\r\n:7\r\n", 40, "$1\r\nx\r\n");
        check_reply("40 levels with a sibling at each", b.p, b.len, PX_OK);
        db_free(&b);
        /* siblings after a deep dive: the scanner must climb back correctly */
        db_puts(&b, "*3\r\n");
        nest(&b, "*1\r\n", 30, ":1\r\n");
        nest(&b, "*1\r\n", 30, ":2\r\n");
        db_puts(&b, "+tail\r\n");
        check_reply("two deep siblings then a leaf", b.p, b.len, PX_OK);
        db_free(&b);
    }

    /* incomplete */
    REPLY_AGAIN("bulk missing its payload", "$5\r\nhel");
    REPLY_AGAIN("array missing elements", "*3\r\n:1\r\n:2\r\n");
    REPLY_AGAIN("line without CR LF", "+OK");
    REPLY_AGAIN("nested array missing the last leaf", "*2\r\n*2\r\n:1\r\n:2\r\n");
}

static void test_reply_resp3(void)
{
    /* HELLO 3 and DEBUG PROTOCOL <type>, as redis-server 7.0 sends them */
    REPLY_OK("HELLO 3 map from redis 7.0",
             "%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n$5\r\nproto\r\n:3\r\n"
             "$2\r\nid\r\n:3\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n"
             "$7\r\nmodules\r\n*0\r\n");
    REPLY_OK("double", ",3.141\r\n");
    REPLY_OK("double inf", ",-inf\r\n");
    REPLY_OK("big number", "(1234567999999999999999999999999999999\r\n");
    REPLY_OK("null", "_\r\n");
    REPLY_OK("boolean true", "#t\r\n");
    REPLY_OK("boolean false", "#f\r\n");
    REPLY_OK("set", "~3\r\n:0\r\n:1\r\n:2\r\n");
    REPLY_OK("map counts 2N elements", "%3\r\n:0\r\n#f\r\n:1\r\n#t\r\n:2\r\n#f\r\n");
    REPLY_OK("attribute then its reply (DEBUG PROTOCOL attrib)",
             "|1\r\n$14\r\nkey-popularity\r\n*2\r\n$7\r\nkey:123\r\n:90\r\n"
             "$39\r\nSome real reply following the attribute\r\n");
    REPLY_OK("push (DEBUG PROTOCOL push)", ">2\r\n$16\r\nserver-cpu-usage\r\n:42\r\n");
    REPLY_OK("verbatim string", "=29\r\ntxt:This is a verbatim\nstring\r\n");
    REPLY_OK("blob error", "!21\r\nSYNTAX invalid syntax\r\n");
    REPLY_OK("empty map", "%0\r\n");
    REPLY_OK("empty set", "~0\r\n");
    REPLY_OK("map of aggregates",
             "%2\r\n+first\r\n*2\r\n:1\r\n:2\r\n~1\r\n+k\r\n%1\r\n+a\r\n%1\r\n+b\r\n_\r\n");
    /* the RESP3 spec's examples */
    REPLY_OK("attribute whose value is a map, then an array",
             "|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.1923\r\n$1\r\nb\r\n,0.0012\r\n"
             "*2\r\n:2039123\r\n:9543892\r\n");
    REPLY_OK("attribute inside an array is not an element", "*3\r\n:1\r\n:2\r\n|1\r\n+ttl\r\n:3600\r\n:3\r\n");
    REPLY_OK("attribute annotating an aggregate inside an array",
             "*2\r\n|1\r\n+a\r\n+b\r\n*2\r\n:1\r\n:2\r\n:3\r\n");
    REPLY_OK("attribute annotating an attribute's reply", "|1\r\n+a\r\n+b\r\n|1\r\n+c\r\n+d\r\n:1\r\n");
    REPLY_OK("empty attribute then a reply", "|0\r\n:1\r\n");
    REPLY_OK("push with a map inside", ">3\r\n$10\r\ninvalidate\r\n*1\r\n$3\r\nkey\r\n%1\r\n+x\r\n+y\r\n");
    {
        dbuf b = {0};
        nest(&b, "%1\r\n+k\r\n", 200, "+v\r\n");
        check_reply("maps nested 200 deep", b.p, b.len, PX_OK);
        db_free(&b);
        nest(&b, "~1\r\n", 500, "#t\r\n");
        check_reply("sets nested 500 deep", b.p, b.len, PX_OK);
        db_free(&b);
    }
    REPLY_AGAIN("attribute without the reply it annotates", "|1\r\n+a\r\n+b\r\n");
    REPLY_AGAIN("map with a key but no value", "%1\r\n+k\r\n");
    REPLY_AGAIN("verbatim missing its payload", "=15\r\ntxt:Some");
}

static void test_reply_errors(void)
{
    REPLY_ERR("unknown type byte", "?x\r\n");
    REPLY_ERR("empty line", "\r\n");
    REPLY_ERR("bulk length not a number", "$abc\r\n");
    REPLY_ERR("bulk length empty", "$\r\n");
    REPLY_ERR("bulk length -2", "$-2\r\n");
    REPLY_ERR("bulk length with leading zero", "$01\r\nx\r\n");
    REPLY_ERR("bulk length with trailing space", "$1 \r\nx\r\n");
    REPLY_ERR("streamed bulk $? (Redis never sends it)", "$?\r\n;1\r\na\r\n;0\r\n");
    REPLY_ERR("blob error -1", "!-1\r\n");
    REPLY_ERR("verbatim -1", "=-1\r\n");
    REPLY_ERR("array length -2", "*-2\r\n");
    REPLY_ERR("array length not a number", "*abc\r\n");
    REPLY_ERR("array length over INT_MAX", "*3000000000\r\n");
    REPLY_ERR("map -1", "%-1\r\n");
    REPLY_ERR("set -1", "~-1\r\n");
    REPLY_ERR("push -1", ">-1\r\n");
    REPLY_ERR("attribute -1", "|-1\r\n");
    REPLY_ERR("bad type inside an array", "*2\r\n:1\r\n?x\r\n");
    REPLY_ERR("bad length inside a map", "%1\r\n+a\r\n$x\r\n");
    REPLY_ERR("inline text is not a reply", "hello world\r\n");
}

/* Random replies of every type; the generator knows each one's length. */
static void gen_reply(dbuf *b, int depth)
{
    int agg_ok = depth < 6;
    int t = (int)rng_below(agg_ok ? 17 : 12);
    size_t n;
    switch (t) {
    case 0: db_printf(b, "+%s\r\n", rng_below(2) ? "OK" : ""); break;
    case 1: db_puts(b, "-ERR something went wrong\r\n"); break;
    case 2: {
        long long v = (long long)(rng() >> 1);
        db_printf(b, ":%lld\r\n", rng_below(2) ? v : -v);
        break;
    }
    case 3:
    case 4: /* bulk with arbitrary bytes, sometimes empty or large */
        n = rng_below(8) == 0 ? rng_below(5000) : rng_below(30);
        db_printf(b, "$%zu\r\n", n);
        for (size_t i = 0; i < n; i++) {
            char ch = rng_below(3) == 0 ? "\r\n*$"[rng_below(4)] : (char)rng_below(256);
            db_put(b, &ch, 1);
        }
        db_puts(b, "\r\n");
        break;
    case 5: db_puts(b, rng_below(2) ? "$-1\r\n" : "*-1\r\n"); break;
    case 6: db_puts(b, "_\r\n"); break;
    case 7: db_puts(b, rng_below(2) ? ",1.5e-3\r\n" : ",nan\r\n"); break;
    case 8: db_puts(b, rng_below(2) ? "#t\r\n" : "#f\r\n"); break;
    case 9: db_puts(b, "!12\r\nERR\r\nboom\r\n!\r\n"); break;
    case 10: db_puts(b, "=8\r\ntxt:a\r\nb\r\n"); break;
    case 11: db_puts(b, "(-340282366920938463463374607431768211456\r\n"); break;
    case 12:
    case 13: { /* array, set or push */
        static const char types[] = "*~>";
        n = rng_below(5);
        db_printf(b, "%c%zu\r\n", types[rng_below(3)], n);
        for (size_t i = 0; i < n; i++) gen_reply(b, depth + 1);
        break;
    }
    case 14:
    case 15: /* map */
        n = rng_below(4);
        db_printf(b, "%%%zu\r\n", n);
        for (size_t i = 0; i < 2 * n; i++) gen_reply(b, depth + 1);
        break;
    default: /* attribute, then the reply it annotates */
        n = rng_below(3);
        db_printf(b, "|%zu\r\n", n);
        for (size_t i = 0; i < 2 * n; i++) gen_reply(b, depth + 1);
        gen_reply(b, depth + 1);
        break;
    }
}

static void test_reply_pipeline(void)
{
    dbuf b = {0};
    size_t lens[1000];
    rng_seed(7);
    for (int i = 0; i < 1000; i++) {
        size_t before = b.len;
        gen_reply(&b, 0);
        lens[i] = b.len - before;
    }
    diag("random reply pipeline: 1000 replies, %zu bytes", b.len);

    /* one reply at a time, each checked whole and byte by byte against its generated length */
    int bad = 0;
    size_t off = 0;
    for (int i = 0; i < 1000; i++) {
        px_reply_scanner s;
        px_reply_scanner_init(&s);
        int rc = px_reply_scan(&s, b.p + off, b.len - off);
        px_reply_scanner_free(&s);
        if (rc != PX_OK || s.pos != lens[i]) {
            if (!bad) diag("  reply %d: %s pos %zu, want %zu", i, rc_name(rc), s.pos, lens[i]);
            bad++;
        }
        off += lens[i];
    }
    ok(bad == 0, "1000 random replies in one buffer, each scanned to its end (%d wrong)", bad);

    /* arriving in random splits and a byte at a time, as from a socket */
    for (int mode = 0; mode < 2; mode++) {
        bad = 0;
        for (int seed = 1; seed <= (mode ? 1 : 10); seed++) {
            rng_seed((uint64_t)seed);
            px_reply_scanner s;
            px_reply_scanner_init(&s);
            size_t got = 0;
            off = 0;
            int i = 0;
            while (i < 1000) {
                int rc = px_reply_scan(&s, b.p + off, got - off);
                if (rc == PX_AGAIN) {
                    if (got == b.len || s.need <= got - off || s.need > lens[i]) {
                        if (!bad) diag("  seed %d reply %d: need %zu with %zu in, reply is %zu", seed, i, s.need,
                                       got - off, lens[i]);
                        bad++;
                        break;
                    }
                    got += mode ? 1 : rng_step(b.len - got);
                    continue;
                }
                if (rc != PX_OK || s.pos != lens[i]) {
                    if (!bad) diag("  seed %d reply %d: %s pos %zu, want %zu", seed, i, rc_name(rc), s.pos, lens[i]);
                    bad++;
                    break;
                }
                off += s.pos;
                px_reply_scanner_reset(&s);
                i++;
            }
            px_reply_scanner_free(&s);
        }
        ok(bad == 0, "1000 random replies arriving %s", mode ? "a byte at a time" : "in random splits (10 seeds)");
    }
    db_free(&b);
}

/*
 * A reply nested 100000 levels deep (regression: the scanner refused more
 * than 64, which dropped the shared connection and every request on it).
 * Nesting is bounded only by memory, as in Redis.  Fed whole, in random
 * splits and a byte at a time; the buffer grows in place, as the upstream's
 * does, so byte-by-byte feeding stays linear.
 */
static void test_reply_deep(void)
{
    enum { DEEP = 100000 };
    dbuf b = {0};
    db_puts(&b, "*2\r\n");
    nest(&b, "*1\r\n", DEEP, ":1\r\n");
    nest(&b, "%1\r\n+k\r\n", 1000, "_\r\n"); /* climbing back, then down again */
    size_t total = b.len;
    db_puts(&b, "+NEXT\r\n");
    for (int mode = 0; mode < 3; mode++) {
        px_reply_scanner s;
        px_reply_scanner_init(&s);
        rng_seed(7);
        size_t len = mode == 0 ? b.len : 0;
        int rc, bad_need = 0;
        for (;;) {
            rc = px_reply_scan(&s, b.p, len);
            if (rc != PX_AGAIN || len >= b.len) break;
            if (s.need <= len || s.need > total) bad_need++;
            len += mode == 1 ? rng_step(b.len - len) : 1;
        }
        ok(rc == PX_OK && s.pos == total && !bad_need, "reply nested %d deep, fed %s: one reply of %zu bytes (%s, pos %zu, %d bad needs)",
           DEEP + 1, mode == 0 ? "whole" : mode == 1 ? "in random splits" : "a byte at a time", total, rc_name(rc), s.pos,
           bad_need);
        px_reply_scanner_reset(&s);
        ok(s.depth == 0 && s.pos == 0, "... reset forgets it");
        rc = px_reply_scan(&s, b.p + total, b.len - total);
        ok(rc == PX_OK && s.pos == 7, "... and the scanner then reads the next reply");
        px_reply_scanner_free(&s);
    }
    /* a deep reply cut short stays incomplete, however deep */
    px_reply_scanner s;
    px_reply_scanner_init(&s);
    ok(px_reply_scan(&s, b.p, total - 3) == PX_AGAIN, "the deep reply missing its last bytes: PX_AGAIN");
    px_reply_scanner_free(&s);
    db_free(&b);
}

/* ------------------------------------------------------ px_reply_string */

static void check_string(const char *name, const char *buf, size_t len, int want_rc, const char *want, size_t wantlen)
{
    /* exact-size copy: a read past len shows under ASan */
    char *copy = malloc(len ? len : 1);
    memcpy(copy, buf, len);
    const char *out = NULL;
    size_t outlen = 0;
    int rc = px_reply_string(copy, len, &out, &outlen);
    is_int(rc, want_rc, "px_reply_string %s: returns %d", name, want_rc);
    if (want_rc == 0 && rc == 0) {
        ok(out >= copy && out + outlen <= copy + len, "px_reply_string %s: points into the buffer", name);
        is_mem(out, outlen, want, wantlen, "px_reply_string %s: payload", name);
    }
    free(copy);
}
#define STR_OK(name, s, want) check_string(name, L(s), 0, want, sizeof(want) - 1)
#define STR_NO(name, s) check_string(name, L(s), -1, NULL, 0)

static void test_reply_string(void)
{
    STR_OK("+OK", "+OK\r\n", "OK");
    STR_OK("empty simple string", "+\r\n", "");
    STR_OK("-ERR", "-ERR bad thing\r\n", "ERR bad thing");
    STR_OK("$bulk", "$5\r\nhello\r\n", "hello");
    STR_OK("$empty bulk", "$0\r\n\r\n", "");
    STR_OK("$binary bulk", "$6\r\na\r\nb\0c\r\n", "a\r\nb\0c");
    STR_OK("INFO-like bulk", "$30\r\n# Server\r\nredis_version:7.0.15\r\n", "# Server\r\nredis_version:7.0.15");
    STR_OK("=verbatim drops the txt: prefix", "=29\r\ntxt:This is a verbatim\nstring\r\n", "This is a verbatim\nstring");
    STR_NO(":integer", ":1\r\n");
    STR_NO("*array", "*1\r\n$1\r\na\r\n");
    STR_NO("$-1", "$-1\r\n");
    STR_NO("_ null", "_\r\n");
    STR_NO("%map", "%0\r\n");
    STR_NO("truncated bulk", "$5\r\nhel");
    STR_NO("simple string without CR LF", "+OK");
    STR_NO("bad bulk length", "$x\r\nabc\r\n");
    STR_NO("empty buffer", "");
}

/* ------------------------------------------------------ px_string2ll */

static void check_ll(const char *s, int want_ok, long long want)
{
    size_t n = strlen(s);
    char *copy = malloc(n ? n : 1); /* not NUL-terminated: the length is the contract */
    memcpy(copy, s, n);
    long long v = 12345;
    int r = px_string2ll(copy, n, &v);
    if (want_ok)
        ok(r == 1 && v == want, "px_string2ll('%s') = %lld (got ok %d, %lld)", s, want, r, v);
    else
        ok(r == 0, "px_string2ll('%s') is rejected (got ok %d, %lld)", s, r, v);
    free(copy);
}

static void test_string2ll(void)
{
    check_ll("0", 1, 0);
    check_ll("1", 1, 1);
    check_ll("-1", 1, -1);
    check_ll("12345", 1, 12345);
    check_ll("9223372036854775807", 1, LLONG_MAX);
    check_ll("-9223372036854775808", 1, LLONG_MIN);
    check_ll("9223372036854775808", 0, 0);
    check_ll("-9223372036854775809", 0, 0);
    check_ll("18446744073709551615", 0, 0);
    check_ll("18446744073709551616", 0, 0);
    check_ll("123456789012345678901", 0, 0);
    check_ll("", 0, 0);
    check_ll("-", 0, 0);
    check_ll("-0", 0, 0);
    check_ll("00", 0, 0);
    check_ll("01", 0, 0);
    check_ll("+1", 0, 0);
    check_ll(" 1", 0, 0);
    check_ll("1 ", 0, 0);
    check_ll("1a", 0, 0);
    check_ll("0x10", 0, 0);
    check_ll("1.0", 0, 0);
    {
        long long v = 0;
        int r = px_string2ll("4096xyz", 4, &v);
        ok(r == 1 && v == 4096, "px_string2ll reads only len bytes ('4096' of '4096xyz')");
    }
}

int main(void)
{
    test_req_multibulk();
    test_req_multibulk_errors();
    test_req_inline();
    test_req_hostile();
    test_req_big();
    test_req_pipeline();
    test_reply_resp2();
    test_reply_resp3();
    test_reply_errors();
    test_reply_pipeline();
    test_reply_deep();
    test_reply_string();
    test_string2ll();
    done_testing();
    return exit_status();
}
