"""Client-level differential privacy for federated learning (DP-FedAvg; McMahan, Ramage, Talwar & Zhang
2018, "Learning differentially private recurrent language models"), with the noise calibrated to the
aggregator actually used and a real privacy accountant (Google's ``dp-accounting``, Rényi DP).

Each round the server clips every client update to L2 norm ``clip`` (``C``), combines them with a fixed
denominator ``m`` (the expected number of clients) and adds Gaussian noise of standard deviation
``z * C / m``. Adding or removing one client then moves the result by at most ``C / m`` (the sensitivity),
so each round is a Gaussian mechanism with noise multiplier ``z``; the accountant composes the rounds (with
Poisson sampling amplification when ``sampling_rate < 1``) and :meth:`ClientDP.epsilon_spent` reports
the epsilon spent so far. ``z`` is calibrated so that the planned rounds spend exactly the target epsilon.

Which rules can be made private, and why:

- ``mean`` and ``norm_bound``: sensitivity ``C / m`` as above.
- ``centered_clipping`` with one iteration: the center is last round's (already private) aggregate, each
  client adds ``clip(x_i - center, C) / m``, so the sensitivity is again ``C / m``. More iterations reuse
  the private data with a data-dependent center: refused.
- ``median``, ``trimmed_mean``, ``krum``, ``multi_krum``, ``bulyan``, ``geometric_median``, ``fltrust``,
  ``nnm`` and ``default``: one client can move them by more than ``C / m`` (by up to the gap between order
  statistics, or by switching which clients are selected or mixed), so noise scaled for the mean would
  overstate the privacy. They are refused with an error instead of a wrong privacy claim.

Adaptive clipping (Andrew, Thakkar, McMahan & Ramaswamy 2021) moves ``C`` each round towards the
``target_quantile`` of the update norms using a noisy count of unclipped clients (noise ``sigma_count``,
default ``m / 20``); the update noise is raised so that the two releases together still have noise
multiplier ``z``: ``z_update = (z^-2 - (2 sigma_count)^-2)^(-1/2)``.

>>> dp = ClientDP(epsilon=8.0, delta=1e-5)
>>> from mithridate.federated.aggregators import Mean
>>> dp.prepare(Mean(), expected_clients=100, rounds=10)
>>> round(dp.noise_multiplier_, 2)
2.02
"""

from __future__ import annotations

import numpy as np

from mithridate.errors import MithridateError
from mithridate.federated.aggregators import Aggregator, CenteredClipping, Mean, NormBound, clip_rows


class DPError(MithridateError, ValueError):
    """A configuration whose privacy claim would be wrong."""


def _event(noise_multiplier: float, sampling_rate: float):
    import dp_accounting

    gaussian = dp_accounting.GaussianDpEvent(noise_multiplier)
    return gaussian if sampling_rate >= 1 else dp_accounting.PoissonSampledDpEvent(sampling_rate, gaussian)


def epsilon_for(noise_multiplier: float, delta: float, rounds: int, sampling_rate: float = 1.0) -> float:
    """Epsilon (at ``delta``) spent by ``rounds`` Gaussian releases with this noise multiplier (RDP)."""
    import dp_accounting

    acc = dp_accounting.rdp.RdpAccountant()
    acc.compose(_event(noise_multiplier, sampling_rate), rounds)
    return float(acc.get_epsilon(delta))


def noise_multiplier_for(epsilon: float, delta: float, rounds: int, sampling_rate: float = 1.0) -> float:
    """The smallest noise multiplier whose ``rounds`` releases spend at most ``epsilon`` (RDP)."""
    import dp_accounting

    if epsilon <= 0 or not 0 < delta < 1:
        raise DPError(f"need epsilon > 0 and 0 < delta < 1, got epsilon={epsilon}, delta={delta}")
    return float(dp_accounting.calibrate_dp_mechanism(
        dp_accounting.rdp.RdpAccountant,
        lambda z: dp_accounting.SelfComposedDpEvent(_event(z, sampling_rate), rounds),
        epsilon, delta, dp_accounting.LowerEndpointAndGuess(1e-3, 1.0), tol=1e-4) + 1e-4)


def dp_center(aggregator: Aggregator) -> bool:
    """Whether the rule is made private around a center (centered clipping); raises for rules that cannot."""
    if isinstance(aggregator, (Mean, NormBound)):
        return False
    if isinstance(aggregator, CenteredClipping):
        if aggregator.iterations != 1:
            raise DPError("centered_clipping under DP needs iterations=1: each further iteration re-reads the "
                          "private updates around a data-dependent center")
        return True
    raise DPError(
        f"{aggregator.name} cannot be made differentially private by noise scaled for the mean: one client "
        "can move it by more than clip/m, so the privacy claim would be wrong. Use mean, norm_bound or "
        "centered_clipping (iterations=1)")


