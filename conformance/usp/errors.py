"""The USP error-code table (TR-369 "Error Codes", "USP Record Errors").

Holds every individually defined code (7000-7031 from the Messages chapter,
7100-7106 from the MTP chapter), the reserved ranges, the per-message
"appropriate error codes" lists, and :func:`is_appropriate`, which judges
TP-469's "an appropriate error code" wording.

``ErrorCode.applies_to`` convention. It holds request ``oneof`` names from
``usp-msg-1-4.proto`` (see :data:`MESSAGE_KINDS`) plus tokens taken
from the table's Applicability column (and one for Record errors):

* ``"any"`` -- the table says "Any": every message kind.
* ``"error"`` -- the table says "Error Message": the code is reported in
  the top-level Error Message, so it fits a failure of any message kind.
* ``"requested_path"`` -- the table says "Any requested_path": every kind
  whose request names a path (:data:`REQUESTED_PATH_KINDS`, i.e. all but
  ``notify`` and ``get_supported_protocol``).
* ``"record"`` -- used for 7100-7106, which report problems with a USP
  Record rather than with a message.

:func:`applicable_kinds` expands these tokens to concrete message kinds.

Appropriateness. TR-369 states applicability twice: the main table and the
per-message "Supported Error Codes" sections, and the two disagree in
places (Get lists 7010 although the table says Add/Set; Set omits 7025; Get
omits 7007; Operate omits 7023...). TP-469 points at the main table, but a
suite should not fail an Agent for following the message's own section, so
:func:`is_appropriate` accepts a code when *either* source allows it, and
always accepts vendor codes 7800-7999 (the spec lets implementations use
them with any Error or Response). ``basis="table"`` or ``basis="section"``
narrows the judgement to one source.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

__all__ = [
    "ANY",
    "ANY_REQUESTED_PATH",
    "DATA_MODEL_ERROR_RANGE",
    "ERROR_CODES",
    "ERROR_MESSAGE",
    "MESSAGE_KINDS",
    "RECORD",
    "RECORD_ERROR_RANGE",
    "REQUESTED_PATH_KINDS",
    "SUPPORTED_ERROR_CODES",
    "USP_ERROR_RANGE",
    "VENDOR_ERROR_RANGE",
    "Basis",
    "ErrorCode",
    "applicable_kinds",
    "is_appropriate",
    "is_data_model_code",
    "is_record_code",
    "is_usp_code",
    "is_vendor_code",
    "lookup",
    "name_of",
    "supported_codes",
]

Basis = Literal["either", "table", "section"]

#: Request ``oneof`` names (``Request.req_type`` in usp-msg-1-4.proto).
MESSAGE_KINDS: Final[frozenset[str]] = frozenset({
    "get", "get_supported_dm", "get_instances", "set", "add", "delete",
    "operate", "notify", "get_supported_protocol", "register", "deregister",
})
#: Kinds whose request carries a path (the table's "Any requested_path").
REQUESTED_PATH_KINDS: Final[frozenset[str]] = MESSAGE_KINDS - {"notify", "get_supported_protocol"}

ANY: Final = "any"
ERROR_MESSAGE: Final = "error"
ANY_REQUESTED_PATH: Final = "requested_path"
RECORD: Final = "record"

USP_ERROR_RANGE: Final = range(7000, 8000)
RECORD_ERROR_RANGE: Final = range(7100, 7200)
DATA_MODEL_ERROR_RANGE: Final = range(7200, 7300)
VENDOR_ERROR_RANGE: Final = range(7800, 8000)


@dataclass(frozen=True)
class ErrorCode:
    """One row of the error-code table; ``name`` is the spec's name verbatim."""

    code: int
    name: str
    applies_to: frozenset[str]
    description: str = ""


