"""One thread per job: consume from Kafka, dispatch ``deliver`` tasks, commit watermarks."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from rest_consumer.core.config import DEFAULT_QUEUE, Settings
from rest_consumer.core.jobs import Job, setting
from rest_consumer.core.messages import Dispatcher, TaskMessage
from rest_consumer.core.sources import Subscription
from rest_consumer.reader.batching import AdaptiveBatcher
from rest_consumer.reader.ordering import gate_for
from rest_consumer.reader.tracking import PartitionTracker
from rest_consumer.state import health, heldbehind, keys, outstanding, seeks
from rest_consumer.state.heartbeat import Heartbeat, beat, fresh_heartbeats
from rest_consumer.state.offsets import resolve
from rest_consumer.state.store import JobStore

log = logging.getLogger(__name__)

CONSUME_BATCH = 500
TICK_SECONDS = 1.0
RELEASE_CHECK_SECONDS = 0.005
"""How often an ordered job's reader asks Redis whether its lane holders are final."""

TP = tuple[str, int]


class JobReader(threading.Thread):
    """Reads one job's topics in consumer group ``<prefix>.<job id>``."""

    def __init__(self, job: Job, settings: Settings, client: redis.Redis,
                 dispatch: Dispatcher, instance: str) -> None:
        super().__init__(name=f"reader-{job['id']}", daemon=True)
        self.job = job
        self.settings = settings
        self.redis = client
        self.dispatch = dispatch
        self.instance = instance
        self.trackers: dict[TP, PartitionTracker] = {}
        self.paused = False
        self.error: str | None = None
        self._stopping = threading.Event()
        self._rewind = threading.Event()
        self._seek_check = threading.Event()
        self.max_in_flight = int(setting(job, "max_in_flight"))
        self.batch_size = int(setting(job, "batch_size"))
        queue = job.get("queue") or DEFAULT_QUEUE
        self.batcher = AdaptiveBatcher(lambda: self._tasks_waiting_or_running(queue),
                                       self.batch_size)
        self._consumer: Consumer | None = None
        self._last_tick = 0.0
        self.gate = gate_for(job, settings)
        self._next_release_check = 0.0
        self._endpoint_state: str | None = None
        """The endpoint's breaker state as last seen (its changes are logged)."""
        self._released: list[Message] = []
        """Messages whose lane a tick's collection freed, to send on the next loop."""

    @property
    def job_id(self) -> str:
        return str(self.job["id"])

    def stop(self) -> None:
        self._stopping.set()

    def request_rewind(self) -> None:
        """Ask the thread to seek back to its watermarks (Redis lost the tasks)."""
        self._rewind.set()

    def check_seek_request(self) -> None:
        """Ask the thread to apply the job's ``set_offset`` request where it is pending."""
        self._seek_check.set()

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._consume_until_stopped()
            except KafkaException as e:
                self._note_error(f"Kafka: {e}")
            except redis.RedisError as e:
                self._note_error(f"Redis: {e}")
            except Exception as e:
                log.exception("job %s: unexpected error in the reader", self.job_id)
                self._note_error(f"{type(e).__name__}: {e}")
            self._stopping.wait(2.0)
        log.info("job %s: reader stopped", self.job_id)

    def _note_error(self, reason: str) -> None:
        self.error = reason
        log.error("job %s: %s; retrying", self.job_id, reason, extra={"job": self.job_id})

    def _consumer_config(self) -> dict[str, Any]:
        return {
            # A dead reader's partitions move to the others after 10 s, not Kafka's 45 s.
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 3_000,
            **self.settings.kafka_client_config(),
            "group.id": f"{self.settings.consumer_group_prefix}.{self.job_id}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": setting(self.job, "offset_reset"),
            # Every job has its own consumer: cap what each one prefetches (DESIGN §8).
            "queued.max.messages.kbytes": 8192,
            "topic.metadata.refresh.interval.ms": 10_000,
            "client.id": f"rest-consumer-{self.job_id}",
        }

    def _consume_until_stopped(self) -> None:
        consumer = self._consumer = Consumer(self._consumer_config())
        subscription = Subscription(list(self.job["topic"]),
                                    self.settings.consumer_group_prefix)
        try:
            subscription.refresh(consumer, self._subscribe)
            while not self._stopping.is_set():
                if self._rewind.is_set():
                    self._rewind.clear()
                    self._rewind_partitions(list(self.trackers))
                if self._seek_check.is_set():
                    self._seek_check.clear()
                    self._apply_seek_request()
                self.batcher.add(self._take(consumer))
                if self.batcher.ready() or self._room() <= len(self.batcher.held):
                    self._dispatch(self.batcher.take())
                self._release_lanes()
                if self._due_for_tick():
                    self._tick_unless_redis_is_down()
                    subscription.refresh(consumer, self._subscribe)
            self._finish()
        finally:
            consumer.close()
            self._consumer = None

    def _subscribe(self, topics: list[str]) -> None:
        """Read these topics (``sources``: never the project's own), or none for now."""
        assert self._consumer is not None
        if topics:
            self._consumer.subscribe(topics, on_assign=self._on_assign,
                                     on_revoke=self._on_revoke, on_lost=self._on_lost)
        else:
            self._consumer.unsubscribe()
        log.info("job %s: reads %s", self.job_id, ", ".join(topics) or "no topic yet")

    # --- rebalance callbacks -------------------------------------------------------------

    def _take_over(self, partitions: list[TopicPartition]) -> None:
        """What the partitions' previous owner left: offsets out (dispatched, not final) are
        adopted, not sent again; offsets final above the committed watermark are not either."""
        left = outstanding.read_left_behind(self.redis.pipeline(transaction=False), self.job_id,
                                            [(tp.topic, tp.partition) for tp in partitions])
        for tp, (out, final) in zip(partitions, left, strict=True):
            tracker = self.trackers[(tp.topic, tp.partition)]
            tracker.adopted, tracker.known_final = out, final
            if tracker.adopted or tracker.known_final:
                log.info("job %s: %s[%d] adopts %d message(s) still out and skips %d final",
                         self.job_id, tp.topic, tp.partition, len(tracker.adopted),
                         len(tracker.known_final))

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.trackers[(tp.topic, tp.partition)] = PartitionTracker()
        try:
            self._take_over(partitions)
        except redis.RedisError as e:  # then what is out is sent again: duplicates, no loss
            log.warning("job %s: cannot adopt what is out (%s)", self.job_id, e)
        log.info("job %s: assigned %s", self.job_id, _names(partitions))
        self._seek_check.set()  # a set_offset request may wait for these partitions
        if self.paused:  # a rebalance does not keep pauses
            consumer.pause(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("job %s: revoked %s", self.job_id, _names(partitions))
        revoked = [(tp.topic, tp.partition) for tp in partitions]
        self.batcher.drop(set(revoked))
        if self.gate is not None:
            self.gate.drop(set(revoked))
        try:
            self._collect_and_commit(revoked)
        except (KafkaException, redis.RedisError) as e:
            log.warning("job %s: commit on revoke failed (%s); the next owner re-reads from "
                        "the last commit", self.job_id, e)
        for key in revoked:
            self.trackers.pop(key, None)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.batcher.drop({(tp.topic, tp.partition) for tp in partitions})
        if self.gate is not None:
            self.gate.drop({(tp.topic, tp.partition) for tp in partitions})
        for tp in partitions:
            self.trackers.pop((tp.topic, tp.partition), None)

    # --- dispatching ---------------------------------------------------------------------

    def _take(self, consumer: Consumer) -> list[Message]:
        """What to dispatch now: the next message as soon as it comes, with every message
        already waiting behind it (adaptive batching: a lone message never lingers).

        Keep calling this while paused so the member stays in the group; it never takes more
        than the job's in-flight room (DESIGN §4: bounded memory).
        """
        room = self._room() - len(self.batcher.held)
        if room <= 0:
            return []
        # While messages are held for busy workers, look again soon.
        first = consumer.poll(timeout=0.005 if self.batcher.held else 0.2)
        if first is None:
            return []
        return [first, *consumer.consume(num_messages=room - 1, timeout=0)] if room > 1 \
            else [first]

    def _dispatch(self, messages: list[Message]) -> None:
        usable = [m for m in messages if self._usable(m)]
        if not usable:
            return
        if self.gate is None:
            self._send(usable, usable)
        else:  # what waits behind its lane is tracked (out, not final) but not sent yet
            self._send(self.gate.admit(usable, self._known_final), usable)

    def _send(self, ready: list[Message], track: list[Message]) -> None:
        """Dispatch ``ready`` (less what must not be sent), then track ``track`` in offset
        order: what was sent, what was not to be, what waits behind its lane."""
        send = [m for m in ready if self._needs_sending(m)]
        if send:
            size = self.batch_size
            payloads = [TaskMessage.from_kafka(m) for m in send]
            groups = [payloads[i:i + size] for i in range(0, len(payloads), size)]
            try:
                self.dispatch(self.job, groups)
            except Exception as e:  # noqa: BLE001 - the broker is down: re-read, lose nothing
                self._undo_dispatch(track or send, e)
                return
        for m in track:
            self.trackers.setdefault((str(m.topic()), int(m.partition() or 0)),
                                     PartitionTracker()).dispatched(int(m.offset() or 0))
        if send:
            self._note_dispatched(send)

    def _release_lanes(self) -> None:
        """Ordered jobs: ask Redis which lane holders are final now, and send what waited
        behind them (every ``RELEASE_CHECK_SECONDS`` while a lane is held)."""
        if self.gate is None:
            return
        if self._released:  # lanes freed by a tick's collection
            freed, self._released = self._released, []
            self._send(freed, [])
        if time.monotonic() < self._next_release_check:
            return
        self._next_release_check = time.monotonic() + RELEASE_CHECK_SECONDS
        parts = sorted(self.gate.partitions())
        if not parts:
            return
        pipe = self.redis.pipeline(transaction=False)
        busy = [self.gate.busy(topic, partition) for topic, partition in parts]
        for (topic, partition), offsets in zip(parts, busy, strict=True):
            outstanding.queue_which_final(pipe, self.job_id, (topic, partition), offsets)
            heldbehind.queue_which_lettered(pipe, self.job_id, (topic, partition), offsets)
        replies = pipe.execute()
        released: list[Message] = []
        lettered: set[heldbehind.Where] = set()
        for n, ((topic, partition), offsets) in enumerate(zip(parts, busy, strict=True)):
            scores, marks = replies[2 * n], replies[2 * n + 1]
            final = [o for o, score in zip(offsets, scores, strict=True) if score is not None]
            lettered |= {(topic, partition, o)
                         for o, mark in zip(offsets, marks, strict=True) if mark is not None}
            released += self.gate.release(topic, partition, final)
        heldbehind.keep(self.redis, self.job_id, self.gate.take_behind(), lettered)
        if released:
            self._send(released, [])

    def _note_held_behind(self) -> None:
        """Lanes the tick's collection freed: which of their holders were dead-lettered is
        asked separately (rare: the 5 ms check above frees almost every lane first)."""
        if self.gate is not None and (behind := self.gate.take_behind()):
            heldbehind.note(self.redis, self.job_id, behind)

    def _known_final(self, msg: Message) -> bool:
        tracker = self.trackers.get((str(msg.topic()), int(msg.partition() or 0)))
        return tracker is not None and int(msg.offset() or 0) in tracker.known_final

    def _note_dispatched(self, sent: list[Message]) -> None:
        """Count them, and add them to their partitions' ``out`` sets (for a next owner);
        after the tasks are out, so a count or an entry never covers a task that is not."""
        by_partition: dict[TP, list[int]] = {}
        for m in sent:
            by_partition.setdefault((str(m.topic()), int(m.partition() or 0)), []).append(
                int(m.offset() or 0))
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(keys.counters(self.job_id), "dispatched", len(sent))
        outstanding.record_sent(pipe, self.job_id, by_partition)
        try:
            pipe.execute()
        except redis.RedisError as e:  # the tasks are out; a next owner would send them again
            self._note_error(f"Redis: {e}")

    def _needs_sending(self, msg: Message) -> bool:
        tracker = self.trackers.get((str(msg.topic()), int(msg.partition() or 0)))
        return tracker is None or tracker.needs_sending(int(msg.offset() or 0))

    def _usable(self, msg: Message) -> bool:
        error = msg.error()
        if error is None:
            return True
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning("job %s: consumer error: %s", self.job_id, error)
        return False

    def _undo_dispatch(self, undelivered: list[Message], error: Exception) -> None:
        """Seek each partition back to its first message not dispatched (ordered jobs: back
        to the watermark, since their lanes are rebuilt from there)."""
        self._note_error(f"could not dispatch tasks: {error}")
        if self.gate is not None:
            self._rewind_partitions(sorted({(str(m.topic()), int(m.partition() or 0))
                                            for m in undelivered} & set(self.trackers)))
            self._stopping.wait(1.0)
            return
        firsts: dict[TP, int] = {}
        for msg in undelivered:
            firsts.setdefault((str(msg.topic()), int(msg.partition() or 0)),
                              int(msg.offset() or 0))
        for (topic, partition), offset in firsts.items():
            self._seek(topic, partition, offset)
        self._stopping.wait(1.0)

    def _seek(self, topic: str, partition: int, offset: int) -> None:
        if self._consumer is not None:
            self._consumer.seek(TopicPartition(topic, partition, offset))

    def _rewind_partitions(self, partitions: list[TP]) -> None:
        outstanding.forget(self.redis, self.job_id, partitions)
        self.batcher.drop(set(partitions))
        if self.gate is not None:
            self.gate.drop(set(partitions))
        for key in partitions:
            target = self.trackers[key].rewind()
            if target is not None:
                log.warning("job %s: re-dispatching %s[%d] from offset %d", self.job_id,
                            key[0], key[1], target)
                self._seek(key[0], key[1], target)

    def _apply_seek_request(self) -> None:
        """set_offset: move the assigned partitions the request still waits for, forget what
        is out for them, commit at once, and mark them applied (``seeks``)."""
        if self._consumer is None:
            return
        try:
            request = seeks.current(self.redis, self.job_id)
            waiting = set(seeks.pending(self.redis, self.job_id, request)) if request else set()
        except redis.RedisError as e:
            self._seek_check.set()
            self._note_error(f"Redis: {e}")
            return
        mine = [tp for tp in self._consumer.assignment()
                if seeks.partition_name(tp.topic, tp.partition) in waiting]
        if request is None or not mine:
            return
        moved = []
        for tp in mine:
            target = resolve(self._consumer, tp, request.offset)
            try:
                self._seek(tp.topic, tp.partition, target)
            except KafkaException as e:  # not fetching yet: try again on the next loop
                log.info("job %s: set_offset deferred (%s)", self.job_id, e)
                self._seek_check.set()
                return
            moved.append(TopicPartition(tp.topic, tp.partition, target))
        outstanding.forget(self.redis, self.job_id, [(tp.topic, tp.partition) for tp in moved],
                           final_too=True)
        self.batcher.drop({(tp.topic, tp.partition) for tp in moved})
        if self.gate is not None:
            self.gate.drop({(tp.topic, tp.partition) for tp in moved})
        for tp in moved:
            tracker = self.trackers.setdefault((tp.topic, tp.partition), PartitionTracker())
            tracker.rewind(keep_final=False)
            tracker.high = tracker.committed = tp.offset
        self._consumer.commit(offsets=moved, asynchronous=False)
        seeks.mark_applied(self.redis, self.job_id, request.generation,
                           [seeks.partition_name(tp.topic, tp.partition) for tp in moved])
        log.info("job %s: set_offset %s (generation %d) -> %s", self.job_id, request.offset,
                 request.generation,
                 ", ".join(f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in moved))

    # --- periodic work -------------------------------------------------------------------

    def _tick_unless_redis_is_down(self) -> None:
        """Redis down (restart, failover): keep the consumer and its state, try again soon.

        Tearing the consumer down would re-read everything not yet committed, duplicating
        every task that Redis (with AOF) still holds.
        """
        try:
            self._tick()
        except redis.RedisError as e:
            self._last_tick = time.monotonic()
            self._note_error(f"Redis: {e}")

    def _tick(self) -> None:
        self._last_tick = time.monotonic()
        self._collect_and_commit(list(self.trackers))
        stalled = [k for k, t in self.trackers.items()
                   if t.stalled_for() > self.settings.redispatch_after]
        if stalled:
            self._rewind_partitions(stalled)
        self._apply_backpressure()
        self._heartbeat()
        self._watch_endpoint()
        self.error = None

    def _collect_and_commit(self, partitions: list[TP]) -> None:
        """Read the final offsets above each partition's oldest pending one, commit the new
        watermarks, then trim what the commits cover."""
        partitions = [p for p in partitions if p in self.trackers]
        waiting = [p for p in partitions if self.trackers[p].pending]
        if waiting:
            pipe = self.redis.pipeline(transaction=False)
            for topic, partition in waiting:
                floor = self.trackers[(topic, partition)].pending[0]
                outstanding.queue_finals_from(pipe, self.job_id, (topic, partition), floor)
            for key, done in zip(waiting, pipe.execute(), strict=True):
                final = [int(o) for o in done]
                self.trackers[key].finished(final)
                self.trackers[key].advance()
                if self.gate is not None:  # before the commit trims them from Redis
                    self._released += self.gate.release(key[0], key[1], final)
            self._note_held_behind()  # before the commit trims the lettered marks too
        offsets = []
        for topic, partition in partitions:
            mark = self.trackers[(topic, partition)].watermark
            if mark is not None and mark != self.trackers[(topic, partition)].committed:
                offsets.append(TopicPartition(topic, partition, mark))
        if not offsets or self._consumer is None:
            return
        self._consumer.commit(offsets=offsets, asynchronous=False)
        pipe = self.redis.pipeline(transaction=False)
        for tp in offsets:
            self.trackers[(tp.topic, tp.partition)].committed = tp.offset
            outstanding.queue_trim(pipe, self.job_id, (tp.topic, tp.partition), tp.offset)
        pipe.execute()

    def _local_in_flight(self) -> int:
        return sum(len(t.pending) for t in self.trackers.values())

    def _tasks_waiting_or_running(self, queue: str) -> int:
        """Tasks in the job's queue, plus those workers hold (kombu's ``unacked`` hash: with
        prefetch 1 every held task is running)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen(queue)
        pipe.hlen(keys.KOMBU_UNACKED)
        waiting, running = pipe.execute()
        return int(waiting) + int(running)

    def _room(self) -> int:
        """How many messages to take now: up to a batch, within ``max_in_flight``."""
        return max(1, min(CONSUME_BATCH, self.max_in_flight - self._local_in_flight()))

    def _due_for_tick(self) -> bool:
        """Every second, and at once when the job reaches its in-flight limit."""
        return (time.monotonic() - self._last_tick >= TICK_SECONDS
                or self._local_in_flight() >= self.max_in_flight)

    def _apply_backpressure(self) -> None:
        limit = self.max_in_flight
        # This reader's own count, plus what the job's other readers last reported.
        others = fresh_heartbeats(self.redis, self.job_id, but=self.instance)
        in_flight = self._local_in_flight() + sum(b.in_flight for b in others)
        if self._consumer is None:
            return
        assigned = self._consumer.assignment()
        if not self.paused and in_flight > limit:
            self.paused = True
            self.batcher.drop()  # resuming seeks back to the first message not dispatched
            self._consumer.pause(assigned)
            log.warning("job %s: %d messages in flight (limit %d); pausing", self.job_id,
                        in_flight, limit)
        elif self.paused and in_flight < limit / 2:
            self.paused = False
            # pause() dropped what was prefetched: resume from the next undispatched offset.
            for tp in assigned:
                tracker = self.trackers.get((tp.topic, tp.partition))
                if tracker is not None and tracker.high is not None:
                    self._consumer.seek(TopicPartition(tp.topic, tp.partition, tracker.high))
            self._consumer.resume(assigned)
            log.info("job %s: %d in flight; resuming", self.job_id, in_flight)

    def _watch_endpoint(self) -> None:
        """Log the circuit breaker's changes; ``pause_after``: a breaker open that long stops
        the job, with the reason."""
        state = health.state(self.redis, self.job_id)
        if state != self._endpoint_state:
            if self._endpoint_state is not None or state != "closed":
                log.log(logging.INFO if state == "closed" else logging.WARNING,
                        "job %s: endpoint circuit breaker %s -> %s", self.job_id,
                        self._endpoint_state or "closed", state, extra={"job": self.job_id})
            self._endpoint_state = state
        pause_after = self.job.get("pause_after")
        if not pause_after or (reason := health.overdue(self.redis, self.job_id,
                                                          float(pause_after))) is None:
            return
        log.error("job %s: %s", self.job_id, reason)
        JobStore.for_settings(self.redis, self.settings).set_enabled(self.job_id, False, reason)
        self.stop()

    def _heartbeat(self) -> None:
        pipe = self.redis.pipeline(transaction=False)
        held, oldest = 0, None
        if self.gate is not None:
            held, oldest = self.gate.held, self.gate.oldest_wait()
        beat(pipe, self.job_id, self.instance, Heartbeat(
            self.job.get("hash"), self.paused, self.error, self._partition_report(),
            self._local_in_flight(), held, None if oldest is None else round(oldest, 3)))
        pipe.execute()

    def _partition_report(self) -> dict[str, dict[str, Any]]:
        """Committed watermark, high watermark (as last fetched: no broker call) and lag."""
        report = {}
        for (topic, partition), tracker in self.trackers.items():
            low = high = None
            if self._consumer is not None:
                low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), cached=True)
            mark = tracker.committed
            # Nothing committed yet: behind by all the partition holds (0 when it is empty),
            # as the API's status counts it.
            start = mark if mark is not None else low
            lag = (high - start if high is not None and high >= 0
                   and start is not None and start >= 0 else None)
            report[f"{topic}[{partition}]"] = {"topic": topic, "partition": partition,
                                               "committed": mark, "high": high, "lag": lag}
        return report

    def _finish(self) -> None:
        """On stop: commit what is final, and withdraw the heartbeat."""
        try:
            self._collect_and_commit(list(self.trackers))
            self.redis.hdel(keys.reader_heartbeat(self.job_id), self.instance)
        except (KafkaException, redis.RedisError) as e:
            log.warning("job %s: final commit failed: %s", self.job_id, e)


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
