"""Inflection points of the customer's smoothed negativity: frustration spike and recovery.

Each customer utterance with words contributes its calibrated ``P(negative)``; the series is
smoothed with an exponential moving average (``alpha``). A spike is the smoothed value crossing
``spike_at`` from below; a recovery is it falling back under ``recover_at`` after a spike
(hysteresis, so one noisy turn does not flap). State is a JSON-able dict.
"""

from __future__ import annotations

from dataclasses import dataclass

from livecoach.events import minute_mark


@dataclass(frozen=True)
class InflectionConfig:
    alpha: float = 0.5
    prior: float = 0.15  # smoothed negativity at the call's start (calm)
    spike_at: float = 0.55
    recover_at: float = 0.30
    min_turns: int = 2  # customer turns with words before a spike may fire


def update(state: dict, neg: float, seq: int, t: float | None, text: str,
           cfg: InflectionConfig = InflectionConfig()) -> dict | None:
    """Feed one customer utterance; returns an event dict ``{"kind", "confidence", ...}`` or None."""
    s = state.setdefault("frustration", {"ema": cfg.prior, "n": 0, "in_spike": False, "spike": None,
                                         "series": []})
    s["n"] += 1
    s["ema"] = cfg.alpha * float(neg) + (1 - cfg.alpha) * s["ema"]
    s["series"] = (s["series"] + [[seq, None if t is None else round(t, 2), round(s["ema"], 4)]])[-50:]
    if not s["in_spike"] and s["ema"] >= cfg.spike_at and s["n"] >= cfg.min_turns:
        s["in_spike"] = True
        s["spike"] = {"seq": seq, "t": t, "peak": s["ema"]}
        return {"kind": "frustration_spike", "confidence": min(0.99, s["ema"]), "seq": seq, "t": t,
                "message": f"Frustration spike at {minute_mark(t) or 'seq ' + str(seq)}",
                "details": {"smoothed_negativity": round(s["ema"], 4), "p_negative": round(float(neg), 4)}}
    if s["in_spike"]:
        s["spike"]["peak"] = max(s["spike"]["peak"], s["ema"])
        if s["ema"] <= cfg.recover_at:
            spike = s["spike"]
            s["in_spike"] = False
            conf = min(0.99, max(0.5, spike["peak"] - s["ema"] + 0.5))
            return {"kind": "frustration_recovered", "confidence": conf, "seq": seq, "t": t,
                    "spike_seq": spike["seq"], "spike_t": spike["t"],
                    "message": (f"Frustration spike at {minute_mark(spike['t']) or 'seq ' + str(spike['seq'])}, "
                                f"recovered by {minute_mark(t) or 'seq ' + str(seq)}"),
                    "details": {"smoothed_negativity": round(s["ema"], 4), "peak": round(spike["peak"], 4),
                                "spike_seq": spike["seq"]}}
    return None
