# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# Escape vector: domain fronting. The TLS server name says one host, the
# Host header another, hoping the proxy checks one and routes by the other.
# sluiced routes by the SNI and refuses a Host that differs: 421
# host_mismatch, before anything is dialled.

test_escape_sni_host_fronting() {
	local m code
	esc_snap
	m=$(mark front)
	# curl: SNI upstream.test, Host other.example.test (both resolve to the
	# upstream, so only the mismatch can explain a refusal).
	code=$(sbx_run -- curl -sS --max-time 10 -o "$W/fr.out" -w '%{http_code}' \
		-H 'Host: other.example.test' "https://upstream.test/echo?id=$m" 2>"$W/fr.err")
	note "SNI upstream.test, Host other.example.test -> $code $(cat "$W/fr.out")"
	assert_eq "$code" 421 "status for SNI != Host"
	assert_eq "$(jq -r .error "$W/fr.out")" host_mismatch "421 reason"
	# Python: the second request on a kept-alive connection switches Host
	# (the first is legitimate and goes through).
	cat >"$W/front.py" <<'PY'
import socket, ssl, sys
m = sys.argv[1]
ctx = ssl.create_default_context()
s = ctx.wrap_socket(socket.create_connection(("upstream.test", 443), timeout=10),
                    server_hostname="upstream.test")
f = s.makefile("rb")
def get(host, path):
    s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, host)).encode())
    status = f.readline().split()[1].decode()
    n = 0
    while True:
        h = f.readline()
        if h in (b"\r\n", b""):
            break
        k, v = h.split(b":", 1)
        if k.strip().lower() == b"content-length":
            n = int(v)
    f.read(n)
    return status
print(get("upstream.test", "/echo?id=%s-ok" % m))
try:
    print(get("api.example.test", "/echo?id=%s-fronted" % m))
except (OSError, IndexError) as e:
    print("error", e)
PY
	sbx_run -- "$SLT_PY" "$W/front.py" "$m" >"$W/front.out" 2>&1
	note "keep-alive, second request with another Host: $(tr '\n' ' ' <"$W/front.out")"
	assert_eq "$(tr '\n' ' ' <"$W/front.out")" "200 421 " "statuses of the honest and the fronted request"
	assert_via_sluiced "$m-ok" 1
	assert_via_sluiced "$m-fronted" 0
	assert_via_sluiced "id=$m" 1
	assert_untouched md foreign "SNI != Host"
}
