#!/usr/bin/env bash
# bench/floor, the do-nothing RESP server bench/compare.sh measures as the
# floor: it must answer every command redis-benchmark sends, exactly once and
# in order, or the floor it reports means nothing.
#
# Checked: the fixed replies (GET's bulk of --reply-size bytes, CONFIG GET,
# PING, +OK), array and inline commands mixed in one stream, the stream sent
# a byte at a time (commands split across reads) and all at once, a 1 MB
# value (many reads for one command), protocol errors (-ERR, then closed),
# redis-benchmark without a warning or an error, bad options, and SIGTERM
# (exit 0 with its counts).
#
# Environment (tests/run.sh sets these): HOTPROXY_BUILD, else ./build.
set -uo pipefail

src=${HOTPROXY_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
floor=${HOTPROXY_BUILD:-$src/build}/bench/floor

. "$src/tests/tap.sh"

if [[ ! -x $floor ]]; then
    echo "1..0 # SKIP no floor binary at $floor"
    exit 0
fi
for tool in redis-cli redis-benchmark python3; do
    if ! command -v "$tool" >/dev/null; then
        echo "1..0 # SKIP $tool is not installed"
        exit 0
    fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/hotproxy-floor-XXXXXX")
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 143' TERM INT HUP

# start_floor NAME [ARG...]: floor on a free port with ARGs; sets port and
# pid, waits (10 s) until it says it listens.
start_floor() {
    local name=$1 i
    shift
    port=$(free_port)
    "$floor" --port "$port" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
    pid=$!
    pids+=("$pid")
    for ((i = 0; i < 200; i++)); do
        grep -q '^floor: listening on' "$tmp/$name.out" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# exchange PORT MODE: python3 sends MODE's requests and checks the replies;
# exit 0 when they are exactly right, else prints what it got.
exchange() {
    python3 - "$@" <<'EOF'
import socket, sys, time
port, mode = int(sys.argv[1]), sys.argv[2]

def conn():
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s

def read_exactly(s, n):
    got = b""
    deadline = time.time() + 20
    while len(got) < n and time.time() < deadline:
        b = s.recv(65536)
        if not b:
            break
        got += b
    return got

def bulk(n):
    return b"$%d\r\n%s\r\n" % (n, b"x" * n)

stream = (b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n"
          b"*3\r\n$3\r\nset\r\n$1\r\nk\r\n$3\r\nabc\r\n"
          b"get k\r\n"
          b"PING\n"
          b"\r\n"                                   # empty inline: no reply
          b"*0\r\n"                                 # no arguments: no reply
          b"*3\r\n$6\r\nconfig\r\n$3\r\nget\r\n$10\r\nappendonly\r\n"
          b"  GET   a  \r\n"
          b"*1\r\n$4\r\nping\r\n")
expect = (bulk(5) + b"+OK\r\n" + bulk(5) + b"+PONG\r\n"
          + b"*2\r\n$10\r\nappendonly\r\n$0\r\n\r\n" + bulk(5) + b"+PONG\r\n")

if mode == "whole":
    s = conn()
    s.sendall(stream * 3)
    got = read_exactly(s, 3 * len(expect))
    want = expect * 3
elif mode == "bytes":
    # One byte per send with TCP_NODELAY and a short pause: most land in
    # reads of their own, so commands are split at every possible place.
    s = conn()
    for i in range(len(stream)):
        s.sendall(stream[i:i + 1])
        time.sleep(0.002)
    got = read_exactly(s, len(expect))
    want = expect
elif mode == "big":
    v = b"v" * (1 << 20)
    s = conn()
    s.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n%s\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n" % (len(v), v))
    want = b"+OK\r\n" + bulk(5)
    got = read_exactly(s, len(want))
elif mode == "zero":
    s = conn()
    s.sendall(b"GET k\r\n")
    want = b"$0\r\n\r\n"
    got = read_exactly(s, len(want))
elif mode.startswith("proto"):
    bad = {"proto-count": b"*x\r\n", "proto-len": b"*1\r\n$-5\r\n",
           "proto-crlf": b"*1\r\n$3\r\nGETXY", "proto-dollar": b"*1\r\n+GET\r\n",
           "proto-inline": b"G" * 70000}[mode]
    s = conn()
    s.sendall(b"PING\r\n" + bad)
    got = read_exactly(s, 1 << 20)  # all until the floor closes
    ok = got.startswith(b"+PONG\r\n-ERR Protocol error: ") and got.endswith(b"\r\n") \
        and got.count(b"\r\n") == 2
    if not ok:
        print("got %r" % got[:200])
    sys.exit(0 if ok else 1)
else:
    sys.exit("unknown mode " + mode)
if got != want:
    print("want %r\n got %r" % (want[:300], got[:300]))
    sys.exit(1)
EOF
}

start_floor main --reply-size 5
ok $? "floor starts and says it listens"
main_pid=$pid main_port=$port

[[ $(timeout 10 redis-cli -p "$main_port" GET anything) == xxxxx ]]
ok $? "GET gets a bulk of --reply-size bytes"
[[ $(timeout 10 redis-cli -p "$main_port" CONFIG GET save | tr '\n' ,) == "save,," ]]
ok $? "CONFIG GET NAME gets [NAME, \"\"]"

for mode in whole bytes big; do
    out=$(exchange "$main_port" "$mode" 2>&1)
    ok $? "replies exactly right, $mode"
    [[ -n $out ]] && diag <<<"$out"
done
for mode in proto-count proto-len proto-crlf proto-dollar proto-inline; do
    out=$(exchange "$main_port" "$mode" 2>&1)
    ok $? "$mode: what came before is answered, then -ERR Protocol error and the connection closed"
    [[ -n $out ]] && diag <<<"$out"
done

# redis-benchmark as compare.sh runs it: nothing on stderr, a result per test.
timeout 120 redis-benchmark -p "$main_port" -c 10 -n 20000 -P 16 -d 5 -t set,get --csv \
    >"$tmp/rb.out" 2>"$tmp/rb.err"
rc=$?
((rc == 0)) && [[ ! -s $tmp/rb.err ]] && grep -q '^"GET",' "$tmp/rb.out" && grep -q '^"SET",' "$tmp/rb.out"
ok $? "redis-benchmark -t set,get -P 16: exit 0, a result for each, nothing on stderr"
{ cat "$tmp/rb.err"; } | diag

kill -0 "$main_pid" 2>/dev/null
ok $? "floor still runs after the bad requests and the benchmark"
kill -TERM "$main_pid"
wait "$main_pid"
rc=$?
((rc == 0)) && grep -q 'commands answered' "$tmp/main.err"
ok $? "SIGTERM: exit 0 and its counts on stderr"
diag <"$tmp/main.err"

start_floor zero --reply-size 0
ok $? "floor starts with --reply-size 0"
out=$(exchange "$port" zero 2>&1)
ok $? "--reply-size 0: GET gets an empty bulk"
[[ -n $out ]] && diag <<<"$out"
kill -TERM "$pid"
wait "$pid"

for bad in "--reply-size -1" "--reply-size 2000000" "--port 0" "--bind nowhere --port 1" "" "--port 1 extra"; do
    # shellcheck disable=SC2086 # split the options on purpose
    timeout 10 "$floor" $bad >"$tmp/bad.out" 2>"$tmp/bad.err"
    rc=$?
    ((rc == 1 || rc == 2)) && grep -q '^floor: \|^Usage' "$tmp/bad.err"
    ok $? "bad options '$bad': exit $rc with a message"
done

echo "1..$n"
exit $((failed > 0))
