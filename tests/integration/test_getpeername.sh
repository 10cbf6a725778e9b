# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# A redirected connect must look untouched from inside the sandbox:
# getpeername() returns the address the program asked for, for IPv4, IPv6
# and IPv4-mapped IPv6 on an AF_INET6 socket.

test_getpeername() {
	local out=$W/peer.out
	cat >"$W/peer.py" <<'EOF'
import socket, sys
v4, v6 = sys.argv[1], sys.argv[2]
cases = [
    ("v4", socket.AF_INET, (v4, 443)),
    ("v6", socket.AF_INET6, (v6, 443, 0, 0)),
    ("v4mapped", socket.AF_INET6, ("::ffff:" + v4, 443, 0, 0)),
]
for name, fam, addr in cases:
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(10)
    try:
        s.connect(addr)
        p = s.getpeername()
        print(name, p[0], p[1])
    except OSError as e:
        print(name, "error", e)
    finally:
        s.close()
EOF
	sbx_run -- "$SLT_PY" "$W/peer.py" "$SLT_UP4" "$SLT_UP6" >"$out" 2>&1 ||
		{ cat "$out" >&2; fail "peer.py failed"; }
	cat "$out" >&2
	assert_grep "^v4 $SLT_UP4 443\$" "$out" "getpeername, IPv4"
	assert_grep "^v6 $SLT_UP6 443\$" "$out" "getpeername, IPv6"
	assert_grep "^v4mapped ::ffff:$SLT_UP4 443\$" "$out" "getpeername, v4-mapped IPv6"
}
