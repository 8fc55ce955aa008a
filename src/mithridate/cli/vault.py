"""``mithridate vault ...`` (the data vault) and ``mithridate serve`` (its HTTPS service).

The contract other tools script against: the vault is ``--vault PATH|URL`` or ``$MITHRIDATE_VAULT``,
the caller ``--token`` or ``$MITHRIDATE_TOKEN``. Commands that create something print only its id on
stdout (a token, an upload id, a version id); messages go to stderr. Exit status: 0 done; 1 the vault
failed verification or stored bytes did not authenticate; 2 bad input or state; 3 access denied (one
line saying why).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from mithridate.cli.app import app, console, fail, missing_extra
from mithridate.errors import MithridateError
from mithridate.vault.api import VaultAPI

EXIT_INTEGRITY = 1
EXIT_DENIED = 3

vault_app = typer.Typer(name="vault", no_args_is_help=True, rich_markup_mode="markdown", add_completion=False,
                        pretty_exceptions_enable=False,
                        help="The secure data vault: write-once, encrypted, audited storage for training data, "
                        "with an ingest gate (quarantine, checks, approval) and per-row provenance.")
user_app = typer.Typer(name="user", no_args_is_help=True, rich_markup_mode="markdown",
                       help="Users and their API tokens (admin).")
vault_app.add_typer(user_app, name="user")
app.add_typer(vault_app, name="vault")

VaultOpt = Annotated[str, typer.Option("--vault", envvar="MITHRIDATE_VAULT", show_envvar=True,
                                       help="Vault folder, or https:// URL of a vault service.")]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="MITHRIDATE_TOKEN", show_envvar=True,
                                              help="Your API token.")]
CaOpt = Annotated[Path | None, typer.Option("--ca", envvar="MITHRIDATE_VAULT_CA", show_envvar=True,
                                            help="CA bundle that signed the service's certificate.")]
CertOpt = Annotated[Path | None, typer.Option("--client-cert", envvar="MITHRIDATE_VAULT_CLIENT_CERT",
                                              help="Client certificate (mutual TLS).")]
KeyOpt = Annotated[Path | None, typer.Option("--client-key", envvar="MITHRIDATE_VAULT_CLIENT_KEY",
                                             help="Client certificate's private key (mutual TLS).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]


@contextlib.contextmanager
def vault_errors() -> Iterator[None]:
    """One line per failure; exit 3 when denied, 1 when stored bytes failed authentication, else 2."""
    from mithridate.vault.errors import AccessDenied, IntegrityError

    try:
        yield
    except AccessDenied as exc:
        raise fail(f"denied: {exc}", EXIT_DENIED) from None
    except IntegrityError as exc:
        raise fail(f"integrity: {exc}", EXIT_INTEGRITY) from None
    except MithridateError as exc:
        raise fail(str(exc)) from None
    except ModuleNotFoundError as exc:
        raise fail(missing_extra(exc)) from None
    except OSError as exc:
        raise fail(f"{exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}") from None


@contextlib.contextmanager
def opened(location: str, ca: Path | None = None, cert: Path | None = None, key: Path | None = None):
    from mithridate.vault import connect

    with vault_errors():
        if not location:
            raise MithridateError("name the vault with --vault PATH|URL or MITHRIDATE_VAULT")
        remote = location.startswith(("https://", "http://"))
        vault = connect(location, **({"ca": ca, "client_cert": cert, "client_key": key} if remote else {}))
        try:
            yield vault
        finally:
            vault.close()


CONNECTION = (("vault", VaultOpt, ""), ("token", TokenOpt, None), ("ca", CaOpt, None), ("client_cert", CertOpt, None),
              ("client_key", KeyOpt, None))
"""The options every command that talks to a vault takes, declared once (see :func:`connected`)."""


def connected(command):
    """A vault command written as ``command(v, token, ...)``: it runs with ``v`` opened (a folder or the
    HTTPS service, :class:`~mithridate.vault.api.VaultAPI`) inside :func:`vault_errors`, and its command line
    gains the :data:`CONNECTION` options."""
    import functools
    import inspect
    import typing

    hints = typing.get_type_hints(command, include_extras=True)
    own = [p.replace(annotation=hints.get(p.name, p.annotation))
           for p in inspect.signature(command).parameters.values() if p.name not in ("v", "token")]
    options = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)
               for name, kind, default in CONNECTION]

    @functools.wraps(command)
    def run(**kw):
        vault, token, ca, cert, key = (kw.pop(name) for name, _, _ in CONNECTION)
        with opened(vault, ca, cert, key) as v, vault_errors():
            return command(v, token, **kw)

    run.__signature__ = inspect.Signature(own + options, return_annotation=None)
    run.__annotations__ = {p.name: p.annotation for p in own + options}
    return run


def emit(value) -> None:
    """The one thing a command prints on stdout."""
    typer.echo(value)


def emit_json(value) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def _write_out(parts: Iterator[bytes], out: Path) -> int:
    """Write streamed bytes to ``out`` (``-``: stdout) atomically; nothing is left if the stream fails."""
    from mithridate.data import atomic_path

    size = 0
    if str(out) == "-":
        for part in parts:
            sys.stdout.buffer.write(part)
            size += len(part)
        sys.stdout.buffer.flush()
        return size
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        for part in parts:
            fh.write(part)
            size += len(part)
    return size


# --- the vault itself --------------------------------------------------------------------------------
@vault_app.command()
def init(
    path: Annotated[Path, typer.Argument(help="A new (or empty) folder for the vault.")],
    admin: Annotated[str, typer.Option(help="Name of the first admin.")] = "admin",
    checks: Annotated[str, typer.Option(help="Checks every upload gets: comma-separated from schema, scan, "
                                        "validate; or none.")] = "schema,scan",
    auto_approve: Annotated[bool, typer.Option("--auto-approve", help="Approve uploads whose checks all pass "
                                               "(as the principal 'policy').")] = False,
    key_env: Annotated[str | None, typer.Option(help="Take the master key (base64 of 32 bytes) from this "
                                                "environment variable instead of a key file.")] = None,
    db: Annotated[str | None, typer.Option(help="Catalog database URL (default: SQLite in the folder).")] = None,
    s3_bucket: Annotated[str | None, typer.Option(help="Store objects in this S3 bucket (Object Lock).")] = None,
    s3_endpoint: Annotated[str | None, typer.Option(help="S3 endpoint URL (default: AWS).")] = None,
    s3_prefix: Annotated[str, typer.Option(help="Key prefix inside the bucket.")] = "",
    s3_create_bucket: Annotated[bool, typer.Option(help="Create the bucket, with Object Lock enabled.")] = False,
    s3_retention_days: Annotated[int, typer.Option(help="Compliance-mode retention of each object.")] = 365,
    chunk_mb: Annotated[float, typer.Option(help="Chunk size in MiB.")] = 8.0,
    max_upload_mb: Annotated[float | None, typer.Option(help="Refuse uploads larger than this (MiB).")] = None,
) -> None:
    """Create a vault and print its first admin's token (shown once: keep it safe)."""
    from mithridate.vault.core import Vault

    storage = None
    if s3_bucket:
        storage = {"kind": "s3", "bucket": s3_bucket, "endpoint_url": s3_endpoint, "prefix": s3_prefix,
                   "retention_days": s3_retention_days, "create_bucket": s3_create_bucket}
    key = {"source": "env", "var": key_env} if key_env else None
    with vault_errors():
        vault, token = Vault.init(path, admin=admin, checks=checks, auto_approve=auto_approve, key=key, db_url=db,
                                  storage=storage, chunk_size=int(chunk_mb * (1 << 20)),
                                  max_upload_bytes=None if max_upload_mb is None else int(max_upload_mb * (1 << 20)))
        public_key = vault.config.public_key
        vault.close()
    console.print(f"vault created in {path}; the token below belongs to admin {admin!r} and is shown once")
    console.print(f"its public key: {public_key}\n(pin it where the vault is used: MITHRIDATE_VAULT_PUBLIC_KEY="
                  f"{public_key[:12]}...; a vault swapped for another is then refused)", highlight=False)
    if not key_env:
        console.print(f"master key: {path / 'keys' / 'master.key'} (move it off this disk for production: "
                      "see docs/vault.md)")
    if db and "@" in db and ":" in db.split("@")[0].split("//")[-1]:
        console.print("the database password is not stored in vault.json: set MITHRIDATE_VAULT_DB_PASSWORD "
                      "(or the whole URL in MITHRIDATE_VAULT_DB) wherever the vault is opened")
    emit(token)


