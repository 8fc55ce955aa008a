"""Federated learning defences: robust aggregation, malicious-client simulation, client-level differential
privacy, secure aggregation, and Flower integration (``mithridate.federated.flower``).

The one-call contract::

    >>> import numpy as np
    >>> from mithridate.federated import aggregate
    >>> updates = np.vstack([np.ones((8, 3)), 100 * np.ones((2, 3))])
    >>> aggregate("median", updates)
    array([1., 1., 1.])
    >>> aggregate("krum", updates, num_malicious=2)
    array([1., 1., 1.])
"""

from __future__ import annotations

import numpy as np

from mithridate.federated.aggregators import (
    AGGREGATORS,
    CONTEXT_KEYS,
    NAMES,
    AggregationError,
    Aggregator,
    make_aggregator,
)


def aggregate(name: str, updates, weights=None, **options) -> np.ndarray:
    """Aggregate a ``(clients, parameters)`` array with the rule ``name`` (see :data:`NAMES`).

    ``weights``: self-reported example counts (bounded, see ``bound_weights``). ``options``: the rule's
    settings (``num_malicious``, ``m``, ``beta``, ``tau``, ``max_norm``, ...) and, for the rules that need
    them, ``server_update`` (FLTrust) or ``center`` (centered clipping).
    """
    context = {k: options.pop(k) for k in CONTEXT_KEYS if k in options}
    return make_aggregator(name, **options)(updates, weights, **context)


__all__ = ["AGGREGATORS", "NAMES", "AggregationError", "Aggregator", "aggregate", "make_aggregator"]
