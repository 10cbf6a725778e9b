#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# run-unit.sh BINARY...: run each Criterion test binary (bounded), add up the
# `[====] Synthesis:` lines, print `unit: N passed, N failed` last; exit 1 if
# anything failed. A binary that dies without a synthesis line, or exits
# non-zero although its synthesis shows no failure, counts as one failure.
# V=1 shows every binary's full output; otherwise only failing ones'.

set -u
TIMEOUT=${UNIT_TIMEOUT:-300}
passed=0 failed=0
tmp=$(mktemp) || exit 1
trap 'rm -f "$tmp"' EXIT

for bin in "$@"; do
	[ -x "$bin" ] || { echo "unit: $bin: not an executable"; failed=$((failed + 1)); continue; }
	timeout -k 5 "$TIMEOUT" "$bin" >"$tmp" 2>&1
	rc=$?
	syn=$(grep -a 'Synthesis:' "$tmp" | tail -n 1)
	name=$(basename "$bin")
	bad=0
	if [ -z "$syn" ]; then
		echo "unit: $name: no synthesis line (exit $rc)"
		failed=$((failed + 1))
		bad=1
	else
		tested=$(sed -n 's/.*Tested: *\([0-9]*\).*/\1/p' <<<"$syn")
		pass=$(sed -n 's/.*Passing: *\([0-9]*\).*/\1/p' <<<"$syn")
		fail_n=$((tested - pass))
		passed=$((passed + pass))
		failed=$((failed + fail_n))
		printf 'unit: %-24s %3d passed, %d failed\n' "$name" "$pass" "$fail_n"
		if [ "$fail_n" -gt 0 ]; then
			bad=1
		elif [ $rc -ne 0 ]; then
			echo "unit: $name: exit status $rc despite no failing test"
			failed=$((failed + 1))
			bad=1
		fi
	fi
	if [ "${V:-0}" = 1 ]; then
		sed 's/^/    /' "$tmp"
	elif [ $bad = 1 ]; then
		grep -a -v '^\[----\]' "$tmp" | tail -n 40 | sed 's/^/    /'
	fi
done

echo "unit: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
