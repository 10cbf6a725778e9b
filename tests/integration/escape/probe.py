#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Socket-level probes for the escape-vector tests (python3 stdlib only).

Every subcommand prints one result line and exits 0 unless its arguments are
wrong; a refused syscall is a result, printed as its errno name (EACCES,
EPERM, ENETUNREACH, ...), never an exception. Every socket has a timeout.

  connect ADDR PORT                  TCP connect(); "connected" or the errno
  http ADDR PORT HOST PATH [--tfo|--tfo-connect]
                                     one plain HTTP/1.1 GET over a fresh TCP socket
                                     (--tfo: the request rides in sendto(MSG_FASTOPEN),
                                     no connect() at all; --tfo-connect: TCP_FASTOPEN_CONNECT);
                                     prints "status N" and the body, or the errno
  raw-http ADDR PORT FILE            connect, send FILE's bytes verbatim, print the answer
  tunnel ADDR PORT TARGET FILE       send "CONNECT TARGET", print "connect N" (its status),
                                     then send FILE's bytes in the tunnel and print
                                     "inner N" and the body (or "inner eof"/"inner garbage")
  udp ADDR PORT [--connect]          one datagram (sendto, or connect()+send); "sent" or errno
  udpecho ADDR PORT [--connect] [--payload TEXT] [--local] [--second ADDR:PORT] [--wait S]
                                     one datagram (sendto, or connect()+send; TEXT or a unique
                                     payload), then wait up to S (3) s for the answer; prints
                                     "reply from IP PORT payload-ok|payload-bad" (the source
                                     recvfrom() shows; --local appends " local N", the socket's
                                     own port), "timeout", or the errno. --second: then, from
                                     the same socket, the same to ADDR:PORT ([v6]:port or
                                     v6:port), payload TEXT-second; its outcome as a 2nd line
  socket FAMILY TYPE [PROTO]         socket(); "ok" or the errno (names: inet inet6 packet;
                                     stream dgram raw; icmp icmpv6 tcp udp sctp udplite mptcp
                                     or a number)
  bind ADDR PORT tcp|udp             bind(); "bound" or the errno
  dns SERVER NAME [--tcp] [--type A|AAAA] [--port N (53)]
                                     one query; prints "rcode N from ADDR answers a,b"
  scm-send UNIX                      outside helper: listen on the unix socket UNIX, make one
                                     TCP socket (in this process's netns and cgroup), pass it
                                     to the first peer with SCM_RIGHTS, exit
  scm-http UNIX ADDR PORT HOST PATH  inside: receive a socket from UNIX, connect it to
                                     ADDR:PORT, GET PATH; prints "local_port N" and the result
  loop ADDR PORT HOST PREFIX N SECONDS
                                     N GETs of PATH PREFIX-i spread over SECONDS, each on a new
                                     connection with a 2 s bound; one line per request:
                                     "i ok CLIENT" | "i connect ERRNO" | "i failed WHAT"
"""
import errno
import os
import socket
import struct
import sys
import time

TIMEOUT = 5.0


def ename(e):
    return errno.errorcode.get(e.errno, str(e.errno)) if e.errno else type(e).__name__


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def read_response(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            break
        buf += d
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if not lines or not lines[0].startswith(b"HTTP/"):
        return None, buf
    status = int(lines[0].split()[1])
    clen = None
    for h in lines[1:]:
        k, _, v = h.partition(b":")
        if k.strip().lower() == b"content-length":
            clen = int(v)
    while clen is not None and len(body) < clen:
        d = s.recv(65536)
        if not d:
            break
        body += d
    return status, body


def request(host, path):
    return ("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n"
            "User-Agent: sluice-escape-probe\r\n\r\n" % (path, host)).encode()


def cmd_connect(addr, port):
    s = socket.socket(family(addr), socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    try:
        s.connect((addr, int(port)))
        print("connected")
    except OSError as e:
        print(ename(e))


def blocking_socket(fam, typ):
    """A blocking socket bounded by SO_SNDTIMEO/SO_RCVTIMEO (Python's settimeout
    would make it non-blocking, and sendto(MSG_FASTOPEN) then only sends the SYN)."""
    s = socket.socket(fam, typ)
    tv = struct.pack("ll", int(TIMEOUT), 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    return s


def cmd_http(addr, port, host, path, *flags):
    s = blocking_socket(family(addr), socket.SOCK_STREAM)
    req = request(host, path)
    try:
        if "--tfo" in flags:
            # TCP Fast Open: the connect is implicit in sendto().
            n = s.sendto(req, socket.MSG_FASTOPEN, (addr, int(port)))
            if n < len(req):
                s.sendall(req[n:])
        elif "--tfo-connect" in flags:
            # TCP_FASTOPEN_CONNECT: connect() returns at once, the SYN leaves
            # with the first write.
            s.setsockopt(socket.IPPROTO_TCP, 30, 1)  # TCP_FASTOPEN_CONNECT
            s.connect((addr, int(port)))
            s.sendall(req)
        else:
            s.connect((addr, int(port)))
            s.sendall(req)
    except OSError as e:
        print(ename(e))
        return
    try:
        status, body = read_response(s)
    except OSError as e:
        print("recv " + ename(e))
        return
    print("status %s" % status)
    sys.stdout.write(body.decode("utf-8", "replace") + "\n")


def cmd_raw_http(addr, port, path):
    with open(path, "rb") as f:
        data = f.read()
    s = socket.socket(family(addr), socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    try:
        s.connect((addr, int(port)))
        s.sendall(data)
        status, body = read_response(s)
    except OSError as e:
        print(ename(e))
        return
    print("status %s" % status)
    sys.stdout.write(body.decode("utf-8", "replace") + "\n")


def read_head(s):
    buf = b""
    while b"\r\n\r\n" not in buf and len(buf) < 65536:
        d = s.recv(1)  # byte by byte: nothing after the head may be consumed
        if not d:
            break
        buf += d
    return buf


def cmd_tunnel(addr, port, target, path):
    with open(path, "rb") as f:
        data = f.read()
    s = socket.socket(family(addr), socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    try:
        s.connect((addr, int(port)))
        s.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target, target)).encode())
        head = read_head(s)
    except OSError as e:
        print(ename(e))
        return
    if not head.startswith(b"HTTP/"):
        print("connect eof" if not head else "connect garbage")
        return
    status = int(head.split()[1])
    print("connect %d" % status)
    if status != 200:
        return
    try:
        s.sendall(data)
        status, body = read_response(s)
    except OSError as e:
        print("inner " + ename(e))
        return
    if status is None:
        print("inner eof" if not body else "inner garbage")
        return
    print("inner %d" % status)
    sys.stdout.write(body.decode("utf-8", "replace") + "\n")


def cmd_udp(addr, port, *flags):
    s = socket.socket(family(addr), socket.SOCK_DGRAM)
    s.settimeout(TIMEOUT)
    try:
        if "--connect" in flags:
            s.connect((addr, int(port)))
            s.send(b"\xc0sluice-escape-probe")
        else:
            s.sendto(b"\xc0sluice-escape-probe", (addr, int(port)))
        print("sent")
    except OSError as e:
        print(ename(e))


def split_addr_port(s):
    """"a.b.c.d:p", "[v6]:p" or "v6:p" -> (addr, port)"""
    addr, _, port = s.rpartition(":")
    return addr.strip("[]"), int(port)


def udp_exchange(s, payload, dest, connected, local):
    """Send payload (to dest unless connected), wait for the answer: one result line."""
    try:
        if connected:
            s.send(payload)
        else:
            s.sendto(payload, dest)
    except OSError as e:
        return ename(e)
    try:
        data, peer = s.recvfrom(65535)
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return ename(e)
    r = "reply from %s %d %s" % (peer[0], peer[1],
                                 "payload-ok" if data == payload else "payload-bad")
    if local:
        r += " local %d" % s.getsockname()[1]
    return r


def cmd_udpecho(addr, port, *flags):
    flags = list(flags)
    text = None
    second = None
    if "--payload" in flags:
        text = flags[flags.index("--payload") + 1]
    if "--second" in flags:
        second = split_addr_port(flags[flags.index("--second") + 1])
    if text is None:
        text = "sluice-udp-probe-%d-%d" % (os.getpid(), time.monotonic_ns())
    payload = text.encode()
    s = socket.socket(family(addr), socket.SOCK_DGRAM)
    s.settimeout(float(flags[flags.index("--wait") + 1]) if "--wait" in flags else 3.0)
    connected = "--connect" in flags
    if connected:
        try:
            s.connect((addr, int(port)))
        except OSError as e:
            print(ename(e))
            return
    print(udp_exchange(s, payload, (addr, int(port)), connected, "--local" in flags),
          flush=True)
    if second is not None:
        print(udp_exchange(s, (text + "-second").encode(), second, False, "--local" in flags))


FAMILIES = {"inet": socket.AF_INET, "inet6": socket.AF_INET6, "packet": socket.AF_PACKET}
TYPES = {"stream": socket.SOCK_STREAM, "dgram": socket.SOCK_DGRAM, "raw": socket.SOCK_RAW}
PROTOS = {"icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58, "sctp": 132, "udplite": 136,
          "mptcp": 262, "all": 0x0300}  # all: htons(ETH_P_ALL) for AF_PACKET


def cmd_socket(fam, typ, proto="0"):
    p = PROTOS.get(proto)
    if p is None:
        p = int(proto, 0)
    try:
        socket.socket(FAMILIES[fam], TYPES[typ], p).close()
        print("ok")
    except OSError as e:
        print(ename(e))


def cmd_bind(addr, port, kind):
    s = socket.socket(family(addr), socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM)
    try:
        s.bind((addr, int(port)))
        print("bound")
    except OSError as e:
        print(ename(e))


def dns_query(name, qtype):
    q = struct.pack(">HHHHHH", 0x2a2a, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + struct.pack(">HH", qtype, 1)


def dns_parse(r):
    rcode = r[3] & 0x0F
    an = struct.unpack(">H", r[6:8])[0]
    i = 12
    while r[i] != 0:  # the question's name (no compression there)
        i += 1 + r[i]
    i += 5
    out = []
    for _ in range(an):
        if r[i] & 0xC0 == 0xC0:
            i += 2
        else:
            while r[i] != 0:
                i += 1 + r[i]
            i += 1
        t, _c, _ttl, ln = struct.unpack(">HHIH", r[i:i + 10])
        i += 10
        rd = r[i:i + ln]
        i += ln
        if t == 1:
            out.append(socket.inet_ntop(socket.AF_INET, rd))
        elif t == 28:
            out.append(socket.inet_ntop(socket.AF_INET6, rd))
    return rcode, out


def cmd_dns(server, name, *flags):
    qtype = 28 if "AAAA" in flags else 1
    q = dns_query(name, qtype)
    tcp = "--tcp" in flags
    port = int(flags[flags.index("--port") + 1]) if "--port" in flags else 53
    s = socket.socket(family(server), socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
    s.settimeout(TIMEOUT)
    try:
        if tcp:
            s.connect((server, port))
            s.sendall(struct.pack(">H", len(q)) + q)
            f = s.makefile("rb")
            n = struct.unpack(">H", f.read(2))[0]
            r, src = f.read(n), s.getpeername()[0]
        else:
            s.sendto(q, (server, port))
            r, peer = s.recvfrom(65535)
            src = peer[0]
    except (OSError, struct.error) as e:
        print(ename(e) if isinstance(e, OSError) else "short answer")
        return
    rcode, answers = dns_parse(r)
    print("rcode %d from %s answers %s" % (rcode, src, ",".join(answers) or "-"))


def cmd_scm_send(path):
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    srv.settimeout(30)
    print("listening", flush=True)
    try:
        conn, _ = srv.accept()
    except OSError as e:
        print("accept " + ename(e))
        return
    socket.send_fds(conn, [b"S"], [tcp.fileno()])
    print("sent fd")
    conn.close()


def cmd_scm_http(path, addr, port, host, rpath):
    u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    u.settimeout(TIMEOUT)
    try:
        u.connect(path)
        _msg, fds, _flags, _addr = socket.recv_fds(u, 16, 1)
    except OSError as e:
        print("unix " + ename(e))
        return
    if not fds:
        print("no fd received")
        return
    s = socket.socket(fileno=fds[0])
    s.settimeout(TIMEOUT)
    try:
        s.connect((addr, int(port)))
    except OSError as e:
        print("connect " + ename(e))
        return
    print("local_port %d" % s.getsockname()[1])
    try:
        s.sendall(request(host, rpath))
        status, body = read_response(s)
    except OSError as e:
        print("http " + ename(e))
        return
    print("status %s" % status)
    sys.stdout.write(body.decode("utf-8", "replace") + "\n")


def cmd_loop(addr, port, host, prefix, n, seconds):
    import json
    n, seconds = int(n), float(seconds)
    t0 = time.time()
    for i in range(n):
        wait = t0 + i * seconds / n - time.time()
        if wait > 0:
            time.sleep(wait)
        if time.time() - t0 > seconds + 20:
            print("%d failed deadline" % i, flush=True)
            continue
        s = socket.socket(family(addr), socket.SOCK_STREAM)
        s.settimeout(2)
        try:
            s.connect((addr, int(port)))
        except OSError as e:
            print("%d connect %s" % (i, ename(e)), flush=True)
            s.close()
            continue
        try:
            s.sendall(request(host, "/echo?id=%s-%d" % (prefix, i)))
            status, body = read_response(s)
            if status == 200:
                print("%d ok %s" % (i, json.loads(body)["client"]), flush=True)
            else:
                print("%d failed status %s" % (i, status), flush=True)
        except (OSError, ValueError) as e:
            print("%d failed %s" % (i, ename(e) if isinstance(e, OSError) else "bad body"),
                  flush=True)
        s.close()


def main():
    cmds = {"connect": cmd_connect, "http": cmd_http, "raw-http": cmd_raw_http, "tunnel": cmd_tunnel, "udp": cmd_udp,
            "udpecho": cmd_udpecho,
            "socket": cmd_socket, "bind": cmd_bind, "dns": cmd_dns, "scm-send": cmd_scm_send,
            "scm-http": cmd_scm_http, "loop": cmd_loop}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    try:
        cmds[sys.argv[1]](*sys.argv[2:])
    except TypeError as e:
        sys.exit("usage: %s (%s)" % (sys.argv[1], e))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
