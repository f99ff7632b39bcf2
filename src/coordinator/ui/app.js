// The mito dashboard. It talks only to the coordinator's HTTP API with the user's own
// token, so it shows and does exactly what that user may. Every value from the server is
// put into the page as text (textContent, attribute values), never as HTML.
"use strict";

const TOKEN_KEY = "mito.token";
const USER_KEY = "mito.user";
const STATES = ["Pending", "Ready", "Running", "Finished", "Cancelled", "Unknown"];
const FINAL = new Set(["Finished", "Cancelled", "Unknown"]);
// One request every POLL_MS at most while a live page is open and visible.
const POLL_MS = 2500;

// ------------------------------------------------------------------ small helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

function setStatus(text, kind) {
  const s = document.getElementById("status");
  s.textContent = text || "";
  s.className = kind || "";
}

// The API's timestamps look like "2026-12-03 05:25:25.446064 +00:00:00".
function fmtTime(t) {
  if (!t) return "";
  const iso = String(t).replace(" ", "T").replace(/ ?([+-]\d\d:\d\d)(:\d\d)?$/, "$1");
  const d = new Date(iso);
  return isNaN(d) ? String(t) : d.toLocaleString();
}

// Arguments as a shell would need them typed: quoted when they hold anything special.
function shellJoin(args) {
  return (args || []).map((a) => (/^[A-Za-z0-9_\-+=.,/:@%]+$/.test(a) ? a : "'" + a.replace(/'/g, "'\\''") + "'")).join(" ");
}

function fmtBytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB", "PB"];
  let i = 0;
  let v = Number(n) || 0;
  while (Math.abs(v) >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return (i === 0 ? String(v) : v.toFixed(1)) + " " + units[i];
}

function splitList(s) {
  return (s || "").split(",").map((x) => x.trim()).filter((x) => x.length > 0);
}

// A list as a set, in the order the CLI sends one (sorted, each once).
function sortedSet(list) {
  return [...new Set(list)].sort();
}

// A command line split as a shell would for plain words, quotes and backslashes (no
// expansion): what `mito client tasks submit -- ...` would receive as arguments.
function splitCommand(line) {
  const args = [];
  let cur = null;
  let quote = null;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quote) {
      if (c === quote) quote = null;
      else if (c === "\\" && quote === '"' && i + 1 < line.length) cur += line[++i];
      else cur += c;
    } else if (c === "'" || c === '"') {
      quote = c; cur = cur === null ? "" : cur;
    } else if (c === "\\" && i + 1 < line.length) {
      cur = (cur === null ? "" : cur) + line[++i];
    } else if (/\s/.test(c)) {
      if (cur !== null) { args.push(cur); cur = null; }
    } else {
      cur = (cur === null ? "" : cur) + c;
    }
  }
  if (quote) throw new Error("unclosed " + quote + " in the command line");
  if (cur !== null) args.push(cur);
  return args;
}

// ------------------------------------------------------------------ workflows: the CLI's notations

// The bounds the coordinator enforces (src/coordinator/limits.rs, src/api/array.rs),
// checked here too so a mistake is named before anything is sent.
const MAX_ARRAY_TASKS = 10000;
const MAX_RETRIES = 100;
const MAX_RETRY_BACKOFF_NS = 3600e9;
const MAX_DEPENDENCIES = 100;
const RETRY_OUTCOMES = ["failure", "timeout", "lost"];

// A UUID as the CLI accepts it (hyphenated or 32 hex digits, braces or urn:uuid: allowed),
// in the lower-case hyphenated form it sends; null if it is not one.
function parseUuid(text) {
  const t = String(text).trim().replace(/^urn:uuid:/i, "").replace(/^\{(.*)\}$/, "$1");
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(t) && !/^[0-9a-f]{32}$/i.test(t)) return null;
  const x = t.replace(/-/g, "").toLowerCase();
  return [x.slice(0, 8), x.slice(8, 12), x.slice(12, 16), x.slice(16, 20), x.slice(20)].join("-");
}

// `START-END[:STEP][%K]` (END included) as `mito client tasks submit --array` reads it,
// with the same messages; returns the request's `array` object and the number of tasks.
function parseArray(text) {
  const shape = () => new Error("array " + JSON.stringify(text) + " is not START-END[:STEP][%K], e.g. 0-99 or 0-99:2%5");
  const num = (t, max) => {
    const v = t.trim();
    if (!/^\+?[0-9]+$/.test(v)) throw shape();
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n > max) throw shape();
    return n;
  };
  let range = text, cap = null, step = 1;
  const pct = range.indexOf("%");
  if (pct >= 0) { cap = num(range.slice(pct + 1), 4294967295); range = range.slice(0, pct); }
  const colon = range.indexOf(":");
  if (colon >= 0) { step = num(range.slice(colon + 1), Number.MAX_SAFE_INTEGER); range = range.slice(0, colon); }
  const dash = range.indexOf("-");
  const start = num(dash >= 0 ? range.slice(0, dash) : range, Number.MAX_SAFE_INTEGER);
  const end = dash >= 0 ? num(range.slice(dash + 1), Number.MAX_SAFE_INTEGER) : start;
  const empty = (why) => new Error("the array is empty or malformed: " + why);
  if (step === 0) throw empty("the step must be at least 1");
  if (end < start) throw empty("the end " + end + " is before the start " + start);
  if (cap === 0) throw empty("%K must be at least 1");
  const n = Math.floor((end - start) / step) + 1;
  if (n > MAX_ARRAY_TASKS) throw new Error("the array has " + n + " indices; at most " + MAX_ARRAY_TASKS + ": split it into several arrays");
  const array = { start, end, step };
  if (cap !== null) array.max_running = cap;
  return { array, count: n };
}

// A duration as the coordinator parses it (humantime: "30s", "1m 30s", "500ms"; whole
// numbers, each with a unit), in nanoseconds; null if it is not one.
const DURATION_UNITS = [
  [["nsec", "ns"], 1], [["usec", "us"], 1e3], [["msec", "ms"], 1e6],
  [["seconds", "second", "sec", "s"], 1e9], [["minutes", "minute", "min", "m"], 60e9],
  [["hours", "hour", "hr", "h"], 3600e9], [["days", "day", "d"], 86400e9], [["weeks", "week", "w"], 604800e9],
  [["months", "month", "M"], 2630016e9], [["years", "year", "y"], 31557600e9],
];
function parseDuration(text) {
  const t = String(text).trim();
  if (!t) return null;
  let total = 0;
  const re = /([0-9]+)\s*([A-Za-z]+)\s*/y;
  let m;
  while (re.lastIndex < t.length) {
    if (!(m = re.exec(t))) return null;
    const unit = DURATION_UNITS.find(([names]) => names.includes(m[2]));
    if (!unit) return null;
    total += Number(m[1]) * unit[1];
    if (!Number.isSafeInteger(total)) return null;
  }
  return total;
}

