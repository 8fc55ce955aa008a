"""``mithridate registry ...``: models with their training data, serving aliases, and the response that
rolls aliases back when a dataset version or a model turns out poisoned.

The registry lives in a vault, a folder or the vault's HTTPS service (``--vault PATH|URL`` or
``$MITHRIDATE_VAULT``; ``--token`` or ``$MITHRIDATE_TOKEN``), and shares its roles, storage and audit log.
Exit statuses are the vault's: 0 done, 1 integrity, 2 bad input or state, 3 denied.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mithridate.cli.app import app, console
from mithridate.cli.vault import JsonOpt, connected, emit, emit_json
from mithridate.errors import MithridateError

registry_app = typer.Typer(name="registry", no_args_is_help=True, rich_markup_mode="markdown", add_completion=False,
                           pretty_exceptions_enable=False,
                           help="Models with the dataset versions they were trained on, serving aliases, and "
                           "rollback: mark a dataset version poisoned and every alias serving a model it reached "
                           "moves back to the newest known-good model with a clean lineage.")
app.add_typer(registry_app, name="registry")

ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (kept in the audit log and the response).")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Show what would change; change nothing.")]


def _print_response(result: dict) -> None:
    what = "would" if result["dry_run"] else "did"
    for ref in result["marked"]:
        console.print(f"dataset {ref}: marked poisoned ({result['cause']})", highlight=False)
    reached = ", ".join(result["datasets_reached"]) or "none"
    console.print(f"dataset versions reached: {reached}", highlight=False)
    for ref, old in result["quarantined"].items():
        console.print(f"model {ref}: {old} -> quarantined", highlight=False)
    for m in result["moves"]:
        new = "NOTHING (no known-good version with a clean lineage is left)" if m["new"] is None else m["new"]
        console.print(f"alias {m['model']}@{m['alias']}: {m['old']} -> {new}", highlight=False)
    if not (result["marked"] or result["quarantined"] or result["moves"]):
        console.print("nothing to change: already responded", highlight=False)
    for ref in result["stranded"]:
        console.print(f"[bold red]ALERT[/]: {ref} serves nothing now; register and promote a clean model")
    if result["dry_run"]:
        console.print(f"dry run: this is what the response {what} change; nothing was written", highlight=False)
    elif result["response"]:
        console.print(f"response {result['response']} (undo: mithridate registry undo {result['response']})",
                      highlight=False)


@registry_app.command()
@connected
def add(
    v, token: str,
    model: Annotated[str, typer.Argument(help="Registered model name.")],
    file: Annotated[Path, typer.Argument(help="Weights: .safetensors, .onnx or .json (never a pickle).")],
    dataset: Annotated[list[str], typer.Option("--dataset", help="A dataset version it was trained on, "
                                               "DATASET@N (repeat for several).")],
    parent: Annotated[str | None, typer.Option("--parent", help="The model it was fine-tuned from, "
                                               "MODEL@N.")] = None,
    metrics: Annotated[Path | None, typer.Option("--metrics", help="JSON file of holdout metrics, "
                                                 '{"accuracy": 0.93}.')] = None,
) -> None:
    """Register a model version (a candidate); prints MODEL@N."""
    scores = None
    if metrics is not None:
        try:
            scores = json.loads(metrics.read_text())
        except ValueError as exc:
            raise MithridateError(f"{metrics}: not JSON ({exc})") from None
        if not isinstance(scores, dict):
            raise MithridateError(f'{metrics}: expected an object of metric names and numbers, {{"accuracy": 0.9}}')
    with open(file, "rb") as fh:
        emit(v.add_model(token, model, fh, file.name, dataset, parent=parent, metrics=scores))


@registry_app.command("list")
@connected
def list_models(
    v, token: str,
    model: Annotated[str | None, typer.Argument(help="Only this model's versions.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Model versions, their status and the data they were trained on."""
    rows = v.models(token, model)
    if as_json:
        return emit_json(rows)
    for r in rows:
        parent = f"\tfine-tuned from {r['parent']}" if r["parent"] else ""
        emit(f"{r['model']}\t{r['status']}\ttrained on {','.join(r['datasets'])}{parent}")


@registry_app.command()
@connected
def promote(v, token: str, model: Annotated[str, typer.Argument(help="MODEL@N.")], reason: ReasonOpt = "") -> None:
    """Mark a model version known-good (steward): a version rollbacks may return to."""
    v.promote(token, model, reason)
    console.print(f"{model}: known-good", highlight=False)


@registry_app.command()
@connected
def alias(
    v, token: str,
    model: Annotated[str, typer.Argument(help="Registered model name.")],
    name: Annotated[str, typer.Argument(help="Alias, e.g. champion.")],
    number: Annotated[int, typer.Argument(help="The version it serves.")],
) -> None:
    """Point an alias at a model version (deployer)."""
    move = v.set_alias(token, model, name, number)
    console.print(f"{model}@{name}: {move['old']} -> {move['new']}", highlight=False)


