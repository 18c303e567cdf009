"""Log lines: JSON format carries the job coordinates."""

from __future__ import annotations

import json
import logging

from rest_consumer.core.logs import JsonFormatter


def test_json_lines_carry_job_topic_partition_offset() -> None:
    record = logging.makeLogRecord({
        "msg": "job %s failed", "args": ("people",), "levelname": "WARNING", "name": "x",
        "job": "people", "topic": "t", "partition": 1, "offset": 9})
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "job people failed"
    assert (line["job"], line["topic"], line["partition"], line["offset"]) == ("people", "t",
                                                                               1, 9)
