"""The scan's ``report.html``: one self-contained page a person would want to read."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mithridate.report import plots
from mithridate.report.page import kpis, page, table, write_page

if TYPE_CHECKING:
    from pathlib import Path

    from mithridate.detect.findings import Report

def render_scan_report(report: Report, changes: pd.DataFrame | None = None) -> str:
    """The report of one scan; ``changes`` (from sanitization) adds what was removed or relabelled and why."""
    f, s, ds = report.findings, report.summary, report.dataset
    flagged = f["flagged"].to_numpy(bool)
    score = f["score"].to_numpy(float)
    counts = s["severity"]
    parts = [
        kpis({"rows": s["rows"], "flagged": s["flagged"], "flagged share": f"{s['flagged_share']:.1%}",
              "poison": counts["poison"], "suspect": counts["suspect"], "to relabel": s["actions"]["relabel"],
              "to drop": s["actions"]["drop"], "data-quality notes": counts["note"]}),
        f"<p>Data <code>{html.escape(str(s['data']))}</code> ({s['kind']}, {len(s['classes'])} classes; "
        f"fingerprint <code>{html.escape(s['fingerprint'][:16])}</code>). "
        f"Representation: {html.escape(s['representation'])}. <b>Flagged</b> rows are suspected poisoning "
        f"(<i>poison</i>: every view agrees; <i>suspect</i>: the evidence is split) and carry an action; "
        f"<b>notes</b> are rows that are only unusual (found at a false discovery rate of "
        f"{s['false_discovery_rate']:.0%}) and carry none.</p>",
        "<h2>Detectors</h2>",
        table(pd.DataFrame([{"detector": k, **v} for k, v in s["detectors"].items()]), 100),
        "<h2>Score distributions</h2>",
        plots.score_histogram(score, flagged),
    ]
    score_cols = [c for c in f.columns if c.startswith("score_")]
    if score_cols:
        kinds = f["kinds"].astype(str)
        parts.append(plots.detector_histograms(
            {c[6:]: f[c].to_numpy(float) for c in score_cols},
            {c[6:]: kinds.str.split(";").apply(lambda ks, n=c[6:]: n in ks).to_numpy(bool) for c in score_cols},
        ))
    names = [str(c) for c in ds.classes]
    rows = np.array([s["per_class"][n]["rows"] for n in names])
    per_class_flagged = np.array([s["per_class"][n]["flagged"] for n in names])
    relabel = flagged & (f["suggested_label"].to_numpy(object) != "")
    if relabel.any():
        code = {str(c): k for k, c in enumerate(ds.classes)}
        parts += ["<h2>Label issues by class pair</h2>",
                  "<p>Random flips spread over the matrix; a targeted flip (one class moved into one other) "
                  "lights one cell.</p>",
                  plots.pair_matrix(names, ds.y[relabel],
                                    np.array([code[str(v)] for v in f["suggested_label"].to_numpy(object)[relabel]]))]
    parts += ["<h2>Per class</h2>", plots.class_bars(names, rows, per_class_flagged),
              "<h2>Where the flagged rows sit</h2>",
              plots.projection(report.representation.features, ds.y, flagged)]
    order = np.argsort(-score, kind="stable")
    top = order[: min(32, int(flagged.sum()))]
    if ds.kind == "image" and len(top):
        images = np.asarray(ds.features)[top]
        captions = [f"row {i}: {f['label'].iloc[i]}" + (f"→{f['suggested_label'].iloc[i]}"
                    if f["suggested_label"].iloc[i] != "" else "") for i in top]
        parts += ["<h2>Most suspicious images</h2>", plots.image_grid(images, captions)]
    shown = f.iloc[order][["row", "row_id", "label", "score", "flagged", "severity", "kinds", "suggested_label",
                           "action", "reasons"]]
    parts += ["<h2>Most suspicious rows</h2>", table(shown[shown["flagged"]] if flagged.any() else shown, 50)]
    noted = f[f["severity"] == "note"]
    parts += ["<h2>Data-quality notes</h2>",
              f"<p>{len(noted)} rows are unusual for this data without any sign of poisoning; nothing is done "
              "to them. They are worth a look when cleaning data.</p>",
              table(noted[["row", "row_id", "label", "notes"]], 50) if len(noted) else ""]
    if changes is not None:
        parts += ["<h2>What sanitization changed, and why</h2>",
                  kpis(changes["action"].value_counts().to_dict()), table(changes, 200)]
    return page(f"mithridate scan: {s['data']}", "".join(parts))


def write_scan_report(report: Report, out: str | Path, changes: pd.DataFrame | None = None) -> dict[str, Path]:
    """``findings.csv`` and ``summary.json`` (:meth:`Report.write`) and ``report.html`` into ``out``."""
    from pathlib import Path

    paths = report.write(out)
    paths["report"] = write_page(Path(out) / "report.html", render_scan_report(report, changes))
    return paths
