"""Benchmark: the reference Controller's Get round trip over each MTP, and the
MQTT broker's throughput with N concurrent agents.

Each MTP runs the suite's own server/broker on loopback with a minimal echo
agent (tests/support/echo.py) on the other side, driven by the suite's
clients or our codecs (no threads on the hot path). Results are printed and
written as JSON; nothing is asserted (speed is measured, not tested).

    python benchmarks/bench_mtp.py [--iterations 500] [--agents 1,10,50]
                                   [--messages 200] [--out benchmarks/results/mtp.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from conformance.controller.controller import Controller  # noqa: E402
from conformance.mtp import mqtt as mq  # noqa: E402
from conformance.mtp.mqtt.broker import MQTTBroker  # noqa: E402
from conformance.mtp.stomp import Frame, StompDecoder, encode_frame  # noqa: E402
from conformance.mtp.stomp.broker import STOMPBroker  # noqa: E402
from conformance.mtp.transport import open_connection  # noqa: E402
from conformance.mtp.uds.server import UDSClient, UDSServer  # noqa: E402
from conformance.mtp.websocket.client import WSClient  # noqa: E402
from conformance.mtp.websocket.server import WSServer  # noqa: E402
from conformance.usp import messages, records  # noqa: E402
from tests.support.echo import AGENT_ID, answer  # noqa: E402

CTRL = "proto::controller-bench"
STEP = 10.0
USP_CT = "application/vnd.bbf.usp.msg"


# --- measuring ---------------------------------------------------------------


async def measure_rtt(ctrl: Controller, iterations: int, warmup: int = 20) -> dict[str, float]:
    get = {"param_paths": ["Device.DeviceInfo."]}
    for _ in range(warmup):
        await ctrl.request(messages.request("get", get), timeout=STEP)
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        await ctrl.request(messages.request("get", get), timeout=STEP)
        samples.append((time.perf_counter() - start) * 1000)
        ctrl.received.clear()  # keep the history small: waits scan it
    samples.sort()
    return {
        "iterations": iterations,
        "min_ms": round(samples[0], 4),
        "median_ms": round(statistics.median(samples), 4),
        "mean_ms": round(statistics.fmean(samples), 4),
        "p95_ms": round(samples[int(0.95 * (len(samples) - 1))], 4),
        "p99_ms": round(samples[int(0.99 * (len(samples) - 1))], 4),
        "max_ms": round(samples[-1], 4),
    }


# --- one echo agent per MTP ---------------------------------------------------


async def rtt_stomp(iterations: int) -> dict[str, float]:
    async with await STOMPBroker().start() as broker:
        ctrl = Controller(CTRL)
        ctrl.attach(broker.attach_controller(CTRL, "/queue/ctrl"), agent_id=AGENT_ID)
        conn = await open_connection("stomp", "127.0.0.1", broker.port)
        await conn.write(encode_frame(Frame("STOMP", [("accept-version", "1.2"),
                                                       ("host", "127.0.0.1"),
                                                       ("endpoint-id", AGENT_ID)])))
        await conn.write(encode_frame(Frame("SUBSCRIBE", [("id", "1"),
                                                           ("destination", "/queue/agent")])))
        await broker.wait_for_agent(AGENT_ID, timeout=STEP)
        decoder = StompDecoder()

        async def agent() -> None:
            while data := await conn.reader.read(65536):
                for ev in decoder.feed(data):
                    if isinstance(ev, Frame) and ev.command == "MESSAGE":
                        reply = answer(ev.body)
                        if reply is not None:
                            await conn.write(encode_frame(Frame("SEND", [
                                ("destination", ev.header("reply-to-dest") or "/queue/ctrl"),
                                ("content-type", USP_CT), ("reply-to-dest", "/queue/agent")],
                                reply), content_length="auto"))

        task = asyncio.create_task(agent())
        try:
            return await measure_rtt(ctrl, iterations)
        finally:
            task.cancel()
            await conn.close()


async def rtt_websocket(iterations: int) -> dict[str, float]:
    async with await WSServer(CTRL).start() as server:
        ctrl = Controller(CTRL)
        ctrl.attach(server.binding, agent_id=AGENT_ID)
        client = WSClient("127.0.0.1", server.port, "/usp", eid=AGENT_ID)
        client.binding.set_sink(lambda inbound: _reply(client.binding, inbound.data, CTRL))
        await client.connect()
        await server.wait_for_agent(AGENT_ID, timeout=STEP)
        try:
            return await measure_rtt(ctrl, iterations)
        finally:
            await client.close()


async def rtt_uds(iterations: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "usp.sock")
        async with await UDSServer(path, CTRL).start() as server:
            ctrl = Controller(CTRL)
            ctrl.attach(server.binding, agent_id=AGENT_ID)
            async with UDSClient(path, AGENT_ID) as agent:
                agent.binding.set_sink(lambda inbound: _reply(agent.binding, inbound.data, CTRL))
                await agent.connect(timeout=STEP)
                await agent.wait_for_peer(CTRL, timeout=STEP)
                await server.wait_for_peer(AGENT_ID, timeout=STEP)
                return await measure_rtt(ctrl, iterations)


def _reply(binding, data: bytes, to_id: str) -> None:  # type: ignore[no-untyped-def]
    reply = answer(data)
    if reply is not None:
        asyncio.ensure_future(binding.send(reply, to_id=to_id))


class RawMQTTAgent:
    """An MQTT 5 echo agent built from our codec on a plain asyncio stream."""

    def __init__(self, port: int, agent_id: str, topic: str) -> None:
        self.port, self.agent_id, self.topic = port, agent_id, topic
        self.decoder = mq.MQTTDecoder(mq.ProtocolVersion.V5)
        self.conn = None
        self.task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def start(self) -> None:
        self.conn = await open_connection("mqtt", "127.0.0.1", self.port)
        await self.conn.write(mq.encode(mq.Connect(client_id=self.agent_id, keep_alive=60),
                                        mq.ProtocolVersion.V5))
        await self.conn.write(mq.encode(mq.Subscribe(packet_id=1, subscriptions=[
            mq.Subscription(self.topic, qos=0)]), mq.ProtocolVersion.V5))
        self.task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.ready.wait(), STEP)

    async def publish(self, topic: str, payload: bytes) -> None:
        props = mq.Properties()
        props.add(mq.PropertyId.RESPONSE_TOPIC, self.topic)
        props.add(mq.PropertyId.CONTENT_TYPE, "usp.msg")
        await self.conn.write(mq.encode(mq.Publish(topic=topic, payload=payload, qos=0,
                                                   properties=props), mq.ProtocolVersion.V5))

    async def _run(self) -> None:
        assert self.conn is not None
        while data := await self.conn.reader.read(65536):
            for packet in self.decoder.feed(data):
                if isinstance(packet, mq.Suback):
                    self.ready.set()
                elif isinstance(packet, mq.Publish):
                    reply = answer(packet.payload, agent_id=self.agent_id)
                    if reply is not None:
                        await self.publish(packet.properties.response_topic or "", reply)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.conn is not None:
            await self.conn.close()


async def rtt_mqtt(iterations: int) -> dict[str, float]:
    async with await MQTTBroker().start() as broker:
        ctrl = Controller(CTRL)
        binding = broker.attach_controller(CTRL, "/usp/ctrl")
        binding.set_agent_topic(AGENT_ID, "/usp/agent")
        ctrl.attach(binding, agent_id=AGENT_ID)
        agent = RawMQTTAgent(broker.port, AGENT_ID, "/usp/agent")
        await agent.start()
        try:
            return await measure_rtt(ctrl, iterations)
        finally:
            await agent.close()


async def mqtt_throughput(n_agents: int, per_agent: int) -> dict[str, float]:
    """N agents each publish ``per_agent`` Records to the controller topic at once."""
    async with await MQTTBroker().start() as broker:
        binding = broker.attach_controller(CTRL, "/usp/ctrl")
        total = n_agents * per_agent
        done = asyncio.Event()
        count = 0

        def sink(_inbound: object) -> None:
            nonlocal count
            count += 1
            if count == total:
                done.set()

        binding.set_sink(sink)
        agents = [RawMQTTAgent(broker.port, f"os::0000AA-{i}", f"/usp/agent/{i}")
                  for i in range(n_agents)]
        await asyncio.gather(*(a.start() for a in agents))
        payload = records.serialize(records.no_session_record(
            messages.request("get", {"param_paths": ["Device.DeviceInfo."]}, msg_id="t"),
            to_id=CTRL, from_id=AGENT_ID))
        start = time.perf_counter()
        await asyncio.gather(*(_burst(a, payload, per_agent) for a in agents))
        await asyncio.wait_for(done.wait(), 120)
        elapsed = time.perf_counter() - start
        await asyncio.gather(*(a.close() for a in agents))
        return {"agents": n_agents, "messages": total, "seconds": round(elapsed, 4),
                "messages_per_s": round(total / elapsed, 1)}


async def _burst(agent: RawMQTTAgent, payload: bytes, n: int) -> None:
    for _ in range(n):
        await agent.publish("/usp/ctrl", payload)


RTT: dict[str, Callable[[int], Awaitable[dict[str, float]]]] = {
    "mqtt": rtt_mqtt, "stomp": rtt_stomp, "websocket": rtt_websocket, "uds": rtt_uds,
}


async def run(args: argparse.Namespace) -> dict[str, object]:
    results: dict[str, object] = {
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count()},
        "get_round_trip": {},
        "mqtt_broker_throughput": [],
    }
    for name in args.mtp:
        results["get_round_trip"][name] = await RTT[name](args.iterations)  # type: ignore[index]
        print(f"{name:10s} Get RTT {results['get_round_trip'][name]}")  # type: ignore[index]
    for n in args.agents:
        row = await mqtt_throughput(n, args.messages)
        results["mqtt_broker_throughput"].append(row)  # type: ignore[union-attr]
        print(f"mqtt broker {row}")
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--mtp", type=lambda s: s.split(","), default=list(RTT))
    ap.add_argument("--agents", type=lambda s: [int(x) for x in s.split(",")], default=[1, 10, 50])
    ap.add_argument("--messages", type=int, default=200, help="Records per agent")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "mtp.json")
    args = ap.parse_args(argv)
    results = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
