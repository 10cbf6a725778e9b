#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Integration test runner (root). Builds the test world once (see
# scripts/lib/topology.sh), starts build/sluiced in it, runs every
# `test_<name>` function found in tests/integration/test_*.sh and
# tests/integration/escape/test_*.sh (the escape-vector suite; its shared
# helpers are escape/lib.sh), tears everything down.
#
#   tests/integration/run.sh [NAME...]   run the tests whose name contains NAME
#   V=1                                  stream each test's output
#   SLT_KEEP_TMP=1                       keep the run's temp dir (logs) on exit
#   SLT_TEST_TIMEOUT=S                   per-test bound (default 120 s)
#   SLT_SUITE_BUDGET=S                   no test starts after S seconds (default 600);
#                                        the rest fail as not run
#
# Each test runs in a fresh bash that loads the run's state, the topology
# helpers, helpers.sh and the test files, then calls the function: exit 0
# passes, 77 skips, anything else fails. One line per test; the last line is
# exactly `integration: N passed, N failed, N skipped`. Exit 77 when not root,
# 1 when a test failed.

set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TIMEOUT=${SLT_TEST_TIMEOUT:-120}
BUDGET=${SLT_SUITE_BUDGET:-600}
START=$(date +%s)

mapfile -t ALL_TESTS < <(for f in "$HERE"/test_*.sh "$HERE"/escape/test_*.sh; do
	[ -f "$f" ] || continue
	sed -n 's/^\(test_[A-Za-z0-9_]*\)() *{.*/\1/p' "$f"
done)
TESTS=()
for t in "${ALL_TESTS[@]}"; do
	if [ $# -eq 0 ]; then
		TESTS+=("$t")
	else
		for pat in "$@"; do
			case $t in *"$pat"*) TESTS+=("$t"); break ;; esac
		done
	fi
done

if [ "$(id -u)" != 0 ]; then
	echo "integration: skipped: needs root (namespaces, cgroups, BPF)"
	echo "integration: 0 passed, 0 failed, ${#TESTS[@]} skipped"
	exit 77
fi

# shellcheck source=../../scripts/lib/topology.sh
. "$ROOT/scripts/lib/topology.sh"

PASS=0 FAIL=0 SKIP=0
FAILED=()

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}'; }

finish() {
	local rc=0
	trap - EXIT INT TERM
	topo_down
	[ ${#FAILED[@]} -gt 0 ] && echo "failed: ${FAILED[*]}"
	echo "integration: $PASS passed, $FAIL failed, $SKIP skipped"
	[ "$FAIL" -eq 0 ] || rc=1
	exit $rc
}

# Everything failed before any test ran: report each as failed.
fail_all() {
	local t
	echo "integration: setup failed: $*"
	for t in "${TESTS[@]}"; do
		echo "FAIL  $t  (setup)"
		FAIL=$((FAIL + 1))
		FAILED+=("$t")
	done
	finish
}

for b in "$SLT_SLUICED" "$SLT_SLUICECTL"; do
	[ -x "$b" ] || { SLT_TMP=; fail_all "missing $b (run make)"; }
done
for tool in curl openssl node jq nsenter unshare ip timeout; do
	command -v "$tool" >/dev/null || { SLT_TMP=; fail_all "missing tool $tool"; }
done

topo_init slt || { SLT_TMP=; fail_all "cannot create a temp dir"; }
trap finish EXIT
trap 'echo "interrupted"; exit 130' INT TERM
topo_cleanup_stale
topo_up || fail_all "topology (see messages above)"
sluiced_start || fail_all "sluiced did not start"
[ "${V:-0}" = 1 ] && echo "integration: world $SLT_PFX in $SLT_TMP; sluiced pid $(sluiced_pid)"

run_one() {
	local t=$1 log=$SLT_TMP/logs/$1.log rc
	mkdir -p "$SLT_TMP/logs"
	local script='
		. "$1/env.sh"; SLT_TEST=$4; . "$2/scripts/lib/topology.sh"; . "$3/helpers.sh"
		[ -f "$3/escape/lib.sh" ] && . "$3/escape/lib.sh"
		for f in "$3"/test_*.sh "$3"/escape/test_*.sh; do [ -f "$f" ] && . "$f"; done
		set -u
		"$4"'
	if [ "${V:-0}" = 1 ]; then
		timeout -k 5 "$TIMEOUT" bash -c "$script" _ "$SLT_TMP" "$ROOT" "$HERE" "$t" 2>&1 |
			tee "$log" | sed 's/^/    /'
		rc=${PIPESTATUS[0]}
	else
		timeout -k 5 "$TIMEOUT" bash -c "$script" _ "$SLT_TMP" "$ROOT" "$HERE" "$t" \
			>"$log" 2>&1
		rc=$?
	fi
	[ $rc -eq 124 ] || [ $rc -eq 137 ] && echo "timed out after ${TIMEOUT} s" >>"$log"
	return $rc
}

for t in "${TESTS[@]}"; do
	if [ $(($(date +%s) - START)) -gt "$BUDGET" ]; then
		printf 'FAIL  %-34s  not run: suite budget of %s s spent\n' "$t" "$BUDGET"
		FAIL=$((FAIL + 1))
		FAILED+=("$t")
		continue
	fi
	# A test that killed or crashed sluiced must not take the others down.
	if ! slt_pid_alive "$(sluiced_pid)"; then
		echo "note: sluiced is not running before $t; restarting. Log tail:"
		tail -n 15 "$SLT_SLUICED_LOG" | sed 's/^/    sluiced| /'
		sluiced_start || fail_all "sluiced restart failed"
	fi
	off=$(stat -c %s "$SLT_SLUICED_LOG" 2>/dev/null || echo 0)
	t0=$(now)
	run_one "$t"
	rc=$?
	dt=$(elapsed "$t0")
	if [ $rc -eq 0 ] && ! slt_pid_alive "$(sluiced_pid)"; then
		echo "FAIL: sluiced died during the test" >>"$SLT_TMP/logs/$t.log"
		rc=1
	fi
	case $rc in
	0)
		printf 'PASS  %-34s %6s s\n' "$t" "$dt"
		PASS=$((PASS + 1))
		;;
	77)
		printf 'SKIP  %-34s %6s s  %s\n' "$t" "$dt" \
			"$(grep -m1 '^SKIP:' "$SLT_TMP/logs/$t.log" | cut -c7-)"
		SKIP=$((SKIP + 1))
		;;
	*)
		printf 'FAIL  %-34s %6s s  (exit %d)\n' "$t" "$dt" "$rc"
		FAIL=$((FAIL + 1))
		FAILED+=("$t")
		if [ "${V:-0}" != 1 ]; then
			tail -n 25 "$SLT_TMP/logs/$t.log" | sed 's/^/    | /'
		fi
		echo "    sluiced log during $t (tail):"
		tail -c +"$((off + 1))" "$SLT_SLUICED_LOG" | tail -n 20 | sed 's/^/    sluiced| /'
		;;
	esac
done

finish
