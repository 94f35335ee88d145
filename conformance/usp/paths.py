"""USP data model Path Name grammar: parse, classify, validate and match paths.

Sans-I/O and purely syntactic. The grammar follows TR-369 "Path Names" and
"Data Model Path Grammar" (R-ARC.7 .. R-ARC.12) with TR-106 naming rules.

Entry points: :func:`parse_path` (text -> immutable :class:`Path`, or a
:class:`PathError` with a character offset; nothing else is ever raised for a
``str`` input), :func:`validate_path` / :func:`is_valid_path`,
:func:`check_instance_number_addressing` (R-MSG.3), the supported data model
helpers (:func:`to_supported_path`) and the structural helpers
:func:`parent`, :func:`join`, :func:`matches` and :func:`is_prefix_of`.

Decisions where the texts are loose or silent (all syntax-only):

* Kinds are told apart by syntax alone.  A path ending in ``.`` is
  ``OBJECT_INSTANCE`` when its last segment is an instance identifier
  (number, ``*``, ``[expression]`` or ``{i}``) and ``OBJECT`` otherwise, so
  both a single-instance object and a table (``Device.LocalAgent.Subscription.``)
  are ``OBJECT``.  ``Ref+.`` ends in a followed reference, not an instance
  identifier, hence ``OBJECT``.
* Absolute paths must start with ``Device.`` (the only data model root USP
  defines) and ``Device`` itself is not a table.  Relative paths (Add
  ``param_settings``, Set ``param_settings``, GetSupportedDM argument names)
  need ``allow_relative=True``; they may start with any name, including a
  child object that happens to be called ``Device``.
* Names follow TR-106: a letter or ``_`` then letters, digits, ``_`` or
  ``-`` (the TR-369 BNF omits ``-``, which vendor prefixes such as
  ``X_EXAMPLE-COM_Foo`` need).
* Instance numbers and ``#n`` list indices are positive integers without
  leading zeros (the BNF ``posnum``) and at most 4294967295 (unsignedInt).
* Expression constants are either ``"quoted"`` (any characters except
  ``"``; ``%22``/``%25`` are percent escapes) or an unquoted token made of
  ``[A-Za-z0-9_+-.:]``.  The BNF only allows integers there, but the spec's
  own examples use ``true``, ``08`` and dateTime values unquoted.
* Spaces or tabs around an expression operator and around ``&&`` are
  tolerated (R-ARC.9a) and dropped from the canonical form;
  ``validate_path(..., allow_whitespace=False)`` reports them (R-ARC.9b).
* ``{i}`` (supported data model notation) may not be followed by an
  instance number and may not be mixed with wildcards, expressions or
  reference following.
* Reference following counts as searching (:attr:`Path.is_search`): the
  addressed instances depend on parameter values, as with expressions.
* An Object (Instance) Path normally ends in ``.``; ``reference_value=True``
  accepts the form without the final dot that TR-106 reference parameter
  values use (``Device.IP.Interface.1``).
* ``str(path)`` is canonical and ``parse_path(str(p)) == p`` (for relative
  paths pass ``allow_relative=True``).
"""

from __future__ import annotations

import enum
import string
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

__all__ = [
    "MAX_INSTANCE_NUMBER",
    "ROOT_NAME",
    "Expression",
    "ExpressionComponent",
    "ExpressionValue",
    "InstanceIdentifier",
    "InstanceNumber",
    "MatchResult",
    "Name",
    "Operator",
    "Path",
    "PathError",
    "PathKind",
    "Placeholder",
    "ReferenceFollow",
    "Segment",
    "Wildcard",
    "check_instance_number_addressing",
    "is_prefix_of",
    "is_valid_path",
    "join",
    "matches",
    "parent",
    "parse_path",
    "to_supported_path",
    "validate_path",
    "vendor_prefix",
]

#: First segment of every absolute path (the Device:2 data model root).
ROOT_NAME: Final = "Device"
#: Largest instance number / list index accepted (TR-106 unsignedInt).
MAX_INSTANCE_NUMBER: Final = 4_294_967_295

_NAME_START: Final = frozenset(string.ascii_letters + "_")
_NAME_CHARS: Final = _NAME_START | frozenset(string.digits + "-")
_DIGITS: Final = frozenset(string.digits)
_HEX: Final = frozenset(string.hexdigits)
_CONST_CHARS: Final = frozenset(string.ascii_letters + string.digits + "_+-.:")
_WHITESPACE: Final = frozenset(" \t")


