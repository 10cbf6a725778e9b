# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# Escape vector: the sandboxed process moves itself out of its cgroup.
#
# cgroup v2 migration needs no capability, only write access to the target's
# and the common ancestor's cgroup.procs, and root in the sandbox has that
# through the host's cgroup2 mount. sluicectl run therefore gives the command
# a mount namespace of its own in which the cgroup2 mount is read-only (and
# the command lacks CAP_SYS_ADMIN to remount it or mount another): the write
# fails and the process stays in its sandbox cgroup, under sluice's BPF
# programs. Asserted for the default netns sandbox and for --netns host
# (where leaving the cgroup would otherwise escape both BPF and nftables).

# sh -c "$ESC_MOVE_SCRIPT" CGROUP CMD...: move into CGROUP, say so, exec CMD.
# shellcheck disable=SC2016 # expanded by the sandbox's shell
ESC_MOVE_SCRIPT='echo $$ >"$0/cgroup.procs"; echo "moved rc=$? $(grep ^0:: /proc/self/cgroup)"; exec "$@"'

test_escape_cgroup_move_netns() {
	local cg=$SLT_CG/escmove$$ m
	mkdir -p "$cg" || fail "mkdir $cg"
	# shellcheck disable=SC2064
	trap "slt_cgroup_rm $cg" EXIT
	m=$(mark cgmove)
	esc_snap
	sbx_run -- env UP4="$SLT_UP4" M="$m" sh -c "$ESC_MOVE_SCRIPT" "$cg" sh -c '
		p="$0 $1"
		echo "metadata: $($p connect 169.254.169.254 80)"
		echo "up-http: $($p http "$UP4" 80 upstream.test "/echo?id=$M" | head -n 1)"' \
		"${PROBE[@]}" >"$W/mv.out" 2>&1
	cat "$W/mv.out" >&2
	grep -q "^moved rc=0 0::/${SLT_PFX}/escmove$$\$" "$W/mv.out" &&
		fail "the sandbox moved itself out of its cgroup"
	assert_grep '^moved rc=[1-9].*/sandboxes/' "$W/mv.out" \
		"the move was refused; the process is still in its sandbox cgroup"
	assert_grep '^metadata: EACCES$' "$W/mv.out" "metadata still refused by BPF after the attempt"
	assert_grep '^up-http: status 200$' "$W/mv.out" "requests still go through sluiced"
	assert_via_sluiced "$m"
}

test_escape_cgroup_move_host_netns() {
	local cg=$SLT_CG/escmoveh$$ m
	mkdir -p "$cg" || fail "mkdir $cg"
	# shellcheck disable=SC2064
	trap "slt_cgroup_rm $cg" EXIT
	m=$(mark cgmoveh)
	esc_snap
	sbx_run --netns host -- env UP4="$SLT_UP4" M="$m" sh -c '
		p="$0 $1"
		echo $$ >"$2/cgroup.procs"; echo "moved rc=$? $(grep ^0:: /proc/self/cgroup)"
		echo "after-up: $($p http "$UP4" 80 upstream.test "/echo?id=$M-after" | head -n 1)"
		echo "after-metadata: $($p connect 169.254.169.254 80)"' "${PROBE[@]}" "$cg" \
		>"$W/mvh.out" 2>&1
	cat "$W/mvh.out" >&2
	assert_grep '^moved rc=[1-9].*/sandboxes/' "$W/mvh.out" \
		"the move was refused; the process is still in its sandbox cgroup"
	assert_grep '^after-up: status 200$' "$W/mvh.out" "request after the attempt"
	assert_via_sluiced "$m-after"
	assert_grep '^after-metadata: EACCES$' "$W/mvh.out" "metadata still refused after the attempt"
}
