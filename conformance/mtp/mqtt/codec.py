"""The MQTT codec in one import: ``decode``/``MQTTDecoder`` (bytes -> packets)
and ``encode`` (packets -> bytes), for MQTT 3.1.1 and 5.0.  See ``decoder``
and ``encoder`` for the details.
"""

from __future__ import annotations

from conformance.mtp.mqtt.decoder import MQTTDecoder, decode, decode_properties, decode_vbi
from conformance.mtp.mqtt.encoder import WIRE_OVERRIDES, encode, encode_properties, encode_vbi

__all__ = [
    "WIRE_OVERRIDES",
    "MQTTDecoder",
    "decode",
    "decode_properties",
    "decode_vbi",
    "encode",
    "encode_properties",
    "encode_vbi",
]
