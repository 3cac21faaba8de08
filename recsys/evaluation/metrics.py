"""Retrieval metrics over the full catalog, kept as sums so distributed reduction is exact.

Definitions (one target per user; r = number of catalog items that outrank the target, with
seen items excluded and ties pessimistic):
- recall@k = 1[r < k];  ndcg@k = 1[r < k] / log2(r + 2);  mrr = 1 / (r + 1)
- coverage@k = |∪ users' top-k| / catalog size
- diversity@k = 1 − mean pairwise cosine of the top-k items' *text* embeddings (model-independent,
  so models and the popularity baseline are comparable); items without text (zero rows) are left
  out, and users with fewer than two such items do not count
- novelty@k = mean over top-k items of −log2 p(i), p(i) = (train_count + 1) / (Σ train_count + n)
Padding slots of a top-k list (item 0: fewer unseen items than k) count in none of the three.
``mrr_cutoff`` (two-stage lists end at K): ranks ≥ K add nothing, and the key says ``mrr@K``.
Segments: ``cold`` / ``warm`` = users whose target item is not / is warm (seen in training).
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric

from recsys.data.dataset import FIRST_ITEM_IDX

SEGMENTS = ("all", "cold", "warm")


class FullCatalogRetrievalMetrics(Metric):
    full_state_update = False

    def __init__(
        self,
        ks: list[int],
        n_catalog: int,
        is_warm: np.ndarray | torch.Tensor,
        train_counts: np.ndarray | torch.Tensor | None = None,
        text_embeddings: np.ndarray | torch.Tensor | None = None,
        list_metrics: bool = True,
        curve_k: int = 1000,
        mrr_cutoff: int | None = None,
    ):
        """``is_warm``/``train_counts``/``text_embeddings`` are indexed by item_idx (n_catalog + 2 rows).

        ``curve_k``: ranks below it are also counted one by one, so recall@K and ndcg@K can be
        drawn for every K = 1..curve_k (``curves``) at the cost of a [3, curve_k] sum.
        """
        super().__init__()
        self.ks = sorted(int(k) for k in ks)
        self.curve_k = int(curve_k)
        self.n_catalog = n_catalog
        self.list_metrics = list_metrics
        self.mrr_cutoff = mrr_cutoff
        n_k, n_seg = len(self.ks), len(SEGMENTS)
        self.register_buffer(
            "is_warm", torch.as_tensor(np.asarray(is_warm), dtype=torch.bool), persistent=False
        )
        self.add_state("count", torch.zeros(n_seg, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("hits", torch.zeros(n_seg, n_k, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("ndcg", torch.zeros(n_seg, n_k, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("rr", torch.zeros(n_seg, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state(
            "rank_counts", torch.zeros(n_seg, self.curve_k, dtype=torch.float64), dist_reduce_fx="sum"
        )
        if list_metrics:
            counts = torch.as_tensor(np.asarray(train_counts), dtype=torch.float64)
            prob = (counts + 1) / (counts[2:].sum() + n_catalog)
            # float32-rounded values held in float64: sums of up to thousands of them are exact,
            # so novelty does not depend on reduction order
            self.register_buffer("self_info", (-torch.log2(prob)).float().double(), persistent=False)
            text = torch.as_tensor(np.asarray(text_embeddings), dtype=torch.float32)
            self.register_buffer("text", text, persistent=False)
            self.register_buffer("text_sq_norm", (text**2).sum(dim=1), persistent=False)
            self.add_state(
                "covered", torch.zeros(n_k, n_catalog + 2, dtype=torch.int32), dist_reduce_fx="sum"
            )
            for name in ("diversity", "diversity_users", "novelty", "novelty_users"):
                self.add_state(name, torch.zeros(n_seg, n_k, dtype=torch.float64), dist_reduce_fx="sum")
            # how often each item is in a user's top-10: the popularity bias of what is recommended
            self.add_state(
                "top10_counts", torch.zeros(n_catalog + 2, dtype=torch.float64), dist_reduce_fx="sum"
            )

    def _segments(self, targets: torch.Tensor) -> torch.Tensor:
        warm = self.is_warm[targets]
        return torch.stack([torch.ones_like(warm), ~warm, warm]).to(torch.float64)  # [3, B]

    def update(self, ranks: torch.Tensor, targets: torch.Tensor, topk: torch.Tensor | None = None) -> None:
        seg = self._segments(targets)
        ranks = ranks.to(torch.float64)
        ks = torch.tensor(self.ks, dtype=torch.float64, device=ranks.device)
        hit = (ranks[:, None] < ks[None, :]).to(torch.float64)  # [B, K]
        self.count += seg.sum(dim=1)
        self.hits += seg @ hit
        self.ndcg += seg @ (hit / torch.log2(ranks[:, None] + 2))
        rr = 1.0 / (ranks + 1)
        if self.mrr_cutoff is not None:
            rr = torch.where(ranks < self.mrr_cutoff, rr, torch.zeros_like(rr))
        self.rr += seg @ rr
        in_curve = ranks < self.curve_k
        if in_curve.any():
            rank_rows = torch.zeros(len(ranks), self.curve_k, dtype=torch.float64, device=ranks.device)
            rank_rows[in_curve.nonzero().squeeze(1), ranks[in_curve].long()] = 1.0
            self.rank_counts += seg @ rank_rows
        if self.list_metrics and topk is not None:
            self._update_lists(seg, topk)

    def _update_lists(self, seg: torch.Tensor, topk: torch.Tensor) -> None:
        top10 = topk[:, :10].reshape(-1)
        self.top10_counts.index_add_(
            0, top10, torch.ones(len(top10), dtype=torch.float64, device=topk.device)
        )
        # Running sums over the top-k prefix grow by the items between consecutive ks, gathered
        # in slices so memory stays O(B × 128 × d) whatever k is.
        batch = topk.shape[0]
        # float64 accumulators: sums of float32 inputs are then (almost always) exact, so the
        # result does not depend on the reduction order SIMD kernels pick per allocation.
        vec_sum = torch.zeros(batch, self.text.shape[1], device=topk.device, dtype=torch.float64)
        sq_sum = torch.zeros(batch, device=topk.device, dtype=torch.float64)
        info_sum = torch.zeros(batch, device=topk.device, dtype=torch.float64)
        n_items = torch.zeros(batch, device=topk.device, dtype=torch.float64)  # real items so far
        n_text = torch.zeros(batch, device=topk.device, dtype=torch.float64)  # ... with text
        prev = 0
        for j, k in enumerate(self.ks):
            n = min(k, topk.shape[1])
            for lo in range(prev, n, 128):
                block = topk[:, lo : min(lo + 128, n)]
                real = block >= FIRST_ITEM_IDX
                vec_sum += self.text[block].double().sum(dim=1)  # padding / no-text rows are zero
                sq_sum += self.text_sq_norm[block].double().sum(dim=1)
                n_text += (real & (self.text_sq_norm[block] > 0)).sum(dim=1)
                info_sum += (self.self_info[block] * real).sum(dim=1)
                n_items += real.sum(dim=1)
            prev = n
            self.covered[j, topk[:, :n].reshape(-1)] = 1
            # mean pairwise cosine of unit vectors: (|Σv|² − Σ|v|²) / (m(m − 1)), m items with text
            has_pairs = n_text >= 2
            pair_mean = ((vec_sum**2).sum(dim=1) - sq_sum) / (n_text * (n_text - 1)).clamp(min=1)
            self.diversity[:, j] += seg @ torch.where(has_pairs, 1.0 - pair_mean, 0.0)
            self.diversity_users[:, j] += seg @ has_pairs.double()
            has_items = n_items >= 1
            self.novelty[:, j] += seg @ torch.where(has_items, info_sum / n_items.clamp(min=1), 0.0)
            self.novelty_users[:, j] += seg @ has_items.double()

    def flat_results(self, prefix: str) -> dict[str, float]:
        """``compute()`` as metrics.json keys: ``prefix/…`` for all users, ``prefix_<segment>/…``."""
        return {
            f"{prefix if segment == 'all' else f'{prefix}_{segment}'}/{key}": value
            for segment, values in self.compute().items()
            for key, value in values.items()
        }

    def snapshot(self, max_k: int | None = None) -> dict:
        """Curves and top-10 counts, reduced over ranks (plain lists: JSON-ready)."""
        with self.sync_context(should_sync=True, should_unsync=True):
            out = {"curves": self.curves(max_k)}
            if self.list_metrics:
                out["top10_counts"] = self.top10_counts.tolist()
        return out

    def curves(self, max_k: int | None = None) -> dict[str, dict[str, list[float]]]:
        """{segment: {"recall": [recall@1 … recall@K], "ndcg": […]}} for K up to ``curve_k``."""
        k = min(self.curve_k, max_k or self.curve_k)
        gains = 1.0 / torch.log2(torch.arange(k, dtype=torch.float64, device=self.rank_counts.device) + 2)
        out = {}
        for s, name in enumerate(SEGMENTS):
            n = float(self.count[s])
            if n == 0:
                continue
            counts = self.rank_counts[s, :k]
            out[name] = {
                "recall": (torch.cumsum(counts, 0) / n).tolist(),
                "ndcg": (torch.cumsum(counts * gains, 0) / n).tolist(),
            }
        return out

    def compute(self) -> dict[str, dict[str, float]]:
        """{segment: {metric@k: value}}; empty segments are left out."""
        out: dict[str, dict[str, float]] = {}
        covered = (
            (self.covered[:, FIRST_ITEM_IDX:] > 0).sum(dim=1).to(torch.float64) / self.n_catalog
            if self.list_metrics
            else None
        )
        for s, name in enumerate(SEGMENTS):
            n = float(self.count[s])
            if n == 0:
                continue
            mrr_key = "mrr" if self.mrr_cutoff is None else f"mrr@{self.mrr_cutoff}"
            values = {mrr_key: float(self.rr[s]) / n}
            for j, k in enumerate(self.ks):
                values[f"recall@{k}"] = float(self.hits[s, j]) / n
                values[f"ndcg@{k}"] = float(self.ndcg[s, j]) / n
                if self.list_metrics:
                    div_users = float(self.diversity_users[s, j])
                    nov_users = float(self.novelty_users[s, j])
                    if div_users > 0:  # undefined for lists of one item (k = 1)
                        values[f"diversity@{k}"] = float(self.diversity[s, j]) / div_users
                    values[f"novelty@{k}"] = float(self.novelty[s, j]) / max(nov_users, 1.0)
                    if name == "all":
                        values[f"coverage@{k}"] = float(covered[j])
            values["n_users"] = n
            out[name] = values
        return out
