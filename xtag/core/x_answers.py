"""What X's answer means for a batch, per the status table of the spec.

Pure: takes the status, headers and body text (or the transport error) and
returns a verdict; no HTTP, database or queue here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

RETRYABLE = {408, 423, 500, 502, 503, 504}
BODY_KEPT = 4096


@dataclass(frozen=True)
class Verdict:
    kind: str  # delivered | retry | invalid | unauthorized | terminal
    message: str = ""
    debug_id: str | None = None
    processed: int | None = None
    retry_at: float | None = None  # epoch seconds X asked us to wait until
    hold_until: float | None = None  # the connection's rate limit is spent until then


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
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def classify(
    status: int | None,
    headers: dict[str, str],
    body: str,
    error: str | None = None,
    in_flight: int = 0,
) -> Verdict:
    """What X's answer means for the batch and its connection. The rate limit
    is spent (hold_until) when what remains would not cover the `in_flight`
    requests posted beside this one."""
    lowered = {k.lower(): v for k, v in headers.items()}
    reset = _number(lowered.get("x-rate-limit-reset"))
    remaining = _number(lowered.get("x-rate-limit-remaining"))
    hold = reset if remaining is not None and remaining <= in_flight else None
    if status is None:
        return Verdict("retry", error or "no answer from X")
    if status == 200:
        data = _json(body).get("data") or {}
        processed = data.get("conversions_processed")
        return Verdict(
            "delivered",
            debug_id=data.get("debug_id"),
            processed=processed if isinstance(processed, int) else None,
            hold_until=hold,
        )
    message = f"HTTP {status}: {error_message(body)}".rstrip(": ")
    if status == 429:
        return Verdict("retry", message, retry_at=reset, hold_until=reset)
    if status in RETRYABLE:
        return Verdict("retry", message, hold_until=hold)
    if status == 400:
        return Verdict("invalid", message, hold_until=hold)
    if status == 401:
        return Verdict("unauthorized", message, hold_until=hold)
    return Verdict("terminal", message, hold_until=hold)
