"""Loading checkpoints written before an option existed. The modules' constructors have no
defaults (the configs are the one home of every value); a key an older checkpoint lacks is read
here as the code that wrote it behaved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

LEGACY = {
    "two_tower": {
        "dim": 256,
        "id_dropout": 0.4,
        "use_text": True,
        "use_id": True,
        "fusion": "gate",
        "user_encoder": None,  # the LSTM
        "history_dropout": 0.0,
        "temperature": 0.07,
        "softmax": None,  # said by num_global_negatives (-1: exact, 0: in-batch)
        "num_global_negatives": 4096,
        "negative_sampling": "uniform",
        "logq": "none",
        "mask_accidental_hits": True,
        "lr": 1e-3,
        "weight_decay": 0.0,
        "lr_factor": 0.5,
        "lr_patience": 2,
        "monitor": "val/ndcg@10",
        "val_ks": None,
        "test_ks": None,
        "eval_chunk_size": 65_536,
        "compile": False,
        "sparse_embeddings": False,
        "objective": "last_position",
        "lr_schedule": "plateau",
        "batch_target_negatives": True,
        "loss_chunk_size": 8192,
        "negative_pool": "catalog",
        "text_baseline": False,
        "cold_score_offset": 0.0,
        "mask_seen": False,
        "normalize": True,  # cosine over the item MLP, as every model before the option
        "item_mlp": True,
    },
    "ranker": {
        "features": None,  # every feature of the time
        "use_embeddings": True,
        "hidden": [512, 256],
        "dropout": 0.2,
        "loss": "listwise",
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "monitor": "val/ndcg@10",
        "test_ks": None,
        "ranking_ks": None,
        "cold_candidates": "rank",
        "score_prior": False,
        "retrieval_temperature": None,
        "attributes": False,
        "attribute_layout": None,
    },
}


class LegacyHparams:
    """A LightningModule mixin: ``load_from_checkpoint`` fills what the checkpoint lacks from
    ``LEGACY[cls.legacy_hparams]``; values the caller passes win, as in Lightning."""

    legacy_hparams: str

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: str | Path, *args: Any, **kwargs: Any):
        # mmap: only the hyperparameters are read here, not the weights Lightning loads next
        ckpt = torch.load(checkpoint_path, map_location="cpu", weights_only=True, mmap=True)
        saved = ckpt.get("hyper_parameters", {})
        missing = {k: v for k, v in LEGACY[cls.legacy_hparams].items() if k not in saved and k not in kwargs}
        return super().load_from_checkpoint(checkpoint_path, *args, **missing, **kwargs)
