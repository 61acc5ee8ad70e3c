"""The note as data: the JSON shapes of the post-call API (documented in the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Result = Literal["met", "missed", "not_applicable", "insufficient_evidence"]
RootCause = Literal["agent", "policy", "product", "documentation", "staffing"]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Evidence(_Open):
    seq: int = Field(description="The utterance's seq in the call")
    excerpt: str = Field("", description="Verbatim from the transcript, redacted: PII becomes …[name]…, "
                         "transcription markers become …")
    minute: str | None = Field(None, description="Minute mark m:ss from the start of the call")
    speaker: Literal["agent", "customer"] | None = None


class CriterionResult(_Open):
    id: str
    tier: int | Literal["compliance"] = Field(description="1 hurts the customer in the moment, 2 resolution "
                                              "quality, 3 efficiency, or compliance")
    label: str = ""
    result: Result
    evidence: list[Evidence] = Field(default_factory=list, description="Empty unless met or missed")
    reason: str = ""
    root_cause: RootCause | None = Field(None, description="For a missed criterion: agent behaviour, or a "
                                         "process cause that is never blamed on the agent")


class Focus(_Open):
    criterion: str
    label: str = ""
    tier: int | Literal["compliance"]
    why: str = ""
    evidence: list[Evidence]


class FollowUp(_Open):
    criterion: str
    track_next_calls: int
    status: Literal["open", "closed"]
    observed: list[dict[str, Any]] = Field(default_factory=list,
                                           description="The criterion's result on the agent's next calls")
    improved: bool | None = Field(None, description="Met on at least half the observed calls; null until observed")


class Coaching(_Open):
    focus: Focus | None = Field(None, description="One behaviour, highest tier first; null when nothing to coach")
    next_action: str | None = Field(None, description="What the agent could be seen doing tomorrow")
    follow_up: FollowUp | None = None
    strengths: list[dict[str, Any]] = Field(default_factory=list)


class ProcessIssue(_Open):
    category: Literal["policy", "product", "documentation", "staffing"]
    description: str
    criterion: str | None = None
    evidence: list[Evidence]


class NoteException(_Open):
    rule: Literal["missing_evidence", "contradictory_evidence", "stale", "out_of_scope", "sensitive",
                  "rubric_not_approved"]
    reason: str


class Flags(_Open):
    low_confidence: bool = False
    customer_risk: bool = False
    compliance_gap: bool = False
    late_low_csat: bool = False
    risk_reasons: list[str] = Field(default_factory=list)


class RubricRef(_Open):
    id: str
    version: str


class Note(_Open):
    """A post-call QA note. Drafts stay drafts until a lead approves, edits or rejects them."""

    call_id: str
    status: Literal["draft", "approved", "edited", "rejected"]
    rubric: RubricRef
    criteria: list[CriterionResult] = Field(description="Scored in tier order; empty when an exception stopped scoring")
    coaching: Coaching
    process_issues: list[ProcessIssue] = Field(description="Non-agent root causes, with their evidence")
    exception: NoteException | None = Field(None, description="Why no score was given (stop rule); goes to a lead")
    flags: Flags
    confidence: float = Field(ge=0, le=1)
    csat: float | None = None
    previous_focus: dict[str, Any] | None = Field(None, description="The agent's last focus behaviour, scored on this call")
    scorer: str = Field("rules", description="'rules', 'rules+detectors' (tier-0 scores were available), with "
                        "'+tier1' when the tier-1 window classifier made the context judgements")
    judgements: dict[str, Any] = Field(default_factory=dict, description=(
        "Context judgements, each with its 'source' (tier1|rules), reason and evidence: complaint_resolved "
        "{value: true|false|null (no complaint)}, live_signals [{kind, verdict supported|contradicted|uncertain|"
        "not_checked, p, resolved_by_end}], customer_risk {value, label, p}"))
    tier1: dict[str, Any] = Field(default_factory=dict, description=(
        "{status used|off|loading|unknown|failed, backend, judgements[] tier-1 contributed, windows_read, elapsed_ms, "
        "fallback (why rules decided)}. Criteria carry 'sources' and flags.provenance names each flag's inputs"))
    review: list[dict[str, Any]] = Field(default_factory=list, description="Review events: reviewed, approved, "
                                         "edited (with diff), rejected (with reason), requeued, csat …")
    self_assessments: list[dict[str, Any]] = Field(default_factory=list)
    coaching_sessions: list[dict[str, Any]] = Field(default_factory=list)


class ReviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["approve", "edit", "reject"]
    reason: str | None = Field(None, max_length=4000, description="Required to reject")
    changes: dict[str, Any] | None = Field(None, description="For edit: note fields to replace (criteria, coaching, "
                                           "process_issues, flags, exception, summary, lead_comment)")


class ReviewResult(BaseModel):
    call_id: str
    status: str
    diff: list[dict[str, Any]] | None = None


class CsatIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    csat: float = Field(ge=0, le=10)
    source: str = Field("survey", max_length=64)


class CsatResult(_Open):
    call_id: str
    csat: float
    requeued: bool


class QueueItem(BaseModel):
    call_id: str
    agent_id: str
    queue: str
    channel: str
    status: str
    priority: int = Field(description="Higher first: customer risk 40, low confidence 30, late low CSAT 25, "
                          "exception 15, compliance gap 10")
    reasons: list[str]
    flags: dict[str, Any]
    confidence: float | None
    csat: float | None
    focus: str | None
    exception: dict[str, Any] | None
    missed: list[str]
    process_issues: int
    requeued: bool
    drafted_at: str
    ended_at: str | None


class ReviewQueue(BaseModel):
    total: int
    items: list[QueueItem]


class SelfAssessmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    went_well: str = Field("", max_length=4000)
    struggled: str = Field("", max_length=4000)
    context: str = Field("", max_length=4000, description="What the transcript does not show")


class CoachingSessionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    call_id: str
    criterion: str = Field(description="The one behaviour discussed (a rubric criterion id)")
    next_action: str = Field(min_length=1, max_length=2000)
    follow_up_date: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    notes: str = Field("", max_length=4000)


class TicketMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    speaker: Literal["agent", "customer"]
    text: str = Field(min_length=1, max_length=20000)
    at: datetime | None = Field(None, description="When it was written (seconds from opened_at are derived)")


class Ticket(BaseModel):
    """A closed help-desk ticket (one JSON object; `livecoach import` reads one per line)."""

    model_config = ConfigDict(extra="forbid")
    ticket_id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
    agent_id: str = Field(min_length=1, max_length=128)
    queue: str = Field("tickets", min_length=1, max_length=128)
    product_area: str | None = Field(None, max_length=128)
    customer: dict[str, str] = Field(default_factory=dict, description="Known customer fields (removed from notes); "
                                     "'segment' is used for trends")
    tags: list[str] = Field(default_factory=list, max_length=32)
    thread: list[TicketMessage] = Field(min_length=1, max_length=5000)
    csat: float | None = Field(None, ge=0, le=10)
    resolution_minutes: float | None = Field(None, ge=0)
    escalations: int = Field(0, ge=0, le=1_000_000)  # a database integer; a bigger count is not a ticket
    agent_notes: str | None = Field(None, max_length=20000, description="Kept with the ticket, never put in a note")
    kb_articles: list[str] = Field(default_factory=list, description="Knowledge-base articles used")
    opened_at: datetime | None = None
    closed_at: datetime | None = None


class TicketResult(BaseModel):
    call_id: str
    ticket_id: str
    status: Literal["imported", "duplicate"]
    events: int
