"""Health that tells the truth (issue 5): canary and progress checks against a real inferd on
127.0.0.1, driven by fault injection (POST /debug/fault on the system port) and watched by real
clients: the kubelet-style grpc-go probe, a grpcio Watch stream, /health and /metrics.

Small timings keep the run short: canary wait 1 s, request timeout 1 s, busy stall 2 s.
Bounds are the issue's (wait + timeout + 1 s, the stall limit) plus a little slack for the poll
interval and the sanitizer build.
"""

import http.client as httpclient
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import unittest

import grpc

import inferd_harness as H

WAIT, TIMEOUT, STALL = 1.0, 1.0, 2.0
SLACK = 0.75  # poll interval, loop turn, sanitizer
FAULT_ARGS = ("--enable-fault-injection", "--canary-wait-time", "1s", "--health-check-request-timeout", "1s")


def http(port, path, method="GET", timeout=5):
    """(status, body bytes) over HTTP/1.1, no proxy."""
    c = httpclient.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, headers={"Connection": "close"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()




def fault(server, mode, port=None):
    st, body = http(port or server.system_port, "/debug/fault?mode=%s" % mode, "POST")
    return st, body


def health(server):
    st, body = http(server.system_port, "/health")
    return st, json.loads(body)


def metric(server, name, **labels):
    """Value of one series from /metrics (None when absent)."""
    st, body = http(server.system_port, "/metrics")
    want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
    for line in body.decode().splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})?\s+(\S+)$', line)
        if not m or m.group(1) != name:
            continue
        got = ",".join(sorted(p for p in (m.group(2) or "").split(",") if p))
        if got == want:
            return float(m.group(3))
    return None


def wait_until(pred, timeout, step=0.05):
    """Polls pred until true; returns the seconds it took, or None on timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(step)
    return None


_probe_cache = {}


def probe_bin():
    """The kubelet-style probe: $PROBE_BIN (ctest builds it), else built here with Debian's Go."""
    p = os.environ.get("PROBE_BIN")
    if p and os.access(p, os.X_OK):
        return p
    if "bin" in _probe_cache:
        return _probe_cache["bin"]
    go = shutil.which("go")
    if not go or not os.path.isdir("/usr/share/gocode/src/google.golang.org/grpc"):
        raise unittest.SkipTest("no PROBE_BIN and no Go with golang-google-grpc-dev")
    out = os.path.join(tempfile.mkdtemp(prefix="inferd-probe-"), "probe")
    env = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode", GOFLAGS="",
               GOCACHE=os.path.join(os.path.dirname(out), "gocache"))
    subprocess.check_call([go, "build", "-o", out, "./test/integration/probe"], cwd=H.REPO, env=env)
    _probe_cache["bin"] = out
    return out


