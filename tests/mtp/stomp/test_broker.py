"""The suite's STOMP broker over real loopback sockets (R-STOMP.*, TP-469 section 6).

Clients: stomp.py 9 (plain and mutual TLS) and a raw asyncio client built
from the codec for hand-made frames (binary USP Records, escaped Endpoint
IDs, malformed input, heart-beats).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable

import pytest
import stomp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conformance.mtp import pki
from conformance.mtp.binding import BindingClosed, InboundRecord
from conformance.mtp.stomp import Frame, HeartBeat, StompDecoder, encode_frame, validate
from conformance.mtp.stomp.binding import STOMPBinding
from conformance.mtp.stomp.broker import (
    STOMPBroker,
    STOMPScenario,
    Subscription,
    frame_summary,
    record_summary,
)
from conformance.mtp.timeline import Timeline
from conformance.mtp.transport import Connection, open_connection
from conformance.usp import messages, records

AGENT = "os::012345-ABC"
AGENT_ESCAPED = "os\\c\\c012345-ABC"
CTRL = "proto::controller-1"
CTRL_DEST = "/usp/controller"
AGENT_DEST = "/usp/agent/012345-ABC"
USP = "application/vnd.bbf.usp.msg"
CREDS = {"agent": "secret"}
STEP = 5.0


# --------------------------------------------------------------------------- helpers


class RawClient:
    """A STOMP client made of the codec and a transport Connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.decoder = StompDecoder()
        self.frames: deque[Frame] = deque()
        self.heartbeats: list[float] = []
        self.eof = False

    @classmethod
    async def open(cls, broker: STOMPBroker, ssl_context=None) -> RawClient:
        conn = await open_connection("stomp-client", "127.0.0.1", broker.port,
                                     ssl_context=ssl_context)
        return cls(conn)

    async def send(self, frame: Frame, **kwargs) -> None:
        await self.conn.write(encode_frame(frame, **kwargs))

    async def send_raw(self, data: bytes) -> None:
        await self.conn.write(data)

    async def _fill(self) -> None:
        data = await self.conn.reader.read(65536)
        if not data:
            self.eof = True
            raise EOFError("broker closed the connection")
        for event in self.decoder.feed(data):
            if isinstance(event, HeartBeat):
                self.heartbeats.append(time.monotonic())
            else:
                self.frames.append(event)

    async def frame(self, timeout: float = STEP) -> Frame:
        async with asyncio.timeout(timeout):
            while not self.frames:
                await self._fill()
        return self.frames.popleft()

    async def heartbeat_count(self, n: int, timeout: float = STEP) -> list[float]:
        async with asyncio.timeout(timeout):
            while len(self.heartbeats) < n:
                await self._fill()
        return self.heartbeats

    async def closed(self, timeout: float = STEP) -> list[Frame]:
        """Read until EOF; return the frames received on the way."""
        with contextlib.suppress(EOFError, ConnectionError):
            async with asyncio.timeout(timeout):
                while True:
                    await self._fill()
        assert self.eof
        return list(self.frames)

    async def close(self) -> None:
        await self.conn.close()


def stomp_frame(eid: str | None = AGENT, *, heart_beat: str = "0,0", login: str | None = "agent",
                passcode: str | None = "secret", command: str = "STOMP",
                version: str = "1.2", extra: Iterable[tuple[str, str]] = ()) -> Frame:
    headers = [("accept-version", version), ("host", "127.0.0.1"), ("heart-beat", heart_beat)]
    if eid is not None:
        headers.append(("endpoint-id", eid))
    if login is not None:
        headers.append(("login", login))
    if passcode is not None:
        headers.append(("passcode", passcode))
    return Frame(command, headers + list(extra))


async def connected_client(broker: STOMPBroker, eid: str | None = AGENT, **kwargs) -> RawClient:
    client = await RawClient.open(broker)
    await client.send(stomp_frame(eid, **kwargs))
    reply = await client.frame()
    assert reply.command == "CONNECTED", frame_summary(reply)
    return client


async def subscribe(client: RawClient, dest: str = AGENT_DEST, sub_id: str = "sub-0",
                    ack: str = "auto") -> None:
    await client.send(Frame("SUBSCRIBE", [("id", sub_id), ("destination", dest), ("ack", ack),
                                          ("receipt", f"r-{sub_id}")]))
    receipt = await client.frame()
    assert receipt.command == "RECEIPT" and receipt.header("receipt-id") == f"r-{sub_id}"


def usp_send(body: bytes, *, dest: str = CTRL_DEST, reply_to: str | None = AGENT_DEST,
             content_type: str | None = USP, extra: Iterable[tuple[str, str]] = ()) -> Frame:
    headers = [("destination", dest)]
    if content_type is not None:
        headers.append(("content-type", content_type))
    if reply_to is not None:
        headers.append(("reply-to-dest", reply_to))
    headers += list(extra)
    headers.append(("content-length", str(len(body))))
    return Frame("SEND", headers, body)


def usp_record(to_id: str, from_id: str) -> bytes:
    """A real USP Record whose bytes contain NUL octets (R-STOMP.19, R-STOMP.22)."""
    msg = messages.request("get", {"param_paths": ["Device.DeviceInfo."]}, msg_id="1")
    payload = b"\x00" + msg.SerializeToString() + b"\x00\x00"
    data = records.serialize(records.no_session_record(payload, to_id=to_id, from_id=from_id))
    assert b"\x00" in data
    return data


@contextlib.asynccontextmanager
async def running(timeline: Timeline, **kwargs) -> AsyncIterator[STOMPBroker]:
    broker = await STOMPBroker(timeline, **kwargs).start()
    try:
        yield broker
    finally:
        await broker.close()


