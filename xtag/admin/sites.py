"""Sites: the list, a site's settings, and its install snippet."""

from __future__ import annotations

import functools
import re
import time
from pathlib import Path

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import BooleanField, StringField, TextAreaField
from wtforms.validators import Optional

from xtag.admin.base import ActionForm, admin_only, bp, errors_into, row_or_404
from xtag.core.errors import Invalid
from xtag.extensions import db
from xtag.models import Site
from xtag.services import changes, refusals
from xtag.services import sites as sites_service
from xtag.services.resources import SITES


class SiteForm(FlaskForm):
    name = StringField("Name")
    allowed_origins = TextAreaField(
        "Allowed origins (one per line; empty allows all)", validators=[Optional()]
    )
    default_phone_region = StringField("Default phone region (e.g. US)", validators=[Optional()])
    require_consent = BooleanField("Forward only events with advertising consent")
    rate_limit = StringField(
        "Rate limit (events per second; empty: the server's default)", validators=[Optional()]
    )
    test_mode = BooleanField("Test mode: record conversions as test deliveries, send nothing to X")
    x_pixel_id = StringField(
        "This site's own X pixel id, to count pixel and server conversions once (empty: off)",
        validators=[Optional()],
    )
    silence_alert_hours = StringField(
        "Alert when no event arrives for this many hours (empty: off)", validators=[Optional()]
    )

    def data_for_service(self) -> dict:
        limit = (self.rate_limit.data or "").strip()
        silence = (self.silence_alert_hours.data or "").strip()
        return {
            "name": self.name.data or "",
            "allowed_origins": [
                o.strip() for o in (self.allowed_origins.data or "").splitlines() if o.strip()
            ],
            "default_phone_region": (self.default_phone_region.data or "").strip() or None,
            "require_consent": bool(self.require_consent.data),
            "rate_limit": int(limit) if limit.isdigit() else limit or None,
            "test_mode": bool(self.test_mode.data),
            "x_pixel_id": (self.x_pixel_id.data or "").strip() or None,
            "silence_alert_hours": _number(silence),
        }


def _number(text: str) -> float | str | None:
    """A typed number as the service takes it; anything else as typed, for
    the service to refuse with its own message."""
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        return text


@functools.cache
def _snippet_template() -> str:
    source = Path(current_app.static_folder, "xtag.js").read_text()
    return re.search(r"<script>.*?</script>", source, re.S).group(0)


def snippet(site: Site) -> str:
    """The install snippet with this server's URL and the site's write key."""
    base = request.host_url.rstrip("/")
    return (
        _snippet_template()
        .replace("https://collect.example.com", base)
        .replace("WRITE_KEY", site.write_key)
    )


def _save(form: SiteForm, site: Site | None):
    try:
        if site is None:
            site = changes.create(SITES, current_user, form.data_for_service())
        else:
            site = changes.update(SITES, current_user, site, form.data_for_service())
    except Invalid as exc:
        errors_into(form, exc)
        return None
    flash(f"Saved {site.name}.", "ok")
    return redirect(url_for("admin.site", site_id=site.id))


@bp.route("/sites", methods=["GET", "POST"])
@login_required
def sites():
    form = SiteForm()
    if form.validate_on_submit() and (done := _save(form, None)):
        return done
    rows = db.session.scalars(select(Site).order_by(Site.name)).all()
    return render_template("admin/sites.html", sites=rows, form=form)


@bp.route("/sites/<int:site_id>", methods=["GET", "POST"])
@login_required
def site(site_id: int):
    row = row_or_404(Site, site_id)
    form = SiteForm(obj=None if request.method == "POST" else row)
    if request.method == "GET":
        form.allowed_origins.data = "\n".join(row.allowed_origins or [])
    if form.validate_on_submit() and (done := _save(form, row)):
        return done
    return render_template(
        "admin/site.html",
        site=row,
        form=form,
        snippet=snippet(row),
        refused=refusals.latest_or_none(row.id),
        action_form=ActionForm(),
        now_ts=time.time(),
        test_events=sites_service.mapped_events(row),
    )


@bp.route("/sites/<int:site_id>/test-event", methods=["POST"])
@login_required
def site_test_event(site_id: int):
    """A real event through the collector, flagged as a test: never sent to X."""
    row = row_or_404(Site, site_id)
    if not ActionForm().validate_on_submit():
        abort(400)
    message_id = sites_service.send_test_event(row, request.form.get("event_name"))
    flash(
        f"Test event {message_id} sent. It shows in the debugger within seconds, with the "
        "test delivery it became; nothing is sent to X.",
        "ok",
    )
    return redirect(url_for("admin.events", site_id=row.id))


@bp.route("/sites/<int:site_id>/rotate-write-key", methods=["POST"])
@login_required
@admin_only
def site_rotate_write_key(site_id: int):
    row = row_or_404(Site, site_id)
    if not ActionForm().validate_on_submit():
        abort(400)
    revoke = request.form.get("revoke_previous") == "1"
    grace = current_app.config["XTAG_WRITE_KEY_GRACE_HOURS"]
    until = sites_service.rotate_write_key(current_user, row, revoke, grace)
    if revoke:
        flash("New write key; the old one no longer works. Update every page and server.", "ok")
    else:
        when = until.strftime("%Y-%m-%d %H:%M UTC")
        flash(f"New write key; the old one still works until {when}.", "ok")
    return redirect(url_for("admin.site", site_id=row.id))
