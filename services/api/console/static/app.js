// Conveyor's console: plain JavaScript over the REST API, with the key a person enters.
// Everything shown is built with textContent and DOM nodes, never parsed as HTML.

const KEY = "conveyor.key";
// Statuses with a meaning of their own here: a finished task changes no more, and only
// some finished ones run again. Every list of all statuses comes from the API (`known`).
const FINISHED = ["COMPLETED", "FAILED", "CANCELLED"];
const RERUNNABLE = ["FAILED", "CANCELLED"];
const LIVE_SECONDS = 5;
const main = document.getElementById("main");
let me = null; // {tenant, key_id, scopes, auth_enabled}
let known = null; // {statuses, priorities, defaultPriority, scopes}: see readContract
let timer = null; // the current page's live refresh
const openLogs = new Set(); // "task/attempt" of the log lines a person opened: kept open on refresh

// --- small helpers -------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "class") node.className = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function show(...nodes) {
  main.replaceChildren(...nodes.flat(Infinity).filter((n) => n !== null && n !== undefined && n !== false));
}

function may(scope) {
  if (!me) return false;
  if (scope === "platform") return me.scopes.includes("platform");
  return me.scopes.includes(scope) || me.scopes.includes("admin");
}

function when(text) {
  if (!text) return "—";
  const date = new Date(text);
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

function badge(status, prefix = "s") {
  return h("span", { class: `badge ${prefix}-${status}` }, status);
}

function notify(text) {
  const notice = document.getElementById("notice");
  notice.textContent = text || "";
  notice.hidden = !text;
}

class Problem extends Error {
  constructor(status, body) {
    super(body && body.detail ? body.detail : `HTTP ${status}`);
    this.status = status;
  }
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  const key = sessionStorage.getItem(KEY);
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
  });
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (response.status === 401) {
    sessionStorage.removeItem(KEY);
    me = null;
    showLogin(data && data.detail);
    throw new Problem(401, data);
  }
  if (!response.ok) throw new Problem(response.status, data);
  return data;
}

function confirmed(title, text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    document.getElementById("confirm-no").focus();
  });
}

async function act(work) {
  notify("");
  try {
    await work();
  } catch (error) {
    if (!(error instanceof Problem && error.status === 401)) notify(error.message);
  }
}

// --- the key and the frame -----------------------------------------------------------

function showLogin(reason) {
  stopLive();
  document.getElementById("who").replaceChildren();
  const input = h("input", { id: "key", type: "password", autocomplete: "off", required: true });
  const form = h(
    "form",
    { class: "card login", onsubmit: (event) => { event.preventDefault(); signIn(input.value.trim()); } },
    h("h1", {}, "Sign in"),
    h("p", { class: "muted" }, "Enter an API key. It stays in this browser tab and is forgotten when the tab closes."),
    reason ? h("p", { role: "alert" }, reason) : null,
    h("label", { class: "field", for: "key" }, "API key", input),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Sign in")),
  );
  show(form);
  input.focus();
}

async function signIn(key) {
  sessionStorage.setItem(KEY, key);
  await start();
}

// What the API's OpenAPI document says of its statuses, priorities and scopes, read once.
async function readContract() {
  const schemas = (await api("/openapi.json")).components.schemas;
  return {
    statuses: schemas.Status.enum,
    // Listed lowest first, as the domain ranks them; shown highest first.
    priorities: [...schemas.Priority.enum].reverse(),
    defaultPriority: schemas.TaskTemplate.properties.priority.default,
    scopes: schemas.KeyCreate.properties.scopes.items.enum,
  };
}

async function start() {
  try {
    known = known || await readContract();
    me = await api("/api/v1/whoami");
  } catch (error) {
    if (!(error instanceof Problem && error.status === 401)) notify(error.message);
    return;
  }
  const who = document.getElementById("who");
  const parts = [h("span", {}, `tenant ${me.tenant}`)];
  if (me.auth_enabled) {
    parts.push(h("button", { type: "button", class: "secondary", onclick: () => {
      sessionStorage.removeItem(KEY);
      me = null;
      showLogin();
    } }, "Sign out"));
  }
  who.replaceChildren(...parts);
  document.getElementById("jump").hidden = false;
  for (const link of document.querySelectorAll("#nav a[data-scope]")) {
    link.parentElement.hidden = !may(link.dataset.scope);
  }
  await route();
}

