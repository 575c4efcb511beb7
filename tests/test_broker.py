"""Celery's Redis transport with one client per channel (panels/broker.py): kombu's own
messages, unacked records and acknowledgements, sent through one kept client instead of a
new one per write."""

from __future__ import annotations

import uuid

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
