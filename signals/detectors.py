"""The tier-0 stage: every final utterance and agent action of every call, through fast detectors.

``Tier0Detectors(settings)`` consumes ``calls`` and produces signal candidates on ``detections``
(tier 0, audience "lead"); the policy stage downstream decides who sees what. Kinds:

customer turns   churn_intent, escalation_request, complaint, upgrade_interest (intent head),
                 abuse (offensive-language head), frustration_spike / frustration_recovered
                 (smoothed P(negative), with minute marks)
agent turns      secret_read_out (card number + Luhn, SSN)
the call         identity_not_verified, disclosure_missing, consent_missing (compliance policy)

Utterances of all concurrent calls share one encoder through a :class:`MicroBatcher`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Sequence

from livecoach.bus import CALLS, DETECTIONS
from livecoach.events import AgentAction, CallEnded, CallStarted, Event, EvidenceRef, Signal, Utterance, minute_mark
from livecoach.pipeline import Stage
from livecoach.signals import _inflection
from livecoach.signals._behaviours import BehaviourConfig, clean_text
from livecoach.signals.compliance import ComplianceMonitor, CompliancePolicy

log = logging.getLogger(__name__)

INTENT_KINDS = {"churn": "churn_intent", "escalation_request": "escalation_request", "complaint": "complaint",
                "upgrade_interest": "upgrade_interest"}
INTENT_MESSAGES = {"churn": "Customer may want to leave (close the account / cancel)",
                   "escalation_request": "Customer asks for a manager / a human",
                   "complaint": "Customer is making a complaint",
                   "upgrade_interest": "Customer shows interest in more product (upgrade / extra)"}
DETECTOR = "tier0"


def _excerpt(text: str, n: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


class Tier0Detectors(Stage):
    name = "tier0"
    consumes = (CALLS,)
    produces = DETECTIONS

    def __init__(self, settings=None, scorer=None):
        if settings is None:
            from livecoach.settings import Settings

            settings = Settings()
        self.settings = settings
        self.scorer = scorer
        self.batcher = None
        self.min_conf = float(getattr(settings, "detector_min_confidence", 0.3))
        self.behaviour_cfg = BehaviourConfig.load(getattr(settings, "behaviours_file", None))
        self.monitor = ComplianceMonitor(CompliancePolicy.load(getattr(settings, "compliance_policy_file", None)),
                                         self.behaviour_cfg.consent)
        self.inflection = _inflection.InflectionConfig()

    async def start(self) -> None:
        """Load the encoder (building its ONNX cache on first use), heads and exemplars."""
        if not getattr(self.settings, "detectors", True):
            return
        from livecoach.models.batcher import MicroBatcher
        from livecoach.signals._scoring import Scorer

        if self.scorer is None:
            self.scorer = await asyncio.to_thread(Scorer.from_settings, self.settings)
        self.batcher = MicroBatcher(self.scorer.score, max_batch=getattr(self.settings, "detector_batch_max", 32),
                                    max_wait_ms=getattr(self.settings, "detector_batch_wait_ms", 2.0),
                                    name="tier0-encoder")

    async def stop(self) -> None:
        if self.batcher is not None:
            await self.batcher.aclose()
            self.batcher = None

    async def _score(self, text: str, speaker: str):
        if self.batcher is None:
            if self.scorer is None:
                await self.start()
            if self.batcher is None:  # detectors off: rules only
                return None
        return await self.batcher.submit((text, speaker))

    # ---- the stage ---------------------------------------------------------------------------

    async def handle(self, event: Event, state: dict[str, Any]) -> Sequence[Event]:
        if isinstance(event, CallStarted):
            found = self.monitor.start(event, state)
            return [f.to_signal(event.call_id, f"{DETECTOR}.compliance") for f in found]
        if isinstance(event, AgentAction):
            found = self.monitor.action(event, state)
            return [f.to_signal(event.call_id, f"{DETECTOR}.compliance") for f in found]
        if isinstance(event, CallEnded):
            found = self.monitor.end(event, state)
            return [f.to_signal(event.call_id, f"{DETECTOR}.compliance") for f in found]
        if isinstance(event, Utterance) and event.final:
            return await self._utterance(event, state)
        return []

    async def _utterance(self, ev: Utterance, state: dict) -> list[Signal]:
        out: list[Signal] = []
        t = ev.t_start
        if not clean_text(ev.text):
            found = self.monitor.utterance(ev, state)
            return [f.to_signal(ev.call_id, f"{DETECTOR}.compliance") for f in found]
        sc = await self._score(ev.text, ev.speaker)
        ref = [EvidenceRef(seq=ev.seq, excerpt=_excerpt(ev.text), t=t)]
        if sc is None:  # no models: compliance on rules only
            r = self.behaviour_cfg.rule_scores(ev.text) if ev.speaker == "agent" else {}
            found = self.monitor.utterance(ev, state, disclosure=r.get("disclosures", {}),
                                           consent_asked=r.get("consent", 0.0))
            return [f.to_signal(ev.call_id, f"{DETECTOR}.compliance") for f in found]
        if ev.speaker == "customer":
            for label, kind in INTENT_KINDS.items():
                p = sc.intent_probs.get(label, 0.0)
                if p >= self.min_conf:
                    out.append(Signal(call_id=ev.call_id, kind=kind, confidence=round(p, 4), tier=0, audience="lead",
                                      evidence=ref, message=f"{INTENT_MESSAGES[label]} at {minute_mark(t) or '?'}",
                                      detector=f"{DETECTOR}.intent",
                                      details={"intent_probs": sc.intent_probs, "sentiment": sc.sentiment_probs}))
            if sc.abuse >= max(self.min_conf, 0.5):
                out.append(Signal(call_id=ev.call_id, kind="abuse", confidence=round(sc.abuse, 4), tier=0,
                                  audience="lead", evidence=ref,
                                  message=f"Offensive language from the customer at {minute_mark(t) or '?'}",
                                  detector=f"{DETECTOR}.abuse", details={"p_offensive": sc.abuse}))
            inf = _inflection.update(state, sc.negativity, ev.seq, t, ev.text, self.inflection)
            if inf is not None and inf["confidence"] >= self.min_conf:
                evidence = ref
                if inf["kind"] == "frustration_recovered":
                    evidence = [EvidenceRef(seq=inf["spike_seq"], excerpt="", t=inf["spike_t"])] + ref
                out.append(Signal(call_id=ev.call_id, kind=inf["kind"], confidence=round(inf["confidence"], 4),
                                  tier=0, audience="lead", evidence=evidence, message=inf["message"],
                                  detector=f"{DETECTOR}.sentiment", details=inf["details"]))
        found = self.monitor.utterance(ev, state, behaviours=sc.behaviours, disclosure=sc.disclosures,
                                       consent_asked=sc.consent_asked)
        if ev.speaker == "agent":
            beh = state.setdefault("behaviours", {})
            for name in sc.behaviour_flags:
                beh.setdefault(name, ev.seq)  # first seq at which the agent showed it (for post-call)
        out += [f.to_signal(ev.call_id, f"{DETECTOR}.compliance") for f in found]
        return out
