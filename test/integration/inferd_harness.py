"""Shared harness for inferd's integration tests.

Runs under Debian's /usr/bin/python3 with python3-grpcio, python3-protobuf
(unused: the few messages are encoded by hand below) and python3-h2.

Every test module starts its own inferd on 127.0.0.1 with free ports and stops
it at the end, also on failure. The binary comes from $INFERD_BIN (set by
ctest), else the usual build folders. Every wait is bounded.

A stopped server must exit 0 with no sanitizer report in its stderr: the
sanitizer build is what ctest runs, so a leak or UB on shutdown fails the test
module that owned the process.
"""

import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# grpc.health.v1.HealthCheckResponse.ServingStatus
UNKNOWN, SERVING, NOT_SERVING, SERVICE_UNKNOWN = 0, 1, 2, 3
STATUS_NAMES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}

# The health services of DESIGN.md and what they answer once the engine has
# warmed up (the harness waits for that; see Inferd(wait_ready=)).
SERVICES_READY = {
    "": SERVING,
    "readiness": SERVING,
    "liveness": SERVING,
    "inferd.v1.Inference": SERVING,
}

CHECK = "/grpc.health.v1.Health/Check"
WATCH = "/grpc.health.v1.Health/Watch"
LIST = "/grpc.health.v1.Health/List"

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "ThreadSanitizer", "UndefinedBehaviorSanitizer")


def inferd_bin():
    path = os.environ.get("INFERD_BIN")
    if path:
        return path
    for d in ("build-it", "build", "build-asan", "build-bench"):
        p = os.path.join(REPO, d, "server", "inferd")
        if os.access(p, os.X_OK):
            return p
    raise unittest.SkipTest("no inferd binary: set INFERD_BIN")


def need(tool):
    path = shutil.which(tool)
    if not path:
        raise unittest.SkipTest("%s not installed" % tool)
    return path


def free_port():
    """A port free on 127.0.0.1 right now (racy but good enough on a test machine)."""
    return free_ports(1)[0]


