"""``bench load`` helpers: the clients that load the server and what they measure.

* chat slots: each replays recorded conversations one after another over the ingest socket, at their
  recorded pace (÷ speed), a new call id every time, and times every ack;
* voice slots: each streams a two-channel clip in real time over the voice sockets, again and again
  (``stream/audio_replay.py`` does the streaming and times each final from the true end of speech);
* a lead's board: one ``/v1/board/live`` socket, noting when each signal first shows on it;
* the client's own event-loop lag, so a saturated client is not mistaken for a slow server.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from livecoach.events import CallEnded
from livecoach.stream.replay import conversation_events, ws_base

ANSWER_TIMEOUT_S = 30.0


@dataclass
class ChatTally:
    sent: int = 0
    acked: int = 0
    duplicates: int = 0
    errors: int = 0
    error_codes: Counter = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    ack_ms: list[float] = field(default_factory=list)
    acked_at: dict[tuple[str, int], float] = field(default_factory=dict)   # (call, utterance seq) -> perf_counter
    calls: list[str] = field(default_factory=list)
    calls_completed: int = 0          # replayed to their recorded end
    calls_cut: int = 0                # ended early by the end of the stage

    def error(self, code: str, n: int = 1, detail: str = "") -> None:
        self.errors += n
        self.error_codes[code] += n
        if len(self.error_samples) < 5:
            self.error_samples.append(f"{code}: {detail}" if detail else code)


async def chat_call(url: str, token: str, conv: dict[str, Any], speed: float, deadline: float,
                    tally: ChatTally) -> bool:
    """One conversation as a live chat; stops at ``deadline`` (ending the call with call_ended).
    True when the deadline cut it short."""
    import websockets

    events = conversation_events(conv)
    call_id = events[0][1]["call_id"]
    utterances = {e["seq"] for _, e in events if e["type"] == "utterance"}
    sent_at: dict[int, float] = {}
    all_answered = asyncio.Event()
    sending_done = False

    async with websockets.connect(f"{ws_base(url)}/v1/calls/{call_id}/events",
                                  additional_headers={"Authorization": f"Bearer {token}"},
                                  max_size=2 ** 22, open_timeout=30) as ws:
        ready = json.loads(await asyncio.wait_for(ws.recv(), ANSWER_TIMEOUT_S))
        if ready.get("type") != "ready":
            tally.error(str(ready.get("code") or "not_ready"), detail=f"{call_id}: {ready}")
            await asyncio.sleep(0.5)
            return False
        tally.calls.append(call_id)

        async def reader() -> None:
            async for raw in ws:
                frame = json.loads(raw)
                now = time.perf_counter()
                seq = frame.get("seq")
                t = sent_at.pop(seq, None)
                if frame.get("type") == "ack":
                    tally.acked += 1
                    if frame.get("duplicate"):
                        tally.duplicates += 1
                    if t is not None:
                        tally.ack_ms.append((now - t) * 1000)
                        if seq in utterances:
                            tally.acked_at[(call_id, seq)] = now
                elif frame.get("type") == "error":
                    tally.error(str(frame.get("code", "?")), detail=f"{call_id} seq {seq}: {frame.get('message')}")
                if sending_done and not sent_at:
                    all_answered.set()

        rtask = asyncio.create_task(reader())
        t0 = time.monotonic()
        last_seq = 0
        cut = False
        try:
            for offset, ev in events:
                at = t0 + offset / speed
                if at > deadline:   # the call stays open to the end of the stage, then ends
                    await asyncio.sleep(max(0.0, deadline - time.monotonic()))
                    cut = True
                    break
                delay = at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent_at[ev["seq"]] = time.perf_counter()
                await ws.send(json.dumps(ev))
                tally.sent += 1
                last_seq = ev["seq"]
            if cut and last_seq == 0:   # connected only after the stage ended: no call was started
                tally.calls.remove(call_id)
            elif cut:   # the stage is over: end the call so it leaves the board and gets its note
                end = CallEnded(call_id=call_id, seq=last_seq + 1).model_dump(
                    mode="json", exclude={"ended_at"}, exclude_none=True)
                sent_at[end["seq"]] = time.perf_counter()
                await ws.send(json.dumps(end))
                tally.sent += 1
                tally.calls_cut += 1
            else:
                tally.calls_completed += 1
            sending_done = True
            if sent_at:
                try:
                    await asyncio.wait_for(all_answered.wait(), ANSWER_TIMEOUT_S)
                except asyncio.TimeoutError:
                    pass
        finally:
            rtask.cancel()
            if sent_at:
                tally.error("no_answer", len(sent_at), detail=f"{call_id} seqs {sorted(sent_at)}")
    return cut


async def chat_slot(slot: int, url: str, token: str, convs: list[dict[str, Any]], speed: float,
                    start_delay: float, deadline: float, prefix: str, tally: ChatTally) -> None:
    """Conversations back to back until ``deadline``: what one agent's chat window sees all day."""
    await asyncio.sleep(start_delay)
    n = 0
    while time.monotonic() < deadline:
        conv = {**convs[(slot + n * 7) % len(convs)], "id": f"{prefix}-c{slot}-{n}"}
        try:
            if await chat_call(url, token, conv, speed, deadline, tally):
                return     # cut short by the end of the stage
        except Exception as exc:   # a refused or dropped connection: counted, the slot goes on
            code = getattr(getattr(exc, "rcvd", None), "code", None)
            tally.error(f"connection:{code}" if code is not None else f"connection:{type(exc).__name__}",
                        detail=str(exc)[:200])
            await asyncio.sleep(0.5)
        n += 1


