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
// The cameras view shows a new frame this often, the roll-call is refreshed as often.
const CAMERA_REFRESH_MS = 2000;
const ROLLCALL_REFRESH_MS = 2000;
// A press within this many screen pixels of a corner grabs it.
const GRAB_RADIUS_PX = 8;
// The colours of vision/render.py's evidence pictures, so both drawings read the same.
const ZONE_COLOUR = "#ffff00";
const LINE_COLOUR = "#00ffff";
const SELECTED_COLOUR = "#ff4081";

const state = {
  token: null, role: null, alerts: new Map(), stream: null, deviceTimer: null,
  attendance: [], attendanceAfter: null, attendanceTimer: null,
  viewTimer: null,
  cameras: new Map(), camera: null, frame: null, frameSize: null, frameCount: 0, shapesFor: null,
  shapes: [], selected: -1, tool: "select", drag: null, drawingChanged: false,
  rollcallPoint: null,
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
  stopViewTimer();
  for (const id of ["cameras-view", "rollcall-view", "view-tabs"]) $(id).hidden = true;
  state.camera = null;
  state.shapesFor = null;
  state.frameSize = null;
  state.frame = null;
  state.rollcallPoint = null;
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

// ---- Cameras: the newest frame with its zones and lines; for admins, an editor that draws them,
// asks the gateway for the YAML and applies it (built, checked and written there: the browser
// never writes config).

function canEditZones() {
  return (ROLE_RANK[state.role] || 0) >= ROLE_RANK.admin;
}

function currentCamera() {
  return state.camera ? state.cameras.get(state.camera) || null : null;
}

// Configured coordinates in the frame's pixels, as vision.zones.in_pixels resolves them: normalized
// ones scaled to the frame, pixel ones scaled from reference_size when the camera has one.
function toFramePixels(cam, point, coords) {
  const [w, h] = [cam.frame.width, cam.frame.height];
  if (coords === "normalized") return [point[0] * w, point[1] * h];
  if (!cam.reference_size) return [point[0], point[1]];
  return [(point[0] * w) / cam.reference_size[0], (point[1] * h) / cam.reference_size[1]];
}

function shapesOf(cam) {
  const zones = cam.zones.map((z) => ({
    kind: "zone", id: z.id, name: z.name, inertia_frames: z.inertia_frames, done: true,
    points: z.points.map((p) => toFramePixels(cam, p, z.coords)),
  }));
  const lines = cam.lines.map((l) => ({
    kind: "line", id: l.id, name: l.name, inertia_frames: l.inertia_frames,
    start: toFramePixels(cam, l.start, l.coords), end: toFramePixels(cam, l.end, l.coords),
    label_a_to_b: l.label_a_to_b, label_b_to_a: l.label_b_to_a,
  }));
  return zones.concat(lines);
}

function usesNormalized(cam) {
  const items = cam.zones.concat(cam.lines);
  return items.length > 0 && items.every((z) => z.coords === "normalized");
}

function resetDrawing(cam) {
  state.shapes = cam && cam.frame ? shapesOf(cam) : [];
  state.selected = -1;
  state.tool = "select";
  state.drawingChanged = false;
  // The zones this drawing starts from: applying it is refused if someone changed them since.
  state.drawnOver = cam ? cam.zones_version : null;
  if (cam) $("zone-coords").value = usesNormalized(cam) ? "normalized" : "pixel";
  $("zone-yaml").textContent = "";
  $("yaml-status").textContent = "";
  $("yaml-issues").replaceChildren();
  $("copy-yaml").disabled = true;
  $("apply-zones").disabled = true;
  renderEditor();
}

function revertDrawing() {
  resetDrawing(currentCamera());
  drawCamera();
}

async function loadCameras() {
  const r = await api("/api/v1/cameras");
  if (!r.ok) { $("cameras-error").textContent = (r.body && r.body.message) || "cannot load the cameras"; return; }
  $("cameras-error").textContent = "";
  state.cameras = new Map(r.body.cameras.map((c) => [c.id, c]));
  const ids = r.body.cameras.map((c) => c.id);
  const select = $("camera-select");
  // Options are rebuilt only when the cameras change, so an open drop-down survives the polling.
  if (ids.join("\n") !== [...select.options].map((o) => o.value).join("\n")) {
    select.replaceChildren(...ids.map((id) => el("option", { value: id }, id)));
  }
  if (!state.cameras.has(state.camera)) state.camera = ids.length ? ids[0] : null;
  select.value = state.camera || "";
  const cam = currentCamera();
  if (!cam) {
    $("camera-info").textContent = "no camera is configured";
    state.frame = null;
    state.frameSize = null;
    state.shapesFor = null;
    resetDrawing(null);
    drawCamera();
    return;
  }
  const frameSize = cam.frame ? [cam.frame.width, cam.frame.height] : null;
  const resized = String(frameSize) !== String(state.frameSize);
  state.frameSize = frameSize;
  if (state.shapesFor !== cam.id || resized) {
    state.shapesFor = cam.id;
    resetDrawing(cam);
  } else if (!state.drawingChanged) {
    // Follows the configuration (a reload changes it); an admin's drawing is kept until reverted.
    state.shapes = shapesOf(cam);
    state.drawnOver = cam.zones_version;
  }
  if (!cam.frame) {
    $("camera-info").textContent = "no frame yet";
    state.frame = null;
    drawCamera();
    return;
  }
  $("camera-info").textContent = cam.frame.width + "×" + cam.frame.height + " · " + localTime(cam.frame.at);
  loadFrame(cam);
}

function loadFrame(cam) {
  const image = new Image();
  image.onload = () => {
    if (state.camera !== cam.id) return;
    state.frame = image;
    drawCamera();
  };
  image.onerror = () => { $("cameras-error").textContent = "cannot load the frame of " + cam.id; };
  // The <img> request carries the session cookie; the counter keeps the browser from reusing the
  // previous picture of the same URL.
  state.frameCount += 1;
  image.src = cam.frame_url + "?n=" + state.frameCount;
}

// Frame pixels per screen pixel: strokes, handles and text keep their on-screen size at any zoom.
function framePerScreenPixel() {
  const canvas = $("camera-canvas");
  return state.frameSize[0] / (canvas.clientWidth || state.frameSize[0]);
}

function drawCamera() {
  const canvas = $("camera-canvas");
  const size = state.frameSize;
  const g = canvas.getContext("2d");
  if (size) {
    // The canvas holds device pixels, so text and strokes stay sharp on a small frame shown large;
    // everything is drawn in frame pixels through the transform.
    const ratio = window.devicePixelRatio || 1;
    const width = Math.round((canvas.clientWidth || size[0]) * ratio);
    const height = Math.round((width * size[1]) / size[0]);
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
  }
  g.setTransform(1, 0, 0, 1, 0, 0);
  g.fillStyle = "#333";
  g.fillRect(0, 0, canvas.width, canvas.height);
  if (!size) return;
  const zoom = canvas.width / size[0];
  g.setTransform(zoom, 0, 0, zoom, 0, 0);
  if (state.frame) g.drawImage(state.frame, 0, 0, size[0], size[1]);
  const scale = framePerScreenPixel();
  const editing = canEditZones();
  state.shapes.forEach((shape, i) => {
    const colour = i === state.selected ? SELECTED_COLOUR : shape.kind === "zone" ? ZONE_COLOUR : LINE_COLOUR;
    g.strokeStyle = colour;
    g.fillStyle = colour;
    g.lineWidth = 2 * scale;
    g.font = 12 * scale + "px system-ui, sans-serif";
    const corners = shape.kind === "zone" ? shape.points : [shape.start, shape.end].filter(Boolean);
    if (shape.kind === "zone" && shape.points.length) {
      g.beginPath();
      shape.points.forEach((p, k) => (k ? g.lineTo(p[0], p[1]) : g.moveTo(p[0], p[1])));
      if (shape.done) g.closePath();
      g.stroke();
      g.globalAlpha = 0.15;
      if (shape.done) g.fill();
      g.globalAlpha = 1;
      g.fillText(shape.id, shape.points[0][0] + 4 * scale, shape.points[0][1] + 14 * scale);
    }
    if (shape.kind === "line" && shape.start && shape.end) drawLine(g, shape, scale);
    if (editing) {
      for (const p of corners) g.fillRect(p[0] - 4 * scale, p[1] - 4 * scale, 8 * scale, 8 * scale);
    }
  });
}

function drawLine(g, line, scale) {
  const [a, b] = [line.start, line.end];
  g.beginPath();
  g.moveTo(a[0], a[1]);
  g.lineTo(b[0], b[1]);
  g.stroke();
  // The arrow points from side A (left walking start→end, as drawn on screen) to side B: the
  // direction label_a_to_b names (vision.config.LineZone).
  const [dx, dy] = [b[0] - a[0], b[1] - a[1]];
  const length = Math.hypot(dx, dy) || 1;
  const [nx, ny] = [-dy / length, dx / length];
  const [mx, my] = [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2];
  const arrow = Math.max(0.1 * length, 12 * scale);
  const head = [mx + nx * arrow, my + ny * arrow];
  g.beginPath();
  g.moveTo(mx - nx * arrow, my - ny * arrow);
  g.lineTo(head[0], head[1]);
  g.stroke();
  const tip = 6 * scale;
  g.beginPath();
  g.moveTo(head[0], head[1]);
  g.lineTo(head[0] - nx * tip + (dx / length) * tip, head[1] - ny * tip + (dy / length) * tip);
  g.lineTo(head[0] - nx * tip - (dx / length) * tip, head[1] - ny * tip - (dy / length) * tip);
  g.closePath();
  g.fill();
  g.fillText("A", mx - nx * (arrow + 10 * scale), my - ny * (arrow + 10 * scale));
  g.fillText("B " + line.label_a_to_b, mx + nx * (arrow + 6 * scale), my + ny * (arrow + 6 * scale));
  g.fillText(line.id, b[0] + 4 * scale, b[1]);
}

function framePoint(ev) {
  const [w, h] = state.frameSize;
  const box = $("camera-canvas").getBoundingClientRect();
  const x = ((ev.clientX - box.left) * w) / box.width;
  const y = ((ev.clientY - box.top) * h) / box.height;
  return [Math.min(Math.max(x, 0), w), Math.min(Math.max(y, 0), h)];
}

function grabbed(point) {
  const radius = GRAB_RADIUS_PX * framePerScreenPixel();
  const near = (p) => p && Math.hypot(p[0] - point[0], p[1] - point[1]) <= radius;
  for (let i = state.shapes.length - 1; i >= 0; i -= 1) {
    const shape = state.shapes[i];
    if (shape.kind === "zone") {
      const k = shape.points.findIndex(near);
      if (k >= 0) return { shape: i, corner: k };
    } else if (near(shape.start)) return { shape: i, corner: "start" };
    else if (near(shape.end)) return { shape: i, corner: "end" };
  }
  return null;
}

function unusedId(prefix) {
  const taken = new Set(state.shapes.map((s) => s.id));
  let n = 1;
  while (taken.has(prefix + "-" + n)) n += 1;
  return prefix + "-" + n;
}

function changed() {
  state.drawingChanged = true;
  $("copy-yaml").disabled = true;
  $("apply-zones").disabled = true;
  $("yaml-status").textContent = $("zone-yaml").textContent ? "the drawing changed since: get the YAML again" : "";
  renderEditor();
  drawCamera();
}

function onCanvasDown(ev) {
  if (!canEditZones() || !state.frameSize) return;
  const point = framePoint(ev);
  const shape = state.shapes[state.selected];
  if (state.tool === "zone") {
    shape.points.push(point);
    changed();
    return;
  }
  if (state.tool === "line") {
    if (!shape.start) shape.start = point;
    else {
      shape.end = point;
      state.tool = "select";
    }
    changed();
    return;
  }
  const hit = grabbed(point);
  state.selected = hit ? hit.shape : -1;
  state.drag = hit;
  if (hit) $("camera-canvas").setPointerCapture(ev.pointerId);
  renderEditor();
  drawCamera();
}

function onCanvasMove(ev) {
  if (!state.drag) return;
  const point = framePoint(ev);
  const shape = state.shapes[state.drag.shape];
  if (shape.kind === "zone") shape.points[state.drag.corner] = point;
  else shape[state.drag.corner] = point;
  changed();
}

function onCanvasUp() {
  state.drag = null;
}

function startZone() {
  finishZone();
  state.shapes.push({ kind: "zone", id: unusedId("zone"), name: "", points: [], done: false });
  state.selected = state.shapes.length - 1;
  state.tool = "zone";
  changed();
}

function finishZone() {
  const shape = state.shapes[state.selected];
  if (state.tool !== "zone" || !shape) return;
  shape.done = true;
  state.tool = "select";
  changed();
}

function startLine() {
  finishZone();
  state.shapes.push({
    kind: "line", id: unusedId("line"), name: "", start: null, end: null, label_a_to_b: "a_to_b", label_b_to_a: "b_to_a",
  });
  state.selected = state.shapes.length - 1;
  state.tool = "line";
  changed();
}

function flipLine() {
  const shape = state.shapes[state.selected];
  if (!shape || shape.kind !== "line" || !shape.end) return;
  [shape.start, shape.end] = [shape.end, shape.start];
  changed();
}

function deleteShape() {
  if (state.selected < 0) return;
  state.shapes.splice(state.selected, 1);
  state.selected = -1;
  state.tool = "select";
  changed();
}

const HINTS = {
  select: "Drag a corner to move it; pick a zone or line to rename or delete it.",
  zone: "Click on the picture to add corners, then Finish zone.",
  line: "Click the line's two ends; the arrow shows the A→B direction (Flip direction swaps it).",
};

function renderEditor() {
  const shape = state.shapes[state.selected] || null;
  $("editor-hint").textContent = HINTS[state.tool];
  $("finish-zone").disabled = state.tool !== "zone";
  $("flip-line").disabled = !shape || shape.kind !== "line" || !shape.end;
  $("delete-shape").disabled = !shape;
  $("shape-fields").hidden = !shape;
  $("shape-fields").classList.toggle("is-line", Boolean(shape && shape.kind === "line"));
  if (shape) {
    // Not while typing in it: the caret would jump to the end at every key.
    for (const [field, key] of [["shape-id", "id"], ["shape-name", "name"], ["label-a-to-b", "label_a_to_b"], ["label-b-to-a", "label_b_to_a"]]) {
      if (document.activeElement !== $(field)) $(field).value = shape[key] || "";
    }
  }
  $("shape-list").replaceChildren(
    ...state.shapes.map((s, i) => {
      const size = s.kind === "zone" ? s.points.length + " corners" : s.end ? "2 ends" : "being drawn";
      return el(
        "li",
        { class: "shape " + s.kind + (i === state.selected ? " selected" : ""), "data-id": s.id,
          onclick: () => selectShape(i) },
        el("span", {}, s.kind + " " + s.id), el("span", { class: "muted" }, " " + size),
      );
    }),
  );
}

function selectShape(i) {
  // While a zone or line is being drawn, clicks belong to it.
  if (state.tool !== "select") return;
  state.selected = i;
  renderEditor();
  drawCamera();
}

function editField(key) {
  return (ev) => {
    const shape = state.shapes[state.selected];
    if (!shape) return;
    shape[key] = ev.target.value.trim();
    changed();
  };
}

function drawingBody() {
  const [w, h] = state.frameSize;
  const coords = $("zone-coords").value;
  // Pixels as whole frame pixels, normalized to 1/10000 of the frame: finer than anyone clicks.
  const convert = coords === "normalized"
    ? (p) => [Math.round((p[0] / w) * 10000) / 10000, Math.round((p[1] / h) * 10000) / 10000]
    : (p) => [Math.round(p[0]), Math.round(p[1])];
  const common = (s) => ({ id: s.id, name: s.name, coords, inertia_frames: s.inertia_frames });
  return {
    reference_size: coords === "pixel" ? [w, h] : null,
    zones: state.shapes.filter((s) => s.kind === "zone").map((s) => Object.assign(common(s), { points: s.points.map(convert) })),
    lines: state.shapes.filter((s) => s.kind === "line").map((s) => Object.assign(common(s), {
      start: s.start && convert(s.start), end: s.end && convert(s.end), label_a_to_b: s.label_a_to_b, label_b_to_a: s.label_b_to_a,
    })),
  };
}

async function getYaml() {
  const cam = currentCamera();
  if (!cam || !state.frameSize) return;
  finishZone();
  const r = await api("/api/v1/cameras/" + encodeURIComponent(cam.id) + "/zones", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(drawingBody()),
  });
  $("yaml-issues").replaceChildren();
  $("apply-zones").disabled = true;
  if (!r.ok) {
    $("zone-yaml").textContent = "";
    $("copy-yaml").disabled = true;
    $("yaml-status").className = "error";
    $("yaml-status").textContent = (r.body && r.body.message) || "the gateway refused the drawing (" + r.status + ")";
    return;
  }
  const check = r.body.validation;
  $("zone-yaml").textContent = r.body.yaml;
  $("copy-yaml").disabled = false;
  // Applied only as reviewed: valid in the agent's own file, and not redrawn since.
  $("apply-zones").disabled = !check.valid || r.body.checked_against === "running configuration";
  $("yaml-status").className = check.valid ? "ok" : "error";
  $("yaml-status").textContent = check.valid
    ? "Paste under camera " + r.body.camera + " (replacing its security zones and lines): valid in " + r.body.checked_against
    : r.body.paste_only
      ? "Paste under camera " + r.body.camera + " by hand: " + r.body.checked_against + " cannot take it in place:"
      : "With this, " + r.body.checked_against + " would not load:";
  $("yaml-issues").replaceChildren(
    ...check.issues.map((i) => el("li", {}, (i.line ? "line " + i.line + ": " : "") + (i.path ? i.path + ": " : "") + i.message)),
  );
}

