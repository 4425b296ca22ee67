#!/usr/bin/python3
"""Benchmark helper: the same fp32 weights as a llama2.c checkpoint, written as a GGUF file
(architecture llama, F32) with llama.cpp's own writer (gguf-py), so llama.cpp runs the
very model inferd and llama2.c's run.c run. Not a converter for users: it handles the
legacy llama2.c layout that tools/mkmodel writes (shared or separate classifier; the
freq_cis tables are skipped) and its tokenizer.bin.

  llama2c_to_gguf.py GGUF_PY_DIR MODEL.bin TOKENIZER.bin OUT.gguf
"""
import struct
import sys

import numpy as np

sys.path.insert(0, sys.argv[1])
import gguf  # noqa: E402

model, tokfile, out = sys.argv[2:5]
raw = open(model, "rb").read()
dim, hidden, layers, heads, kv_heads, vocab, seq = struct.unpack_from("7i", raw, 0)
shared = vocab > 0
vocab = abs(vocab)
hs = dim // heads
kvd = kv_heads * hs
f = np.frombuffer(raw, dtype=np.float32, offset=28)
pos = 0


def take(*shape):
    global pos
    n = int(np.prod(shape))
    a = f[pos:pos + n].reshape(shape)
    pos += n
    return a


emb = take(vocab, dim)
att_norm = take(layers, dim)
wq = take(layers, dim, dim)
wk = take(layers, kvd, dim)
wv = take(layers, kvd, dim)
wo = take(layers, dim, dim)
ffn_norm = take(layers, dim)
w1 = take(layers, hidden, dim)
w2 = take(layers, dim, hidden)
w3 = take(layers, hidden, dim)
out_norm = take(dim)
take(seq * hs // 2)
take(seq * hs // 2)
wcls = emb if shared else take(vocab, dim)

tb = open(tokfile, "rb").read()
off = 4
tokens, scores, types = [], [], []
for i in range(vocab):
    score, n = struct.unpack_from("fi", tb, off)
    off += 8
    piece = tb[off:off + n]
    off += n
    tokens.append(piece)
    scores.append(score)
    types.append(gguf.TokenType.CONTROL if i in (1, 2) else
                 gguf.TokenType.UNKNOWN if i == 0 else gguf.TokenType.NORMAL)

w = gguf.GGUFWriter(out, "llama")
w.add_name("llama2c-" + model.rsplit("/", 1)[-1])
w.add_context_length(seq)
w.add_embedding_length(dim)
w.add_block_count(layers)
w.add_feed_forward_length(hidden)
w.add_head_count(heads)
w.add_head_count_kv(kv_heads)
w.add_rope_dimension_count(hs)
w.add_rope_freq_base(10000.0)
w.add_layer_norm_rms_eps(1e-5)
w.add_file_type(0)  # ALL_F32
w.add_tokenizer_model("llama")
w.add_token_list(tokens)
w.add_token_scores(scores)
w.add_token_types(types)
w.add_unk_token_id(0)
w.add_bos_token_id(1)
w.add_eos_token_id(2)
w.add_tensor("token_embd.weight", np.ascontiguousarray(emb))
for l in range(layers):
    p = f"blk.{l}."
    w.add_tensor(p + "attn_norm.weight", np.ascontiguousarray(att_norm[l]))
    w.add_tensor(p + "attn_q.weight", np.ascontiguousarray(wq[l]))
    w.add_tensor(p + "attn_k.weight", np.ascontiguousarray(wk[l]))
    w.add_tensor(p + "attn_v.weight", np.ascontiguousarray(wv[l]))
    w.add_tensor(p + "attn_output.weight", np.ascontiguousarray(wo[l]))
    w.add_tensor(p + "ffn_norm.weight", np.ascontiguousarray(ffn_norm[l]))
    w.add_tensor(p + "ffn_gate.weight", np.ascontiguousarray(w1[l]))
    w.add_tensor(p + "ffn_down.weight", np.ascontiguousarray(w2[l]))
    w.add_tensor(p + "ffn_up.weight", np.ascontiguousarray(w3[l]))
w.add_tensor("output_norm.weight", np.ascontiguousarray(out_norm))
if not shared:
    w.add_tensor("output.weight", np.ascontiguousarray(wcls))
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
