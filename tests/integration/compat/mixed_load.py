"""
mixed_load.py: 200 clients at once, mixing commands that pin an upstream
connection (MULTI/EXEC, BLPOP, SUBSCRIBE/UNSUBSCRIBE) with shared ones
(SET/GET), for a bounded time.

Half the clients speak RESP3.  Every value a client writes names the client ("c17:4711"), so a reply that
went to the wrong client shows.  Asserted: no client ever sees another
client's value, every reply is the one Redis gives for that client's own
keys, every EXEC returns the client's own results, the per-client counters
in Redis match what each client counted, and once everyone has gone no
pinned connection and no blocked Redis client is left.  Some clients
also walk away in the middle of a MULTI or a BLPOP and reconnect; an
element pushed afterwards to the abandoned BLPOP's key must stay there.

The same load runs briefly against Redis itself first, to show that the
checks hold there (a check that fails against Redis is a bug of this test).
"""
import os
import random
import re
import threading
import time

from common import RawConn, Tap, blocked_clients, env_port, pinned, wait_until

T = Tap()
UP = env_port("COMPAT_REDIS")
DIRECT = env_port("COMPAT_DIRECT")
PROXY = env_port("COMPAT_PROXY")
NCLIENTS = int(os.environ.get("COMPAT_LOAD_CLIENTS", "200"))
SECONDS = float(os.environ.get("COMPAT_LOAD_SECONDS", "10"))

KINDS = ("shared", "multi", "blpop_ready", "blpop_timeout", "subscribe", "abandon")
WEIGHTS = (40, 22, 10, 8, 18, 2)


class Client(threading.Thread):
    def __init__(self, i, port, deadline):
        threading.Thread.__init__(self, daemon=True)
        self.i, self.port, self.deadline = i, port, deadline
        self.me = "c%d:" % i
        self.counter = 0
        self.problems = []
        self.foreign = 0
        self.exec_bad = 0
        self.ops = dict.fromkeys(KINDS, 0)
        self.error = None

    def look(self, what, got, want):
        """Record a reply that is not the expected one; spot foreign values."""
        if got == want:
            return
        text = repr(got)
        for m in re.finditer(r"c(\d+):\d+", text):
            if int(m.group(1)) != self.i:
                self.foreign += 1
                break
        if len(self.problems) < 5:
            self.problems.append("client %d %s: got %r, want %r" % (self.i, what, got, want))
        return False

    def connect(self):
        """Odd clients speak RESP3 (HELLO 3): their commands travel on other
        lanes, and their pub/sub frames are pushes."""
        c = RawConn(self.port, timeout=10)
        if self.i % 2:
            hello = c.cmd("HELLO", "3")
            if not (isinstance(hello, tuple) and hello[0] == "map"):
                raise RuntimeError("HELLO 3 answered %r" % (hello,))
        return c

    def run(self):
        rng = random.Random(self.i)
        i = self.i
        k, mk, cnt, bl, ch = ("ml:k:%d" % i, "ml:mk:%d" % i, "ml:cnt:%d" % i, "ml:bl:%d" % i, "ml:ch:%d" % i)
        try:
            main = self.connect()
            pub = RawConn(self.port, timeout=10)
            seq = 0
            while time.monotonic() < self.deadline:
                kind = rng.choices(KINDS, WEIGHTS)[0]
                seq += 1
                val = ("%s%d" % (self.me, seq)).encode()
                self.ops[kind] += 1
                if kind == "shared":
                    self.look("SET", main.cmd("SET", k, val), "OK")
                    self.look("GET", main.cmd("GET", k), val)
                elif kind == "multi":
                    self.look("MULTI", main.cmd("MULTI"), "OK")
                    self.look("queued SET", main.cmd("SET", mk, val), "QUEUED")
                    self.look("queued INCR", main.cmd("INCR", cnt), "QUEUED")
                    self.look("queued GET", main.cmd("GET", mk), "QUEUED")
                    self.counter += 1
                    res = main.cmd("EXEC")
                    if self.look("EXEC", res, ["OK", self.counter, val]) is False:
                        self.exec_bad += 1
                elif kind == "blpop_ready":
                    self.look("RPUSH", main.cmd("RPUSH", bl, val), 1)
                    self.look("BLPOP", main.cmd("BLPOP", bl, 1), [bl.encode(), val])
                elif kind == "blpop_timeout":
                    self.look("BLPOP timeout", main.cmd("BLPOP", bl, "0.05"), None)
                elif kind == "subscribe":
                    self.look("SUBSCRIBE", main.cmd("SUBSCRIBE", ch), [b"subscribe", ch.encode(), 1])
                    self.look("PUBLISH", pub.cmd("PUBLISH", ch, val), 1)
                    self.look("message", main.read()[0], [b"message", ch.encode(), val])
                    self.look("UNSUBSCRIBE", main.cmd("UNSUBSCRIBE", ch), [b"unsubscribe", ch.encode(), 0])
                    self.look("PING after UNSUBSCRIBE", main.cmd("PING"), "PONG")
                else:  # abandon: walk away while pinned, then come back
                    if rng.random() < 0.5:
                        main.send("MULTI")
                        main.send("SET", mk, b"abandoned")
                        self.look("abandoned MULTI", main.read()[0], "OK")
                    else:
                        # Its own key: whether a BLPOP sent just before a
                        # close ran is a race even with Redis alone, so it
                        # must not compete for the elements checked above.
                        main.send("BLPOP", "ml:ab:%d" % i, 5)
                        time.sleep(0.02)
                    main.close()
                    main = self.connect()
            main.close()
            pub.close()
        except Exception as e:  # noqa: BLE001 reported as a failure
            self.error = "client %d: %s: %s" % (self.i, type(e).__name__, e)