def actions(tl: Timeline, name: str) -> list[dict]:
    return [e.decoded for e in tl.filter("stomp.scenario")
            if isinstance(e.decoded, dict) and e.decoded["action"] == name]


def violation_rules(tl: Timeline) -> set[str]:
    return {v["rule"] for e in tl.filter("stomp.violation") for v in e.decoded}


def assert_no_handler_errors(tl: Timeline) -> None:
    assert not tl.filter("conn.handler_error"), [e.brief() for e in tl.filter("conn.handler_error")]


# --------------------------------------------------------------------------- raw agent + controller


@pytest.mark.parametrize("eid_on_wire", [AGENT, AGENT_ESCAPED])
def test_usp_record_both_ways_through_controller_binding(eid_on_wire):
    """R-STOMP.4 (both Endpoint ID forms), R-STOMP.18..23: Record in, Record out."""
    async def main():
        tl = Timeline()
        async with running(tl, credentials=CREDS) as broker:
            binding = broker.attach_controller(CTRL, CTRL_DEST)
            assert isinstance(binding, STOMPBinding) and binding.mtp == "stomp"
            assert binding.address == CTRL_DEST
            inbound: list[InboundRecord] = []
            binding.set_sink(inbound.append)
            waiter = asyncio.create_task(broker.wait_for_agent(AGENT, STEP))
            client = await connected_client(broker, eid_on_wire)
            assert not waiter.done()                       # connected, not yet subscribed
            await subscribe(client)
            session = await asyncio.wait_for(waiter, STEP)
            assert session.endpoint_id == AGENT and session.endpoint_id_raw == eid_on_wire
            assert await broker.wait_for_agent(AGENT, 0.1) is session   # immediate path
            assert await broker.wait_for_agent(AGENT_ESCAPED, 0.1) is session

            # agent -> controller: binary body survives, reply-to-dest reaches the sink
            data = usp_record(CTRL, AGENT)
            await client.send(usp_send(data, extra=[("receipt", "s1")]))
            assert (await client.frame()).header("receipt-id") == "s1"
            assert len(inbound) == 1
            rec = inbound[0]
            assert rec.data == data and rec.mtp == "stomp" and rec.reply_to == AGENT_DEST
            assert rec.conn_id == session.conn_id and rec.meta["endpoint_id"] == AGENT
            assert rec.meta["headers"]["content-type"] == USP
            assert records.parse_record(rec.data).from_id == AGENT

            # controller -> agent: MESSAGE with the USP headers (R-STOMP.23)
            reply = usp_record(AGENT, CTRL)
            await binding.send(reply, to_id=AGENT)
            msg = await client.frame()
            assert msg.command == "MESSAGE" and msg.body == reply
            assert msg.header("destination") == AGENT_DEST
            assert msg.header("subscription") == "sub-0"
            assert msg.header("content-type") == USP
            assert msg.header("reply-to-dest") == CTRL_DEST
            assert msg.header("content-length") == str(len(reply))
            assert msg.header("message-id")
            assert validate(msg, "server") == []

            info = broker.connections[session.conn_id].to_json()
            assert info["endpoint_id"] == AGENT and info["subscriptions"] == [
                {"id": "sub-0", "destination": AGENT_DEST, "ack": "auto"}]
            # every frame both ways is in the timeline with raw bytes
            sends = tl.filter("stomp.SEND", direction="in")
            assert sends[-1].raw.endswith(data + b"\x00")
            assert tl.filter("stomp.MESSAGE", direction="out")[-1].decoded["headers"][
                "reply-to-dest"] == CTRL_DEST
            assert [e.kind for e in tl.filter("stomp.*", direction="in")][:2] == [
                "stomp.STOMP", "stomp.SUBSCRIBE"]
            assert not tl.filter("stomp.violation")
            await client.close()
            await tl.expect("conn.close", within=STEP, direction="in")
            assert broker.connections == {}
        assert_no_handler_errors(tl)
    asyncio.run(main())


def test_binding_send_failures_and_explicit_destination():
    """BindingClosed when the agent is absent, unsubscribed, elsewhere, or the binding closed."""
    async def main():
        tl = Timeline()
        async with running(tl) as broker:
            binding = broker.attach_controller(CTRL, CTRL_DEST)
            with pytest.raises(ValueError):
                broker.attach_controller("proto::other", CTRL_DEST)
            with pytest.raises(BindingClosed, match="not connected"):
                await binding.send(b"x", to_id=AGENT)
            with pytest.raises(TimeoutError, match="did not connect"):
                await broker.wait_for_agent(AGENT, 0.05)
            pending = asyncio.create_task(broker.wait_for_agent("proto::never", STEP))
            client = await connected_client(broker)
            with pytest.raises(BindingClosed, match="not subscribed"):
                await binding.send(b"x", to_id=AGENT)
            await subscribe(client, "/usp/first", "a")
            await subscribe(client, "/usp/second", "b")
            await binding.send(b"latest", to_id=AGENT)          # newest subscription
            msg = await client.frame()
            assert (msg.header("destination"), msg.header("subscription")) == ("/usp/second", "b")
            binding.set_agent_destination(AGENT, "/usp/first")
            await binding.send(b"pinned", to_id=AGENT, headers={"x-test": "1"})
            msg = await client.frame()
            assert msg.header("destination") == "/usp/first" and msg.header("x-test") == "1"
            binding.set_agent_destination(AGENT, "/usp/elsewhere")
            with pytest.raises(BindingClosed, match="not subscribed to '/usp/elsewhere'"):
                await binding.send(b"x", to_id=AGENT)
            binding.set_agent_destination(AGENT, None)
            await binding.close()
            await binding.close()                                 # idempotent
            with pytest.raises(BindingClosed, match="closed"):
                await binding.send(b"x", to_id=AGENT)
            again = broker.attach_controller(CTRL, CTRL_DEST)    # destination is free again
            assert again is not binding
            # SEND to nobody is recorded as unrouted
            await client.send(usp_send(usp_record(CTRL, AGENT), dest="/usp/nobody",
                                       extra=[("receipt", "u")]))
            assert (await client.frame()).command == "RECEIPT"
            assert tl.filter("stomp.unrouted")[0].decoded == {"destination": "/usp/nobody"}
            await client.close()
        with pytest.raises(ConnectionError, match="broker closed"):
            await asyncio.wait_for(pending, STEP)
        assert_no_handler_errors(tl)
    asyncio.run(main())


