"""Tests of the usp-conformance pytest plugin (:mod:`conformance.plugin`), run with pytester.

Each test builds a small project (case files under ``testcases/``) in the
pytester directory and runs pytest on it in-process; the built-in reference
agent and the suite's MQTT broker run on loopback. Runs that start the agent
are shared by several assertions to keep this file fast.
"""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from conformance.plugin import OPTIONS, USPOptions

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
REAL_1_1 = ROOT / "testcases" / "01-messages-and-path-names" / \
    "1.1-add-allow-partial-false-single-object.yaml"
REAL_1_1_NAME = "1.1 Add with allow_partial false, one object, required parameters succeed"
REPORT_FILES = ("results.json", "summary.json", "report.html", "report-failures.html", "junit.xml")

# --- building blocks -----------------------------------------------------------------------


def _write(pytester: pytest.Pytester, rel: str, text: str) -> Path:
    path = pytester.path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _copy_1_1(pytester: pytest.Pytester, rel: str = "testcases/01/" + REAL_1_1.name) -> Path:
    target = pytester.path / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REAL_1_1, target)
    return target


def _variant_of_1_1(case_id: str, functionality: str) -> str:
    """The real 1.1 under another id and functionality (same procedure)."""
    text = REAL_1_1.read_text(encoding="utf-8")
    text = text.replace('id: "1.1"', f"id: {case_id}", 1)
    text = text.replace("functionality: mandatory", f"functionality: {functionality}", 1)
    text = text.replace("title: Add with", f"title: ({case_id}) Add with", 1)
    assert f"id: {case_id}" in text and f"functionality: {functionality}" in text
    return text


def _get_case(case_id: str, *, functionality: str = "mandatory", setup: str = "",
              steps: str | None = None) -> str:
    """A small case: optional setup, then a Get of Device.LocalAgent. that must answer."""
    default_steps = """\
  - send:
      get: {param_paths: ["Device.LocalAgent."]}
    expect:
      response: {get_resp: {req_path_results: [{err_code: 0}]}}
      metrics: [1]
"""
    return (f"id: {case_id}\ntitle: Case {case_id}\npurpose: A plugin test case.\n"
            f"functionality: {functionality}\nmetrics:\n  1: The EUT answers the Get.\n"
            + (f"setup:\n{setup}" if setup else "")
            + "steps:\n" + (steps if steps is not None else default_steps))


def _subscription_case(case_id: str, sub_id: str, *, cleanup: bool) -> str:
    """Adds a Subscription, then fails a check on purpose (its ID is not "not-the-id")."""
    text = f"""\
id: {case_id}
title: Subscription {sub_id} added, a check fails on purpose
purpose: Proves that cleanup runs after a failed step.
functionality: mandatory
metrics:
  1: The EUT creates the Subscription.
  2: The Subscription holds an ID it was never given (fails on purpose).
steps:
  - send:
      add:
        allow_partial: false
        create_objs:
          - obj_path: Device.LocalAgent.Subscription.
            param_settings:
              - {{param: ID, value: {sub_id}}}
              - {{param: NotifType, value: ValueChange}}
              - {{param: ReferenceList, value: Device.LocalAgent.SoftwareVersion}}
    expect:
      response:
        add_resp:
          created_obj_results:
            - oper_status: {{oper_success: {{instantiated_path: {{$capture: sub}}}}}}
      metrics: [1]
  - send:
      get: {{param_paths: ["{{sub}}"]}}
    expect:
      response:
        get_resp:
          req_path_results:
            - resolved_path_results:
                - result_params: {{ID: not-the-id}}
      metrics: [2]
"""
    if cleanup:
        text += """\
cleanup:
  - send:
      delete: {allow_partial: false, obj_paths: ["{sub}"]}
"""
    return text


def _subscription_gone_case(case_id: str, sub_id: str) -> str:
    """Passes only when no Subscription with ID ``sub_id`` exists."""
    return _get_case(case_id, steps=f"""\
  - send:
      get: {{param_paths: ['Device.LocalAgent.Subscription.[ID=="{sub_id}"].']}}
    expect:
      response:
        get_resp:
          req_path_results:
            - err_code: 0
              resolved_path_results: {{$length: 0}}
      metrics: [1]
""")


