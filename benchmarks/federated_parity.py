"""Our robust aggregators against Flower's own strategies (flwr 1.42, Message API), side by side.

1. Parity: on the same client updates (15 clients, 3 outliers, random example counts), the aggregate of our
   median, trimmed mean, Krum, Multi-Krum and Bulyan against Flower's FedMedian, FedTrimmedAvg, Krum,
   MultiKrum and Bulyan: largest absolute difference.
2. Speed and memory for 100 clients x 1M parameters and 1,000 clients x 100k parameters (float32, four
   layers): wall time (best of 3, runs interleaved) of ``aggregate_train`` on the same reply messages, for
   Flower's strategy and for our ``RobustStrategy`` with the same rule and the same (raw) weights; peak
   memory allocated during the call (tracemalloc, which numpy reports to), beyond the replies themselves.

    python -m benchmarks.federated_parity [--sizes 100x1000000,1000x100000] [--rules median,krum,...]
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc

import numpy as np

RULES = ("median", "trimmed_mean", "krum", "multi_krum", "bulyan")


def replies(x: np.ndarray, counts: np.ndarray, layers: int = 4):
    from flwr.app import Array, ArrayRecord, Metadata, MetricRecord, RecordDict
    from flwr.app.message.message import make_message

    cuts = np.linspace(0, x.shape[1], layers + 1).astype(int)
    out = []
    for i, (row, c) in enumerate(zip(x, counts, strict=True)):
        arrays = ArrayRecord({f"layer{j}": Array(np.ascontiguousarray(row[cuts[j]:cuts[j + 1]]))
                              for j in range(layers)})
        content = RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": int(c)})})
        md = Metadata(run_id=1, message_id=str(i), src_node_id=i + 1, dst_node_id=0, reply_to_message_id="0",
                      group_id="1", created_at=time.time(), ttl=3600.0, message_type="train")
        out.append(make_message(md, content))
    return out


def strategies(rule: str, n: int):
    from flwr.serverapp import strategy as fs

    from mithridate.federated.flower import RobustStrategy

    f = max(1, (n - 3) // 4)  # what Bulyan tolerates; used for every rule
    flower = {
        "median": lambda: fs.FedMedian(fraction_evaluate=0.0),
        "trimmed_mean": lambda: fs.FedTrimmedAvg(beta=0.2, fraction_evaluate=0.0),
        "krum": lambda: fs.Krum(num_malicious_nodes=f, fraction_evaluate=0.0),
        "multi_krum": lambda: fs.MultiKrum(num_malicious_nodes=f, num_nodes_to_select=n - f, fraction_evaluate=0.0),
        "bulyan": lambda: fs.Bulyan(num_malicious_nodes=f, fraction_evaluate=0.0),
    }[rule]
    options = {"median": {}, "trimmed_mean": {"beta": 0.2}, "krum": {"num_malicious": f},
               "multi_krum": {"num_malicious": f, "m": n - f}, "bulyan": {"num_malicious": f}}[rule]
    ours = lambda: RobustStrategy(rule, aggregator_options={**options, "max_weight_ratio": None},  # noqa: E731
                                  reputation=False, fraction_evaluate=0.0)
    return flower, ours


def _global(d: int, layers: int = 4):
    from flwr.app import Array, ArrayRecord

    cuts = np.linspace(0, d, layers + 1).astype(int)
    return ArrayRecord({f"layer{j}": Array(np.zeros(cuts[j + 1] - cuts[j], np.float32)) for j in range(layers)})


def run(strategy, x, counts, memory: bool) -> tuple[np.ndarray, float, float]:
    from flwr.app import ConfigRecord
    from flwr.supercore.task_identity import TaskIdentity

    from mithridate.federated.flower import RobustStrategy, flatten

    if isinstance(strategy, RobustStrategy):
        TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = 1

        class _Grid:
            def get_node_ids(self):
                return [1, 2]

        strategy.configure_train(1, _global(x.shape[1]), ConfigRecord(), _Grid())
    msgs = replies(x, counts)
    gc.collect()
    if memory:
        tracemalloc.start()
    t0 = time.perf_counter()
    arrays, _ = strategy.aggregate_train(1, msgs)
    seconds = time.perf_counter() - t0
    peak = 0.0
    if memory:
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return flatten(arrays), seconds, peak


def main() -> None:
    import logging

    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100x1000000,1000x100000")
    parser.add_argument("--rules", default=",".join(RULES))
    parser.add_argument("--repeats", type=int, default=3, help="timings are the best of this many runs")
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.WARNING)
    rules, repeats = args.rules.split(","), args.repeats

    print("## Parity (15 clients x 2,000 parameters, 3 outliers, random example counts)\n")
    print("| rule | max abs difference ours vs Flower |")
    print("|---|---|")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(15, 2000)).astype(np.float32)
    x[:3] += 3
    counts = rng.integers(10, 100, size=15)
    for rule in rules:
        flower, ours = strategies(rule, 15)
        a = run(flower(), x, counts, False)[0]
        b = run(ours(), x, counts, False)[0]
        print(f"| {rule} | {np.abs(a - b).max():.2e} |")

    print("\n## Speed and memory (aggregate_train on the same replies; float32)\n")
    print("| clients x params | rule | Flower s | ours s | speed ratio (Flower/ours) | Flower peak MiB "
          "| ours peak MiB |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes.split(","):
        n, d = (int(v) for v in size.split("x"))
        x = np.random.default_rng(1).normal(size=(n, d)).astype(np.float32)
        x[: n // 10] += 1.0
        counts = np.random.default_rng(2).integers(10, 100, size=n)
        for rule in rules:
            flower, ours = strategies(rule, n)
            tf, to = np.inf, np.inf
            for _ in range(repeats):  # interleaved, so a change in machine load hits both alike
                tf = min(tf, run(flower(), x, counts, False)[1])
                to = min(to, run(ours(), x, counts, False)[1])
            _, _, mf = run(flower(), x, counts, True)
            _, _, mo = run(ours(), x, counts, True)
            print(f"| {n} x {d:,} | {rule} | {tf:.2f} | {to:.2f} | {tf / to:.2f} | {mf:,.0f} | {mo:,.0f} |",
                  flush=True)


if __name__ == "__main__":
    main()
