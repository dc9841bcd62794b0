// The otas-capture live viewer. Plain JavaScript, no build step, no dependencies.
//
// Every value shown comes from captured requests, which are untrusted: it only ever
// reaches the page as text (textContent / createTextNode), never as markup.
"use strict";

(function () {
  const API = "/viewer/api";
  const POLL_MS = 1000;
  const MASK = "[REDACTED]";

  const state = {
    rows: [], // summaries, newest first
    latest: 0, // highest event id the server had at the last poll
    generation: 0, // bumps when the filters change, so stale answers are dropped
    selected: null, // id of the event in the detail view
  };

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

  function filters() {
    return {
      session: $("f-session").value.trim(),
      agent: $("f-agent").value.trim(),
      status: $("f-status").value,
      q: $("f-q").value.trim(),
    };
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

  const short = (id) => (id ? id.slice(0, 8) : "–");
  const ms = (value) => (typeof value === "number" ? value.toFixed(1) + " ms" : "–");
  const bytes = (value) => (typeof value === "number" ? value + " B" : "–");

  function clock(iso) {
    const date = new Date(iso);
    if (isNaN(date)) return "";
    return date.toLocaleTimeString([], { hour12: false }) + "." +
      String(date.getMilliseconds()).padStart(3, "0");
  }

  function statusBadge(row) {
    return el("span", { className: "status s" + row.status_class }, String(row.status_code));
  }

  function sessionLink(sessionId) {
    return el("a", { href: "#session=" + encodeURIComponent(sessionId), title: sessionId,
      className: "session-link" }, short(sessionId));
  }

  // -- the list ---------------------------------------------------------------------

  function renderRows() {
    const body = $("rows");
    body.replaceChildren(...state.rows.map((row) => {
      const tr = el("tr", { dataset: { id: String(row.id) }, className: "event s" + row.status_class },
        el("td", { className: "muted" }, row.id),
        el("td", { className: "time" }, clock(row.started_at)),
        el("td", { className: "method" }, row.method),
        el("td", { className: "path", title: row.path }, el("span", { className: "path-text" }, row.path),
          row.masked.length ? el("span", { className: "badge", title: "masked: " + row.masked.join(", ") },
            row.masked.length + " masked") : null),
        el("td", {}, statusBadge(row)),
        el("td", { className: "num" }, ms(row.latency_ms)),
        el("td", { className: "num" }, bytes(row.request_size_bytes)),
        el("td", { className: "num" }, bytes(row.response_size_bytes)),
        el("td", { className: "agent", title: row.agent_id }, short(row.agent_id)),
        el("td", {}, sessionLink(row.agent_session_id)));
      if (row.id === state.selected) tr.classList.add("selected");
      tr.addEventListener("click", (event) => {
        if (event.target.closest("a")) return; // the session link has its own target
        location.hash = "event=" + row.id;
      });
      return tr;
    }));
    $("empty").hidden = state.rows.length > 0;
    $("count").textContent = state.rows.length + " shown";
    const ids = [...new Set(state.rows.map((row) => row.agent_session_id))];
    $("session-ids").replaceChildren(...ids.map((id) => el("option", { value: id })));
  }

  // One poll at a time: two in flight would both add the same new events.
  let polling = false;
  let pollAgain = false;

  async function poll() {
    if (polling) {
      pollAgain = true;
      return;
    }
    polling = true;
    try {
      await pollOnce();
    } finally {
      polling = false;
      if (pollAgain) {
        pollAgain = false;
        poll();
      }
    }
  }

  async function pollOnce() {
    const generation = state.generation;
    try {
      const data = await getJSON("/events", { ...filters(), after: state.latest });
      if (generation !== state.generation) return; // the filters changed meanwhile
      if (data.latest < state.latest || (data.total === 0 && state.rows.length)) {
        // The collector was cleared or restarted without its database: start over.
        state.rows = [];
        state.latest = 0;
        return pollOnce();
      }
      const fresh = data.events.filter((row) => row.id > state.latest);
      state.latest = data.latest;
      if (fresh.length) {
        state.rows = fresh.concat(state.rows).slice(0, 2000);
        renderRows();
        if (!$("overview").hidden) showSessions();
      } else if (!state.rows.length) {
        renderRows();
      }
      setLive(true, data.total);
    } catch (error) {
      setLive(false);
    }
  }

  function setLive(ok, total) {
    const live = $("live");
    live.className = "live " + (ok ? "on" : "off");
    live.textContent = ok ? "live · " + total + " events" : "collector unreachable, retrying…";
  }

  function refilter() {
    state.generation += 1;
    state.rows = [];
    state.latest = 0;
    renderRows();
    poll();
  }

  // -- the detail view --------------------------------------------------------------

  function parseJSON(text) {
    if (typeof text !== "string" || !text) return undefined;
    try { return JSON.parse(text); } catch (error) { return undefined; }
  }

  function pretty(value) {
    const parsed = typeof value === "string" ? parseJSON(value) : value;
    if (parsed !== undefined && parsed !== null && typeof parsed === "object") {
      return JSON.stringify(parsed, null, 2);
    }
    return value === undefined || value === null ? "" : String(value);
  }

  function block(title, content, id) {
    if (content === "" || content === undefined || content === null) {
      return el("section", { className: "block", id: id || "" }, el("h3", {}, title),
        el("p", { className: "muted" }, "(none)"));
    }
    return el("section", { className: "block", id: id || "" }, el("h3", {}, title),
      el("pre", {}, maskedText(content)));
  }

  function headerTable(title, text, id) {
    const parsed = parseJSON(text);
    if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) return block(title, text, id);
    const rows = Object.entries(parsed).map(([name, value]) =>
      el("tr", {}, el("th", {}, name), el("td", {}, maskedText(Array.isArray(value) ? value.join(", ") : value))));
    return el("section", { className: "block", id: id || "" }, el("h3", {}, title),
      rows.length ? el("table", { className: "kv" }, el("tbody", {}, ...rows)) : el("p", { className: "muted" }, "(none)"));
  }

  function field(name, value) {
    return [el("dt", {}, name), el("dd", {}, value)];
  }

  async function showEvent(id) {
    state.selected = id;
    renderRows();
    const detail = $("detail");
    let data;
    try {
      data = await getJSON("/event", { id: id });
    } catch (error) {
      showPanel("detail");
      detail.replaceChildren(el("p", { className: "error" }, "Event " + id + ": " + error.message));
      return;
    }
    const event = data.event;
    const summary = el("dl", { className: "summary" },
      ...field("status", statusBadge(data)),
      ...field("latency", ms(data.latency_ms)),
      ...field("sizes", "request " + bytes(data.request_size_bytes) + ", response " + bytes(data.response_size_bytes)),
      ...field("agent", data.agent_id || "–"),
      ...field("session", sessionLink(data.agent_session_id)),
      ...field("started", data.started_at),
      ...field("received", data.received_at),
      ...field("content types", (event.request_content_type || "–") + " → " + (event.response_content_type || "–")),
      ...field("masked", data.masked.length ? data.masked.join(", ") : "nothing"));
    const sections = [
      el("h2", {}, el("span", { className: "method" }, data.method), " ",
        el("span", { id: "d-path" }, data.path)),
      summary,
      data.error ? el("section", { className: "block", id: "d-error" }, el("h3", {}, "Error"),
        el("pre", { className: "error" }, maskedText(data.error))) : null,
      headerTable("Request headers", event.request_headers, "d-request-headers"),
      headerTable("Query parameters", event.query_params, "d-query"),
      headerTable("Form data", event.post_data, "d-post-data"),
      block("Request body", pretty(event.request_body), "d-request-body"),
      headerTable("Response headers", event.response_headers, "d-response-headers"),
      block("Response body", pretty(event.response_body), "d-response-body"),
      block("Custom properties", pretty(event.custom_properties), "d-custom"),
      block("Metadata", pretty(event.metadata), "d-metadata")];
    detail.replaceChildren(...sections.filter((node) => node !== null));
    showPanel("detail");
  }

  // -- the session view -------------------------------------------------------------

  async function showSession(sessionId) {
    state.selected = null;
    renderRows();
    const view = $("session");
    let data;
    try {
      data = await getJSON("/session", { id: sessionId });
    } catch (error) {
      showPanel("session");
      view.replaceChildren(el("p", { className: "error" }, "Session " + sessionId + ": " + error.message));
      return;
    }
    const span = Math.max(data.duration_ms, 1);
    const calls = data.calls.map((call, index) => {
      const bar = el("div", { className: "bar s" + call.status_class, title: ms(call.latency_ms) });
      bar.style.left = (100 * call.offset_ms / span) + "%";
      bar.style.width = Math.max(100 * (call.latency_ms || 0) / span, 0.4) + "%";
      const row = el("li", { className: "call", dataset: { id: String(call.id) } },
        el("span", { className: "step muted" }, index + 1),
        el("span", { className: "method" }, call.method),
        el("span", { className: "path", title: call.path }, call.path),
        statusBadge(call),
        el("span", { className: "num" }, ms(call.latency_ms)),
        el("div", { className: "track" }, bar));
      row.addEventListener("click", () => { location.hash = "event=" + call.id; });
      return row;
    });
    const filterButton = el("button", { type: "button" }, "Show only this session in the list");
    filterButton.addEventListener("click", () => { $("f-session").value = sessionId; refilter(); });
    view.replaceChildren(
      el("h2", {}, "Agent session ", el("code", { id: "s-id" }, sessionId)),
      el("p", { className: "muted" }, "agent ", el("code", {}, data.agent_id || "–"), " · ",
        data.calls.length + " calls over " + ms(data.duration_ms) + " · in the order the agent made them"),
      filterButton,
      el("ol", { className: "timeline" }, ...calls));
    showPanel("session");
  }

  function showPanel(name) {
    $("detail").hidden = name !== "detail";
    $("session").hidden = name !== "session";
    $("overview").hidden = name === "detail" || name === "session";
  }

  // With nothing open, the panel lists the agent sessions, most recently active first.
  async function showSessions() {
    let data;
    try {
      data = await getJSON("/sessions", { limit: 50 });
    } catch (error) {
      return;
    }
    const items = data.sessions.map((session) => {
      const link = el("a", { href: "#session=" + encodeURIComponent(session.agent_session_id),
        className: "session-link" }, el("code", {}, short(session.agent_session_id)));
      return el("li", { className: "session-item" }, link,
        " agent ", el("code", { title: session.agent_id }, short(session.agent_id)),
        " · " + session.calls + (session.calls === 1 ? " call" : " calls"),
        session.errors ? el("span", { className: "errors" }, " · " + session.errors + " failed") : null);
    });
    $("sessions").replaceChildren(...items);
    $("sessions-title").hidden = items.length === 0;
  }

  function route() {
    const hash = new URLSearchParams(location.hash.slice(1));
    if (hash.has("event")) return showEvent(Number(hash.get("event")));
    if (hash.has("session")) return showSession(hash.get("session"));
    state.selected = null;
    renderRows();
    showPanel(null);
    showSessions();
  }

  // -- start ------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    let typing = null;
    $("filters").addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(refilter, 200); // wait for a pause in typing
    });
    $("filters").addEventListener("reset", () => setTimeout(refilter, 0));
    $("filters").addEventListener("submit", (event) => { event.preventDefault(); refilter(); });
    window.addEventListener("hashchange", route);
    poll();
    setInterval(poll, POLL_MS);
    route();
  });
})();
