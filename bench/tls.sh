#!/usr/bin/env bash
# TLS throughput and CPU: redis-server's own TLS port side by side with
# hotproxy speaking TLS, in one run on one machine (redis-benchmark --tls).
#
#   bench/tls.sh [options] [-- extra hotproxy arguments]
#
#   --rounds N       rounds; each round runs every target once (default 3)
#   -n N             requests per run, for both pipeline depths
#   --n1 N           requests per run at -P 1  (default 100000, env BENCH_N_P1)
#   --n16 N          requests per run at -P 16 (default 500000, env BENCH_N_P16)
#   -c N             parallel clients (default 50)
#   -d N             value size in bytes (default 3, redis-benchmark's)
#   --bin PATH       hotproxy binary (default $HOTPROXY_BIN or build/hotproxy)
#   --out FILE       also write the result as a markdown table to FILE
#   --raw FILE       also write every run as TSV to FILE
#   --run-timeout S  bound on one redis-benchmark run (default 300)
#
# Certificates come from tests/tls-certs.sh (EC P-256, a throwaway CA); every
# TLS connection is mutual (the client certificate is presented and checked).
# One redis-server listens on a plain port and on a tls-port.  Targets:
#   redis tls         redis-benchmark --tls on redis-server's own tls-port
#   redis plain       the same server's plain port, for scale
#   hotproxy tls --l1 no   hotproxy's tls-port (tls-cert-file, tls-key-file,
#                     tls-ca-cert-file, tls-auth-clients yes), pass-through,
#                     plain to Redis
#   hotproxy tls L1   the same with the L1 on: GETs of one key are L1 hits
#   hotproxy upstream-tls --l1 no   hotproxy's plain port, to Redis' tls-port
#                     with upstream-tls yes (upstream-tls-ca-cert-file,
#                     upstream-tls-cert-file/-key-file, verification on)
#   hotproxy tls both --l1 no       TLS on both sides
# The hotproxy rows run only when the binary knows the directives: a
# `hotproxy --test-config` on a file holding tls-port (and one holding
# upstream-tls) decides; otherwise the report says "skipped: hotproxy has no
# TLS yet" (or no upstream TLS yet) and only the Redis rows are measured.
# Each round runs SET then GET at -P 1 and -P 16 against every target, in a
# rotating order.  Without -r there is one key, so every GET through an L1 is
# a hit once the key is hot.  Reported per target: median requests/s, p50 and
# p99 latency, throughput relative to "redis tls", and CPU seconds per million
# requests of hotproxy and of redis-server (utime+stime from /proc/PID/stat
# around each run).  Nothing is pinned.  Exits 1 when a run failed,
# redis-benchmark complained, or a hotproxy did not exit 0 on SIGTERM.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

rounds=3
n1=${BENCH_N_P1:-100000}
n16=${BENCH_N_P16:-500000}
clients=50
datasize=3
bin=
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
    --run-timeout) need_num "$@"; run_timeout=$2; shift ;;
    --bin) need "$@"; bin=$2; shift ;;
    --out) need "$@"; out=$2; shift ;;
    --raw) need "$@"; raw=$2; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; proxy_args=("$@"); break ;;
    *) echo "tls.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done

bin=${bin:-${HOTPROXY_BIN:-$src/build/hotproxy}}
need_cmds " (run .ci/deps)" redis-server redis-benchmark redis-cli openssl python3 timeout
[[ -x $bin ]] || { echo "tls.sh: no hotproxy at $bin (build it, or --bin)" >&2; exit 1; }

bench_setup

certs=$tmp/tls
bash "$src/tests/tls-certs.sh" "$certs" || { echo "tls.sh: tests/tls-certs.sh failed" >&2; exit 1; }
tls_client=(--tls --cacert "$certs/ca.crt" --cert "$certs/client.crt" --key "$certs/client.key")

read -r redis_port redis_tls_port tls_port tls_plain_port pt_port pt_plain_port up_port both_port both_plain_port \
    <<<"$(free_ports 9)"

# Both ports on one server: the Redis rows and every hotproxy row share it.
start_redis "$redis_port" --tls-port "$redis_tls_port" --tls-cert-file "$certs/server.crt" \
    --tls-key-file "$certs/server.key" --tls-ca-cert-file "$certs/ca.crt" --tls-auth-clients yes
