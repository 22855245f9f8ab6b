"""Requests set aside because they could not be recorded (admins): why, and
a way to put them back once the cause is fixed."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from xtag.admin.base import ActionForm, admin_only, bp
from xtag.pipeline.inbox import DEAD_MAX
from xtag.services import deadletters


@bp.route("/dead-letters")
@login_required
@admin_only
def dead_letters():
    entries = deadletters.listing()
    return render_template(
        "admin/dead_letters.html", entries=entries, cap=DEAD_MAX, form=ActionForm()
    )


@bp.route("/dead-letters/requeue", methods=["POST"])
@login_required
@admin_only
def dead_letters_requeue():
    if not ActionForm().validate_on_submit():
        abort(400)
    ids = request.form.getlist("entry") or [e["id"] for e in deadletters.listing()]
    moved = deadletters.requeue(current_user, ids)
    flash(f"{moved} set-aside requests are back in the inbox.", "ok")
    return redirect(url_for("admin.dead_letters"))
