// The btchat web app: screens over the public API. Everything from the network is
// rendered as text (dom.js); nothing here builds markup from strings.
import { api, apiBytes, ApiError, connectEvents, enc, signIn } from "./api.js";
import { fill, h, plainPreview, untrusted } from "./dom.js";
import { downloadUrl, humanSize, saveAs, saveName, stateWords, transferCard, uploadCard, uploadFile } from "./files.js";

const PAGE = 50; // messages per history page
// At most this many history rows stay in the page: rows far from the view are dropped
// (and fetched again when scrolled back to), so a long conversation's page does not grow.
const MAX_ROWS = 300;
const MAX_FETCH = 500; // the API's largest page
const TYPING_SHOWN_MS = 6000; // how long a "typing" lasts without a refresh
const TYPING_SEND_MS = 3000; // at most one "I am typing" per this interval
const MEMBERS_POLL_MS = 5000; // a channel's member list and presence, read again
const PRESENCES = new Set(["online", "away", "busy", "offline"]);
const TICKS = {
  pending: ["\u25cb", "waiting to send"],
  sent: ["\u2713", "sent"],
  delivered: ["\u2713\u2713", "delivered"],
  read: ["\u2713\u2713", "read"],
  failed: ["!", "not delivered"],
};
// How far a message has come. The POST reply and the event stream race; a tick never
// goes back, and a receipt that beats its row is kept until the row arrives.
const PROGRESS = { pending: 0, failed: 0, sent: 1, delivered: 2, read: 3 };

const state = {
  me: null,
  contacts: new Map(), // public_key -> contact
  summary: new Map(), // public_key -> {last, unread}
  typing: new Map(), // public_key -> timeout id
  requests: [],
  transfers: new Map(), // transfer id (the offer's message id) -> transfer
  uploads: [], // files going up to the daemon: {key, pk, file, fraction, handle, row}
  filesOn: true, // false when the daemon transfers no files (501)
  view: null, // {kind, key, ...}
  live: false,
  linking: null, // the "Link a device" card's {ended(text, kind)} while it is shown
  devices: null, // the "Your devices" card's {reload()} while it is shown
  profile: null, // the "Your profile" card's {reload(), editing()} while it is shown
};
let uploadSeq = 0;

const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------ theme

function applyTheme(theme) {
  if (theme) document.documentElement.dataset.theme = theme;
  else delete document.documentElement.dataset.theme;
}

function toggleTheme() {
  const dark =
    document.documentElement.dataset.theme === "dark" ||
    (!document.documentElement.dataset.theme && matchMedia("(prefers-color-scheme: dark)").matches);
  const next = dark ? "light" : "dark";
  localStorage.setItem("btchat.theme", next);
  applyTheme(next);
}

// ------------------------------------------------------------------ notifications

// Asked for only from the "Notify me" switch (a click), never on load; the choice is
// remembered in localStorage, and needs the browser's permission as well.
const NOTIFY_KEY = "btchat.notify";

function canNotify() {
  return typeof window.Notification === "function";
}

function notifying() {
  return canNotify() && localStorage.getItem(NOTIFY_KEY) === "on" && Notification.permission === "granted";
}

/** Tell the person about something from contact `pk`, unless they are looking at that
 * very conversation: the tab is hidden, or another screen is shown. */
function notify(pk, preview) {
  if (!notifying()) return;
  const viewing = state.view && state.view.kind === "chat" && state.view.key === pk;
  if (viewing && document.visibilityState === "visible") return;
  const c = state.contacts.get(pk);
  try {
    const n = new Notification(plainPreview(c ? c.name : "A contact", 64), {
      body: plainPreview(preview),
      tag: "btchat-" + pk, // one per conversation: a newer message replaces it
      icon: "/app/icon.svg",
    });
    n.onclick = () => {
      window.focus();
      go("#/chat/" + pk);
      n.close();
    };
  } catch (err) {
    // a browser that refuses to build one here (no service worker): nothing to show
  }
}

/** The "Notify me" switch of the status screen. */
function notifySwitch() {
  const box = h("input", { type: "checkbox", id: "notify-me" });
  const line = h("p", { class: "small muted", id: "notify-note" });
  const say = (text) => fill(line, text);
  if (!canNotify()) {
    box.disabled = true;
    say("This browser shows no notifications.");
  } else {
    box.checked = notifying();
    if (Notification.permission === "denied") say("The browser blocks notifications for this page; allow them in its site settings.");
  }
  box.addEventListener("change", async () => {
    if (!box.checked) {
      localStorage.setItem(NOTIFY_KEY, "off");
      say("Off.");
      return;
    }
    let answer = Notification.permission;
    if (answer !== "granted") {
      try {
        answer = await Notification.requestPermission();
      } catch (err) {
        answer = "denied";
      }
    }
    box.checked = answer === "granted";
    localStorage.setItem(NOTIFY_KEY, box.checked ? "on" : "off");
    say(box.checked ? "On: new messages and file offers are shown while this tab is hidden or shows another screen." : "The browser did not allow notifications.");
  });
  return h("section", { class: "card", "aria-label": "Notifications" },
    h("h3", {}, "Notifications"),
    h("label", { class: "check" }, box, " Notify me of new messages and file offers"),
    line);
}

// ------------------------------------------------------------------ helpers

function notice(text, kind = "error") {
  const box = h("p", { class: "notice " + kind, role: kind === "error" ? "alert" : "status" }, text);
  return box;
}

function failText(err) {
  return err instanceof ApiError ? err.message : String(err);
}

/** Run an action from a form or button; show the error next to it, not in a popup. */
async function attempt(where, action) {
  const old = where.querySelector(".notice");
  if (old) old.remove();
  try {
    return await action();
  } catch (err) {
    where.append(notice(failText(err)));
    return undefined;
  }
}

/** A time from the API: milliseconds (seconds, if it is that small, for older rows). */
function when(ts) {
  const d = new Date(ts > 1e11 ? ts : ts * 1000);
  if (Number.isNaN(d.getTime())) return "";
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : d.toLocaleString();
}

function presenceDot(contact) {
  const p = contact.online ? (PRESENCES.has(contact.presence) ? contact.presence : "online") : "offline";
  return h("span", { class: "dot p-" + p, role: "img", "aria-label": p, title: p });
}

function screen(title, ...body) {
  const main = $("main");
  fill(main, h("header", { class: "screen-head" }, h("h2", {}, title)), ...body);
  return main;
}

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

// ------------------------------------------------------------------ conversation list

async function loadContacts() {
  const { contacts } = await api("GET", "/v1/contacts");
  state.contacts = new Map(contacts.map((c) => [c.public_key, c]));
  await Promise.all(contacts.map((c) => loadSummary(c.public_key)));
  renderList();
}

async function loadSummary(pk) {
  try {
    const { messages } = await api("GET", `/v1/contacts/${enc(pk)}/messages?limit=${PAGE}`);
    const unread = messages.filter(isUnread).length;
    state.summary.set(pk, { last: messages[messages.length - 1] || null, unread });
  } catch (err) {
    state.summary.set(pk, { last: null, unread: 0 });
  }
}

/** Received and not yet marked read (incoming rows are "delivered" until then). */
function isUnread(m) {
  return m.direction === "in" && m.state !== "read";
}

function renderList() {
  const list = $("conv-list");
  const chatDot = $("chat-dot");
  const shown = state.view && state.view.kind === "chat" && state.contacts.get(state.view.key);
  if (chatDot && shown) fill(chatDot, presenceDot(shown));
  const rows = [...state.contacts.values()].sort((a, b) => {
    const la = state.summary.get(a.public_key)?.last?.ts || 0;
    const lb = state.summary.get(b.public_key)?.last?.ts || 0;
    return lb - la || a.name.localeCompare(b.name);
  });
  if (!rows.length) {
    fill(list, h("li", { class: "empty" }, "No contacts yet. Add one with + Contact."));
    return;
  }
  fill(
    list,
    rows.map((c) => {
      const sum = state.summary.get(c.public_key) || { last: null, unread: 0 };
      const current = state.view && state.view.kind === "chat" && state.view.key === c.public_key;
      const typing = state.typing.has(c.public_key);
      return h(
        "li",
        {},
        h(
          "a",
          {
            href: "#/chat/" + c.public_key,
            class: "conv" + (current ? " current" : ""),
            "aria-current": current ? "page" : null,
            "data-key": c.public_key,
          },
          presenceDot(c),
          h(
            "span",
            { class: "conv-text" },
            h("span", { class: "conv-name" }, untrusted(c.name), c.verified ? h("span", { class: "verified", title: "verified" }, " \u2714") : null, c.blocked ? " (blocked)" : null),
            h(
              "span",
              { class: "conv-last" },
              typing ? h("em", {}, "typing\u2026") : sum.last ? [sum.last.direction === "out" ? "You: " : "", lastText(sum.last)] : ""
            )
          ),
          sum.unread ? h("span", { class: "badge", "aria-hidden": "true" }, String(sum.unread)) : null,
          sum.unread ? h("span", { class: "sr-only" }, `, ${sum.unread} unread`) : null
        )
      );
    })
  );
}

/** A conversation's last message, as its row in the list shows it. */
function lastText(m) {
  const t = m.type === "file" ? state.transfers.get(m.id) : null;
  return t ? ["File: ", untrusted(t.name)] : untrusted(m.text || (m.type === "file" ? "a file" : ""));
}

// ------------------------------------------------------------------ conversation view

function tick(m) {
  if (m.direction !== "out") return null;
  const [mark, label] = TICKS[m.state] || ["?", m.state];
  return h("span", { class: "tick t-" + (TICKS[m.state] ? m.state : "unknown"), role: "img", "aria-label": label, title: label }, mark);
}

