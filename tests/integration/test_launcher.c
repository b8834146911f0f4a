/*
 * test_launcher: the harness' Redis launcher, which every integration test
 * starts its servers with (harness.h "Redis topologies", and hx_launch for
 * the shell tests).  Each topology is judged by what Redis itself says:
 *  - Sentinel: 1 master, 1 replica, 3 Sentinels (down-after 1000): every
 *    Sentinel answers SENTINEL get-master-addr-by-name with the master
 *    (through hiredis and through redis-cli), CKQUORUM passes, and the
 *    replica follows the master; with a password, the Sentinel's auth-pass
 *    lets it see the replica (it learns replicas from the master's INFO);
 *  - Cluster: 3 masters, and 3 masters + 3 replicas: cluster_state:ok on
 *    every node, CLUSTER SLOTS covering all 16384 slots once, a key written
 *    with redis-cli -c readable from every node, each replica following the
 *    master the struct names;
 *  - stopping: hx_topo_stop leaves nothing answering; hx_launch stops its
 *    servers when its stdin closes, and they die with it when it is killed;
 *  - bad requests fail at once with nothing left running.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "tap.h"

#define DEADLINE_MS 20000

/* Poll until nothing answers on port (the process is gone). */
static int port_closed(int port)
{
    double end = hx_now() + DEADLINE_MS / 1000.0;
    while (hx_now() < end) {
        int fd = hx_connect(port);
        if (fd < 0) return 1;
        close(fd);
        hx_sleep_ms(50);
    }
    return 0;
}

/* The first line of a command's output (stdout), into out. */
static const char *run_output(const char *cmdline, char *out, size_t cap)
{
    FILE *f = popen(cmdline, "r");
    out[0] = '\0';
    if (!f) return out;
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = '\0';
    pclose(f);
    return out;
}

static int all_stopped(const hx_topo *t)
{
    int ok = 1;
    for (int i = 0; i < t->nmasters; i++) ok &= t->masters[i].pid == 0 && port_closed(t->masters[i].port);
    for (int i = 0; i < t->nreplicas; i++) ok &= t->replicas[i].pid == 0 && port_closed(t->replicas[i].port);
    for (int i = 0; i < t->nsentinels; i++) ok &= t->sentinels[i].pid == 0 && port_closed(t->sentinels[i].port);
    return ok;
}

