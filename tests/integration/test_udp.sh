# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# UDP destinations allowed by policy (network.udp). The BPF sendmsg/connect
# programs send a datagram to an allowed destination to sluiced's UDP relay
# (127.0.0.1 / ::1, --udp-port) in the sandbox's netns; the relay sends it on
# from the gateway with one upstream socket per sandbox socket and sends the
# answers back; recvmsg restores the destination as their source. A socket
# is pinned to the first allowed destination it uses; anything else, and any
# destination no rule allows, gets EACCES. Each flow leaves an audit line of
# kind "udp" when it opens and one when it closes.
#
# The tests start their own UDP servers in the upstream netns (an echo on
# 5300 and 5301, a sink on 5302, at 198.18.X.2 and 2001:db8:5c:X::2; every
# datagram logged to $W/udp.log with its payload, so each probe's datagrams
# are found by their marker) and assert, besides the outcome, that nothing
# reached a server, a resolver or the upstream's UDP sink on 443 that should
# not have been reached.

UDP_LOG_NAME=udp.log

# udp_srv_up NETNS NAME LOG ARGS...: an upstream.py UDP server (ARGS: its
# --udp/--udp-echo/--bind options) in NETNS, logging to LOG, pid recorded in
# $SLT_PIDS/NAME (so topo_down kills it if this test is killed). Waits for it.
udp_srv_up() {
	local ns=$1 name=$2 log=$3 i
	shift 3
	rm -f "$W/$name.ready"
	: >"$log"
	slt_spawn_in "$ns" "$name" "$SLT_PY" "$SLT_UPSTREAM_PY" "$@" --log "$log" \
		--ready "$W/$name.ready"
	UDP_SRV_NAMES="${UDP_SRV_NAMES:-} $name"
	for ((i = 0; i < 50; i++)); do
		[ -e "$W/$name.ready" ] && return 0
		sleep 0.1
	done
	cat "$SLT_TMP/$name.out" >&2
	fail "UDP server $name did not start"
}

# udp_srv_down: stop every server udp_srv_up started in this test.
udp_srv_down() {
	local name pid i
	for name in ${UDP_SRV_NAMES:-}; do
		pid=$(cat "$SLT_PIDS/$name" 2>/dev/null) || continue
		kill -TERM "$pid" 2>/dev/null
		for ((i = 0; i < 30; i++)); do
			slt_pid_alive "$pid" || break
			sleep 0.1
		done
		slt_pid_alive "$pid" && kill -KILL "$pid" 2>/dev/null
		rm -f "$SLT_PIDS/$name"
	done
	UDP_SRV_NAMES=
}

# udp_echo_up: echo on 5300 and 5301, sink on 5302, at the upstream's v4 and
# v6 addresses, logging to $UDP_LOG. The gateway (sluiced's netns) must get
# its answers, or "it logged nothing" would prove nothing; then the log
# starts empty.
udp_echo_up() {
	local a r
	UDP_LOG=$W/$UDP_LOG_NAME
	udp_srv_up "$SLT_UP_NSPATH" "udpecho-$SLT_TEST" "$UDP_LOG" --udp-echo 5300 \
		--udp-echo 5301 --udp 5302 --bind "$SLT_UP4" --bind "$SLT_UP6"
	for a in "$SLT_UP4" "$SLT_UP6"; do
		r=$(timeout -k 2 10 nsenter --net="$SLT_GW_NSPATH" "${PROBE[@]}" udpecho "$a" 5300 \
			--payload "selfcheck-$a" 2>&1)
		assert_eq "$r" "reply from $a 5300 payload-ok" "echo server answers the gateway at $a"
	done
	: >"$UDP_LOG"
}

# udp_pol FILE: the policy of most tests: the upstream's echo port, v4 (bare
# address) and v6 (a /128 and a one-port range), plus its second echo port
# over v4 under another rule.
udp_pol() {
	cat >"$1" <<EOF
version: 1
network:
  udp:
    - name: echo4
      to: $SLT_UP4
      ports: [5300]
    - name: echo6
      to: $SLT_UP6/128
      ports: ["5300-5300"]
    - name: echo4-second
      to: $SLT_UP4/32
      ports: [5301]
EOF
}

