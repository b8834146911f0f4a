"""
tls_redis_py.py PORT CERTDIR [CLIENT]: redis-py (python3-redis 4.3.4) over TLS.

Connects to 127.0.0.1:PORT with ssl=True, ssl_ca_certs=CERTDIR/ca.crt and,
unless CLIENT is "none", ssl_certfile/ssl_keyfile = CERTDIR/CLIENT.crt/.key
(CLIENT defaults to "client"); the server's certificate is verified
(ssl_cert_reqs="required") and its name checked against 127.0.0.1.  Runs
PING, SET, GET of a binary value and CONFIG GET port, prints one line per step
("ok - ..." / "not ok - ...", the test_compat.sh style) and exits 0 only when
all passed.  A refused connection prints "refused: <reason>" and exits 3.
"""
import sys

import redis


def main():
    port, certdir = int(sys.argv[1]), sys.argv[2]
    client = sys.argv[3] if len(sys.argv) > 3 else "client"
    kw = dict(host="127.0.0.1", port=port, ssl=True, ssl_cert_reqs="required",
              ssl_ca_certs=certdir + "/ca.crt", ssl_check_hostname=True,
              socket_timeout=10)
    if client != "none":
        kw.update(ssl_certfile="%s/%s.crt" % (certdir, client),
                  ssl_keyfile="%s/%s.key" % (certdir, client))
    r = redis.Redis(**kw)
    try:
        pong = r.ping()
    except (redis.exceptions.ConnectionError, OSError) as e:
        print("refused: %s" % e)
        return 3
    failed = 0

    def check(cond, what):
        nonlocal failed
        print("%sok - %s" % ("" if cond else "not ", what))
        failed += not cond

    check(pong is True, "PING over TLS")
    value = bytes(range(256)) * 4
    check(r.set("tls:py:key", value) is True, "SET over TLS")
    check(r.get("tls:py:key") == value, "GET over TLS returns the binary value")
    port_conf = r.config_get("port")
    check(port_conf == {"port": "0"}, "CONFIG GET port: 0 (TLS only), got %r" % port_conf)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