function stopLive() {
  if (timer) clearInterval(timer);
  timer = null;
}

function live(refresh) {
  stopLive();
  timer = setInterval(() => { if (!document.hidden) act(refresh); }, LIVE_SECONDS * 1000);
}

function go(url) {
  history.pushState(null, "", url);
  route();
}

async function route() {
  stopLive();
  notify("");
  if (!me) return;
  const path = location.pathname.replace(/\/+$/, "");
  const pages = [
    [/^\/ui$/, overview, "overview"],
    [/^\/ui\/tasks$/, taskList, "tasks"],
    [/^\/ui\/tasks\/([0-9a-f-]{36})$/, taskPage, "tasks"],
    [/^\/ui\/schedules$/, schedules, "schedules"],
    [/^\/ui\/queues$/, queues, "queues"],
    [/^\/ui\/workers$/, workers, "workers"],
    [/^\/ui\/keys$/, keys, "keys"],
  ];
  for (const [pattern, render, name] of pages) {
    const match = path.match(pattern);
    if (!match) continue;
    for (const link of document.querySelectorAll("#nav a")) {
      if (link.dataset.page === name) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    await act(() => render(...match.slice(1)));
    return;
  }
  show(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "/ui" }, "Overview")));
}

// --- Overview ------------------------------------------------------------------------

function spark(minutes) {
  const ns = "http://www.w3.org/2000/svg";
  const width = 15 * 14;
  const height = 40;
  const most = Math.max(1, ...minutes.map((m) => Math.max(m.started, m.completed, m.failed)));
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("role", "img");
  const total = (what) => minutes.reduce((sum, m) => sum + m[what], 0);
  svg.setAttribute("aria-label",
    `last 15 minutes: ${total("started")} started, ${total("completed")} completed, ${total("failed")} failed`);
  minutes.forEach((minute, n) => {
    ["started", "completed", "failed"].forEach((what, k) => {
      const bar = document.createElementNS(ns, "rect");
      const tall = Math.round((minute[what] / most) * (height - 2));
      bar.setAttribute("class", what);
      bar.setAttribute("x", n * 14 + k * 4);
      bar.setAttribute("y", height - tall);
      bar.setAttribute("width", 3);
      bar.setAttribute("height", tall);
      svg.append(bar);
    });
  });
  return svg;
}

async function overview() {
  const draw = async () => {
    const data = await api("/api/v1/overview");
    const cards = data.queues.map((queue) => {
      const counts = (what) => queue.minutes.reduce((sum, m) => sum + m[what], 0);
      return h("section", { class: "card", "aria-labelledby": `q-${queue.name}` },
        h("h2", { id: `q-${queue.name}` }, queue.name, " ",
          queue.paused ? h("span", { class: "badge paused" }, "paused") : null),
        h("div", { class: "scroll" }, h("table", {},
          h("thead", {}, h("tr", {}, ...known.priorities.map((p) => h("th", { class: "num" }, p)),
            h("th", { class: "num" }, "running"), h("th", { class: "num" }, "oldest ready"))),
          h("tbody", {}, h("tr", {},
            ...known.priorities.map((p) => h("td", { class: "num" },
              queue.ready[p] >= 10000 ? "10,000+" : queue.ready[p].toLocaleString())),
            h("td", { class: "num" }, queue.running.toLocaleString()),
            h("td", { class: "num" }, age(queue.oldest_ready_seconds)))))),
        h("p", { class: "legend" },
          h("span", { class: "started" }, `${counts("started")} started`),
          h("span", { class: "completed" }, `${counts("completed")} completed`),
          h("span", { class: "failed" }, `${counts("failed")} failed`),
          " in 15 min"),
        spark(queue.minutes));
    });
    show(
      h("h1", {}, "Overview"),
      h("p", { class: "muted" }, `Your tasks on each queue (tenant ${me.tenant}); ready tasks by priority, refreshed every ${LIVE_SECONDS} s.`),
      data.window_complete ? null : h("p", { class: "muted" }, "Busy: the charts hold the latest part of the 15 minutes."),
      h("div", { class: "grid" }, cards));
  };
  await draw();
  live(draw);
}

// --- Tasks ---------------------------------------------------------------------------

function toLocalInput(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  const local = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
  return local.toISOString().slice(0, 16);
}

function fromLocalInput(value) {
  return value ? new Date(value).toISOString() : "";
}

