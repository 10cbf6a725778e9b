# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# Escape vectors below TCP/UDP: raw IP and ICMP sockets, packet sockets,
# reconfiguring the sandbox's network, and taking sluiced's ports. Each is
# tried twice where the layers differ:
#   - in a `sluicectl run` sandbox (CAP_NET_RAW, CAP_NET_ADMIN, CAP_SYS_ADMIN,
#     CAP_BPF dropped, no_new_privs): what a sandboxed program meets;
#   - as full root in a cgroup + netns attached with `sluicectl attach`: what
#     the BPF programs alone do, without the capability drop.

# socket(AF_INET, SOCK_RAW, ...) and ICMP: EPERM. With the capabilities
# dropped both the capability check and cgroup/sock_create refuse; as full
# root, cgroup/sock_create alone refuses (EPERM), ping sockets included
# (ping_group_range is opened wide in that netns so the kernel's own check
# passes and only sluice's program is left).
test_escape_raw_socket() {
	local spec r
	esc_snap
	for spec in "inet raw icmp" "inet raw tcp" "inet raw udp" "inet6 raw icmpv6" "inet raw 255"; do
		# shellcheck disable=SC2086
		r=$(sbx_run -- "${PROBE[@]}" socket $spec 2>&1)
		note "sluicectl run: socket($spec) -> $r"
		assert_eq "$r" EPERM "socket($spec) in a sluicectl run sandbox"
	done
	# Ping sockets: the kernel's ping_group_range (default: nobody) answers
	# EACCES before sluice's program runs.
	r=$(sbx_run -- "${PROBE[@]}" socket inet dgram icmp 2>&1)
	note "sluicectl run: socket(inet dgram icmp) -> $r"
	case $r in EPERM | EACCES) ;; *) fail "ping socket in a sluicectl run sandbox: $r" ;; esac
	# Other protocols the sandbox may not use (SCTP may be absent: EPROTONOSUPPORT).
	for spec in "inet stream mptcp" "inet dgram udplite" "inet6 stream mptcp"; do
		# shellcheck disable=SC2086
		r=$(sbx_run -- "${PROBE[@]}" socket $spec 2>&1)
		note "sluicectl run: socket($spec) -> $r"
		assert_eq "$r" EPERM "socket($spec)"
	done
	r=$(sbx_run -- "${PROBE[@]}" socket inet stream sctp 2>&1)
	note "sluicectl run: socket(inet stream sctp) -> $r"
	case $r in EPERM | EPROTONOSUPPORT) ;; *) fail "SCTP socket: $r" ;; esac

	trap esc_att_down EXIT
	esc_att_up
	ip netns exec "$ESC_ATT_NS" sysctl -qw net.ipv4.ping_group_range="0 2147483647" ||
		fail "cannot set ping_group_range in the attached netns"
	for spec in "inet raw icmp" "inet6 raw icmpv6" "inet dgram icmp" "inet6 dgram icmpv6" \
		"inet stream mptcp" "inet dgram udplite"; do
		# shellcheck disable=SC2086
		r=$(inatt "${PROBE[@]}" socket $spec 2>&1)
		note "full root, attached: socket($spec) -> $r"
		assert_eq "$r" EPERM "socket($spec) as full root in an attached cgroup (BPF sock_create)"
	done
	r=$(inatt "${PROBE[@]}" socket inet stream tcp 2>&1)
	assert_eq "$r" ok "a TCP socket is still allowed"
	esc_att_down
	assert_hosts_untouched "raw sockets"
}

