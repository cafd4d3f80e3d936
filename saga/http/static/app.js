// The saga web console: plain JavaScript over the JSON API, no build step, nothing remote.
// Views are routed by the URL hash: #/ (list), #/workflows/ID, #/cluster, #/dead-letters.
"use strict";

(() => {
  const STATUSES = ["RUNNING", "COMPLETED", "FAILED", "COMPENSATED", "COMPENSATION_FAILED",
    "CANCELLED", "TERMINATED", "TIMED_OUT"];
  const TOKEN_KEY = "saga.apiToken";
  const PAGE_SIZE = 50;

  const config = { auth_required: false, jaeger_url: null, poll_seconds: 3 };
  let pollTimer = null;
  let refresh = null; // what the current view does on each poll
  let viewSeq = 0; // a view switch makes late answers of the old one harmless

  // -- DOM helpers: build nodes, never parse HTML from data ------------------------------

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(el.dataset, v);
      else if (k === "style") Object.assign(el.style, v); // CSSOM: allowed by the CSP
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  const $ = (sel, root = document) => root.querySelector(sel);

  // Show a view: its nodes, skipping the absent ones (replaceChildren would print "null").
  function mount(...nodes) {
    $("#view").replaceChildren(...nodes.flat().filter((n) => n !== null && n !== undefined && n !== false));
  }

  function fmtTime(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    const pad = (n, w = 2) => String(n).padStart(w, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function fmtDuration(ms) {
    if (ms === null || ms === undefined || Number.isNaN(ms)) return "";
    if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
    const s = ms / 1000;
    if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
    const hrs = Math.floor(m / 60);
    if (hrs < 48) return `${hrs} h ${m % 60} min`;
    return `${Math.floor(hrs / 24)} d ${hrs % 24} h`;
  }

  const pretty = (v) => JSON.stringify(v, null, 2);
  const statusBadge = (s) => h("span", { class: `badge st-${s}`, "data-testid": "status-badge" }, s);

  function showBanner(text, kind = "error") {
    const b = $("#banner");
    b.textContent = text;
    b.className = `banner ${kind}`;
    b.hidden = false;
  }
  const hideBanner = () => { $("#banner").hidden = true; };

  // -- the API -------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body) {
      super(describeError(status, body));
      this.status = status;
      this.body = body;
    }
  }

  function describeError(status, body) {
    if (body && Array.isArray(body.detail)) {
      return body.detail.map((d) => `${(d.loc || []).slice(1).join(".") || "request"}: ${d.msg}`)
        .join("; ");
    }
    if (body && typeof body.detail === "string") return body.detail;
    return `HTTP ${status}`;
  }

  let tokenPrompt = null;
  function askToken() {
    if (!tokenPrompt) {
      tokenPrompt = new Promise((resolve) => {
        const dialog = $("#token-dialog");
        const input = $("#token-input");
        input.value = "";
        dialog.addEventListener("close", () => {
          const value = input.value.trim();
          if (value) sessionStorage.setItem(TOKEN_KEY, value);
          tokenPrompt = null;
          resolve(value);
        }, { once: true });
        dialog.showModal();
        input.focus();
      });
    }
    return tokenPrompt;
  }

  async function api(path, { method = "GET", body, retry = true } = {}) {
    const headers = { Accept: "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let res;
    try {
      res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (err) {
      throw new ApiError(0, { detail: "the server cannot be reached" });
    }
    let data = null;
    const text = await res.text();
    if (text) {
      try { data = JSON.parse(text); } catch { data = { detail: text }; }
    }
    if (res.status === 401 && retry) {
      sessionStorage.removeItem(TOKEN_KEY);
      await askToken();
      return api(path, { method, body, retry: false });
    }
    if (!res.ok) throw new ApiError(res.status, data);
    return data;
  }

  // -- polling -------------------------------------------------------------------------------

  function startPolling() {
    if (pollTimer) clearInterval(pollTimer);
    pollTimer = setInterval(async () => {
      if (!refresh || document.hidden || $("dialog[open]")) return;
      try {
        await refresh();
        $("#live").classList.remove("stale");
      } catch (err) {
        $("#live").classList.add("stale");
        showBanner(err.message);
      }
    }, Math.max(1, config.poll_seconds) * 1000);
  }

  // -- dialogs -------------------------------------------------------------------------------

  // Ask for confirmation (and any fields); resolves to the field values, or null if dismissed.
  function confirmAction({ title, text, fields = [], confirmLabel = "Confirm", submit }) {
    const dialog = $("#action-dialog");
    $("#action-title").textContent = title;
    $("#action-text").textContent = text;
    const box = $("#action-fields");
    box.replaceChildren();
    const inputs = {};
    for (const f of fields) {
      const input = f.multiline
        ? h("textarea", { id: `field-${f.name}`, rows: 4, placeholder: f.placeholder || "" })
        : h("input", { id: `field-${f.name}`, type: "text", placeholder: f.placeholder || "",
          required: f.required || false });
      if (f.value) input.value = f.value;
      if (f.options) {
        const list = h("datalist", { id: `list-${f.name}` }, f.options.map((o) => h("option", { value: o })));
        input.setAttribute("list", `list-${f.name}`);
        box.append(list);
      }
      inputs[f.name] = input;
      box.append(h("label", {}, f.label, input));
    }
    const error = $("#action-error");
    error.hidden = true;
    const confirm = $("#action-confirm");
    confirm.textContent = confirmLabel;
    return new Promise((resolve) => {
      const form = $("#action-form");
      const onSubmit = async (ev) => {
        ev.preventDefault();
        const values = Object.fromEntries(Object.entries(inputs).map(([k, el]) => [k, el.value]));
        confirm.disabled = true;
        try {
          const result = await submit(values);
          cleanup();
          dialog.close();
          resolve(result === undefined ? values : result);
        } catch (err) {
          error.textContent = err.message;
          error.hidden = false;
        } finally {
          confirm.disabled = false;
        }
      };
      const onDismiss = () => { cleanup(); dialog.close(); resolve(null); };
      const onCancel = () => { cleanup(); resolve(null); };
      function cleanup() {
        form.removeEventListener("submit", onSubmit);
        $("#action-dismiss").removeEventListener("click", onDismiss);
        dialog.removeEventListener("cancel", onCancel);
      }
      form.addEventListener("submit", onSubmit);
      $("#action-dismiss").addEventListener("click", onDismiss);
      dialog.addEventListener("cancel", onCancel);
      dialog.showModal();
      const first = Object.values(inputs)[0];
      (first || confirm).focus();
    });
  }

  function parseArgs(text, label) {
    const trimmed = (text || "").trim();
    if (!trimmed) return [];
    let value;
    try { value = JSON.parse(trimmed); } catch (err) {
      throw new Error(`${label} is not valid JSON: ${err.message}`);
    }
    return Array.isArray(value) ? value : [value];
  }

  // -- the workflow list ---------------------------------------------------------------------

  function parseHashQuery() {
    const q = location.hash.split("?")[1] || "";
    return Object.fromEntries(new URLSearchParams(q));
  }

  function listQuery(filters, cursor) {
    const p = new URLSearchParams();
    for (const k of ["status", "type", "id_prefix"]) if (filters[k]) p.set(k, filters[k]);
    for (const k of ["started_after", "started_before"]) {
      if (filters[k]) p.set(k, new Date(filters[k]).toISOString());
    }
    p.set("limit", String(PAGE_SIZE));
    if (cursor) p.set("cursor", cursor);
    return p.toString();
  }

  function renderCounts(target, counts, active) {
    target.replaceChildren(
      h("a", { class: `count${active ? "" : " active"}`, href: "#/", "data-testid": "status-count-ALL" },
        h("span", { class: "n" }, counts.total), " all"),
      ...STATUSES.map((s) => h("a", {
        class: `count st-${s}${active === s ? " active" : ""}`,
        href: `#/?status=${s}`,
        "data-testid": `status-count-${s}`,
      }, h("span", { class: "n" }, counts.counts[s] || 0), ` ${s.toLowerCase().replace("_", " ")}`)),
    );
  }

  function workflowRow(w) {
    const duration = w.close_time
      ? new Date(w.close_time) - new Date(w.start_time)
      : Date.now() - new Date(w.start_time);
    return h("tr", { "data-testid": "workflow-row", dataset: { id: w.id, status: w.status } },
      h("td", {}, h("a", { href: `#/workflows/${encodeURIComponent(w.id)}`, class: "wf-link" }, w.id)),
      h("td", {}, w.type),
      h("td", {}, statusBadge(w.status)),
      h("td", { class: "num" }, fmtTime(w.start_time)),
      h("td", { class: "num" }, fmtDuration(duration)),
      h("td", { class: "muted clip", title: w.error_message || w.stuck_reason || "" },
        w.stuck_reason ? `stuck: ${w.stuck_reason}` : (w.error_message || "")));
  }

  async function viewList() {
    const seq = viewSeq;
    const filters = parseHashQuery();
    const counts = h("div", { class: "counts", "data-testid": "counts" });
    const typeSelect = h("select", { name: "type", id: "filter-type" },
      h("option", { value: "" }, "any type"));
    const form = h("form", { class: "filters", id: "filters" },
      h("label", {}, "Status", h("select", { name: "status", id: "filter-status" },
        h("option", { value: "" }, "any status"),
        STATUSES.map((s) => h("option", { value: s, selected: filters.status === s }, s)))),
      h("label", {}, "Type", typeSelect),
      h("label", {}, "Id prefix", h("input", { name: "id_prefix", id: "filter-id", type: "search",
        value: filters.id_prefix || "", placeholder: "order-" })),
      h("label", {}, "Started after", h("input", { name: "started_after", type: "datetime-local",
        step: 1, value: filters.started_after || "" })),
      h("label", {}, "before", h("input", { name: "started_before", type: "datetime-local",
        step: 1, value: filters.started_before || "" })),
      h("button", { type: "submit", class: "primary" }, "Filter"),
      h("button", { type: "button", onclick: () => { location.hash = "#/"; } }, "Clear"),
      h("span", { class: "spacer" }),
      h("button", { type: "button", id: "start-button", onclick: startDialog }, "Start workflow…"));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const p = new URLSearchParams();
      for (const [k, v] of new FormData(form)) if (v) p.set(k, v);
      const q = p.toString();
      location.hash = q ? `#/?${q}` : "#/";
    });
    form.addEventListener("change", (ev) => {
      if (ev.target.tagName === "SELECT") form.requestSubmit();
    });
    const tbody = h("tbody", { id: "workflow-rows" });
    const more = h("button", { type: "button", id: "more", hidden: true }, "Load more");
    const empty = h("p", { class: "muted empty", hidden: true }, "No workflow matches.");
    mount(
      h("h1", {}, "Workflows"),
      counts,
      form,
      h("table", { class: "list" },
        h("thead", {}, h("tr", {}, ["Id", "Type", "Status", "Started", "Duration", "Error"]
          .map((t) => h("th", {}, t)))),
        tbody),
      empty,
      h("div", { class: "more" }, more));

    let nextCursor = null;
    let pagedBeyondFirst = false;

    async function loadFirstPage() {
      const [c, page] = await Promise.all([
        api("/api/counts"),
        api(`/api/workflows?${listQuery(filters)}`),
      ]);
      if (seq !== viewSeq) return;
      renderCounts(counts, c, filters.status);
      if (!pagedBeyondFirst) {
        tbody.replaceChildren(...page.workflows.map(workflowRow));
        nextCursor = page.next_cursor;
        more.hidden = !nextCursor;
        empty.hidden = page.workflows.length > 0;
      }
    }
    more.addEventListener("click", async () => {
      if (!nextCursor) return;
      const page = await api(`/api/workflows?${listQuery(filters, nextCursor)}`);
      pagedBeyondFirst = true;
      tbody.append(...page.workflows.map(workflowRow));
      nextCursor = page.next_cursor;
      more.hidden = !nextCursor;
    });

    api("/api/workflow-types").then((t) => {
      if (seq !== viewSeq) return;
      typeSelect.append(...t.types.map((name) =>
        h("option", { value: name, selected: filters.type === name }, name)));
      if (filters.type && !t.types.includes(filters.type)) {
        typeSelect.append(h("option", { value: filters.type, selected: true }, filters.type));
      }
    }).catch((err) => showBanner(err.message));

    await loadFirstPage();
    return loadFirstPage;
  }

  async function startDialog() {
    let types = [];
    try { types = (await api("/api/workflow-types")).types; } catch { /* typed by hand then */ }
    const started = await confirmAction({
      title: "Start a workflow",
      text: "Arguments are JSON: one value, or a list for several arguments.",
      confirmLabel: "Start",
      fields: [
        { name: "type", label: "Type", required: true, options: types, value: types[0] || "" },
        { name: "id", label: "Id (optional)", placeholder: "order-1234" },
        { name: "args", label: "Arguments (JSON)", multiline: true, placeholder: '{"name": "alice"}' },
      ],
      submit: (v) => api("/api/workflows", {
        method: "POST",
        body: { type: v.type, id: v.id || undefined, args: parseArgs(v.args, "Arguments") },
      }),
    });
    if (started) location.hash = `#/workflows/${encodeURIComponent(started.id)}`;
  }

  // -- one saga --------------------------------------------------------------------------------

  const STEP_CLASS = { COMPLETED: "ok", FAILED: "bad", RETRYING: "warn", SCHEDULED: "run",
    CANCELLED: "off" };

  function timeline(wf) {
    const t0 = new Date(wf.start_time).getTime();
    const end = wf.close_time ? new Date(wf.close_time).getTime() : Date.now();
    const stepEnds = wf.steps.map((s) => (s.closed_at ? new Date(s.closed_at).getTime() : end));
    const t1 = Math.max(end, t0 + 1, ...stepEnds);
    const span = t1 - t0;
    const pct = (t) => `${(((t - t0) / span) * 100).toFixed(3)}%`;
    const rows = wf.steps.map((s) => {
      const from = new Date(s.scheduled_at).getTime();
      const to = s.closed_at ? new Date(s.closed_at).getTime() : end;
      const width = Math.max(0.4, ((to - from) / span) * 100);
      const kind = s.compensation ? "compensation" : "step";
      return h("div", {
        class: `tl-row ${kind}`, "data-testid": "step-row",
        dataset: { seq: s.seq, activity: s.activity, kind, status: s.status },
      },
        h("div", { class: "tl-label" },
          h("span", { class: "seq" }, `#${s.seq}`),
          s.compensation ? h("span", { class: "comp-mark", title: "compensation" }, "↩") : null,
          h("span", { class: "act" }, s.activity),
          h("span", { class: "muted queue" }, s.queue)),
        h("div", { class: "tl-track" },
          h("div", {
            class: `tl-bar ${STEP_CLASS[s.status] || ""}`,
            style: { left: pct(from), width: `${width.toFixed(3)}%` },
            title: `${s.status} after ${fmtDuration(to - from)}, ${s.attempts} attempt(s)`,
          })),
        h("div", { class: "tl-meta" },
          h("span", { class: `badge small step-${s.status}` }, s.status),
          s.attempts > 1 ? h("span", { class: "attempts", title: "attempts" }, `×${s.attempts}`) : null,
          h("span", { class: "muted" }, fmtDuration(to - from))),
        s.error ? h("div", { class: "tl-error", "data-testid": "step-error" },
          `${s.error.type}: ${s.error.message}`,
          s.next_attempt_at ? ` — next attempt ${fmtTime(s.next_attempt_at)}` : "") : null);
    });
    return h("div", { class: "timeline", "data-testid": "timeline" },
      h("div", { class: "tl-axis" }, h("span", {}, fmtTime(wf.start_time)),
        h("span", {}, `+${fmtDuration(span)}`)),
      rows.length ? rows : h("p", { class: "muted" }, "No steps yet."));
  }

  function failureBlock(err) {
    const causes = [];
    for (let c = err.cause; c; c = c.cause) causes.push(h("li", {}, `${c.type}: ${c.message}`));
    for (const c of err.causes || []) causes.push(h("li", {}, `${c.type}: ${c.message}`));
    return h("div", { class: "failure", "data-testid": "workflow-error" },
      h("strong", {}, err.type), ": ", err.message,
      causes.length ? h("ul", {}, causes) : null,
      err.stack_trace ? h("details", {}, h("summary", {}, "stack trace"),
        h("pre", {}, err.stack_trace)) : null);
  }

  function table(headers, rows) {
    return h("table", { class: "list compact" },
      h("thead", {}, h("tr", {}, headers.map((t) => h("th", {}, t)))),
      h("tbody", {}, rows));
  }

  function queryButton(wf, path) {
    return h("button", { type: "button", "data-testid": "action-query", onclick: async () => {
      const answer = await confirmAction({
        title: "Query",
        text: `Ask ${wf.id} a @workflow.query handler. Nothing is recorded or changed.`,
        confirmLabel: "Ask",
        fields: [{ name: "name", label: "Query name", required: true },
          { name: "args", label: "Arguments (JSON)", multiline: true, placeholder: "[]" }],
        submit: (v) => api(`${path}/query`, { method: "POST",
          body: { name: v.name, args: parseArgs(v.args, "Arguments") } }),
      });
      if (answer) showBanner(`Query answered: ${JSON.stringify(answer.result)}`, "info");
    } }, "Query…");
  }

  function actions(wf) {
    const path = `/api/workflows/${encodeURIComponent(wf.id)}`;
    if (wf.status !== "RUNNING") return h("div", { class: "actions" }, queryButton(wf, path));
    const act = async (opts) => {
      const done = await confirmAction(opts);
      if (done) {
        showBanner(`${opts.confirmLabel}: request recorded`, "info");
        setTimeout(hideBanner, 3000);
        await refresh();
      }
    };
    return h("div", { class: "actions" },
      queryButton(wf, path),
      h("button", { type: "button", "data-testid": "action-signal", onclick: () => act({
        title: "Send a signal",
        text: `Signal ${wf.id}. It is recorded in the history before the workflow sees it.`,
        confirmLabel: "Signal",
        fields: [{ name: "name", label: "Signal name", required: true },
          { name: "args", label: "Arguments (JSON)", multiline: true, placeholder: "[]" }],
        submit: (v) => api(`${path}/signal`, { method: "POST",
          body: { name: v.name, args: parseArgs(v.args, "Arguments") } }),
      }) }, "Signal…"),
      h("button", { type: "button", class: "warn", "data-testid": "action-cancel", onclick: () => act({
        title: "Cancel this saga?",
        text: `${wf.id} will see a cancellation; its compensations run.`,
        confirmLabel: "Cancel saga",
        fields: [{ name: "reason", label: "Reason (optional)" }],
        submit: (v) => api(`${path}/cancel`, { method: "POST", body: { reason: v.reason } }),
      }) }, "Cancel…"),
      h("button", { type: "button", class: "danger", "data-testid": "action-terminate", onclick: () => act({
        title: "Terminate this saga?",
        text: `${wf.id} ends now. No more of its code runs: compensations do NOT run.`,
        confirmLabel: "Terminate",
        fields: [{ name: "reason", label: "Reason", required: true }],
        submit: (v) => api(`${path}/terminate`, { method: "POST", body: { reason: v.reason } }),
      }) }, "Terminate…"));
  }

  function eventRow(e) {
    const attrs = pretty(e.attributes);
    return h("tr", { "data-testid": "history-event" },
      h("td", { class: "num" }, e.event_id),
      h("td", { class: "num" }, fmtTime(e.timestamp)),
      h("td", {}, e.type),
      h("td", {}, attrs.length > 80
        ? h("details", {}, h("summary", {}, JSON.stringify(e.attributes).slice(0, 80) + "…"),
          h("pre", {}, attrs))
        : h("code", {}, JSON.stringify(e.attributes))));
  }

  async function viewWorkflow(id) {
    const seq = viewSeq;
    const path = `/api/workflows/${encodeURIComponent(id)}`;
    let lastStatus = null;
    const folded = new Map(); // section key -> open, as the reader left it

    async function load() {
      const [wf, hist] = await Promise.all([api(path), api(`${path}/history`)]);
      if (seq !== viewSeq) return;
      // Keep what the reader unfolded across refreshes (of this saga, not the last view).
      if (lastStatus !== null) {
        for (const d of document.querySelectorAll("#view details[data-key]")) {
          folded.set(d.dataset.key, d.open);
        }
      }
      render(wf, hist);
      lastStatus = wf.status;
    }

    function render(wf, hist) {
      const closedOrNow = wf.close_time ? new Date(wf.close_time) : new Date();
      const trace = wf.trace_url
        ? h("a", { href: wf.trace_url, target: "_blank", rel: "noopener noreferrer", class: "trace" },
          "Trace in Jaeger ↗")
        : null;
      const pendingSteps = wf.pending_steps.map((s) => h("tr", {},
        h("td", {}, `#${s.seq}`), h("td", {}, s.activity, s.compensation ? " ↩" : ""),
        h("td", {}, s.queue), h("td", {}, s.status), h("td", { class: "num" }, s.attempts),
        h("td", { class: "num" }, s.next_attempt_at ? fmtTime(s.next_attempt_at) : "")));
      const timers = wf.pending_timers.map((t) => h("tr", {},
        h("td", {}, `#${t.seq}`), h("td", { class: "num" }, fmtTime(t.fire_at)),
        h("td", { class: "num" }, fmtDuration(t.duration * 1000))));
      const section = (key, title, ...body) => {
        const open = folded.has(key) ? folded.get(key) : key !== "history";
        return h("details", { class: "section", open, dataset: { key } },
          h("summary", {}, h("h2", {}, title)), ...body);
      };
      mount(
        h("p", { class: "crumbs" }, h("a", { href: "#/" }, "Workflows"), " / "),
        h("div", { class: "wf-head" },
          h("h1", { "data-testid": "workflow-id" }, wf.id),
          h("span", { "data-testid": "workflow-status", dataset: { status: wf.status } },
            statusBadge(wf.status)),
          h("span", { class: "spacer" }),
          trace,
          actions(wf)),
        h("dl", { class: "facts" },
          h("dt", {}, "Type"), h("dd", {}, wf.type),
          h("dt", {}, "Run"), h("dd", { class: "mono" }, wf.run_id),
          h("dt", {}, "Started"), h("dd", {}, fmtTime(wf.start_time)),
          h("dt", {}, wf.close_time ? "Closed" : "Running for"),
          h("dd", {}, wf.close_time
            ? `${fmtTime(wf.close_time)} (${fmtDuration(closedOrNow - new Date(wf.start_time))})`
            : fmtDuration(closedOrNow - new Date(wf.start_time))),
          wf.execution_deadline ? [h("dt", {}, "Deadline"), h("dd", {}, fmtTime(wf.execution_deadline))] : null,
          h("dt", {}, "Events"), h("dd", {}, wf.history_length)),
        wf.warnings.length ? h("ul", { class: "warnings" }, wf.warnings.map((w) => h("li", {}, w))) : null,
        wf.error ? failureBlock(wf.error) : null,
        section("timeline", `Timeline: ${wf.steps.length - wf.compensations.length} steps, ` +
          `${wf.compensations.length} compensations`, timeline(wf)),
        wf.status === "RUNNING" ? section("pending", "Pending",
          wf.pending_steps.length
            ? table(["Seq", "Activity", "Queue", "Status", "Attempts", "Next attempt"], pendingSteps)
            : h("p", { class: "muted" }, "No step in flight."),
          wf.pending_timers.length
            ? table(["Timer", "Fires at", "Duration"], timers)
            : h("p", { class: "muted" }, "No timer pending.")) : null,
        h("div", { class: "io" },
          section("input", "Input", h("pre", { class: "json", "data-testid": "input" }, pretty(wf.input))),
          section("result", { COMPLETED: "Result", RUNNING: "Result (none yet)" }[wf.status] || "Result (none)",
            h("pre", { class: "json", "data-testid": "result" }, pretty(wf.result)))),
        section("history", `History (${hist.events.length} events)`,
          table(["#", "Time", "Type", "Attributes"], hist.events.map(eventRow))));
    }

    await load();
    return async () => {
      if (lastStatus === "RUNNING") await load();
    };
  }

  // -- cluster and dead letters ------------------------------------------------------------------

  async function viewCluster() {
    const seq = viewSeq;
    async function load() {
      const c = await api("/api/cluster");
      if (seq !== viewSeq) return;
      mount(
        h("h1", {}, "Cluster"),
        h("div", { class: "cards" },
          h("div", { class: "card" }, h("div", { class: "big" }, c.total), "workflows"),
          h("div", { class: "card" }, h("div", { class: "big" }, c.counts.RUNNING), "running"),
          h("div", { class: "card" }, h("div", { class: "big", "data-testid": "outbox-unsent" },
            c.outbox.unsent + (c.outbox.truncated ? "+" : "")), "outbox unsent"),
          h("div", { class: "card" }, h("div", { class: "big" }, c.outbox.pending), "steps in flight"),
          h("div", { class: "card" }, h("div", { class: `big broker-${c.broker}` }, c.broker), "broker")),
        h("h2", {}, "By status"),
        table(["Status", "Workflows"], STATUSES.map((s) => h("tr", {},
          h("td", {}, h("a", { href: `#/?status=${s}` }, statusBadge(s))),
          h("td", { class: "num" }, c.counts[s] || 0)))),
        h("h2", {}, "Workflow types"),
        c.workflow_types.length ? h("p", {}, c.workflow_types.join(", ")) : h("p", { class: "muted" }, "none registered"),
        h("h2", {}, `Coordinators and shards (${c.coordinators.shard_count})`),
        table(["Coordinator", "Host", "PID", "Alive", "Shards", "Last heartbeat", "Degraded"],
          c.coordinators.coordinators.map((m) => h("tr", {},
            h("td", {}, m.http ? h("a", { href: m.http }, m.identity) : m.identity),
            h("td", {}, m.host), h("td", { class: "num" }, m.pid),
            h("td", {}, m.alive ? "yes" : "no"), h("td", { class: "num" }, m.shards.length),
            h("td", {}, m.heartbeat_at), h("td", {}, m.degraded || "")))),
        h("p", { "data-testid": "cluster-health", class: c.coordinators.healthy ? "" : "warnings" },
          c.coordinators.healthy ? "Healthy: every shard has a live owner."
            : "Not healthy: " + c.coordinators.problems.join("; ")),
        c.notes.length ? h("ul", { class: "warnings" }, c.notes.map((n) => h("li", {}, n))) : null);
    }
    await load();
    return load;
  }

  async function viewDeadLetters() {
    const seq = viewSeq;
    async function load() {
      const d = await api("/api/dead-letters?limit=200");
      if (seq !== viewSeq) return;
      const redrive = h("button", { type: "button", class: "warn", disabled: !d.dead_letters.length,
        onclick: async () => {
          const done = await confirmAction({
            title: "Re-drive dead letters?",
            text: "Messages go back to the queues they came from. Leave the queue empty for all.",
            confirmLabel: "Re-drive",
            fields: [{ name: "queue", label: "Only from queue (optional)", placeholder: "saga.tasks.cars" }],
            submit: (v) => api("/api/dead-letters/redrive", { method: "POST",
              body: { limit: 1000, queue: v.queue || undefined } }),
          });
          if (done) { showBanner(`${done.moved} message(s) re-driven`, "info"); await load(); }
        } }, "Re-drive…");
      mount(
        h("div", { class: "wf-head" }, h("h1", {}, "Dead letters"), h("span", { class: "spacer" }), redrive),
        d.note ? h("p", { class: "muted" }, d.note) : null,
        d.dead_letters.length
          ? table(["Queue", "Reason", "Body"], d.dead_letters.map((m) => h("tr", {},
            h("td", {}, m.queue), h("td", {}, m.reason),
            h("td", {}, h("details", {}, h("summary", {}, m.body.slice(0, 60)), h("pre", {}, m.body))))))
          : h("p", { class: "muted empty" }, "No dead letters."));
    }
    await load();
    return load;
  }

  // -- routing -----------------------------------------------------------------------------------

  async function route() {
    viewSeq += 1;
    refresh = null;
    hideBanner();
    const hash = location.hash || "#/";
    const [path] = hash.slice(1).split("?");
    let nav = "list";
    let view;
    if (path.startsWith("/workflows/")) {
      const id = decodeURIComponent(path.slice("/workflows/".length));
      document.title = `${id} · saga`;
      view = () => viewWorkflow(id);
    } else if (path === "/cluster") {
      nav = "cluster";
      document.title = "Cluster · saga";
      view = viewCluster;
    } else if (path === "/dead-letters") {
      nav = "dead-letters";
      document.title = "Dead letters · saga";
      view = viewDeadLetters;
    } else {
      document.title = "Workflows · saga";
      view = viewList;
    }
    for (const a of document.querySelectorAll("[data-nav]")) {
      a.classList.toggle("active", a.dataset.nav === nav);
    }
    const seq = viewSeq;
    try {
      const next = await view();
      if (seq === viewSeq) refresh = next;
    } catch (err) {
      if (seq !== viewSeq) return;
      mount(h("div", { class: "failure" },
        err.status === 404 ? "No such workflow." : err.message));
    }
  }

  async function boot() {
    try {
      const res = await fetch("/console-config", { headers: { Accept: "application/json" } });
      Object.assign(config, await res.json());
    } catch { /* defaults are fine */ }
    const tokenButton = $("#token-button");
    if (config.auth_required) {
      tokenButton.hidden = false;
      tokenButton.addEventListener("click", async () => { await askToken(); route(); });
      if (!sessionStorage.getItem(TOKEN_KEY)) await askToken();
    }
    $("#token-form").addEventListener("submit", () => { /* method=dialog closes it */ });
    window.addEventListener("hashchange", route);
    startPolling();
    await route();
    document.body.dataset.ready = "true";
  }

  boot();
})();
