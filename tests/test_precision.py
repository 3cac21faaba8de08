"""precision=auto: bf16 only where the hardware runs it natively, with the probe forced both ways."""

from __future__ import annotations

import pytest
import torch

from recsys.utils import precision as P


@pytest.fixture
def bf16_native(monkeypatch):
    def set_native(value: bool) -> None:
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: value)

    return set_native


@pytest.mark.parametrize(("native", "trainer", "text"), [(True, "bf16-mixed", "bf16"), (False, "32", "fp32")])
def test_auto_resolves_by_the_cpu_probe(bf16_native, native, trainer, text):
    bf16_native(native)
    assert P.native_bf16("cpu") is native
    assert P.resolve_trainer_precision("auto", "cpu") == trainer
    assert P.resolve_trainer_precision(None, "cpu") == trainer
    assert P.resolve_text_precision("auto", "cpu") == text


def test_explicit_bf16_without_native_support_warns_and_is_kept(bf16_native):
    bf16_native(False)
    with pytest.warns(UserWarning, match="many times slower"):
        assert P.resolve_trainer_precision("bf16-mixed", "cpu") == "bf16-mixed"
    with pytest.warns(UserWarning, match="many times slower"):
        assert P.resolve_text_precision("bf16", "cpu") == "bf16"


def test_explicit_values_pass_through_silently(bf16_native, recwarn):
    bf16_native(True)
    assert P.resolve_trainer_precision("bf16-mixed", "cpu") == "bf16-mixed"
    bf16_native(False)
    assert P.resolve_trainer_precision(32, "cpu") == "32"
    assert P.resolve_text_precision("fp32", "cpu") == "fp32"
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


def test_unknown_text_precision_is_an_error():
    with pytest.raises(ValueError, match="text_encoder.precision must be one of"):
        P.resolve_text_precision("fp16", "cpu")


def test_gpu_without_cuda_is_not_native():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert P.resolve_trainer_precision("auto", "gpu") == "32"


def test_text_encoder_cache_key_holds_the_resolved_precision(bf16_native):
    from recsys.data.text_embeddings import SentenceTransformerEncoder

    bf16_native(False)
    assert '"precision": "fp32"' in SentenceTransformerEncoder(precision="auto").cache_key
    bf16_native(True)
    assert '"precision": "bf16"' in SentenceTransformerEncoder(precision="auto").cache_key