async function applyZones() {
  const cam = currentCamera();
  if (!cam || !state.frameSize) return;
  $("apply-zones").disabled = true;
  const r = await api("/api/v1/cameras/" + encodeURIComponent(cam.id) + "/zones/apply", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(Object.assign(drawingBody(), { zones_version: state.drawnOver })),
  });
  $("yaml-issues").replaceChildren();
  if (!r.ok) {
    $("yaml-status").className = "error";
    $("yaml-status").textContent = "Not applied: " + ((r.body && r.body.message) || "the gateway refused (" + r.status + ")");
    const issues = (r.body && r.body.details) || [];
    $("yaml-issues").replaceChildren(...issues.map((i) => el("li", {}, (i.line ? "line " + i.line + ": " : "") + (i.path ? i.path + ": " : "") + i.message)));
    return;
  }
  state.drawingChanged = false;
  state.drawnOver = r.body.zones_version;
  $("yaml-status").className = "ok";
  $("yaml-status").textContent = "Applied to camera " + r.body.camera + ": written to " + r.body.config_file
    + " (the previous file is " + r.body.previous + "); "
    + (r.body.live ? "its analysis judges by these zones from its next frame" : "its analysis takes them when it starts");
  await loadCameras();
}

async function copyYaml() {
  const text = $("zone-yaml").textContent;
  try {
    await navigator.clipboard.writeText(text);
    $("yaml-status").textContent = "YAML copied";
  } catch (e) {
    // Plain HTTP on the LAN is no secure context, so there is no clipboard API: select the text.
    const range = document.createRange();
    range.selectNodeContents($("zone-yaml"));
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    $("yaml-status").textContent = document.execCommand("copy") ? "YAML copied" : "YAML selected: press Ctrl+C";
  }
}

