"use strict";
// The edgehub dashboard: a client of the admin API like any other. Every
// two seconds it reads /v1/hub, /v1/streams, /v1/rates, /v1/plugins,
// /v1/groups (and each group), /v1/peers, and for the selected stream its
// description and tail. No framework, no external assets: charts are SVG
// paths drawn here. docs/dashboard.md describes what it shows.

const POLL_MS = 2000;
const $ = id => document.getElementById(id);
const esc = s => String(s).replace(/[&<>"']/g, c => "&#" + c.charCodeAt(0) + ";");
const num = n => Number(n || 0).toLocaleString("en-US");

function bytes(n) {
  n = Number(n || 0);
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(n < 10 ? 2 : 1)) + " " + u[i];
}
function short(n) {
  n = Number(n || 0);
  if (n >= 1e9) return (n / 1e9).toFixed(1) + "G";
  if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (n >= 1e4) return (n / 1e3).toFixed(1) + "k";
  if (n >= 100) return n.toFixed(0);
  if (n >= 10) return n.toFixed(1);
  return n.toFixed(n === 0 ? 0 : 2);
}
function dur(s) {
  s = Math.floor(s);
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  if (d) return d + "d " + h + "h";
  if (h) return h + "h " + m + "m";
  if (m) return m + "m " + (s % 60) + "s";
  return s + "s";
}
function ago(iso) {
  if (!iso) return "–";
  const s = (Date.now() - Date.parse(iso)) / 1000;
  return s < 1 ? "now" : dur(s) + " ago";
}
const callTime = ns => ns >= 1e6 ? (ns / 1e6).toFixed(1) + " ms" : (ns / 1e3).toFixed(0) + " µs";

// Admin tokens: with [[admin.token]]s the API answers 401; the page asks
// for a token in a form and keeps it in sessionStorage (this tab only).
const TOKEN_KEY = "edgehub-admin-token";
class AuthError extends Error {}
async function api(path) {
  const tok = sessionStorage.getItem(TOKEN_KEY);
  const r = await fetch(path, {headers: tok ? {Authorization: "Bearer " + tok} : {}, cache: "no-store"});
  if (r.status === 401) throw new AuthError("this hub requires an admin token");
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(path + ": " + (body.error || "HTTP " + r.status));
  return body;
}
$("auth").addEventListener("submit", ev => {
  ev.preventDefault();
  const t = $("auth-token").value.trim();
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  $("auth-token").value = "";
  $("auth").hidden = true;
  tick();
});

// The selected stream is in the URL (#stream=NAME), so a link shows it.
let selected = decodeURIComponent((location.hash.match(/stream=([^&]+)/) || [])[1] || "");
let tailPaused = false;
function select(name) {
  selected = name;
  history.replaceState(null, "", "#stream=" + encodeURIComponent(name));
  tick();
}
$("streams").addEventListener("click", ev => {
  const tr = ev.target.closest("tr[data-stream]");
  if (tr) select(tr.dataset.stream);
});
$("tail-toggle").addEventListener("click", () => {
  tailPaused = !tailPaused;
  $("tail-toggle").textContent = tailPaused ? "resume" : "pause";
});

// Charts. Points are [unix ms, value]; the x axis spans the rate window
// ending now, the y axis 0..a round maximum.
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}
function pathOf(pts, x, y) {
  return pts.map((p, i) => (i ? "L" : "M") + x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1)).join(" ");
}
// The x axis spans the history there is, at least a minute and at most the
// hub's rate window, ending now.
function chart(svg, pts, windowMs, fmt) {
  const W = 600, H = 160, L = 46, R = 8, T = 8, B = 18;
  const now = Date.now();
  const span = Math.min(windowMs, Math.max(60e3, pts.length ? now - pts[0][0] : 0));
  const x0 = now - span;
  const max = niceMax(Math.max(0, ...pts.map(p => p[1])));
  const x = t => L + (Math.max(t, x0) - x0) / span * (W - L - R);
  const y = v => T + (1 - v / max) * (H - T - B);
  let s = "";
  for (let i = 0; i <= 4; i++) {
    const v = max * i / 4, yy = y(v).toFixed(1);
    s += `<line class="grid-line" x1="${L}" x2="${W - R}" y1="${yy}" y2="${yy}"/>` +
      `<text x="${L - 4}" y="${(+yy + 3).toFixed(1)}" text-anchor="end">${esc(fmt(v))}</text>`;
  }
  for (let i = 0; i <= 4; i++) {
    const back = span * i / 4, xx = x(now - back).toFixed(1);
    const label = i === 0 ? "now" : "-" + (span >= 180e3 ? Math.round(back / 60e3) + "m" : Math.round(back / 1e3) + "s");
    s += `<text x="${xx}" y="${H - 4}" text-anchor="${i === 4 ? "start" : i === 0 ? "end" : "middle"}">${label}</text>`;
  }
  if (pts.length) {
    const line = pathOf(pts, x, y);
    const area = line + ` L${x(pts[pts.length - 1][0]).toFixed(1)},${y(0)} L${x(pts[0][0]).toFixed(1)},${y(0)} Z`;
    s += `<path class="area" d="${area}"/><path class="line" d="${line}" data-points="${pts.length}"/>`;
  } else {
    s += `<path class="line" d="" data-points="0"/><text x="${W / 2}" y="${H / 2}" text-anchor="middle">collecting samples…</text>`;
  }
  svg.innerHTML = s;
}
function spark(pts, cls) {
  const W = 110, H = 22;
  if (pts.length < 2) return `<svg class="spark" viewBox="0 0 ${W} ${H}"><path class="${cls}" d="" data-points="${pts.length}"/></svg>`;
  const t0 = pts[0][0], t1 = pts[pts.length - 1][0], max = Math.max(1e-9, ...pts.map(p => p[1]));
  const d = pathOf(pts, t => (t - t0) / (t1 - t0 || 1) * W, v => H - 1 - v / max * (H - 2));
  return `<svg class="spark" viewBox="0 0 ${W} ${H}" preserveAspectRatio="none"><path class="${cls}" d="${d}" data-points="${pts.length}"/></svg>`;
}