def test_agent_with_cert_only_is_found_by_peer_endpoint_id(tmp_path):
    """R-STOMP.3: mutual TLS instead of login; peer cert Endpoint IDs in connections."""
    async def main():
        tl = Timeline()
        ca = pki.make_ca("stomp broker test CA")
        server = pki.issue(ca, endpoint_id=CTRL, ips=["127.0.0.1"])
        agent = pki.issue(ca, endpoint_id=AGENT)
        sctx = pki.ssl_context("server", server, trust=[ca])
        cctx = pki.ssl_context("client", agent, trust=[ca])
        async with running(tl, ssl_context=sctx, credentials=CREDS) as broker:
            assert broker.tls
            client = await RawClient.open(broker, cctx)
            await client.send(stomp_frame(None, login=None, passcode=None))
            assert (await client.frame()).command == "CONNECTED"
            await subscribe(client)
            session = await broker.wait_for_agent(AGENT, STEP)
            assert session.tls and session.peer_endpoint_ids == [AGENT]
            assert session.endpoint_id is None
            binding = broker.attach_controller(CTRL, CTRL_DEST)
            await binding.send(b"over tls", to_id=AGENT)
            assert (await client.frame()).body == b"over tls"
            # R-STOMP.4: the missing endpoint-id is still a violation
            assert "R-STOMP.4" in violation_rules(tl)
            await client.close()
        assert_no_handler_errors(tl)
    asyncio.run(main())


# --------------------------------------------------------------------------- stomp.py


class _Listener(stomp.ConnectionListener):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()

    def on_message(self, frame) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, ("MESSAGE", frame))

    def on_error(self, frame) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, ("ERROR", frame))


async def _stomppy_client(broker: STOMPBroker, eid: str, *, ssl_files=None, login=True):
    conn = stomp.Connection12([("127.0.0.1", broker.port)], heartbeats=(0, 0), auto_decode=False,
                              reconnect_attempts_max=1, timeout=STEP)
    if ssl_files is not None:
        key, cert, ca = ssl_files
        conn.set_ssl(for_hosts=[("127.0.0.1", broker.port)], key_file=key, cert_file=cert,
                     ca_certs=ca)
    listener = _Listener(asyncio.get_running_loop())
    conn.set_listener("test", listener)
    creds = ("agent", "secret") if login else (None, None)
    await asyncio.wait_for(asyncio.to_thread(
        conn.connect, *creds, wait=True, headers={"endpoint-id": eid}), STEP)
    return conn, listener


async def _stomppy_exchange(broker: STOMPBroker, tl: Timeline, *, ssl_files=None) -> None:
    binding = broker.attach_controller(CTRL, CTRL_DEST)
    inbound: list[InboundRecord] = []
    binding.set_sink(inbound.append)
    agent, agent_events = await _stomppy_client(broker, AGENT, ssl_files=ssl_files,
                                                login=ssl_files is None)
    other, other_events = await _stomppy_client(broker, "proto::peer", ssl_files=ssl_files,
                                                login=ssl_files is None)
    try:
        agent.subscribe(AGENT_DEST, id="s-agent")
        other.subscribe("/usp/peer", id="s-peer", ack="client")
        await broker.wait_for_agent(AGENT, STEP)
        await broker.wait_for_agent("proto::peer", STEP)
        # controller -> agent through the binding
        data = usp_record(AGENT, CTRL)
        await binding.send(data, to_id=AGENT)
        kind, frame = await asyncio.wait_for(agent_events.queue.get(), STEP)
        assert kind == "MESSAGE" and frame.body == data
        assert frame.headers["reply-to-dest"] == CTRL_DEST
        assert frame.headers["content-type"] == USP
        # agent -> controller (binary body with NUL; stomp.py adds content-length)
        answer = usp_record(CTRL, AGENT)
        agent.send(CTRL_DEST, answer, content_type=USP, headers={"reply-to-dest": AGENT_DEST})
        entry = await tl.expect("stomp.SEND", within=STEP, direction="in")
        assert inbound and inbound[0].data == answer and inbound[0].reply_to == AGENT_DEST
        assert entry.decoded["headers"]["content-length"] == str(len(answer))
        # network client -> network client, ack=client carries an ack header
        agent.send("/usp/peer", b"hello peer", content_type="text/plain",
                   headers={"reply-to-dest": AGENT_DEST})
        kind, frame = await asyncio.wait_for(other_events.queue.get(), STEP)
        assert frame.body == b"hello peer" and frame.headers["subscription"] == "s-peer"
        assert frame.headers["ack"] == frame.headers["message-id"]
        assert frame.headers["reply-to-dest"] == AGENT_DEST
        other.ack(frame.headers["ack"])            # accepted (a violation for agents, R-STOMP.27)
        await tl.expect("stomp.ACK", within=STEP, direction="in")
        assert "R-STOMP.20" in violation_rules(tl)     # text/plain SEND
    finally:
        for conn in (agent, other):
            await asyncio.wait_for(asyncio.to_thread(conn.disconnect), STEP)
    await tl.expect("stomp.DISCONNECT", within=STEP, direction="in")


