"""python -m recsys.export retrieval_ckpt=… [ranker_ckpt=…] [index=hnsw]: write a serving bundle."""

from __future__ import annotations

import time
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from recsys.models.ranker import RankerModule, candidate_settings
from recsys.models.two_tower import TwoTowerModule
from recsys.serving.bundle import write_bundle
from recsys.utils.artifacts import checkpoint_file
from recsys.utils.hydra_helpers import CONFIG_PATH, print_summary


def export(cfg: DictConfig) -> dict[str, Any]:
    torch.set_num_threads(int(cfg.threads)) if cfg.get("threads") else None
    started = time.perf_counter()
    retrieval = TwoTowerModule.load_from_checkpoint(
        checkpoint_file(cfg.retrieval_ckpt, "retrieval_ckpt", "export"), map_location="cpu", weights_only=True
    )
    ranker, data_hp = None, {}
    if cfg.get("ranker_ckpt"):
        ranker_path = checkpoint_file(cfg.ranker_ckpt, "ranker_ckpt", "export")
        ranker = RankerModule.load_from_checkpoint(ranker_path, map_location="cpu", weights_only=True)
        data_hp = candidate_settings(ranker_path)
    index = hydra.utils.instantiate(cfg.index, dim=int(retrieval.hparams.dim))
    manifest = write_bundle(
        cfg.bundle_dir,
        retrieval,
        index,
        ranker,
        max_history=cfg.get("max_history") or data_hp.get("max_history"),
        recent_window_days=data_hp.get("recent_window_days", 14.0),
        last_n=data_hp.get("last_n", 5),
        num_candidates=cfg.num_candidates or data_hp.get("num_candidates", 200),
        extra={"checkpoints": {"retrieval": str(cfg.retrieval_ckpt), "ranker": cfg.get("ranker_ckpt")}},
    )
    summary = {
        "bundle": str(cfg.bundle_dir),
        "items": manifest["n_items"],
        "users": manifest["n_users"],
        "index": manifest["index"]["kind"],
        "ranker": bool(manifest["ranker"]),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print_summary("bundle written", summary)
    return summary


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="export")
def main(cfg: DictConfig) -> None:
    export(cfg)


if __name__ == "__main__":
    main()
