"""Topic Names and Topic Filters: syntax checks and matching (MQTT 5.0 §4.7,
§4.8.2; MQTT 3.1.1 §4.7).

The checks return problem kinds rather than ``Violation`` objects so that
``validate`` can attach the rule of the protocol version in use:

* ``"empty"`` - zero length (MQTT-4.7.3-1);
* ``"wildcard"`` - ``+`` or ``#`` in a Topic Name;
* ``"multi-level"`` - ``#`` not alone in the last level;
* ``"single-level"`` - ``+`` not alone in its level;
* ``"share-name"`` - ``$share/`` followed by an empty ShareName (MQTT-4.8.2-1);
* ``"shared-filter"`` - a ShareName holding ``+`` or ``#``, or no ``/`` and
  Topic Filter after it (MQTT-4.8.2-2).
"""

from __future__ import annotations

from typing import Final

SHARED_PREFIX: Final = "$share/"


def topic_name_problems(topic: str) -> list[str]:
    """Problems of a Topic Name (PUBLISH, Will Topic, Response Topic)."""
    if not topic:
        return ["empty"]
    if "+" in topic or "#" in topic:
        return ["wildcard"]
    return []


def is_shared(topic_filter: str) -> bool:
    """True for a Shared Subscription filter (``$share/{ShareName}/{filter}``)."""
    return topic_filter.startswith(SHARED_PREFIX)


def topic_filter_problems(topic_filter: str, *, shared: bool = True) -> list[str]:
    """Problems of a Topic Filter.  ``shared=False`` (MQTT 3.1.1) treats
    ``$share/...`` as an ordinary filter."""
    if not topic_filter:
        return ["empty"]
    problems: list[str] = []
    if shared and topic_filter.startswith(SHARED_PREFIX):
        share_name, slash, topic_filter = topic_filter[len(SHARED_PREFIX):].partition("/")
        if not share_name:
            problems.append("share-name")
        elif "+" in share_name or "#" in share_name or not slash or not topic_filter:
            problems.append("shared-filter")
        if not topic_filter:
            return problems
    if "+" in topic_filter or "#" in topic_filter:
        levels = topic_filter.split("/")
        last = len(levels) - 1
        for index, level in enumerate(levels):
            if "#" in level and (level != "#" or index != last):
                problems.append("multi-level")
                break
        for level in levels:
            if "+" in level and level != "+":
                problems.append("single-level")
                break
    return problems


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches ``topic_filter`` (MQTT 5.0 §4.7).

    Wildcards at the first level do not match topics starting with ``$``
    (MQTT-4.7.2-1); a shared filter matches on its ``{filter}`` part.
    """
    if topic_filter.startswith(SHARED_PREFIX):
        parts = topic_filter.split("/", 2)
        if len(parts) < 3:
            return False
        topic_filter = parts[2]
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= len(topic_levels):
            return False
        if level != "+" and level != topic_levels[index]:
            return False
    return len(filter_levels) == len(topic_levels)
