#!/usr/bin/python3
"""tools/mkmodel's GGUF files, read back with llama.cpp's own reader (gguf-py GGUFReader).

For every architecture and type mix mkmodel writes: the file parses; the hyper-parameter
and tokenizer keys say what was asked; every tensor has the name, shape and type llama.cpp
expects - for Q4_K_M / Q5_K_M the types its quantize would choose (src/llama-quant.cpp's
rules, written out here independently: use_more_bits, the Q6_K output, the fallbacks for
rows that are not multiples of 256); every quantized block is valid (gguf-py dequantizes
it to finite values) with the spread of a trained layer of that width.

Usage: mkmodel_gguf.py MKMODEL. gguf-py from $INFERD_LLAMA_SRC or tools/node-deps.sh
--llama-src; without it: skipped (exit 77).
"""
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MKMODEL = sys.argv[1]


def llama_src():
    src = os.environ.get("INFERD_LLAMA_SRC")
    if not src:
        try:
            out = subprocess.run([os.path.join(ROOT, "tools", "node-deps.sh"), "--llama-src"],
                                 capture_output=True, text=True, check=True, timeout=900)
            src = out.stdout.strip().splitlines()[-1]
        except Exception as e:
            print(f"SKIP: llama.cpp source unavailable ({e})")
            sys.exit(77)
    return src


sys.path.insert(0, os.path.join(llama_src(), "gguf-py"))
from gguf import GGUFReader  # noqa: E402
from gguf.quants import dequantize  # noqa: E402
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as Q  # noqa: E402

failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)


def use_more_bits(i, n):
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def expected_type(mix, name, layer, layers, ncols, tied):
    """llama.cpp's choice for a matrix under Q4_K_M / Q5_K_M, or the plain type"""
    if mix not in ("Q4_K_M", "Q5_K_M"):
        return Q[mix]
    base = Q.Q4_K if mix == "Q4_K_M" else Q.Q5_K
    t = base
    if name == "output.weight" or (tied and name == "token_embd.weight"):
        t = Q.Q8_0 if ncols % 256 else Q.Q6_K
    elif name.endswith("attn_v.weight") or name.endswith("ffn_down.weight"):
        if use_more_bits(layer, layers):
            t = Q.Q6_K
    if ncols % GGML_QUANT_SIZES[t][0]:
        t = {Q.Q4_K: Q.Q5_0, Q.Q5_K: Q.Q5_1, Q.Q6_K: Q.Q8_0}.get(t, t)
        if ncols % GGML_QUANT_SIZES[t][0]:
            t = Q.F16
    return t


def field(r, key):
    f = r.fields.get(key)
    if f is None:
        return None
    if f.types[0].name == "ARRAY":
        return [f.parts[i] for i in f.data]
    v = f.parts[f.data[0]]
    return bytes(v).decode() if f.types[0].name == "STRING" else v[0].item()


