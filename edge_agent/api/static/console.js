// Security console: plain browser JavaScript, no build step, no third-party code, so it works on
// an offline campus LAN. Every value from the gateway goes into the page through textContent,
// never innerHTML, so alert payloads cannot inject markup.
"use strict";

const TOKEN_KEY = "edge_console_token";
const DEVICE_REFRESH_MS = 5000;
// Attendance comes from the event log (GET /api/v1/events), polled for what is new since the last
// call: a recorded attendance is not an alert, so the alert stream does not carry it.
const ATTENDANCE_REFRESH_MS = 2000;
const ATTENDANCE_SHOWN = 30;
const ROLE_RANK = { viewer: 1, operator: 2, admin: 3 };

const state = {
  token: null, role: null, alerts: new Map(), stream: null, deviceTimer: null,
  attendance: [], attendanceAfter: null, attendanceTimer: null,
};
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

async function api(path, options = {}) {
  const headers = Object.assign({ "X-Edge-Client": "console" }, options.headers || {});
  if (state.token) headers.Authorization = "Bearer " + state.token;
  const response = await fetch(path, Object.assign({}, options, { headers, credentials: "same-origin" }));
  let body = null;
  if (response.status !== 204) {
    try { body = await response.json(); } catch (e) { body = null; }
  }
  if (response.status === 401) { logout("Your session is no longer valid; log in again."); }
  return { status: response.status, ok: response.ok, body };
}

async function login(token) {
  state.token = token;
  const r = await api("/api/v1/session", { method: "POST" });
  if (!r.ok) {
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    $("login-error").textContent = (r.body && r.body.message) || "login failed (" + r.status + ")";
    return false;
  }
  // sessionStorage: gone when the tab closes, not shared with other tabs or kept on disk.
  sessionStorage.setItem(TOKEN_KEY, token);
  state.role = r.body.role;
  $("who-name").textContent = r.body.name;
  $("who-role").textContent = r.body.role;
  return true;
}

function logout(message) {
  if (state.stream) { state.stream.close(); state.stream = null; }
  if (state.deviceTimer) { clearInterval(state.deviceTimer); state.deviceTimer = null; }
  if (state.attendanceTimer) { clearInterval(state.attendanceTimer); state.attendanceTimer = null; }
  state.attendance = [];
  state.attendanceAfter = null;
  if (state.token) fetch("/api/v1/session", { method: "DELETE", credentials: "same-origin" });
  state.token = null;
  state.role = null;
  state.alerts.clear();
  sessionStorage.removeItem(TOKEN_KEY);
  $("main-view").hidden = true;
  $("who").hidden = true;
  $("login-view").hidden = false;
  $("login-error").textContent = message || "";
}

function canAcknowledge() {
  return (ROLE_RANK[state.role] || 0) >= ROLE_RANK.operator;
}

function shortType(type) {
  // edu.campus.access.forced.v1 -> access.forced
  const parts = type.split(".");
  return parts.length >= 5 ? parts[2] + "." + parts[3] : type;
}

function localTime(iso) {
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}

function renderAlert(a) {
  const data = a.data || {};
  const where = [];
  if (data.camera && data.camera !== a.device) where.push("camera " + data.camera);
  if (data.point) where.push("point " + data.point);
  if (data.zone) where.push("zone " + data.zone);
  if (data.line) where.push("line " + data.line);
  if (data.gate) where.push("gate " + data.gate);
  if (data.direction) where.push(data.direction);
  const evidence = [];
  if (data.rule) evidence.push("rule " + data.rule);
  if (typeof data.count === "number") evidence.push(data.count + " people");
  if (typeof data.dwell_s === "number") evidence.push("dwell " + Math.round(data.dwell_s) + " s");
  if (data.kind) evidence.push(data.kind);
  if (data.reason) evidence.push(data.reason);
  // A stranger: how far the face was from the nearest enrolled one (above the match threshold).
  if (typeof data.nearest_distance === "number") evidence.push("nearest face " + data.nearest_distance.toFixed(2));
  const picture = a.snapshot_url
    ? el("img", { src: a.snapshot_url, alt: "snapshot of " + shortType(a.type), loading: "lazy" })
    : el("div", { class: "noimg" }, "no snapshot");
  let action;
  if (a.acknowledged_at) {
    action = el("span", { class: "acked" }, "acknowledged by " + a.acknowledged_by + " at " + localTime(a.acknowledged_at));
  } else if (canAcknowledge()) {
    action = el("button", { class: "ack", type: "button", onclick: () => acknowledge(a.id) }, "Acknowledge");
  } else {
    action = el("span", { class: "muted" }, "open");
  }
  return el(
    "li",
    { class: "alert " + a.severity + (a.acknowledged_at ? " acknowledged" : ""), "data-id": a.id },
    el("div", { class: "bar" }),
    picture,
    el(
      "div",
      {},
      el("div", { class: "title" }, el("span", { class: "sev" }, a.severity), shortType(a.type)),
      el("div", { class: "meta" }, "device " + a.device + (where.length ? " · " + where.join(" · ") : "")),
      el("div", { class: "meta" }, [localTime(a.time), ...evidence].join(" · ")),
    ),
    el("div", { class: "actions" }, action),
  );
}

