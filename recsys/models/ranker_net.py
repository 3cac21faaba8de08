"""The second-stage ranker network: plain torch, so the serving graph loads it without training code.

``features`` arrive as one [B, K, F_all] tensor in ``recsys.features.ranker_features.FEATURES``
order; ``feature_columns`` picks the ones this ranker reads (``feature_columns(names)`` there).
With ``attributes`` (an ``AttributeLayout`` as a dict) the declared attribute columns follow
``FEATURES``: categorical codes are embedded (``ATTRIBUTE_DIM`` each), numeric values standardized
with statistics of the training lists (``set_numeric_statistics``; absent values read as the mean).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from recsys.features.attribute_features import KINDS, AttributeLayout
from recsys.features.ranker_features import FEATURES
from recsys.models.cold_slots import check_policy, final_scores

_SCORE = FEATURES.index("score")
ATTRIBUTE_DIM = 8  # each categorical attribute's embedding width


class RankerNet(nn.Module):
    """``forward(user [B, d], items [B, K, d], features [B, K, F_all]) -> logits [B, K]``.

    ``cold_candidates`` is how the final list treats cold candidates (``recsys.models.cold_slots``):
    it travels with the net so the serving graph orders a list as the test did.

    ``prior_scale`` > 0 makes the net a correction of retrieval: logits = prior_scale · score +
    what it learns, with the learned part starting at zero. With ``1 / temperature`` of the
    retrieval model the untrained ranker orders every list exactly as retrieval did, so a ranker
    fitted on a few hundred lists moves away from retrieval only as far as its data carry it.
    """

    def __init__(
        self,
        embedding_dim: int,
        feature_columns: list[int],
        *,
        use_embeddings: bool,
        hidden: list[int] | tuple[int, ...],
        dropout: float,
        cold_candidates: str,
        prior_scale: float,
        attributes: dict | None = None,
    ):
        super().__init__()
        if prior_scale < 0:
            raise ValueError(f"prior_scale must be >= 0, got {prior_scale}")
        if not (feature_columns or use_embeddings):
            raise ValueError("the ranker needs features, embeddings, or both")
        check_policy(cold_candidates)
        self.cold_candidates = cold_candidates
        self.use_embeddings = use_embeddings
        self.register_buffer("feature_columns", torch.tensor(list(feature_columns), dtype=torch.long))
        width = (
            3 * embedding_dim * use_embeddings
            + len(feature_columns)
            + self._attribute_inputs_init(attributes)
        )
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(width, h), nn.LayerNorm(h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)
        self.wide = nn.Linear(len(feature_columns), 1, bias=False) if len(feature_columns) else None
        self.prior_scale = float(prior_scale)
        if self.prior_scale > 0:  # the learned correction starts at zero: the untrained net is retrieval
            for layer in (self.mlp[-1], self.wide):
                if layer is not None:
                    nn.init.zeros_(layer.weight)
                    if layer.bias is not None:
                        nn.init.zeros_(layer.bias)

    def _attribute_inputs_init(self, attributes: dict | None) -> int:
        """Embeddings and statistics buffers of the declared attributes; their input width."""
        layout = AttributeLayout.from_dict(attributes)
        self.attributes = layout.as_dict()  # plain values: the bundle's ranker config repeats them
        code_columns, numeric_columns, sizes = [], [], []
        column = len(FEATURES)
        for kind in KINDS:
            for size in layout.vocab_sizes(kind):
                code_columns.append(column)
                sizes.append(size)
                column += 1
            for _ in layout.numeric[kind]:
                numeric_columns.append(column)
                column += 1
        # every categorical column's rows in one table (column j's code c is row offsets[j] + c): one
        # lookup a request instead of one per column
        self.attribute_embedding = nn.Embedding(sum(sizes), ATTRIBUTE_DIM) if sizes else None
        offsets = torch.tensor([0, *sizes[:-1]], dtype=torch.long).cumsum(0) if sizes else torch.zeros(0)
        self.register_buffer("code_offsets", offsets.long(), persistent=False)
        # derived from the layout (not saved); the statistics are saved only where there are numeric
        # attributes, so rankers and bundles written before attributes existed load unchanged
        self.register_buffer("code_columns", torch.tensor(code_columns, dtype=torch.long), persistent=False)
        self.register_buffer(
            "numeric_columns", torch.tensor(numeric_columns, dtype=torch.long), persistent=False
        )
        keep = bool(numeric_columns)
        self.register_buffer("numeric_mean", torch.zeros(len(numeric_columns)), persistent=keep)
        self.register_buffer("numeric_std", torch.ones(len(numeric_columns)), persistent=keep)
        return ATTRIBUTE_DIM * len(sizes) + len(numeric_columns)

    @property
    def has_attributes(self) -> bool:
        return len(self.code_columns) + len(self.numeric_columns) > 0

    def set_numeric_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Standardize numeric attributes with these (the training lists'); a constant column: std 1."""
        self.numeric_mean.copy_(torch.nan_to_num(mean.float(), nan=0.0))
        self.numeric_std.copy_(
            torch.where(std.float() > 1e-6, std.float(), torch.ones_like(self.numeric_std))
        )

    def _inputs(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the picked dense features, those plus the attribute inputs): the wide path reads the
        first, the MLP the second."""
        dense = features.index_select(-1, self.feature_columns)
        if not self.has_attributes:
            return dense, dense
        parts = [dense]
        if self.attribute_embedding is not None:
            codes = features.index_select(-1, self.code_columns).long() + self.code_offsets
            parts.append(self.attribute_embedding(codes).flatten(-2))
        numbers = features.index_select(-1, self.numeric_columns)
        parts.append(((numbers - self.numeric_mean) / self.numeric_std).nan_to_num(0.0))
        return dense, torch.cat(parts, dim=-1)

    def score_user(
        self, user: torch.Tensor, items: torch.Tensor | None, features: torch.Tensor
    ) -> torch.Tensor:
        """``forward`` for one user ([d], [K, d], [K, F_all]) with the first layer factored
        (``items`` may be None when the net reads no embeddings).

        W·[u, i, u⊙i, f] = W_u·u + (W_i + W_h·diag(u))·i + W_f·f: the user part is computed once and
        the item part is a [K, d] × [d, h] product instead of [K, 3d] × [3d, h] (serving latency).
        """
        dense, inputs = self._inputs(features)
        first: nn.Linear = self.mlp[0]
        if not self.use_embeddings:
            return self._add_wide(self._after_first(first(inputs)), dense) + self._prior(features)
        d = user.shape[-1]
        w = first.weight
        # fused ops (addcmul/addmv/addmm) and no Dropout calls in eval: 0.60 vs 0.72 ms at K = 200, d = 256
        item_weight = torch.addcmul(w[:, d : 2 * d], w[:, 2 * d : 3 * d], user[None, :])  # W_i + W_h·diag(u)
        hidden = torch.addmm(torch.addmv(first.bias, w[:, :d], user), items, item_weight.T)
        hidden = hidden.addmm_(inputs, w[:, 3 * d :].T)
        return self._add_wide(self._after_first(hidden), dense) + self._prior(features)

    def _after_first(self, hidden: torch.Tensor) -> torch.Tensor:
        """The layers after the first Linear, without the Dropout calls in eval: [K, h] -> [K]."""
        for layer in itertools.islice(self.mlp, 1, None):  # (slicing builds a new Sequential a call)
            if self.training or not isinstance(layer, nn.Dropout):
                hidden = layer(hidden)
        return hidden.squeeze(-1)

    def forward(self, user: torch.Tensor, items: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        dense, inputs = self._inputs(features)
        parts = [inputs]
        if self.use_embeddings:
            u = user[:, None, :].expand_as(items)
            parts = [u, items, u * items, inputs]
        return self._add_wide(self.mlp(torch.cat(parts, dim=-1)).squeeze(-1), dense) + self._prior(features)

    def final_scores(self, logits: torch.Tensor, is_cold: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, K] scores whose descending order is the served list (candidates in retrieval order)."""
        return final_scores(logits, is_cold, mask, self.cold_candidates)

    def _prior(self, features: torch.Tensor) -> torch.Tensor | float:
        return self.prior_scale * features[..., _SCORE] if self.prior_scale > 0 else 0.0

    def _add_wide(self, logits: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return logits if self.wide is None else logits + self.wide(dense).squeeze(-1)
