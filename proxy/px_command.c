/*
 * px_command: the command table and its lookup.  See px_command.h.
 */
#include "proxy/px_command.h"

#include <string.h>

#define fwd PX_H_FWD
#define ping PX_H_PING
#define echo PX_H_ECHO
#define quit PX_H_QUIT
#define info PX_H_INFO
#define reset PX_H_RESET
#define auth PX_H_AUTH
#define hello PX_H_HELLO
#define select PX_H_SELECT
#define client PX_H_CLIENT
#define multi PX_H_MULTI
#define watch PX_H_WATCH
#define exec PX_H_EXEC
#define unwatch PX_H_UNWATCH
#define subscribe PX_H_SUBSCRIBE
#define unsubscribe PX_H_UNSUBSCRIBE
#define monitor PX_H_MONITOR
#define tracking PX_H_TRACKING
#define pin PX_H_PIN
#define block PX_H_BLOCK
#define deny PX_H_DENY
#define PX_CMD(name, arity, flags, first, last, step, handler) {name, arity, flags, first, last, step, handler},
static const px_command table[] = {
#include "proxy/px_commands.def"
};
#undef PX_CMD
#undef fwd
#undef ping
#undef echo
#undef quit
#undef info
#undef reset
#undef auth
#undef hello
#undef select
#undef client
#undef multi
#undef watch
#undef exec
#undef unwatch
#undef subscribe
#undef unsubscribe
#undef monitor
#undef tracking
#undef pin
#undef block
#undef deny

#define NCOMMANDS ((int)(sizeof(table) / sizeof(table[0])))

int px_command_count(void) { return NCOMMANDS; }

const px_command *px_command_at(int i)
{
    return i >= 0 && i < NCOMMANDS ? &table[i] : NULL;
}

int px_command_index(const px_command *c) { return (int)(c - table); }

static const px_command *find(const char *key)
{
    int lo = 0, hi = NCOMMANDS - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        int c = strcmp(key, table[mid].name);
        if (c == 0) return &table[mid];
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return NULL;
}

/* Lowercase n bytes into out; 0 if too long or holds a NUL (no command does). */
static size_t lower(char *out, size_t cap, const char *s, size_t n)
{
    if (n >= cap) return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '\0') return 0;
        out[i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
    }
    out[n] = '\0';
    return n;
}

const px_command *px_command_lookup(const char *name, size_t len, const char *sub, size_t sublen)
{
    char key[64];
    size_t n = lower(key, 32, name, len);
    if (!n) return NULL;
    const px_command *c = find(key);
    if (!c || !(c->flags & PX_F_CONT) || !sub) return c;
    key[n] = '|';
    if (!lower(key + n + 1, sizeof(key) - n - 1, sub, sublen)) return c;
    const px_command *s = find(key);
    return s ? s : c;
}
