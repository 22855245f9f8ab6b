"""Admin-only pages for people and accountability: users, management-API
tokens and the audit log. Changes go through xtag.services, as the API's do."""

from __future__ import annotations

import json
import secrets

from flask import abort, flash, make_response, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from sqlalchemy import func, select
from wtforms import PasswordField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Length, Optional

from xtag import services
from xtag.admin import bp
from xtag.admin.pages import PAGE, ActionForm, _errors_into, admin_only
from xtag.admin.views import safe_next
from xtag.extensions import db
from xtag.models import ROLES, ApiToken, AuditEntry, User
from xtag.schema import ID_MAX, Invalid

ROLE_CHOICES = [SelectChoice(role, role) for role in ROLES]
PASSWORD_HINT = "Password (at least 8 characters; leave empty to generate one)"


class UserForm(FlaskForm):
    email = StringField("Email")
    role = SelectField("Role", choices=ROLE_CHOICES, default="marketer")
    password = PasswordField(PASSWORD_HINT, validators=[Optional()])


class RoleForm(FlaskForm):
    role = SelectField("Role", choices=ROLE_CHOICES)


class PasswordForm(FlaskForm):
    password = PasswordField(PASSWORD_HINT, validators=[Optional()])


class TokenForm(FlaskForm):
    user_id = SelectField("Owner", coerce=int)
    name = StringField(
        "Label (what uses it, e.g. deploy script)",
        validators=[Optional(), Length(max=services.TOKEN_NAME_MAX)],
    )


def _shown_once(html: str):
    """A page holding a password or token: never cached, never in a cookie."""
    response = make_response(html)
    response.headers["Cache-Control"] = "no-store"
    return response


def _user(user_id: int) -> User:
    return (db.session.get(User, user_id) if user_id <= ID_MAX else None) or abort(404)


def _id_arg(name: str) -> int | None:
    """A row id from the query string; anything else is ignored."""
    value = request.args.get(name, type=int)
    return value if value is not None and 0 < value <= ID_MAX else None


# --- users ----------------------------------------------------------------------------------


@bp.route("/users", methods=["GET", "POST"])
@login_required
@admin_only
def users():
    form, created, password = UserForm(), None, None
    if form.validate_on_submit():
        password = form.password.data or secrets.token_urlsafe(12)
        data = {"email": form.email.data or "", "role": form.role.data, "password": password}
        try:
            created = services.create(services.USERS, current_user, data)
        except Invalid as exc:
            _errors_into(form, exc)
        else:
            if form.password.data:
                flash(f"Added {created.email} as {created.role}.", "ok")
                return redirect(url_for("admin.users"))
            form = UserForm(formdata=None)
    rows = db.session.scalars(select(User).order_by(User.email)).all()
    html = render_template(
        "admin/users.html", users=rows, form=form, created=created, password=password
    )
    return _shown_once(html) if created else html


def _user_page(row: User, role_form: RoleForm, password_form: PasswordForm, password=None):
    tokens = db.session.scalar(
        select(func.count(ApiToken.id)).where(
            ApiToken.user_id == row.id, ApiToken.revoked_at.is_(None)
        )
    )
    html = render_template(
        "admin/user.html",
        user=row,
        role_form=role_form,
        password_form=password_form,
        action_form=ActionForm(),
        live_tokens=tokens,
        password=password,
    )
    return _shown_once(html) if password else html


@bp.route("/users/<int:user_id>", methods=["GET", "POST"])
@login_required
@admin_only
def user(user_id: int):
    row = _user(user_id)
    role_form = RoleForm(prefix="r", data={"role": row.role})
    password_form = PasswordForm(prefix="p")
    action = request.form.get("action")
    try:
        if action == "role" and role_form.validate_on_submit():
            services.update(services.USERS, current_user, row, {"role": role_form.role.data})
            flash(f"{row.email} is now {row.role}.", "ok")
            return redirect(url_for("admin.user", user_id=row.id))
        if action == "password" and password_form.validate_on_submit():
            password = password_form.password.data or secrets.token_urlsafe(12)
            services.update(services.USERS, current_user, row, {"password": password})
            if password_form.password.data:
                flash(f"New password set for {row.email}.", "ok")
                return redirect(url_for("admin.user", user_id=row.id))
            return _user_page(row, role_form, PasswordForm(prefix="p", formdata=None), password)
    except Invalid as exc:
        _errors_into({"role": role_form, "password": password_form}[action], exc)
    return _user_page(row, role_form, password_form)


@bp.route("/users/<int:user_id>/<any(deactivate, reactivate):change>", methods=["POST"])
@login_required
@admin_only
def user_change(user_id: int, change: str):
    row = _user(user_id)
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        services.update(services.USERS, current_user, row, {"active": change == "reactivate"})
    except Invalid as exc:
        flash(exc.message, "error")
    else:
        flash(f"{row.email} is {'active' if row.active else 'deactivated'}.", "ok")
    return redirect(url_for("admin.user", user_id=row.id))


# --- API tokens -----------------------------------------------------------------------------


@bp.route("/tokens", methods=["GET", "POST"])
@login_required
@admin_only
def tokens():
    owner = _id_arg("user_id")
    form = TokenForm(data={"user_id": owner or current_user.id})
    people = db.session.scalars(select(User).where(User.active.is_(True)).order_by(User.email))
    choices = [SelectChoice(u.id, f"{u.email} ({u.role})") for u in people]
    form.user_id.choices = choices
    issued, token = None, None
    if form.validate_on_submit():
        try:
            issued, token = services.issue_api_token(
                current_user, _user(form.user_id.data), form.name.data or ""
            )
        except Invalid as exc:
            _errors_into(form, exc)
        else:
            form = TokenForm(formdata=None, data={"user_id": issued.user_id})
            form.user_id.choices = choices
    query = select(ApiToken).order_by(ApiToken.revoked_at.is_not(None), ApiToken.id.desc())
    if owner:
        query = query.where(ApiToken.user_id == owner)
    html = render_template(
        "admin/tokens.html",
        tokens=db.session.scalars(query).all(),
        form=form,
        action_form=ActionForm(),
        owner=db.session.get(User, owner) if owner else None,
        issued=issued,
        token=token,
    )
    return _shown_once(html) if token else html


@bp.route("/tokens/<int:token_id>/revoke", methods=["POST"])
@login_required
@admin_only
def token_revoke(token_id: int):
    row = (db.session.get(ApiToken, token_id) if token_id <= ID_MAX else None) or abort(404)
    if not ActionForm().validate_on_submit():
        abort(400)
    if services.revoke_api_tokens(current_user, [row]):
        flash(f"Token {row.prefix}… of {row.user.email} is revoked; it no longer works.", "ok")
    else:
        flash(f"Token {row.prefix}… was revoked already.", "error")
    return redirect(safe_next(request.form.get("next")) or url_for("admin.tokens"))


# --- audit log ------------------------------------------------------------------------------

SYSTEM = "system"
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
    query = select(AuditEntry, User.email).outerjoin(User, AuditEntry.user_id == User.id)
    if kind:
        query = query.where(AuditEntry.object_type == kind)
    if actor == SYSTEM:
        query = query.where(AuditEntry.user_id.is_(None))
    elif actor:
        query = query.where(AuditEntry.user_id == (_id_arg("actor") or -1))
    total = db.session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = db.session.execute(
        query.order_by(AuditEntry.id.desc()).limit(PAGE).offset((page - 1) * PAGE)
    ).all()
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
