"""``livecoach replay --audio PATH``: stream WAV files as live voice calls, in real time (or ``speed``×).

PATH is a WAV file or a directory of them. A call is
  * ``X.wav`` in stereo: channel 0 is the agent, channel 1 the customer;
  * ``X.agent.wav`` + ``X.customer.wav``: one mono file per channel;
  * ``X.wav`` in mono: the customer alone.
8 and 16 kHz are sent as they are; other rates are resampled to 16 kHz first. An optional ``X.json``
with ``{"turns": [{"speaker", "start", "end", ...}]}`` (as written by ``livecoach models synth-calls``)
gives the true end of each turn, so end-of-speech → final latency is measured against it; otherwise
the server's own estimate (``latency_ms`` in each final frame) is reported.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FRAME_S = 0.1
CHANNEL_NAMES = ("agent", "customer")


@dataclass
class AudioCall:
    call_id: str
    rate: int
    channels: dict[str, bytes]                 # channel name -> PCM s16le
    turns: list[dict] | None = None            # reference turns (speaker, start, end)

    @property
    def seconds(self) -> float:
        return max(len(p) for p in self.channels.values()) / 2 / self.rate


def _pcm(x: np.ndarray) -> bytes:
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


def _read(path: Path) -> tuple[np.ndarray, int]:
    from livecoach.models.asr import load_wav, resample_to_16k

    audio, sr = load_wav(path)
    if sr not in (8000, 16000):
        audio, sr = resample_to_16k(audio, sr), 16000
    return audio, sr


def load_audio_calls(path: str | Path, *, max_seconds: float = 0.0) -> list[AudioCall]:
    path = Path(path)
    files = [path] if path.is_file() else sorted(path.glob("*.wav"))
    if not files:
        raise ValueError(f"no WAV files in {path}")
    calls: dict[str, AudioCall] = {}
    for f in files:
        stem, channel = f.stem, None
        for name in CHANNEL_NAMES:
            if stem.endswith("." + name):
                stem, channel = stem[: -len(name) - 1], name
        audio, sr = _read(f)
        if max_seconds:
            audio = audio[: int(max_seconds * sr)]
        call = calls.setdefault(stem, AudioCall(stem, sr, {}))
        if call.rate != sr:
            raise ValueError(f"{f}: sample rate {sr} differs from the call's other channel ({call.rate})")
        if channel is not None:
            call.channels[channel] = _pcm(audio[:, 0])
        elif audio.shape[1] >= 2:
            call.channels["agent"], call.channels["customer"] = _pcm(audio[:, 0]), _pcm(audio[:, 1])
        else:
            call.channels["customer"] = _pcm(audio[:, 0])
        ref = f.parent / f"{stem}.json"
        if ref.exists() and call.turns is None:
            turns = json.loads(ref.read_text()).get("turns", [])
            call.turns = [t for t in turns if not max_seconds or t["end"] <= max_seconds]
    return list(calls.values())


@dataclass
class ReplayResult:
    calls: int = 0
    channels: int = 0
    finals: int = 0
    partials: int = 0
    errors: list[str] = field(default_factory=list)
    unfinished: int = 0
    latencies: list[float] = field(default_factory=list)   # end of speech -> final frame, seconds
    missed_turns: int = 0
    extra_finals: int = 0                                   # finals over no reference turn
    turns: int = 0
    audio_seconds: float = 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]

    def render(self) -> str:
        lines = [f"calls {self.calls}, channels {self.channels}, audio {self.audio_seconds:.0f} s, "
                 f"finals {self.finals}, partials {self.partials}, errors {len(self.errors)}, "
                 f"unfinished channels {self.unfinished}"]
        if self.latencies:
            lines.append(f"end of speech -> final: p50 {self.pct(0.5):.2f} s, p95 {self.pct(0.95):.2f} s, "
                         f"max {max(self.latencies):.2f} s over {len(self.latencies)} "
                         + (f"finals ({self.missed_turns} of {self.turns} turns had no final, "
                            f"{self.extra_finals} finals matched no turn)" if self.turns
                            else "finals (server estimate)"))
        for e in self.errors[:5]:
            lines.append(f"error: {e}")
        return "\n".join(lines)


async def _channel(call: AudioCall, name: str, url: str, token: str, speed: float, res: ReplayResult,
                   t_zero: float) -> None:
    import websockets

    from livecoach.stream.replay import ws_base

    pcm = call.channels[name]
    ws_url = f"{ws_base(url)}/v1/calls/{call.call_id}/audio?channel={name}"
    step = int(call.rate * FRAME_S) * 2
    finals: list[tuple[float, dict]] = []
    try:
        async with websockets.connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"},
                                      max_size=2**22, open_timeout=30) as ws:
            await ws.send(json.dumps({"type": "start", "encoding": "pcm_s16le", "sample_rate": call.rate,
                                      "offset_s": 0}))
            ready = json.loads(await ws.recv())
            if ready.get("type") != "ready":
                res.errors.append(f"{call.call_id}/{name}: {ready}")
                return
            ended = asyncio.Event()

            async def reader() -> None:
                async for raw in ws:
                    f = json.loads(raw)
                    if f["type"] == "final":
                        finals.append((time.monotonic(), f))
                    elif f["type"] == "partial":
                        res.partials += 1
                    elif f["type"] == "error":
                        res.errors.append(f"{call.call_id}/{name}: {f['code']}: {f['message']}")
                    elif f["type"] == "ended":
                        ended.set()
                        return

            rtask = asyncio.create_task(reader())
            for k, i in enumerate(range(0, len(pcm), step)):
                await asyncio.sleep(max(0.0, t_zero + (k + 1) * FRAME_S / speed - time.monotonic()))
                await ws.send(pcm[i:i + step])
            await ws.send(json.dumps({"type": "end"}))
            try:
                await asyncio.wait_for(ended.wait(), timeout=120)
            except asyncio.TimeoutError:
                res.unfinished += 1
            rtask.cancel()
    except Exception as exc:  # report, never crash the whole replay
        res.errors.append(f"{call.call_id}/{name}: {type(exc).__name__}: {exc}")
        res.unfinished += 1
        return
    res.finals += len(finals)
    if call.turns is not None and speed == 1.0:
        # Each final is timed from the true end of the speech it covers: the end of the last reference
        # turn it overlaps (a final may merge turns separated by less than the VAD hangover).
        turns = [t for t in call.turns if t["speaker"] == name]
        res.turns += len(turns)
        t0 = ready.get("t_offset", 0.0)
        covered = set()
        for at, f in finals:
            a, b = f["t_start"] - t0, f["t_end"] - t0
            hit = [i for i, t in enumerate(turns) if a < t["end"] + 0.3 and b > t["start"] - 0.3]
            if not hit:
                res.extra_finals += 1
                continue
            covered.update(hit)
            res.latencies.append(at - (t_zero + max(turns[i]["end"] for i in hit)))
        res.missed_turns += len(turns) - len(covered)
    else:
        res.latencies += [f.get("latency_ms", 0) / 1000 for _, f in finals]


async def replay_audio(calls: list[AudioCall], *, url: str, token: str, speed: float = 1.0,
                       concurrency: int = 10, stagger_s: float = 0.0) -> ReplayResult:
    """Stream ``calls``, ``concurrency`` at a time; call i waits ``i * stagger_s`` first (calls on a
    real line do not all start on the same instant)."""
    res = ReplayResult()
    sem = asyncio.Semaphore(concurrency)
    order = {id(c): i for i, c in enumerate(calls)}

    async def one(call: AudioCall) -> None:
        await asyncio.sleep(order[id(call)] * stagger_s)
        async with sem:
            t_zero = time.monotonic() + 0.2  # both channels start on the same clock
            res.calls += 1
            res.channels += len(call.channels)
            res.audio_seconds += call.seconds * len(call.channels)
            await asyncio.gather(*(_channel(call, name, url, token, speed, res, t_zero) for name in call.channels))

    await asyncio.gather(*(one(c) for c in calls))
    return res


def replay_audio_cli(path: str, url: str, token: str, speed: float = 1.0, concurrency: int = 10) -> int:
    """Entry of ``livecoach replay --audio``; returns the exit code."""
    import typer

    try:
        calls = load_audio_calls(path)
    except (OSError, ValueError) as exc:
        typer.echo(f"livecoach replay --audio: {exc}", err=True)
        return 2
    typer.echo(f"streaming {len(calls)} call(s), {sum(len(c.channels) for c in calls)} channel(s), "
               f"at {speed:g}x real time, {concurrency} at once")
    res = asyncio.run(replay_audio(calls, url=url, token=token, speed=speed, concurrency=concurrency))
    typer.echo(res.render())
    return 0 if not res.errors and not res.unfinished else 1