def reset_keys(port):
    c = RawConn(port)
    for i in range(NCLIENTS):
        c.cmd("DEL", "ml:k:%d" % i, "ml:mk:%d" % i, "ml:cnt:%d" % i, "ml:bl:%d" % i, "ml:ab:%d" % i)
    c.close()


def load(name, port, backend, seconds):
    reset_keys(port)
    deadline = time.monotonic() + seconds
    clients = [Client(i, port, deadline) for i in range(NCLIENTS)]
    for c in clients:
        c.start()
    for c in clients:
        c.join(seconds + 30)
    hung = [c.i for c in clients if c.is_alive()]
    T.ok(not hung, "%s: all %d clients finished" % (name, NCLIENTS), "still running: %r" % hung[:20])
    errors = [c.error for c in clients if c.error]
    T.ok(not errors, "%s: no client had a connection error or timeout" % name, *errors[:10])
    T.is_(sum(c.foreign for c in clients), 0, "%s: no client ever received another client's value" % name)
    problems = [p for c in clients for p in c.problems]
    T.ok(not problems, "%s: every reply was the client's own expected reply" % name, *problems[:15])
    T.is_(sum(c.exec_bad for c in clients), 0, "%s: every EXEC returned the client's own results" % name)
    ops = {kind: sum(c.ops[kind] for c in clients) for kind in KINDS}
    T.diag("%s: %r" % (name, ops))
    few = [kind for kind in KINDS if ops[kind] < (20 if kind == "abandon" else NCLIENTS // 2)]
    T.ok(not few, "%s: every kind of command ran many times" % name, "ops: %r" % ops)
    # What Redis holds agrees with what each client counted.
    r = RawConn(backend)
    wrong = []
    for c in clients:
        got = r.cmd("GET", "ml:cnt:%d" % c.i)
        got = int(got) if got is not None else 0
        if got != c.counter:
            wrong.append("client %d: redis has %d, the client counted %d EXECs" % (c.i, got, c.counter))
    r.close()
    T.ok(not wrong, "%s: each client's INCR counter in redis equals its EXEC count" % name, *wrong[:10])
    T.ok(wait_until(lambda: blocked_clients(backend) == 0, timeout=8),
         "%s: no client is left blocked in redis" % name, "blocked_clients=%d" % blocked_clients(backend))
    r = RawConn(port)
    stolen = []
    for c in clients:
        if c.ops["abandon"]:
            r.cmd("RPUSH", "ml:ab:%d" % c.i, "late")
    time.sleep(0.2)
    for c in clients:
        if c.ops["abandon"] and r.cmd("LLEN", "ml:ab:%d" % c.i) != 1:
            stolen.append(c.i)
    r.close()
    T.ok(not stolen, "%s: no abandoned BLPOP takes an element pushed after it was abandoned" % name,
         "elements taken from ml:ab:N for clients %r" % stolen[:20])


def main():
    load("mixed load against redis", DIRECT, DIRECT, min(2.0, SECONDS))
    load("mixed load through hotproxy", PROXY, UP, SECONDS)
    T.ok(wait_until(lambda: pinned(PROXY) == 0, timeout=8),
         "mixed load through hotproxy: no pinned connection left", "hotproxy_pinned_connections=%d" % pinned(PROXY))
    c = RawConn(PROXY)
    T.is_(c.cmd("PING"), "PONG", "hotproxy answers after the mixed load")
    c.close()
    T.exit()


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except Exception:
        T.exception("mixed_load.py ran to the end")
        T.exit()