# --- Constants, named after the spec names -----------------------------------
MESSAGE_FAILED: Final = 7000
MESSAGE_NOT_SUPPORTED: Final = 7001
REQUEST_DENIED: Final = 7002
INTERNAL_ERROR: Final = 7003
INVALID_ARGUMENTS: Final = 7004
RESOURCES_EXCEEDED: Final = 7005
PERMISSION_DENIED: Final = 7006
INVALID_CONFIGURATION: Final = 7007
INVALID_PATH_SYNTAX: Final = 7008
PARAMETER_ACTION_FAILED: Final = 7009
UNSUPPORTED_PARAMETER: Final = 7010
INVALID_TYPE: Final = 7011
INVALID_VALUE: Final = 7012
ATTEMPT_TO_UPDATE_NON_WRITEABLE_PARAMETER: Final = 7013
VALUE_CONFLICT: Final = 7014
OPERATION_ERROR: Final = 7015
OBJECT_DOES_NOT_EXIST: Final = 7016
OBJECT_COULD_NOT_BE_CREATED: Final = 7017
OBJECT_IS_NOT_A_TABLE: Final = 7018
ATTEMPT_TO_CREATE_NON_CREATABLE_OBJECT: Final = 7019
OBJECT_COULD_NOT_BE_UPDATED: Final = 7020
REQUIRED_PARAMETER_FAILED: Final = 7021
COMMAND_FAILURE: Final = 7022
COMMAND_CANCELED: Final = 7023
DELETE_FAILURE: Final = 7024
OBJECT_EXISTS_WITH_DUPLICATE_KEY: Final = 7025
INVALID_PATH: Final = 7026
INVALID_COMMAND_ARGUMENTS: Final = 7027
REGISTER_FAILURE: Final = 7028
ALREADY_IN_USE: Final = 7029
DEREGISTER_FAILURE: Final = 7030
PATH_ALREADY_REGISTERED: Final = 7031
RECORD_COULD_NOT_BE_PARSED: Final = 7100
SECURE_SESSION_REQUIRED: Final = 7101
SECURE_SESSION_NOT_SUPPORTED: Final = 7102
SEGMENTATION_AND_REASSEMBLY_NOT_SUPPORTED: Final = 7103
INVALID_RECORD_VALUE: Final = 7104
SESSION_CONTEXT_TERMINATED: Final = 7105
SESSION_CONTEXT_NOT_ALLOWED: Final = 7106

_ADD_SET: Final = frozenset({"add", "set"})

# (code, spec name, applies_to, description in our own words)
_ROWS: Final[tuple[tuple[int, str, frozenset[str], str], ...]] = (
    (7000, "Message failed", frozenset({ERROR_MESSAGE}),
     "Catch-all failure; err_msg explains it."),
    (7001, "Message not supported", frozenset({ERROR_MESSAGE}),
     "The receiver does not understand this kind of message."),
    (7002, "Request denied (no reason specified)", frozenset({ANY}),
     "The receiver refuses, or is unable, to handle the request."),
    (7003, "Internal error", frozenset({ANY}),
     "A hardware or software fault inside the receiver."),
    (7004, "Invalid arguments", frozenset({ANY}),
     "The message carries values the receiver rejects."),
    (7005, "Resources exceeded", frozenset({ANY}),
     "The receiver ran out of memory or processing capacity."),
    (7006, "Permission denied", frozenset({ANY}),
     "The sender is not authorised to do this."),
    (7007, "Invalid configuration", frozenset({ANY}),
     "Carrying out the request would leave the receiver broken or unrecoverable."),
    (7008, "Invalid path syntax", frozenset({ANY_REQUESTED_PATH}),
     "A requested path could not be parsed."),
    (7009, "Parameter action failed", frozenset({"set"}),
     "A parameter update failed; err_msg explains why."),
    (7010, "Unsupported parameter", _ADD_SET,
     "The named parameter does not exist in the instantiated data model."),
    (7011, "Invalid type", _ADD_SET,
     "The value string cannot be converted to the parameter's type."),
    (7012, "Invalid value", _ADD_SET,
     "The value is outside the parameter's allowed values."),
    (7013, "Attempt to update non-writeable parameter", _ADD_SET,
     "The parameter is read-only."),
    (7014, "Value conflict", _ADD_SET,
     "The value clashes with the values of other parameters."),
    (7015, "Operation error", frozenset({"add", "set", "delete"}),
     "Creating, updating or deleting an object failed; err_msg explains why."),
    (7016, "Object does not exist", frozenset({ANY}),
     "The path names no object in the instantiated data model."),
    (7017, "Object could not be created", frozenset({"add"}),
     "The new object instance was not created."),
    (7018, "Object is not a table", frozenset({"add", "get_instances"}),
     "The path names an object that is not multi-instance."),
    (7019, "Attempt to create non-creatable object", frozenset({"add"}),
     "The object's table does not allow new instances."),
    (7020, "Object could not be updated", frozenset({"set"}),
     "An object targeted by a Set was not updated."),
    (7021, "Required parameter failed", _ADD_SET,
     "A required parameter failed, so the object failed; details in the "
     "per-parameter errors."),
    (7022, "Command failure", frozenset({"operate"}),
     "An operated command did not complete; err_msg explains why."),
    (7023, "Command canceled", frozenset({"operate"}),
     "An asynchronous command was stopped through Cancel()."),
    (7024, "Delete failure", frozenset({"delete"}),
     "An object instance was not deleted."),
    (7025, "Object exists with duplicate key", _ADD_SET,
     "Another instance already holds these unique key values."),
    (7026, "Invalid path", frozenset({ANY}),
     "The path matches nothing in the supported data model."),
    (7027, "Invalid command arguments", frozenset({"operate"}),
     "The command's input arguments are wrong or unknown."),
    (7028, "Register failure", frozenset({"register"}),
     "A path could not be registered; err_msg explains why."),
    (7029, "Already in use", frozenset({"register"}),
     "Another Agent has already registered the path."),
    (7030, "Deregister failure", frozenset({"deregister"}),
     "A path could not be deregistered; err_msg explains why."),
    (7031, "Path already registered", frozenset({"deregister"}),
     "The path belongs to another Agent, so it cannot be deregistered."),
    (7100, "Record could not be parsed", frozenset({RECORD}),
     "The received Record failed to decode."),
    (7101, "Secure session required", frozenset({RECORD}),
     "The receiver insists on USP-layer (E2E) security."),
    (7102, "Secure session not supported", frozenset({RECORD}),
     "The Record asked for USP-layer security the receiver lacks."),
    (7103, "Segmentation and reassembly not supported", frozenset({RECORD}),
     "The Record was segmented but the receiver cannot reassemble."),
    (7104, "Invalid Record value", frozenset({RECORD}),
     "At least one Record field holds a bad value."),
    (7105, "Session Context terminated", frozenset({RECORD}),
     "The current E2E Session Context is being ended."),
    (7106, "Session Context not allowed", frozenset({RECORD}),
     "The receiver does not allow or support Session Context."),
)

