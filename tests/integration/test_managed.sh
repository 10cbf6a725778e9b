# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# Managed mode against the reference control plane
# (scripts/sluice-control-plane.py, real HTTP on loopback in the gateway
# netns): fail closed until the first config, secrets from the control plane,
# the reassignment race (sync --wait, then the very next request carries the
# new principal's credential) 100 times, revocation, outages; and the same
# control plane over TLS requiring a client certificate (mutual TLS).

cp_admin() { # METHOD PATH [JSON]
	nsenter --net="$SLT_GW_NSPATH" curl -sS --max-time 5 -X "$1" \
		-H "Authorization: Bearer $CP_ADMIN_TOKEN" -H 'Content-Type: application/json' \
		${3:+--data-binary "$3"} "http://$CP_ADMIN$2"
}

cp_put() { # ID PRINCIPAL STATUS SECRET_VALUE
	local pol
	pol=$(printf 'version: 1\nallow:\n  - host: upstream.test\nsecrets:\n  - name: api\n    placeholder: SLUICE_PH_MANAGED_0001\n    source: controlplane:api\n    hosts: [upstream.test]\n    in:\n      headers: [authorization]\n')
	cp_admin PUT "/admin/sandboxes/$1" "$(jq -cn --arg p "$2" --arg s "$3" --arg pol "$pol" \
		--arg v "$4" '{principal: $p, status: $s, policy: $pol, secrets: {api: $v}}')" >/dev/null ||
		fail "control plane PUT $1"
}

# In the sandbox of the calling test: its $ns and $cg (bash's dynamic scope).
inm() {
	timeout -k 2 20 nsenter --net="/run/netns/$ns" sh -c \
		'echo $$ >"$0/cgroup.procs" && exec "$@"' "$cg" \
		"$SLT_INHOSTS" "$SLT_CLIENT_HOSTS" "$@"
}
req() { # MARK -> prints status; body in $W/r.json
	inm curl -sS --max-time 10 -o "$W/r.json" -w '%{http_code}' \
		-H 'Authorization: Bearer SLUICE_PH_MANAGED_0001' "https://upstream.test/echo/$1"
}

