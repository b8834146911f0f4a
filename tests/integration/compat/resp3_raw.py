"""
resp3_raw.py: RESP3 on the wire, byte for byte.

One script of commands runs over a raw socket through hotproxy and then
straight to the Redis behind it; after HELLO 3 every reply must carry its
RESP3 type (maps '%', sets '~', nulls '_', doubles ',', pushes '>') and be
the same bytes Redis sends.  Only HELLO's client id differs, and is masked.
"""
import re
import time

from common import RawConn, Tap, blocked_clients, env_port, pinned, wait_until

T = Tap()
UP = env_port("COMPAT_REDIS")
PROXY = env_port("COMPAT_PROXY")
PROXY_USER = env_port("COMPAT_PROXY_USER")


def setup():
    c = RawConn(UP)
    for cmd in (("DEL", "r3:h", "r3:h1", "r3:z", "r3:s", "r3:missing", "r3:l", "r3:k", "r3:tk", "r3:empty"),
                ("HSET", "r3:h", "f1", "v1", "f2", "v2"), ("ZADD", "r3:z", "1.5", "a", "2", "b"),
                ("SADD", "r3:s", "x"), ("HSET", "r3:h1", "only", "v"), ("RPUSH", "r3:l", "a", "b"), ("SET", "r3:tk", "0")):
        c.cmd(*cmd)
    c.close()


def mask_hello(raw):
    return re.sub(rb"\$2\r\nid\r\n:\d+\r\n", b"$2\r\nid\r\n:<id>\r\n", raw)


LUA_MAP = "redis.setresp(3); return redis.call('HGETALL', KEYS[1])"
LUA_DOUBLE = "return {double=3.5}"


def transcript(port):
    """[(label, raw reply)] of one scripted RESP3 session on port."""
    out = []
    a = RawConn(port, timeout=5)
    other = RawConn(port, timeout=5)

    def step(label, *cmd):
        a.send(*cmd)
        out.append((label, a.read()[1]))

    def push(label):
        try:
            out.append((label, a.read(timeout=20)[1]))
        except Exception as e:  # noqa: BLE001 recorded, compared, reported
            out.append((label, ("no frame: %r" % e).encode()))

    a.send("HELLO", "3")
    out.append(("HELLO 3", mask_hello(a.read()[1])))
    step("HGETALL is a map", "HGETALL", "r3:h")
    step("GET of a missing key is a RESP3 null", "GET", "r3:missing")
    step("ZSCORE is a double", "ZSCORE", "r3:z", "a")
    step("ZRANGE WITHSCORES pairs with doubles", "ZRANGE", "r3:z", "0", "-1", "WITHSCORES")
    step("SMEMBERS is a set", "SMEMBERS", "r3:s")
    step("CONFIG GET is a map", "CONFIG", "GET", "maxmemory")
    step("EXISTS is an integer", "EXISTS", "r3:h")
    step("LPOS of a missing element is null", "LPOS", "r3:l", "zz")
    step("HRANDFIELD WITHVALUES pairs", "HRANDFIELD", "r3:h1", "-1", "WITHVALUES")
    step("COMMAND INFO in RESP3", "COMMAND", "INFO", "get")
    step("Lua map via redis.setresp(3)", "EVAL", LUA_MAP, "1", "r3:h")
    step("Lua double", "EVAL", LUA_DOUBLE, "0")
    step("BLPOP timing out is null", "BLPOP", "r3:empty", "0.1")
    step("MULTI", "MULTI")
    step("queued SET", "SET", "r3:k", "v")
    step("queued GET", "GET", "r3:k")
    step("queued ZSCORE", "ZSCORE", "r3:z", "b")
    step("queued HGETALL", "HGETALL", "r3:h")
    step("EXEC with RESP3 types inside", "EXEC")
    step("CLIENT TRACKING ON", "CLIENT", "TRACKING", "ON")
    step("GET of a tracked key", "GET", "r3:tk")
    other.cmd("SET", "r3:tk", "1")
    push("invalidate push after another client's SET")
    step("CLIENT TRACKING OFF", "CLIENT", "TRACKING", "OFF")
    step("SUBSCRIBE push", "SUBSCRIBE", "r3:ch")
    other.cmd("PUBLISH", "r3:ch", "hi")
    push("message push")
    step("PING while subscribed", "PING")
    step("GET while subscribed (RESP3 allows it)", "GET", "r3:k")
    step("PSUBSCRIBE push", "PSUBSCRIBE", "r3:p*")
    other.cmd("PUBLISH", "r3:p1", "there")
    push("pmessage push")
    step("UNSUBSCRIBE push", "UNSUBSCRIBE", "r3:ch")
    step("PUNSUBSCRIBE push", "PUNSUBSCRIBE")
    step("GET after unsubscribing", "GET", "r3:missing")
    a.send("HELLO", "2")
    out.append(("HELLO 2", mask_hello(a.read()[1])))
    step("RESP2 null after HELLO 2", "GET", "r3:missing")
    step("RESP2 HGETALL after HELLO 2", "HGETALL", "r3:h")
    step("RESP2 ZSCORE after HELLO 2", "ZSCORE", "r3:z", "a")
    step("HELLO 3 again", "HELLO", "3", "SETNAME", "r3-client")
    out[-1] = (out[-1][0], mask_hello(out[-1][1]))
    step("CLIENT GETNAME set by HELLO", "CLIENT", "GETNAME")
    step("RESET", "RESET")
    step("RESP2 after RESET", "GET", "r3:missing")
    a.close()
    other.close()
    return out


