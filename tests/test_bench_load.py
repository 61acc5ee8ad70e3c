"""``livecoach bench load`` against its own ``livecoach serve``: 2 chats and 1 voice call for a few
seconds, the machine-readable report read back."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import HARPER_DEV, ROOT


@pytest.mark.slow
def test_a_short_load_run_acks_every_event_and_reports_every_figure():
    out = subprocess.run(
        [sys.executable, "-m", "livecoach.cli", "bench", "load", "--chats", "2", "--voice", "1",
         "--minutes", "0.1", "--speed", "5", "--voice-seconds", "6", "--warmup", "0",
         "--calls-file", str(HARPER_DEV), "--max-ack-p99-ms", "60000", "--max-signal-p95-s", "600", "--json"],
        capture_output=True, text=True, timeout=170, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)

    assert report["server"]["how"].startswith("own livecoach serve")
    (stage,) = report["stages"]
    chat = stage["chat"]
    assert chat["acked"] > 0
    assert chat["acked"] == chat["sent"]
    assert chat["errors"] == 0, chat["error_codes"]
    assert chat["events_per_s"] > 0
    assert chat["ack_ms"]["n"] == chat["acked"]
    assert 0 < chat["ack_ms"]["p50"] <= chat["ack_ms"]["p95"] <= chat["ack_ms"]["p99"] <= chat["ack_ms"]["max"]
    # every call was ended, either by its recording or by the end of the stage
    assert chat["calls"] == chat["calls_completed"] + chat["calls_cut"] >= 2

    assert set(stage["signals"]) >= {"lead_stored", "not_on_board", "latency_s"}
    assert "skipped" not in stage["signals"]                       # the bench made its own lead token
    assert stage["signals"]["board_messages"] > 0                  # the lead's board socket was live

    voice = stage["voice"]
    assert voice["calls"] == 1 and voice["errors"] == 0, voice["error_samples"]
    assert voice["finals"] > 0 and voice["final_s"]["n"] > 0

    server = stage["server"]
    assert server["pid"] == report["server"]["pid"]
    assert server["rss_mb"]["peak"] >= server["rss_mb"]["start"] > 50
    assert server["cpu_pct"] > 0
    assert report["load_average_start"] and stage["client"]["loop_lag_ms"]["n"] > 0
    assert stage["broken"] == []


def test_the_targets_name_what_a_stage_missed():
    from livecoach._load_report import Targets, spread

    def stage(acked: int, ack_ms: list[float], sig_s: list[float], errors: int = 0) -> dict:
        return {"chat": {"acked": acked, "errors": errors, "ack_ms": spread(ack_ms)},
                "signals": {"latency_s": spread(sig_s, 3)}, "voice": {"errors": 0, "final_s": spread([])}}

    t = Targets(ack_p99_ms=500, signal_p95_s=2.0, min_signals=5)
    assert t.broken(stage(10, [5.0] * 10, [0.3] * 5)) == []
    assert t.broken(stage(0, [], [])) == ["no event was acked"]
    assert t.broken(stage(10, [5.0] * 10, [], errors=1)) == ["1 errors"]
    assert t.broken(stage(100, [5.0] * 90 + [900.0] * 10, [])) == ["ack p99 900 ms > 500 ms"]
    assert t.broken(stage(10, [5.0] * 10, [3.0] * 5)) == ["signal p95 3.00 s > 2 s"]
    assert t.broken(stage(10, [5.0] * 10, [3.0] * 4)) == []        # too few signals to judge
