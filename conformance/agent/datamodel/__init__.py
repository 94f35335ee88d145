"""TR-181 data model definitions of the reference Agent (facts generated from the BBF XML).

See :mod:`conformance.agent.datamodel.defs`; ``scripts/gen_datamodel.py``
regenerates the shipped ``tr181.json``.
"""

from __future__ import annotations

from conformance.agent.datamodel.defs import (
    ArgDef,
    ArgObjectDef,
    CommandDef,
    DataModel,
    DefinitionsError,
    EventDef,
    ObjectDef,
    ParamDef,
    Profile,
    cmd_type,
    load_definitions,
    obj_access_type,
    param_access_type,
    param_value_type,
    validate_value,
    value_change_type,
)

__all__ = [
    "ArgDef",
    "ArgObjectDef",
    "CommandDef",
    "DataModel",
    "DefinitionsError",
    "EventDef",
    "ObjectDef",
    "ParamDef",
    "Profile",
    "cmd_type",
    "load_definitions",
    "obj_access_type",
    "param_access_type",
    "param_value_type",
    "validate_value",
    "value_change_type",
]
