"""Reference Controller <-> stomp.py agent through the suite's STOMP broker (plain and mTLS)."""

from __future__ import annotations

import asyncio
import threading

import pytest
import stomp

from conformance.controller.controller import Controller
from conformance.mtp import pki
from conformance.mtp.stomp.broker import STOMPBroker
from conformance.mtp.timeline import Timeline
from conformance.usp import messages, records
from tests.support.echo import AGENT_ID, answer

CTRL = "proto::controller-1"
CTRL_DEST, AGENT_DEST = "/queue/controller", "/queue/agent"
STEP = 10.0


class StompAgent(stomp.ConnectionListener):
    """stomp.py as the agent: answers Gets, can send a connect Record."""

    def __init__(self, conn: stomp.Connection12) -> None:
        self.conn = conn
        self.errors: list[str] = []
        self.got = threading.Event()

    def on_message(self, frame) -> None:
        body = frame.body if isinstance(frame.body, bytes) else frame.body.encode("latin-1")
        reply = answer(body)
        if reply is not None:
            self.conn.send(destination=frame.headers["reply-to-dest"], body=reply,
                           headers={"content-type": "application/vnd.bbf.usp.msg",
                                    "reply-to-dest": AGENT_DEST})
            self.got.set()

    def on_error(self, frame) -> None:
        self.errors.append(frame.body)


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "mtls"])
def test_controller_get_over_stomp(tmp_path, tls):
    asyncio.run(_scenario(tmp_path, tls))


async def _scenario(tmp_path, tls: bool) -> None:
    tl = Timeline()
    sctx = None
    if tls:
        ca = pki.make_ca("stomp ca")
        server = pki.issue(ca, endpoint_id=CTRL, ips=["127.0.0.1"])
        client = pki.issue(ca, endpoint_id=AGENT_ID)
        sctx = pki.ssl_context("server", server, trust=[ca])
        agent_files = pki.write_pem(tmp_path, "agent", client)
        ca_files = pki.write_pem(tmp_path, "ca", ca)
    async with await STOMPBroker(timeline=tl, ssl_context=sctx).start() as broker:
        ctrl = Controller(CTRL, timeline=tl, default_timeout=STEP)
        ctrl.attach(broker.attach_controller(CTRL, CTRL_DEST), agent_id=AGENT_ID)
        conn = stomp.Connection12([("127.0.0.1", broker.port)], heartbeats=(0, 0),
                                  auto_decode=False)
        if tls:
            conn.set_ssl(for_hosts=[("127.0.0.1", broker.port)], key_file=agent_files.key,
                         cert_file=agent_files.cert, ca_certs=ca_files.cert)
        agent = StompAgent(conn)
        conn.set_listener("agent", agent)
        await asyncio.wait_for(asyncio.to_thread(
            conn.connect, wait=True, headers={"endpoint-id": AGENT_ID}), STEP)
        conn.subscribe(AGENT_DEST, id="1")
        try:
            await broker.wait_for_agent(AGENT_ID, timeout=STEP)
            # The agent announces itself with a STOMPConnect Record.
            hello = records.stomp_connect_record(to_id=CTRL, from_id=AGENT_ID,
                                                 subscribed_destination=AGENT_DEST)
            await asyncio.to_thread(conn.send, destination=CTRL_DEST,
                                    body=records.serialize(hello),
                                    headers={"content-type": "application/vnd.bbf.usp.msg",
                                             "reply-to-dest": AGENT_DEST})
            await ctrl.connect_record("stomp_connect")
            resp = await ctrl.request(messages.request("get", {"param_paths": ["Device.DeviceInfo."]}))
            res = resp.body.response.get_resp.req_path_results[0].resolved_path_results[0]
            assert dict(res.result_params) == {"SoftwareVersion": "echo-1"}
            assert all(not r.violations for r in ctrl.received)
            assert agent.errors == []
            sends = tl.filter(kind="stomp.SEND", direction="in")
            assert len(sends) == 2 and all(e.raw for e in sends)
            if tls:
                done = await tl.expect("tls.handshake_done", within=STEP, direction="in")
                assert done.decoded["peer_endpoint_ids"] == [AGENT_ID]
        finally:
            await asyncio.wait_for(asyncio.to_thread(conn.disconnect), STEP)
            await ctrl.close()