# udp_seen MARK: the lines of $UDP_LOG whose payload is MARK or MARK-...
udp_seen() {
	jq -c --arg m "$1" 'select((.data // "") as $d | $d == $m or ($d | startswith($m + "-")))' \
		"$UDP_LOG"
}

# udp_assert_relayed MARK PORT CLIENT: exactly one datagram MARK (or MARK-...)
# reached the echo on PORT, from CLIENT (the gateway's address: sent by
# sluiced's relay).
udp_assert_relayed() {
	local l
	l=$(udp_seen "$1")
	[ "$(printf '%s' "$l" | grep -c .)" = 1 ] || {
		note "--- $UDP_LOG:"
		cat "$UDP_LOG" >&2
		fail "echo server saw $(printf '%s' "$l" | grep -c .) datagram(s) with $1, expected 1"
	}
	assert_eq "$(jq -r '.kind + " " + (.port | tostring)' <<<"$l")" "udp_echo $2" \
		"datagram $1 reached"
	assert_eq "$(jq -r .client <<<"$l")" "$3" "datagram $1 came from"
	assert_eq "$(jq -r .bytes <<<"$l")" "${#1}" "datagram $1 size"
}

# udp_assert_unseen MARK WHAT: no datagram MARK or MARK-... reached any server.
udp_assert_unseen() {
	local l
	l=$(udp_seen "$1")
	[ -z "$l" ] || fail "$2: a datagram reached the server: $l"
}

# udp_assert_no_sink WHAT: the sinks (5302 here, 443 on the upstream) got
# nothing since esc_snap.
udp_assert_no_sink() {
	local l
	l=$(jq -c 'select(.kind == "udp")' "$UDP_LOG")
	[ -z "$l" ] || fail "$1: the UDP sink on 5302 got: $l"
	l=$(esc_new up | jq -c 'select(.kind == "udp")')
	[ -z "$l" ] || fail "$1: the upstream's UDP sink on 443 got: $l"
}

# udp_audit SANDBOX REASON [N]: the audit lines of kind udp of SANDBOX with
# REASON, once there are at least N (default 1; waits up to 5 s). Prints what
# there is and fails (returns 1) if fewer.
udp_audit() {
	local i out=
	for ((i = 0; i < 50; i++)); do
		out=$(jq -c --arg s "$1" --arg r "$2" \
			'select(.kind == "udp" and .sandbox == $s and .reason == $r)' \
			"$SLT_TMP/audit.jsonl" 2>/dev/null)
		[ "$(printf '%s' "$out" | grep -c .)" -ge "${3:-1}" ] && break
		sleep 0.1
	done
	[ -n "$out" ] && printf '%s\n' "$out"
	[ "$(printf '%s' "$out" | grep -c .)" -ge "${3:-1}" ]
}

# udp_assert_open SANDBOX ADDR PORT RULE: one flow-open audit line for
# SANDBOX, to ADDR:PORT (the address as the sandbox spelled it; for an
# IPv4-mapped one, the IPv4 address is fine too), allowed by RULE.
udp_assert_open() {
	local sb=$1 a=$2 port=$3 rule=$4 l host up want_up alt_up=
	l=$(udp_audit "$sb" udp_flow_open) || fail "no audit line udp_flow_open for $sb"
	note "audit: $l"
	assert_eq "$(printf '%s\n' "$l" | grep -c .)" 1 "flow-open lines of $sb"
	assert_eq "$(jq -r '[.kind, .scheme, .decision, .rule, (.port | tostring)] | join(" ")' \
		<<<"$l")" "udp udp allow $rule $port" "flow-open line of $sb"
	host=$(jq -r .host <<<"$l")
	up=$(jq -r .upstream_addr <<<"$l")
	case $a in
	::ffff:*)
		[ "$host" = "$a" ] || [ "$host" = "${a#::ffff:}" ] ||
			fail "flow-open host: expected $a or ${a#::ffff:}, got $host"
		want_up=${a#::ffff:}:$port
		alt_up="[$a]:$port"
		;;
	*:*)
		assert_eq "$host" "$a" "flow-open host"
		want_up="[$a]:$port"
		;;
	*)
		assert_eq "$host" "$a" "flow-open host"
		want_up=$a:$port
		;;
	esac
	[ "$up" = "$want_up" ] || [ "$up" = "$alt_up" ] ||
		fail "flow-open upstream_addr: expected $want_up, got $up"
}

