#!/usr/bin/env bash
# Hot-key expiry stampede against Redis directly and through hotproxy, in one run.
#
#   bench/stampede.sh [options] [-- extra hotproxy arguments]
#
#   --clients N        connections, one GET in flight each (default 1000)
#   --ttl-ms T         PX of the key (default 1000)
#   --rounds R         expiries measured per run (default 10)
#   --recompute-ms M   client mode: time a client spends "recomputing" (default 20)
#   --scenarios LIST   space-separated MODE:THINK_US pairs (default
#                      "client:0 client:20000 tool:20000"); MODE is client
#                      (every client that gets nil re-SETs the key through the
#                      target, cache-aside) or tool (the tool re-SETs it in
#                      Redis right after each expiry); THINK_US is the pause
#                      between a reply and the next GET (0 = hammer)
#   --no-build         use the binaries in build/ as they are
#   --out DIR          also keep every run's full output in DIR
#
# It builds hotproxy and bench/stampede (cmake, incremental), starts its own
# redis-server (no persistence, 127.0.0.1, a free port) and hotproxy (its
# defaults unless given more arguments) on free ports, and runs
# bench/stampede for every scenario against Redis directly and through
# hotproxy.  Reported per run: upstream GETs per expiry window (Redis'
# cmdstat_get, polled every 10 ms, over +-50 ms around each expiry) against
# the same length of steady state, nil replies (recomputes) per expiry, and
# GET latency: steady-state p99 against p99 in the expiry windows, and the
# max.  Everything it starts is stopped on exit.  About 1.5 minutes.
set -euo pipefail

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

clients=1000 ttl=1000 rounds=10 recompute=20 scenarios="client:0 client:20000 tool:20000" build=1 out=
proxy_args=()
need() { [[ $# -ge 2 && -n $2 ]] || { echo "stampede.sh: $1 needs a value" >&2; exit 2; }; }
while (($#)); do
    case "$1" in
    --clients) need "$@"; clients=$2; shift ;;
    --ttl-ms) need "$@"; ttl=$2; shift ;;
    --rounds) need "$@"; rounds=$2; shift ;;
    --recompute-ms) need "$@"; recompute=$2; shift ;;
    --scenarios) need "$@"; scenarios=$2; shift ;;
    --no-build) build=0 ;;
    --out) need "$@"; out=$2; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; proxy_args=("$@"); break ;;
    *) echo "stampede.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
for cmd in redis-server redis-cli python3 timeout cmake; do
    command -v "$cmd" >/dev/null || { echo "stampede.sh: $cmd not found" >&2; exit 1; }
done
if ((build)); then
    echo "stampede.sh: building (cmake, incremental)" >&2
    (cd "$src" && cmake -B build >/dev/null && cmake --build build -j2 --target hotproxy stampede >/dev/null) || {
        echo "stampede.sh: build failed; run: cmake -B build && cmake --build build -j2" >&2
        exit 1
    }
fi
bin=$src/build/hotproxy
tool=$src/build/bench/stampede
[[ -x $bin && -x $tool ]] || { echo "stampede.sh: no $bin or $tool (build first)" >&2; exit 1; }

tmp=$(mktemp -d)
pids=()
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    local p i
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do
        for ((i = 0; i < 50; i++)); do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

