"""Intake: record what the inbox holds. Each event with its outcome, and
the conversions it makes waiting for their batch, in one transaction.

A site's mappings and test mode are cached per process, as long as a version
in Redis stays the same: every commit that changes a site, pixel or mapping
sets a new one (the session events below), so the worker asks the database
again only after a change (and at least every CACHE_SECONDS)."""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import redis
from flask import has_app_context
from sqlalchemy import JSON, Table, insert, select, update
from sqlalchemy import event as sa_event
from sqlalchemy.orm import ORMExecuteState, Session

from xtag.core import fastjson, mapping
from xtag.core.times import parse
from xtag.extensions import db
from xtag.models import DeliveryItem, Mapping, Pixel, ReceivedEvent, Site, utcnow
from xtag.pipeline import batching, binding, counters, dedup, inbox, queues, visitors

log = logging.getLogger(__name__)

VERSION = "xtag:sites:version"  # a new random value after every change to sites' rules
CACHE_SECONDS = 60.0  # the longest a lost version change (Redis away then) goes unseen
COPY_FROM = 20  # rows from which an insert on PostgreSQL goes by COPY
LAST_SEEN_EVERY = timedelta(seconds=5)  # sites.last_event_at is written at most this often
CHANGED = "xtag_sites_changed"  # session.info flag: this transaction changed rules
WATCHED = (Site, Pixel, Mapping)
WATCHED_TABLES = frozenset(model.__tablename__ for model in WATCHED)


def rule(row: Mapping, pixel_id: str) -> mapping.Rule:
    """A mapping as the mapper takes it (saved, or a draft being typed)."""
    return mapping.Rule(row.pixel_key, pixel_id, row.x_event_id, row.description, row.fields or {})


def rules_for(site_ids: set[int]) -> dict[tuple[int, str], list[mapping.Rule]]:
    """Enabled mappings by (site, event name), as the mapper takes them."""
    rules: dict[tuple[int, str], list[mapping.Rule]] = defaultdict(list)
    rows = db.session.execute(
        select(Mapping, Pixel.pixel_id)
        .join(Pixel, Mapping.pixel_key == Pixel.id)
        .where(Mapping.site_id.in_(site_ids), Mapping.enabled.is_(True))
        .order_by(Mapping.id)
    )
    for row, pixel_id in rows:
        rules[(row.site_id, row.event_name)].append(rule(row, pixel_id))
    return rules


def test_sites(site_ids: set[int]) -> set[int]:
    """Of these sites, those in test mode now (the mode an event is recorded in)."""
    return set(db.session.scalars(select(Site.id).where(Site.id.in_(site_ids), Site.test_mode)))


class SiteSetup(NamedTuple):
    """What intake needs of a site: its enabled mappings by event name, its test mode."""

    rules: dict[str, list[mapping.Rule]]
    test: bool


class _Cache:
    """Sites' rules as of one version, and when each site's last_event_at was written."""

    def __init__(self, version: bytes | None):
        self.version = version
        self.until = time.monotonic() + CACHE_SECONDS
        self.sites: dict[int, SiteSetup] = {}
        self.last_seen: dict[int, datetime] = {}


_cache = _Cache(None)


def _version(client: redis.Redis) -> bytes:
    version = client.get(VERSION)
    if version is None:  # a Redis without it (new, or restarted without its data)
        with client.pipeline(transaction=False) as pipe:
            pipe.set(VERSION, uuid.uuid4().hex, nx=True)
            pipe.get(VERSION)
            version = pipe.execute()[1]
    return version


