"""Debian's mosquitto_pub / mosquitto_sub (libmosquitto, the MQTT library of widely
deployed USP Agents) through the suite's MQTT broker, MQTT 3.1.1 and 5.0.

Each program is started with asyncio's subprocess API, waited for with a
timeout, and killed by its own process object if it overruns.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from conformance.mtp import pki
from conformance.mtp.binding import InboundRecord
from conformance.mtp.mqtt.broker import MQTTBroker, MQTTScenario
from conformance.mtp.timeline import Timeline
from conformance.usp import messages, records
from tests.support.tools import APT_HINT, require_tool

AGENT = "os::012345-MOSQ"
AGENT_TOPIC = f"usp/agent/{AGENT}"
CTRL = "proto::controller-1"
CTRL_TOPIC = "usp/controller"
CREDS = {"agent": "secret"}
STEP = 10.0
VERSIONS = ["mqttv311", "mqttv5"]


def tool(name: str) -> str:
    return require_tool(f"/usr/bin/{name}", APT_HINT)


def common_args(broker: MQTTBroker, version: str, client_id: str = AGENT,
                creds: bool = True) -> list[str]:
    args = ["-h", "127.0.0.1", "-p", str(broker.port), "-V", version, "-i", client_id]
    if creds:
        args += ["-u", "agent", "-P", "secret"]
    return args


@contextlib.asynccontextmanager
async def started(argv: Sequence[str]) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run a program; make sure it is gone (killed by PID if need be) afterwards."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await asyncio.wait_for(proc.wait(), STEP)


async def finished(proc: asyncio.subprocess.Process) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(proc.communicate(), STEP)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def run(argv: Sequence[str]) -> tuple[int, str, str]:
    async with started(argv) as proc:
        return await finished(proc)


@contextlib.asynccontextmanager
async def running(tl: Timeline, **kwargs: Any) -> AsyncIterator[MQTTBroker]:
    broker = await MQTTBroker(tl, credentials=CREDS, **kwargs).start()
    try:
        yield broker
    finally:
        await broker.close()


def record_file(tmp_path: Path) -> tuple[Path, bytes]:
    msg = messages.request("get", {"param_paths": ["Device.DeviceInfo."]}, msg_id="7")
    data = records.serialize(records.no_session_record(msg, to_id=CTRL, from_id=AGENT))
    path = tmp_path / "record.bin"
    path.write_bytes(data)
    return path, data


def assert_clean(tl: Timeline) -> None:
    bad = tl.filter("conn.handler_error") + tl.filter("mqtt.violation") \
        + tl.filter("mqtt.decode_error")
    assert not bad, [e.brief() for e in bad]


@pytest.mark.parametrize("version", VERSIONS)
def test_mosquitto_sub_receives_what_the_controller_sends(version):
    """R-MQTT.23/24/27: mosquitto_sub -C 1 gets the binding's PUBLISH with the reply-to
    topic as Response Topic (5.0) or at the end of the Topic Name (3.1.1)."""
    sub = tool("mosquitto_sub")

    async def main():
        tl = Timeline()
        async with running(tl) as broker:
            binding = broker.attach_controller(CTRL, CTRL_TOPIC)
            v5 = version == "mqttv5"
            topic_filter = AGENT_TOPIC if v5 else AGENT_TOPIC + "/#"
            argv = [sub, *common_args(broker, version), "-t", topic_filter, "-q", "1",
                    "-C", "1", "-W", str(int(STEP)), "-F", "%t|%q|%C|%R|%p"]
            async with started(argv) as proc:
                client, _ = await broker.wait_for_subscription(topic_filter, STEP)
                assert client.client_id == AGENT and client.version == (5 if v5 else 4)
                await binding.send(b"usp-record-bytes", to_id=AGENT)
                rc, out, err = await finished(proc)
            assert rc == 0, err
            if v5:
                assert out.strip() == f"{AGENT_TOPIC}|1|usp.msg|{CTRL_TOPIC}|usp-record-bytes"
            else:
                assert out.strip() == (f"{AGENT_TOPIC}/reply-to=usp%2Fcontroller|1|||"
                                       "usp-record-bytes")
            connect = tl.filter("mqtt.CONNECT", direction="in")[0].decoded
            assert connect["protocol_level"] == (5 if v5 else 4)
            assert connect["client_id"] == AGENT and connect["username"] == "agent"
            await tl.expect("mqtt.PUBACK", within=STEP, direction="in")
            await tl.expect("mqtt.DISCONNECT", within=STEP, direction="in")
        assert_clean(tl)
    asyncio.run(main())


@pytest.mark.parametrize("version", VERSIONS)
def test_mosquitto_pub_record_reaches_the_controller(version, tmp_path):
    """R-MQTT.13/22..27: a Record from mosquitto_pub reaches the controller sink with
    the agent's reply-to topic, which the broker then uses to answer."""
    pub = tool("mosquitto_pub")
    path, data = record_file(tmp_path)

    async def main():
        tl = Timeline()
        async with running(tl) as broker:
            binding = broker.attach_controller(CTRL, CTRL_TOPIC)
            inbound: list[InboundRecord] = []
            binding.set_sink(inbound.append)
            if version == "mqttv5":
                extra = ["-t", CTRL_TOPIC, "-D", "publish", "response-topic", AGENT_TOPIC,
                         "-D", "publish", "content-type", "usp.msg",
                         "-D", "publish", "user-property", "k", "v",
                         "-D", "connect", "user-property", "usp-endpoint-id", AGENT]
            else:
                extra = ["-t", f"{CTRL_TOPIC}/reply-to={AGENT_TOPIC.replace('/', '%2F')}"]
            rc, _, err = await run([pub, *common_args(broker, version, "mosq-pub"), *extra,
                                    "-q", "1", "-f", str(path)])
            assert rc == 0, err
            assert len(inbound) == 1
            rec = inbound[0]
            assert rec.data == data and rec.reply_to == AGENT_TOPIC
            if version == "mqttv5":
                assert rec.meta["content_type"] == "usp.msg"
                assert rec.meta["properties"]["user_properties"] == [["k", "v"]]
                assert rec.meta["endpoint_id"] == AGENT
            assert broker.agent_topic(AGENT) == AGENT_TOPIC    # learned from the Record
            assert tl.filter("mqtt.PUBACK", direction="out")[0].decoded["reason_code"] == 0
        assert_clean(tl)
    asyncio.run(main())


