"""
resp2_patterns.py: application patterns written with python3-redis (RESP2),
run once through hotproxy and once against a Redis of their own, compared.

Each pattern is a function of (port, backend) returning a dict of what it
observed; backend is the Redis behind port (the port itself for the direct
run), for checks that look at Redis directly.  run_pattern() asserts the
expected values for each target, then that hotproxy's observations equal
Redis' (keys with no expected value are compared only).  Checks that only
make sense for hotproxy (pinned connections going back to zero, refusals)
follow the pattern that exercised them.

Environment (test_compat.sh): COMPAT_REDIS (the Redis behind every proxy),
COMPAT_DIRECT (the Redis the direct runs use), COMPAT_PROXY (default
settings), COMPAT_PROXY_PASS (requirepass secret), COMPAT_PROXY_USER (user
alice, user bob), COMPAT_PROXY_REFUSE (refuse-command flushall),
COMPAT_PROXY_CAP (upstream-max-pinned 2), COMPAT_PROXY_TMO (upstream-timeout
300), COMPAT_LOG_PASS / COMPAT_LOG_USER (their log files, loglevel debug).
"""
import hashlib
import os
import re
import sys
import threading
import time

sys.path.insert(0, "/usr/lib/python3/dist-packages")
import redis  # noqa: E402

from common import (  # noqa: E402
    RawConn,
    RespError,
    Tap,
    blocked_clients,
    env_port,
    info_fields,
    pinned,
    spare,
    wait_until,
)

T = Tap()
UP = env_port("COMPAT_REDIS")
DIRECT = env_port("COMPAT_DIRECT")
PROXY = env_port("COMPAT_PROXY")
PROXY_PASS = env_port("COMPAT_PROXY_PASS")
PROXY_USER = env_port("COMPAT_PROXY_USER")
PROXY_REFUSE = env_port("COMPAT_PROXY_REFUSE")
PROXY_CAP = env_port("COMPAT_PROXY_CAP")
PROXY_TMO = env_port("COMPAT_PROXY_TMO")

DEFAULT_TARGETS = [("hotproxy", PROXY, UP), ("redis", DIRECT, DIRECT)]


def client(port, **kw):
    kw.setdefault("socket_timeout", 10)
    kw.setdefault("socket_connect_timeout", 5)
    kw.setdefault("decode_responses", True)
    return redis.Redis(host="127.0.0.1", port=port, **kw)


def err(fn, *args, **kw):
    """fn's result, or its exception as 'ClassName: message'."""
    try:
        return fn(*args, **kw)
    except redis.RedisError as e:
        return "%s: %s" % (type(e).__name__, e)


class Pred(object):
    """An expected value given as a test.  A fuzzy one (a TTL, a time) is
    compared between the two targets by its outcome, others by value."""

    def __init__(self, fn, desc, fuzzy=False):
        self.fn, self.desc, self.fuzzy = fn, desc, fuzzy

    def __call__(self, v):
        try:
            return bool(self.fn(v))
        except Exception:
            return False

    def __repr__(self):
        return self.desc


def between(lo, hi):
    return Pred(lambda v: lo <= v <= hi, "a number in [%s, %s]" % (lo, hi), fuzzy=True)


def contains(s):
    return Pred(lambda v: s in v, "text containing %r" % s)


SAME = Pred(lambda v: True, "the same through hotproxy and redis")


def run_pattern(name, fn, expect, targets=None):
    targets = targets or DEFAULT_TARGETS
    results = {}
    for tname, port, backend in targets:
        try:
            obs = fn(port, backend)
        except Exception:
            T.exception("%s: runs through %s without an exception" % (name, tname))
            results[tname] = None
            continue
        bad = []
        for k, want in expect.items():
            if k not in obs:
                bad.append("%s: not observed" % k)
                continue
            got = obs[k]
            good = want(got) if isinstance(want, Pred) else got == want
            if not good:
                bad.append("%s: got %r, want %r" % (k, got, want))
        T.ok(not bad, "%s: expected results through %s" % (name, tname), *bad)
        results[tname] = obs
    if len(targets) != 2:
        return results
    a, b = (results[t[0]] for t in targets)
    if a is None or b is None:
        T.ok(False, "%s: %s answers as %s does" % (name, targets[0][0], targets[1][0]), "a run raised")
        return results

    def norm(obs):
        return {k: (expect[k](v) if isinstance(expect.get(k), Pred) and expect[k].fuzzy else v)
                for k, v in obs.items()}

    na, nb = norm(a), norm(b)
    diffs = ["%s: %s %r / %s %r" % (k, targets[0][0], na.get(k), targets[1][0], nb.get(k))
             for k in sorted(set(na) | set(nb)) if na.get(k) != nb.get(k)]
    T.ok(not diffs, "%s: %s answers as %s does" % (name, targets[0][0], targets[1][0]), *diffs)
    return results


def no_pinned_left(what, port=PROXY, auth=None):
    n = wait_until(lambda: pinned(port, auth) == 0, timeout=20)
    T.ok(n, "%s: hotproxy's pinned connections are back to 0" % what,
         "hotproxy_pinned_connections=%s" % pinned(port, auth))


# --- cache-aside ---------------------------------------------------------------


def p_cache_aside(port, backend):
    r = client(port)
    o = {}
    k = "cache:user:42"
    r.delete(k)
    loads = []

    def get_user():
        v = r.get(k)
        if v is None:
            v = '{"id":42,"name":"Ada","v":%d}' % len(loads)
            loads.append(v)
            r.setex(k, 30, v)
            return "miss", v
        return "hit", v

    o["first"] = get_user()
    o["second"] = get_user()
    o["ttl"] = r.ttl(k)
    o["invalidate"] = r.delete(k)
    o["after_invalidate"] = r.get(k)
    o["third"] = get_user()
    o["setex_zero_ttl"] = err(r.setex, k, 0, "x")
    o["mget"] = r.mget(k, "cache:user:missing")
    return o


# --- session hashes ------------------------------------------------------------


def p_session(port, backend):
    r = client(port)
    o = {}
    k = "session:abc123"
    r.delete(k, "session:short")
    o["hset"] = r.hset(k, mapping={"user": "alice", "cart": "0", "csrf": "t0k3n"})
    o["expire"] = r.expire(k, 60)
    o["ttl_initial"] = r.ttl(k)
    o["hgetall"] = r.hgetall(k)
    o["hincrby"] = r.hincrby(k, "cart", 2)
    o["refresh"] = r.expire(k, 1800)
    o["ttl_refreshed"] = r.ttl(k)
    o["expire_gt_shorter"] = r.execute_command("EXPIRE", k, 100, "GT")
    o["ttl_after_gt"] = r.ttl(k)
    o["hmget"] = r.hmget(k, "user", "missing")
    o["hgetall_after"] = r.hgetall(k)
    r.hset("session:short", "user", "bob")
    r.pexpire("session:short", 200)
    wait_until(lambda: r.exists("session:short") == 0)
    o["short_expired"] = r.exists("session:short")
    o["hgetall_expired"] = r.hgetall("session:short")
    return o


