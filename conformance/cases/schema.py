"""The case file format: one YAML file per conformance case.

A case file (``testcases/01-messages-and-path-names/1.1-add-....yaml``)::

    id: "1.1"                        # TP-469 case id, or a project id "X-..."
    title: Add, allow_partial false, one object, required parameters succeed
    purpose: >                       # our own words
      ...
    functionality: mandatory         # | {conditional: [31]} | deprecated | future
    requirements: [R-ADD.1, R-ADD.5]
    metrics:                         # the TP-469 test metrics, numbered
      1: The EUT sends an AddResp.
      2: ...
    setup: []                        # steps run first (failures here are suite errors)
    steps:                           # the procedure
      - send: {add: {allow_partial: false, create_objs: [...]}}
        expect: {response: {add_resp: {...}}, metrics: [1, 2]}
        capture: {sub: "add_resp.created_obj_results[0].oper_status.oper_success.instantiated_path"}
      - send: {get: {param_paths: ["{sub}"]}}
        expect: {response: {get_resp: {...}}, metrics: [3, 4]}
    cleanup:                         # always run, also after a failure or an error
      - send: {delete: {obj_paths: ["{sub}"]}}
    killed_by:                       # selftest: reference-agent faults that must fail it
      add.no_unique_keys: 2          # ... and the metric each one breaks

Steps (each a mapping with exactly one action):

* ``send``: a request as ``{<request kind>: {fields}}``, ``{msg: <whole Msg mapping>}``
  or ``{text: <protobuf text format, as TP-469 prints it>}``; options ``as``
  (controller identity: primary, secondary, unknown), ``expect`` (below),
  ``capture`` ({name: dotted path into the response}).
* ``send_record``: a Record written field by field (TP-469 sections 2 and 3): ``to_id``,
  ``from_id``, ``version``, ``payload_security``, ``mac_signature`` / ``sender_cert``
  (``{hex: ...}`` or text), ``session_context: {session_id, sequence_id, expected_id,
  retransmit_id, payload_sar, payloadrec_sar}`` (else no_session_context), ``payload`` (a
  request as in ``send``, or ``none``), ``payload_hex`` (payload bytes that need not be a Msg)
  or ``raw: <hex>`` (the whole Record's bytes, e.g. malformed);
  options as ``send`` plus ``msg_id_as: name``. ``{session.id}`` / ``{session.other_id}`` are
  fresh session ids of the case (``session_id`` defaults to ``{session.id}``).
* ``resend``: ``{times: n}``: the identity's last Record again, byte for byte (duplicates);
  option ``expect`` about the Msg it carried.
* ``expect_record``: ``{match: <matcher on the Record>, from: send|last|case|now, within: s,
  metrics, capture, capture_time, as}``: a Record from the EUT; the matcher sees
  :func:`conformance.usp.records.to_mapping` plus ``msg`` (the decoded Msg). ``from: send``
  (default) looks after the identity's last send, ``last`` after the previous match.
* ``expect_no_record``: ``{match, for: s, from: send|now, metrics, as}``.
  After each send the variables ``{sent.msg_id}`` and ``{sent.record...}`` describe it.
* ``expect_notification``: ``{match: <matcher on the notify body>, metrics: [...],
  within: seconds, as: identity, capture: {...}}``.
* ``expect_no_notification``: ``{match: <matcher>, for: seconds, metrics: [...], as: identity,
  ignore_before: {since: time name, seconds: s}}``: no matching Notify arrives during ``for``
  seconds (Notifies before ``since`` + ``seconds`` are ignored, e.g. retries still allowed).
* ``expect_mtp``: ``{event: mqtt.CONNECT, direction: in, match: <matcher on the decoded
  event>, from: last|case|run|now|<time name>, within: s, metrics: [...], capture: {...},
  capture_time: name, timing: {...}}``: an MTP-level event on the timeline (a packet, a
  frame, a handshake; ``direction`` ``in`` is from the EUT, ``out`` from the suite);
  ``from`` defaults to after the previous ``expect_mtp`` match (the case start at first).
* ``expect_no_mtp``: ``{event, direction, match, for: s, from: now|..., metrics}``: no such
  event during ``for`` seconds.
* ``reboot``: ``{}``: reboot the EUT as its profile says and wait for it to reconnect;
  ``{triggered: true, metrics: [...], within: s}``: the case's previous send already made the
  EUT reboot (Operate Device.Reboot()); only wait for the reconnect, which proves ``metrics``.
* ``controller``: ``{auto_notify_resp: false}`` (option ``as``): change how a suite controller
  behaves, e.g. stop answering Notify (TP-469 "do not send a NotifyResp"), or
  ``{session_context: true}`` (talk inside an E2E session context), ``{e2e_security:
  {payload_security: TLS12, certificate: good|wrong-san|expired|untrusted-ca, send_alert,
  bad_signature}}`` (an E2E TLS session, :mod:`conformance.controller.e2e_session`;
  ``payload_security: PLAINTEXT``: signed no_session_context Records, no session) or
  ``{e2e_renegotiate: true}`` (ask for TLS renegotiation); restored at the end.
* ``wait``: ``{seconds: n, reason: "..."}`` for timing procedures TP-469 prescribes.
* ``scenario``: ``{mtp: mqtt, set: {field: value}}`` on the suite's broker/server (``mtp: any``:
  whichever one the run has); ``tls_certificate: expired|untrusted-ca|wrong-san|...|good``
  makes the suite present that certificate on the MTP's TLS (the EUT's next connection meets
  it; timeline events ``tls.scenario`` and ``tls.presented``).
* ``python``: ``{action: name, args: {...}}`` a Python action registered under the
  ``usp_conformance.actions`` entry point group (called as ``action(runner, **args)``);
  built in: ``close_connection`` (drop the EUT's MTP connection).

Timing (TP-469 windows, measured on the arrival timestamps, never by sleeping the worst case):
``capture_time: name`` on a ``send`` (when it was sent), an ``expect_notification`` (when the
Notify arrived) or a ``reboot`` (when the EUT was back) names that moment;
``expect_notification`` takes ``timing: {since: name, min: s, max: s, tolerance: s,
metrics: [...]}`` (the Notify must arrive in the window; the step waits only until it closes)
and ``respond: true`` (answer this Notify with a NotifyResp while the auto answer is off);
``send`` takes ``poll: {within: s, interval: s, since: name}`` (re-send until the
expectation holds, failing with the last mismatch once ``within`` has passed).

``expect`` inside a ``send`` step: one of ``response: <matcher>`` (the response
body, e.g. ``{add_resp: {...}}``), ``error: <matcher>`` (the Error body) or
``none: {probe: <request>}`` (no answer: proved by answering a later probe
first), plus ``metrics`` (which numbered metrics this check proves) and
``within`` (seconds). Matchers: :mod:`conformance.cases.matchers`.
Strings may hold ``{variable}`` (captured values) and ``{alt.name}`` (alternate
elements from the EUT profile).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SECTIONS = {
    "1": "1 Messages and Path Names",
    "2": "2 Authentication and Access Control",
    "3": "3 USP Records",
    "4": "4 General MTP",
    "5": "5 CoAP",
    "6": "6 STOMP",
    "7": "7 WebSocket",
    "8": "8 Discovery",
    "9": "9 Functionality",
    "10": "10 Bulk Data Collection",
    "11": "11 MQTT",
}
FUNCTIONALITY = ("mandatory", "conditional", "deprecated", "future")
STEP_ACTIONS = ("send", "send_record", "resend", "expect_record", "expect_no_record",
                "expect_notification", "expect_no_notification", "expect_mtp",
                "expect_no_mtp", "reboot", "wait", "scenario", "python", "controller")
#: what a case may need from its run (``requires:``): ``tls`` (the MTP runs over TLS),
#: ``no-absolute-time`` (the EUT was booted where it cannot learn the absolute time, TP-469 2.6),
#: ``no-mtp-integrity`` (the EUT does not count its MTP as protecting Record integrity, so it
#: must check every Record's signature: R-E2E.28-30, TP-469 3.2)
REQUIREMENTS = ("tls", "no-absolute-time", "no-mtp-integrity")
#: ``mtps:`` tokens: the run MTPs each one stands for (``mqtt``: either MQTT version)
MTP_TOKENS = {"mqtt": ("mqtt", "mqtt311"), "mqtt5": ("mqtt",), "mqtt311": ("mqtt311",),
              "stomp": ("stomp",), "websocket": ("websocket",),
              "websocket-server": ("websocket-server",), "uds": ("uds",)}
#: what a ``controller`` step may change on a suite controller (restored when the case ends)
CONTROLLER_SETTINGS = ("auto_notify_resp", "session_context", "e2e_security", "e2e_renegotiate")
IDENTITIES = ("primary", "secondary", "unknown")


class CaseSchemaError(ValueError):
    """A case file that does not follow the format; names file, line and the fix."""


@dataclass(frozen=True)
class Step:
    """One step; ``body`` is the action's value, ``options`` the rest of the mapping."""

    action: str
    body: Any
    options: Mapping[str, Any]
    line: int
    index: int            # 1-based position in its list

    @property
    def identity(self) -> str:
        return str(self.options.get("as", "primary"))


