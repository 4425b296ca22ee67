"""The container image (issue 14): tools/image.sh builds it with podman from this source tree,
then it runs as Kubernetes would run deploy/kubernetes/deployment.yaml.

- Image: tagged inferd:VERSION (what `inferd --version` prints, the name the manifest runs);
  ENTRYPOINT ["inferd"] with no CMD (Kubernetes `args` append flags); a fixed numeric non-root
  UID equal to the manifest's runAsUser/runAsGroup; EXPOSE 50051 and 8081, the manifest's
  ports; no compiler, no -dev package; the size, printed.
- Run (one container, root filesystem read-only with no tmpfs anywhere, no volume, no
  --model: the built-in model): the grpc-go probe (kubelet's) answers SERVING on liveness and
  readiness, /metrics is served, Generate streams tokens, inferctl inside the image works;
  inferd is PID 1 in the container and runs as the non-root UID.
- Volume and signal (a second container with the manifest's own environment): a model from a
  read-only volume at /models; a Generate in flight when `podman stop` sends SIGTERM finishes
  with every token, and inferd exits 0 within the manifest's terminationGracePeriodSeconds.

Skipped (ctest shows "Skipped") only where podman is missing or cannot run a container here.
Containers use the host network (`tools/image.sh --run-flags`) and listen on 127.0.0.1 only.
"""

import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.request

import grpc
import yaml

import inferd_harness as H

IMAGE_SH = os.path.join(H.REPO, "tools", "image.sh")
DEPLOYMENT = os.path.join(H.REPO, "deploy", "kubernetes", "deployment.yaml")
SKIP = "SKIP_IMAGE_TEST: "  # ctest's SKIP_REGULAR_EXPRESSION (image.cmake)
BUILD_TIMEOUT = 1800
MODEL_IN_IMAGE = "/usr/local/share/inferd/default.bin"


def sh(*argv, timeout=60, check=True):
    p = subprocess.run(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    if check and p.returncode:
        raise AssertionError("%s exited %d:\n%s%s" % (" ".join(argv), p.returncode, out[-3000:], err[-6000:]))
    return p.returncode, out, err


def podman_flags():
    return os.environ.get("INFERD_PODMAN_FLAGS", "--runtime runc --cgroup-manager=cgroupfs").split()


def podman(*args, **kw):
    return sh("podman", *podman_flags(), *args, **kw)


def manifest():
    with open(DEPLOYMENT) as f:
        dep = [d for d in yaml.safe_load_all(f) if d and d.get("kind") == "Deployment"][0]
    pod = dep["spec"]["template"]["spec"]
    ctr = [c for c in pod["containers"] if c["name"] == "inferd"][0]
    return pod, ctr


def http_get(url, timeout=5):
    req = urllib.request.Request(url)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=timeout) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read().decode(errors="replace")


class Container:
    """One detached container of the image, removed at the end."""

    def __init__(self, tc, image, podman_args, inferd_args, name):
        self.name = "inferd-it-%s-%d" % (name, os.getpid())
        podman("rm", "-f", "-i", self.name, check=False)
        self.grpc_port, self.system_port = H.free_ports(2)
        argv = ["run", "-d", "--name", self.name] + tc.run_flags + list(podman_args) + [image]
        argv += ["--listen", "127.0.0.1:%d" % self.grpc_port, "--system-host", "127.0.0.1",
                 "--system-port", str(self.system_port)] + list(inferd_args)
        podman(*argv)
        tc.addCleanup(podman, "rm", "-f", "-i", "-t", "0", self.name, check=False)

    @property
    def target(self):
        return "127.0.0.1:%d" % self.grpc_port

    def logs(self):
        _, out, err = podman("logs", self.name, check=False)
        return out + err

    def inspect(self):
        return json.loads(podman("container", "inspect", self.name)[1])[0]

    def wait_ready(self, timeout=60):
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            st = self.inspect()["State"]
            if not st.get("Running"):
                raise AssertionError("container exited (%s):\n%s" % (st.get("ExitCode"), self.logs()[-4000:]))
            try:
                code, _, body = http_get("http://127.0.0.1:%d/health" % self.system_port, timeout=2)
                if code == 200:
                    return
                last = body
            except OSError as e:
                last = e
            time.sleep(0.2)
        raise AssertionError("not ready within %ss (last /health: %r):\n%s" % (timeout, last, self.logs()[-4000:]))


