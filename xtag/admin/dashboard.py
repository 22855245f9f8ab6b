"""The dashboard: the last 24 hours, the queues and workers, failures, retention."""

from __future__ import annotations

from flask import current_app, render_template, url_for
from flask_login import login_required
from sqlalchemy import select

from xtag.admin.base import bp
from xtag.extensions import db
from xtag.models import Site
from xtag.pipeline import retention
from xtag.services import monitoring, refusals


def _checklist(sites: list[Site]) -> list[dict] | None:
    """The first-run steps, each with the page that does it."""
    done = monitoring.first_run()
    if done is None:
        return None
    first = sites[0] if sites else None
    pages = {
        "connection": ("Connect an X account", url_for("admin.connections")),
        "site": ("Add a site", url_for("admin.sites")),
        "mapping": (
            "Add a pixel and a mapping (event name to X pixel and event)",
            url_for("admin.mappings", site_id=first.id) if first else url_for("admin.sites"),
        ),
        "first_event": (
            "Install the snippet: the first event is seen",
            url_for("admin.site", site_id=first.id) if first else url_for("admin.sites"),
        ),
        "first_conversion": ("First conversion delivered to X", url_for("admin.deliveries")),
    }
    return [
        {"key": key, "label": pages[key][0], "url": pages[key][1], "done": done[key]}
        for key in monitoring.FIRST_RUN
    ]


@bp.route("/")
@login_required
def index():
    sites = db.session.scalars(select(Site).order_by(Site.name)).all()
    day = monitoring.last_day()
    match = monitoring.match_quality()
    charts = {key: day[key] for key in ("hours", "events", "drops", "conversions")}
    charts["quality"] = [{"pixel_id": p["pixel_id"], "days": p["days"]} for p in match]
    return render_template(
        "admin/index.html",
        sites=sites,
        queues=monitoring.queues(current_app.config["XTAG_READY_WORKER_SECONDS"]),
        waiting=monitoring.waiting(),
        day=day,
        charts=charts,
        retention=retention.periods(),
        unknown_keys=refusals.latest_or_none(refusals.UNKNOWN),
        checklist=_checklist(sites),
        match=match,
    )
