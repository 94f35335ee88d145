"""Tests for conformance.usp.errors (TR-369 "Error Codes", "USP Record Errors",
the per-message "Supported Error Codes" sections; TP-469 "Appropriate Error Codes")."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.usp import errors
from conformance.usp.errors import (
    ANY,
    ANY_REQUESTED_PATH,
    ERROR_CODES,
    ERROR_MESSAGE,
    MESSAGE_KINDS,
    RECORD,
    REQUESTED_PATH_KINDS,
    SUPPORTED_ERROR_CODES,
    ErrorCode,
    applicable_kinds,
    is_appropriate,
    is_data_model_code,
    is_record_code,
    is_usp_code,
    is_vendor_code,
    lookup,
    name_of,
    supported_codes,
)

REFERENCE = Path("/work/shared/reference/tr-369")
needs_reference = pytest.mark.skipif(
    not (REFERENCE / "messages.md").is_file() or not (REFERENCE / "mtp.md").is_file(),
    reason="TR-369 reference text not present at /work/shared/reference/tr-369",
)


def _upper_snake(name: str) -> str:
    name = re.sub(r"\(.*?\)", "", name)
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").upper()


# --------------------------------------------------------------------------
# Table shape


def test_table_covers_7000_to_7031_and_record_codes() -> None:
    assert set(ERROR_CODES) == set(range(7000, 7032)) | set(range(7100, 7107))
    for code, entry in ERROR_CODES.items():
        assert isinstance(entry, ErrorCode)
        assert entry.code == code
        assert entry.name and entry.description
        assert entry.applies_to


def test_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        ERROR_CODES[7999] = ErrorCode(7999, "x", frozenset())  # type: ignore[index]
    with pytest.raises(TypeError):
        SUPPORTED_ERROR_CODES["get"] = frozenset()  # type: ignore[index]


def test_applies_to_uses_documented_vocabulary() -> None:
    vocabulary = MESSAGE_KINDS | {ANY, ERROR_MESSAGE, ANY_REQUESTED_PATH, RECORD}
    for entry in ERROR_CODES.values():
        assert entry.applies_to <= vocabulary, entry


def test_message_kinds_are_request_oneof_names() -> None:
    from conformance.usp import schema

    oneof = schema.Request.DESCRIPTOR.oneofs_by_name["req_type"]
    assert MESSAGE_KINDS == {field.name for field in oneof.fields}
    assert REQUESTED_PATH_KINDS == MESSAGE_KINDS - {"notify", "get_supported_protocol"}


@pytest.mark.parametrize("code, kinds", [
    (7000, {ERROR_MESSAGE}), (7001, {ERROR_MESSAGE}), (7002, {ANY}), (7007, {ANY}),
    (7008, {ANY_REQUESTED_PATH}), (7009, {"set"}), (7010, {"add", "set"}),
    (7015, {"add", "set", "delete"}), (7016, {ANY}), (7018, {"add", "get_instances"}),
    (7022, {"operate"}), (7023, {"operate"}), (7024, {"delete"}), (7026, {ANY}),
    (7028, {"register"}), (7031, {"deregister"}), (7100, {RECORD}), (7106, {RECORD}),
])
def test_applicability_rows(code: int, kinds: set[str]) -> None:
    assert ERROR_CODES[code].applies_to == kinds


def test_constants_are_named_after_spec_names() -> None:
    for code, entry in ERROR_CODES.items():
        constant = _upper_snake(entry.name)
        assert getattr(errors, constant) == code, constant
    assert errors.MESSAGE_FAILED == 7000
    assert errors.INVALID_PATH == 7026
    assert errors.REQUEST_DENIED == 7002
    assert errors.SESSION_CONTEXT_NOT_ALLOWED == 7106


# --------------------------------------------------------------------------
# Ranges, lookup and names


def test_range_predicates() -> None:
    assert is_usp_code(7000) and is_usp_code(7999)
    assert not is_usp_code(6999) and not is_usp_code(8000)
    assert is_vendor_code(7800) and is_vendor_code(7999)
    assert not is_vendor_code(7799) and not is_vendor_code(8000)
    assert is_record_code(7100) and is_record_code(7199) and not is_record_code(7200)
    assert is_data_model_code(7200) and is_data_model_code(7299)
    assert not is_data_model_code(7300)
    for predicate in (is_usp_code, is_vendor_code, is_record_code, is_data_model_code):
        assert not predicate(True)  # type: ignore[arg-type]
        assert not predicate("7800")  # type: ignore[arg-type]
        assert not predicate(7800.0)  # type: ignore[arg-type]


def test_lookup_defined_and_series() -> None:
    assert lookup(7026) is ERROR_CODES[7026]
    vendor = lookup(7850)
    assert vendor is not None and vendor.code == 7850
    assert vendor.name == "Vendor defined error codes" and vendor.applies_to == {ANY}
    dm = lookup(7250)
    assert dm is not None and dm.name == "Data model defined error codes"
    rec = lookup(7150)
    assert rec is not None and rec.applies_to == {RECORD}
    for unknown in (0, 6999, 7032, 7099, 7300, 7799, 8000, -1, None, "7000", True):
        assert lookup(unknown) is None, unknown  # type: ignore[arg-type]


def test_name_of() -> None:
    assert name_of(7000) == "Message failed"
    assert name_of(7002) == "Request denied (no reason specified)"
    assert name_of(7104) == "Invalid Record value"
    assert name_of(7900) == "Vendor defined error codes"
    assert name_of(7500) is None


def test_applicable_kinds_expands_tokens() -> None:
    assert applicable_kinds(7000) == MESSAGE_KINDS
    assert applicable_kinds(7016) == MESSAGE_KINDS
    assert applicable_kinds(7008) == REQUESTED_PATH_KINDS
    assert applicable_kinds(7010) == {"add", "set"}
    assert applicable_kinds(7100) == {RECORD}
    assert applicable_kinds(7850) == MESSAGE_KINDS
    assert applicable_kinds(7500) == frozenset()


# --------------------------------------------------------------------------
# Per-message lists


def test_supported_lists_cover_every_section_and_stay_in_the_table() -> None:
    assert set(SUPPORTED_ERROR_CODES) == MESSAGE_KINDS - {"get_supported_protocol"}
    for kind, codes in SUPPORTED_ERROR_CODES.items():
        assert codes, kind
        assert codes <= set(ERROR_CODES), (kind, sorted(codes - set(ERROR_CODES)))
        assert {7000, 7001, 7002, 7003, 7004, 7005, 7006} <= codes


@pytest.mark.parametrize("kind, present, absent", [
    ("add", {7009, 7017, 7019, 7026}, {7020, 7021, 7025}),
    ("set", {7015, 7016, 7020, 7021}, {7017, 7025}),
    ("delete", {7015, 7018, 7024}, {7009}),
    ("get", {7008, 7010, 7016, 7026}, {7007, 7018}),
    ("get_instances", {7018}, {7007, 7010}),
    ("get_supported_dm", {7026}, {7007, 7018}),
    ("register", {7007, 7028, 7029}, {7026, 7030}),
    ("deregister", {7030}, {7031, 7026}),
    ("notify", {7006}, {7007, 7008, 7016}),
    ("operate", {7022, 7027}, {7023}),
])
def test_supported_list_contents(kind: str, present: set[int], absent: set[int]) -> None:
    assert present <= SUPPORTED_ERROR_CODES[kind]
    assert not absent & SUPPORTED_ERROR_CODES[kind]


def test_supported_codes_function() -> None:
    assert supported_codes("get") == SUPPORTED_ERROR_CODES["get"]
    assert supported_codes("get_resp") == SUPPORTED_ERROR_CODES["get"]
    gsp = supported_codes("get_supported_protocol")
    assert 7002 in gsp and 7000 in gsp and 7008 not in gsp and 7010 not in gsp
    with pytest.raises(ValueError):
        supported_codes("bogus")


# --------------------------------------------------------------------------
# is_appropriate (TP-469 "Appropriate Error Codes")


def test_is_appropriate_basic() -> None:
    assert is_appropriate(7026, "get")
    assert is_appropriate(7016, "delete")
    assert is_appropriate(7022, "operate")
    assert not is_appropriate(7022, "get")
    assert not is_appropriate(7024, "add")
    assert not is_appropriate(7100, "get")
    assert not is_appropriate(7500, "get")
    assert not is_appropriate(6999, "get")


def test_is_appropriate_vendor_codes_always() -> None:
    for kind in MESSAGE_KINDS | {RECORD}:
        assert is_appropriate(7800, kind) and is_appropriate(7999, kind)
        for basis in ("table", "section"):
            assert is_appropriate(7900, kind, basis=basis)  # type: ignore[arg-type]


def test_is_appropriate_bases_disagree_where_the_spec_does() -> None:
    # Get's own section lists 7010; the main table says Add/Set only.
    assert is_appropriate(7010, "get")
    assert is_appropriate(7010, "get", basis="section")
    assert not is_appropriate(7010, "get", basis="table")
    # 7007 is "Any" in the table but missing from Get's section.
    assert is_appropriate(7007, "get", basis="table")
    assert not is_appropriate(7007, "get", basis="section")
    # 7025 is Add/Set in the table but in neither section.
    assert is_appropriate(7025, "set", basis="table")
    assert not is_appropriate(7025, "set", basis="section")
    # 7008 needs a requested path, so never fits Notify.
    assert not is_appropriate(7008, "notify")
    assert is_appropriate(7008, "get_supported_dm")


def test_is_appropriate_record_kind() -> None:
    # R-MTP.5 / R-E2E.6a: Record errors 7100-7106.
    assert is_appropriate(7100, RECORD)
    assert is_appropriate(7106, "record")
    assert not is_appropriate(7150, RECORD)
    assert not is_appropriate(7026, RECORD)


def test_is_appropriate_response_suffix_and_bad_input() -> None:
    assert is_appropriate(7017, "add_resp")
    with pytest.raises(ValueError):
        is_appropriate(7000, "bogus")
    with pytest.raises(ValueError):
        is_appropriate(7000, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        is_appropriate(7000, "get", basis="nope")  # type: ignore[arg-type]
    assert not is_appropriate("7000", "get")  # type: ignore[arg-type]
    assert not is_appropriate(True, "get")  # type: ignore[arg-type]


def test_every_kind_with_a_section_accepts_the_generic_codes() -> None:
    for kind in MESSAGE_KINDS:
        for code in (7000, 7001, 7002, 7003, 7004, 7005, 7006):
            for basis in ("either", "table", "section"):
                assert is_appropriate(code, kind, basis=basis), (code, kind, basis)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=-(2**40), max_value=2**40),
       st.sampled_from(sorted(MESSAGE_KINDS | {RECORD})),
       st.sampled_from(["either", "table", "section"]))
def test_is_appropriate_total_over_integers(code: int, kind: str, basis: str) -> None:
    result = is_appropriate(code, kind, basis=basis)  # type: ignore[arg-type]
    assert isinstance(result, bool)
    if result:
        assert is_usp_code(code)
    either = is_appropriate(code, kind)
    assert either == (is_appropriate(code, kind, basis="table")
                      or is_appropriate(code, kind, basis="section"))
    entry = lookup(code)
    assert (entry is None) == (name_of(code) is None)


# --------------------------------------------------------------------------
# Drift detector against the TR-369 text

_ROW = re.compile(r"^\|\s*`(\d{4}(?:-\d{4})?)`\s*\|([^|]*)\|([^|]*)\|", re.MULTILINE)
_APPLICABILITY = {
    "Error Message": {ERROR_MESSAGE},
    "Any": {ANY},
    "Any requested_path": {ANY_REQUESTED_PATH},
    "-": None,
}
_HEADINGS = {
    "Add": "add", "Set": "set", "Delete": "delete", "Get": "get",
    "GetInstances": "get_instances", "GetSupportedDM": "get_supported_dm",
    "Register": "register", "Deregister": "deregister", "Notify": "notify",
    "Operate": "operate",
}
_CAMEL = {"GetInstances": "get_instances", "GetSupportedDM": "get_supported_dm"}


def _section(text: str, heading_regex: str) -> str:
    match = re.search(heading_regex, text, re.MULTILINE)
    assert match, heading_regex
    rest = text[match.end():]
    end = re.search(r"^#{1,3} ", rest, re.MULTILINE)
    return rest[: end.start() if end else len(rest)]


def _expand(spec: str) -> set[int]:
    out: set[int] = set()
    for low, high in re.findall(r"(\d{4})(?:-(\d{4}))?", spec):
        out.update(range(int(low), int(high or low) + 1))
    return out


@needs_reference
def test_drift_main_table_matches_messages_md() -> None:
    text = (REFERENCE / "messages.md").read_text(encoding="utf-8")
    table = _section(text, r"^## Error Codes")
    single: dict[int, tuple[str, str]] = {}
    ranges: set[str] = set()
    for code, name, applicability in _ROW.findall(table):
        if "-" in code:
            ranges.add(code)
            continue
        single[int(code)] = (name.strip(), applicability.strip())
    assert ranges == {"7100-7199", "7200-7299", "7800-7999"}
    ours = {c: e for c, e in ERROR_CODES.items() if c < 7100}
    assert set(single) == set(ours)
    for code, (name, applicability) in single.items():
        assert ours[code].name == name, code
        expected = _APPLICABILITY.get(applicability)
        if expected is None:
            expected = {_CAMEL.get(word.strip(), word.strip().lower())
                        for word in applicability.split(",")}
        assert ours[code].applies_to == expected, (code, applicability)


@needs_reference
def test_drift_record_table_matches_mtp_md() -> None:
    text = (REFERENCE / "mtp.md").read_text(encoding="utf-8")
    table = _section(text, r"^### USP Record Errors")
    found = {int(code): name.strip() for code, name, _ in _ROW.findall(table)}
    ours = {c: e.name for c, e in ERROR_CODES.items() if is_record_code(c)}
    assert found == ours


@needs_reference
def test_drift_per_message_sections_match_messages_md() -> None:
    text = (REFERENCE / "messages.md").read_text(encoding="utf-8")
    headings = re.findall(r"^#### (\w+) (?:Message )?(?:Supported )?Error Codes\s*$",
                          text, re.MULTILINE)
    assert sorted(headings) == sorted(_HEADINGS)
    for heading, kind in _HEADINGS.items():
        body = _section(text, rf"^#### {heading} (?:Message )?(?:Supported )?Error Codes\s*$")
        listed = _expand(body.split("include", 1)[1].split(".", 1)[0])
        vendor = set(range(7800, 8000))
        assert vendor <= listed, kind
        explicit = listed - vendor
        assert explicit == SUPPORTED_ERROR_CODES[kind], (
            kind, sorted(explicit ^ SUPPORTED_ERROR_CODES[kind]))
        # Every code a section names is in the table (or the vendor series).
        assert all(code in ERROR_CODES or is_vendor_code(code) for code in listed), kind
