"""The benches in bench/ still run to their end, at tiny sizes.

They import the app and the fake X and drive the real processes, so nothing
else notices when a change breaks them; this runs each one as `make bench`
would, with sizes small enough for seconds, and checks only that it completed
and printed its figures, never how fast anything was."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")

BENCHES = [
    pytest.param(
        "collector",
        ["--duration", "2", "--warmup", "1", "--rounds", "1", "--connections", "4"],
        ["ratio  track/bare =", "req/s  (best of 1)", "CPU per request"],
        marks=needs_wrk,
        id="collector",
    ),
    pytest.param(
        "delivery",
        ["--events", "300", "--rounds", "1", "--window-ms", "200"]
        + ["--rate", "10", "--duration", "2", "--timeout", "120"],
        ["conversions/s excluding start-up", "latency at light load", "latency          p50"],
        id="delivery",
    ),
    pytest.param(
        "soak",
        ["--events", "400", "--rate", "200", "--connections", "8", "--drain-timeout", "60"],
        ["events accepted/s", "conversions delivered/s", "web RSS", "worker RSS"],
        marks=needs_wrk,
        id="soak",
    ),
    pytest.param(
        "abuse",
        ["--duration", "3", "--visitors", "2"],
        ["flood from one address: sent", "other visitors: sent", "made-up write keys"],
        id="abuse",
    ),
]


@pytest.mark.parametrize(("name", "options", "figures"), BENCHES)
def test_bench_runs_to_its_end(name, options, figures):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    result = subprocess.run(
        [sys.executable, f"bench/{name}.py", *options],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    tail = f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"bench/{name}.py exited {result.returncode}\n{tail}"
    for figure in figures:
        assert figure in result.stdout, f"bench/{name}.py printed no {figure!r}\n{tail}"
