# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# HTTP/1.1 behaviours through sluiced, from inside `sluicectl run`.

U=https://upstream.test

test_http_keepalive() {
	local m
	m=$(mark ka)
	sbx_run -- curl -sS -v --max-time 20 -o /dev/null -o /dev/null \
		"$U/echo?id=$m-1" "$U/echo?id=$m-2" 2>"$W/ka.err" ||
		{ cat "$W/ka.err" >&2; fail "curl with two URLs failed"; }
	assert_grep 'Re-using existing connection' "$W/ka.err" "second request reused the connection"
	assert_via_sluiced "$m-" 2
	# Plain HTTP too.
	m=$(mark kaplain)
	sbx_run -- curl -sS -v --max-time 20 -o /dev/null -o /dev/null \
		"http://upstream.test/echo?id=$m-1" "http://upstream.test/echo?id=$m-2" \
		2>"$W/kap.err" || { cat "$W/kap.err" >&2; fail "plain curl with two URLs failed"; }
	assert_grep 'Re-using existing connection' "$W/kap.err" "plain HTTP connection reused"
	assert_via_sluiced "$m-" 2
}

test_http_head() {
	local m
	m=$(mark head)
	# Two HEADs on one connection: a HEAD response has no body even with a
	# Content-Length, and the connection must still be usable after it.
	sbx_run -- curl -sS -I --max-time 10 "$U/bytes/12345?id=$m-1" "$U/bytes/12345?id=$m-2" \
		>"$W/head.out" 2>&1 || { cat "$W/head.out" >&2; fail "HEAD requests failed"; }
	assert_eq "$(grep -c '^HTTP/1.1 200' "$W/head.out")" 2 "HEAD responses with 200"
	assert_grep '^[Cc]ontent-[Ll]ength: 12345' "$W/head.out" "HEAD kept Content-Length"
	assert_eq "$(up_requests "$m" | jq -r .method | sort -u)" HEAD "method seen upstream"
	assert_via_sluiced "$m-" 2
}

test_http_chunked() {
	local m want
	m=$(mark chunkdown)
	sbx_run -- sh -c 'curl -sS --max-time 20 -D "$0" "$1" | sha256sum' "$W/cd.hdr" \
		"$U/bytes/1000000?chunked=1&id=$m" >"$W/cd.sha" 2>"$W/cd.err" ||
		{ cat "$W/cd.err" >&2; fail "chunked download failed"; }
	assert_eq "$(awk '{print $1}' "$W/cd.sha")" "$(pattern_sha256 1000000)" \
		"sha256 of the chunked download"
	assert_via_sluiced "$m"

	m=$(mark chunkup)
	head -c 1500000 /dev/urandom >"$W/cu.bin"
	want=$(sha256sum "$W/cu.bin" | awk '{print $1}')
	sbx_run -- curl -sS --max-time 20 -H 'Transfer-Encoding: chunked' \
		--data-binary @"$W/cu.bin" "$U/upload?id=$m" >"$W/cu.out" 2>"$W/cu.err" ||
		{ cat "$W/cu.err" >&2; fail "chunked upload failed"; }
	assert_eq "$(jq -r .bytes "$W/cu.out")" 1500000 "bytes received upstream (chunked upload)"
	assert_eq "$(jq -r .sha256 "$W/cu.out")" "$want" "sha256 of the chunked upload"
	assert_via_sluiced "$m"
}

test_http_expect_continue() {
	local m want t0 t1
	m=$(mark expect)
	head -c 2097152 /dev/urandom >"$W/ex.bin"
	want=$(sha256sum "$W/ex.bin" | awk '{print $1}')
	t0=$(date +%s%N)
	# curl sends Expect: 100-continue for a 2 MiB upload and waits (up to
	# 1 s) for the interim response.
	sbx_run -- curl -sS -v --max-time 20 -X POST -T "$W/ex.bin" "$U/upload?id=$m" \
		>"$W/ex.out" 2>"$W/ex.err" || { cat "$W/ex.err" >&2; fail "upload failed"; }
	t1=$(date +%s%N)
	note "upload took $(((t1 - t0) / 1000000)) ms"
	assert_grep '^> Expect: 100-continue' "$W/ex.err" "curl sent Expect: 100-continue"
	assert_grep '^< HTTP/1.1 100 Continue' "$W/ex.err" "client got 100 Continue"
	assert_eq "$(jq -r .sha256 "$W/ex.out")" "$want" "sha256 of the upload"
	assert_via_sluiced "$m"
}

