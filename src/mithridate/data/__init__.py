"""Datasets: the one data notion, loaders and writers, built-in demo data."""

from mithridate.data.dataset import Dataset, split
from mithridate.data.demo import DEMOS, demo
from mithridate.data.io import atomic_path, data_format, load, load_bytes, read_table, save, table_dataset, to_table

__all__ = [
    "DEMOS",
    "Dataset",
    "atomic_path",
    "data_format",
    "demo",
    "load",
    "load_bytes",
    "read_table",
    "save",
    "split",
    "table_dataset",
    "to_table",
]
