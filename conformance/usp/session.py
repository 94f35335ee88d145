"""E2E Session Context state machine for one pair of USP Endpoints (sans-I/O).

TR-369 "Exchange of USP Records within an E2E Session Context": one
:class:`SessionContext` holds everything a local Endpoint keeps about the
session it shares with one remote Endpoint (R-E2E.5): the session id, the
sequence ids in both directions, the outgoing buffer kept for retransmit
requests, the incoming buffer of out-of-order Records, and the segmentation
and reassembly (SAR) state. The reference Controller and the reference Agent
both drive it.

The machine never reads a clock, never sleeps and never touches a socket:

* :meth:`SessionContext.send` turns a serialized payload into Records;
* :meth:`SessionContext.receive` digests one Record from the peer and returns
  :class:`Event` objects (it never raises on hostile field values);
* :meth:`SessionContext.poll` does the time-driven work (expiry, session
  establishment retries, retransmit requests, acknowledgements) for the time
  the caller passes in; :meth:`SessionContext.next_deadline` says when to
  call it next.

Records the caller must transmit travel inside events (see
:func:`outgoing_records`). Randomness (session ids, retry jitter) comes from
a ``random.Random`` the caller supplies.

Disconnect Records (R-E2E.6a, R-E2E.6b), integrity checks (R-E2E.29 ff.)
and TLS payload protection belong to the caller; it reports their failures
through :meth:`SessionContext.restart`.

Behaviour the specification leaves open, decided here:

* Control fields (``expected_id``, ``retransmit_id``) of a Record that must
  wait in the incoming buffer are honoured on arrival; only payloads are
  held back for in-order delivery (R-E2E.20). Waiting would deadlock two
  Endpoints that each miss one Record of the other.
* When both Endpoints originate a session at once, the one still
  negotiating keeps the larger session id and ignores the smaller one, so
  that at most one session survives (R-E2E.5). A peer that later shows up
  on a session id we abandoned in such a collision, or keeps using a retired
  id for :attr:`SessionConfig.stale_session_timeout` while nothing arrives
  on ours, gets a fresh session (R-E2E.24). Over a reordering network such a
  race can still hand one payload over twice (never lose or reorder one);
  USP ``msg_id`` lets the application spot it.
* A restart caused by a failed Record announces the new session only after
  the R-E2E.10 retry wait, which slows down endless failure cycles.
* Records are sent again only when asked for (``retransmit_id``) unless
  :attr:`SessionConfig.resend_unacknowledged_after` is set, which makes
  :meth:`SessionContext.poll` repeat unacknowledged payload Records (the
  receiver drops the duplicates, R-E2E.25).
* A duplicate Record tells us the peer missed our acknowledgement, and a
  Record that starts a session deserves an answer; both make the machine owe
  an empty Record carrying ``expected_id``, sent by the next ``send`` or
  ``poll``.
"""

from __future__ import annotations

import random
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TypeAlias, cast

from conformance.usp import schema

__all__ = [
    "DEFAULT_SEQUENCE_ID_LIMIT",
    "MIN_MAX_RECORD_SIZE",
    "MIN_SESSION_ID",
    "SEQUENCE_ID_MARGIN",
    "STATUS_DOWN",
    "STATUS_NEGOTIATING",
    "STATUS_UP",
    "UINT64_MAX",
    "DuplicateIgnored",
    "Event",
    "MessageReceived",
    "OutOfOrderBuffered",
    "ProtocolViolation",
    "RetransmitRequested",
    "SegmentStored",
    "SessionConfig",
    "SessionContext",
    "SessionExpired",
    "SessionRestarted",
    "SessionStarted",
    "StaleRecordIgnored",
    "Transmit",
    "new_session_id",
    "outgoing_records",
    "retry_wait_interval",
    "retry_wait_range",
]

#: Largest value of the uint64 ``session_id`` / ``sequence_id`` fields.
UINT64_MAX = 2**64 - 1
#: R-E2E.8 / R-E2E.9: distance from the maximum at which a new session is due.
SEQUENCE_ID_MARGIN = 10_000
DEFAULT_SEQUENCE_ID_LIMIT = UINT64_MAX - SEQUENCE_ID_MARGIN
#: R-E2E.3: session ids are greater than 1.
MIN_SESSION_ID = 2
#: TR-181 E2ESession.MaxUSPRecordSize: smallest non-zero value.
MIN_MAX_RECORD_SIZE = 512

#: TR-181 E2ESession.Status values.
STATUS_UP = "Up"
STATUS_NEGOTIATING = "Negotiating"
STATUS_DOWN = "Down"

_SarState: TypeAlias = "schema.SessionContextRecord.PayloadSARState.ValueType"
_Security: TypeAlias = "schema.Record.PayloadSecurity.ValueType"
_NONE = schema.PayloadSARState.NONE
_BEGIN = schema.PayloadSARState.BEGIN
_INPROCESS = schema.PayloadSARState.INPROCESS
_COMPLETE = schema.PayloadSARState.COMPLETE
_SAR_STATES = frozenset(schema.PayloadSARState.values())
_SECURITIES = frozenset(schema.PayloadSecurity.values())


