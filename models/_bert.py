"""A small, dependency-free PyTorch BERT for all-MiniLM-L6-v2, with a tuned upper branch.

Only used to train (``livecoach models train``) and to export the ONNX graph once into the cache;
at run time the encoder is onnxruntime alone. Writing the forward pass out (instead of calling
``transformers``) keeps the exported graph independent of the transformers version.

The graph (:class:`Tier0Net`) shares the embeddings and the lower ``split`` layers, then runs two
upper branches:

* the original upper layers -> mean pooling -> L2 normalisation: ``emb``, the sentence embedding
  of all-MiniLM-L6-v2 unchanged (intent heads, agent-behaviour exemplars), and
* a copy of the upper layers with low-rank adapters (LoRA) fine-tuned for sentiment -> mean
  pooling: ``tuned`` (the sentiment head reads it).

So one pass per utterance serves every head, at about (6 + (6 - split)) / 6 of the plain cost.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

HIDDEN, HEADS, FFN, LAYERS = 384, 12, 1536, 6


class LoRALinear(nn.Module):
    """``base(x) + (x A^T B^T) * scale`` with ``base`` frozen."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float = 16.0):
        super().__init__()
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.rank = rank
        self.scale = alpha / rank
        self.A = nn.Parameter(torch.randn(rank, base.in_features) / math.sqrt(base.in_features))
        self.B = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.A.t() @ self.B.t()) * self.scale

    def merged(self) -> nn.Linear:
        out = nn.Linear(self.base.in_features, self.base.out_features)
        with torch.no_grad():
            out.weight.copy_(self.base.weight + (self.B @ self.A) * self.scale)
            out.bias.copy_(self.base.bias)
        return out


class Layer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.query = nn.Linear(HIDDEN, HIDDEN)
        self.key = nn.Linear(HIDDEN, HIDDEN)
        self.value = nn.Linear(HIDDEN, HIDDEN)
        self.attn_out = nn.Linear(HIDDEN, HIDDEN)
        self.attn_norm = nn.LayerNorm(HIDDEN, eps=1e-12)
        self.inter = nn.Linear(HIDDEN, FFN)
        self.out = nn.Linear(FFN, HIDDEN)
        self.out_norm = nn.LayerNorm(HIDDEN, eps=1e-12)
        self.dropout = nn.Dropout(0.1)

    def forward(self, h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, s, _ = h.shape
        d = HIDDEN // HEADS

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(b, s, HEADS, d).transpose(1, 2)

        q, k, v = split(self.query(h)), split(self.key(h)), split(self.value(h))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d) + bias
        ctx = (self.dropout(scores.softmax(-1)) @ v).transpose(1, 2).reshape(b, s, HIDDEN)
        h = self.attn_norm(h + self.dropout(self.attn_out(ctx)))
        ff = self.out(nn.functional.gelu(self.inter(h)))
        return self.out_norm(h + self.dropout(ff))

    def add_lora(self, rank: int, names: tuple[str, ...] = ("query", "value", "attn_out", "inter", "out")) -> None:
        for n in names:
            setattr(self, n, LoRALinear(getattr(self, n), rank))

    def merge_lora(self) -> None:
        for n, m in list(self.named_children()):
            if isinstance(m, LoRALinear):
                setattr(self, n, m.merged())


class Embeddings(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.word = nn.Embedding(30522, HIDDEN)
        self.position = nn.Embedding(512, HIDDEN)
        self.token_type = nn.Embedding(2, HIDDEN)
        self.norm = nn.LayerNorm(HIDDEN, eps=1e-12)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
        return self.norm(self.word(ids) + self.position(pos) + self.token_type.weight[0])


def mean_pool(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp(min=1e-9)


class Tier0Net(nn.Module):
    """Shared lower layers, original upper branch (``emb``) and tuned upper branch (``tuned``)."""

    def __init__(self, split: int = 3) -> None:
        super().__init__()
        self.split = split
        self.embeddings = Embeddings()
        self.layers = nn.ModuleList(Layer() for _ in range(LAYERS))
        self.tuned = nn.ModuleList()

    def attach_tuned_branch(self, rank: int) -> None:
        self.tuned = nn.ModuleList(copy.deepcopy(self.layers[i]) for i in range(self.split, LAYERS))
        for layer in self.tuned:
            for p in layer.parameters():
                p.requires_grad_(False)
            layer.add_lora(rank)

    def lower(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bias = ((1.0 - mask.to(torch.float32)) * -10000.0)[:, None, None, :]
        h = self.embeddings(ids)
        for layer in self.layers[: self.split]:
            h = layer(h, bias)
        return h, bias

    def upper_tuned(self, h: torch.Tensor, bias: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for layer in self.tuned:
            h = layer(h, bias)
        return mean_pool(h, mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        h, bias = self.lower(input_ids, attention_mask)
        a = h
        for layer in self.layers[self.split:]:
            a = layer(a, bias)
        emb = nn.functional.normalize(mean_pool(a, attention_mask), dim=-1)
        if len(self.tuned) == 0:
            return emb, mean_pool(a, attention_mask)
        return emb, self.upper_tuned(h, bias, attention_mask)

    # ---- weights -------------------------------------------------------------------------------

    def load_minilm(self, model_dir: Path) -> "Tier0Net":
        from safetensors.numpy import load_file

        w = load_file(str(Path(model_dir) / "model.safetensors"))
        t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in w.items()}
        with torch.no_grad():
            e = self.embeddings
            e.word.weight.copy_(t["embeddings.word_embeddings.weight"])
            e.position.weight.copy_(t["embeddings.position_embeddings.weight"])
            e.token_type.weight.copy_(t["embeddings.token_type_embeddings.weight"])
            e.norm.weight.copy_(t["embeddings.LayerNorm.weight"])
            e.norm.bias.copy_(t["embeddings.LayerNorm.bias"])
            names = {
                "query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
                "attn_out": "attention.output.dense", "attn_norm": "attention.output.LayerNorm",
                "inter": "intermediate.dense", "out": "output.dense", "out_norm": "output.LayerNorm",
            }
            for i, layer in enumerate(self.layers):
                for ours, theirs in names.items():
                    mod = getattr(layer, ours)
                    mod.weight.copy_(t[f"encoder.layer.{i}.{theirs}.weight"])
                    mod.bias.copy_(t[f"encoder.layer.{i}.{theirs}.bias"])
        return self

    def lora_state(self) -> dict[str, np.ndarray]:
        """The adapter weights only (what ``models/artefacts`` keeps)."""
        out: dict[str, np.ndarray] = {}
        for i, layer in enumerate(self.tuned):
            for n, m in layer.named_children():
                if isinstance(m, LoRALinear):
                    out[f"tuned.{i}.{n}.A"] = m.A.detach().numpy().astype(np.float32)
                    out[f"tuned.{i}.{n}.B"] = m.B.detach().numpy().astype(np.float32)
        return out

    def load_lora(self, state: dict[str, np.ndarray], rank: int) -> None:
        self.attach_tuned_branch(rank)
        with torch.no_grad():
            for i, layer in enumerate(self.tuned):
                for n, m in layer.named_children():
                    if isinstance(m, LoRALinear):
                        m.A.copy_(torch.from_numpy(state[f"tuned.{i}.{n}.A"]))
                        m.B.copy_(torch.from_numpy(state[f"tuned.{i}.{n}.B"]))

    def merge_lora(self) -> None:
        for layer in self.tuned:
            layer.merge_lora()
