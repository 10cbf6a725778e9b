# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# Policies in the data path: allow rules by host, port, method and path;
# dot segments refused with 400, never resolved; every refusal a JSON body
# with a Proxy-Status header and an audit line; reload (CLI and SIGHUP) swaps
# the policy, a broken file keeps the last good one, and a connection opened
# before a reload finishes on its old generation; `sluicectl policy check`
# on hostile files.

PU=https://upstream.test

# pol_audit PATH: the audit line(s) with exactly this path (waits up to 5 s).
pol_audit() {
	local i out
	for ((i = 0; i < 50; i++)); do
		out=$(jq -c --arg p "$1" 'select(.kind == "request" and .path == $p)' \
			"$SLT_TMP/audit.jsonl" 2>/dev/null)
		[ -n "$out" ] && { printf '%s\n' "$out"; return 0; }
		sleep 0.1
	done
	return 1
}

# pol_refused HDR BODY STATUS ERROR WHAT: a refusal written by sluiced.
pol_refused() {
	assert_eq "$(last_status "$1")" "$3" "$5: status"
	assert_grep '^[Pp]roxy-[Ss]tatus: ' "$1" "$5: Proxy-Status header"
	assert_eq "$(jq -r .error "$2")" "$4" "$5: error in the JSON body"
	assert_eq "$(jq -r .status "$2")" "$3" "$5: status in the JSON body"
}

# pol_get NAME URL [curl args]: request from a fresh sandbox under $P; headers
# in $W/NAME.hdr, body in $W/NAME.body.
pol_get() {
	local n=$1 url=$2
	shift 2
	sbx_run --policy "$P" -- curl -sS --max-time 20 --path-as-is -D "$W/$n.hdr" \
		-o "$W/$n.body" "$@" "$url" 2>"$W/$n.err"
}

test_policy_rules() {
	local P=$W/p.yaml m a
	cat >"$P" <<'EOF'
version: 1
default: deny
allow:
  - name: up-get
    host: upstream.test
    ports: [443]
    methods: [GET, HEAD]
    paths: ["/echo/**", "/a/**", "/b"]
EOF
	ctl policy check "$P" >&2 || fail "policy does not compile"

	m=$(mark pok)
	pol_get ok "$PU/echo/$m" || fail "allowed request failed"
	assert_eq "$(last_status "$W/ok.hdr")" 200 "allowed GET"
	assert_via_sluiced "$m"
	a=$(pol_audit "/echo/$m") || fail "no audit line for the allowed request"
	assert_eq "$(jq -r '.decision + " " + .rule' <<<"$a")" "allow up-get" "audit of the allowed GET"

	# host in no rule
	m=$(mark phost)
	pol_get host "https://other.example.test/echo/$m"
	pol_refused "$W/host.hdr" "$W/host.body" 403 denied_by_policy "host not allowed"
	assert_eq "$(jq -r .rule "$W/host.body")" default "rule named for a host in no rule"
	assert_eq "$(jq -r .host "$W/host.body")" other.example.test "host in the refusal"
	assert_via_sluiced "$m" 0
	a=$(pol_audit "/echo/$m") || fail "no audit line for the refused host"
	note "audit: $a"
	assert_eq "$(jq -r .decision <<<"$a")" deny "audit decision (host)"
	assert_eq "$(jq -r .reason <<<"$a")" denied_by_policy "audit reason (host)"
	assert_eq "$(jq -r .status <<<"$a")" 403 "audit status (host)"

	# method
	m=$(mark pmeth)
	pol_get meth "$PU/echo/$m" -X POST -d x=1
	pol_refused "$W/meth.hdr" "$W/meth.body" 403 denied_by_policy "method not allowed"
	# The detail names the check and the rule whose host matched; the `rule`
	# field is the deciding one (the default deny: no rule allowed it).
	jq -r .detail "$W/meth.body" | grep -q 'method not allowed by rule up-get' ||
		fail "refusal detail does not name the method and rule: $(cat "$W/meth.body")"
	note "method refusal: rule field '$(jq -r .rule "$W/meth.body")'"
	assert_via_sluiced "$m" 0
	a=$(pol_audit "/echo/$m") || fail "no audit line for the refused method"
	note "audit: $a"
	assert_eq "$(jq -r '.decision + " " + .reason' <<<"$a")" "deny denied_by_policy" \
		"audit decision and reason (method)"

	# path glob not matched
	m=$(mark ppath)
	pol_get path "$PU/bytes/10?id=$m"
	pol_refused "$W/path.hdr" "$W/path.body" 403 denied_by_policy "path not matched"
	assert_via_sluiced "$m" 0
	jq -r .detail "$W/path.body" | grep -qi 'path' ||
		fail "refusal detail does not say path: $(cat "$W/path.body")"
	a=$(pol_audit "/bytes/10") || fail "no audit line for the refused path"
	assert_eq "$(jq -r '.decision + " " + .reason' <<<"$a" | tail -n1)" "deny denied_by_policy" \
		"audit decision and reason (path)"

	# port: 80 is not in the rule
	m=$(mark pport)
	pol_get port "http://upstream.test/echo/$m"
	pol_refused "$W/port.hdr" "$W/port.body" 403 denied_by_policy "port not allowed"
	assert_via_sluiced "$m" 0

	# dot segments: 400, never resolved (/a/../b would be the allowed /b)
	local p i=0
	for p in "/a/../b?id=MARK" "/%2e%2e/b?id=MARK" "/a/%2E./b?id=MARK" "/a/.%2e/b?id=MARK" \
		"/./b?id=MARK" "/a/..;x/b?id=MARK"; do
		i=$((i + 1))
		m=$(mark pdot)
		pol_get "dot$i" "$PU${p/MARK/$m}"
		pol_refused "$W/dot$i.hdr" "$W/dot$i.body" 400 path_not_normalized "path $p"
		assert_via_sluiced "$m" 0
	done
	a=$(jq -c 'select(.kind == "request" and .path == "/a/../b")' "$SLT_TMP/audit.jsonl")
	[ -n "$a" ] || fail "no audit line for /a/../b"
	note "audit: $a"
	assert_eq "$(jq -r .status <<<"$a" | tail -n1)" 400 "audit status for /a/../b"
	[ "$(jq -r .decision <<<"$a" | tail -n1)" != allow ] || fail "audit says allow for /a/../b"
	m=$(mark pb)
	pol_get b "$PU/b?id=$m" || fail "GET /b"
	assert_eq "$(last_status "$W/b.hdr")" 404 "GET /b itself is allowed (upstream's 404)"
	assert_via_sluiced "$m"
}

