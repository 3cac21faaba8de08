"""Numeric precision that fits the machine: ``auto`` picks bf16 only where it is native.

On a CPU without native bf16 (AVX2 only: oneDNN reports no bf16 support) a bf16 matmul runs
~60x slower than fp32 (measured: 1024x256 @ 256x4096, 5.7 s vs 0.09 s), so a bf16 default
there turns a 5-minute run into hours, or a time-bounded run into a half-trained model.
"""

from __future__ import annotations

import logging
import warnings

import torch

log = logging.getLogger(__name__)

TRAINER_BF16 = ("bf16-mixed", "bf16-true", "bf16")
TEXT_PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16(device: str = "cpu") -> bool:
    """True where bf16 matmuls run at least as fast as fp32 (a CUDA device with bf16, or a CPU
    for which oneDNN reports bf16 support: AVX512-BF16 or AMX)."""
    if device in ("gpu", "cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def _accelerator_device(accelerator: str | None) -> str:
    if accelerator in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(accelerator)


def resolve_trainer_precision(precision: str | int | None, accelerator: str | None = "cpu") -> str:
    """Lightning's ``precision`` with ``auto`` resolved: ``bf16-mixed`` where native, else ``32``.

    An explicit bf16 setting on a device without native bf16 is kept (the user asked for it),
    with a warning that it will run many times slower.
    """
    device = _accelerator_device(accelerator)
    value = "auto" if precision is None else str(precision)
    if value == "auto":
        return "bf16-mixed" if native_bf16(device) else "32"  # logged by instantiate_trainer
    if value in TRAINER_BF16 and not native_bf16(device):
        warnings.warn(
            f"trainer.precision={value} on a {device} without native bf16: bf16 matmuls run many times "
            "slower than fp32 here (~60x measured on an AVX2 CPU); use trainer.precision=auto or 32",
            stacklevel=2,
        )
    return value


def resolve_text_precision(precision: str, device: str = "cpu") -> str:
    """``fp32`` | ``bf16`` for a text encoder, ``auto`` resolved as for training."""
    if precision not in TEXT_PRECISIONS:
        raise ValueError(f"text_encoder.precision must be one of {TEXT_PRECISIONS}, got {precision!r}")
    if precision == "auto":
        resolved = "bf16" if native_bf16(device) else "fp32"
        log.info("text_encoder.precision=auto resolved to %s on %s", resolved, device)
        return resolved
    if precision == "bf16" and not native_bf16(device):
        warnings.warn(
            f"text_encoder.precision=bf16 on a {device} without native bf16: encoding runs many times "
            "slower than fp32 here; use text_encoder.precision=auto or fp32",
            stacklevel=2,
        )
    return precision
