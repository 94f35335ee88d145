"""Tests for conformance.cases.matchers: the expectation language of case files.

Observed data is built the way the runner builds it, with
``conformance.usp.messages.response(...)`` / ``error(...)`` and ``to_mapping``.
Cited: TP-469 1.1 metric 2 (unique keys), R-ADD.5 (unique_keys in AddResp),
R-ENC.6 (parameter values travel as strings), R-MSG.3 (reported paths), and
TP-469's "appropriate error code" wording.
"""

from __future__ import annotations

import datetime
import json
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.cases.matchers import (
    OPERATORS,
    Matcher,
    MatcherSyntaxError,
    MatchResult,
    Mismatch,
    UnknownVariable,
    compile_matcher,
    substitute,
)
from conformance.usp.messages import error, response, to_mapping

# --- helpers ----------------------------------------------------------------------------


def run(expected: Any, observed: Any, **context: Any) -> MatchResult:
    return compile_matcher(expected).match(observed, context=context or None)


def only(result: MatchResult) -> Mismatch:
    assert not result.ok
    assert len(result.mismatches) == 1, result.mismatches
    return result.mismatches[0]


def check(result: MatchResult, path: str, expected: str, observed: str, reason: str) -> None:
    assert only(result) == Mismatch(path, expected, observed, reason)


