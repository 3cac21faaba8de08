"""Validation and test of a second stage over retrieved candidate lists, apart from its training:
where the re-ranked list puts each target (two-stage), where retrieval put it, and list metrics
of the ranker's scores within each list. Metrics are submodules (device moves, distributed
reduction), never saved."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from recsys.data.dataset import PreparedDataset, item_arrays
from recsys.evaluation.baselines import cold_first_random
from recsys.evaluation.metrics import FullCatalogRetrievalMetrics
from recsys.evaluation.ranking import CandidateListMetrics, reranked, two_stage_ranks


class CandidateListEvaluator(nn.Module):
    """``validate`` / ``val_results`` and ``test`` / ``test_results`` of a ranker whose served
    order is ``final`` ([B, K] scores, descending) over each batch's candidate lists."""

    def __init__(self, dataset: PreparedDataset, test_ks: list[int], ranking_ks: list[int]):
        super().__init__()
        arrays = item_arrays(dataset)
        n, text = dataset.n_items, np.asarray(dataset.text_embeddings(mmap=False), dtype=np.float32)
        self.n_items = n
        list_args = (test_ks, n, arrays["is_warm"], arrays["train_count"], text)
        self.val_two_stage = FullCatalogRetrievalMetrics([10], n, arrays["is_warm"], list_metrics=False)
        self.val_retrieval = FullCatalogRetrievalMetrics([10], n, arrays["is_warm"], list_metrics=False)
        self.two_stage_metrics = FullCatalogRetrievalMetrics(*list_args)
        self.retrieval_metrics = FullCatalogRetrievalMetrics(*list_args)
        self.ranking_metrics = CandidateListMetrics(ranking_ks)

    def _ranks(self, batch: dict[str, torch.Tensor], final: torch.Tensor) -> torch.Tensor:
        return two_stage_ranks(final, batch["mask"], batch["target_pos"], self.n_items)

    def validate(self, batch: dict[str, torch.Tensor], final: torch.Tensor) -> None:
        self.val_two_stage.update(self._ranks(batch, final), batch["target"])
        self.val_retrieval.update(batch["retrieval_rank"], batch["target"])

    def val_results(self) -> dict[str, float]:
        two_stage = self.val_two_stage.compute()["all"]
        retrieval = self.val_retrieval.compute()["all"]
        self.val_two_stage.reset()
        self.val_retrieval.reset()
        return {"val/ndcg@10": two_stage["ndcg@10"], "val/retrieval_ndcg@10": retrieval["ndcg@10"]}

    def test(
        self,
        batch: dict[str, torch.Tensor],
        final: torch.Tensor,
        logits: torch.Tensor,
        list_ids: torch.Tensor,
    ) -> None:
        mask = batch["mask"]
        # a target past the K retrieved is a miss: two-stage MRR is cut at K and named mrr@K
        self.two_stage_metrics.mrr_cutoff = int(batch["candidates"].shape[1])
        self.two_stage_metrics.update(
            self._ranks(batch, final), batch["target"], reranked(final, batch["candidates"], mask)
        )
        self.retrieval_metrics.update(batch["retrieval_rank"], batch["target"], batch["candidates"])
        self.ranking_metrics.update_lists(logits, batch["labels"], mask, list_ids)

    def test_results(self, k_max: int | None) -> tuple[dict[str, float], dict[str, dict]]:
        """(flat results: ``two_stage*/``, ``retrieval*/`` up to ``k_max`` (beyond the K retrieved
        two-stage is undefined) and ``ranking/``; details for plots)."""
        details = {
            "two_stage": self.two_stage_metrics.snapshot(max_k=k_max),
            "retrieval": self.retrieval_metrics.snapshot(max_k=k_max),
        }
        results: dict[str, float] = {}
        for prefix, metric in (("two_stage", self.two_stage_metrics), ("retrieval", self.retrieval_metrics)):
            for segment, values in metric.compute().items():
                name = prefix if segment == "all" else f"{prefix}_{segment}"
                for key, value in values.items():
                    k = int(key.split("@")[1]) if "@" in key else None
                    if k is None or k_max is None or k <= k_max:
                        results[f"{name}/{key}"] = value
            metric.reset()
        if results.get("two_stage_cold/n_users"):
            ks = [k for k in self.two_stage_metrics.ks if k_max is None or k <= k_max]
            results |= cold_first_random(ks, self.two_stage_metrics.is_warm.cpu().numpy())
        results.update({f"ranking/{k}": float(v) for k, v in self.ranking_metrics.compute().items()})
        self.ranking_metrics.reset()
        return results, details