def test_stomppy_plain_exchange():
    async def main():
        tl = Timeline()
        async with running(tl, credentials=CREDS) as broker:
            await _stomppy_exchange(broker, tl)
            connect = tl.filter("stomp.STOMP", direction="in")[0]
            assert connect.decoded["headers"]["endpoint-id"] == AGENT
            assert connect.decoded["headers"]["login"] == "agent"
        assert_no_handler_errors(tl)
    asyncio.run(main())


def test_stomppy_mutual_tls_exchange(tmp_path):
    """TP-469 6.11 shape: STOMP over mutually authenticated TLS, driven by stomp.py."""
    async def main():
        tl = Timeline()
        ca = pki.make_ca("stomp broker test CA")
        server = pki.issue(ca, endpoint_id=CTRL, ips=["127.0.0.1"])
        client = pki.issue(ca, endpoint_id=AGENT)
        files = pki.write_pem(tmp_path, "agent", client)
        ca_files = pki.write_pem(tmp_path, "ca", ca)
        sctx = pki.ssl_context("server", server, trust=[ca])
        async with running(tl, ssl_context=sctx, credentials=CREDS) as broker:
            await _stomppy_exchange(broker, tl, ssl_files=(
                str(files.key), str(files.cert), str(ca_files.cert)))
            done = tl.filter("tls.handshake_done", direction="in")
            assert done and all(e.decoded["peer_endpoint_ids"] == [AGENT] for e in done)
        assert_no_handler_errors(tl)
    asyncio.run(main())


# --------------------------------------------------------------------------- CONNECT handling


def test_subscribe_dest_present_and_absent():
    """R-STOMP.6 / R-STOMP.14 (TP-469 6.5) and its absence (TP-469 6.6, 6.7)."""
    async def main():
        tl = Timeline()
        async with running(tl, scenario=STOMPScenario(subscribe_dest="/usp/assigned")) as broker:
            client = await RawClient.open(broker)
            await client.send(stomp_frame())
            connected = await client.frame()
            assert connected.header("subscribe-dest") == "/usp/assigned"
            assert connected.header("version") == "1.2"
            assert connected.header("server").startswith("usp-conformance-stomp/")
            assert actions(tl, "subscribe_dest") == [{"action": "subscribe_dest",
                                                      "value": "/usp/assigned"}]
            await subscribe(client, "/usp/not-assigned")         # R-STOMP.14 violation
            assert "R-STOMP.14" in violation_rules(tl)
            session = broker.find_agent(AGENT)
            assert session is not None and session.subscribe_dest == "/usp/assigned"
            broker.set_scenario(subscribe_dest=None)
            second = await connected_client(broker)
            assert tl.filter("stomp.CONNECTED")[-1].decoded["headers"].get("subscribe-dest") is None
            await client.close()
            await second.close()
    asyncio.run(main())


def test_extra_connected_headers_and_scenario_set_is_recorded():
    async def main():
        tl = Timeline()
        async with running(tl) as broker:
            broker.scenario = STOMPScenario(connected_headers=(("x-lab", "a:b"),))
            assert actions(tl, "set")[0]["scenario"]["connected_headers"] == [["x-lab", "a:b"]]
            client = await RawClient.open(broker)
            await client.send(stomp_frame())
            connected = await client.frame()
            assert connected.header("x-lab") == "a:b"                 # CONNECTED is not escaped
            assert actions(tl, "connected_headers")
            await client.close()
    asyncio.run(main())


def test_error_instead_of_connected_closes():
    """R-STOMP.25 trigger: ERROR frame, then the server closes the connection."""
    async def main():
        tl = Timeline()
        async with running(tl, scenario=STOMPScenario(error_on_connect="maintenance")) as broker:
            client = await RawClient.open(broker)
            await client.send(stomp_frame())
            frames = await client.closed()
            assert [f.command for f in frames] == ["ERROR"]
            assert frames[0].header("message") == "maintenance"
            assert actions(tl, "error_on_connect")[0]["message"] == "maintenance"
            assert not tl.filter("stomp.CONNECTED")
    asyncio.run(main())


@pytest.mark.parametrize("login,passcode", [("agent", "wrong"), ("nobody", "secret"),
                                            (None, None), ("agent", None)])
def test_bad_login_is_refused(login, passcode):
    """R-STOMP.3 / R-STOMP.34: wrong or missing credentials -> ERROR + close."""
    async def main():
        tl = Timeline()
        async with running(tl, credentials=CREDS) as broker:
            client = await RawClient.open(broker)
            await client.send(stomp_frame(login=login, passcode=passcode))
            frames = await client.closed()
            assert [f.command for f in frames] == ["ERROR"]
            assert frames[0].header("message") == "authentication failed"
            assert "login refused" in tl.filter("stomp.ERROR")[0].note
            assert broker.find_agent(AGENT) is None
    asyncio.run(main())


def test_no_common_version_and_connect_frame():
    """A STOMP 1.1-only client gets ERROR with version:1.2; CONNECT works but violates R-STOMP.2."""
    async def main():
        tl = Timeline()
        async with running(tl) as broker:
            old = await RawClient.open(broker)
            await old.send(stomp_frame(version="1.0,1.1"))
            frames = await old.closed()
            assert frames[0].command == "ERROR" and frames[0].header("version") == "1.2"
            client = await connected_client(broker, command="CONNECT")
            assert any(v["rule"] == "R-STOMP.2" and "CONNECT" in v["message"]
                       for e in tl.filter("stomp.violation") for v in e.decoded)
            await client.close()
    asyncio.run(main())


# --------------------------------------------------------------------------- scenario hooks


