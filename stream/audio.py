"""Voice ingest: ``/v1/calls/{call_id}/audio?channel=agent|customer`` takes one channel of a live call.

Client → server:
  ``{"type": "start", "encoding": "pcm_s16le", "sample_rate": 16000}``   first; mono, 8000 or 16000 Hz.
      Optional: ``agent_id``, ``queue``, ``tags`` (used only if this audio starts the call) and
      ``offset_s`` (seconds from call start at which this channel's audio begins; default: now).
  binary frames of PCM (whole 16-bit samples, at most ``max_audio_frame_bytes``)
  ``{"type": "end"}``   the channel is over: open speech is transcribed, then ``ended`` is sent.

Server → client:
  ``{"type": "ready", "call_id", "channel", "sample_rate", "t_offset", "status"}`` after a valid start
  ``{"type": "partial", "speaker", "text", "t_start"}``   a live hypothesis (may be shed under load)
  ``{"type": "final", "seq", "speaker", "text", "t_start", "t_end", "confidence", "latency_ms"}``
      a final utterance, stored and in the pipeline (same path as chat)
  ``{"type": "ended", "finals"}``                        after ``end``, once every final is stored
  ``{"type": "error", "seq": null, "code", "message"}``  the frame was refused; the socket stays open

Audio for a call_id that has not started starts it as a voice call (agent ``unknown`` unless the
start frame names one). Authenticate with an ingest token (``Authorization: Bearer`` or ``?token=``).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from pydantic import TypeAdapter, ValidationError

from livecoach.auth import Principal, require, ws_authenticate
from livecoach.bus import CALLS
from livecoach.events import CallId, CallStarted
from livecoach.limits import UnstorableText, admit_socket, strict_json, text_frame_bytes
from livecoach.stream._voice import SUPPORTED_RATES, ChannelSession, voice_service
from livecoach.stream.ingest import ClientFrames

log = logging.getLogger(__name__)


@asynccontextmanager
async def _voice_lifespan(app):
    """Load the speech models in the background at start-up (so the first call is not the one that
    waits for them) and stop the ASR workers at shutdown. FastAPI merges this into the app's lifespan."""
    loader = None
    if app.state.settings.asr_preload:
        loader = asyncio.create_task(voice_service(app))
        loader.add_done_callback(lambda t: t.cancelled() or t.exception() is None
                                 or log.error("loading the speech models failed: %s", t.exception()))
    try:
        yield
    finally:
        if loader is not None and not loader.done():
            try:
                await loader
            except Exception:
                pass
        svc = getattr(app.state, "voice", None)
        if svc is not None:
            await asyncio.to_thread(svc.close)
            app.state.voice = None


router = APIRouter(lifespan=_voice_lifespan)

_CALL_ID = TypeAdapter(CallId)
CHANNELS = ("agent", "customer")
START_FIELDS = {"type", "encoding", "sample_rate", "channels", "agent_id", "queue", "tags", "offset_s"}


@router.get("/v1/voice/stats", tags=["ops"], summary="Voice pipeline counters: finals, late finals, shed partials, "
            "ASR busy time, latency percentiles")
async def voice_stats(request: Request, _p: Principal = require("lead", "admin")) -> dict[str, Any]:
    m = request.app.state.metrics
    stats = {k: v for k, v in m.items() if k.startswith(("asr_", "audio_", "voice_"))}
    svc = getattr(request.app.state, "voice", None)
    stats["asr_loaded"] = svc is not None
    if svc is not None:
        stats["asr_queued"] = svc.pool.queued
        stats["asr_workers"] = svc.asr.workers
        stats["asr_threads_per_worker"] = svc.asr.threads_per_worker
        stats["asr_model"] = str(svc.asr.model_dir)
    if m.get("audio_received_ms"):  # worker busy time per second of call audio (all channels)
        stats["asr_rtf"] = round(m.get("asr_busy_ms", 0) / m["audio_received_ms"], 4)
    return stats


def error_frame(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "seq": None, "code": code, "message": message}