// On a phone the filters fold away unless some are set, so the tasks come first.
function filters(params) {
  const set = [...params.keys()].some((name) => !["limit", "cursor"].includes(name));
  const wide = window.matchMedia("(min-width: 641px)").matches;
  return h("details", { class: "filters", open: wide || set },
    h("summary", {}, "Filters"), filterForm(params));
}

function filterForm(params) {
  const checks = (name, values) => h("fieldset", {},
    h("legend", {}, name),
    ...values.map((value) => h("label", {},
      h("input", { type: "checkbox", name, value, checked: params.getAll(name).includes(value) }), value)));
  const text = (name, label, extra = {}) => h("label", { class: "field" }, label,
    h("input", { type: "text", name, value: params.get(name) || "", ...extra }));
  const time = (name, label) => h("label", { class: "field" }, label,
    h("input", { type: "datetime-local", name, value: toLocalInput(params.get(name)) }));
  const form = h("form", { class: "filters card", role: "search", "aria-label": "Filter tasks" },
    text("title", "Title contains"),
    text("kind", "Kind"),
    text("queue", "Queue"),
    time("created_after", "Created after"),
    time("created_before", "Created before"),
    h("label", { class: "field" }, "Per page",
      h("select", { name: "limit" }, ...["20", "50", "100"].map((n) =>
        h("option", { value: n, selected: (params.get("limit") || "50") === n }, n)))),
    checks("status", known.statuses),
    checks("priority", known.priorities),
    h("div", { class: "actions" },
      h("button", { type: "submit" }, "Apply"),
      h("button", { type: "button", class: "secondary", onclick: () => go("/ui/tasks") }, "Clear")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    for (const [name, value] of new FormData(form)) {
      const kept = name.startsWith("created_") ? fromLocalInput(value) : value.trim();
      if (kept) next.append(name, kept);
    }
    go(`/ui/tasks?${next}`);
  });
  return form;
}

function taskRow(task) {
  return h("tr", { "data-id": task.id },
    h("td", {}, h("a", { href: `/ui/tasks/${task.id}` }, task.title)),
    h("td", {}, badge(task.status)),
    h("td", {}, task.priority),
    h("td", {}, task.kind),
    h("td", { class: "wide" }, task.queue),
    h("td", { class: "num wide" }, `${task.attempts}/${task.max_attempts}`),
    h("td", { class: "wide" }, when(task.created_at)));
}

async function taskList() {
  const params = new URLSearchParams(location.search);
  if (!params.get("limit")) params.set("limit", "50");
  const page = await api(`/api/v1/tasks?${params}`);
  const body = h("tbody", {}, page.items.map(taskRow));
  const newer = h("div", { class: "actions", "aria-live": "polite" });
  const next = new URLSearchParams(params);
  const first = new URLSearchParams(params);
  first.delete("cursor");
  if (page.next_cursor) next.set("cursor", page.next_cursor);
  show(
    h("h1", {}, "Tasks"),
    filters(params),
    newer,
    h("div", { class: "scroll" }, h("table", { id: "tasks" },
      h("caption", { class: "muted" }, page.items.length
        ? `${page.items.length} task(s) on this page, newest first${params.get("cursor") ? "" : " (live)"}`
        : "No task matches."),
      h("thead", {}, h("tr", {}, ...["Title", "Status", "Priority", "Kind"].map((t) => h("th", { scope: "col" }, t)),
        ...["Queue", "Attempts", "Created"].map((t) => h("th", { scope: "col", class: "wide" }, t)))),
      body)),
    h("nav", { class: "actions", "aria-label": "Pages of tasks" },
      params.get("cursor") ? h("a", { href: `/ui/tasks?${first}` }, "First page") : null,
      page.next_cursor ? h("a", { href: `/ui/tasks?${next}`, rel: "next" }, "Next page") : null));
  // Live: the rows shown keep their place and take their new status; tasks newer than
  // the first page wait behind a button rather than pushing the rows down.
  live(async () => {
    const fresh = await api(`/api/v1/tasks?${params}`);
    const shown = new Map([...body.rows].map((row) => [row.dataset.id, row]));
    let arrived = 0;
    for (const task of fresh.items) {
      const row = shown.get(task.id);
      if (row) row.replaceWith(taskRow(task));
      else if (!params.get("cursor")) arrived += 1;
    }
    newer.replaceChildren(arrived ? h("button", { type: "button", class: "secondary", onclick: () => route() },
      `${arrived} newer task(s): show`) : "");
  });
}

