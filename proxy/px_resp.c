/*
 * px_resp: request parser and reply scanner.  See px_resp.h.
 *
 * The request parser follows Redis 7's networking.c line by line in what it
 * accepts and what it answers, because clients and tests compare the two:
 * the first byte decides multibulk ('*') or inline; lengths are read with
 * string2ll's strictness; a bulk's trailing two bytes are skipped unchecked,
 * as Redis does.  No allocation is sized from a length the client declared:
 * argv grows as arguments arrive.
 */
#include "proxy/px_resp.h"

#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "proxy/px_buf.h"

int px_string2ll(const char *s, size_t slen, long long *value)
{
    const char *p = s;
    size_t plen = 0;
    int negative = 0;
    unsigned long long v;

    if (plen == slen || slen > 20) return 0;
    if (slen == 1 && p[0] == '0') {
        *value = 0;
        return 1;
    }
    if (p[0] == '-') {
        negative = 1;
        p++;
        plen++;
        if (plen == slen) return 0;
    }
    if (p[0] >= '1' && p[0] <= '9') {
        v = (unsigned long long)(p[0] - '0');
        p++;
        plen++;
    } else {
        return 0;
    }
    while (plen < slen && p[0] >= '0' && p[0] <= '9') {
        if (v > (ULLONG_MAX / 10)) return 0;
        v *= 10;
        if (v > (ULLONG_MAX - (unsigned long long)(p[0] - '0'))) return 0;
        v += (unsigned long long)(p[0] - '0');
        p++;
        plen++;
    }
    if (plen < slen) return 0;
    if (negative) {
        if (v > ((unsigned long long)(-(LLONG_MIN + 1)) + 1)) return 0;
        *value = v == (unsigned long long)LLONG_MAX + 1 ? LLONG_MIN : -(long long)v;
    } else {
        if (v > LLONG_MAX) return 0;
        *value = (long long)v;
    }
    return 1;
}

void px_req_parser_init(px_req_parser *p, long long max_bulk_len)
{
    memset(p, 0, sizeof(*p));
    p->max_bulk_len = max_bulk_len;
    p->bulk_len = -1;
}

void px_req_parser_free(px_req_parser *p)
{
    free(p->argv);
    free(p->scratch);
    p->argv = NULL;
    p->scratch = NULL;
}

void px_req_parser_reset(px_req_parser *p)
{
    p->type = 0;
    p->mbulk_left = 0;
    p->bulk_len = -1;
    p->pos = 0;
    p->need = 0;
    p->argc = 0;
    p->errstr = NULL;
}

/*
 * The common case of a count line: "<digits>\r\n", at most 18 digits, no
 * sign, no leading zero.  Returns the digits' length with *v set, or 0 for
 * anything else (a short read too), which the general path (memchr and
 * px_string2ll) then takes: it accepts and refuses the same lines as before.
 */
static inline size_t small_count(const char *p, size_t avail, long long *v)
{
    size_t i = 0;
    long long x = 0;
    while (i < avail && i < 18 && p[i] >= '0' && p[i] <= '9') x = x * 10 + (p[i++] - '0');
    if (i == 0 || avail - i < 2 || p[i] != '\r' || p[i + 1] != '\n' || (p[0] == '0' && i > 1)) return 0;
    *v = x;
    return i;
}

static inline void push_arg(px_req_parser *p, size_t off, size_t len)
{
    if (p->argc == p->argv_cap) {
        p->argv_cap = p->argv_cap ? p->argv_cap * 2 : 16;
        p->argv = realloc(p->argv, sizeof(px_arg) * (size_t)p->argv_cap);
        if (!p->argv) abort();
    }
    p->argv[p->argc].off = off;
    p->argv[p->argc].len = len;
    p->argc++;
}

