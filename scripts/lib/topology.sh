# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# Test topology shared by tests/integration/run.sh, scripts/demo.sh and
# scripts/bench.sh. Source it, then:
#
#   topo_init PREFIX        names + temp dir for this run (PREFIX: slt/sld/slb)
#   topo_cleanup_stale      remove leftovers of interrupted runs (dead owner pid)
#   topo_up                 certs, hosts files, namespaces, veths, upstream, metadata
#                           (SLT_NO_SERVICES=1: without upstream.py / metadata)
#   sluiced_start [ARGS]    start build/sluiced (foreground daemon, detached), wait for ping
#   sluiced_stop            SIGTERM, then SIGKILL
#   topo_down               stop everything, remove everything (idempotent; used by traps)
#
# The world (nothing is created in, or routed from, the host's own netns):
#
#   <P>gw  "gateway" netns where sluiced runs and dials, and where sluicectl
#          runs (so `--netns host` sandboxes share it). veth gw-up 198.18.X.1/29
#          + 2001:db8:5c:X::1/64, veth gw-md 198.19.X.1/30, route
#          169.254.169.254/32 and fd00:ec2::254/128 via the metadata netns.
#   <P>up  "internet": upstream.py on :443 (TLS, test CA) and :80 at 198.18.X.2 /
#          2001:db8:5c:X::2 (requests in $SLT_UP_LOG, every TCP connection in
#          $SLT_UP_CONN_LOG, a UDP sink on :443 logging datagrams to $SLT_UP_LOG);
#          198.18.X.3 is assigned too but nothing listens there (a down
#          upstream answers RST at once). The test DNS server at 198.18.X.4:53
#          (UDP+TCP, answers from $SLT_DNS_ZONE, logs every query to
#          $SLT_DNS_LOG) is sluiced's --dns-resolver; a "foreign" resolver at
#          198.18.X.5 / 2001:db8:5c:X::5 answers every A query with 198.18.X.6
#          and logs to $SLT_FOREIGN_LOG: sandboxes that ask it must be answered
#          by sluiced's path instead, so its log stays empty.
#   <P>md  fake cloud metadata at 169.254.169.254 and fd00:ec2::254 (:80, :443), logging every
#          TCP connection it accepts to $SLT_MD_LOG.
#   sandboxes: `sluicectl run` makes a netns with only loopback; clients see
#          the test names through a private mount namespace (sbx_run).
#
# sluiced, upstream and metadata are run with `nsenter --net=` (not
# `ip netns exec`, which remounts /sys and would hide cgroup2 and bpffs).
# State is kept in $SLT_TMP/env.sh so a fresh shell (one per test) can load it.

SLT_ROOT=${SLT_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
SLT_SLUICED=${SLT_SLUICED:-$SLT_ROOT/build/sluiced}
SLT_SLUICECTL=${SLT_SLUICECTL:-$SLT_ROOT/build/sluicectl}
SLT_UPSTREAM_PY=$SLT_ROOT/tests/integration/upstream.py
# Debian's python3 (the pyenv shim on PATH may not exist inside every shell).
if [ -x /usr/bin/python3 ]; then SLT_PY=/usr/bin/python3; else SLT_PY=$(command -v python3); fi

slt_log() { printf '%s\n' "$*" >&2; }
slt_vlog() { [ "${V:-0}" = 1 ] && printf '  | %s\n' "$*" >&2; return 0; }

# Retry "$@" until it succeeds; at most $1 tries, $2 seconds apart.
slt_retry() {
	local tries=$1 delay=$2 i
	shift 2
	for ((i = 0; i < tries; i++)); do
		"$@" && return 0
		sleep "$delay"
	done
	return 1
}

# Whether pid $1 is alive and not a zombie.
slt_pid_alive() {
	local st
	[ -n "$1" ] && [ "$1" -gt 1 ] 2>/dev/null || return 1
	st=$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "$st" != Z ]
}

