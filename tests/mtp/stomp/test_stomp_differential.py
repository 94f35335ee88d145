"""Differential tests against stomp.py's frame parser/serialiser (STOMP 1.2, R-STOMP.33).

stomp.py (``pip install stomp.py``) splits a stream on NUL/content-length in
its transport and then calls ``stomp.utils.parse_frame`` on one frame without
its NUL; it always unescapes headers and keeps the first duplicate.
``convert_frame`` serialises without escaping, so that direction uses safe
text only.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.mtp.stomp import (
    COMMANDS,
    UNESCAPED_COMMANDS,
    Frame,
    decode_frame,
    encode_frame,
    negotiate_heartbeat,
)

stomp_utils = pytest.importorskip("stomp.utils")

_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"),
                max_size=16)
_escaped_cmds = sorted(COMMANDS - UNESCAPED_COMMANDS)


def first_wins(headers: list[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers:
        out.setdefault(name, value)
    return out


@st.composite
def escaped_frames(draw: st.DrawFn) -> Frame:
    names = _text.filter(lambda s: s not in ("", "content-length"))
    headers = draw(st.lists(st.tuples(names, _text), max_size=6))
    body = draw(st.binary(max_size=64))
    headers.append(("content-length", str(len(body))))
    return Frame(draw(st.sampled_from(_escaped_cmds)), headers, body)


@given(escaped_frames())
@settings(max_examples=300, deadline=None)
def test_stomp_py_parses_our_frames_the_same(frame: Frame):
    wire = encode_frame(frame)
    theirs = stomp_utils.parse_frame(wire[:-1])  # their transport strips the NUL
    ours = decode_frame(wire)
    assert theirs.cmd == ours.command == frame.command
    assert theirs.headers == first_wins(ours.headers) == first_wins(frame.headers)
    assert theirs.body == ours.body == frame.body


@given(st.sampled_from(sorted(UNESCAPED_COMMANDS)),
       st.lists(st.tuples(st.from_regex(r"[a-z][a-z\-]{0,10}", fullmatch=True)
                          .filter(lambda n: n != "endpoint-id"),
                          st.from_regex(r"[A-Za-z0-9:./\-]{0,20}", fullmatch=True)), max_size=5))
@settings(max_examples=200, deadline=None)
def test_connect_frames_with_colons_agree(command: str, headers: list[tuple[str, str]]):
    wire = encode_frame(Frame(command, headers + [("endpoint-id", "os::012345-ABC")]))
    theirs = stomp_utils.parse_frame(wire[:-1])
    ours = decode_frame(wire)
    assert theirs.cmd == ours.command
    assert theirs.headers == first_wins(ours.headers)
    assert "::" in theirs.headers["endpoint-id"]


_safe = st.from_regex(r"[A-Za-z0-9/._\- ]{1,12}", fullmatch=True)


@given(st.sampled_from(_escaped_cmds), st.dictionaries(_safe, _safe, max_size=5),
       st.binary(max_size=40))
@settings(max_examples=200, deadline=None)
def test_we_parse_stomp_py_frames_the_same(command: str, headers: dict[str, str], body: bytes):
    headers.pop("content-length", None)
    headers["content-length"] = "0"  # convert_frame rewrites it to the body length
    wire = b"".join(stomp_utils.convert_frame(stomp_utils.Frame(command, dict(headers), body)))
    ours = decode_frame(wire)
    assert ours.command == command
    assert first_wins(ours.headers) == {**headers, "content-length": str(len(body))}
    assert ours.body == body


@given(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)),
       st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)))
@settings(max_examples=200, deadline=None)
def test_heartbeat_negotiation_matches_stomp_py(client: tuple[int, int], server: tuple[int, int]):
    theirs = stomp_utils.calculate_heartbeats((str(server[0]), str(server[1])), client)
    assert negotiate_heartbeat(client, server) == theirs
