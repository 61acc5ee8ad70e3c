"""Judgements that need context, read by the tier-1 window classifier (``livecoach.signals.tier1``).

Tier-0 rules and detectors look at one utterance at a time; three questions on a QA note need the
dialogue around it:

``complaint_resolved``
    The customer complained (or was frustrated) earlier: does the closing window still read as a
    complaint, churn or escalation? Tier-1 reads the last turns up to the customer's last words.
``live_signals``
    Each churn / escalation / complaint signal raised live: does tier-1, reading the window up to
    its evidence, support or contradict it, and did the call end with it resolved?
``customer_risk``
    Churn or escalation intent over the customer's last turns (a risk the lead should see first).

The model runs synchronously in the drafter's worker thread (one batched encoder pass per note).
Whenever tier-1 is off, still loading or broken, the same judgements are made by rules (cue
regexes, tier-0 sentiment, live signals) and say ``"source": "rules"``: a note is never lost or
held back for tier-1.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Sequence

log = logging.getLogger(__name__)

RISK_LABELS = ("churn", "escalation_request", "complaint")
KIND_LABEL = {"churn_intent": "churn", "escalation_request": "escalation_request", "complaint": "complaint"}
COMPLAINT_KINDS = {"complaint", "frustration_spike", "churn_intent", "escalation_request"}
WINDOW_TURNS = 6          # turns of context tier-1 reads, the target turn last
LAST_CUSTOMER_TURNS = 3   # "customer risk" looks at the customer's last N turns
# Calibrated on the 60 Harper Valley dev calls (ordinary, resolved bank calls): over the customer's
# last 3 turns of each (179 windows) P(churn + escalation + complaint) has median 0.009, p99 0.071,
# max 0.095, and P(churn) or P(escalation) max 0.082. The model is conservative (a plain "i want to
# speak to your manager" after a refusal reads 0.15), so the bars sit just above the ordinary maximum.
UNRESOLVED_AT = 0.15      # P(churn + escalation + complaint) in the closing window
RISK_AT = 0.15            # P(churn) or P(escalation) in one of the last turns
SUPPORTED_AT = 0.15       # tier-1 P(kind) at a live signal's evidence
CONTRADICTED_BELOW = 0.05
MAX_WINDOWS = 16
RETRY_AFTER_S = 600.0


# ------------------------------------------------------------------ the backend, loaded once

class Tier1Reader:
    """A tier-1 backend (``make_backend(settings)`` from ``livecoach.signals.tier1``, or one handed
    over, e.g. the policy stage's) plus its load state. ``probs`` is sync: call it off the loop."""

    def __init__(self, backend=None, *, settings=None):
        self._backend = backend
        self._settings = settings
        self._state = "unknown"  # unknown | loading | ready | failed | off
        self._failed_at = 0.0
        self._lock = threading.Lock()
        if backend is None and settings is not None and getattr(settings, "tier1_backend", "model") == "off":
            self._state = "off"
        elif backend is not None and getattr(backend, "name", "") == "off":
            self._state = "off"

    @property
    def status(self) -> str:
        return self._state

    @property
    def name(self) -> str:
        return str(getattr(self._backend, "name", "") or getattr(self._settings, "tier1_backend", ""))

    def warm_up(self) -> bool:
        """Load the backend (blocking). A failure is remembered for ``RETRY_AFTER_S``."""
        if self._state == "off":
            return False
        with self._lock:
            if self._state == "ready":
                return True
            if self._state == "failed" and time.monotonic() - self._failed_at < RETRY_AFTER_S:
                return False
            self._state = "loading"
            try:
                if self._backend is None:
                    from livecoach.signals.tier1 import make_backend

                    self._backend = make_backend(self._settings)
                self._backend.warm_up()
            except Exception as exc:
                self._state, self._failed_at = "failed", time.monotonic()
                log.warning("postcall: tier-1 unavailable (%s: %s); context judgements use rules",
                            type(exc).__name__, exc)
                return False
            self._state = "ready"
            return True

    def ready(self, wait: bool = False) -> bool:
        return self._state == "ready" or (wait and self.warm_up())

    def probs(self, targets: Sequence[str], windows: Sequence[Sequence[tuple[str, str]]]) -> list[dict[str, float]]:
        """[{label: p}] per window. The window classifier answers all windows in one batch; another
        backend (chat) is asked P(kind) per risk kind through its public ``score``."""
        b = self._backend
        if hasattr(b, "probs") and hasattr(b, "labels"):
            P = b.probs(list(targets), [tuple(w) for w in windows])
            return [{lab: float(p[i]) for i, lab in enumerate(b.labels)} for p in P]
        from livecoach.signals.tier1 import Tier1Case

        out = []
        for t, w in zip(targets, windows):
            d: dict[str, float] = {}
            for kind, lab in KIND_LABEL.items():
                p = b.score(Tier1Case("postcall", kind, 0.0, tuple(w), t))
                if p is not None:
                    d[lab] = float(p)
            out.append(d)
        return out


_shared: dict[Any, Tier1Reader] = {}
_shared_lock = threading.Lock()


def reader_for(settings, backend=None) -> Tier1Reader:
    """One reader per backend object (or per settings' backend kind + cache dir): notes share the
    loaded model instead of loading it per note."""
    key = id(backend) if backend is not None else (getattr(settings, "tier1_backend", "model"),
                                                    str(getattr(settings, "cache_dir", "")))
    with _shared_lock:
        r = _shared.get(key)
        if r is None:
            r = _shared[key] = Tier1Reader(backend, settings=settings)
        return r


# ------------------------------------------------------------------ the judgements

def _window(turns, idx: int) -> tuple[tuple[str, str], ...]:
    return tuple((t.speaker, t.text) for t in turns[max(0, idx - WINDOW_TURNS + 1): idx + 1])


def _risk_mass(p: dict[str, float]) -> float:
    return sum(p.get(k, 0.0) for k in RISK_LABELS)


def judge(ctx, reader: Tier1Reader | None, *, evidence: Callable, emotional: Callable) -> dict[str, Any]:
    """The context judgements for a note (see the module doc). ``ctx`` is the scorer's context
    (turns, customer turns, live signals); ``evidence(turn)`` makes a redacted evidence item;
    ``emotional(turn)`` is the rules' "the customer shows frustration" test."""
    t0 = time.perf_counter()
    turns = ctx.turns
    pos = {t.seq: i for i, t in enumerate(turns)}
    cust = [t for t in ctx.customer if len(t.words) >= 2] or list(ctx.customer)
    last_cust = cust[-LAST_CUSTOMER_TURNS:]
    closing = last_cust[-1] if last_cust else None

    # candidates: where the rules, the detectors or a live signal saw a complaint
    live = [s for s in ctx.signals if s.get("kind") in COMPLAINT_KINDS]
    live_seq = {}
    for s in live:
        seqs = [int(e["seq"]) for e in s.get("evidence") or [] if isinstance(e, dict) and "seq" in e]
        if seqs and max(seqs) in pos:
            live_seq.setdefault((s.get("kind"), max(seqs)), s)
    rule_hits = [t for t in ctx.customer if emotional(t) and (closing is None or t.seq < closing.seq)]
    intent_hits = [t for t in ctx.customer if ((ctx.scores.get(t.seq) or {}).get("intent") or (None, 0))[0]
                   in ("complaint", "churn", "churn_intent", "escalation_request")]

    use_t1 = reader is not None and reader.status == "ready"
    P: dict[int, dict[str, float]] = {}
    if use_t1:
        want = [t.seq for t in last_cust]
        want += [seq for (_k, seq) in live_seq]
        want += [t.seq for t in rule_hits[:4]] + [t.seq for t in intent_hits[:4]]
        want = list(dict.fromkeys(s for s in want if s in pos))[:MAX_WINDOWS]
        try:
            rows = reader.probs([turns[pos[s]].text for s in want], [_window(turns, pos[s]) for s in want])
            P = dict(zip(want, rows))
        except Exception as exc:  # tier-1 broke mid-flight: rules decide this note
            log.warning("postcall: tier-1 scoring failed (%s: %s); rules decide", type(exc).__name__, exc)
            use_t1, P = False, {}
    src = "tier1" if use_t1 else "rules"
    out: dict[str, Any] = {}

    # -- was there a complaint, and was it resolved by the end?
    t1_hits = [turns[pos[s]] for s, p in P.items() if closing is not None and s < closing.seq
               and max(p.get(k, 0.0) for k in RISK_LABELS) >= SUPPORTED_AT]
    raised_at = sorted({t.seq: t for t in rule_hits + t1_hits + [turns[pos[s]] for (_k, s) in live_seq
                                                               if closing is None or s < closing.seq]}.values(),
                       key=lambda t: t.seq)
    raised_by = sorted(name for name, hit in (("rules", rule_hits), ("tier1", t1_hits), ("live_signals", live_seq),
                                              ("detectors", intent_hits)) if hit)
    if raised_at and closing is not None:
        close_rules = any(emotional(t) for t in last_cust[-2:])
        reading: dict[str, Any] = {"rules": {"closing_emotion": close_rules}}
        read = [t for t in last_cust[-2:] if t.seq in P]  # the closing window: the customer's last 2 turns
        if use_t1 and read:
            worst = max(read, key=lambda t: _risk_mass(P[t.seq]))
            p = P[worst.seq]
            mass = round(_risk_mass(p), 3)
            top = max(p, key=p.get) if p else None
            reading["tier1"] = {"p_unresolved": mass, "threshold": UNRESOLVED_AT, "seq": worst.seq, "top": top,
                                "p_top": round(p.get(top, 0.0), 3) if top else None}
            unresolved = mass >= UNRESOLVED_AT or close_rules
            how = (f"tier-1 read the closing window: P(complaint/churn/escalation) {mass:.2f}"
                   + (" and the customer's last words still show frustration" if close_rules else ""))
        else:
            unresolved = close_rules
            how = ("the customer's last words still show frustration" if close_rules
                   else "no frustration cue in the customer's last words (rules)")
        out["complaint_resolved"] = {
            "value": not unresolved, "source": src, "raised_by": raised_by, "reading": reading,
            "reason": ("unresolved at the close: " if unresolved else "resolved by the close: ") + how,
            "evidence": [evidence(raised_at[0]), evidence(closing)],
        }
    else:
        out["complaint_resolved"] = {"value": None, "source": src, "raised_by": raised_by,
                                     "reason": "no complaint or frustration before the close"}

    # -- live risk signals: supported or contradicted by the context, and resolved by the end?
    verdicts = []
    resolved = out["complaint_resolved"].get("value")
    for (kind, seq), s in sorted(live_seq.items(), key=lambda kv: kv[0][1]):
        lab = KIND_LABEL.get(kind)
        v: dict[str, Any] = {"kind": kind, "signal_id": s.get("id"), "seq": seq, "source": src,
                             "resolved_by_end": resolved if seq < (closing.seq if closing else seq + 1) else None}
        if use_t1 and lab and seq in P and lab in P[seq]:
            p = P[seq][lab]
            v["p"] = round(p, 3)
            v["verdict"] = ("supported" if p >= SUPPORTED_AT else "contradicted" if p < CONTRADICTED_BELOW
                            else "uncertain")
        else:
            v["source"] = "rules"
            v["verdict"] = "not_checked"  # tier-1 off, or a kind it does not model (frustration)
        v["evidence"] = [evidence(turns[pos[seq]])]
        verdicts.append(v)
    out["live_signals"] = verdicts

    # -- churn / escalation intent over the customer's last turns
    risk: dict[str, Any] = {"value": False, "source": src, "turns": len(last_cust)}
    if use_t1:
        best = None
        for t in last_cust:
            p = P.get(t.seq) or {}
            for lab in ("churn", "escalation_request"):
                if p.get(lab, 0.0) >= RISK_AT and (best is None or p[lab] > best[2]):
                    best = (t, lab, p[lab])
        if best is not None:
            t, lab, p = best
            risk.update(value=True, label=lab, p=round(p, 3), evidence=[evidence(t)],
                        reason=f"tier-1: {lab.replace('_', ' ')} intent in the customer's last "
                               f"{len(last_cust)} turns (p {p:.2f})")
        else:
            risk["reason"] = f"tier-1: no churn or escalation intent in the customer's last {len(last_cust)} turns"
    else:
        risk["reason"] = "tier-1 not used: churn/escalation risk comes from live signals only"
    out["customer_risk"] = risk
    out["elapsed_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    out["windows_read"] = len(P)
    return out