// Nanoseconds as the CLI writes a duration on the wire (humantime's format: "0s", "1m 30s").
function fmtDuration(ns) {
  if (ns === 0) return "0s";
  const secs = Math.floor(ns / 1e9), sub = ns % 1e9;
  const years = Math.floor(secs / 31557600), ydays = secs % 31557600;
  const months = Math.floor(ydays / 2630016), mdays = ydays % 2630016;
  const days = Math.floor(mdays / 86400), daySecs = mdays % 86400;
  const parts = [];
  const plural = (n, unit) => { if (n) parts.push(n + unit + (n > 1 ? "s" : "")); };
  const item = (n, unit) => { if (n) parts.push(n + unit); };
  plural(years, "year"); plural(months, "month"); plural(days, "day");
  item(Math.floor(daySecs / 3600), "h"); item(Math.floor((daySecs % 3600) / 60), "m"); item(daySecs % 60, "s");
  item(Math.floor(sub / 1e6), "ms"); item(Math.floor(sub / 1e3) % 1000, "us"); item(sub % 1000, "ns");
  return parts.join(" ");
}

// A result in words, as `mito client tasks get` says it.
function describeResult(r) {
  const status = r.exit_status;
  const code = (status & 0x7f) === 0 ? "exit code " + ((status >> 8) & 0xff) : "signal " + (status & 0x7f);
  if (r.msg) return r.msg + " (exit status " + status + ")";
  return status === 0 ? "exit status 0" : "exit status " + status + " (" + code + ")";
}

// The array a task belongs to: the id in its `array:<id>` label, and its index.
function arrayOf(t) {
  const label = (t.labels || []).find((l) => l.startsWith("array:") && parseUuid(l.slice(6)));
  if (!label) return null;
  const index = ((t.spec || {}).envs || {}).MITO_ARRAY_INDEX;
  return { id: parseUuid(label.slice(6)), index: index === undefined ? null : index };
}

function arrayHref(group, id) {
  return "#/array/" + enc(group) + "/" + id;
}

// Labels as text, an array's label as a link to the array.
function labelsCell(t) {
  const out = [];
  (t.labels || []).forEach((l, i) => {
    if (i) out.push(", ");
    const id = l.startsWith("array:") ? parseUuid(l.slice(6)) : null;
    out.push(id ? h("a", { href: arrayHref(t.group_name, id) }, l) : l);
  });
  return out;
}

// ------------------------------------------------------------------ the API

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

const session = {
  get token() { return sessionStorage.getItem(TOKEN_KEY); },
  get user() { return sessionStorage.getItem(USER_KEY); },
  set(user, token) { sessionStorage.setItem(USER_KEY, user); sessionStorage.setItem(TOKEN_KEY, token); },
  clear() { sessionStorage.removeItem(TOKEN_KEY); sessionStorage.removeItem(USER_KEY); },
};

async function api(method, path, body) {
  const headers = {};
  if (session.token) headers["Authorization"] = "Bearer " + session.token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
  } catch (e) {
    throw new ApiError(0, "cannot reach the coordinator (" + e.message + ")");
  }
  const text = await resp.text();
  let data = null;
  if (text) { try { data = JSON.parse(text); } catch (_) { data = text; } }
  if (!resp.ok) {
    const msg = data && typeof data === "object" && data.msg ? data.msg : (typeof data === "string" && data) || resp.statusText;
    if (resp.status === 401 && path !== "/login") {
      session.clear();
      showLogin("Your session ended (" + msg + "); log in again.");
    }
    throw new ApiError(resp.status, resp.status + ": " + msg);
  }
  return data;
}

const enc = encodeURIComponent;
const encKey = (k) => k.split("/").map(enc).join("/");

// ------------------------------------------------------------------ live refresh

// At most one timer runs: the current page's. It is paused while the tab is hidden and
// replaced when the page changes, so a page left open costs one request per POLL_MS.
let liveTimer = null;
let liveFn = null;
let liveGen = 0;
// Bumped on every navigation. A page passes the value it started under: one whose first
// load ends after the user moved on must not start its refresh under the next page.
let routeGen = 0;

function live(fn, page) {
  if (page !== routeGen) return;
  stopLive();
  liveFn = fn;
  const gen = ++liveGen;
  const tick = async () => {
    if (gen !== liveGen) return;
    if (document.visibilityState === "visible") {
      try { await fn(); } catch (e) { setStatus(e.message); }
    }
    if (gen === liveGen) liveTimer = setTimeout(tick, POLL_MS);
  };
  liveTimer = setTimeout(tick, POLL_MS);
}

function stopLive() {
  liveGen++;
  if (liveTimer) clearTimeout(liveTimer);
  liveTimer = null;
  liveFn = null;
}

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && liveFn) live(liveFn, routeGen);
});

// ------------------------------------------------------------------ layout

function mount(...children) {
  const main = document.getElementById("main");
  main.replaceChildren(...children);
}

