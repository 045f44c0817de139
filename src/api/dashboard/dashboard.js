// hearth dashboard: polls GET /v1/overview and drives /v1/heat/*. No framework, no build
// step; every request is same-origin and carries the HttpOnly session cookie.
"use strict";

const POLL_MS = 5000;
const $ = (id) => document.getElementById(id);

function text(id, value) {
  $(id).textContent = value;
}

function celsius(c) {
  return c === null || c === undefined ? "unknown" : c.toFixed(1) + " °C";
}

function kwh(x) {
  return x < 0.01 ? (x * 1000).toFixed(1) + " Wh" : x.toFixed(2) + " kWh";
}

function time(ms) {
  return new Date(ms).toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

function cell(tr, value) {
  const td = document.createElement("td");
  if (value instanceof Node) td.appendChild(value); else td.textContent = value;
  tr.appendChild(td);
}

function rows(id, items, fill) {
  const body = $(id);
  body.replaceChildren();
  for (const item of items) {
    const tr = document.createElement("tr");
    fill(tr, item);
    body.appendChild(tr);
  }
  if (items.length === 0) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = 4;
    td.textContent = "none yet";
    tr.appendChild(td);
    body.appendChild(tr);
  }
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, parent) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (parent) parent.appendChild(el);
  return el;
}

// Room temperature and setpoint over the last 24 hours, as inline SVG.
function chart(history, heat) {
  const root = $("chart");
  root.replaceChildren();
  const W = 600, H = 220, L = 40, R = 8, T = 8, B = 22;
  const now = Date.now() / 1000, from = now - 24 * 3600;
  const pts = history.filter((s) => s.t >= from);
  // The node keeps one sample a minute; the line ends at the reading of right now.
  if (heat) pts.push({ t: now, room_celsius: heat.room_celsius, setpoint_celsius: heat.setpoint_celsius });
  const temps = [];
  for (const s of pts) {
    if (s.room_celsius !== null) temps.push(s.room_celsius);
    temps.push(s.setpoint_celsius);
  }
  let lo = temps.length ? Math.floor(Math.min(...temps) - 0.5) : 15;
  let hi = temps.length ? Math.ceil(Math.max(...temps) + 0.5) : 25;
  if (hi - lo < 2) { lo -= 1; hi += 1; }
  const x = (t) => L + ((t - from) / (24 * 3600)) * (W - L - R);
  const y = (c) => T + (1 - (c - lo) / (hi - lo)) * (H - T - B);
  const step = Math.max(1, Math.round((hi - lo) / 5));
  for (let c = lo; c <= hi; c += step) {
    svg("line", { x1: L, x2: W - R, y1: y(c), y2: y(c), class: "grid" }, root);
    svg("text", { x: L - 4, y: y(c) + 4, "text-anchor": "end", class: "axis" }, root).textContent = c + "°";
  }
  for (let h = 0; h <= 24; h += 6) {
    const t = from + h * 3600;
    const label = h === 24 ? "now" : new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    const anchor = h === 0 ? "start" : h === 24 ? "end" : "middle";
    svg("text", { x: x(t), y: H - 6, "text-anchor": anchor, class: "axis" }, root).textContent = label;
  }
  const line = (key, cls) => {
    // A gap where the reading was not trusted.
    let d = "", pen = false;
    for (const s of pts) {
      const v = s[key];
      if (v === null) { pen = false; continue; }
      d += (pen ? "L" : "M") + x(s.t).toFixed(1) + " " + y(v).toFixed(1) + " ";
      pen = true;
    }
    if (d) svg("path", { d: d, class: cls }, root);
  };
  line("setpoint_celsius", "setpoint-line");
  line("room_celsius", "room-line");
}

