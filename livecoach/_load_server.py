"""``bench load`` helpers: the server under test (its own ``livecoach serve`` subprocess, or one
already running) and what it costs the machine (RSS and CPU read from ``/proc``)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnServer:
    """``livecoach serve`` in a subprocess on a free port, a temporary data dir and the full default
    line-up (detectors, policy, post-call notes, voice), with an ingest and a lead token."""

    def __init__(self, database_url: str = "", log=print):
        self.database_url = database_url
        self.log = log
        self.dir = Path(tempfile.mkdtemp(prefix="livecoach-bench-load-"))
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.tokens: dict[str, str] = {}

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def log_file(self) -> Path:
        return self.dir / "serve.log"

    def start(self, timeout: float = 600.0) -> None:
        from livecoach.auth import TokenStore
        from livecoach.ready import ServerNotReady, wait_healthy
        from livecoach.settings import Settings

        port = _free_port()
        env = dict(os.environ, LIVECOACH_DATA_DIR=str(self.dir), LIVECOACH_DATABASE_URL=self.database_url,
                   LIVECOACH_LOG_LEVEL="warning")
        self.proc = subprocess.Popen([sys.executable, "-m", "livecoach.cli", "serve", "--host", "127.0.0.1",
                                      "--port", str(port)], env=env, cwd=self.dir,
                                     stdout=open(self.log_file, "w"), stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(self.url, timeout=timeout, alive=lambda: self.proc.poll() is None)
        except ServerNotReady as exc:
            tail = self.log_file.read_text(errors="replace")[-2000:]
            self.stop()
            raise RuntimeError(f"{exc}; its log ends:\n{tail}") from None
        ts = TokenStore.from_settings(Settings(data_dir=self.dir, database_url=self.database_url))
        self.tokens = {role: ts.create(role=role, name=f"bench-load-{role}") for role in ("ingest", "lead")}

    def stop(self, keep_dir: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if not keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def wait_voice_ready(url: str, lead_token: str, timeout: float = 300.0) -> dict:
    """The server loads its speech models after it answers /healthz: wait for them (voice stats)."""
    import httpx

    deadline = time.monotonic() + timeout
    stats: dict = {}
    while time.monotonic() < deadline:
        try:
            stats = httpx.get(url + "/v1/voice/stats", headers={"Authorization": f"Bearer {lead_token}"},
                              timeout=10).json()
        except (httpx.HTTPError, ValueError):
            stats = {}
        if stats.get("asr_loaded"):
            return stats
        time.sleep(0.5)
    return stats


# --- what the server costs ----------------------------------------------------------------------

def _children(pid: int) -> list[int]:
    """``pid`` and every live process below it (the server may start helpers)."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                parent[int(d)] = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    tree, todo = [pid], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        tree += kids
        todo += kids
    return tree


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])     # utime + stime (fields 14 and 15 of stat)


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as fh:
        xs = [int(x) for x in fh.readline().split()[1:]]
    idle = xs[3] + (xs[4] if len(xs) > 4 else 0)
    return sum(xs) - idle, sum(xs)


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


class ServerCost:
    """RSS and CPU of one server process (and its children), sampled during a stage."""

    def __init__(self, pid: int | None):
        self.pid = pid
        self.rss_mb: list[float] = []
        self._t0 = self._ticks0 = self._m0 = None

    def _alive(self) -> bool:
        return self.pid is not None and os.path.exists(f"/proc/{self.pid}")

    def _sum(self, read) -> int | None:
        """``read(pid)`` summed over the server and its children (None once it is gone)."""
        if not self._alive():
            return None
        total = 0
        for p in _children(self.pid):
            try:
                total += read(p)
            except OSError:
                pass
        return total

    def rss_now(self) -> float | None:
        kb = self._sum(_rss_kb)
        return None if kb is None else round(kb / 1024, 1)

    def ticks_now(self) -> int | None:
        return self._sum(_cpu_ticks)

    def begin(self) -> None:
        self._t0, self._ticks0, self._m0 = time.monotonic(), self.ticks_now(), _machine_ticks()
        self.rss_mb = []
        self.sample()

    def sample(self) -> None:
        r = self.rss_now()
        if r is not None:
            self.rss_mb.append(r)

    def end(self) -> dict:
        self.sample()
        wall = time.monotonic() - self._t0
        ticks = self.ticks_now()
        busy1, total1 = _machine_ticks()
        busy0, total0 = self._m0
        out = {"pid": self.pid, "rss_mb": None, "cpu_pct": None,
               "machine_busy_pct": round(100 * (busy1 - busy0) / max(total1 - total0, 1), 1),
               "cores": os.cpu_count()}
        if self.rss_mb:
            out["rss_mb"] = {"start": self.rss_mb[0], "peak": max(self.rss_mb), "end": self.rss_mb[-1]}
        if ticks is not None and self._ticks0 is not None and wall > 0:
            # percent of one core: 200 means both cores of this machine were busy with the server
            out["cpu_pct"] = round(100 * (ticks - self._ticks0) / CLK_TCK / wall, 1)
        return out
