"""Matchers: compare an observed USP message mapping with a case's expectation.

A case step says what it expects as a YAML value shaped like the protobuf
message, as :func:`conformance.usp.messages.to_mapping` renders it:
snake_case field names, enums as their names, map fields as mappings,
repeated fields as lists, and fields at their default value included.
:func:`compile_matcher` turns that value into a :class:`Matcher` (the loader
does this when a case file is collected, so mistakes surface before any run)
and :meth:`Matcher.match` checks an observed mapping against it. Every
mismatch is reported with WHERE it is (a path into the observed data, such as
``add_resp.created_obj_results[0].oper_status.oper_success.unique_keys``),
what was EXPECTED and what was OBSERVED, so a failed TP-469 metric can show
both sides. Matching never raises, whatever the observed data.

The case-format contract
------------------------

Mappings
    A plain mapping is *partial*: every key it names must match, keys it does
    not name are ignored. ``{$exact: {...}}`` makes one mapping level exact:
    an observed key it does not name is a mismatch unless its value is a
    protobuf default (``""``, ``0``, ``false``, ``[]``, ``{}``), because
    ``to_mapping`` includes defaults (an enum's zero name and a 64-bit
    ``"0"`` are not recognised as defaults). Nested mappings stay partial unless
    they are wrapped in ``$exact`` too. A key that the expectation names but
    the observed mapping lacks is reported as ``missing``.

Lists
    A plain list needs the same length and an element-wise match in order.
    ``{$unordered: [...]}``: same length, any order (a one-to-one assignment
    of observed items to expected items is searched for).
    ``{$contains: [...]}``: every expected item matches a *distinct* observed
    item; other observed items are allowed.
    ``{$length: n}`` or ``{$length: {$min: a, $max: b}}`` (either bound may
    be left out) checks the size of a list, a mapping or a string.

Scalars
    Equal after bringing the YAML value to the protobuf form. When exactly one
    side is a string, the other side's text form is compared with it: numbers
    as ``str(n)``, booleans as ``"true"``/``"false"``. So ``value: 1`` and
    ``value: true`` match the string parameter values ``"1"`` and ``"true"``
    (USP carries parameter values as strings, R-ENC.6), and 64-bit integer fields,
    which protobuf renders as strings, match a YAML number. Otherwise a bool
    only equals a bool, numbers compare numerically, and ``null`` equals only
    ``null`` (write ``$absent`` for a missing field).

Operators
    A mapping whose keys all start with ``$`` is an operator mapping; several
    operators in one mapping must all hold (``{$gt: 0, $lt: 10}``). Mixing
    ``$`` keys and field names in one mapping is a syntax error. Unless said
    otherwise an operator needs the observed key to be present.

    * ``$any: true``: any value; the key must be present.
    * ``$absent: true``: the key is missing or holds a protobuf default value.
    * ``$present: true``: the opposite of ``$absent`` (present, not a default).
    * ``$regex: re``: Python :func:`re.fullmatch` on a scalar's text form.
    * ``$one_of: [..]``: equal (by the scalar rule) to one of the values.
    * ``$type: t``: ``string``; ``int`` (an int, or a string of decimal
      digits, since USP parameter values and 64-bit fields are strings);
      ``bool`` (a bool, or ``"true"``, ``"false"``, ``"1"``, ``"0"``);
      ``list``; ``map``; ``path`` (a string that is a valid USP path, judged
      by :func:`conformance.usp.paths.is_valid_path`).
    * ``$not: m``: the matcher ``m`` does not match (so a missing key matches
      ``$not`` of anything that needs presence).
    * ``$ne: v``: not equal to the plain value ``v``.
    * ``$gt``, ``$ge``, ``$lt``, ``$le``: numeric comparison of a number or a
      numeric string with the given bound.
    * ``$startswith: s`` / ``$contains_text: s``: on a scalar's text form.
    * ``$error_code: appropriate``: an error code appropriate (TP-469's
      wording) for the message kind in the match context
      (``context["message_kind"]``, e.g. ``"add"``), judged by
      :func:`conformance.usp.errors.is_appropriate`.
    * ``$code_in: [7004, 7016]``: an error code in the list.
    * ``$capture: name``: records the observed value under ``name`` in
      :attr:`MatchResult.captures`. Alone it matches any present value;
      beside other operators (``{$regex: "...", $capture: x}``) it captures
      only when they match.
    * ``$all: [m, ..]``: every matcher matches. ``$any_of: [m, ..]``: at least
      one does (the first that does provides the captures).
    * ``$keys: [a, b]`` with ``$optional_keys: [c]``: a mapping whose key set
      is exactly ``a``, ``b`` plus, optionally, ``c`` (TP-469 1.1 metric 2:
      ``unique_keys`` holds Recipient and ID, and Alias where supported).

    An unknown operator, or an operator given a value of the wrong shape, is a
    :class:`MatcherSyntaxError` at compile time naming its place in the
    expectation (and, for unknown operators, the valid ones).

    Captures are recorded only where a value's own operator mapping matched;
    captures made inside a failed ``$any_of`` branch, a ``$not`` or a rejected
    ``$unordered``/``$contains`` pairing are dropped. A name captured twice
    keeps the last value.

:func:`substitute` fills ``{name}`` and ``{alt.name}`` placeholders (captured
values, EUT-profile alternates) into an expectation or a request before use.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from conformance.usp.errors import is_appropriate
from conformance.usp.paths import is_valid_path

__all__ = [
    "OPERATORS",
    "MatchResult",
    "Matcher",
    "MatcherSyntaxError",
    "Mismatch",
    "UnknownVariable",
    "compile_matcher",
    "substitute",
]


# --- errors -----------------------------------------------------------------------------


class MatcherSyntaxError(ValueError):
    """An expectation is not a valid matcher; raised by :func:`compile_matcher` only.

    ``where`` is the place in the expectation (prefixed with the ``where``
    given to :func:`compile_matcher`), ``reason`` what is wrong.
    """

    def __init__(self, where: str, reason: str, hint: str = "") -> None:
        self.where = where
        self.reason = reason
        self.hint = hint
        text = f"{reason} at {where or 'the root of the expectation'}"
        super().__init__(f"{text} ({hint})" if hint else text)

    def __reduce__(self) -> tuple[type[MatcherSyntaxError], tuple[str, str, str]]:
        return (type(self), (self.where, self.reason, self.hint))


class UnknownVariable(KeyError):
    """:func:`substitute` met a ``{name}`` that the variables do not define."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.known = sorted(known)
        super().__init__(name)

    def __str__(self) -> str:
        known = ", ".join(self.known) or "none"
        return f"unknown variable {{{self.name}}} (known variables: {known})"

    def __reduce__(self) -> tuple[type[UnknownVariable], tuple[str, list[str]]]:
        return (type(self), (self.name, self.known))


