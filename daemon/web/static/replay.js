// The replay page: the run's recorded frames on a seekable timeline, with the run's events
// beside them; a click on an event jumps to its moment.
"use strict";
(() => {
  const $ = (name) => document.querySelector(`[data-browserd-replay="${name}"]`);
  const base = location.pathname.replace(/\/$/, "");
  const screen = $("screen"), slider = $("timeline"), list = $("events"), clock = $("time");
  let frames = [], events = [], items = [], current = -1, timer = null, start = 0;

  const frameAt = (at) => {  // the last frame at or before `at` (binary search)
    let lo = 0, hi = frames.length - 1, found = 0;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (frames[mid].at <= at) { found = mid; lo = mid + 1; } else hi = mid - 1;
    }
    return found;
  };
  const fmt = (ms) => `${(ms / 1000).toFixed(1)} s`;

  function show(n) {
    if (!frames.length) return;
    n = Math.max(0, Math.min(frames.length - 1, n));
    current = n;
    slider.value = String(n);
    screen.dataset.frame = String(n);
    screen.src = `${base}/frame/${n}`;
    const at = frames[n].at;
    clock.textContent = `${fmt(at - start)} · frame ${n + 1}/${frames.length}`;
    let last = null;
    for (const item of items) {
      const past = Number(item.dataset.at) <= at;
      item.dataset.past = String(past);
      item.dataset.current = "false";
      if (past) last = item;
    }
    if (last) { last.dataset.current = "true"; last.scrollIntoView({ block: "nearest" }); }
  }

  function summary(e) {
    const d = e.data || {};
    return [e.status, d.url, d.method, d.action, d.name, d.text, d.message, d.reason, d.end_reason]
      .filter((b) => b !== undefined && b !== null && b !== "").join(" ").slice(0, 200);
  }

  function renderEvents() {
    const filter = $("filter").value.trim();
    list.replaceChildren();
    items = [];
    for (const e of events) {
      if (filter && !e.type.includes(filter)) continue;
      const item = document.createElement("li");
      item.textContent = `${fmt(e.at - start)} ${e.type} ${summary(e)}`;
      item.dataset.at = String(e.at);
      item.dataset.type = e.type;
      item.dataset.seq = String(e.seq);
      item.dataset.level = e.type === "alert" || /error|failed|crash/.test(e.type) ? "error" : "info";
      item.dataset.browserdReplay = "event";
      item.addEventListener("click", () => { pause(); jumpTo(e.at); });
      list.append(item);
      items.push(item);
    }
    if (current >= 0) show(current);
  }

  function jumpTo(at) {
    if (!frames.length) return;
    show(frameAt(at));
    for (const item of items) if (Number(item.dataset.at) === at) item.dataset.current = "true";
  }

  function pause() { clearTimeout(timer); timer = null; $("play").textContent = "play"; }
  function play() {
    if (!frames.length) return;
    if (current >= frames.length - 1) show(0);
    $("play").textContent = "pause";
    const step = () => {
      if (current >= frames.length - 1) return pause();
      const gap = frames[current + 1].at - frames[current].at;
      timer = setTimeout(() => { show(current + 1); step(); }, Math.min(Math.max(gap, 0), 2000));
    };
    step();
  }

  $("play").addEventListener("click", () => (timer ? pause() : play()));
  slider.addEventListener("input", () => { pause(); show(Number(slider.value)); });
  $("filter").addEventListener("input", renderEvents);

  fetch(`${base}/data`, { cache: "no-store" }).then((r) => {
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    return r.json();
  }).then((data) => {
    frames = data.frames; events = data.events;
    start = Math.min(frames.length ? frames[0].at : Infinity, events.length ? events[0].at : Infinity);
    if (!Number.isFinite(start)) start = 0;
    $("run").textContent = `${data.run.id} · ${data.run.status}${data.run.end_reason ? " (" + data.run.end_reason + ")" : ""}`;
    $("status").textContent = `${frames.length} frames · ${events.length} events`;
    slider.max = String(Math.max(0, frames.length - 1));
    $("empty").hidden = frames.length > 0;
    renderEvents();
    document.body.dataset.state = "ready";
    if (frames.length) show(0);
  }).catch((err) => {
    document.body.dataset.state = "failed";
    $("status").textContent = `cannot load this replay: ${err.message}`;
  });
})();
