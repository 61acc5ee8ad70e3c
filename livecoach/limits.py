"""Per-token limits: how many sockets one token may hold open, and how fast it may open new ones.

Every websocket (call events, call audio, agent prompts, console board and call view) calls
:func:`admit_socket` once it knows who is connecting. A token over a limit gets one error frame that
names the limit and its number, then the socket is closed with code **4429**:

  ``{"type": "error", "seq": null, "code": "too_many_connections", "limit": "max_connections_per_token",
     "max": 1000, "open": 1000, "message": …}``
  ``{"type": "error", "seq": null, "code": "too_many_new_calls", "limit": "max_new_calls_per_second_per_token",
     "max": 50.0, "burst": 500, "retry_after_s": 0.02, "message": …}``

HTTP routes that start a call (``POST /v1/tickets``) call :func:`take_new_call`, which answers
**429** with ``Retry-After`` (seconds) from the same per-token bucket.

A socket counts against its token from admission until its handler ends (including the moments it
spends storing what the client already sent); nothing needs to release it by hand.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from fastapi import HTTPException, WebSocket

CLOSE_TOO_MANY = 4429


@dataclass
class Refusal:
    code: str
    limit: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    retry_after_s: float | None = None

    def frame(self) -> dict[str, Any]:
        out = {"type": "error", "seq": None, "code": self.code, "message": self.message, "limit": self.limit,
               **self.details}
        if self.retry_after_s is not None:
            out["retry_after_s"] = round(self.retry_after_s, 3)
        return out


class TokenLimits:
    """Open sockets and a token bucket of new calls, per token id (one per server process)."""

    def __init__(self, max_connections: int, new_per_second: float, burst: int,
                 clock: Callable[[], float] = time.monotonic):
        self.max_connections = max_connections
        self.rate = float(new_per_second)
        self.burst = max(1, int(burst))
        self.clock = clock
        self.open: dict[int, int] = {}
        self._buckets: dict[int, tuple[float, float]] = {}  # token id -> (calls left, when counted)

    @classmethod
    def from_settings(cls, settings) -> "TokenLimits":
        return cls(settings.max_connections_per_token, settings.max_new_calls_per_second_per_token,
                   settings.new_calls_burst_per_token)

    def _left(self, token_id: int, now: float) -> float:
        left, at = self._buckets.get(token_id, (float(self.burst), now))
        return min(float(self.burst), left + (now - at) * self.rate)

    def take_new_call(self, token_id: int) -> Refusal | None:
        """Count one new call against the token's bucket, or say when the next one may start."""
        now = self.clock()
        left = self._left(token_id, now)
        if left < 1.0:
            self._buckets[token_id] = (left, now)
            wait = (1.0 - left) / self.rate
            return Refusal("too_many_new_calls", "max_new_calls_per_second_per_token",
                           f"this token starts new calls faster than {self.rate:g} per second, burst {self.burst} "
                           f"(max_new_calls_per_second_per_token); try again in {wait:.2f} s",
                           {"max": self.rate, "burst": self.burst}, retry_after_s=wait)
        self._buckets[token_id] = (left - 1.0, now)
        if len(self._buckets) > 10_000:  # forget tokens whose bucket has filled up again
            self._buckets = {t: b for t, b in self._buckets.items() if self._left(t, now) < self.burst}
        return None

    def admit(self, token_id: int) -> Refusal | None:
        """Admit one more socket for the token (call :meth:`release` when it ends), or refuse it."""
        n = self.open.get(token_id, 0)
        if n >= self.max_connections:
            return Refusal("too_many_connections", "max_connections_per_token",
                           f"this token has {n} sockets open; the limit is {self.max_connections} "
                           "(max_connections_per_token): close one, or use another token",
                           {"max": self.max_connections, "open": n})
        refusal = self.take_new_call(token_id)
        if refusal is not None:
            return refusal
        self.open[token_id] = n + 1
        return None

    def release(self, token_id: int) -> None:
        n = self.open.get(token_id, 0) - 1
        if n > 0:
            self.open[token_id] = n
        else:
            self.open.pop(token_id, None)


def limits_for(app) -> TokenLimits:
    """The process's limits (made on first use from ``app.state.settings``)."""
    lim = getattr(app.state, "token_limits", None)
    if lim is None:
        lim = app.state.token_limits = TokenLimits.from_settings(app.state.settings)
    return lim


async def admit_socket(ws: WebSocket, principal) -> bool:
    """Admit ``ws`` for ``principal``'s token, held until the socket's handler ends. Over a limit:
    accept, send the error frame, close with 4429 and return False."""
    lim = limits_for(ws.app)
    refusal = lim.admit(principal.token_id)
    if refusal is None:
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - handlers always run in a task
            lim.release(principal.token_id)
        else:
            task.add_done_callback(lambda _t, tid=principal.token_id: lim.release(tid))
        return True
    ws.app.state.metrics[f"sockets_refused_{refusal.code}"] += 1
    reason = f"{refusal.code}: {refusal.limit}"
    if refusal.retry_after_s is not None:
        reason += f"; retry after {refusal.retry_after_s:.2f} s"
    await refuse_socket(ws, refusal.frame(), CLOSE_TOO_MANY, reason)
    return False


