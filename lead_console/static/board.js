// The live board: a snapshot, then deltas over /v1/board/live; cards ranked by the server.
"use strict";

(() => {
  const list = document.getElementById("cards");
  const tpl = document.getElementById("card-tpl");
  const empty = document.getElementById("empty");
  const liveEl = document.getElementById("live");
  const filterEl = document.getElementById("filter");
  const cards = new Map();          // call_id -> {data, el}
  let order = [];
  let clockSkew = 0;                // server clock - browser clock (ms)

  const STATE_WORDS = { acknowledged: "acknowledged", joining: "lead joining", handoff: "handed off", dismissed: "dismissed" };

  function topSignal(d) {
    return d.signals.find(s => s.state === "open") || d.signals[0] || null;
  }

  function render(c) {
    const d = c.data, el = c.el;
    el.dataset.callId = d.call_id;
    el.className = "card lvl-" + d.level + (d.joining ? " is-joining" : "");
    el.querySelector(".risk-n").textContent = Math.round(d.risk * 100);
    el.querySelector(".risk-l").textContent = d.level;
    const a = el.querySelector(".agent-name");
    a.textContent = d.agent_id;
    a.href = "/console/calls/" + encodeURIComponent(d.call_id);
    a.title = "Open call " + d.call_id;
    el.querySelector(".queue").textContent = d.queue;
    el.querySelector(".channel").textContent = d.channel === "voice" ? "voice" : "chat";
    const badges = el.querySelector(".badges");
    badges.replaceChildren();
    if (d.joining) badges.append(badge("joining", d.joining + " joining"));
    if (d.speaking) badges.append(badge("speaking", "speaking…"));
    if (d.cues) badges.append(badge("cues", d.cues + (d.cues === 1 ? " cue" : " cues") + " to agent"));
    const spark = el.querySelector(".spark");
    spark.replaceChildren(LC.sparkline(d.sentiment));
    const sigs = el.querySelector(".sigs");
    sigs.replaceChildren();
    if (!d.signals.length) {
      const li = document.createElement("li");
      li.className = "sig none";
      li.textContent = (d.dismissed ? "No open signals (" + d.dismissed + " dismissed)" : "No signals") + " — " +
        d.utterances + (d.utterances === 1 ? " turn" : " turns") + " so far";
      sigs.append(li);
    }
    for (const s of d.signals) {
      const li = document.createElement("li");
      li.className = "sig st-" + s.state + (s.alert ? " alert" : "");
      li.dataset.signalId = s.id;
      const head = document.createElement("div");
      head.className = "sig-head";
      const chip = document.createElement("span");
      chip.className = "chip k-" + s.kind;
      chip.textContent = s.label;
      head.append(chip);
      if (s.minute) { const m = document.createElement("span"); m.className = "minute"; m.textContent = s.minute; head.append(m); }
      const conf = document.createElement("span"); conf.className = "conf"; conf.textContent = Math.round(s.confidence * 100) + "%";
      conf.title = "confidence" + (s.tier ? " (confirmed by the larger model)" : "");
      head.append(conf);
      if (s.state !== "open") {
        const st = document.createElement("span"); st.className = "state";
        st.textContent = STATE_WORDS[s.state] + (s.by ? " · " + s.by : "");
        head.append(st);
      }
      li.append(head);
      if (s.excerpt) {
        const q = document.createElement("q"); q.className = "excerpt"; q.textContent = s.excerpt;
        li.append(q);
      }
      sigs.append(li);
    }
    const top = topSignal(d);
    const open = top && top.state === "open";
    el.querySelector(".act-join").disabled = !top || !!d.joining;
    el.querySelector(".act-join").textContent = d.joining ? "Joined" : "Join";
    el.querySelector(".act-ack").disabled = !open;
    el.querySelector(".act-dismiss").disabled = !open;
    const ho = el.querySelector(".act-handoff");
    const route = top && top.route;
    ho.hidden = !route || d.signals.some(s => s.state === "handoff");
    if (route) ho.textContent = route.label || ("Hand off to " + route.desk);
    tick(c);
    applyFilter(c);
  }

  function badge(cls, text) {
    const b = document.createElement("span");
    b.className = "badge b-" + cls; b.textContent = text;
    return b;
  }

  function tick(c) {
    const started = c.data.started_ms;
    const wall = started ? (Date.now() + clockSkew - started) / 1000 : 0;
    const secs = Math.max(wall, c.data.last_t || 0);    // a replay at speed runs ahead of the wall clock
    c.el.querySelector(".dur").textContent = LC.mmss(secs);
  }

  function applyFilter(c) {
    const f = filterEl.value.trim().toLowerCase();
    c.el.hidden = !!f && !(c.data.agent_id.toLowerCase().includes(f) || c.data.queue.toLowerCase().includes(f)
                          || c.data.call_id.toLowerCase().includes(f));
  }

  function upsert(d) {
    let c = cards.get(d.call_id);
    if (!c) {
      const el = tpl.content.firstElementChild.cloneNode(true);
      c = { data: d, el };
      cards.set(d.call_id, c);
      wire(c);
      el.classList.add("is-new");
      setTimeout(() => el.classList.remove("is-new"), 1200);
    } else {
      const before = new Set(c.data.signals.map(s => s.id));
      c.data = d;
      if (d.signals.some(s => !before.has(s.id))) {
        c.el.classList.remove("flash"); void c.el.offsetWidth; c.el.classList.add("flash");
      }
    }
    render(c);
  }

  function reorder(ids) {
    order = ids.filter(id => cards.has(id));
    const first = new Map();
    for (const id of order) first.set(id, cards.get(id).el.getBoundingClientRect().top);
    order.forEach((id, i) => {
      const el = cards.get(id).el;
      el.dataset.rank = i + 1;
      if (list.children[i] !== el) list.insertBefore(el, list.children[i] || null);
    });
    // FLIP: slide moved cards from where they were
    for (const id of order) {
      const el = cards.get(id).el;
      const dy = first.get(id) - el.getBoundingClientRect().top;
      if (dy && first.get(id) !== 0) {
        el.animate([{ transform: `translateY(${dy}px)` }, { transform: "none" }], { duration: 260, easing: "ease-out" });
      }
    }
    stats();
  }

  function remove(id) {
    const c = cards.get(id);
    if (!c) return;
    c.el.remove();
    cards.delete(id);
  }

  function stats() {
    let high = 0, open = 0, joining = 0;
    for (const { data } of cards.values()) {
      if (data.level === "high") high++;
      open += data.open_signals;
      if (data.joining) joining++;
    }
    document.getElementById("stat-active").textContent = cards.size;
    document.getElementById("stat-high").textContent = high;
    document.getElementById("stat-open").textContent = open;
    document.getElementById("stat-joining").textContent = joining;
    empty.hidden = cards.size > 0;
  }

  function onMessage(msg) {
    if (msg.server_ms) clockSkew = msg.server_ms - Date.now();
    if (msg.type === "snapshot") {
      for (const id of [...cards.keys()]) remove(id);
      for (const d of msg.cards) upsert(d);
      reorder(msg.order);
    } else if (msg.type === "delta") {
      for (const id of msg.removed) remove(id);
      for (const d of msg.cards) upsert(d);
      if (msg.order) reorder(msg.order);
      else {
        for (const d of msg.cards) {            // a new card with no order yet goes to the end
          const el = cards.get(d.call_id).el;
          if (!el.isConnected) list.append(el);
        }
        stats();
      }
    }
    window.__board = { updates: (window.__board ? window.__board.updates : 0) + 1, at: Date.now() };
  }

  function wire(c) {
    const el = c.el;
    const form = el.querySelector(".dismiss-form");
    el.querySelector(".acts").addEventListener("click", async (e) => {
      const btn = e.target.closest("button");
      if (!btn || !btn.dataset.action) return;
      const top = topSignal(c.data);
      if (!top) return;
      if (btn.dataset.action === "dismiss") { form.hidden = false; form.querySelector("select").focus(); return; }
      const body = { action: btn.dataset.action };
      if (body.action === "handoff" && top.route) body.desk = top.route.desk;
      await act(top.id, body, btn);
    });
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const top = topSignal(c.data);
      const reason = form.querySelector("select").value;
      if (!top || !reason) return;
      await act(top.id, { action: "dismissed", reason }, form.querySelector("button[type=submit]"));
      form.hidden = true;
    });
    form.querySelector(".cancel").addEventListener("click", () => { form.hidden = true; });
  }

  async function act(signalId, body, btn) {
    btn.disabled = true;
    try {
      await LC.post("/v1/signals/" + encodeURIComponent(signalId) + "/feedback", body);
      const words = { joining: "Marked as joining", acknowledged: "Acknowledged", dismissed: "Dismissed", handoff: "Hand-off requested" };
      LC.toast(words[body.action] || "Saved");
    } catch (err) {
      LC.toast("Could not save: " + err.message, true);
      btn.disabled = false;
    }
  }

  filterEl.addEventListener("input", () => { for (const c of cards.values()) applyFilter(c); });
  setInterval(() => { for (const c of cards.values()) tick(c); }, 1000);
  LC.live("/v1/board/live", onMessage, (up) => {
    liveEl.textContent = up ? "live" : "reconnecting…";
    liveEl.className = "live " + (up ? "on" : "off");
  });
})();
