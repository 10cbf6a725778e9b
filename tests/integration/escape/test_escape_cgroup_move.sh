# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# Escape vector: the sandboxed process moves itself out of its cgroup.
#
# Root in a `sluicectl run` sandbox keeps CAP_DAC_OVERRIDE and the cgroup2
# mount is writable, there is no cgroup namespace, and cgroup v2 migration
# needs no capability (only write access to the target's and the common
# ancestor's cgroup.procs): writing its pid to another cgroup's cgroup.procs
# WORKS. Sockets created afterwards belong to the new cgroup, so sluice's
# BPF programs (attached to the sandbox cgroup) no longer run for them.
#
# - netns sandbox (the default): still nowhere to go. The netns holds only
#   loopback: connects to the upstream, metadata, DNS and UDP fail with
#   ENETUNREACH (netns routing); a loopback connect other than sluiced's
#   listener is dropped by the sandbox's nftables table (the SYN is dropped:
#   timeout, where a bare netns would answer RST); the listener itself closes
#   a connection that has no record from the connect program. The upstream
#   and the metadata server see nothing.
# - host-netns sandbox (`--netns host`): KNOWN GAP, asserted as such. Neither
#   the BPF programs nor the nftables rules (which match the socket's cgroup)
#   apply any more: the process reaches the upstream and the metadata server
#   directly. docs/security.md "Known gaps".

# sh -c "$ESC_MOVE_SCRIPT" CGROUP CMD...: move into CGROUP, say so, exec CMD.
# shellcheck disable=SC2016 # expanded by the sandbox's shell
ESC_MOVE_SCRIPT='echo $$ >"$0/cgroup.procs"; echo "moved rc=$? $(grep ^0:: /proc/self/cgroup)"; exec "$@"'

test_escape_cgroup_move_netns() {
	local cg=$SLT_CG/escmove$$ m k
	mkdir -p "$cg" || fail "mkdir $cg"
	# shellcheck disable=SC2064
	trap "slt_cgroup_rm $cg" EXIT
	m=$(mark cgmove)
	esc_snap
	sbx_run -- env UP4="$SLT_UP4" FOREIGN4="$SLT_FOREIGN4" PORT="$SLT_PORT" M="$m" \
		sh -c "$ESC_MOVE_SCRIPT" "$cg" sh -c '
		p="$0 $1"
		echo "up: $($p connect "$UP4" 80)"
		echo "up-http: $($p http "$UP4" 80 upstream.test "/echo?id=$M" | head -n 1)"
		echo "metadata: $($p connect 169.254.169.254 80)"
		echo "udp: $($p udp "$UP4" 443)"
		echo "dns: $($p dns "$FOREIGN4" upstream.test)"
		echo "loopback: $($p connect 127.0.0.1 9)"
		echo "listener: $($p http 127.0.0.1 "$PORT" upstream.test "/echo?id=$M-l" | head -n 1)"
		echo "raw: $($p socket inet raw icmp)"' "${PROBE[@]}" >"$W/mv.out" 2>&1
	cat "$W/mv.out" >&2
	assert_grep "^moved rc=0 0::/${SLT_PFX}/escmove$$\$" "$W/mv.out" \
		"the sandbox moved itself into another cgroup (no capability needed)"
	for k in up up-http metadata udp dns; do
		assert_grep "^$k: ENETUNREACH\$" "$W/mv.out" "$k after the move: no route (netns)"
	done
	assert_grep '^loopback: TimeoutError$' "$W/mv.out" \
		"loopback connect after the move: SYN dropped by the sandbox's nftables table"
	assert_grep '^listener: (status None|recv ECONNRESET)$' "$W/mv.out" \
		"sluiced closed the listener connection that has no connect record"
	assert_grep '^raw: EPERM$' "$W/mv.out" "raw socket after the move: capability drop still holds"
	assert_via_sluiced "$m" 0
	assert_hosts_untouched "cgroup move in a netns sandbox"
}

test_escape_cgroup_move_host_netns() {
	local cg=$SLT_CG/escmoveh$$ m md_off
	mkdir -p "$cg" || fail "mkdir $cg"
	md_off=$(stat -c %s "$SLT_MD_LOG")
	# The metadata server will be reached (that is the gap): its log is put
	# back as it was afterwards, so the other tests' "metadata saw nothing"
	# checks stay meaningful; the lines are shown in this test's output.
	# shellcheck disable=SC2064
	trap "slt_cgroup_rm $cg; truncate -s $md_off $SLT_MD_LOG" EXIT
	m=$(mark cgmoveh)
	esc_snap
	# Before the move, the same sandbox is intercepted / refused as usual.
	sbx_run --netns host -- env UP4="$SLT_UP4" M="$m" sh -c '
		p="$0 $1"
		echo "before-metadata: $($p connect 169.254.169.254 80)"
		echo "before-up: $($p http "$UP4" 80 upstream.test "/echo?id=$M-before" | head -n 1)"
		echo $$ >"$2/cgroup.procs"; echo "moved rc=$? $(grep ^0:: /proc/self/cgroup)"
		echo "after-up: $($p http "$UP4" 80 upstream.test "/echo?id=$M-after" | head -n 1)"
		echo "after-metadata: $($p connect 169.254.169.254 80)"' "${PROBE[@]}" "$cg" \
		>"$W/mvh.out" 2>&1
	cat "$W/mvh.out" >&2
	assert_grep '^before-metadata: EACCES$' "$W/mvh.out" "metadata refused before the move"
	assert_grep '^before-up: status 200$' "$W/mvh.out" "request before the move"
	assert_via_sluiced "$m-before"
	assert_rewritten "$m-before"
	assert_grep "^moved rc=0 0::/${SLT_PFX}/escmoveh$$\$" "$W/mvh.out" "the sandbox left its cgroup"
	# The gap: after the move nothing applies.
	assert_grep '^after-up: status 200$' "$W/mvh.out" "request after the move"
	up_requests "$m-after" | jq -e '[.headers[][0] | ascii_downcase] | index("connection")' \
		>/dev/null || fail "the request after the move went through sluiced (gap closed? update docs)"
	! esc_new audit | grep -qF -- "$m-after" || fail "sluiced audited the request after the move"
	assert_grep '^after-metadata: connected$' "$W/mvh.out" \
		"metadata connect after the move (gap closed? update docs/security.md)"
	note "metadata server log lines caused by this test (removed again):"
	tail -c +"$((md_off + 1))" "$SLT_MD_LOG" >&2
	note "KNOWN GAP confirmed: a host-netns sandbox that moves itself out of its cgroup" \
		"is neither redirected (BPF) nor filtered (nftables socket cgroupv2)"
}
