// The playground's entry: views behind tabs (#image, #speech, #search, #compose), the API-key field
// and what the server offers (its model list says whether vision-language models are configured).
import { apiKey, models, setApiKey } from "./api.js";
import * as compose from "./compose.js";
import * as image from "./image.js";
import * as search from "./search.js";
import * as speech from "./speech.js";
import { $, clearError, guarded, showError } from "./ui.js";

const VIEWS = ["image", "speech", "search", "compose"];

function show() {
  const view = VIEWS.includes(window.location.hash.slice(1)) ? window.location.hash.slice(1) : "image";
  for (const section of document.querySelectorAll("section.view")) section.hidden = section.dataset.view !== view;
  for (const tab of document.querySelectorAll(".tabs a")) tab.setAttribute("aria-selected", String(tab.dataset.view === view));
  if (view === "search") guarded(null, () => search.loadIndexes());
}

async function connect() {
  const server = $("server");
  const cards = await guarded(null, models);
  if (!cards) {
    server.textContent = "Not connected: see the error above (an API key may be needed).";
    $("vl-pending").textContent = "Whether this server has vision-language models shows once the page can read its model list.";
    return;
  }
  const vl = cards.filter((c) => c.modality === "image+text");
  server.textContent = `${cards.length} models · ${vl.length ? `vision-language: ${vl.map((c) => c.id).join(", ")}`
    : "no vision-language models configured"}`;
  const vision = { caption: vl.some((c) => c.task === "caption"), vqa: vl.some((c) => c.task === "vqa") };
  image.showVision(vl);
  compose.showTasks(vision);
}

function keyField() {
  const field = $("api-key");
  field.value = apiKey();
  field.addEventListener("change", () => {
    setApiKey(field.value.trim());
    connect();
    if (window.location.hash === "#search") guarded(null, () => search.loadIndexes());
  });
}

window.addEventListener("unhandledrejection", (event) => showError(event.reason || new Error("unknown error")));
window.addEventListener("error", (event) => showError(event.error || new Error(event.message)));

document.addEventListener("DOMContentLoaded", () => {
  $("error-close").addEventListener("click", clearError);
  keyField();
  image.init();
  speech.init();
  search.init();
  compose.init();
  window.addEventListener("hashchange", show);
  show();
  connect();
});