def parse_start(data: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Check a start frame: (format, None) or (None, error frame)."""
    unknown = sorted(set(data) - START_FIELDS)
    if unknown:
        return None, error_frame("invalid_start", f"unknown field(s) in start: {', '.join(unknown)}")
    enc = data.get("encoding")
    if enc is None:
        return None, error_frame("unsupported_format", "start must name the encoding: \"pcm_s16le\"")
    if enc != "pcm_s16le":
        return None, error_frame("unsupported_format", f"encoding {enc!r} is not supported; send pcm_s16le "
                                                       "(16-bit little-endian PCM)")
    rate = data.get("sample_rate")
    if not isinstance(rate, int) or isinstance(rate, bool) or rate not in SUPPORTED_RATES:  # 16000.0 is not a rate
        return None, error_frame("unsupported_format", f"sample_rate {rate!r} is not supported; send 8000 or 16000")
    if data.get("channels", 1) != 1:
        return None, error_frame("unsupported_format", "audio must be mono (one socket per channel)")
    off = data.get("offset_s")
    if off is not None and (not isinstance(off, (int, float)) or isinstance(off, bool) or not 0 <= off < 86400):
        return None, error_frame("invalid_start", "offset_s must be seconds from call start (0 or more)")
    agent = data.get("agent_id", "unknown")
    queue = data.get("queue", "default")
    tags = data.get("tags", [])
    try:
        CallStarted(call_id="x", seq=1, channel="voice", agent_id=agent, queue=queue, tags=tags)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        return None, error_frame("invalid_start", f"{'.'.join(map(str, first['loc']))}: {first['msg']}")
    return {"sample_rate": rate, "offset_s": off, "agent_id": agent, "queue": queue, "tags": tags}, None


async def _open_call(app, call_id: str, fmt: dict[str, Any], began: datetime) -> tuple[CallStarted, dict | None]:
    """The call's header, starting it as a voice call if it is new."""
    store = app.state.store
    head = await asyncio.to_thread(store.get_call_header, call_id)
    start = CallStarted(call_id=call_id, seq=1, channel="voice", agent_id=fmt["agent_id"], queue=fmt["queue"],
                        tags=fmt["tags"], started_at=began)
    if head is None:
        res = await store.append(start)
        if res.outcome == "stored":
            app.state.metrics["voice_calls_started"] += 1
            await app.state.bus.publish(CALLS, call_id, start)
        head = await asyncio.to_thread(store.get_call_header, call_id)
    return start, head


def _offset(head: dict | None, fmt: dict[str, Any], began: datetime) -> float:
    """Seconds from call start to this channel's first sample (its start frame's arrival)."""
    if fmt["offset_s"] is not None:
        return float(fmt["offset_s"])
    started = head.get("started_at") if head else None
    if isinstance(started, datetime):
        if started.tzinfo is None:
            started = started.replace(tzinfo=timezone.utc)
        return max(0.0, round((began - started).total_seconds(), 3))
    return 0.0


@router.websocket("/v1/calls/{call_id}/audio")
async def call_audio(ws: WebSocket, call_id: str) -> None:
    principal = await ws_authenticate(ws, ("ingest",))
    if principal is None:
        return
    channel = ws.query_params.get("channel")
    try:
        _CALL_ID.validate_python(call_id)
    except ValidationError:
        await ws.accept()
        await ws.close(code=4400, reason="invalid call_id: use letters, digits and . _ : - (max 128)")
        return
    if channel not in CHANNELS:
        await ws.accept()
        await ws.close(code=4400, reason="channel must be agent or customer (?channel=…)")
        return
    if not await admit_socket(ws, principal):  # over the token's socket or new-call limit: 4429
        return
    app = ws.app
    settings, metrics = app.state.settings, app.state.metrics
    await ws.accept()
    send = ClientFrames(ws)  # finals are still stored after the client left

    async def refuse(code: str, message: str) -> None:
        metrics["audio_frames_rejected"] += 1
        await send(error_frame(code, message))

    session: ChannelSession | None = None
    ended = False
    try:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                break
            data = msg.get("bytes")
            if data is not None:
                if session is None:
                    await refuse("not_started", "send the start frame (format) before audio")
                elif ended:
                    await refuse("audio_after_end", "this channel has ended; audio after end is ignored")
                elif session.call_ended:
                    await refuse("call_ended", f"call {call_id} has ended; audio is ignored")
                elif len(data) > settings.max_audio_frame_bytes:
                    await refuse("frame_too_large", f"audio frame is {len(data)} bytes; the limit is "
                                                    f"{settings.max_audio_frame_bytes}")
                elif len(data) % 2:
                    await refuse("odd_byte_count", f"audio frame has {len(data)} bytes; pcm_s16le needs whole "
                                                   "2-byte samples (the frame was dropped)")
                else:
                    metrics["audio_frames"] += 1
                    session.feed(data)
                    await session.maybe_check_status()
                continue
            raw = msg.get("text")
            if raw is None:
                continue
            size = text_frame_bytes(raw)
            if size > settings.max_frame_bytes:
                await refuse("frame_too_large", f"text frame is {size} bytes; the limit is "
                                                f"{settings.max_frame_bytes}")
                continue
            try:
                frame = strict_json(raw)
            except UnstorableText as exc:
                await refuse("invalid_text", f"frame refused: {exc}")
                continue
            except ValueError as exc:
                await refuse("invalid_json", f"frame is not valid JSON: {exc}")
                continue
            kind = frame.get("type") if isinstance(frame, dict) else None
            if kind == "start":
                if session is not None:
                    await refuse("already_started", "this channel has already started; one start per socket")
                    continue
                fmt, err = parse_start(frame)
                if err is not None:
                    metrics["audio_frames_rejected"] += 1
                    await send(err)
                    continue
                began = datetime.now(timezone.utc)  # this channel's audio starts now
                try:
                    svc = await voice_service(app)
                except Exception as exc:
                    log.exception("speech models unavailable")
                    await refuse("asr_unavailable", f"speech recognition is not available: {exc}")
                    continue
                start, head = await _open_call(app, call_id, fmt, began)
                session = ChannelSession(app, svc, call_id, channel, fmt["sample_rate"], _offset(head, fmt, began),
                                         start, send)
                status = head["status"] if head else "active"
                session.call_ended = status == "ended"
                await send({"type": "ready", "call_id": call_id, "channel": channel,
                            "sample_rate": fmt["sample_rate"], "t_offset": session.t_offset, "status": status})
                if session.call_ended:
                    await refuse("call_ended", f"call {call_id} has ended; audio will be ignored")
            elif kind == "end":
                if session is None:
                    await refuse("not_started", "nothing to end: the channel has not started")
                    continue
                if ended:
                    continue
                ended = True
                n = await session.finish()
                await send({"type": "ended", "finals": n})
            else:
                await refuse("unknown_type", f"unknown frame type {kind!r}; expected start or end (audio is "
                                             "sent as binary frames)")
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        if session is not None:
            if not ended:  # hung up mid-sentence: what was said is still transcribed and stored
                try:
                    await session.finish()
                except Exception:
                    log.exception("finishing %s/%s failed", call_id, channel)
            session.close()
