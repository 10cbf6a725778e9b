# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# Escape vectors: address literals instead of names. The connect program
# sees every destination whatever its spelling; an IPv6 literal goes to the
# IPv6 listener and an IPv4-mapped one (::ffff:a.b.c.d on an AF_INET6 socket)
# is stored as the IPv4 destination and sent to the IPv4 listener.

# https://[2001:db8:5c:X::2]/: intercepted (sluice mints a certificate for
# the IP address), dialled by sluiced from the gateway's IPv6 address.
test_escape_ipv6_literal() {
	local m
	m=$(mark v6lit)
	esc_snap
	sbx_run -- curl -sS -g -v --max-time 10 -o "$W/v6.out" "https://[$SLT_UP6]/echo?id=$m" \
		2>"$W/v6.err" || { cat "$W/v6.err" >&2; fail "request to an IPv6 literal failed"; }
	assert_grep 'issuer: .*CN=sluice local CA' "$W/v6.err" "certificate from sluice's CA"
	assert_via_sluiced "$m"
	assert_eq "$(up_requests "$m" | jq -r .client)" "$SLT_GW6" "client address the upstream saw"
	# A raw socket-level request too (no TLS, no name anywhere).
	m=$(mark v6raw)
	sbx_run -- "${PROBE[@]}" http "$SLT_UP6" 80 "[$SLT_UP6]" "/echo?id=$m" >"$W/v6r.out" 2>&1
	assert_eq "$(line1 "$W/v6r.out")" "status 200" "plain GET to [$SLT_UP6]:80"
	assert_via_sluiced "$m"
	assert_rewritten "$m"
	assert_conns_from_gateway "IPv6 literal"
	assert_untouched md foreign "IPv6 literal"
}

# http://[::ffff:198.18.X.2]/: the v4-mapped spelling of the upstream, on an
# IPv6 socket. Intercepted like the IPv4 address (and the mapped forms of
# denied addresses are refused: test_escape_metadata_direct).
test_escape_v4mapped_literal() {
	local m
	m=$(mark v4mapped)
	esc_snap
	sbx_run -- "${PROBE[@]}" http "::ffff:$SLT_UP4" 80 upstream.test "/echo?id=$m" \
		>"$W/vm.out" 2>&1
	assert_eq "$(line1 "$W/vm.out")" "status 200" "plain GET to [::ffff:$SLT_UP4]:80"
	assert_via_sluiced "$m"
	assert_rewritten "$m"
	# TLS: -k because the leaf's IP SAN is checked separately
	# (test_escape_v4mapped_literal_cert); here only interception matters.
	# The answer is either the upstream's (200, relayed) or one sluiced wrote
	# itself (a certificate problem, see the _cert test); never a direct
	# connection.
	local code
	m=$(mark v4mappedtls)
	code=$(sbx_run -- curl -sS -k -g -v --max-time 10 -o "$W/vmt.out" -w '%{http_code}' \
		"https://[::ffff:$SLT_UP4]/echo?id=$m" 2>"$W/vmt.err")
	note "https://[::ffff:$SLT_UP4]/ -> $code $(head -c 300 "$W/vmt.out")"
	assert_grep 'issuer: .*CN=sluice local CA' "$W/vmt.err" "certificate from sluice's CA"
	if [ "$code" = 200 ]; then
		assert_via_sluiced "$m"
	else
		assert_grep '^< Proxy-Status: sluice' "$W/vmt.err" "the $code was written by sluiced"
		assert_via_sluiced "$m" 0
	fi
	assert_conns_from_gateway "v4-mapped literal"
	assert_untouched md foreign "v4-mapped literal"
}

# Not an escape, an interoperability check found by the test above: a client
# that connects to https://[::ffff:a.b.c.d]/ verifies the leaf against the
# IPv6 form of the address, so the minted leaf needs an IP SAN for
# ::ffff:a.b.c.d, and sluiced must verify the upstream against the IPv4
# address it dials. (Both were wrong until 04493e0: the leaf carried only
# a.b.c.d, and the upstream was checked against ::ffff:a.b.c.d, 502.)
test_escape_v4mapped_literal_cert() {
	local m
	m=$(mark v4mappedcert)
	sbx_run -- curl -sS -g -v --max-time 10 -o "$W/vc.out" \
		"https://[::ffff:$SLT_UP4]/echo?id=$m" 2>"$W/vc.err" || {
		grep -E 'subject:|subjectAltName|curl: \(' "$W/vc.err" >&2
		fail "curl refused sluice's leaf for [::ffff:$SLT_UP4] (no IP SAN for the v4-mapped form?)"
	}
	assert_via_sluiced "$m"
}
