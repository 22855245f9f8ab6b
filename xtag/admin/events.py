"""The event debugger: the latest received events and what became of them."""

from __future__ import annotations

from flask import render_template, request
from flask_login import login_required
from sqlalchemy import select

from xtag.admin.base import PAGE, bp, id_arg
from xtag.extensions import db
from xtag.models import ReceivedEvent, Site
from xtag.services import queries


@bp.route("/events")
@login_required
def events():
    site_id = id_arg("site_id")
    name = request.args.get("event_name", "").strip()
    query = queries.events(site_id=site_id, event_name=name or None)
    rows = queries.page(query, ReceivedEvent.id.desc(), PAGE, count=False).rows
    all_sites = db.session.scalars(select(Site).order_by(Site.name)).all()
    return render_template(
        "admin/events.html", events=rows, sites=all_sites, site_id=site_id, event_name=name
    )
