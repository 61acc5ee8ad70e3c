"""The signal policy: which detections reach the lead feed, which become an agent cue.

``SignalPolicy(settings)`` is a pipeline stage (DETECTIONS + CALLS -> SIGNALS). For each candidate
signal a detector proposes:

- **Lead feed**: passes when its confidence reaches the kind's lead threshold for the current phase.
  Not capped; every lead signal carries ``details.risk`` (kind weight x confidence) to rank by, and
  ``details.route`` when there is something to hand off (see :mod:`livecoach.signals.routing`).
  The same kind on the same call is raised again only after ``lead.repeat_after_s`` of call time.
- **Agent cue**: a separate signal (audience ``agent``) with a short observation and a nudge, never
  a script line. Only from phase 2, only kinds with an agent threshold for the phase, at most
  ``agent.cap_per_call`` (default 3, never above 4) per call, at least ``agent.cooldown_s``
  (default 60) apart and one per kind. Time is the call's own clock (utterance times), so a replay
  at 50x behaves like the live call; "the call is over" is judged on that clock too (a cue whose
  evidence, plus tier-1's latency, falls after the last utterance of the call is dropped).
- **Tier-1**: cases in the uncertainty band, or of a high-stakes kind, go to the larger model
  (:mod:`livecoach.signals.tier1`) with the last turns of context. The tier-0 lead signal is
  emitted first and never waits. Tier-1's verdict follows as its own lead signal (tier 1,
  ``details.verdict`` confirmed | rejected | rescored_up, ``details.supersedes``); an escalated
  agent cue waits for the verdict (at most the tier-1 timeout) and goes out only if tier-1
  confirms it. No verdict (queue full, timeout, error): the tier-0 decision stands.

The policy file (``settings.policy_file``, default ``signals/policy.yaml``) is re-read when it
changes. The phase is, latest change first: an admin's ``PUT /v1/signals/phase``, the file's
``phase:``, ``LIVECOACH_PHASE``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, OrderedDict
from functools import partial
from typing import Any, Awaitable, Callable, Sequence

from livecoach.bus import CALLS, DETECTIONS, SIGNALS
from livecoach.events import CallEnded, CallStarted, Event, Signal, Utterance, signal_id
from livecoach.pipeline import Stage
from livecoach.signals._policy_config import (AGENT_CAP_CEILING, KindPolicy, PolicyConfig, PolicyHolder,
                                              threshold_for)
from livecoach.signals.routing import is_alert, route_for
from livecoach.signals.tier1 import Tier1Backend, Tier1Case, Tier1Escalation, Tier1Verdict, make_backend

log = logging.getLogger(__name__)

_UNKNOWN_KIND = KindPolicy(risk=0.5, lead=0.5, agent=None)
_MAX_TURNS = 24  # context kept per call for tier-1
_ENDED_MEMORY = 5000  # calls whose cue budget is remembered after CallEnded (late detections)


class SignalPolicy(Stage):
    name = "policy"
    consumes = (DETECTIONS, CALLS)
    produces = SIGNALS

    def __init__(self, settings, *, tier1_backend: Tier1Backend | None = None):
        self.settings = settings
        self.holder = PolicyHolder(getattr(settings, "policy_file", None))
        cfg = self.holder.config
        self._phase = cfg.phase or int(settings.phase)
        self.phase_source = "policy file" if cfg.phase else "settings"
        self._file_phase = cfg.phase
        backend = tier1_backend if tier1_backend is not None else make_backend(settings)
        self.tier1 = Tier1Escalation(backend, queue_size=cfg.tier1.queue_size, timeout_s=cfg.tier1.timeout_s)
        self.stats: Counter = Counter()
        self._publish: Callable[[Signal], Awaitable[None]] | None = None
        self._outbox: dict[str, list[Signal]] = {}
        self._ended: OrderedDict[str, dict[str, Any]] = OrderedDict()

    # ------------------------------------------------------------------ runtime hooks
    def bind_publisher(self, publish: Callable[[Signal], Awaitable[None]]) -> None:
        """How tier-1 verdicts leave the stage between events (the pipeline binds this). Without
        it, verdicts go out with the call's next event."""
        self._publish = publish

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()  # where the stage runs (tests and tools publish into it)
        await self.tier1.start()

    async def stop(self) -> None:
        await self.tier1.stop()

    # ------------------------------------------------------------------ phase and config
    @property
    def phase(self) -> int:
        self.config()
        return self._phase

    def set_phase(self, phase: int, source: str = "admin") -> None:
        if not isinstance(phase, int) or not 1 <= phase <= 4:
            raise ValueError("phase must be 1, 2, 3 or 4")
        if phase != self._phase:
            log.info("rollout phase %s -> %s (%s)", self._phase, phase, source)
        self._phase, self.phase_source = phase, source

    def config(self) -> PolicyConfig:
        cfg, changed = self.holder.current()
        if changed:
            self._apply(cfg)
        return cfg

    def reload(self) -> PolicyConfig:
        cfg, changed = self.holder.reload(force=True)
        if changed:
            self._apply(cfg)
        return cfg

    def _apply(self, cfg: PolicyConfig) -> None:
        if cfg.phase is not None and cfg.phase != self._file_phase:
            self.set_phase(cfg.phase, "policy file")
        self._file_phase = cfg.phase
        self.tier1.timeout_s = cfg.tier1.timeout_s

    def describe(self) -> dict[str, Any]:
        cfg = self.config()
        return {"phase": self._phase, "phase_source": self.phase_source, "policy_file": str(self.holder.path),
                "policy_version": cfg.version, "reloads": self.holder.reloads, "error": self.holder.error,
                "audiences": self.audiences(), "policy": cfg.model_dump(mode="json")}

    def audiences(self, phase: int | None = None) -> dict[str, dict[str, float | None]]:
        """Per kind, the lead and agent thresholds in force (None: that audience does not get it)."""
        cfg = self.config()
        p = phase or self._phase
        return {k: {"lead": threshold_for(kp.lead, p), "agent": threshold_for(kp.agent, p) if p >= 2 else None}
                for k, kp in cfg.kinds.items()}

    # ------------------------------------------------------------------ the stage
    async def handle(self, event: Event, state: dict[str, Any]) -> Sequence[Event]:
        cfg = self.config()
        call_id = event.call_id
        if not state and call_id in self._ended:
            state.update(self._ended[call_id])
        _init(state)
        out: list[Signal] = []
        if isinstance(event, CallStarted):
            state["agent_id"] = event.agent_id
            state["queue"] = event.queue
        elif isinstance(event, Utterance):
            state["turns"].append([event.seq, event.speaker, event.text[:500], event.t_start])
            del state["turns"][:-_MAX_TURNS]
            t = event.t_end if event.t_end is not None else event.t_start
            if t is not None:
                state["clock"] = max(state["clock"], float(t))
        elif isinstance(event, CallEnded):
            state["ended"] = True
            state["end_clock"] = state["clock"]
            self._ended[call_id] = state
            while len(self._ended) > _ENDED_MEMORY:
                self._ended.popitem(last=False)
        elif isinstance(event, Signal):
            out.extend(self._decide(event, state, cfg))
        out.extend(self._outbox.pop(call_id, ()))
        return out

    def _decide(self, sig: Signal, state: dict[str, Any], cfg: PolicyConfig) -> list[Signal]:
        self.stats["candidates"] += 1
        kp = cfg.kind(sig.kind)
        if kp is None:
            self.stats["unknown_kind"] += 1
            kp = _UNKNOWN_KIND
        phase = self._phase
        conf = float(sig.confidence)
        t = _signal_time(sig, state)
        lead_th = threshold_for(kp.lead, phase)
        agent_th = threshold_for(kp.agent, phase) if phase >= 2 else None
        t1 = cfg.tier1
        lo, hi = t1.uncertainty_band
        escalate = (self.tier1.enabled and sig.kind in t1.kinds and conf >= lo
                    and (conf < hi or sig.kind in t1.high_stakes))
        out: list[Signal] = []

        lead_sig = None
        if lead_th is not None and conf >= lead_th:
            if self._lead_repeat_ok(state, sig.kind, t, cfg):
                lead_sig = self._lead_signal(sig, kp, conf, tier=0, verdict="pending" if escalate else "not_escalated")
                state["lead_last"][sig.kind] = t
                out.append(lead_sig)
            else:
                self.stats["lead_repeat_suppressed"] += 1

        cue_pending = None
        if agent_th is not None and conf >= agent_th:
            blocked = self._cue_blocked(state, sig.kind, t, cfg)
            if blocked:
                self.stats[f"cue_suppressed_{blocked}"] += 1
            elif escalate:
                cue_pending = _reserve(state, sig.kind, t)
            else:
                out.append(self._agent_cue(sig, kp, conf, state, tier=0, verdict="not_escalated"))
                _commit_cue(state, sig.kind, t)

        # escalate only when a verdict can change something: a lead signal to confirm or reject, a
        # cue waiting for it, or a case under the lead threshold that tier-1 might raise
        escalate = escalate and (lead_sig is not None or cue_pending is not None
                                 or (lead_th is not None and conf < lead_th))
        if escalate:
            turns = state["turns"][-t1.context_turns * 3:]
            case = _case(sig, turns, t1.context_turns)
            cb = partial(self._on_verdict, sig, kp, state, lead_sig, cue_pending, lead_th, agent_th)
            if not self.tier1.submit(case, cb):
                out.extend(self._verdict_signals(sig, kp, state, lead_sig, cue_pending, lead_th, agent_th,
                                                 Tier1Verdict("dropped", backend=self.tier1.backend.name)))
        return out

    # ------------------------------------------------------------------ tier-1 verdicts
    async def _on_verdict(self, sig, kp, state, lead_sig, cue_pending, lead_th, agent_th, verdict: Tier1Verdict):
        signals = self._verdict_signals(sig, kp, state, lead_sig, cue_pending, lead_th, agent_th, verdict)
        for s in signals:
            if self._publish is not None:
                await self._publish(s)
            else:
                self._outbox.setdefault(s.call_id, []).append(s)

    def _verdict_signals(self, sig: Signal, kp: KindPolicy, state: dict[str, Any], lead_sig: Signal | None,
                         cue_pending: dict | None, lead_th: float | None, agent_th: float | None,
                         verdict: Tier1Verdict) -> list[Signal]:
        cfg = self.holder.config
        out: list[Signal] = []
        if not verdict.has_score:  # the stated fallback: the tier-0 decision stands
            self.stats[f"tier1_fallback_{verdict.outcome}"] += 1
            if cue_pending is not None:
                if _over(state, _signal_time(sig, state) + verdict.latency_s):
                    _release(state, cue_pending)
                else:
                    out.append(self._agent_cue(sig, kp, float(sig.confidence), state, tier=0,
                                               verdict=verdict.outcome))
                    _confirm(state, cue_pending)
            return out
        p = float(verdict.probability)
        stands = p >= cfg.tier1.confirm_at
        tier0_lead = lead_th is not None and sig.confidence >= lead_th
        if tier0_lead == stands:
            self.tier1.stats.agree += 1
        else:
            self.tier1.stats.disagree += 1
        if lead_sig is not None:
            out.append(self._lead_signal(sig, kp, p, tier=1, verdict="confirmed" if stands else "rejected",
                                         supersedes=lead_sig.id, tier1=verdict))
        elif stands and lead_th is not None and p >= lead_th and self._lead_repeat_ok(state, sig.kind,
                                                                                       _signal_time(sig, state), cfg):
            state["lead_last"][sig.kind] = _signal_time(sig, state)
            out.append(self._lead_signal(sig, kp, p, tier=1, verdict="rescored_up", tier1=verdict))
        if cue_pending is not None:
            if stands and not _over(state, _signal_time(sig, state) + verdict.latency_s):
                out.append(self._agent_cue(sig, kp, p, state, tier=1, verdict="confirmed", tier1=verdict))
                _confirm(state, cue_pending)
            else:
                self.stats["cue_rejected_by_tier1" if not stands else "cue_dropped_call_ended"] += 1
                _release(state, cue_pending)
        return out

    # ------------------------------------------------------------------ building signals
    def _lead_signal(self, sig: Signal, kp: KindPolicy, conf: float, *, tier: int, verdict: str,
                     supersedes: str | None = None, tier1: Tier1Verdict | None = None) -> Signal:
        route = route_for(sig.kind, kp.route)
        risk = 0.0 if verdict == "rejected" else round(kp.risk * conf, 4)
        details = dict(sig.details)
        details.update(risk=risk, decided_by=f"tier{tier}", verdict=verdict, phase=self._phase,
                       policy_version=self.holder.config.version, tier0_confidence=round(float(sig.confidence), 4))
        if route:
            details["route"] = route
            details["alert"] = is_alert(route)
        if tier1 is not None:
            details["tier1"] = _tier1_details(tier1, conf)
        ident = ""
        if supersedes:
            details["supersedes"] = supersedes
        if tier == 1:
            ident = signal_id(sig.call_id, f"{sig.kind}/tier1", "lead", [e.seq for e in sig.evidence])
        self.stats[f"lead_{verdict}"] += 1
        return Signal(call_id=sig.call_id, id=ident, kind=sig.kind, confidence=round(conf, 4), tier=tier,
                      audience="lead", evidence=sig.evidence, message=sig.message or kp.cue,
                      detector=sig.detector, details=details)

    def _agent_cue(self, sig: Signal, kp: KindPolicy, conf: float, state: dict[str, Any], *, tier: int,
                   verdict: str, tier1: Tier1Verdict | None = None) -> Signal:
        details = {"agent_id": state.get("agent_id"), "decided_by": f"tier{tier}", "verdict": verdict,
                   "phase": self._phase, "tier0_confidence": round(float(sig.confidence), 4),
                   "cue_number": state["cue"]["sent"] + 1}
        if tier1 is not None:
            details["tier1"] = _tier1_details(tier1, conf)
        self.stats["agent_cues"] += 1
        return Signal(call_id=sig.call_id, kind=sig.kind, confidence=round(conf, 4), tier=tier, audience="agent",
                      evidence=sig.evidence, message=kp.cue, detector=sig.detector, details=details)

    # ------------------------------------------------------------------ budgets
    def _lead_repeat_ok(self, state: dict[str, Any], kind: str, t: float, cfg: PolicyConfig) -> bool:
        last = state["lead_last"].get(kind)
        return last is None or t - last >= cfg.lead.repeat_after_s

    def _cue_blocked(self, state: dict[str, Any], kind: str, t: float, cfg: PolicyConfig) -> str | None:
        cue = state["cue"]
        if _over(state, t):
            return "call_ended"
        if state.get("agent_id") is None:
            return "call_unknown"  # no CallStarted seen: we do not know whose screen it is
        if kind in cue["kinds"]:
            return "same_kind"
        if cue["sent"] + cue["reserved"] >= min(cfg.agent.cap_per_call, AGENT_CAP_CEILING):
            return "cap"
        if cue["last_t"] is not None and t - cue["last_t"] < cfg.agent.cooldown_s:
            return "cooldown"
        return None


