# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# Real clients inside `sluicectl run`, each with no proxy environment and
# with every proxy variable pointing at an address where nothing listens
# ($SLT_DEAD_PROXY): the connect is redirected either way, so a proxy-aware
# client's CONNECT lands in sluiced too. Each request must arrive at the
# upstream from sluiced, and the client must have verified a chain issued by
# sluice's CA (the only CA the sandbox trusts for these names).

# client_modes FN: run FN direct, then FN proxy.
client_modes() {
	"$1" direct
	"$1" proxy
}

# sbx MODE -- CMD...: sbx_run or sbx_run_proxy.
sbx() {
	local mode=$1
	shift
	[ "$1" = -- ] && shift
	if [ "$mode" = proxy ]; then sbx_run_proxy -- "$@"; else sbx_run -- "$@"; fi
}

curl_https_case() {
	local mode=$1 m out err
	m=$(mark "curl-$mode")
	out=$W/curl-$mode.body err=$W/curl-$mode.err
	sbx "$mode" -- curl -sS -v --max-time 20 -o "$out" \
		"https://upstream.test/echo?id=$m" 2>"$err" ||
		{ cat "$err" >&2; fail "curl ($mode) failed"; }
	assert_eq "$(jq -r .path "$out")" "/echo?id=$m" "curl ($mode) response path"
	assert_eq "$(jq -r .sni "$out")" "upstream.test" "SNI sluiced sent upstream ($mode)"
	assert_grep 'issuer:.*CN ?= ?sluice local CA' "$err" "curl ($mode) saw sluice's CA as issuer"
	if [ "$mode" = proxy ]; then
		assert_grep 'CONNECT upstream.test:443' "$err" "curl ($mode) used the (dead) proxy"
	fi
	assert_via_sluiced "$m"
	note "curl $mode: ok ($(grep -m1 'issuer:' "$err" | sed 's/^\* *//'))"
}
test_curl_https() { client_modes curl_https_case; }

curl_http_case() {
	local mode=$1 m out err
	m=$(mark "curlhttp-$mode")
	out=$W/curlhttp-$mode.body err=$W/curlhttp-$mode.err
	sbx "$mode" -- curl -sS -v --max-time 20 -o "$out" \
		"http://upstream.test/echo?id=$m" 2>"$err" ||
		{ cat "$err" >&2; fail "curl http:// ($mode) failed"; }
	assert_eq "$(jq -r .path "$out")" "/echo?id=$m" "curl http:// ($mode) response path"
	assert_eq "$(jq -r .tls "$out")" "false" "plain HTTP upstream leg ($mode)"
	assert_via_sluiced "$m"
	note "curl http:// $mode: ok"
}
test_curl_plain_http() { client_modes curl_http_case; }

python_case() {
	local mode=$1 m out
	m=$(mark "py-$mode")
	out=$W/py-$mode.out
	cat >"$W/client.py" <<'EOF'
import json, os, sys, urllib.request
url = sys.argv[1]
with urllib.request.urlopen(url, timeout=20) as r:
    body = json.load(r)
    print(json.dumps({"status": r.status, "path": body["path"],
                      "proxy": os.environ.get("https_proxy", "")}))
EOF
	sbx "$mode" -- "$SLT_PY" "$W/client.py" "https://upstream.test/echo?id=$m" \
		>"$out" 2>&1 || { cat "$out" >&2; fail "python urllib ($mode) failed"; }
	assert_eq "$(jq -r .status "$out")" 200 "python ($mode) status"
	assert_eq "$(jq -r .path "$out")" "/echo?id=$m" "python ($mode) response path"
	assert_via_sluiced "$m"
	note "python urllib $mode: ok"
}
test_python_urllib() { client_modes python_case; }

node_case() {
	local mode=$1 m out
	m=$(mark "node-$mode")
	out=$W/node-$mode.out
	cat >"$W/client.mjs" <<'EOF'
const url = process.argv[2];
try {
	const r = await fetch(url, { signal: AbortSignal.timeout(20000) });
	const body = await r.json();
	console.log(JSON.stringify({ status: r.status, path: body.path }));
} catch (e) {
	console.error("fetch failed:", e, e.cause);
	process.exit(1);
}
EOF
	sbx "$mode" -- node "$W/client.mjs" "https://upstream.test/echo?id=$m" \
		>"$out" 2>&1 || { cat "$out" >&2; fail "node fetch ($mode) failed"; }
	assert_eq "$(jq -r .status "$out")" 200 "node ($mode) status"
	assert_eq "$(jq -r .path "$out")" "/echo?id=$m" "node ($mode) response path"
	assert_via_sluiced "$m"
	note "node fetch $mode: ok"
}
test_node_fetch() {
	command -v node >/dev/null || skip "node not installed"
	client_modes node_case
}

openssl_case() {
	local mode=$1 m out
	m=$(mark "ossl-$mode")
	out=$W/ossl-$mode.out
	# -ign_eof: keep reading until the server closes (Connection: close).
	sbx "$mode" -- sh -c 'printf "GET /echo?id=%s HTTP/1.1\r\nHost: upstream.test\r\nConnection: close\r\n\r\n" "$0" |
		openssl s_client -connect upstream.test:443 -servername upstream.test \
			-verify_return_error -ign_eof' "$m" >"$out" 2>&1 ||
		{ cat "$out" >&2; fail "openssl s_client ($mode) failed"; }
	assert_grep '^ *i:.*CN ?= ?sluice local CA' "$out" "s_client ($mode) chain issuer"
	assert_grep 'Verify return code: 0 \(ok\)' "$out" "s_client ($mode) verification"
	assert_grep '^HTTP/1.1 200' "$out" "s_client ($mode) response status"
	assert_grep "\"path\": \"/echo\\?id=$m\"" "$out" "s_client ($mode) response body"
	assert_via_sluiced "$m"
	note "openssl s_client $mode: ok ($(grep -m1 '^ *i:' "$out" | sed 's/^ *//'))"
}
test_openssl_s_client() { client_modes openssl_case; }
