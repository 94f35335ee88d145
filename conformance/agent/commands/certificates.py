"""Certificate commands of ``Device.LocalAgent.`` (TR-181 LocalAgent; TP-469 9.2).

* ``AddCertificate()``: parse the PEM given in ``Certificate`` and add a
  ``Certificate.{i}`` entry with its ``SerialNumber`` and ``Issuer``; the
  command fails when an entry with the same SerialNumber and Issuer, or the
  same Alias, exists (TR-181). The PEM itself is kept with the instance as
  agent-internal data (:func:`certificate_pem`, :func:`trusted_certificates`
  for the MTP layer's trust decisions);
* ``Controller.{i}.AddMyCertificate()``: the same, for the calling
  Controller only, plus a reference from its ``Credential`` list;
* ``Certificate.{i}.Delete()``: remove the entry, its data and the
  references to it from ``Controller.{i}.Credential`` and
  ``ControllerTrust.Credential.{i}.Credential``;
* ``Certificate.{i}.GetFingerprint()``: hash of the DER encoding with the
  requested algorithm (hexBinary).

``SerialNumber`` is written as colon separated upper-case hex octets (the
usual textual form); ``Issuer`` as the RFC 4514 Distinguished Name string.
"""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from conformance.agent.commands import base
from conformance.agent.commands.base import (
    CommandFailed,
    Implementation,
    Invocation,
    Outputs,
)
from conformance.agent.datamodel.store import Store, StoreError
from conformance.agent.faults import register
from conformance.usp import errors

__all__ = [
    "ADD_CERTIFICATE",
    "ADD_MY_CERTIFICATE",
    "CERTIFICATE_TABLE",
    "DELETE_CERTIFICATE",
    "GET_FINGERPRINT",
    "certificate_pem",
    "serial_text",
    "trusted_certificates",
]

CERTIFICATE_TABLE = "Device.LocalAgent.Certificate."
_PEM = base.PRIVATE_PREFIX + "PEM"
_HASHES = {"SHA-1": "sha1", "SHA-224": "sha224", "SHA-256": "sha256", "SHA-384": "sha384",
           "SHA-512": "sha512"}
_REFERRERS = (("Device.LocalAgent.Controller.", "Credential"),
              ("Device.LocalAgent.ControllerTrust.Credential.", "Credential"))

register("certificate.alias_ignored", "TP-469 9.2",
         "AddCertificate() gives the new Certificate entry its own cpe- Alias instead of the "
         "Alias argument")


