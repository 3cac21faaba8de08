"""Model-free scorers reported next to the model: what a learned ranking must beat."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recsys.data.dataset import FIRST_ITEM_IDX
from recsys.evaluation.retrieval import RankResult, ScoreFn, rank_static_scores, static_order


def text_content_scores(history: torch.Tensor, lengths: torch.Tensor, text: torch.Tensor) -> ScoreFn:
    """Content-based scorer: cosine between an item's text embedding and the mean of the user's
    history texts (padding excluded). Needs no training, so it is the floor for cold items,
    which a two-tower model scores from their text alone."""
    unit = F.normalize(text.float(), dim=-1)
    valid = (torch.arange(history.shape[1], device=history.device)[None, :] < lengths[:, None]).float()
    profile = (unit[history] * valid[..., None]).sum(1) / lengths.clamp(min=1)[:, None].float()
    profile = F.normalize(profile, dim=-1)
    return lambda items: profile @ unit[items].T


def cold_first_random(ks: list[int], is_warm: np.ndarray) -> dict[str, float]:
    """``cold_first_random/recall@k``: the expected cold-target recall of a list that puts the
    catalog's cold items (no training interaction) first in a random order, min(1, k / cold
    items); ``n_cold_items`` beside it. What a cold metric earns without knowing anything but
    which items are new. ``is_warm`` is indexed by item_idx (padding rows first)."""
    n_cold = int((~np.asarray(is_warm, dtype=bool)[FIRST_ITEM_IDX:]).sum())
    if n_cold == 0:
        return {}
    return {"cold_first_random/n_cold_items": float(n_cold)} | {
        f"cold_first_random/recall@{k}": min(1.0, k / n_cold) for k in sorted(ks)
    }


class PopularityBaseline(nn.Module):
    """Train-count popularity, the same list for every user (minus their seen items).

    One sorted order serves every user instead of a pass over the catalog per user (half the
    evaluation time at 434K items); buffers only, never saved.
    """

    def __init__(self, train_count: np.ndarray):
        super().__init__()
        scores = torch.log1p(torch.as_tensor(np.asarray(train_count), dtype=torch.float32))
        self.register_buffer("scores", scores, persistent=False)
        self.register_buffer("order", static_order(scores), persistent=False)

    def rank(self, targets: torch.Tensor, seen: tuple[np.ndarray, np.ndarray], k_max: int) -> RankResult:
        return rank_static_scores(self.scores, targets, *seen, k_max, self.order)
