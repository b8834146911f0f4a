#!/usr/bin/env bash
# TLS towards clients: hotproxy with both port and tls-port open in front of a
# plain redis-server, reached by real TLS clients.
#
# redis-cli --tls (PING, SET, GET, CLIENT LIST, a 1 MB value, a --pipe of
# 10,000 commands), Python's redis with ssl=True, redis-benchmark --tls; the
# L1 answering a TLS client (a value large enough to be referenced, not
# copied, for a plain client) and invalidations reaching it (a write through
# the plain port, a write straight to Redis); tls-auth-clients yes refusing a
# client without a certificate and one whose certificate another CA signed,
# optional and no accepting them (switched by reload); plain text to the TLS
# port; a handshake never finished, closed after its bound (10 s); each
# refusal counted in hotproxy_tls_handshake_failures and logged with its
# reason.  Reload: a new certificate is what the next client sees
# (openssl s_client), a connected client keeps its session, and a broken
# certificate keeps the running one (HOTPROXY CONFIG RELOAD's error, SIGHUP's
# log line).  Bad TLS files stop the start and fail --test-config.
#
# The certificates are the harness' (tests/tls-certs.sh), and one more by
# its CA, with another subject, for the reload.
#
# Environment (tests/run.sh sets these): HOTPROXY_BIN, else ./build/hotproxy.
set -uo pipefail

