#!/usr/bin/python3
"""Holds N idle HTTP/2 (h2c) connections open against a server.

Each connection sends the client preface and an empty SETTINGS frame, waits for
the server's SETTINGS, acknowledges it, and then stays silent. Once every
connection has exchanged SETTINGS it prints "holding N connections" and waits
until SIGTERM/SIGINT or --hold seconds, then closes them.

Usage: idle_conns.py --port 50051 [--host 127.0.0.1] [--count 1000] [--hold 60]
"""

import argparse
import resource
import selectors
import signal
import socket
import sys
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS_EMPTY = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--hold", type=float, default=3600)
    ap.add_argument("--timeout", type=float, default=30, help="seconds to set every connection up")
    a = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.count + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))

    sel = selectors.DefaultSelector()
    socks = []
    pending = {}  # sock -> bytes received so far (until the server's SETTINGS is seen)
    for _ in range(a.count):
        s = socket.create_connection((a.host, a.port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(PREFACE + SETTINGS_EMPTY)
        s.setblocking(False)
        socks.append(s)
        pending[s] = b""
        sel.register(s, selectors.EVENT_READ)

    deadline = time.monotonic() + a.timeout
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(0.5):
            s = key.fileobj
            try:
                d = s.recv(65536)
            except BlockingIOError:
                continue
            if not d:
                sys.exit("idle_conns: server closed a connection during setup")
            if s not in pending:
                continue  # e.g. the ACK of our SETTINGS
            buf = pending[s] + d
            # walk frames until the server's (non-ACK) SETTINGS
            i, done = 0, False
            while len(buf) - i >= 9:
                ln = int.from_bytes(buf[i:i + 3], "big")
                if len(buf) - i < 9 + ln:
                    break
                ftype, flags = buf[i + 3], buf[i + 4]
                if ftype == 0x4 and not flags & 0x1:
                    done = True
                i += 9 + ln
            if done:
                s.sendall(SETTINGS_ACK)
                del pending[s]
            else:
                pending[s] = buf
    if pending:
        sys.exit("idle_conns: %d of %d connections did not get SETTINGS within %gs"
                 % (len(pending), a.count, a.timeout))

    print("holding %d connections" % len(socks), flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    end = time.monotonic() + a.hold
    closed = 0
    while not stop and time.monotonic() < end:
        # drain whatever the server sends (PINGs, GOAWAY) so its buffers stay empty
        for key, _ in sel.select(0.5):
            try:
                d = key.fileobj.recv(65536)
            except (BlockingIOError, ConnectionResetError):
                continue
            if not d:
                sel.unregister(key.fileobj)
                closed += 1
    for s in socks:
        s.close()
    if closed:
        print("server closed %d connections while held" % closed, flush=True)


if __name__ == "__main__":
    main()
