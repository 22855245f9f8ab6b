"""Connect an X account from the admin: 3-legged OAuth 1.0a, or OAuth 2.0 with PKCE.

The flow in progress (request token secret, PKCE verifier, state, the app's
secrets typed in) waits server-side in Redis, Fernet-encrypted, for ten
minutes; the signed but readable session cookie holds only its random id.
The callback takes the flow once, so it can be completed only once, by the
admin who started it. The connection is made through xtag.services, so it is
validated and audited exactly as the management API's are.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
from urllib.parse import urlencode

import redis
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth1Session, OAuth2Session, OAuthError
from flask import (
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length, Optional

from xtag import crypto, queue, services
from xtag.admin import bp
from xtag.admin.pages import admin_only
from xtag.schema import Invalid

FLOW_SECONDS = 600
FLOW_KEY = "xtag:connect:{}"
SESSION_KEY = "xtag_connect_flow"
OAUTH2_SCOPE = "ads_management offline.access"  # offline.access: X issues a refresh token
CONNECT_TIMEOUT = 5
ANSWER_LIMIT = 300


class FlowError(Exception):
    """Why connecting failed, worded for the admin."""


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


FORMS = {"oauth1": OAuth1ConnectForm, "oauth2": OAuth2ConnectForm}


# --- the flow in progress, server-side ------------------------------------------------


def _keys() -> list[str]:
    return current_app.config["XTAG_ENCRYPTION_KEYS"]


def _save_flow(data: dict) -> None:
    """Encrypt the flow into Redis under a new random id; the session keeps the id."""
    connection = queue.redis_client()
    previous = session.pop(SESSION_KEY, None)
    if previous:
        connection.delete(FLOW_KEY.format(previous))
    flow_id = secrets.token_urlsafe(32)
    sealed = crypto.encrypt_json(_keys(), {**data, "user_id": current_user.id})
    connection.set(FLOW_KEY.format(flow_id), sealed, ex=FLOW_SECONDS)
    session[SESSION_KEY] = flow_id


def _take_flow(kind: str) -> dict:
    """The flow this browser started, removed so that it is used once."""
    flow_id = session.pop(SESSION_KEY, None)
    if not flow_id:
        raise FlowError(
            "No connection to X was being made in this browser (or it was finished "
            "already): start again."
        )
    pipe = queue.redis_client().pipeline()
    pipe.get(FLOW_KEY.format(flow_id))
    pipe.delete(FLOW_KEY.format(flow_id))
    sealed, _ = pipe.execute()
    try:
        flow = crypto.decrypt_json(_keys(), sealed.decode()) if sealed else None
    except crypto.CredentialError:
        flow = None
    if flow is None:
        raise FlowError(
            f"The connection to X expired (it must be finished within {FLOW_SECONDS // 60} "
            "minutes): start again."
        )
    if flow.get("user_id") != current_user.id:
        raise FlowError("This connection to X was started by another user: start again.")
    if flow.get("kind") != kind:
        raise FlowError("X answered a different connection than the one started: start again.")
    return flow


# --- talking to X -----------------------------------------------------------------------


def _timeout() -> tuple[int, int]:
    return CONNECT_TIMEOUT, current_app.config["XTAG_X_TIMEOUT_SECONDS"]


def _answer(status: int | str, text: str) -> str:
    """X's error answer in a few words: the messages of its JSON, else the text."""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        text = "; ".join(str(e.get("message", e)) for e in body["errors"] if isinstance(e, dict))
    elif isinstance(body, dict) and body.get("error"):
        text = ": ".join(str(p) for p in (body["error"], body.get("error_description")) if p)
    return f"X answered HTTP {status}: {text.strip()}"


