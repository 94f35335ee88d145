"""Input arguments of an Operate request checked against the command's definition.

TR-369 "Operate Request Fields":

* R-OPR.5: a mandatory input argument that is missing makes the command fail
  with 7027 (Invalid command arguments);
* R-OPR.6: an argument the command does not define is ignored;
* R-OPR.7: an optional argument left out takes its default value.

Arguments inside multi-instance argument objects are sent with instance
numbers (``TimeWindow.1.Start``) and defined with ``{i}``
(``TimeWindow.{i}.Start``). For each instance that is present the mandatory
arguments of that object are required; a top-level argument table with
``minEntries`` >= 1 needs at least that many instances and no more than
``maxEntries``. Values are checked against the argument's TR-106 type and
facets (an invalid value is a 7027 as well).

:func:`check_args` never raises anything but :class:`ArgumentError`, whatever
strings it is given.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from conformance.agent.datamodel.defs import ArgDef, CommandDef, validate_value

__all__ = ["ArgumentError", "CheckedArgs", "check_args", "supported_arg_name"]

_INSTANCE = re.compile(r"(?<=\.)[1-9][0-9]{0,9}(?=\.)")


class ArgumentError(ValueError):
    """The input arguments cannot be used: report 7027 (R-OPR.5)."""


@dataclass
class CheckedArgs:
    """Arguments to run the command with, and what was dropped (R-OPR.6)."""

    args: dict[str, str] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    defaulted: list[str] = field(default_factory=list)


def supported_arg_name(name: str) -> str:
    """``TimeWindow.2.Start`` -> ``TimeWindow.{i}.Start`` (other names unchanged)."""
    return _INSTANCE.sub("{i}", name)


def _owner(name: str) -> str:
    """Argument object an argument is in (``TimeWindow.{i}.``), or "" at top level."""
    head, dot, _leaf = name.rpartition(".")
    return head + dot


def check_args(command: CommandDef, given: Mapping[str, str], *,
               enforce_mandatory: bool = True, ignore_unknown: bool = True,
               apply_defaults: bool = True) -> CheckedArgs:
    """Validate ``given`` against ``command``; raise :class:`ArgumentError` (7027).

    The keyword switches exist for the agent's deliberate faults: turning one
    off breaks R-OPR.5, R-OPR.6 or R-OPR.7 respectively.
    """
    out = CheckedArgs()
    defs = command.input_args
    # instance prefixes present per multi-instance argument object, e.g.
    # {"TimeWindow.{i}.": {"TimeWindow.1.", "TimeWindow.2."}}
    instances: dict[str, set[str]] = {}
    for name, value in given.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise ArgumentError("argument names and values must be strings")
        supported = supported_arg_name(name)
        adef = None if "{" in name else defs.get(supported)
        if adef is None:
            if not ignore_unknown:
                raise ArgumentError(f"{name!r} is not an input argument of {command.name}")
            out.ignored.append(name)
            continue
        problem = validate_value(adef, value)
        if problem:
            raise ArgumentError(f"invalid value for {name}: {problem}")
        out.args[name] = value
        owner, concrete = _owner(supported), _owner(name)
        if "{i}" in owner:
            instances.setdefault(owner, set()).add(concrete)
    _check_tables(command, instances, enforce_minimum=enforce_mandatory)
    for supported, adef in defs.items():
        owner = _owner(supported)
        if "{i}" in owner:
            targets = [c + supported[len(owner):] for c in sorted(instances.get(owner, ()))]
        else:
            targets = [supported]
        for target in targets:
            if target in out.args:
                continue
            if adef.mandatory and enforce_mandatory:
                raise ArgumentError(f"mandatory input argument {target} is missing")
            if not apply_defaults:
                raise ArgumentError(f"input argument {target} is missing")
            default = _default(adef)
            if default is not None:
                out.args[target] = default
                out.defaulted.append(target)
    return out


def _check_tables(command: CommandDef, instances: Mapping[str, set[str]], *,
                  enforce_minimum: bool) -> None:
    for name, obj in command.input_objects.items():
        if not obj.multi_instance or name.count("{i}") != 1:
            continue  # nested tables: only their present instances are checked
        count = len(instances.get(name, ()))
        if enforce_minimum and count < obj.min_entries:
            raise ArgumentError(f"{command.name} needs at least {obj.min_entries} "
                                f"{name} instance(s), got {count}")
        if obj.max_entries is not None and count > obj.max_entries:
            raise ArgumentError(f"{command.name} accepts at most {obj.max_entries} "
                                f"{name} instance(s), got {count}")


def _default(adef: ArgDef) -> str | None:
    if adef.default is None:
        return None
    return adef.default.value
