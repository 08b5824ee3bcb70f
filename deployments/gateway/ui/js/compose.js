// Compose view: pick inputs and tasks, run them as one streamed /v1/compose request, and draw the DAG
// as a timeline (one bar per node, from started_ms for latency_ms, with its dependencies), each bar
// as its node finishes.
import { stream } from "./api.js";
import { dataURL } from "./media.js";
import { $, el, guarded, showRequestId, svg } from "./ui.js";

const splitLabels = (v) => v.split(",").map((s) => s.trim()).filter(Boolean);
// Each task the page offers: what it needs, an optional parameter, and the task it sends.
const TASKS = [
  { id: "classify", label: "classify", needs: "image", make: () => ({ type: "classify", top_k: 5 }) },
  { id: "zero_shot", label: "zero-shot", needs: "image", param: "cat, dog, car",
    make: (v) => ({ type: "zero_shot", labels: splitLabels(v) }) },
  { id: "embed-image", label: "embed", needs: "image", make: () => ({ type: "embed", modality: "image" }) },
  { id: "embed-text", label: "embed", needs: "text", make: () => ({ type: "embed", modality: "text" }) },
  { id: "search", label: "search index", needs: "text", param: "index name",
    make: (v) => ({ type: "search", index: v.trim(), query: "text" }) },
  { id: "transcribe", label: "transcribe", needs: "audio", make: () => ({ type: "transcribe" }) },
  { id: "translate", label: "translate", needs: "audio", make: () => ({ type: "translate" }) },
  { id: "language", label: "language", needs: "audio", make: () => ({ type: "language" }) },
  { id: "features", label: "features", needs: "audio", make: () => ({ type: "features", features: ["mel"] }) },
  { id: "embed-audio", label: "embed", needs: "audio", make: () => ({ type: "embed", modality: "audio" }) },
  { id: "caption", label: "caption", needs: "image", vl: "caption", make: () => ({ type: "caption" }) },
  { id: "vqa", label: "question", needs: "image", vl: "vqa", param: "what animal is this?",
    make: (v) => ({ type: "vqa", question: v.trim() || "what is this?" }) },
];

function taskRows(vision) {
  return TASKS.filter((t) => !t.vl || vision[t.vl]).map((t) => el("label", { class: "task" },
    el("input", { type: "checkbox", value: t.id, "data-task": t.id }),
    el("span", {}, t.label, el("span", { class: "muted small", text: ` (${t.needs})` })),
    t.param ? el("input", { type: "text", class: "param", "data-param": t.id,
      value: t.id === "search" ? "" : t.param, placeholder: t.param }) : null));
}

async function inputs() {
  const out = {};
  const image = $("compose-image").files[0];
  const audio = $("compose-audio").files[0];
  const text = $("compose-text").value.trim();
  if (image) out.image = await dataURL(image);
  if (audio) out.audio = await dataURL(audio);
  if (text) out.text = text;
  return out;
}

function tasks() {
  return [...document.querySelectorAll("#compose-tasks input[data-task]:checked")].map((box) => {
    const task = TASKS.find((t) => t.id === box.value);
    const param = document.querySelector(`#compose-tasks input[data-param="${task.id}"]`);
    return { id: task.id, ...task.make(param ? param.value : "") };
  });
}

// Long numeric arrays (embeddings, feature matrices) shortened so the JSON stays readable.
function shortened(key, value) {
  if (!Array.isArray(value)) return value;
  if (value.length > 8 && typeof value[0] === "number") return [...value.slice(0, 4), `… ${value.length} numbers`];
  if (value.length > 3 && Array.isArray(value[0])) return [...value.slice(0, 2), `… ${value.length} rows`];
  return value;
}

// Arrays of plain values on one line each.
const compact = (json) => json.replace(/\[\n\s+([^[\]{}]*?)\n\s*\]/g,
  (_, inner) => `[${inner.split(/,\n\s*/).join(", ")}]`);

const ROW = 40; // px per node row: the connector overlay counts in rows

function connectors(nodes, rowOf, total) {
  const overlay = svg("svg", { class: "dag-links", viewBox: `0 0 100 ${nodes.length * ROW}`, preserveAspectRatio: "none" });
  for (const node of nodes) {
    for (const dep of node.deps) {
      const from = nodes[rowOf[dep]];
      if (!from) continue;
      const x1 = ((from.started_ms + from.latency_ms) / total) * 100;
      const x2 = (node.started_ms / total) * 100;
      const y1 = rowOf[dep] * ROW + ROW / 2;
      const y2 = rowOf[node.id] * ROW + ROW / 2;
      const mid = Math.min(x1, x2);
      overlay.append(svg("path", { d: `M${x1} ${y1} H${mid} V${y2} H${x2}`, class: "link",
        "vector-effect": "non-scaling-stroke", "data-from": dep, "data-to": node.id }));
    }
  }
  return overlay;
}