def free_ports(n):
    """n distinct ports free on 127.0.0.1 right now: held open together while they are picked,
    so two calls in a row cannot hand out the same port."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# ---------------------------------------------------------------- protobuf by hand

def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_varint(buf, i):
    shift = n = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, i
        shift += 7


def pb_fields(buf):
    """Yields (field number, wire type, value) of a serialized message (varint and length-delimited)."""
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        field, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _read_varint(buf, i)
        elif wt == 2:
            ln, i = _read_varint(buf, i)
            v = bytes(buf[i:i + ln])
            i += ln
        elif wt == 1:
            v = buf[i:i + 8]
            i += 8
        elif wt == 5:
            v = buf[i:i + 4]
            i += 4
        else:
            raise ValueError("wire type %d" % wt)
        yield field, wt, v


def pb_string(field, s):
    b = s.encode() if isinstance(s, str) else s
    return _varint(field << 3 | 2) + _varint(len(b)) + b


def health_request(service):
    """HealthCheckRequest{service}; proto3 omits the empty string."""
    return pb_string(1, service) if service else b""


def health_status(resp):
    """HealthCheckResponse -> status enum (0 when absent)."""
    st = UNKNOWN
    for f, wt, v in pb_fields(resp):
        if f == 1 and wt == 0:
            st = v
    return st


def pb_varint(field, v):
    return _varint(field << 3) + _varint(v)


def packed_uint32(buf):
    out, i = [], 0
    while i < len(buf):
        v, i = _read_varint(buf, i)
        out.append(v)
    return out


def generate_request(prompt="", token_ids=(), max_tokens=16, ignore_eos=False, request_id=""):
    """inferd.v1.GenerateRequest (DESIGN.md field numbers)."""
    out = pb_string(1, request_id) if request_id else b""
    if token_ids:
        out += pb_string(3, b"".join(_varint(t) for t in token_ids))
    if prompt:
        out += pb_string(4, prompt)
    stop = pb_varint(1, max_tokens) + (pb_varint(3, 1) if ignore_eos else b"")
    return out + pb_string(6, stop)


def generate_response(buf):
    """inferd.v1.GenerateResponse -> dict(request_id, token_ids, text, finish_reason, usage=(prompt, completion),
    error=(code, message) or None)."""
    r = {"request_id": "", "token_ids": [], "text": "", "finish_reason": 0, "usage": None, "error": None}
    for f, wt, v in pb_fields(buf):
        if f == 1:
            r["request_id"] = v.decode()
        elif f == 2:
            r["token_ids"] += packed_uint32(v) if wt == 2 else [v]
        elif f == 3:
            r["text"] += v.decode("utf-8", "replace")
        elif f == 4:
            r["finish_reason"] = v
        elif f == 5:
            u = dict((uf, uv) for uf, _, uv in pb_fields(v))
            r["usage"] = (u.get(1, 0), u.get(2, 0))
        elif f == 6:
            e = dict((ef, ev) for ef, _, ev in pb_fields(v))
            r["error"] = (e.get(1, 0), e.get(2, b"").decode("utf-8", "replace"))
    return r


FINISH_LENGTH, FINISH_EOS, FINISH_STOP, FINISH_CANCELLED = 1, 2, 3, 4
GENERATE = "/inferd.v1.Inference/Generate"


def health_list(resp):
    """HealthListResponse -> {service: status}."""
    out = {}
    for f, wt, entry in pb_fields(resp):
        if f != 1 or wt != 2:
            continue
        key, val = "", b""
        for ef, ewt, ev in pb_fields(entry):
            if ef == 1:
                key = ev.decode()
            elif ef == 2:
                val = ev
        out[key] = health_status(val)
    return out


def grpc_frame(msg, compressed=False):
    return struct.pack(">BI", 1 if compressed else 0, len(msg)) + msg


def grpc_unframe(data):
    """Splits a DATA byte stream into [(compressed flag, message)]."""
    out, i = [], 0
    while i + 5 <= len(data):
        flag, ln = struct.unpack(">BI", data[i:i + 5])
        out.append((flag, data[i + 5:i + 5 + ln]))
        i += 5 + ln
    if i != len(data):
        raise ValueError("trailing partial gRPC frame (%d bytes)" % (len(data) - i))
    return out


# ---------------------------------------------------------------- the server process

class Inferd:
    """One inferd process on 127.0.0.1 with a free gRPC port and a free system port."""

    def __init__(self, *args, env=None, grpc_port=None, system_port=None, wait=True, wait_ready=None,
                 timeout=30):
        """wait: until the listeners log 'listening'; wait_ready: also until GET /health answers
        200 (the engine warmed up); by default when the listener is plaintext."""
        self.bin = inferd_bin()
        ports = free_ports(2)
        self.grpc_port = grpc_port if grpc_port is not None else ports[0]
        self.system_port = system_port if system_port is not None else ports[1]
        self.tmp = tempfile.mkdtemp(prefix="inferd-it-")
        self.stderr_path = os.path.join(self.tmp, "stderr.log")
        argv = [self.bin, "--listen", "127.0.0.1:%d" % self.grpc_port,
                "--system-host", "127.0.0.1", "--system-port", str(self.system_port)]
        # Quick shutdown unless a test asks otherwise (later flags win).
        argv += ["--shutdown-delay", "0", "--drain-timeout", "2s"]
        argv += list(args)
        self.argv = argv
        self.health_path = (env or {}).get("DYN_SYSTEM_HEALTH_PATH") or os.environ.get("DYN_SYSTEM_HEALTH_PATH") \
            or "/health"
        if "--health-path" in argv:
            self.health_path = argv[argv.index("--health-path") + 1]
        e = dict(os.environ)
        for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
            e.pop(k, None)
        e.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        e.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        if env:
            e.update(env)
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._err,
                                     stderr=self._err, env=e, start_new_session=True)
        self.returncode = None
        if wait_ready is None:
            wait_ready = "--tls-cert" not in argv
        if wait:
            try:
                self.wait_listening(timeout)
                if wait_ready:
                    self.wait_ready(timeout)
            except BaseException:
                self.kill()  # nobody else will: the constructor never returned
                raise

    # -- logs
    def stderr(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def listening(self):
        """{role: (host, port)} from the 'listening' log lines so far."""
        out = {}
        for line in self.stderr().splitlines():
            if "listening" not in line:
                continue
            m = re.search(r'address"?[=:]\s*"?([^\s",}]+)', line)
            r = re.search(r'role"?[=:]\s*"?(\w+)', line)
            if m:
                hp = m.group(1)
                host, _, port = hp.rpartition(":")
                out[r.group(1) if r else "?"] = (host.strip("[]"), int(port))
        return out

    def wait_listening(self, timeout=20):
        want = {"grpc"} | ({"system"} if self.system_port != -1 else set())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("inferd exited with %s at start:\n%s" % (self.proc.returncode, self.stderr()))
            if want <= set(self.listening()):
                return
            time.sleep(0.05)
        raise AssertionError("inferd did not log 'listening' for %s within %ss:\n%s" % (want, timeout, self.stderr()))

    def wait_ready(self, timeout=30):
        """Until GET /health on the main port answers 200 (readiness SERVING)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("inferd exited with %s:\n%s" % (self.proc.returncode, self.stderr()))
            try:
                s = http1_socket(self.grpc_port, timeout=2)
                try:
                    s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                              % self.health_path.encode())
                    last = http1_read_response(s, timeout=2)
                finally:
                    s.close()
                if last[0] == 200:
                    return
            except (OSError, AssertionError) as e:
                last = e
            time.sleep(0.05)
        raise AssertionError("inferd not ready within %ss (last /health: %r):\n%s" % (timeout, last, self.stderr()[-4000:]))

    @property
    def target(self):
        return "127.0.0.1:%d" % self.grpc_port

    @property
    def system_target(self):
        return "127.0.0.1:%d" % self.system_port

    # -- lifecycle
    def signal(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout):
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def stop(self, timeout=15):
        """SIGTERM, wait (bounded), SIGKILL if needed. Returns the exit code (negative: killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
                self.returncode = "killed after %ss" % timeout
                self._err.close()
                return self.returncode
        if self.returncode is None:
            self.returncode = self.proc.returncode
        self._err.close()
        return self.returncode

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._err.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def check_clean_exit(self, testcase=None):
        """Stops the server and fails when it did not exit 0 or a sanitizer spoke."""
        rc = self.stop()
        err = self.stderr()
        bad = [m for m in SANITIZER_MARKERS if m in err]
        shutil.rmtree(self.tmp, ignore_errors=True)
        if rc != 0 or bad:
            raise AssertionError("inferd did not stop cleanly (exit %s%s); stderr tail:\n%s" %
                                 (rc, ", sanitizer: %s" % bad if bad else "", err[-6000:]))


class ServerTestCase(unittest.TestCase):
    """One inferd for the whole class (ARGS), stopped in tearDownClass."""

    ARGS = ()
    ENV = None
    server = None

    @classmethod
    def setUpClass(cls):
        cls.server = Inferd(*cls.ARGS, env=cls.ENV)

    @classmethod
    def tearDownClass(cls):
        if cls.server is not None:
            s, cls.server = cls.server, None
            s.check_clean_exit()

    def start_extra(self, *args, **kw):
        """A second server with other flags, stopped (and checked) when the test ends."""
        s = Inferd(*args, **kw)
        self.addCleanup(s.check_clean_exit)
        return s


# ---------------------------------------------------------------- grpcio helpers

def grpc_channel(target, **kw):
    import grpc
    opts = [("grpc.enable_http_proxy", 0), ("grpc.enable_retries", 0)]
    opts += kw.pop("options", [])
    creds = kw.pop("credentials", None)
    if creds is not None:
        return grpc.secure_channel(target, creds, options=opts, **kw)
    return grpc.insecure_channel(target, options=opts, **kw)


def unary(channel, method):
    return channel.unary_unary(method, request_serializer=None, response_deserializer=None)


def server_stream(channel, method):
    return channel.unary_stream(method, request_serializer=None, response_deserializer=None)


# ---------------------------------------------------------------- raw HTTP/2 client

def _h2_tolerate_goaway():
    """python3-h2 treats a connection as dead after the first GOAWAY and raises on
    any later frame; graceful shutdown (GOAWAY 2^31-1, PING, final GOAWAY, the
    in-flight streams finishing) is exactly what the tests watch, so let the
    closed state accept everything."""
    from h2.connection import ConnectionInputs, ConnectionState, H2ConnectionStateMachine
    for inp in ConnectionInputs:
        H2ConnectionStateMachine._transitions.setdefault((ConnectionState.CLOSED, inp),
                                                         (None, ConnectionState.CLOSED))



class H2Conn:
    """A blocking raw HTTP/2 client over h2 (python3-h2) for what grpcio hides:
    frames, settings, GOAWAY, PING, RST_STREAM, trailers."""

    def __init__(self, port, host="127.0.0.1", timeout=5.0, settings=None, sock=None, auto_ack=True):
        """settings: our SETTINGS ({h2.settings.SettingCodes.X: value}); auto_ack=False leaves
        received DATA unacknowledged (no WINDOW_UPDATE) until release(): a stalled reader."""
        import h2.config
        import h2.connection
        _h2_tolerate_goaway()
        self.sock = sock or socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.host = host
        self.port = port
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                        validate_inbound_headers=False)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.events = []       # every event received, in order
        self.streams = {}      # stream id -> dict(headers, data, trailers, ended, reset)
        self.closed = False    # the peer closed the TCP connection
        self.remote_settings = {}
        self.auto_ack = auto_ack
        self.unacked = {}      # stream id -> flow-controlled bytes not yet acknowledged
        self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def _stream(self, sid):
        return self.streams.setdefault(sid, {"headers": None, "data": b"", "trailers": None,
                                             "ended": False, "reset": None})

    def pump(self, timeout):
        """Reads for at most timeout seconds (returns after the first batch of events).

        Frames are fed to h2 one at a time so that one frame h2 dislikes (say a
        RST_STREAM after the trailers of an already closed stream) loses no
        other event; such frames are recorded as ("protocol_error", exc)."""
        import h2.events
        import h2.exceptions
        if self.closed:
            return []
        r, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not r:
            return []
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, socket.timeout, OSError):
            data = b""
        if not data:
            self.closed = True
            return []
        self._inbuf = getattr(self, "_inbuf", b"") + data
        evs = []
        while len(self._inbuf) >= 9:
            ln = int.from_bytes(self._inbuf[:3], "big")
            if len(self._inbuf) < 9 + ln:
                break
            frame, self._inbuf = self._inbuf[:9 + ln], self._inbuf[9 + ln:]
            ftype, sid = frame[3], int.from_bytes(frame[5:9], "big") & 0x7FFFFFFF
            if ftype == 3 and sid in self.streams and self.streams[sid]["reset"] is None:
                # RST_STREAM: keep its code even when h2 considers the stream closed
                self.streams[sid]["reset"] = int.from_bytes(frame[9:13], "big")
            try:
                evs += self.conn.receive_data(frame)
            except h2.exceptions.ProtocolError as e:
                self.events.append(("protocol_error", e))
        for ev in evs:
            self.events.append(ev)
            if isinstance(ev, h2.events.ResponseReceived):
                self._stream(ev.stream_id)["headers"] = dict(ev.headers)
            elif isinstance(ev, h2.events.TrailersReceived):
                self._stream(ev.stream_id)["trailers"] = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                st = self._stream(ev.stream_id)
                st["data"] += ev.data
                if self.auto_ack:
                    try:
                        self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    except h2.exceptions.ProtocolError:
                        pass
                else:
                    self.unacked[ev.stream_id] = self.unacked.get(ev.stream_id, 0) + ev.flow_controlled_length
            elif isinstance(ev, h2.events.StreamEnded):
                self._stream(ev.stream_id)["ended"] = True
            elif isinstance(ev, h2.events.StreamReset):
                self._stream(ev.stream_id)["reset"] = ev.error_code
            elif isinstance(ev, h2.events.RemoteSettingsChanged):
                for k, v in ev.changed_settings.items():
                    self.remote_settings[int(k)] = v.new_value
        try:
            self.flush()
        except OSError:
            pass
        return evs

    def wait_for(self, pred, timeout, what="condition"):
        deadline = time.monotonic() + timeout
        while True:
            if pred():
                return True
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                if pred():
                    return True
                raise AssertionError("timed out (%.1fs) waiting for %s; closed=%s events=%r" %
                                     (timeout, what, self.closed, self.events[-20:]))
            self.pump(min(left, 0.2))

    def wait_settings(self, timeout=5):
        import h2.events
        self.wait_for(lambda: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in self.events),
                      timeout, "server SETTINGS")
        return self.remote_settings

    def request(self, path, body=b"", headers=None, end=True, content_type="application/grpc",
                method="POST", te="trailers"):
        sid = self.conn.get_next_available_stream_id()
        hs = [(":method", method), (":scheme", "http"), (":authority", "%s:%d" % (self.host, self.port)),
              (":path", path)]
        if content_type is not None:
            hs.append(("content-type", content_type))
        if te is not None:
            hs.append(("te", te))
        hs += list(headers or [])
        self.conn.send_headers(sid, hs, end_stream=(end and not body))
        self._stream(sid)
        if body:
            self.send_data(sid, body, end=end)
        self.flush()
        return sid

    def send_data(self, sid, body, end=False):
        # respect flow control (small bodies only in these tests)
        while body:
            n = min(len(body), self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if n <= 0:
                self.flush()
                self.pump(0.2)
                continue
            self.conn.send_data(sid, body[:n], end_stream=(end and n == len(body)))
            body = body[n:]
        self.flush()

    def release(self):
        """Acknowledges what was held back and reads normally from now on."""
        import h2.exceptions
        self.auto_ack = True
        for sid, n in self.unacked.items():
            try:
                self.conn.acknowledge_received_data(n, sid)
            except h2.exceptions.ProtocolError:
                pass
        self.unacked = {}
        self.flush()

    def end_stream(self, sid):
        self.conn.end_stream(sid)
        self.flush()

    def reset(self, sid, code=8):
        self.conn.reset_stream(sid, error_code=code)
        self.flush()

    def ping(self, payload=b"12345678"):
        self.conn.ping(payload)
        self.flush()

    def wait_done(self, sid, timeout=5):
        st = self._stream(sid)
        self.wait_for(lambda: st["ended"] or st["reset"] is not None, timeout, "end of stream %d" % sid)
        return st

    def goaways(self):
        import h2.events
        return [e for e in self.events if isinstance(e, h2.events.ConnectionTerminated)]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def grpc_status_of(st):
    """grpc-status of a finished raw stream: from trailers, or a Trailers-Only response's headers."""
    for hs in (st["trailers"], st["headers"]):
        if hs and "grpc-status" in hs:
            return int(hs["grpc-status"])
    return None


