"""UDS frame validation and the Handshake state machine (R-UDS.6, 13, 15-25)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.mtp.uds import (
    HANDSHAKE_TIMEOUT,
    TLV,
    Close,
    HandshakeDone,
    Ignored,
    PeerError,
    RecordReceived,
    Send,
    TLVType,
    UDSConnection,
    UDSFrame,
    UDSRole,
    Violation,
    decode_frame,
    encode_error,
    encode_frame,
    encode_handshake,
    encode_record,
    endpoint_id_problem,
    is_usp_record,
    validate_frame,
)
from conformance.usp import schema

AGENT, CTRL = "os::00256D-0123456789", "proto::controller-1"


def record() -> bytes:
    return schema.Record(version="1.3", to_id=CTRL, from_id=AGENT,
                         no_session_context=schema.NoSessionContextRecord(payload=b"\x00p")
                         ).SerializeToString()


def sent(actions) -> list[UDSFrame]:
    return [decode_frame(a.data) for a in actions if isinstance(a, Send)]


# --- validation ----------------------------------------------------------------------

def test_valid_frames_have_no_violations():
    for wire in (encode_handshake(AGENT), encode_error("oops"), encode_record(record()),
                 encode_frame([TLV(42, b"\xff")])):
        assert validate_frame(decode_frame(wire)) == []


@pytest.mark.parametrize("tlvs, rule", [
    ([], "R-UDS.6"),
    ([TLV(1, b"")], "R-UDS.16"),
    ([TLV(1, b"\xff\xfe")], "R-UDS.16"),
    ([TLV(1, b"no-colons")], "R-UDS.16"),
    ([TLV(1, b"os::a\nb")], "R-UDS.16"),
    ([TLV(2, b"\xc3")], "R-UDS.13"),
    ([TLV(3, b"")], "R-UDS.22"),
    ([TLV(3, b"\xff\xff")], "R-UDS.22"),
])
def test_frame_violations(tlvs: list[TLV], rule: str):
    violations = validate_frame(UDSFrame(tuple(tlvs)))
    assert [v.rule for v in violations] == [rule]
    assert str(violations[0]).startswith(f"[{rule}] ")


def test_record_check_can_be_skipped():
    assert validate_frame(UDSFrame((TLV(3, b"\xff\xff"),)), check_record=False) == []
    assert is_usp_record(record()) and not is_usp_record(b"") and not is_usp_record(b"\x08\x01")


def test_endpoint_id_problem():
    assert endpoint_id_problem(AGENT.encode()) is None
    assert endpoint_id_problem(b"oui:00256D:my-unique-bbf-id-42") is None
    for bad in (b"", b":a:b", b"a:b:", b"ab", b"\x80"):
        assert endpoint_id_problem(bad), bad


@given(st.lists(st.builds(TLV, st.integers(0, 255), st.binary(max_size=30)), max_size=4))
@settings(max_examples=200, deadline=None)
def test_validate_never_raises(tlvs: list[TLV]):
    assert all(isinstance(v, Violation) for v in validate_frame(UDSFrame(tuple(tlvs))))


# --- handshake state machine -------------------------------------------------------------

def handshaken() -> tuple[UDSConnection, UDSConnection]:
    client = UDSConnection("client", AGENT)
    server = UDSConnection(UDSRole.SERVER, CTRL)
    [hello] = client.start(now=0.0)
    assert isinstance(hello, Send)
    reply, done = server.receive_data(hello.data, now=0.1)
    assert done == HandshakeDone(AGENT) and isinstance(reply, Send)
    back = client.receive_data(reply.data, now=0.2)
    assert back == [HandshakeDone(CTRL)]
    return client, server


def test_handshake_exchange_client_first_then_server():
    """R-UDS.16: client sends its Endpoint ID; R-UDS.17: server answers with its own."""
    client = UDSConnection("client", AGENT)
    server = UDSConnection("server", CTRL)
    assert server.start(now=0) == []  # the server waits for the client
    actions = client.start(now=10.0)
    assert sent(actions)[0].handshakes[0].text() == AGENT
    assert client.deadline == 10.0 + HANDSHAKE_TIMEOUT and client.start(now=11) == []
    reply = server.receive_data(actions[0].data, now=10.5)
    assert sent(reply)[0].handshakes[0].text() == CTRL and server.is_open
    assert server.peer_endpoint_id == AGENT
    assert not client.is_open
    client.receive_data(reply[0].data, now=11)
    assert client.is_open and client.peer_endpoint_id == CTRL


def test_records_flow_after_handshake():
    client, server = handshaken()
    [out] = client.send_record(record())
    assert server.receive_data(out.data, now=1) == [RecordReceived(record())]
    both = encode_record(b"a") + encode_record(b"b")
    assert client.receive_data(both[:10], now=1) == []
    assert client.receive_data(both[10:], now=1) == [RecordReceived(b"a"), RecordReceived(b"b")]


def test_records_before_handshake_are_ignored():
    """R-UDS.20."""
    server = UDSConnection("server", CTRL)
    [ignored] = server.receive_data(encode_record(record()), now=0)
    assert isinstance(ignored, Ignored) and ignored.rule == "R-UDS.20"
    with pytest.raises(RuntimeError):
        server.send_record(b"x")


def test_repeated_handshake_and_unknown_tlv_ignored():
    """R-UDS.19 (an unexpected Handshake) and R-UDS.15 (unknown TLV types)."""
    client, server = handshaken()
    acts = server.receive_data(encode_handshake("os::other-1") + encode_frame([TLV(77, b"?")]), now=1)
    assert [(type(a), a.rule) for a in acts] == [(Ignored, "R-UDS.19"), (Ignored, "R-UDS.15")]
    assert server.peer_endpoint_id == AGENT
    assert [a.rule for a in server.receive_data(encode_frame([]), now=1)] == ["R-UDS.6"]


def test_bad_handshake_gets_error_frame():
    """R-UDS.21."""
    server = UDSConnection("server", CTRL)
    acts = server.receive_data(encode_frame([TLV(TLVType.HANDSHAKE, b"\xff")]), now=0)
    assert sent(acts)[0].errors and isinstance(acts[-1], Close) and acts[-1].rule == "R-UDS.21"
    assert server.closed and server.receive_data(encode_handshake(AGENT), now=1) == []


def test_client_handshake_timeout():
    """R-UDS.18: terminate when no Handshake arrives within 30 s."""
    client = UDSConnection("client", AGENT)
    client.start(now=100.0)
    assert client.poll(now=129.9) == []
    [close] = client.poll(now=130.0)
    assert close == Close("no Handshake from the server in time", "R-UDS.18")
    assert client.closed and client.poll(now=200) == []
    done, _ = handshaken()
    assert done.poll(now=10_000) == []
    assert UDSConnection("server", CTRL).poll(now=10_000) == []


def test_received_error_closes():
    """R-UDS.25."""
    client, _ = handshaken()
    acts = client.receive_data(encode_error("go away"), now=1)
    assert acts[0] == PeerError("go away")
    assert isinstance(acts[1], Close) and acts[1].rule == "R-UDS.25" and client.closed


def test_unparseable_frame_sends_error_and_closes_after_good_frames():
    """R-UDS.24."""
    client, _ = handshaken()
    acts = client.receive_data(encode_record(b"ok") + b"NOPE....", now=1)
    assert acts[0] == RecordReceived(b"ok")
    assert sent(acts)[0].errors[0].text().startswith("cannot parse frame (R-UDS.8)")
    assert acts[-1].rule == "R-UDS.24" and client.closed


def test_fail_for_unextractable_record():
    """R-UDS.23: the caller refuses a record it cannot extract."""
    _, server = handshaken()
    acts = server.fail("malformed USP Record")
    assert sent(acts)[0].errors[0].text() == "malformed USP Record"
    assert acts[-1] == Close("malformed USP Record", "R-UDS.23")
    assert server.fail("again") == []


def test_client_must_start_before_receiving():
    with pytest.raises(RuntimeError):
        UDSConnection("client", AGENT).receive_data(b"", now=0)


@given(st.binary(max_size=150), st.sampled_from(["client", "server"]))
@settings(max_examples=200, deadline=None)
def test_connection_never_crashes_on_random_bytes(data: bytes, role: str):
    conn = UDSConnection(role, AGENT)
    conn.start(now=0)
    for action in conn.receive_data(encode_handshake(CTRL) + data, now=1):
        assert isinstance(action, Send | Close | HandshakeDone | RecordReceived | PeerError | Ignored)
