"""Console sign-in: a lead token kept in the ``livecoach_token`` httpOnly cookie.

The cookie is ``SameSite=Strict`` and every cookie-authenticated change or websocket also has its
``Origin`` checked against the host it was sent to, so another site cannot act as a signed-in lead.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import HTTPException, Request, WebSocket

from livecoach.auth import Principal, TokenStore, _bearer, ws_authenticate

COOKIE = "livecoach_token"
CONSOLE_ROLES = ("lead", "admin")


def cross_site(headers, host_header: str | None) -> bool:
    """True when the request names an Origin other than the host it reached."""
    origin = headers.get("origin")
    if not origin or origin == "null":
        return origin == "null"
    return urlsplit(origin).netloc.lower() != (host_header or "").lower()


async def page_principal(request: Request) -> Principal | None:
    """Who is signed in to the console (cookie, or a bearer header for scripts), if anyone; a token
    not in the cache is read in a thread, never on the event loop."""
    tokens: TokenStore = request.app.state.tokens
    token = _bearer(request.headers.get("authorization")) or request.cookies.get(COOKIE)
    return await tokens.check_async(token)


def same_origin(request: Request) -> None:
    """FastAPI dependency for cookie-authenticated changes: refuse cross-site requests."""
    if request.cookies.get(COOKIE) and cross_site(request.headers, request.headers.get("host")):
        raise HTTPException(403, "cross-site request refused")


async def ws_principal(ws: WebSocket, roles=CONSOLE_ROLES) -> Principal | None:
    """Authenticate a console websocket by cookie (browsers) or bearer/?token= (scripts).
    On failure it accepts and closes with 4401/4403, like :func:`livecoach.auth.ws_authenticate`."""
    cookie = ws.cookies.get(COOKIE)
    token = _bearer(ws.headers.get("authorization")) or ws.query_params.get("token") or cookie
    if cookie and cross_site(ws.headers, ws.headers.get("host")):
        await ws.accept()
        await ws.close(code=4403, reason="cross-site websocket refused")
        return None
    return await ws_authenticate(ws, roles, token=token)