def site_setups(client: redis.Redis, site_ids: set[int]) -> dict[int, SiteSetup]:
    """These sites' rules, from the cache unless they changed since it was filled."""
    global _cache
    version = _version(client)
    if version != _cache.version or time.monotonic() > _cache.until:
        _cache = _Cache(version)
    cache = _cache
    if missing := site_ids - cache.sites.keys():
        by_site: dict[int, dict[str, list[mapping.Rule]]] = {site: {} for site in missing}
        for (site, name), rules in rules_for(missing).items():
            by_site[site][name] = rules
        testing = test_sites(missing)
        for site in missing:
            cache.sites[site] = SiteSetup(by_site[site], site in testing)
    return {site: cache.sites[site] for site in site_ids}


@sa_event.listens_for(Session, "after_flush")
def _flushed(session: Session, _context) -> None:
    if CHANGED not in session.info and any(
        isinstance(row, WATCHED) for row in (*session.new, *session.dirty, *session.deleted)
    ):
        session.info[CHANGED] = True


@sa_event.listens_for(Session, "do_orm_execute")
def _executed(state: ORMExecuteState) -> None:
    if (state.is_insert or state.is_update or state.is_delete) and getattr(
        state.statement.table, "name", None
    ) in WATCHED_TABLES:
        state.session.info[CHANGED] = True


@sa_event.listens_for(Session, "after_rollback")
def _rolled_back(session: Session) -> None:
    session.info.pop(CHANGED, None)


@sa_event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    """A change to sites' rules is committed: every worker's cache is stale."""
    if session.info.pop(CHANGED, None) and has_app_context():
        try:
            queues.redis_client().set(VERSION, uuid.uuid4().hex)
        except (redis.RedisError, OSError):
            log.warning("intake: Redis did not take the new rules version; workers see it late")


def _last_seen(last_seen: dict[int, datetime]) -> None:
    """Move sites' last_event_at forward, at most every LAST_SEEN_EVERY per
    process: several workers writing one site's row on every read would
    queue behind each other's locks. (On the connection: not a rules change.)"""
    written = _cache.last_seen
    for site_id, moment in last_seen.items():
        if site_id in written and moment < written[site_id] + LAST_SEEN_EVERY:
            continue
        db.session.connection().execute(
            update(Site)
            .where(Site.id == site_id, Site.last_event_at.is_(None) | (Site.last_event_at < moment))
            .values(last_event_at=moment)
        )
        written[site_id] = moment


def _insert(table: Table, rows: list[dict], ids: bool = False) -> list[int]:
    """Insert rows (all with the same keys) in the session's transaction;
    with `ids`, their ids in order. Core, not the ORM: hundreds of rows.
    On PostgreSQL, from COPY_FROM rows, by COPY, ids drawn from the sequence
    first: an INSERT of hundreds of rows is a statement so long that psycopg
    parses it anew each time, which cost the worker more than anything but X
    (for a few rows, the INSERT's one round trip is cheaper than COPY's three)."""
    if len(rows) < COPY_FROM or db.session.get_bind().dialect.name != "postgresql":
        if ids:
            statement = insert(table).returning(table.c.id, sort_by_parameter_order=True)
            return list(db.session.scalars(statement, rows))
        db.session.execute(insert(table), rows)
        return []
    columns = list(rows[0])
    with db.session.connection().connection.driver_connection.cursor() as cursor:
        if ids:  # on psycopg's cursor, as the COPY: plain tuples, no SQLAlchemy rows
            cursor.execute(_NEXT_IDS, (table.name, len(rows)))
            taken = [id_ for (id_,) in cursor.fetchall()]
            rows = [{**row, "id": id_} for row, id_ in zip(rows, taken, strict=True)]
            columns.append("id")
        json = [isinstance(table.c[name].type, JSON) for name in columns]
        names = ", ".join(f'"{name}"' for name in columns)
        with cursor.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(
                    [
                        fastjson.dumps(row[name]) if is_json else row[name]
                        for name, is_json in zip(columns, json, strict=True)
                    ]
                )
    return [row["id"] for row in rows] if ids else []


_NEXT_IDS = "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)"


