# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# Escape vectors over UDP: QUIC (UDP 443) and DNS. The cgroup sendmsg and
# connect programs refuse every datagram except DNS (EACCES), and send every
# DNS query, whatever resolver it names, to sluiced's DNS listener, which
# forwards it to sluiced's --dns-resolver (the test DNS server at
# 198.18.X.4). recvmsg restores the resolver's address as the answer's
# source, so stub resolvers accept it. The "foreign" resolver at 198.18.X.5
# answers every A query with 198.18.X.6: that answer must never be seen, and
# its log must stay empty.

# UDP 443 (QUIC), sendto and connect()+send, v4 and v6: EACCES, nothing
# sent (the upstream runs a UDP sink on 443 that logs every datagram). QUIC
# clients fall back to TCP, which is intercepted.
test_escape_udp_443() {
	local a mode r
	esc_snap
	for a in "$SLT_UP4" "$SLT_UP6" "::ffff:$SLT_UP4"; do
		for mode in "" --connect; do
			r=$(sbx_run -- "${PROBE[@]}" udp "$a" 443 $mode 2>&1)
			note "UDP to [$a]:443 ${mode:-sendto} -> $r"
			assert_eq "$r" EACCES "UDP [$a]:443 ${mode:-sendto}"
		done
	done
	# Other UDP too (NTP, a random port).
	r=$(sbx_run -- "${PROBE[@]}" udp "$SLT_UP4" 123 2>&1)
	assert_eq "$r" EACCES "UDP to :123"
	if sbx_run -- curl --version 2>/dev/null | grep -qw HTTP3; then
		local m
		m=$(mark quic)
		sbx_run -- curl -sS --http3 --max-time 10 -o /dev/null "https://upstream.test/echo?id=$m" \
			2>"$W/h3.err"
		note "curl --http3: $(cat "$W/h3.err")"
		assert_via_sluiced "$m"
	else
		note "curl has no HTTP/3 support here: only the socket-level refusal is tested"
	fi
	assert_hosts_untouched "UDP 443"
	[ -z "$(esc_new up | jq -r 'select(.kind == "udp")')" ] ||
		fail "the upstream's UDP sink received a datagram"
}

# DNS to a foreign resolver over UDP and TCP (v4 and v6): answered, with the
# foreign resolver as the source, by sluiced's path (the test DNS server saw
# the query from the gateway); the foreign resolver saw nothing.
test_escape_dns_foreign_resolver() {
	local srv proto r n
	esc_snap
	for srv in "$SLT_FOREIGN4" "$SLT_FOREIGN6"; do
		for proto in "" --tcp; do
			r=$(sbx_run -- "${PROBE[@]}" dns "$srv" upstream.test $proto 2>&1)
			note "A upstream.test @$srv ${proto:-udp} -> $r"
			assert_eq "$r" "rcode 0 from $srv answers $SLT_UP4" "answer via $srv ${proto:-udp}"
		done
	done
	# A name only the foreign resolver would answer: NXDOMAIN from ours.
	r=$(sbx_run -- "${PROBE[@]}" dns "$SLT_FOREIGN4" only-foreign.test 2>&1)
	assert_eq "$r" "rcode 3 from $SLT_FOREIGN4 answers -" "a name our resolver does not know"
	# The libc resolver (getent) with a resolv.conf naming the foreign
	# resolver and a hosts file without the test names. `sluicectl run`
	# offers no resolv.conf and its command may not mount, so this runs in a
	# sandbox attached with `sluicectl attach` (test's own cgroup + netns).
	printf 'nameserver %s\noptions timeout:2 attempts:1\n' "$SLT_FOREIGN4" >"$W/resolv.conf"
	printf '127.0.0.1 localhost\n' >"$W/hosts"
	trap esc_att_down EXIT
	esc_att_up
	r=$(timeout -k 2 20 nsenter --net="/run/netns/$ESC_ATT_NS" sh -c \
		'echo $$ >"$0/cgroup.procs" && exec unshare -m --propagation private sh -c \
		"mount --bind \"\$0\" /etc/resolv.conf && mount --bind \"\$1\" /etc/hosts && exec getent hosts api.example.test" "$1" "$2"' \
		"$ESC_ATT_CG" "$W/resolv.conf" "$W/hosts" 2>&1)
	note "getent hosts api.example.test (resolv.conf: $SLT_FOREIGN4) -> $(echo "$r" | head -n 1)"
	assert_eq "$(echo "$r" | awk 'NR == 1 {print $1}')" "$SLT_UP4" "getent via the foreign resolver"
	esc_att_down
	assert_untouched foreign "DNS to a foreign resolver"
	n=$(esc_new dns | jq -r --arg gw "$SLT_GW4" 'select(.client == $gw and .qname == "upstream.test") | .proto' |
		sort | uniq -c | tr -s ' \n' ' ')
	note "queries the test DNS server got from sluiced: $n"
	[ "$(esc_new dns | jq -r --arg gw "$SLT_GW4" 'select(.client != $gw) | .client')" = "" ] ||
		fail "the test DNS server got a query from something other than sluiced"
	[ "$(esc_new dns | jq -r 'select(.qname == "upstream.test")' | jq -s length)" -ge 4 ] ||
		fail "the test DNS server did not see the forwarded queries"
}

