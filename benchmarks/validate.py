"""Validate: the gate's false-failure rate on clean batches and its detection rate on poisoned ones, beside
alibi-detect's ``TabularDrift`` on the very same batches; and the time to profile and validate 1M x 50.

Data (documented, generated, no download): ``make_classification`` with 50 columns (20 informative,
10 redundant, 3 classes), the last 10 columns binned into 4 categorical levels ("a".."d"), 2% missing values
in every 7th column. One population of 120,000 rows: the verified baseline is the first 20,000, batches are
drawn from the other 100,000 (so they are independent of the baseline rows).

Poisons (applied to a clean batch):

- ``flip``: :class:`mithridate.attacks.RandomFlip` at ``rate`` (a random other class);
- ``backdoor``: :class:`mithridate.attacks.FeatureTrigger` at ``rate`` (3 columns set to their 99.5%
  quantile, rows relabelled to class "x");
- ``shift``: one numeric column (``f3``) shifted by ``rate`` baseline standard deviations in every row.

Ours: ``Gate()`` with the default policy (alpha 5%, Benjamini-Hochberg across all tests); row sanitization is
switched off (``rows: {action: keep}``) because it does not change the verdict and costs time.
Peer: alibi-detect 0.13 ``TabularDrift`` (Kolmogorov-Smirnov per numeric feature, chi-square per categorical
feature, Bonferroni, p_val 0.05) with the whole baseline as reference and the *label as one more categorical
feature* (so it can see label-distribution shifts; it has no label-conditional test). Its inputs: missing
values imputed with the baseline median, categories as integer codes. alibi-detect pins numpy<2, so it is not
installed in the project's venv; it runs from a side directory (``--peer-path``, default ``.venv/peer-alibi``,
made with ``pip install --no-deps --target .venv/peer-alibi alibi-detect==0.13.0 numba llvmlite
"transformers<5" "tokenizers==0.22.2" "huggingface_hub<1" regex requests urllib3 idna certifi
charset-normalizer catalogue dill toml``). Without it the peer is a scipy re-implementation of the same test
(named so in the table).

    python -m benchmarks.validate [--clean 200] [--reps 10] [--headline-reps 100]
    python -m benchmarks.validate --timing [--rows 1000000]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

N_COLUMNS, N_CATEGORICAL = 50, 10
CLASSES = np.array(["x", "y", "z"])
SHIFT_COLUMN = "f3"
SIZES = (250, 500, 1000, 2000)
RATES = {"flip": (0.05, 0.1, 0.2), "backdoor": (0.02, 0.05, 0.1), "shift": (0.1, 0.25, 0.5)}
HEADLINE = {"flip": 0.1, "backdoor": 0.05, "shift": 0.25}


def synthetic_table(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=n, n_features=N_COLUMNS, n_informative=20, n_redundant=10,
                               n_classes=3, random_state=seed)
    table = pd.DataFrame(X, columns=[f"f{i}" for i in range(N_COLUMNS)])
    for i in range(N_COLUMNS - N_CATEGORICAL, N_COLUMNS):
        table[f"f{i}"] = pd.cut(table[f"f{i}"], [-np.inf, -1, 0, 1, np.inf], labels=list("abcd")).astype(str)
    rng = np.random.default_rng(seed)
    for col in table.columns[::7]:
        table.loc[rng.random(n) < 0.02, col] = np.nan
    return table, CLASSES[y]


# --- the peer -------------------------------------------------------------------------------------------
def load_peer(path: str | None):
    """alibi-detect's TabularDrift class, or None."""
    path = path or os.environ.get("MITHRIDATE_PEER_PATH") or ".venv/peer-alibi"
    if Path(path).is_dir() and path not in sys.path:
        sys.path.append(path)  # appended: the project's own packages keep precedence
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from alibi_detect.cd import TabularDrift
        return TabularDrift
    except Exception as exc:  # missing or broken: fall back, and say so
        print(f"alibi-detect unavailable ({type(exc).__name__}: {exc}); using the scipy re-implementation")
        return None


