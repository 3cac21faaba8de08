"""Item tower: gated fusion of a warm-item ID embedding and the projected text embedding."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PAD_IDX, COLD_IDX = 0, 1


def compact_id_rows(is_warm: np.ndarray) -> np.ndarray:
    """global item_idx -> ID-table row: warm items get 2, 3, …; everything else the cold row 1."""
    rows = np.full(len(is_warm), COLD_IDX, dtype=np.int64)
    rows[PAD_IDX] = PAD_IDX
    warm = np.flatnonzero(is_warm)
    rows[warm] = np.arange(2, 2 + len(warm))
    return rows


class ItemTower(nn.Module):
    """``forward(item_idx) -> [..., dim]`` item embeddings (L2-normalized unless ``normalize=False``).

    - ID embedding over warm items only; padding (0) and the cold row (1) are multiplied by
      zero, so their output and their gradient are exactly zero whatever the optimizer does;
      non-warm catalog items map to row 1, so only their text speaks.
    - ID dropout replaces IDs by the cold row in training, so the tower learns to cope with
      text alone (cold-start items at serving time).
    - fusion ``gate``: α = σ(W[id ∥ text]), α·id + (1−α)·text; ``concat``: Linear([id ∥ text]).
    """

    def __init__(
        self,
        text_embeddings: torch.Tensor,
        is_warm: np.ndarray,
        *,
        dim: int,
        id_dropout: float,
        use_text: bool,
        use_id: bool,
        fusion: str,
        sparse: bool,
        mlp: bool,
        normalize: bool,
    ):
        super().__init__()
        if fusion not in ("gate", "concat"):
            raise ValueError(f"fusion must be 'gate' or 'concat', got {fusion!r}")
        if not (use_text or use_id):
            raise ValueError("the item tower needs the ID embedding, the text embedding, or both")
        self.dim, self.id_dropout, self.use_text, self.use_id, self.fusion = (
            dim,
            id_dropout,
            use_text,
            use_id,
            fusion,
        )
        rows = compact_id_rows(np.asarray(is_warm, dtype=bool))
        self.register_buffer("id_rows", torch.as_tensor(rows), persistent=True)
        self.register_buffer(
            "text", torch.as_tensor(np.asarray(text_embeddings, dtype=np.float32)), persistent=False
        )
        n_rows = int(rows.max()) + 1
        # sparse=True: gradients hold only the rows a batch touched (see recsys.models.optim)
        self.id_embedding = nn.Embedding(n_rows, dim, padding_idx=PAD_IDX, sparse=sparse)
        nn.init.normal_(self.id_embedding.weight, std=0.05)
        with torch.no_grad():
            self.id_embedding.weight[:2].zero_()
        self.text_proj = nn.Linear(self.text.shape[1], dim)
        self.gate = nn.Linear(2 * dim, 1)
        self.concat = nn.Linear(2 * dim, dim) if fusion == "concat" else None
        # mlp=False, normalize=False: the item vector is the ID row itself (SASRec's shared item
        # embedding, scored by a plain inner product), which learns faster on sparse ID-only data
        self.mlp = (
            nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim), nn.ReLU(), nn.Linear(dim, dim))
            if mlp
            else nn.Identity()
        )
        self.normalize = normalize

    def id_part(self, item_idx: torch.Tensor) -> torch.Tensor:
        rows = self.id_rows[item_idx]
        if self.training and self.id_dropout > 0:
            drop = torch.rand(rows.shape, device=rows.device) < self.id_dropout
            rows = torch.where(drop & (rows > COLD_IDX), torch.full_like(rows, COLD_IDX), rows)
        live = (rows > COLD_IDX).unsqueeze(-1).to(self.id_embedding.weight.dtype)
        return self.id_embedding(rows) * live

    def fuse(self, item_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-MLP fused vector and the gate value α (1 where only the ID is used)."""
        id_vec = self.id_part(item_idx) if self.use_id else None
        text_vec = self.text_proj(self.text[item_idx]) if self.use_text else None
        return self._combine(id_vec, text_vec)

    def _combine(self, id_vec: torch.Tensor | None, text_vec: torch.Tensor | None):
        if id_vec is None:
            return text_vec, torch.zeros(text_vec.shape[:-1], device=text_vec.device)
        if text_vec is None:
            return id_vec, torch.ones(id_vec.shape[:-1], device=id_vec.device)
        both = torch.cat([id_vec, text_vec], dim=-1)
        if self.concat is not None:
            return self.concat(both), torch.full(both.shape[:-1], 0.5, device=both.device)
        alpha = torch.sigmoid(self.gate(both))
        return alpha * id_vec + (1 - alpha) * text_vec, alpha.squeeze(-1)

    def _output(self, fused: torch.Tensor) -> torch.Tensor:
        out = self.mlp(fused)
        return F.normalize(out, dim=-1) if self.normalize else out

    def forward(self, item_idx: torch.Tensor) -> torch.Tensor:
        fused, _ = self.fuse(item_idx)
        return self._output(fused)

    @torch.no_grad()
    def gate_values(self, chunk: int = 65_536) -> np.ndarray:
        """The gate α of every catalog item (eval mode: no ID dropout), for reports."""
        was_training = self.training
        self.eval()
        rows = torch.arange(COLD_IDX + 1, len(self.id_rows), device=self.id_rows.device)  # catalog rows
        alpha = torch.cat([self.fuse(rows[i : i + chunk])[1].float() for i in range(0, len(rows), chunk)])
        self.train(was_training)
        return alpha.cpu().numpy()

    def encode_text(self, text_embeddings: torch.Tensor) -> torch.Tensor:
        """The cold path: what an item with no trained ID row gets from its text alone (new items)."""
        if not self.use_text:
            raise ValueError("this item tower was trained without text; it cannot embed new items")
        text_vec = self.text_proj(text_embeddings.to(self.text_proj.weight.dtype))
        id_vec = torch.zeros_like(text_vec) if self.use_id else None  # the cold row is all zeros
        fused, _ = self._combine(id_vec, text_vec)
        return self._output(fused)

    def cold_path_state(self) -> dict[str, torch.Tensor]:
        """Weights the cold path needs (everything but the ID table), for export."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(("id_embedding", "id_rows"))}
