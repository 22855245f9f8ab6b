"""Alerts: conditions an admin wants to hear about (a connection X refuses,
a pixel whose conversions fail, a site gone silent, match quality falling,
requests set aside), each posted to the alert webhook once when it starts
and once when it ends.

The worker runs `check` every 30 s. An open alert is an `alerts` row with no
`ended_at`; a check opens rows for new conditions and closes rows whose
condition is gone, under a Redis lock so two workers never post one change
twice. Posting is an RQ job (`jobs.notify_alert`), retried when the webhook
is down, so a webhook never holds up intake or delivery. The webhook URL is
a secret (Slack's embed a token): stored encrypted, never logged, never
passed to a job.
"""

from __future__ import annotations

import contextlib
import json
import logging
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from http.client import HTTPException
from urllib.parse import urlsplit

import redis
from flask import current_app
from rq import Retry, get_current_job
from sqlalchemy import func, select, update
from sqlalchemy.exc import SQLAlchemyError

from xtag.core import crypto
from xtag.core.errors import Invalid
from xtag.core.times import iso
from xtag.extensions import db
from xtag.models import Alert, Connection, Delivery, DeliveryItem, Pixel, Setting, Site, utcnow
from xtag.pipeline import inbox, quality, queues

log = logging.getLogger(__name__)

SETTING = "alert_webhook_url"
URL_MAX = 2000
TIMEOUT_SECONDS = 5
RETRIES = 3  # webhook retries, paced by the first XTAG_RETRY_DELAYS
NOTIFY_JOB = "xtag.pipeline.jobs.notify_alert"
LOCK = "xtag:lock:alerts"
LOCK_SECONDS = 120

FAILURE_WINDOW = timedelta(hours=1)
FAILURE_SHARE = 0.05  # over this share of a pixel's conversions failed ...
FAILURE_MIN = 20  # ... out of at least this many in the window
SETTLED = ("delivered", "failed", "rejected")  # a conversion's final statuses
SETTLED_BATCHES = ("delivered", "failed")  # a batch's, where all its conversions share it
QUALITY_DROP = 20.0  # score points lost from yesterday to today
QUALITY_MIN = 100  # conversions each day before the scores are compared
QUALITY_EVERY_SECONDS = 600  # a day-over-day score moves slowly: checked this often
QUALITY_DUE = "xtag:alerts:quality-due"


# --- the webhook URL ------------------------------------------------------------


def check_webhook_url(value: str) -> str:
    """An http(s) URL with a host, or Invalid (which never repeats the URL: it is a secret)."""
    problem = Invalid(
        "alert_webhook_url must be an http or https URL, e.g. https://hooks.slack.com/services/...",
        "alert_webhook_url",
    )
    text = value.strip()
    if len(text) > URL_MAX or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in text):
        raise problem
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018  (raises ValueError for a port out of range)
    except ValueError:
        raise problem from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise problem
    return text


def stored_webhook_url() -> str | None:
    """The URL an admin set, decrypted; None when none is set, or when none
    of XTAG_ENCRYPTION_KEYS opens it (a key dropped too soon): then the
    environment's URL applies, with a warning, until an admin sets it again."""
    row = db.session.get(Setting, SETTING)
    if row is None:
        return None
    try:
        keys = current_app.config["XTAG_ENCRYPTION_KEYS"]
        return crypto.decrypt_json(keys, row.value_encrypted)["value"]
    except crypto.CredentialError:
        log.warning(
            "the alert webhook URL set in the settings cannot be decrypted with "
            "XTAG_ENCRYPTION_KEYS; set it again"
        )
        return None


def store_webhook_url(url: str | None) -> None:
    """Set the admin's URL (encrypted), or remove it (None: XTAG_ALERT_WEBHOOK_URL
    applies again). The caller commits."""
    row = db.session.get(Setting, SETTING)
    if url is None:
        if row is not None:
            db.session.delete(row)
        return
    encrypted = crypto.encrypt_json(current_app.config["XTAG_ENCRYPTION_KEYS"], {"value": url})
    if row is None:
        db.session.add(Setting(name=SETTING, value_encrypted=encrypted, updated_at=utcnow()))
    else:
        row.value_encrypted = encrypted
        row.updated_at = utcnow()


def webhook_url() -> str | None:
    """Where alerts go: the admin's URL, else XTAG_ALERT_WEBHOOK_URL, else nowhere."""
    return stored_webhook_url() or current_app.config.get("XTAG_ALERT_WEBHOOK_URL")


# --- posting ----------------------------------------------------------------------


