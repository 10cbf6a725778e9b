# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# A process in a child cgroup of an attached sandbox (a container runtime,
# a pod's per-container cgroups, a workload that made its own) belongs to
# that sandbox: the programs attached to the sandbox cgroup run for its
# sockets, and the innermost registered cgroup above a socket names its
# sandbox (deny set, UDP allow set, sluiced's records). Before, such
# connections were closed by sluiced as "not an attached sandbox", and the
# deny set did not apply in BPF.

# inchild CG NS CMD...: CMD as root in cgroup CG (and netns NS if not empty).
inchild() {
	local cg=$1 ns=$2
	shift 2
	if [ -n "$ns" ]; then
		timeout -k 2 30 nsenter --net="$ns" sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' \
			"$cg" "$SLT_INHOSTS" "$SLT_CLIENT_HOSTS" "$@"
	else
		timeout -k 2 30 nsenter --net="$SLT_GW_NSPATH" sh -c \
			'echo $$ >"$0/cgroup.procs" && exec "$@"' "$cg" "$SLT_INHOSTS" "$SLT_CLIENT_HOSTS" "$@"
	fi
}

test_escape_child_cgroup() {
	local m code r child hid=slt-esc-h$$ hcg=$SLT_CG/esch$$ ns want
	trap 'esc_att_down; ctl detach --id '"$hid"' >/dev/null 2>&1; slt_cgroup_rm '"$hcg" EXIT
	esc_att_up
	mkdir -p "$hcg" || fail "mkdir $hcg"
	ctl attach --cgroup "$hcg" --id "$hid" >/dev/null || fail "attach a host-netns sandbox"
	for ns in "/run/netns/$ESC_ATT_NS" ""; do
		esc_snap
		if [ -n "$ns" ]; then
			child=$ESC_ATT_CG/kid/grandkid want=$ESC_ATT_ID
		else
			child=$hcg/kid want=$hid
		fi
		mkdir -p "$child" || fail "mkdir $child"
		m=$(mark child)
		code=$(inchild "$child" "$ns" curl -sS --max-time 10 --cacert "$SLT_STATE/ca.pem" \
			-o /dev/null -w '%{http_code}' "https://upstream.test/echo?id=$m" 2>"$W/c.err")
		note "${ns:-host netns}: curl from $child -> $code $(cat "$W/c.err")"
		assert_eq "$code" 200 "HTTPS from a child cgroup (${ns:-host netns})"
		assert_via_sluiced "$m"
		r=$(inchild "$child" "$ns" "${PROBE[@]}" connect 169.254.169.254 80 2>&1)
		assert_eq "$r" EACCES "metadata from a child cgroup (${ns:-host netns})"
		r=$(inchild "$child" "$ns" "${PROBE[@]}" udp "$SLT_UP4" 443 2>&1)
		assert_eq "$r" EACCES "UDP 443 from a child cgroup (${ns:-host netns})"
		sleep 0.3 # the audit writer is asynchronous
		esc_new audit | jq -r 'select(.kind == "request" and (.path | contains("/echo")))
			| .sandbox' | sort -u >"$W/sb.txt"
		assert_eq "$(cat "$W/sb.txt")" "$want" "the sandbox the request is audited for"
		assert_untouched md "child cgroup (${ns:-host netns})"
		slt_cgroup_rm "$child"
	done
	! grep -q "not an attached sandbox" <(tail -n 50 "$SLT_SLUICED_LOG") ||
		fail "sluiced closed a child cgroup's connection as not an attached sandbox"
}
