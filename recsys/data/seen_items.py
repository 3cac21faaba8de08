"""What each user has already interacted with before a split's targets: excluded from their lists.

Shared by evaluation (full-catalog ranking), candidate building and the serving bundle, so it
lives with the data it is derived from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys.data.dataset import PreparedDataset, flatten_lists


@dataclass
class SeenItems:
    """CSR of the items each user has interacted with before a split's targets."""

    indptr: np.ndarray
    indices: np.ndarray

    @classmethod
    def from_pairs(cls, users: np.ndarray, items: np.ndarray, n_users: int) -> SeenItems:
        key = np.unique(users.astype(np.int64) * (1 << 32) + items.astype(np.int64))
        u, i = key >> 32, key & 0xFFFFFFFF
        indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(u, minlength=n_users), out=indptr[1:])
        return cls(indptr, i.astype(np.int64))

    @classmethod
    def for_split(cls, dataset: PreparedDataset, split: str) -> SeenItems:
        """Every earlier item of each user: train interactions, earlier eval rows, own history.

        Train rows are sliding windows over a prefix, so their targets plus the first history
        item of each user's first row are all of a user's training interactions, whatever the
        history cap.
        """
        parts_u, parts_i = [], []
        train = dataset.read_split("train", ["user_idx", "history", "target"])
        parts_u.append(train["user_idx"].to_numpy())
        parts_i.append(train["target"].to_numpy())
        first_of_user = np.unique(train["user_idx"].to_numpy(), return_index=True)[1]
        heads = pc.list_element(train["history"].take(pa.array(first_of_user)), 0)
        parts_u.append(train["user_idx"].to_numpy()[first_of_user])
        parts_i.append(heads.to_numpy())
        earlier = {"val": [], "test": ["val"]}[split]
        for name in [*earlier, split]:
            table = dataset.read_split(name, ["user_idx", "history", "target"])
            values, lengths = flatten_lists(table["history"])
            parts_u.append(np.repeat(table["user_idx"].to_numpy(), lengths))
            parts_i.append(values)
            if name != split:
                parts_u.append(table["user_idx"].to_numpy())
                parts_i.append(table["target"].to_numpy())
        return cls.from_pairs(np.concatenate(parts_u), np.concatenate(parts_i), dataset.n_users)

    def batch(self, user_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row in batch, item_idx) pairs for the given users."""
        starts, ends = self.indptr[user_idx], self.indptr[user_idx + 1]
        lengths = ends - starts
        rows = np.repeat(np.arange(len(user_idx)), lengths)
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return rows, self.indices[np.repeat(starts, lengths) + offsets]
