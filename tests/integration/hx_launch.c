/*
 * hx_launch: the harness' Redis launcher for tests that are not C programs
 * (tests/tap.sh's `launch`, test_python.sh).  It starts what each SPEC names
 * through harness.c -- the only code that starts redis-server and
 * redis-sentinel and waits for them -- prints where they are as name=value
 * lines, then "hx_ready=1", and keeps them running until its stdin closes or
 * a signal comes; then it stops them and removes their temp dir.
 *
 *   hx_launch [--watchdog SECONDS] [--tls [--tls-auth-clients yes|no|optional]] SPEC...
 *
 * Each SPEC is one argument, words separated by spaces:
 *   "redis NAME [ARG...]"       a redis-server; ARGs go to it ("--maxmemory 1mb")
 *       NAME_port NAME_pid NAME_log
 *   "sentinel NAME [replicas=N] [sentinels=N] [quorum=N] [down-after=MS]
 *             [failover-timeout=MS] [password=PW]"
 *       a master named NAME, its replicas, Sentinels watching it, ready as
 *       hx_sentinel_start says:  NAME_master_port NAME_replica_ports
 *       NAME_sentinel_ports (space-separated)
 *   "cluster NAME [masters=N] [replicas=N]"
 *       a Redis Cluster with cluster_state:ok everywhere:  NAME_ports (all)
 *       NAME_master_ports NAME_replica_ports
 * and once for all:  hx_dir (the temp dir).  With --tls, certificates are
 * made in hx_dir/tls (tests/tls-certs.sh: ca, server, client, expired,
 * wrong, wrongname, ...; printed as hx_tls_dir) and every server, Sentinel
 * and cluster node is TLS-only: its port is a tls-port, and clients need
 * --tls --cacert $hx_tls_dir/ca.crt --cert $hx_tls_dir/client.crt --key
 * $hx_tls_dir/client.key (tls-auth-clients as given; Redis' default yes).  Lines starting with "#" are
 * diagnostics (TAP comments).  Exit status 1 when something did not start
 * (the reader sees no hx_ready line), 2 on a bad SPEC.
 *
 * Reading from a pipe that the test holds is what makes it safe: however the
 * test ends, even by SIGKILL, its end of the pipe closes and everything here
 * stops.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "tap.h"

#define MAX_SPECS 8
#define MAX_WORDS 48

typedef struct spec {
    char *words[MAX_WORDS + 1];
    int nwords;
    int is_topo;
    hx_proc redis;
    hx_topo topo;
} spec;

static int usage(const char *why)
{
    fprintf(stderr,
            "hx_launch: %s\nusage: hx_launch [--watchdog SECONDS] [--tls [--tls-auth-clients yes|no|optional]] "
            "SPEC... (see hx_launch.c)\n",
            why);
    return 2;
}

/* --tls: the certificate directory every SPEC uses, NULL for plain. */
static const char *tls_dir;
static const char *tls_auth;

static int valid_name(const char *s)
{
    if (!s || !((*s >= 'a' && *s <= 'z') || *s == '_')) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_')) return 0;
    return 1;
}

/* key=N words of a sentinel or cluster SPEC; -1 and a message on a bad one. */
static int int_option(const char *word, const char *key, int *out)
{
    size_t kl = strlen(key);
    if (strncmp(word, key, kl) || word[kl] != '=') return 0;
    char *end;
    long v = strtol(word + kl + 1, &end, 10);
    if (*end || end == word + kl + 1 || v < 0 || v > 10000000) {
        fprintf(stderr, "hx_launch: %s wants a number, got '%s'\n", key, word + kl + 1);
        return -1;
    }
    *out = (int)v;
    return 1;
}

static void print_ports(const char *name, const char *what, const hx_proc *p, int n)
{
    printf("%s_%s=", name, what);
    for (int i = 0; i < n; i++) printf("%s%d", i ? " " : "", p[i].port);
    printf("\n");
}

static int start_sentinel(spec *s)
{
    hx_sentinel_opts o = {.name = s->words[1], .tls_dir = tls_dir, .tls_auth_clients = tls_auth};
    for (int i = 2; i < s->nwords; i++) {
        const char *w = s->words[i];
        int r = int_option(w, "replicas", &o.replicas);
        if (!r) r = int_option(w, "sentinels", &o.sentinels);
        if (!r) r = int_option(w, "quorum", &o.quorum);
        if (!r) r = int_option(w, "down-after", &o.down_after_ms);
        if (!r) r = int_option(w, "failover-timeout", &o.failover_timeout_ms);
        if (!r && !strncmp(w, "password=", 9) && w[9]) {
            o.password = w + 9;
            r = 1;
        }
        if (r < 0) return 2;
        if (!r) return usage("a sentinel SPEC takes replicas= sentinels= quorum= down-after= failover-timeout= "
                             "password=");
    }
    if (hx_sentinel_start(&s->topo, &o) != 0) return 1;
    printf("%s_master_port=%d\n", s->words[1], s->topo.masters[0].port);
    print_ports(s->words[1], "replica_ports", s->topo.replicas, s->topo.nreplicas);
    print_ports(s->words[1], "sentinel_ports", s->topo.sentinels, s->topo.nsentinels);
    return 0;
}

