"""Sanitization: act on a scan's findings. The input is never modified; every change keeps its reason.

Policies:

- ``drop``: remove every flagged row.
- ``relabel``: give flagged rows that have a suggested label that label; drop the other flagged rows.
- ``quarantine``: move flagged rows into a separate dataset (for a person to review), keep the rest.

Only flagged rows (severity ``poison`` or ``suspect``) are acted on; data-quality notes never are. Findings
carry the fingerprint of the data they were made from (:meth:`mithridate.data.Dataset.fingerprint`), and
sanitization refuses findings made from other data: positions would point at the wrong rows.

:class:`ScanResampler` packs scan + sanitize into imbalanced-learn's ``fit_resample`` convention, so it
drops into a user's pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from mithridate.data import Dataset
from mithridate.errors import DataError

SanitizePolicy = Literal["drop", "relabel", "quarantine"]
POLICIES = ("drop", "relabel", "quarantine")
REQUIRED = ("row", "flagged", "fingerprint")


@dataclass(frozen=True, eq=False)
class Sanitized:
    """``dataset``: what to train on. ``quarantined``: flagged rows set aside (quarantine policy only).
    ``changes``: one row per removed or relabelled row: row, row_id, action, old and new label, reason."""

    dataset: Dataset
    quarantined: Dataset | None
    changes: pd.DataFrame


def read_findings(path: str | Path) -> pd.DataFrame:
    """Read a ``findings.csv`` written by a scan, checking it has what sanitization needs."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such findings file")
    try:
        findings = pd.read_csv(path, keep_default_na=False, dtype={"suggested_label": str})
    except Exception as exc:
        raise DataError(f"{path}: cannot read findings: {str(exc).splitlines()[0]}") from exc
    missing = [c for c in REQUIRED if c not in findings.columns]
    if missing == ["fingerprint"]:
        raise DataError(f"{path}: these findings carry no fingerprint of the data they were made from "
                        "(an older scan); scan the data again")
    if missing:
        raise DataError(f"{path}: not a findings file (missing columns {', '.join(missing)})")
    findings["flagged"] = findings["flagged"].astype(str).str.lower().isin(("true", "1"))
    return findings


def sanitize(dataset: Dataset, findings: pd.DataFrame, policy: SanitizePolicy = "drop") -> Sanitized:
    """Apply ``policy`` to the rows ``findings`` flags (``findings.row`` is the 0-based input position)."""
    if policy not in POLICIES:
        raise DataError(f"unknown policy {policy!r} (choose from {', '.join(POLICIES)})")
    if len(findings) != dataset.n_rows or not np.array_equal(findings["row"].to_numpy(), np.arange(dataset.n_rows)):
        raise DataError(f"the findings describe {len(findings)} rows but the data has {dataset.n_rows}; "
                        "scan this very file first")
    if "fingerprint" in findings:
        made_from = set(findings["fingerprint"].astype(str))
        if made_from != {dataset.fingerprint()}:
            raise DataError(f"these findings were made from other data (fingerprint {sorted(made_from)[0][:12]}, "
                            f"this data {dataset.fingerprint()[:12]}); scan this very file first")
    flagged = findings["flagged"].to_numpy(bool)
    y = dataset.y.copy()
    relabel = np.zeros(dataset.n_rows, bool)
    if policy == "relabel" and "suggested_label" in findings:
        suggestion = findings["suggested_label"].fillna("").astype(str).to_numpy()
        relabel = flagged & (suggestion != "")
        for i in np.flatnonzero(relabel):
            y[i] = dataset.class_code(suggestion[i])
    removed = flagged & ~relabel
    reasons = findings["reasons"].astype(str).to_numpy() if "reasons" in findings else findings.get("kinds")
    changed = np.flatnonzero(flagged)
    old_labels, new_labels = dataset.labels, np.asarray(dataset.classes, dtype=object)[y]
    changes = pd.DataFrame({
        "row": changed,
        "row_id": dataset.row_id[changed],
        "action": np.where(relabel[changed], "relabel", "quarantine" if policy == "quarantine" else "drop"),
        "old_label": old_labels[changed],
        "new_label": np.where(relabel[changed], new_labels[changed], ""),
        "reason": np.asarray(reasons, dtype=object)[changed] if reasons is not None else "",
    })
    kept = dataset.replace(y=y).take(~removed)
    quarantined = dataset.take(removed) if policy == "quarantine" and removed.any() else None
    return Sanitized(kept, quarantined, changes)


class ScanResampler(BaseEstimator):
    """Scan ``(X, y)`` and return it sanitized, in imbalanced-learn's ``fit_resample`` convention.

    ``X`` is a DataFrame or a 2-D array (a table) or an image array (n, H, W[, C]).

    >>> from sklearn.datasets import load_wine
    >>> X, y = load_wine(return_X_y=True)
    >>> X_clean, y_clean = ScanResampler(policy="relabel").fit_resample(X, y)   # doctest: +SKIP
    """

    def __init__(self, policy: SanitizePolicy = "drop", detectors=None, random_state: int = 0):
        self.policy = policy
        self.detectors = detectors
        self.random_state = random_state

    def fit_resample(self, X, y):
        from mithridate.detect.scan import Scan

        if isinstance(X, pd.DataFrame):
            features = X.reset_index(drop=True)
        elif np.ndim(X) == 2:
            features = pd.DataFrame(np.asarray(X), columns=[f"x{i}" for i in range(np.shape(X)[1])])
        else:
            features = np.asarray(X)
        dataset = Dataset.from_labels(features, np.asarray(y))
        scan = Scan(self.detectors, random_state=self.random_state).fit(dataset)
        result = sanitize(dataset, scan.report_.findings, self.policy)
        self.findings_ = scan.report_.findings
        self.sample_indices_ = np.asarray(result.dataset.row_id)
        self.changes_ = result.changes
        X_out = X.iloc[self.sample_indices_] if isinstance(X, pd.DataFrame) else np.asarray(X)[self.sample_indices_]
        return X_out, result.dataset.labels.astype(np.asarray(y).dtype)
