"""Robust aggregation rules, one per file, one protocol (:class:`Aggregator`), and the name registry."""

from __future__ import annotations

import inspect

from mithridate.federated.aggregators.base import (
    AggregationError,
    Aggregator,
    bound_weights,
    check_updates,
    pairwise_sq_distances,
)
from mithridate.federated.aggregators.bulyan import Bulyan
from mithridate.federated.aggregators.centered_clipping import CenteredClipping, clip_rows
from mithridate.federated.aggregators.fltrust import FLTrust
from mithridate.federated.aggregators.geometric_median import GeometricMedian
from mithridate.federated.aggregators.krum import Krum, MultiKrum
from mithridate.federated.aggregators.mean import Mean
from mithridate.federated.aggregators.median import Median
from mithridate.federated.aggregators.nnm import NearestNeighborMixing
from mithridate.federated.aggregators.norm_bound import NormBound
from mithridate.federated.aggregators.screened_mean import ScreenedMean
from mithridate.federated.aggregators.trimmed_mean import TrimmedMean

AGGREGATORS: dict[str, type[Aggregator]] = {
    cls.name: cls
    for cls in (Mean, Median, TrimmedMean, Krum, MultiKrum, Bulyan, GeometricMedian, CenteredClipping,
                NormBound, FLTrust, ScreenedMean)
}
#: names ``make_aggregator`` accepts: the rules above, ``default`` and ``nnm_<rule>`` (mixing, then the rule)
NAMES = ("default", *AGGREGATORS, *(f"nnm_{n}" for n in ("median", "krum", "centered_clipping", "trimmed_mean")))
CONTEXT_KEYS = ("server_update", "center")


def _init_options(cls: type, options: dict) -> dict:
    params = set(inspect.signature(cls.__init__).parameters) | set(inspect.signature(Aggregator.__init__).parameters)
    unknown = sorted(set(options) - params - {"self", "kw"})
    if unknown:
        raise AggregationError(f"{cls.name} has no option {', '.join(unknown)}")
    return options


def make_aggregator(name: str, **options) -> Aggregator:
    """An aggregator by name. ``default``: :class:`ScreenedMean` (chosen by the robustness matrix of
    ``benchmarks/federated_robustness.py``; see docs/federated.md). ``nnm_<rule>``: nearest-neighbour mixing
    in front of ``<rule>``."""
    key = name.lower().replace("-", "_")
    if key == "default":
        agg = ScreenedMean(**_init_options(ScreenedMean, options))
        agg.name = "default"
        return agg
    if key.startswith("nnm_"):
        inner = key[4:]
        if inner not in AGGREGATORS:
            raise AggregationError(f"unknown aggregator {name!r} (choose from {', '.join(NAMES)})")
        f = options.pop("num_malicious", None)
        mwr = options.get("max_weight_ratio")
        outer = {"max_weight_ratio": mwr} if "max_weight_ratio" in options else {}
        then = AGGREGATORS[inner](**_init_options(AGGREGATORS[inner], options))
        agg = NearestNeighborMixing(then, num_malicious=f, **outer)
        agg.name = key
        return agg
    if key not in AGGREGATORS:
        raise AggregationError(f"unknown aggregator {name!r} (choose from {', '.join(NAMES)})")
    cls = AGGREGATORS[key]
    return cls(**_init_options(cls, options))


__all__ = [
    "AGGREGATORS", "NAMES", "AggregationError", "Aggregator", "Bulyan", "CenteredClipping", "FLTrust",
    "GeometricMedian", "Krum", "Mean", "Median", "MultiKrum", "NearestNeighborMixing", "NormBound", "ScreenedMean",
    "TrimmedMean", "bound_weights", "check_updates", "clip_rows", "make_aggregator", "pairwise_sq_distances",
]
