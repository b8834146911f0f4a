/*
 * test_metrics: the Prometheus page (metrics-port) and INFO latencystats.
 *
 *  - GET /metrics over a raw socket is parsed strictly: every sample has its
 *    family's # HELP and # TYPE before it, names and labels are valid, no
 *    series twice, counters end in _total, histogram buckets are cumulative
 *    with +Inf equal to _count; every number hotproxy's INFO sections show
 *    is on the page; counters never go down between two scrapes;
 *  - load moves the histograms: GETs answered from the L1 grow the
 *    l1_hit count of cmd="get" by as many;
 *  - INFO latencystats answers in Redis 7's format from the same
 *    histograms, and INFO all has one Latencystats section (hotproxy's);
 *  - HTTP: a request split over several writes, pipelined requests (GET,
 *    HEAD, an unknown path) answered in order on a kept-alive connection,
 *    Connection: close and HTTP/1.0 honoured, bad requests answered 400 /
 *    405 / 431 / 505 (and the connection closed when its framing is lost),
 *    connections past the limit closed, a client that does not read its
 *    pipelined responses gets them all later; Redis traffic through
 *    hotproxy keeps working throughout;
 *  - latency-tracking no: no histograms, an empty Latencystats section;
 *  - with Debian's prometheus installed: promtool check metrics accepts the
 *    page, and a prometheus server scraping hotproxy returns the series
 *    through its HTTP API.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "tap.h"

#define T 20000 /* ms: the deadline of any one wait */

static hx_proc redis, proxy;
static int mport; /* hotproxy's metrics port */

/* ---- HTTP over a raw socket --------------------------------------------- */

typedef struct resp {
    int status;
    int close;          /* Connection: close */
    char ctype[128];
    size_t clen;
    const char *body;   /* into the buffer it was parsed from */
    size_t blen;
} resp;

/* One response at p[0..n): its length, 0 if incomplete, -1 if malformed.
 * head_only: the answer to a HEAD (no body follows its Content-Length). */
static long parse_resp(const char *p, size_t n, int head_only, resp *r)
{
    memset(r, 0, sizeof(*r));
    if (!n) return 0; /* p may be NULL then */
    const char *end = memmem(p, n, "\r\n\r\n", 4);
    if (!end) return 0;
    size_t hlen = (size_t)(end - p) + 4;
    if (sscanf(p, "HTTP/1.1 %d ", &r->status) != 1) return -1;
    int have_len = 0;
    for (const char *l = (const char *)memchr(p, '\n', hlen) + 1; l < p + hlen - 2;) {
        const char *e = memchr(l, '\n', (size_t)(p + hlen - l));
        if (!strncasecmp(l, "Content-Length: ", 16)) {
            r->clen = strtoul(l + 16, NULL, 10);
            have_len = 1;
        } else if (!strncasecmp(l, "Content-Type: ", 14)) {
            size_t k = (size_t)(e - 1 - (l + 14));
            if (k >= sizeof(r->ctype)) k = sizeof(r->ctype) - 1;
            memcpy(r->ctype, l + 14, k);
        } else if (!strncasecmp(l, "Connection: close", 17)) {
            r->close = 1;
        }
        l = e + 1;
    }
    if (!have_len) return -1;
    size_t blen = head_only ? 0 : r->clen;
    if (n < hlen + blen) return 0;
    r->body = p + hlen;
    r->blen = blen;
    return (long)(hlen + blen);
}

/* Read one more response on fd into b from *off; 0, or -1 (diag). */
static int read_resp(int fd, hx_buf *b, size_t *off, int head_only, resp *r)
{
    for (;;) {
        long n = parse_resp(b->data + *off, b->len - *off, head_only, r);
        if (n < 0) {
            diag("malformed response: %.*s", (int)(b->len - *off > 200 ? 200 : b->len - *off), b->data + *off);
            return -1;
        }
        if (n > 0) {
            *off += (size_t)n;
            return 0;
        }
        int st = hx_read_n(fd, b, 1, T);
        if (st != HX_OK) {
            diag("reading a response: %s", hx_status_name(st));
            return -1;
        }
    }
}

/* A whole exchange on a fresh connection: one request, one response. */
static int http1(const char *req, int head_only, hx_buf *b, resp *r)
{
    int fd = hx_connect(mport);
    size_t off = 0;
    if (fd < 0) return -1;
    hx_buf_reset(b);
    int rc = hx_send_str(fd, req) == 0 ? read_resp(fd, b, &off, head_only, r) : -1;
    close(fd);
    return rc;
}

/* The page's body, NUL-terminated, into page. */
static int scrape(hx_buf *page)
{
    hx_buf b = {0};
    resp r;
    int rc = http1("GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n", 0, &b, &r);
    if (rc == 0 && r.status != 200) rc = -1;
    hx_buf_reset(page);
    if (rc == 0) hx_buf_append(page, r.body, r.blen);
    hx_buf_append(page, "", 1);
    page->len--;
    hx_buf_free(&b);
    return rc;
}

