"""Client reputation across rounds: a client that is repeatedly far from the robust aggregate is excluded.

Robust rules forget between rounds, so a malicious client gets a fresh chance every round. Reputation keeps,
per client id, an exponential moving average of a per-round flag: *this round the client's update lay more
than* ``flag_ratio`` *times the median client distance from the aggregate* (the aggregator's ``suspicion_``).
A client whose average exceeds ``exclude_above`` after at least ``min_rounds`` observed rounds is excluded
from aggregation; at most ``max_excluded_fraction`` of a round's clients are ever excluded (the worst first),
so reputation cannot itself hand the majority to an attacker. In the spirit of reputation-based FL
defences such as FoolsGold's history (Fung, Yoon & Beschastnikh 2020) and FLDetector (Zhang et al. 2022).

>>> import numpy as np
>>> rep = Reputation(min_rounds=2)
>>> for _ in range(3):
...     _ = rep.update([0, 1, 2, 3, 4], np.array([1.0, 0.9, 1.1, 1.0, 8.0]))
>>> rep.allowed([0, 1, 2, 3, 4]).tolist()
[True, True, True, True, False]
"""

from __future__ import annotations

import numpy as np

from mithridate.errors import MithridateError


class Reputation:
    """Per-client running suspicion; :meth:`update` after each round, :meth:`allowed` before the next."""

    def __init__(self, flag_ratio: float = 2.5, decay: float = 0.7, exclude_above: float = 0.5,
                 min_rounds: int = 3, max_excluded_fraction: float = 0.45):
        if not 0 <= decay < 1:
            raise MithridateError(f"reputation decay must be in [0, 1), got {decay}")
        self.flag_ratio, self.decay, self.exclude_above = flag_ratio, decay, exclude_above
        self.min_rounds, self.max_excluded_fraction = min_rounds, max_excluded_fraction
        self.scores_: dict = {}
        self.rounds_: dict = {}

    def update(self, client_ids, suspicion: np.ndarray) -> np.ndarray:
        """Record one round; returns this round's flags."""
        flags = np.asarray(suspicion, dtype=np.float64) > self.flag_ratio
        for cid, flag in zip(client_ids, flags, strict=True):
            prev = self.scores_.get(cid, 0.0)
            self.scores_[cid] = self.decay * prev + (1 - self.decay) * float(flag)
            self.rounds_[cid] = self.rounds_.get(cid, 0) + 1
        return flags

    def score(self, cid) -> float:
        return self.scores_.get(cid, 0.0)

    def allowed(self, client_ids) -> np.ndarray:
        """Boolean mask: False for the clients excluded this round."""
        ids = list(client_ids)
        bad = [i for i, c in enumerate(ids)
               if self.rounds_.get(c, 0) >= self.min_rounds and self.score(c) > self.exclude_above]
        cap = int(self.max_excluded_fraction * len(ids))
        bad = sorted(bad, key=lambda i: -self.score(ids[i]))[:cap]
        mask = np.ones(len(ids), bool)
        mask[bad] = False
        return mask