def probe(server, service):
    """Runs the probe like kubelet (1 s timeout). Returns (exit code, output)."""
    p = subprocess.run([probe_bin(), "-addr", server.target, "-service", service, "-timeout", "1s"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
    return p.returncode, p.stdout.decode("utf-8", "replace")


class Watcher:
    """A grpcio Watch stream on one service, recording (monotonic time, status) in a thread."""

    def __init__(self, server, service):
        self.ch = H.grpc_channel(server.target)
        self.call = H.server_stream(self.ch, H.WATCH)(H.health_request(service), timeout=600)
        self.seen = []
        self.error = None
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        try:
            for msg in self.call:
                self.seen.append((time.monotonic(), H.health_status(msg)))
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                self.error = e

    def statuses(self, since=0.0):
        return [s for t, s in self.seen if t >= since]

    def first(self, status, since):
        for t, s in self.seen:
            if t >= since and s == status:
                return t
        return None

    def close(self):
        self.call.cancel()
        self.t.join(5)
        self.ch.close()


class LivenessMonitor:
    """Polls /live and Check("liveness") every 100 ms; records any answer that is not healthy."""

    def __init__(self, server):
        self.server = server
        self.bad = []
        self.n = 0
        self.stop_ev = threading.Event()
        self.ch = H.grpc_channel(server.target)
        self.check = H.unary(self.ch, H.CHECK)
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop_ev.is_set():
            try:
                st, body = http(self.server.system_port, "/live", timeout=2)
                if st != 200:
                    self.bad.append(("/live", st, body))
                s = H.health_status(self.check(H.health_request("liveness"), timeout=2))
                if s != H.SERVING:
                    self.bad.append(("liveness", s))
            except Exception as e:  # noqa: BLE001 - any failure is a finding
                self.bad.append(("error", repr(e)))
            self.n += 1
            self.stop_ev.wait(0.1)

    def close(self):
        self.stop_ev.set()
        self.t.join(5)
        self.ch.close()


class FaultCase(unittest.TestCase):
    """One server with fault injection and short canary timings for the whole class."""

    ARGS = FAULT_ARGS + ("--health-check-busy-stall", "60s")
    ENV = None
    server = None

    @classmethod
    def setUpClass(cls):
        cls.server = H.Inferd(*cls.ARGS, env=cls.ENV)

    @classmethod
    def tearDownClass(cls):
        if cls.server is not None:
            s, cls.server = cls.server, None
            fault(s, "clear")
            s.check_clean_exit()

    def setUp(self):
        # each test starts from a healthy server
        st, body = fault(self.server, "clear")
        self.assertEqual(st, 200, body)
        took = wait_until(lambda: health(self.server)[0] == 200, 10)
        self.assertIsNotNone(took, "server not ready before the test: %r" % (health(self.server),))

    def detect(self, mode, reason_words, watch_service="readiness"):
        """Injects mode; asserts readiness goes NOT_SERVING within wait + timeout + 1 s on every
        client, liveness stays SERVING, and clear brings SERVING back at the next canary."""
        s = self.server
        w = Watcher(s, watch_service)
        self.addCleanup(w.close)
        live = LivenessMonitor(s)
        self.addCleanup(live.close)
        self.assertIsNotNone(wait_until(lambda: w.statuses() == [H.SERVING], 5), w.seen)
        rc, out = probe(s, "readiness")
        self.assertEqual(rc, 0, out)
        bound = WAIT + TIMEOUT + 1.0
        t0 = time.monotonic()
        st, body = fault(s, mode)
        self.assertEqual(st, 200, body)
        self.assertEqual(json.loads(body)["fault"], mode)
        took = wait_until(lambda: health(s)[0] == 503, bound + SLACK, step=0.02)
        self.assertIsNotNone(took, "/health still 200 %.1fs after mode=%s: %r" % (bound + SLACK, mode, health(s)))
        print("\n  mode=%s: /health 503 after %.2fs (bound %.1fs)" % (mode, took, bound), end="")
        self.assertLessEqual(took, bound + SLACK)
        # the Watch stream heard it, within the same bound
        self.assertIsNotNone(wait_until(lambda: w.first(H.NOT_SERVING, t0) is not None, 2), w.seen)
        self.assertLessEqual(w.first(H.NOT_SERVING, t0) - t0, bound + SLACK)
        # the kubelet-style probe fails readiness and passes liveness
        rc, out = probe(s, "readiness")
        self.assertEqual(rc, 1, out)
        self.assertIn("NOT_SERVING", out)
        rc, out = probe(s, "liveness")
        self.assertEqual(rc, 0, out)
        st, body = health(s)
        ep = body["endpoints"]["generate"]
        self.assertEqual((body["status"], ep["status"]), ("notready", "notready"), body)
        for word in reason_words:
            self.assertIn(word, ep["reason"])
        self.assertEqual(metric(s, "inferd_health_status", endpoint="generate"), 0.0)
        # recovery: SERVING at the next canary after clear
        t1 = time.monotonic()
        st, body = fault(s, "clear")
        self.assertEqual(st, 200, body)
        took = wait_until(lambda: health(s)[0] == 200, WAIT + 1.0 + SLACK, step=0.02)
        self.assertIsNotNone(took, "not SERVING again after clear: %r" % (health(s),))
        print(", SERVING again %.2fs after clear" % took, end="")
        self.assertIsNotNone(wait_until(lambda: w.first(H.SERVING, t1) is not None, 2), w.seen)
        rc, out = probe(s, "readiness")
        self.assertEqual(rc, 0, out)
        self.assertEqual(health(s)[1]["endpoints"]["generate"]["reason"], "canary succeeded")
        self.assertEqual(metric(s, "inferd_health_status", endpoint="generate"), 1.0)
        live.close()
        self.assertGreater(live.n, 10)
        self.assertEqual(live.bad, [], "liveness flipped while the engine was broken")
        self.assertIsNone(w.error)
        return t0


class TestCanaryFaults(FaultCase):
    def test_hang(self):
        s = self.server
        before = metric(s, "inferd_health_canary_total", endpoint="generate", result="timeout") or 0
        self.detect("hang", ["canary did not complete within 1s"])
        after = metric(s, "inferd_health_canary_total", endpoint="generate", result="timeout")
        self.assertGreaterEqual(after, before + 1)

    def test_error(self):
        s = self.server
        before = metric(s, "inferd_health_canary_total", endpoint="generate", result="failure") or 0
        self.detect("error", ["canary failed"])
        self.assertGreaterEqual(metric(s, "inferd_health_canary_total", endpoint="generate", result="failure"),
                                before + 1)

    def test_duration_metric_and_watch_of_endpoint_service(self):
        s = self.server
        n0 = metric(s, "inferd_health_canary_duration_seconds_count", endpoint="generate") or 0
        ok0 = metric(s, "inferd_health_canary_total", endpoint="generate", result="success") or 0
        self.assertIsNotNone(wait_until(
            lambda: (metric(s, "inferd_health_canary_total", endpoint="generate", result="success") or 0) >= ok0 + 2,
            WAIT * 2 + 2))
        self.assertGreaterEqual(metric(s, "inferd_health_canary_duration_seconds_count", endpoint="generate"), n0 + 2)
        # the endpoint's own service reports the same thing
        self.detect("hang", ["canary did not complete"], watch_service="inferd.v1.Inference")


class TestStallCanary(FaultCase):
    """The default canary (BOS, max_tokens 1): under a stall its one token arrives and the finish
    never does, which a first-chunk check would call healthy."""

    def test_stall_after_first_token(self):
        """Dynamo judges the first chunk: a stream that stalls after it passes there. Here the
        whole response must complete, so the canary fails (and is cancelled: a timeout)."""
        s = self.server
        # Stall mode really does deliver a first token and then nothing: a real client sees it.
        fault(s, "stall")
        ch = H.grpc_channel(s.target)
        self.addCleanup(ch.close)
        call = H.server_stream(ch, H.GENERATE)(H.generate_request(token_ids=[1], max_tokens=8, ignore_eos=True),
                                               timeout=1.5)
        first = H.generate_response(next(call))
        self.assertEqual(len(first["token_ids"]), 1)
        with self.assertRaises(grpc.RpcError) as cm:
            next(call)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        # even a one-token request delivers its token and then never finishes
        call = H.server_stream(ch, H.GENERATE)(H.generate_request(token_ids=[1], max_tokens=1, ignore_eos=True),
                                               timeout=1.0)
        first = H.generate_response(next(call))
        self.assertEqual(len(first["token_ids"]), 1)
        self.assertFalse(first.get("finish_reason"))
        with self.assertRaises(grpc.RpcError) as cm:
            next(call)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        fault(s, "clear")
        self.assertIsNotNone(wait_until(lambda: health(s)[0] == 200, 5))
        before = metric(s, "inferd_health_canary_total", endpoint="generate", result="timeout") or 0
        self.detect("stall", ["canary did not complete"])
        self.assertGreaterEqual(metric(s, "inferd_health_canary_total", endpoint="generate", result="timeout"),
                                before + 1)
        # the cancelled canaries left nothing behind once the engine moved again
        self.assertIsNotNone(wait_until(lambda: metric(s, "inferd_queued_requests", model="inferd-default",
                                                       backend="cpu") == 0.0, 2))


class TestBusyStall(unittest.TestCase):
    """Requests in flight and no token for the stall limit: NOT_SERVING, even though no canary
    runs (canary wait 60 s)."""

    def test_busy_stall(self):
        s = H.Inferd("--enable-fault-injection", "--canary-wait-time", "60s", "--health-check-request-timeout", "1s",
                     "--health-check-busy-stall", "2s")
        self.addCleanup(s.check_clean_exit)
        self.addCleanup(lambda: fault(s, "clear"))
        self.assertEqual(fault(s, "slow&ms=20")[0], 200)
        ch = H.grpc_channel(s.target)
        self.addCleanup(ch.close)
        gen = H.server_stream(ch, H.GENERATE)
        calls = [gen(H.generate_request(token_ids=[1], max_tokens=400, ignore_eos=True), timeout=60) for _ in range(3)]
        for c in calls:  # every request is in the batch and producing
            self.assertTrue(H.generate_response(next(c))["token_ids"])
        canaries0 = sum(metric(s, "inferd_health_canary_total", endpoint="generate", result=r) or 0
                        for r in ("success", "failure", "timeout"))
        w = Watcher(s, "readiness")
        self.addCleanup(w.close)
        t0 = time.monotonic()
        self.assertEqual(fault(s, "hang")[0], 200)
        bound = STALL + STALL / 10 + SLACK  # the limit, one progress tick, slack
        took = wait_until(lambda: health(s)[0] == 503, bound, step=0.02)
        self.assertIsNotNone(took, "no NOT_SERVING within the stall limit: %r" % (health(s),))
        print("\n  busy stall: NOT_SERVING after %.2fs (limit %.1fs)" % (took, STALL), end="")
        self.assertGreaterEqual(took, STALL - 0.3)  # not before the limit
        reason = health(s)[1]["endpoints"]["generate"]["reason"]
        self.assertRegex(reason, r"no token produced for [0-9.]+s with 3 requests in flight")
        self.assertIsNotNone(wait_until(lambda: w.first(H.NOT_SERVING, t0) is not None, 2), w.seen)
        rc, out = probe(s, "readiness")
        self.assertEqual(rc, 1, out)
        self.assertEqual(probe(s, "liveness")[0], 0)
        # the canary had nothing to do with it
        canaries1 = sum(metric(s, "inferd_health_canary_total", endpoint="generate", result=r) or 0
                        for r in ("success", "failure", "timeout"))
        self.assertEqual(canaries0, canaries1)
        # engine back: the requests finish, and their success restores SERVING
        self.assertEqual(fault(s, "clear")[0], 200)
        for c in calls:
            for _ in c:
                pass
        self.assertIsNotNone(wait_until(lambda: health(s)[0] == 200, 5), health(s))
        self.assertEqual(health(s)[1]["endpoints"]["generate"]["reason"], "request succeeded")


class TestSaturation(unittest.TestCase):
    """Every slot busy and the queue full on a slowed engine: readiness stays SERVING (traffic
    flows, so no canary runs and no stall is seen) and Checks answer fast."""

    def test_saturated(self):
        s = H.Inferd("--enable-fault-injection", "--canary-wait-time", "1s", "--health-check-request-timeout", "1s",
                     "--health-check-busy-stall", "2s", "--max-batch", "2", "--max-queued", "2")
        self.addCleanup(s.check_clean_exit)
        self.addCleanup(lambda: fault(s, "clear"))
        self.assertEqual(fault(s, "slow&ms=25")[0], 200)
        ch = H.grpc_channel(s.target)
        self.addCleanup(ch.close)
        gen = H.server_stream(ch, H.GENERATE)
        # 2 in the batch, 2 queued, the rest refused: saturated
        calls = [gen(H.generate_request(token_ids=[1], max_tokens=300, ignore_eos=True), timeout=60)
                 for _ in range(6)]
        codes = []
        live_calls = []

        time.sleep(0.5)
        for c in calls:
            if c.done() and c.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                codes.append("refused")
            else:
                live_calls.append(c)
        self.assertGreaterEqual(len(codes), 1, "the queue never filled")
        drained = []

        def drain(c):
            n = 0
            try:
                for m in c:
                    n += len(H.generate_response(m)["token_ids"])
            except grpc.RpcError:
                pass
            drained.append(n)

        ts = [threading.Thread(target=drain, args=(c,), daemon=True) for c in live_calls]
        for t in ts:
            t.start()
        w = Watcher(s, "readiness")
        self.addCleanup(w.close)
        time.sleep(0.2)
        canaries0 = sum(metric(s, "inferd_health_canary_total", endpoint="generate", result=r) or 0
                        for r in ("success", "failure", "timeout"))
        hc = H.grpc_channel(s.target)
        self.addCleanup(hc.close)
        check = H.unary(hc, H.CHECK)
        check(H.health_request("readiness"), timeout=5)  # connect
        lat, bad = [], []
        t_end = time.monotonic() + 4.0  # over several canary waits and two stall limits
        for i in range(1000):
            t = time.perf_counter()
            st = H.health_status(check(H.health_request("readiness" if i % 2 else ""), timeout=5))
            lat.append(time.perf_counter() - t)
            if st != H.SERVING:
                bad.append((i, st))
            left = (t_end - time.monotonic()) / max(1, 1000 - i)
            if left > 0:
                time.sleep(left)
        lat.sort()
        p50, p99 = lat[len(lat) // 2] * 1e3, lat[int(len(lat) * 0.99) - 1] * 1e3
        print("\n  saturation: 1000 Checks, p50 %.2f ms, p99 %.2f ms, max %.2f ms" % (p50, p99, lat[-1] * 1e3),
              end="")
        self.assertEqual(bad, [])
        self.assertLess(p99, 50.0)  # the 5 ms, loosened for the sanitizer build
        self.assertEqual(w.statuses(), [H.SERVING], "readiness flickered under load")
        self.assertEqual(health(s)[0], 200)
        canaries1 = sum(metric(s, "inferd_health_canary_total", endpoint="generate", result=r) or 0
                        for r in ("success", "failure", "timeout"))
        self.assertEqual(canaries1, canaries0, "a canary ran while the busy endpoint was producing tokens")
        for c in live_calls:
            c.cancel()
        for t in ts:
            t.join(10)


class TestStartup(unittest.TestCase):
    def test_notready_until_first_success(self):
        """The first canary cannot pass (it needs 400 tokens in 1 ms): /health stays 503 and
        readiness NOT_SERVING until a first successful generation, here a real one."""
        payload = json.dumps({"token_ids": [1], "stop": {"max_tokens": 400, "ignore_eos": True}})
        s = H.Inferd("--canary-wait-time", "60s", "--health-check-request-timeout", "1ms",
                     env={"DYN_HEALTH_CHECK_PAYLOAD": payload}, wait_ready=False)
        self.addCleanup(s.check_clean_exit)
        self.assertIsNotNone(wait_until(lambda: metric(s, "inferd_health_canary_total", endpoint="generate",
                                                       result="timeout") == 1, 10))
        st, body = health(s)
        self.assertEqual(st, 503, body)
        # no transition yet: the reason is still the initial one; the log says why
        self.assertEqual(body["endpoints"]["generate"]["reason"], "starting")
        # the log is written by its own thread: the line may follow the metric by a moment
        self.assertIsNotNone(wait_until(lambda: "canary did not complete" in s.stderr(), 5), s.stderr())
        self.assertEqual(probe(s, "readiness")[0], 1)
        self.assertEqual(probe(s, "")[0], 1)
        self.assertEqual(probe(s, "liveness")[0], 0)
        self.assertEqual(http(s.system_port, "/live")[0], 200)
        ch = H.grpc_channel(s.target)
        self.addCleanup(ch.close)
        list(H.server_stream(ch, H.GENERATE)(H.generate_request(token_ids=[1], max_tokens=2), timeout=10))
        self.assertIsNotNone(wait_until(lambda: health(s)[0] == 200, 2))
        self.assertEqual(health(s)[1]["endpoints"]["generate"]["reason"], "request succeeded")
        self.assertEqual(probe(s, "readiness")[0], 0)

    def test_notready_default_reports_starting(self):
        """Before the first canary the endpoint is NOT_SERVING with reason 'starting'; the log
        shows the first canary's transition after the listeners came up."""
        s = H.Inferd("--canary-wait-time", "1s")
        self.addCleanup(s.check_clean_exit)
        log = s.stderr()
        added = log.index("endpoint generate (inferd.v1.Inference) added: NOT_SERVING")
        up = log.index("NOT_SERVING -> SERVING (canary succeeded)")
        self.assertLess(added, up)
        self.assertLess(log.index("model inferd-default loaded"), up)

    def test_ready_and_canary_off(self):
        s = H.Inferd(env={"DYN_SYSTEM_STARTING_HEALTH_STATUS": "ready", "DYN_HEALTH_CHECK_ENABLED": "false"},
                     wait_ready=False)
        self.addCleanup(s.check_clean_exit)
        # the very first answer is 200
        st, body = health(s)
        self.assertEqual(st, 200, body)
        self.assertEqual(probe(s, "readiness")[0], 0)
        time.sleep(1.5)
        total = sum(metric(s, "inferd_health_canary_total", endpoint="generate", result=r) or 0
                    for r in ("success", "failure", "timeout"))
        self.assertEqual(total, 0)
        self.assertIn("checks disabled", s.stderr())
        self.assertEqual(metric(s, "inferd_health_status", endpoint="generate"), 1.0)

    def test_notready_canary_off_serving_once_loaded(self):
        s = H.Inferd(env={"DYN_HEALTH_CHECK_ENABLED": "0"})  # waits for /health 200
        self.addCleanup(s.check_clean_exit)
        self.assertEqual(health(s)[1]["endpoints"]["generate"]["reason"], "model loaded (health checks disabled)")


class TestConfig(unittest.TestCase):
    def test_dyn_variables_honoured(self):
        tmp = tempfile.mkdtemp(prefix="inferd-payload-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "canary.json")
        with open(path, "w") as f:
            json.dump({"tokenIds": [1, 2], "sampling": {"temperature": 0, "seed": "7"}, "stop": {"maxTokens": 2}}, f)
        env = {"DYN_CANARY_WAIT_TIME": "0.5", "DYN_HEALTH_CHECK_REQUEST_TIMEOUT": "2",
               "DYN_HEALTH_CHECK_BUSY_STALL": "5", "DYN_HEALTH_CHECK_PAYLOAD": "@" + path,
               "DYN_HEALTH_CHECK_ENABLED": "true", "DYN_SYSTEM_STARTING_HEALTH_STATUS": "notready"}
        p = subprocess.run([H.inferd_bin(), "--print-config"], env=dict(os.environ, **env), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=20)
        out = p.stdout.decode()
        for var in env:
            self.assertRegex(out, r"#.*%s" % var, out)
        s = H.Inferd(env=env)
        self.addCleanup(s.check_clean_exit)
        self.assertIn("canary after 0.5s without a success (timeout 2s), busy stall 5s, payload from "
                      "--health-check-payload", s.stderr())
        ok0 = metric(s, "inferd_health_canary_total", endpoint="generate", result="success")
        time.sleep(1.6)
        ok1 = metric(s, "inferd_health_canary_total", endpoint="generate", result="success")
        self.assertGreaterEqual(ok1 - ok0, 2, "canaries every 0.5s when idle")

    def test_invalid_values_rejected(self):
        cases = [
            ("DYN_CANARY_WAIT_TIME", "soon", "--canary-wait-time"),
            ("DYN_HEALTH_CHECK_REQUEST_TIMEOUT", "-1", "--health-check-request-timeout"),
            ("DYN_HEALTH_CHECK_BUSY_STALL", "0", "--health-check-busy-stall"),
            ("DYN_HEALTH_CHECK_ENABLED", "maybe", "--health-check-enabled"),
            ("DYN_SYSTEM_STARTING_HEALTH_STATUS", "sometimes", "--starting-health-status"),
            ("DYN_HEALTH_CHECK_PAYLOAD", "{not json", "bad JSON"),
            ("DYN_HEALTH_CHECK_PAYLOAD", '{"token_ids":[1],"max_tokens":1}', "unknown field 'max_tokens'"),
            ("DYN_HEALTH_CHECK_PAYLOAD", '{"stop":{"max_tokens":"one"}}', "field 'stop.max_tokens': expected an"),
            ("DYN_HEALTH_CHECK_PAYLOAD", '{"sampling":{"temperature":"hot"}}', "field 'sampling.temperature'"),
            ("DYN_HEALTH_CHECK_PAYLOAD", '{"token_ids":[-1]}', "token_ids[0]"),
            ("DYN_HEALTH_CHECK_PAYLOAD", "[]", "expected a JSON object"),
            ("DYN_HEALTH_CHECK_PAYLOAD", "@/nonexistent/canary.json", "/nonexistent/canary.json"),
            ("DYN_HEALTH_CHECK_PAYLOAD", '{"token_ids":[999999]}', "outside the vocabulary"),
            ("DYN_HEALTH_CHECK_PAYLOAD", '{"model":"other","token_ids":[1]}', "model 'other' is not served"),
        ]
        for var, value, words in cases:
            with self.subTest(var=var, value=value):
                e = dict(os.environ, **{var: value})
                p = subprocess.run([H.inferd_bin(), "--listen", "127.0.0.1:0", "--system-port", "-1"], env=e,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
                out = p.stdout.decode()
                self.assertEqual(p.returncode, 2, out)
                self.assertIn("invalid value", out)
                self.assertIn(words, out)
                if var == "DYN_HEALTH_CHECK_PAYLOAD":
                    self.assertIn("--health-check-payload", out)
                else:
                    self.assertIn(var, out)
                self.assertNotIn("Sanitizer", out)


class TestFaultControl(unittest.TestCase):
    def test_off_by_default_and_only_on_system_port(self):
        s = H.Inferd()
        self.addCleanup(s.check_clean_exit)
        self.assertEqual(fault(s, "hang")[0], 404)
        on = H.Inferd("--enable-fault-injection")
        self.addCleanup(on.check_clean_exit)
        self.addCleanup(lambda: fault(on, "clear"))
        self.assertEqual(fault(on, "hang", port=on.grpc_port)[0], 404)  # main port: no such path
        self.assertEqual(fault(on, "bogus")[0], 400)
        self.assertEqual(fault(on, "slow&ms=abc")[0], 400)
        self.assertEqual(fault(on, "slow")[0], 400)
        st, body = fault(on, "slow&ms=5")
        self.assertEqual((st, json.loads(body)), (200, {"fault": "slow", "ms": 5}))
        self.assertEqual(http(on.system_port, "/debug/fault?mode=hang")[0], 405)
        self.assertEqual(fault(on, "clear")[0], 200)
        self.assertIn("fault injection enabled", on.stderr())

    def test_refused_on_non_loopback_system_host(self):
        s = H.Inferd("--enable-fault-injection", "--system-host", "0.0.0.0")
        self.addCleanup(s.check_clean_exit)
        self.assertEqual(fault(s, "hang")[0], 404)
        self.assertIn("--enable-fault-injection refused", s.stderr())
        self.assertEqual(health(s)[0], 200)


if __name__ == "__main__":
    H.run_main()
