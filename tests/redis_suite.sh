#!/usr/bin/env bash
# Runs Redis' own Tcl test suite in external mode through hotproxy and, for
# comparison, straight at the same redis-server, then prints per unit how many
# tests passed and failed each way and which tests fail only through hotproxy.
#
# A manual / release check, not part of tests/run.sh: it takes minutes and needs
# an unpacked Redis source tree (the version of the redis-server on PATH; the
# project's reference is 7.0.15). It downloads nothing.
#
#   tests/redis_suite.sh /path/to/redis-7.0.15 [options] [unit ...]
#     --hotproxy PATH     hotproxy binary (default: build/hotproxy)
#     --l1 yes|no         hotproxy's L1 (default yes)
#     --no-direct         skip the run straight at redis-server
#     --out DIR           keep logs here (default: a fresh directory under /tmp)
#     --runtest-arg ARG   passed to runtest (repeatable), e.g. --runtest-arg --tags
#     --hotproxy-arg ARG  passed to hotproxy (repeatable); e.g. the L1 at its most
#                         eager: --hotproxy-arg --l1-hot-threshold --hotproxy-arg 0
#   units default to the list below; a unit is a path under tests/ without .tcl.
#
# Each side gets its own fresh redis-server (--enable-debug-command yes, no
# persistence) on a free port; hotproxy gets a free port in front of it.
set -u

DEFAULT_UNITS="unit/type/string unit/type/incr unit/type/list unit/type/hash
unit/type/set unit/type/zset unit/type/stream unit/keyspace unit/expire
unit/multi unit/pubsub unit/pubsubshard unit/scripting unit/functions
unit/protocol unit/tracking unit/introspection unit/auth unit/acl
unit/querybuf unit/limits"

here=$(cd "$(dirname "$0")/.." && pwd)
src=${1:-}
if [ -z "$src" ] || [ ! -x "$src/runtest" ]; then
    echo "usage: $0 /path/to/unpacked/redis-source [--l1 yes|no] [--no-direct] [unit ...]" >&2
    exit 2
fi
shift
hotproxy=$here/build/hotproxy
l1=yes
direct=1
out=
extra=()
hpextra=()
units=()
while [ $# -gt 0 ]; do
    case $1 in
        --hotproxy) hotproxy=$2; shift 2 ;;
        --l1) l1=$2; shift 2 ;;
        --no-direct) direct=0; shift ;;
        --out) out=$2; shift 2 ;;
        --runtest-arg) extra+=("$2"); shift 2 ;;
        --hotproxy-arg) hpextra+=("$2"); shift 2 ;;
        *) units+=("$1"); shift ;;
    esac
done
[ ${#units[@]} -eq 0 ] && read -r -a units <<<"$(echo $DEFAULT_UNITS)"
[ -x "$hotproxy" ] || { echo "no hotproxy binary at $hotproxy" >&2; exit 2; }
command -v redis-server >/dev/null || { echo "redis-server not on PATH" >&2; exit 2; }
command -v tclsh >/dev/null || { echo "tclsh not on PATH" >&2; exit 2; }
[ -n "$out" ] || out=$(mktemp -d /tmp/redis_suite.XXXXXX)
mkdir -p "$out"

# runtest writes into tests/tmp, so work on a copy of the source tree.
work=$out/src
rm -rf "$work"
cp -r "$src" "$work"

pids=()
stop_all() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do
        # DEBUG RELOAD behind a huge rdb-key-save-delay (left set by a test
        # that fails in external mode) keeps redis-server from ever exiting.
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$p" 2>/dev/null || break; sleep 0.5; done
        kill -9 "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    pids=()
}
trap stop_all EXIT

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 20000))
        port_free "$p" && port_free $((p + 10000)) && { echo "$p"; return; }
    done
}
wait_port() {  # port, deadline in s
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        port_free "$1" || return 0
        sleep 0.1
    done
    return 1
}

