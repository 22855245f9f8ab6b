"""Logging in and out of the admin, and how long a session lasts."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from flask import current_app, flash, g, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired, Length

from xtag.admin.base import bp
from xtag.core.errors import RateLimited
from xtag.extensions import db, login_manager
from xtag.models import User
from xtag.services import accounts


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired()])


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    """The session's user while the session is of the user's current version
    (logout, a new password, deactivation or a role change ended it)."""
    user = db.session.get(User, int(user_id)) if user_id.isdigit() else None
    if user is None or session.get("version") != user.session_version:
        return None
    return user


def safe_next(target: str | None) -> str | None:
    """Only same-site relative paths; never an open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):  # a header split, not a path
        return None
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else None


@bp.before_app_request
def end_old_sessions():
    """However active, a session ends XTAG_SESSION_MAX_HOURS after its login."""
    login_at = session.get("login_at")
    max_age = current_app.config["XTAG_SESSION_MAX_HOURS"] * 3600
    if login_at is not None and time.time() - login_at > max_age:
        logout_user()
        session.clear()
        flash("Your session has expired: please log in again.", "error")


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(url_for("admin.index"))
    form = LoginForm()
    if form.validate_on_submit():
        try:
            user = accounts.login(form.email.data, form.password.data, request.remote_addr)
        except RateLimited as exc:
            flash(exc.message, "error")
            return render_template("admin/login.html", form=form), 429
        if user is not None:
            session.clear()  # a new session, with a new CSRF token
            g.pop("csrf_token", None)
            login_user(user)
            session.permanent = True  # expires when idle (PERMANENT_SESSION_LIFETIME)
            session["login_at"] = int(time.time())
            session["version"] = user.session_version
            return redirect(safe_next(request.args.get("next")) or url_for("admin.index"))
        flash("Wrong email or password.", "error")
    return render_template("admin/login.html", form=form)


@bp.route("/logout", methods=["POST"])
def logout():
    if current_user.is_authenticated:
        accounts.logout(current_user)  # every session of this user ends, not only this one
    logout_user()
    session.clear()
    return redirect(url_for("admin.login"))