wait_port "$redis_tls_port" "$redis_pid" redis-server
timeout 10 redis-cli -p "$redis_tls_port" "${tls_client[@]}" PING | grep -qx PONG ||
    { echo "tls.sh: redis-server's tls-port does not answer redis-cli --tls" >&2; exit 1; }

# hotproxy's side of TLS, with the directive names of Redis (issue 14).
client_tls=(--tls-cert-file "$certs/server.crt" --tls-key-file "$certs/server.key"
    --tls-ca-cert-file "$certs/ca.crt" --tls-auth-clients yes)
upstream_tls=(--upstream-tls yes --upstream-tls-ca-cert-file "$certs/ca.crt"
    --upstream-tls-cert-file "$certs/client.crt" --upstream-tls-key-file "$certs/client.key")

# accepts DIRECTIVE-LINES...: 0 when hotproxy --test-config takes a file with them.
accepts() {
    printf '%s\n' "upstream 127.0.0.1:$redis_port" "$@" >"$tmp/probe.conf"
    timeout 10 "$bin" --test-config "$tmp/probe.conf" >"$tmp/probe.out" 2>&1
}
has_tls=0 has_upstream_tls=0 skipped=()
if accepts "tls-port $tls_port" "tls-cert-file $certs/server.crt" "tls-key-file $certs/server.key" \
    "tls-ca-cert-file $certs/ca.crt" "tls-auth-clients yes"; then
    has_tls=1
else
    skipped+=("skipped: hotproxy has no TLS yet (--test-config: $(tail -n 1 "$tmp/probe.out"))")
fi
if accepts "upstream-tls yes" "upstream-tls-ca-cert-file $certs/ca.crt"; then
    has_upstream_tls=1
else
    skipped+=("skipped: hotproxy has no upstream TLS yet (--test-config: $(tail -n 1 "$tmp/probe.out"))")
fi

targets=("redis tls" "redis plain")
declare -A port=(["redis tls"]=$redis_tls_port ["redis plain"]=$redis_port)
declare -A ppid=(["redis tls"]="" ["redis plain"]="")
declare -A tls=(["redis tls"]=1 ["redis plain"]=0)
declare -A logs=()

# add_proxy TARGET CLIENT_PORT TLS(0|1) PLAIN_PORT UPSTREAM_PORT ARG...: a
# hotproxy on PLAIN_PORT (and its tls-port when the ARGs give one) measured
# on CLIENT_PORT.  Its log is $tmp/<log name>.log.
add_proxy() {
    local target=$1 cport=$2 is_tls=$3 plain=$4 upstream=$5 name
    shift 5
    name=hotproxy-$plain
    start_server "$name" "$plain" "$bin" --port "$plain" --upstream "127.0.0.1:$upstream" "$@"
    wait_port "$cport" "$server_pid" "$name"
    targets+=("$target")
    port[$target]=$cport
    ppid[$target]=$server_pid
    tls[$target]=$is_tls
    logs[$target]=$name
}
if ((has_tls)); then
    add_proxy "hotproxy tls --l1 no" "$pt_port" 1 "$pt_plain_port" "$redis_port" \
        --tls-port "$pt_port" "${client_tls[@]}" "${proxy_args[@]}" --l1 no
    add_proxy "hotproxy tls L1" "$tls_port" 1 "$tls_plain_port" "$redis_port" \
        --tls-port "$tls_port" "${client_tls[@]}" "${proxy_args[@]}"
fi
if ((has_upstream_tls)); then
    add_proxy "hotproxy upstream-tls --l1 no" "$up_port" 0 "$up_port" "$redis_tls_port" \
        "${upstream_tls[@]}" "${proxy_args[@]}" --l1 no
fi
if ((has_tls && has_upstream_tls)); then
    add_proxy "hotproxy tls both --l1 no" "$both_port" 1 "$both_plain_port" "$redis_tls_port" \
        --tls-port "$both_port" "${client_tls[@]}" "${upstream_tls[@]}" "${proxy_args[@]}" --l1 no
fi

results=$tmp/results.tsv
printf 'round\tpipeline\ttarget\ttest\tn\trps\tp50_ms\tp99_ms\tproxy_cpu_s\tredis_cpu_s\n' >"$results"
problems=$tmp/problems.txt
: >"$problems"

# One redis-benchmark run (lib.sh's bench_one); TLS targets with --tls.
run_one() {
    local -a how=()
    ((${tls[$3]})) && how=("${tls_client[@]}")
    bench_one 30 "$@" "${ppid[$3]}" "${port[$3]}" "${how[@]}"
}

