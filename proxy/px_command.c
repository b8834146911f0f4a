/*
 * px_command: the command table and its lookup.  See px_command.h.
 */
#include "proxy/px_command.h"

#include <string.h>
#include <strings.h>

#include "proxy/px_resp.h"

const px_handler_info px_handlers[PX_H__COUNT] = {
#define PX_HANDLER(id, props, sets, clears) [id] = {props, sets, clears},
#include "proxy/px_commands.def"
};

/* Byte i of a name literal in bits 56 - 8i (0 past its end), at compile time. */
#define PFX_AT(s, i) ((unsigned long long)(sizeof(s) > (i) + 1 ? (unsigned char)(s)[i] : 0) << (56 - 8 * (i)))
#define PFX(s) \
    (PFX_AT(s, 0) | PFX_AT(s, 1) | PFX_AT(s, 2) | PFX_AT(s, 3) | PFX_AT(s, 4) | PFX_AT(s, 5) | PFX_AT(s, 6) | PFX_AT(s, 7))

static const px_command table[] = {
#define PX_CMD(name, arity, flags, first, last, step, handler, keys) \
    {name, arity, flags, first, last, step, handler, keys, PFX(name)},
#include "proxy/px_commands.def"
};

#define NCOMMANDS ((int)(sizeof(table) / sizeof(table[0])))

int px_command_count(void) { return NCOMMANDS; }

const px_command *px_command_at(int i)
{
    return i >= 0 && i < NCOMMANDS ? &table[i] : NULL;
}

int px_command_index(const px_command *c) { return (int)(c - table); }

/* key: n lowercase bytes and a NUL; pfx: its first 8 as in PFX.  The
 * search is a branchless lower bound on pfx; names sharing their first 8
 * bytes (all at least 8 long, "client|..." or "georadiu...") follow it, few
 * at a time, and are told apart by the rest. */
static const px_command *find_pfx(const char *key, size_t n, unsigned long long pfx)
{
    const px_command *base = table;
    size_t len = NCOMMANDS;
    while (len > 1) {
        size_t half = len / 2;
        base = base[half - 1].pfx < pfx ? base + half : base;
        len -= half;
    }
    if (base->pfx < pfx) base++;
    for (const px_command *end = table + NCOMMANDS; base < end && base->pfx == pfx; base++)
        if (n < 8 || !strcmp(key + 8, base->name + 8)) return base;
    return NULL;
}

/* Lowercase n bytes into out (with a NUL) and their first 8 into *pfx; 0 if
 * too long or holding a NUL or a '|' (no name a client may send does). */
static size_t lower(char *out, size_t cap, const char *s, size_t n, unsigned long long *pfx)
{
    unsigned long long w = 0;
    if (n >= cap) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '\0' || ch == '|') return 0;
        if (ch >= 'A' && ch <= 'Z') ch = (unsigned char)(ch + 32);
        out[i] = (char)ch;
        if (i < 8) w |= (unsigned long long)ch << (56 - 8 * i);
    }
    out[n] = '\0';
    *pfx = w;
    return n;
}

static const px_command *find(const char *key)
{
    char k[64];
    unsigned long long pfx;
    size_t n = lower(k, sizeof(k), key, strlen(key), &pfx);
    return n ? find_pfx(k, n, pfx) : NULL;
}

const px_command *px_command_lookup(const char *name, size_t len, const char *sub, size_t sublen)
{
    char key[64];
    unsigned long long pfx;
    /* "client|setname" is not a name a client may send: lower refuses a '|' */
    size_t n = lower(key, 32, name, len, &pfx);
    if (!n) return NULL;
    const px_command *c = find_pfx(key, n, pfx);
    if (!c || !(c->flags & PX_F_CONT) || !sub) return c;
    /* "container|sub": its first 8 bytes again, with the bar and the sub's start */
    size_t m = lower(key + n + 1, sizeof(key) - n - 1, sub, sublen, &pfx);
    if (!m) return c;
    key[n] = '|';
    pfx = 0;
    for (size_t i = 0; i < 8 && i < n + 1 + m; i++) pfx |= (unsigned long long)(unsigned char)key[i] << (56 - 8 * i);
    const px_command *s = find_pfx(key, n + 1 + m, pfx);
    return s ? s : c;
}

