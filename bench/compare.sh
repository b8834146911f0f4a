#!/usr/bin/env bash
# Compare Redis direct, through hotproxy, and through twemproxy (nutcracker,
# when installed) with redis-benchmark, in one run on one machine.
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
#   --no-twemproxy   leave nutcracker out even if installed
#   --out FILE       also write the result as a markdown table to FILE
#   --raw FILE       also write every run as TSV to FILE
#   --run-timeout S  bound on one redis-benchmark run (default 300)
#
# Each round runs SET then GET at -P 1 and -P 16 against every target, the
# targets in a rotating order so none always goes first.  It starts its own
# redis-server, hotproxy and nutcracker on free loopback ports and stops them
# on exit.  Reported per target: median requests/s, p50 and p99 latency,
# throughput relative to direct, and CPU seconds per million requests of the
# proxy and of redis-server (utime+stime from /proc/PID/stat around each run).
# Nothing is pinned: on a small machine the benchmark client, the proxy and
# Redis share the cores, which is part of what is measured.  Exits 1 when a
# run failed, redis-benchmark complained, or hotproxy crashed or did not exit 0.
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
twemproxy=1
out=
raw=
run_timeout=300
proxy_args=()

need_num() {
    [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ ]] || { echo "compare.sh: $1 needs a positive number" >&2; exit 2; }
}
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
if ((twemproxy)) && ! command -v nutcracker >/dev/null; then
    echo "compare.sh: nutcracker not installed; comparing without twemproxy" >&2
    twemproxy=0
fi

bench_setup

read -r redis_port proxy_port nut_port nut_stats_port <<<"$(free_ports 4)"

start_redis "$redis_port"
start_hotproxy "$proxy_port" "$redis_port" "${proxy_args[@]}"

targets=(direct hotproxy)
declare -A port=([direct]=$redis_port [hotproxy]=$proxy_port)
declare -A ppid=([direct]="" [hotproxy]=$proxy_pid)

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

# One redis-benchmark run; appends a row to $results, or notes a problem.
run_one() {
    local round=$1 pipe=$2 target=$3 test=$4 n=$5
    local p=${ppid[$target]} rb0 rb1 pb0="" pb1="" rc=0 line
    local -a extra=()
    [[ -n $keyspace ]] && extra=(-r "$keyspace")
    if [[ -n $p ]] && ! kill -0 "$p" 2>/dev/null; then
        echo "round $round -P $pipe $target $test: not run, $target is no longer running" >>"$problems"
        return 0
    fi
    rb0=$(cpu_ticks "$redis_pid")
    [[ -n $p ]] && pb0=$(cpu_ticks "$p")
    timeout --kill-after=5 "$run_timeout" redis-benchmark -h 127.0.0.1 -p "${port[$target]}" \
        -c "$clients" -n "$n" -P "$pipe" -d "$datasize" -t "$test" --csv "${extra[@]}" \
        >"$tmp/rb.out" 2>"$tmp/rb.err" || rc=$?
    rb1=$(cpu_ticks "$redis_pid")
    [[ -n $p ]] && pb1=$(cpu_ticks "$p")

    # redis-benchmark warns when CONFIG GET is refused (proxies do); that is
    # expected.  Anything else on stderr is worth reporting.
    if grep -v -e '^WARNING: Could not fetch server CONFIG' -e '^$' "$tmp/rb.err" >"$tmp/rb.err2"; then
        {
            echo "round $round -P $pipe $target $test: redis-benchmark said:"
            sort "$tmp/rb.err2" | uniq -c | sort -rn | head -n 5 | sed 's/^/    /'
        } >>"$problems"
    fi
    if [[ -n $p ]] && ! kill -0 "$p" 2>/dev/null; then
        echo "round $round -P $pipe $target $test: $target DIED during the run" >>"$problems"
    fi
    line=$(grep -i "^\"$test\"," "$tmp/rb.out" | head -n 1 | tr -d '"' || true)
    if ((rc != 0)) || [[ -z $line ]]; then
        echo "round $round -P $pipe $target $test: redis-benchmark failed (exit $rc), no result" >>"$problems"
        return 0
    fi
    # test,rps,avg,min,p50,p95,p99,max
    local f_test f_rps f_avg f_min f_p50 f_p95 f_p99 f_max
    IFS=, read -r f_test f_rps f_avg f_min f_p50 f_p95 f_p99 f_max <<<"$line"
    : "$f_test" "$f_avg" "$f_min" "$f_p95" "$f_max"
    local pcpu=- rcpu=-
    [[ -n $rb0 && -n $rb1 ]] && rcpu=$(awk -v a="$rb0" -v b="$rb1" -v t="$clk_tck" 'BEGIN { printf "%.3f", (b - a) / t }')
    [[ -n $pb0 && -n $pb1 ]] && pcpu=$(awk -v a="$pb0" -v b="$pb1" -v t="$clk_tck" 'BEGIN { printf "%.3f", (b - a) / t }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$pipe" "$target" "$test" "$n" \
        "$f_rps" "$f_p50" "$f_p99" "$pcpu" "$rcpu" >>"$results"
    printf '  round %d  -P %-2s  %-9s  %-3s  %12s req/s  p50 %s ms  p99 %s ms\n' \
        "$round" "$pipe" "$target" "$test" "$f_rps" "$f_p50" "$f_p99" >&2
}

where="redis-server :$redis_port, hotproxy :$proxy_port"
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
# -DHOTPROXY_SANITIZE=ON build).
stop_hotproxy 15
case $proxy_status in
0) ;;
dead) echo "hotproxy exited during the benchmark" >>"$problems" ;;
*) echo "hotproxy exited with status $proxy_status on SIGTERM (137: it was killed after 15s)" >>"$problems" ;;
esac
if [[ $proxy_status != 0 ]] || grep -q -E 'Sanitizer|runtime error:' "$tmp/hotproxy.log"; then
    echo "hotproxy's last log lines:" >>"$problems"
    tail -n 30 "$tmp/hotproxy.log" | sed 's/^/    /' >>"$problems"
