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
from mithridate.harden.certify import vote_counts
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

    def __init__(self, classes: list | None = None, network: str = "auto", epochs: int | None = None,
                 random_state: int = 0):
        self.classes, self.network, self.epochs, self.random_state = classes, network, epochs, random_state

    def fit(self, dataset: Dataset) -> Trainer:
        """Train on ``dataset``. With ``classes`` declared, labels are read by name against them and a row
        with any other label is set aside (a poisoned row cannot add a class, which would change every
        member); without, the data's own classes are taken as given."""
        if self.network not in ("auto", *ARCHITECTURES):
            raise MithridateError(f"network must be auto, {', '.join(ARCHITECTURES)}; got {self.network!r}")
        set_aside: dict[str, int] = {}
        if self.classes is not None:
            names = [str(c) for c in self.classes]
            if len(set(names)) != len(names) or len(names) < 2:
                raise MithridateError(f"classes must name at least 2 distinct classes, got {self.classes!r}")
            labels = np.asarray([str(c) for c in dataset.classes], dtype=object)[dataset.y]
            code = {name: i for i, name in enumerate(names)}
            known = np.array([label in code for label in labels], dtype=bool)
            if (~known).any():
                set_aside["label not among the declared classes"] = int((~known).sum())
            dataset = dataset.take(np.flatnonzero(known))
            dataset = dataset.replace(y=np.array([code[label] for label in labels[known]], dtype=np.int64),
                                      classes=tuple(self.classes))
        if dataset.n_rows < 2 or len(np.unique(dataset.y)) < 2:
            raise MithridateError("training needs at least 2 rows of at least 2 classes")
        self.arch_ = self.image_network if self.network == "auto" else self.network
        self.classes_, self.kind_ = tuple(dataset.classes), dataset.kind
        self.members_, report = self._fit(dataset)
        set_aside.update(report.pop("set_aside", {}))
        self.report_ = {"trainer": self.name, "rows": dataset.n_rows, "classes": [str(c) for c in self.classes_],
                        "classes_declared": self.classes is not None, "set_aside": set_aside,
                        "members": len(self.members_), **report}
        return self

    @abstractmethod
    def _fit(self, dataset: Dataset) -> tuple[list[Member], dict]:
        """The trained members, and what the report should say about training."""

    def _member(self, dataset: Dataset, rows: np.ndarray | None = None, seed: int = 0) -> Member:
        """A member trained on ``rows`` of ``dataset`` (all by default; a row may come more than once)."""
        features, y = dataset.features, np.asarray(dataset.y)
        if rows is not None:
            features = (features.iloc[rows].reset_index(drop=True) if hasattr(features, "iloc")
                        else np.asarray(features)[rows])
            y = y[rows]
        return Member.fit(features, y, len(dataset.classes), self.epochs,
                          seed=(self.random_state or 0) * 1_000_003 + seed, arch=self.arch_)

    def predict_proba(self, features) -> np.ndarray:
        """Class probabilities: the mean of the members' (one member: its own)."""
        return np.mean([m.proba(features) for m in self.members_], axis=0)

    def predict(self, features) -> np.ndarray:
        return self.predict_proba(features).argmax(axis=1)

    def certify(self, features) -> tuple[np.ndarray, np.ndarray]:
        """Predictions and, per prediction, how many training rows could be inserted or removed without
        changing it. Only certified trainers give one."""
        raise MithridateError(f"{self.name} gives no certificate; use dpa, finite or bagging")


class VoteEnsemble(Trainer):
    """A certified ensemble that predicts by its members' plurality vote (ties to the smaller class);
    subclasses implement :meth:`certify`, whose predictions :meth:`predict` returns."""

    certified = True
    image_network = "mlp"

    def votes(self, features) -> np.ndarray:
        """``(members, n)``: each member's predicted class."""
        return np.stack([m.logits(features).argmax(axis=1) for m in self.members_])

    def vote_counts(self, features) -> np.ndarray:
        """``(n, classes)``: how many members vote each class."""
        return vote_counts(self.votes(features), self.members_[0].n_classes)

    def predict_proba(self, features) -> np.ndarray:
        """Vote shares."""
        counts = self.vote_counts(features)
        return counts / counts.sum(axis=1, keepdims=True)

    def predict(self, features) -> np.ndarray:
        return self.certify(features)[0]


def make_trainer(name: str, **options) -> Trainer:
    """A trainer by name (see ``TRAINERS``); a one-line error for an unknown one."""
    if name not in TRAINERS:
        raise MithridateError(f"unknown defence {name!r}; choose one of {', '.join(sorted(TRAINERS))}")
    return TRAINERS[name](**options)


