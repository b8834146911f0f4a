#!/usr/bin/env bash
# shellcheck disable=SC2154 # up_port, c_master_ports, hx_tls_dir: set by launch
# TLS servers for shell tests: tests/tap.sh `launch --tls` starts them
# through the harness (certificates by tests/tls-certs.sh in $hx_tls_dir),
# and redis-cli --tls and Python's redis (compat/tls_redis_py.py) reach them.
# The pieces a shell TLS test of hotproxy starts from; no hotproxy here.
#
#   launch --tls "redis up" "cluster c"     TLS-only, tls-auth-clients yes
#   redis-cli -p "$up_port" "${tls_cli[@]}" PING
set -uo pipefail

src=${HOTPROXY_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
. "$src/tests/tap.sh"

for tool in redis-server redis-cli openssl; do
    if ! command -v "$tool" >/dev/null; then
        echo "1..0 # SKIP $tool is not installed"
        exit 0
    fi
done

if ! launch --tls "redis up" "cluster c"; then
    echo "not ok 1 - launch --tls starts a TLS redis-server and a TLS cluster"
    echo "1..1"
    exit 1
fi
ok 0 "launch --tls starts a TLS redis-server and a TLS cluster"
tls_cli=(--tls --cacert "$hx_tls_dir/ca.crt" --cert "$hx_tls_dir/client.crt" --key "$hx_tls_dir/client.key")

[[ $(timeout 20 redis-cli -p "$up_port" "${tls_cli[@]}" PING 2>&1) == PONG ]]
ok $? "redis-cli --tls with the client certificate: PONG"
out=$(timeout 20 redis-cli -p "$up_port" --tls --cacert "$hx_tls_dir/ca.crt" PING 2>&1)
[[ $out != *PONG* ]]
ok $? "redis-cli --tls without a client certificate: refused ($out)"
[[ $(timeout 20 redis-cli -p "$up_port" CONFIG GET port 2>&1) != *port* ]]
ok $? "no plain protocol on the tls-port"

read -r c1 _ <<<"$c_master_ports"
for i in 1 2 3 4 5 6 7 8 9 10; do
    r=$(timeout 20 redis-cli -c -p "$c1" "${tls_cli[@]}" SET "k$i" "v$i" 2>&1)
    [[ $r == OK ]] || break
done
[[ $r == OK ]]
ok $? "redis-cli -c --tls: SETs across the TLS cluster's slots"

py=/usr/bin/python3
if [[ -x $py ]] && "$py" -c 'import redis' 2>/dev/null; then
    out=$(timeout 30 "$py" "$src/tests/integration/compat/tls_redis_py.py" "$up_port" "$hx_tls_dir" 2>&1)
    ok $? "redis-py with ssl=True and the test certificates"
    [[ $out == *"not ok"* || -z $out ]] && diag <<<"$out"
else
    skip 1 "python3-redis is not installed"
fi

launch_stop
echo "1..$n"
exit $((failed > 0))