fi

# Versions and machine, for the table's header.
hp_version=$(timeout 5 "$bin" --version 2>&1 | head -n 1 || true)
redis_version=$(redis_server_version)
nut_version=
((twemproxy)) && nut_version=$(timeout 5 nutcracker -V 2>&1 | sed -nE 's/.*nutcracker-([0-9.]+).*/\1/p' | head -n 1)
cpu_model=$(cpu_model)

report=$tmp/report.md
python3 - "$results" "$rounds" "$clients" "$datasize" "${keyspace:-1}" "$hp_version" "$redis_version" \
    "$nut_version" "$(nproc)" "$cpu_model" "$n1" "$n16" "${proxy_args[*]:-}" >"$report" <<'EOF'
import csv, statistics, sys
(path, rounds, clients, datasize, keyspace, hpv, redisv, nutv, ncpu, cpu,
 n1, n16, pargs) = sys.argv[1:]
rows = list(csv.DictReader(open(path), delimiter="\t"))

def med(vals):
    vals = [float(v) for v in vals if v not in ("", "-")]
    return statistics.median(vals) if vals else None

groups = {}
for r in rows:
    groups.setdefault((int(r["pipeline"]), r["test"].upper(), r["target"]), []).append(r)

order = {"direct": 0, "hotproxy": 1, "twemproxy": 2}
print(f"redis-benchmark -c {clients} -d {datasize}"
      + (f" -r {keyspace}" if keyspace != "1" else " (one key)")
      + f", -n {n1} at -P 1 and {n16} at -P 16; median of {rounds} round(s).  ")
print(f"Redis {redisv}; {hpv}" + (f" ({pargs})" if pargs else "")
      + (f"; twemproxy {nutv} (server_connections: 1)" if nutv else "")
      + f"; {ncpu} CPU(s), {cpu}, nothing pinned.  ")
print("CPU is user+system seconds per million requests; 'proxy' is hotproxy's or twemproxy's.")
print()
print("| -P | test | target | req/s | p50 ms | p99 ms | req/s vs direct | proxy CPU s/Mreq | redis CPU s/Mreq |")
print("|---:|:-----|:-------|------:|-------:|-------:|----------------:|-----------------:|-----------------:|")

def fmt(v, spec):
    return "-" if v is None else format(v, spec)

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
    print(f"| {pipe} | {test} | {target} | {fmt(rps, ',.0f')} | {fmt(p50, '.3f')} | {fmt(p99, '.3f')} | "
          f"{fmt(ratio, '.2f')} | {fmt(per_m(pc), '.2f')} | {fmt(per_m(rc), '.2f')} |")
EOF

echo
cat "$report"
if [[ -s $problems ]]; then
    echo
    echo "Problems seen:"
    cat "$problems"
fi
if [[ -n $out ]]; then
    {
        cat "$report"
        if [[ -s $problems ]]; then
            echo
            echo "Problems seen during this run:"
            echo
            sed 's/^/    /' "$problems"
        fi
    } >"$out"
    echo "compare.sh: wrote $out" >&2
fi
if [[ -n $raw ]]; then
    cp "$results" "$raw"
fi
# Exit 1 when something went wrong, so scripts notice; the table still shows
# whatever was measured.
[[ ! -s $problems ]]
