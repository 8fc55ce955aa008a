"""The typer application and what every command shares: one-line errors, progress display."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer
from rich.console import Console

from mithridate.errors import MithridateError

app = typer.Typer(
    name="mithridate",
    help="Protect machine-learning training pipelines against data poisoning: attack your own data "
    "(red team), scan it for poisoned rows, sanitize it, and report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)
EXIT_BAD_INPUT = 2


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print ``error: message`` on one line and return the exit to raise."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a :class:`MithridateError` (bad input, bad option) into one line and exit status 2."""
    try:
        yield
    except MithridateError as exc:
        raise fail(str(exc)) from None


@contextlib.contextmanager
def status(message: str) -> Iterator:
    """A spinner with a message for work that takes more than a moment; yields ``update(text)``."""
    with console.status(message) as live:
        yield lambda text: live.update(f"{message}: {text}")
