"""Ordered jobs: which later messages waited behind a message that was dead-lettered, shown
with its dead letter (``held_behind``), so whoever reads the letter knows which newer
versions of the entity went out after it.

The worker marks the offsets it dead-letters (``lettered``, trimmed at each commit like
``done``); the order gate notes, when it frees a line, which offsets waited on it; the reader
keeps those notes for the lettered offsets only (a dead letter is rare: the hash stays small).
"""

from __future__ import annotations

import json
from typing import Any

from rest_consumer.state import keys

Where = tuple[str, int, int]
"""Topic, partition, offset."""


def _field(topic: str, partition: int, offset: int) -> str:
    return f"{topic}[{partition}]@{offset}"


def queue_lettered(pipe: Any, job_id: str, lettered: list[Where]) -> None:
    """Worker: these messages of an ordered job were dead-lettered."""
    by_partition: dict[tuple[str, int], list[int]] = {}
    for topic, partition, offset in lettered:
        by_partition.setdefault((topic, partition), []).append(offset)
    for (topic, partition), offsets in by_partition.items():
        pipe.zadd(keys.lettered(job_id, topic, partition), {str(o): o for o in offsets})


def queue_which_lettered(pipe: Any, job_id: str, tp: tuple[str, int],
                         offsets: list[int]) -> None:
    """Reader: queue the question which of these offsets were dead-lettered (ZMSCORE: one
    score or None each), beside the question which are final."""
    pipe.zmscore(keys.lettered(job_id, *tp), [str(o) for o in offsets])


def keep(client: Any, job_id: str, behind: dict[Where, list[int]],
         lettered: set[Where]) -> None:
    """Reader: of these freed line holders (with the offsets that waited behind each), keep
    what waited behind those that were dead-lettered."""
    kept = {_field(*where): json.dumps(waited) for where, waited in behind.items()
            if where in lettered}
    if kept:
        client.hset(keys.held_behind(job_id), mapping=kept)


def note(client: Any, job_id: str, behind: dict[Where, list[int]]) -> None:
    """``keep``, asking Redis first which of the holders were dead-lettered."""
    pipe = client.pipeline(transaction=False)
    wheres = list(behind)
    for topic, partition, offset in wheres:
        pipe.zscore(keys.lettered(job_id, topic, partition), str(offset))
    keep(client, job_id, behind, {where for where, score in
                                  zip(wheres, pipe.execute(), strict=True)
                                  if score is not None})


def annotate(client: Any, job_id: str, letters: list[dict[str, Any]]) -> None:
    """API: add ``held_behind`` (offsets, in the letter's partition) to the letters shown."""
    if not letters:
        return
    fields = [_field(letter["topic"], letter["partition"], letter["offset"])
              for letter in letters]
    for letter, found in zip(letters, client.hmget(keys.held_behind(job_id), fields),
                             strict=True):
        if found:
            letter["held_behind"] = json.loads(found)
