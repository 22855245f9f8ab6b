"""JSON on the hot paths (inbox entries, JSON columns, bodies sent to X):
orjson, falling back to the standard library for what orjson refuses
(integers beyond 64 bits, which a site may well send in properties)."""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"))


def loads(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
