// The dashboard: everything arrives over the same-origin WebSocket as the daemon pushes it;
// the page asks for a runtime's runs, a run's events (followed live), stops and live views.
"use strict";
(() => {
  const $ = (name) => document.querySelector(`[data-browserd-ui="${name}"]`);
  const base = location.pathname.replace(/\/$/, "");
  const ws = new WebSocket(location.origin.replace(/^http/, "ws") + base + "/ws");
  let selected = null, followed = null;
  const el = (tag, text, attrs) => {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  };
  const send = (m) => ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify(m));
  const mib = (n) => (n === null || n === undefined ? "" : (n / 1048576).toFixed(0) + " MiB");

  function button(label, name, onClick) {
    const b = el("button", label, { "data-browserd-ui": name });
    b.addEventListener("click", (e) => { e.stopPropagation(); onClick(); });
    return b;
  }

  function renderRuntimes(runtimes) {
    const body = $("runtimes").tBodies[0];
    body.replaceChildren();
    for (const rt of runtimes) {
      const s = rt.stats || {};
      const row = el("tr", null, { "data-runtime-id": rt.id, "data-name": rt.name,
        "data-status": rt.status, "data-selected": String(rt.id === selected) });
      row.append(el("td", rt.space), el("td", rt.name),
        el("td", rt.status, { class: "status-" + rt.status }),
        el("td", s.cpu_percent ?? ""), el("td", mib(s.memory_bytes)), el("td", s.processes ?? ""),
        el("td", s.targets ?? ""), el("td", rt.viewers));
      const actions = el("td");
      if (rt.status === "active") {
        actions.append(button("watch", "view", () => send({ t: "view", runtime_id: rt.id })),
          button("take over", "control", () => send({ t: "view", runtime_id: rt.id, control: true })),
          button("stop", "stop", () => send({ t: "stop", runtime_id: rt.id })));
      }
      row.append(actions);
      row.addEventListener("click", () => select(rt));
      body.append(row);
    }
  }

  function select(rt) {
    selected = rt.id;
    $("runtime-name").textContent = `${rt.space}/${rt.name}`;
    for (const row of $("runtimes").tBodies[0].rows) row.dataset.selected = String(row.dataset.runtimeId === rt.id);
    send({ t: "select", runtime_id: rt.id });
  }

  function renderRuns(runs) {
    const list = $("runs");
    list.replaceChildren();
    for (const run of runs) {
      const item = el("li", `${run.id} · ${run.status}${run.end_reason ? " (" + run.end_reason + ")" : ""} · ${run.started_at || ""} · ${run.counts.events} events`,
        { "data-run-id": run.id, "data-selected": String(run.id === followed) });
      item.addEventListener("click", () => follow(run.id));
      list.append(item);
    }
    if (followed === null && runs.length) follow(runs[0].id);
  }

  function follow(runId) {
    followed = runId;
    $("run-id").textContent = runId;
    for (const item of $("runs").children) item.dataset.selected = String(item.dataset.runId === runId);
    send({ t: "follow", run_id: runId });
  }

  function summary(e) {
    const d = e.data || {};
    const bits = [d.status || e.status, d.url, d.method, d.action, d.connection_id, d.message, d.reason, d.end_reason];
    return bits.filter((b) => b !== undefined && b !== null && b !== "").join(" ");
  }

  function addEvents(events, reset) {
    const list = $("events");
    if (reset) list.replaceChildren();
    for (const e of events) {
      const level = e.type === "alert" || /failed|error/.test(e.type) ? "error" : "info";
      list.append(el("li", `${e.time} #${e.seq} ${e.type} ${summary(e)}`,
        { "data-seq": e.seq, "data-type": e.type, "data-level": level }));
    }
    list.scrollTop = list.scrollHeight;
  }

  function renderArtifacts(runId, artifacts) {
    const list = $("artifacts");
    list.replaceChildren();
    for (const a of artifacts) {
      const link = el("a", `${a.name || a.id}`, { href: `${base}/artifact/${runId}/${a.id}`,
        download: a.name || a.id, "data-artifact-id": a.id });
      const item = el("li", null);
      item.append(link, document.createTextNode(` · ${a.kind} · ${a.size_bytes ?? ""} bytes`));
      list.append(item);
    }
  }

  ws.addEventListener("open", () => { document.body.dataset.state = "live"; $("status").textContent = "live"; });
  ws.addEventListener("close", () => { document.body.dataset.state = "closed"; $("status").textContent = "disconnected (reload to reconnect)"; });
  ws.addEventListener("message", (event) => {
    const m = JSON.parse(event.data);
    if (m.t === "runtimes") renderRuntimes(m.runtimes);
    else if (m.t === "runs" && m.runtime_id === selected) renderRuns(m.runs);
    else if (m.t === "events" && m.run_id === followed) addEvents(m.events, m.reset);
    else if (m.t === "events_lost" && m.run_id === followed) follow(followed);
    else if (m.t === "artifacts" && m.run_id === followed) renderArtifacts(m.run_id, m.artifacts);
    else if (m.t === "view") {
      const link = el("a", m.control ? "open the takeover page" : "open the live view",
        { href: m.url, target: "_blank", rel: "noopener", "data-browserd-ui": "open-view" });
      $("view-link").replaceChildren(link);
      window.open(m.url, "_blank", "noopener");
    } else if (m.t === "error") $("status").textContent = `${m.code}: ${m.message}`;
  });
})();
