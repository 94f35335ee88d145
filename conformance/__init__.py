"""usp-conformance: a conformance test suite for TR-369 USP Agents.

The package is layered (see ARCHITECTURE.md): ``conformance.usp`` is the pure
protocol core; MTP transports, the reference Controller, the reference Agent,
the case engine and the reports build on it.
"""

__version__ = "0.1.0.dev0"
