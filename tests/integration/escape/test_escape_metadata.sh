# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# Escape vectors: the cloud metadata service, by every road. The fake
# metadata server (169.254.169.254 and fd00:ec2::254, :80 and :443, in its own
# netns routed from the gateway) logs every TCP connection it accepts to
# $SLT_MD_LOG; each test asserts it got nothing.

MD_REQ='GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n'

# connect() straight to the metadata address, in every spelling: refused by
# the BPF connect program with EACCES before any packet exists.
test_escape_metadata_direct() {
	local a r
	esc_snap
	for a in "$SLT_META4" "::ffff:$SLT_META4" "$SLT_META6" 64:ff9b::a9fe:a9fe 2002:a9fe:a9fe::1 \
		169.254.170.2; do
		for port in 80 443; do
			r=$(sbx_run -- "${PROBE[@]}" connect "$a" "$port" 2>&1)
			note "connect [$a]:$port -> $r"
			assert_eq "$r" EACCES "connect() to [$a]:$port"
		done
	done
	# A real client, for the record: curl gets "Permission denied".
	sbx_run -- curl -sS -v --max-time 10 -o /dev/null "http://$SLT_META4/latest/meta-data/" \
		2>"$W/curl.err" && fail "curl reached the metadata address"
	assert_grep 'Permission denied' "$W/curl.err" "curl's error is the kernel's EACCES"
	assert_hosts_untouched "direct metadata connect"
}

# DNS rebinding: the sandbox resolves rebind.test to the (allowed) upstream
# address, so its connect() is intercepted; sluiced resolves the name itself
# (its --hosts maps rebind.test to 169.254.169.254, rebind6.test to
# fd00:ec2::254) and refuses to dial: 403 upstream_address_denied.
test_escape_metadata_rebinding() {
	local n code
	esc_snap
	for n in rebind.test rebind6.test; do
		for scheme in https http; do
			code=$(sbx_run -- curl -sS --max-time 10 -o "$W/rb.out" -w '%{http_code}' \
				"$scheme://$n/latest/meta-data/" 2>"$W/rb.err")
			note "$scheme://$n -> $code $(cat "$W/rb.out")"
			assert_eq "$code" 403 "status for $scheme://$n"
			assert_eq "$(jq -r .error "$W/rb.out")" upstream_address_denied "403 reason for $n"
		done
	done
	assert_hosts_untouched "DNS rebinding to metadata"
}

# Through a proxy: CONNECT 169.254.169.254:80 (curl -p through a bogus proxy,
# so the CONNECT goes to sluiced). sluiced refuses the CONNECT itself: 403
# upstream_address_denied, no tunnel, nothing dialled.
test_escape_metadata_connect() {
	local code
	esc_snap
	code=$(sbx_run -- curl -sS -p -x "$SLT_DEAD_PROXY" --max-time 10 -o "$W/mc.out" \
		-w '%{http_connect} %{http_code}' "http://$SLT_META4/latest/meta-data/" 2>"$W/mc.err")
	note "curl -p CONNECT $SLT_META4:80 -> connect/request: $code $(cat "$W/mc.out")"
	assert_eq "$code" "403 000" "the CONNECT is refused (no tunnel)"
	assert_grep 'CONNECT tunnel failed, response 403' "$W/mc.err" "curl saw the refused CONNECT"
	# HTTPS through the tunnel: the TLS request inside is refused the same way.
	code=$(sbx_run -- curl -sS -k -x "$SLT_DEAD_PROXY" --max-time 10 -o "$W/mcs.out" \
		-w '%{http_connect} %{http_code}' "https://$SLT_META4/latest/meta-data/" 2>"$W/mcs.err")
	note "curl CONNECT $SLT_META4:443 (TLS inside) -> $code"
	assert_eq "$code" "403 000" "CONNECT :443 refused"
	assert_hosts_untouched "metadata via CONNECT"
}

