#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Test upstream for sluice's integration tests, demo and benchmark.

Python 3 standard library only. One ThreadingHTTPServer per listening port
(HTTP/1.1 keep-alive), HTTPS with a test certificate and/or plain HTTP, bound
dual-stack to [::]. Every request is logged as one JSON line to --log (and,
with --log-connections, every accepted TCP connection too, even one that never
completes a TLS handshake: the fake metadata server uses this so that any hit
at all is visible).

Endpoints:
  GET|HEAD /echo            JSON: method, path, headers, body length/sha256, client, tls, sni
                            (any method; ?echo_body=1 adds "body", the request body as
                            text; ?echo_header=NAME, repeatable, answers the request's
                            header NAME as response header X-Echo-NAME)
  POST|PUT /reflect         the request body verbatim (at most 32 MiB) with the request's
                            Content-Type and a Content-Length; ?chunked=1 for chunked
                            framing; ?piece=N writes (and chunks) N bytes at a time, so
                            every TLS record holds at most N bytes (default 65536)
  GET|HEAD /bytes/N         N bytes of a deterministic pattern (content-length;
                            ?chunked=1 for chunked). sha256: --pattern-sha256 N
  GET      /delay/MS        sleep MS milliseconds (max 30000), then a small JSON body
  GET|HEAD /status/N        answer with status N and a small JSON body
  POST|PUT /upload          read the body streaming (content-length or chunked),
                            answer {"bytes": n, "sha256": hex}
Expect: 100-continue is honoured (http.server sends the interim response).

Other services, for the escape-vector tests (tests/integration/escape/):
  --conn-log FILE     every accepted TCP connection as a JSON line (kind=connection) in FILE,
                      so a connection that never sends a request is still on record
  --udp PORT          a UDP sink: every datagram is logged (kind=udp), never answered
  --udp-echo PORT     a UDP echo server: every datagram goes back to its sender unchanged
                      and is logged (kind=udp_echo: client, client_port, port, bytes, and
                      data, the first 200 bytes as text, so a test finds its own datagrams)
  --dns PORT          a DNS server (UDP and TCP) answering A/AAAA from --zone (a hosts-format
                      file; other names NXDOMAIN, other types NOERROR with no answer); with
                      --dns-answer ADDR every A query gets ADDR instead. Every query is
                      logged (kind=dns: client, proto, qname, qtype, rcode)
