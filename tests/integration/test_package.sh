#!/usr/bin/env bash
# The installable hotproxy: --version and --test-config, `cmake --install`,
# the .deb CPack builds, and (as root, where dpkg works) that .deb installed
# with dpkg -i, started with its systemd unit's command line as the unit's
# user, answering PING through to a real redis-server, reloading on SIGHUP,
# stopped, and purged without a trace.
#
# The package is built in a build directory of its own under a temporary
# directory (-DCMAKE_INSTALL_PREFIX=/usr, as a package wants), so the build
# being tested (maybe a sanitizer one) is not what gets packaged.  systemd is
# usually not PID 1 where tests run, so the unit is not started by systemctl:
# its ExecStart line is read from the installed unit and run as User= would
# run it, with --port and --upstream appended to point it at test ports (the
# installed config is still the file it reads).  Whatever the test installed
# is purged at exit, also on failure; a hotproxy package or user that was
# there before the test makes it skip the install part rather than touch it.
#
# Environment (tests/run.sh sets these): HOTPROXY_SRC, HOTPROXY_BIN.
set -uo pipefail

src=${HOTPROXY_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
bin=${HOTPROXY_BIN:-$src/build/hotproxy}

. "$src/tests/tap.sh"

tmp=$(mktemp -d)
installed=0
hp_pid=
stop_pid() {
    if [[ -n $1 ]] && kill -0 "$1" 2>/dev/null; then
        kill -KILL "$1" 2>/dev/null
        wait "$1" 2>/dev/null
    fi
}
cleanup() {
    stop_pid "$hp_pid"
    launch_stop
    if ((installed)); then
        echo "# cleanup: purging the hotproxy package this test installed"
        timeout 60 dpkg --purge hotproxy >/dev/null 2>&1
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 143' TERM INT HUP # a timeout still purges what was installed

# Poll: wait_for SECONDS COMMAND... succeeds once COMMAND does.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    while ((SECONDS < deadline)); do
        "$@" && return 0
        sleep 0.1
    done
    "$@"
}
# A child that exited (a zombie until waited for) counts as gone.
gone() { [[ ! -e /proc/$1 || $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) == Z ]]; }
pong() { [[ $(timeout 2 redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null) == PONG ]]; }

# --- the binary: --version, --test-config, --help -----------------------------

want_version=$(sed -nE 's/^project\(hotproxy VERSION ([0-9][0-9.]*).*/\1/p' "$src/CMakeLists.txt")
out=$(timeout 10 "$bin" --version 2>&1)
status=$?
[[ $status == 0 && -n $want_version && $out == "hotproxy $want_version" ]]
ok $? "--version prints 'hotproxy $want_version' (CMake's project version) and exits 0 (status $status, '$out')"

out=$(timeout 10 "$bin" --test-config "$src/conf/hotproxy.conf" 2>&1)
status=$?
[[ $status == 0 && $out == *"configuration OK"* ]]
ok $? "--test-config conf/hotproxy.conf: exit 0, 'configuration OK' (status $status)"
[[ $status == 0 ]] || echo "$out" | diag

out=$(timeout 10 "$bin" --test-config 2>&1)
status=$?
[[ $status == 0 && $out == *"configuration OK"* ]]
ok $? "--test-config with no file checks the defaults: exit 0 (status $status)"

bad=$tmp/bad.conf
printf '# a bad file\nport 7001\nmaxclients lots\n' >"$bad"
out=$(timeout 10 "$bin" --test-config "$bad" 2>&1)
status=$?
[[ $status == 1 && $out == *"$bad:3:"* && $out == *maxclients* && $out != *"configuration OK"* ]]
ok $? "--test-config on a bad value: exit 1 naming $bad:3 and the directive (status $status)"
echo "$out" | diag

out=$(timeout 10 "$bin" --test-config "$src/conf/hotproxy.conf" --port 0 2>&1)
status=$?
[[ $status == 1 && $out == *"(command line):1:"* && $out == *port* ]]
ok $? "--test-config reads the command line after the file as a start would: --port 0 is refused (status $status)"

out=$(timeout 10 "$bin" --test-config "$src/conf/hotproxy.conf" --logfile "$tmp/no/such/dir/hotproxy.log" 2>&1)
status=$?
[[ $status == 1 && $out == *"cannot open logfile $tmp/no/such/dir/hotproxy.log"* ]]
ok $? "--test-config makes the startup checks that need no network: a log file that cannot open is refused (status $status)"
echo "$out" | diag

out=$(timeout 10 "$bin" --help 2>&1)
status=$?
[[ $status == 0 && $out == *"--test-config"* && $out == *"--version"* ]]
ok $? "--help lists --test-config and --version (status $status)"

# --- cmake --install and the .deb ----------------------------------------------

