#!/usr/bin/env bash
# Compare Redis direct, through hotproxy (L1 on and L1 off), through twemproxy
# (nutcracker, when installed) and the floor (bench/floor, a do-nothing
# server) with redis-benchmark, in one run on one machine.
#
#   bench/compare.sh [options] [-- extra hotproxy arguments]
#
#   --rounds N       rounds; each round runs every target once (default 3)
#   -n N             requests per run, for both pipeline depths
#   --n1 N           requests per run at -P 1  (default 200000, env BENCH_N_P1)
#   --n16 N          requests per run at -P 16 (default 1000000, env BENCH_N_P16)
#   -c N             parallel clients (default 50)
#   -d N             value size in bytes (default 3, redis-benchmark's)
#   -r N             random keys from a keyspace of N (default: one key)
#   --bin PATH       hotproxy binary (default $HOTPROXY_BIN or build/hotproxy)
#   --floor PATH     floor binary (default build/bench/floor)
#   --no-twemproxy   leave nutcracker out even if installed
#   --out FILE       also write the result as a markdown table to FILE
#   --raw FILE       also write every run as TSV to FILE
#   --run-timeout S  bound on one redis-benchmark run (default 300)
#
# Targets: direct (redis-server), hotproxy with the extra arguments (without
# -r there is one key, so every GET is an L1 hit once the key is hot),
# "hotproxy --l1 no" (the same plus --l1 no: pass-through), twemproxy, and
# the floor.  The floor (bench/floor.c) answers every command with a fixed
# reply (GET: a bulk of -d bytes) and looks nothing up, with the I/O model of
# Redis and hotproxy (one thread, epoll, one read of up to 16 KB and one
# write per wake-up): what it costs is what the kernel and the loop cost, so
# a target's CPU above it is the target's own work.
# Each round runs SET then GET at -P 1 and -P 16 against every target, the
# targets in a rotating order so none always goes first.  It starts its own
# redis-server, hotproxy (twice), nutcracker and floor on free loopback ports
# and stops them on exit.  Reported per target: median requests/s, p50 and p99
# latency, throughput relative to direct, CPU seconds per million requests of
# the proxy (or of the floor) and of redis-server (utime+stime from
# /proc/PID/stat around each run), their total, and how far that total is
# above the floor's.
# Nothing is pinned: on a small machine the benchmark client, the proxy and
# Redis share the cores, which is part of what is measured.  Exits 1 when a
# run failed, redis-benchmark complained, or a hotproxy or the floor crashed
# or did not exit 0.  redis-benchmark's CONFIG GET save / appendonly at start
# gets an array from the floor, as from Redis, so it warns about neither.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

rounds=3
n1=${BENCH_N_P1:-200000}
n16=${BENCH_N_P16:-1000000}
clients=50
datasize=3
keyspace=
bin=
floor=
twemproxy=1
out=
raw=
run_timeout=300
proxy_args=()

