"""Loading datasets from the formats users keep, and writing them back in the same format.

Formats: CSV/TSV, Parquet, NumPy ``.npz`` (arrays ``X`` and ``y``; ``X`` of shape (n, d) is a table,
(n, H, W) or (n, H, W, C) images) and an image folder (one sub-folder per class). ``demo:NAME`` names a
built-in dataset (see :mod:`mithridate.data.demo`). Every write is atomic: a temporary file beside the
target, renamed into place, so an interrupted write never leaves half a file.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePath

import numpy as np
import pandas as pd

from mithridate.data.dataset import Dataset
from mithridate.errors import DataError

TABLE_SUFFIXES = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
DEFAULT_LABEL_COLUMNS = ("label", "target", "y", "class")


def data_format(path: str | Path) -> str:
    """``csv``, ``parquet``, ``npz`` or ``folder`` (an image folder), judged from the path."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in TABLE_SUFFIXES:
        return TABLE_SUFFIXES[suffix]
    if suffix == ".npz":
        return "npz"
    if suffix == "" or path.is_dir():
        return "folder"
    raise DataError(f"{path}: unknown format {suffix!r} (use .csv, .tsv, .parquet, .npz or an image folder)")


def load(
    path: str | Path,
    label: str | None = None,
    *,
    source: str | None = None,
    row_id: str | None = None,
) -> Dataset:
    """Load a dataset. ``label``, ``source`` and ``row_id`` name table columns (tables only)."""
    text = str(path)
    if text.startswith("demo:"):
        from mithridate.data.demo import demo

        return demo(text.removeprefix("demo:"))
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    fmt = data_format(path)
    if fmt == "folder":
        return _load_image_folder(path)
    if fmt == "npz":
        return _load_npz(path)
    return table_dataset(read_table(path, path.name), label, source=source, row_id=row_id, name=path.name)


def load_bytes(data: bytes, name: str, label: str | None = None) -> Dataset:
    """A dataset from a file's bytes and its name (``.csv``, ``.tsv``, ``.parquet``, ``.npz``), by the
    rules of :func:`load` (the vault loads what it stored this way).

    >>> load_bytes(b"x,label\\n1,a\\n2,b\\n", "t.csv").n_rows
    2
    """
    if not data:
        raise DataError(f"{name}: the file is empty")
    if data_format(name) == "npz":
        named = io.BytesIO(data)
        named.name = PurePath(name).name  # type: ignore[attr-defined]
        return _load_npz(named)
    return table_dataset(read_table(io.BytesIO(data), name), label, name=PurePath(name).name)


def read_table(source, name: str, *, as_text: bool = False, chunksize: int | None = None):
    """A table from a path or a binary file, as every loader reads it: Parquet by its suffix, tab-separated
    for ``.tsv``, otherwise CSV with the delimiter sniffed. ``as_text``: every cell as the text it holds
    (missing cells as ``""``); ``chunksize``: an iterator of frames of that many rows."""
    suffix = PurePath(name).suffix.lower()
    try:
        if TABLE_SUFFIXES.get(suffix) == "parquet":
            if chunksize is None:
                table = pd.read_parquet(source)
                return table.astype(str) if as_text else table
            import pyarrow.parquet as pq

            return ((lambda f: f.astype(str) if as_text else f)(b.to_pandas())
                    for b in pq.ParquetFile(source).iter_batches(batch_size=chunksize))
        text = {"dtype": str, "keep_default_na": False} if as_text else {}
        sep = {"sep": "\t"} if suffix == ".tsv" else {"sep": None, "engine": "python"}
        if chunksize is not None and not isinstance(source, (str, Path)):
            source = io.TextIOWrapper(source, encoding="utf-8", newline="")
        return pd.read_csv(source, chunksize=chunksize, **sep, **text)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{name}: the file is empty") from exc
    except Exception as exc:  # parsers raise many types; the user needs the reason, not the type
        raise DataError(f"{name}: cannot read as {TABLE_SUFFIXES.get(suffix, 'csv')}: "
                        f"{str(exc).splitlines()[0]}") from exc


