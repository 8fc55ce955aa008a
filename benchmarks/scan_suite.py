"""The scan on real data: our whole default scan against cleanlab, table by table, on the same representation.

For every catalogue data set (:mod:`benchmarks.real_data`: 40 real tables and two real image sets) and case

- ``clean``: the data as shipped (real data carries its own label noise and ambiguity);
- ``random 10%`` / ``random 30%``: that share of all rows relabelled to another class at random;
- ``targeted 10%``: 10% of all rows (at most 40% of the source class) moved from one class to one other:
  for two classes, from the minority to the majority (hide the positives); otherwise the pair the clean
  out-of-fold model confuses most;
- ``adversarial 10%``: greedy loss-maximising flips (:class:`~mithridate.attacks.AdversarialFlip`);
- ``backdoor 5%`` (tables): rare in-range values written into three columns, rows relabelled to the
  majority class, at most half the other classes' rows (:class:`~mithridate.attacks.FeatureTrigger`);
  images: a 3x3 patch and a blended key at 1%, 5% and 10%, target class 0,

the poisoned data's representation (out-of-fold probabilities from 5-fold cross-validation, and the
geometry) is computed once and cached; then **ours** is ``Scan().fit(data, representation)`` with its
defaults (every detector a new user gets, flags as ``findings.flagged``), and **cleanlab** is
``cleanlab.filter.find_label_issues(labels, pred_probs)`` with its defaults on the same out-of-fold
probabilities. Scores: F1 (and precision, recall) for the poisoned rows; on clean data the share of rows
flagged; the time each takes after the shared representation.

Run: ``.venv/bin/python -m benchmarks.scan_suite`` (all; about an hour on 2 cores the first time, minutes
once the representations are cached in ``--cache``). ``--data NAME ...`` limits it; ``--half tune``.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from benchmarks.label_flips import markdown, prf
from benchmarks.real_data import IMAGES, TABLES, half, load
from mithridate.attacks import AdversarialFlip, BlendTrigger, FeatureTrigger, PatchTrigger, RandomFlip, TargetedFlip
from mithridate.data import Dataset
from mithridate.represent import Representation, represent

TABLE_CASES = ("clean", "random 10%", "random 30%", "targeted 10%", "adversarial 10%", "backdoor 5%")
IMAGE_CASES = ("clean", "random 10%", "random 30%", "targeted 10%", "adversarial 10%",
               "patch 1%", "patch 5%", "patch 10%", "blend 1%", "blend 5%", "blend 10%",
               "solid patch 1%", "faint blend 1%", "random patch 5%", "corner patch 3%", "strong blend 2%")
"""Backdoor cases vary the target class, the patch's place, size and pattern (a random patch in the centre,
over the strokes) and the blend's strength. The detectors were built looking at the first six (target 0);
"solid patch", "faint blend" and "random patch" were looked at when the copy model was built; the last two
were added after it and first run for the table in docs/scan.md."""
FLIPS = ("random 10%", "random 30%", "targeted 10%", "adversarial 10%")
DEFAULT_CACHE = Path.home() / ".cache" / "mithridate-bench"


def cases(name: str) -> tuple[str, ...]:
    return IMAGE_CASES if name in IMAGES else TABLE_CASES


def _slug(case: str) -> str:
    return case.replace(" ", "").replace("%", "")


def representation(data: Dataset, name: str, case: str, seed: int, cache: Path) -> tuple[Representation, float]:
    """The representation of the (poisoned) data, from ``cache`` when it holds it (npz, no pickle), and the
    seconds it took to compute (0 when cached: the stored time is returned)."""
    path = cache / f"{name}-{_slug(case)}-{seed}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            label = z["label_features"] if "label_features" in z.files else None
            return Representation(z["features"], z["proba"], str(z["description"]), label), float(z["seconds"])
    start = time.perf_counter()
    rep = represent(data, random_state=seed)
    seconds = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    extra = {} if rep.label_features is None else {"label_features": rep.label_features}
    np.savez(tmp, features=rep.features, proba=rep.proba, description=rep.description, seconds=seconds, **extra)
    tmp.rename(path)
    return rep, seconds


def targeted_pair(data: Dataset, clean_proba: np.ndarray) -> tuple[int, int]:
    """``(source, target)``: minority to majority for two classes, else the most confused pair."""
    counts = np.bincount(data.y, minlength=data.n_classes)
    if data.n_classes == 2:
        source = int(np.argsort(counts, kind="stable")[0])  # the minority (class 0 on a tie)
        return source, 1 - source
    confusion = np.zeros((data.n_classes, data.n_classes))
    np.add.at(confusion, (data.y, clean_proba.argmax(1)), 1)
    np.fill_diagonal(confusion, -1)
    confusion[counts < 10, :] = -1  # a source needs rows to take from
    source, target = np.unravel_index(confusion.argmax(), confusion.shape)
    return int(source), int(target)


def poison(data: Dataset, name: str, case: str, seed: int, cache: Path) -> tuple[Dataset, np.ndarray]:
    """The data with ``case`` applied, and the mask of the poisoned rows."""
    if case == "clean":
        return data, np.zeros(data.n_rows, bool)
    kind, rate = case.rsplit(" ", 1)
    rate = float(rate.rstrip("%")) / 100
    if kind == "random":
        p = RandomFlip(rate=rate, random_state=seed).poison(data)
    elif kind == "adversarial":
        p = AdversarialFlip(rate=rate, random_state=seed).poison(data)
    elif kind == "targeted":
        clean_rep, _ = representation(data, name, "clean", seed, cache)
        source, target = targeted_pair(data, clean_rep.proba)
        n_source = int((data.y == source).sum())
        share = min(rate * data.n_rows, 0.4 * n_source) / n_source
        p = TargetedFlip(source=source, target=target, rate=share, random_state=seed).poison(data)
    elif kind == "backdoor":
        majority = int(np.bincount(data.y).argmax())
        outside = int((data.y != majority).sum())  # at most half the other classes' rows
        p = FeatureTrigger(target=majority, rate=min(rate, 0.5 * outside / data.n_rows),
                           n_columns=min(3, data.features.shape[1]),
                           random_state=seed).poison(data)
    else:
        p = image_trigger(kind, rate, seed).poison(data)
    return p.dataset, p.mask


def image_trigger(kind: str, rate: float, seed: int):
    """The backdoor of an image case (``patch``, ``blend``, ``solid patch``, ...), unfitted."""
    if kind == "patch":
        return PatchTrigger(target=0, rate=rate, size=3, random_state=seed)
    if kind == "blend":
        return BlendTrigger(target=0, rate=rate, alpha=0.2, random_state=seed)
    if kind == "solid patch":
        return PatchTrigger(target=3, rate=rate, size=4, location="top-left", pattern="solid", random_state=seed)
    if kind == "faint blend":
        return BlendTrigger(target=7, rate=rate, alpha=0.1, random_state=seed)
    if kind == "corner patch":
        return PatchTrigger(target=8, rate=rate, size=2, location="bottom-left", random_state=seed)
    if kind == "strong blend":
        return BlendTrigger(target=2, rate=rate, alpha=0.3, random_state=seed)
    if kind == "random patch":
        return PatchTrigger(target=5, rate=rate, size=3, location="center", pattern="random", random_state=seed)
    raise ValueError(f"unknown case {kind!r}")


def run_case(name: str, case: str, seed: int, cache: Path) -> dict:
    """One data set and case: ours and cleanlab's flags, scored against the truth."""
    from cleanlab.filter import find_label_issues

    from mithridate.detect import Scan

    with threadpool_limits(limits=1):
        data, truth = poison(load(name), name, case, seed, cache)
        rep, rep_seconds = representation(data, name, case, seed, cache)
        start = time.perf_counter()
        scan = Scan(random_state=seed).fit(data, rep)
        ours_seconds = time.perf_counter() - start
        start = time.perf_counter()
        theirs = find_label_issues(data.y, rep.proba, n_jobs=1)
        theirs_seconds = time.perf_counter() - start
    findings = scan.report_.findings
    ours = findings["flagged"].to_numpy(bool)
    row = {"data": name, "half": "image" if name in IMAGES else half(name), "case": case, "seed": seed,
           "rows": data.n_rows, "poisoned": int(truth.sum()), "representation_s": rep_seconds,
           "ours_s": ours_seconds, "cleanlab_s": theirs_seconds}
    for who, flags in (("ours", ours), ("cleanlab", theirs)):
        p, r, f = prf(flags, truth)
        row |= {f"{who}_P": p, f"{who}_R": r, f"{who}_F1": f, f"{who}_flagged": float(flags.mean())}
    # the backdoor finding: the flagged rows of the classes a backdoor detector declares poisoned (the
    # rest of the flags are the data's own label issues and notes, reported apart)
    declared = sorted({c for d in scan.detectors_ for c in getattr(d, "poisoned_classes_", [])})
    backdoor = ours & np.isin(data.y, declared)
    row["declared"] = " ".join(str(data.classes[c]) for c in declared)
    row["backdoor_P"], row["backdoor_R"], row["backdoor_F1"] = prf(backdoor, truth)
    if "severity" in findings:
        row["ours_notes"] = float((findings["severity"] == "note").mean())
    for d in scan.detectors_:
        row[f"flags_{d.name}"] = int(d.flags_.sum())
        if d.name == "label_issues":
            row["label_issues_F1"] = prf(d.flags_, truth)[2]
    return row