# --- rate limits ---------------------------------------------------------------


def p_fixed_window(port, backend):
    r = client(port)
    o = {}
    k = "rl:alice:1700000000"
    r.delete(k, k + ":p")
    allowed = []
    for _ in range(7):
        n = r.incr(k)
        if n == 1:
            r.expire(k, 60)
        allowed.append(n <= 5)
    o["allowed"] = allowed
    o["count"] = r.get(k)
    o["ttl"] = r.ttl(k)
    # the same with INCR + EXPIRE NX pipelined
    counts = []
    for _ in range(3):
        p = r.pipeline(transaction=False)
        p.incr(k + ":p")
        p.expire(k + ":p", 60, nx=True)
        counts.append(p.execute())
    o["pipelined"] = counts
    return o


def sliding(r, k, now, member, window, transaction):
    p = r.pipeline(transaction=transaction)
    p.zremrangebyscore(k, 0, now - window)
    p.zadd(k, {member: now})
    p.zcard(k)
    p.expire(k, window)
    return p.execute()


SLIDING_EXPECT = [[0, 1, 1, True], [0, 1, 2, True], [0, 1, 3, True], [0, 1, 4, True],
                  [2, 1, 3, True], [1, 1, 3, True], [3, 1, 1, True]]


def p_sliding_window(port, backend):
    r = client(port)
    o = {}
    for mode, transaction in (("pipeline", False), ("multi", True)):
        k = "sw:alice:" + mode
        r.delete(k)
        out = []
        for i, now in enumerate([100.0, 101.0, 102.0, 103.0, 111.5, 112.0, 125.0]):
            out.append(sliding(r, k, now, "req-%d" % i, 10, transaction))
        o[mode] = out
        o[mode + "_allowed"] = [res[2] <= 3 for res in out]
        o[mode + "_members"] = r.zrange(k, 0, -1, withscores=True)
    return o


# --- Lua token bucket -------------------------------------------------------------

BUCKET = """
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local requested = tonumber(ARGV[4])
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil then tokens = capacity; ts = now end
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
local allowed = 0
if tokens >= requested then tokens = tokens - requested; allowed = 1 end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000))
return {allowed, tostring(tokens)}
"""
BUCKET_SHA = hashlib.sha1(BUCKET.encode()).hexdigest()


def p_token_bucket(port, backend):
    r = client(port)
    o = {}
    k = "tb:alice"
    r.delete(k)
    args = lambda now: (3, 1, now, 1)  # noqa: E731 capacity 3, 1 token/s
    calls = []
    calls.append(r.eval(BUCKET, 1, k, *args(0)))
    calls.append(r.eval(BUCKET, 1, k, *args(0)))
    o["script_load"] = r.script_load(BUCKET)
    calls.append(r.evalsha(BUCKET_SHA, 1, k, *args(0)))
    calls.append(r.evalsha(BUCKET_SHA, 1, k, *args(0)))
    o["script_exists"] = r.script_exists(BUCKET_SHA, "0" * 40)
    o["script_flush"] = r.script_flush()
    o["evalsha_flushed"] = err(r.evalsha, BUCKET_SHA, 1, k, *args(1))
    calls.append(r.eval(BUCKET, 1, k, *args(1)))  # NOSCRIPT fallback
    bucket = r.register_script(BUCKET)  # EVALSHA, SCRIPT LOAD on NOSCRIPT
    r.script_flush()
    calls.append(bucket(keys=[k], args=args(1)))
    calls.append(bucket(keys=[k], args=args(5)))
    o["calls"] = calls
    o["pttl"] = r.pttl(k)
    o["eval_error"] = err(r.eval, "return redis.call('INCR', KEYS[1])", 1, "tb:notanumber-key")
    r.set("tb:str", "abc")
    o["eval_runtime_error"] = err(r.eval, "return redis.call('INCR', KEYS[1])", 1, "tb:str")
    o["eval_ro"] = err(r.execute_command, "EVAL_RO", "return redis.call('GET', KEYS[1])", 1, "tb:str")
    return o


# --- distributed lock ------------------------------------------------------------

UNLOCK = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
EXTEND = ("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) "
          "else return 0 end")


def p_lock(port, backend):
    a, b = client(port), client(port)
    o = {}
    k = "lock:invoice:7"
    a.delete(k, "lock:short", "lock:report")
    o["a_acquire"] = a.set(k, "tok-a", nx=True, px=5000)
    o["b_acquire_held"] = b.set(k, "tok-b", nx=True, px=5000)
    o["pttl"] = a.pttl(k)
    o["b_release_wrong_token"] = b.eval(UNLOCK, 1, k, "tok-b")
    o["b_extend_wrong_token"] = b.eval(EXTEND, 1, k, "tok-b", 20000)
    o["a_extend"] = a.eval(EXTEND, 1, k, "tok-a", 20000)
    o["pttl_extended"] = a.pttl(k)
    o["a_release"] = a.eval(UNLOCK, 1, k, "tok-a")
    o["exists_after_release"] = a.exists(k)
    o["b_acquire_free"] = b.set(k, "tok-b", nx=True, px=5000)
    a.set("lock:short", "tok-a", nx=True, px=200)
    wait_until(lambda: a.exists("lock:short") == 0)
    o["b_acquire_expired"] = b.set("lock:short", "tok-b", nx=True, px=5000)
    # redis-py's Lock: SET NX PX plus its own Lua scripts through EVALSHA
    la = a.lock("lock:report", timeout=5, blocking=False)
    lb = b.lock("lock:report", timeout=5, blocking=False)
    o["lib_a_acquire"] = la.acquire()
    o["lib_b_acquire_held"] = lb.acquire()
    o["lib_a_extend"] = la.extend(5)
    o["lib_a_owned"] = la.owned()
    o["lib_pttl"] = a.pttl("lock:report")
    la.release()
    o["lib_b_acquire_free"] = lb.acquire()
    lb.release()
    return o


# --- transactions ----------------------------------------------------------------


def p_multi(port, backend):
    r = client(port)
    o = {}
    r.delete("tx:a", "tx:b", "tx:c", "tx:d")
    p = r.pipeline(transaction=True)
    p.set("tx:a", "1")
    p.incr("tx:a")
    p.get("tx:a")
    o["pipeline_exec"] = p.execute()
    s = RawConn(port)
    for name, cmd in (("multi", ("MULTI",)), ("queued_set", ("SET", "tx:b", "x")), ("queued_incr", ("INCR", "tx:b")),
                      ("exec_with_error", ("EXEC",)),
                      ("discard_multi", ("MULTI",)), ("discard_queued", ("SET", "tx:c", "never")),
                      ("discard", ("DISCARD",)), ("discarded_value", ("GET", "tx:c")),
                      ("abort_multi", ("MULTI",)), ("queue_unknown", ("NOSUCHCMD", "a")),
                      ("queue_wrong_arity", ("GET",)), ("exec_abort", ("EXEC",)),
                      ("exec_without_multi", ("EXEC",)), ("discard_without_multi", ("DISCARD",)),
                      ("nested_outer", ("MULTI",)), ("nested_multi", ("MULTI",)),
                      ("watch_in_multi", ("WATCH", "tx:d")), ("exec_after_nested", ("EXEC",)),
                      ("after_exec_ping", ("PING",))):
        o[name] = s.cmd_raw(*cmd)
    s.close()
    return o


