"""Management API routes: thin; rules and changes live in xtag.services."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flask import Blueprint, current_app, g, jsonify, request
from sqlalchemy import select

from xtag.api import openapi
from xtag.api.auth import error_answer, requires
from xtag.core.errors import Invalid, NotFound
from xtag.core.fields import BIG_ID_MAX, ID_MAX, Field, Schema
from xtag.core.times import iso, parse_filter
from xtag.extensions import db
from xtag.models import AuditEntry, Delivery, Mapping, Pixel, ReceivedEvent, Site, User
from xtag.services import changes, queries, refusals, sites
from xtag.services import deliveries as delivery_service
from xtag.services.changes import Kind
from xtag.services.preview import PREVIEW
from xtag.services.preview import preview as preview_of
from xtag.services.resources import CONNECTIONS, MAPPINGS, PIXELS, SITES, USERS

bp = Blueprint("api", __name__, url_prefix="/api/v1")
LIMIT_MAX = 200


@dataclass(frozen=True)
class Resource:
    path: str
    kind: Kind
    write_role: str
    filters: dict[str, tuple[object, type]]
    read_role: str = "marketer"


RESOURCES = (
    Resource("sites", SITES, "marketer", {"name": (Site.name, str)}),
    Resource("connections", CONNECTIONS, "admin", {}),
    Resource("users", USERS, "admin", {"role": (User.role, str)}, read_role="admin"),
    Resource("pixels", PIXELS, "marketer", {"connection_id": (Pixel.connection_id, int)}),
    Resource(
        "mappings",
        MAPPINGS,
        "marketer",
        {
            "site_id": (Mapping.site_id, int),
            "event_name": (Mapping.event_name, str),
            "pixel": (Mapping.pixel_key, int),
        },
    ),
)


@bp.before_request
def refuse_nul_in_query():
    for name, value in request.args.items(multi=True):
        if "\x00" in value or "\x00" in name:
            raise Invalid(f"{name} may not contain NUL characters", name)


bp.register_error_handler(Invalid, error_answer)


def int_arg(name: str, default: int | None, low: int = 0, high: int | None = None) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return default
    high = ID_MAX if high is None else high
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise Invalid(f"{name} must be a whole number between {low} and {high}", name)
    return int(raw)


def _since() -> datetime | None:
    return parse_filter(request.args.get("since"))


def paged(query, serialize, order):
    limit = int_arg("limit", 50, 1, LIMIT_MAX)
    offset = int_arg("offset", 0, 0)
    rows, total = queries.page(query, order, limit, offset)
    return jsonify(items=[serialize(r) for r in rows], total=total, limit=limit, offset=offset)


def found(model: type, row_id: int, name: str, most: int = ID_MAX):
    """The row with that id; NotFound for none, and for ids no column holds."""
    row = db.session.get(model, row_id) if row_id <= most else None
    if row is None:
        raise NotFound(f"no {name} with id {row_id}")
    return row


def row_of(kind: Kind, row_id: int):
    return found(kind.model, row_id, kind.name)


def json_body():
    data = request.get_json(silent=True)
    if data is None:
        raise Invalid("the body must be JSON (Content-Type: application/json)")
    return data


def _register(resource: Resource) -> None:
    kind, model = resource.kind, resource.kind.model

    @requires(resource.read_role)
    def listing():
        query = select(model)
        for name, (column, cast) in resource.filters.items():
            if name in request.args:
                value = int_arg(name, None) if cast is int else request.args[name]
                query = query.where(column == value)
        return paged(query, kind.dump, model.id)

    @requires(resource.write_role)
    def create():
        row = changes.create(kind, g.api_user, json_body())
        return jsonify(kind.dump(row)), 201

    @requires(resource.read_role)
    def read(row_id: int):
        return jsonify(kind.dump(row_of(kind, row_id)))

    @requires(resource.write_role)
    def change(row_id: int):
        row = changes.update(kind, g.api_user, row_of(kind, row_id), json_body())
        return jsonify(kind.dump(row))

    @requires(resource.write_role)
    def remove(row_id: int):
        changes.delete(kind, g.api_user, row_of(kind, row_id))
        return "", 204

    base = f"/{resource.path}"
    bp.add_url_rule(base, f"{resource.path}_list", listing, methods=["GET"])
    bp.add_url_rule(base, f"{resource.path}_create", create, methods=["POST"])
    bp.add_url_rule(f"{base}/<int:row_id>", f"{resource.path}_read", read, methods=["GET"])
    bp.add_url_rule(f"{base}/<int:row_id>", f"{resource.path}_update", change, methods=["PATCH"])
    bp.add_url_rule(f"{base}/<int:row_id>", f"{resource.path}_delete", remove, methods=["DELETE"])


for _resource in RESOURCES:
    _register(_resource)


ROTATE = Schema(
    "RotateWriteKey",
    (Field("revoke_previous", "boolean", "stop accepting the old key at once (a leaked key)"),),
)


@bp.route("/sites/<int:row_id>/rotate-write-key", methods=["POST"])
@requires("admin")
def site_rotate_write_key(row_id: int):
    """A new write key; the old one accepted for XTAG_WRITE_KEY_GRACE_HOURS unless revoked."""
    site = row_of(SITES, row_id)
    data = ROTATE.clean(request.get_json(silent=True) or {})
    until = sites.rotate_write_key(
        g.api_user,
        site,
        bool(data.get("revoke_previous")),
        current_app.config["XTAG_WRITE_KEY_GRACE_HOURS"],
    )
    return jsonify(write_key=site.write_key, previous_valid_until=iso(until))


@bp.route("/sites/<int:row_id>/refused", methods=["GET"])
@requires("marketer")
def site_refused(row_id: int):
    """The site's latest refused collector requests and how many in all."""
    site = row_of(SITES, row_id)
    return jsonify(refusals.latest(site.id))