function link(event) {
  if (event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
  event.preventDefault();
  go(event.currentTarget.getAttribute("href"));
}

function json(value) {
  return h("pre", { tabindex: "0" }, JSON.stringify(value, null, 2));
}

async function taskPage(id) {
  const [task, attempts, trace] = await Promise.all([
    api(`/api/v1/tasks/${id}`),
    api(`/api/v1/tasks/${id}/attempts`),
    api(`/api/v1/tasks/${id}/trace`),
  ]);
  const terminal = FINISHED.includes(task.status);
  const buttons = [];
  if (may("cancel") && !terminal && !task.cancel_requested) {
    buttons.push(h("button", { type: "button", class: "danger", id: "cancel", onclick: () => act(async () => {
      if (!(await confirmed("Cancel this task?", `“${task.title}” will not run, or its worker is asked to stop.`))) return;
      await api(`/api/v1/tasks/${id}`, { method: "DELETE" });
      await route();
    }) }, "Cancel task"));
  }
  if (may("submit") && RERUNNABLE.includes(task.status)) {
    buttons.push(h("button", { type: "button", id: "rerun", onclick: () => act(async () => {
      if (!(await confirmed("Run this task again?", `“${task.title}” goes back in its queue with a fresh attempt budget.`))) return;
      await api(`/api/v1/tasks/${id}:retry`, { method: "POST" });
      await route();
    }) }, "Run again"));
  }
  const field = (name, value) => [h("dt", {}, name), h("dd", {}, value)];
  const progress = task.progress
    ? h("span", {}, h("progress", { max: "1", value: String(task.progress.fraction) }),
      ` ${Math.round(task.progress.fraction * 100)}% ${task.progress.note || ""}`)
    : "—";
  show(
    h("p", {}, h("a", { href: "/ui/tasks" }, "← Tasks")),
    h("h1", {}, task.title, " ", badge(task.status)),
    h("div", { class: "actions" }, buttons,
      trace.url ? h("a", { href: trace.url, target: "_blank", rel: "noopener noreferrer" }, "Trace") :
        trace.trace_id ? h("span", { class: "muted" }, `trace ${trace.trace_id}`) : null),
    h("section", { class: "card" }, h("dl", { class: "fields" },
      field("id", task.id), field("kind", task.kind), field("queue", task.queue),
      field("priority", task.priority), field("attempts", `${task.attempts} of ${task.max_attempts}`),
      field("progress", progress),
      field("cancel requested", task.cancel_requested ? "yes" : "no"),
      field("timeout", task.timeout_seconds ? `${task.timeout_seconds} s` : "the kind's"),
      field("created", when(task.created_at)), field("scheduled", when(task.scheduled_at)),
      field("started", when(task.started_at)), field("finished", when(task.finished_at)),
      field("updated", when(task.updated_at)), field("description", task.description || "—"))),
    h("h2", {}, "Payload"), json(task.payload),
    h("h2", {}, "Result"), json(task.result),
    task.error ? [h("h2", {}, "Error"), h("pre", { tabindex: "0" }, task.error)] : null,
    h("h2", {}, "Attempts"),
    attempts.items.length
      ? h("ol", { class: "timeline", id: "attempts" }, attempts.items.map((a) => h("li", {},
        h("strong", {}, `Attempt ${a.attempt} `), badge(a.outcome, "o"),
        h("div", { class: "muted" }, `${when(a.started_at)} → ${a.finished_at ? when(a.finished_at) : "running"}`,
          a.duration_seconds !== null ? `, ${age(a.duration_seconds)}` : "", a.worker_id ? `, on ${a.worker_id}` : ""),
        a.error ? h("div", {}, a.error_type ? [h("code", {}, a.error_type), " "] : null, a.error) : null,
        a.traceback ? h("pre", { class: "traceback", tabindex: "0" }, a.traceback) : null,
        attemptLog(id, a.attempt))))
      : h("p", { class: "muted" }, "Not started yet."));
  if (!terminal) live(() => route());
}

// The lines the handler logged in one attempt, read when a person opens them (and again
// when a live refresh redraws them open).
function attemptLog(id, attempt) {
  const key = `${id}/${attempt}`;
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  let loaded = false;
  const load = async () => {
    loaded = true;
    try {
      body.replaceChildren(...logLines(await api(`/api/v1/tasks/${id}/attempts/${attempt}/logs`)));
    } catch (error) {
      body.replaceChildren(h("p", { class: "muted" }, error.message));
    }
  };
  const details = h("details", { class: "log", id: `log-${attempt}`, open: openLogs.has(key), ontoggle: () => {
    if (!details.open) {
      openLogs.delete(key);
    } else {
      openLogs.add(key);
      if (!loaded) load();
    }
  } }, h("summary", {}, "Log lines"), body);
  if (details.open) load();
  return details;
}

function logLines(logs) {
  if (!logs.lines.length) return [h("p", { class: "muted" }, "No line logged.")];
  const time = (text) => new Date(text).toLocaleTimeString(undefined, { hour12: false, fractionalSecondDigits: 3 });
  return [
    logs.dropped ? h("p", { class: "muted" }, `${logs.dropped} earlier line(s) not kept.`) : null,
    h("pre", { tabindex: "0" }, logs.lines.map((l) => `${time(l.logged_at)} ${l.level.padEnd(7)} ${l.message}`).join("\n")),
  ].filter(Boolean);
}

// --- Schedules, queues, keys ---------------------------------------------------------

async function schedules() {
  const page = await api("/api/v1/schedules?limit=100");
  const rows = page.items.map((s) => h("tr", {},
    h("td", {}, s.name), h("td", {}, h("code", {}, s.cron), ` (${s.timezone})`),
    h("td", {}, s.task.kind), h("td", {}, s.paused ? h("span", { class: "badge paused" }, "paused") : when(s.next_run_at)),
    h("td", { class: "wide" }, when(s.last_run_at)),
    h("td", {}, may("submit") ? h("div", { class: "actions" },
      h("button", { type: "button", class: "secondary", onclick: () => act(async () => {
        await api(`/api/v1/schedules/${s.id}:${s.paused ? "resume" : "pause"}`, { method: "POST" });
        await route();
      }) }, s.paused ? "Resume" : "Pause"),
      h("button", { type: "button", class: "danger", onclick: () => act(async () => {
        if (!(await confirmed("Delete this schedule?", `“${s.name}” makes no more tasks; those it made stay.`))) return;
        await api(`/api/v1/schedules/${s.id}`, { method: "DELETE" });
        await route();
      }) }, "Delete")) : "")));
  show(
    h("h1", {}, "Schedules"),
    h("div", { class: "scroll" }, h("table", {},
      h("thead", {}, h("tr", {}, ...["Name", "When", "Kind", "Next run"].map((t) => h("th", { scope: "col" }, t)),
        h("th", { scope: "col", class: "wide" }, "Last run"), h("th", { scope: "col" }, ""))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: "6", class: "muted" }, "No schedule yet."))))),
    may("submit") ? scheduleForm((await api("/api/v1/kinds")).items) : null);
}

