"""``mithridate harden`` and ``mithridate predict``: train a model that resists poison, and use it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import typer

from mithridate.cli.app import app, check_writable, console, refuse_overwriting, status, user_errors
from mithridate.cli.scan import LabelOpt
from mithridate.errors import DataError, MithridateError

DEFENCES = "none, trimmed, isolate, dpsgd, dpa, finite, bagging"


@app.command()
def harden(
    data: Annotated[str, typer.Argument(help="Training data: CSV/TSV, Parquet, .npz, image folder, or demo:NAME.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for model.safetensors, model.json, training.json.")],
    label: LabelOpt = None,
    defence: Annotated[str, typer.Option(help=f"Trainer: {DEFENCES}.")] = "dpa",
    partitions: Annotated[int, typer.Option(help="dpa, finite: partitions of the rows (members see 1/K of "
                                            "them each).")] = 50,
    spread: Annotated[int, typer.Option(help="finite: members each row's bucket trains.")] = 4,
    members: Annotated[int, typer.Option(help="bagging: networks, each on a random sample of --sample rows.")] = 50,
    sample: Annotated[int | None, typer.Option(help="bagging: rows each network draws (default: a fiftieth of the "
                                               "rows, at least 10). The certificate assumes the same number when "
                                               "the model is retrained: fix it.")] = None,
    epsilon: Annotated[float | None, typer.Option(help="dpsgd: the privacy budget epsilon the training spends "
                                                  "(default 3).")] = None,
    delta: Annotated[float | None, typer.Option(help="dpsgd: delta, below 1/rows (default 1e-5).")] = None,
    classes: Annotated[str | None, typer.Option(help="The classes, comma-separated: rows with any other label "
                                                "are set aside, so poison cannot add a class (default: the "
                                                "data's own, taken as given).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs per network (default: about 1,000 steps; dpsgd: "
                                               "60).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default 0). dpsgd and bagging draw theirs from the "
                                             "operating system unless given: a recorded seed lets anyone replay "
                                             "their noise and samples.")] = None,
) -> None:
    """Train a model on DATA that resists poisoned rows. `dpa` (the default) and `finite` certify each prediction: how
    many training rows could be inserted or removed without changing it; `bagging` certifies the vote of its
    random samples, with confidence 0.999 per prediction. `trimmed` sets aside the rows that
    networks which never saw them assign to another class (label flips) and trains on the rest. `dpsgd`
    trains with differential privacy (DP-SGD, Opacus) to --epsilon at --delta, bounding what any row can do. Writes
    OUT/model.safetensors, OUT/model.json (never pickle) and OUT/training.json (what was trained, the rows set
    aside, the certificate's settings)."""
    from mithridate.data import load
    from mithridate.harden import make_trainer, save

    with user_errors():
        written = ("model.safetensors", "model.json", "training.json")
        refuse_overwriting([data], {"--out": out, **{f"--out ({n})": out / n for n in written}})
        check_writable("--out", out, folder=True)
        drawn = defence in ("dpsgd", "bagging")
        options = {"epochs": epochs, "random_state": seed if seed is not None else (None if drawn else 0),
                   "classes": None if classes is None else [c.strip() for c in classes.split(",")]}
        if defence in ("dpa", "finite"):
            options["partitions"] = partitions
        if defence == "finite":
            options["spread"] = spread
        if defence == "bagging":
            options.update(members=members, sample=sample)
        elif sample is not None:
            raise MithridateError("--sample is a setting of --defence bagging")
        if defence == "dpsgd":
            options.update({k: v for k, v in (("epsilon", epsilon), ("delta", delta)) if v is not None})
        elif epsilon is not None or delta is not None:
            raise MithridateError("--epsilon and --delta are settings of --defence dpsgd")
        trainer = make_trainer(defence, **options)
        dataset = load(data, label)
        with status(f"training {defence} on {dataset.n_rows:,} rows"):
            trainer.fit(dataset)
        save(trainer, out)
    members, aside = trainer.report_["members"], trainer.report_["set_aside"]
    note = (" (set aside: " + "; ".join(f"{n:,} {why}" for why, n in aside.items() if n) + ")"
            if any(aside.values()) else "")
    rows, trained = trainer.report_["rows"], trainer.report_.get("rows_trained", trainer.report_["rows"])
    on = f"{trained:,} of {rows:,} rows" if trained != rows else f"{rows:,} rows"
    privacy = trainer.report_.get("privacy")
    if privacy:
        note += f" with epsilon {privacy['epsilon_spent']:.2f} at delta {privacy['delta']:g}"
    typer.echo(f"trained {defence} ({members} network{'s' * (members > 1)}) on {on}{note}; wrote "
               f"{out / 'model.safetensors'}, model.json and training.json")


def prediction_features(data: str, model) -> pd.DataFrame | np.ndarray:
    """What the model reads from DATA: a table's columns (any label column is ignored) or the images."""
    from mithridate.data import data_format, load, read_table

    if model.kind_ == "table" and not data.startswith("demo:"):
        path = Path(data)
        if not path.exists():
            raise DataError(f"{path}: no such file or folder")
        if data_format(path) in ("folder", "npz"):
            raise DataError(f"{data}: the model was trained on a table, not images")
        table = read_table(path, path.name)
        table.columns = [str(c) for c in table.columns]
    else:
        table = load(data).features
    needed = {c["name"] for m in model.members_ for c in m.encoder.get("columns", [])}
    if model.kind_ == "table" and not isinstance(table, pd.DataFrame):
        raise DataError(f"{data}: the model was trained on a table, not images")
    if model.kind_ == "image" and isinstance(table, pd.DataFrame):
        raise DataError(f"{data}: the model was trained on images, not a table")
    missing = sorted(needed - set(getattr(table, "columns", [])))
    if missing:
        raise DataError(f"{data}: lacks the column(s) the model reads: {', '.join(missing[:5])}")
    if model.kind_ == "image":
        shape = tuple(model.members_[0].encoder["shape"])
        if tuple(np.shape(table)[1:]) != shape:
            raise DataError(f"{data}: images of shape {np.shape(table)[1:]}, the model reads {shape}")
    return table


def input_warnings(features, model) -> list[str]:
    """What a model would silently misread: numeric columns whose cells do not read as numbers (they
    would be imputed), and images outside the value range the model was trained on."""
    warnings = []
    if isinstance(features, pd.DataFrame):
        numeric = {c["name"] for m in model.members_ for c in m.encoder.get("columns", []) if c["type"] == "number"}
        for name in sorted(numeric):
            col = features[name]
            bad = int((pd.to_numeric(col, errors="coerce").isna() & col.notna()).sum())
            if bad:
                warnings.append(f"column {name!r}: {bad:,} values do not read as numbers and are treated as missing")
        return warnings
    lo = min(m.encoder["lo"] for m in model.members_)
    hi = max(m.encoder["hi"] for m in model.members_)
    x = np.asarray(features, dtype=np.float64)
    slack = 0.01 * (hi - lo)
    if x.min() < lo - slack or x.max() > hi + slack or x.max() < lo + 0.1 * (hi - lo):
        warnings.append(f"the images range over [{x.min():g}, {x.max():g}]; the model was trained on "
                        f"[{lo:g}, {hi:g}]: rescale them first")
    return warnings


@app.command()
def predict(
    model_dir: Annotated[Path, typer.Argument(help="A folder written by `mithridate harden`.")],
    data: Annotated[str, typer.Argument(help="Rows to predict: CSV/TSV, Parquet, .npz, image folder, demo:NAME.")],
    out: Annotated[Path, typer.Option("--out", help="CSV to write: row,prediction[,certified_radius].")],
) -> None:
    """Predict DATA with a hardened model. Certified models add each prediction's certified radius (training
    rows that could be inserted or removed without changing it). A model folder that is missing, altered or
    of another format is refused (exit 2)."""
    from mithridate.data import atomic_path
    from mithridate.harden import load

    with user_errors():
        refuse_overwriting([data, model_dir], {"--out": out})
        check_writable("--out", out)
        model = load(model_dir)
        features = prediction_features(data, model)
        if len(features) == 0:
            raise DataError(f"{data}: no rows to predict")
        for warning in input_warnings(features, model):
            console.print(f"warning: {warning}", highlight=False)
        try:
            pred, radius = model.certify(features) if model.certified else (model.predict(features), None)
        except (KeyError, IndexError, TypeError, ValueError) as error:
            raise DataError(f"{model_dir}: the model cannot read these rows ({error.__class__.__name__}: "
                            f"{error})"[:300]) from None
        names = np.asarray(model.classes_, dtype=object)[pred]
        table = pd.DataFrame({"row": np.arange(len(pred)), "prediction": names})
        if radius is not None:
            table["certified_radius"] = radius
        with atomic_path(out) as tmp:
            table.to_csv(tmp, index=False)
    extra = f"; median certified radius {int(np.median(radius))}" if radius is not None else ""
    console.print(f"predicted {len(pred):,} rows{extra}; wrote {out}", highlight=False)


@app.command()
def evaluate(
    data: Annotated[str, typer.Argument(help="Data to attack and defend: CSV/TSV, Parquet, .npz, image folder, or "
                                        "demo:NAME.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for matrix.csv, matrix.json, report.html, config.yaml.")],
    label: LabelOpt = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML plan: attacks, defences, seed, ... (default: "
                                                "backdoors and flips against none, scan, trimmed, isolate and dpa; "
                                                "OUT/config.yaml holds the plan that ran).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed of the split, attacks and training (default: the "
                                             "config's, else 0).")] = None,
) -> None:
    """Attack DATA with each attack of the plan and train behind each defence: the attack x defence matrix.
    One fixed split; attacks poison the training part, every model is scored on the clean test part for
    accuracy and attack success (plus the scan's precision and recall, and certified accuracy at several
    radii). A second round adapts each attack to the defence it faced (withdrawing the rows a scan caught,
    half the rate, adversarial flips) and the worst case per defence is reported. Writes OUT/matrix.csv,
    OUT/matrix.json, OUT/report.html and OUT/config.yaml (rerun with --config to reproduce)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from mithridate.data import load
    from mithridate.harden.matrix import Plan, default_plan
    from mithridate.harden.matrix import evaluate as run_matrix
    from mithridate.report.evaluation import write_evaluation_report

    with user_errors():
        written = ("matrix.csv", "matrix.json", "report.html", "config.yaml")
        refuse_overwriting([data, config], {"--out": out, **{f"--out ({n})": out / n for n in written}})
        check_writable("--out", out, folder=True)
        dataset = load(data, label)
        plan = read_plan(config) if config is not None else default_plan(dataset)
        if seed is not None:
            plan = Plan.from_dict({**plan.as_dict(), "seed": seed})
        plan.check(dataset)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as bar:
            task = bar.add_task("evaluating", total=plan.cells_at_most())
            matrix = run_matrix(dataset, plan, progress=lambda m: bar.update(task, advance=1, description=m))
        matrix.write(out)
        write_evaluation_report(matrix, out)
    worst = matrix.worst_case()
    lines = worst.dropna(subset=["attack_success"]).groupby("defence", sort=False).attack_success.max()
    summary = "; ".join(f"{d} {s:.0%}" for d, s in lines.items())
    typer.echo(f"evaluated {len(matrix.cells)} cells in {matrix.seconds / 60:.1f} min"
               + (f"; worst attack success per defence: {summary}" if summary else "")
               + f"; wrote {out / 'matrix.csv'}, matrix.json, report.html and config.yaml")


def read_plan(path: Path):
    """The plan in a YAML config file; one line for a file that is missing or not a plan."""
    import yaml

    from mithridate.harden.matrix import Plan

    if not path.is_file():
        raise DataError(f"{path}: no such config file")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not YAML ({str(exc).splitlines()[0]})") from None
    try:
        return Plan.from_dict(config)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
