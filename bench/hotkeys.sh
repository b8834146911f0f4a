#!/usr/bin/env bash
# Zipf hot-key workload against Redis directly and through hotproxy, in one run.
#
#   bench/hotkeys.sh [options] [-- extra hotproxy arguments]
#
#   --keys N          key space (default 1000000)
#   --zipf S          Zipf exponent (default 0.99)
#   --value-size B    value size (default 100)
#   --read-pct R      percent GETs (default 95)
#   --l1-pct P        L1 size in percent of the keys, as entries (default 1)
#   --clients C       connections (default 50)
#   --pipeline P      requests in flight per connection, Zipf runs (default 1)
#   --duration SEC    measured seconds per Zipf run (default 10)
#   --warmup SEC      unmeasured seconds first (default 2)
#   --seed N          random seed, the same for every run (default 1)
#   --hot-keys N      keys in the L1-hit GET runs (default 1000, at most the L1 size)
#   --hot-duration S  measured seconds per L1-hit GET run (default 5)
#   --no-build        use the binaries in build/ as they are
#   --zipf-only       skip the L1-hit GET runs (part 2 below)
#   --out DIR         also keep every run's full output in DIR
#
# What it does: builds hotproxy and bench/hotkeys (cmake, incremental), starts
# its own redis-server (no persistence, 127.0.0.1, a free port, maxmemory
# sized for the keys) and hotproxy on free ports, preloads every key, sizes
# hotproxy's L1 to --l1-pct of the keys (bytes per entry measured from INFO
# hotproxy_l1_bytes / hotproxy_l1_entries after filling a few entries, then
# HOTPROXY CONFIG SET l1-maxmemory), and runs bench/hotkeys:
#   1. the Zipf workload against Redis directly, then through hotproxy;
#   2. GETs only, uniform over --hot-keys keys (all of them fit in the L1, so
#      through hotproxy nearly all are L1 hits), at -P 1 and -P 16, against
#      Redis and through hotproxy.
# CPU seconds per million requests are utime+stime from /proc/PID/stat over
# each measured window.  Nothing is pinned: the load generator, hotproxy and
# Redis share the machine's cores.  Everything it starts is stopped on exit.
# A full default run takes about a minute and a half.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

keys=1000000 zipf=0.99 value_size=100 read_pct=95 l1_pct=1 clients=50 pipeline=1
duration=10 warmup=2 seed=1 hot_keys=1000 hot_duration=5 build=1 zipf_only=0 out='' proxy_args=()
while (($#)); do
    case "$1" in
    --keys) need "$@"; keys=$2; shift ;;
    --zipf) need "$@"; zipf=$2; shift ;;
    --value-size) need "$@"; value_size=$2; shift ;;
    --read-pct) need "$@"; read_pct=$2; shift ;;
    --l1-pct) need "$@"; l1_pct=$2; shift ;;
    --clients) need "$@"; clients=$2; shift ;;
    --pipeline) need "$@"; pipeline=$2; shift ;;
    --duration) need "$@"; duration=$2; shift ;;
    --warmup) need "$@"; warmup=$2; shift ;;
    --seed) need "$@"; seed=$2; shift ;;
    --hot-keys) need "$@"; hot_keys=$2; shift ;;
    --hot-duration) need "$@"; hot_duration=$2; shift ;;
    --no-build) build=0 ;;
    --zipf-only) zipf_only=1 ;;
    --out) need "$@"; out=$2; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; proxy_args=("$@"); break ;;
    *) echo "hotkeys.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done

need_cmds "" redis-server redis-cli python3 timeout cmake
build_tool "$build" hotkeys
bench_setup

read -r redis_port proxy_port <<<"$(free_ports 2)"
# Redis needs ~ (value + ~90 bytes of key and overhead) per key; give it twice that.
maxmem_mb=$(((keys * (value_size + 100) * 2) / 1048576 + 256))
start_redis "$redis_port" --maxmemory "${maxmem_mb}mb" --maxmemory-policy noeviction
start_hotproxy "$proxy_port" "$redis_port" "${proxy_args[@]}"

common=(--keys "$keys" --zipf "$zipf" --value-size "$value_size" --seed "$seed")
echo "hotkeys.sh: redis-server :$redis_port (pid $redis_pid, maxmemory ${maxmem_mb}mb), hotproxy :$proxy_port (pid $proxy_pid)" >&2
echo "hotkeys.sh: preloading $keys keys of $value_size bytes" >&2
timeout 300 "$tool" --port "$redis_port" "${common[@]}" --preload --duration 0 >"$tmp/preload.out"