@dataclass
class VoiceTally:
    calls: int = 0
    finals: int = 0
    partials: int = 0
    errors: list[str] = field(default_factory=list)
    unfinished: int = 0
    final_s: list[float] = field(default_factory=list)    # end of speech -> final frame at the client
    turns: int = 0
    missed_turns: int = 0
    measured_against: str = "reference turns"

    def add(self, res) -> None:
        self.calls += res.calls
        self.finals += res.finals
        self.partials += res.partials
        self.errors += res.errors
        self.unfinished += res.unfinished
        self.final_s += res.latencies
        self.turns += res.turns
        self.missed_turns += res.missed_turns


async def voice_slot(slot: int, url: str, token: str, clip, start_delay: float, deadline: float, prefix: str,
                     tally: VoiceTally) -> None:
    """The clip as a live two-channel call, again and again until ``deadline`` (the last one is
    streamed to its end, so a stage may run over by up to one clip)."""
    from livecoach.stream.audio_replay import AudioCall, replay_audio

    await asyncio.sleep(start_delay)
    n = 0
    while time.monotonic() < deadline:
        call = AudioCall(f"{prefix}-v{slot}-{n}", clip.rate, clip.channels, clip.turns)
        res = await replay_audio([call], url=url, token=token, speed=1.0, concurrency=1)
        if not clip.turns:
            tally.measured_against = "server estimate (no reference turns)"
        tally.add(res)
        n += 1


async def preflight(url: str, token: str, lead_token: str) -> None:
    """Fail early and clearly when a token is refused (rather than counting thousands of errors)."""
    import httpx
    import websockets

    try:
        async with websockets.connect(f"{ws_base(url)}/v1/calls/bench-load-preflight/events",
                                      additional_headers={"Authorization": f"Bearer {token}"},
                                      open_timeout=30) as ws:
            ready = json.loads(await ws.recv())
    except websockets.ConnectionClosed as exc:
        raise RuntimeError(f"the ingest socket refused the token: {exc.rcvd.code if exc.rcvd else '?'} "
                           f"{exc.rcvd.reason if exc.rcvd else ''}") from None
    except (OSError, websockets.InvalidHandshake) as exc:
        raise RuntimeError(f"cannot open the ingest socket at {url}: {exc}") from None
    if ready.get("type") != "ready":
        raise RuntimeError(f"the ingest socket did not answer ready: {ready}")
    if lead_token:
        async with httpx.AsyncClient(timeout=30) as client:
            r = await client.get(f"{url}/v1/board", headers={"Authorization": f"Bearer {lead_token}"})
        if r.status_code != 200:
            raise RuntimeError(f"GET /v1/board with the lead token answered {r.status_code}: {r.text[:200]}")


class BoardWatch:
    """A lead's live board socket: when each signal first shows on it, and when each call's card
    first shows each new ``last_seq`` (how far behind the transcript the lead's board is); perf_counter."""

    def __init__(self, url: str, lead_token: str):
        self.url, self.token = url, lead_token
        self.seen: dict[str, float] = {}
        self.progress: dict[str, tuple[list[int], list[float]]] = {}   # call -> (last_seqs, first seen)
        self.messages = 0
        self.reconnects = 0
        self.error: str | None = None

    async def run(self, stop: asyncio.Event) -> None:
        import websockets

        while not stop.is_set():
            try:
                async with websockets.connect(f"{ws_base(self.url)}/v1/board/live",
                                              additional_headers={"Authorization": f"Bearer {self.token}"},
                                              max_size=2 ** 26, open_timeout=30) as ws:
                    while not stop.is_set():
                        try:
                            raw = await asyncio.wait_for(ws.recv(), 0.5)
                        except asyncio.TimeoutError:
                            continue
                        now = time.perf_counter()
                        self.messages += 1
                        for card in json.loads(raw).get("cards", []):
                            for s in card.get("signals", []):
                                self.seen.setdefault(s["id"], now)
                            seqs, times = self.progress.setdefault(card["call_id"], ([], []))
                            if not seqs or card.get("last_seq", 0) > seqs[-1]:
                                seqs.append(card.get("last_seq", 0))
                                times.append(now)
            except Exception as exc:   # closed as too slow, or the server restarted: reconnect
                self.error = f"{type(exc).__name__}: {exc}"
                if stop.is_set():
                    return
                self.reconnects += 1
                await asyncio.sleep(0.5)


    def lag(self, call_id: str, seq: int, acked: float) -> float | None:
        """Seconds from the ack of ``seq`` to the first board message whose card had reached it."""
        import bisect

        seqs, times = self.progress.get(call_id, ((), ()))
        i = bisect.bisect_left(seqs, seq)
        return times[i] - acked if i < len(seqs) else None


async def loop_lag(out: list[float], stop: asyncio.Event, every: float = 0.1) -> None:
    """How late this client's event loop wakes up (ms): large values mean the client, not the
    server, is what is slow."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t = loop.time()
        await asyncio.sleep(every)
        out.append(max(0.0, (loop.time() - t - every) * 1000))


async def lead_signals(url: str, lead_token: str, call_ids: list[str], concurrency: int = 8
                       ) -> tuple[list[dict], int]:
    """The signals stored for ``call_ids`` (GET /v1/calls/{id}), each with its call id, and how many
    calls could not be read (an overloaded server may time out)."""
    import httpx

    out: list[dict] = []
    unread = 0
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {lead_token}"},
                                 timeout=30) as client:
        async def one(cid: str) -> None:
            nonlocal unread
            try:
                async with sem:
                    r = await client.get(f"/v1/calls/{cid}")
                r.raise_for_status()
                out.extend({**s, "call_id": cid} for s in r.json().get("signals", []))
            except (httpx.HTTPError, ValueError):
                unread += 1

        await asyncio.gather(*(one(c) for c in call_ids))
    return out, unread
