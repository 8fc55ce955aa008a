"""mithridate: protect machine-learning training pipelines against data poisoning, end to end."""

from mithridate.data import Dataset, demo, load, save
from mithridate.errors import DataError, MithridateError

__version__ = "0.1.0"
__all__ = ["DataError", "Dataset", "MithridateError", "demo", "load", "save"]
