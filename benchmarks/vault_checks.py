"""The vault's default ingest checks on real data: does a clean batch pass, does a poisoned one fail?

For each table of the real-data catalogue (:mod:`benchmarks.real_data`), a stratified half is the approved
baseline and the other half the new upload, clean and with 10% of its labels flipped at random. The
vault's default checks (``schema,scan``, :func:`mithridate.vault.ingest.run_checks`) judge each upload
against the baseline, as ``vault put`` does; the first version alone (no baseline) is checked too.

Run: ``.venv/bin/python -m benchmarks.vault_checks`` (about 20 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from benchmarks.label_flips import markdown
from benchmarks.real_data import TABLES, half, table
from mithridate.attacks import RandomFlip
from mithridate.data import split
from mithridate.vault.config import DEFAULT_CHECKS
from mithridate.vault.ingest import run_checks


def run_table(name: str, seed: int = 0) -> dict:
    with threadpool_limits(limits=1):
        baseline, upload = split(table(name), test_size=0.5, seed=seed)
        flipped = RandomFlip(rate=0.1, random_state=seed).poison(upload).dataset
        start = time.perf_counter()
        first = run_checks(DEFAULT_CHECKS, baseline, None)
        clean = run_checks(DEFAULT_CHECKS, upload, baseline)
        poisoned = run_checks(DEFAULT_CHECKS, flipped, baseline)
        seconds = time.perf_counter() - start
    scan = {r.name: r for r in clean}["scan"]
    return {"data": name, "half": half(name), "rows": baseline.n_rows + upload.n_rows,
            "first_version_passes": all(r.passed for r in first),
            "clean_batch_passes": all(r.passed for r in clean),
            "flipped_batch_fails": not all(r.passed for r in poisoned),
            "clean_detail": scan.detail, "seconds": seconds}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", nargs="+", default=[t.name for t in TABLES])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    args = parser.parse_args(argv)
    rows = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for row in pool.map(run_table, args.data):
            rows.append(row)
            print(f"  {row['data']:13s} first {row['first_version_passes']!s:5s} clean batch "
                  f"{row['clean_batch_passes']!s:5s} flipped batch fails {row['flipped_batch_fails']!s:5s} "
                  f"({row['clean_detail']})", flush=True)
    frame = pd.DataFrame(rows)
    print(f"\nclean first versions passing: {frame.first_version_passes.sum()} of {len(frame)}; clean batches "
          f"passing against their baseline: {frame.clean_batch_passes.sum()} of {len(frame)}; batches with 10% "
          f"flips failing: {frame.flipped_batch_fails.sum()} of {len(frame)}")
    args.out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out / "vault_checks.csv", index=False)
    (args.out / "vault_checks.md").write_text(markdown(frame.drop(columns=["clean_detail"])))
    print(f"written to {args.out}/vault_checks.csv and vault_checks.md")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
