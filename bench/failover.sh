#!/usr/bin/env bash
# What a Sentinel failover costs a client of hotproxy (topology sentinel).
#
#   bench/failover.sh [--rounds N] [--no-build] [-- extra hotproxy arguments]
#
#   --rounds N   failovers measured (default 10)
#   --no-build   use the binaries in build/ as they are
#
# It builds hotproxy, bench/failover and the harness' launcher (cmake,
# incremental), starts a master, a replica and three redis-sentinel
# (down-after-milliseconds 1000) through tests/integration/hx_launch, and
# hotproxy with topology sentinel on the three Sentinels; then bench/failover
# runs N planned failovers (SENTINEL FAILOVER) while writing through hotproxy,
# and reports, per failover, the time from the first +switch-master (the tool
# subscribes on all three Sentinels) to the first write through hotproxy that succeeded on the
# new master, and the median and max over all.  Everything it starts is
# stopped on exit.  About 10 to 20 s per failover.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

rounds=10 build=1 extra=()
while [[ $# -gt 0 ]]; do
    case $1 in
    --rounds) need "$@"; rounds=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --help | -h) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "$me: unknown option $1" >&2; exit 2 ;;
    esac
done
need_cmds " (install redis-server and redis-sentinel)" redis-server redis-sentinel

if ((build)); then
    (cd "$src" && cmake -B build >/dev/null && cmake --build build -j2 --target hx_launch >/dev/null) || {
        echo "$me: building hx_launch failed" >&2
        exit 1
    }
fi
build_tool "$build" failover
bench_setup

# The launcher runs until its stdin (a pipe only this shell holds) closes.
coproc HX { exec "$src/build/tests/integration/hx_launch" "sentinel fo replicas=1 sentinels=3 down-after=1000"; }
pids+=("$HX_PID")
exec {hxout}<&"${HX[0]}"
while IFS= read -r -u "$hxout" line; do
    [[ $line == hx_ready=1 ]] && break
    if [[ $line =~ ^([a-z_][a-z0-9_]*)=(.*)$ ]]; then
        printf -v "${BASH_REMATCH[1]}" '%s' "${BASH_REMATCH[2]}"
    else
        echo "$line" >&2
    fi
done
[[ -n ${fo_sentinel_ports:-} ]] || { echo "$me: the launcher did not start the servers" >&2; exit 1; }
read -r -a sp <<<"$fo_sentinel_ports"
ups=$(printf '127.0.0.1:%s,' "${sp[@]}")
ups=${ups%,}

read -r pport _ <<<"$(free_ports 1)"
"$bin" --port "$pport" --upstream "$ups" --topology sentinel --sentinel-master fo "${extra[@]}" \
    >"$tmp/hotproxy.log" 2>&1 &
proxy_pid=$!
pids+=("$proxy_pid")
wait_port "$pport" "$proxy_pid" hotproxy

echo "$me: $rounds failovers; Sentinels ${sp[*]}, master $fo_master_port, replica $fo_replica_ports" >&2
failed=0
sl=$(IFS=,; echo "${sp[*]}")
run_tool failover $((rounds * 150 + 60)) --proxy "$pport" --sentinel "$sl" --name fo --rounds "$rounds" || true
cat "$tmp/failover.out"
finish_hotproxy
exit "$failed"