pkgb=$tmp/build-deb
log=$tmp/build.log
if timeout 120 cmake -S "$src" -B "$pkgb" -DCMAKE_INSTALL_PREFIX=/usr -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_SKIP_INSTALL_ALL_DEPENDENCY=ON >"$log" 2>&1 &&
    timeout 240 nice -n 5 cmake --build "$pkgb" -j 2 --target hotproxy >>"$log" 2>&1; then
    built=0
else
    built=1
    tail -n 30 "$log" | diag
fi
ok $built "a build directory with CMAKE_INSTALL_PREFIX=/usr builds hotproxy"

root=$tmp/root
DESTDIR=$root timeout 60 cmake --install "$pkgb" >>"$log" 2>&1
status=$?
[[ $status == 0 && -x $root/usr/bin/hotproxy ]] && cmp -s "$src/conf/hotproxy.conf" "$root/etc/hotproxy/hotproxy.conf" &&
    [[ -f $root/usr/lib/systemd/system/hotproxy.service ]]
ok $? "cmake --install (prefix /usr) puts usr/bin/hotproxy, etc/hotproxy/hotproxy.conf, usr/lib/systemd/system/hotproxy.service"
(cd "$root" && find . -type f | sort) | diag

unit=$root/usr/lib/systemd/system/hotproxy.service
exec_start=$(sed -n 's/^ExecStart=//p' "$unit" 2>/dev/null)
[[ $exec_start == "/usr/bin/hotproxy /etc/hotproxy/hotproxy.conf" ]]
ok $? "the unit runs '/usr/bin/hotproxy /etc/hotproxy/hotproxy.conf' (ExecStart=$exec_start)"
missing=()
for line in Type=exec User=hotproxy Group=hotproxy NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes \
    PrivateTmp=yes Restart=on-failure LimitNOFILE=65536 'ExecReload=/bin/kill -HUP $MAINPID' \
    'WantedBy=multi-user.target'; do
    grep -qxF "$line" "$unit" 2>/dev/null || missing+=("$line")
