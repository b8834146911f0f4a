#!/usr/bin/env bash
# A real client library through hotproxy: redis-py (python3-redis) runs an
# ordinary session -- strings, counters, hashes, lists, MGET, a pipeline
# without MULTI, binary and unicode values, SCAN, INFO parsed into a dict --
# and every result is checked against what the same calls return from Redis
# directly.  The Python below prints TAP and owns every process it starts.
#
# Environment (tests/run.sh sets these): HOTPROXY_BIN, else ./build/hotproxy.
set -uo pipefail

src=${HOTPROXY_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
bin=${HOTPROXY_BIN:-./build/hotproxy}
[[ -x $bin ]] || bin=$src/build/hotproxy
py=/usr/bin/python3
[[ -x $py ]] || py=python3

if [[ ! -x $bin ]]; then
    echo "1..0 # SKIP no hotproxy binary at $bin"
    exit 0
fi
if ! "$py" -c 'import redis' 2>/dev/null; then
    echo "1..0 # SKIP python3-redis is not installed"
    exit 0
fi
if ! command -v redis-server >/dev/null; then
    echo "1..0 # SKIP redis-server is not installed"
    exit 0
fi
# redis-server comes from the harness' launcher, as in every integration test
launcher=${HOTPROXY_BUILD:-$src/build}/tests/integration/hx_launch
if [[ ! -x $launcher ]]; then
    echo "1..0 # SKIP no launcher at $launcher (build the tests first)"
    exit 0
fi

exec "$py" - "$bin" "$launcher" <<'PYTHON'
import atexit, os, shutil, signal, socket, subprocess, sys, tempfile, time

import redis

BIN, LAUNCHER = sys.argv[1], sys.argv[2]
tmp = tempfile.mkdtemp(prefix="hotproxy-py-")
procs = []
launchers = []
n = failed = 0


def cleanup():
    # the launcher stops its servers when its stdin closes (also when this
    # process dies without getting here)
    for p in launchers:
        p.stdin.close()
        p.wait()
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    shutil.rmtree(tmp, ignore_errors=True)


atexit.register(cleanup)
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(sig, lambda s, f: sys.exit(128 + s))
signal.signal(signal.SIGALRM, lambda s, f: (print("# watchdog: test_python.sh ran longer than 200 s, stopped"), sys.exit(1)))
signal.alarm(200)


def ok(cond, what):
    global n, failed
    n += 1
    if not cond:
        failed += 1
    print("%sok %d - %s" % ("" if cond else "not ", n, what), flush=True)
    return cond


def diag(msg):
    for line in str(msg).splitlines():
        print("# " + line, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_ping(port, proc):
    deadline = time.time() + 15
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if redis.Redis(port=port, socket_timeout=2).ping():
                return True
        except redis.RedisError:
            time.sleep(0.05)
    return False


def spawn(name, argv):
    out = open(os.path.join(tmp, name + ".out"), "wb")
    p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    procs.append(p)
    return p


def launch(*specs):
    """Start servers through hx_launch; returns the name=value lines it printed."""
    p = subprocess.Popen([LAUNCHER, *specs], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    launchers.append(p)
    got = {}
    for line in p.stdout:
        line = line.rstrip("\n")
        if line == "hx_ready=1":
            return got
        if line.startswith("#"):
            print(line, flush=True)
        elif "=" in line:
            k, v = line.split("=", 1)
            got[k] = v
    return None


started = launch("redis redis")
if not started:
    print("not ok 1 - redis-server starts\n1..1")
    sys.exit(1)
rport, pport = int(started["redis_port"]), free_port()
hp = spawn("hotproxy", [BIN, "--port", str(pport), "--upstream", "127.0.0.1:%d" % rport,
                        "--logfile", os.path.join(tmp, "hotproxy.log")])
if not ok(wait_ping(pport, hp), "hotproxy starts"):
    sys.exit(1)

via = redis.Redis(port=pport, socket_timeout=20)
direct = redis.Redis(port=rport, socket_timeout=20)


def session(r, prefix):
    """The same session against either server; returns what it saw."""
    seen = []
    k = lambda s: prefix + s
    seen.append(r.set(k("str"), "hello"))
    seen.append(r.get(k("str")))
    seen.append(r.set(k("bin"), b"\x00\r\n\xff binary \r\n"))
    seen.append(r.get(k("bin")))
    seen.append(r.set(k("uni"), "h\u00e9llo w\u00f6rld \u2603"))
    seen.append(r.get(k("uni")).decode("utf-8"))
    seen.append(r.get(k("missing")))
    seen.append(r.incr(k("n")))
    seen.append(r.incrby(k("n"), 41))
    seen.append(r.decr(k("n")))
    seen.append(r.hset(k("h"), mapping={"a": "1", "b": "2", "c": "3"}))
    seen.append(sorted(r.hgetall(k("h")).items()))
    seen.append(r.hget(k("h"), "b"))
    seen.append(r.rpush(k("l"), *[str(i) for i in range(10)]))
    seen.append(r.lrange(k("l"), 2, 5))
    seen.append(r.mset({k("m1"): "x", k("m2"): "y"}))
    seen.append(r.mget([k("m1"), k("missing"), k("m2")]))
    seen.append(r.expire(k("str"), 100))
    seen.append(0 < r.ttl(k("str")) <= 100)
    seen.append(r.exists(k("str"), k("missing"), k("h")))
    seen.append(r.type(k("h")))
    try:
        r.lpush(k("str"), "x")
        seen.append("no error")
    except redis.ResponseError as e:
        seen.append("error: " + str(e))
    big = os.urandom(1 << 20)
    seen.append(r.set(k("big"), big))
    seen.append(r.get(k("big")) == big)
    p = r.pipeline(transaction=False)
    for i in range(500):
        p.set(k("p%d" % i), i)
        p.get(k("p%d" % i))
        p.incr(k("pn"))
    res = p.execute()
    seen.append(res == [x for i in range(500) for x in (True, str(i).encode(), i + 1)])
    seen.append(sorted(x.decode()[len(prefix):] for x in r.scan_iter(match=k("m*"), count=1000)))
    seen.append(r.delete(k("str"), k("bin"), k("missing")))
    seen.append(r.echo("echo me"))
    seen.append(r.ping())
    return seen


mine, theirs = session(via, "py:via:"), session(direct, "py:direct:")
labels = ["SET", "GET", "SET binary", "GET binary", "SET unicode", "GET unicode", "GET missing", "INCR", "INCRBY",
          "DECR", "HSET mapping", "HGETALL", "HGET", "RPUSH", "LRANGE", "MSET", "MGET with a missing key", "EXPIRE",
          "TTL", "EXISTS", "TYPE", "WRONGTYPE error", "SET 1 MB", "GET 1 MB", "pipeline of 1,500 (no MULTI)", "SCAN",
          "DEL", "ECHO", "PING"]
for label, a, b in zip(labels, mine, theirs):
    if not ok(a == b, "redis-py %s through hotproxy: the same result as directly" % label):
        diag("hotproxy: %r\nredis:    %r" % (a, b))
ok(len(mine) == len(labels) == len(theirs), "the session ran every step")
ok(mine[7] == 1 and mine[16] == [b"x", None, b"y"] and mine[23] is True and mine[24] is True,
   "... and the results are the right ones, not just equal")

info = via.info()
ok("redis_version" in info and "hotproxy_version" in info, "redis-py parses INFO: redis_version and hotproxy_version")
ok(info.get("hotproxy_upstream_status") == "up", "... hotproxy_upstream_status is up")
hinfo = via.info("hotproxy")
ok("hotproxy_version" in hinfo and "redis_version" not in hinfo, "INFO hotproxy parses and holds only hotproxy's keys")

# a fresh client per call, many times (connection churn through the pool)
good = 0
for i in range(200):
    c = redis.Redis(port=pport, socket_timeout=10)
    good += c.set("py:churn:%d" % i, i) and c.get("py:churn:%d" % i) == str(i).encode()
    c.close()
ok(good == 200, "200 short-lived redis-py clients each SET and GET (%d good)" % good)

via.close()
direct.close()
hp.send_signal(signal.SIGTERM)
try:
    code = hp.wait(15)
except subprocess.TimeoutExpired:
    hp.kill()
    code = "killed"
if not ok(code == 0, "hotproxy exits 0 on SIGTERM (got %s)" % code):
    diag(open(os.path.join(tmp, "hotproxy.out"), errors="replace").read()[-4000:])
print("1..%d" % n)
sys.exit(1 if failed else 0)
PYTHON