function messageRow(m) {
  if (m.type === "file") return fileRow(m);
  return h(
    "li",
    { class: "msg " + (m.direction === "out" ? "out" : "in"), "data-id": m.id, "data-lamport": String(m.lamport) },
    h("div", { class: "bubble" }, untrusted(m.text, "text")),
    h("div", { class: "meta" }, h("time", {}, when(m.ts)), " ", tick(m))
  );
}

async function showChat(pk) {
  const contact = state.contacts.get(pk);
  if (!contact) {
    screen("Unknown contact", notice("No such contact."));
    return;
  }
  // below: the pages dropped under the view, newest last, as {before, count} to fetch
  // them again (before null: the live end, plus `missed` messages that came meanwhile).
  const view = { kind: "chat", key: pk, oldest: null, done: false, loading: false, lastTyping: 0, progress: new Map(), below: [], missed: 0 };
  state.view = view;
  const log = h("ol", { class: "history", "aria-label": "Messages", tabindex: "0" });
  const typingLine = h("p", { class: "typing", "aria-live": "polite" });
  const box = h("textarea", { id: "compose", rows: "2", placeholder: "Message", "aria-label": `Message to ${contact.name}` });
  const picker = h("input", { type: "file", id: "attach-input", multiple: true, hidden: true, "aria-label": "Files to send" });
  const attach = state.filesOn
    ? h("button", { type: "button", id: "attach", class: "icon-btn", "aria-label": "Attach files", title: "Attach files (or drop them on the conversation)", onclick: () => picker.click() }, "Attach")
    : null;
  picker.addEventListener("change", () => {
    const chosen = [...picker.files];
    picker.value = ""; // the same file may be chosen again
    sendFiles(pk, chosen);
  });
  const form = h("form", { class: "compose", "aria-label": "Send a message" }, attach, picker, box, h("button", { type: "submit" }, "Send"));
  view.log = log;
  view.typingLine = typingLine;
  const head = h(
    "header",
    { class: "screen-head" },
    h("span", { id: "chat-dot" }, presenceDot(contact)),
    h("h2", {}, untrusted(contact.name)),
    h("a", { href: "#/contact/" + pk, class: "btn", "aria-label": `Details of ${contact.name}` }, "Details")
  );
  fill($("main"), head, log, typingLine, form);
  renderList();

  async function send() {
    const text = box.value;
    if (!text.trim()) return;
    const sent = await attempt(form, () => api("POST", `/v1/contacts/${enc(pk)}/messages`, { text }));
    if (!sent) return;
    box.value = "";
    view.lastTyping = 0;
    api("POST", `/v1/contacts/${enc(pk)}/typing`, { on: false }).catch(() => {});
    addMessage(sent);
  }
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    send();
  });
  box.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    }
  });
  box.addEventListener("input", () => {
    const now = Date.now();
    if (box.value && now - view.lastTyping > TYPING_SEND_MS) {
      view.lastTyping = now;
      api("POST", `/v1/contacts/${enc(pk)}/typing`, { on: true }).catch(() => {});
    }
  });
  log.addEventListener("scroll", () => {
    if (log.scrollTop < 40) loadOlder(view);
    else if (view.below.length && log.scrollHeight - log.scrollTop - log.clientHeight < 40) loadNewer(view);
  });
  await loadOlder(view);
  if (state.view !== view) return;
  for (const up of state.uploads) if (up.pk === pk) log.append(up.row);
  log.scrollTop = log.scrollHeight;
  showTyping(pk);
  markRead(pk);
  box.focus();
}

async function loadOlder(view) {
  if (view.loading || view.done) return;
  view.loading = true;
  const before = view.oldest === null ? "" : `&before=${view.oldest}`;
  try {
    const { messages } = await api("GET", `/v1/contacts/${enc(view.key)}/messages?limit=${PAGE}${before}`);
    if (state.view !== view) return;
    if (messages.length < PAGE) view.done = true;
    if (!messages.length) return;
    view.oldest = messages[0].lamport;
    const height = view.log.scrollHeight;
    view.log.prepend(...messages.filter((m) => !rowOf(view, m.id)).map(messageRow));
    view.log.scrollTop += view.log.scrollHeight - height; // keep what was in view in place
    dropBelow(view);
  } catch (err) {
    view.log.before(notice(failText(err)));
  } finally {
    view.loading = false;
  }
}

function rowOf(view, id) {
  return view.log.querySelector(`li[data-id="${CSS.escape(String(id))}"]`);
}

function historyRows(view) {
  return view.log.querySelectorAll(":scope > li[data-lamport]");
}

/** Past MAX_ROWS, drop the newest rows (far under the view) and remember how to fetch
 * them again. */
function dropBelow(view) {
  const rows = historyRows(view);
  const extra = rows.length - MAX_ROWS;
  if (extra <= 0) return;
  const gone = [...rows].slice(rows.length - extra);
  const newest = Number(gone[gone.length - 1].dataset.lamport);
  const liveEnd = !view.below.length;
  view.below.push({ before: liveEnd || !Number.isFinite(newest) ? null : newest + 1, count: extra });
  for (const row of gone) row.remove();
}

/** Past MAX_ROWS, drop the oldest rows (far above the view), keeping the view still. */
function dropAbove(view) {
  const rows = historyRows(view);
  const extra = rows.length - MAX_ROWS;
  if (extra <= 0) return;
  const height = view.log.scrollHeight;
  for (const row of [...rows].slice(0, extra)) row.remove();
  view.log.scrollTop -= height - view.log.scrollHeight;
  const first = historyRows(view)[0];
  view.oldest = first ? Number(first.dataset.lamport) : null;
  view.done = false;
}

/** Scrolled back down to rows dropped earlier: fetch the nearest page of them again. */
async function loadNewer(view) {
  if (view.loading || !view.below.length) return;
  view.loading = true;
  const page = view.below[view.below.length - 1];
  const count = Math.min(MAX_FETCH, page.count + (page.before === null ? view.missed : 0));
  const before = page.before === null ? "" : `&before=${page.before}`;
  try {
    const { messages } = await api("GET", `/v1/contacts/${enc(view.key)}/messages?limit=${count}${before}`);
    if (state.view !== view) return;
    view.below.pop();
    if (page.before === null) view.missed = 0;
    const fresh = messages.filter((m) => !rowOf(view, m.id));
    const uploads = view.log.querySelector(":scope > li[data-upload]");
    for (const m of fresh) view.log.insertBefore(messageRow(m.direction === "out" ? { ...m, state: furthest(view, m.id, m.state) } : m), uploads);
    dropAbove(view);
  } catch (err) {
    view.log.before(notice(failText(err)));
  } finally {
    view.loading = false;
  }
}

/** The furthest of the state on record and `m.state`; remembers it for `m.id`. */
function furthest(view, id, stateName) {
  const known = view.progress.get(id);
  const best = known !== undefined && (PROGRESS[known] ?? -1) >= (PROGRESS[stateName] ?? -1) ? known : stateName;
  view.progress.set(id, best);
  return best;
}

function addMessage(m) {
  addMessages([m]);
}

/** Rows for messages of the conversation shown: new ones at the end, known ones redrawn
 * in place; one layout for the lot (a burst of events comes as one batch). */
function addMessages(list) {
  const view = state.view;
  if (!view || view.kind !== "chat") return;
  const mine = list.filter((m) => m.peer === view.key);
  if (!mine.length) return;
  const atBottom = view.log.scrollHeight - view.log.scrollTop - view.log.clientHeight < 80;
  let follow = atBottom;
  for (let m of mine) {
    if (m.direction === "out") m = { ...m, state: furthest(view, m.id, m.state) };
    const old = rowOf(view, m.id);
    if (old) {
      old.replaceWith(messageRow(m));
      continue;
    }
    if (view.below.length) {
      view.missed += 1; // the live end is not in the page: it comes when scrolled to
      continue;
    }
    view.log.append(messageRow(m));
    if (m.direction === "out") follow = true;
  }
  if (follow) {
    dropAbove(view);
    view.log.scrollTop = view.log.scrollHeight;
  }
}

// Message events are drawn in batches: each event updates the state at once, the rows
// and the list are drawn at most every FLUSH_MS (one layout for a burst, not one each).
const FLUSH_MS = 16;
let pendingMessages = [];
let flushTimer = null;

function queueMessage(m) {
  pendingMessages.push(m);
  if (flushTimer === null) flushTimer = setTimeout(flushMessages, FLUSH_MS);
}

function flushMessages() {
  flushTimer = null;
  const batch = pendingMessages;
  pendingMessages = [];
  addMessages(batch);
  renderList();
  const view = state.view;
  if (view && view.kind === "chat" && batch.some((m) => m.peer === view.key)) markRead(view.key);
  const lastIn = new Map(); // one notification per conversation per batch: the latest
  for (const m of batch) if (m.direction === "in" && m.type !== "file") lastIn.set(m.peer, m);
  for (const m of lastIn.values()) notify(m.peer, m.text); // file offers: file_offer
}

const reading = new Map(); // public_key -> true while a read mark is on its way (false: again after)

async function markRead(pk) {
  const sum = state.summary.get(pk);
  if (!sum || !sum.unread || document.visibilityState !== "visible") return;
  if (reading.has(pk)) {
    reading.set(pk, true); // one more when this one is answered, for what came meanwhile
    return;
  }
  reading.set(pk, false);
  try {
    const unread = sum.unread;
    await api("POST", `/v1/contacts/${enc(pk)}/read`);
    sum.unread = Math.max(0, sum.unread - unread);
    renderList();
  } catch (err) {
    // not fatal: the badge stays, the next open retries
  } finally {
    const again = reading.get(pk);
    reading.delete(pk);
    if (again) markRead(pk);
  }
}

