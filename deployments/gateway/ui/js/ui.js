// Small DOM helpers shared by the views: element building, score bars, the error banner, busy state.
export const $ = (id) => document.getElementById(id);

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

export function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  return node;
}

// Each item {label, score} as a labelled bar; score in [0, 1] unless `max` says otherwise.
export function renderBars(list, items, { max = 1, digits = 3 } = {}) {
  list.replaceChildren(...items.map(({ label, score }) => {
    const fill = el("span", { class: "fill" });
    fill.style.width = `${Math.max(0, Math.min(1, score / max)) * 100}%`;
    return el("li", { class: "bar", "data-label": label },
      el("span", { class: "label", text: label, title: label }),
      el("span", { class: "track" }, fill),
      el("span", { class: "score", text: score.toFixed(digits) }));
  }));
}

// The request id of an answer (its X-Request-ID), shown in the element `id`.
export function showRequestId(id, requestId) {
  const tag = $(id);
  tag.textContent = requestId ? `request ${requestId}` : "";
  tag.title = requestId ? "the id the server logged this request under: quote it when reporting a problem" : "";
}

export function showError(err) {
  const box = $("error");
  showRequestId("error-request", err.requestId);
  const status = err.status ? ` (HTTP ${err.status})` : "";
  $("error-title").textContent = `${err.type || "error"}${status}`;
  $("error-param").textContent = err.param ? `param: ${err.param}` : "";
  $("error-message").textContent = err.message || String(err);
  box.hidden = false;
}

export function clearError() {
  $("error").hidden = true;
}

// Run `work` with `button` disabled and errors shown in the banner; returns work's result or undefined.
export async function guarded(button, work) {
  if (button) button.disabled = true;
  document.body.classList.add("busy");
  try {
    const result = await work();
    clearError();
    return result;
  } catch (err) {
    showError(err);
    return undefined;
  } finally {
    if (button) button.disabled = false;
    document.body.classList.remove("busy");
  }
}
