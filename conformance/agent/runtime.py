"""The running reference Agent: data model, core, notifications and MTPs wired up.

:class:`AgentRuntime` is what ``usp-conformance agent --config FILE`` runs,
and what tests run in-process. On start it loads the persisted data model
(or builds the factory default on a first boot or after FactoryReset()),
applies the run configuration's values, starts every enabled MTP from the
data model, and sends ``Device.Boot!`` to its subscribers. Records from the
MTPs go through :class:`~conformance.agent.core.AgentCore`; answers go back
on the route they came from; Notify messages go to each controller over its
first connected MTP.

It implements the :class:`~conformance.agent.context.Services` the handlers
use: ``run_async`` (async commands), ``reboot`` and ``factory_reset``. A
reboot persists everything, writes a boot marker (cause, command key) for the
next start, sends DisconnectRecords (R-MTP.7), closes the MTPs and ends
:meth:`AgentRuntime.run` with ``"reboot"``; the process runner then starts a
fresh process (the CLI re-executes itself), so nothing survives that is not
on disk, as on a real device.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from conformance.agent import commands, permissions
from conformance.agent.commands import firmware
from conformance.agent.config import (
    AgentConfig,
    apply_factory_defaults,
    load_factory_defaults,
    set_value,
)
from conformance.agent.context import AgentState
from conformance.agent.core import AgentCore, CoreEvent
from conformance.agent.datamodel import load_definitions
from conformance.agent.datamodel.store import Store
from conformance.agent.faults import FaultSet
from conformance.agent.mtp.base import AgentMTP, MTPNotConnected, NoRoute, Route
from conformance.agent.mtp.from_model import TLSMaterial, build_mtps
from conformance.agent.notify import NotificationEngine
from conformance.mtp.timeline import Timeline
from conformance.usp import records
from conformance.usp.schema import Msg

if TYPE_CHECKING:
    from conformance.agent.e2e_security import E2EMaterial

_log = logging.getLogger(__name__)

BOOT_MARKER = "boot.json"
#: Boot! Cause values (TR-181 Device.Boot!).
FIRST_BOOT = "LocalFactoryReset"
LOCAL_REBOOT = "LocalReboot"


class AgentRuntime:
    """One life of the reference Agent (from boot to stop or reboot)."""

    def __init__(self, config: AgentConfig, *, tls: TLSMaterial | None = None,
                 timeline: Timeline | None = None, rng: random.Random | None = None,
                 e2e: E2EMaterial | None = None) -> None:
        self.config = config
        self.tls = tls or TLSMaterial()
        #: E2E credential and trust anchors (TP-469 Feature 23); None: PLAINTEXT only
        self.e2e = e2e
        self.timeline = timeline if timeline is not None else Timeline()
        self.rng = rng or random.Random()
        self.state: AgentState | None = None
        self.core: AgentCore | None = None
        self.engine: NotificationEngine | None = None
        self.mtps: list[AgentMTP] = []
        self.boot_cause = ""
        self._started_at = time.monotonic()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._done: asyncio.Future[str] | None = None
        self._dirty = False
        self._outbox: dict[str, list[bytes]] = {}

    # --- life cycle --------------------------------------------------------------------

    async def start(self) -> AgentRuntime:
        """Boot: load or build the data model, start MTPs, send Boot!."""
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        dm = load_definitions()
        store = Store(dm, path=self.config.state_file)
        marker = self._take_boot_marker()
        fresh = marker.get("factory_reset", False) or not store.load()
        if fresh:
            self._build_factory(store)
            cause = marker.get("cause", FIRST_BOOT) if marker else FIRST_BOOT
        else:
            cause = marker.get("cause", LOCAL_REBOOT)
        for param, value in self.config.extra_values.items():
            set_value(store, param, value, where="agent configuration 'values'")
        store.provide("Device.DeviceInfo.UpTime", self._uptime)
        store.provide("Device.LocalAgent.UpTime", self._uptime)
        self.boot_cause = cause
        state = AgentState(endpoint_id=store.get("Device.LocalAgent.EndpointID"), dm=dm,
                           store=store, faults=FaultSet(self.config.faults), services=self)
        self.state = state
        trust = permissions.access_for(state)
        self.engine = NotificationEngine(state, send=self._send_notify, rng=self.rng,
                                         access_for=trust)
        state.notifications = self.engine
        self.core = AgentCore(state, access_for=trust, on_event=self._on_core_event)
        if self.e2e is not None:  # Record integrity and TLS12 payload security (Feature 23)
            from conformance.agent.e2e_security import E2ESecurity

            self.core.e2e = E2ESecurity(state, self.e2e, rng=self.rng)
        self.engine.attach()
        store.listen(self._on_change)
        firmware_updated = firmware.boot_firmware(state)
        commands.resume_requests(state)
        store.save()
        self.mtps = build_mtps(store, state.endpoint_id, tls=self.tls, timeline=self.timeline,
                               rng=self.rng)
        for mtp in self.mtps:
            mtp.faults = state.faults
            mtp.on_record = lambda data, route, m=mtp: self._on_record(m, data, route)
            mtp.on_connected = self._on_connected
            await mtp.start()
        # Boot! once a controller can hear it (the engine queues until then).
        self.engine.boot(cause, marker.get("command_key", ""), firmware_updated)
        self._spawn(self._timers(), name="agent timers")
        _log.info("reference agent %s up (boot cause %s)", state.endpoint_id, cause)
        return self

    @property
    def stopped(self) -> bool:
        """Whether this life of the agent has ended (stopped or rebooting)."""
        return self._done is not None and self._done.done()

    async def run(self) -> str:
        """Wait until the agent stops: ``"stop"`` or ``"reboot"``."""
        assert self._done is not None, "start() first"
        return await self._done

    async def stop(self, reason: str = "stop") -> None:
        """Send DisconnectRecords, close MTPs, persist, end :meth:`run` (idempotent)."""
        if self._done is None or self._done.done():
            return
        state = self.state
        assert state is not None
        for mtp in self.mtps:
            byes = [records.serialize(records.disconnect_record(
                to_id=cid, from_id=state.endpoint_id, reason=reason, reason_code=0))
                for cid in mtp.controllers]
            with contextlib.suppress(Exception):
                await asyncio.wait_for(mtp.stop(byes or None), 10.0)
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        if self.engine is not None:
            self.engine.detach()
        state.store.save()
        if self.config.timeline is not None:
            self.timeline.write_jsonl(self.config.timeline)
        if not self._done.done():
            self._done.set_result(reason)

    # --- factory defaults and boot marker ------------------------------------------------

    def _build_factory(self, store: Store) -> None:
        doc, where = load_factory_defaults(self.config.factory_defaults)
        store.load_json({"format": 1, "objects": {}, "next_instance": {}})
        apply_factory_defaults(store, doc, where=where)
        with store.quiet():
            roles = permissions.install_default_roles(store)
            for ctrl in store.instances("Device.LocalAgent.Controller."):
                if not store.get(ctrl + "AssignedRole"):
                    store.set(ctrl + "AssignedRole", permissions.ref_value(roles.full_access))

    def _marker_path(self) -> Path:
        return self.config.state_dir / BOOT_MARKER

    def _take_boot_marker(self) -> dict[str, object]:
        path = self._marker_path()
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        path.unlink(missing_ok=True)
        return data if isinstance(data, dict) else {}

    def _write_boot_marker(self, **data: object) -> None:
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        self._marker_path().write_text(json.dumps(data))

    # --- Services ----------------------------------------------------------------------

    def run_async(self, job: Callable[[], Awaitable[None]], *, name: str) -> None:
        async def guarded() -> None:
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:  # a failed job must not kill the agent
                _log.exception("agent job %s failed", name)
            finally:
                self._after_activity()

        self._spawn(guarded(), name=name)

    def reboot(self, cause: str, command_key: str) -> None:
        self._write_boot_marker(cause=cause, command_key=command_key)
        self._spawn(self.stop("reboot"), name="reboot")

    def factory_reset(self, command_key: str) -> None:
        self._write_boot_marker(cause="RemoteFactoryReset", command_key=command_key,
                                factory_reset=True)
        self._spawn(self.stop("reboot"), name="factory reset")

    # --- traffic -------------------------------------------------------------------------

    def _on_record(self, mtp: AgentMTP, data: bytes, route: Route) -> None:
        assert self.core is not None and self.state is not None
        self._admit(data)
        replies = self.core.handle_record(data, now=time.monotonic())
        for rec in replies:
            self._spawn(self._send_on(mtp, records.serialize(rec), rec.to_id, route.reply_to),
                        name="reply")
        self._after_activity()

    def _admit(self, data: bytes) -> None:
        """A controller the agent has never seen gets the Untrusted role (R-SEC.6, TP-469 2.9).

        A Record claiming to come from the agent's own Endpoint ID is no controller's
        (TP-469 2.1): it is never recorded."""
        assert self.state is not None
        try:
            rec = records.parse_record(data)
        except records.RecordDecodeError:
            return
        if (rec.to_id == self.state.endpoint_id and rec.from_id
                and rec.from_id != self.state.endpoint_id
                and permissions.find_controller(self.state.store, rec.from_id) is None):
            permissions.assign_untrusted(self.state.store, rec.from_id, faults=self.state.faults)

    async def _send_on(self, mtp: AgentMTP, data: bytes, to_id: str,
                       reply_to: str | None) -> None:
        try:
            await mtp.send(data, to_id=to_id, reply_to=reply_to)
        except (MTPNotConnected, NoRoute, ConnectionError) as exc:
            _log.warning("answer to %s lost: %s", to_id, exc)

    def _send_notify(self, controller_id: str, msg: Msg) -> None:
        """The engine's sender: over the first connected MTP that serves the controller;
        held until one connects when none does (e.g. Boot! right after start). The Notify
        travels in the controller's E2E session context when its E2ESession settings call
        for one (conformance/agent/sessions.py), else in a no_session_context Record."""
        assert self.core is not None
        recs = self.core.outgoing(controller_id, msg, now=time.monotonic())
        self._spawn(self._deliver_all(controller_id, [records.serialize(r) for r in recs]),
                    name="notify")
        self._wake.set()  # a session this started may have timers to run

    async def _deliver_all(self, controller_id: str, data: list[bytes]) -> None:
        """Several Records to one controller, in order (session Records, SAR segments)."""
        for item in data:
            await self._deliver(controller_id, item)

    def _serving(self, controller_id: str) -> list[AgentMTP]:
        mine = [m for m in self.mtps if m.connected and controller_id in m.controllers]
        return mine + [m for m in self.mtps if m.connected and m not in mine]

    async def _deliver(self, controller_id: str, data: bytes) -> None:
        for mtp in self._serving(controller_id):
            try:
                await mtp.send(data, to_id=controller_id)
                return
            except (MTPNotConnected, NoRoute, ConnectionError):
                continue
        self._outbox.setdefault(controller_id, []).append(data)

    def _on_connected(self, mtp: AgentMTP) -> None:
        """An MTP is up (its connect Records are out): deliver what was held for it."""
        for controller_id in [c for c in self._outbox if c in mtp.controllers]:
            for data in self._outbox.pop(controller_id):
                self._spawn(self._deliver(controller_id, data), name="held notify")
        self._wake.set()

    def _on_core_event(self, event: CoreEvent) -> None:
        if event.kind == "response" and event.detail == "notify_resp" and event.msg is not None \
                and self.engine is not None:
            self.engine.notify_resp(event.controller_id, event.msg.header.msg_id,
                                    event.msg.body.response.notify_resp.subscription_id)
        elif event.kind != "response":
            _log.debug("core: %s %s %s", event.kind, event.controller_id, event.detail)

    def _on_change(self, _change: object) -> None:
        self._dirty = True

    def _after_activity(self) -> None:
        """Deliver queued notifications and persist changes (after answers went out)."""
        self._wake.set()

    # --- timers ----------------------------------------------------------------------------

    async def _timers(self) -> None:
        """Notification retries/TTL/periodic events, session timers, flushing and saving."""
        assert self.engine is not None and self.core is not None and self.state is not None
        while True:
            now = time.monotonic()
            self.engine.poll(now)
            self.engine.flush(now)
            for cid, recs in self.core.session_poll(now).items():
                for rec in recs:
                    await self._deliver(cid, records.serialize(rec))
            if self._dirty:
                self._dirty = False
                self.state.store.save()
            deadlines = [d for d in (self.engine.next_deadline(), self.core.session_deadline())
                         if d is not None]
            deadline = min(deadlines) if deadlines else None
            wait = 1.0 if deadline is None else min(1.0, max(0.0, deadline - time.monotonic()))
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    def _spawn(self, coro: Awaitable[None], *, name: str) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)  # type: ignore[arg-type]
        task.add_done_callback(self._tasks.discard)  # type: ignore[arg-type]

    def _uptime(self, _owner: str) -> str:
        return str(int(time.monotonic() - self._started_at))


def tls_material(certificate: Path | None, private_key: Path | None,
                 trust: Path | None, *, absolute_time: bool = True) -> TLSMaterial:
    """Agent TLS contexts from PEM files (None entries: TLS unavailable); without
    ``absolute_time`` the peers' validity dates are ignored (R-MTP.2).
    See :mod:`conformance.agent.mtp.tls` for what the Agent checks."""
    if certificate is None or private_key is None:
        return TLSMaterial()
    from conformance.agent.mtp import tls as agent_tls
    from conformance.mtp import pki

    cred = pki.load_credential(certificate, private_key)
    anchors = pki.load_certs(trust.read_bytes()) if trust is not None else []
    return agent_tls.material(cred, anchors, absolute_time=absolute_time)