test_managed_mode() {
	local ns=${SLT_PFX}mg$$ cg=$SLT_CG/mg$$ id=slt-mg-$$ m code i miss=0 who val
	CP_ADMIN_TOKEN=admin-$RANDOM$RANDOM
	local tok=$W/cp.tok atok=$W/cp.atok ready=$W/cp.ready
	printf 'cp-token-%s%s\n' "$RANDOM" "$RANDOM" >"$tok"
	printf '%s\n' "$CP_ADMIN_TOKEN" >"$atok"
	echo '{"sandboxes": {}}' >"$W/cp.json"
	nsenter --net="$SLT_GW_NSPATH" "$SLT_PY" "$SLT_ROOT/scripts/sluice-control-plane.py" \
		--listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --token-file "$tok" \
		--admin-token-file "$atok" --state "$W/cp.json" --ready-file "$ready" \
		>"$W/cp.log" 2>&1 &
	local cppid=$!
	for ((i = 0; i < 50; i++)); do [ -s "$ready" ] && break; sleep 0.1; done
	[ -s "$ready" ] || { cat "$W/cp.log" >&2; fail "control plane did not start"; }
	CP_ADMIN=$(jq -r .admin "$ready")
	local url
	url=http://$(jq -r .sync "$ready")

	# shellcheck disable=SC2064
	trap "ctl detach --id $id >/dev/null 2>&1; ip netns del $ns 2>/dev/null; slt_cgroup_rm $cg;
		kill $cppid 2>/dev/null; sluiced_stop; sluiced_start >/dev/null 2>&1" EXIT
	sluiced_stop
	SLUICE_CONTROL_PLANE_TOKEN=$(cat "$tok") sluiced_start --control-plane "$url" \
		--sync-interval 600000 || fail "managed sluiced did not start"
	ip netns add "$ns" || fail "ip netns add"
	ip -n "$ns" link set lo up
	mkdir -p "$cg" || fail "mkdir $cg"
	ctl attach --cgroup "$cg" --netns "/run/netns/$ns" --id "$id" >&2 || fail "attach"
	eval "$(ctl env)"
	export SSL_CERT_FILE CURL_CA_BUNDLE

	# 1. fail closed until the control plane has answered for this sandbox
	code=$(req "$(mark mgpre)")
	assert_eq "$code" 503 "before the first config"
	assert_eq "$(jq -r .error "$W/r.json")" not_synced "error before the first config"

	# 2. first config, applied on demand; the request carries the secret
	cp_put "$id" alice active "alice-real-0"
	ctl sync --wait 10 >"$W/sync.out" || { cat "$W/sync.out" >&2; fail "sync --wait"; }
	m=$(mark mgfirst)
	assert_eq "$(req "$m")" 200 "after the first sync"
	assert_eq "$(up_requests "$m" | jq -r '.headers[] | select(.[0] == "Authorization") | .[1]')" \
		"Bearer alice-real-0" "credential upstream"
	grep -q 'alice-real' "$W/r.json" && fail "the real value reached the sandbox"
	ctl status --json >"$W/st.json"
	assert_eq "$(jq -r '.mode' "$W/st.json")" managed "status mode"
	assert_eq "$(jq -r --arg id "$id" '.sandboxes[] | select(.id == $id) | .principal' \
		"$W/st.json")" alice "principal in status"

	# 3. the reassignment race: reassign, sync --wait, the very next request
	for ((i = 1; i <= 100; i++)); do
		if ((i % 2)); then who=bob; else who=alice; fi
		val="$who-real-$i"
		cp_put "$id" "$who" active "$val"
		ctl sync --wait 10 >/dev/null || fail "sync --wait (round $i)"
		m=$(mark "mgr$i")
		code=$(req "$m")
		got=$(up_requests "$m" | jq -r '.headers[] | select(.[0] == "Authorization") | .[1]')
		if [ "$code" != 200 ] || [ "$got" != "Bearer $val" ]; then
			miss=$((miss + 1))
			note "round $i: status $code, upstream got '$got', want 'Bearer $val'"
		fi
	done
	assert_eq "$miss" 0 "reassignments where the next request did not carry the new credential"
	assert_grep "\"principal\":\"$who\"" "$SLT_TMP/audit.jsonl" "audit lines carry the principal"

	# metrics: Prometheus text over the management socket
	curl -sS --max-time 5 --unix-socket "$SLT_RUN/sluiced.sock" http://sluiced/metrics \
		>"$W/metrics.txt" || fail "GET /metrics"
	local k
	for k in 'sluice_sync_attempts_total [1-9]' 'sluice_sync_failures_total [0-9]' \
		'sluice_requests_total\{decision="allow"\} [1-9]' \
		"sluice_connections_active\\{sandbox=\"$id\"\\}" \
		"sluice_sandbox_connections_total\\{sandbox=\"$id\"\\} [1-9]" \
		'sluice_secrets_swapped_total [1-9]' 'sluice_request_duration_seconds_count [1-9]' \
		'sluice_tls_handshakes_total [1-9]' 'sluice_cert_cache_misses_total [1-9]' \
		'sluice_audit_records_total [1-9]' 'sluice_upstream_errors_total [0-9]' \
		'sluice_redactions_total [0-9]' 'sluice_audit_write_errors_total 0'; do
		grep -Eq "^$k" "$W/metrics.txt" || { cat "$W/metrics.txt" >&2; fail "metric /$k/"; }
	done

	# 4. control plane down: the last good config keeps serving
	cp_admin POST /admin/fault '{"fault": "down"}' >/dev/null
	ctl sync --wait 5 >/dev/null && note "sync --wait succeeded with the control plane down?"
	m=$(mark mgdown)
	assert_eq "$(req "$m")" 200 "last good config during an outage"
	cp_admin POST /admin/fault '{"fault": "none"}' >/dev/null

	# 5. revoked: everything denied
	cp_put "$id" "$who" revoked "x"
	ctl sync --wait 10 >/dev/null || fail "sync after revoke"
	m=$(mark mgrev)
	assert_eq "$(req "$m")" 403 "revoked principal"
	assert_eq "$(jq -r .error "$W/r.json")" principal_revoked "revocation error"
	assert_via_sluiced "$m" 0
}

