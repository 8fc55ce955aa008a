"""Loaders and writers: good input round-trips, bad input gets one clear DataError and writes nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mithridate.data import Dataset, demo, load, save, split
from mithridate.errors import DataError


@pytest.fixture
def mixed_table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 60
    return pd.DataFrame({
        "age": np.where(rng.random(n) < 0.1, np.nan, rng.integers(18, 90, n).astype(float)),
        "city": rng.choice(["paris", "lyon", None], n),
        "member": rng.random(n) < 0.5,
        "score": rng.normal(size=n),
        "label": rng.choice(["spam", "ham"], n),
    })


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_table_round_trip_keeps_mixed_types_and_missing_values(tmp_path, mixed_table, suffix):
    path = tmp_path / f"data{suffix}"
    if suffix == ".parquet":
        mixed_table.to_parquet(path, index=False)
    else:
        mixed_table.to_csv(path, index=False, sep="\t" if suffix == ".tsv" else ",")
    ds = load(path, label="label")
    assert ds.kind == "table" and ds.n_rows == 60 and ds.classes == ("ham", "spam")
    assert list(ds.features.columns) == ["age", "city", "member", "score"]
    assert ds.features["age"].isna().sum() == mixed_table["age"].isna().sum()
    np.testing.assert_array_equal(ds.labels, mixed_table["label"].to_numpy())
    out = tmp_path / f"copy{suffix}"
    save(ds, out)
    again = load(out, label="label")
    np.testing.assert_array_equal(again.y, ds.y)
    pd.testing.assert_frame_equal(again.features, ds.features, check_dtype=False)


def test_table_encoding_handles_categories_and_missing(mixed_table):
    from mithridate.represent import TableEncoder

    ds = Dataset.from_labels(mixed_table.drop(columns="label"), mixed_table["label"])
    matrix = TableEncoder().fit_transform(ds.features)
    assert matrix.dtype == np.float32 and np.isfinite(matrix).all()
    # age (+ its missing indicator), score, and one-hot city/member levels
    assert matrix.shape == (60, 2 + 1 + 2 + 2)


def test_source_and_id_columns(tmp_path, mixed_table):
    table = mixed_table.assign(uid=np.arange(100, 160), origin=["vendor-a"] * 30 + ["vendor-b"] * 30)
    table.to_csv(tmp_path / "t.csv", index=False)
    ds = load(tmp_path / "t.csv", label="label", source="origin", row_id="uid")
    assert "origin" not in ds.features and "uid" not in ds.features
    assert ds.row_id[0] == 100 and ds.source[-1] == "vendor-b"
    sub = ds.take(ds.source == "vendor-b")
    assert sub.n_rows == 30 and sub.row_id[0] == 130
    save(sub, tmp_path / "b.csv")
    back = pd.read_csv(tmp_path / "b.csv")
    assert list(back["uid"]) == list(range(130, 160)) and set(back["origin"]) == {"vendor-b"}


@pytest.mark.parametrize("shape", [(40, 6), (40, 5, 5), (40, 5, 5, 3)])
def test_npz_shapes_decide_table_or_images(tmp_path, shape):
    rng = np.random.default_rng(1)
    X, y = rng.random(shape).astype(np.float32), rng.integers(0, 3, shape[0])
    np.savez(tmp_path / "d.npz", X=X, y=y)
    ds = load(tmp_path / "d.npz")
    assert ds.kind == ("table" if len(shape) == 2 else "image")
    save(ds, tmp_path / "e.npz")
    again = load(tmp_path / "e.npz")
    np.testing.assert_array_equal(again.y, ds.y)
    np.testing.assert_allclose(np.asarray(again.features), X.reshape(shape))


def test_image_folder_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    for label in ("cat", "dog"):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "imgs" / label / f"{i}.png")
    ds = load(tmp_path / "imgs")
    assert ds.kind == "image" and ds.features.shape == (6, 6, 6, 3) and ds.classes == ("cat", "dog")
    save(ds, tmp_path / "out")
    again = load(tmp_path / "out")
    np.testing.assert_array_equal(np.asarray(again.features), np.asarray(ds.features))
    np.testing.assert_array_equal(again.labels, ds.labels)


def _write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return path


def test_hostile_labels_stay_inside_the_image_folder(tmp_path):
    labels = np.array(["../../escaped", "/abs/escaped", "..", ".hidden", "a\\b", "50%", "cat"])
    images = np.random.default_rng(0).integers(0, 255, (len(labels) * 2, 8, 8), dtype=np.uint8)
    data = Dataset.from_labels(images, np.repeat(labels, 2), name="hostile")
    out = tmp_path / "deep" / "out"
    out.parent.mkdir()
    save(data, out)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) == len(images) and all(out in p.parents for p in written)
    assert not (tmp_path / "escaped").exists() and not Path("/abs/escaped").exists()
    back = load(out)
    assert sorted(back.classes) == sorted(labels.tolist())



@pytest.mark.parametrize(
    ("name", "content", "label", "message"),
    [
        ("missing.csv", None, "label", "no such file"),
        ("empty.csv", "", "label", "empty"),
        ("header.csv", "a,label\n", "label", "no rows"),
        ("t.csv", "a,b\n1,x\n2,y\n", "label", "unknown label column"),
        ("t.csv", "a,b\n1,x\n2,y\n", None, "name the label column"),
        ("t.csv", "a,label\n1,x\n2,x\n", "label", "only one class"),
        ("t.csv", "a,label\n1,x\n2,\n3,y\n", "label", "have no label"),
        ("t.parquet", b"PAR1 not really parquet", "label", "cannot read as parquet"),
        ("t.xlsx", "x", "label", "unknown format"),
        ("bad.npz", b"garbage", None, "cannot read as npz"),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path, name, content, label, message):
    path = tmp_path / name if content is None else _write(tmp_path, name, content)
    with pytest.raises(DataError, match=message) as info:
        load(path, label=label)
    assert "\n" not in str(info.value)


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "a.npz", X=np.zeros((5, 2)), y=np.zeros(4))
    with pytest.raises(DataError, match="shapes disagree"):
        load(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", X=np.zeros((5, 2)))
    with pytest.raises(DataError, match="missing y"):
        load(tmp_path / "b.npz")
    np.savez(tmp_path / "c.npz", X=np.zeros((4, 2)), y=np.array([{"a": 1}] * 4, dtype=object))
    with pytest.raises(DataError, match="pickle"):
        load(tmp_path / "c.npz")


def test_image_folder_errors(tmp_path):
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="one sub-folder per class"):
        load(tmp_path / "flat")
    for label, size in (("a", 4), ("b", 5)):
        (tmp_path / "mixed" / label).mkdir(parents=True)
        Image.fromarray(np.zeros((size, size), np.uint8)).save(tmp_path / "mixed" / label / "0.png")
    with pytest.raises(DataError, match="differ in size"):
        load(tmp_path / "mixed")
    (tmp_path / "broken" / "a").mkdir(parents=True)
    (tmp_path / "broken" / "a" / "0.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="unreadable image"):
        load(tmp_path / "broken")


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    ds = demo("wine")
    target = tmp_path / "out.csv"
    target.write_text("previous good content")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", boom)
    with pytest.raises(OSError):
        save(ds, target)
    assert target.read_text() == "previous good content"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_dataset_is_immutable_and_validated():
    ds = demo("digits")
    with pytest.raises(ValueError):
        ds.features[0, 0, 0] = 1.0
    with pytest.raises(ValueError):
        ds.y[0] = 3
    with pytest.raises(DataError, match="shapes disagree"):
        Dataset(features=np.zeros((3, 4, 4)), y=np.zeros(2, int), classes=(0, 1))
    with pytest.raises(DataError, match="not unique"):
        Dataset(features=np.zeros((2, 4, 4)), y=np.array([0, 1]), classes=(0, 1), row_id=[7, 7])


def test_demo_data_and_split():
    digits = demo("digits")
    assert digits.kind == "image" and digits.features.shape == (1797, 8, 8) and digits.n_classes == 10
    train, test = split(digits, test_size=0.25, seed=0)
    assert train.n_rows + test.n_rows == 1797
    assert not set(train.row_id) & set(test.row_id)
    assert demo("breast_cancer").classes == ("benign", "malignant")
    with pytest.raises(DataError, match="unknown demo"):
        demo("mnist")
    assert load("demo:wine").n_rows == 178