# --- results ----------------------------------------------------------------------------

_LINE_BREAKS = re.compile("[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def _oneline(text: str) -> str:
    return _LINE_BREAKS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


@dataclass(frozen=True)
class Mismatch:
    """One difference: where in the observed data, expected vs observed, and why."""

    path: str
    expected: str
    observed: str
    reason: str

    def __str__(self) -> str:
        return _oneline(f"{self.path or '<root>'}: expected {self.expected}, "
                        f"observed {self.observed} ({self.reason})")


@dataclass
class MatchResult:
    """The outcome of :meth:`Matcher.match`; truthy when it matched."""

    ok: bool
    mismatches: list[Mismatch] = field(default_factory=list)
    captures: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        return "\n".join(str(m) for m in self.mismatches) if self.mismatches else "match"


# --- rendering and scalar rules ---------------------------------------------------------


class _AbsentType:
    """Stands for a key the observed mapping does not have."""

    def __repr__(self) -> str:
        return "<absent>"


_ABSENT: Final = _AbsentType()
_MAX_SHOWN: Final = 200
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_NAME = re.compile(_DOTTED)
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_DIGITS = re.compile(r"[0-9]+")

_Out = tuple[list["Mismatch"], dict[str, Any]]


def _show(value: Any) -> str:
    """A compact one-line rendering (JSON where possible), cut to a readable size."""
    if value is _ABSENT:
        return "<absent>"
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except (TypeError, ValueError, RecursionError):
        try:
            text = repr(value)
        except Exception:  # noqa: BLE001 -- e.g. an int too long to print
            text = f"<{type(value).__name__}>"
    text = _oneline(text)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _text(value: Any) -> str:
    """The protobuf text form of a scalar (booleans lower-case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    try:
        return str(value)
    except ValueError:  # an int longer than Python prints
        return f"<{type(value).__name__}>"


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def _scalar_equal(expected: Any, observed: Any) -> bool:
    """Equality under the case-format scalar rule (see the module docstring)."""
    if not _is_scalar(observed) or not _is_scalar(expected):
        return False
    if expected is None or observed is None:
        return expected is None and observed is None
    exp_str, obs_str = isinstance(expected, str), isinstance(observed, str)
    if exp_str and obs_str:
        return bool(expected == observed)
    if exp_str or obs_str:
        return _text(observed if exp_str else expected) == str(expected if exp_str else observed)
    if isinstance(expected, bool) or isinstance(observed, bool):
        return isinstance(expected, bool) and isinstance(observed, bool) and expected == observed
    return bool(expected == observed)


def _is_default(value: Any) -> bool:
    """True for the protobuf default values ``to_mapping`` prints (and for null)."""
    if value is None or isinstance(value, bool):
        return not value
    if isinstance(value, str):
        return value == ""
    if isinstance(value, (int, float)):
        return bool(value == 0)
    if isinstance(value, (list, tuple, Mapping)):
        return len(value) == 0
    return False


def _number(value: Any) -> int | float | None:
    """A number, or a string holding one; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            if _INTEGER.fullmatch(value):
                return int(value)
            if _DECIMAL.fullmatch(value):
                return float(value)
        except ValueError:  # too many digits to convert
            return None
    return None


def _error_code(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _DIGITS.fullmatch(value) and len(value) <= 10:
        return int(value)
    return None


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if _is_list(value):
        return "list"
    if isinstance(value, Mapping):
        return "map"
    return type(value).__name__


def _join(path: str, key: Any) -> str:
    """``path.key`` for identifier-like keys, ``path["odd.key"]`` otherwise."""
    if isinstance(key, str) and _IDENT.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{_show(key)}]"


def _index(path: str, i: int) -> str:
    return f"{path}[{i}]"


def _at(where: str, op: str) -> str:
    return f"{where}.{op}" if where else op


def _ok(captures: dict[str, Any] | None = None) -> _Out:
    return [], dict(captures or {})


def _miss(path: str, expected: str, observed: str, reason: str) -> _Out:
    return [Mismatch(path, expected, observed, reason)], {}


def _all(outs: Iterable[_Out]) -> _Out:
    mismatches: list[Mismatch] = []
    captures: dict[str, Any] = {}
    for found, caught in outs:
        mismatches.extend(found)
        captures.update(caught)
    return mismatches, captures


# --- matchers ---------------------------------------------------------------------------


class Matcher(ABC):
    """A compiled expectation. Build one with :func:`compile_matcher`."""

    #: Whether the matcher judges an absent key itself (otherwise: ``missing``).
    accepts_absent: bool = False

    def match(self, observed: Any, *, context: Mapping[str, Any] | None = None,
              root: str = "") -> MatchResult:
        """Match ``observed``; never raises. ``root`` prefixes every mismatch path.

        ``context`` carries facts some operators need: ``message_kind`` (a
        request kind such as ``"add"``) for ``$error_code: appropriate``.
        """
        ctx: Mapping[str, Any] = context if isinstance(context, Mapping) else {}
        try:
            mismatches, captures = self._check(observed, root, ctx)
        except Exception as exc:  # noqa: BLE001 -- never raise: a bug must not abort a run
            mismatches = [Mismatch(root, self.expected_text(), _show(observed),
                                   _oneline(f"internal matcher error: {type(exc).__name__}: {exc}"))]
            captures = {}
        return MatchResult(not mismatches, mismatches, captures)

    def _check(self, observed: Any, path: str, ctx: Mapping[str, Any]) -> _Out:
        if observed is _ABSENT and not self.accepts_absent:
            return _miss(path, self.expected_text(), "<absent>", "missing")
        return self._match(observed, path, ctx)

    @abstractmethod
    def _match(self, observed: Any, path: str, ctx: Mapping[str, Any]) -> _Out:
        """Judge ``observed`` (already known to be present unless accepts_absent)."""

    @abstractmethod
    def describe(self) -> Any:
        """A JSON-able rendering of the expectation, in case-file syntax, for reports."""

    def expected_text(self) -> str:
        """One line saying what is expected, used in mismatches."""
        return _show(self.describe())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_show(self.describe())})"