# ---------------------------------------------------------------------- per-call state helpers

def _init(state: dict[str, Any]) -> None:
    if "cue" in state:
        return
    state.setdefault("agent_id", None)
    state.setdefault("queue", None)
    state.setdefault("turns", [])
    state.setdefault("clock", 0.0)
    state.setdefault("ended", False)
    state.setdefault("lead_last", {})
    state["cue"] = {"sent": 0, "reserved": 0, "last_t": None, "kinds": []}


def _over(state: dict[str, Any], t: float) -> bool:
    """Had the call ended by call-clock time ``t``? Judged on the call's own clock, so a replay at
    50x (where CallEnded can overtake a detection or a tier-1 verdict) cues exactly as live would."""
    return bool(state.get("ended")) and t > float(state.get("end_clock") or 0.0)


def _signal_time(sig: Signal, state: dict[str, Any]) -> float:
    ts = [e.t for e in sig.evidence if e.t is not None]
    return float(max(ts)) if ts else float(state.get("clock") or 0.0)


def _reserve(state: dict[str, Any], kind: str, t: float) -> dict[str, Any]:
    cue = state["cue"]
    token = {"kind": kind, "t": t, "prev_last_t": cue["last_t"]}
    cue["reserved"] += 1
    cue["kinds"].append(kind)
    cue["last_t"] = t
    return token


