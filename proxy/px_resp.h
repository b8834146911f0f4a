/*
 * px_resp: the RESP byte layer, and the only module that touches hiredis'
 * redisReader.
 *
 * Two scanners, both resumable (state lives in a struct the caller owns, so a
 * request or reply split across any number of reads is scanned once, never
 * from the start again) and both allocation-free on the hot path:
 *
 *  - px_req_parse() reads client requests the way Redis' processMultibulkBuffer
 *    and processInlineBuffer do, with the same limits and the same
 *    "Protocol error: ..." texts, so a client cannot tell hotproxy from Redis.
 *    Multibulk arguments are reported as offsets into the caller's buffer;
 *    inline arguments (which need unquoting) are copied into the parser.
 *
 *  - px_reply_scan() finds where one upstream reply ends, for RESP2 and RESP3,
 *    without building objects: hotproxy forwards the bytes Redis sent.  It
 *    is iterative, with a stack of "elements left" per open aggregate that
 *    grows on the heap past PX_REPLY_INLINE_DEPTH, so nesting is bounded only
 *    by memory, as in Redis (a script can return a table nested thousands of
 *    levels deep, and Redis sends it).  (hiredis 0.14's redisReader stops at
 *    nesting depth 7, which Redis 7's COMMAND reply exceeds, and knows no
 *    RESP3; it is used below only to decode small replies hotproxy must read
 *    itself, never a reply a client will see.)
 */
#ifndef PX_RESP_H
#define PX_RESP_H

#include <stddef.h>
#include <stdint.h>

#define PX_OK     0
#define PX_AGAIN  1
#define PX_ERR   -1

#define PX_INLINE_MAX_SIZE (64 * 1024)   /* Redis PROTO_INLINE_MAX_SIZE */
#define PX_REPLY_INLINE_DEPTH 32       /* levels tracked without allocating */
/* Before authentication, as Redis 7 (networking.c): arguments and bulk bytes. */
#define PX_UNAUTH_MAX_ARGS 10
#define PX_UNAUTH_MAX_BULK 16384

typedef struct px_arg {
    size_t off; /* offset from the command's first byte (or into inline scratch) */
    size_t len;
} px_arg;

typedef struct px_req_parser {
    /* limits, set once by the owner */
    long long max_bulk_len; /* proto-max-bulk-len */
    /* set by the owner before each call: the client has not authenticated
     * yet, so Redis' tighter limits apply (at most 10 arguments of at most
     * 16 KB each), and a stranger cannot make it buffer a large request */
    int unauthenticated;

    /* parse state of the command being read */
    int type;              /* 0: not started, '*': multibulk, 'i': inline */
    long long mbulk_left;  /* multibulk arguments not read yet */
    long long bulk_len;    /* length of the argument being read, -1 before its header */
    size_t pos;            /* bytes of this command consumed so far */
    size_t need;           /* on PX_AGAIN: the command needs at least this many bytes */

    int argc;
    int argv_cap;
    px_arg *argv;
    char *scratch;         /* unquoted inline arguments */
    size_t scratch_cap;

    const char *errstr;    /* on PX_ERR: text after "-ERR " */
    char errbuf[64];
} px_req_parser;

void px_req_parser_init(px_req_parser *p, long long max_bulk_len);
void px_req_parser_free(px_req_parser *p);
/* Forget the current command; call after PX_OK has been handled. */
void px_req_parser_reset(px_req_parser *p);

/*
 * Scan buf[0..len), which starts at the first byte of a command and holds
 * everything received since.  Returns PX_OK when one command is complete:
 * p->pos is its length in bytes and p->argc its arguments (argc 0 is an empty
 * command such as "*0\r\n" or a blank inline line, which Redis skips).
 * PX_AGAIN: call again with the same start and more bytes.  PX_ERR: the
 * client must get "-ERR <p->errstr>" and be closed.
 */
int px_req_parse(px_req_parser *p, const char *buf, size_t len);

/* Argument i of the command just parsed; buf is the one given to px_req_parse. */
static inline const char *px_req_arg(const px_req_parser *p, const char *buf, int i, size_t *len)
{
    *len = p->argv[i].len;
    return (p->type == 'i' ? p->scratch : buf) + p->argv[i].off;
}

typedef struct px_reply_scanner {
    size_t pos;              /* bytes of this reply consumed so far */
    size_t need;             /* on PX_AGAIN: at least this many bytes are needed */
    size_t depth;            /* aggregates open */
    size_t cap;              /* levels left can hold (0: the inline stack) */
    long long *left;         /* elements still expected at each level; heap when cap > 0 */
    long long inline_left[PX_REPLY_INLINE_DEPTH];
    const char *errstr;
} px_reply_scanner;

/* init before first use, free when done; reset forgets the reply being
 * scanned (and gives back a deep reply's stack).  init is a reset. */
void px_reply_scanner_init(px_reply_scanner *s);
void px_reply_scanner_reset(px_reply_scanner *s);
void px_reply_scanner_free(px_reply_scanner *s);
/*
 * Scan buf[0..len), which starts at the first byte of a reply.  PX_OK: the
 * reply is s->pos bytes long (attributes, RESP3 '|', are part of the reply
 * they precede).  PX_AGAIN: more bytes needed.  PX_ERR: not RESP.
 */
int px_reply_scan(px_reply_scanner *s, const char *buf, size_t len);
/* The length of the complete reply that starts at buf, or 0 when buf[0..len)
 * holds no complete reply (a one-shot px_reply_scan, for walking the
 * elements of a reply already framed). */
size_t px_reply_len(const char *buf, size_t len);

/*
 * For the few replies hotproxy reads itself (INFO, HELLO): the payload of a
 * complete bulk, simple, verbatim or error reply.  Returns 0 and sets
 * out and outlen (pointing into buf), or -1 if the reply is of another type.
 */
int px_reply_string(const char *buf, size_t len, const char **out, size_t *outlen);

/*
 * Decode one complete RESP2 reply into hiredis objects (free with
 * freeReplyObject), for the few replies hotproxy reads in full: the
 * invalidation link's messages.  NULL if it is not one complete RESP2 reply.
 */
struct redisReply;
struct redisReply *px_reply_decode(const char *buf, size_t len);

/* Encoders, for what hotproxy writes itself (commands it sends, replies it
 * builds).  A bulk: "$<n>\r\n<bytes>\r\n". */
struct px_buf;
void px_resp_bulk(struct px_buf *b, const void *p, size_t n);
/* A command as a multibulk request; argvlen NULL means C strings. */
void px_resp_command(struct px_buf *b, int argc, const char *const *argv, const size_t *argvlen);

/* Redis' string2ll: strict decimal, no spaces, no '+', no leading zeros. */
int px_string2ll(const char *s, size_t len, long long *value);

#endif
