"""Property tests of the MQTT codec (hypothesis).

* generated packets of both versions survive encode -> decode unchanged;
* random and mutated bytes either decode or raise ``MQTTDecodeError``;
* the streaming decoder gives the same packets for any chunking;
* ``validate`` never raises on anything the decoder returns.

R-MQTT.1 / R-MQTT.2: the broker must read hostile MQTT 5.0 and 3.1.1 input
from the device under test without crashing.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conformance.mtp.mqtt import (
    PROPERTY_TYPES,
    Auth,
    Connack,
    Connect,
    Disconnect,
    MQTTDecodeError,
    MQTTDecoder,
    Packet,
    Pingreq,
    Pingresp,
    Properties,
    PropertyId,
    PropertyType,
    ProtocolVersion,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
    decode,
    encode,
    validate,
)

V5 = ProtocolVersion.V5
V4 = ProtocolVersion.V3_1_1
SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

text = st.text(max_size=12)
blob = st.binary(max_size=24)
u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
qos = st.integers(0, 3)

_VALUES: dict[PropertyType, st.SearchStrategy[Any]] = {
    PropertyType.BYTE: u8,
    PropertyType.TWO_BYTE_INTEGER: u16,
    PropertyType.FOUR_BYTE_INTEGER: st.integers(0, 0xFFFFFFFF),
    PropertyType.VARIABLE_BYTE_INTEGER: st.integers(0, 268_435_455),
    PropertyType.UTF8_STRING: text,
    PropertyType.UTF8_STRING_PAIR: st.tuples(text, text),
    PropertyType.BINARY_DATA: blob,
}
one_property = st.sampled_from(list(PropertyId)).flatmap(
    lambda pid: _VALUES[PROPERTY_TYPES[pid]].map(lambda value: (int(pid), value)))
# Any known property in any packet: the codec keeps what validate() rejects.
properties5 = st.lists(one_property, max_size=4).map(Properties)


def packets(version: ProtocolVersion) -> st.SearchStrategy[Packet]:
    v5 = version is V5
    props = properties5 if v5 else st.just(Properties())
    code = u8 if v5 else st.just(0)
    will = st.builds(Will, text, blob, qos, st.booleans(), props)
    subscription = st.builds(Subscription, text, qos, st.booleans(), st.booleans(),
                             st.integers(0, 3), st.integers(0, 3))

    @st.composite
    def publish(draw: st.DrawFn) -> Publish:
        level = draw(qos)
        return Publish(draw(text), draw(st.binary(max_size=64)), level, draw(st.booleans()),
                       draw(st.booleans()), draw(u16) if level else 0, draw(props))

    choices = [
        st.builds(Connect, text, st.just(int(version)), st.booleans(), u16, text,
                  st.none() | will, st.none() | text, st.none() | blob, props),
        st.builds(Connack, st.booleans(), u8, props),
        publish(),
        *(st.builds(cls, u16, code, props) for cls in (Puback, Pubrec, Pubrel, Pubcomp)),
        st.builds(Subscribe, u16, st.lists(subscription, max_size=3), props),
        st.builds(Suback, u16, st.lists(u8, max_size=4), props),
        st.builds(Unsubscribe, u16, st.lists(text, max_size=3), props),
        st.builds(Unsuback, u16, st.lists(u8, max_size=4) if v5 else st.just([]), props),
        st.just(Pingreq()), st.just(Pingresp()),
        st.builds(Disconnect, code, props),
    ]
    if v5:
        choices.append(st.builds(Auth, u8, props))
    return st.one_of(choices)


@SETTINGS
@given(packets(V5))
def test_v5_packets_round_trip(packet: Packet) -> None:
    data = encode(packet, V5)
    assert decode(data, V5) == packet
    assert list(MQTTDecoder(V5).feed(data)) == [packet]


@SETTINGS
@given(packets(V4))
def test_v311_packets_round_trip(packet: Packet) -> None:
    data = encode(packet, V4)
    assert decode(data, V4) == packet


@SETTINGS
@given(st.sampled_from([V5, V4]).flatmap(
    lambda v: st.tuples(st.just(v), st.lists(packets(v), max_size=6))),
    st.lists(st.integers(0, 10_000), max_size=8))
def test_any_chunking_gives_the_same_packets(
        case: tuple[ProtocolVersion, list[Packet]], cuts: list[int]) -> None:
    version, body = case
    stream = [Connect(protocol_level=int(version)), *body]
    data = b"".join(encode(p, version) for p in stream)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    decoder = MQTTDecoder()
    out: list[Packet] = []
    for start, stop in pairwise(points):
        out.extend(decoder.feed(data[start:stop]))
    assert out == stream
    assert decoder.buffered == 0


def _decode_or_error(data: bytes, version: ProtocolVersion | None) -> Packet | None:
    try:
        packet = decode(data, version)
    except MQTTDecodeError as exc:
        assert 0 <= exc.offset <= len(data)
        return None
    validate(packet, version)
    validate(packet, version, sender="client")
    validate(packet, version, sender="server")
    return packet


@SETTINGS
@given(st.binary(max_size=200), st.sampled_from([None, V4, V5]))
def test_random_bytes_never_crash(data: bytes, version: ProtocolVersion | None) -> None:
    _decode_or_error(data, version)


@SETTINGS
@given(st.integers(0, 15), st.integers(0, 15), st.binary(max_size=120),
       st.sampled_from([V4, V5]))
def test_random_bodies_with_valid_framing_never_crash(
        ptype: int, flags: int, body: bytes, version: ProtocolVersion) -> None:
    data = bytes([ptype << 4 | flags, len(body)]) + body
    packet = _decode_or_error(data, version)
    if packet is not None:
        # Whatever decodes re-encodes to something that decodes to the same packet.
        again = encode(packet, version)
        assert decode(again, version) == packet


@SETTINGS
@given(packets(V5), st.lists(st.tuples(st.integers(0, 500), u8), min_size=1, max_size=4),
       st.integers(0, 500))
def test_mutated_packets_never_crash(packet: Packet, edits: list[tuple[int, int]],
                                     cut: int) -> None:
    data = bytearray(encode(packet, V5))
    for position, value in edits:
        data[position % len(data)] = value
    _decode_or_error(bytes(data), V5)
    _decode_or_error(bytes(data[:cut % (len(data) + 1)]), V5)


@SETTINGS
@given(st.binary(max_size=300), st.lists(st.integers(1, 40), max_size=10))
def test_streaming_random_bytes_never_crash(data: bytes, sizes: list[int]) -> None:
    decoder = MQTTDecoder()
    position = 0
    for size in [*sizes, len(data)]:
        chunk = data[position:position + size]
        position += size
        try:
            for packet in decoder.feed(chunk):
                validate(packet, decoder.version)
        except MQTTDecodeError as exc:
            assert 0 <= exc.offset <= len(data)
