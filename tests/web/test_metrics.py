"""/metrics: Prometheus text format, protected, with counters that move as
events flow and add up across processes."""

from __future__ import annotations

import os
import subprocess
import sys

from prometheus_client.parser import text_string_to_metric_families

from tests.support.sending import basic, order
from tests.support.shop import PIXEL, setup_shop
from tests.support.workers import ROOT


def scrape(client, **kwargs) -> dict[tuple[str, tuple], float]:
    r = client.get("/metrics", **kwargs)
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.content_type.startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(r.get_data(as_text=True))
        for sample in family.samples
    }


def delta(before: dict, after: dict, name: str, **labels) -> float:
    key = (name, tuple(sorted((k, str(v)) for k, v in labels.items())))
    return after.get(key, 0) - before.get(key, 0)


def test_counters_follow_events_from_the_collector_to_x(x_app, client, ctx, fake_x, deliver):
    site = setup_shop(fake_x)
    before = scrape(client)
    batch = [
        order(1),
        order(2),
        order(3, event="Newsletter Signup"),  # no mapping
        order(4, context={"consent": {"categoryPreferences": {"advertising": False}}}),
    ]
    assert client.post("/v1/batch", json={"batch": batch}, headers=basic(site.write_key))
    assert client.post("/v1/track", json={"event": "x"}, headers=basic("wrong")).status_code == 401
    queued = scrape(client)
    assert queued[("xtag_inbox_depth", ())] >= 1
    assert queued[("xtag_inbox_oldest_age_seconds", ())] >= 0
    fake_x.fail_next(503)  # the first request to X fails and is retried
    deliver()
    after = scrape(client)

    assert delta(before, after, "xtag_events_received_total", site=site.id) == 4
    assert delta(before, after, "xtag_events_forwarded_total", site=site.id) == 2
    assert delta(before, after, "xtag_events_dropped_total", site=site.id, reason="unmapped") == 1
    assert delta(before, after, "xtag_events_dropped_total", site=site.id, reason="consent") == 1
    assert delta(before, after, "xtag_collector_refused_total", status=401) == 1
    assert delta(before, after, "xtag_conversions_delivered_total", pixel_id=PIXEL) == 2
    assert delta(before, after, "xtag_x_requests_total", status="5xx") == 1
    assert delta(before, after, "xtag_x_requests_total", status="2xx") == 1
    assert delta(before, after, "xtag_retries_scheduled_total") == 1
    assert delta(before, after, "xtag_x_request_duration_seconds_count") == 2
    assert after[("xtag_inbox_depth", ())] == 0
    assert after[("xtag_conversions_waiting", ())] == 0


def test_failed_conversions_are_counted_by_pixel_and_reason(x_app, client, ctx, fake_x, deliver):
    site = setup_shop(fake_x)
    before = scrape(client)
    fake_x.fail_next(403)
    assert client.post("/v1/batch", json={"batch": [order(1)]}, headers=basic(site.write_key))
    deliver()
    after = scrape(client)
    assert (
        delta(before, after, "xtag_conversions_failed_total", pixel_id=PIXEL, reason="refused") == 1
    )
    assert delta(before, after, "xtag_x_requests_total", status="4xx") == 1


def test_metrics_are_for_allowed_addresses_or_the_token(make_app, ctx):
    open_to_loopback = make_app().test_client()
    assert open_to_loopback.get("/metrics").status_code == 200
    assert (
        open_to_loopback.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.9"}).status_code
        == 403
    )

    guarded = make_app(
        XTAG_METRICS_ALLOW="10.0.0.0/8", XTAG_METRICS_TOKEN="m-token-1"
    ).test_client()
    outside = {"REMOTE_ADDR": "203.0.113.9"}
    assert guarded.get("/metrics", environ_base=outside).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert guarded.get("/metrics", environ_base=outside, headers=wrong).status_code == 401
    right = {"Authorization": "Bearer m-token-1"}
    assert guarded.get("/metrics", environ_base=outside, headers=right).status_code == 200
    assert guarded.get("/metrics", environ_base={"REMOTE_ADDR": "10.2.3.4"}).status_code == 200
    assert guarded.get("/metrics").status_code == 401  # loopback is no longer on the list


SEND = """
from tests.support.sending import basic, order
from xtag import create_app
app = create_app()
client = app.test_client()
r = client.post("/v1/batch", json={"batch": [order(1), order(2)]}, headers=basic("%s"))
assert r.status_code == 200, r.data
"""

SCRAPE = """
from xtag import create_app
print(create_app().test_client().get("/metrics").get_data(as_text=True))
"""


def test_processes_add_up_with_a_multiprocess_directory(app, ctx, environ, fake_x, tmp_path):
    site = setup_shop(fake_x)
    env = {
        **os.environ,
        **environ,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "XTAG_X_API_BASE": fake_x.base_url,
        "XTAG_BATCH_WINDOW_MS": "0",
        "XTAG_LOG_FORMAT": "text",
    }

    def run(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    run("-c", SEND % site.write_key)  # a web process
    run("-c", SEND % site.write_key)  # another
    run("-m", "flask", "--app", "app", "xtag", "worker", "--burst")  # a worker
    families = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(run("-c", SCRAPE))
        for s in family.samples
    }
    assert families[("xtag_events_received_total", (("site", str(site.id)),))] == 4
    assert families[("xtag_conversions_delivered_total", (("pixel_id", PIXEL),))] == 2
