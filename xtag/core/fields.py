"""Resource declarations: one list of fields per resource, which validates
input, writes the resource's JSON and describes both in OpenAPI."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from typing import Any

from xtag.core.errors import Invalid
from xtag.core.times import iso

ID_MAX = 2**31 - 1  # what an INTEGER column holds on PostgreSQL
BIG_ID_MAX = 2**63 - 1  # BIGINT (events, deliveries)

JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "number": (int, float),
}
EMPTY = {"array": list, "object": dict}  # what a response shows for a missing list or object


def _has_nul(value: Any) -> bool:
    """NUL cannot be stored in a PostgreSQL text column: refuse it up front."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    return False


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    description: str = ""
    required: bool = False
    nullable: bool = False
    read_only: bool = False
    write_only: bool = False
    enum: tuple[str, ...] | None = None
    items: str | None = None
    max_length: int | None = None
    check: Callable[[Any], Any] | None = None  # returns the cleaned value or raises Invalid
    example: Any = None
    source: str | None = None  # the attribute (dotted path) holding it, when not `name`
    show: Callable[[Any], Any] | None = None  # how a response shows it (masks a secret)
    nested: Schema | None = None  # a list of rows, each shown by this schema
    detail: bool = False  # shown only on the resource's own page, not in lists

    def dump(self, row: Any) -> Any:
        """The field's value in a response."""
        value = attrgetter(self.source or self.name)(row)
        if self.show is not None:
            return self.show(value)
        if self.nested is not None:
            return [self.nested.dump(item) for item in value]
        if isinstance(value, datetime):
            return iso(value)
        if value is None and self.type in EMPTY:
            return EMPTY[self.type]()
        return value

    def clean(self, value: Any) -> Any:
        if value is None:
            if self.nullable:
                return None
            raise Invalid(f"{self.name} may not be null", self.name)
        kinds = JSON_TYPES[self.type]
        if not isinstance(value, kinds) or (
            self.type in ("integer", "number") and isinstance(value, bool)
        ):
            raise Invalid(f"{self.name} must be of type {self.type}", self.name)
        if self.type == "integer" and not 0 <= value <= ID_MAX:
            raise Invalid(f"{self.name} must be between 0 and {ID_MAX}", self.name)
        if self.items and not all(isinstance(v, JSON_TYPES[self.items]) for v in value):
            raise Invalid(f"{self.name} must be a list of {self.items}s", self.name)
        if _has_nul(value):
            raise Invalid(f"{self.name} may not contain NUL characters", self.name)
        if self.enum and value not in self.enum:
            raise Invalid(f"{self.name} must be one of: {', '.join(self.enum)}", self.name)
        if self.max_length and isinstance(value, str) and len(value) > self.max_length:
            raise Invalid(f"{self.name} is longer than {self.max_length} characters", self.name)
        if self.type == "string" and self.required and not value.strip():
            raise Invalid(f"{self.name} may not be empty", self.name)
        return self.check(value) if self.check else value

    def openapi(self) -> dict:
        doc: dict[str, Any] = {"type": [self.type, "null"] if self.nullable else self.type}
        for key, value in (
            ("description", self.description),
            ("enum", list(self.enum) if self.enum else None),
            ("maxLength", self.max_length),
            ("readOnly", self.read_only or None),
            ("writeOnly", self.write_only or None),
            ("example", self.example),
        ):
            if value is not None and value != "":
                doc[key] = value
        if self.items:
            doc["items"] = {"type": self.items}
        if self.type == "integer":
            doc.update(minimum=0, maximum=ID_MAX)
        return doc


@dataclass(frozen=True)
class Schema:
    name: str
    fields: tuple[Field, ...]
    extra: dict[str, dict] = field(default_factory=dict)  # response-only properties
    has_id: bool = True  # rows of their own (an id), or parts of another's

    def dump(self, row: Any, detail: bool = False) -> dict:
        """A row as the API and the admin show it: secrets masked, never the
        write-only fields, times in ISO 8601."""
        shown = {"id": row.id} if self.has_id else {}
        for f in self.fields:
            if not f.write_only and (detail or not f.detail):
                shown[f.name] = f.dump(row)
        return shown

    def clean(self, data: Any, partial: bool = False) -> dict:
        """Validated input: unknown and read-only fields refused, required ones
        demanded unless `partial` (PATCH)."""
        if not isinstance(data, dict):
            raise Invalid("the body must be a JSON object")
        known = {f.name: f for f in self.fields}
        for name in data:
            if name not in known:
                raise Invalid(f"unknown field {name}", name)
            if known[name].read_only:
                raise Invalid(f"{name} is read-only", name)
        if not partial:
            for f in self.fields:
                if f.required and f.name not in data:
                    raise Invalid(f"{f.name} is required", f.name)
        return {name: known[name].clean(value) for name, value in data.items()}

    def openapi_input(self, partial: bool = False) -> dict:
        writable = [f for f in self.fields if not f.read_only]
        doc: dict[str, Any] = {
            "type": "object",
            "additionalProperties": False,
            "properties": {f.name: f.openapi() for f in writable},
        }
        required = [f.name for f in writable if f.required and not partial]
        if required:
            doc["required"] = required
        return doc

    def openapi_output(self) -> dict:
        properties = {"id": {"type": "integer", "readOnly": True}}
        properties.update({f.name: f.openapi() for f in self.fields})
        properties.update(self.extra)
        return {"type": "object", "properties": properties, "required": ["id"]}
