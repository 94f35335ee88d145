"""The ``usp-conformance`` command line.

Subcommands available now:

* ``decode FILE`` renders a captured USP Record (binary, or hex text) with its
  Msg decoded, for reading what an agent sent;
* ``check FILE`` judges a captured Record against the TP-469 universal test
  metrics and exits 1 when it breaks one;
* ``agent --config FILE`` runs the reference USP Agent as its own process
  (``Device.Reboot()`` restarts the process; SIGTERM/SIGINT stop it cleanly).

User mistakes end with a one-line ``usp-conformance: error: ...`` message and
exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import binascii
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from conformance import __version__


class UserError(Exception):
    """A mistake the user can fix; printed as one line, exit status 2."""


def _read_record_bytes(source: str) -> bytes:
    """Read a Record from a file or ``-``: raw bytes, or hex text (spaces allowed)."""
    if source == "-":
        data = sys.stdin.buffer.read()
    else:
        path = Path(source)
        if not path.is_file():
            raise UserError(f"no such file: {source} (give a file holding one USP Record, or -)")
        data = path.read_bytes()
    stripped = b"".join(data.split())
    if stripped and all(c in b"0123456789abcdefABCDEF" for c in stripped):
        try:
            return binascii.unhexlify(stripped)
        except binascii.Error:
            raise UserError(f"{source}: odd number of hex digits; give whole bytes") from None
    return data


def _cmd_decode(args: argparse.Namespace) -> int:
    from conformance.usp.records import RecordDecodeError, parse_record
    from conformance.usp.render import render_record

    data = _read_record_bytes(args.file)
    try:
        record = parse_record(data)
    except RecordDecodeError as exc:
        raise UserError(f"{args.file}: {exc}") from None
    print(render_record(record))
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from conformance.usp.metrics import check_record_bytes

    result = check_record_bytes(_read_record_bytes(args.file),
                                eut_endpoint_id=args.eut_endpoint_id)
    for violation in result.violations:
        print(f"{violation.severity.upper()}: {violation}")
    print("OK: no universal metric broken" if result.ok else "FAIL: universal metrics broken")
    return 0 if result.ok else 1


def _cmd_agent(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from conformance.agent.config import ConfigError, check_faults, load_config
    from conformance.agent.faults import catalogue

    if args.list_faults:
        for fault in catalogue().values():
            print(f"{fault.name:45s} {fault.requirement:14s} {fault.description}")
        return 0
    if args.config is None:
        raise UserError("agent needs --config FILE (see conformance/agent/config.py for the format)")
    try:
        config = load_config(Path(args.config))
        if args.fault:
            from dataclasses import replace

            faults = check_faults([*config.faults, *args.fault], where="--fault")
            config = replace(config, faults=tuple(faults))
    except ConfigError as exc:
        raise UserError(str(exc)) from None

    async def run() -> str:
        from conformance.agent.mtp.from_model import ModelError
        from conformance.agent.runtime import AgentRuntime, tls_material

        try:
            tls = tls_material(config.certificate, config.private_key, config.trust)
            runtime = await AgentRuntime(config, tls=tls).start()
        except (ConfigError, ModelError, OSError) as exc:
            raise UserError(str(exc)) from None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(runtime.stop("stop")))
        print(f"reference agent {runtime.state.endpoint_id if runtime.state else ''} running "
              f"(pid {os.getpid()}, boot cause {runtime.boot_cause})", flush=True)
        return await runtime.run()

    if asyncio.run(run()) == "reboot":
        # Device.Reboot()/FactoryReset(): a new process, as on a real device.
        os.execv(sys.executable, [sys.executable, "-m", "conformance.cli", *args.argv])
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="usp-conformance",
        description="Conformance test suite for TR-369 USP Agents "
                    "(a self-assessment against TP-469; it does not certify).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    dec = sub.add_parser("decode", help="render a captured USP Record with its Msg decoded")
    dec.add_argument("file", help="file with one Record, binary or hex text; - for stdin")
    dec.set_defaults(func=_cmd_decode)

    chk = sub.add_parser("check", help="check a captured Record against TP-469's universal metrics")
    chk.add_argument("file", help="file with one Record, binary or hex text; - for stdin")
    chk.add_argument("--eut-endpoint-id", help="the EUT's Endpoint ID, to compare with from_id")
    chk.set_defaults(func=_cmd_check)

    agt = sub.add_parser("agent", help="run the reference USP Agent (the built-in EUT)")
    agt.add_argument("--config", help="run configuration (YAML: state_dir, faults, values, tls)")
    agt.add_argument("--fault", action="append", default=[], metavar="NAME",
                     help="commit this deliberate violation (repeatable)")
    agt.add_argument("--list-faults", action="store_true", help="list every fault and exit")
    agt.set_defaults(func=_cmd_agent)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except UserError as exc:
        print(f"usp-conformance: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("usp-conformance: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. piped into head: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
