"""Multiple-testing control, so a clean batch of a wide table does not fail by chance.

A gate runs hundreds of tests; at 5% each, a clean batch would fail almost surely. Adjusted p-values fix it:

- ``bh``: Benjamini & Hochberg (1995), controls the false discovery rate; when the batch is clean every
  rejection is false, so it then also bounds the chance of failing a clean batch by alpha (tests that are
  independent or positively dependent, as the tests of one batch are);
- ``by``: Benjamini & Yekutieli (2001), BH valid under any dependence (more conservative);
- ``holm``: Holm (1979), family-wise error under any dependence;
- ``bonferroni``; ``none``.

>>> adjust([0.01, 0.02, 0.03, 0.5], "bh").round(3).tolist()
[0.04, 0.04, 0.04, 0.5]
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from mithridate.errors import DataError

METHODS = ("bh", "by", "holm", "bonferroni", "none")


def adjust(p_values, method: str = "bh") -> np.ndarray:
    """Adjusted p-values (reject where ``adjusted < alpha``)."""
    p = np.clip(np.asarray(p_values, dtype=np.float64), 0.0, 1.0)
    if method not in METHODS:
        raise DataError(f"unknown correction {method!r} (choose from {', '.join(METHODS)})")
    if len(p) == 0 or method == "none":
        return p
    if method in ("bh", "by"):
        return stats.false_discovery_control(p, method=method)
    if method == "bonferroni":
        return np.minimum(p * len(p), 1.0)
    order = np.argsort(p)
    m = len(p)
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(stepped, 1.0)
    return out
