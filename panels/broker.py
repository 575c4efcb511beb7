"""Celery's Redis transport: one client per channel for its bookkeeping writes, and a
delivered task's unacked record written while the task starts rather than before.

One client. kombu's Redis channel (kombu/transport/redis.py, 5.7) builds a new
`redis.Redis` for every write it makes outside its BRPOP connection
(`Channel.conn_or_acquire`): the unacked index's ZADD and HSET when a task is delivered
(`QoS.append`), the ZREM and HDEL when it is acknowledged (`QoS.ack`), and the visibility
sweep. Building a client costs about 0.15 ms of CPU (its response callbacks, its retry and
its connection-pool hand-off), twice per task. The clients all take their connections from
the channel's one pool, and a `redis.Redis` is safe to share between threads (each command
or pipeline borrows a connection from the pool for its own use), so one client per pool
does the same writes on the same connections.

The record after the hand-off. kombu writes a consumed message's unacked record (one
MULTI/EXEC round trip) and only then hands the message to Celery, so every task waited for
that round trip before it could start (0.8 ms in bench/compare.sh's stages). Here the
message is handed over first (Celery queues it to the pool, which takes microseconds) and
the consumer's thread writes the same record while the task's thread starts, each waiting
on its own socket: the task's first round trip ends 0.3-0.4 ms sooner (docs/chat.md). The
record holds exactly what kombu's does, and nothing removes or reads a record before it is
written: an acknowledgement, a rejection or a restore of a message whose record is still
to be written writes it first (or waits for the consumer's write to finish), then does
what kombu does. A message that is dropped by a crash in between is lost, as with kombu's
order: its BRPOP has already taken it off the queue before either writes the record.
`basic_get` (no hand-off) writes the record first, as kombu does.

Used for `redis://` brokers (panels/settings.py: CELERY_BROKER_TRANSPORT); a `rediss://`
broker keeps kombu's own transport, whose TLS check looks for that scheme's name.
Messages, queues and acknowledgements are kombu's, unchanged.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from time import time

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps

_WRITING = object()


class QoS(kombu_redis.QoS):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # delivery tag -> the message whose record is still to be written, or _WRITING.
        self._unrecorded: dict = {}
        self._recording = threading.Condition()

    def hand_over(self, message, delivery_tag) -> None:
        """Count `message` as delivered (the prefetch limit, a restore at shutdown) before
        its record is written by `record`."""
        with self._recording:
            self._unrecorded[delivery_tag] = message
        virtual.QoS.append(self, message, delivery_tag)

    def record(self, delivery_tag) -> None:
        """Write the unacked record of a message `hand_over` counted, unless an
        acknowledgement or a restore has written it already."""
        with self._recording:
            message = self._unrecorded.get(delivery_tag)
            if message is None or message is _WRITING:
                return
            self._unrecorded[delivery_tag] = _WRITING
        try:
            self._write(message, delivery_tag)
        finally:
            with self._recording:
                del self._unrecorded[delivery_tag]
                self._recording.notify_all()

    def _recorded(self, delivery_tag) -> None:
        """Return once the message's record is in Redis (or it never had one to write)."""
        with self._recording:
            while self._unrecorded.get(delivery_tag) is _WRITING:
                self._recording.wait()
            pending = delivery_tag in self._unrecorded
        if pending:
            self.record(delivery_tag)
            with self._recording:  # the consumer's thread may have taken it first
                while self._unrecorded.get(delivery_tag) is _WRITING:
                    self._recording.wait()

    def _write(self, message, delivery_tag) -> None:
        # kombu's QoS.append, without its in-memory part (done in hand_over).
        delivery = message.delivery_info
        with self.pipe_or_acquire() as pipe:
            pipe.zadd(self.unacked_index_key, {delivery_tag: time()}).hset(
                self.unacked_key,
                delivery_tag,
                dumps([message._raw, delivery["exchange"], delivery["routing_key"]]),
            ).execute()

    def ack(self, delivery_tag) -> None:
        self._recorded(delivery_tag)
        super().ack(delivery_tag)

    def reject(self, delivery_tag, requeue=False) -> None:
        self._recorded(delivery_tag)
        super().reject(delivery_tag, requeue=requeue)

    def restore_by_tag(self, tag, client=None, leftmost=False) -> None:
        self._recorded(tag)
        super().restore_by_tag(tag, client=client, leftmost=leftmost)


class Channel(kombu_redis.Channel):
    QoS = QoS
    _shared_client = None

    @contextmanager
    def conn_or_acquire(self, client=None) -> Iterator:
        if client:
            yield client
            return
        shared = self._shared_client
        pool = self.pool  # a new one after a reconnect (`_disconnect_pools`)
        if shared is None or shared.connection_pool is not pool:
            shared = self._shared_client = self._create_client()
        yield shared

    def basic_consume(self, queue, no_ack, callback, consumer_tag, **kwargs):
        ret = super().basic_consume(queue, no_ack, callback, consumer_tag, **kwargs)
        qos = self.qos
        if no_ack or not isinstance(qos, QoS):  # without ack emulation kombu keeps no record
            return ret

        def _callback(raw_message):
            # kombu's (virtual/base.py: Channel.basic_consume), with the record written
            # after the hand-off instead of before it.
            message = self.Message(raw_message, channel=self)
            tag = message.delivery_tag
            qos.hand_over(message, tag)
            try:
                return callback(message)
            finally:
                qos.record(tag)

        self.connection._callbacks[queue] = _callback
        return ret


class Transport(kombu_redis.Transport):
    Channel = Channel