for s in "${skipped[@]}"; do echo "tls.sh: $s" >&2; done
echo "tls.sh: ${#targets[@]} target(s); $rounds round(s), -c $clients, -n $n1 (P1) / $n16 (P16)" >&2
load0=$(cut -d' ' -f1 /proc/loadavg)
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

# hotproxys exit 0 on SIGTERM, and with no sanitizer report in their logs
for target in "${!logs[@]}"; do
    stop_server "${ppid[$target]}" 15
    case $server_status in
    0) ;;
    dead) echo "$target exited during the benchmark" >>"$problems" ;;
    *) echo "$target exited with status $server_status on SIGTERM (137: killed after 15s)" >>"$problems" ;;
    esac
    if [[ $server_status != 0 ]] || grep -q -E 'Sanitizer|runtime error:' "$tmp/${logs[$target]}.log"; then
        echo "$target's last log lines:" >>"$problems"
        tail -n 30 "$tmp/${logs[$target]}.log" | sed 's/^/    /' >>"$problems"
    fi
done

report=$tmp/report.md
{
    # lib.sh's report_header counts one hotproxy as ours; here are several
    echo "== $me: $(nproc) CPU(s), $(cpu_model)"
    echo "   redis-server $(redis_server_version); $("$bin" --version 2>&1 | head -n 1)${proxy_args[*]:+ (${proxy_args[*]})}"
    echo "   1-min load average before the runs: $load0"
    echo
    python3 - "$results" "$rounds" "$clients" "$datasize" "$n1" "$n16" <<'EOF'
import csv, statistics, sys
path, rounds, clients, datasize, n1, n16 = sys.argv[1:]
rows = list(csv.DictReader(open(path), delimiter="\t"))

def med(vals):
    vals = [float(v) for v in vals if v not in ("", "-")]
    return statistics.median(vals) if vals else None

def fmt(v, spec):
    return "-" if v is None else format(v, spec)

groups = {}
for r in rows:
    groups.setdefault((int(r["pipeline"]), r["test"].upper(), r["target"]), []).append(r)
order = ["redis tls", "redis plain", "hotproxy tls --l1 no", "hotproxy tls L1",
         "hotproxy upstream-tls --l1 no", "hotproxy tls both --l1 no"]
print(f"redis-benchmark -c {clients} -d {datasize} (one key), --tls with a client certificate on the TLS rows, "
      f"-n {n1} at -P 1 and {n16} at -P 16; median of {rounds} round(s).  ")
print("CPU is user+system seconds per million requests (hotproxy's, redis-server's, their total).  ")
print()
print("| -P | test | target | req/s | p50 ms | p99 ms | req/s vs redis tls | hotproxy CPU s/Mreq | redis CPU s/Mreq | total CPU s/Mreq |")
print("|---:|:-----|:-------|------:|-------:|-------:|-------------------:|--------------------:|-----------------:|-----------------:|")
for key in sorted(groups, key=lambda k: (k[0], k[1] != "SET", order.index(k[2]) if k[2] in order else 99)):
    pipe, test, target = key
    g = groups[key]
    per_m = 1e6 / float(g[0]["n"])
    rps = med([r["rps"] for r in g])
    base = groups.get((pipe, test, "redis tls"))
    brps = med([r["rps"] for r in base]) if base else None
    pc = med([r["proxy_cpu_s"] for r in g])
    rc = med([r["redis_cpu_s"] for r in g])
    tot = med([sum(float(r[k]) for k in ("proxy_cpu_s", "redis_cpu_s") if r[k] not in ("", "-")) for r in g])
    print(f"| {pipe} | {test} | {target} | {fmt(rps, ',.0f')} | {fmt(med([r['p50_ms'] for r in g]), '.3f')} | "
          f"{fmt(med([r['p99_ms'] for r in g]), '.3f')} | {fmt(None if not (rps and brps) else rps / brps, '.2f')} | "
          f"{fmt(None if pc is None else pc * per_m, '.2f')} | {fmt(None if rc is None else rc * per_m, '.2f')} | "
          f"{fmt(None if tot is None else tot * per_m, '.2f')} |")
EOF
    for s in "${skipped[@]}"; do
        echo
        echo "$s"
    done
} >"$report"

publish_report "$report" "$problems" "$out" "$raw" "$results"
