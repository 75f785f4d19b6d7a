// Building the page without ever parsing markup: every string becomes a text node, so a
// message from a stranger can never turn into elements, attributes or script.

// Controls and bidi formatting characters: shown as visible marks instead of acting.
// (C0/C1 controls but tab and newline; LRE..RLO, LRI..PDI, LRM/RLM, ALM; zero-widths.)
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]/u;
const CONTROLS = new RegExp(CONTROL.source, "gu");

/** A control character as shown: its code point, "U+001B" (plain ASCII, so every font
 * has the glyphs; the Control Pictures block is missing from many). */
export function controlMark(ch) {
  return "U+" + ch.codePointAt(0).toString(16).toUpperCase().padStart(4, "0");
}

/** Text from someone else, as nodes: plain text plus a marked span per control char. */
export function visibleText(text) {
  const frag = document.createDocumentFragment();
  const s = String(text ?? "");
  if (!CONTROL.test(s)) {
    frag.append(document.createTextNode(s));
    return frag;
  }
  let last = 0;
  for (const m of s.matchAll(CONTROLS)) {
    if (m.index > last) frag.append(document.createTextNode(s.slice(last, m.index)));
    const mark = document.createElement("span");
    mark.className = "ctl";
    mark.title = "control character";
    mark.textContent = controlMark(m[0]);
    frag.append(mark);
    last = m.index + m[0].length;
  }
  if (last < s.length) frag.append(document.createTextNode(s.slice(last)));
  return frag;
}

/**
 * Someone else's words for a place that takes a plain string and renders it itself (a
 * desktop notification): controls and bidi formatting dropped, runs of white space one
 * space, the markup characters some notification servers interpret (<b>, <a href>,
 * &amp;) turned into lookalikes, and at most `max` characters with an ellipsis.
 */
export function plainPreview(text, max = 120) {
  const s = String(text ?? "")
    .replace(CONTROLS, "")
    .replace(/\s+/gu, " ")
    .trim()
    .replace(/</g, "\u2039")
    .replace(/>/g, "\u203a")
    .replace(/&/g, "\uff06");
  const chars = [...s];
  return chars.length > max ? chars.slice(0, max - 1).join("") + "\u2026" : s;
}

/** Someone else's words, isolated from the surrounding direction (<bdi dir=auto>). */
export function untrusted(text, className) {
  const el = document.createElement("bdi");
  el.dir = "auto";
  if (className) el.className = className;
  el.append(visibleText(text));
  return el;
}

/**
 * h("button", {class: "x", onclick: fn, "aria-label": "..."}, "text", child)
 * Strings are text nodes; attributes go through setAttribute (event handlers are
 * functions, never strings); null/false children and attributes are skipped.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.className = value;
    } else if (key === "value") {
      el.value = value;
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.append(child);
    else el.append(document.createTextNode(String(child)));
  }
}

/** Replace an element's content. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}
