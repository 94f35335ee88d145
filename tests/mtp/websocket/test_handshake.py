"""Opening handshake in both roles (RFC 6455 4; R-WS.7, R-WS.9, R-WS.10,
R-WS.10b, R-WS.10c, R-WS.11, R-WS.11a, R-WS.11b, R-WS.11c, R-WS.12, R-WS.12a)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.mtp.websocket import (
    BBF_USP_EXTENSION,
    USP_SUBPROTOCOL,
    ClientHandshake,
    ServerHandshake,
    Violation,
    WSUsageError,
    build_rejection,
    build_request,
    build_response,
    build_target,
    compute_accept,
    encode_eid,
    generate_key,
    parse_request,
    parse_response,
    query_eid,
    validate_request,
    validate_response,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 1.3 sample nonce
AGENT_EID = "os::012345-ABC"
CTRL_EID = "proto::controller-1"


def rules(violations: list[Violation]) -> set[str]:
    return {v.rule for v in violations}


def blocking(violations: list[Violation]) -> list[Violation]:
    return [v for v in violations if v.blocking]


# --- keys -------------------------------------------------------------------


def test_accept_known_vector() -> None:
    """RFC 6455 1.3 worked example."""
    assert compute_accept(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_generate_key_takes_randomness() -> None:
    assert generate_key(b"the sample nonce") == KEY
    with pytest.raises(WSUsageError):
        generate_key(b"short")


# --- eid in the query (R-WS.10b, R-WS.10c) ----------------------------------


def test_eid_percent_encoding_is_opaque() -> None:
    """R-WS.10c: '%' itself is percent-encoded."""
    assert encode_eid("doc::agent%21") == "doc::agent%2521"
    assert build_target("/usp", "doc::agent%21") == "/usp?eid=doc::agent%2521"
    assert query_eid("/usp?eid=doc::agent%2521") == "doc::agent%21"


def test_eid_is_separated_by_ampersand() -> None:
    target = build_target("/p", "a&b=c d", query="x=1")
    assert target == "/p?x=1&eid=a%26b%3Dc%20d"
    assert query_eid(target) == "a&b=c d"
    assert build_target("/p") == "/p" and build_target("/p", query="x") == "/p?x"


@pytest.mark.parametrize(
    ("target", "expected"),
    [("/", None), ("/?x=1", None), ("/?eid", None), ("/?eid=", ""), ("/?a=1&eid=os::x#frag", "os::x"),
     ("/?eid=%zz", "%zz"), ("/?eid=1&eid=2", "1")],
)
def test_query_eid(target: str, expected: str | None) -> None:
    assert query_eid(target) == expected


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30))
def test_eid_round_trips_through_query(eid: str) -> None:
    assert query_eid(build_target("/", eid)) == eid


# --- our client against our server -----------------------------------------


def test_client_server_handshake_round_trip() -> None:
    client = ClientHandshake("agent.local:8080", "/usp", key_random=bytes(range(16)), eid=CTRL_EID)
    server = ServerHandshake(eid=AGENT_EID)
    request = client.data_to_send()
    assert b"Sec-WebSocket-Protocol: v1.usp\r\n" in request  # R-WS.9, R-WS.10
    assert b"GET /usp?eid=proto::controller-1 HTTP/1.1" in request  # R-WS.10b
    # Fed one byte at a time: nothing until the blank line.
    for byte in request[:-1]:
        assert server.receive_data(bytes([byte])) is None
    result = server.receive_data(request[-1:] + b"\x82\x00")
    assert result is not None and result.accepted and result.violations == []
    assert result.client_eid == CTRL_EID and result.request is not None
    assert result.request.extension_eid == CTRL_EID and result.request.path == "/usp"
    assert result.trailing == b"\x82\x00"
    assert b'Sec-WebSocket-Extensions: bbf-usp-protocol; eid="os::012345-ABC"' in result.response  # R-WS.11a
    outcome = client.receive_data(result.response + b"\x82\x01x")
    assert outcome is not None and outcome.established and outcome.violations == []
    assert outcome.server_eid == AGENT_EID and outcome.trailing == b"\x82\x01x"
    with pytest.raises(WSUsageError):
        client.receive_data(b"late")
    with pytest.raises(WSUsageError):
        server.receive_data(b"late")


def test_server_without_offer_sends_no_extension() -> None:
    """R-WS.11c: a request without the extension is fine; R-WS.11b likewise."""
    client = ClientHandshake("h", key_random=bytes(16), eid=CTRL_EID, offer_bbf_extension=False)
    assert b"Sec-WebSocket-Extensions" not in client.request
    result = ServerHandshake(eid=AGENT_EID).receive_data(client.request)
    assert result is not None and result.accepted and result.violations == []
    assert b"Sec-WebSocket-Extensions" not in result.response
    outcome = client.receive_data(result.response)
    assert outcome is not None and outcome.established and outcome.server_eid is None


def test_agent_style_server_always_answers_extension() -> None:
    """Deployed agents answer bbf-usp-protocol unasked; our client offers it
    by default so that answer stays legal (RFC 6455 4.1 step 5)."""
    client = ClientHandshake("h", key_random=bytes(16), eid=CTRL_EID)
    server = ServerHandshake(eid=AGENT_EID, answer_extension=True)
    result = server.receive_data(client.request)
    assert result is not None
    outcome = client.receive_data(result.response)
    assert outcome is not None and outcome.established
    unoffered = ClientHandshake("h", key_random=bytes(16), eid=CTRL_EID, offer_bbf_extension=False)
    outcome = unoffered.receive_data(ServerHandshake(eid=AGENT_EID, answer_extension=True)
                                     .receive_data(unoffered.request).response)  # type: ignore[union-attr]
    assert outcome is not None and not outcome.established
    assert any("not offered" in v.detail for v in outcome.violations)


def test_client_with_raw_extension_header() -> None:
    client = ClientHandshake("h", key_random=bytes(16), eid=CTRL_EID, extensions="bbf-usp-protocol; eid=x")
    assert client.offered_extensions == ["bbf-usp-protocol"]
    broken = ClientHandshake("h", key_random=bytes(16), extensions='bad="')
    assert broken.offered_extensions == []


# --- request validation (server side) --------------------------------------


def _request(**kwargs: object) -> bytes:
    args: dict[str, object] = {"key": KEY, "eid": CTRL_EID}
    args.update(kwargs)
    return build_request("h", "/", **args)  # type: ignore[arg-type]


def test_valid_request_has_no_violations() -> None:
    req = parse_request(_request())
    assert validate_request(req) == []
    assert req.key == KEY and req.subprotocols == [USP_SUBPROTOCOL] and req.endpoint_id == CTRL_EID


def test_missing_subprotocol_is_refused() -> None:
    """R-WS.10 / R-WS.12a: no Sec-WebSocket-Protocol, no session."""
    result = ServerHandshake().receive_data(_request(subprotocols=()))
    assert result is not None and not result.accepted
    assert "R-WS.10" in rules(result.violations)
    assert result.response.startswith(b"HTTP/1.1 400 ")


def test_wrong_subprotocol_is_refused() -> None:
    violations = validate_request(parse_request(_request(subprotocols=("v2.usp", "bad token"))))
    assert {"R-WS.9", "RFC6455 4.1"} <= rules(violations)


def test_missing_eid_is_reported_not_blocking() -> None:
    """R-WS.10b is the client's duty; the server still may accept."""
    req = parse_request(_request(eid=None))
    violations = validate_request(req)
    assert rules(violations) == {"R-WS.10b"} and not blocking(violations)
    assert validate_request(req, require_eid=False) == []
    assert req.endpoint_id is None
    result = ServerHandshake().receive_data(_request(eid=None))
    assert result is not None and result.accepted


