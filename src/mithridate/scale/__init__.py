"""Scale: run a scan's independent pieces on a Ray cluster instead of this process (issue 17)."""

from mithridate.scale.engine import Engine, LocalEngine, RayEngine, make_engine

__all__ = ["Engine", "LocalEngine", "RayEngine", "make_engine"]
