"""The one place that reads and writes times: ISO 8601 in, aware UTC
datetimes inside, X's millisecond format and the API's ISO format out."""

from __future__ import annotations

from datetime import UTC, datetime

from xtag.core.errors import Invalid

TEXT_MAX = 64


def parse(value: object) -> datetime | None:
    """An ISO 8601 time as an aware UTC datetime (UTC when it names no zone),
    or None for anything else, including times that UTC cannot hold."""
    if not isinstance(value, str) or len(value) > TEXT_MAX:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def parse_filter(raw: str | None, field: str = "since") -> datetime | None:
    """A time given as a filter: None when not given, Invalid when not a time."""
    if raw is None or not raw.strip():
        return None
    moment = parse(raw)
    if moment is None:
        raise Invalid(f"{field} must be an ISO 8601 time, e.g. 2026-11-25T00:00:00Z", field)
    return moment


def iso_ms(moment: datetime) -> str:
    """X's format, and the one queued events carry: UTC to the millisecond."""
    # isoformat truncates to the millisecond, as X counts; 4-digit years always
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def iso(moment: datetime | None) -> str | None:
    """The management API's format: ISO 8601 with a Z."""
    return moment.isoformat().replace("+00:00", "Z") if moment else None