class _Literal(Matcher):
    def __init__(self, value: Any) -> None:
        self.value = value

    def _match(self, observed: Any, path: str, ctx: Mapping[str, Any]) -> _Out:
        if _scalar_equal(self.value, observed):
            return _ok()
        reason = "value differs" if _is_scalar(observed) else f"a {_kind_of(observed)}, not a value"
        return _miss(path, self.expected_text(), _show(observed), reason)

    def describe(self) -> Any:
        return self.value


class _List(Matcher):
    def __init__(self, items: list[Matcher]) -> None:
        self.items = items

    def _match(self, observed: Any, path: str, ctx: Mapping[str, Any]) -> _Out:
        if not _is_list(observed):
            return _miss(path, self.expected_text(), _show(observed), "not a list")
        if len(observed) != len(self.items):
            return _miss(path, self.expected_text(), _show(observed),
                         f"{len(observed)} items, expected {len(self.items)}")
        return _all(item._check(value, _index(path, i), ctx)
                    for i, (item, value) in enumerate(zip(self.items, observed)))

    def describe(self) -> Any:
        return [item.describe() for item in self.items]


class _Map(Matcher):
    def __init__(self, fields: dict[str, Matcher], *, exact: bool) -> None:
        self.fields = fields
        self.exact = exact

    def _match(self, observed: Any, path: str, ctx: Mapping[str, Any]) -> _Out:
        if not isinstance(observed, Mapping):
            return _miss(path, self.expected_text(), _show(observed), "not a mapping")
        outs = [child._check(observed.get(key, _ABSENT), _join(path, key), ctx)
                for key, child in self.fields.items()]
        if self.exact:  # extra keys sorted: protobuf map order is arbitrary
            extra = sorted((k for k, v in observed.items()
                            if k not in self.fields and not _is_default(v)), key=_show)
            outs.extend(_miss(_join(path, key), "no such key ($exact)", _show(observed[key]),
                              "unexpected key") for key in extra)
        return _all(outs)

    def describe(self) -> Any:
        plain = {key: child.describe() for key, child in self.fields.items()}
        return {"$exact": plain} if self.exact else plain


class _Ops(Matcher):
    """Several operators of one mapping (all must hold), with an optional capture."""

    def __init__(self, checks: list[Matcher], capture: str | None) -> None:
        self.checks = checks
        self.capture = capture
        self.accepts_absent = capture is None and all(c.accepts_absent for c in checks)

    def _match(self, observed: Any, path: str, ctx: Mapping[str, Any]) -> _Out:
        mismatches, captures = _all(c._check(observed, path, ctx) for c in self.checks)
        if not mismatches and self.capture is not None:
            captures[self.capture] = observed
        return mismatches, captures

    def describe(self) -> Any:
        out: dict[str, Any] = {}
        for check in self.checks:
            desc = check.describe()
            if isinstance(desc, dict) and all(str(k).startswith("$") for k in desc):
                out.update(desc)
            else:  # cannot happen for compiled operators; keep the rendering total
                out.setdefault("$all", []).append(desc)
        if self.capture is not None:
            out["$capture"] = self.capture
        return out

    def expected_text(self) -> str:
        text = " and ".join(c.expected_text() for c in self.checks) or "any value"
        return f"{text} (captured as {self.capture})" if self.capture else text


