#!/usr/bin/env python3
"""Regenerate the committed protobuf code in ``conformance/usp/pb/``.

The generated ``*_pb2.py`` modules and their ``*_pb2.pyi`` stubs are committed
so that installing or running usp-conformance never needs protoc. This script
is the only way they are produced; it refuses to run with generator versions
other than the pinned ones, so that a regeneration is byte-for-byte
reproducible and ``tests/usp/test_schema.py`` can tell when the committed code
is stale.

Usage: ``python scripts/gen_proto.py [--out DIR]`` (install ``.[test]`` first).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "conformance" / "usp" / "proto"
OUT_DIR = ROOT / "conformance" / "usp" / "pb"

# Exact generator versions; bump together with a regeneration commit.
PINNED = {"grpcio-tools": "1.76.0", "mypy-protobuf": "5.1.0"}
PROTOS = ("usp-msg-1-4.proto", "usp-record-1-4.proto")


def check_versions() -> None:
    for dist, want in PINNED.items():
        try:
            have = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            sys.exit(f"gen_proto: {dist} is not installed; run: pip install '{dist}=={want}'")
        if have != want:
            sys.exit(f"gen_proto: {dist} {have} is installed but {want} is pinned; "
                     f"run: pip install '{dist}=={want}'")


def generate(out: Path) -> list[Path]:
    """Run protoc (from grpcio-tools) with the mypy plugin into ``out``."""
    check_versions()
    out.mkdir(parents=True, exist_ok=True)
    plugin = Path(sys.executable).with_name("protoc-gen-mypy")
    cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}",
           f"--python_out={out}", f"--mypy_out={out}"]
    if plugin.exists():
        cmd.append(f"--plugin=protoc-gen-mypy={plugin}")
    cmd += [str(PROTO_DIR / p) for p in PROTOS]
    subprocess.run(cmd, check=True)
    return sorted(p for p in out.iterdir() if p.name.endswith(("_pb2.py", "_pb2.pyi")))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    args = ap.parse_args(argv)
    for path in generate(args.out):
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