// A node's model calls: time queued for a replica and time in the replica, when the server reports them
// (null for nodes that made no model call, such as decoding).
function stages(node) {
  if (node.queue_ms == null || node.replica_ms == null) return null;
  return `queue ${node.queue_ms.toFixed(0)} ms · replica ${node.replica_ms.toFixed(0)} ms`;
}

// The queued part of a bar, hatched at its start (queue time is before replica time in each call).
function queued(node) {
  const share = node.latency_ms > 0 ? Math.min(1, node.queue_ms / node.latency_ms) : 0;
  const part = el("i", { class: "queued", "data-queue": node.queue_ms, "data-replica": node.replica_ms });
  part.style.width = `${share * 100}%`;
  return part;
}

function drawDag(dag, latency) {
  const nodes = [...dag.nodes].sort((a, b) => a.started_ms - b.started_ms || a.id.localeCompare(b.id));
  const total = Math.max(latency, ...nodes.map((n) => n.started_ms + n.latency_ms), 0.001);
  const rowOf = Object.fromEntries(nodes.map((n, i) => [n.id, i]));
  const labels = el("div", { class: "dag-labels" });
  const tracks = el("div", { class: "dag-tracks" });
  for (const node of nodes) {
    labels.append(el("div", { class: "dag-label", title: `${node.id} (operation ${node.op})` },
      el("span", { class: "op", text: node.id }),
      node.deps.length ? el("span", { class: "after", text: `after ${node.deps.join(", ")}` }) : null));
    const kind = node.op.startsWith("decode") ? " decode" : "";
    const staged = stages(node);
    const bar = el("div", { class: `dag-bar${kind}`, "data-id": node.id, "data-deps": node.deps.join(" "),
      "data-start": node.started_ms, "data-end": node.started_ms + node.latency_ms,
      title: `${node.id} (${node.op}): at ${node.started_ms.toFixed(1)} ms for ${node.latency_ms.toFixed(1)} ms` +
        (staged ? ` (${staged})` : "") + (node.deps.length ? `, after ${node.deps.join(", ")}` : "") });
    bar.style.left = `${(node.started_ms / total) * 100}%`;
    bar.style.width = `${Math.max(0.4, (node.latency_ms / total) * 100)}%`;
    if (staged) bar.append(queued(node));
    bar.append(el("span", { text: `${node.latency_ms.toFixed(0)} ms` }));
    if (staged) labels.lastChild.append(el("span", { class: "stages", text: staged }));
    tracks.append(el("div", { class: "dag-row" }, bar));
  }
  tracks.append(connectors(nodes, rowOf, total));
  const axis = el("div", { class: "axis" }, el("span", { text: "0 ms" }), el("span", { text: `${total.toFixed(0)} ms` }));
  $("compose-timeline").replaceChildren(el("div", { class: "dag-grid" }, labels, el("div", {}, tracks, axis)));
}

// Streamed (server-sent events): each node's bar is drawn as its event arrives, on a time axis that
// grows with the nodes so far; the final response redraws the whole DAG and fills the JSON.
async function run() {
  const chosen = tasks();
  if (!chosen.length) throw Object.assign(new Error("pick at least one task"), { type: "invalid_request_error" });
  const finished = [];
  let result = null;
  $("compose-latency").textContent = "running…";
  $("compose-json").textContent = "";
  $("compose-timeline").replaceChildren();
  showRequestId("compose-request", null);
  const body = { inputs: await inputs(), tasks: chosen, stream: true };
  const requestId = await stream("v1/compose", body, (name, data) => {
    if (name === "node") {
      finished.push(data);
      $("compose-latency").textContent = `running… ${finished.length} nodes done`;
      drawDag({ nodes: finished }, Math.max(...finished.map((n) => n.started_ms + n.latency_ms)));
    } else if (name === "response") result = data;
  }).catch((err) => {
    $("compose-latency").textContent = `failed after ${finished.length} nodes`;
    throw err;
  });
  showRequestId("compose-request", requestId);
  $("compose-latency").textContent = `${result.latency_ms.toFixed(0)} ms, ${result.dag.nodes.length} nodes`;
  $("compose-json").textContent = compact(JSON.stringify(result, shortened, 2));
  drawDag(result.dag, result.latency_ms);
}

export function showTasks(vision) {
  $("compose-tasks").replaceChildren(...taskRows(vision));
}

export function init() {
  showTasks({});
  $("compose-run").addEventListener("click", (e) => guarded(e.currentTarget, run));
}
