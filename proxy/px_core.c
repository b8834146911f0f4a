/*
 * px_core: the context every layer shares.  See px_core.h.
 */
#include "proxy/px_core.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/px_tls.h"

double px_now_fresh(px_core *k)
{
    ev_now_update(k->loop);
    return ev_now(k->loop);
}

void px_lat_flush(px_core *k)
{
    if (k->lat_n) {
        uint64_t now = px_clock_ns(), last = 0, ns = 0;
        int bucket = 0;
        for (int i = 0; i < k->lat_n; i++) {
            uint64_t t0 = k->lat_pend[i].t0;
            if (t0 != last) { /* the commands of one batch share their start, so their bucket */
                last = t0;
                ns = now > t0 ? now - t0 : 0;
                bucket = px_stats_lat_bucket(ns);
            }
            px_stats_latency_in(&k->stats, k->lat_pend[i].slot, bucket, ns);
        }
        k->lat_n = 0;
    }
    k->lat_t0 = 0; /* the next command reads the clock again */
}

int px_core_upstream_tls(px_core *k, const px_config *c, char *err, size_t errlen)
{
    if (!k->cfg->upstream_tls) return 0;
    px_tls_ctx *x = px_tls_client_ctx(c, err, errlen);
    if (!x) return -1;
    px_tls_ctx_free(k->upstream_tls);
    k->upstream_tls = x;
    return 0;
}

int px_listen_tcp(const char *addr, long long port, int backlog, const char *directive, const char *what, char *err,
                  size_t errlen)
{
    struct addrinfo hints, *res = NULL;
    char service[24];
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    snprintf(service, sizeof(service), "%lld", port);
    int rc = getaddrinfo(addr, service, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "%s %s: %s", directive, addr, gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, backlog) == 0) break;
        snprintf(err, errlen, "%s %s:%lld: %s", what, addr, port, strerror(errno));
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}
