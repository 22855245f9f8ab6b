"""Generated messages, adversarial values included (times, unicode with lone
surrogates and NUL, depth, huge numbers, odd types), through gunicorn and a
real worker (issue 13): no answer is a 5xx, and every message answered 200
is recorded."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from tests.support import factories
from tests.support.workers import ROOT
from xtag.extensions import db
from xtag.models import ReceivedEvent

ODD = [
    "\ud800",
    "a\x00b",
    "9999-12-31T23:59:59-14:00",
    "0001-01-01T00:00:00+14:00",
    "",
    " ",
    "﷽" * 50,
    "😀" * 30,
    "%40%0a%0d",
    "../../etc/passwd",
    "<script>alert(1)</script>",
    "' OR 1=1 --",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(ODD),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
deep = st.integers(min_value=60, max_value=80).map(
    lambda n: __import__("functools").reduce(lambda v, _: {"n": v}, range(n), {"leaf": 1})
)
messages = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["track", "page", "identify", "screen", "group", "alias", "x"]),
        "anonymousId": st.one_of(st.text(min_size=1, max_size=20), st.sampled_from(ODD)),
    },
    optional={
        "event": st.one_of(st.text(max_size=40), st.sampled_from(ODD), values),
        "userId": st.one_of(st.text(max_size=20), st.integers(), values),
        "properties": st.one_of(st.dictionaries(st.text(max_size=10), values, max_size=5), deep),
        "context": st.one_of(
            st.fixed_dictionaries(
                {},
                optional={
                    "ip": st.one_of(st.sampled_from(["203.0.113.9", "::1", "x"]), values),
                    "page": st.fixed_dictionaries({"url": st.one_of(st.text(), values)}),
                    "traits": st.dictionaries(st.text(max_size=8), values, max_size=3),
                },
            ),
            values,
        ),
        "timestamp": st.one_of(st.sampled_from(ODD), st.datetimes().map(str), values),
        "originalTimestamp": st.one_of(st.sampled_from(ODD), st.datetimes().map(str)),
        "sentAt": st.one_of(st.sampled_from(ODD), st.datetimes().map(str)),
        "integrations": values,
    },
)
batches = st.lists(messages, min_size=15, max_size=30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def gunicorn(environ, ctx, tmp_path):
    port = free_port()
    env = {**os.environ, **environ, "XTAG_SITE_CACHE_SECONDS": "5"}
    log = (tmp_path / "gunicorn.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers", "2", "--bind", f"127.0.0.1:{port}",
         "--log-level", "warning", "app:app"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(f"{base}/healthz", timeout=5)
            break
        except requests.RequestException:
            assert time.monotonic() < deadline and proc.poll() is None, "gunicorn did not start"
            time.sleep(0.1)
    yield base
    proc.terminate()
    proc.wait(timeout=10)
    log.close()
    errors = (tmp_path / "gunicorn.log").read_text(errors="replace")
    assert "Traceback" not in errors, errors[-3000:]


def test_generated_messages_never_5xx_and_all_accepted_are_recorded(gunicorn, environ):
    site = factories.site()
    accepted: list[str] = []
    sent = []

    @settings(
        max_examples=150,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(batches)
    def send(batch):
        for message in batch:
            message["messageId"] = uuid.uuid4().hex
        r = requests.post(
            f"{gunicorn}/v1/batch", json={"batch": batch}, auth=(site.write_key, ""), timeout=10
        )
        sent.extend(batch)
        assert r.status_code < 500, r.text
        if r.status_code == 200:
            refused = {x["index"] for x in r.json().get("refused", [])}
            accepted.extend(m["messageId"] for i, m in enumerate(batch) if i not in refused)

    send()
    assert len(sent) >= 2000
    env = {**os.environ, **environ}
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "xtag", "worker", "--burst"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    db.session.remove()
    recorded = set(db.session.scalars(select(ReceivedEvent.message_id)))
    assert accepted and set(accepted) <= recorded, len(set(accepted) - recorded)
