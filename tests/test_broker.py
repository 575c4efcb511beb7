"""Celery's Redis transport with one client per channel (panels/broker.py): kombu's own
messages, unacked records and acknowledgements, sent through one kept client instead of a
new one per write."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from kombu import Queue

from chat import tasks
from panels import broker
from panels.redis_client import get_redis


def test_the_broker_connection_uses_the_transport_and_keeps_one_client():
    app = tasks.message_run.app
    with app.connection_for_read() as conn:
        assert isinstance(conn.transport, broker.Transport)
        channel = conn.default_channel
        assert isinstance(channel, broker.Channel)
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
            assert first.connection_pool is channel.pool
        given = object()
        with channel.conn_or_acquire(given) as client:
            assert client is given
        # A reconnect drops the pools: the kept client goes with them.
        channel._disconnect_pools()
        with channel.conn_or_acquire() as after:
            assert after is not first
            assert after.connection_pool is channel.pool
            assert after.ping()


def test_a_delivered_message_is_recorded_unacked_until_it_is_acknowledged():
    app = tasks.message_run.app
    name = f"test-broker-{uuid.uuid4().hex}"
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        conn.Producer(channel).publish({"n": 1}, routing_key=name, declare=[Queue(name, routing_key=name)])
        message = channel.basic_get(name, no_ack=False)
        assert message is not None
        tag = message.delivery_tag
        qos = channel.qos
        redis = get_redis()
        assert redis.hexists(qos.unacked_key, tag)
        assert redis.zscore(qos.unacked_index_key, tag) is not None
        message.ack()
        assert not redis.hexists(qos.unacked_key, tag)
        assert redis.zscore(qos.unacked_index_key, tag) is None
        assert redis.llen(name) == 0


@contextmanager
def _consume_one(name: str, on_message) -> Iterator:
    """Publish one message to a fresh queue and deliver it through a consumer (the worker's
    path); yields the channel's QoS, before the connection's close restores what is unacked."""
    app = tasks.message_run.app
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        queue = Queue(name, routing_key=name)
        conn.Producer(channel).publish({"n": 1}, routing_key=name, declare=[queue])
        with conn.Consumer(queue, callbacks=[on_message], channel=channel, accept=["json"]):
            conn.drain_events(timeout=5)
            yield channel.qos


def test_a_consumed_message_is_handed_over_before_its_record_is_written_and_recorded_after():
    redis = get_redis()
    seen = {}

    def on_message(body, message):
        qos = message.channel.qos
        seen.update(tag=message.delivery_tag, qos=qos, recorded=redis.hexists(qos.unacked_key, message.delivery_tag))

    with _consume_one(f"test-broker-{uuid.uuid4().hex}", on_message) as qos:
        assert seen["recorded"] is False  # the task started before the record's round trip
        tag = seen["tag"]
        assert redis.hexists(qos.unacked_key, tag)  # and the record is there once the delivery returns
        assert redis.zscore(qos.unacked_index_key, tag) is not None
        assert tag in qos._delivered
        qos.ack(tag)
        assert not redis.hexists(qos.unacked_key, tag)
        assert redis.zscore(qos.unacked_index_key, tag) is None


def test_an_acknowledgement_before_the_record_leaves_no_record_behind():
    redis = get_redis()
    tags = []

    def on_message(body, message):
        tags.append(message.delivery_tag)
        message.ack()  # as Celery does for a task it refuses, before the consumer writes the record

    with _consume_one(f"test-broker-{uuid.uuid4().hex}", on_message) as qos:
        assert not redis.hexists(qos.unacked_key, tags[0])
        assert redis.zscore(qos.unacked_index_key, tags[0]) is None


def test_a_requeue_before_the_record_puts_the_message_back_on_its_queue():
    redis = get_redis()
    name = f"test-broker-{uuid.uuid4().hex}"
    tags = []

    def on_message(body, message):
        tags.append(message.delivery_tag)
        message.requeue()  # restores from the record: it must be written first, or the message is lost

    with _consume_one(name, on_message) as qos:
        assert redis.llen(name) == 1
        assert not redis.hexists(qos.unacked_key, tags[0])


def test_an_acknowledgement_from_another_thread_waits_for_the_record_being_written():
    redis = get_redis()
    name = f"test-broker-{uuid.uuid4().hex}"
    done = []

    def on_message(body, message):
        qos = message.channel.qos
        tag = message.delivery_tag
        writing = threading.Event()
        write = qos._write

        def slow_write(*args):
            writing.set()
            acker.join(0.2)  # the acknowledgement arrives while the record is being written
            write(*args)

        qos._write = slow_write
        acker = threading.Thread(target=lambda: (writing.wait(5), message.ack(), done.append(tag)))
        acker.start()
        message._acker = acker

    app = tasks.message_run.app
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        queue = Queue(name, routing_key=name)
        conn.Producer(channel).publish({"n": 1}, routing_key=name, declare=[queue])
        consumed = []
        with conn.Consumer(
            queue,
            callbacks=[on_message, lambda body, message: consumed.append(message)],
            channel=channel,
            accept=["json"],
        ):
            conn.drain_events(timeout=5)
        consumed[0]._acker.join(5)
        qos = channel.qos
        tag = consumed[0].delivery_tag
        assert done == [tag]
        assert not redis.hexists(qos.unacked_key, tag)  # the ack came after the write, not before it
        assert redis.zscore(qos.unacked_index_key, tag) is None
