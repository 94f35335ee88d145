"""Differential tests against wsproto, in memory, both roles (RFC 6455;
R-WS.7, R-WS.9, R-WS.11a, R-WS.13, R-WS.14, R-WS.14b, the quoted-eid
interop note).

wsproto is a test-only dependency; the module is skipped without it.
Known, deliberate difference: close code 1014 (IANA "Bad Gateway") is valid
for us and rejected by wsproto, so random sequences avoid it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

wsproto = pytest.importorskip("wsproto")

from wsproto import ConnectionType  # noqa: E402
from wsproto import WSConnection as WPConnection  # noqa: E402
from wsproto.events import (  # noqa: E402
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Request,
    TextMessage,
)
from wsproto.events import Ping as WPPing  # noqa: E402
from wsproto.events import Pong as WPPong  # noqa: E402
from wsproto.extensions import Extension as WPExtension  # noqa: E402
from wsproto.frame_protocol import FrameProtocol, ParseFailed  # noqa: E402

from conformance.mtp.websocket import (  # noqa: E402
    USP_SUBPROTOCOL,
    ClientHandshake,
    CloseReceived,
    Event,
    Message,
    Opcode,
    Ping,
    Pong,
    ProtocolViolation,
    ServerHandshake,
    WSConnection,
    encode_close_payload,
    encode_frame,
)

AGENT_EID = "os::012345-ABC"
CTRL_EID = "proto::controller-1"


def counter_random() -> Callable[[int], bytes]:
    counter = itertools.count(7)
    return lambda n: bytes((next(counter) * 31 + i) % 256 for i in range(n))


class BbfUspExtension(WPExtension):
    """wsproto-side bbf-usp-protocol: offers/answers a quoted eid, no framing."""

    name = "bbf-usp-protocol"

    def __init__(self, eid: str) -> None:
        self.eid = eid
        self.peer_params: str | None = None

    def offer(self) -> str:
        return f'eid="{self.eid}"'

    def accept(self, offer: str) -> str:
        self.peer_params = offer
        return f'eid="{self.eid}"'

    def finalize(self, offer: str) -> None:
        self.peer_params = offer


Norm = tuple[object, ...]


def wsproto_decode(data: bytes, *, client: bool) -> list[Norm]:
    """wsproto's view of a byte stream, normalised like :func:`ours`."""
    proto = FrameProtocol(client=client, extensions=[])
    proto.receive_bytes(data)
    out: list[Norm] = []
    parts: list[bytes] = []
    opcode: int | None = None
    try:
        for frame in proto.received_frames():
            payload = frame.payload
            if isinstance(payload, tuple):  # a decoded Close: (code, reason)
                out.append(("close", int(payload[0]), payload[1]))
                continue
            # TEXT payloads arrive decoded, the rest as bytes.
            raw = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
            if frame.opcode.iscontrol():
                out.append((frame.opcode.name.lower(), raw))
            else:
                parts.append(raw)
                opcode = int(frame.opcode) if opcode is None else opcode
                if frame.message_finished:
                    out.append(("msg", opcode, b"".join(parts)))
                    parts, opcode = [], None
    except ParseFailed as exc:
        out.append(("fail", int(exc.code)))
    return out


def ours(events: list[Event]) -> list[Norm]:
    out: list[Norm] = []
    for event in events:
        if isinstance(event, Message):
            out.append(("msg", int(event.opcode), event.data))
        elif isinstance(event, Ping):
            out.append(("ping", event.payload))
        elif isinstance(event, Pong):
            out.append(("pong", event.payload))
        elif isinstance(event, CloseReceived):
            out.append(("close", 1005 if event.code is None else event.code, event.reason))
        elif isinstance(event, ProtocolViolation) and event.fatal:
            if out and out[-1][0] == "close":
                out.pop()  # wsproto raises instead of reporting a bad Close
            out.append(("fail", event.close_code))
    return out


def until_close(norm: list[Norm]) -> list[Norm]:
    for index, item in enumerate(norm):
        if item[0] in ("close", "fail"):
            return norm[: index + 1]
    return norm


# --- frames produced by one side, decoded by the other ----------------------

_payload = st.binary(max_size=300) | st.sampled_from([b"", bytes(125), bytes(126), bytes(65535), bytes(65536)])


