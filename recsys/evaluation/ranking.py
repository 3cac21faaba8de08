"""Second-stage evaluation: metrics on the candidate lists, and end-to-end two-stage ranks.

The two-stage rank of a user's target is its position after the ranker re-orders the retrieved
list; a target retrieval missed gets rank ``n_catalog`` (a miss at every k ≤ K), because the
positive is never injected. Those ranks feed the same ``FullCatalogRetrievalMetrics`` as
retrieval, so ``two_stage/ndcg@10`` and ``retrieval/ndcg@10`` are the same formula over the same
users, differing only in the order of the top K.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import BinaryAUROC
from torchmetrics.retrieval import RetrievalHitRate, RetrievalMAP, RetrievalNormalizedDCG


def two_stage_ranks(
    scores: torch.Tensor, mask: torch.Tensor, target_pos: torch.Tensor, n_catalog: int
) -> torch.Tensor:
    """[B] number of valid candidates the ranker scores ≥ the target (pessimistic ties)."""
    hit = target_pos >= 0
    pos = target_pos.clamp(min=0)
    target_score = scores.gather(1, pos[:, None])
    above = (scores >= target_score) & mask
    above.scatter_(1, pos[:, None], False)  # the target does not outrank itself
    return torch.where(hit, above.sum(dim=1), torch.full_like(target_pos, n_catalog))


def reranked(scores: torch.Tensor, candidates: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Candidates re-ordered by ranker score, best first; padding (item 0) last."""
    order = scores.masked_fill(~mask, float("-inf")).argsort(dim=1, descending=True, stable=True)
    return candidates.gather(1, order)


class CandidateListMetrics(MetricCollection):
    """auc and logloss over every valid candidate; ndcg/hitrate/map@k over lists holding a positive.

    Lists whose positive retrieval missed are skipped by the @k metrics (nothing to rank there;
    they count as misses in ``two_stage/*``). logloss reads the logits as probabilities, which
    only a BCE-trained ranker calibrates; for a listwise ranker it is reported but not meaningful.
    """

    def __init__(self, ks: list[int]):
        metrics = {"auc": BinaryAUROC(), "logloss": MeanMetric()}
        for k in ks:
            metrics[f"ndcg@{k}"] = RetrievalNormalizedDCG(top_k=k, empty_target_action="skip")
            metrics[f"hitrate@{k}"] = RetrievalHitRate(top_k=k, empty_target_action="skip")
            metrics[f"map@{k}"] = RetrievalMAP(top_k=k, empty_target_action="skip")
        super().__init__(metrics, compute_groups=False)

    def update_lists(
        self, logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, list_ids: torch.Tensor
    ):
        preds, target = logits[mask].float(), labels[mask]
        indexes = list_ids[:, None].expand_as(mask)[mask]
        for name, metric in self.items(keep_base=True):
            if name.endswith("auc"):
                metric.update(torch.sigmoid(preds), target.long())
            elif name.endswith("logloss"):
                metric.update(F.binary_cross_entropy_with_logits(preds, target, reduction="none"))
            else:
                # torchmetrics' retrieval metrics read a score <= 0 as "not retrieved" (RetrievalMAP
                # then scores such a list 0): a global shift keeps every order and makes them positive
                metric.update(preds - preds.min() + 1.0, target.long(), indexes=indexes)
