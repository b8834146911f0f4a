#!/usr/bin/env bash
# conf/hotproxy.conf documents px_config.c's directive table, and hotproxy
# starts from it.
#
# The table in proxy/px_config.c is the one place directives are declared;
# this test keeps the shipped config file honest against it: every directive in
# the table appears in the file exactly once with the table's default (or, for
# a repeatable one with no default, as a commented example), nothing else does, the file really starts a proxy that answers PING (with no upstream
# at all), SIGTERM stops it with status 0, and an unknown directive stops
# startup with status 1 naming the file, the line and the directive.
#
# Environment (tests/run.sh sets these): HOTPROXY_SRC, HOTPROXY_BIN.
set -uo pipefail

src=${HOTPROXY_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
bin=${HOTPROXY_BIN:-$src/build/hotproxy}
table_c=$src/proxy/px_config.c
conf=$src/conf/hotproxy.conf

. "$src/tests/tap.sh"

tmp=$(mktemp -d)
pid=
cleanup() {
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

# --- the table against the file ----------------------------------------------

# Table rows look like: {"name", CT_TYPE, min, max, "default", OFF(field), enums},
# A NULL default marks a directive that may be repeated and is unset by
# default (user, refuse-command): the file shows it as a commented example.
declare -A def=()
while IFS=$'\t' read -r name value; do
    [[ $value == \"*\" ]] && value=${value:1:${#value}-2}
    def[$name]=$value
done < <(sed -nE 's/^[[:space:]]*\{"([a-z0-9-]+)",[[:space:]]*CT_[A-Z]+,[^,]+,[^,]+,[[:space:]]*("([^"]*)"|NULL),.*$/\1\t\2/p' "$table_c")

ok "$(((${#def[@]} > 0) ? 0 : 1))" "found ${#def[@]} directives in proxy/px_config.c's table"

# Directive lines of the conf: first word and the rest, quotes around the
# value removed (logfile "" -> empty).  Commented examples ("# user alice on")
# are collected apart.
declare -A confval=() confcount=() example=()
while read -r name rest; do
    [[ -z $name ]] && continue
    if [[ $name == "#" ]]; then
        read -r name _ <<<"$rest"
        [[ -n $name && -n ${def[$name]+set} ]] && example[$name]=1
        continue
    fi
    [[ $name == \#* ]] && continue
    rest=${rest%$'\r'}
    if [[ $rest =~ ^\"(.*)\"$ || $rest =~ ^\'(.*)\'$ ]]; then rest=${BASH_REMATCH[1]}; fi
    confval[$name]=$rest
    confcount[$name]=$((${confcount[$name]:-0} + 1))
done <"$conf"

# The comment paragraph a directive sits in: the lines above the line that
# sets it (or, failing that, its commented example) up to a blank line.
paragraph() {
    local prefix
    for prefix in "" "# "; do
        awk -v want="$prefix$1" '
            /^$/ { para = ""; next }
            $0 == want || index($0, want " ") == 1 { printf "%s", para; found = 1; exit }
            { para = para $0 "\n" }
            END { exit !found }' "$conf" && return 0
    done
    return 1
}

for name in $(printf '%s\n' "${!def[@]}" | sort); do
    if [[ ${def[$name]} == NULL ]]; then
        [[ -n ${example[$name]:-} ]]
        ok $? "$name (repeatable, unset by default) has a commented example in conf/hotproxy.conf"
        [[ -z ${confcount[$name]:-} ]]
        ok $? "$name is not set by the shipped file"
        paragraph "$name" | grep -q '^# Default: none'
        ok $? "$name has a comment paragraph saying it has no default"
        continue
    fi
    if [[ -z ${confcount[$name]:-} ]]; then
        ok 1 "$name is documented in conf/hotproxy.conf"
        continue
    fi
    ok 0 "$name is documented in conf/hotproxy.conf"
    ok "$(((confcount[$name] == 1) ? 0 : 1))" "$name is set once (${confcount[$name]} times)"
    [[ ${confval[$name]} == "${def[$name]}" ]]
    ok $? "$name is shown with its default '${def[$name]}' (file has '${confval[$name]}')"
    paragraph "$name" | grep -q '^# Default:'
    ok $? "$name has a comment paragraph stating its default"
done

for name in $(printf '%s\n' "${!confval[@]}" | sort); do
    [[ -n ${def[$name]+set} ]]
    ok $? "conf/hotproxy.conf directive '$name' is in px_config.c's table"
done

grep -q -- '--name value' "$conf"
ok $? "conf/hotproxy.conf says directives can be given as --name value"

# --- the file starts a proxy ---------------------------------------------------

if [[ ! -x $bin ]]; then
    skip 7 "no hotproxy binary at $bin"
elif ! command -v redis-cli >/dev/null; then
    skip 7 "redis-cli not installed"
else
    port=$(free_port)
    noup=$(free_port) # nothing listens here: the proxy has no upstream
    "$bin" "$conf" --port "$port" --upstream "127.0.0.1:$noup" >"$tmp/proxy.log" 2>&1 &
    pid=$!
    reply=
    for _ in $(seq 100); do
        reply=$(timeout 2 redis-cli -h 127.0.0.1 -p "$port" PING 2>/dev/null) && [[ $reply == PONG ]] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    [[ $reply == PONG ]]
    ok $? "hotproxy conf/hotproxy.conf --port $port answers PING with PONG, no upstream (got '$reply')"

    kill -0 "$pid" 2>/dev/null
    ok $? "hotproxy is still running after PING"

    kill -TERM "$pid" 2>/dev/null
    status=
    for _ in $(seq 150); do
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid"
            status=$?
            break
        fi
        sleep 0.1
    done
    if [[ -z $status ]]; then
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        status=timeout
    fi
    pid=
    [[ $status == 0 ]]
    ok $? "SIGTERM stops it with exit status 0 (got $status)"
    [[ $status == 0 ]] || diag <"$tmp/proxy.log"

    # The commented examples are real directives: uncommented, they load.
    examples=$tmp/examples.conf
    cp "$conf" "$examples"
    for name in "${!example[@]}"; do
        grep -E "^# $name " "$conf" | sed 's/^# //' >>"$examples"
    done
    port=$(free_port)
    "$bin" "$examples" --port "$port" --upstream "127.0.0.1:$noup" >"$tmp/examples.log" 2>&1 &
    pid=$!
    reply=
    for _ in $(seq 100); do
        reply=$(timeout 2 redis-cli -h 127.0.0.1 -p "$port" PING 2>&1) && [[ -n $reply ]] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    [[ $reply == *NOAUTH* ]]
    ok $? "with the commented examples uncommented it starts, and asks for AUTH (got '$reply')"
    [[ $reply == *NOAUTH* ]] || diag <"$tmp/examples.log"
    if [[ -n ${example[user]:-} ]]; then
        read -r _ _ uname _ upass _ < <(grep -E '^# user [^ ]+ on >' "$conf" | head -n 1)
        reply=$(timeout 2 redis-cli -h 127.0.0.1 -p "$port" --no-auth-warning --user "$uname" --pass "${upass#>}" PING 2>&1)
        [[ $reply == PONG ]]
        ok $? "the example user '$uname' can log in and PING (got '$reply')"
    else
        skip 1 "no example user in conf/hotproxy.conf"
    fi
    kill -TERM "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    pid=

    bad=$tmp/bad.conf
    printf '# a comment\nport 6380\nno-such-directive 42\nloglevel notice\n' >"$bad"
    out=$(timeout 10 "$bin" "$bad" --port "$(free_port)" 2>&1)
    status=$?
    [[ $status == 1 ]]
    ok $? "an unknown directive makes startup exit 1 (got $status)"
    [[ $out == *"$bad:3"* && $out == *no-such-directive* ]]
    ok $? "the error names the file, line 3 and the directive"
    [[ $status == 1 && $out == *"$bad:3"* && $out == *no-such-directive* ]] || diag <<<"$out"
fi

echo "1..$n"
((failed == 0))
