/*
 * px_command: lookup in the command table (px_commands.def).
 *
 * The table is sorted by name and immutable; lookup lowercases the name into a
 * stack buffer and binary-searches it, so it needs no init and no globals.
 */
#ifndef PX_COMMAND_H
#define PX_COMMAND_H

#include <stddef.h>

enum {
    PX_F_W = 1 << 0,       /* may modify keys */
    PX_F_R = 1 << 1,       /* reads only */
    PX_F_A = 1 << 2,       /* admin */
    PX_F_PS = 1 << 3,      /* pub/sub */
    PX_F_BL = 1 << 4,      /* may block */
    PX_F_MK = 1 << 5,      /* keys found by parsing arguments */
    PX_F_FAST = 1 << 6,
    PX_F_NOMULTI = 1 << 7,
    PX_F_CONT = 1 << 8,    /* a container: the first argument names a subcommand */
    PX_F_CACHE = 1 << 9,   /* the L1 may keep its reply (see px_commands.def) */
    PX_F_MULTIGET = 1 << 10, /* its reply is an array of each key's GET reply (MGET) */
    PX_F_TTL_OPT = 1 << 11,  /* a relative TTL in an EX/PX option (SET, GETEX) */
    PX_F_TTL_S2 = 1 << 12,   /* a TTL in seconds at argument 2 (SETEX, EXPIRE) */
    PX_F_TTL_MS2 = 1 << 13,  /* a TTL in milliseconds at argument 2 (PSETEX, PEXPIRE) */
    PX_F_NIL = 1 << 14,      /* a missing key reads as the null reply (GET, HGET...) */
    PX_F_DG = 1 << 15,       /* in Redis 7.0's @dangerous ACL category (which holds all of @admin) */
    PX_F_BARRIER = 1 << 16,  /* may write keys it does not name: its reply waits for Redis' invalidations */
    PX_F_REWRITES = 1 << 17, /* read-only for Redis, but may rewrite its key's value (PFCOUNT) */
};

/* The keys column of px_commands.def. */
typedef enum {
    PX_KS_FIXED,
    PX_KS_NUMKEYS1,
    PX_KS_NUMKEYS2,
    PX_KS_STORE_NUMKEYS,
    PX_KS_STREAMS,
    PX_KS_GROUP_STREAMS,
    PX_KS_SORT,
    PX_KS_UNKNOWN,
} px_keyspec;

/* The handler column of px_commands.def; its comment says what each means. */
typedef enum {
    PX_H_FWD,
    PX_H_REDACT,
    PX_H_PING,
    PX_H_ECHO,
    PX_H_QUIT,
    PX_H_INFO,
    PX_H_RESET,
    PX_H_AUTH,
    PX_H_HELLO,
    PX_H_SELECT,
    PX_H_CLIENT,
    PX_H_ADMIN,
    PX_H_MULTI,
    PX_H_WATCH,
    PX_H_EXEC,
    PX_H_DISCARD,
    PX_H_UNWATCH,
    PX_H_SUBSCRIBE,
    PX_H_SSUBSCRIBE,
    PX_H_UNSUBSCRIBE,
    PX_H_MONITOR,
    PX_H_TRACKING,
    PX_H_PIN,
    PX_H_BLOCK,
    PX_H_WAIT,
    PX_H_OOB,
    PX_H_DENY,
} px_handler;

typedef struct px_command {
    const char *name;   /* lowercase; "container|sub" for subcommands */
    int arity;          /* Redis' convention: -N means at least N */
    unsigned flags;
    int first_key, last_key, key_step;
    px_handler handler;
    px_keyspec keys;
} px_command;

/* Number of entries, and entry i (for INFO's per-command section). */
int px_command_count(void);
const px_command *px_command_at(int i);
/* Position of c in the table, for per-command counters. */
int px_command_index(const px_command *c);

/*
 * The command named by argv[0] (and argv[1] for containers), or NULL if
 * unknown.  sub may be NULL.  A container whose subcommand is unknown returns
 * the container itself.
 */
const px_command *px_command_lookup(const char *name, size_t len, const char *sub, size_t sublen);

/*
 * The argument positions of the keys of a command, into out (at most max);
 * returns how many, or -1 when they cannot be worked out (PX_KS_UNKNOWN, or
 * arguments too malformed to say: Redis will refuse the command anyway).
 */
int px_command_keys(const px_command *c, int argc, const char *const *argv, const size_t *argvlen, int *out, int max);

/*
 * XREAD/XREADGROUP (PX_KS_STREAMS, PX_KS_GROUP_STREAMS): the position of the STREAMS keyword (-1 if missing), and
 * in *block (if given) whether a BLOCK option came before it.
 */
int px_command_streams(const px_command *c, int argc, const char *const *argv, const size_t *argvlen, int *block);

/* 1 if a command may change the data set (anything not read-only counts, and
 * the read-only commands that may rewrite a value). */
static inline int px_command_writes(const px_command *c)
{
    return c == NULL || !(c->flags & PX_F_R) || (c->flags & PX_F_REWRITES);
}

/* 1 if only admin users may run it (Redis' @admin and @dangerous, and
 * hotproxy's own admin commands). */
static inline int px_command_admin_only(const px_command *c)
{
    return c != NULL && (c->flags & (PX_F_A | PX_F_DG));
}

/* 1 if argc satisfies the command's arity. */
static inline int px_command_arity_ok(const px_command *c, int argc)
{
    return c->arity >= 0 ? argc == c->arity : argc >= -c->arity;
}

#endif