function render(o) {
  $("signin").hidden = true;
  $("error").hidden = true;
  text("headline", o.headline);
  // A refused key first; else another node signing with it; else a key event of the
  // household that this node did not sign.
  const keyWarning = o.key_refused || o.key_elsewhere || o.key_event;
  $("key-warning").hidden = !keyWarning;
  if (keyWarning) text("key-warning", keyWarning);
  const h = o.heat;
  if (h) {
    text("room", celsius(h.room_celsius));
    text("setpoint", celsius(h.setpoint_celsius));
    text("mode", h.mode);
    text("reason", h.reason);
    const input = $("setpoint-input");
    if (document.activeElement !== input) input.value = h.setpoint_celsius;
    for (const b of ["auto", "boost", "off"]) $(b).classList.toggle("active", h.mode === b);
    text("power", h.power_watts.toFixed(0) + " W");
    text("energy-today", kwh(h.energy_today_kwh));
    text("credited-today", h.energy_credited_today_kwh === null
      ? "unknown"
      : kwh(h.energy_credited_today_kwh) + " (" + kwh(h.energy_charged_today_kwh) + " charged to shards)");
  }
  const mib = (bytes) => Math.ceil(bytes / 1048576);
  text("shards", o.running_shards + " shard(s), holding " + mib(o.shard_memory_bytes) +
    " of " + mib(o.shard_memory_limit_bytes) + " MiB of memory");
  text("credited", kwh(o.credited.energy_kwh) + " in " + o.credited.receipts + " receipts");
  text("peers", o.peers + " connected");
  text("reach", o.reach);
  text("disk", o.disk_free_bytes === null
    ? "unknown"
    : mib(o.disk_free_bytes) + " MiB free; hearth keeps " + mib(o.disk_floor_bytes) + " MiB free" +
      (o.disk_free_bytes < o.disk_floor_bytes ? ": too full to take jobs with new data" : ""));
  chart(o.history, o.heat);
  rows("days", o.credit_per_day.slice().reverse(), (tr, d) => {
    cell(tr, d.day); cell(tr, d.receipts); cell(tr, kwh(d.energy_kwh));
  });
  rows("receipts", o.recent_receipts, (tr, r) => {
    cell(tr, time(r.end_ms)); cell(tr, r.job.slice(0, 10)); cell(tr, r.shard); cell(tr, kwh(r.energy_kwh));
  });
  rows("jobs", o.jobs, (tr, j) => {
    const p = document.createElement("progress");
    p.max = Math.max(1, j.shards_total);
    p.value = j.shards_verified;
    cell(tr, j.id.slice(0, 10)); cell(tr, j.state); cell(tr, p);
  });
  text("updated", "updated " + new Date().toLocaleTimeString());
}

function problem(message) {
  $("error").hidden = false;
  text("error", message);
}

async function poll() {
  try {
    const resp = await fetch("/v1/overview", { credentials: "same-origin", cache: "no-store" });
    if (resp.status === 401) {
      $("signin").hidden = false;
      text("headline", "Not signed in.");
      return;
    }
    if (!resp.ok) {
      problem("The radiator answered " + resp.status + ": " + ((await resp.json()).error || ""));
      return;
    }
    render(await resp.json());
  } catch (e) {
    problem("The radiator does not answer (is `hearth node` running?)");
  }
}

async function command(path, body) {
  try {
    const resp = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body === undefined ? null : body),
    });
    if (!resp.ok) {
      problem((await resp.json()).error || "the radiator refused (" + resp.status + ")");
    }
  } catch (e) {
    problem("The radiator does not answer (is `hearth node` running?)");
  }
  poll();
}

// Other radiators test again whether they can reach this one (`hearth status --recheck`);
// the "Reachable" line follows their verdicts at the next polls.
async function recheck() {
  try {
    const resp = await fetch("/v1/reachability/check", {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json" },
      body: "null",
    });
    if (!resp.ok) {
      problem((await resp.json()).error || "the radiator refused (" + resp.status + ")");
      return;
    }
    const r = await resp.json();
    const when = r.starts_in_ms > 0 ? " in " + Math.ceil(r.starts_in_ms / 1000) + " s" : "";
    text(
      "recheck-said",
      r.candidates === 0
        ? "nothing to test yet: no other radiator has seen this one"
        : "testing " + r.candidates + " address(es)" + when + "; the line follows the verdicts",
    );
  } catch (e) {
    problem("The radiator does not answer (is `hearth node` running?)");
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("setpoint-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const c = parseFloat($("setpoint-input").value);
    if (!Number.isNaN(c)) command("/v1/heat/setpoint", { celsius: c });
    $("setpoint-input").blur();
  });
  $("auto").addEventListener("click", () => command("/v1/heat/auto"));
  $("boost").addEventListener("click", () => command("/v1/heat/boost", { minutes: 60 }));
  $("off").addEventListener("click", () => command("/v1/heat/off"));
  $("recheck").addEventListener("click", recheck);
  poll();
  setInterval(poll, POLL_MS);
});
