#!/usr/bin/env bash
# Run hotproxy locally: install deps, build build/, make sure a Redis answers on
# 127.0.0.1:6379 (starting a throwaway one if not), then run the proxy in the
# foreground with conf/hotproxy.conf.  Extra arguments go to hotproxy:
#
#   conf/start.sh                       # listens on 127.0.0.1:6380
#   conf/start.sh --port 7000 --loglevel verbose
#   conf/start.sh --upstream 10.0.0.5:6379   # no local Redis is started
#
# The local Redis keeps no data (no RDB, no AOF) and lives in /tmp; stop it
# with `redis-cli -p 6379 shutdown nosave`.
set -euo pipefail

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$src"

bash .ci/deps

cfglog=$(mktemp)
if ! timeout 600 cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$cfglog" 2>&1; then
    cat "$cfglog" >&2
    rm -f "$cfglog"
    echo "start.sh: cmake configure failed" >&2
    exit 1
fi
rm -f "$cfglog"
timeout 900 cmake --build build -j "$(nproc 2>/dev/null || echo 2)"

# The upstream hotproxy will use: the conf's, unless the command line says
# otherwise.  Only the documented local Redis is ours to start.
upstream=127.0.0.1:6379
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    if [[ ${args[i]} == --upstream && $((i + 1)) -lt ${#args[@]} ]]; then
        upstream=${args[i + 1]}
    fi
done

case "$upstream" in
127.0.0.1:6379 | localhost:6379)
    if ! timeout 3 redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
        dir=/tmp/hotproxy-local-redis
        mkdir -p "$dir"
        echo "start.sh: nothing answers on 127.0.0.1:6379; starting redis-server in $dir" >&2
        timeout 10 redis-server --bind 127.0.0.1 --port 6379 --daemonize yes \
            --dir "$dir" --save '' --appendonly no \
            --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
        for _ in $(seq 50); do
            timeout 1 redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG && break
            sleep 0.1
        done
        if ! timeout 3 redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
            echo "start.sh: redis-server did not come up; see $dir/redis.log" >&2
            tail -n 20 "$dir/redis.log" >&2 || true
            exit 1
        fi
    fi
    ;;
*)
    echo "start.sh: upstream is $upstream; not starting a local Redis" >&2
    ;;
esac

exec "$src/build/hotproxy" "$src/conf/hotproxy.conf" "$@"