# Recursively remove a cgroup v2 directory: kill its processes, rmdir bottom-up.
slt_cgroup_rm() {
	local dir=$1 d i
	[ -d "$dir" ] || return 0
	while IFS= read -r d; do
		if [ -e "$d/cgroup.kill" ]; then
			echo 1 >"$d/cgroup.kill" 2>/dev/null
		else
			xargs -r kill -KILL <"$d/cgroup.procs" 2>/dev/null
		fi
	done < <(find "$dir" -depth -type d 2>/dev/null)
	for ((i = 0; i < 50; i++)); do
		while IFS= read -r d; do rmdir "$d" 2>/dev/null; done \
			< <(find "$dir" -depth -type d 2>/dev/null)
		[ -d "$dir" ] || return 0
		sleep 0.1
	done
	slt_log "warning: could not remove cgroup $dir"
	return 1
}

# Unmount everything mounted at or below $1 (deepest first), lazily if busy.
slt_umount_below() {
	local m
	while IFS= read -r m; do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
	done < <(awk -v p="$1" '$2 == p || index($2, p "/") == 1 {print $2}' /proc/self/mounts |
		sort -r)
}

slt_cgroup2_root() {
	awk '$3 == "cgroup2" {print $2; exit}' /proc/mounts
}

# topo_init PREFIX: pick names for this run. Idempotent per process.
topo_init() {
	local pfx=${1:-slt}
	SLT_PFX=$pfx$$
	SLT_TMP=$(mktemp -d "/tmp/$SLT_PFX.XXXXXX") || return 1
	chmod 755 "$SLT_TMP"
	SLT_X=${SLT_X:-7}
	SLT_GW_NS=${SLT_PFX}gw
	SLT_UP_NS=${SLT_PFX}up
	SLT_MD_NS=${SLT_PFX}md
	SLT_GW_NSPATH=/run/netns/$SLT_GW_NS
	SLT_UP_NSPATH=/run/netns/$SLT_UP_NS
	SLT_MD_NSPATH=/run/netns/$SLT_MD_NS
	SLT_GW4=198.18.$SLT_X.1
	SLT_UP4=198.18.$SLT_X.2
	SLT_DOWN4=198.18.$SLT_X.3
	SLT_DNS4=198.18.$SLT_X.4
	SLT_FOREIGN4=198.18.$SLT_X.5
	SLT_FOREIGN6=2001:db8:5c:$SLT_X::5
	SLT_FOREIGN_ANSWER4=198.18.$SLT_X.6
	SLT_GW6=2001:db8:5c:$SLT_X::1
	SLT_UP6=2001:db8:5c:$SLT_X::2
	SLT_GWMD4=198.19.$SLT_X.1
	SLT_MD4=198.19.$SLT_X.2
	SLT_META4=169.254.169.254
	SLT_META6=fd00:ec2::254
	SLT_GWMD6=2001:db8:5d:$SLT_X::1
	SLT_MD6=2001:db8:5d:$SLT_X::2
	SLT_CG_ROOT=$(slt_cgroup2_root)
	SLT_CG=$SLT_CG_ROOT/$SLT_PFX
	SLT_CG_SLUICED=$SLT_CG/sluiced
	SLT_CG_SANDBOXES=$SLT_CG/sandboxes
	SLT_RUN=$SLT_TMP/run
	SLT_STATE=$SLT_TMP/state
	SLT_BPFFS=$SLT_TMP/bpffs
	SLT_BPF=$SLT_BPFFS/sluice
	SLT_PORT=${SLT_PORT:-15001}
	SLT_CA=$SLT_TMP/pki/test-ca.pem
	SLT_SRV_CERT=$SLT_TMP/pki/upstream.pem
	SLT_SRV_KEY=$SLT_TMP/pki/upstream.key
	SLT_SLUICED_HOSTS=$SLT_TMP/sluiced.hosts
	SLT_CLIENT_HOSTS=$SLT_TMP/client.hosts
	SLT_INHOSTS=$SLT_TMP/inhosts.sh
	SLT_UP_LOG=$SLT_TMP/upstream.log
	SLT_MD_LOG=$SLT_TMP/metadata.log
	SLT_UP_CONN_LOG=$SLT_TMP/upstream-conn.log
	SLT_DNS_LOG=$SLT_TMP/dns.log
	SLT_FOREIGN_LOG=$SLT_TMP/dns-foreign.log
	SLT_DNS_ZONE=$SLT_TMP/dns.zone
	SLT_SLUICED_LOG=$SLT_TMP/sluiced.log
	SLT_PIDS=$SLT_TMP/pids
	# Names the upstream certificate covers and sluiced resolves to the upstream.
	SLT_NAMES="upstream.test other.upstream.test api.example.test other.example.test"
	mkdir -p "$SLT_TMP/pki" "$SLT_PIDS" "$SLT_RUN" "$SLT_STATE" "$SLT_BPFFS" "$SLT_TMP/work"
	topo_save_env
}