class _AnyValue(Matcher):
    def _match(self, observed: Any, path: str, ctx: Mapping[str, Any]) -> _Out:
        return _ok()

    def describe(self) -> Any:
        return {"$any": True}

    def expected_text(self) -> str:
        return "any value"


class _Presence(Matcher):
    accepts_absent = True

    def __init__(self, *, absent: bool) -> None:
        self.absent = absent

    def _match(self, observed: Any, path: str, ctx: Mapping[str, Any]) -> _Out:
        missing = observed is _ABSENT or _is_default(observed)
        if missing == self.absent:
            return _ok()
        if self.absent:
            return _miss(path, self.expected_text(), _show(observed), "present")
        reason = "missing" if observed is _ABSENT else "default value"
        return _miss(path, self.expected_text(), _show(observed), reason)

    def describe(self) -> Any:
        return {"$absent": True} if self.absent else {"$present": True}

    def expected_text(self) -> str:
        return "absent or a default value" if self.absent else "present with a non-default value"


class _Regex(Matcher):
    def __init__(self, pattern: str, compiled: re.Pattern[str]) -> None:
        self.pattern = pattern
        self.compiled = compiled

    def _match(self, observed: Any, path: str, ctx: Mapping[str, Any]) -> _Out:
        if observed is None or not _is_scalar(observed):
            return _miss(path, self.expected_text(), _show(observed), f"a {_kind_of(observed)}, not text")
        if self.compiled.fullmatch(_text(observed)):
            return _ok()
        return _miss(path, self.expected_text(), _show(observed), "regex does not match")

    def describe(self) -> Any:
        return {"$regex": self.pattern}

    def expected_text(self) -> str:
        return f"a full match of regex {_show(self.pattern)}"


class _OneOf(Matcher):
    def __init__(self, values: list[Any]) -> None:
        self.values = values

    def _match(self, observed: Any, path: str, ctx: Mapping[str, Any]) -> _Out:
        if any(_scalar_equal(v, observed) for v in self.values):
            return _ok()
        return _miss(path, self.expected_text(), _show(observed), "not one of the values")

    def describe(self) -> Any:
        return {"$one_of": list(self.values)}

    def expected_text(self) -> str:
        return f"one of {_show(self.values)}"


def _is_path(value: Any) -> bool:
    try:
        return isinstance(value, str) and is_valid_path(value)
    except Exception:  # noqa: BLE001 -- the path module promises not to raise; stay total
        return False


_TYPES: Final[dict[str, Callable[[Any], bool]]] = {
    "string": lambda v: isinstance(v, str),
    "int": lambda v: (isinstance(v, int) and not isinstance(v, bool))
    or (isinstance(v, str) and _INTEGER.fullmatch(v) is not None),
    "bool": lambda v: isinstance(v, bool) or v in ("true", "false", "1", "0"),
    "list": _is_list,
    "map": lambda v: isinstance(v, Mapping),
    "path": _is_path,
}


class _Type(Matcher):
    def __init__(self, name: str) -> None:
        self.name = name

    def _match(self, observed: Any, path: str, ctx: Mapping[str, Any]) -> _Out:
        if _TYPES[self.name](observed):
            return _ok()
        kind = _kind_of(observed)
        reason = f"a {kind}" if kind != "string" else "a string that is not of that type"
        return _miss(path, self.expected_text(), _show(observed), reason)

    def describe(self) -> Any:
        return {"$type": self.name}

    def expected_text(self) -> str:
        return f"a value of type {self.name}"


class _Not(Matcher):
    accepts_absent = True

    def __init__(self, inner: Matcher) -> None:
        self.inner = inner

    def _match(self, observed: Any, path: str, ctx: Mapping[str, Any]) -> _Out:
        mismatches, _ = self.inner._check(observed, path, ctx)
        if mismatches:
            return _ok()
        return _miss(path, self.expected_text(), _show(observed), "matches the negated expectation")

    def describe(self) -> Any:
        return {"$not": self.inner.describe()}

    def expected_text(self) -> str:
        return f"not ({self.inner.expected_text()})"


class _NotEqual(Matcher):
    def __init__(self, value: Any) -> None:
        self.value = value

    def _match(self, observed: Any, path: str, ctx: Mapping[str, Any]) -> _Out:
        if not _scalar_equal(self.value, observed):
            return _ok()
        return _miss(path, self.expected_text(), _show(observed), "value is equal")

    def describe(self) -> Any:
        return {"$ne": self.value}

    def expected_text(self) -> str:
        return f"!= {_show(self.value)}"


_ORDER: Final[dict[str, tuple[str, Callable[[Any, Any], bool]]]] = {
    "$gt": (">", lambda a, b: a > b),
    "$ge": (">=", lambda a, b: a >= b),
    "$lt": ("<", lambda a, b: a < b),
    "$le": ("<=", lambda a, b: a <= b),
}