function render() {
  const severity = $("severity").value;
  const openOnly = $("open-only").checked;
  const shown = [...state.alerts.values()]
    .filter((a) => (!severity || a.severity === severity) && (!openOnly || !a.acknowledged_at))
    .sort((x, y) => (x.time < y.time ? 1 : x.time > y.time ? -1 : 0));
  $("alerts").replaceChildren(...shown.map(renderAlert));
  const open = [...state.alerts.values()].filter((a) => !a.acknowledged_at).length;
  $("alert-count").textContent = shown.length + " shown, " + open + " open";
}

async function loadAlerts() {
  const r = await api("/api/v1/alerts?limit=200");
  if (!r.ok) { $("alerts-error").textContent = (r.body && r.body.message) || "cannot load alerts"; return; }
  $("alerts-error").textContent = "";
  for (const a of r.body.alerts) state.alerts.set(a.id, a);
  render();
}

async function acknowledge(id) {
  const r = await api("/api/v1/alerts/" + encodeURIComponent(id) + "/ack", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ note: "" }),
  });
  if (r.ok) {
    state.alerts.set(r.body.id, r.body);
    $("alerts-error").textContent = "";
  } else {
    $("alerts-error").textContent = (r.body && r.body.message) || "acknowledge failed (" + r.status + ")";
    if (r.status === 409) {
      const again = await api("/api/v1/alerts/" + encodeURIComponent(id));
      if (again.ok) state.alerts.set(again.body.id, again.body);
    }
  }
  render();
}

function openStream() {
  // EventSource cannot send an Authorization header: it relies on the HttpOnly session cookie
  // that POST /api/v1/session set (honoured for GET requests only).
  const stream = new EventSource("/api/v1/alerts/stream");
  state.stream = stream;
  const onMessage = (ev) => {
    const message = JSON.parse(ev.data);
    state.alerts.set(message.alert.id, message.alert);
    render();
  };
  stream.addEventListener("alert", onMessage);
  stream.addEventListener("acknowledged", onMessage);
  stream.addEventListener("open", () => {
    $("live").textContent = "live";
    $("live").className = "badge on";
    // After a reconnect, catch up on what happened while the stream was down.
    loadAlerts();
  });
  stream.addEventListener("error", () => {
    $("live").textContent = "reconnecting";
    $("live").className = "badge off";
  });
}

async function loadDevices() {
  const r = await api("/api/v1/devices");
  if (!r.ok) return;
  const items = r.body.devices.map((d) =>
    el(
      "li",
      { class: "device " + (d.online ? "online" : "offline"), "data-id": d.id },
      el("span", {}, d.id + " ", el("span", { class: "muted" }, d.kind + (d.gate ? " · " + d.gate : ""))),
      el("span", { class: "state" }, d.online ? "online" : "OFFLINE"),
    ),
  );
  $("devices").replaceChildren(...items);
  const off = r.body.offline.length;
  $("devices-summary").textContent = off ? off + " offline: " + r.body.offline.join(", ") : "all online";
}

function renderAttendance(e) {
  const data = e.data || {};
  const person = data.person || {};
  const how = [data.method];
  if (typeof data.distance === "number") how.push("distance " + data.distance.toFixed(2));
  return el(
    "li",
    { class: "attendance " + data.status, "data-id": e.id, "data-method": data.method, "data-person": person.id },
    el("div", { class: "title" }, (person.name || person.id) + " ", el("span", { class: "muted" }, person.id)),
    el("div", { class: "meta" }, [data.status, how.join(" "), "point " + data.point].join(" · ")),
    el("div", { class: "meta" }, [localTime(e.time), "device " + data.device].join(" · ")),
  );
}

async function loadAttendance() {
  const after = state.attendanceAfter === null ? "" : "&after_seq=" + state.attendanceAfter;
  const r = await api("/api/v1/events?area=attendance&limit=" + ATTENDANCE_SHOWN + after);
  if (!r.ok) {
    $("attendance-error").textContent = (r.body && r.body.message) || "cannot load attendance";
    return;
  }
  $("attendance-error").textContent = "";
  state.attendanceAfter = r.body.next_after_seq;
  const recorded = r.body.events.filter((e) => e.type === "edu.campus.attendance.recorded.v1");
  if (!recorded.length && $("attendance").childElementCount) return;
  // Newest first, the most recent few only.
  state.attendance = recorded.reverse().concat(state.attendance).slice(0, ATTENDANCE_SHOWN);
  $("attendance").replaceChildren(...state.attendance.map(renderAttendance));
  const faces = state.attendance.filter((e) => (e.data || {}).method !== "card").length;
  $("attendance-count").textContent = state.attendance.length + " shown, " + faces + " by face";
}

async function loadGateway() {
  const r = await api("/api/v1/status");
  if (r.ok) $("gateway").textContent = r.body.site + " / " + r.body.gateway;
}

function showMain() {
  $("login-view").hidden = true;
  $("main-view").hidden = false;
  $("who").hidden = false;
  openStream();
  loadAlerts();
  loadGateway();
  loadDevices();
  loadAttendance();
  state.deviceTimer = setInterval(loadDevices, DEVICE_REFRESH_MS);
  state.attendanceTimer = setInterval(loadAttendance, ATTENDANCE_REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", async () => {
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (await login($("token").value.trim())) { $("token").value = ""; showMain(); }
  });
  $("logout").addEventListener("click", () => logout(""));
  $("severity").addEventListener("change", render);
  $("open-only").addEventListener("change", render);
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved && (await login(saved))) showMain();
  else $("login-view").hidden = false;
});
