"""Findings: the merged, ranked per-row verdict of a scan, and its summary (:class:`Report`).

How detectors are merged (no flags are OR-ed blindly):

- detectors of a poisoning mechanism (label issues, backdoors, conflicting copies) decide which rows they
  report, each calibrated on the data at hand (an estimated number of wrong labels per class pair; a
  per-class poisoned-or-clean verdict), as ``poison`` or ``suspect``;
- detectors of unusual rows (outliers, broken correlations, tight groups) give p-values against their
  empirical null; Benjamini-Hochberg at the scan's false discovery rate runs over all of them and all rows
  at once, and what it finds are data-quality notes;
- a row's severity is the strongest any detector gives it; ``flagged`` (act on it) means ``poison`` or
  ``suspect``; notes carry no action;
- a detector that finds nothing on this data abstains, and the summary says why.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from mithridate.data import Dataset, atomic_path
from mithridate.detect.base import Detector
from mithridate.detect.fences import FDR, discoveries
from mithridate.represent import Representation

SEVERITIES = ("", "note", "suspect", "poison")
FLAGGING = ("poison", "suspect")


def severities(detectors: Sequence[Detector], fdr: float = FDR) -> np.ndarray:
    """(detectors, rows) severity each detector gives each row in the merged scan: detectors with p-values
    report what Benjamini-Hochberg at ``fdr`` finds over all of their p-values together; the others what
    they decided themselves."""
    out = np.stack([np.asarray(d.severity_, dtype=object) for d in detectors])
    tested = [i for i, d in enumerate(detectors) if np.isfinite(d.pvalues_).any()]
    if tested:
        found = discoveries(np.stack([detectors[i].pvalues_ for i in tested]), fdr)
        for row, i in enumerate(tested):
            kept = np.where(np.isin(out[i], FLAGGING), out[i], detectors[i].finds)
            out[i] = np.where(found[row], kept, "")
    return out


def merge_scores(detectors: Sequence[Detector], severity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One score in [0, 1] per row and the merged flag.

    Each detector's scores become percentile ranks in [0, 1) (scales differ between detectors). A flagged
    row scores ``0.5 + 0.5 * (its best rank among the detectors that flag it)``; any other row
    ``0.5 * (its best rank)``: so every flagged row ranks above every other one, and within each group the
    row some detector finds most extreme comes first.
    """
    ranks = np.stack([(rankdata(d.scores_, method="max") - 1) / len(d.scores_) for d in detectors])
    flags = np.isin(severity, FLAGGING)
    flagged = flags.any(axis=0)
    best_flagged = np.where(flags, ranks, 0.0).max(axis=0)
    score = np.where(flagged, 0.5 + 0.5 * best_flagged, 0.5 * ranks.max(axis=0))
    return score, flagged


def _joined(names: list[str], texts: list[np.ndarray], where: np.ndarray, sep: str) -> tuple[np.ndarray, ...]:
    n = where.shape[1]
    kinds, reasons = np.full(n, "", dtype=object), np.full(n, "", dtype=object)
    for name, text, mask in zip(names, texts, where, strict=True):
        first = kinds == ""
        kinds = np.where(mask, kinds + np.where(first, "", ";") + name, kinds)
        reasons = np.where(mask, reasons + np.where(first, "", sep) + text.astype(str), reasons)
    return kinds, reasons


def findings_frame(dataset: Dataset, detectors: Sequence[Detector], fdr: float = FDR,
                   fingerprint: str | None = None) -> pd.DataFrame:
    """One row per input row: position, id, label, merged score, flag and severity, reasons (flags) and
    notes (data quality), suggested label and action, the data's fingerprint, each detector's score."""
    severity = severities(detectors, fdr)
    score, flagged = merge_scores(detectors, severity)
    rank = np.vectorize(SEVERITIES.index)(severity).max(axis=0)
    names = [d.name for d in detectors]
    evidence = [d.evidence_ for d in detectors]
    kinds, reasons = _joined(names, evidence, np.isin(severity, FLAGGING), " | ")
    _, notes = _joined(names, evidence, severity == "note", " | ")
    suggested = np.full(dataset.n_rows, -1)
    for d, sev in zip(detectors, severity, strict=True):  # the first flagging detector with a suggestion wins
        take = (suggested < 0) & np.isin(sev, FLAGGING) & (d.suggested_label_ >= 0)
        suggested[take] = d.suggested_label_[take]
    classes = np.asarray(dataset.classes, dtype=object)
    frame = pd.DataFrame({
        "row": np.arange(dataset.n_rows),
        "row_id": dataset.row_id,
        "label": dataset.labels,
        "score": np.round(score, 6),
        "flagged": flagged,
        "severity": np.asarray(SEVERITIES, dtype=object)[rank],
        "kinds": kinds,
        "suggested_label": np.where(suggested >= 0, classes[np.maximum(suggested, 0)], ""),
        "action": np.where(~flagged, "", np.where(suggested >= 0, "relabel", "drop")),
        "reasons": reasons,
        "notes": notes,
        "fingerprint": fingerprint or dataset.fingerprint(),
    })
    for d in detectors:
        frame[f"score_{d.name}"] = np.round(d.scores_, 6)
    return frame


