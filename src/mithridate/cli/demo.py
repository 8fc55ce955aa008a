"""``mithridate demo``: the main job on built-in data, end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mithridate.cli.app import app, check_writable, console, status, user_errors


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the report and the data sets.")] = Path("demo-out"),
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Poison scikit-learn's digits with a patch backdoor and label flips, scan it, sanitize it, retrain,
    and compare the models trained on clean, poisoned and sanitized data."""
    from mithridate.demo import run_demo

    with user_errors():
        check_writable("--out", out, folder=True)
    with user_errors(), status("mithridate demo") as update:
        results = run_demo(out, seed=seed, progress=update)
    det = results["detection"]["all"]
    console.print(f"poisoned {results['poisoned_rows']} of {results['rows']} training rows "
                  "(5% patch backdoor to class 0, 5% random label flips)")
    table = Table(title="Detection")
    for col in ("precision", "recall", "flagged", "poisoned"):
        table.add_column(col, justify="right")
    table.add_row(f"{det['precision']:.3f}", f"{det['recall']:.3f}", str(det["flagged"]), str(det["poisoned"]))
    console.print(table)
    for attack, d in results["detection"].items():
        if attack != "all":
            console.print(f"  recall on {attack} rows: {d['recall']:.3f}")
    rel = results["relabelled"]
    console.print(f"  relabelled {rel['rows']} rows, {rel['restored_original_label']} to their original label")
    models = Table(title="Model trained on ... (evaluated on the clean test set)")
    for col in ("training set", "accuracy", "attack success rate"):
        models.add_column(col, justify="right")
    for name, m in results["models"].items():
        models.add_row(name, f"{m['accuracy']:.3f}", f"{m['attack_success_rate']:.3f}")
    console.print(models)
    console.print(f"report: {out / 'report.html'}  findings: {out / 'findings.csv'}")