while (($#)); do
    case "$1" in
    --rounds) need_num "$@"; rounds=$2; shift ;;
    -n) need_num "$@"; n1=$2; n16=$2; shift ;;
    --n1) need_num "$@"; n1=$2; shift ;;
    --n16) need_num "$@"; n16=$2; shift ;;
    -c) need_num "$@"; clients=$2; shift ;;
    -d) need_num "$@"; datasize=$2; shift ;;
    -r) need_num "$@"; keyspace=$2; shift ;;
    --run-timeout) need_num "$@"; run_timeout=$2; shift ;;
    --bin) [[ $# -ge 2 ]] || { echo "compare.sh: --bin needs a path" >&2; exit 2; }; bin=$2; shift ;;
    --floor) [[ $# -ge 2 ]] || { echo "compare.sh: --floor needs a path" >&2; exit 2; }; floor=$2; shift ;;
    --out) [[ $# -ge 2 ]] || { echo "compare.sh: --out needs a file" >&2; exit 2; }; out=$2; shift ;;
    --raw) [[ $# -ge 2 ]] || { echo "compare.sh: --raw needs a file" >&2; exit 2; }; raw=$2; shift ;;
    --no-twemproxy) twemproxy=0 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; proxy_args=("$@"); break ;;
    *) echo "compare.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done

bin=${bin:-${HOTPROXY_BIN:-$src/build/hotproxy}}
need_cmds " (run .ci/deps)" redis-server redis-benchmark redis-cli python3 timeout
[[ -x $bin ]] || { echo "compare.sh: no hotproxy at $bin (build it, or --bin)" >&2; exit 1; }
floor=${floor:-$src/build/bench/floor}
[[ -x $floor ]] || { echo "compare.sh: no floor at $floor (cmake --build build --target floor, or --floor)" >&2; exit 1; }
if ((twemproxy)) && ! command -v nutcracker >/dev/null; then
    echo "compare.sh: nutcracker not installed; comparing without twemproxy" >&2
    twemproxy=0
fi

bench_setup

read -r redis_port proxy_port pt_port floor_port nut_port nut_stats_port <<<"$(free_ports 6)"

start_redis "$redis_port"
start_hotproxy "$proxy_port" "$redis_port" "${proxy_args[@]}"
# The last --l1 on the command line wins, so this one is pass-through
# whatever the extra arguments say.
start_server hotproxy-pt "$pt_port" "$bin" --port "$pt_port" --upstream "127.0.0.1:$redis_port" \
    "${proxy_args[@]}" --l1 no
pt_pid=$server_pid
start_server floor "$floor_port" "$floor" --port "$floor_port" --reply-size "$datasize"
floor_pid=$server_pid

pt="hotproxy --l1 no"
targets=(direct hotproxy "$pt" floor)
declare -A port=([direct]=$redis_port [hotproxy]=$proxy_port [$pt]=$pt_port [floor]=$floor_port)
declare -A ppid=([direct]="" [hotproxy]=$proxy_pid [$pt]=$pt_pid [floor]=$floor_pid)

if ((twemproxy)); then
    cat >"$tmp/nutcracker.yml" <<EOF
bench:
  listen: 127.0.0.1:$nut_port
  hash: fnv1a_64
  distribution: ketama
  redis: true
  preconnect: true
  auto_eject_hosts: false
  server_connections: 1
  timeout: 5000
  servers:
    - 127.0.0.1:$redis_port:1
EOF
    if ! timeout 10 nutcracker -t -c "$tmp/nutcracker.yml" >"$tmp/nutcracker-t.log" 2>&1; then
        cat "$tmp/nutcracker-t.log" >&2
        echo "compare.sh: nutcracker rejects its config; comparing without it" >&2
    else
        nutcracker -c "$tmp/nutcracker.yml" -s "$nut_stats_port" -a 127.0.0.1 \
            -p "$tmp/nutcracker.pid" -o "$tmp/nutcracker.log" >/dev/null 2>&1 &
        nut_pid=$!
        pids+=("$nut_pid")
        wait_port "$nut_port" "$nut_pid" nutcracker
        targets+=(twemproxy)
        port[twemproxy]=$nut_port
        ppid[twemproxy]=$nut_pid
    fi
fi

results=$tmp/results.tsv
printf 'round\tpipeline\ttarget\ttest\tn\trps\tp50_ms\tp99_ms\tproxy_cpu_s\tredis_cpu_s\n' >"$results"
problems=$tmp/problems.txt
: >"$problems"

# One redis-benchmark run (lib.sh's bench_one); with -r N, random keys.
run_one() {
    local -a extra=()
    [[ -n $keyspace ]] && extra=(-r "$keyspace")
    bench_one 16 "$@" "${ppid[$3]}" "${port[$3]}" "${extra[@]}"
}

where="redis-server :$redis_port, hotproxy :$proxy_port, $pt :$pt_port, floor :$floor_port"
[[ -n ${port[twemproxy]:-} ]] && where+=", twemproxy :$nut_port"
echo "compare.sh: $where; $rounds round(s), -c $clients, -n $n1 (P1) / $n16 (P16)" >&2
nt=${#targets[@]}
for ((round = 1; round <= rounds; round++)); do
    for pipe in 1 16; do
        n=$n1
        ((pipe == 16)) && n=$n16
        for test in set get; do
            for ((k = 0; k < nt; k++)); do
                run_one "$round" "$pipe" "${targets[(k + round - 1) % nt]}" "$test" "$n"
            done
        done
    done
done

# A sanitizer report counts as a failure too (when --bin is a
# -DHOTPROXY_SANITIZE=ON build).  The floor exits 0 on SIGTERM as well, after
# printing what it did.
for log in hotproxy hotproxy-pt floor; do
    case $log in
    hotproxy) name=hotproxy pid=$proxy_pid ;;
    hotproxy-pt) name=$pt pid=$pt_pid ;;
    floor) name=floor pid=$floor_pid ;;
    esac
    stop_server "$pid" 15
    case $server_status in
    0) ;;
    dead) echo "$name exited during the benchmark" >>"$problems" ;;
    *) echo "$name exited with status $server_status on SIGTERM (137: it was killed after 15s)" >>"$problems" ;;
    esac
    if [[ $server_status != 0 ]] || grep -q -E 'Sanitizer|runtime error:' "$tmp/$log.log"; then
        echo "$name's last log lines:" >>"$problems"
        tail -n 30 "$tmp/$log.log" | sed 's/^/    /' >>"$problems"
    fi
done
# "floor: C connections, N commands answered, R reads, W writes"
floor_counts=$(sed -n 's/^floor: \([0-9]* connections, .*\)/\1/p' "$tmp/floor.log" | tail -n 1)

