"""SQLAlchemy table definitions. The schema itself is created and changed only by the Alembic
migrations in ``livecoach/migrations``; these definitions must match the latest revision
(``tests/test_storage.py`` checks that they do)."""

from __future__ import annotations

from sqlalchemy import (JSON, Column, DateTime, Float, ForeignKey, Index, Integer, MetaData, String,
                        Table, Text, UniqueConstraint)

metadata = MetaData()

calls = Table(
    "calls", metadata,
    Column("call_id", String(128), primary_key=True),
    Column("channel", String(16), nullable=False),
    Column("agent_id", String(128), nullable=False),
    Column("queue", String(128), nullable=False),
    Column("tags", JSON, nullable=False),
    Column("customer", JSON, nullable=False),
    Column("status", String(16), nullable=False),  # active | ended
    Column("last_seq", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True)),
    Column("csat", Float),
    Index("ix_calls_status", "status"),
    Index("ix_calls_agent", "agent_id"),
)

# The log of record: every accepted inbound event, exactly once per (call_id, seq).
events = Table(
    "events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("call_id", String(128), ForeignKey("calls.call_id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("type", String(32), nullable=False),
    Column("body", Text, nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("stored_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("call_id", "seq", name="uq_events_call_seq"),
)

utterances = Table(
    "utterances", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("call_id", String(128), ForeignKey("calls.call_id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("speaker", String(16), nullable=False),
    Column("text", Text, nullable=False),
    Column("t_start", Float),
    Column("t_end", Float),
    Column("source", String(8), nullable=False),
    Column("confidence", Float),
    Column("words", JSON),
    UniqueConstraint("call_id", "seq", name="uq_utterances_call_seq"),
)

actions = Table(
    "actions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("call_id", String(128), ForeignKey("calls.call_id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("name", String(128), nullable=False),
    Column("args", JSON, nullable=False),
    Column("t", Float),
    UniqueConstraint("call_id", "seq", name="uq_actions_call_seq"),
)

signals = Table(
    "signals", metadata,
    Column("id", String(40), primary_key=True),
    Column("call_id", String(128), ForeignKey("calls.call_id"), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("confidence", Float, nullable=False),
    Column("tier", Integer, nullable=False),
    Column("audience", String(16), nullable=False),
    Column("evidence", JSON, nullable=False),
    Column("message", Text, nullable=False),
    Column("detector", String(64), nullable=False),
    Column("details", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_signals_call", "call_id"),
)

# What a lead or an agent did with a signal: joining, acknowledged, dismissed, handoff, accepted …
feedback = Table(
    "feedback", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("signal_id", String(40), ForeignKey("signals.id"), nullable=False),
    Column("call_id", String(128), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("role", String(16), nullable=False),
    Column("action", String(32), nullable=False),
    Column("reason", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_feedback_signal", "signal_id"),
)

notes = Table(
    "notes", metadata,
    Column("call_id", String(128), ForeignKey("calls.call_id"), primary_key=True),
    Column("rubric_id", String(64), nullable=False),
    Column("rubric_version", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("body", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_notes_status", "status"),
)

tokens = Table(
    "tokens", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False),
    Column("role", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("agent_id", String(128)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
)

# Who viewed or changed a QA note (migration 0003_audit). ``note_version`` is the note's
# ``updated_at`` after the action: the version that was read or written.
audit_log = Table(
    "audit_log", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("token_id", Integer),
    Column("role", String(16), nullable=False),
    Column("action", String(32), nullable=False),
    Column("call_id", String(128), nullable=False),
    Column("note_status", String(16)),
    Column("note_version", String(40)),
    Column("client", String(64)),
    Column("details", JSON, nullable=False),
    Index("ix_audit_call", "call_id"),
    Index("ix_audit_actor", "actor"),
)