# Reload: an attached sandbox; its policy file changes; `sluicectl reload`
# applies it; a broken file is refused with file:line:col and the last good
# policy keeps serving; a keep-alive connection opened before the reload
# finishes on its old generation; SIGHUP reloads too.
test_policy_reload() {
	local ns=${SLT_PFX}pr$$ cg=$SLT_CG/polrel$$ id=slt-polrel-$$ P=$W/p.yaml m rc i
	pol_write() { # PATHS_GLOB
		cat >"$P.tmp" <<EOF
version: 1
allow:
  - name: r
    host: upstream.test
    paths: ["$1"]
EOF
		mv "$P.tmp" "$P"
	}
	pol_write "/echo/**"
	ip netns add "$ns" || fail "ip netns add $ns"
	ip -n "$ns" link set lo up
	mkdir -p "$cg" || fail "mkdir $cg"
	# shellcheck disable=SC2064
	trap "ctl detach --id $id >/dev/null 2>&1; ip netns del $ns 2>/dev/null; slt_cgroup_rm $cg" EXIT
	ctl attach --cgroup "$cg" --netns "/run/netns/$ns" --id "$id" --policy "$P" >&2 ||
		fail "sluicectl attach --policy"
	eval "$(ctl env)" || fail "sluicectl env"
	export SSL_CERT_FILE CURL_CA_BUNDLE
	inatt() {
		timeout -k 2 30 nsenter --net="/run/netns/$ns" sh -c \
			'echo $$ >"$0/cgroup.procs" && exec "$@"' "$cg" \
			"$SLT_INHOSTS" "$SLT_CLIENT_HOSTS" "$@"
	}
	code() { # URL: status the sandbox gets
		inatt curl -sS --max-time 10 -o /dev/null -w '%{http_code}' "$1" 2>/dev/null
	}

	# A keep-alive connection: one request now, one after the reload.
	cat >"$W/ka.py" <<'EOF'
import http.client, os, ssl, sys, time
mark, go = sys.argv[1], sys.argv[2]
c = http.client.HTTPSConnection("upstream.test", 443, timeout=20,
                                context=ssl.create_default_context())
c.request("GET", "/echo/%s-1" % mark)
r = c.getresponse(); r.read()
port1 = c.sock.getsockname()[1]
print("first", r.status, flush=True)
for _ in range(200):
    if os.path.exists(go):
        break
    time.sleep(0.05)
c.request("GET", "/echo/%s-2" % mark)
r = c.getresponse(); r.read()
same = "same-connection" if c.sock.getsockname()[1] == port1 else "new"
print("second", r.status, same, flush=True)
EOF
	m=$(mark ka)
	inatt "$SLT_PY" "$W/ka.py" "$m" "$W/go" >"$W/ka.out" 2>&1 &
	local kapid=$!
	for ((i = 0; i < 100; i++)); do grep -q '^first' "$W/ka.out" && break; sleep 0.1; done
	assert_eq "$(head -n1 "$W/ka.out")" "first 200" "keep-alive: first request"

	assert_eq "$(code "$PU/echo/$(mark r1)")" 200 "before reload: /echo"
	assert_eq "$(code "$PU/other/$(mark r1)")" 403 "before reload: /other"

	pol_write "/other/**"
	ctl reload --id "$id" >"$W/reload1.out" 2>&1 || { cat "$W/reload1.out" >&2; fail "reload"; }
	touch "$W/go"
	wait "$kapid"
	cat "$W/ka.out" >&2
	assert_eq "$(tail -n1 "$W/ka.out")" "second 200 same-connection" \
		"keep-alive connection opened before the reload keeps its generation"
	m=$(mark r2)
	assert_eq "$(code "$PU/echo/$m")" 403 "after reload: /echo denied"
	assert_via_sluiced "$m" 0
	assert_eq "$(code "$PU/other/$(mark r2)")" 404 "after reload: /other allowed (404 upstream)"

	# broken file: refused with file:line:col, last good policy keeps serving
	printf 'version: 1\nallow:\n  - name: r\n    host: upstream.test\n    bogus: 1\n' >"$P"
	rc=0
	ctl reload --id "$id" >"$W/reload2.out" 2>&1 || rc=$?
	cat "$W/reload2.out" >&2
	[ "$rc" -ne 0 ] || fail "reload of a broken policy exited 0"
	assert_grep "$(basename "$P"):5:5:" "$W/reload2.out" "reload error names file:line:col"
	assert_eq "$(code "$PU/other/$(mark r3)")" 404 "broken reload: /other still allowed"
	m=$(mark r3)
	assert_eq "$(code "$PU/echo/$m")" 403 "broken reload: /echo still denied"
	assert_via_sluiced "$m" 0

	# SIGHUP reloads every sandbox from its file
	pol_write "/echo/**"
	kill -HUP "$(sluiced_pid)"
	for ((i = 0; i < 50; i++)); do
		[ "$(code "$PU/echo/$(mark r4)")" = 200 ] && break
		sleep 0.1
	done
	[ $i -lt 50 ] || fail "SIGHUP did not apply the new policy within 5 s"
	assert_eq "$(code "$PU/other/$(mark r4)")" 403 "after SIGHUP: /other denied"
}

