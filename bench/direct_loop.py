"""Baseline "direct loop": one thread, confluent-kafka consume + urllib3 POST, no Celery."""

from __future__ import annotations

import json
import sys

import urllib3
from confluent_kafka import Consumer


def main(bootstrap: str, topic: str, url: str, count: int) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"direct.{topic}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": True})
    consumer.subscribe([topic])
    pool = urllib3.PoolManager(maxsize=4)
    done = 0
    while done < count:
        for msg in consumer.consume(num_messages=500, timeout=0.5):
            if msg.error():
                continue
            record = json.loads(msg.value())
            body = json.dumps({"id": record["id"], "name": record["name"]}).encode()
            pool.request("POST", f"{url}/ingest/{record['id']}", body=body,
                         headers={"Content-Type": "application/json",
                                  "X-Produced": str(msg.timestamp()[1])}, retries=False)
            done += 1
    consumer.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
