"""The spine: calls, the event log, utterances, actions, signals, feedback, notes, tokens.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("call_id", sa.String(128), primary_key=True),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("agent_id", sa.String(128), nullable=False),
        sa.Column("queue", sa.String(128), nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("customer", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("last_seq", sa.Integer, nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("ended_at", TS),
        sa.Column("csat", sa.Float),
    )
    op.create_index("ix_calls_status", "calls", ["status"])
    op.create_index("ix_calls_agent", "calls", ["agent_id"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("call_id", sa.String(128), sa.ForeignKey("calls.call_id"), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("stored_at", TS, nullable=False),
        sa.UniqueConstraint("call_id", "seq", name="uq_events_call_seq"),
    )
    op.create_table(
        "utterances",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("call_id", sa.String(128), sa.ForeignKey("calls.call_id"), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("speaker", sa.String(16), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("t_start", sa.Float),
        sa.Column("t_end", sa.Float),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("confidence", sa.Float),
        sa.Column("words", sa.JSON),
        sa.UniqueConstraint("call_id", "seq", name="uq_utterances_call_seq"),
    )
    op.create_table(
        "actions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("call_id", sa.String(128), sa.ForeignKey("calls.call_id"), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("args", sa.JSON, nullable=False),
        sa.Column("t", sa.Float),
        sa.UniqueConstraint("call_id", "seq", name="uq_actions_call_seq"),
    )
    op.create_table(
        "signals",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("call_id", sa.String(128), sa.ForeignKey("calls.call_id"), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("tier", sa.Integer, nullable=False),
        sa.Column("audience", sa.String(16), nullable=False),
        sa.Column("evidence", sa.JSON, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("detector", sa.String(64), nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_signals_call", "signals", ["call_id"])
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("signal_id", sa.String(40), sa.ForeignKey("signals.id"), nullable=False),
        sa.Column("call_id", sa.String(128), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_feedback_signal", "feedback", ["signal_id"])
    op.create_table(
        "notes",
        sa.Column("call_id", sa.String(128), sa.ForeignKey("calls.call_id"), primary_key=True),
        sa.Column("rubric_id", sa.String(64), nullable=False),
        sa.Column("rubric_version", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_notes_status", "notes", ["status"])
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("agent_id", sa.String(128)),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS),
        sa.Column("revoked_at", TS),
    )


def downgrade() -> None:
    for t in ("tokens", "notes", "feedback", "signals", "actions", "utterances", "events", "calls"):
        op.drop_table(t)
