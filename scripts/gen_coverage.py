#!/usr/bin/env python3
"""Regenerate the README's TP-469 coverage table from the case files.

Usage: ``python scripts/gen_coverage.py [--check]`` (``--check``: exit 1 when
the README is stale instead of rewriting it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from conformance.cases.coverage import load_all, markdown, update_block  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check, do not write")
    args = parser.parse_args()
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    new = update_block(text, markdown(load_all(ROOT / "testcases")))
    if new == text:
        return 0
    if args.check:
        print("README.md coverage table is stale: run python scripts/gen_coverage.py")
        return 1
    readme.write_text(new, encoding="utf-8")
    print("README.md coverage table updated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
