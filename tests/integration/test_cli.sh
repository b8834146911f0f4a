#!/usr/bin/env bash
# hotproxy with the stock Redis tools, and hotproxy as a command.
#
# redis-cli round trips and --pipe mass insertion; redis-benchmark over its
# default tests, plain and with -P 16, where every test must report requests
# per second and nothing may report an error, and the set of tests that ran
# must be the one that runs against Redis directly; then the binary itself:
# --help, --version, config file errors (file, line, directive, exit 1), a
# port in use, command line over file, SIGTERM with clients connected,
# SIGINT, SIGHUP reopening the log file, daemonize with a pidfile.
#
# Environment (tests/run.sh sets these): HOTPROXY_BIN, else ./build/hotproxy.
set -uo pipefail

src=${HOTPROXY_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
bin=${HOTPROXY_BIN:-./build/hotproxy}
[[ -x $bin ]] || bin=$src/build/hotproxy

. "$src/tests/tap.sh"

if [[ ! -x $bin ]]; then
    echo "1..0 # SKIP no hotproxy binary at $bin"
    exit 0
fi
need_tools redis-server redis-cli redis-benchmark python3

tmp=$(mktemp -d "${TMPDIR:-/tmp}/hotproxy-cli-XXXXXX")
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill -KILL "$p" 2>/dev/null
    done
    # a daemonized hotproxy is not our child: find it by its pidfile
    if [[ -s $tmp/daemon.pid ]]; then kill -KILL "$(cat "$tmp/daemon.pid")" 2>/dev/null; fi
    launch_stop # before the wait below, which would wait for it too
    wait 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 143' TERM INT HUP

# The watchdog: no single step may hang the file.
watchdog 280
watchdog=$!
pids+=("$watchdog")

# wait_ping PORT PID: until PONG (10 s), or the process dies.
wait_ping() {
    local i reply
    for ((i = 0; i < 200; i++)); do
        reply=$(timeout 2 redis-cli -p "$1" PING 2>/dev/null)
        [[ $reply == PONG ]] && return 0
        [[ -n ${2:-} ]] && ! kill -0 "$2" 2>/dev/null && return 1
        sleep 0.05
    done
    return 1
}

# stop PID [SECONDS]: SIGTERM, wait, SIGKILL; sets stop_status to the exit
# status, or "killed" if it had to be.  Not in $(...): wait needs the parent.
stop() {
    local pid=$1 limit=${2:-15} i
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < limit * 20; i++)); do
        if ! kill -0 "$pid" 2>/dev/null || [[ $(ps -o stat= -p "$pid" 2>/dev/null) == Z* ]]; then
            wait "$pid" 2>/dev/null
            stop_status=$?
            return
        fi
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    stop_status=killed
}

start_proxy() { # start_proxy PORT UPSTREAM_PORT [args...]; sets proxy_pid
    local port=$1 up=$2
    shift 2
    "$bin" --port "$port" --upstream "127.0.0.1:$up" --logfile "$tmp/hotproxy-$port.log" "$@" \
        >"$tmp/hotproxy-$port.out" 2>&1 &
    proxy_pid=$!
    pids+=("$proxy_pid")
    wait_ping "$port" "$proxy_pid"
}

# redis-server through the harness' launcher (tests/tap.sh launch)
if ! launch "redis redis"; then
    echo "not ok 1 - redis-server starts"
    echo "1..1"
    exit 1
fi
rport=$redis_port
pport=$(free_port)
start_proxy "$pport" "$rport"
ok $? "hotproxy starts on port $pport in front of redis-server on $rport"

# --- redis-cli ----------------------------------------------------------------

out=$(timeout 10 redis-cli -p "$pport" set cli:k "hello world")
[[ $out == OK ]]
ok $? "redis-cli set through hotproxy: OK (got '$out')"
out=$(timeout 10 redis-cli -p "$pport" get cli:k)
[[ $out == "hello world" ]]
ok $? "redis-cli get through hotproxy returns the value (got '$out')"
out=$(timeout 10 redis-cli -p "$rport" get cli:k)
[[ $out == "hello world" ]]
ok $? "redis-cli get from Redis directly returns it too"