test_policy_check_hostile() {
	local f rc out i
	# shellcheck disable=SC2034 # read by ctl
	local BOUND=20
	# unknown key (line 3, col 3)
	printf 'version: 1\nallow:\n  - hots: a.test\n' >"$W/unknown.yaml"
	# alias bomb ("billion laughs")
	{
		echo 'version: 1'
		echo 'x0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'
		for i in $(seq 1 9); do
			printf 'x%d: &a%d [' "$i" "$i"
			for _ in 1 2 3 4 5 6 7 8; do printf '*a%d,' $((i - 1)); done
			printf '*a%d]\n' $((i - 1))
		done
	} >"$W/bomb.yaml"
	# 2 MB
	local pad
	pad=$(printf 'x%.0s' {1..32})
	{
		echo 'version: 1'
		for ((i = 0; i < 40000; i++)); do echo "# padding line $i $pad"; done
	} >"$W/big.yaml"
	# and a few more shapes
	printf 'version: 1\nversion: 1\n' >"$W/dup.yaml"
	{ printf 'version: 1\nallow: '; printf '[%.0s' $(seq 200); printf ']%.0s' $(seq 200); echo; } \
		>"$W/deep.yaml"
	printf 'version: 1\nallow:\n  - host: "caf\xe9.test"\n' >"$W/latin1.yaml"
	printf 'version: 1\nallow:\n  - host: ""\n' >"$W/emptyhost.yaml"
	printf 'version: 1\nallow:\n  - host: a.test\n    paths: ["/a/**b"]\n' >"$W/glob.yaml"
	printf 'version: 1\nallow:\n  - host: a.test\n    ports: 443\n' >"$W/type.yaml"
	for f in unknown bomb big dup deep latin1 emptyhost glob type; do
		rc=0
		out=$(ctl policy check "$W/$f.yaml" 2>&1) || rc=$?
		note "$f: exit $rc: $(head -n2 <<<"$out")"
		assert_eq "$rc" 2 "policy check $f.yaml exit status"
		grep -Eq "$W/$f.yaml:[0-9]+:[0-9]+: error: " <<<"$out" ||
			fail "policy check $f.yaml: no 'file:line:col: error:' in: $out"
	done
	out=$(ctl policy check "$W/unknown.yaml" 2>&1)
	grep -qF "$W/unknown.yaml:3:5:" <<<"$out" || fail "unknown key not at 3:5: $out"
	grep -qF "hots" <<<"$out" || fail "unknown key not named: $out"
	out=$(ctl policy check "$W/big.yaml" 2>&1)
	grep -qF "$W/big.yaml:1:1:" <<<"$out" || fail "size limit not at 1:1: $out"

	for f in "$SLT_ROOT"/policy/*.yaml; do
		rc=0
		ctl policy check "$f" >"$W/ok.out" 2>&1 || rc=$?
		cat "$W/ok.out" >&2
		assert_eq "$rc" 0 "policy check $(basename "$f")"
	done
}

# dns.resolver in a policy: that sandbox's DNS (UDP and TCP, whatever
# resolver it asked) is forwarded to the policy's resolver, from sluiced's
# address; other sandboxes keep sluiced's --dns-resolver. The "foreign"
# test resolver answers every A query with $SLT_FOREIGN_ANSWER4, the default
# one with the real zone, so the answer shows which one was asked; their
# logs show who asked them.
test_policy_dns_resolver() {
	local proto r srv
	cat >"$W/pol.yaml" <<EOP
version: 1
dns:
  resolver: "$SLT_FOREIGN4:53"
EOP
	cat >"$W/pol6.yaml" <<EOP
version: 1
dns:
  resolver: "[$SLT_FOREIGN6]:53"
EOP
	esc_snap
	for srv in "$SLT_DNS4" 10.53.0.1; do
		for proto in "" --tcp; do
			r=$(sbx_run --policy "$W/pol.yaml" -- "${PROBE[@]}" dns "$srv" upstream.test \
				$proto 2>&1)
			note "policy resolver $SLT_FOREIGN4, asked $srv ${proto:-udp} -> $r"
			assert_eq "$r" "rcode 0 from $srv answers $SLT_FOREIGN_ANSWER4" \
				"answered by the policy's resolver (asked $srv ${proto:-udp})"
		done
	done
	r=$(sbx_run --policy "$W/pol6.yaml" -- "${PROBE[@]}" dns "$SLT_DNS4" upstream.test 2>&1)
	assert_eq "$r" "rcode 0 from $SLT_DNS4 answers $SLT_FOREIGN_ANSWER4" \
		"answered by the policy's IPv6 resolver"
	# A sandbox without dns.resolver: sluiced's --dns-resolver, as before.
	r=$(sbx_run -- "${PROBE[@]}" dns "$SLT_FOREIGN4" upstream.test 2>&1)
	assert_eq "$r" "rcode 0 from $SLT_FOREIGN4 answers $SLT_UP4" "the default resolver"
	# Who was asked, by whom.
	[ "$(esc_new foreign | jq -r 'select(.qname == "upstream.test") | .proto' | sort | uniq -c |
		tr -s ' \n' ' ')" = " 2 tcp 3 udp " ] ||
		fail "the policy's resolver did not get exactly the 5 queries: $(esc_new foreign)"
	[ -z "$(esc_new foreign | jq -r --arg a "$SLT_GW4" --arg b "$SLT_GW6" \
		'select(.client != $a and .client != $b) | .client')" ] ||
		fail "the policy's resolver was asked by something other than sluiced"
	[ "$(esc_new dns | jq -r 'select(.qname == "upstream.test")' | jq -s length)" = 1 ] ||
		fail "the default resolver got other than the one default query: $(esc_new dns)"
	assert_untouched md up "per-sandbox resolver"
}
