// The tracker's web console. Reads the /admin JSON endpoints every few seconds and shows
// them. Every value goes into the page as text (textContent, never HTML): conversation
// ids and receivers' error texts are other people's data.
"use strict";
(() => {
  const REFRESH_MS = 3000;
  const CONFIRM_MS = 5000;
  const TOKEN_KEY = "tracker.console.token";
  const $ = (id) => document.getElementById(id);

  let token = sessionStorage.getItem(TOKEN_KEY) || "";
  let lookedUp = null; // the conversation id shown, refreshed with the rest
  let timer = null;
  const confirming = new Map(); // dead-letter id -> time its purge asks for confirmation

  class AuthError extends Error {}
  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // --- DOM helpers: text only -------------------------------------------------------------

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "data") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function cell(field, value, cls) {
    return el("td", { data: { field }, class: cls }, value === null || value === undefined ? "-" : value);
  }

  function emptyRow(columns, text) {
    return el("tr", {}, el("td", { colspan: columns, class: "empty" }, text));
  }

  function duration(ms) {
    if (ms === null || ms === undefined) return "-";
    if (ms < 1000) return `${ms}ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(1)}s`;
    const s = Math.floor(ms / 1000);
    if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
    return `${Math.floor(s / 86400)}d${String(Math.floor((s % 86400) / 3600)).padStart(2, "0")}h`;
  }

  function size(n) {
    if (!n) return n === 0 ? "0 B" : "-";
    const units = ["B", "KB", "MB", "GB"];
    let value = n;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return unit ? `${value.toFixed(1)} ${units[unit]}` : `${value} B`;
  }

  function conversationLink(id) {
    if (id === null || id === undefined) return "-";
    return el("button", { type: "button", class: "link", onclick: () => lookUp(id) }, id);
  }

  function notice(text, isError) {
    const node = $("notice");
    node.textContent = text;
    node.className = isError ? "error" : "";
  }

  // --- the API ------------------------------------------------------------------------------

  async function api(path, options) {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = `Bearer ${token}`;
    if (options && options.body) headers["Content-Type"] = "application/json";
    const response = await fetch(path, { cache: "no-store", ...options, headers });
    if (response.status === 401) throw new AuthError("a token is needed");
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) {
      const message = body && body.error ? body.error.message : response.statusText;
      throw new ApiError(response.status, message);
    }
    return body;
  }

  // --- rendering ----------------------------------------------------------------------------

  function renderStatus(status) {
    const health = $("health");
    health.textContent = status.healthy ? "healthy" : "degraded";
    health.className = `badge ${status.healthy ? "healthy" : "degraded"}`;
    $("problems").replaceChildren(...status.problems.map((p) => el("li", {}, p)));
    const layout = status.layout;
    const t = status.totals;
    const facts = [
      ["shards", layout.previous === null ? layout.count : `${layout.count} (resharding from ${layout.previous})`],
      ["layout epoch", layout.epoch],
      ["pods alive", status.pods.length ? status.pods.join(", ") : "none"],
      ["waiting", t.waiting],
      ["backlog", t.backlog],
      ["pending", t.pending],
      ["dead letters", t.dead_letters],
    ];
    $("summary").replaceChildren(
      ...facts.map(([name, value]) => el("div", { data: { fact: name } }, el("dt", {}, name), el("dd", {}, value))),
    );
    $("redis").tBodies[0].replaceChildren(
      ...status.redis.map((n) =>
        el(
          "tr",
          {},
          cell("node", n.node || "redis"),
          cell("version", n.version),
          cell("role", n.role),
          cell("used_memory", size(n.used_memory), "n"),
          cell("maxmemory", n.maxmemory ? size(n.maxmemory) : "none", "n"),
          cell("maxmemory_policy", n.maxmemory_policy),
          cell("loading", n.loading ? "yes" : "no", n.loading ? "bad" : ""),
          cell("read_only", n.read_only ? "yes" : "no", n.read_only ? "bad" : ""),
        ),
      ),
    );
    $("shards").tBodies[0].replaceChildren(
      ...status.shards.map((s) => {
        const overdue = Math.max(s.oldest_overdue_ms, s.backlog_overdue_ms, s.pending_overdue_ms);
        return el(
          "tr",
          { data: { shard: s.shard } },
          cell("shard", s.shard),
          cell("leader", s.leader || "none", s.leader ? "" : "bad"),
          cell("waiting", s.waiting, "n"),
          cell("overdue", overdue ? duration(overdue) : "-", overdue > status.overdue_limit_ms ? "n bad" : "n"),
          cell("backlog", s.backlog, "n"),
          cell("pending", s.pending, "n"),
          cell("dead_letters", s.dead_letters, s.dead_letters ? "n bad" : "n"),
          cell("writes", s.refuses_writes ? `refused (epoch ${s.epoch})` : "ok", s.refuses_writes ? "bad" : ""),
        );
      }),
    );
    const roles = $("roles");
    roles.hidden = !status.roles.length;
    roles.tBodies[0].replaceChildren(
      ...status.roles.map((r) =>
        el(
          "tr",
          { data: { role: r.name } },
          cell("name", r.name),
          cell("pid", r.pid, "n"),
          cell("state", r.state, r.state === "ok" ? "" : "bad"),
          cell("progress_age_ms", duration(r.progress_age_ms), "n"),
          cell("error", r.error_kind ? `${r.error_kind}: ${r.error}` : "", "text"),
        ),
      ),
    );
  }

  function renderPending(listing) {
    $("pending-count").textContent = `(${listing.pending.length} of ${listing.total})`;
    const rows = listing.pending.map((p) =>
      el(
        "tr",
        { data: { id: p.id } },
        cell("id", p.id, "id"),
        cell("state", p.state, p.state === "failing" ? "bad" : ""),
        el("td", { data: { field: "conversation_id" }, class: "text" }, conversationLink(p.conversation_id)),
        cell("level", p.level, "n"),
        cell("due_at", p.due_at, "mono"),
        cell("consumer", p.consumer, "text"),
        cell("idle_ms", duration(p.idle_ms), "n"),
        cell("times_read", p.times_read, "n"),
        cell("attempts", p.attempts, "n"),
        cell("last_error", p.fields ? `fields: ${JSON.stringify(p.fields)}` : p.last_error || "", "text"),
      ),
    );
    $("pending").tBodies[0].replaceChildren(...(rows.length ? rows : [emptyRow(10, "nothing pending")]));
  }

  function renderDeadLetters(listing) {
    $("dead-count").textContent = `(${listing.dead_letters.length} of ${listing.total}, newest first)`;
    const now = Date.now();
    const rows = listing.dead_letters.map((d) => {
      const n = d.notification;
      const asking = (confirming.get(d.id) || 0) > now;
      const replay = el(
        "button",
        {
          type: "button",
          data: { action: "replay" },
          disabled: d.malformed,
          title: d.malformed ? "malformed: it cannot be replayed, purge it" : "put it back on its shard stream",
          onclick: () => act("replay", d.id),
        },
        "Replay",
      );
      const purge = el(
        "button",
        {
          type: "button",
          data: { action: "purge" },
          class: asking ? "confirm" : "",
          onclick: () => {
            if ((confirming.get(d.id) || 0) > Date.now()) {
              confirming.delete(d.id);
              act("purge", d.id);
            } else {
              confirming.set(d.id, Date.now() + CONFIRM_MS);
              renderDeadLetters(listing);
            }
          },
        },
        asking ? "Confirm purge" : "Purge",
      );
      return el(
        "tr",
        { data: { id: d.id, malformed: d.malformed ? "yes" : "no" } },
        cell("id", d.id, "id"),
        cell("dead_lettered_at", d.dead_lettered_at, "mono"),
        el("td", { data: { field: "conversation_id" }, class: "text" }, n ? conversationLink(n.conversation_id) : "malformed"),
        cell("level", n ? n.level : null, "n"),
        cell("event_id", n ? n.event_id : null, "mono"),
        cell("attempts", d.attempts, "n"),
        cell("reason", d.reason, "text"),
        cell("last_error", d.malformed ? `fields: ${JSON.stringify(d.fields)}` : d.last_error || "", "text"),
        el("td", { class: "actions" }, replay, purge),
      );
    });
    $("dead-letters").tBodies[0].replaceChildren(...(rows.length ? rows : [emptyRow(9, "no dead letters")]));
  }

  function renderConversation(id, report) {
    const box = $("conversation");
    box.dataset.conversation = id;
    if (report === null) {
      box.replaceChildren(el("p", { class: "empty" }, "no such conversation: ", el("span", { class: "mono" }, id)));
      return;
    }
    const c = report.conversation;
    const facts = Object.entries(c).filter(([key]) => key !== "levels");
    const parts = [
      el("h3", {}, "State (shard ", report.shard, ")"),
      el("dl", {}, facts.map(([key, value]) => [el("dt", {}, key), el("dd", { data: { field: key } }, value === null ? "-" : value)])),
    ];
    if (Array.isArray(c.levels)) {
      parts.push(
        el("h3", {}, "Levels"),
        table(
          ["level", "status", "due at", "delivered at", "sinks", "attempts", "last error", "event id"],
          c.levels.map((l) => [
            l.level, l.status, l.due_at, l.delivered_at, l.sinks ? l.sinks.join(", ") : null,
            l.attempts, l.last_error, l.event_id,
          ]),
          "levels",
          ["last error"],
        ),
      );
    }
    if (Array.isArray(report.history)) {
      const known = new Set(["at", "kind", "generation", "level"]);
      parts.push(
        el("h3", {}, "History"),
        table(
          ["at", "kind", "generation", "level", "details"],
          report.history.map((h) => [
            h.at, h.kind, h.generation, h.level,
            Object.entries(h).filter(([key]) => !known.has(key)).map(([key, value]) => `${key}=${value}`).join("  "),
          ]),
          "history",
          ["details"],
        ),
      );
    }
    parts.push(
      el("h3", {}, "In its streams now"),
      table(
        ["kind", "id", "level", "generation", "due at", "consumer / reason"],
        report.in_streams.map((e) => [
          e.kind, e.id, e.level, e.generation, e.due_at,
          e.kind === "dead_letter" ? `${e.reason}: ${e.last_error}` : e.consumer,
        ]),
        "in-streams",
        ["consumer / reason"],
      ),
    );
    box.replaceChildren(...parts);
  }

  // A table of plain values; the columns named in `wrap` hold long text.
  function table(columns, rows, name, wrap) {
    const long = new Set(wrap || []);
    const td = (column, v) => el("td", { class: long.has(column) ? "text" : "" }, v === null || v === undefined ? "-" : v);
    return el(
      "table",
      { data: { table: name } },
      el("thead", {}, el("tr", {}, columns.map((c) => el("th", {}, c)))),
      el(
        "tbody",
        {},
        rows.length
          ? rows.map((row) => el("tr", {}, row.map((v, i) => td(columns[i], v))))
          : emptyRow(columns.length, "none"),
      ),
    );
  }

  // --- actions ------------------------------------------------------------------------------

  async function act(action, id) {
    try {
      const result = await api(`admin/dead-letters/${action}`, { method: "POST", body: JSON.stringify({ ids: [id] }) });
      if (action === "purge") notice(`purged ${id}`);
      else if (result.replayed.length) notice(`replayed ${id}`);
      else notice(`not replayed ${id}: ${Object.values(result.refused).join("; ") || "gone meanwhile"}`, true);
    } catch (error) {
      handle(error, `${action} ${id}`);
    }
    await refresh();
  }

  async function lookUp(id) {
    $("conversation-id").value = id;
    lookedUp = id;
    await refreshConversation();
  }

  async function refreshConversation() {
    if (lookedUp === null) return;
    const id = lookedUp;
    try {
      renderConversation(id, await api(`admin/conversation?id=${encodeURIComponent(id)}`));
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) renderConversation(id, null);
      else handle(error, "conversation");
    }
  }

  function handle(error, what) {
    if (error instanceof AuthError) {
      showSignIn(token ? "that token was refused" : "");
      return;
    }
    notice(`${what}: ${error.message}`, true);
    if (error instanceof ApiError && error.status === 503) {
      $("health").textContent = "Redis unavailable";
      $("health").className = "badge down";
    }
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      const [status, pending, dead] = await Promise.all([
        api("admin/status"),
        api("admin/pending?limit=200"),
        api("admin/dead-letters?limit=200"),
      ]);
      showConsole();
      renderStatus(status);
      renderPending(pending);
      renderDeadLetters(dead);
      await refreshConversation();
      $("updated").textContent = `updated ${status.at}`;
      document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
    } catch (error) {
      handle(error, "refresh");
      if (error instanceof AuthError) return;
    }
    timer = setTimeout(refresh, REFRESH_MS);
  }

  // --- sign in ------------------------------------------------------------------------------

  function showSignIn(message) {
    clearTimeout(timer);
    $("console").hidden = true;
    $("sign-out").hidden = true;
    $("sign-in").hidden = false;
    $("sign-in-error").textContent = message || "";
    $("token").focus();
  }

  function showConsole() {
    $("sign-in").hidden = true;
    $("console").hidden = false;
    $("sign-out").hidden = !token;
  }

  $("sign-in").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    refresh();
  });
  $("sign-out").addEventListener("click", () => {
    token = "";
    sessionStorage.removeItem(TOKEN_KEY);
    showSignIn("");
  });
  $("lookup").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("conversation-id").value.trim();
    if (id) lookUp(id);
  });

  refresh();
})();
