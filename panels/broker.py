"""Celery's Redis transport, with one client per channel for its bookkeeping writes.

kombu's Redis channel (kombu/transport/redis.py, 5.7) builds a new `redis.Redis` for every
write it makes outside its BRPOP connection (`Channel.conn_or_acquire`): the unacked
index's ZADD and HSET when a task is delivered (`QoS.append`), the ZREM and HDEL when it is
acknowledged (`QoS.ack`), and the visibility sweep. Building a client costs about 0.15 ms
of CPU (its response callbacks, its retry and its connection-pool hand-off), twice per
task: a few percent of what a reply costs the worker. The clients all take their
connections from the channel's one pool, and a `redis.Redis` is safe to share between
threads (each command or pipeline borrows a connection from the pool for its own use), so
one client per pool does the same writes on the same connections.

Used for `redis://` brokers (panels/settings.py: CELERY_BROKER_TRANSPORT); a `rediss://`
broker keeps kombu's own transport, whose TLS check looks for that scheme's name.
Messages, queues and acknowledgements are kombu's, unchanged: only the client object
that sends them is kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
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


class Transport(kombu_redis.Transport):
    Channel = Channel
