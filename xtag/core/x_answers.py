"""What X's answer means for a batch, per the status table of the spec.

Pure: takes the status, headers and body text (or the transport error) and
returns a verdict; no HTTP, database or queue here.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import NamedTuple

RETRYABLE = {408, 423, 500, 502, 503, 504}
BODY_KEPT = 4096


@dataclass(frozen=True)
class Verdict:
    kind: str  # delivered | retry | invalid | unauthorized | terminal (| held: not sent)
    message: str = ""
    debug_id: str | None = None
    processed: int | None = None
    retry_at: float | None = None  # epoch seconds X asked us to wait until


class RateLimit(NamedTuple):
    remaining: int  # requests X still takes from the connection...
    reset: float  # ...until this epoch second, when the budget is whole again


def _json(body: str) -> dict:
    try:
        data = json.loads(body)
    except (ValueError, TypeError):
        return {}
    return data if isinstance(data, dict) else {}


def error_message(body: str) -> str:
    """X's own words: the messages of its `errors` list, else the body's start."""
    errors = _json(body).get("errors")
    if isinstance(errors, list):
        parts = []
        for error in errors:
            if isinstance(error, dict):
                parts.append(
                    " ".join(str(error.get(k)) for k in ("code", "message") if error.get(k))
                )
        if parts:
            return "; ".join(parts)
    return " ".join(body.split())[:300]


def _number(value: str | None) -> float | None:
    try:
        number = float(value) if value not in (None, "") else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


# X's rate-limit windows are 15 minutes: a reset further off than this (in
# milliseconds, say) is not believed, or one odd header would hold a
# connection for years.
LONGEST_WAIT = 16 * 60


def believable(reset: float, now: float) -> float:
    """A reset X announced, no further than LONGEST_WAIT from now."""
    return min(reset, now + LONGEST_WAIT)


def _header(headers: dict[str, str], name: str) -> float | None:
    return _number(next((v for k, v in headers.items() if k.lower() == name), None))


def rate_limit(status: int | None, headers: dict[str, str]) -> RateLimit | None:
    """The connection's budget as X's answer states it (a 429 says it is spent,
    whatever x-rate-limit-remaining says); None when X did not say."""
    reset = _header(headers, "x-rate-limit-reset")
    remaining = 0 if status == 429 else _header(headers, "x-rate-limit-remaining")
    if remaining is None or reset is None:
        return None
    return RateLimit(int(remaining), reset)


def classify(
    status: int | None, headers: dict[str, str], body: str, error: str | None = None
) -> Verdict:
    """What X's answer means for the batch (for the connection's budget, see
    rate_limit)."""
    if status is None:
        return Verdict("retry", error or "no answer from X")
    if status == 200:
        data = _json(body).get("data") or {}
        processed = data.get("conversions_processed")
        return Verdict(
            "delivered",
            debug_id=data.get("debug_id"),
            processed=processed if isinstance(processed, int) else None,
        )
    message = f"HTTP {status}: {error_message(body)}".rstrip(": ")
    if status == 429:
        return Verdict("retry", message, retry_at=_header(headers, "x-rate-limit-reset"))
    if status in RETRYABLE:
        return Verdict("retry", message)
    if status == 400:
        return Verdict("invalid", message)
    if status == 401:
        return Verdict("unauthorized", message)
    return Verdict("terminal", message)
