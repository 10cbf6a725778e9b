#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# run-tests.sh: what `make test` runs after the build: the unit tests
# (scripts/run-unit.sh on build/tests/*_test), then the integration tests
# (tests/integration/run.sh; skipped with a message when not root). The last
# line is `N passed, N failed` summing both; exit 1 if anything failed.

set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
cd "$ROOT" || exit 1
passed=0 failed=0 rc_all=0
log=$(mktemp) || exit 1
trap 'rm -f "$log"' EXIT

# count LABEL: add the `LABEL: N passed, N failed` line in $log to the totals.
count() {
	local line p f
	line=$(grep -E "^$1: [0-9]+ passed, [0-9]+ failed" "$log" | tail -n 1)
	if [ -z "$line" ]; then
		echo "run-tests: no '$1: N passed, N failed' line; counting one failure"
		failed=$((failed + 1))
		return
	fi
	p=$(sed -E 's/^[^:]+: ([0-9]+) passed.*/\1/' <<<"$line")
	f=$(sed -E 's/^[^:]+: [0-9]+ passed, ([0-9]+) failed.*/\1/' <<<"$line")
	passed=$((passed + p))
	failed=$((failed + f))
}

shopt -s nullglob
bins=("$BUILD"/tests/*_test)
echo "== unit tests (${#bins[@]} binaries)"
if [ ${#bins[@]} -gt 0 ]; then
	scripts/run-unit.sh "${bins[@]}" | tee "$log"
	[ "${PIPESTATUS[0]}" -eq 0 ] || rc_all=1
	count unit
fi

echo "== integration tests"
tests/integration/run.sh | tee "$log"
rc=${PIPESTATUS[0]}
case $rc in
0) ;;
77) echo "(integration tests skipped)" ;;
*) rc_all=1 ;;
esac
count integration

echo "$passed passed, $failed failed"
[ $rc_all -eq 0 ] && [ $failed -eq 0 ]
