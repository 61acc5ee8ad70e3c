// Review queue: pick a note, read it, then approve, edit (kept as a diff) or reject it (with a reason).
// Post-call owns the notes: the note comes from GET /v1/calls/{id}/note and the decision goes to
// POST /v1/calls/{id}/note/review. This page only shows them and sends what the lead decided.
"use strict";

(() => {
  const data = JSON.parse(document.getElementById("review-data").textContent);
  const queue = document.getElementById("queue");
  const pane = document.getElementById("note");
  if (!queue || !pane) return;
  const { h } = LC;
  const LABELS = data.labels || {}, RESULTS = data.results || {}, TIERS = data.tiers || {};
  const STATUS_WORD = { approved: "Note approved", edited: "Edit saved", rejected: "Note rejected" };
  let current = null;   // the call id on screen
  let note = null;      // its note, as postcall returned it

  const api = (id) => "/v1/calls/" + encodeURIComponent(id) + "/note";
  const label = (cid) => LABELS[cid] || String(cid || "").replace(/_/g, " ");
  const tierName = (t) => TIERS[String(t)] || ("Tier " + t);
  const resultName = (r) => RESULTS[r] || r;

  // ------------------------------------------------------------------ selecting a note
  function select(id) {
    if (!id) return;
    current = id;
    queue.querySelectorAll(".qitem").forEach(q => q.classList.toggle("sel", q.dataset.callId === id));
    history.replaceState(null, "", "#" + encodeURIComponent(id));
    load(id);
  }

  async function load(id) {
    pane.dataset.callId = id;
    pane.replaceChildren(h("p", { class: "muted" }, "Loading the note…"));
    try {
      const n = await LC.get(api(id));     // postcall counts this as "reviewed" (a lead opened it)
      if (current !== id) return;          // the lead moved on meanwhile
      note = n;
      render(n);
    } catch (err) {
      if (current === id) pane.replaceChildren(h("p", { class: "error" }, "Could not load the note: " + err.message));
    }
  }

  queue.addEventListener("click", (e) => { const q = e.target.closest(".qitem"); if (q) select(q.dataset.callId); });
  queue.addEventListener("keydown", (e) => {
    const q = e.target.closest(".qitem");
    if (q && (e.key === "Enter" || e.key === " ")) { e.preventDefault(); select(q.dataset.callId); }
  });

  // ------------------------------------------------------------------ rendering
  function evidence(list) {
    return (list || []).map(e => h("div", { class: "ev" },
      e.minute ? h("span", { class: "minute" }, e.minute) : null, " ",
      e.speaker ? h("span", { class: "spk spk-" + e.speaker }, e.speaker) : null, " ",
      h("q", {}, e.excerpt || "")));
  }

  function flagChips(n) {
    const f = n.flags || {};
    const chips = [];
    if (f.customer_risk) chips.push(["customer risk", "f-risk"]);
    if (f.low_confidence) chips.push(["low confidence", "f-conf"]);
    if (f.late_low_csat) chips.push(["late low CSAT", "f-risk"]);
    if (f.compliance_gap) chips.push(["compliance gap", "f-comp"]);
    for (const r of f.risk_reasons || []) chips.push([r, ""]);
    return chips.map(([t, c]) => h("span", { class: "flag " + c }, t));
  }

  function head(n) {
    const agent = (queue.querySelector(`.qitem[data-call-id="${CSS.escape(n.call_id)}"] .qtitle`) || {}).firstChild;
    return h("header", { class: "note-head" },
      h("div", {},
        h("h2", { class: "note-title" }, agent ? agent.textContent.trim() : "QA note",
          n.queue ? h("span", { class: "qqueue" }, " · " + n.queue + (n.channel ? " · " + n.channel : "")) : null),
        h("div", { class: "note-sub" },
          h("a", { href: "/console/calls/" + encodeURIComponent(n.call_id) }, "Open the call " + n.call_id), " · ",
          h("span", { class: "rubric" }, "rubric " + n.rubric.id + " v" + n.rubric.version), " · ",
          n.exception ? "not scored" : "confidence " + Math.round((n.confidence || 0) * 100) + "%",
          n.csat !== null && n.csat !== undefined ? " · CSAT " + n.csat : "", " · ",
          h("span", { class: "muted" }, n.scorer === "rules+detectors" ? "rules + detectors" : "rules only"))),
      h("span", { class: "pill " + n.status + " note-status" }, n.status));
  }

  function exceptionBox(n) {
    if (!n.exception) return null;
    return h("section", { class: "box box-exc" },
      h("h3", {}, "No score — " + String(n.exception.rule || "").replace(/_/g, " ")),
      h("p", { class: "exc-reason" }, n.exception.reason),
      h("p", { class: "muted small" }, "A stop rule held the score back. Decide whether the call needs a manual review."));
  }

  function coachingBox(n) {
    const c = n.coaching || {};
    const f = c.focus;
    const fu = c.follow_up;
    const kids = [h("h3", {}, "Coaching for the agent")];
    if (!f && !c.next_action) {
      kids.push(h("p", { class: "muted" }, n.exception ? "No coaching: the note was not scored." :
        "Nothing for the agent to work on in this call."));
    }
    if (f) {
      kids.push(h("div", { class: "kv" }, h("span", { class: "k" }, "Focus behaviour"),
        h("div", { class: "v f-focus" }, h("b", {}, f.label || label(f.criterion)),
          h("span", { class: "tier" }, tierName(f.tier)),
          f.why ? h("div", { class: "why" }, f.why) : null, evidence(f.evidence))));
    }
    if (c.next_action) {
      kids.push(h("div", { class: "kv" }, h("span", { class: "k" }, "Next action"),
        h("div", { class: "v f-next_action" }, c.next_action)));
    }
    if (fu) {
      const obs = fu.observed || [];
      const seen = obs.length ? obs.map(o => o.result).join(", ") : "no later calls scored yet";
      const verdict = fu.improved === true ? "improving" : fu.improved === false ? "not improved yet" : "";
      kids.push(h("div", { class: "kv" }, h("span", { class: "k" }, "Follow-up"),
        h("div", { class: "v f-follow_up" }, "Tracked on the agent's next " + fu.track_next_calls + " calls: " + seen,
          verdict ? h("span", { class: "verdict " + (fu.improved ? "good" : "bad") }, verdict) : null)));
    }
    if (n.previous_focus) {
      const p = n.previous_focus;
      kids.push(h("div", { class: "kv" }, h("span", { class: "k" }, "Earlier focus"),
        h("div", { class: "v" }, label(p.criterion) + ": " + resultName(p.result) + " on this call")));
    }
    if ((c.strengths || []).length) {
      kids.push(h("div", { class: "kv" }, h("span", { class: "k" }, "Did well"),
        h("div", { class: "v" }, c.strengths.map(s => h("div", {}, s.label || label(s.criterion), evidence(s.evidence))))));
    }
    if (n.lead_comment) {
      kids.push(h("div", { class: "kv" }, h("span", { class: "k" }, "Lead's comment"), h("div", { class: "v" }, n.lead_comment)));
    }
    return h("section", { class: "box box-coach" }, kids);
  }

  function processBox(n) {
    const issues = n.process_issues || [];
    if (!issues.length) return null;
    return h("section", { class: "box box-process" },
      h("h3", {}, "Process issues — not the agent"),
      h("p", { class: "muted small" }, "Root causes outside the agent's control. They are tracked separately and never go into the agent's coaching."),
      issues.map(p => h("div", { class: "pi" },
        h("span", { class: "cat cat-" + p.category }, p.category),
        h("span", {}, p.description), p.article ? h("span", { class: "muted" }, " (" + p.article + ")") : null,
        evidence(p.evidence))));
  }

  function criteriaBox(n, editing) {
    const crits = n.criteria || [];
    if (!crits.length) return null;
    const groups = [];
    for (const c of crits) {
      const t = String(c.tier);
      let g = groups.find(x => x.tier === t);
      if (!g) groups.push(g = { tier: t, items: [] });
      g.items.push(c);
    }
    return h("section", { class: "box box-crit" },
      h("h3", {}, "Rubric criteria"),
      groups.map(g => h("div", { class: "tier-group" },
        h("div", { class: "tier-name" }, tierName(g.tier)),
        g.items.map(c => h("div", { class: "crit r-" + c.result, data: { criterion: c.id } },
          h("span", { class: "crit-label" }, c.label || label(c.id)),
          editing ? h("select", { class: "crit-edit", name: "crit-" + c.id },
            Object.keys(RESULTS).map(r => h("option", { value: r, selected: r === c.result }, resultName(r))))
            : h("span", { class: "crit-res r-" + c.result }, resultName(c.result)),
          (c.reason || (c.root_cause && c.root_cause !== "agent")) ? h("div", { class: "crit-why" }, c.reason,
            c.root_cause && c.root_cause !== "agent" ? h("span", { class: "cat cat-" + c.root_cause }, c.root_cause + " cause") : null) : null,
          evidence(c.evidence))))));
  }

  function pathLabel(path, n) {
    const seg = path.split("/").filter(Boolean);
    if (seg[0] === "criteria" && /^\d+$/.test(seg[1] || "")) {
      const c = (n.criteria || [])[+seg[1]];
      return (c ? (c.label || label(c.id)) : "Criterion " + seg[1]) + (seg[2] ? " · " + seg.slice(2).join(" › ").replace(/_/g, " ") : "");
    }
    const names = { coaching: "Coaching", focus: "focus", next_action: "next action", follow_up: "follow-up",
      lead_comment: "Lead's comment", criterion: "criterion" };
    const words = seg.filter(s => s !== "coaching").map(s => names[s] || s.replace(/_/g, " ")).join(" › ");
    return words.charAt(0).toUpperCase() + words.slice(1);
  }

  function val(v) {
    if (v === null || v === undefined) return "—";
    if (typeof v === "string") return v;
    if (typeof v === "object" && !Array.isArray(v) && (v.label || v.criterion)) return v.label || label(v.criterion);
    const s = JSON.stringify(v);
    return s.length > 140 ? s.slice(0, 137) + "…" : s;
  }

  // The stored diff is path by path; show it as the lead thinks of it: one row per thing changed.
  function diffRows(diff, n) {
    const rows = [];
    const focus = diff.filter(d => d.path === "/coaching/focus" || d.path.startsWith("/coaching/focus/"));
    if (focus.length) {
      const whole = focus.find(d => d.path === "/coaching/focus");
      const crit = focus.find(d => d.path === "/coaching/focus/criterion");
      const from = whole ? whole.from : crit ? crit.from : null;
      const to = whole ? whole.to : crit ? crit.to : null;
      rows.push(["Focus behaviour", typeof from === "string" ? label(from) : val(from),
                 typeof to === "string" ? label(to) : val(to)]);
    }
    const results = new Set(diff.filter(d => /^\/criteria\/\d+\/result$/.test(d.path)).map(d => d.path.split("/")[2]));
    for (const d of diff) {
      if (d.path === "/coaching/focus" || d.path.startsWith("/coaching/focus/")) continue;
      if (focus.length && (d.path === "/coaching/follow_up" || d.path.startsWith("/coaching/follow_up/"))) continue;
      const m = d.path.match(/^\/criteria\/(\d+)\/(\w+)$/);
      if (m && m[2] === "root_cause" && results.has(m[1])) continue;
      if (m && m[2] === "result") {
        rows.push([pathLabel("/criteria/" + m[1], n), resultName(d.from), resultName(d.to)]);
        continue;
      }
      rows.push([pathLabel(d.path, n), val(d.from), val(d.to)]);
    }
    return rows;
  }

  function historyBox(n) {
    const events = n.review || [];
    if (!events.length) return null;
    return h("section", { class: "box box-history" },
      h("h3", {}, "Review history"),
      h("ol", { class: "history" }, events.map(e => {
        const diff = (e.details && e.details.diff) || [];
        const when = e.at ? new Date(e.at).toLocaleString() : "";
        return h("li", { class: "ev-" + e.action },
          h("b", {}, { reviewed: "Opened", approved: "Approved", edited: "Edited", rejected: "Rejected", requeued: "Re-queued",
            csat: "CSAT received" }[e.action] || e.action),
          " by " + e.actor + " · " + when,
          e.reason ? h("div", { class: "reason" }, "Reason: " + e.reason) : null,
          diff.length ? h("table", { class: "diff" },
            h("caption", {}, "Kept as a diff next to the machine's draft (" + diff.length + " stored change" + (diff.length > 1 ? "s" : "") + ")"),
            h("thead", {}, h("tr", {}, h("th", {}, "What"), h("th", {}, "Machine's draft"), h("th", {}, "Lead's edit"))),
            h("tbody", {}, diffRows(diff, n).map(([what, from, to]) => h("tr", {}, h("td", { class: "what" }, what),
              h("td", { class: "del" }, from), h("td", { class: "ins" }, to))))) : null);
      })));
  }

  function decideBar(n) {
    if (n.status !== "draft") {
      const d = n.decision || {};
      return h("div", { class: "decided" }, "Decided: ", h("b", {}, n.status), d.by ? " by " + d.by : "",
        d.reason ? " — " + d.reason : "");
    }
    return h("div", { class: "decide" },
      h("button", { class: "primary", data: { decision: "approve" } }, "Approve"),
      h("button", { data: { decision: "edit" } }, "Edit…"),
      h("input", { name: "reason", placeholder: "Reason (needed to reject, optional for an edit)", maxlength: "4000" }),
      h("button", { class: "danger", data: { decision: "reject" } }, "Reject"));
  }

  function editForm(n) {
    const c = n.coaching || {};
    const focusId = c.focus ? c.focus.criterion : "";
    const crits = n.criteria || [];
    const options = [h("option", { value: "", selected: !focusId }, "No focus for this call")]
      .concat(crits.slice().sort((a, b) => (b.result === "missed") - (a.result === "missed")).map(k =>
        h("option", { value: k.id, selected: k.id === focusId }, (k.label || label(k.id)) + " — " + resultName(k.result))));
    return h("form", { class: "box box-edit edit-form" },
      h("h3", {}, "Edit the note"),
      h("p", { class: "muted small" }, "Change what the machine got wrong. The draft is kept: your changes are stored as a diff next to it."),
      h("label", { for: "edit-focus" }, "Focus behaviour"),
      h("select", { id: "edit-focus", name: "focus" }, options),
      h("label", { for: "edit-next" }, "Next action"),
      h("textarea", { id: "edit-next", name: "next_action" }, c.next_action || ""),
      h("label", { for: "edit-comment" }, "Comment for the agent (optional)"),
      h("textarea", { id: "edit-comment", name: "lead_comment" }, n.lead_comment || ""),
      h("label", { for: "edit-reason" }, "Why the change (optional)"),
      h("input", { id: "edit-reason", name: "edit_reason", maxlength: "4000" }),
      h("p", { class: "muted small" }, "Criterion results can be changed in the list below."),
      h("div", { class: "decide" },
        h("button", { class: "primary", type: "submit" }, "Save edit"),
        h("button", { type: "button", class: "link cancel" }, "Cancel")));
  }

  function render(n, editing) {
    pane.dataset.callId = n.call_id;
    pane.classList.toggle("editing", !!editing);
    pane.replaceChildren(...[
      head(n),
      flagChips(n).length ? h("div", { class: "flags" }, flagChips(n)) : null,
      editing ? null : decideBar(n),
      exceptionBox(n),
      editing ? editForm(n) : coachingBox(n),
      processBox(n),
      criteriaBox(n, editing),
      historyBox(n),
    ].filter(Boolean));
    if (editing) {
      const form = pane.querySelector(".edit-form");
      form.addEventListener("submit", (e) => { e.preventDefault(); saveEdit(n, form); });
      form.querySelector(".cancel").addEventListener("click", () => render(n));
      form.querySelector("textarea").focus();
    }
  }

  // ------------------------------------------------------------------ decisions
  function stripComputed(coaching) {
    // follow-up results are computed when the note is read; they are not part of the lead's edit
    const c = structuredClone(coaching || {});
    if (c.follow_up) Object.assign(c.follow_up, { observed: [], improved: null, status: "open" });
    return c;
  }

  function changesFrom(n, form) {
    const changes = {};
    const before = stripComputed(n.coaching);
    const coaching = stripComputed(n.coaching);
    const focusId = form.querySelector("[name=focus]").value;
    if (focusId !== (coaching.focus ? coaching.focus.criterion : "")) {
      const k = (n.criteria || []).find(x => x.id === focusId);
      if (!k) { coaching.focus = null; coaching.follow_up = null; }
      else {
        coaching.focus = { criterion: k.id, label: k.label || label(k.id), tier: k.tier,
          why: k.reason || "chosen by the lead", evidence: k.evidence || [] };
        coaching.follow_up = { criterion: k.id, track_next_calls: (before.follow_up && before.follow_up.track_next_calls) || 5,
          status: "open", observed: [], improved: null };
      }
    }
    const next = form.querySelector("[name=next_action]").value.trim();
    if (next !== (coaching.next_action || "")) coaching.next_action = next || null;
    if (JSON.stringify(coaching) !== JSON.stringify(before)) changes.coaching = coaching;

    let critChanged = false;
    const criteria = (n.criteria || []).map(k => {
      const sel = pane.querySelector(`select[name="crit-${CSS.escape(k.id)}"]`);
      if (!sel || sel.value === k.result) return k;
      critChanged = true;
      const root = sel.value === "missed" ? (k.root_cause || "agent") : null;
      return { ...k, result: sel.value, root_cause: root };
    });
    if (critChanged) changes.criteria = criteria;
    const comment = form.querySelector("[name=lead_comment]").value.trim();
    if (comment !== (n.lead_comment || "")) changes.lead_comment = comment || null;
    return changes;
  }

  async function send(id, body, btn) {
    if (btn) btn.disabled = true;
    try {
      const out = await LC.post(api(id) + "/review", body);
      markDecided(id, out.status);
      const changed = out.diff ? " — " + out.diff.length + " change" + (out.diff.length > 1 ? "s" : "") + " kept as a diff" : "";
      LC.toast((STATUS_WORD[out.status] || "Saved") + changed);
      if (current === id) { note = await LC.get(api(id)); if (current === id) render(note); }
      advance(id);
    } catch (err) {
      LC.toast("Could not save: " + err.message, true);
      if (btn) btn.disabled = false;
    }
  }

  function saveEdit(n, form) {
    const changes = changesFrom(n, form);
    if (!Object.keys(changes).length) { LC.toast("Nothing changed", true); return; }
    send(n.call_id, { action: "edit", changes, reason: form.querySelector("[name=edit_reason]").value.trim() || null },
      form.querySelector("button[type=submit]"));
  }

  function markDecided(id, status) {
    const item = queue.querySelector(`.qitem[data-call-id="${CSS.escape(id)}"]`);
    if (!item) return;
    const pill = item.querySelector(".pill");
    pill.textContent = status; pill.className = "pill " + status;
    item.classList.add("done");
  }

  function advance(id) {   // on to the next draft, unless the lead already picked another note
    if (data.status !== "draft") return;
    setTimeout(() => {
      if (current !== id) return;
      const items = [...queue.querySelectorAll(".qitem")];
      const i = items.findIndex(x => x.dataset.callId === id);
      const next = items.slice(i + 1).concat(items.slice(0, i)).find(x => x.querySelector(".pill.draft"));
      if (next) select(next.dataset.callId);
    }, 1500);
  }

  pane.addEventListener("click", (e) => {
    const btn = e.target.closest("button[data-decision]");
    if (!btn || !note) return;
    const reasonEl = pane.querySelector("input[name=reason]");
    const reason = reasonEl ? reasonEl.value.trim() : "";
    const d = btn.dataset.decision;
    if (d === "edit") { render(note, true); return; }
    if (d === "reject" && !reason) { LC.toast("Say why the note is rejected", true); reasonEl.focus(); return; }
    send(note.call_id, d === "reject" ? { action: "reject", reason } : { action: "approve", reason: reason || null }, btn);
  });

  const first = decodeURIComponent(location.hash.slice(1)) || (queue.querySelector(".qitem") || {}).dataset?.callId;
  select(queue.querySelector(`.qitem[data-call-id="${CSS.escape(first || "")}"]`) ? first
    : (queue.querySelector(".qitem") || {}).dataset?.callId);
})();
