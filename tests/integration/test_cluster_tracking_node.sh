#!/usr/bin/env bash
# node-redis v5's client-side cache (RESP3, CLIENT TRACKING) through hotproxy
# in front of a Redis Cluster of 3 masters: compat/node_redis_cluster.mjs
# caches keys of every master and must see every other client's write.
# Needs node and compat/node_modules (test_compat.sh's `npm ci` installs it;
# this test runs it too when missing).  Environment: HOTPROXY_SRC,
# HOTPROXY_BIN, HOTPROXY_BUILD (tests/run.sh sets them).
set -uo pipefail

src=${HOTPROXY_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
bin=${HOTPROXY_BIN:-$src/build/hotproxy}
compat=$src/tests/integration/compat
. "$src/tests/tap.sh"

if [[ ! -x $bin ]]; then
    echo "1..0 # SKIP hotproxy binary $bin not built"
    exit 0
fi
tmp=$(mktemp -d)
hp=
cleanup() {
    [[ -n $hp ]] && kill -KILL "$hp" 2>/dev/null && wait "$hp" 2>/dev/null
    launch_stop
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 129' HUP INT TERM

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    ok 1 "node and npm are installed (needed for node-redis)"
    echo "1..$n"
    exit 1
fi
if [[ ! -d $compat/node_modules/redis ]]; then
    (cd "$compat" && timeout 120 npm ci --no-audit --no-fund) >"$tmp/npm.out" 2>&1
    rc=$?
    ok "$rc" "npm ci installed compat/package-lock.json (status $rc)"
    ((rc == 0)) || { diag <"$tmp/npm.out"; echo "1..$n"; exit 1; }
fi

if ! launch "cluster cl masters=3"; then
    echo "Bail out! the cluster did not start"
    exit 1
fi
ok 0 "a cluster of 3 masters ($cl_master_ports)"
first=${cl_master_ports%% *}
port=$(free_port)
"$bin" --port "$port" --topology cluster --upstream "127.0.0.1:$first" --logfile "$tmp/hp.log" >"$tmp/hp.out" 2>&1 &
hp=$!
known=
for ((i = 0; i < 200; i++)); do
    known=$(timeout 2 redis-cli -p "$port" INFO hotproxy_upstream 2>/dev/null | tr -d '\r' |
        sed -n 's/^hotproxy_cluster_slots_known://p')
    [[ $known == 16384 ]] && break
    sleep 0.1
done
ok "$([[ $known == 16384 ]] && echo 0 || echo 1)" "hotproxy (topology cluster) knows the 16384 slots"

while IFS= read -r line; do
    if [[ $line =~ ^(not\ )?ok[[:space:]]*(-[[:space:]]*)?(.*)$ ]]; then
        ok "$([[ -z ${BASH_REMATCH[1]} ]] && echo 0 || echo 1)" "${BASH_REMATCH[3]}"
    elif [[ $line == \#* ]]; then
        echo "$line"
    else
        echo "# $line"
    fi
done < <(cd "$compat" && CLUSTER_PROXY=$port CLUSTER_MASTERS=$cl_master_ports exec timeout --kill-after=5 100 node node_redis_cluster.mjs 2>&1)
wait $! 2>/dev/null
rc=$?
ok "$rc" "node_redis_cluster.mjs ran to its end with no failure (status $rc)"

kill -TERM "$hp"
for ((i = 0; i < 150; i++)); do
    kill -0 "$hp" 2>/dev/null || break
    sleep 0.1
done
wait "$hp"
rc=$?
hp=
ok "$rc" "hotproxy exits with status 0 on SIGTERM (got $rc)"
((rc != 0)) && diag <"$tmp/hp.out"
echo "1..$n"
exit $((failed > 0))