class SessionStompAgent(stomp.ConnectionListener):
    """stomp.py agent speaking inside an E2E session context with segmentation."""

    def __init__(self, conn: stomp.Connection12, config, drop_first: bool = False) -> None:
        from conformance.usp import session

        self.session = session
        self.conn = conn
        self.drop_first = drop_first
        self.retransmit_requests: list[int] = []
        self.ctx = session.SessionContext(AGENT_ID, CTRL, config)
        self.violations: list[str] = []

    def _send(self, recs) -> None:
        for rec in recs:
            if self.drop_first and rec.session_context.payload:
                self.drop_first = False  # lose it on the wire: the controller must ask again
                continue
            self.conn.send(destination=CTRL_DEST, body=records.serialize(rec),
                           headers={"content-type": "application/vnd.bbf.usp.msg",
                                    "reply-to-dest": AGENT_DEST})

    def on_message(self, frame) -> None:
        import time

        rec = records.parse_record(frame.body)
        events = self.ctx.receive(rec, now=time.monotonic())
        # Note retransmit requests before sending anything: the controller may
        # finish (and the test assert) as soon as the resent segment arrives.
        self.retransmit_requests += [e.sequence_id for e in events
                                     if isinstance(e, self.session.RetransmitRequested)]
        self._send(self.session.outgoing_records(events))
        for event in events:
            if isinstance(event, self.session.ProtocolViolation):
                self.violations.append(event.reason)
            if isinstance(event, self.session.MessageReceived):
                msg = records.parse_msg(event.payload)
                path = msg.body.request.get.param_paths[0]
                big = {f"P{i}": "x" * 40 for i in range(60)}  # ~3 KB: several segments
                resp = messages.response("get_resp", {"req_path_results": [{
                    "requested_path": path,
                    "resolved_path_results": [{"resolved_path": path, "result_params": big}]}]},
                    msg_id=msg.header.msg_id)
                self._send(self.ctx.send(resp.SerializeToString(), now=time.monotonic()))


@pytest.mark.parametrize("lossy", [False, True], ids=["clean", "lost-segment"])
def test_controller_session_context_with_segmentation_over_stomp(lossy):
    """SAR across a real MTP; with a lost segment the Controller's session timer asks
    for a retransmit (retransmit_id, R-E2E.16/.20) and the message still arrives."""
    from conformance.usp.session import SessionConfig

    async def main():
        tl = Timeline()
        config = SessionConfig(max_record_size=512, retransmit_request_after=0.05)
        async with await STOMPBroker(timeline=tl).start() as broker:
            ctrl = Controller(CTRL, timeline=tl, default_timeout=STEP)
            ctrl.attach(broker.attach_controller(CTRL, CTRL_DEST), agent_id=AGENT_ID)
            ctx = ctrl.use_session_context(AGENT_ID, config)
            conn = stomp.Connection12([("127.0.0.1", broker.port)], heartbeats=(0, 0),
                                      auto_decode=False)
            agent = SessionStompAgent(conn, config, drop_first=lossy)
            conn.set_listener("agent", agent)
            await asyncio.wait_for(asyncio.to_thread(
                conn.connect, wait=True, headers={"endpoint-id": AGENT_ID}), STEP)
            conn.subscribe(AGENT_DEST, id="1")
            try:
                await broker.wait_for_agent(AGENT_ID, timeout=STEP)
                big_paths = [f"Device.DeviceInfo.VendorConfigFile.{i}." for i in range(1, 40)]
                resp = await ctrl.request(messages.request("get", {"param_paths": big_paths}))
                params = resp.body.response.get_resp.req_path_results[0] \
                    .resolved_path_results[0].result_params
                assert len(params) == 60
                segments_in = [e for e in tl.filter(kind="usp.record", direction="in")]
                segments_out = [e for e in tl.filter(kind="usp.record", direction="out")]
                assert len(segments_in) > 3 and len(segments_out) > 1  # both sides segmented
                assert all(len(e.raw) <= 512 for e in segments_in + segments_out)
                assert ctx.session_id is not None and agent.ctx.session_id == ctx.session_id
                assert agent.violations == []
                assert bool(agent.retransmit_requests) == lossy
                assert [r for r in ctrl.received if r.msg is not None][-1].violations == []
            finally:
                await asyncio.wait_for(asyncio.to_thread(conn.disconnect), STEP)
                await ctrl.close()

    asyncio.run(main())