def run(names, seeds=(0,), cache: Path = DEFAULT_CACHE, jobs: int = 2, verbose: bool = True) -> pd.DataFrame:
    work = [(n, c, s) for n in names for s in seeds for c in cases(n)]
    # clean first: targeted flips read the clean representation
    work.sort(key=lambda w: w[1] != "clean")
    rows = []
    with ProcessPoolExecutor(jobs) as pool:
        futures = [(w, pool.submit(run_case, *w, cache)) for w in work]
        for (n, c, s), fut in futures:
            try:
                row = fut.result()
            except Exception as exc:  # one broken case must not hide the others
                print(f"  {n:13s} {c:16s} seed {s}: FAILED {type(exc).__name__}: {exc}", flush=True)
                continue
            rows.append(row)
            if verbose:
                print(f"  {n:13s} {c:16s} seed {s}: ours F1 {row['ours_F1']:.3f} flagged {row['ours_flagged']:.3f}"
                      f" | cleanlab F1 {row['cleanlab_F1']:.3f} flagged {row['cleanlab_flagged']:.3f}"
                      f" ({row['ours_s']:.1f}s)", flush=True)
    return pd.DataFrame(rows)


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """One line per data set: mean flip F1 (ours, cleanlab), each backdoor case's, clean flagged shares, time."""
    lines = []
    for (name, part), frame in results.groupby(["data", "half"], sort=False):
        flips = frame[frame.case.isin(FLIPS)]
        clean = frame[frame.case == "clean"]
        line = {"data": name, "half": part, "rows": int(frame.rows.iloc[0]),
                "flip_F1_ours": flips.ours_F1.mean(), "flip_F1_cleanlab": flips.cleanlab_F1.mean()}
        line["gap"] = line["flip_F1_ours"] - line["flip_F1_cleanlab"]
        for case in FLIPS:
            sub = frame[frame.case == case]
            line[f"{_slug(case)}_ours"] = sub.ours_F1.mean()
            line[f"{_slug(case)}_cl"] = sub.cleanlab_F1.mean()
        backdoor = frame[~frame.case.isin((*FLIPS, "clean"))]
        if len(backdoor):
            line["backdoor_P_ours"], line["backdoor_R_ours"] = backdoor.ours_P.mean(), backdoor.ours_R.mean()
        line["clean_flagged_ours"] = clean.ours_flagged.mean()
        line["clean_flagged_cleanlab"] = clean.cleanlab_flagged.mean()
        line["scan_s"] = frame.ours_s.mean()
        line["cleanlab_s"] = frame.cleanlab_s.mean()
        line["representation_s"] = frame.representation_s.mean()
        lines.append(line)
    return pd.DataFrame(lines)


