"""FLTrust (Cao, Fang, Liu & Gong 2021, "FLTrust: Byzantine-robust federated learning via trust
bootstrapping"). The server trains on a small clean root set to get its own update ``g0`` each round;
client ``i`` gets trust ``relu(cos(x_i, g0))``, its update is rescaled to ``||g0||``, and the aggregate is
the trust-weighted mean. Updates pointing away from the server's are ignored, and none can be boosted.
It withstands any number of malicious clients as long as the root set is clean and representative.

>>> import numpy as np
>>> x = np.array([[1.0, 0.0], [0.9, 0.1], [-5.0, 0.0]])
>>> FLTrust()(x, server_update=np.array([1.0, 0.0])).round(2)
array([1.  , 0.06])
"""

from __future__ import annotations

import numpy as np

from mithridate.federated.aggregators.base import AggregationError, Aggregator, matvec


def fltrust(x: np.ndarray, server_update: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The FLTrust aggregate and the trust scores."""
    g0 = np.asarray(server_update, dtype=np.float64).reshape(-1)
    if g0.shape[0] != x.shape[1]:
        raise AggregationError(f"server_update has {g0.shape[0]} parameters, updates have {x.shape[1]}")
    g0_norm = np.linalg.norm(g0)
    norms = np.linalg.norm(x, axis=1)
    safe = np.maximum(norms, 1e-300)
    trust = np.maximum(0.0, (x @ g0) / (safe * max(g0_norm, 1e-300)))
    if trust.sum() == 0:
        return np.zeros(x.shape[1]), trust
    scaled = (trust * g0_norm / safe) / trust.sum()
    return matvec(scaled, x), trust


class FLTrust(Aggregator):
    """Trust-weighted mean against the server's root-set update (``server_update=`` at each call)."""

    name = "fltrust"

    def max_malicious(self, n: int) -> int:
        return n - 1

    def requirement(self) -> str:
        return "a clean server root set"

    def _aggregate(self, x, w, server_update=None, **context):
        if server_update is None:
            raise AggregationError("fltrust needs server_update: the update the server computed on its "
                                   "trusted root data this round")
        agg, trust = fltrust(x, server_update)
        self.trust_ = trust
        return agg