// `kinds`: what the API takes now, offered as the kind's choices (with their descriptions).
function scheduleForm(kinds) {
  const input = (name, label, value = "", type = "text") => h("label", { class: "field" }, label,
    h("input", { type, name, value, required: ["name", "cron", "title"].includes(name),
      list: name === "kind" ? "kind-choices" : null }));
  const form = h("form", { class: "filters card", "aria-label": "New schedule" },
    input("name", "Name"), input("cron", "Cron (5 fields, or 6 with seconds first)"),
    input("timezone", "Time zone", "UTC"), input("title", "Task title"), input("kind", "Kind", "demo"),
    h("label", { class: "field" }, "Priority", h("select", { name: "priority" },
      ...known.priorities.map((p) => h("option", { value: p, selected: p === known.defaultPriority }, p)))),
    h("label", { class: "field" }, "Payload (JSON)", h("textarea", { name: "payload", rows: "2" }, "{}")),
    h("datalist", { id: "kind-choices" }, ...kinds.map((k) => h("option", { value: k.name }, k.description))),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Create schedule")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = Object.fromEntries(new FormData(form));
    act(async () => {
      let payload;
      try { payload = JSON.parse(data.payload || "{}"); } catch { throw new Error("The payload is not JSON."); }
      await api("/api/v1/schedules", { method: "POST", body: {
        name: data.name, cron: data.cron, timezone: data.timezone,
        task: { title: data.title, kind: data.kind, priority: data.priority, payload } } });
      await route();
    });
  });
  return h("section", {}, h("h2", {}, "New schedule"), form);
}

