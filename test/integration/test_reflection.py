#!/usr/bin/python3
"""Server reflection (grpc.reflection.v1 and v1alpha) from grpcio, messages by hand,
descriptors checked with google.protobuf's descriptor_pb2 (python3-protobuf)."""

import grpc
from google.protobuf import descriptor_pb2

import inferd_harness as H

PATHS = {
    "v1": "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "v1alpha": "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
}


def req(kind, value):
    # ServerReflectionRequest: host=1, file_by_filename=3, file_containing_symbol=4, list_services=7
    field = {"file_by_filename": 3, "file_containing_symbol": 4, "list_services": 7}[kind]
    return H.pb_string(field, value)


def parse_resp(buf):
    """-> dict(files=[FileDescriptorProto], services=[name], error=(code, message) or None)"""
    out = {"files": [], "services": [], "error": None}
    for f, wt, v in H.pb_fields(buf):
        if f == 4:  # file_descriptor_response
            for ff, _, fv in H.pb_fields(v):
                if ff == 1:
                    fd = descriptor_pb2.FileDescriptorProto()
                    fd.ParseFromString(fv)
                    out["files"].append(fd)
        elif f == 6:  # list_services_response
            for ff, _, sv in H.pb_fields(v):
                if ff == 1:
                    for sf, _, name in H.pb_fields(sv):
                        if sf == 1:
                            out["services"].append(name.decode())
        elif f == 7:  # error_response
            code, msg = 0, ""
            for ef, _, ev in H.pb_fields(v):
                if ef == 1:
                    code = ev
                elif ef == 2:
                    msg = ev.decode()
            out["error"] = (code, msg)
    return out


class ReflectionTest(H.ServerTestCase):
    def setUp(self):
        self.ch = H.grpc_channel(self.server.target)
        self.addCleanup(self.ch.close)

    def ask(self, version, *requests):
        m = self.ch.stream_stream(PATHS[version], request_serializer=None, response_deserializer=None)
        return [parse_resp(r) for r in m(iter(list(requests)), timeout=5)]

    def test_list_services(self):
        for v in PATHS:
            with self.subTest(version=v):
                (r,) = self.ask(v, req("list_services", "*"))
                for svc in ("grpc.health.v1.Health", "inferd.v1.Inference",
                            "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"):
                    self.assertIn(svc, r["services"])

    def test_inference_contract(self):
        (r,) = self.ask("v1", req("file_containing_symbol", "inferd.v1.Inference"))
        self.assertIsNone(r["error"])
        fd = next(f for f in r["files"] if f.package == "inferd.v1")
        svc = {s.name: s for s in fd.service}["Inference"]
        methods = {m.name: (m.client_streaming, m.server_streaming) for m in svc.method}
        self.assertEqual(methods, {"Generate": (False, True), "GenerateStream": (True, True),
                                   "GetModelInfo": (False, False), "Tokenize": (False, False)})
        msgs = {m.name: {f.name: f.number for f in m.field} for m in fd.message_type}
        # DESIGN.md's names and numbers are a contract: they must all be there (more may follow)
        want = {
            "GenerateRequest": {"request_id": 1, "model": 2, "token_ids": 3, "prompt": 4, "sampling": 5, "stop": 6,
                                "messages": 7},
            "GenerateResponse": {"request_id": 1, "token_ids": 2, "text": 3, "finish_reason": 4, "usage": 5},
            "SamplingOptions": {"temperature": 1, "top_p": 2, "top_k": 3, "seed": 4},
            "StopConditions": {"max_tokens": 1, "stop_token_ids": 2, "ignore_eos": 3, "stop": 4},
            "ChatMessage": {"role": 1, "content": 2},
            "Usage": {"prompt_tokens": 1, "completion_tokens": 2},
            "ModelInfoRequest": {"model": 1},
            "ModelInfo": {"name": 1, "vocab_size": 2, "max_seq_len": 3, "bos_token_id": 4, "eos_token_id": 5,
                          "device": 6, "parameters": 7, "architecture": 8, "quantization": 9,
                          "chat_template": 10, "context_size": 11, "eog_token_ids": 12},
            "TokenizeRequest": {"model": 1, "prompt": 2, "messages": 3},
            "TokenizeResponse": {"token_ids": 1},
        }
        for name, fields in want.items():
            with self.subTest(message=name):
                self.assertEqual({k: msgs[name].get(k) for k in fields}, fields)

    def test_symbol_forms(self):
        for sym in ("grpc.health.v1.Health", "grpc.health.v1.HealthCheckRequest",
                    "grpc.health.v1.Health.Check", "inferd.v1.GenerateRequest"):
            with self.subTest(symbol=sym):
                (r,) = self.ask("v1alpha", req("file_containing_symbol", sym))
                self.assertIsNone(r["error"], r)
                self.assertTrue(r["files"])

    def test_file_by_filename_and_errors_keep_stream(self):
        rs = self.ask("v1",
                      req("file_by_filename", "grpc/health/v1/health.proto"),
                      req("file_containing_symbol", "no.such.Symbol"),
                      req("file_by_filename", "no/such.proto"),
                      req("list_services", ""))
        self.assertEqual(len(rs), 4)
        self.assertIn("grpc/health/v1/health.proto", [f.name for f in rs[0]["files"]])
        self.assertEqual(rs[1]["error"][0], grpc.StatusCode.NOT_FOUND.value[0], rs[1])
        self.assertEqual(rs[2]["error"][0], grpc.StatusCode.NOT_FOUND.value[0], rs[2])
        self.assertIn("grpc.health.v1.Health", rs[3]["services"])

    def test_transitive_dependencies(self):
        # every import of a returned file is returned too (or was named before on the stream)
        (r,) = self.ask("v1", req("file_containing_symbol", "inferd.v1.Inference"))
        names = {f.name for f in r["files"]}
        for f in r["files"]:
            for dep in f.dependency:
                self.assertIn(dep, names)


if __name__ == "__main__":
    H.run_main()
