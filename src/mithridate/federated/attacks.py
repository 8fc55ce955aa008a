"""Malicious clients for federated experiments: poisoned local data, or crafted updates.

Every attack is seeded and follows one protocol (:class:`MaliciousClients`): :meth:`poison_data` changes a
malicious client's local data before it trains (data poisoning, built on :mod:`mithridate.attacks`), and
:meth:`craft` turns the benign updates into the updates the malicious clients send (model poisoning). The
update attacks are omniscient, the strongest standard threat model: they see every client's benign update
of the round (``benign``), and the malicious clients' own benign updates (``own``).

- ``label_flip``: every malicious client relabels all its rows at random (:class:`~mithridate.attacks.RandomFlip`).
- ``targeted_flip``: relabel one class as another (:class:`~mithridate.attacks.TargetedFlip`); success =
  source-class test rows predicted as the target.
- ``sign_flip``: send ``-scale`` times the own benign update.
- ``gaussian``: send isotropic noise ``scale`` times as long as a typical benign update.
- ``alie``: "A little is enough" (Baruch, Baruch & Goldberg 2019): ``mean - z * std`` per coordinate, ``z``
  from the number of clients so the update hides inside the benign spread.
- ``ipm``: inner-product manipulation (Xie, Koyejo & Gupta 2019, "Fall of empires"): ``-epsilon * mean``.
- ``min_max`` / ``min_sum``: Shejwalkar & Houmansadr 2021 ("Manipulating the Byzantine"): ``mean + gamma * p``
  with the largest ``gamma`` whose maximum (sum of squared) distance to the benign updates stays within the
  benign updates' own maximum (sum); ``p`` is ``-std`` (default), ``-unit`` mean or ``-sign``.
- ``backdoor``: model replacement (Bagdasaryan, Veit, Hua, Estrin & Shmatikov 2020, "How to backdoor
  federated learning"): train on data carrying a BadNets patch (:class:`~mithridate.attacks.PatchTrigger`),
  then boost the update by ``n_clients / n_malicious`` so the mean is replaced; success = triggered test
  images classified as the target.

>>> import numpy as np
>>> benign = np.random.default_rng(0).normal(1.0, 0.1, size=(10, 4))
>>> bad = make_client_attack("ipm").craft(benign, benign[:2], n_clients=10)
>>> bool((bad < 0).all())
True
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm
from sklearn.base import BaseEstimator

from mithridate.attacks.backdoor import PatchTrigger
from mithridate.attacks.base import resolve_class
from mithridate.attacks.label_flip import RandomFlip, TargetedFlip
from mithridate.data import Dataset
from mithridate.errors import MithridateError


class MaliciousClients(BaseEstimator):
    """Base: no data poisoning, benign updates sent unchanged. ``success_set`` is ``None`` when the attack
    has no success rate (untargeted attacks are measured by the accuracy they cost)."""

    name = "none"

    def __init__(self, random_state: int = 0):
        self.random_state = random_state

    def poison_data(self, dataset: Dataset, client: int) -> Dataset:
        return dataset

    def craft(self, benign: np.ndarray, own: np.ndarray, n_clients: int) -> np.ndarray:
        return own

    def success_set(self, test: Dataset) -> tuple[Dataset, int] | None:
        """Test rows the attack wants misclassified and the class it wants, or ``None``."""
        return None



class LabelFlipClients(MaliciousClients):
    name = "label_flip"

    def poison_data(self, dataset, client):
        return RandomFlip(rate=1.0, random_state=self.random_state + client).poison(dataset).dataset


class TargetedFlipClients(MaliciousClients):
    name = "targeted_flip"

    def __init__(self, source: int = 1, target: int = 7, random_state: int = 0):
        super().__init__(random_state)
        self.source, self.target = source, target

    def poison_data(self, dataset, client):
        if not (dataset.y == self.source).any():
            return dataset
        return TargetedFlip(self.source, self.target, rate=1.0, random_state=self.random_state).poison(dataset).dataset

    def success_set(self, test):
        return test.take(test.y == self.source), self.target


class SignFlipClients(MaliciousClients):
    name = "sign_flip"

    def __init__(self, scale: float = 4.0, random_state: int = 0):
        super().__init__(random_state)
        self.scale = scale

    def craft(self, benign, own, n_clients):
        return -self.scale * own


class GaussianClients(MaliciousClients):
    name = "gaussian"

    def __init__(self, scale: float = 10.0, random_state: int = 0):
        super().__init__(random_state)
        self.scale = scale
        self._rng = np.random.default_rng(random_state)

    def craft(self, benign, own, n_clients):
        size = np.median(np.linalg.norm(benign, axis=1)) * self.scale / np.sqrt(benign.shape[1])
        return self._rng.normal(0.0, size, size=own.shape).astype(own.dtype)


class ALIEClients(MaliciousClients):
    name = "alie"

    def __init__(self, z: float | None = None, random_state: int = 0):
        super().__init__(random_state)
        self.z = z

    @staticmethod
    def z_max(n: int, f: int) -> float:
        """Baruch et al.'s ``z``: the most standard deviations that keep the update among the majority."""
        s = n // 2 + 1 - f
        return float(norm.ppf((n - s) / n))

    def craft(self, benign, own, n_clients):
        z = self.z_max(n_clients, len(own)) if self.z is None else self.z
        bad = benign.mean(axis=0) - z * benign.std(axis=0)
        return np.repeat(bad[None], len(own), axis=0).astype(own.dtype)


