"""python -m recsys.export retrieval_ckpt=… [ranker_ckpt=…] [index=hnsw]: write a serving bundle."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from recsys.candidates.settings import CandidateSettings
from recsys.index.score_offsets import index_dim
from recsys.models.exported_nets import exported_nets, offset_override
from recsys.serving.bundle_writer import BundleParts, write_bundle
from recsys.utils.artifacts import checkpoint_file
from recsys.utils.hydra_helpers import CONFIG_PATH, exit_on_user_error, print_summary


def export(cfg: DictConfig) -> dict[str, Any]:
    torch.set_num_threads(int(cfg.threads)) if cfg.get("threads") else None
    started = time.perf_counter()
    retrieval = checkpoint_file(cfg.retrieval_ckpt, "retrieval_ckpt", "export")
    ranker = checkpoint_file(cfg.ranker_ckpt, "ranker_ckpt", "export") if cfg.get("ranker_ckpt") else None
    settings = (
        CandidateSettings.from_checkpoint(ranker) if ranker else CandidateSettings.from_dict(cfg.candidates)
    )
    overrides = {"num_candidates": cfg.get("num_candidates"), "max_history": cfg.get("max_history")}
    settings = replace(settings, **{k: v for k, v in overrides.items() if v})
    parts = BundleParts(**exported_nets(retrieval, ranker, **offset_override(cfg)), settings=settings)
    offset = (parts.retrieval_config or {}).get("cold_score_offset", 0.0)
    index = hydra.utils.instantiate(cfg.index, dim=index_dim(parts.catalog.shape[1], offset))
    extra = {"checkpoints": {"retrieval": str(cfg.retrieval_ckpt), "ranker": cfg.get("ranker_ckpt")}}
    manifest = write_bundle(
        cfg.bundle_dir, parts, index, extra=extra, known_candidates=bool(cfg.get("known_candidates", True))
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
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    export(cfg)


if __name__ == "__main__":
    main()
