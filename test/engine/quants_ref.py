#!/usr/bin/python3
"""The engine's kernels against llama.cpp's own numpy reference (gguf-py/gguf/quants.py).

  * dequantization of every weight type inferd runs, block by block, bit for bit, for
    random blocks with random finite fp16 scales (subnormals, zero and 65504 included);
    F16 and BF16 over all 65536 bit patterns
  * activation formats: Q8_0 blocks bit for bit against ggml's x86 quantize_row_q8_0 (what
    llama.cpp runs on x86: id = 127 / amax, round half to even) written in numpy, and
    within one step of quants.py's reference quantizer; BF16 bit for bit against
    quants.py; f32 -> f16 bit for bit against numpy
  * dot products (kernels_matmul): against a float64 product of the dequantized weights and
    the activations as the kernel quantized them (the difference is float rounding only,
    so a misplaced nibble or scale shows at once); the generic and AVX2 kernels agree bit
    for bit on every quantized type; one activation row alone gives the bits it gives
    among three (batch invariance)

Usage: quants_ref.py KERNELS_DUMP. llama.cpp's source comes from $INFERD_LLAMA_SRC or
tools/node-deps.sh --llama-src; without it (no Node.js, no npm registry) the test is
skipped (exit 77), never passed.
"""
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def llama_src():
    src = os.environ.get("INFERD_LLAMA_SRC")
    if not src:
        try:
            out = subprocess.run([os.path.join(ROOT, "tools", "node-deps.sh"), "--llama-src"],
                                 capture_output=True, text=True, check=True, timeout=600)
            src = out.stdout.strip().splitlines()[-1]
        except Exception as e:  # no node, no registry: skipped, not passed
            print(f"SKIP: llama.cpp source unavailable ({e})")
            sys.exit(77)
    if not os.path.isdir(os.path.join(src, "gguf-py")):
        print(f"SKIP: {src} has no gguf-py")
        sys.exit(77)
    return src


sys.path.insert(0, os.path.join(llama_src(), "gguf-py"))
from gguf import quants  # noqa: E402
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as Q  # noqa: E402

DUMP = sys.argv[1]
rng = np.random.default_rng(20240611)
failures = []

# byte offsets of the fp16 scale fields in each block
SCALES = {Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.Q8_0: [0],
          Q.IQ4_NL: [0], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208]}
TYPES = list(SCALES)


def run(args, data):
    p = subprocess.run([DUMP] + args, input=data, capture_output=True)
    if p.returncode == 77:
        return None
    if p.returncode != 0:
        raise RuntimeError(f"{args}: {p.stderr.decode()}")
    return p.stdout


def f16_finite(n, lo=None, hi=None):
    """random fp16 bit patterns that are finite; with lo/hi, magnitudes in [lo, hi]"""
    if lo is None:
        h = rng.integers(0, 1 << 16, size=n, dtype=np.uint32).astype(np.uint16)
        exp = (h >> 10) & 0x1F
        h = np.where(exp == 31, h & 0x83FF, h).astype(np.uint16)  # inf/nan -> subnormal
        return h
    mag = np.exp(rng.uniform(np.log(lo), np.log(hi), size=n))
    sign = rng.choice([-1.0, 1.0], size=n)
    return (mag * sign).astype(np.float16).view(np.uint16)


def random_blocks(t, n, lo=None, hi=None):
    _, ts = GGML_QUANT_SIZES[t]
    raw = rng.integers(0, 256, size=(n, ts), dtype=np.uint16).astype(np.uint8)
    for off in SCALES[t]:
        raw[:, off:off + 2] = f16_finite(n, lo, hi).view(np.uint8).reshape(n, 2)
    if lo is None:  # the edges: zero, the largest and the smallest subnormal scale
        for off in SCALES[t]:
            raw[0, off:off + 2] = np.array([0, 0], dtype=np.uint8)
            raw[1, off:off + 2] = np.array([0xFF, 0x7B], dtype=np.uint8)  # 65504
            raw[2, off:off + 2] = np.array([0x01, 0x80], dtype=np.uint8)  # -2^-24
    return raw


def same_bits(name, ref, got):
    ref = np.ascontiguousarray(ref, dtype=np.float32).reshape(-1)
    got = np.frombuffer(got, dtype=np.float32)
    if ref.shape != got.shape:
        failures.append(f"{name}: {got.size} values, reference has {ref.size}")
        return
    bad = np.nonzero(ref.view(np.uint32) != got.view(np.uint32))[0]
    if bad.size:
        i = bad[0]
        failures.append(f"{name}: {bad.size} values differ, first at {i}: "
                        f"{got[i]!r} vs reference {ref[i]!r}")


def check_dequant(isa):
    for t in TYPES:
        blocks = random_blocks(t, 4096)
        got = run([isa, "dequant", t.name], blocks.tobytes())
        if got is None:
            return False
        same_bits(f"{isa} dequant {t.name}", quants.dequantize(blocks, t), got)
    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    got = run([isa, "dequant", "F16"], every.tobytes())
    same_bits(f"{isa} dequant F16 (all 65536)", every.view(np.float16).astype(np.float32), got)
    got = run([isa, "dequant", "BF16"], every.tobytes())
    same_bits(f"{isa} dequant BF16 (all 65536)", quants.dequantize(every.view(np.uint8), Q.BF16),
              got)
    return True


