# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# Assertions and client helpers for the integration tests. Each test runs in
# its own bash process (see run.sh), so fail/skip simply exit it; a test's
# cleanup is its own EXIT trap.

fail() { echo "FAIL: $*" >&2; exit 1; }
skip() { echo "SKIP: $*" >&2; exit 77; }
note() { echo "$*" >&2; }

# A marker unique to this test process, put in request paths so the
# upstream's log lines of one request can be found.
mark() { echo "${1:-m}-$$-$RANDOM$RANDOM"; }

assert_eq() { [ "$1" = "$2" ] || fail "$3: expected '$2', got '$1'"; }

# assert_grep PATTERN FILE WHAT: extended regex must match somewhere in FILE.
assert_grep() {
	grep -Eq -- "$1" "$2" || {
		note "--- $2:"
		head -c 4000 "$2" >&2
		fail "$3 (no match for /$1/)"
	}
}

# W: per-test scratch directory (removed by run.sh with the run's temp dir).
W=$SLT_TMP/work/${SLT_TEST:-t}
mkdir -p "$W"

# A client's exit status with a bound: run "$@" under timeout(1).
bounded() { timeout -k 2 "${BOUND:-30}" "$@"; }

# Upstream log: the JSON lines (kind=request) whose path contains MARK.
up_requests() { jq -c --arg m "$1" 'select(.kind == "request" and (.path | contains($m)))' \
	"$SLT_UP_LOG"; }

# assert_via_sluiced MARK [COUNT]: the upstream saw COUNT (default 1)
# requests carrying MARK, each from the gateway's address, i.e. dialled by
# sluiced (the sandbox has no route anywhere), never from anything else.
assert_via_sluiced() {
	local m=$1 want=${2:-1} n bad
	n=$(up_requests "$m" | wc -l)
	[ "$n" = "$want" ] || {
		note "--- upstream log tail:"
		tail -n 5 "$SLT_UP_LOG" >&2
		fail "upstream saw $n request(s) with marker $m, expected $want"
	}
	bad=$(up_requests "$m" | jq -r --arg a "$SLT_GW4" --arg b "$SLT_GW6" \
		'select(.client != $a and .client != $b) | .client')
	[ -z "$bad" ] || fail "request $m reached the upstream from $bad, not from sluiced"
}

# http_status FILE: status code of the last response in a `curl -i`/-D dump.
last_status() { awk '/^HTTP\/[0-9.]+ [0-9]+/ {s = $2} END {print s}' "$1"; }

# expected sha256 of the upstream's /bytes/N body
pattern_sha256() { "$SLT_PY" "$SLT_UPSTREAM_PY" --pattern-sha256 "$1"; }
