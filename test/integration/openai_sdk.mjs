// openai_sdk.mjs - the official `openai` npm package against inferd, for test_openai.py: each
// job is one SDK call; the result is what the SDK gave back, or the error it threw (its class,
// status, message and fields), so the test can check what an application would see.
//
//   node openai_sdk.mjs NODE_DIR BASE_URL JOBS.json OUT.json
//   JOBS: [{name, kind, params, headers}]; kind: models.list, models.retrieve (params: the id),
//         chat, chat.stream, completions, completions.stream
//   OUT:  {name: {ok: true, value} | {ok: false, error: {class, status, message, code, param,
//                                                          type, retry_after, request_id}}}
//         value: the response object; for streams {chunks: [...]} in order
import { createRequire } from "node:module";
import { readFileSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const [nodeDir, baseURL, jobsPath, outPath] = process.argv.slice(2);
const require = createRequire(nodeDir + "/package.json");
const { default: OpenAI } = await import(pathToFileURL(require.resolve("openai")).href);
// no retries: the test wants to see every 429 and 5xx as it came
const client = new OpenAI({ baseURL, apiKey: "not-checked", maxRetries: 0, timeout: 120000 });
const jobs = JSON.parse(readFileSync(jobsPath, "utf8"));
const out = {};

async function run(job) {
  const opts = job.headers ? { headers: job.headers } : undefined;
  switch (job.kind) {
    case "models.list": {
      const ids = [];
      for await (const m of client.models.list(opts)) ids.push(m);
      return ids;
    }
    case "models.retrieve":
      return await client.models.retrieve(job.params, opts);
    case "chat":
      return await client.chat.completions.create(job.params, opts);
    case "completions":
      return await client.completions.create(job.params, opts);
    case "chat.stream":
    case "completions.stream": {
      const api = job.kind === "chat.stream" ? client.chat.completions : client.completions;
      const stream = await api.create({ ...job.params, stream: true }, opts);
      const chunks = [];
      for await (const c of stream) chunks.push(c);
      return { chunks };
    }
    default:
      throw new Error("unknown job kind " + job.kind);
  }
}

for (const job of jobs) {
  try {
    out[job.name] = { ok: true, value: await run(job) };
  } catch (e) {
    out[job.name] = {
      ok: false,
      error: {
        class: e.constructor.name,
        status: e.status ?? null,
        message: e.message,
        code: e.code ?? null,
        param: e.param ?? null,
        type: e.type ?? null,
        retry_after: e.headers?.get?.("retry-after") ?? null,
        request_id: e.requestID ?? null,
      },
    };
  }
}
writeFileSync(outPath, JSON.stringify(out));
