"""Detectors of poisoned rows (one file each) and the scan that composes them into one report."""

from mithridate.detect.base import Detector
from mithridate.detect.findings import Report
from mithridate.detect.registry import DEFAULTS, DETECTORS, detector_class, make_detectors
from mithridate.detect.scan import Scan

__all__ = ["DEFAULTS", "DETECTORS", "Detector", "Report", "Scan", "detector_class", "make_detectors"]
