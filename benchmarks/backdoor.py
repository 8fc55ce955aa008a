"""Backdoor detection: our SPECTRE, spectral signatures and activation clustering against IBM ART's.

Digits, target class 0. Attacks: a 3x3 checkerboard patch in the bottom-right corner (BadNets) and a
blended random key (Chen et al. 2017, alpha 0.2), each at 1%, 5% and 10% of all rows, and a clean run.
For each: poison, train ONE :class:`~mithridate.represent.CNNClassifier` (seed 0) on the poisoned data,
then

- ours (:mod:`mithridate.detect.spectre`, :mod:`.spectral`, :mod:`.activation_clustering`) read its
  penultimate embedding (``cnn.embed``) per given label, with no poison rate;
- ART 1.x's ``SpectralSignatureDefense`` and ``ActivationDefence`` read the same trained network, wrapped
  in ``art.estimators.classification.PyTorchClassifier`` and fed the same scaled inputs
  (``cnn._tensor(images)``). Both take ART's last layer, which for this network is the logits layer
  (``head``: ART lists the model's top-level modules, ``body`` and ``head``). Settings: spectral
  ``eps_multiplier=1.5`` and ``batch_size=128`` (defaults) with ``expected_pp_poison`` set to the TRUE
  poison rate (ART needs one; on the clean run we give it 0.05, a typical guess); activation defence with
  its defaults (2 clusters, PCA to 10 dims, ``cluster_analysis="smaller"``), ``np.random.seed(0)`` first
  since its k-means is unseeded.

Scores: precision and recall of the poisoned rows, the share of clean rows flagged (``clean_flagged``),
and which classes a method declares poisoned (ours decide per class; ART flags rows in every class it
finds a split in, listed as the classes it flagged rows of). ASR: the share of the other classes' images,
trigger stamped on, that the trained network sends to the target.

Run: ``.venv/bin/python -m benchmarks.backdoor`` (seven CNNs: minutes on a small CPU).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from mithridate.attacks.backdoor import BlendTrigger, PatchTrigger
from mithridate.data import demo
from mithridate.detect.activation_clustering import ActivationClustering
from mithridate.detect.spectral import SpectralSignatures
from mithridate.detect.spectre import Spectre
from mithridate.represent import CNNClassifier, Representation

TARGET = 0
RATES = (0.01, 0.05, 0.10)
CLEAN_GUESS = 0.05
OURS = {"ours SPECTRE": Spectre, "ours spectral": SpectralSignatures, "ours AC": ActivationClustering}


def scenarios() -> list[tuple[str, float]]:
    return [("clean", 0.0)] + [(attack, rate) for attack in ("patch", "blend") for rate in RATES]


def poison(attack: str, rate: float, seed: int = 0):
    """``(dataset, truth mask, attack object or None)``."""
    data = demo("digits")
    if attack == "clean":
        return data, np.zeros(data.n_rows, bool), None
    trigger = (PatchTrigger(target=TARGET, rate=rate, size=3, random_state=seed) if attack == "patch"
               else BlendTrigger(target=TARGET, rate=rate, alpha=0.2, random_state=seed))
    p = trigger.poison(data)
    return p.dataset, p.mask, trigger


def art_flags(cnn: CNNClassifier, images: np.ndarray, y: np.ndarray, n_classes: int,
              expected_rate: float) -> dict[str, np.ndarray]:
    """ART's two filters on the trained network: rows each flags as poison."""
    import torch
    from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense
    from art.estimators.classification import PyTorchClassifier

    x = cnn._tensor(images).numpy()
    classifier = PyTorchClassifier(model=cnn.model_, loss=torch.nn.CrossEntropyLoss(), input_shape=x.shape[1:],
                                   nb_classes=n_classes, clip_values=(0.0, 1.0))
    onehot = np.eye(n_classes)[y]
    spectral = SpectralSignatureDefense(classifier, x, onehot, expected_pp_poison=expected_rate,
                                        batch_size=128, eps_multiplier=1.5)
    _, clean_spectral = spectral.detect_poison()
    np.random.seed(0)
    activation = ActivationDefence(classifier, x, onehot)
    _, clean_activation = activation.detect_poison(nb_clusters=2, nb_dims=10, reduce="PCA")
    return {"ART spectral": np.asarray(clean_spectral) == 0, "ART AC": np.asarray(clean_activation) == 0}


def run(seed: int = 0, verbose: bool = True, threads: int | None = None) -> pd.DataFrame:
    rows = []
    for attack, rate in scenarios():
        start = time.perf_counter()
        data, truth, trigger = poison(attack, rate, seed)
        with threadpool_limits(limits=threads):
            cnn = CNNClassifier(random_state=seed).fit(data.features, data.y, data.n_classes)
        asr = float("nan")
        if trigger is not None:
            source = demo("digits")
            stamped = trigger.add_trigger(source.features[source.y != TARGET])
            asr = float(np.mean(cnn.predict(stamped) == TARGET))
        rep = Representation(cnn.embed(data.features), cnn.predict_proba(data.features),
                             "penultimate layer of the CNN trained on the poisoned data")
        results = {}
        for name, cls in OURS.items():
            det = cls().fit(data, rep)
            results[name] = (det.flags_, sorted(det.poisoned_classes_))
        for name, flags in art_flags(cnn, data.features, data.y, data.n_classes,
                                     rate if rate > 0 else CLEAN_GUESS).items():
            results[name] = (flags, None)
        for name, (flags, declared) in results.items():
            tp = int(np.sum(flags & truth))
            classes = declared if declared is not None else sorted(np.unique(data.y[flags]).tolist())
            rows.append({
                "attack": attack, "rate": rate, "ASR": asr, "method": name,
                "precision": tp / max(int(flags.sum()), 1) if truth.any() else float("nan"),
                "recall": tp / int(truth.sum()) if truth.any() else float("nan"),
                "clean_flagged": float(np.sum(flags & ~truth) / np.sum(~truth)),
                "flagged": int(flags.sum()),
                "classes": ("declared " if declared is not None else "rows in ") + (
                    ",".join(map(str, classes)) or "none"),
                "target_found": (declared == [TARGET]) if declared is not None and truth.any() else None,
            })
        if verbose:
            best = next(r for r in rows[::-1] if r["method"] == "ours SPECTRE")
            print(f"  {attack:6s} {rate:4.0%}: ASR {asr:.2f}, SPECTRE P {best['precision']:.2f} "
                  f"R {best['recall']:.2f} ({time.perf_counter() - start:.0f}s)", flush=True)
    return pd.DataFrame(rows)


def markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (floats to two or three decimals)."""
    def cell(column: str, v) -> str:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return "-"
        if column == "rate":
            return f"{v:.0%}"
        if isinstance(v, float):
            return f"{v:.3f}" if column == "clean_flagged" else f"{v:.2f}"
        return "yes" if v is True else "no" if v is False else str(v)
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(c, v) for c, v in zip(frame.columns, row, strict=True)) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="OpenMP/BLAS threads while training (0: all)")
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    args = parser.parse_args(argv)
    table = run(args.seed, threads=args.threads or None)
    text = markdown(table)
    print("\nBackdoor detection on digits (target class 0); ART given the true poison rate "
          f"(clean run: {CLEAN_GUESS}); ours given none\n")
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "backdoor.md").write_text(text)
    table.to_csv(args.out / "backdoor.csv", index=False)
    print(f"written to {args.out}/backdoor.md, backdoor.csv")


if __name__ == "__main__":
    main()
