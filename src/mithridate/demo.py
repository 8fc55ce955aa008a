"""The README's main job, end to end on built-in data: poison, scan, sanitize, retrain, compare.

Digits is poisoned twice (a BadNets patch backdoor and random label flips), scanned, sanitized with the
``relabel`` policy, and a model is retrained on the clean, the poisoned and the sanitized training sets.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mithridate.attacks.backdoor import PatchTrigger
from mithridate.attacks.label_flip import RandomFlip
from mithridate.data import Dataset, atomic_path, demo, save, split
from mithridate.detect.scan import Scan
from mithridate.represent import reference_model
from mithridate.sanitize import sanitize

Progress = Callable[[str], None]


def precision_recall(flagged: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    tp = int((flagged & truth).sum())
    return {
        "precision": tp / max(int(flagged.sum()), 1),
        "recall": tp / max(int(truth.sum()), 1),
        "flagged": int(flagged.sum()),
        "poisoned": int(truth.sum()),
    }


def _train_and_test(train: Dataset, test: Dataset, backdoor: PatchTrigger, seed: int) -> dict[str, float]:
    model = reference_model(train.kind, random_state=seed).fit(train.features, train.y, train.n_classes)
    triggered = backdoor.triggered_test(test)
    return {
        "accuracy": float((model.predict(test.features) == test.y).mean()),
        "attack_success_rate": float((model.predict(triggered.features) == backdoor.target_).mean()),
    }


def _relabel_accuracy(changes, original: Dataset) -> dict[str, float]:
    """How many relabelled rows got their original (pre-attack) label back."""
    relabelled = changes[changes["action"] == "relabel"]
    codes = np.array([original.class_code(label) for label in relabelled["new_label"]], dtype=int)
    correct = int((codes == original.y[relabelled["row"].to_numpy()]).sum())
    return {"rows": len(relabelled), "restored_original_label": correct}


def run_demo(out: str | Path, seed: int = 0, progress: Progress | None = None) -> dict:
    """Run the walk-through, write its files into ``out`` and return the figures it prints."""
    say = progress or (lambda _msg: None)
    out = Path(out)
    train, test = split(demo("digits"), test_size=0.25, seed=seed)
    flip = RandomFlip(rate=0.05, random_state=seed).poison(train)
    backdoor = PatchTrigger(target=0, rate=0.05, size=3, random_state=seed)
    patched = backdoor.poison(flip.dataset)
    poisoned = patched.dataset
    truth = {"label flip": flip.mask & ~patched.mask, "patch backdoor": patched.mask}
    union = flip.mask | patched.mask
    save(poisoned, out / "poisoned.npz")

    say("scanning the poisoned training set")
    scan = Scan(random_state=seed).fit(poisoned, progress=say)
    cleaned = sanitize(poisoned, scan.report_.findings, "relabel")
    flagged = scan.report_.flagged
    save(cleaned.dataset, out / "sanitized.npz")
    with atomic_path(out / "sanitized.changes.csv") as tmp:
        cleaned.changes.to_csv(tmp, index=False)
    from mithridate.report import write_scan_report

    write_scan_report(scan.report_, out, cleaned.changes)

    models = {}
    for name, data in (("clean", train), ("poisoned", poisoned), ("sanitized", cleaned.dataset)):
        say(f"training on the {name} set")
        models[name] = _train_and_test(data, test, backdoor, seed)
    results = {
        "rows": poisoned.n_rows,
        "poisoned_rows": int(union.sum()),
        "detection": {"all": precision_recall(flagged, union),
                      **{k: {"recall": float((flagged & m).sum() / max(m.sum(), 1))} for k, m in truth.items()}},
        "relabelled": _relabel_accuracy(cleaned.changes, train),
        "models": models,
    }
    with atomic_path(out / "demo.json") as tmp:
        tmp.write_text(json.dumps(results, indent=2))
    return results
