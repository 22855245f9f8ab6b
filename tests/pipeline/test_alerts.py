"""Alerts (issue 14): a webhook on loopback hears once when a condition
starts and once when it ends, whichever worker checks and however often; a
webhook that is down, failing or redirecting is retried, logged without its
URL, and never holds up delivery."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from rq.job import Job
from sqlalchemy import select, update

from tests.support import factories
from tests.support.sending import basic, order, send, track
from tests.support.shop import PIXEL, deliveries, items, setup_shop
from xtag.config import ConfigError, from_env
from xtag.extensions import db
from xtag.models import Alert, Connection, Delivery, DeliveryItem, Setting, Site, utcnow
from xtag.pipeline import alerts, consuming, inbox, queues
from xtag.services import changes, settings
from xtag.services.resources import CONNECTIONS

# what makes a Slack webhook URL a secret: the token in its path
TOKEN = "xoxb-alert-hook-secret-93f1c2"
PATH = f"/services/T000/B000/{TOKEN}"


class Receiver:
    """A webhook on loopback: records every POST, answers `answers` in turn, then 200."""

    def __init__(self):
        self.posts: list[tuple[str, dict]] = []
        self.answers: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.posts.append((self.path, json.loads(body)))
                status = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", f"{receiver.base}/elsewhere")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_port}"
        self.url = self.base + PATH
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def texts(self) -> list[str]:
        return [body["text"] for _, body in self.posts]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(app, caplog):
    hook = Receiver()
    yield hook
    hook.stop()
    logged = "\n".join(r.getMessage() + str(getattr(r, "fields", "")) for r in caplog.records)
    assert TOKEN not in logged, "the webhook URL was logged"
    with app.app_context():
        stored = db.session.scalars(select(Setting.value_encrypted)).all()
        failed = queues.queue().failed_job_registry.get_job_ids()
        jobs = Job.fetch_many(failed, queues.redis_client(), serializer=queues.SERIALIZER)
        db.session.remove()
    assert not any(TOKEN in value for value in stored), "the webhook URL was stored in clear"
    assert not any(TOKEN in f"{job.kwargs} {job.exc_info}" for job in jobs)


def use_webhook(url: str) -> None:
    """As an admin sets it (audited, encrypted)."""
    settings.update(factories.user("root@example.com", role="admin"), {"alert_webhook_url": url})


def open_alerts() -> list[tuple[str, str]]:
    db.session.expire_all()
    return [(a.kind, a.subject) for a in alerts.current()]


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A port that refuses connections for the whole test: bound, so no other
    server (of a test running beside this one) takes it, but not listening."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def job_logs(caplog, words: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if words in r.getMessage()]


# --- start and end, posted once ------------------------------------------------------


def test_a_connection_x_refuses_is_posted_when_it_starts_and_when_it_is_fixed(
    x_app, client, ctx, fake_x, deliver, receiver
):
    site = setup_shop(fake_x)
    use_webhook(receiver.url)
    fake_x.pixel_token = "pt-rotated-on-x"  # X no longer takes the stored token
    send(client, site, [order(1)])
    deliver()
    assert [d.status for d in deliveries()] == ["failed"]
    connection = db.session.scalar(select(Connection))

    for _ in range(2):  # the second check finds it open: nothing more to say
        alerts.check()
        deliver()
    assert open_alerts() == [("connection_failing", f"connection:{connection.id}")]
    [start] = receiver.texts()
    assert start.startswith("xtag alert: ") and 'Connection "X" is failing' in start
    assert "Invalid pixel token" in start
    assert receiver.posts[0][0] == PATH

    changes.update(CONNECTIONS, None, connection, {"credentials": {"token": "pt-rotated-on-x"}})
    send(client, site, [order(2)])
    deliver()
    for _ in range(2):
        alerts.check()
        deliver()
    assert open_alerts() == []
    assert len(receiver.texts()) == 2
    end = receiver.texts()[1]
    assert end.startswith("xtag alert resolved: ") and 'Connection "X" is failing' in end


def test_a_silent_site_is_posted_and_its_next_event_ends_it(app, client, ctx, deliver, receiver):
    use_webhook(receiver.url)
    quiet = factories.site(name="Blog", silence_alert_hours=0.5)
    db.session.execute(
        update(Site).where(Site.id == quiet.id).values(last_event_at=utcnow() - timedelta(hours=2))
    )
    factories.site(name="Busy", silence_alert_hours=5)  # made just now: not silent yet
    factories.site(
        name="No alert", silence_alert_hours=None, last_event_at=utcnow() - timedelta(days=9)
    )
    db.session.commit()

    for _ in range(2):
        alerts.check()
        deliver()
    assert open_alerts() == [("site_silent", f"site:{quiet.id}")]
    [start] = receiver.texts()
    assert 'Site "Blog" has received no events since' in start and "0.5 hours" in start

    r = client.post("/v1/track", json=track(), headers=basic(quiet.write_key))
    assert r.status_code == 200
    deliver()  # the worker records it: the site's last event is now
    for _ in range(2):
        alerts.check()
        deliver()
    assert open_alerts() == []
    assert len(receiver.posts) == 2 and receiver.texts()[1].startswith("xtag alert resolved: ")


def test_a_site_that_never_had_an_event_is_silent_from_its_creation(app, ctx, deliver, receiver):
    use_webhook(receiver.url)
    site = factories.site(name="New shop", silence_alert_hours=1)
    db.session.execute(
        update(Site).where(Site.id == site.id).values(created_at=utcnow() - timedelta(hours=3))
    )
    db.session.commit()
    alerts.check()
    deliver()
    [start] = receiver.texts()
    assert 'Site "New shop" has received no events since it was made' in start


def test_two_workers_checking_at_once_post_a_start_once(app, ctx, deliver, receiver):
    use_webhook(receiver.url)
    site = factories.site(name="Blog", silence_alert_hours=1)
    db.session.execute(
        update(Site).where(Site.id == site.id).values(created_at=utcnow() - timedelta(hours=3))
    )
    db.session.commit()
    consumers = [consuming.Consumer(app, name=f"worker-{n}") for n in range(2)]
    ready = threading.Barrier(2)
    failures = []

    def check(consumer):
        ready.wait()
        try:
            consumer.check_alerts()
        except Exception as exc:  # noqa: BLE001  (reported by the assertion below)
            failures.append(exc)

    threads = [threading.Thread(target=check, args=(c,)) for c in consumers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    for consumer in consumers:  # and again, one after the other
        consumer.check_alerts()
    deliver()
    assert failures == []
    assert len(receiver.posts) == 1
    assert db.session.query(Alert).count() == 1


def test_the_worker_checks_alerts_on_its_schedule():
    assert ("alerts", 30.0) in [(task.name, task.every_seconds) for task in consuming.SCHEDULE]


# --- the other conditions --------------------------------------------------------------


def test_a_pixel_with_over_5_percent_failing_in_the_last_hour(
    x_app, client, ctx, fake_x, deliver, receiver
):
    use_webhook(receiver.url)
    site = setup_shop(fake_x)
    bad = {"order-3", "order-7"}
    fake_x.reject_conversion_if = lambda c: "no such order" if c["conversion_id"] in bad else None
    send(client, site, [order(n) for n in range(19)])
    deliver()
    alerts.check()
    assert open_alerts() == []  # 2 of 19: too few conversions to judge
    send(client, site, [order(19)])
    deliver()
    alerts.check()
    deliver()
    [(kind, subject)] = open_alerts()
    assert kind == "pixel_failing"
    [start] = receiver.texts()
    assert (
        f"Pixel {PIXEL}" in start and "2 of 20 conversions (10%) failed in the last hour" in start
    )

    send(client, site, [order(n) for n in range(20, 40)])  # 2 of 40: 5% is not over 5%
    deliver()
    alerts.check()
    deliver()
    assert open_alerts() == [] and receiver.texts()[1].startswith("xtag alert resolved: ")


def test_failures_older_than_an_hour_do_not_count(x_app, client, ctx, fake_x, deliver):
    site = setup_shop(fake_x)
    fake_x.pixel_token = "revoked"
    send(client, site, [order(n) for n in range(30)])
    deliver()
    assert {i.status for i in items()} == {"failed"}
    alerts.check()
    assert "pixel_failing" in [kind for kind, _ in open_alerts()]  # 30 of 30 just now
    db.session.execute(update(Delivery).values(created_at=utcnow() - timedelta(minutes=61)))
    db.session.commit()
    alerts.check()
    assert "pixel_failing" not in [kind for kind, _ in open_alerts()]


def test_match_quality_falling_over_20_points_day_over_day(
    x_app, client, ctx, fake_x, deliver, receiver
):
    use_webhook(receiver.url)
    site = setup_shop(fake_x)
    send(client, site, [order(n) for n in range(100)])  # each with a click id
    deliver()
    db.session.execute(update(DeliveryItem).values(created_at=utcnow() - timedelta(days=1)))
    db.session.commit()
    weak = {"ip": "203.0.113.9", "userAgent": "Mozilla/5.0 (X11; Linux x86_64)"}
    send(client, site, [order(n) for n in range(100, 200)])
    # IP + user agent only, from browsers without the click-id cookie
    send(x_app.test_client(), site, [order(n, context=weak) for n in range(200, 300)])
    deliver()
    alerts.check()
    deliver()
    assert [kind for kind, _ in open_alerts()] == ["match_quality_drop"]
    [start] = receiver.texts()
    assert "match quality fell from 100% yesterday to 50% today" in start


def test_requests_set_aside_raise_an_alert_until_they_are_gone(app, ctx, deliver, receiver):
    use_webhook(receiver.url)
    site = factories.site()
    inbox.add(queues.redis_client(), [{"site_id": site.id, "message": {"type": "track"}}])
    consuming.Consumer(app, name="w").drain()
    alerts.check()
    deliver()
    assert open_alerts() == [("dead_letters", "inbox")]
    assert "1 accepted request could not be recorded" in receiver.texts()[0]
    queues.redis_client().delete(inbox.DEAD)  # an operator dealt with them
    alerts.check()
    deliver()
    assert open_alerts() == [] and len(receiver.posts) == 2


# --- a webhook that is down ------------------------------------------------------------


def silent_site() -> Site:
    site = factories.site(name="Blog", silence_alert_hours=1)
    db.session.execute(
        update(Site).where(Site.id == site.id).values(created_at=utcnow() - timedelta(hours=3))
    )
    db.session.commit()
    return site


def test_a_webhook_that_refuses_connections_never_holds_up_delivery(
    x_app, client, ctx, fake_x, deliver, receiver, caplog, refusing_port
):
    use_webhook(f"http://127.0.0.1:{refusing_port}{PATH}")
    silent_site()
    shop = setup_shop(fake_x)
    alerts.check()
    send(client, shop, [order(n) for n in range(5)])
    deliver()  # runs the alert's post and its retries too
    assert [d.status for d in deliveries()] == ["delivered"]
    assert len(fake_x.accepted(PIXEL)) == 5
    tries = job_logs(caplog, "the webhook could not be reached")
    assert len(tries) == 3  # the first try and two retries (XTAG_RETRY_DELAYS=1,2)
    assert "retrying" in tries[0] and "giving up" in tries[-1]
    assert all("ConnectionRefusedError" in line for line in tries)
    [job_id] = queues.queue().failed_job_registry.get_job_ids()  # failed, as RQ shows it
    assert "could not be reached" in Job.fetch(job_id, queues.redis_client()).exc_info
    assert open_alerts() == [("site_silent", f"site:{db.session.scalar(select(Site.id))}")]


def test_a_webhook_answering_500_is_retried_until_it_takes_the_alert(
    app, ctx, deliver, receiver, caplog
):
    use_webhook(receiver.url)
    receiver.answers = [500, 503]
    silent_site()
    alerts.check()
    deliver()
    texts = receiver.texts()
    assert len(texts) == 3 and len(set(texts)) == 1  # the same alert, until it was taken
    assert len(job_logs(caplog, "the webhook answered 50")) == 2
    assert len(job_logs(caplog, "its start posted to the webhook (200)")) == 1


def test_a_redirecting_webhook_is_not_followed(app, ctx, deliver, receiver, caplog):
    use_webhook(receiver.url)
    receiver.answers = [302, 302, 302]
    silent_site()
    alerts.check()
    deliver()
    assert [path for path, _ in receiver.posts] == [PATH] * 3  # never /elsewhere
    assert len(job_logs(caplog, "the webhook answered 302")) == 3


def test_without_a_webhook_alerts_are_kept_and_logged_but_posted_nowhere(app, ctx, caplog):
    silent_site()
    alerts.check()
    assert [kind for kind, _ in open_alerts()] == ["site_silent"]
    assert job_logs(caplog, "started: site_silent")
    assert queues.queue().count == 0


# --- where the URL comes from ----------------------------------------------------------


def test_the_environment_gives_the_default_webhook_and_an_admin_overrides_it(make_app, receiver):
    other = make_app(XTAG_ALERT_WEBHOOK_URL=receiver.url)
    with other.app_context():
        assert alerts.webhook_url() == receiver.url
        use_webhook("https://hooks.example.com/services/another")
        assert alerts.webhook_url() == "https://hooks.example.com/services/another"
        settings.update(None, {"alert_webhook_url": None})
        assert alerts.webhook_url() == receiver.url
        db.session.remove()


@pytest.mark.parametrize("value", ["ftp://hooks.example.com/x", "hooks.example.com/x", "http://"])
def test_a_webhook_url_in_the_environment_must_be_http_or_https(tmp_path, value):
    with pytest.raises(ConfigError, match="XTAG_ALERT_WEBHOOK_URL must be an http or https URL"):
        from_env({"XTAG_ALERT_WEBHOOK_URL": value}, str(tmp_path))