def test_withheld_receipts():
    async def main():
        tl = Timeline()
        async with running(tl, scenario=STOMPScenario(withhold_receipts=True)) as broker:
            client = await connected_client(broker)
            await client.send(Frame("SUBSCRIBE", [("id", "0"), ("destination", AGENT_DEST),
                                                  ("receipt", "r1")]))
            await tl.expect("stomp.scenario", within=STEP,
                            where=lambda e: e.decoded["action"] == "withhold_receipt")
            broker.set_scenario(withhold_receipts=False)
            await client.send(Frame("UNSUBSCRIBE", [("id", "0"), ("receipt", "r2")]))
            receipt = await client.frame()
            assert receipt.header("receipt-id") == "r2"        # r1 was never answered
            assert actions(tl, "withhold_receipt") == [
                {"action": "withhold_receipt", "receipt": "r1", "command": "SUBSCRIBE"}]
            assert broker.find_agent(AGENT).subscriptions == {}
            await client.close()
    asyncio.run(main())


def test_refused_connections_are_counted_and_timestamped():
    """R-STOMP.7 / TP-469 6.3: every refused attempt has a monotonic timestamp."""
    async def main():
        tl = Timeline()
        async with running(tl, scenario=STOMPScenario(refuse_connections=True)) as broker:
            before = time.monotonic()
            for _ in range(3):
                client = await RawClient.open(broker)
                await client.send(stomp_frame())
                assert await client.closed() == []
            assert broker.refused == 3 and len(broker.connection_attempts) == 3
            assert before <= broker.connection_attempts[0] <= broker.connection_attempts[2]
            assert [a["attempt"] for a in actions(tl, "refuse_connection")] == [1, 2, 3]
            broker.set_scenario(refuse_connections=False)
            client = await connected_client(broker)
            assert len(broker.connection_attempts) == 4 and broker.refused == 3
            await client.close()
    asyncio.run(main())


def test_close_after_n_frames():
    async def main():
        tl = Timeline()
        async with running(tl, scenario=STOMPScenario(close_after_frames=2)) as broker:
            client = await connected_client(broker)
            await client.send(Frame("SUBSCRIBE", [("id", "0"), ("destination", AGENT_DEST)]))
            assert await client.closed() == []
            assert actions(tl, "close_after_frames") == [{"action": "close_after_frames",
                                                          "frames": 2}]
    asyncio.run(main())


def test_server_heartbeats_sent_and_stopped():
    """R-STOMP.11 counterpart: the broker sends EOLs at the negotiated interval."""
    async def main():
        tl = Timeline()
        async with running(tl, scenario=STOMPScenario(heart_beat=(50, 0))) as broker:
            client = await connected_client(broker, heart_beat="0,100")
            session = broker.find_agent(AGENT)
            assert session.heart_beat == (0, 100)                 # max(50, 100)
            assert tl.filter("stomp.CONNECTED")[0].decoded["headers"]["heart-beat"] == "50,0"
            beats = await client.heartbeat_count(3)
            gaps = [b - a for a, b in itertools.pairwise(beats)]
            assert all(g > 0.07 for g in gaps), gaps
            assert len(tl.filter("stomp.heartbeat", direction="out")) >= 3
            broker.set_scenario(send_heartbeats=False)
            await tl.expect("stomp.scenario", within=STEP,
                            where=lambda e: e.decoded["action"] == "heartbeats_stopped")
            count = len(client.heartbeats)
            broker.set_scenario(send_heartbeats=True)
            await tl.expect("stomp.scenario", within=STEP,
                            where=lambda e: e.decoded["action"] == "heartbeats_resumed")
            await client.heartbeat_count(count + 1)
            await client.close()
    asyncio.run(main())


def test_client_heartbeats_recorded_and_missed_one_detected():
    """R-STOMP.8..11: EOLs from the client are recorded; silence is a missed heart-beat."""
    async def main():
        tl = Timeline()
        scenario = STOMPScenario(heart_beat=(0, 100), heartbeat_tolerance=1.5)
        async with running(tl, scenario=scenario) as broker:
            client = await connected_client(broker, heart_beat="80,0")
            session = broker.find_agent(AGENT)
            assert session.heart_beat == (100, 0) and session.client_heart_beat == (80, 0)
            assert session.server_heart_beat == (0, 100)
            for _ in range(2):
                await client.send_raw(b"\n")
            await client.send_raw(b"\r\n")
            entries = [await tl.expect("stomp.heartbeat", within=STEP, direction="in")]
            while len(tl.filter("stomp.heartbeat", direction="in")) < 3:
                entries.append(await tl.expect("stomp.heartbeat", within=STEP, direction="in",
                                               since=entries[-1]))
            assert tl.filter("stomp.heartbeat", direction="in")[-1].raw == b"\r\n"
            missed = await tl.expect("stomp.heartbeat_missed", within=STEP)
            assert missed.decoded["expected_ms"] == 100 and missed.decoded["silence_ms"] >= 140
            assert not client.eof                                   # not closed by default
            # one report per silence: the next one only after bytes arrived again
            await client.send_raw(b"\n")
            await tl.expect("stomp.heartbeat_missed", within=STEP, since=missed)
            broker.set_scenario(close_on_missed_heartbeat=True)
            await client.send_raw(b"\n")                          # re-arms the detector
            await client.closed()
            assert actions(tl, "close_on_missed_heartbeat")
    asyncio.run(main())