topo_save_env() {
	local v
	{
		for v in $(compgen -v SLT_); do
			printf '%s=%q\n' "$v" "${!v}"
		done
		printf 'V=%q\n' "${V:-0}"
	} >"$SLT_TMP/env.sh"
}

# Leftovers of interrupted runs: our prefixes followed by the pid of a run
# that is no longer alive. Never touches names whose owner is alive.
topo_cleanup_stale() {
	local re='^(slt|sld|slb)([0-9]+)' name pid d cg root
	root=$(slt_cgroup2_root)
	for name in $(ip netns list 2>/dev/null | awk '{print $1}'); do
		[[ $name =~ $re ]] || continue
		pid=${BASH_REMATCH[2]}
		slt_pid_alive "$pid" && continue
		ip netns pids "$name" 2>/dev/null | xargs -r kill -KILL 2>/dev/null
		ip netns del "$name" 2>/dev/null && slt_log "removed stale netns $name"
	done
	for d in /tmp/sl[tdb][0-9]*.*; do
		[ -d "$d" ] || continue
		name=${d#/tmp/}
		[[ $name =~ $re ]] || continue
		pid=${BASH_REMATCH[2]}
		slt_pid_alive "$pid" && continue
		[ -f "$d/sluiced.pid" ] && kill -KILL "$(cat "$d/sluiced.pid")" 2>/dev/null
		for f in "$d"/pids/*; do [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null; done
		slt_umount_below "$d"
		rm -rf "$d" && slt_log "removed stale dir $d"
	done
	if [ -n "$root" ]; then
		for cg in "$root"/sl[tdb][0-9]*; do
			[ -d "$cg" ] || continue
			name=${cg##*/}
			[[ $name =~ $re ]] || continue
			pid=${BASH_REMATCH[2]}
			slt_pid_alive "$pid" && continue
			slt_cgroup_rm "$cg" && slt_log "removed stale cgroup $cg"
		done
	fi
	return 0
}

topo_certs() {
	local d=$SLT_TMP/pki san n
	san="subjectAltName="
	for n in $SLT_NAMES; do san+="DNS:$n,"; done
	san+="DNS:*.upstream.test,IP:$SLT_UP4,IP:$SLT_UP6"
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/test-ca.key" \
		2>/dev/null || return 1
	openssl req -x509 -new -key "$d/test-ca.key" -subj "/CN=sluice test upstream CA $SLT_PFX" \
		-days 2 -out "$SLT_CA" -addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null || return 1
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$SLT_SRV_KEY" \
		2>/dev/null || return 1
	openssl req -new -key "$SLT_SRV_KEY" -subj "/CN=upstream.test" -out "$d/upstream.csr" \
		2>/dev/null || return 1
	printf '%s\n' "$san" "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" \
		"extendedKeyUsage=serverAuth" >"$d/upstream.ext"
	openssl x509 -req -in "$d/upstream.csr" -CA "$SLT_CA" -CAkey "$d/test-ca.key" \
		-CAcreateserial -days 2 -extfile "$d/upstream.ext" -out "$SLT_SRV_CERT" 2>/dev/null
}

