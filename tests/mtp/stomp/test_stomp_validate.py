"""USP STOMP binding checks (R-STOMP.2-5, 10, 12-14, 17-23, 26-28) and heart-beats."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.mtp.stomp import (
    USP_CONTENT_TYPE,
    Frame,
    Role,
    Violation,
    content_length_matches,
    decode_frame,
    encode_frame,
    format_heartbeat,
    negotiate_heartbeat,
    parse_heartbeat,
    usp_endpoint_id,
    validate,
)
from conformance.usp import schema

AGENT = "os::012345-ABC"


def record() -> bytes:
    return schema.Record(version="1.3", to_id="proto::ctrl", from_id=AGENT,
                         no_session_context=schema.NoSessionContextRecord(payload=b"\x00x")
                         ).SerializeToString()


def rules(violations: list[Violation]) -> set[str]:
    return {v.rule for v in violations}


def good_stomp(**extra: str) -> Frame:
    headers = {"accept-version": "1.0,1.1,1.2", "host": "broker", "login": "u",
               "passcode": "p", "endpoint-id": AGENT, "heart-beat": "10000,0"}
    headers.update(extra)
    return Frame("STOMP", headers)


def good_send(body: bytes | None = None, **extra: str) -> Frame:
    body = record() if body is None else body
    headers = {"content-length": str(len(body)), "content-type": USP_CONTENT_TYPE,
               "reply-to-dest": "/usp/agent", "destination": "/usp/controller"}
    headers.update(extra)
    return Frame("SEND", headers, body)


# --- client frames ---------------------------------------------------------------

def test_good_agent_session_frames_have_no_violations():
    for frame in (good_stomp(), good_send(),
                  Frame("SUBSCRIBE", {"id": "0", "destination": "/usp/agent", "ack": "auto"}),
                  Frame("UNSUBSCRIBE", {"id": "0"}), Frame("DISCONNECT", {"receipt": "1"})):
        assert validate(frame, "agent") == [], frame
        assert validate(frame, Role.CONTROLLER) == []


def test_good_frames_survive_the_wire():
    for frame in (good_stomp(), good_send()):
        assert validate(decode_frame(encode_frame(frame)), Role.AGENT) == []


def test_send_usp_binding_checks():
    assert rules(validate(good_send(**{"content-type": "text/plain"}), "agent")) == {"R-STOMP.20"}
    f = good_send()
    f.headers = [(n, v) for n, v in f.headers if n != "reply-to-dest"]
    assert rules(validate(f, "agent")) == {"R-STOMP.21"}
    f.headers = [(n, v) for n, v in f.headers if n not in ("destination", "content-length")]
    assert rules(validate(f, "agent")) == {"R-STOMP.18", "R-STOMP.19", "R-STOMP.21"}
    assert rules(validate(good_send(**{"content-length": "3"}), "agent")) == {"R-STOMP.19"}
    assert rules(validate(good_send(**{"content-length": "x"}), "agent")) == {"R-STOMP.19"}
    padded = good_send()
    padded.headers = [(n, "0" + v if n == "content-length" else v) for n, v in padded.headers]
    assert validate(padded, "agent") == []


def test_content_length_matches():
    assert content_length_matches("3", b"abc") and content_length_matches("003", b"abc")
    assert content_length_matches("0", b"") and content_length_matches("000", b"")
    for bad in ("", "2", "-3", "+3", " 3", "3 ", "\u0663", "9" * 5000):
        assert not content_length_matches(bad, b"abc"), bad
    assert rules(validate(good_send(b"", **{"content-length": "0"}), "agent")) == {"R-STOMP.22"}


def test_send_body_must_be_a_usp_record():
    junk = good_send(b"\xff\xff\xff")
    assert rules(validate(junk, "agent")) == {"R-STOMP.22"}
    assert validate(junk, "agent", check_record=False) == []
    assert rules(validate(good_send(b"not a record"), "agent")) == {"R-STOMP.22"}


def test_connect_frame_checks():
    assert rules(validate(Frame("CONNECT", good_stomp().headers), "agent")) == {"R-STOMP.2"}
    assert rules(validate(good_stomp(**{"accept-version": "1.0,1.1"}), "agent")) == {"R-STOMP.2"}
    f = good_stomp()
    f.headers = [(n, v) for n, v in f.headers if n not in ("host", "accept-version")]
    assert [v.rule for v in validate(f, "agent")] == ["R-STOMP.2", "R-STOMP.2"]
    assert rules(validate(good_stomp(**{"endpoint-id": ""}), "agent")) == {"R-STOMP.4"}
    f = good_stomp()
    f.headers = [(n, v) for n, v in f.headers if n not in ("login", "passcode")]
    assert [v.rule for v in validate(f, "agent")] == ["R-STOMP.3", "R-STOMP.3"]
    assert validate(f, "agent", client_cert_auth=True) == []
    assert rules(validate(good_stomp(), "agent", expected_host="vhost")) == {"R-STOMP.5"}
    assert validate(good_stomp(), "agent", expected_host="broker") == []
    assert rules(validate(good_stomp(**{"heart-beat": "fast"}), "agent")) == {"R-STOMP.10"}
    assert rules(validate(good_stomp(**{"heart-beat": "1"}), "controller")) == {"STOMP-1.2"}
    assert rules(validate(Frame("STOMP", good_stomp().headers, b"x"), "agent")) == {"STOMP-1.2"}


def test_subscribe_checks():
    base = {"id": "0", "destination": "/usp/agent"}
    assert rules(validate(Frame("SUBSCRIBE", {**base, "ack": "client"}), "agent")) == {"R-STOMP.17"}
    assert rules(validate(Frame("SUBSCRIBE", {"id": "0"}), "agent")) == {"R-STOMP.13"}
    assert rules(validate(Frame("SUBSCRIBE", {"destination": "/d"}), "agent")) == {"R-STOMP.12"}
    assert rules(validate(Frame("SUBSCRIBE", base), "agent", subscribe_dest="/other")) == {"R-STOMP.14"}
    assert validate(Frame("SUBSCRIBE", base), "agent", subscribe_dest="/usp/agent") == []


@pytest.mark.parametrize("cmd, rule", [("BEGIN", "R-STOMP.26"), ("COMMIT", "R-STOMP.26"),
                                       ("ABORT", "R-STOMP.26"), ("ACK", "R-STOMP.27"),
                                       ("NACK", "R-STOMP.27")])
def test_forbidden_client_frames(cmd: str, rule: str):
    assert rules(validate(Frame(cmd, {"transaction": "t", "id": "1"}), "agent")) == {rule}


def test_unsubscribe_needs_id_and_unknown_or_misdirected_commands():
    assert rules(validate(Frame("UNSUBSCRIBE"), "agent")) == {"R-STOMP.28"}
    assert [str(v) for v in validate(Frame("HELLO"), "agent")] == ["[STOMP-1.2] unknown command 'HELLO'"]
    assert "server frame" in validate(Frame("MESSAGE"), "agent")[0].message
    assert "client frame" in validate(Frame("SEND"), "server")[0].message
    with pytest.raises(ValueError):
        validate(Frame("SEND"), "broker")


def test_body_and_raw_colon_checks():
    assert rules(validate(Frame("DISCONNECT", {}, b"x"), "agent")) == {"STOMP-1.2"}
    raw = decode_frame(b"SEND\ncontent-length:%d\ncontent-type:%s\nreply-to-dest:/a\n"
                       b"destination:/b:c\n\n" % (len(record()), USP_CONTENT_TYPE.encode())
                       + record() + b"\x00")
    assert [v.message for v in validate(raw, "agent")] == [
        "unescaped ':' in a header value (must be \\c)"]
    crlf = decode_frame(encode_frame(good_send(), eol=b"\r\n"))
    assert validate(crlf, "agent") == []
    # CONNECT-family frames are not escaped, so a raw colon there is fine
    assert validate(decode_frame(encode_frame(good_stomp())), "agent") == []


# --- server frames -----------------------------------------------------------------

def test_server_frames():
    assert validate(Frame("CONNECTED", {"version": "1.2", "heart-beat": "0,0"}), "server") == []
    assert rules(validate(Frame("CONNECTED", {"heart-beat": "x"}), "server")) == {"STOMP-1.2"}
    msg = Frame("MESSAGE", {"destination": "/a", "message-id": "1", "subscription": "0",
                            "content-type": USP_CONTENT_TYPE, "content-length": "1",
                            "reply-to-dest": "/c"}, b"x")
    assert validate(msg, "server") == []
    msg.headers = [(n, v) for n, v in msg.headers if n != "reply-to-dest"]
    assert rules(validate(msg, "server")) == {"R-STOMP.23"}
    missing = validate(Frame("MESSAGE"), "server")
    assert len(missing) == 3
    assert rules(validate(Frame("RECEIPT"), "server")) == {"STOMP-1.2"}
    assert validate(Frame("RECEIPT", {"receipt-id": "1"}), "server") == []
    assert validate(Frame("ERROR", {"message": "bye"}, b"details"), "server") == []
    assert rules(validate(Frame("ERROR", {"content-length": "9"}, b"x"), "server")) == {"STOMP-1.2"}


# --- Endpoint ID (R-STOMP.4) -----------------------------------------------------------

def test_usp_endpoint_id_accepts_raw_and_escaped_forms():
    assert usp_endpoint_id(decode_frame(b"STOMP\nendpoint-id:os::012345-ABC\n\n\x00")) == AGENT
    assert usp_endpoint_id(decode_frame(b"STOMP\nendpoint-id:os\\c\\c012345-ABC\n\n\x00")) == AGENT
    assert usp_endpoint_id(decode_frame(b"STOMP\nendpoint-id:a\\tb\n\n\x00")) == "a\\tb"
    assert usp_endpoint_id(Frame("STOMP")) is None
    assert usp_endpoint_id(Frame("SEND", {"endpoint-id": "x::y"})) == "x::y"


# --- heart-beats ---------------------------------------------------------------------------

def test_parse_heartbeat():
    assert parse_heartbeat("10000,5000") == ((10000, 5000), [])
    assert parse_heartbeat(None) == ((0, 0), [])
    pair, v = parse_heartbeat(" 1 , 2 ")
    assert pair == (1, 2) and rules(v) == {"R-STOMP.10"}
    for bad in ("", "1", "1,2,3", "-1,0", "a,b", "1.5,2", "\u0661,2"):
        pair, v = parse_heartbeat(bad, rule="STOMP-1.2")
        assert pair == (0, 0) and rules(v) == {"STOMP-1.2"}, bad


def test_format_heartbeat():
    assert format_heartbeat((0, 10000)) == "0,10000"
    with pytest.raises(ValueError):
        format_heartbeat((-1, 0))


@pytest.mark.parametrize("client, server, expected", [
    ((0, 0), (10000, 10000), (0, 0)),
    ((4000, 0), (0, 10000), (10000, 0)),
    ((4000, 6000), (8000, 2000), (4000, 8000)),
    ((1000, 1000), (0, 0), (0, 0)),
    ((0, 5000), (3000, 0), (0, 5000)),
])
def test_negotiate_heartbeat(client, server, expected):
    assert negotiate_heartbeat(client, server) == expected


def test_negotiate_rejects_negative():
    with pytest.raises(ValueError):
        negotiate_heartbeat((-1, 0), (0, 0))


@given(st.text(max_size=30))
@settings(max_examples=200, deadline=None)
def test_parse_heartbeat_never_raises(value: str):
    (x, y), violations = parse_heartbeat(value)
    assert x >= 0 and y >= 0 and all(isinstance(v, Violation) for v in violations)


_any_frame = st.builds(
    Frame,
    st.sampled_from(["SEND", "STOMP", "CONNECT", "SUBSCRIBE", "MESSAGE", "ACK", "X", "CONNECTED"]),
    st.lists(st.tuples(st.sampled_from(["content-length", "content-type", "destination", "host",
                                        "heart-beat", "accept-version", "endpoint-id", "id", "ack",
                                        "reply-to-dest"]), st.text(max_size=12)), max_size=8),
    st.binary(max_size=40),
    st.one_of(st.none(), st.binary(max_size=60)),
)


@given(_any_frame, st.sampled_from(list(Role)), st.booleans())
@settings(max_examples=300, deadline=None)
def test_validate_never_raises(frame: Frame, role: Role, cert: bool):
    assert all(isinstance(v, Violation) for v in validate(frame, role, client_cert_auth=cert))
