"""Retrieved candidate lists for the ranker: top-K over the full catalog, seen items excluded.

The positive is never injected: when retrieval misses the target, the list has no positive
(``target_pos = −1``), exactly as at serving time. Injecting it (as the seed did) teaches the
ranker that a low retrieval score marks the positive.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from rich.progress import track

from recsys.candidates.settings import CandidateSettings
from recsys.data.datamodules import RaggedRows
from recsys.data.dataset import PreparedDataset
from recsys.evaluation.retrieval_evaluator import SplitRanker
from recsys.features.attribute_features import Attributes
from recsys.features.ranker_features import InteractionTimeline, ItemFeatureTables, candidate_features
from recsys.features.transitions import ItemTransitions, TimedTransitions

log = logging.getLogger(__name__)


@dataclass
class CandidateSet:
    """One row per (user, target): the retrieved list and everything the ranker reads."""

    user_idx: np.ndarray  # [N]
    user_vectors: torch.Tensor  # [N, d]
    candidates: torch.Tensor  # [N, K] item_idx, retrieval order; 0 = no candidate (catalog exhausted)
    features: torch.Tensor  # [N, K, F]
    targets: torch.Tensor  # [N]
    target_pos: torch.Tensor  # [N] position of the target in ``candidates``, −1 when not retrieved
    retrieval_rank: torch.Tensor  # [N] full-catalog rank of the target (pessimistic ties)

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, rows: np.ndarray) -> CandidateSet:
        idx = torch.as_tensor(rows, dtype=torch.long)
        return CandidateSet(
            self.user_idx[rows],
            *(t[idx] for t in (self.user_vectors, self.candidates, self.features, self.targets)),
            self.target_pos[idx],
            self.retrieval_rank[idx],
        )


@torch.no_grad()
def build_candidates(
    model,
    dataset: PreparedDataset,
    split: str,
    settings: CandidateSettings,
    tables: ItemFeatureTables,
    timeline: InteractionTimeline,
    transitions: ItemTransitions | TimedTransitions,
    batch_size: int = 512,
    catalog: torch.Tensor | None = None,
    attributes: Attributes | None = None,
) -> CandidateSet:
    """Top-K lists of a trained ``TwoTowerModule`` for every row of ``split`` (val or test);
    ``attributes``: the declared attribute columns follow the features (``attribute_features``)."""
    k, last_n = settings.num_candidates, settings.last_n
    model.eval()
    rows = RaggedRows.from_split(dataset, split, settings.max_history)
    timestamps = dataset.read_split(split, ["timestamp"])["timestamp"].to_numpy()
    ranker = SplitRanker(dataset, split, model.hparams.eval_chunk_size)  # ranks as evaluation does
    catalog = model.encode_catalog() if catalog is None else catalog
    # ordinal time (id-only sequence files): positions within a user say nothing about other
    # users' clocks, so counts "in the window before the request" have no meaning
    clock = not dataset.time_is_ordinal
    if not clock:
        log.warning(
            "%s: time is ordinal; recent_popularity and item_age are 0 and popularity is the training count",
            split,
        )
    parts: dict[str, list] = {n: [] for n in ("user", "cand", "feat", "pos", "rank")}
    for lo in track(range(0, len(rows), batch_size), description=f"candidates ({split})", transient=True):
        idx = list(range(lo, min(lo + batch_size, len(rows))))
        batch = rows[idx]
        user = model.encode_users(batch["history"], batch["lengths"]).float()
        result = ranker.rank(
            lambda items, u=user: model.retrieval_scores(u, catalog, items),
            batch["target"],
            ranker.seen_pairs(batch["row"]),
            k,
        )
        cand = result.topk
        scores = model.retrieval_scores(user, catalog, cand)
        if cand.shape[1] < k:
            cand = torch.nn.functional.pad(cand, (0, k - cand.shape[1]))
            scores = torch.nn.functional.pad(scores, (0, k - scores.shape[1]))
        scores = torch.where(cand == 0, torch.zeros_like(scores), scores)
        as_of = timestamps[idx]
        recent = (
            torch.from_numpy(timeline.counts(cand.numpy(), as_of, settings.window_ms))
            if clock
            else torch.zeros(cand.shape)
        )
        popularity = (
            torch.from_numpy(timeline.counts(cand.numpy(), as_of, None))
            if settings.features_as_of_request and clock
            else None
        )
        age = torch.from_numpy(timeline.age_days(cand.numpy(), as_of)) if clock else None
        feats = candidate_features(
            tables,
            cand,
            scores,
            recent,
            transitions,
            batch["history"],
            batch["lengths"],
            last_n,
            as_of=as_of,
            popularity=popularity,
            age_days=age,
        )
        if attributes is not None and attributes.layout.width:
            feats = torch.cat([feats, attributes.values(cand, rows.users[idx])], dim=-1)
        hit = cand == batch["target"][:, None]
        pos = torch.where(hit.any(dim=1), hit.float().argmax(dim=1), torch.full_like(batch["target"], -1))
        for name, value in zip(parts, (user, cand, feats, pos, result.ranks), strict=True):
            parts[name].append(value)
    return CandidateSet(
        rows.users.numpy(),
        torch.cat(parts["user"]),
        torch.cat(parts["cand"]),
        torch.cat(parts["feat"]),
        rows.targets.clone(),
        torch.cat(parts["pos"]),
        torch.cat(parts["rank"]),
    )
