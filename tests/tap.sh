# tap.sh: the shell side of tests/tap.h, sourced by tests/integration/*.sh.
#
#   . "$src/tests/tap.sh"
#   ok $? "what was checked"      # status 0 passes
#   some command | diag           # lines as TAP comments
#   port=$(free_port)             # a free loopback port
#   ...
#   echo "1..$n"; exit $((failed > 0))
n=0
failed=0

ok() { # ok STATUS DESCRIPTION
    n=$((n + 1))
    if [[ $1 == 0 ]]; then
        echo "ok $n - $2"
    else
        failed=$((failed + 1))
        echo "not ok $n - $2"
    fi
}

diag() { sed 's/^/# /'; }

# skip COUNT WHY: COUNT tests passed as skipped, with the reason.
skip() { # skip COUNT WHY
    local i
    for ((i = 0; i < $1; i++)); do
        n=$((n + 1))
        echo "ok $n # SKIP $2"
    done
}

# need_tools CMD...: the whole file skipped (1..0 # SKIP, exit 0) unless every
# CMD is on the PATH (or an executable path).
need_tools() {
    local tool
    for tool in "$@"; do
        if ! command -v "$tool" >/dev/null; then
            echo "1..0 # SKIP $tool is not installed"
            exit 0
        fi
    done
}

# watchdog SECONDS: a background process that stops this script (SIGTERM,
# after a TAP comment) once it has run SECONDS, so no single step hangs the
# file; it ends by itself with the script.  Its pid is $! afterwards.
watchdog() {
    local secs=$1 name=${0##*/} self=$$
    (
        for ((i = 0; i < secs; i++)); do
            sleep 1
            kill -0 "$self" 2>/dev/null || exit 0
        done
        echo "# watchdog: $name ran longer than $secs s, stopped"
        kill -TERM "$self"
    ) 2>/dev/null &
}

# Bind port 0 and report what the kernel chose; TAP_PYTHON picks the python.
free_port() {
    "${TAP_PYTHON:-python3}" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# launch SPEC...: start Redis servers through the harness' launcher (one
# process for all the SPECs; see tests/integration/hx_launch.c for them,
# e.g. launch "redis up" "sentinel s replicas=1"), and set the variables it
# prints (up_port, up_pid, up_log, s_master_port, ...).  Its diagnostics
# come out as TAP comments.  Status 1 when something did not start.
# The launcher runs until its stdin -- a pipe only this shell holds -- closes:
# launch_stop, or this shell's exit, however it ends.  One launch per script.
# Needs $src; the launcher is $HOTPROXY_BUILD/tests/integration/hx_launch.
launch() {
    local exe=${HOTPROXY_BUILD:-$src/build}/tests/integration/hx_launch line
    if [[ ! -x $exe ]]; then
        echo "# no launcher at $exe (build the tests first)"
        return 1
    fi
    coproc HX_LAUNCH { exec "$exe" "$@"; }
    # bash closes a coproc's fds once it has reaped it: read from a copy, so
    # a launcher that failed and exited still has its last words read
    local out
    exec {out}<&"${HX_LAUNCH[0]}"
    while IFS= read -r -u "$out" line; do
        if [[ $line == hx_ready=1 ]]; then
            exec {out}<&-
            return 0
        elif [[ $line =~ ^([a-z_][a-z0-9_]*)=(.*)$ ]]; then
            printf -v "${BASH_REMATCH[1]}" '%s' "${BASH_REMATCH[2]}"
        else
            echo "$line"
        fi
    done
    exec {out}<&-
    return 1
}

# launch_stop: stop what launch started, and wait until it has.
launch_stop() {
    [[ -n ${HX_LAUNCH_PID:-} ]] || return 0
    local pid=$HX_LAUNCH_PID
    [[ -n ${HX_LAUNCH[1]:-} ]] && exec {HX_LAUNCH[1]}>&-
    wait "$pid" 2>/dev/null
}