def table_dataset(
    table: pd.DataFrame,
    label: str | None,
    *,
    source: str | None = None,
    row_id: str | None = None,
    name: str = "table",
) -> Dataset:
    """A dataset from a DataFrame holding features, the label column and optional id/source columns."""
    if table.shape[0] == 0:
        raise DataError(f"{name}: the table has no rows")
    columns = [str(c) for c in table.columns]
    table = table.set_axis(columns, axis=1)
    if label is None:
        label = next((c for c in DEFAULT_LABEL_COLUMNS if c in columns), None)
        if label is None:
            raise DataError(f"{name}: name the label column with --label (columns: {', '.join(columns)})")
    for role, col in (("label", label), ("source", source), ("row id", row_id)):
        if col is not None and col not in columns:
            raise DataError(f"{name}: unknown {role} column {col!r} (columns: {', '.join(columns)})")
    features = table.drop(columns=[c for c in (label, source, row_id) if c is not None])
    if features.shape[1] == 0:
        raise DataError(f"{name}: no feature columns besides the label")
    return Dataset.from_labels(
        features.reset_index(drop=True),
        table[label].to_numpy(),
        row_id=None if row_id is None else table[row_id].to_numpy(),
        source=None if source is None else table[source].astype(str).to_numpy(),
        label_name=label,
        id_name=row_id,
        source_name=source,
        name=name,
    )