class WebhookFailed(RuntimeError):
    """The webhook did not take the post; the message never holds the URL."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not a new place to post the alert to."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def post(url: str, text: str, timeout: float = TIMEOUT_SECONDS) -> int:
    """POST {"text": text} (Slack's shape) to the webhook; its 2xx status, or
    WebhookFailed. urllib rather than requests: urllib3 logs the path of every
    request at DEBUG, and a Slack webhook's path is its token."""
    if urlsplit(url).scheme.lower() not in ("http", "https"):
        raise WebhookFailed("the webhook URL is not http or https")
    request = urllib.request.Request(
        url,
        data=json.dumps({"text": text}).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "xtag-alerts"},
        method="POST",
    )
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=timeout) as answer:
            answer.read(64 * 1024)
            return answer.status
    except urllib.error.HTTPError as exc:  # any answer but 2xx, redirects included
        exc.close()
        raise WebhookFailed(f"answered {exc.code}") from None
    except urllib.error.URLError as exc:
        raise WebhookFailed(f"could not be reached ({type(exc.reason).__name__})") from None
    except (OSError, HTTPException, ValueError) as exc:
        raise WebhookFailed(f"could not be reached ({type(exc).__name__})") from None


def text_of(alert: Alert, ended: bool) -> str:
    if ended:
        return f"xtag alert resolved: {alert.message} (started {iso(alert.since)})"
    return f"xtag alert: {alert.message}"


def notify(alert_id: int, ended: bool = False) -> str:
    """Post an alert's start or end. Raises WebhookFailed so that RQ retries
    it; the log says what the webhook did, never where it is."""
    alert = db.session.get(Alert, alert_id)
    if alert is None:
        return "missing"
    url = webhook_url()
    if not url:
        return "no webhook"
    what = "end" if ended else "start"
    fields = {"alert": alert.id, "kind": alert.kind, "subject": alert.subject, "posting": what}
    try:
        status = post(url, text_of(alert, ended))
    except WebhookFailed as exc:
        job = get_current_job()
        left = job.retries_left if job is not None else None
        then = f"retrying ({left} left)" if left else "giving up"
        log.warning(
            "alert %s (%s %s): the webhook %s for its %s; %s",
            alert.id, alert.kind, alert.subject, exc, what, then, extra={"fields": fields},
        )  # fmt: skip
        raise
    log.info(
        "alert %s (%s %s): its %s posted to the webhook (%s)",
        alert.id, alert.kind, alert.subject, what, status, extra={"fields": fields},
    )  # fmt: skip
    return "posted"


def _announce(alert: Alert, ended: bool) -> None:
    """Queue the post (after the row is committed); nothing when no webhook is set."""
    verb = "ended" if ended else "started"
    log.warning(
        "alert %s %s: %s %s: %s",
        alert.id, verb, alert.kind, alert.subject, alert.message,
        extra={"fields": {"alert": alert.id, "kind": alert.kind, "subject": alert.subject}},
    )  # fmt: skip
    if not webhook_url():
        return
    delays = current_app.config["XTAG_RETRY_DELAYS"][:RETRIES]
    queues.queue().enqueue_call(
        NOTIFY_JOB,
        kwargs={"alert_id": alert.id, "ended": ended},
        job_id=f"xtag-alert-{alert.id}-{'end' if ended else 'start'}",
        retry=Retry(max=len(delays), interval=delays),
        **queues.JOB_DEFAULTS,
    )


# --- the conditions ---------------------------------------------------------------

# kind -> a function giving its conditions now: {subject: message}; None when
# it was not looked at this time (its open alerts then stay as they are)
Conditions = dict[str, str] | None


def failing_connections() -> Conditions:
    rows = db.session.execute(
        select(Connection.id, Connection.name, Connection.last_error).where(
            Connection.status == "unhealthy"
        )
    )
    return {
        f"connection:{cid}": f'Connection "{name}" is failing: '
        f"{error or 'X refused its credentials'}. Its pixels' conversions fail until its "
        "credentials are fixed (admin: Connections)."
        for cid, name, error in rows
    }


def failing_pixels(now: datetime) -> Conditions:
    """Pixels with over FAILURE_SHARE of their conversions failed in the last
    hour, read from the hour's batches (one row per up to 500 conversions):
    a delivered or failed batch's conversions all share its fate; only the
    other batches (partial, or still being sent) are read conversion by one."""
    since = now - FAILURE_WINDOW
    whole = (
        select(Delivery.pixel_key, Delivery.status, func.sum(Delivery.conversions))
        .where(Delivery.created_at >= since, Delivery.status.in_(SETTLED_BATCHES))
        .group_by(Delivery.pixel_key, Delivery.status)
    )
    mixed = (
        select(Delivery.pixel_key, DeliveryItem.status, func.count())
        .join(DeliveryItem, DeliveryItem.delivery_id == Delivery.id)
        .where(
            Delivery.created_at >= since,
            Delivery.status.not_in((*SETTLED_BATCHES, "test")),
            DeliveryItem.status.in_(SETTLED),
        )
        .group_by(Delivery.pixel_key, DeliveryItem.status)
    )
    counts: dict[int, Counter] = defaultdict(Counter)
    for query in (whole, mixed):
        for pixel_key, status, n in db.session.execute(query):
            counts[pixel_key][status] += n
    found = {}
    for pixel_key, by_status in sorted(counts.items()):
        total = sum(by_status.values())
        failed = total - by_status["delivered"]
        if total < FAILURE_MIN or failed / total <= FAILURE_SHARE:
            continue
        if pixel := db.session.get(Pixel, pixel_key):  # None: deleted since
            found[f"pixel:{pixel_key}"] = (
                f'Pixel {pixel.pixel_id} ("{pixel.name}"): {failed} of {total} conversions '
                f"({failed / total:.0%}) failed in the last hour (see the delivery log)."
            )
    return found


