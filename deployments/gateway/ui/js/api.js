// Calls to the mmserve API this page is served by. The page lives at <prefix>/ui/, so the API is one
// level up; the key the user typed goes in the Authorization header and stays in sessionStorage.
const KEY = "mmserve.apiKey";
export const BASE = new URL("..", window.location.href);

export class ApiError extends Error {
  constructor(status, type, message, param, requestId = null) {
    super(message);
    this.status = status;
    this.type = type;
    this.param = param;
    this.requestId = requestId;
  }
}

// The id the server gave the request (its X-Request-ID header), kept on an answer without being one
// of its fields: views show it beside each answer, so a person can quote it in a bug report.
function withRequestId(result, response) {
  const id = response.headers.get("x-request-id");
  if (result && typeof result === "object") Object.defineProperty(result, "requestId", { value: id });
  return result;
}

export function apiKey() {
  return sessionStorage.getItem(KEY) || "";
}

export function setApiKey(value) {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
}

// The server's one error shape {"error": {type, message, param}}, or the best that can be said.
async function failure(response) {
  const text = await response.text();
  const header = response.headers.get("x-request-id");
  try {
    const { error } = JSON.parse(text);
    if (error && error.message) {
      return new ApiError(response.status, error.type, error.message, error.param, error.request_id || header);
    }
  } catch (_) { /* not JSON: a proxy's page, say */ }
  return new ApiError(response.status, "http_error", text.trim().slice(0, 500) || response.statusText, null, header);
}

function authorization() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function send(path, init) {
  try {
    return await fetch(new URL(path, BASE), init);
  } catch (err) {
    throw new ApiError(0, "network_error", `the server did not answer (${err.message})`, null);
  }
}

// GET when there is no body; a plain object is sent as JSON, a FormData as multipart.
export async function call(path, body = undefined, method = undefined) {
  const headers = authorization();
  let payload;
  if (body instanceof FormData) payload = body;
  else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const response = await send(path, { method: method || (body === undefined ? "GET" : "POST"), headers, body: payload });
  if (!response.ok) throw await failure(response);
  return withRequestId(await response.json(), response);
}

// A JSON body POSTed for server-sent events: `onEvent(name, data)` for each as it arrives (until
// `data: [DONE]`); resolves to the request's id. An event named "error" is thrown as an ApiError.
export async function stream(path, body, onEvent) {
  const headers = { ...authorization(), "Content-Type": "application/json", Accept: "text/event-stream" };
  const response = await send(path, { method: "POST", headers, body: JSON.stringify(body) });
  if (!response.ok) throw await failure(response);
  const requestId = response.headers.get("x-request-id");
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return requestId;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const lines = buffer.slice(0, end).split("\n");
      buffer = buffer.slice(end + 2);
      const name = (lines.find((l) => l.startsWith("event:")) || "event: message").slice(6).trim();
      const data = lines.filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (data === "[DONE]") return requestId;
      const parsed = JSON.parse(data);
      if (name === "error" || parsed.error) {
        const { error } = parsed;
        throw new ApiError(parsed.status || 500, error.type, error.message, error.param, error.request_id || requestId);
      }
      onEvent(name, parsed);
    }
  }
}

// The live speech WebSocket (docs/live_speech.md): the key travels as a subprotocol, since a browser
// cannot set headers on a WebSocket.
export function liveSocket(query) {
  const url = new URL(`v1/audio/transcriptions/ws?${new URLSearchParams(query)}`, BASE);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const key = apiKey();
  return new WebSocket(url, key ? ["mmserve.v1", `mmserve.key.${key}`] : ["mmserve.v1"]);
}

// What the server runs: its model cards (vision-language models appear only when configured).
export async function models() {
  return (await call("v1/models")).data;
}
