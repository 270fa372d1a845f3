// The LLM Gateway console: plain JavaScript over the gateway's documented JSON routes.
// Every value from the server is put in the page as text (textContent, text nodes): never as HTML.
"use strict";

(function () {
  const API = "/api/v1/llm";
  const TOKEN_KEY = "gateway-console-token";
  const REFRESH_MS = 2000; // the live views poll at this pace (the bound: at most 2 s)
  const TTFT_REFRESH_MS = 10000;
  const COLORS = ["#3b82f6", "#e8590c", "#2f9e44", "#ae3ec9", "#d6336c", "#0c8599", "#f08c00", "#5c7cfa", "#868e96"];

  const state = {
    session: null,
    view: null,
    timer: null,
    charts: new Map(),
    logCursor: null,
    logCursors: [],
    ttft: {},
    ttftAt: 0,
    period: "hour",
  };

  // ---------------------------------------------------------------- helpers
  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = String(value);
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function fmt(value, digits = 1, unit = "") {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    return `${Number(value).toLocaleString(undefined, { maximumFractionDigits: digits })}${unit}`;
  }
  const pct = (value) => (value === null || value === undefined ? "–" : `${(value * 100).toFixed(1)}%`);
  const usd = (value) => `$${Number(value || 0).toFixed(6)}`;
  const localTime = (ms) => (ms ? new Date(ms).toLocaleString() : "–");

  function seconds(ms) {
    if (ms === null || ms === undefined) return "–";
    const s = Math.max(0, Math.round(ms / 1000));
    return s >= 120 ? `${Math.round(s / 60)} min` : `${s} s`;
  }

  class AuthError extends Error {}

  async function api(path, options = {}) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const headers = Object.assign({ Authorization: `Bearer ${token}` }, options.headers || {});
    const response = await fetch(path, Object.assign({}, options, { headers, cache: "no-store" }));
    if (options.raw) {
      if (!response.ok) throw new Error(await errorText(response));
      return response;
    }
    let body = null;
    try {
      body = await response.json();
    } catch (e) {
      body = null;
    }
    if (response.status === 401) {
      throw new AuthError(messageOf(body) || "the token was refused");
    }
    if (!response.ok || !body || body.success === false) {
      const err = new Error(messageOf(body) || `HTTP ${response.status}`);
      err.status = response.status;
      throw err;
    }
    return body.data;
  }

  function messageOf(body) {
    return body && body.error && typeof body.error.message === "string" ? body.error.message : null;
  }

  async function errorText(response) {
    try {
      return messageOf(await response.json()) || `HTTP ${response.status}`;
    } catch (e) {
      return `HTTP ${response.status}`;
    }
  }

  function problem(text) {
    $("problem").textContent = text || "";
  }

  function handle(err) {
    if (err instanceof AuthError) {
      logout(err.message);
      return;
    }
    problem(err && err.message ? err.message : String(err));
  }

  function confirmAction(text) {
    return new Promise((resolve) => {
      const dialog = $("confirm");
      $("confirm-text").textContent = text;
      dialog.returnValue = "cancel";
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.showModal();
      $("confirm-ok").focus();
    });
  }

  // ---------------------------------------------------------------- login
  function showLogin(reason) {
    stopRefresh();
    $("app").hidden = true;
    $("login").hidden = false;
    $("login-reason").textContent = reason || "";
    $("token").value = "";
    $("token").focus();
  }

  function logout(reason) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.session = null;
    showLogin(reason);
  }

  async function start() {
    if (!sessionStorage.getItem(TOKEN_KEY)) {
      showLogin("");
      return;
    }
    try {
      state.session = await api(`${API}/console/session`);
    } catch (err) {
      if (err instanceof AuthError) {
        logout(`Signed out: ${err.message}`);
      } else {
        logout(err.message || "the gateway did not answer");
      }
      return;
    }
    const admin = state.session.role === "admin";
    document.body.dataset.role = state.session.role;
    for (const node of document.querySelectorAll("[data-admin-only]")) node.hidden = !admin;
    $("who").textContent = `${state.session.subject} (${admin ? "admin: every tenant" : "tenant " + state.session.tenant})`;
    $("login").hidden = true;
    $("app").hidden = false;
    route();
  }

  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim().replace(/^Bearer\s+/i, "");
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    start();
  });
  $("logout").addEventListener("click", () => logout("Logged out."));

  // ---------------------------------------------------------------- views and refresh
  const VIEWS = {
    overview: { load: loadOverview, live: true },
    charts: { load: loadCharts, live: true },
    logs: { load: () => loadLogs(null), live: false },
    batches: { load: loadBatches, live: true },
    alerts: { load: loadAlerts, live: true },
    admin: { load: loadAdmin, live: false },
  };

  function route() {
    if (!state.session) return;
    let view = location.hash.replace("#", "") || "overview";
    if (!VIEWS[view]) view = "overview";
    state.view = view;
    for (const section of document.querySelectorAll("[data-view]")) section.hidden = section.dataset.view !== view;
    for (const link of document.querySelectorAll("[data-nav]")) {
      if (link.dataset.nav === view) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    problem("");
    stopRefresh();
    refresh(true);
  }
  window.addEventListener("hashchange", () => {
    route();
    $("main").focus();
  });

  function stopRefresh() {
    if (state.timer) clearTimeout(state.timer);
    state.timer = null;
  }

  async function refresh(first) {
    const view = state.view;
    const spec = VIEWS[view];
    if (!spec || !state.session) return;
    if (!document.hidden || first) {
      try {
        await spec.load();
        if (state.view === view) {
          problem("");
          $("refreshed").textContent = `Updated ${new Date().toLocaleTimeString()}`;
        }
      } catch (err) {
        handle(err);
      }
    }
    if (spec.live && state.session && state.view === view) {
      state.timer = setTimeout(() => refresh(false), REFRESH_MS);
    }
  }

  // ---------------------------------------------------------------- charts
  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function chartWidth(holder) {
    return Math.max(260, holder.clientWidth - 18);
  }

  // One uPlot chart in `holder`, made once and fed new data on every refresh.
  function drawChart(holder, key, title, times, series, unit) {
    const names = Object.keys(series);
    const data = [times, ...names.map((n) => series[n])];
    const signature = names.join("\u0000");
    let entry = state.charts.get(key);
    if (entry && (entry.signature !== signature || !holder.contains(entry.plot.root))) {
      entry.plot.destroy();
      entry = null;
    }
    if (!entry) {
      holder.replaceChildren(el("figcaption", { text: title }));
      const axis = { stroke: cssVar("--muted"), grid: { stroke: cssVar("--line"), width: 1 }, ticks: { stroke: cssVar("--line") } };
      const options = {
        width: chartWidth(holder),
        height: 220,
        scales: { x: { time: true } },
        axes: [axis, Object.assign({}, axis, { size: 70, values: (u, ticks) => ticks.map((v) => fmt(v, 4) + (unit || "")) })],
        series: [
          { label: "time", value: (u, v) => (v === null ? "–" : new Date(v * 1000).toLocaleString()) },
          ...names.map((name, i) => ({
            label: name,
            stroke: COLORS[i % COLORS.length],
            width: 2,
            spanGaps: true,
            value: (u, v) => (v === null || v === undefined ? "–" : fmt(v, 6) + (unit || "")),
          })),
        ],
      };
      const plot = new uPlot(options, data, holder);
      const summary = el("p", { class: "summary" });
      holder.append(summary);
      entry = { plot, signature, summary };
      state.charts.set(key, entry);
    } else {
      entry.plot.setData(data);
    }
    // the text alternative of the chart: each line's total over the period
    entry.summary.textContent =
      "Totals: " +
      names.map((n) => `${n} ${fmt(series[n].reduce((a, v) => a + (v || 0), 0), 6)}${unit || ""}`).join(", ");
    entry.summary.dataset.totals = JSON.stringify(
      Object.fromEntries(names.map((n) => [n, series[n].reduce((a, v) => a + (v || 0), 0)]))
    );
  }

  window.addEventListener("resize", () => {
    for (const entry of state.charts.values()) {
      const holder = entry.plot.root.parentElement;
      if (holder) entry.plot.setSize({ width: chartWidth(holder), height: 220 });
    }
  });

  function prefixed(prefix, series) {
    return Object.fromEntries(Object.entries(series).map(([name, values]) => [`${prefix} ${name}`, values]));
  }

  // ---------------------------------------------------------------- overview
  async function loadTtft() {
    // TTFT is shown when /metrics carries it (streaming adds it); otherwise a dash
    if (Date.now() - state.ttftAt < TTFT_REFRESH_MS) return;
    state.ttftAt = Date.now();
    for (const provider of ["openai", "anthropic"]) {
      try {
        const data = await api(`${API}/metrics?period=hour&provider=${provider}`);
        const perf = (data && data.performance) || {};
        const found = Object.entries(perf).filter(([k, v]) => /ttft/i.test(k) && typeof v === "number");
        state.ttft[provider] = found.length ? found.map(([k, v]) => `${k} ${fmt(v)} ms`).join(", ") : null;
      } catch (err) {
        if (err instanceof AuthError) throw err;
        state.ttft[provider] = null;
      }
    }
  }

  function providerCard(name, p) {
    const h = p.health;
    const breaker = h.breaker.state;
    const breakerText =
      breaker === "open" ? `open, half-open probe in ${seconds(p.halfOpenInMs)}` : breaker.replace("_", "-");
    const rows = [
      ["Score", `${h.score} / 100`],
      ["Breaker", breakerText],
      ["Requests/min", fmt(p.requestsPerMin, 1)],
      ["Error rate (5 min)", pct(p.errorRate)],
      ["Latency p50 / p95", `${fmt(p.p50Latency, 0, " ms")} / ${fmt(p.p95Latency, 0, " ms")}`],
      ["TTFT", state.ttft[name] || "–"],
      ["Queue sync / async / batch", `${p.queue.sync} / ${p.queue.async} / ${p.queue.batch}`],
      ["Live workers", String(p.liveWorkers)],
    ];
    if (h.reasons && h.reasons.length) rows.push(["Why", h.reasons.join("; ")]);
    return el(
      "article",
      { class: "card", "data-provider": name, "data-status": h.status, "data-breaker": breaker },
      el(
        "h3",
        {},
        el("span", { text: name }),
        el("span", { class: "badge", "data-state": h.status, text: h.status }),
        el("span", { class: "badge", "data-state": breaker, text: `breaker ${breaker.replace("_", "-")}` })
      ),
      el("dl", {}, rows.map(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]))
    );
  }

  async function loadOverview() {
    const [overview, series] = await Promise.all([
      api(`${API}/console/overview`),
      api(`${API}/console/series?period=hour`),
      loadTtft(),
    ]);
    if (state.view !== "overview") return;
    $("providers").replaceChildren(...Object.entries(overview.providers).map(([n, p]) => providerCard(n, p)));
    $("limits").replaceChildren(
      ...overview.limits.map((g) =>
        el(
          "div",
          { class: "gauge", "data-scope": g.scope, "data-unit": g.unit },
          el("span", { text: `${g.scope} ${g.unit}/min` }),
          el("meter", {
            min: 0,
            max: 1,
            low: 0.7,
            high: 0.9,
            optimum: 0,
            value: g.fill,
            "aria-label": `${g.scope} ${g.unit} bucket in use`,
          }),
          el("span", { text: `${fmt(g.capacity - g.available, 0)} of ${fmt(g.capacity, 0)} (${pct(g.fill)})` })
        )
      )
    );
    const refused = Object.entries(overview.refusedPerMin);
    $("refused").textContent = refused.length ? refused.map(([t, n]) => `${t}: ${fmt(n, 1)}`).join(", ") : "none";
    $("hit-rate").textContent = pct(overview.cacheHitRate);
    const lines = Object.assign({}, prefixed("requests", series.requests), prefixed("errors", series.errors));
    drawChart($("overview-traffic"), "overview-traffic", "Requests and errors per minute", series.times, lines, "");
  }

  // ---------------------------------------------------------------- charts page
  for (const radio of document.querySelectorAll('input[name="period"]')) {
    radio.addEventListener("change", () => {
      state.period = radio.value;
      for (const entry of state.charts.values()) entry.plot.destroy();
      state.charts.clear();
      $("charts").replaceChildren();
      refresh(true);
    });
  }

  async function loadCharts() {
    const s = await api(`${API}/console/series?period=${state.period}`);
    if (state.view !== "charts") return;
    const per = s.period === "hour" ? "minute" : "hour";
    const specs = [
      ["c-requests", `Requests by provider per ${per}`, s.requests, ""],
      ["c-errors", `Errors by provider per ${per}`, s.errors, ""],
      ["c-latency", "Latency percentiles", s.latency, " ms"],
      ["c-cost-model", `Cost per ${per} by model (USD)`, s.costByModel, ""],
      ["c-cost-tenant", `Cost per ${per} by tenant (USD)`, s.costByTenant, ""],
      ["c-hits", "Cache hit rate", { "hit rate": s.cacheHitRate }, ""],
      ["c-refused", `Refused by the API per ${per}`, s.refused, ""],
    ];
    const holder = $("charts");
    for (const [key, title, series, unit] of specs) {
      let figure = document.getElementById(key);
      if (!figure) {
        figure = el("figure", { class: "chart", id: key });
        holder.append(figure);
      }
      const shown = Object.keys(series).length ? series : { none: s.times.map(() => null) };
      drawChart(figure, key, title, s.times, shown, unit);
    }
  }

  // ---------------------------------------------------------------- logs
  function logQuery(cursor) {
    const form = new FormData($("log-filters"));
    const params = new URLSearchParams({ limit: "50" });
    for (const [name, value] of form.entries()) {
      if (!value) continue;
      if (name === "startTime" || name === "endTime") params.set(name, String(new Date(value).getTime()));
      else params.set(name, value);
    }
    if (cursor) params.set("cursor", cursor);
    return params;
  }

  function logSummary(entry) {
    const status =
      entry.type === "error"
        ? (entry.error && entry.error.type) || "error"
        : entry.type === "response"
          ? entry.finishReason || "answered"
          : "request";
    return el(
      "summary",
      {},
      el("span", { text: localTime(Date.parse(entry.timestamp)) }),
      el("span", { class: "badge", "data-state": entry.type === "error" ? "failed" : "closed", text: entry.type }),
      el("span", { text: entry.provider || "–" }),
      el("span", { class: "model", text: entry.model || "–" }),
      el("span", { class: "muted", text: entry.tenant ? `tenant ${entry.tenant}` : "" }),
      el("span", { text: status }),
      el("span", { text: entry.latencyMs !== undefined ? fmt(entry.latencyMs, 0, " ms") : "" })
    );
  }

  async function loadLogs(cursor) {
    const page = await api(`${API}/console/logs?${logQuery(cursor)}`);
    if (state.view !== "logs") return;
    state.logCursor = page.nextCursor;
    const items = page.logs.map((entry) =>
      el("details", { "data-request-id": entry.requestId }, logSummary(entry), el("pre", { text: JSON.stringify(entry, null, 2) }))
    );
    $("logs").replaceChildren(...(items.length ? items : [el("p", { class: "muted", text: "No entries." })]));
    $("logs-next").disabled = !page.nextCursor;
  }

  $("log-filters").addEventListener("submit", (event) => {
    event.preventDefault();
    state.logCursors = [];
    loadLogs(null).catch(handle);
  });
  $("logs-first").addEventListener("click", () => {
    state.logCursors = [];
    loadLogs(null).catch(handle);
  });
  $("logs-next").addEventListener("click", () => {
    if (!state.logCursor) return;
    state.logCursors.push(state.logCursor);
    loadLogs(state.logCursor).catch(handle);
  });

  // ---------------------------------------------------------------- batches
  function batchCard(b, admin) {
    const c = b.requestCounts;
    const done = c.completed + c.failed;
    const started = b.inProgressAt || b.createdAt;
    const ended = b.completedAt || b.failedAt || b.cancelledAt || b.expiredAt;
    const elapsed = ((ended || Date.now()) - started) / 1000;
    const rate = elapsed > 0 ? done / elapsed : 0;
    const eta = rate > 0 && done < c.total && !ended ? ((c.total - done) / rate) * 1000 : null;
    const share = c.total ? Math.round((done / c.total) * 100) : 0;
    const actions = el(
      "div",
      { class: "actions" },
      el("button", { type: "button", text: "Download results", onclick: () => download(b).catch(handle) })
    );
    if (admin && ["validating", "in_progress", "finalizing"].includes(b.status)) {
      actions.append(
        el("button", {
          type: "button",
          class: "danger",
          text: "Cancel",
          onclick: async () => {
            if (!(await confirmAction(`Cancel batch ${b.id}? Requests not started end as cancelled.`))) return;
            api(`${API}/batches/${encodeURIComponent(b.id)}/cancel`, { method: "POST" }).then(loadBatches).catch(handle);
          },
        })
      );
    }
    return el(
      "article",
      { class: "card", "data-batch": b.id, "data-status": b.status },
      el("h3", {}, el("span", { text: b.id }), el("span", { class: "badge", "data-state": b.status, text: b.status })),
      el(
        "div",
        { class: "progress" },
        el("progress", { max: 100, value: share, "aria-label": `batch ${b.id} progress` }),
        el("span", { class: "share", text: `${share}% (${done} of ${c.total})` })
      ),
      el(
        "dl",
        {},
        [
          ["Completed", String(c.completed)],
          ["Failed", String(c.failed)],
          ["Rate", `${fmt(rate, 2)} /s`],
          ["ETA", eta === null ? "–" : seconds(eta)],
          ["Cost", usd(b.cost && b.cost.totalCost)],
          ["Tenant", b.tenant || "–"],
          ["Created", localTime(b.createdAt)],
        ].map(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })])
      ),
      actions
    );
  }

  async function download(b) {
    const response = await api(b.resultsUrl, { raw: true });
    const blob = await response.blob();
    const url = URL.createObjectURL(blob);
    const link = el("a", { href: url, download: `${b.id}_results.jsonl` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  async function loadBatches() {
    const data = await api(`${API}/console/batches`);
    if (state.view !== "batches") return;
    const admin = state.session.role === "admin";
    const cards = data.batches.map((b) => batchCard(b, admin));
    $("batches").replaceChildren(...(cards.length ? cards : [el("p", { class: "muted", text: "No batches." })]));
  }

  // ---------------------------------------------------------------- alerts
  function table(headers, rows) {
    return el(
      "div",
      { class: "table-wrap" },
      el(
        "table",
        {},
        el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col", text: h })))),
        el("tbody", {}, rows.map((r) => el("tr", {}, r.map((v) => el("td", { text: v })))))
      )
    );
  }

  function alertText(a) {
    return [a.message, a.value !== undefined ? `value ${a.value}` : null].filter(Boolean).join(" · ");
  }

  async function loadAlerts() {
    const data = await api(`${API}/alerts?limit=100`);
    if (state.view !== "alerts") return;
    const open = data.active.map((a) => [a.type || "", a.provider || "–", alertText(a), localTime(a.raisedAt || a.at)]);
    $("alerts-open").replaceChildren(
      open.length ? table(["Type", "Provider", "What", "Since"], open) : el("p", { class: "muted", text: "No open alerts." })
    );
    const recent = data.recent.map((a) => [
      localTime(a.at || a.raisedAt || a.clearedAt),
      a.event || a.state || "",
      a.type || "",
      a.provider || "–",
      alertText(a),
    ]);
    $("alerts-history").replaceChildren(
      recent.length ? table(["When", "Event", "Type", "Provider", "What"], recent) : el("p", { class: "muted", text: "None yet." })
    );
  }

  // ---------------------------------------------------------------- admin
  async function loadAdmin() {
    const admin = state.session.role === "admin";
    $("admin-refused").hidden = admin;
    $("admin-actions").hidden = !admin;
  }

  async function adminAction(question, path, body) {
    if (!(await confirmAction(question))) return;
    $("admin-result").textContent = "Working…";
    try {
      const data = await api(path, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body || {}),
      });
      $("admin-result").textContent = JSON.stringify(data, null, 2);
    } catch (err) {
      $("admin-result").textContent = `Refused: ${err.message}`;
      if (err instanceof AuthError) handle(err);
    }
  }

  $("run-test").addEventListener("click", () =>
    adminAction("Send a short real test request to each enabled provider?", `${API}/test`)
  );
  $("clear-cache").addEventListener("click", () =>
    adminAction("Remove every cached answer from the response cache?", `${API}/cache/clear`)
  );

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && state.session && !state.timer) refresh(false);
  });

  start();
})();
