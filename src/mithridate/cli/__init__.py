"""The ``mithridate`` command line: a thin layer over the library, one module per command group."""

from mithridate.cli import attack, demo, federated, harden, monitor, registry, scan, validate, vault  # noqa: F401
from mithridate.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
