"""Match quality: per pixel and UTC day, what the conversions that reached X
carried for X to match them on (a click id, a hashed email or phone, or only
IP + user agent), how many events were dropped for carrying nothing, and a
score: the share with at least one of twclid, email or phone. Read only;
test conversions never count."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import func, select

from xtag.core.mapping import MATCH_BITS
from xtag.extensions import db
from xtag.models import DeliveryItem, Mapping, Pixel, ReceivedEvent, utcnow

KEYS = tuple(MATCH_BITS)  # twclid, hashed_email, hashed_phone_number
ADVICE_MIN = 5  # conversions of an event before it gets advice
ADVICE_SHARE = 0.2  # missing from more than this share: worth saying
ADVICE = {
    "hashed_email": "carry no email: send identify with the email after login or checkout",
    "twclid": "carry no X click id: keep ?twclid= on landing pages and load the beacon there",
}


@dataclass
class Day:
    """One pixel's counts for one UTC day (or a window, when summed)."""

    day: date | None
    conversions: int = 0
    with_: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KEYS, 0))
    weak_only: int = 0
    dropped_no_identifier: int = 0
    # per event name: conversions, and those missing each key
    by_event: dict[str, Counter] = field(default_factory=dict)

    @property
    def score(self) -> float | None:
        """Percent of the pixel's conversions with a twclid, email or phone.
        X refuses conversions with only IP + user agent, so xtag drops them
        (dropped_no_identifier) rather than send them: they count against
        the score as conversions lost. None when there were none."""
        made = self.conversions + self.dropped_no_identifier
        if not made:
            return None
        return round(100 * (self.conversions - self.weak_only) / made, 1)

    def add(self, other: Day) -> None:
        self.conversions += other.conversions
        self.weak_only += other.weak_only
        self.dropped_no_identifier += other.dropped_no_identifier
        for key in KEYS:
            self.with_[key] += other.with_[key]
        for name, counts in other.by_event.items():
            self.by_event.setdefault(name, Counter()).update(counts)

    def as_json(self) -> dict:
        shown = {
            "conversions": self.conversions,
            "with": dict(self.with_),
            "weak_only": self.weak_only,
            "dropped_no_identifier": self.dropped_no_identifier,
            "score": self.score,
        }
        return {"day": self.day.isoformat(), **shown} if self.day else shown


def _start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def _delivered(pixel_key: int, day: date, by_event: bool) -> Day:
    counts = Day(day)
    keys = [DeliveryItem.match, ReceivedEvent.event_name] if by_event else [DeliveryItem.match]
    query = select(*keys, func.count())
    if by_event:  # a join per conversion: only when the names are wanted
        query = query.outerjoin(ReceivedEvent, DeliveryItem.event_id == ReceivedEvent.id)
    rows = db.session.execute(
        query.where(
            DeliveryItem.pixel_key == pixel_key,
            DeliveryItem.created_at >= _start(day),
            DeliveryItem.created_at < _start(day + timedelta(days=1)),
            DeliveryItem.status == "delivered",
            DeliveryItem.test.is_(False),
            DeliveryItem.match.is_not(None),
        ).group_by(*keys)
    )
    for match, *named, n in rows:
        name = named[0] if named else None
        counts.conversions += n
        if match == 0:
            counts.weak_only += n
        per_event = counts.by_event.setdefault(name or "(unknown)", Counter())
        per_event["conversions"] += n
        for key, bit in MATCH_BITS.items():
            if match & bit:
                counts.with_[key] += n
            else:
                per_event[key] += n  # missing
    return counts


def _dropped(pixel: Pixel, since: datetime, until: datetime) -> Counter:
    """Events meant for the pixel dropped for no identifier, per UTC day."""
    sites = select(Mapping.site_id).where(Mapping.pixel_key == pixel.id).distinct()
    rows = db.session.execute(
        select(ReceivedEvent.received_at, ReceivedEvent.pixels).where(
            ReceivedEvent.site_id.in_(sites),
            ReceivedEvent.received_at >= since,
            ReceivedEvent.received_at < until,
            ReceivedEvent.outcome == "dropped",
            ReceivedEvent.reason == "no_identifier",
            ReceivedEvent.test.is_(False),
        )
    )
    return Counter(at.date() for at, pixels in rows if pixel.pixel_id in (pixels or ()))


def daily(pixel: Pixel, days: int, today: date | None = None, by_event: bool = True) -> list[Day]:
    """The last `days` UTC days of a pixel, oldest first, today included;
    without `by_event`, the counts only (no per event name advice)."""
    today = today or utcnow().date()
    first = today - timedelta(days=days - 1)
    dropped = _dropped(pixel, _start(first), _start(today + timedelta(days=1)))
    result = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        counts = _delivered(pixel.id, day, by_event)
        counts.dropped_no_identifier = dropped.get(day, 0)
        result.append(counts)
    return result


def total(days: list[Day]) -> Day:
    summed = Day(None)
    for day in days:
        summed.add(day)
    return summed


def advice(window: Day) -> list[str]:
    """Plain sentences on what to add, the most missed first."""
    said = []
    for name, counts in window.by_event.items():
        if counts["conversions"] < ADVICE_MIN:
            continue
        for key, what in ADVICE.items():
            share = counts[key] / counts["conversions"]
            if share > ADVICE_SHARE:
                said.append((share, f"{share:.0%} of {name} conversions {what}"))
    if window.dropped_no_identifier:
        n = window.dropped_no_identifier
        said.append(
            (
                1.0,
                f"{n} event{'s' if n != 1 else ''} carried nothing X can match on and were "
                "dropped: send identify before the conversion, or keep the click id",
            )
        )
    return [text for _, text in sorted(said, key=lambda pair: -pair[0])]
