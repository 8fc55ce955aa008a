"""Detectors by name, and the ones a scan runs by default for each kind of data."""

from __future__ import annotations

import importlib

from mithridate.detect.base import Detector
from mithridate.errors import DataError

# name -> "module:Class", imported on first use so a scan loads only what it runs
DETECTORS: dict[str, str] = {
    "label_issues": "mithridate.detect.label_issues:LabelIssues",
    "clusters": "mithridate.detect.clusters:ClusterOutliers",
    "isolation_forest": "mithridate.detect.isolation_forest:IsolationOutliers",
    "lof": "mithridate.detect.lof:LocalOutliers",
    "correlations": "mithridate.detect.correlations:CorrelationOutliers",
    "duplicates": "mithridate.detect.duplicates:Duplicates",
    "spectral": "mithridate.detect.spectral:SpectralSignatures",
    "activation_clustering": "mithridate.detect.activation_clustering:ActivationClustering",
    "spectre": "mithridate.detect.spectre:Spectre",
}

DEFAULTS: dict[str, tuple[str, ...]] = {
    "table": ("label_issues", "clusters", "isolation_forest", "correlations", "duplicates"),
    "image": ("label_issues", "spectre", "clusters", "duplicates"),
}


def detector_class(name: str) -> type[Detector]:
    name = name.lower().replace("-", "_")  # detectors are spelt with underscores; hyphens are an alias
    if name not in DETECTORS:
        raise DataError(f"unknown detector {name!r} (choose from {', '.join(DETECTORS)})")
    module, _, cls = DETECTORS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def make_detectors(names: list[str] | None, kind: str) -> list[Detector]:
    """Fresh detector instances by name (default: those suited to ``kind``)."""
    names = list(DEFAULTS[kind]) if not names else [n.strip() for n in names if n.strip()]
    return [detector_class(name)() for name in names]