def _varint_len(value: int) -> int:
    """Bytes a protobuf varint needs for ``value`` (>= 0)."""
    return max(1, (value.bit_length() + 6) // 7)


def _copy(record: schema.Record) -> schema.Record:
    out = schema.Record()
    out.CopyFrom(record)
    return out


def _sar_name(value: int) -> str:
    try:
        return schema.PayloadSARState.Name(cast(_SarState, value))
    except ValueError:
        return f"UNKNOWN({value})"


# --- helpers callers use directly -------------------------------------------


def new_session_id(rng: random.Random, *, exclude: Iterable[int] = ()) -> int:
    """Draw a fresh session id in [2, 2**64-1] from ``rng`` (R-E2E.3).

    ``exclude`` lists ids already used with this remote Endpoint.
    """
    used = set(exclude)
    while True:
        candidate = rng.randint(MIN_SESSION_ID, UINT64_MAX)
        if candidate not in used:
            return candidate


def retry_wait_range(
    retry_count: int, *, minimum_wait: float = 5, multiplier: int = 2000
) -> tuple[float, float]:
    """Wait interval bounds before retry number ``retry_count`` (R-E2E.10).

    ``minimum_wait`` is SessionRetryMinimumWaitInterval (m) and ``multiplier``
    SessionRetryIntervalMultiplier (k, in thousandths). From the tenth retry
    on the range stays at its maximum (R-E2E.11).
    """
    if retry_count < 1:
        raise ValueError("retry_count starts at 1")
    step = min(retry_count, 10)
    factor = multiplier / 1000
    return minimum_wait * factor ** (step - 1), minimum_wait * factor**step


def retry_wait_interval(
    retry_count: int, rng: random.Random, *, minimum_wait: float = 5, multiplier: int = 2000
) -> float:
    """A random wait drawn from :func:`retry_wait_range` (R-E2E.10, R-E2E.11)."""
    low, high = retry_wait_range(retry_count, minimum_wait=minimum_wait, multiplier=multiplier)
    return rng.uniform(low, high)


# --- configuration -------------------------------------------------------------


@dataclass(frozen=True)
class SessionConfig:
    """Knobs of one Session Context; the TR-181 parameter each mirrors is named.

    ``max_record_size``: E2ESession.MaxUSPRecordSize (or the deprecated
    SegmentedPayloadChunkSize), the largest serialized Record we send; ``None``
    or 0 turns segmentation off. ``reserved_record_bytes`` is room kept free for
    fields a security layer adds afterwards (``mac_signature``, ``sender_cert``).
    ``session_expiration``: E2ESession.SessionExpiration in seconds, 0 = never.
    ``max_retransmit_tries``: E2ESession.MaxRetransmitTries (-1 = unlimited,
    0 = any retransmit request restarts the session; TR-181's default is 0,
    ours is 3). ``retry_minimum_wait_interval`` / ``retry_interval_multiplier``:
    E2ESession.SessionRetryMinimumWaitInterval / SessionRetryIntervalMultiplier.
    ``payload_security``: E2ESession.PayloadSecurity as the Record enum.

    Local policy: ``retransmit_request_after`` is how long a gap in the peer's
    sequence ids must persist before we ask for the missing Record (and the
    pause between repeated asks); ``resend_unacknowledged_after`` (``None`` =
    off) repeats unacknowledged payload Records; the ``max_*`` bounds keep
    hostile peers from exhausting memory; ``sequence_id_limit`` is the
    sequence id from which a new session is due (R-E2E.8, R-E2E.9; lowered in
    tests); ``retired_session_history`` is how many old session ids are
    remembered so that late Records of an old session are not mistaken for a
    new one; ``stale_session_timeout`` (``None`` = off) is how long the peer may
    keep using a retired session id, with nothing arriving on ours, before we
    announce a fresh session to it (R-E2E.24).
    """

    max_record_size: int | None = None
    reserved_record_bytes: int = 0
    session_expiration: float = 0.0
    max_retransmit_tries: int = 3
    retry_minimum_wait_interval: float = 5.0
    retry_interval_multiplier: int = 2000
    retransmit_request_after: float = 1.0
    resend_unacknowledged_after: float | None = None
    max_outgoing_records: int = 1024
    max_incoming_records: int = 1024
    max_reassembled_size: int = 16 * 1024 * 1024
    sequence_id_limit: int = DEFAULT_SEQUENCE_ID_LIMIT
    retired_session_history: int = 16
    stale_session_timeout: float | None = 30.0
    payload_security: _Security = schema.PayloadSecurity.PLAINTEXT
    version: str = schema.USP_VERSION

    def __post_init__(self) -> None:
        if self.max_record_size and self.max_record_size < MIN_MAX_RECORD_SIZE:
            raise ValueError(f"max_record_size must be 0 or >= {MIN_MAX_RECORD_SIZE}")
        if self.reserved_record_bytes < 0:
            raise ValueError("reserved_record_bytes must be >= 0")
        if self.session_expiration < 0:
            raise ValueError("session_expiration must be >= 0")
        if self.max_retransmit_tries < -1:
            raise ValueError("max_retransmit_tries must be >= -1")
        if self.retry_minimum_wait_interval <= 0:
            raise ValueError("retry_minimum_wait_interval must be > 0")
        if self.retry_interval_multiplier < 1000:
            raise ValueError("retry_interval_multiplier must be >= 1000")
        if self.retransmit_request_after < 0:
            raise ValueError("retransmit_request_after must be >= 0")
        for name in ("resend_unacknowledged_after", "stale_session_timeout"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0 or None")
        for name in ("max_outgoing_records", "max_incoming_records", "max_reassembled_size",
                     "retired_session_history"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not 1 <= self.sequence_id_limit <= UINT64_MAX:
            raise ValueError("sequence_id_limit must be a positive uint64")
        if self.payload_security not in _SECURITIES:
            raise ValueError(f"unknown payload_security {self.payload_security}")

    @property
    def segmentation_enabled(self) -> bool:
        return bool(self.max_record_size)

    @classmethod
    def from_e2e_session(
        cls, params: Mapping[str, object], **overrides: object
    ) -> SessionConfig:
        """Build a config from Device.LocalAgent.Controller.{i}.E2ESession.* values.

        ``params`` maps parameter names (``SessionExpiration``,
        ``SessionRetryMinimumWaitInterval``, ``SessionRetryIntervalMultiplier``,
        ``MaxUSPRecordSize``, ``SegmentedPayloadChunkSize``,
        ``MaxRetransmitTries``, ``PayloadSecurity``) to their values, as ints or
        data model strings; missing ones keep our defaults. MaxUSPRecordSize
        wins over its deprecated predecessor. Raises ``ValueError`` on values
        outside their TR-181 ranges.
        """
        kwargs: dict[str, object] = {}

        def number(name: str) -> int | None:
            if name not in params:
                return None
            value = params[name]
            try:
                return int(str(value).strip())
            except ValueError:
                raise ValueError(f"{name}: not a number: {value!r}") from None

        if (value := number("SessionExpiration")) is not None:
            kwargs["session_expiration"] = float(value)
        if (value := number("SessionRetryMinimumWaitInterval")) is not None:
            if not 1 <= value <= 65535:
                raise ValueError("SessionRetryMinimumWaitInterval outside 1..65535")
            kwargs["retry_minimum_wait_interval"] = float(value)
        if (value := number("SessionRetryIntervalMultiplier")) is not None:
            if not 1000 <= value <= 65535:
                raise ValueError("SessionRetryIntervalMultiplier outside 1000..65535")
            kwargs["retry_interval_multiplier"] = value
        size = number("MaxUSPRecordSize")
        if not size:
            size = number("SegmentedPayloadChunkSize")
        if size is not None:
            kwargs["max_record_size"] = size or None
        if (value := number("MaxRetransmitTries")) is not None:
            if not -1 <= value <= 10:
                raise ValueError("MaxRetransmitTries outside -1..10")
            kwargs["max_retransmit_tries"] = value
        if "PayloadSecurity" in params:
            name = str(params["PayloadSecurity"]).strip().upper()
            mapping = {"PLAINTEXT": schema.PayloadSecurity.PLAINTEXT,
                       "TLS": schema.PayloadSecurity.TLS12, "TLS12": schema.PayloadSecurity.TLS12}
            if name not in mapping:
                raise ValueError(f"PayloadSecurity: unknown value {params['PayloadSecurity']!r}")
            kwargs["payload_security"] = mapping[name]
        kwargs.update(overrides)
        return cls(**kwargs)  # type: ignore[arg-type]


# --- events --------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """Base class of everything :class:`SessionContext` reports."""


@dataclass(frozen=True)
class MessageReceived(Event):
    """A whole payload is ready, in order (R-E2E.20), reassembled if needed.

    ``payload_records`` are the reassembled ``payload`` entries (one per TLS
    record with TLS12, normally one with PLAINTEXT); ``payload`` joins them.
    ``sequence_id`` is that of the Record completing the payload.
    """

    payload: bytes
    payload_records: tuple[bytes, ...]
    sequence_id: int


@dataclass(frozen=True)
class SegmentStored(Event):
    """A segment of a larger payload was stored for reassembly."""

    sequence_id: int
    payload_sar_state: int
    payloadrec_sar_state: int


@dataclass(frozen=True)
class DuplicateIgnored(Event):
    """A Record already processed or buffered was ignored (R-E2E.20, R-E2E.25)."""

    sequence_id: int


@dataclass(frozen=True)
class StaleRecordIgnored(Event):
    """A Record of a session this context no longer uses was ignored."""

    session_id: int
    sequence_id: int
    reason: str


@dataclass(frozen=True)
class OutOfOrderBuffered(Event):
    """A Record ahead of ``expected_id`` waits in the incoming buffer (R-E2E.20)."""

    sequence_id: int
    expected_id: int


@dataclass(frozen=True)
class RetransmitRequested(Event):
    """The peer asked for one of our Records; ``records`` must be sent again."""

    sequence_id: int
    records: tuple[schema.Record, ...]


@dataclass(frozen=True)
class SessionStarted(Event):
    """The first session of this context began (R-E2E.4 when the peer began it)."""

    session_id: int
    initiated_by_peer: bool
    records: tuple[schema.Record, ...] = ()


@dataclass(frozen=True)
class SessionRestarted(Event):
    """A new session replaced the previous one.

    ``unacknowledged`` holds our payloads the peer had not acknowledged in the
    old session; whether to send them again is the caller's policy. When the
    restart is ours, ``records`` carries the Record announcing the new session,
    unless the retry policy defers it (R-E2E.10): then :meth:`SessionContext.poll`
    sends it when due.
    """

    new_session_id: int
    old_session_id: int | None
    initiated_by_peer: bool
    reason: str
    requirement: str | None
    records: tuple[schema.Record, ...] = ()
    unacknowledged: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class SessionExpired(Event):
    """No activity for SessionExpiration seconds (R-E2E.7)."""

    session_id: int
    unacknowledged: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class ProtocolViolation(Event):
    """A Record from the peer broke a rule; it was ignored (never raised)."""

    reason: str
    requirement: str | None
    sequence_id: int | None = None


@dataclass(frozen=True)
class Transmit(Event):
    """Records produced by :meth:`SessionContext.poll` that must be sent."""

    records: tuple[schema.Record, ...]
    reason: str


def outgoing_records(events: Iterable[Event]) -> list[schema.Record]:
    """Every Record the caller must transmit, in order, from a list of events."""
    out: list[schema.Record] = []
    for event in events:
        if isinstance(event, (RetransmitRequested, SessionStarted, SessionRestarted, Transmit)):
            out.extend(event.records)
    return out


@dataclass
class _OutMessage:
    first_seq: int
    last_seq: int
    payload: bytes


# --- the state machine ---------------------------------------------------------


class SessionContext:
    """The Session Context between ``local_id`` and one remote ``peer_id``.

    ``session_id`` (>= 2), when given, is the session we originate with on
    the first send; otherwise one is drawn from ``rng`` then, or the peer's
    is adopted when its Record arrives first. ``rng`` defaults to
    ``random.SystemRandom()``.
    """

    def __init__(
        self,
        local_id: str,
        peer_id: str,
        config: SessionConfig | None = None,
        *,
        session_id: int | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.local_id = local_id
        self.peer_id = peer_id
        self.config = config if config is not None else SessionConfig()
        self._rng: random.Random = rng if rng is not None else random.SystemRandom()
        self._retired: deque[int] = deque(maxlen=self.config.retired_session_history)
        self._lost: deque[int] = deque(maxlen=self.config.retired_session_history)
        self._expired_id: int | None = None
        self._retry_count = 0  # R-E2E.13: a new object (reboot) starts at zero
        self._pending: list[Event] = []
        self._generation = 0
        self._last_activity: float | None = None
        self._chunk_size = self._compute_chunk_size()
        # Per-session state, (re)initialised by _reset_session.
        self._session_id: int | None
        self._negotiating: bool
        self._next_seq: int
        self._expected: int
        self._peer_expected: int
        self._rollover_pending: bool
        self._sar_active: bool
        self._sar_size: int
        self._peer_security: int | None
        self._security: _Security
        self._outgoing: OrderedDict[int, schema.Record]
        self._sent_at: dict[int, float]
        self._retransmits: dict[int, int]
        self._messages: deque[_OutMessage]
        self._incoming: dict[int, schema.Record]
        self._gap_since: float | None
        self._requested_for: int | None
        self._last_request_at: float | None
        self._ack_owed_since: float | None
        self._retry_at: float | None
        self._establish_at: float | None
        self._stale_since: float | None
        self._sar_records: list[bytes]
        self._sar_partial: bytearray | None
        self._reset_session(None, negotiating=False)
        if session_id is not None:
            if not MIN_SESSION_ID <= session_id <= UINT64_MAX:
                raise ValueError("session_id must be in [2, 2**64-1] (R-E2E.3)")
            self._reset_session(session_id, negotiating=True)

    # -- read-only state --------------------------------------------------------

    @property
    def session_id(self) -> int | None:
        """Current session id, ``None`` while no session exists (Down)."""
        return self._session_id

    @property
    def next_sequence_id(self) -> int:
        """``sequence_id`` of the next Record we send (R-E2E.14, R-E2E.15)."""
        return self._next_seq

    @property
    def expected_id(self) -> int:
        """Next ``sequence_id`` we expect from the peer (R-E2E.17)."""
        return self._expected

    @property
    def peer_expected_id(self) -> int:
        """Highest ``expected_id`` the peer sent us: all below are acknowledged."""
        return self._peer_expected

    @property
    def status(self) -> str:
        """TR-181 E2ESession.Status: ``Up``, ``Negotiating`` or ``Down``."""
        if self._session_id is None:
            return STATUS_DOWN
        return STATUS_NEGOTIATING if self._negotiating else STATUS_UP

    @property
    def current_retry_count(self) -> int:
        """TR-181 E2ESession.CurrentRetryCount (R-E2E.10, R-E2E.12)."""
        return self._retry_count

    @property
    def chunk_size(self) -> int | None:
        """Largest payload segment one Record carries, ``None`` without SAR."""
        return self._chunk_size

    @property
    def outgoing_sequence_ids(self) -> tuple[int, ...]:
        """Sequence ids kept for retransmission (R-E2E.16)."""
        return tuple(self._outgoing)

    @property
    def buffered_sequence_ids(self) -> tuple[int, ...]:
        """Sequence ids waiting in the incoming buffer (R-E2E.20)."""
        return tuple(sorted(self._incoming))

    @property
    def retired_session_ids(self) -> tuple[int, ...]:
        return tuple(self._retired)

    # -- sending ----------------------------------------------------------------

    def send(self, payload: bytes, *, now: float) -> list[schema.Record]:
        """Wrap one serialized payload into Record(s), segmenting if needed.

        Session changes this causes (a new session after expiry, R-E2E.7, or
        near sequence id exhaustion, R-E2E.9) are reported by the next
        :meth:`poll` or :meth:`receive`. Raises ``ValueError`` on an empty
        payload: use :meth:`establish` or :meth:`poll` for empty Records.
        """
        return self.send_payload_records((payload,), now=now)

    def send_payload_records(
        self, payload_records: Sequence[bytes], *, now: float
    ) -> list[schema.Record]:
        """Send one message made of several payload records (TLS records).

        All fit in one Record when possible; otherwise each payload record
        gets its own Record(s) and oversized ones are split across Records,
        with ``payload_sar_state`` / ``payloadrec_sar_state`` set per the SAR
        algorithm of TR-369.
        """
        parts = [bytes(part) for part in payload_records]
        if not parts or any(not part for part in parts):
            raise ValueError("a message needs at least one non-empty payload record")
        self._pending.extend(self._check_expiry(now))
        self._ensure_session(now)
        first = self._next_seq
        records = [self._make_record(chunks, ps, rs, now) for chunks, ps, rs in self._plan(parts)]
        self._messages.append(_OutMessage(first, self._next_seq - 1, b"".join(parts)))
        self._last_activity = now
        return records

    def establish(self, *, now: float) -> list[schema.Record]:
        """Start a session with an empty Record (sequence_id 1) if none is running."""
        self._pending.extend(self._check_expiry(now))
        if self._session_id is None:
            event = self._originate(now, reason="session requested", requirement="R-E2E.3",
                                    establish="now")
            # The next poll reports the event; its Record goes out only once, from here.
            reported: Event = event
            if isinstance(event, (SessionStarted, SessionRestarted)):
                reported = replace(event, records=())
            self._pending.append(reported)
            return list(outgoing_records([event]))
        if self._next_seq == 1:
            self._last_activity = now
            return [self._make_record([], _NONE, _NONE, now)]
        return []

    def reconfigure(self, config: SessionConfig) -> None:
        """Use ``config`` from now on, in the running session too.

        TR-181 E2ESession parameters may change at any time: SessionExpiration
        applies to the current session, MaxRetransmitTries to the next
        retransmit request, the retry parameters to the next wait drawn, and
        MaxUSPRecordSize to the next Record built. Records already sent and
        the session's payload_security (R-E2E.18) stay as they are until the
        next session. Raises ``ValueError`` (changing nothing) when
        ``max_record_size`` leaves no room for a payload.
        """
        old = self.config
        self.config = config
        try:
            chunk = self._compute_chunk_size()
        except ValueError:
            self.config = old
            raise
        self._chunk_size = chunk
        if config.retired_session_history != old.retired_session_history:
            self._retired = deque(self._retired, maxlen=config.retired_session_history)
            self._lost = deque(self._lost, maxlen=config.retired_session_history)

    def restart(
        self, *, now: float, reason: str = "restart requested", requirement: str | None = None,
        failure: bool = False,
    ) -> Event:
        """Replace the session with a new one of ours.

        Use ``failure=True`` after a Record failed outside this machine
        (integrity check, decryption: R-E2E.21, R-E2E.23): the retry count
        grows and the announcing Record is deferred per R-E2E.10.
        """
        return self._originate(now, reason=reason, requirement=requirement,
                               establish="deferred" if failure else "now")

    # -- receiving --------------------------------------------------------------

    def receive(self, record: schema.Record, *, now: float) -> list[Event]:
        """Digest one Record from the peer; never raises on its field values."""
        events = self._take_pending()
        events.extend(self._check_expiry(now))
        if record.to_id != self.local_id:
            events.append(ProtocolViolation(
                f"to_id {record.to_id!r} is not this endpoint", "R-E2E.1"))
            return events
        if record.from_id != self.peer_id:
            events.append(ProtocolViolation(
                f"from_id {record.from_id!r} does not belong to this session context", "R-E2E.3"))
            return events
        if record.WhichOneof("record_type") != "session_context":
            events.append(ProtocolViolation(
                f"record_type {record.WhichOneof('record_type')} is not session_context", None))
            return events
        ctx = record.session_context
        sid, seq = ctx.session_id, ctx.sequence_id
        if sid == 0:
            events.append(ProtocolViolation("session_id 0 is invalid", "R-E2E.24", seq))
            if self._session_id is not None:
                events.append(self._originate(now, reason="invalid session_id",
                                              requirement="R-E2E.24", establish="deferred"))
            return events
        if sid == 1:
            events.append(ProtocolViolation("session_id must be greater than 1", "R-E2E.3", seq))
        if sid != self._session_id:
            handled = self._foreign_session(sid, seq, now)
            events.extend(handled)
            if self._session_id != sid:
                return events
        security = record.payload_security
        if security not in _SECURITIES:
            return events + self._fail(now, f"unknown payload_security {security}", "R-E2E.19", seq)
        if self._peer_security is None:
            self._peer_security = security
        elif security != self._peer_security:
            return events + self._fail(
                now, "payload_security differs within the session context", "R-E2E.19", seq)
        if seq == 0:
            events.append(ProtocolViolation("sequence_id 0 is invalid", "R-E2E.14", seq))
        if seq < self._expected or seq in self._incoming:
            if seq < self._expected and self._ack_owed_since is None:
                self._ack_owed_since = now
            events.append(DuplicateIgnored(seq))
            return events
        if seq - self._expected >= self.config.max_incoming_records:
            return events + self._fail(
                now, f"sequence_id {seq} is beyond the incoming buffer", "R-E2E.21", seq)
        # Accepted: the session is alive and the retry count resets (R-E2E.12).
        self._last_activity = now
        self._retry_count = 0
        self._stale_since = None
        if self._negotiating:
            self._negotiating = False
            self._retry_at = None
            self._establish_at = None
        generation = self._generation
        events.extend(self._process_control(ctx, now))
        if generation != self._generation:
            return events
        if seq > self._expected:
            stored = _copy(record)
            self._incoming[seq] = stored
            if self._gap_since is None:
                self._gap_since = now
            events.append(OutOfOrderBuffered(seq, self._expected))
            return events
        events.extend(self._process_in_order(record, now))
        while generation == self._generation and self._expected in self._incoming:
            events.extend(self._process_in_order(self._incoming.pop(self._expected), now))
        if generation == self._generation and not self._incoming:
            self._gap_since = None
            self._requested_for = None
        return events

    # -- time-driven work -------------------------------------------------------

    def poll(self, now: float) -> list[Event]:
        """Expiry, establishment retries, retransmit requests and acknowledgements."""
        events = self._take_pending()
        events.extend(self._check_expiry(now))
        if self._session_id is None:
            return events
        cfg = self.config
        if self._establish_at is not None and now >= self._establish_at:
            self._establish_at = None
            if self._next_seq == 1:
                events.append(Transmit((self._make_record([], _NONE, _NONE, now),),
                                       "session establishment"))
        elif self._negotiating and self._retry_at is not None and now >= self._retry_at:
            self._retry_count += 1
            self._retry_at = now + self._retry_wait(self._retry_count + 1)
            first = self._outgoing.get(1)
            if first is not None:
                self._sent_at[1] = now
                events.append(Transmit((_copy(first),), "session establishment retry"))
        if self._request_due(now):
            events.append(Transmit((self._make_record([], _NONE, _NONE, now),),
                                   "retransmit request"))
        if self._ack_owed_since is not None:
            events.append(Transmit((self._make_record([], _NONE, _NONE, now),), "acknowledgement"))
        if cfg.resend_unacknowledged_after is not None:
            due = [seq for seq in self._unacked_payload_seqs()
                   if now >= self._sent_at.get(seq, now) + cfg.resend_unacknowledged_after]
            if due:
                for seq in due:
                    self._sent_at[seq] = now
                events.append(Transmit(tuple(_copy(self._outgoing[s]) for s in due),
                                       "unacknowledged resend"))
        return events

    def next_deadline(self) -> float | None:
        """Earliest time at which :meth:`poll` has work, ``None`` if never."""
        cfg = self.config
        times: list[float] = []
        if self._pending:
            times.append(float("-inf"))
        if self._session_id is not None:
            if cfg.session_expiration > 0 and self._last_activity is not None:
                times.append(self._last_activity + cfg.session_expiration)
            if self._establish_at is not None:
                times.append(self._establish_at)
            elif self._negotiating and self._retry_at is not None:
                times.append(self._retry_at)
            if self._incoming and self._gap_since is not None:
                due = self._gap_since + cfg.retransmit_request_after
                if self._requested_for == self._expected and self._last_request_at is not None:
                    due = max(due, self._last_request_at + cfg.retransmit_request_after)
                times.append(due)
            if self._ack_owed_since is not None:
                times.append(self._ack_owed_since)
            if cfg.resend_unacknowledged_after is not None:
                times.extend(self._sent_at.get(seq, 0.0) + cfg.resend_unacknowledged_after
                             for seq in self._unacked_payload_seqs())
        return min(times) if times else None

    # -- internals: session lifecycle --------------------------------------------

    def _reset_session(self, session_id: int | None, *, negotiating: bool) -> None:
        self._generation += 1
        self._session_id = session_id
        self._negotiating = negotiating
        self._security = self.config.payload_security
        self._next_seq = 1
        self._expected = 1
        self._peer_expected = 1
        self._peer_security = None
        self._outgoing = OrderedDict()
        self._sent_at = {}
        self._retransmits = {}
        self._messages = deque(maxlen=self.config.max_outgoing_records)
        self._incoming = {}
        self._gap_since = None
        self._requested_for = None
        self._last_request_at = None
        self._ack_owed_since = None
        self._rollover_pending = False
        self._retry_at = None
        self._establish_at = None
        self._stale_since = None
        self._sar_active = False
        self._sar_records = []
        self._sar_partial = None
        self._sar_size = 0

    def _retire(self, session_id: int | None) -> None:
        if session_id is not None and session_id not in self._retired:
            self._retired.append(session_id)

    def _used_ids(self) -> set[int]:
        used = set(self._retired) | set(self._lost)
        for sid in (self._session_id, self._expired_id):
            if sid is not None:
                used.add(sid)
        return used

    def _unacknowledged(self) -> tuple[bytes, ...]:
        return tuple(m.payload for m in self._messages if m.last_seq >= self._peer_expected)

    def _retry_wait(self, retry_count: int) -> float:
        return retry_wait_interval(retry_count, self._rng,
                                   minimum_wait=self.config.retry_minimum_wait_interval,
                                   multiplier=self.config.retry_interval_multiplier)

    def _take_pending(self) -> list[Event]:
        pending, self._pending = self._pending, []
        return pending

    def _originate(self, now: float, *, reason: str, requirement: str | None,
                   establish: str) -> Event:
        """Start a session of ours; ``establish`` is ``none``, ``now`` or ``deferred``."""
        old = self._session_id if self._session_id is not None else self._expired_id
        unacked = self._unacknowledged() if self._session_id is not None else ()
        had_session = old is not None or bool(self._retired)
        new = new_session_id(self._rng, exclude=self._used_ids())
        self._retire(self._session_id)
        self._retire(self._expired_id)
        self._expired_id = None
        self._reset_session(new, negotiating=True)
        self._last_activity = now
        records: tuple[schema.Record, ...] = ()
        if establish == "now":
            records = (self._make_record([], _NONE, _NONE, now),)
        elif establish == "deferred":
            self._retry_count += 1
            self._establish_at = now + self._retry_wait(self._retry_count)
        if not had_session:
            return SessionStarted(new, initiated_by_peer=False, records=records)
        return SessionRestarted(new, old, False, reason, requirement, records, unacked)

    def _adopt(self, session_id: int, now: float) -> Event:
        """Join the session the peer started (R-E2E.4, R-E2E.6).

        Everything below the expected_id we last sent was already processed
        (R-E2E.22); buffered Records and partial reassembly of the old session
        are dropped, and our unacknowledged payloads go back to the caller.
        """
        old = self._session_id if self._session_id is not None else self._expired_id
        unacked = self._unacknowledged() if self._session_id is not None else ()
        had_session = old is not None or bool(self._retired)
        if self._negotiating and self._session_id is not None and self._next_seq > 1:
            self._lost.append(self._session_id)  # announced, then lost a collision
        self._retire(self._session_id)
        self._retire(self._expired_id)
        self._expired_id = None
        self._reset_session(session_id, negotiating=False)
        self._last_activity = now
        self._ack_owed_since = now  # answer the Record that started the session
        if not had_session:
            return SessionStarted(session_id, initiated_by_peer=True)
        return SessionRestarted(session_id, old, True, "peer started a new session", "R-E2E.6",
                                (), unacked)

    def _foreign_session(self, sid: int, seq: int, now: float) -> list[Event]:
        """A Record names a session id other than ours; decide what it means."""
        if sid == self._expired_id:
            # R-E2E.7: the peer still talks on the expired session; start anew.
            return [StaleRecordIgnored(sid, seq, "session expired"),
                    self._originate(now, reason="session expired", requirement="R-E2E.7",
                                    establish="now")]
        if sid in self._lost:
            # The peer joined a session we abandoned in a collision: it took a
            # late Record for a new session. Give it a fresh one (R-E2E.24).
            self._lost.remove(sid)
            self._retire(sid)
            return [StaleRecordIgnored(sid, seq, "peer joined an abandoned session"),
                    self._originate(now, reason="peer uses an abandoned session id",
                                    requirement="R-E2E.24", establish="now")]
        if sid in self._retired:
            return self._stale(sid, seq, now, "session id retired")
        if (self._session_id is not None and self._negotiating and self._next_seq > 1
                and sid < self._session_id):
            # Both sides started a session at once: the larger id wins (R-E2E.5).
            self._retire(sid)
            return self._stale(sid, seq, now, "session collision: keeping the larger id")
        return [self._adopt(sid, now)]

    def _stale(self, sid: int, seq: int, now: float, reason: str) -> list[Event]:
        """Ignore a Record of an old session; if the peer sticks to old ones
        while nothing arrives on ours, announce a fresh session (R-E2E.24)."""
        events: list[Event] = [StaleRecordIgnored(sid, seq, reason)]
        timeout = self.config.stale_session_timeout
        if timeout is None or self._session_id is None:
            return events
        if self._stale_since is None:
            self._stale_since = now
        elif now >= self._stale_since + timeout:
            events.append(self._originate(now, reason="peer keeps using a retired session id",
                                          requirement="R-E2E.24", establish="now"))
        return events

    def _check_expiry(self, now: float) -> list[Event]:
        expiration = self.config.session_expiration
        if self._session_id is None or expiration <= 0 or self._last_activity is None:
            return []
        if now < self._last_activity + expiration:
            return []
        sid, unacked = self._session_id, self._unacknowledged()
        self._reset_session(None, negotiating=False)
        self._expired_id = sid
        return [SessionExpired(sid, unacked)]

    def _ensure_session(self, now: float) -> None:
        if self._session_id is None:
            if self._expired_id is not None:
                self._pending.append(self._originate(
                    now, reason="session expired", requirement="R-E2E.7", establish="none"))
            else:
                self._pending.append(self._originate(
                    now, reason="session requested", requirement="R-E2E.3", establish="none"))
        elif self._rollover_pending:
            self._pending.append(self._originate(
                now, reason="sequence_id near exhaustion", requirement="R-E2E.9",
                establish="none"))

    def _fail(self, now: float, reason: str, requirement: str | None,
              seq: int | None) -> list[Event]:
        """Report a failed Record and start a new session (R-E2E.21)."""
        return [ProtocolViolation(reason, requirement, seq),
                self._originate(now, reason=reason, requirement="R-E2E.21",
                                establish="deferred")]

    # -- internals: outgoing ------------------------------------------------------

    def _template(self) -> schema.Record:
        """A Record with every header field at its largest encoding."""
        rec = schema.Record(version=self.config.version, to_id=self.peer_id,
                            from_id=self.local_id, payload_security=self.config.payload_security)
        ctx = rec.session_context
        ctx.session_id = ctx.sequence_id = ctx.expected_id = ctx.retransmit_id = UINT64_MAX
        ctx.payload_sar_state = ctx.payloadrec_sar_state = _COMPLETE
        return rec

    def _compute_chunk_size(self) -> int | None:
        limit = self.config.max_record_size
        if not limit:
            return None
        # Growth of the session_context length prefix plus the payload entry's
        # tag and length prefix are bounded by two varints of ``limit``.
        overhead = (self._template().ByteSize() + self.config.reserved_record_bytes
                    + 2 * _varint_len(limit))
        chunk = limit - overhead
        if chunk < 1:
            raise ValueError("max_record_size leaves no room for payload with these endpoint ids")
        return chunk

    def _fits_one_record(self, parts: Sequence[bytes]) -> bool:
        limit = self.config.max_record_size
        if not limit:
            return True
        rec = self._template()
        rec.session_context.payload.extend(parts)
        return rec.ByteSize() + self.config.reserved_record_bytes <= limit

    def _plan(self, parts: Sequence[bytes]
              ) -> list[tuple[list[bytes], _SarState, _SarState]]:
        """Split a message into (payload entries, payload_sar_state, payloadrec_sar_state)."""
        chunk = self._chunk_size
        if chunk is None or self._fits_one_record(parts):
            return [(list(parts), _NONE, _NONE)]
        pieces: list[tuple[bytes, _SarState]] = []
        for part in parts:
            if len(part) <= chunk:
                pieces.append((part, _NONE))  # one payload record per Record
                continue
            slices = [part[i:i + chunk] for i in range(0, len(part), chunk)]
            for index, piece in enumerate(slices):
                state = (_BEGIN if index == 0
                         else _COMPLETE if index == len(slices) - 1 else _INPROCESS)
                pieces.append((piece, state))
        last = len(pieces) - 1
        return [([piece], _BEGIN if i == 0 else _COMPLETE if i == last else _INPROCESS, rec_state)
                for i, (piece, rec_state) in enumerate(pieces)]

    def _request_due(self, now: float) -> bool:
        if not self._incoming or self._gap_since is None:
            return False
        after = self.config.retransmit_request_after
        if now < self._gap_since + after:
            return False
        return not (self._requested_for == self._expected and self._last_request_at is not None
                    and now < self._last_request_at + after)

    def _make_record(self, chunks: Sequence[bytes], sar: _SarState, rec_sar: _SarState,
                     now: float) -> schema.Record:
        """Build, buffer (R-E2E.16) and return a copy of our next Record."""
        assert self._session_id is not None
        seq = self._next_seq
        self._next_seq += 1
        # R-E2E.18: payload_security is fixed when the session starts.
        rec = schema.Record(version=self.config.version, to_id=self.peer_id,
                            from_id=self.local_id, payload_security=self._security)
        ctx = rec.session_context
        ctx.session_id = self._session_id
        ctx.sequence_id = seq  # R-E2E.14 / R-E2E.15
        ctx.expected_id = self._expected  # R-E2E.17
        if self._request_due(now):
            ctx.retransmit_id = self._expected
            self._requested_for = self._expected
            self._last_request_at = now
        ctx.payload_sar_state = sar
        ctx.payloadrec_sar_state = rec_sar
        ctx.payload.extend(chunks)
        self._outgoing[seq] = rec
        self._sent_at[seq] = now
        while len(self._outgoing) > self.config.max_outgoing_records:
            old, _ = self._outgoing.popitem(last=False)
            self._sent_at.pop(old, None)
            self._retransmits.pop(old, None)
        self._ack_owed_since = None
        if seq >= self.config.sequence_id_limit:
            self._rollover_pending = True  # R-E2E.9: new session on next contact
        if seq == 1:
            self._establish_at = None
            if self._negotiating:
                self._retry_at = now + self._retry_wait(self._retry_count + 1)
        return _copy(rec)

    def _unacked_payload_seqs(self) -> list[int]:
        return [seq for seq, rec in self._outgoing.items()
                if seq >= self._peer_expected and len(rec.session_context.payload) > 0]

    # -- internals: incoming ------------------------------------------------------

    def _process_control(self, ctx: schema.SessionContextRecord, now: float) -> list[Event]:
        """Acknowledgements (R-E2E.16) and retransmit requests of an accepted Record."""
        events: list[Event] = []
        ack = ctx.expected_id
        if ack > self._next_seq:
            events.append(ProtocolViolation(
                f"expected_id {ack} acknowledges Records never sent", "R-E2E.17",
                ctx.sequence_id))
            ack = self._next_seq
        if ack > self._peer_expected:
            self._peer_expected = ack
            while self._outgoing and next(iter(self._outgoing)) < ack:
                old, _ = self._outgoing.popitem(last=False)
                self._sent_at.pop(old, None)
                self._retransmits.pop(old, None)
            while self._messages and self._messages[0].last_seq < ack:
                self._messages.popleft()
        rid = ctx.retransmit_id
        if rid:
            events.extend(self._handle_retransmit(rid, ctx.sequence_id, now))
        return events

    def _handle_retransmit(self, rid: int, seq: int, now: float) -> list[Event]:
        if rid < self._peer_expected:
            return []  # the peer already acknowledged it: a stale request
        if rid >= self._next_seq:
            return self._fail(now, f"retransmit_id {rid} names a Record never sent",
                              "R-E2E.20", seq)
        stored = self._outgoing.get(rid)
        if stored is None:
            return [self._originate(now, reason=f"Record {rid} is no longer buffered",
                                    requirement="R-E2E.21", establish="deferred")]
        tries = self._retransmits.get(rid, 0)
        limit = self.config.max_retransmit_tries
        if limit != -1 and tries >= limit:
            return [self._originate(now, reason=f"MaxRetransmitTries reached for Record {rid}",
                                    requirement="R-E2E.21", establish="deferred")]
        self._retransmits[rid] = tries + 1
        self._sent_at[rid] = now
        return [RetransmitRequested(rid, (_copy(stored),))]

    def _process_in_order(self, record: schema.Record, now: float) -> list[Event]:
        """Deliver the payload of the Record whose turn it is (R-E2E.20 rule 3)."""
        ctx = record.session_context
        seq = ctx.sequence_id
        generation = self._generation
        events: list[Event] = []
        if len(ctx.payload) > 0:
            events.extend(self._reassemble(ctx, now))
            if generation != self._generation:
                return events
        self._expected = seq + 1
        if seq >= self.config.sequence_id_limit:
            events.append(self._originate(now, reason="peer sequence_id near exhaustion",
                                          requirement="R-E2E.8", establish="now"))
        return events

    def _reassemble(self, ctx: schema.SessionContextRecord, now: float) -> list[Event]:
        """Apply the receiving side of the SAR algorithm to one in-order Record."""
        seq, sar, rec_sar = ctx.sequence_id, ctx.payload_sar_state, ctx.payloadrec_sar_state
        parts = [bytes(part) for part in ctx.payload]
        if sar not in _SAR_STATES or rec_sar not in _SAR_STATES:
            return self._sar_fail(now, f"unknown SAR state {sar}/{rec_sar}", seq)
        size = sum(len(part) for part in parts)
        if sar == _NONE:
            if self._sar_active:
                return self._sar_fail(now, "unsegmented payload during reassembly", seq)
            if rec_sar != _NONE:
                return self._sar_fail(now, "payloadrec_sar_state set on an unsegmented payload",
                                      seq)
            if size > self.config.max_reassembled_size:
                return self._sar_fail(now, "payload exceeds the reassembly limit", seq)
            return [MessageReceived(b"".join(parts), tuple(parts), seq)]
        if sar == _BEGIN:
            if self._sar_active:
                return self._sar_fail(now, "BEGIN while a reassembly is in progress", seq)
            self._sar_active = True
        elif not self._sar_active:
            return self._sar_fail(now, f"{_sar_name(sar)} without BEGIN", seq)
        self._sar_size += size
        if self._sar_size > self.config.max_reassembled_size:
            return self._sar_fail(now, "payload exceeds the reassembly limit", seq)
        if rec_sar == _NONE:
            if self._sar_partial is not None:
                return self._sar_fail(now, "whole payload record inside a split one", seq)
            self._sar_records.extend(parts)
        else:
            if len(parts) != 1:
                return self._sar_fail(now, "a split payload record must travel alone", seq)
            if rec_sar == _BEGIN:
                if self._sar_partial is not None:
                    return self._sar_fail(now, "payloadrec BEGIN inside a split record", seq)
                self._sar_partial = bytearray(parts[0])
            else:
                if self._sar_partial is None:
                    return self._sar_fail(
                        now, f"payloadrec {_sar_name(rec_sar)} without BEGIN", seq)
                self._sar_partial += parts[0]
                if rec_sar == _COMPLETE:
                    self._sar_records.append(bytes(self._sar_partial))
                    self._sar_partial = None
        if sar == _COMPLETE:
            if self._sar_partial is not None:
                return self._sar_fail(now, "payload completed inside a split record", seq)
            records = tuple(self._sar_records)
            self._sar_active, self._sar_records, self._sar_size = False, [], 0
            return [MessageReceived(b"".join(records), records, seq)]
        return [SegmentStored(seq, sar, rec_sar)]

    def _sar_fail(self, now: float, reason: str, seq: int) -> list[Event]:
        # TR-369 "SAR function algorithm": a failed reassembly fails the last
        # Record, which triggers the failure handling of R-E2E.21.
        return self._fail(now, reason, "R-E2E.20", seq)
