"""Validation and test of a retrieval model, apart from its training (as RecBole keeps trainer and
evaluator apart): every catalog item ranked for each row of a split, the user's earlier items
excluded, popularity (and optionally a text-content scorer) ranked by the same rules, accumulated
in metrics that reduce exactly across processes."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from recsys.data.dataset import PreparedDataset, item_arrays
from recsys.data.seen_items import SeenItems
from recsys.evaluation.baselines import PopularityBaseline, cold_first_random
from recsys.evaluation.metrics import FullCatalogRetrievalMetrics
from recsys.evaluation.retrieval import RankResult, ScoreFn, rank_full_catalog

DEFAULT_KS = (10, 20, 50, 100, 500, 1000, 1500, 2000)


class SplitRanker:
    """Full-catalog ranks and top-K lists for rows of one split (evaluation and stage-two
    candidate lists rank alike)."""

    def __init__(self, dataset: PreparedDataset, split: str, chunk_size: int = 65_536):
        self.n_items = dataset.n_items
        self.seen = SeenItems.for_split(dataset, split)
        self.chunk_size = chunk_size

    def seen_pairs(self, rows: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(row in batch, item_idx) pairs excluded for these rows of the split."""
        return self.seen.batch(rows.cpu().numpy())

    def rank(
        self,
        scores_of: ScoreFn,
        targets: torch.Tensor,
        seen: tuple[np.ndarray, np.ndarray],
        k_max: int,
    ) -> RankResult:
        return rank_full_catalog(scores_of, targets, self.n_items, *seen, k_max, self.chunk_size)


class RetrievalEvaluator(nn.Module):
    """``validate`` / ``val_results`` and ``test`` / ``test_results`` of a retrieval model whose
    scores come as a function of item ids (``ScoreFn``, computed by the caller in the precision it
    chooses); metrics are submodules (device moves, distributed reduction), never saved."""

    def __init__(
        self,
        dataset: PreparedDataset,
        text: np.ndarray,
        val_ks: list[int] | None = None,
        test_ks: list[int] | None = None,
        chunk_size: int = 65_536,
        text_baseline: bool = False,
    ):
        super().__init__()
        self._dataset, self.chunk_size = dataset, chunk_size
        self._rankers: dict[str, SplitRanker] = {}
        self.val_segments: dict[str, dict[str, float]] = {}  # the last validation, by segment
        arrays = item_arrays(dataset)
        n_items = dataset.n_items
        self.popularity = PopularityBaseline(arrays["train_count"])
        self.val_metrics = FullCatalogRetrievalMetrics(
            list(val_ks or [10, 20, 50]), n_items, arrays["is_warm"], list_metrics=False
        )
        list_args = (list(test_ks or DEFAULT_KS), n_items, arrays["is_warm"], arrays["train_count"], text)
        self.test_metrics = FullCatalogRetrievalMetrics(*list_args)  # shares `text`, no copy
        self.popularity_metrics = FullCatalogRetrievalMetrics(*list_args)
        # text_baseline: a model-free content scorer ranked like the model (cold-start reference)
        self.content_metrics = FullCatalogRetrievalMetrics(*list_args) if text_baseline else None

    def ranker(self, split: str) -> SplitRanker:
        if split not in self._rankers:
            self._rankers[split] = SplitRanker(self._dataset, split, self.chunk_size)
        return self._rankers[split]

    def validate(self, scores_of: ScoreFn, batch: dict[str, torch.Tensor]) -> None:
        ranker = self.ranker("val")
        result = ranker.rank(scores_of, batch["target"], ranker.seen_pairs(batch["row"]), 0)  # ranks only
        self.val_metrics.update(result.ranks, batch["target"])

    def val_results(self) -> dict[str, float]:
        """The validation metrics over every user (what selects checkpoints); the cold and warm
        segments of the same pass stay readable in ``val_segments``."""
        self.val_segments = self.val_metrics.compute()
        self.val_metrics.reset()
        return {f"val/{k}": v for k, v in self.val_segments["all"].items() if k != "n_users"}

    def test(
        self, scores_of: ScoreFn, batch: dict[str, torch.Tensor], content_of: ScoreFn | None = None
    ) -> None:
        ranker, targets = self.ranker("test"), batch["target"]
        k_max = max(self.test_metrics.ks)
        seen = ranker.seen_pairs(batch["row"])  # one lookup for every ranking below
        result = ranker.rank(scores_of, targets, seen, k_max)
        self.test_metrics.update(result.ranks, targets, result.topk)
        pop = self.popularity.rank(targets, seen, k_max)
        self.popularity_metrics.update(pop.ranks, targets, pop.topk)
        if self.content_metrics is not None and content_of is not None:
            content = ranker.rank(content_of, targets, seen, k_max)
            self.content_metrics.update(content.ranks, targets, content.topk)

    def test_results(self) -> tuple[dict[str, float], dict[str, dict]]:
        """(flat results, details for plots: rank curves up to K=1000 and what lands in top-10 lists)."""
        results = self.test_metrics.flat_results("retrieval") | self.popularity_metrics.flat_results(
            "popularity"
        )
        if results.get("retrieval_cold/n_users"):
            results |= cold_first_random(self.test_metrics.ks, self.test_metrics.is_warm.cpu().numpy())
        if self.content_metrics is not None:
            results |= self.content_metrics.flat_results("text_content")
            self.content_metrics.reset()
        details = {
            "retrieval": self.test_metrics.snapshot(),
            "popularity": self.popularity_metrics.snapshot(),
        }
        self.test_metrics.reset()
        self.popularity_metrics.reset()
        return results, details
