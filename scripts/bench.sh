#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# bench.sh: what sluice costs, measured on this machine, in one run.
#
# nginx (worker_processes 1, keep-alive, access_log off, a 100-byte /small
# and a 1 MiB /1m) serves HTTPS with the test certificate in the "internet"
# netns of the test topology (scripts/lib/topology.sh). wrk drives it twice
# per figure: directly from the gateway netns (where sluiced also runs), and
# from inside `sluicectl run` (every connect redirected to sluiced, which
# terminates TLS and dials nginx itself). Figures:
#   keep-alive req/s        wrk -t2 -c32 /small
#   p50/p99 latency         wrk -t1 -c1 --latency /small
#   new-connection req/s    wrk -t2 -c8 /small with `Connection: close` (one TLS handshake each)
#   1 MiB MiB/s             wrk -t2 -c4 /1m (from Transfer/sec)
#   sluiced CPU per request (utime+stime delta over the keep-alive runs) and peak RSS (VmHWM).
#   UDP round trips/s and p50  a Python client doing BENCH_UDP_N (default 20000) 64-byte
#                           ping-pongs on one connected socket with a Python echo server,
#                           direct and through sluiced's UDP relay (policy network.udp).
# Each figure is the mean of two runs. Debian's wrk does not verify
# certificates, so the direct and the sandboxed runs do the same TLS work.
#
#   BENCH_SECS=5 (per wrk run)   BENCH_WORKERS=1 (sluiced --workers)   V=1 (show wrk output)   SLT_KEEP_TMP=1

set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SECS=${BENCH_SECS:-5}

if [ "$(id -u)" != 0 ]; then
	echo "bench: needs root (namespaces, cgroups, BPF)"
	exit 77
fi
for tool in wrk nginx nsenter; do
	command -v "$tool" >/dev/null || { echo "bench: missing $tool"; exit 1; }
done

# shellcheck source=lib/topology.sh
. "$ROOT/scripts/lib/topology.sh"
# BENCH_MODES=direct measures only the direct path (no sluiced needed).
MODES=${BENCH_MODES:-direct sluice}
if [ "$MODES" != direct ]; then
	for b in "$SLT_SLUICED" "$SLT_SLUICECTL"; do
		[ -x "$b" ] || { echo "bench: missing $b (run make)"; exit 1; }
	done
fi

topo_init slb || exit 1
trap 'topo_down' EXIT
trap 'exit 130' INT TERM
topo_cleanup_stale
SLT_NO_SERVICES=1 topo_up || { echo "bench: topology setup failed"; exit 1; }

# --- nginx --------------------------------------------------------------
NGX=$SLT_TMP/nginx
mkdir -p "$NGX/www" "$NGX/tmp" "$NGX/logs"
head -c 100 /dev/zero | tr '\0' s >"$NGX/www/small"
head -c 1048576 /dev/urandom >"$NGX/www/1m"
cat >"$NGX/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $NGX/nginx.pid;
error_log $NGX/logs/error.log warn;
events { worker_connections 4096; }
http {
	access_log off;
	sendfile on;
	tcp_nopush on;
	keepalive_timeout 65;
	keepalive_requests 10000000;
	default_type application/octet-stream;
	client_body_temp_path $NGX/tmp/body;
	proxy_temp_path $NGX/tmp/proxy;
	fastcgi_temp_path $NGX/tmp/fastcgi;
	server {
		listen $SLT_UP4:443 ssl;
		listen [$SLT_UP6]:443 ssl;
		ssl_certificate $SLT_SRV_CERT;
		ssl_certificate_key $SLT_SRV_KEY;
		root $NGX/www;
		location / { }
	}
}
EOF
nsenter --net="$SLT_UP_NSPATH" nginx -t -q -p "$NGX" -c "$NGX/nginx.conf" -e "$NGX/logs/error.log" ||
	{ echo "bench: nginx config test failed"; cat "$NGX/logs/error.log"; exit 1; }
slt_spawn_in "$SLT_UP_NSPATH" nginx nginx -p "$NGX" -c "$NGX/nginx.conf" -e "$NGX/logs/error.log"
probe() {
	nsenter --net="$SLT_GW_NSPATH" curl -sf -o /dev/null --max-time 2 --cacert "$SLT_CA" \
		--resolve "upstream.test:443:$SLT_UP4" https://upstream.test/small
}
slt_retry 50 0.1 probe || { echo "bench: nginx does not answer"; cat "$NGX/logs/error.log"; exit 1; }

SPID=
if [ "$MODES" != direct ]; then
	# One worker, like the nginx upstream (worker_processes 1): wrk, nginx and
	# sluiced share two cores, and a second sluiced worker costs more in
	# contention than it gives (measured: new-connection ratio 0.47-0.50 with
	# two workers, 0.60-0.64 with one). BENCH_WORKERS overrides.
	sluiced_start --workers "${BENCH_WORKERS:-1}" || { echo "bench: sluiced did not start"; exit 1; }
	SPID=$(sluiced_pid)
fi

echo 'wrk.headers["Connection"] = "close"' >"$SLT_TMP/close.lua"

