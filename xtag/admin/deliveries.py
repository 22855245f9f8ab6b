"""The delivery log: each batch sent to X, its attempts and X's answers, and
retries by hand (admins)."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from xtag.admin.base import PAGE, ActionForm, admin_only, bp, row_or_404
from xtag.core.errors import Invalid
from xtag.core.times import parse_filter
from xtag.models import Delivery
from xtag.services import deliveries as delivery_service
from xtag.services import queries


def _filters() -> dict:
    args = request.values
    return {k: args.get(k, "").strip() for k in ("status", "pixel", "since")}


@bp.route("/deliveries")
@login_required
def deliveries():
    filters = _filters()
    try:
        since = parse_filter(filters["since"])
    except Invalid as exc:
        flash(exc.message, "error")
        since = filters["since"] = None
    query = queries.deliveries(filters["status"], filters["pixel"], since)
    rows = queries.page(query, Delivery.id.desc(), PAGE, count=False).rows
    return render_template("admin/deliveries.html", deliveries=rows, form=ActionForm(), **filters)


@bp.route("/deliveries/retry", methods=["POST"])
@login_required
@admin_only
def deliveries_retry():
    """Retry every failed delivery the log's filters (pixel, since) select."""
    if not ActionForm().validate_on_submit():
        abort(400)
    filters = _filters()
    try:
        retried = delivery_service.retry_failed(
            current_user, filters["pixel"], parse_filter(filters["since"])
        )
    except Invalid as exc:
        flash(exc.message, "error")
    else:
        flash(f"{len(retried)} failed deliveries queued again.", "ok")
    return redirect(url_for("admin.deliveries", **{k: v for k, v in filters.items() if v}))


@bp.route("/deliveries/<int:delivery_id>")
@login_required
def delivery_detail(delivery_id: int):
    row = row_or_404(Delivery, delivery_id, big=True)
    return render_template("admin/delivery.html", delivery=row, form=ActionForm())


@bp.route("/deliveries/<int:delivery_id>/retry", methods=["POST"])
@login_required
@admin_only
def delivery_retry(delivery_id: int):
    row = row_or_404(Delivery, delivery_id, big=True)
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        delivery_service.retry(current_user, row)
    except Invalid as exc:
        flash(exc.message, "error")
    else:
        flash(f"Delivery {row.id} is queued again.", "ok")
    return redirect(url_for("admin.delivery_detail", delivery_id=row.id))