@registry_app.command()
@connected
def aliases(v, token: str, model: Annotated[str | None, typer.Argument()] = None, as_json: JsonOpt = False) -> None:
    """Aliases and the versions they serve."""
    rows = v.aliases(token, model)
    if as_json:
        return emit_json(rows)
    for r in rows:
        emit(f"{r['model']}@{r['alias']}\t{r['number'] if r['number'] is not None else 'NOTHING'}\t"
             f"by {r['updated_by']} at {r['updated']}")


@registry_app.command()
@connected
def resolve(v, token: str, ref: Annotated[str, typer.Argument(help="MODEL@ALIAS or MODEL@N.")]) -> None:
    """The model version an alias serves, with its status and the SHA-256 of its weights."""
    emit_json(v.resolve(token, ref))


@registry_app.command()
@connected
def derive(
    v, token: str,
    child: Annotated[str, typer.Argument(help="The derived dataset version, DATASET@N.")],
    parents: Annotated[list[str], typer.Option("--from", help="A version it was made from (repeat).")],
) -> None:
    """Record that a dataset version was made from others (features, joins, relabelling)."""
    result = v.derive(token, child, parents)
    console.print(f"{result['child']} derives from {', '.join(result['parents'])}", highlight=False)


@registry_app.command()
@connected
def lineage(
    v, token: str,
    ref: Annotated[str, typer.Argument(help="DATASET@N (what it reached) or model:MODEL@N (what it came "
                                       "from).")],
) -> None:
    """What a dataset version reached downstream, or where a model came from."""
    emit_json(v.lineage(token, ref))


@registry_app.command("quarantine-dataset")
@connected
def quarantine_dataset(
    v, token: str,
    refs: Annotated[list[str] | None, typer.Argument(help="Dataset versions, DATASET@N.")] = None,
    source: Annotated[str | None, typer.Option("--source", help="Instead: every version holding rows from this "
                                               "source (the vault's provenance).")] = None,
    reason: ReasonOpt = "",
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Mark dataset versions poisoned, quarantine every model they reached, roll each serving alias back."""
    result = v.quarantine_dataset(token, refs or None, source=source, reason=reason, dry_run=dry_run)
    return emit_json(result) if as_json else _print_response(result)


@registry_app.command()
@connected
def rollback(
    v, token: str,
    model: Annotated[str, typer.Argument(help="The bad model version, MODEL@N.")],
    reason: ReasonOpt = "",
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Quarantine a model version and its fine-tunes; move every alias serving one back."""
    result = v.rollback(token, model, reason=reason, dry_run=dry_run)
    return emit_json(result) if as_json else _print_response(result)


@registry_app.command()
@connected
def undo(v, token: str, response: Annotated[str, typer.Argument(help="Response id.")]) -> None:
    """Reverse a response: aliases go back (unless moved since), statuses and marks are restored."""
    result = v.undo(token, response)
    for m in result["restored"]:
        console.print(f"alias {m['model']}@{m['alias']}: {m['new']} -> {m['old']}", highlight=False)
    for m in result["moved_since"]:
        console.print(f"alias {m['model']}@{m['alias']}: left as it is (moved since the response)", highlight=False)


@registry_app.command()
@connected
def log(v, token: str, as_json: JsonOpt = False) -> None:
    """Responses so far: when, who, why, what moved (the full record is in `mithridate vault log`)."""
    rows = v.responses(token)
    if as_json:
        return emit_json(rows)
    for r in rows:
        moves = ", ".join(f"{m['model']}@{m['alias']} {m['old']}->{m['new']}" for m in r["moves"]) or "no alias moved"
        undone = f"\tundone by {r['undone_by']}" if r["undone_by"] else ""
        emit(f"{r['response']}\t{r['created']}\t{r['actor']}\t{r['cause']}\t{len(r['quarantined'])} model(s) "
             f"quarantined\t{moves}{undone}")


@registry_app.command("mlflow-sync")
@connected
def mlflow_sync(
    v, token: str,
    tracking_uri: Annotated[str, typer.Option("--tracking-uri", envvar="MLFLOW_TRACKING_URI",
                                              help="The MLflow registry to mirror into (e.g. sqlite:///mlflow.db, "
                                              "https://mlflow.example.org).")],
    as_json: JsonOpt = False,
) -> None:
    """Mirror models, statuses and aliases into an MLflow registry; after a rollback, MLflow's aliases move too."""
    from mithridate.vault.mlflow_mirror import sync

    result = sync(v, token, tracking_uri)
    if as_json:
        return emit_json(result)
    console.print(f"{len(result['created'])} version(s) mirrored, {len(result['updated'])} updated", highlight=False)
    for move in result["aliases_moved"]:
        console.print(f"MLflow alias {move['alias']} -> version {move['mlflow_version']}", highlight=False)
    for alias in result["aliases_removed"]:
        console.print(f"MLflow alias {alias} removed (it serves nothing here)", highlight=False)