class ClientDP:
    """Client-level (epsilon, delta)-DP over ``rounds`` rounds: clip, combine, add calibrated noise, account."""

    def __init__(self, epsilon: float, delta: float = 1e-5, clip: float = 1.0, sampling_rate: float = 1.0,
                 adaptive_clip: bool = False, target_quantile: float = 0.5, clip_lr: float = 0.2,
                 sigma_count: float | None = None, random_state: int = 0):
        self.epsilon, self.delta, self.clip, self.sampling_rate = epsilon, delta, clip, sampling_rate
        self.adaptive_clip, self.target_quantile, self.clip_lr = adaptive_clip, target_quantile, clip_lr
        self.sigma_count, self.random_state = sigma_count, random_state

    def prepare(self, aggregator: Aggregator, expected_clients: int, rounds: int) -> None:
        """Check the rule, calibrate the noise for ``rounds`` rounds of ``expected_clients`` clients."""
        if self.clip <= 0:
            raise DPError(f"clip must be > 0, got {self.clip}")
        if not 0 < self.sampling_rate <= 1:
            raise DPError(f"sampling_rate must be in (0, 1], got {self.sampling_rate}")
        self.centered_ = dp_center(aggregator)
        self.m_ = expected_clients * self.sampling_rate
        self.rounds_ = rounds
        z = noise_multiplier_for(self.epsilon, self.delta, rounds, self.sampling_rate)
        self.noise_multiplier_ = z
        self.update_noise_multiplier_ = z
        if self.adaptive_clip:
            self.sigma_count_ = self.m_ / 20 if self.sigma_count is None else self.sigma_count
            if 2 * self.sigma_count_ <= z:
                raise DPError(f"adaptive clipping needs sigma_count > z/2 = {z / 2:.3g}; with {self.m_:g} "
                              "expected clients the default m/20 is too small: pass sigma_count")
            self.update_noise_multiplier_ = (z ** -2 - (2 * self.sigma_count_) ** -2) ** -0.5
        self.clip_ = float(self.clip)
        self.center_ = None
        self.history_: list[float] = []
        self._rng = np.random.default_rng(self.random_state)
        import dp_accounting

        self._accountant = dp_accounting.rdp.RdpAccountant()

    @property
    def noise_std_(self) -> float:
        """Standard deviation of the noise added to each coordinate of the aggregate, this round."""
        return self.update_noise_multiplier_ * self.clip_ / self.m_

    def clip_updates(self, updates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What each client contributes: its update (or its deviation from the center) clipped to ``C``;
        and the norms before clipping."""
        x = np.asarray(updates, dtype=np.float64)
        if self.centered_ and self.center_ is not None:
            x = x - self.center_
        return clip_rows(x, self.clip_), np.linalg.norm(x, axis=1)

    def finish(self, clipped_sum: np.ndarray, norms: np.ndarray | None = None, noisy: bool = True) -> np.ndarray:
        """Turn the (already noised if ``noisy=False``) sum of clipped contributions into the private
        aggregate, account the round, adapt the clip."""
        agg = clipped_sum / self.m_
        if noisy:
            agg = agg + self._rng.normal(0.0, self.noise_std_, size=agg.shape)
        if self.centered_ and self.center_ is not None:
            agg = agg + self.center_
        if self.centered_:
            self.center_ = agg
        self._accountant.compose(_event(self.noise_multiplier_, self.sampling_rate))
        if self.adaptive_clip and norms is not None:
            unclipped = float((norms <= self.clip_).sum()) + self._rng.normal(0.0, self.sigma_count_)
            self.clip_ *= float(np.exp(-self.clip_lr * (unclipped / self.m_ - self.target_quantile)))
        self.history_.append(self.epsilon_spent())
        return agg

    def aggregate(self, updates: np.ndarray, aggregator: Aggregator | None = None, **context) -> np.ndarray:
        """One private round (central DP: the server clips and adds the noise)."""
        clipped, norms = self.clip_updates(updates)
        return self.finish(clipped.sum(axis=0), norms)

    def epsilon_spent(self) -> float:
        """Epsilon (at ``delta``) spent by the rounds run so far."""
        return float(self._accountant.get_epsilon(self.delta))
