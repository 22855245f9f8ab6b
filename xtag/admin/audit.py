"""The audit log (admins): who changed what, when, filtered by kind and actor."""

from __future__ import annotations

import json

from flask import render_template, request, url_for
from flask_login import login_required
from sqlalchemy import select

from xtag.admin.base import PAGE, admin_only, bp, id_arg
from xtag.extensions import db
from xtag.models import AuditEntry, User
from xtag.services import queries
from xtag.services.queries import SYSTEM

MAX_PAGE = 100_000
LINKS = {"user": ("admin.user", "user_id"), "site": ("admin.site", "site_id")}
LINKS["delivery"] = ("admin.delivery_detail", "delivery_id")


def _shown(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 200 else text[:199] + "…"


def describe(changes: dict) -> list[tuple[str, str]]:
    """Each changed field as text: secrets were stored as 'changed' only."""
    lines = []
    for name, value in (changes or {}).items():
        if isinstance(value, dict) and set(value) == {"from", "to"}:
            before, after = value["from"], value["to"]
            text = _shown(after) if before is None else f"{_shown(before)} → {_shown(after)}"
        else:
            text = _shown(value)
        lines.append((name, text))
    return lines


def _object_url(entry: AuditEntry) -> str | None:
    endpoint = LINKS.get(entry.object_type)
    if endpoint is None or entry.action == "delete" or not (entry.object_id or "").isdigit():
        return None
    return url_for(endpoint[0], **{endpoint[1]: int(entry.object_id)})


@bp.route("/audit")
@login_required
@admin_only
def audit():
    kind = request.args.get("kind", "").strip() or None
    actor = request.args.get("actor", "").strip() or None
    page = min(max(request.args.get("page", 1, type=int), 1), MAX_PAGE)
    who = SYSTEM if actor == SYSTEM else (id_arg("actor") or -1) if actor else None
    query = queries.audit_entries(kind, who)
    rows, total = queries.page(query, AuditEntry.id.desc(), PAGE, (page - 1) * PAGE)
    entries = [
        {"entry": e, "actor": email, "url": _object_url(e), "changes": describe(e.changes)}
        for e, email in rows
    ]
    kinds = db.session.scalars(select(AuditEntry.object_type).distinct()).all()
    actors = db.session.execute(
        select(User.id, User.email)
        .where(User.id.in_(select(AuditEntry.user_id).distinct()))
        .order_by(User.email)
    ).all()
    return render_template(
        "admin/audit.html",
        entries=entries,
        total=total,
        page=page,
        pages=max((total + PAGE - 1) // PAGE, 1),
        kinds=sorted(kinds),
        actors=actors,
        kind=kind,
        actor=actor,
        system=SYSTEM,
    )
