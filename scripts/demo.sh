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
code=$(BOUND=30 sbx_run -- "${NOPROXY[@]}" curl -sS --max-time 10 -o "$W/md.json" \
	-w '%{http_code}' http://169.254.169.254/latest/meta-data/ 2>"$W/md.err")
say "   sluiced answered HTTP $code:"
show <"$W/md.json"
say ""
[ "$code" = 403 ] || step_failed "expected 403 from sluiced, got '$code'"
if [ -s "$SLT_MD_LOG" ]; then
	step_failed "the fake metadata server was reached:"
	show <"$SLT_MD_LOG"
else
	say "   -> refused; the fake metadata server at $SLT_META4 logged no connection at all."
fi
say ""

# --- 3 ------------------------------------------------------------------
say "3. secret swap: not yet implemented (issue #3)"
say ""

if [ $ok = 1 ]; then
	say "demo: every step behaved as described."
	exit 0
fi
say "demo: some step did not behave as described (sluiced log: $SLT_SLUICED_LOG, tail below)."
tail -n 20 "$SLT_SLUICED_LOG" | show
exit 1
