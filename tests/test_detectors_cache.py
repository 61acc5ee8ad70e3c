"""The ONNX encoder cache: first use builds it (progress on stderr), second use loads it, a corrupt
cache is rebuilt with a warning. Uses the committed artefacts; never trains."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest

from livecoach.models.encoder import EncoderCacheWarning, cache_path, load_encoder


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cache = tmp_path_factory.mktemp("encoder-cache")
    lines: list[str] = []
    t0 = time.perf_counter()
    enc = load_encoder(cache_dir=cache, precision="fp32", threads=1, progress=lines.append)
    return cache, enc, lines, time.perf_counter() - t0


def test_first_use_builds_the_cache_and_shows_progress(built):
    cache, enc, lines, seconds = built
    path = cache_path(cache, "fp32")
    assert path.exists() and path.with_suffix(".json").exists()
    assert any("building the ONNX encoder" in m for m in lines)
    assert any("[4/4] verifying" in m for m in lines) and any("done in" in m for m in lines)
    print(f"first-use export took {seconds:.1f} s")


def test_second_use_loads_without_rebuilding(built):
    cache, enc, _, _ = built
    before = cache_path(cache, "fp32").stat().st_mtime_ns
    lines: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", EncoderCacheWarning)
        again = load_encoder(cache_dir=cache, precision="fp32", threads=1, progress=lines.append)
    assert lines == []
    assert cache_path(cache, "fp32").stat().st_mtime_ns == before
    a = enc.encode(["i lost my debit card can you send me a new one"]).emb
    b = again.encode(["i lost my debit card can you send me a new one"]).emb
    assert np.allclose(a, b, atol=1e-6)


def test_a_corrupt_cache_is_rebuilt_with_a_warning(built):
    cache, enc, _, _ = built
    path = cache_path(cache, "fp32")
    data = bytearray(path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 4096] = b"\0" * 4096  # a damaged block in the middle
    path.write_bytes(bytes(data))
    lines: list[str] = []
    with pytest.warns(EncoderCacheWarning, match="corrupt"):
        rebuilt = load_encoder(cache_dir=cache, precision="fp32", threads=1, progress=lines.append)
    assert any("rebuilding" in m for m in lines) and any("done in" in m for m in lines)
    text = ["could i get your home address too"]
    out = rebuilt.encode(text)
    assert np.allclose(out.emb, enc.encode(text).emb, atol=1e-5)
    assert out.emb.shape == (1, 384) and out.tuned.shape == (1, 384)
    assert abs(float(np.linalg.norm(out.emb[0])) - 1) < 1e-4


def test_each_branch_session_gives_exactly_what_the_full_graph_gives(built):
    import onnxruntime as ort

    from livecoach.models.encoder import _pad

    cache, enc, _, _ = built
    assert {o: [x.name for x in s.get_outputs()] for o, s in enc.sessions.items()} == {"emb": ["emb"],
                                                                                         "tuned": ["tuned"]}
    texts = ["i want to speak to a manager", "ok", "thank you for calling, is there anything else i can help with"]
    ids, mask = _pad(enc.tokenizer, texts)
    full = ort.InferenceSession(str(cache_path(cache, "fp32")), providers=["CPUExecutionProvider"])
    emb, tuned = full.run(["emb", "tuned"], {"input_ids": ids, "attention_mask": mask})
    only = enc.encode(texts, outputs=("tuned",))
    assert only.emb is None and np.allclose(only.tuned, tuned, atol=1e-5)
    assert np.allclose(enc.encode(texts, outputs=("emb",)).emb, emb, atol=1e-5)
    with pytest.raises(ValueError, match="unknown encoder output"):
        enc.encode(texts, outputs=("pooled",))


# ---- batching: length buckets, parallel runs ---------------------------------------------------------


def test_plan_chunks_covers_every_item_and_splits_off_a_long_outlier():
    from livecoach.models.encoder import plan_chunks

    lens = [4, 5, 5, 6, 7, 8, 9, 9, 10, 12, 61]
    chunks = plan_chunks(lens)
    assert chunks[0][0] == 0 and chunks[-1][1] == len(lens)
    assert all(a < b for a, b in chunks) and all(b == a2 for (_, b), (a2, _) in zip(chunks, chunks[1:]))
    assert (10, 11) in chunks  # the 61-token turn is not allowed to pad ten short ones to 61
    assert plan_chunks([9] * 32) == [(0, 32)]  # equal lengths: one run (no per-run overhead to pay twice)
    assert plan_chunks([]) == []


def test_a_mixed_length_batch_matches_one_at_a_time_in_input_order(built):
    from livecoach.models.data import harper_valley_calls
    from livecoach.models.encoder import Encoder, cache_path
    from livecoach.signals._behaviours import clean_text

    cache, _, _, _ = built
    turns = [clean_text(t["text"]) for c in harper_valley_calls()[:3] for t in c["turns"]]
    texts = [t for t in turns if t][:40]
    assert max(map(len, texts)) > 4 * min(map(len, texts))  # really mixed lengths
    enc = Encoder(cache_path(cache, "fp32"), threads=2, precision="fp32")  # two parallel runs
    batch = enc.encode(texts)
    for i, t in enumerate(texts):
        one = enc.encode([t])
        assert float(batch.emb[i] @ one.emb[0]) > 0.999
        cos = batch.tuned[i] @ one.tuned[0] / np.linalg.norm(batch.tuned[i]) / np.linalg.norm(one.tuned[0])
        assert cos > 0.999
