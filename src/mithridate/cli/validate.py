"""``mithridate baseline`` and ``mithridate validate``: gate each new batch against verified data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mithridate.cli.app import app, check_writable, console, refuse_overwriting, status, user_errors
from mithridate.errors import DataError

EXIT_FAIL = 1


@app.command()
def baseline(
    data: Annotated[str, typer.Argument(help="Verified data: CSV/TSV, Parquet, .npz, image folder, or demo:NAME.")],
    out: Annotated[Path, typer.Option("--out", help="Baseline file to write: .json or .parquet.")],
    label: Annotated[str | None, typer.Option("--label", help="Label column (tables).")] = None,
    sample_size: Annotated[int, typer.Option(help="Rows kept for the two-sample tests.")] = 10_000,
    chunk_rows: Annotated[int, typer.Option(help="Rows read at a time (CSV/Parquet stream).")] = 100_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Profile verified data into a baseline file: column distributions (quantile sketches, level
    frequencies, missing rates, ranges), correlations, class balance, per-class summaries, a row sample and a
    small label model. CSV and Parquet are streamed, so memory does not grow with rows."""
    from mithridate.validate.profile import profile_file

    with user_errors():
        refuse_overwriting([data], {"--out": out})
        check_writable("--out", out)
        if out.suffix.lower() not in (".json", ".parquet", ".pq"):
            raise DataError(f"{out}: write the baseline as .json or .parquet")
        if sample_size < 10 or chunk_rows < 1:
            raise DataError("--sample-size must be at least 10 and --chunk-rows at least 1")
        with status(f"profiling {data}"):
            prof = profile_file(data, label, sample_size=sample_size, chunk_rows=chunk_rows, random_state=seed)
            prof.save(out)
    console.print(f"profiled {prof.n_rows} rows: {len(prof.numeric)} numeric and {len(prof.categorical)} "
                  f"categorical columns, {len(prof.classes)} classes")
    console.print(f"wrote {out}")


def _read_batch(path: str, label: str | None, profile):
    """A Dataset when the batch has labels, else a DataFrame of features."""
    import pandas as pd

    from mithridate.data import data_format, load, table_dataset

    if not path.startswith("demo:") and Path(path).exists() and data_format(path) in ("csv", "parquet"):
        p = Path(path)
        try:
            frame = (pd.read_parquet(p) if data_format(p) == "parquet"
                     else pd.read_csv(p, sep="\t" if p.suffix.lower() == ".tsv" else ","))
        except Exception as exc:
            raise DataError(f"{p}: cannot read: {str(exc).splitlines()[0]}") from exc
        frame = frame.set_axis([str(c) for c in frame.columns], axis=1)
        if frame.empty:
            raise DataError(f"{p}: the table has no rows")
        label = label or profile.label_name
        if label is not None and label in frame.columns:
            return table_dataset(frame, label, name=p.name)
        return frame
    return load(path, label)


@app.command()
def validate(
    new: Annotated[str, typer.Argument(help="The new batch (same format as the baseline's data).")],
    baseline: Annotated[Path, typer.Option("--baseline", help="Baseline file from `mithridate baseline`.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for verdict.json, report.html, rows_removed.csv.")],
    policy: Annotated[Path | None, typer.Option("--policy", help="YAML policy (default: built-in).")] = None,
    label: Annotated[str | None, typer.Option("--label", help="Label column (default: the baseline's).")] = None,
    clean_out: Annotated[Path | None, typer.Option("--clean-out",
                                                   help="Write the batch without the removed rows here.")] = None,
    html: Annotated[bool, typer.Option("--html/--no-html", help="Write report.html.")] = True,
) -> None:
    """Test a new batch against a baseline: per-column, multivariate and label tests with multiple-testing
    control, row-level sanitization, and a verdict. Exit status 0 when the batch passes (or only warns),
    1 when it fails the gate, 2 on bad input."""
    from mithridate.data import Dataset, save
    from mithridate.report.validation import write_validation_report
    from mithridate.validate import Gate, Policy, Profile

    with user_errors():
        refuse_overwriting([new, baseline, policy], {
            "--clean-out": clean_out, "--out": out,
            **{f"--out ({name})": out / name for name in ("verdict.json", "rows_removed.csv", "report.html",
                                                         "quarantine.csv", "quarantine.npz")}})
        check_writable("--out", out, folder=True)
        check_writable("--clean-out", clean_out)
        prof = Profile.load(baseline)
        rules = Policy.load(policy) if policy is not None else Policy()
        batch = _read_batch(new, label, prof)
        with status(f"validating {new}"):
            gate = Gate(rules)
            verdict = gate.check(prof, batch)
            paths = (write_validation_report(verdict, out, prof, gate.prepared_) if html else verdict.write(out))
            if verdict.quarantined is not None and isinstance(batch, Dataset):
                suffix = ".npz" if batch.kind == "image" else ".csv"
                paths["quarantine"] = save(verdict.quarantined, out / f"quarantine{suffix}")
            if clean_out is not None:
                if not isinstance(batch, Dataset):
                    raise DataError("--clean-out needs a labelled batch")
                if verdict.clean is None:
                    raise DataError("every row of the batch was removed; nothing to write to --clean-out")
                paths["clean"] = save(verdict.clean, clean_out)
    print_verdict(verdict)
    for name, path in paths.items():
        console.print(f"{name}: {path}")
    if verdict.verdict == "fail":
        raise typer.Exit(EXIT_FAIL)


def print_verdict(verdict) -> None:
    colors = {"pass": "green", "warn": "yellow", "fail": "red"}
    s = verdict.summary
    console.print(f"[bold {colors[verdict.verdict]}]{verdict.verdict.upper()}[/]: {s['failed']} of {s['tests']} "
                  f"tests failed, {s['rows_removed']} of {s['rows']} rows removed", highlight=False)
    frame = verdict.table.head(8)
    table = Table(title="most significant tests")
    for col in ("test", "p", "adjusted p", "effect", "passed"):
        table.add_column(col)
    for _, r in frame.iterrows():
        p = "" if r["p_value"] is None else f"{r['p_value']:.3g}"
        pa = "" if r["p_adjusted"] is None else f"{r['p_adjusted']:.3g}"
        table.add_row(r["name"], p, pa, f"{r['effect']} {r['effect_size']:.3g}", "yes" if r["passed"] else "NO")
    console.print(table)
    for reason in verdict.reasons[:10]:
        console.print(f"- {reason}", highlight=False)