src=${HOTPROXY_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
bin=${HOTPROXY_BIN:-./build/hotproxy}
[[ -x $bin ]] || bin=$src/build/hotproxy
py=/usr/bin/python3
[[ -x $py ]] || py=python3

. "$src/tests/tap.sh"

if [[ ! -x $bin ]]; then
    echo "1..0 # SKIP no hotproxy binary at $bin"
    exit 0
fi
need_tools redis-server redis-cli redis-benchmark openssl "$py"
if ! "$py" -c 'import redis' 2>/dev/null; then
    echo "1..0 # SKIP python3-redis is not installed"
    exit 0
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/hotproxy-tlscli-XXXXXX")
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill -KILL "$p" 2>/dev/null
    done
    launch_stop
    wait 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 143' TERM INT HUP

watchdog 280
pids+=("$!")

# --- certificates ---------------------------------------------------------------

bash "$src/tests/tls-certs.sh" "$tmp" &&
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/O=hotproxy tests/CN=hotproxy-renewed" \
        -keyout "$tmp/renewed.key" -out "$tmp/renewed.csr" 2>/dev/null &&
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$tmp/renewed.ext" &&
    openssl x509 -req -in "$tmp/renewed.csr" -CA "$tmp/ca.crt" -CAkey "$tmp/ca.key" -CAcreateserial -days 30 \
        -extfile "$tmp/renewed.ext" -out "$tmp/renewed.crt" 2>/dev/null
ok $? "tests/tls-certs.sh made the CA, server, client and other-CA certificates, openssl a renewed server one"
cp "$tmp/server.crt" "$tmp/live.crt" && cp "$tmp/server.key" "$tmp/live.key"

# --- helpers --------------------------------------------------------------------

# A TLS redis-cli with the client certificate (tcli), without one (tcli_nocert),
# with the other CA's (tcli_stranger); plain redis-cli on the plain port (pcli).
tcli() { timeout 20 redis-cli --tls --cacert "$tmp/ca.crt" --cert "$tmp/client.crt" --key "$tmp/client.key" -p "$tport" "$@"; }
tcli_nocert() { timeout 20 redis-cli --tls --cacert "$tmp/ca.crt" -p "$tport" "$@"; }
tcli_stranger() { timeout 20 redis-cli --tls --cacert "$tmp/ca.crt" --cert "$tmp/wrong.crt" --key "$tmp/wrong.key" -p "$tport" "$@"; }
pcli() { timeout 20 redis-cli -p "$pport" "$@"; }

failures() { pcli info hotproxy_stats | tr -d '\r' | sed -n 's/^hotproxy_tls_handshake_failures://p'; }

# wait_for SECONDS CMD...: until CMD succeeds (polled every 50 ms).
wait_for() {
    local limit=$1 i
    shift
    for ((i = 0; i < limit * 20; i++)); do
        "$@" && return 0
        sleep 0.05
    done
    return 1
}
failures_above() { local f; f=$(failures); [[ -n $f && $f -gt $1 ]]; }
log_has() { grep -qF -- "$1" "$log"; }

# The subject of the certificate tls-port shows a new client now.
served_subject() {
    timeout 10 openssl s_client -connect "127.0.0.1:$tport" -CAfile "$tmp/ca.crt" -cert "$tmp/client.crt" \
        -key "$tmp/client.key" </dev/null 2>/dev/null | openssl x509 -noout -subject 2>/dev/null
}

wait_ping() {
    local i
    for ((i = 0; i < 200; i++)); do
        [[ $(timeout 2 redis-cli -p "$1" PING 2>/dev/null) == PONG ]] && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# --- start ----------------------------------------------------------------------

if ! launch "redis up"; then
    ok 1 "redis-server starts"
    echo "1..$n"
    exit 1
fi
rport=$up_port
pport=$(free_port)
tport=$(free_port)
mport=$(free_port)
log=$tmp/hotproxy.log
conf=$tmp/hotproxy.conf
write_conf() { # write_conf AUTH-CLIENTS
    cat >"$conf" <<EOF
port $pport
tls-port $tport
upstream 127.0.0.1:$rport
logfile $log
loglevel verbose
l1-ttl 60000
tls-cert-file $tmp/live.crt
tls-key-file $tmp/live.key
tls-ca-cert-file $tmp/ca.crt
tls-auth-clients $1
upstream-max-inflight 64
metrics-port $mport
EOF
}
write_conf yes
"$bin" "$conf" >"$tmp/hotproxy.out" 2>&1 &
ppid_=$!
pids+=("$ppid_")
wait_ping "$pport" "$ppid_"
ok $? "hotproxy starts with port $pport and tls-port $tport"

# --- redis-cli over TLS -----------------------------------------------------------

out=$(tcli PING 2>&1)
[[ $out == PONG ]]
ok $? "redis-cli --tls PING through tls-port: PONG (got '$out')"
out=$(pcli PING 2>&1)
[[ $out == PONG ]]
ok $? "the plain port answers at the same time (got '$out')"
out=$(tcli SET tls:k "over tls" 2>&1)$(tcli GET tls:k 2>&1)
[[ $out == "OKover tls" ]]
ok $? "redis-cli --tls SET and GET (got '$out')"
out=$(timeout 10 redis-cli -p "$rport" GET tls:k)
[[ $out == "over tls" ]]
ok $? "the value reached the plain redis-server behind (got '$out')"

line=$(tcli CLIENT INFO 2>&1)
[[ $line == *" laddr=127.0.0.1:$tport "* ]]
ok $? "CLIENT INFO of a TLS client: laddr is the TLS port, as Redis shows it ($line)"
pline=$(pcli CLIENT INFO 2>&1)
[[ $(sed 's/=[^ ]*//g' <<<"$line") == "$(sed 's/=[^ ]*//g' <<<"$pline")" ]]
ok $? "... with the same fields as a plain client's (Redis 7.0 shows nothing TLS-specific)"
out=$(pcli INFO hotproxy | tr -d '\r' | sed -n 's/^hotproxy_tls_port://p')
[[ $out == "$tport" ]]
ok $? "INFO: hotproxy_tls_port is $tport (got '$out')"
out=$(pcli INFO hotproxy | tr -d '\r' | sed -n 's/^hotproxy_tls_cert_not_after://p')
[[ -n $out && $out -gt $(date +%s) ]]
ok $? "INFO: hotproxy_tls_cert_not_after is the certificate's end, in the future (got '$out')"

# --- big values and a long pipeline ------------------------------------------------

head -c 750000 /dev/urandom | base64 -w0 >"$tmp/big.txt" # 1,000,000 bytes
out=$(tcli -x SET tls:big <"$tmp/big.txt" 2>&1)
[[ $out == OK ]]
ok $? "a 1 MB SET over TLS (got '$out')"
tcli GET tls:big >"$tmp/big.got" 2>&1
printf '\n' >>"$tmp/big.txt"
cmp -s "$tmp/big.txt" "$tmp/big.got"
ok $? "the 1 MB value read back over TLS is the same ($(wc -c <"$tmp/big.got") bytes)"
for ((i = 0; i < 10000; i++)); do printf 'SET tls:p%d v%d\r\n' "$i" "$i"; done >"$tmp/pipe.txt"
out=$(timeout 60 redis-cli --tls --cacert "$tmp/ca.crt" --cert "$tmp/client.crt" --key "$tmp/client.key" \
    -p "$tport" --pipe <"$tmp/pipe.txt" 2>&1 | tail -1)
[[ $out == "errors: 0, replies: 10000" ]]
ok $? "a pipeline of 10,000 SETs over TLS (--pipe: '$out')"
out=$(timeout 10 redis-cli -p "$rport" GET tls:p9999)
[[ $out == v9999 ]]
ok $? "... all of them reached Redis (last: '$out')"

# TLS records that end inside hotproxy's reads (16 kB): the rest of a record
# is decrypted and kept by TLS, and the socket will not say it is there.
# Two records, of a and b bytes, go out in one TCP write, as pipelined SETs
# of `size` bytes each; hotproxy's first read ends inside the second record,
# after 16384 / size commands, with the socket empty.  With 512-byte commands
# the client is not paused (32 in flight, upstream-max-inflight 64), so the
# rest must be read at once; with 256-byte ones the client is paused just at
# the end of its query buffer, so the rest must be read when it resumes.
records() { # records SIZE A B
    timeout 60 "$py" - "$tport" "$tmp" "$@" <<'PY' 2>&1
import socket, ssl, sys
port, d, size, a, b = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
ctx = ssl.create_default_context(cafile=d + "/ca.crt")
ctx.load_cert_chain(d + "/client.crt", d + "/client.key")
sock = socket.create_connection(("127.0.0.1", port), timeout=20)
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = ctx.wrap_bio(inc, out, server_hostname="localhost")
while True:
    try:
        tls.do_handshake()
        break
    except ssl.SSLWantReadError:
        sock.sendall(out.read())
        data = sock.recv(65536)
        if not data:
            sys.exit("closed during the handshake")
        inc.write(data)
sock.sendall(out.read())
def cmd(i):
    key = b"tls:rec:%d:%05d" % (size, i)
    head = b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n" % (len(key), key)
    v = size - len(head) - 8  # "$NNN\r\n" + value + "\r\n", NNN of 3 digits
    return head + b"$%d\r\n" % v + b"v" * v + b"\r\n"
n = (a + b) // size
cmds = b"".join(cmd(i) for i in range(n))
assert len(cmds) == a + b and all(len(cmd(i)) == size for i in range(n))
tls.write(cmds[:a])  # one record
tls.write(cmds[a:])  # another
sock.sendall(out.read())  # both in one write
got = b""
try:
    while got.count(b"+OK\r\n") < n:
        data = sock.recv(65536)
        if not data:
            break
        inc.write(data)
        while True:
            try:
                got += tls.read(65536)
            except ssl.SSLWantReadError:
                break
except socket.timeout:
    pass
print("%d of %d replies" % (got.count(b"+OK\r\n"), n))
PY
}
out=$(records 512 10240 16384)
[[ $out == "52 of 52 replies" ]]
ok $? "TLS records cut by hotproxy's read, the client not paused: every reply comes back ($out)"
out=$(records 256 10240 16384)
[[ $out == "104 of 104 replies" ]]
ok $? "... and the client paused at the end of its query buffer: every reply comes back ($out)"

# --- the L1 and invalidations for a TLS client ----------------------------------------

head -c 60000 /dev/urandom | base64 -w0 >"$tmp/mid.txt" # 80 kB: an L1 hit referenced, not copied, on a plain client
timeout 10 redis-cli -p "$rport" -x SET tls:hot <"$tmp/mid.txt" >/dev/null
hits0=$(pcli INFO hotproxy_cache | tr -d '\r' | sed -n 's/^hotproxy_l1_hits://p')
tcli GET tls:hot >/dev/null 2>&1
tcli GET tls:hot >"$tmp/mid.got" 2>&1
tcli GET tls:hot >"$tmp/mid.got2" 2>&1
hits1=$(pcli INFO hotproxy_cache | tr -d '\r' | sed -n 's/^hotproxy_l1_hits://p')
printf '\n' >>"$tmp/mid.txt"
cmp -s "$tmp/mid.txt" "$tmp/mid.got" && cmp -s "$tmp/mid.txt" "$tmp/mid.got2" && [[ $((hits1 - hits0)) -ge 1 ]]
ok $? "the L1 answers a TLS client an 80 kB value, whole (l1 hits $hits0 -> $hits1)"
tcli SET tls:inv old >/dev/null
tcli GET tls:inv >/dev/null
tcli GET tls:inv >/dev/null
pcli SET tls:inv through-plain >/dev/null
out=$(tcli GET tls:inv 2>&1)
[[ $out == through-plain ]]
ok $? "a write through the plain port: the TLS client reads the new value (got '$out')"
tcli GET tls:inv >/dev/null
timeout 10 redis-cli -p "$rport" SET tls:inv straight-to-redis >/dev/null
wait_for 20 eval '[[ $(tcli GET tls:inv 2>&1) == straight-to-redis ]]'
ok $? "a write straight to Redis: the invalidation reaches the L1 and the TLS client reads it (l1-ttl 60 s)"

# --- Python's redis with ssl -------------------------------------------------------------

out=$(timeout 60 "$py" - "$tport" "$tmp" <<'PY' 2>&1
import sys, redis
port, d = int(sys.argv[1]), sys.argv[2]
r = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=d + "/ca.crt",
                ssl_certfile=d + "/client.crt", ssl_keyfile=d + "/client.key", socket_timeout=20)
assert r.ping()
r.set("tls:py", "from python")
assert r.get("tls:py") == b"from python"
p = r.pipeline(transaction=False)
for i in range(1000):
    p.incr("tls:py:n")
res = p.execute()
assert res[-1] == 1000, res[-1]
r.hset("tls:py:h", mapping={"a": "1", "b": "2"})
assert r.hgetall("tls:py:h") == {b"a": b"1", b"b": b"2"}
print("fine")
PY
)
[[ $out == fine ]]
ok $? "Python redis with ssl=True and a client certificate: PING, SET/GET, a pipeline of 1000, a hash ($out)"

# pub/sub, MULTI/EXEC and a blocked BLPOP over TLS, woken from the plain port
out=$(timeout 60 "$py" - "$tport" "$pport" "$tmp" <<'PY' 2>&1
import sys, threading, time, redis
port, plain_port, d = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def tls():
    return redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=d + "/ca.crt",
                       ssl_certfile=d + "/client.crt", ssl_keyfile=d + "/client.key", socket_timeout=20)
plain = redis.Redis(host="127.0.0.1", port=plain_port, socket_timeout=20)
r = tls()
tx = r.pipeline(transaction=True)
tx.set("tls:tx", "a").append("tls:tx", "b").get("tls:tx")
assert tx.execute() == [True, 2, b"ab"], "MULTI/EXEC"
ps = tls().pubsub()
ps.subscribe("tls:ch")
m = ps.get_message(timeout=10)
assert m and m["type"] == "subscribe", m
plain.publish("tls:ch", "hello")
m = ps.get_message(timeout=10)
assert m and m["data"] == b"hello", m
got = []
t = threading.Thread(target=lambda: got.append(tls().blpop("tls:list", 0)))
t.start()
deadline = time.time() + 20
while time.time() < deadline and b"cmd=blpop" not in plain.execute_command("CLIENT", "LIST"):
    time.sleep(0.05)
plain.lpush("tls:list", "woken")
t.join(20)
assert got == [(b"tls:list", b"woken")], got
print("fine")
PY
)
[[ $out == fine ]]
ok $? "over TLS: MULTI/EXEC, a subscriber receiving a PUBLISH, a BLPOP woken by a plain client's LPUSH ($out)"

