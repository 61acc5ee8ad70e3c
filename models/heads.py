"""Small numpy heads over the encoder outputs, loaded from ``artefacts/heads.npz`` + ``heads.json``.

A head is a stack of dense layers (ReLU between them) applied to one encoder output (``emb`` or
``tuned``; ``l2``: scaled to unit length first), then ``softmax(logits / temperature)``.
Temperatures are fitted on a held-out calibration split, so the probabilities are calibrated (ECE is
in the model card).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from livecoach.models.data import INTENT_LABELS, SENTIMENT_LABELS  # noqa: F401  (re-exported)
from livecoach.models.encoder import ARTEFACTS


@dataclass
class Head:
    name: str
    weights: list[np.ndarray]
    biases: list[np.ndarray]
    input: str  # "emb" | "tuned"
    temperature: float
    labels: list[str] = field(default_factory=list)
    l2: bool = False  # the input is scaled to unit length before the first layer

    @classmethod
    def from_arrays(cls, name, weights, biases, input, temperature, labels, l2: bool = False) -> "Head":
        return cls(name, [np.asarray(w, np.float32) for w in weights], [np.asarray(b, np.float32) for b in biases],
                   input, float(temperature), list(labels), bool(l2))

    def logits(self, x: np.ndarray) -> np.ndarray:
        h = np.asarray(x, np.float32)
        if self.l2:
            h = unit(h)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w + b
            if i < len(self.weights) - 1:
                h = np.maximum(h, 0.0)
        return h

    def probs(self, x: np.ndarray) -> np.ndarray:
        return softmax(self.logits(x) / self.temperature)


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length."""
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def load_heads(directory: Path = ARTEFACTS) -> dict[str, Head]:
    """Every head the artefacts hold, by name (``sentiment``, ``intent``, ``abuse``)."""
    cfg = json.loads((Path(directory) / "heads.json").read_text())
    arrays = dict(np.load(Path(directory) / "heads.npz"))
    out = {}
    for name, h in cfg.get("heads", {}).items():
        n = int(h.get("layers", 1))
        out[name] = Head.from_arrays(name, [arrays[f"{name}.W{i}"] for i in range(n)],
                                     [arrays[f"{name}.b{i}"] for i in range(n)], h["input"],
                                     h.get("temperature", 1.0), h["labels"], h.get("l2", False))
    return out


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising negative log-likelihood on held-out ``(logits, y)``."""

    def nll(t: float) -> float:
        z = logits / t
        z = z - z.max(1, keepdims=True)
        lp = z - np.log(np.exp(z).sum(1, keepdims=True))
        return float(-lp[np.arange(len(y)), y].mean())

    grid = np.exp(np.linspace(math.log(0.2), math.log(10.0), 100))
    best = float(min(grid, key=nll))
    lo, hi = best / 1.05, best * 1.05
    for _ in range(40):
        a, b = lo + (hi - lo) / 3, hi - (hi - lo) / 3
        lo, hi = (lo, b) if nll(a) < nll(b) else (a, hi)
    return (lo + hi) / 2


def ece(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of the top-label confidence (equal-width bins)."""
    conf = probs.max(1)
    correct = (probs.argmax(1) == y).astype(np.float64)
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            total += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(total)


def train_mlp(x: np.ndarray, y: np.ndarray, *, hidden: int, n_classes: int, epochs: int = 40, seed: int = 0,
              lr: float = 2e-3, weight_decay: float = 1e-4, class_balance: float = 0.5, batch: int = 256,
              dropout: float = 0.1) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Train a softmax head (``hidden=0``: linear) with PyTorch; returns numpy layers ``(in, out)``.

    ``class_balance`` in [0, 1] weights classes by ``(n / n_c) ** class_balance``.
    """
    import torch
    from torch import nn

    torch.manual_seed(seed)
    d = x.shape[1]
    if hidden:
        net = nn.Sequential(nn.Dropout(dropout), nn.Linear(d, hidden), nn.ReLU(), nn.Dropout(dropout),
                            nn.Linear(hidden, n_classes))
    else:
        net = nn.Sequential(nn.Linear(d, n_classes))
    counts = np.bincount(y, minlength=n_classes).astype(np.float64) + 1
    w = torch.tensor((counts.sum() / (n_classes * counts)) ** class_balance, dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss(weight=w)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    X = torch.from_numpy(np.asarray(x, np.float32))
    Y = torch.from_numpy(np.asarray(y, np.int64))
    g = torch.Generator().manual_seed(seed)
    steps = epochs * max(1, math.ceil(len(X) / batch))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(len(X), generator=g)
        for i in range(0, len(X), batch):
            idx = perm[i:i + batch]
            loss = loss_fn(net(X[idx]), Y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    lins = [m for m in net if isinstance(m, nn.Linear)]
    return ([m.weight.detach().numpy().T.copy() for m in lins], [m.bias.detach().numpy().copy() for m in lins])
