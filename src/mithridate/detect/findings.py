"""Findings: the merged, ranked per-row verdict of a scan, and its summary (:class:`Report`)."""

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
from mithridate.represent import Representation

FINDINGS_COLUMNS = ("row", "score", "flagged", "kinds", "suggested_label")


def merge_scores(detectors: Sequence[Detector]) -> tuple[np.ndarray, np.ndarray]:
    """One score in [0, 1] per row and the merged flag.

    Each detector's scores become percentile ranks in [0, 1) (scales differ between detectors). A row flagged by
    any detector scores ``0.5 + 0.5 * (its best rank among the detectors that flagged it)``; an unflagged
    row ``0.5 * (its best rank)``: so every flagged row ranks above every unflagged one, and within each
    group the row some detector finds most extreme comes first.
    """
    ranks = np.stack([(rankdata(d.scores_, method="max") - 1) / len(d.scores_) for d in detectors])
    flags = np.stack([d.flags_ for d in detectors])
    flagged = flags.any(axis=0)
    best_flagged = np.where(flags, ranks, 0.0).max(axis=0)
    score = np.where(flagged, 0.5 + 0.5 * best_flagged, 0.5 * ranks.max(axis=0))
    return score, flagged


def findings_frame(dataset: Dataset, detectors: Sequence[Detector]) -> pd.DataFrame:
    """One row per input row: position, id, label, merged score and flag, reasons, suggested label."""
    score, flagged = merge_scores(detectors)
    kinds = np.full(dataset.n_rows, "", dtype=object)
    reasons = np.full(dataset.n_rows, "", dtype=object)
    for d in detectors:
        first = kinds == ""
        kinds = np.where(d.flags_, kinds + np.where(first, "", ";") + d.name, kinds)
        reasons = np.where(d.flags_, reasons + np.where(first, "", " | ") + d.evidence_.astype(str), reasons)
    suggested = np.full(dataset.n_rows, -1)
    for d in detectors:  # the first detector with a suggestion wins; only flagged rows get one
        take = (suggested < 0) & d.flags_ & (d.suggested_label_ >= 0)
        suggested[take] = d.suggested_label_[take]
    names = np.asarray(dataset.classes, dtype=object)
    frame = pd.DataFrame({
        "row": np.arange(dataset.n_rows),
        "row_id": dataset.row_id,
        "label": dataset.labels,
        "score": np.round(score, 6),
        "flagged": flagged,
        "kinds": kinds,
        "suggested_label": np.where(suggested >= 0, names[np.maximum(suggested, 0)], ""),
        "action": np.where(~flagged, "", np.where(suggested >= 0, "relabel", "drop")),
        "reasons": reasons,
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
                       detectors: Sequence[Detector]) -> Report:
        findings = findings_frame(dataset, detectors)
        return cls(findings, summarize(dataset, representation, detectors, findings), dataset, representation)

    @property
    def flagged(self) -> np.ndarray:
        return self.findings["flagged"].to_numpy(bool)

    def write(self, out: str | Path, html: bool = True) -> dict[str, Path]:
        """Write ``findings.csv``, ``summary.json`` and (by default) ``report.html`` into ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"findings": out / "findings.csv", "summary": out / "summary.json"}
        with atomic_path(paths["findings"]) as tmp:
            self.findings.to_csv(tmp, index=False)
        with atomic_path(paths["summary"]) as tmp:
            tmp.write_text(json.dumps(self.summary, indent=2, default=_json_default))
        if html:
            from mithridate.report import render_scan_report

            paths["report"] = out / "report.html"
            with atomic_path(paths["report"]) as tmp:
                tmp.write_text(render_scan_report(self))
        return paths


def summarize(dataset: Dataset, representation: Representation, detectors: Sequence[Detector],
              findings: pd.DataFrame) -> dict:
    """Counts per detector and per class, for ``summary.json`` and the report."""
    flagged = findings["flagged"].to_numpy(bool)
    per_class = {
        str(name): {"rows": int((dataset.y == k).sum()), "flagged": int(flagged[dataset.y == k].sum())}
        for k, name in enumerate(dataset.classes)
    }
    per_detector = {d.name: {"flagged": int(d.flags_.sum()), **getattr(d, "summary_", {})} for d in detectors}
    return {
        "data": dataset.name,
        "kind": dataset.kind,
        "rows": dataset.n_rows,
        "classes": [str(c) for c in dataset.classes],
        "representation": representation.description,
        "flagged": int(flagged.sum()),
        "flagged_share": float(flagged.mean()),
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