done
((${#missing[@]} == 0))
ok $? "the unit is hardened, restarts on failure, raises LimitNOFILE, reloads with SIGHUP (missing: ${missing[*]:-none})"

(cd "$pkgb" && timeout 120 cpack -G DEB >>"$log" 2>&1)
debs=("$pkgb"/hotproxy_*.deb)
deb=${debs[0]}
[[ ${#debs[@]} == 1 && -f $deb ]]
ok $? "cpack -G DEB builds one .deb ($(basename "$deb"))"
[[ -f $deb ]] || tail -n 30 "$log" | diag

contents=$(dpkg-deb -c "$deb" 2>&1)
wantfiles=0
for f in ./usr/bin/hotproxy ./etc/hotproxy/hotproxy.conf ./usr/lib/systemd/system/hotproxy.service; do
    grep -qE " $f\$" <<<"$contents" || { wantfiles=1; echo "missing $f" | diag; }
done
ok $wantfiles "the .deb holds /usr/bin/hotproxy, /etc/hotproxy/hotproxy.conf and the unit"

depends=$(dpkg-deb -f "$deb" Depends 2>&1)
dep_ok=0
for d in libc6 libev4 libhiredis0.14 adduser; do
    [[ ", $depends," == *", $d "* || ", $depends," == *", $d,"* ]] || dep_ok=1
done
ok $dep_ok "Depends names libc6, libev4, libhiredis0.14 and adduser ($depends)"

ctrl=$tmp/control
mkdir -p "$ctrl" && dpkg-deb -e "$deb" "$ctrl" 2>/dev/null
[[ $(cat "$ctrl/conffiles" 2>/dev/null) == /etc/hotproxy/hotproxy.conf ]]
ok $? "conffiles lists /etc/hotproxy/hotproxy.conf"
[[ -x $ctrl/postinst && -x $ctrl/prerm && -x $ctrl/postrm ]] &&
    grep -q 'adduser --system' "$ctrl/postinst" && sh -n "$ctrl/postinst" && sh -n "$ctrl/prerm" && sh -n "$ctrl/postrm"
ok $? "postinst (adduser --system), prerm and postrm are there, executable, and parse"

# --- installed with dpkg -i, started as the unit would, purged ----------------------

ninstall=12
why=
# One machine, one installed hotproxy: a second run of this test (another
# checkout, the other build's pass) waits for the first to purge.
lock=/tmp/hotproxy-test-package.lock
if ((EUID != 0)); then
    why="not root: dpkg -i needs root"
elif ! exec 9>>"$lock" || ! flock -w 240 9; then
    why="another run of this test holds $lock"
elif ! command -v dpkg >/dev/null || ! dpkg --audit >/dev/null 2>&1; then
    why="dpkg is not usable here"
elif [[ ! -f $deb ]]; then
    why="no .deb was built"
elif dpkg-query -W -f='${db:Status-Status}' hotproxy 2>/dev/null | grep -qv '^not-installed$'; then
    why="a hotproxy package is already installed here; not touching it"
elif getent passwd hotproxy >/dev/null || getent group hotproxy >/dev/null; then
    why="a hotproxy user or group exists already; purge would remove it"
elif ! command -v redis-server >/dev/null; then
    why="redis-server is not installed"
fi
if [[ -n $why ]]; then
    skip $ninstall "$why"
    echo "1..$n"
    exit $((failed > 0))
fi

installed=1 # from here the trap purges, whatever happens
out=$(timeout 120 dpkg -i "$deb" 2>&1)
ok $? "dpkg -i installs the .deb"
echo "$out" | diag

user_line=$(getent passwd hotproxy)
[[ -n $user_line && $(cut -d: -f7 <<<"$user_line") == */nologin* ]]
ok $? "postinst created the hotproxy system user, without a login shell ($user_line)"
perms=$(stat -c '%U:%G %a' /etc/hotproxy/hotproxy.conf 2>&1)
[[ $perms == "root:hotproxy 640" ]]
ok $? "the config, which can hold passwords, is root:hotproxy 0640 ($perms)"

iunit=$(dpkg -L hotproxy | grep '/systemd/system/hotproxy\.service$' | head -n 1)
if command -v systemd-analyze >/dev/null; then
    out=$(timeout 60 systemd-analyze verify "$iunit" 2>&1)
    status=$?
    [[ $status == 0 && -z $(grep -i hotproxy <<<"$out") ]]
    ok $? "systemd-analyze verify accepts the installed unit $iunit (status $status)"
    [[ -n $out ]] && echo "$out" | diag
else
    skip 1 "systemd-analyze is not installed"
fi

read -ra cmd <<<"$(sed -n 's/^ExecStart=//p' "$iunit")"
unit_user=$(sed -n 's/^User=//p' "$iunit")
[[ ${#cmd[@]} -ge 1 && -x ${cmd[0]} && -n $unit_user ]]
ok $? "the installed unit's ExecStart (${cmd[*]}) names an installed executable, User=$unit_user"

launch "redis redis" && rport=$redis_port && wait_for 20 pong "$rport"
ok $? "redis-server answers on 127.0.0.1:$rport"

# As the unit runs it: its user and group, no new privileges, its command line.
pport=$(free_port)
setpriv --reuid="$unit_user" --regid="$unit_user" --init-groups --no-new-privs -- \
    "${cmd[@]}" --port "$pport" --upstream "127.0.0.1:$rport" >"$tmp/hotproxy.log" 2>&1 &
hp_pid=$!
wait_for 20 pong "$pport"
ok $? "the installed hotproxy, started with the unit's command line as $unit_user, answers PING on $pport"
if ! pong "$pport"; then diag <"$tmp/hotproxy.log"; fi
[[ $(timeout 5 redis-cli -p "$pport" set pkg:k v1 2>&1) == OK && $(timeout 5 redis-cli -p "$rport" get pkg:k 2>&1) == v1 ]]
ok $? "a SET through it reaches the redis-server"
[[ $(ps -o user= -p "$hp_pid" 2>/dev/null | tr -d ' ') == "$unit_user" ]]
ok $? "it runs as $unit_user"

kill -HUP "$hp_pid" 2>/dev/null
wait_for 20 grep -q 'Config reloaded from /etc/hotproxy/hotproxy.conf' "$tmp/hotproxy.log" && pong "$pport"
ok $? "SIGHUP (the unit's ExecReload) reloads the installed config as $unit_user, and it still answers"

kill -TERM "$hp_pid" 2>/dev/null
if wait_for 30 gone "$hp_pid"; then
    wait "$hp_pid"
    status=$?
    hp_pid=
else
    status="still running"
fi
[[ $status == 0 ]]
ok $? "SIGTERM stops it with status 0 (status $status)"

out=$(timeout 120 dpkg --purge hotproxy 2>&1)
status=$?
((status == 0)) && installed=0
left=()
for f in /usr/bin/hotproxy /etc/hotproxy "$iunit"; do [[ -e $f ]] && left+=("$f"); done
getent passwd hotproxy >/dev/null && left+=("user hotproxy")
getent group hotproxy >/dev/null && left+=("group hotproxy")
dpkg-statoverride --list /etc/hotproxy/hotproxy.conf >/dev/null 2>&1 && left+=("statoverride")
[[ $status == 0 && ${#left[@]} == 0 ]]
ok $? "dpkg --purge removes the binary, the config, the unit, the user and group (left: ${left[*]:-nothing})"
echo "$out" | diag

echo "1..$n"
exit $((failed > 0))
