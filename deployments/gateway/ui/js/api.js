// Calls to the mmserve API this page is served by. The page lives at <prefix>/ui/, so the API is one
// level up; the key the user typed goes in the Authorization header and stays in sessionStorage.
const KEY = "mmserve.apiKey";
export const BASE = new URL("..", window.location.href);

export class ApiError extends Error {
  constructor(status, type, message, param) {
    super(message);
    this.status = status;
    this.type = type;
    this.param = param;
  }
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
  try {
    const { error } = JSON.parse(text);
    if (error && error.message) return new ApiError(response.status, error.type, error.message, error.param);
  } catch (_) { /* not JSON: a proxy's page, say */ }
  return new ApiError(response.status, "http_error", text.trim().slice(0, 500) || response.statusText, null);
}

// GET when there is no body; a plain object is sent as JSON, a FormData as multipart.
export async function call(path, body = undefined, method = undefined) {
  const headers = {};
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  let payload;
  if (body instanceof FormData) payload = body;
  else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(new URL(path, BASE), { method: method || (body === undefined ? "GET" : "POST"), headers, body: payload });
  } catch (err) {
    throw new ApiError(0, "network_error", `the server did not answer (${err.message})`, null);
  }
  if (!response.ok) throw await failure(response);
  return response.json();
}

// What the server runs: its model cards (vision-language models appear only when configured).
export async function models() {
  return (await call("v1/models")).data;
}