class PathError(ValueError):
    """The one exception raised for a malformed path.

    ``reason`` is the bare explanation, ``offset`` the 0-based character
    position in the parsed text where the problem was detected.
    """

    def __init__(self, reason: str, offset: int = 0) -> None:
        self.reason = reason
        self.offset = offset
        super().__init__(f"{reason} (at offset {offset})")

    def __reduce__(self) -> tuple[type[PathError], tuple[str, int]]:
        return (PathError, (self.reason, self.offset))


class PathKind(enum.Enum):
    """What a path addresses, as far as syntax can tell (see module doc)."""

    OBJECT = "object"
    OBJECT_INSTANCE = "object instance"
    PARAMETER = "parameter"
    COMMAND = "command"
    EVENT = "event"


class Operator(enum.StrEnum):
    """Search expression operators (TR-369 "Searching with Expressions")."""

    EQ = "=="
    NE = "!="
    CONTAINS = "~="
    LT = "<"
    GT = ">"
    LE = "<="
    GE = ">="


_ORDERING_OPERATORS: Final = frozenset({Operator.LT, Operator.GT, Operator.LE, Operator.GE})


# --- segments ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Name:
    """An object, parameter, command or event name."""

    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class ReferenceFollow:
    """A reference parameter whose value is followed: ``Ref+``, ``Ref#2+``, ``Ref#*+``.

    ``index`` is ``None`` when no ``#`` is given (first list item implied),
    a list item number, or ``"*"`` to follow every item.
    """

    name: str
    index: int | Literal["*"] | None = None

    def __str__(self) -> str:
        if self.index is None:
            return f"{self.name}+"
        return f"{self.name}#{self.index}+"


@dataclass(frozen=True, slots=True)
class InstanceNumber:
    """Instance Number Addressing: ``Table.3.``."""

    number: int

    def __str__(self) -> str:
        return str(self.number)


@dataclass(frozen=True, slots=True)
class Wildcard:
    """Wildcard search: ``Table.*.``."""

    def __str__(self) -> str:
        return "*"


@dataclass(frozen=True, slots=True)
class Placeholder:
    """Supported data model placeholder ``{i}``."""

    def __str__(self) -> str:
        return "{i}"


@dataclass(frozen=True, slots=True)
class ExpressionValue:
    """An expression constant; ``text`` excludes the quotes of a quoted string."""

    text: str
    quoted: bool

    def __str__(self) -> str:
        return f'"{self.text}"' if self.quoted else self.text

    @property
    def decoded(self) -> str:
        """The constant with percent escapes (``%22``, ``%25``) resolved."""
        return urllib.parse.unquote(self.text) if self.quoted else self.text


@dataclass(frozen=True, slots=True)
class ExpressionComponent:
    """``<relative parameter path><operator><constant>``."""

    parameter: tuple[Name | ReferenceFollow, ...]
    operator: Operator
    value: ExpressionValue

    @property
    def parameter_path(self) -> str:
        return ".".join(str(p) for p in self.parameter)

    def __str__(self) -> str:
        return f"{self.parameter_path}{self.operator.value}{self.value}"


@dataclass(frozen=True, slots=True)
class Expression:
    """``[c1&&c2...]``: unique-key addressing or a search expression.

    Syntax cannot tell the two apart (a key expression that omits part of a
    multi-parameter key is a search); :attr:`is_equality_only` says whether
    it could be a unique key.
    """

    components: tuple[ExpressionComponent, ...]

    def __str__(self) -> str:
        return "[" + "&&".join(str(c) for c in self.components) + "]"

    @property
    def is_equality_only(self) -> bool:
        return all(c.operator is Operator.EQ for c in self.components)

    @property
    def follows_references(self) -> bool:
        return any(
            isinstance(p, ReferenceFollow) for c in self.components for p in c.parameter
        )


InstanceIdentifier: TypeAlias = InstanceNumber | Wildcard | Expression | Placeholder
Segment: TypeAlias = Name | ReferenceFollow | InstanceIdentifier

_INSTANCE_TYPES: Final = (InstanceNumber, Wildcard, Expression, Placeholder)


# --- Path ----------------------------------------------------------------------


