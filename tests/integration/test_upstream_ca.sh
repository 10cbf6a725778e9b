# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# A policy's upstream_ca replaces sluiced's trust store for that sandbox.

test_policy_upstream_ca() {
	local m code
	# A CA nobody signed the upstream with: verification must fail.
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
		-subj "/CN=unrelated test CA" -keyout "$W/other.key" -out "$W/other.pem" \
		2>/dev/null || fail "openssl"
	printf 'version: 1\nallow:\n  - host: upstream.test\nupstream_ca: %s\n' "$W/other.pem" \
		>"$W/wrong.yaml"
	printf 'version: 1\nallow:\n  - host: upstream.test\nupstream_ca: %s\n' "$SLT_CA" \
		>"$W/right.yaml"
	m=$(mark ca)
	code=$(sbx_run --policy "$W/wrong.yaml" -- curl -sS --max-time 15 -o "$W/w.json" \
		-w '%{http_code}' "https://upstream.test/echo?id=$m-w" 2>"$W/w.err")
	assert_eq "$code" 502 "status when the policy's CA does not sign the upstream"
	assert_eq "$(jq -r .error "$W/w.json")" upstream_tls_failed "error code"
	assert_grep 'certificate verify failed' "$W/w.json" "the reason names the verification"
	[ -z "$(up_requests "$m-w")" ] || fail "a request went upstream despite the failed verification"
	code=$(sbx_run --policy "$W/right.yaml" -- curl -sS --max-time 15 -o "$W/r.json" \
		-w '%{http_code}' "https://upstream.test/echo?id=$m-r" 2>"$W/r.err")
	assert_eq "$code" 200 "status with the upstream's own CA in the policy"
	assert_via_sluiced "$m-r"
}