def activations(n):
    """rows with very different scales, a zero block, halfway cases for rounding"""
    x = rng.standard_normal(n).astype(np.float32)
    x *= np.repeat(np.exp(rng.uniform(-8, 8, size=n // 32)), 32).astype(np.float32)
    x[:32] = 0.0
    x[32:64] = np.arange(32, dtype=np.float32) - 15.5
    # amax 127: the scale is exactly 1 and every x.5 is a tie (the x86 quantizer rounds it
    # to even, the reference away from zero)
    x[64:96] = np.concatenate([[127.0], np.arange(31, dtype=np.float32) - 14.5])
    return x


def q8_0_x86(x):
    """ggml's x86 quantize_row_q8_0 (arch/x86/quants.c), in numpy float32"""
    b = x.reshape(-1, 32).astype(np.float32)
    amax = np.abs(b).max(axis=1)
    d = (amax / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore"):
        iv = np.where(amax != 0, np.float32(127) / amax, np.float32(0)).astype(np.float32)
    q = np.rint(b * iv[:, None]).astype(np.int8)
    return np.concatenate([d.astype(np.float16).view(np.uint8).reshape(-1, 2),
                           q.view(np.uint8)], axis=1).reshape(-1)


def check_activations(isa):
    x = activations(1 << 14)
    got = run([isa, "quant", "Q8_0"], x.tobytes())
    ref = q8_0_x86(x)
    if got != ref.tobytes():
        a = np.frombuffer(got, dtype=np.uint8).reshape(-1, 34)
        b = ref.reshape(-1, 34)
        i = np.nonzero((a != b).any(axis=1))[0][0]
        failures.append(f"{isa} quant Q8_0: block {i} differs: {a[i][:6]}... vs {b[i][:6]}...")
    # the reference quantizer: the same scales, each value within one step
    r = quants.quantize(x.reshape(-1, 32), Q.Q8_0).reshape(-1, 34)
    a = np.frombuffer(got, dtype=np.uint8).reshape(-1, 34)
    if not np.array_equal(a[:, :2], r[:, :2]) or np.abs(
            a[:, 2:].view(np.int8).astype(int) - r[:, 2:].view(np.int8).astype(int)).max() > 1:
        failures.append(f"{isa} quant Q8_0: not within one step of quants.py's quantizer")
    got = run([isa, "quant", "BF16"], x.tobytes())
    if got != quants.quantize(x, Q.BF16).tobytes():
        failures.append(f"{isa} quant BF16 differs from quants.py")
    # f32 -> f16: random bits across the whole range, and values halfway between halves
    bits = rng.integers(0, 1 << 32, size=1 << 16, dtype=np.uint64).astype(np.uint32)
    y = bits.view(np.float32)
    y = y[np.isfinite(y)]
    halves = np.arange(0, 0x7C00, dtype=np.uint32).astype(np.uint16).view(np.float16)
    mid = ((halves[:-1].astype(np.float64) + halves[1:].astype(np.float64)) / 2).astype(np.float32)
    y = np.concatenate([y, mid, -mid, np.array([65504, 65519.99, 65520, 1e-8, 2.0**-25,
                                                2.0**-24, 3 * 2.0**-26], dtype=np.float32)])
    with np.errstate(over="ignore"):
        ref = y.astype(np.float16)
    got = run([isa, "quant", "F16"], y.astype(np.float32).tobytes())
    g = np.frombuffer(got, dtype=np.uint16)
    bad = np.nonzero(g != ref.view(np.uint16))[0]
    if bad.size:
        i = bad[0]
        failures.append(f"{isa} f32->f16: {bad.size} differ, first {y[i]!r}: "
                        f"{g[i]:#06x} vs numpy {ref.view(np.uint16)[i]:#06x}")


VEC = {Q.Q4_0: "Q8_0", Q.Q5_0: "Q8_0", Q.Q8_0: "Q8_0", Q.IQ4_NL: "Q8_0", Q.Q4_1: "Q8_1",
       Q.Q5_1: "Q8_1", Q.Q4_K: "Q8_K", Q.Q5_K: "Q8_K", Q.Q6_K: "Q8_K", Q.F16: "F16",
       Q.BF16: "BF16", Q.F32: "F32"}


def act_values(isa, vec, x):
    """the activation rows as the kernel sees them, in float64"""
    if vec == "F32":
        return x.astype(np.float64)
    if vec == "F16":
        return x.astype(np.float16).astype(np.float64)
    if vec == "BF16":
        return quants.dequantize(quants.quantize(x, Q.BF16), Q.BF16).astype(np.float64)
    rows = []
    for r in x:
        b = np.frombuffer(run([isa, "quant", vec], r.tobytes()), dtype=np.uint8)
        if vec == "Q8_0":
            rows.append(quants.dequantize(b.reshape(-1, 34), Q.Q8_0).reshape(-1))
        elif vec == "Q8_1":
            b = b.reshape(-1, 36)
            d = b[:, 0:2].copy().view(np.float16).astype(np.float64)
            qs = b[:, 4:36].view(np.int8).astype(np.float64)
            s = b[:, 2:4].copy().view(np.float16).astype(np.float64)
            # the block sum the kernel uses is s (= d * sum(qs) rounded to fp16)
            rows.append(((d * qs).reshape(-1), (s.reshape(-1), qs.sum(axis=1))))
        else:  # Q8_K: f32 d, 256 int8, 16 int16 sums
            b = b.reshape(-1, 292)
            d = b[:, 0:4].copy().view(np.float32).astype(np.float64)
            qs = b[:, 4:260].view(np.int8).astype(np.float64)
            bs = b[:, 260:292].copy().view(np.int16).reshape(-1, 16)
            if not np.array_equal(bs, qs.reshape(-1, 16, 16).sum(axis=2)):
                failures.append(f"{isa} Q8_K bsums do not match the quants")
            rows.append((d * qs).reshape(-1))
    return rows


def dot_inputs():
    """one set of weights and activations per type, shared by both ISAs"""
    n, rows = 512, 8
    out = {}
    for t in TYPES + [Q.F16, Q.BF16, Q.F32]:
        if t == Q.F32:
            w = rng.standard_normal((rows, n)).astype(np.float32)
            wq = w.view(np.uint8).reshape(rows, -1)
        elif t in (Q.F16, Q.BF16):
            w32 = rng.standard_normal((rows, n)).astype(np.float32)
            wq = (w32.astype(np.float16) if t == Q.F16 else quants.quantize(w32, Q.BF16))
            wq = wq.view(np.uint8).reshape(rows, -1)
        else:
            bs, ts = GGML_QUANT_SIZES[t]
            wq = random_blocks(t, rows * n // bs, 1e-3, 1.0).reshape(rows, -1)
        wd = quants.dequantize(wq.reshape(-1) if t != Q.F32 else wq, t).reshape(rows, n)
        wd = wd.astype(np.float64)
        x = (rng.standard_normal((3, n)) * 2).astype(np.float32)
        out[t] = (wq, wd, x)
    return out


def check_dots(isa, inputs):
    n, rows = 512, 8
    for t, (wq, wd, x) in inputs.items():
        got = run([isa, "dot", t.name, str(rows), str(n), "3"], wq.tobytes() + x.tobytes())
        got = np.frombuffer(got, dtype=np.float32).reshape(3, rows)
        av = act_values(isa, VEC[t], x)
        for r in range(3):
            if VEC[t] == "Q8_1":
                vals, (s, qsum) = av[r]
                # w = d*q + m; sum(w*y) = sum(d*q*y) + m * s, s per block from the fp16 field
                m = wq.reshape(rows, -1, 24 if t == Q.Q5_1 else 20)[:, :, 2:4].copy()
                m = m.view(np.float16).astype(np.float64).reshape(rows, -1)
                ref = (wd - np.repeat(m, 32, axis=1)) @ vals + m @ s
                scale = np.abs(wd) @ np.abs(vals) + np.abs(m) @ np.abs(s)
            else:
                ref = wd @ av[r]
                scale = np.abs(wd) @ np.abs(av[r])
            err = np.abs(got[r] - ref)
            tol = 1e-5 * scale + 1e-30
            if (err > tol).any():
                i = int(np.argmax(err / tol))
                failures.append(f"{isa} dot {t.name} row {r} out {i}: {got[r][i]!r} vs "
                                f"{ref[i]!r} (tolerance {tol[i]:.3g})")
        # batch invariance: one row alone is bit-identical to the same row among three
        one = run([isa, "dot", t.name, str(rows), str(n), "1"], wq.tobytes() + x[:1].tobytes())
        if one != got[0].tobytes():
            failures.append(f"{isa} dot {t.name}: row 0 alone differs from row 0 of three")
        yield t, got


def main():
    isas = []
    for isa in ("generic", "avx2"):
        if check_dequant(isa):
            isas.append(isa)
            check_activations(isa)
    if "generic" not in isas:
        failures.append("the generic kernels did not run")
    inputs = dot_inputs()
    dots = {isa: dict(check_dots(isa, inputs)) for isa in isas}
    if len(isas) == 2:
        for t in TYPES:
            if dots["generic"][t].tobytes() != dots["avx2"][t].tobytes():
                failures.append(f"dot {t.name}: the generic and AVX2 kernels disagree")
        for t in (Q.F16, Q.BF16, Q.F32):
            a, b = dots["generic"][t], dots["avx2"][t]
            if not np.allclose(a, b, rtol=1e-5, atol=1e-5):
                failures.append(f"dot {t.name}: generic and AVX2 differ beyond 1e-5")
    else:
        print("note: no AVX2 on this CPU; the generic kernels alone were checked")
    for f in failures:
        print("FAIL:", f)
    print(f"checked {len(TYPES) + 2} weight types on {', '.join(isas)}: "
          f"{'FAILED' if failures else 'ok'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