# socket(AF_PACKET, SOCK_RAW, ETH_P_ALL) without CAP_NET_RAW: EPERM from the
# capability check. cgroup/sock_create never runs for AF_PACKET (the kernel
# calls it from inet_create/inet6_create only): with CAP_NET_RAW the socket
# is created, and is confined by the netns (only loopback) alone. That is
# asserted too, so the docs' claim stays true.
test_escape_af_packet() {
	local r t
	esc_snap
	for t in raw dgram; do
		r=$(sbx_run -- "${PROBE[@]}" socket packet "$t" all 2>&1)
		note "sluicectl run: socket(AF_PACKET, $t) -> $r"
		assert_eq "$r" EPERM "AF_PACKET $t without CAP_NET_RAW"
	done
	r=$(sbx_run --netns host -- "${PROBE[@]}" socket packet raw all 2>&1)
	assert_eq "$r" EPERM "AF_PACKET in a host-netns sandbox"
	trap esc_att_down EXIT
	esc_att_up
	r=$(inatt "${PROBE[@]}" socket packet raw all 2>&1)
	note "full root (CAP_NET_RAW), attached: socket(AF_PACKET) -> $r (BPF has no hook for it)"
	assert_eq "$r" ok "AF_PACKET with CAP_NET_RAW (no BPF hook: only the capability drop stops it)"
	r=$(inatt ip -o link show | awk -F': ' '{print $2}' | tr '\n' ' ')
	assert_eq "$r" "lo " "the attached netns has only loopback for a packet socket to use"
	esc_att_down
	assert_hosts_untouched "AF_PACKET"
}

# ip addr add / ip route add / ip link add: EPERM (CAP_NET_ADMIN dropped); the
# sandbox's netns is unchanged afterwards.
test_escape_ip_config() {
	local what
	sbx_run -- sh -c '
		ip addr add 10.9.9.9/32 dev lo 2>&1; echo "addr rc=$?"
		ip route add 10.0.0.0/8 dev lo 2>&1; echo "route rc=$?"
		ip route add default dev lo 2>&1; echo "default rc=$?"
		ip link add d0 type dummy 2>&1; echo "link rc=$?"
		ip link set lo down 2>&1; echo "down rc=$?"
		echo "addrs: $(ip -o addr show | awk "{print \$4}" | tr "\n" " ")"
		echo "routes: $(ip route show | wc -l) $(ip -6 route show | grep -vc "^\(fe80\|::1\|local\|multicast\)")"
		echo "links: $(ip -o link show | awk -F": " "{print \$2}" | tr "\n" " ")"' >"$W/ip.out" 2>&1
	cat "$W/ip.out" >&2
	for what in addr route default link down; do
		assert_grep "^$what rc=[1-9]" "$W/ip.out" "ip $what failed"
	done
	[ "$(grep -c 'Operation not permitted' "$W/ip.out")" -ge 5 ] ||
		fail "not every change was refused with EPERM"
	assert_grep '^addrs: 127.0.0.1/8 ::1/128 $' "$W/ip.out" "addresses unchanged"
	assert_grep '^routes: 0 0$' "$W/ip.out" "no routes"
	assert_grep '^links: lo $' "$W/ip.out" "links unchanged"
}

# bind() to sluiced's ports (15001 TCP, 15053 UDP/TCP) on any address:
# EACCES from cgroup/bind4/6, also as full root; other ports bind.
test_escape_bind_listener_port() {
	local spec r p=$SLT_PORT d=15053
	for spec in "127.0.0.1 $p tcp" "0.0.0.0 $p tcp" "::1 $p tcp" ":: $p tcp" "0.0.0.0 $d udp" \
		"127.0.0.1 $d tcp" ":: $d udp"; do
		# shellcheck disable=SC2086
		r=$(sbx_run -- "${PROBE[@]}" bind $spec 2>&1)
		note "sluicectl run: bind($spec) -> $r"
		assert_eq "$r" EACCES "bind($spec)"
	done
	r=$(sbx_run -- "${PROBE[@]}" bind 127.0.0.1 8080 tcp 2>&1)
	assert_eq "$r" bound "bind to another port"
	r=$(sbx_run --netns host -- "${PROBE[@]}" bind 0.0.0.0 "$p" tcp 2>&1)
	assert_eq "$r" EACCES "bind(0.0.0.0:$p) in a host-netns sandbox"
	trap esc_att_down EXIT
	esc_att_up
	for spec in "0.0.0.0 $p tcp" "::1 $p tcp" "0.0.0.0 $d udp"; do
		# shellcheck disable=SC2086
		r=$(inatt "${PROBE[@]}" bind $spec 2>&1)
		note "full root, attached: bind($spec) -> $r"
		assert_eq "$r" EACCES "bind($spec) as full root (BPF bind4/6)"
	done
	esc_att_down
}