# --- redis-benchmark --tls -----------------------------------------------------------------

timeout 120 redis-benchmark --tls --cacert "$tmp/ca.crt" --cert "$tmp/client.crt" --key "$tmp/client.key" \
    -p "$tport" -n 2000 -c 10 -t ping,set,get,incr,lpush,lpop -q >"$tmp/bench.txt" 2>&1
bench_rc=$?
lines=$(tr '\r' '\n' <"$tmp/bench.txt" | grep -c 'requests per second')
tr '\r' '\n' <"$tmp/bench.txt" | grep -qi 'error'
errs=$?
[[ $bench_rc == 0 && $lines -ge 6 && $errs != 0 ]]
ok $? "redis-benchmark --tls through hotproxy: $lines tests reported, no error line (rc $bench_rc)"
[[ $bench_rc == 0 && $lines -ge 6 && $errs != 0 ]] || tr '\r' '\n' <"$tmp/bench.txt" | tail -5 | diag

# --- refusals --------------------------------------------------------------------------

f0=$(failures)
out=$(tcli_nocert PING 2>&1)
[[ $out != PONG ]]
ok $? "tls-auth-clients yes: a client without a certificate is refused (got '$out')"
wait_for 20 failures_above "$f0"
ok $? "... counted in hotproxy_tls_handshake_failures ($f0 -> $(failures))"
log_has "TLS handshake failed: " && grep "TLS handshake failed: " "$log" | grep -q "did not return a certificate"
ok $? "... and logged with the peer's address and the reason"