wait_port() {
    local port=$1 pid=$2 name=$3 i
    for ((i = 0; i < 100; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "stampede.sh: $name exited during startup; its log:" >&2
            tail -n 20 "$tmp/$name.log" >&2 || true
            exit 1
        fi
        if timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "stampede.sh: $name did not listen on port $port within 10s" >&2
    exit 1
}

# CPU accounting in clock ticks, to show how much of the machine other work
# took while we measured: busy time of all CPUs (/proc/stat) minus our
# redis-server, our hotproxy and our finished children (cutime+cstime).
clk_tck=$(getconf CLK_TCK)
sys_busy() { awk '/^cpu /{ print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
proc_ticks() { # PID [children]: utime+stime, or cutime+cstime with "children"
    local stat rest
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
    rest=${stat##*) } # the command name may hold spaces and parentheses
    # shellcheck disable=SC2086 # split the fields on purpose
    set -- $rest
    if [[ ${2:-} == children ]]; then echo $((${14} + ${15})); else echo $((${12} + ${13})); fi
}

val() { sed -n "s/^$2: //p" "$1" | head -n 1; }

read -r redis_port proxy_port <<<"$(free_ports 2)"
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no --daemonize no \
    --maxclients $((clients + 1000)) --dir "$tmp" --logfile "" >"$tmp/redis-server.log" 2>&1 &
redis_pid=$!
pids+=("$redis_pid")
wait_port "$redis_port" "$redis_pid" redis-server

"$bin" --port "$proxy_port" --upstream "127.0.0.1:$redis_port" "${proxy_args[@]}" >"$tmp/hotproxy.log" 2>&1 &
proxy_pid=$!
pids+=("$proxy_pid")
wait_port "$proxy_port" "$proxy_pid" hotproxy
echo "stampede.sh: redis-server :$redis_port, hotproxy :$proxy_port" >&2

failed=0
runs=()
load0=$(cut -d' ' -f1 /proc/loadavg)
t_start=$(date +%s.%N)
busy0=$(sys_busy) ours0=$(($(proc_ticks "$redis_pid") + $(proc_ticks "$proxy_pid") + $(proc_ticks $$ children)))
for sc in $scenarios; do
    mode=${sc%%:*}
    think=${sc#*:}
    if [[ ! $mode =~ ^(client|tool)$ || ! $think =~ ^[0-9]+$ ]]; then
        echo "stampede.sh: bad scenario '$sc' (want client:N or tool:N)" >&2
        exit 2
    fi
    for target in redis hotproxy; do
        port=$redis_port
        [[ $target == hotproxy ]] && port=$proxy_port
        name=$mode-think$think-$target
        if ! kill -0 "$proxy_pid" 2>/dev/null; then
            echo "stampede.sh: hotproxy is no longer running; $name not run" >&2
            failed=1
            continue
        fi
        echo "stampede.sh: run $name" >&2
        rc=0
        # a key per run, so one run's leftovers (TTL, L1 entry) cannot touch the next
        timeout 300 "$tool" --port "$port" --redis-port "$redis_port" --clients "$clients" --ttl-ms "$ttl" \
            --rounds "$rounds" --repopulate "$mode" --recompute-ms "$recompute" --think-us "$think" \
            --key "stampede:$name" >"$tmp/$name.out" 2>"$tmp/$name.err" || rc=$?
        if ((rc != 0)); then
            echo "stampede.sh: run $name failed (exit $rc):" >&2
            cat "$tmp/$name.err" >&2
            failed=1
        fi
        runs+=("$name")
    done
done
busy1=$(sys_busy) ours1=$(($(proc_ticks "$redis_pid") + $(proc_ticks "$proxy_pid") + $(proc_ticks $$ children)))
t_end=$(date +%s.%N)
others=$(awk -v b=$((busy1 - busy0)) -v o=$((ours1 - ours0)) -v t="$clk_tck" -v w0="$t_start" -v w1="$t_end" \
    -v n="$(nproc)" 'BEGIN { x = (b - o) / t; if (x < 0) x = 0; printf "%.1f s of %.0f CPU-seconds (%.0f%%)", x, (w1 - w0) * n, 100 * x / ((w1 - w0) * n) }')

proxy_status=dead
if kill -0 "$proxy_pid" 2>/dev/null; then
    kill -TERM "$proxy_pid"
    proxy_status=0
    wait "$proxy_pid" 2>/dev/null || proxy_status=$?
fi
if [[ $proxy_status != 0 ]]; then
    echo "stampede.sh: hotproxy exited with status $proxy_status; its last log lines:" >&2
    tail -n 20 "$tmp/hotproxy.log" >&2
    failed=1
fi

# ---- report ----
redis_version=$(redis-server --version | sed -E 's/.*v=([^ ]+).*/\1/')
echo "== stampede.sh: $(nproc) CPU(s), $(sed -nE 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
echo "   redis-server $redis_version; $("$bin" --version 2>&1 | head -n 1)${proxy_args[*]:+ (${proxy_args[*]})}"
echo "   1-min load average before the runs: $load0; CPU taken by other processes during the runs: $others"
echo "   $clients clients, key TTL $ttl ms, $rounds expiries per run, windows +-50 ms around each expiry"
for name in "${runs[@]}"; do
    [[ -s $tmp/$name.out ]] || continue
    echo
    echo "== $name: per expiry"
    sed -n 's/^\(repopulate\|expiry_[0-9]*\): /   \1: /p' "$tmp/$name.out"
done
echo
echo "| scenario | target | req/s | upstream GETs / expiry window (avg, max) | upstream GETs / steady window | nil replies / expiry | steady p99 µs | expiry-window p99 µs | max µs | L1 coalesced |"
echo "|:--|:--|--:|--:|--:|--:|--:|--:|--:|--:|"
for name in "${runs[@]}"; do
    f=$tmp/$name.out
    target=${name##*-}
    sc=${name%-*}
    if [[ ! -s $f ]]; then
        printf '| %s | %s | (failed) |\n' "$sc" "$target"
        continue
    fi
    co=$(val "$f" l1_coalesced)
    printf '| %s | %s | %s | %s, %s | %s | %s | %s | %s | %s | %s |\n' "$sc" "$target" \
        "$(val "$f" throughput_rps)" "$(val "$f" upstream_gets_per_expiry_window_avg)" \
        "$(val "$f" upstream_gets_per_expiry_window_max)" "$(val "$f" upstream_gets_per_steady_window)" \
        "$(val "$f" nil_replies_per_expiry_avg)" "$(val "$f" steady_p99_us)" "$(val "$f" expiry_window_p99_us)" \
        "$(val "$f" max_latency_us)" "${co:--}"
done
echo
echo "client = cache-aside: each client that gets nil waits ${recompute} ms and SETs the key PX $ttl through the target;"
echo "tool = the tool SETs it in Redis 10 ms after each expiry.  thinkN = N µs pause between GETs per client (0: closed loop, saturated)."

if [[ -n $out ]]; then
    mkdir -p "$out"
    cp "$tmp"/*.out "$out"/
    echo "stampede.sh: full outputs in $out" >&2
fi
exit "$failed"
