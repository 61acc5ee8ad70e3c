// Shared helpers for the console pages. No external requests: everything goes to this server.
"use strict";

const LC = (() => {
  function toast(msg, bad) {
    const el = document.getElementById("toast");
    if (!el) return;
    el.textContent = msg;
    el.className = "toast" + (bad ? " bad" : "");
    el.hidden = false;
    clearTimeout(el._t);
    el._t = setTimeout(() => { el.hidden = true; }, 3500);
  }

  async function post(url, body) {
    const r = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}),
    });
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    if (!r.ok) {
      const msg = (data && data.detail) ? (typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail))
        : ("HTTP " + r.status);
      throw new Error(msg);
    }
    return data;
  }

  async function get(url) {
    const r = await fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } });
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    if (!r.ok) throw new Error((data && typeof data.detail === "string") ? data.detail : ("HTTP " + r.status));
    return data;
  }

  // Build DOM without innerHTML: h("div", {class: "x", data: {id: 1}}, "text", child, [more]).
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "data") for (const [dk, dv] of Object.entries(v)) el.dataset[dk] = dv;
      else if (k in el && typeof v !== "string") el[k] = v;
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.appendChild(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }

  function mmss(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    const m = Math.floor(seconds / 60), s = seconds % 60;
    if (m >= 60) return Math.floor(m / 60) + ":" + String(m % 60).padStart(2, "0") + ":" + String(s).padStart(2, "0");
    return m + ":" + String(s).padStart(2, "0");
  }

  const SVGNS = "http://www.w3.org/2000/svg";
  // Customer mood, -1 (angry) … 1 (happy), as a small line with a zero baseline.
  function sparkline(values, w, h) {
    w = w || 132; h = h || 34;
    const svg = document.createElementNS(SVGNS, "svg");
    svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    svg.setAttribute("class", "sparkline");
    const mid = h / 2;
    const base = document.createElementNS(SVGNS, "line");
    base.setAttribute("x1", 0); base.setAttribute("x2", w); base.setAttribute("y1", mid); base.setAttribute("y2", mid);
    base.setAttribute("class", "spark-base");
    svg.appendChild(base);
    if (!values || values.length === 0) {
      const t = document.createElementNS(SVGNS, "text");
      t.setAttribute("x", w / 2); t.setAttribute("y", mid + 4); t.setAttribute("text-anchor", "middle");
      t.setAttribute("class", "spark-none"); t.textContent = "no customer turns yet";
      svg.appendChild(t);
      return svg;
    }
    const n = values.length;
    const pts = values.map((v, i) => [n === 1 ? w - 3 : 3 + (w - 6) * i / (n - 1), mid - (h / 2 - 3) * Math.max(-1, Math.min(1, v))]);
    const area = document.createElementNS(SVGNS, "path");
    area.setAttribute("d", `M${pts[0][0]},${mid} ` + pts.map(p => `L${p[0].toFixed(1)},${p[1].toFixed(1)}`).join(" ") + ` L${pts[n - 1][0]},${mid} Z`);
    const last = values[n - 1];
    area.setAttribute("class", "spark-area " + (last < -0.25 ? "neg" : last > 0.25 ? "pos" : "neu"));
    svg.appendChild(area);
    const line = document.createElementNS(SVGNS, "path");
    line.setAttribute("d", pts.map((p, i) => (i ? "L" : "M") + p[0].toFixed(1) + "," + p[1].toFixed(1)).join(" "));
    line.setAttribute("class", "spark-line " + (last < -0.25 ? "neg" : last > 0.25 ? "pos" : "neu"));
    svg.appendChild(line);
    const dot = document.createElementNS(SVGNS, "circle");
    dot.setAttribute("cx", pts[n - 1][0]); dot.setAttribute("cy", pts[n - 1][1]); dot.setAttribute("r", 2.6);
    dot.setAttribute("class", "spark-dot " + (last < -0.25 ? "neg" : last > 0.25 ? "pos" : "neu"));
    svg.appendChild(dot);
    const title = document.createElementNS(SVGNS, "title");
    title.textContent = "Customer mood now: " + (last < -0.25 ? "negative" : last > 0.25 ? "positive" : "neutral");
    svg.appendChild(title);
    return svg;
  }

  // A websocket that reconnects with back-off; onMessage gets parsed JSON.
  function live(path, onMessage, onState) {
    let ws = null, tries = 0, ping = null;
    function connect() {
      const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
      ws = new WebSocket(url);
      ws.onopen = () => { tries = 0; onState && onState(true); ping = setInterval(() => { try { ws.send("ping"); } catch (e) {} }, 20000); };
      ws.onmessage = (e) => { try { onMessage(JSON.parse(e.data)); } catch (err) { console.error(err); } };
      ws.onclose = (e) => {
        clearInterval(ping);
        onState && onState(false, e.code);
        if (e.code === 4401 || e.code === 4403) { location.href = "/console/login?next=" + encodeURIComponent(location.pathname); return; }
        tries += 1;
        setTimeout(connect, Math.min(5000, 300 * tries));
      };
    }
    connect();
    return { close: () => ws && ws.close() };
  }

  return { toast, get, post, h, mmss, sparkline, live };
})();