def p_watch(port, backend):
    w = client(port, single_connection_client=True)
    other = client(port)
    o = {}
    other.delete("tx:w", "tx:cnt")
    other.set("tx:w", "10")
    o["watch"] = w.execute_command("WATCH", "tx:w")
    v = int(w.get("tx:w"))
    o["concurrent_write"] = other.set("tx:w", "99")
    w.execute_command("MULTI")
    w.execute_command("SET", "tx:w", str(v + 1))
    o["exec_aborted"] = w.execute_command("EXEC")
    o["value_after_abort"] = other.get("tx:w")
    # no concurrent write: it runs
    w.execute_command("WATCH", "tx:w")
    w.execute_command("MULTI")
    w.execute_command("INCR", "tx:w")
    o["exec_clean"] = w.execute_command("EXEC")
    # UNWATCH forgets the watch
    w.execute_command("WATCH", "tx:w")
    other.set("tx:w", "5")
    o["unwatch"] = w.execute_command("UNWATCH")
    w.execute_command("MULTI")
    w.execute_command("INCR", "tx:w")
    o["exec_after_unwatch"] = w.execute_command("EXEC")
    w.close()
    # redis-py's optimistic-locking helper retries on WatchError
    attempts = []

    def incr(pipe):
        attempts.append(1)
        cur = int(pipe.get("tx:cnt") or 0)
        if len(attempts) == 1:
            other.incr("tx:cnt")  # someone else wins the first round
        pipe.multi()
        pipe.set("tx:cnt", cur + 1)

    o["transaction_helper"] = client(port).transaction(incr, "tx:cnt")
    o["attempts"] = len(attempts)
    o["cnt"] = other.get("tx:cnt")
    return o


# --- pub/sub -----------------------------------------------------------------------


def msg(m):
    if m is None:
        return None
    return (m["type"], m.get("pattern"), m["channel"], m["data"])


def p_pubsub(port, backend):
    sub, pub = client(port), client(port)
    o = {}
    p = sub.pubsub()
    p.subscribe("news")
    o["subscribe"] = msg(p.get_message(timeout=2))
    p.psubscribe("alerts.*")
    o["psubscribe"] = msg(p.get_message(timeout=2))
    o["numsub"] = pub.pubsub_numsub("news")
    o["numpat"] = pub.pubsub_numpat()
    o["publish_news"] = pub.publish("news", "hello")
    o["publish_alert"] = pub.publish("alerts.disk", "full")
    o["message"] = msg(p.get_message(timeout=2))
    o["pmessage"] = msg(p.get_message(timeout=2))
    p.ping()
    o["ping_subscribed"] = msg(p.get_message(timeout=2))
    p.execute_command("GET", "ps:key")
    o["get_subscribed"] = err(p.get_message, timeout=2)
    p.unsubscribe("news")
    o["unsubscribe"] = msg(p.get_message(timeout=2))
    p.punsubscribe("alerts.*")
    o["punsubscribe"] = msg(p.get_message(timeout=2))
    # The same connection is an ordinary one again.
    conn = p.connection
    conn.send_command("PING")
    o["ping_after"] = conn.read_response()
    pub.set("ps:key", "v")
    conn.send_command("GET", "ps:key")
    o["get_after"] = conn.read_response()
    o["publish_after_unsubscribe"] = pub.publish("news", "late")
    o["numsub_after"] = pub.pubsub_numsub("news")
    conn.send_command("PING")
    o["nothing_late"] = conn.read_response()
    p.close()
    return o


def p_command_right_after_unsubscribe(port, backend):
    """Regression: a command sent as soon as the last UNSUBSCRIBE is answered
    must be answered (hotproxy used to lose its reply when it arrived before
    Redis had answered hotproxy's own end-of-pub/sub marker)."""
    main, pub = RawConn(port, timeout=2), RawConn(port, timeout=2)
    o = {"rounds": 0, "first_wrong": None}
    for i in range(300):
        want = [[b"subscribe", b"ps:race", 1], [b"unsubscribe", b"ps:race", 0], "PONG", b"v%d" % i]
        got = []
        try:
            pub.cmd("SET", "ps:race:k", "v%d" % i)
            got.append(main.cmd("SUBSCRIBE", "ps:race"))
            got.append(main.cmd("UNSUBSCRIBE", "ps:race"))
            got.append(main.cmd("PING"))
            got.append(main.cmd("GET", "ps:race:k"))
        except Exception as e:  # noqa: BLE001 recorded
            got.append(repr(e))
        if got != want:
            o["first_wrong"] = "round %d: got %r" % (i, got)
            break
        o["rounds"] += 1
    main.close()
    pub.close()
    return o


# --- blocking commands -------------------------------------------------------------


def in_thread(fn, backend=None):
    """Run fn (a blocking command) in a thread; with backend, return once
    Redis there counts one more blocked client (the command is blocked, not
    merely sent).  box["blocked"] says whether it did within the deadline."""
    box = {}
    base = blocked_clients(backend) if backend else 0

    def run():
        t0 = time.monotonic()
        try:
            box["v"] = fn()
        except Exception as e:  # noqa: BLE001 reported by the caller
            box["v"] = "%s: %s" % (type(e).__name__, e)
        box["t"] = time.monotonic() - t0

    th = threading.Thread(target=run)
    th.start()
    if backend:
        box["blocked"] = bool(wait_until(lambda: blocked_clients(backend) > base))
    return th, box


def p_blocking(port, backend):
    r, pusher = client(port), client(port)
    o = {}
    pusher.delete("q:jobs", "q:empty", "q:src", "q:dst", "z:prio")
    th, box = in_thread(lambda: r.blpop("q:jobs", timeout=5), backend)
    o["blpop_blocked"] = box["blocked"]
    o["rpush"] = pusher.rpush("q:jobs", "job-1")
    th.join(8)
    o["blpop_woken"] = box.get("v")
    o["llen_after"] = pusher.llen("q:jobs")
    t0 = time.monotonic()
    o["blpop_timeout"] = r.blpop("q:empty", timeout=1)
    o["blpop_timeout_time"] = time.monotonic() - t0
    th, box = in_thread(lambda: r.blmove("q:src", "q:dst", 5, "LEFT", "RIGHT"), backend)
    o["blmove_blocked"] = box["blocked"]
    pusher.rpush("q:src", "item")
    th.join(8)
    o["blmove_woken"] = box.get("v")
    o["blmove_dst"] = pusher.lrange("q:dst", 0, -1)
    th, box = in_thread(lambda: r.bzpopmin("z:prio", timeout=5), backend)
    o["bzpopmin_blocked"] = box["blocked"]
    pusher.zadd("z:prio", {"low": 1, "high": 9})
    th.join(8)
    o["bzpopmin_woken"] = box.get("v")
    o["blpop_ready_data"] = (pusher.rpush("q:jobs", "a", "b"), r.blpop(["q:empty", "q:jobs"], timeout=1))
    return o


