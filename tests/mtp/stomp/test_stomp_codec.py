"""STOMP 1.2 framing: streaming decoder, encoder, escaping (R-STOMP.2/4/18/19/22)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.mtp.stomp import (
    COMMANDS,
    DEFAULT_MAX_FRAME_SIZE,
    UNESCAPED_COMMANDS,
    USP_CONTENT_TYPE,
    Frame,
    HeartBeat,
    StompDecodeError,
    StompDecoder,
    decode_frame,
    encode_frame,
    encode_heartbeat,
    escape_header,
    unescape_header,
)
from conformance.usp import schema

AGENT = "os::012345-ABC"


def usp_record(payload: bytes = b"\x00\x01binary\x00") -> bytes:
    rec = schema.Record(version="1.3", to_id="proto::ctrl", from_id=AGENT,
                        no_session_context=schema.NoSessionContextRecord(payload=payload))
    return rec.SerializeToString()


def send_frame(body: bytes | None = None) -> Frame:
    body = usp_record() if body is None else body
    return Frame("SEND", [("content-length", str(len(body))), ("content-type", USP_CONTENT_TYPE),
                          ("reply-to-dest", "/usp/agent"), ("destination", "/usp/controller")], body)


def feed_all(data: bytes, chunk: int | None = None) -> list[Frame | HeartBeat]:
    dec = StompDecoder()
    if chunk is None:
        return dec.feed(data)
    out: list[Frame | HeartBeat] = []
    for i in range(0, len(data), chunk):
        out += dec.feed(data[i:i + chunk])
    assert dec.buffered == 0
    return out


# --- Frame model -------------------------------------------------------------

def test_frame_header_first_duplicate_wins_and_keeps_order():
    f = Frame("MESSAGE", [("foo", "1"), ("bar", "x"), ("foo", "2")])
    assert f.header("foo") == "1"
    assert f.header_values("foo") == ["1", "2"]
    assert f.header("missing") is None and f.header("missing", "d") == "d"
    assert f.has_header("bar") and not f.has_header("Bar")  # case-sensitive
    assert f.escaped and not Frame("CONNECTED").escaped


def test_frame_accepts_mapping_and_ignores_raw_in_equality():
    a = Frame("SEND", {"destination": "/q"}, bytearray(b"x"))
    b = Frame("SEND", [("destination", "/q")], b"x", raw=b"whatever")
    assert a == b and a.headers == [("destination", "/q")] and a.body == b"x"


# --- escaping --------------------------------------------------------------

def test_escape_round_trip_and_sequences():
    assert escape_header("a:b\\c\r\nd") == "a\\cb\\\\c\\r\\nd"
    assert unescape_header("a\\cb\\\\c\\r\\nd") == "a:b\\c\r\nd"
    assert unescape_header("plain") == "plain"


@pytest.mark.parametrize("bad", ["\\t", "x\\", "\\x41", "\\C"])
def test_undefined_escape_is_an_error(bad: str):
    with pytest.raises(StompDecodeError, match="undefined header escape"):
        unescape_header(bad)


@given(st.text())
@settings(max_examples=200, deadline=None)
def test_escape_inverse(text: str):
    assert unescape_header(escape_header(text)) == text
    assert not any(c in escape_header(text) for c in "\r\n:")


# --- decoder: happy paths ----------------------------------------------------

def test_decode_send_with_binary_body_containing_nul():
    f = send_frame()
    assert b"\x00" in f.body
    wire = encode_frame(f)
    [got] = feed_all(wire)
    assert got == f and got.raw == wire


def test_decode_body_without_content_length_ends_at_nul():
    [got] = feed_all(b"SEND\ndestination:/q\n\nhello\x00")
    assert got.body == b"hello" and got.header("content-length") is None


def test_partial_input_byte_by_byte_and_many_frames_per_chunk():
    wire = encode_frame(send_frame()) + b"\n" + encode_frame(Frame("DISCONNECT", [("receipt", "7")]))
    events = feed_all(wire, chunk=1)
    assert [type(e) for e in events] == [Frame, HeartBeat, Frame]
    assert events == feed_all(wire)  # one chunk gives the same events
    assert events == feed_all(wire * 1, chunk=7)


def test_heartbeats_lf_and_crlf_between_frames():
    wire = b"\n\r\n" + encode_frame(Frame("DISCONNECT")) + b"\r\n\n"
    events = feed_all(wire)
    assert events[0] == HeartBeat(b"\n") and events[1] == HeartBeat(b"\r\n")
    assert isinstance(events[2], Frame)
    assert events[3:] == [HeartBeat(b"\r\n"), HeartBeat(b"\n")]
    assert encode_heartbeat() == b"\n" and encode_heartbeat(b"\r\n") == b"\r\n"


def test_lone_cr_waits_for_next_byte():
    dec = StompDecoder()
    assert dec.feed(b"\r") == [] and dec.buffered == 1
    assert dec.feed(b"\n") == [HeartBeat(b"\r\n")]


def test_crlf_line_endings_in_headers():
    wire = b"MESSAGE\r\ndestination:/q\r\nmessage-id:1\r\nsubscription:0\r\n\r\nbody\x00\r\n"
    events = feed_all(wire)
    assert events[0] == Frame("MESSAGE", [("destination", "/q"), ("message-id", "1"),
                                          ("subscription", "0")], b"body")
    assert events[1:] == [HeartBeat(b"\r\n")]


def test_crlf_encoding_option_round_trips():
    f = send_frame()
    wire = encode_frame(f, eol=b"\r\n", trailing_eols=2)
    assert wire.startswith(b"SEND\r\ncontent-length:")
    events = feed_all(wire, chunk=3)
    assert events == [f, HeartBeat(b"\r\n"), HeartBeat(b"\r\n")]


def test_endpoint_id_keeps_double_colon_in_stomp_frame():
    """R-STOMP.4: the first ':' splits name and value; the value keeps '::'."""
    wire = b"STOMP\naccept-version:1.2\nhost:h\nendpoint-id:os::012345-ABC\n\n\x00"
    f = decode_frame(wire)
    assert f.header("endpoint-id") == "os::012345-ABC"
    assert encode_frame(f) == wire  # connection frames are written verbatim


def test_connect_frames_are_not_unescaped():
    f = decode_frame(b"CONNECT\nlogin:a\\cb\n\n\x00")
    assert f.header("login") == "a\\cb"
    f = decode_frame(b"CONNECTED\nversion:1.2\nx:\\t\n\n\x00")  # undefined escape is fine here
    assert f.header("x") == "\\t"
    opt = StompDecoder(unescape_connect=True).feed(b"STOMP\nendpoint-id:os\\c\\cX\n\n\x00")
    assert opt[0].header("endpoint-id") == "os::X"


def test_other_frames_are_unescaped_names_and_values():
    f = decode_frame(b"MESSAGE\nre\\cply:a\\nb\\\\c\\r\n\n\x00")
    assert f.headers == [("re:ply", "a\nb\\c\r")]


def test_raw_colon_in_value_is_tolerated_first_colon_splits():
    assert decode_frame(b"SEND\ndestination:/a:b\n\n\x00").header("destination") == "/a:b"


def test_empty_value_and_zero_content_length():
    f = decode_frame(b"SEND\nx:\ncontent-length:0\n\n\x00\n\n")
    assert f.header("x") == "" and f.body == b""


def test_first_content_length_wins():
    f = decode_frame(b"SEND\ncontent-length:2\ncontent-length:9\n\na\x00\x00")
    assert f.body == b"a\x00"


def test_utf8_headers():
    f = Frame("MESSAGE", [("h\u00e9", "\u2603:\u00e9")], b"")
    assert decode_frame(encode_frame(f)) == f


def test_offsets_are_stream_positions():
    dec = StompDecoder()
    dec.feed(encode_frame(Frame("DISCONNECT")))
    with pytest.raises(StompDecodeError) as info:
        dec.feed(b"\rX")
    assert info.value.offset == len(encode_frame(Frame("DISCONNECT")))


# --- decoder: errors -------------------------------------------------------------

@pytest.mark.parametrize("wire, match", [
    (b"SEND\nbadheader\n\n\x00", "without ':'"),
    (b"SEND\n:v\n\n\x00", "empty header name"),
    (b"SEND\nx:\\t\n\n\x00", "undefined header escape"),
    (b"SEND\nx:a\\\n\n\x00", "undefined header escape"),
    (b"SEND\ncontent-length:abc\n\n\x00", "invalid content-length"),
    (b"SEND\ncontent-length:-1\n\n\x00", "invalid content-length"),
    (b"SEND\ncontent-length:\xd9\xa3\n\n\x00", "invalid content-length"),
    (b"SEND\ncontent-length:1\n\nab\x00", "not NUL-terminated"),
    (b"SEND\nx:y\x00", "NUL inside"),
    (b"\x00", "NUL inside"),
    (b"SEND\nx:\xff\n\n\x00", "UTF-8"),
    (b"SE\rND\n\n\x00", "bare CR"),
    (b"\rX", "CR not followed by LF"),
])
def test_decode_errors(wire: bytes, match: str):
    with pytest.raises(StompDecodeError, match=match):
        StompDecoder().feed(wire)


def test_error_is_value_error_keeps_earlier_events_and_poisons_decoder():
    dec = StompDecoder()
    good = encode_frame(Frame("DISCONNECT"))
    with pytest.raises(ValueError) as info:
        dec.feed(good + b"\nSEND\nbad\n\n\x00")
    err = info.value
    assert isinstance(err, StompDecodeError)
    assert [type(e) for e in err.events] == [Frame, HeartBeat]
    with pytest.raises(StompDecodeError, match="failed earlier"):
        dec.feed(good)


def test_max_frame_size_limits():
    with pytest.raises(StompDecodeError, match="max_frame_size"):
        StompDecoder(max_frame_size=16).feed(b"SEND\n" + b"x" * 20)
    with pytest.raises(StompDecodeError, match="content-length exceeds"):
        StompDecoder(max_frame_size=16).feed(b"SEND\ncontent-length:100\n\n")
    with pytest.raises(StompDecodeError, match="content-length exceeds"):
        StompDecoder().feed(b"SEND\ncontent-length:" + b"9" * 5000 + b"\n\n")
    assert decode_frame(b"SEND\ncontent-length:0003\n\nabc\x00").body == b"abc"
    with pytest.raises(StompDecodeError, match="body exceeds"):
        StompDecoder(max_frame_size=16).feed(b"SEND\n\n" + b"y" * 20)
    assert DEFAULT_MAX_FRAME_SIZE >= 1024 * 1024


def test_decode_frame_requires_exactly_one_complete_frame():
    one = encode_frame(Frame("DISCONNECT"))
    with pytest.raises(StompDecodeError, match="incomplete"):
        decode_frame(one[:-1])
    with pytest.raises(StompDecodeError, match="expected one frame, got 2"):
        decode_frame(one + one)
    with pytest.raises(StompDecodeError, match="expected one frame"):
        decode_frame(b"\n" + one)
    with pytest.raises(StompDecodeError, match="expected one frame, got 0"):
        decode_frame(b"")


# --- encoder: malformed-on-purpose options -------------------------------------

def test_content_length_options():
    f = Frame("SEND", [("destination", "/q")], b"abc")
    assert b"content-length:3\n" in encode_frame(f, content_length="auto")
    wrong = encode_frame(f, content_length=5)
    assert b"content-length:5\n" in wrong
    with pytest.raises(StompDecodeError):  # the 5 octets run past the NUL
        StompDecoder().feed(wrong + b"zz")
    g = Frame("SEND", [("content-length", "3"), ("content-length", "3")], b"abc")
    assert encode_frame(g, content_length="omit").count(b"content-length") == 0
    assert encode_frame(g, content_length="auto").count(b"content-length") == 1


def test_missing_nul_and_unescaped_colon():
    f = Frame("SEND", [("destination", "/a:b")], b"x")
    unterminated = encode_frame(f, terminate=False)
    assert not unterminated.endswith(b"\x00")
    dec = StompDecoder()
    assert dec.feed(unterminated) == [] and dec.buffered == len(unterminated)
    assert b"destination:/a:b\n" in encode_frame(f, escape=False)
    assert b"destination:/a\\cb\n" in encode_frame(f)
    assert b"login:a\\cb" in encode_frame(Frame("STOMP", [("login", "a:b")]), escape=True)


def test_encoder_check_rejects_unencodable_frames():
    with pytest.raises(ValueError, match="content-length"):
        encode_frame(Frame("SEND", [], b"a\x00b"))
    with pytest.raises(ValueError, match="does not match"):
        encode_frame(Frame("SEND", [("content-length", "9")], b"a"))
    with pytest.raises(ValueError, match="command"):
        encode_frame(Frame("SE\nND"))
    with pytest.raises(ValueError, match="command"):
        encode_frame(Frame(""))
    with pytest.raises(ValueError, match="empty header name"):
        encode_frame(Frame("SEND", [("", "v")]))
    with pytest.raises(ValueError, match="NUL"):
        encode_frame(Frame("SEND", [("a", "\x00")]))
    with pytest.raises(ValueError, match="escaping"):
        encode_frame(Frame("STOMP", [("a", "x\ny")]))
    with pytest.raises(ValueError, match="escaping"):
        encode_frame(Frame("STOMP", [("a:b", "x")]))
    with pytest.raises(ValueError, match="eol"):
        encode_frame(Frame("SEND"), eol=b"\r")
    # check=False writes it anyway
    assert encode_frame(Frame("SEND", [], b"a\x00b"), check=False) == b"SEND\n\na\x00b\x00"


# --- property tests ----------------------------------------------------------------

@given(st.binary(max_size=300), st.integers(min_value=1, max_value=17))
@settings(max_examples=300, deadline=None)
def test_random_bytes_never_crash(data: bytes, chunk: int):
    dec = StompDecoder(max_frame_size=4096)
    try:
        for i in range(0, len(data), chunk):
            for event in dec.feed(data[i:i + chunk]):
                assert isinstance(event, Frame | HeartBeat)
    except StompDecodeError:
        pass


_prefix = st.sampled_from([b"SEND\n", b"MESSAGE\n", b"CONNECT\n", b"SEND\ncontent-length:3\n",
                           b"x:y\n", b"\n", b"\r\n", b"\x00", b"\\", b":"])


@given(st.lists(st.one_of(_prefix, st.binary(max_size=8)), max_size=30))
@settings(max_examples=300, deadline=None)
def test_stomp_like_garbage_never_crashes(parts: list[bytes]):
    try:
        StompDecoder().feed(b"".join(parts))
    except StompDecodeError:
        pass


_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"),
                max_size=20)
_names = _text.filter(lambda s: s != "" and s != "content-length")


@st.composite
def frames(draw: st.DrawFn) -> Frame:
    command = draw(st.sampled_from(sorted(COMMANDS)))
    if command in UNESCAPED_COMMANDS:
        name = _names.filter(lambda s: not any(c in s for c in "\r\n:"))
        value = _text.filter(lambda s: not any(c in s for c in "\r\n"))
    else:
        name, value = _names, _text
    headers = draw(st.lists(st.tuples(name, value), max_size=6))
    body = draw(st.binary(max_size=64))
    if b"\x00" in body or draw(st.booleans()):
        headers.insert(draw(st.integers(0, len(headers))), ("content-length", str(len(body))))
    return Frame(command, headers, body)


@given(frames(), st.sampled_from([b"\n", b"\r\n"]), st.integers(1, 40))
@settings(max_examples=300, deadline=None)
def test_round_trip(frame: Frame, eol: bytes, chunk: int):
    wire = encode_frame(frame, eol=eol)
    events = feed_all(wire + eol, chunk=chunk)
    assert events == [frame, HeartBeat(eol)]
    assert isinstance(events[0], Frame) and events[0].raw == wire
    assert encode_frame(events[0], eol=eol) == wire
