"""Training and evaluation data for tier-1, and the tier-0 vs tier-1 comparison.

Labelled dialogues are scarce here, so dialogues are BUILT: a labelled customer message (Banking77 /
Bitext, the same train/dev split the tier-0 heads use, ``livecoach.models.data.intent_splits``) is
inserted as a customer turn at a random point of a real Harper Valley call, after that call's
earlier turns. Training inserts train messages into the first 40 Harper Valley dev calls (sorted by
id); evaluation inserts dev messages into the other 20, so no call and no message is on both sides.
Real, untouched Harper Valley customer turns are added as ``none`` on both sides (the calm calls a
live system mostly sees). Text is normalised to Harper Valley style (lower case, no punctuation).
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Sequence

import numpy as np

from livecoach.signals._tier1_backends import KIND_LABEL, features, load_encoder, model_files, normalise, window_text

LABELS = ("churn", "escalation_request", "complaint", "upgrade_interest", "none")
LABEL_KIND = {v: k for k, v in KIND_LABEL.items()}
TRAIN_CALLS = 40


@dataclass
class Dialogue:
    target: str
    window: tuple[tuple[str, str], ...]
    label: str
    source: str  # e.g. bitext:complaint, harper_valley


def _progress(msg: str) -> None:
    print(f"tier1: {msg}", file=sys.stderr, flush=True)


def _calls(root: Path | None) -> tuple[list[dict], list[dict]]:
    from livecoach.models.data import harper_valley_calls

    calls = sorted(harper_valley_calls(root), key=lambda c: c["id"])
    return calls[:TRAIN_CALLS], calls[TRAIN_CALLS:]


def _turns(call: dict) -> list[tuple[str, str]]:
    return [(t["speaker"], t["text"]) for t in call["turns"] if t.get("text", "").strip()]


def build_dialogues(side: str, *, context_turns: int = 6, per_label: int | None = None, seed: int = 11,
                    natural: int = 400, root: Path | None = None, min_words: int = 1) -> list[Dialogue]:
    """Dialogues for ``side`` = train | dev (see the module doc for how they are made)."""
    from livecoach.models.data import INTENT_LABELS, INTENT_LOOKALIKES, intent_splits

    rng = random.Random(seed if side == "train" else seed + 1)
    train_calls, dev_calls = _calls(root)
    calls = train_calls if side == "train" else dev_calls
    split = intent_splits(root)[side]
    by_label: dict[str, list[tuple[str, str]]] = {}
    for text, y, src in zip(split.texts, split.labels, split.sources or [""] * len(split.texts)):
        lab = INTENT_LABELS[y]
        key = "lookalike" if lab == "none" and src in INTENT_LOOKALIKES else lab
        by_label.setdefault(key, []).append((text, src))
    out: list[Dialogue] = []
    for key in sorted(by_label):
        rows = by_label[key]
        rng.shuffle(rows)
        cap = per_label if per_label is not None else len(rows)
        if key == "none":
            cap = min(len(rows), (per_label or 400) * 2)
        for text, src in rows[:cap]:
            call = rng.choice(calls)
            turns = _turns(call)
            cust = [i for i, (s, _) in enumerate(turns) if s == "customer" and i > 0] or [len(turns) - 1]
            at = rng.choice(cust)
            before = turns[:at]
            window = tuple(before[-(context_turns - 1):]) + (("customer", text),)
            out.append(Dialogue(text, window, "none" if key == "lookalike" else key, src))
    if side == "dev":  # the detectors' hand-written look-alikes and their twins (never trained on)
        from livecoach.models.data import intent_hard_cases

        hard = intent_hard_cases()
        for text, y in zip(hard.texts, hard.labels):
            call = rng.choice(calls)
            turns = _turns(call)
            cust = [i for i, (s, _) in enumerate(turns) if s == "customer" and i > 0] or [len(turns) - 1]
            before = turns[:rng.choice(cust)]
            out.append(Dialogue(text, tuple(before[-(context_turns - 1):]) + (("customer", text),),
                                INTENT_LABELS[y], "hard_case"))
    # natural, untouched customer turns from the same calls: calm-call negatives, short ones included
    # (closings like "bye" / "you too bye bye" are what tier-0 most often mistakes for churn)
    nat: list[Dialogue] = []
    for call in calls:
        turns = _turns(call)
        for i, (s, txt) in enumerate(turns):
            if s == "customer" and len(txt.split()) >= min_words and normalise(txt):
                nat.append(Dialogue(txt, tuple(turns[max(0, i - context_turns + 1):i + 1]), "none", "harper_valley"))
    rng.shuffle(nat)
    out += nat[:natural]
    rng.shuffle(out)
    return out


class CachedEncoder:
    """Wraps a SentenceEncoder with an on-disk text -> vector cache (training and evaluation only:
    building dialogues re-uses the same calls and messages many times)."""

    def __init__(self, enc, path: Path):
        self.enc, self.path = enc, Path(path)
        self.cache: dict[str, np.ndarray] = {}
        self.encoded = 0  # texts actually run through the encoder (cache misses)
        if self.path.exists():
            z = np.load(self.path, allow_pickle=False)
            self.cache = dict(zip(z["keys"].tolist(), z["vecs"]))

    def encode(self, texts: Sequence[str], batch: int = 32) -> np.ndarray:
        todo = sorted({t for t in texts if t not in self.cache}, key=len)
        if todo:
            self.encoded += len(todo)
            for t, v in zip(todo, self.enc.encode(todo, batch)):
                self.cache[t] = v
        return np.stack([self.cache[t] for t in texts])

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = list(self.cache)
        np.savez(self.path, keys=np.array(keys), vecs=np.stack([self.cache[k] for k in keys]))


def cached_encoder(encoder: str, cache_dir: Path, threads: int, precision: str = "int8") -> CachedEncoder:
    """The runtime encoder (``load_encoder``) behind a cache keyed by encoder, precision and export."""
    enc = load_encoder(encoder, cache_dir, threads, precision)
    if encoder == "mpnet":
        from livecoach.signals._tier1_mpnet import EXPORT_VERSION

        key = f"mpnet-v{EXPORT_VERSION}-{precision}"
    else:
        key = encoder
    return CachedEncoder(enc, Path(cache_dir) / f"tier1_embeddings_{key}.npz")


def encode(dialogues: Sequence[Dialogue], enc) -> np.ndarray:
    xs = []
    step = 256
    t0 = time.monotonic()
    for i in range(0, len(dialogues), step):
        chunk = dialogues[i:i + step]
        xs.append(features(enc, [d.target for d in chunk], [d.window for d in chunk]))
        _progress(f"encoded {min(i + step, len(dialogues))}/{len(dialogues)} ({time.monotonic() - t0:.0f} s)")
        if isinstance(enc, CachedEncoder):
            enc.save()
    return np.concatenate(xs)


def train(encoder: str, cache_dir: Path, *, threads: int = 2, per_label: int = 500, natural: int = 600,
          precision: str = "int8", out_npz: Path | None = None, out_json: Path | None = None) -> dict:
    """Fit the window classifier on ``encoder`` and write its artefact (by default the committed
    one for that encoder, :func:`model_files`)."""
    from sklearn.linear_model import LogisticRegression

    npz0, json0 = model_files(encoder)
    out_npz, out_json = out_npz or npz0, out_json or json0
    dl = build_dialogues("train", per_label=per_label, natural=natural)
    _progress(f"{len(dl)} training dialogues; encoder {encoder}" + (f" ({precision})" if encoder == "mpnet" else ""))
    enc = cached_encoder(encoder, cache_dir, threads, precision)
    t0 = time.monotonic()
    X = encode(dl, enc)
    enc_s = time.monotonic() - t0
    y = np.array([LABELS.index(d.label) for d in dl])
    clf = LogisticRegression(C=2.0, max_iter=2000)
    clf.fit(X, y)
    W = np.zeros((X.shape[1], len(LABELS)), np.float32)
    b = np.zeros(len(LABELS), np.float32)
    for j, c in enumerate(clf.classes_):
        W[:, c] = clf.coef_[j]
        b[c] = clf.intercept_[j]
    np.savez_compressed(out_npz, W=W, b=b)
    counts = {lab: int((y == i).sum()) for i, lab in enumerate(LABELS)}
    meta = {"encoder": encoder, "labels": list(LABELS), "temperature": 1.0, "features": "[u, w, u*w]",
            **({"precision": precision, "runtime": "onnxruntime, one text per run"} if encoder == "mpnet"
               else {"runtime": "torch fp32"}),
            "trained": date.today().isoformat(), "train_dialogues": len(dl), "train_counts": counts,
            "train_encode_seconds": round(enc_s, 1), "train_texts_encoded": enc.encoded,
            "train_texts_from_cache": len({normalise(d.target) or "." for d in dl} | {window_text(d.window) or "."
                                                                                      for d in dl}) - enc.encoded,
            "C": 2.0}
    out_json.write_text(json.dumps(meta, indent=2) + "\n")
    return meta


# ---------------------------------------------------------------------- evaluation

def tier0_scores(dialogues: Sequence[Dialogue], cache_dir: Path) -> tuple[np.ndarray, str]:
    """Tier-0 intent probabilities per dialogue (target utterance alone), and what produced them.

    The real tier-0 intent head (``livecoach.models.heads`` over the tier-0 encoder) when its
    artefacts exist; otherwise a stand-in of the same shape (a logistic regression on the
    all-MiniLM-L6-v2 embedding of the single utterance, trained on the same train messages)."""
    texts = [normalise(d.target) or "." for d in dialogues]
    try:
        from livecoach.models.heads import load_heads
        from livecoach.settings import Settings
        from livecoach.signals import score_utterances

        if "intent" not in load_heads():
            raise LookupError("models/artefacts has no 'intent' head yet")
        scored = score_utterances([{"text": t, "speaker": "customer"} for t in texts],
                                  Settings(cache_dir=cache_dir))
        p = np.array([[float(sc.intent_probs.get(lab, 0.0)) for lab in LABELS] for sc in scored])
        return p, "tier-0 intent head (livecoach.signals.score_utterances, the detectors' own scores)"
    except Exception as exc:  # artefacts not there: say so and use the stand-in
        _progress(f"real tier-0 intent head unavailable ({type(exc).__name__}: {exc}); using the stand-in")
    from sklearn.linear_model import LogisticRegression

    enc = cached_encoder("minilm", cache_dir, 2)
    # like tier-0: single utterances from the intent sets only (no Harper Valley turns, no context)
    tr = build_dialogues("train", per_label=500, natural=0)
    Xtr = enc.encode([normalise(d.target) or "." for d in tr])
    clf = LogisticRegression(C=2.0, max_iter=2000).fit(Xtr, [LABELS.index(d.label) for d in tr])
    p = clf.predict_proba(enc.encode(texts))
    enc.save()
    full = np.zeros((len(texts), len(LABELS)))
    full[:, clf.classes_] = p
    return full, ("stand-in tier-0 (single-utterance logistic regression on all-MiniLM-L6-v2, trained on the "
                  "same Banking77/Bitext train messages; the real tier-0 head was not available)")


def _prf(pred: np.ndarray, gold: np.ndarray) -> tuple[float, float, int, int]:
    tp = int((pred & gold).sum())
    npred, npos = int(pred.sum()), int(gold.sum())
    return (tp / npred if npred else 0.0), (tp / npos if npos else 0.0), npred, npos


def compare(dialogues: Sequence[Dialogue], p0: np.ndarray, p1: np.ndarray, policy) -> dict:
    """Precision/recall of tier-0 and tier-1 decisions on the escalated slice (the policy's rule)."""
    from livecoach.signals._policy_config import threshold_for

    t1 = policy.tier1
    lo, hi = t1.uncertainty_band
    gold_all, d0, d1, per_kind = [], [], [], {}
    for k, lab in KIND_LABEL.items():
        j = LABELS.index(lab)
        lead_th = threshold_for(policy.kinds[k].lead, 3) if k in policy.kinds else 0.5
        sel = (p0[:, j] >= lo) & ((p0[:, j] < hi) | (k in t1.high_stakes))
        gold = np.array([d.label == lab for d in dialogues])[sel]
        a = p0[sel, j] >= lead_th
        b = p1[sel, j] >= t1.confirm_at
        gold_all.append(gold); d0.append(a); d1.append(b)
        per_kind[k] = {"slice": int(sel.sum()), "tier0": _prf(a, gold), "tier1": _prf(b, gold)}
    g, a, b = (np.concatenate(x) for x in (gold_all, d0, d1))
    return {"slice": int(len(g)), "positives": int(g.sum()), "tier0": _prf(a, g), "tier1": _prf(b, g),
            "per_kind": per_kind}


def tier1_probs(dialogues: Sequence[Dialogue], cache_dir: Path, threads: int = 2, encoder: str = "minilm",
                npz: Path | None = None, meta_path: Path | None = None) -> tuple[np.ndarray, dict]:
    """The committed tier-1 model's probabilities (same maths as the runtime backend, cached encoder)."""
    npz0, json0 = model_files(encoder)
    npz, meta_path = npz or npz0, meta_path or json0
    meta = json.loads(Path(meta_path).read_text())
    arr = np.load(npz)
    enc = cached_encoder(meta.get("encoder", "minilm"), cache_dir, threads, meta.get("precision", "int8"))
    x = features(enc, [d.target for d in dialogues], [d.window for d in dialogues])
    enc.save()
    z = (x @ arr["W"] + arr["b"]) / float(meta.get("temperature", 1.0))
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True), meta