# dns: {mode: allowlist}: names outside the policy's hosts get NXDOMAIN from
# sluiced (over UDP and TCP, whatever resolver was asked), never reach any
# resolver, and leave an audit line of kind "dns"; allowed names resolve.
test_escape_dns_denied_name() {
	local r n
	cat >"$W/pol.yaml" <<EOP
version: 1
allow:
  - name: only-upstream
    host: upstream.test
dns:
  mode: allowlist
EOP
	esc_snap
	r=$(sbx_run --policy "$W/pol.yaml" -- "${PROBE[@]}" dns "$SLT_FOREIGN4" upstream.test 2>&1)
	assert_eq "$r" "rcode 0 from $SLT_FOREIGN4 answers $SLT_UP4" "an allowed name"
	r=$(sbx_run --policy "$W/pol.yaml" -- "${PROBE[@]}" dns "$SLT_FOREIGN4" api.example.test 2>&1)
	note "denied name over UDP -> $r"
	assert_eq "$r" "rcode 3 from $SLT_FOREIGN4 answers -" "a denied name over UDP"
	r=$(sbx_run --policy "$W/pol.yaml" -- "${PROBE[@]}" dns "$SLT_FOREIGN4" other.example.test \
		--tcp 2>&1)
	note "denied name over TCP -> $r"
	assert_eq "$r" "rcode 3 from $SLT_FOREIGN4 answers -" "a denied name over TCP"
	r=$(sbx_run --policy "$W/pol.yaml" -- "${PROBE[@]}" dns 10.53.0.1 api.example.test 2>&1)
	assert_eq "$r" "rcode 3 from 10.53.0.1 answers -" "a denied name to a resolver in a private range"
	sleep 0.5 # the audit writer is asynchronous
	esc_new audit | jq -c 'select(.kind == "dns")' >"$W/dns.audit"
	cat "$W/dns.audit" >&2
	for n in api.example.test other.example.test; do
		jq -s -e --arg n "$n" 'any(.[]; .host == $n and .decision == "deny")' "$W/dns.audit" \
			>/dev/null || fail "no audit line of kind dns denying $n"
	done
	jq -s -e 'any(.[]; .host == "upstream.test" and .decision == "allow")' "$W/dns.audit" \
		>/dev/null ||
		fail "no audit line of kind dns allowing upstream.test"
	[ -z "$(esc_new dns | jq -r 'select(.qname != "upstream.test") | .qname')" ] ||
		fail "a denied name reached the test DNS server: $(esc_new dns)"
	assert_untouched foreign md "DNS allowlist"
}

