/*
 * px_policy: what the cache-rules do to writes on their way to Redis.
 *
 * For keys whose rule sets write-ttl-jitter, a relative TTL the client
 * writes (SET EX/PX, SETEX, PSETEX, GETEX EX/PX, EXPIRE, PEXPIRE: the
 * PX_F_TTL_* flags of the command table say where it is) is spread by up to
 * that percentage either way, so keys written together do not expire
 * together.  The bounds: a TTL stays a TTL (never removed, never below 1 s
 * for seconds or 1 ms), and is never shortened below min(TTL, the rule's
 * write-ttl-floor).  Everything else is left as the client wrote it.
 */
#ifndef PX_POLICY_H
#define PX_POLICY_H

#include <stdint.h>

struct px_client;
struct px_req;

/*
 * If the command being dispatched carries a TTL its rule spreads, write the
 * rewritten command into c->rewrite and return 1; otherwise 0.
 * rng is the caller's random state (xorshift).
 */
int px_policy_write_ttl(struct px_client *c, struct px_req *r, uint64_t *rng);

/* The TTL after jitter: ttl spread by up to pct percent, u in [0, 1). */
long long px_policy_spread(long long ttl, long long pct, long long floor, double u);

#endif