def test_extension_only_eid_is_used_as_fallback() -> None:
    """R-WS.10a (deprecated) still identifies the client when present."""
    req = parse_request(_request(eid=None, extensions=[(BBF_USP_EXTENSION, {"eid": "os::old"})]))
    assert req.query_eid is None and req.endpoint_id == "os::old"


def test_bad_version_gets_426() -> None:
    raw = _request().replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8")
    result = ServerHandshake().receive_data(raw)
    assert result is not None and not result.accepted
    assert result.response.startswith(b"HTTP/1.1 426 ") and b"Sec-WebSocket-Version: 13" in result.response


def test_oversized_request_gets_431() -> None:
    result = ServerHandshake(max_head_size=64).receive_data(_request())
    assert result is not None and not result.accepted and result.request is None
    assert result.response.startswith(b"HTTP/1.1 431 ") and result.client_eid is None


@pytest.mark.parametrize(
    ("old", "new", "detail"),
    [
        (b"GET ", b"POST ", "method"),
        (b"HTTP/1.1\r\n", b"HTTP/1.0\r\n", "HTTP version"),
        (b"Host: h\r\n", b"", "Host"),
        (b"Upgrade: websocket", b"Upgrade: h2c", "Upgrade"),
        (b"Connection: Upgrade", b"Connection: keep-alive", "Connection"),
        (b"Sec-WebSocket-Key: " + KEY.encode(), b"Sec-WebSocket-Key: c2hvcnQ=", "base64"),
        (b"Sec-WebSocket-Key: " + KEY.encode() + b"\r\n", b"", "Sec-WebSocket-Key"),
        (b"Sec-WebSocket-Key: " + KEY.encode() + b"\r\n",
         b"Sec-WebSocket-Key: " + KEY.encode() + b"\r\nSec-WebSocket-Key: " + KEY.encode() + b"\r\n",
         "Sec-WebSocket-Key"),
        (b"Sec-WebSocket-Protocol: v1.usp", b"Sec-WebSocket-Protocol: v1.usp\r\nSec-WebSocket-Extensions: x;=",
         "Extensions"),
    ],
)
def test_request_rule_breaks_block(old: bytes, new: bytes, detail: str) -> None:
    raw = _request()
    assert old in raw
    result = ServerHandshake().receive_data(raw.replace(old, new, 1))
    assert result is not None and not result.accepted
    assert any(detail in v.detail for v in blocking(result.violations))