@dataclass(frozen=True)
class Path:
    """A parsed path; build it with :func:`parse_path`, print it with ``str()``.

    The trailing ``.``, ``()`` or ``!`` is implied by :attr:`kind`.
    """

    segments: tuple[Segment, ...]
    kind: PathKind

    def __str__(self) -> str:
        body = ".".join(str(s) for s in self.segments)
        if self.kind in (PathKind.OBJECT, PathKind.OBJECT_INSTANCE):
            return body + "."
        if self.kind is PathKind.COMMAND:
            return body + "()"
        if self.kind is PathKind.EVENT:
            return body + "!"
        return body

    # classification ------------------------------------------------------
    @property
    def is_absolute(self) -> bool:
        """True when the path reads as ``Device.`` + children (see module doc)."""
        segs = self.segments
        if not segs or segs[0] != Name(ROOT_NAME):
            return False
        if len(segs) == 1:
            return self.kind is PathKind.OBJECT
        return not isinstance(segs[1], _INSTANCE_TYPES)

    @property
    def is_relative(self) -> bool:
        return not self.is_absolute

    @property
    def has_wildcard(self) -> bool:
        return any(isinstance(s, Wildcard) for s in self.segments)

    @property
    def has_expression(self) -> bool:
        return any(isinstance(s, Expression) for s in self.segments)

    @property
    def has_reference_following(self) -> bool:
        return any(
            isinstance(s, ReferenceFollow)
            or (isinstance(s, Expression) and s.follows_references)
            for s in self.segments
        )

    @property
    def is_search(self) -> bool:
        """Wildcard, expression (unique key or search) or reference following."""
        return self.has_wildcard or self.has_expression or self.has_reference_following

    @property
    def is_supported_path(self) -> bool:
        """Contains the supported data model placeholder ``{i}``."""
        return any(isinstance(s, Placeholder) for s in self.segments)

    @property
    def is_instantiated(self) -> bool:
        """Only names and instance numbers: addresses 0 or 1 concrete element."""
        return self.uses_instance_number_addressing()

    @property
    def name(self) -> str | None:
        """Name of the addressed element, or ``None`` if it ends in an instance id."""
        last = self.segments[-1] if self.segments else None
        if isinstance(last, (Name, ReferenceFollow)):
            return last.name
        return None

    @property
    def instance_identifiers(self) -> tuple[InstanceIdentifier, ...]:
        return tuple(s for s in self.segments if isinstance(s, _INSTANCE_TYPES))

    def uses_instance_number_addressing(self) -> bool:
        """R-MSG.3: every instance is addressed by number (no keys, search, refs, ``{i}``)."""
        return all(isinstance(s, (Name, InstanceNumber)) for s in self.segments)

    # derivation ----------------------------------------------------------
    def parent(self) -> Path | None:
        return parent(self)

    def to_supported(self) -> Path:
        return to_supported_path(self)

    def join(self, relative: Path | str) -> Path:
        return join(self, relative)


def _kind_for_object(segments: tuple[Segment, ...]) -> PathKind:
    if segments and isinstance(segments[-1], _INSTANCE_TYPES):
        return PathKind.OBJECT_INSTANCE
    return PathKind.OBJECT


# --- parser --------------------------------------------------------------------


