"""The event vocabulary every stage shares.

Events are pydantic models, versioned by ``v`` and told apart by ``type``. Clients send
``call_started``, ``utterance``, ``agent_action`` and ``call_ended`` over the ingest socket, each
with ``seq``: 1, 2, 3 … per call, across all event types. The server produces ``signal`` and
``qa_note``; ASR produces ``utterance`` with ``source="asr"`` and a server-assigned ``seq``.

Times: ``t_start``/``t_end`` are seconds from the start of the call (the minute mark shown to a
lead is derived from them); ``*_at`` are wall-clock UTC datetimes.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

SCHEMA_VERSION = 1

CallId = Annotated[
    str,
    Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$",
          description="Caller-chosen id: letters, digits and . _ : - (max 128)"),
]
Seq = Annotated[int, Field(ge=1, le=10_000_000, description="Position in the call's event stream, from 1")]
Speaker = Literal["agent", "customer"]
Audience = Literal["lead", "agent"]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = Field(SCHEMA_VERSION, description="Schema version")
    call_id: CallId

    def canonical(self) -> str:
        """Stable JSON for storage and duplicate comparison."""
        return self.model_dump_json(exclude_none=False)


class CallStarted(_Event):
    """A conversation begins. ``customer`` holds known customer fields (used for redaction)."""

    type: Literal["call_started"] = "call_started"
    seq: Seq
    channel: Literal["chat", "voice"] = "chat"
    agent_id: str = Field(min_length=1, max_length=128)
    queue: str = Field("default", min_length=1, max_length=128)
    tags: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=32)
    customer: dict[str, Annotated[str, Field(max_length=256)]] = Field(default_factory=dict, max_length=32)
    started_at: datetime = Field(default_factory=utcnow)


class Word(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    word: str
    start: float
    end: float
    probability: float | None = None


class Utterance(_Event):
    """One turn of speech or one chat message. Only final utterances are stored."""

    type: Literal["utterance"] = "utterance"
    seq: Seq
    speaker: Speaker
    text: str = Field(min_length=1)
    t_start: float | None = Field(None, ge=0)
    t_end: float | None = Field(None, ge=0)
    final: bool = True
    source: Literal["chat", "asr"] = "chat"
    words: list[Word] | None = None
    confidence: float | None = Field(None, ge=0, le=1, description="ASR confidence")

    @field_validator("text")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("text is blank")
        return v


class PartialUtterance(BaseModel):
    """A streaming ASR hypothesis while someone is still speaking; shown live, never stored."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    v: Literal[1] = SCHEMA_VERSION
    type: Literal["partial"] = "partial"
    call_id: CallId
    speaker: Speaker
    text: str
    t_start: float


class AgentAction(_Event):
    """A desktop/CRM action by the agent, e.g. ``pull-up-account``, ``verify-identity``, ``refund``."""

    type: Literal["agent_action"] = "agent_action"
    seq: Seq
    name: str = Field(min_length=1, max_length=128)
    args: dict[str, Any] = Field(default_factory=dict)
    t: float | None = Field(None, ge=0, description="Seconds from call start")


class CallEnded(_Event):
    type: Literal["call_ended"] = "call_ended"
    seq: Seq
    ended_at: datetime = Field(default_factory=utcnow)
    csat: float | None = Field(None, ge=0, le=10, description="Customer rating, where known")


class EvidenceRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    seq: int
    excerpt: str = ""
    t: float | None = None

    @property
    def minute(self) -> str | None:
        return minute_mark(self.t)


class Signal(_Event):
    """Something a detector or policy found worth a lead's or an agent's attention."""

    type: Literal["signal"] = "signal"
    id: str = ""
    kind: str = Field(min_length=1, max_length=64)
    confidence: float = Field(ge=0, le=1)
    tier: Literal[0, 1] = 0
    audience: Audience = "lead"
    evidence: list[EvidenceRef] = Field(default_factory=list)
    message: str = ""
    detector: str = ""
    created_at: datetime = Field(default_factory=utcnow)
    details: dict[str, Any] = Field(default_factory=dict)

    def model_post_init(self, __context: Any) -> None:
        if not self.id:
            object.__setattr__(self, "id", signal_id(self.call_id, self.kind, self.audience,
                                                     [e.seq for e in self.evidence]))


def signal_id(call_id: str, kind: str, audience: str, seqs: list[int]) -> str:
    """Deterministic id: a redelivered detection never becomes a second signal."""
    raw = json.dumps([call_id, kind, audience, sorted(seqs)])
    return hashlib.sha1(raw.encode()).hexdigest()[:20]


class QANote(_Event):
    """A post-call QA note draft (see postcall/). ``body`` follows the note JSON in the API docs."""

    type: Literal["qa_note"] = "qa_note"
    rubric_id: str
    rubric_version: str
    status: Literal["draft", "approved", "edited", "rejected"] = "draft"
    body: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=utcnow)


InboundEvent = Annotated[Union[CallStarted, Utterance, AgentAction, CallEnded], Field(discriminator="type")]
"""What a client may send on ``/v1/calls/{call_id}/events``."""

AnyEvent = Annotated[
    Union[CallStarted, Utterance, AgentAction, CallEnded, Signal, QANote, PartialUtterance],
    Field(discriminator="type"),
]
Event = Union[CallStarted, Utterance, AgentAction, CallEnded, Signal, QANote, PartialUtterance]

INBOUND_TYPES = ("call_started", "utterance", "agent_action", "call_ended")
inbound_adapter: TypeAdapter[Any] = TypeAdapter(InboundEvent)
any_adapter: TypeAdapter[Any] = TypeAdapter(AnyEvent)


def parse_event(data: dict[str, Any] | str | bytes) -> Event:
    """Parse any event from a dict or JSON text (raises pydantic.ValidationError)."""
    if isinstance(data, (str, bytes)):
        return any_adapter.validate_json(data)
    return any_adapter.validate_python(data)


def minute_mark(t: float | None) -> str | None:
    """Seconds from call start as ``m:ss`` (what a lead reads)."""
    if t is None:
        return None
    t = max(0, int(t))
    return f"{t // 60}:{t % 60:02d}"


def json_schema() -> dict[str, Any]:
    """JSON schema of every event, as printed by ``livecoach schema``."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "livecoach events",
        "version": SCHEMA_VERSION,
        "inbound": inbound_adapter.json_schema(),
        "all": any_adapter.json_schema(),
    }