for cmd in "incr cli:n" "rpush cli:l a b c" "lrange cli:l 0 -1" "get cli:nokey" "nosuchcommand x" \
    "get" "lpush cli:k x" "hset cli:h f v" "hgetall cli:h" "ping" "echo hi"; do
    # shellcheck disable=SC2086 # word splitting is the point
    via=$(timeout 10 redis-cli -p "$pport" $cmd 2>&1)
    # shellcheck disable=SC2086
    direct=$(timeout 10 redis-cli -p "$rport" $cmd 2>&1)
    # incr and rpush change state: the direct run sees its effect added
    if [[ $cmd == incr* ]]; then
        [[ $via == 1 && $direct == 2 ]]
        ok $? "redis-cli $cmd: 1 through hotproxy, then 2 directly (got '$via', '$direct')"
    elif [[ $cmd == hset* ]]; then
        [[ $via == 1 && $direct == 0 ]]
        ok $? "redis-cli $cmd: 1 through hotproxy, then 0 directly (got '$via', '$direct')"
    elif [[ $cmd == rpush* ]]; then
        [[ $via == 3 && $direct == 6 ]]
        ok $? "redis-cli $cmd: 3 through hotproxy, then 6 directly (got '$via', '$direct')"
    else
        [[ $via == "$direct" ]]
        ok $? "redis-cli $cmd: the same output as directly"
        [[ $via == "$direct" ]] || { echo "hotproxy: $via"; echo "redis: $direct"; } | diag
    fi
done

# --pipe: mass insertion of 10,000 commands in RESP
python3 - "$tmp/mass.txt" <<'EOF'
import sys
with open(sys.argv[1], "wb") as f:
    for i in range(10000):
        k, v = b"mass:%d" % i, b"value-%d" % i
        f.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(v), v))
EOF
out=$(timeout 60 redis-cli -p "$pport" --pipe <"$tmp/mass.txt" 2>&1)
status=$?
[[ $status == 0 && $out == *"errors: 0, replies: 10000"* ]]
ok $? "redis-cli --pipe of 10,000 SETs: errors: 0, replies: 10000"
[[ $status == 0 && $out == *"errors: 0, replies: 10000"* ]] || diag <<<"$out"
out=$(timeout 10 redis-cli -p "$pport" get mass:9999)
[[ $out == value-9999 ]]
ok $? "the last mass-inserted key reads back (got '$out')"

# --- redis-benchmark ----------------------------------------------------------

# Test names that printed a requests-per-second line; progress lines are
# rewritten in place with \r, so split on it.
bench() { # bench PORT N [args...] -> output file path
    local port=$1 reqs=$2 f
    shift 2
    f=$tmp/bench-$port-$RANDOM.txt
    timeout 120 redis-benchmark -p "$port" -q -n "$reqs" "$@" 2>&1 | tr '\r' '\n' >"$f"
    echo "$f"
}
names() { grep 'requests per second' "$1" | sed 's/:.*//' | sort -u; }

ref=$(bench "$rport" 1000)
want_names=$(names "$ref")
nwant=$(grep -c . <<<"$want_names")
for extra in "" "-P 16"; do
    # shellcheck disable=SC2086
    f=$(bench "$pport" 10000 $extra)
    got_names=$(names "$f")
    ngot=$(grep -c . <<<"$got_names")
    label="redis-benchmark -q -n 10000${extra:+ $extra}"
    ! grep -qiE 'ERR|error' "$f"
    ok $? "$label: no line mentions an error"
    grep -iE 'ERR|error' "$f" | head -5 | diag
    [[ $nwant -ge 10 && $got_names == "$want_names" ]]
    ok $? "$label: all $nwant default tests report requests per second ($ngot did)"
    [[ $got_names == "$want_names" ]] || diff <(echo "$want_names") <(echo "$got_names") | diag
