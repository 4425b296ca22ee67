"""deploy/kubernetes/: parse the manifests (Debian's python3-yaml) and check what the health model
relies on: gRPC probes on the main port with the right services, the system port scraped by
Prometheus, explicit DYN_* settings, resource requests, and a termination grace period that
covers the shutdown delay plus the drain timeout. When an inferd binary is at hand, the
manifest's environment is also fed to `inferd --print-config`, so every variable name and value
is one the real configuration accepts.

The manifest and the Containerfiles agree (no podman needed; test_image.py runs the image): the
image name is what tools/image.sh tags (inferd:VERSION), the pod's UID/GID is the image's fixed
non-root user, the container ports are the image's EXPOSE, nothing replaces the ENTRYPOINT,
and the pod keeps runAsNonRoot and a read-only root filesystem."""

import glob
import json
import os
import re
import subprocess
import unittest

import yaml

import inferd_harness as H

KDIR = os.path.join(H.REPO, "deploy", "kubernetes")
GRPC_PORT, SYSTEM_PORT = 50051, 8081
MARGIN_MIN, MARGIN_MAX = 5, 60  # seconds of grace beyond delay + drain


def seconds(v):
    """inferd's duration syntax (server/base/config.c): bare seconds or a unit suffix."""
    m = re.fullmatch(r"([0-9.]+)(ns|us|ms|s|m|h)?", v)
    if not m:
        raise AssertionError("not a duration: %r" % v)
    mult = {None: 1, "s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9, "m": 60, "h": 3600}[m.group(2)]
    return float(m.group(1)) * mult


def load_all():
    docs = []
    for path in sorted(glob.glob(os.path.join(KDIR, "*.yaml"))):
        with open(path) as f:
            for d in yaml.safe_load_all(f):
                if d:
                    docs.append((os.path.basename(path), d))
    return docs


class TestKubernetesManifests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.docs = load_all()
        kinds = {}
        for name, d in cls.docs:
            kinds.setdefault(d["kind"], []).append(d)
        cls.kinds = kinds
        cls.dep = kinds["Deployment"][0]
        cls.pod = cls.dep["spec"]["template"]
        cls.ctr = [c for c in cls.pod["spec"]["containers"] if c["name"] == "inferd"][0]
        cls.env = {e["name"]: e.get("value") for e in cls.ctr.get("env", [])}

    def test_every_document_has_kind_and_name(self):
        self.assertGreaterEqual(len(self.docs), 3)
        for name, d in self.docs:
            with self.subTest(file=name):
                self.assertIn("apiVersion", d)
                if d["kind"] != "Kustomization":
                    self.assertEqual(d.get("metadata", {}).get("name"), "inferd")

    def test_ports(self):
        ports = {p["name"]: p["containerPort"] for p in self.ctr["ports"]}
        self.assertEqual(ports, {"grpc": GRPC_PORT, "system": SYSTEM_PORT})
        self.assertEqual(self.env["INFERD_LISTEN"].rsplit(":", 1)[1], str(GRPC_PORT))
        self.assertEqual(self.env["DYN_SYSTEM_PORT"], str(SYSTEM_PORT))

    def test_grpc_probes(self):
        want = {"livenessProbe": "liveness", "readinessProbe": "readiness"}
        for probe, service in want.items():
            with self.subTest(probe=probe):
                p = self.ctr[probe]
                self.assertEqual(p["grpc"], {"port": GRPC_PORT, "service": service})
                self.assertNotIn("httpGet", p)
                self.assertNotIn("exec", p)
                self.assertGreaterEqual(p.get("timeoutSeconds", 1), 1)
        s = self.ctr["startupProbe"]
        self.assertEqual(s["grpc"]["port"], GRPC_PORT)
        self.assertIn(s["grpc"].get("service", ""), ("readiness", "liveness", ""))
        # a start-up budget long enough to load a model
        self.assertGreaterEqual(s["failureThreshold"] * s["periodSeconds"], 60)
        # liveness must never follow the engine (restart loops)
        self.assertNotEqual(self.ctr["livenessProbe"]["grpc"]["service"], "readiness")
        # readiness reacts quickly enough to matter next to the canary cadence
        r = self.ctr["readinessProbe"]
        self.assertLessEqual(r["periodSeconds"] * r.get("failureThreshold", 3),
                             seconds(self.env["DYN_CANARY_WAIT_TIME"]) + seconds(self.env["DYN_HEALTH_CHECK_REQUEST_TIMEOUT"]))

    def test_termination_grace_covers_drain(self):
        delay = seconds(self.env["INFERD_SHUTDOWN_DELAY"])
        drain = seconds(self.env["INFERD_DRAIN_TIMEOUT"])
        grace = self.pod["spec"]["terminationGracePeriodSeconds"]
        self.assertGreaterEqual(grace, delay + drain + MARGIN_MIN,
                                "SIGKILL would cut the drain short: %s < %s + %s + %s" % (grace, delay, drain, MARGIN_MIN))
        self.assertLessEqual(grace, delay + drain + MARGIN_MAX)

    def test_env_explicit_and_strings(self):
        for name in ("DYN_SYSTEM_HOST", "DYN_SYSTEM_PORT", "DYN_SYSTEM_HEALTH_PATH", "DYN_SYSTEM_LIVE_PATH",
                     "DYN_SYSTEM_STARTING_HEALTH_STATUS", "DYN_HEALTH_CHECK_ENABLED", "DYN_CANARY_WAIT_TIME",
                     "DYN_HEALTH_CHECK_REQUEST_TIMEOUT", "DYN_HEALTH_CHECK_BUSY_STALL", "DYN_LOG",
                     "DYN_METRICS_PREFIX", "INFERD_SHUTDOWN_DELAY", "INFERD_DRAIN_TIMEOUT"):
            with self.subTest(var=name):
                self.assertIn(name, self.env)
        for name, value in self.env.items():
            with self.subTest(var=name):
                self.assertIsInstance(value, str, "Kubernetes env values must be strings")
        self.assertIn(self.env.get("INFERD_ENABLE_FAULT_INJECTION", "false"), ("false", "0", "no", "off"))

    def test_prometheus(self):
        ann = self.pod["metadata"]["annotations"]
        self.assertEqual(ann["prometheus.io/scrape"], "true")
        self.assertEqual(ann["prometheus.io/port"], str(SYSTEM_PORT))
        self.assertEqual(ann["prometheus.io/path"], "/metrics")
        pm = self.kinds["PodMonitor"][0]["spec"]
        self.assertEqual(pm["selector"]["matchLabels"], self.dep["spec"]["selector"]["matchLabels"])
        self.assertEqual(pm["podMetricsEndpoints"][0]["port"], "system")
        self.assertEqual(pm["podMetricsEndpoints"][0]["path"], "/metrics")

    def test_resources(self):
        req = self.ctr["resources"]["requests"]
        self.assertIn("cpu", req)
        self.assertIn("memory", req)

    def test_service_and_selectors(self):
        labels = self.pod["metadata"]["labels"]
        for k, v in self.dep["spec"]["selector"]["matchLabels"].items():
            self.assertEqual(labels.get(k), v)
        svc = self.kinds["Service"][0]["spec"]
        for k, v in svc["selector"].items():
            self.assertEqual(labels.get(k), v)
        ports = {p["name"]: (p["port"], p["targetPort"]) for p in svc["ports"]}
        self.assertEqual(ports["grpc"], (GRPC_PORT, "grpc"))
        self.assertEqual(ports["system"], (SYSTEM_PORT, "system"))

    def test_kustomization_lists_existing_files(self):
        k = self.kinds["Kustomization"][0]
        for r in k["resources"]:
            self.assertTrue(os.path.exists(os.path.join(KDIR, r)), r)

    def test_inferd_accepts_the_environment(self):
        binary = H.inferd_bin()  # skips when there is none
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DYN_", "INFERD_"))}
        env.update(self.env)
        p = subprocess.run([binary, "--print-config"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=30)
        out = p.stdout.decode()
        self.assertEqual(p.returncode, 0, out)
        for name in self.env:
            with self.subTest(var=name):
                self.assertRegex(out, r"#\s*%s\b" % re.escape(name), "inferd did not take %s:\n%s" % (name, out))


def containerfile_stages(path):
    """[(FROM line, [(INSTRUCTION, args)])] with continuation lines joined, and the ARGs
    declared before the first FROM."""
    with open(path) as f:
        text = re.sub(r"\\\n", " ", f.read())
    stages, head = [], []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        ins, _, args = line.partition(" ")
        ins = ins.upper()
        if ins == "FROM":
            stages.append((args.strip(), []))
        elif stages:
            stages[-1][1].append((ins, args.strip()))
        else:
            head.append((ins, args.strip()))
    return head, stages


def arg_default(instructions, name):
    for ins, args in instructions:
        if ins == "ARG" and args.startswith(name + "="):
            return args.split("=", 1)[1].strip('"')
    return None


class TestManifestAndImage(unittest.TestCase):
    FILES = ("Containerfile", "Containerfile.cuda")

    @classmethod
    def setUpClass(cls):
        dep = [d for _, d in load_all() if d["kind"] == "Deployment"][0]
        cls.pod = dep["spec"]["template"]["spec"]
        cls.ctr = [c for c in cls.pod["containers"] if c["name"] == "inferd"][0]
        cls.stages = {f: containerfile_stages(os.path.join(H.REPO, f)) for f in cls.FILES}

    def runtime(self, f):
        return self.stages[f][1][-1][1]

    def test_two_stages_built_from_the_project_scripts(self):
        for f in self.FILES:
            with self.subTest(file=f):
                head, stages = self.stages[f]
                self.assertEqual(len(stages), 2)
                self.assertRegex(stages[0][0], r"\sAS build$")
                build = " ".join(a for i, a in stages[0][1] if i == "RUN")
                self.assertIn("tools/deps.sh build", build)
                self.assertIn("CMAKE_BUILD_TYPE=Release", build)
                self.assertIn("cmake --install", build)
                self.assertIn("tools/runtime-packages.sh", build)
                run = " ".join(a for i, a in self.runtime(f) if i == "RUN")
                self.assertIn("ldd", run, "the runtime stage must check that every library loads")
                self.assertNotRegex(run, r"-dev\b|build-essential|gcc")
        head = self.stages["Containerfile"][0]
        self.assertEqual(arg_default(head, "BASE_IMAGE"), "debian:bookworm-slim")

    def test_entrypoint_and_no_command(self):
        for f in self.FILES:
            with self.subTest(file=f):
                rt = dict(self.runtime(f))
                self.assertEqual(json.loads(rt["ENTRYPOINT"]), ["inferd"], "exec form, no shell as PID 1")
                self.assertNotIn("CMD", rt, "Kubernetes args would replace a CMD; flags go in args")
                self.assertNotIn("VOLUME", rt)
        self.assertNotIn("command", self.ctr, "command replaces the image's ENTRYPOINT")
        args = self.ctr.get("args", [])
        if args:
            self.assertTrue(str(args[0]).startswith("--"), "args are inferd flags, not a command: %r" % args)

    def test_user_is_the_pods_non_root_uid(self):
        sc = self.pod["securityContext"]
        self.assertTrue(sc["runAsNonRoot"])
        for f in self.FILES:
            with self.subTest(file=f):
                rt = self.runtime(f)
                uid = arg_default(rt, "INFERD_UID")
                self.assertIsNotNone(uid)
                self.assertEqual(dict(rt)["USER"], "${INFERD_UID}:${INFERD_UID}")
                self.assertNotEqual(int(uid), 0)
                self.assertEqual((sc["runAsUser"], sc["runAsGroup"]), (int(uid), int(uid)))
        csc = self.ctr["securityContext"]
        self.assertTrue(csc["readOnlyRootFilesystem"])
        self.assertFalse(csc["allowPrivilegeEscalation"])

    def test_ports_are_the_exposed_ones(self):
        ports = {p["containerPort"] for p in self.ctr["ports"]}
        for f in self.FILES:
            with self.subTest(file=f):
                exposed = {int(p.split("/")[0]) for p in dict(self.runtime(f))["EXPOSE"].split()}
                self.assertEqual(exposed, ports)

    def test_mounts_have_volumes(self):
        vols = {v["name"] for v in self.pod.get("volumes", [])}
        for m in self.ctr.get("volumeMounts", []):
            self.assertIn(m["name"], vols)

    def test_image_is_what_image_sh_tags(self):
        binary = H.inferd_bin()  # skips when there is none
        out = subprocess.run([binary, "--version"], stdout=subprocess.PIPE, timeout=30).stdout.decode()
        version = out.split()[1]
        self.assertEqual(self.ctr["image"], "inferd:" + version,
                         "tools/image.sh tags inferd:$(inferd --version); the manifest runs another name")


if __name__ == "__main__":
    H.run_main()
