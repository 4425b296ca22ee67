// llama_tok.mjs - llama.cpp (node-llama-cpp's prebuilt library) as the reference for what
// test_chat_api.py asks inferd's server: the ids of a prompt and of a chat, on the same GGUF
// files (vocabulary-only loads: nothing but the tokenizer and the template is needed).
//
//   node llama_tok.mjs NODE_DIR JOB.json OUT.json
//   JOB: {models: [{name, gguf, texts: [...], chats: [[{role, content}...]...]}]}
//   OUT: {name: {add_bos, add_eos, bos, eos, eot, template,
//                texts: [ids of text, as a server tokenizes a prompt: BOS/EOS as the file says,
//                        special tokens' texts as plain text],
//                chats: [{text, ids}: the file's Jinja template rendered by llama.cpp's own
//                        Jinja engine (generation prompt added), tokenized with special tokens
//                        matched; null without a template]}}
import { createRequire } from "node:module";
import { readFileSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const [nodeDir, jobPath, outPath] = process.argv.slice(2);
const require = createRequire(nodeDir + "/package.json");
const { getLlama, LlamaLogLevel } = await import(
  pathToFileURL(require.resolve("node-llama-cpp")).href);
const job = JSON.parse(readFileSync(jobPath, "utf8"));
const llama = await getLlama({ gpu: false, logLevel: LlamaLogLevel.error });
const out = {};
for (const m of job.models) {
  const model = await llama.loadModel({ modelPath: m.gguf, vocabOnly: true });
  const t = model.tokens;
  const addBos = t.shouldPrependBosToken, addEos = t.shouldAppendEosToken;
  const r = { add_bos: addBos, add_eos: addEos, bos: t.bos, eos: t.eos, eot: t.eot, texts: [],
              chats: [] };
  for (const text of m.texts) {
    const ids = Array.from(model.tokenize(text, false));
    r.texts.push([...(addBos ? [t.bos] : []), ...ids, ...(addEos ? [t.eos] : [])]);
  }
  const tmpl = model.fileInfo.metadata?.tokenizer?.chat_template ?? null;
  r.template = tmpl;
  for (const messages of m.chats) {
    if (!tmpl) {
      r.chats.push(null);
      continue;
    }
    const renderer = new llama._bindings.AddonJinjaRenderer(tmpl);
    const text = renderer.render({ messages, add_generation_prompt: true,
                                   bos_token: t.bosString ?? "", eos_token: t.eosString ?? "" });
    r.chats.push({ text, ids: Array.from(model.tokenize(text, true)) });
  }
  out[m.name] = r;
}
// a file, not stdout: exit() below must not cut a pipe short (llama.cpp keeps threads alive)
writeFileSync(outPath, JSON.stringify(out));
process.exit(0);
