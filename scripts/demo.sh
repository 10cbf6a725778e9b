#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# demo.sh (`make demo`, root): sluice in three narrated steps, in a small
# world of its own (scripts/lib/topology.sh): an "internet" namespace with a
# test HTTPS server answering as api.example.test, a fake cloud metadata
# server at 169.254.169.254, and sluiced. Everything is removed on exit.
# Exit 0 only if every step behaved as described.

set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if [ "$(id -u)" != 0 ]; then
	echo "demo: needs root (namespaces, cgroups, BPF)"
	exit 77
fi
# shellcheck source=lib/topology.sh
. "$ROOT/scripts/lib/topology.sh"
for b in "$SLT_SLUICED" "$SLT_SLUICECTL"; do
	[ -x "$b" ] || { echo "demo: missing $b (run make)"; exit 1; }
done

topo_init sld || exit 1
trap 'topo_down' EXIT
trap 'exit 130' INT TERM
topo_cleanup_stale
topo_up || { echo "demo: could not build the demo world"; exit 1; }
# The real credential lives only in sluiced's environment; the sandbox gets
# the placeholder. (A random value per run, so nothing real is ever printed.)
SLUICE_DEMO_TOKEN="sk-demo-real-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export SLUICE_DEMO_TOKEN
sluiced_start || { echo "demo: sluiced did not start"; exit 1; }

ok=1
say() { printf '%s\n' "$*"; }
show() { sed 's/^/    /'; }
step_failed() { say "  !! $*"; ok=0; }
W=$SLT_TMP/work
# No proxy settings at all in the sandbox: the interception does not depend on them.
NOPROXY=(env -u HTTPS_PROXY -u HTTP_PROXY -u https_proxy -u http_proxy -u ALL_PROXY -u all_proxy)

say "sluice demo"
say "  A sandbox here is a cgroup plus a network namespace that holds only loopback."
say "  api.example.test is a test HTTPS server ($SLT_UP4) signed by a test CA only"
say "  sluiced trusts; a fake cloud metadata server listens at $SLT_META4."
say "  sluiced runs next to them (pid $(sluiced_pid)), listening inside each sandbox."
say ""

# --- 1 ------------------------------------------------------------------
say "1. A program in the sandbox, with no proxy settings, calls an HTTPS API:"
say "     sluicectl run -- curl https://api.example.test/echo"
BOUND=30 sbx_run -- "${NOPROXY[@]}" curl -sS -v --max-time 20 -o "$W/echo.json" \
	"https://api.example.test/echo?from=demo" 2>"$W/echo.err"
rc=$?
if [ $rc -ne 0 ]; then
	step_failed "curl failed (exit $rc):"
	show <"$W/echo.err"
