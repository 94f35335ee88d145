"""pytest plugin (entry point ``pytest11``): conformance cases as pytest items.

Case files (``testcases/**/<id>-<slug>.yaml``) are collected when they sit
below a directory named ``testcases`` (or the ``--usp-cases`` directory)
and are validated at collection (:mod:`conformance.cases.loader`). Each case
is one :class:`CaseItem` with markers ``usp_case``, ``usp_section``,
``usp_feature`` and ``usp_mandatory``.

Verdicts map to pytest outcomes so that ordinary pytest tooling reads them
right: the case runs in the item's *setup*, so a suite/setup error is a
pytest ERROR; an EUT failure is a FAILED test whose report shows the failed
metric with expected vs observed; a not-applicable case is SKIPPED with the
Feature ID it needs; ``warn`` passes with a warning. Results go to the
reports (HTML self-assessment, JSON summary, JUnit XML) at the end of the
session, and the exit status is 0 (all applicable cases passed), 1 (an EUT
failure) or 2 (a suite or setup error).

Every ``--usp-*`` option has an ini twin (``usp_*``); the configuration is
read once into a frozen :class:`USPOptions`.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

MARKERS = (
    "usp_case(id): a TP-469 (or project X-...) conformance case id",
    "usp_section(n): the TP-469 section a case belongs to",
    "usp_feature(*ids): TP-469 Feature IDs a conditional-mandatory case needs",
    "usp_mandatory: a mandatory TP-469 case",
)

#: (option, ini name, help, default)
OPTIONS = (
    ("--usp-eut", "usp_eut", "EUT profile (YAML); none: the built-in reference agent", ""),
    ("--usp-mtp", "usp_mtp", "MTP to test over (mqtt, mqtt311, stomp, websocket, websocket-server, uds)", "mqtt"),
    ("--usp-reports", "usp_reports", "directory for reports", "reports"),
    ("--usp-cases", "usp_cases", "directory holding case files", ""),
    ("--usp-fault", "usp_fault", "built-in agent only: faults to commit (comma separated)", ""),
    ("--usp-features", "usp_features",
     "built-in agent only: Feature IDs it claims (comma separated; default: its profile)", ""),
    ("--usp-include-deprecated", "usp_include_deprecated", "also run deprecated cases", "false"),
    ("--usp-progress", "usp_progress",
     "one progress line per case (verdict, time, title) instead of pytest's dots", "false"),
)
_FLAGS = ("--usp-include-deprecated", "--usp-progress")


class USPWarning(UserWarning):
    """A SHOULD-level observation about the EUT."""


@dataclass(frozen=True)
class USPOptions:
    """The suite's configuration, read once per session."""

    eut: str
    mtp: str
    reports: Path
    cases: str
    faults: tuple[str, ...]
    features: tuple[int, ...] | None
    include_deprecated: bool
    progress: bool = False

    @classmethod
    def from_config(cls, config: pytest.Config) -> USPOptions:
        def get(name: str) -> str:
            # The command-line option (dest == ini name) wins over the ini value.
            opt = config.getoption(name, default=None)
            value = opt if opt not in (None, "") else config.getini(name)
            return str(value or "")

        features = get("usp_features")
        try:
            feature_ids = tuple(int(f) for f in features.split(",") if f.strip()) \
                if features else None
        except ValueError:
            raise pytest.UsageError(f"--usp-features / usp_features: {features!r} is not a "
                                    "comma-separated list of TP-469 Feature IDs") from None
        return cls(
            eut=get("usp_eut"), mtp=get("usp_mtp") or "mqtt",
            reports=Path(get("usp_reports") or "reports"), cases=get("usp_cases"),
            faults=tuple(f for f in get("usp_fault").split(",") if f),
            features=feature_ids,
            include_deprecated=get("usp_include_deprecated").lower() in ("1", "true", "yes"),
            progress=get("usp_progress").lower() in ("1", "true", "yes"),
        )


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("usp-conformance")
    for option, ini, help_text, default in OPTIONS:
        if option in _FLAGS:
            group.addoption(option, action="store_true", default=None, help=help_text)
        else:
            group.addoption(option, default=None, help=f"{help_text} (ini: {ini})")
        parser.addini(ini, help=help_text, default=default)


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    config.stash[_OPTIONS] = USPOptions.from_config(config)
    config.stash[_SESSION] = _RunState()
    _CONFIG[:] = [config]


