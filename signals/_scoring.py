"""Per-utterance scores: one encoder pass per utterance, through the branch its speaker needs.

Customer turns go through the sentiment-tuned branch, which feeds the sentiment, intent and abuse
heads; agent turns go through the unchanged sentence embedding, which feeds the agent behaviours
(exemplar similarity). Each utterance costs one 6-layer pass, not both branches (9 layers).
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from livecoach.signals._behaviours import AgentBehaviours, BehaviourConfig, clean_text

SENTIMENT_LABELS = ("negative", "neutral", "positive")
INTENT_LABELS = ("churn", "escalation_request", "complaint", "upgrade_interest", "none")
CUSTOMER_HEADS = ("sentiment", "intent", "abuse")


@dataclass
class UtteranceScores:
    """What tier 0 thinks of one utterance. Probabilities are calibrated (temperature-scaled).

    ``sentiment``/``intent``/``abuse`` are scored for customer turns (any speaker but "agent");
    on agent turns they keep their defaults ("neutral", "none", 0.0) with empty probability dicts.
    ``behaviours`` (agent turns only; empty for customers) maps emotion_acknowledged,
    identity_verification_asked, disclosure_given, resolution_checked to a score in [0, 1];
    ``behaviour_flags`` holds those with score >= 0.5. ``empty`` is True when nothing was left after
    removing transcription markers ("[noise]"); such an utterance scores neutral / none.
    """

    text: str
    speaker: str
    seq: int | None = None
    t: float | None = None
    sentiment: str = "neutral"
    sentiment_probs: dict[str, float] = field(default_factory=dict)
    intent: str = "none"
    intent_probs: dict[str, float] = field(default_factory=dict)
    abuse: float = 0.0
    behaviours: dict[str, float] = field(default_factory=dict)
    behaviour_flags: list[str] = field(default_factory=list)
    disclosures: dict[str, float] = field(default_factory=dict)
    consent_asked: float = 0.0
    matched: dict[str, str] = field(default_factory=dict)
    empty: bool = False

    @property
    def negativity(self) -> float:
        return float(self.sentiment_probs.get("negative", 0.0))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _r(x: float) -> float:
    return round(float(x), 4)


def _rounded(a: np.ndarray) -> list:
    """``a`` rounded to 4 decimals as (nested) Python floats, in one pass."""
    return np.round(np.asarray(a, np.float64), 4).tolist()


_BLAS = None


def _one_blas_thread():
    global _BLAS
    if _BLAS is None:
        try:
            from threadpoolctl import ThreadpoolController

            _BLAS = ThreadpoolController()
        except Exception:  # threadpoolctl missing: run unlimited
            _BLAS = False
    if _BLAS is False:
        import contextlib

        return contextlib.nullcontext()
    return _BLAS.limit(limits=1, user_api="blas")


class Scorer:
    """Encoder + heads + agent behaviours. Synchronous and thread-safe; the stage batches into it."""

    def __init__(self, encoder, heads: dict, behaviours: BehaviourConfig):
        self.encoder = encoder
        self.heads = heads
        self.cfg = behaviours
        self.behaviours = AgentBehaviours(behaviours, lambda xs: encoder.encode(xs, outputs=("emb",)).emb)
        # the branches a customer turn needs (the agent behaviours read "emb")
        self.customer_inputs = sorted({h.input for n, h in heads.items() if n in CUSTOMER_HEADS})

    @classmethod
    def from_settings(cls, settings=None, progress=None) -> "Scorer":
        from livecoach.models.encoder import load_encoder
        from livecoach.models.heads import load_heads

        kw = {"progress": progress} if progress else {}
        enc = load_encoder(settings, **kw)
        return cls(enc, load_heads(), BehaviourConfig.load(getattr(settings, "behaviours_file", None)))

    def score(self, items: Sequence[tuple[str, str]]) -> list[UtteranceScores]:
        """``items``: ``(text, speaker)`` pairs; returns one :class:`UtteranceScores` each, in order."""
        out = [UtteranceScores(text=t, speaker=s) for t, s in items]
        cleaned = [clean_text(t) for t, _ in items]
        live = [i for i, c in enumerate(cleaned) if c]
        for i, c in enumerate(cleaned):
            if not c:
                out[i].empty = True
                out[i].sentiment_probs = {"negative": 0.0, "neutral": 1.0, "positive": 0.0}
                out[i].intent_probs = {k: (1.0 if k == "none" else 0.0) for k in INTENT_LABELS}
        if not live:
            return out
        agent_rows = [k for k, i in enumerate(live) if items[i][1] == "agent"]
        cust_rows = [k for k, i in enumerate(live) if items[i][1] != "agent"]
        rows = {o: list(cust_rows) for o in self.customer_inputs} if cust_rows else {}
        if agent_rows:
            rows["emb"] = rows.get("emb", []) + agent_rows
        feats = self.encoder.encode_groups({o: [cleaned[live[k]] for k in r] for o, r in rows.items()})
        # numpy's BLAS threads would wake up for these small products and fight onnxruntime's for
        # the same two cores (measured: +50 % per batch); the heads run on the calling thread.
        with _one_blas_thread():
            cust = {}
            if cust_rows:  # customer rows come first in every branch they use
                n = len(cust_rows)
                for name in CUSTOMER_HEADS:
                    if name in self.heads:
                        cust[name] = self.heads[name].probs(feats[self.heads[name].input][:n])
            beh = []
            if agent_rows:
                e = feats["emb"][len(rows["emb"]) - len(agent_rows):]
                beh = self.behaviours.score([cleaned[live[k]] for k in agent_rows], e)
        if cust_rows:
            sp, ip = cust["sentiment"], cust["intent"]
            sp_r, ip_r = _rounded(sp), _rounded(ip)
            ab_r = _rounded(cust["abuse"][:, 1]) if "abuse" in cust else [0.0] * len(cust_rows)
            s_arg, i_arg = sp.argmax(1).tolist(), ip.argmax(1).tolist()
            for j, k in enumerate(cust_rows):
                o = out[live[k]]
                o.sentiment_probs = dict(zip(SENTIMENT_LABELS, sp_r[j]))
                o.sentiment = SENTIMENT_LABELS[s_arg[j]]
                o.intent_probs = dict(zip(INTENT_LABELS, ip_r[j]))
                o.intent = INTENT_LABELS[i_arg[j]]
                o.abuse = ab_r[j]
        for k, b in zip(agent_rows, beh):
            o = out[live[k]]
            o.behaviours = b["behaviours"]
            o.behaviour_flags = sorted(n for n, s in b["behaviours"].items() if s >= 0.5)
            o.disclosures = b["disclosures"]
            o.consent_asked = b["consent"]
            o.matched = b["matched"]
        return out


_DEFAULT: Scorer | None = None
_LOCK = threading.Lock()


def default_scorer(settings=None) -> Scorer:
    """A process-wide scorer (built on first use; the encoder cache too)."""
    global _DEFAULT
    with _LOCK:
        if _DEFAULT is None:
            _DEFAULT = Scorer.from_settings(settings)
        return _DEFAULT


def score_utterances(utterances: Iterable[Any], settings=None, *, scorer: Scorer | None = None,
                     batch_size: int = 64) -> list[UtteranceScores]:
    """Score recorded utterances after the fact (post-call QA, evaluation, notebooks).

    ``utterances``: :class:`livecoach.events.Utterance` objects or dicts with ``text`` and optional
    ``speaker`` (default "customer"), ``seq``, ``t_start``. Returns one :class:`UtteranceScores` per
    input, in order. Loads the encoder on first use (building its cache if needed).
    """
    sc = scorer or default_scorer(settings)
    rows = []
    for u in utterances:
        get = u.get if isinstance(u, dict) else (lambda k, d=None, _u=u: getattr(_u, k, d))
        rows.append((str(get("text", "")), str(get("speaker", "customer") or "customer"), get("seq"),
                     get("t_start", get("t"))))
    out: list[UtteranceScores] = []
    for i in range(0, len(rows), batch_size):
        chunk = rows[i:i + batch_size]
        scored = sc.score([(t, s) for t, s, _, _ in chunk])
        for o, (_, _, seq, t) in zip(scored, chunk):
            o.seq, o.t = seq, t
        out += scored
    return out
