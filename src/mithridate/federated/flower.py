"""Flower integration (Message API, ``flwr`` >= 1.42): robust strategies and client mods a user adds to an
existing Flower app in a few lines.

Server side, replace ``FedAvg`` with :class:`RobustStrategy`::

    from mithridate.federated.flower import RobustStrategy
    strategy = RobustStrategy("default", fraction_evaluate=0.0)        # or "krum", "bulyan", ...
    result = strategy.start(grid=grid, initial_arrays=arrays, num_rounds=10)

It subclasses ``flwr.serverapp.strategy.FedAvg``: ``configure_train`` keeps the global model it sends so
``aggregate_train`` can form each client's update (reply - global), aggregate the updates with any rule of
:mod:`mithridate.federated` (bounded example-count weights, never the raw self-reported counts), exclude
clients with a bad :class:`~mithridate.federated.reputation.Reputation` (keyed by Flower node id), and
optionally apply client-level DP (:class:`~mithridate.federated.dp.ClientDP`) with a noise calibrated to the
rule actually used. FLTrust takes ``server_update_fn(server_round, global_arrays) -> ArrayRecord``.

Client side, mods for ``ClientApp(mods=[...])``:

- :func:`clip_mod`: the client clips its own update to an L2 bound (norm bounding done at the source,
  which is what keeps a bound under secure aggregation).
- :func:`malicious_mod`: turns an honest client into a malicious one for experiments (attacks that need only
  the client's own update: ``sign_flip``, ``gaussian``, ``backdoor`` boosting, ``ipm``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from logging import INFO

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.clientapp.typing import ClientAppCallable
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log

from mithridate.federated.aggregators import Aggregator, clip_rows, make_aggregator
from mithridate.federated.attacks import MaliciousClients, make_client_attack
from mithridate.federated.dp import ClientDP
from mithridate.federated.reputation import Reputation


def flatten(record: ArrayRecord) -> np.ndarray:
    """All arrays of a record, in key order, as one float vector."""
    return np.concatenate([record[k].numpy().ravel() for k in record])


def stack(records: list[ArrayRecord], size: int, dtype) -> np.ndarray:
    """The records as rows of one (clients, parameters) matrix, filled in place (no intermediate copies)."""
    out = np.empty((len(records), size), dtype=np.result_type(dtype, np.float32))
    for i, record in enumerate(records):
        at = 0
        for k in record:
            a = record[k].numpy().ravel()
            out[i, at:at + a.size] = a
            at += a.size
        if at != size:
            raise ValueError(f"a reply has {at} parameters, the global model {size}")
    return out


def unflatten(vector: np.ndarray, like: ArrayRecord) -> ArrayRecord:
    """A record shaped (keys, shapes, dtypes) like ``like`` holding ``vector``."""
    out, at = {}, 0
    for k in like:
        ref = like[k].numpy()
        out[k] = Array(np.asarray(vector[at:at + ref.size], dtype=ref.dtype).reshape(ref.shape))
        at += ref.size
    return ArrayRecord(out)


class RobustStrategy(FedAvg):
    """``FedAvg`` whose ``aggregate_train`` runs a robust rule (plus reputation and DP) on client updates.

    ``aggregator``: a name for :func:`~mithridate.federated.make_aggregator` or an :class:`Aggregator`.
    ``aggregator_options``: its settings (``num_malicious``, ...). ``reputation``: off by default (it
    excludes clients far from the aggregate, and with non-IID data those are often honest clients with
    unusual data). ``dp``: a :class:`ClientDP`, prepared for ``num_rounds`` rounds of
    ``expected_clients`` clients. Other keyword arguments go to ``FedAvg``.
    """

    def __init__(self, aggregator: str | Aggregator = "default", *, aggregator_options: dict | None = None,
                 reputation: bool | Reputation = False, dp: ClientDP | None = None,
                 num_rounds: int | None = None, expected_clients: int | None = None,
                 server_update_fn: Callable[[int, ArrayRecord], ArrayRecord] | None = None, **fedavg_kwargs):
        super().__init__(**fedavg_kwargs)
        self.aggregator = (make_aggregator(aggregator, **(aggregator_options or {}))
                           if isinstance(aggregator, str) else aggregator)
        self.reputation = Reputation() if reputation is True else (reputation or None)
        if self.reputation is not None and dp is not None:
            raise ValueError("reputation reads each client's update to exclude it, which DP cannot account for")
        self.dp = dp
        if dp is not None and abs(dp.sampling_rate - self.fraction_train) > 1e-9:
            raise ValueError(f"ClientDP(sampling_rate={dp.sampling_rate}) must equal fraction_train="
                             f"{self.fraction_train}: the accountant's amplification assumes that sampling")
        if dp is not None:
            if num_rounds is None or expected_clients is None:
                raise ValueError("with dp, give num_rounds and expected_clients so the noise can be calibrated")
            dp.prepare(self.aggregator, expected_clients, num_rounds)
        self.server_update_fn = server_update_fn
        self._global: dict[int, ArrayRecord] = {}
        self.excluded_: dict[int, list[int]] = {}

    def summary(self) -> None:
        log(INFO, "\t├──> mithridate robust aggregation: %r", self.aggregator)
        log(INFO, "\t│\t├── reputation: %s", self.reputation is not None)
        log(INFO, "\t│\t└── client-level DP: %s", self.dp is not None)
        super().summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._global = {server_round: arrays}  # the model the replies are updates of
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        global_arrays = self._global.get(server_round)
        if global_arrays is None:
            raise RuntimeError("aggregate_train without configure_train for this round: cannot form updates")
        contents = [m.content for m in valid]
        nodes = np.array([m.metadata.src_node_id for m in valid])
        if self.aggregator.coordinatewise and self.reputation is None and self.dp is None:
            return self._per_layer(contents, global_arrays)
        base = flatten(global_arrays)
        # rules with rule(x + c) == rule(x) + c aggregate the parameters directly (one pass less over memory)
        direct = self.aggregator.translation_equivariant and self.dp is None
        updates = stack([c[next(iter(c.array_records))] for c in contents], base.size, base.dtype)
        if not direct:
            updates -= base
        counts = np.array([float(next(iter(c.metric_records.values()))[self.weighted_by_key]) for c in contents])
        allowed = self.reputation.allowed(nodes) if self.reputation is not None else np.ones(len(nodes), bool)
        self.excluded_[server_round] = nodes[~allowed].tolist()
        if (~allowed).any():
            log(INFO, "aggregate_train: excluded by reputation: %s", nodes[~allowed].tolist())
        context = {}
        if self.aggregator.name == "fltrust":
            if self.server_update_fn is None:
                raise ValueError("fltrust needs server_update_fn(server_round, global_arrays) -> ArrayRecord")
            context["server_update"] = flatten(self.server_update_fn(server_round, global_arrays))
        if self.dp is not None:
            agg = self.dp.aggregate(updates if allowed.all() else updates[allowed])
        else:
            kept = updates if allowed.all() else updates[allowed]
            agg = self.aggregator.fit(kept, counts[allowed], suspicion=self.reputation is not None,
                                      **context).aggregate_
        if self.reputation is not None:
            self.reputation.update(nodes[allowed], self.aggregator.suspicion_)
        if self.dp is None:  # and the clients the rule itself left out
            allowed[np.flatnonzero(allowed)[self.aggregator.left_out(int(allowed.sum()))]] = False
            self.excluded_[server_round] = nodes[~allowed].tolist()
        arrays = unflatten(agg if direct else base + agg, global_arrays)
        metrics = self.train_metrics_aggr_fn([c for c, ok in zip(contents, allowed, strict=True) if ok],
                                             self.weighted_by_key)
        metrics["excluded-clients"] = int((~allowed).sum())
        if self.dp is not None:
            metrics["epsilon"] = self.dp.epsilon_spent()
        return arrays, metrics


    def _per_layer(self, contents: list, global_arrays: ArrayRecord) -> tuple[ArrayRecord, MetricRecord]:
        """Coordinate-wise rules, one layer at a time: the same result, a layer's worth of memory."""
        records = [c[next(iter(c.array_records))] for c in contents]
        out = {}
        for key in global_arrays:
            layer = np.stack([r[key].numpy().ravel() for r in records])
            ref = global_arrays[key].numpy()
            agg = self.aggregator.fit(layer, suspicion=False).aggregate_
            out[key] = Array(np.asarray(agg, dtype=ref.dtype).reshape(ref.shape))
        metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key)
        metrics["excluded-clients"] = 0
        return ArrayRecord(out), metrics