topo_hosts() {
	# sluiced's own resolution: the upstream names → the upstream's v4 address;
	# v6.upstream.test → its v6 address; down.test → an address with no listener.
	# rebind.test / rebind6.test → the metadata address: a name an attacker
	# points at metadata after the sandbox resolved it to something harmless
	# (DNS rebinding); sluiced must refuse the dial.
	{
		echo "$SLT_UP4 $SLT_NAMES"
		echo "$SLT_UP6 v6.upstream.test"
		echo "$SLT_DOWN4 down.test"
		echo "$SLT_META4 rebind.test"
		echo "$SLT_META6 rebind6.test"
	} >"$SLT_SLUICED_HOSTS"
	# What the test DNS server (sluiced's --dns-resolver) answers.
	{
		echo "$SLT_UP4 $SLT_NAMES"
		echo "$SLT_UP6 upstream.test v6.upstream.test"
	} >"$SLT_DNS_ZONE"
	# What clients in a sandbox see (via sbx_run's private /etc/hosts). Any
	# address would do: the connect is redirected to sluiced either way.
	{
		echo "127.0.0.1 localhost"
		echo "::1 localhost ip6-localhost"
		echo "$SLT_UP4 $SLT_NAMES v6.upstream.test down.test rebind.test rebind6.test"
	} >"$SLT_CLIENT_HOSTS"
	cat >"$SLT_INHOSTS" <<'EOF'
#!/bin/sh
# inhosts.sh HOSTS CMD ARGS...: run CMD in a private mount namespace whose
# /etc/hosts is HOSTS (so clients resolve the test names). Needs root.
h=$1; shift
exec unshare -m --propagation private sh -c 'mount --bind "$0" /etc/hosts || exit 125; exec "$@"' "$h" "$@"
EOF
	chmod 755 "$SLT_INHOSTS"
}

# Start a background process in netns $1 (path), detached in its own session,
# pid recorded as $SLT_PIDS/$2. Remaining args: the command.
slt_spawn_in() {
	local ns=$1 name=$2
	shift 2
	setsid nsenter --net="$ns" "$@" >"$SLT_TMP/$name.out" 2>&1 </dev/null &
	echo $! >"$SLT_PIDS/$name"
	disown $! 2>/dev/null # no job notice when a test kills it
}

topo_net() {
	ip netns add "$SLT_GW_NS" && ip netns add "$SLT_UP_NS" && ip netns add "$SLT_MD_NS" ||
		return 1
	local ns
	for ns in "$SLT_GW_NS" "$SLT_UP_NS" "$SLT_MD_NS"; do
		ip -n "$ns" link set lo up || return 1
		nsenter --net="/run/netns/$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 \
			net.ipv6.conf.default.accept_dad=0 >/dev/null 2>&1
	done
	ip link add gw-up netns "$SLT_GW_NS" type veth peer up-gw netns "$SLT_UP_NS" || return 1
	ip link add gw-md netns "$SLT_GW_NS" type veth peer md-gw netns "$SLT_MD_NS" || return 1
	ip -n "$SLT_GW_NS" addr add "$SLT_GW4/29" dev gw-up &&
		ip -n "$SLT_GW_NS" addr add "$SLT_GW6/64" dev gw-up nodad &&
		ip -n "$SLT_GW_NS" addr add "$SLT_GWMD4/30" dev gw-md &&
		ip -n "$SLT_GW_NS" link set gw-up up &&
		ip -n "$SLT_GW_NS" link set gw-md up &&
		ip -n "$SLT_GW_NS" addr add "$SLT_GWMD6/64" dev gw-md nodad &&
		ip -n "$SLT_GW_NS" route add "$SLT_META4/32" via "$SLT_MD4" &&
		ip -n "$SLT_GW_NS" -6 route add "$SLT_META6/128" via "$SLT_MD6" || return 1
	ip -n "$SLT_UP_NS" addr add "$SLT_UP4/29" dev up-gw &&
		ip -n "$SLT_UP_NS" addr add "$SLT_DOWN4/29" dev up-gw &&
		ip -n "$SLT_UP_NS" addr add "$SLT_DNS4/29" dev up-gw &&
		ip -n "$SLT_UP_NS" addr add "$SLT_FOREIGN4/29" dev up-gw &&
		ip -n "$SLT_UP_NS" addr add "$SLT_UP6/64" dev up-gw nodad &&
		ip -n "$SLT_UP_NS" addr add "$SLT_FOREIGN6/64" dev up-gw nodad &&
		ip -n "$SLT_UP_NS" link set up-gw up &&
		ip -n "$SLT_UP_NS" route add default via "$SLT_GW4" &&
		ip -n "$SLT_UP_NS" -6 route add default via "$SLT_GW6" || return 1
	ip -n "$SLT_MD_NS" addr add "$SLT_MD4/30" dev md-gw &&
		ip -n "$SLT_MD_NS" addr add "$SLT_META4/32" dev md-gw &&
		ip -n "$SLT_MD_NS" addr add "$SLT_MD6/64" dev md-gw nodad &&
		ip -n "$SLT_MD_NS" addr add "$SLT_META6/128" dev md-gw nodad &&
		ip -n "$SLT_MD_NS" link set md-gw up &&
		ip -n "$SLT_MD_NS" route add default via "$SLT_GWMD4" &&
		ip -n "$SLT_MD_NS" -6 route add default via "$SLT_GWMD6" || return 1
}

