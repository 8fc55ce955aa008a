"""The attack x defence matrix (``mithridate evaluate``): what each defence leaves an attacker, on your data.

One split of the data, fixed by the seed: the attacks poison the training part only, and every model is
scored on the clean test part. A *cell* is one attack at one rate behind one defence:

- ``none``: one network trained on the poisoned rows (the baseline);
- ``scan``: the scan (:class:`~mithridate.detect.Scan`) and sanitization (``policy``), then one network;
- a trainer of :mod:`mithridate.harden` by name (``trimmed``, ``isolate``, ``dpa``, ``finite``, ``bagging``,
  ``dpsgd``);
- ``scan+TRAINER``: the scan and sanitization, then that trainer.

Each cell reports clean test accuracy, the attack's success (a backdoor: the share of triggered test rows
from other classes sent to its target; a targeted flip: the share of the source class's test rows predicted
as the target; untargeted flips have none, their effect is the accuracy), the scan's precision and recall
for the poisoned rows, the fraction of test rows certified correct at each radius for certified trainers,
and the seconds it took. Every defence also trains on the clean training part (attack ``clean``): the
accuracy it costs when nobody attacks.

**The second round adapts.** An attacker who knows the defence changes the attack; the matrix plays the
moves it can play without the defence's secrets, each against the defence the first round faced:

- ``evasive`` (defences with a scan): the attacker runs the same open-source scan on its own poisoned
  rows and withdraws those it flags, keeping only what the scan missed;
- ``half rate`` (defences with a scan): half the rows, below what the scan's group tests see;
- ``adversarial`` (random label flips): the same number of flips chosen to hurt a model most
  (:class:`~mithridate.attacks.AdversarialFlip`; its surrogate is the attacker's own linear model, not
  the defended one).

The worst case per attack and defence (:meth:`Matrix.worst_case`) is the highest attack success, or the
lowest accuracy for untargeted flips, over the first round and its adaptations.

>>> plan = Plan.from_dict({"attacks": [{"kind": "flip", "rate": 0.2}], "defences": ["none", "trimmed"]})
>>> [a.label for a in plan.attacks], plan.defences
(['flip 20%'], ('none', 'trimmed'))
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mithridate.attacks import Poisoned, make_attack, resolve_class
from mithridate.attacks.evaluate import attack_success
from mithridate.data import Dataset, atomic_path, split
from mithridate.errors import DataError
from mithridate.harden.base import TRAINERS, make_trainer
from mithridate.harden.member import ARCHITECTURES

FLIPS = ("flip",)
"""Untargeted label flips, which the second round replaces by as many adversarial flips (a targeted flip
is scored by its success, which adversarial flips do not aim for)."""

Progress = Callable[[str], None]


@dataclass(frozen=True)
class AttackSpec:
    """One attack of the plan: a registered attack ``kind`` (see ``mithridate attack --help``), its ``rate``
    and any other option of that attack (``target``, ``size``, ``alpha``, ...)."""

    kind: str
    rate: float
    options: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """How the matrix names this attack: kind, exact rate, options (``patch 1.5% target=3``)."""
        extra = "".join(f" {k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.kind} {self.rate * 100:.4g}%{extra}"

    def make(self, seed: int, rate: float | None = None, kind: str | None = None):
        """The attack, seeded; ``rate`` and ``kind`` replace this spec's (another kind takes none of its
        options)."""
        options = {} if kind else self.options
        return make_attack(kind or self.kind, rate=rate or self.rate, random_state=seed, **options)


@dataclass(frozen=True)
class Plan:
    """What :func:`evaluate` runs; read from and written to the YAML config (:meth:`from_dict`,
    :meth:`as_dict`), so that a matrix can be reproduced from the ``config.yaml`` written beside it."""

    attacks: tuple[AttackSpec, ...]
    defences: tuple[str, ...]
    adapt: bool = True
    test_size: float = 0.25
    seed: int = 0
    radii: tuple[int, ...] = (1, 5, 10, 20)
    policy: str = "relabel"
    options: dict = field(default_factory=dict)
    """Per trainer name, its settings (``{"dpa": {"partitions": 50}}``); ``epochs`` applies to every network."""

    @classmethod
    def from_dict(cls, config: dict) -> Plan:
        """A plan from a parsed config, every entry checked: a one-line :class:`DataError` for the first
        problem, before anything runs."""
        if not isinstance(config, dict):
            raise DataError("the config must be a mapping with 'attacks' and 'defences'")
        known = {"attacks", "defences", "adapt", "test_size", "seed", "radii", "policy", "options"}
        unknown = sorted(set(config) - known)
        if unknown:
            raise DataError(f"unknown config key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        attacks = []
        for i, entry in enumerate(config.get("attacks") or []):
            if not isinstance(entry, dict) or "kind" not in entry or "rate" not in entry:
                raise DataError(f"attacks[{i}] must give a kind and a rate, e.g. {{kind: patch, rate: 0.05}}")
            options = {k: v for k, v in entry.items() if k not in ("kind", "rate")}
            if "random_state" in options:
                raise DataError(f"attacks[{i}]: the plan's seed sets random_state")
            spec = AttackSpec(str(entry["kind"]), _number(entry["rate"], f"attacks[{i}].rate"), options)
            spec.make(0)  # an unknown kind, option or rate is refused here
            attacks.append(spec)
        defences = config.get("defences") or []
        if not isinstance(defences, list) or not all(isinstance(d, str) for d in defences):
            raise DataError("defences must be a list of names, e.g. [none, scan, dpa]")
        if not attacks or not defences:
            raise DataError("the config needs at least one attack and one defence")
        for d in defences:
            check_defence(d)
        for what, names in (("attack", [a.label for a in attacks]), ("defence", defences)):
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise DataError(f"the same {what} is listed twice: {twice[0]}")
        test_size = _number(config.get("test_size", 0.25), "test_size")
        if not 0 < test_size < 1:
            raise DataError(f"test_size must be in (0, 1), got {test_size}")
        radii = config.get("radii", [1, 5, 10, 20])
        if not isinstance(radii, list | tuple) or not all(_is_int(r) and r >= 1 for r in radii):
            raise DataError(f"radii must be a list of positive whole numbers, got {radii!r}")
        seed = config.get("seed", 0)
        if not _is_int(seed) or seed < 0:
            raise DataError(f"seed must be a whole number >= 0, got {seed!r}")
        adapt = config.get("adapt", True)
        if not isinstance(adapt, bool):
            raise DataError(f"adapt must be true or false, got {adapt!r}")
        policy = str(config.get("policy", "relabel"))
        if policy not in ("drop", "relabel"):
            raise DataError(f"policy must be drop or relabel, got {policy!r}")
        options = config.get("options") or {}
        if not isinstance(options, dict) or not all(
                (k == "epochs" and _is_int(v) and v >= 1) or (k in TRAINERS and isinstance(v, dict))
                for k, v in options.items()):
            raise DataError("options map trainer names to their settings, plus epochs (a whole number) for "
                            f"every network, e.g. {{dpa: {{partitions: 50}}, epochs: 30}}; got {options!r}")
        plan = cls(tuple(attacks), tuple(defences), adapt, test_size, int(seed), tuple(int(r) for r in radii),
                   policy, options)
        for name in {_split(d)[1] for d in defences}:
            plan.trainer(name)  # unknown settings are refused now, not after an hour
        return plan

    def as_dict(self) -> dict:
        return {"attacks": [{"kind": a.kind, "rate": a.rate, **a.options} for a in self.attacks],
                "defences": list(self.defences), "adapt": self.adapt, "test_size": self.test_size,
                "seed": self.seed, "radii": list(self.radii), "policy": self.policy, "options": self.options}

    def cells_at_most(self) -> int:
        """How many cells :func:`evaluate` runs at most (an evasive move is skipped when the scan caught
        nothing): a progress bar's length."""
        scans = sum(_split(d)[0] for d in self.defences)
        moves = sum(2 * scans + (len(self.defences) if a.kind in FLIPS else 0) for a in self.attacks)
        return len(self.defences) * (1 + len(self.attacks)) + (moves if self.adapt else 0)

    def trainer(self, name: str):
        """A fresh trainer ``name`` with the plan's settings and seed."""
        settings = dict(self.options.get(name, {}))
        if "epochs" in self.options:
            settings.setdefault("epochs", self.options["epochs"])
        accepted = set(TRAINERS[name]().get_params()) - {"random_state"}
        unknown = sorted(set(settings) - accepted)
        if unknown:
            raise DataError(f"options for {name}: unknown setting(s) {', '.join(unknown)} "
                            f"(settings: {', '.join(sorted(accepted))})")
        if settings.get("network", "auto") not in ("auto", *ARCHITECTURES):
            raise DataError(f"options for {name}: network must be auto, {', '.join(ARCHITECTURES)}")
        return make_trainer(name, random_state=self.seed, **settings)

    def check(self, dataset: Dataset) -> None:
        """Refuse, before anything trains, an attack that does not fit ``dataset``'s kind or names a class
        it lacks (:func:`evaluate` also poisons every attack once before training anything)."""
        for spec in self.attacks:
            kind = getattr(spec.make(self.seed), "kind", dataset.kind)
            if kind != dataset.kind:
                raise DataError(f"attack {spec.kind} needs {kind} data; {dataset.name} is {dataset.kind} data")
            for role in ("source", "target"):
                if role in spec.options:
                    resolve_class(dataset, spec.options[role], role)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value, what: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(f"{what} must be a number, got {value!r}") from None


