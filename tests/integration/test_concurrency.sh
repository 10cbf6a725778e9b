# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# 200 connections from one sandbox open at the same time (a barrier holds
# every request until all 200 TLS handshakes with sluiced are done), each
# request held 300 ms upstream: all 200 get 200 OK.

test_concurrency_200() {
	local m out=$W/conc.out
	m=$(mark conc)
	cat >"$W/conc.py" <<'EOF'
import http.client, ssl, sys, threading, time
N, mark = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context()
barrier = threading.Barrier(N, timeout=60)
lock = threading.Lock()
ok, errors = [0], []

def one(i):
    try:
        c = http.client.HTTPSConnection("upstream.test", 443, context=ctx, timeout=60)
        c.connect()
        barrier.wait()
        c.request("GET", "/delay/300?id=%s-%d" % (mark, i))
        r = c.getresponse()
        r.read()
        c.close()
        if r.status != 200:
            raise RuntimeError("status %d" % r.status)
        with lock:
            ok[0] += 1
    except Exception as e:
        with lock:
            errors.append("%d: %r" % (i, e))
        barrier.abort()

t0 = time.time()
threads = [threading.Thread(target=one, args=(i,)) for i in range(N)]
for t in threads:
    t.start()
for t in threads:
    t.join(90)
print("ok %d errors %d in %.1f s" % (ok[0], len(errors), time.time() - t0))
for e in errors[:10]:
    print("  " + e)
sys.exit(0 if ok[0] == N else 1)
EOF
	BOUND=100 sbx_run -- "$SLT_PY" "$W/conc.py" 200 "$m" >"$out" 2>&1
	local rc=$?
	cat "$out" >&2
	[ $rc -eq 0 ] || fail "not all 200 concurrent requests succeeded"
	assert_via_sluiced "$m-" 200
}
