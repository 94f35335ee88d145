"""Sans-I/O framing for the UNIX Domain Socket MTP (TR-369 R-UDS.*).

* :mod:`.frames`   - layout constants, ``TLV``/``UDSFrame``, ``UDSDecodeError``
* :mod:`.codec`    - ``UDSDecoder`` (streaming) and the encoders
* :mod:`.validate` - per-frame checks returning ``Violation``s
* :mod:`.session`  - Handshake/receive state machine (``UDSConnection``)
* :mod:`.script`   - frames and TLVs described in case files (scenario fields)

The suite's endpoints over sockets are in :mod:`.peer` and :mod:`.server`.
"""

from __future__ import annotations

from conformance.mtp.uds.codec import (
    DEFAULT_MAX_FRAME_SIZE,
    UDSDecoder,
    decode_frame,
    encode_error,
    encode_frame,
    encode_handshake,
    encode_raw_frame,
    encode_record,
    encode_tlv,
    parse_tlvs,
)
from conformance.mtp.uds.frames import (
    HEADER_SIZE,
    SYNC,
    TLV,
    TLV_HEADER_SIZE,
    TLVType,
    UDSDecodeError,
    UDSFrame,
)
from conformance.mtp.uds.session import (
    HANDSHAKE_TIMEOUT,
    Close,
    HandshakeDone,
    Ignored,
    PeerError,
    RecordReceived,
    Send,
    UDSConnection,
    UDSRole,
)
from conformance.mtp.uds.validate import (
    Violation,
    endpoint_id_problem,
    is_usp_record,
    validate_frame,
)

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE", "HANDSHAKE_TIMEOUT", "HEADER_SIZE", "SYNC", "TLV",
    "TLV_HEADER_SIZE", "Close", "HandshakeDone", "Ignored", "PeerError",
    "RecordReceived", "Send", "TLVType", "UDSConnection", "UDSDecodeError",
    "UDSDecoder", "UDSFrame", "UDSRole", "Violation", "decode_frame",
    "encode_error", "encode_frame", "encode_handshake", "encode_raw_frame",
    "encode_record", "encode_tlv", "endpoint_id_problem", "is_usp_record",
    "parse_tlvs", "validate_frame",
]