# --- UDP echo (for the relay figures) -------------------------------------
cat >"$SLT_TMP/udp_echo.py" <<'EOF2'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
while True:
    d, a = s.recvfrom(65535)
    s.sendto(d, a)
EOF2
cat >"$SLT_TMP/udp_rtt.py" <<'EOF2'
# udp_rtt.py ADDR PORT N: N ping-pongs (bounded: 30 s), prints figures.
import socket, sys, time
addr, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.0)
s.connect((addr, port))
rtts, lost, t0 = [], 0, time.monotonic()
for i in range(n):
    if time.monotonic() - t0 > 30:
        break
    p = i.to_bytes(8, "big") * 8
    a = time.perf_counter()
    s.send(p)
    try:
        while s.recv(65535) != p:
            pass
    except socket.timeout:
        lost += 1
        continue
    rtts.append(time.perf_counter() - a)
el = time.monotonic() - t0
rtts.sort()
print("rtts %d lost %d rate %.0f p50_us %.0f p99_us %.0f" % (len(rtts), lost, len(rtts) / el,
      rtts[len(rtts) // 2] * 1e6, rtts[int(len(rtts) * 0.99)] * 1e6))
EOF2
slt_spawn_in "$SLT_UP_NSPATH" udpecho "$SLT_PY" "$SLT_TMP/udp_echo.py" "$SLT_UP4" 5300
cat >"$SLT_TMP/udp.yaml" <<EOF2
version: 1
network:
  udp:
    - name: bench-echo
      to: $SLT_UP4
      ports: [5300]
EOF2
UDP_N=${BENCH_UDP_N:-20000}
# udp_run MODE: one run of the ping-pong client, output to $SLT_TMP/udp.MODE.$ROUND.
udp_run() {
	local mode=$1 out=$SLT_TMP/udp.$1.$ROUND
	if [ "$mode" = direct ]; then
		timeout -k 2 40 nsenter --net="$SLT_GW_NSPATH" "$SLT_PY" "$SLT_TMP/udp_rtt.py" \
			"$SLT_UP4" 5300 "$UDP_N" >"$out" 2>&1
	else
		BOUND=40 sbx_run --policy "$SLT_TMP/udp.yaml" -- "$SLT_PY" "$SLT_TMP/udp_rtt.py" \
			"$SLT_UP4" 5300 "$UDP_N" >"$out" 2>&1
	fi
	[ "${V:-0}" = 1 ] && sed "s/^/  [udp $mode $ROUND] /" "$out"
	grep -q '^rtts ' "$out" || { echo "bench: udp $mode failed:"; cat "$out"; exit 1; }
}

# --- measuring ----------------------------------------------------------
# wrk_run MODE NAME WRK-ARGS...: run wrk direct or in a sandbox, output to
# $SLT_TMP/wrk.MODE.NAME.N (N = round).
wrk_run() {
	local mode=$1 name=$2 out
	shift 2
	out=$SLT_TMP/wrk.$mode.$name.$ROUND
	if [ "$mode" = direct ]; then
		timeout -k 2 $((SECS + 20)) nsenter --net="$SLT_GW_NSPATH" \
			"$SLT_INHOSTS" "$SLT_CLIENT_HOSTS" wrk "$@" >"$out" 2>&1
	else
		BOUND=$((SECS + 20)) sbx_run -- wrk "$@" >"$out" 2>&1
	fi
	[ "${V:-0}" = 1 ] && sed "s/^/  [$mode $name $ROUND] /" "$out"
	grep -q '^Requests/sec' "$out" || { echo "bench: wrk $mode $name failed:"; cat "$out"; exit 1; }
	if grep -Eq 'Non-2xx|Socket errors' "$out"; then
		echo "bench: warning: wrk $mode $name reported errors:"
		grep -E 'Non-2xx|Socket errors' "$out" | sed 's/^/    /'
	fi
}

cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

U=https://upstream.test
KA_REQS=0 KA_TICKS=0
for ROUND in 1 2; do
	for mode in $MODES; do
		[ $mode = sluice ] && t0=$(cpu_ticks "$SPID")
		wrk_run $mode ka -t2 -c32 -d"${SECS}s" "$U/small"
		if [ $mode = sluice ]; then
			KA_TICKS=$((KA_TICKS + $(cpu_ticks "$SPID") - t0))
			KA_REQS=$((KA_REQS + $(awk '/requests in/ {print $1}' "$SLT_TMP/wrk.sluice.ka.$ROUND")))
		fi
		wrk_run $mode lat -t1 -c1 -d"${SECS}s" --latency "$U/small"
		wrk_run $mode new -t2 -c8 -d"${SECS}s" -s "$SLT_TMP/close.lua" "$U/small"
		wrk_run $mode 1m -t2 -c4 -d"${SECS}s" "$U/1m"
		udp_run $mode
	done
done
if [ "$MODES" = direct ]; then
	for n in ka new; do echo "direct $n req/s: $(cat "$SLT_TMP"/wrk.direct.$n.[12] |
		awk '/^Requests\/sec/ {s += $2; n++} END {printf "%.0f", s / n}')"; done
	grep -h -E '^ +(50|99)%|^Transfer' "$SLT_TMP"/wrk.direct.{lat,1m}.[12]
	cat "$SLT_TMP"/udp.direct.[12]
	exit 0
fi
slt_pid_alive "$SPID" || { echo "bench: sluiced died during the benchmark"; exit 1; }
HWM_KB=$(awk '/^VmHWM:/ {print $2}' "/proc/$SPID/status")
HZ=$(getconf CLK_TCK)

# Figures, by awk from wrk's output: one value per run file.
# req/s
rps_of() { awk '/^Requests\/sec/ {printf "%.0f", $2}' "$1"; }
# MiB/s from Transfer/sec (wrk prints binary units: B, KB, MB, GB)
mibs_of() {
	awk '/^Transfer\/sec/ { v = $2; u = v; sub(/[0-9.]+/, "", u); v += 0
		f = (u == "GB") ? 1024 : (u == "MB") ? 1 : (u == "KB") ? 1 / 1024 : 1 / 1048576
		printf "%.1f", v * f }' "$1"
}
# latency percentile ($2: 50 or 99) in microseconds
lat_of() {
	awk -v p="$2%" '$1 == p { v = $2; u = v; sub(/[0-9.]+/, "", u); v += 0
		f = (u == "s") ? 1000000 : (u == "ms") ? 1000 : 1
		printf "%.0f", v * f }' "$1"
}
# UDP figures ($2: rate or p50_us) from udp_rtt.py's line
udp_of() { awk -v k="$2" '{for (i = 1; i < NF; i++) if ($i == k) print $(i + 1)}' "$1"; }
# fig FN MODE NAME [ARG]: sets FIG="mean (run1, run2)" and MEAN (files wrk.MODE.NAME.N,
# or udp.MODE.N when NAME is udp).
fig() {
	local fn=$1 mode=$2 name=$3 a b f=wrk.$2.$3
	[ "$name" = udp ] && f=udp.$mode
	a=$($fn "$SLT_TMP/$f.1" ${4:-})
	b=$($fn "$SLT_TMP/$f.2" ${4:-})
	MEAN=$(awk -v a="$a" -v b="$b" 'BEGIN {m = (a + b) / 2; printf (m < 100 ? "%.1f" : "%.0f"), m}')
	FIG="$MEAN ($a, $b)"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "n/a"}'; }
added() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.0f", a - b}'; }

echo "sluice benchmark: $(nproc) cores, $(uname -r), ${SECS}s per wrk run; mean (run 1, run 2)"
fig rps_of direct ka; D_KA=$MEAN; echo "direct keep-alive req/s (c32): $FIG"
fig rps_of sluice ka; S_KA=$MEAN; echo "sluice keep-alive req/s (c32): $FIG"
fig rps_of direct new; D_NEW=$MEAN; echo "direct new-connection req/s (c8): $FIG"
fig rps_of sluice new; S_NEW=$MEAN; echo "sluice new-connection req/s (c8): $FIG"
fig mibs_of direct 1m; D_1M=$MEAN; echo "direct 1MiB MiB/s (c4): $FIG"
fig mibs_of sluice 1m; S_1M=$MEAN; echo "sluice 1MiB MiB/s (c4): $FIG"
fig lat_of direct lat 50; D_P50=$MEAN; echo "direct p50 latency (us, c1): $FIG"
fig lat_of sluice lat 50; S_P50=$MEAN; echo "sluice p50 latency (us, c1): $FIG"
fig lat_of direct lat 99; D_P99=$MEAN; echo "direct p99 latency (us, c1): $FIG"
fig lat_of sluice lat 99; S_P99=$MEAN; echo "sluice p99 latency (us, c1): $FIG"
fig udp_of direct udp rate; D_UR=$MEAN; echo "direct UDP round trips/s (c1): $FIG"
fig udp_of sluice udp rate; S_UR=$MEAN; echo "sluice UDP round trips/s (c1): $FIG"
fig udp_of direct udp p50_us; D_UP=$MEAN; echo "direct UDP p50 round trip (us): $FIG"
fig udp_of sluice udp p50_us; S_UP=$MEAN; echo "sluice UDP p50 round trip (us): $FIG"
CPU_US=$(awk -v t="$KA_TICKS" -v hz="$HZ" -v r="$KA_REQS" 'BEGIN {printf "%.1f", t * 1e6 / hz / r}')

echo "keep-alive req/s ratio: $(ratio "$S_KA" "$D_KA")"
echo "new-connection req/s ratio: $(ratio "$S_NEW" "$D_NEW")"
echo "1MiB MiB/s ratio: $(ratio "$S_1M" "$D_1M")"
echo "p50 latency added (us): $(added "$S_P50" "$D_P50")"
echo "p99 latency added (us): $(added "$S_P99" "$D_P99")"
echo "UDP round trips/s ratio: $(ratio "$S_UR" "$D_UR")"
echo "UDP p50 round trip added (us): $(added "$S_UP" "$D_UP")"
echo "sluiced cpu us/req (keep-alive): $CPU_US"
echo "sluiced peak rss (MiB): $(awk -v k="$HWM_KB" 'BEGIN {printf "%.1f", k / 1024}')"
