"""python -m recsys.evaluate ckpt_path=… [ranker_ckpt=…]: every test metric of a trained model (two-tower,
popularity, with ``ranker_ckpt`` the two-stage pipeline), shown and written by ``recsys.evaluation.report``,
on the dataset's test split (never a serving bundle: its histories include the test targets)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig

from recsys.candidates.two_stage import two_stage_results
from recsys.data.dataset import item_arrays
from recsys.evaluation.report import write_report
from recsys.models.exported_nets import offset_override
from recsys.models.two_tower_module import TwoTowerModule
from recsys.utils.artifacts import checkpoint_file
from recsys.utils.hydra_helpers import CONFIG_PATH, exit_on_user_error
from recsys.utils.trainer_setup import instantiate_trainer


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    ckpt = checkpoint_file(cfg.get("ckpt_path"), "ckpt_path", "evaluate")
    offset = offset_override(cfg)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    model = TwoTowerModule.load_from_checkpoint(
        ckpt, dataset_dir=str(datamodule.processed_dir), weights_only=True, **offset
    )
    trainer = instantiate_trainer(cfg.trainer, logger=False, callbacks=[])
    trainer.test(model, datamodule=datamodule)
    metrics = {**model.test_results}
    details = dict(model.test_details)
    if cfg.get("ranker_ckpt"):
        two_stage, ranker_details = two_stage_results(
            cfg.trainer, ckpt, checkpoint_file(cfg.ranker_ckpt, "ranker_ckpt", "evaluate")
        )
        metrics.update(two_stage)
        details.update(ranker_details)
    data = datamodule.dataset
    metrics |= {"split": "test", "n_users": data.n_rows("test"), "n_users_dataset": data.n_users}
    metrics |= {"n_items": data.n_items, "checkpoint": str(ckpt), "ranker_checkpoint": cfg.get("ranker_ckpt")}
    metrics["cold_score_offset"] = float(model.hparams.get("cold_score_offset", 0.0))
    if not trainer.is_global_zero:  # metrics are reduced over ranks; rank 0 writes them
        return metrics
    gates = model.item_tower.gate_values() if cfg.get("figures", True) else None
    return write_report(Path(cfg.paths.output_dir), metrics, details, gates, item_arrays(data)["train_count"])


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="evaluate")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