function renderHub(h) {
  $("hub-name").textContent = h.name + (h.site ? " · " + h.site : "") + (h.region ? " · " + h.region : "");
  const disk = h.disk || {};
  const facts = [
    ["version", h.version], ["up", dur(h.uptime_seconds)],
    ["data", h.data_dir], ["disk", bytes(disk.data_bytes) + (disk.fs_total_bytes ? " · " + bytes(disk.fs_free_bytes) + " free of " + bytes(disk.fs_total_bytes) : "")],
    ["sync", h.sync + (h.sync_interval ? " " + h.sync_interval : "")],
    ["quic", h.listen.quic || "–"], ["writes", short(h.rates.records_per_sec) + " rec/s · " + bytes(h.rates.bytes_per_sec) + "/s"],
  ];
  $("hub-facts").innerHTML = facts.map(([k, v]) => `<div><dt>${esc(k)}</dt><dd data-fact="${esc(k)}">${esc(v)}</dd></div>`).join("");
}

function ratePoints(r, key) { return r ? r.t.map((t, i) => [t, r[key][i]]) : []; }
function lastOf(a) { return a && a.length ? a[a.length - 1] : 0; }

function renderStreams(list, rates) {
  const byName = {};
  for (const r of rates.streams) byName[r.name] = r;
  let total = 0, size = 0;
  const rows = list.streams.map(s => {
    total += s.records; size += s.bytes;
    const r = byName[s.name];
    return `<tr data-stream="${esc(s.name)}" class="${s.name === selected ? "sel" : ""}">` +
      `<td class="name mono">${esc(s.name)}</td><td>${s.config.shards}</td><td class="records">${num(s.records)}</td>` +
      `<td class="bytes">${bytes(s.bytes)}</td>` +
      `<td class="rrate">${spark(ratePoints(r, "records_per_sec"), "r")}<span class="rate">${short(lastOf(r && r.records_per_sec))}/s</span></td>` +
      `<td class="brate">${spark(ratePoints(r, "bytes_per_sec"), "b")}<span class="rate">${bytes(lastOf(r && r.bytes_per_sec))}/s</span></td>` +
      `<td>${s.config.retention === "0s" ? "forever" : esc(s.config.retention)}${s.config.max_bytes ? " · " + bytes(s.config.max_bytes) : ""}${s.config.compact ? " · compact" : ""}</td>` +
      `<td>${esc(s.config.replicate)}</td></tr>`;
  });
  $("streams").innerHTML = rows.join("") || `<tr><td colspan="8" class="muted">no streams yet: hub stream create NAME</td></tr>`;
  $("streams-summary").textContent = list.streams.length + " · " + num(total) + " records · " + bytes(size);
}