def p_blocking_upstream_timeout(port, backend):
    r = client(port)
    o = {}
    t0 = time.monotonic()
    o["blpop2"] = err(r.blpop, "q:tmo-empty", timeout=2)
    o["blpop2_time"] = time.monotonic() - t0
    o["ping_after"] = r.ping()
    return o


def p_blocked_disconnect(port, backend):
    """A client that goes away while blocked must not leave a BLPOP behind
    that would steal the next element."""
    pusher = client(port)
    o = {}
    pusher.delete("q:orphan")
    base = blocked_clients(backend)
    s = RawConn(port)
    s.send("BLPOP", "q:orphan", 10)
    o["blocked_upstream"] = wait_until(lambda: blocked_clients(backend) == base + 1, timeout=20)
    s.close()
    o["unblocked_upstream"] = wait_until(lambda: blocked_clients(backend) == base, timeout=20)
    o["rpush"] = pusher.rpush("q:orphan", "x")
    time.sleep(0.1)
    o["element_still_there"] = pusher.llen("q:orphan")
    return o


# --- streams ------------------------------------------------------------------------


def p_streams(port, backend):
    r, c = client(port), client(port)
    o = {}
    k, g = "st:orders", "workers"
    r.delete(k)
    o["group_create"] = r.xgroup_create(k, g, id="$", mkstream=True)
    th, box = in_thread(lambda: c.xreadgroup(g, "c1", {k: ">"}, count=1, block=5000), backend)
    o["xreadgroup_blocked"] = box["blocked"]
    o["xadd"] = r.xadd(k, {"item": "book"}, id="1-1")
    th.join(8)
    o["xreadgroup_woken"] = box.get("v")
    r.xadd(k, {"item": "pen"}, id="2-1")
    o["xreadgroup_more"] = c.xreadgroup(g, "c1", {k: ">"}, count=10)
    o["xpending"] = r.xpending(k, g)
    o["xclaim"] = r.xclaim(k, g, "c2", 0, ["1-1"])
    o["xautoclaim"] = r.xautoclaim(k, g, "c3", 0, start_id="0-0")
    o["xpending_after_claim"] = r.xpending(k, g)
    o["xack"] = r.xack(k, g, "1-1", "2-1")
    o["xpending_after_ack"] = r.xpending(k, g)["pending"]
    t0 = time.monotonic()
    o["xreadgroup_block_timeout"] = c.xreadgroup(g, "c1", {k: ">"}, count=1, block=500)
    o["xreadgroup_block_timeout_time"] = time.monotonic() - t0
    th, box = in_thread(lambda: c.xread({k: "$"}, count=1, block=5000), backend)
    r.xadd(k, {"item": "cup"}, id="3-1")
    th.join(8)
    o["xread_woken"] = box.get("v")
    o["xinfo_groups"] = [(x["name"], x["consumers"], x["pending"], x["last-delivered-id"])
                         for x in r.xinfo_groups(k)]
    return o


# --- SELECT -------------------------------------------------------------------------


def p_select(port, backend):
    s = client(port, single_connection_client=True)
    db0, db1, db2 = (client(backend, db=n) for n in (0, 1, 2))
    o = {}
    for d in (db0, db1, db2):
        d.delete("db:k", "db:tx", "db:m")
    o["select1"] = s.execute_command("SELECT", 1)
    o["set_db1"] = s.set("db:k", "in-1")
    o["get_same_conn"] = s.get("db:k")
    o["get_new_client_db0"] = client(port).get("db:k")
    o["get_new_client_db1"] = client(port, db=1).get("db:k")
    o["redis_db1"] = db1.get("db:k")
    o["redis_db0"] = db0.get("db:k")
    s.execute_command("MULTI")
    s.set("db:tx", "t")
    o["multi_in_db1"] = s.execute_command("EXEC")
    o["redis_db1_tx"] = db1.get("db:tx")
    o["redis_db0_tx"] = db0.get("db:tx")
    s.execute_command("MULTI")
    s.execute_command("SELECT", 2)
    s.set("db:m", "m")
    o["select_in_multi"] = s.execute_command("EXEC")
    o["get_after_select_in_multi"] = s.get("db:m")
    o["redis_db2"] = db2.get("db:m")
    o["select_out_of_range"] = err(s.execute_command, "SELECT", 99)
    o["select_not_int"] = err(s.execute_command, "SELECT", "x")
    o["still_db2"] = s.get("db:m")
    th, box = in_thread(lambda: s.blpop("db:q", timeout=5), backend)
    db2.rpush("db:q", "in-2")
    th.join(8)
    o["blpop_in_db2"] = box.get("v")
    s.close()
    return o


# --- AUTH ---------------------------------------------------------------------------


def p_auth(port, backend, user=None, password="secret", bad="wrong-pw-7Qx"):
    o = {}
    who = (user,) if user else ()
    c = client(port, single_connection_client=True)
    o["get_before_auth"] = err(c.get, "auth:k")
    o["ping_before_auth"] = err(c.ping)
    o["hello_before_auth"] = err(c.execute_command, "HELLO", "2")
    o["auth_bad"] = err(c.execute_command, "AUTH", *(who + (bad,)))
    o["get_after_bad"] = err(c.get, "auth:k")
    o["auth_good"] = err(c.execute_command, "AUTH", *(who + (password,)))
    o["get_after_auth"] = err(c.get, "auth:k")
    o["auth_unknown_user"] = err(c.execute_command, "AUTH", "nobody-here", bad)
    o["still_authenticated"] = err(c.ping)
    c.close()
    o["client_with_password"] = err(client(port, username=user, password=password).ping)
    o["client_bad_password"] = err(client(port, username=user, password=bad).ping)
    h = client(port, single_connection_client=True)
    hello = err(h.execute_command, "HELLO", "2", "AUTH", user or "default", password)
    if isinstance(hello, list):
        hello = dict(zip(hello[::2], hello[1::2]))
    o["hello_auth"] = hello if isinstance(hello, str) else {k: hello[k] for k in ("server", "proto", "mode")}
    o["hello_auth_bad"] = err(client(port).execute_command, "HELLO", "2", "AUTH", user or "default", bad)
    o["after_hello_auth"] = err(h.ping)
    h.close()
    return o


