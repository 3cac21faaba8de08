"""Model-free scorers reported next to the model: what a learned ranking must beat."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recsys.evaluation.retrieval import ScoreFn


def text_content_scores(history: torch.Tensor, lengths: torch.Tensor, text: torch.Tensor) -> ScoreFn:
    """Content-based scorer: cosine between an item's text embedding and the mean of the user's
    history texts (padding excluded). Needs no training, so it is the floor for cold items,
    which a two-tower model scores from their text alone."""
    unit = F.normalize(text.float(), dim=-1)
    valid = (torch.arange(history.shape[1], device=history.device)[None, :] < lengths[:, None]).float()
    profile = (unit[history] * valid[..., None]).sum(1) / lengths.clamp(min=1)[:, None].float()
    profile = F.normalize(profile, dim=-1)
    return lambda items: profile @ unit[items].T
