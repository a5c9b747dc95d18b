// The rvs status page: polls /api/status every second and redraws the table. No build
// step, no libraries; text goes into the page through textContent only.
"use strict";

const POLL_MS = 1000;
let writable = false;
// Redraws so far, on <body data-updates>: tells a test (or a curious person) that the page
// keeps itself current.
let updates = 0;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) {
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function human(n) {
  if (n < 1000) return String(n);
  const units = ["K", "M", "G", "T", "P"];
  let i = -1;
  do { n /= 1000; i++; } while (n >= 1000 && i < units.length - 1);
  return n.toFixed(n < 10 ? 1 : 0) + units[i];
}

function ago(ms, now) {
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
}

function rateCells(r) {
  return [r.cps, r.inpps, r.outpps, r.inbps, r.outbps].map((v) => el("td", {}, human(v)));
}

function healthCell(d, now) {
  const td = el("td", { class: "health" }, el("span", { class: "badge" }, d.state));
  for (const h of d.health) {
    td.append(
      el("div", { class: "detail" },
        `${h.source} ${h.checker}: ${h.up ? "up" : "down"} — ${h.detail} (${ago(h.checked_at_unix_ms, now)}, ${h.transitions} transitions)`)
    );
  }
  return td;
}

async function setWeight(svc, d, weight) {
  const token = document.getElementById("token").value.trim();
  const msg = document.getElementById("authmsg");
  try {
    const r = await fetch("/api/weight", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Authorization": "Bearer " + token },
      body: JSON.stringify({ service: svc.key, addr: d.addr, port: d.port, weight }),
    });
    const body = await r.json().catch(() => ({}));
    msg.textContent = r.ok ? `${d.name}: weight ${weight}` : `${d.name}: ${body.error || r.status}`;
  } catch (e) {
    msg.textContent = String(e);
  }
  refresh();
}

function actions(svc, d) {
  const td = el("td", { class: "actions" });
  if (!writable) return td;
  if (d.weight > 0) {
    td.append(el("button", { onclick: () => setWeight(svc, d, 0), title: "weight 0: no new connections" }, "drain"));
  } else {
    td.append(el("button", {
      onclick: () => {
        const w = parseInt(prompt(`Weight for ${d.name}`, "1"), 10);
        if (Number.isInteger(w) && w >= 0) setWeight(svc, d, w);
      },
    }, "set weight"));
  }
  return td;
}

function render(st) {
  writable = st.writable;
  document.getElementById("auth").style.display = writable ? "block" : "none";
  const now = st.generated_at_unix_ms;
  const dp = st.dataplane;
  const summary = document.getElementById("summary");
  summary.replaceChildren(
    "data plane ", el("b", {}, dp.state), ` (restarts ${dp.restarts})`,
    " · connections ", el("b", {}, `${st.conns.entries} / ${st.conns.limit}`),
    " · total ", el("b", {}, `${human(st.rates.cps)} conn/s, ${human(st.rates.inpps)} pkt/s in, ${human(st.rates.inbps)} B/s in`),
    ` · updated ${new Date(now).toLocaleTimeString()}`
  );
  const rows = [];
  for (const svc of st.services) {
    const flags = svc.persistent ? " persistent" : "";
    rows.push(el("tr", { class: "service", "data-service": svc.name },
      el("td", {}, svc.name), el("td", {}, svc.scheduler + flags), el("td", {}), el("td", {}),
      el("td", {}, svc.dests.reduce((a, d) => a + d.active, 0)),
      el("td", {}, svc.dests.reduce((a, d) => a + d.inactive, 0)),
      ...rateCells(svc.rates), el("td", {})));
    for (const d of svc.dests) {
      rows.push(el("tr", { class: "dest state-" + d.state, "data-service": svc.name, "data-dest": d.name, "data-state": d.state, "data-weight": d.weight },
        el("td", {}, d.name), el("td", {}, d.fwd), el("td", {}, d.weight), healthCell(d, now),
        el("td", {}, d.active), el("td", {}, d.inactive), ...rateCells(d.rates), actions(svc, d)));
    }
  }
  document.getElementById("rows").replaceChildren(...rows);
  document.body.setAttribute("data-updates", String(++updates));
  const um = st.unmatched_health;
  document.getElementById("unmatched").textContent = um.length
    ? `Health results for real servers not in the table: ${um.map((h) => `${h.addr}:${h.port} (${h.source}, ${h.up ? "up" : "down"})`).join(", ")}`
    : "";
}

async function refresh() {
  const err = document.getElementById("error");
  try {
    const r = await fetch("/api/status", { cache: "no-store" });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
    render(body);
    err.textContent = "";
  } catch (e) {
    err.textContent = "cannot read the daemon: " + e.message;
  }
}

async function loop() {
  await refresh();
  setTimeout(loop, POLL_MS);
}

loop();