class Prepared(NamedTuple):
    """Inbox entries with what Redis says of them: their events (completed
    from what is known of their visitors), which repeat an earlier message,
    and their sites' rules. Done before the transaction, so that a worker
    can prepare its next read while it writes the last one."""

    entries: list[inbox.Entry]
    events: list[dict]
    verdicts: list
    sites: dict[int, SiteSetup]


def prepare(entries: list[inbox.Entry]) -> Prepared:
    pairs = [(entry.id, event) for entry in entries for event in entry.events]
    if not pairs:
        return Prepared(entries, [], [], {})
    client = queues.redis_client()
    verdicts = dedup.duplicates(client, pairs)
    events = [event for _, event in pairs]
    visitors.recall(client, events)
    return Prepared(entries, events, verdicts, site_setups(client, {e["site_id"] for e in events}))


def record(entries: list[inbox.Entry]) -> batching.Due:
    """Record inbox entries: each event with its outcome, and the conversions
    it produced waiting for their batch, in one transaction. Returns the
    pixels whose partial batch is to be flushed when the batch window ends
    (which runs from when the entries were first read)."""
    return write(prepare(entries))


def write(prepared: Prepared) -> batching.Due:
    """record's transaction, for entries already prepared."""
    entries, events, verdicts, sites = prepared
    if not events:
        return batching.Due()
    rows, results = [], []
    last_seen: dict[int, datetime] = {}
    for event, duplicate in zip(events, verdicts, strict=True):
        message = event["message"]
        site = sites[event["site_id"]]
        name, reason, result = mapping.outcome(
            event, duplicate, site.rules.get(message["event"], [])
        )
        received = parse(event["received_at"])
        if not event.get("test"):  # a test event from the admin says nothing of the snippet
            last_seen[event["site_id"]] = max(received, last_seen.get(event["site_id"], received))
        pixels = [rule.pixel_id for rule, _ in result.conversions] if result else []
        rows.append(
            {
                "site_id": event["site_id"],
                "message_id": message["messageId"],
                "type": message["type"],
                "event_name": message["event"],
                "received_at": received,
                "outcome": name,
                "reason": reason,
                "pixels": pixels,
                "identifiers": event["identifiers"],
                "sources": event.get("sources") or {},
                "message": message,
                "test": bool(event.get("test")) or site.test,
            }
        )
        results.append(result)
    ids = _insert(ReceivedEvent.__table__, rows, ids=True)
    read_at = [entry.read_at for entry in entries if entry.read_at]
    buffered_at = datetime.fromtimestamp(min(read_at), UTC) if read_at else utcnow()
    items = [
        {
            "pixel_key": rule.pixel_key,
            "event_id": event_id,
            "conversion_id": conversion.get("conversion_id"),
            "conversion": conversion,
            "visitor": binding.pending(event, conversion),
            "status": "waiting",
            "test": row["test"],
            "match": mapping.match_of(conversion),
            "created_at": buffered_at,  # the batch window runs from here
        }
        for event_id, event, row, result in zip(ids, events, rows, results, strict=True)
        if result
        for rule, conversion in result.conversions
    ]
    if items:
        _insert(DeliveryItem.__table__, items)
    _last_seen(last_seen)
    db.session.commit()
    _count(rows)
    return batching.buffered(Counter(item["pixel_key"] for item in items))


# outcome -> the reason label when the outcome's own reason is free text or none
DROP_REASONS = {"unmapped": "unmapped", "identified": "identify", "ignored": "not_a_conversion"}


def _count(rows: list[dict]) -> None:
    outcomes = Counter((row["site_id"], row["outcome"], row["reason"]) for row in rows)
    for (site_id, name, reason), n in outcomes.items():
        if name == "waiting":
            continue  # counted when its batch settles it (binding)
        if name == "forwarded":
            counters.EVENTS_FORWARDED.labels(site_id).inc(n)
        else:
            counters.EVENTS_DROPPED.labels(site_id, DROP_REASONS.get(name, reason)).inc(n)