#: Every individually defined code, keyed by number.
ERROR_CODES: Final[Mapping[int, ErrorCode]] = MappingProxyType(
    {code: ErrorCode(code, name, applies, desc) for code, name, applies, desc in _ROWS}
)

_VENDOR_ENTRY_NAME: Final = "Vendor defined error codes"
_DATA_MODEL_ENTRY_NAME: Final = "Data model defined error codes"
_RECORD_ENTRY_NAME: Final = "USP Record error codes"


def _codes(*parts: int | tuple[int, int]) -> frozenset[int]:
    """Expand single codes and inclusive (low, high) ranges."""
    out: set[int] = set()
    for part in parts:
        if isinstance(part, tuple):
            out.update(range(part[0], part[1] + 1))
        else:
            out.add(part)
    return frozenset(out)


#: The per-message "appropriate error codes" lists, without the vendor range
#: 7800-7999 that every one of them also names. GetSupportedProtocol has no
#: such section.
SUPPORTED_ERROR_CODES: Final[Mapping[str, frozenset[int]]] = MappingProxyType({
    "add": _codes((7000, 7019), 7026),
    "set": _codes((7000, 7016), 7020, 7021, 7026),
    "delete": _codes((7000, 7008), 7015, 7016, 7018, 7024, 7026),
    "get": _codes((7000, 7006), 7008, 7010, 7016, 7026),
    "get_instances": _codes((7000, 7006), 7008, 7016, 7018, 7026),
    "get_supported_dm": _codes((7000, 7006), 7008, 7016, 7026),
    "register": _codes((7000, 7008), 7016, (7028, 7029)),
    "deregister": _codes((7000, 7008), 7016, 7030),
    "notify": _codes((7000, 7006)),
    "operate": _codes((7000, 7008), 7016, 7022, 7026, 7027),
})


def _is_int(code: object) -> bool:
    return isinstance(code, int) and not isinstance(code, bool)


def is_usp_code(code: int) -> bool:
    """In the 7000-7999 space USP reserves for its errors."""
    return _is_int(code) and code in USP_ERROR_RANGE


