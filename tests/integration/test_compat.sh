#!/usr/bin/env bash
# Real client libraries and application patterns, through hotproxy and
# directly against Redis, compared.
#
# Starts two redis-servers -- one behind every hotproxy, one the direct runs
# use, so the same keys give the same answers -- and six hotproxies on it:
#   default   (no directives)
#   pass      --requirepass secret                    loglevel debug, log file
#   user      --user alice on >pw --user bob on >...  loglevel debug, log file
#   refuse    --refuse-command flushall
#   cap       --upstream-max-pinned 2
#   tmo       --upstream-timeout 300
# then runs the programs in tests/integration/compat/ against them:
#   resp2_patterns.py   python3-redis (RESP2): caching, sessions, rate limits,
#                       Lua, locks, transactions, pub/sub, blocking commands,
#                       streams, SELECT, AUTH, CLIENT, admin commands, caps
#   resp3_raw.py        byte-level RESP3 after HELLO 3, against Redis' bytes
#   mixed_load.py       200 clients mixing pinned and shared commands
#   node_redis.mjs      node-redis v5 with RESP: 3 (HELLO 3, push pub/sub)
#   node_ioredis.mjs    ioredis with its defaults (INFO ready check)
# The programs print "ok - ..." lines; this script numbers them into one TAP
# stream, adds a line per program that ran to its end, and finally checks
# every hotproxy exits 0 on SIGTERM (a sanitizer report makes that fail).
#
# The node programs need node and npm: when node_modules is missing,
# `npm ci` installs the exact versions in compat/package-lock.json.  Without
# node the RESP3 client tests fail; they are not skipped.
#
# Environment (tests/run.sh sets these): HOTPROXY_SRC, HOTPROXY_BIN.
# COMPAT_ONLY=name[,name] runs only those programs (e.g. COMPAT_ONLY=resp3_raw).
set -uo pipefail

