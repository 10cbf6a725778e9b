#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# fuzz.sh [tests/fuzz/NAME_fuzz.c ...]: build each libFuzzer target (default:
# all of tests/fuzz/*_fuzz.c) with clang -fsanitize=fuzzer,address,undefined
# together with user/http1.c and llhttp's C sources into build/fuzz/, then run
# each for FUZZ_SECONDS (default 30) on a working copy of its seed corpus
# tests/fuzz/corpus/NAME/ (new inputs stay in build/, the seeds are not
# touched). A crash leaves its reproducer in build/fuzz/crashes/ and makes the
# script exit 1. Needs clang and compiler-rt (Debian: libclang-rt-14-dev).
#   FUZZ_SECONDS=60 scripts/fuzz.sh            run every target 60 s
#   FUZZ_JOBS=2 scripts/fuzz.sh                 libFuzzer -fork=2 per target
#   FUZZ_CFLAGS=-DFUZZ_KNOWN_BUGS               make known-bug invariants fatal
#   V=1                                         show the compiler command
# Reproduce a crash: build/fuzz/NAME_fuzz tests/fuzz/crashes/FILE
set -u
cd "$(dirname "$0")/.." || exit 1

CLANG=${CLANG:-clang}
BUILD=${BUILD:-build}
SECONDS_EACH=${FUZZ_SECONDS:-30}
LLHTTP_SRC_DIR=${LLHTTP_SRC_DIR:-/usr/share/llhttp}
LLHTTP_INC_DIR=${LLHTTP_INC_DIR:-/usr/share/include/llhttp}
OUT=$BUILD/fuzz

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(tests/fuzz/*_fuzz.c)

if ! echo 'int LLVMFuzzerTestOneInput(const char *d, long n){return 0;}' |
	"$CLANG" -x c -fsanitize=fuzzer -o /dev/null - 2>/dev/null; then
	echo "fuzz: $CLANG cannot link -fsanitize=fuzzer (install libclang-rt-14-dev)" >&2
	exit 2
fi

mkdir -p "$OUT/crashes" || exit 1
failed=0
for src in "${targets[@]}"; do
	name=$(basename "$src" .c)          # http1_fuzz
	corpus_name=${name%_fuzz}           # http1
	bin=$OUT/$name
	# A target names what else it needs in its own header:
	#   // fuzz-sources: user/policy.c        // fuzz-libs: -lyaml -lidn2 -lcrypto
	read -r -a more_srcs <<<"$(sed -n 's|^// fuzz-sources: ||p' "$src" | tr '\n' ' ')"
	read -r -a more_libs <<<"$(sed -n 's|^// fuzz-libs: ||p' "$src" | tr '\n' ' ')"
	cmd=("$CLANG" -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
	     -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter
	     -Iuser -Iinclude -I"$LLHTTP_INC_DIR" ${FUZZ_CFLAGS:-}
	     "$src" user/http1.c "${more_srcs[@]}" "$LLHTTP_SRC_DIR"/llhttp.c "$LLHTTP_SRC_DIR"/api.c
	     "$LLHTTP_SRC_DIR"/http.c "${more_libs[@]}" -o "$bin")
	[ "${V:-0}" = 1 ] && echo "${cmd[*]}"
	printf '  %-8s %s\n' FUZZCC "$bin"
	if ! "${cmd[@]}"; then
		echo "fuzz: $name: build failed" >&2
		failed=1
		continue
	fi
	work=$OUT/corpus/$corpus_name
	mkdir -p "$work"
	seeds=tests/fuzz/corpus/$corpus_name
	[ -d "$seeds" ] && cp -n "$seeds"/* "$work"/ 2>/dev/null
	log=$OUT/$name.log
	extra=()
	[ -n "${FUZZ_JOBS:-}" ] && extra=(-fork="$FUZZ_JOBS" -ignore_crashes=0)
	printf '  %-8s %s (%ss)\n' FUZZ "$name" "$SECONDS_EACH"
	# Bounded by libFuzzer's own clock, and by timeout(1) should it hang.
	timeout -k 10 $((SECONDS_EACH + 60)) "$bin" -max_total_time="$SECONDS_EACH" \
		-timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix="$OUT/crashes/$name-" "${extra[@]}" "$work" >"$log" 2>&1
	rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
	cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
	if [ $rc -ne 0 ]; then
		echo "fuzz: $name: FAILED (exit $rc); log $log; reproducers:" >&2
		ls "$OUT/crashes/$name-"* 2>/dev/null >&2
		grep -a -m 20 -E 'ERROR|SUMMARY|invariant|runtime error' "$log" >&2
		failed=1
	else
		echo "fuzz: $name: ok, ${execs:-?} runs, ${speed:-?} exec/s, ${cov:-?}, corpus $(ls "$work" | wc -l)"
	fi
done
exit $failed
