#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Regenerate the ClientHello captures in this directory.

Each client below connects to a listener on 127.0.0.1 (an ephemeral port) that
records the TLS records making up the ClientHello, writes them to NAME.bin and
closes: no handshake is ever completed and nothing leaves loopback. Server
names are test names (*.example.test). Run from anywhere:
    python3 tests/unit/data/clienthello/capture.py
"""
import os
import socket
import subprocess
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))


def read_hello(conn):
    """Read whole records until the handshake message they carry is complete."""
    data = b""
    hs = b""
    conn.settimeout(5)
    while True:
        while len(data) < 5 or len(data) < 5 + int.from_bytes(data[3:5], "big"):
            chunk = conn.recv(65536)
            if not chunk:
                raise RuntimeError("EOF before a complete ClientHello")
            data += chunk
            # records already consumed into hs are kept in `out`
        rlen = int.from_bytes(data[3:5], "big")
        if data[0] != 0x16:
            raise RuntimeError("not a handshake record")
        rec, data = data[:5 + rlen], data[5 + rlen:]
        hs += rec[5:]
        read_hello.out += rec
        if len(hs) >= 4 and len(hs) >= 4 + int.from_bytes(hs[1:4], "big"):
            return read_hello.out


def capture(name, argv_fn, env=None):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(10)
    port = srv.getsockname()[1]
    proc = subprocess.Popen(argv_fn(port), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    try:
        conn, _ = srv.accept()
        read_hello.out = b""
        rec = read_hello(conn)
        conn.close()
    finally:
        srv.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    with open(os.path.join(HERE, name + ".bin"), "wb") as f:
        f.write(rec)
    print(f"{name}: {len(rec)} bytes")


PY_CLIENT = r"""
import socket, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(["http/1.1"])
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
try:
    ctx.wrap_socket(s, server_hostname="py.example.test")
except Exception:
    pass
"""

NODE_CLIENT = r"""
const https = require('https');
const req = https.get({host: '127.0.0.1', port: +process.argv[1], servername: 'node.example.test',
                       path: '/', rejectUnauthorized: false, timeout: 5000});
req.on('error', () => {});
req.on('timeout', () => req.destroy());
"""


def s_client(*extra):
    return lambda p: ["openssl", "s_client", "-connect", f"127.0.0.1:{p}", *extra]


def curl(*extra):
    return lambda p: ["curl", "-sk", "--max-time", "5", *extra, "--resolve",
                      f"api.example.test:{p}:127.0.0.1", f"https://api.example.test:{p}/"]


CLIENTS = [
    ("curl_h2", curl("--http2")),
    ("curl_h1", curl("--http1.1")),
    ("python3_ssl", lambda p: [sys.executable, "-c", PY_CLIENT, str(p)]),
    ("node20_https", lambda p: ["node", "-e", NODE_CLIENT, str(p)]),
    ("openssl_tls12", s_client("-tls1_2", "-servername", "tls12.example.test")),
    ("openssl_default", s_client("-servername", "openssl.example.test", "-alpn", "h2,http/1.1")),
    ("openssl_nosni", s_client("-noservername")),
    ("openssl_mixedcase", s_client("-servername", "MiXed.Example.TEST.")),
]

if __name__ == "__main__":
    want = set(sys.argv[1:])
    for name, fn in CLIENTS:
        if not want or name in want:
            capture(name, fn)
    # Derived: curl_h2's ClientHello re-fragmented into two handshake records
    # (split 100 bytes into the handshake message), as a client with a small
    # record size would send it.
    if not want or "curl_h2_split2" in want:
        with open(os.path.join(HERE, "curl_h2.bin"), "rb") as f:
            rec = f.read()
        hs = rec[5:]
        out = b""
        for part in (hs[:100], hs[100:]):
            out += rec[:3] + len(part).to_bytes(2, "big") + part
        with open(os.path.join(HERE, "curl_h2_split2.bin"), "wb") as f:
            f.write(out)
        print(f"curl_h2_split2: {len(out)} bytes")