function showTyping(pk) {
  const view = state.view;
  if (!view || view.kind !== "chat" || view.key !== pk) return;
  const c = state.contacts.get(pk);
  fill(view.typingLine, state.typing.has(pk) && c ? [untrusted(c.name), " is typing\u2026"] : "");
}

// ------------------------------------------------------------------ files

async function loadTransfers() {
  try {
    const { transfers } = await api("GET", "/v1/files");
    state.transfers = new Map(transfers.map((t) => [t.id, t]));
    state.filesOn = true;
  } catch (err) {
    if (err instanceof ApiError && err.status === 501) state.filesOn = false;
    else throw err;
  }
  renderFilesBadge();
}

/** On the Files button: offers waiting for an answer, and how far what is moving has
 * got (uploads and running transfers together), wherever in the app one is. */
function renderFilesBadge() {
  const badge = $("files-count");
  if (!badge) return;
  const all = [...state.transfers.values()];
  const waiting = all.filter((t) => t.direction === "in" && t.state === "offered").length;
  badge.hidden = !waiting;
  fill(badge, waiting ? String(waiting) : "");
  $("files-button").hidden = !state.filesOn;
  const moving = all.filter((t) => t.state === "active");
  let size = 0;
  let done = 0;
  for (const t of moving) {
    size += t.size;
    done += t.bytes_done;
  }
  for (const up of state.uploads) {
    size += up.file.size;
    done += up.file.size * up.fraction;
  }
  const activity = $("files-activity");
  const busy = moving.length + state.uploads.length;
  const pct = size ? Math.floor((done / size) * 100) : 0;
  activity.hidden = !busy;
  fill(activity, busy ? `\u2195 ${pct}%` : "");
  // The name starts with the words shown (WCAG 2.5.3), then says what they mean.
  const shown = ["Files", waiting ? String(waiting) : "", busy ? `\u2195 ${pct}%` : ""].filter(Boolean).join(" ");
  const words = [waiting ? `${waiting} offer${waiting > 1 ? "s" : ""} waiting` : "", busy ? `${pct}% moved` : ""].filter(Boolean);
  $("files-button").setAttribute("aria-label", `${shown}: file transfers${words.length ? ", " + words.join(", ") : ""}`);
}

function contactName(pk) {
  const c = state.contacts.get(pk);
  return c ? untrusted(c.name) : h("span", { class: "mono" }, String(pk).slice(0, 16));
}

/** A channel member: you, your petname for a contact, else the key's first 16 digits
 * (the full key in the tooltip, so two strangers stay told apart). */
function memberName(pk) {
  if (state.me && pk === state.me.public_key) return h("span", {}, "you");
  const el = contactName(pk);
  el.title = String(pk);
  return el;
}

function cardFor(t, withWho) {
  return transferCard(t, { act: actOn, save: saveFile, who: withWho ? contactName(t.contact) : null });
}

/** A file offer in the conversation: the transfer's card, or the offer's text until the
 * transfer is known (the message event comes first). */
function fileRow(m) {
  const t = state.transfers.get(m.id);
  const body = t ? cardFor(t, false) : h("div", { class: "file-card", "data-transfer": m.id }, untrusted(m.text || "A file", "text"));
  return h(
    "li",
    { class: "msg file " + (m.direction === "out" ? "out" : "in"), "data-id": m.id, "data-lamport": String(m.lamport), "aria-live": "off" },
    h("div", { class: "bubble" }, body),
    h("div", { class: "meta" }, h("time", {}, when(m.ts)), " ", tick(m))
  );
}

/** A transfer changed: remember it and redraw its cards wherever they are, keeping the
 * keyboard focus on the card (on the same button when it is still there). */
function updateTransfer(t) {
  if (!t || typeof t.id !== "string") return;
  const before = state.transfers.get(t.id);
  const known = before !== undefined;
  state.transfers.set(t.id, t);
  // Cards redraw quietly (aria-live off: progress would be read out twice a second);
  // a change of state is said once, here.
  if (!before || before.state !== t.state) fill($("sr-status"), stateWords(t));
  for (const old of document.querySelectorAll(`[data-transfer="${CSS.escape(t.id)}"]`)) {
    const focused = document.activeElement && old.contains(document.activeElement) ? document.activeElement.dataset.action || "" : null;
    const fresh = cardFor(t, old.closest(".transfer-list") !== null);
    old.replaceWith(fresh);
    if (focused !== null) {
      const again = fresh.querySelector(`[data-action="${CSS.escape(focused)}"]`) || fresh.querySelector("button");
      if (again) again.focus();
    }
  }
  if (!known && state.view && state.view.kind === "files") renderFiles();
  if (!known) renderList();
  renderFilesBadge();
}

async function actOn(t, action) {
  const card = document.querySelector(`[data-transfer="${CSS.escape(t.id)}"]`);
  const where = (card && card.parentElement) || $("main");
  const done = await attempt(where, () => api("POST", `/v1/files/${enc(t.id)}`, { action }));
  if (done) updateTransfer(done);
}

/** Hand a received file to the browser's own download: streamed from the daemon to disk,
 * whatever its size (the page holds none of it). */
function saveFile(t) {
  saveAs(downloadUrl(t), saveName(t));
}

/** Upload `files` to contact `pk` one after another, each with its own progress row. */
async function sendFiles(pk, files) {
  if (!files.length) return;
  const ups = files.map((file) => ({ key: ++uploadSeq, pk, file, fraction: 0, handle: {}, row: null }));
  for (const up of ups) {
    up.row = h("li", { class: "msg out file uploading", "data-upload": String(up.key), "aria-live": "off" }, h("div", { class: "bubble" }));
    drawUpload(up);
    state.uploads.push(up);
    const view = state.view;
    if (view && view.kind === "chat" && view.key === pk) {
      view.log.append(up.row);
      view.log.scrollTop = view.log.scrollHeight;
    }
  }
  for (const up of ups) {
    if (up.cancelled) continue;
    let t;
    try {
      t = await uploadFile(`/v1/contacts/${enc(pk)}/files/upload`, up.file, (fraction) => {
        up.fraction = fraction;
        drawUpload(up);
      }, up.handle);
    } catch (err) {
      if (err.code !== "aborted") {
        const bubble = up.row.querySelector(".bubble");
        fill(bubble, h("div", { class: "file-card f-failed" }, untrusted(up.file.name, "file-name")), notice("Not sent: " + failText(err)),
          h("button", { type: "button", class: "secondary", onclick: () => up.row.remove() }, "Dismiss"));
        up.failed = true;
      }
    }
    state.uploads = state.uploads.filter((u) => u !== up);
    renderFilesBadge();
    if (!up.failed) up.row.remove();
    if (t) {
      updateTransfer(t);
      const view = state.view;
      if (view && view.kind === "chat" && view.key === pk && !view.log.querySelector(`li[data-id="${CSS.escape(t.id)}"]`)) {
        addMessage({ id: t.id, peer: pk, direction: "out", type: "file", text: t.name, state: "sent", ts: Date.now(), lamport: "" });
      }
    }
  }
}

function drawUpload(up) {
  renderFilesBadge();
  fill(up.row.querySelector(".bubble"), uploadCard(up.file, up.fraction, () => {
    up.cancelled = true;
    if (up.handle.abort) up.handle.abort();
    state.uploads = state.uploads.filter((u) => u !== up);
    up.row.remove();
    renderFilesBadge();
  }));
}

/** Files dropped on a conversation are sent to it; elsewhere a drop does nothing (the
 * browser would otherwise leave the page to show the file). */
function setUpDrops() {
  const main = $("main");
  const carriesFiles = (e) => e.dataTransfer && [...e.dataTransfer.types].includes("Files");
  const inChat = () => state.filesOn && state.view && (state.view.kind === "chat" || (state.view.kind === "channel" && state.view.canPost));
  window.addEventListener("dragover", (e) => {
    if (carriesFiles(e)) e.preventDefault();
  });
  window.addEventListener("drop", (e) => {
    if (carriesFiles(e)) e.preventDefault();
  });
  main.addEventListener("dragover", (e) => {
    if (!carriesFiles(e) || !inChat()) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = "copy";
    main.classList.add("dropping");
  });
  main.addEventListener("dragleave", (e) => {
    if (!e.relatedTarget || !main.contains(e.relatedTarget)) main.classList.remove("dropping");
  });
  main.addEventListener("drop", (e) => {
    main.classList.remove("dropping");
    if (!carriesFiles(e) || !inChat()) return;
    e.preventDefault();
    if (state.view.kind === "channel") postChannelFiles(state.view.key, [...e.dataTransfer.files]);
    else sendFiles(state.view.key, [...e.dataTransfer.files]);
  });
}

function showFiles() {
  state.view = { kind: "files" };
  renderFiles();
  if (state.live) loadTransfers().then(() => state.view && state.view.kind === "files" && renderFiles()).catch(() => {});
}

function renderFiles() {
  if (!state.filesOn) return screen("Files", notice("This daemon does not transfer files."));
  const rows = [...state.transfers.values()].reverse(); // newest first
  const list = h("ul", { class: "transfer-list", "aria-label": "File transfers" });
  fill(list, rows.length ? rows.map((t) =>
    h("li", { class: "transfer", "aria-live": "off" }, cardFor(t, true),
      h("a", { href: "#/chat/" + t.contact, class: "small" }, "Open the conversation"))) : h("li", { class: "empty" }, "No transfers yet. Attach a file in a conversation, or drop it there."));
  const uploading = state.uploads.length ? h("p", { class: "muted" }, `${state.uploads.length} file(s) uploading to your daemon.`) : null;
  screen("Files", uploading, list);
}

