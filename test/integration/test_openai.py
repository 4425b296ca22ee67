"""The OpenAI-compatible HTTP API (issue 12) with real clients: the official `openai` npm package
(openai_sdk.mjs), curl over HTTP/1.1 and HTTP/2 (prior knowledge), raw HTTP/1.1, and gRPC for
the cross-API checks.

  TestOpenAI (a GGUF model with the real Llama 3 vocabulary and chat template; needs Node.js
  and the npm references, skipped without them):
    * every endpoint through the SDK: models.list/retrieve, chat.completions.create with and
      without stream (the role in the first chunk, the usage chunk when asked), completions.create
      (a prompt string or token ids); the SDK's error classes see the right status and message
    * determinism across APIs: the same greedy request through the OpenAI API and through gRPC
      Generate gives the same text (completions, chat, stop strings)
    * curl -N over HTTP/1.1 and with --http2-prior-knowledge; keep-alive after a stream
    * every bad input: its status, OpenAI's error shape and the message
    * x-request-id honoured, echoed, in the access log; a pipelined HTTP/1.1 connection mixing
      /v1/models and /health; metrics carry api="openai" beside api="grpc"
  TestOpenAILoad (the built-in model slowed by fault injection):
    * a client that disconnects mid-stream cancels its request: the next burst gets full
      concurrency; 429 with Retry-After when the admission queue is full
    * a stream producing tokens is health evidence: no canary runs while it does
    * 503 while draining; 413 over --max-request-body

Servers listen on 127.0.0.1 only; every wait and load loop is bounded.
"""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import inferd_harness as H  # noqa: E402
from test_chat_api import (SHAPE, TokenizeRequest, TokenizeResponse, chat_msgs,  # noqa: E402
                           node_dir)
from test_gguf import GGUFServer  # noqa: E402
from test_inference import _ser, req  # noqa: E402

MKMODEL = os.environ.get("MKMODEL")
HERE = os.path.dirname(os.path.abspath(__file__))
CONV = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]


def hcall(port, method, path, body=None, headers=None, timeout=60):
    """(status, headers dict (lower-case names), body bytes) of one HTTP/1.1 request"""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
            headers = dict({"content-type": "application/json"}, **(headers or {}))
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def events(body):
    """the data of each server-sent event (JSON decoded, but the final "[DONE]")"""
    out = []
    for block in body.decode().split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block
        data = block[6:]
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