def test_mosquitto_pub_to_mosquitto_sub_qos2_and_retained():
    """R-MQTT.46: QoS 2 and a retained message between two libmosquitto clients."""
    pub, sub = tool("mosquitto_pub"), tool("mosquitto_sub")

    async def main():
        tl = Timeline()
        async with running(tl) as broker:
            rc, _, err = await run([pub, *common_args(broker, "mqttv5", "retainer"),
                                    "-t", "lab/retained", "-m", "kept", "-r", "-q", "2"])
            assert rc == 0, err
            assert set(broker.retained) == {"lab/retained"}
            rc, out, err = await run([sub, *common_args(broker, "mqttv311", "late"),
                                      "-t", "lab/#", "-C", "1", "-W", str(int(STEP)), "-v"])
            assert rc == 0 and out.strip() == "lab/retained kept", err
            argv = [sub, *common_args(broker, "mqttv311", "listener"), "-t", "live/+",
                    "-q", "2", "-C", "1", "-W", str(int(STEP)), "-F", "%t %q %r %p"]
            async with started(argv) as proc:
                await broker.wait_for_subscription("live/+", STEP)
                rc, _, err = await run([pub, *common_args(broker, "mqttv5", "talker"),
                                        "-t", "live/now", "-m", "hello", "-q", "2"])
                assert rc == 0, err
                rc, out, err = await finished(proc)
            assert rc == 0 and out.strip() == "live/now 2 0 hello", err
            for kind in ("PUBREC", "PUBREL", "PUBCOMP"):
                assert tl.filter(f"mqtt.{kind}", direction="in")
                assert tl.filter(f"mqtt.{kind}", direction="out")
        assert_clean(tl)
    asyncio.run(main())


def test_mosquitto_sub_over_mutual_tls(tmp_path):
    """R-MQTT.43, R-MQTT.48, TP-469 11.3: libmosquitto with a client certificate and
    no User Name; the agent is found by its certificate's Endpoint ID."""
    sub = tool("mosquitto_sub")
    ca = pki.make_ca("mqtt interop CA")
    server = pki.issue(ca, endpoint_id=CTRL, ips=["127.0.0.1"])
    agent = pki.issue(ca, endpoint_id=AGENT)
    files = pki.write_pem(tmp_path, "agent", agent)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(agent.chain_pem())

    async def main():
        tl = Timeline()
        sctx = pki.ssl_context("server", server, trust=[ca])
        async with running(tl, ssl_context=sctx) as broker:
            binding = broker.attach_controller(CTRL, CTRL_TOPIC)
            argv = [sub, *common_args(broker, "mqttv5", "tls-sub", creds=False),
                    "--cafile", str(ca_file), "--cert", str(files.cert),
                    "--key", str(files.key), "--insecure",
                    "-t", AGENT_TOPIC, "-q", "1", "-C", "1", "-W", str(int(STEP))]
            async with started(argv) as proc:
                client, _ = await broker.wait_for_subscription(AGENT_TOPIC, STEP)
                assert client.tls and client.peer_endpoint_ids == [AGENT]
                assert broker.find_agent(AGENT) is client
                await binding.send(b"secret-record", to_id=AGENT)
                rc, out, err = await finished(proc)
            assert rc == 0 and out.strip() == "secret-record", err
            assert tl.filter("tls.handshake_done", direction="in")
        assert_clean(tl)
    asyncio.run(main())


def test_mosquitto_sees_scenario_refusals():
    """TP-469 11.6 / 11.11 from libmosquitto's side: CONNACK refusal and SUBACK failure."""
    pub, sub = tool("mosquitto_pub"), tool("mosquitto_sub")

    async def main():
        tl = Timeline()
        async with running(tl, scenario=MQTTScenario(connack_reason_code=0x87)) as broker:
            rc, _, err = await run([pub, *common_args(broker, "mqttv5", "refused"),
                                    "-t", "x", "-m", "y"])
            assert rc != 0 and "not authorized" in err.lower(), err
            rc, _, err = await run([pub, *common_args(broker, "mqttv311", "refused-3"),
                                    "-t", "x", "-m", "y"])
            assert rc != 0 and "not authori" in err.lower(), err
            assert [e.decoded["reason_code"] for e in tl.filter("mqtt.CONNACK")] == [0x87, 5]
            broker.set_scenario(connack_reason_code=None, suback_reason_code=0x80)
            rc, _, err = await run([sub, *common_args(broker, "mqttv5", "denied"),
                                    "-t", AGENT_TOPIC, "-C", "1", "-W", str(int(STEP))])
            assert "all subscription requests were denied" in err.lower(), err   # then exits
            assert tl.filter("mqtt.SUBACK")[0].decoded["reason_codes"] == [0x80]
        assert not tl.filter("conn.handler_error")
    asyncio.run(main())
