"""Does an attack work? Train the reference model on clean and on poisoned data and compare them.

Both models are evaluated on the same clean test set. How the attack's success is measured depends on
what it aims for:

- backdoors (anything with ``triggered_test``): the share of triggered test inputs from outside the target
  class that the poisoned model sends to the target class;
- a targeted clean-label attack (``info["target_image"]``, e.g. feature collision): 1.0 if the poisoned
  model classifies the target instance as ``info["intended_class"]``, else 0.0;
- a targeted label flip (``info`` with ``source`` and ``target``): the share of test rows of the source
  class predicted as the target class;
- untargeted label flips: ``None`` (their effect is the accuracy drop).

Models are retrained end to end (``retrain="full"``), except for attacks that declare the transfer-learning
setting (``info["retrain"] == "head"``): there the attacker's feature extractor (``attack.model_``, or the
clean model) is frozen and only a softmax layer (multinomial logistic regression) is trained on its
penultimate features, for the clean and the poisoned model alike.

>>> from mithridate.attacks import RandomFlip
>>> from mithridate.data import demo, split
>>> train, test = split(demo("wine"), seed=0)
>>> report = evaluate_attack(train, RandomFlip(rate=0.2).poison(train), test)
>>> report.attack_success_rate is None
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from mithridate.attacks.base import Poisoned
from mithridate.data import Dataset
from mithridate.errors import DataError
from mithridate.represent import reference_model

Retrain = Literal["full", "head"]


@dataclass(frozen=True)
class AttackReport:
    """Accuracies on the clean test set of models trained on clean and on poisoned data, and the attack's
    success on the poisoned model (``clean_success_rate``: the same measure on the clean model, the base
    rate the attack has to beat)."""

    clean_accuracy: float
    poisoned_accuracy: float
    attack_success_rate: float | None
    clean_success_rate: float | None = None
    retrain: Retrain = "full"

    @property
    def accuracy_drop(self) -> float:
        return self.clean_accuracy - self.poisoned_accuracy

    def as_dict(self) -> dict:
        return {**asdict(self), "accuracy_drop": self.accuracy_drop}


class _Head:
    """A frozen feature extractor and a softmax layer trained on its penultimate features."""

    def __init__(self, extractor, features, y: np.ndarray, n_classes: int, random_state: int):
        from sklearn.linear_model import LogisticRegression

        self.extractor = extractor
        self.head = LogisticRegression(C=100.0, max_iter=5000, random_state=random_state)
        self.head.fit(extractor.embed(features), y)
        self.n_classes = n_classes

    def predict(self, features) -> np.ndarray:
        return self.head.predict(self.extractor.embed(features))


def evaluate_attack(train: Dataset, poisoned: Poisoned, test: Dataset, random_state: int = 0, *,
                    clean_model=None, retrain: Retrain | None = None,
                    progress: Callable[[str], None] | None = None) -> AttackReport:
    """Train on ``train`` and on ``poisoned.dataset``, test both on ``test`` (see the module docstring).

    ``clean_model``: a reference model already fitted on ``train`` (saves training it again when several
    attacks are evaluated on the same data). ``retrain``: override the attack's setting.
    """
    say = progress or (lambda _msg: None)
    data = poisoned.dataset
    if data.n_rows != train.n_rows or data.kind != train.kind or test.kind != train.kind:
        raise DataError("the poisoned data must be the training data attacked (same rows, same kind)")
    retrain = retrain or poisoned.info.get("retrain", "full")
    if retrain not in ("full", "head"):
        raise DataError(f"retrain must be 'full' or 'head', got {retrain!r}")

    def fit(ds: Dataset, what: str):
        say(f"training the reference model on the {what} data")
        return reference_model(ds.kind, random_state=random_state).fit(ds.features, ds.y, ds.n_classes)

    if retrain == "full":
        clean = clean_model if clean_model is not None else fit(train, "clean")
        dirty = fit(data, "poisoned")
    else:
        extractor = getattr(poisoned.attack, "model_", None)
        if extractor is None:
            extractor = clean_model if clean_model is not None else fit(train, "clean")
        say("training the last layer on frozen features")
        clean = _Head(extractor, train.features, train.y, train.n_classes, random_state)
        dirty = _Head(extractor, data.features, data.y, data.n_classes, random_state)
    accuracy = [float(np.mean(m.predict(test.features) == test.y)) for m in (clean, dirty)]
    success = [attack_success(m, poisoned, test) for m in (clean, dirty)]
    return AttackReport(accuracy[0], accuracy[1], success[1], success[0], retrain)


def attack_success(model, poisoned: Poisoned, test: Dataset) -> float | None:
    """What the attack aimed for, measured on ``model`` (anything with ``predict``) over ``test``: see the
    module docstring; ``None`` for untargeted flips."""
    attack, info = poisoned.attack, poisoned.info
    if hasattr(attack, "triggered_test"):
        triggered = attack.triggered_test(test)
        return float(np.mean(model.predict(triggered.features) == attack.target_))
    if "target_image" in info:
        return float(model.predict(info["target_image"])[0] == info["intended_class"])
    if "source" in info and "target" in info:
        rows = test.y == info["source"]
        if not rows.any():
            return None
        return float(np.mean(model.predict(test.take(rows).features) == info["target"]))
    return None


def evaluate_split(dataset: Dataset, poisoned: Poisoned, test_size: float = 0.25, seed: int = 0,
                   update: Callable[[str], None] | None = None) -> AttackReport:
    """Split the rows, evaluate on the clean test part a model trained on the (clean vs poisoned) rest.

    A feature-collision target taken from the data itself is kept out of the training part.
    """
    from sklearn.model_selection import train_test_split

    rows = np.arange(dataset.n_rows)
    train_rows, test_rows = train_test_split(rows, test_size=test_size, random_state=seed, stratify=dataset.y)
    if poisoned.info.get("target_in") == "train":
        train_rows = train_rows[train_rows != poisoned.info["target_index"]]
    train_rows = np.sort(train_rows)
    sub = Poisoned(poisoned.dataset.take(train_rows), poisoned.mask[train_rows], poisoned.attack, poisoned.info)
    return evaluate_attack(dataset.take(train_rows), sub, dataset.take(np.sort(test_rows)), seed,
                           progress=update)