class PeerEncoder:
    """The peer's inputs: numbers median-imputed, categories and the label as integer codes."""

    def __init__(self, table: pd.DataFrame, labels: np.ndarray):
        self.numeric = [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c])]
        self.categorical = [c for c in table.columns if c not in self.numeric]
        self.medians = table[self.numeric].median()
        self.levels = {c: sorted(table[c].dropna().unique()) for c in self.categorical}
        self.classes = sorted(set(labels))

    def __call__(self, table: pd.DataFrame, labels: np.ndarray) -> np.ndarray:
        parts = [table[self.numeric].fillna(self.medians).to_numpy(np.float32)]
        for c in self.categorical:
            codes = {v: i for i, v in enumerate(self.levels[c])}
            parts.append(table[c].map(lambda v, codes=codes: codes.get(v, len(codes))).to_numpy(np.float32)[:, None])
        codes = {v: i for i, v in enumerate(self.classes)}
        parts.append(np.array([codes.get(v, len(codes)) for v in labels], dtype=np.float32)[:, None])
        return np.hstack(parts)

    @property
    def categorical_index(self) -> list[int]:
        return list(range(len(self.numeric), len(self.numeric) + len(self.categorical) + 1))


class ScipyTabularDrift:
    """What TabularDrift does, with scipy: KS per numeric feature, chi-square per categorical, Bonferroni."""

    def __init__(self, x_ref: np.ndarray, p_val: float, categories_per_feature: dict):
        self.x_ref, self.p_val, self.cat = x_ref, p_val, set(categories_per_feature)

    def predict(self, x: np.ndarray) -> dict:
        from scipy import stats

        p = []
        for j in range(x.shape[1]):
            if j in self.cat:
                levels = np.union1d(np.unique(self.x_ref[:, j]), np.unique(x[:, j]))
                table = np.array([[np.sum(a[:, j] == v) for v in levels] for a in (self.x_ref, x)])
                table = table[:, table.sum(0) > 0]
                p.append(stats.chi2_contingency(table)[1] if table.shape[1] > 1 else 1.0)
            else:
                p.append(stats.ks_2samp(self.x_ref[:, j], x[:, j]).pvalue)
        return {"data": {"is_drift": int(min(p) < self.p_val / len(p))}}


# --- poisons --------------------------------------------------------------------------------------------
def poison(batch, kind: str, rate: float, seed: int, baseline_std: dict):
    from mithridate.attacks.backdoor import FeatureTrigger
    from mithridate.attacks.label_flip import RandomFlip

    if kind == "clean":
        return batch
    if kind == "flip":
        return RandomFlip(rate=rate, random_state=seed).poison(batch).dataset
    if kind == "backdoor":
        return FeatureTrigger(target="x", rate=rate, n_columns=3, random_state=seed).poison(batch).dataset
    features = batch.features.copy()
    features[SHIFT_COLUMN] = features[SHIFT_COLUMN] + rate * baseline_std[SHIFT_COLUMN]
    return batch.replace(features=features)


