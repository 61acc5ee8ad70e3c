"""Replay recorded conversations as live calls over the ingest socket.

Input: JSONL, one conversation a line, in the format of ../shared/data:
``{"id", "turns": [{"speaker": "agent"|"customer"|"action", "text", "start_ms"?, "end_ms"?}],
"actions"?: [{"turn", "action", "values"}], "agent_name"?, "caller_name"?, "task"?, "queue"?,
"tags"?, "partner_rating"|"csat"?}``. Turns keep their recorded timing divided by ``speed``; turns
without times get a typing delay. The conversation's ``id`` becomes the call_id.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets

from livecoach.events import CallEnded, CallStarted, Utterance, AgentAction

TYPING_CHARS_PER_S = 8.0     # a fast agent or customer typing
READ_PAUSE_S = 1.0


@dataclass
class Summary:
    calls: int = 0
    calls_failed: int = 0
    sent: int = 0
    acked: int = 0
    duplicates: int = 0
    errors: int = 0
    error_codes: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]

    def render(self) -> str:
        codes = ", ".join(f"{k} {v}" for k, v in sorted(self.error_codes.items())) or "none"
        rate = self.acked / self.wall_s if self.wall_s else 0.0
        return "\n".join([
            f"replayed {self.calls} calls in {self.wall_s:.1f} s ({self.calls_failed} failed)",
            f"events sent {self.sent}, acked {self.acked} ({self.duplicates} duplicate re-acks), "
            f"{rate:.0f} acks/s",
            f"errors {self.errors} ({codes})",
            f"ack latency ms: p50 {self.pct(50):.1f}  p95 {self.pct(95):.1f}  p99 {self.pct(99):.1f}  "
            f"max {max(self.latencies_ms, default=float('nan')):.1f}",
            f"calls {self.calls}, events sent {self.sent}, events acked {self.acked}, errors {self.errors}",
        ])


def load_conversations(path: str | Path) -> list[dict[str, Any]]:
    convs = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                c = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{n}: not JSON: {exc}") from None
            if not isinstance(c, dict) or "id" not in c or not isinstance(c.get("turns"), list):
                raise ValueError(f"{path}:{n}: a conversation needs 'id' and a list of 'turns'")
            convs.append(c)
    return convs


def _call_id(raw: Any) -> str:
    cid = re.sub(r"[^A-Za-z0-9._:-]", "-", str(raw)).strip("-") or "call"
    return cid[:128]


def conversation_events(conv: dict[str, Any], channel: str = "chat") -> list[tuple[float, dict[str, Any]]]:
    """(offset seconds, event JSON) pairs for one conversation, seq numbered from 1."""
    call_id = _call_id(conv["id"])
    customer = {k: str(conv[f]) for k, f in (("name", "caller_name"), ("name", "customer_name"))
                if conv.get(f)}
    scen = conv.get("scenario") or {}
    for k, v in (scen.get("personal") or {}).items():
        if isinstance(v, (str, int)) and str(v).strip():
            customer.setdefault(k, str(v))
    agent = str(conv.get("agent_id") or conv.get("agent_name") or "agent").strip().lower() or "agent"
    queue = str(conv.get("queue") or conv.get("task") or conv.get("flow") or "default")
    tags = [str(t) for t in conv.get("tags", [])][:32]
    events: list[tuple[float, dict[str, Any]]] = []
    seq = 1
    events.append((0.0, CallStarted(call_id=call_id, seq=seq, channel=channel, agent_id=agent[:128],
                                    queue=queue[:128], tags=tags, customer=customer)
                   .model_dump(mode="json", exclude={"started_at"})))
    actions_by_turn: dict[int, list[dict[str, Any]]] = {}
    for a in conv.get("actions") or []:
        actions_by_turn.setdefault(int(a.get("turn", -1)), []).append(a)
    clock = 0.0
    for i, turn in enumerate(conv["turns"]):
        text = str(turn.get("text", "")).strip()
        start = turn.get("start_ms")
        if start is not None:
            clock = max(clock, start / 1000.0)
        else:
            clock += READ_PAUSE_S + len(text) / TYPING_CHARS_PER_S
        end = turn.get("end_ms")
        if turn.get("speaker") == "action":
            for a in actions_by_turn.get(i) or [{"action": "action", "values": [text]}]:
                seq += 1
                events.append((clock, AgentAction(call_id=call_id, seq=seq, name=str(a.get("action") or "action"),
                                                  args={"values": a.get("values", []), "text": text},
                                                  t=round(clock, 3)).model_dump(mode="json")))
            continue
        if not text or turn.get("speaker") not in ("agent", "customer"):
            continue
        seq += 1
        events.append((clock, Utterance(call_id=call_id, seq=seq, speaker=turn["speaker"], text=text,
                                        t_start=round(clock, 3),
                                        t_end=round(end / 1000.0, 3) if end is not None else None)
                       .model_dump(mode="json", exclude_none=True)))
    rating = conv.get("csat", conv.get("partner_rating"))
    seq += 1
    end_clock = max(clock, (conv.get("duration_ms") or 0) / 1000.0)
    ended = CallEnded(call_id=call_id, seq=seq,
                      csat=float(rating) if isinstance(rating, (int, float)) and 0 <= rating <= 10 else None)
    events.append((end_clock, ended.model_dump(mode="json", exclude={"ended_at"}, exclude_none=True)))
    return events


def ws_base(url: str) -> str:
    """The websocket base of a server's http(s) URL."""
    return url.replace("http://", "ws://").replace("https://", "wss://").rstrip("/")


