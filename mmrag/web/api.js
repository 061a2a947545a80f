// Talking to the mmrag API: the optional key, JSON errors, and server-sent events over POST
// (EventSource can only GET, and /api/ask takes a JSON body).

const KEY_STORE = "mmrag_key";
const KEY_COOKIE = "mmrag_key"; // <video>, <audio> and <img> send no headers: the API reads this

/** The server answered 401: the page asks for the key, then tries again. */
export class NeedKey extends Error {}

/** One line from the API's `{"error": ...}` body (or the HTTP status when there is none). */
export class ApiError extends Error {}

export function savedKey() {
  return localStorage.getItem(KEY_STORE) || "";
}

/** Keep the key for the API calls (header) and for media and thumbnails (cookie). */
export function useKey(key) {
  if (key) {
    localStorage.setItem(KEY_STORE, key);
  } else {
    localStorage.removeItem(KEY_STORE);
  }
  const value = encodeURIComponent(key || "");
  const age = key ? "" : "; max-age=0";
  document.cookie = `${KEY_COOKIE}=${value}; path=/; SameSite=Strict${age}`;
}

function headers(more = {}) {
  const key = savedKey();
  return key ? { ...more, Authorization: `Bearer ${key}` } : more;
}

async function checked(response) {
  if (response.status === 401) throw new NeedKey("this server needs its API key");
  if (response.ok) return response;
  let line = `the server answered ${response.status}`;
  try {
    const body = await response.json();
    if (body && typeof body.error === "string") line = body.error;
  } catch {
    // not JSON: keep the status line
  }
  throw new ApiError(line);
}

export async function getJSON(url) {
  return (await checked(await fetch(url, { headers: headers() }))).json();
}

/** POST multipart (an example file, and words) and read the JSON answer. */
export async function postForm(url, form) {
  const response = await fetch(url, { method: "POST", headers: headers(), body: form });
  return (await checked(response)).json();
}

/**
 * POST JSON and call onEvent(name, data) for each server-sent event as it arrives.
 * Events are separated by a blank line; each has `event:` and `data:` lines.
 */
export async function postEvents(url, body, onEvent) {
  const response = await checked(
    await fetch(url, {
      method: "POST",
      headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
      body: JSON.stringify(body),
    }),
  );
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (value) buffer += value.replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      dispatch(buffer.slice(0, cut), onEvent);
      buffer = buffer.slice(cut + 2);
    }
    if (done) break;
  }
  if (buffer.trim()) dispatch(buffer, onEvent);
}

function dispatch(block, onEvent) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  if (!data.length) return;
  let parsed;
  try {
    parsed = JSON.parse(data.join("\n"));
  } catch {
    parsed = { text: data.join("\n") };
  }
  onEvent(name, parsed);
}
