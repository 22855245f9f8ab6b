"""Structured logs: one JSON line per request (and per delivery attempt),
carrying the ids that tie it together; text for humans on request."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
from sqlalchemy import select

from tests.support import factories, pii
from tests.support.sending import basic, order, track
from tests.support.shop import setup_shop
from tests.support.workers import ROOT
from xtag import logs
from xtag.extensions import db
from xtag.models import Delivery


@pytest.fixture
def json_logs(capsys):
    logs.configure("json")
    yield lambda: [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    logs.reset()


def test_each_request_is_one_json_line_with_its_id_site_and_status(client, ctx, json_logs):
    site = factories.site()
    message = track(traits={"email": pii.RAW_EMAIL})
    r = client.post(
        "/v1/track?email=x", json=message, headers={**basic(site.write_key), "X-Request-ID": "r-1"}
    )
    assert r.status_code == 200 and r.headers["X-Request-ID"] == "r-1"
    r = client.post("/v1/track", json=track(), headers=basic("wrong"))
    assert r.status_code == 401 and len(r.headers["X-Request-ID"]) == 32  # one made up
    lines = [line for line in json_logs() if line["logger"] == "xtag.http"]
    assert [(line["path"], line["status"]) for line in lines] == [
        ("/v1/track", 200),
        ("/v1/track", 401),
    ]
    first, second = lines
    assert first["request_id"] == "r-1" and first["site"] == site.id
    assert second["request_id"] == r.headers["X-Request-ID"] and "site" not in second
    assert first["level"] == "info" and first["method"] == "POST" and first["ms"] >= 0
    assert "email" not in json.dumps(lines) and not pii.found_in(json.dumps(lines))


def test_admin_and_api_requests_are_logged_too(client, ctx, json_logs):
    client.get("/login")
    client.get("/api/v1/sites")
    assert [(x["path"], x["status"]) for x in json_logs() if x["logger"] == "xtag.http"] == [
        ("/login", 200),
        ("/api/v1/sites", 401),
    ]


def _worker_log(environ: dict, *flags: str) -> str:
    env = {**os.environ, **environ, "XTAG_LOG_FORMAT": "json"}
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "xtag", "worker", "--burst", *flags],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_a_delivery_attempt_is_one_json_line_with_its_ids(app, client, ctx, environ, fake_x):
    site = setup_shop(fake_x)
    assert client.post("/v1/batch", json={"batch": [order(1)]}, headers=basic(site.write_key))
    settings = {"XTAG_X_API_BASE": fake_x.base_url, "XTAG_BATCH_WINDOW_MS": "0"}
    lines = [json.loads(line) for line in _worker_log({**environ, **settings}).splitlines()]
    [attempt] = [line for line in lines if line["logger"] == "xtag.pipeline.sending"]
    delivery = db.session.scalar(select(Delivery))
    assert (attempt["delivery"], attempt["pixel"]) == (delivery.id, delivery.pixel_key)
    assert attempt["status"] == 200 and attempt["conversions"] == 1 and attempt["job"]
    assert not pii.found_in(json.dumps(lines))


def test_the_worker_logs_text_when_asked(app, client, ctx, environ, fake_x):
    site = setup_shop(fake_x)
    assert client.post("/v1/batch", json={"batch": [order(1)]}, headers=basic(site.write_key))
    settings = {"XTAG_X_API_BASE": fake_x.base_url, "XTAG_BATCH_WINDOW_MS": "0"}
    text = _worker_log({**environ, **settings}, "--log-format", "text")
    assert "INFO xtag.pipeline.sending: delivery" in text and "delivery=" in text
    assert not any(line.startswith("{") for line in text.splitlines())


def test_the_text_format_keeps_a_forged_line_on_one_line():
    record = logging.LogRecord(
        "xtag.http",
        logging.INFO,
        __file__,
        1,
        "GET %s 404",
        ("/v1/x\nINFO forged admin login",),
        None,
    )
    record.fields = {"path": "/v1/x\r\nINFO forged"}
    line = logs.TextFormatter().format(record)
    assert "\n" not in line and "\r" not in line
    assert "/v1/x\\x0aINFO forged" in line and "\\x0d\\x0a" in line