// ------------------------------------------------------------------ contacts

function showAdd() {
  state.view = { kind: "add" };
  const ref = h("input", { id: "add-ref", required: true, maxlength: "1024", "aria-label": "Their ID or btchat: link", placeholder: "ID or btchat: link" });
  const name = h("input", { id: "add-name", maxlength: "64", "aria-label": "Petname (optional)", placeholder: "Petname (optional)" });
  const note = h("input", { id: "add-note", maxlength: "280", "aria-label": "Note with a request (optional)", placeholder: "Note (for a request)" });
  const picture = h("input", { type: "file", accept: "image/*", id: "add-qr-file", "aria-label": "A picture of their QR code" });
  const scanning = h("div", { class: "qr-camera", hidden: true });
  const camera = h("button", { type: "button", id: "add-qr-camera" }, "Scan with the camera");
  const found = (texts) => {
    if (!texts.length) return false;
    ref.value = texts[0];
    ref.dispatchEvent(new Event("input"));
    form.append(notice("Read from the QR code: check it, then add.", "ok"));
    return true;
  };
  picture.addEventListener("change", async () => {
    const file = picture.files && picture.files[0];
    if (!file) return;
    const r = await attempt(form, () => apiBytes("/v1/qr/scan", file));
    picture.value = "";
    if (r && !found(r.texts)) form.append(notice("No QR code found in that picture."));
  });
  camera.addEventListener("click", () => scanWithCamera(form, scanning, camera, found));
  const form = h(
    "form",
    { class: "card", "aria-label": "Add a contact" },
    h("label", {}, "ID or link", ref),
    h("div", { class: "row" }, h("label", { class: "small" }, "Or a picture of their QR code", picture), camera),
    scanning,
    h("label", {}, "Petname", name),
    h("label", {}, "Note", note),
    h(
      "div",
      { class: "row" },
      h("button", { type: "submit", id: "add-submit" }, "Add contact"),
      h("button", { type: "button", id: "add-request", onclick: () => request() }, "Send a contact request")
    )
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { ref: ref.value.trim() };
    if (name.value.trim()) body.name = name.value.trim();
    const c = await attempt(form, () => api("POST", "/v1/contacts", body));
    if (c) {
      await loadContacts();
      go("#/chat/" + c.public_key);
    }
  });
  async function request() {
    const body = { ref: ref.value.trim() };
    if (note.value.trim()) body.note = note.value.trim();
    const r = await attempt(form, () => api("POST", "/v1/requests", body));
    if (r) go("#/requests");
  }
  screen("Add a contact", form);
  ref.focus();
}

async function showContact(pk) {
  const c = state.contacts.get(pk);
  if (!c) return screen("Unknown contact", notice("No such contact."));
  state.view = { kind: "contact", key: pk };
  const name = h("input", { value: c.name, maxlength: "64", "aria-label": "Petname" });
  const rename = h("form", { class: "row", "aria-label": "Rename" }, name, h("button", { type: "submit" }, "Rename"));
  const card = h("section", { class: "card" });
  rename.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (await attempt(card, () => api("PATCH", `/v1/contacts/${enc(pk)}`, { name: name.value.trim() }))) await reloadContact(pk);
  });
  const safety = h("p", { class: "safety mono", "aria-live": "polite" });
  const verify = h("button", { type: "button", onclick: async () => {
    const sn = await attempt(card, () => api("GET", `/v1/contacts/${enc(pk)}/safety-number`));
    if (sn) fill(safety, h("span", { class: "sr-only" }, "Safety number: "), sn.safety_number);
    if (sn && !c.verified && confirm("Does this number match the one your contact sees?")) {
      if (await attempt(card, () => api("PATCH", `/v1/contacts/${enc(pk)}`, { verified: true }))) await reloadContact(pk);
    }
  } }, c.verified ? "Show safety number" : "Verify\u2026");
  const block = h("button", { type: "button", onclick: async () => {
    if (await attempt(card, () => api("PATCH", `/v1/contacts/${enc(pk)}`, { blocked: !c.blocked }))) await reloadContact(pk);
  } }, c.blocked ? "Unblock" : "Block");
  const remove = h("button", { type: "button", class: "danger", onclick: async () => {
    if (!confirm("Forget this contact and your conversation?")) return;
    if ((await attempt(card, () => api("DELETE", `/v1/contacts/${enc(pk)}`))) !== undefined) {
      await loadContacts();
      go("#/");
    }
  } }, "Remove");
  fill(
    card,
    h("dl", {},
      h("dt", {}, "ID"), h("dd", { class: "mono" }, untrusted(c.id)),
      h("dt", {}, "Presence"), h("dd", {}, presenceDot(c), " ", c.online ? c.presence : "offline"),
      h("dt", {}, "Verified"), h("dd", {}, c.verified ? "yes" : "no"),
      c.profile && c.profile.name ? [h("dt", {}, "Calls themselves"), h("dd", {}, untrusted(c.profile.name))] : null,
      c.profile && c.profile.status ? [h("dt", {}, "Status"), h("dd", {}, untrusted(c.profile.status))] : null
    ),
    rename, safety,
    h("div", { class: "row" }, verify, block, remove)
  );
  screen(untrusted(c.name), card, h("a", { href: "#/chat/" + pk, class: "btn" }, "Back to the conversation"));
}

async function reloadContact(pk) {
  const c = await api("GET", `/v1/contacts/${enc(pk)}`);
  state.contacts.set(pk, c);
  renderList();
  if (state.view && state.view.key === pk) route();
}

// ------------------------------------------------------------------ requests

async function loadRequests() {
  const { requests } = await api("GET", "/v1/requests");
  state.requests = requests;
  const pending = requests.filter((r) => r.direction === "in" && r.state === "pending").length;
  const badge = $("req-count");
  badge.hidden = !pending;
  fill(badge, String(pending));
  badge.parentElement.setAttribute("aria-label", pending ? `Requests ${pending}: contact requests, ${pending} waiting` : "Requests: contact requests");
}

async function showRequests() {
  state.view = { kind: "requests" };
  await loadRequests();
  const card = h("section", { class: "card" });
  const row = (r) =>
    h("li", { class: "request" },
      h("span", { class: "dir" }, r.direction === "in" ? "From " : "To "),
      h("span", { class: "mono" }, untrusted(r.public_key || r.id)),
      r.note ? h("q", {}, untrusted(r.note)) : null,
      h("span", { class: "state" }, " ", r.state || ""),
      r.direction === "in" && r.state === "pending"
        ? h("span", { class: "row" },
            h("button", { type: "button", onclick: () => answer(r, true) }, "Accept"),
            h("button", { type: "button", onclick: () => answer(r, false) }, "Decline"))
        : null);
  async function answer(r, accept) {
    if ((await attempt(card, () => api("POST", `/v1/requests/${enc(r.id)}`, { accept }))) !== undefined) {
      if (accept) await loadContacts();
      showRequests();
    }
  }
  const incoming = state.requests.filter((r) => r.direction === "in");
  const outgoing = state.requests.filter((r) => r.direction !== "in");
  fill(card,
    h("h3", {}, "Received"), incoming.length ? h("ul", {}, incoming.map(row)) : h("p", { class: "empty" }, "None."),
    h("h3", {}, "Sent"), outgoing.length ? h("ul", {}, outgoing.map(row)) : h("p", { class: "empty" }, "None."));
  screen("Contact requests", card);
}

// ------------------------------------------------------------------ channels

async function showChannels() {
  state.view = { kind: "channels" };
  const card = h("section", { class: "card" });
  const name = h("input", { maxlength: "64", required: true, "aria-label": "New channel name", placeholder: "Channel name" });
  const inviteOnly = h("input", { type: "checkbox", "aria-label": "Invite only" });
  const create = h("form", { class: "row", "aria-label": "Create a channel" }, name, h("label", {}, inviteOnly, " invite only"), h("button", { type: "submit" }, "Create"));
  const link = h("input", { required: true, "aria-label": "Channel link", placeholder: "btchat:channel link" });
  const join = h("form", { class: "row", "aria-label": "Join a channel" }, link, h("button", { type: "submit" }, "Join"));
  create.addEventListener("submit", async (e) => {
    e.preventDefault();
    const ch = await attempt(card, () => api("POST", "/v1/channels", { name: name.value.trim(), invite_only: inviteOnly.checked }));
    if (ch) go("#/channel/" + ch.id);
  });
  join.addEventListener("submit", async (e) => {
    e.preventDefault();
    const ch = await attempt(card, () => api("POST", "/v1/channels/join", { chatfile: link.value.trim() }));
    if (ch) go("#/channel/" + ch.id);
  });
  const list = h("ul", { class: "channel-list", "aria-label": "Your channels" });
  fill(card, h("h3", {}, "Your channels"), list, h("h3", {}, "Create"), create, h("h3", {}, "Join by link"), join);
  screen("Channels", card);
  // Only the list is drawn again when a channel comes or goes, not the forms being typed in.
  const view = state.view;
  view.reload = async () => {
    const found = await attempt(card, () => api("GET", "/v1/channels"));
    if (!found || state.view !== view) return;
    fill(list, found.channels.length ? found.channels.map((c) =>
      h("li", {}, h("a", { href: "#/channel/" + c.id }, untrusted(c.name)), " ", h("span", { class: "muted" }, `${c.members ?? "?"} members`))) : h("li", { class: "empty" }, "None yet."));
  };
  await view.reload();
}