static void scratch_put(px_req_parser *p, size_t *used, char ch)
{
    if (*used == p->scratch_cap) {
        p->scratch_cap = p->scratch_cap ? p->scratch_cap * 2 : 256;
        p->scratch = realloc(p->scratch, p->scratch_cap);
        if (!p->scratch) abort();
    }
    p->scratch[(*used)++] = ch;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* sdssplitargs() semantics, arguments copied into p->scratch. */
static int split_inline(px_req_parser *p, const char *s, size_t n)
{
    size_t i = 0, used = 0;
    p->argc = 0;
    /* Arguments point into scratch even when every one is empty ("" or ''):
     * it must exist, or the command lookup gets a null pointer. */
    if (!p->scratch) {
        p->scratch_cap = 256;
        p->scratch = malloc(p->scratch_cap);
        if (!p->scratch) abort();
    }
    while (1) {
        while (i < n && (isspace((unsigned char)s[i]))) i++;
        if (i >= n || s[i] == '\0') return 0;
        int inq = 0, insq = 0, done = 0;
        size_t start = used;
        while (!done) {
            char c = i < n ? s[i] : '\0';
            if (inq) {
                if (c == '\\' && i + 3 < n + 0 && s[i + 1] == 'x' && hexval((unsigned char)s[i + 2]) >= 0 &&
                    hexval((unsigned char)s[i + 3]) >= 0) {
                    scratch_put(p, &used, (char)(hexval((unsigned char)s[i + 2]) * 16 + hexval((unsigned char)s[i + 3])));
                    i += 3;
                } else if (c == '\\' && i + 1 < n) {
                    char e = s[++i];
                    switch (e) {
                    case 'n': e = '\n'; break;
                    case 'r': e = '\r'; break;
                    case 't': e = '\t'; break;
                    case 'b': e = '\b'; break;
                    case 'a': e = '\a'; break;
                    default: break;
                    }
                    scratch_put(p, &used, e);
                } else if (c == '"') {
                    /* closing quote must be followed by a space or nothing */
                    if (i + 1 < n && !isspace((unsigned char)s[i + 1])) return -1;
                    done = 1;
                } else if (c == '\0' && i >= n) {
                    return -1; /* unterminated quotes */
                } else {
                    scratch_put(p, &used, c);
                }
            } else if (insq) {
                if (c == '\\' && i + 1 < n && s[i + 1] == '\'') {
                    i++;
                    scratch_put(p, &used, '\'');
                } else if (c == '\'') {
                    if (i + 1 < n && !isspace((unsigned char)s[i + 1])) return -1;
                    done = 1;
                } else if (c == '\0' && i >= n) {
                    return -1;
                } else {
                    scratch_put(p, &used, c);
                }
            } else {
                switch (c) {
                case ' ': case '\n': case '\r': case '\t': case '\0': done = 1; break;
                case '"': inq = 1; break;
                case '\'': insq = 1; break;
                default: scratch_put(p, &used, c); break;
                }
            }
            if (i < n) i++;
        }
        push_arg(p, start, used - start);
    }
}

static int parse_inline(px_req_parser *p, const char *buf, size_t len)
{
    const char *nl = memchr(buf, '\n', len);
    if (!nl) {
        if (len > PX_INLINE_MAX_SIZE) {
            p->errstr = "Protocol error: too big inline request";
            return PX_ERR;
        }
        p->need = len + 1;
        return PX_AGAIN;
    }
    size_t linelen = (size_t)(nl - buf), total = linelen + 1;
    if (linelen && buf[linelen - 1] == '\r') linelen--;
    if (split_inline(p, buf, linelen) != 0) {
        p->argc = 0;
        p->errstr = "Protocol error: unbalanced quotes in request";
        return PX_ERR;
    }
    p->pos = total;
    return PX_OK;
}

int px_req_parse(px_req_parser *p, const char *buf, size_t len)
{
    if (len == 0) {
        p->need = 1;
        return PX_AGAIN;
    }
    if (p->type == 0) p->type = buf[0] == '*' ? '*' : 'i';
    if (p->type == 'i') return parse_inline(p, buf, len);
    if (len < p->need) return PX_AGAIN;

    if (p->mbulk_left == 0) {
        /* the multibulk header: *<count>\r\n */
        long long ll;
        size_t k = small_count(buf + 1, len - 1, &ll);
        const char *cr = k ? buf + 1 + k : memchr(buf, '\r', len);
        if (!cr) {
            if (len > PX_INLINE_MAX_SIZE) {
                p->errstr = "Protocol error: too big mbulk count string";
                return PX_ERR;
            }
            p->need = len + 1;
            return PX_AGAIN;
        }
        if ((size_t)(cr - buf) > len - 2) { /* the \n has not arrived */
            p->need = (size_t)(cr - buf) + 2;
            return PX_AGAIN;
        }
        if ((!k && !px_string2ll(buf + 1, (size_t)(cr - (buf + 1)), &ll)) || ll > INT_MAX) {
            p->errstr = "Protocol error: invalid multibulk length";
            return PX_ERR;
        }
        if (ll > PX_UNAUTH_MAX_ARGS && p->unauthenticated) {
            p->errstr = "Protocol error: unauthenticated multibulk length";
            return PX_ERR;
        }
        p->pos = (size_t)(cr - buf) + 2;
        if (ll <= 0) return PX_OK; /* "*0" and "*-1": an empty command, skipped */
        p->mbulk_left = ll;
        p->argc = 0;
    }
    /* The usual case, a whole argument "$<len>\r\n<bytes>\r\n" in the buffer,
     * in locals: what the loop below would do, without reloading the parser
     * through every store to argv.  Anything else (split, too long, refused)
     * is left to that loop, from the same state. */
    if (p->bulk_len == -1 && p->mbulk_left) {
        size_t pos = p->pos;
        long long left = p->mbulk_left, ll;
        size_t k;
        while (left && len - pos > 1 && buf[pos] == '$' && (k = small_count(buf + pos + 1, len - pos - 1, &ll)) &&
               ll <= p->max_bulk_len && (ll <= PX_UNAUTH_MAX_BULK || !p->unauthenticated) &&
               len - (pos + 1 + k + 2) >= (size_t)ll + 2) {
            pos += 1 + k + 2;
            push_arg(p, pos, (size_t)ll);
            pos += (size_t)ll + 2;
            left--;
        }
        p->pos = pos;
        p->mbulk_left = left;
    }
    while (p->mbulk_left) {
        if (p->bulk_len == -1) {
            const char *s = buf + p->pos;
            size_t avail = len - p->pos;
            long long ll;
            size_t k = avail && s[0] == '$' ? small_count(s + 1, avail - 1, &ll) : 0;
            const char *cr = k ? s + 1 + k : avail ? memchr(s, '\r', avail) : NULL;
            if (!cr) {
                if (avail > PX_INLINE_MAX_SIZE) {
                    p->errstr = "Protocol error: too big bulk count string";
                    return PX_ERR;
                }
                p->need = len + 1;
                return PX_AGAIN;
            }
            if ((size_t)(cr - s) > avail - 2) {
                p->need = p->pos + (size_t)(cr - s) + 2;
                return PX_AGAIN;
            }
            if (s[0] != '$') {
                /* Redis 7's addReplyErrorFormat turns CR and LF into spaces:
                 * the error must stay on one line of the reply. */
                char got = s[0] == '\r' || s[0] == '\n' || s[0] == '\0' ? ' ' : s[0];
                snprintf(p->errbuf, sizeof(p->errbuf), "Protocol error: expected '$', got '%c'", got);
                p->errstr = p->errbuf;
                return PX_ERR;
            }
            if ((!k && !px_string2ll(s + 1, (size_t)(cr - (s + 1)), &ll)) || ll < 0 || ll > p->max_bulk_len) {
                p->errstr = "Protocol error: invalid bulk length";
                return PX_ERR;
            }
            if (ll > PX_UNAUTH_MAX_BULK && p->unauthenticated) {
                p->errstr = "Protocol error: unauthenticated bulk length";
                return PX_ERR;
            }
            p->pos += (size_t)(cr - s) + 2;
            p->bulk_len = ll;
        }
        if (len - p->pos < (size_t)p->bulk_len + 2) {
            p->need = p->pos + (size_t)p->bulk_len + 2;
            return PX_AGAIN;
        }
        push_arg(p, p->pos, (size_t)p->bulk_len);
        p->pos += (size_t)p->bulk_len + 2;
        p->bulk_len = -1;
        p->mbulk_left--;
    }
    p->need = 0;
    return PX_OK;
}

size_t px_reply_len(const char *buf, size_t len)
{
    px_reply_scanner s;
    px_reply_scanner_init(&s);
    int rc = px_reply_scan(&s, buf, len);
    px_reply_scanner_free(&s);
    return rc == PX_OK ? s.pos : 0;
}

void px_reply_scanner_init(px_reply_scanner *s)
{
    memset(s, 0, sizeof(*s));
    px_reply_scanner_reset(s);
}

void px_reply_scanner_free(px_reply_scanner *s)
{
    if (s->cap) free(s->left);
    s->left = s->inline_left;
    s->cap = 0;
}

void px_reply_scanner_reset(px_reply_scanner *s)
{
    px_reply_scanner_free(s);
    s->pos = 0;
    s->need = 0;
    s->depth = 0;
    s->errstr = NULL;
}

/* Room for one more open aggregate.  The stack grows by doubling; its size
 * comes from bytes that already arrived (each level is at least 4 of them),
 * so it is bounded by what the connection buffered. */
static void push_level(px_reply_scanner *s, long long n)
{
    size_t have = s->cap ? s->cap : PX_REPLY_INLINE_DEPTH;
    if (s->depth == have) {
        size_t ncap = have * 2;
        long long *nl = s->cap ? realloc(s->left, ncap * sizeof(*nl)) : malloc(ncap * sizeof(*nl));
        if (!nl) abort(); /* internal bookkeeping: out of memory aborts (STYLE.md) */
        if (!s->cap) memcpy(nl, s->inline_left, sizeof(s->inline_left));
        s->left = nl;
        s->cap = ncap;
    }
    s->left[s->depth++] = n;
}

/* Length of the line starting at p (up to \r), or -1 if no \r\n yet. */
static long line_end(const char *p, size_t avail)
{
    const char *cr = memchr(p, '\r', avail);
    if (!cr || (size_t)(cr - p) + 1 >= avail) return -1;
    return (long)(cr - p);
}

int px_reply_scan(px_reply_scanner *s, const char *buf, size_t len)
{
    if (!s->cap) s->left = s->inline_left; /* the struct may have been copied */
    if (len < s->need) return PX_AGAIN;
    while (1) {
        if (s->pos >= len) {
            s->need = s->pos + 1;
            return PX_AGAIN;
        }
        const char *p = buf + s->pos;
        if (!strchr("+-:_,#($!=*~>%|", p[0]) || p[0] == '\0') {
            s->errstr = "unknown reply type byte"; /* at once: garbage may never send CR LF */
            return PX_ERR;
        }
        long ll = line_end(p, len - s->pos);
        if (ll < 0) {
            s->need = len + 1;
            return PX_AGAIN;
        }
        char type = p[0];
        long long n = 0;
        size_t adv = (size_t)ll + 2;
        int aggregate = 0;
        switch (type) {
        case '+': case '-': case ':': case '_': case ',': case '#': case '(':
            break;
        case '$': case '!': case '=':
            if (!px_string2ll(p + 1, (size_t)ll - 1, &n) || n < -1 || (n == -1 && type != '$')) {
                s->errstr = "invalid bulk length in reply";
                return PX_ERR;
            }
            if (n >= 0) {
                if (len - s->pos < adv + (size_t)n + 2) {
                    s->need = s->pos + adv + (size_t)n + 2;
                    return PX_AGAIN;
                }
                adv += (size_t)n + 2;
            }
            break;
        case '*': case '~': case '>': case '%': case '|':
            if (!px_string2ll(p + 1, (size_t)ll - 1, &n) || n < -1 || (n == -1 && type != '*') ||
                n > INT_MAX) {
                s->errstr = "invalid aggregate length in reply";
                return PX_ERR;
            }
            if (type == '%') n *= 2;
            else if (type == '|') n = n * 2 + 1; /* the attribute's pairs, then the reply it annotates */
            aggregate = n > 0;
            break;
        default:
            s->errstr = "unknown reply type byte";
            return PX_ERR;
        }
        s->pos += adv;
        if (aggregate) {
            push_level(s, n);
            continue;
        }
        /* one element complete: close every aggregate it completes */
        while (s->depth > 0) {
            if (--s->left[s->depth - 1] > 0) break;
            s->depth--;
        }
        if (s->depth == 0) {
            s->need = 0;
            return PX_OK;
        }
    }
}

int px_reply_string(const char *buf, size_t len, const char **out, size_t *outlen)
{
    if (len < 3) return -1;
    long ll = line_end(buf, len);
    if (ll < 0) return -1;
    switch (buf[0]) {
    case '+': case '-':
        *out = buf + 1;
        *outlen = (size_t)ll - 1;
        return 0;
    case '$': case '=': {
        long long n;
        if (!px_string2ll(buf + 1, (size_t)ll - 1, &n) || n < 0 || (size_t)ll + 2 + (size_t)n > len) return -1;
        *out = buf + ll + 2;
        *outlen = (size_t)n;
        if (buf[0] == '=' && n >= 4) { /* verbatim: "txt:" format prefix */
            *out += 4;
            *outlen -= 4;
        }
        return 0;
    }
    default:
        return -1;
    }
}

struct redisReply *px_reply_decode(const char *buf, size_t len)
{
    redisReader *r = redisReaderCreate();
    void *reply = NULL;
    if (!r) return NULL;
    if (redisReaderFeed(r, buf, len) != REDIS_OK || redisReaderGetReply(r, &reply) != REDIS_OK) reply = NULL;
    redisReaderFree(r);
    return reply;
}

void px_resp_bulk(px_buf *b, const void *p, size_t n)
{
    px_buf_appendf(b, "$%zu\r\n", n);
    px_buf_append(b, p, n);
    px_buf_append(b, "\r\n", 2);
}

void px_resp_command(px_buf *b, int argc, const char *const *argv, const size_t *argvlen)
{
    px_buf_appendf(b, "*%d\r\n", argc);
    for (int i = 0; i < argc; i++) px_resp_bulk(b, argv[i], argvlen ? argvlen[i] : strlen(argv[i]));
}