def silent_sites(now: datetime) -> Conditions:
    found = {}
    rows = db.session.execute(
        select(
            Site.id, Site.name, Site.silence_alert_hours, Site.last_event_at, Site.created_at
        ).where(Site.silence_alert_hours.is_not(None))
    )
    for site_id, name, hours, last_event_at, created_at in rows:
        last = (last_event_at or created_at).replace(microsecond=0)
        if now - last > timedelta(hours=hours):
            since = f"since {iso(last)}" if last_event_at else f"since it was made ({iso(last)})"
            found[f"site:{site_id}"] = (
                f'Site "{name}" has received no events {since}; '
                f"its silence alert is set to {hours:g} hours."
            )
    return found


def quality_drops() -> Conditions:
    if not queues.redis_client().set(QUALITY_DUE, 1, nx=True, ex=QUALITY_EVERY_SECONDS):
        return None  # another check looked less than QUALITY_EVERY_SECONDS ago
    found = {}
    for pixel in db.session.scalars(select(Pixel)):
        yesterday, today = quality.daily(pixel, 2, by_event=False)
        if min(yesterday.conversions, today.conversions) < QUALITY_MIN:
            continue
        if yesterday.score is None or today.score is None:
            continue
        if yesterday.score - today.score > QUALITY_DROP:
            found[f"pixel:{pixel.id}"] = (
                f'Pixel {pixel.pixel_id} ("{pixel.name}"): match quality fell from '
                f"{yesterday.score:g}% yesterday to {today.score:g}% today: fewer conversions "
                "carry a click id, email or phone (see its match quality page)."
            )
    return found


def dead_letters() -> Conditions:
    count = queues.redis_client().xlen(inbox.DEAD)
    if not count:
        return {}
    return {
        "inbox": f"{count} accepted request{'s' if count != 1 else ''} could not be recorded "
        "and are set aside (admin: Set-aside requests; the worker log says why)."
    }


def kinds(now: datetime) -> dict[str, Callable[[], Conditions]]:
    return {
        "connection_failing": failing_connections,
        "pixel_failing": lambda: failing_pixels(now),
        "site_silent": lambda: silent_sites(now),
        "match_quality_drop": quality_drops,
        "dead_letters": dead_letters,
    }


# --- opening and closing ------------------------------------------------------------


def _reconcile(kind: str, conditions: dict[str, str], now: datetime) -> None:
    query = select(Alert).where(Alert.ended_at.is_(None), Alert.kind == kind)
    open_alerts = {alert.subject: alert for alert in db.session.scalars(query)}
    started, ended = [], []
    for subject, message in conditions.items():
        alert = open_alerts.get(subject)
        if alert is None:
            alert = Alert(kind=kind, subject=subject, message=message, since=now)
            db.session.add(alert)
            started.append(alert)
        elif alert.message != message:
            alert.message = message  # the same condition, newer figures: no post
    for subject, alert in open_alerts.items():
        if subject not in conditions:
            closed = db.session.execute(
                update(Alert)
                .where(Alert.id == alert.id, Alert.ended_at.is_(None))
                .values(ended_at=now)
            ).rowcount
            if closed:
                ended.append(alert)
    db.session.commit()
    for alert in started:
        _announce(alert, ended=False)
    for alert in ended:
        _announce(alert, ended=True)


def check(now: datetime | None = None) -> bool:
    """Open and close alerts as their conditions stand; False when another
    worker is checking (it posts what changed)."""
    now = now or utcnow()
    lock = queues.redis_client().lock(LOCK, timeout=LOCK_SECONDS, blocking=False)
    if not lock.acquire():
        return False
    try:
        for kind, conditions_now in kinds(now).items():
            try:
                conditions = conditions_now()
                if conditions is not None:
                    _reconcile(kind, conditions, now)
            except (SQLAlchemyError, redis.RedisError, OSError):
                db.session.rollback()  # unknown is not over: its alerts stay open
                log.exception("alerts: checking %s failed; next round tries again", kind)
        return True
    finally:
        with contextlib.suppress(redis.exceptions.LockError):
            lock.release()


def current() -> list[Alert]:
    """Open alerts, the oldest first."""
    query = select(Alert).where(Alert.ended_at.is_(None)).order_by(Alert.since, Alert.id)
    return list(db.session.scalars(query))


def as_json(alert: Alert) -> dict:
    return {
        "kind": alert.kind,
        "subject": alert.subject,
        "since": iso(alert.since),
        "message": alert.message,
    }
