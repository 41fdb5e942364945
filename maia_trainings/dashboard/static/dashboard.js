// The dashboard: reads and drives the service's JSON API with the token this tab was given.
"use strict";

(() => {
  const TOKEN_KEY = "maia-trainings.token";
  const REFRESH_MS = 2000;
  // Models, schedules and deliveries change slowly: they are read every few table refreshes.
  const SLOW_EVERY = 5;
  const PAGE_SIZE = 20;
  const FINAL = new Set(["succeeded", "failed", "cancelled"]);
  const SERIES = [
    ["roc_auc", "AUC", "#1570ef"],
    ["gini", "Gini", "#067647"],
    ["ks", "KS", "#dc6803"],
  ];
  const SVG = "http://www.w3.org/2000/svg";

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY),
    caller: null, // {name, scope} from GET /tokens/me
    start: 0,
    ticks: 0,
    timer: null,
    view: 0, // bumped on every navigation: answers for an older view are dropped
    champions: new Map(), // model name -> champion training id
    reportFor: null, // the training whose report is shown
  };

  const $ = (id) => document.getElementById(id);

  class Refused extends Error {} // the token is missing, unknown or revoked
  class Unreachable extends Error {}
  class ApiError extends Error {
    constructor(status, body) {
      const errors = body && body.errors ? ` ${JSON.stringify(body.errors)}` : "";
      super(`${(body && body.message) || `answered ${status}`}${errors}`);
      this.status = status;
    }
  }

  // Building the page: elements from data, never HTML from data.

  function el(tag, attrs = {}, ...children) {
    return fill(document.createElement(tag), attrs, children);
  }

  function svg(tag, attrs = {}, ...children) {
    return fill(document.createElementNS(SVG, tag), attrs, children);
  }

  function fill(node, attrs, children) {
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child !== null && child !== undefined && child !== false) node.append(child);
    }
    return node;
  }

  const time = (iso) => (iso ? `${iso.slice(0, 19).replace("T", " ")}` : "—");
  const number = (value) => (typeof value === "number" ? value.toFixed(3) : "—");
  const canWrite = () => state.caller !== null && state.caller.scope === "write";

  function say(node, text, kind = "") {
    node.textContent = text;
    node.className = kind;
  }

  // The API.

  function banner(text) {
    const node = $("banner");
    node.textContent = text || "";
    node.hidden = !text;
  }

  async function api(path, { method = "GET", body, accept = "application/json", raw } = {}) {
    const headers = { Authorization: `Bearer ${state.token}`, Accept: accept };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
      });
    } catch (error) {
      banner(`The service at ${location.host} is not reachable; retrying every few seconds.`);
      throw new Unreachable(String(error));
    }
    if (response.status >= 500 || response.status === 429) {
      const answer = await response.json().catch(() => null);
      const reason = (answer && answer.message) || response.statusText;
      banner(`The service answered ${response.status}: ${reason}. Retrying every few seconds.`);
      throw new ApiError(response.status, answer);
    }
    banner("");
    if (response.status === 403) {
      const answer = await response.json().catch(() => null);
      // Missing scope and unknown token are both 403: ask who this token is to tell them apart.
      if (path === "/tokens/me" || !(await tokenStillValid())) throw new Refused();
      throw new ApiError(403, answer);
    }
    if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
    if (raw) return response;
    return accept === "application/json" ? response.json() : response.text();
  }

  async function tokenStillValid() {
    try {
      state.caller = await api("/tokens/me");
      showCaller();
      return true;
    } catch (error) {
      if (error instanceof Refused) return false;
      throw error;
    }
  }

  // A failure of a refresh or an action: the token is asked for again, or the banner (already
  // up) says the service is away; anything else is shown where it happened.
  function failed(error, where) {
    if (error instanceof Refused) {
      askToken("The service refused this token (revoked or unknown). Enter another.");
    } else if (!(error instanceof Unreachable) && where) {
      say(where, error.message, "error");
    } else if (!(error instanceof Unreachable) && !(error instanceof ApiError)) {
      console.error(error); // a bug of this page: for the browser's console
    }
  }

  async function save(path, name, accept = "*/*") {
    const response = await api(path, { accept, raw: true });
    const url = URL.createObjectURL(await response.blob());
    const link = el("a", { href: url, download: name, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  }

  // The token.

  function askToken(message) {
    clearTimeout(state.timer);
    state.view += 1;
    state.token = null;
    state.caller = null;
    sessionStorage.removeItem(TOKEN_KEY);
    for (const id of ["overview", "training", "who", "forget"]) $(id).hidden = true;
    $("login").hidden = false;
    say($("login-message"), message || "", message ? "error" : "");
    $("token-input").value = "";
    $("token-input").focus();
  }

  function showCaller() {
    $("who").textContent = `${state.caller.name} (${state.caller.scope})`;
    $("who").hidden = false;
    $("forget").hidden = false;
    $("launch").hidden = !canWrite();
  }

  async function begin() {
    if (!state.token) return askToken("");
    try {
      state.caller = await api("/tokens/me");
    } catch (error) {
      if (error instanceof Refused) return askToken("The service refused this token.");
      // Not reachable (the banner says so): try again shortly.
      state.timer = setTimeout(begin, REFRESH_MS);
      return undefined;
    }
    $("login").hidden = true;
    showCaller();
    return route();
  }

  // Navigation: #/ is the overview, #/trainings/{id} a training.

  function route() {
    if (!state.caller) return undefined;
    clearTimeout(state.timer);
    state.view += 1;
    state.ticks = 0;
    const match = location.hash.match(/^#\/trainings\/(\d+)$/);
    $("overview").hidden = Boolean(match);
    $("training").hidden = !match;
    if (match) {
      state.reportFor = null;
      $("report").replaceChildren();
      $("log").textContent = "";
      say($("training-message"), "");
      return loop((view) => refreshTraining(match[1], view));
    }
    return loop(refreshOverview);
  }

  // Refreshes one view until another is shown; never two at once.
  async function loop(refresh) {
    const view = state.view;
    try {
      await refresh(view);
    } catch (error) {
      failed(error);
    }
    if (view === state.view && state.caller) {
      state.ticks += 1;
      state.timer = setTimeout(() => loop(refresh), REFRESH_MS);
    }
  }

  // The overview.

  function filters() {
    const query = new URLSearchParams();
    if ($("filter-status").value) query.set("status", $("filter-status").value);
    if ($("filter-model").value.trim()) query.set("model_name", $("filter-model").value.trim());
    return query;
  }

  async function refreshOverview(view) {
    const query = filters();
    const count = api(`/trainings/count?${query}`);
    query.set("_sort", "id:DESC");
    query.set("_start", state.start);
    query.set("_limit", PAGE_SIZE);
    const slow = state.ticks % SLOW_EVERY === 0;
    const [rows, total, models] = await Promise.all([
      api(`/trainings?${query}`),
      count,
      slow ? api("/models") : null,
    ]);
    if (view !== state.view) return;
    if (models) {
      state.champions = new Map(models.map((m) => [m.model_name, m.champion && m.champion.id]));
    }
    showTrainings(rows, total);
    if (slow) {
      await Promise.all([
        showModels(models, view).catch((e) => failed(e, $("models"))),
        showSchedules(view).catch((e) => failed(e, $("schedules"))),
        showDeliveries(view).catch((e) => failed(e, $("deliveries"))),
      ]);
    }
  }

  function statusCell(training) {
    const cell = el("td", {}, el("span", { class: `badge ${training.status}`, text: training.status }));
    if (training.status === "running") {
      const done = training.progress || 0;
      cell.append(
        el("progress", { max: 1, value: done, "aria-label": `progress ${Math.round(done * 100)}%` })
      );
    }
    return cell;
  }

  function metricsText(training) {
    const metrics = training.metrics || {};
    if (typeof metrics.roc_auc === "number") {
      return `AUC ${number(metrics.roc_auc)} · Gini ${number(metrics.gini)} · KS ${number(metrics.ks)}`;
    }
    if (typeof training.accuracy === "number") {
      return `accuracy ${number(training.accuracy)} · rmse ${number(training.rmse)}`;
    }
    return "—";
  }

  function showTrainings(rows, total) {
    const body = $("trainings").tBodies[0];
    body.replaceChildren(
      ...rows.map((t) => {
        const champion = state.champions.get(t.model_name) === t.id;
        return el(
          "tr",
          { "data-id": t.id, "data-status": t.status },
          el("td", {}, el("a", { href: `#/trainings/${t.id}`, text: `#${t.id}` })),
          el("td", { text: t.model_name }),
          el("td", {}, t.version || "—", champion ? el("span", { class: "champion", text: " ★ champion" }) : null),
          statusCell(t),
          el("td", { text: time(t.created_at) }),
          el("td", { text: time(t.started_at) }),
          el("td", { text: time(t.finished_at) }),
          el("td", { class: "metrics", text: metricsText(t) })
        );
      })
    );
    $("trainings-empty").hidden = rows.length > 0;
    const first = total ? state.start + 1 : 0;
    $("page-info").textContent = `${first}-${state.start + rows.length} of ${total}`;
    $("page-previous").disabled = state.start === 0;
    $("page-next").disabled = state.start + rows.length >= total;
  }

  async function showModels(models, view) {
    const histories = await Promise.all(
      models.map((m) =>
        api(`/trainings?model_name=${encodeURIComponent(m.model_name)}&status=succeeded&_sort=id:DESC&_limit=30`)
      )
    );
    if (view !== state.view) return;
    $("model-names").replaceChildren(...models.map((m) => el("option", { value: m.model_name })));
    if (!models.length) {
      $("models").replaceChildren(el("p", { class: "muted", text: "No model has trainings yet." }));
      return;
    }
    $("models").replaceChildren(
      ...models.map((model, i) => {
        const c = model.champion;
        return el(
          "div",
          { class: "model", "data-model": model.model_name },
          el("h3", { text: model.model_name }),
          c
            ? el("p", {},
                el("span", { class: "champion", text: "Champion: " }),
                el("a", { href: `#/trainings/${c.id}`, text: `version ${c.version} (#${c.id})` }),
                `, published ${time(c.published_at)}${c.published_by ? ` by ${c.published_by}` : ""}`)
            : el("p", { class: "muted", text: "No champion: nothing published yet." }),
          trend(model.model_name, histories[i].slice().reverse(), c && c.id)
        );
      })
    );
  }

  // AUC, Gini and KS of a model's succeeded trainings, oldest to newest, as an inline SVG.
  function trend(name, trainings, championId) {
    const points = trainings.filter((t) => t.metrics && typeof t.metrics.roc_auc === "number");
    if (!points.length) return el("p", { class: "muted", text: "No AUC, Gini or KS reported yet." });
    const [w, h, left, right, top, bottom] = [400, 170, 34, 12, 10, 134];
    const values = points.flatMap((t) => SERIES.map(([key]) => t.metrics[key])).filter((v) => typeof v === "number");
    const low = Math.min(0, ...values);
    const x = (i) => (points.length === 1 ? (left + w - right) / 2 : left + (i * (w - right - left)) / (points.length - 1));
    const y = (v) => bottom - ((v - low) / (1 - low)) * (bottom - top);
    const chart = svg("svg", {
      class: "trend",
      viewBox: `0 0 ${w} ${h}`,
      role: "img",
      "aria-label": `AUC, Gini and KS of ${name} by version`,
    }, svg("title", { text: `AUC, Gini and KS of ${name} by version` }),
      svg("rect", { x: left, y: top, width: w - left - right, height: bottom - top, fill: "#fff", stroke: "#d9dee7" }));
    for (const tick of [low, (low + 1) / 2, 1]) {
      chart.append(
        svg("line", { x1: left, x2: w - right, y1: y(tick), y2: y(tick), stroke: "#eef0f4" }),
        svg("text", { x: left - 4, y: y(tick) + 3, "font-size": 9, "text-anchor": "end", fill: "#667085", text: tick.toFixed(1) })
      );
    }
    points.forEach((t, i) => {
      const champion = t.id === championId;
      chart.append(svg("text", {
        x: x(i), y: bottom + 13, "font-size": 9, "text-anchor": "middle",
        fill: champion ? "#b54708" : "#667085", "font-weight": champion ? "bold" : null,
        text: `${(t.version || `#${t.id}`).slice(0, 12)}${champion ? " ★" : ""}`,
      }));
    });
    for (const [key, label, colour] of SERIES) {
      const drawn = points.map((t, i) => [i, t.metrics[key]]).filter(([, v]) => typeof v === "number");
      chart.append(svg("polyline", {
        class: "series", "data-series": key, fill: "none", stroke: colour, "stroke-width": 1.8,
        points: drawn.map(([i, v]) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" "),
      }));
      for (const [i, v] of drawn) {
        chart.append(svg("circle", { cx: x(i), cy: y(v), r: 3, fill: colour },
          svg("title", { text: `${label} ${number(v)}, version ${points[i].version}` })));
      }
    }
    const legend = el("div", { class: "legend" },
      SERIES.map(([key, label]) => el("span", {}, el("span", { class: `swatch ${key}` }), label)));
    return el("div", {}, chart, legend);
  }

  function table(label, headings, rows, empty) {
    if (!rows.length) return el("p", { class: "muted", text: empty });
    return el("table", { "aria-label": label },
      el("thead", {}, el("tr", {}, headings.map((text) => el("th", { text })))),
      el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c) => el("td", {}, c))))));
  }

  async function showSchedules(view) {
    const found = await api("/schedules?_sort=id:ASC&_limit=50");
    if (view !== state.view) return;
    $("schedules").replaceChildren(table(
      "Schedules",
      ["name", "cron", "zone", "model", "next fire (UTC)", "last fired"],
      found.map((s) => [s.name, s.cron, s.timezone, s.model_name || "default",
        s.enabled ? time(s.next_fire_at) : "paused", time(s.last_fired_at)]),
      "No schedules."
    ));
  }

  async function showDeliveries(view) {
    const hooks = await api("/webhooks?_limit=50");
    const lists = await Promise.all(hooks.map((w) => api(`/webhooks/${w.id}/deliveries?_limit=50`)));
    if (view !== state.view) return;
    const failedOnes = lists.flat().filter((d) => d.status === "failed");
    $("deliveries").replaceChildren(table(
      "Failed webhook deliveries",
      ["event", "training", "url", "attempts", "last error", "created (UTC)"],
      failedOnes.map((d) => [d.event, el("a", { href: `#/trainings/${d.training_id}`, text: `#${d.training_id}` }),
        d.url, String(d.attempt_count), d.last_error || String(d.last_status_code), time(d.created_at)]),
      hooks.length ? "No failed deliveries." : "No webhook subscriptions."
    ));
  }

  // A training's page.

  async function refreshTraining(id, view) {
    view = view === undefined ? state.view : view;
    const [training, log, models] = await Promise.all([
      api(`/trainings/${id}`),
      api(`/trainings/${id}/log`, { accept: "text/plain" }),
      api("/models"),
    ]);
    if (view !== state.view) return;
    state.champions = new Map(models.map((m) => [m.model_name, m.champion && m.champion.id]));
    showTraining(training);
    showLog(log);
    if (training.status === "succeeded" && state.reportFor !== id) {
      state.reportFor = id;
      await showReport(id, view).catch((e) => failed(e, $("report")));
    }
  }

  function showTraining(t) {
    $("training-title").replaceChildren(`Training #${t.id} `,
      el("span", { class: `badge ${t.status}`, text: t.status }),
      ...(t.status === "running" ? [el("progress", { max: 1, value: t.progress || 0 })] : []));
    const champion = state.champions.get(t.model_name) === t.id;
    const facts = [
      ["uuid", t.uuid], ["model", t.model_name], ["version", t.version || "—"],
      ["champion", champion ? "yes" : "no"],
      ["created (UTC)", `${time(t.created_at)} by ${t.created_by || "—"}`],
      ["scheduled", time(t.scheduled_at)], ["started", time(t.started_at)],
      ["finished", time(t.finished_at)], ["attempts", String(t.attempts)],
      ["metrics", metricsText(t)], ["error", t.error || "—"],
      ["published", t.published_at ? `${time(t.published_at)} by ${t.published_by || "policy"}` : "—"],
      ["publish note", t.publish_note || "—"], ["model file", t.binarySha256 ? `${t.binaryPath} (SHA-256 ${t.binarySha256})` : "—"],
    ];
    $("training-facts").replaceChildren(el("dl", { class: "facts" },
      facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })])));
    const actions = [];
    if (t.binarySha256) {
      actions.push(button("Download model", "secondary", () =>
        save(`/trainings/${t.id}/binary`, t.binaryPath.split("/").pop())));
    }
    if (t.status === "succeeded") {
      actions.push(button("Save report page", "secondary", () =>
        save(`/trainings/${t.id}/report`, `report-${t.id}.html`, "text/html")));
    }
    if (canWrite() && t.status === "succeeded" && t.binarySha256 && !champion) {
      actions.push(button("Publish", "", () => act(t, "publish", "published: now its model's champion")));
    }
    if (canWrite() && !FINAL.has(t.status)) {
      actions.push(button("Cancel", "danger", () => act(t, "cancel", "cancelled")));
    }
    $("training-actions").replaceChildren(...actions);
  }

  function button(text, kind, onclick) {
    return el("button", { type: "button", class: kind, text, onclick: async (event) => {
      event.target.disabled = true;
      try {
        await onclick();
      } catch (error) {
        failed(error, $("training-message"));
      } finally {
        event.target.disabled = false;
      }
    } });
  }

  async function act(training, action, done) {
    await api(`/trainings/${training.id}/${action}`, { method: "POST" });
    if (action === "publish") state.champions.set(training.model_name, training.id);
    say($("training-message"), `Training #${training.id} ${done}.`, "ok");
    await refreshTraining(training.id);
  }

  function showLog(text) {
    const log = $("log");
    const atEnd = log.scrollHeight - log.scrollTop - log.clientHeight < 30;
    if (log.textContent !== text) log.textContent = text || "(nothing logged yet)";
    if (atEnd) log.scrollTop = log.scrollHeight; // following, unless the reader scrolled up
  }

  // The report page's four charts, taken out of it (they are inline SVG with no style of their
  // own): the page itself, with its own CSP and style sheet, could not be shown under this one.
  async function showReport(id, view) {
    let page;
    try {
      page = await api(`/trainings/${id}/report`, { accept: "text/html" });
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        $("report").replaceChildren(el("p", { class: "muted", text: "This training has no validation report." }));
        return;
      }
      state.reportFor = null; // try again at the next refresh
      throw error;
    }
    if (view !== state.view) return;
    // The page's style sheet goes before parsing: this page's CSP would refuse it, and say so.
    const unstyled = page.replace(/<style[\s\S]*?<\/style>/gi, "");
    const parsed = new DOMParser().parseFromString(unstyled, "text/html");
    const charts = [...parsed.querySelectorAll("svg")].map((chart) => {
      for (const script of chart.querySelectorAll("script, foreignObject")) script.remove();
      return document.importNode(chart, true);
    });
    $("report").replaceChildren(...(charts.length ? charts
      : [el("p", { class: "muted", text: "The report has no charts." })]));
  }

  // Wiring.

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      state.token = $("token-input").value.trim();
      sessionStorage.setItem(TOKEN_KEY, state.token);
      say($("login-message"), "Checking…");
      begin();
    });
    $("forget").addEventListener("click", () => askToken("Token forgotten."));
    const refilter = (event) => {
      event.preventDefault();
      state.start = 0;
      route();
    };
    $("filters").addEventListener("submit", refilter);
    $("filter-status").addEventListener("change", refilter);
    $("filter-model").addEventListener("change", refilter);
    $("page-previous").addEventListener("click", () => {
      state.start = Math.max(0, state.start - PAGE_SIZE);
      route();
    });
    $("page-next").addEventListener("click", () => {
      state.start += PAGE_SIZE;
      route();
    });
    $("launch-form").addEventListener("submit", launch);
    window.addEventListener("hashchange", route);
    begin();
  });

  async function launch(event) {
    event.preventDefault();
    const message = $("launch-message");
    let meta;
    try {
      meta = JSON.parse($("launch-meta").value || "{}");
    } catch (error) {
      say(message, `Meta is not JSON: ${error.message}`, "error");
      return;
    }
    const body = { model_name: $("launch-model").value.trim(), meta };
    if ($("launch-at").value) body.scheduled_at = new Date($("launch-at").value).toISOString();
    try {
      const made = await api("/trainings", { method: "POST", body });
      say(message, `Training #${made.id} ${made.status}.`, "ok");
      state.start = 0;
      route();
    } catch (error) {
      failed(error, message);
    }
  }
})();
