"""Two-tower retrieval as a LightningModule: it coordinates the towers, the training softmax
(``RetrievalSoftmax``) and the evaluator (``RetrievalEvaluator``)."""

from __future__ import annotations

import logging
from typing import Any

import hydra
import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from recsys.data.datamodules import OBJECTIVES
from recsys.data.dataset import FIRST_ITEM_IDX, PreparedDataset, item_arrays
from recsys.evaluation.baselines import text_content_scores
from recsys.evaluation.retrieval_evaluator import RetrievalEvaluator
from recsys.models.checkpoints import LegacyHparams
from recsys.models.item_tower import ItemTower
from recsys.models.losses import earlier_items
from recsys.models.negatives import NegativePool
from recsys.models.optim import LR_SCHEDULES, clip_grad_norm, optimizer_config
from recsys.models.retrieval_softmax import RetrievalSoftmax, gather_in_batch, softmax_mode
from recsys.models.two_tower_scoring import TwoTowerScoring, switched_off
from recsys.models.user_tower import UserTower

log = logging.getLogger(__name__)


class TwoTowerModule(LegacyHparams, TwoTowerScoring, L.LightningModule):
    """Every constructor argument is a plain value (strings, numbers, lists, dicts), so a
    checkpoint's hyperparameters load with ``torch.load(weights_only=True)``. The values live in
    configs/model/two_tower.yaml only (no defaults here); what older checkpoints lack is read as
    they meant it (``LEGACY_TWO_TOWER``)."""

    legacy_hparams = "two_tower"

    def __init__(
        self,
        dataset_dir: str,
        *,
        dim: int,
        id_dropout: float,
        use_text: bool,
        use_id: bool,
        fusion: str,
        user_encoder: dict | None,
        history_dropout: float,
        temperature: float,
        softmax: str | None,
        num_global_negatives: int,
        negative_sampling: str,
        logq: str,
        mask_accidental_hits: bool,
        lr: float,
        weight_decay: float,
        lr_factor: float,
        lr_patience: int,
        monitor: str,
        val_ks: list[int] | None,
        test_ks: list[int] | None,
        eval_chunk_size: int,
        compile: bool,
        sparse_embeddings: bool,
        objective: str,
        lr_schedule: str,
        batch_target_negatives: bool,
        loss_chunk_size: int | None,
        negative_pool: str,
        text_baseline: bool,
        cold_score_offset: float,
        mask_seen: bool,
        normalize: bool,
        item_mlp: bool,
    ):
        if isinstance(user_encoder, DictConfig):
            user_encoder = OmegaConf.to_container(user_encoder, resolve=True)
        user_encoder = dict(user_encoder or {"_target_": "recsys.models.user_tower.lstm"})
        # plain lists in the saved hyperparameters (weights_only checkpoints reject ListConfig)
        val_ks, test_ks = (None if ks is None else [int(k) for k in ks] for ks in (val_ks, test_ks))
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if mask_seen and objective != "all_positions":
            raise ValueError("mask_seen masks a window's earlier items: it needs objective=all_positions")
        super().__init__()
        self.save_hyperparameters()
        self.hparams.softmax = softmax = softmax_mode(softmax, num_global_negatives)
        dataset = PreparedDataset.load(dataset_dir, verify=False)
        for key, value in switched_off(dataset, dataset_dir, use_text, id_dropout, mask_seen).items():
            self.hparams[key] = value  # saved: the checkpoint and the bundle say what was used
        use_text, id_dropout = self.hparams.use_text, self.hparams.id_dropout
        self.n_items = dataset.n_items
        arrays = item_arrays(dataset)
        text = np.ascontiguousarray(dataset.text_embeddings(mmap=False), dtype=np.float32)  # shared
        self.item_tower = ItemTower(
            torch.from_numpy(text),
            arrays["is_warm"],
            dim=dim,
            id_dropout=id_dropout,
            use_text=use_text,
            use_id=use_id,
            fusion=fusion,
            sparse=sparse_embeddings,
            mlp=item_mlp,
            normalize=normalize,
        )
        encoder = hydra.utils.instantiate(user_encoder, input_dim=dim)
        self.user_tower = UserTower(encoder, dim=dim, history_dropout=history_dropout, normalize=normalize)
        if compile:
            self.item_tower, self.user_tower = torch.compile(self.item_tower), torch.compile(self.user_tower)
        pool = NegativePool(arrays["train_count"], arrays["is_warm"], negative_pool, negative_sampling)
        self.loss = RetrievalSoftmax(
            pool,
            softmax,
            num_global_negatives,
            temperature,
            logq,
            batch_target_negatives,
            mask_accidental_hits,
            loss_chunk_size,
        )
        # cold_score_offset: added to the score of every text-only item (no trained ID row), the
        # same in evaluation, stage-two candidates and serving (bundle manifest "retrieval")
        text_only = ~arrays["is_warm"] & (np.arange(len(arrays["is_warm"])) >= FIRST_ITEM_IDX)  # not padding
        self._score_offsets = torch.from_numpy(text_only.astype(np.float32)) * float(cold_score_offset)
        self._dataset = dataset  # what export and stage two read the catalog from
        self._catalog: torch.Tensor | None = None
        self.evaluator = RetrievalEvaluator(dataset, text, val_ks, test_ks, eval_chunk_size, text_baseline)
        self.test_results: dict[str, float] = {}
        self.val_at_best: dict[str, float] = {}
        self.test_details: dict[str, dict] = {}

    # ----------------------------------------------------------------- training
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.hparams.objective == "all_positions":
            if "targets" not in batch:
                raise ValueError("all_positions training needs window batches (data.objective=all_positions)")
            return self._all_positions_step(batch)
        return self._last_position_step(batch)

    def _all_positions_step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Every position of every window scored against its next item (``RetrievalSoftmax``)."""
        history, lengths, targets = batch["history"], batch["lengths"], batch["targets"]
        valid = torch.arange(targets.shape[1], device=targets.device)[None, :] < lengths[:, None]
        scored = targets[valid] > 0  # context positions (data.window_stride) carry target 0
        target_ids = targets[valid][scored]
        negatives = self.loss.sample(self.global_rank)
        batch_ids = self.loss.batch_columns(target_ids)
        ids = torch.cat([history.reshape(-1), target_ids, negatives, batch_ids])
        unique, inverse = torch.unique(ids, return_inverse=True)  # each item through the tower once
        vectors = self.item_tower(unique)[inverse]
        n_hist, n_pos = history.numel(), target_ids.shape[0]
        user = self.user_tower.forward_all(vectors[:n_hist].view(*history.shape, -1), lengths)[scored]
        seen = earlier_items(history)[valid][scored] if self.hparams.mask_seen else None
        loss = self.loss.all_positions(
            user,
            vectors[n_hist : n_hist + n_pos],
            target_ids,
            vectors[n_hist + n_pos :],
            negatives,
            batch_ids,
            seen,
        )
        self.log("train/loss", loss, prog_bar=True, batch_size=n_pos)
        self.log("train/negative_pool", float(len(negatives) + len(batch_ids)), batch_size=n_pos)
        return loss

    def _last_position_step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        history, lengths, target = batch["history"], batch["lengths"], batch["target"]
        negatives = self.loss.sample(self.global_rank)
        ids = torch.cat([history.reshape(-1), target, negatives])
        unique, inverse = torch.unique(ids, return_inverse=True)  # each item through the tower once
        vectors = self.item_tower(unique)[inverse]
        n_hist, batch_size = history.numel(), target.shape[0]
        user = self.user_tower(vectors[:n_hist].view(*history.shape, -1), lengths)
        in_batch, in_batch_ids, offset = gather_in_batch(self, vectors[n_hist : n_hist + batch_size], target)
        loss = self.loss.last_position(
            user, in_batch, in_batch_ids, offset, vectors[n_hist + batch_size :], negatives
        )
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        # columns each user is contrasted with: grows with the world size (gathered positives)
        self.log("train/negative_pool", float(len(in_batch_ids) + len(negatives)), batch_size=batch_size)
        return loss

    # ----------------------------------------------------------------- evaluation
    def on_validation_epoch_start(self) -> None:
        self._catalog = self.encode_catalog()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        with self._fp32():
            self.evaluator.validate(self._model_scores(batch), batch)

    def on_validation_epoch_end(self) -> None:
        logged = self.evaluator.val_results()
        score = logged.get(self.hparams.monitor)
        if score is not None and score > self.val_at_best.get(self.hparams.monitor, float("-inf")):
            self.val_at_best = dict(logged)  # what the checkpoint selected by the monitor scored
        # already reduced over ranks by the metric (sums); sync_dist only keeps Lightning's
        # distributed bookkeeping consistent (identical values average to themselves)
        self.log("val/ndcg@10", logged.pop("val/ndcg@10"), prog_bar=True, sync_dist=True)
        self.log_dict(logged, sync_dist=True)
        self._catalog = None

    def on_test_epoch_start(self) -> None:
        self._catalog = self.encode_catalog()

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        with self._fp32():
            content = None
            if self.evaluator.content_metrics is not None:
                content = text_content_scores(batch["history"], batch["lengths"], self.item_tower.text)
            self.evaluator.test(self._model_scores(batch), batch, content)

    def on_test_epoch_end(self) -> None:
        self.test_results, self.test_details = self.evaluator.test_results()
        self._catalog = None
        self.log_dict(
            {k: v for k, v in self.test_results.items() if "@" in k and k.endswith(("@10", "@50"))},
            sync_dist=True,
        )

    # ----------------------------------------------------------------- optimization
    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        table = self.item_tower.id_embedding.weight if hp.sparse_embeddings else None
        steps = (lambda: int(self.trainer.estimated_stepping_batches)) if hp.lr_schedule == "cosine" else None
        return optimizer_config(
            self.parameters(),
            table,
            hp.lr,
            hp.weight_decay,
            hp.lr_schedule,
            hp.lr_factor,
            hp.lr_patience,
            hp.monitor,
            steps,
        )

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        if self.hparams.sparse_embeddings and gradient_clip_val:
            if gradient_clip_algorithm not in (None, "norm"):
                raise ValueError("sparse_embeddings supports gradient_clip_algorithm='norm' only")
            clip_grad_norm(self.parameters(), gradient_clip_val)  # torch's rejects sparse grads
            return
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