@settings(max_examples=40, deadline=None)
@given(_payload, st.sampled_from([None, 1, 7, 125, 126, 1000]), st.booleans())
def test_wsproto_frames_decode_here(payload: bytes, fragment: int | None, client_side: bool) -> None:
    """wsproto's client (masked) and server (unmasked) frames decode here."""
    proto = FrameProtocol(client=client_side, extensions=[])
    data = bytearray()
    chunks = [payload] if fragment is None else [payload[i : i + fragment] for i in range(0, len(payload), fragment)]
    chunks = chunks or [b""]
    for index, chunk in enumerate(chunks):
        data += proto.send_data(chunk, fin=index == len(chunks) - 1)
    data += proto.ping(b"hb") + proto.pong(b"pb") + proto.close(1000, "bye")
    conn = WSConnection("server" if client_side else "client")
    events = conn.receive_data(bytes(data))
    assert events == [Message(payload, Opcode.BINARY, chunks), Ping(b"hb"), Pong(b"pb", False),
                      CloseReceived(1000, "bye")]


@settings(max_examples=40, deadline=None)
@given(_payload | st.text(max_size=200), st.sampled_from([None, 1, 7, 125, 126, 1000]), st.booleans())
def test_our_frames_decode_in_wsproto(data: bytes | str, fragment: int | None, client_side: bool) -> None:
    conn = WSConnection("client" if client_side else "server", random_bytes=counter_random())
    wire = conn.send_message(data, fragment) + conn.ping(b"hb") + conn.pong(b"pb") + conn.close(1001, "away")
    raw = data.encode("utf-8") if isinstance(data, str) else data
    opcode = int(Opcode.TEXT if isinstance(data, str) else Opcode.BINARY)
    assert wsproto_decode(wire, client=not client_side) == [
        ("msg", opcode, raw), ("ping", b"hb"), ("pong", b"pb"), ("close", 1001, "away")
    ]


# --- random, often malformed, frame sequences: same verdicts ----------------

_close_codes = st.sampled_from([0, 999, 1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1011, 1013, 1015, 1016,
                                2999, 3000, 4999, 5000])
_body = (
    st.binary(max_size=140)
    | st.text(max_size=20).map(lambda t: t.encode("utf-8"))
    | st.tuples(_close_codes, st.binary(max_size=6)).map(lambda cr: encode_close_payload(cr[0], cr[1]))
)
_rare = [None] * 15
_frame = st.tuples(
    st.sampled_from([0, 0, 0, 1, 2, 2, 2, 2, 8, 9, 9, 10, 10] + [3, 11]),
    _body,
    st.sampled_from([True, True, False]),
    st.sampled_from([0] * 15 + [1, 4]),
    st.sampled_from(_rare + ["flip"]),
    st.sampled_from(_rare + [2, 8]),
)


Spec = tuple[int, bytes, bool, int, "str | None", "int | None"]


def _tame(frames: list[Spec]) -> list[Spec]:
    """Mostly-valid variant: well-formed headers and message order, leaving
    UTF-8, Close bodies and a few ordering slips to compare."""
    out: list[Spec] = []
    in_message = False
    for opcode, body, fin, _, _, _ in frames:
        if opcode & 0x8:
            out.append((opcode, body[:125], True, 0, None, None))
            continue
        opcode = 0 if in_message else (opcode or 2)
        out.append((opcode, body, fin, 0, None, None))
        in_message = not fin
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(_frame, max_size=8), st.booleans(), st.booleans())
def test_same_verdicts_as_wsproto(frames: list[Spec],
                                  server_role: bool, tame: bool) -> None:
    """Same messages, control frames, Close and failure code as wsproto."""
    wire = bytearray()
    for opcode, body, fin, rsv, flip, length_size in _tame(frames) if tame else frames:
        masked = server_role != (flip == "flip")
        if length_size == 2 and len(body) > 0xFFFF:
            length_size = None
        wire += encode_frame(opcode, body, fin=fin, rsv=rsv, mask_key=b"\x0f\xf0\xaa\x55" if masked else None,
                             length_size=length_size)
    conn = WSConnection("server" if server_role else "client", random_bytes=counter_random())
    mine = until_close(ours(conn.receive_data(bytes(wire))))
    theirs = until_close(wsproto_decode(bytes(wire), client=not server_role))
    assert mine == theirs


def test_close_code_1014_is_a_known_difference() -> None:
    wire = encode_frame(Opcode.CLOSE, encode_close_payload(1014))
    assert ours(WSConnection("client").receive_data(wire)) == [("close", 1014, "")]
    assert wsproto_decode(wire, client=True) == [("fail", 1002)]


