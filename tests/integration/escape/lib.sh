# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# Shared helpers of the escape-vector suite (tests/integration/escape/),
# sourced by run.sh after helpers.sh. Each test tries one way out of a
# sandbox and asserts two things: the attempt was refused or intercepted, and
# the host it aimed at saw nothing (the logs of topology.sh's test hosts:
# upstream requests and connections, the fake metadata server, both DNS
# resolvers). docs/security.md "Escape vectors" lists them.

ESC_DIR=$SLT_ROOT/tests/integration/escape
ESC_PROBE=$ESC_DIR/probe.py

# probe ARGS...: the socket probe (see probe.py), as a command line for sbx_run.
# Example: sbx_run -- "${PROBE[@]}" connect 169.254.169.254 80
# shellcheck disable=SC2034 # used by the test files
PROBE=("$SLT_PY" "$ESC_PROBE")

# Logs of the test hosts, by short name.
esc_log() {
	case $1 in
	up) echo "$SLT_UP_LOG" ;;
	upconn) echo "$SLT_UP_CONN_LOG" ;;
	md) echo "$SLT_MD_LOG" ;;
	dns) echo "$SLT_DNS_LOG" ;;
	foreign) echo "$SLT_FOREIGN_LOG" ;;
	audit) echo "$SLT_TMP/audit.jsonl" ;;
	esac
}

ESC_LOGS="up upconn md dns foreign audit"

# esc_snap: remember how long every log is now (esc_new reads what came after).
esc_snap() {
	local l f
	for l in $ESC_LOGS; do
		f=$(esc_log "$l")
		stat -c %s "$f" 2>/dev/null >"$W/snap.$l" || echo 0 >"$W/snap.$l"
	done
}

# esc_new LOG: the lines LOG got since esc_snap.
esc_new() {
	local f off
	f=$(esc_log "$1")
	off=$(cat "$W/snap.$1" 2>/dev/null || echo 0)
	tail -c +"$((off + 1))" "$f" 2>/dev/null
}

# assert_untouched LOG... WHAT: none of LOGs got a line since esc_snap.
assert_untouched() {
	local what=${*: -1} l n
	for l in "${@:1:$#-1}"; do
		n=$(esc_new "$l" | wc -l)
		[ "$n" = 0 ] || {
			note "--- new lines in the $l log:"
			esc_new "$l" | head -c 3000 >&2
			fail "$what: the $l log got $n line(s)"
		}
	done
}

# The test hosts a refused attempt must not reach.
assert_hosts_untouched() {
	assert_untouched up upconn md foreign "${1:-refused attempt}"
}

# assert_conns_from_gateway WHAT: every upstream connection since esc_snap
# came from the gateway (sluiced's netns), and there was at least one.
assert_conns_from_gateway() {
	local n bad
	n=$(esc_new upconn | wc -l)
	[ "$n" -gt 0 ] || fail "$1: the upstream accepted no connection"
	bad=$(esc_new upconn | jq -r --arg a "$SLT_GW4" --arg b "$SLT_GW6" \
		'select(.client != $a and .client != $b) | .client')
	[ -z "$bad" ] || fail "$1: upstream connection(s) from $bad, not from sluiced"
}

# assert_rewritten MARK: the request carrying MARK arrived without the
# `Connection: close` the probe sends: sluiced re-serialised the head (it
# drops hop-by-hop fields), so it went through sluiced and not just through
# some socket in the gateway netns.
assert_rewritten() {
	local h
	h=$(up_requests "$1" | jq -r '[.headers[][0] | ascii_downcase] | join(",")')
	[ -n "$h" ] || fail "no upstream request with marker $1"
	case ",$h," in
	*,connection,*) fail "request $1 reached the upstream with its Connection header: not via sluiced" ;;
	esac
}

# first line of a probe's output file
line1() { head -n 1 "$1"; }

# --- an attached sandbox with all capabilities ---------------------------
# `sluicectl run` drops capabilities, so a refusal there may come from the
# missing capability rather than from sluice's BPF programs. To test the BPF
# layer alone, these make a cgroup and a netns of the test's own, attach
# sluiced with `sluicectl attach`, and run commands there as full root.

esc_att_up() {
	ESC_ATT_NS=${SLT_PFX}e$$
	ESC_ATT_CG=$SLT_CG/esc$$
	ESC_ATT_ID=slt-esc-$$
	ip netns add "$ESC_ATT_NS" || fail "ip netns add $ESC_ATT_NS"
	ip -n "$ESC_ATT_NS" link set lo up
	mkdir -p "$ESC_ATT_CG" || fail "mkdir $ESC_ATT_CG"
	ctl attach --cgroup "$ESC_ATT_CG" --netns "/run/netns/$ESC_ATT_NS" --id "$ESC_ATT_ID" \
		>/dev/null || fail "sluicectl attach"
}

esc_att_down() {
	[ -n "${ESC_ATT_ID:-}" ] || return 0
	ctl detach --id "$ESC_ATT_ID" >/dev/null 2>&1
	slt_cgroup_rm "$ESC_ATT_CG"
	ip netns del "$ESC_ATT_NS" 2>/dev/null
	ESC_ATT_ID=
}

# inatt CMD...: CMD as full root inside the attached sandbox (netns + cgroup),
# seeing the test names, bounded to 30 s.
inatt() {
	timeout -k 2 30 nsenter --net="/run/netns/$ESC_ATT_NS" sh -c \
		'echo $$ >"$0/cgroup.procs" && exec "$@"' "$ESC_ATT_CG" \
		"$SLT_INHOSTS" "$SLT_CLIENT_HOSTS" "$@"
}
