// File transfers in the page: uploading with progress, the card a transfer is shown as
// (in a conversation and on the Files screen), and saving a received file. A file's name
// is someone else's text: it is rendered with untrusted(), like a message.
import { ApiError, enc, errorOf } from "./api.js";
import { h, untrusted } from "./dom.js";

const UNITS = ["B", "KB", "MB", "GB", "TB"];
// A transfer's rate is averaged over about this long, so it does not flicker.
const RATE_WINDOW_MS = 3000;

/** 1536 -> "1.5 KB" (binary multiples, the way file managers count). */
export function humanSize(n) {
  let v = Number(n) || 0;
  let i = 0;
  while (v >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i += 1;
  }
  return (i === 0 ? String(v) : v.toFixed(v < 10 ? 1 : 0)) + " " + UNITS[i];
}

export function percent(fraction) {
  return Math.max(0, Math.min(100, Math.floor((Number(fraction) || 0) * 100)));
}

/** A progress bar that assistive technology reads: role, value and the words. */
export function progressBar(fraction, label, words) {
  const value = percent(fraction);
  const fill = h("span", { class: "bar-fill" });
  fill.style.width = value + "%"; // CSSOM, not a style attribute: the CSP allows it
  return h(
    "div",
    { class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": String(value), "aria-valuetext": words || value + "%", "aria-label": label },
    fill
  );
}

// ------------------------------------------------------------------ rates

const samples = new Map(); // transfer id -> [[ms, bytes], ...]

/** Bytes per second over the last few seconds of updates, or null if not moving. */
export function rateOf(t) {
  if (ENDED.has(t.state)) {
    samples.delete(t.id);
    return null;
  }
  const now = Date.now();
  const list = samples.get(t.id) || [];
  const last = list[list.length - 1];
  if (!last || last[1] !== t.bytes_done) list.push([now, t.bytes_done]);
  while (list.length > 2 && now - list[0][0] > RATE_WINDOW_MS) list.shift();
  samples.set(t.id, list);
  if (t.state !== "active" || list.length < 2) return null;
  const [t0, b0] = list[0];
  const [t1, b1] = list[list.length - 1];
  return t1 > t0 && b1 > b0 ? ((b1 - b0) * 1000) / (t1 - t0) : null;
}

// ------------------------------------------------------------------ upload, download

/**
 * Send `file` (a File from the picker or a drop): its bytes are the body of a POST to
 * `target` (a contact's or a channel's `.../files/upload`). XMLHttpRequest, not fetch, because only it
 * reports upload progress. Resolves to the transfer; `handle.abort()` stops it.
 */
export function uploadFile(target, file, onProgress, handle = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `${target}?name=${enc(file.name || "file")}`);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.responseType = "json";
    xhr.upload.onprogress = (e) => onProgress(e.lengthComputable && e.total ? e.loaded / e.total : 0, e.loaded);
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300 && xhr.response) resolve(xhr.response);
      else reject(errorOf(xhr.status, xhr.response, xhr.statusText));
    };
    xhr.onerror = () => reject(new ApiError(0, "offline", "the upload was cut off (is the daemon running?)"));
    xhr.onabort = () => reject(new ApiError(0, "aborted", "upload cancelled"));
    handle.abort = () => xhr.abort();
    xhr.send(file);
  });
}

/** The name to save under: the one the daemon saved it as (already made safe). */
export function saveName(t) {
  const base = t.path ? String(t.path).split(/[\\/]/).pop() : "";
  return base || t.name || "file";
}

/** Where the daemon serves a received file: a channel file has its own route. */
export function downloadUrl(t) {
  return t.download || `/download?id=${enc(t.id)}`;
}

/** Have the browser save `url` as `name`: its own download (streamed to its own folder,
 * with its own progress), signed in by the cookie; nothing is held in the page. */
