"""OmegaConf resolvers the configs use, registered when ``recsys`` is imported."""

from __future__ import annotations

from omegaconf import OmegaConf


def split_dir_suffix(validation_users: int | None, others: str, seed: int, skip_last: int = 0) -> str:
    """Where a split with a validation sample (or skipped last interactions) is prepared: next to
    the plain split (``""``), never over it, one directory per variant."""
    suffix = f"_skip{skip_last}" if skip_last else ""
    if validation_users is None:
        return suffix
    suffix += f"_val{validation_users}" + ("" if others == "train" else f"_{others}")
    return suffix + (f"_s{seed}" if seed else "")


def register() -> None:
    if not OmegaConf.has_resolver("split_dir_suffix"):
        OmegaConf.register_new_resolver("split_dir_suffix", split_dir_suffix)