def test_upgrade_and_connection_tokens_are_case_insensitive_lists() -> None:
    raw = _request().replace(b"Connection: Upgrade", b"Connection: keep-alive, UPGRADE")
    raw = raw.replace(b"Upgrade: websocket", b"Upgrade: WebSocket")
    assert validate_request(parse_request(raw)) == []


# --- response validation (client side) -------------------------------------


def _response(**kwargs: object) -> bytes:
    return build_response(KEY, **kwargs)  # type: ignore[arg-type]


def _check(raw: bytes, offered: tuple[str, ...] = (BBF_USP_EXTENSION,)) -> list[Violation]:
    return validate_response(parse_response(raw), key=KEY, offered_extensions=offered)


def test_valid_response_with_quoted_eid() -> None:
    raw = _response(extensions=f'{BBF_USP_EXTENSION}; eid="{AGENT_EID}"')
    resp = parse_response(raw)
    assert resp.status == 101 and resp.accept == compute_accept(KEY) and resp.subprotocol == USP_SUBPROTOCOL
    assert resp.extension_eid == AGENT_EID
    assert _check(raw) == []


def test_unquoted_eid_response() -> None:
    raw = _response(extensions="bbf-usp-protocol;eid=agent-1")
    assert parse_response(raw).extension_eid == "agent-1" and _check(raw) == []


def test_missing_extension_is_not_an_error() -> None:
    """R-WS.11b: only a SHOULD (R-WS.11a) miss, never blocking."""
    violations = _check(_response())
    assert rules(violations) == {"R-WS.11a"} and not blocking(violations)
    assert violations[0].level == "SHOULD"
    assert _check(_response(), offered=()) == []
    no_eid = _check(_response(extensions=BBF_USP_EXTENSION))
    assert rules(no_eid) == {"R-WS.11a"} and not blocking(no_eid)


def test_malformed_extension_header_blocks() -> None:
    violations = _check(_response(extensions='bbf-usp-protocol; eid="unterminated'))
    assert "RFC6455 9.1" in rules(blocking(violations))


