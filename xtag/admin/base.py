"""What every admin page shares: the blueprint, the admin-only guard, the
CSRF-only action form, and how a domain error lands on a form."""

from __future__ import annotations

import functools

from flask import Blueprint, abort, flash, make_response, request
from flask_login import current_user
from flask_wtf import FlaskForm

from xtag.core.errors import Invalid
from xtag.core.fields import BIG_ID_MAX, ID_MAX
from xtag.extensions import db

bp = Blueprint("admin", __name__)
PAGE = 50


class ActionForm(FlaskForm):
    """A button that changes something: it carries the CSRF token only."""


def admin_only(view):
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if not current_user.is_admin:
            abort(403)
        return view(*args, **kwargs)

    return wrapped


def errors_into(form: FlaskForm, exc: Invalid) -> None:
    """The message under the field it names, else as a flash above the form."""
    field = getattr(form, exc.field or "", None)
    if field is not None and hasattr(field, "errors"):
        field.errors = [*field.errors, exc.message]
    else:
        flash(exc.message, "error")


def row_or_404(model: type, row_id: int, big: bool = False):
    """The row with that id; 404 for none, and for ids no column can hold."""
    row = db.session.get(model, row_id) if row_id <= (BIG_ID_MAX if big else ID_MAX) else None
    return row if row is not None else abort(404)


def id_arg(name: str) -> int | None:
    """A row id from the query string, None when not given (or empty); 400
    for one no column can hold."""
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 0 < int(raw) <= ID_MAX:
        abort(400, f"{name} must be a row id")
    return int(raw)


def shown_once(html: str):
    """A page holding a password or token: never cached, never in a cookie."""
    response = make_response(html)
    response.headers["Cache-Control"] = "no-store"
    return response