def test_send_error_on_demand_and_drop():
    async def main():
        tl = Timeline()
        async with running(tl) as broker:
            client = await connected_client(broker)
            await broker.send_error(AGENT, "test says go", body="details")
            frames = await client.closed()
            assert frames[0].command == "ERROR" and frames[0].body == b"details"
            assert actions(tl, "send_error")[0]["message"] == "test says go"
            other = await connected_client(broker, "proto::x")
            session = broker.find_agent("proto::x")
            await broker.send_error(conn_id=session.conn_id, message="stay", close=False)
            assert (await other.frame()).header("message") == "stay"
            await broker.drop("proto::x")
            assert await other.closed() == []
            assert actions(tl, "drop_connection")
            with pytest.raises(LookupError):
                await broker.drop("proto::nobody")
    asyncio.run(main())


# --------------------------------------------------------------------------- violations and errors


def test_send_violations_are_recorded():
    """R-STOMP.19..22 checked on every SEND; the frame is still routed."""
    async def main():
        tl = Timeline()
        async with running(tl) as broker:
            binding = broker.attach_controller(CTRL, CTRL_DEST)
            got: list[InboundRecord] = []
            binding.set_sink(got.append)
            client = await connected_client(broker)
            data = usp_record(CTRL, AGENT)
            await client.send(usp_send(data, content_type="application/octet-stream",
                                       reply_to=None, extra=[("receipt", "1")]))
            assert (await client.frame()).command == "RECEIPT"
            entry = tl.filter("stomp.violation")[-1]
            rules = {v["rule"] for v in entry.decoded}
            assert rules == {"R-STOMP.20", "R-STOMP.21"}
            assert entry.note.startswith("SEND:") and entry.raw.startswith(b"SEND\n")
            assert got[0].data == data and got[0].reply_to is None
            await client.send(Frame("SEND", [("destination", CTRL_DEST), ("content-type", USP),
                                             ("reply-to-dest", AGENT_DEST), ("receipt", "2")],
                                    b"not a record"))
            assert (await client.frame()).command == "RECEIPT"
            assert {v["rule"] for v in tl.filter("stomp.violation")[-1].decoded} == {
                "R-STOMP.19", "R-STOMP.22"}
            await client.send(Frame("BEGIN", [("transaction", "t")]))
            await client.send(Frame("ABORT", [("transaction", "t"), ("receipt", "3")]))
            assert (await client.frame()).header("receipt-id") == "3"
            assert "R-STOMP.26" in violation_rules(tl)
            await client.close()
    asyncio.run(main())


def test_broken_controller_sink_keeps_the_agent_connected():
    async def main():
        tl = Timeline()
        async with running(tl) as broker:
            binding = broker.attach_controller(CTRL, CTRL_DEST)

            def sink(record: InboundRecord) -> None:
                raise RuntimeError("controller bug")

            binding.set_sink(sink)
            client = await connected_client(broker)
            await client.send(usp_send(usp_record(CTRL, AGENT), extra=[("receipt", "k")]))
            assert (await client.frame()).header("receipt-id") == "k"
            assert "controller bug" in tl.filter("stomp.sink_error")[0].decoded["error"]
            await client.close()
        assert_no_handler_errors(tl)
    asyncio.run(main())


def test_transactions_route_on_commit_only():
    async def main():
        tl = Timeline()
        async with running(tl) as broker:
            binding = broker.attach_controller(CTRL, CTRL_DEST)
            got: list[InboundRecord] = []
            binding.set_sink(got.append)
            client = await connected_client(broker)
            data = usp_record(CTRL, AGENT)
            await client.send(Frame("BEGIN", [("transaction", "t1")]))
            await client.send(usp_send(data, extra=[("transaction", "t1"), ("receipt", "a")]))
            assert (await client.frame()).header("receipt-id") == "a"
            assert got == []
            await client.send(Frame("COMMIT", [("transaction", "t1"), ("receipt", "b")]))
            assert (await client.frame()).header("receipt-id") == "b"
            assert [r.data for r in got] == [data]
            await client.send(Frame("COMMIT", [("transaction", "t1")]))   # no longer open
            frames = await client.closed()
            assert frames[0].command == "ERROR" and "unknown transaction" in frames[0].header(
                "message")
    asyncio.run(main())


def test_disconnect_with_receipt_and_nack_accepted():
    async def main():
        tl = Timeline()
        async with running(tl) as broker:
            client = await connected_client(broker)
            await client.send(Frame("NACK", [("id", "x"), ("receipt", "n")]))
            assert (await client.frame()).header("receipt-id") == "n"
            await client.send(Frame("DISCONNECT", [("receipt", "bye")]))
            frames = await client.closed()
            assert [(f.command, f.header("receipt-id")) for f in frames] == [("RECEIPT", "bye")]
            assert "R-STOMP.27" in violation_rules(tl)
        assert_no_handler_errors(tl)
    asyncio.run(main())


