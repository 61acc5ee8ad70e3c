"""postcall: QA notes, reviews, process issues, coaching records.

Review events, process-issue records, late CSAT, imported tickets, samples, self-assessments and
coaching sessions (the note itself is the spine's ``notes`` table). Matches postcall/tables.py.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "qa_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("call_id", sa.String(128), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("details", sa.JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_qa_events_call", "qa_events", ["call_id"])
    op.create_index("ix_qa_events_action", "qa_events", ["action"])
    op.create_table(
        "qa_process_issues",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("call_id", sa.String(128), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False, unique=True),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("criterion", sa.String(64)),
        sa.Column("article", sa.String(256)),
        sa.Column("evidence", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_qa_process_issues_call", "qa_process_issues", ["call_id"])
    op.create_table(
        "qa_csat",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("call_id", sa.String(128), nullable=False),
        sa.Column("csat", sa.Float, nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_qa_csat_call", "qa_csat", ["call_id"])
    op.create_table(
        "qa_tickets",
        sa.Column("call_id", sa.String(128), primary_key=True),
        sa.Column("ticket_id", sa.String(128), nullable=False),
        sa.Column("product_area", sa.String(128)),
        sa.Column("segment", sa.String(64)),
        sa.Column("csat", sa.Float),
        sa.Column("resolution_minutes", sa.Float),
        sa.Column("escalations", sa.Integer, nullable=False),
        sa.Column("agent_notes", sa.Text),
        sa.Column("kb_articles", sa.JSON, nullable=False),
        sa.Column("closed_at", TS),
        sa.Column("imported_at", TS, nullable=False),
    )
    op.create_table(
        "qa_samples",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("sample_id", sa.String(64), nullable=False),
        sa.Column("call_id", sa.String(128), nullable=False),
        sa.Column("queue", sa.String(128), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_qa_samples_sample", "qa_samples", ["sample_id"])
    op.create_table(
        "qa_self_assessments",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("call_id", sa.String(128), nullable=False),
        sa.Column("agent_id", sa.String(128), nullable=False),
        sa.Column("went_well", sa.Text, nullable=False),
        sa.Column("struggled", sa.Text, nullable=False),
        sa.Column("context", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_qa_self_assessments_call", "qa_self_assessments", ["call_id"])
    op.create_table(
        "qa_coaching_sessions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("call_id", sa.String(128), nullable=False),
        sa.Column("agent_id", sa.String(128), nullable=False),
        sa.Column("lead", sa.String(128), nullable=False),
        sa.Column("criterion", sa.String(64), nullable=False),
        sa.Column("next_action", sa.Text, nullable=False),
        sa.Column("follow_up_date", sa.String(10), nullable=False),
        sa.Column("notes", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_qa_coaching_agent", "qa_coaching_sessions", ["agent_id"])


def downgrade() -> None:
    for t in ("qa_coaching_sessions", "qa_self_assessments", "qa_samples", "qa_tickets", "qa_csat",
              "qa_process_issues", "qa_events"):
        op.drop_table(t)