/* ---- the exposition format, parsed strictly ------------------------------ */

typedef struct sample {
    char *series; /* name{labels} as written */
    char *name;
    char *labels; /* inside the braces, "" for none */
    double v;
} sample;

typedef struct family {
    char *name, *type;
    int help, ntype, nsamples;
} family;

typedef struct page {
    sample *s;
    int n;
    family *f;
    int nf;
    int errors;
} page;

static void perr(page *pg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void perr(page *pg, const char *fmt, ...)
{
    if (pg->errors++ < 8) {
        char m[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(m, sizeof(m), fmt, ap);
        va_end(ap);
        diag("page: %s", m);
    }
}

static int valid_name(const char *p, size_t n, int label)
{
    if (!n) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (!label && c == ':');
        if (!alpha && !(i && c >= '0' && c <= '9')) return 0;
    }
    return 1;
}

static family *fam_find(page *pg, const char *name)
{
    for (int i = 0; i < pg->nf; i++)
        if (!strcmp(pg->f[i].name, name)) return &pg->f[i];
    return NULL;
}

static family *fam_get(page *pg, const char *name)
{
    family *f = fam_find(pg, name);
    if (f) return f;
    pg->f = realloc(pg->f, sizeof(*pg->f) * (size_t)(pg->nf + 1));
    f = &pg->f[pg->nf++];
    memset(f, 0, sizeof(*f));
    f->name = strdup(name);
    return f;
}

/* The family a sample name belongs to: itself, or a histogram's. */
static family *fam_of(page *pg, const char *name)
{
    family *f = fam_find(pg, name);
    if (f) return f;
    static const char *const sfx[] = {"_bucket", "_sum", "_count"};
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(name), k = strlen(sfx[i]);
        if (n > k && !strcmp(name + n - k, sfx[i])) {
            char base[256];
            snprintf(base, sizeof(base), "%.*s", (int)(n - k), name);
            f = fam_find(pg, base);
            if (f && f->type && !strcmp(f->type, "histogram")) return f;
        }
    }
    return NULL;
}

/* Labels: name="value" pairs, comma separated, escapes \\ \" \n only. */
static int check_labels(const char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t s = i;
        while (i < n && p[i] != '=') i++;
        if (i >= n || !valid_name(p + s, i - s, 1) || i + 1 >= n || p[i + 1] != '"') return 0;
        i += 2;
        while (i < n && p[i] != '"') {
            if (p[i] == '\\') {
                if (i + 1 >= n || !strchr("\\\"n", p[i + 1])) return 0;
                i++;
            } else if (p[i] == '\n') {
                return 0;
            }
            i++;
        }
        if (i >= n) return 0;
        i++;
        if (i < n) {
            if (p[i] != ',') return 0;
            i++;
        }
    }
    return 1;
}

static void page_free(page *pg)
{
    for (int i = 0; i < pg->n; i++) free(pg->s[i].series), free(pg->s[i].name), free(pg->s[i].labels);
    for (int i = 0; i < pg->nf; i++) free(pg->f[i].name), free(pg->f[i].type);
    free(pg->s);
    free(pg->f);
    memset(pg, 0, sizeof(*pg));
}

static const sample *find(const page *pg, const char *series)
{
    for (int i = 0; i < pg->n; i++)
        if (!strcmp(pg->s[i].series, series)) return &pg->s[i];
    return NULL;
}

/* A label's value in a labels string ("" when absent), into out. */
static void label_of(const char *labels, const char *key, char *out, size_t outlen)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "%s=\"", key);
    out[0] = 0;
    for (const char *p = labels; (p = strstr(p, pat)); p++) {
        if (p != labels && p[-1] != ',') continue;
        p += strlen(pat);
        const char *e = strchr(p, '"');
        snprintf(out, outlen, "%.*s", (int)(e - p), p);
        return;
    }
}

/* Labels without le. */
static void labels_but_le(const char *labels, char *out, size_t outlen)
{
    out[0] = 0;
    const char *le = strstr(labels, "le=\"");
    while (le && le != labels && le[-1] != ',') le = strstr(le + 1, "le=\"");
    if (!le) {
        snprintf(out, outlen, "%s", labels);
        return;
    }
    const char *e = strchr(le + 4, '"') + 1;
    if (*e == ',') e++;
    size_t k = (size_t)(le - labels);
    if (k && labels[k - 1] == ',' && !*e) k--;
    snprintf(out, outlen, "%.*s%s", (int)k, labels, e);
}

