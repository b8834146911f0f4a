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

# Bind port 0 and report what the kernel chose; TAP_PYTHON picks the python.
free_port() {
    "${TAP_PYTHON:-python3}" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
