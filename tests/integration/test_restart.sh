# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# Fail closed across a daemon crash: an attached long-lived sandbox (our own
# cgroup + `ip netns add` netns, attached with `sluicectl attach`) works;
# sluiced is SIGKILLed: the sandbox's connects are refused (the pinned BPF
# links still redirect them to the now-closed listener, so ECONNREFUSED, not
# a bypass and not "network unreachable"), and the upstream sees nothing;
# sluiced restarted with the same dirs: the same sandbox works again without
# re-attaching.

test_restart_fail_closed() {
	local ns=${SLT_PFX}at$$ cg=$SLT_CG/att$$ id=slt-att-$$ m lines i
	ip netns add "$ns" || fail "ip netns add $ns"
	ip -n "$ns" link set lo up
	mkdir -p "$cg" || fail "mkdir $cg"
	# shellcheck disable=SC2064
	trap "ctl detach --id $id >/dev/null 2>&1; ip netns del $ns 2>/dev/null; slt_cgroup_rm $cg" EXIT
	ctl attach --cgroup "$cg" --netns "/run/netns/$ns" --id "$id" >&2 || fail "sluicectl attach"
	eval "$(ctl env)" || fail "sluicectl env"
	export SSL_CERT_FILE CURL_CA_BUNDLE
	[ -r "${SSL_CERT_FILE:-}" ] || fail "sluicectl env gave no readable SSL_CERT_FILE"

	# inatt CMD...: CMD inside the attached sandbox (its netns, its cgroup).
	inatt() {
		timeout -k 2 30 nsenter --net="/run/netns/$ns" sh -c \
			'echo $$ >"$0/cgroup.procs" && exec "$@"' "$cg" \
			"$SLT_INHOSTS" "$SLT_CLIENT_HOSTS" "$@"
	}
	cat >"$W/connect.py" <<'EOF'
import errno, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(5)
try:
    s.connect((sys.argv[1], 443))
    print("connected")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
EOF

	m=$(mark before)
	inatt curl -sS --max-time 10 -o "$W/before.out" "https://upstream.test/echo?id=$m" ||
		fail "request from the attached sandbox failed before the kill"
	assert_via_sluiced "$m"

	local pid
	pid=$(sluiced_pid)
	kill -KILL "$pid"
	slt_retry 50 0.1 eval "! slt_pid_alive $pid" || fail "sluiced survived SIGKILL"
	note "sluiced $pid killed"
	lines=$(wc -l <"$SLT_UP_LOG")

	m=$(mark during)
	if inatt curl -sS --max-time 5 -o /dev/null "https://upstream.test/echo?id=$m" \
		2>"$W/during.err"; then
		fail "a request succeeded while sluiced was down"
	fi
	cat "$W/during.err" >&2
	inatt "$SLT_PY" "$W/connect.py" "$SLT_UP4" >"$W/during.connect" 2>&1
	note "raw connect while down: $(cat "$W/during.connect")"
	assert_eq "$(cat "$W/during.connect")" ECONNREFUSED "connect() while sluiced is down"
	assert_eq "$(wc -l <"$SLT_UP_LOG")" "$lines" "upstream log lines while sluiced was down"

	sluiced_start || fail "sluiced restart"
	note "sluiced restarted as $(sluiced_pid)"
	m=$(mark after)
	for ((i = 0; i < 20; i++)); do
		inatt curl -sS --max-time 5 -o "$W/after.out" "https://upstream.test/echo?id=$m" \
			2>"$W/after.err" && break
		sleep 0.5
	done
	[ $i -lt 20 ] || { cat "$W/after.err" >&2; fail "sandbox does not work after restart"; }
	[ $i -eq 0 ] || note "worked after $i retries"
	assert_via_sluiced "$m"
}