function chrome(loggedIn) {
  document.getElementById("nav").hidden = !loggedIn;
  document.getElementById("logout").hidden = !loggedIn;
  const who = document.getElementById("who");
  who.hidden = !loggedIn;
  who.textContent = loggedIn ? "Signed in as " + session.user : "";
  const page = (location.hash.split("/")[1] || "tasks");
  for (const a of document.querySelectorAll("#nav a")) {
    const cur = a.getAttribute("href") === "#/" + page || ((page === "task" || page === "array") && a.getAttribute("href") === "#/tasks")
      || (page === "group" && a.getAttribute("href") === "#/groups") || (page === "worker" && a.getAttribute("href") === "#/workers");
    a.classList.toggle("current", cur);
    if (cur) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
}

function showLogin(message) {
  stopLive();
  chrome(false);
  const user = h("input", { id: "login-user", name: "username", autocomplete: "username", required: true });
  const pass = h("input", { id: "login-pass", name: "password", type: "password", autocomplete: "current-password", required: true });
  const form = h("form", { class: "login stack", id: "login-form" },
    h("h1", {}, "Log in to mito"),
    h("label", { for: "login-user" }, "User name"), user,
    h("label", { for: "login-pass" }, "Password"), pass,
    h("div", { class: "actions" }, h("button", { class: "primary", type: "submit", id: "login-submit" }, "Log in")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    setStatus("");
    try {
      // retain: keep the user's other tokens (their CLI sessions) valid.
      const resp = await api("POST", "/login", { username: user.value, md5_password: window.md5Bytes(pass.value), retain: true });
      session.set(user.value, resp.token);
      pass.value = "";
      if (!location.hash || location.hash === "#/login") location.hash = "#/tasks"; else route();
    } catch (e) {
      setStatus(e.message);
    }
  });
  mount(form);
  setStatus(message || "");
  user.focus();
}

async function myGroups() {
  const r = await api("GET", "/users/groups");
  return Object.keys(r.groups || {}).sort();
}

function groupSelect(id, groups, selected, allowAll) {
  const sel = h("select", { id, name: id });
  if (allowAll) sel.append(h("option", { value: "" }, "(my own)"));
  for (const g of groups) sel.append(h("option", { value: g, selected: g === selected }, g));
  if (selected && groups.includes(selected)) sel.value = selected;
  return sel;
}

function stateCell(state) {
  return h("span", { class: "state state-" + state }, state);
}

// ------------------------------------------------------------------ tasks

const taskFilter = { group: "", state: "", labels: "", tags: "", creator: "", array: "" };

async function pageTasks() {
  const page = routeGen;
  const groups = await myGroups();
  if (!taskFilter.group || !groups.includes(taskFilter.group)) taskFilter.group = groups.includes(session.user) ? session.user : groups[0] || "";
  const field = (label, input) => h("div", { class: "field" }, h("label", { for: input.id }, label), input);
  const group = groupSelect("f-group", groups, taskFilter.group, false);
  const state = h("select", { id: "f-state" }, h("option", { value: "" }, "any"), STATES.map((s) => h("option", { value: s }, s)));
  state.value = taskFilter.state;
  const labels = h("input", { id: "f-labels", value: taskFilter.labels, placeholder: "a,b", size: 12 });
  const tags = h("input", { id: "f-tags", value: taskFilter.tags, placeholder: "gpu", size: 10 });
  const creator = h("input", { id: "f-creator", value: taskFilter.creator, placeholder: "user", size: 10 });
  const arrayId = h("input", { id: "f-array", value: taskFilter.array, placeholder: "array id", size: 14 });
  const arrayLink = h("div", { id: "f-array-link" });
  const counts = h("div", { class: "counts", id: "state-counts", "aria-label": "Tasks per state" });
  const tbody = h("tbody", { id: "task-rows" });
  const table = h("div", { class: "table-wrap" }, h("table", { id: "task-table" },
    h("thead", {}, h("tr", {}, h("th", {}, "Task"), h("th", {}, "State"), h("th", { class: "hide-narrow" }, "Creator"),
      h("th", { class: "hide-narrow" }, "Labels"), h("th", { class: "hide-narrow" }, "Tags"), h("th", {}, "Exit"), h("th", { class: "hide-narrow" }, "Updated"))),
    tbody));
  const chartBox = h("div", { id: "chart" });
  const apply = () => {
    Object.assign(taskFilter, { group: group.value, state: state.value, labels: labels.value, tags: tags.value, creator: creator.value,
      array: arrayId.value.trim() });
    refresh().catch((e) => setStatus(e.message));
  };
  for (const el of [group, state]) el.addEventListener("change", apply);
  const form = h("form", { class: "filters", id: "task-filters" },
    field("Group", group), field("State", state), field("Labels", labels), field("Tags", tags), field("Creator", creator),
    field("Array", arrayId), h("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (ev) => { ev.preventDefault(); apply(); });
  mount(h("h1", {}, "Tasks"), form, arrayLink, counts, table, h("h2", {}, "Last hour"), chartBox);

  const query = () => {
    const q = { group_name: taskFilter.group || null, limit: 100, count: false };
    if (taskFilter.state) q.states = [taskFilter.state];
    if (splitList(taskFilter.labels).length) q.labels = splitList(taskFilter.labels);
    if (splitList(taskFilter.tags).length) q.tags = splitList(taskFilter.tags);
    if (splitList(taskFilter.creator).length) q.creator_usernames = splitList(taskFilter.creator);
    // An array is its label: the filter adds it to the labels asked for.
    const id = parseUuid(taskFilter.array);
    if (id) q.labels = [...(q.labels || []), "array:" + id];
    return q;
  };
  const checkArray = () => {
    if (!taskFilter.array) { arrayLink.replaceChildren(); return true; }
    const id = parseUuid(taskFilter.array);
    if (!id) {
      arrayLink.replaceChildren();
      setStatus("Array " + JSON.stringify(taskFilter.array) + " is not an array id (a uuid, as `tasks submit --array` printed it).");
      return false;
    }
    arrayLink.replaceChildren(h("p", {}, h("a", { href: arrayHref(taskFilter.group, id), id: "f-array-summary" }, "Summary of array " + id)));
    return true;
  };
  const drawRows = (tasks) => {
    tbody.replaceChildren(...tasks.map((t) => h("tr", { "data-uuid": t.uuid, "data-state": t.state },
      h("td", { class: "mono" }, h("a", { href: "#/task/" + t.uuid }, t.uuid)),
      h("td", {}, stateCell(t.state)),
      h("td", { class: "hide-narrow" }, t.creator_username),
      h("td", { class: "hide-narrow" }, labelsCell(t)),
      h("td", { class: "hide-narrow" }, (t.tags || []).join(", ")),
      h("td", {}, t.result ? String(t.result.exit_status) + (t.result.msg ? " (" + t.result.msg + ")" : "") : ""),
      h("td", { class: "hide-narrow" }, fmtTime(t.updated_at)))));
    if (!tasks.length) tbody.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No tasks match.")));
  };
  const drawStats = (stats) => {
    const st = stats.states || {};
    counts.replaceChildren(...STATES.map((s) => h("span", { "data-state": s }, s + ": ", h("b", {}, String(st[s] || 0)))),
      h("span", {}, "(ended tasks: the last " + (stats.window_minutes || 60) + " minutes)"));
    chartBox.replaceChildren(chart(stats));
  };
  // Alternate the two requests so a page left open makes one request per tick.
  let turn = 0;
  const refresh = async () => {
    if (!checkArray()) { drawRows([]); return; }
    const r = await api("POST", "/tasks/query", query());
    drawRows(r.tasks || []);
    if (taskFilter.group) drawStats(await api("GET", "/groups/" + enc(taskFilter.group) + "/stats"));
    setStatus("");
  };
  await refresh();
  live(async () => {
    turn ^= 1;
    if (turn && checkArray()) drawRows((await api("POST", "/tasks/query", query())).tasks || []);
    else if (taskFilter.group) drawStats(await api("GET", "/groups/" + enc(taskFilter.group) + "/stats"));
  }, page);
}

// Tasks finished per minute (bars) and the Ready queue depth (line) over the window.
function chart(stats) {
  const pts = stats.points || [];
  const W = 600, H = 160, L = 34, B = 20, T = 8;
  const n = Math.max(pts.length, 1);
  const maxF = Math.max(1, ...pts.map((p) => p.finished || 0));
  const maxR = Math.max(1, ...pts.map((p) => p.ready || 0));
  const bw = (W - L) / n;
  const g = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": `Tasks finished per minute (max ${maxF}) and Ready queue depth (max ${maxR}) over the last ${n} minutes` });
  pts.forEach((p, i) => {
    const bh = ((p.finished || 0) / maxF) * (H - B - T);
    if (bh > 0) g.append(svg("rect", { class: "finished", x: L + i * bw + 1, y: H - B - bh, width: Math.max(bw - 2, 1), height: bh }));
  });
  const line = pts.map((p, i) => (p.ready === null || p.ready === undefined) ? null
    : `${(L + i * bw + bw / 2).toFixed(1)},${(H - B - (p.ready / maxR) * (H - B - T)).toFixed(1)}`).filter((x) => x);
  if (line.length) g.append(svg("polyline", { class: "ready", points: line.join(" ") }));
  g.append(svg("text", { x: 2, y: T + 10 }, String(maxF)));
  g.append(svg("text", { x: 2, y: H - B }, "0"));
  g.append(svg("text", { x: L, y: H - 4 }, "-" + n + " min"));
  g.append(svg("text", { x: W - 30, y: H - 4 }, "now"));
  const legend = h("div", { class: "legend" },
    "Bars: tasks finished per minute (max " + maxF + "). Line: Ready queue depth (max " + maxR + ").");
  return h("figure", {}, g, h("figcaption", {}, legend));
}

// ------------------------------------------------------------------ one task

async function pageTask(uuid) {
  const page = routeGen;
  const box = h("div", { id: "task-page" });
  mount(h("h1", {}, "Task ", h("span", { class: "mono" }, uuid)), box);
  let logShown = false;
  // Live output of a running task (mito workers ship it as it is written): the offsets
  // read so far and the text, capped in the page.
  const liveOut = { offsets: [0, 0], text: ["", ""], available: true, active: false };
  const draw = async () => {
    const r = await api("GET", "/tasks/" + enc(uuid));
    const t = r.info;
    const spec = t.spec || {};
    const facts = h("dl", { class: "facts" });
    const fact = (k, v) => facts.append(h("dt", {}, k), h("dd", {}, v));
    fact("State", h("span", { id: "task-state", class: "state state-" + t.state }, t.state));
    fact("Group", t.group_name);
    fact("Creator", t.creator_username);
    fact("Command", h("span", { class: "mono", id: "task-args" }, shellJoin(spec.args)));
    fact("Environment", h("span", { class: "mono" }, Object.entries(spec.envs || {}).map(([k, v]) => k + "=" + v).join("  ") || "none"));
    fact("Tags", (t.tags || []).join(", ") || "none");
    fact("Labels", h("span", { id: "task-labels" }, labelsCell(t)));
    const inArray = arrayOf(t);
    if (inArray) {
      fact("Array", h("span", {}, h("a", { id: "task-array", href: arrayHref(t.group_name, inArray.id) }, inArray.id),
        inArray.index === null ? "" : " (index " + inArray.index + ")"));
    }
    fact("Priority", String(t.priority));
    fact("Timeout", t.timeout + " s");
    fact("Terminal output", spec.terminal_output ? "captured" : "not captured");
    fact("Created", fmtTime(t.created_at));
    fact("Last change", fmtTime(t.updated_at));
    fact("Result", h("span", { id: "task-result" }, t.result ? "exit " + t.result.exit_status + (t.result.msg ? " (" + t.result.msg + ")" : "") : "none yet"));
    if (t.reporter_uuid) fact("Worker", h("span", { class: "mono" }, t.reporter_uuid));
    if (t.upstream_task_uuid) fact("Upstream", h("a", { href: "#/task/" + t.upstream_task_uuid }, t.upstream_task_uuid));
    if (t.downstream_task_uuid) fact("Downstream", h("a", { href: "#/task/" + t.downstream_task_uuid }, t.downstream_task_uuid));
    if (t.note) fact("Note", h("span", { id: "task-note" }, t.note));
    if (r.retries) fact("Retries", h("span", { id: "task-retries" }, retryWords(r.retries)));
    const deps = [...(r.after || []).map((u) => [u, "must finish with exit 0"]), ...(r.after_any || []).map((u) => [u, "any outcome"])];
    if (deps.length) {
      fact("Waits for", h("ul", { id: "task-deps", class: "plain" }, deps.map(([u, how]) =>
        h("li", {}, h("a", { class: "mono", href: "#/task/" + u, "data-dependency": u }, u), " (" + how + ")"))));
    }

    const actions = h("div", { class: "actions" });
    if (!FINAL.has(t.state)) {
      actions.append(h("button", { class: "danger", id: "task-cancel", type: "button", onclick: async () => {
        if (!confirm("Cancel task " + uuid + "?")) return;
        try { await api("DELETE", "/tasks/" + enc(uuid)); setStatus("Cancel requested.", "info"); await draw(); } catch (e) { setStatus(e.message); }
      } }, "Cancel"));
    }
    actions.append(h("button", { id: "task-labels-edit", type: "button", onclick: async () => {
      const v = prompt("Labels, comma-separated", (t.labels || []).join(", "));
      if (v === null) return;
      try { await api("PUT", "/tasks/" + enc(uuid) + "/labels", { labels: splitList(v) }); await draw(); } catch (e) { setStatus(e.message); }
    } }, "Change labels"));

    const arts = h("ul", { id: "artifacts" });
    for (const a of r.artifacts || []) {
      arts.append(h("li", {}, h("button", { type: "button", "data-artifact": a.content_type, onclick: () => downloadArtifact(uuid, a.content_type) },
        "Download " + a.content_type), " ", fmtBytes(a.size)));
    }
    if (!(r.artifacts || []).length) arts.append(h("li", { class: "muted" }, "No artifacts yet."));
    const attempts = (r.attempts || []).length ? [h("h2", {}, "Attempts"), h("div", { class: "table-wrap" }, h("table", { id: "attempts" },
      h("thead", {}, h("tr", {}, h("th", {}, "#"), h("th", {}, "Outcome"), h("th", {}, "Exit"), h("th", { class: "hide-narrow" }, "Worker"),
        h("th", { class: "hide-narrow" }, "Started"), h("th", {}, "Ended"), h("th", {}, "Artifacts"))),
      h("tbody", {}, r.attempts.map((a) => h("tr", {}, h("td", {}, String(a.attempt)), h("td", {}, a.outcome),
        h("td", {}, a.result ? String(a.result.exit_status) : ""), h("td", { class: "mono hide-narrow" }, a.worker || ""),
        h("td", { class: "hide-narrow" }, fmtTime(a.started_at)), h("td", {}, fmtTime(a.ended_at)),
        h("td", {}, ...(a.artifacts || []).map((x) => h("button", { type: "button", "data-attempt-artifact": a.attempt + ":" + x.content_type,
          onclick: () => downloadArtifact(uuid, x.content_type, a.attempt) }, x.content_type))))))))] : [];
    const logBox = document.getElementById("std-log") || h("div", { id: "std-log" });
    box.replaceChildren(facts, actions, ...attempts, h("h2", {}, "Artifacts"), arts, h("h2", {}, "Output"), logBox);
    const hasStd = (r.artifacts || []).some((a) => a.content_type === "std-log");
    liveOut.active = !hasStd && spec.terminal_output && t.state === "Running" && liveOut.available;
    if (hasStd && !logShown) {
      logShown = true;
      showStdLog(uuid, logBox).catch((e) => logBox.replaceChildren(h("p", {}, "Cannot show the output: " + e.message)));
    } else if (liveOut.active) {
      if (!document.getElementById("live-stdout")) {
        logBox.replaceChildren(h("p", { class: "muted" }, "Live output, as the task writes it:"),
          h("h3", {}, "stdout"), h("pre", { class: "log", id: "live-stdout" }, liveOut.text[0]),
          h("h3", {}, "stderr"), h("pre", { class: "log", id: "live-stderr" }, liveOut.text[1]));
      }
    } else if (!hasStd) {
      logBox.replaceChildren(h("p", { class: "muted" }, spec.terminal_output
        ? "The output is shown here once the task has ended and its worker has uploaded it."
        : "This task does not capture its terminal output."));
    }
    if (FINAL.has(t.state) && hasStd) stopLive();
    setStatus("");
  };
  // The new output since the last read; at most the last 1 MB per stream stays in the page.
  const readLive = async () => {
    const r = await api("GET", "/tasks/" + enc(uuid) + "/log?stdout=" + liveOut.offsets[0] + "&stderr=" + liveOut.offsets[1]);
    if (!r.live) {
      liveOut.available = false;
      const box = document.getElementById("std-log");
      if (box) box.replaceChildren(h("p", { class: "muted" }, "Live output is not available for this task (its worker does not send it); it is shown here once the task has ended."));
      return;
    }
    [r.stdout, r.stderr].forEach((piece, i) => {
      liveOut.offsets[i] = piece.next_offset;
      liveOut.text[i] = (liveOut.text[i] + piece.data).slice(-1000000);
      const pre = document.getElementById(i ? "live-stderr" : "live-stdout");
      if (pre) pre.textContent = liveOut.text[i];
    });
  };
  await draw();
  // While output streams in, ticks alternate between the task and its output, so the page
  // still makes one request per tick.
  let turn = 0;
  live(async () => {
    turn ^= 1;
    if (liveOut.active && turn) await readLive(); else await draw();
  }, page);
}

// A retry policy in words: "up to 3 more attempts on failure, lost; backoff 30s (doubled each time)".
function retryWords(p) {
  const n = p.max === 1 ? "1 more attempt" : "up to " + p.max + " more attempts";
  const backoff = !p.backoff || p.backoff === "0s" ? "no backoff" : "backoff " + p.backoff + ", doubled for each next one";
  return n + " on " + (p.on || RETRY_OUTCOMES).join(", ") + "; " + backoff;
}

// The newest artifact of a type, or that of one attempt of a task with retries.
async function artifactUrl(uuid, ct, attempt) {
  const at = attempt ? "/attempts/" + enc(String(attempt)) : "";
  return (await api("GET", "/tasks/" + enc(uuid) + at + "/download/artifacts/" + enc(ct))).url;
}

async function downloadArtifact(uuid, ct, attempt) {
  try {
    const url = await artifactUrl(uuid, ct, attempt);
    const name = uuid + "-" + ct + (attempt ? "-attempt-" + attempt : "") + ".tar.gz";
    const a = h("a", { href: url, download: name, rel: "noopener" });
    document.body.append(a);
    a.click();
    a.remove();
  } catch (e) {
    setStatus(e.message);
  }
}

// The std-log artifact is a gzip'd tar of the task's stdout and stderr files.
async function showStdLog(uuid, box) {
  box.replaceChildren(h("p", { class: "muted" }, "Loading output..."));
  const url = await artifactUrl(uuid, "std-log");
  const resp = await fetch(url, { cache: "no-store" });
  if (!resp.ok) throw new Error("the object store answered " + resp.status);
  const raw = await new Response(resp.body.pipeThrough(new DecompressionStream("gzip"))).arrayBuffer();
  const files = untar(new Uint8Array(raw));
  const parts = [];
  for (const f of files) {
    parts.push(h("h3", {}, f.name), h("pre", { class: "log", "data-file": f.name }, new TextDecoder().decode(f.data) || "(empty)"));
  }
  box.replaceChildren(...(parts.length ? parts : [h("p", { class: "muted" }, "The output is empty.")]));
}

function untar(bytes) {
  const files = [];
  const dec = new TextDecoder();
  const str = (off, len) => dec.decode(bytes.subarray(off, off + len)).replace(/\0.*$/s, "");
  for (let off = 0; off + 512 <= bytes.length;) {
    const name = str(off, 100);
    if (!name) break;
    const size = parseInt(str(off + 124, 12).trim(), 8) || 0;
    const type = String.fromCharCode(bytes[off + 156] || 48);
    const prefix = str(off + 345, 155);
    if (type === "0" || type === "\0") files.push({ name: prefix ? prefix + "/" + name : name, data: bytes.subarray(off + 512, off + 512 + size) });
    off += 512 + Math.ceil(size / 512) * 512;
  }
  return files;
}

// ------------------------------------------------------------------ one array

// Tasks per page of an array's table.
const ARRAY_PAGE = 50;

async function pageArray(group, idText) {
  const page = routeGen;
  const id = parseUuid(idText);
  if (!id) throw new Error(JSON.stringify(idText) + " is not an array id (a uuid)");
  const label = "array:" + id;
  const filter = { group_name: group, labels: [label] };
  const states = h("div", { class: "counts", id: "array-states", "aria-label": "Tasks of the array per state" });
  const bar = h("div", { class: "bar", role: "meter", "aria-label": "Tasks of the array ended", "aria-valuemin": 0 }, h("span", {}));
  const progress = h("p", { id: "array-progress" });
  const results = h("tbody", { id: "array-results" });
  const rows = h("tbody", { id: "array-rows" });
  const pageInfo = h("span", { id: "array-page", class: "muted" });
  let offset = 0;
  let summary = null;
  const prev = h("button", { type: "button", id: "array-prev", onclick: () => { offset = Math.max(0, offset - ARRAY_PAGE); drawPage().catch((e) => setStatus(e.message)); } }, "Previous");
  const next = h("button", { type: "button", id: "array-next", onclick: () => { offset += ARRAY_PAGE; drawPage().catch((e) => setStatus(e.message)); } }, "Next");
  const cancel = h("button", { type: "button", class: "danger", id: "array-cancel", onclick: () => cancelArray() }, "Cancel the whole array");
  mount(h("h1", {}, "Array ", h("span", { class: "mono" }, id)),
    h("dl", { class: "facts" }, h("dt", {}, "Group"), h("dd", {}, h("a", { href: "#/group/" + enc(group), id: "array-group" }, group)),
      h("dt", {}, "Label"), h("dd", { class: "mono" }, label),
      h("dt", {}, "Tasks"), h("dd", {}, h("a", { href: "#/tasks", id: "array-in-list", onclick: () => {
        Object.assign(taskFilter, { group, state: "", labels: "", tags: "", creator: "", array: id });
      } }, "Show in the task list"))),
    h("h2", {}, "Progress"), progress, bar, states,
    h("h2", {}, "Results"), h("div", { class: "table-wrap" }, h("table", { id: "array-result-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "Result"), h("th", {}, "Exit status"), h("th", {}, "Tasks"))), results)),
    h("div", { class: "actions" }, cancel),
    h("h2", {}, "Tasks"), h("div", { class: "table-wrap" }, h("table", { id: "array-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "Index"), h("th", {}, "Task"), h("th", {}, "State"), h("th", {}, "Exit"),
        h("th", { class: "hide-narrow" }, "Note"), h("th", { class: "hide-narrow" }, "Updated"))), rows)),
    h("div", { class: "actions pager" }, prev, pageInfo, next));

  // Returns whether the counts changed since the last draw.
  const drawSummary = async () => {
    const before = summary && JSON.stringify(summary.states);
    summary = await api("POST", "/tasks/summary", filter);
    const st = summary.states || {};
    const ended = [...FINAL].reduce((n, s) => n + (st[s] || 0), 0);
    progress.textContent = summary.count ? ended + " of " + summary.count + " tasks ended" : "This array has no tasks in group " + group + ".";
    bar.setAttribute("aria-valuemax", summary.count);
    bar.setAttribute("aria-valuenow", ended);
    // Set through the DOM: the page's policy forbids inline style attributes.
    bar.firstChild.style.width = (summary.count ? (100 * ended) / summary.count : 0).toFixed(1) + "%";
    states.replaceChildren(...STATES.map((s) => h("span", { "data-state": s }, s + ": ", h("b", {}, String(st[s] || 0)))),
      h("span", { "data-state": "total" }, "total: ", h("b", {}, String(summary.count))));
    results.replaceChildren(...(summary.results || []).map((r) => h("tr", { "data-exit": r.exit_status },
      h("td", {}, describeResult(r)), h("td", {}, String(r.exit_status)), h("td", {}, String(r.count)))));
    if (!(summary.results || []).length) results.append(h("tr", {}, h("td", { colspan: 3, class: "muted" }, "No task has ended yet.")));
    cancel.hidden = ended === summary.count;
    setStatus("");
    return before !== JSON.stringify(summary.states);
  };
  const drawPage = async () => {
    const r = await api("POST", "/tasks/query", { ...filter, limit: ARRAY_PAGE, offset, count: false });
    const tasks = r.tasks || [];
    rows.replaceChildren(...tasks.map((t) => h("tr", { "data-uuid": t.uuid, "data-state": t.state },
      h("td", {}, ((t.spec || {}).envs || {}).MITO_ARRAY_INDEX || ""),
      h("td", { class: "mono" }, h("a", { href: "#/task/" + t.uuid }, t.uuid)),
      h("td", {}, stateCell(t.state)),
      h("td", {}, t.result ? describeResult(t.result) : ""),
      h("td", { class: "hide-narrow" }, t.note || ""),
      h("td", { class: "hide-narrow" }, fmtTime(t.updated_at)))));
    if (!tasks.length) rows.append(h("tr", {}, h("td", { colspan: 6, class: "muted" }, offset ? "No more tasks." : "No tasks.")));
    const total = summary ? summary.count : offset + tasks.length;
    pageInfo.textContent = tasks.length ? "tasks " + (offset + 1) + "-" + (offset + tasks.length) + " of " + total : "";
    prev.disabled = offset === 0;
    next.disabled = offset + tasks.length >= total;
  };
  // Ready and Pending tasks in one request, then each Running one: what `tasks cancel
  // --array` does.
  const cancelArray = async () => {
    if (!confirm("Cancel every unfinished task of array " + id + "?")) return;
    try {
      let n = (await api("POST", "/tasks/cancel", filter)).cancelled_count;
      const running = await api("POST", "/tasks/query", { ...filter, states: ["Running"], limit: 10000, count: false });
      for (const t of running.tasks || []) {
        try { await api("DELETE", "/tasks/" + enc(t.uuid)); n++; } catch (e) { if (e.status !== 404) throw e; }
      }
      await drawSummary();
      await drawPage();
      setStatus("Cancelled " + n + " tasks of the array.", "info");
    } catch (e) {
      setStatus(e.message);
    }
  };
  await drawSummary();
  await drawPage();
  // One request per tick: the summary and the shown page take turns, except that the
  // page follows at once when the counts moved, so the two never disagree for long.
  let turn = 0;
  live(async () => {
    turn ^= 1;
    if (!turn || (await drawSummary())) await drawPage();
  }, page);
}

// ------------------------------------------------------------------ workers

const workerFilter = { group: "" };

async function pageWorkers() {
  const page = routeGen;
  const groups = await myGroups();
  if (!workerFilter.group || !groups.includes(workerFilter.group)) workerFilter.group = groups.includes(session.user) ? session.user : groups[0] || "";
  const group = groupSelect("w-group", groups, workerFilter.group, false);
  const tbody = h("tbody", { id: "worker-rows" });
  group.addEventListener("change", () => { workerFilter.group = group.value; draw().catch((e) => setStatus(e.message)); });
  mount(h("h1", {}, "Workers"), h("div", { class: "filters" }, h("div", { class: "field" }, h("label", { for: "w-group" }, "Group"), group)),
    h("div", { class: "table-wrap" }, h("table", { id: "worker-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "Worker"), h("th", {}, "State"), h("th", { class: "hide-narrow" }, "Owner"),
        h("th", { class: "hide-narrow" }, "Tags"), h("th", { class: "hide-narrow" }, "Labels"), h("th", {}, "Last heartbeat"), h("th", {}, "Task"))),
      tbody)));
  const draw = async () => {
    const r = await api("POST", "/workers/query", { group_name: workerFilter.group || null, count: false });
    const ws = r.workers || [];
    tbody.replaceChildren(...ws.map((w) => h("tr", { "data-worker": w.worker_id },
      h("td", { class: "mono" }, h("a", { href: "#/worker/" + w.worker_id }, w.worker_id)),
      h("td", {}, w.state),
      h("td", { class: "hide-narrow" }, w.creator_username),
      h("td", { class: "hide-narrow" }, (w.tags || []).join(", ")),
      h("td", { class: "hide-narrow" }, (w.labels || []).join(", ")),
      h("td", {}, fmtTime(w.last_heartbeat)),
      h("td", { class: "mono" }, w.assigned_task_id ? h("a", { href: "#/task/" + w.assigned_task_id }, w.assigned_task_id) : "idle"))));
    if (!ws.length) tbody.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No workers serve this group.")));
    setStatus("");
  };
  await draw();
  live(draw, page);
}

async function pageWorker(id) {
  const page = routeGen;
  const box = h("div", { id: "worker-page" });
  mount(h("h1", {}, "Worker ", h("span", { class: "mono" }, id)), box);
  const draw = async () => {
    const r = await api("GET", "/workers/" + enc(id));
    const w = r.info;
    const facts = h("dl", { class: "facts" });
    const fact = (k, v) => facts.append(h("dt", {}, k), h("dd", {}, v));
    fact("State", w.state);
    fact("Owner", w.creator_username);
    fact("Tags", (w.tags || []).join(", "));
    fact("Labels", (w.labels || []).join(", "));
    fact("Registered", fmtTime(w.created_at));
    fact("Last heartbeat", fmtTime(w.last_heartbeat));
    fact("Task", w.assigned_task_id ? h("a", { href: "#/task/" + w.assigned_task_id }, w.assigned_task_id) : "idle");
    const roles = h("ul", {}, Object.entries(r.groups || {}).map(([g, role]) => h("li", {}, g + ": " + role)));
    const stop = (op) => async () => {
      if (!confirm((op === "force" ? "Force-stop" : "Stop") + " worker " + id + "?")) return;
      try { await api("DELETE", "/workers/" + enc(id) + "?op=" + op); setStatus("Stop requested.", "info"); await draw(); } catch (e) { setStatus(e.message); }
    };
    box.replaceChildren(facts, h("h2", {}, "Groups and roles"), roles, h("div", { class: "actions" },
      h("button", { type: "button", id: "worker-stop", onclick: stop("graceful") }, "Stop after its task"),
      h("button", { type: "button", class: "danger", id: "worker-kill", onclick: stop("force") }, "Stop now")));
    setStatus("");
  };
  await draw();
  live(draw, page);
}

// ------------------------------------------------------------------ groups

async function pageGroups() {
  const r = await api("GET", "/users/groups");
  const rows = Object.entries(r.groups || {}).sort();
  mount(h("h1", {}, "Groups"), h("div", { class: "table-wrap" }, h("table", { id: "group-table" },
    h("thead", {}, h("tr", {}, h("th", {}, "Group"), h("th", {}, "Your role"))),
    h("tbody", {}, rows.map(([g, role]) => h("tr", {}, h("td", {}, h("a", { href: "#/group/" + enc(g) }, g)), h("td", {}, role)))))));
  setStatus("");
}

async function pageGroup(name) {
  const g = await api("GET", "/groups/" + enc(name));
  const pct = g.storage_quota > 0 ? Math.min(100, (100 * g.storage_used) / g.storage_quota) : 0;
  const facts = h("dl", { class: "facts" },
    h("dt", {}, "Created by"), h("dd", {}, g.creator_username),
    h("dt", {}, "Tasks"), h("dd", {}, String(g.task_count)),
    h("dt", {}, "Workers"), h("dd", {}, String(g.worker_count)),
    h("dt", {}, "Storage"), h("dd", {},
      h("div", { class: "bar", role: "meter", "aria-valuemin": 0, "aria-valuemax": g.storage_quota, "aria-valuenow": g.storage_used,
        "aria-label": "Storage used" }, h("span", { style: null, "data-pct": pct.toFixed(1) })),
      fmtBytes(g.storage_used) + " of " + fmtBytes(g.storage_quota)));
  // The bar's width is set through the DOM, not an inline style attribute, which the
  // page's Content-Security-Policy forbids.
  facts.querySelector(".bar > span").style.width = pct.toFixed(1) + "%";
  const members = g.users_in_group
    ? h("ul", { id: "members" }, Object.entries(g.users_in_group).map(([u, role]) => h("li", {}, u + ": " + role)))
    : h("p", { class: "muted" }, "Only the group's admins see its members.");
  const attList = h("tbody", { id: "attachment-rows" });
  const file = h("input", { type: "file", id: "att-file" });
  const key = h("input", { id: "att-key", placeholder: "key (default: file name)" });
  const progress = h("progress", { id: "att-progress", max: 100, value: 0, hidden: true });
  const upload = h("form", { class: "filters", id: "att-upload" },
    h("div", { class: "field" }, h("label", { for: "att-file" }, "File"), file),
    h("div", { class: "field" }, h("label", { for: "att-key" }, "Key"), key),
    h("button", { type: "submit" }, "Upload"), progress);
  upload.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = file.files[0];
    if (!f) { setStatus("Choose a file first."); return; }
    const k = key.value.trim() || f.name;
    try {
      const r = await api("POST", "/groups/" + enc(name) + "/attachments", { key: k, content_length: f.size });
      progress.hidden = false;
      await putWithProgress(r.url, f, (p) => { progress.value = p; });
      setStatus("Uploaded " + k + ".", "info");
      await drawAttachments();
    } catch (e) {
      setStatus(e.message);
    } finally {
      progress.hidden = true;
    }
  });
  const drawAttachments = async () => {
    const r = await api("POST", "/groups/" + enc(name) + "/attachments/query", { limit: 200, count: false });
    attList.replaceChildren(...(r.attachments || []).map((a) => h("tr", { "data-key": a.key },
      h("td", { class: "mono" }, a.key), h("td", {}, fmtBytes(a.size)), h("td", { class: "hide-narrow" }, fmtTime(a.updated_at)),
      h("td", {}, h("button", { type: "button", onclick: async () => {
        try {
          const d = await api("GET", "/groups/" + enc(name) + "/download/attachments/" + encKey(a.key));
          const link = h("a", { href: d.url, download: a.key.split("/").pop(), rel: "noopener" });
          document.body.append(link); link.click(); link.remove();
        } catch (e) { setStatus(e.message); }
      } }, "Download")))));
    if (!(r.attachments || []).length) attList.append(h("tr", {}, h("td", { colspan: 4, class: "muted" }, "No attachments.")));
  };
  mount(h("h1", {}, "Group ", name), facts, h("h2", {}, "Members"), members, h("h2", {}, "Attachments"), upload,
    h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Key"), h("th", {}, "Size"),
      h("th", { class: "hide-narrow" }, "Updated"), h("th", {}, ""))), attList)),
    h("h2", {}, "Last hour"), h("div", { id: "chart" }, chart(await api("GET", "/groups/" + enc(name) + "/stats"))));
  await drawAttachments();
  setStatus("");
}