def _split(defence: str) -> tuple[bool, str]:
    """``(scan first?, trainer name)``: ``scan`` is ``(True, "none")``, ``scan+dpa`` is ``(True, "dpa")``."""
    parts = defence.split("+")
    scan = parts[0] == "scan"
    trainer = parts[1] if scan and len(parts) == 2 else ("none" if defence == "scan" else defence)
    return scan, trainer


def check_defence(defence: str) -> None:
    """Refuse a defence that is not ``scan``, a trainer's name, or ``scan+TRAINER``."""
    scan, trainer = _split(defence)
    if trainer not in TRAINERS or defence.count("+") > 1 or ("+" in defence and not scan):
        names = ", ".join(["scan", *sorted(TRAINERS)])
        raise DataError(f"unknown defence {defence!r}: choose from {names}, or scan+TRAINER")


def default_plan(dataset: Dataset) -> Plan:
    """The matrix a new user gets: backdoors and flips at common rates, against no defence, the scan,
    trimmed training, backdoor isolation and DPA's certified ensemble. Images: a patch and a blended
    trigger (5%, class 0). Tables: a feature trigger (5%) aimed at the largest class, and 20% of the
    smallest class moved to the largest (hiding the rare class, the flip a fraud or a disease model
    fears). Both: 20% random flips."""
    if dataset.kind == "image":
        attacks = [{"kind": "patch", "rate": 0.05}, {"kind": "blend", "rate": 0.05}]
    else:
        counts = np.bincount(dataset.y, minlength=dataset.n_classes)
        largest = int(counts.argmax())
        smallest = min((c for c in range(dataset.n_classes) if c != largest), key=lambda c: counts[c])
        attacks = [{"kind": "feature", "rate": 0.05, "target": str(dataset.classes[largest]),
                    "n_columns": min(3, dataset.features.shape[1])},
                   {"kind": "targeted-flip", "rate": 0.2, "source": str(dataset.classes[smallest]),
                    "target": str(dataset.classes[largest])}]
    return Plan.from_dict({"attacks": [*attacks, {"kind": "flip", "rate": 0.2}],
                           "defences": ["none", "scan", "trimmed", "isolate", "dpa"]})