// ---- Roll-call: per attendance point, the current session and who is present, late or absent.

function renderAttendee(p) {
  const how = p.at ? [localTime(p.at), p.method, p.evidence > 1 ? p.evidence + " observations" : ""] : [];
  return el(
    "li",
    { class: "attendee" + (p.seen_elsewhere ? " elsewhere" : ""), "data-person": p.person_id },
    el("div", { class: "title" }, (p.name || p.person_id) + " ", el("span", { class: "muted" }, p.person_id)),
    how.length ? el("div", { class: "meta" }, how.filter(Boolean).join(" · ")) : null,
    // Recorded at another point in an overlapping session: the wrong room, or a lent card.
    p.seen_elsewhere ? el("div", { class: "flag" }, "seen elsewhere") : null,
  );
}

async function loadRollcall() {
  const points = await api("/api/v1/attendance/points");
  if (!points.ok) {
    $("rollcall-error").textContent = (points.body && points.body.message) || "cannot load the attendance points";
    return;
  }
  const select = $("rollcall-point");
  const ids = points.body.points.map((p) => p.point);
  if (ids.join("\n") !== [...select.options].map((o) => o.value).join("\n")) {
    select.replaceChildren(...ids.map((id) => el("option", { value: id }, id)));
  }
  if (!ids.includes(state.rollcallPoint)) state.rollcallPoint = ids.length ? ids[0] : null;
  select.value = state.rollcallPoint || "";
  if (!state.rollcallPoint) {
    $("rollcall-error").textContent = "";
    $("rollcall-session").textContent = "no attendance point is configured";
    return;
  }
  const r = await api("/api/v1/attendance/points/" + encodeURIComponent(state.rollcallPoint) + "/rollcall");
  if (!r.ok) { $("rollcall-error").textContent = (r.body && r.body.message) || "cannot load the roll-call"; return; }
  $("rollcall-error").textContent = "";
  const rc = r.body;
  const s = rc.session;
  $("rollcall-session").textContent = s
    ? [s.name || s.id, [s.day, s.start + "–" + s.end].filter(Boolean).join(" "), rc.state].join(" · ")
    : "no session now";
  const elsewhere = rc.present.concat(rc.late).filter((p) => p.seen_elsewhere).length;
  $("rollcall-counts").textContent = "expected " + rc.expected + " · present " + rc.present.length + " · late " + rc.late.length +
    " · absent " + rc.absent.length + (elsewhere ? " · " + elsewhere + " seen elsewhere" : "");
  $("present-count").textContent = rc.present.length;
  $("late-count").textContent = rc.late.length;
  $("absent-count").textContent = rc.absent.length;
  $("rollcall-present").replaceChildren(...rc.present.map(renderAttendee));
  $("rollcall-late").replaceChildren(...rc.late.map(renderAttendee));
  $("rollcall-absent").replaceChildren(...rc.absent.map(renderAttendee));
}