static void sentinel_topology(void)
{
    static hx_topo t;
    hx_sentinel_opts o = {.replicas = 1, .sentinels = 3, .down_after_ms = 1000};
    double t0 = hx_now();
    if (!ok(hx_sentinel_start(&t, &o) == 0, "sentinel: 1 master, 1 replica, 3 Sentinels start and see each other"))
        return;
    diag("sentinel topology ready in %.1f s", hx_now() - t0);
    ok(t.nmasters == 1 && t.nreplicas == 1 && t.nsentinels == 3 && !strcmp(t.name, "mymaster"),
       "sentinel: the struct says 1 master, 1 replica, 3 Sentinels, master name mymaster");

    char want[64], out[256], cmdline[256];
    snprintf(want, sizeof(want), "127.0.0.1 %d", t.masters[0].port);
    for (int i = 0; i < t.nsentinels; i++) {
        redisContext *c = hx_redis(t.sentinels[i].port);
        redisReply *r = c ? redisCommand(c, "SENTINEL get-master-addr-by-name mymaster") : NULL;
        char got[64] = "(no reply)";
        if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2)
            snprintf(got, sizeof(got), "%s %s", r->element[0]->str, r->element[1]->str);
        is_str(got, want, "sentinel %d: get-master-addr-by-name mymaster answers the master", i);
        if (r) freeReplyObject(r);
        const char *q = c ? hx_cmd(c, "SENTINEL CKQUORUM mymaster") : "(no connection)";
        ok(!strncmp(q, "OK 3 usable Sentinels", 21), "sentinel %d: CKQUORUM: '%s'", i, q);
        if (c) redisFree(c);
    }
    snprintf(cmdline, sizeof(cmdline), "timeout 10 redis-cli -p %d SENTINEL get-master-addr-by-name mymaster",
             t.sentinels[0].port);
    snprintf(want, sizeof(want), "127.0.0.1\n%d\n", t.masters[0].port);
    is_str(run_output(cmdline, out, sizeof(out)), want, "sentinel: redis-cli gets the same address");

    redisContext *rc = hx_redis(t.replicas[0].port);
    const char *mp = hx_info_get(rc, "replication", "master_port");
    is_int(mp ? atoi(mp) : -1, t.masters[0].port, "sentinel: the replica follows the master");
    if (rc) redisFree(rc);

    hx_topo_stop(&t, 10000);
    ok(all_stopped(&t), "sentinel: hx_topo_stop leaves nothing answering");

    /* with a password: a Sentinel learns replicas from the master's INFO,
     * which it can only read with the right auth-pass */
    hx_sentinel_opts po = {.name = "pw", .replicas = 1, .sentinels = 1, .password = "launch-Secret"};
    if (ok(hx_sentinel_start(&t, &po) == 0, "sentinel with a password: the Sentinel sees the replica")) {
        redisContext *m = hx_redis(t.masters[0].port);
        const char *noauth = hx_cmd(m, "GET k");
        ok(!strncmp(noauth, "NOAUTH", 6), "sentinel with a password: the master wants AUTH ('%s')", noauth);
        is_str(hx_cmd(m, "AUTH launch-Secret"), "OK", "sentinel with a password: AUTH with it works");
        if (m) redisFree(m);
        hx_topo_stop(&t, 10000);
    }
}

/* CLUSTER SLOTS covers 0..16383 exactly once, each range owned by one of
 * t's masters. */
static int slots_covered(const hx_topo *t, int port, char *why, size_t cap)
{
    static unsigned char seen[16384];
    memset(seen, 0, sizeof(seen));
    redisContext *c = hx_redis(port);
    redisReply *r = c ? redisCommand(c, "CLUSTER SLOTS") : NULL;
    int good = r && r->type == REDIS_REPLY_ARRAY;
    snprintf(why, cap, "no CLUSTER SLOTS reply");
    for (size_t i = 0; good && i < r->elements; i++) {
        redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 || e->element[2]->type != REDIS_REPLY_ARRAY ||
            e->element[2]->elements < 2) {
            snprintf(why, cap, "entry %zu malformed", i);
            good = 0;
            break;
        }
        long long from = e->element[0]->integer, to = e->element[1]->integer;
        long long owner = e->element[2]->element[1]->integer;
        int known = 0;
        for (int m = 0; m < t->nmasters; m++) known |= t->masters[m].port == owner;
        if (!known || from < 0 || to > 16383 || from > to) {
            snprintf(why, cap, "range %lld-%lld owned by port %lld", from, to, owner);
            good = 0;
            break;
        }
        for (long long s = from; s <= to; s++) {
            if (seen[s]++) {
                snprintf(why, cap, "slot %lld twice", s);
                good = 0;
            }
        }
    }
    int covered = 0;
    for (int s = 0; s < 16384; s++) covered += seen[s] != 0;
    if (good && covered != 16384) {
        snprintf(why, cap, "%d slots covered", covered);
        good = 0;
    }
    if (good) snprintf(why, cap, "all 16384 slots, once each");
    if (r) freeReplyObject(r);
    if (c) redisFree(c);
    return good;
}