def detection(args) -> None:
    from mithridate.data import Dataset
    from mithridate.validate import Gate, Policy, profile

    table, labels = synthetic_table(120_000)
    population = Dataset.from_labels(table, labels, name="synthetic")
    base = population.take(np.arange(20_000))
    pool = population.take(np.arange(20_000, 120_000))
    start = time.perf_counter()
    prof = profile(base, random_state=0)
    print(f"baseline: {base.n_rows} rows x {N_COLUMNS} columns profiled in {time.perf_counter() - start:.1f} s; "
          f"label model held-out agreement {prof.heldout['agreement']:.3f}", flush=True)
    gate = Gate(Policy(rows={"action": "keep"}))
    encode = PeerEncoder(base.features, base.labels)
    Peer = load_peer(args.peer_path)
    peer_name = "alibi-detect TabularDrift" if Peer is not None else "TabularDrift (scipy re-impl.)"
    Peer = Peer or ScipyTabularDrift
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peer = Peer(encode(base.features, base.labels), p_val=0.05,
                    categories_per_feature={i: None for i in encode.categorical_index})
    std = {c: prof.columns[c]["std"] for c in prof.numeric}
    rng = np.random.default_rng(args.seed)
    cells = [("clean", 0.0, 1000, args.clean)]
    for kind, rates in RATES.items():
        for rate in rates:
            for size in SIZES:
                headline = rate == HEADLINE[kind] and size == 1000
                cells.append((kind, rate, size, args.headline_reps if headline else args.reps))
    rows, seconds = [], []
    for kind, rate, size, reps in cells:
        ours = theirs = 0
        for r in range(reps):
            batch = pool.take(np.sort(rng.choice(pool.n_rows, size, replace=False)))
            batch = poison(batch, kind, rate, r, std)
            t = time.perf_counter()
            ours += gate.check(prof, batch).verdict == "fail"
            seconds.append(time.perf_counter() - t)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                theirs += int(peer.predict(encode(batch.features, batch.labels))["data"]["is_drift"])
        rows.append({"poison": kind, "rate": "-" if kind == "clean" else (f"{rate:g} sd" if kind == "shift"
                                                                         else f"{rate:.0%}"),
                     "batch rows": size, "batches": reps, "mithridate fails": f"{ours / reps:.0%}",
                     f"{peer_name} drifts": f"{theirs / reps:.0%}"})
        print(" | ".join(str(v) for v in rows[-1].values()), flush=True)
    print()
    print(f"Gate time per batch: median {np.median(seconds):.2f} s (rows check off)")
    print("Clean row: the false-failure rate (promise: at most alpha = 5%). Poisoned rows: the detection rate.")
    print(pd.DataFrame(rows).to_markdown(index=False) if _has_tabulate() else pd.DataFrame(rows).to_string(index=False))


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


# --- timing ---------------------------------------------------------------------------------------------
def timing(args) -> None:
    from mithridate.data import Dataset
    from mithridate.data.io import table_dataset
    from mithridate.validate import Gate, profile_file

    n = args.rows
    table, labels = synthetic_table(2 * n, seed=1)
    table["label"] = labels
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        base_path, batch_path = Path(tmp) / "base.parquet", Path(tmp) / "batch.parquet"
        table.iloc[:n].to_parquet(base_path, index=False)
        table.iloc[n:].to_parquet(batch_path, index=False)
        del table, labels
        cpu0, t0 = time.process_time(), time.perf_counter()
        prof = profile_file(base_path, "label")
        cpu1, t1 = time.process_time(), time.perf_counter()
        batch: Dataset = table_dataset(pd.read_parquet(batch_path), "label", name="batch")
        verdict = Gate().check(prof, batch)
        cpu2, t2 = time.process_time(), time.perf_counter()
    print(f"rows per side: {n:,} x {N_COLUMNS} columns; cores available: {len(os.sched_getaffinity(0))}")
    print("| step | wall s | cpu s |")
    print("|---|---|---|")
    print(f"| profile (stream Parquet, 100k-row chunks) | {t1 - t0:.1f} | {cpu1 - cpu0:.1f} |")
    print(f"| read batch + validate (all tests, rows check) | {t2 - t1:.1f} | {cpu2 - cpu1:.1f} |")
    print(f"| total | {t2 - t0:.1f} | {cpu2 - cpu0:.1f} |")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB; verdict "
          f"{verdict.verdict} ({verdict.summary['tests']} tests, {verdict.summary['rows_removed']} rows removed)")
    for note in verdict.notes:
        print(f"note: {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timing", action="store_true", help="time profile + validate of --rows rows")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--tmp", default=None, help="folder for the timing's Parquet files")
    parser.add_argument("--clean", type=int, default=200, help="clean batches (false-failure rate)")
    parser.add_argument("--reps", type=int, default=10, help="batches per poisoned cell")
    parser.add_argument("--headline-reps", type=int, default=100,
                        help="batches for the cells of the promise (1,000 rows: 10% flips, 5% backdoor, 0.25 sd)")
    parser.add_argument("--peer-path", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    timing(args) if args.timing else detection(args)


if __name__ == "__main__":
    main()