class _Compare(Matcher):
    def __init__(self, op: str, bound: float) -> None:
        self.op = op
        self.bound = bound

    def _match(self, observed: Any, path: str, ctx: Mapping[str, Any]) -> _Out:
        number = _number(observed)
        if number is None:
            return _miss(path, self.expected_text(), _show(observed), "not a number")
        if _ORDER[self.op][1](number, self.bound):
            return _ok()
        return _miss(path, self.expected_text(), _show(observed), "comparison fails")

    def describe(self) -> Any:
        return {self.op: self.bound}

    def expected_text(self) -> str:
        return f"a number {_ORDER[self.op][0]} {_show(self.bound)}"


class _Text(Matcher):
    def __init__(self, op: str, text: str) -> None:
        self.op = op
        self.text = text

    def _match(self, observed: Any, path: str, ctx: Mapping[str, Any]) -> _Out:
        if observed is None or not _is_scalar(observed):
            return _miss(path, self.expected_text(), _show(observed), f"a {_kind_of(observed)}, not text")
        text = _text(observed)
        if self.op == "$startswith":
            if text.startswith(self.text):
                return _ok()
            return _miss(path, self.expected_text(), _show(observed), "prefix differs")
        if self.text in text:
            return _ok()
        return _miss(path, self.expected_text(), _show(observed), "text not found")

    def describe(self) -> Any:
        return {self.op: self.text}

    def expected_text(self) -> str:
        verb = "starting with" if self.op == "$startswith" else "containing"
        return f"text {verb} {_show(self.text)}"


class _AppropriateCode(Matcher):
    def _match(self, observed: Any, path: str, ctx: Mapping[str, Any]) -> _Out:
        code = _error_code(observed)
        kind = ctx.get("message_kind")
        if not isinstance(kind, str):
            return _miss(path, self.expected_text(), _show(observed),
                         "the match context gives no message_kind")
        expected = f"an error code appropriate for {kind}"
        if code is None:
            return _miss(path, expected, _show(observed), "not an error code")
        try:
            fits = is_appropriate(code, kind)
        except ValueError:
            return _miss(path, expected, _show(observed),
                         f"unknown message kind {kind!r} in the match context")
        if fits:
            return _ok()
        return _miss(path, expected, _show(observed), f"{code} is not appropriate for {kind}")

    def describe(self) -> Any:
        return {"$error_code": "appropriate"}

    def expected_text(self) -> str:
        return "an error code appropriate for the message kind"


class _CodeIn(Matcher):
    def __init__(self, codes: list[int]) -> None:
        self.codes = codes

    def _match(self, observed: Any, path: str, ctx: Mapping[str, Any]) -> _Out:
        code = _error_code(observed)
        if code is None:
            return _miss(path, self.expected_text(), _show(observed), "not an error code")
        if code in self.codes:
            return _ok()
        return _miss(path, self.expected_text(), _show(observed), "code not in the list")

    def describe(self) -> Any:
        return {"$code_in": list(self.codes)}

    def expected_text(self) -> str:
        return f"an error code in {_show(self.codes)}"


class _AllOf(Matcher):
    accepts_absent = True

    def __init__(self, items: list[Matcher]) -> None:
        self.items = items

    def _match(self, observed: Any, path: str, ctx: Mapping[str, Any]) -> _Out:
        return _all(item._check(observed, path, ctx) for item in self.items)

    def describe(self) -> Any:
        return {"$all": [item.describe() for item in self.items]}

    def expected_text(self) -> str:
        return "all of (" + "; ".join(item.expected_text() for item in self.items) + ")"


class _AnyOf(Matcher):
    accepts_absent = True

    def __init__(self, items: list[Matcher]) -> None:
        self.items = items

    def _match(self, observed: Any, path: str, ctx: Mapping[str, Any]) -> _Out:
        for item in self.items:
            out = item._check(observed, path, ctx)
            if not out[0]:
                return out
        return _miss(path, self.expected_text(), _show(observed), "no alternative matches")

    def describe(self) -> Any:
        return {"$any_of": [item.describe() for item in self.items]}

    def expected_text(self) -> str:
        return "any of (" + " | ".join(item.expected_text() for item in self.items) + ")"


class _Keys(Matcher):
    def __init__(self, keys: list[str], optional: list[str]) -> None:
        self.keys = keys
        self.optional = optional

    def _match(self, observed: Any, path: str, ctx: Mapping[str, Any]) -> _Out:
        if not isinstance(observed, Mapping):
            return _miss(path, self.expected_text(), _show(observed), "not a mapping")
        allowed = set(self.keys) | set(self.optional)
        missing = [k for k in self.keys if k not in observed]
        extra = sorted((k for k in observed if k not in allowed), key=_show)
        if not missing and not extra:
            return _ok()
        parts = []
        if missing:
            parts.append("missing " + ", ".join(_show(k) for k in missing))
        if extra:
            parts.append("unexpected " + ", ".join(_show(k) for k in extra))
        shown = "keys " + _show(sorted(observed, key=_show))
        return _miss(path, self.expected_text(), shown, "; ".join(parts))

    def describe(self) -> Any:
        out: dict[str, Any] = {"$keys": list(self.keys)}
        if self.optional:
            out["$optional_keys"] = list(self.optional)
        return out

    def expected_text(self) -> str:
        text = f"keys {_show(self.keys)}"
        return f"{text} plus optional {_show(self.optional)}" if self.optional else text


