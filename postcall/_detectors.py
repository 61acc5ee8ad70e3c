"""Optional per-utterance detector scores from ``livecoach.signals.score_utterances``.

The post-call scorer works on transparent rules alone; when the detectors library is importable its
scores are added (negative customer sentiment widens the "emotion shown" set, agent behaviour
scores add evidence for met behaviours). Any failure falls back to rules: a note is never lost
because a model is missing or its interface changed.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

BEHAVIOURS = {
    "emotion_acknowledged": ("emotion_acknowledged", "acknowledge_emotion", "acknowledged_emotion", "empathy"),
    "identity_verification_asked": ("identity_verification_asked", "identity_verification", "verification_asked"),
    "disclosure_given": ("disclosure_given", "disclosure"),
    "resolution_checked": ("resolution_checked", "resolution_check", "checked_resolution"),
}


_state = "unknown"   # unknown | loading | ready | failed
_failed_at = 0.0
_lock = threading.Lock()
RETRY_AFTER_S = 600.0


def status() -> str:
    """``ready`` when the detectors library answered; ``failed``/``unknown``/``loading`` otherwise."""
    return _state


def warm_up() -> bool:
    """Load the detectors (builds the encoder cache on first use). Blocking; call it off the event
    loop. A failure is remembered for ``RETRY_AFTER_S`` so a broken model costs one attempt, not one
    per note."""
    global _state, _failed_at
    with _lock:
        if _state == "ready":
            return True
        if _state == "failed" and time.monotonic() - _failed_at < RETRY_AFTER_S:
            return False
        _state = "loading"
        try:
            from livecoach.signals import score_utterances

            score_utterances([{"text": "hello how can i help you", "speaker": "agent", "seq": 1}])
        except Exception as exc:
            _state, _failed_at = "failed", time.monotonic()
            log.warning("postcall: detector scores unavailable (%s: %s); notes use rules only",
                        type(exc).__name__, exc)
            return False
        _state = "ready"
        return True


def score(turns: list[dict[str, Any]], wait: bool = False) -> dict[int, dict[str, Any]] | None:
    """{seq: {"sentiment": (label, p), "intent": (label, p), "behaviours": {name: p}}} or None.

    Never blocks on a model load unless ``wait``: a note drafted before the detectors are ready is
    scored by rules alone (and says so in ``scorer``)."""
    global _state, _failed_at
    if _state != "ready" and not (wait and warm_up()):
        return None
    if not turns:
        return {}
    try:
        from livecoach.signals import score_utterances

        raw = list(score_utterances([{"seq": t["seq"], "speaker": t["speaker"], "text": t["text"]} for t in turns]))
        if len(raw) != len(turns):
            raise ValueError(f"{len(raw)} scores for {len(turns)} utterances")
        return {t["seq"]: _normalise(r) for t, r in zip(turns, raw)}
    except Exception as exc:  # the library changed under us: fall back to rules
        _state, _failed_at = "failed", time.monotonic()
        log.warning("postcall: livecoach.signals.score_utterances failed (%s); using rules only", exc)
        return None


def _label(v: Any) -> tuple[str | None, float]:
    if v is None:
        return None, 0.0
    if isinstance(v, str):
        return v, 1.0
    if isinstance(v, (tuple, list)) and len(v) == 2:
        return str(v[0]), float(v[1])
    if isinstance(v, dict):
        if "label" in v:
            return str(v["label"]), float(v.get("confidence", v.get("score", v.get("p", 1.0))) or 0.0)
        probs = {k: x for k, x in v.items() if isinstance(x, (int, float))}
        if probs:
            k = max(probs, key=probs.get)
            return k, float(probs[k])
    if hasattr(v, "label"):
        return str(v.label), float(getattr(v, "confidence", 1.0))
    return None, 0.0


def _normalise(r: Any) -> dict[str, Any]:
    d = r if isinstance(r, dict) else (r.model_dump() if hasattr(r, "model_dump") else vars(r) if hasattr(r, "__dict__") else {})
    out: dict[str, Any] = {"sentiment": _label(d.get("sentiment")), "intent": _label(d.get("intent")), "behaviours": {}}
    for key in ("sentiment", "intent"):
        probs = d.get(f"{key}_probs")
        if isinstance(out[key][0], str) and isinstance(probs, dict) and out[key][0] in probs:
            out[key] = (out[key][0], float(probs[out[key][0]]))
    pool = dict(d)
    for key in ("behaviours", "behaviors", "agent", "agent_behaviours", "agent_behaviors"):
        if isinstance(d.get(key), dict):
            pool.update(d[key])
    for name, aliases in BEHAVIOURS.items():
        for a in aliases:
            if a in pool:
                v = pool[a]
                if isinstance(v, bool):
                    out["behaviours"][name] = 1.0 if v else 0.0
                elif isinstance(v, (int, float)):
                    out["behaviours"][name] = float(v)
                else:
                    lab, p = _label(v)
                    out["behaviours"][name] = p if lab not in (None, "no", "false", "none", "absent") else 0.0
                break
    return out
