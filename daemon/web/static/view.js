// The live view page: shows the frames the daemon sends over the same-origin WebSocket and,
// in control mode, sends the mouse, wheel and keys back. Coordinates go as fractions of the
// screen element, so the daemon scales them to the page whatever this window's size.
"use strict";
(() => {
  const $ = (name) => document.querySelector(`[data-browserd-view="${name}"]`);
  const screen = $("screen"), tabsEl = $("tabs"), urlEl = $("url"), modeEl = $("mode"),
    statusEl = $("status");
  const wsUrl = location.href.split(/[?#]/)[0].replace(/\/$/, "").replace(/^http/, "ws") + "/ws";
  const ws = new WebSocket(wsUrl);
  let control = false, ended = false, tabs = [], shown = null;

  const send = (message) => { if (control && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message)); };
  const modifiers = (e) => (e.altKey ? 1 : 0) | (e.ctrlKey ? 2 : 0) | (e.metaKey ? 4 : 0) | (e.shiftKey ? 8 : 0);
  const where = (e) => {
    const box = screen.getBoundingClientRect();
    return { x: (e.clientX - box.left) / box.width, y: (e.clientY - box.top) / box.height };
  };
  const BUTTONS = ["left", "middle", "right", "back", "forward"];

  function end(reason) {
    if (ended) return;
    ended = true;
    document.body.dataset.state = "ended";
    screen.removeAttribute("src");
    statusEl.textContent = `This view has ended (${reason}).`;
  }

  function renderTabs() {
    tabsEl.replaceChildren();
    for (const tab of tabs) {
      const el = document.createElement("div");
      el.className = "tab";
      el.dataset.shown = String(tab.id === shown);
      el.dataset.targetId = tab.id;
      const title = document.createElement("span");
      title.textContent = tab.title || tab.url || "(blank)";
      title.title = tab.url;
      el.append(title);
      if (control) {
        title.addEventListener("click", () => send({ t: "tab", op: "activate", id: tab.id }));
        const close = document.createElement("button");
        close.textContent = "×";
        close.title = "close this tab";
        close.dataset.browserdView = "close-tab";
        close.addEventListener("click", () => send({ t: "tab", op: "close", id: tab.id }));
        el.append(close);
      }
      tabsEl.append(el);
    }
    if (control) {
      const open = document.createElement("button");
      open.textContent = "+";
      open.title = "open a new tab";
      open.dataset.browserdView = "open-tab";
      open.addEventListener("click", () => send({ t: "tab", op: "open", url: "about:blank" }));
      tabsEl.append(open);
    }
    const current = tabs.find((tab) => tab.id === shown);
    urlEl.textContent = current ? current.url : "";
  }

  ws.addEventListener("message", (event) => {
    const m = JSON.parse(event.data);
    if (m.t === "hello") {
      control = m.control;
      document.body.dataset.mode = control ? "control" : "watch";
      document.body.dataset.state = "live";
      modeEl.textContent = control ? "control" : "watch";
      document.title = `${m.space}/${m.runtime} · browserd ${control ? "control" : "view"}`;
    } else if (m.t === "frame") {
      screen.dataset.pendingSeq = m.seq;
      screen.src = "data:image/jpeg;base64," + m.data;
    } else if (m.t === "tabs") {
      tabs = m.tabs; shown = m.shown;
      renderTabs();
    } else if (m.t === "end") {
      end(m.reason);
    }
  });
  ws.addEventListener("close", () => end("disconnected"));
  // The frame counts as shown once decoded: tests and the bench read these. The wall clock,
  // as the runtime page's Date.now() that the bench compares it with: timeOrigin + now()
  // follows the monotonic clock, which drifted from the wall clock by 3 ms a second on a VM.
  screen.addEventListener("load", () => {
    screen.dataset.frameSeq = screen.dataset.pendingSeq;
    screen.dataset.frameShownAt = String(Date.now());
  });

  let moveQueued = null;
  function mouse(type, e) {
    if (!control || !screen.src) return;
    const p = where(e);
    send({ t: "mouse", type, x: p.x, y: p.y, button: type === "move" ? "none" : (BUTTONS[e.button] || "none"),
      buttons: e.buttons, clicks: type === "move" ? 0 : e.detail || 1, modifiers: modifiers(e) });
  }
  screen.addEventListener("mousedown", (e) => { screen.focus(); mouse("down", e); e.preventDefault(); });
  screen.addEventListener("mouseup", (e) => { mouse("up", e); e.preventDefault(); });
  screen.addEventListener("mousemove", (e) => {
    if (moveQueued === null) requestAnimationFrame(() => { mouse("move", moveQueued); moveQueued = null; });
    moveQueued = e;
  });
  screen.addEventListener("contextmenu", (e) => { if (control) e.preventDefault(); });
  screen.addEventListener("wheel", (e) => {
    if (!control) return;
    e.preventDefault();
    const p = where(e);
    send({ t: "wheel", x: p.x, y: p.y, dx: e.deltaX, dy: e.deltaY, modifiers: modifiers(e) });
  }, { passive: false });
  const key = (type) => (e) => {
    if (!control) return;
    e.preventDefault();
    send({ t: "key", type, key: e.key, code: e.code, keyCode: e.keyCode, modifiers: modifiers(e) });
  };
  screen.addEventListener("keydown", key("down"));
  screen.addEventListener("keyup", key("up"));
  screen.addEventListener("paste", (e) => {
    if (!control) return;
    e.preventDefault();
    send({ t: "text", text: e.clipboardData.getData("text/plain") });
  });
})();
