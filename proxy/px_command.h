/*
 * px_command: the command table (px_commands.def) and its lookup.
 *
 * The table is sorted by name and immutable; lookup lowercases the name into a
 * stack buffer and binary-searches it, so it needs no init and no globals.
 * Each row carries its name's first 8 bytes as one integer, worked out by the
 * compiler, which orders rows as strcmp does: most steps of the search are
 * one integer compare, not a call to strcmp.
 * What a command does to the client's connection is its handler's row
 * (px_handlers, indexed by the handler column): read, never re-decided.
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
    /* Where keys are spread over servers (a Cluster), px_split: */
    PX_F_SPLIT = 1 << 18,      /* keys of several shards: one command per shard, each key with its key_step arguments */
    PX_F_ALL_SHARDS = 1 << 19, /* no keys: sent to the server of every shard */
    PX_F_MERGE_SUM = 1 << 20,  /* the parts' integer replies are added (else arrays merge) */
    PX_F_MERGE_SAME = 1 << 21, /* every part answers the same, and that is the reply (+OK, a SHA) */
    PX_F_ANY_SHARD = 1 << 24,  /* no keys, and any server answers as well: a random one (RANDOMKEY) */
    PX_F_SCAN = 1 << 23,       /* a cursor over all keys: where keys are spread, it walks server after server */
    PX_F_CLUSTER_ONLY = 1 << 22, /* about one Cluster node (CLUSTER SLOTS, NODES...): refused where hotproxy shows
                                  * the Cluster as one standalone Redis */
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

/*
 * Connection state a command builds upstream (the PX_HANDLER rows' sets and
 * clears columns); any of it pins the client to a connection of its own.
 */
enum {
    PX_STATE_MULTI = 1 << 0,
    PX_STATE_WATCH = 1 << 1,
    PX_STATE_SUB = 1 << 2,       /* SUBSCRIBE / PSUBSCRIBE */
    PX_STATE_SSUB = 1 << 3,      /* SSUBSCRIBE */
    PX_STATE_MONITOR = 1 << 4,
    PX_STATE_TRACKING = 1 << 5,
    PX_STATE_OTHER = 1 << 6,     /* anything else that pins until RESET */
    PX_STATE_REDIRECT = 1 << 7,  /* another client's tracking redirects to its connection */
};

/* The props column of px_commands.def's PX_HANDLER rows: what every command
 * of a handler does, read by the client's dispatch. */
enum {
    PX_HP_UPSTREAM = 1 << 0,        /* goes to Redis */
    PX_HP_PIN = 1 << 1,             /* on an upstream connection of the client's own (implies UPSTREAM) */
    PX_HP_PINNED_UPSTREAM = 1 << 2, /* local, but goes to Redis when the client has a connection of its own */
    PX_HP_LOCAL = 1 << 3,           /* px_local_handle runs first: it answers, or prepares the forward */
    PX_HP_NOAUTH = 1 << 4,          /* runs before the client has authenticated */
    PX_HP_AT_ONCE = 1 << 5,         /* runs at once inside MULTI (Redis queues the others) */
    PX_HP_DEFERRED = 1 << 6,        /* local, and inside MULTI queued by hotproxy until EXEC */
    PX_HP_DENY = 1 << 7,            /* refused: replication does not go through a proxy */
    PX_HP_OOB = 1 << 8,             /* out of band, on a short-lived connection of its own */
    PX_HP_UNPINS = 1 << 9,          /* drops the client's pinned connection: waits for its replies first */
    PX_HP_ALONE = 1 << 10,          /* with no upstream reachable, hotproxy's part alone answers (INFO) */
    PX_HP_OUTSIDE_MULTI = 1 << 11,  /* its state change (and PUSHES) apply outside MULTI only */
    PX_HP_PUSHES = 1 << 12,         /* Redis answers with pushes, or frames once the connection is raw */
    PX_HP_RAW = 1 << 13,            /* in RESP2 its connection turns raw: every frame is the client's */
    PX_HP_BLOCKING = 1 << 14,       /* may wait for ever: counted blocking, the client stays read */
    PX_HP_FENCE = 1 << 15,          /* a PING goes just ahead of it on its connection (WAIT) */
    PX_HP_ONOFF = 1 << 16,          /* argument 2 is ON (sets) or OFF (clears) */
    PX_HP_TRACKING = 1 << 17,       /* CLIENT TRACKING: REDIRECT names a hotproxy client; its connection is not reused */
    PX_HP_EXEC = 1 << 18,           /* runs the transaction: what hotproxy queued since MULTI runs at its reply */
    PX_HP_MAY_END_RAW = 1 << 19,    /* may end RESP2 pub/sub mode: on a raw connection a marker follows it at once */
};

/* The handler column of px_commands.def: one per PX_HANDLER row, in order. */
typedef enum {
#define PX_HANDLER(id, props, sets, clears) id,
#include "proxy/px_commands.def"
    PX_H__COUNT
} px_handler;

/* A PX_HANDLER row. */
typedef struct px_handler_info {
    unsigned props;  /* PX_HP_* */
    unsigned sets;   /* PX_STATE_* it puts on the client's pinned connection */
    unsigned clears; /* PX_STATE_* it takes off */
} px_handler_info;

/* Indexed by px_handler: an array read, no lookup, on every command. */
extern const px_handler_info px_handlers[PX_H__COUNT];

static inline unsigned px_handler_props(px_handler h) { return px_handlers[h].props; }

typedef struct px_command {
    const char *name;   /* lowercase; "container|sub" for subcommands */
    int arity;          /* Redis' convention: -N means at least N */
    unsigned flags;
    int first_key, last_key, key_step;
    px_handler handler;
    px_keyspec keys;
    unsigned long long pfx; /* the name's first 8 bytes, big-endian, zero-padded: the lookup's compare */
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
 * px_command_lookup for a caller that keeps *hint between calls (a client's
 * last command): a command named by one word (not a container) is found
 * again with one compare of its name, so a pipeline of one command costs no
 * search.  *hint is only ever set here, to such a row.
 */
const px_command *px_command_lookup_hint(const px_command **hint, const char *name, size_t len, const char *sub,
                                         size_t sublen);

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

/* The command each element of a PX_F_MULTIGET command's reply answers (GET
 * for MGET), whose entries the L1 answers it from; NULL for other commands. */
const px_command *px_command_element(const px_command *c);

/* 1 if a command the table flags blocking but forwards (XREAD, XREADGROUP)
 * blocks as called: with a BLOCK option.  The others flagged so always may. */
int px_command_fwd_blocks(const px_command *c, int argc, const char *const *argv, const size_t *argvlen);

/* The handler a call runs with: its row's (FWD for a command not in the
 * table), BLOCK for a forwarded command that blocks as called. */
static inline px_handler px_command_handler(const px_command *c, int argc, const char *const *argv,
                                            const size_t *argvlen)
{
    if (!c) return PX_H_FWD;
    if (c->handler != PX_H_FWD || !(c->flags & PX_F_BL)) return c->handler;
    return px_command_fwd_blocks(c, argc, argv, argvlen) ? PX_H_BLOCK : PX_H_FWD;
}

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