// ---- Views: alerts (with attendance and devices), cameras, roll-call; only the open one polls.

const VIEW_POLLS = { "cameras-view": [loadCameras, CAMERA_REFRESH_MS], "rollcall-view": [loadRollcall, ROLLCALL_REFRESH_MS] };

function stopViewTimer() {
  if (state.viewTimer) { clearInterval(state.viewTimer); state.viewTimer = null; }
}

function showView(id) {
  stopViewTimer();
  for (const tab of document.querySelectorAll("#view-tabs .tab")) {
    const active = tab.dataset.view === id;
    tab.classList.toggle("active", active);
    $(tab.dataset.view).hidden = !active;
  }
  $("zone-editor").hidden = !canEditZones();
  $("camera-canvas").classList.toggle("editable", canEditZones());
  const poll = VIEW_POLLS[id];
  if (poll) {
    poll[0]();
    state.viewTimer = setInterval(poll[0], poll[1]);
  }
}

function showMain() {
  $("login-view").hidden = true;
  $("view-tabs").hidden = false;
  showView("main-view");
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
  for (const tab of document.querySelectorAll("#view-tabs .tab")) {
    tab.addEventListener("click", () => showView(tab.dataset.view));
  }
  $("camera-select").addEventListener("change", () => { state.camera = $("camera-select").value; loadCameras(); });
  const canvas = $("camera-canvas");
  canvas.addEventListener("pointerdown", onCanvasDown);
  canvas.addEventListener("pointermove", onCanvasMove);
  canvas.addEventListener("pointerup", onCanvasUp);
  canvas.addEventListener("pointercancel", onCanvasUp);
  $("tool-zone").addEventListener("click", startZone);
  $("tool-line").addEventListener("click", startLine);
  $("finish-zone").addEventListener("click", finishZone);
  $("flip-line").addEventListener("click", flipLine);
  $("delete-shape").addEventListener("click", deleteShape);
  $("revert-zones").addEventListener("click", revertDrawing);
  $("shape-id").addEventListener("input", editField("id"));
  $("shape-name").addEventListener("input", editField("name"));
  $("label-a-to-b").addEventListener("input", editField("label_a_to_b"));
  $("label-b-to-a").addEventListener("input", editField("label_b_to_a"));
  $("get-yaml").addEventListener("click", getYaml);
  $("copy-yaml").addEventListener("click", copyYaml);
  $("apply-zones").addEventListener("click", applyZones);
  $("rollcall-point").addEventListener("change", () => { state.rollcallPoint = $("rollcall-point").value; loadRollcall(); });
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved && (await login(saved))) showMain();
  else $("login-view").hidden = false;
});
