"""``mithridate scan`` and ``mithridate sanitize``: the main job."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.table import Table

from mithridate.cli.app import app, check_writable, console, refuse_overwriting, status, user_errors
from mithridate.data import atomic_path, data_format, load, save
from mithridate.errors import DataError

LabelOpt = Annotated[str | None, typer.Option("--label", help="Label column (tables).")]
SourceOpt = Annotated[str | None, typer.Option("--source-col", help="Column holding each row's provenance.")]
IdOpt = Annotated[str | None, typer.Option("--id-col", help="Column holding a stable row id.")]


@app.command()
def scan(
    data: Annotated[str, typer.Argument(help="CSV/TSV, Parquet, .npz, image folder, or demo:NAME.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for findings.csv, summary.json, report.html.")],
    label: LabelOpt = None,
    source_col: SourceOpt = None,
    id_col: IdOpt = None,
    embeddings: Annotated[Path | None, typer.Option(help="(n, d) .npy of your own embeddings to scan in.")] = None,
    model: Annotated[str | None, typer.Option(help="Your torch model as 'package.module:factory'.")] = None,
    weights: Annotated[Path | None, typer.Option(help="Its state dict as .safetensors.")] = None,
    layer: Annotated[str | None, typer.Option(help="Module name to read (default: penultimate).")] = None,
    detectors: Annotated[str | None, typer.Option(help="Comma-separated detector names (default: all).")] = None,
    folds: Annotated[int, typer.Option(help="Cross-validation folds for out-of-fold probabilities.")] = 5,
    fdr: Annotated[float, typer.Option(help="False discovery rate for data-quality notes (unusual rows).")] = 0.05,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    html: Annotated[bool, typer.Option("--html/--no-html", help="Write report.html.")] = True,
    engine: Annotated[str, typer.Option(help="Where the models are fitted: local (this process) or ray.")] = "local",
    address: Annotated[str | None, typer.Option(help="The Ray cluster's address, host:port or ray://host:port "
                                                 "(with --engine ray; default: RAY_ADDRESS, a cluster started "
                                                 "here with `ray start`, else a new local one).")] = None,
) -> None:
    """Scan a training set for poisoned rows (label flips, backdoors, conflicting copies) and note what is
    only unusual (outliers, broken correlations, tight groups, copies). Writes one row per input row to
    OUT/findings.csv (flagged, severity poison/suspect/note, reasons, notes, suggested_label, action, the
    data's fingerprint, ...), plus OUT/summary.json and OUT/report.html."""
    from mithridate.detect import Scan, make_detectors
    from mithridate.represent.user_model import load_user_model
    from mithridate.scale import make_engine

    with user_errors():
        runner = make_engine(engine, address)
        written = ("findings.csv", "summary.json", "report.html")
        refuse_overwriting([data, embeddings, weights], {"--out": out, **{f"--out ({n})": out / n for n in written}})
        check_writable("--out", out, folder=True)
        dataset = load(data, label, source=source_col, row_id=id_col)
        runner.connect()
        user_embeddings = None
        if embeddings is not None:
            try:
                user_embeddings = np.load(embeddings, allow_pickle=False)
            except Exception as exc:
                raise DataError(f"{embeddings}: cannot read embeddings as .npy: {exc}") from exc
            if not isinstance(user_embeddings, np.ndarray) or user_embeddings.ndim != 2:
                raise DataError(f"{embeddings}: embeddings are one (n, d) array in a .npy file (np.save), not "
                                f"{'an .npz archive' if not isinstance(user_embeddings, np.ndarray) else 'this shape'}")
        user_model = load_user_model(model, weights) if model else None
        chosen = make_detectors(detectors.split(","), dataset.kind) if detectors else None
        with status(f"scanning {dataset.name} ({dataset.n_rows} rows)") as update:
            result = Scan(chosen, embeddings=user_embeddings, model=user_model, layer=layer, folds=folds,
                          fdr=fdr, random_state=seed, engine=runner).fit(dataset, progress=update)
            update("writing the report")
            from mithridate.report import write_scan_report

            paths = write_scan_report(result.report_, out) if html else result.report_.write(out)
    print_summary(result.report_)
    for name, path in paths.items():
        console.print(f"{name}: {path}")


def print_summary(report) -> None:
    s = report.summary
    counts = s["severity"]
    table = Table(title=f"{s['data']}: {s['flagged']} of {s['rows']} rows flagged ({s['flagged_share']:.1%}: "
                        f"{counts['poison']} poison, {counts['suspect']} suspect); {counts['note']} notes")
    table.add_column("detector")
    table.add_column("flagged", justify="right")
    table.add_column("notes", justify="right")
    table.add_column("")
    for name, info in s["detectors"].items():
        table.add_row(name, str(info["flagged"]), str(info["notes"]),
                      f"abstained: {info['why']}" if info["abstained"] else "")
    console.print(table)


@app.command()
def sanitize(
    data: Annotated[str, typer.Argument(help="The data that was scanned (same file, same rows).")],
    findings: Annotated[Path, typer.Option(help="findings.csv written by `mithridate scan`.")],
    out: Annotated[Path, typer.Option("--out", help="Sanitized copy, in the input's format.")],
    policy: Annotated[str, typer.Option(help="drop | relabel | quarantine")] = "drop",
    quarantine: Annotated[Path | None, typer.Option(help="Where quarantined rows go "
                                                    "(default: OUT with .quarantine before its suffix).")] = None,
    label: LabelOpt = None,
    source_col: SourceOpt = None,
    id_col: IdOpt = None,
) -> None:
    """Act on a scan's findings: drop flagged rows, relabel them to the suggested label (dropping those
    without one), or quarantine them in a separate file. The input is never modified; every removed or
    changed row is listed with its reason in OUT's .changes.csv."""
    from mithridate.sanitize import read_findings
    from mithridate.sanitize import sanitize as apply_policy

    with user_errors():
        changes_path = out.with_name(f"{out.stem}.changes.csv")
        qpath = quarantine or out.with_name(f"{out.stem}.quarantine{out.suffix}")
        refuse_overwriting([data, findings], {"--out": out, "the changes file": changes_path,
                                              "--quarantine": qpath})
        for option, path in (("--out", out), ("--quarantine", qpath)):
            check_writable(option, path, folder=data_format(path) == "folder")
        dataset = load(data, label, source=source_col, row_id=id_col)
        result = apply_policy(dataset, read_findings(findings), policy)  # type: ignore[arg-type]
        written = [save(result.dataset, out)]
        with atomic_path(changes_path) as tmp:
            result.changes.to_csv(tmp, index=False)
        written.append(changes_path)
        if result.quarantined is not None:
            written.append(save(result.quarantined, qpath))
    counts = result.changes["action"].value_counts().to_dict()
    console.print(f"kept {result.dataset.n_rows} of {dataset.n_rows} rows; "
                  + (", ".join(f"{v} {k}" for k, v in counts.items()) or "nothing changed"))
    for path in written:
        console.print(f"wrote {path}")
