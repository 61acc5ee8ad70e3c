"""Synthesise two-channel test calls from Harper Valley transcripts with espeak-ng, keeping turn timing.

CLI: ``livecoach models synth-calls OUT_DIR [--calls N] [--rate 8000|16000] [--skip K] [--max-seconds S]``

Writes OUT_DIR/<call id>.wav (stereo PCM s16le; channel 0 agent, channel 1 customer) and
OUT_DIR/<call id>.json ({"id", "turns": [{"speaker", "text", "start", "end"}]}, seconds as spoken
in the WAV). Each turn starts at its recorded start time, or right after the same speaker's previous
turn if the synthetic voice ran longer than the human did. Needs `espeak-ng` (Debian package).
Transcripts: Gridspace-Stanford Harper Valley (CC BY 4.0); see ../shared/data/harper_valley/README.md.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import wave
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "harper_valley" / "calls_dev.jsonl"

VOICES = {"agent": ["en-us", "-s", "165"], "customer": ["en-gb-x-rp", "-s", "160", "-p", "60"]}


def clean(text: str) -> str:
    text = re.sub(r"\[[^\]]*\]|<[^>]*>", " ", text)
    return " ".join(text.split())


def speak(text: str, speaker: str, rate: int) -> np.ndarray:
    out = subprocess.run(["espeak-ng", "-v", *VOICES[speaker], "--stdout", text], capture_output=True,
                         check=True).stdout
    with wave.open(io.BytesIO(out)) as w:
        sr = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
    loud = np.flatnonzero(np.abs(pcm) > 0.01)  # espeak pads with silence: keep the speech alone, so
    if len(loud):                              # a turn's end in the JSON is the true end of speech
        pcm = pcm[loud[0]:loud[-1] + 1]
    g = np.gcd(sr, rate)
    return resample_poly(pcm, rate // g, sr // g).astype(np.float32)


def synth_call(call: dict, rate: int, max_seconds: float) -> tuple[np.ndarray, list[dict]]:
    tracks = {"agent": [], "customer": []}
    free_at = {"agent": 0.0, "customer": 0.0}
    turns = []
    for t in call["turns"]:
        text = clean(t["text"])
        if not text:
            continue
        start = max(t["start_ms"] / 1000, free_at[t["speaker"]])
        if start > max_seconds:
            break
        audio = speak(text, t["speaker"], rate)
        end = start + len(audio) / rate
        tracks[t["speaker"]].append((start, audio))
        free_at[t["speaker"]] = end + 0.3
        turns.append({"speaker": t["speaker"], "text": text, "start": round(start, 3), "end": round(end, 3)})
    total = max(t["end"] for t in turns) + 1.0
    out = np.zeros((int(total * rate), 2), np.float32)
    for ch, spk in enumerate(("agent", "customer")):
        for start, audio in tracks[spk]:
            i = int(start * rate)
            out[i:i + len(audio), ch] += audio
    return out, turns


def synth_calls(out: Path, *, calls: int = 10, skip: int = 0, rate: int = 8000, max_seconds: float = 600.0,
                source: Path = DATA, log=print) -> list[Path]:
    """Write ``calls`` synthetic calls to ``out``; returns the WAV paths."""
    import shutil

    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed (Debian: apt-get install espeak-ng)")
    out.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in Path(source).read_text().splitlines() if line.strip()]
    paths = []
    for call in rows[skip:skip + calls]:
        audio, turns = synth_call(call, rate, max_seconds)
        pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
        path = out / f"{call['id']}.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(2)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(pcm.tobytes())
        (out / f"{call['id']}.json").write_text(json.dumps({"id": call["id"], "turns": turns}, indent=1))
        paths.append(path)
        log(f"{call['id']}: {len(turns)} turns, {len(audio) / rate:.1f} s")
    return paths
