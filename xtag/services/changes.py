"""Creating, changing and deleting configuration: the same checks, the same
audit entry and the same answers whether the admin, the API or the CLI asks."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError

from xtag.core.errors import Conflict
from xtag.core.fields import Schema
from xtag.extensions import db
from xtag.models import AuditEntry, User, utcnow
from xtag.services import pixelscripts, writekeys

SECRET = "changed"  # how the audit log shows a secret that changed


@dataclass(frozen=True)
class Kind:
    """One kind of configuration object the API and the admin manage."""

    name: str
    model: type
    schema: Schema
    prepare: Callable[[dict, Any], dict]  # checks beyond field types, and derived values
    secrets: tuple[str, ...] = ()
    check_delete: Callable[[Any], None] | None = None  # raises Invalid to refuse
    internal: tuple[str, ...] = ()  # set by prepare, not a change anyone made

    def dump(self, row: Any) -> dict:
        return self.schema.dump(row)


def audit(actor: User | None, action: str, kind: str, object_id: object, changes: dict) -> None:
    """Add an audit entry to the session; the caller's commit keeps it."""
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
        if name in kind.internal:
            continue
        if name in kind.secrets:
            changed[name] = SECRET
        elif before.get(name) != value:
            changed[name] = {"from": before.get(name), "to": value}
    return changed


@contextmanager
def _clashes_as_conflict(kind: Kind):
    """A unique constraint the checks did not foresee is still a conflict."""
    try:
        yield
    except IntegrityError:
        db.session.rollback()
        raise Conflict(f"this {kind.name} clashes with an existing one") from None


def _commit(kind: Kind) -> None:
    with _clashes_as_conflict(kind):
        db.session.commit()
    writekeys.forget()
    pixelscripts.forget()


def create(kind: Kind, actor: User | None, data: Any) -> Any:
    values = kind.prepare(kind.schema.clean(data), None)
    row = kind.model(**values)
    db.session.add(row)
    with _clashes_as_conflict(kind):
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
