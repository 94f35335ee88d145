"""Sans-I/O STOMP 1.2 framing for the USP STOMP MTP (TR-369 "STOMP Binding").

* :mod:`.frames`    - ``Frame``/``HeartBeat`` events, command sets, escaping
* :mod:`.codec`     - ``StompDecoder`` (streaming) and ``encode_frame``
* :mod:`.heartbeat` - ``heart-beat`` header parsing and negotiation
* :mod:`.validate`  - per-frame R-STOMP.* checks returning ``Violation``s
"""

from __future__ import annotations

from conformance.mtp.stomp.codec import (
    DEFAULT_MAX_FRAME_SIZE,
    StompDecoder,
    decode_frame,
    encode_frame,
    encode_heartbeat,
)
from conformance.mtp.stomp.frames import (
    CLIENT_COMMANDS,
    COMMANDS,
    SERVER_COMMANDS,
    UNESCAPED_COMMANDS,
    USP_CONTENT_TYPE,
    Frame,
    HeartBeat,
    StompDecodeError,
    content_length_matches,
    escape_header,
    unescape_header,
)
from conformance.mtp.stomp.heartbeat import format_heartbeat, negotiate_heartbeat, parse_heartbeat
from conformance.mtp.stomp.validate import Role, usp_endpoint_id, validate
from conformance.mtp.stomp.violation import Violation

__all__ = [
    "CLIENT_COMMANDS", "COMMANDS", "DEFAULT_MAX_FRAME_SIZE", "SERVER_COMMANDS",
    "UNESCAPED_COMMANDS", "USP_CONTENT_TYPE", "Frame", "HeartBeat", "Role",
    "StompDecodeError", "StompDecoder", "Violation", "content_length_matches",
    "decode_frame", "encode_frame", "encode_heartbeat", "escape_header",
    "format_heartbeat", "negotiate_heartbeat", "parse_heartbeat", "unescape_header",
    "usp_endpoint_id", "validate",
]
