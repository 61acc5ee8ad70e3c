"""Agent behaviours from exemplar phrases (semantic) plus rules (wording), see ``behaviours.yaml``."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

BEHAVIOURS = ("emotion_acknowledged", "identity_verification_asked", "disclosure_given", "resolution_checked")


def default_behaviours_path() -> Path:
    return Path(str(resources.files("livecoach.signals") / "behaviours.yaml"))


def _compile(patterns) -> list[re.Pattern]:
    return [re.compile(p, re.I) for p in (patterns or [])]


@dataclass
class _Group:
    name: str
    threshold: float
    exemplars: list[str]
    rules: list[re.Pattern]
    rule_score: float
    veto: list[re.Pattern] = field(default_factory=list)
    negate: list[re.Pattern] = field(default_factory=list)

    def rule(self, text: str) -> float:
        if any(p.search(text) for p in self.veto):
            return -1.0  # vetoed
        if any(p.search(text) for p in self.rules) and not any(p.search(text) for p in self.negate):
            return self.rule_score
        return 0.0


class BehaviourConfig:
    """The parsed behaviours file. ``rule_scores`` needs no encoder; :class:`AgentBehaviours` adds it."""

    def __init__(self, data: dict, path: str = "<dict>"):
        self.path = path
        self.scale = float(data.get("scale", 0.04))
        self.groups: dict[str, _Group] = {}
        beh = data.get("behaviours", {}) or {}
        for name in BEHAVIOURS:
            if name not in beh:
                raise ValueError(f"{path}: behaviour {name!r} missing")
        for name, b in beh.items():
            if name == "disclosure_given":
                continue
            self.groups[name] = _Group(name, float(b.get("threshold", 0.62)), list(b.get("exemplars", []) or []),
                                       _compile(b.get("rules")), float(b.get("rule_score", 0.9)),
                                       _compile(b.get("veto")))
        dg = beh["disclosure_given"]
        self.disclosure_threshold = float(dg.get("threshold", 0.66))
        self.disclosures: dict[str, _Group] = {}
        for name, d in (data.get("disclosures", {}) or {}).items():
            self.disclosures[name] = _Group(name, self.disclosure_threshold, list(d.get("exemplars", []) or []),
                                            _compile(d.get("rules")), float(dg.get("rule_score", 0.9)),
                                            negate=_compile(d.get("negate")))
        c = data.get("consent", {}) or {}
        self.consent_group = _Group("consent", float(c.get("threshold", 0.64)), list(c.get("exemplars", []) or []),
                                    _compile(c.get("rules")), 0.9)
        self.consent = {"affirm": c.get("affirm", []), "deny": c.get("deny", []),
                        "reply_turns": int(c.get("reply_turns", 2))}

    @classmethod
    def load(cls, path: Path | str | None = None) -> "BehaviourConfig":
        p = str(path or default_behaviours_path())
        with open(p, encoding="utf-8") as f:
            return cls(yaml.safe_load(f) or {}, p)

    def all_groups(self) -> list[tuple[str, _Group]]:
        return ([("behaviour", g) for g in self.groups.values()] + [("disclosure", g) for g in self.disclosures.values()]
                + [("consent", self.consent_group)])

    def rule_scores(self, text: str) -> dict:
        """Rules only: ``{"behaviours": {...}, "disclosures": {...}, "consent": float}``."""
        text = clean_text(text)
        beh = {n: max(0.0, g.rule(text)) for n, g in self.groups.items()}
        dis = {n: max(0.0, g.rule(text)) for n, g in self.disclosures.items()}
        beh["disclosure_given"] = max(dis.values(), default=0.0)
        return {"behaviours": beh, "disclosures": dis, "consent": max(0.0, self.consent_group.rule(text))}


_MARKERS = re.compile(r"\[[^\]]*\]|<unk>|<[^>]*>|\b\w+~(?=\s|$)")


def clean_text(text: str) -> str:
    """Drop transcription markers (``[noise]``, ``<unk>``, cut-off words ``car~``)."""
    return " ".join(_MARKERS.sub(" ", text).split())


class AgentBehaviours:
    """Scores agent utterances: ``score(texts, embs)`` with the texts' sentence embeddings."""

    def __init__(self, cfg: BehaviourConfig, encode):
        """``encode(list[str]) -> np.ndarray`` of L2-normalised sentence embeddings."""
        self.cfg = cfg
        self._index: list[tuple[str, _Group, np.ndarray]] = []
        for kind, g in cfg.all_groups():
            E = encode(g.exemplars) if g.exemplars else np.zeros((0, 384), np.float32)
            self._index.append((kind, g, np.asarray(E, np.float32)))

    def _sem(self, g: _Group, E: np.ndarray, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(E) == 0:
            return np.zeros(len(emb)), np.zeros(len(emb), int)
        sims = emb @ E.T
        best = sims.max(1)
        z = (best - g.threshold) / self.cfg.scale
        return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30))), sims.argmax(1)

    def score(self, texts: list[str], emb: np.ndarray) -> list[dict]:
        """Per text: ``{"behaviours": {name: score}, "disclosures": {name: score}, "consent": score,
        "matched": {name: exemplar or 'rule'}}``."""
        out = [{"behaviours": {}, "disclosures": {}, "consent": 0.0, "matched": {}} for _ in texts]
        cleaned = [clean_text(t) for t in texts]
        for kind, g, E in self._index:
            sem, arg = self._sem(g, E, emb)
            for i, t in enumerate(cleaned):
                r = g.rule(t) if t else -1.0
                if r < 0 or not t:
                    s, how = 0.0, "veto" if t else "empty"
                elif r >= sem[i]:
                    s, how = r, "rule"
                else:
                    s, how = float(sem[i]), g.exemplars[int(arg[i])]
                if kind == "disclosure" and any(p.search(t) for p in g.negate):
                    s, how = 0.0, "negated"
                s = round(float(s), 4)
                if kind == "behaviour":
                    out[i]["behaviours"][g.name] = s
                elif kind == "disclosure":
                    out[i]["disclosures"][g.name] = s
                else:
                    out[i]["consent"] = s
                if s >= 0.5:
                    out[i]["matched"][g.name] = how
        for o in out:
            o["behaviours"]["disclosure_given"] = max(o["disclosures"].values(), default=0.0)
        return out


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))