# The Host header: a plain-HTTP request over a connection to an allowed
# address (the upstream, port 80) that names the metadata service in Host.
# sluiced routes plain HTTP by Host, resolves it, refuses: 403
# upstream_address_denied. Over TLS the SNI decides and a different Host is
# 421 host_mismatch (also test_escape_sni_host_fronting).
test_escape_metadata_host_header() {
	local r code
	esc_snap
	# shellcheck disable=SC2059
	printf "$MD_REQ" "$SLT_META4" >"$W/hh.req"
	r=$(sbx_run -- "${PROBE[@]}" raw-http "$SLT_UP4" 80 "$W/hh.req" 2>&1)
	note "GET with Host: $SLT_META4 to $SLT_UP4:80 -> $r"
	assert_eq "$(echo "$r" | head -n 1)" "status 403" "plain HTTP with a metadata Host"
	assert_eq "$(echo "$r" | sed -n 2p | jq -r .error)" upstream_address_denied "403 reason"
	# shellcheck disable=SC2059
	printf "$MD_REQ" "[$SLT_META6]" >"$W/hh6.req"
	r=$(sbx_run -- "${PROBE[@]}" raw-http "$SLT_UP4" 80 "$W/hh6.req" 2>&1)
	note "GET with Host: [$SLT_META6] -> $(echo "$r" | head -n 1)"
	assert_eq "$(echo "$r" | head -n 1)" "status 403" "plain HTTP with an IPv6 metadata Host"
	code=$(sbx_run -- curl -sS --max-time 10 -o "$W/hht.out" -w '%{http_code}' \
		-H "Host: $SLT_META4" https://upstream.test/latest/meta-data/ 2>"$W/hht.err")
	note "TLS to upstream.test with Host: $SLT_META4 -> $code $(cat "$W/hht.out")"
	assert_eq "$code" 421 "TLS with a metadata Host"
	assert_eq "$(jq -r .error "$W/hht.out")" host_mismatch "421 reason"
	assert_hosts_untouched "metadata via the Host header"
}

# The sandbox talks to sluiced's listener itself (127.0.0.1:15001 and
# [::1]:15001 inside its netns: the connect program lets the listener
# address through and records it) and asks for a tunnel to a denied address.
# A CONNECT to a denied address is refused at once (403, no tunnel); a
# CONNECT to an allowed-looking name whose requests name metadata is refused
# inside the tunnel (421); nothing reaches the metadata server.
test_escape_listener_connect() {
	local out l
	esc_snap
	# shellcheck disable=SC2059
	printf "$MD_REQ" "$SLT_META4" >"$W/lc.req"
	printf 'SSH-2.0-OpenSSH_9.2\r\n' >"$W/lc.ssh"
	for l in 127.0.0.1 ::1; do
		out=$(sbx_run -- "${PROBE[@]}" tunnel "$l" "$SLT_PORT" "$SLT_META4:80" "$W/lc.req" 2>&1)
		note "[$l]:$SLT_PORT CONNECT $SLT_META4:80, GET -> $(echo "$out" | head -n 2 | tr '\n' ' ')"
		assert_eq "$(echo "$out" | head -n 1)" "connect 403" \
			"CONNECT to a denied address via [$l]:$SLT_PORT refused"
	done
	out=$(sbx_run -- "${PROBE[@]}" tunnel 127.0.0.1 "$SLT_PORT" "[$SLT_META6]:80" "$W/lc.req" 2>&1)
	note "CONNECT [$SLT_META6]:80 -> $(echo "$out" | head -n 2 | tr '\n' ' ')"
	assert_eq "$(echo "$out" | head -n 1)" "connect 403" "CONNECT to the IPv6 metadata address"
	out=$(sbx_run -- "${PROBE[@]}" tunnel 127.0.0.1 "$SLT_PORT" "upstream.test:80" "$W/lc.req" 2>&1)
	note "CONNECT upstream.test:80, Host $SLT_META4 -> $(echo "$out" | head -n 2 | tr '\n' ' ')"
	assert_eq "$(echo "$out" | sed -n 2p)" "inner 421" "Host differs from the CONNECT authority"
	out=$(sbx_run -- "${PROBE[@]}" tunnel 127.0.0.1 "$SLT_PORT" "$SLT_META4:22" "$W/lc.ssh" 2>&1)
	note "CONNECT $SLT_META4:22 -> $(echo "$out" | head -n 1)"
	assert_eq "$(echo "$out" | head -n 1)" "connect 403" "CONNECT to metadata port 22"
	assert_hosts_untouched "CONNECT to metadata sent to the listener"
}