async function queues() {
  if (!may("platform")) {
    show(h("h1", {}, "Queues"), h("p", {}, "The queues of the installation need a key with the platform scope."));
    return;
  }
  const page = await api("/api/v1/queues");
  show(h("h1", {}, "Queues"), h("div", { class: "scroll" }, h("table", {},
    h("thead", {}, h("tr", {}, ...["Queue", "State", ...known.priorities, "Running", "Oldest ready", "Limits", ""].map((t) =>
      h("th", { scope: "col" }, t)))),
    h("tbody", {}, page.items.map((q) => h("tr", {},
      h("td", {}, q.name), h("td", {}, q.paused ? h("span", { class: "badge paused" }, "paused") : "running"),
      ...known.priorities.map((p) => h("td", { class: "num" }, q.queued[p].toLocaleString())),
      h("td", { class: "num" }, q.running), h("td", { class: "num" }, age(q.oldest_ready_seconds)),
      h("td", {}, [q.max_running ? `${q.max_running} at once` : "", q.rate ? `${q.rate}/s` : ""].filter(Boolean).join(", ") || "—"),
      h("td", {}, h("button", { type: "button", class: q.paused ? "" : "secondary", onclick: () => act(async () => {
        if (!q.paused && !(await confirmed(`Pause ${q.name}?`, "Its tasks stay queued; running ones finish."))) return;
        await api(`/api/v1/queues/${q.name}:${q.paused ? "resume" : "pause"}`, { method: "POST" });
        await route();
      }) }, q.paused ? "Resume" : "Pause"))))))));
}

// The worker processes, as the registry last saw them, and the workers of each queue.
async function workers() {
  if (!may("platform")) {
    show(h("h1", {}, "Workers"), h("p", {}, "The workers of the installation need a key with the platform scope."));
    return;
  }
  const draw = async () => {
    const [seen, queued, kinds] = await Promise.all([api("/api/v1/workers"), api("/api/v1/queues"), api("/api/v1/kinds")]);
    const rows = seen.items.map((w) => h("tr", {},
      h("td", {}, h("code", {}, w.id)), h("td", {}, h("span", { class: `badge w-${w.state}` }, w.state)),
      h("td", { class: "num" }, `${w.running} / ${w.concurrency}`), h("td", {}, w.queues.join(", ")),
      h("td", { class: "wide" }, w.kinds.join(", ") || "—"), h("td", { class: "wide" }, w.version),
      h("td", {}, when(w.last_seen_at))));
    show(
      h("h1", {}, "Workers"),
      h("p", { class: "muted" }, `Every worker process, refreshed every ${LIVE_SECONDS} s; a gone one (not seen within its lease) stays listed a few minutes.`),
      h("div", { class: "scroll" }, h("table", { id: "workers" },
        h("thead", {}, h("tr", {}, ...["Worker", "State", "Running / slots", "Queues"].map((t) => h("th", { scope: "col" }, t)),
          ...["Kinds", "Version"].map((t) => h("th", { scope: "col", class: "wide" }, t)), h("th", { scope: "col" }, "Last seen"))),
        h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: "7", class: "muted" }, "No worker is registered."))))),
      h("h2", {}, "By queue"),
      workersByQueue(queued.items.map((q) => q.name), seen.items),
      h("h2", {}, "Kinds"),
      kindsTable(kinds.items));
  };
  await draw();
  live(draw);
}

// The kinds the API takes: built in, or registered by workers with their payload schema.
function kindsTable(kinds) {
  const rows = kinds.map((k) => h("tr", {},
    h("td", {}, h("code", {}, k.name)), h("td", {}, k.queue),
    h("td", { class: "num" }, k.workers ? String(k.workers) : h("span", { class: "badge w-none" }, "none")),
    h("td", { class: "num" }, k.builtin ? "built in" : String(k.versions.length)),
    h("td", { class: "wide" }, k.description || "—"),
    h("td", {}, k.payload_schema
      ? h("details", {}, h("summary", {}, "schema"), h("pre", {}, JSON.stringify(k.payload_schema, null, 2)))
      : "any object")));
  return h("div", { class: "scroll" }, h("table", { id: "kinds" },
    h("thead", {}, h("tr", {}, ...["Kind", "Queue", "Workers", "Versions"].map((t) => h("th", { scope: "col" }, t)),
      h("th", { scope: "col", class: "wide" }, "Description"), h("th", { scope: "col" }, "Payload"))),
    h("tbody", {}, rows)));
}

