"""Second stage: train ``RankerNet`` (recsys/models/ranker_net.py) with Lightning to re-score the
retrieved candidates of each user. ``features=[]`` with ``use_embeddings=true`` and ``loss=bce`` is the
seed's ranker (an MLP on [u, i, u⊙i]); the default adds the dense features of
``recsys.features.ranker_features`` through both the MLP and a linear ("wide") path.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from recsys.data.dataset import PreparedDataset
from recsys.evaluation.candidate_evaluator import CandidateListEvaluator
from recsys.features.attribute_features import AttributeLayout
from recsys.features.category_features import POPULARITY_CROSSES
from recsys.features.ranker_features import FEATURES, feature_columns
from recsys.models.checkpoints import LegacyHparams
from recsys.models.ranker_net import RankerNet

LOSSES = ("bce", "listwise")
_IS_COLD = FEATURES.index("is_cold")


def ranker_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, kind: str) -> torch.Tensor:
    """``bce``: mean over valid candidates. ``listwise``: softmax cross-entropy of the positive
    against its list, over the lists that hold one (a list without it has nothing to learn)."""
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits[mask], labels[mask])
    has_pos = (labels * mask).sum(dim=1) > 0
    if not has_pos.any():
        return logits.sum() * 0.0  # keeps the graph; no list to learn from in this batch
    masked = logits.masked_fill(~mask, float("-inf"))[has_pos]
    return F.cross_entropy(masked, labels[has_pos].argmax(dim=1))


def numeric_statistics(lists: Any, net: RankerNet) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and sd of the net's numeric attribute columns over the candidates of training lists
    (absent values left out): what the ranker standardizes them with, in training and serving."""
    values = lists.features[lists.candidates > 0][:, net.numeric_columns].double()  # [candidates, N]
    present = ~values.isnan()
    count = present.sum(0).clamp(min=1)
    mean = values.nan_to_num(0.0).sum(0) / count
    var = ((values - mean).nan_to_num(0.0) ** 2).sum(0) / count
    return mean.float(), var.sqrt().float()


class RankerModule(LegacyHparams, L.LightningModule):
    """Hyperparameters are plain values (checkpoints load with ``weights_only=True``); their values
    live in configs/model/ranker.yaml only, what older checkpoints lack in ``LEGACY["ranker"]``."""

    legacy_hparams = "ranker"

    def __init__(
        self,
        dataset_dir: str,
        embedding_dim: int,
        *,
        features: list[str] | None,
        use_embeddings: bool,
        hidden: list[int],
        dropout: float,
        loss: str,
        lr: float,
        weight_decay: float,
        monitor: str,
        test_ks: list[int] | None,
        ranking_ks: list[int] | None,
        cold_candidates: str,
        score_prior: bool,
        retrieval_temperature: float | None,
        attributes: bool,
        attribute_layout: dict | None,
    ):
        if score_prior and not retrieval_temperature:
            raise ValueError("score_prior needs the retrieval model's temperature (retrieval_temperature)")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        features = list(FEATURES if features is None else features)
        hidden = [int(h) for h in hidden]
        test_ks = [int(k) for k in (test_ks or [10, 20, 50, 100])]
        ranking_ks = [int(k) for k in (ranking_ks or [5, 10, 20])]
        # the declared attributes the net reads (the candidate DataModule's layout; none when off)
        # (plain values: Hydra hands a config node, and checkpoints load with weights_only)
        attribute_layout = (
            AttributeLayout.from_dict(attribute_layout).as_dict() if attributes and attribute_layout else None
        )
        super().__init__()
        self.save_hyperparameters()  # reads the (normalized) local values above
        self.net = RankerNet(
            embedding_dim,
            feature_columns(features),
            use_embeddings=use_embeddings,
            hidden=hidden,
            dropout=dropout,
            cold_candidates=cold_candidates,
            prior_scale=1.0 / retrieval_temperature if score_prior else 0.0,  # the retrieval logit
            attributes=attribute_layout,
        )
        dataset = PreparedDataset.load(dataset_dir, verify=False)
        self.evaluator = CandidateListEvaluator(dataset, test_ks, ranking_ks)
        self.test_results: dict[str, float] = {}
        self.test_details: dict[str, dict] = {}
        self._list_offset = 0

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule if self.trainer else None
        if stage == "fit" and len(self.net.numeric_columns) and datamodule is not None:
            self.net.set_numeric_statistics(
                *numeric_statistics(datamodule.splits["train"].candidates, self.net)
            )
        settings = getattr(datamodule, "settings", None)
        as_of = bool(getattr(settings, "features_as_of_request", False))
        if as_of and set(self.hparams.features) & set(POPULARITY_CROSSES):
            # their category sizes are training counts, which hold interactions after a request
            raise ValueError(
                f"{list(POPULARITY_CROSSES)} read training counts, not counts as of each request: "
                "drop them from model.features or set data.features_as_of_request=false"
            )
        if stage == "fit" and self.hparams.use_embeddings and getattr(datamodule, "holdout_ckpt", None):
            # [u, i, u⊙i] of one model mean nothing in another's vector space: a ranker that learned
            # them on the holdout model's lists would read the served model's vectors as noise
            raise ValueError(
                "holdout_ckpt lists come from another retrieval model than the served one: their user "
                "and item vectors live in another space, so train this ranker on features only "
                "(model.use_embeddings=false)"
            )

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(batch["user"], batch["items"], batch["features"])

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = ranker_loss(self(batch), batch["labels"], batch["mask"], self.hparams.loss)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["target"]))
        return loss

    def _final(self, batch: dict[str, torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
        """Scores in the served list's order (cold candidates per ``cold_candidates``)."""
        return self.net.final_scores(logits, batch["features"][..., _IS_COLD], batch["mask"])

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.evaluator.validate(batch, self._final(batch, self(batch)))

    def on_validation_epoch_end(self) -> None:
        results = self.evaluator.val_results()
        self.log("val/ndcg@10", results["val/ndcg@10"], prog_bar=True, sync_dist=True)
        self.log("val/retrieval_ndcg@10", results["val/retrieval_ndcg@10"], sync_dist=True)

    def on_test_epoch_start(self) -> None:
        self._list_offset = 0

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self(batch)
        # unique over ranks too: lists with equal ids would merge when the metric gathers them
        local = torch.arange(len(logits), device=logits.device) + self._list_offset
        self._list_offset += len(logits)
        list_ids = local * self.trainer.world_size + self.global_rank
        self.evaluator.test(batch, self._final(batch, logits), logits, list_ids)

    def on_test_epoch_end(self) -> None:
        k_max = int(self.trainer.datamodule.settings.num_candidates) if self.trainer.datamodule else None
        results, self.test_details = self.evaluator.test_results(k_max)
        if self.trainer.datamodule is not None:  # which feature counts these lists were built with
            results["features_as_of_request"] = bool(self.trainer.datamodule.settings.features_as_of_request)
        self.test_results = results
        self.log_dict(
            {k: results[k] for k in ("two_stage/ndcg@10", "retrieval/ndcg@10") if k in results},
            sync_dist=True,
        )

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.AdamW(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
        return {"optimizer": optimizer}
