"""Topic Name / Topic Filter syntax and matching (MQTT 5.0 §4.7, §4.8.2).

R-MQTT.15 / R-MQTT.44 / R-MQTT.45: the broker matches the Agent's Topic
Filters (often wildcarded) against the Topics it publishes to.
"""

from __future__ import annotations

import pytest

from conformance.mtp.mqtt import topic_filter_problems, topic_matches, topic_name_problems
from conformance.mtp.mqtt.topics import is_shared


@pytest.mark.parametrize(("topic", "problems"), [
    ("a/b", []), ("/", []), ("", ["empty"]), ("a/+", ["wildcard"]), ("#", ["wildcard"]),
    ("$SYS/x", []),
])
def test_topic_name_problems(topic: str, problems: list[str]) -> None:
    assert topic_name_problems(topic) == problems


@pytest.mark.parametrize(("topic_filter", "problems"), [
    # Examples of MQTT 5.0 §4.7.1.2 and §4.7.1.3.
    ("sport/tennis/player1/#", []), ("#", []), ("sport/tennis#", ["multi-level"]),
    ("sport/tennis/#/ranking", ["multi-level"]), ("+", []), ("+/tennis/#", []),
    ("sport+", ["single-level"]), ("sport/+/player1", []), ("", ["empty"]),
    ("a/#/+x", ["multi-level", "single-level"]), ("//", []),
    # Shared Subscriptions (§4.8.2).
    ("$share/consumer1/sport/tennis/+", []), ("$share/consumer1//finance", []),
    ("$share//a", ["share-name"]), ("$share/", ["share-name"]),
    ("$share/a+/b", ["shared-filter"]), ("$share/a#/b", ["shared-filter"]),
    ("$share/group", ["shared-filter"]), ("$share/group/", ["shared-filter"]),
    ("$share/g/a/#/b", ["multi-level"]), ("$shared/x", []),
])
def test_topic_filter_problems(topic_filter: str, problems: list[str]) -> None:
    assert topic_filter_problems(topic_filter) == problems


def test_shared_syntax_only_in_5_0() -> None:
    assert topic_filter_problems("$share//a", shared=False) == []
    assert is_shared("$share/g/a") and not is_shared("$SYS/a")


@pytest.mark.parametrize(("topic_filter", "topic", "match"), [
    ("sport/tennis/player1/#", "sport/tennis/player1", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
    ("sport/#", "sport", True),
    ("#", "anything/at/all", True),
    ("sport/tennis/+", "sport/tennis/player2", True),
    ("sport/tennis/+", "sport/tennis/player1/ranking", False),
    ("sport/+", "sport", False),
    ("sport/+", "sport/", True),
    ("+/+", "/finance", True),
    ("/+", "/finance", True),
    ("+", "/finance", False),
    ("ACCOUNTS", "Accounts", False),
    ("#", "$SYS/monitor", False),  # MQTT-4.7.2-1
    ("+/monitor/Clients", "$SYS/monitor/Clients", False),
    ("$SYS/#", "$SYS/monitor/Clients", True),
    ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
    ("$share/g/sport/+", "sport/x", True),
    ("$share/g", "g", False),
    ("a/b", "a/b/c", False),
    ("a/b/c", "a/b", False),
])
def test_topic_matches(topic_filter: str, topic: str, match: bool) -> None:
    assert topic_matches(topic_filter, topic) is match