static void parse_page(const char *text, page *pg)
{
    memset(pg, 0, sizeof(*pg));
    const char *p = text;
    if (!*p) perr(pg, "empty page");
    while (*p) {
        const char *e = strchr(p, '\n');
        if (!e) {
            perr(pg, "last line does not end with \\n");
            break;
        }
        size_t len = (size_t)(e - p);
        char line[4096];
        snprintf(line, sizeof(line), "%.*s", (int)len, p);
        p = e + 1;
        if (!len) {
            perr(pg, "empty line");
            continue;
        }
        if (line[0] == '#') {
            char kw[16], name[256];
            int off = 0;
            if (sscanf(line, "# %15s %255s %n", kw, name, &off) < 2) {
                perr(pg, "bad comment line '%s'", line);
                continue;
            }
            if (!valid_name(name, strlen(name), 0)) perr(pg, "bad name in '%s'", line);
            family *f = fam_get(pg, name);
            if (f->nsamples) perr(pg, "%s %s after its samples", kw, name);
            if (!strcmp(kw, "HELP")) {
                if (f->help++) perr(pg, "HELP %s twice", name);
                if (!off || !line[off]) perr(pg, "HELP %s without text", name);
            } else if (!strcmp(kw, "TYPE")) {
                if (f->ntype++) perr(pg, "TYPE %s twice", name);
                const char *t = line + off;
                if (strcmp(t, "counter") && strcmp(t, "gauge") && strcmp(t, "histogram") && strcmp(t, "summary") &&
                    strcmp(t, "untyped"))
                    perr(pg, "TYPE %s: unknown type '%s'", name, t);
                free(f->type);
                f->type = strdup(t);
                if (!strcmp(t, "counter") && (strlen(name) < 6 || strcmp(name + strlen(name) - 6, "_total")))
                    perr(pg, "counter %s does not end in _total", name);
            } else {
                perr(pg, "unknown comment '%s'", line);
            }
            continue;
        }
        /* name{labels} value */
        size_t nl = strcspn(line, "{ ");
        char name[256], labels[2048] = "";
        snprintf(name, sizeof(name), "%.*s", (int)nl, line);
        const char *rest = line + nl;
        if (*rest == '{') {
            const char *close = NULL;
            int inq = 0;
            for (const char *q = rest + 1; *q; q++) {
                if (inq && *q == '\\') {
                    q++;
                    continue;
                }
                if (*q == '"') inq = !inq;
                else if (!inq && *q == '}') {
                    close = q;
                    break;
                }
            }
            if (!close) {
                perr(pg, "unclosed labels in '%s'", line);
                continue;
            }
            snprintf(labels, sizeof(labels), "%.*s", (int)(close - rest - 1), rest + 1);
            if (!check_labels(labels, strlen(labels))) perr(pg, "bad labels in '%s'", line);
            rest = close + 1;
        }
        if (*rest != ' ') {
            perr(pg, "no value in '%s'", line);
            continue;
        }
        rest++;
        char *vend;
        double v = strtod(rest, &vend);
        if (vend == rest || *vend) perr(pg, "bad value in '%s'", line);
        if (!valid_name(name, strlen(name), 0)) perr(pg, "bad metric name '%s'", name);
        family *f = fam_of(pg, name);
        if (!f || !f->help || !f->ntype) {
            perr(pg, "sample '%s' without its family's HELP and TYPE before it", line);
        } else {
            f->nsamples++;
        }
        char series[4096];
        snprintf(series, sizeof(series), "%s{%s}", name, labels);
        if (find(pg, series)) perr(pg, "series %s twice", series);
        pg->s = realloc(pg->s, sizeof(*pg->s) * (size_t)(pg->n + 1));
        pg->s[pg->n++] = (sample){strdup(series), strdup(name), strdup(labels), v};
    }
    /* histograms: per series, buckets cumulative in increasing le, +Inf == _count */
    for (int i = 0; i < pg->nf; i++) {
        family *f = &pg->f[i];
        if (!f->type || strcmp(f->type, "histogram")) continue;
        char bname[300], cname[300];
        snprintf(bname, sizeof(bname), "%s_bucket", f->name);
        snprintf(cname, sizeof(cname), "%s_count", f->name);
        for (int k = 0; k < pg->n; k++) {
            if (strcmp(pg->s[k].name, cname)) continue;
            double prev_le = -1, prev_v = -1, inf = -1;
            int nb = 0;
            for (int j = 0; j < pg->n; j++) {
                if (strcmp(pg->s[j].name, bname)) continue;
                char base[2048], le[64];
                labels_but_le(pg->s[j].labels, base, sizeof(base));
                if (strcmp(base, pg->s[k].labels)) continue;
                label_of(pg->s[j].labels, "le", le, sizeof(le));
                double lv = !strcmp(le, "+Inf") ? INFINITY : strtod(le, NULL);
                if (lv <= prev_le) perr(pg, "%s{%s}: le %s not increasing", bname, base, le);
                if (pg->s[j].v < prev_v) perr(pg, "%s{%s}: bucket le=%s not cumulative", bname, base, le);
                prev_le = lv;
                prev_v = pg->s[j].v;
                if (isinf(lv)) inf = pg->s[j].v;
                nb++;
            }
            if (nb < 2 || inf < 0) perr(pg, "%s{%s}: no +Inf bucket", f->name, pg->s[k].labels);
            else if (inf != pg->s[k].v) perr(pg, "%s{%s}: +Inf %g != _count %g", f->name, pg->s[k].labels, inf, pg->s[k].v);
        }
    }
}

