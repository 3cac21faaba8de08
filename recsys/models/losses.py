"""Sampled-softmax (InfoNCE) over mixed negatives, with each correction a small function.

For a batch of B users with positives p_1..p_B, and N global negatives g_1..g_N:

    logits_i = [ s(u_i, p_1) … s(u_i, p_B) | s(u_i, g_1) … s(u_i, g_N) ] / τ      (B + N columns)
    loss     = mean_i  CE(logits_i, label = i)                   (the positive is column i)

Under data parallelism the in-batch columns are every rank's positives (gathered with gradients),
so the pool grows with the world size: rank r's row i then has its positive in column r·B + i
(``positive_offset`` = r·B).

Corrections, applied to the logits before the softmax:
- accidental hits: a column whose item equals row i's positive (other than column i itself) is
  not a negative -> -inf;
- logQ (Yi et al., 2019): subtract log of the expected number of times the item appears among the
  sampled columns, per source: in-batch columns log(B · p_target(item)), global columns
  log(N · q_sample(item)). Subtracting it from the positive column too is what makes the
  estimator consistent with the full softmax.

All-position objective (SASRec-style): a causal user tower gives a vector u_p after every
history prefix p of a training window, each with its own next item y_p; all P positions of a
batch share one set of columns g_1..g_N (global negatives, the whole catalog, and/or the batch's
distinct targets):

    logits_p = [ s(u_p, y_p) | s(u_p, g_1) … s(u_p, g_N) ] / τ − logQ      (1 + N columns)
    loss     = mean_p  CE(logits_p, label = 0)

with g_j = y_p masked (an accidental hit). With the whole catalog as columns this is the exact
softmax at every position; on one prefix it is the last-position loss of that prefix.

Seen items (optional): g_j = an item the user read before position p (other than y_p) -> -inf.
Evaluation never recommends a user's earlier items, so pushing them down teaches nothing it
scores and works against the positions where they were the positive.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from recsys.models.catalog_cross_entropy import block_rows, catalog_cross_entropy, masked_positions

LOGQ_MODES = ("none", "in_batch", "both")


def own_columns(logits: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """[B, C] True at (i, offset + i): row i's positive column."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    own = torch.zeros(logits.shape, dtype=torch.bool, device=logits.device)
    own[rows, rows + offset] = True
    return own


def mask_accidental_hits(
    logits: torch.Tensor, positive_ids: torch.Tensor, column_ids: torch.Tensor, offset: int = 0
) -> torch.Tensor:
    """-inf where column j holds row i's positive item (``positive_ids`` [B]), except its own column."""
    hits = positive_ids[:, None] == column_ids[None, :]
    return logits.masked_fill(hits & ~own_columns(logits, offset), float("-inf"))


def mask_in_batch_negatives(logits: torch.Tensor, n_in_batch: int, offset: int = 0) -> torch.Tensor:
    """-inf on the in-batch columns other than each row's own: other users' positives are not negatives.

    Used when the global negatives already are the whole catalog, where in-batch columns would
    count those items twice (a popularity-biased softmax instead of the exact one).
    """
    in_batch = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
    in_batch[:n_in_batch] = True
    return logits.masked_fill(in_batch[None, :] & ~own_columns(logits, offset), float("-inf"))


def earlier_items(history: torch.Tensor) -> torch.Tensor:
    """[B, L] windows -> [B, L, L]: at position t, the items read so far (``history[:, :t+1]``), 0 after."""
    steps = torch.arange(history.shape[1], device=history.device)
    read = steps[None, :] <= steps[:, None]  # [t, s]: item s is read by position t
    return torch.where(read[None], history[:, None, :], torch.zeros((), dtype=history.dtype))


def mask_seen_items(
    logits: torch.Tensor, seen_ids: torch.Tensor, column_ids: torch.Tensor, positive_ids: torch.Tensor
) -> torch.Tensor:
    """-inf where column j (item ``column_ids[j]``) is among row p's ``seen_ids[p]`` ([P, S], 0 = no
    item) and is not row p's positive. Memory stays at the [P, N] of the logits: each seen item is
    located among the sorted distinct columns instead of compared with every column."""
    ordered = len(column_ids) < 2 or bool((column_ids[1:] > column_ids[:-1]).all())
    # the whole pool's columns are sorted distinct ids: slot j is column j, no gather needed
    values, column_slot = (column_ids, None) if ordered else torch.unique(column_ids, return_inverse=True)
    slot = torch.searchsorted(values, seen_ids).clamp(max=max(len(values) - 1, 0))
    hit = (values[slot] == seen_ids) & (seen_ids > 0) & (seen_ids != positive_ids[:, None])
    seen = torch.zeros(logits.shape[0], len(values) + 1, dtype=torch.bool, device=logits.device)
    seen.scatter_(1, torch.where(hit, slot, len(values)), True)  # misses land in the spare slot
    seen = seen[:, :-1] if column_slot is None else seen[:, column_slot]
    return logits.masked_fill(seen, float("-inf"))


def logq_correction(logits: torch.Tensor, log_expected_count: torch.Tensor) -> torch.Tensor:
    """Subtract each column's log expected sample count (broadcast over rows)."""
    return logits - log_expected_count[None, :]


