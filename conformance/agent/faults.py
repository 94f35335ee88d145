"""Named faults: deliberate spec violations the reference Agent can be told to make.

Every conformance case must be shown to FAIL against a faulty agent and to
PASS against a correct one. A fault is one precise violation, named after
what it breaks, documented with the requirement it breaks, and switched on by
configuration (``faults: [name, ...]``) or ``--fault NAME``. Code that
implements a behaviour asks ``agent.faults.on("name")`` at the one place
where the violation happens.

Faults are registered next to the behaviour they break (each handler module
calls :func:`register` at import); :data:`REGISTRY` is the catalogue that
the CLI lists and the self-test iterates.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Fault:
    """One deliberate violation."""

    name: str            # e.g. "get.wrong_error_code"
    requirement: str     # e.g. "R-GET.1" (what it breaks)
    description: str     # what the agent does wrong, in one line


REGISTRY: dict[str, Fault] = {}


def catalogue() -> dict[str, Fault]:
    """Every fault of the reference Agent: imports each agent module so that all
    registrations have run (discovered, no list to maintain)."""
    import pkgutil

    import conformance.agent as package

    for info in pkgutil.walk_packages(package.__path__, prefix="conformance.agent."):
        importlib.import_module(info.name)
    return dict(sorted(REGISTRY.items()))


class UnknownFault(ValueError):
    """A fault name that no module registered."""


def register(name: str, requirement: str, description: str) -> Fault:
    """Add a fault to the catalogue (idempotent for identical re-registration)."""
    fault = Fault(name, requirement, description)
    existing = REGISTRY.get(name)
    if existing is not None and existing != fault:
        raise ValueError(f"fault {name!r} registered twice with different meanings")
    REGISTRY[name] = fault
    return fault


class FaultSet:
    """The faults active in one agent run."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        names = list(names)
        if any(n not in REGISTRY for n in names):
            catalogue()
        unknown = [n for n in names if n not in REGISTRY]
        if unknown:
            known = ", ".join(sorted(REGISTRY)) or "none registered"
            raise UnknownFault(f"unknown fault(s) {', '.join(unknown)}; known: {known}")
        self.names = frozenset(names)

    def on(self, name: str) -> bool:
        """Whether fault ``name`` is active (an unregistered name is a bug in the caller)."""
        if name not in REGISTRY:
            raise UnknownFault(f"fault {name!r} is not registered")
        return name in self.names

    def __bool__(self) -> bool:
        return bool(self.names)

    def __repr__(self) -> str:
        return f"FaultSet({sorted(self.names)})"
