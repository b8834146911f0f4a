#!/usr/bin/env bash
# tls-certs.sh DIR: the certificates the TLS tests and bench/tls.sh use,
# made with the openssl CLI into DIR (created if missing; files rewritten
# on every run, so it is idempotent).  EC P-256 keys: the whole set takes
# well under a second.
#
#   ca.crt ca.key              the CA every good certificate is signed by
#   server.crt server.key      SAN DNS:localhost, IP:127.0.0.1
#   client.crt client.key      CN hotproxy-test-client, clientAuth
#   expired.crt expired.key    server cert by the CA, valid only in 2020
#   other-ca.crt other-ca.key  a second, unrelated CA
#   wrong.crt wrong.key        server cert (localhost, 127.0.0.1) by other-ca
#   wrongname.crt wrongname.key server cert by the CA, SAN DNS:not-this-host only
#
# OpenSSL 3.0's `x509 -req` has no -not_before/-not_after (3.4 added them),
# so the expired one is signed by `openssl ca`, whose -startdate/-enddate
# take any dates.  The tests' own harness calls this script too (harness.c
# hx_tls_certs): there is one recipe.
set -euo pipefail
dir=${1:?usage: tls-certs.sh DIR}
mkdir -p "$dir"
cd "$dir"

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# ca NAME CN: a self-signed CA
ca() {
    key "$1.key"
    openssl req -x509 -new -key "$1.key" -subj "/O=hotproxy tests/CN=$2" -days 3650 -sha256 \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
        -out "$1.crt" 2>/dev/null
}

# leaf NAME CA CN EXT: a key and a certificate signed by CA, with EXT
# (an x509v3 extension section's body) as its extensions
leaf() {
    key "$1.key"
    openssl req -new -key "$1.key" -subj "/O=hotproxy tests/CN=$3" -out "$1.csr" 2>/dev/null
    printf '%s\n' "$4" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -CAcreateserial -days 3650 -sha256 \
        -extfile "$1.ext" -out "$1.crt" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}

server_ext='basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:localhost,IP:127.0.0.1'

ca ca "hotproxy test CA"
ca other-ca "some other CA"
leaf server ca localhost "$server_ext"
leaf client ca hotproxy-test-client 'basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth'
leaf wrong other-ca localhost "$server_ext"
leaf wrongname ca not-this-host 'basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:not-this-host'

# expired: `openssl ca` with explicit dates, from a throwaway database
key expired.key
openssl req -new -key expired.key -subj "/O=hotproxy tests/CN=localhost" -out expired.csr 2>/dev/null
rm -rf expired-ca.d && mkdir expired-ca.d && : >expired-ca.d/index.txt
cat >expired-ca.d/ca.cnf <<CNF
[ca]
default_ca = this
[this]
database = expired-ca.d/index.txt
new_certs_dir = expired-ca.d
serial = expired-ca.d/serial
default_md = sha256
policy = any
copy_extensions = none
x509_extensions = ext
[any]
commonName = supplied
[ext]
$server_ext
CNF
echo 01 >expired-ca.d/serial
openssl ca -batch -notext -config expired-ca.d/ca.cnf -cert ca.crt -keyfile ca.key -in expired.csr \
    -startdate 20200101000000Z -enddate 20200201000000Z -out expired.crt 2>/dev/null
rm -rf expired-ca.d expired.csr ca.srl other-ca.srl
chmod 600 ./*.key