def metric_sum(text, name, **labels):
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all('%s="%s"' % (k, v) in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


class TestOpenAI(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not MKMODEL:
            raise unittest.SkipTest("MKMODEL not set")
        cls.node = node_dir()
        cls.work = tempfile.mkdtemp(prefix="inferd-openai-")
        cls.model = os.path.join(cls.work, "llama3.gguf")
        subprocess.run([MKMODEL, "--vocab-from", os.path.join(cls.node, "node_modules", "@lenml",
                                                              "tokenizer-llama3", "models"),
                        "--seed", "5"] + SHAPE + ["--out", cls.model], check=True,
                       capture_output=True, timeout=300)
        cls.srv = GGUFServer(cls.model, "--ctx-size", "512", "--max-batch", "8", "--log", "info",
                             "--model-name", "llama3-test")
        cls.port = cls.srv.port
        cls.base = "http://127.0.0.1:%d/v1" % cls.port
        ch = cls.srv.channel
        cls.tokenize = ch.unary_unary("/inferd.v1.Inference/Tokenize", request_serializer=_ser,
                                      response_deserializer=TokenizeResponse.FromString)

    @classmethod
    def tearDownClass(cls):
        err = cls.srv.stop()
        shutil.rmtree(cls.work, ignore_errors=True)
        if err:
            raise AssertionError(err)

    def sdk(self, jobs):
        jp, op = os.path.join(self.work, "jobs.json"), os.path.join(self.work, "out.json")
        with open(jp, "w") as f:
            json.dump(jobs, f)
        subprocess.run(["node", os.path.join(HERE, "openai_sdk.mjs"), self.node, self.base, jp,
                        op], check=True, timeout=600)
        with open(op) as f:
            return json.load(f)

    def grpc_text(self, r):
        text, last = "", None
        for m in self.srv.generate(r, timeout=120):
            text += m.text
            last = m
        return text, last

    # ---- the SDK on every endpoint

    def test_sdk_endpoints(self):
        chat = {"model": "llama3-test", "messages": CONV, "max_tokens": 12, "temperature": 0}
        comp = {"model": "llama3-test", "prompt": "Once upon a time", "max_tokens": 12,
                "temperature": 0}
        ids = list(self.tokenize(TokenizeRequest(prompt="Once upon a time"), timeout=30).token_ids)
        r = self.sdk([
            {"name": "list", "kind": "models.list"},
            {"name": "get", "kind": "models.retrieve", "params": "llama3-test"},
            {"name": "chat", "kind": "chat", "params": chat},
            {"name": "chat_stream", "kind": "chat.stream", "params": chat},
            {"name": "chat_usage", "kind": "chat.stream",
             "params": dict(chat, stream_options={"include_usage": True})},
            {"name": "comp", "kind": "completions", "params": comp},
            {"name": "comp_stream", "kind": "completions.stream",
             "params": dict(comp, stream_options={"include_usage": True})},
            {"name": "comp_ids", "kind": "completions", "params": dict(comp, prompt=ids)},
            {"name": "accepted", "kind": "chat",
             "params": dict(chat, user="u-1", metadata={"k": "v"}, n=1, presence_penalty=0,
                            logprobs=False, response_format={"type": "text"})},
        ])
        for k, v in r.items():
            self.assertTrue(v["ok"], "%s: %s" % (k, v.get("error")))
        self.assertEqual([m["id"] for m in r["list"]["value"]], ["llama3-test"])
        self.assertEqual(r["get"]["value"]["object"], "model")
        c = r["chat"]["value"]
        self.assertEqual(c["object"], "chat.completion")
        self.assertTrue(c["id"].startswith("chatcmpl-"))
        self.assertEqual(c["model"], "llama3-test")
        msg = c["choices"][0]["message"]
        self.assertEqual(msg["role"], "assistant")
        self.assertIn(c["choices"][0]["finish_reason"], ("length", "stop"))
        want_prompt = len(self.tokenize(TokenizeRequest(messages=chat_msgs(CONV)),
                                        timeout=30).token_ids)
        self.assertEqual(c["usage"]["prompt_tokens"], want_prompt)
        self.assertEqual(c["usage"]["total_tokens"],
                         c["usage"]["prompt_tokens"] + c["usage"]["completion_tokens"])
        # streamed: the first chunk carries the role, the text is the same (greedy)
        chunks = r["chat_stream"]["value"]["chunks"]
        self.assertEqual(chunks[0]["choices"][0]["delta"].get("role"), "assistant")
        self.assertTrue(all(ch["object"] == "chat.completion.chunk" for ch in chunks))
        self.assertEqual("".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks),
                         msg["content"])
        self.assertEqual(chunks[-1]["choices"][0]["finish_reason"],
                         c["choices"][0]["finish_reason"])
        u = r["chat_usage"]["value"]["chunks"]
        self.assertEqual(u[-1]["choices"], [])
        self.assertEqual(u[-1]["usage"], c["usage"])
        self.assertTrue(all(ch.get("usage") is None for ch in u[:-1]))
        t = r["comp"]["value"]
        self.assertEqual(t["object"], "text_completion")
        self.assertEqual(t["usage"]["prompt_tokens"], len(ids))
        text = t["choices"][0]["text"]
        s = r["comp_stream"]["value"]["chunks"]
        self.assertEqual("".join(ch["choices"][0]["text"] for ch in s if ch["choices"]), text)
        self.assertEqual(s[-1]["usage"], t["usage"])
        self.assertEqual(r["comp_ids"]["value"]["choices"][0]["text"], text)
        self.assertEqual(r["accepted"]["value"]["choices"][0]["message"]["content"],
                         msg["content"])

    def test_sdk_errors(self):
        chat = {"model": "llama3-test", "messages": CONV, "max_tokens": 4}
        cases = {
            "n": (dict(chat, n=2), 400, "n must be 1", "n"),
            "model": (dict(chat, model="gpt-4o"), 400, "The model 'gpt-4o' does not exist", "model"),
            "logprobs": (dict(chat, logprobs=True), 400, "logprobs is not supported", "logprobs"),
            "tools": (dict(chat, tools=[{"type": "function", "function": {"name": "f"}}]), 400,
                      "tools (tool and function calling) is not supported", "tools"),
            "format": (dict(chat, response_format={"type": "json_object"}), 400,
                       "response_format is supported only as", "response_format"),
            "penalty": (dict(chat, presence_penalty=0.5), 400, "presence_penalty is not supported",
                        "presence_penalty"),
            "type": (dict(chat, temperature="hot"), 400,
                     "'temperature' must be a number, not a string", "temperature"),
            "role": (dict(chat, messages=[{"role": "tool", "content": "x"}]), 400,
                     "messages[0].role 'tool' is not one of system, user, assistant", "messages"),
            "unknown": (dict(chat, foo=1), 400, "unrecognized request argument 'foo'", "foo"),
            "max_tokens": (dict(chat, max_tokens=600), 400, "max_tokens 600 exceeds the context",
                           "max_tokens"),
            "long": (dict(chat, messages=[{"role": "user", "content": " ".join(
                "w%d" % i for i in range(700))}]), 400, "tokens but the context is 512", None),
        }
        jobs = [{"name": k, "kind": "chat", "params": v[0]} for k, v in cases.items()]
        jobs.append({"name": "stream_long", "kind": "chat.stream", "params": cases["long"][0]})
        jobs.append({"name": "get", "kind": "models.retrieve", "params": "nope"})
        jobs.append({"name": "comp_echo", "kind": "completions",
                     "params": {"model": "llama3-test", "prompt": "x", "echo": True}})
        r = self.sdk(jobs)
        for k, (_, status, words, param) in cases.items():
            e = r[k].get("error")
            self.assertIsNotNone(e, k)
            self.assertEqual(e["class"], "BadRequestError", (k, e))
            self.assertEqual(e["status"], status, (k, e))
            self.assertIn(words, e["message"], (k, e))
            self.assertEqual(e["type"], "invalid_request_error", (k, e))
            if param:
                self.assertEqual(e["param"], param, (k, e))
        # a too-long prompt is found on the engine's driver: still a 400, never a broken stream
        self.assertEqual(r["stream_long"]["error"]["status"], 400, r["stream_long"])
        e = r["get"]["error"]
        self.assertEqual((e["class"], e["status"], e["code"]),
                         ("NotFoundError", 404, "model_not_found"))
        self.assertIn("The model 'nope' does not exist", e["message"])
        self.assertEqual(r["comp_echo"]["error"]["status"], 400)
        self.assertIn("echo is not supported", r["comp_echo"]["error"]["message"])

    # ---- the same answer through both APIs

    def test_determinism_across_apis(self):
        g, last = self.grpc_text(req(prompt="The weather today", max_tokens=24, ignore_eos=False,
                                     temperature=0))
        st, _, body = hcall(self.port, "POST", "/v1/completions",
                           {"prompt": "The weather today", "max_tokens": 24, "temperature": 0})
        self.assertEqual(st, 200, body)
        o = json.loads(body)
        self.assertEqual(o["choices"][0]["text"], g)
        self.assertEqual(o["usage"]["completion_tokens"], last.usage.completion_tokens)
        st, _, body = hcall(self.port, "POST", "/v1/completions",
                           {"prompt": "The weather today", "max_tokens": 24, "temperature": 0,
                            "stream": True})
        self.assertEqual("".join(e["choices"][0]["text"] for e in events(body)[:-1]), g)
        # chat
        r = req(max_tokens=20, ignore_eos=False, temperature=0)
        r.messages.extend(chat_msgs(CONV))
        g, _ = self.grpc_text(r)
        st, _, body = hcall(self.port, "POST", "/v1/chat/completions",
                           {"messages": CONV, "max_completion_tokens": 20, "temperature": 0})
        self.assertEqual(json.loads(body)["choices"][0]["message"]["content"], g)
        # stop strings: the same cut
        full, _ = self.grpc_text(req(prompt="Once upon", max_tokens=30, ignore_eos=False,
                                     temperature=0))
        stop = full[8:12]
        r = req(prompt="Once upon", max_tokens=30, ignore_eos=False, temperature=0)
        r.stop.stop.append(stop)
        g, last = self.grpc_text(r)
        st, _, body = hcall(self.port, "POST", "/v1/completions",
                           {"prompt": "Once upon", "max_tokens": 30, "temperature": 0,
                            "stop": [stop]})
        o = json.loads(body)
        self.assertEqual(o["choices"][0]["text"], g)
        self.assertEqual(o["choices"][0]["finish_reason"], "stop")
        self.assertEqual(g, full[:full.index(stop)])

    # ---- curl

    def curl(self, *args):
        H.need("curl")
        p = subprocess.run(["curl", "-sS", "--noproxy", "*"] + list(args), capture_output=True,
                           timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout, p.stderr.decode()

    def test_curl_streams_over_both_protocols(self):
        body = json.dumps({"model": "llama3-test", "messages": CONV, "stream": True,
                           "max_tokens": 10, "temperature": 0})
        url = "http://127.0.0.1:%d/v1/chat/completions" % self.port
        for proto in ([], ["--http2-prior-knowledge"]):
            out, _ = self.curl("-N", *proto, url, "-d", body)  # curl -d's form type is taken
            ev = events(out)
            self.assertEqual(ev[-1], "[DONE]")
            self.assertEqual(ev[0]["choices"][0]["delta"]["role"], "assistant")
            self.assertEqual(ev[-2]["choices"][0]["finish_reason"], "length")
            text = "".join(e["choices"][0]["delta"].get("content", "") for e in ev[:-1])
            if not proto:
                want = text
            self.assertEqual(text, want)
        # HTTP/1.1 keep-alive: the connection that carried a stream carries the next request
        out, err = self.curl("-v", "-N", url, "-d", body, "--next",
                             "http://127.0.0.1:%d/v1/models" % self.port)
        self.assertIn("Re-using existing connection", err)
        self.assertIn(b'"object":"list"', out)

    # ---- bad inputs, raw

    def test_bad_inputs(self):
        def err(method, path, body=None, headers=None):
            st, hd, b = hcall(self.port, method, path, body, headers)
            self.assertEqual(hd.get("content-type"), "application/json", b)
            e = json.loads(b)["error"]
            self.assertEqual(set(e), {"message", "type", "param", "code"})
            return st, e

        st, e = err("POST", "/v1/completions", '{"prompt": "x",, }',
                    {"content-type": "application/json"})
        self.assertEqual(st, 400)
        self.assertIn("malformed JSON at line 1, column 16 (byte 16)", e["message"])
        st, e = err("POST", "/v1/completions", '[1, 2]', {"content-type": "application/json"})
        self.assertEqual((st, e["message"]), (400, "the request body must be a JSON object, "
                                                   "not an array"))
        deep = '{"prompt": "x", "metadata": ' + "[" * 40 + "]" * 40 + "}"
        st, e = err("POST", "/v1/completions", deep, {"content-type": "application/json"})
        self.assertEqual((st, e["message"]), (400, "JSON nested deeper than 32 levels"))
        st, e = err("POST", "/v1/completions", '{"prompt": "ab\\u0000c"}',
                    {"content-type": "application/json"})
        self.assertEqual(st, 400)
        self.assertIn("byte", e["message"])
        st, e = err("POST", "/v1/completions", b'{"prompt": "ab\xffc"}',
                    {"content-type": "application/json"})
        self.assertEqual(st, 400)
        self.assertIn("malformed JSON at line 1, column", e["message"])
        # jansson quotes the input near the error: an invalid byte there must not break the
        # answer's own JSON (a fuzzer finding)
        st, e = err("POST", "/v1/completions", b'{"prompt": "ab\\\xde\x8a\\"}',
                    {"content-type": "application/json"})
        self.assertEqual(st, 400)
        self.assertIn("invalid escape near", e["message"])
        self.assertIn("\ufffd", e["message"])
        st, e = err("POST", "/v1/completions", {"prompt": "x"}, {"content-type": "text/plain"})
        self.assertEqual((st, e["code"]), (415, "unsupported_media_type"))
        st, e = err("POST", "/v1/completions", {"prompt": "x", "n": 3})
        self.assertEqual((st, e["param"]), (400, "n"))
        st, e = err("POST", "/v1/completions", {"prompt": ["a", "b"]})
        self.assertIn("several prompts in one request are not supported", e["message"])
        st, e = err("POST", "/v1/completions", {"prompt": "x", "stop": ["a", "b", "c", "d", "e"]})
        self.assertEqual((st, e["message"]), (400, "5 stop strings given, at most 4 allowed"))
        st, e = err("POST", "/v1/completions", {"prompt": "x", "frequency_penalty": 1.5})
        self.assertEqual((st, e["param"]), (400, "frequency_penalty"))
        st, e = err("POST", "/v1/chat/completions",
                    {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})
        self.assertIn("messages[0].content[0].type 'image_url' is not supported", e["message"])
        st, e = err("GET", "/v1/nope")
        self.assertEqual((st, e["code"]), (404, "unknown_url"))
        st, e = err("GET", "/v1/models/other")
        self.assertEqual((st, e["code"]), (404, "model_not_found"))
        st, e = err("PUT", "/v1/chat/completions", "{}")
        self.assertEqual(st, 405)
        st, e = err("GET", "/v1/completions")
        self.assertEqual(st, 405)
        # a content part list joins its texts
        st, _, b = hcall(self.port, "POST", "/v1/chat/completions", {
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"},
                                                      {"type": "text", "text": "there"}]}],
            "max_tokens": 3})
        self.assertEqual(st, 200, b)

    # ---- request ids, pipelining, metrics

    def test_request_id_echoed_and_logged(self):
        st, hd, b = hcall(self.port, "POST", "/v1/completions", {"prompt": "x", "max_tokens": 2},
                         {"x-request-id": "oa-req-42"})
        self.assertEqual(st, 200, b)
        self.assertEqual(hd["x-request-id"], "oa-req-42")
        self.assertEqual(json.loads(b)["id"], "cmpl-oa-req-42")
        st, hd, b = hcall(self.port, "GET", "/v1/models")
        self.assertRegex(hd["x-request-id"], r"^[0-9a-f]+-[0-9a-f]+$")  # generated
        deadline = time.monotonic() + 10
        while "request_id=oa-req-42" not in self.srv.stderr() and time.monotonic() < deadline:
            time.sleep(0.05)
        line = [ln for ln in self.srv.stderr().splitlines() if "request_id=oa-req-42" in ln]
        self.assertEqual(len(line), 1)
        self.assertIn("access: POST /v1/completions 200", line[0])

    def test_pipelined_http1(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        body = b'{"prompt":"x","max_tokens":3,"stream":true,"n":1}'
        try:
            s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                      b"\r\nContent-Length: %d\r\n\r\n%s"
                      b"GET /v1/models/llama3-test HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                      b"\r\n" % (len(body), body))
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        finally:
            s.close()
        i1 = data.index(b'"object":"list"')
        i2 = data.index(b'"status":"ready"')
        i3 = data.index(b"data: [DONE]")
        i4 = data.index(b'{"id":"llama3-test","object":"model"', i3)
        self.assertTrue(i1 < i2 < i3 < i4, data[:2000])
        self.assertEqual(data.count(b"HTTP/1.1 200 OK"), 4)

    def test_metrics_by_api(self):
        hcall(self.port, "POST", "/v1/completions", {"prompt": "x", "max_tokens": 2})
        self.grpc_text(req(prompt="x", max_tokens=2))
        hcall(self.port, "POST", "/v1/completions", {"prompt": "x", "n": 2})
        st, _, b = hcall(self.port, "GET", "/metrics")
        text = b.decode()
        self.assertGreater(metric_sum(text, "inferd_requests_total", api="openai",
                                      status="success"), 0)
        self.assertGreater(metric_sum(text, "inferd_requests_total", api="grpc",
                                      status="success"), 0)
        self.assertGreater(metric_sum(text, "inferd_output_tokens_total", api="openai"), 0)
        self.assertGreater(metric_sum(text, "inferd_time_to_first_token_seconds_count",
                                      api="openai"), 0)
        self.assertGreater(metric_sum(text, "inferd_request_bytes_total", api="openai"), 0)
        promtool = shutil.which("promtool")
        if promtool:
            p = subprocess.run([promtool, "check", "metrics"], input=b, capture_output=True,
                               timeout=60)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)


    def test_inferctl_bench_sends_one_request_over_both_apis(self):
        """inferctl bench sends the engine benchmark's request (tools/bench/load.h) over gRPC
        and over the OpenAI API alike: --prompt-tokens ids and --max-tokens tokens each, as the
        server's own histograms count them."""
        inferctl = os.environ.get("INFERCTL")
        if not inferctl:
            self.skipTest("INFERCTL not set")

        def counts(api):
            _, _, b = hcall(self.port, "GET", "/metrics")
            t = b.decode()
            return (metric_sum(t, "inferd_input_sequence_tokens_sum", api=api),
                    metric_sum(t, "inferd_input_sequence_tokens_count", api=api),
                    metric_sum(t, "inferd_output_tokens_total", api=api))

        for api in ("grpc", "openai"):
            before = counts(api)
            p = subprocess.run([inferctl, "--addr", "127.0.0.1:%d" % self.port, "bench",
                                "--streams", "2", "--requests", "3", "--max-tokens", "4",
                                "--prompt-tokens", "9", "--warmup", "0", "--api", api],
                               capture_output=True, text=True, timeout=120)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn("failed 0", p.stdout)
            after = counts(api)
            self.assertEqual([a - b for a, b in zip(after, before)], [27, 3, 12], api)


