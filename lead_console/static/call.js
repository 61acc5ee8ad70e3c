// Call view: the server renders what is stored; the socket adds what happens next.
"use strict";

(() => {
  const data = JSON.parse(document.getElementById("call-data").textContent);
  const transcript = document.getElementById("transcript");
  const partials = document.getElementById("partials");
  const signals = document.getElementById("signals");
  const cues = document.getElementById("cues");
  let stick = true;

  transcript.addEventListener("scroll", () => {
    stick = transcript.scrollTop + transcript.clientHeight >= transcript.scrollHeight - 40;
  });
  function scroll() { if (stick) transcript.scrollTop = transcript.scrollHeight; }
  scroll();

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }

  function addTurn(u) {
    if (transcript.querySelector(`[data-seq="${u.seq}"]`)) return;
    const row = el("div", "turn " + u.speaker);
    row.dataset.seq = u.seq; row.id = "u" + u.seq;
    row.append(el("span", "tmin", u.minute || ""));
    const b = el("div", "bubble");
    b.append(el("span", "who-l", u.speaker), document.createTextNode(u.text));
    row.append(b);
    transcript.insertBefore(row, partials);
    const none = document.getElementById("no-turns"); if (none) none.remove();
    const p = partials.querySelector(`[data-speaker="${u.speaker}"]`); if (p) p.remove();
    scroll();
  }

  function addAction(a) {
    if (transcript.querySelector(`[data-seq="${a.seq}"]`)) return;
    const row = el("div", "turn action"); row.dataset.seq = a.seq;
    row.append(el("span", "tmin", a.minute || ""), el("div", "bubble", "⚙ agent action: " + a.name));
    transcript.insertBefore(row, partials);
    scroll();
  }

  function setPartial(p) {
    let row = partials.querySelector(`[data-speaker="${p.speaker}"]`);
    if (!row) {
      row = el("div", "turn partial " + p.speaker); row.dataset.speaker = p.speaker;
      row.append(el("span", "tmin", p.minute || ""), el("div", "bubble"));
      partials.append(row);
    }
    const b = row.querySelector(".bubble");
    b.replaceChildren(el("span", "who-l", p.speaker + " · speaking"), document.createTextNode(p.text));
    scroll();
  }

  function addSignal(s) {
    if (document.querySelector(`[data-signal-id="${s.id}"]`)) return;
    if (s.audience === "agent") {
      const c = el("div", "cue"); c.dataset.signalId = s.id;
      c.append(el("div", "cue-msg", s.message || s.label), el("div", "muted small", s.label + (s.minute ? " · " + s.minute : "")),
               el("div", "cue-resp", "No response from the agent yet"));
      cues.append(c);
      document.getElementById("no-cues").hidden = true;
      return;
    }
    const li = el("li", s.risk >= 0.7 ? "risk-high" : s.risk >= 0.4 ? "risk-med" : "");
    li.dataset.signalId = s.id;
    const head = el("div", "sig-head");
    head.append(el("span", "chip k-" + s.kind, s.label));
    if (s.minute) head.append(el("span", "minute", s.minute));
    head.append(el("span", "conf", Math.round(s.confidence * 100) + "%"));
    li.append(head);
    if (s.excerpt) li.append(el("q", "excerpt", s.excerpt));
    if (s.message) li.append(el("div", "muted small", s.message));
    li.append(el("div", "fbs"));
    const acts = el("div", "tl-acts");
    acts.append(button("joining", "Join"), button("acknowledged", "Acknowledge"), button("dismissed", "Dismiss…"));
    if (s.route) { const h = button("handoff", s.route.label || "Hand off", "primary"); h.dataset.desk = s.route.desk; acts.append(h); }
    li.append(acts);
    signals.prepend(li);
    document.getElementById("no-signals").hidden = true;
  }

  function button(action, text, cls) {
    const b = el("button", cls || "", text); b.dataset.action = action; return b;
  }

  function addFeedback(f) {
    const li = document.querySelector(`[data-signal-id="${f.signal_id}"]`);
    if (!li) return;
    const box = li.querySelector(".fbs");
    if (box) box.append(el("div", "fb", f.actor + ": " + f.action + (f.reason ? " — " + f.reason : "")));
    if (li.classList.contains("cue")) {
      const r = li.querySelector(".cue-resp");
      r.textContent = "Agent: " + f.action + (f.reason ? " — " + f.reason : "");
      r.className = "cue-resp r-" + f.action;
    }
    if (f.action !== "joining") li.querySelectorAll("[data-action=acknowledged],[data-action=dismissed]").forEach(b => { b.disabled = true; });
    if (f.action === "handoff") li.querySelectorAll("[data-action=handoff]").forEach(b => b.remove());
    const u = transcript.querySelector(".turn.hl"); if (u) u.classList.remove("hl");
  }

  signals.addEventListener("click", async (e) => {
    const btn = e.target.closest("button[data-action]");
    if (!btn) return;
    const li = btn.closest("li");
    const body = { action: btn.dataset.action };
    if (body.action === "dismissed") {
      if (!li.querySelector(".dismiss-form")) {
        const f = el("form", "dismiss-form");
        const sel = el("select"); sel.name = "reason"; sel.required = true;
        for (const o of ["", "False alarm", "Already handled by the agent", "Not worth a lead's time", "Customer misunderstood"]) {
          const opt = el("option", "", o || "Why dismiss?"); opt.value = o; sel.append(opt);
        }
        f.append(sel, button("", "Dismiss"));
        f.lastChild.type = "submit";
        f.addEventListener("submit", async (ev) => {
          ev.preventDefault();
          if (!sel.value) return;
          await send(li.dataset.signalId, { action: "dismissed", reason: sel.value }, f.lastChild);
          f.remove();
        });
        li.append(f);
      }
      return;
    }
    if (body.action === "handoff") body.desk = btn.dataset.desk;
    await send(li.dataset.signalId, body, btn);
  });

  async function send(id, body, btn) {
    btn.disabled = true;
    try {
      await LC.post("/v1/signals/" + encodeURIComponent(id) + "/feedback", body);
      LC.toast({ joining: "Marked as joining", acknowledged: "Acknowledged", dismissed: "Dismissed", handoff: "Hand-off requested" }[body.action]);
    } catch (err) {
      LC.toast("Could not save: " + err.message, true);
      btn.disabled = false;
    }
  }

  // jump from a signal's minute mark to the line it points at
  signals.addEventListener("click", (e) => {
    const a = e.target.closest("a.minute");
    if (!a) return;
    const u = document.querySelector(a.getAttribute("href"));
    if (u) { e.preventDefault(); transcript.querySelectorAll(".hl").forEach(x => x.classList.remove("hl")); u.classList.add("hl"); u.scrollIntoView({ block: "center", behavior: "smooth" }); }
  });

  // what happened between rendering the page and the socket opening comes from the API
  async function catchUp() {
    try {
      const r = await fetch("/v1/calls/" + encodeURIComponent(data.call_id), { credentials: "same-origin" });
      if (!r.ok) return;
      const call = await r.json();
      for (const u of call.utterances) addTurn({ seq: u.seq, speaker: u.speaker, text: u.text, minute: mmssOrNull(u.t_start) });
      if (call.status === "ended") onMessage({ items: [{ type: "ended" }] });
    } catch (e) { /* the live feed carries on */ }
  }
  function mmssOrNull(t) { return t === null || t === undefined ? null : LC.mmss(t); }

  function onMessage(msg) {
    if (msg.type === "resync") { location.reload(); return; }
    if (msg.type === "hello") {
      if (msg.card && msg.card.last_seq > data.last_seq) catchUp();
      else if (!msg.card) catchUp();
    }
    if (msg.card) document.getElementById("duration").textContent = msg.card.duration || "0:00";
    for (const it of msg.items || []) {
      if (it.type === "utterance") addTurn(it);
      else if (it.type === "partial") setPartial(it);
      else if (it.type === "action") addAction(it);
      else if (it.type === "signal") addSignal(it.signal);
      else if (it.type === "feedback") addFeedback(it);
      else if (it.type === "ended") {
        const st = document.getElementById("status"); st.textContent = "ended"; st.className = "pill ended";
        partials.replaceChildren();
        document.querySelectorAll(".tl-acts").forEach(x => x.remove());
      }
    }
  }

  if (data.status === "active") LC.live("/v1/console/calls/" + encodeURIComponent(data.call_id) + "/live", onMessage);
})();
