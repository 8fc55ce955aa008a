"""Robustness table: final test accuracy on digits, 20 clients of which 20% malicious, every aggregator
against every attack (and none), in our in-process simulator (same data split, same seeds, 20 rounds).
Attacks with a success rate (the model-replacement backdoor, the targeted flip) show it after the slash.

The bar: our ``default`` must stay within 3 points of FedAvg's accuracy without attack, under every attack.

    python -m benchmarks.federated_robustness [--rounds 20] [--clients 20] [--seeds 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

AGGREGATORS = ("mean", "median", "trimmed_mean", "krum", "multi_krum", "bulyan", "geometric_median",
               "centered_clipping", "norm_bound", "fltrust", "default")
ATTACKS = ("none", "label_flip", "targeted_flip", "sign_flip", "gaussian", "alie", "ipm", "min_max", "min_sum",
           "backdoor")


def main() -> None:
    from mithridate.federated.simulate import simulate

    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seeds", default="0", help="comma-separated; cells are means over seeds")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.perf_counter()
    print(f"Final accuracy (/ attack success) on digits, {args.clients} clients, 20% malicious, "
          f"{args.rounds} rounds, seeds {seeds}\n")
    print("| aggregator | " + " | ".join(ATTACKS) + " |")
    print("|---" * (len(ATTACKS) + 1) + "|")
    table = {}
    for agg in AGGREGATORS:
        cells = []
        for attack in ATTACKS:
            runs = [simulate(agg, attack, clients=args.clients, rounds=args.rounds, malicious=0.2, seed=s)
                    for s in seeds]
            acc = float(np.mean([r.final_accuracy for r in runs]))
            asr = runs[0].attack_success_rate
            asr = None if asr is None else float(np.mean([r.attack_success_rate for r in runs]))
            table[agg, attack] = acc
            cells.append(f"{acc:.3f}" + ("" if asr is None else f" / {asr:.2f}"))
        print(f"| {agg} | " + " | ".join(cells) + " |", flush=True)
    clean = table["mean", "none"]
    worst_attack = min(ATTACKS[1:], key=lambda a: table["default", a])
    worst = table["default", worst_attack]
    verdict = "holds" if worst >= clean - 0.03 else "FAILS"
    print(f"\nFedAvg without attack: {clean:.3f}; default's worst case: {worst:.3f} ({worst_attack}); "
          f"gap {100 * (clean - worst):.1f} points: the 3-point bar {verdict}. ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
