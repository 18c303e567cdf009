"""RoundTrip: the lean pipeline of the worker's per-task round trips, on real Redis."""

from __future__ import annotations

import hashlib
import os

import pytest
import redis

from rest_consumer.broker.roundtrip import LuaScript, RoundTrip


def test_replies_come_raw_and_in_order(real_redis: redis.Redis) -> None:
    trip = RoundTrip(real_redis)
    trip.set("rt:a", "1", nx=True, px=10_000)
    trip.set("rt:a", "2", nx=True, px=10_000)
    trip.zadd("rt:z", {"7": 7, "8": 8.5})
    trip.zmscore("rt:z", ["7", "9", "8"])
    trip.hincrby("rt:h", "n", 3)
    trip.hincrbyfloat("rt:h", "sum", 0.25)
    trip.eval("return {ARGV[1], tonumber(ARGV[2])}", 1, "rt:k", "x", 5)
    # RESP3 (redis-py 8's default): ZMSCORE's scores come as doubles
    assert trip.execute() == [b"OK", None, 2, [7.0, None, 8.5], 3, b"0.25", [b"x", 5]]
    assert real_redis.get("rt:a") == b"1"
    assert 0 < real_redis.pttl("rt:a") <= 10_000


def test_nothing_queued_sends_nothing(real_redis: redis.Redis) -> None:
    assert RoundTrip(real_redis).execute() == []


def test_an_error_reply_is_raised_after_every_command_ran(real_redis: redis.Redis) -> None:
    real_redis.set("rt:s", "text")
    trip = RoundTrip(real_redis)
    trip.set("rt:before", "1")
    trip.hincrby("rt:s", "n", 1)  # WRONGTYPE
    trip.set("rt:after", "1")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        trip.execute()
    assert real_redis.get("rt:before") == real_redis.get("rt:after") == b"1"
    # the connection went back to the pool in step: the next command reads its own reply
    assert real_redis.get("rt:s") == b"text"


@pytest.mark.parametrize("own", [True, False], ids=["own connection", "pooled"])
def test_an_interrupted_read_does_not_leave_replies_for_the_next_round_trip(
        real_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch, own: bool) -> None:
    """A soft time limit can strike between the write and the last reply."""
    ping = RoundTrip(real_redis, own_connection=own).execute_command("PING")
    assert ping.execute() == [b"PONG"]  # connected
    connection_class = real_redis.connection_pool.connection_class
    reads = 0
    original = connection_class.read_response

    def read_once_then_interrupt(self: object, *args: object, **kwargs: object) -> object:
        nonlocal reads
        reads += 1
        if reads == 2:
            raise KeyboardInterrupt  # any BaseException, as SoftTimeLimitExceeded is
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(connection_class, "read_response", read_once_then_interrupt)
    trip = RoundTrip(real_redis, own_connection=own)
    for n in range(3):
        trip.set(f"rt:i{n}", str(n))
    with pytest.raises(KeyboardInterrupt):
        trip.execute()
    monkeypatch.undo()
    # the same thread's next round trip reads its own replies, not the stale "OK"s
    again = RoundTrip(real_redis, own_connection=own).get("rt:i2").get("rt:i0")
    assert again.execute() == [b"2", b"0"]


def test_a_dropped_connection_is_reconnected_and_the_batch_sent(
        real_redis: redis.Redis, redis_url: str) -> None:
    real_redis.ping()  # a pooled connection exists
    admin = redis.Redis.from_url(redis_url)
    assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
    trip = RoundTrip(real_redis)
    trip.set("rt:r", "1")
    assert trip.execute() == [b"OK"]
    admin.close()


def test_a_transaction_answers_with_its_commands_replies(real_redis: redis.Redis) -> None:
    trip = RoundTrip(real_redis, transaction=True)
    trip.zadd("rt:tz", {"a": 1}).hset("rt:th", "a", "x")  # chained, as kombu writes them
    assert trip.execute() == [1, 1]
    assert real_redis.hget("rt:th", "a") == b"x"


def test_a_refused_transaction_raises_and_runs_nothing(real_redis: redis.Redis) -> None:
    trip = RoundTrip(real_redis, transaction=True)
    trip.set("rt:t1", "1")
    trip.execute_command("NOSUCHCOMMAND")
    with pytest.raises(redis.ResponseError, match="unknown command"):
        trip.execute()
    assert real_redis.get("rt:t1") is None
    real_redis.set("rt:t2", "text")
    trip = RoundTrip(real_redis, transaction=True)
    trip.hincrby("rt:t2", "n", 1)  # fails inside EXEC: raised, as a pipeline does
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        trip.execute()


def client_id(client: redis.Redis) -> int:
    """The id of the connection a RoundTrip with its own connection uses in this process."""
    [answer] = RoundTrip(client, own_connection=True).execute_command("CLIENT", "ID").execute()
    return int(answer)


def test_a_forked_child_uses_its_own_connection(real_redis: redis.Redis) -> None:
    """Prefork: the parent's connection (its socket) must not be shared with a child."""
    parent_id = client_id(real_redis)
    pid = os.fork()
    if pid == 0:  # the child: records the id of the connection it used
        real_redis.set("rt:child-id", client_id(real_redis))
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert int(real_redis.get("rt:child-id") or 0) not in (0, parent_id)
    assert client_id(real_redis) == parent_id  # the parent's own connection still works


def test_each_section_reads_its_own_replies_by_name(real_redis: redis.Redis) -> None:
    trip = RoundTrip(real_redis)
    trip.set("rt:a", "1")
    with trip.section("counts"):
        trip.incr("rt:n")
        trip.incr("rt:n")
    with trip.section("read"):
        trip.get("rt:a")
    trip.delete("rt:a", "rt:n")
    trip.execute()
    assert trip.replies("counts") == [1, 2]
    assert trip.replies("read") == [b"1"]


def test_a_script_unknown_to_the_server_is_sent_again_with_its_source(
        real_redis: redis.Redis) -> None:
    script = LuaScript("return {KEYS[1], ARGV[1]}",
                       hashlib.sha1(b"return {KEYS[1], ARGV[1]}").hexdigest())
    real_redis.script_flush()
    trip = RoundTrip(real_redis)
    trip.set("rt:before", "1")
    trip.script(script, ["k"], ["v"])
    trip.delete("rt:before")
    assert trip.execute() == [b"OK", [b"k", b"v"], 1]  # NOSCRIPT, then EVAL alone
    again = RoundTrip(real_redis)
    again.script(script, ["k2"], ["v2"])
    assert again.execute() == [[b"k2", b"v2"]]  # known now: EVALSHA answered
