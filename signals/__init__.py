"""Signals: tier-0 detectors, compliance, (policy and tier-1 live beside them).

Tier-0 public API (detectors; see models/artefacts/MODEL_CARD.md for what the models are)
------------------------------------------------------------------------------------------
``Tier0Detectors(settings)``
    The pipeline stage (name "tier0", consumes ``calls``, produces ``detections``).
    ``await stage.start()`` loads the ONNX encoder (building its cache on first use);
    ``await stage.handle(event, state)`` returns candidate :class:`~livecoach.events.Signal` s
    (tier 0, audience "lead", evidence with seq/excerpt/t, ``details`` with the scores). Kinds:
    ``frustration_spike``, ``frustration_recovered``, ``churn_intent``, ``escalation_request``,
    ``complaint``, ``upgrade_interest``, ``abuse``, ``identity_not_verified``,
    ``disclosure_missing``, ``consent_missing``, ``secret_read_out``. Candidates under
    ``settings.detector_min_confidence`` are not emitted; thresholds for people are the policy's.

``score_utterances(utterances, settings=None) -> list[UtteranceScores]``
    Plain function for after the call (post-call QA, evaluation). ``utterances`` are
    :class:`~livecoach.events.Utterance` objects or dicts ``{"text", "speaker"?, "seq"?, "t_start"?}``.
    Each customer turn's :class:`UtteranceScores` has ``sentiment`` (negative|neutral|positive) and
    ``sentiment_probs``, ``intent`` (churn|escalation_request|complaint|upgrade_interest|none) and
    ``intent_probs``, ``abuse`` (P(offensive)) (on agent turns these keep their defaults with empty
    probability dicts: one encoder branch per turn), and each agent turn's ``behaviours`` (scores in [0, 1]
    for emotion_acknowledged, identity_verification_asked, disclosure_given, resolution_checked),
    ``behaviour_flags`` (those >= 0.5), ``disclosures`` (score per named disclosure) and
    ``matched`` (the exemplar or "rule" behind each flag). No server needed.

``Scorer`` (``Scorer.from_settings(settings)``; ``scorer.score([(text, speaker), ...])``)
    The synchronous core both of the above use.

``ComplianceMonitor`` / ``CompliancePolicy`` / ``ComplianceStage``
    The compliance checks (signals/compliance_policy.yaml); ``ComplianceStage`` runs them with
    rules only, for deployments without models (Tier0Detectors already includes them).

``BehaviourConfig``
    The agent-behaviour exemplars and rules (signals/behaviours.yaml).
"""

from livecoach.signals._behaviours import BEHAVIOURS, BehaviourConfig
from livecoach.signals._scoring import Scorer, UtteranceScores, score_utterances
from livecoach.signals.compliance import ComplianceMonitor, CompliancePolicy, ComplianceStage
from livecoach.signals.detectors import Tier0Detectors

__all__ = [
    "BEHAVIOURS", "BehaviourConfig", "ComplianceMonitor", "CompliancePolicy", "ComplianceStage", "Scorer",
    "Tier0Detectors", "UtteranceScores", "score_utterances",
]
