"""Validate each new batch against a verified baseline, and gate it.

>>> from mithridate.data import demo, split
>>> base, batch = split(demo("wine"), test_size=0.3, seed=0)
>>> verdict = Gate().check(profile(base), batch)
>>> verdict.verdict in ("pass", "warn")
True

- :mod:`~mithridate.validate.profile`: :class:`Baseline` / :func:`profile` build a :class:`Profile`
  (streamed, file-backed, no pickle);
- :mod:`~mithridate.validate.columns`, :mod:`~mithridate.validate.multivariate`,
  :mod:`~mithridate.validate.labels`: the test families, each returning :class:`Check` records;
- :mod:`~mithridate.validate.multiple_testing`: Benjamini-Hochberg / Holm across all tests;
- :mod:`~mithridate.validate.rows`: row-level sanitization (extreme values, abnormal correlations);
- :mod:`~mithridate.validate.gate`: :class:`Policy` (YAML), :class:`Gate`, :class:`Verdict`.
"""

from mithridate.validate.gate import Gate, Policy, RowPolicy, Verdict, validate
from mithridate.validate.profile import Baseline, Prepared, Profile, profile, profile_file
from mithridate.validate.results import Check

__all__ = ["Baseline", "Check", "Gate", "Policy", "Prepared", "Profile", "RowPolicy", "Verdict", "profile",
           "profile_file", "validate"]