def _withdraw(train: Dataset, poisoned: Poisoned, rows: np.ndarray) -> Poisoned:
    """The poison with ``rows`` put back as they were in ``train``."""
    features = poisoned.dataset.features
    if isinstance(features, pd.DataFrame):
        features, where = features.copy(), np.flatnonzero(rows)
        for j, c in enumerate(features.columns):  # in place, column by column: every dtype stays as it was
            features.iloc[where, j] = train.features[c].iloc[where].to_numpy()
    else:
        features = np.array(features, copy=True)
        features[rows] = np.asarray(train.features)[rows]
    y = poisoned.dataset.y.copy()
    y[rows] = train.y[rows]
    mask = poisoned.mask.copy()
    mask[rows] = False
    return Poisoned(poisoned.dataset.replace(features=features, y=y), mask, poisoned.attack, poisoned.info)


@dataclass
class Matrix:
    """The result: ``cells`` (one row per attack, adaptation and defence), the ``plan`` it ran, and what
    it ran on (``data``: name, rows, classes, kind)."""

    cells: pd.DataFrame
    plan: Plan
    data: dict
    seconds: float

    def worst_case(self) -> pd.DataFrame:
        """Per attack and defence: the highest attack success (the lowest accuracy for untargeted flips)
        over the first round and its adaptations, and the move that reached it."""
        lines = []
        attacked = self.cells[self.cells.attack != "clean"]
        for (attack, defence), group in attacked.groupby(["attack", "defence"], sort=False):
            success = group.attack_success
            worst = group.loc[success.idxmax()] if success.notna().any() else group.loc[group.accuracy.idxmin()]
            lines.append({"attack": attack, "defence": defence, "worst_move": worst.adaptation,
                          "accuracy": worst.accuracy, "attack_success": worst.attack_success,
                          "first_round_success": group[group.adaptation == "as planned"].attack_success.iloc[0],
                          "first_round_accuracy": group[group.adaptation == "as planned"].accuracy.iloc[0]})
        return pd.DataFrame(lines)

    def write(self, out: str | Path) -> dict[str, Path]:
        """``matrix.csv``, ``matrix.json`` (cells, worst case, plan, data) and ``config.yaml`` (the plan, to
        reproduce it with ``--config``), each written whole or not at all."""
        import yaml

        out = Path(out)
        paths = {"matrix.csv": out / "matrix.csv", "matrix.json": out / "matrix.json",
                 "config.yaml": out / "config.yaml"}
        with atomic_path(paths["matrix.csv"]) as tmp:
            self.cells.to_csv(tmp, index=False)
        document = {"format": "mithridate-evaluate/1", "data": self.data, "seconds": round(self.seconds, 1),
                    "plan": self.plan.as_dict(), "worst_case": _records(self.worst_case()),
                    "cells": _records(self.cells)}
        with atomic_path(paths["matrix.json"]) as tmp:
            tmp.write_text(json.dumps(document, indent=2), encoding="utf-8")
        with atomic_path(paths["config.yaml"]) as tmp:
            tmp.write_text(f"# mithridate evaluate DATA --config config.yaml reproduces {out}\n"
                           + yaml.safe_dump(self.plan.as_dict(), sort_keys=False), encoding="utf-8")
        return paths


