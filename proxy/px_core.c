/*
 * px_core: the context every layer shares.  See px_core.h.
 */
#include "proxy/px_core.h"

double px_now_fresh(px_core *k)
{
    ev_now_update(k->loop);
    return ev_now(k->loop);
}