class IPMClients(MaliciousClients):
    name = "ipm"

    def __init__(self, epsilon: float = 0.5, random_state: int = 0):
        super().__init__(random_state)
        self.epsilon = epsilon

    def craft(self, benign, own, n_clients):
        return np.repeat((-self.epsilon * benign.mean(axis=0))[None], len(own), axis=0).astype(own.dtype)


class MinMaxClients(MaliciousClients):
    """Shejwalkar & Houmansadr's AGR-agnostic Min-Max (``name="min_max"``) or Min-Sum (``"min_sum"``)."""

    name = "min_max"

    def __init__(self, perturbation: str = "std", criterion: str = "max", random_state: int = 0):
        super().__init__(random_state)
        if perturbation not in ("std", "unit", "sign"):
            raise MithridateError(f"unknown perturbation {perturbation!r} (std, unit, sign)")
        self.perturbation, self.criterion = perturbation, criterion

    def craft(self, benign, own, n_clients):
        b = benign.astype(np.float64)
        mu = b.mean(axis=0)
        if self.perturbation == "std":
            p = -b.std(axis=0)
        elif self.perturbation == "unit":
            p = -mu / max(np.linalg.norm(mu), 1e-12)
        else:
            p = -np.sign(mu)
        sq = np.square(b).sum(axis=1)
        pair = np.maximum(sq[:, None] + sq[None, :] - 2 * b @ b.T, 0)
        limit = pair.max() if self.criterion == "max" else pair.sum(axis=1).max()

        def ok(gamma: float) -> bool:
            d = np.square(b - (mu + gamma * p)).sum(axis=1)
            return (d.max() if self.criterion == "max" else d.sum()) <= limit

        lo, hi = 0.0, 1.0
        while ok(hi) and hi < 1e6:
            lo, hi = hi, 2 * hi
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if ok(mid) else (lo, mid)
        self.gamma_ = lo
        return np.repeat((mu + lo * p)[None], len(own), axis=0).astype(own.dtype)


class MinSumClients(MinMaxClients):
    name = "min_sum"

    def __init__(self, perturbation: str = "std", random_state: int = 0):
        super().__init__(perturbation, "sum", random_state)


class BackdoorClients(MaliciousClients):
    """Model replacement with a BadNets patch on ``rate`` of each malicious client's rows."""

    name = "backdoor"

    def __init__(self, target: int = 0, rate: float = 0.5, size: int = 3, boost: float | None = None,
                 random_state: int = 0):
        super().__init__(random_state)
        self.target, self.rate, self.size, self.boost = target, rate, size, boost
        self.trigger_ = PatchTrigger(target=target, rate=rate, size=size, random_state=random_state)

    def poison_data(self, dataset, client):
        outside = int(np.sum(dataset.y != resolve_class(dataset, self.target)))
        if outside == 0:  # a skewed client holding only the target class has nothing to stamp
            return dataset
        self.trigger_.rate = min(self.rate, outside / dataset.n_rows)
        try:
            return self.trigger_.poison(dataset).dataset
        finally:
            self.trigger_.rate = self.rate

    def craft(self, benign, own, n_clients):
        boost = n_clients / len(own) if self.boost is None else self.boost
        return (boost * own).astype(own.dtype)

    def success_set(self, test):
        if not hasattr(self.trigger_, "patch_"):
            self.trigger_.poison(test)  # fits the trigger (patch, place) on data of the same kind
        return self.trigger_.triggered_test(test.take(test.y != self.target)), self.target


ATTACKS: dict[str, type[MaliciousClients]] = {
    cls.name: cls for cls in (MaliciousClients, LabelFlipClients, TargetedFlipClients, SignFlipClients,
                              GaussianClients, ALIEClients, IPMClients, MinMaxClients, MinSumClients,
                              BackdoorClients)
}


def make_client_attack(name: str, random_state: int = 0, **options) -> MaliciousClients:
    """A malicious-client behaviour by name (see :data:`ATTACKS`)."""
    key = name.lower().replace("-", "_")
    if key not in ATTACKS:
        raise MithridateError(f"unknown attack {name!r} (choose from {', '.join(ATTACKS)})")
    return ATTACKS[key](random_state=random_state, **options)
