"""Where the heavy, independent pieces of a scan run: in this process, or as tasks on a Ray cluster.

A scan's costliest step is training its out-of-fold models (one per fold, plus the image network on all
rows). They do not depend on each other, so an :class:`Engine` maps one function over them. The local engine
runs them one after the other; :class:`RayEngine` sends them to a Ray cluster as tasks, the data put once
in the object store, each task retried when its worker dies. Each piece is seeded the same way wherever it
runs, so a scan gives the same result on either engine (up to floating-point summation order where a
piece's own threads split a sum differently: see docs/scale.md).

>>> LocalEngine().map(pow, 2, [1, 2, 3])
[2, 4, 8]
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from mithridate.errors import MithridateError

Progress = Callable[[str], None]


class Engine(ABC):
    """Maps ``fn(shared, item)`` over ``items``; ``shared`` is sent once, the results come back in order.
    ``labels``: what each piece is, for ``progress``."""

    def connect(self) -> Engine:
        """Reach the machines the pieces will run on (nothing to do for this process); one-line error if not."""
        return self

    @abstractmethod
    def map(self, fn: Callable[[Any, Any], Any], shared: Any, items: Sequence[Any],
            progress: Progress | None = None, labels: Sequence[str] | None = None) -> list:
        """``[fn(shared, item) for item in items]``, wherever the engine runs them."""


def _labels(items: Sequence[Any], labels: Sequence[str] | None) -> list[str]:
    return list(labels) if labels is not None else [f"task {i + 1}/{len(items)}" for i in range(len(items))]


class LocalEngine(Engine):
    """Everything in this process, one piece after the other."""

    def map(self, fn, shared, items, progress=None, labels=None):
        results = []
        for item, label in zip(items, _labels(items, labels), strict=True):
            if progress:
                progress(label)
            results.append(fn(shared, item))
        return results


class RayEngine(Engine):
    """Pieces as Ray tasks on the cluster at ``address``: ``host:port`` or ``ray://host:port`` (Ray Client),
    ``"auto"`` (the cluster started on this machine with ``ray start``), or ``None``: the cluster this
    process is connected to, else the one ``RAY_ADDRESS`` names or ``ray start`` started here, else a new
    local one that stops with this process.

    ``num_cpus``: the CPUs each task reserves (Ray runs a task's numerical libraries with that many threads:
    on one big machine the local engine, whose pieces use every core, is usually as fast);
    ``max_retries``: how often a task whose worker died is run again. The workers need mithridate
    installed (the same version): Ray sends them the function's name, not its code.
    """

    def __init__(self, address: str | None = None, num_cpus: float = 1, max_retries: int = 3):
        self.address = address
        self.num_cpus = num_cpus
        self.max_retries = max_retries
        self._connected = False

    def connect(self) -> RayEngine:
        try:
            import ray
        except ImportError as exc:
            raise MithridateError(f"the Ray engine needs Ray ({exc.name} is missing): "
                                  "pip install 'mithridate[scale]'") from exc
        if self._connected and ray.is_initialized():
            return self  # checked once already (the CLI connects before the scan maps)
        named = self.address if self.address not in (None, "auto", "local") else \
            (os.environ.get("RAY_ADDRESS") if self.address is None else None)
        if named:
            _reachable(named)  # Ray itself retries an unreachable address for minutes
        if ray.is_initialized() and self.address not in (None, "auto") and not _same_cluster(ray, self.address):
            raise MithridateError(f"this process is already connected to another Ray cluster than {self.address}: "
                                  "call ray.shutdown() first")
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            except ImportError as exc:  # Ray Client needs grpc
                raise MithridateError(f"the Ray engine needs {exc.name}: pip install 'mithridate[scale]'") from exc
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise MithridateError(f"cannot reach a Ray cluster at {self.address or 'a new local instance'}: "
                                      f"{str(exc).splitlines()[0]}") from exc
        self._connected = True
        return self

    def map(self, fn, shared, items, progress=None, labels=None):
        self.connect()
        import ray
        from ray.exceptions import RayError, RayTaskError

        labels = _labels(items, labels)
        remote = ray.remote(num_cpus=self.num_cpus, max_retries=self.max_retries)(fn)
        ref = ray.put(shared)
        pending: dict = {}
        results: list = [None] * len(items)
        try:
            for i, item in enumerate(items):
                pending[remote.remote(ref, item)] = i
            if progress:
                progress(f"{len(items)} tasks sent to the Ray cluster")
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for future in ready:
                    i = pending.pop(future)
                    results[i] = ray.get(future)
                    if progress:
                        progress(f"{labels[i]}: done on the Ray cluster ({len(items) - len(pending)}/{len(items)})")
        except BaseException as exc:  # an interrupted or failed scan leaves nothing running on the cluster
            for future in pending:
                ray.cancel(future)
            if not isinstance(exc, RayError):
                raise
            cause = exc.cause if isinstance(exc, RayTaskError) else None
            if isinstance(cause, MithridateError):
                raise type(cause)(str(cause)) from None  # the task's own one-line error, not Ray's traceback
            said = str(cause or exc).strip().splitlines()
            raise MithridateError(f"a task failed on the Ray cluster: {said[0] if said else type(exc).__name__}") \
                from exc
        return results


def _reachable(address: str, timeout: float = 5.0) -> None:
    """Raise a one-line error unless ``address`` (``host:port`` or ``ray://host:port``) accepts a TCP
    connection within ``timeout`` seconds."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")  # an IPv6 address in brackets
    if not host or not port.isdigit():
        raise MithridateError(f"a Ray address is host:port or ray://host:port, not {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise MithridateError(f"cannot reach a Ray cluster at {address}: {exc.strerror or exc}") from exc


def _same_cluster(ray, address: str) -> bool:
    """Whether this process's Ray connection is to ``address`` (as far as its host and port tell)."""
    if address == "local":
        return False  # a new local cluster was asked for
    try:
        current = ray.get_runtime_context().gcs_address
    except Exception:  # Ray Client: the client connection is the one asked for if it was made here
        return True
    wanted = address.removeprefix("ray://")
    return current == wanted or current.rsplit(":", 1)[0] == wanted.rsplit(":", 1)[0]


def make_engine(name: str | None, address: str | None = None) -> Engine:
    """The engine called ``name`` (``None`` or ``"local"``: this process; ``"ray"``: a Ray cluster)."""
    if name in (None, "local"):
        if address:
            raise MithridateError("--address needs --engine ray")
        return LocalEngine()
    if name == "ray":
        return RayEngine(address)
    raise MithridateError(f"unknown engine {name!r}: choose local or ray")


__all__ = ["Engine", "LocalEngine", "RayEngine", "make_engine"]