#: A conftest for the pytester project: registers a ``python:`` action "note" that
#: adds a SHOULD-level observation (the only way to get a ``warn`` from a case file
#: today: the built-in agent's messages carry no warning-level universal violations).
WARN_CONFTEST = '''
import dataclasses

from conformance.cases import environment as _env

_ORIGINAL = _env.RunEnvironment.environment


async def _note(runner, text):
    runner.result.warnings.append(text)


def _environment(self):
    env = _ORIGINAL.fget(self)
    return dataclasses.replace(env, actions={**env.actions, "note": _note})


def pytest_configure(config):
    _env.RunEnvironment.environment = property(_environment)


def pytest_unconfigure(config):
    _env.RunEnvironment.environment = _ORIGINAL
'''


def _results(path: Path) -> dict[str, dict[str, Any]]:
    data = json.loads((path / "results.json").read_text(encoding="utf-8"))
    return {c["case_id"]: c for c in data["cases"]}


def _section(text: str, header: str) -> str:
    """The text of one failure/error section of the terminal report."""
    start = text.index(header)
    rest = text[start:].split("\n", 1)[1]
    end = re.search(r"^(_{3,} .* _{3,}|={5,} .* ={5,})$", rest, re.MULTILINE)
    return rest[: end.start()] if end else rest


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", *args)


# --- collection ----------------------------------------------------------------------------


@pytest.fixture
def collection_tree(pytester: pytest.Pytester) -> pytest.Pytester:
    _copy_1_1(pytester)
    _write(pytester, "testcases/x/X-COL-1-conditional.yaml",
           _get_case("X-COL-1", functionality="{conditional: [31]}"))
    _write(pytester, "testcases/_template.yaml", "not: [a, case\n")     # "_": never collected
    _write(pytester, "mycases/X-COL-2-elsewhere.yaml", _get_case("X-COL-2"))
    _write(pytester, "elsewhere/settings.yaml", "just: some yaml\n")     # not a case file
    _write(pytester, "elsewhere/1.9-looks-like-a-case.yaml", "id: broken [\n")
    return pytester