export function saveAs(url, name) {
  const a = h("a", { href: url, download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
}

// ------------------------------------------------------------------ the card

const STATE_WORDS = {
  in: {
    offered: "Offered to you",
    active: "Receiving",
    paused: "Paused",
    done: "Received",
    rejected: "You declined it",
    refused: "Refused",
    cancelled: "Cancelled",
    failed: "Failed",
  },
  out: {
    offered: "Waiting for them to accept",
    active: "Sending",
    paused: "Paused",
    done: "Delivered",
    rejected: "They declined it",
    refused: "They refused it",
    cancelled: "Cancelled",
    failed: "Failed",
  },
};
const ENDED = new Set(["done", "rejected", "refused", "cancelled", "failed"]);

/** The buttons a transfer in this state offers: [action, label]. */
export function actionsFor(t) {
  if (ENDED.has(t.state)) return [];
  const out = [];
  if (t.direction === "in" && t.state === "offered") out.push(["accept", "Accept"], ["reject", "Reject"]);
  // A sender may pause an offer not yet taken up: nothing goes out until Resume.
  if (t.state === "active" || (t.direction === "out" && t.state === "offered")) out.push(["pause", "Pause"]);
  if (t.state === "paused") out.push(["resume", "Resume"]);
  if (!(t.direction === "in" && t.state === "offered")) out.push(["cancel", "Cancel"]);
  return out;
}

/** Why a transfer stopped, when that says more than its state (a decline is a decline). */
function reasonOf(t) {
  if (!t.error || t.state === "paused" || (SAID[t.state] || [t.state]).includes(t.error)) return null;
  return t.error;
}
// Reasons that only repeat the state (the wire's words for a plain decline or cancel).
const SAID = { rejected: ["rejected"], cancelled: ["cancel", "cancelled"] };

/** How a change of state is announced to a screen reader: "holiday.bin: Received". */
/** What a state is called; an inline file we sent is "done" once it left in its message. */
function wordsFor(t) {
  const dir = t.direction === "out" ? "out" : "in";
  if (dir === "out" && t.inline && t.state === "done") return "Sent with the message";
  return STATE_WORDS[dir][t.state] || t.state;
}

export function stateWords(t) {
  return `${t.name}: ${wordsFor(t)}`;
}

/**
 * The card of transfer `t`. `act(t, action)` runs a button; `save(t, card)` saves a
 * received file. `who` (optional) is a node naming the other side, for the Files screen;
 * `named` (optional) says a state in other words (a channel's file is not "Delivered").
 */
export function transferCard(t, { act, save, who, named }) {
  const dir = t.direction === "out" ? "out" : "in";
  const words = (named ? named(t) : wordsFor(t)) + (t.state === "paused" && t.error ? ` (${t.error})` : "");
  const moving = t.state === "active" || t.state === "paused" || (dir === "out" && t.bytes_done > 0 && !ENDED.has(t.state));
  const rate = rateOf(t);
  const pct = percent(t.progress);
  const detail = `${pct}%` + (rate ? ` \u00b7 ${humanSize(rate)}/s` : "") + ` \u00b7 ${humanSize(t.bytes_done)} of ${humanSize(t.size)}`;
  const buttons = actionsFor(t).map(([action, label]) =>
    h("button", { type: "button", class: action === "reject" || action === "cancel" ? "secondary" : null, "data-action": action, onclick: () => act(t, action) }, label)
  );
  if (dir === "in" && t.state === "done") {
    buttons.push(h("button", { type: "button", "data-action": "save", onclick: (e) => save(t, e.target.closest(".file-card")) }, "Save"));
  }
  return h(
    "div",
    { class: `file-card f-${t.state}`, "data-transfer": t.id, "data-state": t.state },
    h(
      "div",
      { class: "file-head" },
      h("span", { class: "file-icon", "aria-hidden": "true" }, dir === "out" ? "\u2191" : "\u2193"),
      untrusted(t.name, "file-name"),
      h("span", { class: "file-size muted" }, humanSize(t.size))
    ),
    h("div", { class: "file-state small" }, who ? [dir === "out" ? "To " : "From ", who, " \u00b7 "] : null, words),
    moving ? [progressBar(t.progress, "Transfer progress", detail), h("div", { class: "file-detail small muted" }, detail)] : null,
    reasonOf(t) ? h("div", { class: "file-error small" }, "Reason: ", untrusted(reasonOf(t))) : null,
    buttons.length ? h("div", { class: "row file-actions" }, buttons) : null
  );
}

/** The card of a file still going up to the daemon (no transfer yet). */
export function uploadCard(file, fraction, onCancel) {
  const pct = percent(fraction);
  return h(
    "div",
    { class: "file-card f-uploading" },
    h("div", { class: "file-head" }, h("span", { class: "file-icon", "aria-hidden": "true" }, "\u2191"), untrusted(file.name, "file-name"), h("span", { class: "file-size muted" }, humanSize(file.size))),
    // At 100% the daemon still hashes the file before it offers it (seconds for gigabytes).
    h("div", { class: "file-state small" }, fraction >= 1 ? "Preparing the offer\u2026" : "Uploading to your daemon"),
    progressBar(fraction, "Upload progress", `${pct}%`),
    h("div", { class: "file-detail small muted" }, `${pct}% \u00b7 ${humanSize(file.size * fraction)} of ${humanSize(file.size)}`),
    h("div", { class: "row file-actions" }, h("button", { type: "button", class: "secondary", "data-action": "cancel-upload", onclick: onCancel }, "Cancel"))
  );
}