AUTH_EXPECT = {
    "get_before_auth": "AuthenticationError: Authentication required.",
    "ping_before_auth": "AuthenticationError: Authentication required.",
    "hello_before_auth": contains("HELLO must be called with the client already authenticated"),
    "auth_bad": contains("WRONGPASS"),
    "get_after_bad": "AuthenticationError: Authentication required.",
    "auth_good": True,
    "get_after_auth": None,
    "auth_unknown_user": contains("WRONGPASS"),
    "still_authenticated": True,
    "client_with_password": True,
    "client_bad_password": contains("WRONGPASS"),
    "hello_auth": {"server": "redis", "proto": 2, "mode": "standalone"},
    "hello_auth_bad": contains("WRONGPASS"),
    "after_hello_auth": True,
}


def direct_auth_setup(enable):
    """The direct Redis gets what the auth proxies enforce: requirepass
    secret, and users alice / bob.  The admin connection stays authenticated."""
    admin = client(DIRECT)
    if enable:
        admin.execute_command("ACL", "SETUSER", "alice", "on", ">pw", "~*", "&*", "+@all")
        admin.execute_command("ACL", "SETUSER", "bob", "on", ">hunter2-Zq9", "~*", "&*", "+@all")
        admin.config_set("requirepass", "secret")
    return admin


def p_no_password_configured(port, backend):
    c = client(port)
    return {"auth_without_password": err(c.execute_command, "AUTH", "whatever-pw-3Lk"),
            "auth_default_nopass": err(c.execute_command, "AUTH", "default", "whatever-pw-3Lk")}


# --- CLIENT ---------------------------------------------------------------------------


def p_client(port, backend):
    o = {}
    c = client(port, single_connection_client=True)
    o["getname_fresh"] = c.client_getname()
    o["setname"] = c.client_setname("compat-app")
    o["getname"] = c.client_getname()
    cid = c.client_id()
    o["id_positive"] = isinstance(cid, int) and cid > 0
    entries = client(port).client_list()
    mine = [e for e in entries if e.get("id") == str(cid)]
    o["listed_once"] = len(mine)
    o["listed_name"] = mine[0].get("name") if mine else None
    o["listed_fields"] = sorted(set(mine[0]) & {"id", "addr", "laddr", "fd", "name", "age", "idle", "flags", "db",
                                                "sub", "psub", "multi", "cmd", "user", "resp"}) if mine else None
    info = c.execute_command("CLIENT", "INFO")
    o["client_info_has_name"] = "name=compat-app" in info and ("id=%d " % cid) in info
    o["setname_space"] = err(c.client_setname, "bad name")
    o["setname_empty"] = c.client_setname("")
    o["getname_cleared"] = c.client_getname()
    c.client_setname("compat-app")
    # CLIENT KILL ID closes that client
    v = RawConn(port)
    vid = v.cmd("CLIENT", "ID")
    o["kill_id"] = c.execute_command("CLIENT", "KILL", "ID", vid)
    o["killed_closed"] = v.closed_by_peer(3)
    v.close()
    o["kill_unknown"] = err(c.execute_command, "CLIENT", "KILL", "ID", 999999999)
    o["kill_unknown_addr"] = err(c.execute_command, "CLIENT", "KILL", "192.0.2.1:5")
    # CLIENT REPLY OFF / ON
    q = RawConn(port)
    q.send_raw(b"".join([
        b"*3\r\n$6\r\nCLIENT\r\n$5\r\nREPLY\r\n$3\r\nOFF\r\n",
        b"*3\r\n$3\r\nSET\r\n$9\r\nclient:rk\r\n$1\r\n1\r\n",
        b"*3\r\n$6\r\nCLIENT\r\n$5\r\nREPLY\r\n$2\r\nON\r\n",
        b"*2\r\n$3\r\nGET\r\n$9\r\nclient:rk\r\n",
    ]))
    o["reply_off_on"] = [q.read()[1], q.read()[1]]
    q.close()
    # CLIENT UNBLOCK wakes a BLPOP with a nil reply
    b = RawConn(port)
    bid = b.cmd("CLIENT", "ID")
    b.send("BLPOP", "client:never", 10)
    wait_until(lambda: blocked_clients(backend) >= 1, timeout=20)
    t0 = time.monotonic()
    o["unblock"] = c.execute_command("CLIENT", "UNBLOCK", bid)
    try:
        o["unblocked_reply"] = b.read(timeout=20)[1]
    except Exception as e:  # noqa: BLE001
        o["unblocked_reply"] = repr(e)
    o["unblock_fast"] = time.monotonic() - t0 < 1
    o["unblock_not_blocked"] = c.execute_command("CLIENT", "UNBLOCK", bid)
    b.close()
    c.close()
    return o


def p_client_list_state(port, backend):
    """CLIENT LIST's view of clients in pub/sub and in MULTI (hotproxy answers
    it about its own clients, so it must keep these counts itself)."""
    a, b, o = RawConn(port), RawConn(port), RawConn(port)
    a.cmd("CLIENT", "SETNAME", "cl-subber")
    b.cmd("CLIENT", "SETNAME", "cl-multier")
    a.cmd("SUBSCRIBE", "cl:c1")
    a.cmd("SUBSCRIBE", "cl:c2")
    a.cmd("PSUBSCRIBE", "cl:p*")
    b.cmd("SELECT", "2")
    b.cmd("MULTI")
    b.cmd("SET", "cl:x", "1")
    b.cmd("GET", "cl:x")
    out = {}
    for line in o.cmd("CLIENT", "LIST").decode().splitlines():
        f = dict(kv.split("=", 1) for kv in line.split(" ") if "=" in kv)
        if f.get("name") in ("cl-subber", "cl-multier"):
            for k in ("db", "sub", "psub", "multi", "flags"):
                out["%s %s" % (f["name"], k)] = f.get(k)
    b.cmd("DISCARD")
    for c in (a, b, o):
        c.close()
    return out


# --- administration -----------------------------------------------------------------


def raw_same(name, port, backend, *cmds):
    """Each command's raw reply through hotproxy equals Redis' own."""
    a, b = RawConn(port), RawConn(backend)
    try:
        for cmd in cmds:
            ra, rb = a.cmd_raw(*cmd), b.cmd_raw(*cmd)
            T.ok(ra == rb, "%s: %s answered byte for byte as redis does" % (name, " ".join(map(str, cmd))),
                 "hotproxy: %r" % ra[:300], "redis:    %r" % rb[:300])
    finally:
        a.close()
        b.close()


