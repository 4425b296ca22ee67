#!/usr/bin/python3
"""Logs seen from outside: JSONL lines on stderr, request ids and W3C trace context from the
call's headers in the access line, per-module levels, the readable default format, and
start-up errors for bad log options."""

import json
import re
import subprocess
import time
import unittest

import grpc

import inferd_harness as H

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = "00-%s-%s-01" % (TRACE_ID, PARENT_SPAN)
RFC3339_US = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")


def json_lines(text):
    """Every stderr line as a JSON object; fails on the first line that is not one."""
    out = []
    for i, line in enumerate(text.splitlines()):
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise AssertionError("stderr line %d is not JSON (%s): %r" % (i + 1, e, line))
        if not isinstance(obj, dict):
            raise AssertionError("stderr line %d is not a JSON object: %r" % (i + 1, line))
        for k in ("time", "level", "target", "message"):
            if not isinstance(obj.get(k), str):
                raise AssertionError("stderr line %d lacks string field %r: %r" % (i + 1, k, line))
        if not RFC3339_US.match(obj["time"]):
            raise AssertionError("time %r is not RFC 3339 UTC with microseconds" % obj["time"])
        out.append(obj)
    return out


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))


class JsonlTest(unittest.TestCase):
    """One server in JSONL with access lines at debug (so health probes are logged too)."""

    @classmethod
    def setUpClass(cls):
        cls.server = H.Inferd("--log-format", "jsonl", "--log", "info,access=debug")

    @classmethod
    def tearDownClass(cls):
        s, cls.server = cls.server, None
        rc = s.stop()
        text = s.stderr()
        try:
            # every line, shutdown included, is JSON with the required fields
            lines = json_lines(text)
            assert any(l["message"] == "shutdown complete" for l in lines), text[-2000:]
        finally:
            s.returncode = rc
            s.check_clean_exit()

    def setUp(self):
        self.ch = H.grpc_channel(self.server.target)
        self.addCleanup(self.ch.close)

    def access_lines(self, request_id, timeout=5):
        """The access lines carrying request_id (waits for the logger to write them)."""
        def find():
            ls = [l for l in json_lines(self.server.stderr())
                  if l["target"] == "access" and l.get("request_id") == request_id]
            return ls or None
        return wait_for(find, timeout, "an access line with request_id %s" % request_id)

    def test_stderr_is_jsonl(self):
        lines = json_lines(self.server.stderr())
        self.assertTrue(any("listening" in l["message"] for l in lines))
        self.assertTrue({l["level"] for l in lines} <= {"trace", "debug", "info", "warn", "error"})

    def test_check_request_id_and_traceparent(self):
        md = (("x-request-id", "abc-123"), ("traceparent", TRACEPARENT))
        resp = H.unary(self.ch, H.CHECK)(H.health_request("liveness"), metadata=md, timeout=5)
        self.assertEqual(H.health_status(resp), H.SERVING)
        [line] = self.access_lines("abc-123")
        self.assertEqual(line["level"], "debug")  # a health probe
        self.assertEqual(line["method"], H.CHECK)
        self.assertEqual(line["grpc_status"], "OK")
        self.assertEqual(line["trace_id"], TRACE_ID)  # the trace continues
        self.assertRegex(line["span_id"], HEX16)
        self.assertNotEqual(line["span_id"], PARENT_SPAN)  # our own span in it
        self.assertGreaterEqual(float(line["duration_s"]), 0.0)
        self.assertGreater(int(line["bytes_in"]), 0)
        self.assertGreater(int(line["bytes_out"]), 0)
        self.assertRegex(line["peer"], r"^127\.0\.0\.1:\d+$")

    def test_invalid_traceparent_starts_a_new_trace(self):
        bad = [
            "00-%s-%s-01" % (TRACE_ID.upper(), PARENT_SPAN),   # upper-case hex
            "00-%s-%s-01" % ("0" * 32, PARENT_SPAN),            # zero trace id
            "00-%s-%s-01" % (TRACE_ID, "0" * 16),               # zero span id
            "ff-%s-%s-01" % (TRACE_ID, PARENT_SPAN),            # version ff
            "00-%s-%s" % (TRACE_ID, PARENT_SPAN),               # no flags
            "garbage",
        ]
        seen = set()
        for i, tp in enumerate(bad):
            with self.subTest(traceparent=tp):
                rid = "bad-tp-%d" % i
                md = (("x-request-id", rid), ("traceparent", tp))
                H.unary(self.ch, H.CHECK)(H.health_request(""), metadata=md, timeout=5)
                [line] = self.access_lines(rid)
                self.assertRegex(line["trace_id"], HEX32)
                self.assertNotEqual(line["trace_id"], TRACE_ID)
                self.assertNotEqual(line["trace_id"], TRACE_ID.upper())
                self.assertNotEqual(line["trace_id"], "0" * 32)
                self.assertRegex(line["span_id"], HEX16)
                seen.add(line["trace_id"])
        self.assertEqual(len(seen), len(bad))  # a fresh trace each time

    def test_generated_request_id(self):
        md = (("traceparent", TRACEPARENT),)
        # a unique service name finds this call's line among the others
        with self.assertRaises(grpc.RpcError) as cm:
            H.unary(self.ch, H.CHECK)(H.health_request("no.such.service.genid"), metadata=md, timeout=5)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)

        def find():
            ls = [l for l in json_lines(self.server.stderr())
                  if l["target"] == "access" and l.get("grpc_status") == "NOT_FOUND"]
            return ls or None
        lines = wait_for(find, 5, "the NOT_FOUND access line")
        self.assertTrue(lines[-1]["request_id"])  # generated when the client sent none
        self.assertEqual(lines[-1]["trace_id"], TRACE_ID)

    def test_unknown_method_with_request_id(self):
        md = (("x-request-id", "abc-123-unknown"), ("traceparent", TRACEPARENT))
        with self.assertRaises(grpc.RpcError) as cm:
            H.unary(self.ch, "/no.such.Service/Method")(b"", metadata=md, timeout=5)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
        H.unary(self.ch, H.CHECK)(H.health_request(""), timeout=5)  # the server still works

        def find():
            return [l for l in json_lines(self.server.stderr())
                    if l["target"] == "access" and l.get("request_id") == "abc-123-unknown"]
        # a call no method row answers is logged too (by its :path): a missing line is a failure
        lines = wait_for(find, 5, "the access line of the unknown method")
        self.assertEqual(lines[0]["method"], "/no.such.Service/Method")
        self.assertEqual(lines[0]["grpc_status"], "UNIMPLEMENTED")
        self.assertEqual(lines[0]["level"], "info")
        self.assertEqual(lines[0]["trace_id"], TRACE_ID)