# Fills wait for the tracking link (hotproxy opens it at its first cron):
# calibrating before it is up would fill nothing.
for ((i = 0; i < 100; i++)); do
    trk=$(redis-cli -p "$proxy_port" info hotproxy_cache | tr -d '\r' | sed -n 's/^hotproxy_l1_tracking://p')
    [[ $trk == down ]] || break
    sleep 0.1
done

# L1 size: entries = l1-pct of the keys; bytes per entry measured on keys of
# the most common length (the highest ids), each read enough to be admitted.
entries=$(awk -v k="$keys" -v p="$l1_pct" 'BEGIN { e = int(k * p / 100); print e < 1 ? 1 : e }')
ncal=$((keys < 200 ? keys : 200))
for ((r = 0; r < 4; r++)); do
    for ((i = keys - ncal; i < keys; i++)); do echo "GET key:$i"; done
done | redis-cli -p "$proxy_port" >/dev/null
cal=$(redis-cli -p "$proxy_port" info hotproxy_cache | tr -d '\r')
cal_bytes=$(sed -n 's/^hotproxy_l1_bytes://p' <<<"$cal")
cal_entries=$(sed -n 's/^hotproxy_l1_entries://p' <<<"$cal")
if [[ -z $cal_entries || $cal_entries -eq 0 ]]; then
    echo "hotkeys.sh: calibration filled no L1 entry (is l1 on?); INFO said:" >&2
    echo "$cal" >&2
    exit 1
fi
bpe=$(((cal_bytes + cal_entries - 1) / cal_entries))
l1_bytes=$((entries * bpe))
l1_note=
if ((l1_bytes < 1048576)); then
    l1_bytes=1048576
    l1_note=" (raised to l1-maxmemory's minimum, 1mb: holds ~$((l1_bytes / bpe)) entries)"
fi
redis-cli -p "$proxy_port" hotproxy config set l1-maxmemory "$l1_bytes" >/dev/null
redis-cli -p "$proxy_port" hotproxy cache flush >/dev/null
got=$(redis-cli -p "$proxy_port" info hotproxy_cache | tr -d '\r' | sed -n 's/^hotproxy_l1_maxmemory://p')
[[ $got == "$l1_bytes" ]] || { echo "hotkeys.sh: l1-maxmemory is $got after setting $l1_bytes" >&2; exit 1; }
l1_ttl=$(redis-cli -p "$proxy_port" hotproxy config get l1-ttl | sed -n 2p)
l1_ttl=${l1_ttl:-1000}
# the L1 model replays the trace with hotproxy's own policy settings
pget() { redis-cli -p "$proxy_port" hotproxy config get "$1" | sed -n 2p; }
model_policy="$(pget l1-hot-threshold),$(pget l1-ttl-jitter),$(pget l1-refresh-ahead)"
echo "hotkeys.sh: L1 = $entries entries x $bpe bytes = $l1_bytes bytes$l1_note, l1-ttl $l1_ttl ms" >&2

failed=0
# run NAME PORT [args...]: one hotkeys run; output in $tmp/NAME.out
run() {
    local name=$1 port=$2
    shift 2
    local -a pidargs=(--redis-pid "$redis_pid")
    [[ $port == "$proxy_port" ]] && pidargs+=(--proxy-pid "$proxy_pid")
    # a run not made (hotproxy died) is reported already: go on to the report
    run_tool "$name" 600 --port "$port" --redis-port "$redis_port" "${pidargs[@]}" "$@" || true
}

cpu_window_begin
zargs=("${common[@]}" --read-pct "$read_pct" --clients "$clients" --pipeline "$pipeline"
    --duration "$duration" --warmup "$warmup" --cache-entries "$entries" --ttl-ms "$l1_ttl" --model-policy "$model_policy")
run zipf-redis "$redis_port" "${zargs[@]}"
run zipf-hotproxy "$proxy_port" "${zargs[@]}"
redis-cli -p "$proxy_port" info hotproxy_cache | tr -d '\r' >"$tmp/zipf-hotproxy.info" || true
((zipf_only)) && hot_keys=0

((hot_keys > entries)) && hot_keys=$entries
hargs=(--keys "$hot_keys" --zipf 0 --value-size "$value_size" --seed "$seed" --read-pct 100
    --clients "$clients" --duration "$hot_duration" --warmup 1 --cache-entries "$hot_keys" --ttl-ms "$l1_ttl")