test_http_pipelining() {
	local m
	m=$(mark pipe)
	cat >"$W/pipe.py" <<'EOF'
import json, socket, ssl, sys
mark = sys.argv[1]
ctx = ssl.create_default_context()
raw = socket.create_connection(("upstream.test", 443), timeout=15)
s = ctx.wrap_socket(raw, server_hostname="upstream.test")
reqs = b"".join(b"GET /echo?id=%s-%d HTTP/1.1\r\nHost: upstream.test\r\n\r\n"
                % (mark.encode(), i) for i in range(3))
s.sendall(reqs)  # three requests in one write
f = s.makefile("rb")
for i in range(3):
    status = f.readline().split()
    clen = None
    while True:
        h = f.readline()
        if h in (b"\r\n", b""):
            break
        k, v = h.split(b":", 1)
        if k.strip().lower() == b"content-length":
            clen = int(v)
    body = json.loads(f.read(clen))
    print(i, status[1].decode(), body["path"])
EOF
	sbx_run -- "$SLT_PY" "$W/pipe.py" "$m" >"$W/pipe.out" 2>&1 ||
		{ cat "$W/pipe.out" >&2; fail "pipelined requests failed"; }
	cat "$W/pipe.out" >&2
	printf '%s\n' "0 200 /echo?id=$m-0" "1 200 /echo?id=$m-1" "2 200 /echo?id=$m-2" \
		>"$W/pipe.want"
	diff -u "$W/pipe.want" "$W/pipe.out" >&2 || fail "pipelined answers not all 200 in order"
	assert_via_sluiced "$m-" 3
}

test_http_header_too_large() {
	local m big code
	m=$(mark big)
	big=$(head -c 65536 /dev/zero | tr '\0' a)
	code=$(sbx_run -- curl -sS --max-time 20 -o "$W/big.out" -w '%{http_code}' \
		-H "X-Big: $big" "$U/echo?id=$m" 2>"$W/big.err")
	cat "$W/big.err" >&2
	assert_eq "$code" 431 "status for a 64 KiB header"
	assert_via_sluiced "$m" 0
}

test_http_host_sni_mismatch() {
	local m code
	m=$(mark mismatch)
	code=$(sbx_run -- curl -sS --max-time 20 -o "$W/mm.out" -w '%{http_code}' \
		-H 'Host: other.upstream.test' "$U/echo?id=$m" 2>"$W/mm.err")
	cat "$W/mm.err" "$W/mm.out" >&2
	assert_eq "$code" 421 "status when Host differs from SNI"
	assert_via_sluiced "$m" 0
}

test_http_upstream_down() {
	local m code
	m=$(mark down)
	# down.test resolves (for sluiced) to an address where nothing listens.
	code=$(sbx_run -- curl -sS --max-time 20 -o "$W/down.out" -w '%{http_code}' \
		"https://down.test/echo?id=$m" 2>"$W/down.err")
	cat "$W/down.err" >&2
	note "502 body: $(cat "$W/down.out")"
	assert_eq "$code" 502 "status for an upstream that refuses connections"
	jq -e 'type == "object" and (.error | type == "string" and length > 0)' "$W/down.out" \
		>/dev/null || fail "502 body is not a JSON object with an error name"
	grep -qi 'refused' "$W/down.out" || fail "502 body does not say the connection was refused"
}

# Metadata is refused at two layers: a connect() to a metadata address never
# happens (the BPF connect program refuses it with EACCES before any packet),
# and a request that names it through a proxy (CONNECT or absolute-form, the
# connect going to the "proxy") is refused by sluiced with a JSON 403.
test_metadata_refused() {
	local code url
	for url in http://169.254.169.254/latest/meta-data/ \
		https://169.254.169.254/latest/meta-data/; do
		# -k: the certificate for a bare IP is not what is tested here.
		code=$(sbx_run -- curl -sS -k -v --max-time 10 -o "$W/md.out" \
			-w '%{http_code}' "$url" 2>"$W/md.err")
		note "direct $url -> $code"
		assert_eq "$code" 000 "no HTTP answer for a direct $url"
		assert_grep 'Permission denied' "$W/md.err" "the kernel refused the connect (EACCES)"
		# http:// goes as an absolute-form GET (403 on the request), https:// as a
		# CONNECT (403 on the CONNECT itself, no tunnel)
		code=$(sbx_run_proxy -- curl -sS -k --max-time 10 -o "$W/md.out" \
			-w '%{http_connect} %{http_code}' "$url" 2>"$W/md.err")
		note "proxy $url -> $code $(cat "$W/md.out" 2>/dev/null)"
		case $url in
		http:*) assert_eq "$code" "000 403" "status for $url through a proxy"
			assert_eq "$(jq -r .error "$W/md.out")" upstream_address_denied "403 reason" ;;
		*) assert_eq "$code" "403 000" "CONNECT for $url through a proxy" ;;
		esac
	done
	[ ! -s "$SLT_MD_LOG" ] || { cat "$SLT_MD_LOG" >&2; fail "the metadata server was reached"; }
}

