# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# Managed mode against the reference control plane
# (scripts/sluice-control-plane.py, real HTTP on loopback in the gateway
# netns): fail closed until the first config, secrets from the control plane,
# the reassignment race (sync --wait, then the very next request carries the
# new principal's credential) 100 times, revocation, outages.

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
	inm() {
		timeout -k 2 20 nsenter --net="/run/netns/$ns" sh -c \
			'echo $$ >"$0/cgroup.procs" && exec "$@"' "$cg" \
			"$SLT_INHOSTS" "$SLT_CLIENT_HOSTS" "$@"
	}
	req() { # MARK -> prints status; body in $W/r.json
		inm curl -sS --max-time 10 -o "$W/r.json" -w '%{http_code}' \
			-H 'Authorization: Bearer SLUICE_PH_MANAGED_0001' "https://upstream.test/echo/$1"
	}

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
