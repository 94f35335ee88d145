"""The reference Agent's TLS on its MTPs: its own certificate and how it judges the peer's.

What the Agent does with a certificate it receives while setting up TLS on an
MTP (R-MTP.1 .. R-MTP.4, the "receiving an X.509 certificate" flow of TR-369):

* the peer must present one (R-MTP.1): the Agent's WebSocket server asks every
  Controller for its certificate and refuses a handshake without one;
* it must chain to a CA the Agent trusts (R-SEC.2): OpenSSL checks the chain
  against the configured anchors;
* its validity dates are checked when the Agent has absolute time (R-MTP.3,
  R-SEC.20) and ignored when it has none (R-MTP.2, R-SEC.19, R-WS.23): the
  context then carries OpenSSL's X509_V_FLAG_NO_CHECK_TIME;
* a server the Agent dials (MQTT or STOMP broker, a Controller's WebSocket
  server) must be the host it dialled: hostname / IP address checking of the
  certificate's subjectAltName;
* a certificate that names Endpoint IDs (``urn:bbf:usp:id:`` URIs) identifies
  a Controller: a Controller dialling the Agent's WebSocket server must name its
  own Endpoint ID there (R-SEC.0a, R-SEC.3; :func:`identity_problem`), and
  Records whose ``from_id`` is not named are not processed (R-SEC.0a;
  :func:`record_problem`).

The Agent presents its own certificate, whose subjectAltName carries
``urn:bbf:usp:id:<its Endpoint ID>`` (R-SEC.10), as client and as server.

:class:`TLSMaterial` holds the context factories the MTPs are built with
(:func:`material` makes them from a credential); the MTPs apply the Agent's
faults to their context when they start (:func:`apply_faults`). The
``tls.*`` faults are registered here.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509

from conformance.agent.faults import FaultSet, register
from conformance.mtp import pki
from conformance.mtp.transport import Connection
from conformance.usp import records

__all__ = [
    "FAULTS",
    "TLSMaterial",
    "apply_faults",
    "client_context",
    "identity_problem",
    "material",
    "record_problem",
    "server_context",
]

#: The Agent's TLS faults: (name, requirement it breaks, what the Agent does wrong).
FAULTS: tuple[tuple[str, str, str], ...] = (
    ("tls.accept_expired", "R-MTP.3, R-SEC.20, TP-469 2.8 / 4.1",
     "accepts a peer certificate outside its validity dates although it has absolute time"),
    ("tls.accept_untrusted_ca", "R-SEC.2, R-MTP.4, TP-469 4.1",
     ("does not check that the peer certificate chains to a CA it trusts (its WebSocket "
      "server then asks for no client certificate)")),
    ("tls.accept_wrong_san", "R-MTP.4, R-SEC.0a, TP-469 4.1",
     ("accepts a server certificate that does not name the host it dialled and a "
      "Controller certificate that names another Endpoint ID")),
    ("tls.checks_time_without_clock", "R-MTP.2, R-SEC.19, TP-469 2.6",
     "rejects an expired or not yet valid peer certificate although it has no absolute time"),
)
for _name, _requirement, _text in FAULTS:
    register(_name, _requirement, _text)


@dataclass(frozen=True)
class TLSMaterial:
    """What the Agent presents and trusts on TLS connections: a fresh context per call."""

    client: Callable[[], ssl.SSLContext] | None = None   # for MQTT/STOMP/WS clients
    server: Callable[[], ssl.SSLContext] | None = None   # for the WebSocket server


TrustAnchors = Sequence[x509.Certificate]


def client_context(credential: pki.Credential, trust: TrustAnchors, *,
                   absolute_time: bool = True) -> ssl.SSLContext:
    """The Agent dialling a TLS server: it presents ``credential`` and checks the server's
    chain against ``trust``, the name or address it dialled and (with absolute time) the
    validity dates. Without anchors nothing is checked (an Agent configured so)."""
    return pki.ssl_context("client", credential, trust=list(trust), verify=bool(trust),
                           check_hostname=bool(trust), check_time=absolute_time)


def server_context(credential: pki.Credential, trust: TrustAnchors, *,
                   absolute_time: bool = True) -> ssl.SSLContext:
    """The Agent's TLS server (WebSocket): it presents ``credential`` and requires each
    Controller's certificate, checked against ``trust`` (R-MTP.1) and, with absolute
    time, its validity dates. Without anchors no client certificate is asked for."""
    return pki.ssl_context("server", credential, trust=list(trust),
                           require_client_cert=bool(trust), check_time=absolute_time)


def material(credential: pki.Credential, trust: TrustAnchors, *,
             absolute_time: bool = True) -> TLSMaterial:
    """Context factories for :func:`client_context` and :func:`server_context`."""
    anchors = list(trust)
    return TLSMaterial(
        client=lambda: client_context(credential, anchors, absolute_time=absolute_time),
        server=lambda: server_context(credential, anchors, absolute_time=absolute_time))


def apply_faults(context: ssl.SSLContext, faults: FaultSet, *,
                 server_side: bool) -> ssl.SSLContext:
    """Change ``context`` as the Agent's ``tls.*`` faults say (each breaks one check);
    returns it. A context that checks nothing is left alone."""
    if context.verify_mode == ssl.CERT_NONE:
        return context
    if faults.on("tls.accept_expired"):
        context.verify_flags |= pki.NO_CHECK_TIME
    if faults.on("tls.checks_time_without_clock"):
        context.verify_flags = context.verify_flags & ~pki.NO_CHECK_TIME
    if faults.on("tls.accept_wrong_san") and not server_side:
        context.check_hostname = False
    if faults.on("tls.accept_untrusted_ca"):
        if not server_side:
            context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def identity_problem(conn: Connection, endpoint_id: str, faults: FaultSet, *,
                     required: bool) -> str | None:
    """Why the TLS peer on ``conn`` is not Controller ``endpoint_id``, or None.

    A peer certificate naming Endpoint IDs must name ``endpoint_id`` (R-SEC.0a);
    ``required`` (a Controller dialling the Agent, R-SEC.3) also refuses a
    certificate that names none. Nothing to say without TLS or without a peer
    certificate (a context that asked for none).
    """
    if not conn.tls or conn.peer_cert_der is None or faults.on("tls.accept_wrong_san"):
        return None
    named = conn.peer_endpoint_ids
    if endpoint_id in named:
        return None
    if not named and not required:
        return None  # a server identified by its host name only
    shown = ", ".join(named) if named else "no Endpoint ID"
    return f"the peer certificate names {shown}, not {endpoint_id} (R-SEC.0a)"


def record_problem(conn: Connection, data: bytes, faults: FaultSet) -> str | None:
    """Why a Record received on ``conn`` must not be processed, or None: its ``from_id``
    is not an Endpoint ID named by the peer's certificate (R-SEC.0a). Records that
    cannot be parsed are the MTP's business."""
    if not conn.tls or not conn.peer_endpoint_ids or faults.on("tls.accept_wrong_san"):
        return None
    try:
        from_id = records.parse_record(data).from_id
    except records.RecordDecodeError:
        return None
    if from_id in conn.peer_endpoint_ids:
        return None
    return (f"from_id {from_id!r} is not named by the peer certificate "
            f"({', '.join(conn.peer_endpoint_ids)}) (R-SEC.0a)")