done
out=$(timeout 10 redis-cli -p "$pport" ping)
[[ $out == PONG ]]
ok $? "hotproxy answers after the benchmarks"

# --- the binary ------------------------------------------------------------------

out=$(timeout 10 "$bin" --help 2>&1)
status=$?
[[ $status == 0 && $out == *Usage* ]]
ok $? "hotproxy --help exits 0 and prints usage (status $status)"
out=$(timeout 10 "$bin" --version 2>&1)
status=$?
[[ $status == 0 && $out == *hotproxy* && $out =~ [0-9]+\.[0-9]+ ]]
ok $? "hotproxy --version exits 0 and prints a version (status $status, '$out')"

conf=$tmp/unknown.conf
printf '# hotproxy test config\nport %s\nno-such-directive yes\n' "$(free_port)" >"$conf"
out=$(timeout 10 "$bin" "$conf" 2>&1)
status=$?
[[ $status == 1 ]]
ok $? "a config file with an unknown directive: exit 1 (got $status)"
[[ $out == *"$conf:3"* && $out == *no-such-directive* ]]
ok $? "... the message names the file, line 3 and the directive"
[[ $out == *"$conf:3"* && $out == *no-such-directive* ]] || diag <<<"$out"

conf=$tmp/badvalue.conf
printf 'bind 127.0.0.1\nport 99999\n' >"$conf"
out=$(timeout 10 "$bin" "$conf" 2>&1)
status=$?
[[ $status == 1 ]]
ok $? "a config file with port 99999: exit 1 (got $status)"
[[ $out == *"$conf:2"* && $out == *port* ]]
ok $? "... the message names the file, line 2 and the directive"
[[ $out == *"$conf:2"* && $out == *port* ]] || diag <<<"$out"

out=$(timeout 10 "$bin" --port 99999 2>&1)
status=$?
[[ $status == 1 && $out == *port* ]]
ok $? "--port 99999 on the command line: exit 1 naming port (got $status)"

out=$(timeout 10 "$bin" "$tmp/no-such-file.conf" 2>&1)
status=$?
[[ $status == 1 && $out == *no-such-file.conf* ]]
ok $? "a missing config file: exit 1 naming it (got $status)"

out=$(timeout 10 "$bin" --port "$rport" --upstream "127.0.0.1:$rport" 2>&1)
status=$?
[[ $status == 1 && $out == *"$rport"* ]]
ok $? "a port already in use (Redis' $rport): exit 1 naming it (got $status)"
[[ $status == 1 && $out == *"$rport"* ]] || diag <<<"$out"

# command line over file
file_port=$(free_port)
cli_port=$(free_port)
conf=$tmp/override.conf
printf 'port %s\nupstream 127.0.0.1:%s\nlogfile %s\n' "$file_port" "$rport" "$tmp/override.log" >"$conf"
"$bin" "$conf" --port "$cli_port" >"$tmp/override.out" 2>&1 &
opid=$!
pids+=("$opid")
wait_ping "$cli_port" "$opid"
ok $? "file says port $file_port, --port $cli_port: it listens on $cli_port"
out=$(timeout 5 redis-cli -p "$file_port" ping 2>&1)
[[ $out != PONG ]]
ok $? "... and not on the file's port $file_port"
out=$(timeout 5 redis-cli -p "$cli_port" get cli:k)
[[ $out == "hello world" ]]
ok $? "... and uses the file's upstream (got '$out')"
stop "$opid"
status=$stop_status
[[ $status == 0 ]]
ok $? "... and exits 0 on SIGTERM (got $status)"

