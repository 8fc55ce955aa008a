"""Scan time and peak memory against table size (10k, 100k, 1M rows x 50 columns).

Each size runs in its own process so its peak resident memory is its own. The table is synthetic
(``make_classification``: 40 informative/redundant numeric columns, 10 categorical columns made by binning,
2% missing values), with 5% random label flips so the detectors have something to find.

    python -m benchmarks.scale [--sizes 10000,100000,1000000] [--engine local,ray]

``--engine ray`` fits the scan's models as tasks on a Ray cluster started in the run's process on this
machine (as many CPUs as it has); the seconds are the scan's, and ``ray_start_s`` the cluster's start.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import pandas as pd


def synthetic_table(n: int, n_columns: int = 50, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=n, n_features=n_columns, n_informative=20, n_redundant=10,
                               n_classes=3, flip_y=0.0, class_sep=2.0,
                               random_state=seed)
    rng = np.random.default_rng(seed)
    table = pd.DataFrame(X.astype(np.float32), columns=[f"f{i}" for i in range(n_columns)])
    for i in range(n_columns - 10, n_columns):  # the last 10 columns become categories
        table[f"f{i}"] = pd.cut(table[f"f{i}"], bins=[-np.inf, -1, 0, 1, np.inf], labels=list("abcd")).astype(str)
    for col in table.columns[::7]:
        table.loc[rng.random(n) < 0.02, col] = np.nan
    return table, y


def run_one(n: int, engine: str = "local") -> dict:
    from mithridate.attacks import RandomFlip
    from mithridate.data import Dataset
    from mithridate.detect import Scan
    from mithridate.scale import make_engine

    table, y = synthetic_table(n)
    poisoned = RandomFlip(rate=0.05, random_state=0).poison(Dataset.from_labels(table, y, name=f"synthetic-{n}"))
    start = time.perf_counter()
    runner = make_engine(engine)
    if engine == "ray":
        import ray

        ray.init(include_dashboard=False, log_to_driver=False)
    started = time.perf_counter() - start
    start = time.perf_counter()
    report = Scan(engine=runner).fit(poisoned.dataset).report_
    seconds = time.perf_counter() - start
    flagged = report.flagged
    tp = int((flagged & poisoned.mask).sum())
    return {
        "rows": n,
        "engine": engine,
        "seconds": round(seconds, 1),
        "ray_start_s": round(started, 1),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "precision": round(tp / max(flagged.sum(), 1), 3),
        "recall": round(tp / poisoned.mask.sum(), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--engine", default="local", help="comma-separated: local, ray")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.engine)))
        return
    rows = []
    for n in map(int, args.sizes.split(",")):
        for engine in args.engine.split(","):
            out = subprocess.run([sys.executable, "-m", "benchmarks.scale", "--one", str(n), "--engine", engine],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    print("\n| rows | engine | scan seconds | peak memory of the driver (GB) | precision | recall (5% random flips) |")
    print("|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['rows']:,} | {r['engine']} | {r['seconds']} | {r['peak_rss_gb']} | {r['precision']} | "
              f"{r['recall']} |")


if __name__ == "__main__":
    main()