def test_case_files_under_testcases_become_named_items(collection_tree: pytest.Pytester) -> None:
    result = _run(collection_tree, "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK
    lines = [line for line in result.outlines if "::" in line]
    assert lines == [
        f"testcases/01/{REAL_1_1.name}::{REAL_1_1_NAME}",
        "testcases/x/X-COL-1-conditional.yaml::X-COL-1 Case X-COL-1",
    ]
    # YAML outside testcases/ (even broken YAML) and "_" files are not collected.
    assert "elsewhere" not in result.stdout.str() and "error" not in result.stdout.str().lower()


def test_items_carry_the_usp_markers(collection_tree: pytest.Pytester) -> None:
    items, _ = collection_tree.inline_genitems("-p", "no:cacheprovider", "--usp-cases", "mycases")
    by_id = {item.get_closest_marker("usp_case").args[0]: item for item in items}  # type: ignore[union-attr]
    assert sorted(by_id) == ["1.1", "X-COL-1", "X-COL-2"]
    mandatory = by_id["1.1"]
    assert mandatory.get_closest_marker("usp_section").args == ("1",)  # type: ignore[union-attr]
    assert mandatory.get_closest_marker("usp_mandatory") is not None
    assert mandatory.get_closest_marker("usp_feature") is None
    conditional = by_id["X-COL-1"]
    assert conditional.get_closest_marker("usp_feature").args == (31,)  # type: ignore[union-attr]
    assert conditional.get_closest_marker("usp_mandatory") is None
    assert conditional.get_closest_marker("usp_section").args == ("X",)  # type: ignore[union-attr]


def test_select_mandatory_cases_with_m(collection_tree: pytest.Pytester) -> None:
    result = _run(collection_tree, "--collect-only", "-q", "-m", "usp_mandatory")
    assert [line for line in result.outlines if "::" in line] == \
        [f"testcases/01/{REAL_1_1.name}::{REAL_1_1_NAME}"]
    result.stdout.fnmatch_lines(["*1/2 tests collected (1 deselected)*"])
    # the markers are registered: --strict-markers accepts them in -m and in code
    strict = _run(collection_tree, "--collect-only", "-q", "--strict-markers",
                  "-m", "usp_mandatory or usp_feature")
    assert strict.ret == pytest.ExitCode.OK
    assert len([line for line in strict.outlines if "::" in line]) == 2


@pytest.mark.parametrize("how", ["option", "ini"])
def test_usp_cases_directory(collection_tree: pytest.Pytester, how: str) -> None:
    if how == "ini":
        collection_tree.makeini("[pytest]\nusp_cases = mycases\n")
        result = _run(collection_tree, "--collect-only", "-q")
    else:
        result = _run(collection_tree, "--collect-only", "-q", "--usp-cases", "mycases")
    assert result.ret == pytest.ExitCode.OK
    collected = [line for line in result.outlines if "::" in line]
    assert "mycases/X-COL-2-elsewhere.yaml::X-COL-2 Case X-COL-2" in collected
    assert len(collected) == 3  # testcases/ still collected; elsewhere/ still not


# --- schema errors -------------------------------------------------------------------------

_SCHEMA_BASE = """\
id: "@ID@"
title: A case
purpose: Checks a Get.
functionality: mandatory
metrics:
  1: The EUT answers.
  2: The answer names the path.
steps:
  - send:
      get: {param_paths: ["Device.LocalAgent."]}
    expect:
      response:
        get_resp:
          req_path_results:
            - requested_path: {$regex: 'Device\\..*'}
      metrics: [1, 2]
"""

#: file -> (text, line of the mistake, the fix the message must carry)
SCHEMA_ERRORS: dict[str, tuple[str, int, str]] = {
    "1.2-unknown-key.yaml": (_SCHEMA_BASE.replace("@ID@", "1.2").replace("purpose:", "purpse:"),
                             3, "unknown case key 'purpse'; did you mean 'purpose'?"),
    "1.3-missing-field.yaml": ("\n".join(line for line in _SCHEMA_BASE.replace("@ID@", "1.3")
                                         .splitlines() if not line.startswith("purpose:")) + "\n",
                               1, "'purpose' is missing; every case needs id, title, purpose"),
    "1.4-bad-operator.yaml": (_SCHEMA_BASE.replace("@ID@", "1.4").replace("$regex", "$regx"),
                              9, "unknown operator '$regx'"),
    "1.5-unproved-metric.yaml": (_SCHEMA_BASE.replace("@ID@", "1.5")
                                 .replace("metrics: [1, 2]", "metrics: [1]"),
                                 5, ("metric(s) [2] are not proved by any step; add them to an "
                                     "expect's 'metrics'")),
    "1.6-yaml-syntax.yaml": (_SCHEMA_BASE.replace("@ID@", "1.6")
                             .replace('"Device.LocalAgent."]}', '"Device.LocalAgent."]'),
                             11, "not valid YAML"),
}


@pytest.fixture
def broken_cases(pytester: pytest.Pytester) -> pytest.Pytester:
    for name, (text, _, _) in SCHEMA_ERRORS.items():
        _write(pytester, f"testcases/s/{name}", text)
    return pytester


@pytest.mark.parametrize("tb", ["auto", "long", "native"])
def test_schema_errors_are_one_line_collection_errors(broken_cases: pytest.Pytester,
                                                      tb: str) -> None:
    result = _run(broken_cases, "--collect-only", f"--tb={tb}")
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.INTERRUPTED  # pytest's own code for collection errors
    result.stdout.fnmatch_lines([f"*Interrupted: {len(SCHEMA_ERRORS)} errors during collection*"])
    assert "Traceback" not in out and "plugin.py" not in out and "raise " not in out
    lines = result.outlines
    for name, (_, _, fix) in SCHEMA_ERRORS.items():
        header = next(i for i, line in enumerate(lines) if f"ERROR collecting testcases/s/{name}"
                      in line)
        message, after = lines[header + 1], lines[header + 2]
        assert re.match(rf"^{re.escape(str(broken_cases.path / 'testcases/s' / name))}:\d+: ",
                        message), message
        assert fix in message
        assert after.startswith(("___", "===")), f"{name}: more than one line: {after!r}"
    # the bad operator's message also lists the valid operators (the fix)
    assert "$regex" in next(line for line in lines if "1.4-bad-operator.yaml:" in line)


def test_schema_errors_name_the_line(broken_cases: pytest.Pytester) -> None:
    result = _run(broken_cases, "--collect-only")
    found = {}
    for name in SCHEMA_ERRORS:
        match = re.search(rf"{re.escape(name)}:(\d+): ", result.stdout.str())
        assert match, name
        found[name] = int(match.group(1))
    assert found["1.6-yaml-syntax.yaml"] == 11
    assert found == {n: line for n, (_, line, _) in SCHEMA_ERRORS.items()}


# --- verdicts, applicability, cleanup, reports: one shared run -----------------------------


@pytest.fixture
def mixed_project(pytester: pytest.Pytester) -> pytest.Pytester:
    """Every verdict, two not-applicable cases and a cleanup check, in one project."""
    pytester.makeconftest(WARN_CONFTEST)
    _copy_1_1(pytester)                                                 # pass
    w = "testcases/x/"
    _write(pytester, w + "X-COND-1-needs-31.yaml",
           _get_case("X-COND-1", functionality="{conditional: [31]}"))   # skip: Feature ID 31
    _write(pytester, w + "X-COND-2-needs-2.yaml",
           _variant_of_1_1("X-COND-2", "{conditional: [2]}"))             # pass (2 is claimed)
    _write(pytester, w + "X-DEP-1-deprecated.yaml",
           _variant_of_1_1("X-DEP-1", "deprecated"))                      # skip: deprecated
    _write(pytester, w + "X-ERR-1-unregistered-action.yaml",
           _get_case("X-ERR-1", setup="  - python: {action: no_such_action}\n"))   # error
    _write(pytester, w + "X-ERR-2-bad-scenario.yaml",
           _get_case("X-ERR-2", setup="  - scenario: {mtp: mqtt, set: {no_such_hook: 1}}\n"))
    _write(pytester, w + "X-WARN-1-observation.yaml",
           _get_case("X-WARN-1", setup="  - python: {action: note, args: {text: "
                                       "'SHOULD-level note from the plugin test'}}\n"))  # warn
    _write(pytester, w + "X-CLN-1-fails-then-cleans.yaml",
           _subscription_case("X-CLN-1", "plugin-cln-1", cleanup=True))   # fail, cleanup runs
    _write(pytester, w + "X-CLN-2-cleaned.yaml",
           _subscription_gone_case("X-CLN-2", "plugin-cln-1"))            # pass: it is gone
    _write(pytester, w + "X-CLN-3-fails-no-cleanup.yaml",
           _subscription_case("X-CLN-3", "plugin-cln-3", cleanup=False))  # fail, no cleanup
    _write(pytester, w + "X-CLN-4-control.yaml",
           _subscription_gone_case("X-CLN-4", "plugin-cln-3"))            # fail: still there
    return pytester


MIXED_VERDICTS = {
    "1.1": "pass", "X-COND-1": "skip", "X-COND-2": "pass", "X-DEP-1": "skip",
    "X-ERR-1": "error", "X-ERR-2": "error", "X-WARN-1": "warn",
    "X-CLN-1": "fail", "X-CLN-2": "pass", "X-CLN-3": "fail", "X-CLN-4": "fail",
}


def test_verdicts_applicability_cleanup_and_reports(mixed_project: pytest.Pytester) -> None:
    result = _run(mixed_project, "-rsfE", "--usp-features", "1,2", "--usp-reports", "out")
    out = result.stdout.str()

    # exit status 2: a suite error wins over the EUT failures in the same run
    assert result.ret == 2, out
    result.assert_outcomes(passed=4, failed=3, skipped=2, errors=2)

    # verdict -> pytest outcome, per case
    result.stdout.fnmatch_lines_random([
        "ERROR testcases/x/X-ERR-1-unregistered-action.yaml::X-ERR-1 *",
        "ERROR testcases/x/X-ERR-2-bad-scenario.yaml::X-ERR-2 *",
        "FAILED testcases/x/X-CLN-1-fails-then-cleans.yaml::X-CLN-1 *",
        "FAILED testcases/x/X-CLN-3-fails-no-cleanup.yaml::X-CLN-3 *",
        "FAILED testcases/x/X-CLN-4-control.yaml::X-CLN-4 *",
    ])
    assert "FAILED testcases/x/X-ERR" not in out

    # applicability: the Feature ID is named; deprecated says how to include it
    result.stdout.fnmatch_lines_random([
        ("SKIPPED [[]1[]] testcases/x/X-COND-1-needs-31.yaml:*: "
         "not applicable: the EUT does not support Feature ID 31"),
        ("SKIPPED [[]1[]] testcases/x/X-DEP-1-deprecated.yaml:*: "
         "TP-469 X-DEP-1 is deprecated (run with --usp-include-deprecated)"),
    ])

    # error: the reason, without a traceback
    err = _section(out, "ERROR at setup of TP-469 X-ERR-1")
    assert "TP-469 X-ERR-1 ERROR: setup step failed: python action 'no_such_action' is not " \
           "registered" in err
    assert "Traceback" not in err and "plugin.py" not in err and "def setup" not in err
    assert "ERROR:" in _section(out, "ERROR at setup of TP-469 X-ERR-2")

    # fail: the metric number, expected and observed
    failed = _section(out, "TP-469 X-CLN-1: Subscription plugin-cln-1")
    assert "TP-469 X-CLN-1 FAIL: metric 2:" in failed
    assert "metric 2: The Subscription holds an ID it was never given" in failed
    assert re.search(r'expected: .*"ID": "not-the-id"', failed)
    assert re.search(r'observed: .*"ID": "plugin-cln-1"', failed)

    # warn: passes, with a USPWarning in the warnings summary
    result.stdout.fnmatch_lines(["*USPWarning: SHOULD-level note from the plugin test*"])

    # cleanup ran after X-CLN-1's failed step: X-CLN-2 finds no Subscription; the
    # control (X-CLN-3 has no cleanup) shows the same check does see a leftover
    results = _results(mixed_project.path / "out")
    assert results["X-CLN-2"]["verdict"] == "pass"
    assert results["X-CLN-4"]["verdict"] == "fail"
    assert any("-> primary:" in m and "delete" in m for m in results["X-CLN-1"]["messages"])

    # reports: all five files; results.json holds every verdict
    for name in REPORT_FILES:
        assert (mixed_project.path / "out" / name).stat().st_size > 0, name
    assert {cid: c["verdict"] for cid, c in results.items()} == MIXED_VERDICTS
    assert "Feature ID 31" in results["X-COND-1"]["reason"]
    summary = json.loads((mixed_project.path / "out" / "summary.json").read_text())
    assert summary  # valid JSON
    ET.parse(mixed_project.path / "out" / "junit.xml")  # well-formed
    html = (mixed_project.path / "out" / "report.html").read_text(encoding="utf-8")
    assert "X-CLN-1" in html and "X-WARN-1" in html
    assert not (mixed_project.path / "reports").exists()  # --usp-reports replaced the default


def test_fail_verdict_with_a_fault_exit_1(pytester: pytest.Pytester) -> None:
    """1.1 against ``add.no_unique_keys``; the deprecated copy runs with the flag."""
    _copy_1_1(pytester)
    _write(pytester, "testcases/x/X-DEP-1-deprecated.yaml", _variant_of_1_1("X-DEP-1", "deprecated"))
    pytester.makeini("[pytest]\nusp_reports = ini-reports\n")
    result = _run(pytester, "--usp-fault", "add.no_unique_keys", "--usp-include-deprecated")
    assert result.ret == 1, result.stdout.str()
    result.assert_outcomes(failed=2)
    failure = _section(result.stdout.str(), f"TP-469 1.1: {REAL_1_1_NAME.split(' ', 1)[1]}")
    assert "TP-469 1.1 FAIL: metric 2:" in failure
    assert "metric 2: One CreatedObjectResult with an OperationSuccess" in failure
    assert re.search(r'expected: .*"\$keys": \["Recipient", "ID"\]', failure)
    assert re.search(r'observed: .*"unique_keys": \{\}', failure)
    assert "Traceback" not in failure and "plugin.py" not in failure
    # the wire evidence: the last timeline events, the AddResp among them
    assert re.search(r"timeline \(last \d+ of \d+ events; all in the reports\):", failure)
    assert re.search(r"#\d+ t=[0-9.]+ in mqtt/\S+ mqtt\.PUBLISH", failure)
    # reports follow the ini twin usp_reports
    results = _results(pytester.path / "ini-reports")
    assert {cid: c["verdict"] for cid, c in results.items()} == {"1.1": "fail", "X-DEP-1": "fail"}
    failed_metric = [m for m in results["1.1"]["metrics"] if m["verdict"] == "fail"]
    assert [m["number"] for m in failed_metric] == [2]
    for name in REPORT_FILES:
        assert (pytester.path / "ini-reports" / name).is_file(), name


def test_all_pass_exit_0_and_ini_include_deprecated(pytester: pytest.Pytester) -> None:
    _copy_1_1(pytester)
    _write(pytester, "testcases/x/X-DEP-1-deprecated.yaml", _variant_of_1_1("X-DEP-1", "deprecated"))
    pytester.makeini("[pytest]\nusp_include_deprecated = true\n")
    result = _run(pytester)
    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=2)
    # default report directory
    results = _results(pytester.path / "reports")
    assert {cid: c["verdict"] for cid, c in results.items()} == {"1.1": "pass", "X-DEP-1": "pass"}