function putWithProgress(url, file, onProgress) {
  return new Promise((resolve, reject) => {
    const x = new XMLHttpRequest();
    x.open("PUT", url);
    x.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(Math.round((100 * e.loaded) / e.total)); };
    x.onload = () => (x.status >= 200 && x.status < 300 ? resolve() : reject(new Error("the object store answered " + x.status)));
    x.onerror = () => reject(new Error("the upload failed (is the object store reachable from this browser?)"));
    x.send(file);
  });
}

// ------------------------------------------------------------------ submit

// A mistake in the form, named with the field to fix.
class FormError extends Error {
  constructor(input, message) { super(message); this.input = input; }
}

async function pageSubmit() {
  const groups = await myGroups();
  const hintId = (input) => input.id + "-hint";
  const field = (label, input, hint) => {
    if (hint) input.setAttribute("aria-describedby", hintId(input));
    return [h("label", { for: input.id }, label), input, hint ? h("div", { class: "muted", id: hintId(input) }, hint) : null];
  };
  const group = groupSelect("s-group", groups, taskFilter.group || session.user, false);
  const cmd = h("input", { id: "s-cmd", required: true, placeholder: "python train.py --lr 0.1", size: 50 });
  const envs = h("textarea", { id: "s-envs", rows: 3, placeholder: "KEY=value, one per line" });
  const tags = h("input", { id: "s-tags", placeholder: "gpu,linux" });
  const labels = h("input", { id: "s-labels", placeholder: "sweep-3" });
  const timeout = h("input", { id: "s-timeout", value: "10m" });
  const priority = h("input", { id: "s-priority", type: "number", value: "0" });
  const terminal = h("input", { id: "s-terminal", type: "checkbox", checked: true });
  // Workflows: the fields of `tasks submit --retries/--retry-on/--retry-backoff`,
  // `--after/--after-any` and `--array/--array-subst`.
  const retries = h("input", { id: "s-retries", inputmode: "numeric", placeholder: "none", size: 6 });
  const retryOn = RETRY_OUTCOMES.map((o) => h("input", { id: "s-retry-" + o, type: "checkbox", value: o, checked: true }));
  const backoff = h("input", { id: "s-backoff", placeholder: "0s", size: 10 });
  const after = h("textarea", { id: "s-after", rows: 2, placeholder: "task uuids, comma-separated" });
  const afterAny = h("textarea", { id: "s-after-any", rows: 2, placeholder: "task uuids, comma-separated" });
  const array = h("input", { id: "s-array", placeholder: "0-99:1%10", size: 16 });
  const subst = h("input", { id: "s-array-subst", type: "checkbox" });
  const error = h("p", { id: "s-error", class: "error", role: "alert", hidden: true });
  const submitButton = h("button", { class: "primary", type: "submit", id: "s-submit" }, "Submit");
  const outcomeWords = { failure: "failure (non-zero exit)", timeout: "timeout", lost: "lost (its worker died or was removed)" };
  const form = h("form", { class: "stack", id: "submit-form", novalidate: true }, h("h1", {}, "Submit a task"),
    field("Group", group), field("Command line", cmd, "Split into arguments like a shell would (quotes, backslashes), without expansion."),
    field("Environment", envs), field("Tags (the worker must have all)", tags), field("Labels", labels),
    field("Timeout", timeout, "e.g. 90s, 10m, 2h"), field("Priority (higher runs first)", priority),
    h("label", { for: "s-terminal" }, terminal, " Capture stdout and stderr"),
    h("fieldset", { id: "s-retry-box" }, h("legend", {}, "Retries"),
      field("Retries (more attempts, at most " + MAX_RETRIES + ")", retries, "Empty: the task runs once."),
      h("div", { class: "field-label", id: "s-retry-on-label" }, "Retry on"),
      h("div", { class: "checks", role: "group", "aria-labelledby": "s-retry-on-label" },
        RETRY_OUTCOMES.map((o, i) => h("label", { class: "check", for: retryOn[i].id }, retryOn[i], " " + outcomeWords[o]))),
      field("Backoff", backoff, "Wait before the first retry, doubled for each next one, with jitter, at most 1h (e.g. 30s).")),
    h("fieldset", { id: "s-deps-box" }, h("legend", {}, "Dependencies"),
      field("After (all must finish with exit 0)", after, "If one fails or is cancelled, this task is cancelled."),
      field("After any (all must end, however)", afterAny)),
    h("fieldset", { id: "s-array-box" }, h("legend", {}, "Array"),
      field("Indices START-END[:STEP][%K]", array, "One task per index, END included, at most " + MAX_ARRAY_TASKS
        + "; %K lets at most K run at once. Each gets MITO_ARRAY_INDEX and MITO_ARRAY_ID."),
      h("label", { class: "check", for: "s-array-subst" }, subst, " Replace {i} in the arguments with the index")),
    error,
    h("div", { class: "actions" }, submitButton));
  const fail = (message, input) => {
    error.textContent = message;
    error.hidden = false;
    for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    if (input) { input.setAttribute("aria-invalid", "true"); input.focus(); }
  };
  // The request exactly as `mito client tasks submit` builds it from the same values.
  const build = () => {
    const env = {};
    for (const line of envs.value.split("\n").map((l) => l.trim()).filter((l) => l)) {
      const i = line.indexOf("=");
      if (i <= 0) throw new FormError(envs, "environment line " + JSON.stringify(line) + " is not KEY=value");
      env[line.slice(0, i)] = line.slice(i + 1);
    }
    let args;
    try { args = splitCommand(cmd.value); } catch (e) { throw new FormError(cmd, e.message); }
    if (!args.length) throw new FormError(cmd, "the command line is empty");
    const req = {
      group_name: group.value, tags: sortedSet(splitList(tags.value)), labels: sortedSet(splitList(labels.value)),
      timeout: timeout.value.trim(),
      priority: parseInt(priority.value, 10) || 0,
      task_spec: { args, envs: env, resources: [], terminal_output: terminal.checked, watch: null },
    };
    const on = RETRY_OUTCOMES.filter((o, i) => retryOn[i].checked);
    if (retries.value.trim()) {
      const v = retries.value.trim();
      if (!/^[0-9]+$/.test(v) || Number(v) > MAX_RETRIES) {
        throw new FormError(retries, "retries " + JSON.stringify(v) + " is not a whole number from 0 to " + MAX_RETRIES);
      }
      if (!on.length) throw new FormError(retryOn[0], "retry on: tick at least one of failure, timeout, lost");
      const ns = backoff.value.trim() ? parseDuration(backoff.value) : 0;
      if (ns === null) throw new FormError(backoff, "backoff " + JSON.stringify(backoff.value.trim()) + " is not a duration, e.g. 30s or 1m 30s");
      if (ns > MAX_RETRY_BACKOFF_NS) throw new FormError(backoff, "backoff " + fmtDuration(ns) + " is over the maximum of 1h");
      req.retries = { max: Number(v), on, backoff: fmtDuration(ns) };
    } else if (backoff.value.trim() || on.length < RETRY_OUTCOMES.length) {
      throw new FormError(retries, "retry on and backoff need a number of retries");
    }
    const uuids = (input, what) => splitList(input.value.replace(/\s+/g, ",")).map((u) => {
      const id = parseUuid(u);
      if (!id) throw new FormError(input, what + ": " + JSON.stringify(u) + " is not a task uuid");
      return id;
    });
    const all = uuids(after, "after"), any = uuids(afterAny, "after any");
    const named = new Set([...all, ...any]).size;
    if (named > MAX_DEPENDENCIES) throw new FormError(after, "the task names " + named + " dependencies; at most " + MAX_DEPENDENCIES);
    if (all.length) req.after = all;
    if (any.length) req.after_any = any;
    if (!array.value.trim()) {
      if (subst.checked) throw new FormError(array, "replacing {i} needs an array: give its indices");
      return { req, array: null };
    }
    let a;
    try { a = parseArray(array.value); } catch (e) { throw new FormError(array, e.message); }
    a.array.subst = subst.checked;
    return { req, array: a.array };
  };
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.hidden = true;
    setStatus("");
    let built;
    try { built = build(); } catch (e) { fail(e.message, e.input); return; }
    submitButton.disabled = true;
    try {
      if (built.array) {
        const r = await api("POST", "/tasks/submit", { tasks: [built.req], array: built.array });
        const refused = (r.results || []).find((x) => x && x.Err);
        if (refused) throw new Error("the coordinator refused the array: " + refused.Err.msg);
        if (!r.array_id) throw new Error("the coordinator answered without an array id: it does not support arrays");
        taskFilter.group = group.value;
        location.hash = arrayHref(group.value, r.array_id);
      } else {
        const r = await api("POST", "/tasks", built.req);
        taskFilter.group = group.value;
        location.hash = "#/task/" + r.uuid;
      }
    } catch (e) {
      fail("The coordinator refused the task: " + e.message);
    } finally {
      submitButton.disabled = false;
    }
  });
  mount(form);
  setStatus("");
}

// ------------------------------------------------------------------ routing

async function route() {
  routeGen++;
  stopLive();
  if (!session.token) { showLogin(); return; }
  chrome(true);
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  try {
    const arg = parts.slice(1).map(decodeURIComponent).join("/");
    switch (parts[0]) {
      case "task": await pageTask(arg); break;
      case "array": await pageArray(decodeURIComponent(parts[1] || ""), decodeURIComponent(parts.slice(2).join("/"))); break;
      case "workers": await pageWorkers(); break;
      case "worker": await pageWorker(arg); break;
      case "groups": await pageGroups(); break;
      case "group": await pageGroup(arg); break;
      case "submit": await pageSubmit(); break;
      default: await pageTasks();
    }
  } catch (e) {
    if (e.status !== 401) setStatus(e.message);
  }
}

window.addEventListener("hashchange", route);
document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("logout").addEventListener("click", () => {
    session.clear();
    location.hash = "#/tasks";
    showLogin("Logged out.");
  });
  route();
});
