// Image view: ImageNet top-5, zero-shot over label chips, and a caption and questions when the
// server has vision-language models.
import { call } from "./api.js";
import { dataURL } from "./media.js";
import { $, el, guarded, renderBars, showRequestId } from "./ui.js";

const labels = ["cat", "dog", "car"];
let image = null; // the picked image as a data URL
let vision = { caption: false, vqa: false };

function drawChips() {
  $("zs-chips").replaceChildren(...labels.map((label, n) => el("span", { class: "chip", "data-label": label },
    label, el("button", { type: "button", "aria-label": `remove ${label}`, text: "×",
      onclick: () => { labels.splice(n, 1); drawChips(); runZeroShot(); } }))));
}

async function zeroShot() {
  if (!image || labels.length === 0) return;
  const result = await call("v1/zero-shot", { image, labels });
  renderBars($("zs-bars"), result.labels);
  showRequestId("zs-request", result.requestId);
}

function runZeroShot() {
  return guarded($("zs-run"), zeroShot);
}

async function classify() {
  const result = await call("v1/classify", { image, top_k: 5 });
  $("classify-model").textContent = result.model;
  renderBars($("classify-bars"), result.predictions);
  showRequestId("classify-request", result.requestId);
}

async function caption() {
  if (!vision.caption) return;
  $("vl-caption").textContent = "…";
  const result = await call("v1/captions", { image });
  $("vl-caption").textContent = result.data[0].caption;
}

async function ask(event) {
  event.preventDefault();
  const question = $("vqa-question").value.trim();
  if (!image || !question) return;
  await guarded(event.submitter, async () => {
    const result = await call("v1/vqa", { image, question });
    $("vqa-answer").textContent = result.data[0].answer;
  });
}

async function pick(file) {
  if (!file) return;
  const preview = $("image-preview");
  const hint = $("image-hint");
  preview.onerror = () => {
    preview.hidden = true;
    hint.hidden = false;
    hint.textContent = `This browser cannot show ${file.name}`;
  };
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  hint.hidden = true;
  $("classify-bars").replaceChildren();
  $("zs-bars").replaceChildren();
  image = await dataURL(file);
  await guarded(null, () => Promise.all([classify(), zeroShot(), caption()]));
}

export function showVision(cards) {
  vision = {
    caption: cards.some((c) => c.task === "caption"),
    vqa: cards.some((c) => c.task === "vqa"),
  };
  $("vl-pending").hidden = true;
  $("vl-on").hidden = !(vision.caption || vision.vqa);
  $("vl-off").hidden = vision.caption || vision.vqa;
  $("vqa-form").hidden = !vision.vqa;
}

export function init() {
  drawChips();
  $("image-file").addEventListener("change", (e) => pick(e.target.files[0]));
  const drop = $("image-drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    pick(e.dataTransfer.files[0]);
  });
  $("zs-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const label = $("zs-label").value.trim();
    if (label && !labels.includes(label)) labels.push(label);
    $("zs-label").value = "";
    drawChips();
    runZeroShot();
  });
  $("vqa-form").addEventListener("submit", ask);
}
