"""Voice calls: real audio streamed through /v1/calls/{id}/audio, transcribed by the real Whisper model."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import websockets

from livecoach.models.asr import load_wav
from livecoach.models.asr_eval import corpus_wer, wer

FIX = Path(__file__).parent / "fixtures" / "audio"
CLIP = FIX / "librispeech_1272-128104-0000.wav"
CLIP_REF = "MISTER QUILTER IS THE APOSTLE OF THE MIDDLE CLASSES AND WE ARE GLAD TO WELCOME HIS GOSPEL"
CALL = FIX / "hv_0002f70f_8k_stereo.wav"


def pcm16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


def audio_url(server, call_id: str, channel: str = "customer", token_role: str | None = "ingest") -> str:
    q = f"channel={channel}" + (f"&token={server.tokens[token_role]}" if token_role else "")
    return f"{server.ws}/v1/calls/{call_id}/audio?{q}"


async def stream(ws, pcm: bytes, rate: int, *, frame_ms: int = 100, pace: float = 0.0) -> None:
    """Send PCM in frames; ``pace`` > 0 sleeps that fraction of real time between frames."""
    step = rate * 2 * frame_ms // 1000
    for i in range(0, len(pcm), step):
        await ws.send(pcm[i:i + step])
        if pace:
            await asyncio.sleep(frame_ms / 1000 * pace)


async def collect_until_ended(ws, timeout: float = 120) -> list[dict]:
    frames = []
    async with asyncio.timeout(timeout):
        async for raw in ws:
            f = json.loads(raw)
            frames.append(f)
            if f["type"] == "ended":
                return frames
    return frames


async def run_channel(server, call_id: str, channel: str, pcm: bytes, rate: int, pace: float = 0.0) -> list[dict]:
    async with websockets.connect(audio_url(server, call_id, channel, None),
                                  additional_headers={"Authorization": f"Bearer {server.tokens['ingest']}"}) as ws:
        await ws.send(json.dumps({"type": "start", "encoding": "pcm_s16le", "sample_rate": rate}))
        ready = json.loads(await ws.recv())
        assert ready["type"] == "ready" and ready["channel"] == channel
        reader = asyncio.create_task(collect_until_ended(ws))
        await stream(ws, pcm, rate, pace=pace)
        await ws.send(json.dumps({"type": "end"}))
        return [ready] + await reader


def clip_pcm() -> bytes:
    audio, sr = load_wav(CLIP)
    assert sr == 16000
    return pcm16(np.concatenate([audio[:, 0], np.zeros(8000, np.float32)]))


async def test_streamed_speech_becomes_a_stored_final_utterance_with_word_timings(server):
    call_id = "voice-" + uuid.uuid4().hex[:8]
    frames = await run_channel(server, call_id, "customer", clip_pcm(), 16000, pace=0.25)
    finals = [f for f in frames if f["type"] == "final"]
    assert len(finals) == 1 and frames[-1] == {"type": "ended", "finals": 1}

    utts = server.store.get_call(call_id)["utterances"]
    assert len(utts) == 1
    u = utts[0]
    assert u["speaker"] == "customer" and u["source"] == "asr" and u["seq"] == 2
    assert wer(CLIP_REF, u["text"]) <= 0.1, u["text"]
    # the clip's speech runs from about 0.45 s to 5.5 s
    assert 0.2 <= u["t_start"] <= 0.8 and 5.2 <= u["t_end"] <= 5.9
    assert 0.5 < u["confidence"] <= 1
    words = u["words"]
    assert [w["word"].strip(".,").lower() for w in words][:3] == ["mr", "quilter", "is"]
    assert all(u["t_start"] - 0.6 <= w["start"] <= w["end"] <= u["t_end"] + 0.6 for w in words)
    assert [w["start"] for w in words] == sorted(w["start"] for w in words)
    head = server.store.get_call_header(call_id)
    assert head["channel"] == "voice" and head["agent_id"] == "unknown"


async def test_two_channel_8khz_call_is_transcribed_per_speaker_at_the_right_times(server):
    call_id = "voice-" + uuid.uuid4().hex[:8]
    audio, sr = load_wav(CALL)
    assert sr == 8000 and audio.shape[1] == 2
    ref = json.loads(CALL.with_suffix(".json").read_text())["turns"]
    agent, customer = await asyncio.gather(
        run_channel(server, call_id, "agent", pcm16(audio[:, 0]), 8000, pace=0.1),
        run_channel(server, call_id, "customer", pcm16(audio[:, 1]), 8000, pace=0.1))
    utts = server.store.get_call(call_id)["utterances"]
    assert [u["seq"] for u in utts] == list(range(2, len(utts) + 2))
    for spk in ("agent", "customer"):
        mine = [u for u in utts if u["speaker"] == spk]
        turns = [t for t in ref if t["speaker"] == spk]
        assert mine, spk
        # every final starts within half a second of a reference turn of the same speaker
        for u in mine:
            assert min(abs(u["t_start"] - t["start"]) for t in turns) < 0.5, (u, turns)
        hyp = " ".join(u["text"] for u in sorted(mine, key=lambda u: u["t_start"]))
        # synthetic (espeak-ng) speech is hard for tiny.en; the eval reports about 0.35 WER on such calls
        assert corpus_wer([(" ".join(t["text"] for t in turns), hyp)]) < 0.45, hyp
    assert {f["type"] for f in agent + customer} >= {"ready", "final", "ended"}


async def test_bad_audio_input_gets_an_error_frame_and_the_connection_and_call_survive(server_factory):
    server = server_factory(max_audio_frame_bytes=4096)
    call_id = "voice-" + uuid.uuid4().hex[:8]
    pcm = clip_pcm()

    async def answer(ws, msg) -> dict:
        await ws.send(msg)
        return json.loads(await ws.recv())

    async with websockets.connect(audio_url(server, call_id)) as ws:
        assert (await answer(ws, b"\0\0" * 100))["code"] == "not_started"
        assert (await answer(ws, json.dumps({"type": "start", "sample_rate": 16000})))["code"] == "unsupported_format"
        assert (await answer(ws, json.dumps({"type": "start", "encoding": "mulaw", "sample_rate": 8000})))["code"] \
            == "unsupported_format"
        assert (await answer(ws, json.dumps({"type": "start", "encoding": "pcm_s16le", "sample_rate": 44100})))[
            "code"] == "unsupported_format"
        assert (await answer(ws, json.dumps({"type": "start", "encoding": "pcm_s16le", "sample_rate": 16000,
                                             "channels": 2})))["code"] == "unsupported_format"
        assert (await answer(ws, "not json"))["code"] == "invalid_json"
        assert (await answer(ws, json.dumps({"type": "stop"})))["code"] == "unknown_type"
        ready = await answer(ws, json.dumps({"type": "start", "encoding": "pcm_s16le", "sample_rate": 16000}))
        assert ready["type"] == "ready"
        assert (await answer(ws, json.dumps({"type": "start", "encoding": "pcm_s16le", "sample_rate": 16000})))[
            "code"] == "already_started"
        assert (await answer(ws, b"\0" * 3201))["code"] == "odd_byte_count"
        assert (await answer(ws, b"\0" * 8192))["code"] == "frame_too_large"
        # after all that, the same socket still transcribes speech
        reader = asyncio.create_task(collect_until_ended(ws))
        await stream(ws, pcm, 16000)
        await ws.send(json.dumps({"type": "end"}))
        frames = await reader
        assert [f for f in frames if f["type"] == "final"] and frames[-1]["type"] == "ended"
        assert (await answer(ws, b"\0\0" * 100))["code"] == "audio_after_end"
    assert len(server.store.get_call(call_id)["utterances"]) == 1
    assert server.app.state.metrics["audio_frames_rejected"] >= 10


async def test_audio_sockets_refuse_bad_tokens_and_channels(server):
    for url, code in ((audio_url(server, "c1", token_role=None), 4401),
                      (audio_url(server, "c1", token_role="lead"), 4403),
                      (audio_url(server, "c1", channel="supervisor"), 4400),
                      (audio_url(server, "-bad", channel="agent"), 4400)):
        async with websockets.connect(url) as ws:
            with pytest.raises(websockets.ConnectionClosed) as exc:
                await ws.recv()
            assert exc.value.rcvd.code == code


async def test_audio_for_a_call_that_ended_is_refused(server):
    call_id = "voice-" + uuid.uuid4().hex[:8]
    await run_channel(server, call_id, "customer", clip_pcm(), 16000)
    last = server.store.get_call_header(call_id)["last_seq"]
    async with websockets.connect(f"{server.ws}/v1/calls/{call_id}/events?token={server.tokens['ingest']}") as ev:
        await ev.recv()  # ready
        await ev.send(json.dumps({"type": "call_ended", "seq": last + 1}))
        assert json.loads(await ev.recv())["type"] == "ack"
    async with websockets.connect(audio_url(server, call_id)) as ws:
        await ws.send(json.dumps({"type": "start", "encoding": "pcm_s16le", "sample_rate": 16000}))
        assert json.loads(await ws.recv())["status"] == "ended"
        assert json.loads(await ws.recv())["code"] == "call_ended"
        await ws.send(b"\0\0" * 1600)
        assert json.loads(await ws.recv())["code"] == "call_ended"
        await ws.send(json.dumps({"type": "end"}))
        assert json.loads(await ws.recv()) == {"type": "ended", "finals": 0}


async def test_a_monologue_longer_than_the_segment_limit_is_cut_into_several_finals(server_factory):
    server = server_factory(asr_max_segment_s=3.0)
    call_id = "voice-" + uuid.uuid4().hex[:8]
    frames = await run_channel(server, call_id, "agent", clip_pcm(), 16000)
    utts = server.store.get_call(call_id)["utterances"]
    assert len(utts) >= 2 and frames[-1]["finals"] == len(utts)
    assert all(b["t_start"] >= a["t_end"] - 0.05 for a, b in zip(utts, utts[1:]))
    assert wer(CLIP_REF, " ".join(u["text"] for u in utts)) <= 0.3


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.slow
async def test_memory_stays_bounded_over_a_long_call(server):
    """20 minutes of call audio (speech every 20 s, quiet line noise between) through one socket, sent as
    fast as the server transcribes it: the server's memory after 5 minutes and after 20 is the same."""
    call_id = "voice-" + uuid.uuid4().hex[:8]
    speech, _ = load_wav(CLIP)
    rng = np.random.default_rng(1)
    gap = (rng.normal(0, 0.002, 16000 * 14)).astype(np.float32)
    block = pcm16(np.concatenate([speech[:, 0], gap]))  # 20 s
    rss = []
    async with websockets.connect(audio_url(server, call_id)) as ws:
        await ws.send(json.dumps({"type": "start", "encoding": "pcm_s16le", "sample_rate": 16000}))
        await ws.recv()
        finals = 0
        for i in range(60):
            await stream(ws, block, 16000, frame_ms=200)
            async with asyncio.timeout(60):  # each block's speech is final before the next block
                while json.loads(await ws.recv())["type"] != "final":
                    pass
            finals += 1
            if i in (15, 59):
                rss.append(_rss_mb())
        await ws.send(json.dumps({"type": "end"}))
        frames = await collect_until_ended(ws)
    assert finals == 60 and frames[-1]["finals"] >= 60  # the audio really was transcribed all along
    assert rss[1] - rss[0] < 25, rss
