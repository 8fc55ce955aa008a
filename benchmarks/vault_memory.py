"""Peak memory of ``vault put`` on a large CSV, against the peer a user would otherwise run: pandas reading
the same file whole (``pd.read_csv``), each in a fresh process of its own, in the same run.

The file is a synthetic mixed table (integers, floats with missing values, text, a label), written once.
``vault put`` runs into a new vault with the default checks (``schema,scan``: the scan sees a 100k-row
sample) and with ``schema`` alone; ``--whole`` also runs it with the streaming threshold lifted (the file
read whole, as before this version) and ``schema`` alone (a whole-file scan of millions of rows takes hours).

    python -m benchmarks.vault_memory [--size-mb 200] [--whole] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

CHILD_PUT = """
import io, json, resource, sys, time
from mithridate.vault import ingest
from mithridate.vault.core import Vault
path, root, whole, checks = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4]
if whole:
    ingest.IN_MEMORY_BYTES = 1 << 62
vault, admin = Vault.init(root, checks=checks)
token = vault.add_user(admin, "carol", ["contributor"])
start = time.perf_counter()
with open(path, "rb") as fh:
    result = vault.put(token, "big", fh, "big.csv", source="bench", label="label")
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rows": result["rows"], "checks": [c["passed"] for c in result["checks"]]}))
"""

CHILD_PANDAS = """
import json, resource, sys, time
import pandas as pd
start = time.perf_counter()
frame = pd.read_csv(sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - start, "rows": len(frame),
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_csv(path: Path, size_mb: int, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    rows, block = 0, 200_000
    with open(path, "w") as fh:
        while fh.tell() < size_mb << 20:
            n = block
            frame = pd.DataFrame({"id": np.arange(rows, rows + n), "count": rng.integers(0, 1000, n),
                                  "x1": rng.normal(size=n).round(5), "x2": rng.exponential(size=n).round(4),
                                  "city": rng.choice(["lyon", "oslo", "lima", "pune", "kobe"], n),
                                  "label": rng.choice(["ok", "spam"], n, p=[0.8, 0.2])})
            frame.loc[rng.random(n) < 0.01, "x2"] = np.nan
            frame.to_csv(fh, index=False, header=rows == 0)
            rows += n
    return rows


def child(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--whole", action="store_true", help="also measure the file read whole (before)")
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as work:
        path = Path(work) / "big.csv"
        rows = make_csv(path, args.size_mb)
        size_mb = path.stat().st_size / (1 << 20)
        print(f"file: {size_mb:.0f} MB, {rows:,} rows")
        results = {"pandas read_csv (peer)": child(CHILD_PANDAS, str(path))}
        results["vault put, schema,scan (ours)"] = child(CHILD_PUT, str(path), str(Path(work) / "v1"), "0",
                                                         "schema,scan")
        results["vault put, schema (ours)"] = child(CHILD_PUT, str(path), str(Path(work) / "v2"), "0", "schema")
        if args.whole:
            results["vault put, schema, read whole (before)"] = child(CHILD_PUT, str(path), str(Path(work) / "v3"),
                                                                      "1", "schema")
    print("| what | peak memory | x file | time |\n|---|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['peak_mb']:,.0f} MB | {r['peak_mb'] / size_mb:.1f} | {r['seconds']:.0f} s |")


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"({time.perf_counter() - start:.0f} s in all)")