def run_case(tmp, name, arch, mix, dim, hidden, layers, heads, kv, head_dim=0, extra=()):
    path = os.path.join(tmp, name + ".gguf")
    args = [MKMODEL, "--arch", arch, "--type", mix, "--dim", str(dim), "--hidden-dim",
            str(hidden), "--layers", str(layers), "--heads", str(heads), "--kv-heads", str(kv),
            "--vocab", "512", "--seq-len", "300", "--out", path]
    if head_dim:
        args += ["--head-dim", str(head_dim)]
    subprocess.run(args + list(extra), check=True, capture_output=True)
    r = GGUFReader(path)
    hd = head_dim or dim // heads
    tied = "--unshared" not in extra
    check(field(r, "general.architecture") == arch, f"{name}: general.architecture")
    for k, v in (("embedding_length", dim), ("feed_forward_length", hidden),
                 ("block_count", layers), ("attention.head_count", heads),
                 ("attention.head_count_kv", kv), ("context_length", 300),
                 ("rope.dimension_count", hd)):
        check(field(r, f"{arch}.{k}") == v, f"{name}: {arch}.{k} = {field(r, f'{arch}.{k}')}")
    toks = field(r, "tokenizer.ggml.tokens")
    types = field(r, "tokenizer.ggml.token_type")
    check(field(r, "tokenizer.ggml.model") == "llama", f"{name}: tokenizer model")
    check(len(toks) == 512 and len(types) == 512, f"{name}: 512 tokens and types")
    check(bytes(toks[1]) == b"<s>" and int(types[1][0]) == 3, f"{name}: <s> is control")
    check(bytes(toks[3]) == b"<0x00>" and int(types[3][0]) == 6, f"{name}: <0x00> is byte")
    check(field(r, "tokenizer.ggml.bos_token_id") == 1, f"{name}: BOS 1")
    check(field(r, "tokenizer.ggml.eos_token_id") == 2, f"{name}: EOS 2")
    check(any("\u2581".encode() in bytes(t) for t in toks), f"{name}: SentencePiece U+2581")

    want = {"token_embd.weight": (dim, 512), "output_norm.weight": (dim,)}
    if not tied:
        want["output.weight"] = (dim, 512)
    for i in range(layers):
        b = f"blk.{i}."
        want.update({b + "attn_norm.weight": (dim,), b + "attn_q.weight": (dim, heads * hd),
                     b + "attn_k.weight": (dim, kv * hd), b + "attn_v.weight": (dim, kv * hd),
                     b + "attn_output.weight": (heads * hd, dim), b + "ffn_norm.weight": (dim,),
                     b + "ffn_gate.weight": (dim, hidden), b + "ffn_up.weight": (dim, hidden),
                     b + "ffn_down.weight": (hidden, dim)})
        if arch == "qwen2":
            want.update({b + "attn_q.bias": (heads * hd,), b + "attn_k.bias": (kv * hd,),
                         b + "attn_v.bias": (kv * hd,)})
        if arch == "qwen3":
            want.update({b + "attn_q_norm.weight": (hd,), b + "attn_k_norm.weight": (hd,)})
    got = {t.name: t for t in r.tensors}
    check(set(got) == set(want), f"{name}: tensors {sorted(set(got) ^ set(want))}")
    for tn, shape in want.items():
        t = got.get(tn)
        if t is None:
            continue
        check(tuple(int(x) for x in t.shape) == shape,
              f"{name}: {tn} shape {list(t.shape)}, want {list(shape)}")
        layer = int(tn.split(".")[1]) if tn.startswith("blk.") else 0
        et = Q.F32 if len(shape) == 1 else expected_type(mix, tn, layer, layers, shape[0], tied)
        check(t.tensor_type == et, f"{name}: {tn} is {t.tensor_type.name}, want {et.name}")
        w = dequantize(t.data, t.tensor_type).astype(np.float64)
        check(np.isfinite(w).all(), f"{name}: {tn} has non-finite values")
        if len(shape) == 2 and tn != "token_embd.weight" and tn != "output.weight":
            sd, target = w.std(), 1 / np.sqrt(shape[0])
            check(target / 3 < sd < target * 3,
                  f"{name}: {tn} spread {sd:.3g}, a trained layer's would be ~{target:.3g}")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        for mix in ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "IQ4_NL",
                    "Q4_K", "Q5_K", "Q6_K", "Q4_K_M", "Q5_K_M"):
            run_case(tmp, f"llama-{mix}", "llama", mix, 256, 512, 8, 4, 2)
        run_case(tmp, "qwen2-Q4_K_M", "qwen2", "Q4_K_M", 256, 512, 4, 4, 2, extra=["--unshared"])
        run_case(tmp, "qwen3-Q5_K_M", "qwen3", "Q5_K_M", 256, 768, 3, 4, 2, head_dim=128)
        # rows of 192 / 448: the fallbacks Q5_0, Q5_1 and Q8_0
        run_case(tmp, "llama-Q4_K_M-narrow", "llama", "Q4_K_M", 192, 448, 4, 3, 1)
        run_case(tmp, "llama-Q5_K_M-narrow", "llama", "Q5_K_M", 192, 448, 4, 3, 1,
                 extra=["--unshared"])
        # rows of 80: no 32-block type fits, llama.cpp's F16
        run_case(tmp, "llama-Q4_K_M-f16", "llama", "Q4_K_M", 80, 160, 2, 2, 2)
    for f in failures:
        print("FAIL:", f)
    print("mkmodel GGUF files:", "FAILED" if failures else "ok")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
