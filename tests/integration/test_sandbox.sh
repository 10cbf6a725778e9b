# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# The sandbox `sluicectl run` makes: its own cgroup under the given parent,
# a netns holding only loopback, and sluice's CA in the usual variables.

test_sandbox_shape() {
	local out=$W/shape.out
	sbx_run -- sh -c 'ip -o link show | awk -F": " "{print \$2}"; echo "cg $(grep ^0:: /proc/self/cgroup)";
		echo "ca $SSL_CERT_FILE|$REQUESTS_CA_BUNDLE|$NODE_EXTRA_CA_CERTS|$CURL_CA_BUNDLE"' \
		>"$out" 2>&1 || { cat "$out" >&2; fail "sluicectl run failed"; }
	cat "$out" >&2
	assert_eq "$(grep -vE '^(cg|ca) ' "$out" | tr '\n' ' ')" "lo " "links in the sandbox netns"
	assert_grep "^cg 0::/${SLT_PFX}/sandboxes/" "$out" "sandbox cgroup under --cgroup-parent"
	local ca
	ca=$(sed -n 's/^ca \([^|]*\)|.*/\1/p' "$out")
	[ -r "$ca" ] || fail "SSL_CERT_FILE ($ca) is not readable"
	assert_grep "^ca $ca\\|$ca\\|$ca\\|$ca\$" "$out" "the four CA variables agree"
	openssl x509 -in "$ca" -noout -subject | grep -q 'sluice local CA' ||
		fail "SSL_CERT_FILE is not sluice's CA"
	# Exit status passes through.
	sbx_run -- sh -c 'exit 7'
	assert_eq "$?" 7 "exit status of the sandboxed command"
}

# Negative control for the client tests: without sluice's CA in the
# environment the same clients must refuse the certificate, so their
# successes elsewhere mean they really verified a chain from sluice's CA.
test_untrusted_without_ca_env() {
	local rc
	sbx_run --no-ca-env -- curl -sS --max-time 10 -o /dev/null https://upstream.test/echo \
		2>"$W/curl.err"
	rc=$?
	cat "$W/curl.err" >&2
	assert_eq "$rc" 60 "curl exit status without sluice's CA (60: peer certificate not trusted)"
	if command -v node >/dev/null; then
		sbx_run --no-ca-env -- node -e 'fetch("https://upstream.test/echo").then(
			() => process.exit(0), (e) => { console.error(String(e.cause)); process.exit(3); })' \
			2>"$W/node.err"
		rc=$?
		cat "$W/node.err" >&2
		assert_eq "$rc" 3 "node fetch without sluice's CA"
		assert_grep 'certificate' "$W/node.err" "node's error is about the certificate"
	fi
}
