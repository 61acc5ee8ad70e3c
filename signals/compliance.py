"""Compliance over the event stream: policies are config (``compliance_policy.yaml``).

Four checks, each a :class:`Finding` that the tier-0 stage turns into a ``Signal`` candidate:

``identity_not_verified``  an account action (``AgentAction``) before the identity verification the
                           policy requires (ABCD kb.json order by default; see the YAML).
``disclosure_missing``     a required disclosure not given within its window (or by the call's end).
``consent_missing``        no consent captured on a call tagged for it, within its window.
``secret_read_out``        the agent reads out a full card number (13-19 digits, Luhn) or an SSN;
                           spoken digits ("four one one one ...") count.

:class:`ComplianceMonitor` keeps everything in the per-call ``state`` dict (JSON-able). It does not
detect language itself: the caller passes the agent-behaviour scores of each utterance (from the
encoder, or from rules only, see :class:`ComplianceStage`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import yaml

from livecoach.bus import CALLS, DETECTIONS
from livecoach.events import AgentAction, CallEnded, CallStarted, Event, EvidenceRef, Signal, Utterance, minute_mark
from livecoach.pipeline import Stage


# ---- policy ------------------------------------------------------------------------------------

def default_policy_path() -> Path:
    return Path(str(resources.files("livecoach.signals") / "compliance_policy.yaml"))


@lru_cache(maxsize=8)
def _load_yaml(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


@dataclass(frozen=True)
class CompliancePolicy:
    raw: dict

    @classmethod
    def load(cls, path: Path | str | None = None) -> "CompliancePolicy":
        p = str(path or default_policy_path())
        data = _load_yaml(p)
        if not isinstance(data, dict) or "identity" not in data:
            raise ValueError(f"{p}: not a compliance policy (no 'identity' section)")
        return cls(data)

    # identity
    @property
    def verified_by(self) -> list[str]:
        return list(self.raw["identity"].get("verified_by", ["verify-identity"]))

    def gated_actions(self, tags: Sequence[str]) -> tuple[set[str], str | None]:
        """Actions that need verification first on a call with these tags, and the subflow used."""
        ident = self.raw["identity"]
        prefix = ident.get("subflow_tag_prefix", "abcd:")
        subflows = ident.get("subflows", {}) or {}
        for tag in tags:
            if tag.startswith(prefix) and tag[len(prefix):] in subflows:
                name = tag[len(prefix):]
                order = list(subflows[name])
                steps = [i for i, a in enumerate(order) if a in self.verified_by]
                if not steps:
                    return set(), name
                return set(order[steps[0] + 1:]), name
        return set(ident.get("default_gated", [])), None

    def applies(self, when: dict | None, tags: Sequence[str], channel: str) -> bool:
        if not when:
            return True
        if "channel" in when and channel not in ([when["channel"]] if isinstance(when["channel"], str)
                                                 else when["channel"]):
            return False
        if "tags_any" in when and not set(when["tags_any"]) & set(tags):
            return False
        return True

    @property
    def disclosures(self) -> list[dict]:
        return list(self.raw.get("disclosures", []) or [])

    @property
    def consent(self) -> dict:
        return dict(self.raw.get("consent", {}) or {})

    @property
    def secrets(self) -> dict:
        return dict(self.raw.get("secrets", {}) or {})


# ---- secrets -----------------------------------------------------------------------------------

_DIGIT_WORDS = {"zero": "0", "oh": "0", "o": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9"}
_MULT = {"double": 2, "triple": 3}


def spoken_digits(text: str) -> list[tuple[str, int, int]]:
    """Runs of digits in ``text``, spoken ("four one one one") or written ("4111-1111"), with the
    token span they cover. Separators (spaces, dashes, dots) do not break a run; other words do."""
    tokens = re.findall(r"[a-z]+|\d+|[^\sa-z\d]", text.lower())
    runs: list[tuple[str, int, int]] = []
    cur, start, mult = "", -1, 1
    for i, tok in enumerate(tokens):
        if tok.isdigit():
            d = tok
        elif tok in _DIGIT_WORDS and not (tok in ("o", "oh") and not cur):
            d = _DIGIT_WORDS[tok]
        elif tok in _MULT:
            mult = _MULT[tok]
            continue
        elif tok in ("-", ".", "/") or tok in ("uh", "um", "dash"):
            continue
        else:
            if cur:
                runs.append((cur, start, i))
            cur, start, mult = "", -1, 1
            continue
        if not cur:
            start = i
        cur += d * mult
        mult = 1
    if cur:
        runs.append((cur, start, len(tokens)))
    return runs


def luhn_ok(number: str) -> bool:
    if not number.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def find_card_number(text: str, carry: str = "") -> str | None:
    """A 13-19 digit run passing Luhn (``carry``: digits that ended the speaker's previous turn)."""
    runs = spoken_digits(text)
    cands = [r[0] for r in runs]
    if carry and runs and runs[0][1] == 0:
        cands.insert(0, carry + runs[0][0])
    for digits in cands:
        for n in range(19, 12, -1):  # the longest Luhn-valid window (cards are 13-19 digits)
            for s in range(0, len(digits) - n + 1):
                w = digits[s:s + n]
                if w[0] in "3456" and luhn_ok(w) and len(set(w)) >= 2:
                    return w
    return None


def find_ssn(text: str) -> str | None:
    if not re.search(r"\b(social|ssn|social security)\b", text.lower()):
        return None
    for digits, _, _ in spoken_digits(text):
        if len(digits) == 9:
            return digits
    return None


def mask(number: str) -> str:
    return "*" * (len(number) - 4) + number[-4:]


# ---- findings ----------------------------------------------------------------------------------

@dataclass
class Finding:
    kind: str
    confidence: float
    message: str
    evidence: list[EvidenceRef] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_signal(self, call_id: str, detector: str = "tier0.compliance") -> Signal:
        return Signal(call_id=call_id, kind=self.kind, confidence=round(float(self.confidence), 4), tier=0,
                      audience="lead", evidence=self.evidence, message=self.message, detector=detector,
                      details=self.details)


def _excerpt(text: str, n: int = 160) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


class ComplianceMonitor:
    """Applies a :class:`CompliancePolicy` to one call's events; all memory lives in ``state``."""

    def __init__(self, policy: CompliancePolicy | None = None, consent_cfg: dict | None = None):
        self.policy = policy or CompliancePolicy.load()
        self.consent_cfg = consent_cfg or {}
        self._affirm = [re.compile(p, re.I) for p in self.consent_cfg.get("affirm", [])]
        self._deny = [re.compile(p, re.I) for p in self.consent_cfg.get("deny", [])]

    # state layout: st = {"tags": [...], "channel": str, "verified": bool, "verified_seq": int|None,
    #   "disclosures": {name: {"due": float|None, "given": bool, "flagged": bool}},
    #   "consent": {"required": bool, "due": float|None, "asked_seq": int|None, "replies_left": int,
    #               "captured": bool, "flagged": bool},
    #   "carry": str (trailing digits of the agent's last turn), "secret_seqs": [...], "last_t": float}

    def start(self, ev: CallStarted, st: dict) -> list[Finding]:
        st.update({"tags": list(ev.tags), "channel": ev.channel, "verified": False, "verified_seq": None,
                   "carry": "", "last_t": 0.0, "flagged_actions": []})
        st["disclosures"] = {
            d["name"]: {"due": d.get("within_s"), "given": False, "flagged": False}
            for d in self.policy.disclosures if self.policy.applies(d.get("when"), ev.tags, ev.channel)}
        c = self.policy.consent
        st["consent"] = {"required": bool(c) and self.policy.applies(c.get("when"), ev.tags, ev.channel),
                         "due": c.get("within_s"), "asked_seq": None, "replies_left": 0, "captured": False,
                         "flagged": False}
        return []

    def _ensure(self, ev: Event, st: dict) -> None:
        if "disclosures" not in st:  # no CallStarted seen (joined mid-call): untagged defaults
            self.start(CallStarted(call_id=ev.call_id, seq=1, agent_id="unknown"), st)

    def action(self, ev: AgentAction, st: dict) -> list[Finding]:
        self._ensure(ev, st)
        out: list[Finding] = []
        if ev.t is not None:
            st["last_t"] = max(st["last_t"], ev.t)
        name = ev.name.lower()
        if name in self.policy.verified_by:
            st["verified"], st["verified_seq"] = True, ev.seq
        elif not st["verified"]:
            gated, subflow = self.policy.gated_actions(st["tags"])
            if name in gated:
                where = f"subflow {subflow}" if subflow else "default policy"
                out.append(Finding(
                    "identity_not_verified", 0.97,
                    f"Account action '{ev.name}' at {minute_mark(ev.t) or 'seq ' + str(ev.seq)} before identity "
                    f"verification ({where})",
                    [EvidenceRef(seq=ev.seq, excerpt=f"[action] {ev.name}", t=ev.t)],
                    {"action": ev.name, "subflow": subflow, "required": self.policy.verified_by}))
        if name in [a.lower() for a in self.policy.consent.get("actions", [])]:
            st["consent"]["captured"] = True
        out += self._deadlines(st, ev)
        return out

    def utterance(self, ev: Utterance, st: dict, behaviours: dict[str, float] | None = None,
                  disclosure: dict[str, float] | None = None, consent_asked: float = 0.0) -> list[Finding]:
        """``disclosure``: score per disclosure name for this utterance (agent turns)."""
        self._ensure(ev, st)
        out: list[Finding] = []
        t = ev.t_end if ev.t_end is not None else ev.t_start
        if t is not None:
            st["last_t"] = max(st["last_t"], t)
        if ev.speaker == "agent":
            for name, score in (disclosure or {}).items():
                if name in st["disclosures"] and score >= 0.5:
                    st["disclosures"][name]["given"] = True
            c = st["consent"]
            if c["required"] and not c["captured"] and consent_asked >= 0.5:
                c["asked_seq"], c["replies_left"] = ev.seq, int(self.consent_cfg.get("reply_turns", 2))
            out += self._secrets(ev, st)
        else:
            c = st["consent"]
            if c["asked_seq"] is not None and c["replies_left"] > 0 and not c["captured"]:
                c["replies_left"] -= 1
                text = ev.text.strip().lower()
                if any(p.search(text) for p in self._affirm) and not (
                        any(p.search(text) for p in self._deny) and not text.startswith(("yes", "yeah", "sure"))):
                    c["captured"] = True
        out += self._deadlines(st, ev)
        return out

    def end(self, ev: CallEnded, st: dict) -> list[Finding]:
        self._ensure(ev, st)
        return self._deadlines(st, ev, final=True)

    # ---- internals ---------------------------------------------------------------------------

    def _secrets(self, ev: Utterance, st: dict) -> list[Finding]:
        cfg = self.policy.secrets
        if ev.speaker not in cfg.get("speakers", ["agent"]):
            return []
        out = []
        card = find_card_number(ev.text, st.get("carry", "")) if cfg.get("card_numbers", True) else None
        runs = spoken_digits(ev.text)
        n_tokens = len(re.findall(r"[a-z]+|\d+|[^\sa-z\d]", ev.text.lower()))
        st["carry"] = runs[-1][0][-18:] if runs and runs[-1][2] == n_tokens else ""
        if card:
            st["carry"] = ""
            out.append(Finding("secret_read_out", 0.95,
                               f"Agent read out a full card number ({mask(card)}) at {minute_mark(ev.t_start) or '?'}",
                               [EvidenceRef(seq=ev.seq, excerpt="[card number redacted]", t=ev.t_start)],
                               {"secret": "card_number", "masked": mask(card), "luhn": True}))
        ssn = find_ssn(ev.text) if cfg.get("ssn", True) else None
        if ssn:
            out.append(Finding("secret_read_out", 0.85,
                               f"Agent read out a social security number at {minute_mark(ev.t_start) or '?'}",
                               [EvidenceRef(seq=ev.seq, excerpt="[SSN redacted]", t=ev.t_start)],
                               {"secret": "ssn", "masked": mask(ssn)}))
        return out

    def _deadlines(self, st: dict, ev: Event, final: bool = False) -> list[Finding]:
        out = []
        now = st.get("last_t", 0.0)
        for name, d in st["disclosures"].items():
            if d["given"] or d["flagged"]:
                continue
            due = d["due"]
            if (due is not None and now > due) or final:
                d["flagged"] = True
                when = f"within {minute_mark(due)}" if due is not None else "before the call ended"
                out.append(Finding("disclosure_missing", 0.9 if final or due is not None else 0.8,
                                   f"Required '{name}' disclosure not given {when}",
                                   [EvidenceRef(seq=getattr(ev, "seq", 0), excerpt="", t=now)],
                                   {"disclosure": name, "window_s": due, "at_call_end": final}))
        c = st["consent"]
        if c["required"] and not c["captured"] and not c["flagged"]:
            due = c["due"]
            if (due is not None and now > due) or final:
                c["flagged"] = True
                asked = c["asked_seq"] is not None
                out.append(Finding("consent_missing", 0.85 if asked else 0.9,
                                   "Consent not captured" + (" (asked, no clear yes)" if asked else " (never asked)")
                                   + (f" within {minute_mark(due)}" if due is not None and not final else ""),
                                   [EvidenceRef(seq=c["asked_seq"] or getattr(ev, "seq", 0), excerpt="", t=now)],
                                   {"asked": asked, "window_s": due, "at_call_end": final}))
        return out


class ComplianceStage(Stage):
    """Compliance alone, with rule-only language checks (no encoder): for deployments that run
    without the tier-0 models. :class:`~livecoach.signals.Tier0Detectors` already includes these
    checks (with semantic matching); do not run both."""

    name = "compliance"
    consumes = (CALLS,)
    produces = DETECTIONS

    def __init__(self, settings=None, policy: CompliancePolicy | None = None):
        from livecoach.signals._behaviours import BehaviourConfig

        self.cfg = BehaviourConfig.load(getattr(settings, "behaviours_file", None))
        self.monitor = ComplianceMonitor(
            policy or CompliancePolicy.load(getattr(settings, "compliance_policy_file", None)), self.cfg.consent)

    async def handle(self, event: Event, state: dict[str, Any]) -> Sequence[Event]:
        if isinstance(event, CallStarted):
            found = self.monitor.start(event, state)
        elif isinstance(event, AgentAction):
            found = self.monitor.action(event, state)
        elif isinstance(event, Utterance) and event.final:
            r = self.cfg.rule_scores(event.text) if event.speaker == "agent" else {}
            found = self.monitor.utterance(event, state, disclosure=r.get("disclosures", {}),
                                           consent_asked=r.get("consent", 0.0))
        elif isinstance(event, CallEnded):
            found = self.monitor.end(event, state)
        else:
            found = []
        return [f.to_signal(event.call_id, "compliance.rules") for f in found]