@bp.route("/mappings/preview", methods=["POST"])
@requires("marketer")
def preview():
    """The conversions a message would produce, built by the worker's own code; sends nothing."""
    data = PREVIEW.clean(json_body())
    site = row_of(SITES, data["site_id"])
    return jsonify(preview_of(site, data["message"]))


def _deliveries_query():
    args = request.args
    return queries.deliveries(args.get("status"), args.get("pixel"), _since())


@bp.route("/deliveries", methods=["GET"])
@requires("marketer")
def deliveries():
    return paged(_deliveries_query(), queries.DELIVERY.dump, Delivery.id.desc())


def _delivery(row_id: int) -> Delivery:
    return found(Delivery, row_id, "delivery", BIG_ID_MAX)


@bp.route("/deliveries/<int:row_id>", methods=["GET"])
@requires("marketer")
def delivery_detail(row_id: int):
    return jsonify(queries.DELIVERY.dump(_delivery(row_id), detail=True))


@bp.route("/deliveries/<int:row_id>/retry", methods=["POST"])
@requires("admin")
def delivery_retry(row_id: int):
    row = _delivery(row_id)
    delivery_service.retry(g.api_user, row)
    return jsonify(queries.DELIVERY.dump(row))


@bp.route("/deliveries/retry", methods=["POST"])
@requires("admin")
def deliveries_retry():
    """Retry every failed delivery, filtered by ?pixel= and ?since=."""
    retried = delivery_service.retry_failed(g.api_user, request.args.get("pixel"), _since())
    return jsonify(retried=retried)


@bp.route("/events", methods=["GET"])
@requires("marketer")
def events():
    query = queries.events(
        int_arg("site_id", None), request.args.get("event_name"), request.args.get("outcome")
    )
    return paged(query, queries.EVENT.dump, ReceivedEvent.id.desc())


@bp.route("/audit", methods=["GET"])
@requires("admin")
def audit_log():
    entries = queries.audit_entries()  # rows of (entry, its actor's email)
    return paged(entries, lambda row: queries.AUDIT.dump(row.AuditEntry), AuditEntry.id.desc())


@bp.route("/openapi.json", methods=["GET"])
def openapi_document():
    return jsonify(openapi.document(RESOURCES))
