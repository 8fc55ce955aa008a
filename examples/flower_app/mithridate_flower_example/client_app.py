"""ClientApp: local training on a digits shard; the first ``num-malicious`` partitions attack."""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from mithridate.federated.flower import malicious_mod
from mithridate.federated.secagg.flower import secagg_mod
from mithridate_flower_example.task import Net, load_partition, train

#: the values of pyproject.toml's [tool.flwr.app.config], used when a runner passes no run config
DEFAULTS = {"attack": "sign_flip", "num-malicious": 4, "local-epochs": 2, "lr": 0.1}


def _cfg(context: Context) -> dict:
    return {**DEFAULTS, **context.run_config}


def _is_malicious(context: Context) -> bool:
    cfg = _cfg(context)
    return cfg["attack"] != "none" and int(context.node_config["partition-id"]) < int(cfg["num-malicious"])


def _attack(message: Message, context: Context, call_next):
    """Route malicious partitions through ``malicious_mod`` with the configured attack."""
    cfg = _cfg(context)
    if cfg["attack"] == "none":
        return call_next(message, context)
    mod = malicious_mod(str(cfg["attack"]), _is_malicious, n_malicious=int(cfg["num-malicious"]))
    return mod(message, context, call_next)


app = ClientApp(mods=[secagg_mod, _attack])


@app.train()
def train_fn(msg: Message, context: Context) -> Message:
    pid, parts = int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
    x, y = load_partition(pid, parts)
    net = Net()
    net.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    server_round = int(msg.content["config"].get("server-round", 0))
    cfg = _cfg(context)
    loss = train(net, x, y, int(cfg["local-epochs"]), float(cfg["lr"]), seed=1000 * server_round + pid)
    content = RecordDict({"arrays": ArrayRecord(net.state_dict()),
                          "metrics": MetricRecord({"train-loss": loss, "num-examples": len(y)})})
    return Message(content=content, reply_to=msg)