@dataclass(frozen=True, eq=False)
class Report:
    """The merged findings of one scan (``findings``: one row per input row) and its ``summary``."""

    findings: pd.DataFrame
    summary: dict
    dataset: Dataset
    representation: Representation

    @classmethod
    def from_detectors(cls, dataset: Dataset, representation: Representation,
                       detectors: Sequence[Detector], fdr: float = FDR) -> Report:
        fingerprint = dataset.fingerprint()
        findings = findings_frame(dataset, detectors, fdr, fingerprint)
        summary = summarize(dataset, representation, detectors, findings, fdr, fingerprint)
        return cls(findings, summary, dataset, representation)

    @property
    def flagged(self) -> np.ndarray:
        return self.findings["flagged"].to_numpy(bool)

    def write(self, out: str | Path) -> dict[str, Path]:
        """Write ``findings.csv`` and ``summary.json`` into ``out`` (the page: :func:`mithridate.report.
        write_scan_report`)."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"findings": out / "findings.csv", "summary": out / "summary.json"}
        with atomic_path(paths["findings"]) as tmp:
            self.findings.to_csv(tmp, index=False)
        with atomic_path(paths["summary"]) as tmp:
            tmp.write_text(json.dumps(self.summary, indent=2, default=_json_default))
        return paths


def abstention(detector: Detector, found: int, fdr: float) -> str:
    """Why ``detector`` reports nothing on this data ("" when it reports something)."""
    if found:
        return ""
    if np.isfinite(detector.pvalues_).any():
        return f"nothing beyond its null at FDR {fdr:.0%}"
    return getattr(detector, "abstain_", "") or "nothing found on this data"


def summarize(dataset: Dataset, representation: Representation, detectors: Sequence[Detector],
              findings: pd.DataFrame, fdr: float = FDR, fingerprint: str | None = None) -> dict:
    """Counts per severity, per detector and per class, for ``summary.json`` and the report."""
    flagged = findings["flagged"].to_numpy(bool)
    severity = findings["severity"].to_numpy(object)
    per_class = {
        str(name): {"rows": int((dataset.y == k).sum()), "flagged": int(flagged[dataset.y == k].sum()),
                    "notes": int((severity[dataset.y == k] == "note").sum())}
        for k, name in enumerate(dataset.classes)
    }
    merged = severities(detectors, fdr)
    per_detector = {}
    for d, sev in zip(detectors, merged, strict=True):
        found = int((sev != "").sum())
        per_detector[d.name] = {"flagged": int(np.isin(sev, FLAGGING).sum()), "notes": int((sev == "note").sum()),
                                "abstained": not found, "why": abstention(d, found, fdr),
                                **getattr(d, "summary_", {})}
    return {
        "data": dataset.name,
        "kind": dataset.kind,
        "rows": dataset.n_rows,
        "classes": [str(c) for c in dataset.classes],
        "fingerprint": fingerprint or dataset.fingerprint(),
        "representation": representation.description,
        "false_discovery_rate": fdr,
        "flagged": int(flagged.sum()),
        "flagged_share": float(flagged.mean()),
        "severity": {s: int((severity == s).sum()) for s in ("poison", "suspect", "note")},
        "actions": {a: int((findings["action"] == a).sum()) for a in ("drop", "relabel")},
        "per_class": per_class,
        "detectors": per_detector,
    }


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