f0=$(failures)
out=$(tcli_stranger PING 2>&1)
[[ $out != PONG ]]
ok $? "tls-auth-clients yes: a certificate of another CA is refused (got '$out')"
wait_for 20 failures_above "$f0"
ok $? "... counted ($f0 -> $(failures))"
grep "TLS handshake failed: " "$log" | grep -q "certificate refused"
ok $? "... and logged with the verification's reason"
grep "TLS handshake failed" "$log" | tail -2 | diag

f0=$(failures)
out=$(timeout 30 "$py" - "$tport" <<'PY' 2>&1
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
s.sendall(b"*1\r\n$4\r\nPING\r\n")
got = b""
try:
    while True:
        b = s.recv(4096)
        if not b:
            break
        got += b
except ConnectionResetError:
    pass
print("closed" if b"PONG" not in got else "answered %r" % got)
PY
)
[[ $out == closed ]]
ok $? "plain text to the TLS port: closed without an answer ($out)"
wait_for 20 failures_above "$f0"
ok $? "... counted ($f0 -> $(failures))"

f0=$(failures)
timeout 40 "$py" - "$tport" >"$tmp/halfopen.out" 2>&1 <<'PY' &
import socket, sys
# a TCP connection that never says anything: the handshake never ends
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30)
try:
    print("closed" if s.recv(1) == b"" else "data")
