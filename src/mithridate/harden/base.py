"""The trainer protocol of :mod:`mithridate.harden`, and the one way a trained model leaves the process:
safetensors weights beside a JSON config, never pickle.

A trainer is configured in ``__init__``, learns in :meth:`Trainer.fit` (a
:class:`~mithridate.data.Dataset`), leaves its learned state in attributes ending in ``_`` (``members_``:
the :class:`~mithridate.harden.member.Member` networks; ``report_``: what was trained, rows set aside with
their reasons, certificate settings) and predicts with :meth:`Trainer.predict_proba` /
:meth:`Trainer.predict` on a dataset's features. A certified trainer also gives each prediction its
certificate (:meth:`Trainer.certify`).

:func:`save` writes ``model.safetensors``, ``model.json`` (the trainer, its settings, the classes, each
member's encoder, and a SHA-256 of the weights and this config) and ``training.json``; :func:`load`
refuses a folder whose weights or config do not match that digest, or that holds something else. The
digest catches an altered or swapped file, not an attacker who rewrites both: for that, register the
model in the vault (``mithridate registry add``), whose records are signed.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator

from mithridate.data import Dataset
from mithridate.errors import DataError, MithridateError
from mithridate.harden.member import ARCHITECTURES, Member

FORMAT = "mithridate-model/1"
TRAINERS: dict[str, type[Trainer]] = {}


def register(cls: type[Trainer]) -> type[Trainer]:
    """Class decorator: make a trainer available by its ``name`` (``make_trainer``, the CLI, ``load``)."""
    TRAINERS[cls.name] = cls
    return cls


class Trainer(BaseEstimator, ABC):
    """Base class: subclasses set ``name`` and implement :meth:`_fit` (the members and the report) and,
    for ensembles, override :meth:`votes` or :meth:`predict_proba`."""

    name = "trainer"
    certified = False
    #: the network images get when ``network="auto"``: ensembles of many members take the cheaper one
    image_network = "cnn"

    def __init__(self, network: str = "auto", epochs: int | None = None, random_state: int = 0):
        self.network, self.epochs, self.random_state = network, epochs, random_state

    def fit(self, dataset: Dataset) -> Trainer:
        if dataset.n_rows < 2 or len(np.unique(dataset.y)) < 2:
            raise MithridateError("training needs at least 2 rows of at least 2 classes")
        if self.network not in ("auto", *ARCHITECTURES):
            raise MithridateError(f"network must be auto, {', '.join(ARCHITECTURES)}; got {self.network!r}")
        self.arch_ = self.image_network if self.network == "auto" else self.network
        self.classes_, self.kind_ = tuple(dataset.classes), dataset.kind
        self.members_, self.report_ = self._fit(dataset)
        self.report_ = {"trainer": self.name, "rows": dataset.n_rows, "classes": len(self.classes_),
                        "members": len(self.members_), **self.report_}
        return self

    @abstractmethod
    def _fit(self, dataset: Dataset) -> tuple[list[Member], dict]:
        """The trained members, and what the report should say about training."""

    def _member(self, dataset: Dataset, rows: np.ndarray | None = None, seed: int = 0) -> Member:
        part = dataset if rows is None else dataset.take(rows)
        return Member.fit(part.features, np.asarray(part.y), len(dataset.classes), self.epochs,
                          seed=self.random_state * 1_000_003 + seed, arch=self.arch_)

    def predict_proba(self, features) -> np.ndarray:
        """Class probabilities: the mean of the members' (one member: its own)."""
        return np.mean([m.proba(features) for m in self.members_], axis=0)

    def predict(self, features) -> np.ndarray:
        return self.predict_proba(features).argmax(axis=1)

    def certify(self, features) -> tuple[np.ndarray, np.ndarray]:
        """Predictions and, per prediction, how many training rows could be inserted or removed without
        changing it. Only certified trainers give one."""
        raise MithridateError(f"{self.name} gives no certificate; use dpa or finite")


def make_trainer(name: str, **options) -> Trainer:
    """A trainer by name (see ``TRAINERS``); a one-line error for an unknown one."""
    if name not in TRAINERS:
        raise MithridateError(f"unknown defence {name!r}; choose one of {', '.join(sorted(TRAINERS))}")
    return TRAINERS[name](**options)


def save(trainer: Trainer, folder: str | Path) -> Path:
    """Write ``model.safetensors``, ``model.json`` and ``training.json`` into ``folder`` (each atomically)."""
    from safetensors.numpy import save as to_bytes

    from mithridate.data import atomic_path

    folder = Path(folder)
    tensors: dict[str, np.ndarray] = {}
    for i, member in enumerate(trainer.members_):
        tensors.update(member.tensors(f"m{i}."))
    blob = to_bytes(tensors)
    config = {"format": FORMAT, "trainer": trainer.name, "params": trainer.get_params(),
              "classes": [c if isinstance(c, (int, float, str, bool)) else str(c) for c in trainer.classes_],
              "kind": trainer.kind_, "members": [m.config() for m in trainer.members_]}
    config["sha256"] = digest(blob, config)
    with atomic_path(folder / "model.safetensors") as tmp:
        tmp.write_bytes(blob)
    with atomic_path(folder / "model.json") as tmp:
        tmp.write_text(json.dumps(config, indent=2))
    with atomic_path(folder / "training.json") as tmp:
        tmp.write_text(json.dumps(trainer.report_, indent=2, default=str))
    return folder


def digest(blob: bytes, config: dict) -> str:
    """SHA-256 over the weights and the config (all but this digest, as canonical JSON)."""
    body = json.dumps({k: v for k, v in config.items() if k != "sha256"}, sort_keys=True).encode()
    return hashlib.sha256(blob + body).hexdigest()


def load(folder: str | Path) -> Trainer:
    """The trainer saved in ``folder``; a :class:`DataError` (one line) when it is missing, altered or not
    a model this version wrote."""
    from safetensors import SafetensorError
    from safetensors.numpy import load as from_bytes

    folder = Path(folder)
    config_path, weights_path = folder / "model.json", folder / "model.safetensors"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise DataError(f"{folder}: no {path.name} (not a model folder written by `mithridate harden`)")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{config_path}: not a model config ({error.__class__.__name__})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT or config.get("trainer") not in TRAINERS:
        raise DataError(f"{config_path}: not a model config of format {FORMAT}")
    blob = weights_path.read_bytes()
    if digest(blob, config) != config.get("sha256"):
        raise DataError(f"{folder}: the weights or config do not match the digest in model.json (altered or "
                        "swapped)")
    try:
        tensors = from_bytes(blob)
        trainer = TRAINERS[config["trainer"]](**config["params"])
        trainer.members_ = [Member.restore(m, tensors, f"m{i}.") for i, m in enumerate(config["members"])]
    except (SafetensorError, KeyError, RuntimeError, TypeError, ValueError) as error:
        raise DataError(f"{folder}: the model does not load ({error.__class__.__name__}: {error})"[:300]) from None
    trainer.classes_, trainer.kind_ = tuple(config["classes"]), config["kind"]
    report = folder / "training.json"
    trainer.report_ = json.loads(report.read_text()) if report.is_file() else {}
    return trainer