def _x_failed(step: str, exc: Exception, hint: str) -> FlowError:
    """What went wrong, with X's own answer when there is one, for the admin to act on."""
    refused = isinstance(exc, OAuthError) and re.search(
        r"code (\d+), response was '(.*)'\.?$", exc.description or "", re.S
    )
    if isinstance(exc, requests.Timeout):
        said = "X did not answer in time"
    elif isinstance(exc, requests.ConnectionError):
        said = "X could not be reached"
    elif refused:
        said = _answer(refused.group(1), refused.group(2))
    elif isinstance(exc, OAuthError):
        said = "X refused: " + ": ".join(str(p) for p in (exc.error, exc.description) if p)
    elif isinstance(exc, KeyError):
        said = f"X's answer has no {exc.args[0]}"
    else:
        said = str(exc)
    if len(said) > ANSWER_LIMIT:
        said = said[:ANSWER_LIMIT] + "…"
    return FlowError(f"{step} failed. {said.rstrip('.')}. {hint}")


FAILURES = (OAuthError, ValueError, KeyError, requests.RequestException)


def _callback_url(kind: str) -> str:
    return url_for(f"admin.connect_{kind}_callback", _external=True)


def _oauth1_session(flow: dict, **tokens) -> OAuth1Session:
    return OAuth1Session(flow["consumer_key"], flow["consumer_secret"], **tokens)


def _refusal_without_oauth_error(response: requests.Response) -> requests.Response:
    """An error answer that is not an OAuth error object still fails, with what X said."""
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not (isinstance(body, dict) and "error" in body):
            raise ValueError(_answer(response.status_code, response.text))
    return response


def _oauth2_session(flow: dict) -> OAuth2Session:
    secret = flow.get("client_secret") or None
    client = OAuth2Session(
        client_id=flow["client_id"],
        client_secret=secret,
        token_endpoint_auth_method="client_secret_basic" if secret else "none",
        scope=OAUTH2_SCOPE,
        redirect_uri=flow["redirect_uri"],
        code_challenge_method="S256",
    )
    client.register_compliance_hook("access_token_response", _refusal_without_oauth_error)
    return client


def _start_oauth1(form: OAuth1ConnectForm) -> str:
    """A request token from X; the page X shows the admin to authorise xtag."""
    base = current_app.config["XTAG_X_OAUTH1_BASE"]
    flow = {
        "kind": "oauth1",
        "name": form.name.data.strip(),
        "consumer_key": form.consumer_key.data.strip(),
        "consumer_secret": form.consumer_secret.data.strip(),
    }
    try:
        with _oauth1_session(flow, redirect_uri=_callback_url("oauth1")) as client:
            token = client.fetch_request_token(f"{base}/oauth/request_token", timeout=_timeout())
        if token.get("oauth_callback_confirmed") != "true":
            raise ValueError("X did not confirm the callback URL")
        flow["request_token"] = token["oauth_token"]
        flow["request_token_secret"] = token["oauth_token_secret"]
    except FAILURES as exc:
        raise _x_failed(
            "Asking X for a request token",
            exc,
            "Check the consumer key and secret, and that the callback URL below is "
            "registered in the X app's settings.",
        ) from None
    _save_flow(flow)
    return f"{base}/oauth/authorize?" + urlencode({"oauth_token": flow["request_token"]})


def _start_oauth2(form: OAuth2ConnectForm) -> str:
    flow = {
        "kind": "oauth2",
        "name": form.name.data.strip(),
        "client_id": form.client_id.data.strip(),
        "client_secret": (form.client_secret.data or "").strip(),
        "redirect_uri": _callback_url("oauth2"),
        "code_verifier": generate_token(64),
        "state": generate_token(32),
    }
    with _oauth2_session(flow) as client:
        url, _ = client.create_authorization_url(
            current_app.config["XTAG_X_OAUTH2_AUTHORIZE_URL"],
            state=flow["state"],
            code_verifier=flow["code_verifier"],
        )
    _save_flow(flow)
    return url


