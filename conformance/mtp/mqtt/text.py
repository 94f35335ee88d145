"""UTF-8 Encoded Strings (MQTT 5.0 §1.5.4, MQTT 3.1.1 §1.5.3) <-> ``str``.

Decoding never fails: bytes that are not well-formed UTF-8 (including
encoded surrogates and overlong forms) become lone surrogates U+DC80..U+DCFF
(``surrogateescape``).  Encoding maps those back to the original bytes, and
encodes any other lone surrogate the way CESU-8 would (``surrogatepass``),
which is exactly the ill-formed UTF-8 a test may want to send.  So
``encode_text(decode_text(b)) == b`` for every ``b``.
"""

from __future__ import annotations

import codecs
import re
from typing import Final

_ERRORS: Final = "conformance.mqtt.text"


def _escape_handler(exc: UnicodeError) -> tuple[bytes, int]:
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    out = bytearray()
    for ch in exc.object[exc.start:exc.end]:
        cp = ord(ch)
        if 0xDC80 <= cp <= 0xDCFF:
            out.append(cp - 0xDC00)
        else:
            out += ch.encode("utf-8", "surrogatepass")
    return bytes(out), exc.end


codecs.register_error(_ERRORS, _escape_handler)

#: Code points a well-formed UTF-8 string cannot carry (any surrogate here
#: stands for ill-formed input bytes or an encoded surrogate).
SURROGATES: Final = re.compile("[\ud800-\udfff]")
#: The Disallowed Unicode code points (control characters and noncharacters,
#: MQTT 5.0 §1.5.4), which SHOULD NOT appear; U+0000 is checked separately.
DISALLOWED: Final = re.compile(
    "[\x01-\x1f\x7f-\x9f\ufdd0-\ufdef\ufffe\uffff"
    + "".join(f"{chr(plane * 0x10000 + 0xFFFE)}{chr(plane * 0x10000 + 0xFFFF)}"
              for plane in range(1, 17))
    + "]")


def decode_text(data: bytes) -> str:
    """Bytes of a UTF-8 Encoded String as ``str`` (never raises)."""
    return data.decode("utf-8", "surrogateescape")


def encode_text(text: str) -> bytes:
    """``str`` as UTF-8, restoring the bytes of escaped ill-formed input."""
    return text.encode("utf-8", _ERRORS)


def is_well_formed(text: str) -> bool:
    """True when ``text`` encodes to well-formed UTF-8 (no surrogates)."""
    return SURROGATES.search(text) is None