topo_services() {
	: >"$SLT_UP_LOG"
	: >"$SLT_MD_LOG"
	rm -f "$SLT_TMP/upstream.ready" "$SLT_TMP/metadata.ready" "$SLT_TMP/dns.ready" \
		"$SLT_TMP/dns-foreign.ready"
	# Bound to .2 and ::2 only: nothing must listen on $SLT_DOWN4.
	slt_spawn_in "$SLT_UP_NSPATH" upstream "$SLT_PY" "$SLT_UPSTREAM_PY" --https 443 --http 80 \
		--udp 443 --bind "$SLT_UP4" --bind "$SLT_UP6" \
		--cert "$SLT_SRV_CERT" --key "$SLT_SRV_KEY" --log "$SLT_UP_LOG" \
		--conn-log "$SLT_UP_CONN_LOG" --ready "$SLT_TMP/upstream.ready"
	slt_spawn_in "$SLT_UP_NSPATH" dns "$SLT_PY" "$SLT_UPSTREAM_PY" --dns 53 --bind "$SLT_DNS4" \
		--zone "$SLT_DNS_ZONE" --log "$SLT_DNS_LOG" --ready "$SLT_TMP/dns.ready"
	slt_spawn_in "$SLT_UP_NSPATH" dns-foreign "$SLT_PY" "$SLT_UPSTREAM_PY" --dns 53 \
		--bind "$SLT_FOREIGN4" --bind "$SLT_FOREIGN6" --dns-answer "$SLT_FOREIGN_ANSWER4" \
		--log "$SLT_FOREIGN_LOG" --ready "$SLT_TMP/dns-foreign.ready"
	slt_spawn_in "$SLT_MD_NSPATH" metadata "$SLT_PY" "$SLT_UPSTREAM_PY" --https 443 --http 80 \
		--cert "$SLT_SRV_CERT" --key "$SLT_SRV_KEY" --log "$SLT_MD_LOG" --log-connections \
		--ready "$SLT_TMP/metadata.ready"
	slt_retry 100 0.1 test -e "$SLT_TMP/upstream.ready" -a -e "$SLT_TMP/metadata.ready" \
		-a -e "$SLT_TMP/dns.ready" -a -e "$SLT_TMP/dns-foreign.ready" || {
		slt_log "upstream/metadata/DNS servers did not start:"
		cat "$SLT_TMP/upstream.out" "$SLT_TMP/metadata.out" "$SLT_TMP/dns.out" \
			"$SLT_TMP/dns-foreign.out" >&2
		return 1
	}
	# The gateway (sluiced's netns) must reach the upstream over v4 and v6.
	# These probes are the only direct requests; they use path /_probe.
	nsenter --net="$SLT_GW_NSPATH" curl -sS -o /dev/null --max-time 5 --cacert "$SLT_CA" \
		--resolve "upstream.test:443:$SLT_UP4" https://upstream.test/_probe || return 1
	nsenter --net="$SLT_GW_NSPATH" curl -sS -o /dev/null --max-time 5 --cacert "$SLT_CA" \
		--resolve "v6.upstream.test:443:[$SLT_UP6]" https://v6.upstream.test/_probe || return 1
	# The fake metadata server must really be reachable from sluiced's netns,
	# or "it logged no hit" would prove nothing. Probe it, then empty its log.
	nsenter --net="$SLT_GW_NSPATH" curl -sS -o /dev/null --max-time 5 \
		"http://$SLT_META4/_probe" || return 1
	nsenter --net="$SLT_GW_NSPATH" curl -sS -g -o /dev/null --max-time 5 \
		"http://[$SLT_META6]/_probe" || return 1
	: >"$SLT_MD_LOG"
	# Both resolvers answer from the gateway (so "the foreign one logged
	# nothing" means it was not asked); then their logs start empty.
	slt_dns_probe "$SLT_DNS4" "$SLT_UP4" || return 1
	slt_dns_probe "$SLT_FOREIGN4" "$SLT_FOREIGN_ANSWER4" || return 1
	: >"$SLT_DNS_LOG"
	: >"$SLT_FOREIGN_LOG"
	: >"$SLT_UP_CONN_LOG"
}

