"""``report.html`` of a validation: the verdict, every test, and the worst columns drawn over the baseline."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mithridate.report import plots
from mithridate.report.page import kpis, page, table, write_page
from mithridate.validate.sketches import bucket_value

if TYPE_CHECKING:
    from mithridate.validate.gate import Verdict
    from mithridate.validate.profile import Prepared, Profile

COLORS = {"pass": "#27ae60", "warn": "#e67e22", "fail": "#c0392b"}
BASE_COLOR, BATCH_COLOR = "#7f8c8d", "#c0392b"


def worst_columns(verdict: Verdict, k: int = 6) -> list[str]:
    """Columns ordered by their smallest adjusted p-value (ties: largest effect)."""
    frame = verdict.table
    frame = frame[frame["column"].notna() & frame["p_adjusted"].notna()]
    if frame.empty:
        return []
    frame = frame.assign(abs_effect=frame["effect_size"].abs()).sort_values(
        ["p_adjusted", "abs_effect"], ascending=[True, False], kind="stable")
    return list(dict.fromkeys(frame["column"]))[:k]


def _numeric_panel(ax, profile: Profile, column: str, values: np.ndarray) -> None:
    j = profile.numeric.index(column)
    info = profile.columns[column]
    counts = profile.sketch.counts[j]
    present = values[~np.isnan(values)]
    lo = min(info["quantiles"]["0.01"], np.min(present) if len(present) else np.inf)
    hi = max(info["quantiles"]["0.99"], np.max(present) if len(present) else -np.inf)
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        lo, hi = info["min"] - 0.5, info["max"] + 0.5
    edges = np.linspace(lo, hi, 41)
    nz = np.flatnonzero(counts)
    centers = bucket_value(nz) + profile.sketch.center[j]
    base, _ = np.histogram(np.clip(centers, lo, hi), edges, weights=counts[nz])
    batch, _ = np.histogram(np.clip(present, lo, hi), edges)
    width = np.diff(edges)
    ax.bar(edges[:-1], base / max(base.sum(), 1) / width, width, align="edge", color=BASE_COLOR, alpha=0.5,
           label=f"baseline ({profile.n_rows} rows)")
    ax.step(edges, np.r_[batch / max(batch.sum(), 1) / width, 0], where="post", color=BATCH_COLOR,
            label=f"batch ({len(present)} rows)")


def _categorical_panel(ax, profile: Profile, column: str, values: np.ndarray) -> None:
    info = profile.columns[column]
    levels = list(info["levels"])[:12]
    present = values[values != None].astype(str)  # noqa: E711
    batch_counts = pd.Series(present).value_counts()
    extra = [v for v in batch_counts.index if v not in info["levels"]][:3]
    names = levels + extra
    base = np.array([info["levels"].get(v, 0) for v in names], dtype=float)
    new = np.array([batch_counts.get(v, 0) for v in names], dtype=float)
    x = np.arange(len(names))
    ax.bar(x - 0.2, base / max(info["count"], 1), 0.4, color=BASE_COLOR, label="baseline")
    ax.bar(x + 0.2, new / max(len(present), 1), 0.4, color=BATCH_COLOR, label="batch")
    ax.set_xticks(x, [n[:12] for n in names], rotation=45, ha="right", fontsize=7)


def distributions(profile: Profile, batch: Prepared, columns: list[str]) -> str:
    if not columns:
        return "<p>No column test rejected.</p>"
    ncols = min(3, len(columns))
    nrows = int(np.ceil(len(columns) / ncols))
    fig, axes = plots.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.0 * nrows), squeeze=False)
    for ax in axes.ravel()[len(columns):]:
        ax.set_visible(False)
    for ax, column in zip(axes.ravel(), columns, strict=False):
        if column in profile.numeric:
            _numeric_panel(ax, profile, column, batch.num[:, profile.numeric.index(column)])
        else:
            _categorical_panel(ax, profile, column, batch.cat[:, profile.categorical.index(column)])
        ax.set_title(column, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return plots.to_img(fig)


def label_bars(profile: Profile, batch: Prepared) -> str:
    if batch.y is None:
        return "<p>The batch has no labels.</p>"
    base = np.asarray(profile.class_counts, dtype=float)
    new = np.bincount(batch.y[batch.y >= 0], minlength=len(base)).astype(float)
    fig, ax = plots.subplots(figsize=(max(4, 0.6 * len(base) + 2), 2.8))
    x = np.arange(len(base))
    ax.bar(x - 0.2, base / base.sum(), 0.4, color=BASE_COLOR, label="baseline")
    ax.bar(x + 0.2, new / max(new.sum(), 1), 0.4, color=BATCH_COLOR, label="batch")
    ax.set_xticks(x, [str(c)[:12] for c in profile.classes], rotation=45 if len(base) > 6 else 0)
    ax.set(ylabel="share of rows", title="Class balance")
    ax.legend(fontsize=7)
    return plots.to_img(fig)


def render_validation_report(verdict: Verdict, profile: Profile, batch: Prepared | None) -> str:
    s = verdict.summary
    color = COLORS[verdict.verdict]
    frame = verdict.table
    shown = frame[["name", "statistic", "p_value", "p_adjusted", "effect", "effect_size", "passed", "detail"]]
    parts = [
        f"<p style='font-size:1.4em'>Verdict: <b style='color:{color}'>{verdict.verdict.upper()}</b></p>",
        kpis({"batch rows": s["rows"], "tests": s["tests"], "failed": s["failed"],
              "rows removed": s["rows_removed"], "baseline rows": s["baseline_rows"]}),
        f"<p>Baseline <code>{html.escape(str(s['baseline']))}</code>; alpha {s['alpha']} across all tests, "
        f"correction <code>{html.escape(s['correction'])}</code>.</p>",
    ]
    if verdict.reasons:
        parts += ["<h2>Why</h2><ul>"] + [f"<li>{html.escape(r)}</li>" for r in verdict.reasons[:30]] + ["</ul>"]
    if verdict.notes:
        parts += ["<ul>"] + [f"<li>{html.escape(n)}</li>" for n in verdict.notes] + ["</ul>"]
    if batch is not None:
        worst = worst_columns(verdict)
        parts += ["<h2>Worst columns: the batch over the baseline</h2>",
                  f"<p>{html.escape(', '.join(worst))}</p>" if worst else "",
                  distributions(profile, batch, worst), "<h2>Labels</h2>", label_bars(profile, batch)]
    parts += ["<h2>Every test (most significant first)</h2>", table(shown, 500)]
    parts += ["<h2>Rows removed, and why</h2>",
              table(verdict.rows, 200) if len(verdict.rows) else "<p>None.</p>"]
    return page(f"mithridate validate: {verdict.verdict}", "".join(parts))


def write_validation_report(verdict: Verdict, out, profile: Profile | None = None,
                            batch: Prepared | None = None) -> dict:
    """``verdict.json`` and ``rows_removed.csv`` (:meth:`Verdict.write`) and, given the baseline's
    ``profile``, ``report.html`` into ``out``."""
    from pathlib import Path

    paths = verdict.write(out)
    if profile is not None:
        paths["report"] = write_page(Path(out) / "report.html", render_validation_report(verdict, profile, batch))
    return paths