def _records(frame: pd.DataFrame) -> list[dict]:
    """Rows as JSON-ready dicts, NaN as null."""
    return json.loads(frame.to_json(orient="records"))


def evaluate(dataset: Dataset, plan: Plan, progress: Progress | None = None) -> Matrix:
    """Run ``plan`` on ``dataset`` (see the module docstring); ``progress`` hears each cell as it starts."""
    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    plan.check(dataset)
    try:
        train, test = split(dataset, test_size=plan.test_size, seed=plan.seed)
    except ValueError as exc:  # a class too small to split
        raise DataError(f"cannot split {dataset.name} with test_size {plan.test_size}: "
                        f"{str(exc).splitlines()[0]}") from None
    # every attack is played once before anything trains: an attack the data cannot take fails now
    first_round = {spec.label: spec.make(plan.seed).poison(train) for spec in plan.attacks}
    cells: list[dict] = []
    scans: dict[tuple[str, str], tuple[Dataset, np.ndarray, float]] = {}
    moved: dict[tuple[str, str], Poisoned | None] = {}  # a move against several defences is played once

    def run(attack: str, adaptation: str, poisoned: Poisoned | None, defence: str) -> tuple[dict, np.ndarray | None]:
        say(f"{attack}, {adaptation}: {defence}")
        data = poisoned.dataset if poisoned is not None else train
        truth = poisoned.mask if poisoned is not None else np.zeros(train.n_rows, bool)
        scan_first, name = _split(defence)
        row = {"attack": attack, "adaptation": adaptation, "defence": defence, "poisoned_rows": int(truth.sum())}
        flagged, scan_seconds = None, 0.0
        if scan_first:
            key = (attack, adaptation)
            if key not in scans:  # one scan serves every defence that starts with it
                start = time.perf_counter()
                scans[key] = (*_scan(data, plan), time.perf_counter() - start)
            data, flagged, scan_seconds = scans[key]
            hit = int((flagged & truth).sum())
            row |= {"flagged": int(flagged.sum()),
                    "detect_precision": hit / flagged.sum() if flagged.any() else np.nan,
                    "detect_recall": hit / truth.sum() if truth.any() else np.nan}
        start = time.perf_counter()
        model = plan.trainer(name).fit(data)
        row["accuracy"] = float(np.mean(model.predict(test.features) == test.y))
        row["attack_success"] = attack_success(model, poisoned, test) if poisoned is not None else np.nan
        row["trained_rows"] = int(model.report_.get("rows_trained", model.report_["rows"]))
        if model.certified:
            prediction, radius = model.certify(test.features)
            correct = prediction == test.y
            for r in plan.radii:
                row[f"certified_at_{r}"] = float(np.mean(correct & (radius >= r)))
        row["seconds"] = scan_seconds + time.perf_counter() - start  # a shared scan counts in each cell
        return row, flagged

    def move(spec: AttackSpec, name: str, poisoned: Poisoned) -> Poisoned | None:
        """The ``half rate`` or ``adversarial`` move on ``spec``, or None when it changes nothing."""
        if (spec.label, name) not in moved:
            if name == "half rate":
                half = spec.make(plan.seed, rate=spec.rate / 2).poison(train)
                moved[spec.label, name] = half if half.n_poisoned < poisoned.n_poisoned else None
            else:  # as many flips as the first round made, chosen to hurt most
                moved[spec.label, name] = spec.make(plan.seed, rate=poisoned.n_poisoned / train.n_rows,
                                                    kind="adversarial-flip").poison(train)
        return moved[spec.label, name]

    for defence in plan.defences:
        cells.append(run("clean", "as planned", None, defence)[0])
    for spec in plan.attacks:
        poisoned = first_round[spec.label]
        for defence in plan.defences:
            row, flagged = run(spec.label, "as planned", poisoned, defence)
            cells.append(row)
            if not plan.adapt:
                continue
            scan_first, _ = _split(defence)
            moves: list[tuple[str, Poisoned | None]] = []
            if scan_first and (flagged & poisoned.mask).any():
                moves.append(("evasive", _withdraw(train, poisoned, flagged & poisoned.mask)))
            if scan_first:
                moves.append(("half rate", move(spec, "half rate", poisoned)))
            if spec.kind in FLIPS:
                moves.append(("adversarial", move(spec, "adversarial", poisoned)))
            for name, adapted in moves:
                if adapted is not None and adapted.mask.any():
                    cells.append(run(spec.label, name, adapted, defence)[0])
    frame = pd.DataFrame(cells)
    data = {"name": dataset.name, "rows": dataset.n_rows, "classes": [str(c) for c in dataset.classes],
            "kind": dataset.kind, "train_rows": train.n_rows, "test_rows": test.n_rows}
    return Matrix(frame, plan, data, time.perf_counter() - started)


def _scan(data: Dataset, plan: Plan) -> tuple[Dataset, np.ndarray]:
    """The data sanitized by ``plan.policy`` after the default scan, and the rows the scan flagged."""
    from mithridate.detect import Scan
    from mithridate.sanitize import sanitize

    findings = Scan(random_state=plan.seed).fit(data).report_.findings
    return sanitize(data, findings, plan.policy).dataset, findings["flagged"].to_numpy(bool)


__all__ = ["AttackSpec", "Matrix", "Plan", "default_plan", "evaluate"]