_OPTIONS = pytest.StashKey[USPOptions]()
_SESSION = pytest.StashKey["_RunState"]()


class _RunState:
    """Per-session state: the event loop, the environment and the results."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.env: Any = None
        self.env_error: str | None = None
        self.results: list[Any] = []
        self.started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.profile: Any = None
        self.total = 0   # case items collected (for the progress line)
        self.done = 0


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Collector | None:
    if file_path.suffix != ".yaml" or file_path.name.startswith("_"):
        return None
    opts = parent.config.stash[_OPTIONS]
    root = Path(opts.cases).resolve() if opts.cases else None
    inside = (root is not None and root in file_path.resolve().parents) or \
        "testcases" in file_path.parts
    if not inside:
        return None
    return CaseFile.from_parent(parent, path=file_path)


class CaseFile(pytest.File):
    """One case file: validated at collection, yields one :class:`CaseItem`."""

    def collect(self) -> list[pytest.Item]:
        from conformance.cases.loader import load_case
        from conformance.cases.schema import CaseSchemaError

        try:
            case = load_case(self.path)
        except CaseSchemaError as exc:
            raise CaseCollectionError(str(exc)) from None
        item = CaseItem.from_parent(self, name=f"{case.case_id} {case.title}", case=case)
        item.add_marker(pytest.mark.usp_case(case.case_id))
        item.add_marker(pytest.mark.usp_section(case.section_number()))
        if case.feature_ids:
            item.add_marker(pytest.mark.usp_feature(*case.feature_ids))
        if case.mandatory:
            item.add_marker(pytest.mark.usp_mandatory)
        return [item]

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException]) -> Any:  # type: ignore[override]
        # A schema error is one line (file:line: problem; fix) whatever --tb says.
        if isinstance(excinfo.value, CaseCollectionError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


class CaseCollectionError(Exception):
    """A case file that does not follow the format (shown as a one-line collection error)."""


class CaseFailed(Exception):
    """The EUT broke a metric."""


class SuiteError(Exception):
    """The suite or the setup broke (never an EUT failure)."""


class CaseItem(pytest.Item):
    """One conformance case."""

    def __init__(self, *, case: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case
        self.result: Any = None

    def setup(self) -> None:
        state = self.config.stash[_SESSION]
        opts = self.config.stash[_OPTIONS]
        reason = _not_applicable(self.case, opts, state)
        if reason is not None:
            self.result = _skip_result(self.case, reason)
            state.results.append(self.result)
            # reported at the case file (as pytest's own skip marker does), not here
            raise pytest.skip.Exception(reason, _use_item_location=True)
        try:
            env = _environment(self.config)
        except SuiteError as exc:  # the environment did not start: an error verdict
            self.result = _skip_result(self.case, str(exc), verdict="error")
        else:
            from conformance.cases.runner import CaseRunner

            assert state.loop is not None
            self.result = state.loop.run_until_complete(CaseRunner(self.case, env).run())
        state.results.append(self.result)
        _allure(self.result)
        if self.result.verdict == "skip":  # found not applicable while running
            raise pytest.skip.Exception(self.result.reason, _use_item_location=True)
        if self.result.verdict == "error":
            # Failing in setup makes pytest report an ERROR; pytest does not use
            # repr_failure for setup, so the explanation is the message itself.
            pytest.fail(_explain(self.result), pytrace=False)

    def runtest(self) -> None:
        if self.result.verdict == "fail":
            raise CaseFailed(self.result.reason)
        for note in self.result.warnings:
            warnings.warn(USPWarning(note), stacklevel=1)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: Any = None) -> str:
        if isinstance(excinfo.value, (CaseFailed, SuiteError)) and self.result is not None:
            return _explain(self.result)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"TP-469 {self.case.case_id}: {self.case.title}"


# --- the live progress line (--usp-progress) -------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> Any:
    """With --usp-progress, case items print no dot (the progress line says it all);
    the outcome categories, and so pytest's summary and exit status, stay the same."""
    opts = config.stash.get(_OPTIONS, None)
    if opts is None or not opts.progress or ".yaml::" not in report.nodeid:
        return None
    if report.passed and report.when != "call":
        return "", "", ""
    if report.skipped:
        return "skipped", "", ""
    if report.failed:
        return ("failed" if report.when == "call" else "error"), "", ""
    return "passed", "", ""