@vault_app.command()
def migrate(
    vault: VaultOpt = "",
    db: Annotated[str | None, typer.Option(help="Catalog database URL (default: the vault's).")] = None,
) -> None:
    """Create or upgrade the catalog's database schema (after an upgrade, or for a new PostgreSQL)."""
    from mithridate.vault.core import Vault

    with vault_errors():
        Vault.open(vault, db_url=db, migrate=True).close()
    console.print("catalog schema is current")


# --- users ---------------------------------------------------------------------------------------------
@user_app.command("add")
@connected
def user_add(
    v: VaultAPI, token: str,
    name: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[list[str], typer.Option("--role", help="admin, steward, contributor, trainer, auditor or deployer "
                                            "(repeat for several).")],
) -> None:
    """Add a user and print their API token (shown once)."""
    emit(v.add_user(token, name, role))


@user_app.command("list")
@connected
def user_list(v: VaultAPI, token: str, as_json: JsonOpt = False) -> None:
    """List users and their roles."""
    users = v.users(token)
    if as_json:
        return emit_json(users)
    for u in users:
        emit(f"{u['name']}\t{','.join(u['roles'])}\t{'active' if u['active'] else 'revoked'}")


@user_app.command("revoke")
@connected
def user_revoke(v: VaultAPI, token: str, name: Annotated[str, typer.Argument()]) -> None:
    """Deactivate a user and revoke their tokens."""
    v.revoke_user(token, name)
    console.print(f"revoked {name}")


