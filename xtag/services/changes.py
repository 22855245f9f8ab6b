"""Configuration changes, in one place for the management API and the admin:
validation beyond field types, the change itself, and its audit entry."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError

from xtag import connections, delivery, jobs, mapping, schemas, validation
from xtag.collector import sites as site_cache
from xtag.collector.intake import Rejected, RequestFacts, SiteRules, prepare, validate
from xtag.extensions import db
from xtag.models import (
    ApiToken,
    AuditEntry,
    Connection,
    Delivery,
    Mapping,
    Pixel,
    ReceivedEvent,
    Site,
    User,
    utcnow,
)
from xtag.schema import Invalid, Schema

SECRET = "changed"


def mask(value: object) -> str:
    """A secret shown as its last 4 characters at most, never in full."""
    text = str(value)
    return "****" + text[-4:] if len(text) >= 12 else "****"


def iso(moment) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


# --- serialising ----------------------------------------------------------------


def site_dict(site: Site) -> dict:
    return {
        "id": site.id,
        "name": site.name,
        "write_key": site.write_key,
        "allowed_origins": site.allowed_origins or [],
        "default_phone_region": site.default_phone_region,
        "require_consent": site.require_consent,
        "rate_limit": site.rate_limit,
        "last_event_at": iso(site.last_event_at),
    }


def connection_dict(connection: Connection) -> dict:
    credentials = connection.credentials
    return {
        "id": connection.id,
        "name": connection.name,
        "auth_type": connection.auth_type,
        "credentials": {
            k: (v if k in ("client_id", "consumer_key", "expires_at") else mask(v))
            for k, v in credentials.items()
        },
        "status": connection.status,
        "last_error": connection.last_error,
        "token_expires_at": iso(connection.token_expires_at),
    }


def pixel_dict(pixel: Pixel) -> dict:
    return {
        "id": pixel.id,
        "pixel_id": pixel.pixel_id,
        "name": pixel.name,
        "connection_id": pixel.connection_id,
    }


def mapping_dict(mapping: Mapping) -> dict:
    return {
        "id": mapping.id,
        "site_id": mapping.site_id,
        "event_name": mapping.event_name,
        "pixel": mapping.pixel_key,
        "x_event_id": mapping.x_event_id,
        "enabled": mapping.enabled,
        "description": mapping.description,
        "fields": mapping.fields or {},
    }


def user_dict(user: User) -> dict:
    return {
        "id": user.id,
        "email": user.email,
        "role": user.role,
        "active": user.active,
        "last_login_at": iso(user.last_login_at),
    }


def delivery_dict(row: Delivery, detail: bool = False) -> dict:
    body = {
        "id": row.id,
        "pixel": row.pixel_key,
        "pixel_id": row.pixel.pixel_id,
        "connection_id": row.connection_id,
        "status": row.status,
        "conversions": row.conversions,
        "attempts": row.attempts,
        "retries": row.retries,
        "debug_id": row.debug_id,
        "last_status_code": row.last_status_code,
        "last_error": row.last_error,
        "next_retry_at": iso(row.next_retry_at),
        "created_at": iso(row.created_at),
    }
    if detail:
        body["attempt_log"] = [
            {
                "number": a.number,
                "conversions": a.conversions,
                "status_code": a.status_code,
                "request_body": a.request_body,
                "response_body": a.response_body,
                "debug_id": a.debug_id,
                "error": a.error,
                "duration_ms": a.duration_ms,
                "next_retry_at": iso(a.next_retry_at),
                "created_at": iso(a.created_at),
            }
            for a in row.attempt_log
        ]
        body["items"] = [
            {
                "event_id": i.event_id,
                "conversion_id": i.conversion_id,
                "status": i.status,
                "error": i.error,
            }
            for i in row.items
        ]
    return body


def audit_dict(row: AuditEntry) -> dict:
    return {
        "id": row.id,
        "user_id": row.user_id,
        "action": row.action,
        "object_type": row.object_type,
        "object_id": row.object_id,
        "changes": row.changes,
        "created_at": iso(row.created_at),
    }


def event_dict(row: ReceivedEvent) -> dict:
    return {
        "id": row.id,
        "site_id": row.site_id,
        "message_id": row.message_id,
        "type": row.type,
        "event_name": row.event_name,
        "received_at": iso(row.received_at),
        "outcome": row.outcome,
        "reason": row.reason,
        "pixels": row.pixels,
        "identifiers": row.identifiers,
    }


# --- preparing values -----------------------------------------------------------------


def _site_values(data: dict, row: Site | None) -> dict:
    values = dict(data)
    if "allowed_origins" in values:
        values["allowed_origins"] = validation.origins(values["allowed_origins"])
    if values.get("default_phone_region"):
        values["default_phone_region"] = validation.phone_region(values["default_phone_region"])
    return values


def _connection_values(data: dict, row: Connection | None) -> dict:
    values = dict(data)
    auth_type = values.get("auth_type") or row.auth_type
    if "credentials" in values or "auth_type" in values:
        given = values.pop("credentials", {})
        if row is not None and auth_type == row.auth_type:
            given = {**row.credentials, **given}  # write-only: send only what changes
        values["credentials"] = validation.credentials(auth_type, given)
        values["token_expires_at"] = connections.expires_at(values["credentials"])
    return values


def _pixel_values(data: dict, row: Pixel | None) -> dict:
    values = dict(data)
    if "pixel_id" in values:
        values["pixel_id"] = validation.pixel_id(values["pixel_id"])
        clash = db.session.scalar(select(Pixel.id).where(Pixel.pixel_id == values["pixel_id"]))
        if clash and (row is None or clash != row.id):
            raise Invalid(f"pixel {values['pixel_id']} exists already", "pixel_id", 409, "conflict")
    if values.get("connection_id") is not None and not db.session.get(
        Connection, values["connection_id"]
    ):
        raise Invalid(f"no connection with id {values['connection_id']}", "connection_id", 422)
    return values


def _mapping_values(data: dict, row: Mapping | None) -> dict:
    values = dict(data)
    if "site_id" in values and not db.session.get(Site, values["site_id"]):
        raise Invalid(f"no site with id {values['site_id']}", "site_id", 422)
    pixel_key = values.pop("pixel", row.pixel_key if row else None)
    pixel = db.session.get(Pixel, pixel_key) if pixel_key is not None else None
    if pixel is None:
        raise Invalid(f"no pixel with id {pixel_key}", "pixel", 422)
    values["pixel_key"] = pixel.id
    event = values.get("x_event_id", row.x_event_id if row else "")
    values["x_event_id"] = validation.x_event_id(event, pixel.pixel_id)
    if "fields" in values:
        values["fields"] = validation.field_overrides(values["fields"])
    if "event_name" in values:
        values["event_name"] = values["event_name"].strip()
    return values


def _user_values(data: dict, row: User | None) -> dict:
    values = dict(data)
    if "email" in values:
        values["email"] = values["email"].strip().lower()
        if "@" not in values["email"]:
            raise Invalid("email must be an email address", "email")
        clash = db.session.scalar(select(User.id).where(User.email == values["email"]))
        if clash and (row is None or clash != row.id):
            raise Invalid(
                f"a user with email {values['email']} already exists", "email", 409, "conflict"
            )
    if row is not None and ("role" in values or "active" in values):
        role, active = values.get("role", row.role), values.get("active", row.active)
        if role != "admin" or not active:
            _keep_an_admin(row, "role" if role != "admin" else "active")
    if "password" in values:
        password = values.pop("password")
        if len(password) < 8:
            raise Invalid("password must be at least 8 characters", "password")
        probe = User()
        probe.set_password(password)
        values["password_hash"] = probe.password_hash
    return values


def _keep_an_admin(user: User, field: str | None = None) -> None:
    """Nobody could manage users or connections any more without an active admin."""
    if not (user.is_admin and user.active):
        return
    admins = db.session.scalars(  # locked in one order, so two demotions cannot pass at once
        select(User.id)
        .where(User.role == "admin", User.active.is_(True))
        .order_by(User.id)
        .with_for_update()
    ).all()
    if not set(admins) - {user.id}:
        raise Invalid(
            f"{user.email} is the last active admin: make another user an admin first",
            field,
        )


@dataclass(frozen=True)
class Kind:
    """One kind of configuration object the API and the admin manage."""

    name: str
    model: type
    schema: Schema
    serialize: Callable[[Any], dict]
    prepare: Callable[[dict, Any], dict]
    secrets: tuple[str, ...] = ()
    check_delete: Callable[[Any], None] | None = None  # raises Invalid to refuse


SITES = Kind("site", Site, schemas.SITE, site_dict, _site_values)
CONNECTIONS = Kind(
    "connection",
    Connection,
    schemas.CONNECTION,
    connection_dict,
    _connection_values,
    ("credentials",),
)
PIXELS = Kind("pixel", Pixel, schemas.PIXEL, pixel_dict, _pixel_values)
MAPPINGS = Kind("mapping", Mapping, schemas.MAPPING, mapping_dict, _mapping_values)
USERS = Kind(
    "user", User, schemas.USER, user_dict, _user_values, ("password_hash",), _keep_an_admin
)


# --- changing ---------------------------------------------------------------------------


def audit(actor: User | None, action: str, kind: str, object_id: object, changes: dict) -> None:
    db.session.add(
        AuditEntry(
            user_id=actor.id if actor else None,
            action=action,
            object_type=kind,
            object_id=str(object_id),
            changes=changes,
            created_at=utcnow(),
        )
    )


def _changes(kind: Kind, before: dict, values: dict) -> dict:
    changed = {}
    for name, value in values.items():
        if name in kind.secrets:
            changed[name] = SECRET
        elif before.get(name) != value:
            changed[name] = {"from": before.get(name), "to": value}
    return changed


@contextmanager
def _clashes_as_409(kind: Kind):
    """A unique constraint the checks above did not foresee is still a 409."""
    try:
        yield
    except IntegrityError:
        db.session.rollback()
        raise Invalid(
            f"this {kind.name} clashes with an existing one", None, 409, "conflict"
        ) from None


def _commit(kind: Kind) -> None:
    with _clashes_as_409(kind):
        db.session.commit()
    site_cache.forget()


def create(kind: Kind, actor: User | None, data: Any) -> Any:
    values = kind.prepare(kind.schema.clean(data), None)
    row = kind.model(**values)
    db.session.add(row)
    with _clashes_as_409(kind):
        db.session.flush()
    audit(actor, "create", kind.name, row.id, _changes(kind, {}, values))
    _commit(kind)
    return row


def update(kind: Kind, actor: User | None, row: Any, data: Any) -> Any:
    values = kind.prepare(kind.schema.clean(data, partial=True), row)
    before = {name: getattr(row, name, None) for name in values if name not in kind.secrets}
    for name, value in values.items():
        setattr(row, name, value)
    changes = _changes(kind, before, values)
    if changes:
        audit(actor, "update", kind.name, row.id, changes)
    _commit(kind)
    return row


def delete(kind: Kind, actor: User | None, row: Any) -> None:
    if kind.check_delete is not None:
        kind.check_delete(row)
    audit(actor, "delete", kind.name, row.id, {})
    db.session.delete(row)
    _commit(kind)


# --- API tokens ---------------------------------------------------------------------------

TOKEN_NAME_MAX = 100


def issue_api_token(actor: User | None, user: User, name: str = "") -> tuple[ApiToken, str]:
    """A new management-API token for a user: the row (only its hash is stored)
    and the token itself, which the caller shows once."""
    name = (name or "").strip()
    if len(name) > TOKEN_NAME_MAX:
        raise Invalid(f"name is longer than {TOKEN_NAME_MAX} characters", "name")
    if "\x00" in name:
        raise Invalid("name may not contain NUL characters", "name")
    if not user.active:
        raise Invalid(f"{user.email} is deactivated: reactivate them first", "user_id")
    row, token = ApiToken.issue(user, name=name)
    db.session.add(row)
    db.session.flush()
    changes = {"user": user.email, "prefix": row.prefix}
    if name:
        changes["name"] = name
    audit(actor, "create", "api_token", row.id, changes)
    db.session.commit()
    return row, token


def revoke_api_tokens(actor: User | None, rows: list[ApiToken]) -> int:
    """Revoke tokens that are still live; how many were."""
    live = [row for row in rows if row.revoked_at is None]
    for row in live:
        row.revoked_at = utcnow()
        audit(actor, "revoke", "api_token", row.id, {"user": row.user.email})
    db.session.commit()
    return len(live)


def _rule(row: Mapping, pixel: Pixel) -> mapping.Rule:
    return mapping.Rule(pixel.id, pixel.pixel_id, row.x_event_id, row.description, row.fields or {})


def draft(data: dict, editing: Mapping | None = None) -> Mapping:
    """A mapping as typed in a form, checked exactly as on saving, not saved."""
    values = MAPPINGS.prepare(MAPPINGS.schema.clean(data, partial=editing is not None), editing)
    kept = ("site_id", "event_name", "description", "fields")
    base = {c: getattr(editing, c) for c in kept} if editing else {}
    return Mapping(**{**base, **values, "enabled": True})


def preview(
    site: Site, message: Any, drafted: Mapping | None = None, editing: Mapping | None = None
) -> dict:
    """What a message would become for this site: the exact conversions per
    pixel, or why it would be dropped. The collector's and the worker's own
    code, without Redis, the database writes or X. With a draft mapping, as
    if it were saved (in place of the one being edited)."""
    if not isinstance(message, dict):
        raise Invalid("message must be a JSON object", "message")
    rules = SiteRules(
        site.id, tuple(site.allowed_origins or ()), site.default_phone_region, site.require_consent
    )
    try:
        kind = validate(message, "message.", "track" if "type" not in message else "batch")
    except Rejected as exc:
        raise Invalid(str(exc), "message") from None
    event = prepare(message, kind, rules, RequestFacts(None, None, None, False, utcnow()))
    name = event["message"]["event"]
    rules = jobs.rules_for({site.id}).get((site.id, name), [])
    if editing is not None and editing.enabled:
        rules = [r for r in rules if r != _rule(editing, editing.pixel)]
    if drafted is not None and drafted.event_name == name:
        rules = [*rules, _rule(drafted, db.session.get(Pixel, drafted.pixel_key))]
    outcome, reason, result = jobs.outcome(event, False, rules)
    conversions = [
        {"pixel": rule.pixel_key, "pixel_id": rule.pixel_id, "conversion": conversion}
        for rule, conversion in (result.conversions if result else [])
    ]
    return {"event_name": name, "outcome": outcome, "reason": reason, "conversions": conversions}


def parse_since(raw: str | None, field: str = "since") -> datetime | None:
    """An ISO 8601 time (UTC unless it says otherwise), or None when not given."""
    if raw is None or not raw.strip():
        return None
    try:
        moment = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        raise Invalid(
            f"{field} must be an ISO 8601 time, e.g. 2026-11-25T00:00:00Z", field
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def deliveries(
    status: str | None = None, pixel: str | None = None, since: datetime | None = None
) -> Select:
    """Deliveries by status, X pixel id and creation time (the log's filters)."""
    query = select(Delivery)
    if status:
        query = query.where(Delivery.status == status)
    if pixel:
        query = query.join(Pixel, Delivery.pixel_key == Pixel.id).where(
            Pixel.pixel_id == pixel.strip().lower()
        )
    if since is not None:
        query = query.where(Delivery.created_at >= since)
    return query


def retry_failed(
    actor: User | None, pixel: str | None = None, since: datetime | None = None
) -> list[int]:
    """Queue every failed or partial delivery matching the filters again."""
    query = deliveries(pixel=pixel, since=since).where(Delivery.status.in_(("failed", "partial")))
    retried = [row.id for row in db.session.scalars(query) if delivery.retry_by_hand(row.id)]
    filters = {"pixel": pixel or None, "since": iso(since)}
    audit(
        actor,
        "retry",
        "delivery",
        ",".join(map(str, retried))[:64],
        {"count": len(retried), **filters},
    )
    db.session.commit()
    return retried