function workersByQueue(names, seen) {
  const present = seen.filter((w) => w.state !== "gone");
  const all = [...new Set([...names, ...present.flatMap((w) => w.queues)])];
  const rows = all.map((queue) => {
    const taking = present.filter((w) => w.queues.includes(queue));
    const alive = taking.filter((w) => w.state === "alive");
    const slots = alive.reduce((sum, w) => sum + w.concurrency, 0);
    return h("tr", {},
      h("td", {}, queue),
      h("td", { class: "num" }, alive.length ? String(alive.length) : h("span", { class: "badge w-none" }, "none")),
      h("td", { class: "num" }, String(slots)),
      h("td", {}, taking.length ? taking.flatMap((w, n) => [n ? ", " : "", h("code", {}, w.id),
        w.state === "alive" ? "" : ` (${w.state})`]) : "—"));
  });
  return h("div", { class: "scroll" }, h("table", { id: "worker-queues" },
    h("thead", {}, h("tr", {}, ...["Queue", "Alive workers", "Slots", "Workers taking it"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows)));
}

async function keys() {
  const page = await api("/api/v1/keys");
  const scopes = known.scopes;
  const form = h("form", { class: "filters card", "aria-label": "New key" },
    h("label", { class: "field" }, "Name", h("input", { type: "text", name: "name" })),
    h("fieldset", {}, h("legend", {}, "Scopes"), ...scopes.map((s) =>
      h("label", {}, h("input", { type: "checkbox", name: "scopes", value: s, checked: s === "read" }), s))),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Create key")));
  const made = h("div", { "aria-live": "polite" });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    act(async () => {
      const key = await api("/api/v1/keys", { method: "POST", body: { name: data.get("name"), scopes: data.getAll("scopes") } });
      await keys();
      main.querySelector("[aria-live]").replaceChildren(h("div", { class: "card" },
        h("p", {}, "The new key, shown this once:"), h("p", { class: "secret" }, key.key)));
    });
  });
  show(h("h1", {}, "Keys"), made, h("div", { class: "scroll" }, h("table", {},
    h("thead", {}, h("tr", {}, ...["Id", "Name", "Scopes", "Created", "State", ""].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, page.items.map((k) => h("tr", {},
      h("td", {}, h("code", {}, k.id)), h("td", {}, k.name || "—"), h("td", {}, k.scopes.join(", ")),
      h("td", {}, when(k.created_at)), h("td", {}, k.revoked_at ? `revoked ${when(k.revoked_at)}` : "in use"),
      h("td", {}, k.revoked_at || k.id === me.key_id ? "" : h("button", { type: "button", class: "danger", onclick: () => act(async () => {
        if (!(await confirmed("Revoke this key?", `Key ${k.id} stops working within seconds, for good.`))) return;
        await api(`/api/v1/keys/${k.id}`, { method: "DELETE" });
        await route();
      }) }, "Revoke"))))))), h("h2", {}, "New key"), form);
}

// --- start -----------------------------------------------------------------------------

document.addEventListener("click", (event) => {
  const anchor = event.target.closest("a[href^='/ui']");
  if (anchor && !event.defaultPrevented && anchor.target !== "_blank") link({
    ctrlKey: event.ctrlKey, metaKey: event.metaKey, shiftKey: event.shiftKey, button: event.button,
    preventDefault: () => event.preventDefault(), currentTarget: anchor,
  });
});
// Open a task by its id from any page: the id alone, or pasted with what surrounds it (a
// link, a log line).
const TASK_ID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/i;
document.getElementById("jump").addEventListener("submit", (event) => {
  event.preventDefault();
  const field = event.currentTarget.elements.id;
  const found = field.value.match(TASK_ID);
  if (!found) {
    notify(`No task id in “${field.value.trim()}”: an id looks like 0190c3a2-7f1e-7c3d-9a4b-5e6f7a8b9c0d.`);
    return;
  }
  field.value = "";
  go(`/ui/tasks/${found[0].toLowerCase()}`);
});
window.addEventListener("popstate", () => route());
start();