def _update_of(message: Message, reply: Message) -> tuple[np.ndarray, np.ndarray, str, ArrayRecord]:
    key = next(iter(reply.content.array_records))
    sent = message.content[next(iter(message.content.array_records))]
    base = flatten(sent)
    return base, flatten(reply.content[key]) - base, key, sent


def clip_mod(max_norm: float) -> Callable[[Message, Context, ClientAppCallable], Message]:
    """A client mod that clips the client's update (reply - received model) to L2 norm ``max_norm``."""

    def mod(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        reply = call_next(message, context)
        if reply.has_error() or message.metadata.message_type.split(".")[0] != "train":
            return reply
        base, update, key, sent = _update_of(message, reply)
        reply.content[key] = unflatten(base + clip_rows(update[None], max_norm)[0], sent)
        return reply

    return mod


def malicious_mod(attack: str | MaliciousClients, is_malicious: Callable[[Context], bool], n_malicious: int = 1,
                  n_clients: int | None = None) -> Callable[[Message, Context, ClientAppCallable], Message]:
    """A client mod that, on the clients ``is_malicious(context)`` selects, replaces the honest update by the
    attack's, crafted from this client's own update only (a real client does not see the others').
    ``n_clients`` defaults to the node config's ``num-partitions``."""
    attack = make_client_attack(attack) if isinstance(attack, str) else attack

    def mod(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        reply = call_next(message, context)
        if (reply.has_error() or message.metadata.message_type.split(".")[0] != "train"
                or not is_malicious(context)):
            return reply
        base, update, key, sent = _update_of(message, reply)
        own = np.repeat(update[None].astype(np.float32), max(n_malicious, 1), axis=0)
        n = n_clients if n_clients is not None else int(context.node_config.get("num-partitions", n_malicious))
        bad = attack.craft(own, own, n)[0]
        reply.content[key] = unflatten(base + bad, sent)
        return reply

    return mod
