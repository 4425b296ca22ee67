#!/usr/bin/python3
"""An independent numpy reference for GGUF models: the llama, qwen2 and qwen3 blocks in
float64, read with gguf-py's GGUFReader, against what inferd computes (gguf_dump logits).

It covers what llama.cpp cannot check because it refuses it: a RoPE dimension below the
head size, for the adjacent-pairs layout (llama) and the halves layout (qwen2, qwen3);
and it cross-checks the plain architectures and Llama 3.1's frequency scaling, and the F16 KV
cache (--kv-cache-type f16: keys and values rounded to half as written; the f32 cache must be
farther from that reference than the f16 one is).
Logits must agree within 1e-4 of the largest logit (F32 weights: float32 arithmetic vs
float64).

Usage: gguf_reference.py MKMODEL GGUF_DUMP. gguf-py comes from llama.cpp's source
($INFERD_LLAMA_SRC or tools/node-deps.sh --llama-src); without it: skipped (exit 77).
"""
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MKMODEL, DUMP = sys.argv[1], sys.argv[2]


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


def field(r, key, default=None):
    f = r.fields.get(key)
    if f is None:
        return default
    v = f.parts[f.data[0]]
    return bytes(v).decode() if f.types[0].name == "STRING" else v[0].item()


def load(path):
    r = GGUFReader(path)
    arch = field(r, "general.architecture")
    t = {x.name: np.array(x.data, dtype=np.float64) for x in r.tensors}
    c = {k: field(r, f"{arch}.{k}") for k in (
        "embedding_length", "block_count", "attention.head_count", "attention.head_count_kv",
        "attention.layer_norm_rms_epsilon")}
    nh, nkv = c["attention.head_count"], c["attention.head_count_kv"]
    hd = field(r, f"{arch}.attention.key_length", c["embedding_length"] // nh)
    rd = field(r, f"{arch}.rope.dimension_count", hd)
    base = field(r, f"{arch}.rope.freq_base", 10000.0)
    scale = 1.0
    if field(r, f"{arch}.rope.scaling.type") == "linear":
        scale = 1.0 / field(r, f"{arch}.rope.scaling.factor")
    ff = t.get("rope_freqs.weight", np.ones(rd // 2))
    inv = base ** (-np.arange(rd // 2) * 2.0 / rd) / ff * scale
    return dict(arch=arch, t=t, L=c["block_count"], nh=nh, nkv=nkv, hd=hd, rd=rd, inv=inv,
                eps=c["attention.layer_norm_rms_epsilon"], neox=arch != "llama")


def rms(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x, pos, m):
    """x: (T, heads, hd); rotate the first rd dims of every head"""
    half = m["rd"] // 2
    ang = pos[:, None] * m["inv"][None, :]  # (T, half)
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    x = x.copy()
    if m["neox"]:
        a, b = x[..., :half].copy(), x[..., half:2 * half].copy()
        x[..., :half], x[..., half:2 * half] = a * c - b * s, a * s + b * c
    else:
        a, b = x[..., 0:2 * half:2].copy(), x[..., 1:2 * half:2].copy()
        x[..., 0:2 * half:2], x[..., 1:2 * half:2] = a * c - b * s, a * s + b * c
    return x


def forward(m, toks, kv16=False):
    t, T = m["t"], len(toks)
    x = t["token_embd.weight"][toks]
    pos = np.arange(T, dtype=np.float64)
    nh, nkv, hd = m["nh"], m["nkv"], m["hd"]
    for l in range(m["L"]):
        p = f"blk.{l}."
        h = rms(x, t[p + "attn_norm.weight"], m["eps"])
        q, k, v = (h @ t[p + n + ".weight"].T for n in ("attn_q", "attn_k", "attn_v"))
        if p + "attn_q.bias" in t:
            q, k, v = q + t[p + "attn_q.bias"], k + t[p + "attn_k.bias"], v + t[p + "attn_v.bias"]
        q, k, v = q.reshape(T, nh, hd), k.reshape(T, nkv, hd), v.reshape(T, nkv, hd)
        if p + "attn_q_norm.weight" in t:
            q = rms(q, t[p + "attn_q_norm.weight"], m["eps"])
            k = rms(k, t[p + "attn_k_norm.weight"], m["eps"])
        q, k = rope(q, pos, m), rope(k, pos, m)
        if kv16:  # an F16 KV cache: keys and values rounded to half as written
            k, v = (a.astype(np.float32).astype(np.float16).astype(np.float64) for a in (k, v))
        k, v = np.repeat(k, nh // nkv, axis=1), np.repeat(v, nh // nkv, axis=1)
        att = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd)
        att = att + np.triu(np.full((T, T), -np.inf), 1)[None]
        att = np.exp(att - att.max(axis=-1, keepdims=True))
        att /= att.sum(axis=-1, keepdims=True)
        o = np.einsum("hqk,khd->qhd", att, v).reshape(T, nh * hd)
        x = x + o @ t[p + "attn_output.weight"].T
        h = rms(x, t[p + "ffn_norm.weight"], m["eps"])
        g, u = h @ t[p + "ffn_gate.weight"].T, h @ t[p + "ffn_up.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ t[p + "ffn_down.weight"].T
    out = t.get("output.weight", t["token_embd.weight"])
    return rms(x, t["output_norm.weight"], m["eps"]) @ out.T


def error(path, toks, ref, kv):
    """inferd's logits (gguf_dump; kv: its KV cache type) against ref, relative to the largest"""
    env = dict(os.environ)
    if kv:
        env["INFERD_KV_CACHE_TYPE"] = kv
    out = subprocess.run([DUMP, path, "-"], input=f"logits {','.join(map(str, toks))}\n",
                         capture_output=True, text=True, check=True, env=env).stdout
    got = np.array([[float(v) for v in line.split()[2:]] for line in out.splitlines()])
    return np.abs(got - ref).max() / np.abs(ref).max()


def main():
    shape = ["--dim", "256", "--hidden-dim", "384", "--layers", "2", "--heads", "4",
             "--kv-heads", "2", "--vocab", "512", "--seq-len", "128", "--seed", "23"]
    cases = {"llama-partial-rope": ["--rope-dim", "32"],
             "qwen2-partial-rope": ["--arch", "qwen2", "--rope-dim", "16"],
             "qwen3-partial-rope": ["--arch", "qwen3", "--rope-dim", "48", "--head-dim", "80"],
             "llama": [], "qwen2": ["--arch", "qwen2"], "qwen3": ["--arch", "qwen3"],
             "llama-llama3-scaling": ["--rope-scaling", "llama3"],
             "llama-linear-scaling": ["--rope-scaling", "linear", "--rope-factor", "4"],
             "llama-kv-f16": [], "qwen3-kv-f16": ["--arch", "qwen3"]}
    toks = [1, 7, 300, 301, 302, 100, 4, 5, 6, 450, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21]
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, args in cases.items():
            path = os.path.join(tmp, name + ".gguf")
            subprocess.run([MKMODEL] + shape + args + ["--out", path], check=True,
                           capture_output=True)
            kv16 = name.endswith("kv-f16")
            ref = forward(load(path), np.array(toks), kv16)
            err = error(path, toks, ref, "f16" if kv16 else None)
            ok = err <= 1e-4
            line = f"{name}: max error {err:.2e} of the largest logit"
            if kv16:
                # the rounding must be what brings inferd there: its f32 cache is farther off
                off = error(path, toks, ref, "f32")
                ok = ok and off > 2 * err
                line += f" (with an f32 cache {off:.2e})"
            bad += not ok
            print(f"{line}: {'ok' if ok else 'FAIL'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
