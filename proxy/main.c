/*
 * hotproxy: main() reads the configuration, daemonizes if asked, writes the
 * pidfile and runs one px_server until it is told to stop.  With
 * --test-config it stops after the checks a start makes before it touches
 * the network, so a package or an operator can vet a file next to a running
 * proxy.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proxy/px_config.h"
#include "proxy/px_dispatch.h"
#include "proxy/px_log.h"
#include "proxy/px_server.h"
#include "proxy/px_tls.h"

/*
 * What px_server_create would refuse that needs neither a socket nor an
 * upstream: the log file opens for appending (as it will, creating it if
 * missing), the bind address resolves, and with tls-port the TLS context
 * can be made (certificate, key and CAs load and match).  Run before
 * daemonize too, so such a failure reaches the terminal instead of vanishing
 * with the detached child.
 */
static int check_startup(const px_config *cfg, char *err, size_t errlen)
{
    px_log log;
    if (px_log_open(&log, (int)cfg->loglevel, cfg->logfile) != 0) {
        snprintf(err, errlen, "cannot open logfile %s: %s", cfg->logfile, strerror(errno));
        px_log_close(&log);
        return -1;
    }
    px_log_close(&log);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res = NULL;
    char port[16];
    snprintf(port, sizeof(port), "%lld", cfg->port);
    int rc = getaddrinfo(cfg->bind, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "bind %s: %s", cfg->bind, gai_strerror(rc));
        return -1;
    }
    freeaddrinfo(res);
    if (cfg->tls_port) {
        px_tls_ctx *tls = px_tls_server_ctx(cfg, err, errlen);
        if (!tls) return -1;
        px_tls_ctx_free(tls);
    }
    return 0;
}

static void daemonize(void)
{
    pid_t pid = fork();
    if (pid < 0) {
        perror("hotproxy: fork");
        exit(1);
    }
    if (pid > 0) exit(0);
    setsid();
    int fd = open("/dev/null", O_RDWR);
    if (fd >= 0) {
        dup2(fd, STDIN_FILENO);
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        if (fd > STDERR_FILENO) close(fd);
    }
}

/* The command line as given, for reload: argv itself is scrubbed of secrets. */
static char **copy_args(int argc, char **argv)
{
    char **copy = calloc((size_t)argc + 1, sizeof(*copy));
    if (!copy) abort();
    for (int i = 0; i < argc; i++)
        if (!(copy[i] = strdup(argv[i]))) abort();
    return copy;
}

static void free_args(int argc, char **args)
{
    for (int i = 0; i < argc; i++) {
        memset(args[i], 0, strlen(args[i]));
        free(args[i]);
    }
    free(args);
}

int main(int argc, char **argv)
{
    px_config cfg;
    char err[1024], out[2048];
    px_config_init(&cfg);
    int rc = px_config_from_args(&cfg, argc, argv, out, sizeof(out), err, sizeof(err));
    if (rc == 1) {
        fputs(out, stdout);
        px_config_free(&cfg);
        return 0;
    }
    if (rc < 0) {
        fprintf(stderr, "\n*** FATAL CONFIG ERROR (hotproxy) ***\n%s\n", err);
        px_config_free(&cfg);
        return 1;
    }
    if (check_startup(&cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "hotproxy: %s: %s\n", cfg.config_file ? cfg.config_file : "(command line)", err);
        px_config_free(&cfg);
        return 1;
    }
    if (rc == 2) {
        printf("%s: configuration OK\n", cfg.config_file ? cfg.config_file : "(command line)");
        px_config_free(&cfg);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    if (cfg.daemonize) daemonize();

    px_server *s = px_server_create(&cfg, &px_dispatch_ops, err, sizeof(err));
    if (!s) {
        fprintf(stderr, "hotproxy: %s\n", err);
        px_config_free(&cfg);
        return 1;
    }
    /* Reload reads the same file and command line again, from a private
     * copy: the secrets in argv are overwritten so ps does not show them. */
    char **args = copy_args(argc, argv);
    px_config_scrub_args(argc, argv);
    s->argc = argc;
    s->argv = args;
    if (cfg.pidfile && *cfg.pidfile) {
        FILE *f = fopen(cfg.pidfile, "w");
        if (f) {
            fprintf(f, "%d\n", (int)getpid());
            fclose(f);
        } else {
            fprintf(stderr, "hotproxy: cannot write pidfile %s: %s\n", cfg.pidfile, strerror(errno));
        }
    }
    rc = px_server_run(s);
    px_server_destroy(s);
    free_args(argc, args);
    if (cfg.pidfile && *cfg.pidfile) unlink(cfg.pidfile);
    px_config_free(&cfg);
    return rc;
}
