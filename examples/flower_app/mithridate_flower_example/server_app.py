"""ServerApp: our robust strategy in place of FedAvg (or secure aggregation), centralised evaluation."""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from mithridate.federated.flower import RobustStrategy
from mithridate.federated.secagg.flower import secure_fedavg
from mithridate_flower_example.task import Net, accuracy, load_test

app = ServerApp()
#: the values of pyproject.toml's [tool.flwr.app.config], used when a runner passes no run config
DEFAULTS = {"num-server-rounds": 10, "aggregator": "default", "secure": False, "clip": 1.0}


def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
    net = Net()
    net.load_state_dict(arrays.to_torch_state_dict())
    x, y = load_test()
    return MetricRecord({"accuracy": accuracy(net, x, y)})


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = {**DEFAULTS, **context.run_config}
    rounds = int(cfg["num-server-rounds"])
    initial = ArrayRecord(Net().state_dict())
    if bool(cfg.get("secure", False)):
        result = secure_fedavg(grid, initial, rounds, clip=float(cfg.get("clip", 1.0)), dropout=0.1,
                               evaluate_fn=evaluate)
        print(f"final accuracy (secure aggregation): {evaluate(rounds, result.arrays)['accuracy']:.3f}")
        return
    strategy = RobustStrategy(str(cfg["aggregator"]), fraction_evaluate=0.0)
    result = strategy.start(grid=grid, initial_arrays=initial, num_rounds=rounds, evaluate_fn=evaluate)
    print(f"final accuracy ({cfg['aggregator']}): {evaluate(rounds, result.arrays)['accuracy']:.3f}")
