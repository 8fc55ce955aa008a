"""``mithridate monitor``: watch a deployed model's inputs as a stream, with alarms calibrated to an
expected number of events between false alarms."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mithridate.cli.app import app, check_writable, console, refuse_overwriting, status, user_errors
from mithridate.errors import DataError

monitor_app = typer.Typer(rich_markup_mode="markdown", no_args_is_help=True,
                          help="Monitor a live stream against verified data; alarms calibrated to an expected "
                          "run length between false alarms (ERT).")
app.add_typer(monitor_app, name="monitor")
WRITTEN = ("alarms.csv", "summary.json")


@monitor_app.command("replay")
def replay_cmd(
    stream: Annotated[str, typer.Argument(help="The stream: a CSV/TSV or Parquet table, one event per row, in "
                                          "time order.")],
    reference: Annotated[Path, typer.Option("--reference", help="Baseline of verified data, from "
                                            "`mithridate baseline` (.json or .parquet).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for alarms.csv and summary.json.")],
    ert: Annotated[float, typer.Option(help="Expected number of events between false alarms.")] = 1000,
    shift: Annotated[float, typer.Option(help="Mean shift, in standard deviations, the charts are tuned to "
                                         "detect fastest.")] = 0.5,
    prediction: Annotated[str | None, typer.Option(help="Column with the model's predicted class, in the baseline "
                                                   "and the stream: also watch the error rate on the rows whose "
                                                   "label has arrived.")] = None,
    label: Annotated[str | None, typer.Option(help="The stream's column where labels arrive (default: the "
                                              "baseline's label column); with --prediction.")] = None,
    agreement: Annotated[str | None, typer.Option(help="Column with a trusted reference model's predicted class, "
                                                  "in the baseline and the stream: also watch how often the served "
                                                  "prediction (--prediction) disagrees with it.")] = None,
    kernel: Annotated[bool, typer.Option("--kernel", help="Also watch the rows' joint distribution (random "
                                         "Fourier features): a broken join, a correlation that moved.")] = False,
    chunk_rows: Annotated[int, typer.Option(help="Rows read at a time.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Random seed of the calibration.")] = 0,
) -> None:
    """Feed STREAM row by row to the default monitor (a per-feature CUSUM bank on the baseline's encoding,
    its threshold calibrated by simulation so false alarms come every ERT events on average) and write
    OUT/alarms.csv (`row,detector,signal,statistic,threshold,severity`) and OUT/summary.json
    (`first_alarm_row`, `events_per_second`, `ert`, ...). With `--prediction`, an error-rate chart reads
    the rows whose label (the baseline's label column) is filled in. Exit 0 whether or not it alarms: it is a report,
    not a gate. Rows must be in time order and not sorted by any column (sorted rows alarm at once)."""
    from mithridate.data import atomic_path
    from mithridate.monitor.replay import replay
    from mithridate.validate.profile import Profile

    with user_errors():
        refuse_overwriting([stream, reference], {"--out": out, **{f"--out ({n})": out / n for n in WRITTEN}})
        check_writable("--out", out, folder=True)
        if ert < 10:
            raise DataError(f"--ert must be at least 10 events, got {ert:g}")
        if shift <= 0 or chunk_rows < 1:
            raise DataError("--shift must be > 0 and --chunk-rows at least 1")
        if not Path(stream).is_file():
            raise DataError(f"{stream}: no such file")
        profile = Profile.load(reference)
        with status(f"calibrating to ERT {ert:g} and replaying {stream}") as say:
            result = replay(stream, profile, ert=ert, shift=shift, chunk_rows=chunk_rows, prediction=prediction,
                            on_chunk=lambda rows: say(f"{rows:,} rows"), random_state=seed, label=label,
                            agreement=agreement, kernel=kernel)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "alarms.csv") as tmp:
        result.alarms_frame().to_csv(tmp, index=False)
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(result.summary(), indent=2))
    first = result.first_alarm_row
    console.print(f"{result.events:,} events, {len(result.alarms)} alarms"
                  + (f", the first at row {first}: {result.alarms[0].signal}" if first is not None else "")
                  + f"; {result.summary()['events_per_second']:,} events/s; wrote {out / 'alarms.csv'} and "
                  f"{out / 'summary.json'}", highlight=False)


@monitor_app.command("serve")
def serve_cmd(
    reference: Annotated[Path, typer.Option("--reference", help="Baseline of verified data, from "
                                            "`mithridate baseline` (.json or .parquet).")],
    ert: Annotated[float, typer.Option(help="Expected number of events between false alarms.")] = 10_000,
    rules: Annotated[Path | None, typer.Option("--rules", help="Alert rules and receivers (YAML; see "
                                               "docs/monitor.md). Default: one page-severity alert per "
                                               "incident, to the log.")] = None,
    vault: Annotated[str | None, typer.Option("--vault", envvar="MITHRIDATE_VAULT", help="Vault folder or https:// "
                                              "URL (CA bundle in $MITHRIDATE_VAULT_CA): its tokens guard the "
                                              "service, its registry takes rollbacks.")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 9464,
    cert: Annotated[Path | None, typer.Option(help="TLS certificate chain (PEM).")] = None,
    key: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
    insecure_http: Annotated[bool, typer.Option("--insecure-http", help="Serve plain HTTP (local testing "
                                                "only).")] = False,
) -> None:
    """Serve the live monitor: POST /events, GET /metrics (Prometheus), POST /alertmanager (Alertmanager's
    webhook: a firing alert labelled `action: rollback`, `model: MODEL@ALIAS` rolls that model back) and a
    live page at /."""
    from mithridate.monitor.alerts import load_rules

    with user_errors():
        if (cert is None or key is None) and not insecure_http:
            raise DataError("give --cert and --key (TLS), or --insecure-http to serve plain HTTP deliberately")
        if ert < 10:
            raise DataError(f"--ert must be at least 10 events, got {ert:g}")
        if rules is not None:
            load_rules(rules)  # a bad rules file is one line now, before calibrating
        from mithridate.monitor.service import run

        console.print(f"calibrating to ERT {ert:g}, then serving on {'https' if cert else 'http'}://{host}:{port}/")
        run(reference, ert=ert, rules=rules, vault_path=vault, host=host, port=port, cert=cert, key=key)
