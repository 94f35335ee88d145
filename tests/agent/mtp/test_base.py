"""The AgentMTP contract shared by every agent MTP (conformance.agent.mtp.base).

R-MTP.6 (connect Records after a channel is up), R-MTP.7 (DisconnectRecord
before closing, routed by its ``to_id``), undecodable payloads kept away
from the runtime (R-MQTT / R-STOMP "Handling Errors", R-WS.16, R-UDS.23).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.agent.mtp import (
    AgentMTP,
    ControllerRoute,
    MTPNotConnected,
    NoRoute,
    Route,
)
from conformance.agent.mtp.backoff import Backoff, UDSRetry
from conformance.mtp.timeline import Timeline
from conformance.usp import records
from tests.agent.mtp.support import AGENT, CTRL, disconnect_record, get_record

SETTINGS = settings(max_examples=200, deadline=None)


class Loopback(AgentMTP):
    """A fake MTP: 'sends' into a list, 'connects' on start."""

    name = "loop"

    def __init__(self, endpoint_id: str = AGENT, **kwargs: object) -> None:
        super().__init__(endpoint_id, **kwargs)  # type: ignore[arg-type]
        self.sent: list[tuple[bytes, str, str | None]] = []
        self.up = False

    @property
    def connected(self) -> bool:
        return self.up

    async def start(self) -> None:
        self.up = True
        self._notify_connected()

    async def stop(self, disconnect_record: bytes | Sequence[bytes] | None = None) -> None:
        if self._begin_stop():
            await self._send_disconnects(disconnect_record)
            self.up = False
            self._notify_disconnected()

    async def send(self, data: bytes, *, to_id: str, reply_to: str | None = None) -> None:
        if not self.up:
            raise MTPNotConnected("down")
        if to_id not in self.controllers:
            raise NoRoute(to_id)
        self.sent.append((data, to_id, reply_to))


def test_routes_are_plain_values() -> None:
    route = Route("mqtt", "mqtt-1", "usp/ctrl", CTRL)
    assert route == Route("mqtt", "mqtt-1", "usp/ctrl", CTRL)
    assert Route("uds", "uds-2").reply_to is None and Route("uds", "uds-2").controller_hint is None
    assert ControllerRoute(CTRL).address == ""
    with pytest.raises(AttributeError):
        route.reply_to = "x"  # type: ignore[misc]
    assert issubclass(MTPNotConnected, ConnectionError) and issubclass(NoRoute, ConnectionError)


def test_agent_mtp_is_abstract_and_needs_an_endpoint_id() -> None:
    with pytest.raises(TypeError):
        AgentMTP(AGENT)  # type: ignore[abstract]
    with pytest.raises(ValueError):
        Loopback("")


def test_disconnect_targets_route_by_to_id() -> None:
    """R-MTP.7: each DisconnectRecord goes to the Controller named in its to_id."""
    one = disconnect_record(CTRL)
    two = disconnect_record("proto::other")
    assert AgentMTP.disconnect_targets(None) == []
    assert AgentMTP.disconnect_targets(one) == [(CTRL, one)]
    assert AgentMTP.disconnect_targets([one, two]) == [(CTRL, one), ("proto::other", two)]
    assert AgentMTP.disconnect_targets(bytearray(one)) == [(CTRL, one)]
    with pytest.raises(ValueError):
        AgentMTP.disconnect_targets(b"\xff\xff\xff")
    with pytest.raises(ValueError):
        AgentMTP.disconnect_targets(records.serialize(records.disconnect_record(
            to_id="", from_id=AGENT)))


@SETTINGS
@given(st.binary(max_size=200))
def test_hostile_bytes_never_crash_the_helpers(data: bytes) -> None:
    assert AgentMTP.decodable(data) in (True, False)
    try:
        targets = AgentMTP.disconnect_targets(data)
    except ValueError:
        return
    assert len(targets) == 1 and targets[0][0]


def test_decodable_tells_records_from_garbage() -> None:
    assert AgentMTP.decodable(get_record())
    assert not AgentMTP.decodable(b"\x0a\xff\xff\xff\xff")


def test_lifecycle_callbacks_delivery_and_disconnect_records() -> None:
    async def main() -> None:
        tl = Timeline()
        mtp = Loopback(controllers=[ControllerRoute(CTRL, "addr")], timeline=tl)
        seen: list[str] = []
        mtp.on_connected = lambda m: seen.append(f"up:{m.name}")
        mtp.on_disconnected = lambda m: seen.append("down")
        got: list[tuple[bytes, Route]] = []
        mtp.on_record = lambda data, route: got.append((data, route))
        await mtp.start()
        await mtp.wait_connected(1.0)
        assert mtp.connection_count == 1 and seen == ["up:loop"]
        mtp._deliver(b"rec", Route("loop", "c-1"))
        assert got == [(b"rec", Route("loop", "c-1"))]

        def broken(data: bytes, route: Route) -> None:
            raise RuntimeError("runtime bug")
        mtp.on_record = broken
        mtp._deliver(b"rec", Route("loop", "c-1"))  # logged and recorded, not raised
        assert tl.filter("loop.sink_error")[0].decoded["error"].startswith("RuntimeError")
        # R-MTP.7: the one for a known Controller is sent, the other is reported.
        await mtp.stop([disconnect_record(CTRL), disconnect_record("proto::unknown")])
        assert [to for _, to, _ in mtp.sent] == [CTRL]
        marks = [(e.direction, e.decoded["to_id"], e.decoded["sent"])
                 for e in tl.filter("loop.disconnect_record")]
        assert marks == [("out", CTRL, True), ("local", "proto::unknown", False)]
        assert seen == ["up:loop", "down"] and mtp.stopping
        await mtp.stop(disconnect_record(CTRL))  # idempotent
        assert len(mtp.sent) == 1
    asyncio.run(main())


def test_retry_wait_records_and_stop_interrupts_it() -> None:
    async def main() -> None:
        tl = Timeline()
        mtp = Loopback(timeline=tl)
        backoff = Backoff(UDSRetry(0.0, 0.0))
        assert await mtp._retry_wait(backoff, "c-9", extra=1) is True
        entry = tl.filter("loop.retry")[0]
        assert entry.conn_id == "c-9"
        assert entry.decoded == {"retry": 1, "delay": 0.0, "bounds": [0.0, 0.0], "extra": 1}
        long_wait = asyncio.ensure_future(mtp._retry_wait(Backoff(UDSRetry(30, 30))))
        await asyncio.sleep(0)
        await mtp.stop()
        assert await asyncio.wait_for(long_wait, 1.0) is False
        assert await mtp._sleep(10) is False
        with pytest.raises(TimeoutError):
            await mtp.wait_connected(0.05)
    asyncio.run(main())


def test_connect_record_builder_uses_the_mtp_name() -> None:
    class Stomp(Loopback):
        name = "stomp"
    data = Stomp()._connect_record(CTRL, subscribed_destination="/agent")
    rec = records.parse_record(data)
    assert records.record_kind(rec) == "stomp_connect"
    assert (rec.to_id, rec.from_id) == (CTRL, AGENT)
    assert rec.stomp_connect.subscribed_destination == "/agent"