def serial_text(serial: int) -> str:
    """``0x1a2b`` -> ``1A:2B`` (octets of the serial number)."""
    raw = serial.to_bytes(max(1, (serial.bit_length() + 7) // 8), "big", signed=False)
    return raw.hex(":").upper()


def _parse(pem: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem.encode("utf-8", "surrogateescape"))
    except (ValueError, TypeError, UnicodeError) as exc:
        raise CommandFailed(errors.INVALID_COMMAND_ARGUMENTS,
                            f"Certificate is not a PEM X.509 certificate: {exc}") from None


def _add(inv: Invocation) -> str:
    """Add the Certificate entry for the ``Certificate``/``Alias`` arguments; return its path."""
    store = inv.store
    pem = inv.arg("Certificate")
    cert = _parse(pem)
    serial = serial_text(cert.serial_number) if cert.serial_number >= 0 else str(cert.serial_number)
    issuer = cert.issuer.rfc4514_string()
    if len(serial) > 64 or len(issuer) > 256:
        raise CommandFailed(errors.COMMAND_FAILURE,
                            "the certificate's serial number or issuer is too long for the "
                            "Certificate table")
    alias = inv.arg("Alias")
    for inst in store.instances(CERTIFICATE_TABLE):
        values = store.params(inst)
        if (values.get("SerialNumber"), values.get("Issuer")) == (serial, issuer):
            raise CommandFailed(errors.COMMAND_FAILURE,
                                f"{inst} already holds a certificate with this serial number "
                                "and issuer")
        if alias and values.get("Alias") == alias:
            raise CommandFailed(errors.COMMAND_FAILURE, f"Alias {alias!r} is already used by {inst}")
    if not alias or inv.fault("certificate.alias_ignored"):
        alias = base.fresh_alias(store, CERTIFICATE_TABLE)
    canonical = cert.public_bytes(serialization.Encoding.PEM).decode()
    return store.add(CERTIFICATE_TABLE, {"Alias": alias, "Enable": "true", "SerialNumber": serial,
                                         "Issuer": issuer, _PEM: canonical})


def add_certificate(inv: Invocation) -> Outputs:
    """Device.LocalAgent.AddCertificate()."""
    _add(inv)
    return {}


def add_my_certificate(inv: Invocation) -> Outputs:
    """Device.LocalAgent.Controller.{i}.AddMyCertificate(): only for the Controller itself."""
    store = inv.store
    try:
        owner = store.get(inv.obj_path + "EndpointID")
    except StoreError:
        owner = ""
    if owner != inv.originator:
        raise CommandFailed(errors.PERMISSION_DENIED,
                            "AddMyCertificate() may only be used by the Controller it belongs to")
    path = _add(inv)
    ref = path.rstrip(".")
    current = [v.strip() for v in store.get(inv.obj_path + "Credential").split(",") if v.strip()]
    store.set(inv.obj_path + "Credential", ",".join([*current, ref]))
    return {}


def delete_certificate(inv: Invocation) -> Outputs:
    """Device.LocalAgent.Certificate.{i}.Delete()."""
    store = inv.store
    target = inv.obj_path.rstrip(".")
    for table, name in _REFERRERS:
        if store.object_def(table) is None:
            continue
        for inst in store.instances(table):
            try:
                value = store.get(inst + name)
            except StoreError:
                continue
            items = [v.strip() for v in value.split(",") if v.strip()]
            kept = [v for v in items if v.rstrip(".") != target]
            if kept != items:
                store.set(inst + name, ",".join(kept))
    try:
        store.delete(inv.obj_path)
    except StoreError as exc:
        raise CommandFailed(errors.COMMAND_FAILURE, str(exc)) from None
    return {}


def get_fingerprint(inv: Invocation) -> Outputs:
    """Device.LocalAgent.Certificate.{i}.GetFingerprint()."""
    algorithm = inv.arg("FingerprintAlgorithm")
    try:
        supported = inv.store.get("Device.LocalAgent.SupportedFingerprintAlgorithms")
    except StoreError:
        supported = ""
    allowed = [a.strip() for a in supported.split(",") if a.strip()] or list(_HASHES)
    if algorithm not in _HASHES or algorithm not in allowed:
        raise CommandFailed(errors.INVALID_COMMAND_ARGUMENTS,
                            f"fingerprint algorithm {algorithm!r} is not supported")
    pem = certificate_pem(inv.store, inv.obj_path)
    if pem is None:
        raise CommandFailed(errors.COMMAND_FAILURE, f"{inv.obj_path} holds no certificate data")
    der = _parse(pem).public_bytes(serialization.Encoding.DER)
    return {"Fingerprint": hashlib.new(_HASHES[algorithm], der).hexdigest().upper()}


def certificate_pem(store: Store, inst_path: str) -> str | None:
    """The PEM kept for a Certificate entry (None when it has none)."""
    if not store.exists(inst_path):
        return None
    value = base.private_values(store, inst_path).get(_PEM)
    return value if isinstance(value, str) and value else None


def trusted_certificates(store: Store) -> dict[str, str]:
    """PEM of every enabled Certificate entry, by instance path."""
    out: dict[str, str] = {}
    for inst in store.instances(CERTIFICATE_TABLE):
        pem = certificate_pem(store, inst)
        if pem is not None and store.get(inst + "Enable") in ("true", "1"):
            out[inst] = pem
    return out


ADD_CERTIFICATE = Implementation(add_certificate, notes="adds a Certificate.{i} entry")
ADD_MY_CERTIFICATE = Implementation(add_my_certificate,
                                    notes="adds a Certificate.{i} entry for the calling Controller")
DELETE_CERTIFICATE = Implementation(delete_certificate, notes="removes the entry and references")
GET_FINGERPRINT = Implementation(get_fingerprint, notes="hash of the DER certificate")