class _Length(Matcher):
    def __init__(self, low: int | None, high: int | None, *, exact: bool) -> None:
        self.low = low
        self.high = high
        self.exact = exact

    def _match(self, observed: Any, path: str, ctx: Mapping[str, Any]) -> _Out:
        if not isinstance(observed, (list, tuple, Mapping, str)):
            return _miss(path, self.expected_text(), _show(observed), f"a {_kind_of(observed)} has no length")
        size = len(observed)
        if (self.low is None or size >= self.low) and (self.high is None or size <= self.high):
            return _ok()
        return _miss(path, self.expected_text(), _show(observed), f"length is {size}")

    def describe(self) -> Any:
        if self.exact:
            return {"$length": self.low}
        bounds = {"$min": self.low, "$max": self.high}
        return {"$length": {k: v for k, v in bounds.items() if v is not None}}

    def expected_text(self) -> str:
        if self.exact:
            return f"length {self.low}"
        if self.low is not None and self.high is not None:
            return f"length from {self.low} to {self.high}"
        if self.low is not None:
            return f"length >= {self.low}"
        return f"length <= {self.high}"


def _assign(candidates: list[list[int]], n_observed: int) -> list[int] | None:
    """A distinct observed index for every expected item, or None.

    Augmenting-path search (Kuhn): expected item i may take any index in
    ``candidates[i]``; an item already placed is moved if it has another.
    """
    owner = [-1] * n_observed

    def place(i: int, seen: set[int]) -> bool:
        for j in candidates[i]:
            if j in seen:
                continue
            seen.add(j)
            if owner[j] == -1 or place(owner[j], seen):
                owner[j] = i
                return True
        return False

    for i in range(len(candidates)):
        if not place(i, set()):
            return None
    chosen = [0] * len(candidates)
    for j, i in enumerate(owner):
        if i >= 0:
            chosen[i] = j
    return chosen


class _Pairing(Matcher):
    """``$unordered`` (same length, any order) and ``$contains`` (a distinct match each)."""

    def __init__(self, op: str, items: list[Matcher]) -> None:
        self.op = op
        self.items = items

    def _match(self, observed: Any, path: str, ctx: Mapping[str, Any]) -> _Out:
        if not _is_list(observed):
            return _miss(path, self.expected_text(), _show(observed), "not a list")
        if self.op == "$unordered" and len(observed) != len(self.items):
            return _miss(path, self.expected_text(), _show(observed),
                         f"{len(observed)} items, expected {len(self.items)}")
        outs = [[item._check(value, _index(path, j), ctx) for j, value in enumerate(observed)]
                for item in self.items]
        candidates = [[j for j, out in enumerate(row) if not out[0]] for row in outs]
        chosen = _assign(candidates, len(observed))
        if chosen is not None:
            return _all(outs[i][j] for i, j in enumerate(chosen))
        lonely = [i for i, row in enumerate(candidates) if not row]
        if lonely:
            return _all(_miss(path, self.items[i].expected_text(), _show(observed),
                              f"no item matches expected item [{i}]") for i in lonely)
        reason = ("no one-to-one assignment of items" if self.op == "$unordered"
                  else "not enough distinct matching items")
        return _miss(path, self.expected_text(), _show(observed), reason)

    def describe(self) -> Any:
        return {self.op: [item.describe() for item in self.items]}

    def expected_text(self) -> str:
        items = _show([item.describe() for item in self.items])
        if self.op == "$unordered":
            return f"{items} in any order"
        return f"a list containing {items}"


# --- compiling --------------------------------------------------------------------------

_Builder = Callable[[Any, str, Mapping[str, Any]], Matcher]


def _need(ok: bool, where: str, reason: str) -> None:
    if not ok:
        raise MatcherSyntaxError(where, reason)


def _flag(op: str) -> Callable[[Any, str], bool]:
    def read(arg: Any, where: str) -> bool:
        _need(arg is None or isinstance(arg, bool), where, f"{op} takes true or false")
        return arg is not False
    return read


def _matchers(arg: Any, where: str, op: str) -> list[Matcher]:
    _need(_is_list(arg), where, f"{op} takes a list")
    return [_compile(item, _index(where, i)) for i, item in enumerate(arg)]


def _scalar_list(arg: Any, where: str, op: str, *, allow_empty: bool = False) -> list[Any]:
    _need(_is_list(arg) and (allow_empty or len(arg) > 0) and all(_is_scalar(v) for v in arg),
          where, f"{op} takes a{'' if allow_empty else ' non-empty'} list of plain values")
    return list(arg)


def _build_any(arg: Any, where: str, spec: Mapping[str, Any]) -> Matcher:
    _need(arg is None or arg is True, where, "$any takes true")
    return _AnyValue()


def _build_absent(arg: Any, where: str, spec: Mapping[str, Any]) -> Matcher:
    return _Presence(absent=_flag("$absent")(arg, where))


def _build_present(arg: Any, where: str, spec: Mapping[str, Any]) -> Matcher:
    return _Presence(absent=not _flag("$present")(arg, where))


def _build_regex(arg: Any, where: str, spec: Mapping[str, Any]) -> Matcher:
    _need(isinstance(arg, str), where, "$regex takes a string")
    try:
        compiled = re.compile(arg)
    except (re.error, OverflowError, RecursionError, ValueError) as exc:
        raise MatcherSyntaxError(where, f"invalid regex {arg!r}: {exc}") from None
    return _Regex(arg, compiled)