def main():
    run_pattern("cache-aside", p_cache_aside, {
        "first": ("miss", '{"id":42,"name":"Ada","v":0}'),
        "second": ("hit", '{"id":42,"name":"Ada","v":0}'),
        "ttl": between(28, 30),
        "invalidate": 1,
        "after_invalidate": None,
        "third": ("miss", '{"id":42,"name":"Ada","v":1}'),
        "setex_zero_ttl": "ResponseError: invalid expire time in 'setex' command",
        "mget": ['{"id":42,"name":"Ada","v":1}', None],
    })
    run_pattern("session hash", p_session, {
        "hset": 3, "expire": True, "ttl_initial": between(58, 60),
        "hgetall": {"user": "alice", "cart": "0", "csrf": "t0k3n"},
        "hincrby": 2, "refresh": True, "ttl_refreshed": between(1798, 1800),
        "expire_gt_shorter": 0, "ttl_after_gt": between(1798, 1800),
        "hmget": ["alice", None], "hgetall_after": {"user": "alice", "cart": "2", "csrf": "t0k3n"},
        "short_expired": 0, "hgetall_expired": {},
    })
    run_pattern("fixed-window rate limit", p_fixed_window, {
        "allowed": [True] * 5 + [False] * 2, "count": "7", "ttl": between(58, 60),
        "pipelined": [[1, True], [2, False], [3, False]],
    })
    run_pattern("sliding-window rate limit", p_sliding_window, {
        "pipeline": SLIDING_EXPECT, "multi": SLIDING_EXPECT,
        "pipeline_allowed": [True, True, True, False, True, True, True],
        "multi_allowed": [True, True, True, False, True, True, True],
        "pipeline_members": [("req-6", 125.0)],
        "multi_members": [("req-6", 125.0)],
    })
    no_pinned_left("sliding window with MULTI/EXEC")
    run_pattern("Lua token bucket", p_token_bucket, {
        "calls": [[1, "2"], [1, "1"], [1, "0"], [0, "0"], [1, "0"], [0, "0"], [1, "2"]],
        "script_load": BUCKET_SHA, "script_exists": [True, False], "script_flush": True,
        "evalsha_flushed": "NoScriptError: No matching script. Please use EVAL.",
        "pttl": between(2900, 3000),
        "eval_error": 1, "eval_runtime_error": contains("not an integer"), "eval_ro": "abc",
    })
    run_pattern("SET NX PX lock", p_lock, {
        "a_acquire": True, "b_acquire_held": None, "pttl": between(4500, 5000),
        "b_release_wrong_token": 0, "b_extend_wrong_token": 0, "a_extend": 1,
        "pttl_extended": between(19500, 20000), "a_release": 1, "exists_after_release": 0,
        "b_acquire_free": True, "b_acquire_expired": True,
        "lib_a_acquire": True, "lib_b_acquire_held": False, "lib_a_extend": True, "lib_a_owned": True,
        "lib_pttl": between(9000, 10000), "lib_b_acquire_free": True,
    })
    run_pattern("MULTI/EXEC and DISCARD", p_multi, {
        "pipeline_exec": [True, 2, "2"], "multi": b"+OK\r\n", "queued_set": b"+QUEUED\r\n",
        "queued_incr": b"+QUEUED\r\n",
        "exec_with_error": b"*2\r\n+OK\r\n-ERR value is not an integer or out of range\r\n",
        "discard_multi": b"+OK\r\n", "discard_queued": b"+QUEUED\r\n", "discard": b"+OK\r\n",
        "discarded_value": b"$-1\r\n", "abort_multi": b"+OK\r\n",
        "queue_unknown": b"-ERR unknown command 'NOSUCHCMD', with args beginning with: 'a' \r\n",
        "queue_wrong_arity": b"-ERR wrong number of arguments for 'get' command\r\n",
        "exec_abort": b"-EXECABORT Transaction discarded because of previous errors.\r\n",
        "exec_without_multi": b"-ERR EXEC without MULTI\r\n",
        "discard_without_multi": b"-ERR DISCARD without MULTI\r\n",
        "nested_outer": b"+OK\r\n", "nested_multi": b"-ERR MULTI calls can not be nested\r\n",
        "watch_in_multi": b"-ERR WATCH inside MULTI is not allowed\r\n",
        "exec_after_nested": b"*0\r\n", "after_exec_ping": b"+PONG\r\n",
    })
    no_pinned_left("MULTI/EXEC and DISCARD")
    run_pattern("WATCH", p_watch, {
        "watch": True, "concurrent_write": True, "exec_aborted": None, "value_after_abort": "99",
        "exec_clean": [100], "unwatch": True, "exec_after_unwatch": [6],
        "transaction_helper": [True], "attempts": 2, "cnt": "2",
    })
    no_pinned_left("WATCH")
    run_pattern("SUBSCRIBE and PSUBSCRIBE", p_pubsub, {
        "subscribe": ("subscribe", None, "news", 1), "psubscribe": ("psubscribe", None, "alerts.*", 2),
        "numsub": [("news", 1)], "numpat": 1, "publish_news": 1, "publish_alert": 1,
        "message": ("message", None, "news", "hello"),
        "pmessage": ("pmessage", "alerts.*", "alerts.disk", "full"),
        "ping_subscribed": ("pong", None, None, ""),
        "get_subscribed": contains("only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed"),
        "unsubscribe": ("unsubscribe", None, "news", 1), "punsubscribe": ("punsubscribe", None, "alerts.*", 0),
        "ping_after": "PONG", "get_after": "v", "publish_after_unsubscribe": 0, "numsub_after": [("news", 0)],
        "nothing_late": "PONG",
    })
    no_pinned_left("pub/sub after unsubscribing everything")
    run_pattern("command right after the last UNSUBSCRIBE", p_command_right_after_unsubscribe, {
        "rounds": 300, "first_wrong": None,
    })
    T.ok(spare(PROXY) >= 1, "pub/sub: the unsubscribed connection is kept as a spare",
         "hotproxy_spare_connections=%d" % spare(PROXY))
    run_pattern("blocking commands", p_blocking, {
        "rpush": 1, "blpop_blocked": True, "blpop_woken": ("q:jobs", "job-1"),
        "llen_after": 0, "blpop_timeout": None, "blpop_timeout_time": between(0.9, 2.5),
        "blmove_blocked": True, "blmove_woken": "item", "blmove_dst": ["item"], "bzpopmin_blocked": True,
        "bzpopmin_woken": ("z:prio", "low", 1.0), "blpop_ready_data": (2, ("q:jobs", "a")),
    })
    no_pinned_left("blocking commands")
    run_pattern("BLPOP 2 with upstream-timeout 300", p_blocking_upstream_timeout, {
        "blpop2": None, "blpop2_time": between(1.9, 3.5), "ping_after": True,
    }, targets=[("hotproxy --upstream-timeout 300", PROXY_TMO, UP), ("redis", DIRECT, DIRECT)])
    no_pinned_left("BLPOP with upstream-timeout 300", PROXY_TMO)
    before = pinned(PROXY)
    run_pattern("client disconnecting while blocked", p_blocked_disconnect, {
        "blocked_upstream": True, "unblocked_upstream": True, "rpush": 1, "element_still_there": 1,
    })
    T.ok(wait_until(lambda: pinned(PROXY) <= before, timeout=20),
         "client disconnecting while blocked: its pinned connection is freed",
         "before %d, now %d" % (before, pinned(PROXY)))
    run_pattern("streams with a consumer group", p_streams, {
        "group_create": True, "xadd": "1-1",
        "xreadgroup_woken": [["st:orders", [("1-1", {"item": "book"})]]],
        "xreadgroup_blocked": True,
        "xreadgroup_more": [["st:orders", [("2-1", {"item": "pen"})]]],
        "xpending": {"pending": 2, "min": "1-1", "max": "2-1", "consumers": [{"name": "c1", "pending": 2}]},
        "xclaim": [("1-1", {"item": "book"})],
        "xautoclaim": SAME,
        "xpending_after_claim": {"pending": 2, "min": "1-1", "max": "2-1",
                                 "consumers": [{"name": "c3", "pending": 2}]},
        "xack": 2, "xpending_after_ack": 0,
        "xreadgroup_block_timeout": [], "xreadgroup_block_timeout_time": between(0.45, 2.0),
        "xread_woken": [["st:orders", [("3-1", {"item": "cup"})]]],
        "xinfo_groups": [("workers", 3, 0, "2-1")],
    })
    no_pinned_left("streams")
    run_pattern("SELECT isolation", p_select, {
        "select1": True, "set_db1": True, "get_same_conn": "in-1", "get_new_client_db0": None,
        "get_new_client_db1": "in-1", "redis_db1": "in-1", "redis_db0": None,
        "multi_in_db1": ["OK"], "redis_db1_tx": "t", "redis_db0_tx": None,
        "select_in_multi": ["OK", "OK"], "get_after_select_in_multi": "m", "redis_db2": "m",
        "select_out_of_range": "ResponseError: DB index is out of range",
        "select_not_int": "ResponseError: value is not an integer or out of range",
        "still_db2": "m", "blpop_in_db2": ("db:q", "in-2"),
    })
    no_pinned_left("SELECT")

    # AUTH: the direct Redis is configured as the proxies are, then put back.
    admin = direct_auth_setup(True)
    try:
        run_pattern("AUTH with requirepass", p_auth, AUTH_EXPECT,
                    targets=[("hotproxy --requirepass", PROXY_PASS, UP), ("redis", DIRECT, DIRECT)])
        run_pattern("AUTH alice with user directives",
                    lambda port, backend: p_auth(port, backend, user="alice", password="pw"),
                    AUTH_EXPECT, targets=[("hotproxy --user", PROXY_USER, UP), ("redis", DIRECT, DIRECT)])
        run_pattern("AUTH bob with user directives",
                    lambda port, backend: p_auth(port, backend, user="bob", password="hunter2-Zq9"),
                    AUTH_EXPECT, targets=[("hotproxy --user", PROXY_USER, UP), ("redis", DIRECT, DIRECT)])
    finally:
        admin.config_set("requirepass", "")
        admin.execute_command("ACL", "DELUSER", "alice", "bob")
    run_pattern("AUTH with no password configured", p_no_password_configured, {
        "auth_without_password": contains("called without any password configured"),
        "auth_default_nopass": True,
    })
    check_secrets()

    run_pattern("CLIENT SETNAME/GETNAME/ID/LIST/KILL/REPLY/UNBLOCK", p_client, {
        "getname_fresh": None, "setname": True, "getname": "compat-app", "id_positive": True,
        "listed_once": 1, "listed_name": "compat-app",
        "listed_fields": sorted(["id", "addr", "laddr", "fd", "name", "age", "idle", "flags", "db", "sub", "psub",
                                 "multi", "cmd", "user", "resp"]),
        "client_info_has_name": True,
        "setname_space": "ResponseError: Client names cannot contain spaces, newlines or special characters.",
        "setname_empty": True, "getname_cleared": None, "kill_id": True, "killed_closed": True,
        "kill_unknown": 0, "kill_unknown_addr": "ResponseError: No such client",
        "reply_off_on": [b"+OK\r\n", b"$1\r\n1\r\n"],
        "unblock": 1, "unblocked_reply": b"*-1\r\n", "unblock_fast": True, "unblock_not_blocked": 0,
    })
    no_pinned_left("CLIENT")
    run_pattern("CLIENT LIST of subscribed and MULTI clients", p_client_list_state, {
        "cl-subber db": "0", "cl-subber sub": "2", "cl-subber psub": "1", "cl-subber multi": "-1",
        "cl-subber flags": "P", "cl-multier db": "2", "cl-multier sub": "0", "cl-multier psub": "0",
        "cl-multier multi": "2", "cl-multier flags": "x",
    })
    no_pinned_left("CLIENT LIST of subscribed and MULTI clients")
    # CLIENT SETINFO is hotproxy's own (Redis 7.0 behind it has no SETINFO):
    # the names show in hotproxy's CLIENT INFO / LIST.
    c = RawConn(PROXY)
    T.is_(c.cmd("CLIENT", "SETINFO", "LIB-NAME", "compat-lib"), "OK", "CLIENT SETINFO LIB-NAME through hotproxy")
    T.is_(c.cmd("CLIENT", "SETINFO", "LIB-VER", "1.2.3"), "OK", "CLIENT SETINFO LIB-VER through hotproxy")
    info = c.cmd("CLIENT", "INFO")
    info = info.decode() if isinstance(info, bytes) else repr(info)
    T.ok("lib-name=compat-lib " in info and "lib-ver=1.2.3" in info,
         "CLIENT INFO through hotproxy shows the lib-name and lib-ver set by CLIENT SETINFO", info)
    c.close()

    admin_commands()
    pinned_cap()
    T.exit()


