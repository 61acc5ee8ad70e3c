"""Encoder features for training/evaluation sets, cached in ``<cache_dir>/features``."""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

_ENCODERS: dict[tuple[str, str], object] = {}


def get_encoder(cache_dir: Path, precision: str):
    from livecoach.models.encoder import load_encoder

    key = (str(cache_dir), precision)
    if key not in _ENCODERS:
        _ENCODERS[key] = load_encoder(cache_dir=Path(cache_dir), precision=precision, threads=2)
    return _ENCODERS[key]


def encode_sorted(enc, texts: Sequence[str], batch: int = 64, log_every: int = 0) -> dict[str, np.ndarray]:
    """Encode in length-sorted batches (little padding); returns ``emb`` and ``tuned`` in input order."""
    n = len(texts)
    order = np.argsort([len(t) for t in texts], kind="stable")
    emb = np.zeros((n, 384), np.float32)
    tuned = np.zeros((n, 384), np.float32)
    t0 = time.time()
    for k, i in enumerate(range(0, n, batch)):
        idx = order[i:i + batch]
        out = enc.encode([texts[j] for j in idx])
        emb[idx], tuned[idx] = out.emb, out.tuned
        if log_every and k % log_every == 0:
            print(f"  encoded {i + len(idx)}/{n} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    return {"emb": emb, "tuned": tuned}


def features(name: str, texts: Sequence[str], cache_dir: Path, precision: str = "fp32") -> dict[str, np.ndarray]:
    enc = get_encoder(cache_dir, precision)
    h = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:12]
    from livecoach.models.encoder import ENCODE_VERSION

    path = Path(cache_dir) / "features" / f"{name}-{enc.path.stem}-e{ENCODE_VERSION}-{h}.npz"
    if path.exists():
        try:
            d = np.load(path)
            return {"emb": d["emb"], "tuned": d["tuned"]}
        except Exception:
            path.unlink(missing_ok=True)
    print(f"encoding {name} ({len(texts)} texts, {precision})", file=sys.stderr, flush=True)
    out = encode_sorted(enc, texts, log_every=100)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out