# udp_gw ADDR: the gateway address sluiced's relay sends from to ADDR.
udp_gw() {
	case $1 in
	::ffff:*) echo "$SLT_GW4" ;;
	*:*) echo "$SLT_GW6" ;;
	*) echo "$SLT_GW4" ;;
	esac
}

# (a) The netns sandbox: sendto and connect()+send, v4, v6 and the
# IPv4-mapped spelling. The echo comes back with the address the sandbox sent
# to as its source; the echo server got the datagram from the gateway (the
# sandbox netns has no route anywhere: it was relayed by sluiced); one
# audit line opens the flow and one closes it when the sandbox goes
# (detach), counting the payload bytes each way.
test_udp_echo_netns() {
	local P=$W/p.yaml a mode r id m n=0 rule l
	trap udp_srv_down EXIT
	udp_echo_up
	udp_pol "$P"
	esc_snap
	for a in "$SLT_UP4" "$SLT_UP6" "::ffff:$SLT_UP4"; do
		case $a in ::ffff:* | *.*) rule=echo4 ;; *) rule=echo6 ;; esac
		for mode in "" --connect; do
			n=$((n + 1))
			id=slt-udpa-$$-$n
			m=$(mark udpa)
			r=$(sbx_run --policy "$P" --id "$id" -- "${PROBE[@]}" udpecho "$a" 5300 \
				${mode:+"$mode"} --payload "$m" 2>&1)
			note "[$a]:5300 ${mode:-sendto} -> $r"
			assert_eq "$r" "reply from $a 5300 payload-ok" "echo via [$a]:5300 ${mode:-sendto}"
			udp_assert_relayed "$m" 5300 "$(udp_gw "$a")"
			udp_assert_open "$id" "$a" 5300 "$rule"
			l=$(udp_audit "$id" udp_flow_closed) ||
				fail "no audit line udp_flow_closed for $id after the sandbox went"
			assert_eq "$(jq -r '[.decision, .rule, .bytes_in, .bytes_out] | map(tostring) |
				join(" ")' <<<"$l")" "allow $rule ${#m} ${#m}" "flow-closed line of $id"
		done
	done
	udp_assert_no_sink "allowed UDP"
	assert_untouched up upconn md dns foreign "allowed UDP"
}

