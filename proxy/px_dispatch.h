/*
 * px_dispatch: what happens to each command a client sends (see
 * px_dispatch.c).  The server hands these to its clients: the client side
 * reads and orders, this decides.  Their argument is the px_server.
 */
#ifndef PX_DISPATCH_H
#define PX_DISPATCH_H

#include "proxy/px_client.h"

extern const px_client_ops px_dispatch_ops;

#endif
