"""The reference Agent's MQTT client against the suite's MQTT broker (real loopback sockets).

R-MQTT.7..R-MQTT.17 (CONNECT, ClientID, subscriptions), R-MQTT.21..R-MQTT.27a
(reply-to topics, Content Type), R-MQTT.33 / R-MQTT.10 (retry), R-MQTT.35,
R-MTP.6 / R-MTP.7; TP-469 11.3, 11.4, 11.8, 11.10, 11.11, 11.12, 11.14,
11.15, 11.16 and 11.17.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.agent.mtp import ControllerRoute, MTPNotConnected, NoRoute
from conformance.agent.mtp.backoff import MQTTRetry
from conformance.agent.mtp.mqtt import (
    MQTTMTP,
    MQTTClientConfig,
    MQTTSubscription,
    subscription_plan,
)
from conformance.mtp.mqtt.binding import MQTTBinding
from conformance.mtp.mqtt.broker import MQTTBroker, MQTTScenario
from conformance.mtp.mqtt.topics import topic_matches
from conformance.mtp.timeline import Timeline
from conformance.usp.schema import MQTTConnectRecord
from tests.agent.mtp.support import (
    AGENT,
    CTRL,
    STEP,
    Echo,
    Sink,
    check_gaps,
    disconnect_record,
    get_record,
    mutual_tls,
)

CTRL_TOPIC = "usp/controller"
FAST = MQTTRetry(0.1, 2000, 5)


@dataclass
class Rig:
    broker: MQTTBroker
    binding: MQTTBinding
    sink: Sink
    agent: MQTTMTP
    echo: Echo
    tl: Timeline      # the broker's (suite side)
    atl: Timeline     # the agent's own


@asynccontextmanager
async def rig(version: str = "5.0", *, tls: bool = False, scenario: MQTTScenario | None = None,
              credentials: dict[str, str] | None = None, start: bool = True,
              **agent_kwargs: Any) -> AsyncIterator[Rig]:
    tl, atl = Timeline(), Timeline()
    pair = mutual_tls() if tls else None
    broker = await MQTTBroker(timeline=tl, ssl_context=pair.server if pair else None,
                              credentials=credentials, scenario=scenario).start()
    binding = broker.attach_controller(CTRL, CTRL_TOPIC)
    sink = Sink()
    binding.set_sink(sink)
    client_kwargs = {k: agent_kwargs.pop(k) for k in list(agent_kwargs)
                     if k in MQTTClientConfig.__dataclass_fields__}
    config = MQTTClientConfig(broker_port=broker.port, protocol_version=version,
                              retry=client_kwargs.pop("retry", FAST), **client_kwargs)
    agent = MQTTMTP(AGENT, config, controllers=[ControllerRoute(CTRL, CTRL_TOPIC)],
                    ssl_context=pair.client if pair else None, timeline=atl, **agent_kwargs)
    echo = Echo(agent)
    try:
        if start:
            await agent.start()
        yield Rig(broker, binding, sink, agent, echo, tl, atl)
    finally:
        await agent.stop()
        await broker.close()


# --------------------------------------------------------------------------- pure parts


def test_subscription_plan_follows_r_mqtt_15() -> None:
    """R-MQTT.15 bullets, R-MQTT.21 (Response Information is the reply-to topic)."""
    # 5.0, subscribe-topic covering the Response Information: one filter.
    plan, reply = subscription_plan(level=5, configured=(), subscribe_topics=["a/b"],
                                    response_information="a/b", response_topic_configured="x")
    assert plan == [("a/b", 1)] and reply == "a/b"
    # 5.0, Response Information not covered: added; it beats ResponseTopicConfigured.
    plan, reply = subscription_plan(level=5, configured=[MQTTSubscription("c/#", 2)],
                                    subscribe_topics=["s/1"], response_information="r/1",
                                    response_topic_configured="x", qos=0)
    assert plan == [("c/#", 2), ("s/1", 0), ("r/1", 0)] and reply == "r/1"
    # 5.0, no Response Information: ResponseTopicConfigured, exact, unless covered.
    plan, reply = subscription_plan(level=5, configured=[MQTTSubscription("agent/#")],
                                    subscribe_topics=[], response_information=None,
                                    response_topic_configured="agent/me")
    assert plan == [("agent/#", 1)] and reply == "agent/me"
    plan, _ = subscription_plan(level=5, configured=[MQTTSubscription("other/#")],
                                subscribe_topics=[], response_information=None,
                                response_topic_configured="agent/me")
    assert plan == [("other/#", 1), ("agent/me", 1)]
    # 3.1.1: no subscribe-topic / Response Information; ResponseTopicConfigured is
    # wildcarded so that "<topic>/reply-to=..." names arrive (R-MQTT.24).
    plan, reply = subscription_plan(level=4, configured=[MQTTSubscription("agent/me")],
                                    subscribe_topics=["ignored"], response_information="ign",
                                    response_topic_configured="agent/me")
    assert plan == [("agent/me", 1), ("agent/me/#", 1)] and reply == "agent/me"
    plan, _ = subscription_plan(level=4, configured=[MQTTSubscription("agent/+/#")],
                                subscribe_topics=[], response_information=None,
                                response_topic_configured="agent/me")
    assert plan == [("agent/+/#", 1)]
    # Nothing configured for the reply-to topic: a subscribed exact topic is used.
    plan, reply = subscription_plan(level=5, configured=(), subscribe_topics=["a/+", "b/c/#"],
                                    response_information=None, response_topic_configured="")
    assert reply == "b/c" and plan == [("a/+", 1), ("b/c/#", 1)]
    assert subscription_plan(level=5, configured=(), subscribe_topics=["+/#"],
                             response_information=None, response_topic_configured="")[1] is None
    # Duplicates are subscribed once (the first QoS wins).
    plan, _ = subscription_plan(level=5, configured=[MQTTSubscription("t", 0)],
                                subscribe_topics=["t"], response_information="t",
                                response_topic_configured="")
    assert plan == [("t", 0)]


TOPIC = st.lists(st.sampled_from(["a", "b", "+", "#", "usp", "x y"]), min_size=1,
                 max_size=4).map("/".join)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([4, 5]), st.lists(TOPIC, max_size=3), st.lists(TOPIC, max_size=3),
       st.one_of(st.none(), TOPIC), st.sampled_from(["", "agent/me", "a/b"]))
def test_subscription_plan_reply_topic_is_always_subscribed(
        level: int, configured: list[str], subscribe: list[str], info: str | None,
        rtc: str) -> None:
    plan, reply = subscription_plan(
        level=level, configured=[MQTTSubscription(t) for t in configured],
        subscribe_topics=subscribe, response_information=info, response_topic_configured=rtc)
    filters = [t for t, _ in plan]
    assert len(filters) == len(set(filters))
    if reply is not None and "+" not in reply and "#" not in reply:
        probe = reply if level == 5 else f"{reply}/reply-to=x"
        assert any(f == reply or topic_matches(f, probe) for f in filters), (plan, reply)


def test_client_config_validation() -> None:
    with pytest.raises(ValueError):
        MQTTClientConfig(protocol_version="3.1")
    with pytest.raises(ValueError):
        MQTTClientConfig(broker_port=0)
    with pytest.raises(ValueError):
        MQTTClientConfig(keep_alive_time=70000)
    assert MQTTClientConfig(protocol_version="3.1.1").level == 4
    assert MQTTClientConfig(subscriptions=[MQTTSubscription("a")]).subscriptions == (  # type: ignore[arg-type]
        MQTTSubscription("a"),)
    with pytest.raises(ValueError):
        MQTTMTP(AGENT, MQTTClientConfig(), publish_qos=3)
    with pytest.raises(ValueError):
        MQTTMTP(AGENT, MQTTClientConfig(), response_topic_configured="a/#")


def test_unconfigured_client_id_per_version() -> None:
    """R-MQTT.8: empty on 5.0 (the server assigns one); the Endpoint ID on 3.1.1."""
    assert MQTTMTP(AGENT, MQTTClientConfig()).client_id == ""
    assert MQTTMTP(AGENT, MQTTClientConfig(protocol_version="3.1.1")).client_id == AGENT
    assert MQTTMTP(AGENT, MQTTClientConfig(client_id="cid")).client_id == "cid"


# --------------------------------------------------------------------------- over sockets


def _connects(tl: Timeline) -> list[dict[str, Any]]:
    return [e.decoded for e in tl.filter("mqtt.CONNECT", direction="in")]


@pytest.mark.parametrize("version", ["5.0", "3.1.1"])
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "mtls"])
def test_connect_record_and_round_trip(version: str, tls: bool) -> None:
    """TP-469 11.2/11.3/11.4/11.12/11.14/11.17: CONNECT, SUBSCRIBE, MQTTConnect Record,
    a Record answered on the received reply-to topic."""
    v5 = version == "5.0"
    options: dict[str, Any] = {} if v5 else {
        "subscriptions": (MQTTSubscription("usp/agent/me/#"),),
        "response_topic_configured": "usp/agent/me"}
    if not tls:
        options.update(username="agent", password="secret")

    async def main() -> None:
        async with rig(version, tls=tls, credentials=None if tls else {"agent": "secret"},
                       keep_alive_time=30, **options) as r:
            inbound, rec = await r.sink.next("mqtt_connect")
            await r.agent.wait_connected(STEP)
            # R-MTP.6 / TP-469 11.17: version and a topic the agent is subscribed to.
            assert rec.from_id == AGENT and rec.to_id == CTRL
            assert rec.mqtt_connect.version == (MQTTConnectRecord.V5 if v5
                                                else MQTTConnectRecord.V3_1_1)
            topic = rec.mqtt_connect.subscribed_topic
            assert topic == r.agent.reply_topic
            assert any(topic_matches(f, topic) for f in r.agent.subscribed_topics)
            assert inbound.reply_to == topic  # R-MQTT.22..R-MQTT.24
            connect = _connects(r.tl)[0]
            assert connect["keep_alive"] == 30  # R-MQTT.14
            if v5:
                assert connect["client_id"] == ""  # R-MQTT.8
                props = connect["properties"]
                assert ["usp-endpoint-id", AGENT] in props["user_properties"]  # R-MQTT.13
                assert props["request_response_information"] == 1  # R-MQTT.12
                client = r.broker.find_client(AGENT)
                assert client is not None
                assert r.agent.assigned_client_id == client.client_id == r.agent.client_id
                assert inbound.meta["content_type"] == "usp.msg"  # R-MQTT.27
            else:
                assert connect["client_id"] == AGENT
                assert inbound.meta["topic"] == f"{CTRL_TOPIC}/reply-to=usp%2Fagent%2Fme"
            if tls:  # TP-469 11.3
                assert r.agent.tls
                done = await r.tl.expect("tls.handshake_done", within=STEP, direction="in")
                assert done.decoded["peer_endpoint_ids"] == [AGENT]
            else:
                assert connect["username"] == "agent"  # R-MQTT.7
            request = get_record()
            await r.binding.send(request, to_id=AGENT)
            answer, _ = await r.sink.next("no_session_context")
            assert answer.data == request and answer.reply_to == topic
            route = r.echo.routes[-1]
            # R-MQTT.25 / R-MQTT.26: the reply-to topic of the received PUBLISH.
            assert route.reply_to == CTRL_TOPIC and route.controller_hint == CTRL
            assert route.mtp == "mqtt" and route.conn_id == r.agent.conn_id
            assert r.tl.filter("mqtt.violation") == []
            assert r.atl.filter("mqtt.CONNACK", direction="in")
    asyncio.run(main())


def test_without_subscribe_topic_uses_configured_topics() -> None:
    """R-MQTT.15 bullets 1 and 4 when the CONNACK has no subscribe-topic / Response
    Information (TP-469 11.8); CONNACK Maximum QoS lowers PublishQoS."""
    scenario = MQTTScenario(subscribe_topics=(), response_information=None, maximum_qos=0)

    async def main() -> None:
        async with rig(scenario=scenario, subscriptions=(MQTTSubscription("usp/cfg/#"),),
                       response_topic_configured="usp/agent/rtc", publish_qos=1) as r:
            inbound, rec = await r.sink.next("mqtt_connect")
            subscribe = (await r.tl.expect("mqtt.SUBSCRIBE", within=STEP)).decoded
            assert [s["topic_filter"] for s in subscribe["subscriptions"]] == [
                "usp/cfg/#", "usp/agent/rtc"]
            assert rec.mqtt_connect.subscribed_topic == "usp/agent/rtc"
            assert inbound.reply_to == "usp/agent/rtc" and inbound.meta["qos"] == 0
            await r.binding.send(get_record(), to_id=AGENT)
            answer, _ = await r.sink.next("no_session_context")
            assert answer.meta["qos"] == 0
    asyncio.run(main())


def test_no_subscription_at_all_disconnects_and_disables() -> None:
    """R-MQTT.16 / TP-469 11.10: DISCONNECT and the MTP is disabled (no retry)."""
    async def main() -> None:
        async with rig(scenario=MQTTScenario(subscribe_topics=()),
                       response_topic_configured="usp/agent/rtc") as r:
            await r.tl.expect("mqtt.DISCONNECT", within=STEP, direction="in")
            await r.agent.wait_for(lambda: True if not r.agent.running else None, timeout=STEP)
            assert r.agent.disabled and not r.agent.connected
            assert r.tl.filter("mqtt.SUBSCRIBE") == [] and r.tl.filter("mqtt.PUBLISH") == []
            assert len(r.broker.connection_attempts) == 1
            with pytest.raises(MTPNotConnected):
                await r.agent.send(get_record(CTRL, AGENT), to_id=CTRL)
    asyncio.run(main())


def test_refused_subscription_disconnects_without_publishing_then_retries() -> None:
    """R-MQTT.17 / TP-469 11.11, then the retry state until the SUBSCRIBE succeeds."""
    async def main() -> None:
        async with rig(scenario=MQTTScenario(suback_reason_code=0x80)) as r:
            await r.tl.expect("mqtt.DISCONNECT", within=STEP, direction="in")
            assert r.tl.filter("mqtt.PUBLISH") == []
            r.broker.set_scenario(suback_reason_code=None)
            await r.sink.next("mqtt_connect")
            assert r.agent.connection_count == 1
            assert [e.decoded["retry"] for e in r.atl.filter("mqtt.retry")][:1] == [1]
    asyncio.run(main())


def test_reconnect_backoff_after_the_broker_drops_the_agent() -> None:
    """R-MQTT.33 / TP-469 11.16 and 11.6: waits drawn from ConnectRetryTime *
    (k/1000)^(n-1) .. ^n; the assigned ClientID is reused (R-MQTT.9, R-MQTT.11)."""
    async def main() -> None:
        async with rig() as r:
            await r.sink.next("mqtt_connect")
            r.broker.set_scenario(refuse_connections=True)
            dropped_at = time.monotonic()
            await r.broker.drop_client(r.agent.client_id)
            await r.atl.expect("mqtt.retry", within=STEP, where=lambda e: e.decoded["retry"] == 3)
            r.broker.set_scenario(refuse_connections=False)
            await r.agent.wait_connected(STEP, count=2)
            await r.sink.next("mqtt_connect")
            waits = r.atl.filter("mqtt.retry")
            assert [w.decoded["retry"] for w in waits] == [1, 2, 3]
            check_gaps([dropped_at, *r.broker.connection_attempts[1:]], waits, FAST.bounds)
            connects = _connects(r.tl)
            assert connects[0]["client_id"] == "" and connects[-1]["client_id"] == \
                r.agent.assigned_client_id
    asyncio.run(main())


def test_stop_sends_disconnect_record_then_disconnect() -> None:
    """R-MTP.7 (DisconnectRecord first), R-MQTT.35 (DISCONNECT when shutting down)."""
    async def main() -> None:
        async with rig() as r:
            await r.sink.next("mqtt_connect")
            await r.agent.stop(disconnect_record())
            _, rec = await r.sink.next("disconnect")
            assert rec.disconnect.reason_code == 7003
            bye = await r.tl.expect("mqtt.DISCONNECT", within=STEP, direction="in")
            last_publish = r.tl.filter("mqtt.PUBLISH", direction="in")[-1]
            assert last_publish.seq < bye.seq and bye.decoded["reason_code"] == 0
            assert not r.agent.connected and not r.agent.running
    asyncio.run(main())


def test_foreign_content_type_and_garbage_are_dropped() -> None:
    """R-MQTT.27a: "usp.msg" and the MIME type are USP Records; others are dropped,
    as are payloads that are not Records ("Handling Errors")."""
    async def main() -> None:
        async with rig() as r:
            await r.sink.next("mqtt_connect")
            r.binding.content_type = "text/plain"
            await r.binding.send(get_record(msg_id="a"), to_id=AGENT)
            dropped = await r.atl.expect("mqtt.dropped", within=STEP)
            assert "Content Type" in dropped.decoded["reason"]
            r.binding.content_type = "application/vnd.bbf.usp.msg"
            await r.binding.send(b"\xff\xfe not a record", to_id=AGENT)
            await r.atl.expect("mqtt.dropped", within=STEP, since=dropped)
            request = get_record(msg_id="b")
            await r.binding.send(request, to_id=AGENT)
            answer, _ = await r.sink.next("no_session_context")
            assert answer.data == request and len(r.echo.routes) == 1
    asyncio.run(main())


def test_send_needs_a_connection_and_a_topic() -> None:
    async def main() -> None:
        async with rig(start=False) as r:
            with pytest.raises(MTPNotConnected):
                await r.agent.send(get_record(CTRL, AGENT), to_id=CTRL)
            await r.agent.start()
            await r.agent.start()  # idempotent
            await r.agent.wait_connected(STEP)
            with pytest.raises(NoRoute):
                await r.agent.send(get_record("proto::x", AGENT), to_id="proto::x")
            with pytest.raises(NoRoute):
                await r.agent.send(get_record(CTRL, AGENT), to_id=CTRL, reply_to="bad/#")
            await r.agent.send(get_record("proto::x", AGENT), to_id="proto::x",
                               reply_to=CTRL_TOPIC)
            _, rec = await r.sink.next("no_session_context")
            assert rec.to_id == "proto::x"
    asyncio.run(main())


def test_unreachable_broker_is_retried() -> None:
    """R-MQTT.10: a failed TCP connection enters the retry state."""
    async def main() -> None:
        broker = await MQTTBroker().start()
        port = broker.port
        await broker.close()
        atl = Timeline()
        agent = MQTTMTP(AGENT, MQTTClientConfig(broker_port=port, retry=FAST), timeline=atl)
        await agent.start()
        try:
            await atl.expect("mqtt.retry", within=STEP, where=lambda e: e.decoded["retry"] == 2)
            failed = atl.filter("mqtt.state", predicate=lambda e: e.decoded["state"] ==
                                "connect_failed")
            assert len(failed) >= 2 and not agent.connected
        finally:
            await agent.stop()
    asyncio.run(main())


def test_server_keep_alive_drives_pingreq() -> None:
    """TP-469 11.7 / R-MQTT.14: CONNECT carries KeepAliveTime; with a CONNACK Server
    Keep Alive the agent sends PINGREQ within 1.5 times that value."""
    scenario = MQTTScenario(server_keep_alive=2, keep_alive_tolerance=3)

    async def main() -> None:
        async with rig(scenario=scenario, keep_alive_time=60) as r:
            await r.sink.next("mqtt_connect")
            assert _connects(r.tl)[0]["keep_alive"] == 60
            connack = await r.tl.expect("mqtt.CONNACK", within=STEP, direction="out")
            ping = await r.tl.expect("mqtt.PINGREQ", within=STEP, direction="in")
            last_before = max(e.t for e in r.tl.filter(direction="in", predicate=lambda e:
                                                       e.kind.startswith("mqtt.") and
                                                       e.seq < ping.seq))
            assert ping.t - max(last_before, connack.t) <= 2 * 1.5 + 0.3
            assert r.tl.filter("mqtt.keepalive_timeout") == []
    asyncio.run(main())


@pytest.mark.parametrize("version", ["5.0", "3.1.1"])
def test_refused_connack_enters_the_retry_state(version: str) -> None:
    """R-MQTT.10: a CONNACK refusing the connection (bad User Name / Password) is a
    failed connection: the retry state follows."""
    options: dict[str, Any] = {} if version == "5.0" else {
        "subscriptions": (MQTTSubscription("usp/agent/me/#"),),
        "response_topic_configured": "usp/agent/me"}

    async def main() -> None:
        async with rig(version, credentials={"agent": "secret"}, username="agent",
                       password="wrong", **options) as r:
            refused = await r.atl.expect("mqtt.state", within=STEP,
                                         where=lambda e: e.decoded["state"] == "refused")
            connack = r.atl.filter("mqtt.CONNACK", direction="in")[0].decoded
            assert connack["reason_code"] >= 0x80
            await r.atl.expect("mqtt.retry", within=STEP, since=refused)
            assert not r.agent.connected and r.agent.connection_count == 0
    asyncio.run(main())


# --------------------------------------------------------------------------- data-model hooks


@pytest.mark.parametrize("version", ["5.0", "3.1.1"])
def test_on_client_id_saves_the_client_id_in_use(version: str) -> None:
    """R-MQTT.9 / R-MQTT.11 (TP-469 11.4, 11.5): the Assigned Client Identifier (5.0) or
    the Endpoint ID fallback (3.1.1) is handed to the owner once and reused."""
    async def main() -> None:
        async with rig(version, start=False, **_v311_topics(version)) as r:
            saved: list[str] = []
            r.agent.on_client_id = saved.append
            await r.agent.start()
            await r.sink.next("mqtt_connect")
            expected = r.agent.assigned_client_id if version == "5.0" else AGENT
            assert saved == [expected] and r.agent.config.client_id == expected
            await r.broker.drop_client(expected)
            await r.agent.wait_connected(STEP, count=2)
            assert saved == [expected] and _connects(r.tl)[-1]["client_id"] == expected
    asyncio.run(main())


def test_on_client_id_not_called_with_a_configured_client_id_or_the_fault() -> None:
    async def main() -> None:
        for kwargs, faults in (({"client_id": "mine"}, ()),
                               ({}, ("mqtt.assigned_client_id_not_saved",))):
            async with faulty(*faults, **kwargs) as r:
                saved: list[str] = []
                r.agent.on_client_id = saved.append
                await r.agent.start()
                await r.sink.next("mqtt_connect")
                assert saved == []
    asyncio.run(main())


def test_on_client_id_handler_errors_do_not_drop_the_connection() -> None:
    async def main() -> None:
        async with rig(start=False) as r:
            r.agent.on_client_id = lambda _cid: 1 / 0  # type: ignore[func-returns-value]
            await r.agent.start()
            await r.sink.next("mqtt_connect")
            assert r.agent.connected
    asyncio.run(main())


@pytest.mark.parametrize("version", ["5.0", "3.1.1"])
def test_set_subscriptions_subscribes_and_unsubscribes_live(version: str) -> None:
    """R-MQTT.15 / R-MQTT.34 (TP-469 11.9, 11.13): a Subscription added while connected
    is SUBSCRIBEd at its QoS; a removed one is UNSUBSCRIBEd, unless the connection needs
    the filter for another reason; without a connection only the table changes."""
    async def main() -> None:
        async with rig(version, **_v311_topics(version)) as r:
            await r.sink.next("mqtt_connect")
            base = r.agent.config.subscriptions
            r.agent.set_subscriptions((*base, MQTTSubscription("new/#", 0)))
            sub = await r.tl.expect("mqtt.SUBSCRIBE", within=STEP, direction="in",
                                    where=lambda e: e.decoded["subscriptions"][0][
                                        "topic_filter"] == "new/#")
            assert sub.decoded["subscriptions"][0]["qos"] == 0
            await r.agent.wait_for(lambda: True if "new/#" in r.agent.subscribed_topics
                                   else None, timeout=STEP)
            r.agent.set_subscriptions((*base, MQTTSubscription("new/#", 0)))  # no change
            r.agent.set_subscriptions(base)
            unsub = await r.tl.expect("mqtt.UNSUBSCRIBE", within=STEP, direction="in")
            assert unsub.decoded["topic_filters"] == ["new/#"]
            await r.atl.expect("mqtt.UNSUBACK", within=STEP, direction="in")
            assert "new/#" not in r.agent.subscribed_topics
            assert len(r.tl.filter("mqtt.SUBSCRIBE", direction="in")) == 2
            await r.agent.stop()
            r.agent.set_subscriptions((MQTTSubscription("later"),))
            assert r.agent.config.subscriptions == (MQTTSubscription("later"),)
    asyncio.run(main())


def test_set_subscriptions_keeps_filters_the_connection_needs() -> None:
    """A configured filter that is also the subscribe-topic stays subscribed when the
    Subscription goes away (the CONNACK still asks for it)."""
    async def main() -> None:
        topic = f"usp/agent/{AGENT}"
        async with rig(subscriptions=(MQTTSubscription(topic),)) as r:
            await r.sink.next("mqtt_connect")
            r.agent.set_subscriptions(())
            r.agent.set_subscriptions((MQTTSubscription("x"),))
            await r.tl.expect("mqtt.SUBSCRIBE", within=STEP, direction="in",
                              where=lambda e: e.decoded["subscriptions"][0]["topic_filter"]
                              == "x")
            assert r.tl.filter("mqtt.UNSUBSCRIBE") == []
    asyncio.run(main())


# --------------------------------------------------------------------------- faults


@asynccontextmanager
async def faulty(*faults: str, **kwargs: Any) -> AsyncIterator[Rig]:
    """A rig whose agent has ``faults`` on; not started (set hooks, then start it)."""
    from conformance.agent.faults import FaultSet

    async with rig(start=False, **kwargs) as r:
        r.agent.faults = FaultSet(faults)
        yield r


def _v311_topics(version: str) -> dict[str, Any]:
    return {} if version == "5.0" else {
        "subscriptions": (MQTTSubscription("usp/agent/me/#"),),
        "response_topic_configured": "usp/agent/me"}


def test_every_fault_is_registered_with_its_requirement() -> None:
    from conformance.agent.faults import REGISTRY
    from conformance.agent.mtp.mqtt import FAULTS

    assert len({name for name, _, _ in FAULTS}) == len(FAULTS) == 21
    for name, requirement, text in FAULTS:
        assert REGISTRY[name].requirement == requirement and text
        assert "TP-469 11." in requirement


@pytest.mark.parametrize("version", ["5.0", "3.1.1"])
def test_connect_faults(version: str) -> None:
    """mqtt.no_credentials (R-MQTT.7), mqtt.client_id_changes (R-MQTT.11),
    mqtt.no_keep_alive (R-MQTT.14), mqtt.no_request_response_information (R-MQTT.12)."""
    async def main() -> None:
        async with faulty("mqtt.no_credentials", "mqtt.client_id_changes", "mqtt.no_keep_alive",
                          "mqtt.no_request_response_information", version=version,
                          username="agent", password="secret", keep_alive_time=30,
                          client_id="configured", **_v311_topics(version)) as r:
            await r.agent.start()
            await r.sink.next("mqtt_connect")
            await r.broker.drop_client(r.agent.client_id)
            await r.agent.wait_connected(STEP, count=2)
            first, second = _connects(r.tl)[:2]
            for connect in (first, second):
                assert connect["username"] is None and connect["password_length"] is None
                assert connect["keep_alive"] == 0
                assert connect["client_id"].startswith("cid-")
                assert "request_response_information" not in connect["properties"]
            assert first["client_id"] != second["client_id"]
            assert r.agent.config.client_id == "configured"
    asyncio.run(main())


def test_retry_faults_change_the_back_off() -> None:
    """mqtt.retry_immediately / mqtt.retry_no_multiplier (R-MQTT.10, R-MQTT.33)."""
    async def main() -> None:
        for fault, delays in (("mqtt.retry_immediately", [0.0, 0.0, 0.0]),
                              ("mqtt.retry_no_multiplier", [0.1, 0.1, 0.1])):
            async with faulty(fault, scenario=MQTTScenario(refuse_next_connections=3)) as r:
                await r.agent.start()
                await r.sink.next("mqtt_connect")
                waits = r.atl.filter("mqtt.retry")
                assert [w.decoded["delay"] for w in waits] == delays
                assert [w.decoded["bounds"] for w in waits] == [[d, d] for d in delays]
    asyncio.run(main())


def test_ignore_server_keep_alive_fault() -> None:
    """MQTT 5.0 §3.2.2.3.14 (TP-469 11.7): the fault keeps pinging at KeepAliveTime."""
    scenario = MQTTScenario(server_keep_alive=1, keep_alive_tolerance=5)

    async def main() -> None:
        async with faulty("mqtt.ignore_server_keep_alive", scenario=scenario,
                          keep_alive_time=60) as r:
            await r.agent.start()
            await r.sink.next("mqtt_connect")
            with pytest.raises(TimeoutError):
                await r.tl.expect("mqtt.PINGREQ", within=1.5, direction="in")
    asyncio.run(main())


def test_subscribe_faults() -> None:
    """mqtt.ignore_subscribe_topic and mqtt.response_information_not_subscribed
    (R-MQTT.15, TP-469 11.8)."""
    scenario = MQTTScenario(subscribe_topics=("usp/sub-topic",), response_information="usp/ri")

    async def main() -> None:
        async with faulty("mqtt.ignore_subscribe_topic",
                          "mqtt.response_information_not_subscribed", scenario=scenario,
                          subscriptions=(MQTTSubscription("usp/cfg/#"),)) as r:
            await r.agent.start()
            await r.sink.next("mqtt_connect")
            subscribe = (await r.tl.expect("mqtt.SUBSCRIBE", within=STEP)).decoded
            assert [s["topic_filter"] for s in subscribe["subscriptions"]] == ["usp/cfg/#"]
            assert r.agent.reply_topic == "usp/ri"
    asyncio.run(main())


def test_stay_without_subscribe_topic_fault() -> None:
    """mqtt.stay_without_subscribe_topic (R-MQTT.16, TP-469 11.10): no DISCONNECT."""
    async def main() -> None:
        async with faulty("mqtt.stay_without_subscribe_topic",
                          scenario=MQTTScenario(subscribe_topics=(), response_information=None),
                          response_topic_configured="usp/agent/rtc") as r:
            await r.agent.start()
            await r.sink.next("mqtt_connect")
            assert r.agent.connected and not r.agent.disabled
            assert r.tl.filter("mqtt.DISCONNECT") == []
    asyncio.run(main())


def test_ignore_suback_failure_fault() -> None:
    """mqtt.ignore_suback_failure (R-MQTT.17, TP-469 11.11): stays and publishes."""
    async def main() -> None:
        async with faulty("mqtt.ignore_suback_failure",
                          scenario=MQTTScenario(suback_reason_code=0x80)) as r:
            await r.agent.start()
            await r.sink.next("mqtt_connect")
            assert r.tl.filter("mqtt.DISCONNECT") == [] and r.tl.filter("mqtt.PUBLISH")
    asyncio.run(main())


def test_subscription_table_faults() -> None:
    """mqtt.ignore_new_subscriptions (R-MQTT.15) / mqtt.no_unsubscribe (R-MQTT.34)."""
    async def main() -> None:
        async with faulty("mqtt.ignore_new_subscriptions", "mqtt.no_unsubscribe",
                          subscriptions=(MQTTSubscription("old/#"),)) as r:
            await r.agent.start()
            await r.sink.next("mqtt_connect")
            r.agent.set_subscriptions((MQTTSubscription("new/#"),))
            await r.broker.publish("none", b"")   # a round trip through the broker
            await asyncio.sleep(0.2)
            assert len(r.tl.filter("mqtt.SUBSCRIBE")) == 1
            assert r.tl.filter("mqtt.UNSUBSCRIBE") == []
            assert r.agent.config.subscriptions == (MQTTSubscription("new/#"),)
    asyncio.run(main())


@pytest.mark.parametrize("version", ["5.0", "3.1.1"])
def test_publish_faults(version: str) -> None:
    """mqtt.no_reply_to (R-MQTT.22..24), mqtt.ignore_reply_to (R-MQTT.25/26),
    mqtt.connect_record_wrong_topic / _wrong_version (R-MTP.6, TP-469 11.12/11.14/11.17)."""
    async def main() -> None:
        async with faulty("mqtt.no_reply_to", "mqtt.ignore_reply_to",
                          "mqtt.connect_record_wrong_topic", "mqtt.connect_record_wrong_version",
                          version=version, **_v311_topics(version)) as r:
            await r.agent.start()
            inbound, rec = await r.sink.next("mqtt_connect")
            assert rec.mqtt_connect.subscribed_topic == CTRL_TOPIC
            assert rec.mqtt_connect.version == (MQTTConnectRecord.V3_1_1 if version == "5.0"
                                                else MQTTConnectRecord.V5)
            assert inbound.reply_to is None and inbound.meta["topic"] == CTRL_TOPIC
            r.binding.set_agent_topic(AGENT, r.agent.reply_topic)
            await r.binding.send(get_record(), to_id=AGENT)
            await r.sink.next("no_session_context")
            assert r.echo.routes[-1].reply_to is None   # answered on the configured topic
    asyncio.run(main())


def test_content_and_qos_faults() -> None:
    """mqtt.usp_msg_content_type_only (R-MQTT.27a, TP-469 11.15) and mqtt.drop_qos0
    (R-MQTT.20, TP-469 11.13): the PUBLISHes are dropped, usp.msg at QoS 1 is not."""
    async def main() -> None:
        async with faulty("mqtt.usp_msg_content_type_only", "mqtt.drop_qos0") as r:
            await r.agent.start()
            await r.sink.next("mqtt_connect")
            r.binding.content_type = "application/vnd.bbf.usp.msg"
            await r.binding.send(get_record(msg_id="a"), to_id=AGENT)
            await r.atl.expect("mqtt.dropped", within=STEP)
            r.binding.content_type = "usp.msg"
            r.binding.qos = 0
            await r.binding.send(get_record(msg_id="b"), to_id=AGENT)
            r.binding.qos = 1
            await r.binding.send(get_record(msg_id="c"), to_id=AGENT)
            answer, _ = await r.sink.next("no_session_context")
            assert [route.reply_to for route in r.echo.routes] == [CTRL_TOPIC]
            assert answer.data == get_record(msg_id="c")
    asyncio.run(main())


def test_tls_disabled_fault() -> None:
    """mqtt.tls_disabled (R-MQTT.48, TP-469 11.3): the agent talks in the clear to a TLS
    server, whose handshake then fails."""
    async def main() -> None:
        async with faulty("mqtt.tls_disabled", tls=True) as r:
            await r.agent.start()
            await r.tl.expect("tls.handshake_failed", within=STEP, direction="in")
            assert not r.agent.connected
    asyncio.run(main())