# (b) One destination per socket: after an exchange with an allowed
# destination, the same socket gets EACCES for another allowed destination
# (another rule's port, the other family's rule, a resolver), and nothing
# arrives there; the same destination again still works.
test_udp_one_destination_per_socket() {
	local P=$W/p.yaml m r mode second
	trap udp_srv_down EXIT
	udp_echo_up
	udp_pol "$P"
	esc_snap
	for mode in "" --connect; do
		m=$(mark udpb)
		r=$(sbx_run --policy "$P" -- "${PROBE[@]}" udpecho "$SLT_UP4" 5300 ${mode:+"$mode"} \
			--payload "$m" --second "$SLT_UP4:5301" 2>&1)
		note "${mode:-sendto} :5300 then :5301 -> $(tr '\n' '|' <<<"$r")"
		assert_eq "$(sed -n 1p <<<"$r")" "reply from $SLT_UP4 5300 payload-ok" \
			"first destination (${mode:-sendto})"
		assert_eq "$(sed -n 2p <<<"$r")" EACCES "second allowed destination (${mode:-sendto})"
		udp_assert_relayed "$m" 5300 "$SLT_GW4"
		udp_assert_unseen "$m-second" "second destination (${mode:-sendto})"
	done
	# the same socket, once v6 and once v4, then the other family's allowed
	# destination (spelled so the socket can send there)
	m=$(mark udpb)
	r=$(sbx_run --policy "$P" -- "${PROBE[@]}" udpecho "$SLT_UP6" 5300 --payload "$m" \
		--second "[::ffff:$SLT_UP4]:5300" 2>&1)
	note "v6 then ::ffff:v4 -> $(tr '\n' '|' <<<"$r")"
	assert_eq "$(sed -n 1p <<<"$r")" "reply from $SLT_UP6 5300 payload-ok" "v6 first"
	assert_eq "$(sed -n 2p <<<"$r")" EACCES "then the v4 rule's destination"
	udp_assert_relayed "$m" 5300 "$SLT_GW6"
	udp_assert_unseen "$m-second" "v6 then v4"
	# DNS is another destination too
	for second in "$SLT_FOREIGN4:53" "$SLT_DNS4:53"; do
		m=$(mark udpb)
		r=$(sbx_run --policy "$P" -- "${PROBE[@]}" udpecho "$SLT_UP4" 5300 --payload "$m" \
			--second "$second" 2>&1)
		note "then $second -> $(tr '\n' '|' <<<"$r")"
		assert_eq "$(sed -n 1p <<<"$r")" "reply from $SLT_UP4 5300 payload-ok" "before DNS"
		assert_eq "$(sed -n 2p <<<"$r")" EACCES "then $second from the same socket"
		udp_assert_relayed "$m" 5300 "$SLT_GW4"
	done
	# the pinned destination itself, again: answered
	m=$(mark udpb)
	r=$(sbx_run --policy "$P" -- "${PROBE[@]}" udpecho "$SLT_UP4" 5300 --payload "$m" \
		--second "$SLT_UP4:5300" 2>&1)
	assert_eq "$(tr '\n' '|' <<<"$r")" \
		"reply from $SLT_UP4 5300 payload-ok|reply from $SLT_UP4 5300 payload-ok|" \
		"the same destination twice"
	[ "$(udp_seen "$m" | wc -l)" = 2 ] || fail "echo server did not see both datagrams of $m"
	udp_assert_no_sink "second destination"
	assert_untouched up upconn md dns foreign "second destination"
}

# (c) Destinations no rule allows get EACCES although the policy has UDP
# rules: the same host's other ports (the upstream's sink on 443, the sink on
# 5302), another host on the allowed port; with a rule whose range holds the
# upstream and a network.deny entry for the upstream, deny wins (also for
# the host's own address inside the range).
test_udp_not_allowed() {
	local P=$W/p.yaml P2=$W/p2.yaml a port mode r m
	trap udp_srv_down EXIT
	udp_echo_up
	# a sink at the gateway's own addresses: a relay sending there is visible
	udp_srv_up "$SLT_GW_NSPATH" "udpgw-$SLT_TEST" "$W/gw.log" --udp 5300 \
		--bind "$SLT_GW4" --bind "$SLT_GW6"
	udp_pol "$P"
	esc_snap
	for a in "$SLT_UP4" "$SLT_UP6" "::ffff:$SLT_UP4"; do
		for port in 443 5302; do
			for mode in "" --connect; do
				m=$(mark udpc)
				r=$(sbx_run --policy "$P" -- "${PROBE[@]}" udpecho "$a" "$port" \
					${mode:+"$mode"} --payload "$m" 2>&1)
				note "[$a]:$port ${mode:-sendto} -> $r"
				assert_eq "$r" EACCES "UDP to [$a]:$port ${mode:-sendto} with UDP rules present"
			done
		done
	done
	for a in "$SLT_DOWN4" "$SLT_FOREIGN6" "$SLT_GW4"; do
		r=$(sbx_run --policy "$P" -- "${PROBE[@]}" udpecho "$a" 5300 2>&1)
		note "[$a]:5300 (no rule for this host) -> $r"
		assert_eq "$r" EACCES "UDP to another host's port 5300"
	done
	cat >"$P2" <<EOF
version: 1
network:
  deny: ["$SLT_UP4/32", "$SLT_UP6/128"]
  udp:
    - name: range4
      to: ${SLT_UP4%.*}.0/29
      ports: [5300]
    - name: range6
      to: ${SLT_UP6%::*}::/64
      ports: [5300]
EOF
	for a in "$SLT_UP4" "::ffff:$SLT_UP4" "$SLT_UP6" "$SLT_GW4" "$SLT_GW6"; do
		for mode in "" --connect; do
			r=$(sbx_run --policy "$P2" -- "${PROBE[@]}" udpecho "$a" 5300 ${mode:+"$mode"} 2>&1)
			note "deny wins: [$a]:5300 ${mode:-sendto} -> $r"
			assert_eq "$r" EACCES "[$a]:5300 allowed by a range, denied by network.deny / host address"
		done
	done
	[ -z "$(cat "$UDP_LOG")" ] || fail "a refused datagram reached the upstream: $(cat "$UDP_LOG")"
	[ -z "$(cat "$W/gw.log")" ] || fail "a refused datagram reached the gateway: $(cat "$W/gw.log")"
	udp_assert_no_sink "refused UDP"
	assert_untouched up upconn md dns foreign "refused UDP"
	[ -z "$(esc_new audit | jq -c 'select(.kind == "udp" and .decision == "allow")')" ] ||
		fail "a flow was opened: $(esc_new audit | jq -c 'select(.kind == "udp")')"
}

