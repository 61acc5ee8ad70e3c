"""Models: encoder loading and ONNX export, heads, training and evaluation.

Tier-0 (see artefacts/MODEL_CARD.md):
    ``load_encoder(settings)`` -> :class:`Encoder` (``encode(texts)`` -> ``.emb``, ``.tuned``), the
    ONNX export of all-MiniLM-L6-v2 + a sentiment adapter, built on first use in ``settings.cache_dir``;
    ``load_heads()`` -> {"sentiment", "intent", "abuse"} numpy heads; ``MicroBatcher`` shares one
    encoder among concurrent calls. CLI: ``livecoach models train | eval | predict``.
Heavy modules (torch) are imported only by training and export.
"""

from livecoach.models.batcher import MicroBatcher
from livecoach.models.encoder import Encoder, EncoderCacheWarning, load_encoder, minilm_dir
from livecoach.models.heads import load_heads

__all__ = ["Encoder", "EncoderCacheWarning", "MicroBatcher", "load_encoder", "load_heads", "minilm_dir"]
