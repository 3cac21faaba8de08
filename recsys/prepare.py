"""python -m recsys.prepare data=<name>: raw files -> prepared dataset directory."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from recsys.utils.hydra_helpers import CONFIG_PATH, exit_on_user_error, print_summary, seed_everything


def prepare(cfg: DictConfig) -> dict:
    seed_everything(cfg.seed)
    preparer = hydra.utils.instantiate(cfg.data.preparer)
    dataset = preparer.run() if cfg.force else preparer.ensure()
    m = dataset.manifest
    summary = {
        "path": str(dataset.path),
        "n_users": m["n_users"],
        "n_catalog_items": m["n_catalog_items"],
        "n_items_interacted": m["n_items_interacted"],
        "n_interactions": m["n_interactions"],
        **{f"rows/{k}": v for k, v in m["n_rows"].items()},
    }
    print_summary(f"prepared {cfg.data.name}", summary)
    return summary


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="prepare")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    prepare(cfg)


if __name__ == "__main__":
    main()
