# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# Escape vector: sluiced dies (SIGKILL) and restarts while a sandbox is busy.
# The pinned BPF links keep redirecting the sandbox's connects to the
# listener address; while no sluiced holds the listener they are refused
# (ECONNREFUSED) and never let through. A restarted sluiced reopens the
# listeners from its records and the same sandbox works again.
#
# A sandbox runs 200 plain-HTTP requests spread over 10 s (each on a new
# connection, 2 s bound); sluiced is SIGKILLed after about 3 s and restarted
# one second later. Every request must either succeed through sluiced (the
# upstream's echo names the gateway as its client), fail to connect, or (the
# few in flight at the kill) lose their connection; the upstream must see
# nothing from any other address.

test_escape_restart_under_load() {
	local m pid ok refused inflight other total n bad
	m=$(mark rl)
	esc_snap
	BOUND=90 sbx_run -- env UP4="$SLT_UP4" M="$m" sh -c '
		"$0" "$1" loop "$UP4" 80 upstream.test "$M" 200 10
		sleep 0.5
		echo "after: $("$0" "$1" http "$UP4" 80 upstream.test "/echo?id=$M-after" | head -n 1)"' \
		"${PROBE[@]}" >"$W/rl.out" 2>&1 &
	local client=$!
	sleep 3
	pid=$(sluiced_pid)
	kill -KILL "$pid" || fail "cannot kill sluiced $pid"
	slt_retry 50 0.1 eval "! slt_pid_alive $pid" || fail "sluiced survived SIGKILL"
	note "$(date +%T.%N) sluiced $pid killed"
	sleep 1
	sluiced_start || fail "sluiced did not restart"
	note "$(date +%T.%N) sluiced restarted as $(sluiced_pid)"
	wait "$client"
	note "sandbox exit status $?"

	total=$(grep -cE '^[0-9]+ ' "$W/rl.out")
	ok=$(grep -cE '^[0-9]+ ok ' "$W/rl.out")
	refused=$(grep -cE '^[0-9]+ connect ECONNREFUSED$' "$W/rl.out")
	inflight=$(grep -cE '^[0-9]+ failed (ECONNRESET|EPIPE|bad body|status None)$' "$W/rl.out")
	other=$((total - ok - refused - inflight))
	note "requests: $total; ok $ok, connection refused $refused, lost in flight $inflight, other $other"
	grep -vE '^[0-9]+ ok ' "$W/rl.out" | head -n 20 >&2
	assert_eq "$total" 200 "requests the sandbox made"
	[ "$other" = 0 ] || fail "$other request(s) ended neither in success nor in a refused/lost connection"
	[ "$refused" -ge 1 ] || fail "no request was refused: sluiced was never seen down"
	[ "$inflight" -le 5 ] || fail "$inflight requests lost in flight (expected only those at the kill)"
	bad=$(grep -E '^[0-9]+ ok ' "$W/rl.out" | awk -v gw="$SLT_GW4" '$3 != gw' | head -n 3)
	[ -z "$bad" ] || fail "successful requests that the upstream saw from elsewhere: $bad"
	# The upstream side: every request of the loop came from sluiced.
	n=$(up_requests "$m-" | wc -l)
	note "upstream saw $n request(s) of the loop"
	[ "$n" -ge "$ok" ] || fail "the upstream saw fewer requests ($n) than succeeded ($ok)"
	bad=$(up_requests "$m-" | jq -r --arg a "$SLT_GW4" 'select(.client != $a) | .client' | sort -u)
	[ -z "$bad" ] || fail "loop requests reached the upstream from $bad"
	assert_conns_from_gateway "restart under load"
	# The same sandbox works again after the restart.
	assert_grep '^after: status 200$' "$W/rl.out" "a request after the restart"
	assert_via_sluiced "$m-after"
	assert_untouched md foreign "restart under load"
}
