"""Schedulers by name. Each is one small class with the ``Scheduler`` interface."""

from __future__ import annotations

from cinetron.core.errors import InvalidArgument
from cinetron.core.schedulers.base import Scheduler, flow_sigmas
from cinetron.core.schedulers.dpm import FlowMatchDPMSolverPP2M
from cinetron.core.schedulers.euler import FlowMatchEuler
from cinetron.core.schedulers.euler_ancestral import FlowMatchEulerAncestral
from cinetron.core.schedulers.heun import FlowMatchHeun
from cinetron.core.schedulers.unipc import FlowMatchUniPC

SCHEDULERS: dict[str, type[Scheduler]] = {
    "euler": FlowMatchEuler,
    "heun": FlowMatchHeun,
    "dpmpp2m": FlowMatchDPMSolverPP2M,
    "unipc": FlowMatchUniPC,
    "euler_ancestral": FlowMatchEulerAncestral,
}


def make_scheduler(name: str, shift: float = 1.0) -> Scheduler:
    try:
        cls = SCHEDULERS[name]
    except KeyError:
        raise InvalidArgument(
            "scheduler", f"unknown scheduler {name!r}; expected one of {', '.join(SCHEDULERS)}"
        ) from None
    return cls(shift=shift)


__all__ = [
    "SCHEDULERS",
    "FlowMatchDPMSolverPP2M",
    "FlowMatchEuler",
    "FlowMatchEulerAncestral",
    "FlowMatchHeun",
    "FlowMatchUniPC",
    "Scheduler",
    "flow_sigmas",
    "make_scheduler",
]