/* Sum of the samples of one name whose labels contain every "k=\"v\"" given. */
static double sum_of(const page *pg, const char *name, const char *want1, const char *want2)
{
    double t = 0;
    for (int i = 0; i < pg->n; i++) {
        if (strcmp(pg->s[i].name, name)) continue;
        if (want1 && !strstr(pg->s[i].labels, want1)) continue;
        if (want2 && !strstr(pg->s[i].labels, want2)) continue;
        t += pg->s[i].v;
    }
    return t;
}

/* ---- tests -------------------------------------------------------------- */

static void test_page(redisContext *c)
{
    hx_buf b = {0};
    resp r;
    int rc = http1("GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n", 0, &b, &r);
    ok(rc == 0 && r.status == 200, "GET /metrics answers 200 (%d)", r.status);
    is_str(r.ctype, "text/plain; version=0.0.4; charset=utf-8", "Content-Type is the text format 0.0.4");
    ok(!r.close, "HTTP/1.1 keeps the connection alive");
    hx_buf_free(&b);

    hx_buf text = {0};
    page pg;
    scrape(&text);
    parse_page(text.data, &pg);
    is_int(pg.errors, 0, "the page parses strictly (%d samples, %d families)", pg.n, pg.nf);
    char series[256];
    snprintf(series, sizeof(series), "hotproxy_upstream_connections{pool=\"127.0.0.1:%d\"}", redis.port);
    ok(find(&pg, series) != NULL, "a pool's gauge carries its pool label: %s", series);
    ok(find(&pg, "hotproxy_l1_hits_total{}") && find(&pg, "hotproxy_l1_entries{}"), "the L1's figures are there");
    ok(find(&pg, "hotproxy_commands_processed_total{}") != NULL, "hotproxy_commands_processed_total is there");

    /* every number hotproxy's INFO shows has its metric */
    redisReply *rep = redisCommand(c, "INFO hotproxy");
    int missing = 0, seen = 0;
    if (rep && rep->type == REDIS_REPLY_STRING) {
        char *save = NULL;
        for (char *l = strtok_r(rep->str, "\r\n", &save); l; l = strtok_r(NULL, "\r\n", &save)) {
            char *colon = strchr(l, ':');
            if (l[0] == '#' || !colon || strchr(colon, '=') || strncmp(l, "hotproxy_", 9) ||
                !strncmp(l, "hotproxy_cmdstat_", 17))
                continue;
            char *end;
            strtod(colon + 1, &end);
            char name[256];
            snprintf(name, sizeof(name), "%.*s", (int)(colon - l), l);
            int numeric = end != colon + 1 && !*end;
            int found = 0;
            for (int i = 0; i < pg.n && !found; i++) {
                const char *s = pg.s[i].name;
                size_t k = strlen(name);
                found = !strncmp(s, name, k) && (!s[k] || !strcmp(s + k, "_total") || (!numeric && !strcmp(s + k, "_info")));
            }
            seen++;
            if (!found && missing++ < 5) diag("INFO %s has no metric", name);
        }
    }
    freeReplyObject(rep);
    ok(seen > 30 && missing == 0, "every one of INFO's %d hotproxy_ entries is on the page (%d missing)", seen, missing);
    page_free(&pg);
    hx_buf_free(&text);
}

