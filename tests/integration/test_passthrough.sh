# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# Policy passthrough: spliced without decryption, SNI still matched.

test_passthrough_splices_without_decryption() {
	local m code
	printf 'version: 1\nallow:\n  - host: other.upstream.test\npassthrough:\n  - name: pt\n    host: upstream.test\n' \
		>"$W/pt.yaml"
	m=$(mark pt)
	# The client must trust the upstream's own CA: sluice does not decrypt.
	sbx_run --policy "$W/pt.yaml" --no-ca-env -- curl -sS -v --max-time 15 --cacert "$SLT_CA" \
		-o "$W/pt.json" "https://upstream.test/echo?id=$m" 2>"$W/pt.err" ||
		{ cat "$W/pt.err" >&2; fail "curl through passthrough"; }
	assert_grep 'issuer:.*CN=sluice test upstream CA' "$W/pt.err" "the client saw the upstream's own certificate"
	assert_via_sluiced "$m"
	for ((i = 0; i < 30; i++)); do
		grep -q '"tls_mode":"passthrough"' "$SLT_TMP/audit.jsonl" && break
		sleep 0.1
	done
	assert_grep '"decision":"passthrough".*"rule":"pt".*"tls_mode":"passthrough"' \
		"$SLT_TMP/audit.jsonl" "audit line for the spliced connection"
	# A host that is only allowed is still intercepted (sluice's CA).
	m=$(mark ptmitm)
	sbx_run --policy "$W/pt.yaml" -- curl -sS -v --max-time 15 -o /dev/null \
		"https://other.upstream.test/echo?id=$m" 2>"$W/mitm.err" || fail "curl to the allowed host"
	assert_grep 'issuer:.*CN=sluice local CA' "$W/mitm.err" "the allowed host was intercepted"
	# A host in neither list: terminated and refused (403), nothing upstream.
	m=$(mark ptdeny)
	code=$(sbx_run --policy "$W/pt.yaml" -- curl -sS --max-time 15 -o "$W/d.json" \
		-w '%{http_code}' "https://api.example.test/echo?id=$m" 2>"$W/d.err")
	assert_eq "$code" 403 "a host in neither list"
	assert_via_sluiced "$m" 0
}
