// The API client: JSON requests with the signed-in key, problems (RFC 9457) as ApiError,
// and live feeds over WebSocket that reconnect by themselves (after a daemon restart, say).

/** An error answer of the API, or a network failure (status 0). */
export class ApiError extends Error {
  constructor(status, detail, problem = null) {
    super(detail);
    this.status = status;
    this.detail = detail;
    this.problem = problem;
  }
}

let currentKey = null;
const unauthorizedHandlers = new Set();

/** Uses `key` for every request from now on (null: none). */
export function setKey(key) {
  currentKey = key;
}

/** Calls `fn` when a request is refused with 401 (the key expired or was revoked). */
export function onUnauthorized(fn) {
  unauthorizedHandlers.add(fn);
  return () => unauthorizedHandlers.delete(fn);
}

/**
 * Calls the API. Resolves to the parsed JSON body (null when there is none), or with
 * `raw: true` to the body as text (a JSONL export, say); rejects with an ApiError carrying
 * the problem's detail.
 */
export async function api(method, path, body, { key = currentKey, signal, raw = false } = {}) {
  const headers = { accept: "application/json" };
  if (key) headers.authorization = `Bearer ${key}`;
  const init = { method, headers, signal };
  if (body !== undefined) {
    headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, `the daemon cannot be reached (${e.message})`);
  }
  const text = await response.text();
  if (raw && response.ok) return text;
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!response.ok) {
    const detail =
      data && typeof data === "object" && data.detail ? data.detail : `HTTP ${response.status}`;
    if (response.status === 401 && key === currentKey) {
      for (const fn of unauthorizedHandlers) fn(detail);
    }
    throw new ApiError(response.status, detail, typeof data === "object" ? data : null);
  }
  return data;
}

export const get = (path, opts) => api("GET", path, undefined, opts);
export const post = (path, body, opts) => api("POST", path, body ?? {}, opts);
export const put = (path, body, opts) => api("PUT", path, body, opts);
export const del = (path, opts) => api("DELETE", path, undefined, opts);

/** `encodeURIComponent` for one path segment. */
export const seg = (s) => encodeURIComponent(s);

/** The most milliseconds between two reconnection attempts. */
const RECONNECT_MAX_MS = 5000;

/**
 * Opens the WebSocket at `path` (for example `/v1/tree/ws`) and keeps it open: when it
 * closes (the daemon restarted, the network dropped), it reconnects with backoff (250 ms,
 * doubling, at most 5 s) until `close()` is called.
 *
 * `onMessage(frame)` gets each JSON frame; `onState(state)` gets "connecting", "open" or
 * "closed" (waiting to reconnect), for a live indicator; `onOpen()` runs on every (re)open,
 * so a view can reload what it may have missed.
 */
export function openSocket(path, { onMessage, onState = () => {}, onOpen = () => {} } = {}) {
  let ws = null;
  let closed = false;
  let delay = 250;
  let timer = null;
  let opened = false;
  const connect = () => {
    if (closed) return;
    // Signed out: no key to connect with (and the view is going away).
    if (!currentKey) return;
    onState("connecting");
    const url = new URL(path, location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    if (currentKey) url.searchParams.set("access_token", currentKey);
    ws = new WebSocket(url);
    ws.onopen = () => {
      opened = true;
      delay = 250;
      onState("open");
      onOpen();
    };
    ws.onmessage = (m) => {
      let frame;
      try {
        frame = JSON.parse(m.data);
      } catch {
        return;
      }
      onMessage?.(frame);
    };
    ws.onclose = () => {
      ws = null;
      if (closed) return;
      // A refused upgrade (key revoked, rotated out, expired) looks like any close to a
      // browser: ask the API, whose 401 signs the session out (and closes this socket).
      if (!opened) get("/v1/me").catch(() => {});
      opened = false;
      onState("closed");
      timer = setTimeout(connect, delay);
      delay = Math.min(delay * 2, RECONNECT_MAX_MS);
    };
  };
  connect();
  return {
    /** Sends `obj` as JSON; false when the socket is not open. */
    send(obj) {
      if (!ws || ws.readyState !== WebSocket.OPEN) return false;
      ws.send(JSON.stringify(obj));
      return true;
    },
    /** Whether the socket is open now. */
    get open() {
      return !!ws && ws.readyState === WebSocket.OPEN;
    },
    /** Closes it for good. */
    close() {
      closed = true;
      clearTimeout(timer);
      ws?.close();
    },
  };
}
