"""Several controller identities at once on one MTP (primary, secondary, unknown)."""

from __future__ import annotations

import asyncio

import pytest

from conformance.controller.controller import Controller, ControllerTimeout, NoRoute
from conformance.mtp.stomp import Frame, StompDecoder, encode_frame
from conformance.mtp.stomp.broker import STOMPBroker
from conformance.mtp.timeline import Timeline
from conformance.mtp.transport import open_connection
from conformance.usp import messages, records
from tests.support.echo import AGENT_ID, answer

STEP = 10.0
IDS = {"primary": "proto::ctrl-primary", "secondary": "proto::ctrl-secondary",
       "unknown": "proto::ctrl-unknown"}


def test_three_identities_each_get_their_own_answers():
    async def main():
        tl = Timeline()
        async with await STOMPBroker(timeline=tl).start() as broker:
            ctrls = {}
            for name, eid in IDS.items():
                ctrl = Controller(eid, timeline=tl, default_timeout=STEP)
                ctrl.attach(broker.attach_controller(eid, f"/queue/{name}"), agent_id=AGENT_ID)
                ctrls[name] = ctrl
            # A raw STOMP agent (our codec) that answers each Get to its reply-to-dest.
            conn = await open_connection("stomp", "127.0.0.1", broker.port)
            await conn.write(encode_frame(Frame("STOMP", [("accept-version", "1.2"),
                                                           ("host", "h"),
                                                           ("endpoint-id", AGENT_ID)])))
            await conn.write(encode_frame(Frame("SUBSCRIBE", [("id", "1"),
                                                               ("destination", "/queue/agent")])))
            decoder = StompDecoder()

            async def agent():
                while data := await conn.reader.read(65536):
                    for ev in decoder.feed(data):
                        if isinstance(ev, Frame) and ev.command == "MESSAGE":
                            reply = answer(ev.body)
                            if reply is not None:
                                await conn.write(encode_frame(Frame("SEND", [
                                    ("destination", ev.header("reply-to-dest")),
                                    ("content-type", "application/vnd.bbf.usp.msg"),
                                    ("reply-to-dest", "/queue/agent")], reply),
                                    content_length="auto"))

            task = asyncio.create_task(agent())
            try:
                await broker.wait_for_agent(AGENT_ID, timeout=STEP)
                ids = {name: await c.send(messages.request("get", {"param_paths": ["Device."]}))
                       for name, c in ctrls.items()}
                for name, ctrl in ctrls.items():
                    resp = await ctrl.response(ids[name])
                    assert resp.header.msg_id == ids[name]
                    # Each identity saw only the answer addressed to it.
                    assert [r.record.to_id for r in ctrl.received] == [IDS[name]]
                with pytest.raises(ControllerTimeout):
                    await ctrls["primary"].response(ids["secondary"], timeout=0.2)
            finally:
                task.cancel()
                await conn.close()
                for ctrl in ctrls.values():
                    await ctrl.close()
    asyncio.run(main())


def test_no_route_is_a_clear_error():
    async def main():
        ctrl = Controller("proto::lonely")
        with pytest.raises(NoRoute, match="bound to 0 agents"):
            await ctrl.send(messages.request("get", {"param_paths": ["Device."]}))
        rec = records.no_session_record(b"", to_id="os::x", from_id="proto::lonely")
        with pytest.raises(NoRoute, match="no MTP binding to os::x"):
            await ctrl.send_record(rec)
    asyncio.run(main())
