"""A key provider plugin for the tests: the master key from an environment variable, under another name."""

from __future__ import annotations

import os

from mithridate.vault.crypto import MasterKey, decode_key


def make(var: str) -> MasterKey:
    return decode_key(os.environ[var], f"plugin ${var}")
