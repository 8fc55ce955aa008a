"""A ready-made Flower ``ClientApp`` on scikit-learn's digits (the numpy MLP of
:mod:`mithridate.federated.model`), with optional malicious clients: for tests, demos and trying a
strategy in a real Flower simulation in seconds. The PyTorch version is ``examples/flower_app``.

Each SuperNode reads its ``partition-id`` and ``num-partitions`` from the node config (set by Flower's
simulation engine) and trains on that IID shard of the training split; partitions below ``n_malicious`` run
``attack`` through :func:`~mithridate.federated.flower.malicious_mod` (data attacks poison the shard).
"""

from __future__ import annotations

from functools import cache

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from mithridate.data import demo, split
from mithridate.federated.attacks import make_client_attack
from mithridate.federated.flower import flatten, malicious_mod
from mithridate.federated.model import FlatModel


@cache
def _data(seed: int):
    train, test = split(demo("digits"), test_size=0.25, seed=seed)
    return train, test


def digits_model(seed: int = 0) -> FlatModel:
    return FlatModel.for_images((8, 8), 10, seed=seed)


def initial_arrays(seed: int = 0) -> ArrayRecord:
    return ArrayRecord({"theta": Array(digits_model(seed).initial())})


def digits_accuracy(arrays: ArrayRecord, seed: int = 0) -> float:
    """Accuracy of the global model on the held-out digits."""
    fm = digits_model(seed)
    _, test = _data(seed)
    return fm.accuracy(flatten(arrays).astype(np.float32), fm.inputs(test.features), test.y)


def digits_client_app(n_malicious: int = 0, attack: str = "none", local_epochs: int = 2, lr: float = 0.1,
                      seed: int = 0, mods: list | None = None, drop: dict[int, str] | None = None) -> ClientApp:
    """A ClientApp training the digits MLP; partitions ``0..n_malicious-1`` are malicious. ``mods`` come
    first (outermost), e.g. ``[secagg_mod]``. ``drop``: ``{partition: stage}`` makes a partition fail at
    a secure-aggregation stage (``advertise``, ``share``, ``masked``, ``unmask``), to exercise dropouts."""
    behaviour = make_client_attack(attack, random_state=seed)

    def is_malicious(context: Context) -> bool:
        return int(context.node_config["partition-id"]) < n_malicious

    attack_mods = [] if attack == "none" else [malicious_mod(behaviour, is_malicious, n_malicious)]
    drop_mods = [_dropout_mod(drop)] if drop else []
    app = ClientApp(mods=[*drop_mods, *(mods or []), *attack_mods])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid, parts = int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
        train_ds, _ = _data(seed)
        rows = np.array_split(np.random.default_rng(seed).permutation(train_ds.n_rows), parts)[pid]
        local = train_ds.take(np.sort(rows))
        if pid < n_malicious:
            local = behaviour.poison_data(local, pid)
        fm = digits_model(seed)
        theta = flatten(msg.content["arrays"]).astype(np.float32)
        server_round = int(msg.content["config"].get("server-round", 0))
        new = fm.train(theta, fm.inputs(local.features), local.y, local_epochs, lr,
                       seed=seed * 7919 + server_round * 31 + pid)
        content = RecordDict({"arrays": ArrayRecord({"theta": Array(new)}),
                              "metrics": MetricRecord({"num-examples": local.n_rows})})
        return Message(content=content, reply_to=msg)

    return app


def _dropout_mod(drop: dict[int, str]):
    from mithridate.federated.secagg.flower import KEY

    def mod(message: Message, context: Context, call_next):
        stage = drop.get(int(context.node_config["partition-id"]))
        cfg = message.content.config_records.get(KEY)
        if stage is not None and cfg is not None and cfg["stage"] == stage:
            raise ConnectionError(f"simulated dropout at stage {stage}")
        return call_next(message, context)

    return mod