static void cluster_topology(int masters, int replicas)
{
    static hx_topo t;
    hx_cluster_opts o = {.masters = masters, .replicas = replicas};
    char tag[32], why[128], out[256], cmdline[256];
    snprintf(tag, sizeof(tag), "cluster %dx%d", masters, replicas);
    double t0 = hx_now();
    if (!ok(hx_cluster_start(&t, &o) == 0, "%s: starts and says cluster_state:ok", tag)) return;
    diag("%s ready in %.1f s", tag, hx_now() - t0);
    is_int(t.nmasters, masters, "%s: %d masters", tag, masters);
    is_int(t.nreplicas, masters * replicas, "%s: %d replicas", tag, masters * replicas);

    int total = t.nmasters + t.nreplicas;
    for (int i = 0; i < total; i++) {
        const hx_proc *p = i < t.nmasters ? &t.masters[i] : &t.replicas[i - t.nmasters];
        redisContext *c = hx_redis(p->port);
        redisReply *r = c ? redisCommand(c, "CLUSTER INFO") : NULL;
        int state_ok = r && r->type == REDIS_REPLY_STRING && strstr(r->str, "cluster_state:ok\r\n") &&
                       strstr(r->str, "cluster_slots_ok:16384\r\n");
        ok(state_ok, "%s: node on port %d: cluster_state:ok, cluster_slots_ok:16384", tag, p->port);
        if (r) freeReplyObject(r);
        if (c) redisFree(c);
    }
    ok(slots_covered(&t, t.masters[0].port, why, sizeof(why)), "%s: CLUSTER SLOTS: %s", tag, why);

    int per_master[HX_TOPO_MAX] = {0}, follows = 1;
    for (int i = 0; i < t.nreplicas; i++) {
        int m = t.replica_of[i];
        redisContext *c = hx_redis(t.replicas[i].port);
        const char *mp = hx_info_get(c, "replication", "master_port");
        follows &= m >= 0 && mp && atoi(mp) == t.masters[m].port;
        if (m >= 0) per_master[m]++;
        if (c) redisFree(c);
    }
    int even = 1;
    for (int m = 0; m < t.nmasters; m++) even &= per_master[m] == replicas;
    ok(follows && even, "%s: each replica follows the master replica_of names, %d per master", tag, replicas);

    snprintf(cmdline, sizeof(cmdline), "timeout 10 redis-cli -c -p %d SET launcher:k v-%d", t.masters[0].port,
             masters);
    is_str(run_output(cmdline, out, sizeof(out)), "OK\n", "%s: redis-cli -c SET", tag);
    int everywhere = 1;
    for (int i = 0; i < t.nmasters; i++) {
        char want[32];
        snprintf(cmdline, sizeof(cmdline), "timeout 10 redis-cli -c -p %d GET launcher:k", t.masters[i].port);
        snprintf(want, sizeof(want), "v-%d\n", masters);
        everywhere &= !strcmp(run_output(cmdline, out, sizeof(out)), want);
    }
    ok(everywhere, "%s: redis-cli -c GET from every master finds it", tag);

    hx_topo_stop(&t, 10000);
    ok(all_stopped(&t), "%s: hx_topo_stop leaves nothing answering", tag);
}

static void bad_requests(void)
{
    static hx_topo t;
    hx_cluster_opts co = {.masters = 2};
    ok(hx_cluster_start(&t, &co) == -1 && t.nmasters == 0, "a cluster of 2 masters is refused, nothing started");
    hx_sentinel_opts so = {.sentinels = HX_TOPO_MAX + 1};
    ok(hx_sentinel_start(&t, &so) == -1 && t.nmasters == 0, "%d Sentinels are refused, nothing started",
       HX_TOPO_MAX + 1);
    const char *bad[] = {"--no-such-directive", "1", NULL};
    hx_redis_opts ro = {.extra = bad};
    hx_proc p;
    ok(hx_redis_start_opts(&p, &ro) == -1 && p.pid == 0, "a redis-server with a bad directive: -1, not running");
}

/* hx_launch: the shell tests' launcher.  Started with a pipe on its stdin,
 * it prints where its servers are; closing the pipe stops them. */