def is_vendor_code(code: int) -> bool:
    """In the vendor-defined series 7800-7999."""
    return _is_int(code) and code in VENDOR_ERROR_RANGE


def is_record_code(code: int) -> bool:
    """In the USP Record error series 7100-7199 (R-MTP.5, R-MTP.9)."""
    return _is_int(code) and code in RECORD_ERROR_RANGE


def is_data_model_code(code: int) -> bool:
    """In the series 7200-7299 that data models define."""
    return _is_int(code) and code in DATA_MODEL_ERROR_RANGE


def lookup(code: int) -> ErrorCode | None:
    """The table entry for ``code``.

    Defined codes return their row. An undefined code inside the vendor,
    data-model or Record series returns a generic entry named after the
    series (vendor entries apply to ``"any"``; data-model ones to
    ``"any"`` too, as the data model decides; Record ones to ``"record"``).
    Anything else returns None.
    """
    if not _is_int(code):
        return None
    entry = ERROR_CODES.get(code)
    if entry is not None:
        return entry
    if is_vendor_code(code):
        return ErrorCode(code, _VENDOR_ENTRY_NAME, frozenset({ANY}),
                         "Implementation-specific error.")
    if is_data_model_code(code):
        return ErrorCode(code, _DATA_MODEL_ENTRY_NAME, frozenset({ANY}),
                         "Error defined by the data model in use.")
    if is_record_code(code):
        return ErrorCode(code, _RECORD_ENTRY_NAME, frozenset({RECORD}),
                         "Undefined code in the Record error series.")
    return None


def name_of(code: int) -> str | None:
    """The spec name of ``code`` (or its series name), None when unknown."""
    entry = lookup(code)
    return entry.name if entry is not None else None


def _normalise_kind(message_kind: str) -> str:
    kind = message_kind.removesuffix("_resp") if isinstance(message_kind, str) else ""
    if kind not in MESSAGE_KINDS and kind != RECORD:
        raise ValueError(f"unknown USP message kind: {message_kind!r}")
    return kind


def applicable_kinds(code: int) -> frozenset[str]:
    """Concrete message kinds the main table marks ``code`` applicable to.

    Expands ``"any"``, ``"error"`` and ``"requested_path"``; ``"record"`` is
    kept as is. Empty for unknown codes.
    """
    entry = lookup(code)
    if entry is None:
        return frozenset()
    out: set[str] = set()
    for token in entry.applies_to:
        if token in (ANY, ERROR_MESSAGE):
            out |= MESSAGE_KINDS
        elif token == ANY_REQUESTED_PATH:
            out |= REQUESTED_PATH_KINDS
        else:
            out.add(token)
    return frozenset(out)


def supported_codes(message_kind: str) -> frozenset[int]:
    """The message's own section list (vendor range excluded); for a kind
    without a section (``get_supported_protocol``) the main-table view.
    Raises ValueError for an unknown kind."""
    kind = _normalise_kind(message_kind)
    if kind in SUPPORTED_ERROR_CODES:
        return SUPPORTED_ERROR_CODES[kind]
    return frozenset(code for code in ERROR_CODES if kind in applicable_kinds(code))


def is_appropriate(code: int, message_kind: str, *, basis: Basis = "either") -> bool:
    """Whether ``code`` is an appropriate error for ``message_kind``.

    ``message_kind`` is a request oneof name (a ``_resp`` suffix is ignored)
    or ``"record"`` for errors about a Record (7100-7106). Vendor codes are
    always appropriate. ``basis`` picks the main table, the per-message
    section, or ``"either"`` (the default; see the module docstring). Raises
    ValueError for an unknown ``message_kind`` or ``basis``; a non-integer
    ``code`` is simply not appropriate.
    """
    if basis not in ("either", "table", "section"):
        raise ValueError(f"unknown basis: {basis!r}")
    kind = _normalise_kind(message_kind)
    if not _is_int(code):
        return False
    if is_vendor_code(code):
        return True
    if kind == RECORD:
        return code in ERROR_CODES and RECORD in ERROR_CODES[code].applies_to
    in_table = code in ERROR_CODES and kind in applicable_kinds(code)
    in_section = code in supported_codes(kind)
    if basis == "table":
        return in_table
    if basis == "section":
        return in_section
    return in_table or in_section