# Versions and machine, for the table's header.
hp_version=$(timeout 5 "$bin" --version 2>&1 | head -n 1 || true)
redis_version=$(redis_server_version)
nut_version=
((twemproxy)) && nut_version=$(timeout 5 nutcracker -V 2>&1 | sed -nE 's/.*nutcracker-([0-9.]+).*/\1/p' | head -n 1)
cpu_model=$(cpu_model)

report=$tmp/report.md
python3 - "$results" "$rounds" "$clients" "$datasize" "${keyspace:-1}" "$hp_version" "$redis_version" \
    "$nut_version" "$(nproc)" "$cpu_model" "$n1" "$n16" "${proxy_args[*]:-}" "$floor_counts" >"$report" <<'EOF'
import csv, statistics, sys
(path, rounds, clients, datasize, keyspace, hpv, redisv, nutv, ncpu, cpu,
 n1, n16, pargs, floor_counts) = sys.argv[1:]
rows = list(csv.DictReader(open(path), delimiter="\t"))

def med(vals):
    vals = [float(v) for v in vals if v not in ("", "-")]
    return statistics.median(vals) if vals else None

groups = {}
for r in rows:
    groups.setdefault((int(r["pipeline"]), r["test"].upper(), r["target"]), []).append(r)

order = {"direct": 0, "hotproxy": 1, "hotproxy --l1 no": 2, "twemproxy": 3, "floor": 4}
label = {"floor": "**floor** (do-nothing server)"}
print(f"redis-benchmark -c {clients} -d {datasize}"
      + (f" -r {keyspace}" if keyspace != "1" else " (one key)")
      + f", -n {n1} at -P 1 and {n16} at -P 16; median of {rounds} round(s).  ")
print(f"Redis {redisv}; {hpv}" + (f" ({pargs})" if pargs else "")
      + (f"; twemproxy {nutv} (server_connections: 1)" if nutv else "")
      + f"; {ncpu} CPU(s), {cpu}, nothing pinned.  ")
print("CPU is user+system seconds per million requests; 'proxy' is hotproxy's or twemproxy's,")
print("or the floor's own on its rows (Redis idles then); 'total' is proxy + redis; 'above floor'")
print("is total minus the floor's total at the same -P and test.  The floor is bench/floor: one")
print("thread, epoll, one read (<= 16 KB) and one write per wake-up, a fixed reply per command")
print("(GET: a bulk of -d bytes), no lookup.  It is the cost of the I/O model itself.  ")
if floor_counts:
    print(f"The floor saw {floor_counts}.  ")
print()
print("| -P | test | target | req/s | p50 ms | p99 ms | req/s vs direct | proxy CPU s/Mreq | redis CPU s/Mreq | total CPU s/Mreq | above floor s/Mreq |")
print("|---:|:-----|:-------|------:|-------:|-------:|----------------:|-----------------:|-----------------:|-----------------:|-------------------:|")

def fmt(v, spec):
    return "-" if v is None else format(v, spec)

def total(g):
    """Median over rounds of (proxy + redis) CPU seconds per million requests."""
    t = []
    for r in g:
        parts = [float(r[k]) for k in ("proxy_cpu_s", "redis_cpu_s") if r[k] not in ("", "-")]
        if parts:
            t.append(sum(parts) / (float(r["n"]) / 1e6))
    return statistics.median(t) if t else None

for (pipe, test, target) in sorted(groups, key=lambda k: (k[0], k[1] != "SET", order.get(k[2], 9))):
    g = groups[(pipe, test, target)]
    n = float(g[0]["n"])
    rps = med([r["rps"] for r in g])
    p50 = med([r["p50_ms"] for r in g])
    p99 = med([r["p99_ms"] for r in g])
    pc = med([r["proxy_cpu_s"] for r in g])
    rc = med([r["redis_cpu_s"] for r in g])
    d = groups.get((pipe, test, "direct"))
    drps = med([r["rps"] for r in d]) if d else None
    ratio = None if (rps is None or not drps) else rps / drps
    per_m = lambda c: None if c is None else c / (n / 1e6)
    tot = total(g)
    f = groups.get((pipe, test, "floor"))
    ftot = total(f) if f else None
    above = None if (tot is None or ftot is None) else tot - ftot
    above_s = "(the floor)" if target == "floor" else fmt(above, '+.2f')
    print(f"| {pipe} | {test} | {label.get(target, target)} | {fmt(rps, ',.0f')} | {fmt(p50, '.3f')} | {fmt(p99, '.3f')} | "
          f"{fmt(ratio, '.2f')} | {fmt(per_m(pc), '.2f')} | {fmt(per_m(rc), '.2f')} | {fmt(tot, '.2f')} | {above_s} |")
EOF

publish_report "$report" "$problems" "$out" "$raw" "$results"
