"""
common.py: what the Python compatibility programs share.

test_compat.sh starts the processes and passes their ports in the
environment (see env_port); these programs only talk to them.  They print
TAP lines without numbers ("ok - what", "not ok - what", "# diag") and the
driver numbers them, so several programs make one TAP stream.

RawConn is a byte-level RESP2/RESP3 client: the tests that must see exactly
what hotproxy sends (RESP3 type markers, error texts, push frames) use it
instead of a client library that would hide the bytes.
"""
import os
import socket
import sys
import time
import traceback


def env_port(name):
    v = os.environ.get(name)
    if not v:
        print("not ok - environment variable %s is set (run me from test_compat.sh)" % name)
        sys.exit(1)
    return int(v)


class Tap:
    def __init__(self):
        self.failed = 0
        self.run = 0

    def ok(self, cond, desc, *diags):
        self.run += 1
        cond = bool(cond)
        if not cond:
            self.failed += 1
        desc = desc.replace("#", "\\#").replace("\n", " ")
        print("%sok - %s" % ("" if cond else "not ", desc))
        if not cond:
            for d in diags:
                self.diag(d)
        sys.stdout.flush()
        return cond

    def is_(self, got, want, desc):
        return self.ok(got == want, desc, "  got:  %r" % (got,), "  want: %r" % (want,))

    def diag(self, msg):
        for line in str(msg).splitlines() or [""]:
            print("# " + line)
        sys.stdout.flush()

    def exception(self, desc):
        """A test body raised: that is a failure of the test it was in."""
        self.ok(False, desc, traceback.format_exc())

    def exit(self):
        sys.stdout.flush()
        sys.exit(1 if self.failed else 0)


def wait_until(fn, timeout=20.0, step=0.02):
    """Poll fn() until it returns something true; returns its last value."""
    deadline = time.monotonic() + timeout
    v = fn()
    while not v and time.monotonic() < deadline:
        time.sleep(step)
        v = fn()
    return v


# --- RESP ---------------------------------------------------------------------


class RespError(object):
    """An error reply, as a value (raw readers must not raise on them)."""

    def __init__(self, text):
        self.text = text

    def __eq__(self, other):
        return isinstance(other, RespError) and other.text == self.text

    def __hash__(self):
        return hash(self.text)

    def __repr__(self):
        return "RespError(%r)" % self.text


class Push(list):
    """A RESP3 push frame ('>')."""

    def __repr__(self):
        return "Push(%s)" % list.__repr__(self)


class Incomplete(Exception):
    pass


def encode(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, (int, float)):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def parse(buf, pos=0):
    """Parse one RESP2/RESP3 value at buf[pos:]; returns (value, next_pos).
    Raises Incomplete when buf does not hold all of it yet."""
    nl = buf.find(b"\r\n", pos)
    if nl < 0:
        raise Incomplete()
    t = buf[pos:pos + 1]
    line = buf[pos + 1:nl]
    pos = nl + 2
    if t == b"+":
        return line.decode(), pos
    if t == b"-":
        return RespError(line.decode()), pos
    if t == b":":
        return int(line), pos
    if t == b",":
        return float(line), pos
    if t == b"(":
        return int(line), pos
    if t == b"#":
        return line == b"t", pos
    if t == b"_":
        return None, pos
    if t in (b"$", b"=", b"!"):
        n = int(line)
        if n < 0:
            return None, pos
        if len(buf) < pos + n + 2:
            raise Incomplete()
        data = buf[pos:pos + n]
        pos += n + 2
        if t == b"!":
            return RespError(data.decode()), pos
        return data, pos
    if t in (b"*", b"~", b">"):
        n = int(line)
        if n < 0:
            return None, pos
        items = []
        for _ in range(n):
            v, pos = parse(buf, pos)
            items.append(v)
        if t == b">":
            return Push(items), pos
        if t == b"~":
            return ("set", items), pos
        return items, pos
    if t == b"%":
        n = int(line)
        items = []
        for _ in range(n):
            k, pos = parse(buf, pos)
            v, pos = parse(buf, pos)
            items.append((k, v))
        return ("map", items), pos
    if t == b"|":  # attribute: skip it, return what follows
        n = int(line)
        for _ in range(2 * n):
            _, pos = parse(buf, pos)
        return parse(buf, pos)
    raise ValueError("bad RESP type byte %r at %r" % (t, buf[pos - 20:pos + 20]))


class RawConn(object):
    """A blocking socket speaking RESP; read() returns (value, raw bytes)."""

    def __init__(self, port, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout)
        self.buf = b""

    def send(self, *args):
        self.sock.sendall(encode(*args))

    def send_raw(self, data):
        self.sock.sendall(data)

    def read(self, timeout=None):
        """One reply.  Raises socket.timeout, or EOFError if the peer closed."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        while True:
            if self.buf:
                try:
                    v, n = parse(self.buf)
                    raw, self.buf = self.buf[:n], self.buf[n:]
                    return v, raw
                except Incomplete:
                    pass
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed by peer")
            self.buf += chunk

    def cmd(self, *args):
        self.send(*args)
        return self.read()[0]

    def cmd_raw(self, *args):
        self.send(*args)
        return self.read()[1]

    def closed_by_peer(self, timeout=2.0):
        """True when the peer closes within timeout (nothing else arrives)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def info_fields(port, section=None, auth=None):
    """INFO [section] over a fresh connection, as a dict of strings."""
    c = RawConn(port, timeout=5)
    try:
        if auth:
            c.cmd("AUTH", *auth)
        v = c.cmd("INFO", section) if section else c.cmd("INFO")
    finally:
        c.close()
    if isinstance(v, RespError):
        raise RuntimeError("INFO failed: %s" % v.text)
    out = {}
    for line in v.decode().splitlines():
        if ":" in line and not line.startswith("#"):
            k, _, val = line.partition(":")
            out[k] = val
    return out


def pinned(port, auth=None):
    """hotproxy_pinned_connections of the proxy on port."""
    return int(info_fields(port, "hotproxy_upstream", auth)["hotproxy_pinned_connections"])


def spare(port, auth=None):
    return int(info_fields(port, "hotproxy_upstream", auth)["hotproxy_spare_connections"])


def blocked_clients(redis_port):
    return int(info_fields(redis_port, "clients")["blocked_clients"])
