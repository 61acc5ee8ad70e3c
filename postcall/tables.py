"""Tables of the post-call QA package (created by migration 0002_postcall; they must match it).

The note itself lives in the spine's ``notes`` table; these hold what people and imports add
around it: review events (the measurement log), process-issue records, late CSAT, imported
tickets, lead-run samples, agents' self-assessments and coaching sessions.
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, DateTime, Float, Index, Integer, String, Table, Text

from livecoach.tables import metadata

TS = DateTime(timezone=True)

# Every review action and lifecycle step: drafted, reviewed, approved, edited, rejected, requeued,
# csat, self_assessment, coaching_session. ``details`` holds an edit's diff or a re-queue's cause.
qa_events = Table(
    "qa_events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("call_id", String(128), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("role", String(16), nullable=False),
    Column("action", String(32), nullable=False),
    Column("reason", Text),
    Column("details", JSON, nullable=False),
    Column("created_at", TS, nullable=False),
    Index("ix_qa_events_call", "call_id"),
    Index("ix_qa_events_action", "action"),
)

# Problems whose root cause is not the agent: policy, product, documentation, staffing.
qa_process_issues = Table(
    "qa_process_issues", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("call_id", String(128), nullable=False),
    Column("fingerprint", String(64), nullable=False, unique=True),
    Column("category", String(32), nullable=False),
    Column("description", Text, nullable=False),
    Column("criterion", String(64)),
    Column("article", String(256)),
    Column("evidence", JSON, nullable=False),
    Column("status", String(16), nullable=False),  # open | acknowledged | resolved
    Column("created_at", TS, nullable=False),
    Index("ix_qa_process_issues_call", "call_id"),
)

# A CSAT that arrived after the call ended (a CallEnded cannot come twice).
qa_csat = Table(
    "qa_csat", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("call_id", String(128), nullable=False),
    Column("csat", Float, nullable=False),
    Column("source", String(64), nullable=False),
    Column("created_at", TS, nullable=False),
    Index("ix_qa_csat_call", "call_id"),
)

# Closed help-desk tickets imported through POST /v1/tickets or `livecoach import`.
qa_tickets = Table(
    "qa_tickets", metadata,
    Column("call_id", String(128), primary_key=True),
    Column("ticket_id", String(128), nullable=False),
    Column("product_area", String(128)),
    Column("segment", String(64)),
    Column("csat", Float),
    Column("resolution_minutes", Float),
    Column("escalations", Integer, nullable=False),
    Column("agent_notes", Text),
    Column("kb_articles", JSON, nullable=False),
    Column("closed_at", TS),
    Column("imported_at", TS, nullable=False),
)

# Conversations a lead sampled for review (`livecoach qa sample`): the pilot metric's population.
qa_samples = Table(
    "qa_samples", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sample_id", String(64), nullable=False),
    Column("call_id", String(128), nullable=False),
    Column("queue", String(128), nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("created_at", TS, nullable=False),
    Index("ix_qa_samples_sample", "sample_id"),
)

# The agent's own view of a reviewed call, added before a coaching session.
qa_self_assessments = Table(
    "qa_self_assessments", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("call_id", String(128), nullable=False),
    Column("agent_id", String(128), nullable=False),
    Column("went_well", Text, nullable=False),
    Column("struggled", Text, nullable=False),
    Column("context", Text, nullable=False),
    Column("created_at", TS, nullable=False),
    Index("ix_qa_self_assessments_call", "call_id"),
)

# What a lead and an agent agreed in a coaching session; later calls are scored on `criterion`.
qa_coaching_sessions = Table(
    "qa_coaching_sessions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("call_id", String(128), nullable=False),
    Column("agent_id", String(128), nullable=False),
    Column("lead", String(128), nullable=False),
    Column("criterion", String(64), nullable=False),
    Column("next_action", Text, nullable=False),
    Column("follow_up_date", String(10), nullable=False),
    Column("notes", Text, nullable=False),
    Column("created_at", TS, nullable=False),
    Index("ix_qa_coaching_agent", "agent_id"),
)
