// The otas-capture live viewer's helpers: building elements from untrusted text,
// formatting values, reading the JSON API. Loaded before app.js, which uses them
// through window.otasViewer.
//
// Every value shown comes from captured requests, which are untrusted: it only ever
// reaches the page as text (textContent / createTextNode), never as markup.
"use strict";

(function () {
  const API = "/viewer/api";
  const MASK = "[REDACTED]";

  const $ = (id) => document.getElementById(id);

  // el("td", {className: "x", title: "y"}, "text", childNode, ...)
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "dataset") Object.assign(node.dataset, value);
      else node[key] = value;
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // Text with every masked value visibly marked.
  function maskedText(text) {
    const frag = document.createDocumentFragment();
    const parts = String(text).split(MASK);
    parts.forEach((part, i) => {
      if (i > 0) frag.append(el("mark", { className: "masked", title: "masked by the SDK" }, MASK));
      if (part) frag.append(document.createTextNode(part));
    });
    return frag;
  }

  function query(params) {
    const search = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) {
      if (value !== "" && value !== null && value !== undefined) search.set(key, value);
    }
    return search.toString();
  }

  async function getJSON(path, params) {
    const qs = query(params || {});
    const response = await fetch(API + path + (qs ? "?" + qs : ""), { cache: "no-store" });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    return body;
  }

  // Ids are shown by the part that tells them apart, which the server picks (labels).
  const idLabel = (id, label) => (id ? label || id : "–");
  const ms = (value) => (typeof value === "number" ? value.toFixed(1) + " ms" : "–");
  const bytes = (value) => (typeof value === "number" ? value + " B" : "–");

  function clock(iso) {
    const date = new Date(iso);
    if (isNaN(date)) return "";
    return date.toLocaleTimeString([], { hour12: false }) + "." +
      String(date.getMilliseconds()).padStart(3, "0");
  }

  // The date and time in the reader's words, e.g. "Thursday, November 26, 2026 at 12:00:00 PM UTC".
  function longDate(iso) {
    const date = new Date(iso);
    if (isNaN(date)) return iso || "";
    return date.toLocaleString([], { dateStyle: "full", timeStyle: "long" });
  }

  // For hovering over a time: the date, then the timestamp as captured.
  const fullDate = (iso) => longDate(iso) + (iso && !isNaN(new Date(iso)) ? "\n" + iso : "");

  function pathWithQuery(row) {
    return [el("span", { className: "path-text" }, row.path),
      row.query ? el("span", { className: "query" }, "?" + row.query) : null];
  }

  function statusBadge(row) {
    return el("span", { className: "status s" + row.status_class }, String(row.status_code));
  }

  function sessionLink(sessionId, label) {
    return el("a", { href: "#session=" + encodeURIComponent(sessionId), title: sessionId,
      className: "session-link" }, idLabel(sessionId, label));
  }

  window.otasViewer = Object.freeze({ API, $, el, maskedText, query, getJSON, idLabel, ms,
    bytes, clock, fullDate, longDate, pathWithQuery, statusBadge, sessionLink });
})();
