# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# Escape vector: TCP Fast Open. sendto(MSG_FASTOPEN) connects without a
# connect() call, and TCP_FASTOPEN_CONNECT defers the SYN to the first write.
# Both go through the kernel's connect path (__inet_stream_connect ->
# pre_connect), where the cgroup connect programs run: the request is
# intercepted, denied destinations are refused with EACCES.

test_escape_tcp_fastopen() {
	local m mode r
	esc_snap
	for mode in --tfo --tfo-connect; do
		m=$(mark "tfo${mode#--tfo}")
		sbx_run -- "${PROBE[@]}" http "$SLT_UP4" 80 upstream.test "/echo?id=$m" "$mode" \
			>"$W/tfo.out" 2>&1
		note "$mode to $SLT_UP4:80 -> $(line1 "$W/tfo.out")"
		assert_eq "$(line1 "$W/tfo.out")" "status 200" "GET with $mode"
		assert_via_sluiced "$m"
		assert_rewritten "$m"
		r=$(sbx_run -- "${PROBE[@]}" http "$SLT_META4" 80 "$SLT_META4" /latest/ "$mode" 2>&1)
		note "$mode to $SLT_META4:80 -> $r"
		assert_eq "$r" EACCES "$mode to the metadata address"
		r=$(sbx_run -- "${PROBE[@]}" http "$SLT_UP6" 80 "[$SLT_UP6]" "/echo?id=$m-v6" "$mode" \
			2>&1 | head -n 1)
		assert_eq "$r" "status 200" "GET over IPv6 with $mode"
		assert_via_sluiced "$m-v6"
	done
	assert_conns_from_gateway "TCP Fast Open"
	assert_untouched md foreign "TCP Fast Open"
}
