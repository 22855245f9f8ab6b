"""JSON on the hot paths (request bodies, inbox entries, JSON columns, bodies
sent to X): orjson, with the standard library for what orjson does not read
or write as Python does: integers beyond 64 bits (orjson writes none and reads
them as floats, losing digits) and, when asked, NaN and Infinity refused."""

from __future__ import annotations

import json
from typing import Any

import orjson

# A run of 19 digits may be an integer beyond 64 bits: the standard library
# reads those. Found by masking (digits to 9, the rest to a space): a regex
# scan costs ten times more on the hot path.
_DIGIT_MASK = bytes(0x39 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_DIGITS = b"9" * 19


def dumps(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"))


def _no_constant(constant: str):
    raise ValueError(f"{constant} is not JSON")


def loads(text: str | bytes, *, constants: bool = True) -> Any:
    """The value of a JSON document, as the standard library reads it.
    `constants=False`: NaN, Infinity and -Infinity are refused (ValueError)."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if _LONG_DIGITS not in raw.translate(_DIGIT_MASK):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass  # the standard library reads some (UTF-16, a BOM) or says why not
    if constants:
        return json.loads(text)
    return json.loads(text, parse_constant=_no_constant)