async def refuse_socket(ws: WebSocket, frame: dict, code: int, reason: str) -> None:
    """Accept ``ws`` if it is still connecting, send ``frame``, close with ``code`` and ``reason``
    (cut to the 123 bytes a close frame holds); a client that already left is no error."""
    try:
        if ws.client_state.name == "CONNECTING":
            await ws.accept()
        await ws.send_json(frame)
        await ws.close(code=code, reason=reason[:120])
    except Exception:  # the client left already
        pass


def take_new_call(app, principal) -> None:
    """For HTTP routes that start a call: raise 429 with ``Retry-After`` when the token is too fast."""
    refusal = limits_for(app).take_new_call(principal.token_id)
    if refusal is not None:
        app.state.metrics[f"requests_refused_{refusal.code}"] += 1
        raise HTTPException(429, refusal.message,
                            headers={"Retry-After": str(max(1, math.ceil(refusal.retry_after_s or 1)))})


def text_frame_bytes(raw: str) -> int:
    """Size of a websocket text frame in bytes as it came off the wire (UTF-8), not in characters."""
    return len(raw.encode("utf-8", "surrogatepass"))


def ws_max_size(settings) -> int:
    """The websocket protocol's own frame cap for uvicorn: twice the largest frame the sockets accept,
    so an oversized frame reaches the socket and gets its ``frame_too_large`` error; beyond it the
    protocol closes the socket with 1009 (message too big) before buffering more."""
    return 2 * max(settings.max_frame_bytes, settings.max_audio_frame_bytes)


# ---------------------------------------------------------------------- what a JSON frame may hold
MAX_JSON_DEPTH = 64


class UnstorableText(ValueError):
    """Well-formed JSON whose strings no database keeps as sent (NUL, unpaired surrogates)."""


class TooDeep(ValueError):
    """JSON nested deeper than MAX_JSON_DEPTH."""


def _finite(text: str) -> float:
    f = float(text)
    if f in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:40]} is out of range")
    return f


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


_SUSPECT_ESCAPE = re.compile(r"\\u(?:[dD][89a-fA-F]|0000)")


def _walk(data) -> tuple[int, str | None]:
    """(nesting depth, what makes a string unstorable or None), without recursion."""
    deepest, problem = 0, None
    stack = [(data, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, depth)
            stack.extend((k, depth) for k in item)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, str) and problem is None:
            if "\x00" in item:
                problem = "a string holds a NUL character (\\u0000)"
            else:
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    problem = "a string holds an unpaired UTF-16 surrogate escape (\\ud800-\\udfff)"
    return deepest, problem


def strict_json(raw: str | bytes):
    """``json.loads`` for client frames. Raises ValueError (with a message for the client) for what is
    not JSON, NaN/Infinity or numbers out of range (not JSON; they break times, sorting and
    PostgreSQL JSONB), :class:`TooDeep` for nesting deeper than MAX_JSON_DEPTH, and
    :class:`UnstorableText` for NUL characters or unpaired surrogate escapes such as ``"\\ud800"``
    (no database stores them)."""
    too_deep = f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
    try:
        data = json.loads(raw, parse_float=_finite, parse_constant=_no_constant)
    except RecursionError:
        raise TooDeep(too_deep) from None
    if not isinstance(data, (dict, list, str)):
        return data
    text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
    suspect = bool(_SUSPECT_ESCAPE.search(text))
    if suspect or text.count("[") + text.count("{") > MAX_JSON_DEPTH:  # only then can either be wrong
        depth, problem = _walk(data)
        if depth > MAX_JSON_DEPTH:
            raise TooDeep(too_deep)
        if problem:
            raise UnstorableText(problem)
    return data


_NUL_QUERY = re.compile(rb"%00|\x00")


class RefuseUnstorableText:
    """ASGI middleware: a request whose path, query or JSON body holds a NUL character (or a body with
    an unpaired surrogate escape, or JSON nested deeper than MAX_JSON_DEPTH) is refused before any
    route sees it: HTTP 422 naming the problem, websockets close 4400. PostgreSQL refuses NUL in
    text, so without this a route would fail inside the database with a 500."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        problem, where = None, None
        if "\x00" in scope.get("path", "") or _NUL_QUERY.search(scope.get("query_string", b"")):
            problem, where = "a NUL character (%00) is not accepted in a path or query", "(url)"
        elif scope["type"] == "http" and scope.get("method") in ("POST", "PUT", "PATCH"):
            body, receive = await _buffered(receive)
            if body and (b"\x00" in body or _SUSPECT_ESCAPE.search(body.decode("utf-8", "replace"))
                         or body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH):
                try:
                    strict_json(body)
                except (UnstorableText, TooDeep) as exc:
                    problem, where = str(exc), "(body)"
                except ValueError:
                    pass  # anything else that is not JSON: the route's own parser answers it
        if problem is None:
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 4400, "reason": problem[:120]})
            return
        payload = json.dumps({"detail": "invalid request", "errors": [{"field": where, "problem": problem}]}).encode()
        await send({"type": "http.response.start", "status": 422,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


async def _buffered(receive):
    """Read the whole request body; return it and a ``receive`` that replays it to the app."""
    chunks, more = [], True
    while more:
        msg = await receive()
        if msg["type"] != "http.request":  # the client left: let the app see that
            async def gone(msg=msg):
                return msg
            return b"", gone
        chunks.append(msg.get("body", b""))
        more = msg.get("more_body", False)
    body = b"".join(chunks)
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay
