"""Per-column tests of a batch against the baseline, each with a p-value and an effect size.

Numbers:

- ``ks``: two-sample Kolmogorov-Smirnov against the baseline sample (Massey 1951); effect size the
  Wasserstein distance (Vallender 1974) in baseline robust standard deviations;
- ``cvm``: two-sample Cramér-von Mises (Anderson 1962), more sensitive to shifts of the whole shape
  (off by default: it mostly repeats ``ks``). Anderson-Darling is not offered: scipy caps its p-value
  to [0.001, 0.25], useless once corrected for many tests;
- ``histogram``: chi-square of the batch's counts against the full baseline's in groups cut from the
  quantile sketch (twenty equal-mass groups with the outer 1% of each tail apart), so a rare value written
  into many rows (a tabular trigger) stands out; effect size the population stability index over the
  baseline deciles (PSI; Yurdakul 2018 studies its statistics);
- ``missing``: Fisher's exact test of the missing rate (values that do not parse as numbers count as
  missing); effect size the difference in rates. Run only where the baseline or the batch has a missing
  value: with none on either side the test cannot reject, and leaving it out of the multiple-testing family
  is valid (Tarone 1990: the margins decide it, not the p-value);
- ``range``: values outside the baseline's observed range. For N baseline values, a new value from the
  same distribution lies outside with probability 2 / (N + 1); the count in the batch is tested against
  that binomial. Effect size: the share of rows outside.

Categories:

- ``chi2``: chi-square of level counts (rare levels pooled so every expected count is at least 5); effect
  size the Jensen-Shannon distance (base 2, in [0, 1]) (Lin 1991), the PSI in the detail;
- ``missing``: as for numbers;
- ``unseen``: levels the baseline never had. Good-Turing (Good 1953): the chance that a new row shows an
  unseen level is about (levels seen once + 1) / (N + 1); the batch's count is tested against that binomial.

>>> from mithridate.data import demo
>>> from mithridate.validate.profile import profile
>>> ds = demo("wine")
>>> base = profile(ds.take(range(0, 178, 2)), label_model=False)
>>> checks = column_checks(base, base.prepared_sample(), base.prepare(ds.take(range(1, 178, 2))))
>>> min(c.p_value for c in checks) > 0.001
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import numpy as np
from scipy import stats
from scipy.spatial.distance import jensenshannon

from mithridate.validate.profile import Prepared, Profile
from mithridate.validate.results import Check
from mithridate.validate.sketches import mass_cuts

DECILES = tuple(np.round(np.arange(0.1, 0.91, 0.1), 1).tolist())
MIN_EXPECTED = 5.0
EFFECT_ROWS = 100_000
"""Effect sizes that sort values (Wasserstein) use at most this many batch rows."""


def psi(expected: np.ndarray, actual: np.ndarray, floor: float = 1e-4) -> float:
    """Population stability index of two count vectors over the same bins."""
    e = np.maximum(expected / max(expected.sum(), 1), floor)
    a = np.maximum(actual / max(actual.sum(), 1), floor)
    return float(np.sum((a - e) * np.log(a / e)))


def pooled_chi2(base: np.ndarray, batch: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Chi-square of a 2 x k table after merging adjacent bins until the batch's expected count in each is
    at least :data:`MIN_EXPECTED`; returns the statistic, the p-value and each original bin's group."""
    base, batch = np.asarray(base, dtype=np.float64), np.asarray(batch, dtype=np.float64)
    n = batch.sum()
    share = base / max(base.sum(), 1)
    group, groups, acc = np.zeros(len(base), dtype=np.int64), 0, 0.0
    for i in range(len(base)):
        group[i] = groups
        acc += share[i] * n
        if acc >= MIN_EXPECTED:
            groups, acc = groups + 1, 0.0
    if acc > 0 and groups > 0:  # the tail that did not reach the minimum joins the last full group
        group[group == groups] = groups - 1
    k = int(group.max()) + 1 if len(group) else 0
    b, a = np.bincount(group, base, k), np.bincount(group, batch, k)
    keep = (a + b) > 0
    if keep.sum() < 2 or n == 0:
        return 0.0, 1.0, group
    stat, p, _, _ = stats.chi2_contingency(np.vstack([b[keep], a[keep]]), correction=False)
    return float(stat), float(p), group


def missing_check(column: str, base_missing: int, base_n: int, missing: int, n: int, invalid: int = 0) -> Check:
    _, p = stats.fisher_exact([[base_missing, base_n - base_missing], [missing, n - missing]])
    r0, r1 = base_missing / max(base_n, 1), missing / max(n, 1)
    detail = f"missing {r1:.2%} of the batch, {r0:.2%} of the baseline"
    if invalid:
        detail += f"; {invalid} values are not numbers"
    return Check(f"missing:{column}", "missing", "column", column, r1, float(p), r1 - r0, "missing_rate_diff",
                 detail)


@dataclass
class _Column:
    """Column ``j`` of the profile's ``kind`` list (``numeric`` or ``categorical``) and the batch's values."""

    kind: ClassVar[str]
    profile: Profile
    j: int
    values: np.ndarray

    @property
    def column(self) -> str:
        return getattr(self.profile, self.kind)[self.j]

    @property
    def info(self) -> dict:
        return self.profile.columns[self.column]


@dataclass
class NumericColumn(_Column):
    """What the tests of one numeric column read: the baseline's summary and sample (``base``: its present
    values), the batch's values (missing ones as NaN)."""

    kind = "numeric"
    base: np.ndarray
    invalid: int
    rng: np.random.Generator

    @cached_property
    def present(self) -> np.ndarray:
        return self.values[~np.isnan(self.values)]

    @cached_property
    def wasserstein(self) -> float:
        """Wasserstein distance in baseline standard deviations (on at most ``EFFECT_ROWS`` batch rows;
        drawn once, by the first test that needs it)."""
        present = self.present
        small = present if len(present) <= EFFECT_ROWS else self.rng.choice(present, EFFECT_ROWS, replace=False)
        return float(stats.wasserstein_distance(self.base, small)) / float(self.profile.encoding.scale[self.j])

    @property
    def where(self) -> str:
        batch, baseline = float(np.median(self.present)), self.info["quantiles"]["0.5"]
        return f"median {batch:.4g} in the batch, {baseline:.4g} in the baseline"


def _numeric_missing(c: NumericColumn) -> Check | None:
    info, missing = c.info, len(c.values) - len(c.present)
    if int(info["missing"]) + missing == 0:
        return None
    return missing_check(c.column, int(info["missing"]), int(info["count"]) + int(info["missing"]), missing,
                         len(c.values), c.invalid)


def _ks(c: NumericColumn) -> Check:
    # Exact p-values cost seconds for thousands of rows; the asymptotic ones are then as good.
    res = stats.ks_2samp(c.base, c.present, method="auto" if len(c.base) * len(c.present) < 10**5 else "asymp")
    return Check(f"ks:{c.column}", "ks", "column", c.column, float(res.statistic), float(res.pvalue), c.wasserstein,
                 "wasserstein_sd", c.where)


def _cvm(c: NumericColumn) -> Check:
    res = stats.cramervonmises_2samp(c.base, c.present)
    return Check(f"cvm:{c.column}", "cvm", "column", c.column, float(res.statistic), float(res.pvalue),
                 c.wasserstein, "wasserstein_sd", c.where)


def _histogram(c: NumericColumn) -> Check:
    counts = c.profile.sketch.counts[c.j]
    idx = c.profile.sketch.index_column(c.j, c.present)
    cuts = mass_cuts(counts)
    edges = np.concatenate([[0], cuts, [len(counts)]])
    base_groups = np.add.reduceat(counts, edges[:-1])
    batch_groups = np.bincount(np.searchsorted(cuts, idx, side="right"), minlength=len(edges) - 1)
    stat, p, group = pooled_chi2(base_groups, batch_groups)
    dcuts = mass_cuts(counts, DECILES)
    dedges = np.concatenate([[0], dcuts, [len(counts)]])
    effect = psi(np.add.reduceat(counts, dedges[:-1]),
                 np.bincount(np.searchsorted(dcuts, idx, side="right"), minlength=len(dedges) - 1))
    k = int(group.max()) + 1
    b, a = np.bincount(group, base_groups, k), np.bincount(group, batch_groups, k)
    excess = a / max(a.sum(), 1) - b / max(b.sum(), 1)
    g = int(np.argmax(np.abs(excess)))
    lo_b, hi_b = edges[np.flatnonzero(group == g)[0]], edges[np.flatnonzero(group == g)[-1] + 1]
    lo_q = counts[:lo_b].sum() / max(counts.sum(), 1)
    hi_q = counts[:hi_b].sum() / max(counts.sum(), 1)
    detail = (f"{a[g] / a.sum():.1%} of the batch between the baseline's {lo_q:.0%} and {hi_q:.0%} quantiles "
              f"(baseline: {b[g] / b.sum():.1%})")
    return Check(f"histogram:{c.column}", "histogram", "column", c.column, stat, p, effect, "psi", detail)


def _range(c: NumericColumn) -> Check:
    present, info = c.present, c.info
    lo, hi = float(info["min"]), float(info["max"])
    outside = int(((present < lo) | (present > hi)).sum())
    n0 = int(info["count"])
    p = float(stats.binom.sf(outside - 1, len(present), min(1.0, 2.0 / (n0 + 1)))) if outside else 1.0
    detail = f"{outside} values outside the baseline's range [{lo:.4g}, {hi:.4g}]"
    if outside:
        detail += f" (batch range [{present.min():.4g}, {present.max():.4g}])"
    return Check(f"range:{c.column}", "range", "column", c.column, float(outside), p, outside / len(present),
                 "share_out_of_range", detail)


NUMERIC: dict[str, Callable[[NumericColumn], Check | None]] = {
    "missing": _numeric_missing, "ks": _ks, "cvm": _cvm, "histogram": _histogram, "range": _range}