async function showChannel(id) {
  const view = { kind: "channel", key: id };
  state.view = view;
  const main = screen("Channel");
  let ch;
  try {
    ch = await api("GET", `/v1/channels/${enc(id)}`);
  } catch (err) {
    main.append(notice(failText(err)));
    return;
  }
  const log = h("ol", { class: "history", "aria-label": "Channel messages", tabindex: "0" });
  const box = h("textarea", { rows: "2", placeholder: "Post to the channel", "aria-label": "Post to the channel" });
  // Private to one member (chosen in the member list), or to everyone.
  const privately = h("p", { class: "private-to", hidden: true });
  const picker = h("input", { type: "file", id: "channel-attach-input", multiple: true, hidden: true, "aria-label": "Files to post" });
  const attach = state.filesOn
    ? h("button", { type: "button", class: "icon-btn", "aria-label": "Attach files to the channel", title: "Post files (or drop them on the channel)", onclick: () => picker.click() }, "Attach")
    : null;
  picker.addEventListener("change", () => {
    const chosen = [...picker.files];
    picker.value = "";
    postChannelFiles(id, chosen);
  });
  const form = h("form", { class: "compose", "aria-label": "Post" }, privately, attach, picker, box, h("button", { type: "submit" }, "Post"));
  view.files = new Map(); // file message id -> the file as GET .../files says it
  view.canPost = !ch.removed;
  const mine = state.me && ch.owner === state.me.public_key;
  const writeTo = (member) => {
    view.to = member ? member.public_key : null;
    privately.hidden = !member;
    box.placeholder = member ? "Private message" : "Post to the channel";
    box.setAttribute("aria-label", member ? "Private message to the member" : "Post to the channel");
    if (member) fill(privately, "Private to ", memberName(member.public_key), " ",
      h("button", { type: "button", "aria-label": "Post to everyone instead", onclick: () => writeTo(null) }, "\u00d7"));
    box.focus();
  };
  const members = h("ul", { class: "members", "aria-label": "Members" });
  const invite = h("input", { "aria-label": "ID to add as a member", placeholder: "ID to add" });
  const addForm = h("form", { class: "row", "aria-label": "Add a member" }, invite, h("button", { type: "submit" }, "Add member"));
  const linkBox = h("input", { readonly: true, value: ch.uri, "aria-label": "Channel link", class: "mono" });
  view.log = log;
  fill(main,
    h("header", { class: "screen-head" }, h("h2", {}, untrusted(ch.name)), h("span", { class: "muted" }, ch.invite_only ? "invite only" : "open")),
    h("div", { class: "split" },
      h("section", { class: "chat-col" }, log,
        ch.removed ? notice("The owner removed you from this channel: you can read what you have, not post.", "info") : form),
      h("aside", { class: "card side-col", "aria-label": "Channel details" },
        h("h3", {}, "Link"), h("div", { class: "row" }, linkBox, copyButton(() => ch.uri)),
        h("h3", {}, "Members"), members, addForm)));
  const post = async () => {
    const text = box.value;
    if (!text.trim()) return;
    const to = view.to ? [view.to] : undefined;
    const m = await attempt(form, () => api("POST", `/v1/channels/${enc(id)}/messages`, { text, to }));
    if (m) {
      box.value = "";
      addChannelMessage(id, m);
    }
  };
  form.addEventListener("submit", (e) => { e.preventDefault(); post(); });
  box.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); post(); }
  });
  addForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    if ((await attempt(addForm, () => api("POST", `/v1/channels/${enc(id)}/members`, { add: [invite.value.trim()] }))) !== undefined) {
      invite.value = "";
      loadMembers();
    }
  });
  async function loadMembers() {
    const found = await attempt(members, () => api("GET", `/v1/channels/${enc(id)}/members`));
    // Not redrawn while a removal waits for its second click, nor when nothing changed.
    const said = found && JSON.stringify(found.members);
    if (!found || said === members.dataset.said || members.querySelector("span:not([hidden]) > button.danger")) return;
    members.dataset.said = said;
    fill(members, found.members.map(memberRow));
  }
  function memberRow(m) {
    const here = m.online || m.me;
    const li = h("li", {},
      h("span", { class: "dot p-" + (here ? "online" : "offline"), role: "img", "aria-label": here ? "online" : "offline" }),
      " ", m.public_key ? memberName(m.public_key) : untrusted(m.id || "?", "mono"), m.me ? " (you)" : "",
      m.role ? h("span", { class: "muted" }, " " + m.role) : null);
    if (m.me || !m.public_key || ch.removed) return li;
    li.append(" ", h("button", { type: "button", class: "small", onclick: () => writeTo(m) }, "Private message"));
    if (mine && ch.invite_only) {
      li.append(" ", ...askTwice("Remove\u2026", " Remove this member? They can read nothing posted after. ",
        "Remove", "Keep", async () => {
          if ((await attempt(members, () => api("POST", `/v1/channels/${enc(id)}/members`, { remove: [m.public_key] }))) !== undefined) loadMembers();
        }));
    }
    return li;
  }
  loadMembers();
  // Members come and go and their presence changes with no event of its own: the list
  // is read again while the channel is shown.
  const poll = setInterval(() => (state.view === view ? loadMembers() : clearInterval(poll)), MEMBERS_POLL_MS);
  if (state.filesOn) {
    const held = await attempt(log, () => api("GET", `/v1/channels/${enc(id)}/files`));
    if (held) for (const f of held.files) view.files.set(f.id, f);
  }
  const found = await attempt(log, () => api("GET", `/v1/channels/${enc(id)}/messages?limit=${PAGE}`));
  if (found) for (const m of found.messages) addChannelMessage(id, m);
}

// ------------------------------------------------------------------ channel files

const CHANNEL_FILE_WORDS = {
  offered: "Posted in the channel: fetch it?",
  active: "Fetching from the members who have it",
  paused: "Paused",
  done: "You have it (members may fetch it from you too)",
  rejected: "You declined it",
  cancelled: "Cancelled",
  failed: "Failed",
};

/** A channel file as a transfer card: ours is served, not "delivered"; saved from the
 * channel's own content route. */
function channelFileCard(chId, f) {
  const t = { ...f, direction: f.mine ? "out" : "in", download: `/v1/channels/${enc(chId)}/files/${enc(f.id)}/content` };
  const named = (x) => (x.mine ? "Posted by you: members fetch it from you and each other" : CHANNEL_FILE_WORDS[x.state] || x.state)
    + (x.state === "active" && x.sources ? ` (${x.sources} now)` : "");
  return transferCard(t, { act: (x, action) => actOnChannelFile(chId, x, action), save: saveFile, named });
}

async function actOnChannelFile(chId, f, action) {
  const card = document.querySelector(`[data-transfer="${CSS.escape(f.id)}"]`);
  const where = (card && card.parentElement) || $("main");
  const done = await attempt(where, () => api("POST", `/v1/channels/${enc(chId)}/files/${enc(f.id)}`, { action }));
  if (done) updateChannelFile(done);
}

/** A channel file changed (an event, or our own action): its card is drawn again. */
function updateChannelFile(f) {
  const view = state.view;
  if (!f || typeof f.id !== "string" || !view || view.kind !== "channel" || view.key !== f.channel) return;
  const before = view.files.get(f.id);
  view.files.set(f.id, f);
  if (!before || before.state !== f.state) fill($("sr-status"), `${f.name}: ${CHANNEL_FILE_WORDS[f.state] || f.state}`);
  for (const old of view.log.querySelectorAll(`[data-transfer="${CSS.escape(f.id)}"]`)) old.replaceWith(channelFileCard(f.channel, f));
}

/** Post `files` in channel `chId` one after another, each with its progress row. */
async function postChannelFiles(chId, files) {
  const view = state.view;
  for (const file of files) {
    const handle = {};
    const row = h("li", { class: "msg out file uploading", "aria-live": "off" }, h("div", { class: "bubble" }));
    const draw = (fraction) => fill(row.querySelector(".bubble"), uploadCard(file, fraction, () => { if (handle.abort) handle.abort(); row.remove(); }));
    draw(0);
    if (view.log) {
      view.log.append(row);
      view.log.scrollTop = view.log.scrollHeight;
    }
    let f;
    try {
      f = await uploadFile(`/v1/channels/${enc(chId)}/files/upload`, file, draw, handle);
    } catch (err) {
      if (err.code !== "aborted") {
        fill(row.querySelector(".bubble"), h("div", { class: "file-card f-failed" }, untrusted(file.name, "file-name")), notice("Not posted: " + failText(err)),
          h("button", { type: "button", class: "secondary", onclick: () => row.remove() }, "Dismiss"));
      }
      continue;
    }
    row.remove();
    if (state.view === view) {
      addChannelMessage(chId, { id: f.id, channel: chId, author: f.author, text: f.name, ts: Date.now(), file: { name: f.name, size: f.size } });
      trackChannelFile(view, f);
    }
  }
}

/** A file the channel view did not know: remembered, and its message (drawn as a name
 * only if it came first) gets its card. */
function trackChannelFile(view, f) {
  view.files.set(f.id, f);
  const bubble = view.log.querySelector(`li[data-id="${CSS.escape(f.id)}"] .bubble`);
  if (bubble) fill(bubble, channelFileCard(f.channel, f));
}

function channelRow(m) {
  const mine = state.me && m.author === state.me.public_key;
  const f = m.file && state.view && state.view.files ? state.view.files.get(m.id) : null;
  // A file message: its card when the daemon tracks it (not yet, or too many: its name).
  const body = f ? channelFileCard(m.channel || f.channel, f) : m.file ? ["File: ", untrusted(m.text, "text")] : untrusted(m.text, "text");
  return h("li", { class: "msg " + (mine ? "out" : "in") + (m.file ? " file" : ""), "data-id": m.id || "" },
    mine ? null : h("div", { class: "author" }, memberName(m.author || "?")),
    h("div", { class: "bubble" }, body),
    h("div", { class: "meta" }, h("time", {}, m.ts ? when(m.ts) : ""), m.private ? " private" : ""));
}

