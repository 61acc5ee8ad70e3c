"""The lead console pages, served by the app under ``/console`` (server templates + small JS).

Sign-in takes a lead (or admin) token and keeps it in the ``livecoach_token`` httpOnly cookie;
agent and ingest tokens cannot open the console. Every page is sent with a Content-Security-Policy
that allows only this server, so a page cannot make a request off the machine.

Pages: ``/console`` (live board), ``/console/calls/{call_id}`` (call view), ``/console/review``
(review queue), ``/console/metrics``. JSON for the pages: ``GET /v1/console/metrics`` (console-only
figures).

QA notes are postcall's, end to end: the review page lists ``records.review_queue`` (the same
function behind ``GET /v1/review/queue``), reads each note from ``GET /v1/calls/{id}/note`` and
sends the lead's decision to ``POST /v1/calls/{id}/note/review``; the metrics page takes the note
and review figures from ``records.metrics`` (``GET /v1/qa/metrics``). The console writes no note.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from livecoach import audit
from livecoach.auth import Principal, require
from livecoach.lead_console import _charts, _data, _metrics, _notes
from livecoach.lead_console._board import KIND_LABELS, kind_label, mask_text
from livecoach.lead_console._session import COOKIE, CONSOLE_ROLES, cross_site, page_principal
from livecoach.events import minute_mark
from livecoach.postcall import records

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon"}

router = APIRouter(include_in_schema=True)
_env = Environment(loader=FileSystemLoader(str(HERE / "templates")), autoescape=select_autoescape(["html"]))
_env.globals.update(kind_label=kind_label, minute_mark=minute_mark)
_env.filters["pct"] = lambda v: "—" if v is None else f"{v * 100:.0f}%"


def _render(name: str, code: int = 200, **ctx: Any) -> HTMLResponse:
    html = _env.get_template(name).render(**ctx)
    return HTMLResponse(html, status_code=code, headers=_page_headers())


def _page_headers() -> dict[str, str]:
    return {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
            "Cache-Control": "no-store", "X-Frame-Options": "DENY"}


async def _lead(request: Request) -> Principal | RedirectResponse | HTMLResponse:
    who = await page_principal(request)
    if who is None:
        nxt = quote(request.url.path)
        return RedirectResponse(f"/console/login?next={nxt}", status_code=303)
    if not who.may(*CONSOLE_ROLES):
        return _render("login.html", 403, error=f"{who.role.capitalize()} tokens cannot open the console. "
                       "Sign in with a lead token.", next="/console")
    return who


def _store(request: Request):
    return request.app.state.store


# ---------------------------------------------------------------- sign-in
@router.get("/console/login", response_class=HTMLResponse, include_in_schema=False)
async def login_page(request: Request, next: str = "/console") -> HTMLResponse:
    return _render("login.html", error=None, next=_safe_next(next))


def _safe_next(nxt: str | None) -> str:
    return nxt if nxt and nxt.startswith("/console") and "//" not in nxt else "/console"


@router.post("/console/login", include_in_schema=False)
async def login(request: Request) -> Response:
    if cross_site(request.headers, request.headers.get("host")):
        raise HTTPException(403, "cross-site sign-in refused")
    raw = (await request.body())[:8192].decode("utf-8", "replace")
    form = {k: v[0] for k, v in parse_qs(raw).items()}
    token = (form.get("token") or "").strip()
    nxt = _safe_next(form.get("next"))
    who = await request.app.state.tokens.check_async(token)
    if who is None:
        return _render("login.html", 401, error="That token is unknown, revoked or expired.", next=nxt)
    if not who.may(*CONSOLE_ROLES):
        return _render("login.html", 403, error=f"{who.role.capitalize()} tokens cannot open the console. "
                       "Sign in with a lead token.", next=nxt)
    resp = RedirectResponse(nxt, status_code=303)
    resp.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/",
                    secure=request.url.scheme == "https", max_age=12 * 3600)
    return resp


@router.post("/console/logout", include_in_schema=False)
async def logout(request: Request) -> Response:
    resp = RedirectResponse("/console/login", status_code=303)
    resp.delete_cookie(COOKIE, path="/")
    return resp


@router.get("/console/static/{name}", include_in_schema=False)
async def static(name: str) -> Response:
    path = (STATIC / name).resolve()
    if path.parent != STATIC or not path.is_file() or path.suffix not in STATIC_TYPES:
        raise HTTPException(404, "no such file")
    return Response(path.read_bytes(), media_type=STATIC_TYPES[path.suffix],
                    headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


# ---------------------------------------------------------------- pages
@router.get("/console", response_class=HTMLResponse, include_in_schema=False)
async def board_page(request: Request) -> Response:
    who = await _lead(request)
    if not isinstance(who, Principal):
        return who
    return _render("board.html", who=who, page="board", kinds=KIND_LABELS)


@router.get("/console/calls/{call_id}", response_class=HTMLResponse, include_in_schema=False)
async def call_page(call_id: str, request: Request) -> Response:
    who = await _lead(request)
    if not isinstance(who, Principal):
        return who
    store = _store(request)
    call = await asyncio.to_thread(store.get_call, call_id)
    if call is None:
        return _render("missing.html", 404, who=who, page="", what=f"No call {call_id}")
    feedback = await asyncio.to_thread(_data.feedback_for, store, call_ids=[call_id])
    note = await asyncio.to_thread(store.get_note, call_id)
    if note is not None:  # the page shows the note's summary: that is a view of the note
        client = audit.client_of(request)
        await store.run_write(lambda c: audit.record(c, who, "view", call_id, client=client,
                                                     details={"via": "console"}))
    view = call_view(call, feedback, who)
    view["note"] = _notes.call_summary(note, _notes.criterion_labels(request.app))
    return _render("call.html", who=who, page="", call=view,
                   data=json.dumps({"call_id": call_id, "status": call["status"],
                                    "last_seq": call["last_seq"]}).replace("</", "<\\/"))


def call_view(call: dict[str, Any], feedback: list[dict[str, Any]], who: Principal) -> dict[str, Any]:
    """The call as the page shows it; customer data masked for roles without access."""
    sees_customer = who.role in ("lead", "admin")
    customer = call.get("customer") or {}
    hide = None if sees_customer else customer
    by_signal: dict[str, list[dict[str, Any]]] = {}
    for f in feedback:
        by_signal.setdefault(f["signal_id"], []).append(f)
    sigs, cues = [], []
    for s in call["signals"]:
        ev = s.get("evidence") or []
        item = {"id": s["id"], "kind": s["kind"], "label": kind_label(s["kind"]), "confidence": s["confidence"],
                "tier": s["tier"], "message": s.get("message") or "", "details": s.get("details") or {},
                "evidence": [{"seq": e.get("seq"), "excerpt": mask_text(e.get("excerpt") or "", hide),
                              "minute": minute_mark(e.get("t"))} for e in ev],
                "minute": minute_mark(ev[-1].get("t")) if ev else None,
                "created_at": s["created_at"].isoformat() if s.get("created_at") else None,
                "feedback": by_signal.get(s["id"], [])}
        lead_fb = [f for f in item["feedback"] if f["role"] in ("lead", "admin") and f["action"] != "joining"]
        item["state"] = lead_fb[-1]["action"] if lead_fb else "open"
        item["handed_off"] = any(f["action"] == "handoff" for f in item["feedback"])
        route = item["details"].get("route")
        item["route"] = route if isinstance(route, dict) and route.get("action") == "suggest_handoff" else None
        (cues if s["audience"] == "agent" else sigs).append(item)
    for c in cues:
        agent_fb = [f for f in c["feedback"] if f["role"] == "agent"]
        c["response"] = agent_fb[-1] if agent_fb else None
    evidence_seqs = {e["seq"] for s in sigs for e in s["evidence"]}
    utts = [{"seq": u["seq"], "speaker": u["speaker"], "text": mask_text(u["text"], hide),
             "minute": minute_mark(u["t_start"]), "flagged": u["seq"] in evidence_seqs, "source": u["source"]}
            for u in call["utterances"]]
    actions = [{"seq": a["seq"], "name": a["name"], "minute": minute_mark(a["t"])} for a in call["actions"]]
    timeline = sorted(utts + [{**a, "action": True} for a in actions], key=lambda x: x["seq"])
    return {
        "call_id": call["call_id"], "agent_id": call["agent_id"], "queue": call["queue"], "channel": call["channel"],
        "status": call["status"], "tags": call.get("tags") or [], "csat": call.get("csat"),
        "started_at": call["started_at"].isoformat() if call.get("started_at") else None,
        "customer": customer if sees_customer else {k: "•••" for k in customer},
        "timeline": timeline, "signals": sigs, "cues": cues,
        "duration": minute_mark(max([u["t_end"] or u["t_start"] or 0 for u in call["utterances"]] or [0])),
    }


@router.get("/console/review", response_class=HTMLResponse, include_in_schema=False)
async def review_page(request: Request, status: str = "draft") -> Response:
    who = await _lead(request)
    if not isinstance(who, Principal):
        return who
    status = "decided" if status == "decided" else "draft"
    engine = _store(request).engine
    if status == "draft":
        q = await asyncio.to_thread(records.review_queue, engine, limit=200)
        items, total = q["items"], q["total"]
    else:
        items = await asyncio.to_thread(_notes.decided, engine, 200)
        total = len(items)
    labels = _notes.criterion_labels(request.app)
    for it in items:
        it["focus_label"] = _notes.humanise(it.get("focus"), labels)
        it["missed_labels"] = [_notes.humanise(m, labels) for m in it.get("missed") or []]
    return _render("review.html", who=who, page="review", items=items, total=total, status=status,
                   data=json.dumps({"status": status, "labels": labels, "results": _notes.RESULT_LABELS,
                                    "tiers": _notes.TIER_LABELS}).replace("</", "<\\/"))


def _theme_label(t: dict[str, Any], labels: dict[str, str]) -> str:
    if t.get("kind") == "agent":
        return _notes.humanise(t["theme"], labels)
    return f"{str(t.get('kind')).capitalize()} · {t['theme']}"


@router.get("/console/metrics", response_class=HTMLResponse, include_in_schema=False)
async def metrics_page(request: Request) -> Response:
    who = await _lead(request)
    if not isinstance(who, Principal):
        return who
    low = float(getattr(request.app.state.settings, "postcall_low_csat", 4.0))
    m, qa = await asyncio.gather(asyncio.to_thread(_metrics.compute, _store(request)),
                                 asyncio.to_thread(records.metrics, _store(request).engine, low))
    labels = _notes.criterion_labels(request.app)
    notes, events = qa["notes"], qa["events"]
    by_agent = []
    for agent, d in sorted(qa["trends"]["by_agent"].items(), key=lambda kv: -sum(kv[1]["missed"].values())):
        top = sorted(d["missed"].items(), key=lambda kv: -kv[1])[:2]
        by_agent.append({"agent": agent, "notes": d["notes"], "missed": sum(d["missed"].values()),
                         "top": [f"{_notes.humanise(k, labels)} ×{n}" for k, n in top],
                         "process_issues": d["process_issues"], "csat_avg": d["csat_avg"]})
    charts = {
        "notes": _charts.bar_chart(["awaiting", "approved", "edited", "rejected"],
                                   [notes["draft"], notes["approved"], notes["edited"], notes["rejected"]],
                                   color=_charts.PALETTE[2], title="QA notes by status"),
        "events": _charts.bar_chart(["opened", "approved", "edited", "rejected", "re-queued"],
                                    [events["reviewed"], events["approved"], events["edited"], events["rejected"],
                                     events["requeued"]], title="Review events"),
        "cues": _charts.line_chart(m["weeks"], {"all agents": m["cues_per_call_by_week"], **m["cues_per_call_by_agent"]},
                                   title="Agent cues per call"),
        "by_agent": _charts.line_chart(m["weeks"], m["signals_per_call_by_agent"], title="Lead signals per call by agent"),
        "by_area": _charts.line_chart(m["weeks"], m["signals_per_call_by_area"],
                                      title="Lead signals per call by product area"),
        "themes": _charts.hbar_chart([(_theme_label(t, labels), t["count"]) for t in qa["themes"][:10]],
                                     title="Repeat issue themes"),
        "process": _charts.hbar_chart([(c, n) for c, n in qa["process_issues"].items() if n],
                                      color=_charts.PALETTE[3], title="Process issues by cause"),
        "kinds": _charts.hbar_chart([(kind_label(k), n) for k, n in m["signal_kinds"][:8]], color=_charts.PALETTE[0],
                                    title="Signals by kind"),
    }
    return _render("metrics.html", who=who, page="metrics", m=m, qa=qa, charts=charts, by_agent=by_agent)


# ---------------------------------------------------------------- JSON for the pages
@router.get("/v1/console/metrics", tags=["console"],
            summary="Console-only figures behind the metrics page (note figures: GET /v1/qa/metrics)")
async def metrics_json(request: Request, who: Principal = require("lead")) -> dict[str, Any]:
    return await asyncio.to_thread(_metrics.compute, _store(request))