def add_resp(unique_keys: dict[str, str], *, inst: str = "Device.LocalAgent.Subscription.3.",
             param_errs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The response body (``{"add_resp": ...}``) of a real AddResp, as the runner sees it."""
    msg = response("add_resp", {"created_obj_results": [{
        "requested_path": "Device.LocalAgent.Subscription.",
        "oper_status": {"oper_success": {
            "instantiated_path": inst,
            "unique_keys": unique_keys,
            "param_errs": param_errs or [],
        }},
    }]}, msg_id="m-1")
    body: dict[str, Any] = to_mapping(msg)["body"]["response"]
    return body


def get_resp() -> dict[str, Any]:
    msg = response("get_resp", {"req_path_results": [
        {"requested_path": "Device.LocalAgent.Subscription.3.",
         "resolved_path_results": [{"resolved_path": "Device.LocalAgent.Subscription.3.",
                                    "result_params": {"Enable": "true", "ID": "add1",
                                                      "NotifType": "ValueChange"}}]},
        {"requested_path": "Device.DeviceInfo.UpTime",
         "resolved_path_results": [{"resolved_path": "Device.DeviceInfo.",
                                    "result_params": {"UpTime": "1234"}}]},
    ]}, msg_id="m-2")
    body: dict[str, Any] = to_mapping(msg)["body"]["response"]
    return body


UK = "add_resp.created_obj_results[0].oper_status.oper_success.unique_keys"

#: TP-469 1.1 metric 2, as a case file writes it.
METRIC_1_1_2 = {"add_resp": {"created_obj_results": [{"oper_status": {"oper_success": {
    "param_errs": [],
    "unique_keys": {"$keys": ["Recipient", "ID"], "$optional_keys": ["Alias"]},
}}}]}}


# --- results ----------------------------------------------------------------------------


def test_mismatch_str_is_one_line_with_path_expected_observed() -> None:
    m = Mismatch("a.b[0]", '"x"', '"y\nz"', "value differs")
    assert str(m) == 'a.b[0]: expected "x", observed "y\\u000az" (value differs)'
    assert str(Mismatch("", "1", "2", "value differs")) == "<root>: expected 1, observed 2 (value differs)"


def test_match_result_truthiness_and_text() -> None:
    good = run({"a": 1}, {"a": 1})
    assert good and good.ok and good.mismatches == [] and str(good) == "match"
    bad = run({"a": 1, "b": 2}, {"a": 0, "b": 0})
    assert not bad and str(bad).count("\n") == 1


def test_root_prefixes_mismatch_paths() -> None:
    result = compile_matcher({"err_code": 7004}).match({"err_code": 7000}, root="body.error")
    check(result, "body.error.err_code", "7004", "7000", "value differs")


# --- scalars (R-ENC.6) ------------------------------------------------------------------


@pytest.mark.parametrize(("expected", "observed"), [
    ("ADD_RESP", "ADD_RESP"),
    (1, "1"),            # R-ENC.6: values travel as strings
    (True, "true"),
    (False, "false"),
    ("true", True),
    (12, "12"),          # uint64 fields render as strings
    ("7004", 7004),
    (True, True),
    (1, 1.0),
    (2.5, "2.5"),
    (None, None),
])
def test_scalar_equal_after_normalising(expected: Any, observed: Any) -> None:
    assert run(expected, observed).ok


@pytest.mark.parametrize(("expected", "observed"), [
    (True, 1), (1, True), (0, False), (True, "True"), ("1", 2), (None, ""), ("", None),
    (1, "1.0"), ("a", "b"),
])
def test_scalar_unequal(expected: Any, observed: Any) -> None:
    assert not run(expected, observed).ok


def test_scalar_mismatch_text() -> None:
    check(run({"msg_type": "GET_RESP"}, {"msg_type": "ERROR"}),
          "msg_type", '"GET_RESP"', '"ERROR"', "value differs")
    check(run({"v": 1}, {"v": [1]}), "v", "1", "[1]", "a list, not a value")
    check(run({"v": 1}, {"v": {"x": 1}}), "v", "1", '{"x": 1}', "a map, not a value")


# --- mappings ---------------------------------------------------------------------------


def test_mapping_is_partial() -> None:
    assert run({"a": 1}, {"a": 1, "b": 2, "c": [3]}).ok
    assert run({}, {"anything": 1}).ok


def test_mapping_missing_key_and_non_mapping() -> None:
    check(run({"a": {"b": 1}}, {"a": {}}), "a.b", "1", "<absent>", "missing")
    check(run({"a": {"b": 1}}, {"a": "x"}), "a", '{"b": 1}', '"x"', "not a mapping")


def test_mapping_paths_quote_odd_keys() -> None:
    result = run({"updated_params": {"Device.X.": "1", "1st": 2}},
                 {"updated_params": {"Device.X.": "0", "1st": 3}})
    assert [m.path for m in result.mismatches] == [
        'updated_params["Device.X."]', 'updated_params["1st"]']


def test_yaml_non_string_field_names_become_text() -> None:
    assert run({1: "a", False: "b", 2.5: "c"}, {"1": "a", "false": "b", "2.5": "c"}).ok


def test_exact_rejects_extra_keys_but_not_defaults() -> None:
    observed = {"err_code": 0, "err_msg": "", "param_errs": [], "extra": {}, "ok": False,
                "requested_path": "Device."}
    assert run({"$exact": {"requested_path": "Device."}}, observed).ok
    check(run({"$exact": {"requested_path": "Device."}}, {**observed, "err_code": 7004}),
          "err_code", "no such key ($exact)", "7004", "unexpected key")


def test_exact_applies_to_one_level_only() -> None:
    observed = {"a": {"b": 1, "c": 2}, "z": 0}
    assert run({"$exact": {"a": {"b": 1}}}, observed).ok
    assert not run({"$exact": {"a": {"$exact": {"b": 1}}}}, observed).ok


def test_exact_on_real_get_resp() -> None:
    observed = get_resp()
    params = {"Enable": "true", "ID": "add1", "NotifType": "ValueChange"}
    first = {"resolved_path_results": [{"result_params": {"$exact": params}}]}
    assert run({"get_resp": {"req_path_results": [first, {}]}}, observed).ok
    result = run({"get_resp": {"req_path_results": [
        {"resolved_path_results": [{"result_params": {"$exact": {"Enable": True}}}]}, {}]}}, observed)
    assert [m.path for m in result.mismatches] == [
        "get_resp.req_path_results[0].resolved_path_results[0].result_params.ID",
        "get_resp.req_path_results[0].resolved_path_results[0].result_params.NotifType",
    ]


# --- lists ------------------------------------------------------------------------------


def test_list_in_order_same_length() -> None:
    assert run(["a", "b"], ["a", "b"]).ok
    check(run(["a", "b"], ["a", "c"]), "[1]", '"b"', '"c"', "value differs")
    assert [m.path for m in run(["a", "b"], ["b", "a"]).mismatches] == ["[0]", "[1]"]
    check(run({"l": ["a"]}, {"l": ["a", "b"]}), "l", '["a"]', '["a", "b"]', "2 items, expected 1")
    check(run({"l": ["a"]}, {"l": "a"}), "l", '["a"]', '"a"', "not a list")


def test_unordered() -> None:
    assert run({"$unordered": ["a", "b", "c"]}, ["c", "a", "b"]).ok
    check(run({"$unordered": ["a"]}, ["a", "a"]), "", '["a"] in any order', '["a", "a"]',
          "2 items, expected 1")
    check(run({"$unordered": ["a", "x"]}, ["b", "a"]), "", '"x"', '["b", "a"]',
          "no item matches expected item [1]")
    check(run({"$unordered": ["a"]}, {"a": 1}), "", '["a"] in any order', '{"a": 1}', "not a list")


def test_unordered_needs_reassignment_not_greedy() -> None:
    # Greedy would give "ab" to the first (broad) item and leave "ab" nothing.
    expected = {"$unordered": [{"$startswith": "a"}, "ab"]}
    assert run(expected, ["ab", "ac"]).ok
    assert run(expected, ["ac", "ab"]).ok


def test_unordered_without_one_to_one_assignment() -> None:
    check(run({"$unordered": [{"$startswith": "a"}, {"$startswith": "a"}]}, ["ab", "b"]),
          "", '[{"$startswith": "a"}, {"$startswith": "a"}] in any order', '["ab", "b"]',
          "no one-to-one assignment of items")


def test_unordered_real_get_resp_results() -> None:
    expected = {"get_resp": {"req_path_results": {"$unordered": [
        {"requested_path": "Device.DeviceInfo.UpTime"},
        {"requested_path": "Device.LocalAgent.Subscription.3.", "err_code": 0},
    ]}}}
    assert run(expected, get_resp()).ok


def test_contains() -> None:
    assert run({"$contains": ["b"]}, ["a", "b", "c"]).ok
    assert run({"$contains": []}, []).ok
    assert run({"$contains": ["a", "a"]}, ["a", "b", "a"]).ok
    check(run({"$contains": ["a", "a"]}, ["a", "b"]), "", 'a list containing ["a", "a"]',
          '["a", "b"]', "not enough distinct matching items")
    check(run({"l": {"$contains": ["z"]}}, {"l": ["a"]}), "l", '"z"', '["a"]',
          "no item matches expected item [0]")
    check(run({"l": {"$contains": ["z"]}}, {}), "l", 'a list containing ["z"]', "<absent>", "missing")


def test_contains_with_nested_partial_items() -> None:
    expected = {"get_resp": {"req_path_results": {"$contains": [
        {"resolved_path_results": [{"result_params": {"UpTime": {"$gt": 0}}}]}]}}}
    assert run(expected, get_resp()).ok


def test_length() -> None:
    assert run({"$length": 2}, ["a", "b"]).ok
    assert run({"$length": 2}, {"a": 1, "b": 2}).ok
    assert run({"$length": 3}, "abc").ok
    assert run({"$length": {"$min": 1}}, [1]).ok
    assert run({"$length": {"$max": 1}}, []).ok
    assert run({"$length": {"$min": 1, "$max": 2}}, [1, 2]).ok
    check(run({"$length": 2}, [1]), "", "length 2", "[1]", "length is 1")
    check(run({"$length": {"$min": 1, "$max": 2}}, []), "", "length from 1 to 2", "[]", "length is 0")
    check(run({"$length": {"$min": 1}}, []), "", "length >= 1", "[]", "length is 0")
    check(run({"$length": {"$max": 0}}, [1]), "", "length <= 0", "[1]", "length is 1")
    check(run({"$length": 1}, 5), "", "length 1", "5", "a int has no length")


def test_length_combined_with_contains() -> None:
    expected = {"$contains": ["a"], "$length": {"$min": 2}}
    assert run(expected, ["a", "b"]).ok
    check(run(expected, ["a"]), "", "length >= 2", '["a"]', "length is 1")


# --- operators --------------------------------------------------------------------------


def test_any() -> None:
    assert run({"a": {"$any": True}}, {"a": ""}).ok
    assert run({"a": {"$any": None}}, {"a": [1]}).ok
    check(run({"a": {"$any": True}}, {}), "a", "any value", "<absent>", "missing")


def test_absent_and_present() -> None:
    defaults: list[dict[str, Any]] = [{}, {"a": ""}, {"a": 0}, {"a": False}, {"a": []}, {"a": {}}]
    for observed in defaults:
        assert run({"a": {"$absent": True}}, observed).ok
        assert not run({"a": {"$present": True}}, observed).ok
    check(run({"a": {"$absent": True}}, {"a": "x"}), "a", "absent or a default value", '"x"',
          "present")
    check(run({"a": {"$present": True}}, {}), "a", "present with a non-default value",
          "<absent>", "missing")
    check(run({"a": {"$present": True}}, {"a": 0}), "a", "present with a non-default value",
          "0", "default value")
    assert run({"a": {"$absent": False}}, {"a": 1}).ok
    assert run({"a": {"$present": False}}, {}).ok


def test_absent_on_real_oneof() -> None:
    observed = add_resp({"ID": "a", "Recipient": "r"})
    oper = {"add_resp": {"created_obj_results": [{"oper_status": {"oper_failure": {"$absent": True},
                                                                  "oper_success": {"$present": True}}}]}}
    assert run(oper, observed).ok


def test_regex_full_match() -> None:
    assert run({"$regex": r"Device\.LocalAgent\.Subscription\.\d+\."},
               "Device.LocalAgent.Subscription.3.").ok
    check(run({"$regex": "abc"}, "abcd"), "", 'a full match of regex "abc"', '"abcd"',
          "regex does not match")
    assert run({"$regex": "70[0-9]{2}"}, 7004).ok  # scalars in their text form
    assert run({"$regex": "true"}, True).ok
    check(run({"$regex": "x"}, None), "", 'a full match of regex "x"', "null", "a null, not text")
    check(run({"$regex": "x"}, ["x"]), "", 'a full match of regex "x"', '["x"]', "a list, not text")


def test_one_of() -> None:
    assert run({"$one_of": ["ValueChange", "Event"]}, "Event").ok
    assert run({"$one_of": [1, 2]}, "2").ok
    check(run({"$one_of": ["a", "b"]}, "c"), "", 'one of ["a", "b"]', '"c"', "not one of the values")


@pytest.mark.parametrize(("name", "good", "bad", "bad_reason"), [
    ("string", "", 1, "a int"),
    ("int", 5, True, "a bool"),
    ("int", "-12", "1.5", "a string that is not of that type"),
    ("bool", False, 0, "a int"),
    ("bool", "true", "yes", "a string that is not of that type"),
    ("bool", "0", None, "a null"),
    ("list", [], {}, "a map"),
    ("map", {}, [], "a list"),
    ("path", "Device.LocalAgent.Subscription.3.", "Device..X", "a string that is not of that type"),
    ("path", "Device.LocalAgent.Subscription.*.ID", 3, "a int"),
])
def test_type(name: str, good: Any, bad: Any, bad_reason: str) -> None:
    assert run({"$type": name}, good).ok
    check(run({"$type": name}, bad), "", f"a value of type {name}", json.dumps(bad), bad_reason)


def test_not() -> None:
    assert run({"$not": "a"}, "b").ok
    check(run({"$not": {"$regex": "a.*"}}, "abc"), "", 'not (a full match of regex "a.*")',
          '"abc"', "matches the negated expectation")
    assert run({"a": {"$not": {"$present": True}}}, {}).ok
    assert run({"a": {"$not": 5}}, {}).ok  # nothing there is not 5


def test_ne() -> None:
    assert run({"$ne": 0}, 7004).ok
    assert run({"$ne": ""}, "x").ok
    check(run({"$ne": 1}, "1"), "", "!= 1", '"1"', "value is equal")
    check(run({"a": {"$ne": 1}}, {}), "a", "!= 1", "<absent>", "missing")


@pytest.mark.parametrize(("op", "bound", "good", "bad", "sym"), [
    ("$gt", 0, "1234", 0, ">"),
    ("$ge", 2, 2, "1", ">="),
    ("$lt", 10, 9.5, "10", "<"),
    ("$le", "3", "3", 4, "<="),
    ("$gt", -1.5, "-1", "-2e0", ">"),
])
def test_ordering(op: str, bound: Any, good: Any, bad: Any, sym: str) -> None:
    assert run({op: bound}, good).ok
    shown = json.dumps(bound if not isinstance(bound, str) else int(bound))
    check(run({op: bound}, bad), "", f"a number {sym} {shown}", json.dumps(bad), "comparison fails")


def test_ordering_rejects_non_numbers() -> None:
    for observed in ("abc", True, None, [1], "1,5", "0x10"):
        check(run({"$gt": 0}, observed), "", "a number > 0", json.dumps(observed), "not a number")
    assert run({"$gt": 0, "$lt": 10}, "5").ok
    check(run({"$gt": 0, "$lt": 10}, "50"), "", "a number < 10", '"50"', "comparison fails")


def test_startswith_and_contains_text() -> None:
    assert run({"$startswith": "Device."}, "Device.LocalAgent.").ok
    assert run({"$contains_text": "Agent"}, "Device.LocalAgent.").ok
    assert run({"$startswith": 70}, 7004).ok
    check(run({"$startswith": "Device."}, "device."), "", 'text starting with "Device."',
          '"device."', "prefix differs")
    check(run({"$contains_text": "x"}, "abc"), "", 'text containing "x"', '"abc"', "text not found")
    check(run({"$contains_text": "x"}, {}), "", 'text containing "x"', "{}", "a map, not text")


def test_error_code_appropriate_uses_context_message_kind() -> None:
    # TP-469 "an appropriate error code": judged by conformance.usp.errors.is_appropriate.
    body = to_mapping(error(7016, "no such object", msg_id="m-3"))["body"]
    expected = {"error": {"err_code": {"$error_code": "appropriate"}}}
    assert run(expected, body, message_kind="get").ok
    assert run(expected, {"error": {"err_code": "7016"}}, message_kind="get").ok
    assert run(expected, {"error": {"err_code": 7800}}, message_kind="add").ok  # vendor code
    check(run(expected, {"error": {"err_code": 7101}}, message_kind="get"), "error.err_code",
          "an error code appropriate for get", "7101", "7101 is not appropriate for get")
    check(run(expected, body), "error.err_code", "an error code appropriate for the message kind",
          "7016", "the match context gives no message_kind")
    check(run(expected, body, message_kind="bogus"), "error.err_code",
          "an error code appropriate for bogus", "7016",
          "unknown message kind 'bogus' in the match context")
    check(run(expected, {"error": {"err_code": "x"}}, message_kind="get"), "error.err_code",
          "an error code appropriate for get", '"x"', "not an error code")


def test_code_in() -> None:
    assert run({"$code_in": [7004, 7016]}, 7016).ok
    assert run({"$code_in": [7004, 7016]}, "7004").ok
    check(run({"$code_in": [7004, 7016]}, 7000), "", "an error code in [7004, 7016]", "7000",
          "code not in the list")
    check(run({"$code_in": [7004]}, True), "", "an error code in [7004]", "true", "not an error code")


def test_param_errs_in_real_error_message() -> None:
    body = to_mapping(error(7004, "bad", msg_id="m-4", param_errs=[
        ("Device.LocalAgent.Subscription.3.Foo", 7010, "not supported"),
        ("Device.LocalAgent.Subscription.3.Bar", 7012, "bad value")]))["body"]
    expected = {"error": {"err_code": {"$code_in": [7004]}, "param_errs": {"$unordered": [
        {"param_path": {"$startswith": "Device.", "$capture": "bad_bar"}, "err_code": 7012},
        {"param_path": {"$regex": r".*\.Foo"}, "err_code": {"$error_code": "appropriate"}},
    ]}}}
    result = run(expected, body, message_kind="add")
    assert result.ok and result.captures == {"bad_bar": "Device.LocalAgent.Subscription.3.Bar"}
    body["error"]["param_errs"][1]["err_code"] = 7000
    mismatch = only(run(expected, body, message_kind="add"))
    assert mismatch.path == "error.param_errs"
    assert mismatch.reason == "no item matches expected item [0]"


def test_all_and_any_of() -> None:
    assert run({"$all": [{"$startswith": "a"}, {"$contains_text": "z"}]}, "abz").ok
    result = run({"$all": [{"$startswith": "a"}, {"$contains_text": "z"}, {"$length": 9}]}, "b")
    assert [m.expected for m in result.mismatches] == [
        'text starting with "a"', 'text containing "z"', "length 9"]
    assert run({"$any_of": [{"$absent": True}, {"$regex": "[a-z]+"}]}, "abc").ok
    assert run({"a": {"$any_of": [{"$absent": True}, {"$regex": "[a-z]+"}]}}, {}).ok
    check(run({"$any_of": [1, {"$type": "map"}]}, "x"), "", 'any of (1 | a value of type map)',
          '"x"', "no alternative matches")
    check(run({"$all": [{"$type": "string"}]}, 1), "", "a value of type string", "1", "a int")


def test_operators_needing_presence_report_missing_once() -> None:
    check(run({"a": {"$gt": 0, "$lt": 9, "$capture": "n"}}, {}), "a",
          "a number > 0 and a number < 9 (captured as n)", "<absent>", "missing")


# --- $keys / $optional_keys: TP-469 1.1 metric 2 (R-ADD.5) ------------------------------


def test_tp469_1_1_metric_2_with_and_without_alias() -> None:
    assert run(METRIC_1_1_2, add_resp({"Alias": "cpe-1", "ID": "add1", "Recipient": "R"})).ok
    assert run(METRIC_1_1_2, add_resp({"ID": "add1", "Recipient": "R"})).ok


def test_tp469_1_1_metric_2_failures() -> None:
    check(run(METRIC_1_1_2, add_resp({"Alias": "cpe-1", "ID": "add1"})), UK,
          'keys ["Recipient", "ID"] plus optional ["Alias"]', 'keys ["Alias", "ID"]',
          'missing "Recipient"')
    check(run(METRIC_1_1_2, add_resp({"ID": "a", "Recipient": "R", "Extra": "x"})), UK,
          'keys ["Recipient", "ID"] plus optional ["Alias"]', 'keys ["Extra", "ID", "Recipient"]',
          'unexpected "Extra"')
    check(run(METRIC_1_1_2, add_resp({"Extra": "a"})), UK,
          'keys ["Recipient", "ID"] plus optional ["Alias"]', 'keys ["Extra"]',
          'missing "Recipient", "ID"; unexpected "Extra"')


def test_tp469_1_1_metric_2_param_errs_must_be_empty() -> None:
    observed = add_resp({"ID": "a", "Recipient": "R"},
                        param_errs=[{"param": "Enable", "err_code": 7012, "err_msg": "x"}])
    check(run(METRIC_1_1_2, observed), "add_resp.created_obj_results[0].oper_status.oper_success.param_errs",
          "[]", '[{"param": "Enable", "err_code": 7012, "err_msg": "x"}]', "1 items, expected 0")


def test_keys_without_optional_and_non_mapping() -> None:
    assert run({"$keys": []}, {}).ok
    check(run({"$keys": ["a"]}, ["a"]), "", 'keys ["a"]', '["a"]', "not a mapping")


# --- captures ---------------------------------------------------------------------------


def test_capture_instantiated_path_from_add_resp() -> None:
    expected = {"add_resp": {"created_obj_results": [{"oper_status": {"oper_success": {
        "instantiated_path": {"$type": "path", "$capture": "sub"}}}}]}}
    result = run(expected, add_resp({"ID": "a", "Recipient": "R"}))
    assert result.ok and result.captures == {"sub": "Device.LocalAgent.Subscription.3."}


def test_capture_alone_matches_any_present_value() -> None:
    assert run({"a": {"$capture": "x"}}, {"a": {"deep": [1]}}).captures == {"x": {"deep": [1]}}
    check(run({"a": {"$capture": "x"}}, {}), "a", "any value (captured as x)", "<absent>", "missing")


def test_capture_only_when_siblings_match() -> None:
    result = run({"a": {"$regex": "[0-9]+", "$capture": "n"}, "b": {"$capture": "m"}},
                 {"a": "x", "b": 2})
    assert not result.ok and result.captures == {"m": 2}


def test_capture_dropped_in_failed_alternatives_and_negation() -> None:
    result = run({"$any_of": [{"$regex": "a", "$capture": "first"},
                              {"$capture": "second"}]}, "b")
    assert result.captures == {"second": "b"}
    assert run({"$not": {"$capture": "x", "$regex": "z"}}, "a").captures == {}


def test_capture_from_chosen_unordered_pairing() -> None:
    expected = {"$unordered": [{"k": "a", "v": {"$capture": "va"}}, {"k": "b", "v": {"$capture": "vb"}}]}
    result = run(expected, [{"k": "b", "v": 2}, {"k": "a", "v": 1}])
    assert result.captures == {"va": 1, "vb": 2}


def test_capture_dotted_name_and_last_wins() -> None:
    assert run([{"$capture": "alt.x"}, {"$capture": "alt.x"}], [1, 2]).captures == {"alt.x": 2}


# --- compile errors ---------------------------------------------------------------------


def test_unknown_operator_names_place_and_valid_operators() -> None:
    with pytest.raises(MatcherSyntaxError) as info:
        compile_matcher({"add_resp": {"created_obj_results": [{"x": {"$regx": "a"}}]}},
                        where="steps[0].expect.response")
    exc = info.value
    assert exc.where == "steps[0].expect.response.add_resp.created_obj_results[0].x"
    assert exc.reason == "unknown operator '$regx'"
    text = str(exc)
    assert text.startswith("unknown operator '$regx' at steps[0].expect.response.add_resp")
    for op in ("$regex", "$keys", "$optional_keys", "$capture", "$exact", "$unordered"):
        assert op in text
    assert isinstance(exc, ValueError)
    assert str(pickle.loads(pickle.dumps(exc))) == text


def test_operators_constant() -> None:
    assert {"$any", "$absent", "$present", "$regex", "$one_of", "$type", "$not", "$ne", "$gt",
            "$ge", "$lt", "$le", "$startswith", "$contains_text", "$error_code", "$code_in",
            "$capture", "$all", "$any_of", "$keys", "$optional_keys", "$exact", "$unordered",
            "$contains", "$length"} == OPERATORS


@pytest.mark.parametrize(("expected", "where", "fragment"), [
    ({"$any": False}, "$any", "$any takes true"),
    ({"$absent": "yes"}, "$absent", "$absent takes true or false"),
    ({"$present": 1}, "$present", "$present takes true or false"),
    ({"$regex": 1}, "$regex", "$regex takes a string"),
    ({"$regex": "("}, "$regex", "invalid regex '('"),
    ({"$one_of": []}, "$one_of", "non-empty list of plain values"),
    ({"$one_of": [[1]]}, "$one_of", "non-empty list of plain values"),
    ({"$type": "float"}, "$type", "$type takes one of string, int, bool, list, map, path"),
    ({"$not": {"$bad": 1}}, "$not", "unknown operator '$bad'"),
    ({"$ne": [1]}, "$ne", "$ne takes a plain value"),
    ({"$gt": "abc"}, "$gt", "$gt takes a number"),
    ({"$le": True}, "$le", "$le takes a number"),
    ({"$lt": float("nan")}, "$lt", "$lt takes a number"),
    ({"$startswith": None}, "$startswith", "$startswith takes a string"),
    ({"$contains_text": {}}, "$contains_text", "$contains_text takes a string"),
    ({"$error_code": "any"}, "$error_code", "$error_code takes 'appropriate'"),
    ({"$code_in": ["7004"]}, "$code_in", "list of integer error codes"),
    ({"$code_in": 7004}, "$code_in", "$code_in takes a non-empty list"),
    ({"$capture": "1x"}, "$capture", "$capture takes a variable name"),
    ({"$capture": 3}, "$capture", "$capture takes a variable name"),
    ({"$all": []}, "$all", "$all takes a non-empty list"),
    ({"$any_of": "a"}, "$any_of", "$any_of takes a list"),
    ({"$keys": "ID"}, "$keys", "$keys takes a list"),
    ({"$keys": ["ID"], "$optional_keys": ["ID"]}, "$optional_keys", "both required and optional"),
    ({"$keys": ["ID"], "$optional_keys": "Alias"}, "$optional_keys", "$optional_keys takes a list"),
    ({"$optional_keys": ["Alias"]}, "$optional_keys", "needs $keys"),
    ({"$length": -1}, "$length", "non-negative integer"),
    ({"$length": {}}, "$length", "$length takes n or {$min: a, $max: b}"),
    ({"$length": {"$min": 1, "$foo": 2}}, "$length", "$length takes n or"),
    ({"$length": {"$min": 3, "$max": 1}}, "$length", "$min is greater than $max"),
    ({"$length": {"$min": "1"}}, "$length.$min", "$min takes a non-negative integer"),
    ({"$min": 1}, "", "$min is only valid inside $length"),
    ({"$exact": [1]}, "$exact", "$exact takes a mapping of field names"),
    ({"$exact": {"$any": True}}, "$exact", "$exact takes a mapping of field names"),
    ({"$unordered": {"a": 1}}, "$unordered", "$unordered takes a list"),
    ({"$contains": "a"}, "$contains", "$contains takes a list"),
    ({"$regex": "a", "field": 1}, "", "mixes operators ['$regex'] with field names ['field']"),
    ({"when": datetime.date(2024, 1, 2)}, "when", "YAML read 2024-01-02 as a date/time; quote it"),
    ({"x": object()}, "x", "unsupported value of type object"),
    ({None: 1}, "", "field name None is not a string"),
    ([{"a": [{"$unordered": 1}]}], "[0].a[0].$unordered", "$unordered takes a list"),
])
def test_compile_errors(expected: Any, where: str, fragment: str) -> None:
    with pytest.raises(MatcherSyntaxError) as info:
        compile_matcher(expected)
    assert info.value.where == where
    assert fragment in info.value.reason


def test_compile_error_where_prefix() -> None:
    with pytest.raises(MatcherSyntaxError) as info:
        compile_matcher({"a": {"$type": "x"}}, where="case.yaml steps[2]")
    assert info.value.where == "case.yaml steps[2].a.$type"
    assert str(info.value) == ("$type takes one of string, int, bool, list, map, path "
                               "at case.yaml steps[2].a.$type")


# --- describe ---------------------------------------------------------------------------


def test_describe_round_trips_and_is_json() -> None:
    expectations = [
        METRIC_1_1_2,
        {"$exact": {"a": 1, "b": [True, None, 1.5]}},
        {"$unordered": [{"$regex": "x", "$capture": "c"}], "$length": {"$min": 1, "$max": 3}},
        {"$contains": [{"$not": {"$one_of": [1, 2]}}], "$length": 2},
        {"$all": [{"$gt": 1}, {"$le": "5"}], "$any_of": [{"$ne": 3}, {"$type": "int"}]},
        {"$error_code": "appropriate", "$code_in": [7004]},
        {"$startswith": "D", "$contains_text": "A", "$any": True},
        {"$absent": True}, {"$present": True}, {"$length": {"$max": 4}},
    ]
    for expected in expectations:
        desc = compile_matcher(expected).describe()
        json.dumps(desc)
        assert compile_matcher(desc).describe() == desc
    assert compile_matcher({"$le": "5"}).describe() == {"$le": 5}
    assert compile_matcher(METRIC_1_1_2).describe() == METRIC_1_1_2
    assert isinstance(compile_matcher(1), Matcher)
    assert repr(compile_matcher({"a": 1})) == '_Map({"a": 1})'


# --- substitute -------------------------------------------------------------------------

VARS: dict[str, Any] = {
    "sub": "Device.LocalAgent.Subscription.3.",
    "n": 3,
    "flag": True,
    "none": None,
    "items": [1, "a"],
    "alt": {"multi_instance_object": "Device.LocalAgent.Controller.", "deep": {"x": 1}},
    "alt.flat": "flat-wins",
}


def test_substitute_whole_placeholder_keeps_type() -> None:
    assert substitute("{n}", VARS) == 3
    assert substitute("{flag}", VARS) is True
    assert substitute("{items}", VARS) == [1, "a"]
    assert substitute("{alt.deep}", VARS) == {"x": 1}


def test_substitute_inside_text_and_structures() -> None:
    template = {"get": {"param_paths": ["{sub}Enable", "{alt.multi_instance_object}"],
                        "max_depth": "{n}", "note": "n={n} flag={flag} none=[{none}] l={items}"},
                "{sub}": ("{n}",), 5: "{n}"}
    assert substitute(template, VARS) == {
        "get": {"param_paths": ["Device.LocalAgent.Subscription.3.Enable",
                                "Device.LocalAgent.Controller."],
                "max_depth": 3, "note": 'n=3 flag=true none=[] l=[1, "a"]'},
        "Device.LocalAgent.Subscription.3.": (3,), 5: 3}
    assert substitute(7, VARS) == 7 and substitute(None, VARS) is None


def test_substitute_flat_dotted_key_first() -> None:
    assert substitute("{alt.flat}", VARS) == "flat-wins"


def test_substitute_escapes_and_literal_braces() -> None:
    assert substitute("{{n}", VARS) == "{n}"
    assert substitute("{{", VARS) == "{"
    assert substitute("a}}b", VARS) == "a}}b"
    text = "header {\n  msg_id: '{n}'\n}\nbody { request { get { param_paths: '{sub}' } } }"
    assert substitute(text, VARS) == (
        "header {\n  msg_id: '3'\n}\n"
        "body { request { get { param_paths: 'Device.LocalAgent.Subscription.3.' } } }")
    assert substitute(r"\d{3}[a-z]{1,2}{ n }{}", VARS) == r"\d{3}[a-z]{1,2}{ n }{}"


def test_substitute_unknown_variable() -> None:
    with pytest.raises(UnknownVariable) as info:
        substitute({"a": ["{alt.missing}"]}, VARS)
    exc = info.value
    assert isinstance(exc, KeyError)
    assert exc.name == "alt.missing"
    assert "alt.multi_instance_object" in exc.known and "sub" in exc.known
    assert str(exc).startswith("unknown variable {alt.missing} (known variables: alt, alt.deep")
    with pytest.raises(UnknownVariable, match="known variables: none"):
        substitute("x{y}", {})
    with pytest.raises(UnknownVariable):
        substitute("{sub.x}", VARS)  # cannot walk into a string
    again = pickle.loads(pickle.dumps(exc))
    assert again.name == exc.name and again.known == exc.known


def test_substitute_then_compile_like_the_runner() -> None:
    expected = substitute({"get_resp": {"req_path_results": {"$contains": [
        {"requested_path": "{sub}"}]}}}, VARS)
    assert compile_matcher(expected).match(get_resp()).ok


# --- never raises (hypothesis) ----------------------------------------------------------

json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["a", "b", "err_code", "unique_keys", "ID", "Alias", "Recipient"])
        | st.text(max_size=4), inner, max_size=4),
    max_leaves=20,
)

FIXED = [compile_matcher(e) for e in [
    METRIC_1_1_2,
    {"a": {"$exact": {"b": [1, {"$regex": ".*"}]}}, "err_code": {"$error_code": "appropriate"}},
    {"$unordered": [{"$any": True}, {"$type": "path"}, {"$capture": "c"}]},
    {"$contains": [{"$gt": 0}, {"$le": 1.5}], "$length": {"$min": 1}},
    {"a": {"$not": {"$keys": ["x"], "$optional_keys": ["y"]}}, "b": {"$absent": True}},
    {"$any_of": [{"$startswith": "a"}, {"$contains_text": "b"}, {"$one_of": [1, "x", None]}],
     "$capture": "z"},
    {"$all": [{"$ne": 0}, {"$code_in": [7004]}, {"$type": "bool"}]},
    {"a": [{"$present": True}, 1, "x", True, None]},
    {"$type": "int"}, {"$type": "map"}, {"$type": "list"}, {"$type": "string"},
]]

operator_like = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 8000) | st.text(max_size=6)
    | st.sampled_from(["appropriate", "path", "int", ".*", "a"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(sorted(OPERATORS | {"$min", "$max", "a", "b"})), inner, max_size=3),
    max_leaves=12,
)


def _assert_one_line(result: MatchResult) -> None:
    assert result.ok == (not result.mismatches)
    for m in result.mismatches:
        assert "internal matcher error" not in m.reason, m
        assert len(str(m).splitlines()) == 1


@settings(max_examples=200, deadline=None)
@given(json_like, st.sampled_from(["get", "add", "notify", "bogus", None]))
def test_match_never_raises_on_arbitrary_data(observed: Any, kind: str | None) -> None:
    context = {"message_kind": kind} if kind else None
    for matcher in FIXED:
        _assert_one_line(matcher.match(observed, context=context))


@settings(max_examples=300, deadline=None)
@given(operator_like, json_like)
def test_random_expectations_compile_or_raise_syntax_error(expected: Any, observed: Any) -> None:
    try:
        matcher = compile_matcher(expected)
    except MatcherSyntaxError as exc:
        assert str(exc)
        return
    json.dumps(matcher.describe())
    _assert_one_line(matcher.match(observed, context={"message_kind": "get"}))
    _assert_one_line(matcher.match({"a": observed, "b": [observed]}))


@settings(max_examples=100, deadline=None)
@given(json_like)
def test_expectation_matches_itself_when_plain(value: Any) -> None:
    # A plain (operator-free) value matches an identical observation, except NaN.
    try:
        matcher = compile_matcher(value)
    except MatcherSyntaxError:
        return
    if "NaN" in json.dumps(value):
        return
    assert matcher.match(value).ok