def save(trainer: Trainer, folder: str | Path) -> Path:
    """Write ``model.safetensors``, ``model.json`` and ``training.json`` into ``folder``, as one step: they
    are written into a new sibling folder that then takes the place of ``folder``, so an interrupted save
    leaves the old model whole."""
    import shutil
    import tempfile

    from safetensors.numpy import save as to_bytes

    folder = Path(folder)
    tensors: dict[str, np.ndarray] = {}
    for i, member in enumerate(trainer.members_):
        tensors.update(member.tensors(f"m{i}."))
    blob = to_bytes(tensors)
    config = {"format": FORMAT, "trainer": trainer.name, "params": trainer.get_params(),
              "classes": [c if isinstance(c, (int, float, str, bool)) else str(c) for c in trainer.classes_],
              "kind": trainer.kind_, "members": [m.config() for m in trainer.members_],
              "report": json.loads(json.dumps(trainer.report_, default=str))}
    config["sha256"] = digest(blob, config)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        (staging / "model.safetensors").write_bytes(blob)
        (staging / "model.json").write_text(json.dumps(config, indent=2))
        (staging / "training.json").write_text(json.dumps(config["report"], indent=2))
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{staging.name}")
            folder.rename(old)
        staging.rename(folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def digest(blob: bytes, config: dict) -> str:
    """SHA-256 over the weights and the config (all but this digest, as canonical JSON)."""
    body = json.dumps({k: v for k, v in config.items() if k != "sha256"}, sort_keys=True).encode()
    return hashlib.sha256(blob + body).hexdigest()


def load(folder: str | Path) -> Trainer:
    """The trainer saved in ``folder``; a :class:`DataError` (one line) when it is missing, altered,
    inconsistent or not a model this version wrote."""
    from safetensors.numpy import load as from_bytes

    folder = Path(folder)
    config_path, weights_path = folder / "model.json", folder / "model.safetensors"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise DataError(f"{folder}: no {path.name} (not a model folder written by `mithridate harden`)")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise DataError(f"{config_path}: not a model config ({error.__class__.__name__})") from None
    if (not isinstance(config, dict) or config.get("format") != FORMAT or not isinstance(config.get("trainer"), str)
            or config["trainer"] not in TRAINERS):
        raise DataError(f"{config_path}: not a model config of format {FORMAT}")
    blob = weights_path.read_bytes()
    if digest(blob, config) != config.get("sha256"):
        raise DataError(f"{folder}: the weights or config do not match the digest in model.json (altered or "
                        "swapped)")
    try:
        tensors = from_bytes(blob)
        trainer = TRAINERS[config["trainer"]](**config["params"])
        trainer.members_ = [Member.restore(m, tensors, f"m{i}.") for i, m in enumerate(config["members"])]
        trainer.classes_, trainer.kind_ = tuple(config["classes"]), str(config["kind"])
        trainer.report_ = dict(config.get("report", {}))
        check_consistent(trainer)
    except Exception as error:  # a config this version did not write: whatever breaks, one line
        raise DataError(f"{folder}: the model does not load ({error.__class__.__name__}: {error})"[:300]) from None
    return trainer


def check_consistent(trainer: Trainer) -> None:
    """What predicting relies on, checked once at load: members agree on the classes and the input, and an
    ensemble has the members its settings say."""
    members = trainer.members_
    if not members or trainer.kind_ not in ("table", "image"):
        raise ValueError("no members, or an unknown kind of data")
    if {m.n_classes for m in members} != {len(trainer.classes_)}:
        raise ValueError(f"members predict {sorted({m.n_classes for m in members})} classes, the config names "
                         f"{len(trainer.classes_)}")
    if {m.encoder.get("kind") for m in members} != {trainer.kind_}:
        raise ValueError("members read another kind of data than the config says")
    expected = getattr(trainer, "buckets", lambda: 1)()
    if len(members) != expected:
        raise ValueError(f"{len(members)} members where the settings need {expected}")
    for m in members:
        if m.encoder["kind"] == "image":
            float(m.encoder["lo"]), float(m.encoder["hi"]), [int(v) for v in m.encoder["shape"]]
            continue
        for c in m.encoder["columns"]:
            str(c["name"])
            if c["type"] == "number":
                float(c["median"]), float(c["mean"]), float(c["scale"]), bool(c["missing"])
            elif c["type"] == "category":
                [str(v) for v in c["levels"]]
            else:
                raise ValueError(f"unknown column type {c['type']!r}")
