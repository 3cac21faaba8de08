"""The static text encoder: distilled from a tiny stand-in teacher, deterministic, cached, and equal
to its own recipe (PCA of the teacher's token outputs, SIF-weighted) on single-token texts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from recsys.data.static_text import StaticTextEncoder, pca, sif_weights
from recsys.data.text_encoders import encoder_from_key

WORDS = ["drama", "comedy", "war", "space", "love", "crime", "family", "music", "horror", "night"]


class TinyTeacher(torch.nn.Module):
    """A sentence-transformer stand-in: fixed random token vectors, mean-pooled, normalized."""

    def __init__(self):
        super().__init__()
        vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, **{w: i + 4 for i, w in enumerate(WORDS)}}
        backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
        backend.pre_tokenizer = pre_tokenizers.Whitespace()
        self.tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=backend,
            unk_token="[UNK]",
            pad_token="[PAD]",
            cls_token="[CLS]",
            sep_token="[SEP]",
        )
        self.table = torch.nn.Embedding(len(vocab), 12)
        torch.nn.init.normal_(self.table.weight, generator=torch.Generator().manual_seed(0))
        self.calls = 0

    def forward(self, features: dict) -> dict:
        self.calls += 1
        pooled = self.table(features["input_ids"]).mean(dim=1)
        return {"sentence_embedding": torch.nn.functional.normalize(pooled, dim=-1)}


@pytest.fixture()
def teachers(monkeypatch):
    made: list[TinyTeacher] = []

    def load(self):
        made.append(TinyTeacher())
        return made[-1]

    monkeypatch.setattr(StaticTextEncoder, "load_teacher", load)
    return made


def test_distillation_is_deterministic_and_cached(teachers, tmp_path, monkeypatch):
    texts = ["drama war night", "comedy love", "space horror music", "", "unknownword"]
    first = StaticTextEncoder(dim=4, cache_dir=str(tmp_path / "a")).encode(texts)
    assert len(teachers) == 1 and teachers[0].calls > 0
    assert first.shape == (5, 4) and first.dtype == np.float32
    norms = np.linalg.norm(first, axis=1)
    np.testing.assert_allclose(norms[[0, 1, 2]], 1.0, rtol=1e-5)
    assert not first[3].any() and not first[4].any()  # no known token: a zero row
    # the second encoder with the same settings reads the cache: no teacher at all
    monkeypatch.setattr(StaticTextEncoder, "load_teacher", lambda self: pytest.fail("teacher loaded again"))
    again = StaticTextEncoder(dim=4, cache_dir=str(tmp_path / "a")).encode(texts)
    np.testing.assert_array_equal(again, first)
    assert [p.name for p in (tmp_path / "a").iterdir()] == [StaticTextEncoder(dim=4).model_dir.name]


def test_a_fresh_distillation_gives_the_same_table_and_other_settings_another(teachers, tmp_path):
    texts = ["drama war night", "comedy love"]
    a = StaticTextEncoder(dim=4, cache_dir=str(tmp_path / "a")).encode(texts)
    b = StaticTextEncoder(dim=4, cache_dir=str(tmp_path / "b")).encode(texts)
    np.testing.assert_array_equal(a, b)
    assert StaticTextEncoder(dim=4).cache_key != StaticTextEncoder(dim=3).cache_key
    assert StaticTextEncoder(dim=3, cache_dir=str(tmp_path / "a")).encode(texts).shape == (2, 3)


def test_single_token_texts_follow_the_recipe(teachers, tmp_path):
    encoder = StaticTextEncoder(dim=4, sif_coefficient=0.05, cache_dir=str(tmp_path))
    got = encoder.encode(WORDS)
    teacher = TinyTeacher()  # same seed, same outputs
    ids = torch.arange(4, 4 + len(WORDS))
    rows = torch.stack([torch.full_like(ids, 2), ids, torch.full_like(ids, 3)], dim=1)
    outputs = teacher({"input_ids": rows})["sentence_embedding"].detach().numpy().astype(np.float64)
    expected = pca(outputs, 4) * sif_weights(len(WORDS), 0.05)[:, None]
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_sif_weights_fall_with_frequency_rank():
    w = sif_weights(1000, 1e-3)
    assert np.all(np.diff(w) > 0) and 0 < w[0] < w[-1] < 1


def test_encoder_is_rebuilt_from_its_manifest_key(tmp_path):
    encoder = StaticTextEncoder(dim=8, sif_coefficient=1e-3)
    rebuilt = encoder_from_key("StaticTextEncoder", encoder.cache_key)
    assert isinstance(rebuilt, StaticTextEncoder) and rebuilt.cache_key == encoder.cache_key


def test_a_bundle_carries_the_table_and_embeds_with_it_without_distilling(teachers, tmp_path, monkeypatch):
    from recsys.serving.bundle_writer import copy_static_text_table

    texts = ["drama war night", "comedy love"]
    encoder = StaticTextEncoder(dim=4, cache_dir=str(tmp_path / "cache"))
    expected = encoder.encode(texts)
    info = {"type": "StaticTextEncoder", "key": encoder.cache_key}
    copy_static_text_table(info, {"use_text": False}, tmp_path / "no_text", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "no_text").exists()  # an item tower without text needs no table
    copy_static_text_table(info, {"use_text": True}, tmp_path / "bundle", cache_dir=tmp_path / "cache")
    monkeypatch.setattr(StaticTextEncoder, "build", lambda self: pytest.fail("distilled again"))
    served = encoder_from_key(info["type"], info["key"], static_dir=tmp_path / "bundle")
    assert served.model_dir.parent == tmp_path / "bundle"
    np.testing.assert_array_equal(served.encode(texts), expected)