@dataclass(frozen=True)
class Case:
    """A parsed, validated case file."""

    case_id: str
    title: str
    purpose: str
    functionality: str
    feature_ids: tuple[int, ...]
    requirements: tuple[str, ...]
    metrics: Mapping[int, str]
    setup: tuple[Step, ...]
    steps: tuple[Step, ...]
    cleanup: tuple[Step, ...]
    path: str
    section: str
    mtps: tuple[str, ...] = ()          # MTPs the case is about (empty: any; MTP_TOKENS)
    requires: tuple[str, ...] = ()      # what the run must offer (REQUIREMENTS)
    #: reference-agent faults that must make the case fail, with the metric they break
    killed_by: Mapping[str, int] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def applies_to(self, mtp: str) -> bool:
        """Whether the case is about the run MTP ``mtp`` (``mtps:`` tokens)."""
        return not self.mtps or any(mtp in MTP_TOKENS.get(t, (t,)) for t in self.mtps)

    @property
    def identities(self) -> tuple[str, ...]:
        """The controller identities the case acts as (``as:`` of its steps)."""
        found = {"primary"}
        for step in (*self.setup, *self.steps, *self.cleanup):
            found.add(step.identity)
            if isinstance(step.body, Mapping) and "as" in step.body:
                found.add(str(step.body["as"]))
        return tuple(i for i in IDENTITIES if i in found)

    @property
    def mandatory(self) -> bool:
        return self.functionality == "mandatory"

    def section_number(self) -> str:
        return self.case_id.split(".")[0] if not self.case_id.startswith("X-") else "X"