function renderDetail(s, rate, tail, windowMs) {
  $("sel-name").textContent = s.name;
  $("sel-meta").textContent = s.config.shards + " shard" + (s.config.shards === 1 ? "" : "s") + " · " +
    num(s.records) + " records · " + bytes(s.bytes) + " · incarnation " + s.incarnation.slice(0, 8);
  const rp = ratePoints(rate, "records_per_sec"), bp = ratePoints(rate, "bytes_per_sec");
  chart($("chart-records"), rp, windowMs, short);
  chart($("chart-bytes"), bp, windowMs, v => bytes(v).replace(" ", ""));
  $("chart-records-now").textContent = short(lastOf(rate && rate.records_per_sec)) + "/s";
  $("chart-bytes-now").textContent = bytes(lastOf(rate && rate.bytes_per_sec)) + "/s";
  $("shards").innerHTML = (s.shards || []).map(sh => {
    const empty = sh.first_seq > sh.last_seq;
    const dmg = sh.damaged && sh.damaged.length ? ` <span class="badge bad" title="${esc(sh.damaged.map(d => d.from + ".." + d.to + ": " + d.error).join("\n"))}">${sh.damaged.length} damaged</span>` : "";
    return `<tr data-shard="${sh.shard}"><td>${sh.shard}${dmg}</td><td class="mono">${sh.hash_start}–${sh.hash_end}</td>` +
      `<td>${empty ? "–" : num(sh.first_seq)}</td><td class="last-seq">${num(sh.last_seq)}</td><td>${num(sh.records)}</td>` +
      `<td>${bytes(sh.bytes)}</td><td>${ago(sh.last_ingest)}</td></tr>`;
  }).join("");
  $("users").textContent = s.users && s.users.length ? "used by " + s.users.join(", ") : "";
  if (tail && !tailPaused) {
    const show = r => r.tombstone ? "∅ tombstone" : r.value !== undefined && r.value !== "" ? r.value : r.value_base64 ? "base64:" + r.value_base64 : "";
    $("tail").innerHTML = tail.records.slice().reverse().map(r =>
      `<tr><td>${esc(new Date(r.ingest_time).toLocaleTimeString())}</td><td>${r.shard}/${r.seq}</td>` +
      `<td>${esc(r.key || (r.key_base64 ? "base64:" + r.key_base64 : "–"))}</td>` +
      `<td class="value" title="${esc(r.value_size + " bytes" + (r.origin ? " · origin " + r.origin : ""))}">${esc(show(r))}${r.truncated ? "…" : ""}</td></tr>`
    ).join("") || `<tr><td colspan="4" class="muted">no records yet</td></tr>`;
  }
}

function renderPlugins(list) {
  $("plugins").innerHTML = list.map(p => {
    const why = p.quarantine_reason || p.waiting || (p.paused ? p.pause_reason : "") || "";
    let calls = 0, t = 0;
    for (const sh of p.shards || []) { calls += sh.calls; t += sh.call_time_avg * sh.calls; }
    return `<tr data-plugin="${esc(p.name)}"><td class="mono">${esc(p.name)} <span class="muted">v${p.version}</span></td>` +
      `<td class="l state"><span class="badge ${esc(p.status)}">${esc(p.status)}</span>${why ? `<span class="why">${esc(why)}</span>` : ""}</td>` +
      `<td class="l mono">${esc((p.inputs || []).join(", "))} → ${esc((p.outputs || []).join(", ") || "–")}</td>` +
      `<td>${num(p.lag)}</td><td class="in">${num(p.records_in)}</td><td class="out">${num(p.records_out)}</td>` +
      `<td class="${p.errors ? "err-n" : ""}">${num(p.errors)}${p.timeouts ? " (" + num(p.timeouts) + " timeouts)" : ""}</td>` +
      `<td class="${p.dead_lettered ? "err-n" : ""}">${num(p.dead_lettered)}${p.dead_letter ? ` <span class="muted">→ ${esc(p.dead_letter)}</span>` : ""}</td>` +
      `<td>${calls ? callTime(t / calls) : "–"} <span class="muted">${num(calls)} calls</span></td></tr>`;
  }).join("") || `<tr><td colspan="9" class="muted">no plugins deployed: hub plugin deploy</td></tr>`;
}