function addChannelMessage(id, m) {
  const view = state.view;
  if (!view || view.kind !== "channel" || view.key !== id) return;
  if (m.id && view.log.querySelector(`li[data-id="${CSS.escape(m.id)}"]`)) return;
  view.log.append(channelRow(m));
  view.log.scrollTop = view.log.scrollHeight;
}

// ------------------------------------------------------------------ status

function copyButton(getText) {
  const btn = h("button", { type: "button", "aria-label": "Copy", onclick: async () => {
    try {
      await navigator.clipboard.writeText(getText());
      fill(btn, "Copied");
    } catch (err) {
      fill(btn, "Copy failed");
    }
    setTimeout(() => fill(btn, "Copy"), 1500);
  } }, "Copy");
  return btn;
}

function drawQr(canvas, qr) {
  const n = qr.rows.length + 2 * qr.quiet_zone;
  const scale = Math.max(2, Math.floor(240 / n));
  canvas.width = canvas.height = n * scale;
  const g = canvas.getContext("2d");
  g.fillStyle = "#fff";
  g.fillRect(0, 0, canvas.width, canvas.height);
  g.fillStyle = "#000";
  qr.rows.forEach((row, y) => {
    for (let x = 0; x < row.length; x++) {
      if (row[x] === "1") g.fillRect((x + qr.quiet_zone) * scale, (y + qr.quiet_zone) * scale, scale, scale);
    }
  });
}

/** The "Link a device" card: a one-time code for `btchat device join`; the outcome
 * arrives as an event (onEvent), said in the card's live region. */
function linkCard() {
  const out = h("p", { id: "link-state", "aria-live": "polite" });
  const start = h("button", { type: "button" }, "Link a new device");
  const cancel = h("button", { type: "button", hidden: true }, "Cancel the code");
  const card = h("section", { class: "card", "aria-label": "Link a device" },
    h("h3", {}, "Link a device"),
    h("p", { class: "small muted" }, "The new device gets your identity key, contacts and profile; your history follows over the devices' own sync (channels do not yet). Anyone who joins with the code can act as you until that device is revoked."),
    h("div", { class: "row" }, start, cancel), out);
  const ended = (text, kind) => {
    fill(out, notice(text, kind));
    start.hidden = false;
    cancel.hidden = true;
  };
  state.linking = { ended };
  start.addEventListener("click", async () => {
    if (!(await attempt(card, async () => {
      const offer = await api("POST", "/v1/devices/link");
      fill(out, "On the new device run ", h("code", { id: "link-code", class: "mono" }, "btchat device join " + offer.code), " (good once, for 10 minutes).");
      return true;
    }))) return;
    start.hidden = true;
    cancel.hidden = false;
  });
  cancel.addEventListener("click", () => attempt(card, () => api("DELETE", "/v1/devices/link")));
  return card;
}

/** The "Your profile" card: the name, status line and avatar contacts fetch (the avatar
 * is the SHA-256 of an image, hashed here; the image itself travels as a file). */
function profileCard() {
  const name = h("input", { id: "profile-name", maxlength: "64", "aria-label": "Your display name", placeholder: "Display name" });
  const status = h("input", { id: "profile-status", maxlength: "140", "aria-label": "Your status line", placeholder: "Status line" });
  const image = h("input", { type: "file", accept: "image/*", "aria-label": "Avatar image" });
  const avatar = h("p", { class: "small muted", id: "profile-avatar" });
  const form = h("form", { class: "stack", "aria-label": "Your profile" },
    h("label", {}, "Name ", name), h("label", {}, "Status ", status),
    h("label", {}, "Avatar ", image), avatar,
    h("div", { class: "row" }, h("button", { type: "submit" }, "Save the profile")));
  const card = h("section", { class: "card", "aria-label": "Your profile" },
    h("h3", {}, "Your profile"),
    h("p", { class: "small muted" }, "Published in the DHT under your ID: anyone who has your ID can read it. Your other devices get it too."),
    form);
  const shown = (p) => {
    name.value = p.name || "";
    status.value = p.status || "";
    fill(avatar, p.avatar ? "Avatar: SHA-256 " + p.avatar.slice(0, 16) + "\u2026" : "No avatar.");
  };
  const load = async () => {
    const p = await attempt(card, () => api("GET", "/v1/profile"));
    if (p) shown(p);
  };
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { status: status.value.trim() };
    if (name.value.trim()) body.name = name.value.trim();
    const file = image.files && image.files[0];
    if (file) {
      const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", await file.arrayBuffer()));
      body.avatar = [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
    }
    const saved = await attempt(form, () => api("PUT", "/v1/profile", body));
    if (!saved) return;
    shown(saved);
    image.value = "";
    form.append(notice("Saved and published.", "ok"));
  });
  state.profile = { reload: load, editing: () => card.contains(document.activeElement) };
  load();
  return card;
}

const SWITCHES = ["relay", "dht_proxy", "upnp", "lan", "ipv6", "tor"];
const SETTING_LABELS = { bootstrap: "Bootstrap nodes", proxy: "Proxy", tor: "Tor mode", relay: "Relay for my contacts", dht_proxy: "DHT for my contacts in Tor mode", upnp: "Port mapping (UPnP)", lan: "Find contacts on the LAN", ipv6: "IPv6" };

function settingText(v) {
  if (v === true) return "on";
  if (v === false) return "off";
  if (v === null || v === undefined) return "none";
  return Array.isArray(v) ? v.join(", ") : String(v);
}

/** The "Network settings" card: written to the config file for the next start (the
 * daemon runs with what it started with), each saying where its value comes from. */
function settingsCard() {
  const card = h("section", { class: "card", "aria-label": "Network settings" }, h("h3", {}, "Network settings"));
  const body = h("div");
  card.append(body);
  const shown = (view) => {
    const inputs = {};
    const rows = Object.entries(view.settings).map(([name, st]) => {
      let input;
      if (SWITCHES.includes(name)) {
        input = h("input", { type: "checkbox", id: "set-" + name });
        input.checked = Boolean(st.next_start);
      } else if (name === "bootstrap") {
        input = h("textarea", { id: "set-bootstrap", rows: "3", placeholder: "host:port, one per line (empty: the public routers)" });
        input.value = st.source === "default" ? "" : (st.next_start || []).join("\n");
      } else {
        input = h("input", { id: "set-" + name, placeholder: "socks5://127.0.0.1:9050 (empty: none)" });
        input.value = st.next_start || "";
      }
      inputs[name] = input;
      const notes = [];
      if (st.flag) notes.push("running with " + settingText(st.value) + ", from a flag of `btchat up`, which wins over the file");
      else if (JSON.stringify(st.value) !== JSON.stringify(st.next_start)) notes.push("running with " + settingText(st.value) + " until btchat restarts");
      if (st.source === "environment") notes.push("set by the environment, which wins over the file");
      const label = SWITCHES.includes(name)
        ? h("label", { class: "check" }, input, " " + SETTING_LABELS[name])
        : h("label", {}, SETTING_LABELS[name], input);
      return h("div", { class: "setting" }, label, h("p", { class: "small muted" }, st.about), notes.length ? h("p", { class: "small" }, notes.join("; ")) : null);
    });
    const form = h("form", { class: "stack", "aria-label": "Network settings" }, rows,
      h("div", { class: "row" }, h("button", { type: "submit" }, "Save for the next start")));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const changes = {};
      for (const [name, input] of Object.entries(inputs)) {
        const st = view.settings[name];
        let value;
        if (SWITCHES.includes(name)) value = input.checked;
        else if (name === "bootstrap") value = input.value.split("\n").map((l) => l.trim()).filter(Boolean);
        else value = input.value.trim();
        if (name === "bootstrap" && !value.length) value = null;
        if (name === "proxy" && !value) value = null;
        const before = name === "bootstrap" && st.source === "default" ? null : st.next_start;
        if (JSON.stringify(value) !== JSON.stringify(before ?? null)) changes[name] = value;
      }
      if (!Object.keys(changes).length) {
        form.append(notice("Nothing changed.", "ok"));
        return;
      }
      const after = await attempt(form, () => api("PUT", "/v1/settings", changes));
      if (!after) return;
      shown(after);
      body.append(notice("Saved to " + after.config_file + ". Restart btchat to apply.", "ok"));
    });
    fill(body,
      h("p", { class: "small muted" }, "Saved in ", h("code", { class: "mono" }, view.config_file), ". A flag given to `btchat up` wins over it."),
      view.problem ? notice(view.problem) : null,
      form);
  };
  attempt(card, () => api("GET", "/v1/settings")).then((view) => view && shown(view));
  return card;
}

/** The "Your devices" card: each device of this identity, whether it is online and in
 * sync, and a two-step revoke (a revocation is for good, so it asks once more). */
function devicesCard() {
  const card = h("section", { class: "card", "aria-label": "Your devices" }, h("h3", {}, "Your devices"));
  const list = h("ul", { class: "device-list", "aria-label": "Devices" });
  const foot = h("div");
  card.append(list, foot);
  const shown = (listing) => {
    fill(list, listing.devices.map((d) => deviceRow(d, listing, shown, card)));
    fill(foot);
    if (listing.revoked.length) foot.append(h("p", { class: "small muted" }, "Revoked: " + listing.revoked.map((r) => r.slice(0, 8)).join(", ")));
    if (listing.this_revoked) foot.append(notice("This device was revoked by another of your devices: your contacts refuse it. Link it anew to use it again."));
  };
  const load = async () => {
    const listing = await attempt(card, () => api("GET", "/v1/devices"));
    if (listing) shown(listing);
  };
  state.devices = { reload: load };
  load();
  return card;
}

