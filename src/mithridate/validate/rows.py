"""Row-level sanitization of a batch: rows that deviate far from the baseline, each with its reason.

Two checks, both referenced to the verified baseline rather than to the batch (which may be poisoned):

- **extreme values**: a numeric value beyond Tukey's "far out" fence of the baseline (more than
  :data:`~mithridate.detect.fences.FAR_OUT` interquartile ranges outside its quartiles; Tukey 1977) *and*
  more than :data:`RANGE_MARGIN` IQR outside the range the baseline ever showed. A robust z-score (value
  minus baseline median, over baseline IQR / 1.349) is reported with it;
- **abnormal feature correlations**: the scan's per-class Gaussian-copula / robust-covariance detector
  (:func:`mithridate.detect.correlations.correlation_outliers`), fitted on the baseline sample and the batch
  together (the robust fit ignores the rows that break the structure). A batch row is flagged when it is
  far out (Tukey) *and* further out than every baseline row of its class, so a clean row is flagged with
  probability about 1 / (baseline rows + 1). Rows with a flipped label sit in the wrong class and can be
  flagged too.

>>> import numpy as np
>>> far_out_values(np.array([[0.0], [5.0], [100.0]]), np.array([-1.0]), np.array([1.0]), np.array([-3.0]),
...                np.array([3.0])).tolist()
[[False], [False], [True]]
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from mithridate.detect.correlations import correlation_outliers
from mithridate.detect.fences import FAR_OUT
from mithridate.validate.profile import Prepared, Profile

RANGE_MARGIN = 1.0
"""A value is extreme only if it also lies this many IQRs outside the baseline's observed range: a new value
just past the baseline's maximum is common (a chance of 1 / (N + 1) per value and column), and on a small or
heavy-tailed baseline the far-out fence alone would quarantine clean rows by the percent."""
CORRELATION_BASELINE_ROWS = 1000
"""Baseline sample rows per class the correlation check fits on (with the batch's rows of that class)."""


def far_out_values(values: np.ndarray, q25: np.ndarray, q75: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                   far_out: float = FAR_OUT, margin: float = RANGE_MARGIN) -> np.ndarray:
    """Boolean (n, columns): beyond the baseline's far-out fences and ``margin`` IQRs outside its range."""
    iqr = q75 - q25
    with np.errstate(invalid="ignore"):
        high = (values > q75 + far_out * iqr) & (values > hi + margin * iqr)
        low = (values < q25 - far_out * iqr) & (values < lo - margin * iqr)
    return high | low


def extreme_rows(profile: Profile, batch: Prepared, far_out: float = FAR_OUT, margin: float = RANGE_MARGIN
                 ) -> tuple[np.ndarray, list[str]]:
    """``(flags, reasons)``: rows with a numeric value far outside the baseline, and which."""
    n = len(batch)
    if not profile.numeric:
        return np.zeros(n, bool), [""] * n
    q = [profile.columns[c]["quantiles"] for c in profile.numeric]
    q25, q75 = np.array([d["0.25"] for d in q]), np.array([d["0.75"] for d in q])
    iqr = np.where(q75 > q25, q75 - q25, profile.encoding.scale * 1.349)
    q75 = q25 + iqr
    lo = np.array([profile.columns[c]["min"] for c in profile.numeric])
    hi = np.array([profile.columns[c]["max"] for c in profile.numeric])
    bad = far_out_values(batch.num, q25, q75, lo, hi, far_out, margin)
    flags = bad.any(axis=1)
    z = profile.encoding.transform_numeric(batch.num)
    reasons = [""] * n
    for i in np.flatnonzero(flags):
        cols = np.flatnonzero(bad[i])
        cols = cols[np.argsort(-np.abs(z[i, cols]))][:3]
        reasons[i] = "extreme value: " + ", ".join(
            f"{profile.numeric[j]}={batch.num[i, j]:.4g} (robust z {z[i, j]:+.1f}; baseline range "
            f"[{lo[j]:.4g}, {hi[j]:.4g}])" for j in cols)
    return flags, reasons


def correlation_rows(profile: Profile, sample: Prepared, batch: Prepared, far_out: float = FAR_OUT,
                     baseline_rows: int = CORRELATION_BASELINE_ROWS, rows_per_dim: int = 100,
                     random_state: int = 0
                     ) -> tuple[np.ndarray, list[str]]:
    """``(flags, reasons)``: batch rows that break the baseline's joint structure of the numeric columns."""
    n = len(batch)
    flags, reasons = np.zeros(n, bool), [""] * n
    if len(profile.numeric) < 2:
        return flags, reasons
    rng = np.random.default_rng(random_state)
    y_sample = sample.y if sample.y is not None else np.zeros(len(sample), np.int64)
    y_batch = batch.y if batch.y is not None else np.zeros(n, np.int64)
    keep = []
    for c in np.unique(y_sample):
        rows = np.flatnonzero(y_sample == c)
        keep.append(rows if len(rows) <= baseline_rows else rng.choice(rows, baseline_rows, replace=False))
    base_rows = np.sort(np.concatenate(keep))

    def encode(p: Prepared) -> np.ndarray:
        return np.nan_to_num(np.clip(profile.encoding.transform_numeric(p.num), -50, 50))

    x = np.vstack([encode(sample)[base_rows], encode(batch)])
    y = np.r_[y_sample[base_rows], y_batch]
    varying = np.flatnonzero(x.std(axis=0) > 0)
    if len(varying) < 2:
        return flags, reasons
    with threadpool_limits(1, user_api="blas"):  # many small matrix products (MCD's C-steps)
        excess, which, residuals = correlation_outliers(x[:, varying], y, rows_per_dim=rows_per_dim,
                                                        random_state=random_state)
    nb = len(base_rows)
    # A batch row is flagged only when it strays further than every verified baseline row of its class did:
    # under the null that is a 1 / (baseline rows + 1) chance per row, whatever the class's tails.
    fence = np.full(n, far_out)
    for c in np.unique(y_batch):
        base_excess = excess[:nb][y[:nb] == c]
        if len(base_excess) and np.isfinite(base_excess).any():
            fence[y_batch == c] = max(far_out, float(np.max(base_excess[np.isfinite(base_excess)])))
    excess, which, residuals = excess[nb:], which[nb:], residuals[nb:]
    flags = excess > fence
    names = [profile.numeric[j] for j in varying]
    for i in np.flatnonzero(flags):
        top = np.argsort(-np.abs(residuals[i]))[:3]
        where = "off the baseline's correlation structure" if which[i] else "an unusual mix of its main factors"
        cols = ", ".join(f"{names[j]} ({residuals[i, j]:+.1f} s.d. from what the others predict)" for j in top)
        label = profile.classes[y_batch[i]] if 0 <= y_batch[i] < len(profile.classes) else "?"
        reasons[i] = (f"abnormal correlations for class {label!r} ({where}, {excess[i]:.1f} IQR beyond the "
                      f"upper quartile): {cols}")
    return flags, reasons


def sanitize_rows(profile: Profile, sample: Prepared, batch: Prepared, far_out: float = FAR_OUT,
                  correlations: bool = True, correlation_max_rows: int = 20_000, random_state: int = 0,
                  margin: float = RANGE_MARGIN) -> tuple[pd.DataFrame, str]:
    """One row per flagged batch row (``row`` position, ``row_id``, ``reason``), and a note on what was
    skipped. The correlation check is skipped for batches over ``correlation_max_rows`` (it refits a robust
    covariance on the batch's rows)."""
    flags, reasons = extreme_rows(profile, batch, far_out, margin)
    note = ""
    if correlations and len(batch) <= correlation_max_rows:
        c_flags, c_reasons = correlation_rows(profile, sample, batch, far_out, random_state=random_state)
        for i in np.flatnonzero(c_flags):
            reasons[i] = "; ".join(r for r in (reasons[i], c_reasons[i]) if r)
        flags |= c_flags
    elif correlations:
        note = f"row-level correlation check skipped: the batch has more than {correlation_max_rows} rows"
    rows = np.flatnonzero(flags)
    return pd.DataFrame({"row": rows, "row_id": batch.row_id[rows], "reason": [reasons[i] for i in rows]}), note