def _confirm(state: dict[str, Any], token: dict[str, Any]) -> None:
    cue = state["cue"]
    cue["reserved"] -= 1
    cue["sent"] += 1


def _release(state: dict[str, Any], token: dict[str, Any]) -> None:
    cue = state["cue"]
    cue["reserved"] -= 1
    if token["kind"] in cue["kinds"]:
        cue["kinds"].remove(token["kind"])
    if cue["last_t"] == token["t"]:
        cue["last_t"] = token["prev_last_t"]


def _commit_cue(state: dict[str, Any], kind: str, t: float) -> None:
    cue = state["cue"]
    cue["sent"] += 1
    cue["kinds"].append(kind)
    cue["last_t"] = t


def _case(sig: Signal, turns: list[list[Any]], n: int) -> Tier1Case:
    """The window ends at the evidence utterance (the latest evidence seq), n turns long."""
    seqs = [e.seq for e in sig.evidence]
    last = max(seqs) if seqs else None
    upto = [tr for tr in turns if last is None or tr[0] <= last]
    window = tuple((str(tr[1]), str(tr[2])) for tr in upto[-n:])
    target = next((e.excerpt for e in sig.evidence if e.seq == last and e.excerpt), "")
    if not target:
        target = next((tr[2] for tr in reversed(upto) if tr[1] == "customer"), upto[-1][2] if upto else "")
    if not window and target:
        window = (("customer", target),)
    return Tier1Case(sig.call_id, sig.kind, float(sig.confidence), window, target)


def _tier1_details(tier1: Tier1Verdict, conf: float) -> dict[str, Any]:
    """What a signal records of the tier-1 verdict that decided it."""
    return {"backend": tier1.backend, "model": tier1.model, "probability": round(conf, 4),
            "latency_ms": round(tier1.latency_s * 1000, 1)}
