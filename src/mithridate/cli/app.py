"""The typer application and what every command shares: one-line errors, progress display."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from mithridate.errors import DataError, MithridateError

app = typer.Typer(
    name="mithridate",
    help="Protect machine-learning training pipelines against data poisoning: attack your own data "
    "(red team), scan it for poisoned rows, sanitize it, and report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",  # docstrings are hard-wrapped: join their lines into paragraphs
)
console = Console(stderr=True)
EXIT_BAD_INPUT = 2


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print ``error: message`` on one line and return the exit to raise."""
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)  # "[x]" stays
    return typer.Exit(code)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a :class:`MithridateError` (bad input, bad option) or an operating-system refusal (a path
    that cannot be read or written) into one line and exit status 2."""
    try:
        yield
    except MithridateError as exc:
        raise fail(str(exc)) from None
    except ModuleNotFoundError as exc:
        raise fail(missing_extra(exc)) from None
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise fail(f"{where}{exc.strerror or exc}") from None


@contextlib.contextmanager
def status(message: str) -> Iterator:
    """A spinner with a message for work that takes more than a moment; yields ``update(text)``."""
    with console.status(message) as live:
        yield lambda text: live.update(f"{message}: {text}")


def refuse_overwriting(inputs: Iterable[str | Path | None], outputs: dict[str, str | Path | None]) -> None:
    """Raise :class:`DataError` if an output (``{option: path}``) is one of the ``inputs`` or lies inside
    an input folder, comparing resolved paths (symlinks followed): inputs are never modified."""
    existing = [(str(p), Path(p).resolve()) for p in inputs
                if p is not None and not str(p).startswith("demo:") and Path(p).exists()]
    for option, out in outputs.items():
        if out is None:
            continue
        target = Path(out).resolve()
        for name, source in existing:
            if target == source or (source.is_dir() and source in target.parents):
                verb = "overwrite" if target == source else "write into"
                raise DataError(f"{option} ({out}) would {verb} the input {name}: inputs are never modified")


EXTRAS = {"sqlalchemy": "vault", "alembic": "vault", "fastapi": "vault", "uvicorn": "vault", "httpx": "vault",
          "argon2": "vault", "psycopg": "vault", "boto3": "vault", "cryptography": "vault", "flwr": "federated",
          "dp_accounting": "federated", "opacus": "harden"}


def missing_extra(exc: ModuleNotFoundError) -> str:
    """One line for a library an optional part needs: which extra installs it."""
    root = (exc.name or "").split(".")[0]
    if root in EXTRAS:
        extra = EXTRAS[root]
        return f"this needs mithridate's {extra} extra (missing {root}): pip install 'mithridate[{extra}]'"
    return f"a library is missing: {exc.name} ({exc})"


def check_writable(option: str, path: str | Path | None, folder: bool = False) -> None:
    """Raise :class:`DataError` now, before any work, if ``path`` cannot be written: a folder output that is
    a file, a file output that is a folder, a path under a file, or a place this process may not write."""
    import tempfile

    if path is None or str(path) == "-":
        return
    target = Path(path)
    if folder and target.exists() and not target.is_dir():
        raise DataError(f"{option} {path}: exists and is not a folder")
    if not folder and target.is_dir():
        raise DataError(f"{option} {path}: is a folder; name a file")
    ancestor = target if folder else target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise DataError(f"{option} {path}: {ancestor} is a file, not a folder")
    try:
        tempfile.TemporaryFile(dir=ancestor).close()  # unnamed: leaves nothing behind
    except OSError as exc:
        raise DataError(f"{option} {path}: cannot write in {ancestor} ({exc.strerror or exc})") from None
