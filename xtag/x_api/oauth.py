"""The OAuth exchanges with X: the 3-legged OAuth 1.0a handshake, OAuth 2.0
with PKCE, and the OAuth 2.0 refresh. Settings come in as the app's config
(the XTAG_X_* values); what X answers goes back as plain dicts, and every
failure as words an admin can act on."""

from __future__ import annotations

import hmac
import json
import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth1Session, OAuth2Session, OAuthError

from xtag.x_api import timeout

OAUTH2_SCOPE = "ads_management offline.access"  # offline.access: X issues a refresh token
ANSWER_LIMIT = 300
FAILURES = (OAuthError, ValueError, KeyError, requests.RequestException)
DENIED = "The X account did not authorise xtag, so no connection was added."


class HandshakeFailed(Exception):
    """Why connecting to X failed, worded for the admin."""


class RefreshFailed(RuntimeError):
    """X refused to renew an OAuth 2.0 token; the connection needs reconnecting."""


def _timeout(config: Mapping[str, Any]) -> tuple[float, float]:
    return timeout(config["XTAG_X_TIMEOUT_SECONDS"])


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


def _failed(step: str, exc: Exception, hint: str) -> HandshakeFailed:
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
    return HandshakeFailed(f"{step} failed. {said.rstrip('.')}. {hint}")


# --- OAuth 1.0a -------------------------------------------------------------------------


def _oauth1_session(flow: dict, **tokens) -> OAuth1Session:
    return OAuth1Session(flow["consumer_key"], flow["consumer_secret"], **tokens)


def start_oauth1(config: Mapping[str, Any], flow: dict, callback_url: str) -> str:
    """A request token from X, kept in `flow`; returns X's page where the
    admin authorises xtag."""
    base = config["XTAG_X_OAUTH1_BASE"]
    try:
        with _oauth1_session(flow, redirect_uri=callback_url) as client:
            token = client.fetch_request_token(
                f"{base}/oauth/request_token", timeout=_timeout(config)
            )
        if token.get("oauth_callback_confirmed") != "true":
            raise ValueError("X did not confirm the callback URL")
        flow["request_token"] = token["oauth_token"]
        flow["request_token_secret"] = token["oauth_token_secret"]
    except FAILURES as exc:
        raise _failed(
            "Asking X for a request token",
            exc,
            "Check the consumer key and secret, and that the callback URL below is "
            "registered in the X app's settings.",
        ) from None
    return f"{base}/oauth/authorize?" + urlencode({"oauth_token": flow["request_token"]})


def finish_oauth1(config: Mapping[str, Any], flow: dict, args: Mapping[str, str]) -> dict:
    """X's callback -> {"credentials": the connection's, "who": "@handle" or None}."""
    if args.get("denied"):
        raise HandshakeFailed(DENIED)
    token, verifier = args.get("oauth_token", ""), args.get("oauth_verifier", "")
    if not verifier or not hmac.compare_digest(token, flow["request_token"]):
        raise HandshakeFailed(
            "X's answer does not belong to the connection being made: start again."
        )
    tokens = {"token": flow["request_token"], "token_secret": flow["request_token_secret"]}
    try:
        with _oauth1_session(flow, **tokens) as client:
            access = client.fetch_access_token(
                f"{config['XTAG_X_OAUTH1_BASE']}/oauth/access_token",
                verifier=verifier,
                timeout=_timeout(config),
            )
        credentials = {
            "consumer_key": flow["consumer_key"],
            "consumer_secret": flow["consumer_secret"],
            "access_token": access["oauth_token"],
            "access_token_secret": access["oauth_token_secret"],
        }
    except FAILURES as exc:
        raise _failed("Exchanging X's verifier for an access token", exc, "Start again.") from None
    handle = access.get("screen_name")
    return {"credentials": credentials, "who": f"@{handle}" if handle else None}


# --- OAuth 2.0 --------------------------------------------------------------------------


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


def _oauth2_session(client_id: str, client_secret: str | None, **options) -> OAuth2Session:
    return OAuth2Session(
        client_id=client_id,
        client_secret=client_secret or None,
        token_endpoint_auth_method="client_secret_basic" if client_secret else "none",
        **options,
    )


def _flow_session(flow: dict) -> OAuth2Session:
    client = _oauth2_session(
        flow["client_id"],
        flow.get("client_secret"),
        scope=OAUTH2_SCOPE,
        redirect_uri=flow["redirect_uri"],
        code_challenge_method="S256",
    )
    client.register_compliance_hook("access_token_response", _refusal_without_oauth_error)
    return client


def start_oauth2(config: Mapping[str, Any], flow: dict) -> str:
    """A PKCE verifier and a state, kept in `flow`; returns X's authorize page."""
    flow["code_verifier"], flow["state"] = generate_token(64), generate_token(32)
    with _flow_session(flow) as client:
        url, _ = client.create_authorization_url(
            config["XTAG_X_OAUTH2_AUTHORIZE_URL"],
            state=flow["state"],
            code_verifier=flow["code_verifier"],
        )
    return url


def _check_callback(flow: dict, args: Mapping[str, str]) -> None:
    if not hmac.compare_digest(args.get("state", ""), flow["state"]):
        raise HandshakeFailed(
            "X's answer does not belong to the connection being made (its state does not "
            "match): start again."
        )
    if args.get("error"):
        if args["error"] == "access_denied":
            raise HandshakeFailed(DENIED)
        said = ": ".join(filter(None, (args["error"], args.get("error_description"))))
        raise HandshakeFailed(f"X refused the authorisation: {said[:ANSWER_LIMIT]}.")
    if not args.get("code"):
        raise HandshakeFailed("X's answer has no authorisation code: start again.")


def finish_oauth2(config: Mapping[str, Any], flow: dict, args: Mapping[str, str]) -> dict:
    """X's callback -> {"credentials": the connection's, "who": None}."""
    _check_callback(flow, args)
    try:
        with _flow_session(flow) as client:
            token = client.fetch_token(
                config["XTAG_X_OAUTH2_TOKEN_URL"],
                grant_type="authorization_code",
                code=args["code"],
                code_verifier=flow["code_verifier"],
                timeout=_timeout(config),
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
        raise _failed(
            "Exchanging X's authorisation code for tokens",
            exc,
            "Check the client id and secret, then start again.",
        ) from None
    if flow.get("client_secret"):
        credentials["client_secret"] = flow["client_secret"]
    return {"credentials": credentials, "who": None}


def refresh(config: Mapping[str, Any], credentials: dict) -> dict:
    """The credentials with a new access token (and the rotated refresh token)."""
    session = _oauth2_session(credentials["client_id"], credentials.get("client_secret"))
    try:
        token = session.refresh_token(
            config["XTAG_X_OAUTH2_TOKEN_URL"],
            refresh_token=credentials["refresh_token"],
            timeout=_timeout(config),
        )
    except (OAuthError, ValueError, OSError) as exc:
        raise RefreshFailed(f"X refused to refresh the OAuth 2.0 token: {exc}") from None
    finally:
        session.close()
    renewed = dict(credentials)
    renewed["access_token"] = token["access_token"]
    renewed["refresh_token"] = token.get("refresh_token") or credentials["refresh_token"]
    if token.get("expires_at"):
        renewed["expires_at"] = int(token["expires_at"])
    elif token.get("expires_in"):
        renewed["expires_at"] = int(time.time() + int(token["expires_in"]))
    return renewed