class _Parser:
    """Single-pass, non-recursive scanner over one path string."""

    def __init__(self, text: str, *, allow_relative: bool, reference_value: bool) -> None:
        self.text = text
        self.pos = 0
        self.allow_relative = allow_relative
        self.reference_value = reference_value
        #: offset of the first whitespace tolerated inside an expression
        self.whitespace_at: int | None = None
        self.segments: list[Segment] = []
        self.placeholder_at: int | None = None
        self.search_at: int | None = None

    # helpers -------------------------------------------------------------
    def _peek(self, ahead: int = 0) -> str:
        i = self.pos + ahead
        return self.text[i] if i < len(self.text) else ""

    def _fail(self, reason: str, offset: int | None = None) -> PathError:
        return PathError(reason, self.pos if offset is None else offset)

    def _skip_ws(self) -> None:
        start = self.pos
        while self._peek() in _WHITESPACE and self._peek():
            self.pos += 1
        if self.pos > start and self.whitespace_at is None:
            self.whitespace_at = start

    def _name(self) -> str:
        start = self.pos
        if self._peek() not in _NAME_START or not self._peek():
            raise self._fail("expected a name (a letter or '_' first)")
        self.pos += 1
        while self._peek() and self._peek() in _NAME_CHARS:
            self.pos += 1
        return self.text[start : self.pos]

    def _posnum(self, what: str) -> int:
        start = self.pos
        while self._peek() and self._peek() in _DIGITS:
            self.pos += 1
        digits = self.text[start : self.pos]
        if not digits:
            raise self._fail(f"expected {what}")
        if digits[0] == "0":
            raise self._fail(f"{what} must be a positive integer without leading zeros", start)
        if len(digits) > 10 or int(digits) > MAX_INSTANCE_NUMBER:
            raise self._fail(f"{what} exceeds {MAX_INSTANCE_NUMBER}", start)
        return int(digits)

    def _reference(self, name: str) -> ReferenceFollow:
        index: int | Literal["*"] | None = None
        if self._peek() == "#":
            self.pos += 1
            if self._peek() == "*":
                index = "*"
                self.pos += 1
            elif self._peek() and self._peek() in _DIGITS:
                index = self._posnum("a list item number")
            else:
                raise self._fail("expected a list item number or '*' after '#'")
            if self._peek() != "+":
                raise self._fail("a '#' list item must be followed by '+'")
        self.pos += 1  # the '+'
        return ReferenceFollow(name, index)

    # expressions -----------------------------------------------------------
    def _expression(self) -> Expression:
        start = self.pos
        self.pos += 1  # '['
        if self._peek() == "]":
            raise self._fail("empty search expression")
        components: list[ExpressionComponent] = []
        while True:
            components.append(self._component())
            self._skip_ws()
            if self.text.startswith("&&", self.pos):
                self.pos += 2
                self._skip_ws()
                continue
            if self._peek() == "]":
                self.pos += 1
                return Expression(tuple(components))
            if not self._peek():
                raise self._fail(f"unterminated search expression opened at offset {start}")
            raise self._fail(
                f"unexpected {self._peek()!r} in search expression; expected '&&' or ']'"
            )

    def _component(self) -> ExpressionComponent:
        parts: list[Name | ReferenceFollow] = []
        while True:
            ch = self._peek()
            if parts and ch and (ch in _DIGITS or ch in "*[{"):
                raise self._fail("an expression parameter cannot address a child table instance")
            if not ch or ch not in _NAME_START:
                raise self._fail("expected a parameter name in search expression")
            name = self._name()
            if self._peek() in ("#", "+") and self._peek():
                parts.append(self._reference(name))
                if self._peek() != ".":
                    raise self._fail("reference following '+' must be followed by '.' and a name")
                self.pos += 1
                continue
            parts.append(Name(name))
            if self._peek() == ".":
                self.pos += 1
                continue
            break
        self._skip_ws()
        operator = self._operator()
        self._skip_ws()
        return ExpressionComponent(tuple(parts), operator, self._value())

    def _operator(self) -> Operator:
        two = self.text[self.pos : self.pos + 2]
        for candidate in (two, two[:1]):
            if candidate in {"==", "!=", "~=", "<=", ">=", "<", ">"}:
                self.pos += len(candidate)
                return Operator(candidate)
        raise self._fail("expected an operator (==, !=, ~=, <, >, <=, >=)")

    def _value(self) -> ExpressionValue:
        ch = self._peek()
        if ch == '"':
            end = self.text.find('"', self.pos + 1)
            if end < 0:
                raise self._fail("unterminated string literal")
            value = ExpressionValue(self.text[self.pos + 1 : end], quoted=True)
            self.pos = end + 1
            return value
        start = self.pos
        while self._peek() and self._peek() in _CONST_CHARS:
            self.pos += 1
        if self.pos == start:
            raise self._fail("expected a value (quoted string or literal)")
        return ExpressionValue(self.text[start : self.pos], quoted=False)

    # path ------------------------------------------------------------------
    def _instance_allowed(self, at: int) -> None:
        prev = self.segments[-1] if self.segments else None
        if prev is None:
            raise self._fail("a path cannot start with an instance identifier", at)
        if not isinstance(prev, Name):
            raise self._fail("an instance identifier must follow a table name", at)
        if len(self.segments) == 1 and not self.allow_relative:
            raise self._fail(f"'{ROOT_NAME}' is not a table", at)

    def _mark_search(self, at: int) -> None:
        if self.placeholder_at is not None:
            raise self._fail("'{i}' cannot be combined with search or reference following", at)
        if self.search_at is None:
            self.search_at = at

    def _segment(self) -> PathKind | None:
        """Parse one segment; return the kind when it ends the path with '()' or '!'."""
        at = self.pos
        ch = self._peek()
        if ch == ".":
            raise self._fail("empty path segment")
        if ch and ch in _DIGITS:
            self._instance_allowed(at)
            number = self._posnum("an instance number")
            if self.placeholder_at is not None:
                raise self._fail("'{i}' cannot be followed by an instance number", at)
            self.segments.append(InstanceNumber(number))
        elif ch == "*":
            self._instance_allowed(at)
            self._mark_search(at)
            self.pos += 1
            self.segments.append(Wildcard())
        elif ch == "[":
            self._instance_allowed(at)
            self._mark_search(at)
            self.segments.append(self._expression())
        elif ch == "{":
            if not self.text.startswith("{i}", self.pos):
                raise self._fail("curly brackets are only allowed as the '{i}' placeholder")
            self._instance_allowed(at)
            if self.search_at is not None:
                raise self._fail("'{i}' cannot be combined with search or reference following")
            self.placeholder_at = at
            self.pos += 3
            self.segments.append(Placeholder())
        elif ch and ch in _NAME_START:
            name = self._name()
            if not self.segments and not self.allow_relative and name != ROOT_NAME:
                raise self._fail(f"an absolute path must start with '{ROOT_NAME}.'", at)
            nxt = self._peek()
            if nxt in ("#", "+") and nxt:
                if not self.segments and not self.allow_relative:
                    raise self._fail(f"'{ROOT_NAME}' cannot be followed as a reference", self.pos)
                self._mark_search(at)
                self.segments.append(self._reference(name))
                return None
            self.segments.append(Name(name))
            if nxt == "(":
                if not self.text.startswith("()", self.pos):
                    raise self._fail("command arguments are not allowed in a path; use 'Name()'")
                self.pos += 2
                if self.pos != len(self.text):
                    raise self._fail("nothing may follow a command's '()'")
                return PathKind.COMMAND
            if nxt == "!":
                self.pos += 1
                if self.pos != len(self.text):
                    raise self._fail("nothing may follow an event's '!'")
                return PathKind.EVENT
        elif not ch:
            raise self._fail("expected a path segment")
        else:
            raise self._fail(f"unexpected {ch!r} at the start of a path segment")
        return None

    def parse(self) -> Path:
        if not isinstance(self.text, str):
            raise PathError(f"a path must be a str, not {type(self.text).__name__}", 0)
        if not self.text:
            raise PathError("empty path", 0)
        while True:
            ending = self._segment()
            if ending is not None:
                kind = ending
                break
            ch = self._peek()
            if ch == ".":
                self.pos += 1
                if self.pos == len(self.text):
                    kind = _kind_for_object(tuple(self.segments))
                    break
                continue
            if ch:
                raise self._fail(f"unexpected {ch!r}; expected '.'")
            last = self.segments[-1]
            if isinstance(last, ReferenceFollow):
                raise self._fail("reference following '+' must be followed by '.'")
            if isinstance(last, _INSTANCE_TYPES):
                if not self.reference_value:
                    raise self._fail("an object instance path must end with '.'")
                kind = PathKind.OBJECT_INSTANCE
            else:
                kind = PathKind.PARAMETER
            break
        if len(self.segments) == 1 and kind is not PathKind.OBJECT and not self.allow_relative:
            raise PathError(f"an absolute path must start with '{ROOT_NAME}.'", len(ROOT_NAME))
        return Path(tuple(self.segments), kind)