# --- exit codes without the agent ----------------------------------------------------------


@pytest.mark.parametrize(("args", "reason"), [
    (("--usp-eut", "profile.yaml"), "profile.yaml"),
    (("--usp-mtp", "carrier-pigeon"), "unknown MTP 'carrier-pigeon'"),
])
def test_environment_that_cannot_start_is_a_suite_error(pytester: pytest.Pytester,
                                                        args: tuple[str, ...], reason: str) -> None:
    _copy_1_1(pytester)
    _write(pytester, "testcases/x/X-ENV-1-get.yaml", _get_case("X-ENV-1"))
    result = _run(pytester, *args)
    out = result.stdout.str()
    assert result.ret == 2, out
    result.assert_outcomes(errors=2)
    assert "FAILED" not in out and "Traceback" not in out and "plugin.py" not in out
    assert out.count(reason) >= 2
    results = _results(pytester.path / "reports")
    assert {c["verdict"] for c in results.values()} == {"error"}


def test_ordinary_test_failure_is_not_masked(pytester: pytest.Pytester) -> None:
    """Only not-applicable cases ran; the failing plain test still gives 1."""
    _write(pytester, "testcases/x/X-DEP-1-deprecated.yaml", _variant_of_1_1("X-DEP-1", "deprecated"))
    pytester.makepyfile(test_plain="def test_plain():\n    assert False\n")
    result = _run(pytester)
    assert result.ret == 1
    result.assert_outcomes(failed=1, skipped=1)
    assert _results(pytester.path / "reports")["X-DEP-1"]["verdict"] == "skip"


