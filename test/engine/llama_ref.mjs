// llama_ref.mjs - llama.cpp itself (node-llama-cpp's prebuilt CPU library) on GGUF files,
// for test/engine/llama_ref.py. Prompts are token ids: no tokenizer is involved. One
// process runs every model (loading the library once).
//
//   node llama_ref.mjs NODE_DIR < jobs.json > results.json
//   jobs:    {"ctx": N, "vocab": V, "models": [{"model": PATH, "jobs": [
//               {"kind": "probs", "prompt": [ids]},           -> [p over V, per prompt position]
//               {"kind": "decode", "prompt": [ids], "n": N}]   -> {"tokens": [...],
//                                                    "probs": [[p]...], "batch": [[p]...]}
//            ]}]}
//   results: [[one result per job] per model]; each distribution p over V is base64 of V
//   little-endian float32 values
//
// probs evaluates the prompt as one batch. decode generates greedily one token at a time,
// as llama.cpp does, reporting the distribution each step sampled from, and then the same
// positions evaluated as one batch ("batch"): llama.cpp is not batch invariant, and the
// test measures how far its two answers for one sequence differ.
//
// The context keeps K and V in F32 (a model's "kv": "F16" asks for llama.cpp's default F16
// cache) and attention without flash attention, so what is compared is the model's
// arithmetic, not llama.cpp's F16 cache rounding (unless asked for).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const nodeDir = process.argv[2];
const { getLlama, LlamaLogLevel } = await import(
  pathToFileURL(join(nodeDir, "node_modules/node-llama-cpp/dist/index.js")).href);
const spec = JSON.parse(readFileSync(0, "utf8"));
const llama = await getLlama({ gpu: false, logLevel: LlamaLogLevel.error });
// a distribution as base64 little-endian float32 (compact; numpy reads it directly)
const dense = (p) => {
  const a = new Float32Array(spec.vocab);
  for (const [tok, prob] of p) a[tok] = prob;
  return Buffer.from(a.buffer).toString("base64");
};
const all = [];
for (const m of spec.models) {
  const model = await llama.loadModel({ modelPath: m.model });
  const context = await model.createContext({
    contextSize: spec.ctx,
    sequences: 1,
    flashAttention: false,
    experimentalKvCacheKeyType: m.kv ?? "F32",
    experimentalKvCacheValueType: m.kv ?? "F32",
    threads: 1, // llama.cpp spins its threads between tokens: on a busy 2-core machine 1 is 100x faster
  });
  const seq = context.getSequence();
  const results = [];
  for (const j of m.jobs) {
    await seq.clearHistory();
    if (j.kind === "decode") {
      const tokens = [], probs = [];
      const it = seq.evaluateWithMetadata(j.prompt, { probabilities: true },
        { temperature: 0, yieldEogToken: true });
      for await (const t of it) {
        tokens.push(t.token);
        probs.push(dense(t.probabilities));
        if (tokens.length >= j.n) break;
      }
      await seq.clearHistory();
      const full = [...j.prompt, ...tokens.slice(0, -1)];
      const r = await seq.controlledEvaluate(
        full.map((t) => [t, { generateNext: { probabilities: true } }]));
      results.push({ tokens, probs, batch: r.slice(j.prompt.length - 1).map(
        (x) => dense(x.next.probabilities)) });
    } else {
      const r = await seq.controlledEvaluate(
        j.prompt.map((t) => [t, { generateNext: { probabilities: true } }]));
      results.push(r.map((x) => dense(x.next.probabilities)));
    }
  }
  all.push(results);
  await context.dispose();
  await model.dispose();
}
process.stdout.write(JSON.stringify(all));
await llama.dispose();