src=${HOTPROXY_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
bin=${HOTPROXY_BIN:-$src/build/hotproxy}
compat=$src/tests/integration/compat
py=/usr/bin/python3 # python3-redis is Debian's; a pyenv python3 would not see it
budget=${COMPAT_BUDGET:-240}
start=$SECONDS

TAP_PYTHON=$py
. "$src/tests/tap.sh"

if [[ ! -x $bin ]]; then
    echo "1..0 # SKIP hotproxy binary $bin not built"
    exit 0
fi
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    echo "1..0 # SKIP redis-server / redis-cli not installed"
    exit 0
fi

tmp=$(mktemp -d)
declare -A port=() pid=() # pid[name] is emptied once the process is reaped
cleanup() {
    local p
    for p in "${pid[@]}"; do
        [[ -n $p ]] && kill -KILL "$p" 2>/dev/null
    done
    for p in "${pid[@]}"; do
        [[ -n $p ]] && wait "$p" 2>/dev/null
    done
    launch_stop
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 129' HUP INT TERM

# Wait until something answers on the port (NOAUTH counts as an answer).
wait_answer() { # wait_answer PORT PID
    local i out
    for ((i = 0; i < 100; i++)); do
        kill -0 "$2" 2>/dev/null || return 1
        out=$(timeout 2 redis-cli -p "$1" PING 2>&1) || true
        [[ $out == PONG || $out == *NOAUTH* ]] && return 0
        sleep 0.1
    done
    return 1
}

proxies=()
start_proxy() { # start_proxy NAME [--directive value ...]
    local name=$1 p
    shift
    p=$(free_port)
    "$bin" --port "$p" --upstream "127.0.0.1:${port[up]}" --logfile "$tmp/$name.log" "$@" \
        >"$tmp/$name.out" 2>&1 &
    pid[$name]=$!
    port[$name]=$p
    proxies+=("$name")
    if ! wait_answer "$p" "${pid[$name]}"; then
        echo "Bail out! hotproxy $name ($*) did not start"
        diag <"$tmp/$name.out"
        diag <"$tmp/$name.log"
        exit 1
    fi
}

# both redis-servers through the harness' launcher (tests/tap.sh launch)
if ! launch "redis up" "redis direct"; then
    echo "Bail out! redis-server did not start"
    exit 1
fi
port[up]=$up_port
port[direct]=$direct_port
start_proxy default
start_proxy pass --requirepass secret --loglevel debug
start_proxy user --user alice on '>pw' --user bob on '>hunter2-Zq9' --loglevel debug
start_proxy refuse --refuse-command flushall
start_proxy cap --upstream-max-pinned 2
start_proxy tmo --upstream-timeout 300

export COMPAT_REDIS=${port[up]} COMPAT_DIRECT=${port[direct]} COMPAT_PROXY=${port[default]}
export COMPAT_PROXY_PASS=${port[pass]} COMPAT_PROXY_USER=${port[user]} COMPAT_PROXY_REFUSE=${port[refuse]}
export COMPAT_PROXY_CAP=${port[cap]} COMPAT_PROXY_TMO=${port[tmo]}
export COMPAT_LOG_PASS=$tmp/pass.log COMPAT_LOG_USER=$tmp/user.log
export PYTHONDONTWRITEBYTECODE=1

wanted() { [[ -z ${COMPAT_ONLY:-} || ",$COMPAT_ONLY," == *",$1,"* ]]; }

# run NAME SECONDS COMMAND...: number the program's "ok - ..." lines into this
# stream (anything else it prints becomes a diagnostic), then one line for the
# program itself: it must end by itself, with status 0, or 1 after reporting
# failures.
run() {
    local name=$1 secs=$2 line rc before_failed=$failed
    shift 2
    local left=$((budget - (SECONDS - start)))
    ((left < secs)) && secs=$left
    ((secs < 5)) && secs=5
    while IFS= read -r line; do
        if [[ $line =~ ^(not\ )?ok([[:space:]]+[0-9]+)?[[:space:]]*(-[[:space:]]*)?(.*)$ ]]; then
            ok "$([[ -z ${BASH_REMATCH[1]} ]] && echo 0 || echo 1)" "${BASH_REMATCH[4]}"
        elif [[ $line == \#* ]]; then
            echo "$line"
        else
            echo "# $line"
        fi
    done < <(cd "$compat" && exec timeout --kill-after=5 "$secs" "$@" 2>&1)
    wait $! 2>/dev/null
    rc=$?
    if ((rc == 124 || rc == 137)); then
        ok 1 "$name finished within ${secs}s"
    else
        ok "$(((rc == 0 || (rc == 1 && failed > before_failed)) ? 0 : 1))" "$name ran to its end (status $rc)"
    fi
}

wanted resp2_patterns && run resp2_patterns.py 110 "$py" resp2_patterns.py
wanted resp3_raw && run resp3_raw.py 30 "$py" resp3_raw.py
wanted mixed_load && run mixed_load.py 45 "$py" mixed_load.py

if wanted node_redis || wanted node_ioredis; then
    # RESP3 through real clients needs node: missing tools fail, loudly.
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        ok 1 "node and npm are installed (Debian packages nodejs and npm; needed for the RESP3 client tests)"
    else
        ok 0 "node $(node --version) and npm are installed"
        if [[ ! -d $compat/node_modules/redis || ! -d $compat/node_modules/ioredis ]]; then
            (cd "$compat" && timeout 120 npm ci --no-audit --no-fund) >"$tmp/npm.out" 2>&1
            rc=$?
            ok "$rc" "npm ci installed compat/package-lock.json (status $rc)"
            ((rc == 0)) || diag <"$tmp/npm.out"
        fi
        wanted node_redis && run node_redis.mjs 60 node node_redis.mjs
        wanted node_ioredis && run node_ioredis.mjs 45 node node_ioredis.mjs
    fi
fi

# Every proxy stops cleanly: status 0 on SIGTERM, no sanitizer report.
for name in "${proxies[@]}"; do
    p=${pid[$name]}
    if ! kill -0 "$p" 2>/dev/null; then
        wait "$p"
        rc=$?
        pid[$name]=
        ok 1 "hotproxy $name was still running at the end (it exited with status $rc)"
        diag <"$tmp/$name.out"
        continue
    fi
    kill -TERM "$p"
    for ((i = 0; i < 150; i++)); do
        kill -0 "$p" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$p" 2>/dev/null; then
        kill -KILL "$p"
        wait "$p" 2>/dev/null
        pid[$name]=
        ok 1 "hotproxy $name exits within 15s of SIGTERM"
        continue
    fi
    wait "$p"
    rc=$?
    pid[$name]=
    ok "$rc" "hotproxy $name exits with status 0 on SIGTERM (got $rc)"
    if ((rc != 0)) || grep -q 'Sanitizer' "$tmp/$name.out"; then
        diag <"$tmp/$name.out"
    fi
done

echo "1..$n"
((failed == 0))
