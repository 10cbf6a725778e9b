# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# 100 MiB each way streams through sluiced with bounded memory: its RSS,
# sampled every 0.2 s, stays within 16 MiB of its value before the transfer.

STREAM_BYTES=$((100 * 1024 * 1024))
RSS_LIMIT_KB=$((16 * 1024))

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null; }

# rss_sampler PID OUTFILE: max VmRSS seen, written to OUTFILE on every
# sample; bounded to 300 s. Killed by the caller.
rss_sampler() {
	local pid=$1 out=$2 max=0 v i
	for ((i = 0; i < 1500; i++)); do
		v=$(rss_kb "$pid")
		[ -n "$v" ] || break
		[ "$v" -gt "$max" ] && { max=$v; echo "$max" >"$out"; }
		sleep 0.2
	done
}

# with_rss_bound NAME CMD...: run CMD (a shell function is fine) while
# sampling sluiced's RSS; fail if it grew by RSS_LIMIT_KB or more.
with_rss_bound() {
	local name=$1 pid base sp rc peak
	shift
	pid=$(sluiced_pid)
	base=$(rss_kb "$pid")
	[ -n "$base" ] || fail "cannot read sluiced's RSS"
	echo "$base" >"$W/$name.rss"
	rss_sampler "$pid" "$W/$name.rss" &
	sp=$!
	"$@"
	rc=$?
	kill "$sp" 2>/dev/null
	wait "$sp" 2>/dev/null
	peak=$(cat "$W/$name.rss")
	note "$name: sluiced VmRSS before ${base} kB, peak ${peak} kB (+$((peak - base)) kB)"
	[ $rc -eq 0 ] || fail "$name transfer failed"
	[ $((peak - base)) -lt $RSS_LIMIT_KB ] ||
		fail "$name: sluiced RSS grew by $((peak - base)) kB (limit $RSS_LIMIT_KB kB)"
}

download_100m() {
	local m=$1
	BOUND=100 sbx_run -- sh -c 'curl -sS --max-time 90 "$0" | sha256sum' \
		"https://upstream.test/bytes/$STREAM_BYTES?id=$m" >"$W/down.sha" 2>"$W/down.err"
}

upload_100m() {
	local m=$1
	BOUND=100 sbx_run -- curl -sS --max-time 90 -X POST -T "$W/up.bin" \
		"https://upstream.test/upload?id=$m" >"$W/up.out" 2>"$W/up.err"
}

test_stream_100mib() {
	local m want
	# Warm up: first handshake for the name (leaf minting, caches).
	sbx_run -- curl -sS --max-time 20 -o /dev/null "https://upstream.test/echo?id=warm" ||
		fail "warm-up request failed"

	m=$(mark down)
	want=$(pattern_sha256 $STREAM_BYTES)
	with_rss_bound download download_100m "$m"
	cat "$W/down.err" >&2
	assert_eq "$(awk '{print $1}' "$W/down.sha")" "$want" "sha256 of the 100 MiB download"
	assert_eq "$(up_requests "$m" | jq -r .sent)" "$STREAM_BYTES" "bytes the upstream sent"
	assert_via_sluiced "$m"

	m=$(mark up)
	head -c $STREAM_BYTES /dev/urandom >"$W/up.bin"
	want=$(sha256sum "$W/up.bin" | awk '{print $1}')
	with_rss_bound upload upload_100m "$m"
	cat "$W/up.err" >&2
	assert_eq "$(jq -r .bytes "$W/up.out")" "$STREAM_BYTES" "bytes the upstream received"
	assert_eq "$(jq -r .sha256 "$W/up.out")" "$want" "sha256 of the 100 MiB upload"
	assert_via_sluiced "$m"
	rm -f "$W/up.bin"
}