# (d) A sandbox sharing the host's netns (here the gateway's, where the
# upstream is routable): the same echo, still through the relay: the echo
# server saw the datagram from a port other than the sandbox socket's own
# (sluiced's upstream socket), and the flow is in the audit log; UDP 443
# still EACCES.
test_udp_echo_host_netns() {
	local P=$W/p.yaml a mode r id m n=0 rule lport cport
	trap udp_srv_down EXIT
	udp_echo_up
	udp_pol "$P"
	esc_snap
	for a in "$SLT_UP4" "$SLT_UP6" "::ffff:$SLT_UP4"; do
		case $a in ::ffff:* | *.*) rule=echo4 ;; *) rule=echo6 ;; esac
		for mode in "" --connect; do
			n=$((n + 1))
			id=slt-udpd-$$-$n
			m=$(mark udpd)
			r=$(sbx_run --netns host --policy "$P" --id "$id" -- "${PROBE[@]}" udpecho "$a" \
				5300 ${mode:+"$mode"} --payload "$m" --local 2>&1)
			note "host netns [$a]:5300 ${mode:-sendto} -> $r"
			assert_eq "${r% local *}" "reply from $a 5300 payload-ok" \
				"host netns echo via [$a]:5300 ${mode:-sendto}"
			lport=${r##* local }
			udp_assert_relayed "$m" 5300 "$(udp_gw "$a")"
			cport=$(udp_seen "$m" | jq -r .client_port)
			[ "$cport" != "$lport" ] ||
				fail "the datagram reached the upstream from the sandbox socket's own port $lport: not relayed"
			udp_assert_open "$id" "$a" 5300 "$rule"
		done
	done
	for a in "$SLT_UP4" "$SLT_UP6"; do
		r=$(sbx_run --netns host --policy "$P" -- "${PROBE[@]}" udpecho "$a" 443 2>&1)
		assert_eq "$r" EACCES "host netns: UDP [$a]:443"
		r=$(sbx_run --netns host --policy "$P" -- "${PROBE[@]}" udpecho "$a" 5302 2>&1)
		assert_eq "$r" EACCES "host netns: UDP [$a]:5302"
	done
	udp_assert_no_sink "host netns"
	assert_untouched up upconn md dns foreign "host netns"
}