def parse_path(text: str, *, allow_relative: bool = False, reference_value: bool = False) -> Path:
    """Parse a USP path (R-ARC.7); raise :class:`PathError` if it is malformed.

    ``allow_relative`` accepts Relative Paths as well as absolute ones.
    ``reference_value`` accepts an Object Instance Path without its final
    ``.``, as held in TR-106 reference parameters.
    """
    parser = _Parser(text, allow_relative=allow_relative, reference_value=reference_value)
    return parser.parse()


# --- validation ----------------------------------------------------------------


def _describe(index: int, segment: Segment) -> str:
    return f"segment {index + 1} '{segment}'"


def _search_parts(path: Path) -> Iterator[tuple[int, Segment, str]]:
    for i, seg in enumerate(path.segments):
        if isinstance(seg, Wildcard):
            yield i, seg, "is a wildcard"
        elif isinstance(seg, Expression):
            yield i, seg, "is a unique-key or search expression"
        elif isinstance(seg, ReferenceFollow):
            yield i, seg, "follows a reference"


def _bad_percent_escape(text: str) -> bool:
    i = text.find("%")
    while i >= 0:
        pair = text[i + 1 : i + 3]
        if len(pair) != 2 or not all(c in _HEX for c in pair):
            return True
        i = text.find("%", i + 3)
    return False


