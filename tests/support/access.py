"""Access doubles for agent handler tests (the ``Access`` protocol of the agent)."""

from __future__ import annotations


class DenyRules:
    """Refuses the given (kind, path prefix, op) triples and allows the rest."""

    def __init__(self, *rules: tuple[str, str, str]) -> None:
        self.rules = rules

    def allows(self, kind: str, path: str, op: str) -> bool:
        return not any(kind == k and path.startswith(p) and op == o for k, p, o in self.rules)


class DenyKinds:
    """Refuses every operation on targets starting with one of the prefixes (per kind)."""

    def __init__(self, **denied: tuple[str, ...]) -> None:
        self.denied = denied

    def allows(self, kind: str, path: str, op: str) -> bool:
        return not any(path.startswith(p) for p in self.denied.get(kind, ()))