def check_secrets():
    """Passwords never reach hotproxy's log (loglevel debug) nor INFO."""
    secrets = ("secret", "pw", "hunter2-Zq9", "wrong-pw-7Qx", "whatever-pw-3Lk")
    for env, port, auth in (("COMPAT_LOG_PASS", PROXY_PASS, ("secret",)),
                            ("COMPAT_LOG_USER", PROXY_USER, ("alice", "pw"))):
        path = os.environ.get(env, "")
        try:
            with open(path, errors="replace") as f:
                log = f.read()
        except OSError as e:
            T.ok(False, "the log file of the proxy on port %d can be read" % port, str(e))
            continue
        T.ok("authentication failed" in log,
             "the debug log of the proxy on port %d records the failed AUTH attempts" % port,
             "last lines:\n" + "\n".join(log.splitlines()[-10:]))
        found = [s for s in secrets if re.search(r"(?<![A-Za-z0-9_-])%s(?![A-Za-z0-9_-])" % re.escape(s), log)]
        T.ok(not found, "no password appears in the debug log of the proxy on port %d" % port,
             "found: %r" % found)
        text = ""
        for section in ("everything", "all", "hotproxy", None):
            text += "\n".join("%s:%s" % kv for kv in info_fields(port, section, auth).items())
        c = RawConn(port)
        c.cmd("AUTH", *auth)
        lst = c.cmd("CLIENT", "LIST")
        c.close()
        text += lst.decode() if isinstance(lst, bytes) else repr(lst)
        found = [s for s in secrets if re.search(r"(?<![A-Za-z0-9_-])%s(?![A-Za-z0-9_-])" % re.escape(s), text)]
        T.ok(not found, "no password appears in INFO or CLIENT LIST of the proxy on port %d" % port,
             "found: %r" % found)


