#!/usr/bin/python3
"""The numpy reference check of test/engine/reference.py, against the CUDA backend.

  * logits at every prompt position: relative error <= 1e-4 (fp32) or 2e-2 (bf16)
  * greedy generations in fp32: identical token ids to numpy (and so to the CPU engine)
Exits 77 (ctest: skipped) when cuda_dump finds no usable GPU.
Usage: gpu_reference.py CUDA_DUMP MODEL TOKENIZER [MODEL TOKENIZER ...]
"""
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "engine"))
import reference as ref  # noqa: E402

TOL = {"fp32": 1e-4, "bf16": 2e-2}
SKIP = 77


def dump(binary, *args):
    out = subprocess.run([binary, *args], capture_output=True, text=True)
    if out.returncode == SKIP:
        print(out.stdout.strip() or "SKIP: no usable GPU")
        sys.exit(SKIP)
    if out.returncode != 0:
        raise SystemExit(f"{binary} {' '.join(args[:4])}: exit {out.returncode}: {out.stderr}")
    return out.stdout


def check_model(binary, model, tok):
    cfg, w = ref.load_model(model)
    V, S = cfg["vocab"], cfg["seq_len"]
    rng = np.random.default_rng(1234)
    prompts = [[1], [1, 5, 300 % V, 42, 7], list(rng.integers(3, V, size=min(40, S - 1)))]
    prompts[2][0] = 1
    for dtype, tol in TOL.items():
        worst = 0.0
        for p, mode in [(p, m) for p in prompts for m in ("logits", "logits_batched")]:
            want = ref.forward(cfg, w, p)
            lines = dump(binary, model, tok, dtype, mode, ",".join(map(str, p))).strip().split("\n")
            got = np.array([[float(v) for v in ln.split()[2:]] for ln in lines])
            assert got.shape == want.shape, (got.shape, want.shape)
            for t in range(len(p)):
                rel = np.max(np.abs(got[t] - want[t])) / np.max(np.abs(want[t]))
                worst = max(worst, rel)
                if rel > tol:
                    raise SystemExit(f"{model} {dtype} {mode}: logits at pos {t} of {p[:8]}: rel err {rel:.3g}")
        print(f"ok {model} {dtype}: max logits rel err {worst:.2e} (tolerance {tol:g})")
    for p in prompts[:2] + [[1, 9, 100 % V]]:
        n = min(20, S - len(p))
        seq = list(p)
        for _ in range(n):
            seq.append(int(np.argmax(ref.forward(cfg, w, seq)[-1])))
        want = seq[len(p):]
        got = [int(x) for x in dump(binary, model, tok, "fp32", "greedy", str(n), ",".join(map(str, p))).split()[1:]]
        if got != want:
            raise SystemExit(f"{model}: cuda fp32 greedy from {p} differs:\n  cuda: {got}\n  np:   {want}")
    print(f"ok {model}: cuda fp32 greedy identical to numpy")


def main():
    binary, pairs = sys.argv[1], sys.argv[2:]
    assert pairs and len(pairs) % 2 == 0, __doc__
    for i in range(0, len(pairs), 2):
        check_model(binary, pairs[i], pairs[i + 1])


if __name__ == "__main__":
    main()