# --- ingest -------------------------------------------------------------------------------------------
@vault_app.command()
@connected
def put(
    v: VaultAPI, token: str,
    dataset: Annotated[str, typer.Argument(help="Dataset name.")],
    file: Annotated[Path, typer.Argument(help=".csv, .tsv, .parquet or .npz file.")],
    source: Annotated[str, typer.Option("--source", help="Where these rows come from (recorded per row).")],
    label: Annotated[str | None, typer.Option("--label", help="Label column (tables).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload a file into quarantine; the vault's checks run on it. Prints the upload id."""
    with open(file, "rb") as fh:
        result = v.put(token, dataset, fh, file.name, source=source, label=label)
    if as_json:
        return emit_json(result)
    for check in result["checks"]:
        console.print(f"check {check['name']}: {'passed' if check['passed'] else 'FAILED'}: {check['detail']}",
                      highlight=False)
    status = f"approved by policy as {result['version']}" if result["version"] else "quarantined"
    console.print(f"{result['rows']} rows {status}", highlight=False)
    emit(result["upload"])


@vault_app.command()
@connected
def uploads(
    v: VaultAPI, token: str,
    status: Annotated[str | None, typer.Option(help="quarantined, approved or rejected.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Only this dataset.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List uploads."""
    rows = v.uploads(token, status=status, dataset=dataset)
    if as_json:
        return emit_json(rows)
    for u in rows:
        checks = "checks passed" if u["checks_passed"] else "checks FAILED"
        emit(f"{u['id']}\t{u['dataset']}\t{u['status']}\t{u['rows']} rows\t{checks}\tsource={u['source']}\t"
             f"by {u['uploader']}")


@vault_app.command()
@connected
def upload(
    v: VaultAPI, token: str,
    upload_id: Annotated[str, typer.Argument(help="Upload id.")],
    out: Annotated[Path | None, typer.Option("--out", help="Also write its bytes here (steward).")] = None,
) -> None:
    """Show an upload (status, provenance, check results); with --out, fetch its bytes to review them."""
    info = v.upload(token, upload_id)
    if out is not None:
        _, parts = v.read_upload(token, upload_id)
        _write_out(parts, out)
    emit_json(info)


@vault_app.command()
@connected
def approve(
    v: VaultAPI, token: str,
    upload_id: Annotated[str, typer.Argument(help="Upload id.")],
    force: Annotated[bool, typer.Option("--force", help="Approve although its checks failed.")] = False,
) -> None:
    """Approve a quarantined upload (not your own); prints the new version id (DATASET@N)."""
    emit(v.approve(token, upload_id, force=force))


@vault_app.command()
@connected
def reject(
    v: VaultAPI, token: str,
    upload_id: Annotated[str, typer.Argument(help="Upload id.")],
    reason: Annotated[str, typer.Option(help="Why (kept with the upload).")] = "",
) -> None:
    """Reject a quarantined upload; its bytes are kept for forensics."""
    v.reject(token, upload_id, reason)
    console.print(f"rejected {upload_id}")


# --- versions ----------------------------------------------------------------------------------------
@vault_app.command()
@connected
def get(
    v: VaultAPI, token: str,
    ref: Annotated[str, typer.Argument(help="DATASET (newest version) or DATASET@VERSION.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write it ('-': stdout).")],
) -> None:
    """Fetch an approved version: byte-identical to what was uploaded, every chunk authenticated."""
    from mithridate.cli.app import check_writable

    with vault_errors():
        check_writable("--out", out)
    body, parts = v.read(token, ref)
    size = _write_out(parts, out)
    console.print(f"{body['dataset']}@{body['version']}: {body['rows']} rows, {size} bytes -> {out}", highlight=False)


@vault_app.command("ls")
@connected
def list_versions(
    v: VaultAPI, token: str,
    dataset: Annotated[str | None, typer.Argument(help="A dataset (default: list datasets).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List datasets, or a dataset's versions."""
    rows = v.versions(token, dataset) if dataset else v.datasets(token)
    if as_json:
        return emit_json(rows)
    for r in rows:
        if dataset:
            hold = " legal-hold" if r["legal_hold"] else ""
            emit(f"{r['dataset']}@{r['number']}\t{r['kind']}\t{r['rows']} rows\t{r['size']} bytes\t"
                 f"by {r['created_by']}\t{r['created']}{hold}")
        else:
            emit(f"{r['dataset']}\t{r['versions']} versions\tnewest {r['dataset']}@{r['latest']}")


@vault_app.command()
@connected
def trace(
    v: VaultAPI, token: str,
    source: Annotated[str, typer.Option("--source", help="The source to trace.")],
    as_json: JsonOpt = False,
) -> None:
    """Every version and row that came from SOURCE, and its uploads."""
    found = v.trace(token, source)
    if as_json:
        return emit_json(found)
    for hit in found["versions"]:
        emit(f"{hit['version']}\t{hit['count']} of {hit['total']} rows\trows {_ranges(hit['rows'])}")
    for u in found["uploads"]:
        emit(f"{u['id']}\t{u['dataset']}\tupload {u['status']}\t{u['rows']} rows\tby {u['uploader']}")
    if not found["versions"] and not found["uploads"]:
        console.print(f"nothing from {source!r}")


def _ranges(rows: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"``."""
    parts, start = [], None
    for i, r in enumerate(rows):
        if start is None:
            start = r
        if i + 1 == len(rows) or rows[i + 1] != r + 1:
            parts.append(str(start) if start == r else f"{start}-{r}")
            start = None
    return ",".join(parts)


@vault_app.command()
@connected
def cut(
    v: VaultAPI, token: str,
    dataset: Annotated[str, typer.Argument(help="Dataset.")],
    exclude_source: Annotated[list[str], typer.Option("--exclude-source", help="Source whose rows to drop "
                                                      "(repeatable).")],
    base: Annotated[int | None, typer.Option(help="Version to start from (default: the newest).")] = None,
) -> None:
    """Cut a new version without the rows of the given sources; prints its id."""
    emit(v.cut(token, dataset, exclude_source, base=base))


# --- audit, verification, keys --------------------------------------------------------------------------
@vault_app.command()
@connected
def log(
    v: VaultAPI, token: str,
    after: Annotated[int, typer.Option(help="Only entries after this sequence number.")] = 0,
    limit: Annotated[int | None, typer.Option(help="At most this many entries.")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action (e.g. upload.approve).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The audit log (auditor)."""
    entries = v.log(token, after=after, limit=limit, action=action)
    if as_json:
        return emit_json(entries)
    for e in entries:
        extra = "" if e["detail"] == "{}" else f"\t{e['detail']}"
        emit(f"{e['seq']}\t{e['time']}\t{e['actor']}\t{e['action']}\t{e['target']}\t{e['outcome']}{extra}")


@vault_app.command()
@connected
def head(
    v: VaultAPI, token: str,
    out: Annotated[Path, typer.Option("--out", help="Write the signed head here (a new file); - for stdout.")
                   ] = Path("-"),
) -> None:
    """The audit log's signed head: keep it outside the vault, and give it to `verify --witness` later.

    It proves later that the log and every version before it were not rolled back or rewritten,
    even by whoever controls all of the vault's files and its catalog (auditor role).
    """
    from mithridate.data import atomic_path

    signed = v.head(token)
    text = json.dumps(signed, indent=2, sort_keys=True) + "\n"
    if str(out) == "-":
        emit(text.rstrip("\n"))
        return
    if out.exists():
        raise MithridateError(f"{out} exists; a witness is written to a new file")
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    console.print(f"signed head: audit entry {signed['body']['seq']} ({signed['body']['hash'][:16]}...), wrote {out}")


def _witness(path: Path | None) -> dict | None:
    if path is None:
        return None
    try:
        witness = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise fail(f"--witness {path}: not a readable JSON head ({type(exc).__name__})") from None
    if not isinstance(witness, dict):
        raise fail(f"--witness {path}: not a signed head (expected what `mithridate vault head` writes)")
    return witness


@vault_app.command()
def verify(
    witness: Annotated[Path | None, typer.Option(help="A signed head kept outside the vault (`vault head`): "
                                                 "also check the log still holds it.")] = None,
    vault: VaultOpt = "", token: TokenOpt = None, ca: CaOpt = None, client_cert: CertOpt = None,
    client_key: KeyOpt = None, as_json: JsonOpt = False,
) -> None:
    """Re-check every chunk, manifest, signature, key, catalog row and the audit chain. Exit 0 intact,
    1 altered."""
    from mithridate.vault import connect
    from mithridate.vault.config import config_path
    from mithridate.vault.errors import IntegrityError, VaultError

    remote = vault.startswith(("https://", "http://"))
    kept = _witness(witness)
    with vault_errors():
        try:
            v = connect(vault, **({"ca": ca, "client_cert": client_cert, "client_key": client_key} if remote else {}))
        except VaultError as exc:  # a vault whose key, configuration or catalog cannot be read: the finding
            if not isinstance(exc, IntegrityError) and (remote or not vault or not config_path(Path(vault)).exists()):
                raise
            v, report = None, {"ok": False, "problems": [str(exc)], "checked": {}}
        if v is not None:
            try:
                report = v.verify(token, witness=kept) if kept is not None else v.verify(token)
            finally:
                v.close()
    if as_json:
        emit_json(report)
    else:
        for problem in report["problems"]:
            emit(f"ALTERED: {problem}")
        for orphan in report.get("orphans", []):
            console.print(f"orphan: {orphan}")
        if report["ok"]:
            counts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in report["checked"].items())
            console.print(f"intact: {counts}")
    if not report["ok"]:
        raise typer.Exit(EXIT_INTEGRITY)


@vault_app.command()
def collect(
    older_than_hours: Annotated[float, typer.Option(help="Only chunks written at least this long ago (a live "
                                                    "upload's are younger).")] = 24.0,
    vault: VaultOpt = "", token: TokenOpt = None,
) -> None:
    """Remove encrypted chunks that no signed manifest refers to (left by refused or killed uploads) and
    their data keys (admin; a local vault; `verify` lists them first)."""
    with opened(vault) as v, vault_errors():
        result = v.collect(token, older_than=older_than_hours * 3600)
    console.print(f"removed {result['objects']} unreferenced chunks ({result['bytes']} bytes)")


@vault_app.command("rotate-key")
@connected
def rotate_key(
    v: VaultAPI, token: str,
    new_key_env: Annotated[str | None, typer.Option(help="Take the new master key from this environment "
                                                    "variable (default: a new key file).")] = None,
) -> None:
    """Re-wrap every data key under a new master key. A served vault rotates through its service
    (--vault https://...); a local rotation is refused while `mithridate serve` runs on the folder."""
    result = v.rotate_key(token, {"source": "env", "var": new_key_env} if new_key_env else None)
    console.print(f"re-wrapped {result['rewrapped']} keys; master key {result['previous']} -> {result['key']}")
    emit(result["key"])


@vault_app.command()
@connected
def hold(
    v: VaultAPI, token: str,
    ref: Annotated[str, typer.Argument(help="DATASET@VERSION.")],
    legal_hold: Annotated[bool | None, typer.Option("--hold/--release", help="Set or release a legal hold.")] = None,
    retain_until: Annotated[str | None, typer.Option(help="Retain until this date (ISO 8601); only extends.")] = None,
) -> None:
    """Legal hold and retention of a version (admin)."""
    result = v.hold(token, ref, legal_hold=legal_hold, retain_until=retain_until)
    console.print(json.dumps(result))


@vault_app.command()
@connected
def whoami(v: VaultAPI, token: str) -> None:
    """Your user name and roles."""
    me = v.whoami(token)
    emit(f"{me['name']}\t{','.join(me['roles'])}")


# --- the service -------------------------------------------------------------------------------------
@app.command()
def serve(
    vault: VaultOpt = "",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8443,
    cert: Annotated[Path | None, typer.Option(help="TLS certificate chain (PEM).")] = None,
    key: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
    client_ca: Annotated[Path | None, typer.Option(help="Require client certificates signed by this CA "
                                                   "(mutual TLS).")] = None,
    db: Annotated[str | None, typer.Option(help="Catalog database URL (e.g. postgresql+psycopg://...).")] = None,
    max_upload_mb: Annotated[float | None, typer.Option(help="Refuse larger uploads (MiB; default: the vault's "
                                                        "limit, else 1024).")] = None,
    insecure_http: Annotated[bool, typer.Option("--insecure-http", help="Serve plain HTTP (local testing "
                                                "only: tokens and data cross the network in clear).")] = False,
) -> None:
    """Serve a vault over HTTPS (FastAPI + uvicorn); the CLI talks to it with --vault https://HOST:PORT."""
    if (cert is None or key is None) and not insecure_http:
        raise fail("give --cert and --key (TLS), or --insecure-http to serve plain HTTP deliberately")
    with vault_errors():
        from mithridate.vault.server import run

        run(vault, host=host, port=port, cert=cert, key=key, client_ca=client_ca, db_url=db,
            max_upload_bytes=None if max_upload_mb is None else int(max_upload_mb * (1 << 20)))