@pytest.mark.parametrize("frames,message", [
    ([Frame("SUBSCRIBE", [("id", "0"), ("destination", "/d")])], "expected CONNECT or STOMP"),
    ([stomp_frame(), stomp_frame()], "already connected"),
    ([stomp_frame(), Frame("SUBSCRIBE", [("destination", "/d"), ("receipt", "r")])],
     "requires an id"),
    ([stomp_frame(), Frame("SUBSCRIBE", [("id", "0")])], "requires a destination"),
    ([stomp_frame(), Frame("SUBSCRIBE", [("id", "0"), ("destination", "/d"), ("ack", "never")])],
     "invalid ack mode"),
    ([stomp_frame(), Frame("SUBSCRIBE", [("id", "0"), ("destination", "/d")]),
      Frame("SUBSCRIBE", [("id", "0"), ("destination", "/e")])], "already in use"),
    ([stomp_frame(), Frame("UNSUBSCRIBE", [])], "requires an id"),
    ([stomp_frame(), Frame("SEND", [("content-type", USP)], b"x")], "requires a destination"),
    ([stomp_frame(), Frame("SEND", [("destination", "/d"), ("transaction", "nope")])],
     "unknown transaction"),
    ([stomp_frame(), Frame("BEGIN", [])], "requires a transaction"),
    ([stomp_frame(), Frame("BEGIN", [("transaction", "t")]), Frame("BEGIN", [("transaction", "t")])],
     "already begun"),
    ([stomp_frame(), Frame("MESSAGE", [("destination", "/d")])], "unexpected command"),
    ([stomp_frame(), Frame("HELLO", [])], "unexpected command"),
])
def test_protocol_errors_send_error_and_close(frames, message):
    """R-STOMP.33: a STOMP 1.2 server answers protocol errors with ERROR and closes."""
    async def main():
        tl = Timeline()
        async with running(tl) as broker:
            client = await RawClient.open(broker)
            for frame in frames:
                await client.send(frame)
            got = await client.closed()
            assert got[-1].command == "ERROR", [frame_summary(f) for f in got]
            assert message in got[-1].header("message")
            if frames[-1].header("receipt"):
                assert got[-1].header("receipt-id") == frames[-1].header("receipt")
        assert_no_handler_errors(tl)
    asyncio.run(main())


def test_malformed_bytes_are_a_violation_then_error():
    async def main():
        tl = Timeline()
        async with running(tl) as broker:
            client = await connected_client(broker)
            await client.send_raw(b"SEND\ndestination:/a\\qb\n\nbody\x00")   # undefined escape
            frames = await client.closed()
            assert frames[-1].command == "ERROR"
            assert "malformed frame" in frames[-1].header("message")
            entry = tl.filter("stomp.violation")[-1]
            assert entry.decoded[0]["rule"] == "STOMP-1.2" and entry.note == "malformed STOMP frame"
        assert_no_handler_errors(tl)
    asyncio.run(main())


# --------------------------------------------------------------------------- data classes


def test_scenario_validation_and_json():
    with pytest.raises(ValueError):
        STOMPScenario(heart_beat=(-1, 0))
    with pytest.raises(ValueError):
        STOMPScenario(heartbeat_tolerance=0)
    with pytest.raises(ValueError):
        STOMPScenario(close_after_frames=0)
    doc = STOMPScenario(heart_beat=(1, 2), connected_headers=(("a", "b"),)).to_json()
    assert doc["heart_beat"] == [1, 2] and doc["connected_headers"] == [["a", "b"]]
    assert doc["subscribe_dest"] is None and doc["withhold_receipts"] is False


def test_frame_summary_keeps_first_header_and_error_text():
    summary = frame_summary(Frame("ERROR", [("message", "a"), ("message", "b")], b"why\xff"))
    assert summary["headers"] == {"message": "a"}
    assert summary["duplicate_headers"] == [["message", "b"]]
    assert summary["body_length"] == 4 and summary["body_text"].startswith("why")
    assert "body_text" not in frame_summary(Frame("SEND", [], b"\x00"))
    assert Subscription("1", "/d").ack == "auto"


# --------------------------------------------------------------------------- hostile input


_COMMANDS = st.sampled_from(["SEND", "SUBSCRIBE", "UNSUBSCRIBE", "ACK", "NACK", "BEGIN",
                             "COMMIT", "ABORT", "DISCONNECT", "STOMP", "MESSAGE", "X"])
_HEADER_NAMES = st.sampled_from(["destination", "id", "ack", "receipt", "transaction",
                                 "content-type", "reply-to-dest", "content-length", "x"])
_frames = st.builds(
    lambda c, h, b: encode_frame(Frame(c, h, b), content_length="auto", check=False),
    _COMMANDS, st.lists(st.tuples(_HEADER_NAMES, st.text(max_size=8)), max_size=4),
    st.binary(max_size=16))
_streams = st.one_of(st.binary(max_size=200),
                     st.lists(st.one_of(_frames, st.binary(max_size=8)), max_size=6).map(b"".join))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(prefix_connect=st.booleans(), payload=_streams)
def test_hostile_bytes_never_break_the_handler(prefix_connect, payload):
    async def main():
        tl = Timeline()
        async with running(tl) as broker:
            client = await RawClient.open(broker)
            data = (encode_frame(stomp_frame()) if prefix_connect else b"") + payload
            with contextlib.suppress(ConnectionError):
                await client.send_raw(data)
            await client.close()
            await tl.expect("conn.close", within=STEP, direction="in")
        assert_no_handler_errors(tl)
    asyncio.run(main())


# --------------------------------------------------------------------------- TP-469 section 6 hooks


def test_refuse_next_connections_counts_down_and_restarts_with_each_scenario():
    """TP-469 6.3: the server refuses the next N attempts, then accepts again."""
    async def main():
        tl = Timeline()
        async with running(tl, scenario=STOMPScenario(refuse_next_connections=2)) as broker:
            for _ in range(2):
                client = await RawClient.open(broker)
                await client.send(stomp_frame())
                assert await client.closed() == []
            client = await connected_client(broker)
            await client.close()
            assert broker.refused == 2 and len(broker.connection_attempts) == 3
            broker.set_scenario(refuse_next_connections=1)   # counts again from here
            client = await RawClient.open(broker)
            await client.send(stomp_frame())
            assert await client.closed() == []
            client = await connected_client(broker)
            await client.close()
            assert [a["attempt"] for a in actions(tl, "refuse_connection")] == [1, 2, 4]
    asyncio.run(main())