def validate_path(
    text: str,
    *,
    allow_search: bool = True,
    allow_relative: bool = False,
    allow_supported: bool = True,
    allow_whitespace: bool = True,
    reference_value: bool = False,
) -> list[str]:
    """Return short violation strings for ``text``; an empty list means valid.

    Beyond the grammar it checks: search parts when ``allow_search`` is
    false, ``{i}`` when ``allow_supported`` is false, whitespace around
    operators when ``allow_whitespace`` is false (R-ARC.9b), ordering
    operators applied to a string literal (only ==, != and ~= apply to
    strings) and ``%`` in a string literal that is not a ``%XX`` escape.
    """
    parser = _Parser(text, allow_relative=allow_relative, reference_value=reference_value)
    try:
        path = parser.parse()
    except PathError as exc:
        return [str(exc)]
    violations: list[str] = []
    if not allow_search:
        violations += [
            f"search path not allowed: {_describe(i, s)} {what}"
            for i, s, what in _search_parts(path)
        ]
    if not allow_supported and path.is_supported_path:
        violations.append("supported data model path ('{i}') not allowed here")
    if not allow_whitespace and parser.whitespace_at is not None:
        violations.append(
            f"whitespace around an expression operator at offset {parser.whitespace_at} (R-ARC.9b)"
        )
    for i, seg in enumerate(path.segments):
        if not isinstance(seg, Expression):
            continue
        for comp in seg.components:
            if comp.value.quoted and comp.operator in _ORDERING_OPERATORS:
                violations.append(
                    f"{_describe(i, seg)}: operator '{comp.operator.value}' "
                    "does not apply to a string literal"
                )
            if comp.value.quoted and _bad_percent_escape(comp.value.text):
                violations.append(
                    f"{_describe(i, seg)}: '%' in a string literal must start a %XX escape"
                )
    return violations


def is_valid_path(
    text: str,
    *,
    allow_search: bool = True,
    allow_relative: bool = False,
    allow_supported: bool = True,
    allow_whitespace: bool = True,
    reference_value: bool = False,
) -> bool:
    """True when :func:`validate_path` reports nothing."""
    return not validate_path(
        text,
        allow_search=allow_search,
        allow_relative=allow_relative,
        allow_supported=allow_supported,
        allow_whitespace=allow_whitespace,
        reference_value=reference_value,
    )


def check_instance_number_addressing(
    path: Path | str, *, allow_relative: bool = False
) -> list[str]:
    """R-MSG.3: violations for a path an Agent reports from its instantiated model.

    Every instance must be addressed by number: unique keys, search
    expressions, wildcards, reference following and ``{i}`` are reported.
    """
    if not isinstance(path, Path):
        try:
            path = parse_path(path, allow_relative=allow_relative)
        except PathError as exc:
            return [f"not a valid path: {exc}"]
    violations: list[str] = []
    for i, seg in enumerate(path.segments):
        if isinstance(seg, Expression):
            what = "addresses an instance by unique key or search expression"
        elif isinstance(seg, Wildcard):
            what = "is a wildcard"
        elif isinstance(seg, ReferenceFollow):
            what = "follows a reference instead of giving the resolved path"
        elif isinstance(seg, Placeholder):
            what = "is supported data model notation"
        else:
            continue
        violations.append(f"{_describe(i, seg)} {what}; R-MSG.3 requires an instance number")
    return violations


# --- derivation and matching -------------------------------------------------------


def _as_path(path: Path | str, *, allow_relative: bool = True) -> Path:
    return path if isinstance(path, Path) else parse_path(path, allow_relative=allow_relative)


