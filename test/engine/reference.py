#!/usr/bin/python3
"""Independent numpy reference for the inferd engine (run with Debian's /usr/bin/python3).

Reads a llama2.c checkpoint, runs the llama2 forward pass in float64, and compares with
what the C engine prints through test/engine/engine_dump:
  * logits at every prompt position: relative error <= 1e-4
  * greedy generations: identical token ids
  * tokenizer: llama2.c's naive BPE encode vs the engine's encode, identical ids
Usage: reference.py DUMP_BINARY MODEL TOKENIZER [MODEL TOKENIZER ...]
"""
import struct
import subprocess
import sys

import numpy as np

TOL = 1e-4


def load_model(path):
    raw = open(path, "rb").read()
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len = struct.unpack_from("<7i", raw, 0)
    shared = vocab > 0
    vocab = abs(vocab)
    f = np.frombuffer(raw, dtype="<f4", offset=28).astype(np.float64)
    hs = dim // n_heads
    kv_dim = dim * n_kv // n_heads
    off = 0

    def take(*shape):
        nonlocal off
        n = int(np.prod(shape))
        a = f[off:off + n].reshape(shape)
        off += n
        return a

    w = {}
    w["emb"] = take(vocab, dim)
    w["rms_att"] = take(n_layers, dim)
    w["wq"] = take(n_layers, dim, dim)
    w["wk"] = take(n_layers, kv_dim, dim)
    w["wv"] = take(n_layers, kv_dim, dim)
    w["wo"] = take(n_layers, dim, dim)
    w["rms_ffn"] = take(n_layers, dim)
    w["w1"] = take(n_layers, hidden, dim)
    w["w2"] = take(n_layers, dim, hidden)
    w["w3"] = take(n_layers, hidden, dim)
    w["rms_final"] = take(dim)
    take(seq_len * hs)  # legacy freq_cis tables
    w["wcls"] = w["emb"] if shared else take(vocab, dim)
    assert off == f.size, "model size mismatch"
    cfg = dict(dim=dim, hidden=hidden, n_layers=n_layers, n_heads=n_heads, n_kv=n_kv,
               vocab=vocab, seq_len=seq_len, hs=hs, kv_dim=kv_dim)
    return cfg, w


def rmsnorm(x, g):
    return g * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + 1e-5))


