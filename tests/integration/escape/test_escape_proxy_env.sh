# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# Escape vectors: a client that ignores proxy settings, or follows bogus ones.
# Neither gets around sluiced: every TCP connect() of the sandbox is rewritten
# to the listener by the BPF connect programs, whatever the client intended.

# No proxy variables at all: the client connects "directly" and is
# intercepted (TLS terminated with sluice's CA, dialled by sluiced).
test_escape_no_proxy_env() {
	local m
	m=$(mark noproxy)
	esc_snap
	sbx_run -- env -u HTTPS_PROXY -u HTTP_PROXY -u https_proxy -u http_proxy -u ALL_PROXY \
		-u all_proxy curl -sS -v --max-time 10 -o "$W/np.out" "https://upstream.test/echo?id=$m" \
		2>"$W/np.err" || { cat "$W/np.err" >&2; fail "request without proxy variables failed"; }
	assert_grep 'issuer: .*CN=sluice local CA' "$W/np.err" "the client saw a certificate from sluice's CA"
	assert_via_sluiced "$m"
	assert_conns_from_gateway "no proxy env"
	assert_untouched md foreign "no proxy env"
}

# HTTPS_PROXY and friends point at an address where nothing listens: the
# connect to the "proxy" is itself redirected to sluiced, which answers the
# CONNECT and relays. The bogus proxy address (198.18.255.254, no route even
# from the gateway) is never contacted.
test_escape_bogus_https_proxy() {
	local m
	m=$(mark bogusproxy)
	esc_snap
	sbx_run_proxy -- curl -sS -v --max-time 10 -o "$W/bp.out" "https://upstream.test/echo?id=$m" \
		2>"$W/bp.err" || { cat "$W/bp.err" >&2; fail "request through a bogus HTTPS_PROXY failed"; }
	assert_grep "CONNECT upstream.test:443" "$W/bp.err" "curl used the proxy (CONNECT)"
	assert_grep 'issuer: .*CN=sluice local CA' "$W/bp.err" "the tunnel was terminated by sluiced"
	assert_via_sluiced "$m"
	# Plain HTTP through the same bogus proxy (absolute-form request).
	m=$(mark bogusproxyplain)
	sbx_run_proxy -- curl -sS --max-time 10 -o "$W/bpp.out" "http://upstream.test/echo?id=$m" \
		2>"$W/bpp.err" || { cat "$W/bpp.err" >&2; fail "plain request through a bogus proxy failed"; }
	assert_via_sluiced "$m"
	assert_conns_from_gateway "bogus HTTPS_PROXY"
	assert_untouched md foreign "bogus HTTPS_PROXY"
}
