"""`flask --app app xtag ...`: operator commands."""

from __future__ import annotations

import os
import secrets

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import func, select

from xtag import logs
from xtag.core.errors import Invalid
from xtag.core.fields import ID_MAX
from xtag.core.times import iso, parse_filter
from xtag.extensions import db
from xtag.models import ROLES, ApiToken, Connection, Delivery, Site, User
from xtag.pipeline import retention
from xtag.pipeline import worker as worker_mod
from xtag.services import accounts, changes, deliveries, monitoring, sites, tokens
from xtag.services.resources import USERS

xtag_cli = AppGroup("xtag", help="xtag operator commands.")


def _user(email: str) -> User:
    user = db.session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        raise click.ClickException(f"no user with email {email}")
    return user


@xtag_cli.command("create-user")
@click.argument("email")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--password", help="prompted for when not given")
def create_user(email: str, role: str, password: str | None) -> None:
    """Create a user who can log in to the admin (audited, as in the admin)."""
    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    data = {"email": email, "role": role, "password": password, "active": True}
    try:
        user = changes.create(USERS, None, data)
    except Invalid as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"created {user.role} {user.email}")


@xtag_cli.command("create-api-token")
@click.argument("email")
@click.option("--name", default="", help="a label to recognise the token by")
def create_api_token(email: str, name: str) -> None:
    """Print a new management-API token for a user (only its hash is stored)."""
    try:
        _, token = tokens.issue(None, _user(email), name=name)
    except Invalid as exc:
        raise click.ClickException(exc.message) from None
    click.echo(token)