# --- handshake interoperability ---------------------------------------------


def _events(conn: WPConnection) -> list[object]:
    return list(conn.events())


def test_wsproto_client_with_our_server() -> None:
    """wsproto offers a quoted eid; our server answers one; wsproto accepts it."""
    ext = BbfUspExtension(CTRL_EID)
    client = WPConnection(ConnectionType.CLIENT)
    request = client.send(Request(host="agent", target="/usp?eid=proto::controller-1",
                                  subprotocols=[USP_SUBPROTOCOL], extensions=[ext]))
    server = ServerHandshake(eid=AGENT_EID)
    result = server.receive_data(request)
    assert result is not None and result.accepted and result.violations == []
    assert result.client_eid == CTRL_EID and result.request is not None
    assert result.request.extension_eid == CTRL_EID
    client.receive_data(result.response)
    accepted = _events(client)
    assert len(accepted) == 1 and isinstance(accepted[0], AcceptConnection)
    assert accepted[0].subprotocol == USP_SUBPROTOCOL
    assert ext.peer_params is not None and AGENT_EID in ext.peer_params

    ours_conn = WSConnection("server")
    events = ours_conn.receive_data(client.send(BytesMessage(b"record")) + client.send(WPPing(b"k")))
    assert events == [Message(b"record", Opcode.BINARY, [b"record"]), Ping(b"k")]
    client.receive_data(ours_conn.data_to_send() + ours_conn.send_message(b"reply", fragment_size=2))
    got = _events(client)
    assert isinstance(got[0], WPPong) and got[0].payload == b"k"
    assert b"".join(e.data for e in got[1:] if isinstance(e, BytesMessage)) == b"reply"
    client.receive_data(ours_conn.close(1000, "done"))
    closing = _events(client)
    assert isinstance(closing[0], CloseConnection) and closing[0].code == 1000 and closing[0].reason == "done"
    assert ours_conn.receive_data(client.send(closing[0].response())) == [CloseReceived(1000, "done")]


def test_our_client_with_wsproto_server() -> None:
    client = ClientHandshake("agent", "/usp", key_random=bytes(range(16)), eid=CTRL_EID)
    server = WPConnection(ConnectionType.SERVER)
    server.receive_data(client.data_to_send())
    (request,) = _events(server)
    assert isinstance(request, Request)
    assert request.subprotocols == [USP_SUBPROTOCOL] and request.target == "/usp?eid=proto::controller-1"
    assert request.extensions == ['bbf-usp-protocol; eid="proto::controller-1"']
    ext = BbfUspExtension(AGENT_EID)
    response = server.send(AcceptConnection(subprotocol=USP_SUBPROTOCOL, extensions=[ext]))
    assert ext.peer_params is not None and CTRL_EID in ext.peer_params
    result = client.receive_data(response)
    assert result is not None and result.established and result.violations == []
    assert result.server_eid == AGENT_EID

    conn = WSConnection("client", random_bytes=counter_random())
    server.receive_data(conn.send_message(b"hello", fragment_size=2) + conn.send_message("text") + conn.ping(b"p"))
    got = _events(server)
    assert b"".join(e.data for e in got if isinstance(e, BytesMessage)) == b"hello"
    assert "".join(e.data for e in got if isinstance(e, TextMessage)) == "text"
    pings = [e for e in got if isinstance(e, WPPing)]
    assert len(pings) == 1
    events = conn.receive_data(server.send(pings[0].response()) + server.send(BytesMessage(b"out")))
    assert events == [Pong(b"p", True), Message(b"out", Opcode.BINARY, [b"out"])]
    events = conn.receive_data(server.send(CloseConnection(code=1001, reason="bye")))
    assert events == [CloseReceived(1001, "bye")]
    server.receive_data(conn.data_to_send())
    (echo,) = _events(server)
    assert isinstance(echo, CloseConnection) and echo.code == 1001


def test_wsproto_server_without_extension_is_fine_for_our_client() -> None:
    """R-WS.11b: no bbf-usp-protocol in the answer is not an error."""
    client = ClientHandshake("agent", key_random=bytes(16), eid=CTRL_EID)
    server = WPConnection(ConnectionType.SERVER)
    server.receive_data(client.data_to_send())
    _events(server)
    result = client.receive_data(server.send(AcceptConnection(subprotocol=USP_SUBPROTOCOL)))
    assert result is not None and result.established
    assert [v.rule for v in result.violations] == ["R-WS.11a"] and result.violations[0].level == "SHOULD"