def expect_types(tr):
    want = {
        "HELLO 3": b"%7\r\n",
        "HGETALL is a map": b"%2\r\n",
        "GET of a missing key is a RESP3 null": b"_\r\n",
        "ZSCORE is a double": b",1.5\r\n",
        "SMEMBERS is a set": b"~1\r\n",
        "CONFIG GET is a map": b"%1\r\n",
        "LPOS of a missing element is null": b"_\r\n",
        "Lua map via redis.setresp(3)": b"%2\r\n",
        "Lua double": b",3.5\r\n",
        "BLPOP timing out is null": b"_\r\n",
        "EXEC with RESP3 types inside": b"*4\r\n+OK\r\n$1\r\nv\r\n,2\r\n%2\r\n",
        "invalidate push after another client's SET": b">2\r\n$10\r\ninvalidate\r\n*1\r\n$5\r\nr3:tk\r\n",
        "SUBSCRIBE push": b">3\r\n$9\r\nsubscribe\r\n$5\r\nr3:ch\r\n:1\r\n",
        "message push": b">3\r\n$7\r\nmessage\r\n$5\r\nr3:ch\r\n$2\r\nhi\r\n",
        "PING while subscribed": b"+PONG\r\n",
        "GET while subscribed (RESP3 allows it)": b"$1\r\nv\r\n",
        "pmessage push": b">4\r\n$8\r\npmessage\r\n$5\r\nr3:p*\r\n$5\r\nr3:p1\r\n$5\r\nthere\r\n",
        "PUNSUBSCRIBE push": b">3\r\n$12\r\npunsubscribe\r\n$5\r\nr3:p*\r\n:0\r\n",
        "GET after unsubscribing": b"_\r\n",
        "HELLO 2": b"*14\r\n",
        "RESP2 null after HELLO 2": b"$-1\r\n",
        "RESP2 HGETALL after HELLO 2": b"*4\r\n",
        "RESP2 ZSCORE after HELLO 2": b"$3\r\n1.5\r\n",
        "CLIENT GETNAME set by HELLO": b"$9\r\nr3-client\r\n",
        "RESET": b"+RESET\r\n",
        "RESP2 after RESET": b"$-1\r\n",
    }
    return want


def main():
    setup()
    try:
        mine = transcript(PROXY)
    except Exception:
        T.exception("the RESP3 script runs through hotproxy")
        T.exit()
    setup()
    theirs = transcript(UP)
    want = expect_types(theirs)
    # The script itself is checked against Redis first: a wrong expectation
    # is a bug of this test, not of hotproxy.
    rd = dict(theirs)
    bad = ["%s: redis sent %r" % (k, rd.get(k)) for k, v in want.items() if not (rd.get(k) or b"").startswith(v)]
    T.ok(not bad, "the RESP3 script's expectations hold against redis-server itself", *bad)
    for (label, got), (label2, ref) in zip(mine, theirs):
        assert label == label2
        w = want.get(label)
        if w is not None:
            T.ok(got.startswith(w), "RESP3 through hotproxy: %s (%r...)" % (label, w[:12]),
                 "got  %r" % got[:300], "want %r..." % w)
        T.ok(got == ref, "RESP3 through hotproxy: %s, byte-identical to redis" % label,
             "hotproxy: %r" % got[:300], "redis:    %r" % ref[:300])
    T.is_(len(mine), len(theirs), "RESP3 transcripts have the same length")
    T.ok(wait_until(lambda: pinned(PROXY) == 0, timeout=20), "RESP3 session: no pinned connection left",
         "hotproxy_pinned_connections=%d" % pinned(PROXY))

    # A RESP3 client that disconnects while blocked frees its connection, and
    # its BLPOP does not take an element pushed afterwards.
    for name, port in (("hotproxy", PROXY), ("redis", UP)):
        w = RawConn(port)
        w.cmd("DEL", "r3:orphan")
        base = blocked_clients(UP)
        b = RawConn(port)
        b.cmd("HELLO", "3")
        b.send("BLPOP", "r3:orphan", 10)
        T.ok(wait_until(lambda: blocked_clients(UP) == base + 1, timeout=20),
             "RESP3 BLPOP through %s blocks in redis" % name)
        b.close()
        T.ok(wait_until(lambda: blocked_clients(UP) == base, timeout=20),
             "RESP3 client gone while blocked (%s): redis no longer blocks for it" % name)
        w.cmd("RPUSH", "r3:orphan", "x")
        time.sleep(0.1)
        T.is_(w.cmd("LLEN", "r3:orphan"), 1, "RESP3 client gone while blocked (%s): a later element stays" % name)
        w.close()
    T.ok(wait_until(lambda: pinned(PROXY) == 0, timeout=20),
         "RESP3 client gone while blocked: hotproxy's pinned connection is freed")

    # HELLO 3 AUTH against the proxy with users.
    c = RawConn(PROXY_USER)
    c.send("HGETALL", "r3:h")
    T.is_(c.read()[1], b"-NOAUTH Authentication required.\r\n", "HELLO 3 AUTH: NOAUTH before it")
    c.send("HELLO", "3", "AUTH", "alice", "not-the-pw")
    T.is_(c.read()[1], b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
          "HELLO 3 AUTH alice with a bad password: WRONGPASS")
    c.send("HELLO", "3", "AUTH", "alice", "pw")
    v, raw = c.read()
    T.ok(raw.startswith(b"%7\r\n") and b"$5\r\nproto\r\n:3\r\n" in raw, "HELLO 3 AUTH alice pw: a RESP3 map",
         "got %r" % raw)
    c.send("HGETALL", "r3:h")
    T.is_(c.read()[1], b"%2\r\n$2\r\nf1\r\n$2\r\nv1\r\n$2\r\nf2\r\n$2\r\nv2\r\n",
          "HELLO 3 AUTH alice pw: HGETALL is a map")
    c.close()
    T.exit()


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except Exception:
        T.exception("resp3_raw.py ran to the end")
        T.exit()
