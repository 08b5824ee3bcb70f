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

test("bad input is a 4xx in the error shape with a request id", async () => {
  const { status, body, requestId } = await post("/v1/compose", { inputs: {}, tasks: [{ type: "classify" }] });
  assert.ok(status >= 400 && status < 500, `status ${status}`);
  assert.equal(typeof body.error.type, "string");
  assert.equal(typeof body.error.message, "string");
  assert.ok(requestId, "x-request-id header");
});
