#!/usr/bin/python3
"""What `grpcurl -plaintext HOST:PORT list` and `describe` do, with a Go reflection client
(test/reflection/grpcurl_like, grpc-go from Debian) against a live server: no .proto files."""

import os
import subprocess
import unittest

import inferd_harness as H


class GrpcurlLikeTest(H.ServerTestCase):
    def run_tool(self, *args):
        tool = os.environ.get("GRPCURL_LIKE_BIN")
        if not tool or not os.path.exists(tool):
            self.skipTest("grpcurl_like was not built (no Go toolchain)")
        p = subprocess.run([tool, "-addr", self.server.target, "-timeout", "10s", *args],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        return p.stdout

    def test_list(self):
        for v1 in ([], ["-v1"]):
            out = self.run_tool(*v1, "list")
            for svc in ("grpc.health.v1.Health", "inferd.v1.Inference",
                        "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"):
                self.assertIn(svc, out.split())

    def test_list_service_methods(self):
        out = self.run_tool("list", "inferd.v1.Inference")
        for m in ("Generate", "GenerateStream", "GetModelInfo"):
            self.assertIn("inferd.v1.Inference." + m, out)

    def test_describe(self):
        out = self.run_tool("describe", "inferd.v1.GenerateRequest")
        self.assertIn("token_ids", out)
        out = self.run_tool("describe", "grpc.health.v1.Health")
        self.assertIn("Watch", out)
        self.run_tool("describe")  # every service, resolved with its imports


if __name__ == "__main__":
    unittest.main()
