// The official openai npm package against the served graph. Run by tests/http/test_js_clients.py,
// which starts nothing itself: it passes the session's server and media in the environment.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import OpenAI, { toFile } from "openai";

const BASE = process.env.MMSERVE_URL;
const MEDIA = process.env.MMSERVE_MEDIA;
const EN_SENTENCE = process.env.MMSERVE_EN_SENTENCE;
assert.ok(BASE && MEDIA && EN_SENTENCE, "MMSERVE_URL, MMSERVE_MEDIA and MMSERVE_EN_SENTENCE must be set");

const client = new OpenAI({ baseURL: `${BASE}/v1`, apiKey: "unused-on-loopback", maxRetries: 0 });
const media = (name) => readFileSync(join(MEDIA, name));
const words = (text) => text.toLowerCase().replace(/[^a-z ]/g, " ").split(/\s+/).filter(Boolean);
const dot = (a, b) => a.reduce((sum, x, i) => sum + x * b[i], 0);

test("models lists the served encoders and Whisper", async () => {
  const ids = [];
  for await (const model of client.models.list()) ids.push(model.id);
  for (const id of ["all-MiniLM-L6-v2", "conse-efficientnet-lite0"]) assert.ok(ids.includes(id), ids.join());
});

test("text embeddings (base64 on the wire, decoded by the client) and an image embedding share a space", async () => {
  const text = await client.embeddings.create({ model: "all-MiniLM-L6-v2", input: ["a cat", "a car"] });
  const url = `data:image/jpeg;base64,${media("cat.jpg").toString("base64")}`;
  const image = await client.embeddings.create({
    model: "conse-efficientnet-lite0",
    input: url,
    encoding_format: "float",
  });
  const [cat, car] = text.data.map((d) => d.embedding);
  const img = image.data[0].embedding;
  assert.equal(cat.length, 384);
  assert.equal(img.length, 384);
  assert.ok(dot(img, cat) > dot(img, car), "the cat photo should be nearer 'a cat' than 'a car'");
});

test("transcription of an English wav", async () => {
  const file = await toFile(media("en.wav"), "en.wav", { type: "audio/wav" });
  const result = await client.audio.transcriptions.create({ model: "whisper-1", file });
  const heard = new Set(words(result.text));
  const reference = words(EN_SENTENCE);
  const found = reference.filter((w) => heard.has(w)).length / reference.length;
  assert.ok(found >= 0.7, `heard ${JSON.stringify(result.text)}`);
});

test("a streamed transcription: the deltas joined are the done event's text", async () => {
  const file = await toFile(media("three.wav"), "three.wav", { type: "audio/wav" });
  const stream = await client.audio.transcriptions.create({ model: "whisper-1", file, language: "en", stream: true });
  const types = [];
  let joined = "";
  let done;
  for await (const event of stream) {
    types.push(event.type);
    if (event.type === "transcript.text.delta") joined += event.delta;
    if (event.type === "transcript.text.done") done = event;
  }
  assert.ok(types.length >= 3 && types.at(-1) === "transcript.text.done", types.join()); // three sentences: >= 2 deltas
  assert.ok(types.slice(0, -1).every((t) => t === "transcript.text.delta"), types.join());
  assert.equal(joined, done.text);
  assert.ok(done.usage.seconds > 1, JSON.stringify(done.usage));
  assert.ok(words(done.text).includes("quarterly"), done.text);
});

test("translation of a German wav into English", async () => {
  const file = await toFile(media("de.wav"), "de.wav", { type: "audio/wav" });
  const result = await client.audio.translations.create({ model: "whisper-1", file });
  const heard = new Set(words(result.text));
  assert.ok(["morning", "weather", "coffee"].some((w) => heard.has(w)), result.text);
});

test("a mistake is an APIError carrying the server's error shape", async () => {
  await assert.rejects(
    client.embeddings.create({ model: "text-embedding-3-small", input: "x" }),
    (err) => err instanceof OpenAI.NotFoundError && err.status === 404 && typeof err.error?.message === "string",
  );
});
