/*
 * px_l1_inval: what writes through hotproxy drop from the L1.  See px_l1.h.
 *
 * A write drops the keys it names (the command table's key positions)
 * before it is forwarded, and again when its reply arrives, so a fill that
 * raced with it can never be stored; one whose keys cannot be known
 * flushes.  Inside MULTI the keys are kept with the client's transaction
 * (px_client_multi_note) and dropped again at EXEC's reply.  A write that
 * may touch keys it does not name (PX_F_BARRIER: scripts) holds its reply
 * until a round trip on its pool's tracking link shows Redis' invalidations
 * for it are in (px_l1_track_hold).
 */
#include <stdlib.h>
#include <string.h>

#include "proxy/px_l1_int.h"

static void invalidate_list(px_l1 *l, const char *p, size_t n)
{
    size_t i = 0;
    while (i + 4 <= n) {
        uint32_t kl;
        memcpy(&kl, p + i, 4);
        l1_invalidate(l->cache, p + i + 4, kl);
        i += 4 + kl;
    }
}

void px_l1_inval_write(px_l1 *l, px_client *c, px_req *r, px_upstream *u)
{
    const px_command *cmd = r->cmd;
    if (cmd && !px_command_writes(cmd)) return;
    const char *const *argv;
    const size_t *argvlen;
    int argc = px_client_args(c, &argv, &argvlen);
    px_buf keys = {0};
    int flush = 0;
    int barrier = cmd && (cmd->flags & PX_F_BARRIER);
    if (cmd && (px_handlers[cmd->handler].clears & PX_STATE_MULTI)) {
        /* the transaction's writes run now (EXEC) or never (DISCARD): drop
         * their keys again at EXEC's reply */
        if (px_handler_props(cmd->handler) & PX_HP_EXEC) {
            px_client_multi_take(c, &keys, &flush, &barrier);
        } else {
            int dropped_flush, dropped_barrier;
            px_client_multi_take(c, NULL, &dropped_flush, &dropped_barrier);
        }
    } else {
        int pos[64];
        int n = cmd ? px_command_keys(cmd, argc, argv, argvlen, pos, 64) : -1;
        if (n < 0 || n > 64 || (n == 0 && cmd && (cmd->flags & PX_F_W))) {
            flush = n != 0 || !cmd || (cmd->flags & PX_F_W);
        }
        if (n > 64) {
            /* more keys than we keep positions for: list them all */
            flush = 0;
            int *all = malloc(sizeof(int) * (size_t)n);
            if (!all) abort();
            px_command_keys(cmd, argc, argv, argvlen, all, n);
            for (int i = 0; i < n; i++) px_l1_record_key(&keys, argv[all[i]], argvlen[all[i]]);
            free(all);
        } else {
            for (int i = 0; i < n; i++) px_l1_record_key(&keys, argv[pos[i]], argvlen[pos[i]]);
        }
        if (px_client_in_multi(c)) {
            /* queued: it runs at EXEC, which invalidates again (and waits) */
            px_client_multi_note(c, keys.data, keys.len, flush, barrier);
            barrier = 0;
        }
    }
    /* Without tracking, nothing says which keys it wrote: drop everything,
     * now and at the reply. */
    if (barrier && px_l1_ttl_only(l)) flush = 1;
    if (!keys.len && !flush && !barrier) {
        px_buf_free(&keys);
        return;
    }
    if (flush) {
        l1_flush(l->cache);
    } else if (keys.len) {
        invalidate_list(l, keys.data, keys.len);
        l->st.l1_invalidations_local++;
    }
    r->inval = keys.data;
    r->inval_len = keys.len;
    r->inval_flush = flush;
    r->inval_pool = u ? u->pool : NULL;
    r->barrier = barrier && !flush;
    /* the client's reads skip the L1 until its reply, barrier included */
    px_client_note_write(c, r);
}

void px_l1_inval_written(px_l1 *l, px_req *r)
{
    if (l) {
        if (r->inval_flush) l1_flush(l->cache);
        else invalidate_list(l, r->inval, r->inval_len);
    }
    free(r->inval);
    r->inval = NULL;
    r->inval_len = 0;
    r->inval_flush = 0;
}

int px_l1_inval_barrier(px_l1 *l, px_req *r, const char *reply, size_t len)
{
    r->barrier = 0;
    /* not in flight for a client (gone, or answered without Redis): nobody to hold */
    if (!l || !r->client || !r->forwarded) return 0;
    if (px_l1_ttl_only(l)) {
        l1_flush(l->cache); /* tracking ended meanwhile: nothing will tell what it wrote */
        return 0;
    }
    /* Its pool's link down: the L1 was flushed when it went and fills
     * nothing through that pool until it is back, so nothing in it
     * predates this write. */
    if (!px_l1_track_hold(l, r->inval_pool, r, reply, len)) return 0;
    l->st.l1_barriers++;
    return 1;
}
