"""Bearer tokens with roles. Tokens are random, shown once, and stored only as SHA-256 hashes.

Roles: ``ingest`` (sends call events and audio), ``agent`` (own calls and cues only), ``lead``
(all calls, console, review), ``admin`` (everything). HTTP answers 401 for a missing/unknown token
and 403 for a wrong role; websockets close with 4401 / 4403.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from fastapi import Depends, HTTPException, Request, WebSocket
from sqlalchemy import insert, select, update

from livecoach import tables as T
from livecoach.store import Store, make_engine, upgrade

ROLES = ("ingest", "agent", "lead", "admin")
TOKEN_PREFIX = "lc_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    token_id: int
    name: str
    role: str
    agent_id: str | None = None

    def may(self, *roles: str) -> bool:
        return self.role == "admin" or self.role in roles

    def can_see_call(self, call: dict[str, Any]) -> bool:
        if self.role in ("lead", "admin"):
            return True
        return self.role == "agent" and call.get("agent_id") == self.agent_id


class TokenStore:
    """Create, check, list and revoke tokens. Checks are cached briefly (revocation applies within
    ``cache_seconds``)."""

    def __init__(self, engine, cache_seconds: float = 5.0):
        self.engine = engine
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    @classmethod
    def from_settings(cls, settings) -> "TokenStore":
        engine = make_engine(settings.database_url)
        upgrade(engine)
        return cls(engine)

    @classmethod
    def for_store(cls, store: Store) -> "TokenStore":
        return cls(store.engine)

    def create(self, *, role: str, name: str, agent_id: str | None = None,
               expires_days: float | None = None) -> str:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        if not name.strip():
            raise ValueError("a token needs a name")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = datetime.now(timezone.utc)
        with self.engine.begin() as conn:
            conn.execute(insert(T.tokens).values(
                name=name, role=role, token_hash=hash_token(token),
                agent_id=(agent_id or name) if role == "agent" else agent_id,
                created_at=now, expires_at=now + timedelta(days=expires_days) if expires_days else None))
        return token

    def _cached(self, h: str) -> tuple[bool, Principal | None]:
        """(hit, principal) for a token hash checked within ``cache_seconds``."""
        hit = self._cache.get(h)
        if hit and time.monotonic() - hit[0] < self.cache_seconds:
            return True, hit[1]
        return False, None

    def check(self, token: str | None) -> Principal | None:
        if not token:
            return None
        h = hash_token(token)
        hit, p = self._cached(h)
        return p if hit else self._lookup(h)

    async def check_async(self, token: str | None) -> Principal | None:
        """:meth:`check` that never blocks the event loop (a cache miss reads in a thread)."""
        if not token:
            return None
        h = hash_token(token)
        hit, p = self._cached(h)
        return p if hit else await asyncio.to_thread(self._lookup, h)

    def _lookup(self, h: str) -> Principal | None:
        now = time.monotonic()
        with self.engine.connect() as conn:
            row = conn.execute(select(T.tokens).where(T.tokens.c.token_hash == h)).mappings().first()
        p = None
        if row and row["revoked_at"] is None:
            exp = row["expires_at"]
            if exp is not None and exp.tzinfo is None:
                exp = exp.replace(tzinfo=timezone.utc)
            if exp is None or exp > datetime.now(timezone.utc):
                p = Principal(row["id"], row["name"], row["role"], row["agent_id"])
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[h] = (now, p)
        return p

    def list(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(T.tokens.c.id, T.tokens.c.name, T.tokens.c.role, T.tokens.c.agent_id,
                                       T.tokens.c.created_at, T.tokens.c.expires_at, T.tokens.c.revoked_at)
                                .order_by(T.tokens.c.id)).mappings()
            return [dict(r) for r in rows]

    def revoke(self, token_id: int) -> bool:
        with self.engine.begin() as conn:
            n = conn.execute(update(T.tokens).where(T.tokens.c.id == token_id, T.tokens.c.revoked_at.is_(None))
                             .values(revoked_at=datetime.now(timezone.utc))).rowcount
        self._cache.clear()
        return n > 0


def _bearer(header: str | None) -> str | None:
    if header and header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return None


def http_token(request: Request) -> str | None:
    """The bearer token of an HTTP request (the console also keeps it in a cookie)."""
    return _bearer(request.headers.get("authorization")) or request.cookies.get("livecoach_token")


def require(*roles: str):
    """FastAPI dependency: the caller must hold one of ``roles`` (admin always passes)."""

    def dep(request: Request) -> Principal:
        tokens: TokenStore = request.app.state.tokens
        p = tokens.check(http_token(request))
        if p is None:
            raise HTTPException(401, "missing, unknown, revoked or expired bearer token",
                                headers={"WWW-Authenticate": "Bearer"})
        if not p.may(*roles):
            raise HTTPException(403, f"role {p.role!r} may not do this (needs {' or '.join(roles)})")
        return p

    return Depends(dep)


async def ws_authenticate(ws: WebSocket, roles: Iterable[str], *, token: str | None = None) -> Principal | None:
    """Check a websocket's token (Authorization header, or ``?token=`` for clients that cannot set
    headers; or ``token`` when the caller found it elsewhere, e.g. the console cookie). On failure,
    accept-and-close with 4401/4403 and a reason, and return None.

    An accepted socket stays tied to its token: once the token is revoked or expires, the socket
    is closed with 4401 within the token cache time (``TokenStore.cache_seconds``)."""
    tokens: TokenStore = ws.app.state.tokens
    token = token or _bearer(ws.headers.get("authorization")) or ws.query_params.get("token")
    p = await tokens.check_async(token)  # a cache miss reads in a thread, off the loop
    roles = tuple(roles)
    if p is None:
        await ws.accept()
        await ws.close(code=4401, reason="missing, unknown, revoked or expired token")
        return None
    if not p.may(*roles):
        await ws.accept()
        await ws.close(code=4403, reason=f"role {p.role} may not use this socket")
        return None
    _watch(ws, tokens, token)
    return p


_WATCHERS: set[asyncio.Task] = set()
WATCH_MIN_S = 0.2


def _watch(ws: WebSocket, tokens: TokenStore, token: str) -> None:
    """Close ``ws`` with 4401 once ``token`` stops being valid; ends with the socket's handler."""
    handler = asyncio.current_task()
    if handler is None:
        return
    task = asyncio.get_running_loop().create_task(_close_when_revoked(ws, tokens, token, handler))
    _WATCHERS.add(task)
    task.add_done_callback(_WATCHERS.discard)


async def _close_when_revoked(ws: WebSocket, tokens: TokenStore, token: str, handler: asyncio.Task) -> None:
    from starlette.websockets import WebSocketState

    while True:
        await asyncio.wait({handler}, timeout=max(tokens.cache_seconds, WATCH_MIN_S))
        if handler.done() or ws.application_state == WebSocketState.DISCONNECTED:
            return
        if ws.application_state != WebSocketState.CONNECTED:
            continue  # not accepted yet
        try:
            still = await tokens.check_async(token)
        except Exception:  # the database cannot say (down): keep the socket; storage faults are reported elsewhere
            continue
        if still is None:
            try:
                await ws.close(code=4401, reason="token revoked or expired")
            except Exception:  # the client left meanwhile
                pass
            return
