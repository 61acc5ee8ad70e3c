"""Rubrics: versioned YAML with an approval state. Scoring with an unapproved rubric is refused."""

from __future__ import annotations

import re
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

TIER_ORDER = {1: 0, 2: 1, 3: 2, "compliance": 3}
ROOT_CAUSES = ("policy", "product", "documentation", "staffing")


class RubricError(ValueError):
    """The rubric file is missing, not YAML, or not a valid rubric."""


class RubricNotApproved(RuntimeError):
    """Scoring against a rubric whose approval state is not 'approved' is refused."""


class Approval(BaseModel):
    state: Literal["draft", "approved", "retired"] = "draft"
    approved_by: str | None = None
    approved_at: str | None = None


class Criterion(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    tier: Literal[1, 2, 3, "compliance"]
    label: str
    description: str = ""
    next_action: str


class Rubric(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=64)
    version: str = Field(max_length=32)
    approval: Approval = Approval()
    scope: dict = Field(default_factory=dict)
    stop_rules: dict = Field(default_factory=dict)
    thresholds: dict = Field(default_factory=dict)
    cues: dict[str, str] = Field(default_factory=dict)
    disclosures: dict[str, str] = Field(default_factory=dict)
    root_causes: dict[str, str] = Field(default_factory=dict)
    criteria: list[Criterion]

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, v):
        return str(v)

    @model_validator(mode="after")
    def _check(self) -> "Rubric":
        ids = [c.id for c in self.criteria]
        if len(ids) != len(set(ids)):
            raise ValueError("criterion ids must be unique")
        for name, rx in {**self.cues, **self.root_causes}.items():
            try:
                re.compile(rx)
            except re.error as exc:
                raise ValueError(f"cue {name!r} is not a valid regular expression: {exc}") from None
        for rx in self.stop_rules.get("sensitive_phrases", []) + self.stop_rules.get("out_of_scope_phrases", []):
            re.compile(rx)
        return self

    @property
    def approved(self) -> bool:
        return self.approval.state == "approved"

    def require_approved(self) -> None:
        if not self.approved:
            raise RubricNotApproved(
                f"rubric {self.id} v{self.version} is {self.approval.state}, not approved: "
                "a lead must approve it before notes are scored against it")

    @cached_property
    def compiled(self) -> dict[str, re.Pattern]:
        return {k: re.compile(v) for k, v in self.cues.items()}

    @cached_property
    def compiled_root_causes(self) -> dict[str, re.Pattern]:
        return {k: re.compile(v) for k, v in self.root_causes.items()}

    def threshold(self, name: str, default: float) -> float:
        return float(self.thresholds.get(name, default))

    def criterion(self, cid: str) -> Criterion | None:
        return next((c for c in self.criteria if c.id == cid), None)

    def ordered(self) -> list[Criterion]:
        return sorted(self.criteria, key=lambda c: TIER_ORDER[c.tier])


def load_rubric(path: str | Path | None = None) -> Rubric:
    """Load a rubric from ``path`` (default: the packaged ``default_rubric.yaml``)."""
    try:
        if path is None:
            text = (resources.files("livecoach.postcall") / "default_rubric.yaml").read_text("utf-8")
            where = "default_rubric.yaml"
        else:
            text = Path(path).read_text("utf-8")
            where = str(path)
        data = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as exc:
        raise RubricError(f"cannot read rubric {path or 'default'}: {exc}") from None
    if not isinstance(data, dict):
        raise RubricError(f"rubric {where} is not a YAML mapping")
    try:
        return Rubric.model_validate(data)
    except ValueError as exc:
        raise RubricError(f"rubric {where} is invalid: {exc}") from None
