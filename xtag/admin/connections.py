"""Connections to X (admins): the list, adding one by its tokens, and
"Connect an X account" by signing in on X (OAuth 1.0a, or OAuth 2.0 + PKCE)."""

from __future__ import annotations

import redis
from flask import flash, make_response, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import PasswordField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional

from xtag.admin.base import admin_only, bp, errors_into
from xtag.core.checks import CREDENTIALS
from xtag.core.errors import Invalid
from xtag.extensions import db
from xtag.models import Connection
from xtag.services import changes, connect
from xtag.services.resources import CONNECTIONS

SESSION_KEY = "xtag_connect_flow"


class ConnectionForm(FlaskForm):
    name = StringField("Name")
    auth_type = SelectField(
        "Authentication",
        choices=[
            SelectChoice("pixel_token", "Pixel token"),
            SelectChoice("oauth1", "OAuth 1.0a tokens"),
            SelectChoice("oauth2", "OAuth 2.0 tokens"),
        ],
    )
    token = StringField("Pixel token", validators=[Optional()])
    consumer_key = StringField("Consumer key (API key)", validators=[Optional()])
    consumer_secret = StringField("Consumer secret", validators=[Optional()])
    access_token = StringField("Access token", validators=[Optional()])
    access_token_secret = StringField("Access token secret", validators=[Optional()])
    client_id = StringField("OAuth 2.0 client id", validators=[Optional()])
    client_secret = StringField("OAuth 2.0 client secret", validators=[Optional()])
    refresh_token = StringField("OAuth 2.0 refresh token", validators=[Optional()])

    def data_for_service(self) -> dict:
        names = CREDENTIALS[self.auth_type.data] + (
            ("client_secret",) if self.auth_type.data == "oauth2" else ()
        )
        credentials = {
            n: getattr(self, n).data.strip() for n in names if (getattr(self, n).data or "").strip()
        }
        return {
            "name": self.name.data or "",
            "auth_type": self.auth_type.data,
            "credentials": credentials,
        }


class OAuth1ConnectForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    consumer_key = StringField("Consumer key (API key)", validators=[DataRequired()])
    consumer_secret = PasswordField("Consumer secret (API key secret)", validators=[DataRequired()])


class OAuth2ConnectForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    client_id = StringField("OAuth 2.0 client id", validators=[DataRequired()])
    client_secret = PasswordField(
        "OAuth 2.0 client secret (empty for a public client)", validators=[Optional()]
    )


CONNECT_FORMS = {"oauth1": OAuth1ConnectForm, "oauth2": OAuth2ConnectForm}


@bp.route("/connections", methods=["GET", "POST"])
@login_required
@admin_only
def connections():
    form = ConnectionForm()
    if form.validate_on_submit():
        try:
            changes.create(CONNECTIONS, current_user, form.data_for_service())
        except Invalid as exc:
            errors_into(form, exc)
        else:
            flash("Connection added. Its secrets are stored encrypted and never shown again.", "ok")
            return redirect(url_for("admin.connections"))
    rows = db.session.scalars(select(Connection).order_by(Connection.name)).all()
    return render_template(
        "admin/connections.html", connections=[CONNECTIONS.dump(r) for r in rows], form=form
    )


def _callback_url(kind: str) -> str:
    return url_for(f"admin.connect_{kind}_callback", _external=True)


def _continue_to_x(url: str):
    """A page that sends the browser on to X. A redirect straight from the form's
    POST would be blocked by browsers enforcing form-action 'self' on redirects."""
    response = make_response(render_template("admin/connect_continue.html", url=url))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route(
    "/connections/connect/<any(oauth1, oauth2):kind>", methods=["GET", "POST"], endpoint="connect"
)
@login_required
@admin_only
def connect_start(kind: str):
    form = CONNECT_FORMS[kind]()
    if form.validate_on_submit():
        try:
            url, flow_id = connect.start(
                kind, current_user, form.data, _callback_url(kind), session.get(SESSION_KEY)
            )
        except connect.FlowError as exc:
            flash(str(exc), "error")
        except (redis.RedisError, OSError):
            flash("xtag could not keep the connection in progress (Redis): try again.", "error")
        else:
            session[SESSION_KEY] = flow_id
            return _continue_to_x(url)
    return render_template(
        "admin/connect.html",
        kind=kind,
        form=form,
        callback_url=_callback_url(kind),
        minutes=connect.FLOW_SECONDS // 60,
    )


def _callback(kind: str):
    try:
        row, who = connect.finish(kind, current_user, session.pop(SESSION_KEY, None), request.args)
    except connect.FlowError as exc:
        flash(str(exc), "error")
    except (redis.RedisError, OSError):
        flash("xtag could not read the connection in progress (Redis): start again.", "error")
    else:
        to = f" to {who}" if who else ""
        flash(f"Connected {row.name}{to}. Its tokens are stored encrypted.", "ok")
    return redirect(url_for("admin.connections"))


@bp.route("/connections/connect/oauth1/callback")
@login_required
@admin_only
def connect_oauth1_callback():
    return _callback("oauth1")


@bp.route("/connections/connect/oauth2/callback")
@login_required
@admin_only
def connect_oauth2_callback():
    return _callback("oauth2")
