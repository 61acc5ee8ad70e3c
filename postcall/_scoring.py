"""Drafting a QA note from a stored call: transparent rules over the transcript, optionally helped
by the tier-0 detector scores and the signals raised live.

``draft_note(call, rubric, ...)`` is a pure function of its inputs (the stage and the CLI read the
store and pass them in). Every criterion gets met / missed / not_applicable /
insufficient_evidence; evidence is ``{seq, excerpt, minute, speaker}`` with a verbatim, redacted
excerpt; a point without evidence is not emitted. Problems with a non-agent cause nearby become
process issues, never coaching points. Stop rules yield an exception and no score.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from livecoach.events import minute_mark
from livecoach.postcall import _detectors, _tier1
from livecoach.postcall.redact import Redactor
from livecoach.postcall.rubric import ROOT_CAUSES, TIER_ORDER, Criterion, Rubric, RubricNotApproved

_MARKER = re.compile(r"\[[^\]]*\]|<[^>]*>")
_WORDS = re.compile(r"[a-z0-9']+")
_GREETING = re.compile(r"\b(how (can|may) i (help|assist)|what can i (do|help)|how are you)\b")
_BACKCHANNEL = re.compile(r"^(uh|um|uhm|okay|ok|alright|yes|yeah|sure|right|mhm|mm|hmm|got it|i see|great|perfect|thank you|thanks)( (uh|um|okay|ok|alright|yes|yeah|sure|right|mhm|thank you|thanks))*$")
EXCERPT_WORDS = 28
CUSTOMER_RISK_SIGNALS = {"churn_intent", "escalation_request", "complaint", "frustration_spike", "secret_read_out"}
STOPWORDS = set("""a an the and or but so of to in on at for from with my your i you it is are was be that this
uh um uhm okay ok yes no please can could would like do does did have has me we our""".split())


@dataclass
class Turn:
    seq: int
    speaker: str
    text: str
    low: str
    t_start: float | None
    t_end: float | None
    confidence: float | None = None

    @property
    def words(self) -> list[str]:
        return _WORDS.findall(self.low)


@dataclass
class Result:
    criterion: Criterion
    result: str
    evidence: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""
    root_cause: str | None = None
    actions: list[dict[str, Any]] = field(default_factory=list)


class _Ctx:
    def __init__(self, call: dict[str, Any], rubric: Rubric, redactor: Redactor,
                 scores: dict[int, dict[str, Any]] | None):
        self.call = call
        self.rubric = rubric
        self.cues = rubric.compiled
        self.redactor = redactor
        self.scores = scores or {}
        self.turns: list[Turn] = []
        for u in call.get("utterances", []):
            low = _MARKER.sub(" ", str(u.get("text") or "").lower())
            low = re.sub(r"\s+", " ", low).strip()
            if not _WORDS.search(low):
                continue  # marker-only turns ([noise], <unk>) carry no evidence
            self.turns.append(Turn(int(u["seq"]), u.get("speaker", "customer"), str(u["text"]), low,
                                   u.get("t_start"), u.get("t_end"), u.get("confidence")))
        self.by_seq = {t.seq: t for t in self.turns}
        self.agent = [t for t in self.turns if t.speaker == "agent"]
        self.customer = [t for t in self.turns if t.speaker == "customer"]
        self.signals = call.get("signals") or []
        self.actions = call.get("actions") or []

    # ------------------------------------------------------------ evidence
    def cue(self, name: str, turn: Turn) -> re.Match | None:
        rx = self.cues.get(name)
        return rx.search(turn.low) if rx is not None else None

    def evidence(self, turn: Turn, cue: str | None = None) -> dict[str, Any]:
        red = self.redactor.excerpt(turn.text)
        spans = [(m.start(), m.end()) for m in re.finditer(r"\S+", red)]
        if len(spans) > EXCERPT_WORDS:
            centre = 0
            rx = self.cues.get(cue) if cue else None
            m = rx.search(red.lower()) if rx is not None else None
            if m is not None:
                centre = next((i for i, (s, e) in enumerate(spans) if e > m.start()), 0)
            lo = max(0, min(centre - EXCERPT_WORDS // 3, len(spans) - EXCERPT_WORDS))
            hi = min(len(spans), lo + EXCERPT_WORDS)
            red = ("… " if lo > 0 else "") + red[spans[lo][0]:spans[hi - 1][1]] + (" …" if hi < len(spans) else "")
        return {"seq": turn.seq, "excerpt": red, "minute": minute_mark(turn.t_start), "speaker": turn.speaker}

    def first(self, turns: list[Turn], cue: str, after: int = 0, before: int | None = None) -> Turn | None:
        for t in turns:
            if t.seq > after and (before is None or t.seq < before) and self.cue(cue, t):
                return t
        return None

    def signal_seqs(self, kind: str) -> list[int]:
        return [int(e["seq"]) for s in self.signals if s.get("kind") == kind for e in (s.get("evidence") or [])
                if isinstance(e, dict) and "seq" in e]

    def negative(self, t: Turn, p: float = 0.8) -> bool:
        """Tier-0 sentiment says clearly negative (a few words at least: "no" is not a feeling)."""
        lab, conf = (self.scores.get(t.seq) or {}).get("sentiment", (None, 0.0))
        return lab == "negative" and conf >= p and len(t.words) >= 4

    def behaviour(self, t: Turn, name: str, p: float = 0.6) -> bool:
        return ((self.scores.get(t.seq) or {}).get("behaviours") or {}).get(name, 0.0) >= p


# ---------------------------------------------------------------- criteria rules

def _need(c: _Ctx) -> Turn | None:
    return next((t for t in c.customer if len(t.words) >= 3 and c.cue("need", t)), None)


def _solution(c: _Ctx) -> Turn | None:
    return c.first(c.agent, "solution")


def r_talking_over(c: _Ctx, k: Criterion) -> Result:
    if not c.turns or any(t.t_start is None or t.t_end is None for t in c.turns):
        if c.call.get("channel") == "chat":
            return Result(k, "not_applicable", reason="chat messages without speaking times cannot overlap")
        return Result(k, "insufficient_evidence", reason="no turn timing to judge overlap")
    gap = c.rubric.threshold("overlap_seconds", 1.0)
    min_words = int(c.rubric.threshold("overlap_min_words", 3))
    for a in c.agent:
        if len(a.words) < min_words or _BACKCHANNEL.match(a.low) or c.cue("closing", a):
            continue  # a backchannel or an overlapping goodbye is not talking over anyone
        for cu in c.customer:
            if len(cu.words) >= 3 and cu.t_start < a.t_start < cu.t_end - gap and not c.cue("closing", cu):
                return Result(k, "missed", [c.evidence(cu), c.evidence(a)],
                              f"the agent started speaking at {minute_mark(a.t_start)} while the customer was "
                              f"still talking (until {minute_mark(cu.t_end)})")
    return Result(k, "met", reason="no agent turn started over the customer")


def r_dismissive_tone(c: _Ctx, k: Criterion) -> Result:
    hits = [t for t in c.agent if c.cue("dismissive", t)]
    if hits:
        return Result(k, "missed", [c.evidence(t, "dismissive") for t in hits[:2]], "dismissive phrase")
    return Result(k, "met", reason="no dismissive phrase")


def r_acknowledge_emotion(c: _Ctx, k: Criterion) -> Result:
    flagged = set(c.signal_seqs("frustration_spike"))
    emotional = [t for t in c.customer if c.cue("customer_emotion", t) or c.negative(t) or t.seq in flagged]
    if not emotional:
        return Result(k, "not_applicable", reason="the customer showed no frustration, worry or confusion")
    missed_at: tuple[Turn, Turn | None] | None = None
    for e in emotional:
        replies = [t for t in c.agent if t.seq > e.seq][:2]
        ack = next((t for t in replies if c.cue("acknowledgement", t) or c.behaviour(t, "emotion_acknowledged")), None)
        if ack is not None:
            return Result(k, "met", [c.evidence(e, "customer_emotion"), c.evidence(ack, "acknowledgement")],
                          "the agent acknowledged the customer's feeling")
        if missed_at is None:
            missed_at = (e, replies[0] if replies else None)
    e, reply = missed_at
    ev = [c.evidence(e, "customer_emotion")] + ([c.evidence(reply)] if reply else [])
    return Result(k, "missed", ev, "the customer's feeling was not acknowledged in the next two agent turns")


def r_understand_before_solving(c: _Ctx, k: Criterion) -> Result:
    sol = _solution(c)
    if sol is None:
        return Result(k, "not_applicable", reason="no solution was offered in the conversation")
    need = _need(c)
    if need is not None and need.seq < sol.seq:
        return Result(k, "met", [c.evidence(need, "need"), c.evidence(sol, "solution")],
                      "the customer stated the need before the agent offered a solution")
    return Result(k, "missed", [c.evidence(sol, "solution")], "a solution came before the customer stated the need")


def _questions(c: _Ctx, after: int, before: int) -> list[Turn]:
    return [t for t in c.agent if after < t.seq < before and c.cue("question", t) and not _GREETING.search(t.low)]


def r_diagnose_before_solving(c: _Ctx, k: Criterion) -> Result:
    sol = _solution(c)
    if sol is None:
        return Result(k, "not_applicable", reason="no solution was offered in the conversation")
    need = _need(c)
    qs = _questions(c, need.seq if need and need.seq < sol.seq else 0, sol.seq)
    if qs:
        return Result(k, "met", [c.evidence(qs[0], "question")], "the agent asked before acting")
    return Result(k, "missed", [c.evidence(sol, "solution")], "the agent acted without a diagnosing question")


def _echo(c: _Ctx, agent_turn: Turn) -> bool:
    prev = [t for t in c.customer if t.seq < agent_turn.seq][-2:]
    aw = agent_turn.words
    agrams = {tuple(aw[i:i + 3]) for i in range(len(aw) - 2)}
    for cu in prev:
        w = cu.words
        for i in range(len(w) - 2):
            g = tuple(w[i:i + 3])
            if g in agrams and sum(x not in STOPWORDS for x in g) >= 2:
                return True
    return False


def r_confirm_understanding(c: _Ctx, k: Criterion) -> Result:
    sol = _solution(c)
    if sol is None:
        return Result(k, "not_applicable", reason="nothing was acted on")
    need = _need(c)
    start = need.seq if need else 0
    for t in c.agent:
        if start < t.seq <= sol.seq and (c.cue("confirmation", t) or _echo(c, t)):
            return Result(k, "met", [c.evidence(t, "confirmation")], "the agent read back or confirmed the detail")
    return Result(k, "missed", [c.evidence(sol, "solution")], "the agent acted without reading back the key detail")


def r_verify_resolution(c: _Ctx, k: Criterion) -> Result:
    need = _need(c)
    start = need.seq if need else 0
    check = c.first(c.agent, "resolution_check", after=start)
    if check is None:
        check = next((t for t in c.agent if t.seq > start and c.behaviour(t, "resolution_checked")), None)
    if check is not None:
        return Result(k, "met", [c.evidence(check, "resolution_check")], "the agent checked before closing")
    closing = c.first(c.agent, "closing", after=start)
    if closing is not None:
        return Result(k, "missed", [c.evidence(closing, "closing")], "the agent closed without checking the issue was resolved")
    last = next((t for t in reversed(c.agent) if t.seq > start and len(t.words) >= 2), None)
    if last is not None and need is not None:
        return Result(k, "missed", [c.evidence(last)], "the conversation ended without the agent checking the issue was resolved")
    return Result(k, "insufficient_evidence", reason="the conversation has no closing to judge")


def r_hold_time(c: _Ctx, k: Criterion) -> Result:
    timed = [t for t in c.turns if t.t_start is not None]
    if len(timed) < 2 or any(t.t_end is None for t in timed):
        if c.call.get("channel") == "chat":
            return Result(k, "not_applicable", reason="chat without timing")
        return Result(k, "insufficient_evidence", reason="no turn timing to measure silence")
    limit = c.rubric.threshold("dead_air_seconds", 10)
    timed.sort(key=lambda t: (t.t_start, t.seq))
    end = timed[0].t_end
    prev = timed[0]
    worst: tuple[float, Turn, Turn] | None = None
    announced: Turn | None = None
    for t in timed[1:]:
        silent = t.t_start - end
        if t.speaker == "agent" and silent >= limit and (prev.speaker == "customer" or c.cue("hold", prev)):
            if worst is None or silent > worst[0]:
                worst = (silent, prev, t)
        if prev.speaker == "agent" and c.cue("hold", prev) and silent < limit:
            announced = announced or prev
        end = max(end, t.t_end)
        prev = t
    if worst is not None:
        silent, before, after = worst
        return Result(k, "missed", [c.evidence(before, "hold"), c.evidence(after)],
                      f"{silent:.0f} s of silence before the agent spoke at {minute_mark(after.t_start)}")
    if announced is not None:
        return Result(k, "met", [c.evidence(announced, "hold")], "holds were announced and short")
    return Result(k, "met", reason=f"no silence of {limit:.0f} s or more on the agent's side")


def r_concise_explanations(c: _Ctx, k: Criterion) -> Result:
    limit = int(c.rubric.threshold("long_turn_words", 70))
    long = [t for t in c.agent if len(t.words) > limit]
    if long:
        t = max(long, key=lambda x: len(x.words))
        return Result(k, "missed", [c.evidence(t)], f"one agent turn ran to {len(t.words)} words")
    if not c.agent:
        return Result(k, "insufficient_evidence", reason="no agent turns")
    return Result(k, "met", reason=f"no agent turn over {limit} words")


_ACCOUNT_ACTIONS = re.compile(r"refund|transfer|update|change|reset|close|cancel|order|pay|replace|balance|unlock|dispute")
_VERIFY_ACTIONS = re.compile(r"verif|authent|identity|kba|otp")


def r_identity_verification(c: _Ctx, k: Criterion) -> Result:
    acc_turn = c.first(c.agent, "account_action")
    acc_action = next((a for a in c.actions if _ACCOUNT_ACTIONS.search(str(a.get("name", "")).lower())), None)
    flagged = c.signal_seqs("identity_not_verified")
    first_access = min([x for x in (acc_turn.seq if acc_turn else None, acc_action["seq"] if acc_action else None)
                        if x is not None], default=None)
    if first_access is None and not flagged:
        return Result(k, "not_applicable", reason="no account data was disclosed or changed")
    verified_turn = c.first(c.agent, "identity_check", before=first_access)
    if verified_turn is None:
        verified_turn = next((t for t in c.agent if (first_access is None or t.seq < first_access)
                              and c.behaviour(t, "identity_verification_asked")), None)
    verified_action = next((a for a in c.actions if _VERIFY_ACTIONS.search(str(a.get("name", "")).lower())
                            and (first_access is None or a["seq"] < first_access)), None)
    acts = [{"seq": a["seq"], "name": a.get("name")} for a in (verified_action, acc_action) if a]
    if verified_turn is not None or verified_action is not None:
        if flagged and verified_action is not None:
            return Result(k, "insufficient_evidence", [], "contradictory: a live identity_not_verified signal, "
                          "but a verify-identity action was recorded before the account access", actions=acts)
        ev = [c.evidence(verified_turn, "identity_check")] if verified_turn else []
        return Result(k, "met", ev, "identity was verified before account access", actions=acts)
    target = acc_turn or next((c.by_seq[s] for s in flagged if s in c.by_seq), None)
    if target is None:
        return Result(k, "insufficient_evidence", reason="account access recorded as an action only", actions=acts)
    return Result(k, "missed", [c.evidence(target, "account_action")],
                  "account data was disclosed or changed without a verification question first", actions=acts)


def r_required_disclosures(c: _Ctx, k: Criterion) -> Result:
    tags = {str(t).lower() for t in c.call.get("tags") or []}
    needed = {tag: what for tag, what in c.rubric.disclosures.items() if tag in tags}
    flagged = c.signal_seqs("disclosure_missing") + c.signal_seqs("consent_missing")
    if not needed and not flagged:
        return Result(k, "not_applicable", reason="no disclosure is required for this call's tags")
    given = c.first(c.agent, "disclosure")
    if given is None:
        given = next((t for t in c.agent if c.behaviour(t, "disclosure_given")), None)
    if given is not None:
        if flagged and c.cue("disclosure", given) and given.seq < min(flagged):
            return Result(k, "insufficient_evidence", [], "contradictory: a live disclosure_missing signal, but "
                          f"a disclosure is in the transcript at {minute_mark(given.t_start)}")
        return Result(k, "met", [c.evidence(given, "disclosure")], "the disclosure was given")
    opening = c.agent[0] if c.agent else None
    if opening is None:
        return Result(k, "insufficient_evidence", reason="no agent turns")
    what = "; ".join(needed.values()) or "required disclosure"
    return Result(k, "missed", [c.evidence(opening)], f"no disclosure ({what}) in the conversation")


RULES = {
    "talking_over": r_talking_over,
    "dismissive_tone": r_dismissive_tone,
    "acknowledge_emotion": r_acknowledge_emotion,
    "understand_before_solving": r_understand_before_solving,
    "diagnose_before_solving": r_diagnose_before_solving,
    "confirm_understanding": r_confirm_understanding,
    "verify_resolution": r_verify_resolution,
    "hold_time": r_hold_time,
    "concise_explanations": r_concise_explanations,
    "identity_verification": r_identity_verification,
    "required_disclosures": r_required_disclosures,
}


# ---------------------------------------------------------------- stop rules

def _stop(c: _Ctx, rubric: Rubric, now: datetime, ticket: dict[str, Any] | None) -> dict[str, Any] | None:
    call = c.call
    scope = rubric.scope or {}
    rules = rubric.stop_rules or {}
    channels = scope.get("channels")
    if channels and call.get("channel") not in channels:
        return {"rule": "out_of_scope", "reason": f"channel {call.get('channel')} is outside rubric {rubric.id}'s scope"}
    if str(call.get("queue", "")).lower() in {q.lower() for q in scope.get("exclude_queues", [])}:
        return {"rule": "out_of_scope", "reason": f"queue {call.get('queue')!r} is excluded from QA scoring"}
    tags = {str(t).lower() for t in call.get("tags") or []}
    sens = sorted(tags & {s.lower() for s in rules.get("sensitive_tags", [])})
    if sens:
        return {"rule": "sensitive", "reason": f"sensitive case (tag {', '.join(sens)}): a lead reviews it without a score"}
    for rx in rules.get("sensitive_phrases", []):
        hit = next((t for t in c.turns if re.search(rx, t.low)), None)
        if hit is not None:
            return {"rule": "sensitive", "reason": "sensitive case (the conversation touches a sensitive topic): "
                    "a lead reviews it without a score", "evidence": [{"seq": hit.seq, "minute": minute_mark(hit.t_start)}]}
    for rx in rules.get("out_of_scope_phrases", []):
        hit = next((t for t in c.turns if re.search(rx, t.low)), None)
        if hit is not None:
            return {"rule": "out_of_scope", "reason": "not a support conversation (wrong number or test call)",
                    "evidence": [c.evidence(hit)]}
    n_min = int(rules.get("min_utterances", 4))
    if len(c.turns) < n_min or not c.agent or not c.customer:
        return {"rule": "missing_evidence", "reason": f"missing evidence: {len(c.turns)} usable turns "
                f"({len(c.agent)} agent, {len(c.customer)} customer); at least {n_min} with both sides are needed"}
    ended = (ticket or {}).get("closed_at") or call.get("ended_at")
    if isinstance(ended, str):
        try:
            ended = datetime.fromisoformat(ended)
        except ValueError:
            ended = None
    if isinstance(ended, datetime):
        if ended.tzinfo is None:
            ended = ended.replace(tzinfo=timezone.utc)
        age = (now - ended).total_seconds() / 86400
        if age > float(rules.get("stale_days", 30)):
            return {"rule": "stale", "reason": f"stale evidence: the conversation ended {age:.0f} days ago "
                    f"(rubric limit {rules.get('stale_days', 30)} days)"}
    return None


# ---------------------------------------------------------------- root causes

def _root_cause_near(c: _Ctx, seqs: list[int]) -> tuple[str, Turn] | None:
    if not seqs:
        return None
    idx = [i for i, t in enumerate(c.turns) if t.seq in seqs]
    if not idx:
        return None
    lo, hi = max(0, min(idx) - 3), min(len(c.turns), max(idx) + 4)
    for cat in ROOT_CAUSES:
        rx = c.rubric.compiled_root_causes.get(cat)
        if rx is None:
            continue
        for t in c.turns[lo:hi]:
            if rx.search(t.low):
                return cat, t
    return None


def _process_issues(c: _Ctx, results: list[Result]) -> list[dict[str, Any]]:
    issues: list[dict[str, Any]] = []
    seen: set[tuple[str, int]] = set()

    def add(cat: str, turn: Turn, description: str, criterion: str | None = None) -> None:
        if (cat, turn.seq) in seen:
            return
        seen.add((cat, turn.seq))
        ev = c.evidence(turn)
        issues.append({"category": cat, "description": description, "criterion": criterion, "evidence": [ev]})

    for r in results:
        if r.result != "missed":
            continue
        found = _root_cause_near(c, [e["seq"] for e in r.evidence])
        if found is not None:
            cat, turn = found
            r.root_cause = cat
            add(cat, turn, f"{r.criterion.label}: missed, but the cause is {cat}, not the agent", r.criterion.id)
        else:
            r.root_cause = "agent"
    rc = c.rubric.compiled_root_causes
    for t in c.turns:
        if t.speaker == "customer" and rc.get("staffing") and rc["staffing"].search(t.low):
            add("staffing", t, "the customer reports a long wait to be helped")
        if t.speaker == "customer" and rc.get("product") and rc["product"].search(t.low):
            add("product", t, "the customer reports a product or system fault")
        if t.speaker == "agent" and rc.get("product") and rc["product"].search(t.low):
            add("product", t, "the agent's tools were slow or down during the call")
        if t.speaker == "agent" and rc.get("documentation") and rc["documentation"].search(t.low):
            add("documentation", t, "the agent could not find or was unsure of the answer: a documentation gap")
        if rc.get("policy") and rc["policy"].search(t.low):
            near = [x for x in c.turns if abs(x.seq - t.seq) <= 3 and x.speaker == "customer"]
            if rc.get("customer_objection") and any(rc["customer_objection"].search(x.low) for x in near):
                add("policy", t, "the customer objected to a policy the agent had to apply")
    return issues


# ---------------------------------------------------------------- the note

def _criterion_json(r: Result) -> dict[str, Any]:
    out = {"id": r.criterion.id, "tier": r.criterion.tier, "label": r.criterion.label, "result": r.result,
           "evidence": r.evidence if r.result in ("met", "missed") else [], "reason": r.reason,
           "root_cause": r.root_cause if r.result == "missed" else None}
    if r.actions:
        out["actions"] = r.actions
    return out


def _confidence(c: _Ctx, results: list[Result]) -> float:
    applicable = [r for r in results if r.result != "not_applicable"]
    if not applicable:
        return 0.3
    decided = sum(r.result in ("met", "missed") for r in applicable) / len(applicable)
    conf = 0.5 + 0.5 * decided
    raw = c.call.get("utterances", [])
    noisy = sum(1 for u in raw if _MARKER.search(str(u.get("text", "")))) / max(1, len(raw))
    if noisy > 0.4:
        conf *= 0.85
    if len(c.turns) < 8:
        conf *= 0.85
    asr = [t.confidence for t in c.turns if t.confidence is not None]
    if asr and sum(asr) / len(asr) < 0.6:
        conf *= 0.8
    return round(min(1.0, conf), 2)


def sanitise(body: Any, redactor: Redactor, keep: frozenset[str] = frozenset()) -> Any:
    """Redact every free-text string of a note (ids and enums kept) so no known customer field
    survives anywhere in the JSON."""
    if isinstance(body, dict):
        return {k: (v if k in keep else sanitise(v, redactor, keep)) for k, v in body.items()}
    if isinstance(body, list):
        return [sanitise(v, redactor, keep) for v in body]
    if isinstance(body, str) and redactor.leaks(body):
        return redactor.redact(body)
    return body


_KEEP = frozenset({"id", "criterion", "result", "tier", "status", "category", "rule", "root_cause", "speaker",
                   "minute", "seq", "scorer", "version", "rubric_id", "kind", "call_id", "from_call", "excerpt"})


def draft_note(call: dict[str, Any], rubric: Rubric, *, late_csat: float | None = None,
               ticket: dict[str, Any] | None = None, previous_focus: dict[str, Any] | None = None,
               use_detectors: bool = True, wait_for_detectors: bool = False, low_csat: float = 4.0, follow_up_calls: int = 5,
               now: datetime | None = None, tier1: "_tier1.Tier1Reader | None" = None,
               wait_for_tier1: bool = False) -> dict[str, Any]:
    """The note body (see ``livecoach.postcall.schema.NoteBody``) for a stored call.

    ``tier1`` (a :class:`~livecoach.postcall._tier1.Tier1Reader`) reads the dialogue windows for the
    judgements that need context; None, off, loading or failed: rules make them (and say so)."""
    t0 = time.perf_counter()
    now = now or datetime.now(timezone.utc)
    texts = [str(u.get("text") or "") for u in call.get("utterances", [])]
    redactor = Redactor.for_call(call.get("customer") or {}, texts)
    base: dict[str, Any] = {
        "call_id": call["call_id"], "status": "draft",
        "rubric": {"id": rubric.id, "version": rubric.version, "approval": rubric.approval.state},
        "channel": call.get("channel"), "queue": call.get("queue"),
        "criteria": [], "coaching": {"focus": None, "next_action": None, "follow_up": None, "strengths": []},
        "process_issues": [], "exception": None,
        "flags": {"low_confidence": False, "customer_risk": False, "compliance_gap": False,
                  "late_low_csat": False, "risk_reasons": []},
        "confidence": 0.0, "csat": late_csat if late_csat is not None else call.get("csat"),
        "previous_focus": None, "scorer": "rules", "signals_used": [], "judgements": {},
        "tier1": {"status": "not_used", "backend": None, "judgements": []},
        "drafted_at": now.isoformat(), "draft_ms": 0.0,
    }
    try:
        rubric.require_approved()
    except RubricNotApproved as exc:
        base["exception"] = {"rule": "rubric_not_approved", "reason": str(exc)}
        base["flags"]["low_confidence"] = True
        base["confidence"] = 0.0
        return _finish(base, redactor, t0)

    ctx0 = _Ctx(call, rubric, redactor, None)
    stop = _stop(ctx0, rubric, now, ticket)
    if stop is not None:
        base["exception"] = stop
        base["flags"]["low_confidence"] = True
        _risk(base, ctx0, late_csat, low_csat, ticket)
        return _finish(base, redactor, t0)

    scores = None
    if use_detectors:
        scores = _detectors.score([{"seq": t.seq, "speaker": t.speaker, "text": t.low} for t in ctx0.turns],
                                  wait=wait_for_detectors)
    ctx = ctx0 if scores is None else _Ctx(call, rubric, redactor, scores)
    if scores is not None:
        base["scorer"] = "rules+detectors"
    base["signals_used"] = sorted({s.get("kind") for s in ctx.signals if s.get("kind")})

    results = [RULES[k.id](ctx, k) if k.id in RULES else
               Result(k, "insufficient_evidence", reason="no scoring rule for this criterion")
               for k in rubric.ordered()]
    for r in results:  # no point without evidence
        if r.result == "missed" and not r.evidence:
            r.result, r.reason = "insufficient_evidence", r.reason or "no transcript evidence"
    contradictions = [r for r in results if r.reason.startswith("contradictory")]
    if contradictions:
        base["exception"] = {"rule": "contradictory_evidence",
                             "reason": "; ".join(f"{r.criterion.id}: {r.reason}" for r in contradictions)}
    issues = _process_issues(ctx, results)
    base["criteria"] = [_criterion_json(r) for r in results]
    base["process_issues"] = issues

    agent_missed = sorted((r for r in results if r.result == "missed" and r.root_cause == "agent"),
                          key=lambda r: TIER_ORDER[r.criterion.tier])
    if agent_missed and base["exception"] is None:
        f = agent_missed[0]
        base["coaching"] = {
            "focus": {"criterion": f.criterion.id, "label": f.criterion.label, "tier": f.criterion.tier,
                      "why": f.reason, "evidence": f.evidence},
            "next_action": f.criterion.next_action,
            "follow_up": {"criterion": f.criterion.id, "track_next_calls": follow_up_calls, "status": "open",
                          "observed": [], "improved": None},
            "strengths": [],
        }
    base["coaching"]["strengths"] = [{"criterion": r.criterion.id, "label": r.criterion.label, "evidence": r.evidence[:1]}
                                     for r in results if r.result == "met" and r.evidence][:2]
    if previous_focus and previous_focus.get("criterion"):
        prev = next((r for r in results if r.criterion.id == previous_focus["criterion"]), None)
        if prev is not None:
            base["previous_focus"] = {"criterion": prev.criterion.id, "from_call": previous_focus.get("call_id"),
                                      "source": previous_focus.get("source", "note"), "result": prev.result,
                                      "improved": {"met": True, "missed": False}.get(prev.result),
                                      "evidence": prev.evidence[:1]}

    base["confidence"] = _confidence(ctx, results)
    low = rubric.threshold("low_confidence", 0.6)
    base["flags"]["low_confidence"] = base["confidence"] < low or base["exception"] is not None
    base["flags"]["compliance_gap"] = any(r.result == "missed" and r.criterion.tier == "compliance" for r in results)
    judged = _context_judgements(base, ctx, tier1, wait_for_tier1)
    _risk(base, ctx, late_csat, low_csat, ticket, results, judged)
    _provenance(base, ctx, scores is not None, judged)
    return _finish(base, redactor, t0)


def _emotional(c: _Ctx) -> Any:
    flagged = set(c.signal_seqs("frustration_spike"))
    return lambda t: bool(c.cue("customer_emotion", t) or c.negative(t) or t.seq in flagged)


def _context_judgements(base: dict[str, Any], c: _Ctx, tier1, wait: bool) -> dict[str, Any]:
    """Run the context judgements (tier-1 when ready, else rules) and record their provenance."""
    status = "off"
    if tier1 is not None:
        status = "ready" if tier1.ready(wait) else tier1.status
    use = tier1 if status == "ready" else None
    j = _tier1.judge(c, use, evidence=c.evidence, emotional=_emotional(c))
    used = "tier1" in {j["complaint_resolved"]["source"], j["customer_risk"]["source"]}
    if use is not None and not used:
        status = "failed"
    by_t1 = [name for name in ("complaint_resolved", "customer_risk") if j[name]["source"] == "tier1"]
    if any(v["source"] == "tier1" for v in j["live_signals"]):
        by_t1.append("live_signals")
    base["judgements"] = {k: j[k] for k in ("complaint_resolved", "live_signals", "customer_risk")}
    base["tier1"] = {"status": "used" if used else status, "backend": tier1.name if (tier1 is not None and used) else None,
                     "judgements": by_t1, "windows_read": j["windows_read"], "elapsed_ms": j["elapsed_ms"],
                     "fallback": None if used else "rules: " + {
                         "off": "tier-1 is switched off (tier1_backend=off)", "loading": "tier-1 was still loading",
                         "unknown": "tier-1 was not loaded yet", "failed": "tier-1 failed to load or score",
                     }.get(status, status)}
    if used:
        base["scorer"] += "+tier1"
    cr = j["complaint_resolved"]
    if cr.get("value") is not None:  # the judgement informs how the close is read, never the result
        for k in base["criteria"]:
            if k["id"] == "verify_resolution":
                k["context"] = {"complaint_resolved": cr["value"], "source": cr["source"], "reason": cr["reason"]}
    return j


def _provenance(base: dict[str, Any], c: _Ctx, detectors: bool, j: dict[str, Any]) -> None:
    """Which inputs each criterion and flag rests on: rules, detectors, live_signals, tier1."""
    live = {s.get("kind") for s in c.signals}
    uses_detectors = {"acknowledge_emotion", "verify_resolution", "identity_verification", "required_disclosures"}
    uses_live = {"acknowledge_emotion": {"frustration_spike"}, "identity_verification": {"identity_not_verified"},
                 "required_disclosures": {"disclosure_missing", "consent_missing"}}
    for k in base["criteria"]:
        src = ["rules"]
        if detectors and k["id"] in uses_detectors:
            src.append("detectors")
        if live & uses_live.get(k["id"], set()):
            src.append("live_signals")
        if (k.get("context") or {}).get("source") == "tier1":
            src.append("tier1")
        k["sources"] = src
    risk = ["rules"]
    if live & CUSTOMER_RISK_SIGNALS:
        risk.append("live_signals")
    if "tier1" in {j["customer_risk"]["source"], j["complaint_resolved"]["source"]} or \
            any(v["source"] == "tier1" for v in j["live_signals"]):
        risk.append("tier1")
    base["flags"]["provenance"] = {"customer_risk": risk, "low_confidence": ["rules"],
                                   "compliance_gap": sorted({s for k in base["criteria"] if k["tier"] == "compliance"
                                                             for s in k["sources"]}) or ["rules"],
                                   "late_low_csat": ["csat"]}


def _risk(base: dict[str, Any], c: _Ctx, late_csat: float | None, low_csat: float,
          ticket: dict[str, Any] | None, results: list[Result] | None = None,
          judged: dict[str, Any] | None = None) -> None:
    reasons = base["flags"]["risk_reasons"]
    csat = late_csat if late_csat is not None else c.call.get("csat")
    if csat is not None and float(csat) <= low_csat:
        reasons.append(f"low CSAT {csat:g}")
        if late_csat is not None:
            base["flags"]["late_low_csat"] = True
    kinds = {s.get("kind") for s in c.signals} & CUSTOMER_RISK_SIGNALS
    verdicts: dict[str, list[str]] = {}
    for v in (judged or {}).get("live_signals") or []:
        verdicts.setdefault(v["kind"], []).append(v["verdict"])
    for k in sorted(kinds):
        vs = verdicts.get(k) or []
        if vs and all(x == "contradicted" for x in vs):
            continue  # tier-1 read the context of every such signal and found no support: not a risk
        reasons.append(f"live signal {k}" + (" (confirmed by tier-1)" if "supported" in vs else ""))
    if judged:
        cr, cr_risk = judged["complaint_resolved"], judged["customer_risk"]
        if cr.get("value") is False:
            reasons.append("the customer's complaint was still unresolved at the close"
                           + (" (tier-1)" if cr["source"] == "tier1" else ""))
        if cr_risk.get("value"):
            reasons.append(cr_risk["reason"])
    if ticket and int(ticket.get("escalations") or 0) > 0:
        reasons.append(f"{ticket['escalations']} escalation(s) on the ticket")
    for r in results or []:
        if r.criterion.id == "acknowledge_emotion" and r.result == "missed":
            reasons.append("the customer's emotion went unacknowledged")
    base["flags"]["customer_risk"] = bool(reasons)


def _finish(base: dict[str, Any], redactor: Redactor, t0: float) -> dict[str, Any]:
    body = sanitise(base, redactor, _KEEP)
    body["draft_ms"] = round((time.perf_counter() - t0) * 1000, 2)
    return body