static void test_load(redisContext *c)
{
    hx_buf t1 = {0}, t2 = {0};
    page p1, p2;
    const char *v = hx_cmd(c, "SET metrics:k hello");
    is_str(v, "OK", "SET through hotproxy");
    hx_info_wait(c, "hotproxy_cache", "hotproxy_l1_tracking", "up", T); /* nothing is filled before */
    if (!ok(hx_l1_hit(c, "metrics:k", 50), "metrics:k is answered from the L1")) diag("%s", hx_cmd(c, "INFO hotproxy_cache"));
    scrape(&t1);
    parse_page(t1.data, &p1);
    int n = 200;
    for (int i = 0; i < n; i++) redisAppendCommand(c, "GET metrics:k");
    int good = 0;
    for (int i = 0; i < n; i++) {
        redisReply *rr;
        if (redisGetReply(c, (void **)&rr) == REDIS_OK && rr->type == REDIS_REPLY_STRING && !strcmp(rr->str, "hello"))
            good++;
        if (rr) freeReplyObject(rr);
    }
    is_int(good, n, "%d pipelined GETs answered", n);
    scrape(&t2);
    parse_page(t2.data, &p2);
    ok(p1.errors == 0 && p2.errors == 0, "both scrapes parse");
    double h1 = sum_of(&p1, "hotproxy_request_duration_seconds_count", "cmd=\"get\"", "path=\"l1_hit\"");
    double h2 = sum_of(&p2, "hotproxy_request_duration_seconds_count", "cmd=\"get\"", "path=\"l1_hit\"");
    double l1 = sum_of(&p1, "hotproxy_l1_hits_total", NULL, NULL), l2 = sum_of(&p2, "hotproxy_l1_hits_total", NULL, NULL);
    ok(h2 - h1 == l2 - l1 && h2 - h1 >= n / 2, "the l1_hit histogram of get grew with the L1's hits (%g, hits %g)", h2 - h1,
       l2 - l1);
    double s1 = sum_of(&p1, "hotproxy_request_duration_seconds_sum", "cmd=\"get\"", "path=\"l1_hit\"");
    double s2 = sum_of(&p2, "hotproxy_request_duration_seconds_sum", "cmd=\"get\"", "path=\"l1_hit\"");
    ok(s2 > s1, "its _sum grew too (%g -> %g s)", s1, s2);
    ok(sum_of(&p2, "hotproxy_request_duration_seconds_count", "cmd=\"set\"", "path=\"forwarded\"") >= 1,
       "SET is counted as forwarded");
    ok(sum_of(&p2, "hotproxy_request_duration_seconds_count", "cmd=\"ping\"", "path=\"local\"") >= 1,
       "PING (hotproxy's own) is counted as local");
    /* counters never go down */
    int down = 0, counters = 0;
    for (int i = 0; i < p1.n; i++) {
        family *f = fam_of(&p1, p1.s[i].name);
        int mono = f && f->type && (!strcmp(f->type, "counter") || !strcmp(f->type, "histogram"));
        if (!mono || (!strcmp(f->type, "histogram") && strstr(p1.s[i].name, "_sum") && 0)) continue;
        counters++;
        const sample *s = find(&p2, p1.s[i].series);
        if (!s || s->v < p1.s[i].v) {
            if (down++ < 5) diag("%s: %g then %s", p1.s[i].series, p1.s[i].v, s ? "lower" : "gone");
        }
    }
    ok(counters > 20 && down == 0, "%d counter and histogram series, none lower in the second scrape", counters);
    v = hx_cmd(c, "INFO latencystats");
    const char *at = strstr(v, "latency_percentiles_usec_get:");
    double p50 = -1, p99 = -1, p999 = -1;
    if (at) sscanf(at, "latency_percentiles_usec_get:p50=%lf,p99=%lf,p99.9=%lf", &p50, &p99, &p999);
    ok(!strncmp(v, "# Latencystats\r\n", 16) && p50 > 0 && p50 <= p99 && p99 <= p999 && p999 <= 10e6,
       "INFO latencystats: Redis 7's format for get (p50=%g p99=%g p99.9=%g)", p50, p99, p999);
    ok(!strstr(v, "redis_version"), "INFO latencystats is hotproxy's alone");
    redisReply *all = redisCommand(c, "INFO all"); /* longer than hx_cmd keeps */
    v = all && all->type == REDIS_REPLY_STRING ? all->str : "";
    const char *first = strstr(v, "# Latencystats"), *second = first ? strstr(first + 1, "# Latencystats") : NULL;
    ok(first && !second && strstr(v, "redis_version") && strstr(first, "latency_percentiles_usec_get:"),
       "INFO all: Redis' sections and one Latencystats section, hotproxy's");
    if (all) freeReplyObject(all);
    page_free(&p1);
    page_free(&p2);
    hx_buf_free(&t1);
    hx_buf_free(&t2);
}

/* The clock is read per loop iteration, not per command: a command after
 * an idle spell must not take its start from before it. */
static void test_idle(redisContext *c)
{
    is_str(hx_cmd(c, "PING"), "PONG", "PING");
    hx_sleep_ms(1200); /* the loop sleeps with nothing to do */
    is_str(hx_cmd(c, "PING"), "PONG", "PING again after 1.2 s idle");
    hx_buf t = {0};
    page pg;
    scrape(&t);
    parse_page(t.data, &pg);
    double n = sum_of(&pg, "hotproxy_request_duration_seconds_count", "cmd=\"ping\"", NULL);
    const sample *le1 = find(&pg, "hotproxy_request_duration_seconds_bucket{cmd=\"ping\",path=\"local\",le=\"1\"}");
    ok(n >= 2 && le1 && le1->v == n, "no PING took a second or more (%g of %g within 1 s)", le1 ? le1->v : -1, n);
    page_free(&pg);
    hx_buf_free(&t);
}