# (e) A udp rule wholly inside the sandbox's deny set (a private range the
# policy does not allow, the metadata address in both families) stops the
# run before the command starts, with a message naming the rule's address,
# UDP and the deny set; with the range in network.allow the same rule loads.
test_udp_rule_in_deny_set() {
	local to n=0 rc out why
	esc_snap
	# the private range must be refused for the deny set; the metadata
	# addresses may be refused earlier, by the compiler, as metadata
	for to in 10.9.8.7 169.254.169.254 fd00:ec2::254; do
		n=$((n + 1))
		case $to in 10.*) why='deny set' ;; *) why='deny set|metadata' ;; esac
		printf 'version: 1\nnetwork:\n  udp:\n    - name: inside-%s\n      to: %s\n      ports: [5300]\n' \
			"$n" "$to" >"$W/bad$n.yaml"
		rc=0
		out=$(sbx_run --policy "$W/bad$n.yaml" -- sh -c "echo ran >'$W/ran$n'" 2>&1) || rc=$?
		note "udp rule to $to: exit $rc: $out"
		out=${out//$W/} # the test's directory name says deny set too
		[ "$rc" -ne 0 ] || fail "a policy with a udp rule to $to (inside the deny set) was accepted"
		[ ! -e "$W/ran$n" ] || fail "the command ran under a udp rule to $to"
		grep -qiF -e "$to" -e "inside-$n" <<<"$out" ||
			fail "the refusal names neither $to nor the rule: $out"
		grep -qi 'udp' <<<"$out" || fail "the refusal does not name network.udp: $out"
		grep -Eqi "$why" <<<"$out" || fail "the refusal does not say /$why/: $out"
	done
	# control: the private range allowed, the same rule loads and the command runs
	printf 'version: 1\nnetwork:\n  allow: ["10.9.8.0/24"]\n  udp:\n    - name: inside\n      to: 10.9.8.7\n      ports: [5300]\n' \
		>"$W/ok.yaml"
	out=$(sbx_run --policy "$W/ok.yaml" -- sh -c "echo ran >'$W/ran-ok'" 2>&1) ||
		fail "a udp rule to 10.9.8.7 with 10.9.8.0/24 in network.allow was refused: $out"
	[ -e "$W/ran-ok" ] || fail "the command did not run under the accepted policy"
	assert_untouched up upconn md dns foreign "policy load"
}

# udp_session_py: a long-lived sandbox process. Socket A is connected to
# ADDR:PORT, socket B sends with sendto. Step 1 at once, step i (i > 1) once
# GO.i exists: one exchange on each (payload MARK-i-A / MARK-i-B), printed
# "i A RESULT" / "i B RESULT". With "new": then a fresh socket C (sendto) and
# D (connect) try once each ("new C RESULT", "new D RESULT"). Then "done".
udp_session_py() {
	cat >"$W/session.py" <<'EOF'
import errno, os, socket, sys, time
addr, port, mark, go, steps, new = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], \
    int(sys.argv[5]), sys.argv[6] == "new"
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET

def en(e):
    return errno.errorcode.get(e.errno, str(e.errno))

def xchg(s, payload, connected):
    try:
        if connected:
            s.send(payload)
        else:
            s.sendto(payload, (addr, port))
    except OSError as e:
        return en(e)
    try:
        data, peer = s.recvfrom(65535)
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return en(e)
    return "reply from %s %d %s" % (peer[0], peer[1], "payload-ok" if data == payload else "payload-bad")

def sock():
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.settimeout(3)
    return s

a, b = sock(), sock()
try:
    a.connect((addr, port))
except OSError as e:
    print("connect", en(e), flush=True)
for step in range(1, steps + 1):
    if step > 1:
        for _ in range(600):  # 30 s
            if os.path.exists("%s.%d" % (go, step)):
                break
            time.sleep(0.05)
        else:
            print(step, "no go", flush=True)
            sys.exit(1)
    print(step, "A", xchg(a, ("%s-%d-A" % (mark, step)).encode(), True), flush=True)
    print(step, "B", xchg(b, ("%s-%d-B" % (mark, step)).encode(), False), flush=True)
if new:
    print("new C", xchg(sock(), ("%s-new-C" % mark).encode(), False), flush=True)
    d = sock()
    try:
        d.connect((addr, port))
        print("new D", xchg(d, ("%s-new-D" % mark).encode(), True), flush=True)
    except OSError as e:
        print("new D", en(e), flush=True)
print("done", flush=True)
EOF
}

# udp_wait_line FILE PATTERN SECONDS: wait until a line of FILE matches PATTERN.
udp_wait_line() {
	local i
	for ((i = 0; i < $3 * 10; i++)); do
		grep -Eq -- "$2" "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	note "--- $1:"
	cat "$1" >&2
	fail "no line /$2/ in $(basename "$1") within $3 s"
}

