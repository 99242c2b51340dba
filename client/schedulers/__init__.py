"""Schedulers by name. Each is one small class with the ``Scheduler`` interface."""

from __future__ import annotations

from cinetron.client.errors import InvalidArgument
from cinetron.client.schedulers.base import Scheduler, flow_sigmas
from cinetron.client.schedulers.euler import FlowMatchEuler

SCHEDULERS: dict[str, type[Scheduler]] = {
    "euler": FlowMatchEuler,
}


def make_scheduler(name: str, shift: float = 1.0) -> Scheduler:
    try:
        cls = SCHEDULERS[name]
    except KeyError:
        raise InvalidArgument(
            "scheduler", f"unknown scheduler {name!r}; expected one of {', '.join(SCHEDULERS)}"
        ) from None
    return cls(shift=shift)


__all__ = ["SCHEDULERS", "Scheduler", "flow_sigmas", "make_scheduler"]