def admin_commands():
    # SHUTDOWN is refused; Redis stays up.
    c = client(PROXY)
    for args in (("SHUTDOWN",), ("SHUTDOWN", "NOSAVE"), ("shutdown", "nosave", "now")):
        T.is_(err(c.execute_command, *args), "ResponseError: hotproxy: 'shutdown' is refused by this proxy",
              "%s is refused by hotproxy" % " ".join(args))
    raw = RawConn(PROXY)
    T.is_(raw.cmd_raw("SHUTDOWN"), b"-ERR hotproxy: 'shutdown' is refused by this proxy\r\n",
          "SHUTDOWN's refusal is an -ERR reply")
    raw.close()
    T.ok(err(client(UP).ping) is True, "Redis is still up after SHUTDOWN through hotproxy")
    T.ok(err(c.ping) is True, "hotproxy still answers after SHUTDOWN")

    # refuse-command flushall
    r = client(PROXY_REFUSE)
    r.set("refuse:k", "v")
    for args in (("FLUSHALL",), ("flushall", "async"), ("FlushAll", "SYNC")):
        T.is_(err(r.execute_command, *args), "ResponseError: hotproxy: 'flushall' is refused by this proxy",
              "refuse-command flushall refuses %s" % " ".join(args))
    T.is_(client(UP).get("refuse:k"), "v", "refuse-command flushall: nothing was flushed")
    T.ok(err(r.execute_command, "DBSIZE") == client(UP).dbsize(),
         "refuse-command flushall: other commands pass (DBSIZE)")

    # CONFIG GET / SET and FLUSHALL pass through by default.
    raw_same("CONFIG GET", PROXY, UP, ("CONFIG", "GET", "maxmemory-policy"), ("CONFIG", "GET", "databases"),
             ("CONFIG", "GET", "nosuchparam"))
    old = client(UP).config_get("maxmemory-policy")["maxmemory-policy"]
    T.is_(err(c.config_set, "maxmemory-policy", "allkeys-lru"), True, "CONFIG SET through hotproxy answers OK")
    T.is_(client(UP).config_get("maxmemory-policy")["maxmemory-policy"], "allkeys-lru",
          "CONFIG SET through hotproxy changed Redis' setting")
    T.is_(c.config_get("maxmemory-policy"), {"maxmemory-policy": "allkeys-lru"},
          "CONFIG GET through hotproxy reads it back")
    client(UP).config_set("maxmemory-policy", old)
    raw_same("CONFIG SET errors", PROXY, UP, ("CONFIG", "SET", "maxmemory-policy", "bogus"),
             ("CONFIG", "SET", "nosuchparam", "1"))

    raw_same("COMMAND", PROXY, UP, ("COMMAND", "COUNT"), ("COMMAND", "INFO", "get", "set", "eval", "blpop"),
             ("COMMAND", "INFO", "nosuchcommand"), ("COMMAND", "GETKEYS", "SET", "a", "b"),
             ("COMMAND", "DOCS", "get"), ("COMMAND", "LIST", "FILTERBY", "PATTERN", "x*"))
    raw_same("errors", PROXY, UP, ("FOOBAR", "a", "b"), ("foobar",), ("GET",), ("GET", "a", "b"),
             ("CONFIG", "NOSUCHSUB"), ("OBJECT",), ("XADD", "k"),
             ("SET", "errors:s", "x"), ("INCR", "errors:s"), ("LPUSH", "errors:s", "x"),
             ("EVAL", "return redis.call('nosuch')", 0), ("FCALL", "nosuchfn", 0))

    c2 = client(PROXY)
    c2.set("flush:a", "1")
    client(PROXY, db=1).set("flush:b", "1")
    T.is_(err(c2.flushall), True, "FLUSHALL passes through by default")
    T.is_((client(UP).dbsize(), client(UP, db=1).dbsize()), (0, 0), "FLUSHALL through hotproxy emptied Redis")


def pinned_cap():
    """--upstream-max-pinned 2: a third pinned client gets an -ERR at once."""
    cs = [RawConn(PROXY_CAP, timeout=20) for _ in range(4)]
    try:
        T.is_(cs[0].cmd("MULTI"), "OK", "pinned cap: first client's MULTI")
        T.is_(cs[1].cmd("MULTI"), "OK", "pinned cap: second client's MULTI")
        try:
            third = cs[2].cmd("MULTI")
        except Exception as e:  # noqa: BLE001
            third = repr(e)
        T.ok(isinstance(third, RespError) and third.text.startswith("ERR")
             and "upstream-max-pinned" in third.text,
             "pinned cap: the third client's MULTI gets an -ERR naming upstream-max-pinned", "got %r" % (third,))
        # nothing lets a pin go before the two transactions end below: a
        # refusal that waited for one would not have come yet
        held = pinned(PROXY_CAP)
        T.ok(held == 2, "pinned cap: the refusal does not wait (both pins still held when it came)",
             "hotproxy_pinned_connections=%d" % held)
        try:
            blpop = cs[3].cmd("BLPOP", "cap:q", 5)
        except Exception as e:  # noqa: BLE001
            blpop = repr(e)
        T.ok(isinstance(blpop, RespError) and "upstream-max-pinned" in blpop.text,
             "pinned cap: a BLPOP over the cap gets the same -ERR", "got %r" % (blpop,))
        T.is_(cs[2].cmd("SET", "cap:k", "v"), "OK", "pinned cap: the refused client still runs shared commands")
        T.is_(cs[0].cmd("INCR", "cap:n"), "QUEUED", "pinned cap: first client's transaction is intact")
        T.is_(cs[0].cmd("EXEC"), [1], "pinned cap: first client's EXEC")
        T.is_(cs[1].cmd("DISCARD"), "OK", "pinned cap: second client's DISCARD")
        T.ok(wait_until(lambda: pinned(PROXY_CAP) == 0, timeout=20), "pinned cap: both pinned connections freed")
        T.is_(cs[2].cmd("MULTI"), "OK", "pinned cap: once freed, the third client's MULTI works")
        T.is_(cs[2].cmd("EXEC"), [], "pinned cap: and its EXEC")
    finally:
        for c in cs:
            c.close()


if __name__ == "__main__":
    try:
        main()
    except Exception:
        T.exception("resp2_patterns.py ran to the end")
        T.exit()