function renderGroups(groups) {
  $("groups").innerHTML = groups.map(g => {
    const members = (g.members || []).map(m =>
      `<span class="chip${m.connected ? "" : " off"}" title="${esc(m.remote + " · joined " + ago(m.joined))}">${esc(m.id)}</span>`).join("") || `<span class="muted">none</span>`;
    const leases = (g.shards || []).map(s =>
      `<span class="chip${s.owner ? "" : " off"}" title="${esc("committed " + s.committed + " of " + s.last_seq + (s.epoch ? " · epoch " + s.epoch : ""))}">${s.shard}→${esc(s.owner || s.state)} <span class="muted">${num(s.lag)}</span></span>`).join("");
    return `<tr data-group="${esc(g.name)}"><td class="mono">${esc(g.name)}${g.stale ? ' <span class="badge bad">stale</span>' : ""}</td>` +
      `<td class="l mono">${esc(g.stream)}</td><td class="chips members">${members}</td><td class="chips">${leases}</td>` +
      `<td class="lag">${num(g.lag)}</td><td>${num(g.rebalances)}</td></tr>`;
  }).join("") || `<tr><td colspan="6" class="muted">no consumer groups</td></tr>`;
}

// The federation as this hub sees it: itself in the middle, every member
// around it, a link from each peer it pulls from labelled with the lag and
// gaps of what it pulls there.
function renderFederation(p) {
  const W = 520, H = 320, cx = W / 2, cy = H / 2;
  const others = p.members.filter(m => !m.self);
  const self = p.members.find(m => m.self) || {name: p.self, state: "alive", self: true};
  const pos = {[self.name]: [cx, cy]};
  others.forEach((m, i) => {
    // Spread around the middle; one peer to the right, two either side.
    const a = others.length === 1 ? 0 : -Math.PI / 2 + 2 * Math.PI * (i + 0.5) / others.length;
    pos[m.name] = [cx + Math.cos(a) * 190, cy + Math.sin(a) * 118];
  });
  const byPeer = {};
  for (const l of p.lag) {
    const e = byPeer[l.peer] || (byPeer[l.peer] = {records: 0, seconds: 0, gaps: 0, streams: 0});
    e.records += l.records; e.seconds = Math.max(e.seconds, l.seconds); e.gaps += l.gaps; e.streams++;
  }
  let s = "";
  for (const m of others) {
    const [x, y] = pos[m.name], e = byPeer[m.name];
    const cls = "link" + (e ? " pull" : " idle") + (e && e.gaps ? " gap" : "") + (m.tls_error ? " tls" : "");
    s += `<line class="${cls}" data-peer="${esc(m.name)}" x1="${x.toFixed(1)}" y1="${y.toFixed(1)}" x2="${cx}" y2="${cy}"/>`;
    const mx = (x + cx) / 2, my = (y + cy) / 2 - 4;
    if (m.tls_error) s += `<text class="lag bad" x="${mx.toFixed(1)}" y="${my.toFixed(1)}"><title>${esc(m.tls_error)}</title>TLS refused</text>`;
    else if (e) s += `<text class="lag${e.gaps ? " bad" : ""}" x="${mx.toFixed(1)}" y="${my.toFixed(1)}">${short(e.records)} behind · ${e.seconds.toFixed(1)}s${e.gaps ? " · " + e.gaps + " gaps" : ""}</text>`;
  }
  for (const m of [self, ...others]) {
    const [x, y] = pos[m.name];
    const sub = [m.site, m.region].filter(Boolean).join(" · ") || m.quic || "";
    const r = m.self ? 24 : 18;
    s += `<g class="node ${esc(m.state)}${m.self ? " self" : ""}" data-member="${esc(m.name)}"><title>${esc(m.name + " · " + m.state + (m.gossip ? " · gossip " + m.gossip : "") + (m.tags ? " · tags " + m.tags.join(",") : ""))}</title>` +
      `<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="${r}"/>` +
      `<text class="tag" x="${x.toFixed(1)}" y="${(y + 3.5).toFixed(1)}">${esc(m.self ? "this hub" : (m.tags || [])[0] || "")}</text>` +
      `<text class="name" x="${x.toFixed(1)}" y="${(y + r + 13).toFixed(1)}">${esc(m.name)}</text>` +
      `<text class="sub" x="${x.toFixed(1)}" y="${(y + r + 25).toFixed(1)}">${esc(m.state === "alive" ? sub : m.state)}</text></g>`;
  }
  if (!p.federated) s += `<text class="caption" x="${cx}" y="${H - 12}">not federated: no [gossip] bind in hub.toml</text>`;
  $("federation").innerHTML = s;
  const alive = p.members.filter(m => m.state === "alive").length;
  $("fed-summary").textContent = p.federated ? p.members.length + " members · " + alive + " alive · " + p.pulls.length + " pulls" : "single hub";
  $("fed-gaps").textContent = p.gaps.length ? "gaps: " + p.gaps.map(g => g.stream + " from " + g.origin + "/" + g.origin_shard + ": " + num(g.sequences) + " sequences (" + g.last + ")").join("; ") : "";
}