start_redis() {  # log name -> sets rport
    local try pid
    for try in 1 2 3 4 5; do  # another process may take the port first
        rport=$(free_port)
        redis-server --port "$rport" --bind 127.0.0.1 --enable-debug-command yes \
            --save '' --appendonly no --daemonize no \
            --logfile "$out/redis.$1.log" --dir "$out" --dbfilename "dump.$1.rdb" &
        pid=$!
        if wait_port "$rport" 20 && kill -0 "$pid" 2>/dev/null; then
            pids+=("$pid")
            return
        fi
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    echo "redis-server did not start" >&2
    exit 1
}

start_hotproxy() {  # log name -> sets hport
    local try pid
    for try in 1 2 3 4 5; do
        hport=$(free_port)
        "$hotproxy" --port "$hport" --upstream "127.0.0.1:$rport" --l1 "$l1" \
            --logfile "$out/hotproxy.$1.log" "${hpextra[@]}" &
        pid=$!
        if wait_port "$hport" 20 && kill -0 "$pid" 2>/dev/null; then
            pids+=("$pid")
            return
        fi
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    echo "hotproxy did not start" >&2
    exit 1
}

# Every unit gets fresh servers: a unit that fails in external mode can leave
# Redis configured in ways that break the next one.
run_unit() {  # side, unit
    local side=$1 u=$2 name log port
    name=$side.$(echo "$u" | tr / _)
    log=$out/$name.log
    start_redis "$name"
    port=$rport
    if [ "$side" = proxy ]; then
        start_hotproxy "$name"
        port=$hport
    fi
    # --baseport: the test server's own port, apart from any other run's; it
    # looks for a free one below it, which another run may take first: retry
    local try
    for try in 1 2 3; do
        (cd "$work" && TERM=dumb timeout 1800 nice -n 5 ./runtest --host 127.0.0.1 --port "$port" \
            --single "$u" --clients 1 --timeout 120 --durable --baseport "$(free_port)" \
            "${extra[@]}") >"$log" 2>&1
        grep -q "couldn't open socket: address already in use" "$log" || break
    done
    local l1=""
    if [ "$side" = proxy ] && command -v redis-cli >/dev/null; then
        # how much the L1 served: a unit it never answered says nothing about it
        redis-cli -p "$port" info hotproxy_cache >"$out/info.$name.txt" 2>&1
        l1=$(grep -E '^hotproxy_l1_(hits|misses):' "$out/info.$name.txt" | tr -d '\r' | tr '\n' ' ')
    fi
    echo "$side $u: $(grep -c '^\[ok\]' "$log") ok, $(grep -c '^\[err\]' "$log") err," \
        "$(grep -c '^\[exception\]' "$log") exception${l1:+ ($l1)}"
    stop_all
}

for u in "${units[@]}"; do
    run_unit proxy "$u"
    [ $direct = 1 ] && run_unit direct "$u"
done

echo
echo "logs in $out"
printf '%-24s %8s %8s %8s %8s\n' unit proxy_ok proxy_err direct_ok direct_err
for u in "${units[@]}"; do
    f=$(echo "$u" | tr / _).log
    pok=$(grep -c '^\[ok\]' "$out/proxy.$f")
    perr=$(grep -c '^\[err\]\|^\[exception\]' "$out/proxy.$f")
    dok=-; derr=-
    if [ $direct = 1 ]; then
        dok=$(grep -c '^\[ok\]' "$out/direct.$f")
        derr=$(grep -c '^\[err\]\|^\[exception\]' "$out/direct.$f")
    fi
    printf '%-24s %8s %8s %8s %8s\n' "$u" "$pok" "$perr" "$dok" "$derr"
done
echo
echo "failing through hotproxy only:"
for u in "${units[@]}"; do
    f=$(echo "$u" | tr / _).log
    grep -h '^\[err\]\|^\[exception\]' "$out/proxy.$f" | sed 's/ in tests\/.*//' | sort >"$out/p.tmp"
    if [ $direct = 1 ]; then
        grep -h '^\[err\]\|^\[exception\]' "$out/direct.$f" | sed 's/ in tests\/.*//' | sort >"$out/d.tmp"
    else
        : >"$out/d.tmp"
    fi
    comm -23 "$out/p.tmp" "$out/d.tmp" | sed "s|^|  $u |"
done
rm -f "$out/p.tmp" "$out/d.tmp"
