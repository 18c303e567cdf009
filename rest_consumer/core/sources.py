"""Which topics a job reads: names as given, regexes matched with RE2, never the project's own.

A topic starting with ``^`` is a regex. It is resolved here, against the cluster's topic list,
rather than handed to librdkafka, for two reasons: the project's own topics (everything named
``<CONSUMER_GROUP_PREFIX>.*``: jobs, users, audit, dead letters, responses) and Kafka's
internal ones (``__*``) are never a source, whatever the regex; and every process matches with
one linear-time engine (RE2), so a pattern such as ``^(a+)+$`` cannot hang the API or a reader.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import re2
from confluent_kafka import KafkaException

log = logging.getLogger(__name__)

REFRESH_SECONDS = 10.0
"""How often a reader matches its regexes again (librdkafka's metadata refresh, as before)."""
LIST_TIMEOUT = 5.0
_REGEX_META = set("\\^$.|?*+()[]{}")


def is_regex(topic: str) -> bool:
    return topic.startswith("^")


def is_own(topic: str, prefix: str) -> bool:
    """True for the project's own topics: ``<prefix>.jobs``, ``.dlq.<job>`` and the rest."""
    return topic.startswith(prefix + ".")


@functools.lru_cache(maxsize=1024)
def compiled(pattern: str) -> Any:
    """The RE2 program of a topic regex (``re2.error`` when RE2 cannot compile it)."""
    return re2.compile(pattern)


def topic_problem(topic: str, prefix: str) -> str | None:
    """Why ``topic`` may not be a job's source, or None."""
    if not is_regex(topic):
        if is_own(topic, prefix):
            return f"{topic!r} is one of the project's own topics ({prefix}.*), never a source"
        return None
    try:
        compiled(topic)
    except re2.error as e:
        return f"invalid regular expression (RE2 syntax): {e}"
    if literal_prefix(topic[1:]).startswith(prefix + "."):
        return (f"can only match the project's own topics ({prefix}.*), which are never a "
                "source")
    return None


def literal_prefix(pattern: str) -> str:
    """What every match of an anchored ``pattern`` starts with (``a\\.b.*`` -> ``a.b``)."""
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern) and not pattern[i + 1].isalnum():
            char, step = pattern[i + 1], 2
        elif char in _REGEX_META:
            break
        else:
            step = 1
        if pattern[i + step:i + step + 1] in ("?", "*", "{"):
            break  # the character may be absent
        out.append(char)
        i += step
    return "".join(out)


def resolve(wanted: Iterable[str], available: Iterable[str], prefix: str) -> list[str]:
    """The topics to read: names as given, and every available topic a regex matches, less
    the project's own and Kafka's internal topics."""
    available = list(available)
    names: set[str] = set()
    for topic in wanted:
        if is_regex(topic):
            regex = compiled(topic)
            names.update(t for t in available if not t.startswith("__") and regex.search(t))
        else:
            names.add(topic)
    return sorted(t for t in names if not is_own(t, prefix))


class Subscription:
    """What one job's consumer subscribes to; regexes are matched again every REFRESH_SECONDS
    and the consumer subscribes anew only when the topics they match change."""

    def __init__(self, wanted: list[str], prefix: str) -> None:
        self.wanted = wanted
        self.prefix = prefix
        self.dynamic = any(is_regex(t) for t in wanted)
        self.current: list[str] | None = None
        self._next = 0.0

    def refresh(self, consumer: Any, subscribe: Callable[[list[str]], None]) -> None:
        """Subscribe at first, and again when a regex matches other topics than before."""
        if self.current is not None and (not self.dynamic or time.monotonic() < self._next):
            return
        self._next = time.monotonic() + REFRESH_SECONDS
        try:
            available = consumer.list_topics(timeout=LIST_TIMEOUT).topics if self.dynamic \
                else {}
        except KafkaException as e:
            log.warning("cannot list topics to match %s (%s); trying again in %.0f s",
                        self.wanted, e, REFRESH_SECONDS)
            return
        names = resolve(self.wanted, available, self.prefix)
        if names != self.current:
            self.current = names
            subscribe(names)
