"""The ``Violation`` record returned by the STOMP binding checks."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Violation:
    """One failed check: ``rule`` is a TR-369 id (``R-STOMP.20``) or
    ``STOMP-1.2`` for a rule of the STOMP specification itself."""

    rule: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.message}"