function deviceRow(d, listing, shown, card) {
  const since = new Date(d.created * 1000).toLocaleDateString();
  const tags = [];
  if (d.this_device) tags.push("this device");
  else tags.push(d.online ? "online" : "offline", d.to_sync ? `${d.to_sync} messages to sync` : "in sync");
  if (d.device_id === listing.mailbox_device) tags.push("keeps offline delivery");
  const called = d.name || d.device_id.slice(0, 8);
  const li = h("li", { "data-device": d.device_id },
    h("strong", { class: "device-name" }, untrusted(called)), " ",
    h("code", { class: "mono", title: d.device_id }, d.device_id.slice(0, 8)), " ",
    h("span", { class: "muted" }, "since " + since + " \u00b7 " + tags.join(", ")));
  if (listing.this_revoked) return li;
  // Renaming: the name goes to all our devices (never into the DHT).
  const name = h("input", { maxlength: "40", required: true, value: d.name || "", "aria-label": "Name for " + called });
  const rename = h("form", { class: "row", hidden: true, "aria-label": "Rename " + called }, name,
    h("button", { type: "submit" }, "Save"));
  const open = h("button", { type: "button", class: "small" }, "Rename");
  open.addEventListener("click", () => { open.hidden = true; rename.hidden = false; name.focus(); });
  rename.addEventListener("submit", async (e) => {
    e.preventDefault();
    const after = await attempt(rename, () => api("PATCH", "/v1/devices/" + d.device_id, { name: name.value.trim() }));
    if (after) shown(after);
  });
  li.append(" ", open, rename);
  if (d.this_device) return li;
  li.append(" ", ...askTwice("Revoke\u2026",
    " Revoke " + called + " (" + d.device_id.slice(0, 8) + ") for good? Contacts stop talking to it; it cannot be undone. ",
    "Revoke for good", "Keep it", async () => {
      const after = await attempt(card, () => api("DELETE", "/v1/devices/" + d.device_id));
      if (after) shown(after);
    }));
  return li;
}

/** A button whose action runs only after a second, explicit click on the danger button
 * it reveals (with a way back): for what cannot be undone. */
function askTwice(label, question, yes, no, action) {
  const first = h("button", { type: "button" }, label);
  const back = () => { sure.hidden = true; first.hidden = false; };
  const sure = h("span", { hidden: true }, question,
    h("button", { type: "button", class: "danger", onclick: () => { back(); return action(); } }, yes),
    " ",
    h("button", { type: "button", onclick: back }, no));
  first.addEventListener("click", () => { first.hidden = true; sure.hidden = false; });
  return [first, sure];
}

const LINK_FAILED = {
  wrong_code: "A wrong code was tried; that code is used up. Make a new one.",
  expired: "No device joined within 10 minutes.",
  cancelled: "The code was cancelled.",
};

async function showStatus() {
  state.view = { kind: "status" };
  const main = screen("Status and settings");
  let s, me;
  try {
    [s, me] = await Promise.all([api("GET", "/v1/status"), api("GET", "/v1/identity")]);
  } catch (err) {
    main.append(notice(failText(err)));
    return;
  }
  const canvas = h("canvas", { class: "qr", role: "img", "aria-label": "QR code of your link" });
  api("GET", "/v1/identity/qr").then((qr) => drawQr(canvas, qr)).catch(() => canvas.remove());
  const reach = s.dht && s.dht.reachability;
  const pm = s.port_mapping;
  const presence = h("select", { "aria-label": "Your presence" }, [...PRESENCES].map((p) => h("option", { value: p }, p)));
  const presenceForm = h("form", { class: "row", "aria-label": "Set presence" }, presence, h("button", { type: "submit" }, "Set"));
  presenceForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (await attempt(presenceForm, () => api("PUT", "/v1/presence", { status: presence.value }))) presenceForm.append(notice("Presence set.", "ok"));
  });
  const rows = [
    ["Version", s.version],
    ["DHT", s.tor
      ? (s.dht_via && s.dht_via.name ? `through ${s.dht_via.name}` : "none (no contact serving)")
      : `${s.dht.joined ? "joined" : "joining"}, ${s.dht.nodes} nodes${s.dht.addr ? ", bound to " + s.dht.addr : ""}`],
    ["Reachability", reach ? reach.label : "not known yet"],
    ["External address", s.dht.external_addr || (reach && reach.external_ip) || "unknown"],
    ["Sessions port", s.listen_port == null ? "none" : String(s.listen_port)],
    ["Port mapping", pm ? `${pm.state}${pm.gateway ? " via " + pm.gateway : ""}${pm.error ? " (" + pm.error + ")" : ""}` : "off"],
    ["Proxy", s.proxy ? `${s.proxy.url} (${s.proxy.connected} connected, ${s.proxy.failed} failed)` : "none"],
    ["Tor", s.tor ? (s.onion && s.onion.address ? `on, onion service ${s.onion.address}` : "on") : "off"],
    ["Contacts online", `${s.contacts_online}${s.contacts == null ? "" : " of " + s.contacts}`],
    ["Storage", s.storage],
  ];
  fill(main,
    h("header", { class: "screen-head" }, h("h2", {}, "Status and settings")),
    h("section", { class: "card", "aria-label": "Your ID" },
      h("h3", {}, "Your ID"),
      h("div", { class: "row" }, h("code", { id: "my-id", class: "mono" }, me.id), copyButton(() => me.id)),
      h("div", { class: "row" }, h("code", { class: "mono small" }, me.uri), copyButton(() => me.uri)),
      canvas),
    h("section", { class: "card", "aria-label": "Presence" }, h("h3", {}, "Presence"), presenceForm),
    notifySwitch(),
    profileCard(),
    devicesCard(),
    linkCard(),
    settingsCard(),
    h("section", { class: "card", "aria-label": "Network" }, h("h3", {}, "Network"),
      h("dl", {}, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, untrusted(v))]))),
    signOutCard());
}

/** Signed in by a cookie scripts cannot read; signing out clears it in this browser. */
function signOutCard() {
  const card = h("section", { class: "card", "aria-label": "This browser" }, h("h3", {}, "This browser"),
    h("p", { class: "muted" }, "Signed in by a cookie that no script can read. It ends when the browser closes or the daemon restarts; ",
      h("code", {}, "btchat open"), " signs in again."));
  const out = h("button", { type: "button" }, "Sign out of this browser");
  out.addEventListener("click", async () => {
    if ((await attempt(card, () => api("DELETE", "/v1/web/session"))) === undefined) return;
    location.hash = "#/";
    location.reload();
  });
  card.append(h("div", { class: "row" }, out));
  return card;
}

// ------------------------------------------------------------------ events

function onEvent(ev) {
  switch (ev.type) {
    case "device_linked":
      if (state.linking) state.linking.ended("A new device is linked (" + String(ev.device_id).slice(0, 8) + ").", "ok");
      if (state.devices) state.devices.reload();
      return;
    case "profile":
      // Changed on another of our devices: shown, unless the user is typing in it here.
      if (state.profile && !state.profile.editing()) state.profile.reload();
      return;
    case "device_named":
      // Named here or on another of our devices: shown, unless a rename is being typed.
      if (state.devices && !document.querySelector(".device-list form:not([hidden])")) state.devices.reload();
      return;
    case "device_link_failed":
      if (state.linking) state.linking.ended("No device linked: " + (LINK_FAILED[ev.reason] || String(ev.reason)));
      return;
    case "message": {
      const m = ev.message;
      if (!m) return;
      const sum = state.summary.get(m.peer) || { last: null, unread: 0 };
      sum.last = m;
      if (isUnread(m)) sum.unread += 1;
      state.summary.set(m.peer, sum);
      if (m.direction === "in") clearTyping(m.peer);
      queueMessage(m);
      return;
    }
    case "receipt": {
      const view = state.view;
      if (!view || view.kind !== "chat" || view.key !== ev.contact || !Array.isArray(ev.ids)) return;
      if (!TICKS[ev.state]) return;
      for (const id of ev.ids) {
        const shown = furthest(view, String(id), ev.state);
        const row = view.log.querySelector(`li[data-id="${CSS.escape(String(id))}"] .tick`);
        if (row) {
          const [mark, label] = TICKS[shown];
          row.className = "tick t-" + shown;
          row.setAttribute("aria-label", label);
          row.title = label;
          fill(row, mark);
        }
      }
      return;
    }
    case "read": {
      // Marked read here or on another of our devices: count the unread again.
      if (typeof ev.contact === "string" && state.summary.has(ev.contact)) {
        loadSummary(ev.contact).then(renderList);
      }
      return;
    }
    case "typing": {
      clearTyping(ev.contact);
      if (ev.on) state.typing.set(ev.contact, setTimeout(() => clearTyping(ev.contact), TYPING_SHOWN_MS));
      showTyping(ev.contact);
      renderList();
      return;
    }
    case "presence": {
      const c = state.contacts.get(ev.contact);
      if (c) {
        c.presence = ev.status;
        renderList();
      }
      return;
    }
    case "session":
    case "contact":
      if (ev.contact && ev.contact.public_key) {
        state.contacts.set(ev.contact.public_key, ev.contact);
        if (!state.summary.has(ev.contact.public_key)) state.summary.set(ev.contact.public_key, { last: null, unread: 0 });
        renderList();
      } else loadContacts().catch(() => {});
      return;
    case "request":
      loadRequests().catch(() => {});
      if (state.view && state.view.kind === "requests") showRequests();
      return;
    case "channel_message":
      if (ev.message) addChannelMessage(ev.channel, ev.message);
      return;
    case "channel_file_offer": {
      // A file posted now: its message may have come first (drawn as a name only).
      const view = state.view;
      const f = ev.file;
      if (f && view && view.kind === "channel" && view.key === f.channel && !view.files.has(f.id)) trackChannelFile(view, f);
      else updateChannelFile(f);
      return;
    }
    case "channel_file_progress":
    case "channel_file_done":
      updateChannelFile(ev.file);
      return;
    case "channel_joined":
    case "channel_removed": {
      // Joined or left on another of our devices, or removed by the owner: what is
      // shown of channels is drawn again (a removed member's screen then says so).
      const view = state.view;
      if (view && view.kind === "channels") view.reload();
      else if (view && view.kind === "channel" && view.key === ev.channel) showChannel(ev.channel);
      return;
    }
    case "file_offer":
      // An offer to answer, or a small file that came inline with its message (already saved).
      if (ev.transfer && ev.transfer.direction === "in" && ["offered", "done"].includes(ev.transfer.state) && !state.transfers.has(ev.transfer.id)) {
        notify(ev.transfer.contact, `File: ${ev.transfer.name} (${humanSize(ev.transfer.size)})`);
      }
      updateTransfer(ev.transfer);
      return;
    case "file_progress":
    case "file_done":
      updateTransfer(ev.transfer);
      return;
    default:
      return; // unknown types are ignored, as the API asks
  }
}