def _build_one_of(arg: Any, where: str, spec: Mapping[str, Any]) -> Matcher:
    return _OneOf(_scalar_list(arg, where, "$one_of"))


def _build_type(arg: Any, where: str, spec: Mapping[str, Any]) -> Matcher:
    _need(isinstance(arg, str) and arg in _TYPES, where,
          f"$type takes one of {', '.join(_TYPES)}")
    return _Type(arg)


def _build_not(arg: Any, where: str, spec: Mapping[str, Any]) -> Matcher:
    return _Not(_compile(arg, where))


def _build_ne(arg: Any, where: str, spec: Mapping[str, Any]) -> Matcher:
    _need(_is_scalar(arg), where, "$ne takes a plain value")
    return _NotEqual(arg)


def _build_order(op: str) -> _Builder:
    def build(arg: Any, where: str, spec: Mapping[str, Any]) -> Matcher:
        bound = _number(arg)
        _need(bound is not None and not math.isnan(bound), where,
              f"{op} takes a number (or a string holding one)")
        assert bound is not None
        return _Compare(op, bound)
    return build


def _build_text(op: str) -> _Builder:
    def build(arg: Any, where: str, spec: Mapping[str, Any]) -> Matcher:
        _need(arg is not None and _is_scalar(arg), where, f"{op} takes a string")
        return _Text(op, _text(arg))
    return build


def _build_error_code(arg: Any, where: str, spec: Mapping[str, Any]) -> Matcher:
    _need(arg == "appropriate", where, "$error_code takes 'appropriate'")
    return _AppropriateCode()


def _build_code_in(arg: Any, where: str, spec: Mapping[str, Any]) -> Matcher:
    codes = _scalar_list(arg, where, "$code_in")
    _need(all(isinstance(c, int) and not isinstance(c, bool) for c in codes), where,
          "$code_in takes a list of integer error codes")
    return _CodeIn(codes)


def _build_all(arg: Any, where: str, spec: Mapping[str, Any]) -> Matcher:
    items = _matchers(arg, where, "$all")
    _need(bool(items), where, "$all takes a non-empty list")
    return _AllOf(items)


def _build_any_of(arg: Any, where: str, spec: Mapping[str, Any]) -> Matcher:
    items = _matchers(arg, where, "$any_of")
    _need(bool(items), where, "$any_of takes a non-empty list")
    return _AnyOf(items)


def _build_keys(arg: Any, where: str, spec: Mapping[str, Any]) -> Matcher:
    keys = [_text(k) for k in _scalar_list(arg, where, "$keys", allow_empty=True)]
    optional_arg = spec.get("$optional_keys", [])
    optional_where = f"{where.rsplit('.', 1)[0]}.$optional_keys" if "." in where else "$optional_keys"
    optional = [_text(k) for k in _scalar_list(optional_arg, optional_where, "$optional_keys",
                                                allow_empty=True)]
    both = sorted(set(keys) & set(optional))
    _need(not both, optional_where, f"keys {both} are both required and optional")
    return _Keys(keys, optional)


def _size(value: Any, where: str, what: str) -> int:
    _need(isinstance(value, int) and not isinstance(value, bool) and value >= 0, where,
          f"{what} takes a non-negative integer")
    return int(value)


def _build_length(arg: Any, where: str, spec: Mapping[str, Any]) -> Matcher:
    if not isinstance(arg, Mapping):
        size = _size(arg, where, "$length")
        return _Length(size, size, exact=True)
    unknown = [k for k in arg if k not in ("$min", "$max")]
    _need(not unknown and len(arg) > 0, where, "$length takes n or {$min: a, $max: b}")
    low = _size(arg["$min"], _at(where, "$min"), "$min") if "$min" in arg else None
    high = _size(arg["$max"], _at(where, "$max"), "$max") if "$max" in arg else None
    _need(low is None or high is None or low <= high, where, "$min is greater than $max")
    return _Length(low, high, exact=False)


def _build_exact(arg: Any, where: str, spec: Mapping[str, Any]) -> Matcher:
    _need(isinstance(arg, Mapping) and not _operator_keys(arg), where,
          "$exact takes a mapping of field names")
    return _Map(_fields(arg, where), exact=True)


def _build_pairing(op: str) -> _Builder:
    def build(arg: Any, where: str, spec: Mapping[str, Any]) -> Matcher:
        return _Pairing(op, _matchers(arg, where, op))
    return build


_BUILDERS: Final[dict[str, _Builder]] = {
    "$any": _build_any,
    "$absent": _build_absent,
    "$present": _build_present,
    "$regex": _build_regex,
    "$one_of": _build_one_of,
    "$type": _build_type,
    "$not": _build_not,
    "$ne": _build_ne,
    "$gt": _build_order("$gt"),
    "$ge": _build_order("$ge"),
    "$lt": _build_order("$lt"),
    "$le": _build_order("$le"),
    "$startswith": _build_text("$startswith"),
    "$contains_text": _build_text("$contains_text"),
    "$error_code": _build_error_code,
    "$code_in": _build_code_in,
    "$all": _build_all,
    "$any_of": _build_any_of,
    "$keys": _build_keys,
    "$length": _build_length,
    "$exact": _build_exact,
    "$unordered": _build_pairing("$unordered"),
    "$contains": _build_pairing("$contains"),
}

