"""Label-flip detection: our :class:`~mithridate.detect.label_issues.LabelIssues` against cleanlab.

For each demo dataset (digits, breast_cancer, wine) and attack (random flips of 10% and 30% of all rows; a
targeted flip of 10% of one class's rows) and seed, the poisoned dataset's representation (out-of-fold
probabilities and geometry, :func:`mithridate.represent.represent`) is computed once; then our detector and
``cleanlab.filter.find_label_issues(labels, pred_probs)`` (default arguments) both read the same
out-of-fold probabilities. Scores are precision, recall and F1 for finding the flipped rows; on clean data,
the false-positive rate (share of rows flagged).

Targeted pairs (source -> target), chosen as a realistic attacker's aim between classes that resemble each
other: digits 7 -> 1, breast_cancer malignant -> benign (hide the disease), wine class_1 -> class_0.

Run: ``.venv/bin/python -m benchmarks.label_flips`` (``--cache DIR`` keeps the representations, which for
digits take minutes each on a small CPU: five cross-validated CNNs plus one on all rows).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from mithridate.attacks.label_flip import RandomFlip, TargetedFlip
from mithridate.data import demo
from mithridate.detect.label_issues import label_issue_scores
from mithridate.represent import Representation, represent

DATASETS = ("digits", "breast_cancer", "wine")
TARGETED = {"digits": (7, 1), "breast_cancer": ("malignant", "benign"), "wine": ("class_1", "class_0")}
ATTACKS = ("clean", "random 10%", "random 30%", "targeted 10%")


def poison(name: str, attack: str, seed: int):
    """The poisoned dataset and its ground-truth mask."""
    data = demo(name)
    if attack == "clean":
        return data, np.zeros(data.n_rows, bool)
    if attack.startswith("random"):
        rate = float(attack.split()[1].rstrip("%")) / 100
        p = RandomFlip(rate=rate, random_state=seed).poison(data)
    else:
        source, target = TARGETED[name]
        p = TargetedFlip(source=source, target=target, rate=0.1, random_state=seed).poison(data)
    return p.dataset, p.mask


def representation(data, name: str, attack: str, seed: int, cache: Path | None,
                   threads: int | None = 1) -> Representation:
    """``represent(data)``, read from / written to ``cache`` (npz, no pickle) when one is given.

    ``threads`` caps OpenMP/BLAS threads while it trains (one by default: on a shared small machine,
    gradient boosting's and torch's threads otherwise spin against each other)."""
    path = None if cache is None else cache / f"{name}-{attack.replace(' ', '').replace('%', '')}-{seed}.npz"
    if path is not None and path.exists():
        with np.load(path, allow_pickle=False) as z:
            label = z["label_features"] if "label_features" in z.files else None
            return Representation(z["features"], z["proba"], str(z["description"]), label)
    with threadpool_limits(limits=threads):
        rep = represent(data, random_state=seed)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        extra = {} if rep.label_features is None else {"label_features": rep.label_features}
        np.savez(path, features=rep.features, proba=rep.proba, description=rep.description, **extra)
    return rep


def prf(flags: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    tp = float(np.sum(flags & truth))
    p = tp / max(flags.sum(), 1)
    r = tp / max(truth.sum(), 1)
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def run(datasets=DATASETS, seeds=(0, 1, 2), cache: Path | None = None, threads: int | None = 1,
        verbose: bool = True) -> pd.DataFrame:
    from cleanlab.filter import find_label_issues

    rows = []
    for name in datasets:
        for attack in ATTACKS:
            for seed in (seeds[:1] if attack == "clean" else seeds):
                start = time.perf_counter()
                data, truth = poison(name, attack, seed)
                rep = representation(data, name, attack, seed, cache, threads)
                ours = label_issue_scores(data.y, rep.proba, rep.label_geometry)
                theirs = find_label_issues(data.y, rep.proba, n_jobs=1)
                row = {"dataset": name, "attack": attack, "seed": seed, "n": data.n_rows,
                       "flipped": int(truth.sum())}
                for who, flags in (("ours", ours.flags), ("cleanlab", theirs)):
                    p, r, f = prf(flags, truth)
                    row |= {f"{who}_P": p, f"{who}_R": r, f"{who}_F1": f, f"{who}_flags": int(flags.sum()),
                            f"{who}_FPR": float(np.sum(flags & ~truth) / max(np.sum(~truth), 1))}
                hit = ours.flags & truth
                row["suggest_ok"] = float(np.mean(ours.suggested[hit] == demo(name).y[hit])) if hit.any() \
                    else float("nan")
                rows.append(row)
                if verbose:
                    print(f"  {name:13s} {attack:12s} seed {seed}: ours F1 {row['ours_F1']:.3f} "
                          f"cleanlab F1 {row['cleanlab_F1']:.3f} ({time.perf_counter() - start:.0f}s)",
                          flush=True)
    return pd.DataFrame(rows)


def summarize(results: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean over seeds per (dataset, attack): flipped rows, and clean-data false-positive rates."""
    poisoned = results[results.attack != "clean"]
    cols = ["flipped", "ours_P", "ours_R", "ours_F1", "cleanlab_P", "cleanlab_R", "cleanlab_F1", "suggest_ok"]
    table = poisoned.groupby(["dataset", "attack"], sort=False)[cols].mean().reset_index()
    table["gap"] = table.ours_F1 - table.cleanlab_F1
    clean = results[results.attack == "clean"][["dataset", "n", "ours_flags", "ours_FPR", "cleanlab_flags",
                                                 "cleanlab_FPR"]]
    return table, clean.reset_index(drop=True)


def markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (floats to three decimals)."""
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells]) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--cache", type=Path, default=None, help="folder to keep representations in")
    parser.add_argument("--threads", type=int, default=1, help="OpenMP/BLAS threads while training (0: all)")
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    args = parser.parse_args(argv)
    results = run(args.datasets, tuple(args.seeds), args.cache, args.threads or None)
    table, clean = summarize(results)
    fmt = {c: "{:.3f}".format for c in table.columns if table[c].dtype.kind == "f"}
    print("\nFlipped-row detection (mean over seeds " + " ".join(map(str, args.seeds)) + "):")
    print(table.to_string(index=False, formatters=fmt | {"flipped": "{:.0f}".format}))
    print(f"\nmean F1: ours {table.ours_F1.mean():.3f}, cleanlab {table.cleanlab_F1.mean():.3f}, "
          f"gap {table.gap.mean():+.3f} (worst case {table.gap.min():+.3f})")
    print("\nClean data (no flips): rows flagged and false-positive rate")
    print(clean.to_string(index=False, formatters={"ours_FPR": "{:.3f}".format,
                                                    "cleanlab_FPR": "{:.3f}".format}))
    args.out.mkdir(parents=True, exist_ok=True)
    results.to_csv(args.out / "label_flips_runs.csv", index=False)
    table.to_csv(args.out / "label_flips.csv", index=False)
    (args.out / "label_flips.md").write_text(markdown(table) + "\n" + markdown(clean))
    print(f"\nwritten to {args.out}/label_flips.csv, label_flips.md, label_flips_runs.csv")


if __name__ == "__main__":
    main()
