"""The worker's scheduled work with several workers: each reports its own
heartbeat, but the sweep, retention and the alert checks run once per period
whichever worker takes them, so more workers cost the database no more; and
the schedule has a thread of its own, so a slow check never holds up intake."""

from __future__ import annotations

import threading
import time

from tests.support import factories
from tests.support.sending import basic, track
from tests.support.shop import events
from xtag.pipeline import consuming, heartbeat, queues


def test_shared_tasks_run_on_one_worker_per_period(app, monkeypatch):
    ran = []
    for name in ("sweep", "purge", "check_alerts"):
        monkeypatch.setattr(consuming.Consumer, name, lambda self, name=name: ran.append(name))
    monkeypatch.setattr(
        consuming,
        "SCHEDULE",
        tuple(
            consuming.Periodic(
                task.name, task.every_seconds, getattr(consuming.Consumer, method), task.shared
            )
            for task, method in zip(
                consuming.SCHEDULE, ("heartbeat", "sweep", "purge", "check_alerts"), strict=True
            )
        ),
    )
    first, second = consuming.Consumer(app, name="one"), consuming.Consumer(app, name="two")
    first.run_due()
    second.run_due()
    assert sorted(ran) == ["check_alerts", "purge", "sweep"]  # once, not once per worker
    assert heartbeat.alive(queues.redis_client(app)) == ["one", "two"]
    queues.redis_client(app).delete("xtag:schedule:sweep")  # its period is over
    second._next_run.clear()
    second.run_due()
    assert sorted(ran) == ["check_alerts", "purge", "sweep", "sweep"]


def test_a_slow_scheduled_task_does_not_hold_up_the_intake(app, client, ctx, monkeypatch):
    started, release = threading.Event(), threading.Event()

    def slow(self) -> None:  # say, an alert check reading an hour of conversions
        started.set()
        release.wait(10)

    monkeypatch.setattr(consuming, "SCHEDULE", (consuming.Periodic("slow", 30.0, slow),))
    site = factories.site()
    consumer = consuming.Consumer(app, name="w")
    threads = [
        threading.Thread(target=consumer.run_forever, daemon=True),
        threading.Thread(target=consumer.keep_schedule, daemon=True),
    ]
    for thread in threads:  # the intake first: were it to run the schedule, it would now
        thread.start()
        time.sleep(0.2)
    try:
        assert started.wait(10)
        assert client.post("/v1/track", json=track(), headers=basic(site.write_key)).status_code
        deadline = time.monotonic() + 3  # the slow task holds on for 10 s
        while not events() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(events()) == 1 and not release.is_set()  # recorded during the check
    finally:
        release.set()
        consumer.stop.set()
        for thread in threads:
            thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads)