def pytest_runtest_logfinish(nodeid: str, location: tuple[str, int | None, str]) -> None:
    config = _CONFIG[0] if _CONFIG else None
    if config is None or ".yaml::" not in nodeid:
        return
    opts = config.stash[_OPTIONS]
    state = config.stash[_SESSION]
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if not opts.progress or reporter is None or not state.results:
        return
    state.done += 1
    result = state.results[-1]
    total = state.total or state.done
    width = len(str(total))
    line = (f"[{state.done:{width}d}/{total}] {result.verdict.upper():5s} "
            f"{result.duration:6.1f}s  TP-469 {result.case_id} {result.title}")
    colour = {"pass": "green", "fail": "red", "error": "red", "warn": "yellow"}.get(
        result.verdict, "yellow")
    reporter.ensure_newline()
    reporter.write_line(line[:200], **{colour: True})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Cases run in TP-469 order (1.2 before 1.10); other tests keep their places."""
    from conformance.cases.loader import case_sort_key

    slots = [i for i, item in enumerate(items) if isinstance(item, CaseItem)]
    ordered = sorted((items[i] for i in slots),
                     key=lambda item: case_sort_key(item.case.case_id))  # type: ignore[attr-defined]
    for slot, item in zip(slots, ordered):
        items[slot] = item


def pytest_collection_finish(session: pytest.Session) -> None:
    state = session.config.stash.get(_SESSION, None)
    if state is not None:
        state.total = sum(1 for item in session.items if isinstance(item, CaseItem))


_CONFIG: list[pytest.Config] = []


def _allure(result: Any) -> None:
    """Labels, links and evidence for allure-pytest (a no-op without ``--alluredir``)."""
    try:
        import allure
    except ImportError:  # allure-pytest is a dependency, but reports must not need it
        return
    from conformance.report.allure_labels import attachments_for, labels_for, links_for

    allure.dynamic.title(f"TP-469 {result.case_id} {result.title}")
    for name, value in labels_for(result):
        allure.dynamic.label(name, value)
    for url, link_type in links_for(result):
        allure.dynamic.link(url, link_type=link_type, name=url)
    for name, body, mime in attachments_for(result):
        allure.attach(body, name=name, attachment_type=mime)


def _not_applicable(case: Any, opts: USPOptions, state: _RunState) -> str | None:
    if case.functionality == "deprecated" and not opts.include_deprecated:
        return f"TP-469 {case.case_id} is deprecated (run with --usp-include-deprecated)"
    if case.functionality == "future":
        return f"TP-469 {case.case_id} is marked for future work"
    supported = _features(opts, state)
    missing = [f for f in case.feature_ids if f not in supported]
    if missing:
        names = ", ".join(f"Feature ID {f}" for f in missing)
        return f"not applicable: the EUT does not support {names}"
    if not case.applies_to(opts.mtp) and not opts.eut:
        # (with a profile, the runner judges this against the MTP the profile gives)
        return f"not applicable over {opts.mtp}: the case is about {', '.join(case.mtps)}"
    return None


def _features(opts: USPOptions, state: _RunState) -> set[int]:
    if opts.features is not None:
        return set(opts.features)
    profile = _profile(opts, state)
    return set(profile.features) if profile is not None else set()


def _profile(opts: USPOptions, state: _RunState) -> Any:
    """The EUT profile (``--usp-eut``, else the reference agent's), loaded once.

    A broken profile is remembered as the run's environment error: every case
    then gets an ``error`` verdict with the profile's one-line message.
    """
    if state.profile is None and state.env_error is None:
        from conformance.eut import ProfileError, default_profile, load_profile

        try:
            state.profile = load_profile(Path(opts.eut)) if opts.eut else default_profile()
        except ProfileError as exc:
            state.env_error = str(exc)
    return state.profile


def _environment(config: pytest.Config) -> Any:
    state = config.stash[_SESSION]
    if state.env_error is not None:
        raise SuiteError(state.env_error)
    if state.env is not None:
        return state.env.environment
    opts = config.stash[_OPTIONS]
    from conformance.cases.environment import BuiltinSettings, RunEnvironment
    from conformance.cases.runner import SuiteError as RunnerError

    profile = _profile(opts, state)
    if profile is None:
        raise SuiteError(str(state.env_error))
    if not profile.is_builtin_agent:
        from conformance.cases.environment import ExternalEnvironment

        state.loop = asyncio.new_event_loop()
        try:
            # --usp-mtp names a run MTP; the profile entry is found by its kind
            kind = {"mqtt": None, "mqtt311": "mqtt", "websocket-server": "websocket"}.get(
                opts.mtp, opts.mtp)
            external = ExternalEnvironment(profile, kind)
            state.env = state.loop.run_until_complete(external.__aenter__())
        except (RunnerError, OSError, ValueError) as exc:
            state.env_error = f"could not start the test environment: {exc}"
            raise SuiteError(state.env_error) from None
        return state.env.environment
    from conformance.cases.environment import profile_alternates

    state.loop = asyncio.new_event_loop()
    try:
        env = RunEnvironment(BuiltinSettings(
            mtp=opts.mtp, faults=(*profile.agent.faults, *opts.faults),
            alternates=profile_alternates(profile),
            response_timeout=profile.timeouts.response,
            notification_timeout=profile.timeouts.notification))
        state.env = state.loop.run_until_complete(env.__aenter__())
    except (RunnerError, OSError, ValueError) as exc:
        state.env_error = f"could not start the test environment: {exc}"
        raise SuiteError(state.env_error) from None
    return state.env.environment


def _skip_result(case: Any, reason: str, verdict: Literal["skip", "error"] = "skip") -> Any:
    """The result of a case that did not run (skip, or error when the environment broke)."""
    from conformance.report.model import CaseResult

    return CaseResult(case_id=case.case_id, title=case.title, section=case.section,
                      functionality=case.functionality, verdict=verdict, reason=reason,
                      feature_ids=list(case.feature_ids), requirements=list(case.requirements))


def _explain(result: Any) -> str:
    lines = [f"TP-469 {result.case_id} {result.verdict.upper()}: {result.reason}"]
    for metric in result.failed_metrics:
        lines.append(f"  metric {metric.number}: {metric.text}")
        lines.append(f"    {metric.message}")
        lines.append("    expected: " + json.dumps(metric.expected, default=str)[:2000])
        lines.append("    observed: " + json.dumps(metric.observed, default=str)[:2000])
    if result.messages:
        lines.append("  messages:")
        lines += ["    " + m.replace("\n", "\n    ") for m in result.messages[-6:]]
    lines += _timeline_excerpt(result.timeline)
    return "\n".join(lines)


TIMELINE_LINES = 12  # wire events shown under a failure (the reports keep up to 200)


def _timeline_excerpt(entries: list[dict[str, Any]]) -> list[str]:
    """The last wire events of the case, one line each (Autobahn-style evidence)."""
    from conformance.mtp.timeline import Entry, TimelineFormatError

    if not entries:
        return []
    shown = entries[-TIMELINE_LINES:]
    lines = [f"  timeline (last {len(shown)} of {len(entries)} events; all in the reports):"]
    for obj in shown:
        try:
            lines.append("    " + Entry.from_json(obj).brief(width=200))
        except TimelineFormatError:
            lines.append("    (an unreadable timeline entry)")
    return lines


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session.config.stash.get(_SESSION, None)
    if state is None:
        return
    if state.env is not None and state.loop is not None:
        state.loop.run_until_complete(state.env.__aexit__())
    if state.loop is not None:
        state.loop.close()
    if not state.results:
        return
    from conformance import __version__
    from conformance.report.html import write_reports
    from conformance.report.model import EUTInfo, RunResult

    opts = session.config.stash[_OPTIONS]
    profile = _profile(opts, state)
    eut = profile.report_info() if profile is not None else EUTInfo(name=opts.eut)
    eut.feature_ids = sorted(_features(opts, state))
    eut.mtps = [getattr(state.env, "mtp", None) or opts.mtp]  # the MTP the run really used
    run = RunResult(
        eut=eut,
        cases=state.results, started=state.started,
        finished=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        suite_version=__version__,
        command="usp-conformance run" + (f" --fault {','.join(opts.faults)}" if opts.faults else ""))
    write_reports(run, opts.reports)
    if exitstatus in (0, 1):  # keep pytest's own usage/interrupt codes
        # never below pytest's: a failing ordinary test in the same run still counts
        session.exitstatus = max(int(exitstatus), run.exit_status)
