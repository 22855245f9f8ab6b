"""Users and their management-API tokens (admins). Changes go through
xtag.services, as the API's do."""

from __future__ import annotations

import secrets

from flask import abort, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from sqlalchemy import func, select
from wtforms import PasswordField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Length, Optional

from xtag.admin.auth import safe_next
from xtag.admin.base import ActionForm, admin_only, bp, errors_into, id_arg, row_or_404, shown_once
from xtag.core.errors import Invalid
from xtag.extensions import db
from xtag.models import ROLES, ApiToken, User
from xtag.services import changes
from xtag.services import tokens as api_tokens
from xtag.services.resources import USERS

ROLE_CHOICES = [SelectChoice(role, role) for role in ROLES]
PASSWORD_HINT = "Password (at least 12 characters; leave empty to generate one)"


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
        validators=[Optional(), Length(max=api_tokens.NAME_MAX)],
    )


def _user(user_id: int) -> User:
    return row_or_404(User, user_id)


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
            created = changes.create(USERS, current_user, data)
        except Invalid as exc:
            errors_into(form, exc)
        else:
            if form.password.data:
                flash(f"Added {created.email} as {created.role}.", "ok")
                return redirect(url_for("admin.users"))
            form = UserForm(formdata=None)
    rows = db.session.scalars(select(User).order_by(User.email)).all()
    html = render_template(
        "admin/users.html", users=rows, form=form, created=created, password=password
    )
    return shown_once(html) if created else html


def _keep_own_session(row: User) -> None:
    """A change to one's own account ends one's other sessions, not this one."""
    if row.id == current_user.id:
        session["version"] = row.session_version


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
    return shown_once(html) if password else html


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
            changes.update(USERS, current_user, row, {"role": role_form.role.data})
            _keep_own_session(row)
            flash(f"{row.email} is now {row.role}.", "ok")
            return redirect(url_for("admin.user", user_id=row.id))
        if action == "password" and password_form.validate_on_submit():
            password = password_form.password.data or secrets.token_urlsafe(12)
            changes.update(USERS, current_user, row, {"password": password})
            _keep_own_session(row)
            if password_form.password.data:
                flash(f"New password set for {row.email}.", "ok")
                return redirect(url_for("admin.user", user_id=row.id))
            return _user_page(row, role_form, PasswordForm(prefix="p", formdata=None), password)
    except Invalid as exc:
        errors_into({"role": role_form, "password": password_form}[action], exc)
    return _user_page(row, role_form, password_form)


@bp.route("/users/<int:user_id>/<any(deactivate, reactivate):change>", methods=["POST"])
@login_required
@admin_only
def user_change(user_id: int, change: str):
    row = _user(user_id)
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        changes.update(USERS, current_user, row, {"active": change == "reactivate"})
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
    owner = id_arg("user_id")
    form = TokenForm(data={"user_id": owner or current_user.id})
    people = db.session.scalars(select(User).where(User.active.is_(True)).order_by(User.email))
    choices = [SelectChoice(u.id, f"{u.email} ({u.role})") for u in people]
    form.user_id.choices = choices
    issued, token = None, None
    if form.validate_on_submit():
        try:
            issued, token = api_tokens.issue(
                current_user, _user(form.user_id.data), form.name.data or ""
            )
        except Invalid as exc:
            errors_into(form, exc)
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
    return shown_once(html) if token else html


@bp.route("/tokens/<int:token_id>/revoke", methods=["POST"])
@login_required
@admin_only
def token_revoke(token_id: int):
    row = row_or_404(ApiToken, token_id)
    if not ActionForm().validate_on_submit():
        abort(400)
    if api_tokens.revoke(current_user, [row]):
        flash(f"Token {row.prefix}… of {row.user.email} is revoked; it no longer works.", "ok")
    else:
        flash(f"Token {row.prefix}… was revoked already.", "error")
    return redirect(safe_next(request.form.get("next")) or url_for("admin.tokens"))