# ------------------------------------------------------------------ load, cancellation, health

def slow(s, ms):
    with urllib.request.urlopen(urllib.request.Request(
            "http://127.0.0.1:%d/debug/fault?mode=%s" % (s.system_port, ms), method="POST"),
            timeout=10) as r:
        return r.status


class SSE:
    """A streaming completion on its own HTTP/1.1 connection, read as it comes."""

    def __init__(self, port, max_tokens):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=60)
        body = json.dumps({"prompt": "Once upon a time", "max_tokens": max_tokens,
                           "temperature": 0, "stream": True, "ignore_eos": True}).encode()
        self.s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                       b"application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        self.data = b""

    def wait_for(self, what, timeout=60):
        deadline = time.monotonic() + timeout
        while what not in self.data and time.monotonic() < deadline:
            self.s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                c = self.s.recv(65536)
            except socket.timeout:
                break
            if not c:
                break
            self.data += c
        return what in self.data

    def close(self):
        self.s.close()


class TestOpenAILoad(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s = H.Inferd("--enable-fault-injection", "--max-batch", "4", "--max-queued", "4",
                         "--canary-wait-time", "1s", "--log", "info")

    @classmethod
    def tearDownClass(cls):
        cls.s.check_clean_exit()

    def metrics(self):
        return hcall(self.s.grpc_port, "GET", "/metrics")[2].decode()

    def test_disconnect_cancels_and_the_burst_gets_full_concurrency(self):
        self.assertEqual(slow(self.s, "slow&ms=20"), 200)
        self.addCleanup(slow, self.s, "clear")
        port = self.s.grpc_port
        before = metric_sum(self.metrics(), "inferd_requests_total", api="openai",
                            status="cancelled")
        # four long streams fill the batch; four more wait in the queue; the next is refused
        long = []
        for _ in range(4):
            long.append(SSE(port, 400))
            self.assertTrue(long[-1].wait_for(b'"text"'), long[-1].data)
        queued = [SSE(port, 400) for _ in range(4)]
        time.sleep(0.5)
        for c in queued:
            self.assertFalse(c.wait_for(b'"text"', 0.05), c.data)
        st, hd, b = hcall(port, "POST", "/v1/completions", {"prompt": "x", "max_tokens": 2})
        self.assertEqual(st, 429, b)
        self.assertEqual(hd.get("retry-after"), "1")
        e = json.loads(b)["error"]
        self.assertEqual((e["type"], e["code"]), ("rate_limit_error", "rate_limit_exceeded"))
        self.assertIn("admission queue full", e["message"])
        # every client goes away mid-stream: their slots are free at the next step
        for c in long + queued:
            c.close()
        time.sleep(0.3)  # the server reads the closes; a step or two of the engine
        t0 = time.monotonic()
        burst = [SSE(port, 30) for _ in range(4)]
        firsts = []
        for c in burst:
            self.assertTrue(c.wait_for(b'"text"', 30), c.data)
            firsts.append(time.monotonic() - t0)
        # the four share the batch at once (400 tokens of the old ones would take 8 s)
        self.assertLess(max(firsts), 4.0, firsts)
        for c in burst:
            self.assertTrue(c.wait_for(b"data: [DONE]", 60), c.data[-300:])
            c.close()
        m = self.metrics()
        self.assertGreaterEqual(metric_sum(m, "inferd_requests_total", api="openai",
                                           status="cancelled") - before, 8)

    def test_a_stream_is_health_evidence(self):
        self.assertEqual(slow(self.s, "slow&ms=20"), 200)
        self.addCleanup(slow, self.s, "clear")
        c = SSE(self.s.grpc_port, 250)
        self.addCleanup(c.close)
        self.assertTrue(c.wait_for(b'"text"'))
        m0 = sum(metric_sum(self.metrics(), "inferd_health_canary_total", result=r)
                 for r in ("success", "failure", "timeout"))
        time.sleep(3.0)  # three canary waits, while the stream produces tokens
        m1 = sum(metric_sum(self.metrics(), "inferd_health_canary_total", result=r)
                 for r in ("success", "failure", "timeout"))
        self.assertFalse(b"data: [DONE]" in c.data)
        self.assertEqual(m1, m0, "a canary ran while an OpenAI stream was producing tokens")
        st, _, _ = hcall(self.s.system_port, "GET", "/health")
        self.assertEqual(st, 200)


class TestOpenAILimits(unittest.TestCase):
    def test_body_limit_and_draining(self):
        s = H.Inferd("--max-request-body", "2048", "--shutdown-delay", "3s")
        try:
            big = {"prompt": "x" * 4000}
            st, _, b = hcall(s.grpc_port, "POST", "/v1/completions", big)
            self.assertEqual(st, 413, b)
            e = json.loads(b)["error"]
            self.assertEqual(e["message"], "request body larger than 2048 bytes "
                                           "(--max-request-body)")
            self.assertEqual(e["code"], "request_too_large")
            st, _, b = hcall(s.grpc_port, "POST", "/v1/completions", {"prompt": "x",
                                                                     "max_tokens": 2})
            self.assertEqual(st, 200, b)
            s.signal(signal.SIGTERM)
            time.sleep(0.3)
            st, _, b = hcall(s.grpc_port, "POST", "/v1/completions", {"prompt": "x"})
            self.assertEqual(st, 503, b)
            self.assertEqual(json.loads(b)["error"]["code"], "service_unavailable")
            self.assertEqual(s.wait(30), 0)
        finally:
            s.check_clean_exit(self)


if __name__ == "__main__":
    unittest.main()