def sampled_softmax_loss(
    user: torch.Tensor,
    positive: torch.Tensor,
    positive_ids: torch.Tensor,
    temperature: float,
    negatives: torch.Tensor | None = None,
    negative_ids: torch.Tensor | None = None,
    positive_log_q: torch.Tensor | None = None,
    negative_log_q: torch.Tensor | None = None,
    mask_hits: bool = True,
    in_batch_negatives: bool = True,
    positive_offset: int = 0,
) -> torch.Tensor:
    """InfoNCE of ``user`` [B, d] against in-batch ``positive`` [P, d] and global ``negatives`` [N, d].

    ``positive`` holds P ≥ B in-batch columns (P = B on one process; every rank's positives under
    data parallelism), row i's own positive at column ``positive_offset`` + i.
    ``positive_log_q`` [P] / ``negative_log_q`` [N] are the log expected counts used by the logQ
    correction (None = no correction for that source).
    """
    columns = positive if negatives is None else torch.cat([positive, negatives])
    column_ids = positive_ids if negative_ids is None else torch.cat([positive_ids, negative_ids])
    logits = user @ columns.T / temperature
    if positive_log_q is not None or negative_log_q is not None:
        zeros_b = torch.zeros(positive.shape[0], device=logits.device, dtype=logits.dtype)
        zeros_n = torch.zeros(columns.shape[0] - positive.shape[0], device=logits.device, dtype=logits.dtype)
        log_q = torch.cat(
            [
                positive_log_q.to(logits.dtype) if positive_log_q is not None else zeros_b,
                negative_log_q.to(logits.dtype) if negative_log_q is not None else zeros_n,
            ]
        )
        logits = logq_correction(logits, log_q)
    batch = user.shape[0]
    if mask_hits:
        own_ids = positive_ids[positive_offset : positive_offset + batch]
        logits = mask_accidental_hits(logits, own_ids, column_ids, positive_offset)
    if not in_batch_negatives:
        logits = mask_in_batch_negatives(logits, positive.shape[0], positive_offset)
    labels = torch.arange(batch, device=logits.device) + positive_offset
    return F.cross_entropy(logits.float(), labels)


def _summed_loss(
    user: torch.Tensor,
    positive: torch.Tensor,
    positive_ids: torch.Tensor,
    positive_log_q: torch.Tensor | None,
    seen_ids: torch.Tensor | None,
    shared: torch.Tensor,
    shared_ids: torch.Tensor,
    temperature: float,
    shared_log_q: torch.Tensor | None,
    mask_hits: bool,
) -> torch.Tensor:
    """Σ_p CE over [own positive | shared columns], as ``logaddexp(own, logsumexp(shared)) − own``:
    the [P, 1 + N] logit matrix is never concatenated (one pass over P × N less per step)."""
    scaled = (user / temperature).float()
    own = (scaled * positive.float()).sum(-1)
    logits = scaled @ shared.float().T
    if positive_log_q is not None:
        own = own - positive_log_q.float()
    if shared_log_q is not None:
        logits = logq_correction(logits, shared_log_q.float())
    if mask_hits:
        logits = logits.masked_fill(positive_ids[:, None] == shared_ids[None, :], float("-inf"))
    if seen_ids is not None:
        logits = mask_seen_items(logits, seen_ids, shared_ids, positive_ids)
    return (torch.logaddexp(own, torch.logsumexp(logits, dim=1)) - own).sum()


def _chunked_mean(fn, rows: tuple, fixed: tuple, chunk_size: int | None) -> torch.Tensor:
    """``fn(*rows, *fixed) / P``, over chunks of ``chunk_size`` rows whose intermediates are
    recomputed in the backward pass instead of stored: the same value and gradients, with memory
    bounded by one chunk's logits (P × N floats would be ~0.9 GB at 51K positions × 4,096 columns)."""
    n = rows[0].shape[0]
    if n == 0:
        return rows[0].sum() * 0.0
    if not chunk_size or n <= chunk_size:
        return fn(*rows, *fixed) / n
    total = rows[0].new_zeros((), dtype=torch.float32)
    for lo in range(0, n, chunk_size):
        part = [r[lo : lo + chunk_size] if r is not None else None for r in rows]
        total = total + checkpoint(fn, *part, *fixed, use_reentrant=False)
    return total / n


def all_positions_loss(
    user: torch.Tensor,
    positive: torch.Tensor,
    positive_ids: torch.Tensor,
    shared: torch.Tensor,
    shared_ids: torch.Tensor,
    temperature: float,
    positive_log_q: torch.Tensor | None = None,
    shared_log_q: torch.Tensor | None = None,
    mask_hits: bool = True,
    chunk_size: int | None = None,
    seen_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over P positions of the softmax loss above: ``user``/``positive`` [P, d], ``shared`` [N, d];
    ``seen_ids`` [P, S] masks each position's earlier items (0 = none); ``chunk_size`` bounds
    memory (see ``_chunked_mean``)."""
    rows = (user, positive, positive_ids, positive_log_q, seen_ids)
    return _chunked_mean(
        _summed_loss, rows, (shared, shared_ids, temperature, shared_log_q, mask_hits), chunk_size
    )


def exact_softmax_loss(
    user: torch.Tensor,
    target_columns: torch.Tensor,
    catalog: torch.Tensor,
    temperature: float,
    chunk_size: int | None = None,
    seen_ids: torch.Tensor | None = None,
    catalog_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """``all_positions_loss`` when the shared columns are the whole catalog, each item once:
    row p's positive is then catalog column ``target_columns[p]`` and the only accidental hit, so
    the masked [own | catalog] softmax is plain cross-entropy over the catalog (no own column),
    computed in blocks of at most ``chunk_size`` rows (``catalog_cross_entropy``). ``seen_ids``
    needs ``catalog_ids`` (the item in each column)."""
    if seen_ids is not None and catalog_ids is None:
        raise ValueError("seen_ids needs catalog_ids: the item each catalog column holds")
    n = user.shape[0]
    if n == 0:
        return user.sum() * 0.0
    masked = masked_positions(target_columns, seen_ids, catalog_ids) if seen_ids is not None else None
    block = block_rows(catalog.shape[0], chunk_size, user.device.type)
    return catalog_cross_entropy(user / temperature, catalog, target_columns, masked, block) / n
