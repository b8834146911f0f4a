# shellcheck shell=bash
# Shared by bench/compare.sh, bench/hotkeys.sh, bench/stampede.sh and bench/tls.sh, which
# source it right after `set -euo pipefail`.  Each of them starts its own
# redis-server and hotproxy on free loopback ports, measures, and stops what it
# started; that plumbing lives here so the three cannot drift apart.
# Sourcing it only defines functions and a few constants: nothing starts, and
# nothing is checked, until a script calls for it (so --help works anywhere).
#
# Globals the functions set, for the scripts to use: tmp and pids
# (bench_setup), bin and tool (build_tool), redis_pid (start_redis), proxy_pid
# (start_hotproxy), server_pid (start_server), proxy_status (stop_hotproxy),
# server_status (stop_server), load0 and others
# (cpu_window_begin / cpu_window_end).  Functions that end a run in failure
# set failed=1 and let the script go on, so a report still shows the rest.

me=${0##*/}                                          # prefixes every message: "hotkeys.sh: ..."
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) # the checkout, for build/
clk_tck=$(getconf CLK_TCK)                           # /proc/PID/stat counts CPU time in these

# --help is the calling script's header comment, line 2 up to `set -euo`.
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

# need OPTION [VALUE...]: exit 2 unless OPTION is followed by a non-empty value.
need() { [[ $# -ge 2 && -n $2 ]] || { echo "$me: $1 needs a value" >&2; exit 2; }; }

# need_num OPTION [VALUE...]: exit 2 unless OPTION is followed by a positive number.
need_num() {
    [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ ]] || { echo "$me: $1 needs a positive number" >&2; exit 2; }
}

# need_cmds HINT CMD...: exit 1 at the first CMD not on PATH; HINT ends the message.
need_cmds() {
    local hint=$1 cmd
    shift
    for cmd in "$@"; do
        command -v "$cmd" >/dev/null || { echo "$me: $cmd not found$hint" >&2; exit 1; }
    done
}

# build_tool BUILD NAME: when BUILD is 1, build hotproxy and bench/NAME
# (cmake, incremental); either way point bin and tool at them, or exit 1.
build_tool() {
    local build=$1 name=$2
    if ((build)); then
        echo "$me: building (cmake, incremental)" >&2
        (cd "$src" && cmake -B build >/dev/null && cmake --build build -j2 --target hotproxy "$name" >/dev/null) || {
            echo "$me: build failed; run: cmake -B build && cmake --build build -j2" >&2
            exit 1
        }
    fi
    bin=$src/build/hotproxy
    tool=$src/build/bench/$name
    [[ -x $bin && -x $tool ]] || { echo "$me: no $bin or $tool (build first)" >&2; exit 1; }
}

# bench_setup: a scratch directory, and traps that stop every process in pids
# and remove it however the script ends.  INT and TERM go through exit so the
# EXIT trap runs for them too.
bench_setup() {
    tmp=$(mktemp -d)
    pids=()
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}

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

# N distinct free loopback ports, bound together so they differ.
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

# wait_port PORT PID NAME: wait until PORT accepts connections; exit 1, with
# the end of $tmp/NAME.log, if PID dies first or 10 s pass.
wait_port() {
    local port=$1 pid=$2 name=$3 i
    for ((i = 0; i < 100; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$me: $name exited during startup; its log:" >&2
            tail -n 20 "$tmp/$name.log" >&2 || true
            exit 1
        fi
        if timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "$me: $name did not listen on port $port within 10s" >&2
    exit 1
}

# start_redis PORT [ARG...]: our own redis-server on 127.0.0.1:PORT, with no
# persistence and the extra ARGs; sets redis_pid, returns once it listens.
# The ARGs go before --logfile "", which stays last as it always was.
start_redis() {
    local port=$1
    shift
    redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --daemonize no \
        "$@" --dir "$tmp" --logfile "" >"$tmp/redis-server.log" 2>&1 &
    redis_pid=$!
    pids+=("$redis_pid")
    wait_port "$port" "$redis_pid" redis-server
}

# start_server NAME PORT CMD [ARG...]: run CMD in the background with its
# output in $tmp/NAME.log; sets server_pid, returns once PORT listens.
start_server() {
    local name=$1 port=$2
    shift 2
    "$@" >"$tmp/$name.log" 2>&1 &
    server_pid=$!
    pids+=("$server_pid")
    wait_port "$port" "$server_pid" "$name"
}

# start_hotproxy PORT REDIS_PORT [ARG...]: $bin on PORT in front of the Redis
# on REDIS_PORT, with the extra ARGs; sets proxy_pid, returns once it listens.
start_hotproxy() {
    local port=$1 redis_port=$2
    shift 2
    start_server hotproxy "$port" "$bin" --port "$port" --upstream "127.0.0.1:$redis_port" "$@"
    proxy_pid=$server_pid
}

# stop_server PID SECONDS: SIGTERM PID and reap it, here rather than in
# cleanup, so a crash or a bad exit status can be reported.  server_status is
# its exit status, or "dead" when it had already exited.  It is SIGKILLed
# (status 137) if still there after SECONDS; 0 waits as long as it takes.
stop_server() {
    local pid=$1 limit=$2 i
    server_status=dead
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid"
    if ((limit > 0)); then
        for ((i = 0; i < limit * 10; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    server_status=0
    wait "$pid" 2>/dev/null || server_status=$?
}

# stop_hotproxy SECONDS: stop_server for hotproxy; sets proxy_status.
stop_hotproxy() {
    stop_server "$proxy_pid" "$1"
    proxy_status=$server_status
}

# finish_hotproxy: stop_hotproxy; unless it exited 0, show its last log
# lines and set failed=1.
# shellcheck disable=SC2034 # failed is the calling script's
finish_hotproxy() {
    stop_hotproxy 0
    if [[ $proxy_status != 0 ]]; then
        echo "$me: hotproxy exited with status $proxy_status; its last log lines:" >&2
        tail -n 20 "$tmp/hotproxy.log" >&2
        failed=1
    fi
}

# run_tool NAME SECONDS ARG...: one run of $tool with ARGs, killed after
# SECONDS; its output in $tmp/NAME.out, its stderr in $tmp/NAME.err.  A run
# that fails is shown and sets failed=1.  Once hotproxy has died it runs
# nothing, sets failed=1 and returns 1: every later run would fail the same way.
# shellcheck disable=SC2034 # failed is the calling script's
run_tool() {
    local name=$1 secs=$2 rc=0
    shift 2
    if ! kill -0 "$proxy_pid" 2>/dev/null; then
        echo "$me: hotproxy is no longer running; $name not run" >&2
        failed=1
        return 1
    fi
    echo "$me: run $name" >&2
    timeout "$secs" "$tool" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" || rc=$?
    if ((rc != 0)); then
        echo "$me: run $name failed (exit $rc):" >&2
        cat "$tmp/$name.err" >&2
        failed=1
    fi
}

# cpu_ticks PID: utime+stime of PID in clock ticks; empty if it is gone.
cpu_ticks() {
    local stat rest
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    rest=${stat##*) } # the command name (field 2) may hold spaces and parentheses
    # shellcheck disable=SC2086 # split the fields on purpose
    set -- $rest
    # after the command name: state is field 1, utime 12, stime 13
    echo $((${12} + ${13}))
}

# CPU accounting in clock ticks, to show how much of the machine other work
# took while we measured: busy time of all CPUs (/proc/stat) minus what our
# own processes used (ours_ticks).
sys_busy() { awk '/^cpu /{ print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }

# Ticks of our redis-server, our hotproxy, this shell and its finished
# children (the load generator runs as one: cutime+cstime); 0 for one that is
# gone.
ours_ticks() {
    local r p s
    r=$(cpu_ticks "$redis_pid")
    p=$(cpu_ticks "$proxy_pid")
    s=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 + $14 + $15 }' /proc/$$/stat)
    echo $((${r:-0} + ${p:-0} + ${s:-0}))
}

# cpu_window_begin / cpu_window_end: bracket the measured runs; the end sets
# others, the share of the machine other work took in between.
cpu_window_begin() {
    load0=$(cut -d' ' -f1 /proc/loadavg)
    t_start=$(date +%s.%N)
    busy0=$(sys_busy) ours0=$(ours_ticks)
}
cpu_window_end() {
    local busy1 ours1 t_end
    busy1=$(sys_busy) ours1=$(ours_ticks)
    t_end=$(date +%s.%N)
    others=$(awk -v b=$((busy1 - busy0)) -v o=$((ours1 - ours0)) -v t="$clk_tck" -v w0="$t_start" -v w1="$t_end" \
        -v n="$(nproc)" 'BEGIN { x = (b - o) / t; if (x < 0) x = 0; printf "%.1f s of %.0f CPU-seconds (%.0f%%)", x, (w1 - w0) * n, 100 * x / ((w1 - w0) * n) }')
}

redis_server_version() { redis-server --version | sed -E 's/.*v=([^ ]+).*/\1/'; }
cpu_model() { sed -nE 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1; }

# report_header PROXY_ARG...: the report's first lines: the machine, the
# versions, and how busy the machine was (needs cpu_window_end first).
report_header() {
    local redis_version
    redis_version=$(redis_server_version)
    echo "== $me: $(nproc) CPU(s), $(cpu_model)"
    echo "   redis-server $redis_version; $("$bin" --version 2>&1 | head -n 1)${*:+ ($*)}"
    echo "   1-min load average before the runs: $load0; CPU taken by other processes during the runs: $others"
}

# Value of "name: value" in a tool output file.
val() { sed -n "s/^$2: //p" "$1" | head -n 1; }

# keep_outputs DIR: when DIR is set (--out), copy every run's full output there.
keep_outputs() {
    [[ -n $1 ]] || return 0
    mkdir -p "$1"
    cp "$tmp"/*.out "$1"/
    echo "$me: full outputs in $1" >&2
}

# bench_one WIDTH ROUND PIPE TARGET TEST N PID PORT [ARG...]: one
# redis-benchmark run (-t TEST, -P PIPE, -n N, $clients, $datasize, ARG...)
# on PORT, TARGET's process being PID ("" when it is redis-server itself):
# appends a row to $results (round, pipeline, target, test, n, rps, p50, p99,
# PID's CPU s, $redis_pid's CPU s) and a line to stderr (TARGET padded to
# WIDTH), or notes in $problems why there is no row.  Bounded by $run_timeout.
# shellcheck disable=SC2154 # clients, datasize, run_timeout: the script's options
bench_one() {
    local width=$1 round=$2 pipe=$3 target=$4 test=$5 n=$6 p=$7 port=$8
    shift 8
    local rb0 rb1 pb0="" pb1="" rc=0 line
    if [[ -n $p ]] && ! kill -0 "$p" 2>/dev/null; then
        echo "round $round -P $pipe $target $test: not run, $target is no longer running" >>"$problems"
        return 0
    fi
    rb0=$(cpu_ticks "$redis_pid")
    [[ -n $p ]] && pb0=$(cpu_ticks "$p")
    timeout --kill-after=5 "$run_timeout" redis-benchmark -h 127.0.0.1 -p "$port" \
        -c "$clients" -n "$n" -P "$pipe" -d "$datasize" -t "$test" --csv "$@" \
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
    local f_test f_rps f_avg f_min f_p50 f_p95 f_p99 f_max pcpu=- rcpu=-
    IFS=, read -r f_test f_rps f_avg f_min f_p50 f_p95 f_p99 f_max <<<"$line"
    : "$f_test" "$f_avg" "$f_min" "$f_p95" "$f_max"
    [[ -n $rb0 && -n $rb1 ]] && rcpu=$(awk -v a="$rb0" -v b="$rb1" -v t="$clk_tck" 'BEGIN { printf "%.3f", (b - a) / t }')
    [[ -n $pb0 && -n $pb1 ]] && pcpu=$(awk -v a="$pb0" -v b="$pb1" -v t="$clk_tck" 'BEGIN { printf "%.3f", (b - a) / t }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$pipe" "$target" "$test" "$n" \
        "$f_rps" "$f_p50" "$f_p99" "$pcpu" "$rcpu" >>"$results"
    printf "  round %d  -P %-2s  %-${width}s  %-3s  %12s req/s  p50 %s ms  p99 %s ms\n" \
        "$round" "$pipe" "$target" "$test" "$f_rps" "$f_p50" "$f_p99" >&2
}

# publish_report REPORT PROBLEMS OUT RAW RESULTS: show the report and the
# problems seen; with OUT (--out) write both there, with RAW (--raw) copy
# RESULTS there.  Fails when there were problems, so scripts notice (the
# table still shows whatever was measured).
publish_report() {
    local report=$1 problems=$2 out=$3 raw=$4 results=$5
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
        echo "$me: wrote $out" >&2
    fi
    [[ -z $raw ]] || cp "$results" "$raw"
    [[ ! -s $problems ]]
}
