#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""sluice-control-plane.py: the reference control plane of docs/control-plane.md.

A real HTTP/1.1 server (python3 standard library only) that answers sluiced's
POST /v1/sync from a JSON state file, plus an admin listener to change that
state at run time and to inject faults (down, hang, slow, 500, malformed,
oversized, wrong_hash). Used by the unit tests, the integration tests and the
demo; small enough to read as a specification by example.

  sluice-control-plane.py --listen 127.0.0.1:8470 --token-file tok --state state.json
      [--admin-listen 127.0.0.1:8471] [--admin-token-file tok2] [--ready-file F]
      [--tls-cert cert.pem --tls-key key.pem [--client-ca clients-ca.pem]]

Port 0 picks a free port; --ready-file receives {"sync": "HOST:PORT",
"admin": "HOST:PORT"} once both listeners accept (written atomically).

TLS: with --tls-cert/--tls-key the sync listener speaks HTTPS (TLS 1.2+; the
admin listener stays plain HTTP). With --client-ca as well it requires a
client certificate signed by that CA (mutual TLS): a node without one, or
with one from another CA, fails the handshake and never reaches /v1/sync
(one line on stderr says why). Every fault works the same over TLS.

State file: {"sandboxes": {"<id>": {"principal": "...", "status":
"active|disabled|revoked", "policy": "<YAML>", "secrets": {"NAME": "value"}}}}

Admin API (Authorization: Bearer <admin token>, JSON bodies):
  GET    /admin/state                 the whole state
  PUT    /admin/sandboxes/<id>        set one sandbox -> {"config_hash": ...}
  DELETE /admin/sandboxes/<id>
  GET    /admin/fault                 the current fault
  POST   /admin/fault                 {"fault": "none|down|hang|slow|500|malformed|
                                        oversized|wrong_hash", "ms": N,
                                        "content_length": bool}
  GET    /admin/log                   the last requests seen on /v1/sync (no secrets)
  DELETE /admin/log
  GET    /admin/healthz