static void test_http(redisContext *c)
{
    hx_buf b = {0};
    resp r, r2, r3;
    size_t off = 0;

    /* split over several writes */
    int fd = hx_connect(mport);
    const char *parts[] = {"GE", "T /metr", "ics?x=1 HTTP/1.1\r\nHo", "st: t\r\n", "\r", "\n"};
    int rc = 0;
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        rc |= hx_send_str(fd, parts[i]);
        hx_sleep_ms(20); /* so each part is a read of its own */
    }
    rc |= read_resp(fd, &b, &off, 0, &r);
    ok(rc == 0 && r.status == 200 && r.blen > 1000, "a request split over 6 writes is answered 200 (%zu bytes)", r.blen);

    /* pipelined on the same kept-alive connection: GET, HEAD, unknown path, GET */
    hx_send_str(fd, "GET /metrics HTTP/1.1\r\n\r\nHEAD /metrics HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\n");
    rc = read_resp(fd, &b, &off, 0, &r);
    rc |= read_resp(fd, &b, &off, 1, &r2);
    rc |= read_resp(fd, &b, &off, 0, &r3);
    ok(rc == 0 && r.status == 200 && r2.status == 200 && r3.status == 404,
       "pipelined GET, HEAD, GET /nope: 200, 200, 404 in order (%d %d %d)", r.status, r2.status, r3.status);
    ok(r2.blen == 0 && r2.clen > 1000 && off == b.len, "HEAD has a Content-Length and no body");
    hx_send_str(fd, "GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n");
    rc = read_resp(fd, &b, &off, 0, &r);
    ok(rc == 0 && r.status == 200 && r.close, "the connection is still up after a 404; Connection: close is echoed");
    int st = hx_read_eof(fd, &b, T);
    ok(st == HX_EOF && b.len == off, "and then closed (%s)", hx_status_name(st));
    close(fd);

    rc = http1("GET /metrics HTTP/1.0\r\n\r\n", 0, &b, &r);
    ok(rc == 0 && r.status == 200 && r.close, "HTTP/1.0 without keep-alive: 200, Connection: close");

    /* bad requests */
    static const struct {
        const char *req;
        int status;
        int closes;
        const char *what;
    } bad[] = {
        {"GARBAGE\r\n\r\n", 400, 1, "a request line of one word"},
        {"GET /metrics\r\n\r\n", 400, 1, "no version"},
        {"GET  /metrics HTTP/1.1\r\n\r\n", 400, 1, "two spaces"},
        {"GET /metrics HTTP/1.1\r\nNoColon\r\n\r\n", 400, 1, "a header without a colon"},
        {"GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n", 400, 1, "whitespace before a header's colon"},
        {"GET /metrics HTTP/2.0\r\n\r\n", 505, 1, "HTTP/2.0"},
        {"G\x01T /metrics HTTP/1.1\r\n\r\n", 400, 1, "a control byte in the method"},
        {"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 405, 1, "POST with a body"},
        {"GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, 1, "GET with a chunked body"},
        {"DELETE /metrics HTTP/1.1\r\n\r\n", 405, 0, "DELETE"},
        {"GET / HTTP/1.1\r\n\r\n", 404, 0, "GET /"},
        {"GET /metricsx HTTP/1.1\r\n\r\n", 404, 0, "GET /metricsx"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        fd = hx_connect(mport);
        hx_buf_reset(&b);
        off = 0;
        hx_send_str(fd, bad[i].req);
        rc = read_resp(fd, &b, &off, 0, &r);
        int closed = bad[i].closes ? hx_read_eof(fd, &b, T) == HX_EOF : 1;
        ok(rc == 0 && r.status == bad[i].status && closed && r.close == bad[i].closes, "%s: %d%s (got %d%s)", bad[i].what,
           bad[i].status, bad[i].closes ? " and closed" : "", r.status, r.close ? ", close" : "");
        close(fd);
    }
    /* a head past 8 KB */
    fd = hx_connect(mport);
    hx_buf big = {0};
    hx_buf_printf(&big, "GET /metrics HTTP/1.1\r\nX-Big: ");
    for (int i = 0; i < 9000; i++) hx_buf_append(&big, "a", 1);
    hx_send(fd, big.data, big.len, T);
    hx_buf_reset(&b);
    off = 0;
    rc = read_resp(fd, &b, &off, 0, &r);
    st = hx_read_eof(fd, &b, T);
    ok(rc == 0 && r.status == 431 && (st == HX_EOF || st == HX_RESET), "a head past 8 KB: 431 and closed (%d, %s)",
       r.status, hx_status_name(st));
    close(fd);
    hx_buf_free(&big);

    /* Redis traffic through hotproxy is unaffected */
    is_str(hx_cmd(c, "PING"), "PONG", "PING through hotproxy after the bad requests");
    is_str(hx_cmd(c, "GET metrics:k"), "hello", "GET through hotproxy after the bad requests");

    /* connections past the limit are closed at accept */
    enum { MAXC = 64 };
    int fds[MAXC + 1], up = 0;
    for (int i = 0; i < MAXC; i++) {
        fds[i] = hx_connect(mport);
        hx_buf_reset(&b);
        off = 0;
        if (hx_send_str(fds[i], "HEAD /metrics HTTP/1.1\r\n\r\n") == 0 && read_resp(fds[i], &b, &off, 1, &r) == 0 &&
            r.status == 200)
            up++;
    }
    is_int(up, MAXC, "%d kept-alive connections served", MAXC);
    fds[MAXC] = hx_connect(mport);
    hx_buf_reset(&b);
    hx_send_str(fds[MAXC], "HEAD /metrics HTTP/1.1\r\n\r\n");
    st = hx_read_eof(fds[MAXC], &b, T);
    ok((st == HX_EOF || st == HX_RESET) && b.len == 0, "the %dth is closed unanswered (%s)", MAXC + 1,
       hx_status_name(st));
    for (int i = 0; i <= MAXC; i++) close(fds[i]);
    int again = 0;
    for (double end = hx_now() + T / 1000.0; !again && hx_now() < end; hx_sleep_ms(50)) {
        hx_buf_reset(&b);
        again = http1("HEAD /metrics HTTP/1.1\r\n\r\n", 1, &b, &r) == 0 && r.status == 200;
    }
    ok(again, "once they are closed, a new connection is served");

    /* a client that pipelines many requests and reads nothing for a while */
    enum { NPIPE = 300 };
    fd = hx_connect(mport);
    hx_buf req = {0};
    for (int i = 0; i < NPIPE; i++) hx_buf_printf(&req, "GET /metrics HTTP/1.1\r\n\r\n");
    size_t sent = 0;
    while (sent < req.len) { /* as much as the socket takes now: the rest once it reads */
        ssize_t k = send(fd, req.data + sent, req.len - sent, MSG_NOSIGNAL);
        if (k <= 0) break;
        sent += (size_t)k;
    }
    hx_buf other = {0};
    rc = http1("GET /metrics HTTP/1.1\r\n\r\n", 0, &other, &r);
    ok(rc == 0 && r.status == 200, "another scrape is served while that client reads nothing");
    is_str(hx_cmd(c, "GET metrics:k"), "hello", "and Redis traffic too");
    hx_buf_reset(&b);
    off = 0;
    int got = 0;
    for (int i = 0; i < NPIPE; i++) {
        while (sent < req.len) { /* feed the rest as room appears */
            ssize_t k = send(fd, req.data + sent, req.len - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (k <= 0) break;
            sent += (size_t)k;
        }
        if (read_resp(fd, &b, &off, 0, &r) != 0 || r.status != 200) break;
        got++;
        if (off > 1 << 20) { /* keep the buffer small */
            memmove(b.data, b.data + off, b.len - off);
            b.len -= off;
            off = 0;
        }
    }
    is_int(got, NPIPE, "it gets all %d responses once it reads", NPIPE);
    close(fd);
    hx_buf_free(&req);
    hx_buf_free(&other);
    hx_buf_free(&b);
}

static void test_tracking_off(void)
{
    hx_proc p2;
    int m2 = hx_free_port();
    char ms[16];
    snprintf(ms, sizeof(ms), "%d", m2);
    if (hx_proxy_start(&p2, 0, redis.port, "--metrics-port", ms, "--latency-tracking", "no", NULL) != 0) {
        ok(0, "hotproxy with latency-tracking no starts");
        return;
    }
    redisContext *c2 = hx_redis(p2.port);
    for (int i = 0; i < 10; i++) hx_cmd(c2, "GET metrics:k");
    int save = mport;
    mport = m2;
    hx_buf t = {0};
    page pg;
    scrape(&t);
    parse_page(t.data, &pg);
    mport = save;
    ok(pg.errors == 0 && sum_of(&pg, "hotproxy_command_calls_total", "cmd=\"get\"", NULL) == 10 &&
           !sum_of(&pg, "hotproxy_request_duration_seconds_count", NULL, NULL),
       "latency-tracking no: commands counted, no duration recorded");
    const char *v = hx_cmd(c2, "INFO latencystats");
    is_str(v, "# Latencystats\r\n", "latency-tracking no: INFO latencystats is an empty section");
    page_free(&pg);
    hx_buf_free(&t);
    redisFree(c2);
    is_int(hx_stop(&p2, 15000), 0, "that hotproxy exits 0");
}

/* Run a program; its exit status (-1 when it could not run). */
static int run(const char *cmd)
{
    int st = system(cmd);
    return st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void test_prometheus(void)
{
    if (run("command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1") != 0) {
        skip("Debian's prometheus is not installed (promtool, prometheus): apt-get install prometheus");
        skip("Debian's prometheus is not installed (promtool, prometheus): apt-get install prometheus");
        skip("Debian's prometheus is not installed (promtool, prometheus): apt-get install prometheus");
        return;
    }
    hx_buf t = {0};
    scrape(&t);
    char path[600], cmd[1400];
    snprintf(path, sizeof(path), "%s/page.txt", hx_tmpdir());
    FILE *f = fopen(path, "w");
    fwrite(t.data, 1, t.len, f);
    fclose(f);
    snprintf(cmd, sizeof(cmd), "promtool check metrics < %s > %s.out 2>&1", path, path);
    int st = run(cmd);
    ok(st == 0, "promtool check metrics accepts the page (exit %d)", st);
    if (st) {
        snprintf(cmd, sizeof(cmd), "%s.out", path);
        hx_diag_file(cmd, 2000);
    }

    /* a real prometheus scraping hotproxy */
    int pp = hx_free_port();
    char conf[600], data[600], listen[64], cfgarg[700], dataarg[700], listenarg[100];
    snprintf(conf, sizeof(conf), "%s/prometheus.yml", hx_tmpdir());
    snprintf(data, sizeof(data), "%s/prometheus-data", hx_tmpdir());
    f = fopen(conf, "w");
    fprintf(f,
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: hotproxy\n"
            "    static_configs:\n      - targets: ['127.0.0.1:%d']\n",
            mport);
    fclose(f);
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", pp);
    snprintf(cfgarg, sizeof(cfgarg), "--config.file=%s", conf);
    snprintf(dataarg, sizeof(dataarg), "--storage.tsdb.path=%s", data);
    snprintf(listenarg, sizeof(listenarg), "--web.listen-address=%s", listen);
    const char *argv[] = {"prometheus", cfgarg, dataarg, listenarg, "--log.level=warn", NULL};
    hx_proc prom;
    if (hx_spawn(&prom, "prometheus", argv) != 0) {
        ok(0, "prometheus starts");
        ok(0, "prometheus starts");
        return;
    }
    /* poll its query API until the scraped series is there */
    int found = 0, hist = 0;
    hx_buf b = {0};
    for (double end = hx_now() + 60; !(found && hist) && hx_now() < end && hx_alive(&prom); hx_sleep_ms(250)) {
        for (int q = 0; q < 2; q++) {
            int fd = hx_connect(pp);
            if (fd < 0) continue;
            char req[512];
            snprintf(req, sizeof(req), "GET /api/v1/query?query=%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                     q ? "hotproxy_request_duration_seconds_count%7Bpath%3D%22l1_hit%22%7D"
                       : "hotproxy_commands_processed_total");
            hx_buf_reset(&b);
            if (hx_send_str(fd, req) == 0) hx_read_eof(fd, &b, 5000);
            close(fd);
            hx_buf_append(&b, "", 1);
            int has = strstr(b.data, "\"status\":\"success\"") && strstr(b.data, "\"result\":[{") &&
                      strstr(b.data, q ? "\"__name__\":\"hotproxy_request_duration_seconds_count\""
                                       : "\"__name__\":\"hotproxy_commands_processed_total\"");
            if (q) hist = hist || (has && strstr(b.data, "\"cmd\":\"get\""));
            else found = found || has;
        }
    }
    ok(found, "prometheus scraped hotproxy: /api/v1/query?query=hotproxy_commands_processed_total has the series");
    ok(hist, "and the l1_hit histogram of get");
    if (!(found && hist)) {
        diag("last answer: %.*s", (int)(b.len > 600 ? 600 : b.len), b.data);
        hx_diag_file(prom.outfile, 3000);
    }
    hx_stop(&prom, 15000);
    hx_buf_free(&b);
    hx_buf_free(&t);
}

int main(void)
{
    hx_init(300);
    if (hx_redis_start(&redis, 0) != 0) skip_all("redis-server did not start");
    mport = hx_free_port();
    char ms[16];
    snprintf(ms, sizeof(ms), "%d", mport);
    if (hx_proxy_start(&proxy, 0, redis.port, "--metrics-port", ms, NULL) != 0) skip_all("hotproxy did not start");
    redisContext *c = hx_redis(proxy.port);
    if (!c) skip_all("cannot connect to hotproxy");
    hx_cmd(c, "PING");

    test_page(c);
    test_load(c);
    test_idle(c);
    test_http(c);
    test_tracking_off();
    test_prometheus();

    redisFree(c);
    is_int(hx_stop(&proxy, 15000), 0, "hotproxy exits 0 on SIGTERM");
    done_testing();
    return exit_status();
}