# mtls_certs DIR: with the openssl CLI, CAs cpca (signs the control plane's
# certificate), clientca (the nodes' CA the control plane trusts) and otherca;
# server.pem (cpca, subjectAltName IP:127.0.0.1), node.pem (clientca) and
# stranger.pem (otherca), each with NAME.key (0600). Log in DIR/certs.log.
mtls_certs() {
	local d=$1
	mtls_ca() {
		bounded openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
			-days 2 -subj "/CN=sluice test $1 $SLT_PFX" -keyout "$d/$1.key" -out "$d/$1.pem" \
			-addext basicConstraints=critical,CA:TRUE \
			-addext keyUsage=critical,keyCertSign,cRLSign
	}
	mtls_leaf() { # NAME CA EXTENSION
		bounded openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
			-subj "/CN=$1" -keyout "$d/$1.key" -out "$d/$1.csr" &&
			printf '%s\n' "$3" >"$d/$1.ext" &&
			bounded openssl x509 -req -in "$d/$1.csr" -CA "$d/$2.pem" -CAkey "$d/$2.key" \
				-CAcreateserial -days 2 -extfile "$d/$1.ext" -out "$d/$1.pem"
	}
	(
		umask 077
		mtls_ca cpca && mtls_ca clientca && mtls_ca otherca &&
			mtls_leaf server cpca subjectAltName=IP:127.0.0.1 &&
			mtls_leaf node clientca extendedKeyUsage=clientAuth &&
			mtls_leaf stranger otherca extendedKeyUsage=clientAuth &&
			chmod 600 "$d"/*.key
	) >"$d/certs.log" 2>&1
}

# The reference control plane over TLS, requiring client certificates from
# clientca: sluiced with the CA and a client certificate syncs; without a
# client certificate, with one from another CA, or not trusting the server,
# every sync fails in the TLS handshake, the control plane never sees a
# request, and the sandbox stays 503 not_synced. A key file readable by
# group/other, or a certificate without its key, stops sluiced at start.
test_managed_mtls() {
	local ns=${SLT_PFX}mt$$ cg=$SLT_CG/mt$$ id=slt-mt-$$ d=$W/mtls m i off
	local tok=$W/mt.tok atok=$W/mt.atok ready=$W/mt.ready url cppid
	CP_ADMIN_TOKEN=admin-$RANDOM$RANDOM
	mkdir -p "$d"
	mtls_certs "$d" || { cat "$d/certs.log" >&2; fail "openssl: making the test certificates"; }
	printf 'cp-token-%s%s\n' "$RANDOM" "$RANDOM" >"$tok"
	printf '%s\n' "$CP_ADMIN_TOKEN" >"$atok"
	echo '{"sandboxes": {}}' >"$W/mt.json"
	nsenter --net="$SLT_GW_NSPATH" "$SLT_PY" "$SLT_ROOT/scripts/sluice-control-plane.py" \
		--listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --token-file "$tok" \
		--admin-token-file "$atok" --state "$W/mt.json" --ready-file "$ready" \
		--tls-cert "$d/server.pem" --tls-key "$d/server.key" --client-ca "$d/clientca.pem" \
		>"$W/mt.log" 2>&1 &
	cppid=$!
	for ((i = 0; i < 50; i++)); do [ -s "$ready" ] && break; sleep 0.1; done
	[ -s "$ready" ] || { cat "$W/mt.log" >&2; fail "control plane did not start"; }
	CP_ADMIN=$(jq -r .admin "$ready")
	url=https://$(jq -r .sync "$ready")

	# shellcheck disable=SC2064
	trap "ctl detach --id $id >/dev/null 2>&1; ip netns del $ns 2>/dev/null; slt_cgroup_rm $cg;
		kill $cppid 2>/dev/null; sluiced_stop; sluiced_start >/dev/null 2>&1" EXIT
	ip netns add "$ns" || fail "ip netns add"
	ip -n "$ns" link set lo up
	mkdir -p "$cg" || fail "mkdir $cg"
	cp_put "$id" alice active "alice-mtls-0"

	# mt_sluiced ARGS...: a fresh managed sluiced with ARGS and the sandbox
	# attached; the control plane's request log emptied.
	mt_sluiced() {
		ctl detach --id "$id" >/dev/null 2>&1
		sluiced_stop
		SLUICE_CONTROL_PLANE_TOKEN=$(cat "$tok") sluiced_start --control-plane "$url" \
			--sync-interval 600000 "$@" || fail "managed sluiced did not start: $*"
		ctl attach --cgroup "$cg" --netns "/run/netns/$ns" --id "$id" >&2 || fail "attach"
		cp_admin DELETE /admin/log >/dev/null || fail "control plane DELETE /admin/log"
	}
	# mt_refused WHAT WANT: sync --wait fails with a TLS error matching WANT,
	# the control plane saw no request, the sandbox is still not synced.
	mt_refused() {
		local out=$W/mt-sync.out
		if ctl sync --wait 5 >"$out" 2>&1; then
			cat "$out" >&2
			fail "$1: sync --wait succeeded"
		fi
		assert_grep "$2" "$out" "$1: the sync error names the TLS failure"
		assert_grep 'SSL|TLS|certificate|handshake' "$out" "$1: a TLS error"
		assert_eq "$(cp_admin GET /admin/log | jq -c .requests)" "[]" \
			"$1: requests the control plane saw"
		ctl status --json >"$W/mt-st.json"
		assert_eq "$(jq -r --arg id "$id" '.sandboxes[] | select(.id == $id) | .synced_once' \
			"$W/mt-st.json")" false "$1: synced_once"
		jq -r '.control_plane_last_error // ""' "$W/mt-st.json" >"$W/mt-err.txt"
		assert_grep "$2" "$W/mt-err.txt" "$1: status names the last sync error"
		assert_eq "$(req "$(mark mtno)")" 503 "$1: a request"
		assert_eq "$(jq -r .error "$W/r.json")" not_synced "$1: the request's error"
	}

	# refused at start, before anything is set up
	sluiced_stop
	cp "$d/node.key" "$d/open.key" && chmod 644 "$d/open.key"
	off=$(stat -c %s "$SLT_SLUICED_LOG")
	if SLUICE_CONTROL_PLANE_TOKEN=$(cat "$tok") sluiced_start --control-plane "$url" \
		--control-plane-ca "$d/cpca.pem" --control-plane-cert "$d/node.pem" \
		--control-plane-key "$d/open.key" 2>/dev/null; then
		fail "sluiced started with a client key readable by group/other"
	fi
	tail -c +"$((off + 1))" "$SLT_SLUICED_LOG" >"$W/mt-start.log"
	assert_grep "client key $d/open.key: permission 0644 is too open" "$W/mt-start.log" \
		"the refusal names the key file and its mode"
	off=$(stat -c %s "$SLT_SLUICED_LOG")
	if SLUICE_CONTROL_PLANE_TOKEN=$(cat "$tok") sluiced_start --control-plane "$url" \
		--control-plane-cert "$d/node.pem" 2>/dev/null; then
		fail "sluiced started with --control-plane-cert but no key"
	fi
	tail -c +"$((off + 1))" "$SLT_SLUICED_LOG" >"$W/mt-start.log"
	assert_grep "control-plane-cert and --control-plane-key go together" "$W/mt-start.log" \
		"a certificate without its key"

	# (a) the CA and a client certificate: synced over mutual TLS
	mt_sluiced --control-plane-ca "$d/cpca.pem" --control-plane-cert "$d/node.pem" \
		--control-plane-key "$d/node.key"
	eval "$(ctl env)"
	export SSL_CERT_FILE CURL_CA_BUNDLE
	ctl sync --wait 10 >"$W/mt-sync.out" 2>&1 || { cat "$W/mt-sync.out" >&2; fail "sync --wait"; }
	m=$(mark mtok)
	assert_eq "$(req "$m")" 200 "after a sync over mutual TLS"
	assert_eq "$(up_requests "$m" | jq -r '.headers[] | select(.[0] == "Authorization") | .[1]')" \
		"Bearer alice-mtls-0" "credential upstream"
	assert_via_sluiced "$m" 1
	ctl status --json >"$W/mt-st.json"
	assert_eq "$(jq -r --arg id "$id" '.sandboxes[] | select(.id == $id) | .principal' \
		"$W/mt-st.json")" alice "principal in status"
	assert_eq "$(cp_admin GET /admin/log | jq -r '[.requests[].node] | length > 0')" true \
		"the control plane saw the node's requests"

	# (b) no client certificate: the control plane's handshake refuses it
	mt_sluiced --control-plane-ca "$d/cpca.pem"
	mt_refused "no client certificate" 'alert certificate required'

	# (c) a client certificate from another CA: refused likewise
	mt_sluiced --control-plane-ca "$d/cpca.pem" --control-plane-cert "$d/stranger.pem" \
		--control-plane-key "$d/stranger.key"
	mt_refused "a client certificate of another CA" 'alert unknown ca'

	# (d) the wrong CA for the control plane: sluiced does not trust the server
	mt_sluiced --control-plane-ca "$d/otherca.pem" --control-plane-cert "$d/node.pem" \
		--control-plane-key "$d/node.key"
	mt_refused "the control plane's certificate not trusted" 'SSL certificate problem'
	assert_grep 'TLS handshake with .* failed' "$W/mt.log" \
		"the control plane logged the refused handshakes"
}
