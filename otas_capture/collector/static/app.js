// The otas-capture live viewer. Plain JavaScript, no build step, no dependencies; the
// helpers that build the page's pieces are in util.js, loaded first.
//
// Every value shown comes from captured requests, which are untrusted: it only ever
// reaches the page as text (textContent / createTextNode), never as markup.
"use strict";

(function () {
  const { API, $, el, maskedText, query, getJSON, idLabel, ms, bytes, clock, fullDate, longDate,
    pathWithQuery, statusBadge, sessionLink } = window.otasViewer;
  const POLL_MS = 1000;

  const state = {
    rows: [], // summaries, newest first
    latest: 0, // highest event id the server had at the last poll
    generation: 0, // bumps when the filters change, so stale answers are dropped
    selected: null, // id of the event in the detail view
  };

  function filters() {
    return {
      session: $("f-session").value.trim(),
      agent: $("f-agent").value.trim(),
      status: $("f-status").value,
      env: $("f-env").value.trim(),
      q: $("f-q").value.trim(),
    };
  }

  // -- the list ---------------------------------------------------------------------

  function renderRows() {
    const body = $("rows");
    body.replaceChildren(...state.rows.map((row) => {
      const tr = el("tr", { dataset: { id: String(row.id) }, className: "event s" + row.status_class },
        el("td", { className: "muted" }, row.id),
        el("td", { className: "time", title: fullDate(row.started_at) }, clock(row.started_at)),
        el("td", { className: "method" }, row.method),
        el("td", { className: "path", title: row.path + (row.query ? "?" + row.query : "") },
          ...pathWithQuery(row),
          row.masked.length ? el("span", { className: "badge", title: "masked: " + row.masked.join(", ") },
            row.masked.length + " masked") : null),
        el("td", {}, statusBadge(row)),
        el("td", { className: "num" }, ms(row.latency_ms)),
        el("td", { className: "num" }, bytes(row.request_size_bytes)),
        el("td", { className: "num" }, bytes(row.response_size_bytes)),
        el("td", { className: "agent", title: row.agent_id }, idLabel(row.agent_id, row.agent_label)),
        el("td", {}, sessionLink(row.agent_session_id, row.session_label)),
        el("td", { className: "env-col" }, row.environment ? el("span", { className: "env",
          title: row.release ? "release " + row.release : "" }, row.environment) : ""));
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
    const envs = [...new Set(state.rows.map((row) => row.environment).filter(Boolean))];
    // The column only takes room when some event says which environment it came from.
    $("list").classList.toggle("no-env", envs.length === 0);
    $("env-names").replaceChildren(...envs.map((name) => el("option", { value: name })));
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
      setLive(true, data);
    } catch (error) {
      setLive(false);
    }
  }

  function setLive(ok, data) {
    const live = $("live");
    live.className = "live " + (ok ? "on" : "off");
    if (!ok) {
      live.textContent = "collector unreachable, retrying…";
      return;
    }
    // The store is bounded: say so when the oldest events have been dropped.
    const evicted = data.evicted ? " · " + data.evicted + " oldest dropped" : "";
    live.textContent = "live · " + data.total + " events" + evicted;
    live.title = "the collector keeps at most " + data.max_events + " events and " +
      Math.round(data.max_bytes / 1048576) + " MiB";
  }

  function refilter() {
    state.generation += 1;
    state.rows = [];
    state.latest = 0;
    const qs = query(filters());
    $("export-har").href = API + "/har" + (qs ? "?" + qs : "");
    renderRows();
    poll();
  }

  async function clearEvents() {
    const response = await fetch("/collector/events", { method: "DELETE" });
    if (response.ok) {
      location.hash = "";
      refilter();
      showSessions();
    }
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
      ...field("session", sessionLink(data.agent_session_id, data.agent_session_id)),
      ...(data.environment ? field("environment", data.environment) : []),
      ...(data.release ? field("release", data.release) : []),
      ...field("started", longDate(data.started_at)),
      ...field("received", data.received_at),
      ...field("content types", (event.request_content_type || "–") + " → " + (event.response_content_type || "–")),
      ...field("masked", data.masked.length ? data.masked.join(", ") : "nothing"));
    const copy = el("button", { type: "button", id: "d-copy-curl" }, "Copy as cURL");
    copy.addEventListener("click", () => copyCurl(id));
    const sections = [
      el("h2", {}, el("span", { className: "method" }, data.method), " ",
        el("span", { id: "d-path" }, data.path),
        data.query ? el("span", { className: "query", id: "d-query-string" }, "?" + data.query) : null),
      summary,
      el("p", {}, copy, el("span", { id: "d-curl-status", className: "copied" })),
      el("div", { id: "d-curl-box" }),
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

  // The command is shown as well as copied: the clipboard may be refused, and masked
  // values must be seen to be masked before anyone runs it.
  async function copyCurl(id) {
    let data;
    try {
      data = await getJSON("/curl", { id: id });
    } catch (error) {
      $("d-curl-status").textContent = error.message;
      return;
    }
    $("d-curl-box").replaceChildren(el("pre", { id: "d-curl" }, maskedText(data.curl)));
    let copied = false;
    try {
      await navigator.clipboard.writeText(data.curl);
      copied = true;
    } catch (error) {
      copied = false;
    }
    const masked = data.masked.length ? " (masked values stay [REDACTED])" : "";
    $("d-curl-status").textContent = (copied ? "Copied" : "Copy it from below") + masked;
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
        el("span", { className: "path", title: call.path + (call.query ? "?" + call.query : "") },
          call.path + (call.query ? "?" + call.query : "")),
        statusBadge(call),
        el("span", { className: "num" }, ms(call.latency_ms)),
        el("div", { className: "track" }, bar));
      row.addEventListener("click", () => { location.hash = "event=" + call.id; });
      return row;
    });
    const filterButton = el("button", { type: "button" }, "Show only this session in the list");
    filterButton.addEventListener("click", () => { $("f-session").value = sessionId; refilter(); });
    const har = el("a", { id: "s-har", className: "button", download: "",
      href: API + "/har?" + query({ session: sessionId }) }, "Export session as HAR");
    view.replaceChildren(
      el("h2", {}, "Agent session ", el("code", { id: "s-id" }, sessionId)),
      el("p", { className: "muted" }, "agent ", el("code", {}, data.agent_id || "–"), " · ",
        data.calls.length + " calls over " + ms(data.duration_ms) + " · in the order the agent made them"),
      el("p", {}, filterButton, " ", har),
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
        className: "session-link", title: session.agent_session_id },
        el("code", {}, idLabel(session.agent_session_id, session.session_label)));
      return el("li", { className: "session-item" }, link,
        " agent ", el("code", { title: session.agent_id }, idLabel(session.agent_id, session.agent_label)),
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
    $("clear-events").addEventListener("click", clearEvents);
    window.addEventListener("hashchange", route);
    poll();
    setInterval(poll, POLL_MS);
    route();
  });
})();