# slt_dns_probe SERVER WANT: from the gateway netns, an A query for
# upstream.test to SERVER:53 over UDP must be answered with WANT.
slt_dns_probe() {
	local got
	got=$(timeout 5 nsenter --net="$SLT_GW_NSPATH" "$SLT_PY" -c '
import socket, struct, sys
q = struct.pack(">HHHHHH", 0x5151, 0x0100, 1, 0, 0, 0) + b"\x08upstream\x04test\x00\x00\x01\x00\x01"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.sendto(q, (sys.argv[1], 53))
r = s.recv(512)
print(socket.inet_ntoa(r[-4:]) if struct.unpack(">H", r[6:8])[0] else "none")' "$1" 2>&1)
	[ "$got" = "$2" ] || { slt_log "DNS probe of $1: expected $2, got: $got"; return 1; }
}

topo_up() {
	topo_certs || { slt_log "topology: certificate generation failed"; return 1; }
	topo_hosts
	topo_net || { slt_log "topology: network setup failed"; return 1; }
	mount -t bpf bpf "$SLT_BPFFS" || { slt_log "topology: cannot mount bpffs"; return 1; }
	mkdir -p "$SLT_BPF"
	# No controllers needed: only a test-owned parent for sluiced's cgroup
	# (sluiced creates and enters it) and for the sandboxes' cgroups.
	mkdir -p "$SLT_CG_SANDBOXES" || return 1
	if [ "${SLT_NO_SERVICES:-0}" != 1 ]; then
		topo_services || { slt_log "topology: services failed"; return 1; }
	fi
	topo_save_env
}

# --- sluiced ------------------------------------------------------------

sluiced_pid() { cat "$SLT_TMP/sluiced.pid" 2>/dev/null; }

# sluicectl in the gateway netns, with this run's run dir, bounded by
# $BOUND seconds (default 60; SIGKILL 2 s after SIGTERM).
ctl() {
	timeout -k 2 "${BOUND:-60}" nsenter --net="$SLT_GW_NSPATH" "$SLT_SLUICECTL" \
		--run-dir "$SLT_RUN" "$@"
}

# sluiced_start [EXTRA ARGS]: same dirs every time (a restart finds its state).
sluiced_start() {
	local pid i
	{ echo "=== sluiced start $(date +%T.%N)"; } >>"$SLT_SLUICED_LOG"
	setsid nsenter --net="$SLT_GW_NSPATH" "$SLT_SLUICED" \
		--state-dir "$SLT_STATE" --run-dir "$SLT_RUN" --bpf-pin-dir "$SLT_BPF" \
		--port "$SLT_PORT" --upstream-ca "$SLT_CA" --hosts "$SLT_SLUICED_HOSTS" \
		--cgroup "$SLT_CG_SLUICED" --audit-log "$SLT_TMP/audit.jsonl" --dns-resolver "$SLT_DNS4:53" ${SLUICED_ARGS:-} "$@" \
		>>"$SLT_SLUICED_LOG" 2>&1 </dev/null &
	pid=$!
	disown "$pid" 2>/dev/null # tests SIGKILL it: no job notice
	echo "$pid" >"$SLT_TMP/sluiced.pid"
	for ((i = 0; i < 100; i++)); do
		if ! slt_pid_alive "$pid"; then
			slt_log "sluiced exited during start; log tail:"
			tail -n 20 "$SLT_SLUICED_LOG" >&2
			return 1
		fi
		ctl ping >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	slt_log "sluiced did not answer ping within 10 s; log tail:"
	tail -n 20 "$SLT_SLUICED_LOG" >&2
	return 1
}

sluiced_stop() {
	local pid i
	pid=$(sluiced_pid)
	slt_pid_alive "$pid" || return 0
	kill -TERM "$pid" 2>/dev/null
	for ((i = 0; i < 50; i++)); do
		slt_pid_alive "$pid" || return 0
		sleep 0.1
	done
	slt_log "sluiced did not exit on SIGTERM within 5 s; SIGKILL"
	kill -KILL "$pid" 2>/dev/null
	slt_retry 50 0.1 eval "! slt_pid_alive $pid"
}

# sbx_run [sluicectl-run options] -- CMD ARGS...: CMD in a fresh sandbox,
# seeing the test names. Exit status of CMD.
sbx_run() {
	local opts=()
	while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
	[ "${1:-}" = -- ] && shift
	# The command sees the test names through `run --hosts` (a private
	# mount namespace made before sluicectl drops CAP_SYS_ADMIN).
	ctl run --cgroup-parent "$SLT_CG_SANDBOXES" --hosts "$SLT_CLIENT_HOSTS" "${opts[@]}" -- "$@"
}

# Same, with every proxy variable pointing where nothing listens.
SLT_DEAD_PROXY=http://198.18.255.254:3128
sbx_run_proxy() {
	local opts=()
	while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
	[ "${1:-}" = -- ] && shift
	sbx_run "${opts[@]}" -- env HTTPS_PROXY=$SLT_DEAD_PROXY HTTP_PROXY=$SLT_DEAD_PROXY \
		https_proxy=$SLT_DEAD_PROXY http_proxy=$SLT_DEAD_PROXY ALL_PROXY= all_proxy= \
		NO_PROXY= no_proxy= "$@"
}

# Upstream log lines whose path contains $1 (a per-request unique marker).
up_log_for() { grep -F -- "$1" "$SLT_UP_LOG" || true; }

topo_down() {
	local f pid
	[ -n "${SLT_TMP:-}" ] && [ -d "$SLT_TMP" ] || return 0
	sluiced_stop 2>/dev/null
	for f in "$SLT_PIDS"/*; do
		[ -f "$f" ] || continue
		pid=$(cat "$f")
		kill -TERM "$pid" 2>/dev/null
	done
	sleep 0.2
	for f in "$SLT_PIDS"/*; do
		[ -f "$f" ] || continue
		pid=$(cat "$f")
		kill -KILL "$pid" 2>/dev/null
	done
	[ -n "${SLT_CG:-}" ] && slt_cgroup_rm "$SLT_CG"
	for f in $(ip netns list 2>/dev/null | awk '{print $1}'); do
		case $f in "$SLT_PFX"*) ;; *) continue ;; esac
		ip netns pids "$f" 2>/dev/null | xargs -r kill -KILL 2>/dev/null
		ip netns del "$f" 2>/dev/null
	done
	slt_umount_below "$SLT_TMP"
	if [ "${SLT_KEEP_TMP:-0}" = 1 ]; then
		slt_log "kept $SLT_TMP"
	else
		rm -rf "$SLT_TMP"
	fi
}