test_metadata_other_forms() {
	local code url
	for url in 'http://[::ffff:169.254.169.254]/latest/meta-data/' \
		'http://2852039166/latest/meta-data/' \
		'http://[fd00:ec2::254]/latest/meta-data/' \
		'http://[64:ff9b::a9fe:a9fe]/latest/meta-data/' \
		'http://[2002:a9fe:a9fe::1]/latest/meta-data/'; do
		code=$(sbx_run -- curl -sS -g -v --max-time 10 -o "$W/mdf.out" -w '%{http_code}' \
			"$url" 2>"$W/mdf.err")
		note "$url -> $code"
		assert_eq "$code" 000 "no HTTP answer for $url"
		assert_grep 'Permission denied' "$W/mdf.err" "the kernel refused $url (EACCES)"
		code=$(sbx_run_proxy -- curl -sS -g --max-time 10 -o "$W/mdf.out" -w '%{http_code}' \
			"$url" 2>"$W/mdf.err")
		note "proxy $url -> $code $(cat "$W/mdf.out" 2>/dev/null)"
		assert_eq "$code" 403 "status for $url through a proxy"
	done
	[ ! -s "$SLT_MD_LOG" ] || { cat "$SLT_MD_LOG" >&2; fail "the metadata server was reached"; }
}

test_http_websocket() {
	local m
	m=$(mark ws)
	# A WebSocket upgrade through sluiced: 101 reaches the client, then the
	# connection is a byte tunnel in both directions (the upstream echoes).
	sbx_run -- python3 - "$m" >"$W/ws.out" 2>&1 <<'PY' || { cat "$W/ws.out" >&2; fail "websocket client failed"; }
import base64, os, socket, ssl, sys
m = sys.argv[1]
ctx = ssl.create_default_context()
s = ctx.wrap_socket(socket.create_connection(("upstream.test", 443), timeout=10),
                    server_hostname="upstream.test")
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(("GET /ws?id=%s HTTP/1.1\r\nHost: upstream.test\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
           % (m, key)).encode())
buf = b""
while b"\r\n\r\n" not in buf:
    d = s.recv(4096)
    if not d:
        sys.exit("closed before the 101")
    buf += d
head, rest = buf.split(b"\r\n\r\n", 1)
print(head.decode().splitlines()[0])
assert head.startswith(b"HTTP/1.1 101"), head
assert b"upgrade: websocket" in head.lower(), head
payload = os.urandom(200000)
s.sendall(payload)
got = rest
while len(got) < len(payload):
    d = s.recv(65536)
    if not d:
        sys.exit("tunnel closed after %d bytes" % len(got))
    got += d
assert got == payload, "echo differs"
print("echoed", len(got))
PY
	assert_grep '^HTTP/1.1 101' "$W/ws.out" "101 Switching Protocols reached the client"
	assert_grep '^echoed 200000' "$W/ws.out" "200000 bytes went through the tunnel both ways"
	assert_via_sluiced "$m"
}

test_http_stale_upstream_replayed() {
	local m
	m=$(mark stale)
	# Two requests on one client connection: after the first, the upstream
	# reads the second and closes without answering (as a server whose idle
	# timer fired). sluiced must replay the bodiless request once on a fresh
	# upstream connection; the client sees two 200s.
	sbx_run -- curl -sS --max-time 20 -o /dev/null -w '%{http_code}\n' -o /dev/null \
		-w '%{http_code}\n' "$U/echo?id=$m-1&drop_next=1" "$U/echo?id=$m-2" \
		>"$W/stale.out" 2>"$W/stale.err" || { cat "$W/stale.err" >&2; fail "curl failed"; }
	assert_eq "$(tr '\n' ' ' <"$W/stale.out")" "200 200 " "statuses seen by the client"
	assert_eq "$(up_requests "$m-2" | jq -r '.error // "ok"' | tr '\n' ' ')" "dropped ok " \
		"upstream saw the second request dropped once, then replayed"
}
