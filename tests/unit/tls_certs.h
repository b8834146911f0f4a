/*
 * tls_certs.h: the TLS unit tests' certificates, made by tests/tls-certs.sh
 * (the integration tests' recipe: ca, other-ca, server with SAN
 * DNS:localhost and IP:127.0.0.1, client...) in a temporary directory.
 * HX_SOURCE_DIR comes from CMake, as for the integration harness.
 */
#ifndef TLS_CERTS_H
#define TLS_CERTS_H

#include <stdio.h>
#include <stdlib.h>

static char tls_dir[64];

/* Make the certificates in a new directory /tmp/<tag>.XXXXXX: 0, or -1. */
static int tls_certs_make(const char *tag)
{
    char cmd[512];
    snprintf(tls_dir, sizeof(tls_dir), "/tmp/%s.XXXXXX", tag);
    if (!mkdtemp(tls_dir)) return -1;
    snprintf(cmd, sizeof(cmd), "bash '%s/tests/tls-certs.sh' '%s' >/dev/null 2>&1", HX_SOURCE_DIR, tls_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* tls_dir/file, in one of 8 rotating buffers. */
static char *tls_path(const char *file)
{
    static char buf[8][128];
    static int i;
    i = (i + 1) % 8;
    snprintf(buf[i], sizeof(buf[i]), "%s/%s", tls_dir, file);
    return buf[i];
}

/* Remove the directory and what is in it. */
static void tls_certs_remove(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tls_dir);
    if (system(cmd) != 0) fprintf(stderr, "# could not remove %s\n", tls_dir);
}

#endif
