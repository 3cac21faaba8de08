"""OmegaConf resolvers the configs use, registered when ``recsys`` is imported."""

from __future__ import annotations

from omegaconf import OmegaConf


def split_dir_suffix(
    validation_users: int | None, others: str, seed: int, skip_last: int = 0, test_targets: int = 1
) -> str:
    """Where a split with a validation sample (or skipped last interactions, or several test
    targets a user) is prepared: next to the plain split (``""``), never over it, one directory per
    variant."""
    suffix = f"_skip{skip_last}" if skip_last else ""
    suffix += f"_test{test_targets}" if test_targets != 1 else ""
    if validation_users is None:
        return suffix
    suffix += f"_val{validation_users}" + ("" if others == "train" else f"_{others}")
    return suffix + (f"_s{seed}" if seed else "")


def register() -> None:
    if not OmegaConf.has_resolver("split_dir_suffix"):
        OmegaConf.register_new_resolver("split_dir_suffix", split_dir_suffix)
