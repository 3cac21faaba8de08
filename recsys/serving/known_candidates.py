"""The retrieval stage of one request, and known users' candidates computed with it at export.

A known user's vector and seen items are fixed when the bundle is written, and so is the ANN
search they feed: the bundle stores every known user's K candidates with their exact scores
(``user_candidates.npy`` / ``user_candidate_scores.npy``, computed by ``retrieve``, the function
the serving graph runs for anonymous histories), so a known user's request skips the search and
the exact re-scoring. With a ranker, the bundle also stores its logit for each of those candidates
(``user_candidate_logits.npy``, computed by the serving graph's own ranking of the exported bundle),
so a known user's request skips the ranker's features and network too while their list stands as
exported. Catalog changes made over HTTP stay exact (``merge_added``): a cached list that holds a
deleted item is searched and ranked again; items added since the export are scored exactly and
merged in, and the merged list ranked live. Whether a flat index's search and the cache agree for
every user is a test.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np
import torch
from rich.progress import track

from recsys.data.seen_items import SeenItems
from recsys.index.faiss_index import ItemIndex
from recsys.index.score_offsets import index_queries

PAD = 0  # item_idx of padding: a row with fewer than K candidates (a catalog smaller than K + seen)


def retrieve(
    index: ItemIndex,
    embeddings: torch.Tensor,
    is_cold: torch.Tensor,
    offset: float,
    user: torch.Tensor,
    seen: np.ndarray,
    k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(item_idx [n ≤ k], exact score [n]) of one user vector [1, d], best first, ``seen`` excluded.

    ``embeddings`` / ``is_cold`` are indexed by item_idx. The index may store quantized vectors,
    and the ranker learned its score and rank features from exact top-K lists: the candidates
    are re-scored exactly (plus the text-only items' ``offset``) and sorted, ties by index order.
    """
    _, cand = index.search(index_queries(user.numpy(), offset), k, exclude=[seen])
    cand_t = torch.from_numpy(cand[0, : int((cand[0] >= 0).sum())])
    exact = exact_scores(embeddings, is_cold, offset, user, cand_t)
    by_score = torch.from_numpy(np.argsort(-exact.numpy(), kind="stable"))
    return cand_t[by_score], exact[by_score]


def exact_scores(
    embeddings: torch.Tensor, is_cold: torch.Tensor, offset: float, user: torch.Tensor, items: torch.Tensor
) -> torch.Tensor:
    """[n]: the retrieval score of item_idx ``items`` [n] for one user vector [1, d], exactly (not
    the index's quantized one), text-only items' ``offset`` included."""
    # a product and a sum per row, not a matrix-vector product: BLAS's gemv rounds a row's dot
    # product differently with the number of rows, and a cached list merged with added items
    # must score each item to the bit as a search over the same items does
    exact = (embeddings.index_select(0, items) * user[0]).sum(dim=-1)
    return exact + offset * is_cold.index_select(0, items) if offset else exact


def merge_added(
    cand: torch.Tensor, scores: torch.Tensor, added: torch.Tensor, added_scores: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact top ``k`` of a cached list (best first) and items added since, cached items first
    among equal scores (as the index's order breaks ties)."""
    ids, values = torch.cat([cand, added]), torch.cat([scores, added_scores])
    order = torch.from_numpy(np.argsort(-values.numpy(), kind="stable")[:k])
    return ids[order], values[order]


@dataclass
class KnownCandidates:
    """Row r: users.parquet row r's candidates (item_idx, ``PAD`` after the last) and exact scores."""

    items: np.ndarray  # int32 [n_users, k]
    scores: np.ndarray  # float32 [n_users, k], -inf at padding
    logits: np.ndarray | None = None  # float32 [n_users, k]: the ranker's, NaN where not ranked

    @property
    def k(self) -> int:
        return int(self.items.shape[1])

    def row(self, r: int) -> tuple[torch.Tensor, torch.Tensor]:
        items = self.items[r]
        n = int(np.count_nonzero(items != PAD))
        return torch.from_numpy(items[:n].astype(np.int64)), torch.from_numpy(self.scores[r, :n])

    def ranked(self, r: int, n: int) -> torch.Tensor | None:
        """The ranker's logits of row r's ``n`` candidates as exported, None where there are none
        (no ranker, or a user the export did not rank)."""
        if self.logits is None or n == 0 or np.isnan(self.logits[r, 0]):
            return None
        return torch.from_numpy(self.logits[r, :n])

    @classmethod
    def compute(
        cls,
        index: ItemIndex,
        embeddings: torch.Tensor,
        is_cold: torch.Tensor,
        offset: float,
        users: np.ndarray,
        seen: SeenItems,
        k: int,
    ) -> KnownCandidates:
        """Every known user's ``retrieve`` (one search a user, exactly as a request would run it)."""
        items = np.full((len(users), k), PAD, dtype=np.int32)
        scores = np.full((len(users), k), -np.inf, dtype=np.float32)
        vectors = torch.from_numpy(np.asarray(users, dtype=np.float32))
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # one query a search: more OpenMP threads only wait on each other
        try:
            for r in track(range(len(users)), description="known users' candidates", transient=True):
                user_seen = seen.indices[seen.indptr[r] : seen.indptr[r + 1]]
                got, exact = retrieve(index, embeddings, is_cold, offset, vectors[r : r + 1], user_seen, k)
                items[r, : len(got)] = got.numpy()
                scores[r, : len(got)] = exact.numpy()
        finally:
            faiss.omp_set_num_threads(threads)
        return cls(items, scores)
