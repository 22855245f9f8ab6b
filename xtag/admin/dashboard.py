"""The dashboard: the last 24 hours, the queues and workers, failures, retention."""

from __future__ import annotations

from flask import current_app, render_template
from flask_login import login_required
from sqlalchemy import select

from xtag.admin.base import bp
from xtag.extensions import db
from xtag.models import Site
from xtag.pipeline import retention
from xtag.services import monitoring, refusals


@bp.route("/")
@login_required
def index():
    sites = db.session.scalars(select(Site).order_by(Site.name)).all()
    day = monitoring.last_day()
    charts = {key: day[key] for key in ("hours", "events", "drops", "conversions")}
    return render_template(
        "admin/index.html",
        sites=sites,
        queues=monitoring.queues(current_app.config["XTAG_READY_WORKER_SECONDS"]),
        waiting=monitoring.waiting(),
        day=day,
        charts=charts,
        retention=retention.periods(),
        unknown_keys=refusals.latest_or_none(refusals.UNKNOWN),
    )