def verdict(summary: pd.DataFrame, results: pd.DataFrame) -> list[str]:
    """The quality bar, line by line: tables per half, then image backdoors."""
    out = []
    tables = summary[summary.half != "image"]
    for part, frame in ([("all", tables), *tables.groupby("half")] if len(tables) else []):
        out.append(f"{part:9s}: flip F1 ours {frame.flip_F1_ours.mean():.3f} vs cleanlab "
                   f"{frame.flip_F1_cleanlab.mean():.3f} (gap {frame.gap.mean():+.3f}; worst table "
                   f"{frame.gap.min():+.3f} on {frame.data.iloc[int(frame.gap.argmin())]}); clean flagged ours "
                   f"{frame.clean_flagged_ours.mean():.3f} vs cleanlab {frame.clean_flagged_cleanlab.mean():.3f}")
    images = results[results.half == "image"]
    for name, frame in images.groupby("data"):
        backdoor = frame[~frame.case.isin((*FLIPS, "clean"))]
        cells = ", ".join(f"{c} {p:.2f}/{r:.2f} ({q:.2f}/{s:.2f})" for c, p, r, q, s in zip(
            backdoor.case, backdoor.backdoor_P, backdoor.backdoor_R, backdoor.ours_P, backdoor.ours_R, strict=True))
        clean = frame[frame.case == "clean"]
        met = ((backdoor.backdoor_R >= 0.95) & (backdoor.backdoor_P >= 0.90)).sum()
        out.append(f"{name}: backdoor precision/recall of the backdoor finding (whole scan) {cells}; "
                   f"{met} of {len(backdoor)} cases at recall >= 0.95 and precision >= 0.90; clean flagged "
                   f"{float(clean.ours_flagged.mean()):.2%}, classes declared backdoored on clean data: "
                   f"{', '.join(clean.declared.fillna('').astype(str)) or 'none'}")
    if not len(tables):
        return out
    excess = tables.clean_flagged_ours - tables.clean_flagged_cleanlab
    over = tables[excess > 0.01]
    out.append(f"clean tables over cleanlab + 1 point: {len(over)}"
               + (" (" + ", ".join(f"{d} {e:+.3f}" for d, e in zip(over.data, excess[excess > 0.01],
                                                                    strict=True)) + ")" if len(over) else ""))
    behind = tables[tables.gap < -0.03]
    out.append(f"tables more than 0.03 behind cleanlab: {len(behind)}"
               + (" (" + ", ".join(f"{d} {g:+.3f}" for d, g in zip(behind.data, behind.gap, strict=True)) + ")"
                  if len(behind) else ""))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    names = [t.name for t in TABLES] + list(IMAGES)
    parser.add_argument("--data", nargs="+", default=None, choices=names, metavar="NAME",
                        help="data sets to run (default: every table; add digits / mnist for images)")
    parser.add_argument("--half", choices=("tune", "held-out"), default=None)
    parser.add_argument("--images", action="store_true", help="also run the image sets")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="folder for cached representations")
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    args = parser.parse_args(argv)
    chosen = args.data or [t.name for t in TABLES if args.half in (None, half(t.name))]
    if args.images and not args.data:
        chosen += list(IMAGES)
    results = run(chosen, tuple(args.seeds), args.cache, args.jobs)
    args.out.mkdir(parents=True, exist_ok=True)
    results.to_csv(args.out / "scan_suite_runs.csv", index=False)
    summary = summarize(results)
    with pd.option_context("display.width", 250, "display.max_columns", 40, "display.max_rows", 200):
        print(summary.to_string(index=False, float_format="{:.3f}".format))
    lines = verdict(summary, results)
    print("\n".join(lines))
    summary.to_csv(args.out / "scan_suite.csv", index=False)
    (args.out / "scan_suite.md").write_text(markdown(summary) + "\n" + "\n".join(lines) + "\n")
    print(f"written to {args.out}/scan_suite.csv, scan_suite.md, scan_suite_runs.csv")


if __name__ == "__main__":
    main()