def test_subscribe_dest_skip_leaves_the_header_out_of_the_first_connected_frames():
    """TP-469 6.7: CONNECTED without subscribe-dest first, with it afterwards."""
    async def main():
        tl = Timeline()
        scenario = STOMPScenario(subscribe_dest="/usp/spare", subscribe_dest_skip=1)
        async with running(tl, scenario=scenario) as broker:
            first = await connected_client(broker)
            connected = tl.filter("stomp.CONNECTED")
            assert "subscribe-dest" not in connected[0].decoded["headers"]
            assert broker.find_agent(AGENT).subscribe_dest is None
            await first.close()
            second = await connected_client(broker)
            assert tl.filter("stomp.CONNECTED")[1].decoded["headers"]["subscribe-dest"] == \
                "/usp/spare"
            await second.close()
            assert actions(tl, "subscribe_dest_skipped") == [
                {"action": "subscribe_dest_skipped", "left": 0}]
            # without a subscribe_dest there is nothing to skip
            broker.set_scenario(subscribe_dest=None, subscribe_dest_skip=1)
            await (await connected_client(broker)).close()
            assert len(actions(tl, "subscribe_dest_skipped")) == 1
            assert "subscribe-dest" not in tl.filter("stomp.CONNECTED")[-1].decoded["headers"]
    asyncio.run(main())


def test_corrupt_messages_cut_the_next_usp_bodies():
    """TP-469 6.9: the next N MESSAGEs to the agent carry a Record that cannot be parsed."""
    async def main():
        tl = Timeline()
        async with running(tl, scenario=STOMPScenario(corrupt_messages=1)) as broker:
            binding = broker.attach_controller(CTRL, CTRL_DEST)
            client = await connected_client(broker)
            await subscribe(client)
            data = usp_record(AGENT, CTRL)
            await binding.send(data, to_id=AGENT)
            await binding.send(data, to_id=AGENT)
            first, second = await client.frame(), await client.frame()
            assert first.body == data[:-1] and first.header("content-length") == str(len(data) - 1)
            with pytest.raises(records.RecordDecodeError):
                records.parse_record(first.body)
            assert second.body == data
            summaries = [e.decoded for e in tl.filter("stomp.MESSAGE", direction="out")]
            assert "error" in summaries[0]["record"]
            assert summaries[1]["record"]["record_type"] == "no_session_context"
            assert actions(tl, "corrupt_message") == [
                {"action": "corrupt_message", "to_id": AGENT, "length": len(data) - 1}]
            await client.close()
    asyncio.run(main())


def test_scenario_counts_and_yaml_shapes():
    """Counted fields are ints >= 0; YAML lists become the documented tuples."""
    for name in STOMPScenario.COUNTED:
        for bad in (-1, True, 1.5, "2"):
            with pytest.raises(ValueError):
                STOMPScenario(**{name: bad})
    scenario = STOMPScenario(heart_beat=[10, 20], connected_headers=[["a", "b"]])
    assert scenario.heart_beat == (10, 20) and scenario.connected_headers == (("a", "b"),)
    with pytest.raises(ValueError):
        STOMPScenario(heart_beat=[1, 2, 3])
    with pytest.raises(ValueError):
        STOMPScenario(heart_beat=(True, 0))
    with pytest.raises(ValueError):
        STOMPScenario(connected_headers=[["only-a-name"]])
    with pytest.raises(ValueError):
        STOMPScenario(heart_beat=5)
    with pytest.raises(ValueError):
        STOMPScenario(connected_headers=[1])
    doc = STOMPScenario(refuse_next_connections=2).to_json()
    assert doc["refuse_next_connections"] == 2 and "COUNTED" not in doc


def test_frame_summary_shows_the_record_and_the_endpoint_id():
    """What cases match (TP-469 6.2, 6.4, 6.12): the unescaped endpoint-id of a STOMP frame
    and the Record a SEND or MESSAGE carries, connect Record fields by name."""
    assert frame_summary(stomp_frame(AGENT_ESCAPED))["endpoint_id"] == AGENT
    assert frame_summary(stomp_frame(None))["endpoint_id"] is None
    connect = records.stomp_connect_record(to_id=CTRL, from_id=AGENT,
                                           subscribed_destination=AGENT_DEST)
    summary = frame_summary(usp_send(records.serialize(connect)))
    assert summary["record"] == {
        "record_type": "stomp_connect", "version": connect.version, "to_id": CTRL,
        "from_id": AGENT,
        "stomp_connect": {"version": "V1_2", "subscribed_destination": AGENT_DEST}}
    connect.stomp_connect.version = 7
    assert record_summary(records.serialize(connect))["stomp_connect"]["version"] == "UNKNOWN(7)"
    msg = messages.request("get", {"param_paths": ["Device."]}, msg_id="m-1")
    get = records.serialize(records.no_session_record(msg, to_id=AGENT, from_id=CTRL))
    assert frame_summary(Frame("MESSAGE", [], get))["record"]["msg_type"] == "GET"
    assert record_summary(get)["msg_id"] == "m-1"
    bad_payload = records.serialize(records.no_session_record(b"\xff", to_id=AGENT,
                                                              from_id=CTRL))
    assert "msg_error" in record_summary(bad_payload)
    assert "error" in record_summary(b"\xff\xff\xff")
    assert record_summary(b"")["record_type"] is None
    bye = records.disconnect_record(to_id=CTRL, from_id=AGENT, reason="bye", reason_code=7003)
    assert record_summary(records.serialize(bye))["disconnect"] == {"reason": "bye",
                                                                    "reason_code": 7003}
    assert "record" not in frame_summary(Frame("SEND", [("destination", "/d")]))
    assert "record" not in frame_summary(Frame("ERROR", [], b"x"))


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=300))
def test_record_summary_never_raises(body):
    out = record_summary(body)
    assert isinstance(out, dict) and ("error" in out or "record_type" in out)
    assert frame_summary(Frame("SEND", [], body))["body_length"] == len(body)
