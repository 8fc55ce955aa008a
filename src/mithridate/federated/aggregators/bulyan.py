"""Bulyan (El Mhamdi, Guerraoui & Rouault 2018, "The hidden vulnerability of distributed learning in
Byzantium"): select ``theta = n - 2f`` updates with Multi-Krum, then per coordinate average the
``beta = theta - 2f`` selected values closest to the coordinate-wise median. Needs ``n >= 4f + 3``.

The selection scores all updates once (as Flower's ``Bulyan`` does) rather than re-running Krum after each
pick; both keep the ``theta`` most central updates, and this way equals Flower's aggregate exactly.

>>> import numpy as np
>>> x = np.array([[0.0, 0.0], [0.1, 0.1], [0.2, 0.2], [0.3, 0.3], [0.5, 0.5], [0.9, 0.9], [40.0, -40.0]])
>>> Bulyan(num_malicious=1)(x).round(3)
array([0.2, 0.2])
"""

from __future__ import annotations

import numpy as np

from mithridate.federated.aggregators.base import AggregationError, Aggregator, by_column_blocks
from mithridate.federated.aggregators.krum import multi_krum_select


def bulyan(x: np.ndarray, num_malicious: int) -> tuple[np.ndarray, np.ndarray]:
    """The Bulyan aggregate and the indices Multi-Krum selected."""
    n, f = x.shape[0], num_malicious
    theta = n - 2 * f
    beta = theta - 2 * f
    if beta < 1:
        raise AggregationError(f"bulyan needs n >= 4f + 3 (n={n}, f={f})")
    keep = multi_krum_select(x, f, theta)

    def block_mean(sel: np.ndarray) -> np.ndarray:
        idx = np.argpartition(np.abs(sel - np.median(sel, axis=0)), beta - 1, axis=0)[:beta]
        return np.take_along_axis(sel, idx, axis=0).mean(axis=0)

    # by column blocks, selecting within each: the same result with little temporary memory
    return by_column_blocks(lambda block: block_mean(block[keep]), x).astype(x.dtype, copy=False), keep


class Bulyan(Aggregator):
    """Bulyan over Multi-Krum; tolerates ``f <= (n - 3) / 4``."""

    name = "bulyan"
    translation_equivariant = True

    def max_malicious(self, n: int) -> int:
        return max(-1, (n - 3) // 4)

    def requirement(self) -> str:
        return "n >= 4f + 3"

    def _aggregate(self, x, w, **context):
        agg, keep = bulyan(x, self.resolve_malicious(x.shape[0]))
        self.selected_ = keep
        return agg