else
	issuer=$(grep -m1 'issuer:' "$W/echo.err" | sed 's/^\* *//')
	say "   curl verified the server certificate; its issuer was:"
	say "     $issuer"
	case $issuer in
	*"sluice local CA"*) say "   -> the connection was intercepted: sluice's CA signed it, not the server's." ;;
	*) step_failed "the certificate was not issued by sluice local CA" ;;
	esac
	say "   the API answered (from its /echo):"
	jq -c '{method, path, client, sni}' "$W/echo.json" | show
	line=$(jq -c 'select(.kind == "request" and (.path | contains("from=demo")))
		| {client, host, path, status}' "$SLT_UP_LOG" | tail -n 1)
	say "   and the API server's own log line for it:"
	say "     $line"
	if [ "$(jq -r .client <<<"$line")" = "$SLT_GW4" ]; then
		say "   -> it came from $SLT_GW4: sluiced's address. The sandbox has no route out."
	else
		step_failed "the request did not come from sluiced ($SLT_GW4)"
	fi
fi
say ""

# --- 2 ------------------------------------------------------------------
say "2. A sandboxed program asks the cloud metadata service for credentials:"
say "     sluicectl run -- curl http://169.254.169.254/latest/meta-data/"
code=$(BOUND=30 sbx_run -- "${NOPROXY[@]}" curl -sS -v --max-time 10 -o "$W/md.json" \
	-w '%{http_code}' http://169.254.169.254/latest/meta-data/ 2>"$W/md.err")
grep -m1 -E 'Immediate connect fail|Permission denied' "$W/md.err" | show
if [ "$code" = 000 ] && grep -q 'Permission denied' "$W/md.err"; then
	say "   -> the kernel refused the connect itself (EACCES from sluice's BPF program):"
	say "      not a single packet was sent."
else
	step_failed "expected the connect to be refused with EACCES, got HTTP '$code'"
fi
say "   The same request through an explicit proxy setting (http_proxy pointing anywhere):"
code=$(BOUND=30 sbx_run -- env http_proxy=http://198.18.255.254:3128 curl -sS --max-time 10 \
	-o "$W/md.json" -w '%{http_code}' http://169.254.169.254/latest/meta-data/ 2>"$W/md.err")
say "   sluiced answered HTTP $code:"
show <"$W/md.json"
[ "$code" = 403 ] || step_failed "expected 403 from sluiced, got '$code'"
if [ -s "$SLT_MD_LOG" ]; then
	step_failed "the fake metadata server was reached:"
	show <"$SLT_MD_LOG"
else
	say "   -> refused both ways; the fake metadata server at $SLT_META4 logged no connection."
fi
say ""

# --- 3 ------------------------------------------------------------------
say "3. The sandbox holds only a placeholder credential (policy/demo.yaml):"
say "     sluicectl run --policy policy/demo.yaml -- curl -H 'Authorization: Bearer SLUICE_DEMO_TOKEN_PLACEHOLDER' https://api.example.test/echo"
BOUND=30 sbx_run --policy "$ROOT/policy/demo.yaml" -- "${NOPROXY[@]}" curl -sS --max-time 20 \
	-H 'Authorization: Bearer SLUICE_DEMO_TOKEN_PLACEHOLDER' -o "$W/sw.json" \
	"https://api.example.test/echo?from=demo-swap" 2>"$W/sw.err" || cat "$W/sw.err" | show
got=$(jq -c 'select(.kind == "request" and (.path | contains("from=demo-swap")))
	| .headers[] | select(.[0] == "Authorization") | .[1]' "$SLT_UP_LOG" | tail -n 1)
say "   the API server received Authorization: $got"
say "   the sandbox saw the API echo it back as:"
jq -c '.headers[] | select(.[0] == "Authorization")' "$W/sw.json" 2>/dev/null | show
if [ "$got" = "\"Bearer $SLUICE_DEMO_TOKEN\"" ] && grep -q 'SLUICE_DEMO_TOKEN_PLACEHOLDER' "$W/sw.json" &&
	! grep -qF "$SLUICE_DEMO_TOKEN" "$W/sw.json"; then
	say "   -> swapped on the way out, redacted on the way back: the real value never entered the sandbox."
else
	step_failed "the secret was not swapped and redacted as described"
fi
say "   The same placeholder sent to another host:"
say "     curl -H 'Authorization: Bearer SLUICE_DEMO_TOKEN_PLACEHOLDER' https://other.example.test/echo"
code=$(BOUND=30 sbx_run --policy "$ROOT/policy/demo.yaml" -- "${NOPROXY[@]}" curl -sS \
	--max-time 20 -H 'Authorization: Bearer SLUICE_DEMO_TOKEN_PLACEHOLDER' -o "$W/oos.json" \
	-w '%{http_code}' "https://other.example.test/echo?from=demo-oos" 2>"$W/oos.err")
say "   sluiced answered HTTP $code:"
show <"$W/oos.json"
if [ "$code" = 403 ] && [ "$(jq -r .error "$W/oos.json")" = secret_out_of_scope ] &&
	! grep -q 'from=demo-oos' "$SLT_UP_LOG"; then
	say "   -> refused; nothing of that request reached any server."
else
	step_failed "expected 403 secret_out_of_scope and nothing upstream"
fi
if grep -qF "$SLUICE_DEMO_TOKEN" "$SLT_TMP/audit.jsonl" "$SLT_SLUICED_LOG"; then
	step_failed "the real value appears in the audit log or sluiced's log"
fi
say "   the audit log's line for the swapped request:"
jq -c 'select(.path == "/echo" and .host == "api.example.test" and (.secrets | length) > 0)
	| {time, sandbox, method, host, path, status, decision, rule, secrets}' \
	"$SLT_TMP/audit.jsonl" | tail -n 1 | show
say ""

if [ $ok = 1 ]; then
	say "demo: every step behaved as described."
	exit 0
fi
say "demo: some step did not behave as described (sluiced log: $SLT_SLUICED_LOG, tail below)."
tail -n 20 "$SLT_SLUICED_LOG" | show
exit 1
