"""Audit log: who viewed or changed a QA note, with which token, when and from where.

Every note read (``GET /v1/calls/{id}/note``, the console's call page) and every change (approve,
edit, reject, late CSAT, self-assessment, coaching session) writes one ``audit_log`` row through
the store's writer; a change and its audit row commit in the same transaction.

``GET /v1/audit`` (admin) lists the rows, newest first, filtered by ``call_id``, ``actor``
and ``action``. Leads do not read it: the log records their own reviews.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Query, Request
from sqlalchemy import Connection, insert, select

from livecoach import tables as T
from livecoach.auth import Principal, require
from livecoach.store import _aware

router = APIRouter(prefix="/v1", tags=["audit"])


def client_of(request: Request) -> str | None:
    """The caller's address as the server saw it (after uvicorn's trusted proxy headers)."""
    return request.client.host if request.client else None


def record(conn: Connection, who: Principal, action: str, call_id: str, *, client: str | None = None,
           details: dict[str, Any] | None = None) -> None:
    """Write one audit row inside ``conn``'s transaction (use from a ``Store.run_write`` function)."""
    note = conn.execute(select(T.notes.c.status, T.notes.c.updated_at)
                        .where(T.notes.c.call_id == call_id)).first()
    version = None
    if note is not None and note.updated_at is not None:
        version = _aware(note.updated_at).isoformat()
    conn.execute(insert(T.audit_log).values(
        at=datetime.now(timezone.utc), actor=who.name, token_id=who.token_id, role=who.role, action=action,
        call_id=call_id, note_status=note.status if note is not None else None, note_version=version,
        client=(client or "")[:64] or None, details=details or {}))


def entries(engine, *, call_id: str | None = None, actor: str | None = None, action: str | None = None,
            limit: int = 100) -> list[dict[str, Any]]:
    q = select(T.audit_log).order_by(T.audit_log.c.id.desc()).limit(limit)
    for col, value in (("call_id", call_id), ("actor", actor), ("action", action)):
        if value:
            q = q.where(T.audit_log.c[col] == value)
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(q).mappings()]
    for r in rows:
        r["at"] = _aware(r["at"]).isoformat()
    return rows


@router.get("/audit", summary="Who viewed or changed a QA note: token, role, action, note version, "
            "client address (admin)")
async def audit(request: Request, call_id: str | None = None, actor: str | None = None,
                action: str | None = None, limit: int = Query(100, ge=1, le=1000),
                who: Principal = require("admin")) -> dict[str, Any]:
    rows = await asyncio.to_thread(entries, request.app.state.store.engine, call_id=call_id, actor=actor,
                                   action=action, limit=limit)
    return {"entries": rows, "count": len(rows)}
