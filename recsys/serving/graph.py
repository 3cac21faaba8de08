"""The combined inference graph, pure torch/FAISS (no HTTP): what the server runs per request.

history -> user tower (one batched pass over the encoded history) -> ANN top-K (seen items
excluded) -> ranker -> top-N. Fewer than ``min_history`` known items -> popularity fallback
(by the categories of the given items where there are any, else global).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd
import torch

from recsys.data.dataset import FIRST_ITEM_IDX
from recsys.features.category_features import CROSSES, POPULARITY_CROSSES, ItemCategories
from recsys.features.ranker_features import ItemFeatureTables, candidate_features
from recsys.index.score_offsets import index_vectors
from recsys.serving.bundle import Bundle
from recsys.serving.known_candidates import exact_scores, merge_added, retrieve


class UnknownUserError(KeyError):
    pass


class UnknownItemError(KeyError):
    pass


class InferenceGraph:
    def __init__(self, bundle: Bundle, min_history: int = 3, max_top_k: int = 100, threads: int | None = 1):
        if threads:
            torch.set_num_threads(threads)
            faiss.omp_set_num_threads(threads)
        self.bundle = bundle
        m = bundle.manifest
        self.min_history, self.max_top_k = int(min_history), int(max_top_k)
        candidates = m["candidates"]  # the settings the ranker was trained with
        self.max_history, self.num_candidates = (
            int(candidates["max_history"]),
            int(candidates["num_candidates"]),
        )
        self.last_n = int(candidates["last_n"])
        # text-only items' score offset (absent in bundles written before the option: none)
        self.cold_score_offset = float((m.get("retrieval") or {}).get("cold_score_offset", 0.0))
        self.exclude_seen = bool(m.get("exclude_seen", True))  # bundles before the switch: excluded
        items = bundle.items
        # a numpy array of str: per-request element access costs ~15 µs less than a pandas Index
        self.item_ids = items["item_id"].astype(str).to_numpy(dtype=object)
        self.item_idx = items["item_idx"].to_numpy()
        self.titles = items["title"].to_numpy()
        self.user_rows = pd.Index(bundle.users["user_id"].astype(str))
        # per-request lookups are dict hits; pandas' get_indexer costs ~0.3 ms per call
        self._row_of = {u: i for i, u in enumerate(self.user_rows)}
        self._pos_of = {item: i for i, item in enumerate(self.item_ids)}
        histories = bundle.users["history"]
        lengths = histories.map(len).to_numpy()
        flat = (
            pd.Index(self.item_ids).get_indexer(np.concatenate(histories.to_numpy()).astype(str))
            if lengths.sum()
            else []
        )
        self._history_idx = np.asarray(flat, dtype=np.int64) + FIRST_ITEM_IDX
        self._history_ptr = np.concatenate([[0], np.cumsum(lengths)])
        popularity = items["popularity"].to_numpy()
        self.popularity = popularity.astype(np.int64)
        self.by_popularity = self.item_idx[np.argsort(-popularity, kind="stable")]
        # per-category item lists, most popular first (for the cold-user fallback)
        cats = (
            items[["item_idx", "categories", "popularity"]]
            .explode("categories")
            .dropna(subset=["categories"])
        )
        cats = cats.sort_values(["categories", "popularity"], ascending=[True, False], kind="stable")
        self.category_items = {c: g["item_idx"].to_numpy() for c, g in cats.groupby("categories", sort=False)}
        self.categories = items["categories"].to_numpy()
        n = len(items) + FIRST_ITEM_IDX
        warm = np.zeros(n, dtype=bool)
        warm[self.item_idx] = items["is_warm"].to_numpy()
        counts = np.zeros(n, dtype=np.int64)
        counts[self.item_idx] = popularity
        # the ranker's category codes, built as for its training lists (the same function); none
        # when the ranker reads no category cross (they cost ~0.3 ms a request at 434K items)
        crosses = {*CROSSES, *POPULARITY_CROSSES} & set((m.get("ranker") or {}).get("features", []))
        codes = ItemCategories.from_lists(
            self.item_idx, self.categories.tolist() if crosses else [[]] * len(self.item_idx), n
        )
        self.tables = ItemFeatureTables.from_arrays(counts, warm, bundle.text_embeddings, codes)
        self.recent = np.zeros(n, dtype=np.int64)
        self.recent[self.item_idx] = items["recent_popularity"].to_numpy()
        self.age_days = np.full(n, -1.0, dtype=np.float32)  # bundles written before item_age: none
        if "age_days" in items:
            self.age_days[self.item_idx] = items["age_days"].to_numpy()
        self.embeddings = torch.from_numpy(
            np.concatenate(
                [np.zeros((2, bundle.item_embeddings.shape[1]), np.float32), bundle.item_embeddings]
            )
        )
        self.exported_rows = n  # item_idx rows from the export; items added over HTTP come after
        self.removed = np.zeros(n, dtype=bool)  # by item_idx: deleted over HTTP, never returned
        self.applied_seq = 0  # the last catalog change replayed (recsys.serving.catalog_changes)
        self._text_encoder = None

    @classmethod
    def from_bundle(cls, path: str | Path, **kwargs: Any) -> InferenceGraph:
        return cls(Bundle.load(path), **kwargs)

    # ------------------------------------------------------------------ lookups
    def _row_of_user(self, user_id: str) -> int:
        row = self._row_of.get(str(user_id))
        if row is None:
            raise UnknownUserError(f"unknown user_id {user_id!r}")
        return row

    def user_history_idx(self, user_id: str) -> np.ndarray:
        return self._row_history(self._row_of_user(user_id))

    def _row_history(self, row: int) -> np.ndarray:
        """item_idx of users.parquet row ``row``'s history, oldest first."""
        return self._history_idx[self._history_ptr[row] : self._history_ptr[row + 1]]

    def to_item_idx(self, item_ids: list[str]) -> tuple[np.ndarray, list[str]]:
        pos = [self._pos_of.get(str(i), -1) for i in item_ids]
        unknown = [str(i) for i, p in zip(item_ids, pos, strict=True) if p < 0]
        return self.item_idx[np.asarray([p for p in pos if p >= 0], dtype=np.int64)], unknown

    def item(self, item_id: str) -> dict[str, Any]:
        pos = self._pos_of.get(str(item_id), -1)
        if pos < 0 or self.removed[self.item_idx[pos]]:
            raise UnknownItemError(f"unknown item_id {item_id!r}")
        idx = self.item_idx[pos]
        return {
            "item_id": str(self.item_ids[pos]),
            "title": str(self.titles[pos]),
            "categories": [str(c) for c in self.categories[pos]],
            "popularity": int(self.popularity[pos]),
            "is_warm": bool(self.tables.is_cold[idx] == 0),
        }

    def history(self, user_id: str, limit: int = 50) -> dict[str, Any]:
        row = self._row_of_user(user_id)
        history = list(self.bundle.users["history"].iat[row])[-limit:]
        times = list(self.bundle.users["timestamps"].iat[row])[-limit:]
        pos = [self._pos_of[str(i)] for i in history]
        return {
            "user_id": str(user_id),
            "items": [
                {"item_id": str(i), "title": str(self.titles[p]), "timestamp": None if t is None else int(t)}
                for i, p, t in zip(history, pos, times, strict=True)
            ],
        }

    # ------------------------------------------------------------------ recommending
    def recommend(
        self, user_id: str | None = None, history: list[str] | None = None, top_k: int = 10
    ) -> dict[str, Any]:
        """Known user (``user_id``) or anonymous (``history`` of item ids, oldest first)."""
        if not 1 <= top_k <= self.max_top_k:
            raise ValueError(f"top_k must be in 1..{self.max_top_k}, got {top_k}")
        unknown: list[str] = []
        cached, row = None, -1  # row −1: a user the bundle does not know (no attributes)
        if user_id is not None:
            row = self._row_of_user(user_id)
            hist = self.user_history_idx(user_id)
            b = self.bundle.seen
            seen = b.indices[b.indptr[row] : b.indptr[row + 1]]
            cached = torch.from_numpy(self.bundle.user_embeddings[row])[None]  # computed at export
        else:
            hist, unknown = self.to_item_idx(list(history or []))
            seen = np.unique(hist) if self.exclude_seen else hist[:0]
        hist = hist[-self.max_history :]
        if len(hist) < self.min_history:
            strategy, items, scores = "popular", *self._popular(hist, seen, top_k)
        else:
            strategy, items, scores = "two_stage", *self._two_stage(hist, seen, top_k, cached, row)
        out: dict[str, Any] = {  # keys in the order of the response schemas (the JSON as sent)
            **({"user_id": str(user_id)} if user_id is not None else {}),
            "strategy": strategy,
            "items": [
                {
                    "item_id": str(self.item_ids[i - FIRST_ITEM_IDX]),
                    "title": str(self.titles[i - FIRST_ITEM_IDX]),
                    "score": float(s),
                    "rank": r + 1,
                }
                for r, (i, s) in enumerate(zip(items, scores, strict=True))
            ],
        }
        if user_id is None:
            out["unknown_items"] = unknown
        return out

    def _popular(self, hist: np.ndarray, seen: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
        pools = [self.category_items.get(c, []) for i in hist for c in self.categories[i - FIRST_ITEM_IDX]]
        pool = np.unique(np.concatenate(pools)) if pools and any(len(p) for p in pools) else np.zeros(0, int)
        pop_score = self.tables.log_popularity.numpy()  # log1p(train interactions), per item_idx
        ranked = pool[np.argsort(-pop_score[pool], kind="stable")] if len(pool) else pool
        # top up with global popularity when the categories hold too few unseen items
        merged = np.concatenate([ranked, self.by_popularity])
        _, first = np.unique(merged, return_index=True)
        merged = merged[np.sort(first)]
        merged = merged[~np.isin(merged, seen) & ~self.removed[merged]][:top_k]
        return merged, pop_score[merged]

    @torch.inference_mode()  # no autograd bookkeeping at all: ~10% of the ranker's time
    def _two_stage(
        self,
        hist: np.ndarray,
        seen: np.ndarray,
        top_k: int,
        user: torch.Tensor | None = None,
        user_row: int = -1,
    ) -> tuple[np.ndarray, np.ndarray]:
        history = torch.from_numpy(hist.astype(np.int64))[None]
        if user is None:
            user = self.bundle.user_tower.encode_one(self.embeddings.index_select(0, history[0]))
        cand_t, exact, logits = self._candidates(user, seen, max(self.num_candidates, top_k), user_row)
        ranker = self.bundle.ranker
        if ranker is None:
            return cand_t[:top_k].numpy(), exact[:top_k].numpy()
        if logits is None:
            logits = self._ranker_logits(history, user, cand_t, exact, user_row)
        is_cold = self.tables.is_cold.index_select(0, cand_t)
        final = ranker.final_scores(
            logits[None], is_cold[None], torch.ones_like(is_cold, dtype=torch.bool)[None]
        )
        order = np.argsort(-final[0].numpy(), kind="stable")[:top_k]
        return cand_t.numpy()[order], logits.numpy()[order]

    def _ranker_logits(
        self,
        history: torch.Tensor,
        user: torch.Tensor,
        cand_t: torch.Tensor,
        exact: torch.Tensor,
        user_row: int,
    ) -> torch.Tensor:
        """[K]: the ranker's logit of each candidate (``history`` [1, L], ``user`` [1, d])."""
        ranker = self.bundle.ranker
        # the item vectors only where the ranker reads them
        items = self.embeddings.index_select(0, cand_t) if ranker.use_embeddings else None
        recent = torch.from_numpy(self.recent[cand_t.numpy()])[None]
        age = torch.from_numpy(self.age_days[cand_t.numpy()])[None]
        feats = candidate_features(
            self.tables,
            cand_t[None],
            exact[None],
            recent,
            self.bundle.transitions,
            history,
            torch.tensor([history.shape[1]]),
            self.last_n,
            age_days=age,
        )
        if self.bundle.attributes is not None:  # the declared attributes, as in its training lists
            feats = torch.cat(
                [feats, self.bundle.attributes.values(cand_t[None], torch.tensor([user_row]))], dim=-1
            )
        return ranker.score_user(user[0], items, feats[0])

    @torch.inference_mode()
    def known_user_logits(self, row: int) -> np.ndarray:
        """The ranker's logits of users.parquet row ``row``'s exported candidates, as that user's
        request computes them (what the export stores so that the request need not)."""
        known = self.bundle.candidates
        if known is None or self.bundle.ranker is None:
            raise ValueError("known users' logits need the bundle's candidates and a ranker")
        cand, exact = known.row(row)
        hist = self._row_history(row)[-self.max_history :]
        if len(cand) == 0 or len(hist) == 0:
            return np.zeros(0, dtype=np.float32)
        history = torch.from_numpy(hist.astype(np.int64))[None]
        user = torch.from_numpy(self.bundle.user_embeddings[row])[None]
        return self._ranker_logits(history, user, cand, exact, row).numpy()

    def _candidates(
        self, user: torch.Tensor, seen: np.ndarray, k: int, user_row: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The retrieval stage: a known user's candidates as computed at export (while none of them
        was deleted since, merged with the items added since), else a search; with the ranker's
        logits from the export while the list stands as exported (else None: rank it)."""
        known = self.bundle.candidates
        if user_row >= 0 and known is not None and k <= known.k:
            cand, exact = known.row(user_row)
            if not self.removed[cand.numpy()].any():
                added = self._added_items()
                if not len(added):
                    return cand, exact, known.ranked(user_row, len(cand))
                tables = self.tables
                scores = exact_scores(self.embeddings, tables.is_cold, self.cold_score_offset, user, added)
                return *merge_added(cand, exact, added, scores, k), None
        searched = retrieve(
            self.bundle.index, self.embeddings, self.tables.is_cold, self.cold_score_offset, user, seen, k
        )
        return *searched, None

    def _added_items(self) -> torch.Tensor:
        """item_idx of the live items added over HTTP since the export."""
        added = np.arange(self.exported_rows, len(self.embeddings))
        return torch.from_numpy(added[~self.removed[added]])

    # ------------------------------------------------------------------ catalog changes
    def embed_items(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(item-tower vectors, text vectors) of new items from their text alone (the cold path)."""
        if self._text_encoder is None:
            self._text_encoder = self.bundle.text_encoder()
        text = torch.from_numpy(self._text_encoder.encode(list(texts)).astype(np.float32))
        with torch.no_grad():
            vectors = self.bundle.item_tower.encode_text(text)
        return vectors.numpy(), text.numpy()

    def add_items(self, item_ids: list[str], titles: list[str], texts: list[str]) -> np.ndarray:
        """Embed new items from their text and index them (searchable at once)."""
        vectors, text = self.embed_items(texts)
        return self.insert_items(item_ids, titles, [[] for _ in item_ids], vectors, text)

    def insert_items(
        self,
        item_ids: list[str],
        titles: list[str],
        categories: list[list[str]],
        vectors: np.ndarray,
        text: np.ndarray,
    ) -> np.ndarray:
        """Add items with given vectors: new item_idx rows, indexed as text-only (cold) items. An
        id that was deleted may come back (as a new row); a live id is refused."""
        live = [i for i in item_ids if self.is_live(str(i))]
        if live:
            raise ValueError(f"item_id already in the catalog: {live[:10]}")
        n_new = len(item_ids)
        start = len(self.embeddings)
        new_idx = np.arange(start, start + n_new, dtype=np.int64)
        vectors_t = torch.from_numpy(np.asarray(vectors, dtype=np.float32).reshape(n_new, -1))
        is_cold = np.ones(n_new, dtype=bool)  # new items have text only
        self.bundle.index.add(new_idx, index_vectors(vectors_t.numpy(), is_cold, self.cold_score_offset))
        self.embeddings = torch.cat([self.embeddings, vectors_t])
        for offset, item_id in enumerate(item_ids):
            self._pos_of[str(item_id)] = len(self.item_ids) + offset
        self.item_ids = np.concatenate([self.item_ids, np.asarray([str(i) for i in item_ids], dtype=object)])
        self.item_idx = np.concatenate([self.item_idx, new_idx])
        self.titles = np.concatenate([self.titles, np.asarray(titles, dtype=object)])
        cats = np.empty(n_new, dtype=object)
        for i in range(n_new):
            cats[i] = [str(c) for c in categories[i]]
        self.categories = np.concatenate([self.categories, cats])
        zeros = np.zeros(n_new, dtype=np.int64)
        self.popularity = np.concatenate([self.popularity, zeros])
        self.recent = np.concatenate([self.recent, zeros])
        # no interaction yet: no age
        self.age_days = np.concatenate([self.age_days, np.full(n_new, -1.0, dtype=np.float32)])
        self.removed = np.concatenate([self.removed, np.zeros(n_new, dtype=bool)])
        t = self.tables
        self.tables = ItemFeatureTables(
            torch.cat([t.log_popularity, torch.zeros(n_new)]),
            torch.cat([t.is_cold, torch.ones(n_new)]),
            torch.cat([t.text, torch.from_numpy(np.asarray(text, dtype=np.float32).reshape(n_new, -1))]),
            t.categories.appended([list(c) for c in cats]),
        )
        return new_idx

    def remove_items(self, item_ids: list[str]) -> int:
        """Never return these items again (the index drops them; the popularity fallback skips
        them); a user's history keeps them. Returns how many were live."""
        idx = np.asarray([self.item_idx[self._pos_of[str(i)]] for i in item_ids if self.is_live(str(i))])
        if len(idx) == 0:
            return 0
        self.bundle.index.remove(idx.astype(np.int64))
        self.removed[idx] = True
        return len(idx)

    def is_live(self, item_id: str) -> bool:
        pos = self._pos_of.get(item_id, -1)
        return pos >= 0 and not self.removed[self.item_idx[pos]]

    def apply_changes(self, changes: list[Any]) -> None:
        """Replay recorded catalog changes (``recsys.serving.catalog_changes.Change``) in order."""
        for change in changes:
            if change.op == "add":
                self.remove_items([change.item_id])  # a later addition of a live id replaces it
                self.insert_items(
                    [change.item_id],
                    [change.title],
                    [list(change.categories)],
                    change.vector[None],
                    change.text_vector[None],
                )
            else:
                self.remove_items([change.item_id])
            self.applied_seq = change.seq
