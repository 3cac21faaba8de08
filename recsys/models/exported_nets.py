"""Trained checkpoints as the plain parts a serving bundle holds (eval-mode nets and their configs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recsys.models.ranker_module import RankerModule
from recsys.models.two_tower_module import TwoTowerModule
from recsys.models.user_tower import encoder_spec


def offset_override(cfg: Any) -> dict[str, float]:
    """``{"cold_score_offset": b}`` when a run overrides the checkpoint's offset, else ``{}``.

    The offset moves scores, not weights; a ranker learned its retrieval-score feature under the
    checkpoint's offset, so an override is refused next to one."""
    if cfg.get("cold_score_offset") is None:
        return {}
    if cfg.get("ranker_ckpt"):
        raise ValueError(
            "cold_score_offset cannot be overridden with ranker_ckpt: the ranker was trained on "
            "candidates scored with the retrieval checkpoint's offset; retrain it instead"
        )
    return {"cold_score_offset": float(cfg.cold_score_offset)}


def exported_nets(
    retrieval_ckpt: str | Path, ranker_ckpt: str | Path | None = None, **overrides: Any
) -> dict[str, Any]:
    """Keyword arguments of ``recsys.serving.bundle_writer.BundleParts`` (all but the settings);
    ``overrides``: retrieval hyperparameters that change scoring only (``cold_score_offset``)."""
    retrieval = TwoTowerModule.load_from_checkpoint(
        retrieval_ckpt, map_location="cpu", weights_only=True, **overrides
    ).eval()
    hp = retrieval.hparams
    name, params = encoder_spec(dict(hp.user_encoder))
    parts: dict[str, Any] = {
        "dataset": retrieval._dataset,
        "catalog": retrieval.encode_catalog(),
        "user_tower": retrieval.user_tower,
        "item_tower": retrieval.item_tower,
        "user_tower_config": {
            "encoder": name,
            "params": params,
            "dim": int(hp.dim),
            "normalize": bool(hp.get("normalize", True)),
        },
        "item_tower_config": {
            "dim": int(hp.dim),
            "use_text": bool(hp.use_text),
            "use_id": bool(hp.use_id),
            "fusion": str(hp.fusion),
            "mlp": bool(hp.get("item_mlp", True)),
            "normalize": bool(hp.get("normalize", True)),
            "text_dim": int(retrieval.item_tower.text.shape[1]),
        },
        "retrieval_config": {"cold_score_offset": float(hp.get("cold_score_offset", 0.0))},
    }
    if ranker_ckpt is not None:
        ranker = RankerModule.load_from_checkpoint(ranker_ckpt, map_location="cpu", weights_only=True).eval()
        rh = ranker.hparams
        parts["ranker"] = ranker.net
        parts["ranker_config"] = {
            "embedding_dim": int(rh.embedding_dim),
            "features": list(rh.features),
            "use_embeddings": bool(rh.use_embeddings),
            "hidden": list(rh.hidden),
            "dropout": float(rh.dropout),
            "cold_candidates": str(rh.cold_candidates),
            "prior_scale": float(ranker.net.prior_scale),
            # the declared attributes it reads, with their vocabularies (absent: none)
            **({"attributes": ranker.net.attributes} if ranker.net.has_attributes else {}),
        }
    return parts