"""
import argparse
import base64
import hashlib
import json
import os
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

BLOCK = 65536
MAX_KEEP = 32 << 20  # bodies kept in memory for /reflect and ?echo_body=1
MAX_BYTES = 1 << 34
LOG_LOCK = threading.Lock()
LOG_FILE = None
CONN_LOG = None


def pattern_block(i):
    """Block i of the /bytes pattern: its index as 8 big-endian bytes, repeated."""
    return struct.pack(">Q", i) * (BLOCK // 8)


def pattern_chunks(n):
    i = 0
    while n > 0:
        b = pattern_block(i)
        if n < BLOCK:
            b = b[:n]
        yield b
        n -= len(b)
        i += 1


def pattern_sha256(n):
    h = hashlib.sha256()
    for b in pattern_chunks(n):
        h.update(b)
    return h.hexdigest()


def log_line(obj, f=None):
    f = f or LOG_FILE
    if f is None:
        return
    obj["ts"] = round(time.time(), 6)
    line = json.dumps(obj, sort_keys=True) + "\n"
    with LOG_LOCK:
        f.write(line)
        f.flush()


def plain_addr(a):
    return a[7:] if a.startswith("::ffff:") else a


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sluice-test-upstream/1"
    timeout = 60  # idle keep-alive connections close after this

    def log_message(self, fmt, *args):  # stderr stays quiet; the JSON log is the record
        pass

    # --- body helpers -------------------------------------------------
    def read_body(self, sink):
        """Stream the request body into sink(bytes). Returns (length, chunked)."""
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            total = 0
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    raise ValueError("eof in chunk size")
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while True:  # trailers
                        t = self.rfile.readline(8192)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    return total, True
                left = size
                while left > 0:
                    b = self.rfile.read(min(left, BLOCK))
                    if not b:
                        raise ValueError("eof in chunk")
                    sink(b)
                    left -= len(b)
                total += size
                self.rfile.readline(8)  # CRLF after the chunk
        n = int(self.headers.get("Content-Length") or 0)
        left = n
        while left > 0:
            b = self.rfile.read(min(left, BLOCK))
            if not b:
                raise ValueError("eof in body")
            sink(b)
            left -= len(b)
        return n, False

    def send_json(self, status, obj, head=False, extra=()):
        body = (json.dumps(obj, sort_keys=True) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)
        return len(body)

    # --- dispatch -----------------------------------------------------
    def handle_one(self, head=False):
        t0 = time.time()
        url = urlsplit(self.path)
        q = parse_qs(url.query)
        parts = url.path.strip("/").split("/")
        h = hashlib.sha256()
        status = 500
        sent = 0
        self.body_sha256 = None
        if getattr(self, "drop_next", False):
            # fault for the stale-connection test: read this request, then
            # close without answering, as a server that timed out the idle
            # keep-alive connection at the moment the request arrived
            self.close_connection = True
            self.record(t0, 0, 0, False, 0, error="dropped")
            return
        if q.get("drop_next", ["0"])[0] == "1":
            self.drop_next = True
        if parts[0] == "ws" and self.headers.get("Upgrade", "").lower() == "websocket":
            self.websocket(t0)
            return
        keep = parts[0] == "reflect" or q.get("echo_body", ["0"])[0] == "1"
        kept = []

        def sink(b):
            h.update(b)
            if keep:
                if sum(map(len, kept)) + len(b) > MAX_KEEP:
                    raise ValueError("body too large to keep")
                kept.append(b)
        try:
            body_len, chunked_in = self.read_body(sink)
        except (ValueError, OSError) as e:
            self.close_connection = True
            self.record(t0, 400, 0, False, 0, error=str(e))
            return
        self.body_sha256 = h.hexdigest()
        try:
            if parts[0] == "echo":
                status = 200
                obj = {
                    "method": self.command,
                    "path": self.path,
                    "headers": [[k, v] for k, v in self.headers.items()],
                    "body_len": body_len,
                    "body_sha256": h.hexdigest(),
                    "client": plain_addr(self.client_address[0]),
                    "tls": self.server.tls,
                    "sni": getattr(self.connection, "sni", None),
                }
                if keep:
                    obj["body"] = b"".join(kept).decode("utf-8", "replace")
                extra = [("X-Echo-" + n, self.headers.get(n, ""))
                         for n in q.get("echo_header", [])]
                sent = self.send_json(200, obj, head, extra)
            elif parts[0] == "reflect" and self.command in ("POST", "PUT"):
                status = 200
                sent = self.reflect(b"".join(kept), q)
            elif parts[0] == "bytes" and len(parts) == 2 and parts[1].isdigit():
                n = min(int(parts[1]), MAX_BYTES)
                chunked = q.get("chunked", ["0"])[0] == "1"
                status = 200
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                else:
                    self.send_header("Content-Length", str(n))
                self.end_headers()
                if not head:
                    for b in pattern_chunks(n):
                        if chunked:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(b), b))
                        else:
                            self.wfile.write(b)
                        sent += len(b)
                    if chunked:
                        self.wfile.write(b"0\r\n\r\n")
            elif parts[0] == "delay" and len(parts) == 2 and parts[1].isdigit():
                time.sleep(min(int(parts[1]), 30000) / 1000.0)
                status = 200
                sent = self.send_json(200, {"delayed_ms": int(parts[1])}, head)
            elif parts[0] == "status" and len(parts) == 2 and parts[1].isdigit():
                status = int(parts[1])
                if status < 200 or status in (204, 304):
                    self.send_response(status)
                    self.end_headers()
                else:
                    sent = self.send_json(status, {"status": status}, head)
            elif parts[0] == "upload" and self.command in ("POST", "PUT"):
                status = 200
                sent = self.send_json(200, {"bytes": body_len, "sha256": h.hexdigest(),
                                            "chunked": chunked_in})
            else:
                status = 404
                sent = self.send_json(404, {"error": "not_found"}, head)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError) as e:
            self.close_connection = True
            self.record(t0, status, body_len, chunked_in, sent, error=str(e))
            return
        self.record(t0, status, body_len, chunked_in, sent)

    def reflect(self, body, q):
        chunked = q.get("chunked", ["0"])[0] == "1"
        piece = max(1, min(int(q.get("piece", [str(BLOCK)])[0]), BLOCK))
        self.send_response(200)
        self.send_header("Content-Type",
                         self.headers.get("Content-Type") or "application/octet-stream")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        for i in range(0, len(body), piece):
            b = body[i:i + piece]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(b), b) if chunked else b)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
        return len(body)

    def websocket(self, t0):
        # RFC 6455 handshake, then echo raw bytes until EOF: enough to prove
        # the proxy turned the connection into a two-way tunnel after 101.
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        self.record(t0, 101, 0, False, 0)
        self.close_connection = True
        total = 0
        while total < (1 << 24):
            data = self.connection.recv(65536)
            if not data:
                break
            self.connection.sendall(data)
            total += len(data)

    def record(self, t0, status, body_len, chunked_in, sent, error=None):
        obj = {
            "kind": "request",
            "method": self.command,
            "path": self.path,
            "host": self.headers.get("Host"),
            "client": plain_addr(self.client_address[0]),
            "client_port": self.client_address[1],
            "server_port": self.server.server_address[1],
            "tls": self.server.tls,
            "sni": getattr(self.connection, "sni", None),
            "headers": [[k, v] for k, v in self.headers.items()],
            "body_len": body_len,
            "body_sha256": getattr(self, "body_sha256", None),
            "body_chunked": chunked_in,
            "status": status,
            "sent": sent,
            "ms": round((time.time() - t0) * 1000, 3),
        }
        if error:
            obj["error"] = error
        log_line(obj)

    def do_GET(self):
        self.handle_one()

    def do_HEAD(self):
        self.handle_one(head=True)

    def do_POST(self):
        self.handle_one()

    def do_PUT(self):
        self.handle_one()

    def do_DELETE(self):
        self.handle_one()


class Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, addr, port, tls_ctx, log_connections):
        self.tls_ctx = tls_ctx
        self.tls = tls_ctx is not None
        self.log_connections = log_connections
        if ":" not in addr:
            self.address_family = socket.AF_INET
        super().__init__((addr, port), Handler, bind_and_activate=False)
        if addr == "::":
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        self.server_bind()
        self.server_activate()

    def server_bind(self):
        # HTTPServer.server_bind calls getfqdn(): a DNS lookup that hangs in a
        # namespace with no resolver. The name is never used here.
        socketserver.TCPServer.server_bind(self)
        self.server_name = "upstream.test"
        self.server_port = self.server_address[1]

    def finish_request(self, request, client_address):
        # Runs in the connection's own thread: the TLS handshake happens here,
        # so a slow or broken client never blocks accept().
        if self.log_connections or CONN_LOG is not None:
            conn = {"kind": "connection", "client": plain_addr(client_address[0]),
                    "client_port": client_address[1],
                    "server_port": self.server_address[1]}
            if self.log_connections:
                log_line(dict(conn))
            if CONN_LOG is not None:
                log_line(conn, CONN_LOG)
        if self.tls_ctx is not None:
            request.settimeout(30)
            try:
                request = self.tls_ctx.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as e:
                log_line({"kind": "tls_error", "client": plain_addr(client_address[0]),
                          "server_port": self.server_address[1], "error": str(e)})
                return
            request.settimeout(None)
        super().finish_request(request, client_address)

    def handle_error(self, request, client_address):
        pass  # clients going away mid-request are normal in these tests


def family_of(addr):
    return socket.AF_INET if ":" not in addr else socket.AF_INET6


def bind_sock(addr, port, kind):
    s = socket.socket(family_of(addr), kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if addr == "::":
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind((addr, port))
    return s


def udp_sink(sock):
    """Log every datagram; answer nothing (a QUIC server that never replies)."""
    while True:
        data, peer = sock.recvfrom(65535)
        log_line({"kind": "udp", "client": plain_addr(peer[0]), "client_port": peer[1],
                  "server_port": sock.getsockname()[1], "bytes": len(data)})


def udp_echo(sock):
    """Send every datagram back to its sender unchanged. Logged before the
    answer leaves, so a client holding the answer finds the line."""
    while True:
        data, peer = sock.recvfrom(65535)
        log_line({"kind": "udp_echo", "client": plain_addr(peer[0]), "client_port": peer[1],
                  "port": sock.getsockname()[1], "bytes": len(data),
                  "data": data[:200].decode("utf-8", "replace")})
        try:
            sock.sendto(data, peer)
        except OSError as e:
            log_line({"kind": "udp_echo_error", "client": plain_addr(peer[0]),
                      "client_port": peer[1], "port": sock.getsockname()[1], "error": str(e)})


def load_zone(path):
    """hosts-format file -> {name: {"A": [...], "AAAA": [...]}}"""
    zone = {}
    if not path:
        return zone
    with open(path) as f:
        for line in f:
            w = line.split("#", 1)[0].split()
            if len(w) < 2:
                continue
            t = "AAAA" if ":" in w[0] else "A"
            for n in w[1:]:
                zone.setdefault(n.lower().rstrip("."), {}).setdefault(t, []).append(w[0])
    return zone


QTYPES = {1: "A", 28: "AAAA"}


def dns_answer(query, zone, fixed):
    """One DNS response for query (bytes), or None for garbage. Returns (resp, qname, qtype, rcode)."""
    if len(query) < 12:
        return None
    qid, _flags, qd = struct.unpack(">HHH", query[:6])
    if qd != 1:
        return None
    i, labels = 12, []
    while True:
        if i >= len(query):
            return None
        n = query[i]
        i += 1
        if n == 0:
            break
        if n > 63 or i + n > len(query):
            return None
        labels.append(query[i:i + n].decode("ascii", "replace"))
        i += n
    if i + 4 > len(query):
        return None
    qtype, _qclass = struct.unpack(">HH", query[i:i + 4])
    question = query[12:i + 4]
    qname = ".".join(labels).lower()
    tname = QTYPES.get(qtype)
    if fixed:
        addrs = [fixed] if tname == "A" else []
        rcode = 0
    elif qname in zone:
        addrs = zone[qname].get(tname, []) if tname else []
        rcode = 0
    else:
        addrs, rcode = [], 3
    answers = b""
    for a in addrs:
        rdata = socket.inet_pton(socket.AF_INET if tname == "A" else socket.AF_INET6, a)
        answers += struct.pack(">HHHIH", 0xC00C, qtype, 1, 60, len(rdata)) + rdata
    head = struct.pack(">HHHHHH", qid, 0x8180 | rcode, 1, len(addrs), 0, 0)
    return head + question + answers, qname, tname or str(qtype), rcode


def dns_udp(sock, zone, fixed):
    while True:
        data, peer = sock.recvfrom(65535)
        r = dns_answer(data, zone, fixed)
        log_line({"kind": "dns", "proto": "udp", "client": plain_addr(peer[0]),
                  "qname": r[1] if r else None, "qtype": r[2] if r else None,
                  "rcode": r[3] if r else None})
        if r:
            sock.sendto(r[0], peer)


def dns_tcp_conn(conn, peer, zone, fixed):
    conn.settimeout(10)
    try:
        f = conn.makefile("rb")
        for _ in range(64):
            hdr = f.read(2)
            if len(hdr) < 2:
                break
            data = f.read(struct.unpack(">H", hdr)[0])
            r = dns_answer(data, zone, fixed)
            log_line({"kind": "dns", "proto": "tcp", "client": plain_addr(peer[0]),
                      "qname": r[1] if r else None, "qtype": r[2] if r else None,
                      "rcode": r[3] if r else None})
            if not r:
                break
            conn.sendall(struct.pack(">H", len(r[0])) + r[0])
    except OSError:
        pass
    finally:
        conn.close()


def dns_tcp(sock, zone, fixed):
    sock.listen(64)
    while True:
        conn, peer = sock.accept()
        threading.Thread(target=dns_tcp_conn, args=(conn, peer, zone, fixed),
                         daemon=True).start()


def make_tls_ctx(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])

    def on_sni(sslobj, name, _ctx):
        sslobj.sni = name  # sslobj is the server-side SSLSocket: Handler reads it back
        return None
    ctx.sni_callback = on_sni
    return ctx


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--http", type=int, action="append", default=[],
                    help="plain HTTP port (repeatable)")
    ap.add_argument("--https", type=int, action="append", default=[],
                    help="HTTPS port (repeatable; needs --cert/--key)")
    ap.add_argument("--bind", action="append", default=[],
                    help="address to listen on (repeatable; default [::] dual-stack)")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--log", help="JSON-lines log file (appended)")
    ap.add_argument("--log-connections", action="store_true",
                    help="also log every accepted TCP connection")
    ap.add_argument("--conn-log", help="log every accepted TCP connection to this file")
    ap.add_argument("--udp", type=int, action="append", default=[],
                    help="UDP sink port: log every datagram (repeatable)")
    ap.add_argument("--udp-echo", type=int, action="append", default=[],
                    help="UDP echo port: answer every datagram with itself, log it (repeatable)")
    ap.add_argument("--dns", type=int, help="DNS server port (UDP and TCP)")
    ap.add_argument("--zone", help="hosts-format file the DNS server answers from")
    ap.add_argument("--dns-answer", metavar="ADDR",
                    help="answer every A query with ADDR (a resolver that must never be asked)")
    ap.add_argument("--ready", help="file created once every port listens")
    ap.add_argument("--pattern-sha256", type=int, metavar="N",
                    help="print the sha256 of /bytes/N and exit")
    a = ap.parse_args()

    if a.pattern_sha256 is not None:
        print(pattern_sha256(a.pattern_sha256))
        return 0
    if not a.http and not a.https and not a.udp and not a.udp_echo and not a.dns:
        ap.error("nothing to serve: give --http, --https, --udp, --udp-echo and/or --dns")

    global LOG_FILE, CONN_LOG
    if a.log:
        LOG_FILE = open(a.log, "a", buffering=1)
    if a.conn_log:
        CONN_LOG = open(a.conn_log, "a", buffering=1)
    tls_ctx = make_tls_ctx(a.cert, a.key) if a.https else None
    servers = []
    for addr in a.bind or ["::"]:
        servers += [Server(addr, p, None, a.log_connections) for p in a.http]
        servers += [Server(addr, p, tls_ctx, a.log_connections) for p in a.https]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    zone = load_zone(a.zone)
    for addr in a.bind or ["::"]:
        for p in a.udp:
            threads.append(threading.Thread(target=udp_sink,
                                            args=(bind_sock(addr, p, socket.SOCK_DGRAM),),
                                            daemon=True))
        for p in a.udp_echo:
            threads.append(threading.Thread(target=udp_echo,
                                            args=(bind_sock(addr, p, socket.SOCK_DGRAM),),
                                            daemon=True))
        if a.dns:
            threads.append(threading.Thread(
                target=dns_udp, args=(bind_sock(addr, a.dns, socket.SOCK_DGRAM), zone,
                                      a.dns_answer), daemon=True))
            threads.append(threading.Thread(
                target=dns_tcp, args=(bind_sock(addr, a.dns, socket.SOCK_STREAM), zone,
                                      a.dns_answer), daemon=True))
    for t in threads:
        t.start()
    if a.ready:
        with open(a.ready, "w") as f:
            f.write("%d\n" % os.getpid())
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
