"""Synthesise test calls: a thin wrapper of ``livecoach models synth-calls`` (see models/asr_synth.py)."""
import sys

from livecoach.cli import app

if __name__ == "__main__":
    sys.exit(app(["models", "synth-calls", *sys.argv[1:]]))
