"""A static text encoder distilled offline from the packaged sentence-transformer (model2vec's recipe).

MiniLM encodes ~70 items/s on a CPU without native bf16: 1 h 45 min for a 434K-item catalog.
A static model replaces the transformer with one vector per vocabulary token and a mean over a
text's tokens. Distillation, written here in a few lines rather than through ``model2vec[distill]``
(which pins an older ``transformers`` than the one installed):

1. every token of the teacher's vocabulary goes through the teacher as ``[CLS] token [SEP]``,
   keeping the teacher's own pooled, normalized output;
2. PCA to ``dim`` components (centred), which also removes the common direction all single-token
   outputs share;
3. SIF weighting ``a / (a + p)`` with ``p`` a Zipf proxy for the token's frequency (its rank in the
   vocabulary), so frequent tokens weigh less in the mean, as in model2vec.

The table is built once per (teacher, settings) and cached as sentence-transformers'
``StaticEmbedding`` files (``model.safetensors`` + ``tokenizer.json``, written atomically);
inference is that well-kept module (tokenize, EmbeddingBag mean), then L2 normalization.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from recsys.data.text_embeddings import TextEncoder, resolve_model_path
from recsys.utils.artifacts import atomic_directory

log = logging.getLogger(__name__)

FORMAT = 1  # bumped when the distillation changes: the cache key changes with it


def sif_weights(n: int, coefficient: float) -> np.ndarray:
    """model2vec's weights for n tokens in (approximate) frequency order: a / (a + p_rank)."""
    inverse_rank = 1.0 / np.arange(1, n + 1)
    return coefficient / (coefficient + inverse_rank / inverse_rank.sum())


def pca(x: np.ndarray, dim: int) -> np.ndarray:
    """The first ``dim`` principal components of the rows of ``x`` (signs fixed: deterministic)."""
    centred = x - x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    components = vt[:dim]
    components *= np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])[:, None]
    return centred @ components.T


@torch.no_grad()
def token_outputs(teacher, token_ids: np.ndarray, cls_id: int, sep_id: int, batch_size: int) -> np.ndarray:
    """The teacher's sentence embedding of ``[CLS] t [SEP]`` for every token id t."""
    out = []
    for lo in range(0, len(token_ids), batch_size):
        ids = torch.as_tensor(token_ids[lo : lo + batch_size], dtype=torch.long)
        input_ids = torch.stack([torch.full_like(ids, cls_id), ids, torch.full_like(ids, sep_id)], dim=1)
        features = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        if "token_type_ids" in teacher.tokenizer.model_input_names:
            features["token_type_ids"] = torch.zeros_like(input_ids)
        out.append(teacher(features)["sentence_embedding"].float().numpy())
    return np.concatenate(out)


def distill(teacher, dim: int, sif_coefficient: float, batch_size: int = 512) -> tuple[object, np.ndarray]:
    """(fast tokenizer, [vocab, dim] float32 table) of a static model distilled from ``teacher``."""
    tokenizer = teacher.tokenizer
    vocab_size = len(tokenizer)
    special = set(tokenizer.all_special_ids)
    tokens = np.array([i for i in range(vocab_size) if i not in special], dtype=np.int64)
    outputs = token_outputs(teacher, tokens, tokenizer.cls_token_id, tokenizer.sep_token_id, batch_size)
    reduced = pca(outputs.astype(np.float64), min(dim, outputs.shape[1]))
    reduced *= sif_weights(len(tokens), sif_coefficient)[:, None]
    table = np.zeros((vocab_size, reduced.shape[1]), dtype=np.float32)  # special tokens stay zero
    table[tokens] = reduced
    return tokenizer.backend_tokenizer, table


class StaticTextEncoder(TextEncoder):
    """Token table distilled from ``teacher`` (cached under ``cache_dir``), mean-pooled, normalized."""

    def __init__(
        self,
        teacher: str = "sentence-transformers/all-MiniLM-L6-v2",
        dim: int = 256,
        sif_coefficient: float = 1e-4,
        cache_dir: str | None = None,
        batch_size: int = 4096,
    ):
        if dim < 1 or sif_coefficient <= 0:
            raise ValueError(
                f"static text encoder needs dim >= 1 and sif_coefficient > 0, got {dim}, {sif_coefficient}"
            )
        self.teacher = teacher
        self.dim = dim
        self.sif_coefficient = sif_coefficient
        self.cache_dir = Path(cache_dir or Path.home() / ".cache" / "recsys" / "static_text")
        self.batch_size = batch_size
        self.precision = "fp32"
        self._model = None
        self.distill_seconds: float | None = None  # set when this instance built the table

    @property
    def cache_key(self) -> str:
        return json.dumps(
            {"static": self.teacher, "dim": self.dim, "sif": self.sif_coefficient, "format": FORMAT},
            sort_keys=True,
        )

    @property
    def model_dir(self) -> Path:
        return self.cache_dir / hashlib.sha256(self.cache_key.encode()).hexdigest()[:16]

    def load_teacher(self):
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(resolve_model_path(self.teacher), device="cpu")

    @property
    def model(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer
            from sentence_transformers.sentence_transformer.modules import StaticEmbedding

            if not (self.model_dir / "model.safetensors").is_file():
                self.build()
            static = StaticEmbedding.load(str(self.model_dir))
            self._model = SentenceTransformer(modules=[static], device="cpu")
        return self._model

    def build(self) -> Path:
        """Distil the table and write it atomically (a reader never sees half a model)."""
        from sentence_transformers.sentence_transformer.modules import StaticEmbedding

        started = time.perf_counter()
        log.info("distilling a static text encoder from %s, once (cache: %s)", self.teacher, self.model_dir)
        tokenizer, table = distill(self.load_teacher(), self.dim, self.sif_coefficient)
        with atomic_directory(self.model_dir) as staging:
            StaticEmbedding(tokenizer, embedding_weights=table).save(str(staging))
            (staging / "recsys_static.json").write_text(self.cache_key)
        self.distill_seconds = round(time.perf_counter() - started, 2)
        log.info("static text encoder distilled in %.1f s", self.distill_seconds)
        return self.model_dir

    def encode(self, texts: list[str]) -> np.ndarray:
        out = self.model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        return np.asarray(out, dtype=np.float32)
