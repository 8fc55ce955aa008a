"""One secure-aggregation round in process, for the simulator: the real protocol (keys, shares, masks,
dropouts, unmasking), all clients and the server in one loop.

Only rules that are linear in what clients send can run under encryption (see ``docs/federated.md``):
``mean`` and ``norm_bound`` (each client clips its own update to ``clip``), and ``centered_clipping`` with
one iteration (each client clips its deviation from the public center, last round's aggregate). Median,
trimmed mean, Krum, Bulyan, geometric median, FLTrust, NNM and reputation need individual updates, which is
exactly what secure aggregation hides: they are refused. Without a fixed bound (``tau`` / ``max_norm``
``None``) and without DP, the bound is the median norm, found each round by a :meth:`SecureRound.census`.

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

#: the census thresholds, as multiples of the current bound: 1/16x to 11x in steps of sqrt(2)
CENSUS_STEPS = 2.0 ** (np.arange(-8, 8) / 2)


def secure_clip(aggregator: Aggregator, default_clip: float) -> tuple[float | None, bool]:
    """The L2 bound clients apply (``None``: the median norm, found by a census each round), and whether it
    is around a center; raises for non-linear rules."""
    if isinstance(aggregator, CenteredClipping):
        if aggregator.iterations != 1:
            raise MithridateError("centered_clipping over secure aggregation needs iterations=1")
        return aggregator.tau, True
    if isinstance(aggregator, NormBound):
        return aggregator.max_norm, False
    if isinstance(aggregator, Mean):
        return default_clip, False
    raise MithridateError(
        f"{aggregator.name} needs the individual updates, which secure aggregation hides from the server; "
        "use mean, norm_bound or centered_clipping (iterations=1) with --secure")


class SecureRound:
    """Run the protocol on a round's updates; ``dropout``: chance each client drops (before or after masking)."""

    def __init__(self, aggregator: Aggregator, n_clients: int, dropout: float = 0.0, dp: ClientDP | None = None,
                 clip: float = 1.0, value_bits: int = 16, seed: int = 0):
        bound, self.centered_ = secure_clip(aggregator, dp.clip if dp is not None else clip)
        self.census_ = bound is None and dp is None
        self.clip_ = clip if bound is None else bound
        self.tau_ = self.clip_  # the census's starting guess
        self.aggregator, self.n_clients, self.dropout, self.dp = aggregator, n_clients, dropout, dp
        self.value_bits = value_bits
        self.center_ = None
        self._rng = np.random.default_rng(seed)
        self.log_: list[dict] = []

    def _secure_sum(self, x: np.ndarray, clip: float, noise_std: float = 0.0) -> tuple[np.ndarray, int, dict]:
        """One run of the protocol over the rows of ``x`` (with this round's dropouts): the sum of the
        survivors' clipped rows, their number, and what the log keeps."""
        n, d = x.shape
        pl = plan(n, d, clip, dropout=self.dropout, value_bits=self.value_bits, noise_std=noise_std)
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
        return total, count, {"survivors": count, "dropped_before": int(before.sum()),
                              "dropped_after": int(after.sum()), "degree": pl.degree, "threshold": pl.threshold,
                              "bits": pl.bits}

    def census_bits(self, x: np.ndarray, grid: np.ndarray) -> np.ndarray:
        """What each client adds to the census: 1 for each threshold its deviation is within."""
        return (np.linalg.norm(x, axis=1)[:, None] <= grid[None, :]).astype(np.float64)

    def census(self, x: np.ndarray) -> float:
        """The median row norm to within a factor sqrt(2), from a secure sum of each client's bits "my norm
        is at most t" over a grid of thresholds t around the last bound: the server learns how many clients
        lie within each threshold, nothing about any one of them. The bound never exceeds the configured
        ``clip``: clients that lie in the census (the protocol cannot check what they add) can loosen it at
        most to where it was before the census existed, and a truthful majority keeps it at the median."""
        grid = self.tau_ * CENSUS_STEPS
        counts, survivors, _ = self._secure_sum(self.census_bits(x, grid), clip=float(np.sqrt(len(grid))))
        within = np.flatnonzero(np.round(counts) >= survivors / 2)
        self.tau_ = float(min(grid[within[0]] if len(within) else self.clip_, self.clip_))
        return self.tau_

    def aggregate(self, updates: np.ndarray, rnd: int) -> np.ndarray:
        x = np.asarray(updates, dtype=np.float64)
        if self.centered_ and self.center_ is not None:
            x = x - self.center_
        clip = self.dp.clip_ if self.dp is not None else (self.census(x) if self.census_ else self.clip_)
        noise = 0.0
        if self.dp is not None:
            noise = self.dp.update_noise_multiplier_ * clip / np.sqrt(plan(*x.shape, clip, self.dropout).threshold)
        total, count, entry = self._secure_sum(x, clip, noise)
        self.log_.append({"round": rnd, **entry, "census": 2 if self.census_ else 1, "clip": clip})
        if self.dp is not None:
            if self.centered_ and self.center_ is not None:
                self.dp.center_ = self.center_
            agg = self.dp.finish(total, None, noisy=False)
        else:
            agg = total / count + (self.center_ if self.centered_ and self.center_ is not None else 0.0)
        if self.centered_:
            self.center_ = agg
        return agg
