"""A fast in-process federated simulator: the same aggregators, attacks, DP and secure aggregation as the
Flower integration, without Flower, for experiments and tests.

Clients hold shards of a dataset (IID, or Dirichlet label skew with ``alpha``), train the tiny model of
:mod:`mithridate.federated.model` locally from the global parameters and send their update; a share of them
is malicious (:mod:`mithridate.federated.attacks`). The server aggregates with a robust rule, optionally
excluding clients with a bad :class:`~mithridate.federated.reputation.Reputation`, under client-level DP
(:mod:`mithridate.federated.dp`) or secure aggregation (:mod:`mithridate.federated.secagg`).

>>> result = simulate(aggregator="median", attack="sign_flip", clients=10, rounds=3, seed=0)
>>> result.final_accuracy > 0.5
True
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from mithridate.data import Dataset, demo, split
from mithridate.errors import MithridateError
from mithridate.federated.aggregators import Aggregator, make_aggregator
from mithridate.federated.attacks import MaliciousClients, make_client_attack
from mithridate.federated.dp import ClientDP
from mithridate.federated.model import FlatModel
from mithridate.federated.reputation import Reputation


@dataclass
class RoundResult:
    round: int
    accuracy: float
    attack_success: float | None = None
    epsilon: float | None = None
    excluded: list[int] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class SimulationResult:
    aggregator: str
    attack: str
    n_clients: int
    malicious_ids: list[int]
    history: list[RoundResult]
    config: dict

    @property
    def final_accuracy(self) -> float:
        return self.history[-1].accuracy

    @property
    def attack_success_rate(self) -> float | None:
        return self.history[-1].attack_success

    @property
    def epsilon(self) -> float | None:
        return self.history[-1].epsilon

    def to_dict(self) -> dict:
        out = {
            "aggregator": self.aggregator, "attack": self.attack, "clients": self.n_clients,
            "malicious_ids": self.malicious_ids, "final_accuracy": self.final_accuracy,
            "rounds": [dataclasses.asdict(r) for r in self.history], "config": self.config,
        }
        if self.attack_success_rate is not None:
            out["attack_success_rate"] = self.attack_success_rate
        if self.epsilon is not None:
            out["epsilon"] = self.epsilon
        return out


def partition(y: np.ndarray, n_clients: int, alpha: float | None, rng: np.random.Generator,
              min_rows: int = 10) -> list[np.ndarray]:
    """Row indices per client: IID shards (``alpha=None``) or Dirichlet(``alpha``) label proportions.

    A Dirichlet draw that leaves a client fewer than ``min_rows`` rows (at most a tenth of a fair share) is
    drawn again, as NIID-Bench does (Li, Diao, Chen & He, ICDE 2022): with strong skew (``alpha=0.1``) some
    clients otherwise get no data at all.
    """
    if alpha is None:
        return [np.sort(p) for p in np.array_split(rng.permutation(len(y)), n_clients)]
    if alpha <= 0:
        raise MithridateError(f"alpha must be > 0, got {alpha}")
    least = max(1, min(min_rows, len(y) // (10 * n_clients)))
    for _ in range(1000):
        shards: list[list[int]] = [[] for _ in range(n_clients)]
        for c in np.unique(y):
            rows = rng.permutation(np.flatnonzero(y == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(n_clients, alpha))) * len(rows)).astype(int)[:-1]
            for i, part in enumerate(np.split(rows, cuts)):
                shards[i].extend(part.tolist())
        if min(len(s) for s in shards) >= least:
            return [np.sort(np.array(s, dtype=int)) for s in shards]
    raise MithridateError(f"could not split {len(y)} rows over {n_clients} clients with alpha={alpha} so that "
                          f"each gets {least} rows: use fewer clients or a larger alpha")


class Simulation:
    """Configure in ``__init__``, :meth:`run` to train. ``malicious`` is the share of malicious clients."""

    def __init__(self, aggregator: str | Aggregator = "default", attack: str | MaliciousClients = "none",
                 malicious: float = 0.2, clients: int = 20, rounds: int = 20, local_epochs: int = 2,
                 lr: float = 0.1, batch_size: int = 16, server_lr: float = 1.0, alpha: float | None = None,
                 dataset: Dataset | str = "digits", reputation: bool = False, root_size: int = 100,
                 dp: ClientDP | None = None, secure: bool | str = False, dropout: float = 0.0, seed: int = 0,
                 aggregator_options: dict | None = None, attack_options: dict | None = None):
        self.aggregator, self.attack, self.malicious, self.clients = aggregator, attack, malicious, clients
        self.rounds, self.local_epochs, self.lr, self.batch_size = rounds, local_epochs, lr, batch_size
        self.server_lr, self.alpha, self.dataset, self.reputation = server_lr, alpha, dataset, reputation
        self.root_size, self.dp, self.secure, self.dropout, self.seed = root_size, dp, secure, dropout, seed
        self.aggregator_options, self.attack_options = aggregator_options or {}, attack_options or {}

    def _setup(self) -> None:
        if self.clients < 2:
            raise MithridateError(f"need at least 2 clients, got {self.clients}")
        if not 0 <= self.malicious < 1:
            raise MithridateError(f"malicious must be a share in [0, 1), got {self.malicious}")
        if self.rounds < 1:
            raise MithridateError(f"rounds must be >= 1, got {self.rounds}")
        ds = demo(self.dataset) if isinstance(self.dataset, str) else self.dataset
        if ds.kind != "image":
            raise MithridateError("the simulator's model takes image data (such as digits)")
        rng = np.random.default_rng(self.seed)
        train, self.test_ = split(ds, test_size=0.25, seed=self.seed)
        rule = self.aggregator if isinstance(self.aggregator, str) else self.aggregator.name
        self.protocol_ = secure_protocol(rule, self.secure, dp=self.dp is not None)
        if isinstance(self.aggregator, str):
            name, options, _ = rule_for(self.aggregator, private=self.dp is not None or self.protocol_ == "masking")
            self.agg_ = make_aggregator(name, **{**options, **self.aggregator_options})
        else:
            self.agg_ = self.aggregator
        self.attack_ = (make_client_attack(self.attack, random_state=self.seed, **self.attack_options)
                        if isinstance(self.attack, str) else self.attack)
        if self.agg_.name == "fltrust":
            root = rng.choice(train.n_rows, self.root_size, replace=False)
            self.root_ = train.take(root)
            train = train.take(np.setdiff1d(np.arange(train.n_rows), root))
        n_bad = round(self.malicious * self.clients) if self.attack_.name != "none" else 0
        self.malicious_ids_ = sorted(rng.choice(self.clients, n_bad, replace=False).tolist())
        self.model_ = FlatModel.for_images(ds.features.shape[1:], ds.n_classes, seed=self.seed)
        self.shards_ = []
        for cid, rows in enumerate(partition(train.y, self.clients, self.alpha, rng)):
            local = train.take(rows)
            if cid in self.malicious_ids_:
                local = self.attack_.poison_data(local, cid)
            self.shards_.append((self.model_.inputs(local.features), np.asarray(local.y)))
        self.x_test_, self.y_test_ = self.model_.inputs(self.test_.features), np.asarray(self.test_.y)
        target = self.attack_.success_set(self.test_)
        self.asr_ = None if target is None else (self.model_.inputs(target[0].features), target[1])
        # reputation reads individual updates: not private, not possible under encryption
        self.rep_ = Reputation() if self.reputation and self.dp is None and self.protocol_ is None else None
        if self.dp is not None:
            self.dp.prepare(self.agg_, expected_clients=self.clients, rounds=self.rounds)
        if self.protocol_ == "masking":
            from mithridate.federated.secagg.simulate import SecureRound
            self.secure_ = SecureRound(self.agg_, self.clients, dropout=self.dropout, dp=self.dp, seed=self.seed)
        elif self.protocol_ == "two-server":
            from mithridate.federated.secagg.two_server import TwoServerScreenedMean
            self.secure_ = TwoServerScreenedMean(self.agg_, dropout=self.dropout, seed=self.seed)

    def _local_updates(self, theta: np.ndarray, rnd: int) -> np.ndarray:
        out = np.empty((self.clients, len(theta)), np.float32)
        for cid, (x, y) in enumerate(self.shards_):
            new = self.model_.train(theta, x, y, self.local_epochs, self.lr, self.batch_size,
                                    seed=self.seed * 100_003 + rnd * 1009 + cid)
            out[cid] = new - theta
        return out

    def _server_update(self, theta: np.ndarray, rnd: int) -> np.ndarray:
        x, y = self.model_.inputs(self.root_.features), np.asarray(self.root_.y)
        return self.model_.train(theta, x, y, self.local_epochs, self.lr, self.batch_size, seed=rnd) - theta

    def run(self, on_round: Callable[[RoundResult], None] | None = None) -> SimulationResult:
        self._setup()
        theta = self.model_.initial()
        ids = np.arange(self.clients)
        bad = np.array(self.malicious_ids_, dtype=int)
        history = []
        self._sampler = np.random.default_rng(self.seed + 1)
        for rnd in range(1, self.rounds + 1):
            t0 = time.perf_counter()
            updates = self._local_updates(theta, rnd)
            if len(bad):
                updates[bad] = self.attack_.craft(updates.copy(), updates[bad], self.clients)
            allowed = self.rep_.allowed(ids) if self.rep_ is not None else np.ones(self.clients, bool)
            if self.dp is not None and self.dp.sampling_rate < 1:  # Poisson sampling, as the accountant assumes
                allowed &= self._sampler.random(self.clients) < self.dp.sampling_rate
            context = {"server_update": self._server_update(theta, rnd)} if self.agg_.name == "fltrust" else {}
            if self.protocol_ is not None:
                agg = self.secure_.aggregate(updates[allowed], rnd)
            elif self.dp is not None:
                agg = self.dp.aggregate(updates[allowed], self.agg_, **context)
            else:
                agg = self.agg_.fit(updates[allowed], None, suspicion=self.rep_ is not None, **context).aggregate_
            if self.rep_ is not None:
                self.rep_.update(ids[allowed], self.agg_.suspicion_)
            theta = (theta + self.server_lr * agg).astype(np.float32)
            excluded = ~allowed
            if self.protocol_ == "two-server":  # the servers know whom they left out, as the plain rule does
                excluded[ids[allowed][self.secure_.screened_ != ""]] = True
            elif self.protocol_ is None and self.dp is None:
                excluded[ids[allowed][self.agg_.left_out(int(allowed.sum()))]] = True
            result = RoundResult(rnd, self.model_.accuracy(theta, self.x_test_, self.y_test_),
                                 excluded=ids[excluded].tolist())
            if self.asr_ is not None:
                result.attack_success = float((self.model_.predict(theta, self.asr_[0]) == self.asr_[1]).mean())
            if self.dp is not None:
                result.epsilon = self.dp.epsilon_spent()
            result.seconds = time.perf_counter() - t0
            history.append(result)
            if on_round is not None:
                on_round(result)
        config = {k: (v if isinstance(v, (int, float, str, bool, type(None), dict)) else repr(v))
                  for k, v in vars(self).items() if not k.endswith("_")}
        name = self.agg_.name
        return SimulationResult(name, self.attack_.name, self.clients, self.malicious_ids_, history, config)


def simulate(aggregator: str | Aggregator = "default", attack: str | MaliciousClients = "none",
             on_round: Callable[[RoundResult], None] | None = None, **options) -> SimulationResult:
    """Run one simulation (see :class:`Simulation` for the options)."""
    return Simulation(aggregator, attack, **options).run(on_round)


PROTOCOLS = ("two-server", "masking")


def secure_protocol(rule: str, secure: bool | str, dp: bool = False) -> str | None:
    """The secure-aggregation protocol ``secure`` asks for: ``None`` (none), ``"two-server"`` (the screened
    mean on secret shares held by two non-colluding servers, :mod:`.secagg.two_server`) or ``"masking"`` (one
    server that sees only the sum, :mod:`.secagg.protocol`). ``True`` picks two-server for the default rule
    without DP and masking otherwise.

    >>> secure_protocol("default", True), secure_protocol("mean", True), secure_protocol("default", False)
    ('two-server', 'masking', None)
    """
    if secure is False or secure is None:
        return None
    screened = rule in ("default", "screened_mean")
    if secure is True:
        return "two-server" if screened and not dp else "masking"
    if secure not in PROTOCOLS:
        raise MithridateError(f"the secure-aggregation protocol is one of {', '.join(PROTOCOLS)}; got {secure!r}")
    if secure == "two-server" and not screened:
        raise MithridateError(f"the two-server protocol runs the screened mean (the default rule), not {rule}: "
                              "use the masking protocol for mean, norm_bound or centered_clipping")
    if secure == "two-server" and dp:
        raise MithridateError("DP under the two-server protocol is not built: use the masking protocol with DP")
    return secure


def rule_for(aggregator: str, private: bool, num_malicious: int | None = None) -> tuple[str, dict, str]:
    """``(rule, options, why)``: the aggregation rule a run uses. Under differential privacy or one-server
    secure aggregation (``private``) the server cannot read individual updates, so ``default`` means centered
    clipping with one iteration (linear in the updates; see docs/federated.md) and ``why`` says so.

    >>> rule_for("default", private=True)[:2]
    ('centered_clipping', {'iterations': 1})
    """
    options: dict = {} if num_malicious is None else {"num_malicious": num_malicious}
    name, why = aggregator, ""
    if private and aggregator == "default":
        name = "centered_clipping"
        why = ("under DP or one-server secure aggregation the default rule is centered clipping with one "
               "iteration (the rules that read individual updates cannot run there; see docs/federated.md)")
    if private and name == "centered_clipping":
        options["iterations"] = 1
    return name, options, why
