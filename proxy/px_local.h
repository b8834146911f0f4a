/*
 * px_local: the commands hotproxy answers or rewrites itself (PING, ECHO,
 * QUIT, RESET, INFO, AUTH, HELLO, SELECT, the CLIENT and HOTPROXY
 * subcommands...): one function per handler the command table marks
 * PX_HP_LOCAL, chosen by the row's handler column, never by the name.
 */
#ifndef PX_LOCAL_H
#define PX_LOCAL_H

#include <stddef.h>

#include "proxy/px_command.h"

struct px_client;
struct px_req;

/*
 * Handle request r (its command's handler is not "fwd").  Returns 1 when r
 * was answered, 0 when it must still be forwarded (r->hook may be set).
 */
int px_local_handle(struct px_client *c, struct px_req *r, int argc, const char *const *argv, const size_t *argvlen);

/* 1 if px_local_handle has a function for handler h (the table's
 * PX_HP_LOCAL says which must). */
int px_local_has_handler(px_handler h);

/*
 * CLIENT TRACKING ... REDIRECT <id>: the id a client knows is hotproxy's; Redis
 * needs the id of that client's pinned connection.  Writes the translated
 * command into c->rewrite; returns -1 (r answered with Redis' error) when
 * no such pinned client exists.  In front of a Redis Cluster: REDIRECT,
 * OPTIN and OPTOUT are refused (-1, r answered with why), and the command
 * also goes to the client's connections of the other masters
 * (px_client_track_cmd).
 */
int px_local_tracking(struct px_client *c, struct px_req *r, int argc, const char *const *argv, const size_t *argvlen);

/*
 * Before CLIENT TRACKING ... REDIRECT <id> is dispatched: the target needs
 * an upstream connection with a known Redis id.  A target without one is
 * given one (px_client_pin_redirect_target); if its id is not known yet,
 * returns 0 and c is resumed (px_client_resume) once it is.  1: go on.
 */
int px_local_tracking_ready(struct px_client *c, int argc, const char *const *argv, const size_t *argvlen);

/* INFO when the upstream cannot be asked: hotproxy's sections alone. */
void px_local_info_alone(struct px_client *c, struct px_req *r);

#endif
