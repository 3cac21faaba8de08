"""Two-stage test: a trained ranker on its retrieval model's candidates, rebuilt as when it trained."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from recsys.candidates.datamodule import CandidateDataModule
from recsys.models.ranker_module import RankerModule
from recsys.utils.trainer_setup import instantiate_trainer


def two_stage_results(trainer_cfg: DictConfig, retrieval_ckpt: Path, ranker_ckpt: Path) -> tuple[dict, dict]:
    """Test the ranker on the retrieval checkpoint's candidates, built as when it was trained."""
    datamodule = CandidateDataModule.for_ranker(ranker_ckpt, retrieval_ckpt)
    ranker = RankerModule.load_from_checkpoint(ranker_ckpt, map_location="cpu", weights_only=True)
    trainer = instantiate_trainer(trainer_cfg, logger=False, callbacks=[])
    trainer.test(ranker, datamodule=datamodule)
    keep = {k: v for k, v in ranker.test_results.items() if not k.startswith("retrieval")}
    return keep, {"two_stage": ranker.test_details["two_stage"]}
