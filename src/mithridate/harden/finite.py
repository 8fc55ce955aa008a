"""Finite Aggregation (Wang, Levine & Feizi 2022): a certified vote over ``partitions x spread`` members.

Each training row goes to one of ``partitions * spread`` buckets by a hash of its content (its features:
a flipped label stays in its bucket). Member ``i`` trains on the ``spread`` buckets ``i, i+1, ...`` (modulo
the number of buckets), so each bucket feeds ``spread`` members and each member sees about
``1/partitions`` of the data, as in Deep Partition Aggregation, which is the case ``spread = 1``
(:mod:`.dpa`). A prediction is the plurality vote (ties to the smaller class) and carries its certified
radius: how many rows could be inserted or removed without changing it (:func:`.certify.certified_radius`).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from mithridate.data import Dataset
from mithridate.errors import MithridateError
from mithridate.harden.base import VoteEnsemble, register
from mithridate.harden.certify import certified_radius
from mithridate.harden.member import canonical


def row_hashes(features: pd.DataFrame | np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row's content that no other row can change: table cells as their canonical
    text (:func:`~mithridate.harden.member.canonical`, so a column's dtype does not matter) in the order of
    the sorted column names; images as their float64 values."""
    if isinstance(features, pd.DataFrame):
        names = sorted(features.columns, key=str)
        cells = pd.DataFrame({str(c): canonical(features[c]).fillna("\x00") for c in names})
        joined = cells.astype(str).agg("\x1f".join, axis=1) if len(names) else pd.Series([""] * len(features))
        return np.array([int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") for text in joined],
                        dtype=np.uint64)
    images = np.asarray(features, dtype=np.float64)
    return np.array([int.from_bytes(hashlib.sha256(img.tobytes()).digest()[:8], "little") for img in images],
                    dtype=np.uint64)


@register
class FiniteAggregation(VoteEnsemble):
    """``partitions`` groups of rows, each row's bucket spread over ``spread`` members (see module)."""

    name = "finite"

    def __init__(self, partitions: int = 50, spread: int = 4, classes: list | None = None, network: str = "auto",
                 epochs: int | None = None, random_state: int = 0):
        super().__init__(classes, network, epochs, random_state)
        self.partitions, self.spread = partitions, spread

    def buckets(self) -> int:
        return self.partitions * self.spread

    def members_of_bucket(self) -> np.ndarray:
        """``(buckets, spread)``: the members each bucket trains."""
        b = self.buckets()
        return (np.arange(b)[:, None] - np.arange(self.spread)[None, :]) % b

    def _fit(self, dataset: Dataset):
        if self.partitions < 1 or self.spread < 1:
            raise MithridateError(f"partitions and spread must be >= 1, got {self.partitions} and {self.spread}")
        bucket = (row_hashes(dataset.features) % np.uint64(self.buckets())).astype(np.int64)
        members, sizes = [], []
        for i in range(self.buckets()):
            rows = np.flatnonzero(np.isin(bucket, (i + np.arange(self.spread)) % self.buckets()))
            if len(rows) == 0:  # a member of one class is fine (it votes that class); one of no rows is not
                raise MithridateError(f"{dataset.n_rows} rows are too few for {self.partitions} partitions: member "
                                      f"{i} got none; use fewer partitions")
            members.append(self._member(dataset, rows, seed=i))
            sizes.append(len(rows))
        return members, {"partitions": self.partitions, "spread": self.spread,
                         "rows_per_member": [int(min(sizes)), int(np.median(sizes)), int(max(sizes))],
                         "certificate": "rows inserted or removed, " + ("Levine & Feizi 2021" if self.spread == 1
                                                                         else "Wang, Levine & Feizi 2022")}

    def certify(self, features) -> tuple[np.ndarray, np.ndarray]:
        return certified_radius(self.votes(features), self.members_of_bucket(), self.members_[0].n_classes)
