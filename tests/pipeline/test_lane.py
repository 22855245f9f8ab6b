"""The collector's hand-off connection (queues.Lane): it answers as redis-py
would, survives Redis dropping it, and a forked process (a gunicorn worker)
never shares its parent's socket."""

from __future__ import annotations

import os

import pytest
import redis

from xtag.pipeline import queues


def test_replies_and_error_replies_are_redis_py_s(ctx):
    lane = queues.Lane(queues.redis_client())
    entry = lane.execute("XADD", "test:lane", "*", "events", "[]")
    assert queues.redis_client().xrange("test:lane")[0][0] == entry
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        lane.execute("LPUSH", "test:lane", "x")
    assert lane.execute("PING") == b"PONG"  # an error reply leaves the connection usable


def test_a_connection_redis_dropped_is_replaced_without_an_error(ctx):
    client = queues.redis_client()
    lane = queues.Lane(client)
    first = lane.execute("CLIENT", "ID")
    client.client_kill_filter(_id=first)  # as a Redis restart or an idle timeout would
    second = lane.execute("CLIENT", "ID")
    assert second != first
    assert lane.execute("CLIENT", "ID") == second  # then kept


def test_a_forked_child_opens_its_own_connection(ctx):
    client = queues.redis_client()
    lane = queues.Lane(client)
    parent = lane.execute("CLIENT", "ID")
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its connection's id, or 0 on any error
        try:
            answer = lane.execute("CLIENT", "ID")
        except BaseException:
            answer = 0
        os.write(writer, str(answer).encode())
        os._exit(0)
    os.close(writer)
    os.waitpid(pid, 0)
    child = int(os.read(reader, 64) or b"0")
    os.close(reader)
    assert child and child != parent
    assert lane.execute("CLIENT", "ID") == parent  # the parent's connection was left alone
