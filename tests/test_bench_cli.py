"""Benchmark verbs are commands people run by hand: they must finish and print their figures."""

from __future__ import annotations

import subprocess
import sys


def _livecoach(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "livecoach.cli", *args], capture_output=True, text=True, timeout=300)


def test_the_notes_bench_drafts_a_long_call_and_prints_its_latency():
    r = _livecoach("bench", "notes", "--n", "2", "--minutes", "3")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "draft ms: p50" in r.stdout and "budget 2000 ms:" in r.stdout
    assert "ms in the last note" in r.stdout  # the tier-1 timing line (it once raised KeyError)
