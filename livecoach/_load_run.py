"""``bench load`` helpers: run one stage (chats + voice calls for a while) and measure it."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livecoach._load_clients import (BoardWatch, ChatTally, VoiceTally, chat_slot, lead_signals, loop_lag,
                                     voice_slot)
from livecoach._load_report import Targets, spread
from livecoach._load_server import ServerCost, load_average

SIGNAL_METHOD = ("from the client's receipt of the ack of the latest utterance a signal cites as evidence, to the "
                 "first lead board websocket message (/v1/board/live) that shows the signal; evidence read "
                 "afterwards from GET /v1/calls/{id}")


@dataclass
class Session:
    url: str
    ingest_token: str
    lead_token: str
    convs: list[dict[str, Any]]
    clip: Any                           # AudioCall or None
    speed: float
    server_pid: int | None
    targets: Targets
    settle_s: float = 3.0
    prefix: str = field(default_factory=lambda: f"load{int(time.time()) % 1_000_000}")
    board: BoardWatch | None = None


async def run_stage(sess: Session, n: int, chats: int, voice: int, seconds: float, speed: float | None = None
                    ) -> dict[str, Any]:
    speed = speed or sess.speed
    chat, vox = ChatTally(), VoiceTally()
    cost = ServerCost(sess.server_pid)
    lag: list[float] = []
    stop = asyncio.Event()
    prefix = f"{sess.prefix}-s{n}"
    load_start = load_average()
    cost.begin()

    async def sample() -> None:
        while not stop.is_set():
            await asyncio.sleep(0.5)
            await asyncio.to_thread(cost.sample)

    sampler = asyncio.create_task(sample())
    lagger = asyncio.create_task(loop_lag(lag, stop))
    t0 = time.monotonic()
    deadline = t0 + seconds
    # calls do not all start on the same instant: 5 s, or longer for many (about 40 new calls a second,
    # under the server's default limit of new sockets per token)
    spread_s = min(max(5.0, chats / 40), seconds / 4)
    rnd = random.Random(n)
    slots = [chat_slot(i, sess.url, sess.ingest_token, sess.convs, speed, rnd.uniform(0, spread_s),
                       deadline, prefix, chat) for i in range(chats)]
    if voice:
        slots += [voice_slot(i, sess.url, sess.ingest_token, sess.clip, i * min(0.7, spread_s / max(voice, 1)),
                             deadline, prefix, vox) for i in range(voice)]
    await asyncio.gather(*slots)
    wall = time.monotonic() - t0
    await asyncio.sleep(sess.settle_s)     # let the pipeline finish what the last events started
    stop.set()
    await asyncio.gather(sampler, lagger, return_exceptions=True)
    server = cost.end()

    signals = await _signal_figures(sess, chat)
    stage = {
        "stage": n, "chats": chats, "voice_calls": voice, "speed": speed, "seconds": round(seconds, 1),
        "wall_s": round(wall, 1),
        "chat": {
            "sent": chat.sent, "acked": chat.acked, "duplicates": chat.duplicates, "errors": chat.errors,
            "error_codes": dict(chat.error_codes), "error_samples": chat.error_samples,
            "events_per_s": round(chat.acked / seconds, 2),   # chat slots stop at the deadline
            "calls": len(chat.calls), "calls_completed": chat.calls_completed, "calls_cut": chat.calls_cut,
            "ack_ms": spread(chat.ack_ms, 1),
        },
        "board_lag_s": _board_lag(sess, chat),
        "signals": signals,
        "voice": {
            "calls": vox.calls, "finals": vox.finals, "partials": vox.partials, "errors": len(vox.errors),
            "error_samples": vox.errors[:5], "unfinished_channels": vox.unfinished, "turns": vox.turns,
            "missed_turns": vox.missed_turns, "measured_against": vox.measured_against,
            "final_s": spread(vox.final_s, 3),
        },
        "server": server,
        "client": {"loop_lag_ms": spread(lag, 1)},
        "load_average": load_average(), "load_average_before": load_start,
    }
    stage["broken"] = sess.targets.broken(stage)
    return stage


def _board_lag(sess: Session, chat: ChatTally) -> dict[str, Any]:
    """Ack of each event → the lead's board card first showing it (every event, not only the few
    that raise signals; it has no detector time in it: the board reads the events directly)."""
    if sess.board is None:
        return spread([], 3)
    lags = [x for (cid, seq), t in chat.acked_at.items() if (x := sess.board.lag(cid, seq, t)) is not None]
    return spread(lags, 3)


async def _signal_figures(sess: Session, chat: ChatTally) -> dict[str, Any]:
    out: dict[str, Any] = {"method": "board websocket", "lead_stored": 0, "agent_stored": 0, "not_on_board": 0,
                           "no_ack_for_evidence": 0, "kinds": {}, "latency_s": spread([], 3)}
    if sess.board is None:
        out["skipped"] = "no lead token (--lead-token)"
        return out
    lat: list[float] = []
    stored, out["calls_unread"] = await lead_signals(sess.url, sess.lead_token, chat.calls)
    for s in stored:
        if s.get("audience") != "lead":
            out["agent_stored"] += 1
            continue
        out["lead_stored"] += 1
        out["kinds"][s.get("kind")] = out["kinds"].get(s.get("kind"), 0) + 1
        seen = sess.board.seen.get(s["id"])
        seqs = [e["seq"] for e in s.get("evidence") or [] if isinstance(e.get("seq"), int)]
        acked = chat.acked_at.get((s["call_id"], max(seqs))) if seqs else None
        if seen is None:
            out["not_on_board"] += 1
        elif acked is None:
            out["no_ack_for_evidence"] += 1
        else:
            lat.append(seen - acked)
    out["latency_s"] = spread(lat, 3)
    out["judged"] = len(lat) >= sess.targets.min_signals
    out["board_messages"], out["board_reconnects"] = sess.board.messages, sess.board.reconnects
    return out


def default_calls_file() -> Path:
    """The Harper Valley dev calls: the shared copy beside the repo, the committed fixture, or the
    eight packaged demo calls."""
    from importlib import resources

    root = Path(__file__).resolve().parents[1]
    for p in (root.parent / "shared" / "data" / "harper_valley" / "calls_dev.jsonl",
              root / "tests" / "fixtures" / "harper_valley" / "calls_dev.jsonl"):
        if p.exists():
            return p
    return Path(str(resources.files("livecoach") / "demo_calls.jsonl"))


def default_voice_clip() -> Path:
    """The committed two-channel test call (tests/fixtures/audio, 24.5 s, with reference turns)."""
    return Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "audio" / "hv_0002f70f_8k_stereo.wav"


def load_clip(path: Path, seconds: float):
    from livecoach.stream.audio_replay import load_audio_calls

    calls = load_audio_calls(path, max_seconds=seconds)
    return calls[0]