#: Every operator a case file may use at the top of an operator mapping.
OPERATORS: Final[frozenset[str]] = frozenset(_BUILDERS) | {"$capture", "$optional_keys"}


def _operator_keys(spec: Mapping[Any, Any]) -> list[str]:
    return [k for k in spec if isinstance(k, str) and k.startswith("$")]


def _field_key(key: Any, where: str) -> str:
    _need(key is not None and _is_scalar(key), where, f"field name {key!r} is not a string")
    return _text(key)


def _fields(spec: Mapping[Any, Any], where: str) -> dict[str, Matcher]:
    out: dict[str, Matcher] = {}
    for key, value in spec.items():
        name = _field_key(key, where)
        out[name] = _compile(value, _join(where, name))
    return out


def _compile_ops(spec: Mapping[str, Any], where: str) -> Matcher:
    checks: list[Matcher] = []
    capture: str | None = None
    for op, arg in spec.items():
        at = _at(where, op)
        if op == "$capture":
            _need(isinstance(arg, str) and _NAME.fullmatch(arg) is not None, at,
                  "$capture takes a variable name (letters, digits, '_', dotted parts)")
            capture = arg
        elif op == "$optional_keys":
            _need("$keys" in spec, at, "$optional_keys needs $keys beside it")
        elif op in ("$min", "$max"):
            raise MatcherSyntaxError(where, f"{op} is only valid inside $length")
        elif op in _BUILDERS:
            checks.append(_BUILDERS[op](arg, at, spec))
        else:
            raise MatcherSyntaxError(where, f"unknown operator {op!r}",
                                     "valid operators: " + ", ".join(sorted(OPERATORS)))
    if capture is None and len(checks) == 1:
        return checks[0]
    return _Ops(checks, capture)


def _compile(expected: Any, where: str) -> Matcher:
    if isinstance(expected, Mapping):
        ops = _operator_keys(expected)
        if ops and len(ops) != len(expected):
            names = [_text(k) for k in expected if k not in ops]
            raise MatcherSyntaxError(
                where, f"mapping mixes operators {ops} with field names {names}",
                "put the operators under the field they check, or use $all")
        if ops:
            return _compile_ops(expected, where)
        return _Map(_fields(expected, where), exact=False)
    if _is_list(expected):
        return _List([_compile(item, _index(where, i)) for i, item in enumerate(expected)])
    if isinstance(expected, (datetime.date, datetime.time)):
        raise MatcherSyntaxError(where, f"YAML read {expected!s} as a date/time; quote it")
    if _is_scalar(expected):
        return _Literal(expected)
    raise MatcherSyntaxError(where, f"unsupported value of type {type(expected).__name__}")


def compile_matcher(expected: Any, *, where: str = "") -> Matcher:
    """Compile a case-file expectation into a :class:`Matcher`.

    ``where`` names the expectation's place in the case file; it prefixes the
    location in a :class:`MatcherSyntaxError`, the only exception raised.
    """
    try:
        return _compile(expected, where)
    except RecursionError:
        raise MatcherSyntaxError(where, "expectation is nested too deeply") from None


# --- substitution -----------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{\{|\{(" + _DOTTED + r")\}")


def substitute(template: Any, variables: Mapping[str, Any]) -> Any:
    """Fill ``{name}`` / ``{alt.name}`` placeholders in strings, recursively.

    Mappings (keys too), lists and tuples are copied with their strings
    filled. A string that is exactly one placeholder becomes the variable's
    value, type and all; inside longer text the value's text form is used
    (booleans ``true``/``false``, null as empty text, lists and mappings as
    JSON). ``{{`` gives a literal ``{``; a brace that does not form
    ``{name}`` (``header {``, ``\\d{3}``) is kept as it is. A dotted name is
    looked up as a whole key first, then through nested mappings
    (``variables["alt"]["name"]``). Raises :class:`UnknownVariable` for a
    name that is not defined.
    """
    if isinstance(template, str):
        return _fill(template, variables, whole=True)
    if isinstance(template, Mapping):
        return {(_fill(k, variables, whole=False) if isinstance(k, str) else k):
                substitute(v, variables) for k, v in template.items()}
    if isinstance(template, list):
        return [substitute(v, variables) for v in template]
    if isinstance(template, tuple):
        return tuple(substitute(v, variables) for v in template)
    return template


def _fill(text: str, variables: Mapping[str, Any], *, whole: bool) -> Any:
    if whole:
        only = _PLACEHOLDER.fullmatch(text)
        if only is not None and only.group(1) is not None:
            return _variable(only.group(1), variables)

    def replace(m: re.Match[str]) -> str:
        name = m.group(1)
        return "{" if name is None else _embed(_variable(name, variables))

    return _PLACEHOLDER.sub(replace, text)


def _embed(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (str, int, float, bool)):
        return _text(value)
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def _variable(name: str, variables: Mapping[str, Any]) -> Any:
    if name in variables:
        return variables[name]
    node: Any = variables
    for part in name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise UnknownVariable(name, _known(variables))
        node = node[part]
    return node


def _known(variables: Mapping[str, Any], prefix: str = "", depth: int = 3) -> Iterator[str]:
    for key, value in variables.items():
        name = f"{prefix}{key}"
        yield name
        if depth > 1 and isinstance(value, Mapping):
            yield from _known(value, f"{name}.", depth - 1)
