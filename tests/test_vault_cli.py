"""The ``mithridate vault`` command-line contract: what it prints, and its exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mithridate.cli import app
from mithridate.vault.store import object_key


def write_csv(path: Path, n: int, seed: int, start: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    pd.DataFrame({"id": np.arange(start, start + n), "x": rng.normal(size=n).round(5),
                  "target": rng.choice(["cat", "dog"], n)}).to_csv(path, index=False)
    return path


def vault_cli(args: list[str], token: str | None = None, vault: Path | None = None):
    env = {"MITHRIDATE_VAULT": str(vault)} if vault else {}
    if token:
        env["MITHRIDATE_TOKEN"] = token
    return CliRunner().invoke(app, ["vault", *args], env=env)


def ok(result) -> str:
    assert result.exit_code == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    root = tmp / "vault"
    admin = ok(CliRunner().invoke(app, ["vault", "init", str(root), "--checks", "schema", "--chunk-mb", "0.01"]))
    tokens = {"admin": admin}
    for name, role in [("cara", "contributor"), ("stew", "steward"), ("trey", "trainer"), ("aud", "auditor")]:
        tokens[role] = ok(vault_cli(["user", "add", name, "--role", role], admin, root))
    return root, tokens, tmp


def test_init_user_put_approve_get_round_trip(world):
    root, tokens, tmp = world
    assert all(t.startswith("mth_") for t in tokens.values())
    first = write_csv(tmp / "pets.csv", 300, 0)
    upload = ok(vault_cli(["put", "pets", str(first), "--label", "target", "--source", "shelter"],
                          tokens["contributor"], root))
    assert upload.startswith("u-") and "\n" not in upload
    assert ok(vault_cli(["approve", upload], tokens["steward"], root)) == "pets@1"
    out = tmp / "copy.csv"
    ok(vault_cli(["get", "pets@1", "--out", str(out)], tokens["trainer"], root))
    assert out.read_bytes() == first.read_bytes()
    listing = ok(vault_cli(["ls", "pets"], tokens["trainer"], root))
    assert listing.startswith("pets@1\tupload\t300 rows")


def test_trace_and_cut_in_one_command(world):
    root, tokens, tmp = world
    clean = write_csv(tmp / "base.csv", 200, 1)
    mixed = tmp / "mixed.csv"
    mixed.write_bytes(clean.read_bytes() + write_csv(tmp / "bad.csv", 7, 2, start=200).read_bytes().split(b"\n", 1)[1])
    for path, source in ((clean, "vendor-a"), (mixed, "vendor-b")):
        upload = ok(vault_cli(["put", "birds", str(path), "--label", "target", "--source", source],
                              tokens["contributor"], root))
        ok(vault_cli(["approve", upload], tokens["steward"], root))
    traced = ok(vault_cli(["trace", "--source", "vendor-b"], tokens["auditor"], root)).splitlines()
    assert traced[0] == "birds@2\t7 of 207 rows\trows 200-206"
    assert traced[1].endswith("upload approved\t207 rows\tby cara")
    assert ok(vault_cli(["cut", "birds", "--exclude-source", "vendor-b"], tokens["steward"], root)) == "birds@3"
    out = tmp / "birds3.csv"
    ok(vault_cli(["get", "birds", "--out", str(out)], tokens["trainer"], root))
    assert out.read_bytes() == clean.read_bytes()


def test_denied_actions_exit_3_with_one_line(world):
    root, tokens, tmp = world
    data = write_csv(tmp / "d.csv", 20, 3)
    cases = [
        (["put", "pets", str(data), "--label", "target", "--source", "x"], tokens["trainer"]),
        (["get", "pets", "--out", str(tmp / "nope.csv")], tokens["contributor"]),
        (["user", "add", "eve", "--role", "admin"], tokens["steward"]),
        (["log"], tokens["admin"]),
        (["ls"], "mth_not_a_token"),
        (["ls"], None),
    ]
    for args, token in cases:
        result = vault_cli(args, token, root)
        assert result.exit_code == 3, (args, result.stdout, result.stderr)
        assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1
        assert result.stderr.startswith("error: denied: ")
    assert not (tmp / "nope.csv").exists()
    own = ok(vault_cli(["user", "add", "two-hats", "--role", "contributor", "--role", "steward"], tokens["admin"],
                       root))
    upload = ok(vault_cli(["put", "pets", str(data), "--label", "target", "--source", "x"], own, root))
    result = vault_cli(["approve", upload], own, root)
    assert result.exit_code == 3 and "nobody approves their own upload" in result.stderr
    log = ok(vault_cli(["log", "--action", "upload.approve"], tokens["auditor"], root)).splitlines()
    assert log[-1].split("\t")[2:6] == ["two-hats", "upload.approve", upload, "denied"]


def test_bad_input_exits_2(world):
    root, tokens, tmp = world
    assert vault_cli(["get", "no-such-dataset", "--out", str(tmp / "x.csv")], tokens["trainer"], root).exit_code == 2
    assert vault_cli(["approve", "u-0000"], tokens["steward"], root).exit_code == 2
    result = vault_cli(["put", "pets", str(tmp / "missing.csv"), "--source", "x"], tokens["contributor"], root)
    assert result.exit_code == 2 and "missing.csv" in result.stderr
    assert vault_cli(["ls"], tokens["trainer"], tmp / "not-a-vault").exit_code == 2


def test_verify_exit_codes_and_names_the_altered_object(world, tmp_path):
    import shutil

    root, tokens, _ = world
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    result = vault_cli(["verify"], tokens["auditor"], copy)
    assert result.exit_code == 0 and result.stdout == "", result.stdout
    chunk = next(p for p in sorted((copy / "objects").rglob("*")) if p.is_file())
    os.chmod(chunk, 0o644)
    raw = bytearray(chunk.read_bytes())
    raw[-5] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    result = vault_cli(["verify"], tokens["auditor"], copy)
    assert result.exit_code == 1
    lines = result.stdout.strip().splitlines()
    rel = chunk.relative_to(copy).as_posix()
    assert len(lines) == 1 and lines[0].startswith(f"ALTERED: {rel}: authentication failed") and rel == object_key(
        chunk.name)
    key = copy / "keys" / "master.key"
    text = key.read_text()
    key.write_text(("A" if text[0] != "A" else "B") + text[1:])  # the first character: always key material
    result = vault_cli(["verify"], tokens["auditor"], copy)
    assert result.exit_code == 1 and result.stdout.startswith("ALTERED: keys/master.key: ")


def test_the_installed_command_follows_the_contract(world):
    """Real processes, as a script would run them: ids on stdout, exit codes, environment variables."""
    root, tokens, tmp = world
    exe = Path(sys.executable).with_name("mithridate")
    data = write_csv(tmp / "proc.csv", 30, 9)
    env = {**os.environ, "MITHRIDATE_VAULT": str(root), "MITHRIDATE_TOKEN": tokens["contributor"]}
    put = subprocess.run([str(exe), "vault", "put", "fish", str(data), "--label", "target", "--source", "net"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert put.returncode == 0 and put.stdout.startswith("u-") and len(put.stdout.split()) == 1, put.stderr
    denied = subprocess.run([str(exe), "vault", "approve", put.stdout.strip(), "--token", tokens["trainer"]],
                            capture_output=True, text=True, env=env, timeout=120)
    assert denied.returncode == 3 and denied.stdout == ""
    assert denied.stderr.strip() == ("error: denied: trey (trainer) may not upload.approve: needs the steward role")


def test_serve_refuses_to_start_without_tls_unless_told(world):
    root, _, _ = world
    result = CliRunner().invoke(app, ["serve", "--vault", str(root), "--port", "1"])
    assert result.exit_code == 2 and "give --cert and --key" in result.stderr