@pytest.mark.parametrize(
    ("kwargs", "rule", "detail"),
    [
        ({"accept": "wrong"}, "RFC6455 4.1", "wrong Sec-WebSocket-Accept"),
        ({"subprotocol": None}, "R-WS.12", "Sec-WebSocket-Protocol"),
        ({"subprotocol": "v2.usp"}, "RFC6455 4.1", "not offered"),
        ({"subprotocol": "v1.usp, v2.usp"}, "RFC6455 4.1", "more than one"),
        ({"extensions": "permessage-deflate"}, "RFC6455 4.1", "not offered"),
    ],
)
def test_response_rule_breaks_block(kwargs: dict[str, object], rule: str, detail: str) -> None:
    violations = blocking(_check(_response(**kwargs)))
    assert any(v.rule == rule and detail in v.detail for v in violations)


def test_non_usp_subprotocol_breaks_r_ws_9() -> None:
    resp = parse_response(_response(subprotocol="other"))
    violations = validate_response(resp, key=KEY, offered_subprotocols=("other",))
    assert rules(violations) == {"R-WS.9"}


@pytest.mark.parametrize(
    ("old", "new", "detail"),
    [
        (b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n", b"", "missing Sec-WebSocket-Accept"),
        (b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n",
         b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Accept: x\r\n", "repeated"),
        (b"Upgrade: websocket", b"Upgrade: other", "Upgrade"),
        (b"Connection: Upgrade", b"Connection: close", "Connection"),
    ],
)
def test_response_header_breaks_block(old: bytes, new: bytes, detail: str) -> None:
    raw = _response()
    assert old in raw
    assert any(detail in v.detail for v in blocking(_check(raw.replace(old, new))))


def test_rejection_response() -> None:
    raw = build_rejection(403, "Forbidden")
    violations = _check(raw)
    assert [v.detail for v in violations] == ["status must be 101, got 403"]
    client = ClientHandshake("h", key_random=bytes(16))
    outcome = client.receive_data(raw)
    assert outcome is not None and not outcome.established
    with pytest.raises(WSUsageError):
        build_rejection(42)


def test_client_handshake_oversized_response() -> None:
    client = ClientHandshake("h", key_random=bytes(16), max_head_size=40)
    assert client.receive_data(b"HTTP/1.1 101 Switching Protocols\r\n") is None
    outcome = client.receive_data(b"X: " + b"y" * 50)
    assert outcome is not None and outcome.response is None and not outcome.established
    assert outcome.server_eid is None


def test_builders_refuse_header_injection() -> None:
    with pytest.raises(WSUsageError):
        build_request("h\r\nX: y", key=KEY)
    with pytest.raises(WSUsageError):
        build_response(KEY, extra_headers=[("Bad Name", "v")])
    with pytest.raises(WSUsageError):
        build_request("h\u0394", key=KEY)


def test_build_request_options() -> None:
    raw = build_request("h", "/x", key=KEY, origin="http://o", extra_headers=[("X-Test", "1")],
                        extensions=[(BBF_USP_EXTENSION, {"eid": "a"})])
    req = parse_request(raw)
    assert req.http.get("Origin") == "http://o" and req.http.get("X-Test") == "1"
    assert req.extensions == [(BBF_USP_EXTENSION, {"eid": "a"})] and req.query_eid is None
    assert b"Sec-WebSocket-Extensions" not in build_request("h", key=KEY, extensions=[])


# --- hostile bytes ----------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_either_side(data: bytes) -> None:
    for blob in (data, data + b"\r\n\r\n", b"GET / HTTP/1.1\r\n" + data + b"\r\n\r\n",
                 b"HTTP/1.1 101 x\r\n" + data + b"\r\n\r\n"):
        validate_request(parse_request(blob))
        validate_response(parse_response(blob), key=KEY, offered_extensions=(BBF_USP_EXTENSION,))
        ServerHandshake().receive_data(blob)
        ClientHandshake("h", key_random=bytes(16)).receive_data(blob)
