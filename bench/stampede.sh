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
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

clients=1000 ttl=1000 rounds=10 recompute=20 scenarios="client:0 client:20000 tool:20000" build=1 out=
proxy_args=()
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

need_cmds "" redis-server redis-cli python3 timeout cmake
build_tool "$build" stampede
bench_setup

read -r redis_port proxy_port <<<"$(free_ports 2)"
start_redis "$redis_port" --maxclients $((clients + 1000))
start_hotproxy "$proxy_port" "$redis_port" "${proxy_args[@]}"
echo "stampede.sh: redis-server :$redis_port, hotproxy :$proxy_port" >&2

failed=0
runs=()
cpu_window_begin
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
        # A key per run, so one run's leftovers (TTL, L1 entry) cannot touch the
        # next.  A run not made (hotproxy died) is left out of the table.
        run_tool "$name" 300 --port "$port" --redis-port "$redis_port" --clients "$clients" --ttl-ms "$ttl" \
            --rounds "$rounds" --repopulate "$mode" --recompute-ms "$recompute" --think-us "$think" \
            --key "stampede:$name" || continue
        runs+=("$name")
    done
done
cpu_window_end
finish_hotproxy

# ---- report ----
report_header "${proxy_args[@]}"
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

keep_outputs "$out"
exit "$failed"