# SIGTERM with clients connected
exec 3<>"/dev/tcp/127.0.0.1/$pport" 4<>"/dev/tcp/127.0.0.1/$pport" 5<>"/dev/tcp/127.0.0.1/$pport"
printf 'PING\r\n' >&3
IFS= read -r -t 5 line <&3
[[ $line == $'+PONG\r' ]]
ok $? "three clients connected (one said PING, got '${line%$'\r'}')"
stop "$proxy_pid"
status=$stop_status
[[ $status == 0 ]]
ok $? "SIGTERM with three clients connected: exit 0 (got $status)"
[[ $status == 0 ]] || diag <"$tmp/hotproxy-$pport.out"
if timeout 5 cat <&4 >/dev/null; then r=0; else r=1; fi
ok $r "... and their connections are closed"
exec 3>&- 4>&- 5>&-

# SIGINT stops it too
iport=$(free_port)
start_proxy "$iport" "$rport"
ipid=$proxy_pid
kill -INT "$ipid"
for ((i = 0; i < 200; i++)); do kill -0 "$ipid" 2>/dev/null && [[ $(ps -o stat= -p "$ipid") != Z* ]] || break; sleep 0.05; done
wait "$ipid" 2>/dev/null
status=$?
[[ $status == 0 ]]
ok $? "SIGINT: exit 0 (got $status)"

# SIGHUP reopens the log file
lport=$(free_port)
log=$tmp/hup.log
"$bin" --port "$lport" --upstream "127.0.0.1:$rport" --logfile "$log" --loglevel verbose >"$tmp/hup.out" 2>&1 &
hpid=$!
pids+=("$hpid")
wait_ping "$lport" "$hpid"
ok $? "hotproxy --logfile $log starts"
mv "$log" "$log.1"
kill -HUP "$hpid"
found=1
for ((i = 0; i < 300; i++)); do
    if [[ -f $log ]] && grep -q 'reopened' "$log"; then
        found=0
        break
    fi
    sleep 0.05
done
ok $found "after the log is moved away, SIGHUP creates it again with a 'log file reopened' line"
timeout 5 redis-cli -p "$lport" nosuchcommand >/dev/null 2>&1
timeout 5 redis-cli -p "$lport" ping >/dev/null 2>&1
lines_old=$(wc -l <"$log.1")
kill -TERM "$hpid"
for ((i = 0; i < 300; i++)); do kill -0 "$hpid" 2>/dev/null || break; sleep 0.05; done
wait "$hpid" 2>/dev/null
grep -q 'ready to exit' "$log" && ! grep -q 'ready to exit' "$log.1"
ok $? "later lines (the shutdown) go to the new file, none to the moved one ($lines_old lines)"

# daemonize with a pidfile
dport=$(free_port)
timeout 10 "$bin" --port "$dport" --upstream "127.0.0.1:$rport" --daemonize yes --pidfile "$tmp/daemon.pid" \
    --logfile "$tmp/daemon.log" >"$tmp/daemon.out" 2>&1
status=$?
[[ $status == 0 ]]
ok $? "--daemonize yes: the foreground process exits 0 (got $status)"
wait_ping "$dport"
ok $? "... the daemon answers PING"
dpid=$(cat "$tmp/daemon.pid" 2>/dev/null)
[[ $dpid =~ ^[0-9]+$ ]] && kill -0 "$dpid" 2>/dev/null
ok $? "... its pidfile holds its pid ($dpid)"
if [[ $dpid =~ ^[0-9]+$ ]]; then
    kill -TERM "$dpid"
    for ((i = 0; i < 200; i++)); do kill -0 "$dpid" 2>/dev/null || break; sleep 0.05; done
    ! kill -0 "$dpid" 2>/dev/null && [[ ! -e $tmp/daemon.pid ]]
    ok $? "... SIGTERM stops it and removes the pidfile"
else
    ok 1 "... SIGTERM stops it and removes the pidfile"
fi

launch_stop
kill "$watchdog" 2>/dev/null
echo "1..$n"
((failed == 0))
