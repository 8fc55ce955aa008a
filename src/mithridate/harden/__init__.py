"""Hardened training (issue 14): trainers that resist poison the data checks missed, and certify what
they predict. One protocol (:class:`~mithridate.harden.base.Trainer`), one file per rule, models saved as
safetensors + JSON (:func:`~mithridate.harden.base.save`, :func:`~mithridate.harden.base.load`)."""

from mithridate.harden.bagging import Bagging
from mithridate.harden.base import TRAINERS, Trainer, load, make_trainer, save
from mithridate.harden.dpa import DeepPartitionAggregation
from mithridate.harden.dpsgd import DPSGD
from mithridate.harden.finite import FiniteAggregation
from mithridate.harden.isolate import BackdoorIsolation
from mithridate.harden.plain import Plain
from mithridate.harden.trimmed import TrimmedLoss

__all__ = ["DPSGD", "TRAINERS", "BackdoorIsolation", "Bagging", "DeepPartitionAggregation", "FiniteAggregation",
           "Plain", "Trainer", "TrimmedLoss", "load", "make_trainer", "save"]
