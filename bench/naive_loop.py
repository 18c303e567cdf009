"""Baseline "naive Celery" reader: poll one message at a time, one apply_async each."""

from __future__ import annotations

import json
import sys

from confluent_kafka import Consumer
from naive_app import post


def main(bootstrap: str, topic: str, url: str, count: int) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"naive.{topic}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    done = 0
    while done < count:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        record = json.loads(msg.value())
        post.apply_async((f"{url}/ingest/{record['id']}",
                          json.dumps({"id": record["id"], "name": record["name"]})))
        done += 1
    consumer.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