class TestImage(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not shutil.which("podman"):
            raise unittest.SkipTest(SKIP + "podman is not installed (tools/deps.sh test installs it)")
        cls.run_flags = sh(IMAGE_SH, "--run-flags")[1].split()
        rc, out, err = podman("info", check=False)
        if rc:
            raise unittest.SkipTest(SKIP + "podman does not work here: " + (err or out).strip()[-500:])
        # The base image first (pulled, or made with debootstrap), so that "podman cannot run a
        # container here" is told apart from a broken image.
        _, out, err = sh(IMAGE_SH, "--base-only", timeout=900)
        base = out.strip().splitlines()[-1]
        rc, out, err = podman("run", "--rm", *cls.run_flags, base, "true", check=False, timeout=120)
        if rc:
            raise unittest.SkipTest(SKIP + "podman cannot run a container here: " + (err or out).strip()[-500:])
        t0 = time.monotonic()
        with tempfile.NamedTemporaryFile(prefix="inferd-iid-") as iid:
            rc, out, err = sh(IMAGE_SH, "--iidfile", iid.name, timeout=BUILD_TIMEOUT, check=False)
            cls.build_seconds = time.monotonic() - t0
            if rc:
                raise AssertionError("tools/image.sh failed (%d):\n%s" % (rc, err[-12000:]))
            cls.image_id = iid.read().decode().strip()
        cls.image = out.strip().splitlines()[-1]  # the tag; containers run cls.image_id
        print("\nimage %s built in %.0f s; %s" % (cls.image, cls.build_seconds,
                                                    [l for l in err.splitlines() if "MB" in l][-1:]), flush=True)
        cls.config = json.loads(podman("image", "inspect", cls.image_id)[1])[0]
        cls.pod, cls.ctr = manifest()

    # ------------------------------------------------------------------ the image
    def test_tag_is_the_version_the_manifest_runs(self):
        _, out, _ = sh(H.inferd_bin(), "--version")
        version = out.split()[1]
        self.assertEqual(self.image, "inferd:" + version)
        self.assertEqual(self.ctr["image"], self.image, "deployment.yaml runs another image than tools/image.sh builds")
        _, out, _ = podman("run", "--rm", *self.run_flags, self.image_id, "--version")
        self.assertEqual(out.strip(), "inferd " + version)

    def test_entrypoint_user_ports(self):
        c = self.config["Config"]
        self.assertEqual(c.get("Entrypoint"), ["inferd"])
        self.assertFalse(c.get("Cmd"), "a CMD would be replaced by Kubernetes args; flags belong in args")
        user = c.get("User", "")
        self.assertRegex(user, r"^[0-9]+:[0-9]+$", "runAsNonRoot needs a numeric UID")
        uid, gid = (int(x) for x in user.split(":"))
        self.assertNotEqual(uid, 0)
        sc = self.pod.get("securityContext", {})
        self.assertEqual((sc.get("runAsUser"), sc.get("runAsGroup")), (uid, gid))
        self.assertTrue(sc.get("runAsNonRoot"))
        exposed = set(c.get("ExposedPorts", {}))
        ports = {"%d/tcp" % p["containerPort"] for p in self.ctr["ports"]}
        self.assertEqual(exposed, {"50051/tcp", "8081/tcp"})
        self.assertEqual(exposed, ports)

    def test_no_build_tools(self):
        _, out, _ = podman("run", "--rm", *self.run_flags, "--entrypoint", "dpkg-query", self.image_id,
                           "-W", "-f", "${Package}\\n")
        pkgs = set(out.split())
        self.assertIn("libnghttp2-14", pkgs)
        bad = sorted(p for p in pkgs if p.endswith("-dev") or p in (
            "gcc", "gcc-12", "cpp", "g++", "binutils", "make", "cmake", "build-essential", "protobuf-c-compiler"))
        self.assertEqual(bad, [], "build tools in the runtime image")
        size = self.config["Size"]
        print("\nimage size: %.1f MB, %d packages" % (size / 1e6, len(pkgs)), flush=True)
        self.assertLess(size, 200e6)

    # ------------------------------------------------------------------ running it
    def test_run_read_only_default_model(self):
        c = Container(self, self.image_id, ["--read-only", "--read-only-tmpfs=false"], [], "run")
        c.wait_ready()
        info = c.inspect()
        self.assertTrue(info["HostConfig"]["ReadonlyRootfs"])
        self.assertEqual([m for m in info.get("Mounts", [])], [], "no volume, no tmpfs")
        rc, _, _ = podman("exec", c.name, "sh", "-c", "echo x > /probe-write", check=False)
        self.assertNotEqual(rc, 0, "the root filesystem is writable: the test proves nothing")
        self.assertIn("serving the built-in model " + MODEL_IN_IMAGE, c.logs())

        # kubelet's probes
        probe = os.environ.get("PROBE_BIN")
        if not probe:
            self.fail("PROBE_BIN not set: the grpc-go probe was not built (golang-google-grpc-dev)")
        for service in ("liveness", "readiness"):
            with self.subTest(probe=service):
                p = subprocess.run([probe, "-addr", c.target, "-service", service, "-timeout", "2s"],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
                self.assertEqual(p.returncode, 0, p.stdout.decode(errors="replace"))
                self.assertIn("SERVING", p.stdout.decode())

        code, ctype, body = http_get("http://127.0.0.1:%d/metrics" % c.system_port)
        self.assertEqual(code, 200)
        self.assertIn("text/plain", ctype)
        self.assertRegex(body, r"(?m)^inferd_uptime_seconds ")

        # Generate answers (grpcio); that tokens stream, arriving while the request still runs,
        # is shown by test_volume_model_and_sigterm_drain
        ch = H.grpc_channel(c.target)
        try:
            msgs = list(H.server_stream(ch, H.GENERATE)(H.generate_request("Once upon a time", max_tokens=16,
                                                                         ignore_eos=True), timeout=30))
        finally:
            ch.close()
        resps = [H.generate_response(m) for m in msgs]
        self.assertEqual(sum(len(r["token_ids"]) for r in resps), 16)
        self.assertEqual(resps[-1]["finish_reason"], H.FINISH_LENGTH)

        # inferctl is in the image and works
        _, out, err = podman("exec", c.name, "inferctl", "--addr", c.target, "generate", "--max-tokens", "5",
                             "--ignore-eos", "hello")
        self.assertRegex(err, r"finish length, .*completion 5 tokens")

        # PID 1 is inferd itself, as the fixed non-root UID
        pid = info["State"]["Pid"]
        with open("/proc/%d/status" % pid) as f:
            status = f.read()
        with open("/proc/%d/comm" % pid) as f:
            self.assertEqual(f.read().strip(), "inferd")
        self.assertRegex(status, r"(?m)^NSpid:\s+%d\s+1$" % pid)
        uid = int(self.config["Config"]["User"].split(":")[0])
        uids = re.search(r"(?m)^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", status).groups()
        self.assertEqual([int(u) for u in uids], [uid] * 4)

    def test_volume_model_and_sigterm_drain(self):
        long_model, long_tok = os.environ.get("INFERD_LONG_MODEL"), os.environ.get("INFERD_LONG_TOKENIZER")
        if not (long_model and os.path.exists(long_model)):
            self.fail("INFERD_LONG_MODEL not built (test/integration/inference.cmake)")
        models = tempfile.mkdtemp(prefix="inferd-models-")
        self.addCleanup(shutil.rmtree, models, True)
        shutil.copy(long_model, os.path.join(models, "long.bin"))
        shutil.copy(long_tok, os.path.join(models, "long.tokenizer.bin"))
        os.chmod(models, 0o755)
        for f in os.listdir(models):
            os.chmod(os.path.join(models, f), 0o644)
        env = []
        for e in self.ctr["env"]:  # the manifest's own settings; the flags below override listeners
            env += ["-e", "%s=%s" % (e["name"], e["value"])]
        grace = self.pod["terminationGracePeriodSeconds"]
        c = Container(self, self.image_id, ["--read-only", "--read-only-tmpfs=false", "-v", models + ":/models:ro"] + env,
                      ["--model", "/models/long.bin", "--tokenizer", "/models/long.tokenizer.bin"], "stop")
        c.wait_ready(timeout=90)
        self.assertNotIn("built-in model", c.logs())

        # A Generate in flight when SIGTERM arrives. Long enough to be running when `podman
        # stop` is sent, short enough to end inside the manifest's drain timeout on a loaded
        # 2-core machine (a few hundred tokens/s on a quiet one).
        tokens = 400
        got, done = [], {}
        first = threading.Event()

        def stream():
            ch = H.grpc_channel(c.target)
            try:
                for m in H.server_stream(ch, H.GENERATE)(H.generate_request(token_ids=[1], max_tokens=tokens,
                                                                             ignore_eos=True), timeout=grace + 30):
                    got.append(H.generate_response(m))
                    first.set()
                done["ok"] = True
            except grpc.RpcError as e:
                done["error"] = "%s: %s" % (e.code(), e.details())
            except Exception as e:  # reported below, not lost in the thread
                done["error"] = repr(e)
            finally:
                ch.close()
                first.set()

        th = threading.Thread(target=stream, daemon=True)
        th.start()
        self.assertTrue(first.wait(30), "no first token")
        t0 = time.monotonic()
        # a token arrived while the stream still runs: it streams, and SIGTERM finds it in flight
        self.assertEqual(done, {}, "the stream ended before SIGTERM: it tests no drain")
        podman("stop", "-t", str(grace), c.name, timeout=grace + 30)
        elapsed = time.monotonic() - t0
        th.join(30)
        state = c.inspect()["State"]
        logs = c.logs()
        self.assertEqual(state["ExitCode"], 0, logs[-4000:])
        self.assertLess(elapsed, grace, "podman stop needed SIGKILL: SIGTERM did not reach inferd")
        self.assertIn("SIGTERM", logs)
        self.assertEqual(done.get("error"), None)
        self.assertTrue(done.get("ok"))
        self.assertEqual(sum(len(r["token_ids"]) for r in got), tokens, "the in-flight stream was cut short")
        self.assertEqual(got[-1]["finish_reason"], H.FINISH_LENGTH)
        print("\npodman stop: exit 0 after %.1f s (grace %d s); the stream got all %d tokens" %
              (elapsed, grace, tokens), flush=True)


if __name__ == "__main__":
    H.run_main()
