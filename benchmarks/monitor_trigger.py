"""The per-request trigger check (STRIP-style) on real image sets: how many triggered requests it flags,
and how many clean ones, against the rate its conformal threshold promises (issue 13).

A model (logistic regression on pixels) is trained with 10% of its data backdoored, BadNets patch or a
blended pattern, target class 0. The check is fitted on a verified hold-out the model never saw. Traffic:
triggered images of the other classes, and clean images, all from a third part of the set.

    python -m benchmarks.monitor_trigger [--ert 100] [--overlays 16]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.linear_model import LogisticRegression

from benchmarks.real_data import image_set
from mithridate.attacks import BlendTrigger, PatchTrigger
from mithridate.monitor.strip import TriggerCheck


def run(name: str, attack, ert: float, overlays: int, seed: int) -> dict:
    ds = image_set(name)
    order = np.random.default_rng(seed).permutation(ds.n_rows)
    third = ds.n_rows // 3
    train, hold, live = ds.take(order[:third]), ds.take(order[third:2 * third]), ds.take(order[2 * third:])
    poisoned = attack(target=0, rate=0.1, random_state=seed).poison(train).dataset
    flat = np.asarray(poisoned.features, float).reshape(poisoned.n_rows, -1)
    model = LogisticRegression(max_iter=3000).fit(flat / 255 if flat.max() > 16 else flat, poisoned.y)
    scale = 255.0 if flat.max() > 16 else 1.0

    def predict(images):
        return model.predict_proba(images.reshape(len(images), -1) / scale)

    t0 = time.perf_counter()
    check = TriggerCheck(predict, ert=ert, overlays=overlays, random_state=seed).fit(np.asarray(hold.features, float))
    others = live.take(np.flatnonzero(live.y != 0))
    triggered = np.asarray(attack(target=0, rate=0.999, random_state=seed).poison(others).dataset.features, float)
    success = float((model.predict(triggered.reshape(len(triggered), -1) / scale) == 0).mean())
    caught = len(check.update(triggered)) / len(triggered)
    clean = np.asarray(live.features, float)
    false = len(check.update(clean)) / len(clean)
    seconds = time.perf_counter() - t0
    return {"set": name, "attack": attack.__name__, "attack success": success, "reference images": hold.n_rows,
            "ERT promised": check.ert_, "triggered flagged": caught, "clean flagged": false,
            "promised clean rate": 1 / check.ert_, "requests/s": (len(triggered) + len(clean)) / seconds}


def main() -> None:
    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ert", type=float, default=100)
    parser.add_argument("--overlays", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    rows = [run(name, attack, args.ert, args.overlays, seed) for name in ("digits", "mnist")
            for attack in (PatchTrigger, BlendTrigger) for seed in range(args.seeds)]
    frame = pd.DataFrame(rows).groupby(["set", "attack"]).mean(numeric_only=True).round(3)
    print(frame.to_string())


if __name__ == "__main__":
    main()