except ConnectionResetError:
    print("closed")
except socket.timeout:
    print("still open after 30 s")
PY
half=$!
pids+=("$half")
clients() { pcli INFO hotproxy | tr -d '\r' | sed -n 's/^hotproxy_connected_clients://p'; }
wait_for 20 eval '[[ $(clients) == 2 ]]'
ok $? "a connection in its TLS handshake counts as a client, as in Redis (connected_clients $(clients) with INFO's own)"
wait "$half"
out=$(cat "$tmp/halfopen.out")
[[ $out == closed ]]
ok $? "a handshake that never completes is closed by hotproxy ($out)"
wait_for 20 failures_above "$f0"
ok $? "... counted ($f0 -> $(failures))"
log_has "TLS handshake failed: not done within 10 seconds"
ok $? "... and logged as not done within its 10 s bound"

f0=$(failures)
page=$(timeout 10 curl -s "http://127.0.0.1:$mport/metrics")
mline=$(grep -E '^hotproxy_tls_handshake_failures(_total)? ' <<<"$page")
[[ -n $f0 && ${mline##* } == "$f0" ]]
ok $? "the metrics page shows the same count ($mline; INFO $f0)"

# --- reload ------------------------------------------------------------------------------

out=$(served_subject)
[[ $out == *"CN = localhost"* ]]
ok $? "before reload, tls-port shows the first certificate (CN localhost) ($out)"
# a client connected before the swap keeps its session: redis-cli reading
# commands from a fifo, one line at a time
mkfifo "$tmp/keep.in" "$tmp/keep.out"
timeout 60 redis-cli --tls --cacert "$tmp/ca.crt" --cert "$tmp/client.crt" --key "$tmp/client.key" -p "$tport" \
    <"$tmp/keep.in" >"$tmp/keep.out" 2>&1 &
pids+=("$!")
exec {keep_w}>"$tmp/keep.in"
exec {keep_r}<"$tmp/keep.out"
echo "PING" >&"$keep_w"
read -r -t 20 -u "$keep_r" keep1
cp "$tmp/renewed.crt" "$tmp/live.crt" && cp "$tmp/renewed.key" "$tmp/live.key"
out=$(pcli HOTPROXY CONFIG RELOAD 2>&1)
[[ $out == OK ]]
ok $? "HOTPROXY CONFIG RELOAD with a renewed certificate in place: OK (got '$out')"
out=$(served_subject)
[[ $out == *hotproxy-renewed* ]]
ok $? "a new client sees the renewed certificate ($out)"
echo "GET tls:k" >&"$keep_w"
read -r -t 20 -u "$keep_r" keep2
[[ $keep1 == PONG && $keep2 == "over tls" ]]
ok $? "the client connected before the reload kept its session ('$keep1', then '$keep2')"
out=$(tcli PING 2>&1)
[[ $out == PONG ]]
ok $? "new clients work with the renewed certificate (got '$out')"

echo "-----BEGIN CERTIFICATE-----
not a certificate
-----END CERTIFICATE-----" >"$tmp/live.crt"
out=$(pcli HOTPROXY CONFIG RELOAD 2>&1)
[[ $out == *"config not reloaded"*"tls-cert-file"* ]]
ok $? "a broken certificate file: HOTPROXY CONFIG RELOAD answers why ($out)"
out=$(served_subject)
[[ $out == *hotproxy-renewed* ]]
ok $? "... and the running certificate stays ($out)"
kill -HUP "$ppid_"
wait_for 20 log_has "SIGHUP: config not reloaded: tls-cert-file"
ok $? "SIGHUP with the broken file logs why the config was not reloaded"
out=$(tcli PING 2>&1)
[[ $out == PONG ]]
ok $? "... and TLS clients still connect (got '$out')"
exec {keep_w}>&- {keep_r}<&-

cp "$tmp/renewed.crt" "$tmp/live.crt"
write_conf optional
out=$(pcli HOTPROXY CONFIG RELOAD 2>&1)
[[ $out == OK ]]
ok $? "reload to tls-auth-clients optional (got '$out')"
out=$(tcli_nocert PING 2>&1)$(tcli PING 2>&1)
[[ $out == PONGPONG ]]
ok $? "optional: without a certificate and with one, both served (got '$out')"
out=$(tcli_stranger PING 2>&1)
[[ $out != PONG ]]
ok $? "optional: a certificate shown is still checked: another CA's is refused (got '$out')"
write_conf no
out=$(pcli HOTPROXY CONFIG RELOAD 2>&1)
[[ $out == OK ]]
ok $? "reload to tls-auth-clients no (got '$out')"
out=$(tcli_nocert PING 2>&1)$(tcli_stranger PING 2>&1)
[[ $out == PONGPONG ]]
ok $? "no: no certificate asked, none checked (got '$out')"

out=$(pcli HOTPROXY CONFIG SET tls-cert-file "$tmp/server.crt" 2>&1)
[[ $out == *"config file"*"HOTPROXY CONFIG RELOAD"* ]]
ok $? "HOTPROXY CONFIG SET tls-cert-file points to the file and RELOAD ($out)"
out=$(pcli HOTPROXY CONFIG SET tls-port 7000 2>&1)
[[ $out == *"only changes with a restart"* ]]
ok $? "tls-port only changes with a restart ($out)"

stop_hp() {
    local i
    kill -TERM "$ppid_"
    for ((i = 0; i < 300; i++)); do
        kill -0 "$ppid_" 2>/dev/null || break
        sleep 0.05
    done
    wait "$ppid_"
}
stop_hp
ok $? "hotproxy exits 0 on SIGTERM with TLS clients served"
[[ ! -s $tmp/hotproxy.out ]] || diag <"$tmp/hotproxy.out"

# --- bad files at start ---------------------------------------------------------------

write_conf yes
cp "$tmp/renewed.crt" "$tmp/live.crt" && cp "$tmp/server.key" "$tmp/live.key" # a key of another certificate
out=$(timeout 20 "$bin" --test-config "$conf" 2>&1)
rc=$?
[[ $rc != 0 && $out == *"tls-key-file"*"does not match"* ]]
ok $? "--test-config refuses a key that does not match the certificate (rc $rc: $out)"
out=$(timeout 20 "$bin" "$conf" 2>&1)
rc=$?
[[ $rc != 0 && $out == *"tls-key-file"*"does not match"* ]]
ok $? "... and so does the start, with the reason (rc $rc: $out)"
out=$(timeout 20 "$bin" --test-config --port "$pport" --tls-port "$tport" 2>&1)
rc=$?
[[ $rc != 0 && $out == *"tls-port needs tls-cert-file and tls-key-file"* ]]
ok $? "--test-config: tls-port without a certificate is refused (rc $rc: $out)"
out=$(timeout 20 "$bin" "$conf" --tls-ca-cert-file "$tmp/missing.crt" --tls-key-file "$tmp/renewed.key" 2>&1)
rc=$?
[[ $rc != 0 && $out == *"tls-ca-cert-file"*"missing.crt"* ]]
ok $? "a CA file that is not there stops the start with the reason (rc $rc: $out)"

# --- an expired certificate loads (as in Redis), with a warning ------------------------

write_conf yes
cp "$tmp/expired.crt" "$tmp/live.crt" && cp "$tmp/expired.key" "$tmp/live.key"
: >"$log"
"$bin" "$conf" >"$tmp/hotproxy.out" 2>&1 &
ppid_=$!
pids+=("$ppid_")
wait_ping "$pport" "$ppid_"
ok $? "hotproxy starts with an expired tls-cert-file"
wait_for 20 log_has "has expired"
ok $? "... and warns that it has expired ($(grep -F "has expired" "$log" | head -1))"
out=$(pcli INFO hotproxy | tr -d '\r' | sed -n 's/^hotproxy_tls_cert_not_after://p')
[[ -n $out && $out -gt 0 && $out -lt $(date +%s) ]]
ok $? "INFO: hotproxy_tls_cert_not_after is in the past (got '$out')"
stop_hp
ok $? "hotproxy exits 0 on SIGTERM"

echo "1..$n"
exit $((failed > 0))
