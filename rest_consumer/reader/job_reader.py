"""One thread per job: consume from Kafka, dispatch ``deliver`` tasks, commit watermarks.

The thread owns the consumer and its loop; what it does with messages lives in its parts:
``outbox`` (sending them as tasks), ``committing`` (final offsets and commits) and ``seeking``
(moving partitions). Each part takes the consumer as an argument, so each is testable with a
fake one (``tests/test_reader.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from rest_consumer.core.config import DEFAULT_QUEUE, Settings
from rest_consumer.core.jobs import Job, setting
from rest_consumer.core.messages import Dispatcher, TopicPartitionKey
from rest_consumer.core.sources import Subscription
from rest_consumer.reader.backpressure import Backpressure
from rest_consumer.reader.batching import AdaptiveBatcher, task_size, tasks_waiting_or_running
from rest_consumer.reader.committing import Committer
from rest_consumer.reader.ordering import gate_for
from rest_consumer.reader.outbox import DispatchFailed, Outbox
from rest_consumer.reader.seeking import Positions, SeekDeferred
from rest_consumer.reader.tracking import Partitions, PartitionTracker
from rest_consumer.reader.vanished import VanishedTasks
from rest_consumer.state import health, keys, outstanding
from rest_consumer.state.heartbeat import Heartbeat, beat, fresh_heartbeats
from rest_consumer.state.store import JobStore

log = logging.getLogger(__name__)

CONSUME_BATCH = 500
TICK_SECONDS = 1.0
COLLECT_SECONDS = 0.025
"""How often a reader learns which of its offsets are final, between commits (every tick):
what it knows final is never sent again, even when Redis loses its data (then the
re-dispatch re-sends at most what finished within this interval before the loss). Each look
pops only what is new (``outstanding.queue_fresh_finals``), so it stays cheap this often."""
REWIND_GRACE_SECONDS = 1.0
"""After Redis lost its data, how long a reader goes on learning what is final (workers
record what they had in hand in the new Redis) before it re-dispatches the rest."""


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
        self.partitions = Partitions()
        self.error: str | None = None
        self._stopping = threading.Event()
        self._rewind = threading.Event()
        self._rewind_all = False
        self._rewind_after = 0.0
        """A rewind after Redis lost its data waits until then (``REWIND_GRACE_SECONDS``)."""
        self._seek_check = threading.Event()
        self.max_in_flight = int(setting(job, "max_in_flight"))
        self.backpressure = Backpressure(self.job_id, self.max_in_flight, self.partitions)
        self.batch_size = task_size(job)
        queue = job.get("queue") or DEFAULT_QUEUE
        self.batcher = AdaptiveBatcher(lambda: tasks_waiting_or_running(client, queue),
                                       self.batch_size)
        self._consumer: Consumer | None = None
        self._last_tick = self._last_collect = 0.0
        self.gate = gate_for(job, settings)
        self.outbox = Outbox(job, client, dispatch, self.partitions, self.gate, self.batch_size,
                             self._note_error)
        self.committer = Committer(self.job_id, client, self.partitions, self.gate)
        self.positions = Positions(self.job_id, client, self.partitions, self.batcher,
                                   self.gate)
        self.vanished = VanishedTasks(self.job_id, queue, settings.visibility_timeout)
        self._endpoint_state: str | None = None
        """The endpoint's breaker state as last seen (its changes are logged)."""

    @property
    def job_id(self) -> str:
        return str(self.job["id"])

    def stop(self) -> None:
        self._stopping.set()

    def request_rewind(self, data_kept: bool = False) -> None:
        """Ask the thread to seek back to its watermarks: Redis lost the tasks, or (with
        ``data_kept``) restarted with its data, when only what it may have lost goes again."""
        if not data_kept and not self._rewind_all:
            self._rewind_after = time.monotonic() + REWIND_GRACE_SECONDS
        self._rewind_all = self._rewind_all or not data_kept
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
                try:
                    self._step(consumer, subscription)
                except redis.RedisError as e:
                    # Redis away (a restart, a failover): keep the consumer and what it
                    # tracks, which a new consumer would lose (everything not committed
                    # would be sent again); the step is tried again shortly.
                    self._note_error(f"Redis: {e}")
                    self._stopping.wait(0.5)
            self._finish(consumer)
        finally:
            consumer.close()
            self._consumer = None

    def _step(self, consumer: Consumer, subscription: Subscription) -> None:
        """One turn of the loop: requests, consume, send, and the periodic work."""
        self._answer_requests(consumer)
        self.batcher.add(self._take(consumer))
        if self.batcher.ready() or self._room() <= len(self.batcher.held):
            self._send_held(consumer)
        self._send(consumer, self._send_released, self.outbox.lines_freed())
        self.backpressure.check(consumer, self._send_held)
        if self._due_for_tick():
            self._send(consumer, self._send_released, self._tick_unless_redis_is_down(consumer))
            subscription.refresh(consumer, self._subscribe)
        elif time.monotonic() - self._last_collect >= COLLECT_SECONDS:
            self._send(consumer, self._send_released, self._collect())

    def _answer_requests(self, consumer: Consumer) -> None:
        """A rewind (Redis lost what was out) or a ``set_offset`` request, when asked. A
        rewind that Redis interrupts stays asked for (it changes nothing before Redis
        answers)."""
        if self._rewind.is_set() and time.monotonic() >= self._rewind_after:
            if self._rewind_all:
                self.positions.rewind(consumer, list(self.partitions))
            else:
                self.positions.resume_after_restart(consumer, list(self.partitions))
            self._rewind.clear()
            self._rewind_all = False
        if self._seek_check.is_set():
            self._seek_check.clear()
            try:
                self.positions.apply_seek_request(consumer)
            except SeekDeferred as e:  # not fetching yet: try again on the next loop
                log.info("job %s: set_offset deferred (%s)", self.job_id, e)
                self._seek_check.set()
            except redis.RedisError as e:
                self._seek_check.set()
                self._note_error(f"Redis: {e}")

    def _send(self, consumer: Consumer, send: Callable[[list[Message]], None],
              messages: list[Message]) -> None:
        """Send ``messages`` one way or the other; what the broker refused is read again."""
        if not messages:
            return
        try:
            send(messages)
        except DispatchFailed as e:
            self._note_error(str(e))
            self.positions.undo(consumer, e.undelivered)
            self._stopping.wait(1.0)

    def _send_held(self, consumer: Consumer) -> None:
        self._send(consumer, self.outbox.send_consumed, self.batcher.take())

    def _send_released(self, messages: list[Message]) -> None:
        """Messages a freed line let go: already tracked when they were consumed."""
        self.outbox.send(messages, [])

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
        keys = [(tp.topic, tp.partition) for tp in partitions]
        outstanding.forget_committed(self.redis, self.job_id, keys)
        left = outstanding.read_left_behind(self.redis.pipeline(transaction=False), self.job_id,
                                            keys)
        for tp, (out, final) in zip(partitions, left, strict=True):
            tracker = self.partitions[(tp.topic, tp.partition)]
            tracker.adopted, tracker.known_final = out, final
            if tracker.adopted or tracker.known_final:
                log.info("job %s: %s[%d] adopts %d message(s) still out and skips %d final",
                         self.job_id, tp.topic, tp.partition, len(tracker.adopted),
                         len(tracker.known_final))

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.partitions[(tp.topic, tp.partition)] = PartitionTracker()
        try:
            self._take_over(partitions)
        except redis.RedisError as e:  # then what is out is sent again: duplicates, no loss
            log.warning("job %s: cannot adopt what is out (%s)", self.job_id, e)
        log.info("job %s: assigned %s", self.job_id, _names(partitions))
        self._seek_check.set()  # a set_offset request may wait for these partitions
        if self.backpressure.paused:  # a rebalance does not keep pauses
            consumer.pause(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("job %s: revoked %s", self.job_id, _names(partitions))
        revoked = [(tp.topic, tp.partition) for tp in partitions]
        self._drop(set(revoked))
        try:  # what the final offsets free here belongs to the next owner: not sent
            self.committer.collect_and_commit(consumer, revoked)
        except (KafkaException, redis.RedisError) as e:
            log.warning("job %s: commit on revoke failed (%s); the next owner re-reads from "
                        "the last commit", self.job_id, e)
        for key in revoked:
            self.partitions.pop(key, None)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        lost = {(tp.topic, tp.partition) for tp in partitions}
        self._drop(lost)
        for key in lost:
            self.partitions.pop(key, None)

    def _drop(self, keys: set[TopicPartitionKey]) -> None:
        self.batcher.drop(keys)
        if self.gate is not None:
            self.gate.drop(keys)

    # --- consuming -----------------------------------------------------------------------

    def _take(self, consumer: Consumer) -> list[Message]:
        """What to dispatch now: the next message as soon as it comes, with every message
        already waiting behind it (adaptive batching: a lone message never lingers).

        Keep calling this while paused so the member stays in the group; it never takes more
        than the job's in-flight room (DESIGN §4: bounded memory).
        """
        room = self._room() - len(self.batcher.held)
        if room <= 0:
            return []
        # While messages are held for busy workers, look again soon; while some are out,
        # soon enough to learn which became final every COLLECT_SECONDS.
        first = consumer.poll(timeout=0.005 if self.batcher.held else
                              COLLECT_SECONDS if self.partitions.in_flight() else 0.2)
        if first is None:
            return []
        return [first, *consumer.consume(num_messages=room - 1, timeout=0)] if room > 1 \
            else [first]

    def _room(self) -> int:
        """How many messages to take now: up to a batch, within ``max_in_flight``."""
        return max(1, min(CONSUME_BATCH, self.max_in_flight - self.partitions.in_flight()))

    # --- periodic work -------------------------------------------------------------------

    def _due_for_tick(self) -> bool:
        return time.monotonic() - self._last_tick >= TICK_SECONDS

    def _tick_unless_redis_is_down(self, consumer: Consumer) -> list[Message]:
        """Redis down (restart, failover): keep the consumer and its state, try again soon.

        Tearing the consumer down would re-read everything not yet committed, duplicating
        every task that Redis (with AOF) still holds. Returns the messages freed lines let go.
        """
        try:
            return self._tick(consumer)
        except redis.RedisError as e:
            self._last_tick = time.monotonic()
            self._note_error(f"Redis: {e}")
            return []

    def _collect(self) -> list[Message]:
        """Between ticks: which offsets became final (no commit); the messages it frees."""
        self._last_collect = time.monotonic()
        try:
            return self.committer.collect_fresh(list(self.partitions))
        except redis.RedisError:  # the tick says so, and retries
            return []

    def _tick(self, consumer: Consumer) -> list[Message]:
        self._last_tick = self._last_collect = time.monotonic()
        released = self.committer.collect_and_commit(consumer, list(self.partitions))
        stalled = {k for k, t in self.partitions.items()
                   if t.stalled_for() > self.settings.redispatch_after}
        stalled |= set(self.vanished.find(self.redis, self.partitions))
        if stalled:
            self.positions.rewind(consumer, sorted(stalled))
        others = fresh_heartbeats(self.redis, self.job_id, but=self.instance)
        self.backpressure.others = sum(b.in_flight for b in others)
        self._heartbeat(consumer)
        self._watch_endpoint()
        self.error = None
        return released

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

    def _heartbeat(self, consumer: Consumer) -> None:
        pipe = self.redis.pipeline(transaction=False)
        held, oldest = 0, None
        if self.gate is not None:
            held, oldest = self.gate.held, self.gate.oldest_wait()
        beat(pipe, self.job_id, self.instance, Heartbeat(
            self.job.get("hash"), self.backpressure.paused, self.error,
            self.committer.report(consumer), self.partitions.in_flight(), held,
            None if oldest is None else round(oldest, 3)))
        pipe.execute()

    def _finish(self, consumer: Consumer) -> None:
        """On stop: commit what is final, and withdraw the heartbeat."""
        try:
            self.committer.collect_and_commit(consumer, list(self.partitions))
            self.redis.hdel(keys.reader_heartbeat(self.job_id), self.instance)
        except (KafkaException, redis.RedisError) as e:
            log.warning("job %s: final commit failed: %s", self.job_id, e)


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