def _finish_oauth1(flow: dict, args) -> dict:
    if args.get("denied"):
        raise FlowError("The X account did not authorise xtag, so no connection was added.")
    token, verifier = args.get("oauth_token", ""), args.get("oauth_verifier", "")
    if not verifier or not hmac.compare_digest(token, flow["request_token"]):
        raise FlowError("X's answer does not belong to the connection being made: start again.")
    base = current_app.config["XTAG_X_OAUTH1_BASE"]
    tokens = {"token": flow["request_token"], "token_secret": flow["request_token_secret"]}
    try:
        with _oauth1_session(flow, **tokens) as client:
            access = client.fetch_access_token(
                f"{base}/oauth/access_token", verifier=verifier, timeout=_timeout()
            )
        credentials = {
            "consumer_key": flow["consumer_key"],
            "consumer_secret": flow["consumer_secret"],
            "access_token": access["oauth_token"],
            "access_token_secret": access["oauth_token_secret"],
        }
    except FAILURES as exc:
        raise _x_failed(
            "Exchanging X's verifier for an access token", exc, "Start again."
        ) from None
    handle = access.get("screen_name")
    return {"credentials": credentials, "who": f"@{handle}" if handle else None}


def _finish_oauth2(flow: dict, args) -> dict:
    if not hmac.compare_digest(args.get("state", ""), flow["state"]):
        raise FlowError(
            "X's answer does not belong to the connection being made (its state does not "
            "match): start again."
        )
    if args.get("error"):
        if args["error"] == "access_denied":
            raise FlowError("The X account did not authorise xtag, so no connection was added.")
        said = ": ".join(filter(None, (args["error"], args.get("error_description"))))
        raise FlowError(f"X refused the authorisation: {said[:ANSWER_LIMIT]}.")
    if not args.get("code"):
        raise FlowError("X's answer has no authorisation code: start again.")
    try:
        with _oauth2_session(flow) as client:
            token = client.fetch_token(
                current_app.config["XTAG_X_OAUTH2_TOKEN_URL"],
                grant_type="authorization_code",
                code=args["code"],
                code_verifier=flow["code_verifier"],
                timeout=_timeout(),
            )
        if not token.get("refresh_token"):
            raise ValueError("X issued no refresh token (the app needs the offline.access scope)")
        credentials = {
            "client_id": flow["client_id"],
            "access_token": token["access_token"],
            "refresh_token": token["refresh_token"],
        }
        if token.get("expires_at"):
            credentials["expires_at"] = int(token["expires_at"])
    except FAILURES as exc:
        raise _x_failed(
            "Exchanging X's authorisation code for tokens",
            exc,
            "Check the client id and secret, then start again.",
        ) from None
    if flow.get("client_secret"):
        credentials["client_secret"] = flow["client_secret"]
    return {"credentials": credentials, "who": None}


# --- views --------------------------------------------------------------------------------


def _continue_to_x(url: str):
    """A page that sends the browser on to X. A redirect straight from the form's
    POST would be blocked by browsers enforcing form-action 'self' on redirects."""
    response = make_response(render_template("admin/connect_continue.html", url=url))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/connections/connect/<any(oauth1, oauth2):kind>", methods=["GET", "POST"])
@login_required
@admin_only
def connect(kind: str):
    form = FORMS[kind]()
    if form.validate_on_submit():
        try:
            url = _start_oauth1(form) if kind == "oauth1" else _start_oauth2(form)
        except FlowError as exc:
            flash(str(exc), "error")
        except (redis.RedisError, OSError):
            flash("xtag could not keep the connection in progress (Redis): try again.", "error")
        else:
            return _continue_to_x(url)
    return render_template(
        "admin/connect.html",
        kind=kind,
        form=form,
        callback_url=_callback_url(kind),
        minutes=FLOW_SECONDS // 60,
    )


def _callback(kind: str):
    try:
        flow = _take_flow(kind)
        finish = _finish_oauth1 if kind == "oauth1" else _finish_oauth2
        made = finish(flow, request.args)
        data = {"name": flow["name"], "auth_type": kind, "credentials": made["credentials"]}
        try:
            row = services.create(services.CONNECTIONS, current_user, data)
        except Invalid as exc:
            raise FlowError(f"X agreed, but the connection was not saved: {exc.message}") from None
    except FlowError as exc:
        flash(str(exc), "error")
    except (redis.RedisError, OSError):
        flash("xtag could not read the connection in progress (Redis): start again.", "error")
    else:
        who = f" to {made['who']}" if made["who"] else ""
        flash(f"Connected {row.name}{who}. Its tokens are stored encrypted.", "ok")
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
