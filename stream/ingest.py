"""The ingest gateway: ``/v1/calls/{call_id}/events`` takes one call's JSON events in order.

Frames the server sends:
  ``{"type": "ready", "call_id", "next_seq", "status"}``   once, on connect (resume from next_seq)
  ``{"type": "ack", "seq"}``                               after the event is durably stored
  ``{"type": "ack", "seq", "duplicate": true}``            an identical resend; stored once
  ``{"type": "error", "seq", "code", "message"}``         nothing was stored; the socket stays open
  (storage_unavailable adds ``reason``: disk_full, unreachable …, send it again later; after reason
  timeout the event may yet be stored, and the identical resend is acked once)

Clients may pipeline: acks and errors come back in the order the events were sent.
A token over its socket or new-call limit (livecoach/limits.py) gets one error frame naming the limit,
then close code 4429.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from livecoach.auth import ws_authenticate
from livecoach.bus import CALLS
from livecoach.events import INBOUND_TYPES, CallId, inbound_adapter
from livecoach.limits import UnstorableText, admit_socket, refuse_socket, strict_json, text_frame_bytes
from livecoach.store import StorageUnavailable, storage_fault

log = logging.getLogger(__name__)
router = APIRouter()

MAX_IN_FLIGHT = 256


class ClientFrames:
    """Send frames to a websocket client until it leaves; after that, sending is a no-op, so the
    server goes on storing and publishing what the client already sent."""

    def __init__(self, ws: WebSocket):
        self.ws = ws
        self.gone = False

    async def __call__(self, frame: dict[str, Any]) -> None:
        if self.gone:
            return
        try:
            await self.ws.send_json(frame)
        except Exception:  # the client left
            self.gone = True


def error_frame(code: str, message: str, seq: int | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": "error", "seq": seq, "code": code, "message": message, **extra}


def validation_errors(exc: ValidationError) -> list[dict[str, str]]:
    return [{"field": ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-")) or "(event)",
             "problem": e["msg"]} for e in exc.errors(include_url=False, include_input=False)]


def parse_inbound(raw: str | bytes | None, call_id: str, max_text_chars: int):
    """Turn one text frame into an event, or an error frame naming what is wrong."""
    try:
        data = strict_json(raw)
    except UnstorableText as exc:
        return None, error_frame("invalid_text", f"frame refused: {exc}")
    except (TypeError, ValueError) as exc:
        return None, error_frame("invalid_json", f"frame is not valid JSON: {exc}")
    if not isinstance(data, dict):
        return None, error_frame("invalid_event", "an event must be a JSON object")
    seq = data.get("seq") if isinstance(data.get("seq"), int) else None
    etype = data.get("type")
    if etype not in INBOUND_TYPES:
        return None, error_frame("unknown_type", f"unknown event type {etype!r}; expected one of "
                                                 f"{', '.join(INBOUND_TYPES)}", seq)
    if "call_id" in data and data["call_id"] != call_id:
        return None, error_frame("call_id_mismatch",
                                 f"event call_id {data['call_id']!r} does not match the socket's {call_id!r}", seq)
    data["call_id"] = call_id
    text = data.get("text")
    if isinstance(text, str) and len(text) > max_text_chars:
        return None, error_frame("text_too_long", f"text is {len(text)} characters; the limit is {max_text_chars}",
                                 seq)
    if etype == "utterance" and data.get("final") is False:
        return None, error_frame("invalid_event", "partial utterances (final=false) are not accepted here; "
                                                  "send each message once, final", seq)
    try:
        return inbound_adapter.validate_python(data), None
    except ValidationError as exc:
        errs = validation_errors(exc)
        summary = "; ".join(f"{e['field']}: {e['problem']}" for e in errs[:5])
        return None, error_frame("invalid_event", f"invalid {etype}: {summary}", seq, errors=errs)


_CALL_ID = __import__("pydantic").TypeAdapter(CallId)


def _stored_late(app, bus, call_id: str, ev, fut: asyncio.Future) -> None:
    """An event answered ``timeout`` that the store committed after all still goes down the pipeline."""
    if fut.cancelled() or fut.exception() is not None or fut.result().outcome != "stored":
        return
    app.state.metrics["events_stored"] += 1
    asyncio.ensure_future(bus.publish(CALLS, call_id, ev))


async def _refuse_storage_down(ws: WebSocket, call_id: str, exc: Exception) -> None:
    """No ``ready`` without storage: say why in an error frame, then close with 1013 (try again later)."""
    fault = exc if isinstance(exc, StorageUnavailable) else storage_fault(exc)
    log.warning("ingest %s refused at connect: %s (%s)", call_id, fault, exc)
    await refuse_socket(ws, error_frame("storage_unavailable", f"{fault}; connect again later", reason=fault.reason),
                        1013, str(fault))


@router.websocket("/v1/calls/{call_id}/events")
async def call_events(ws: WebSocket, call_id: str) -> None:
    try:
        principal = await ws_authenticate(ws, ("ingest",))
    except SQLAlchemyError as exc:  # the token could not be checked: the database is down
        await _refuse_storage_down(ws, call_id, exc)
        return
    if principal is None:
        return
    try:
        _CALL_ID.validate_python(call_id)
    except ValidationError:
        await ws.accept()
        await ws.close(code=4400, reason="invalid call_id: use letters, digits and . _ : - (max 128)")
        return
    if not await admit_socket(ws, principal):  # over the token's socket or new-call limit: 4429
        return
    app = ws.app
    store, bus, settings = app.state.store, app.state.bus, app.state.settings
    await ws.accept()
    try:
        call = await asyncio.wait_for(asyncio.to_thread(store.get_call_header, call_id), settings.storage_timeout_s)
    except SQLAlchemyError as exc:
        await _refuse_storage_down(ws, call_id, exc)
        return
    except asyncio.TimeoutError:
        await _refuse_storage_down(ws, call_id, StorageUnavailable(
            f"the database did not answer within {settings.storage_timeout_s:g} s", "timeout"))
        return
    await ws.send_json({"type": "ready", "call_id": call_id,
                        "next_seq": (call["last_seq"] + 1) if call else 1,
                        "status": call["status"] if call else "new"})

    pending: asyncio.Queue = asyncio.Queue(MAX_IN_FLIGHT)
    send = ClientFrames(ws)

    async def answer() -> None:
        stalled = False  # the store missed a deadline: the answers queued behind it do not wait again
        while True:
            if pending.empty():
                stalled = False  # what comes next was sent after that answer: it gets its own deadline
            item = await pending.get()
            if item is None:
                return
            ev, fut_or_frame = item
            if ev is None:
                await send(fut_or_frame)
                continue
            try:
                res = await asyncio.wait_for(asyncio.shield(fut_or_frame),
                                             0 if stalled else settings.storage_timeout_s)
                stalled = False
            except asyncio.TimeoutError:
                stalled = True
                fut_or_frame.add_done_callback(functools.partial(_stored_late, app, bus, call_id, ev))
                await send(error_frame("storage_unavailable",
                                       f"storage did not answer within {settings.storage_timeout_s:g} s; the event "
                                       "may still be stored: send it again (an identical resend is acked once)",
                                       ev.seq, reason="timeout"))
                continue
            except StorageUnavailable as exc:
                await send(error_frame("storage_unavailable", f"{exc}; not stored, send it again later",
                                       ev.seq, reason=exc.reason))
                continue
            except Exception as exc:  # never let one event kill the connection
                log.exception("storing %s/%s failed", call_id, ev.seq)
                await send(error_frame("internal_error", f"could not store the event: {type(exc).__name__}",
                                               ev.seq))
                continue
            if res.outcome == "stored":
                await send({"type": "ack", "seq": res.seq})
                app.state.metrics["events_stored"] += 1
                await bus.publish(CALLS, call_id, ev)
            elif res.outcome == "duplicate":
                await send({"type": "ack", "seq": res.seq, "duplicate": True})
            else:
                await send(error_frame(res.code, res.message, res.seq))

    answerer = asyncio.create_task(answer())
    try:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                break
            if msg.get("bytes") is not None:
                await pending.put((None, error_frame("binary_not_accepted",
                                                     "this socket takes JSON text frames; send audio to "
                                                     f"/v1/calls/{call_id}/audio")))
                continue
            raw = msg.get("text")
            size = text_frame_bytes(raw) if raw is not None else 0
            if size > settings.max_frame_bytes:
                await pending.put((None, error_frame("frame_too_large",
                                                     f"frame is {size} bytes; the limit is {settings.max_frame_bytes}")))
                continue
            ev, err = parse_inbound(raw, call_id, settings.max_text_chars)
            if err is not None:
                app.state.metrics["events_rejected"] += 1
                await pending.put((None, err))
                continue
            await pending.put((ev, asyncio.ensure_future(store.append(ev))))
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        # Everything accepted into the writer is committed even if the client has gone.
        await pending.put(None)
        try:
            await answerer
        except Exception:
            pass
