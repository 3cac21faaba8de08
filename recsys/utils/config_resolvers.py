"""OmegaConf resolvers the configs use, registered when ``recsys`` is imported."""

from __future__ import annotations

from omegaconf import OmegaConf


def split_dir_suffix(validation_users: int | None, others: str, seed: int) -> str:
    """Where a leave-one-out split with a validation sample is prepared: next to the every-user
    split (``""``), never over it, one directory per sample."""
    if validation_users is None:
        return ""
    return (
        f"_val{validation_users}"
        + ("" if others == "train" else f"_{others}")
        + (f"_s{seed}" if seed else "")
    )


def register() -> None:
    if not OmegaConf.has_resolver("split_dir_suffix"):
        OmegaConf.register_new_resolver("split_dir_suffix", split_dir_suffix)