static int start_cluster(spec *s)
{
    hx_cluster_opts o = {.tls_dir = tls_dir, .tls_auth_clients = tls_auth};
    for (int i = 2; i < s->nwords; i++) {
        int r = int_option(s->words[i], "masters", &o.masters);
        if (!r) r = int_option(s->words[i], "replicas", &o.replicas);
        if (r < 0) return 2;
        if (!r) return usage("a cluster SPEC takes masters= replicas=");
    }
    if (hx_cluster_start(&s->topo, &o) != 0) return 1;
    const char *n = s->words[1];
    printf("%s_ports=", n);
    for (int i = 0; i < s->topo.nmasters; i++) printf("%s%d", i ? " " : "", s->topo.masters[i].port);
    for (int i = 0; i < s->topo.nreplicas; i++) printf(" %d", s->topo.replicas[i].port);
    printf("\n");
    print_ports(n, "master_ports", s->topo.masters, s->topo.nmasters);
    print_ports(n, "replica_ports", s->topo.replicas, s->topo.nreplicas);
    return 0;
}

static int start_redis(spec *s)
{
    hx_redis_opts o = {.extra = (const char *const *)s->words + 2,
                       .name = s->words[1],
                       .tls_dir = tls_dir,
                       .tls_auth_clients = tls_auth};
    if (hx_redis_start_opts(&s->redis, &o) != 0) return 1;
    printf("%s_port=%d\n%s_pid=%d\n%s_log=%s\n", s->words[1], s->redis.port, s->words[1], (int)s->redis.pid,
           s->words[1], s->redis.logfile);
    return 0;
}

int main(int argc, char **argv)
{
    static spec specs[MAX_SPECS];
    int nspecs = 0, first = 1;
    unsigned watchdog = 900;
    int tls = 0;
    while (first < argc && !strncmp(argv[first], "--", 2)) {
        if (!strcmp(argv[first], "--watchdog") && first + 1 < argc) {
            watchdog = (unsigned)strtoul(argv[first + 1], NULL, 10);
            first += 2;
        } else if (!strcmp(argv[first], "--tls")) {
            tls = 1;
            first++;
        } else if (!strcmp(argv[first], "--tls-auth-clients") && first + 1 < argc &&
                   (!strcmp(argv[first + 1], "yes") || !strcmp(argv[first + 1], "no") ||
                    !strcmp(argv[first + 1], "optional"))) {
            tls_auth = argv[first + 1];
            first += 2;
        } else {
            return usage("unknown option, or a bad value for it");
        }
    }
    if (tls_auth && !tls) return usage("--tls-auth-clients without --tls");
    if (first >= argc) return usage("no SPEC");
    for (int a = first; a < argc; a++) {
        if (nspecs == MAX_SPECS) return usage("too many SPECs");
        spec *s = &specs[nspecs++];
        char *save = NULL;
        for (char *w = strtok_r(argv[a], " ", &save); w; w = strtok_r(NULL, " ", &save)) {
            if (s->nwords == MAX_WORDS) return usage("too many words in one SPEC");
            s->words[s->nwords++] = w;
        }
        if (s->nwords < 2 || !valid_name(s->words[1])) return usage("a SPEC is KIND NAME ..., NAME in [a-z0-9_]");
        if (strcmp(s->words[0], "redis") && strcmp(s->words[0], "sentinel") && strcmp(s->words[0], "cluster"))
            return usage("a SPEC's KIND is redis, sentinel or cluster");
        for (int i = 0; i < nspecs - 1; i++)
            if (!strcmp(specs[i].words[1], s->words[1])) return usage("two SPECs with one NAME");
    }
    if (hx_init_servers(watchdog) != 0) {
        printf("# hx_launch: redis-server is not installed\n");
        return 1;
    }
    static char certs[400];
    if (tls) {
        snprintf(certs, sizeof(certs), "%s/tls", hx_tmpdir());
        if (hx_tls_certs(certs) != 0) {
            printf("# hx_launch: no certificates\n");
            return 1;
        }
        tls_dir = certs;
        printf("hx_tls_dir=%s\n", certs);
    }

    for (int i = 0; i < nspecs; i++) {
        spec *s = &specs[i];
        int rc;
        if (!strcmp(s->words[0], "redis")) {
            rc = start_redis(s);
        } else {
            s->is_topo = 1;
            rc = !strcmp(s->words[0], "sentinel") ? start_sentinel(s) : start_cluster(s);
        }
        if (rc) {
            printf("# hx_launch: '%s %s' did not start\n", s->words[0], s->words[1]);
            return rc; /* atexit kills what did */
        }
    }
    printf("hx_dir=%s\nhx_ready=1\n", hx_tmpdir());
    fflush(stdout);

    char buf[256];
    while (1) {
        ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
        if (n == 0 || (n < 0 && errno != EINTR)) break;
    }
    for (int i = 0; i < nspecs; i++) {
        if (specs[i].is_topo) hx_topo_stop(&specs[i].topo, 10000);
        else hx_stop(&specs[i].redis, 10000);
    }
    return 0;
}
