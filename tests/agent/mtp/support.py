"""Helpers shared by the agent MTP tests: identities, TLS, a record sink, an echo core."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from conformance.agent.mtp.base import AgentMTP, Route
from conformance.mtp import pki
from conformance.mtp.binding import InboundRecord
from conformance.mtp.timeline import Entry, Timeline
from conformance.usp import messages, records
from conformance.usp.schema import Record

AGENT = "os::012345-AGENT"
CTRL = "proto::controller-1"
STEP = 5.0            # every await in the tests is bounded by this
SLACK = 0.3           # scheduling / connect overhead allowed on top of a back-off wait


def get_record(to_id: str = AGENT, from_id: str = CTRL, msg_id: str = "1") -> bytes:
    msg = messages.request("get", {"param_paths": ["Device.DeviceInfo."]}, msg_id=msg_id)
    return records.serialize(records.no_session_record(msg, to_id=to_id, from_id=from_id))


def disconnect_record(to_id: str = CTRL, from_id: str = AGENT) -> bytes:
    return records.serialize(records.disconnect_record(to_id=to_id, from_id=from_id,
                                                       reason="shutting down", reason_code=7003))


class Sink:
    """A binding sink: keeps every InboundRecord and lets tests await them."""

    def __init__(self) -> None:
        self.items: list[InboundRecord] = []
        self._queue: asyncio.Queue[InboundRecord] = asyncio.Queue()

    def __call__(self, record: InboundRecord) -> None:
        self.items.append(record)
        self._queue.put_nowait(record)

    async def next(self, kind: str | None = None, timeout: float = STEP
                   ) -> tuple[InboundRecord, Record]:
        """The next Record received (of ``kind`` when given; others are skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                item = await self._queue.get()
                rec = records.parse_record(item.data)
                if kind is None or records.record_kind(rec) == kind:
                    return item, rec


@dataclass
class Echo:
    """A stand-in for the agent core: answers every Record with its own bytes."""

    mtp: AgentMTP
    to_id: str = CTRL
    routes: list[Route] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.mtp.on_record = self

    def __call__(self, data: bytes, route: Route) -> None:
        self.routes.append(route)
        task = asyncio.get_running_loop().create_task(
            self.mtp.send(data, to_id=route.controller_hint or self.to_id,
                          reply_to=route.reply_to))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


@dataclass
class TLSPair:
    """Server and client contexts for mutual TLS between the suite and the agent."""

    server: ssl.SSLContext
    client: ssl.SSLContext


def mutual_tls(server_id: str = CTRL, client_id: str = AGENT) -> TLSPair:
    ca = pki.make_ca("agent-mtp test ca")
    server = pki.ssl_context("server", pki.issue(ca, endpoint_id=server_id, ips=["127.0.0.1"]),
                             trust=[ca], require_client_cert=True)
    client = pki.ssl_context("client", pki.issue(ca, endpoint_id=client_id), trust=[ca])
    return TLSPair(server, client)


def retries(timeline: Timeline, kind: str) -> list[Entry]:
    """The agent's recorded back-off waits (``<mtp>.retry`` entries)."""
    return timeline.filter(kind)


def check_gaps(attempts: list[float], waits: list[Entry],
               bounds: Callable[[int], tuple[float, float]]) -> None:
    """Each recorded wait lies in the policy's bounds for its retry number, and the
    server saw the next attempt that long after the previous one (plus overhead)."""
    assert len(attempts) >= len(waits) + 1, (attempts, [w.decoded for w in waits])
    for i, wait in enumerate(waits):
        decoded: dict[str, Any] = wait.decoded  # type: ignore[assignment]
        low, high = bounds(decoded["retry"])
        assert [round(low, 6), round(high, 6)] == decoded["bounds"]
        assert low - 1e-6 <= decoded["delay"] <= high + 1e-6
        gap = attempts[i + 1] - attempts[i]
        assert decoded["delay"] - 0.02 <= gap <= decoded["delay"] + SLACK, (i, gap, decoded)