# UDP allowed by policy (network.udp) opens only what the deny set leaves.
# Rules whose ranges hold loopback and the gateway's own addresses, reaching
# past the deny set so the policy loads: every denied destination in them
# still gets EACCES, sendto and connect, in a netns sandbox and in a
# --netns host one (there loopback is the gateway's). A UDP sink at the
# gateway's own addresses (port 5300) shows nothing was sent there. A
# datagram to sluiced's UDP relay listener itself (127.0.0.1 / ::1 :15054,
# left alone by BPF for explicit use and nested sandboxes) is no way out
# either: the socket has no pinned destination, so the relay drops it (or
# BPF refuses it): no answer, no flow.
ESC_UDP_RELAY_PORT=15054 # sluiced --udp-port default; run.sh does not change it
ESC_DNS_LISTENER_PORT=15053 # sluiced --dns-port default
test_escape_udp_allowed_range_deny_wins() {
	local P=$W/p.yaml a port mode netns r spid
	cat >"$P" <<EOF2
version: 1
network:
  udp:
    - name: loopback-range
      to: 126.0.0.0/7
      ports: ["1-52", "54-65535"] # 53 is refused: DNS always goes to sluiced
    - name: v6-low
      to: ::/120
      ports: ["1-52", "54-65535"]
    - name: gateway-range4
      to: ${SLT_GW4%.*}.0/30
      ports: [5300]
    - name: gateway-range6
      to: ${SLT_GW6%::*}::/64
      ports: [5300]
EOF2
	: >"$W/gw-udp.log"
	rm -f "$W/gw-udp.ready"
	slt_spawn_in "$SLT_GW_NSPATH" "escgwudp-$SLT_TEST" "$SLT_PY" "$SLT_UPSTREAM_PY" --udp 5300 \
		--bind "$SLT_GW4" --bind "$SLT_GW6" --log "$W/gw-udp.log" --ready "$W/gw-udp.ready"
	spid=$(cat "$SLT_PIDS/escgwudp-$SLT_TEST")
	# shellcheck disable=SC2064
	trap "kill $spid 2>/dev/null; rm -f '$SLT_PIDS/escgwudp-$SLT_TEST'" EXIT
	slt_retry 50 0.1 test -e "$W/gw-udp.ready" || fail "the gateway UDP sink did not start"
	esc_snap
	for netns in new host; do
		for a in 127.0.0.1:5300 127.0.0.2:5300 "[::ffff:127.0.0.1]:5300" "[::1]:5300" \
			"$SLT_GW4:5300" "[$SLT_GW6]:5300" "[::ffff:$SLT_GW4]:5300"; do
			port=${a##*:}
			a=${a%:*}
			a=${a#[}
			a=${a%]}
			for mode in "" --connect; do
				r=$(sbx_run --netns "$netns" --policy "$P" -- "${PROBE[@]}" udpecho "$a" "$port" \
					${mode:+"$mode"} 2>&1)
				note "netns $netns, rules covering it: [$a]:$port ${mode:-sendto} -> $r"
				assert_eq "$r" EACCES "netns $netns: UDP to [$a]:$port ${mode:-sendto} under a udp rule"
			done
		done
		for a in 127.0.0.1 ::1 ::ffff:127.0.0.1; do
			for mode in "" --connect; do
				r=$(sbx_run --netns "$netns" --policy "$P" -- "${PROBE[@]}" udpecho "$a" \
					"$ESC_UDP_RELAY_PORT" ${mode:+"$mode"} --wait 1 2>&1)
				note "netns $netns: the relay itself [$a]:$ESC_UDP_RELAY_PORT ${mode:-sendto} -> $r"
				case $r in
				EACCES | timeout) ;;
				*) fail "netns $netns: a datagram to the relay listener [$a] got: $r" ;;
				esac
			done
		done
	done
	[ -z "$(cat "$W/gw-udp.log")" ] ||
		fail "a datagram reached the gateway's own address: $(cat "$W/gw-udp.log")"
	assert_untouched up upconn md dns foreign "UDP under rules covering denied addresses"
	sleep 0.3 # the audit writer is asynchronous
	[ -z "$(esc_new audit | jq -c 'select(.kind == "udp" and .decision == "allow")')" ] ||
		fail "a UDP flow was opened: $(esc_new audit | jq -c 'select(.kind == "udp")')"
	note "relay refusals: $(esc_new audit | jq -r 'select(.kind == "udp") | .reason' | sort |
		uniq -c | tr -s ' \n' ' ')"
}

