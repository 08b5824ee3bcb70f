// Search view: list and create indexes, add images with a progress bar (each with a 128-pixel
// thumbnail in its metadata), and query by text, image or speech.
import { call } from "./api.js";
import { dataURL, recordButton, thumbnail } from "./media.js";
import { $, el, guarded, showError, showRequestId } from "./ui.js";

const BATCH = 4; // images per request: progress moves often, requests stay small

const selected = () => $("index-select").value;

function describe(info) {
  $("index-info").textContent = info
    ? `${info.count} item${info.count === 1 ? "" : "s"} · ${info.encoder} · ${info.space} space · ${info.dim}-d`
    : "No index yet: create one.";
}

export async function loadIndexes(pick = undefined) {
  const select = $("index-select");
  const keep = pick || select.value;
  const { data } = await call("v1/indexes");
  select.replaceChildren(...data.map((i) => el("option", { value: i.name, text: i.name })));
  if (data.some((i) => i.name === keep)) select.value = keep;
  describe(data.find((i) => i.name === select.value));
  return data;
}

async function create(event) {
  event.preventDefault();
  const name = $("index-name").value.trim();
  await guarded(event.submitter, async () => {
    await call("v1/indexes", { name });
    $("index-name").value = "";
    await loadIndexes(name);
  });
}

function progress(done, total) {
  const percent = total ? Math.round((done / total) * 100) : 0;
  $("index-progress").value = percent;
  $("index-progress-text").textContent = `${done} / ${total} · ${percent} %`;
}

async function item(file) {
  const metadata = { file: file.name };
  const small = await thumbnail(file);
  if (small) metadata.thumbnail = small;
  return { image: await dataURL(file), metadata };
}

async function addImages(files) {
  const name = selected();
  if (!name) throw Object.assign(new Error("create or pick an index first"), { type: "invalid_request_error" });
  progress(0, files.length);
  for (let start = 0; start < files.length; start += BATCH) {
    const batch = files.slice(start, start + BATCH);
    await call(`v1/indexes/${encodeURIComponent(name)}/items`, { items: await Promise.all(batch.map(item)) });
    progress(start + batch.length, files.length);
  }
  await loadIndexes();
}

function hitCard(hit) {
  const meta = hit.metadata || {};
  const label = meta.file || `${hit.id.slice(0, 12)}…`;
  const picture = meta.thumbnail
    ? el("img", { class: "thumb", src: meta.thumbnail, alt: label })
    : el("div", { class: "thumb placeholder", text: "no thumbnail" });
  return el("figure", { class: "hit", "data-file": meta.file || "", "data-score": hit.score },
    picture, el("figcaption", {}, el("span", { class: "name", text: label, title: label }),
      el("span", { class: "score", text: hit.score.toFixed(3) })));
}

async function query(body) {
  const name = selected();
  if (!name) throw Object.assign(new Error("create or pick an index first"), { type: "invalid_request_error" });
  const top = Number($("query-k").value) || 6;
  const result = await call(`v1/indexes/${encodeURIComponent(name)}/query`, { ...body, top_k: top });
  showRequestId("query-request", result.requestId);
  const heard = $("query-transcript");
  heard.hidden = result.transcript === null || result.transcript === undefined;
  heard.textContent = heard.hidden ? "" : `Heard: “${result.transcript.trim()}”`;
  $("hits").replaceChildren(...(result.hits.length ? result.hits.map(hitCard)
    : [el("p", { class: "muted", text: "No hits: the index is empty or the filter matched nothing." })]));
}

const byMedia = (kind) => async (blob) => guarded(null, async () => query({ [kind]: await dataURL(blob) }));

export function init() {
  $("index-refresh").addEventListener("click", (e) => guarded(e.currentTarget, () => loadIndexes()));
  $("index-select").addEventListener("change", () => guarded(null, () => loadIndexes()));
  $("index-create").addEventListener("submit", create);
  $("index-files").addEventListener("change", (e) => {
    const files = [...e.target.files];
    e.target.value = "";
    guarded(null, () => addImages(files));
  });
  $("query-text-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("query-text").value.trim() || $("query-text").placeholder;
    guarded(e.submitter, () => query({ text }));
  });
  $("query-image").addEventListener("change", (e) => { if (e.target.files[0]) byMedia("image")(e.target.files[0]); e.target.value = ""; });
  $("query-audio").addEventListener("change", (e) => { if (e.target.files[0]) byMedia("audio")(e.target.files[0]); e.target.value = ""; });
  recordButton($("query-record"), byMedia("audio"), showError);
}