function clearTyping(pk) {
  const t = state.typing.get(pk);
  if (t !== undefined) clearTimeout(t);
  state.typing.delete(pk);
  showTyping(pk);
}

let wasUp = false;

function onLive(s) {
  state.live = s === "up";
  document.body.classList.toggle("offline", !state.live);
  if (state.live && !wasUp) {
    wasUp = true; // the first connection: what is shown was just loaded
    performance.mark("btchat-interactive"); // the list is drawn and events flow (bench/web.py)
  } else if (state.live) {
    // Events missed while disconnected are not replayed: reload what is shown.
    Promise.all([loadContacts(), loadRequests(), loadTransfers()]).then(route).catch(() => {});
  }
}

// ------------------------------------------------------------------ routing, keys

function route() {
  const [, kind, key] = (location.hash || "#/").match(/^#\/([a-z]*)\/?(.*)$/) || [];
  switch (kind) {
    case "chat": return showChat(key);
    case "contact": return showContact(key);
    case "add": return showAdd();
    case "requests": return showRequests();
    case "channels": return showChannels();
    case "channel": return showChannel(key);
    case "status": return showStatus();
    case "files": return showFiles();
    default: {
      state.view = null;
      renderList();
      return screen("btchat", h("p", { class: "empty" }, "Pick a conversation, or add a contact."));
    }
  }
}

function onKey(e) {
  if (e.key === "Escape" && !e.target.closest("dialog")) {
    const current = document.querySelector(".conv.current") || document.querySelector(".conv");
    if (current) current.focus();
    return;
  }
  if (e.altKey && (e.key === "ArrowUp" || e.key === "ArrowDown")) {
    const convs = [...document.querySelectorAll(".conv")];
    if (!convs.length) return;
    const at = convs.findIndex((a) => a.classList.contains("current"));
    const next = convs[(at + (e.key === "ArrowDown" ? 1 : -1) + convs.length) % convs.length];
    e.preventDefault();
    go(next.getAttribute("href"));
  }
}

/** Frames from the camera, sent to the daemon to read (one at a time, about three a
 * second) until a QR code is found or the user stops; the camera is released either way. */
async function scanWithCamera(form, box, button, found) {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    form.append(notice("This browser gives the page no camera."));
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
  } catch (err) {
    form.append(notice("No camera: " + (err && err.message ? err.message : String(err))));
    return;
  }
  const video = h("video", { autoplay: true, muted: true, playsinline: true, "aria-label": "Camera" });
  video.srcObject = stream;
  const canvas = document.createElement("canvas");
  let on = true;
  const stop = () => {
    on = false;
    for (const t of stream.getTracks()) t.stop();
    box.hidden = true;
    fill(box);
    button.hidden = false;
  };
  fill(box, video, h("div", { class: "row" }, h("button", { type: "button", onclick: stop }, "Stop the camera")));
  box.hidden = false;
  button.hidden = true;
  while (on) {
    await new Promise((r) => setTimeout(r, 300));
    if (!on || !video.videoWidth) continue;
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    const blob = await new Promise((r) => canvas.toBlob(r, "image/png"));
    if (!blob || !on) continue;
    try {
      const r = await apiBytes("/v1/qr/scan", blob);
      if (on && found(r.texts)) stop();
    } catch (err) {
      stop();
      form.append(notice(failText(err)));
    }
  }
}

// ------------------------------------------------------------------ first run, unlock

/** A daemon started `--in-browser` waits for this page: a new identity's passphrase (a
 * strength hint, the warning that nobody can recover it, typed twice) or the one that
 * opens it. Resolves true when it runs ("created" for a new identity), false if it
 * cannot be reached. */
async function unlocked() {
  let setup;
  try {
    setup = await api("GET", "/v1/setup");
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      screen("Not signed in", h("p", {}, "Open this page with ", h("code", {}, "btchat open"), ": it signs this browser in to the daemon (again after the daemon restarts)."));
    } else screen("Cannot reach the daemon", notice(failText(err)));
    return false;
  }
  if (setup.state === "ready") return true;
  if (setup.state === "starting") {
    screen("Starting", h("p", {}, "btchat is starting; this page reloads when it runs."));
    setTimeout(() => location.reload(), 1000);
    return false;
  }
  return new Promise((resolve) => showSetup(setup, resolve));
}

function showSetup(setup, done) {
  const creating = setup.state === "create";
  const pass = h("input", { type: "password", id: "setup-pass", required: true, maxlength: "1024",
    autocomplete: creating ? "new-password" : "current-password", "aria-label": creating ? "New passphrase" : "Passphrase" });
  const again = creating ? h("input", { type: "password", id: "setup-again", required: true, maxlength: "1024",
    autocomplete: "new-password", "aria-label": "The same passphrase again" }) : null;
  const hint = h("p", { id: "setup-hint", class: "small", "aria-live": "polite" });
  const weak = h("input", { type: "checkbox", id: "setup-weak" });
  const weakLine = h("label", { class: "check", hidden: true }, weak, " Use it anyway, though it is weak");
  const button = h("button", { type: "submit" }, creating ? "Create my identity" : "Unlock");
  const form = h("form", { class: "stack", "aria-label": creating ? "Create your identity" : "Unlock btchat" },
    h("label", {}, creating ? "New passphrase" : "Passphrase", pass),
    creating ? h("label", {}, "Again", again) : null,
    hint, creating ? weakLine : null, h("div", { class: "row" }, button));
  let asked = 0;
  if (creating) {
    pass.addEventListener("input", () => {
      const mine = ++asked;
      setTimeout(async () => {
        if (mine !== asked || !pass.value) return;
        try {
          const verdict = await api("POST", "/v1/setup/strength", { passphrase: pass.value });
          if (mine !== asked) return;
          fill(hint, verdict.line);
          weakLine.hidden = verdict.ok;
        } catch (err) {
          fill(hint, failText(err));
        }
      }, 300);
    });
  }
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (creating && pass.value !== again.value) {
      const old = form.querySelector(".notice");
      if (old) old.remove();
      form.append(notice("The two passphrases differ; type them again."));
      return;
    }
    button.disabled = true;
    fill(button, creating ? "Creating\u2026" : "Unlocking\u2026");
    const result = await attempt(form, () => api("POST", "/v1/setup", { passphrase: pass.value, weak_ok: weak.checked }));
    button.disabled = false;
    fill(button, creating ? "Create my identity" : "Unlock");
    if (result && result.state === "ready") done(creating ? "created" : true);
  });
  const intro = creating
    ? [h("p", {}, "btchat runs on this computer with no server anywhere. Your identity is a key made here; a passphrase protects it and your history on disk."),
       h("p", { class: "notice error", role: "note" }, setup.no_recovery || "Nobody can recover a lost passphrase.")]
    : [h("p", {}, "Your identity and history are locked with your passphrase.")];
  screen(creating ? "Welcome to btchat" : "Unlock btchat", h("section", { class: "card" }, ...intro, form));
  pass.focus();
}

async function main() {
  applyTheme(localStorage.getItem("btchat.theme"));
  $("theme-toggle").addEventListener("click", toggleTheme);
  for (const b of document.querySelectorAll("[data-go]")) b.addEventListener("click", () => go(b.dataset.go));
  // `btchat open` on a tab already showing the page changes only the fragment.
  window.addEventListener("hashchange", async () => {
    if (location.hash.startsWith("#token=")) {
      await signIn().catch(() => {});
      location.reload();
    }
  });
  try {
    await signIn();
  } catch (err) {
    // A stale link (the daemon restarted since): the check below says what to do.
  }
  const opened = await unlocked();
  if (!opened) return;
  if (opened === "created") location.hash = "#/status"; // your new ID, its QR and link
  try {
    state.me = await api("GET", "/v1/identity");
  } catch (err) {
    screen("Cannot reach the daemon", notice(failText(err)));
    return;
  }
  document.addEventListener("keydown", onKey);
  document.addEventListener("visibilitychange", () => {
    if (state.view && state.view.kind === "chat") markRead(state.view.key);
  });
  // The screen is drawn once what it needs is loaded: a click on a screen before then
  // (say Channels) only changes the fragment, so nothing typed into that screen is wiped
  // by a second drawing of it.
  await Promise.all([loadContacts(), loadRequests(), loadTransfers().catch(() => {})]);
  window.addEventListener("hashchange", route);
  setUpDrops();
  route();
  connectEvents(onEvent, onLive);
}

main();
