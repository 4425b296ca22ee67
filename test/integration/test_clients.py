#!/usr/bin/python3
"""Other real clients: a kubelet-style Go probe (grpc-go from Debian's
golang-google-grpc-dev) and an h2load (nghttp2-client) load run."""

import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest

import inferd_harness as H


def probe_bin():
    """$PROBE_BIN (ctest builds it), else build it offline into a temp folder."""
    p = os.environ.get("PROBE_BIN")
    if p and os.access(p, os.X_OK):
        return p
    go = shutil.which("go")
    if not go or not os.path.isdir("/usr/share/gocode/src/google.golang.org/grpc"):
        raise unittest.SkipTest("go or golang-google-grpc-dev not installed")
    out = os.path.join(tempfile.gettempdir(), "inferd-it-probe")
    env = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode",
               GOCACHE=os.environ.get("GOCACHE", os.path.join(tempfile.gettempdir(), "inferd-it-gocache")))
    subprocess.run([go, "build", "-o", out, "./test/integration/probe"], cwd=H.REPO, env=env, check=True,
                   timeout=300)
    return out


class ProbeTest(H.ServerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.probe = probe_bin()
        super().setUpClass()

    def run_probe(self, *args):
        p = subprocess.run([self.probe] + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
        return p.returncode, p.stdout.decode(errors="replace")

    def test_liveness_serving(self):
        rc, out = self.run_probe("-addr", self.server.target, "-service", "liveness")
        self.assertEqual(rc, 0, out)
        self.assertIn("SERVING", out)

    def test_liveness_on_system_port(self):
        rc, out = self.run_probe("-addr", self.server.system_target, "-service", "liveness")
        self.assertEqual(rc, 0, out)

    def test_readiness_serving(self):
        for svc in ("readiness", "", "inferd.v1.Inference"):
            with self.subTest(service=svc):
                rc, out = self.run_probe("-addr", self.server.target, "-service", svc)
                self.assertEqual(rc, 0, out)

    def test_readiness_not_serving_while_draining(self):
        # inside the shutdown delay the listeners still answer, with NOT_SERVING
        s0 = self.start_extra("--shutdown-delay", "3s", "--drain-timeout", "1s")
        s0.signal()
        time.sleep(0.2)
        for svc in ("readiness", "", "inferd.v1.Inference"):
            with self.subTest(service=svc):
                rc, out = self.run_probe("-addr", s0.target, "-service", svc)
                self.assertNotEqual(rc, 0, out)
                self.assertIn("NOT_SERVING", out)


    def test_unknown_service(self):
        rc, out = self.run_probe("-addr", self.server.target, "-service", "nope")
        self.assertNotEqual(rc, 0, out)
        self.assertIn("NotFound", out)

    def test_user_agent_seen(self):
        # kubelet's user-agent reaches the server (logged at debug for probes, or at least accepted)
        rc, out = self.run_probe("-addr", self.server.target, "-service", "liveness", "-kube-version", "1.29")
        self.assertEqual(rc, 0, out)

    def test_nothing_listening(self):
        rc, out = self.run_probe("-addr", "127.0.0.1:%d" % H.free_port(), "-service", "liveness")
        self.assertNotEqual(rc, 0, out)


def check_body(service):
    return H.grpc_frame(H.health_request(service))


class H2loadTest(H.ServerTestCase):
    @classmethod
    def setUpClass(cls):
        H.need("h2load")
        super().setUpClass()

    def h2load(self, port, body_path, n=5000, c=4, m=10):
        args = ["h2load", "-n", str(n), "-c", str(c), "-m", str(m), "-t", "1", "-d", body_path,
                "-H", "content-type: application/grpc", "-H", "te: trailers",
                "http://127.0.0.1:%d%s" % (port, H.CHECK)]
        p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        return p.returncode, p.stdout.decode(errors="replace")

    def test_h2load_check_no_failures(self):
        with tempfile.NamedTemporaryFile(suffix=".grpc") as f:
            f.write(check_body("liveness"))
            f.flush()
            # the same request once by hand: it must be grpc-status 0 (h2load counts HTTP status only)
            c, st = H.h2_unary(self.server.grpc_port, H.CHECK, H.health_request("liveness"))
            self.assertEqual(H.grpc_status_of(st), 0)
            for port in (self.server.grpc_port, self.server.system_port):
                with self.subTest(port=port):
                    n = 5000
                    rc, out = self.h2load(port, f.name, n=n)
                    self.assertEqual(rc, 0, out)
                    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                                  r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
                    self.assertTrue(m, out)
                    total, started, done, ok, failed, errored, tmo = map(int, m.groups())
                    self.assertEqual((done, ok, failed, errored, tmo), (n, n, 0, 0, 0), out)
                    self.assertRegex(out, r"status codes: %d 2xx, 0 3xx, 0 4xx, 0 5xx" % n)
                    self.assertIn("Application protocol: h2c", out)
        # the server counted them all as OK
        rc, body, err = H.curl("http://%s/metrics" % self.server.target)
        lines = [l for l in body.decode().splitlines()
                 if "grpc_server_handled_total" in l and 'grpc_method="Check"' in l and not l.startswith("#")]
        ok = sum(float(l.rsplit(" ", 1)[1]) for l in lines if re.search(r'grpc_code="(OK|0)"', l))
        self.assertGreaterEqual(ok, 2 * 5000 + 1, "\n".join(lines))
        bad = [l for l in lines if not re.search(r'grpc_code="(OK|0)"', l) and float(l.rsplit(" ", 1)[1]) > 0]
        self.assertEqual(bad, [])


if __name__ == "__main__":
    H.run_main()
