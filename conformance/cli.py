"""The ``usp-conformance`` command line.

Subcommands available now:

* ``decode FILE`` renders a captured USP Record (binary, or hex text) with its
  Msg decoded, for reading what an agent sent;
* ``check FILE`` judges a captured Record against the TP-469 universal test
  metrics and exits 1 when it breaks one;
* ``agent --config FILE`` runs the reference USP Agent as its own process
  (``Device.Reboot()`` restarts the process; SIGTERM/SIGINT stop it cleanly);
* ``run`` runs the conformance cases (against the built-in reference agent
  unless ``--eut FILE``) and writes the reports; ``list`` shows the cases and
  their applicability; ``report`` re-renders reports from ``results.json``;
  ``certs`` makes the test PKI for an EUT.

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
            tls = tls_material(config.certificate, config.private_key, config.trust,
                               absolute_time=config.absolute_time)
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


def _cases_dir(given: str | None) -> Path:
    """The case directory: given, ./testcases, or the one beside the package."""
    candidates = [Path(given)] if given else [Path("testcases"),
                                              Path(__file__).resolve().parent.parent / "testcases"]
    for path in candidates:
        if path.is_dir():
            return path
    raise UserError(f"no case directory found ({', '.join(map(str, candidates))}); "
                    "give one with --cases DIR")


def _cmd_run(args: argparse.Namespace) -> int:
    import pytest

    cases = _cases_dir(args.cases)
    if args.eut and not Path(args.eut).is_file():
        raise UserError(f"no such EUT profile: {args.eut}")
    argv = [str(cases), "--usp-cases", str(cases), "-p", "no:cacheprovider",
            *(["-q", "--usp-progress"] if not args.verbose else ["-v"]),
            "--rootdir", str(cases.resolve().parent), "-o", "addopts=",
            "-W", "ignore::pytest.PytestAssertRewriteWarning",
            "--usp-reports", args.reports, "--usp-mtp", args.mtp,
            "--alluredir", str(Path(args.reports) / "allure-results")]
    if args.eut:
        argv += ["--usp-eut", args.eut]
    if args.fault:
        argv += ["--usp-fault", ",".join(args.fault)]
    if args.k:
        argv += ["-k", args.k]
    if args.include_deprecated:
        argv.append("--usp-include-deprecated")
    if args.junit_xml:
        argv += ["--junitxml", args.junit_xml]
    code = int(pytest.main(argv))
    print(f"reports in {args.reports}/ (report.html, report-failures.html, summary.json, "
          f"junit.xml, results.json, allure-results/)")
    return code


def _cmd_selftest(args: argparse.Namespace) -> int:
    import asyncio
    import re

    from conformance.cases.loader import iter_case_files, load_case
    from conformance.cases.schema import CaseSchemaError
    from conformance.cases.selftest import run_matrix, table, write_json

    from conformance.cases.environment import BUILTIN_MTPS

    if args.mtp not in BUILTIN_MTPS:
        raise UserError(f"unknown MTP {args.mtp!r} for the reference agent; choose one of "
                        f"{', '.join(BUILTIN_MTPS)}")
    cases = []
    for path in iter_case_files(_cases_dir(args.cases)):
        try:
            case = load_case(path)
        except CaseSchemaError as exc:
            raise UserError(str(exc)) from None
        if case.functionality in ("deprecated", "future"):
            continue
        if args.k and not re.search(args.k, f"{case.case_id} {case.title}"):
            continue
        cases.append(case)
    if not cases:
        raise UserError("no case selected")
    rows = asyncio.run(run_matrix(cases, mtp=args.mtp, jobs=args.jobs))
    print(table(rows))
    print(f"kill matrix written to {write_json(rows, Path(args.out))}")
    return 0 if all(r.ok for r in rows) else 1


def _cmd_list(args: argparse.Namespace) -> int:
    from conformance.cases.loader import iter_case_files, load_case
    from conformance.cases.schema import CaseSchemaError
    from conformance.eut import ProfileError, default_profile, load_profile

    try:
        profile = load_profile(Path(args.eut)) if args.eut else default_profile()
    except ProfileError as exc:
        raise UserError(str(exc)) from None
    features = set(profile.features)
    if args.features:
        features = {int(f) for f in args.features.split(",") if f.strip()}
    status = 0
    for path in iter_case_files(_cases_dir(args.cases)):
        try:
            case = load_case(path)
        except CaseSchemaError as exc:
            print(f"INVALID  {exc}")
            status = 2
            continue
        missing = [f for f in case.feature_ids if f not in features]
        if case.functionality in ("deprecated", "future"):
            applies = case.functionality
        elif missing:
            applies = "n/a (Feature ID " + ", ".join(map(str, missing)) + ")"
        else:
            applies = "applies"
        print(f"{case.case_id:8s} {case.functionality:12s} {applies:28s} {case.title}")
    return status


def _cmd_report(args: argparse.Namespace) -> int:
    import json

    from conformance.report.html import write_reports
    from conformance.report.model import RunResult

    source = Path(args.results)
    try:
        run = RunResult.from_json(json.loads(source.read_text()))
    except OSError as exc:
        raise UserError(f"cannot read {source}: {exc.strerror or exc}") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise UserError(f"{source} is not a usp-conformance results.json ({exc})") from None
    written = write_reports(run, Path(args.out or source.parent))
    for path in written.values():
        print(path)
    return 0


def _cmd_certs(args: argparse.Namespace) -> int:
    from conformance.mtp.pki import TestPKI
    from conformance.usp.endpoint import validate_endpoint_id

    for eid in (args.agent_id, args.controller_id):
        problems = [v for v in validate_endpoint_id(eid) if v.severity == "error"]
        if problems:
            raise UserError(f"{eid!r} is not a valid Endpoint ID: {problems[0].message}")
    pki = TestPKI.create(args.out, controller_id=args.controller_id, agent_id=args.agent_id)
    for name, files in sorted(pki.paths().items()):
        for kind, path in (files.items() if isinstance(files, dict) else [("file", files)]):
            print(f"{name}.{kind:10s} {path}")
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

    run = sub.add_parser("run", help="run the conformance cases and write the reports")
    run.add_argument("--eut", help="EUT profile (YAML; fixtures/eut/); default: the built-in "
                                   "reference agent's profile")
    run.add_argument("--mtp", default="mqtt",
                     help="MTP to test over: mqtt, mqtt311, stomp, websocket (the agent dials), "
                          "websocket-server (the suite dials the agent), uds (default mqtt)")
    run.add_argument("-k", help="only cases matching this pytest -k expression (e.g. '1.1 or 1.2')")
    run.add_argument("--fault", action="append", default=[], metavar="NAME",
                     help="built-in agent only: make it commit this fault (repeatable)")
    run.add_argument("--reports", default="reports", help="report directory (default reports/)")
    run.add_argument("--cases", help="case directory (default ./testcases)")
    run.add_argument("--include-deprecated", action="store_true", help="also run deprecated cases")
    run.add_argument("--junit-xml", help="also write pytest's own JUnit XML here")
    run.add_argument("-v", "--verbose", action="store_true", help="one line per case")
    run.set_defaults(func=_cmd_run)

    slf = sub.add_parser("selftest", help="run each case against the clean reference agent "
                                          "(must pass) and with each fault in its killed_by "
                                          "(must fail on that metric)")
    slf.add_argument("--mtp", default="mqtt", help="MTP (default mqtt)")
    slf.add_argument("-k", help="only cases whose 'id title' matches this regular expression")
    slf.add_argument("--cases", help="case directory (default ./testcases)")
    slf.add_argument("--out", default="reports/selftest.json", help="where to write the matrix")
    slf.add_argument("--jobs", type=int, default=4,
                     help="agents run at the same time (default 4)")
    slf.set_defaults(func=_cmd_selftest)

    lst = sub.add_parser("list", help="list the cases and whether they apply to the EUT")
    lst.add_argument("--cases", help="case directory (default ./testcases)")
    lst.add_argument("--eut", help="EUT profile whose Feature IDs decide applicability")
    lst.add_argument("--features", help="the EUT's Feature IDs, comma separated "
                                        "(default: the profile's)")
    lst.set_defaults(func=_cmd_list)

    rep = sub.add_parser("report", help="re-render the reports from a results.json")
    rep.add_argument("results", help="results.json written by a run")
    rep.add_argument("--out", help="output directory (default: beside results.json)")
    rep.set_defaults(func=_cmd_report)

    crt = sub.add_parser("certs", help="make a test PKI (CA, controller and agent "
                                       "certificates, negative variants)")
    crt.add_argument("out", help="directory to write the PEM files to")
    crt.add_argument("--agent-id", default="os::012345-0001", help="the EUT's Endpoint ID")
    crt.add_argument("--controller-id", default="proto::controller-1",
                     help="the suite controller's Endpoint ID")
    crt.set_defaults(func=_cmd_certs)
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