"""The tests of a numeric column, in the order they run (all but ``missing`` need values on both sides)."""


def numeric_checks(profile: Profile, j: int, base: np.ndarray, values: np.ndarray, invalid: int,
                   tests, rng: np.random.Generator) -> list[Check]:
    """The tests of numeric column ``j``: ``base`` from the baseline sample, ``values`` from the batch."""
    c = NumericColumn(profile, j, values, base[~np.isnan(base)], invalid, rng)
    out = []
    for name, test in NUMERIC.items():
        if name not in tests or (name != "missing" and (not len(c.present) or not len(c.base))):
            continue
        if (check := test(c)) is not None:
            out.append(check)
    return out


@dataclass
class CategoricalColumn(_Column):
    """What the tests of one categorical column read."""

    kind = "categorical"

    @cached_property
    def present(self) -> np.ndarray:
        return self.values[self.values != None]  # noqa: E711  (elementwise on an object array)

    @cached_property
    def batch(self) -> dict:
        names, counts = (np.unique(self.present.astype(str), return_counts=True) if len(self.present)
                         else (np.array([]), []))
        return dict(zip(names.tolist(), np.asarray(counts).tolist(), strict=True))

    @cached_property
    def unseen(self) -> dict:
        return {k: v for k, v in self.batch.items() if k not in self.info["levels"]}


def _categorical_missing(c: CategoricalColumn) -> Check | None:
    info, missing = c.info, len(c.values) - len(c.present)
    if int(info["missing"]) + missing == 0:
        return None
    return missing_check(c.column, int(info["missing"]), int(info["count"]) + int(info["missing"]), missing,
                         len(c.values))


def _chi2(c: CategoricalColumn) -> Check | None:
    if not len(c.present):
        return None
    info, levels = c.info, c.info["levels"]
    order = list(levels)
    base = np.array([levels[k] for k in order] + [int(info["other"])], dtype=np.float64)
    new = np.array([c.batch.get(k, 0) for k in order] + [sum(c.unseen.values())], dtype=np.float64)
    rank = np.argsort(-base, kind="stable")  # pool the rarest levels last
    stat, p, _ = pooled_chi2(base[rank], new[rank])
    js = float(jensenshannon(base / base.sum(), new / new.sum(), base=2)) if base.sum() else 0.0
    diff = new / new.sum() - base / max(base.sum(), 1)
    w = int(np.argmax(np.abs(diff)))
    name = order[w] if w < len(order) else "(other levels)"
    detail = (f"{name!r}: {new[w] / new.sum():.1%} of the batch, {base[w] / max(base.sum(), 1):.1%} of the "
              f"baseline; PSI {psi(base, new):.3g}")
    return Check(f"chi2:{c.column}", "chi2", "column", c.column, stat, p, js, "js_distance", detail)


def _unseen(c: CategoricalColumn) -> Check | None:
    info, levels = c.info, c.info["levels"]
    if not len(c.present) or info["other"]:
        return None
    k = int(sum(c.unseen.values()))
    n0 = int(info["count"])
    singletons = sum(1 for v in levels.values() if v == 1)
    p = float(stats.binom.sf(k - 1, len(c.present), min(1.0, (singletons + 1) / (n0 + 1)))) if k else 1.0
    shown = ", ".join(f"{name!r} ({n})" for name, n in sorted(c.unseen.items(), key=lambda t: -t[1])[:5])
    return Check(f"unseen:{c.column}", "unseen", "column", c.column, float(k), p, k / len(c.present),
                 "share_unseen", f"levels the baseline never had: {shown}" if k else "")


CATEGORICAL: dict[str, Callable[[CategoricalColumn], Check | None]] = {
    "missing": _categorical_missing, "chi2": _chi2, "unseen": _unseen}
"""The tests of a categorical column, in the order they run."""


def categorical_checks(profile: Profile, j: int, values: np.ndarray, tests) -> list[Check]:
    c = CategoricalColumn(profile, j, values)
    return [check for name, test in CATEGORICAL.items() if name in tests and (check := test(c)) is not None]


def column_checks(profile: Profile, sample: Prepared, batch: Prepared, tests=None,
                  random_state: int = 0) -> list[Check]:
    """Every per-column test named in ``tests`` (default: all but ``cvm``) for every column the batch has."""
    tests = set(tests) if tests is not None else (set(NUMERIC) | set(CATEGORICAL)) - {"cvm"}
    rng = np.random.default_rng(random_state)
    absent = set(batch.missing_columns)
    out: list[Check] = []
    for j, column in enumerate(profile.numeric):
        if column not in absent:
            out += numeric_checks(profile, j, sample.num[:, j], batch.num[:, j], int(batch.invalid[j]), tests, rng)
    for j, column in enumerate(profile.categorical):
        if column not in absent:
            out += categorical_checks(profile, j, batch.cat[:, j], tests)
    return out


NUMERIC_TESTS = tuple(NUMERIC)
CATEGORICAL_TESTS = tuple(CATEGORICAL)