def h2_unary(port, path, msg=b"", headers=None, timeout=5, frame=True):
    c = H2Conn(port)
    try:
        sid = c.request(path, grpc_frame(msg) if frame else msg, headers=headers)
        st = c.wait_done(sid, timeout)
        return c, st
    finally:
        c.close()


# ---------------------------------------------------------------- HTTP/1.1 helpers

def curl(*args, timeout=10):
    """Runs curl; returns (exit code, stdout bytes, stderr text)."""
    need("curl")
    p = subprocess.run(["curl", "-sS", "--noproxy", "*", "--max-time", str(timeout)] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout + 5)
    return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")


def http1_read_response(sock, timeout=5, head=False):
    """Reads one HTTP/1.1 response with Content-Length (or none) from a socket.
    Returns (status, headers dict lower-case, body) — uses a per-socket buffer."""
    buf = getattr(sock, "_it_buf", b"")
    deadline = time.monotonic() + timeout

    def more():
        nonlocal buf
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("HTTP/1.1 response timed out; have %r" % buf[:500])
        sock.settimeout(left)
        d = sock.recv(65536)
        if not d:
            raise AssertionError("connection closed mid-response; have %r" % buf[:500])
        buf += d

    while b"\r\n\r\n" not in buf:
        more()
    head_bytes, _, buf = buf.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    n = 0 if head else int(hdrs.get("content-length", "0"))
    if "chunked" in hdrs.get("transfer-encoding", "") and not head:
        body = b""
        while True:
            while b"\r\n" not in buf:
                more()
            size_line, _, buf = buf.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(buf) < size + 2:
                more()
            body += buf[:size]
            buf = buf[size + 2:]
            if size == 0:
                break
    else:
        while len(buf) < n:
            more()
        body, buf = buf[:n], buf[n:]
    sock._it_buf = buf
    return status, hdrs, body


class BufSock(socket.socket):
    """A socket that can carry the read buffer of http1_read_response."""
    _it_buf = b""


def http1_socket(port, timeout=5):
    s = BufSock(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    return s


def recv_until_closed(sock, timeout):
    """Reads until EOF/RST or timeout. Returns (closed?, seconds waited, bytes read)."""
    t0 = time.monotonic()
    got = b""
    while True:
        left = timeout - (time.monotonic() - t0)
        if left <= 0:
            return False, time.monotonic() - t0, got
        r, _, _ = select.select([sock], [], [], left)
        if not r:
            continue
        try:
            d = sock.recv(65536)
        except (ConnectionResetError, OSError):
            d = b""
        if not d:
            return True, time.monotonic() - t0, got
        got += d


def run_main():
    unittest.main(verbosity=2)