@pytest.mark.parametrize("args", [
    ("--usp-no-such-option",),
    ("--usp-features", "one,two"),
])
def test_usage_errors_keep_pytest_exit_code(pytester: pytest.Pytester,
                                            args: tuple[str, ...]) -> None:
    _copy_1_1(pytester)
    result = _run(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    assert not (pytester.path / "reports").exists()


def test_no_case_selected_keeps_pytest_exit_code(pytester: pytest.Pytester) -> None:
    _copy_1_1(pytester)
    result = _run(pytester, "-m", "not usp_mandatory")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    assert not (pytester.path / "reports").exists()


# --- options and their ini twins -----------------------------------------------------------

#: ini name -> (USPOptions field, ini value, parsed, command-line value, parsed)
SAMPLES: dict[str, tuple[str, str, Any, str | None, Any]] = {
    "usp_eut": ("eut", "profile.yaml", "profile.yaml", "other.yaml", "other.yaml"),
    "usp_mtp": ("mtp", "stomp", "stomp", "websocket", "websocket"),
    "usp_reports": ("reports", "out", Path("out"), "cli-out", Path("cli-out")),
    "usp_cases": ("cases", "mycases", "mycases", "cli-cases", "cli-cases"),
    "usp_fault": ("faults", "add.no_unique_keys,msg.no_response",
                  ("add.no_unique_keys", "msg.no_response"), "get.extra_params",
                  ("get.extra_params",)),
    "usp_features": ("features", "1, 2", (1, 2), "3", (3,)),
    "usp_include_deprecated": ("include_deprecated", "true", True, None, True),
    "usp_progress": ("progress", "true", True, None, True),
}
DEFAULTS = USPOptions(eut="", mtp="mqtt", reports=Path("reports"), cases="", faults=(),
                      features=None, include_deprecated=False)


def test_options_table_is_consistent() -> None:
    assert [o[1] for o in OPTIONS] == ["usp_" + o[0][len("--usp-"):].replace("-", "_")
                                       for o in OPTIONS]
    assert set(SAMPLES) == {o[1] for o in OPTIONS}, "add a sample for every new option"


@pytest.mark.parametrize(("option", "ini"), [(o[0], o[1]) for o in OPTIONS],
                         ids=[o[0] for o in OPTIONS])
def test_every_option_has_an_ini_twin(pytester: pytest.Pytester, option: str, ini: str) -> None:
    field, ini_value, ini_parsed, cli_value, cli_parsed = SAMPLES[ini]
    # default: neither given
    config = pytester.parseconfigure()
    assert getattr(USPOptions.from_config(config), field) == getattr(DEFAULTS, field)
    # the ini twin alone
    pytester.makeini(f"[pytest]\n{ini} = {ini_value}\n")
    config = pytester.parseconfigure()
    assert getattr(USPOptions.from_config(config), field) == ini_parsed
    # the command line wins over the ini value
    cli = [option] if cli_value is None else [option, cli_value]
    config = pytester.parseconfigure(*cli)
    assert getattr(USPOptions.from_config(config), field) == cli_parsed


def test_help_lists_every_option_and_ini_twin(pytester: pytest.Pytester) -> None:
    out = _run(pytester, "--help").stdout.str()
    for option, ini, _, _ in OPTIONS:
        assert option in out and ini in out, option


def test_progress_line_and_tp469_order(pytester: pytest.Pytester) -> None:
    """--usp-progress: one line per case instead of dots, in TP-469 order (1.2 before 1.10);
    pytest's outcome counts and the exit status are unchanged."""
    for case_id in ("1.10", "1.2"):  # quoted: YAML reads 1.10 as the number 1.1
        _write(pytester, f"testcases/x/{case_id}-copy.yaml",
               _variant_of_1_1(f'"{case_id}"', "mandatory").replace(f'({case_id!r})', case_id)
               .replace(f'("{case_id}")', f"({case_id})"))
    result = _run(pytester, "--usp-progress", "--usp-fault", "add.no_unique_keys", "-q")
    assert result.ret == 1, result.stdout.str()
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    first = re.search(r"^\[1/2\] FAIL +[0-9.]+s  TP-469 1\.2 \(1\.2\) Add with", out, re.M)
    second = re.search(r"^\[2/2\] FAIL +[0-9.]+s  TP-469 1\.10 \(1\.10\) Add with", out, re.M)
    assert first and second and first.start() < second.start(), out
    assert not re.search(r"^FF", out, re.M)  # no dots (or F letters) for the cases