def rope(x, n_heads_x, hs):
    # x: (T, n_heads_x * hs), rotate pairs (2i, 2i+1) within each head by pos * freq_i
    T = x.shape[0]
    x = x.reshape(T, n_heads_x, hs // 2, 2)
    freq = 1.0 / (10000.0 ** (np.arange(0, hs, 2) / hs))
    ang = np.arange(T)[:, None] * freq[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    x0, x1 = x[..., 0], x[..., 1]
    out = np.stack([x0 * c - x1 * s, x0 * s + x1 * c], axis=-1)
    return out.reshape(T, n_heads_x * hs)


def forward(cfg, w, tokens):
    """logits (T, vocab) for every position of tokens, full causal attention."""
    T = len(tokens)
    H, KV, hs = cfg["n_heads"], cfg["n_kv"], cfg["hs"]
    x = w["emb"][np.array(tokens)]
    mask = np.triu(np.full((T, T), -np.inf), k=1)
    for l in range(cfg["n_layers"]):
        xb = rmsnorm(x, w["rms_att"][l])
        q = rope(xb @ w["wq"][l].T, H, hs).reshape(T, H, hs)
        k = rope(xb @ w["wk"][l].T, KV, hs).reshape(T, KV, hs)
        v = (xb @ w["wv"][l].T).reshape(T, KV, hs)
        rep = H // KV
        k = np.repeat(k, rep, axis=1)  # head h uses kv head h // rep
        v = np.repeat(v, rep, axis=1)
        att = np.einsum("thd,shd->hts", q, k) / np.sqrt(hs) + mask
        att = np.exp(att - att.max(axis=-1, keepdims=True))
        att /= att.sum(axis=-1, keepdims=True)
        o = np.einsum("hts,shd->thd", att, v).reshape(T, H * hs)
        x = x + o @ w["wo"][l].T
        xb = rmsnorm(x, w["rms_ffn"][l])
        h1 = xb @ w["w1"][l].T
        h3 = xb @ w["w3"][l].T
        x = x + ((h1 / (1.0 + np.exp(-h1))) * h3) @ w["w2"][l].T
    return rmsnorm(x, w["rms_final"]) @ w["wcls"].T


def load_tokenizer(path, vocab):
    raw = open(path, "rb").read()
    (maxlen,) = struct.unpack_from("<i", raw, 0)
    off, pieces, scores = 4, [], []
    for _ in range(vocab):
        s, n = struct.unpack_from("<fi", raw, off)
        off += 8
        pieces.append(raw[off:off + n])
        scores.append(s)
        off += n
    return pieces, scores


def encode(pieces, scores, text):
    """llama2.c run.c encode(), verbatim algorithm (bos=1, no eos)."""
    lookup = {}
    for i, p in enumerate(pieces):
        lookup.setdefault(p, i)
    data = text.encode("utf-8")
    toks = []
    if data:
        toks.append(lookup[b" "])
    i = 0
    while i < len(data):
        j = i + 1
        while j < len(data) and (data[j] & 0xC0) == 0x80 and j - i < 4:
            j += 1
        buf = data[i:j]
        if buf in lookup:
            toks.append(lookup[buf])
        else:
            toks.extend(b + 3 for b in buf)
        i = j
    while True:
        best, bi, bid = -1e10, -1, -1
        for k in range(len(toks) - 1):
            m = lookup.get(pieces[toks[k]] + pieces[toks[k + 1]])
            if m is not None and scores[m] > best:
                best, bi, bid = scores[m], k, m
        if bi < 0:
            break
        toks[bi:bi + 2] = [bid]
    return [1] + toks


def run(dump, *args):
    out = subprocess.run([dump, *args], check=True, capture_output=True, text=True)
    return out.stdout


def check_model(dump, model, tok):
    cfg, w = load_model(model)
    V, S = cfg["vocab"], cfg["seq_len"]
    rng = np.random.default_rng(1234)
    prompts = [[1], [1, 5, 300, 42, 7], list(rng.integers(3, V, size=min(40, S - 1)))]
    prompts[2][0] = 1
    worst = 0.0
    for p in prompts:
        ref = forward(cfg, w, p)
        lines = run(dump, model, tok, "logits", ",".join(map(str, p))).strip().split("\n")
        got = np.array([[float(v) for v in ln.split()[2:]] for ln in lines])
        assert got.shape == ref.shape, (got.shape, ref.shape)
        for t in range(len(p)):
            rel = np.max(np.abs(got[t] - ref[t])) / np.max(np.abs(ref[t]))
            worst = max(worst, rel)
            if rel > TOL:
                raise SystemExit(f"{model}: logits at pos {t} of {p[:8]}: rel err {rel:.3g}")
    for p in prompts[:2] + [[1, 9, 100]]:
        n = min(20, S - len(p))
        seq = list(p)
        for _ in range(n):
            seq.append(int(np.argmax(forward(cfg, w, seq)[-1])))
        want = seq[len(p):]
        got = [int(x) for x in run(dump, model, tok, "greedy", str(n), ",".join(map(str, p))).split()[1:]]
        if got != want:
            raise SystemExit(f"{model}: greedy from {p} differs:\n  c:  {got}\n  np: {want}")
    pieces, scores = load_tokenizer(tok, V)
    for text in ["Once upon a time, there was a little girl named Lily.",
                 "The cat sat on the mat", "héllo wörld ünïcode € 😀", "a  b\n\tc", "x"]:
        want = encode(pieces, scores, text)
        got = [int(x) for x in run(dump, model, tok, "encode", text).split()[1:]]
        if got != want:
            raise SystemExit(f"{tok}: encode({text!r}) differs:\n  c:  {got}\n  py: {want}")
    print(f"ok {model}: dim {cfg['dim']} heads {cfg['n_heads']}/{cfg['n_kv']} vocab {V}: "
          f"max logits rel err {worst:.2e}, greedy + encode identical")


def main():
    dump = sys.argv[1]
    pairs = sys.argv[2:]
    assert pairs and len(pairs) % 2 == 0, __doc__
    for i in range(0, len(pairs), 2):
        check_model(dump, pairs[i], pairs[i + 1])


if __name__ == "__main__":
    main()
