# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# Service life: SIGTERM drains, SIGHUP reloads and reopens the audit log.

test_sigterm_drains_open_requests() {
	local m pid code t0 t1
	m=$(mark drain)
	# a request that takes 2 s upstream, started before the SIGTERM
	sbx_run -- curl -sS --max-time 20 -o "$W/slow.json" -w '%{http_code}' \
		"https://upstream.test/delay/2000?id=$m" >"$W/slow.code" 2>"$W/slow.err" &
	pid=$!
	for ((i = 0; i < 50; i++)); do
		[ -n "$(up_requests "$m")" ] && break
		grep -q "id=$m" "$SLT_UP_LOG" 2>/dev/null && break
		sleep 0.1
	done
	sleep 0.3
	t0=$(date +%s%N)
	kill -TERM "$(sluiced_pid)"
	wait "$pid"
	code=$(cat "$W/slow.code")
	assert_eq "$code" 200 "the request in flight at SIGTERM finished"
	for ((i = 0; i < 120; i++)); do slt_pid_alive "$(sluiced_pid)" || break; sleep 0.1; done
	t1=$(date +%s%N)
	slt_pid_alive "$(sluiced_pid)" && fail "sluiced still running 12 s after SIGTERM"
	note "sluiced exited $(((t1 - t0) / 1000000)) ms after SIGTERM"
	assert_grep 'draining open connections' "$SLT_SLUICED_LOG" "the drain was logged"
	sluiced_start || fail "sluiced did not start again"
}

test_sighup_reopens_audit_log() {
	local m
	sbx_run -- curl -sS --max-time 10 -o /dev/null "https://upstream.test/echo?before=1" ||
		fail "request before SIGHUP"
	for ((i = 0; i < 50; i++)); do [ -s "$SLT_TMP/audit.jsonl" ] && break; sleep 0.1; done
	mv "$SLT_TMP/audit.jsonl" "$SLT_TMP/audit.jsonl.1"
	kill -HUP "$(sluiced_pid)"
	for ((i = 0; i < 50; i++)); do [ -e "$SLT_TMP/audit.jsonl" ] && break; sleep 0.1; done
	[ -e "$SLT_TMP/audit.jsonl" ] || fail "SIGHUP did not reopen the audit log"
	assert_eq "$(stat -c %a "$SLT_TMP/audit.jsonl")" 600 "mode of the reopened audit log"
	m=$(mark hup)
	sbx_run -- curl -sS --max-time 10 -o /dev/null "https://upstream.test/echo?id=$m" ||
		fail "request after SIGHUP"
	# the query (and with it the marker) never reaches the audit log: wait for
	# the /echo line itself
	for ((i = 0; i < 50; i++)); do
		grep -q '"path":"/echo"' "$SLT_TMP/audit.jsonl" 2>/dev/null && break
		sleep 0.1
	done
	grep -q '"path":"/echo"' "$SLT_TMP/audit.jsonl" || fail "new records did not go to the new file"
	grep -q "$m" "$SLT_TMP/audit.jsonl" && fail "the query string reached the audit log"
	[ -s "$SLT_TMP/audit.jsonl.1" ] || fail "old records lost with the rotated file"
}

# sluicectl --url: the TCP management listener (SLUICE_MANAGEMENT_LISTEN +
# SLUICE_MANAGEMENT_TOKEN on sluiced's side), token from the environment.
# The right token gets the same status as the Unix socket; a wrong one is
# refused (401, sluicectl says so and fails); no token in the environment is
# a usage error before anything is sent; nothing listening: "not running".
test_sluicectl_tcp_url() {
	local tok=slt-token-$$-$RANDOM$RANDOM url=http://127.0.0.1:19180 r rc
	trap 'sluiced_stop; sluiced_start >/dev/null 2>&1' EXIT
	sluiced_stop
	SLUICE_MANAGEMENT_LISTEN=127.0.0.1:19180 SLUICE_MANAGEMENT_TOKEN=$tok sluiced_start ||
		fail "sluiced did not start with a TCP management listener"
	r=$(SLUICE_MANAGEMENT_TOKEN=$tok ctl --url "$url" status --json 2>&1) ||
		fail "status over TCP failed: $r"
	assert_eq "$(jq -r '.pid' <<<"$r")" "$(sluiced_pid)" "status over TCP names sluiced's pid"
	assert_eq "$(jq -r '.pid' <<<"$(ctl status --json)")" "$(sluiced_pid)" "status over the socket"
	rc=0
	r=$(SLUICE_MANAGEMENT_TOKEN=wrong-token-0123456789 ctl --url "$url" status 2>&1) || rc=$?
	note "wrong token: exit $rc: $r"
	[ "$rc" != 0 ] || fail "a wrong token was accepted"
	grep -qi "unauthorized\|token" <<<"$r" || fail "the refusal does not say why: $r"
	rc=0
	r=$(env -u SLUICE_MANAGEMENT_TOKEN "$SLT_SLUICECTL" --url "$url" status 2>&1) || rc=$?
	assert_eq "$rc" 2 "no token: usage error"
	grep -q SLUICE_MANAGEMENT_TOKEN <<<"$r" || fail "the usage error does not name the variable: $r"
	rc=0
	r=$(SLUICE_MANAGEMENT_TOKEN=$tok ctl --url http://127.0.0.1:19181 status 2>&1) || rc=$?
	note "nothing listening: exit $rc: $r"
	grep -q "not running" <<<"$r" || fail "no 'not running' for a closed port: $r"
	rc=0
	r=$(SLUICE_MANAGEMENT_TOKEN=$tok ctl --url "https://127.0.0.1:19180/x" status 2>&1) || rc=$?
	assert_eq "$rc" 2 "a URL with a scheme other than http or a path: usage error"
}
