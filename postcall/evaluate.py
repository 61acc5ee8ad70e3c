"""Measure the note drafter on recorded conversations (Harper Valley format) without a server:
pilot coverage, verbatim excerpts, and the redaction leak rate against the calls' ground-truth
names (``caller_name``, ``agent_name``) and spoken numbers. Used by ``livecoach qa eval`` and tests."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from livecoach.postcall._scoring import draft_note
from livecoach.postcall.rubric import Rubric, load_rubric
from livecoach.stream.replay import conversation_events

_PLACEHOLDER = re.compile(r"\[[a-z_ ]+\]|<[a-z_ ]+>")
_NUM = re.compile(r"\b(zero|one|two|three|four|five|six|seven|eight|nine)( (zero|oh|one|two|three|four|five|six|seven|eight|nine)){3,}\b")


def conversation_to_call(conv: dict[str, Any]) -> dict[str, Any]:
    """What ``Store.get_call`` returns after ``livecoach replay`` of ``conv`` (same event mapping)."""
    evs = [e for _, e in conversation_events(conv)]
    start, end = evs[0], evs[-1]
    return {
        "call_id": start["call_id"], "channel": start.get("channel", "chat"), "agent_id": start["agent_id"],
        "queue": start.get("queue", "default"), "tags": start.get("tags", []), "customer": start.get("customer", {}),
        "status": "ended", "csat": end.get("csat"), "ended_at": None, "started_at": None,
        "utterances": [{"seq": e["seq"], "speaker": e["speaker"], "text": e["text"], "t_start": e.get("t_start"),
                        "t_end": e.get("t_end"), "source": "chat", "confidence": None}
                       for e in evs if e["type"] == "utterance"],
        "actions": [{"seq": e["seq"], "name": e["name"], "args": e.get("args", {}), "t": e.get("t")}
                    for e in evs if e["type"] == "agent_action"],
        "signals": [],
    }


def verbatim(excerpt: str, transcript: str) -> bool:
    """The product check's rule: placeholders removed, split on "…", every part in the transcript."""
    ex = _PLACEHOLDER.sub("", excerpt.lower().strip(" .…"))
    return all(not p.strip() or p.strip() in transcript for p in re.split(r"…|\.\.\.", ex))


def _name_hits(names: Iterable[str], blob: str) -> list[str]:
    hits = []
    for who in names:
        for part in (who or "").lower().split():
            if len(part) > 2 and re.search(rf"\b{re.escape(part)}\b", blob):
                hits.append(part)
    return hits


@dataclass
class Report:
    calls: int = 0
    covered: int = 0
    excerpts: int = 0
    non_verbatim: int = 0
    caller_leak_calls: int = 0
    agent_leak_calls: int = 0
    number_leak_calls: int = 0
    caller_said_calls: int = 0
    agent_said_calls: int = 0
    exceptions: dict[str, int] = field(default_factory=dict)
    focus: dict[str, int] = field(default_factory=dict)
    results: dict[str, dict[str, int]] = field(default_factory=dict)
    draft_ms: list[float] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)

    def render(self) -> str:
        n = max(1, self.calls)
        lines = [
            f"calls {self.calls}; pilot (evidence or non-agent exception) {self.covered}/{self.calls} = {self.covered / n:.0%}",
            f"evidence excerpts {self.excerpts}; non-verbatim {self.non_verbatim}",
            f"redaction leaks (calls whose note JSON still holds the name / a 4+ spoken-digit run):",
            f"  caller name: {self.caller_leak_calls}/{self.calls} calls (caller said it in {self.caller_said_calls})",
            f"  agent name (excluding agent_id): {self.agent_leak_calls}/{self.calls} calls (agent said it in {self.agent_said_calls})",
            f"  spoken digit runs: {self.number_leak_calls}/{self.calls} calls",
            f"exceptions: {self.exceptions or 'none'}",
            f"focus: {dict(sorted(self.focus.items(), key=lambda kv: -kv[1]))}",
            "criteria: " + "; ".join(f"{k} {v}" for k, v in self.results.items()),
        ]
        if self.draft_ms:
            xs = sorted(self.draft_ms)
            lines.append(f"draft ms: p50 {xs[len(xs) // 2]:.1f}  max {xs[-1]:.1f}")
        lines += self.examples[:10]
        return "\n".join(lines)


def evaluate(convs: list[dict[str, Any]], rubric: Rubric | None = None, use_detectors: bool = True,
             known_fields: bool = True) -> Report:
    """Draft every conversation's note; ``known_fields=False`` hides the caller's name from the
    redactor (cue-based detection only) while still counting leaks against it."""
    rubric = rubric or load_rubric()
    rep = Report()
    for conv in convs:
        call = conversation_to_call(conv)
        if not known_fields:
            call["customer"] = {}
        note = draft_note(call, rubric, use_detectors=use_detectors, wait_for_detectors=use_detectors)
        rep.calls += 1
        rep.draft_ms.append(note["draft_ms"])
        transcript = " ".join(t["text"] for t in conv["turns"]).lower()
        evid = [e for k in note["criteria"] for e in k.get("evidence") or []]
        if evid or note.get("exception") or note.get("process_issues"):
            rep.covered += 1
        all_ev = evid + [e for p in note["process_issues"] for e in p["evidence"]] + \
            ((note["coaching"].get("focus") or {}).get("evidence") or [])
        for e in all_ev:
            rep.excerpts += 1
            if not verbatim(e["excerpt"], transcript):
                rep.non_verbatim += 1
                rep.examples.append(f"non-verbatim {call['call_id']}: {e['excerpt']!r}")
        blob = json.dumps({k: v for k, v in note.items() if k != "call_id"}).lower()
        if _name_hits([conv.get("caller_name")], blob):
            rep.caller_leak_calls += 1
            rep.examples.append(f"caller leak {call['call_id']}: {_name_hits([conv.get('caller_name')], blob)}")
        if _name_hits([conv.get("caller_name")], transcript):
            rep.caller_said_calls += 1
        if _name_hits([conv.get("agent_name")], blob):
            rep.agent_leak_calls += 1
            rep.examples.append(f"agent leak {call['call_id']}: {_name_hits([conv.get('agent_name')], blob)}")
        if _name_hits([conv.get("agent_name")], transcript):
            rep.agent_said_calls += 1
        if _NUM.search(" ".join(e["excerpt"].lower() for e in all_ev)):
            rep.number_leak_calls += 1
            rep.examples.append(f"digits leak {call['call_id']}: {_NUM.search(' '.join(e['excerpt'].lower() for e in all_ev)).group(0)}")
        if note.get("exception"):
            r = note["exception"]["rule"]
            rep.exceptions[r] = rep.exceptions.get(r, 0) + 1
        f = (note["coaching"].get("focus") or {}).get("criterion")
        if f:
            rep.focus[f] = rep.focus.get(f, 0) + 1
        for k in note["criteria"]:
            rep.results.setdefault(k["id"], {})
            rep.results[k["id"]][k["result"]] = rep.results[k["id"]].get(k["result"], 0) + 1
    return rep


def load_jsonl(path: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
