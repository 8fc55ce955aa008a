"""No command writes over what it reads: every output that is an input (directly, through a symlink, or
inside an input folder) is refused with one line and exit 2, the input untouched and nothing written."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mithridate.cli import app
from mithridate.data import demo, save


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """A labelled table, findings and a baseline for it, and an image set, made once (real commands)."""
    root = tmp_path_factory.mktemp("inputs")
    data = demo("breast_cancer")
    save(data, root / "data.csv")
    save(data, root / "data.parquet")
    (root / "findings.csv").write_text("row,flagged,action,suggested_label,fingerprint\n")
    assert CliRunner().invoke(app, ["baseline", str(root / "data.csv"), "--out", str(root / "base.json"),
                                    "--label", "target"]).exit_code == 0
    save(demo("digits"), root / "images.npz")
    (root / "link.csv").symlink_to(root / "data.csv")
    (root / "scanned").mkdir()
    save(data, root / "scanned" / "findings.csv")
    return root


CASES = {
    "attack --out INPUT": ["attack", "flip", "{r}/data.csv", "--out", "{r}/data.csv", "--truth", "{r}/t.csv"],
    "attack --truth INPUT": ["attack", "flip", "{r}/data.csv", "--out", "{r}/o.csv", "--truth", "{r}/data.csv"],
    "attack --truth symlink to INPUT": ["attack", "flip", "{r}/data.csv", "--out", "{r}/o.csv",
                                        "--truth", "{r}/link.csv"],
    "sanitize --out FINDINGS": ["sanitize", "{r}/data.csv", "--findings", "{r}/findings.csv",
                                "--out", "{r}/findings.csv"],
    "sanitize --quarantine INPUT": ["sanitize", "{r}/data.csv", "--findings", "{r}/findings.csv",
                                    "--out", "{r}/o.csv", "--policy", "quarantine", "--quarantine", "{r}/data.csv"],
    "validate --clean-out INPUT": ["validate", "{r}/data.csv", "--baseline", "{r}/base.json", "--out", "{r}/v",
                                   "--clean-out", "{r}/data.csv"],
    "validate --out is the baseline's folder file": ["validate", "{r}/data.csv", "--baseline", "{r}/base.json",
                                                     "--out", "{r}/base.json"],
    "baseline --out INPUT": ["baseline", "{r}/data.parquet", "--out", "{r}/data.parquet"],
    "scan --out where INPUT is findings.csv": ["scan", "{r}/scanned/findings.csv", "--out", "{r}/scanned"],
}


def digest_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", list(CASES))
def test_an_output_that_is_an_input_is_refused(files, case):
    before = digest_tree(files)
    result = CliRunner().invoke(app, [a.format(r=files) for a in CASES[case]])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and "inputs are never modified" in lines[0], result.stderr
    assert digest_tree(files) == before  # nothing modified, nothing half-written, nothing new
