// Plain fetch, as a web page or a Node app without a client library would call the graph.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

const BASE = process.env.MMSERVE_URL;
const MEDIA = process.env.MMSERVE_MEDIA;
assert.ok(BASE && MEDIA, "MMSERVE_URL and MMSERVE_MEDIA must be set");
const b64 = (name) => readFileSync(join(MEDIA, name)).toString("base64");

async function post(path, body) {
  const r = await fetch(`${BASE}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: r.status, body: await r.json(), requestId: r.headers.get("x-request-id") };
}

test("a composed request: classify and zero-shot share one decode of the photo", async () => {
  const { status, body } = await post("/v1/compose", {
    inputs: { image: b64("cat.jpg") },
    tasks: [{ type: "classify", top_k: 5 }, { type: "zero_shot", labels: ["cat", "dog", "car"] }],
  });
  assert.equal(status, 200, JSON.stringify(body));
  const labels = body.results.classify.predictions.map((p) => p.label);
  assert.ok(labels.some((l) => /cat/.test(l) || l === "tabby"), labels.join());
  assert.equal(body.results.zero_shot.labels[0].label, "cat");
  const decodes = body.dag.nodes.filter((n) => n.op === "decode_image");
  assert.equal(decodes.length, 1, JSON.stringify(body.dag.nodes));
});

// Each server-sent event of a response, with the number of the body read it was completed in.
async function* events(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (let read = 0; ; read++) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const lines = buffer.slice(0, end).split("\n");
      buffer = buffer.slice(end + 2);
      const name = lines.find((l) => l.startsWith("event:"))?.slice(6).trim() ?? "message";
      const data = lines.filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      yield { name, data: data === "[DONE]" ? data : JSON.parse(data), read };
    }
  }
}

test("a streamed compose read with fetch: each node as it finishes, then the whole response", async () => {
  const r = await fetch(`${BASE}/v1/compose`, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "text/event-stream" },
    body: JSON.stringify({
      inputs: { image: b64("cat.jpg"), audio: b64("en.wav") },
      tasks: [{ type: "classify", top_k: 3 }, { type: "transcribe", language: "en" }],
    }),
  });
  assert.equal(r.status, 200);
  assert.match(r.headers.get("content-type"), /^text\/event-stream/);
  assert.ok(r.headers.get("x-request-id"), "x-request-id header");
  const seen = [];
  for await (const event of events(r)) seen.push(event);
  const nodes = seen.filter((e) => e.name === "node");
  const [response] = seen.filter((e) => e.name === "response");
  assert.deepEqual(seen.map((e) => e.name).slice(-2), ["response", "message"], JSON.stringify(seen.map((e) => e.name)));
  assert.equal(seen.at(-1).data, "[DONE]");
  const ids = nodes.map((e) => e.data.id);
  assert.deepEqual(new Set(ids), new Set(response.data.dag.nodes.map((n) => n.id)), ids.join());
  // The classification was read before Whisper's transcript had finished: the events arrive as they happen.
  const classified = nodes.find((e) => "classify" in e.data.results);
  const transcribed = nodes.find((e) => "transcribe" in e.data.results);
  assert.ok(classified.read < transcribed.read, `reads ${classified.read} and ${transcribed.read}`);
  assert.deepEqual(classified.data.results.classify, response.data.results.classify);
  assert.ok(/fox/i.test(transcribed.data.results.transcribe.text), transcribed.data.results.transcribe.text);
});

test("bad input is a 4xx in the error shape with a request id", async () => {
  const { status, body, requestId } = await post("/v1/compose", { inputs: {}, tasks: [{ type: "classify" }] });
  assert.ok(status >= 400 && status < 500, `status ${status}`);
  assert.equal(typeof body.error.type, "string");
  assert.equal(typeof body.error.message, "string");
  assert.ok(requestId, "x-request-id header");
});