# udp_bg_stop: end the background sandbox of this test ($UDP_BG: the
# subshell running sbx_run; TERM to its child, timeout(1), goes on to
# sluicectl, which forwards it to the command).
UDP_BG=
udp_bg_stop() {
	[ -n "${UDP_BG:-}" ] || return 0
	pkill -TERM -P "$UDP_BG" 2>/dev/null
	kill -TERM "$UDP_BG" 2>/dev/null
	UDP_BG=
}

# (f) Reload: a long-lived sandbox exchanges datagrams on a connected and an
# unconnected socket; a reload to a policy whose udp rule lies in the deny
# set is refused and the flows keep working; a reload without the rule stops
# them: the connected socket's next datagram (which the BPF sendmsg program
# never sees) is dropped by the relay (no answer, audit deny
# udp_not_allowed), the unconnected one's is refused or dropped, nothing
# reaches the echo server, and new sockets get EACCES.
test_udp_reload_removes_rule() {
	local P=$W/p.yaml id=slt-udpf-$$ m rc l
	trap 'udp_bg_stop; udp_srv_down' EXIT
	udp_echo_up
	udp_pol "$P"
	udp_session_py
	esc_snap
	m=$(mark udpf)
	sbx_run --policy "$P" --id "$id" -- "$SLT_PY" "$W/session.py" "$SLT_UP4" 5300 "$m" "$W/go" 3 \
		new >"$W/session.out" 2>&1 &
	UDP_BG=$!
	udp_wait_line "$W/session.out" '^1 B ' 15
	assert_eq "$(grep '^1 A ' "$W/session.out")" "1 A reply from $SLT_UP4 5300 payload-ok" \
		"connected socket before the reload"
	assert_eq "$(grep '^1 B ' "$W/session.out")" "1 B reply from $SLT_UP4 5300 payload-ok" \
		"unconnected socket before the reload"

	# a reload to a policy with a udp rule inside the deny set: refused
	printf 'version: 1\nnetwork:\n  udp:\n    - name: echo4\n      to: 10.9.8.7\n      ports: [5300]\n' \
		>"$P"
	rc=0
	ctl reload --id "$id" >"$W/reload-bad.out" 2>&1 || rc=$?
	note "reload to a udp rule in the deny set: exit $rc: $(cat "$W/reload-bad.out")"
	[ "$rc" -ne 0 ] || fail "a reload to a udp rule inside the deny set was accepted"
	sed "s|$W||g" "$W/reload-bad.out" | grep -qi 'udp.*deny set' ||
		fail "the reload refusal does not name network.udp and the deny set"
	touch "$W/go.2"
	udp_wait_line "$W/session.out" '^2 B ' 15
	assert_eq "$(grep '^2 A ' "$W/session.out")" "2 A reply from $SLT_UP4 5300 payload-ok" \
		"connected socket after the refused reload"
	assert_eq "$(grep '^2 B ' "$W/session.out")" "2 B reply from $SLT_UP4 5300 payload-ok" \
		"unconnected socket after the refused reload"

	# the rule removed
	printf 'version: 1\n' >"$P"
	ctl reload --id "$id" >"$W/reload.out" 2>&1 || { cat "$W/reload.out" >&2; fail "reload"; }
	touch "$W/go.3"
	udp_wait_line "$W/session.out" '^done' 20
	wait "$UDP_BG"
	UDP_BG=
	cat "$W/session.out" >&2
	assert_eq "$(grep '^3 A ' "$W/session.out")" "3 A timeout" \
		"connected socket after the rule went: dropped by the relay"
	case $(grep '^3 B ' "$W/session.out") in
	"3 B timeout" | "3 B EACCES") ;;
	*) fail "unconnected socket after the rule went: $(grep '^3 B ' "$W/session.out")" ;;
	esac
	assert_eq "$(grep '^new C ' "$W/session.out")" "new C EACCES" "new socket, sendto"
	assert_eq "$(grep '^new D ' "$W/session.out")" "new D EACCES" "new socket, connect"

	udp_assert_relayed "$m-1-A" 5300 "$SLT_GW4"
	udp_assert_relayed "$m-1-B" 5300 "$SLT_GW4"
	udp_assert_relayed "$m-2-A" 5300 "$SLT_GW4"
	udp_assert_relayed "$m-2-B" 5300 "$SLT_GW4"
	udp_assert_unseen "$m-3" "after the reload"
	udp_assert_unseen "$m-new" "new sockets after the reload"
	l=$(udp_audit "$id" udp_not_allowed) || fail "no audit line udp_not_allowed for $id"
	note "audit: $l"
	assert_eq "$(jq -r '[.kind, .decision, .host, (.port | tostring)] | join(" ")' <<<"$l" |
		sort -u)" "udp deny $SLT_UP4 5300" "the relay's refusal after the reload"
	l=$(udp_audit "$id" udp_flow_open 2)
	assert_eq "$(printf '%s\n' "$l" | grep -c .)" 2 "flows opened (A and B, before the reload)"
	udp_assert_no_sink "reload"
	assert_untouched up upconn md dns foreign "reload"
}

