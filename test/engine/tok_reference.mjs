// The reference side of tok_reference.py: llama.cpp (node-llama-cpp, vocabulary-only loads of
// the GGUF files) and Hugging Face's rules (@lenml/tokenizers on the same tokenizer.json).
// Usage: node tok_reference.mjs NODE_DIR JOB.json OUT.json
// JOB: {vocabs: [{name, gguf, lenml, corpus, hf_corpus}], chat: [{vocab, text}],
//       jinja: [{vocab, template, messages, bos_token, eos_token}]}
import { createRequire } from "node:module";
import { readFileSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const [nodeDir, jobPath, outPath] = process.argv.slice(2);
const require = createRequire(nodeDir + "/package.json");
const load = async (name) => import(pathToFileURL(require.resolve(name)).href);
const { getLlama } = await load("node-llama-cpp");
const job = JSON.parse(readFileSync(jobPath, "utf8"));
const llama = await getLlama({ gpu: false, logLevel: "error" });
const out = { vocabs: {}, chat: [], jinja: [] };
const models = {};
for (const v of job.vocabs) {
    const model = await llama.loadModel({ modelPath: v.gguf, vocabOnly: true });
    models[v.name] = model;
    const hfmod = await load(v.lenml);
    const hf = hfmod.fromPreTrained();
    const r = { raw: [], special: [], hf: [], pieces: [] };
    for (const text of v.corpus) {
        r.raw.push(Array.from(model.tokenize(text, false)));
        r.special.push(Array.from(model.tokenize(text, true)));
    }
    for (const text of v.hf_corpus) r.hf.push(Array.from(hf.encode(text, { add_special_tokens: false })));
    r.bos = model.tokens.bos;
    r.eos = model.tokens.eos;
    r.eot = model.tokens.eot;
    out.vocabs[v.name] = r;
}
for (const c of job.chat) out.chat.push(Array.from(models[c.vocab].tokenize(c.text, true)));
for (const j of job.jinja) {
    const renderer = new llama._bindings.AddonJinjaRenderer(j.template);
    const text = renderer.render({
        messages: j.messages,
        add_generation_prompt: true,
        bos_token: j.bos_token,
        eos_token: j.eos_token,
    });
    out.jinja.push({ text, ids: Array.from(models[j.vocab].tokenize(text, true)) });
}
// a file, not stdout: exit() below must not cut a pipe short (llama.cpp keeps threads alive)
writeFileSync(outPath, JSON.stringify(out));
process.exit(0);