static pid_t launch(const char *spec, int *in, FILE **out)
{
    char exe[PATH_MAX], self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) return -1;
    self[n] = '\0';
    *strrchr(self, '/') = '\0';
    snprintf(exe, sizeof(exe), "%.*s/hx_launch", (int)(sizeof(exe) - 16), self);
    int pin[2], pout[2];
    if (pipe2(pin, O_CLOEXEC) != 0 || pipe2(pout, O_CLOEXEC) != 0) return -1;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pin[0], STDIN_FILENO);
        dup2(pout[1], STDOUT_FILENO);
        execl(exe, exe, spec, (char *)NULL);
        _exit(127);
    }
    close(pin[0]);
    close(pout[1]);
    *in = pin[1];
    *out = fdopen(pout[0], "r");
    return pid;
}

/* Read name=value lines until hx_ready=1; the port of "<name>_port=". */
static int launch_read(FILE *out, const char *name, char *dir, size_t dircap)
{
    char line[512], key[64];
    int port = -1, ready = 0;
    snprintf(key, sizeof(key), "%s_port=", name);
    while (!ready && fgets(line, sizeof(line), out)) {
        line[strcspn(line, "\n")] = '\0';
        if (!strncmp(line, key, strlen(key))) port = atoi(line + strlen(key));
        if (!strncmp(line, "hx_dir=", 7)) snprintf(dir, dircap, "%.255s", line + 7);
        if (line[0] == '#') diag("hx_launch: %s", line + 1);
        ready = !strcmp(line, "hx_ready=1");
    }
    return ready ? port : -1;
}

static int dir_gone(const char *dir)
{
    struct stat st;
    double end = hx_now() + DEADLINE_MS / 1000.0;
    while (hx_now() < end) {
        if (stat(dir, &st) != 0 && errno == ENOENT) return 1;
        hx_sleep_ms(50);
    }
    return 0;
}

static void launcher_program(void)
{
    int in;
    FILE *out;
    char dir[256] = "";
    pid_t pid = launch("redis one --maxmemory 3mb", &in, &out);
    int port = pid > 0 ? launch_read(out, "one", dir, sizeof(dir)) : -1;
    if (!ok(port > 0 && dir[0], "hx_launch \"redis one --maxmemory 3mb\": prints one_port and hx_dir, then ready")) {
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
        }
        return;
    }
    redisContext *c = hx_redis(port);
    redisReply *r = c ? redisCommand(c, "CONFIG GET maxmemory") : NULL;
    ok(r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 && !strcmp(r->element[1]->str, "3145728"),
       "hx_launch: its redis-server has the extra directive (maxmemory 3mb)");
    if (r) freeReplyObject(r);
    if (c) redisFree(c);
    close(in);
    int st = -1;
    waitpid(pid, &st, 0);
    ok(WIFEXITED(st) && WEXITSTATUS(st) == 0, "hx_launch: exits 0 when its stdin closes");
    ok(port_closed(port), "hx_launch: ... and its redis-server is gone");
    ok(dir_gone(dir), "hx_launch: ... and so is its temp dir");
    fclose(out);

    /* killed outright: its servers die with it (PR_SET_PDEATHSIG) */
    pid = launch("redis two", &in, &out);
    port = pid > 0 ? launch_read(out, "two", dir, sizeof(dir)) : -1;
    if (ok(port > 0, "hx_launch \"redis two\" starts")) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        ok(port_closed(port), "hx_launch killed with SIGKILL: its redis-server dies too");
        char rm[320];
        snprintf(rm, sizeof(rm), "rm -rf '%s'", dir); /* nobody left to remove it */
        if (dir[0] && !strchr(dir, '\'') && system(rm) != 0) diag("could not remove %s", dir);
    } else if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    close(in);
    fclose(out);
}

int main(void)
{
    hx_init(240);
    if (system("command -v redis-sentinel >/dev/null && command -v redis-cli >/dev/null") != 0)
        skip_all("redis-sentinel or redis-cli is not installed");
    sentinel_topology();
    cluster_topology(3, 0);
    cluster_topology(3, 1);
    bad_requests();
    launcher_program();
    done_testing();
    return exit_status();
}
