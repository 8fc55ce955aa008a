"""One secure-aggregation round in process, for the simulator: the real protocol (keys, shares, masks,
dropouts, unmasking), all clients and the server in one loop.

Only rules that are linear in what clients send can run under encryption (see ``docs/federated.md``):
``mean`` and ``norm_bound`` (each client clips its own update to ``clip``), and ``centered_clipping`` with
one iteration (each client clips its deviation from the public center, last round's aggregate). Median,
trimmed mean, Krum, Bulyan, geometric median, FLTrust, NNM and reputation need individual updates, which is
exactly what secure aggregation hides: they are refused.

With DP, each client adds Gaussian noise of standard deviation ``z * clip / sqrt(t)`` before masking (``t``
the threshold: a round that completes has at least ``t`` survivors), so the sum carries at least the noise
the accountant charges for.
"""

from __future__ import annotations

import numpy as np

from mithridate.errors import MithridateError
from mithridate.federated.aggregators import Aggregator, CenteredClipping, Mean, NormBound
from mithridate.federated.dp import ClientDP
from mithridate.federated.secagg.protocol import SecAggClient, SecAggServer, plan


def secure_clip(aggregator: Aggregator, default_clip: float) -> tuple[float, bool]:
    """The L2 bound clients apply, and whether it is around a center; raises for non-linear rules."""
    if isinstance(aggregator, CenteredClipping):
        if aggregator.iterations != 1:
            raise MithridateError("centered_clipping over secure aggregation needs iterations=1")
        return (aggregator.tau or default_clip), True
    if isinstance(aggregator, NormBound):
        return (aggregator.max_norm or default_clip), False
    if isinstance(aggregator, Mean):
        return default_clip, False
    raise MithridateError(
        f"{aggregator.name} needs the individual updates, which secure aggregation hides from the server; "
        "use mean, norm_bound or centered_clipping (iterations=1) with --secure")


class SecureRound:
    """Run the protocol on a round's updates; ``dropout``: chance each client drops (before or after masking)."""

    def __init__(self, aggregator: Aggregator, n_clients: int, dropout: float = 0.0, dp: ClientDP | None = None,
                 clip: float = 1.0, value_bits: int = 16, seed: int = 0):
        self.clip_, self.centered_ = secure_clip(aggregator, dp.clip if dp is not None else clip)
        self.aggregator, self.n_clients, self.dropout, self.dp = aggregator, n_clients, dropout, dp
        self.value_bits = value_bits
        self.center_ = None
        self._rng = np.random.default_rng(seed)
        self.log_: list[dict] = []

    def aggregate(self, updates: np.ndarray, rnd: int) -> np.ndarray:
        n, d = updates.shape
        clip = self.dp.clip_ if self.dp is not None else self.clip_
        pl = plan(n, d, clip, dropout=self.dropout, value_bits=self.value_bits)
        if self.dp is not None:
            sigma = self.dp.update_noise_multiplier_ * clip / np.sqrt(pl.threshold)
            pl = plan(n, d, clip, dropout=self.dropout, value_bits=self.value_bits, noise_std=sigma)
        x = np.asarray(updates, dtype=np.float64)
        if self.centered_ and self.center_ is not None:
            x = x - self.center_
        drops = self._rng.random(n) < self.dropout
        before = drops & (self._rng.random(n) < 0.5)
        after = drops & ~before
        clients = [SecAggClient(i, pl, seed=int(self._rng.integers(1 << 31))) for i in range(n)]
        server = SecAggServer(pl)
        per = server.collect_keys({c.cid: c.advertise() for c in clients})
        routed = server.route_shares({c.cid: c.share_keys(per[c.cid]) for c in clients})
        masked = {c.cid: c.masked_input(routed[c.cid], x[c.cid]) for c in clients if not before[c.cid]}
        survivors, dropped = server.collect_masked(masked)
        total, count = server.finish({c.cid: c.unmask(survivors, dropped) for c in clients
                                      if c.cid in survivors and not after[c.cid]})
        self.log_.append({"round": rnd, "survivors": count, "dropped_before": int(before.sum()),
                          "dropped_after": int(after.sum()), "degree": pl.degree, "threshold": pl.threshold,
                          "bits": pl.bits})
        if self.dp is not None:
            if self.centered_ and self.center_ is not None:
                self.dp.center_ = self.center_
            agg = self.dp.finish(total, None, noisy=False)
        else:
            agg = total / count + (self.center_ if self.centered_ and self.center_ is not None else 0.0)
        if self.centered_:
            self.center_ = agg
        return agg