async def replay_one(conv: dict[str, Any], url: str, token: str, speed: float, summary: Summary,
                     channel: str = "chat") -> None:
    events = conversation_events(conv, channel)
    call_id = events[0][1]["call_id"]
    ws_url = f"{ws_base(url)}/v1/calls/{call_id}/events"
    sent_at: dict[int, float] = {}
    done = asyncio.Event()
    expected = len(events)
    answered = 0

    async with websockets.connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"},
                                  max_size=2 ** 22, open_timeout=30) as ws:
        ready = json.loads(await ws.recv())
        start_at = max(1, int(ready.get("next_seq", 1)))  # resume: skip what the server already has
        todo = [(t, e) for t, e in events if e["seq"] >= start_at]
        expected = len(todo)
        if not todo:
            return

        async def reader() -> None:
            nonlocal answered
            async for raw in ws:
                frame = json.loads(raw)
                seq = frame.get("seq")
                if frame.get("type") == "ack":
                    summary.acked += 1
                    if frame.get("duplicate"):
                        summary.duplicates += 1
                    if seq in sent_at:
                        summary.latencies_ms.append((time.perf_counter() - sent_at.pop(seq)) * 1000)
                elif frame.get("type") == "error":
                    summary.errors += 1
                    code = frame.get("code", "?")
                    summary.error_codes[code] = summary.error_codes.get(code, 0) + 1
                    sent_at.pop(seq, None)
                answered += 1
                if answered >= expected:
                    done.set()
                    return

        rtask = asyncio.create_task(reader())
        t0 = time.monotonic()
        base = todo[0][0]
        for offset, ev in todo:
            delay = t0 + (offset - base) / speed - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sent_at[ev["seq"]] = time.perf_counter()
            await ws.send(json.dumps(ev))
            summary.sent += 1
        try:
            await asyncio.wait_for(done.wait(), timeout=60)
        finally:
            rtask.cancel()


async def replay_conversations(convs: list[dict[str, Any]], *, url: str, token: str, speed: float = 1.0,
                               concurrency: int = 10, channel: str = "chat") -> Summary:
    summary = Summary()
    sem = asyncio.Semaphore(concurrency)
    t0 = time.perf_counter()

    async def one(conv: dict[str, Any]) -> None:
        async with sem:
            try:
                await replay_one(conv, url, token, speed, summary, channel)
            except Exception as exc:
                summary.calls_failed += 1
                code = getattr(exc, "rcvd", None)
                key = f"connection:{code.code}" if code is not None else f"connection:{type(exc).__name__}"
                summary.error_codes[key] = summary.error_codes.get(key, 0) + 1
                summary.errors += 1
            finally:
                summary.calls += 1

    await asyncio.gather(*(one(c) for c in convs))
    summary.wall_s = time.perf_counter() - t0
    return summary