@xtag_cli.command("ensure-admin")
def ensure_admin() -> None:
    """Make sure an admin exists; a generated password is printed once."""
    email = os.environ.get("XTAG_ADMIN_EMAIL") or "admin@localhost"
    password = os.environ.get("XTAG_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
    try:
        user = accounts.ensure_admin(email, password)
    except Invalid as exc:
        raise click.ClickException(f"XTAG_ADMIN_PASSWORD: {exc.message}") from None
    if user is None:
        click.echo("admin user: already set up (log in with the password you were given)")
        return
    email = user.email
    shown = password if not os.environ.get("XTAG_ADMIN_PASSWORD") else "(from XTAG_ADMIN_PASSWORD)"
    click.echo(f"admin user: {email}  password: {shown}  (shown once; keep it)")


@xtag_cli.command("worker")
@click.option("--burst", is_flag=True, help="process everything that is due, then exit")
@click.option(
    "--log-format",
    type=click.Choice(logs.FORMATS),
    default=None,
    help="json lines (default: XTAG_LOG_FORMAT, else json) or text for humans",
)
def worker(burst: bool, log_format: str | None) -> None:
    """Run an RQ worker (with the scheduler) for every xtag queue."""
    if log_format:
        logs.configure(log_format)
    worker_mod.run(current_app._get_current_object(), burst=burst)


@xtag_cli.command("revoke-api-token")
@click.argument("prefix")
def revoke_api_token(prefix: str) -> None:
    """Revoke a token by the start of it (at least its first 12 characters)."""
    if len(prefix) < 12:
        raise click.BadParameter("give at least the first 12 characters", param_hint="PREFIX")
    rows = db.session.scalars(
        select(ApiToken).where(ApiToken.prefix == prefix[:12], ApiToken.revoked_at.is_(None))
    ).all()
    if not rows:
        raise click.ClickException(f"no active token starts with {prefix[:12]}")
    click.echo(f"revoked {tokens.revoke(None, rows)} token(s)")


@xtag_cli.command("rotate-write-key")
@click.argument("site_id", type=int)
@click.option("--revoke-previous", is_flag=True, help="stop accepting the old key at once")
def rotate_write_key(site_id: int, revoke_previous: bool) -> None:
    """Give a site a new write key (the old one works for XTAG_WRITE_KEY_GRACE_HOURS)."""
    site = db.session.get(Site, site_id) if 0 < site_id <= ID_MAX else None
    if site is None:
        raise click.ClickException(f"no site with id {site_id}")
    grace = current_app.config["XTAG_WRITE_KEY_GRACE_HOURS"]
    until = sites.rotate_write_key(None, site, revoke_previous, grace)
    click.echo(f"new write key: {site.write_key}")
    click.echo(f"the old key is accepted until {iso(until)}")


@xtag_cli.command("rotate-keys")
def rotate_keys() -> None:
    """Re-encrypt every connection's credentials with the first key of
    XTAG_ENCRYPTION_KEYS; afterwards the other keys can be removed."""
    rows = db.session.scalars(select(Connection)).all()
    for row in rows:
        row.reencrypt()
    db.session.commit()
    click.echo(f"re-encrypted {len(rows)} connection(s) with the first key")


@xtag_cli.command("retry-failed")
@click.option("--pixel", help="X pixel id")
@click.option("--since", help="ISO 8601 time, e.g. 2026-11-25T00:00:00Z")
def retry_failed(pixel: str | None, since: str | None) -> None:
    """Queue failed deliveries again."""
    try:
        retried = deliveries.retry_failed(None, pixel, parse_filter(since))
    except Invalid as exc:
        raise click.BadParameter(exc.message, param_hint="--since") from None
    click.echo(f"queued {len(retried)} delivery(ies) again")


@xtag_cli.command("purge")
def purge() -> None:
    """Apply the retention periods now (workers also do it every hour)."""
    for name, count in retention.purge().items():
        click.echo(f"{name}: {count} row(s) deleted or emptied")


@xtag_cli.command("status")
def status() -> None:
    """Queue depth, workers alive, failed deliveries, unhealthy connections."""
    failed = db.session.scalar(
        select(func.count()).select_from(Delivery).where(Delivery.status.in_(("failed", "partial")))
    )
    unhealthy = db.session.scalars(select(Connection).where(Connection.status == "unhealthy")).all()
    queues = monitoring.queues(current_app.config["XTAG_READY_WORKER_SECONDS"]) or {}
    workers = queues.get("workers_alive", 0)
    click.echo(f"inbox: {queues.get('inbox_depth', '?')} request(s) not yet recorded")
    click.echo(f"conversions waiting for a batch: {monitoring.waiting()['conversions_waiting']}")
    click.echo(f"workers alive: {workers}" + ("" if workers else "  (none: nothing is delivered!)"))
    click.echo(f"failed deliveries: {failed}")
    for row in unhealthy:
        click.echo(f"unhealthy connection {row.id} ({row.name}): {row.last_error}")


@xtag_cli.command("send-test-event")
@click.argument("site_id", type=int)
@click.argument("event")
@click.option("--url", default=None, help="collector base URL (default: this app, in-process)")
def send_test_event(site_id: int, event: str, url: str | None) -> None:
    """Send a sample track message for SITE through the collector: a live
    event, which reaches X when EVENT is mapped (the admin's "Send a test
    event" is flagged as a test and never does)."""
    site = db.session.get(Site, site_id)
    if site is None:
        raise click.ClickException(f"no site with id {site_id}")
    message = {
        "event": event,
        "anonymousId": f"xtag-test-{secrets.token_hex(4)}",
        "messageId": f"xtag-test-{secrets.token_hex(8)}",
        "properties": {"order_id": f"test-{secrets.token_hex(4)}", "revenue": 1, "currency": "USD"},
        "context": {"twclid": f"xtag-test-{secrets.token_hex(6)}"},
    }
    if url:
        import requests

        response = requests.post(
            f"{url.rstrip('/')}/v1/track", json=message, auth=(site.write_key, ""), timeout=10
        )
        code, body = response.status_code, response.text
    else:
        response = current_app.test_client().post(
            "/v1/track", json=message, auth=(site.write_key, "")
        )
        code, body = response.status_code, response.get_data(as_text=True)
    click.echo(f"{code} {body.strip()}  messageId={message['messageId']}")
    if code != 200:
        raise click.ClickException("the collector refused the test event")