// One poll. Each section renders from its own request, so a failing
// endpoint leaves the others live; the status line says what failed.
let timer = 0, busy = false;
async function tick() {
  clearTimeout(timer);
  if (busy) { timer = setTimeout(tick, 200); return; }
  busy = true;
  const errors = [];
  const get = p => api(p).catch(e => { errors.push(e); return null; });
  try {
    const [hub, streams, rates, plugins, groups, peers] = await Promise.all(
      ["/v1/hub", "/v1/streams", "/v1/rates", "/v1/plugins", "/v1/groups", "/v1/peers"].map(get));
    if (hub) renderHub(hub);
    if (streams && rates) {
      if (!streams.streams.some(s => s.name === selected)) selected = streams.streams.length ? streams.streams[0].name : "";
      renderStreams(streams, rates);
    }
    $("stream-detail").hidden = !selected;
    if (selected && rates) {
      const enc = encodeURIComponent(selected);
      const [desc, tail] = await Promise.all([get("/v1/streams/" + enc), tailPaused ? null : get("/v1/streams/" + enc + "/tail?n=20&max_value=256")]);
      const windowMs = parseDur(rates.window);
      if (desc) renderDetail(desc, rates.streams.find(r => r.name === selected), tail, windowMs);
    }
    if (plugins) renderPlugins(plugins);
    if (groups) renderGroups((await Promise.all(groups.groups.slice(0, 50).map(g =>
      get("/v1/groups/" + encodeURIComponent(g.name))))).filter(Boolean));
    if (peers) renderFederation(peers);
  } finally {
    busy = false;
  }
  const st = $("status");
  const auth = errors.find(e => e instanceof AuthError);
  $("auth").hidden = !auth;
  if (errors.length) {
    st.textContent = auth ? "admin token needed" : "unreachable or failing: " + errors[0].message;
    st.className = "status err";
  } else {
    st.textContent = "live · " + new Date().toLocaleTimeString();
    st.className = "status";
  }
  if (!auth) timer = setTimeout(tick, POLL_MS);
}
// Go durations as the API writes them ("10m0s", "1h30m", "2s").
function parseDur(s) {
  let ms = 0;
  for (const [, v, u] of String(s).matchAll(/([\d.]+)(h|ms|m|s)/g)) ms += v * {h: 3600e3, m: 60e3, s: 1e3, ms: 1}[u];
  return ms || 600e3;
}
tick();