Bounded everywhere: at most --max-conns connections per listener (more are
closed at once), 10 s TLS handshakes, 30 s socket timeouts, 1 MiB request
bodies, 1000 log entries, a hanging answer ends when the fault changes, the
peer goes away, or after 600 s.
"""

import argparse
import hashlib
import hmac
import json
import os
import re
import select
import signal
import socket
import ssl
import sys
import tempfile
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ThreadingMixIn

BODY_MAX = 1024 * 1024          # request bodies (sync and admin)
POLICY_MAX = 1024 * 1024        # POL_FILE_MAX
SECRETS_MAX = 64                # POL_SECRETS_MAX
SECRET_VALUE_MAX = 65536        # POL_SECRET_VALUE_MAX
PRINCIPAL_MAX = 256             # CPS_PRINCIPAL_MAX
ID_MAX = 255                    # CPS_ID_MAX
SANDBOXES_MAX = 4096            # CPS_SANDBOXES_MAX
LOG_MAX = 1000
HANG_MAX_S = 600
HANDSHAKE_TIMEOUT_S = 10
OVERSIZED = 5 * 1024 * 1024
FAULTS = ("none", "down", "hang", "slow", "500", "malformed", "oversized", "wrong_hash")
STATUSES = ("active", "disabled", "revoked")
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def config_hash(sid, entry):
    """The canonical hash of docs/control-plane.md."""
    def field(b):
        return str(len(b)).encode() + b":" + b + b"\n"
    secrets = entry["secrets"]
    h = hashlib.sha256(b"sluice-config-v1\n")
    for s in (sid, entry["status"], entry["principal"], entry["policy"], str(len(secrets))):
        h.update(field(s.encode()))
    for name in sorted(secrets, key=lambda n: n.encode()):
        h.update(field(name.encode()))
        h.update(field(secrets[name].encode()))
    return "sha256:" + h.hexdigest()


def printable(s, space_ok):
    return all(ord(ch) >= 0x20 and ord(ch) != 0x7f and (space_ok or ch != " ") for ch in s)


def check_sandbox(sid, e):
    """Raise ValueError when a state entry could not be sent as-is."""
    if not isinstance(sid, str) or not 0 < len(sid.encode()) <= ID_MAX or "\0" in sid:
        raise ValueError("sandbox id must be 1 to %d bytes" % ID_MAX)
    if not isinstance(e, dict):
        raise ValueError("a sandbox is an object")
    extra = set(e) - {"principal", "status", "policy", "secrets"}
    if extra:
        raise ValueError("unknown key %r" % sorted(extra)[0])
    p = e.get("principal")
    if not isinstance(p, str) or not 0 < len(p.encode()) <= PRINCIPAL_MAX or not printable(p, True):
        raise ValueError("principal must be 1 to %d printable bytes" % PRINCIPAL_MAX)
    if e.get("status") not in STATUSES:
        raise ValueError("status must be one of %s" % ", ".join(STATUSES))
    pol = e.get("policy")
    if not isinstance(pol, str) or len(pol.encode()) > POLICY_MAX or "\0" in pol:
        raise ValueError("policy must be a string of at most %d bytes" % POLICY_MAX)
    sec = e.get("secrets", {})
    if not isinstance(sec, dict) or len(sec) > SECRETS_MAX:
        raise ValueError("secrets must be an object of at most %d" % SECRETS_MAX)
    for k, v in sec.items():
        if not NAME_RE.match(k):
            raise ValueError("invalid secret name %r" % k)
        if not isinstance(v, str) or len(v.encode()) > SECRET_VALUE_MAX or "\0" in v:
            raise ValueError("secret %r must be a string of at most %d bytes" %
                             (k, SECRET_VALUE_MAX))
    # lone surrogates cannot be sent as UTF-8
    json.dumps(e, ensure_ascii=False).encode()
    return {"principal": p, "status": e["status"], "policy": pol, "secrets": dict(sec)}


class Plane:
    """State, fault and request log, shared by both listeners."""

    def __init__(self, args):
        self.lock = threading.Condition()
        self.state_file = args.state
        self.sandboxes = {}
        self.fault = {"fault": "none", "ms": 0, "content_length": False}
        self.log = deque(maxlen=LOG_MAX)
        self.seq = 0
        self.stopping = False
        self.token = args.token.encode()
        self.admin_token = args.admin_token.encode()
        if os.path.exists(self.state_file):
            with open(self.state_file, encoding="utf-8") as f:
                raw = json.load(f)
            if not isinstance(raw, dict) or not isinstance(raw.get("sandboxes", {}), dict):
                raise ValueError("%s: expected {\"sandboxes\": {...}}" % self.state_file)
            for sid, e in raw.get("sandboxes", {}).items():
                self.sandboxes[sid] = check_sandbox(sid, e)

    def save(self):
        """Write the state file atomically (temp file + rename), 0600. Under lock."""
        d = os.path.dirname(os.path.abspath(self.state_file))
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".state.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"sandboxes": self.sandboxes}, f, indent=1, sort_keys=True)
            os.replace(tmp, self.state_file)
        except BaseException:
            os.unlink(tmp)
            raise


class BoundedServer(ThreadingMixIn, HTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, addr, handler, plane, max_conns, tls=None):
        self.plane = plane
        self.tls = tls  # ssl.SSLContext: each connection's handshake runs on its own thread
        self.slots = threading.BoundedSemaphore(max_conns)
        self.conns = set()
        self.conns_lock = threading.Lock()
        family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        self.address_family = family
        super().__init__(addr, handler)

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)  # over the limit: closed at once
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        with self.conns_lock:
            self.conns.add(request)
        try:
            if self.tls:
                request = self.tls_handshake(request, client_address)
                if request is None:
                    return
            super().process_request_thread(request, client_address)
        finally:
            with self.conns_lock:
                self.conns.discard(request)
            self.slots.release()

    def tls_handshake(self, raw, client_address):
        """The TLS socket after a bounded handshake (client certificate
        checked when required), or None after closing the connection."""
        tls = self.tls.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        with self.conns_lock:  # raw is detached now: drop_all must see tls
            self.conns.discard(raw)
            self.conns.add(tls)
        try:
            tls.settimeout(HANDSHAKE_TIMEOUT_S)
            tls.do_handshake()
            return tls
        except OSError as x:  # ssl.SSLError included
            print("sluice-control-plane: TLS handshake with %s failed: %s" %
                  (client_address[0], x), file=sys.stderr, flush=True)
            with self.conns_lock:
                self.conns.discard(tls)
            self.linger_close(socket.socket(fileno=tls.detach()))
            return None

    @staticmethod
    def linger_close(sock):
        """Close after a failed handshake without losing our alert: under TLS
        1.3 the client has already sent its request, and closing with those
        bytes unread would send an RST that can overtake the alert. Half
        close, drain for at most 1 s / 1 MiB, then close."""
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(1)
            end = time.monotonic() + 1
            left = BODY_MAX
            while left > 0 and time.monotonic() < end:
                b = sock.recv(65536)
                if not b:
                    break
                left -= len(b)
        except OSError:
            pass
        finally:
            sock.close()

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError, ssl.SSLError)):
            super().handle_error(request, client_address)  # a peer gone is no news

    def drop_all(self):
        with self.conns_lock:
            for s in list(self.conns):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sluice-control-plane/1"
    timeout = 30

    def log_message(self, fmt, *args):  # quiet: GET /admin/log is the record
        pass

    def parse_request(self):
        self.body_read = False  # per request: the handler lives as long as the connection
        return super().parse_request()

    def send_json(self, code, obj, extra=b""):
        if not self.body_read and self.headers.get("Content-Length", "0") != "0":
            self.close_connection = True  # unread body bytes would be taken as a request
        body = json.dumps(obj, ensure_ascii=False).encode() + extra
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def authorised(self, token):
        got = self.headers.get("Authorization", "")
        if not got.startswith("Bearer ") or not hmac.compare_digest(got[7:].encode(), token):
            self.send_json(401, {"error": "unauthorized"})
            return False
        return True

    def read_body(self):
        """The request body (bytes), or None after answering with an error."""
        if self.headers.get("Transfer-Encoding"):
            self.send_json(411, {"error": "content_length_required"})
            self.close_connection = True
            return None
        try:
            n = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            n = -1
        if n < 0 or n > BODY_MAX:
            self.send_json(413, {"error": "body_too_large", "limit": BODY_MAX})
            self.close_connection = True
            return None
        self.body_read = True
        return self.rfile.read(n) if n else b""

    def read_json(self):
        body = self.read_body()
        if body is None:
            return None
        try:
            return json.loads(body.decode("utf-8")) if body else None
        except (UnicodeDecodeError, ValueError):
            self.send_json(400, {"error": "invalid_json"})
            return None


class SyncHandler(Handler):
    def do_GET(self):
        self.send_json(405 if self.path == "/v1/sync" else 404, {"error": "not_found"})

    def do_POST(self):
        plane = self.server.plane
        if self.path != "/v1/sync":
            self.send_json(404, {"error": "not_found"})
            return
        if not self.authorised(plane.token):
            return
        req = self.read_json()
        if req is None:
            return
        err = self.check_request(req)
        if err:
            self.send_json(400, {"error": "bad_request", "detail": err})
            return
        with plane.lock:
            fault = dict(plane.fault)
            plane.seq += 1
            entry = {"seq": plane.seq, "time": time.time(), "node": req["node"],
                     "sandboxes": req["sandboxes"], "fault": fault["fault"], "answered": []}
            plane.log.append(entry)
            answer = []
            for s in req["sandboxes"]:
                cur = plane.sandboxes.get(s["id"])
                if cur is None:
                    continue  # not ours: no entry (the node keeps what it has)
                h = config_hash(s["id"], cur)
                if s["applied_hash"] == h:
                    answer.append({"id": s["id"], "status": "unchanged", "config_hash": h})
                else:
                    answer.append(dict(cur, id=s["id"], config_hash=h))
            entry["answered"] = [{"id": a["id"], "status": a["status"],
                                  "config_hash": a["config_hash"]} for a in answer]
        self.answer(fault, answer, plane)

    @staticmethod
    def check_request(req):
        if not isinstance(req, dict) or set(req) != {"node", "sandboxes"}:
            return "body must be {\"node\": ..., \"sandboxes\": [...]}"
        if not isinstance(req["node"], str) or not req["node"]:
            return "node must be a non-empty string"
        sbs = req["sandboxes"]
        if not isinstance(sbs, list) or len(sbs) > SANDBOXES_MAX:
            return "sandboxes must be an array of at most %d" % SANDBOXES_MAX
        seen = set()
        for s in sbs:
            if not isinstance(s, dict) or set(s) != {"id", "applied_hash"}:
                return "each sandbox is {\"id\": ..., \"applied_hash\": ...}"
            if not isinstance(s["id"], str) or not s["id"] or s["id"] in seen:
                return "sandbox ids must be non-empty, unique strings"
            h = s["applied_hash"]
            if h is not None and (not isinstance(h, str) or not HASH_RE.match(h)):
                return "applied_hash must be null or sha256:<64 hex>"
            seen.add(s["id"])
        return None

    def answer(self, fault, answer, plane):
        f = fault["fault"]
        if f == "hang":
            self.hang(plane)
            return
        if f == "slow":
            with plane.lock:
                plane.lock.wait_for(lambda: plane.stopping, timeout=min(fault["ms"], 600000) / 1000)
        if f == "500":
            self.send_json(500, {"error": "injected_fault"})
        elif f == "malformed":
            body = b'{"sandboxes": [{"id": "truncated'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif f == "oversized":
            self.oversized(fault.get("content_length", False))
        else:
            if f == "wrong_hash":
                for a in answer:
                    if a["status"] != "unchanged":
                        last = a["config_hash"][-1]
                        a["config_hash"] = a["config_hash"][:-1] + ("0" if last != "0" else "1")
            self.send_json(200, {"sandboxes": answer})

    def hang(self, plane):
        """Read the request, never answer; return when the fault changes, the
        peer closes, the server stops, or after HANG_MAX_S."""
        end = time.monotonic() + HANG_MAX_S
        while time.monotonic() < end:
            with plane.lock:
                if plane.stopping or plane.fault["fault"] != "hang":
                    break
            r, _, _ = select.select([self.connection], [], [], 0.05)
            if r and self.peer_gone():
                break  # the peer gave up
        self.close_connection = True

    def peer_gone(self):
        """The connection is readable: has the peer closed it? TLS records
        cannot be peeked, so over TLS a byte is read (the connection is
        closed after a hang anyway)."""
        conn = self.connection
        try:
            if isinstance(conn, ssl.SSLSocket):
                conn.settimeout(0)
                return not conn.recv(1)
            return not conn.recv(1, socket.MSG_PEEK)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False  # only part of a record so far
        except OSError:
            return True

    def oversized(self, with_length):
        pad = OVERSIZED
        head = b'{"sandboxes": [], "pad": "'
        tail = b'"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if with_length:
            self.send_header("Content-Length", str(len(head) + pad + len(tail)))
        else:
            self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            self.wfile.write(head)
            chunk = b"x" * 65536
            for _ in range(pad // len(chunk)):
                self.wfile.write(chunk)
            self.wfile.write(tail)
        except OSError:
            pass  # the client stopped reading at its limit


class AdminHandler(Handler):
    def route(self, method):
        plane = self.server.plane
        if self.path == "/admin/healthz" and method == "GET":
            self.send_json(200, {"ok": True})
            return
        if not self.authorised(plane.admin_token):
            return
        m = re.match(r"^/admin/sandboxes/([^/?#]+)$", self.path)
        if self.path == "/admin/state" and method == "GET":
            with plane.lock:
                self.send_json(200, {"sandboxes": plane.sandboxes,
                                     "hashes": {k: config_hash(k, v)
                                                for k, v in plane.sandboxes.items()}})
        elif m and method == "PUT":
            body = self.read_json()
            if body is None:
                return
            try:
                e = check_sandbox(m.group(1), body)
            except ValueError as x:
                self.send_json(400, {"error": "invalid_sandbox", "detail": str(x)})
                return
            with plane.lock:
                plane.sandboxes[m.group(1)] = e
                plane.save()
                h = config_hash(m.group(1), e)
            self.send_json(200, {"id": m.group(1), "config_hash": h})
        elif m and method == "DELETE":
            with plane.lock:
                found = plane.sandboxes.pop(m.group(1), None) is not None
                if found:
                    plane.save()
            self.send_json(200 if found else 404, {"deleted": found})
        elif self.path == "/admin/fault" and method == "GET":
            with plane.lock:
                self.send_json(200, plane.fault)
        elif self.path == "/admin/fault" and method == "POST":
            body = self.read_json()
            if body is None:
                return
            f = body.get("fault") if isinstance(body, dict) else None
            ms = body.get("ms", 0) if isinstance(body, dict) else 0
            if f not in FAULTS or not isinstance(ms, int) or not 0 <= ms <= 600000:
                self.send_json(400, {"error": "invalid_fault", "faults": list(FAULTS)})
                return
            self.server.controller.set_fault({"fault": f, "ms": ms,
                                              "content_length": bool(body.get("content_length"))})
            self.send_json(200, {"fault": f, "ms": ms})
        elif self.path == "/admin/log" and method == "GET":
            with plane.lock:
                self.send_json(200, {"requests": list(plane.log)})
        elif self.path == "/admin/log" and method == "DELETE":
            with plane.lock:
                plane.log.clear()
            self.send_json(200, {"cleared": True})
        else:
            self.send_json(404, {"error": "not_found"})

    def do_GET(self):
        self.route("GET")

    def do_PUT(self):
        self.route("PUT")

    def do_POST(self):
        self.route("POST")

    def do_DELETE(self):
        self.route("DELETE")


def parse_addr(s):
    host, _, port = s.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError("expected HOST:PORT, got %r" % s)
    return host, int(port)


class Controller:
    """Owns the sync listener, which the "down" fault closes and reopens."""

    def __init__(self, plane, sync_addr, max_conns, tls=None):
        self.plane = plane
        self.addr = sync_addr
        self.max_conns = max_conns
        self.tls = tls
        self.sync = None
        self.mu = threading.Lock()

    def start_sync(self):
        srv = BoundedServer(self.addr, SyncHandler, self.plane, self.max_conns, self.tls)
        self.addr = srv.server_address[:2]  # keep the port picked for port 0
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        self.sync = srv

    def stop_sync(self):
        srv, self.sync = self.sync, None
        if srv:
            srv.shutdown()
            srv.server_close()  # connects are now refused
            srv.drop_all()

    def set_fault(self, fault):
        with self.mu:
            with self.plane.lock:
                self.plane.fault = fault
                self.plane.lock.notify_all()
            if fault["fault"] == "down" and self.sync:
                self.stop_sync()
            elif fault["fault"] != "down" and not self.sync:
                for _ in range(100):  # the old socket may linger briefly
                    try:
                        self.start_sync()
                        break
                    except OSError:
                        time.sleep(0.05)


def read_token(value, path, what):
    if path:
        with open(path, encoding="utf-8") as f:
            value = f.read().strip()
    if not value or not printable(value, False):
        sys.exit("sluice-control-plane: %s must be non-empty printable ASCII without spaces" % what)
    return value


def tls_context(args):
    """The sync listener's server context, or None for plain HTTP."""
    if not args.tls_cert and not args.tls_key:
        if args.client_ca:
            sys.exit("sluice-control-plane: --client-ca needs --tls-cert and --tls-key")
        return None
    if not args.tls_cert or not args.tls_key:
        sys.exit("sluice-control-plane: --tls-cert and --tls-key go together")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
    except (OSError, ValueError) as x:
        sys.exit("sluice-control-plane: --tls-cert %s / --tls-key %s: %s" %
                 (args.tls_cert, args.tls_key, x))
    if args.client_ca:
        try:
            ctx.load_verify_locations(cafile=args.client_ca)
        except (OSError, ValueError) as x:
            sys.exit("sluice-control-plane: --client-ca %s: %s" % (args.client_ca, x))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--listen", type=parse_addr, required=True, help="sync HOST:PORT")
    ap.add_argument("--admin-listen", type=parse_addr, default=("127.0.0.1", 0))
    ap.add_argument("--token", default=os.environ.get("SLUICE_CONTROL_PLANE_TOKEN"))
    ap.add_argument("--token-file")
    ap.add_argument("--admin-token")
    ap.add_argument("--admin-token-file")
    ap.add_argument("--state", required=True, help="JSON state file (created on change)")
    ap.add_argument("--ready-file", help="write the bound addresses here when ready")
    ap.add_argument("--max-conns", type=int, default=64, help="per listener")
    ap.add_argument("--tls-cert", metavar="FILE",
                    help="serve the sync listener over TLS with this certificate (PEM, "
                    "chain allowed); the admin listener stays plain HTTP")
    ap.add_argument("--tls-key", metavar="FILE", help="the private key of --tls-cert (PEM)")
    ap.add_argument("--client-ca", metavar="FILE",
                    help="require a client certificate signed by this CA (PEM) on the "
                    "sync listener (mutual TLS; needs --tls-cert)")
    args = ap.parse_args()
    args.token = read_token(args.token, args.token_file, "--token")
    if args.admin_token or args.admin_token_file:
        args.admin_token = read_token(args.admin_token, args.admin_token_file, "--admin-token")
    else:
        args.admin_token = args.token

    tls = tls_context(args)
    plane = Plane(args)
    ctl = Controller(plane, args.listen, args.max_conns, tls)
    ctl.start_sync()
    admin = BoundedServer(args.admin_listen, AdminHandler, plane, args.max_conns)
    admin.controller = ctl
    threading.Thread(target=admin.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()

    def fmt(a):
        return ("[%s]:%d" if ":" in a[0] else "%s:%d") % (a[0], a[1])
    ready = {"sync": fmt(ctl.addr), "admin": fmt(admin.server_address)}
    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(ready, f)
        os.replace(tmp, args.ready_file)
    print("sluice-control-plane: sync %s%s admin %s" %
          (ready["sync"], "" if not tls else " (TLS, client certificate required)"
           if args.client_ca else " (TLS)", ready["admin"]), flush=True)

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    while not done.wait(1):
        pass
    with plane.lock:
        plane.stopping = True
        plane.lock.notify_all()
    ctl.stop_sync()
    admin.shutdown()
    admin.server_close()


if __name__ == "__main__":
    main()
