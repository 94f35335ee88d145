"""Sec-WebSocket-Extensions grammar and HTTP head reading (RFC 6455 9.1,
RFC 7230 3; R-WS.10a, R-WS.11a and the interop note on quoted eids)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.mtp.websocket import (
    BBF_USP_EXTENSION,
    HeadReader,
    HeadState,
    WSParseError,
    WSUsageError,
    extension_param,
    format_extensions,
    non_token_values,
    parse_extensions,
)
from conformance.mtp.websocket.httphead import is_token, parse_request_head, parse_response_head, split_list

# --- extension parsing ----------------------------------------------------


def test_quoted_eid_with_colons_is_accepted() -> None:
    """Real agents answer a quoted eid holding ':' (R-WS.11a, interop notes)."""
    exts = parse_extensions('bbf-usp-protocol; eid="os::012345-ABC"')
    assert exts == [(BBF_USP_EXTENSION, {"eid": "os::012345-ABC"})]
    assert extension_param(exts, BBF_USP_EXTENSION, "eid") == "os::012345-ABC"


def test_unquoted_token_value() -> None:
    assert parse_extensions("bbf-usp-protocol;eid=proto-agent") == [("bbf-usp-protocol", {"eid": "proto-agent"})]


def test_escapes_in_quoted_string() -> None:
    exts = parse_extensions(r'x; a="q\"uo\\te"; b="\x"')
    assert exts == [("x", {"a": 'q"uo\\te', "b": "x"})]


def test_multiple_extensions_params_and_headers() -> None:
    exts = parse_extensions(
        ["permessage-deflate; client_max_window_bits, foo ;bar = 1 ; baz=\"two words\"", ", Bbf-USP-Protocol; EID=x,"]
    )
    assert exts == [
        ("permessage-deflate", {"client_max_window_bits": None}),
        ("foo", {"bar": "1", "baz": "two words"}),
        ("bbf-usp-protocol", {"eid": "x"}),
    ]
    assert extension_param(exts, "BBF-usp-protocol", "EID") == "x"
    assert extension_param(exts, "absent", "eid") is None


def test_repeated_param_keeps_last() -> None:
    assert parse_extensions("x; a=1; a=2") == [("x", {"a": "2"})]


@pytest.mark.parametrize(
    "value",
    [
        "",
        " , ,",
        "bbf-usp-protocol; eid=os::x",  # ':' is not a token char unquoted
        'x; eid="unterminated',
        'x; eid="bad\x01char"',
        'x; eid="trailing-escape\\',
        "x; =v",
        "x; a=",
        "x y",
        "; a=b",
        'x; a="v" junk',
        "(x)",
    ],
)
def test_malformed_extension_values_raise_parse_error(value: str) -> None:
    with pytest.raises(WSParseError):
        parse_extensions(value)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_random_extension_text_never_crashes(value: str) -> None:
    try:
        result = parse_extensions(value)
    except WSParseError:
        return
    assert all(is_token(name) for name, _ in result)


_value = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"), max_size=20
)
_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.!", min_size=1, max_size=10)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(_token, st.dictionaries(_token, st.none() | _value, max_size=3)), min_size=1, max_size=3),
    st.booleans(),
)
def test_format_then_parse_round_trip(exts: list[tuple[str, dict[str, str | None]]], always_quote: bool) -> None:
    text = format_extensions(exts, always_quote=always_quote)
    assert parse_extensions(text) == exts


def test_format_quotes_only_when_needed() -> None:
    assert format_extensions([("bbf-usp-protocol", {"eid": "os::1"})]) == 'bbf-usp-protocol; eid="os::1"'
    assert format_extensions([("x", {"a": "tok", "b": None})]) == "x; a=tok; b"
    assert format_extensions([("x", {"a": "tok"})], always_quote=True) == 'x; a="tok"'
    assert format_extensions([("x", {"a": 'q"\\'})]) == r'x; a="q\"\\"'
    assert format_extensions([]) == ""


@pytest.mark.parametrize("exts", [[("bad name", {})], [("x", {"bad name": None})], [("x", {"a": "line\nbreak"})]])
def test_format_refuses_unencodable(exts: list[tuple[str, dict[str, str | None]]]) -> None:
    with pytest.raises(WSUsageError):
        format_extensions(exts)


def test_non_token_values_lists_quoted_non_tokens() -> None:
    exts = parse_extensions('bbf-usp-protocol; eid="os::1"; mode=fast; flag')
    assert non_token_values(exts) == [("bbf-usp-protocol", "eid", "os::1")]


# --- HTTP heads -------------------------------------------------------------


def test_head_reader_incremental_with_trailing_bytes() -> None:
    reader = HeadReader()
    data = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x82\x00"
    states = [reader.feed(data[i : i + 1]) for i in range(len(data))]
    assert states.count(HeadState.COMPLETE) == 3  # terminator byte + two trailing bytes
    assert states[: len(data) - 3] == [HeadState.NEED_MORE] * (len(data) - 3)
    assert reader.head == b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    assert reader.trailing == b"\x82\x00"
    assert reader.feed(b"more") is HeadState.COMPLETE
    assert reader.trailing == b"\x82\x00more"


def test_head_reader_size_limit() -> None:
    reader = HeadReader(max_size=32)
    assert reader.feed(b"GET / HTTP/1.1\r\n") is HeadState.NEED_MORE
    assert reader.feed(b"X-Long: " + b"a" * 40) is HeadState.TOO_LARGE
    assert reader.feed(b"\r\n\r\n") is HeadState.TOO_LARGE
    assert reader.head is None
    # A terminator found past the limit is still too large.
    assert HeadReader(max_size=20).feed(b"GET / HTTP/1.1\r\nA: b\r\n\r\n") is HeadState.TOO_LARGE
    # Exactly at the limit is fine.
    head = b"GET / HTTP/1.1\r\n\r\n"
    assert HeadReader(max_size=len(head)).feed(head) is HeadState.COMPLETE


def test_parse_request_head_fields() -> None:
    head = parse_request_head(b"GET /p?q HTTP/1.1\r\nHost: a\r\nX:  v1 \r\nx: v2\r\n\r\n")
    assert (head.method, head.target, head.version) == ("GET", "/p?q", (1, 1))
    assert head.get_all("X") == ["v1", "v2"] and head.get("host") == "a" and head.count("x") == 2
    assert head.get("missing") is None and head.violations == []


def test_parse_request_head_violations() -> None:
    head = parse_request_head(b"GET  HTTP/1.1\r\nNoColon\r\nBad Name: v\r\n folded\r\nC: \x01\r\n")
    rules = [v.rule for v in head.violations]
    assert "RFC7230 3" in rules  # missing terminator
    assert "RFC7230 3.1.1" in rules  # request line
    assert rules.count("RFC7230 3.2") == 3  # no colon, bad name, control char
    assert "RFC7230 3.2.4" in rules  # obs-fold, joined to the previous value
    assert head.get("Bad Name") == "v folded"
    assert parse_request_head(b"GET / HTTP/x\r\n\r\n").version is None


def test_parse_response_head() -> None:
    head = parse_response_head(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
    assert (head.status, head.reason, head.version) == (101, "Switching Protocols", (1, 1))
    bad = parse_response_head(b"HTTP/1.1 1O1 x\r\n\r\n")
    assert bad.status is None and bad.violations[0].rule == "RFC7230 3.1.2"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_heads_never_crash(data: bytes) -> None:
    parse_request_head(data)
    parse_response_head(data)
    HeadReader(max_size=64).feed(data)


def test_split_list_and_is_token() -> None:
    assert split_list(["a, ,b", " c "]) == ["a", "b", "c"]
    assert is_token("v1.usp") and not is_token("") and not is_token("a b") and not is_token("os::x")