class FormatAndLevelsTest(unittest.TestCase):

    def run_server(self, *args, env=None):
        s = H.Inferd(*args, env=env)
        self.addCleanup(s.check_clean_exit)
        ch = H.grpc_channel(s.target)
        self.addCleanup(ch.close)
        H.unary(ch, H.CHECK)(H.health_request("liveness"), metadata=(("x-request-id", "r-1"),), timeout=5)
        s.stop()
        return s.stderr()

    def test_default_is_readable_text(self):
        text = self.run_server("--log", "info,access=debug")
        lines = text.splitlines()
        self.assertTrue(lines)
        for line in lines:
            self.assertFalse(line.startswith("{"), line)
            self.assertRegex(line, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z (TRACE|DEBUG|INFO |WARN |ERROR) \S+: ")
        access = [l for l in lines if " access: " in l and "request_id=r-1" in l]
        self.assertEqual(len(access), 1, text)
        self.assertIn("grpc_status=OK", access[0])

    def test_dyn_logging_jsonl_env(self):
        text = self.run_server(env={"DYN_LOGGING_JSONL": "true"})
        self.assertTrue(json_lines(text))

    def test_module_levels(self):
        # health at warn hides its info lines; server stays at info; access stays off for probes
        text = self.run_server("--log-format", "jsonl", "--log", "info,health=warn")
        lines = json_lines(text)
        self.assertTrue(any(l["target"] == "server" and l["level"] == "info" for l in lines))
        self.assertFalse([l for l in lines if l["target"] == "health" and l["level"] in ("info", "debug", "trace")])
        self.assertFalse([l for l in lines if l["target"] == "access"])  # a probe is debug
        text = self.run_server("--log-format", "jsonl", "--log", "info,access=debug",
                               env={"DYN_LOG": "error"})  # the flag wins over DYN_LOG
        self.assertTrue([l for l in json_lines(text) if l["target"] == "access"])

    def test_invalid_log_options_exit_2(self):
        for args, env, want in [
            (["--log", "info,server=loud"], {}, "--log"),
            (["--log", "Server=debug"], {}, "--log"),
            (["--log", ""], {}, "--log"),
            ([], {"DYN_LOG": "verbose"}, "DYN_LOG"),
            (["--log-format", "xml"], {}, "--log-format"),
            ([], {"DYN_LOGGING_JSONL": "maybe"}, "DYN_LOGGING_JSONL"),
        ]:
            with self.subTest(args=args, env=env):
                import os
                e = dict(os.environ)
                e.update(env)
                p = subprocess.run([H.inferd_bin()] + args + ["--listen", "127.0.0.1:0", "--system-port", "-1"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e, timeout=20)
                self.assertEqual(p.returncode, 2, p.stderr)
                err = p.stderr.decode()
                self.assertEqual(len(err.strip().splitlines()), 1, err)
                self.assertIn(want, err)


if __name__ == "__main__":
    H.run_main()