def parent(path: Path | str) -> Path | None:
    """The path one segment up, or ``None`` for ``Device.`` / a one-segment relative path.

    ``Device.A.1.B`` -> ``Device.A.1.`` -> ``Device.A.`` -> ``Device.``.
    """
    p = _as_path(path)
    if len(p.segments) <= 1:
        return None
    segments = p.segments[:-1]
    return Path(segments, _kind_for_object(segments))


def join(base: Path | str, relative: Path | str) -> Path:
    """Append a Relative Path to an Object (Instance) Path and re-validate.

    ``join("Device.WiFi.Radio.1.", "Stats.BytesSent")``.  A ``str`` relative
    part may also start with an instance identifier (``join("Device.X.", "2.")``).
    """
    b = _as_path(base)
    if b.kind not in (PathKind.OBJECT, PathKind.OBJECT_INSTANCE):
        raise PathError("can only join onto a path ending with '.'", len(str(b)))
    return parse_path(str(b) + str(relative), allow_relative=b.is_relative)


def to_supported_path(path: Path | str) -> Path:
    """Supported data model form: every instance identifier becomes ``{i}``.

    ``Device.LocalAgent.Subscription.3.Enable`` ->
    ``Device.LocalAgent.Subscription.{i}.Enable``.  Wildcards and expressions
    are mapped too; a followed reference cannot be (its target is unknown)
    and raises :class:`PathError`.
    """
    p = _as_path(path)
    if p.has_reference_following:
        raise PathError("a path with reference following has no supported data model form", 0)
    segments = tuple(Placeholder() if isinstance(s, _INSTANCE_TYPES) else s for s in p.segments)
    return Path(segments, p.kind)


@dataclass(frozen=True, slots=True)
class MatchResult:
    """Outcome of :func:`matches` / :func:`is_prefix_of`; truthy when matched.

    ``unevaluated`` is true when an expression was assumed to match because
    expressions need instance data to evaluate.
    """

    matched: bool
    unevaluated: bool = False

    def __bool__(self) -> bool:
        return self.matched


def _match_segments(
    pattern: tuple[Segment, ...], concrete: tuple[Segment, ...]
) -> MatchResult:
    unevaluated = False
    for want, got in zip(pattern, concrete, strict=False):
        if isinstance(want, (Name, InstanceNumber)):
            if want != got:
                return MatchResult(False)
        elif not isinstance(got, InstanceNumber):
            return MatchResult(False)
        elif isinstance(want, Expression):
            unevaluated = True
    return MatchResult(True, unevaluated)


def _match_operands(pattern: Path | str, concrete: Path | str) -> tuple[Path, Path]:
    p = _as_path(pattern)
    c = _as_path(concrete)
    if p.has_reference_following:
        raise PathError("reference following cannot be matched without the data model", 0)
    if not c.is_instantiated:
        raise PathError(f"'{c}' is not an instantiated path (names and numbers only)", 0)
    return p, c


def matches(pattern: Path | str, concrete: Path | str) -> MatchResult:
    """Does search (or supported, or plain) path ``pattern`` address ``concrete``?

    ``concrete`` must use only names and instance numbers.  Names and numbers
    must be equal; ``*`` and ``{i}`` match any number; an expression matches
    any number with ``unevaluated=True``.  Kinds must agree.
    """
    p, c = _match_operands(pattern, concrete)
    if p.kind is not c.kind or len(p.segments) != len(c.segments):
        return MatchResult(False)
    return _match_segments(p.segments, c.segments)


def is_prefix_of(prefix: Path | str, concrete: Path | str) -> MatchResult:
    """Is ``concrete`` equal to or beneath what ``prefix`` addresses?

    E.g. every ``resolved_path`` of a Get on ``Device.IP.Interface.*.`` lies
    under that path.  Same rules as :func:`matches` for each segment.
    """
    p, c = _match_operands(prefix, concrete)
    if len(p.segments) == len(c.segments):
        if p.kind is not c.kind:
            return MatchResult(False)
    elif len(p.segments) > len(c.segments) or p.kind not in (
        PathKind.OBJECT,
        PathKind.OBJECT_INSTANCE,
    ):
        return MatchResult(False)
    return _match_segments(p.segments, c.segments)


def vendor_prefix(name: str) -> str | None:
    """The ``<vendor>`` of a TR-106 vendor-specific name ``X_<vendor>_Name``, else None."""
    if not name.startswith("X_"):
        return None
    vendor, sep, rest = name[2:].partition("_")
    if not vendor or not sep or not rest:
        return None
    return vendor
