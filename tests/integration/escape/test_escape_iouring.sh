# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# Escape vector: io_uring. IORING_OP_CONNECT connects from the kernel's
# io_uring worker, not from a connect() syscall of the process. The cgroup
# programs are chosen by the socket's cgroup (fixed at socket()), and the
# ring's connect goes through the same __sys_connect_file -> inet connect
# path, so it is intercepted like any other. The client is
# escape/iouring_connect.c (raw io_uring syscalls, no liburing), compiled here.

test_escape_iouring_connect() {
	local bin=$W/iouring_connect m r
	command -v cc >/dev/null || skip "no C compiler (cc)"
	cc -O2 -Wall -Wextra -Werror -o "$bin" "$ESC_DIR/iouring_connect.c" 2>"$W/cc.err" ||
		{ cat "$W/cc.err" >&2; fail "cannot build iouring_connect.c"; }
	esc_snap
	m=$(mark iouring)
	sbx_run -- "$bin" "$SLT_UP4" 80 upstream.test "/echo?id=$m" >"$W/iou.out" 2>&1
	note "io_uring connect to $SLT_UP4:80 -> $(line1 "$W/iou.out")"
	case $(line1 "$W/iou.out") in
	"setup "*) skip "io_uring is not available here: $(line1 "$W/iou.out")" ;;
	esac
	assert_eq "$(line1 "$W/iou.out")" "status 200" "GET after IORING_OP_CONNECT"
	assert_via_sluiced "$m"
	assert_rewritten "$m"
	m=$(mark iouring6)
	r=$(sbx_run -- "$bin" "$SLT_UP6" 80 "[$SLT_UP6]" "/echo?id=$m" 2>&1 | head -n 1)
	assert_eq "$r" "status 200" "GET after IORING_OP_CONNECT over IPv6"
	assert_via_sluiced "$m"
	for a in "$SLT_META4" "::ffff:$SLT_META4" "$SLT_META6"; do
		r=$(sbx_run -- "$bin" "$a" 80 x /latest/ 2>&1)
		note "io_uring connect to [$a]:80 -> $r"
		assert_eq "$r" "connect EACCES" "IORING_OP_CONNECT to [$a]:80"
	done
	assert_conns_from_gateway "io_uring connect"
	assert_untouched md foreign "io_uring connect"
}
