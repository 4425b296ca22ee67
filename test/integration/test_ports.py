#!/usr/bin/python3
"""Which port serves what (issue 13, item 0): the system port is a status server (Dynamo's
system status server): /live, /health, /metrics, grpc.health.v1 and /debug/fault where enabled,
nothing else. Inference and reflection there answer UNIMPLEMENTED; the main port serves all."""

import os
import subprocess

import grpc

import inferd_harness as H

REFLECTION = ("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
              "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
MODEL_INFO = "/inferd.v1.Inference/GetModelInfo"
GENERATE_STREAM = "/inferd.v1.Inference/GenerateStream"
LIST_SERVICES = H.pb_string(7, "")  # ServerReflectionRequest{list_services: ""}


class SystemPortTest(H.ServerTestCase):
    def channel(self, target):
        ch = H.grpc_channel(target)
        self.addCleanup(ch.close)
        return ch

    def refused(self, fn):
        with self.assertRaises(grpc.RpcError) as cm:
            fn()
        return cm.exception

    def test_inference_unimplemented_on_system_port(self):
        ch = self.channel(self.server.system_target)
        gen = H.server_stream(ch, H.GENERATE)
        e = self.refused(lambda: list(gen(H.generate_request(prompt="Once", max_tokens=4), timeout=10)))
        self.assertEqual(e.code(), grpc.StatusCode.UNIMPLEMENTED, e.details())
        self.assertIn("system port", e.details())
        e = self.refused(lambda: H.unary(ch, MODEL_INFO)(b"", timeout=10))
        self.assertEqual(e.code(), grpc.StatusCode.UNIMPLEMENTED, e.details())
        bidi = ch.stream_stream(GENERATE_STREAM, request_serializer=None, response_deserializer=None)
        e = self.refused(lambda: list(bidi(iter([H.generate_request(prompt="Once", max_tokens=4)]),
                                           timeout=10)))
        self.assertEqual(e.code(), grpc.StatusCode.UNIMPLEMENTED, e.details())

    def test_reflection_unimplemented_on_system_port(self):
        ch = self.channel(self.server.system_target)
        for path in REFLECTION:
            with self.subTest(path=path):
                m = ch.stream_stream(path, request_serializer=None, response_deserializer=None)
                e = self.refused(lambda: list(m(iter([LIST_SERVICES]), timeout=10)))
                self.assertEqual(e.code(), grpc.StatusCode.UNIMPLEMENTED, e.details())

    def test_main_port_serves_inference_and_reflection(self):
        ch = self.channel(self.server.target)
        out = list(H.server_stream(ch, H.GENERATE)(H.generate_request(prompt="Once", max_tokens=4),
                                                  timeout=30))
        self.assertTrue(out)
        for path in REFLECTION:
            m = ch.stream_stream(path, request_serializer=None, response_deserializer=None)
            self.assertEqual(len(list(m(iter([LIST_SERVICES]), timeout=10))), 1)

    def test_health_served_on_system_port(self):
        ch = self.channel(self.server.system_target)
        self.assertEqual(H.health_status(H.unary(ch, H.CHECK)(H.health_request("readiness"), timeout=5)),
                         H.SERVING)
        self.assertIn("liveness", H.health_list(H.unary(ch, H.LIST)(b"", timeout=5)))
        first = next(H.server_stream(ch, H.WATCH)(H.health_request("liveness"), timeout=5))
        self.assertEqual(H.health_status(first), H.SERVING)

    def test_http_on_system_port(self):
        for path, want in (("/live", 200), ("/health", 200), ("/metrics", 200), ("/v1/models", 404)):
            with self.subTest(path=path):
                rc, out, err = H.curl("-o", "/dev/null", "-w", "%{http_code}",
                                      "http://%s%s" % (self.server.system_target, path))
                self.assertEqual((rc, out.decode()), (0, str(want)), err)
        # the same over HTTP/2 (prior knowledge)
        rc, out, err = H.curl("--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}",
                              "http://%s/live" % self.server.system_target)
        self.assertEqual((rc, out.decode()), (0, "200"), err)

    def test_grpc_go_reflection_client_refused_on_system_port(self):
        tool = os.environ.get("GRPCURL_LIKE_BIN")
        if not tool or not os.path.exists(tool):
            self.skipTest("grpcurl_like was not built (no Go toolchain)")

        def run(target):
            return subprocess.run([tool, "-addr", target, "-timeout", "10s", "list"],
                                  capture_output=True, text=True, timeout=30)
        p = run(self.server.system_target)
        self.assertNotEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("Unimplemented", p.stdout + p.stderr)
        p = run(self.server.target)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("inferd.v1.Inference", p.stdout.split())


if __name__ == "__main__":
    H.run_main()
