"""The attack x defence matrix's ``report.html``: the worst case per defence at a glance, then every cell."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mithridate.report import plots
from mithridate.report.page import kpis, page, table, write_page

if TYPE_CHECKING:
    from pathlib import Path

    from mithridate.harden.matrix import Matrix


def worst_case_bars(worst: pd.DataFrame, clean: pd.DataFrame) -> str:
    """Per defence: clean accuracy (no attack); the worst attack success of each backdoor or targeted flip
    (lower is better); the worst accuracy under each untargeted flip (higher is better)."""
    defences = list(dict.fromkeys(clean.defence))
    targeted = [a for a in dict.fromkeys(worst.attack) if worst[worst.attack == a].attack_success.notna().any()]
    untargeted = [a for a in dict.fromkeys(worst.attack) if a not in targeted]
    panels = [("No attack: accuracy (higher is better)", None, "accuracy")]
    panels += [("Worst attack success (lower is better)", targeted, "attack_success")] if targeted else []
    panels += [("Worst accuracy under flips (higher is better)", untargeted, "accuracy")] if untargeted else []
    fig, axes = plots.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    x = np.arange(len(defences))
    for ax, (title, attacks, column) in zip(axes[0], panels, strict=True):
        if attacks is None:
            ax.bar(x, clean.set_index("defence").loc[defences, column], color=plots.CLEAN_COLOR)
        else:
            width = 0.8 / len(attacks)
            for i, attack in enumerate(attacks):
                values = worst[worst.attack == attack].set_index("defence").reindex(defences)[column]
                ax.bar(x + (i - (len(attacks) - 1) / 2) * width, values.fillna(0), width, label=attack)
            ax.legend(fontsize=7)
        ax.set_xticks(x, defences, rotation=30, ha="right")
        ax.set(ylim=(0, 1), title=title)
        ax.title.set_fontsize(9)
    return plots.to_img(fig)


def render_evaluation_report(matrix: Matrix) -> str:
    cells, worst = matrix.cells, matrix.worst_case()
    clean = cells[cells.attack == "clean"]
    data = matrix.data
    best = worst.dropna(subset=["attack_success"]).groupby("defence").attack_success.max()
    parts = [
        kpis({"data": data["name"], "rows (train / test)": f"{data['train_rows']:,} / {data['test_rows']:,}",
              "cells": len(cells), "minutes": f"{matrix.seconds / 60:.1f}",
              "lowest worst-case attack success": f"{best.min():.1%} ({best.idxmin()})" if len(best) else "n/a"}),
        "<p>Every model is scored on the same clean test rows; attacks poison the training rows only. "
        "<b>Attack success</b>: triggered test rows of other classes sent to the target (backdoors), or the "
        "source class's test rows predicted as the target (targeted flips). The second round adapts each "
        "attack to the defence it faced: <i>evasive</i> withdraws the rows the scan flagged, <i>half rate</i> "
        "poisons half as many rows, <i>adversarial</i> picks the flips that hurt most.</p>",
        worst_case_bars(worst, clean),
        "<h2>Worst case per attack and defence</h2>", table(worst.round(3), max_rows=500),
        "<h2>No attack</h2>", table(clean.drop(columns=["attack", "adaptation"]).round(3).dropna(axis=1, how="all")),
        "<h2>Every cell</h2>", table(cells.round(3), max_rows=1000),
        f"<h2>To reproduce</h2><p><code>mithridate evaluate {html.escape(str(data['name']))} --config "
        "config.yaml</code> (the plan, seed included, is written beside this page).</p>",
    ]
    return page(f"Attack x defence matrix: {data['name']}", "".join(parts))


def write_evaluation_report(matrix: Matrix, out: Path) -> Path:
    return write_page(out / "report.html", render_evaluation_report(matrix))
