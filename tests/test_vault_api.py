"""The local and the remote vault offer the same operations with the same parameters (VaultAPI)."""

from __future__ import annotations

import inspect

import pytest

from mithridate.vault.api import LOCAL_ONLY, REMOTE_ONLY, VaultAPI
from mithridate.vault.client import RemoteVault
from mithridate.vault.core import Vault

DECLARED = {n for n, f in inspect.getmembers(VaultAPI, inspect.isfunction) if not n.startswith("_")}


def public(cls) -> set[str]:
    return {n for n, f in inspect.getmembers(cls, inspect.isfunction) if not n.startswith("_")} | \
        {n for n, f in inspect.getmembers(cls, inspect.ismethod) if not n.startswith("_")}


@pytest.mark.parametrize("cls, own", [(Vault, LOCAL_ONLY), (RemoteVault, REMOTE_ONLY)])
def test_every_public_operation_is_declared_or_named_as_one_sided(cls, own):
    assert public(cls) - own == DECLARED, sorted(public(cls) ^ (DECLARED | own))


@pytest.mark.parametrize("name", sorted(DECLARED))
def test_local_and_remote_take_the_same_parameters(name):
    declared = list(inspect.signature(getattr(VaultAPI, name)).parameters)
    for cls in (Vault, RemoteVault):
        assert list(inspect.signature(getattr(cls, name)).parameters) == declared, (cls.__name__, name)
