"""``mithridate attack``: poison a copy of a dataset, write it with the ground truth, optionally measure it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mithridate.cli.app import app, check_writable, console, refuse_overwriting, status, user_errors
from mithridate.cli.scan import IdOpt, LabelOpt, SourceOpt
from mithridate.data import atomic_path, data_format, load, save
from mithridate.errors import DataError

KINDS_HELP = """Poison a copy of DATA (CSV/TSV, Parquet, .npz, image folder, or demo:NAME) with attack KIND and
write it to OUT in the input's format, plus TRUTH, a CSV with columns row,poisoned.

KIND is one of:

* **flip**: random label flips; --rate of all rows get a random other label.
* **targeted-flip**: --rate of the --source class's rows are relabelled --target.
* **adversarial-flip**: the --rate of label flips that hurt a model most (greedy, ALFA-style).
* **patch**: BadNets backdoor (images); a --size x --size patch at --location, relabelled --target.
* **blend**: backdoor (images); a random pattern blended in with opacity --alpha, relabelled --target.
* **feature**: backdoor (tables); rare values in --columns, relabelled --target.
* **feature-collision**: Poison Frogs (images, clean-label); --rate of rows of class --target are perturbed
  so that one instance of class --source is classified as --target.
* **clean-label-backdoor**: label-consistent backdoor (images); --rate of the --target class's rows get a
  PGD perturbation (at most --eps of the value range) and a patch trigger.
"""



@app.command(help=KINDS_HELP)
def attack(
    kind: Annotated[str, typer.Argument(help="The attack (see above).", show_default=False)],
    data: Annotated[str, typer.Argument(help="CSV/TSV, Parquet, .npz, image folder, or demo:NAME.")],
    out: Annotated[Path, typer.Option("--out", help="The poisoned copy, in the input's format.")],
    truth: Annotated[Path, typer.Option("--truth", help="CSV of the ground truth (row, poisoned).")],
    label: LabelOpt = None,
    source_col: SourceOpt = None,
    id_col: IdOpt = None,
    rate: Annotated[float | None, typer.Option(help="Share of rows to poison (default: the attack's).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    target: Annotated[str | None, typer.Option(help="Target class (name or code).")] = None,
    source: Annotated[str | None, typer.Option(help="Source class (targeted-flip, feature-collision).")] = None,
    size: Annotated[int | None, typer.Option(help="Patch side in pixels (patch, clean-label-backdoor).")] = None,
    location: Annotated[str | None, typer.Option(help="Patch place: bottom-right, top-left, center, ...")] = None,
    alpha: Annotated[float | None, typer.Option(help="Blend opacity in (0, 1) (blend).")] = None,
    columns: Annotated[str | None, typer.Option(help="Comma-separated trigger columns (feature).")] = None,
    eps: Annotated[float | None, typer.Option(help="PGD budget, share of the value range "
                                              "(clean-label-backdoor).")] = None,
    evaluate: Annotated[bool, typer.Option("--evaluate/--no-evaluate", help="Split the data, train the "
                                           "reference model on clean and poisoned rows, print accuracies "
                                           "and attack success.")] = False,
    test_size: Annotated[float, typer.Option(help="Test share when evaluating.")] = 0.25,
) -> None:
    from mithridate.attacks import make_attack
    from mithridate.attacks.evaluate import evaluate_split
    from mithridate.data.io import check_output_format

    options = {
        "rate": rate, "target": target, "source": source, "size": size, "location": location, "alpha": alpha,
        "columns": None if columns is None else [c.strip() for c in columns.split(",") if c.strip()], "eps": eps,
    }
    with user_errors():
        poison = make_attack(kind, random_state=seed, **{k: v for k, v in options.items() if v is not None})
        if not 0 < test_size < 1:
            raise DataError(f"--test-size must be in (0, 1), got {test_size}")
        check_paths(data, out, truth)
        dataset = load(data, label, source=source_col, row_id=id_col)
        check_output_format(dataset, data, out)
        with status(f"{kind} attack on {dataset.name} ({dataset.n_rows} rows)") as update:
            poisoned = poison.poison(dataset)
            report = evaluate_split(dataset, poisoned, test_size, seed, update) if evaluate else None
            update("writing")
            with atomic_path(truth) as tmp:
                poisoned.truth().to_csv(tmp, index=False)
                save(poisoned.dataset, out)
    console.print(f"poisoned {poisoned.n_poisoned} of {dataset.n_rows} rows with {kind}"
                  + "".join(f"; {k} {v}" for k, v in describe(poisoned).items()))
    if report is not None:
        print_report(report)
    console.print(f"wrote {out}\nwrote {truth}")


def check_paths(data: str, out: Path, truth: Path) -> None:
    if truth.suffix.lower() != ".csv":
        raise DataError(f"--truth must be a .csv file, got {truth}")
    if out.resolve() == truth.resolve():
        raise DataError("--out and --truth must be different files")
    refuse_overwriting([data], {"--out": out, "--truth": truth})
    check_writable("--out", out, folder=data_format(out) == "folder")
    check_writable("--truth", truth)


def describe(poisoned) -> dict:
    info = poisoned.info
    classes = poisoned.dataset.classes
    out = {}
    if "target_class" in info:
        out["target instance"] = f"row {info['target_index']} (class {classes[info['target_class']]})"
    if "target" in info:
        out["target class"] = classes[info["target"]]
    if "source" in info:
        out["source class"] = classes[info["source"]]
    return out


def print_report(report) -> None:
    retrained = "last layer only, on frozen features" if report.retrain == "head" else "end to end"
    table = Table(title="Reference model on the clean test set", caption=f"retrained {retrained}")
    for col in ("trained on", "accuracy", "attack success"):
        table.add_column(col, justify="right")

    def pct(v):
        return "-" if v is None else f"{v:.1%}"

    table.add_row("clean data", pct(report.clean_accuracy), pct(report.clean_success_rate))
    table.add_row("poisoned data", pct(report.poisoned_accuracy), pct(report.attack_success_rate))
    console.print(table)
    console.print(f"accuracy drop: {report.accuracy_drop * 100:.1f} points")