# (g) Flow close on idle: sluiced with --udp-idle-timeout-ms 300. After one
# exchange on each of two sockets of a sandbox that stays attached, both
# flows close within a few seconds (not 60) with an audit line counting the
# payload bytes each way; the same sockets then still work (a new flow each).
test_udp_flow_closed_idle() {
	local id=slt-udpg-$$ m l i want t0 dt
	trap 'udp_bg_stop; udp_srv_down; sluiced_stop; sluiced_start >/dev/null 2>&1' EXIT
	udp_echo_up
	udp_pol "$W/p.yaml"
	udp_session_py
	sluiced_stop
	sluiced_start --udp-idle-timeout-ms 300 ||
		fail "sluiced --udp-idle-timeout-ms 300 did not start"
	esc_snap
	m=$(mark udpg)
	want=$((${#m} + 4)) # MARK-1-A
	sbx_run --policy "$W/p.yaml" --id "$id" -- "$SLT_PY" "$W/session.py" "$SLT_UP4" 5300 "$m" \
		"$W/go" 2 none >"$W/session.out" 2>&1 &
	UDP_BG=$!
	udp_wait_line "$W/session.out" '^1 B ' 15
	assert_eq "$(grep -c 'payload-ok' "$W/session.out")" 2 "both sockets answered"
	# the sandbox is still there (waiting for go.2): only the idle timeout closes
	t0=$(date +%s%N)
	l=$(udp_audit "$id" udp_flow_closed 2) ||
		fail "the two idle flows were not closed (audit udp_flow_closed) within 5 s"
	dt=$((($(date +%s%N) - t0) / 1000000))
	note "audit ($dt ms after the exchange): $l"
	# 300 ms plus the relay's sweep period (1 s) plus slack; the default is 60 s
	[ "$dt" -le 3000 ] || fail "idle flows closed only $dt ms after the exchange (timeout 300 ms)"
	slt_pid_alive "$UDP_BG" || fail "the sandbox went before its flows timed out"
	assert_eq "$(jq -r '[.decision, .rule, .host, (.port | tostring), (.bytes_in | tostring),
		(.bytes_out | tostring), (.duration_us | type)] | join(" ")' <<<"$l" | sort -u)" \
		"allow echo4 $SLT_UP4 5300 $want $want number" "flow-closed lines"
	touch "$W/go.2"
	udp_wait_line "$W/session.out" '^done' 15
	wait "$UDP_BG"
	UDP_BG=
	cat "$W/session.out" >&2
	assert_eq "$(grep '^2 A ' "$W/session.out")" "2 A reply from $SLT_UP4 5300 payload-ok" \
		"connected socket after its flow timed out"
	assert_eq "$(grep '^2 B ' "$W/session.out")" "2 B reply from $SLT_UP4 5300 payload-ok" \
		"unconnected socket after its flow timed out"
	udp_audit "$id" udp_flow_open 4 >/dev/null || fail "no new flows after the idle close"
	for i in 1-A 1-B 2-A 2-B; do udp_assert_relayed "$m-$i" 5300 "$SLT_GW4"; done
	udp_assert_no_sink "idle close"
	assert_untouched up upconn md dns foreign "idle close"
}