const px_command *px_command_lookup_hint(const px_command **hint, const char *name, size_t len, const char *sub,
                                         size_t sublen)
{
    const px_command *h = *hint;
    if (h) {
        /* its name, case aside, and nothing more (a NUL or a '|' in name never matches) */
        size_t i = 0;
        for (; i < len && h->name[i]; i++) {
            unsigned char ch = (unsigned char)name[i];
            if (ch >= 'A' && ch <= 'Z') ch = (unsigned char)(ch + 32);
            if (ch != (unsigned char)h->name[i]) break;
        }
        if (i == len && !h->name[len]) return h;
    }
    const px_command *c = px_command_lookup(name, len, sub, sublen);
    /* a plain row only: a container's answer depends on its subcommand too */
    *hint = c && !(c->flags & PX_F_CONT) && !strchr(c->name, '|') ? c : NULL;
    return c;
}

static int is(const char *a, size_t n, const char *lit)
{
    return strlen(lit) == n && !strncasecmp(a, lit, n);
}

int px_command_streams(const px_command *c, int argc, const char *const *argv, const size_t *argvlen, int *block)
{
    /* XREAD [COUNT n] [BLOCK ms] STREAMS ...
     * XREADGROUP GROUP g c [COUNT n] [BLOCK ms] [NOACK] STREAMS ... */
    int i = 1;
    if (block) *block = 0;
    if (c->keys == PX_KS_GROUP_STREAMS) {
        if (argc < 4 || !is(argv[1], argvlen[1], "group")) return -1;
        i = 4;
    }
    for (; i < argc; i++) {
        if (is(argv[i], argvlen[i], "streams")) return i;
        if (is(argv[i], argvlen[i], "block") && block) *block = 1;
        if (is(argv[i], argvlen[i], "count") || is(argv[i], argvlen[i], "block")) i++;
        else if (!is(argv[i], argvlen[i], "noack")) return -1;
    }
    return -1;
}

const px_command *px_command_element(const px_command *c)
{
    /* one row so far: MGET is GETs (the table's comment on PX_F_MULTIGET) */
    return c && (c->flags & PX_F_MULTIGET) ? find("get") : NULL;
}

int px_command_fwd_blocks(const px_command *c, int argc, const char *const *argv, const size_t *argvlen)
{
    int block = 0;
    if (c->keys != PX_KS_STREAMS && c->keys != PX_KS_GROUP_STREAMS) return 1;
    px_command_streams(c, argc, argv, argvlen, &block);
    return block;
}

static int add_key(int *out, int max, int n, int pos)
{
    if (n < max) out[n] = pos;
    return n + 1;
}

int px_command_keys(const px_command *c, int argc, const char *const *argv, const size_t *argvlen, int *out, int max)
{
    int n = 0;
    long long nk;
    switch (c->keys) {
    case PX_KS_FIXED: {
        if (c->first_key <= 0) return 0;
        int last = c->last_key < 0 ? argc + c->last_key : c->last_key;
        if (last >= argc) last = argc - 1;
        for (int i = c->first_key; i <= last; i += c->key_step > 0 ? c->key_step : 1) n = add_key(out, max, n, i);
        return n;
    }
    case PX_KS_NUMKEYS1:
    case PX_KS_NUMKEYS2:
    case PX_KS_STORE_NUMKEYS: {
        int at = c->keys == PX_KS_NUMKEYS1 ? 1 : 2;
        if (argc <= at || !px_string2ll(argv[at], argvlen[at], &nk) || nk < 0 || nk > argc - at - 1) return -1;
        if (c->keys == PX_KS_STORE_NUMKEYS) n = add_key(out, max, n, 1);
        for (int i = 0; i < (int)nk; i++) n = add_key(out, max, n, at + 1 + i);
        return n;
    }
    case PX_KS_STREAMS:
    case PX_KS_GROUP_STREAMS: {
        int at = px_command_streams(c, argc, argv, argvlen, NULL);
        int rest = argc - at - 1;
        if (at < 0 || rest <= 0 || rest % 2) return -1;
        for (int k = 0; k < rest / 2; k++) n = add_key(out, max, n, at + 1 + k);
        return n;
    }
    case PX_KS_SORT:
        if (argc < 2) return -1;
        n = add_key(out, max, n, 1);
        /* SORT key [BY p] [LIMIT o c] [GET p ...] [ASC|DESC] [ALPHA] [STORE dst] */
        for (int i = 2; i < argc; i++) {
            if (is(argv[i], argvlen[i], "by") || is(argv[i], argvlen[i], "get")) i += 1;
            else if (is(argv[i], argvlen[i], "limit")) i += 2;
            else if (is(argv[i], argvlen[i], "store") && i + 1 < argc) n = add_key(out, max, n, ++i);
        }
        return n;
    case PX_KS_UNKNOWN:
    default:
        return -1;
    }
}
