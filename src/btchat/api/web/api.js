// The one way the page talks to the daemon: its public REST API and /v1/events.

/** Sign this browser in with the token in the URL fragment (put there by `btchat open`):
 * the token goes once, as a bearer header, to POST /v1/web/session, which sets an
 * HttpOnly session cookie; the token is then stripped from the address bar and history
 * and kept nowhere. Without a fragment this does nothing (the cookie may be there). */
export async function signIn() {
  const hash = location.hash;
  if (!hash.startsWith("#token=")) return;
  const token = decodeURIComponent(hash.slice("#token=".length));
  history.replaceState(null, "", location.pathname + "#/");
  if (!token) return;
  await request("/v1/web/session", { method: "POST", headers: { Authorization: "Bearer " + token } });
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The ApiError for a failed answer, from the one error shape the API uses. */
export function errorOf(status, data, statusText) {
  const e = (data && data.error) || {};
  return new ApiError(status, e.code || "http_" + status, e.message || statusText || "failed");
}

/** A REST call; the JSON answer, or null for 204; ApiError with the server's words. */
export async function api(method, path, body) {
  const headers = {};
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  return request(path, init);
}

/** POST bytes (a Blob) as the body, for routes that take a picture or a file. */
export async function apiBytes(path, blob) {
  const headers = { "Content-Type": "application/octet-stream" };
  return request(path, { method: "POST", headers, body: blob });
}

async function request(path, init) {
  let resp;
  try {
    resp = await fetch(path, { ...init, cache: "no-store", credentials: "same-origin" });
  } catch (err) {
    throw new ApiError(0, "offline", "the daemon does not answer (is `btchat up` running?)");
  }
  if (resp.status === 204) return null;
  let data = null;
  try {
    data = await resp.json();
  } catch (err) {
    data = null;
  }
  if (!resp.ok) throw errorOf(resp.status, data, resp.statusText);
  return data;
}

export const enc = encodeURIComponent;

/** The live event stream: calls onEvent per event, onState("up"/"down"); reconnects
 * with a capped backoff. Events missed while down are not replayed: onState("up")
 * is the cue to reload. */
export function connectEvents(onEvent, onState) {
  let delay = 500;
  let ws = null;
  function open() {
    ws = new WebSocket(`ws://${location.host}/v1/events`); // the cookie signs it in
    ws.onmessage = (msg) => {
      let event;
      try {
        event = JSON.parse(msg.data);
      } catch (err) {
        return; // not JSON: ignore, as the API asks for unknown frames
      }
      if (!event || typeof event.type !== "string") return;
      if (event.type === "ready") {
        delay = 500;
        onState("up");
        return;
      }
      onEvent(event);
    };
    ws.onclose = () => {
      onState("down");
      setTimeout(open, delay);
      delay = Math.min(delay * 2, 15000);
    };
  }
  open();
  return () => ws && ws.close();
}