def _load_npz(path: Path) -> Dataset:
    import zipfile

    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: cannot read as npz: not a NumPy .npz archive")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except ValueError as exc:
        raise DataError(f"{path}: cannot read npz without pickle (object arrays are refused): {exc}") from exc
    except Exception as exc:
        raise DataError(f"{path}: cannot read as npz: {exc}") from exc
    missing = [k for k in ("X", "y") if k not in arrays]
    if missing:
        raise DataError(f"{path}: npz needs arrays X and y; missing {', '.join(missing)}")
    X, y = arrays["X"], arrays["y"]
    if X.ndim == 0 or y.ndim == 0:
        raise DataError(f"{path}: X and y must hold one entry per row; got shapes {X.shape} and {y.shape}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.reshape(-1)
    if y.ndim != 1:
        raise DataError(f"{path}: y must be one label per row, shape (n,); got {y.shape}")
    if len(X) != len(y):
        raise DataError(f"{path}: X has {len(X)} rows but y has {len(y)} (shapes disagree)")
    if X.ndim == 2:
        features: pd.DataFrame | np.ndarray = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    elif X.ndim in (3, 4):
        features = X
    else:
        raise DataError(f"{path}: X must be (n, d), (n, H, W) or (n, H, W, C); got shape {X.shape}")
    return Dataset.from_labels(
        features,
        y,
        row_id=arrays.get("row_id"),
        source=arrays.get("source"),
        name=path.name,
    )


def _load_image_folder(path: Path) -> Dataset:
    from PIL import Image, UnidentifiedImageError

    class_dirs = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{path}: an image folder needs one sub-folder per class; found none")
    images, labels = [], []
    for class_dir in class_dirs:
        for file in sorted(class_dir.iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(file) as img:
                    img = img.convert("L") if img.mode in ("1", "L", "I", "I;16", "F") else img.convert("RGB")
                    images.append(np.asarray(img))
            except (UnidentifiedImageError, OSError) as exc:
                raise DataError(f"{file}: unreadable image ({exc})") from exc
            labels.append(label_of_folder(class_dir.name))
    if not images:
        raise DataError(f"{path}: no images found in its class folders")
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise DataError(f"{path}: images differ in size or channels ({', '.join(map(str, sorted(shapes)))})")
    return Dataset.from_labels(np.stack(images), np.array(labels), name=path.name)


# --- writing ----------------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it into place only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def to_table(dataset: Dataset) -> pd.DataFrame:
    """Features plus label (and id/source columns, if the data came with them) as one DataFrame."""
    if dataset.kind != "table":
        raise DataError(f"{dataset.name}: image data cannot be written as a table; use .npz or a folder")
    table = dataset.features.copy()
    table[dataset.label_name] = dataset.labels
    if dataset.id_name is not None:
        table.insert(0, dataset.id_name, dataset.row_id)
    if dataset.source_name is not None and dataset.source is not None:
        table[dataset.source_name] = dataset.source
    return table


def save(dataset: Dataset, path: str | Path) -> Path:
    """Write ``dataset`` in the format the path names (same formats as :func:`load`)."""
    path = Path(path)
    fmt = data_format(path)
    if fmt == "folder":
        _save_image_folder(dataset, path)
        return path
    with atomic_path(path) as tmp:
        if fmt == "npz":
            X = dataset.features.to_numpy() if dataset.kind == "table" else np.asarray(dataset.features)
            arrays = {"X": X, "y": _plain(dataset.labels), "row_id": np.asarray(dataset.row_id)}
            if dataset.source is not None:
                arrays["source"] = np.asarray(dataset.source, dtype=str)
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
        elif fmt == "parquet":
            to_table(dataset).to_parquet(tmp, index=False)
        else:
            sep = "\t" if path.suffix.lower() == ".tsv" else ","
            to_table(dataset).to_csv(tmp, index=False, sep=sep)
    return path


def _plain(labels: np.ndarray) -> np.ndarray:
    """Labels as a non-object array (npz must load without pickle)."""
    values = labels.tolist()
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=np.int64)
    if all(isinstance(v, (int, float, np.number)) for v in values):
        return np.asarray(values, dtype=np.float64)
    return np.asarray([str(v) for v in values])


def folder_of_label(label) -> str:
    """A class label as a folder name that stays inside its parent: path separators, ``%`` and a leading
    dot are percent-encoded (``"../x"`` -> ``"%2E.%2Fx"``); :func:`label_of_folder` reverses it.

    >>> folder_of_label("../../x"), folder_of_label("/x/y"), folder_of_label("cat")
    ('%2E.%2F..%2Fx', '%2Fx%2Fy', 'cat')
    >>> label_of_folder(folder_of_label("../../x"))
    '../../x'
    """
    from urllib.parse import quote

    text = str(label)
    if not text or "\x00" in text:
        raise DataError(f"the label {text!r} cannot name a class folder")
    name = quote(text, safe=" !#$&'()+,;=@[]^`{}~-_")
    return "%2E" + name[1:] if name.startswith(".") else name


def label_of_folder(name: str) -> str:
    """The class label a folder written by :func:`folder_of_label` stands for."""
    from urllib.parse import unquote

    return unquote(name)


def _save_image_folder(dataset: Dataset, path: Path) -> None:
    from PIL import Image

    if dataset.kind != "image":
        raise DataError(f"{path}: only image data can be written as an image folder")
    images = np.asarray(dataset.features)
    lo, hi = dataset.image_range()
    if images.dtype != np.uint8:
        images = np.clip(np.rint((images - lo) / max(hi - lo, 1e-12) * 255), 0, 255).astype(np.uint8)
    if path.exists() and any(path.iterdir()):
        raise DataError(f"{path}: folder exists and is not empty; choose a new output folder")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent if path.parent.exists() else None))
    try:
        for image, label, rid in zip(images, dataset.labels, dataset.row_id, strict=True):
            class_dir = tmp / folder_of_label(label)
            class_dir.mkdir(exist_ok=True)
            stem = f"{rid:06d}" if isinstance(rid, (int, np.integer)) else folder_of_label(rid)
            Image.fromarray(image.squeeze(-1) if image.ndim == 3 and image.shape[-1] == 1 else image).save(
                class_dir / f"{stem}.png"
            )
        if path.exists():
            path.rmdir()
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


FORMAT_FAMILY = {"csv": "table", "parquet": "table", "npz": "npz", "folder": "folder"}


def check_output_format(dataset: Dataset, data: str, out: str | Path) -> None:
    """``out`` must be of the input's format family: a table (CSV/TSV/Parquet), .npz, or an image folder
    (for built-in ``demo:`` data, its kind decides)."""
    wanted = (FORMAT_FAMILY[data_format(data)] if not data.startswith("demo:")
              else "table" if dataset.kind == "table" else "image")
    got = FORMAT_FAMILY[data_format(out)]
    if wanted == got or (wanted == "image" and got in ("npz", "folder")):
        return
    expect = {"table": ".csv, .tsv or .parquet", "npz": ".npz", "folder": "a folder (no suffix)",
              "image": ".npz or a folder"}[wanted]
    raise DataError(f"--out {out} does not match the input's format: use {expect}")
