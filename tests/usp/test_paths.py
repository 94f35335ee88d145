"""Tests for conformance.usp.paths: the USP Path Name grammar (R-ARC.7..R-ARC.12, R-MSG.3)."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.usp.paths import (
    MAX_INSTANCE_NUMBER,
    Expression,
    ExpressionComponent,
    ExpressionValue,
    InstanceNumber,
    MatchResult,
    Name,
    Operator,
    Path,
    PathError,
    PathKind,
    Placeholder,
    ReferenceFollow,
    Segment,
    Wildcard,
    check_instance_number_addressing,
    is_prefix_of,
    is_valid_path,
    join,
    matches,
    parent,
    parse_path,
    to_supported_path,
    validate_path,
    vendor_prefix,
)

K = PathKind


def _cmp(param: str, op: str, value: str, quoted: bool = True) -> ExpressionComponent:
    parts: list[Name | ReferenceFollow] = []
    for piece in param.split("."):
        if piece.endswith("+"):
            name, _, idx = piece[:-1].partition("#")
            index: int | str | None = None if not idx else ("*" if idx == "*" else int(idx))
            parts.append(ReferenceFollow(name, index))  # type: ignore[arg-type]
        else:
            parts.append(Name(piece))
    return ExpressionComponent(tuple(parts), Operator(op), ExpressionValue(value, quoted))


# --- kinds (R-ARC.7: the six path types) ------------------------------------------

KIND_CASES: list[tuple[str, PathKind, bool]] = [
    ("Device.", K.OBJECT, False),
    ("Device.LocalAgent.", K.OBJECT, False),
    ("Device.LocalAgent.Subscription.", K.OBJECT, False),
    ("Device.LocalAgent.Subscription.3.", K.OBJECT_INSTANCE, False),
    ("Device.LocalAgent.Subscription.3.Enable", K.PARAMETER, False),
    ("Device.LocalAgent.EndpointID", K.PARAMETER, False),
    ("Device.Reboot()", K.COMMAND, False),
    ("Device.IP.Interface.7.Reset()", K.COMMAND, False),
    ("Device.Boot!", K.EVENT, False),
    ("Device.LocalAgent.Threshold.2.Triggered!", K.EVENT, False),
    ("Device.IP.Interface.*.", K.OBJECT_INSTANCE, True),
    ("Device.IP.Interface.*.Type", K.PARAMETER, True),
    ('Device.IP.Interface.[Alias=="lan-1"].', K.OBJECT_INSTANCE, True),
    ('Device.IP.Interface.[Name=="br0"].Reset()', K.COMMAND, True),
    ("Device.NAT.PortMapping.4.Interface+.", K.OBJECT, True),
    ("Device.NAT.PortMapping.4.Interface+.Name", K.PARAMETER, True),
    ("Device.LocalAgent.Subscription.{i}.", K.OBJECT_INSTANCE, False),
    ("Device.LocalAgent.Subscription.{i}.ReferenceList", K.PARAMETER, False),
    ("Device.X_ACME-COM_Widget.9.Fire!", K.EVENT, False),
]


@pytest.mark.parametrize(("text", "kind", "search"), KIND_CASES)
def test_kind_and_search_classification(text: str, kind: PathKind, search: bool) -> None:
    p = parse_path(text)
    assert p.kind is kind
    assert p.is_search is search
    assert p.is_absolute and not p.is_relative
    assert str(p) == text
    assert parse_path(str(p)) == p


def test_segments_of_instantiated_path() -> None:
    p = parse_path("Device.LocalAgent.Subscription.12.NotifType")
    assert p.segments == (
        Name("Device"),
        Name("LocalAgent"),
        Name("Subscription"),
        InstanceNumber(12),
        Name("NotifType"),
    )
    assert p.name == "NotifType"
    assert p.instance_identifiers == (InstanceNumber(12),)
    assert p.is_instantiated and not p.is_supported_path
    assert parse_path("Device.X.3.").name is None


# --- expressions: every operator, multi keys, nesting (R-ARC.9, R-ARC.9a) ---------


@pytest.mark.parametrize("op", [o.value for o in Operator])
def test_every_operator(op: str) -> None:
    p = parse_path(f"Device.DSL.Line.[Upstream{op}5].CurrentProfile")
    expr = p.segments[3]
    assert isinstance(expr, Expression)
    assert expr.components == (_cmp("Upstream", op, "5", quoted=False),)
    assert expr.is_equality_only is (op == "==")
    assert p.has_expression and not p.has_wildcard


def test_unique_key_with_several_keys() -> None:
    p = parse_path('Device.NAT.PortMapping.[RemoteHost==""&&ExternalPort==8080&&Protocol=="UDP"].')
    (expr,) = p.instance_identifiers
    assert isinstance(expr, Expression)
    assert expr.components == (
        _cmp("RemoteHost", "==", ""),
        _cmp("ExternalPort", "==", "8080", quoted=False),
        _cmp("Protocol", "==", "UDP"),
    )
    assert expr.is_equality_only
    assert p.kind is K.OBJECT_INSTANCE


def test_nested_expressions_in_nested_tables() -> None:
    text = (
        'Device.IP.Interface.[Type=="Tunnel"&&Stats.PacketsSent>=10].'
        'IPv6Address.[Origin!="WellKnown"].IPAddress'
    )
    p = parse_path(text)
    e1, e2 = p.instance_identifiers
    assert isinstance(e1, Expression) and isinstance(e2, Expression)
    assert e1.components[1] == _cmp("Stats.PacketsSent", ">=", "10", quoted=False)
    assert e1.components[1].parameter_path == "Stats.PacketsSent"
    assert e2.components == (_cmp("Origin", "!=", "WellKnown"),)
    assert p.kind is K.PARAMETER
    assert str(p) == text


def test_mixed_addressing_forms() -> None:
    p = parse_path('Device.IP.Interface.[Name=="wan0"].IPv4Address.2.IPAddress')
    assert isinstance(p.segments[3], Expression)
    assert p.segments[5] == InstanceNumber(2)


@pytest.mark.parametrize(
    "value",
    ["true", "0", "-7", "+12", "012", "1.5", "2024-01-31T23:59:59Z", "0001-01-01T00:00:00Z"],
)
def test_unquoted_constants(value: str) -> None:
    p = parse_path(f"Device.X.[P=={value}].")
    (expr,) = p.instance_identifiers
    assert isinstance(expr, Expression)
    assert expr.components[0].value == ExpressionValue(value, quoted=False)


def test_quoted_literal_may_hold_brackets_ampersands_and_spaces() -> None:
    p = parse_path('Device.X.[Descr=="a]&&b [c] %22q%22"].')
    (expr,) = p.instance_identifiers
    assert isinstance(expr, Expression)
    value = expr.components[0].value
    assert value.text == "a]&&b [c] %22q%22"
    assert value.decoded == 'a]&&b [c] "q"'
    assert ExpressionValue("5", quoted=False).decoded == "5"


def test_whitespace_around_operators_tolerated_and_canonicalised() -> None:
    spaced = parse_path('Device.IP.Interface.[Type == "Normal" &&\tEnable != false].Status')
    tight = parse_path('Device.IP.Interface.[Type=="Normal"&&Enable!=false].Status')
    assert spaced == tight  # R-ARC.9a
    assert str(spaced) == 'Device.IP.Interface.[Type=="Normal"&&Enable!=false].Status'


# --- reference following and lists of references (R-ARC.11) -------------------


@pytest.mark.parametrize(
    ("text", "segment"),
    [
        ("Device.NAT.PortMapping.2.Interface+.Name", ReferenceFollow("Interface")),
        ("Device.WiFi.SSID.1.LowerLayers#1+.Name", ReferenceFollow("LowerLayers", 1)),
        ("Device.WiFi.SSID.1.LowerLayers#12+.Name", ReferenceFollow("LowerLayers", 12)),
        ("Device.WiFi.SSID.1.LowerLayers#*+.Name", ReferenceFollow("LowerLayers", "*")),
    ],
)
def test_reference_following(text: str, segment: ReferenceFollow) -> None:
    p = parse_path(text)
    assert p.segments[4] == segment
    assert p.has_reference_following and p.is_search
    assert not p.uses_instance_number_addressing()
    assert str(p) == text


def test_reference_following_chained_and_then_table() -> None:
    p = parse_path("Device.A.1.Ref+.Other#2+.Table.3.Leaf")
    assert p.segments[3:] == (
        ReferenceFollow("Ref"),
        ReferenceFollow("Other", 2),
        Name("Table"),
        InstanceNumber(3),
        Name("Leaf"),
    )


def test_reference_following_inside_expression() -> None:
    p = parse_path(
        'Device.WiFi.AccessPoint.[SSIDReference+.SSID=="Home"].'
        'AssociatedDevice.[LowerLayers#*+.Name=="x"].SignalStrength'
    )
    e1, e2 = p.instance_identifiers
    assert isinstance(e1, Expression) and isinstance(e2, Expression)
    assert e1.follows_references
    assert e1.components[0] == _cmp("SSIDReference+.SSID", "==", "Home")
    assert e2.components[0].parameter == (ReferenceFollow("LowerLayers", "*"), Name("Name"))
    assert p.has_reference_following


# --- invalid paths --------------------------------------------------------------

INVALID: list[tuple[object, str, int]] = [
    ("", "empty path", 0),
    ("Device", "must start with 'Device.'", 6),
    ("Device()", "must start with 'Device.'", 6),
    ("Enable", "must start with 'Device.'", 0),
    ("InternetGatewayDevice.LANDevice.", "must start with 'Device.'", 0),
    (".Device.", "empty path segment", 0),
    ("Device..X", "empty path segment", 7),
    ("Device.X..", "empty path segment", 9),
    ("Device.1.", "'Device' is not a table", 7),
    ("Device.*.", "'Device' is not a table", 7),
    ("Device+.X", "cannot be followed as a reference", 6),
    ("Device.X.0.", "without leading zeros", 9),
    ("Device.X.007.", "without leading zeros", 9),
    (f"Device.X.{MAX_INSTANCE_NUMBER + 1}.", "exceeds", 9),
    ("Device.X.99999999999999999999999.", "exceeds", 9),
    ("Device.X.1.2.", "must follow a table name", 11),
    ("Device.X.*.*.", "must follow a table name", 11),
    ("Device.X.1", "must end with '.'", 10),
    ('Device.X.[A=="b"]', "must end with '.'", 17),
    ("Device.X.1a.", "unexpected 'a'", 10),
    ("Device.X Y", "unexpected ' '", 8),
    (" Device.", "unexpected ' '", 0),
    ("Device.X$", "unexpected '$'", 8),
    ("Device.X.9Lives", "unexpected 'L'", 10),
    ("Device.Reboot(x)", "command arguments are not allowed", 13),
    ("Device.Reboot(", "command arguments are not allowed", 13),
    ("Device.Reboot().", "nothing may follow a command", 15),
    ("Device.Reboot()X", "nothing may follow a command", 15),
    ("Device.Boot!.", "nothing may follow an event", 12),
    ("Device.Boot!!", "nothing may follow an event", 12),
    ("Device.X.1.()", "unexpected '('", 11),
    ("Device.X.1!", "unexpected '!'", 10),
    ("Device.X.Ref+", "must be followed by '.'", 13),
    ("Device.X.Ref+Name", "unexpected 'N'", 13),
    ("Device.X.Ref+.3.", "must follow a table name", 14),
    ("Device.X.Ref#+.Y", "list item number or '*'", 13),
    ("Device.X.Ref#0+.Y", "without leading zeros", 13),
    ("Device.X.Ref#2.Y", "must be followed by '+'", 14),
    ("Device.X.Ref#*", "must be followed by '+'", 14),
    ("Device.X.[].", "empty search expression", 10),
    ("Device.X.[", "expected a parameter name", 10),
    ("Device.X.[A", "expected an operator", 11),
    ("Device.X.[A==1", "unterminated search expression", 14),
    ('Device.X.[A=="b', "unterminated string literal", 13),
    ("Device.X.[A=1].", "expected an operator", 11),
    ("Device.X.[A===1].", "expected a value", 13),
    ("Device.X.[A==].", "expected a value", 13),
    ("Device.X.[A==1&B==2].", "expected '&&' or ']'", 14),
    ("Device.X.[A==1||B==2].", "expected '&&' or ']'", 14),
    ("Device.X.[A==1&&].", "expected a parameter name", 16),
    ("Device.X.[A==1 B==2].", "expected '&&' or ']'", 15),
    ('Device.X.[A=="x"y].', "expected '&&' or ']'", 16),
    ("Device.X.[ A==1].", "expected a parameter name", 10),
    ("Device.X.[T.*.A==1].", "child table instance", 12),
    ("Device.X.[T.2.A==1].", "child table instance", 12),
    ("Device.X.[Ref+==1].", "must be followed by '.' and a name", 14),
    ("Device.X.[Stats.==1].", "expected a parameter name", 16),
    ('Device.X.{Type=="a"}.Y', "only allowed as the '{i}' placeholder", 9),
    ("Device.X.{j}.", "only allowed as the '{i}' placeholder", 9),
    ("Device.X.{i}.Y.3.", "'{i}' cannot be followed by an instance number", 15),
    ("Device.X.{i}.Y.*.", "cannot be combined with search", 15),
    ("Device.X.*.Y.{i}.", "cannot be combined with search", 13),
    ("Device.X.{i}.Ref+.Y", "cannot be combined with search", 13),
    ("Device.Ä.", "unexpected 'Ä'", 7),
    ("Device.X.[A==1].[B==2].", "must follow a table name", 16),
    (b"Device.", "must be a str", 0),
]


@pytest.mark.parametrize(("text", "reason", "offset"), INVALID)
def test_invalid_paths(text: str, reason: str, offset: int) -> None:
    with pytest.raises(PathError) as info:
        parse_path(text)
    assert reason in info.value.reason
    assert info.value.offset == offset
    assert f"offset {offset}" in str(info.value)
    assert isinstance(info.value, ValueError)
    assert not is_valid_path(text)
    assert validate_path(text) == [str(info.value)]


def test_path_error_pickles() -> None:
    err = PathError("bad", 4)
    clone = pickle.loads(pickle.dumps(err))
    assert isinstance(clone, PathError)
    assert (clone.reason, clone.offset, str(clone)) == ("bad", 4, str(err))


# --- reference values without the final dot ------------------------------------


def test_reference_value_form() -> None:
    p = parse_path("Device.IP.Interface.1", reference_value=True)
    assert p == parse_path("Device.IP.Interface.1.")
    assert p.kind is K.OBJECT_INSTANCE
    q = parse_path('Device.IP.Interface.[Name=="eth0"]', reference_value=True)
    assert str(q) == 'Device.IP.Interface.[Name=="eth0"].'
    assert parse_path("Device.IP.Interface.1.Name", reference_value=True).kind is K.PARAMETER
    assert is_valid_path("Device.IP.Interface.1", reference_value=True)
    assert not is_valid_path("Device.IP.Interface.1")


# --- relative paths ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("Enable", K.PARAMETER),
        ("Stats.BytesSent", K.PARAMETER),
        ("Stats.", K.OBJECT),
        ("Result.{i}.Radio", K.PARAMETER),
        ("Filter.2.Alias", K.PARAMETER),
        ("NeighboringWiFiDiagnostic()", K.COMMAND),
        ("Triggered!", K.EVENT),
        ("Device.2.Name", K.PARAMETER),  # a child table that happens to be named Device
        ("Device", K.PARAMETER),
        ("Interface+.Name", K.PARAMETER),
    ],
)
def test_relative_paths(text: str, kind: PathKind) -> None:
    p = parse_path(text, allow_relative=True)
    assert p.kind is kind
    assert p.is_relative
    assert str(p) == text
    assert parse_path(str(p), allow_relative=True) == p
    assert validate_path(text, allow_relative=True) == []
    assert validate_path(text) != []


def test_relative_paths_still_reject_bad_syntax() -> None:
    for bad in ["1.Name", "*.", "Stats..X", ".Enable", "[A==1].", "Enable.1", "{i}."]:
        with pytest.raises(PathError):
            parse_path(bad, allow_relative=True)


def test_absolute_path_with_allow_relative_is_absolute() -> None:
    p = parse_path("Device.WiFi.Radio.1.", allow_relative=True)
    assert p.is_absolute
    assert p == parse_path("Device.WiFi.Radio.1.")


# --- validate_path ---------------------------------------------------------------


def test_validate_valid_path_is_empty() -> None:
    assert validate_path('Device.IP.Interface.[Name=="eth0"].Enable') == []
    assert is_valid_path("Device.DeviceInfo.SoftwareVersion")


def test_validate_disallow_search_lists_each_search_part() -> None:
    text = 'Device.A.*.B.[K=="v"].C.1.Ref+.D'
    violations = validate_path(text, allow_search=False)
    assert len(violations) == 3
    assert "wildcard" in violations[0] and "segment 3" in violations[0]
    assert "expression" in violations[1]
    assert "follows a reference" in violations[2]
    assert validate_path("Device.A.3.B", allow_search=False) == []
    assert not is_valid_path(text, allow_search=False)


def test_validate_supported_and_whitespace_options() -> None:
    assert validate_path("Device.A.{i}.", allow_supported=False) == [
        "supported data model path ('{i}') not allowed here"
    ]
    assert validate_path("Device.A.{i}.") == []
    text = "Device.A.[B >= 3].C"
    assert validate_path(text) == []  # R-ARC.9a: Agents tolerate it
    (violation,) = validate_path(text, allow_whitespace=False)  # R-ARC.9b
    assert "whitespace" in violation and "offset 11" in violation


@pytest.mark.parametrize("op", ["<", ">", "<=", ">="])
def test_validate_ordering_operator_on_string(op: str) -> None:
    (violation,) = validate_path(f'Device.A.[B{op}"x"].')
    assert f"operator '{op}'" in violation
    assert validate_path(f"Device.A.[B{op}3].") == []


def test_validate_percent_escapes() -> None:
    assert validate_path('Device.A.[B=="50%25 %22off%22"].') == []
    for bad in ['"100%"', '"%2"', '"%zz"', '"a%g1"']:
        (violation,) = validate_path(f"Device.A.[B=={bad}].")
        assert "%XX" in violation
    assert validate_path('Device.A.[B~="IPv6Firewall"].') == []


# --- R-MSG.3 instance number addressing ---------------------------------------


def test_instance_number_addressing_ok() -> None:
    for text in ["Device.LocalAgent.Subscription.4.", "Device.IP.Interface.2.Stats.BytesSent"]:
        assert check_instance_number_addressing(text) == []
        assert parse_path(text).uses_instance_number_addressing()
    assert check_instance_number_addressing("Stats.BytesSent", allow_relative=True) == []


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('Device.IP.Interface.[Name=="eth0"].', "unique key"),
        ("Device.IP.Interface.*.Status", "wildcard"),
        ("Device.NAT.PortMapping.1.Interface+.Name", "follows a reference"),
        ("Device.IP.Interface.{i}.", "supported data model"),
        ("Device.IP.Interface.[Type!=\"x\"].", "search expression"),
    ],
)
def test_instance_number_addressing_violations(text: str, fragment: str) -> None:
    (violation,) = check_instance_number_addressing(text)
    assert fragment in violation and "R-MSG.3" in violation
    assert not parse_path(text).uses_instance_number_addressing()
    assert check_instance_number_addressing(parse_path(text)) == [violation]


def test_instance_number_addressing_invalid_path() -> None:
    (violation,) = check_instance_number_addressing("Device..X")
    assert violation.startswith("not a valid path")
    assert check_instance_number_addressing("Enable") != []


# --- supported data model -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "supported"),
    [
        ("Device.LocalAgent.Subscription.3.", "Device.LocalAgent.Subscription.{i}."),
        ("Device.WiFi.AccessPoint.1.AssociatedDevice.4.Stats.", "Device.WiFi.AccessPoint.{i}.AssociatedDevice.{i}.Stats."),
        ("Device.IP.Interface.*.Reset()", "Device.IP.Interface.{i}.Reset()"),
        ('Device.IP.Interface.[Name=="x"].Status', "Device.IP.Interface.{i}.Status"),
        ("Device.DeviceInfo.", "Device.DeviceInfo."),
        ("Device.LocalAgent.Subscription.{i}.", "Device.LocalAgent.Subscription.{i}."),
        ("Device.X.1.Y.{i}.", "Device.X.{i}.Y.{i}."),
    ],
)
def test_to_supported_path(text: str, supported: str) -> None:
    result = to_supported_path(text)
    assert str(result) == supported
    assert result == parse_path(text).to_supported()
    assert result.uses_instance_number_addressing() is (result.instance_identifiers == ())


def test_supported_path_parsing() -> None:
    p = parse_path("Device.WiFi.AccessPoint.{i}.AssociatedDevice.{i}.")
    assert p.is_supported_path and not p.is_search and not p.is_instantiated
    assert p.instance_identifiers == (Placeholder(), Placeholder())
    assert parse_path("Device.WiFi.AccessPoint.{i}.AssociatedDevice.").kind is K.OBJECT


def test_to_supported_path_rejects_reference_following() -> None:
    with pytest.raises(PathError):
        to_supported_path("Device.NAT.PortMapping.1.Interface+.Name")
    with pytest.raises(PathError):
        to_supported_path('Device.X.[R+.Name=="a"].')


# --- parent / join ----------------------------------------------------------------


def test_parent_chain() -> None:
    chain = []
    p: Path | None = parse_path("Device.NAT.PortMapping.2.Interface+.Name")
    while p is not None:
        chain.append(str(p))
        p = parent(p)
    assert chain == [
        "Device.NAT.PortMapping.2.Interface+.Name",
        "Device.NAT.PortMapping.2.Interface+.",
        "Device.NAT.PortMapping.2.",
        "Device.NAT.PortMapping.",
        "Device.NAT.",
        "Device.",
    ]
    assert parse_path("Device.A.1.").parent() == parse_path("Device.A.")
    assert parent("Device.A.*.Go()") == parse_path("Device.A.*.")
    assert parent("Stats.BytesSent") == parse_path("Stats.", allow_relative=True)
    assert parent("Enable") is None


def test_join() -> None:
    assert str(join("Device.WiFi.Radio.1.", "Stats.BytesSent")) == "Device.WiFi.Radio.1.Stats.BytesSent"
    assert str(join(parse_path("Device.WiFi.Radio.1."), parse_path("Enable", allow_relative=True))) == (
        "Device.WiFi.Radio.1.Enable"
    )
    assert join("Device.IP.Interface.", "3.") == parse_path("Device.IP.Interface.3.")
    assert join("Device.A.", "") == parse_path("Device.A.")
    assert parse_path("Device.A.").join("B()").kind is K.COMMAND
    rel = join("Stats.", "BytesSent")
    assert rel.is_relative and str(rel) == "Stats.BytesSent"


@pytest.mark.parametrize(
    ("base", "rel"),
    [
        ("Device.A.Enable", "X"),
        ("Device.A.Go()", "X"),
        ("Device.A.1.", "2."),
        ("Device.", "1."),
        ("Device.A.", ".X"),
        ("Device.A.", "X..Y"),
    ],
)
def test_join_errors(base: str, rel: str) -> None:
    with pytest.raises(PathError):
        join(base, rel)


# --- matches / is_prefix_of ------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "concrete", "matched", "unevaluated"),
    [
        ("Device.IP.Interface.*.Status", "Device.IP.Interface.3.Status", True, False),
        ("Device.IP.Interface.*.Status", "Device.IP.Interface.3.Enable", False, False),
        ("Device.IP.Interface.*.", "Device.IP.Interface.3.", True, False),
        ("Device.IP.Interface.*.", "Device.IP.Interface.", False, False),
        ("Device.IP.Interface.2.", "Device.IP.Interface.3.", False, False),
        ("Device.IP.Interface.3.", "Device.IP.Interface.3.", True, False),
        ('Device.IP.Interface.[Type=="Normal"].Status', "Device.IP.Interface.5.Status", True, True),
        ('Device.IP.Interface.[Type=="Normal"].Status', "Device.IP.Interface.Status", False, False),
        ("Device.IP.Interface.{i}.Stats.", "Device.IP.Interface.9.Stats.", True, False),
        ("Device.IP.Interface.{i}.Reset()", "Device.IP.Interface.9.Reset()", True, False),
        ("Device.IP.Interface.{i}.Reset()", "Device.IP.Interface.9.Reset!", False, False),
        ("Device.IP.Interface.*.X.*.Y", "Device.IP.Interface.1.X.2.Y", True, False),
        ("Device.IP.Interface.*.X.*.Y", "Device.IP.Interface.1.Z.2.Y", False, False),
        ("Device.A.B", "Device.A.B.", False, False),
    ],
)
def test_matches(pattern: str, concrete: str, matched: bool, unevaluated: bool) -> None:
    result = matches(pattern, concrete)
    assert result == MatchResult(matched, unevaluated)
    assert bool(result) is matched


@pytest.mark.parametrize(
    ("prefix", "concrete", "matched"),
    [
        ("Device.IP.Interface.*.", "Device.IP.Interface.3.Stats.BytesSent", True),
        ("Device.IP.Interface.*.", "Device.IP.Interface.3.", True),
        ("Device.IP.Interface.", "Device.IP.Interface.3.", True),
        ("Device.", "Device.IP.Interface.3.Name", True),
        ("Device.IP.Interface.*.", "Device.IP.", False),
        ("Device.IP.Interface.*.", "Device.IP.Interface.", False),
        ("Device.IP.Interface.1.", "Device.IP.Interface.2.Name", False),
        ("Device.IP.Interface.1.Name", "Device.IP.Interface.1.Name", True),
        ("Device.IP.Interface.1.Name", "Device.IP.Interface.1.Name.", False),
        ("Device.IP.Interface.1.Nam", "Device.IP.Interface.1.Name", False),
        ("Device.IP.Interface.1.Name", "Device.IP.Interface.1.Name.X", False),
    ],
)
def test_is_prefix_of(prefix: str, concrete: str, matched: bool) -> None:
    assert bool(is_prefix_of(prefix, concrete)) is matched


def test_is_prefix_of_flags_unevaluated_expression() -> None:
    result = is_prefix_of('Device.IP.Interface.[Name=="x"].', "Device.IP.Interface.4.Enable")
    assert result.matched and result.unevaluated


def test_match_operand_errors() -> None:
    with pytest.raises(PathError):
        matches("Device.A.1.Ref+.B", "Device.A.1.Ref.B")
    with pytest.raises(PathError):
        matches("Device.A.*.", "Device.A.*.")
    with pytest.raises(PathError):
        is_prefix_of("Device.A.", "Device.A.{i}.")
    with pytest.raises(PathError):
        matches("Device..", "Device.A.")


# --- vendor names (TR-106) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "vendor"),
    [
        ("X_ACME-COM_Widget", "ACME-COM"),
        ("X_00D09E_Thing", "00D09E"),
        ("X_Widget", None),
        ("X__Widget", None),
        ("X_ACME_", None),
        ("Widget", None),
    ],
)
def test_vendor_prefix(name: str, vendor: str | None) -> None:
    assert vendor_prefix(name) == vendor
    assert is_valid_path(f"Device.{name}.")


# --- hypothesis: never crash, round trip ----------------------------------------

_PATH_ALPHABET = st.sampled_from(list('Device.XAb_-019*[]{}i"&=!<>~+#()% \t'))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.text(alphabet=_PATH_ALPHABET, max_size=40)))
def test_never_crashes_on_arbitrary_text(text: str) -> None:
    for relative in (False, True):
        try:
            p = parse_path(text, allow_relative=relative, reference_value=relative)
        except PathError as exc:
            assert 0 <= exc.offset <= len(text)
            continue
        assert parse_path(str(p), allow_relative=relative) == p
    assert isinstance(validate_path(text, allow_search=False, allow_whitespace=False), list)
    assert isinstance(check_instance_number_addressing(text), list)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=_PATH_ALPHABET, max_size=30).map(lambda s: "Device." + s))
def test_never_crashes_with_device_prefix(text: str) -> None:
    try:
        p = parse_path(text)
    except PathError:
        return
    assert str(p).startswith("Device.")
    assert parse_path(str(p)) == p


_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,6}", fullmatch=True)
_posnums = st.integers(min_value=1, max_value=MAX_INSTANCE_NUMBER)
_refs = st.builds(
    ReferenceFollow, _names, st.one_of(st.none(), _posnums, st.just("*"))
)
_values = st.one_of(
    st.builds(ExpressionValue, st.text().filter(lambda s: '"' not in s), st.just(True)),
    st.builds(
        ExpressionValue,
        st.from_regex(r"[A-Za-z0-9_+\-.:]{1,10}", fullmatch=True),
        st.just(False),
    ),
)


@st.composite
def _components(draw: st.DrawFn) -> ExpressionComponent:
    head = draw(st.lists(st.one_of(st.builds(Name, _names), _refs), max_size=2))
    parameter = (*head, Name(draw(_names)))
    return ExpressionComponent(parameter, draw(st.sampled_from(list(Operator))), draw(_values))


_instances = st.one_of(
    st.builds(InstanceNumber, _posnums),
    st.just(Wildcard()),
    st.builds(Expression, st.lists(_components(), min_size=1, max_size=3).map(tuple)),
)


@st.composite
def valid_paths(draw: st.DrawFn, supported: bool = False) -> Path:
    segments: list[Segment] = [Name("Device")]
    for _ in range(draw(st.integers(0, 5))):
        if not supported and draw(st.booleans()) and draw(st.booleans()):
            segments.append(draw(_refs))
            continue
        segments.append(Name(draw(_names)))
        if draw(st.booleans()):
            inst = Placeholder() if supported else draw(_instances)
            segments.append(inst)
    kind = draw(st.sampled_from(list(PathKind)))
    if kind in (PathKind.PARAMETER, PathKind.COMMAND, PathKind.EVENT):
        segments.append(Name(draw(_names)))
    else:
        kind = PathKind.OBJECT_INSTANCE if isinstance(
            segments[-1], (InstanceNumber, Wildcard, Expression, Placeholder)
        ) else PathKind.OBJECT
    return Path(tuple(segments), kind)


@settings(max_examples=200, deadline=None)
@given(valid_paths())
def test_round_trip(path: Path) -> None:
    text = str(path)
    parsed = parse_path(text)
    assert parsed == path
    assert str(parsed) == text
    assert is_valid_path(text) or validate_path(text)  # extra checks may flag literals
    assert parsed.is_search == any(
        isinstance(s, (Wildcard, Expression, ReferenceFollow)) for s in path.segments
    )
    if not parsed.has_reference_following:
        supported = to_supported_path(parsed)
        assert parse_path(str(supported)) == supported


@settings(max_examples=100, deadline=None)
@given(valid_paths(supported=True))
def test_round_trip_supported(path: Path) -> None:
    assert parse_path(str(path)) == path
    assert to_supported_path(path) == path


@settings(max_examples=100, deadline=None)
@given(valid_paths())
def test_parent_is_prefix(path: Path) -> None:
    up = parent(path)
    if up is None:
        assert path == parse_path("Device.")
        return
    assert parse_path(str(up)) == up
    assert str(path).startswith(str(up))
