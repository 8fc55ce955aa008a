"""Bad input to any command: one line on stderr, exit 2, inputs untouched, nothing (half-)written."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mithridate.cli import app
from mithridate.data import demo, save


def npz(path: Path, **arrays) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())


PLANS = {  # evaluate's config files, each wrong in one way
    "plan_kind.yaml": ("an unknown attack", "attacks: [{kind: poison-ivy, rate: 0.1}]\ndefences: [none]\n"),
    "plan_defence.yaml": ("an unknown defence", "attacks: [{kind: flip, rate: 0.1}]\ndefences: [none, magic]\n"),
    "plan_rate.yaml": ("a rate above 1", "attacks: [{kind: flip, rate: 2}]\ndefences: [none]\n"),
    "plan_option.yaml": ("an option the attack lacks", "attacks: [{kind: flip, rate: 0.1, size: 3}]\n"
                         "defences: [none]\n"),
    "plan_image.yaml": ("an image attack on a table", "attacks: [{kind: patch, rate: 0.1}]\ndefences: [none]\n"),
    "plan_settings.yaml": ("a misspelt trainer setting", "attacks: [{kind: flip, rate: 0.1}]\ndefences: [dpa]\n"
                           "options: {dpa: {partitons: 5}}\n"),
    "plan_class.yaml": ("a class the data lacks", "attacks: [{kind: targeted-flip, rate: 0.1, source: nope, "
                        "target: 1}]\ndefences: [none]\n"),
    "plan_seed.yaml": ("a negative seed", "attacks: [{kind: flip, rate: 0.1}]\ndefences: [none]\nseed: -1\n"),
    "plan_broken.yaml": ("a config that is not YAML", "attacks: [kind: flip\n"),
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    frame = demo("wine").features.assign(label=demo("wine").labels)
    frame.to_csv(root / "good.csv", index=False)
    inf = frame.copy()
    inf.iloc[3, 0] = np.inf
    inf.to_csv(root / "inf.csv", index=False)
    frame.assign(empty=np.nan).to_csv(root / "nan_column.csv", index=False)
    npz(root / "y0.npz", X=np.zeros((5, 3)), y=np.array(1))
    npz(root / "y2.npz", X=np.zeros((5, 3)), y=np.zeros((5, 2)))
    npz(root / "x0.npz", X=np.array(1.0), y=np.zeros(5))
    npz(root / "emb.npz", X=np.zeros((len(frame), 4)))
    (root / "a_file").write_text("not a folder")
    for name, (_, text) in PLANS.items():
        (root / name).write_text(text)
    save(demo("wine"), root / "wine.csv")
    assert CliRunner().invoke(app, ["baseline", str(root / "good.csv"), "--out", str(root / "base.json"),
                                    "--label", "label"]).exit_code == 0
    return root


@pytest.fixture(scope="module")
def vault_env(tmp_path_factory) -> dict[str, str]:
    from mithridate.vault.core import Vault

    vault, admin = Vault.init(tmp_path_factory.mktemp("vault") / "v", checks="schema")
    contributor = vault.add_user(admin, "carol", ["contributor", "trainer"])
    vault.close()
    return {"MITHRIDATE_VAULT": str(vault.root), "MITHRIDATE_TOKEN": contributor}


CASES = {
    "scan: infinite values": ["scan", "{r}/inf.csv", "--label", "label", "--out", "{r}/o1"],
    "scan: npz with 0-d y": ["scan", "{r}/y0.npz", "--out", "{r}/o2"],
    "scan: npz with 2-D y": ["scan", "{r}/y2.npz", "--out", "{r}/o3"],
    "scan: npz with 0-d X": ["scan", "{r}/x0.npz", "--out", "{r}/o4"],
    "scan: --out an existing file": ["scan", "{r}/good.csv", "--label", "label", "--out", "{r}/a_file"],
    "scan: --out under a file": ["scan", "{r}/good.csv", "--label", "label", "--out", "{r}/a_file/sub"],
    "scan: --out unwritable": ["scan", "{r}/good.csv", "--label", "label", "--out", "/proc/mithridate/out"],
    "scan: an .npz for --embeddings": ["scan", "{r}/good.csv", "--label", "label", "--embeddings", "{r}/emb.npz",
                                       "--out", "{r}/o5"],
    "scan: --model not a factory": ["scan", "{r}/y2.npz", "--model", "math:pi", "--out", "{r}/o6"],
    "sanitize: infinite values": ["sanitize", "{r}/inf.csv", "--label", "label", "--findings", "{r}/good.csv",
                                  "--out", "{r}/o7.csv"],
    "baseline: an all-NaN column": ["baseline", "{r}/nan_column.csv", "--label", "label", "--out", "{r}/o8.json"],
    "baseline: infinite values": ["baseline", "{r}/inf.csv", "--label", "label", "--out", "{r}/o9.json"],
    "baseline: --out under a file": ["baseline", "{r}/good.csv", "--label", "label", "--out", "{r}/a_file/b.json"],
    "validate: infinite values": ["validate", "{r}/inf.csv", "--baseline", "{r}/base.json", "--out", "{r}/o10"],
    "validate: --out under a file": ["validate", "{r}/good.csv", "--baseline", "{r}/base.json",
                                     "--out", "{r}/a_file/v"],
    "attack: npz with 0-d y": ["attack", "flip", "{r}/y0.npz", "--out", "{r}/o11.npz", "--truth", "{r}/t11.csv"],
    "attack: infinite values": ["attack", "flip", "{r}/inf.csv", "--label", "label", "--out", "{r}/o12.csv",
                                "--truth", "{r}/t12.csv"],
    "vault put: infinite values": ["vault", "put", "ds", "{r}/inf.csv", "--source", "s", "--label", "label"],
    "vault put: npz with 0-d y": ["vault", "put", "ds", "{r}/y0.npz", "--source", "s"],
    "vault put: npz with 2-D y": ["vault", "put", "ds", "{r}/y2.npz", "--source", "s"],
    "vault get: a version number too large": ["vault", "get", "ds@99999999999999999999", "--out", "{r}/o14.csv"],
    "vault get: --out under a file": ["vault", "get", "ds", "--out", "{r}/a_file/o.csv"],
    "fl simulate: one client": ["fl", "simulate", "--clients", "1", "--out", "{r}/o15"],
    "fl simulate: --out under a file": ["fl", "simulate", "--out", "{r}/a_file/fl"],
    "demo: --out under a file": ["demo", "--out", "{r}/a_file/demo"],
    "attack: --out under a file": ["attack", "flip", "{r}/good.csv", "--label", "label",
                                   "--out", "{r}/a_file/o.csv", "--truth", "{r}/t13.csv"],
    "evaluate: no config file": ["evaluate", "{r}/good.csv", "--label", "label", "--config", "{r}/nothing.yaml",
                                 "--out", "{r}/e8"],
    "evaluate: --out under a file": ["evaluate", "{r}/good.csv", "--label", "label", "--out", "{r}/a_file/e"],
    **{f"evaluate: {why}": ["evaluate", "{r}/good.csv", "--label", "label", "--config", f"{{r}}/{name}",
                            "--out", f"{{r}}/out-{name}"] for name, (why, _) in PLANS.items()},
}


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_nothing_written(inputs, vault_env, case):
    before = snapshot(inputs)
    result = CliRunner().invoke(app, [a.format(r=inputs) for a in CASES[case]], env=vault_env)
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.output, result.stderr
    assert snapshot(inputs) == before  # inputs untouched, no partial output


@pytest.mark.parametrize("args, module, extra", [
    (["vault", "whoami", "--vault", "{r}", "--token", "x"], "sqlalchemy", "vault"),
    (["fl", "simulate", "--aggregator", "mean", "--dp-epsilon", "4", "--rounds", "1", "--clients", "4", "--out",
      "{r}/fl-out"],
     "dp_accounting", "federated"),
])
def test_a_missing_extra_is_named_in_one_line(inputs, monkeypatch, args, module, extra):
    import sys

    for name in [m for m in sys.modules if m.startswith(("mithridate.vault.", "mithridate.federated"))]:
        monkeypatch.delitem(sys.modules, name)  # as in an install without the extra
    monkeypatch.setitem(sys.modules, module, None)
    result = CliRunner().invoke(app, [a.format(r=inputs) for a in args])
    assert result.exit_code == 2, (result.output, result.exception)
    assert f"pip install 'mithridate[{extra}]'" in result.stderr and len(result.stderr.strip().splitlines()) == 1
