"""pytest plugin entry point (``pytest11``) of usp-conformance.

It registers the markers that conformance cases carry. Collection of case
files, the ``--usp-*`` options, verdicts and reports are added by the case
engine (see ARCHITECTURE.md); until then this module only declares markers,
so that loading the plugin never changes an unrelated pytest run.
"""

from __future__ import annotations

import pytest

MARKERS = (
    "usp_case(id): a TP-469 (or project X-...) conformance case id",
    "usp_section(n): the TP-469 section a case belongs to",
    "usp_feature(*ids): TP-469 Feature IDs a conditional-mandatory case needs",
    "usp_mandatory: a mandatory TP-469 case",
)


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)
