"""Two-tower retrieval as a LightningModule: InfoNCE training, full-catalog val/test evaluation."""

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
from recsys.data.seen_items import SeenItems
from recsys.evaluation.baselines import PopularityBaseline, text_content_scores
from recsys.evaluation.metrics import FullCatalogRetrievalMetrics
from recsys.evaluation.retrieval import rank_full_catalog
from recsys.models.item_tower import ItemTower
from recsys.models.losses import (
    LOGQ_MODES,
    all_positions_loss,
    earlier_items,
    exact_softmax_loss,
    sampled_softmax_loss,
)
from recsys.models.negatives import NegativePool
from recsys.models.optim import DenseSparseAdam, clip_grad_norm
from recsys.models.user_tower import UserTower

log = logging.getLogger(__name__)

DEFAULT_KS = (10, 20, 50, 100, 500, 1000, 1500, 2000)
LR_SCHEDULES = ("plateau", "cosine")


class TwoTowerModule(L.LightningModule):
    """Every constructor argument is a plain value (strings, numbers, lists, dicts), so a
    checkpoint's hyperparameters load with ``torch.load(weights_only=True)``."""

    def __init__(
        self,
        dataset_dir: str,
        dim: int = 256,
        id_dropout: float = 0.4,
        use_text: bool = True,
        use_id: bool = True,
        fusion: str = "gate",
        user_encoder: dict | None = None,
        history_dropout: float = 0.0,
        temperature: float = 0.07,
        num_global_negatives: int = 4096,
        negative_sampling: str = "uniform",
        logq: str = "none",
        mask_accidental_hits: bool = True,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_factor: float = 0.5,
        lr_patience: int = 2,
        monitor: str = "val/ndcg@10",
        val_ks: list[int] | None = None,
        test_ks: list[int] | None = None,
        eval_chunk_size: int = 65_536,
        compile: bool = False,
        sparse_embeddings: bool = False,
        objective: str = "last_position",
        lr_schedule: str = "plateau",
        batch_target_negatives: bool = True,
        loss_chunk_size: int | None = 8192,
        negative_pool: str = "catalog",
        text_baseline: bool = False,
        cold_score_offset: float = 0.0,
        mask_seen: bool = False,
        normalize: bool = True,
        item_mlp: bool = True,
    ):
        if isinstance(user_encoder, DictConfig):
            user_encoder = OmegaConf.to_container(user_encoder, resolve=True)
        user_encoder = dict(user_encoder or {"_target_": "recsys.models.user_tower.lstm"})
        val_ks = list(val_ks or [10, 20, 50])
        test_ks = list(test_ks or DEFAULT_KS)
        if logq not in LOGQ_MODES:
            raise ValueError(f"logq must be one of {LOGQ_MODES}, got {logq!r}")
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if mask_seen and objective != "all_positions":
            raise ValueError("mask_seen masks a window's earlier items: it needs objective=all_positions")
        super().__init__()
        self.save_hyperparameters()
        dataset = PreparedDataset.load(dataset_dir, verify=False)
        if use_text and not dataset.has_text:  # saved so the checkpoint and the bundle say so
            log.warning("%s has no item text: the item tower runs on IDs alone", dataset_dir)
            self.hparams.use_text = use_text = False
        if id_dropout and not use_text:  # ID dropout trains the text path; without one it only blanks items
            log.warning("no text path: id_dropout %s -> 0", id_dropout)
            self.hparams.id_dropout = id_dropout = 0.0
        if mask_seen and not dataset.exclude_seen:  # evaluation keeps seen items, so training must too
            log.warning("%s keeps seen items in the lists (exclude_seen=false): mask_seen off", dataset_dir)
            self.hparams.mask_seen = False
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
        self.user_tower = UserTower(encoder, dim, history_dropout, normalize)
        if compile:
            self.item_tower = torch.compile(self.item_tower)
            self.user_tower = torch.compile(self.user_tower)
        self.negatives = NegativePool(
            arrays["train_count"], arrays["is_warm"], negative_pool, negative_sampling
        )
        self.popularity = PopularityBaseline(arrays["train_count"])
        # cold_score_offset: added to the score of every text-only item (no trained ID row), the
        # same in evaluation, stage-two candidates and serving (bundle manifest "retrieval")
        text_only = ~arrays["is_warm"]
        text_only[:FIRST_ITEM_IDX] = False
        self._score_offsets = torch.from_numpy(text_only.astype(np.float32)) * float(cold_score_offset)
        self._dataset = dataset
        self._seen: dict[str, SeenItems] = {}
        self._catalog: torch.Tensor | None = None
        self._negative_rng: torch.Generator | None = None
        self.val_metrics = FullCatalogRetrievalMetrics(
            val_ks, self.n_items, arrays["is_warm"], list_metrics=False
        )
        list_args = (test_ks, self.n_items, arrays["is_warm"], arrays["train_count"], text)
        self.test_metrics = FullCatalogRetrievalMetrics(*list_args)  # shares `text`, no copy
        self.popularity_metrics = FullCatalogRetrievalMetrics(*list_args)
        # text_baseline: a model-free content scorer ranked like the model (cold-start reference)
        self.content_metrics = FullCatalogRetrievalMetrics(*list_args) if text_baseline else None
        self.test_results: dict[str, float] = {}
        self.val_at_best: dict[str, float] = {}
        self.test_details: dict[str, dict] = {}

    # ----------------------------------------------------------------- encoding
    def encode_users(self, history: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        unique, inverse = torch.unique(history, return_inverse=True)
        vectors = self.item_tower(unique)[inverse]
        return self.user_tower(vectors, lengths)

    @torch.no_grad()
    def encode_catalog(self, chunk: int = 8192) -> torch.Tensor:
        """Eval-mode embeddings of every item_idx row (rows 0/1 included, never scored)."""
        was_training = self.item_tower.training
        self.item_tower.eval()
        rows = torch.arange(self.n_items + FIRST_ITEM_IDX, device=self.device)
        with self._fp32():
            out = torch.cat(
                [self.item_tower(rows[i : i + chunk]).float() for i in range(0, len(rows), chunk)]
            )
        self.item_tower.train(was_training)
        return out

    # ----------------------------------------------------------------- training
    def sample_negatives(self) -> torch.Tensor:
        if self._negative_rng is None:
            # its own stream per rank: every process draws different negatives from the same seed
            self._negative_rng = torch.Generator(device=self.device)
            self._negative_rng.manual_seed(torch.initial_seed() + 1_000_003 * self.global_rank)
        return self.negatives.sample(self.hparams.num_global_negatives, self._negative_rng)

    def gather_in_batch(
        self, positive: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Every rank's positives as in-batch columns (gradients flow back to their ranks), their
        ids, and where this rank's rows sit among them. One process: the batch itself."""
        if self._trainer is None or self.trainer.world_size == 1:
            return positive, target, 0
        d = positive.shape[-1]
        columns = self.all_gather(positive, sync_grads=True).reshape(-1, d)
        ids = self.all_gather(target).reshape(-1)
        return columns, ids, self.global_rank * target.shape[0]

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.hparams.objective == "all_positions":
            if "targets" not in batch:
                raise ValueError(
                    "objective=all_positions needs window batches (data.objective=all_positions)"
                )
            return self._all_positions_step(batch)
        return self._last_position_step(batch)

    def _all_positions_step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Every position of every window scored against its next item (see losses.py)."""
        history, lengths, targets = batch["history"], batch["lengths"], batch["targets"]
        valid = torch.arange(targets.shape[1], device=targets.device)[None, :] < lengths[:, None]
        scored = targets[valid] > 0  # context positions (data.window_stride) carry target 0
        target_ids = targets[valid][scored]
        negatives = self.sample_negatives()
        hp = self.hparams
        use_batch = hp.batch_target_negatives and hp.num_global_negatives >= 0
        batch_ids = torch.unique(target_ids) if use_batch else target_ids[:0]
        shared_ids = torch.cat([negatives, batch_ids])
        ids = torch.cat([history.reshape(-1), target_ids, shared_ids])
        unique, inverse = torch.unique(ids, return_inverse=True)  # each item through the tower once
        vectors = self.item_tower(unique)[inverse]
        n_hist, n_pos = history.numel(), target_ids.shape[0]
        user = self.user_tower.forward_all(vectors[:n_hist].view(*history.shape, -1), lengths)[scored]
        seen = earlier_items(history)[valid][scored] if hp.mask_seen else None
        if hp.num_global_negatives < 0:  # the whole pool, item i in its column
            loss = exact_softmax_loss(
                user,
                self.negatives.column[target_ids],
                vectors[n_hist + n_pos :],
                hp.temperature,
                hp.loss_chunk_size,
                seen_ids=seen,
                catalog_ids=negatives,
            )
        else:
            loss = self._shared_columns_loss(
                user, vectors, n_hist, target_ids, negatives, batch_ids, shared_ids, seen
            )
        self.log("train/loss", loss, prog_bar=True, batch_size=n_pos)
        self.log("train/negative_pool", float(len(shared_ids)), batch_size=n_pos)
        return loss

    def _shared_columns_loss(
        self,
        user: torch.Tensor,
        vectors: torch.Tensor,
        n_hist: int,
        target_ids: torch.Tensor,
        negatives: torch.Tensor,
        batch_ids: torch.Tensor,
        shared_ids: torch.Tensor,
        seen: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Sampled negatives (+ the batch's distinct targets: ``shared_ids``) shared by every position,
        with logQ."""
        hp, n_pos = self.hparams, target_ids.shape[0]
        pos_log_q, shared_log_q = self._shared_log_q(target_ids, negatives, batch_ids, n_pos)
        return all_positions_loss(
            user,
            vectors[n_hist : n_hist + n_pos],
            target_ids,
            vectors[n_hist + n_pos :],
            shared_ids,
            hp.temperature,
            positive_log_q=pos_log_q,
            shared_log_q=shared_log_q,
            mask_hits=True,  # the target among the shared columns is never its own negative
            chunk_size=hp.loss_chunk_size,
            seen_ids=seen,
        )

    def _shared_log_q(
        self, target_ids: torch.Tensor, negatives: torch.Tensor, batch_ids: torch.Tensor, n_positions: int
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """logQ of the all-position loss (see ``NegativePool.shared_log_q``); the positive gets
        its own item's total."""
        logq = self.hparams.logq
        sampled = logq == "both" and self.hparams.num_global_negatives > 0
        from_batch = logq in ("in_batch", "both") and len(batch_ids) > 0
        if not (sampled or from_batch):
            return None, None
        n, device = len(negatives), negatives.device

        def expected(items: torch.Tensor) -> torch.Tensor:
            return self.negatives.shared_log_q(items, n, n_positions, sampled, from_batch)

        from_negatives = expected(negatives) if sampled else torch.zeros(n, device=device)
        from_targets = expected(batch_ids) if from_batch else torch.zeros(len(batch_ids), device=device)
        return expected(target_ids), torch.cat([from_negatives, from_targets])

    def _last_position_step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        history, lengths, target = batch["history"], batch["lengths"], batch["target"]
        negatives = self.sample_negatives()
        ids = torch.cat([history.reshape(-1), target, negatives])
        unique, inverse = torch.unique(ids, return_inverse=True)  # each item through the tower once
        vectors = self.item_tower(unique)[inverse]
        n_hist, batch_size = history.numel(), target.shape[0]
        hist_vec = vectors[:n_hist].view(*history.shape, -1)
        pos_vec = vectors[n_hist : n_hist + batch_size]
        neg_vec = vectors[n_hist + batch_size :]
        user = self.user_tower(hist_vec, lengths)
        in_batch, in_batch_ids, offset = self.gather_in_batch(pos_vec, target)
        logq = self.hparams.logq
        pos_log_q = None
        if logq in ("in_batch", "both"):
            pos_log_q = self.negatives.in_batch_log_q(in_batch_ids, len(in_batch_ids))
        neg_log_q = None
        if logq == "both" and len(negatives):
            neg_log_q = self.negatives.sampled_log_q(negatives, len(negatives))
        loss = sampled_softmax_loss(
            user,
            in_batch,
            in_batch_ids,
            self.hparams.temperature,
            negatives=neg_vec if len(negatives) else None,
            negative_ids=negatives if len(negatives) else None,
            positive_log_q=pos_log_q,
            negative_log_q=neg_log_q,
            mask_hits=self.hparams.mask_accidental_hits,
            # with the whole catalog as negatives, in-batch columns would double-count items
            in_batch_negatives=self.hparams.num_global_negatives >= 0,
            positive_offset=offset,
        )
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        # columns each user is contrasted with: grows with the world size (gathered positives)
        self.log("train/negative_pool", float(len(in_batch_ids) + len(negatives)), batch_size=batch_size)
        return loss

    # ----------------------------------------------------------------- evaluation
    def seen(self, split: str) -> SeenItems:
        if split not in self._seen:
            self._seen[split] = SeenItems.for_split(self._dataset, split)
        return self._seen[split]

    def _seen_pairs(self, batch: dict[str, torch.Tensor], split: str) -> tuple[np.ndarray, np.ndarray]:
        return self.seen(split).batch(batch["user_idx"].cpu().numpy())

    def _rank(
        self, scores_of, batch: dict[str, torch.Tensor], seen: tuple[np.ndarray, np.ndarray], k_max: int
    ):
        return rank_full_catalog(
            scores_of, batch["target"], self.n_items, *seen, k_max, self.hparams.eval_chunk_size
        )

    def retrieval_scores(
        self, user: torch.Tensor, catalog: torch.Tensor, items: torch.Tensor
    ) -> torch.Tensor:
        """[B, M] scores of ``items`` (item_idx, [M] or [B, M]) for users [B, d] against the
        encoded ``catalog``: the inner product, plus ``cold_score_offset`` on text-only items."""
        scores = user @ catalog[items].T if items.dim() == 1 else (user[:, None, :] * catalog[items]).sum(-1)
        if not self.hparams.cold_score_offset:  # the common case: no gather and add per chunk
            return scores
        return scores + self._score_offsets.to(user.device)[items]

    def _model_scores(self, batch: dict[str, torch.Tensor]):
        user = self.encode_users(batch["history"], batch["lengths"]).float()
        catalog = self._catalog
        return lambda items: self.retrieval_scores(user, catalog, items)

    def on_validation_epoch_start(self) -> None:
        self._catalog = self.encode_catalog()

    def _fp32(self):
        """Evaluation always scores in float32: bf16 scores (3 significant digits) tie often,
        and ties rank pessimistically (measured on ML-100K: test ndcg@10 0.115 in bf16 vs 0.121)."""
        return torch.autocast(device_type=self.device.type, enabled=False)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        with self._fp32():
            seen = self._seen_pairs(batch, "val")
            result = self._rank(self._model_scores(batch), batch, seen, 0)  # val metrics read ranks only
        self.val_metrics.update(result.ranks, batch["target"])

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()["all"]
        self.val_metrics.reset()
        logged = {f"val/{k}": v for k, v in values.items() if k != "n_users"}
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
        k_max = max(self.test_metrics.ks)
        seen = self._seen_pairs(batch, "test")  # one lookup for both rankings below
        with self._fp32():
            result = self._rank(self._model_scores(batch), batch, seen, k_max)
        self.test_metrics.update(result.ranks, batch["target"], result.topk)
        pop = self.popularity.rank(batch["target"], seen, k_max)
        self.popularity_metrics.update(pop.ranks, batch["target"], pop.topk)
        if self.content_metrics is not None:
            scores = text_content_scores(batch["history"], batch["lengths"], self.item_tower.text)
            content = self._rank(scores, batch, seen, k_max)
            self.content_metrics.update(content.ranks, batch["target"], content.topk)

    def on_test_epoch_end(self) -> None:
        results = self.test_metrics.flat_results("retrieval") | self.popularity_metrics.flat_results(
            "popularity"
        )
        if self.content_metrics is not None:
            results |= self.content_metrics.flat_results("text_content")
            self.content_metrics.reset()
        # for plots (recsys.evaluate): rank curves up to K=1000 and what lands in top-10 lists
        self.test_details = {
            "retrieval": self.test_metrics.snapshot(),
            "popularity": self.popularity_metrics.snapshot(),
        }
        self.test_metrics.reset()
        self.popularity_metrics.reset()
        self._catalog = None
        self.test_results = results
        self.log_dict(
            {k: v for k, v in results.items() if "@" in k and k.endswith(("@10", "@50"))}, sync_dist=True
        )

    # ----------------------------------------------------------------- optimization
    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        if hp.sparse_embeddings:
            table = self.item_tower.id_embedding.weight
            dense = [p for p in self.parameters() if p is not table]
            optimizer = DenseSparseAdam(dense, [table], lr=hp.lr, weight_decay=hp.weight_decay)
        else:
            optimizer = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.lr_schedule == "cosine":
            # a fixed decay to 0 over the run's step budget: with a noisy validation metric a
            # plateau rule halves the rate on noise, and the end of the run is a low-rate polish
            steps = max(int(self.trainer.estimated_stepping_batches), 1)
            cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=hp.lr_factor, patience=hp.lr_patience
        )
        # strict=False: runs without validation (limit_val_batches=0) keep a constant lr
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": hp.monitor, "strict": False},
        }

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        if self.hparams.sparse_embeddings and gradient_clip_val:
            if gradient_clip_algorithm not in (None, "norm"):
                raise ValueError("sparse_embeddings supports gradient_clip_algorithm='norm' only")
            clip_grad_norm(self.parameters(), gradient_clip_val)  # torch's rejects sparse grads
            return
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