# Host-netns sandboxes share one DNS listener: sluiced tells them apart by
# the kernel's record of the sending socket (UDP: the egress program; TCP:
# the redirected connect), so dns: allowlist and dns.resolver hold for them
# too. A process of no sandbox querying that listener directly gets REFUSED.
test_escape_dns_host_netns() {
	local r proto
	cat >"$W/allow.yaml" <<EOP
version: 1
allow:
  - name: only-upstream
    host: upstream.test
dns:
  mode: allowlist
EOP
	cat >"$W/res.yaml" <<EOP
version: 1
dns:
  resolver: "$SLT_FOREIGN4"
EOP
	esc_snap
	for proto in "" --tcp; do
		r=$(sbx_run --netns host --policy "$W/allow.yaml" -- "${PROBE[@]}" dns "$SLT_FOREIGN4" \
			api.example.test $proto 2>&1)
		note "host netns, allowlist, denied name ${proto:-udp} -> $r"
		assert_eq "$r" "rcode 3 from $SLT_FOREIGN4 answers -" "host netns: denied name ${proto:-udp}"
		r=$(sbx_run --netns host --policy "$W/allow.yaml" -- "${PROBE[@]}" dns "$SLT_FOREIGN4" \
			upstream.test $proto 2>&1)
		assert_eq "$r" "rcode 0 from $SLT_FOREIGN4 answers $SLT_UP4" \
			"host netns: allowed name ${proto:-udp}"
		r=$(sbx_run --netns host --policy "$W/res.yaml" -- "${PROBE[@]}" dns "$SLT_DNS4" \
			upstream.test $proto 2>&1)
		note "host netns, dns.resolver ${proto:-udp} -> $r"
		assert_eq "$r" "rcode 0 from $SLT_DNS4 answers $SLT_FOREIGN_ANSWER4" \
			"host netns: the policy's resolver ${proto:-udp}"
		# No sandbox: the gateway netns itself, straight at the listener.
		r=$(timeout -k 2 20 nsenter --net="$SLT_GW_NSPATH" "${PROBE[@]}" dns 127.0.0.1 \
			upstream.test --port "$ESC_DNS_LISTENER_PORT" $proto 2>&1)
		note "no sandbox, straight to the host DNS listener ${proto:-udp} -> $r"
		assert_eq "$r" "rcode 5 from 127.0.0.1 answers -" "no sandbox ${proto:-udp}: REFUSED"
	done
	sleep 0.5 # the audit writer is asynchronous
	esc_new audit | jq -c 'select(.kind == "dns")' >"$W/dns.audit"
	jq -s -e 'any(.[]; .host == "api.example.test" and .decision == "deny" and
		(.sandbox | startswith("@") | not) and .sandbox != "")' "$W/dns.audit" >/dev/null ||
		fail "no dns audit line denying api.example.test for the sandbox: $(cat "$W/dns.audit")"
	jq -s -e 'any(.[]; .reason == "unknown_sender")' "$W/dns.audit" >/dev/null ||
		fail "no dns audit line for the unknown sender"
	[ -z "$(esc_new dns | jq -r 'select(.qname == "api.example.test") | .qname')" ] ||
		fail "a denied name reached the test DNS server"
	[ "$(esc_new foreign | jq -r 'select(.qname == "upstream.test")' | jq -s length)" = 2 ] ||
		fail "the policy's resolver did not get exactly the 2 queries: $(esc_new foreign)"
	assert_untouched md up "host-netns DNS"
}
