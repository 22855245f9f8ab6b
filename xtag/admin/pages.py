"""Admin pages for sites, the event debugger and the delivery log. Changes go
through xtag.services, exactly as the management API's do."""

from __future__ import annotations

import functools
import re
from pathlib import Path

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import BooleanField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Optional

from xtag import delivery, services
from xtag.admin import bp
from xtag.extensions import db
from xtag.models import Connection, Delivery, ReceivedEvent, Site
from xtag.schema import Invalid
from xtag.x_api import auth

PAGE = 50


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

    def data_for_service(self) -> dict:
        limit = (self.rate_limit.data or "").strip()
        return {
            "name": self.name.data or "",
            "allowed_origins": [
                o.strip() for o in (self.allowed_origins.data or "").splitlines() if o.strip()
            ],
            "default_phone_region": (self.default_phone_region.data or "").strip() or None,
            "require_consent": bool(self.require_consent.data),
            "rate_limit": int(limit) if limit.isdigit() else limit or None,
        }


class ActionForm(FlaskForm):
    """A button that changes something: it carries the CSRF token only."""


def admin_only(view):
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if not current_user.is_admin:
            abort(403)
        return view(*args, **kwargs)

    return wrapped


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
            site = services.create(services.SITES, current_user, form.data_for_service())
        else:
            site = services.update(services.SITES, current_user, site, form.data_for_service())
    except Invalid as exc:
        _errors_into(form, exc)
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
    row = db.session.get(Site, site_id) or abort(404)
    form = SiteForm(obj=None if request.method == "POST" else row)
    if request.method == "GET":
        form.allowed_origins.data = "\n".join(row.allowed_origins or [])
    if form.validate_on_submit() and (done := _save(form, row)):
        return done
    return render_template("admin/site.html", site=row, form=form, snippet=snippet(row))


@bp.route("/events")
@login_required
def events():
    query = select(ReceivedEvent).order_by(ReceivedEvent.id.desc()).limit(PAGE)
    site_id = request.args.get("site_id", type=int)
    name = request.args.get("event_name", "").strip()
    if site_id:
        query = query.where(ReceivedEvent.site_id == site_id)
    if name:
        query = query.where(ReceivedEvent.event_name == name)
    rows = db.session.scalars(query).all()
    all_sites = db.session.scalars(select(Site).order_by(Site.name)).all()
    return render_template(
        "admin/events.html", events=rows, sites=all_sites, site_id=site_id, event_name=name
    )


def _delivery_filters() -> dict:
    args = request.values
    return {k: args.get(k, "").strip() for k in ("status", "pixel", "since")}


@bp.route("/deliveries")
@login_required
def deliveries():
    filters = _delivery_filters()
    try:
        since = services.parse_since(filters["since"])
    except Invalid as exc:
        flash(exc.message, "error")
        since = filters["since"] = None
    query = services.deliveries(filters["status"], filters["pixel"], since)
    rows = db.session.scalars(query.order_by(Delivery.id.desc()).limit(PAGE)).all()
    return render_template("admin/deliveries.html", deliveries=rows, form=ActionForm(), **filters)


@bp.route("/deliveries/retry", methods=["POST"])
@login_required
@admin_only
def deliveries_retry():
    """Retry every failed delivery the log's filters (pixel, since) select."""
    if not ActionForm().validate_on_submit():
        abort(400)
    filters = _delivery_filters()
    try:
        retried = services.retry_failed(
            current_user, filters["pixel"], services.parse_since(filters["since"])
        )
    except Invalid as exc:
        flash(exc.message, "error")
    else:
        flash(f"{len(retried)} failed deliveries queued again.", "ok")
    return redirect(url_for("admin.deliveries", **{k: v for k, v in filters.items() if v}))


@bp.route("/deliveries/<int:delivery_id>")
@login_required
def delivery_detail(delivery_id: int):
    row = db.session.get(Delivery, delivery_id) or abort(404)
    return render_template("admin/delivery.html", delivery=row, form=ActionForm())


@bp.route("/deliveries/<int:delivery_id>/retry", methods=["POST"])
@login_required
@admin_only
def delivery_retry(delivery_id: int):
    row = db.session.get(Delivery, delivery_id) or abort(404)
    form = ActionForm()
    if not form.validate_on_submit():
        abort(400)
    if delivery.retry_by_hand(row.id):
        services.audit(current_user, "retry", "delivery", row.id, {})
        db.session.commit()
        flash(f"Delivery {row.id} is queued again.", "ok")
    else:
        flash(
            f"Delivery {row.id} is {row.status}: only failed or partial deliveries can be retried.",
            "error",
        )
    return redirect(url_for("admin.delivery_detail", delivery_id=row.id))


def _errors_into(form: FlaskForm, exc: Invalid) -> None:
    field = getattr(form, exc.field or "", None)
    if field is not None and hasattr(field, "errors"):
        field.errors = [*field.errors, exc.message]
    else:
        flash(exc.message, "error")


class ConnectionForm(FlaskForm):
    name = StringField("Name")
    auth_type = SelectField(
        "Authentication",
        choices=[
            SelectChoice("pixel_token", "Pixel token"),
            SelectChoice("oauth1", "OAuth 1.0a tokens"),
            SelectChoice("oauth2", "OAuth 2.0 tokens"),
        ],
    )
    token = StringField("Pixel token", validators=[Optional()])
    consumer_key = StringField("Consumer key (API key)", validators=[Optional()])
    consumer_secret = StringField("Consumer secret", validators=[Optional()])
    access_token = StringField("Access token", validators=[Optional()])
    access_token_secret = StringField("Access token secret", validators=[Optional()])
    client_id = StringField("OAuth 2.0 client id", validators=[Optional()])
    client_secret = StringField("OAuth 2.0 client secret", validators=[Optional()])
    refresh_token = StringField("OAuth 2.0 refresh token", validators=[Optional()])

    def data_for_service(self) -> dict:
        names = auth.REQUIRED[self.auth_type.data] + (
            ("client_secret",) if self.auth_type.data == "oauth2" else ()
        )
        credentials = {
            n: getattr(self, n).data.strip() for n in names if (getattr(self, n).data or "").strip()
        }
        return {
            "name": self.name.data or "",
            "auth_type": self.auth_type.data,
            "credentials": credentials,
        }


@bp.route("/connections", methods=["GET", "POST"])
@login_required
@admin_only
def connections():
    form = ConnectionForm()
    if form.validate_on_submit():
        try:
            services.create(services.CONNECTIONS, current_user, form.data_for_service())
        except Invalid as exc:
            _errors_into(form, exc)
        else:
            flash("Connection added. Its secrets are stored encrypted and never shown again.", "ok")
            return redirect(url_for("admin.connections"))
    rows = db.session.scalars(select(Connection).order_by(Connection.name)).all()
    return render_template(
        "admin/connections.html", connections=[services.connection_dict(r) for r in rows], form=form
    )
