"""The collector's Flask side: the blueprint of the routes that are not hot
(SDK settings, scripts; xtag.collector.sdks and xtag.collector.pixel) and
what they need from a request, on the rules of xtag.collector.edge. Events
themselves are taken by the plain WSGI collector, xtag.collector.wsgi."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, g, request
from werkzeug.exceptions import HTTPException

from xtag.collector import edge
from xtag.core.messages import SiteRules

bp = Blueprint("collector", __name__)


def refusal(message: str, code: str, retry_after: int | None = None, status: int | None = None):
    """Every non-2xx answer, as xtag.collector.wsgi answers them."""
    status = status or edge.STATUS.get(code, 400)
    edge.note_refusals(g.get("site_id"), status, [message])
    response = Response(edge.refusal_body(message, code), status, mimetype="application/json")
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


HTTP_CODES = {404: "not_found", 413: "too_large", 415: "unsupported_encoding"}


def http_error(error: HTTPException):
    """Routing and protocol errors (an unknown path, a wrong method) answer
    like every other refusal of the collector."""
    code = HTTP_CODES.get(error.code, "invalid")
    return refusal(error.description or error.name, code, status=error.code)


def write_key(body: dict | None = None) -> str:
    return edge.write_key(request.environ, body or {})


def site_for(key: str) -> SiteRules:
    site = edge.find_site(current_app, request.environ, key)
    g.site_id = site.id
    return site


def check_origin(site: SiteRules) -> None:
    edge.check_origin(request.environ, site)
    g.origin_allowed = True  # answers may carry Access-Control-Allow-Credentials


@bp.route("/v1/projects/<write_key>/settings", methods=["OPTIONS"])
@bp.route("/sourceConfig/", methods=["OPTIONS"])
@bp.route("/sourceConfig", methods=["OPTIONS"])
def preflight(**_):
    """CORS preflight of the settings SDKs fetch (the WSGI collector answers those
    of the routes that take events)."""
    return "", 204


@bp.after_request
def cors(response):
    for name, value in edge.cors_headers(
        request.environ, response.status_code, g.get("origin_allowed", False)
    ):
        response.headers[name] = value
    return response
