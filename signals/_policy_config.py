"""The policy YAML: schema, validation with clear errors, and a hot-reloading holder."""

from __future__ import annotations

import logging
import os
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

log = logging.getLogger(__name__)

POLICY_VERSION = 1
AGENT_CAP_CEILING = 4  # never more cues than this to one agent on one call, whatever the file says

Threshold = Union[float, dict[int, float], None]


class PolicyError(ValueError):
    """The policy file cannot be used; the message says where and why."""


def _check_threshold(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, dict):
        out = {}
        for k, t in v.items():
            try:
                p = int(k)
            except (TypeError, ValueError):
                raise ValueError(f"phase keys must be 1-4, got {k!r}") from None
            if not 1 <= p <= 4:
                raise ValueError(f"phase keys must be 1-4, got {k!r}")
            if not isinstance(t, (int, float)) or isinstance(t, bool) or not 0 <= t <= 1:
                raise ValueError(f"threshold for phase {p} must be a number 0-1, got {t!r}")
            out[p] = float(t)
        return out
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
        raise ValueError(f"threshold must be a number 0-1 or a mapping phase -> number, got {v!r}")
    return float(v)


def threshold_for(th: Threshold, phase: int) -> float | None:
    """The threshold in force at ``phase`` (None: this audience does not get the kind)."""
    if th is None:
        return None
    if isinstance(th, float):
        return th
    keys = [p for p in th if p <= phase]
    return th[max(keys)] if keys else None


class KindPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    risk: float = Field(0.5, ge=0, le=1, description="Weight of this kind in the lead feed's risk rank")
    lead: Threshold = Field(0.5, description="Lead-feed threshold (number, or phase -> number)")
    agent: Threshold = Field(None, description="Agent-cue threshold (phase -> number); absent: never to agents")
    cue: str = Field("", max_length=160, description="Observation — nudge shown to the agent")
    route: str | None = Field(None, description="Desk a lead can hand the call to (save_desk, sales_desk …)")

    @field_validator("lead", "agent", mode="before")
    @classmethod
    def _thresholds(cls, v: Any) -> Any:
        return _check_threshold(v)

    @model_validator(mode="after")
    def _cue_needed(self) -> "KindPolicy":
        if self.agent is not None and not self.cue.strip():
            raise ValueError("a kind that can reach agents needs a 'cue' message")
        return self


class AgentPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cap_per_call: int = Field(3, ge=0, le=AGENT_CAP_CEILING,
                              description=f"Cues per call per agent (at most {AGENT_CAP_CEILING})")
    cooldown_s: float = Field(60.0, ge=0, le=3600, description="Call-clock seconds between two cues")


class LeadPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    repeat_after_s: float = Field(30.0, ge=0, le=3600)


class Tier1Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kinds: list[str] = Field(default_factory=lambda: ["churn_intent", "escalation_request", "complaint",
                                                      "upgrade_interest"])
    high_stakes: list[str] = Field(default_factory=lambda: ["churn_intent", "escalation_request"])
    uncertainty_band: tuple[float, float] = (0.45, 0.90)
    context_turns: int = Field(6, ge=1, le=50)
    timeout_s: float = Field(2.0, gt=0, le=60)
    queue_size: int = Field(64, ge=1, le=10_000)
    confirm_at: float = Field(0.3, ge=0, le=1)

    @field_validator("uncertainty_band")
    @classmethod
    def _band(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = v
        if not 0 <= lo <= hi <= 1:
            raise ValueError("uncertainty_band must be [low, high] with 0 <= low <= high <= 1")
        return v


class PolicyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int
    phase: int | None = Field(None, ge=1, le=4)
    agent: AgentPolicy = Field(default_factory=AgentPolicy)
    lead: LeadPolicy = Field(default_factory=LeadPolicy)
    tier1: Tier1Policy = Field(default_factory=Tier1Policy)
    kinds: dict[str, KindPolicy] = Field(default_factory=dict)

    @field_validator("version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v != POLICY_VERSION:
            raise ValueError(f"this livecoach reads policy version {POLICY_VERSION}, the file says {v}")
        return v

    def kind(self, name: str) -> KindPolicy | None:
        return self.kinds.get(name)


def default_policy_path() -> Path:
    return Path(str(resources.files("livecoach.signals") / "policy.yaml"))


def parse_policy(text: str, source: str = "<policy>") -> PolicyConfig:
    """Parse and validate policy YAML; raises :class:`PolicyError` naming the file and the field."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise PolicyError(f"{source}: the policy must be a mapping with 'version' and 'kinds'")
    if "version" not in raw:
        raise PolicyError(f"{source}: 'version' is missing (this livecoach reads version {POLICY_VERSION})")
    try:
        return PolicyConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise PolicyError(f"{source}: {problems}") from None


def load_policy(path: Path) -> PolicyConfig:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the policy file: {exc.strerror or exc}") from None
    return parse_policy(text, str(path))


class PolicyHolder:
    """The policy in force, re-read when the file's mtime or size changes (checked at most every
    ``check_every`` seconds). A bad edit is logged and reported in :attr:`error`; the last good
    policy stays in force."""

    def __init__(self, path: Path | None, check_every: float = 1.0):
        self.path = Path(path) if path else default_policy_path()
        self.check_every = check_every
        self._lock = threading.Lock()
        self._stamp: tuple[float, int] | None = None
        self._checked = 0.0
        self.error: str | None = None
        self.loaded_at: float = 0.0
        self.reloads = 0
        self.config = load_policy(self.path)  # a bad file at start-up is a start-up error
        self._stamp = self._file_stamp()
        self.loaded_at = time.time()

    def _file_stamp(self) -> tuple[float, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime, st.st_size)

    def current(self) -> tuple[PolicyConfig, bool]:
        """(policy, changed): ``changed`` is True when this call loaded a new file."""
        now = time.monotonic()
        if now - self._checked < self.check_every:
            return self.config, False
        return self.reload(force=False)

    def reload(self, force: bool = True) -> tuple[PolicyConfig, bool]:
        with self._lock:
            self._checked = time.monotonic()
            stamp = self._file_stamp()
            if not force and stamp == self._stamp:
                return self.config, False
            self._stamp = stamp
            try:
                cfg = load_policy(self.path)
            except PolicyError as exc:
                if self.error != str(exc):
                    log.error("policy not reloaded, the previous one stays in force: %s", exc)
                self.error = str(exc)
                return self.config, False
            self.error = None
            self.config = cfg
            self.loaded_at = time.time()
            self.reloads += 1
            log.info("signal policy reloaded from %s", self.path)
            return cfg, True
