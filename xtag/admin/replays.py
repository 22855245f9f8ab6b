"""Replays (admins): run a window of received events through today's
mappings, as a dry run first, and follow a replay's progress."""

from __future__ import annotations

from flask import flash, redirect, render_template, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import BooleanField, SelectField, StringField
from wtforms.validators import Optional

from xtag.admin.base import PAGE, admin_only, bp, errors_into, row_or_404
from xtag.core.errors import Invalid
from xtag.extensions import db
from xtag.models import Replay, Site
from xtag.services import queries, replays


class ReplayForm(FlaskForm):
    site_id = SelectField("Site", coerce=int)
    since = StringField("From (UTC, ISO 8601: 2026-11-30T00:00:00Z)")
    until = StringField("Until (UTC, exclusive)")
    event_name = StringField("Only this event (empty: every event)", validators=[Optional()])
    dry_run = BooleanField("Dry run: only count what it would send", default=True)

    def data_for_service(self) -> dict:
        return {
            "site_id": self.site_id.data,
            "since": (self.since.data or "").strip(),
            "until": (self.until.data or "").strip(),
            "event_name": (self.event_name.data or "").strip() or None,
            "dry_run": bool(self.dry_run.data),
        }


@bp.route("/replays", methods=["GET", "POST"])
@login_required
@admin_only
def replays_page():
    form = ReplayForm()
    sites = db.session.scalars(select(Site).order_by(Site.name)).all()
    form.site_id.choices = [(s.id, s.name) for s in sites]
    if form.validate_on_submit():
        try:
            replay = replays.start(current_user, form.data_for_service())
        except Invalid as exc:
            errors_into(form, exc)
        else:
            what = "Counted" if replay.dry_run else "Queued"
            flash(f"{what}: replay #{replay.id}.", "ok")
            return redirect(url_for("admin.replay_detail", replay_id=replay.id))
    rows = queries.page(select(Replay), Replay.id.desc(), PAGE, count=False).rows
    names = {s.id: s.name for s in sites}
    return render_template("admin/replays.html", form=form, replays=rows, names=names)


@bp.route("/replays/<int:replay_id>")
@login_required
@admin_only
def replay_detail(replay_id: int):
    replay = row_or_404(Replay, replay_id)
    site = db.session.get(Site, replay.site_id)
    again = {
        "site_id": replay.site_id,
        "since": replays.REPLAY.dump(replay)["since"],
        "until": replays.REPLAY.dump(replay)["until"],
        "event_name": replay.event_name or "",
    }
    return render_template("admin/replay.html", replay=replay, site=site, again=again)
