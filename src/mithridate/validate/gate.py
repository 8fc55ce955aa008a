"""The gate: run the tests a policy names, correct for multiple testing, sanitize rows, give a verdict.

Verdict:

- ``fail``: some test rejects after the correction (adjusted p-value below ``alpha``) with an effect at
  least the policy's ``min_effect`` for that test; or the batch lacks baseline columns;
- ``warn``: nothing fails, but some test rejects at the looser ``warn_alpha``, an effect reaches its
  ``warn_effect``, more than ``rows.warn_share`` of the rows were quarantined, or the batch has extra columns;
- ``pass``: otherwise.

With the default policy a clean batch fails with probability at most ``alpha`` (5%): the corrections of
:mod:`mithridate.validate.multiple_testing` bound the chance of any false rejection.

The policy is a small YAML file; every key is optional (defaults below)::

    alpha: 0.05
    correction: bh            # bh | by | holm | bonferroni | none
    warn_alpha: 0.2
    tests: [ks, histogram, missing, range, chi2, unseen, mmd, classifier, correlation,
            label_shift, label_agreement]          # add cvm; remove what you do not want
    min_effect: {}            # by test, e.g. {ks: 0.1, histogram: 0.1}: smaller effects never fail
    warn_effect: {psi: 0.25}  # by effect name (psi, js_distance, wasserstein_sd, auc, ...)
    multivariate: {max_rows: 1000, permutations: 200}
    labels: {max_rows: 100000}
    rows: {action: quarantine, far_out: 3.0, range_margin: 1.0, correlations: true,
           correlation_max_rows: 20000, warn_share: 0.01}
    seed: 0

>>> from mithridate.data import demo, split
>>> base, batch = split(demo("breast_cancer"), test_size=0.3, seed=0)
>>> from mithridate.validate.profile import profile
>>> Gate().check(profile(base), batch).verdict in ("pass", "warn")
True
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mithridate.data import Dataset, atomic_path
from mithridate.errors import DataError
from mithridate.validate.columns import column_checks
from mithridate.validate.labels import label_agreement, label_shift, unseen_labels
from mithridate.validate.multiple_testing import METHODS, adjust
from mithridate.validate.multivariate import multivariate_checks
from mithridate.validate.profile import Prepared, Profile
from mithridate.validate.results import Check, checks_frame
from mithridate.validate.rows import sanitize_rows

ALL_TESTS = ("ks", "cvm", "histogram", "missing", "range", "chi2", "unseen", "mmd", "classifier", "correlation",
             "label_shift", "label_agreement")
DEFAULT_TESTS = tuple(t for t in ALL_TESTS if t != "cvm")
ROW_ACTIONS = ("quarantine", "drop", "keep")


@dataclass
class RowPolicy:
    action: str = "quarantine"
    far_out: float = 3.0
    range_margin: float = 1.0
    correlations: bool = True
    correlation_max_rows: int = 20_000
    warn_share: float = 0.01


@dataclass
class Policy:
    """What the gate runs and how strict it is (see the module docstring for the YAML form)."""

    alpha: float = 0.05
    correction: str = "bh"
    warn_alpha: float = 0.2
    tests: list[str] = field(default_factory=lambda: list(DEFAULT_TESTS))
    min_effect: dict[str, float] = field(default_factory=dict)
    warn_effect: dict[str, float] = field(default_factory=lambda: {"psi": 0.25})
    multivariate: dict = field(default_factory=lambda: {"max_rows": 1000, "permutations": 200})
    labels: dict = field(default_factory=lambda: {"max_rows": 100_000})
    rows: RowPolicy = field(default_factory=RowPolicy)
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.rows, dict):
            unknown = set(self.rows) - set(RowPolicy.__dataclass_fields__)
            if unknown:
                raise DataError(f"policy: unknown rows key(s) {', '.join(sorted(unknown))}")
            self.rows = RowPolicy(**self.rows)
        if not 0 < self.alpha < 1 or not 0 < self.warn_alpha < 1:
            raise DataError("policy: alpha and warn_alpha must be in (0, 1)")
        if self.correction not in METHODS:
            raise DataError(f"policy: unknown correction {self.correction!r} (choose from {', '.join(METHODS)})")
        unknown = [t for t in self.tests if t not in ALL_TESTS]
        if unknown:
            raise DataError(f"policy: unknown test(s) {', '.join(unknown)} (choose from {', '.join(ALL_TESTS)})")
        if self.rows.action not in ROW_ACTIONS:
            raise DataError(f"policy: rows.action must be one of {', '.join(ROW_ACTIONS)}")
        self.multivariate = {"max_rows": 1000, "permutations": 200, **self.multivariate}
        self.labels = {"max_rows": 100_000, **self.labels}

    @classmethod
    def from_dict(cls, d: dict | None) -> Policy:
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise DataError(f"policy: unknown key(s) {', '.join(sorted(unknown))} "
                            f"(known: {', '.join(cls.__dataclass_fields__)})")
        try:
            return cls(**d)
        except TypeError as exc:
            raise DataError(f"policy: {exc}") from exc

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        import yaml

        path = Path(path)
        if not path.exists():
            raise DataError(f"{path}: no such policy file")
        try:
            doc = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise DataError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from exc
        if doc is not None and not isinstance(doc, dict):
            raise DataError(f"{path}: a policy is a mapping of keys to values")
        return cls.from_dict(doc)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Verdict:
    """The gate's answer: ``verdict`` (pass / warn / fail), every test's figures (``checks``), why it warned
    or failed (``reasons``), the rows removed with their reasons (``rows``), and, for a :class:`Dataset`
    batch, the batch without them (``clean``) and the rows themselves (``quarantined``)."""

    verdict: str
    checks: list[Check]
    reasons: list[str]
    rows: pd.DataFrame
    policy: Policy
    summary: dict
    clean: Dataset | None = None
    quarantined: Dataset | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.verdict != "fail"

    @property
    def table(self) -> pd.DataFrame:
        """Every test's figures, the most significant first."""
        frame = checks_frame(self.checks)
        return frame.sort_values(["p_adjusted", "p_value", "name"], na_position="last",
                                 kind="stable").reset_index(drop=True)

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "reasons": self.reasons, "summary": self.summary, "notes": self.notes,
                "policy": self.policy.to_dict(), "tests": [c.to_dict() for c in self.checks],
                "rows_removed": self.rows.astype({"row_id": str}).to_dict(orient="records")}

    def write(self, out: str | Path) -> dict[str, Path]:
        """Write ``verdict.json`` and ``rows_removed.csv`` into ``out`` (the page:
        :func:`mithridate.report.validation.write_validation_report`)."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"verdict": out / "verdict.json", "rows": out / "rows_removed.csv"}
        with atomic_path(paths["verdict"]) as tmp:
            tmp.write_text(json.dumps(_finite(self.to_dict()), indent=2, default=_json_default))
        with atomic_path(paths["rows"]) as tmp:
            self.rows.to_csv(tmp, index=False)
        return paths


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _finite(value):
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


class Gate:
    """Validate a batch against a baseline profile under a :class:`Policy`.

    ``check(profile, batch)`` takes a :class:`Dataset` or a DataFrame of features (``labels=`` for its
    labels; without labels the label tests are skipped) and returns a :class:`Verdict`; the prepared batch
    is kept as ``prepared_`` for reports.
    """

    def __init__(self, policy: Policy | dict | None = None):
        self.policy = policy

    def _policy(self) -> Policy:
        if isinstance(self.policy, Policy):
            return self.policy
        return Policy.from_dict(self.policy)

    def check(self, profile: Profile, batch: Dataset | pd.DataFrame, labels=None) -> Verdict:
        from threadpoolctl import threadpool_limits

        # Many small products (permutations, networks, robust covariances): BLAS threads gain little and, on
        # a busy machine, spin against other processes and cost many times the work.
        with threadpool_limits(1, user_api="blas"):
            return self._check(profile, batch, labels)

    def _check(self, profile: Profile, batch: Dataset | pd.DataFrame, labels=None) -> Verdict:
        policy = self._policy()
        tests = set(policy.tests)
        prepared = profile.prepare(batch, labels)
        self.prepared_ = prepared
        sample = profile.prepared_sample()
        seed = policy.seed
        checks = column_checks(profile, sample, prepared, tests, seed)
        enc = profile.encoding
        z_batch = enc.transform(prepared.num, prepared.cat)
        z_base = enc.transform(sample.num, sample.cat)
        mv = policy.multivariate
        checks += multivariate_checks(z_base, z_batch, enc.names(), len(enc.numeric), tests,
                                      int(mv["max_rows"]), int(mv["permutations"]), seed)
        notes = []
        if prepared.y is not None:
            checks += self._label_checks(profile, prepared, z_batch, tests, policy)
        else:
            notes.append("the batch has no labels: label tests skipped")
        if prepared.missing_columns:
            checks.append(Check("schema", "schema", "schema", None, float(len(prepared.missing_columns)), 0.0,
                                float(len(prepared.missing_columns)), "missing_columns",
                                "columns missing from the batch: " + ", ".join(prepared.missing_columns)))
        tested = [c for c in checks if c.p_value is not None]
        for c, p in zip(tested, adjust([c.p_value for c in tested], policy.correction), strict=True):
            c.p_adjusted = float(p)
        reasons, warns = [], []
        for c in checks:
            floor = policy.min_effect.get(c.test, 0.0)
            big_enough = c.effect_size is None or abs(c.effect_size) >= floor
            c.passed = not (c.p_adjusted is not None and c.p_adjusted < policy.alpha and big_enough)
            if not c.passed:
                reasons.append(f"{c.name}: p={c.p_value:.3g} (adjusted {c.p_adjusted:.3g}), {c.effect} "
                               f"{c.effect_size:.3g}; {c.detail}")
            elif c.p_adjusted is not None and c.p_adjusted < policy.warn_alpha:
                warns.append(f"{c.name}: adjusted p={c.p_adjusted:.3g} below warn_alpha; {c.detail}")
            elif c.effect in policy.warn_effect and c.effect_size is not None \
                    and abs(c.effect_size) >= policy.warn_effect[c.effect]:
                warns.append(f"{c.name}: {c.effect} {c.effect_size:.3g} reaches {policy.warn_effect[c.effect]}")
        rp = policy.rows
        if rp.action == "keep":
            rows = pd.DataFrame({"row": [], "row_id": [], "reason": []})
        else:
            rows, note = sanitize_rows(profile, sample, prepared, rp.far_out, rp.correlations,
                                       rp.correlation_max_rows, seed, rp.range_margin)
            if note:
                notes.append(note)
        if len(rows) > rp.warn_share * len(prepared):
            warns.append(f"{len(rows)} rows ({len(rows) / len(prepared):.1%}) deviate far from the baseline")
        if prepared.extra_columns:
            warns.append("columns the baseline does not have: " + ", ".join(prepared.extra_columns))
        verdict = "fail" if reasons else ("warn" if warns else "pass")
        clean = quarantined = None
        if isinstance(batch, Dataset):
            mask = np.zeros(len(prepared), bool)
            mask[rows["row"].to_numpy(dtype=np.int64)] = True
            clean = batch.take(~mask) if (~mask).any() else None
            quarantined = batch.take(mask) if mask.any() and rp.action == "quarantine" else None
        summary = {
            "rows": len(prepared), "tests": len(checks), "failed": int(sum(not c.passed for c in checks)),
            "rows_removed": len(rows), "alpha": policy.alpha, "correction": policy.correction,
            "baseline": profile.meta.get("name"), "baseline_rows": profile.n_rows,
        }
        return Verdict(verdict, checks, reasons or warns, rows, policy,
                       summary, clean, quarantined, notes)

    @staticmethod
    def _label_checks(profile: Profile, batch: Prepared, z: np.ndarray, tests: set, policy: Policy) -> list[Check]:
        return [check for name, test in LABEL_TESTS.items() if name in tests
                for check in test(profile, batch, z, policy)]


def _label_shift(profile: Profile, batch: Prepared, z: np.ndarray, policy: Policy) -> list[Check]:
    return [label_shift(np.asarray(profile.class_counts), batch.y, profile.classes),
            unseen_labels(batch.unknown_labels, len(batch.y), profile.n_rows)]


def _label_agreement(profile: Profile, batch: Prepared, z: np.ndarray, policy: Policy) -> list[Check]:
    if profile.label_model is None:
        return []
    y = batch.y
    rows = np.arange(len(y))
    limit = int(policy.labels["max_rows"])
    if len(rows) > limit:
        rows = np.sort(np.random.default_rng(policy.seed).choice(rows, limit, replace=False))
    known = rows[y[rows] >= 0]
    p, agree = profile.label_model.score(z[known], y[known])
    return [label_agreement(profile.heldout, p, agree, y[known])]


LABEL_TESTS = {"label_shift": _label_shift, "label_agreement": _label_agreement}
"""The label tests, in the order they run; with the column tests (:data:`~.columns.NUMERIC`,
:data:`~.columns.CATEGORICAL`) and the multivariate ones (:data:`~.multivariate.MULTIVARIATE`), the table of
every test a policy can name (:data:`ALL_TESTS`)."""


def validate(profile: Profile, batch: Dataset | pd.DataFrame, policy: Policy | dict | None = None,
             labels=None) -> Verdict:
    """``Gate(policy).check(profile, batch)``."""
    return Gate(policy).check(profile, batch, labels)
