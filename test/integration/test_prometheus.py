#!/usr/bin/python3
"""/metrics seen by Prometheus' own tools: `promtool check metrics` finds nothing in the live
exposition, content negotiation and gzip never fail, and a real Prometheus server (Debian's
`prometheus`, on 127.0.0.1, 1 s scrape interval) scrapes inferd, sees the target up and sees
grpc_server_handled_total grow after a burst of calls."""

import gzip
import http.client
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest
import urllib.parse

import grpc

import inferd_harness as H

GENERATE = "/inferd.v1.Inference/Generate"


def generate_request(token_ids=(1, 2, 3), max_tokens=4):
    """GenerateRequest{token_ids, stop{max_tokens}} by hand (packed repeated uint32)."""
    packed = b"".join(H._varint(t) for t in token_ids)
    stop = H._varint(1 << 3 | 0) + H._varint(max_tokens)
    return (H._varint(3 << 3 | 2) + H._varint(len(packed)) + packed +
            H._varint(6 << 3 | 2) + H._varint(len(stop)) + stop)


def http_get(port, path, headers=None, timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def scrape(port, headers=None):
    st, hdrs, body = http_get(port, "/metrics", headers)
    if st != 200:
        raise AssertionError("/metrics answered %d: %r" % (st, body[:300]))
    if hdrs.get("content-encoding") == "gzip":
        body = gzip.decompress(body)
    return hdrs, body.decode()


def traffic(server):
    """Calls that give the gRPC and inference families series: OK, NOT_FOUND, a generation."""
    ch = H.grpc_channel(server.target)
    try:
        check = H.unary(ch, H.CHECK)
        for _ in range(5):
            check(H.health_request("liveness"), timeout=5)
        try:
            check(H.health_request("no.such.Service"), timeout=5)
            raise AssertionError("Check of an unknown service succeeded")
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                raise
        # a failing Generate would leave the inference families empty: let it fail the test
        out = list(H.server_stream(ch, GENERATE)(generate_request(), timeout=30))
        if not out:
            raise AssertionError("Generate answered no message")
    finally:
        ch.close()


class ExpositionTest(H.ServerTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        traffic(cls.server)

    def test_promtool_check_metrics(self):
        promtool = H.need("promtool")
        for name, headers in [("text", {}), ("text+gzip", {"Accept-Encoding": "gzip"})]:
            with self.subTest(name):
                _, text = scrape(self.server.system_port, headers)
                self.assertIn("grpc_server_handled_total{", text)
                self.assertIn('grpc_code="OK"', text)
                self.assertIn('grpc_code="NOT_FOUND"', text)
                p = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
                out = p.stdout.decode()
                self.assertEqual(p.returncode, 0, out)
                self.assertEqual(out.strip(), "", "promtool findings:\n" + out)

    def test_negotiation_never_406(self):
        port = self.server.system_port
        hdrs, text = scrape(port, {"Accept": "application/openmetrics-text;version=1.0.0"})
        self.assertTrue(hdrs["content-type"].startswith("application/openmetrics-text; version=1.0.0"))
        self.assertTrue(text.endswith("# EOF\n"))
        for accept in ("application/json", "*/*", "text/html;q=0.9", "", "nonsense;;;q=x"):
            with self.subTest(accept=accept):
                hdrs, text = scrape(port, {"Accept": accept})
                self.assertTrue(hdrs["content-type"].startswith("text/plain; version=0.0.4"))
                self.assertIn("# TYPE process_start_time_seconds gauge", text)
        # gzip only when allowed
        st, hdrs, body = http_get(port, "/metrics", {"Accept-Encoding": "gzip;q=0, identity"})
        self.assertNotIn("content-encoding", hdrs)
        self.assertIn(b"# TYPE", body)
        st, hdrs, body = http_get(port, "/metrics", {"Accept-Encoding": "br, gzip;q=0.5"})
        self.assertEqual(hdrs.get("content-encoding"), "gzip")
        self.assertEqual(int(hdrs["content-length"]), len(body))
        self.assertIn(b"# TYPE", gzip.decompress(body))

    def test_prefix_flag(self):
        s = self.start_extra("--metrics-prefix", "acme")
        _, text = scrape(s.system_port)
        self.assertIn("# TYPE acme_uptime_seconds gauge", text)
        self.assertIn("# TYPE process_start_time_seconds gauge", text)  # never prefixed
        self.assertNotIn("inferd_", text)
        s2 = self.start_extra(env={"DYN_METRICS_PREFIX": ""})
        _, text = scrape(s2.system_port)
        self.assertIn("# TYPE uptime_seconds gauge", text)

    def test_bad_prefix_exit_2(self):
        for v in ("acme:", "9acme", "ac-me", "acme prod"):
            with self.subTest(prefix=v):
                p = subprocess.run([H.inferd_bin(), "--metrics-prefix", v], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, timeout=20)
                self.assertEqual(p.returncode, 2)
                self.assertIn("--metrics-prefix", p.stderr.decode())


class PrometheusServerTest(unittest.TestCase):
    """A real Prometheus scraping inferd every second."""

    def setUp(self):
        self.prom_bin = shutil.which("prometheus")
        if not self.prom_bin:
            self.skipTest("prometheus not installed (Debian package 'prometheus')")
        self.server = H.Inferd()
        self.addCleanup(self.server.check_clean_exit)
        self.tmp = tempfile.mkdtemp(prefix="inferd-prom-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.prom_port = H.free_port()
        cfg = os.path.join(self.tmp, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n  - job_name: inferd\n    metrics_path: /metrics\n"
                    "    static_configs:\n      - targets: ['127.0.0.1:%d']\n" % self.server.system_port)
        self.prom_log = open(os.path.join(self.tmp, "prometheus.log"), "wb")
        self.addCleanup(self.prom_log.close)
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        self.prom = subprocess.Popen(
            [self.prom_bin, "--config.file=" + cfg, "--storage.tsdb.path=" + os.path.join(self.tmp, "data"),
             "--web.listen-address=127.0.0.1:%d" % self.prom_port, "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=self.prom_log, stderr=self.prom_log, env=env,
            start_new_session=True)
        self.addCleanup(self.stop_prometheus)

    def stop_prometheus(self):
        if self.prom.poll() is None:
            self.prom.send_signal(signal.SIGTERM)
            try:
                self.prom.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.prom.pid, signal.SIGKILL)
                self.prom.wait(10)

    def prom_log_tail(self):
        self.prom_log.flush()
        with open(self.prom_log.name, "rb") as f:
            return f.read()[-3000:].decode("utf-8", "replace")

    def api(self, path, **params):
        q = ("?" + urllib.parse.urlencode(params)) if params else ""
        try:
            st, _, body = http_get(self.prom_port, "/api/v1/" + path + q, timeout=5)
        except OSError:
            return None
        if st != 200:
            return None
        return json.loads(body)

    def wait(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.prom.poll() is not None:
                raise AssertionError("prometheus exited (%s):\n%s" % (self.prom.returncode, self.prom_log_tail()))
            v = pred()
            if v is not None:
                return v
            time.sleep(0.25)
        raise AssertionError("timed out after %ss waiting for %s; prometheus log:\n%s" %
                             (timeout, what, self.prom_log_tail()))

    def query_value(self, expr):
        r = self.api("query", query=expr)
        if not r or r.get("status") != "success" or not r["data"]["result"]:
            return None
        return float(r["data"]["result"][0]["value"][1])

    def test_scraped_and_handled_total_grows(self):
        def target_up():
            r = self.api("targets")
            if not r:
                return None
            for t in r["data"]["activeTargets"]:
                if t["labels"].get("job") == "inferd" and t["health"] == "up":
                    return t
            return None
        t = self.wait(target_up, 60, "the inferd target to be up")
        self.assertEqual(t["lastError"], "")
        self.assertEqual(self.wait(lambda: self.query_value('up{job="inferd"}'), 20, "up == 1"), 1.0)

        ch = H.grpc_channel(self.server.target)
        self.addCleanup(ch.close)
        check = H.unary(ch, H.CHECK)
        check(H.health_request("liveness"), timeout=5)  # the family has a series before the baseline
        expr = 'sum(grpc_server_handled_total{job="inferd"})'
        before = self.wait(lambda: self.query_value(expr), 20, "grpc_server_handled_total in Prometheus")
        burst = 200
        futs = [check.future(H.health_request("liveness"), timeout=10) for _ in range(burst)]
        for f in futs:
            f.result(timeout=20)
        after = self.wait(lambda: (lambda v: v if v is not None and v >= before + burst else None)(
            self.query_value(expr)), 30, "grpc_server_handled_total to grow by %d from %s" % (burst, before))
        self.assertGreaterEqual(after - before, burst)
        # the per-code split is there too
        ok = self.query_value('sum(grpc_server_handled_total{job="inferd",grpc_code="OK",'
                              'grpc_method="Check"})')
        self.assertGreaterEqual(ok, burst)


if __name__ == "__main__":
    H.run_main()