for p in 1 16; do
    ((hot_keys > 0)) || break
    run "hot-P$p-redis" "$redis_port" "${hargs[@]}" --pipeline "$p"
    run "hot-P$p-hotproxy" "$proxy_port" "${hargs[@]}" --pipeline "$p"
done
cpu_window_end
finish_hotproxy

# ---- report ----
report_header "${proxy_args[@]}"
echo "   preload: $(val "$tmp/preload.out" preload_keys) keys in $(val "$tmp/preload.out" preload_s) s ($(val "$tmp/preload.out" preload_rps) SET/s)"
echo "   L1: $entries entries ($l1_pct% of $keys keys) x $bpe bytes/entry (measured) = l1-maxmemory $l1_bytes$l1_note; l1-ttl $l1_ttl ms"
for f in zipf-redis zipf-hotproxy; do
    [[ -s $tmp/$f.out ]] || continue
    echo
    echo "== $f"
    sed 's/^/   /' "$tmp/$f.out"
done
if [[ -s $tmp/zipf-hotproxy.info ]]; then
    echo
    echo "== hotproxy's INFO hotproxy_cache after its Zipf run (warm-up included)"
    grep -E '^hotproxy_l1_(entries|hits|misses|fills|coalesced|refreshes|stores|admissions_rejected|stale_fills|evictions|expirations|invalidations_[a-z]+):' \
        "$tmp/zipf-hotproxy.info" | sed 's/^/   /'
fi

fmt_row() { # file label
    local f=$1 label=$2
    [[ -s $f ]] || { printf '| %s | (failed) |\n' "$label"; return; }
    local pc rc tot
    pc=$(val "$f" proxy_cpu_s_per_mreq)
    rc=$(val "$f" redis_cpu_s_per_mreq)
    tot=$(awk -v a="${pc:-0}" -v b="${rc:-0}" 'BEGIN { printf "%.2f", a + b }')
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$label" \
        "$(val "$f" throughput_rps)" "$(val "$f" latency_p50_us)" "$(val "$f" latency_p99_us)" \
        "$(val "$f" latency_p999_us)" "$(val "$f" l1_hit_ratio | cut -d' ' -f1)" "$(val "$f" ideal_hit_ratio)" \
        "$(sed -n 's/^hit ratio vs ideal: //p' "$f")" "$(val "$f" upstream_offload)" "${pc:--}" "${rc:--}" "$tot"
}
hdr='| target | req/s | p50 µs | p99 µs | p999 µs | L1 hit ratio | ideal hit ratio | vs ideal | upstream offload | hotproxy CPU s/Mreq | redis CPU s/Mreq | total CPU s/Mreq |'
sep='|:--|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|'
echo
echo "== Zipf $zipf over $keys keys, $value_size-byte values, $read_pct% GETs, $clients clients, -P $pipeline, ${duration}s after ${warmup}s warmup, L1 $l1_pct% of keys"
echo "$hdr"
echo "$sep"
fmt_row "$tmp/zipf-redis.out" "redis-server"
fmt_row "$tmp/zipf-hotproxy.out" "hotproxy"
if [[ -s $tmp/zipf-hotproxy.out ]]; then
    echo
    echo "L1 model (cache/l1 on hotproxy's trace, policy $model_policy, no network): hit ratio" \
        "$(val "$tmp/zipf-hotproxy.out" l1_model_hit_ratio), $(sed -n 's/^l1_model vs ideal: //p' "$tmp/zipf-hotproxy.out") of the ideal"
fi
if ((hot_keys > 0)); then
    echo
    echo "== GETs only, uniform over $hot_keys keys (all fit in the L1: through hotproxy these are L1 hits), $clients clients, ${hot_duration}s"
    echo "${hdr/target/-P, target}"
    echo "$sep"
    for p in 1 16; do
        fmt_row "$tmp/hot-P$p-redis.out" "-P $p redis-server"
        fmt_row "$tmp/hot-P$p-hotproxy.out" "-P $p hotproxy"
    done
fi
echo
echo "ideal: $(val "$tmp/zipf-hotproxy.out" ideal_model)"
echo "upstream offload = 1 - (Redis cmdstat_get delta) / (GETs the clients sent); CPU = utime+stime per million requests."

keep_outputs "$out"
exit "$failed"
